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
//! Intervals are encoded for concatenations only (the kernel's pipapo backend, e.g. the runs
//! of set `relay6_tcp_runs`, `::1 . 30000-30999`, and of the maps `publish4_any_runs` & co.,
//! `tcp . 30000-30999 : 10.1.0.2`): there an element is ONE message entry with its first key
//! (`NFTA_SET_ELEM_KEY`), its last (`NFTA_SET_ELEM_KEY_END`) and, in a map, its value
//! (`NFTA_SET_ELEM_DATA`), laid out as nft 1.0.6 lays them out (pinned by the tests below). One-field interval sets (prefixes in
//! `masq4`) are not: nft turns them into interval-end elements with its own merging rules.
//! [`encode`] answers `None` for them and for prefixes, and the caller runs `nft` instead
//! (network create and remove only).

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
    /// The last key of an interval (concatenations with ranges only).
    key_end: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    comment: Option<Vec<u8>>,
}

/// The first and last key of a concatenation whose fields may be ranges (`::1 . 30000-30999`;
/// a field without `-` is its own first and last), each laid out as [`value_of`] lays out one
/// key. `None` for a prefix (`/`), a range whose ends are out of order, or a range in an
/// interface name (whose text may hold `-`: it is always a value there).
fn interval_of(kinds: &[Kind], text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut first = Vec::with_capacity(kinds.len() * 16);
    let mut last = Vec::with_capacity(kinds.len() * 16);
    let mut parts = text.split(" . ");
    for k in kinds {
        let part = parts.next()?.trim();
        if part.contains('/') {
            return None;
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) if *k != Kind::Ifname => (scalar(*k, a)?, scalar(*k, b)?),
            _ => {
                let v = scalar(*k, part)?;
                (v.clone(), v)
            }
        };
        // Same width, network order: bytewise order is numeric order.
        if a > b {
            return None;
        }
        for (out, mut v) in [(&mut first, a), (&mut last, b)] {
            v.resize(v.len().div_ceil(4) * 4, 0);
            out.extend(v);
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some((first, last))
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

/// `change` encoded, or `None` when it holds something berth does not encode (a one-field
/// interval set, a prefix, an unknown type, a value that does not parse): the caller runs
/// `nft` for it.
fn encode(change: &SetChange) -> Option<Encoded> {
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
    // A concatenation with ranges (pipapo), a set or a map: every element carries its own
    // first and last key, and a map's its value after them (`tcp . 30000-30999 : 10.1.0.2`).
    // nft sends the last key with every element it adds (a value alone too: first = last) and
    // with a deleted one only when it differs from the first; a deleted one without its value.
    let interval = change.interval;
    if interval && key_kinds.len() < 2 {
        return None;
    }
    let elem = |text: &str, comment: Option<&str>| -> Option<Elem> {
        let (key, key_end, data) = if interval {
            let (key_text, data) = match (&data_kinds, text.split_once(" : ")) {
                (Some(dk), Some((k, v))) => (k, Some(value_of(dk, v)?)),
                // A map element is deleted by its key alone, and added with its value.
                (Some(_), None) if comment.is_none() => (text, None),
                (Some(_), None) => return None,
                (None, _) => (text, None),
            };
            let (key, end) = interval_of(&key_kinds, key_text)?;
            let key_end = match comment {
                Some(_) => Some(end),
                None => (end != key).then_some(end),
            };
            (key, key_end, data)
        } else {
            match (&data_kinds, text.split_once(" : ")) {
                (Some(dk), Some((k, v))) => {
                    (value_of(&key_kinds, k)?, None, Some(value_of(dk, v)?))
                }
                (Some(_), None) if comment.is_none() => (value_of(&key_kinds, text)?, None, None),
                (None, _) => (value_of(&key_kinds, text)?, None, None),
                (Some(_), None) => return None,
            }
        };
        let comment = match comment {
            Some(c) if !c.is_empty() => Some(comment_tlv(c)?),
            _ => None,
        };
        Some(Elem {
            key,
            key_end,
            data,
            comment,
        })
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
                        if let Some(end) = &el.key_end {
                            nested(b, NFTA_SET_ELEM_KEY_END, |b| attr(b, NFTA_DATA_VALUE, end));
                        }
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
        // The commit's notification names the committing task (`NFTA_GEN_PROC_PID` is
        // `task_pid_nr(current)`, this thread's id): berth's own, not drift. Recorded before
        // the send, so that the monitor never reads the notification first (a thread's first
        // commit, a runtime worker's included, would otherwise look like someone else's).
        crate::nft::remember_own(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        send_and_check(&mut self.sock, &bytes, first, last, acked).map_err(|e| match e {
            Failure::Errno(errno) => {
                KernelError::netlink(op(), std::io::Error::from_raw_os_error(errno))
            }
            Failure::Io(e) => KernelError::netlink(op(), e),
            Failure::Undecoded => KernelError::invalid(op(), "an answer that is not netlink"),
        })?;
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
    apply_on(&mut slot, changes).unwrap_or(Ok(false))
}

/// [`apply`] when berthd's socket is open and no other change holds it; `None` otherwise
/// (never waits for the lock nor opens the socket: the caller is a runtime worker).
pub fn try_apply_now(changes: &[SetChange]) -> Option<Result<bool>> {
    apply_on(&mut *SOCKET.try_lock().ok()?, changes)
}

/// [`NftSocket::apply`] on the socket in `slot` (`None` if there is none); a socket that
/// failed is dropped, so the next change opens a new one.
fn apply_on(slot: &mut Option<NftSocket>, changes: &[SetChange]) -> Option<Result<bool>> {
    let result = slot.as_mut()?.apply(changes);
    if result.is_err() {
        *slot = None;
    }
    Some(result)
}

enum Failure {
    Errno(i32),
    Io(std::io::Error),
    /// An answer that cannot be read as berth's (a dump: see [`read_tables`]).
    Undecoded,
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

// Reading berth's tables back.
//
// A restart with 10,000 published ports read the tables with `nft -j list table`: nft built
// its cache (an expression per element), printed ~1.2 MB of JSON and berthd parsed it again,
// ~0.4 s of CPU on 2 cores that the adoption of the containers needed at the same time. What
// the observation keeps is small (the rules' chains and comments, the elements' text and
// comments), so berthd dumps it itself: `NFT_MSG_GETRULE` per table, `NFT_MSG_GETSETELEM` per
// set berth owns, between two reads of the ruleset's generation (nft's own check that its
// dumps are one snapshot).

/// `NFT_MSG_NEWRULE`, `NFT_MSG_GETRULE`, `NFT_MSG_NEWGEN`, `NFT_MSG_GETGEN`
/// (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`) and `NLM_F_DUMP_INTR` (linux/netlink.h).
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLMSG_DONE`.
const NLMSG_DONE: u16 = 3;
/// `enum nft_rule_attributes`.
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_USERDATA: u16 = 7;
/// `NFTA_SET_ELEM_FLAGS`, `NFTA_SET_ELEM_KEY_END` (`enum nft_set_elem_attributes`).
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// `NFT_SET_ELEM_INTERVAL_END`: the element ends an interval (its key is the first value after it).
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// `NFTA_GEN_ID` (`enum nft_gen_attributes`).
const NFTA_GEN_ID: u16 = 1;
/// `NFTNL_UDATA_RULE_COMMENT` (libnftnl/udata.h).
const UDATA_RULE_COMMENT: u8 = 0;
/// The type bits of an attribute header (without `NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// How often a read whose dumps were not one snapshot (the ruleset changed meanwhile) is tried.
const READ_TRIES: usize = 3;

/// The attributes of an attribute stream: (type, payload).
fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(h) = b.get(off..off + 4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        let Some(payload) = (len >= 4).then(|| b.get(off + 4..off + len)).flatten() else {
            break;
        };
        out.push((ty, payload));
        off += len.div_ceil(4) * 4;
    }
    out
}

/// The payload of attribute `ty` in `list`.
fn find<'a>(list: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    list.iter().find(|(t, _)| *t == ty).map(|(_, p)| *p)
}

/// A NUL-terminated string attribute's text.
fn attr_text(b: &[u8]) -> Option<&str> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(b.get(..end)?).ok()
}

/// The text of the userdata TLV of type `ty` (a comment): nft's `comment "…"`.
fn udata_text(b: &[u8], ty: u8) -> Option<String> {
    let mut off = 0;
    while let (Some(&t), Some(&len)) = (b.get(off), b.get(off + 1)) {
        let value = b.get(off + 2..off + 2 + usize::from(len))?;
        if t == ty {
            return attr_text(value).map(str::to_string);
        }
        off += 2 + usize::from(len);
    }
    None
}

/// How many bytes one scalar takes in a key or value (before a concatenation's padding).
fn width(kind: Kind) -> usize {
    match kind {
        Kind::Ifname | Kind::Ipv6 | Kind::Raw128 => 16,
        Kind::Ipv4 => 4,
        Kind::Ether => 6,
        Kind::Proto => 1,
        Kind::Service => 2,
    }
}

/// One scalar's bytes as element text: what [`scalar`] encodes back to the same bytes, and
/// what `berth_plan::firewall` writes for the same value.
fn scalar_text(kind: Kind, b: &[u8]) -> Option<String> {
    Some(match kind {
        Kind::Ifname => berth_plan::firewall::ifname_text(attr_text(b)?),
        Kind::Ipv4 => Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).to_string(),
        Kind::Ipv6 => Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string(),
        Kind::Ether => {
            if b.len() != 6 {
                return None;
            }
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        }
        Kind::Proto => match b {
            [6] => "tcp".to_string(),
            [17] => "udp".to_string(),
            [132] => "sctp".to_string(),
            [n] => n.to_string(),
            _ => return None,
        },
        Kind::Service => u16::from_be_bytes(<[u8; 2]>::try_from(b).ok()?).to_string(),
        Kind::Raw128 => format!("{:#x}", u128::from_be_bytes(<[u8; 16]>::try_from(b).ok()?)),
    })
}

/// The scalars of a key or value: one as is, a concatenation's each padded to 4 bytes (see
/// [`value_of`]). `None` when the length is not the type's.
fn fields<'a>(kinds: &[Kind], b: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    if let [k] = kinds {
        return (b.len() == width(*k)).then(|| vec![b]);
    }
    let mut out = Vec::with_capacity(kinds.len());
    let mut off = 0;
    for k in kinds {
        out.push(b.get(off..off + width(*k))?);
        off += width(*k).div_ceil(4) * 4;
    }
    (off == b.len()).then_some(out)
}

/// A key or value as element text (`tcp . 8080`).
fn text_of(kinds: &[Kind], b: &[u8]) -> Option<String> {
    let parts = fields(kinds, b)?
        .into_iter()
        .zip(kinds)
        .map(|(f, k)| scalar_text(*k, f))
        .collect::<Option<Vec<_>>>()?;
    Some(parts.join(" . "))
}

/// An address as a number, with its width in bits.
fn addr_number(kind: Kind, b: &[u8]) -> Option<(u128, u32)> {
    match kind {
        Kind::Ipv4 => Some((u128::from(u32::from_be_bytes(b.try_into().ok()?)), 32)),
        Kind::Ipv6 => Some((u128::from_be_bytes(b.try_into().ok()?), 128)),
        _ => None,
    }
}

/// An address field's interval `[first, last]` as element text: a prefix when it is one (an
/// address alone for a full-length one), else a range, as nft prints them.
fn interval_text(kind: Kind, first: u128, last: u128, bits: u32) -> Option<String> {
    let show = |v: u128| -> Option<String> {
        Some(match kind {
            Kind::Ipv4 => Ipv4Addr::from(u32::try_from(v).ok()?).to_string(),
            _ => Ipv6Addr::from(v).to_string(),
        })
    };
    if last < first {
        return None;
    }
    let span = last - first;
    let host = span.count_ones();
    let is_prefix = span.checked_add(1).is_none_or(|n| n.is_power_of_two()) && first & span == 0;
    Some(match (is_prefix, host) {
        (true, 0) => show(first)?,
        (true, h) => format!("{}/{}", show(first)?, bits - h),
        (false, _) => format!("{}-{}", show(first)?, show(last)?),
    })
}

/// One field of a concatenated interval element (`KEY` … `KEY_END`, both inclusive).
fn field_interval_text(kind: Kind, first: &[u8], last: &[u8]) -> Option<String> {
    match (addr_number(kind, first), addr_number(kind, last)) {
        (Some((a, bits)), Some((b, _))) => interval_text(kind, a, b, bits),
        _ if first == last => scalar_text(kind, first),
        _ => Some(format!(
            "{}-{}",
            scalar_text(kind, first)?,
            scalar_text(kind, last)?
        )),
    }
}

/// One element as the kernel dumps it.
struct Dumped {
    key: Vec<u8>,
    key_end: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    end_flag: bool,
    comment: String,
}

/// The payload of the `NFTA_DATA_VALUE` in a nested data attribute.
fn data_value(b: &[u8]) -> Option<Vec<u8>> {
    find(&attrs(b), NFTA_DATA_VALUE).map(<[u8]>::to_vec)
}

/// The elements of one `NFT_MSG_NEWSETELEM` dump message.
fn dumped_elements(payload: &[u8], out: &mut Vec<Dumped>) -> Option<()> {
    let top = attrs(payload);
    for (_, elem) in attrs(find(&top, NFTA_SET_ELEM_LIST_ELEMENTS)?) {
        let a = attrs(elem);
        let flags = find(&a, NFTA_SET_ELEM_FLAGS)
            .and_then(|f| Some(u32::from_be_bytes(f.try_into().ok()?)))
            .unwrap_or(0);
        out.push(Dumped {
            key: data_value(find(&a, NFTA_SET_ELEM_KEY)?)?,
            key_end: find(&a, NFTA_SET_ELEM_KEY_END).and_then(data_value),
            data: find(&a, NFTA_SET_ELEM_DATA).and_then(data_value),
            end_flag: flags & NFT_SET_ELEM_INTERVAL_END != 0,
            comment: find(&a, NFTA_SET_ELEM_USERDATA)
                .and_then(|u| udata_text(u, UDATA_SET_ELEM_COMMENT))
                .unwrap_or_default(),
        });
    }
    Some(())
}

/// A set's dumped elements as element text → comment, as `berth_plan::firewall::parse_observed`
/// reads them from nft's JSON. `None` when one cannot be read as the set's type (the caller then
/// asks nft).
fn elements_text(
    set: &berth_plan::firewall::SetChange,
    dumped: &[Dumped],
) -> Option<std::collections::BTreeMap<String, String>> {
    let key_kinds = kinds(set.key_type)?;
    let data_kinds = match set.data_type {
        Some(t) => Some(kinds(t)?),
        None => None,
    };
    let mut out = std::collections::BTreeMap::new();
    if !set.interval {
        for d in dumped {
            if d.end_flag || d.key_end.is_some() {
                return None;
            }
            let mut text = text_of(&key_kinds, &d.key)?;
            if let Some(dk) = &data_kinds {
                text = format!("{text} : {}", text_of(dk, d.data.as_deref()?)?);
            }
            out.insert(text, d.comment.clone());
        }
        return Some(out);
    }
    if let [kind] = key_kinds[..] {
        // One-field interval maps are not berth's.
        if data_kinds.is_some() {
            return None;
        }
        // One field (the kernel's rbtree): an interval is its start element (with the comment)
        // and an element flagged as its end holding the first value after it; an interval that
        // reaches the top of the address space has no end element. The end nft adds at 0
        // starts nothing.
        let mut ends = Vec::new();
        for d in dumped.iter().filter(|d| d.end_flag) {
            ends.push(addr_number(kind, &d.key)?.0);
        }
        ends.sort_unstable();
        for d in dumped.iter().filter(|d| !d.end_flag) {
            let (first, bits) = addr_number(kind, &d.key)?;
            let last = match &d.key_end {
                Some(e) => addr_number(kind, e)?.0,
                None => match ends.iter().find(|&&e| e > first) {
                    Some(e) => e - 1,
                    None => u128::MAX >> (128 - bits),
                },
            };
            out.insert(interval_text(kind, first, last, bits)?, d.comment.clone());
        }
        return Some(out);
    }
    // Concatenations (the kernel's pipapo): every element holds its first and last key, and
    // a map's element its value.
    for d in dumped {
        if d.end_flag {
            return None;
        }
        let first = fields(&key_kinds, &d.key)?;
        let last = fields(&key_kinds, d.key_end.as_deref().unwrap_or(&d.key))?;
        let parts = key_kinds
            .iter()
            .zip(first.into_iter().zip(last))
            .map(|(k, (a, b))| field_interval_text(*k, a, b))
            .collect::<Option<Vec<_>>>()?;
        let mut text = parts.join(" . ");
        if let Some(dk) = &data_kinds {
            text = format!("{text} : {}", text_of(dk, d.data.as_deref()?)?);
        }
        out.insert(text, d.comment.clone());
    }
    Some(out)
}

/// What a request asks: its message type, whether it is a dump, the family, the answers' type.
struct Ask {
    ty: u16,
    dump: bool,
    family: u8,
    answer: u16,
}

/// One request's answers, each message of type `want` handed to `each` (its attributes, after
/// the `nfgenmsg` header). `Ok(false)` when the dump was interrupted by a change of the
/// ruleset (`NLM_F_DUMP_INTR`); an error answer is the errno.
fn request(
    sock: &mut Socket,
    buf: &mut Vec<u8>,
    seq: u32,
    ask: Ask,
    fill: impl FnOnce(&mut Vec<u8>),
    mut each: impl FnMut(&[u8]) -> Option<()>,
) -> std::result::Result<bool, Failure> {
    let flags = if ask.dump { NLM_F_DUMP } else { 0 };
    let mut msg = Vec::new();
    message(
        &mut msg,
        (NFNL_SUBSYS_NFTABLES << 8) | ask.ty,
        NLM_F_REQUEST | flags,
        seq,
        ask.family,
        0,
        fill,
    );
    sock.send(&msg, 0).map_err(Failure::Io)?;
    let want = (NFNL_SUBSYS_NFTABLES << 8) | ask.answer;
    let mut whole = true;
    loop {
        buf.clear();
        sock.recv(buf, 0).map_err(Failure::Io)?;
        let mut off = 0;
        while let Some(h) = buf.get(off..off + 16) {
            let word = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let len = word(0) as usize;
            let Some(m) = (len >= 16).then(|| buf.get(off..off + len)).flatten() else {
                break;
            };
            let mty = u16::from_ne_bytes([h[4], h[5]]);
            let mflags = u16::from_ne_bytes([h[6], h[7]]);
            off += len.div_ceil(4) * 4;
            if word(8) != seq {
                continue;
            }
            if mflags & NLM_F_DUMP_INTR != 0 {
                whole = false;
            }
            match mty {
                NLMSG_DONE => return Ok(whole),
                NLMSG_ERROR => {
                    let errno = m
                        .get(16..20)
                        .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                        .unwrap_or(-libc::EPROTO);
                    if errno != 0 {
                        return Err(Failure::Errno(-errno));
                    }
                    // The acknowledgement of a request that is not a dump: its answer came first.
                    return Ok(whole);
                }
                t if t == want => {
                    if each(m.get(20..).unwrap_or(&[])).is_none() {
                        return Err(Failure::Undecoded);
                    }
                    if !ask.dump {
                        // Not a dump: this one answer is all.
                        return Ok(whole);
                    }
                }
                _ => {}
            }
        }
    }
}

/// What one read of berth's tables found.
enum Read {
    /// The rules and elements, read within one generation of the ruleset.
    Whole(berth_plan::host::ObservedFirewall),
    /// The ruleset changed during the read.
    Torn,
    /// Something the kernel holds cannot be read as berth's types: nft reads it.
    Undecoded,
}

/// The ruleset's generation (`NFT_MSG_GETGEN`).
fn generation(sock: &mut Socket, buf: &mut Vec<u8>, seq: u32) -> std::result::Result<u32, Failure> {
    let mut id = None;
    let ask = Ask {
        ty: NFT_MSG_GETGEN,
        dump: false,
        family: 0,
        answer: NFT_MSG_NEWGEN,
    };
    request(
        sock,
        buf,
        seq,
        ask,
        |_| {},
        |p| {
            let g = find(&attrs(p), NFTA_GEN_ID)?;
            id = Some(u32::from_be_bytes(g.try_into().ok()?));
            Some(())
        },
    )?;
    id.ok_or(Failure::Undecoded)
}

/// One read of both tables (see [`read_tables`]).
fn read_once(sock: &mut Socket, seq: &mut u32) -> std::result::Result<Read, Failure> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut next = || {
        *seq = seq.wrapping_add(1);
        *seq
    };
    let before = generation(sock, &mut buf, next())?;
    let mut fw = berth_plan::host::ObservedFirewall::default();
    for (family, name) in [(NFPROTO_INET, "inet"), (NFPROTO_BRIDGE, "bridge")] {
        let whole = request(
            sock,
            &mut buf,
            next(),
            Ask {
                ty: NFT_MSG_GETRULE,
                dump: true,
                family,
                answer: NFT_MSG_NEWRULE,
            },
            |b| attr_str(b, NFTA_RULE_TABLE, "berth"),
            |p| {
                let a = attrs(p);
                if attr_text(find(&a, NFTA_RULE_TABLE)?)? != "berth" {
                    return Some(());
                }
                let chain = attr_text(find(&a, NFTA_RULE_CHAIN)?)?;
                // `berth_plan::firewall::observed_static_rules`: chain `user` is the
                // administrator's; the bridge table's chains are named with the family.
                let chain = match name {
                    "inet" if chain == "user" => return Some(()),
                    "inet" => chain.to_string(),
                    _ => format!("bridge {chain}"),
                };
                let comment = find(&a, NFTA_RULE_USERDATA)
                    .and_then(|u| udata_text(u, UDATA_RULE_COMMENT))
                    .unwrap_or_default();
                fw.rules.push((chain, comment));
                Some(())
            },
        )?;
        if !whole {
            return Ok(Read::Torn);
        }
    }
    for set in berth_plan::firewall::owned_sets() {
        let family = match set.family {
            "inet" => NFPROTO_INET,
            "bridge" => NFPROTO_BRIDGE,
            _ => return Ok(Read::Undecoded),
        };
        let mut dumped = Vec::new();
        let answer = request(
            sock,
            &mut buf,
            next(),
            Ask {
                ty: NFT_MSG_GETSETELEM,
                dump: true,
                family,
                answer: NFT_MSG_NEWSETELEM,
            },
            |b| {
                attr_str(b, NFTA_SET_ELEM_LIST_TABLE, set.table);
                attr_str(b, NFTA_SET_ELEM_LIST_SET, set.set);
            },
            |p| dumped_elements(p, &mut dumped),
        );
        match answer {
            Ok(true) => {}
            Ok(false) => return Ok(Read::Torn),
            // No such set (or table): nothing of it is observed, as nft's listing shows none.
            Err(Failure::Errno(libc::ENOENT)) => continue,
            Err(Failure::Undecoded) => return Ok(Read::Undecoded),
            Err(e) => return Err(e),
        }
        let Some(text) = elements_text(&set, &dumped) else {
            return Ok(Read::Undecoded);
        };
        fw.elements.0.insert(set.set.to_string(), text);
    }
    if generation(sock, &mut buf, next())? != before {
        return Ok(Read::Torn);
    }
    Ok(Read::Whole(fw))
}

/// `NFT_MSG_NEWTABLE`, `NFT_MSG_GETTABLE`, `NFTA_TABLE_NAME`.
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;

/// The names of the `inet` tables in the calling thread's namespace (one `NFT_MSG_GETTABLE`
/// dump): what `nft list tables` lists of them, without nft's cache, which nft 1.0.6 fills
/// with every set element for a listing of tables (~0.1 s at 10,000 published ports, at every
/// berthd start).
pub fn inet_tables() -> Result<Vec<String>> {
    let op = "listing the inet nftables tables";
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::netlink(op, e))?;
    sock.bind_auto().map_err(|e| KernelError::netlink(op, e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| KernelError::netlink(op, e))?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut names = Vec::new();
    for seq in 1..=READ_TRIES as u32 {
        names.clear();
        let ask = Ask {
            ty: NFT_MSG_GETTABLE,
            dump: true,
            family: NFPROTO_INET,
            answer: NFT_MSG_NEWTABLE,
        };
        let whole = request(
            &mut sock,
            &mut buf,
            seq,
            ask,
            |_| {},
            |p| {
                names.push(attr_text(find(&attrs(p), NFTA_TABLE_NAME)?)?.to_string());
                Some(())
            },
        )
        .map_err(|e| match e {
            Failure::Errno(errno) => {
                KernelError::netlink(op, std::io::Error::from_raw_os_error(errno))
            }
            Failure::Io(e) => KernelError::netlink(op, e),
            Failure::Undecoded => KernelError::invalid(op, "a table without a name"),
        })?;
        if whole {
            return Ok(names);
        }
    }
    Err(KernelError::invalid(
        op,
        "the tables kept changing during the listing",
    ))
}

/// berth's two tables (`inet berth`, `bridge berth`) as the reconciler observes them, read over
/// nf_tables netlink in the calling thread's namespace: the rules of berth's chains as (chain,
/// comment), the elements of every set and map berth owns. The same as
/// `berth_plan::firewall::observed_static_rules` and `parse_observed` make of nft's JSON (a
/// missing table or set holds nothing). `Ok(None)` when the kernel holds something that is not
/// read here (an element of another shape than berth's types, a ruleset that kept changing
/// during the read): the caller asks nft.
pub fn read_tables() -> Result<Option<berth_plan::host::ObservedFirewall>> {
    let op = "reading berth's nftables tables";
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| KernelError::netlink(op, e))?;
    sock.bind_auto().map_err(|e| KernelError::netlink(op, e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| KernelError::netlink(op, e))?;
    let mut seq = 0;
    for _ in 0..READ_TRIES {
        match read_once(&mut sock, &mut seq) {
            Ok(Read::Whole(fw)) => return Ok(Some(fw)),
            Ok(Read::Torn) => continue,
            Ok(Read::Undecoded) | Err(Failure::Undecoded) => return Ok(None),
            Err(Failure::Errno(errno)) => {
                return Err(KernelError::netlink(
                    op,
                    std::io::Error::from_raw_os_error(errno),
                ))
            }
            Err(Failure::Io(e)) => return Err(KernelError::netlink(op, e)),
        }
    }
    Ok(None)
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

    #[test]
    fn a_worker_never_waits_for_the_socket_another_change_holds() {
        let mut c = change("bridge", "guarded", "ifname");
        c.add.push(("\"vb1\"".into(), String::new()));
        // Held by a change in progress (or not open yet): the worker's try says "not now"
        // at once, and the caller sends the change from a blocking thread instead.
        let held = SOCKET.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = std::sync::mpsc::channel();
        let changes = vec![c];
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = tx.send(try_apply_now(&changes).is_none());
            });
            let none = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("try_apply_now returned while the socket was held");
            assert!(
                none,
                "nothing is sent while another change holds the socket"
            );
        });
        drop(held);
    }

    /// Element text → comment, as `elements_text` answers.
    fn text_map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
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
        assert!(
            batch(&[ch], 1).is_none(),
            "one-field interval sets go through nft"
        );
        // A concatenation with a prefix, or with a range whose ends are out of order, too.
        let kinds6 = kinds("ipv6_addr . inet_service").expect("kinds");
        assert!(interval_of(&kinds6, "fd00::/64 . 80").is_none());
        assert!(interval_of(&kinds6, "::1 . 90-80").is_none());
        assert!(interval_of(&kinds6, "::1 . 80 . 1").is_none());
        let mut hp = change("inet", "hairpin4", "ipv4_addr . ifname");
        hp.interval = true;
        hp.add
            .push(("10.1.0.0/24 . \"br-web\"".into(), "network web".into()));
        assert!(batch(&[hp], 1).is_none(), "prefixes go through nft");
        // An interface name is a value even with a `-` in it.
        let kinds_if = kinds("ipv4_addr . ifname").expect("kinds");
        let (a, b) = interval_of(&kinds_if, "10.1.0.1 . \"br-web\"").expect("a value");
        assert_eq!(a, b);
    }

    /// The elements of one set as a `NEWSETELEM`/`DELSETELEM` message carries them: the
    /// payload of its `NFTA_SET_ELEM_LIST_ELEMENTS`.
    fn list_elements(change: SetChange, delete: bool) -> Vec<u8> {
        let (b, _) = batch(&[change], 1).expect("encodable");
        // Begin (20 bytes), then the one element message: header 16, nfgenmsg 4.
        let len = u32::from_ne_bytes(b[20..24].try_into().expect("len")) as usize;
        let ty = u16::from_ne_bytes([b[24], b[25]]) & 0xff;
        assert_eq!(
            ty,
            if delete {
                NFT_MSG_DELSETELEM
            } else {
                NFT_MSG_NEWSETELEM
            }
        );
        let a = attrs(&b[20 + 20..20 + len]);
        find(&a, NFTA_SET_ELEM_LIST_ELEMENTS)
            .expect("elements")
            .to_vec()
    }

    /// A run of `relay6_tcp_runs` (a concatenation with a port range, the kernel's pipapo) is
    /// one element with its first and last key, byte for byte as nft 1.0.6 sends it (`strace
    /// -e sendmsg -xx nft add element inet t s '{ ::1 . 8080 comment "c" }'` and the same
    /// `delete element`, set `{ type ipv6_addr . inet_service; flags interval; }`): added with
    /// `KEY_END` even for a port alone, deleted without it then; and a range's keys as
    /// `nft --debug=netlink` prints them.
    #[test]
    fn a_run_is_one_element_with_its_first_and_last_key() {
        let runs = berth_plan::firewall::owned_sets()
            .find(|s| s.set == berth_plan::firewall::SET_RELAY6_TCP_RUNS)
            .expect("relay set");
        assert!(runs.interval);
        let one_key: &[u8] = b"\x18\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1f\x90\x00\x00";
        let mut add = runs.clone();
        add.add.push(("::1 . 8080".into(), "c".into()));
        let mut want = b"\x44\x00\x01\x80\x1c\x00\x01\x80".to_vec();
        want.extend(one_key);
        want.extend(b"\x1c\x00\x0a\x80");
        want.extend(one_key);
        want.extend(b"\x08\x00\x06\x00\x00\x02\x63\x00");
        assert_eq!(list_elements(add, false), want);
        let mut del = runs.clone();
        del.delete.push("::1 . 8080".into());
        let mut want = b"\x20\x00\x01\x80\x1c\x00\x01\x80".to_vec();
        want.extend(one_key);
        assert_eq!(list_elements(del, true), want);

        // nft --debug=netlink add element inet t s '{ ::1 . 30000-30999 }':
        //   00000000 00000000 00000000 01000000 00003075 - … 01000000 00001779
        let kinds6 = kinds(runs.key_type).expect("kinds");
        let (first, last) = interval_of(&kinds6, "::1 . 30000-30999").expect("run");
        assert_eq!(
            words(&first),
            "00000000 00000000 00000000 01000000 00003075"
        );
        assert_eq!(words(&last), "00000000 00000000 00000000 01000000 00001779");
        // Deleting a run names both ends; reading it back gives the plan's text.
        let mut del = runs.clone();
        del.delete.push("::1 . 30000-30999".into());
        let mut want = b"\x3c\x00\x01\x80\x1c\x00\x01\x80\x18\x00\x01\x00".to_vec();
        want.extend(&first);
        want.extend(b"\x1c\x00\x0a\x80\x18\x00\x01\x00");
        want.extend(&last);
        assert_eq!(list_elements(del, true), want);
        let dumped = [
            Dumped {
                key: first,
                key_end: Some(last),
                data: None,
                end_flag: false,
                comment: "container a 30000-30999/tcp".into(),
            },
            Dumped {
                key: one_key[4..].to_vec(),
                key_end: Some(one_key[4..].to_vec()),
                data: None,
                end_flag: false,
                comment: "container b 80/tcp".into(),
            },
        ];
        let got = elements_text(&runs, &dumped).expect("reads");
        let want = text_map(&[
            ("::1 . 30000-30999", "container a 30000-30999/tcp"),
            ("::1 . 8080", "container b 80/tcp"),
        ]);
        assert_eq!(got, want);
    }

    /// A run of a `publish*_runs` map (a concatenation with a port range whose value is an
    /// address) is one element with its first and last key and its value, byte for byte as
    /// nft 1.0.6 sends it (`strace -e sendmsg -xx nft add element inet berth publish4_any_runs
    /// '{ tcp . 30000-30999 comment "c" : 10.1.0.2 }'`, the same `delete element`, and both for
    /// `publish4_runs` and `publish6_any_runs`, maps as `base_script` declares them); the
    /// kernel's dump of it reads back as the plan's text.
    #[test]
    fn a_dnat_run_is_one_element_with_its_keys_and_its_value() {
        let map = |name: &str| {
            berth_plan::firewall::owned_sets()
                .find(|s| s.set == name)
                .expect("map")
        };
        let any4 = map(berth_plan::firewall::MAP_PUBLISH4_ANY_RUNS);
        assert!(any4.interval);
        assert_eq!(any4.data_type, Some("ipv4_addr"));
        let first: &[u8] = b"\x10\x00\x01\x80\x0c\x00\x01\x00\x06\x00\x00\x00\x75\x30\x00\x00";
        let last: &[u8] = b"\x10\x00\x0a\x80\x0c\x00\x01\x00\x06\x00\x00\x00\x79\x17\x00\x00";
        let mut add = any4.clone();
        add.add
            .push(("tcp . 30000-30999 : 10.1.0.2".into(), "c".into()));
        let mut want = b"\x38\x00\x01\x80".to_vec();
        want.extend(first);
        want.extend(last);
        want.extend(b"\x0c\x00\x02\x80\x08\x00\x01\x00\x0a\x01\x00\x02");
        want.extend(b"\x08\x00\x06\x00\x00\x02\x63\x00");
        assert_eq!(list_elements(add, false), want);
        let mut del = any4.clone();
        del.delete.push("tcp . 30000-30999".into());
        let mut want = b"\x24\x00\x01\x80".to_vec();
        want.extend(first);
        want.extend(last);
        assert_eq!(list_elements(del, true), want);
        // An element to add without its value is not a map element: left to nft.
        let mut bare = any4.clone();
        bare.add.push(("tcp . 30000-30999".into(), "c".into()));
        assert!(batch(&[bare], 1).is_none());

        // One host address: the address is the first field of both keys.
        let mut del = map(berth_plan::firewall::MAP_PUBLISH4_RUNS);
        del.delete.push("127.0.0.1 . udp . 30000-30999".into());
        let want = b"\x2c\x00\x01\x80\x14\x00\x01\x80\x10\x00\x01\x00\x7f\x00\x00\x01\x11\x00\x00\x00\x75\x30\x00\x00\x14\x00\x0a\x80\x10\x00\x01\x00\x7f\x00\x00\x01\x11\x00\x00\x00\x79\x17\x00\x00";
        assert_eq!(list_elements(del, true), want);
        // IPv6: a 16-byte value.
        let mut add = map(berth_plan::firewall::MAP_PUBLISH6_ANY_RUNS);
        add.add
            .push(("tcp . 30000-30999 : fd00::2".into(), "c".into()));
        let mut want = b"\x44\x00\x01\x80".to_vec();
        want.extend(first);
        want.extend(last);
        want.extend(b"\x18\x00\x02\x80\x14\x00\x01\x00\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02");
        want.extend(b"\x08\x00\x06\x00\x00\x02\x63\x00");
        assert_eq!(list_elements(add, false), want);

        // Read back: keys and value as the plan writes them.
        let dumped = [Dumped {
            key: first[8..].to_vec(),
            key_end: Some(last[8..].to_vec()),
            data: Some(vec![10, 1, 0, 2]),
            end_flag: false,
            comment: "container a 30000-30999/tcp".into(),
        }];
        let got = elements_text(&any4, &dumped).expect("reads");
        assert_eq!(
            got,
            text_map(&[(
                "tcp . 30000-30999 : 10.1.0.2",
                "container a 30000-30999/tcp"
            )])
        );
        // A map element without its value is not berth's: nft reads it.
        let no_value = [Dumped {
            key: first[8..].to_vec(),
            key_end: Some(last[8..].to_vec()),
            data: None,
            end_flag: false,
            comment: String::new(),
        }];
        assert!(elements_text(&any4, &no_value).is_none());
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

    /// Every scalar berth encodes reads back as the text it was written from.
    #[test]
    fn element_bytes_read_back_as_the_text_they_were_written_from() {
        for (ty, text) in [
            ("ifname", "\"berth-4ccc7b14a\""),
            ("ifname . ifname", "\"berth0\" . \"berth0\""),
            (
                "ifname . ether_addr",
                "\"vb2f9b38006300\" . 02:42:0a:50:01:00",
            ),
            ("ifname . ipv4_addr", "\"ve-web1\" . 10.80.1.0"),
            ("ifname . ipv6_addr", "\"ve-web1\" . fd00::2"),
            (
                "iifname . @th,64,128",
                "\"ve-web1\" . 0xfd000000000000000000000000000002",
            ),
            ("inet_proto . inet_service", "tcp . 20224"),
            ("inet_proto . inet_service", "udp . 53"),
            ("inet_proto . inet_service", "sctp . 9"),
            (
                "ipv4_addr . inet_proto . inet_service",
                "127.0.0.1 . udp . 53",
            ),
            ("ipv6_addr . inet_service", "fd00::2 . 80"),
        ] {
            let k = kinds(ty).expect("kinds");
            let b = value(ty, text).expect("encodes");
            assert_eq!(text_of(&k, &b).as_deref(), Some(text), "{ty}");
        }
        // Another length than the type's is not read as it.
        let k = kinds("inet_proto . inet_service").expect("kinds");
        assert_eq!(text_of(&k, &[6, 0, 0, 0, 0, 80]), None);
        assert_eq!(text_of(&kinds("ipv4_addr").expect("k"), &[10, 0, 0]), None);
    }

    /// An address interval reads as nft prints it: a prefix, an address alone, or a range.
    #[test]
    fn intervals_read_as_prefixes_addresses_or_ranges() {
        let v4 = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().expect("v4")));
        let t = |a: &str, b: &str| interval_text(Kind::Ipv4, v4(a), v4(b), 32);
        assert_eq!(
            t("10.80.0.0", "10.80.3.255").as_deref(),
            Some("10.80.0.0/22")
        );
        assert_eq!(t("10.9.9.9", "10.9.9.9").as_deref(), Some("10.9.9.9"));
        assert_eq!(
            t("10.1.0.1", "10.1.0.9").as_deref(),
            Some("10.1.0.1-10.1.0.9")
        );
        // Aligned size, unaligned start: a range.
        assert_eq!(
            t("10.1.0.2", "10.1.0.5").as_deref(),
            Some("10.1.0.2-10.1.0.5")
        );
        assert_eq!(
            t("0.0.0.0", "255.255.255.255").as_deref(),
            Some("0.0.0.0/0")
        );
        assert_eq!(
            interval_text(Kind::Ipv6, 0, u128::MAX, 128).as_deref(),
            Some("::/0")
        );
        assert_eq!(t("10.0.0.2", "10.0.0.1"), None);
    }

    /// A one-field interval set as the kernel dumps it (starts with the comments, ends flagged
    /// and holding the first value after the interval, nft's end at 0, no end for an interval
    /// to the top) reads as its prefixes; a concatenation as its fields' intervals.
    #[test]
    fn interval_sets_read_from_their_start_and_end_elements() {
        let el = |key: &[u8], end_flag: bool, comment: &str| Dumped {
            key: key.to_vec(),
            key_end: None,
            data: None,
            end_flag,
            comment: comment.to_string(),
        };
        let masq4 = berth_plan::firewall::owned_sets()
            .find(|s| s.set == "masq4")
            .expect("masq4");
        // Descending, as the rbtree dumps them.
        let dumped = [
            el(&[224, 0, 0, 0], false, "top"),
            el(&[172, 18, 0, 0], true, ""),
            el(&[172, 17, 0, 0], false, "network bridge"),
            el(&[10, 80, 4, 0], true, ""),
            el(&[10, 80, 0, 0], false, "network s0"),
            el(&[10, 9, 9, 10], true, ""),
            el(&[10, 9, 9, 9], false, "one"),
            el(&[0, 0, 0, 0], true, ""),
        ];
        let got = elements_text(&masq4, &dumped).expect("reads");
        let want = text_map(&[
            ("224.0.0.0/3", "top"),
            ("172.17.0.0/16", "network bridge"),
            ("10.80.0.0/22", "network s0"),
            ("10.9.9.9", "one"),
        ]);
        assert_eq!(got, want);

        let hairpin4 = berth_plan::firewall::owned_sets()
            .find(|s| s.set == "hairpin4")
            .expect("hairpin4");
        let mut first = vec![10, 80, 0, 0];
        first.extend(value("ifname", "\"berth-4ccc7b14a\"").expect("ifname"));
        let mut last = vec![10, 80, 3, 255];
        last.extend(value("ifname", "\"berth-4ccc7b14a\"").expect("ifname"));
        let d = Dumped {
            key: first,
            key_end: Some(last),
            data: None,
            end_flag: false,
            comment: "network s0".into(),
        };
        let got = elements_text(&hairpin4, &[d]).expect("reads");
        assert_eq!(
            got.get("10.80.0.0/22 . \"berth-4ccc7b14a\"")
                .map(String::as_str),
            Some("network s0"),
            "{got:?}"
        );
        // An end flag in a set that holds no intervals is not berth's: nft reads it.
        let bridges = berth_plan::firewall::owned_sets()
            .find(|s| s.set == "bridges")
            .expect("bridges");
        let mut name = b"berth0".to_vec();
        name.resize(IFNAMSIZ, 0);
        assert!(elements_text(&bridges, &[el(&name, true, "")]).is_none());
        assert_eq!(
            elements_text(&bridges, &[el(&name, false, "network bridge")])
                .expect("reads")
                .get("\"berth0\"")
                .map(String::as_str),
            Some("network bridge")
        );
    }
}
