//! Change notifications: netlink sockets subscribed to the kernel's multicast groups, so the
//! reconcile loop learns of drift (a link, address or route removed by someone else, berth's
//! nft table flushed) within milliseconds instead of polling.
//!
//! * berthd's namespace: `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`.
//! * nftables: `NFNLGRP_NFTABLES` on a `NETLINK_NETFILTER` socket (what `nft monitor` reads):
//!   one message per committed change of any table of the namespace.
//! * every container namespace: links, addresses and `RTNLGRP_IPV4_ROUTE`/`IPV6_ROUTE` (a
//!   deleted default route), on ONE socket in berthd's namespace with
//!   `NETLINK_LISTEN_ALL_NSID` ([`NamespacesMonitor`]): the kernel delivers every namespace's
//!   notifications to it, each datagram tagged with the id that namespace has in berthd's
//!   ([`nsid_of`]). A socket per container namespace cost every rtnetlink notification of
//!   the machine a walk of all of them (`netlink_broadcast` goes through every subscribed
//!   socket of every namespace): with 1,000 containers, +4 ms of CPU per veth created, set up,
//!   addressed and deleted. [`Monitor::container`] (a socket inside one namespace, opened on
//!   a short-lived thread there, DESIGN.md §4) remains for tools and tests.
//!
//! The messages are not parsed: a notification only says "look again", and the pass that
//! follows observes and diffs as always (berth's own changes cause notifications too; their
//! pass finds nothing to do).

use std::path::Path;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

use crate::error::{KernelError, Result};

/// `NETLINK_NETFILTER` (linux/netlink.h).
const NETLINK_NETFILTER: isize = 12;
/// `NFNLGRP_NFTABLES` (linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
/// rtnetlink multicast groups (linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// Portids of berthd's own rtnetlink sockets: a notification carries the portid of the socket
/// whose request caused it (`nlmsg_pid`), so berth's own changes are told from anyone else's.
static OWN_PORTIDS: std::sync::Mutex<std::collections::VecDeque<u32>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// Records the portid of a socket berth sends requests on (a bounded ring: short-lived sockets
/// are forgotten after 1,024 newer ones, long after their notifications were read; a socket
/// kept for reuse is recorded again at each use).
pub fn remember_own_portid(portid: u32) {
    if portid == 0 {
        return;
    }
    if let Ok(mut q) = OWN_PORTIDS.lock() {
        // A socket used again (kept for reuse) moves to the young end instead of filling
        // the ring with copies of itself.
        if let Some(at) = q.iter().rposition(|p| *p == portid) {
            q.remove(at);
        } else if q.len() >= 1024 {
            q.pop_front();
        }
        q.push_back(portid);
    }
}

fn is_own_portid(portid: u32) -> bool {
    portid != 0
        && OWN_PORTIDS
            .lock()
            .map(|q| q.contains(&portid))
            .unwrap_or(false)
}

/// Receive buffer of a container namespace's monitor.
const CONTAINER_BUF: usize = 4096;

/// `RTM_NEWLINK` (linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;

/// `RTM_DELLINK` (linux/rtnetlink.h).
const RTM_DELLINK: u16 = 17;

/// `RTM_NEWADDR` (linux/rtnetlink.h).
const RTM_NEWADDR: u16 = 20;

/// Where `ifa_index` is in an address notification: after the `nlmsghdr` (16 bytes), the
/// `ifaddrmsg`'s family, prefixlen, flags, scope (linux/if_addr.h).
const IFA_INDEX_AT: usize = 16 + 4;

/// `RTM_NEWROUTE` (linux/rtnetlink.h).
const RTM_NEWROUTE: u16 = 24;

/// `RTM_DELROUTE` (linux/rtnetlink.h).
const RTM_DELROUTE: u16 = 25;

/// Where `rtm_protocol` is in a route notification: after the `nlmsghdr` (16 bytes), the
/// `rtmsg`'s family, dst_len, src_len, tos, table (linux/rtnetlink.h).
const RTM_PROTOCOL_AT: usize = 16 + 5;

/// `RTPROT_KERNEL` (linux/rtnetlink.h): a route the kernel made for an address.
const RTPROT_KERNEL: u8 = 2;

/// `IFLA_IFNAME` (linux/if_link.h).
const IFLA_IFNAME: u16 = 3;

/// The `IFLA_IFNAME` of one link notification (`nlmsghdr`, `ifinfomsg`, attributes).
fn link_name(msg: &[u8]) -> Option<&str> {
    let mut off = 32;
    while off + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[off], msg[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[off + 2], msg[off + 3]]) & 0x3fff;
        if len < 4 || off + len > msg.len() {
            return None;
        }
        if kind == IFLA_IFNAME {
            let value = &msg[off + 4..off + len];
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            return std::str::from_utf8(&value[..end]).ok();
        }
        off += (len + 3) & !3;
    }
    None
}

/// Whether a datagram of rtnetlink notifications holds one caused by someone else (a portid
/// that is not berth's, or 0: the kernel itself, e.g. a namespace's links going with it).
///
/// Except a link *change* by the kernel itself (`RTM_NEWLINK` with portid 0): a carrier or
/// operstate change, a bridge port entering the forwarding state. Those follow from a change
/// someone made (berth's own, or someone else's, which raised its own notification), never
/// drift by themselves; every container start caused two or three, and each made a pass over
/// every link of the host (a dump that costs the kernel O(links × namespaces)): with 1,000
/// containers, seconds of CPU per start. A link the kernel *removes* (`RTM_DELLINK`: a
/// container's namespace gone) still counts, unless `expected_gone` says berth knows it is
/// going (see [`Monitor::next_except`]).
#[cfg(test)]
fn has_foreign(buf: &[u8], expected_gone: &dyn Fn(&str) -> bool) -> bool {
    first_foreign(buf, expected_gone).is_some()
}

/// The first notification of a datagram that [`has_foreign`] counts as someone else's, said
/// for a debug log line (its type, portid and, for a link, its name): what woke a pass.
fn first_foreign(buf: &[u8], expected_gone: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut off = 0;
    let mut any = false;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return Some(format!("a cut datagram ({} bytes)", buf.len()));
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let pid = u32::from_ne_bytes([buf[off + 12], buf[off + 13], buf[off + 14], buf[off + 15]]);
        any = true;
        let kernel_link_change = pid == 0 && kind == RTM_NEWLINK;
        // A route the kernel itself adds or removes for an address (portid 0, `proto kernel`):
        // the prefix and local routes of an address added, removed or brought up or down with
        // its link. Like a carrier change, it follows from a change whose own notification
        // counts (berth's, or someone else's with its portid), never drift by itself. Each
        // connect and disconnect raised four in the container's namespace, and each woke a
        // pass over it that waited for RTNL behind the background veth deletion, holding the
        // daemon's lock 7–42 ms (stop 28). Every other route still counts: one someone adds
        // or deletes (their portid), and one the kernel learns from a packet (`proto ra`
        // from a router advertisement, `proto redirect`: a hostile neighbour's doing, which
        // the repair removes).
        let kernel_route_change = pid == 0
            && matches!(kind, RTM_NEWROUTE | RTM_DELROUTE)
            && buf.get(off + RTM_PROTOCOL_AT) == Some(&RTPROT_KERNEL);
        // The loopback addresses the kernel gives `lo` (ifindex 1 in every namespace) when it
        // goes up (`127.0.0.1/8`, `::1`: `RTM_NEWADDR`, portid 0): its consequence of `lo`'s
        // up, which berth makes itself in each namespace it creates. A start now watches its
        // namespace from the moment it takes it, and those two, still unread by the monitor
        // when the namespace was made on demand, each woke a pass over the container.
        let kernel_lo_address = pid == 0
            && kind == RTM_NEWADDR
            && buf
                .get(off + IFA_INDEX_AT..off + IFA_INDEX_AT + 4)
                .is_some_and(|b| b == 1u32.to_ne_bytes());
        let name = matches!(kind, RTM_NEWLINK | RTM_DELLINK)
            .then(|| link_name(&buf[off..off + len]))
            .flatten();
        let expected_removal = kind == RTM_DELLINK && name.is_some_and(expected_gone);
        if !kernel_link_change
            && !kernel_route_change
            && !kernel_lo_address
            && !expected_removal
            && !is_own_portid(pid)
        {
            return Some(format!(
                "message type {kind}, portid {pid}{}",
                name.map(|n| format!(", link {n}")).unwrap_or_default()
            ));
        }
        off += (len + 3) & !3;
    }
    (!any).then(|| "an empty datagram".to_string())
}

/// A subscribed netlink socket, registered with the tokio reactor.
pub struct Monitor {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

pub(crate) fn subscribed(protocol: isize, groups: &[u32], what: &str) -> Result<Socket> {
    let op = || format!("subscribing to {what} notifications");
    let mut sock = Socket::new(protocol).map_err(|e| KernelError::netlink(op(), e))?;
    // Groups 1–32 are joined by the bind itself (`nl_groups`, a bitmask: group g is bit
    // g − 1), the rest one `NETLINK_ADD_MEMBERSHIP` each. Every join takes the kernel's global
    // netlink table lock and walks every socket subscribed to the protocol
    // (`netlink_update_listeners`): with 1,000 containers' monitors, five setsockopt calls per
    // new monitor were the largest cost of a restart's namespace reads (10 % of their samples
    // in `netlink_setsockopt`); the bind does the walk once.
    let mask = groups
        .iter()
        .filter(|g| (1..=32).contains(*g))
        .fold(0u32, |m, g| m | (1 << (g - 1)));
    sock.bind(&SocketAddr::new(0, mask))
        .map_err(|e| KernelError::netlink(op(), e))?;
    for g in groups.iter().filter(|g| !(1..=32).contains(*g)) {
        sock.add_membership(*g)
            .map_err(|e| KernelError::netlink(op(), e))?;
    }
    sock.set_non_blocking(true)
        .map_err(|e| KernelError::netlink(op(), e))?;
    Ok(sock)
}

/// What berthd watches in a container's namespace: its links, addresses and routes.
const CONTAINER_GROUPS: &[u32] = &[
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_ROUTE,
];

/// A socket subscribed to the calling thread's namespace's link, address and route
/// notifications (the thread must be inside a container's namespace).
pub(crate) fn container_socket() -> Result<Socket> {
    subscribed(
        NETLINK_ROUTE,
        CONTAINER_GROUPS,
        "container link, address and route",
    )
}

impl Monitor {
    pub(crate) fn wrap(sock: Socket, what: &str) -> Result<Monitor> {
        Self::wrap_sized(sock, what, 64 * 1024)
    }

    /// [`Monitor::wrap`] with a receive buffer of `capacity` bytes: a datagram longer than that
    /// is cut, and a cut one always counts as someone else's change (see [`has_foreign`]).
    pub(crate) fn wrap_sized(sock: Socket, what: &str, capacity: usize) -> Result<Monitor> {
        // `AsyncFd::new` is deprecated for values that merely borrow an fd; here the AsyncFd
        // owns the socket and with it the fd, so no one else can close or reuse it while it is
        // registered (the soundness concern of tokio#8587). The replacement is `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(sock)
            .map_err(|e| KernelError::io(format!("registering the {what} monitor"), e))?;
        Ok(Monitor {
            fd,
            buf: Vec::with_capacity(capacity),
        })
    }

    /// Waits for datagrams, then returns every one queued, raw, and whether the kernel dropped
    /// some (`ENOBUFS`: the socket's buffer overran).
    pub(crate) async fn datagrams(&mut self) -> Result<(Vec<Vec<u8>>, bool)> {
        loop {
            let (mut out, mut lost) = (Vec::new(), false);
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| KernelError::io("waiting for netlink messages", e))?;
            loop {
                self.buf.clear();
                match guard.get_inner().recv(&mut self.buf, 0) {
                    Ok(_) => out.push(self.buf.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                    Err(e) => return Err(KernelError::io("reading netlink messages", e)),
                }
            }
            if !out.is_empty() || lost {
                return Ok((out, lost));
            }
        }
    }

    /// Links and addresses of the caller's namespace (berthd's). Must run inside the runtime.
    pub fn host() -> Result<Monitor> {
        let s = subscribed(
            NETLINK_ROUTE,
            &[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR],
            "link and address",
        )?;
        Self::wrap(s, "link")
    }

    /// nftables changes in the caller's namespace. Must run inside the runtime.
    pub fn nftables() -> Result<Monitor> {
        let s = subscribed(NETLINK_NETFILTER, &[NFNLGRP_NFTABLES], "nftables")?;
        // Only the commit messages are read (see `next_commits`): a socket filter drops the
        // rest in the kernel. Without it, a commit of 65,535 map elements (`-p 1-65535`)
        // queues one notification per element, overruns the socket (ENOBUFS, "lost") and makes
        // the loop re-read the whole table for nothing.
        socket2::SockRef::from(&s)
            .attach_filter(&newgen_filter())
            .map_err(|e| KernelError::io("filtering nftables notifications", e))?;
        Self::wrap(s, "nftables")
    }

    /// Links, addresses and routes inside the namespace at `netns`. Must run inside the runtime.
    pub async fn container(netns: &Path) -> Result<Monitor> {
        let sock = crate::netns::run_in_netns_async(netns, container_socket).await??;
        Self::wrap_container(sock)
    }

    /// Registers a socket made by [`container_socket`] (inside the runtime).
    pub(crate) fn wrap_container(sock: Socket) -> Result<Monitor> {
        // One per running container: 64 KiB each held 62 MiB of berthd's memory with 1,000
        // containers. A notification is one message of a few hundred bytes per datagram.
        Self::wrap_sized(sock, "container", CONTAINER_BUF)
    }

    /// For an nftables monitor: waits for commits and returns the pid of the process behind
    /// each (`NFT_MSG_NEWGEN`'s `NFTA_GEN_PROC_PID`, what `nft monitor` prints as "new
    /// generation N by process P"); `None` in the list when notifications were lost (`ENOBUFS`)
    /// and the committer is unknown.
    pub async fn next_commits(&mut self) -> Result<Vec<Option<u32>>> {
        loop {
            let (grams, lost) = self.datagrams().await?;
            let mut out: Vec<Option<u32>> = grams
                .iter()
                .flat_map(|g| newgen_pids(g))
                .map(Some)
                .collect();
            if lost {
                out.push(None);
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Waits until at least one notification caused by someone other than berth arrived, then
    /// drains what is queued. Returns how many such datagrams were read. An overrun (`ENOBUFS`:
    /// the kernel dropped notifications) counts as one: the caller looks again either way.
    pub async fn next(&mut self) -> Result<usize> {
        self.next_except(|_| false).await
    }

    /// [`Monitor::next`], where the removal (`RTM_DELLINK`) of a link for which
    /// `expected_gone(name)` holds is not someone else's change: a veth berth deletes in the
    /// background or one whose container exited (the kernel removes it with the namespace).
    /// On this kernel every link notification carries portid 0, berth's own deletions too, and
    /// each such removal (two messages: the link and its bridge port) made a pass over the
    /// host's links under the daemon's lock 15 ms later, which the next request waited for.
    pub async fn next_except(&mut self, expected_gone: impl Fn(&str) -> bool) -> Result<usize> {
        let mut n = 0;
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| KernelError::io("waiting for netlink notifications", e))?;
            loop {
                self.buf.clear();
                match guard.get_inner().recv(&mut self.buf, 0) {
                    Ok(_) => {
                        if let Some(why) = first_foreign(&self.buf, &expected_gone) {
                            // Which change makes the drift loop look (each look is a pass
                            // under the daemon's lock that requests then wait for).
                            tracing::debug!("host notification from someone else: {why}");
                            n += 1;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => n += 1,
                    Err(e) => return Err(KernelError::io("reading netlink notifications", e)),
                }
            }
            if n > 0 {
                return Ok(n);
            }
        }
    }
}

/// `SOL_NETLINK` and its option `NETLINK_LISTEN_ALL_NSID` (linux/netlink.h): the control
/// message that carries a notification's namespace id has the same level and type.
const SOL_NETLINK: i32 = 270;
const NETLINK_LISTEN_ALL_NSID: i32 = 8;

/// Receive buffer asked for the all-namespaces socket (the kernel caps it at `rmem_max`; an
/// overrun is reported as lost notifications, and every watched namespace is looked at).
const ALL_NAMESPACES_RCVBUF: usize = 4 << 20;

/// The link, address and route notifications of every namespace that has an id in berthd's
/// (see [`nsid_of`]), on one socket of berthd's namespace.
pub struct NamespacesMonitor {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
}

/// What [`NamespacesMonitor::next`] returns per datagram that someone else caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsNotice {
    /// A change in the namespace with this id.
    Nsid(i32),
    /// The kernel dropped notifications (the socket overran): any namespace may have changed.
    Lost,
}

impl NamespacesMonitor {
    /// Subscribes in the caller's namespace (berthd's) to every namespace's notifications.
    /// Must run inside the runtime.
    pub fn open() -> Result<NamespacesMonitor> {
        let what = "every namespace's link, address and route";
        let s = subscribed(NETLINK_ROUTE, CONTAINER_GROUPS, what)?;
        let op = || format!("subscribing to {what} notifications");
        s.set_listen_all_namespaces(true)
            .map_err(|e| KernelError::netlink(op(), e))?;
        if let Err(e) = s.set_rx_buf_sz(ALL_NAMESPACES_RCVBUF) {
            tracing::debug!("the all-namespaces monitor keeps its default buffer: {e}");
        }
        // See `Monitor::wrap_sized` for the deprecation.
        #[allow(deprecated)]
        let fd = AsyncFd::new(s).map_err(|e| KernelError::io(op(), e))?;
        Ok(NamespacesMonitor {
            fd,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits until at least one notification of another namespace caused by someone other
    /// than berth arrived (the same test as [`Monitor::next`]), then drains what is queued.
    /// Returns one notice per such datagram; berthd's own namespace's (no id) are skipped.
    pub async fn next(&mut self) -> Result<Vec<NsNotice>> {
        self.next_except(|_, _| false).await
    }

    /// [`NamespacesMonitor::next`], where the removal (`RTM_DELLINK`) of link `name` in the
    /// namespace with id `nsid` is not someone else's change when `expected_gone(nsid, name)`
    /// holds: a disconnected veth's container side, which the kernel deletes with its host side
    /// in berth's background deletion. (A retired, renamed interface is never someone else's.)
    pub async fn next_except(
        &mut self,
        expected_gone: impl Fn(i32, &str) -> bool,
    ) -> Result<Vec<NsNotice>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        loop {
            let mut out = Vec::new();
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| KernelError::io("waiting for netlink notifications", e))?;
            loop {
                let raw = guard.get_inner().as_raw_fd();
                let mut cmsg = nix::cmsg_space!(i32);
                let mut iov = [std::io::IoSliceMut::new(&mut self.buf)];
                let got = recvmsg::<()>(raw, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT);
                let msg = match got {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(nix::errno::Errno::ENOBUFS) => {
                        out.push(NsNotice::Lost);
                        continue;
                    }
                    Err(e) => {
                        return Err(KernelError::io(
                            "reading netlink notifications",
                            std::io::Error::from(e),
                        ))
                    }
                };
                let nsid = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::Unknown(u)
                            if u.cmsg_header.cmsg_level == SOL_NETLINK
                                && u.cmsg_header.cmsg_type == NETLINK_LISTEN_ALL_NSID =>
                        {
                            u.data_bytes
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .map(i32::from_ne_bytes)
                        }
                        _ => None,
                    })
                });
                // A datagram longer than the buffer was cut: it counts as someone else's.
                let cut = msg.flags.contains(MsgFlags::MSG_TRUNC);
                let len = msg.bytes.min(self.buf.len());
                let Some(nsid) = nsid.filter(|id| *id >= 0) else {
                    continue;
                };
                // A retired container interface (renamed by a disconnect, deleted in the
                // background) is berth's own removal: not drift in that namespace.
                let gone =
                    |name: &str| berth_plan::host::is_retired(name) || expected_gone(nsid, name);
                let why = if cut {
                    Some("a cut datagram".to_string())
                } else {
                    first_foreign(&self.buf[..len], &gone)
                };
                if let Some(why) = why {
                    tracing::debug!("notification from someone else in namespace {nsid}: {why}");
                    out.push(NsNotice::Nsid(nsid));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// The id that the network namespace of process `pid` has in the caller's namespace
/// (berthd's), given one (`RTM_NEWNSID`) if it has none yet: the id the
/// [`NamespacesMonitor`]'s datagrams carry. Creating a veth whose peer is in that namespace
/// already gave it one; the kernel forgets it when the namespace goes.
pub fn nsid_of(pid: i32) -> Result<i32> {
    let mut nl = crate::nl::SyncNetlink::open()?;
    nsid_on(&mut nl, pid)
}

/// [`nsid_of`] for many processes (a restart's adopted containers), on one socket.
pub fn nsids_of(pids: &[i32]) -> Vec<Result<i32>> {
    match crate::nl::SyncNetlink::open() {
        Ok(mut nl) => pids.iter().map(|&p| nsid_on(&mut nl, p)).collect(),
        Err(e) => pids
            .iter()
            .map(|_| Err(KernelError::invalid("namespace ids", e.to_string())))
            .collect(),
    }
}

/// [`nsid_of`] on `nl`, a socket of the caller's namespace.
pub(crate) fn nsid_on(nl: &mut crate::nl::SyncNetlink, pid: i32) -> Result<i32> {
    use rtnetlink::packet_route::nsid::NsidAttribute;
    let pid = u32::try_from(pid)
        .map_err(|_| KernelError::invalid(format!("process {pid}"), "not a pid"))?;
    nsid_for(nl, NsidAttribute::Pid(pid), &format!("process {pid}"))
}

/// The id of the network namespace mounted at `path` (an overlay network's, under berthd's
/// run directory) in the caller's namespace, given one if it has none yet: as [`nsid_of`],
/// by the namespace's file (`NETNSA_FD`) instead of a process.
pub fn nsid_of_path(path: &std::path::Path) -> Result<i32> {
    use rtnetlink::packet_route::nsid::NsidAttribute;
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)
        .map_err(|e| KernelError::io(format!("opening network namespace {}", path.display()), e))?;
    let fd = u32::try_from(file.as_raw_fd())
        .map_err(|_| KernelError::invalid(path.display().to_string(), "no descriptor"))?;
    let mut nl = crate::nl::SyncNetlink::open()?;
    nsid_for(
        &mut nl,
        NsidAttribute::Fd(fd),
        &format!("network namespace {}", path.display()),
    )
}

/// The namespace id of `target` (a `NETNSA_PID` or `NETNSA_FD` attribute) on `nl`.
fn nsid_for(
    nl: &mut crate::nl::SyncNetlink,
    target: rtnetlink::packet_route::nsid::NsidAttribute,
    what: &str,
) -> Result<i32> {
    use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    let get = |nl: &mut crate::nl::SyncNetlink| -> Result<i32> {
        let mut m = NsidMessage::default();
        m.attributes.push(target.clone());
        let answers = nl.request(RouteNetlinkMessage::GetNsId(m), crate::link::GET, || {
            format!("looking up the namespace id of {what}")
        })?;
        Ok(answers
            .iter()
            .find_map(|a| match a {
                RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap_or(-1))
    };
    let id = get(nl)?;
    if id >= 0 {
        return Ok(id);
    }
    let mut m = NsidMessage::default();
    m.attributes.push(target.clone());
    // -1: any free id.
    m.attributes.push(NsidAttribute::Id(-1));
    match nl.request(RouteNetlinkMessage::NewNsId(m), crate::link::CHANGE, || {
        format!("giving the namespace of {what} an id")
    }) {
        // EEXIST: it got one meanwhile (a veth created into it).
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        _ => {}
    }
    match get(nl)? {
        id if id >= 0 => Ok(id),
        _ => Err(KernelError::invalid(
            format!("the namespace of {what}"),
            "no namespace id after RTM_NEWNSID",
        )),
    }
}

/// The id berthd gives the first network namespace it makes ([`give_first_found_nsid`]); each
/// later one gets the next lower id.
const FIRST_FOUND_TOP: i32 = 1 << 30;
/// Ids below this are left to the kernel (which gives the lowest free id, from 0): berthd then
/// stops choosing, and the namespace gets an id when its first veth is made, as before.
const FIRST_FOUND_FLOOR: i32 = 1 << 29;
/// The next id [`give_first_found_nsid`] tries (`None`: not learnt yet from the ids in use).
static NEXT_FIRST_FOUND: std::sync::Mutex<Option<i32>> = std::sync::Mutex::new(None);

/// Gives the new network namespace `ns` an id in the namespace of `host` (a socket of berthd's
/// namespace) below every id berthd gave before (`RTM_NEWNSID` with `NETNSA_FD` and
/// `NETNSA_NSID`, what `ip netns set NAME ID` does), and returns it.
///
/// Why: the kernel finds a namespace's id by walking the ids of berthd's namespace in
/// ascending order until it meets it (`__peernet2id()`: `idr_for_each(&net->netns_ids,
/// net_eq_idr, peer)`), and it does so for every notification of a container's namespace
/// that berthd's all-namespace monitor hears (`do_one_broadcast()`: `peernet_has_id()`, then
/// `peernet2id()`) and for every message about a host veth (`rtnl_fill_link_netnsid()`). Left
/// to the kernel, a namespace gets the lowest free id when its first veth is made, so the
/// newest container's id is the highest and every walk went through all the others: 0.53 ms
/// of CPU per start at 1,000 containers (`bench/cli/scale_profile.sh`, `idr_for_each`).
/// Counting down, the walk meets the newest namespace after the few the kernel numbered
/// itself (other tools' namespaces, berth's overlay namespaces).
///
/// The first call starts below the lowest id of berthd's range already in use (containers
/// adopted after a restart keep theirs). An id someone else took meanwhile is skipped (a few
/// tries); an error leaves the namespace without an id, as it was before this existed.
pub(crate) fn give_first_found_nsid(
    host: &mut crate::nl::SyncNetlink,
    ns: &impl std::os::fd::AsRawFd,
) -> Result<i32> {
    use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    let what = "giving a new network namespace its id";
    let fd =
        u32::try_from(ns.as_raw_fd()).map_err(|_| KernelError::invalid(what, "no descriptor"))?;
    let mut next = match NEXT_FIRST_FOUND.lock() {
        Ok(n) => n,
        Err(p) => p.into_inner(),
    };
    let mut id = match *next {
        Some(id) => id,
        None => {
            let answers = host.request(
                RouteNetlinkMessage::GetNsId(NsidMessage::default()),
                crate::link::DUMP,
                || "listing the namespace ids in use".to_string(),
            )?;
            lowest_below(&answers, FIRST_FOUND_FLOOR, FIRST_FOUND_TOP)
        }
    };
    for _ in 0..16 {
        if id < FIRST_FOUND_FLOOR {
            break;
        }
        let mut m = NsidMessage::default();
        m.attributes.push(NsidAttribute::Fd(fd));
        m.attributes.push(NsidAttribute::Id(id));
        let sent = host.request(RouteNetlinkMessage::NewNsId(m), crate::link::CHANGE, || {
            format!("{what} ({id})")
        });
        *next = Some(id - 1);
        match sent {
            Ok(_) => return Ok(id),
            // EEXIST: the id is taken ("The specified nsid is already used"): the next one.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => id -= 1,
            Err(e) => return Err(e),
        }
    }
    Err(KernelError::invalid(what, "no free id in berth's range"))
}

/// The id below both `top` and the lowest id of `[floor, top]` among `answers` (an
/// `RTM_GETNSID` dump): where [`give_first_found_nsid`] goes on after a restart.
fn lowest_below(
    answers: &[rtnetlink::packet_route::RouteNetlinkMessage],
    floor: i32,
    top: i32,
) -> i32 {
    use rtnetlink::packet_route::nsid::NsidAttribute;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    answers
        .iter()
        .filter_map(|a| match a {
            RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) => Some(*id),
                _ => None,
            }),
            _ => None,
        })
        .filter(|id| (floor..=top).contains(id))
        .map(|id| id - 1)
        .min()
        .unwrap_or(top)
}

/// `NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN`: the message that closes every committed batch.
const NFT_NEWGEN: u16 = (10 << 8) | 15;
/// `NFTA_GEN_PROC_PID`.
const NFTA_GEN_PROC_PID: u16 = 2;

/// A classic BPF program that keeps a datagram only when its first message is
/// `NFT_MSG_NEWGEN`: nf_tables sends that message alone, in its own datagram, after each
/// commit (`nf_tables_gen_notify()`); object notifications come in datagrams of their own.
///
/// `ldh [4]` (the `nlmsg_type`, loaded big-endian by BPF, so compared with the host-order
/// value's bytes read big-endian); `jeq` → `ret 0xffff` (keep), else `ret 0` (drop).
fn newgen_filter() -> [socket2::SockFilter; 4] {
    const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let k = u32::from(u16::from_be_bytes(NFT_NEWGEN.to_ne_bytes()));
    [
        socket2::SockFilter::new(LD_H_ABS, 0, 0, 4),
        socket2::SockFilter::new(JEQ_K, 0, 1, k),
        socket2::SockFilter::new(RET_K, 0, 0, 0xffff),
        socket2::SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// The committing pids of the `NFT_MSG_NEWGEN` messages in one netlink datagram (header and
/// attribute layout of linux/netlink.h; nfnetlink's 4-byte `nfgenmsg` precedes the attributes,
/// which nf_tables writes big-endian).
fn newgen_pids(buf: &[u8]) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 16 || off + len > buf.len() {
            break;
        }
        if ty == NFT_NEWGEN {
            let mut a = off + 16 + 4;
            while a + 4 <= off + len {
                let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                let aty = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) & 0x3fff;
                if alen < 4 || a + alen > off + len {
                    break;
                }
                if aty == NFTA_GEN_PROC_PID && alen >= 8 {
                    pids.push(u32::from_be_bytes([
                        buf[a + 4],
                        buf[a + 5],
                        buf[a + 6],
                        buf[a + 7],
                    ]));
                }
                a += (alen + 3) & !3;
            }
        }
        off += (len + 3) & !3;
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket kept for reuse stays known as berth's however many short-lived sockets come
    /// after it, as long as it is recorded again at each use.
    #[test]
    fn a_reused_socket_stays_in_the_ring() {
        remember_own_portid(888_001);
        for round in 0..3u32 {
            for i in 0..1000u32 {
                remember_own_portid(900_000 + round * 1000 + i);
            }
            remember_own_portid(888_001);
        }
        assert!(is_own_portid(888_001));
        let copies = OWN_PORTIDS
            .lock()
            .map(|q| q.iter().filter(|p| **p == 888_001).count())
            .unwrap_or(0);
        assert_eq!(copies, 1);
    }

    /// After a restart the ids go on below the lowest one of berth's range still in use; ids
    /// outside the range (the kernel's own, from 0) do not count.
    #[test]
    fn first_found_ids_go_on_below_those_in_use() {
        use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
        let dump = |ids: &[i32]| -> Vec<RouteNetlinkMessage> {
            ids.iter()
                .map(|id| {
                    let mut m = NsidMessage::default();
                    m.attributes.push(NsidAttribute::Id(*id));
                    RouteNetlinkMessage::NewNsId(m)
                })
                .collect()
        };
        use rtnetlink::packet_route::RouteNetlinkMessage;
        assert_eq!(lowest_below(&[], 100, 200), 200);
        assert_eq!(lowest_below(&dump(&[0, 1, 7]), 100, 200), 200);
        assert_eq!(lowest_below(&dump(&[0, 200, 150, 180, 99]), 100, 200), 149);
        assert_eq!(lowest_below(&dump(&[201, 5000]), 100, 200), 200);
    }

    fn has_foreign_(buf: &[u8]) -> bool {
        has_foreign(buf, &|_| false)
    }

    /// A link notification (`nlmsghdr`, `ifinfomsg` of `family`, `IFLA_IFNAME`).
    fn link_msg(kind: u16, pid: u32, family: u8, name: &str) -> Vec<u8> {
        let mut m = vec![0u8; 32];
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[12..16].copy_from_slice(&pid.to_ne_bytes());
        m[16] = family;
        let attr_len = 4 + name.len() + 1;
        m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        m.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.resize((m.len() + 3) & !3, 0);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    /// What a disconnect's background veth deletion (or an exited container's namespace)
    /// raises on this kernel: the bridge port's and the link's `RTM_DELLINK`, portid 0.
    #[test]
    fn the_removal_of_a_link_berth_expects_gone_is_not_drift() {
        let expected = |n: &str| n == "vb0123456789ab";
        let mut gone = link_msg(RTM_DELLINK, 0, 7, "vb0123456789ab");
        gone.extend(link_msg(RTM_DELLINK, 0, 0, "vb0123456789ab"));
        assert_eq!(link_name(&gone), Some("vb0123456789ab"));
        assert!(!has_foreign(&gone, &expected));
        // Without the expectation it is looked at, as any removal.
        assert!(has_foreign(&gone, &|_| false));
        // Another link's removal in the same datagram still counts.
        let mut mixed = gone.clone();
        mixed.extend(link_msg(RTM_DELLINK, 0, 0, "berth-0123abcd"));
        assert!(has_foreign(&mixed, &expected));
        // Only removals: someone renaming or re-creating that link is a change to look at.
        assert!(has_foreign(
            &link_msg(RTM_NEWLINK, 4244, 0, "vb0123456789ab"),
            &expected
        ));
        // A removal without a name is looked at.
        let mut bare = vec![0u8; 32];
        bare[0..4].copy_from_slice(&32u32.to_ne_bytes());
        bare[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
        assert!(has_foreign(&bare, &expected));
    }

    /// A disconnect's retired container side going (its veth deleted in the background):
    /// not drift in the container's namespace; its `eth1` going would be.
    #[test]
    fn a_retired_container_interface_going_is_not_drift() {
        let retired = berth_plan::host::retired_name("0123456789ab");
        let gone = link_msg(RTM_DELLINK, 0, 0, &retired);
        assert!(!has_foreign(&gone, &berth_plan::host::is_retired));
        assert!(has_foreign(
            &link_msg(RTM_DELLINK, 0, 0, "eth1"),
            &berth_plan::host::is_retired
        ));
    }

    #[test]
    fn own_notifications_are_told_from_foreign_ones() {
        remember_own_portid(777_001);
        let msg = |pid: u32| {
            let mut m = vec![0u8; 20];
            m[0..4].copy_from_slice(&20u32.to_ne_bytes());
            m[12..16].copy_from_slice(&pid.to_ne_bytes());
            m
        };
        assert!(!has_foreign_(&msg(777_001)));
        assert!(has_foreign_(&msg(4242)));
        assert!(has_foreign_(&msg(0)));
        let mut both = msg(777_001);
        both.extend(msg(4242));
        assert!(has_foreign_(&both));
    }

    #[test]
    fn the_kernels_own_link_changes_are_not_drift_but_its_removals_are() {
        let msg = |kind: u16, pid: u32| {
            let mut m = vec![0u8; 20];
            m[0..4].copy_from_slice(&20u32.to_ne_bytes());
            m[4..6].copy_from_slice(&kind.to_ne_bytes());
            m[12..16].copy_from_slice(&pid.to_ne_bytes());
            m
        };
        // A carrier change, a bridge port forwarding: the kernel's consequence of a change.
        assert!(!has_foreign_(&msg(RTM_NEWLINK, 0)));
        let mut two = msg(RTM_NEWLINK, 0);
        two.extend(msg(RTM_NEWLINK, 0));
        assert!(!has_foreign_(&two));
        // A link gone with its namespace, an address the kernel changed: looked at.
        assert!(has_foreign_(&msg(RTM_DELLINK, 0)));
        assert!(has_foreign_(&msg(RTM_NEWADDR, 0)));
        // Someone's `ip link set`: looked at, whatever the kernel added to the datagram.
        assert!(has_foreign_(&msg(RTM_NEWLINK, 4243)));
        let mut mixed = msg(RTM_NEWLINK, 0);
        mixed.extend(msg(RTM_NEWLINK, 4243));
        assert!(has_foreign_(&mixed));
        // The prefix and local routes the kernel adds and removes with an address or a link
        // going up or down (`proto kernel`): its consequence of a change, not drift.
        // Someone's route, and one the kernel learned from a router advertisement
        // (`proto ra`, portid 0): looked at.
        let route = |kind: u16, pid: u32, proto: u8| {
            let mut m = msg(kind, pid);
            m.resize(28, 0);
            m[0..4].copy_from_slice(&28u32.to_ne_bytes());
            m[RTM_PROTOCOL_AT] = proto;
            m
        };
        const RTPROT_RA: u8 = 9;
        assert!(!has_foreign_(&route(RTM_NEWROUTE, 0, RTPROT_KERNEL)));
        assert!(!has_foreign_(&route(RTM_DELROUTE, 0, RTPROT_KERNEL)));
        assert!(has_foreign_(&route(RTM_NEWROUTE, 0, RTPROT_RA)));
        assert!(has_foreign_(&route(RTM_DELROUTE, 4244, RTPROT_KERNEL)));
        // The addresses the kernel gives `lo` (ifindex 1) as it goes up: not drift. One on
        // another link, or someone's on `lo`: looked at.
        let address = |pid: u32, index: u32| {
            let mut m = msg(RTM_NEWADDR, pid);
            m.resize(24, 0);
            m[0..4].copy_from_slice(&24u32.to_ne_bytes());
            m[IFA_INDEX_AT..IFA_INDEX_AT + 4].copy_from_slice(&index.to_ne_bytes());
            m
        };
        assert!(!has_foreign_(&address(0, 1)));
        assert!(has_foreign_(&address(0, 2)));
        assert!(has_foreign_(&address(4245, 1)));
    }

    #[test]
    fn newgen_pid_is_read_from_a_notification() {
        // nlmsghdr (len 32, type NEWGEN) + nfgenmsg + NFTA_GEN_ID + NFTA_GEN_PROC_PID (be32 4242).
        let mut m = Vec::new();
        m.extend_from_slice(&32u32.to_ne_bytes());
        m.extend_from_slice(&NFT_NEWGEN.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&[0u8; 4]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&1u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NFTA_GEN_PROC_PID.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_be_bytes());
        assert_eq!(m.len(), 36);
        m[0..4].copy_from_slice(&36u32.to_ne_bytes());
        assert_eq!(newgen_pids(&m), vec![4242]);
        assert!(newgen_pids(&m[..20]).is_empty());
    }
}
