//! A blocking rtnetlink socket for one-shot work in a namespace that a throwaway thread entered
//! (no dependency on the rest of the crate, so `netns` and `link` can both use it).

use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{KernelError, Result};
use crate::link::{link_up_msg, CHANGE};

/// A blocking rtnetlink socket for one-shot work in a namespace entered by a throwaway thread
/// (the socket is bound to the namespace of the thread that opened it).
pub(crate) struct SyncNetlink {
    sock: Socket,
    portid: u32,
    seq: u32,
    buf: Vec<u8>,
}

impl SyncNetlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's namespace.
    pub(crate) fn open() -> Result<Self> {
        let op = "opening NETLINK_ROUTE socket";
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| KernelError::netlink(op, e))?;
        let addr = sock.bind_auto().map_err(|e| KernelError::netlink(op, e))?;
        crate::monitor::remember_own_portid(addr.port_number());
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| KernelError::netlink(op, e))?;
        Ok(SyncNetlink {
            sock,
            portid: addr.port_number(),
            seq: 0,
            // Kernel dump datagrams are at most 32 KiB.
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// [`SyncNetlink::open`] with `NETLINK_GET_STRICT_CHK`: the kernel then honours the
    /// filters in a dump request's header (e.g. `ifa_index` of an `RTM_GETADDR` dump) and
    /// rejects a request whose header holds anything it cannot filter by.
    pub(crate) fn open_strict() -> Result<Self> {
        let nl = Self::open()?;
        nl.sock
            .set_netlink_get_strict_chk(true)
            .map_err(|e| KernelError::netlink("setting NETLINK_GET_STRICT_CHK", e))?;
        Ok(nl)
    }

    /// The portid the kernel gave this socket at its bind.
    pub(crate) fn portid(&self) -> u32 {
        self.portid
    }

    /// Sends one request and reads its answers until the ACK, the end of the dump or (for a
    /// single get) the one answer. An `NLMSG_ERROR` with an errno becomes the error of `op`.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut bytes = Vec::new();
        self.encode(msg, flags, &mut bytes);
        if let Err(e) = self.sock.send(&bytes, 0) {
            return Err(KernelError::netlink(op(), e));
        }
        let single = flags & (NLM_F_DUMP | NLM_F_ACK) == 0;
        let mut out = Vec::new();
        loop {
            let answers = match self.receive() {
                Ok(a) => a,
                Err(e) => return Err(e.into_error(op())),
            };
            for answer in answers {
                if answer.header.sequence_number != self.seq {
                    continue; // a late answer to an earlier request
                }
                match answer.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(KernelError::netlink(op(), e.to_io())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if single {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Appends `msg` with `flags` and the next sequence number to `bytes`.
    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, bytes: &mut Vec<u8>) {
        self.seq = self.seq.wrapping_add(1);
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let at = bytes.len();
        bytes.resize(at + req.buffer_len(), 0);
        req.serialize(&mut bytes[at..]);
    }

    /// Reads one datagram and parses every message in it.
    fn receive(&mut self) -> std::result::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, Recv> {
        self.buf.clear();
        self.sock.recv(&mut self.buf, 0).map_err(Recv::Socket)?;
        let mut out = Vec::new();
        let mut off = 0;
        while off < self.buf.len() {
            let rest = &self.buf[off..];
            let len = NetlinkBuffer::new_checked(rest)
                .map_err(|e| Recv::Parse(e.to_string()))?
                .length() as usize;
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                .map_err(|e| Recv::Parse(e.to_string()))?;
            off += (len + 3) & !3;
            out.push(parsed);
        }
        Ok(out)
    }

    /// Sends `msgs` in one datagram, each with its flags (which must ask for an ACK), and
    /// reads every answer: one result per message, in order. The kernel processes each
    /// message of a datagram in turn, also after one of them failed, so a batch is what the
    /// same requests one by one would do, in one `sendmsg` and as few `recvmsg`s (no task
    /// or thread wakes up between two of them). `Err`: the socket itself failed.
    pub(crate) fn batch(
        &mut self,
        msgs: Vec<(RouteNetlinkMessage, u16)>,
        op: impl Fn() -> String,
    ) -> Result<Vec<std::result::Result<(), std::io::Error>>> {
        let first = self.seq.wrapping_add(1);
        let mut bytes = Vec::new();
        for (msg, flags) in msgs {
            self.encode(msg, flags | NLM_F_ACK, &mut bytes);
        }
        let n = self.seq.wrapping_sub(first).wrapping_add(1) as usize;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<Option<std::result::Result<(), std::io::Error>>> =
            (0..n).map(|_| None).collect();
        if let Err(e) = self.sock.send(&bytes, 0) {
            return Err(KernelError::netlink(op(), e));
        }
        let mut left = n;
        while left > 0 {
            let answers = self.receive().map_err(|e| e.into_error(op()))?;
            for answer in answers {
                // An answer to an earlier request (not of this batch) is skipped.
                let i = answer.header.sequence_number.wrapping_sub(first) as usize;
                let (NetlinkPayload::Error(e), Some(slot @ None)) =
                    (answer.payload, out.get_mut(i))
                else {
                    continue;
                };
                *slot = Some(match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                });
                left -= 1;
            }
        }
        Ok(out.into_iter().map(|r| r.unwrap_or(Ok(()))).collect())
    }

    /// The index of the link named `name` in this socket's namespace: `SIOCGIFINDEX` on this
    /// socket (the kernel resolves a device ioctl on any socket in the socket's namespace,
    /// `sock_do_ioctl` → `dev_ioctl`; the name under RCU, no RTNL). Not an `RTM_GETLINK`,
    /// which first runs the link's pending link-watch event (`rtnl_getlink` →
    /// `linkwatch_sync_dev`: its operstate, and an `RTM_NEWLINK` to every listener). ENODEV
    /// when there is none.
    pub(crate) fn index_of(&self, name: &str, op: impl FnOnce() -> String) -> Result<u32> {
        rustix::net::netdevice::name_to_index(&self.sock, name)
            .map_err(|e| KernelError::netlink(op(), std::io::Error::from(e)))
    }

    /// `RTM_GETLINK` of the link `msg` names (by index or `IFLA_IFNAME`), its answer read in
    /// place for what a look-up on an endpoint's path needs ([`LinkBrief`]) rather than
    /// parsed whole: a bridge's answer carries ≈ 200 attributes (its options, both address
    /// families' device configuration, statistics), and parsing them into owned values was
    /// a third to a half of each look-up of a connect's endpoint (medians of 30, µs, whole
    /// parse → this: the bridge 190 → 125, the peer 36 → 19, the port after up 120 → 78,
    /// the peer after up 55 → 30). Without `skip_stats` the kernel's side is the plain
    /// `RTM_GETLINK` (which runs the device's pending linkwatch work, what the endpoint's
    /// look-ups after link up are for). `skip_stats`: `IFLA_EXT_MASK` =
    /// `RTEXT_FILTER_SKIP_STATS`, the kernel leaves the statistics out (for a look-up of an
    /// index alone).
    pub(crate) fn link_brief(
        &mut self,
        mut msg: LinkMessage,
        skip_stats: bool,
        op: impl FnOnce() -> String,
    ) -> Result<LinkBrief> {
        if skip_stats {
            msg.attributes
                .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        }
        let mut bytes = Vec::new();
        self.encode(
            RouteNetlinkMessage::GetLink(msg),
            crate::link::GET,
            &mut bytes,
        );
        if let Err(e) = self.sock.send(&bytes, 0) {
            return Err(KernelError::netlink(op(), e));
        }
        loop {
            self.buf.clear();
            if let Err(e) = self.sock.recv(&mut self.buf, 0) {
                return Err(KernelError::netlink(op(), e));
            }
            match brief_answer(&self.buf, self.seq) {
                None => continue, // only late answers to earlier requests
                Some(Ok(brief)) => return Ok(brief),
                Some(Err(Some(errno))) => {
                    return Err(KernelError::netlink(
                        op(),
                        std::io::Error::from_raw_os_error(errno),
                    ))
                }
                Some(Err(None)) => {
                    return Err(KernelError::invalid(op(), "malformed RTM_NEWLINK answer"))
                }
            }
        }
    }

    /// `RTM_SETLINK` `IFF_UP` on a link.
    pub(crate) fn set_link_up(&mut self, index: u32, op: &str) -> Result<()> {
        self.request(
            RouteNetlinkMessage::SetLink(link_up_msg(index)),
            CHANGE,
            || op.to_string(),
        )
        .map(drop)
    }
}

/// What a look-up on an endpoint's path needs of a link ([`SyncNetlink::link_brief`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkBrief {
    /// `ifi_index`.
    pub(crate) index: u32,
    /// `IFF_UP` in `ifi_flags`.
    pub(crate) up: bool,
    /// `IFLA_ADDRESS`, if the answer has one.
    pub(crate) mac: Option<Vec<u8>>,
}

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const IFLA_ADDRESS: u16 = 1;
/// `NLA_TYPE_MASK`: an attribute's type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The answer to request `seq` in one datagram `buf` from the kernel, read in place: `None`
/// when the datagram holds none (late answers to earlier requests), `Ok` for its
/// `RTM_NEWLINK`, `Err(Some(errno))` for an `NLMSG_ERROR` (an ACK, code 0, becomes `EINVAL`:
/// a get has no ACK to give), `Err(None)` for a message too short for what it claims to be.
/// Every read is bounds-checked: a malformed datagram is an error, never a panic.
fn brief_answer(buf: &[u8], seq: u32) -> Option<std::result::Result<LinkBrief, Option<i32>>> {
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let Some(len) = u32_at(buf, off).map(|l| l as usize) else {
            return Some(Err(None));
        };
        let Some(msg) = (len >= NLMSG_HDR)
            .then(|| buf.get(off..off + len))
            .flatten()
        else {
            return Some(Err(None));
        };
        off += (len + 3) & !3;
        if u32_at(msg, 8) != Some(seq) {
            continue;
        }
        return Some(match u16_at(msg, 4) {
            Some(NLMSG_ERROR) => match u32_at(msg, NLMSG_HDR).map(|c| c as i32) {
                Some(code) if code < 0 => Err(Some(-code)),
                Some(_) => Err(Some(libc::EINVAL)),
                None => Err(None),
            },
            Some(RTM_NEWLINK) => brief_link(msg).ok_or(None),
            _ => continue,
        });
    }
    None
}

/// An `RTM_NEWLINK` message (header included) as a [`LinkBrief`].
fn brief_link(msg: &[u8]) -> Option<LinkBrief> {
    // struct ifinfomsg { u8 family, pad; u16 type; i32 index; u32 flags, change; }
    let index = u32_at(msg, NLMSG_HDR + 4)?;
    let flags = u32_at(msg, NLMSG_HDR + 8)?;
    let mut mac = None;
    let mut at = NLMSG_HDR + IFINFOMSG;
    // struct rtattr { u16 len; u16 type; } then the value, each padded to 4 bytes.
    while at + 4 <= msg.len() {
        let len = usize::from(u16_at(msg, at)?);
        if len < 4 {
            return None;
        }
        let value = msg.get(at + 4..at + len)?;
        if u16_at(msg, at + 2)? & NLA_TYPE_MASK == IFLA_ADDRESS {
            mac = Some(value.to_vec());
        }
        at += (len + 3) & !3;
    }
    Some(LinkBrief {
        index,
        up: flags & libc::IFF_UP as u32 != 0,
        mac,
    })
}

/// Why [`SyncNetlink::receive`] failed.
enum Recv {
    Socket(std::io::Error),
    Parse(String),
}

impl Recv {
    fn into_error(self, op: String) -> KernelError {
        match self {
            Recv::Socket(e) => KernelError::netlink(op, e),
            Recv::Parse(e) => KernelError::invalid(op, e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::LinkFlags;

    fn datagram(msgs: Vec<(RouteNetlinkMessage, u32)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (m, seq) in msgs {
            let mut req = NetlinkMessage::from(m);
            req.header.sequence_number = seq;
            req.finalize();
            let at = out.len();
            out.resize(at + req.buffer_len(), 0);
            req.serialize(&mut out[at..]);
            out.resize((out.len() + 3) & !3, 0);
        }
        out
    }

    fn link(index: u32, up: bool, mac: Option<Vec<u8>>) -> RouteNetlinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        if up {
            l.header.flags = LinkFlags::Up | LinkFlags::Broadcast;
        }
        l.attributes
            .push(LinkAttribute::IfName("berth-0123".into()));
        l.attributes.push(LinkAttribute::Mtu(1500));
        if let Some(m) = mac {
            l.attributes.push(LinkAttribute::Address(m));
        }
        l.attributes.push(LinkAttribute::IfAlias("a\nb".into()));
        RouteNetlinkMessage::NewLink(l)
    }

    #[test]
    fn brief_reads_index_flags_and_mac_of_its_own_answer() {
        let mac = vec![2, 0x42, 10, 77, 0, 2];
        let buf = datagram(vec![
            (link(9, false, None), 6),
            (link(42, true, Some(mac.clone())), 7),
        ]);
        let got = brief_answer(&buf, 7).and_then(|r| r.ok());
        assert_eq!(
            got,
            Some(LinkBrief {
                index: 42,
                up: true,
                mac: Some(mac)
            })
        );
        let got = brief_answer(&buf, 6).and_then(|r| r.ok());
        assert_eq!(
            got,
            Some(LinkBrief {
                index: 9,
                up: false,
                mac: None
            })
        );
        // Only earlier answers: keep reading.
        assert_eq!(brief_answer(&buf, 8), None);
    }

    #[test]
    fn brief_turns_an_error_answer_into_its_errno() {
        use rtnetlink::packet_core::ErrorMessage;
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-libc::ENODEV);
        let mut req = NetlinkMessage::<RouteNetlinkMessage>::new(
            Default::default(),
            NetlinkPayload::Error(e),
        );
        req.header.sequence_number = 3;
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        assert_eq!(brief_answer(&buf, 3), Some(Err(Some(libc::ENODEV))));
    }

    #[test]
    fn brief_refuses_malformed_datagrams_without_panicking() {
        let good = datagram(vec![(link(42, true, Some(vec![1; 6])), 7)]);
        for cut in 0..good.len() {
            // Truncated anywhere: an error or "no answer here", never an answer (nor a panic).
            let got = brief_answer(&good[..cut], 7);
            assert!(!matches!(got, Some(Ok(_))), "cut at {cut}: {got:?}");
        }
        assert!(matches!(brief_answer(&good, 7), Some(Ok(_))));
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&4000u32.to_ne_bytes()); // longer than the datagram
        assert_eq!(brief_answer(&lying, 7), Some(Err(None)));
        let mut short = good.clone();
        short[0..4].copy_from_slice(&3u32.to_ne_bytes()); // shorter than a header
        assert_eq!(brief_answer(&short, 7), Some(Err(None)));
        let mut attr = good;
        attr[NLMSG_HDR + IFINFOMSG..NLMSG_HDR + IFINFOMSG + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(brief_answer(&attr, 7), Some(Err(None)));
    }
}
