//! berth's embedded DNS resolver: the sockets around [`berth_plan::dns`].
//!
//! One UDP and one TCP socket on port 53 of each DNS-enabled bridge network's gateway addresses
//! (never a wildcard address: the resolver must not be reachable from the LAN). Sockets are
//! opened when a network appears and closed when it goes; container changes only swap the
//! immutable [`Table`] (an `ArcSwap`), so no query is ever dropped or answered from half a table.
//!
//! Containers on macvlan and ipvlan networks only (whose gateway is the LAN's router) get one
//! UDP and one TCP socket on [`plan::LOCAL_RESOLVER`]`:53` created inside their own network
//! namespace (on a short-lived thread that `setns`es there; the sockets stay in that namespace
//! and are served here like the others). The start path opens them before the container's
//! command runs, so a process in the container cannot take the port first: the UDP socket has
//! no `SO_REUSEADDR`/`SO_REUSEPORT` (nothing can share it), and a listening TCP socket
//! excludes any other bind of its port. They answer from the same table, the asker being the
//! container whose namespace it is (its queries come from a loopback address), and are closed
//! when it stops running or no longer needs them; a refresh opens them for running containers
//! that need them and lack them (after `network connect`, or a restart of berthd).
//!
//! UDP is served by one OS thread per socket doing blocking `recv_from`/`send_to`: a local answer
//! costs two system calls and no wake-up of another thread, which is what makes the resolver
//! fast one-at-a-time as well as under load. Forwarded queries and TCP are tokio tasks: they wait
//! on the network, not on the CPU.
//!
//! Forwarding goes to the host's resolvers (its resolv.conf, re-read when it changes, checked
//! at most once a second) or to a container's `--dns` servers, from berthd's own namespace (so
//! a loopback stub such as 127.0.0.53 works), over a connected socket per upstream whose random
//! port changes every few seconds, with a random id per query, with a total budget of 2 s shared by the upstreams in order: less than a client's own
//! timeout (glibc: 5 s), so the client gets SERVFAIL rather than silence.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use berth_api::types::DnsInfo;
use berth_plan::dns::{self as plan, Action, Rcode, Table, Transport, Upstream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The resolver's port.
pub const PORT: u16 = 53;
/// Total time a forwarded query may take, all upstreams together.
const FORWARD_BUDGET: Duration = Duration::from_secs(2);
/// Least time one upstream gets (when there are many, later ones still get a fair try).
const MIN_TRY: Duration = Duration::from_millis(400);
/// How long an idle TCP client connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Forwarded queries in flight at once; past that, SERVFAIL at once instead of piling up tasks.
const MAX_FORWARDS: usize = 2048;
/// TCP client connections at once.
const MAX_TCP: usize = 256;
/// How often the host's resolv.conf is checked for changes (at most).
const RESOLV_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest a UDP thread keeps polling after an answer before it sleeps (see `udp_loop`
/// and [`spin_window`]).
const UDP_SPIN: Duration = Duration::from_micros(100);
/// An adaptive spin lasts this many times the gap between the last two queries (capped at
/// [`UDP_SPIN`]): enough for a steady client's next query, little more.
const SPIN_GAPS: u32 = 2;
/// An adaptive spin starts when the last two queries came less than this apart: the window
/// plus what a wake-up costs here (~50 µs on these VMs). A gap measured *without* a spin holds
/// the wake-up the spin would save: a one-at-a-time client whose pace is 45 µs with the spin
/// shows gaps of ~120 µs without it, and a trigger at [`UDP_SPIN`] kept such a client in the
/// slow regime (2026-12-01, quiet machine: 11,136 q/s and p99 267 µs against 22,510 q/s and
/// 103 µs with the fixed spin). Forwarded names asked one at a time come back after the
/// upstream (≥ 250 µs here) and still cost no spin.
const SPIN_TRIGGER: Duration = Duration::from_micros(150);
/// The shortest adaptive spin: queries drained from a full queue arrive µs apart, and a spin of
/// twice that would put the thread to sleep just before the client's next burst.
const MIN_SPIN: Duration = Duration::from_micros(20);
/// Most queries a UDP thread takes off its socket (and answers) per pair of system calls.
const UDP_BATCH: usize = 32;
/// Most answers in one UDP GSO message (the kernel takes up to 64).
const GSO_MAX_SEGMENTS: usize = 32;
/// Longest answer sent as part of a UDP GSO message: the plain DNS limit, which any route's
/// MTU carries in one datagram (GSO refuses segments longer than the path's MTU allows).
const GSO_MAX_SEGMENT: usize = plan::UDP_PLAIN_MAX;
/// A blocking receive that returns this soon after the thread's last answer found its
/// datagram already queued: a thread that had to sleep and be woken takes longer than that
/// (a wake-up costs ~50 µs on these VMs, a receive of a queued datagram ~1–2 µs). Only decides
/// between a one-datagram and a batch receive (see [`batch_next`]); a wrong guess costs one
/// receive's overhead, never a query.
const QUICK_RETURN: Duration = Duration::from_micros(10);
/// Receive timeout of the UDP threads: a backstop for noticing a closed listener (closing
/// also shuts the socket down, which wakes the thread at once).
const UDP_WAKE: Duration = Duration::from_secs(1);

// ------------------------------------------------------------------------------------ stats

/// Latency histogram: 4 buckets per power of two of nanoseconds (≤ 19 % error), lock-free.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const HIST_BUCKETS: usize = 160;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < 4 {
            return ns as usize;
        }
        let e = 63 - ns.leading_zeros() as usize; // ≥ 2
        let sub = ((ns >> (e - 2)) & 3) as usize;
        ((e - 1) * 4 + sub).min(HIST_BUCKETS - 1)
    }

    /// Upper bound (exclusive) of bucket `i`, in nanoseconds.
    fn upper(i: usize) -> u64 {
        if i < 4 {
            return i as u64 + 1;
        }
        let e = i / 4 + 1;
        let sub = (i % 4) as u64;
        (5 + sub) << (e - 2)
    }

    fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile in microseconds (bucket upper bound; 0 with no samples).
    fn quantile_us(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let target = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::upper(i) as f64 / 1000.0;
            }
        }
        Self::upper(HIST_BUCKETS - 1) as f64 / 1000.0
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Stats {
    queries: Counter,
    tcp: Counter,
    local: Counter,
    forwarded: Counter,
    failures: Counter,
    refused: Counter,
    malformed: Counter,
    truncated: Counter,
    /// UDP receive calls that returned queries: each is one batch (see `udp_loop`).
    udp_batches: Counter,
    local_latency: Histogram,
    forward_latency: Histogram,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            queries: Counter::default(),
            tcp: Counter::default(),
            local: Counter::default(),
            forwarded: Counter::default(),
            failures: Counter::default(),
            refused: Counter::default(),
            malformed: Counter::default(),
            truncated: Counter::default(),
            udp_batches: Counter::default(),
            local_latency: Histogram::new(),
            forward_latency: Histogram::new(),
        }
    }

    /// Counts a message berth answered (or dropped) itself.
    fn count_local(&self, action: &Action<'_>, t0: Instant) {
        match action {
            Action::Answered { truncated } => {
                self.local.inc();
                if *truncated {
                    self.truncated.inc();
                }
                self.local_latency.record(t0.elapsed());
            }
            Action::Error(Rcode::Refused) => self.refused.inc(),
            Action::Error(_) | Action::Drop => self.malformed.inc(),
            Action::Forward(_) => {}
        }
    }
}

// ------------------------------------------------------------------------- host resolvers

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    ino: u64,
    len: u64,
}

struct HostState {
    checked: Option<Instant>,
    stamp: Option<Stamp>,
    servers: Arc<[IpAddr]>,
}

/// The host's upstream resolvers, from its resolv.conf, re-read when the file changes (checked
/// at most every [`RESOLV_CHECK_EVERY`]; a replaced file has a new inode, an edited one a new
/// mtime or size).
struct HostResolvers {
    path: PathBuf,
    state: Mutex<HostState>,
}

impl HostResolvers {
    fn new(path: PathBuf) -> HostResolvers {
        HostResolvers {
            path,
            state: Mutex::new(HostState {
                checked: None,
                stamp: None,
                servers: Arc::from(Vec::new()),
            }),
        }
    }

    fn servers(&self) -> Arc<[IpAddr]> {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if st.checked.is_some_and(|c| c.elapsed() < RESOLV_CHECK_EVERY) {
            return st.servers.clone();
        }
        st.checked = Some(Instant::now());
        let stamp = std::fs::metadata(&self.path).ok().map(|m| Stamp {
            mtime: m.modified().ok(),
            ino: m.ino(),
            len: m.len(),
        });
        if stamp != st.stamp {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let servers = berth_plan::files::parse_resolv_conf(&text).nameservers;
            tracing::info!(
                path = %self.path.display(),
                ?servers,
                "embedded DNS: upstream resolvers (re)read"
            );
            if servers.is_empty() {
                tracing::warn!(
                    "embedded DNS: {} lists no nameserver: names other than containers' will \
                     get SERVFAIL",
                    self.path.display()
                );
            }
            st.servers = Arc::from(servers);
            st.stamp = stamp;
        }
        st.servers.clone()
    }
}

// ------------------------------------------------------------------------------------ spin

/// What a UDP thread does after an answer. Only the bench chooses (env `BERTH_DNS_SPIN`, read
/// once when berthd starts, see bench/dns/README.md); it is not a user option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpinMode {
    /// Poll for [`spin_window`] of the gap between the last two queries (the default).
    Adaptive,
    /// Always poll for [`UDP_SPIN`] (berth before issue 10).
    Fixed,
    /// Never poll: block in `recv_from` at once.
    Off,
}

impl SpinMode {
    /// The mode named by `BERTH_DNS_SPIN` (unset or unknown: [`SpinMode::Adaptive`]).
    fn from_env() -> SpinMode {
        let v = std::env::var("BERTH_DNS_SPIN").unwrap_or_default();
        match v.as_str() {
            "" | "adaptive" => SpinMode::Adaptive,
            "fixed" => SpinMode::Fixed,
            "off" => SpinMode::Off,
            other => {
                tracing::warn!("BERTH_DNS_SPIN={other:?} is not fixed, adaptive or off: adaptive");
                SpinMode::Adaptive
            }
        }
    }
}

/// How long a UDP thread polls its socket after answering a query that came `gap` after the
/// one before (`None`: the first query the thread sees).
///
/// The poll saves the next query a thread wake-up (tens of µs on a VM) but costs CPU for as
/// long as it lasts, so the adaptive mode spins only when that next query is likely to come
/// within the window: queries have been arriving less than [`SPIN_TRIGGER`] apart. An isolated
/// query (a container resolving a name now and then) costs no spin; a client asking one name
/// after another keeps the win, for a window of [`SPIN_GAPS`] times its pace.
fn spin_window(mode: SpinMode, gap: Option<Duration>, forwarded: bool) -> Duration {
    match (mode, gap) {
        (SpinMode::Off, _) => Duration::ZERO,
        (SpinMode::Fixed, _) => UDP_SPIN,
        // A client waiting for a forwarded answer asks again only after the upstream has
        // answered (≥ 250 µs here): a poll after handing its query off would only burn CPU
        // the forwarding task and the client need (measured on 2 vCPUs: one-at-a-time
        // forwarded names fell from 3,387 to 2,251 q/s when such polls started).
        (SpinMode::Adaptive, _) if forwarded => Duration::ZERO,
        (SpinMode::Adaptive, Some(gap)) if gap < SPIN_TRIGGER => {
            (gap * SPIN_GAPS).clamp(MIN_SPIN, UDP_SPIN)
        }
        (SpinMode::Adaptive, _) => Duration::ZERO,
    }
}

/// How a UDP thread's next receive takes its queries: a batch (`recvmmsg`) or one datagram
/// (`recvmsg`). A batch that held one datagram, or a single datagram the thread had to wait
/// for, means queries come one at a time: a batch receive would then look for a second
/// datagram in vain every time (≈ 7 % more CPU per answer than one by one). More than one, or
/// a datagram already queued when the thread came back for it, means they queue up: a batch
/// then saves two system calls per query.
#[derive(Debug, Default)]
struct RecvMode {
    /// The next receive takes a batch.
    batched: bool,
    /// A non-blocking poll since the last answer found the socket empty.
    polled_empty: bool,
    /// When the last answer went out.
    answered: Option<Instant>,
}

impl RecvMode {
    /// A non-blocking receive found nothing.
    fn polled_empty(&mut self) {
        self.polled_empty = true;
    }

    /// A receive (non-blocking if `spinning`) returned `got` datagrams at `at`. Whether the
    /// first was already queued: for a poll, that no poll since the last answer found the
    /// socket empty; for a blocking receive, that it returned within [`QUICK_RETURN`] of the
    /// last answer (it did not sleep).
    fn received(&mut self, got: usize, spinning: bool, at: Instant) {
        let waiting = if spinning {
            !self.polled_empty
        } else {
            self.answered
                .is_some_and(|t| at.saturating_duration_since(t) < QUICK_RETURN)
        };
        self.batched = got > 1 || waiting;
        self.polled_empty = false;
    }

    /// The answers of the last receive went out at `at`.
    fn answered(&mut self, at: Instant) {
        self.answered = Some(at);
    }
}

// ----------------------------------------------------------------------------------- server

struct Shared {
    /// After-answer polling of the UDP threads, fixed for the daemon's life.
    spin: SpinMode,
    table: ArcSwap<Table>,
    upstreams: UpstreamPool,
    stats: Stats,
    host: HostResolvers,
    rotate: AtomicUsize,
    forward_slots: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
}

/// One listening address: its UDP thread and TCP accept task. Dropping it closes both.
struct Listener {
    stop: Arc<AtomicBool>,
    udp: Arc<UdpSocket>,
    tcp: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread blocked in recv_from (it then sees `stop`); the receive timeout is
        // the backstop should a kernel not wake it.
        let _ = SockRef::from(&*self.udp).shutdown(std::net::Shutdown::Read);
        self.tcp.abort();
    }
}

/// The resolver inside one container's namespace.
struct LocalListener {
    /// Open on behalf of a start not finished yet: kept even while the container is not
    /// running (see [`DnsServer::open_local`]).
    pinned: bool,
    _listener: Listener,
}

/// The embedded resolver. Cheap to update: [`DnsServer::update`] swaps the table and opens or
/// closes only the sockets of networks that appeared or went.
pub struct DnsServer {
    shared: Arc<Shared>,
    port: u16,
    listeners: Mutex<HashMap<IpAddr, Listener>>,
    /// In-namespace listeners by container id.
    local: Mutex<HashMap<String, LocalListener>>,
}

impl DnsServer {
    /// A resolver with no listeners yet, forwarding to the nameservers of `resolv_conf`.
    pub fn new(resolv_conf: PathBuf) -> DnsServer {
        DnsServer {
            shared: Arc::new(Shared {
                spin: SpinMode::from_env(),
                table: ArcSwap::from_pointee(Table::default()),
                upstreams: UpstreamPool::default(),
                stats: Stats::new(),
                host: HostResolvers::new(resolv_conf),
                rotate: AtomicUsize::new(0),
                forward_slots: Arc::new(Semaphore::new(MAX_FORWARDS)),
                tcp_slots: Arc::new(Semaphore::new(MAX_TCP)),
            }),
            port: PORT,
            listeners: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Installs `table` and makes the listeners match its networks. Must run inside the tokio
    /// runtime. Returns one message per address it could not listen on (it tries again on the
    /// next update).
    pub fn update(&self, table: Table) -> Vec<String> {
        let want: Vec<IpAddr> = table.listen().to_vec();
        // The table first: a socket opened below answers from it at once.
        self.shared.table.store(Arc::new(table));
        let mut listeners = match self.listeners.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        listeners.retain(|addr, _| {
            let keep = want.contains(addr);
            if !keep {
                tracing::info!(%addr, "embedded DNS: closing listener");
            }
            keep
        });
        let mut problems = Vec::new();
        for addr in want {
            if listeners.contains_key(&addr) {
                continue;
            }
            match self.open(SocketAddr::new(addr, self.port)) {
                Ok(l) => {
                    tracing::info!(%addr, port = self.port, "embedded DNS: listening");
                    listeners.insert(addr, l);
                }
                Err(e) => {
                    let msg = format!(
                        "embedded DNS cannot listen on {}: {e}; containers on that network \
                         will not resolve names until it can",
                        SocketAddr::new(addr, self.port)
                    );
                    tracing::warn!("{msg}");
                    problems.push(msg);
                }
            }
        }
        problems
    }

    fn open(&self, addr: SocketAddr) -> io::Result<Listener> {
        let udp = bind_udp(addr)?;
        let tcp = bind_tcp(addr)?;
        self.serve(udp, tcp, None, format!("dns-{addr}"))
    }

    /// Serves bound sockets: a UDP thread and a TCP accept task. `owner`: the container whose
    /// namespace they are in (it is the asker of every query), `None` for a gateway listener
    /// (the source address tells the asker).
    fn serve(
        &self,
        udp: UdpSocket,
        tcp: std::net::TcpListener,
        owner: Option<Arc<str>>,
        thread_name: String,
    ) -> io::Result<Listener> {
        let udp = Arc::new(udp);
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let stop = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Handle::current();
        {
            let (udp, shared, stop, rt) = (udp.clone(), self.shared.clone(), stop.clone(), rt);
            let owner = owner.clone();
            std::thread::Builder::new()
                .name(thread_name)
                .spawn(move || udp_loop(&udp, &shared, &stop, &rt, owner.as_deref()))?;
        }
        let tcp = tokio::spawn(tcp_accept_loop(tcp, self.shared.clone(), owner));
        Ok(Listener { stop, udp, tcp })
    }

    /// Opens the resolver on [`plan::LOCAL_RESOLVER`]`:53` inside the network namespace at
    /// `netns` for container `id` (nothing to do when it is open already). The start path
    /// calls it before the container's command runs, with `pinned`: the listener then stays
    /// while the container is not yet recorded as running, until [`DnsServer::unpin`].
    pub fn open_local(&self, id: &str, netns: &Path, pinned: bool) -> Result<(), String> {
        let mut local = match self.local.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if let Some(l) = local.get_mut(id) {
            l.pinned |= pinned;
            return Ok(());
        }
        let addr = SocketAddr::new(IpAddr::V4(plan::LOCAL_RESOLVER), self.port);
        let fail = |e: &dyn std::fmt::Display| {
            format!(
                "opening berth's resolver on {addr} inside the container's network namespace: \
                 {e}"
            )
        };
        let (udp, tcp) = berth_kernel::netns::run_in_netns(netns, move || {
            Ok::<_, io::Error>((bind_local_udp(addr)?, bind_local_tcp(addr)?))
        })
        .map_err(|e| fail(&e))?
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                fail(&format!(
                    "{e}: a process in the container holds the port; restart the container \
                     so berth opens it before the container's command runs"
                ))
            } else {
                fail(&e)
            }
        })?;
        let short = berth_plan::names::short_id(id).to_string();
        let listener = self
            .serve(udp, tcp, Some(Arc::from(id)), format!("dns-{short}"))
            .map_err(|e| fail(&e))?;
        tracing::debug!(container = %short, "embedded DNS: listening inside the container");
        local.insert(
            id.to_string(),
            LocalListener {
                pinned,
                _listener: listener,
            },
        );
        Ok(())
    }

    /// The start of container `id` is over (recorded as running, or failed): its in-namespace
    /// listener now lives or goes with [`DnsServer::sync_local`] like any other.
    pub fn unpin(&self, id: &str) {
        if let Ok(mut local) = self.local.lock() {
            if let Some(l) = local.get_mut(id) {
                l.pinned = false;
            }
        }
    }

    /// Makes the in-namespace listeners match `want` (container id → a path to its network
    /// namespace): closes those of containers not in it (stopped, removed, or no longer on a
    /// macvlan/ipvlan network only) unless pinned, and opens the missing ones. Returns one
    /// message per listener it could not open (tried again on the next refresh).
    pub fn sync_local(&self, want: &[(String, std::path::PathBuf)]) -> Vec<String> {
        {
            let mut local = match self.local.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            local.retain(|id, l| {
                let keep = l.pinned || want.iter().any(|(w, _)| w == id);
                if !keep {
                    tracing::debug!(
                        container = %berth_plan::names::short_id(id),
                        "embedded DNS: closing the listener inside the container"
                    );
                }
                keep
            });
        }
        let mut problems = Vec::new();
        for (id, ns) in want {
            let open = self
                .local
                .lock()
                .map(|l| l.contains_key(id))
                .unwrap_or(true);
            if open {
                continue;
            }
            if let Err(e) = self.open_local(id, ns, false) {
                let msg = format!(
                    "container {}: {e}; it cannot resolve container names until berth can",
                    berth_plan::names::short_id(id)
                );
                tracing::warn!("{msg}");
                problems.push(msg);
            }
        }
        problems
    }

    /// Counters and latencies for `GET /info`.
    pub fn info(&self) -> DnsInfo {
        let s = &self.shared.stats;
        let mut listen: Vec<String> = match self.listeners.lock() {
            Ok(l) => l
                .keys()
                .map(|a| SocketAddr::new(*a, self.port).to_string())
                .collect(),
            Err(_) => Vec::new(),
        };
        listen.sort();
        DnsInfo {
            listen,
            upstreams: self
                .shared
                .host
                .servers()
                .iter()
                .map(ToString::to_string)
                .collect(),
            queries: s.queries.get(),
            tcp_queries: s.tcp.get(),
            answered_locally: s.local.get(),
            forwarded: s.forwarded.get(),
            failures: s.failures.get(),
            refused: s.refused.get(),
            malformed: s.malformed.get(),
            truncated: s.truncated.get(),
            local_p50_us: s.local_latency.quantile_us(0.50),
            local_p99_us: s.local_latency.quantile_us(0.99),
            forward_p50_us: s.forward_latency.quantile_us(0.50),
            forward_p99_us: s.forward_latency.quantile_us(0.99),
        }
    }

    /// The same in Prometheus' text format (`GET /metrics`).
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let i = self.info();
        let mut out = String::new();
        let counters: [(&str, &str, u64); 8] = [
            ("queries", "DNS messages received (UDP and TCP).", i.queries),
            (
                "tcp_queries",
                "DNS messages received over TCP.",
                i.tcp_queries,
            ),
            (
                "answered_locally",
                "Queries answered from the container table.",
                i.answered_locally,
            ),
            (
                "forwarded",
                "Queries relayed to an upstream resolver.",
                i.forwarded,
            ),
            (
                "failures",
                "Forwarded queries no upstream answered (SERVFAIL).",
                i.failures,
            ),
            (
                "refused",
                "Queries refused (unknown asker, internal network).",
                i.refused,
            ),
            ("malformed", "Malformed or dropped messages.", i.malformed),
            ("truncated", "Local answers truncated for UDP.", i.truncated),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP berth_dns_{name}_total {help}");
            let _ = writeln!(out, "# TYPE berth_dns_{name}_total counter");
            let _ = writeln!(out, "berth_dns_{name}_total {v}");
        }
        let _ = writeln!(
            out,
            "# HELP berth_dns_udp_batches_total UDP receive calls that returned queries (each \
             query of a batch is answered, and the batch's answers sent, with one call each)."
        );
        let _ = writeln!(out, "# TYPE berth_dns_udp_batches_total counter");
        let _ = writeln!(
            out,
            "berth_dns_udp_batches_total {}",
            self.shared.stats.udp_batches.get()
        );
        let _ = writeln!(
            out,
            "# HELP berth_dns_latency_seconds Time from receipt to answer, by path (histogram \
             bucket upper bounds)."
        );
        let _ = writeln!(out, "# TYPE berth_dns_latency_seconds summary");
        for (path, p50, p99) in [
            ("local", i.local_p50_us, i.local_p99_us),
            ("forward", i.forward_p50_us, i.forward_p99_us),
        ] {
            for (q, v) in [("0.5", p50), ("0.99", p99)] {
                let _ = writeln!(
                    out,
                    "berth_dns_latency_seconds{{path=\"{path}\",quantile=\"{q}\"}} {}",
                    v / 1e6
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_dns_listeners Addresses the resolver listens on."
        );
        let _ = writeln!(out, "# TYPE berth_dns_listeners gauge");
        let _ = writeln!(out, "berth_dns_listeners {}", i.listen.len());
        out
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    prepare(&s, addr)?;
    // Room for bursts: a full queue would drop queries before berth sees them.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(UDP_WAKE))?;
    Ok(s.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    prepare(&s, addr)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The in-namespace UDP socket: deliberately without `SO_REUSEADDR` or `SO_REUSEPORT`, so no
/// process in the container can bind the same address and port (or the wildcard address on
/// that port) and receive the queries instead.
fn bind_local_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(UDP_WAKE))?;
    Ok(s.into())
}

/// The in-namespace TCP socket. `SO_REUSEADDR` only lets a restarted berthd bind again past
/// connections of the previous one in TIME-WAIT: Linux refuses every other bind of a port
/// that has a listening socket, with or without the option.
fn bind_local_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn prepare(s: &Socket, addr: SocketAddr) -> io::Result<()> {
    // A network removed and re-created at once may find its old socket not yet closed.
    s.set_reuse_address(true)?;
    // The gateway address may still be on its way onto the bridge (or tentative for IPv6).
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------- UDP path

fn udp_loop(
    sock: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    rt: &tokio::runtime::Handle,
    owner: Option<&str>,
) {
    use std::os::fd::AsFd;
    // Every query waiting on the socket is taken in one `recvmmsg` and the local answers go
    // out in one `sendmmsg`: with many queries in flight that is two system calls per batch
    // instead of per query. Whole datagrams (64 KiB slots, touched only as far as written), so
    // an oversized query is seen, and judged, as it is.
    let mut batch = berth_kernel::sys::DatagramBatch::new(UDP_BATCH, 65535);
    // The answers of one batch, end to end, with where each ends and whom it goes to.
    let mut answers: Vec<u8> = Vec::with_capacity(UDP_BATCH * 512);
    let mut ends: Vec<(usize, SocketAddr)> = Vec::with_capacity(UDP_BATCH);
    let mut out = Vec::with_capacity(4096);
    let mut rotate: usize = 0;
    // After an answer the thread polls the socket for a moment before it blocks again: the
    // next query of a client asking one name after another then finds it awake, instead of
    // paying for waking a sleeping thread (on a VM an idle vCPU takes tens of µs to wake).
    // How long is decided per batch by `spin_window`. `spin_until`: the socket is
    // non-blocking until then.
    let mut spin_until: Option<Instant> = None;
    let mut last_query: Option<Instant> = None;
    // Answers to the same client in one batch go out as one UDP GSO message until the kernel
    // refuses one (see `send_answers`).
    let mut gso = true;
    let mut scratch = berth_kernel::sys::SendScratch::default();
    // One query at a time, a plain one-datagram receive; `recvmmsg` only while queries queue
    // up.
    let mut mode = RecvMode::default();
    while !stop.load(Ordering::Relaxed) {
        let spinning = spin_until.is_some();
        let got = if mode.batched {
            berth_kernel::sys::recv_batch(sock.as_fd(), &mut batch)
        } else {
            berth_kernel::sys::recv_one(sock.as_fd(), &mut batch)
        };
        match got {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && spin_until.is_some() => {
                mode.polled_empty();
                if spin_until.is_some_and(|t| Instant::now() >= t) {
                    spin_until = None;
                    if let Err(e) = sock.set_nonblocking(false) {
                        tracing::warn!("embedded DNS: socket mode: {e}");
                    }
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!("embedded DNS: receive: {e}");
                    // Never spin on a persistent error.
                    std::thread::sleep(Duration::from_millis(5));
                }
                continue;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        let gap = last_query.map(|t| t0.saturating_duration_since(t));
        last_query = Some(t0);
        mode.received(batch.len(), spinning, t0);
        shared.stats.udp_batches.inc();
        let table = shared.table.load();
        let mut forwarded = false;
        answers.clear();
        ends.clear();
        for i in 0..batch.len() {
            let Some((msg, Some(peer), truncated)) = batch.get(i) else {
                continue;
            };
            if truncated {
                // Longer than any UDP datagram can be: cannot happen; never answer a part.
                continue;
            }
            rotate = rotate.wrapping_add(1);
            shared.stats.queries.inc();
            let asker = match owner {
                Some(id) => table.asker_by_id(id),
                None => table.asker(peer.ip()),
            };
            let action = plan::handle_as(&table, asker, msg, Transport::Udp, rotate, &mut out);
            match action {
                Action::Answered { .. } | Action::Error(_) => {
                    answers.extend_from_slice(&out);
                    ends.push((answers.len(), peer));
                }
                Action::Forward(up) => {
                    forwarded = true;
                    let servers = upstream_addrs(shared, &table, up);
                    let Ok(permit) = shared.forward_slots.clone().try_acquire_owned() else {
                        shared.stats.failures.inc();
                        if plan::error_reply(msg, Rcode::ServFail, &mut out) {
                            answers.extend_from_slice(&out);
                            ends.push((answers.len(), peer));
                        }
                        continue;
                    };
                    let (sock, shared, query) = (sock.clone(), shared.clone(), msg.to_vec());
                    rt.spawn(async move {
                        let answer = forward(&shared, &servers, &query, false, t0).await;
                        drop(permit);
                        if let Err(e) = sock.send_to(&answer, peer) {
                            tracing::debug!(%peer, "embedded DNS: send: {e}");
                        }
                    });
                }
                Action::Drop => {}
            }
            shared.stats.count_local(&action, t0);
        }
        send_answers(sock, &answers, &ends, &mut gso, &mut scratch);
        let now = Instant::now();
        mode.answered(now);
        let window = spin_window(shared.spin, gap, forwarded);
        if window > Duration::ZERO {
            if spin_until.is_none() && sock.set_nonblocking(true).is_err() {
                continue;
            }
            spin_until = Some(now + window);
        } else if spin_until.take().is_some() {
            if let Err(e) = sock.set_nonblocking(false) {
                tracing::warn!("embedded DNS: socket mode: {e}");
            }
        }
    }
    tracing::debug!("embedded DNS: UDP listener stopped");
}

/// Answers of one batch to the same client, end to end, that go out as one UDP GSO message:
/// all of `segment` bytes but the last, which may be shorter (what `UDP_SEGMENT` allows).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Byte range in the batch's answers.
    bytes: std::ops::Range<usize>,
    peer: SocketAddr,
    /// `None` for a single answer.
    segment: Option<u16>,
    /// The first and one-past-the-last answer (index in `ends`).
    answers: std::ops::Range<usize>,
}

/// Groups a batch's answers (`ends`: where each ends in the batch's bytes, and its
/// destination) into [`Run`]s: consecutive answers to the same peer, each as long as the
/// first except the last (never longer), at most [`GSO_MAX_SEGMENTS`], none over
/// [`GSO_MAX_SEGMENT`] bytes. With `gso` false every answer is a run of its own.
fn gso_runs(ends: &[(usize, SocketAddr)], gso: bool) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::with_capacity(ends.len());
    let mut from = 0;
    for (i, &(end, peer)) in ends.iter().enumerate() {
        let len = end.saturating_sub(from);
        let joins = gso
            && runs.last().is_some_and(|r| {
                let seg = r.segment.map_or(r.bytes.len(), usize::from);
                r.peer == peer
                    && seg <= GSO_MAX_SEGMENT
                    // Every datagram so far is exactly `seg` long (none shorter yet).
                    && r.bytes.len() == seg * r.answers.len()
                    && len <= seg
                    && len > 0
                    && r.answers.len() < GSO_MAX_SEGMENTS
            });
        if joins {
            if let Some(r) = runs.last_mut() {
                r.segment = Some(r.segment.unwrap_or(r.bytes.len() as u16));
                r.bytes.end = end;
                r.answers.end = i + 1;
            }
        } else {
            runs.push(Run {
                bytes: from..end,
                peer,
                segment: None,
                answers: i..i + 1,
            });
        }
        from = end;
    }
    runs
}

/// Sends a batch's answers (`answers` end to end, `ends`: where each ends and its
/// destination) with as few `sendmmsg` calls as the kernel allows: one, unless a send fails.
/// Answers to the same client go as one UDP GSO message while `gso` holds (see [`gso_runs`]);
/// when the kernel refuses one (a route it cannot carry it on), `gso` is turned off for this
/// thread and that message's answers go one by one. A failed plain answer is logged and
/// skipped, as a lost datagram, and the rest go on.
fn send_answers(
    sock: &UdpSocket,
    answers: &[u8],
    ends: &[(usize, SocketAddr)],
    gso: &mut bool,
    scratch: &mut berth_kernel::sys::SendScratch,
) {
    use berth_kernel::sys::Outgoing;
    use std::os::fd::AsFd;
    if let [(end, peer)] = ends {
        // One answer (queries one at a time): a plain send, without the batch's bookkeeping.
        if let Some(d) = answers.get(..*end) {
            if let Err(e) = sock.send_to(d, *peer) {
                tracing::debug!(%peer, "embedded DNS: send: {e}");
            }
        }
        return;
    }
    let runs = gso_runs(ends, *gso);
    let mut msgs: Vec<Outgoing<'_>> = runs
        .iter()
        .filter_map(|r| {
            Some(Outgoing {
                data: answers.get(r.bytes.clone())?,
                dest: r.peer,
                segment: r.segment,
            })
        })
        .collect();
    let mut next = 0;
    while next < msgs.len() {
        match berth_kernel::sys::send_batch(sock.as_fd(), &msgs[next..], scratch) {
            Ok(0) => break,
            Ok(k) => next += k,
            Err(e) => {
                let failed = &msgs[next];
                if failed.segment.is_some() {
                    tracing::debug!(peer = %failed.dest, "embedded DNS: UDP GSO send: {e}; sending answers one by one from now on");
                    *gso = false;
                    // The rest again, each answer a message of its own.
                    let first = runs.get(next).map_or(ends.len(), |r| r.answers.start);
                    let mut from = first.checked_sub(1).map_or(0, |i| ends[i].0);
                    msgs.truncate(next);
                    for &(end, peer) in &ends[first..] {
                        if let Some(d) = answers.get(from..end) {
                            msgs.push(Outgoing {
                                data: d,
                                dest: peer,
                                segment: None,
                            });
                        }
                        from = end;
                    }
                    continue;
                }
                tracing::debug!(peer = %failed.dest, "embedded DNS: send: {e}");
                next += 1;
            }
        }
    }
}

/// The upstream socket addresses for a forwarded query, never one of berth's own listeners.
fn upstream_addrs(shared: &Shared, table: &Table, up: Upstream<'_>) -> Vec<SocketAddr> {
    let host;
    let ips: &[IpAddr] = match up {
        Upstream::Host => {
            host = shared.host.servers();
            &host
        }
        Upstream::Servers(s) => s,
    };
    ips.iter()
        .filter(|ip| !table.is_listen(**ip))
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect()
}

// ------------------------------------------------------------------------------- forwarding

/// Relays `query` to `servers` in order within [`FORWARD_BUDGET`]; the first answer wins.
/// Returns the answer for the client (the upstream's, or SERVFAIL) and records the stats.
async fn forward(
    shared: &Shared,
    servers: &[SocketAddr],
    query: &[u8],
    tcp: bool,
    t0: Instant,
) -> Vec<u8> {
    shared.stats.forwarded.inc();
    let deadline = t0 + FORWARD_BUDGET;
    for (i, server) in servers.iter().enumerate() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let remaining = deadline - now;
        let left = u32::try_from(servers.len() - i).unwrap_or(u32::MAX);
        let budget = (remaining / left).max(MIN_TRY).min(remaining);
        let attempt = async {
            if tcp {
                exchange_tcp(*server, query).await
            } else {
                shared.upstreams.exchange_udp(*server, query).await
            }
        };
        match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(answer)) => {
                shared.stats.forward_latency.record(t0.elapsed());
                return answer;
            }
            Ok(Err(e)) => tracing::debug!(%server, "embedded DNS: upstream failed: {e}"),
            Err(_) => tracing::debug!(%server, ?budget, "embedded DNS: upstream timed out"),
        }
    }
    shared.stats.failures.inc();
    let mut out = Vec::new();
    if !plan::error_reply(query, Rcode::ServFail, &mut out) {
        out.clear();
    }
    out
}

/// The query with a fresh random id (the client's id is restored on the answer).
fn with_random_id(query: &[u8]) -> (Vec<u8>, [u8; 2]) {
    let id: [u8; 2] = rand::random::<u16>().to_be_bytes();
    let mut msg = query.to_vec();
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id);
    }
    (msg, id)
}

/// Whether `answer` is the response to `query` (id, QR bit, same question ignoring case).
fn matches(query: &[u8], answer: &[u8], id: [u8; 2]) -> bool {
    if answer.len() < 12 || answer[..2] != id || answer[2] & 0x80 == 0 {
        return false;
    }
    match (plan::question(query), plan::question(answer)) {
        (Some(q), Some(a)) => q.eq_ignore_ascii_case(a),
        // Error answers (FORMERR from the upstream) may carry no question.
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

fn restore_id(mut answer: Vec<u8>, query: &[u8]) -> Vec<u8> {
    if answer.len() >= 2 && query.len() >= 2 {
        answer[..2].copy_from_slice(&query[..2]);
    }
    answer
}

/// Queries one upstream socket may carry before it is replaced, and its longest life: a
/// socket is reused (no socket, bind and close per query), but its random source port changes
/// often, so the port and the random id together keep answers hard to spoof.
const UPSTREAM_SOCKET_QUERIES: u64 = 4096;
const UPSTREAM_SOCKET_LIFE: Duration = Duration::from_secs(5);

type Waiter = tokio::sync::oneshot::Sender<io::Result<Vec<u8>>>;

/// Queries in flight on one upstream socket: id → (ticket, question asked, who waits). The
/// ticket tells a query's own entry from a later one that reuses its id.
type PendingMap = Arc<Mutex<HashMap<u16, (u64, Vec<u8>, Waiter)>>>;

/// Tickets for [`PendingMap`] entries.
static TICKETS: AtomicU64 = AtomicU64::new(0);

/// A connected UDP socket to one upstream with a task reading its answers.
struct UpstreamSocket {
    sock: Arc<tokio::net::UdpSocket>,
    pending: PendingMap,
    used: AtomicU64,
    born: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for UpstreamSocket {
    fn drop(&mut self) {
        // The last query using it is done (each holds an Arc): stop reading.
        self.reader.abort();
    }
}

/// The upstream sockets, one current socket per upstream address.
#[derive(Default)]
struct UpstreamPool {
    sockets: Mutex<HashMap<SocketAddr, Arc<UpstreamSocket>>>,
}

/// Removes a query from the pending map when its caller stops waiting (answer, timeout or
/// cancellation), so ids are reused only once free.
struct PendingGuard {
    pending: PendingMap,
    id: u16,
    ticket: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            // Only its own entry: once answered, the id may already serve another query.
            if p.get(&self.id).is_some_and(|e| e.0 == self.ticket) {
                p.remove(&self.id);
            }
        }
    }
}

impl UpstreamPool {
    async fn socket(&self, server: SocketAddr) -> io::Result<Arc<UpstreamSocket>> {
        {
            let map = self
                .sockets
                .lock()
                .map_err(|_| io::Error::other("pool lock"))?;
            if let Some(s) = map.get(&server) {
                if s.used.fetch_add(1, Ordering::Relaxed) < UPSTREAM_SOCKET_QUERIES
                    && s.born.elapsed() < UPSTREAM_SOCKET_LIFE
                {
                    return Ok(s.clone());
                }
            }
        }
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = Arc::new(tokio::net::UdpSocket::bind(local).await?);
        sock.connect(server).await?;
        let pending: PendingMap = Arc::new(Mutex::new(HashMap::new()));
        let reader = tokio::spawn(read_upstream(sock.clone(), pending.clone()));
        let fresh = Arc::new(UpstreamSocket {
            sock,
            pending,
            used: AtomicU64::new(1),
            born: Instant::now(),
            reader,
        });
        if let Ok(mut map) = self.sockets.lock() {
            map.insert(server, fresh.clone());
        }
        Ok(fresh)
    }

    /// Relays `query` to `server` over UDP and waits for the matching answer (the caller bounds
    /// the wait).
    async fn exchange_udp(&self, server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
        let conn = self.socket(server).await?;
        let question = plan::question(query)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
        let id = {
            let mut p = conn
                .pending
                .lock()
                .map_err(|_| io::Error::other("pending lock"))?;
            if p.len() > 30_000 {
                return Err(io::Error::other(
                    "too many queries in flight to this upstream",
                ));
            }
            let mut id: u16 = rand::random();
            while p.contains_key(&id) {
                id = rand::random();
            }
            p.insert(id, (ticket, question, tx));
            id
        };
        let _guard = PendingGuard {
            pending: conn.pending.clone(),
            id,
            ticket,
        };
        let mut msg = query.to_vec();
        if msg.len() >= 2 {
            msg[..2].copy_from_slice(&id.to_be_bytes());
        }
        conn.sock.send(&msg).await?;
        let answer = rx
            .await
            .map_err(|_| io::Error::other("upstream socket closed"))??;
        Ok(restore_id(answer, query))
    }
}

/// Hands each answer on an upstream socket to the query waiting for its id (same question,
/// QR set); anything else is ignored. A "port unreachable" fails every query waiting on the
/// socket at once, so they move on to the next upstream instead of timing out.
async fn read_upstream(sock: Arc<tokio::net::UdpSocket>, pending: PendingMap) {
    let mut buf = vec![0u8; 65535];
    loop {
        match sock.recv(&mut buf).await {
            Ok(n) => {
                let answer = &buf[..n];
                if n < 12 || answer[2] & 0x80 == 0 {
                    continue;
                }
                let id = u16::from_be_bytes([answer[0], answer[1]]);
                let Ok(mut p) = pending.lock() else { return };
                let same = p.get(&id).is_some_and(|(_, question, _)| {
                    match plan::question(answer) {
                        Some(a) => a.eq_ignore_ascii_case(question),
                        // Error answers (FORMERR) may carry no question.
                        None => true,
                    }
                });
                if same {
                    if let Some((_, _, tx)) = p.remove(&id) {
                        let _ = tx.send(Ok(answer.to_vec()));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let Ok(mut p) = pending.lock() else { return };
                for (_, (_, _, tx)) in p.drain() {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
            Err(e) => {
                tracing::debug!("embedded DNS: upstream socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn exchange_tcp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    let (msg, id) = with_random_id(query);
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&msg);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    if !matches(query, &answer, id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "upstream answered another question",
        ));
    }
    Ok(restore_id(answer, query))
}

// ---------------------------------------------------------------------------------- TCP path

async fn tcp_accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    owner: Option<Arc<str>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("embedded DNS: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.tcp_slots.clone().try_acquire_owned() else {
            // Too many connections: close this one rather than run out of descriptors.
            continue;
        };
        let shared = shared.clone();
        let owner = owner.clone();
        tokio::spawn(async move {
            serve_tcp(stream, peer, owner.as_deref(), &shared).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    owner: Option<&str>,
    shared: &Shared,
) {
    let _ = stream.set_nodelay(true);
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let t0 = Instant::now();
        shared.stats.queries.inc();
        shared.stats.tcp.inc();
        let rotate = shared.rotate.fetch_add(1, Ordering::Relaxed);
        let table = shared.table.load_full();
        let asker = match owner {
            Some(id) => table.asker_by_id(id),
            None => table.asker(peer.ip()),
        };
        let action = plan::handle_as(&table, asker, &msg, Transport::Tcp, rotate, &mut out);
        shared.stats.count_local(&action, t0);
        let answer = match action {
            Action::Answered { .. } | Action::Error(_) => std::mem::take(&mut out),
            Action::Forward(up) => {
                let servers = upstream_addrs(shared, &table, up);
                forward(shared, &servers, &msg, true, t0).await
            }
            Action::Drop => return,
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        out = answer;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((50.0..=62.0).contains(&p50), "{p50}");
        assert!((99.0..=123.0).contains(&p99), "{p99}");
        for ns in [0u64, 3, 4, 7, 8, 1000, 1 << 40] {
            let i = Histogram::index(ns);
            assert!(
                Histogram::upper(i) > ns || i == HIST_BUCKETS - 1,
                "{ns} {i}"
            );
        }
    }

    #[test]
    fn answer_matching() {
        let q = plan::build_query(0x1111, "example.com", 1, None);
        let mut a = q.clone();
        a[0..2].copy_from_slice(&[9, 9]);
        a[2] |= 0x80;
        assert!(matches(&q, &a, [9, 9]));
        assert!(!matches(&q, &a, [9, 8]));
        let other = plan::build_query(0x1111, "example.org", 1, None);
        let mut b = other.clone();
        b[0..2].copy_from_slice(&[9, 9]);
        b[2] |= 0x80;
        assert!(!matches(&q, &b, [9, 9]));
        assert_eq!(restore_id(a, &q)[..2], [0x11, 0x11]);
    }

    #[test]
    fn gso_runs_group_same_peer_equal_sizes() {
        let a: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let b: SocketAddr = "10.0.0.3:4000".parse().unwrap();
        // Lengths 50, 50, 40 to a; 50 to b; 50, 60 to a; 600, 600 to a; 50 to a.
        let lens_peers = [
            (50, a),
            (50, a),
            (40, a),
            (50, b),
            (50, a),
            (60, a),
            (600, a),
            (600, a),
            (50, a),
        ];
        let mut end = 0;
        let ends: Vec<(usize, SocketAddr)> = lens_peers
            .iter()
            .map(|&(l, p)| {
                end += l;
                (end, p)
            })
            .collect();
        let runs = gso_runs(&ends, true);
        let got: Vec<(usize, Option<u16>, SocketAddr)> = runs
            .iter()
            .map(|r| (r.answers.len(), r.segment, r.peer))
            .collect();
        assert_eq!(
            got,
            vec![
                // Equal sizes, then a shorter last one: one message.
                (3, Some(50), a),
                // Another peer breaks the run.
                (1, None, b),
                // A longer answer cannot follow: a run of its own.
                (1, None, a),
                (1, None, a),
                // Over the plain DNS size: never segmented.
                (1, None, a),
                (1, None, a),
                (1, None, a),
            ]
        );
        // The runs cover every byte once, in order.
        assert_eq!(runs[0].bytes, 0..140);
        assert!(runs.windows(2).all(|w| w[0].bytes.end == w[1].bytes.start));
        assert_eq!(runs.last().map(|r| r.bytes.end), Some(end));
        // Without GSO every answer is a message of its own.
        assert!(gso_runs(&ends, false).iter().all(|r| r.segment.is_none()));
        assert_eq!(gso_runs(&ends, false).len(), ends.len());
        // At most GSO_MAX_SEGMENTS answers per message.
        let many: Vec<(usize, SocketAddr)> =
            (1..=GSO_MAX_SEGMENTS + 5).map(|i| (i * 30, a)).collect();
        let runs = gso_runs(&many, true);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].answers.len(), GSO_MAX_SEGMENTS);
        assert_eq!(runs[0].segment, Some(30));
    }

    #[test]
    fn resolv_conf_reread_on_change() {
        let path = std::env::temp_dir().join(format!("berth-resolv-{}.conf", std::process::id()));
        std::fs::write(&path, "nameserver 127.0.0.53\n").unwrap();
        let h = HostResolvers::new(path.clone());
        assert_eq!(&*h.servers(), &["127.0.0.53".parse::<IpAddr>().unwrap()]);
        std::fs::write(&path, "nameserver 192.0.2.1\nnameserver 192.0.2.2\n").unwrap();
        // Within the check interval the cached list stands; after it, the new one.
        assert_eq!(h.servers().len(), 1);
        if let Ok(mut st) = h.state.lock() {
            st.checked = None;
        }
        assert_eq!(h.servers().len(), 2);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn recv_mode_batches_only_while_queries_queue_up() {
        let us = Duration::from_micros;
        let t = Instant::now();
        let mut m = RecvMode::default();
        // The first query, woken for: one at a time.
        m.received(1, false, t);
        assert!(!m.batched);
        // A steady one-at-a-time client, polled for: the polls found the socket empty first.
        m.answered(t + us(5));
        m.polled_empty();
        m.polled_empty();
        m.received(1, true, t + us(40));
        assert!(!m.batched);
        // Under load: the first poll after the answer already finds a query waiting.
        m.answered(t + us(45));
        m.received(1, true, t + us(46));
        assert!(m.batched);
        // A batch of several stays a batch, one of one goes back to single receives.
        m.answered(t + us(50));
        m.received(7, true, t + us(51));
        assert!(m.batched);
        m.answered(t + us(60));
        m.polled_empty();
        m.received(1, true, t + us(90));
        assert!(!m.batched);
        // A burst on a sleeping thread: woken for the first (slow), the second blocking
        // receive returns at once: queued.
        m.answered(t + us(100));
        m.received(1, false, t + us(5000));
        assert!(!m.batched);
        m.answered(t + us(5005));
        m.received(1, false, t + us(5007));
        assert!(m.batched);
        // A blocking receive that slept: one at a time again.
        m.answered(t + us(5010));
        m.received(1, false, t + us(5010) + QUICK_RETURN);
        assert!(!m.batched);
        // A poll that found nothing, then the thread slept and a later blocking receive
        // returned at once: that empty poll belongs to the earlier answer, not to this one.
        m.answered(t + us(6000));
        m.polled_empty();
        m.received(1, true, t + us(6030));
        m.answered(t + us(6035));
        m.received(1, true, t + us(6036));
        assert!(m.batched);
    }

    #[test]
    fn spin_window_by_mode_and_pace() {
        let us = Duration::from_micros;
        // Off never spins; fixed always spins the whole window.
        for gap in [None, Some(us(5)), Some(us(1000))] {
            assert_eq!(spin_window(SpinMode::Off, gap, false), Duration::ZERO);
            assert_eq!(spin_window(SpinMode::Fixed, gap, false), UDP_SPIN);
        }
        // Adaptive: the first query, or one after a pause, costs no spin.
        assert_eq!(spin_window(SpinMode::Adaptive, None, false), Duration::ZERO);
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(SPIN_TRIGGER), false),
            Duration::ZERO
        );
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(250)), false),
            Duration::ZERO
        );
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(5000)), false),
            Duration::ZERO
        );
        // A steady client: twice its pace, at least MIN_SPIN, at most UDP_SPIN.
        assert_eq!(spin_window(SpinMode::Adaptive, Some(us(30)), false), us(60));
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(2)), false),
            MIN_SPIN
        );
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(0)), false),
            MIN_SPIN
        );
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(70)), false),
            UDP_SPIN
        );
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(99)), false),
            UDP_SPIN
        );
        // A client paced by the wake-ups the spin would save (its gaps hold them) gets it.
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(120)), false),
            UDP_SPIN
        );
        // After a forwarded query the adaptive mode never spins; fixed still does.
        assert_eq!(
            spin_window(SpinMode::Adaptive, Some(us(30)), true),
            Duration::ZERO
        );
        assert_eq!(spin_window(SpinMode::Fixed, Some(us(30)), true), UDP_SPIN);
    }
}
