//! Connection-tracking entries over ctnetlink (`NETLINK_NETFILTER`, subsystem
//! `NFNL_SUBSYS_CTNETLINK`), in-process: what `conntrack -D -p udp --orig-port-dst N` does,
//! without the `conntrack` tool.
//!
//! Why: a UDP "connection" is a conntrack entry that lives as long as packets keep flowing. A
//! client that was talking to host port N *before* the port was published keeps hitting its old
//! entry (not DNATed: the packets go to the host's own socket, or nowhere), and one that talked
//! to a published port keeps being DNATed to a container that is gone. Deleting the entries
//! whose original destination is the port, when a mapping is added or removed, makes the next
//! packet take the new path.
//!
//! The kernel has no "delete by filter" for entries, so: one dump (`IPCTNL_MSG_CT_GET` with
//! `NLM_F_DUMP`), then one `IPCTNL_MSG_CT_DELETE` per matching entry, each carrying the entry's
//! own original tuple (and zone) as the kernel reported it. Cost: O(entries in the table) for
//! the dump; measured in docs/PERFORMANCE.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{KernelError, Result};

/// `NFNL_SUBSYS_CTNETLINK` (linux/netfilter/nfnetlink.h).
const SUBSYS_CTNETLINK: u16 = 1;
/// `IPCTNL_MSG_CT_NEW`: the type of every entry in a dump.
const CT_NEW: u16 = 0;
/// `IPCTNL_MSG_CT_GET`.
const CT_GET: u16 = 1;
/// `IPCTNL_MSG_CT_DELETE`.
const CT_DELETE: u16 = 2;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// `CTA_TUPLE_ORIG` (nested).
const CTA_TUPLE_ORIG: u16 = 1;
/// `CTA_TUPLE_REPLY` (nested).
const CTA_TUPLE_REPLY: u16 = 2;
/// `CTA_ZONE` (be16).
const CTA_ZONE: u16 = 18;
/// In a tuple: `CTA_TUPLE_IP` (nested), `CTA_TUPLE_PROTO` (nested).
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
/// In `CTA_TUPLE_IP`.
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
/// In `CTA_TUPLE_PROTO`.
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// Attribute type bits that are flags (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// The original-direction tuple of one conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// IP protocol number (17 for UDP).
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (before any DNAT).
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub sport: u16,
    /// Destination port (0 for protocols without ports).
    pub dport: u16,
}

/// One dumped entry: its tuple, and the raw attributes a delete request must carry.
struct Entry {
    family: u8,
    tuple: Tuple,
    /// The reply tuple (what NAT made of the connection), when reported.
    reply: Option<Tuple>,
    /// `CTA_TUPLE_ORIG` (and `CTA_ZONE` when present), bytes exactly as the kernel sent them.
    key_attrs: Vec<u8>,
}

/// Deletes every conntrack entry (in the calling thread's network namespace) whose original
/// tuple `matches`; returns how many were deleted. Entries that vanish between the dump and the
/// delete are not errors.
pub fn delete_matching(matches: impl Fn(&Tuple) -> bool) -> Result<usize> {
    let op = "flushing conntrack entries";
    let (sock, doomed) = dump(op, |e| matches(&e.tuple))?;
    let mut seq = 1u32;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut deleted = 0;
    for entry in doomed {
        seq = seq.wrapping_add(1);
        send(
            &sock,
            msg_type(CT_DELETE),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            entry.family,
            &entry.key_attrs,
        )
        .map_err(|e| KernelError::netlink(op, e))?;
        buf.clear();
        sock.recv(&mut buf, 0)
            .map_err(|e| KernelError::netlink(op, e))?;
        for (ty, payload) in messages(&buf) {
            if ty == NLMSG_ERROR {
                match error_code(payload) {
                    0 => deleted += 1,
                    // Timed out or deleted by someone else in the meantime.
                    c if -c == libc::ENOENT => {}
                    c => {
                        return Err(KernelError::netlink(
                            format!("{op}: deleting {:?}", entry.tuple),
                            std::io::Error::from_raw_os_error(-c),
                        ))
                    }
                }
            }
        }
    }
    Ok(deleted)
}

/// The conntrack entries (in the calling thread's namespace) whose original tuple `matches`:
/// (original tuple, reply tuple). The reply tuple shows NAT: a DNATed connection's reply comes
/// from the translated destination.
pub fn entries_matching(matches: impl Fn(&Tuple) -> bool) -> Result<Vec<(Tuple, Tuple)>> {
    let (_, found) = dump("reading conntrack entries", |e| matches(&e.tuple))?;
    Ok(found
        .into_iter()
        .filter_map(|e| Some((e.tuple, e.reply?)))
        .collect())
}

/// One dump of the table: the socket (for follow-up requests) and the entries `keep` keeps.
fn dump(op: &str, keep: impl Fn(&Entry) -> bool) -> Result<(Socket, Vec<Entry>)> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::netlink(op, e))?;
    sock.bind_auto().map_err(|e| KernelError::netlink(op, e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| KernelError::netlink(op, e))?;
    // AF_UNSPEC: every layer-3 family in one dump.
    send(
        &sock,
        msg_type(CT_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        0,
        &[],
    )
    .map_err(|e| KernelError::netlink(op, e))?;
    let mut found = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    'dump: loop {
        buf.clear();
        sock.recv(&mut buf, 0)
            .map_err(|e| KernelError::netlink(op, e))?;
        for (ty, payload) in messages(&buf) {
            match ty {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(KernelError::netlink(
                            op,
                            std::io::Error::from_raw_os_error(-code),
                        ));
                    }
                }
                t if t == msg_type(CT_NEW) => {
                    if let Some(entry) = parse_entry(payload) {
                        if keep(&entry) {
                            found.push(entry);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok((sock, found))
}

/// `(NFNL_SUBSYS_CTNETLINK << 8) | msg`.
fn msg_type(msg: u16) -> u16 {
    (SUBSYS_CTNETLINK << 8) | msg
}

/// Sends one nfnetlink message: header, `nfgenmsg` (family, version 0, res_id 0), attributes.
fn send(
    sock: &Socket,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[u8],
) -> std::io::Result<()> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(attrs);
    sock.send(&m, 0).map(drop)
}

/// The netlink messages of one datagram: (type, payload after the 16-byte header).
pub(crate) fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        out.push((ty, &buf[off + 16..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// The (negative) errno of an `NLMSG_ERROR` payload; 0 is an ACK.
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Netlink attributes of `buf`: (type without flag bits, payload, the whole attribute).
pub(crate) fn attrs(buf: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= buf.len() {
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]) & NLA_TYPE_MASK;
        if len < 4 || off + len > buf.len() {
            break;
        }
        out.push((ty, &buf[off + 4..off + len], &buf[off..off + len]));
        off += (len + 3) & !3;
    }
    out
}

/// One dumped entry (payload after the netlink header: `nfgenmsg` then attributes).
fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let family = *payload.first()?;
    let mut tuple = None;
    let mut reply = None;
    let mut key_attrs = Vec::new();
    for (ty, value, whole) in attrs(payload.get(4..)?) {
        match ty {
            CTA_TUPLE_ORIG => {
                tuple = parse_tuple(value);
                key_attrs.extend_from_slice(whole);
                // Keep the 4-byte alignment netlink requires between attributes.
                key_attrs.resize((key_attrs.len() + 3) & !3, 0);
            }
            CTA_TUPLE_REPLY => reply = parse_tuple(value),
            CTA_ZONE => {
                key_attrs.extend_from_slice(whole);
                key_attrs.resize((key_attrs.len() + 3) & !3, 0);
            }
            _ => {}
        }
    }
    Some(Entry {
        family,
        tuple: tuple?,
        reply,
        key_attrs,
    })
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let mut t = Tuple {
        proto: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
    };
    for (ty, value, _) in attrs(buf) {
        match ty {
            CTA_TUPLE_IP => {
                for (ity, v, _) in attrs(value) {
                    match (ity, v.len()) {
                        (CTA_IP_V4_SRC, 4) => {
                            t.src = IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
                        }
                        (CTA_IP_V4_DST, 4) => {
                            t.dst = IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
                        }
                        (CTA_IP_V6_SRC, 16) => t.src = IpAddr::V6(v6(v)?),
                        (CTA_IP_V6_DST, 16) => t.dst = IpAddr::V6(v6(v)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (pty, v, _) in attrs(value) {
                    match (pty, v.len()) {
                        (CTA_PROTO_NUM, 1) => t.proto = v[0],
                        (CTA_PROTO_SRC_PORT, 2) => t.sport = u16::from_be_bytes([v[0], v[1]]),
                        (CTA_PROTO_DST_PORT, 2) => t.dport = u16::from_be_bytes([v[0], v[1]]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(t)
}

fn v6(v: &[u8]) -> Option<Ipv6Addr> {
    let b: [u8; 16] = v.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    #[test]
    fn parses_an_entry_and_keeps_its_key() {
        let ip = [
            nla(CTA_IP_V4_SRC, &[198, 18, 0, 2]),
            nla(CTA_IP_V4_DST, &[198, 18, 0, 1]),
        ]
        .concat();
        let proto = [
            nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
            nla(CTA_PROTO_SRC_PORT, &40000u16.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &8080u16.to_be_bytes()),
        ]
        .concat();
        let tuple = [
            nla(CTA_TUPLE_IP | 0x8000, &ip),
            nla(CTA_TUPLE_PROTO | 0x8000, &proto),
        ]
        .concat();
        let orig = nla(CTA_TUPLE_ORIG | 0x8000, &tuple);
        let mut payload = vec![2u8, 0, 0, 0];
        payload.extend_from_slice(&orig);
        payload.extend_from_slice(&nla(7, &[0, 0, 0, 1])); // some other attribute
        let e = parse_entry(&payload).expect("entry");
        assert_eq!(e.family, 2);
        assert_eq!(
            e.tuple,
            Tuple {
                proto: IPPROTO_UDP,
                src: "198.18.0.2".parse().expect("ip"),
                dst: "198.18.0.1".parse().expect("ip"),
                sport: 40000,
                dport: 8080
            }
        );
        assert_eq!(e.key_attrs, orig);
        // Garbage does not panic.
        assert!(parse_entry(&[]).is_none());
        assert!(parse_entry(&[2, 0, 0, 0, 255, 255, 1]).is_none());
        assert!(messages(&[1, 2, 3]).is_empty());
    }
}
