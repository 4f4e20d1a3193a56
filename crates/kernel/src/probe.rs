//! Reachability probes for `berth explain --verify`: a TCP connection attempt from berthd's own
//! namespace or from inside a container's, and the TCP sockets a namespace listens on.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{KernelError, Result};

/// What a connection attempt found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The handshake completed: something listens and the path is open.
    Connected,
    /// Refused (a TCP reset, or an ICMP port unreachable): the packet got through to a host
    /// that has nothing on that port — or a `reject` rule answered.
    Refused,
    /// No answer within the timeout: dropped on the way (a firewall rule) or nobody there.
    Timeout,
    /// No route, or an ICMP host/network unreachable.
    Unreachable(String),
    /// The attempt could not be made (entering the namespace, creating the socket).
    Error(String),
}

impl Outcome {
    /// Whether the packets got through to the target's namespace (connected or refused).
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Connected | Outcome::Refused)
    }

    /// Whether the attempt says anything about the path (an [`Outcome::Error`] does not).
    pub fn conclusive(&self) -> bool {
        !matches!(self, Outcome::Error(_))
    }

    /// A word for people (`connected`, `refused`, `timeout`, `unreachable: …`, `error: …`).
    pub fn text(&self) -> String {
        match self {
            Outcome::Connected => "connected".into(),
            Outcome::Refused => "refused".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Unreachable(e) => format!("unreachable: {e}"),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
}

/// One TCP connection attempt from the calling thread's namespace, bounded by `timeout`.
pub fn tcp_connect(dst: SocketAddr, timeout: Duration) -> Outcome {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = match Socket::new(domain, Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("creating a socket: {e}")),
    };
    match sock.connect_timeout(&SockAddr::from(dst), timeout) {
        Ok(()) => Outcome::Connected,
        Err(e) => classify(&e),
    }
}

fn classify(e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
        _ => match e.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM) => {
                Outcome::Unreachable(e.to_string())
            }
            _ => Outcome::Error(e.to_string()),
        },
    }
}

/// [`tcp_connect`] from inside the network namespace at `netns` (berthd's own when `None`), on
/// a short-lived thread ([`crate::netns::run_in_netns_async`]) so no runtime worker ever
/// changes namespace.
pub async fn tcp_probe(netns: Option<PathBuf>, dst: SocketAddr, timeout: Duration) -> Outcome {
    match netns {
        None => tokio::task::spawn_blocking(move || tcp_connect(dst, timeout))
            .await
            .unwrap_or_else(|e| Outcome::Error(e.to_string())),
        Some(p) => crate::netns::run_in_netns_async(&p, move || tcp_connect(dst, timeout))
            .await
            .unwrap_or_else(|e| Outcome::Error(e.to_string())),
    }
}

/// A probe whose source port is known before anything is sent (`berth trace` marks exactly that
/// flow): binds a socket (to `src` if given), reports its port on `port`, waits for `go`, then
/// connects (TCP) or sends one datagram and waits for an answer (UDP), bounded by `timeout`.
/// Runs in the calling thread's namespace; blocking.
pub fn staged(
    udp: bool,
    src: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
    port: tokio::sync::oneshot::Sender<std::result::Result<u16, String>>,
    go: std::sync::mpsc::Receiver<()>,
) -> Outcome {
    let domain = if dst.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let (ty, proto) = if udp {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let bound = Socket::new(domain, ty, Some(proto)).and_then(|s| {
        let any = if dst.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        s.bind(&SockAddr::from(SocketAddr::new(src.unwrap_or(any), 0)))?;
        let p = s
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or_default();
        Ok((s, p))
    });
    let sock = match bound {
        Ok((s, p)) => {
            let _ = port.send(Ok(p));
            s
        }
        Err(e) => {
            let msg = format!("binding the probe's socket: {e}");
            let _ = port.send(Err(msg.clone()));
            return Outcome::Error(msg);
        }
    };
    if go.recv().is_err() {
        return Outcome::Error("cancelled".into());
    }
    if !udp {
        return match sock.connect_timeout(&SockAddr::from(dst), timeout) {
            Ok(()) => Outcome::Connected,
            Err(e) => classify(&e),
        };
    }
    let sent = sock
        .connect(&SockAddr::from(dst))
        .and_then(|()| sock.set_read_timeout(Some(timeout)))
        .and_then(|()| sock.send(b"berth trace probe\n"));
    if let Err(e) = sent {
        return classify(&e);
    }
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    match sock.recv(&mut buf) {
        Ok(_) => Outcome::Connected,
        Err(e) => classify(&e),
    }
}

/// The TCP sockets listening in the network namespace of process `pid` (its
/// `/proc/PID/net/tcp` and `tcp6`, which show the namespace of that process).
pub fn listening_tcp(pid: i32) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let path = Path::new("/proc")
            .join(pid.to_string())
            .join("net")
            .join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_listeners(&text, v6)),
            // No IPv6 in that namespace's kernel: nothing listens there.
            Err(e) if e.kind() == io::ErrorKind::NotFound && v6 => {}
            Err(e) => {
                return Err(KernelError::io(
                    format!(
                        "reading {} (the container's listening sockets)",
                        path.display()
                    ),
                    e,
                ))
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `TCP_LISTEN` in `/proc/net/tcp`'s `st` column.
const TCP_LISTEN: &str = "0A";

/// The listening sockets of a `/proc/net/tcp` (`v6`: `tcp6`) text. Addresses are hex words in
/// the kernel's byte order (little-endian here), ports big-endian hex. Lines that do not parse
/// are skipped.
pub fn parse_listeners(text: &str, v6: bool) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = if v6 {
                if addr.len() != 32 {
                    return None;
                }
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                    chunk.copy_from_slice(&w.to_le_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                let w = u32::from_str_radix(addr, 16).ok()?;
                IpAddr::V4(Ipv4Addr::from(w.to_le_bytes()))
            };
            Some(SocketAddr::new(ip, port))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listeners_of_real_proc_text() {
        // From a real /proc/net/tcp: 0.0.0.0:80 and 127.0.0.1:5432 listening, one established.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0200010A:0050 0300010A:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n\
   garbage\n";
        assert_eq!(
            parse_listeners(v4, false),
            vec![
                "0.0.0.0:80".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5432".parse().unwrap()
            ]
        );
        // [::]:8080 and [::1]:53.
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n\
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_listeners(v6, true),
            vec![
                "[::]:8080".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(parse_listeners("", false).is_empty());
    }

    #[test]
    fn connect_outcomes_on_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = Duration::from_millis(300);
        assert_eq!(tcp_connect(addr, t), Outcome::Connected);
        drop(l);
        assert_eq!(tcp_connect(addr, t), Outcome::Refused);
        assert!(Outcome::Refused.reached());
        assert!(!Outcome::Timeout.reached());
        assert!(!Outcome::Error("x".into()).conclusive());
    }

    #[test]
    fn our_own_listeners_are_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let found = listening_tcp(std::process::id() as i32).unwrap();
        assert!(found.contains(&addr), "{addr} not in {found:?}");
    }
}
