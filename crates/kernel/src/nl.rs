//! A blocking rtnetlink socket for one-shot work in a namespace that a throwaway thread entered
//! (no dependency on the rest of the crate, so `netns` and `link` can both use it).

use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP,
};
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
