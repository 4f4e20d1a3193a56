//! Published ports for the host's own `[::1]`: a relay in berthd, the one place berth proxies.
//!
//! Everywhere else a published port is a DNAT map element and the container sees the real
//! client. `::1` cannot work that way: the kernel never lets a packet with a `::1` address leave
//! `lo` (IPv6 has no `route_localnet`), so a host connection to `[::1]:8080` cannot be DNATed to
//! a container (berth's `output` chain leaves `::1` alone). Docker answers it with one
//! `docker-proxy` process per port; berth answers it inside berthd: for every TCP/UDP port
//! published on `::1` or on a wildcard address (`berth_plan::ports::loopback6_relays` decides),
//! berthd listens on `[::1]:HOSTPORT` — that address only, never a wildcard, in its own network
//! namespace — and relays to the container's address (IPv6 when the port is published for IPv6,
//! else IPv4):
//!
//! * TCP: one task per connection, a connect with a timeout, then `copy_bidirectional`;
//! * UDP: one session per client address (its own connected socket to the container, so
//!   replies find their way back), expired after [`UDP_IDLE`] without traffic.
//!
//! No process and no thread per port. A container's TCP listeners are plain sockets in a
//! private epoll, served by ONE tokio task (tokio watches the epoll descriptor): a 1,000-port
//! range costs `socket`, `bind`, `listen` and one `epoll_ctl` per port and one task, and its
//! removal one `close` per port (closing a descriptor takes it out of the epoll). Each UDP
//! relay has a task of its own; every TCP connection and UDP session one more. A relay opens
//! when its container's ports are published (start, and berthd's start-up convergence) and
//! closes when they are unpublished (exit, removal); closing waits until the listening
//! sockets are closed, so a connection right after is refused. The relays are indexed by
//! port (conflicts) and by container (closing costs O(that container's relays)).
//!
//! The container sees berthd's address on its network (the gateway), not `::1`: the client is
//! the host itself either way.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plan::ports::{LoopbackRelay, Proto};
use rustix::event::epoll;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// How long a TCP connect to the container may take before the client's connection is closed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A UDP session (one client address) is dropped after this long without a datagram either way
/// (the kernel's conntrack keeps a replied UDP flow for 120 s; Docker's proxy for 90 s).
pub const UDP_IDLE: Duration = Duration::from_secs(90);
/// How often idle UDP sessions are looked for.
const UDP_SWEEP: Duration = Duration::from_secs(5);
/// TCP connections in flight per relay; past that, new clients are closed at once.
const MAX_TCP: usize = 1024;
/// UDP sessions per relay; past that, datagrams of new clients are dropped.
const MAX_UDP_SESSIONS: usize = 1024;
/// Largest UDP datagram.
const UDP_BUF: usize = 65_535;
/// Connections accepted from one listener per wake-up of its container's task, so one busy
/// port cannot starve the container's other ports (the private epoll is level-triggered: a
/// listener with more waiting is reported again).
const ACCEPT_BATCH: usize = 64;

/// Who holds one relayed port.
struct Owner {
    /// The container whose port it is (name).
    container: String,
    /// What it relays.
    relay: LoopbackRelay,
}

/// One container's relays: its TCP listeners are served by ONE task (all of them in a private
/// epoll, see [`tcp_group`]), each UDP relay by a task of its own.
#[derive(Default)]
struct ContainerRelays {
    /// The ports it holds, to free them in the index without a scan of every relay.
    ports: Vec<(Proto, u16)>,
    /// Its tasks (the TCP group's owns the listening sockets; a UDP one owns its socket).
    tasks: Vec<JoinHandle<()>>,
}

/// The open relays: by port (conflicts, the holder of a port) and by container (closing one
/// container's relays costs O(its ports), not a walk over every relay berthd holds).
#[derive(Default)]
struct Table {
    by_port: HashMap<(Proto, u16), Owner>,
    by_container: HashMap<String, ContainerRelays>,
}

/// Every relay berthd has open.
pub struct Relays {
    open: Mutex<Table>,
    /// At most this many listening sockets: each relay holds one file descriptor (plus one per
    /// connection or session), so a huge published range must not take all of berthd's and
    /// make every later `open`, `socket` or `nft` spawn fail with `EMFILE`.
    budget: usize,
}

impl Relays {
    /// No relays; at most `budget` of them open at once (berthd: half its open-files limit,
    /// or `--max-loopback-relays`).
    pub fn new(budget: usize) -> Relays {
        Relays {
            open: Mutex::new(Table::default()),
            budget,
        }
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
    /// `::1` itself) that cannot listen refuses the whole call, and nothing of this call stays
    /// open; any other that cannot listen is a warning (returned, and logged). Must run inside
    /// the tokio runtime.
    ///
    /// Per TCP port: `socket`, `bind`, `listen` and one `epoll_ctl(EPOLL_CTL_ADD)` into the
    /// container's private epoll — no task and no tokio registration per port; one task and one
    /// registration (the epoll descriptor) per container.
    pub fn open(
        &self,
        id: &str,
        name: &str,
        relays: &[LoopbackRelay],
    ) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let mut opened: Vec<(Proto, u16)> = Vec::new();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        // This call's TCP listeners, in its private epoll (created with the first one).
        let mut group: Option<(OwnedFd, Vec<(std::net::TcpListener, SocketAddr)>)> = None;
        // Relays left out for the budget: one warning for all of them, not one line per port
        // (`-p 1-65535:1-65535` would log 55,000 lines).
        let mut over_budget: Vec<&LoopbackRelay> = Vec::new();
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for r in relays {
            let k = (r.proto, r.host_port);
            let addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), r.host_port);
            let failure = if let Some(o) = open.by_port.get(&k) {
                Some(format!(
                    "port is already allocated (berthd relays it for container {:?}, {})",
                    o.container, o.relay.key
                ))
            } else if open.by_port.len() >= self.budget {
                if !r.required {
                    over_budget.push(r);
                    continue;
                }
                Some(self.budget_reason())
            } else {
                let listening = match r.proto {
                    Proto::Tcp => listen_tcp(r.host_port).and_then(|l| {
                        if group.is_none() {
                            group = Some((epoll::create(epoll::CreateFlags::CLOEXEC)?, Vec::new()));
                        }
                        let Some((ep, listeners)) = group.as_mut() else {
                            return Err(std::io::Error::other("no epoll for the TCP relays"));
                        };
                        // `epoll_ctl(ep, EPOLL_CTL_ADD, fd, {EPOLLIN, index})`: level-triggered,
                        // the index is the listener's place in the group.
                        epoll::add(
                            &*ep,
                            &l,
                            epoll::EventData::new_u64(listeners.len() as u64),
                            epoll::EventFlags::IN,
                        )?;
                        listeners.push((l, r.target));
                        Ok(())
                    }),
                    _ => spawn_udp(r).map(|t| tasks.push(t)),
                };
                match listening {
                    Ok(()) => {
                        open.by_port.insert(
                            k,
                            Owner {
                                container: name.to_string(),
                                relay: r.clone(),
                            },
                        );
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
                // Nothing of this call stays: its listeners close with `group`.
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
        if let Some((ep, listeners)) = group {
            let tcp = listeners.len();
            // The AsyncFd owns the epoll descriptor (no one else can close or reuse it while
            // it is registered: the soundness concern of tokio#8587, as for the kernel crate's
            // pidfds and netlink monitors; the replacement is `unsafe`).
            #[allow(deprecated)]
            let registered = AsyncFd::with_interest(ep, tokio::io::Interest::READABLE);
            match registered {
                Ok(ep) => tasks.push(tokio::spawn(tcp_group(ep, listeners))),
                Err(e) => {
                    // Registering one descriptor with the runtime failed (out of memory or
                    // descriptors): the TCP relays of this call are not served.
                    let w = format!(
                        "container {name:?}: {tcp} TCP ports are not reachable through [::1]: \
                         cannot watch their listeners: {e}"
                    );
                    let required = relays.iter().any(|r| r.required && r.proto == Proto::Tcp);
                    if required {
                        undo(&mut open, &opened, tasks);
                        return Err(w);
                    }
                    opened.retain(|k| {
                        let keep = k.0 != Proto::Tcp;
                        if !keep {
                            open.by_port.remove(k);
                        }
                        keep
                    });
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
            }
        }
        if !opened.is_empty() {
            tracing::debug!(container = %name, relays = opened.len(), "loopback relays open");
            let mine = open.by_container.entry(id.to_string()).or_default();
            mine.ports.extend(opened);
            mine.tasks.extend(tasks);
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
            "berthd's [::1] relays are at their limit of {} listening sockets (half of its \
             open-files limit, or --max-loopback-relays; docs/PORTS.md): publish fewer ports on \
             [::1], or raise berthd's LimitNOFILE",
            self.budget
        )
    }

    /// Closes the relays of container `id`; returns once their listening sockets are closed.
    pub async fn close(&self, id: &str) {
        self.begin_close(id).done().await;
    }

    /// Starts closing the relays of container `id`: they leave the index at once and their
    /// tasks are cancelled, so the runtime's other workers drop them (closing the sockets)
    /// while the caller goes on (unpublishing removes the container's map elements meanwhile);
    /// [`Closing::done`] returns once every listening socket is closed. O(the container's
    /// relays): they are found through the container, not a walk over every relay.
    pub fn begin_close(&self, id: &str) -> Closing {
        let mut open = match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(mine) = open.by_container.remove(id) else {
            return Closing(Vec::new());
        };
        for k in &mine.ports {
            open.by_port.remove(k);
        }
        for t in &mine.tasks {
            t.abort();
        }
        Closing(mine.tasks)
    }
}

/// Relays being closed ([`Relays::begin_close`]).
#[must_use = "the relays are closed only once `done` returns"]
pub struct Closing(Vec<JoinHandle<()>>);

impl Closing {
    /// Returns once every listening socket of these relays is closed: a cancelled task's
    /// future (and the sockets it owns: for a TCP group every listener, each a `close`, which
    /// also takes it out of the private epoll) is dropped before its handle resolves.
    pub async fn done(self) {
        for t in self.0 {
            let _ = t.await;
        }
    }
}

/// Takes back what a refused [`Relays::open`] call opened: its ports leave the index and its
/// UDP relays' tasks are aborted (its TCP listeners close with the group it was building).
fn undo(open: &mut Table, opened: &[(Proto, u16)], tasks: Vec<JoinHandle<()>>) {
    for k in opened {
        open.by_port.remove(k);
    }
    for t in tasks {
        t.abort();
    }
}

/// A listening TCP socket on `[::1]:port`, outside tokio (its container's group task polls it
/// through a private epoll).
///
/// Three syscalls in the usual case (a 1,000-port range opens 1,000 of them on the publish
/// path): `socket(AF_INET6, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC)`, `bind([::1]:port)`,
/// `listen`. `setsockopt(SO_REUSEADDR)` only when that `bind` fails with `EADDRINUSE`, then
/// `bind` again, so that connections of an earlier relay of the port (in TIME_WAIT, or still
/// being torn down after its container's removal) do not keep it from listening, while a
/// listener or a bound socket of a host process still refuses — the outcome of a bind with
/// the option set from the start, without a syscall per port when nothing is in the way. For
/// that, every accepted connection gets `SO_REUSEADDR` itself ([`tcp_group`]; a connection
/// inherits the listener's, and a socket without it — TIME_WAIT included — refuses every
/// later bind of its port). No `setsockopt(IPV6_V6ONLY)`: `bind` to a specific IPv6 address
/// sets it itself (`inet6_bind`: `sk_ipv6only = 1` unless the address is `::` or v4-mapped).
fn listen_tcp(port: u16) -> std::io::Result<std::net::TcpListener> {
    let addr: SocketAddr = (Ipv6Addr::LOCALHOST, port).into();
    let s = Socket::new(
        Domain::IPV6,
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if let Err(e) = s.bind(&addr.into()) {
        if e.raw_os_error() != Some(libc::EADDRINUSE) {
            return Err(e);
        }
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
    }
    s.listen(1024)?;
    Ok(s.into())
}

/// Binds `[::1]:port` for UDP and spawns the relay's task, which owns the socket:
/// `socket(AF_INET6, SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC)`, `bind`, and tokio's
/// `epoll_ctl(EPOLL_CTL_ADD)`.
fn spawn_udp(r: &LoopbackRelay) -> std::io::Result<JoinHandle<()>> {
    let addr: SocketAddr = (Ipv6Addr::LOCALHOST, r.host_port).into();
    match r.proto {
        Proto::Udp => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
            s.bind(&addr.into())?;
            let u = UdpSocket::from_std(s.into())?;
            Ok(tokio::spawn(udp_relay(u, r.target)))
        }
        Proto::Tcp | Proto::Sctp => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "only UDP relays have a task of their own",
        )),
    }
}

/// The listeners of a TCP group with connections waiting (their indexes): one
/// `epoll_wait(ep, …, 0)`, which does not block.
fn ready_listeners(ep: &OwnedFd) -> rustix::io::Result<Vec<usize>> {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    epoll::wait(ep, rustix::buffer::spare_capacity(&mut events), Some(&zero))?;
    Ok(events.iter().map(|e| e.data.u64() as usize).collect())
}

/// Serves one container's TCP relays: `listeners` (each with where it relays to) are in the
/// private epoll `ep`, which tokio watches as one descriptor. On a wake-up, `epoll_wait(ep, …,
/// 0)` says which listeners have connections waiting; each is accepted (up to
/// [`ACCEPT_BATCH`] per listener and wake-up) and relayed in a task of the group's
/// `JoinSet`, so aborting this task closes every listener and every connection.
async fn tcp_group(ep: AsyncFd<OwnedFd>, listeners: Vec<(std::net::TcpListener, SocketAddr)>) {
    let mut conns: JoinSet<usize> = JoinSet::new();
    let mut in_flight = vec![0usize; listeners.len()];
    loop {
        tokio::select! {
            ready = ep.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!("[::1] relays: waiting on their epoll: {e}");
                        return;
                    }
                };
                let ready = match ready_listeners(ep.get_ref()) {
                    Ok(r) if r.is_empty() => {
                        guard.clear_ready();
                        continue;
                    }
                    Ok(r) => r,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!("[::1] relays: epoll_wait: {e}");
                        return;
                    }
                };
                drop(guard);
                let mut backoff = false;
                for i in ready {
                    let Some((l, target)) = listeners.get(i) else { continue };
                    for _ in 0..ACCEPT_BATCH {
                        match l.accept() {
                            Ok((client, peer)) => {
                                if in_flight[i] >= MAX_TCP {
                                    tracing::warn!("[::1] relay to {target}: {MAX_TCP} connections open, closing {peer}");
                                    continue;
                                }
                                // The connection's own `SO_REUSEADDR` (`setsockopt` on the
                                // accepted socket: it inherited the listener's, unset): its
                                // TIME_WAIT must not keep the next relay of this port from
                                // binding, see `listen_tcp`.
                                let reuse = socket2::SockRef::from(&client).set_reuse_address(true);
                                let client = match reuse
                                    .and_then(|()| client.set_nonblocking(true))
                                    .and_then(|()| TcpStream::from_std(client))
                                {
                                    Ok(c) => c,
                                    Err(e) => {
                                        tracing::debug!("[::1] relay {peer} -> {target}: {e}");
                                        continue;
                                    }
                                };
                                in_flight[i] += 1;
                                let target = *target;
                                conns.spawn(async move {
                                    tcp_conn(client, peer, target).await;
                                    i
                                });
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                // EMFILE and the like: do not spin on a level-triggered listener.
                                tracing::warn!("[::1] relay to {target}: accept: {e}");
                                backoff = true;
                                break;
                            }
                        }
                    }
                }
                if backoff {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Ok(i) = done {
                    if let Some(n) = in_flight.get_mut(i) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
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
