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
//! No process and no thread per port: one tokio task per relay, plus one per TCP connection or
//! UDP session. A relay opens when its container's ports are published (start, and berthd's
//! start-up convergence) and closes when they are unpublished (exit, removal); closing waits
//! until the listening socket is closed, so a connection right after is refused.
//!
//! The container sees berthd's address on its network (the gateway), not `::1`: the client is
//! the host itself either way.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plan::ports::{LoopbackRelay, Proto};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
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

/// One open relay.
struct Open {
    /// The container whose port it is (id, name).
    container_id: String,
    container: String,
    /// What it relays.
    relay: LoopbackRelay,
    /// The task that owns the listening socket (and, through its `JoinSet`, every connection).
    task: JoinHandle<()>,
}

/// Every relay berthd has open, by (protocol, host port).
pub struct Relays {
    open: Mutex<HashMap<(Proto, u16), Open>>,
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
            open: Mutex::new(HashMap::new()),
            budget,
        }
    }

    /// Who holds `[::1]:port` for `proto` among berthd's own relays, for a refusal message.
    pub fn holder(&self, proto: Proto, port: u16) -> Option<String> {
        let open = self.open.lock().ok()?;
        open.get(&(proto, port)).map(|o| {
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
    pub fn open(
        &self,
        id: &str,
        name: &str,
        relays: &[LoopbackRelay],
    ) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let mut opened: Vec<(Proto, u16)> = Vec::new();
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
            let failure = if let Some(o) = open.get(&k) {
                Some(format!(
                    "port is already allocated (berthd relays it for container {:?}, {})",
                    o.container, o.relay.key
                ))
            } else if open.len() >= self.budget {
                if !r.required {
                    over_budget.push(r);
                    continue;
                }
                Some(self.budget_reason())
            } else {
                match spawn(r) {
                    Ok(task) => {
                        open.insert(
                            k,
                            Open {
                                container_id: id.to_string(),
                                container: name.to_string(),
                                relay: r.clone(),
                                task,
                            },
                        );
                        opened.push(k);
                        tracing::debug!(container = %name, relay = %format!("[::1]:{}/{} -> {}", r.host_port, r.proto, r.target), "loopback relay open");
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
                for k in opened {
                    if let Some(o) = open.remove(&k) {
                        o.task.abort();
                    }
                }
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
        let tasks: Vec<JoinHandle<()>> = {
            let mut open = match self.open.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let keys: Vec<(Proto, u16)> = open
                .iter()
                .filter(|(_, o)| o.container_id == id)
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| open.remove(&k))
                .map(|o| {
                    o.task.abort();
                    o.task
                })
                .collect()
        };
        // A cancelled task's future (and the socket it owns) is dropped before its handle
        // resolves.
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Binds `[::1]:port` and spawns the relay's task, which owns the socket.
///
/// Five syscalls per TCP relay, four per UDP one (a 1,000-port range opens 1,000 of them on
/// the publish path): `socket(AF_INET6, SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC)` (non-blocking
/// from the start, not two `fcntl`s later), `setsockopt(SO_REUSEADDR)`, `bind([::1]:port)`,
/// `listen`, and tokio's `epoll_ctl(EPOLL_CTL_ADD)`. No `setsockopt(IPV6_V6ONLY)`: `bind` to a
/// specific IPv6 address sets it itself (`inet6_bind`: `sk_ipv6only = 1` unless the address is
/// `::` or v4-mapped).
fn spawn(r: &LoopbackRelay) -> std::io::Result<JoinHandle<()>> {
    let addr: SocketAddr = (Ipv6Addr::LOCALHOST, r.host_port).into();
    match r.proto {
        Proto::Tcp => {
            let s = Socket::new(
                Domain::IPV6,
                Type::STREAM.nonblocking(),
                Some(Protocol::TCP),
            )?;
            // Connections of an earlier relay in TIME_WAIT must not block it; a listener does.
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            let l = TcpListener::from_std(s.into())?;
            Ok(tokio::spawn(tcp_relay(l, r.target)))
        }
        Proto::Udp => {
            let s = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
            s.bind(&addr.into())?;
            let u = UdpSocket::from_std(s.into())?;
            Ok(tokio::spawn(udp_relay(u, r.target)))
        }
        Proto::Sctp => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "SCTP is not relayed",
        )),
    }
}

/// Accepts connections on `l` and relays each one to `target`.
async fn tcp_relay(l: TcpListener, target: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((client, peer)) => {
                    if conns.len() >= MAX_TCP {
                        tracing::warn!("[::1] relay to {target}: {MAX_TCP} connections open, closing {peer}");
                        continue;
                    }
                    conns.spawn(tcp_conn(client, peer, target));
                }
                Err(e) => {
                    // EMFILE and the like: do not spin.
                    tracing::warn!("[::1] relay to {target}: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
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
