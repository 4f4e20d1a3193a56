//! Published ports for the host's own `[::1]`: a relay in berthd, the one place berth proxies.
//!
//! Everywhere else a published port is a DNAT map element and the container sees the real
//! client. `::1` cannot work that way: the kernel never lets a packet with a `::1` address leave
//! `lo` (IPv6 has no `route_localnet`), so a host connection to `[::1]:8080` cannot be DNATed to
//! a container. Docker answers it with one `docker-proxy` process per port; berth answers it
//! inside berthd, for every TCP/UDP port published on `::1` or on a wildcard address
//! (`berth_plan::ports::loopback6_relays` decides), relaying to the container's address (IPv6
//! when the port is published for IPv6, else IPv4):
//!
//! * **TCP: no socket per port.** berthd has ONE listener, on `[::1]:R` (that address only,
//!   never a wildcard, in its own network namespace; R chosen at first start and kept in the
//!   store, see [`Relays::listen`]). Chain `output` redirects the host's `[::1]` connections to
//!   the ports of sets `relay6_tcp` and `relay6_tcp_runs` there (`redirect to :R`; their
//!   elements, one per port or one per run of 32+ consecutive ports of one container, are
//!   published with the container's map elements, in the same transaction), and the listener reads the
//!   port asked for with `getsockopt(IPV6, IP6T_SO_ORIGINAL_DST)`, finds who publishes it in
//!   the index below and relays: one task per connection, a connect with a timeout, then
//!   `copy_bidirectional`. A port that is not (or no longer) published is closed at once (and
//!   once its element is gone, refused by the kernel: nothing listens on it). Publishing a
//!   1,000-port range costs 1,000 index entries and ONE set element, no syscall per port.
//! * **UDP: a socket per port** (one redirected socket could not tell two flows of one
//!   client apart): one session per client address (its own connected socket to the
//!   container, so replies find their way back), expired after [`UDP_IDLE`] without traffic.
//!   Only these count against the descriptor budget.
//!
//! A relay opens when its container's ports are published (start, and berthd's start-up
//! convergence) and closes when they are unpublished (exit, removal): its ports leave the
//! index (a redirected connection arriving meanwhile is closed), its connections are closed,
//! and its UDP sockets are closed before unpublishing returns. The relays are indexed by port
//! (conflicts, the TCP listener's look-up) and by container (closing costs O(that
//! container's relays)).
//!
//! The container sees berthd's address on its network (the gateway), not `::1`: the client is
//! the host itself either way.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plan::ports::{LoopbackRelay, Proto};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// How long a TCP connect to the container may take before the client's connection is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP session (one client address) is dropped after this long without a datagram either way
/// (the kernel's conntrack keeps a replied UDP flow for 120 s; Docker's proxy for 90 s).
pub const UDP_IDLE: Duration = Duration::from_secs(90);
/// How often idle UDP sessions are looked for.
const UDP_SWEEP: Duration = Duration::from_secs(5);
/// TCP connections in flight per relayed port; past that, new clients are closed at once.
const MAX_TCP: usize = 1024;
/// UDP sessions per relay; past that, datagrams of new clients are dropped.
const MAX_UDP_SESSIONS: usize = 1024;
/// Largest UDP datagram.
const UDP_BUF: usize = 65_535;

/// Who holds one relayed port.
struct Owner {
    /// The container whose port it is (name).
    container: String,
    /// What it relays.
    relay: LoopbackRelay,
    /// TCP: what the one listener needs to serve a redirected connection to this port.
    tcp: Option<TcpPort>,
}

/// A relayed TCP port's connections.
#[derive(Clone)]
struct TcpPort {
    /// Changes (its sender is dropped) when the container's relays close: its connections end.
    closed: watch::Receiver<()>,
    /// Connections in flight to this port.
    in_flight: Arc<AtomicUsize>,
}

/// One container's relays.
#[derive(Default)]
struct ContainerRelays {
    /// The ports it holds, to free them in the index without a scan of every relay.
    ports: Vec<(Proto, u16)>,
    /// Its UDP relays' tasks (each owns its socket).
    tasks: Vec<JoinHandle<()>>,
    /// Dropped when it closes: every TCP connection relayed for it ends.
    closing: Option<watch::Sender<()>>,
}

/// The open relays: by port (conflicts, the holder of a port, the TCP listener's look-up) and by
/// container (closing one container's relays costs O(its ports), not a walk over every relay
/// berthd holds).
#[derive(Default)]
struct Table {
    by_port: HashMap<(Proto, u16), Owner>,
    by_container: HashMap<String, ContainerRelays>,
    /// UDP relays open: each holds a socket (the budget counts these only).
    sockets: usize,
}

/// Every relay berthd has open.
pub struct Relays {
    open: Arc<Mutex<Table>>,
    /// At most this many UDP relay sockets: each holds one file descriptor (plus one per
    /// session), so a huge published UDP range must not take all of berthd's and make every
    /// later `open` or `socket` fail with `EMFILE`. TCP ports cost no descriptor (one listener
    /// for all of them).
    budget: usize,
    /// The port R of the one TCP listener on `[::1]` (0: not listening, see [`Relays::listen`]).
    port: AtomicU16,
}

/// Locks the table (a panic while it was held leaves it usable: every change is one insert or
/// remove).
fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    match t.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Relays {
    /// No relays; at most `budget` UDP relays open at once (berthd: half its open-files limit,
    /// or `--max-loopback-relays`).
    pub fn new(budget: usize) -> Relays {
        Relays {
            open: Arc::new(Mutex::new(Table::default())),
            budget,
            port: AtomicU16::new(0),
        }
    }

    /// The port of the TCP listener on `[::1]` (0 while there is none): what chain `output`
    /// redirects the host's `[::1]` connections to published TCP ports to.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// Opens the one TCP listener on `[::1]:wanted` (the port an earlier berthd used, kept in
    /// the store, so a restart leaves the redirect rule as it is: no kernel write), or on a
    /// port the kernel picks when `wanted` is 0 or taken by someone else (then the rule is
    /// rewritten by the start-up pass, its comment names the port). Returns the port. Must run
    /// inside the tokio runtime.
    ///
    /// `[::1]` only: nothing outside the host can reach it (and `prerouting_raw` drops `::1`
    /// that did not come from `lo`), nor a container (its `::1` is its own). A host process
    /// connecting to it directly has no redirected destination to ask for and is closed.
    pub fn listen(&self, wanted: u16) -> std::io::Result<u16> {
        let bind = |port: u16| -> std::io::Result<std::net::TcpListener> {
            let s = Socket::new(
                Domain::IPV6,
                Type::STREAM.nonblocking(),
                Some(Protocol::TCP),
            )?;
            // An earlier berthd's connections in TIME_WAIT must not keep its port; a listener
            // of anyone else still refuses the bind.
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)).into())?;
            s.listen(1024)?;
            Ok(s.into())
        };
        let l = match bind(wanted) {
            Ok(l) => l,
            Err(e) if wanted != 0 => {
                tracing::warn!(
                    "[::1]:{wanted} (berthd's relay port) cannot listen again ({e}): taking \
                     another port, the redirect rule follows"
                );
                bind(0)?
            }
            Err(e) => return Err(e),
        };
        let port = l.local_addr()?.port();
        let l = TcpListener::from_std(l)?;
        tokio::spawn(serve_redirected(l, self.open.clone()));
        self.port.store(port, Ordering::Relaxed);
        tracing::info!(port, "[::1] relay listening");
        Ok(port)
    }

    /// Who holds `[::1]:port` for `proto` among berthd's own relays, for a refusal message.
    pub fn holder(&self, proto: Proto, port: u16) -> Option<String> {
        let open = self.open.lock().ok()?;
        open.by_port.get(&(proto, port)).map(|o| {
            format!(
                "berthd's [::1] relay for container {:?} ({})",
                o.container, o.relay.key
            )
        })
    }

    /// Opens the relays of container `id` (named `name`). A required relay (a port published on
    /// `::1` itself) that cannot be served refuses the whole call, and nothing of this call
    /// stays open; any other that cannot is a warning (returned, and logged). Must run inside
    /// the tokio runtime.
    ///
    /// A TCP port is an index entry (the one listener serves it once its `relay6_tcp` or
    /// `relay6_tcp_runs` element is in force); a UDP port a `socket`, a `bind` and a task.
    pub fn open(
        &self,
        id: &str,
        name: &str,
        relays: &[LoopbackRelay],
    ) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let mut opened: Vec<(Proto, u16)> = Vec::new();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        // Relays left out for the budget: one warning for all of them, not one line per port
        // (`-p 1-65535:1-65535/udp` would log 55,000 lines).
        let mut over_budget: Vec<&LoopbackRelay> = Vec::new();
        let mut open = lock(&self.open);
        let listening = self.port() != 0;
        // The container's connections' end signal: its sender joins the container's relays.
        let (closing, closed) = match open.by_container.get(id).and_then(|c| c.closing.as_ref()) {
            Some(tx) => (None, tx.subscribe()),
            None => {
                let (tx, rx) = watch::channel(());
                (Some(tx), rx)
            }
        };
        for r in relays {
            let k = (r.proto, r.host_port);
            let addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), r.host_port);
            let failure = if let Some(o) = open.by_port.get(&k) {
                Some(format!(
                    "port is already allocated (berthd relays it for container {:?}, {})",
                    o.container, o.relay.key
                ))
            } else if r.proto == Proto::Tcp {
                if r.host_port == self.port() {
                    // `[::1]:R` is the listener itself: a connection to it has no other port
                    // to be relayed to.
                    Some("it is berthd's own [::1] relay port".into())
                } else if listening {
                    open.by_port.insert(
                        k,
                        Owner {
                            container: name.to_string(),
                            relay: r.clone(),
                            tcp: Some(TcpPort {
                                closed: closed.clone(),
                                in_flight: Arc::new(AtomicUsize::new(0)),
                            }),
                        },
                    );
                    opened.push(k);
                    None
                } else {
                    Some("berthd's [::1] relay listener is not running (see its log)".into())
                }
            } else if open.sockets >= self.budget {
                if !r.required {
                    over_budget.push(r);
                    continue;
                }
                Some(self.budget_reason())
            } else {
                match spawn_udp(r) {
                    Ok(t) => {
                        tasks.push(t);
                        open.by_port.insert(
                            k,
                            Owner {
                                container: name.to_string(),
                                relay: r.clone(),
                                tcp: None,
                            },
                        );
                        open.sockets += 1;
                        opened.push(k);
                        None
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Some(format!(
                        "port is already in use by {} on the host",
                        berth_kernel::hostport::holder(r.proto, true, r.host_port)
                    )),
                    Err(e) => Some(format!("cannot listen: {e}")),
                }
            };
            let Some(why) = failure else { continue };
            if r.required {
                undo(&mut open, &opened, tasks);
                return Err(format!("Bind for {addr}/{} failed: {why}", r.proto));
            }
            let w = format!(
                "container {name:?}: {} is published on every address, but not reachable \
                 through {addr}/{}: {why}",
                r.key, r.proto
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        if !opened.is_empty() {
            tracing::debug!(container = %name, relays = opened.len(), "loopback relays open");
            let mine = open.by_container.entry(id.to_string()).or_default();
            mine.ports.extend(opened);
            mine.tasks.extend(tasks);
            if closing.is_some() {
                mine.closing = closing;
            }
        }
        if let (Some(first), Some(last)) = (over_budget.first(), over_budget.last()) {
            let w = format!(
                "container {name:?}: {} ports published on every address ({}/{} … {}/{}) are \
                 not reachable through [::1]: {}",
                over_budget.len(),
                first.host_port,
                first.proto,
                last.host_port,
                last.proto,
                self.budget_reason()
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        Ok(warnings)
    }

    /// Why a relay past the budget is not opened.
    fn budget_reason(&self) -> String {
        format!(
            "berthd's [::1] UDP relays are at their limit of {} sockets (half of its \
             open-files limit, or --max-loopback-relays; docs/PORTS.md): publish fewer UDP \
             ports on [::1], or raise berthd's LimitNOFILE",
            self.budget
        )
    }

    /// Closes the relays of container `id`; returns once their sockets are closed.
    pub async fn close(&self, id: &str) {
        self.begin_close(id).done().await;
    }

    /// Starts closing the relays of container `id`: they leave the index at once (a redirected
    /// TCP connection to one of its ports is closed from now on), its TCP connections are told
    /// to end, and its UDP relays' tasks are cancelled, so the runtime's other workers drop
    /// them (closing the sockets) while the caller goes on (unpublishing removes the
    /// container's elements meanwhile); [`Closing::done`] returns once every UDP socket is
    /// closed. O(the container's relays).
    pub fn begin_close(&self, id: &str) -> Closing {
        let mut open = lock(&self.open);
        let Some(mine) = open.by_container.remove(id) else {
            return Closing(Vec::new());
        };
        for k in &mine.ports {
            if open.by_port.remove(k).is_some_and(|o| o.tcp.is_none()) {
                open.sockets = open.sockets.saturating_sub(1);
            }
        }
        for t in &mine.tasks {
            t.abort();
        }
        // `mine.closing` is dropped here: the container's TCP connections end.
        Closing(mine.tasks)
    }
}

/// Relays being closed ([`Relays::begin_close`]).
#[must_use = "the relays are closed only once `done` returns"]
pub struct Closing(Vec<JoinHandle<()>>);

impl Closing {
    /// Returns once every UDP socket of these relays is closed: a cancelled task's future (and
    /// the socket it owns) is dropped before its handle resolves.
    pub async fn done(self) {
        for t in self.0 {
            let _ = t.await;
        }
    }
}

/// Takes back what a refused [`Relays::open`] call opened: its ports leave the index and its
/// UDP relays' tasks are aborted.
fn undo(open: &mut Table, opened: &[(Proto, u16)], tasks: Vec<JoinHandle<()>>) {
    for k in opened {
        if open.by_port.remove(k).is_some_and(|o| o.tcp.is_none()) {
            open.sockets = open.sockets.saturating_sub(1);
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// Binds `[::1]:port` for UDP and spawns the relay's task, which owns the socket:
/// `socket(AF_INET6, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC)`, `bind`, and tokio's
/// `epoll_ctl(EPOLL_CTL_ADD)`.
fn spawn_udp(r: &LoopbackRelay) -> std::io::Result<JoinHandle<()>> {
    let addr: SocketAddr = (Ipv6Addr::LOCALHOST, r.host_port).into();
    let s = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
    s.bind(&addr.into())?;
    let u = UdpSocket::from_std(s.into())?;
    Ok(tokio::spawn(udp_relay(u, r.target)))
}

/// Where a connection accepted on the relay port was going: the `[::1]` port the host asked
/// for, from conntrack (`getsockopt(IPV6, IP6T_SO_ORIGINAL_DST)`). `None` for a connection
/// that was not redirected to `::1` (a client of the relay port itself): nothing to relay.
fn redirected_port(client: &TcpStream, relay_port: u16) -> Option<u16> {
    let dst = rustix::net::sockopt::ipv6_original_dst(client).ok()?;
    (*dst.ip() == Ipv6Addr::LOCALHOST && dst.port() != relay_port).then_some(dst.port())
}

/// Serves the one `[::1]` TCP listener: each connection the `output` chain redirected here is
/// relayed to the container that publishes the port it asked for (in `table`), in a task of
/// its own that ends when the connection does or when that container's relays close. A port
/// not in the table (no longer published, or never) is closed at once.
async fn serve_redirected(l: TcpListener, table: Arc<Mutex<Table>>) {
    let relay_port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let (client, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: do not spin.
                tracing::warn!("[::1] relay: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(port) = redirected_port(&client, relay_port) else {
            tracing::debug!("[::1] relay: {peer} was not redirected to a published port");
            continue;
        };
        let found = {
            let t = lock(&table);
            t.by_port
                .get(&(Proto::Tcp, port))
                .and_then(|o| o.tcp.clone().map(|c| (o.relay.target, c)))
        };
        let Some((target, conn)) = found else {
            tracing::debug!("[::1] relay: port {port} is not published, closing {peer}");
            continue;
        };
        if conn.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_TCP {
            conn.in_flight.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("[::1] relay to {target}: {MAX_TCP} connections open, closing {peer}");
            continue;
        }
        let TcpPort {
            mut closed,
            in_flight,
        } = conn;
        tokio::spawn(async move {
            tokio::select! {
                () = tcp_conn(client, peer, target) => {}
                // The container's relays closed (unpublished): the connection ends with them.
                _ = closed.changed() => {}
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One TCP connection: connect to the container (bounded), then copy both ways until both
/// sides are done.
async fn tcp_conn(mut client: TcpStream, peer: SocketAddr, target: SocketAddr) {
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!("[::1] relay {peer} -> {target}: connect: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(
                "[::1] relay {peer} -> {target}: connect timed out after {CONNECT_TIMEOUT:?}"
            );
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("[::1] relay {peer} -> {target}: {e}");
    }
}

/// One UDP client of a relay: its socket to the container and when it was last used.
struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the relay's start at the last datagram either way.
    last: Arc<AtomicU64>,
    reader: AbortHandle,
}

/// Relays datagrams between clients of `[::1]:port` (socket `l`) and `target`, one session per
/// client address. Only this task touches `l` (replies come back through a channel), so
/// aborting it closes the port.
async fn udp_relay(l: UdpSocket, target: SocketAddr) {
    let base = Instant::now();
    let now_ms = move || ms_since(base);
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>(256);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut readers = JoinSet::new();
    let mut sweep = tokio::time::interval(UDP_SWEEP);
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        tokio::select! {
            got = l.recv_from(&mut buf) => {
                let (n, client) = match got {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("[::1] relay to {target}: recv: {e}");
                        continue;
                    }
                };
                if sessions.get(&client).is_some_and(|s| s.reader.is_finished()) {
                    sessions.remove(&client);
                }
                if !sessions.contains_key(&client) {
                    if sessions.len() >= MAX_UDP_SESSIONS {
                        tracing::debug!("[::1] relay to {target}: {MAX_UDP_SESSIONS} sessions, dropping a datagram of {client}");
                        continue;
                    }
                    match udp_session(target, client, &tx, &mut readers, base).await {
                        Ok(s) => {
                            sessions.insert(client, s);
                        }
                        Err(e) => {
                            tracing::debug!("[::1] relay {client} -> {target}: {e}");
                            continue;
                        }
                    }
                }
                if let Some(s) = sessions.get(&client) {
                    s.last.store(now_ms(), Ordering::Relaxed);
                    if let Err(e) = s.upstream.send(&buf[..n]).await {
                        tracing::debug!("[::1] relay {client} -> {target}: send: {e}");
                    }
                }
            }
            Some((data, client)) = rx.recv() => {
                if let Err(e) = l.send_to(&data, client).await {
                    tracing::debug!("[::1] relay {target} -> {client}: send: {e}");
                }
            }
            _ = sweep.tick() => {
                let now = now_ms();
                let idle = UDP_IDLE.as_millis() as u64;
                sessions.retain(|_, s| {
                    let keep = now.saturating_sub(s.last.load(Ordering::Relaxed)) < idle;
                    if !keep {
                        s.reader.abort();
                    }
                    keep
                });
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
    }
}

/// Milliseconds since `base`.
fn ms_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A new UDP session: a socket connected to `target` from berthd's side, and a reader task that
/// hands the container's replies to the relay task for `client`. `base` is the relay's clock.
async fn udp_session(
    target: SocketAddr,
    client: SocketAddr,
    tx: &mpsc::Sender<(Vec<u8>, SocketAddr)>,
    readers: &mut JoinSet<()>,
    base: Instant,
) -> std::io::Result<Session> {
    let local: SocketAddr = if target.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(local).await?);
    upstream.connect(target).await?;
    let last = Arc::new(AtomicU64::new(ms_since(base)));
    let (up, tx, seen) = (upstream.clone(), tx.clone(), last.clone());
    let reader = readers.spawn(async move {
        let mut buf = vec![0u8; UDP_BUF];
        loop {
            match up.recv(&mut buf).await {
                Ok(n) => {
                    seen.store(ms_since(base), Ordering::Relaxed);
                    if tx.send((buf[..n].to_vec(), client)).await.is_err() {
                        return;
                    }
                }
                // ICMP port unreachable (nothing listens in the container yet): keep the
                // session, the next datagram may find a listener.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!("[::1] relay {target} -> {client}: recv: {e}");
                    return;
                }
            }
        }
    });
    Ok(Session {
        upstream,
        last,
        reader,
    })
}
