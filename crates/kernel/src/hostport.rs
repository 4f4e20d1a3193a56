//! Whether a host port is free, and who holds it when it is not: a bind probe in this network
//! namespace and a walk over /proc. The daemon's port planner (`berth_plan::ports::allocate`)
//! asks through this; nothing here decides. For a long run of ports, one `sock_diag` dump says
//! which of them any socket is bound to ([`bound_ports`]): only those can fail a bind probe.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use berth_plan::ports::Proto;
use rtnetlink::sys::{Socket as NlSocket, SocketAddr as NlAddr};
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

/// `NETLINK_SOCK_DIAG` (linux/netlink.h).
const NETLINK_SOCK_DIAG: isize = 4;
/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCPDIAG_GETSOCK` (linux/inet_diag.h): inet_diag's first request, still served
/// (`inet_diag_rcv_msg_compat`). Unlike `SOCK_DIAG_BY_FAMILY`, whose family picks the handler
/// and filters the walk, it dumps TCP sockets of BOTH families in one walk of the kernel's
/// TCP hash tables (the kernel sets the family to `AF_UNSPEC`): half the walks of two dumps.
const TCPDIAG_GETSOCK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `INET_DIAG_REQ_BYTECODE` (linux/inet_diag.h): the filter program attribute.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_BC_S_GE`, `INET_DIAG_BC_S_LE`: source (local) port ≥ / ≤ the next op's `no`.
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
/// `TCP_BOUND_INACTIVE` (linux/tcp_states.h, Linux 6.6): a TCP socket bound to a port that
/// neither listens nor is connected. Older kernels ignore the bit in the state mask and leave
/// such sockets out of a dump.
const TCP_BOUND_INACTIVE: u32 = 13;
/// Every TCP state bit (1..=12, `TCP_NEW_SYN_RECV` included) plus `TCP_BOUND_INACTIVE`.
const ALL_STATES: u32 = 0x1ffe | (1 << TCP_BOUND_INACTIVE);
/// Size of `struct inet_diag_req_v2`, of `struct inet_diag_req` (the compat request) and of
/// `struct inet_diag_msg`.
const REQ_LEN: usize = 56;
const REQ_V1_LEN: usize = 60;
const MSG_LEN: usize = 72;

/// The local ports in `first..=last` that some `proto` socket of this network namespace (either
/// family, any state) is bound to: the only ports whose bind probe can fail. One
/// `SOCK_DIAG_BY_FAMILY` dump per family with a port-range filter run by the kernel, instead of
/// a `socket`+`bind`+`close` per port (a 1,000-port range: 2 dumps instead of 3,000 syscalls).
///
/// `None` when the dump cannot answer for every socket: SCTP (not probed at all), a kernel
/// without `TCP_BOUND_INACTIVE` in its dumps (before 6.6: a TCP socket bound without `listen`
/// or `connect` is invisible to it, yet makes a bind fail), or any netlink error. The caller
/// then probes every port.
pub fn bound_ports(proto: Proto, first: u16, last: u16) -> Option<BTreeSet<u16>> {
    let ipproto = match proto {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
        Proto::Sctp => return None,
    };
    if proto == Proto::Tcp && !dumps_bound_inactive() {
        return None;
    }
    let mut out = BTreeSet::new();
    // TCP: one dump for both families (the walk of the kernel's TCP hash tables is most of a
    // dump's cost, and those tables are the whole host's, shared by every namespace). A
    // kernel that refuses it gets the two dumps below.
    if proto == Proto::Tcp {
        match dump(&tcp_dump_request(first, last), TCPDIAG_GETSOCK) {
            Ok(ports) => {
                out.extend(ports.into_iter().filter(|p| (first..=last).contains(p)));
                return Some(out);
            }
            Err(e) => tracing::debug!("sock_diag TCP dump of both families: {e}"),
        }
    }
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        match dump_ports(family, ipproto, first, last) {
            Ok(ports) => out.extend(ports.into_iter().filter(|p| (first..=last).contains(p))),
            Err(e) => {
                tracing::debug!("sock_diag dump of bound ports: {e}");
                return None;
            }
        }
    }
    Some(out)
}

/// Whether this kernel's TCP dumps include bound-only sockets (`TCP_BOUND_INACTIVE`, Linux
/// 6.6), found out once by binding a socket (127.0.0.1, a kernel-chosen port, not listening)
/// and looking for it in a dump.
fn dumps_bound_inactive() -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    *KNOWN.get_or_init(|| {
        let try_it = || -> std::io::Result<bool> {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0).into())?;
            let port = s
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .unwrap_or_default();
            let seen = dump_ports(libc::AF_INET as u8, libc::IPPROTO_TCP as u8, port, port)?;
            Ok(port != 0 && seen.contains(&port))
        };
        let supported = try_it().unwrap_or(false);
        tracing::debug!(supported, "sock_diag lists bound-only TCP sockets");
        supported
    })
}

/// The local ports of the `family`/`ipproto` sockets of this namespace whose local port is in
/// `first..=last` (the kernel filters), every state.
fn dump_ports(family: u8, ipproto: u8, first: u16, last: u16) -> std::io::Result<Vec<u16>> {
    dump(
        &dump_request(family, ipproto, first, last),
        SOCK_DIAG_BY_FAMILY,
    )
}

/// The local ports of the sockets a dump `request` lists, whose answers are messages of type
/// `answer` (the request's own type).
fn dump(request: &[u8], answer: u16) -> std::io::Result<Vec<u16>> {
    let mut sock = NlSocket::new(NETLINK_SOCK_DIAG)?;
    sock.bind_auto()?;
    sock.connect(&NlAddr::new(0, 0))?;
    sock.send(request, 0)?;
    let mut ports = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        sock.recv(&mut buf, 0)?;
        for (ty, payload) in crate::conntrack::messages(&buf) {
            match ty {
                NLMSG_DONE => return Ok(ports),
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if code != 0 {
                        return Err(std::io::Error::from_raw_os_error(-code));
                    }
                }
                t if t == answer => {
                    // `struct inet_diag_msg`: family, state, timer, retrans, then `id`, whose
                    // first field is the local port (big-endian).
                    if let Some(b) = payload.get(4..6).filter(|_| payload.len() >= MSG_LEN) {
                        ports.push(u16::from_be_bytes([b[0], b[1]]));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The dump request: `nlmsghdr`, `struct inet_diag_req_v2` (family, protocol, every state),
/// and a filter program "local port ≥ first and ≤ last" (`ss`'s encoding of `sport >= A and
/// sport <= B`: each comparison is two 4-byte ops, the port in the second one's `no`; a failed
/// comparison jumps just past the end, which rejects).
pub(crate) fn dump_request(family: u8, ipproto: u8, first: u16, last: u16) -> Vec<u8> {
    let bc = port_filter(first, last);
    let mut m = dump_header(SOCK_DIAG_BY_FAMILY, REQ_LEN + 4 + bc.len());
    // inet_diag_req_v2: sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states, then a
    // zeroed `inet_diag_sockid` (48 bytes).
    m.extend_from_slice(&[family, ipproto, 0, 0]);
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]);
    push_bytecode(&mut m, &bc);
    m
}

/// A dump request's `nlmsghdr` of type `ty` (sequence 1), for a payload of `payload` bytes.
fn dump_header(ty: u16, payload: usize) -> Vec<u8> {
    let len = 16 + payload;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

/// Appends the filter program `bc` as the request's `INET_DIAG_REQ_BYTECODE` attribute.
fn push_bytecode(m: &mut Vec<u8>, bc: &[u8]) {
    m.extend_from_slice(&((4 + bc.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    m.extend_from_slice(bc);
}

/// The filter program "local port ≥ first and ≤ last" (see [`dump_request`]).
fn port_filter(first: u16, last: u16) -> Vec<u8> {
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = vec![code, yes];
        b.extend_from_slice(&no.to_ne_bytes());
        b
    };
    let mut bc = Vec::new();
    // 16 bytes of program: from offset 0, rejecting is offset 20; from offset 8, also 20.
    bc.extend(op(INET_DIAG_BC_S_GE, 8, 20));
    bc.extend(op(0, 0, first));
    bc.extend(op(INET_DIAG_BC_S_LE, 8, 12));
    bc.extend(op(0, 0, last));
    bc
}

/// The one-walk TCP dump request: `nlmsghdr` of type `TCPDIAG_GETSOCK`, `struct
/// inet_diag_req` (family, src_len, dst_len, ext, a zeroed `inet_diag_sockid`, every state,
/// dbs), the same filter program as [`dump_request`]. The family byte is not read: the kernel
/// dumps both (`AF_UNSPEC`); 0 says so.
pub(crate) fn tcp_dump_request(first: u16, last: u16) -> Vec<u8> {
    let bc = port_filter(first, last);
    let mut m = dump_header(TCPDIAG_GETSOCK, REQ_V1_LEN + 4 + bc.len());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&[0u8; 48]);
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    push_bytecode(&mut m, &bc);
    m
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
    let generic = "a process".to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP asks once for both families: `TCPDIAG_GETSOCK` with `struct inet_diag_req` (family
    /// 0, every state including `TCP_BOUND_INACTIVE` at its offset 52) and the same port
    /// filter as the per-family request, which keeps its own layout.
    #[test]
    fn tcp_is_one_dump_request_for_both_families() {
        let m = tcp_dump_request(30000, 30999);
        assert_eq!(m.len(), 16 + 60 + 4 + 16);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(m[16], 0, "AF_UNSPEC: both families");
        let states = u32::from_ne_bytes([m[68], m[69], m[70], m[71]]);
        assert_eq!(states, ALL_STATES);
        assert_ne!(states & (1 << TCP_BOUND_INACTIVE), 0);
        let v2 = dump_request(libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 30000, 30999);
        assert_eq!(u16::from_ne_bytes([v2[4], v2[5]]), SOCK_DIAG_BY_FAMILY);
        // The filter attribute (header and program) ends both requests alike.
        assert_eq!(m[m.len() - 20..], v2[v2.len() - 20..]);
        assert_eq!(m[m.len() - 20..m.len() - 16], [20, 0, 1, 0]);
    }
}
