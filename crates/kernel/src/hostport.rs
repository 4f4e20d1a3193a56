//! Whether a host port is free, and who holds it when it is not: a bind probe in this network
//! namespace and a walk over /proc. The daemon's port planner (`berth_plan::ports::allocate`)
//! asks through this; nothing here decides.

use std::net::{IpAddr, SocketAddr};

use berth_plan::ports::Proto;
use socket2::{Domain, Protocol, Socket, Type};

/// Which host process holds `proto` `ip`:`port` in this namespace (`None`: free): tries to bind it.
/// TCP with `SO_REUSEADDR` (so connections in TIME_WAIT do not count: only a listener or a
/// bound socket does), UDP without (any bound socket counts), IPv6 with `IPV6_V6ONLY` (the
/// families are published separately). Not listening, so no connection can arrive on the
/// probe. SCTP is not probed: creating an SCTP socket would load the sctp module.
pub fn probe(proto: Proto, ip: IpAddr, port: u16) -> Option<String> {
    let (ty, protocol) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
        Proto::Sctp => return None,
    };
    let addr = SocketAddr::new(ip, port);
    let sock = match Socket::new(Domain::for_address(addr), ty, Some(protocol)) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!("probing {addr}/{proto}: {e}");
            return None;
        }
    };
    if ip.is_ipv6() {
        let _ = sock.set_only_v6(true);
    }
    if proto == Proto::Tcp {
        let _ = sock.set_reuse_address(true);
    }
    match sock.bind(&addr.into()) {
        Ok(()) => None,
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Some(holder(proto, ip.is_ipv6(), port))
        }
        // EADDRNOTAVAIL and the like: not an address of this host; checked elsewhere.
        Err(e) => {
            tracing::debug!("probing {addr}/{proto}: {e}");
            None
        }
    }
}

/// Names the process holding a port: the socket's inode from `/proc/net/{tcp,udp}{,6}` (this
/// namespace's sockets), then the process with a `socket:[inode]` descriptor. Only run when a
/// bind failed, so its cost (a walk over /proc) never touches the success path.
pub fn holder(proto: Proto, v6: bool, port: u16) -> String {
    let file = match (proto, v6) {
        (Proto::Tcp, false) => "/proc/net/tcp",
        (Proto::Tcp, true) => "/proc/net/tcp6",
        (_, false) => "/proc/net/udp",
        (_, true) => "/proc/net/udp6",
    };
    let generic = "a process on the host".to_string();
    let Ok(table) = std::fs::read_to_string(file) else {
        return generic;
    };
    // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode.
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit_once(':')?.1;
        let listening_or_bound = proto != Proto::Tcp || f.get(3) == Some(&"0A");
        (u16::from_str_radix(local_port, 16).ok()? == port && listening_or_bound)
            .then(|| f.get(9).map(|s| s.to_string()))
            .flatten()
    });
    let Some(inode) = inode.filter(|i| i != "0") else {
        return generic;
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return generic;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                return format!("process {pid} ({comm})");
            }
        }
    }
    generic
}
