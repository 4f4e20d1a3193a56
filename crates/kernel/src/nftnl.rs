//! Set and map element changes as nf_tables netlink messages, sent by berthd itself: one
//! `NFNL_MSG_BATCH_BEGIN … NFNL_MSG_BATCH_END` batch per change, which the kernel commits
//! atomically (all or nothing), as `nft -f` does, without spawning a process.
//!
//! Why hand-built messages and not `nftnl` (libnftnl bindings) or libnftables: element changes
//! are three message shapes (`NFT_MSG_NEWSETELEM`, `NFT_MSG_DELSETELEM` and the batch
//! delimiters) with byte strings in them, berth's set types are a handful of fixed-size
//! scalars, and the messages are pinned byte for byte by the tests below (taken from
//! `nft --debug=netlink`). A C library would add a build dependency and an `unsafe` FFI layer
//! for that. The static rules (expressions, chains) stay with `nft -f`: compiling rule
//! expressions is nft's job and happens once at start.
//!
//! Interval sets (prefixes, ranges) are not encoded here: nft turns them into interval-end
//! elements with its own merging rules. [`encode`] answers `None` for them, and the caller runs
//! `nft` instead (network create and remove only: per-container sets hold no intervals).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use berth_plan::firewall::SetChange;
use rtnetlink::sys::{Socket, SocketAddr};

use crate::error::{KernelError, Result};

/// `NETLINK_NETFILTER` (linux/netlink.h).
const NETLINK_NETFILTER: isize = 12;
/// `NFNL_SUBSYS_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`, `NFNL_MSG_BATCH_END` (linux/netfilter/nfnetlink.h).
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
/// `NFT_MSG_NEWSETELEM`, `NFT_MSG_DELSETELEM` (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// `enum nft_set_elem_list_attributes`.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// `enum nft_list_attributes`.
const NFTA_LIST_ELEM: u16 = 1;
/// `enum nft_set_elem_attributes`.
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// `enum nft_data_attributes`.
const NFTA_DATA_VALUE: u16 = 1;
/// `NFTNL_UDATA_SET_ELEM_COMMENT` (libnftnl/udata.h): the TLV nft stores a comment in.
const UDATA_SET_ELEM_COMMENT: u8 = 0;
/// `NLA_F_NESTED` (linux/netlink.h), set on nested attributes as libmnl does.
const NLA_F_NESTED: u16 = 0x8000;
/// Netlink header flags (linux/netlink.h).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
/// `NFPROTO_INET`, `NFPROTO_BRIDGE` (linux/netfilter.h).
const NFPROTO_INET: u8 = 1;
const NFPROTO_BRIDGE: u8 = 7;
/// `IFNAMSIZ`: an `ifname` key is the name NUL-padded to 16 bytes.
const IFNAMSIZ: usize = 16;

/// One scalar of a key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ifname,
    Ipv4,
    Ipv6,
    Ether,
    Proto,
    Service,
    /// A raw 128-bit payload field (`@th,64,128`), written as `0x…`.
    Raw128,
}

/// The scalars of a declared type (`ifname . ipv4_addr`), `None` for one berth does not encode.
fn kinds(ty: &str) -> Option<Vec<Kind>> {
    ty.split(" . ")
        .map(|t| match t.trim() {
            "ifname" | "iifname" | "oifname" => Some(Kind::Ifname),
            "ipv4_addr" => Some(Kind::Ipv4),
            "ipv6_addr" => Some(Kind::Ipv6),
            "ether_addr" => Some(Kind::Ether),
            "inet_proto" => Some(Kind::Proto),
            "inet_service" => Some(Kind::Service),
            "@th,64,128" => Some(Kind::Raw128),
            _ => None,
        })
        .collect()
}

/// One scalar's bytes, in network order, as nft lays it out.
fn scalar(kind: Kind, text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    Some(match kind {
        Kind::Ifname => {
            let name = text.strip_prefix('"')?.strip_suffix('"')?;
            if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
                return None;
            }
            let mut b = name.as_bytes().to_vec();
            b.resize(IFNAMSIZ, 0);
            b
        }
        Kind::Ipv4 => text.parse::<Ipv4Addr>().ok()?.octets().to_vec(),
        Kind::Ipv6 => text.parse::<Ipv6Addr>().ok()?.octets().to_vec(),
        Kind::Ether => {
            let mut b = Vec::with_capacity(6);
            for p in text.split(':') {
                if p.len() != 2 {
                    return None;
                }
                b.push(u8::from_str_radix(p, 16).ok()?);
            }
            if b.len() != 6 {
                return None;
            }
            b
        }
        Kind::Proto => vec![match text {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            n => n.parse().ok()?,
        }],
        Kind::Service => text.parse::<u16>().ok()?.to_be_bytes().to_vec(),
        Kind::Raw128 => {
            let hex = text.strip_prefix("0x")?;
            u128::from_str_radix(hex, 16).ok()?.to_be_bytes().to_vec()
        }
    })
}

/// A key or value's bytes: one scalar as is, a concatenation with every scalar padded to a
/// multiple of 4 bytes (the kernel's 32-bit register granularity, `NFT_REG32_SIZE`).
#[cfg(test)]
fn value(ty: &str, text: &str) -> Option<Vec<u8>> {
    value_of(&kinds(ty)?, text)
}

/// [`value`] for a type already split into its scalars: [`encode`] does that once per set,
/// not once per element (a 1,000-port range is 1,000 keys and 1,000 values of one type).
fn value_of(kinds: &[Kind], text: &str) -> Option<Vec<u8>> {
    let concat = kinds.len() > 1;
    let mut out = Vec::with_capacity(kinds.len() * 16);
    let mut parts = text.split(" . ");
    for k in kinds {
        let mut b = scalar(*k, parts.next()?)?;
        if concat {
            b.resize(b.len().div_ceil(4) * 4, 0);
        }
        out.extend(b);
    }
    // More parts than the type has scalars: not this type.
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// One element to add or delete, encoded.
struct Elem {
    key: Vec<u8>,
    data: Option<Vec<u8>>,
    comment: Option<Vec<u8>>,
}

/// A set's change, encoded.
struct Encoded {
    family: u8,
    table: &'static str,
    set: &'static str,
    delete: Vec<Elem>,
    add: Vec<Elem>,
}

/// The comment's userdata TLV: type, length (with the NUL), the text, a NUL.
fn comment_tlv(comment: &str) -> Option<Vec<u8>> {
    if comment.is_empty() {
        return None;
    }
    let len = u8::try_from(comment.len() + 1).ok()?;
    let mut b = vec![UDATA_SET_ELEM_COMMENT, len];
    b.extend_from_slice(comment.as_bytes());
    b.push(0);
    Some(b)
}

/// `change` encoded, or `None` when it holds something berth does not encode (an interval
/// set, an unknown type, a value that does not parse): the caller runs `nft` for it.
fn encode(change: &SetChange) -> Option<Encoded> {
    if change.interval {
        return None;
    }
    let family = match change.family {
        "inet" => NFPROTO_INET,
        "bridge" => NFPROTO_BRIDGE,
        _ => return None,
    };
    let key_kinds = kinds(change.key_type)?;
    let data_kinds = match change.data_type {
        Some(dt) => Some(kinds(dt)?),
        None => None,
    };
    let elem = |text: &str, comment: Option<&str>| -> Option<Elem> {
        let (key, data) = match (&data_kinds, text.split_once(" : ")) {
            (Some(dk), Some((k, v))) => (value_of(&key_kinds, k)?, Some(value_of(dk, v)?)),
            (Some(_), None) if comment.is_none() => (value_of(&key_kinds, text)?, None),
            (None, _) => (value_of(&key_kinds, text)?, None),
            (Some(_), None) => return None,
        };
        let comment = match comment {
            Some(c) if !c.is_empty() => Some(comment_tlv(c)?),
            _ => None,
        };
        Some(Elem { key, data, comment })
    };
    Some(Encoded {
        family,
        table: change.table,
        set: change.set,
        delete: change
            .delete
            .iter()
            .map(|k| elem(k, None))
            .collect::<Option<_>>()?,
        add: change
            .add
            .iter()
            .map(|(k, c)| elem(k, Some(c)))
            .collect::<Option<_>>()?,
    })
}

/// Appends one attribute (header, payload, padding to 4 bytes).
fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().div_ceil(4) * 4, 0);
}

/// Appends a nested attribute whose payload `fill` writes.
fn nested(buf: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// A NUL-terminated string attribute.
fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    attr(buf, ty, &b);
}

/// Appends one netlink message: header, `nfgenmsg` (family, version 0, `res_id`), attributes.
fn message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // length, set below
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    fill(buf);
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One `NEWSETELEM`/`DELSETELEM` message for `elems` of a set.
fn setelem_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, e: &Encoded, elems: &[Elem]) {
    message(
        buf,
        (NFNL_SUBSYS_NFTABLES << 8) | ty,
        flags,
        seq,
        e.family,
        0,
        |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, e.table);
            attr_str(b, NFTA_SET_ELEM_LIST_SET, e.set);
            nested(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                for el in elems {
                    nested(b, NFTA_LIST_ELEM, |b| {
                        nested(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, &el.key));
                        if let Some(d) = &el.data {
                            nested(b, NFTA_SET_ELEM_DATA, |b| attr(b, NFTA_DATA_VALUE, d));
                        }
                        if let Some(c) = &el.comment {
                            attr(b, NFTA_SET_ELEM_USERDATA, c);
                        }
                    });
                }
            });
        },
    );
}

/// Elements per message: a netlink message holds at most 64 KiB of attributes (its nested
/// attribute lengths are 16-bit), and an element here is at most ~200 bytes.
const ELEMS_PER_MSG: usize = 200;

/// The whole batch for `changes` (deletions of every set first, then additions, as the `nft`
/// script does, so a key that moves is freed before it is taken), with sequence numbers from
/// `seq`. Returns the bytes and the number of messages that ask for an acknowledgement.
/// `None` when some change cannot be encoded (see [`encode`]).
pub fn batch(changes: &[SetChange], seq: u32) -> Option<(Vec<u8>, usize)> {
    let encoded: Vec<Encoded> = changes.iter().map(encode).collect::<Option<_>>()?;
    let mut buf = Vec::new();
    let mut seq = seq;
    let mut acked = 0;
    let subsys = NFNL_SUBSYS_NFTABLES;
    message(
        &mut buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        |_| {},
    );
    for e in &encoded {
        for chunk in e.delete.chunks(ELEMS_PER_MSG) {
            seq = seq.wrapping_add(1);
            acked += 1;
            setelem_msg(
                &mut buf,
                NFT_MSG_DELSETELEM,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                e,
                chunk,
            );
        }
    }
    for e in &encoded {
        for chunk in e.add.chunks(ELEMS_PER_MSG) {
            seq = seq.wrapping_add(1);
            acked += 1;
            let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
            setelem_msg(&mut buf, NFT_MSG_NEWSETELEM, flags, seq, e, chunk);
        }
    }
    seq = seq.wrapping_add(1);
    message(
        &mut buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        subsys,
        |_| {},
    );
    Some((buf, acked))
}

/// An nf_tables netlink socket, bound to the namespace of the thread that opened it.
pub struct NftSocket {
    sock: Socket,
    /// The last sequence number used.
    seq: u32,
    /// The send buffer size set (0: the default).
    sndbuf: usize,
    /// The receive buffer size set (0: the default).
    rcvbuf: usize,
}

impl NftSocket {
    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's namespace.
    pub fn open() -> Result<NftSocket> {
        let op = "opening an nf_tables netlink socket";
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::netlink(op, e))?;
        sock.bind_auto().map_err(|e| KernelError::netlink(op, e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| KernelError::netlink(op, e))?;
        // Acknowledgements without a copy of the request: an error answer stays small.
        sock.set_cap_ack(true)
            .map_err(|e| KernelError::netlink(op, e))?;
        Ok(NftSocket {
            sock,
            seq: 0,
            sndbuf: 0,
            rcvbuf: 0,
        })
    }

    /// Applies `changes` as ONE atomic nf_tables transaction. `Ok(false)` (nothing sent) when
    /// some change cannot be encoded here: run `nft` for them. On an error nothing was
    /// applied, the error names the errno and the sets, and the socket must not be reused
    /// (answers may be left unread).
    pub fn apply(&mut self, changes: &[SetChange]) -> Result<bool> {
        if changes.is_empty() {
            return Ok(true);
        }
        let op = || {
            let sets: Vec<String> = changes
                .iter()
                .map(|c| format!("{} {} {}", c.family, c.table, c.set))
                .collect();
            format!("changing the elements of nftables sets {}", sets.join(", "))
        };
        let first = self.seq.wrapping_add(1);
        let Some((bytes, acked)) = batch(changes, first) else {
            return Ok(false);
        };
        // Begin, the messages, end: the next batch starts after all of them.
        let last = first.wrapping_add(acked as u32 + 1);
        self.seq = last;
        // nfnetlink takes a batch from ONE datagram, and netlink refuses a datagram larger
        // than the socket's send buffer (EMSGSIZE): a 10,000-port publish is ~1.5 MB. nft
        // does the same (`SO_SNDBUFFORCE`, root only; berthd runs as root).
        if bytes.len() + 4096 > self.sndbuf.max(200 * 1024) {
            let want = (bytes.len() + 4096).next_power_of_two();
            rustix::net::sockopt::set_socket_send_buffer_size_force(&self.sock, want)
                .map_err(|e| KernelError::netlink(op(), std::io::Error::from(e)))?;
            self.sndbuf = want;
        }
        // Every acknowledgement is queued before `sendmsg` returns: one skb each (~1 KiB of
        // the receive buffer), so 328 of them (65,535 ports) overrun the default 208 KiB and
        // the answers are lost (ENOBUFS).
        let need = acked * 1024 + 64 * 1024;
        if need > self.rcvbuf.max(200 * 1024) {
            let want = need.next_power_of_two();
            rustix::net::sockopt::set_socket_recv_buffer_size_force(&self.sock, want)
                .map_err(|e| KernelError::netlink(op(), std::io::Error::from(e)))?;
            self.rcvbuf = want;
        }
        send_and_check(&mut self.sock, &bytes, first, last, acked).map_err(|e| match e {
            Failure::Errno(errno) => {
                KernelError::netlink(op(), std::io::Error::from_raw_os_error(errno))
            }
            Failure::Io(e) => KernelError::netlink(op(), e),
        })?;
        // The commit's notification names the committing task (`NFTA_GEN_PROC_PID` is
        // `task_pid_nr(current)`, this thread's id): berth's own, not drift.
        crate::nft::remember_own(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        Ok(true)
    }
}

/// berthd's nf_tables socket (in its own namespace), opened on first use and kept: a change
/// costs one `sendmsg` and the reads of its acknowledgements.
static SOCKET: Mutex<Option<NftSocket>> = Mutex::new(None);

/// [`NftSocket::apply`] on berthd's own socket (in the namespace of the thread that first
/// calls this: berthd's). A failed socket is dropped; the next change opens a new one.
pub fn apply(changes: &[SetChange]) -> Result<bool> {
    if changes.is_empty() {
        return Ok(true);
    }
    let mut slot = SOCKET.lock().map_err(|_| {
        KernelError::invalid(
            "changing nftables elements",
            "nf_tables socket lock poisoned",
        )
    })?;
    if slot.is_none() {
        *slot = Some(NftSocket::open()?);
    }
    let Some(sock) = slot.as_mut() else {
        return Ok(false);
    };
    let result = sock.apply(changes);
    if result.is_err() {
        *slot = None;
    }
    result
}

enum Failure {
    Errno(i32),
    Io(std::io::Error),
}

/// Sends the batch and reads one answer per acknowledged message (`NLMSG_ERROR` with 0 for
/// success). nfnetlink processes a batch in the sender's `sendmsg`, so every answer is queued
/// when it returns; the first non-zero errno is the batch's failure (the kernel then aborted
/// the whole transaction).
fn send_and_check(
    sock: &mut Socket,
    bytes: &[u8],
    first: u32,
    last: u32,
    acked: usize,
) -> std::result::Result<(), Failure> {
    sock.send(bytes, 0).map_err(Failure::Io)?;
    let mut answered = 0;
    let mut failure = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    while answered < acked {
        buf.clear();
        sock.recv(&mut buf, 0).map_err(Failure::Io)?;
        let mut off = 0;
        while off + 16 <= buf.len() {
            let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
            let len = word(off) as usize;
            if len < 16 || off + len > buf.len() {
                break;
            }
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let seq = word(off + 8);
            let in_batch = seq.wrapping_sub(first) <= last.wrapping_sub(first);
            if ty == NLMSG_ERROR && in_batch && off + 20 <= buf.len() {
                let errno = i32::from_ne_bytes([
                    buf[off + 16],
                    buf[off + 17],
                    buf[off + 18],
                    buf[off + 19],
                ]);
                if errno != 0 {
                    failure.get_or_insert(-errno);
                    // An error on the batch delimiters means no message was processed: no
                    // more answers come.
                    if seq == first || seq == last {
                        return Err(Failure::Errno(-errno));
                    }
                }
                answered += 1;
            }
            off += len.div_ceil(4) * 4;
        }
    }
    match failure {
        Some(errno) => Err(Failure::Errno(errno)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(family: &'static str, set: &'static str, key: &'static str) -> SetChange {
        SetChange {
            family,
            table: "berth",
            set,
            key_type: key,
            data_type: None,
            interval: false,
            delete: vec![],
            add: vec![],
        }
    }

    /// Little-endian 32-bit words as `nft --debug=netlink` prints element data.
    fn words(b: &[u8]) -> String {
        b.chunks(4)
            .map(|w| {
                let mut a = [0u8; 4];
                a[..w.len()].copy_from_slice(w);
                format!("{:08x}", u32::from_le_bytes(a))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    // The expected words are nft 1.0.6's `--debug=netlink` output for the same elements:
    //   nft --debug=netlink add element bridge t mac '{ "veth1234" . 02:42:0a:01:00:02 }'
    #[test]
    fn keys_are_laid_out_as_nft_lays_them_out() {
        let cases = [
            (
                "ifname . ether_addr",
                "\"veth1234\" . 02:42:0a:01:00:02",
                "68746576 34333231 00000000 00000000 010a4202 00000200",
            ),
            (
                "iifname . @th,64,128",
                "\"v1\" . 0xfe800000000000000000000000000001",
                "00003176 00000000 00000000 00000000 000080fe 00000000 00000000 01000000",
            ),
            (
                "ipv4_addr . inet_proto . inet_service",
                "127.0.0.1 . tcp . 8080",
                "0100007f 00000006 0000901f",
            ),
            (
                "ipv4_addr . inet_service",
                "10.1.0.2 . 80",
                "0200010a 00005000",
            ),
            ("inet_proto . inet_service", "udp . 53", "00000011 00003500"),
            (
                "ipv6_addr . inet_service",
                "fd00::2 . 5353",
                "000000fd 00000000 00000000 02000000 0000e914",
            ),
        ];
        for (ty, text, want) in cases {
            let got = value(ty, text).unwrap_or_else(|| panic!("{ty}: {text}"));
            assert_eq!(words(&got), want, "{ty}: {text}");
        }
        // A single scalar is not padded: an ifname is its 16 bytes.
        assert_eq!(value("ifname", "\"br-x\"").map(|v| v.len()), Some(16));
    }

    #[test]
    fn what_cannot_be_encoded_is_left_to_nft() {
        assert_eq!(value("ifname", "br-x"), None, "unquoted name");
        assert_eq!(
            value("ifname", "\"0123456789abcdef\""),
            None,
            "17 bytes with NUL"
        );
        assert_eq!(value("ipv4_addr . ifname", "10.0.0.0/24 . \"br\""), None);
        assert_eq!(value("ether_addr", "02:42:0a:01:00"), None);
        assert_eq!(value("mark", "1"), None);
        let mut ch = change("inet", "masq4", "ipv4_addr");
        ch.interval = true;
        ch.add.push(("10.1.0.0/24".into(), "network web".into()));
        assert!(batch(&[ch], 1).is_none(), "interval sets go through nft");
    }

    #[test]
    fn a_comment_is_nfts_userdata_tlv() {
        assert_eq!(comment_tlv("c x"), Some(b"\x00\x04c x\x00".to_vec()));
        assert_eq!(comment_tlv(""), None);
        assert_eq!(comment_tlv(&"x".repeat(300)), None);
    }

    /// The whole batch for one added map element and one deleted set element, byte for byte.
    #[test]
    fn a_batch_is_begin_deletes_adds_end() {
        let mut guard = change("bridge", "guarded", "ifname");
        guard.delete.push("\"ve1\"".into());
        let mut map = change("inet", "publish4_any", "inet_proto . inet_service");
        map.data_type = Some("ipv4_addr . inet_service");
        map.add
            .push(("tcp . 80 : 10.1.0.2 . 8080".into(), "c".into()));
        let (b, acked) = batch(&[map, guard], 100).expect("encodable");
        assert_eq!(acked, 2);
        let mut want: Vec<u8> = Vec::new();
        let h = |len: u32, ty: u16, flags: u16, seq: u32, fam: u8, res: u16| {
            let mut v = Vec::new();
            v.extend(len.to_ne_bytes());
            v.extend(ty.to_ne_bytes());
            v.extend(flags.to_ne_bytes());
            v.extend(seq.to_ne_bytes());
            v.extend(0u32.to_ne_bytes());
            v.extend([fam, 0]);
            v.extend(res.to_be_bytes());
            v
        };
        let a = |ty: u16, p: &[u8]| {
            let mut v = Vec::new();
            v.extend(((4 + p.len()) as u16).to_ne_bytes());
            v.extend(ty.to_ne_bytes());
            v.extend(p);
            v.resize(v.len().div_ceil(4) * 4, 0);
            v
        };
        let n = |ty: u16, p: Vec<u8>| {
            let mut v = Vec::new();
            v.extend(((4 + p.len()) as u16).to_ne_bytes());
            v.extend((ty | 0x8000).to_ne_bytes());
            v.extend(p);
            v
        };
        want.extend(h(20, 16, 1, 100, 0, 10));
        // The deletion: table "berth", set "guarded", key "ve1" NUL-padded to 16.
        let mut key = b"ve1".to_vec();
        key.resize(16, 0);
        let mut body = a(1, b"berth\0");
        body.extend(a(2, b"guarded\0"));
        body.extend(n(3, n(1, n(1, a(1, &key)))));
        want.extend(h(20 + body.len() as u32, (10 << 8) | 14, 0x5, 101, 7, 0));
        want.extend(body);
        // The addition: key tcp . 80, value 10.1.0.2 . 8080, comment "c".
        let mut el = n(1, a(1, &[6, 0, 0, 0, 0, 80, 0, 0]));
        el.extend(n(2, a(1, &[10, 1, 0, 2, 0x1f, 0x90, 0, 0])));
        el.extend(a(6, b"\x00\x02c\x00"));
        let mut body = a(1, b"berth\0");
        body.extend(a(2, b"publish4_any\0"));
        body.extend(n(3, n(1, el)));
        want.extend(h(20 + body.len() as u32, (10 << 8) | 12, 0x405, 102, 1, 0));
        want.extend(body);
        want.extend(h(20, 17, 1, 103, 0, 10));
        assert_eq!(b, want);
    }

    #[test]
    fn large_changes_are_split_into_messages_of_one_batch() {
        let mut map = change("inet", "publish4_any", "inet_proto . inet_service");
        map.data_type = Some("ipv4_addr . inet_service");
        for p in 1..=1000u16 {
            map.add
                .push((format!("tcp . {p} : 10.1.0.2 . {p}"), String::new()));
        }
        let (b, acked) = batch(&[map], 1).expect("encodable");
        assert_eq!(acked, 1000usize.div_ceil(ELEMS_PER_MSG));
        assert!(b.len() < 64 * 1024 * acked);
    }
}
