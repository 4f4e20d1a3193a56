//! Links, addresses and routes over rtnetlink, in-process (no `ip` processes).
//!
//! Two transports carry the same `netlink-packet-route` messages:
//! - [`Kernel`] keeps one cached async rtnetlink connection to *its* namespace (the daemon's
//!   "host" namespace), whose connection future runs on the tokio runtime;
//! - container namespaces get a per-call blocking [`SyncNetlink`] socket, opened and used on a
//!   short-lived thread that `setns`'d into the container namespace (DESIGN.md §4: never setns a
//!   runtime worker). The async caller awaits that thread without blocking its worker.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use berth_plan::model::{Announce, BridgePlan, EndpointPlan, RoutePlan};
use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use crate::error::{KernelError, Result};
use crate::gate::{LinkGate, GATE_WAIT};
use crate::netns;
use crate::nl::SyncNetlink;

/// How long bringing a container link up waits for a dying namespace to release its MAC.
const LINK_UP_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a new endpoint waits for an interface of its name that berth retired in the same
/// container namespace (a disconnect) to go: the kernel deletes it with its host side in the
/// background, ≈ 20 ms of RCU grace periods, seconds under load. Past it, the creation's
/// `EEXIST` is returned (and the pass observes).
const RETIRED_NAME_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a retire is remembered for [`RETIRED_NAME_WAIT`]: an `EEXIST` on a name retired
/// longer ago is not a deletion still under way.
const RETIRED_NAME_MEMORY: std::time::Duration = std::time::Duration::from_secs(5);

/// `RT_TABLE_MAIN`: the only routing table berth reads or writes.
pub(crate) const MAIN_TABLE: u8 = RouteHeader::RT_TABLE_MAIN;

/// Flags of a request that changes something and wants the kernel's ACK.
pub(crate) const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// Flags of a create-or-fail request.
pub(crate) const CREATE_EXCL: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
/// Flags of a create-or-replace request (idempotent adds).
pub(crate) const CREATE_REPLACE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
/// Flags of a dump.
pub(crate) const DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;
/// Flags of a single-object get (answered by one message, no ACK).
pub(crate) const GET: u16 = NLM_F_REQUEST;

/// One network interface, as [`Kernel::list_links`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, …); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// Index of the master device (the bridge of a bridge port).
    pub master: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// Executes link, address and route plans in one network namespace. Cheap to clone (an `Arc`),
/// `Send + Sync`.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

struct Inner {
    /// Cached rtnetlink connection to the bound namespace; its connection task runs on the
    /// runtime until every clone of the handle is dropped.
    handle: Handle,
    /// `None`: the namespace of the thread that called [`Kernel::new`].
    netns: Option<PathBuf>,
    /// Blocking rtnetlink sockets of this namespace an endpoint thread gave back, for the
    /// next one: opening one is a `socket` + `bind` (autobind: the kernel picks a portid in
    /// its hash of netlink sockets) + `connect` on the connect's critical path (50–200 µs,
    /// 2 ms seen when the nft transaction ran beside it).
    idle_sockets: std::sync::Mutex<Vec<SyncNetlink>>,
    /// The interface index of each VXLAN port whose remote entries were set, by name: every
    /// endpoint event of another host programs entries on one, and a lookup by name per event
    /// is a request of its own. A stale index (the port was deleted, or made again with a new
    /// index) fails with `ENODEV`, which drops it and looks the name up again (see
    /// [`Kernel::set_vxlan_entries`]); the kernel does not hand an index out again before
    /// its 2^31 have been used.
    vxlan_index: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Container interfaces retired here (a disconnect takes the container side down and the
    /// daemon deletes the veth in the background), by the namespace's identity and the name,
    /// with when: an endpoint made again under that name in that namespace right after
    /// (`network connect` right after `disconnect`) waits for that deletion instead of
    /// failing with `EEXIST` (see [`RETIRED_NAME_WAIT`]).
    retired: std::sync::Mutex<Vec<(NsKey, String, Instant)>>,
}

/// A network namespace's identity: the device and inode of its nsfs file (the same for every
/// path that names it, `/proc/PID/ns/net` or a bind mount).
type NsKey = (u64, u64);

/// The identity of the namespace `file` is open on.
fn ns_key(file: &File) -> Option<NsKey> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("netns", &self.inner.netns)
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// A kernel bound to the calling thread's network namespace (the daemon runs inside its
    /// "host" namespace). Must be called within a tokio runtime.
    pub async fn new() -> Result<Kernel> {
        let (mut conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| KernelError::netlink("opening rtnetlink connection", e))?;
        // Bound now (not at the first send) so its portid is known: the kernel's notifications
        // of the changes this socket makes carry it, and the drift monitor ignores them.
        {
            use rtnetlink::sys::AsyncSocket;
            let addr = conn
                .socket_mut()
                .socket_mut()
                .bind_auto()
                .map_err(|e| KernelError::netlink("binding the rtnetlink socket", e))?;
            crate::monitor::remember_own_portid(addr.port_number());
        }
        tokio::spawn(conn);
        Ok(Kernel {
            inner: Arc::new(Inner {
                handle,
                netns: None,
                idle_sockets: Default::default(),
                vxlan_index: Default::default(),
                retired: Default::default(),
            }),
        })
    }

    /// A kernel bound to the namespace at `netns`. The netlink socket is opened on a
    /// short-lived thread that entered that namespace and the runtime (the socket must be
    /// registered with the runtime's reactor); the connection task runs on the runtime.
    pub async fn new_in(netns: &Path) -> Result<Kernel> {
        let rt = tokio::runtime::Handle::current();
        let handle = netns::run_in_netns_async(netns, move || {
            let _entered = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection()?;
            rt.spawn(conn);
            Ok::<_, io::Error>(handle)
        })
        .await?
        .map_err(|e| {
            KernelError::netlink(
                format!("opening rtnetlink connection in {}", netns.display()),
                e,
            )
        })?;
        Ok(Kernel {
            inner: Arc::new(Inner {
                handle,
                netns: Some(netns.to_path_buf()),
                idle_sockets: Default::default(),
                vxlan_index: Default::default(),
                retired: Default::default(),
            }),
        })
    }

    /// The namespace this kernel is bound to, `None` for the caller's own.
    pub fn netns(&self) -> Option<&Path> {
        self.inner.netns.as_deref()
    }

    /// Sends one request on the cached connection and collects the answers: `Ok` once the
    /// kernel ACKs (or ends the dump); an `NLMSG_ERROR` with an errno becomes the error of `op`.
    pub(crate) async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.inner.handle.clone();
        let mut answers = match handle.request(req) {
            Ok(answers) => answers,
            Err(e) => return Err(KernelError::netlink(op(), io::Error::other(e.to_string()))),
        };
        let mut out = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(KernelError::netlink(op(), e.to_io()));
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
        }
        Ok(out)
    }

    /// `RTM_GETLINK` by name (`IFLA_IFNAME`); `ENODEV` when missing.
    pub(crate) async fn link_by_name(
        &self,
        name: &str,
        op: impl FnOnce() -> String,
    ) -> Result<LinkMessage> {
        let answers = self
            .request(RouteNetlinkMessage::GetLink(get_link_msg(name)), GET, op)
            .await?;
        first_link(answers, name)
    }

    /// Makes the bridge exist as planned: created if missing (kind `bridge`, with the fixed MAC
    /// of [`bridge_mac`]), its MTU set, its
    /// addresses exactly `plan.addrs` (missing ones added, others removed; IPv6 link-local
    /// addresses are kept since IPv6 neighbour discovery needs them), up. IPv6 addresses are
    /// added with `IFA_F_NODAD` so they are usable at once. Idempotent.
    pub async fn ensure_bridge(&self, plan: &BridgePlan) -> Result<()> {
        self.configure_bridge(plan, None, false).await
    }

    /// [`Kernel::ensure_bridge`] with berth's mark: a bridge created here gets `alias` (its
    /// `ifalias`) right after the `RTM_NEWLINK` that creates it with berth's owner MAC; an
    /// existing one gets it if it lacks it (`None`: the alias is left alone, as on an adopted
    /// bridge). With `keep_others`, addresses not in the plan are kept (an adopted bridge).
    pub async fn configure_bridge(
        &self,
        plan: &BridgePlan,
        alias: Option<&str>,
        keep_others: bool,
    ) -> Result<()> {
        let name = &plan.name;
        let link = match self
            .link_by_name(name, || format!("looking up bridge {name}"))
            .await
        {
            Ok(link) => {
                let kind = link_kind(&link);
                if kind.as_deref() != Some("bridge") {
                    return Err(KernelError::invalid(
                        format!("ensuring bridge {name}"),
                        format!(
                            "a link of kind {} with that name exists",
                            kind.as_deref().unwrap_or("none")
                        ),
                    ));
                }
                link
            }
            Err(e) if e.is_not_found() => {
                // RTM_NEWLINK kind bridge, created up with its MTU in one request.
                let mut msg = LinkMessage::default();
                msg.header.flags = LinkFlags::Up;
                msg.header.change_mask = LinkFlags::Up;
                msg.attributes = vec![
                    LinkAttribute::IfName(name.clone()),
                    LinkAttribute::Mtu(plan.mtu),
                    // A MAC of its own, set explicitly: otherwise the kernel gives the bridge
                    // the lowest MAC of its ports and changes it whenever that port leaves,
                    // and every container's ARP entry for the gateway goes stale for seconds
                    // (gateway traffic, the embedded DNS resolver included, times out).
                    LinkAttribute::Address(bridge_mac(name).to_vec()),
                    bridge_info(),
                ];
                self.request(RouteNetlinkMessage::NewLink(msg), CREATE_EXCL, || {
                    format!("creating bridge {name}")
                })
                .await?;
                tracing::debug!(bridge = %name, "created bridge");
                self.link_by_name(name, || format!("looking up bridge {name}"))
                    .await?
            }
            Err(e) => return Err(e),
        };
        let index = link.header.index;
        let mtu = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        });
        let have_alias = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfAlias(s) => Some(s.as_str()),
            _ => None,
        });
        let set_alias = alias.filter(|a| have_alias != Some(*a));
        // berth's own bridge (not an adopted one) runs with forward delay 0 and without
        // multicast snooping: the plan's `bridge_settings_drift` says whether this one does.
        let (forward_delay, mcast_snooping) = bridge_settings(&link);
        let read = berth_plan::host::ObservedLink {
            forward_delay,
            mcast_snooping,
            ..Default::default()
        };
        let set_settings = alias.is_some()
            && !keep_others
            && berth_plan::host::bridge_settings_drift(&read).is_some();
        if mtu != Some(plan.mtu)
            || !link.header.flags.contains(LinkFlags::Up)
            || set_alias.is_some()
            || set_settings
        {
            // One request: MTU, IFF_UP and IFLA_IFALIAS (berth's mark) of the existing bridge,
            // as RTM_SETLINK; with the bridge's settings to set, as an RTM_NEWLINK without
            // NLM_F_CREATE on its index (RTM_SETLINK ignores IFLA_LINKINFO; on an existing
            // link RTM_NEWLINK runs the kind's `changelink`, then the same `do_setlink`).
            let mut msg = link_up_msg(index);
            msg.attributes.push(LinkAttribute::Mtu(plan.mtu));
            if let Some(a) = set_alias {
                msg.attributes.push(LinkAttribute::IfAlias(a.to_string()));
            }
            let req = if set_settings {
                msg.attributes.push(bridge_info());
                RouteNetlinkMessage::NewLink(msg)
            } else {
                RouteNetlinkMessage::SetLink(msg)
            };
            self.request(req, CHANGE, || {
                format!("setting mtu {} and up on bridge {name}", plan.mtu)
            })
            .await?;
        }

        // Addresses: RTM_GETADDR dump, then RTM_DELADDR the unwanted, RTM_NEWADDR the missing.
        let existing: Vec<(IpAddr, u8, AddressMessage)> = self
            .dump_addrs()
            .await?
            .into_iter()
            .filter(|a| a.header.index == index)
            .filter_map(|a| Some((address_of(&a)?, a.header.prefix_len, a)))
            .collect();
        for (ip, prefix, msg) in &existing {
            let wanted = plan
                .addrs
                .iter()
                .any(|n| n.addr() == *ip && n.prefix_len() == *prefix);
            if wanted || keep_others || is_ipv6_link_local(ip) {
                continue;
            }
            self.request(
                RouteNetlinkMessage::DelAddress(del_addr_msg(msg)),
                CHANGE,
                || format!("removing address {ip}/{prefix} from bridge {name}"),
            )
            .await?;
        }
        for net in &plan.addrs {
            let present = existing
                .iter()
                .any(|(ip, prefix, _)| net.addr() == *ip && net.prefix_len() == *prefix);
            if present {
                continue;
            }
            self.request(
                RouteNetlinkMessage::NewAddress(addr_msg(index, net)),
                CREATE_REPLACE,
                || format!("adding address {net} to bridge {name}"),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes a link by name (`RTM_DELLINK` with `IFLA_IFNAME`). `Ok` when it does not exist.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        match self
            .request(
                RouteNetlinkMessage::DelLink(get_link_msg(name)),
                CHANGE,
                || format!("deleting link {name}"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`Kernel::delete_link`] from the calling thread, on a blocking socket of this kernel's
    /// namespace (one kept for the next caller): for a thread that may wait, since a veth's
    /// deletion holds its sender until the kernel has unregistered it. `Ok` when missing.
    pub fn delete_link_blocking(&self, name: &str) -> Result<()> {
        let mut nl = self.sync_socket()?;
        let result = nl.request(
            RouteNetlinkMessage::DelLink(get_link_msg(name)),
            CHANGE,
            || format!("deleting link {name}"),
        );
        self.keep_socket(nl);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The name of the link with index `index` (one `RTM_GETLINK`, not a dump).
    pub async fn link_name(&self, index: u32) -> Result<String> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let answers = self
            .request(RouteNetlinkMessage::GetLink(msg), GET, || {
                format!("looking up link {index}")
            })
            .await?;
        Ok(link_info(&first_link(answers, &index.to_string())?).name)
    }

    /// Every link of the namespace (`RTM_GETLINK` dump).
    pub async fn list_links(&self) -> Result<Vec<LinkInfo>> {
        Ok(self.dump_link_msgs().await?.iter().map(link_info).collect())
    }

    /// `RTM_GETLINK` dump: every link message of this namespace.
    async fn dump_link_msgs(&self) -> Result<Vec<LinkMessage>> {
        Ok(self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                DUMP,
                || "listing links".to_string(),
            )
            .await?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// `RTM_GETADDR` dump: every address message of this namespace.
    async fn dump_addrs(&self) -> Result<Vec<AddressMessage>> {
        Ok(self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                DUMP,
                || "listing addresses".to_string(),
            )
            .await?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Attaches a container namespace to a bridge, as planned.
    ///
    /// One `RTM_NEWLINK` creates the veth pair: the host side `plan.host_ifname` (MTU, enslaved
    /// to `plan.bridge` with `IFLA_MASTER`, up) and its peer created directly inside the
    /// container namespace (`IFLA_NET_NS_FD`) as `plan.ifname` with MTU and MAC, so no
    /// `eth0` ever exists in this namespace. Then, when `plan.isolated`, `IFLA_BRPORT_ISOLATED`
    /// on the host side; then, in the container namespace, on a thread that entered it while the
    /// veth was being created: its addresses (IPv6 with `IFA_F_NODAD`), the peer up,
    /// `plan.routes`, `lo` up, then, when `plan.announce` asks for it, the announcement knobs
    /// (`arp_notify`, `ndisc_notify`) and, once the bridge port forwards, one announcement of
    /// those addresses (the peer's MAC set to itself).
    ///
    /// Any failure after the veth exists deletes it again (the peer goes with it) and returns
    /// the error of the failed step. (If the future is dropped midway, nothing is rolled back.)
    pub async fn setup_endpoint(&self, plan: &EndpointPlan) -> Result<()> {
        self.setup_endpoint_marked(plan, None).await
    }

    /// [`Kernel::setup_endpoint`] with berth's marks on the host side: the owner MAC of its
    /// name in the creating `RTM_NEWLINK` (atomic), and `alias` as its `ifalias` in the request
    /// that sets the bridge-port flags (no extra round trip).
    pub async fn setup_endpoint_marked(
        &self,
        plan: &EndpointPlan,
        alias: Option<&str>,
    ) -> Result<()> {
        self.setup_endpoint_gated(plan, alias, None).await
    }

    /// [`Kernel::setup_endpoint_marked`], with the container side brought up only once `gate`
    /// is open (and rolled back if it opens with an error): see [`crate::gate`].
    pub async fn setup_endpoint_gated(
        &self,
        plan: &EndpointPlan,
        alias: Option<&str>,
        gate: Option<LinkGate>,
    ) -> Result<()> {
        let what = || {
            format!(
                "setting up endpoint {} on bridge {}",
                plan.host_ifname, plan.bridge
            )
        };
        let started = std::time::Instant::now();
        let mac = parse_mac(&plan.mac).map_err(|e| e.context(&what()))?;
        let netns_path = PathBuf::from(&plan.netns);
        let ns = File::open(&netns_path).map_err(|e| {
            KernelError::io(format!("opening network namespace {}", plan.netns), e).context(&what())
        })?;
        let host_nl = self.sync_socket().map_err(|e| e.context(&what()))?;
        let key = ns_key(&ns);
        let retired_peer = self.retired_lately(key, &plan.ifname, false);
        let announcing = !plan.announce.is_silent();
        let side = ContainerSide {
            netns: netns_path,
            disable_ipv6: plan.disable_ipv6,
            announce: plan.announce,
            // A veth's announcement at link up reaches a bridge port that is still disabled
            // (see `ContainerSide::configure`): announce again once the port forwards.
            reannounce: announcing,
            host_up: Some(plan.host_ifname.clone()),
            ifname: plan.ifname.clone(),
            addrs: plan.addrs.clone(),
            routes: plan.routes.clone(),
            gate,
        };
        let host = HostVeth {
            plan: plan.clone(),
            mac,
            alias: alias.map(str::to_string),
            retired_peer,
            host_ns: self.netns().map(Path::to_path_buf),
        };
        let host_ifname = plan.host_ifname.clone();
        let (host_nl, times) = endpoint_on_thread(
            "berth-endpoint",
            host_nl,
            ns,
            side,
            move |nl, ns, created| host.create(nl, ns, created),
            move |nl| delete_quietly(nl, &host_ifname),
        )
        .await
        .map_err(|e| e.context(&what()))?;
        self.keep_socket(host_nl);
        if retired_peer {
            self.retired_lately(key, &plan.ifname, true);
        }
        tracing::debug!(
            veth = %plan.host_ifname,
            bridge = %plan.bridge,
            elapsed_us = started.elapsed().as_micros() as u64,
            thread_start_us = times.start_us,
            host_us = times.host_us,
            container_us = times.container_us,
            gate_wait_us = times.gate_wait_us,
            "endpoint set up"
        );
        Ok(())
    }

    /// A blocking rtnetlink socket in this kernel's namespace (opened by a thread that entered
    /// it when that is not the caller's): it stays bound there when its user moves on into a
    /// container namespace.
    pub(crate) fn sync_socket(&self) -> Result<SyncNetlink> {
        let idle = self
            .inner
            .idle_sockets
            .lock()
            .ok()
            .and_then(|mut v| v.pop());
        if let Some(nl) = idle {
            // The monitor tells berth's own notifications by portid, from a bounded ring of
            // recent sockets: a long-lived socket must stay in it.
            crate::monitor::remember_own_portid(nl.portid());
            return Ok(nl);
        }
        match self.netns() {
            None => SyncNetlink::open(),
            Some(ns) => netns::run_in_netns(ns, SyncNetlink::open).and_then(|r| r),
        }
    }

    /// The cached index of VXLAN port `name` (see `Inner::vxlan_index`).
    pub(crate) fn cached_vxlan_index(&self, name: &str) -> Option<u32> {
        self.inner.vxlan_index.lock().ok()?.get(name).copied()
    }

    /// Caches the index of VXLAN port `name`, or drops it (`None`).
    pub(crate) fn cache_vxlan_index(&self, name: &str, index: Option<u32>) {
        if let Ok(mut m) = self.inner.vxlan_index.lock() {
            match index {
                Some(i) => m.insert(name.to_string(), i),
                None => m.remove(name),
            };
        }
    }

    /// Gives a socket from [`Kernel::sync_socket`] back after a request sequence that ended
    /// well (after an error it is dropped: an unread answer could be left in it). A few are
    /// kept, for endpoints made at the same time.
    pub(crate) fn keep_socket(&self, nl: SyncNetlink) {
        if let Ok(mut v) = self.inner.idle_sockets.lock() {
            if v.len() < 4 {
                v.push(nl);
            }
        }
    }

    /// Interface `ifname` of the namespace `key` was retired now (see `Inner::retired`).
    fn note_retired(&self, key: NsKey, ifname: &str) {
        if let Ok(mut v) = self.inner.retired.lock() {
            let now = Instant::now();
            v.retain(|(_, _, at)| now.saturating_duration_since(*at) < RETIRED_NAME_MEMORY);
            v.retain(|(k, n, _)| !(*k == key && n == ifname));
            v.push((key, ifname.to_string(), now));
        }
    }

    /// Whether interface `ifname` of the namespace `key` was retired lately; `forget`: the
    /// name is in use again (a new endpoint has it), so the entry goes.
    fn retired_lately(&self, key: Option<NsKey>, ifname: &str, forget: bool) -> bool {
        let (Some(key), Ok(mut v)) = (key, self.inner.retired.lock()) else {
            return false;
        };
        let now = Instant::now();
        let found = v.iter().any(|(k, n, at)| {
            *k == key && n == ifname && now.saturating_duration_since(*at) < RETIRED_NAME_MEMORY
        });
        if forget {
            v.retain(|(k, n, _)| !(*k == key && n == ifname));
        }
        found
    }

    /// Deletes an endpoint's host-side veth (the peer goes with it). `Ok` when missing.
    pub async fn teardown_endpoint(&self, host_ifname: &str) -> Result<()> {
        match self
            .request(
                RouteNetlinkMessage::DelLink(get_link_msg(host_ifname)),
                CHANGE,
                || format!("deleting veth {host_ifname}"),
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(veth = %host_ifname, "endpoint torn down");
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Inside the container namespace at `netns`: removes every default route (IPv4 and IPv6,
    /// main table), then adds `routes` (used when the gateway endpoint changes).
    pub async fn replace_routes(&self, netns: &Path, routes: &[RoutePlan]) -> Result<()> {
        let routes = routes.to_vec();
        let shown = netns.display().to_string();
        netns::run_in_netns_async(netns, move || -> Result<()> {
            let mut nl = SyncNetlink::open()?;
            let answers = nl.request(
                RouteNetlinkMessage::GetRoute(RouteMessage::default()),
                DUMP,
                || "listing routes".to_string(),
            )?;
            for m in answers {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if route_table(&r) != u32::from(MAIN_TABLE)
                    || r.header.destination_prefix_length != 0
                {
                    continue;
                }
                let mut del = RouteMessage::default();
                del.header = r.header.clone();
                del.attributes = r
                    .attributes
                    .iter()
                    .filter(|a| {
                        matches!(
                            a,
                            RouteAttribute::Table(_)
                                | RouteAttribute::Gateway(_)
                                | RouteAttribute::Oif(_)
                                | RouteAttribute::Priority(_)
                        )
                    })
                    .cloned()
                    .collect();
                match nl.request(RouteNetlinkMessage::DelRoute(del), CHANGE, || {
                    "removing default route".to_string()
                }) {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            for route in &routes {
                nl.request(
                    RouteNetlinkMessage::NewRoute(route_msg(route, None)?),
                    CREATE_REPLACE,
                    || format!("adding route {} via {}", route.dst, route.via),
                )?;
            }
            Ok(())
        })
        .await?
        .map_err(|e| e.context(&format!("replacing routes in {shown}")))
    }

    /// The named links (one `RTM_GETLINK` each; missing ones left out), the links they name as
    /// master if not among them (by index), and the address dump. For a scoped pass: a few
    /// round trips instead of a dump of every veth on the host.
    pub(crate) async fn get_links_and_addrs(
        &self,
        names: &BTreeSet<String>,
    ) -> Result<(Vec<LinkMessage>, Vec<AddressMessage>)> {
        let mut links = Vec::new();
        for name in names {
            match self
                .link_by_name(name, || format!("looking up {name}"))
                .await
            {
                Ok(l) => links.push(l),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let have: BTreeSet<u32> = links.iter().map(|l| l.header.index).collect();
        let masters: BTreeSet<u32> = links
            .iter()
            .filter_map(|l| {
                l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Controller(m) => Some(*m),
                    _ => None,
                })
            })
            .filter(|m| !have.contains(m))
            .collect();
        for index in masters {
            let mut msg = LinkMessage::default();
            msg.header.index = index;
            match self
                .request(RouteNetlinkMessage::GetLink(msg), GET, || {
                    format!("looking up link {index}")
                })
                .await
                .and_then(|a| first_link(a, &format!("#{index}")))
            {
                Ok(l) => links.push(l),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let indices: Vec<u32> = links.iter().map(|l| l.header.index).collect();
        let addrs = match self.netns() {
            // berthd's own namespace: the addresses of these links only.
            None => addrs_of(&indices)?,
            Some(_) => self.dump_addrs().await?,
        };
        Ok((links, addrs))
    }

    /// Link and address dumps of this namespace (`RTM_GETLINK`, `RTM_GETADDR`).
    pub(crate) async fn dump_links_and_addrs(
        &self,
    ) -> Result<(Vec<LinkMessage>, Vec<AddressMessage>)> {
        Ok((self.dump_link_msgs().await?, self.dump_addrs().await?))
    }

    /// Makes an existing host-side veth a port of `bridge` again: `RTM_SETLINK` with
    /// `IFLA_MASTER`, `IFF_UP` and `IFLA_IFALIAS`, then (the port must exist before its flags
    /// can be set) `RTM_NEWLINK` with the bridge-port data: hairpin on, isolated as planned.
    pub async fn attach_port(
        &self,
        veth: &str,
        bridge: &str,
        isolated: bool,
        alias: &str,
    ) -> Result<()> {
        let what = || format!("re-attaching veth {veth} to bridge {bridge}");
        let br = self
            .link_by_name(bridge, || format!("looking up bridge {bridge}"))
            .await
            .map_err(|e| e.context(&what()))?;
        let link = self
            .link_by_name(veth, || format!("looking up veth {veth}"))
            .await
            .map_err(|e| e.context(&what()))?;
        let mut msg = link_up_msg(link.header.index);
        msg.attributes
            .push(LinkAttribute::Controller(br.header.index));
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(RouteNetlinkMessage::SetLink(msg), CHANGE, what)
            .await?;
        let mut port = vec![InfoBridgePort::HairpinMode(true)];
        port.push(InfoBridgePort::Isolated(isolated));
        let mut msg = get_link_msg(veth);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(port)),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), CHANGE, || {
            format!("setting bridge-port flags on {veth}")
        })
        .await
        .map(drop)
    }

    /// Removes `addrs` from `link` (`RTM_DELADDR`); addresses it does not have are skipped.
    pub async fn remove_addrs(&self, link_name: &str, addrs: &[IpNet]) -> Result<()> {
        let link = match self
            .link_by_name(link_name, || format!("looking up {link_name}"))
            .await
        {
            Ok(l) => l,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        for net in addrs {
            let msg = addr_msg(link.header.index, net);
            match self
                .request(RouteNetlinkMessage::DelAddress(msg), CHANGE, || {
                    format!("removing address {net} from {link_name}")
                })
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Inside the container namespace at `netns`: takes `ifname` down (`RTM_SETLINK` without
    /// `IFF_UP`: its routes go with it), removes every address it has except IPv6 link-local
    /// ones (`RTM_DELADDR`) and, with `rename_to`, renames it (`RTM_SETLINK` with
    /// `IFLA_IFNAME`, allowed on a link that is down). `Ok` when the interface or the namespace
    /// is gone.
    pub async fn retire_container_side(
        &self,
        netns: &Path,
        ifname: &str,
        rename_to: Option<&str>,
    ) -> Result<()> {
        let ifname = ifname.to_string();
        if rename_to.is_none() {
            // Keeps its name until the background deletion: a new endpoint of that name
            // waits for it (see `HostVeth::create`).
            if let Some(key) = File::open(netns).ok().as_ref().and_then(ns_key) {
                self.note_retired(key, &ifname);
            }
        }
        let rename_to = rename_to.map(str::to_string);
        let shown = netns.display().to_string();
        let result = netns::run_in_netns_async(netns, move || -> Result<()> {
            let mut nl = SyncNetlink::open()?;
            let link = match nl.link_brief(get_link_msg(&ifname), true, || {
                format!("looking up {ifname}")
            }) {
                Ok(l) => l,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e),
            };
            let index = link.index;
            let mut down = LinkMessage::default();
            down.header.index = index;
            down.header.change_mask = LinkFlags::Up;
            nl.request(RouteNetlinkMessage::SetLink(down), CHANGE, || {
                format!("taking {ifname} down")
            })?;
            let addrs = nl.request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                DUMP,
                || "listing addresses".to_string(),
            )?;
            for m in addrs {
                let RouteNetlinkMessage::NewAddress(a) = m else {
                    continue;
                };
                if a.header.index != index
                    || address_of(&a).is_none_or(|ip| is_ipv6_link_local(&ip))
                {
                    continue;
                }
                match nl.request(
                    RouteNetlinkMessage::DelAddress(del_addr_msg(&a)),
                    CHANGE,
                    || format!("removing an address of {ifname}"),
                ) {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(to) = rename_to {
                let mut rename = LinkMessage::default();
                rename.header.index = index;
                rename.attributes.push(LinkAttribute::IfName(to.clone()));
                nl.request(RouteNetlinkMessage::SetLink(rename), CHANGE, || {
                    format!("renaming {ifname} to {to}")
                })?;
            }
            Ok(())
        })
        .await;
        match result {
            Ok(inner) => inner.map_err(|e| e.context(&format!("retiring an endpoint in {shown}"))),
            // The container is gone: so is its side of the endpoint.
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Inside the container namespace at `netns`: brings `ifname` up and adds `addrs`
    /// (`RTM_NEWADDR` with replace: the ones it has are left as they are). When that changed
    /// something (the link was down or lacked an address) and `announce` asks for it, the
    /// interface announces its addresses as a new endpoint does (see
    /// `ContainerSide::configure`): `arp_notify` / `ndisc_notify` set, then, once the host
    /// side's bridge port forwards (one `RTM_GETLINK` of `host_ifname` in this namespace runs
    /// the pending linkwatch work for it), an `RTM_SETLINK` setting the interface's MAC to itself, whose `NETDEV_CHANGEADDR`
    /// makes the kernel send a gratuitous ARP per IPv4 address and an unsolicited NA per IPv6
    /// one. Without it a repaired or reconnected interface stays silent: an address added to
    /// an up link is announced by nothing, and the bridge and the neighbours keep what they
    /// learned (or not) before.
    pub async fn configure_container_side(
        &self,
        netns: &Path,
        ifname: &str,
        addrs: &[IpNet],
        announce: Announce,
        host_ifname: Option<&str>,
    ) -> Result<()> {
        let what = || format!("configuring the container side in {}", netns.display());
        let changed_mac = {
            let addrs = addrs.to_vec();
            let ifname = ifname.to_string();
            netns::run_in_netns_async(netns, move || -> Result<Option<(u32, Vec<u8>)>> {
                let mut nl = SyncNetlink::open()?;
                let link = nl.link_brief(get_link_msg(&ifname), true, || {
                    format!("looking up {ifname}")
                })?;
                let index = link.index;
                let was_up = link.up;
                // RTM_GETADDR dump: which of `addrs` the interface has already.
                let have: BTreeSet<IpAddr> = nl
                    .request(
                        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                        DUMP,
                        || format!("listing the addresses of {ifname}"),
                    )?
                    .into_iter()
                    .filter_map(|m| match m {
                        RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                            address_of(&a)
                        }
                        _ => None,
                    })
                    .collect();
                let missing = addrs.iter().any(|a| !have.contains(&a.addr()));
                if announce.arp && (missing || !was_up) {
                    write_conf(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"))?;
                }
                if announce.na && (missing || !was_up) {
                    write_conf(&format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"))?;
                }
                for net in &addrs {
                    nl.request(
                        RouteNetlinkMessage::NewAddress(addr_msg(index, net)),
                        CREATE_REPLACE,
                        || format!("adding address {net} to {ifname}"),
                    )?;
                }
                if !was_up {
                    nl.set_link_up(index, &format!("bringing up {ifname}"))?;
                }
                Ok(link
                    .mac
                    .filter(|_| (missing || !was_up) && !announce.is_silent())
                    .map(|m| (index, m)))
            })
            .await?
            .map_err(|e| e.context(&what()))?
        };
        let Some((index, mac)) = changed_mac else {
            return Ok(());
        };
        if let Some(host) = host_ifname {
            // RTM_GETLINK of the host side: rtnl_getlink syncs linkwatch for it, so a port
            // whose carrier just came back forwards before the announcement reaches it.
            self.link_by_name(host, || format!("looking up {host}"))
                .await
                .map_err(|e| e.context(&what()))?;
        }
        let ifname = ifname.to_string();
        netns::run_in_netns_async(netns, move || -> Result<()> {
            announce_again(&mut SyncNetlink::open()?, index, mac, &ifname)
        })
        .await?
        .map_err(|e| e.context(&what()))
    }

    /// Sets an endpoint's MTU on both ends: `RTM_SETLINK` with `IFLA_MTU` on the host side
    /// `veth`, then on `ifname` inside the container namespace at `netns` (a veth's two ends
    /// have their own MTUs). `Ok` when the container's namespace is gone.
    pub async fn set_endpoint_mtu(
        &self,
        veth: &str,
        netns: &Path,
        ifname: &str,
        mtu: u32,
    ) -> Result<()> {
        let mtu_msg = |name: &str| {
            let mut msg = get_link_msg(name);
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            RouteNetlinkMessage::SetLink(msg)
        };
        self.request(mtu_msg(veth), CHANGE, || {
            format!("setting mtu {mtu} on {veth}")
        })
        .await?;
        let name = ifname.to_string();
        let msg = mtu_msg(ifname);
        let result = netns::run_in_netns_async(netns, move || -> Result<()> {
            SyncNetlink::open()?
                .request(msg, CHANGE, || format!("setting mtu {mtu} on {name}"))
                .map(drop)
        })
        .await;
        match result {
            Ok(inner) => inner.map_err(|e| {
                e.context(&format!(
                    "setting the container side's mtu in {}",
                    netns.display()
                ))
            }),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every prefix routed in this namespace's main table, both families (for picking free
    /// subnets). Deduplicated.
    pub async fn routes(&self) -> Result<Vec<IpNet>> {
        let out: BTreeSet<IpNet> = self
            .main_routes()
            .await?
            .iter()
            .filter_map(MainRoute::net)
            .map(|n| n.trunc())
            .collect();
        Ok(out.into_iter().collect())
    }

    /// Every route of this namespace's main table, both families (one `RTM_GETROUTE` dump).
    pub(crate) async fn main_routes(&self) -> Result<Vec<MainRoute>> {
        let answers = self
            .request(
                RouteNetlinkMessage::GetRoute(RouteMessage::default()),
                DUMP,
                || "listing routes".to_string(),
            )
            .await?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if route_table(&r) != u32::from(MAIN_TABLE) {
                continue;
            }
            let mut route = MainRoute {
                family: r.header.address_family,
                prefix_len: r.header.destination_prefix_length,
                oif: None,
                dst: None,
                via: None,
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                        route.dst = Some(IpAddr::V4(*ip))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => {
                        route.dst = Some(IpAddr::V6(*ip))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => {
                        route.via = Some(IpAddr::V4(*ip))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => {
                        route.via = Some(IpAddr::V6(*ip))
                    }
                    _ => {}
                }
            }
            out.push(route);
        }
        Ok(out)
    }

    /// Every address of every link in this namespace, as (interface name, address).
    pub async fn link_addrs(&self) -> Result<Vec<(String, IpAddr)>> {
        let names: HashMap<u32, String> = self
            .list_links()
            .await?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        Ok(self
            .dump_addrs()
            .await?
            .into_iter()
            .filter_map(|a| {
                let ip = address_of(&a)?;
                let name = names
                    .get(&a.header.index)
                    .cloned()
                    .unwrap_or_else(|| format!("if{}", a.header.index));
                Some((name, ip))
            })
            .collect())
    }
}

/// The host half of a veth endpoint, run by [`endpoint_on_thread`] on a socket in the host's
/// namespace.
struct HostVeth {
    plan: EndpointPlan,
    mac: Option<Vec<u8>>,
    alias: Option<String>,
    /// berth retired an interface named like the peer in its namespace lately: an `EEXIST`
    /// is that interface still waiting for its deletion, which the creation waits for.
    retired_peer: bool,
    /// The namespace the host side is made in when it is not the thread's own (the kernel's
    /// [`Kernel::netns`]: an overlay network's namespace, a test's): entered for the host
    /// side's sysctl, which `/proc/sys/net` resolves in the writing thread's namespace.
    host_ns: Option<PathBuf>,
}

impl HostVeth {
    /// Looks up the bridge and creates the veth with its peer in the container namespace `ns`
    /// (then `created`), and configures its host side ([`HostVeth::configure`]).
    fn create(&self, nl: &mut SyncNetlink, ns: &File, created: &mut bool) -> Result<()> {
        let plan = &self.plan;
        // Its index alone, by `SIOCGIFINDEX` ([`SyncNetlink::index_of`]): an `RTM_GETLINK`
        // of the bridge ran its pending link-watch event first, ≈ 0.2 ms of this thread's
        // (perf) on a connect within a second of the bridge's last carrier change (the
        // previous disconnect of its only container: the kernel holds such an event up to 1 s).
        let bridge = nl.index_of(&plan.bridge, || {
            format!("looking up bridge {}", plan.bridge)
        })?;
        // RTM_NEWLINK kind veth, peer in the container namespace: atomic, so on failure no
        // veth exists and there is nothing to roll back.
        // The peer cannot be created up: veth_newlink() configures it before the pair is
        // linked, so IFF_UP there fails with ENOTCONN. The container side brings it up.
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(plan.ifname.clone()),
            LinkAttribute::Mtu(plan.mtu),
            LinkAttribute::NetNsFd(ns.as_raw_fd()),
        ];
        peer.attributes.extend(veth_queues());
        if let Some(mac) = &self.mac {
            peer.attributes.push(LinkAttribute::Address(mac.clone()));
        }
        // Created down: the container side brings it up once its peer is up
        // ([`ContainerSide::host_up`]).
        let mut host = marked_port_msg(
            &plan.host_ifname,
            plan.mtu,
            bridge,
            vec![
                NlLinkInfo::Kind(InfoKind::Veth),
                NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ],
            false,
        );
        host.attributes.extend(veth_queues());
        let what = || {
            format!(
                "creating veth {} for bridge {} (peer {} in {})",
                plan.host_ifname, plan.bridge, plan.ifname, plan.netns
            )
        };
        // A connect right after a disconnect of the same network: the retired interface keeps
        // the peer's name (`eth1`) until the background deletion of its veth takes it (the
        // kernel unlists it there), ≈ 20 ms at most after the disconnect answered. Waited for
        // here, bounded, rather than failed (the pass would then observe the namespace and
        // wait anyway, 11–34 ms per such connect measured). The name is Docker's: the lowest
        // free `ethN` (libnetwork's `generateIfaceName`), so it is taken again.
        let started = Instant::now();
        let mut pause = std::time::Duration::from_micros(500);
        loop {
            match nl.request(
                RouteNetlinkMessage::NewLink(host.clone()),
                CREATE_EXCL,
                what,
            ) {
                Err(e)
                    if self.retired_peer
                        && e.raw_os_error() == Some(libc::EEXIST)
                        && started.elapsed() < RETIRED_NAME_WAIT =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(4));
                }
                other => break other.map(drop).map_err(|e| bridge_full(e, &plan.bridge))?,
            };
        }
        if self.retired_peer {
            tracing::debug!(
                peer = %plan.ifname,
                waited_us = started.elapsed().as_micros() as u64,
                "the retired interface of this name was gone"
            );
        }
        *created = true;
        self.configure(nl)
    }

    /// The host side's configuration once the veth exists: the bridge-port flags and berth's
    /// alias in one `RTM_NEWLINK` on the existing link and, on an IPv4-only network, IPv6 off.
    fn configure(&self, nl: &mut SyncNetlink) -> Result<()> {
        let plan = &self.plan;
        // RTM_NEWLINK on the existing port, IFLA_INFO_SLAVE_DATA: what `bridge link set dev
        // X hairpin on [isolated on]` does. Looked up by name.
        // IFLA_BRPORT_MODE (hairpin): with br_netfilter loaded, a container that reaches a
        // port it publishes itself through a host address is DNATed in the bridge path and
        // the frame must leave through the port it came in on, which a bridge refuses
        // unless the port is in hairpin mode. IFLA_BRPORT_ISOLATED: enable_icc=false.
        let mut port = vec![InfoBridgePort::HairpinMode(true)];
        if plan.isolated {
            port.push(InfoBridgePort::Isolated(true));
        }
        let mut msg = get_link_msg(&plan.host_ifname);
        if let Some(a) = &self.alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.clone()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(port)),
        ]));
        nl.request(RouteNetlinkMessage::NewLink(msg), CHANGE, || {
            format!("setting bridge-port flags on {}", plan.host_ifname)
        })?;
        if plan.disable_ipv6 {
            // `net.ipv6.conf.<host side>.disable_ipv6 = 1` while the port is still down: the
            // host side (a bridge port, whose own stack only ever talks to its peer) gets no
            // link-local address, sends no DAD, router solicitation or MLD report, and its up
            // adds no `ff00::/8` route to the local table, where `fib6_add_rt2node` walks the
            // same prefix's route of every other port (`addrconf_notify`: `if
            // (idev->cnf.disable_ipv6) break`): 0.13 ms less per port up at 500 ports
            // (`floor.c`, bare). `addrgenmode none`, used before, stopped the address only.
            // `/proc/sys/net` resolves in the writing thread's namespace: the host side's
            // (this thread's own, berthd's, unless the kernel is bound to another: entered
            // first; the thread enters the container's next anyway). The handler takes RTNL
            // with a trylock and restarts the write while anyone holds it (≈ 1.5 ms of CPU
            // spun per endpoint when the container side ran on another thread, stop 27); the
            // endpoint's requests now run on this one thread, one after another. The write
            // costs a connect ≈ 0.1 ms at one container (A/B, stop 45).
            if let Some(path) = &self.host_ns {
                let f = File::open(path).map_err(|e| {
                    KernelError::io(format!("opening network namespace {}", path.display()), e)
                })?;
                netns::enter(&f, path)?;
            }
            write_disable_ipv6(&plan.host_ifname)?;
        }
        Ok(())
    }
}

/// The container's MAC `mac` in the bridge's forwarding database on its port `port` (index;
/// `shown` names it): `bridge fdb add MAC dev PORT master static` (RTM_NEWNEIGH, AF_BRIDGE,
/// NTF_MASTER, NUD_NOARP). For an endpoint that announces nothing
/// ([`EndpointPlan::announce`]), so the first frame for it goes to its port alone instead of
/// being flooded to every port. `static`, not `dynamic`: a static entry does not age (a quiet
/// container's frames are not flooded after 5 min either), still moves when its MAC is seen on
/// another port (only `sticky` would not), and goes with the port; the kernel also refuses a
/// dynamic entry on a port that does not forward yet (EPERM in `fdb_add_entry`).
fn teach_bridge(nl: &mut SyncNetlink, port: u32, mac: Vec<u8>, shown: &str) -> Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = port;
    m.header.state = NeighbourState::Noarp;
    m.header.flags = NeighbourFlags::Controller;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac));
    nl.request(RouteNetlinkMessage::NewNeighbour(m), CREATE_REPLACE, || {
        format!("adding the container's MAC to its bridge's forwarding entries on {shown}")
    })
    .map(drop)
}

/// Runs a whole endpoint on one throwaway thread with blocking sockets, so none of its ~10
/// round trips waits for the async runtime (each request on the shared connection is a
/// channel send, a wake-up of its task, an epoll round and a wake-up back):
/// `host(host_nl, ns, created)` creates the link on a socket in the host's namespace (setting
/// `created` once it exists) and configures its host side there; then the thread enters the
/// container namespace `ns`, and `side` configures the interface. On an error once the link
/// exists, `undo` deletes it through `host_nl`, which stays bound to the host's namespace.
pub(crate) async fn endpoint_on_thread(
    thread: &str,
    mut host_nl: SyncNetlink,
    ns: File,
    side: ContainerSide,
    host: impl FnOnce(&mut SyncNetlink, &File, &mut bool) -> Result<()> + Send + 'static,
    undo: impl FnOnce(&mut SyncNetlink) + Send + 'static,
) -> Result<(SyncNetlink, EndpointTimes)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shown = side.netns.display().to_string();
    let spawned = Instant::now();
    // A spare thread (`crate::spare`): a spawn here waited 0.14–0.19 ms median to run.
    crate::spare::run(
        thread,
        Box::new(move || {
            let mut created = false;
            let mut times = EndpointTimes {
                start_us: micros(spawned),
                ..EndpointTimes::default()
            };
            let result = (|| -> Result<()> {
                let t = Instant::now();
                host(&mut host_nl, &ns, &mut created)?;
                times.host_us = micros(t);
                netns::enter(&ns, &side.netns)?;
                drop(ns);
                let t = Instant::now();
                let mut nl = SyncNetlink::open()?;
                times.gate_wait_us = side.configure(&mut nl, &mut host_nl)?;
                times.container_us = micros(t).saturating_sub(times.gate_wait_us);
                Ok(())
            })();
            if result.is_err() && created {
                undo(&mut host_nl);
            }
            let _ = tx.send(result.map(|()| (host_nl, times)));
        }),
    )
    .map_err(|e| KernelError::io(format!("spawning the endpoint thread for {shown}"), e))?;
    rx.await
        .unwrap_or_else(|_| Err(KernelError::invalid("endpoint thread", "panicked")))
}

/// Where an endpoint thread's time went, in µs, for its debug line: what an endpoint costs
/// above the kernel's own requests is read from these.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EndpointTimes {
    /// From the spawn to the thread running.
    pub(crate) start_us: u64,
    /// The host half: the link's creation and its host-side configuration.
    pub(crate) host_us: u64,
    /// Waiting for the gate (the firewall transaction that guards the link), after the
    /// container half's work before link up.
    pub(crate) gate_wait_us: u64,
    /// The container half without the gate wait.
    pub(crate) container_us: u64,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `RTM_DELLINK` of `name` for a rollback: a failure is logged, not returned (the error that
/// caused the rollback is the one to report).
pub(crate) fn delete_quietly(nl: &mut SyncNetlink, name: &str) {
    if let Err(e) = nl.request(
        RouteNetlinkMessage::DelLink(get_link_msg(name)),
        CHANGE,
        || format!("deleting {name}"),
    ) {
        if !e.is_not_found() {
            tracing::warn!(link = %name, error = %e, "rollback failed");
        }
    }
}

/// The container-namespace half of an endpoint, run on its thread once the thread entered
/// the namespace.
pub(crate) struct ContainerSide {
    pub(crate) netns: PathBuf,
    pub(crate) disable_ipv6: bool,
    pub(crate) announce: Announce,
    /// For a veth on a bridge that announces: announce again once the bridge port forwards
    /// (`false` for macvlan/ipvlan, whose parent is up already, and when nothing is
    /// announced).
    pub(crate) reannounce: bool,
    /// For a veth: the host side's name, brought up (on the host's socket) right after the
    /// peer, then given the container's MAC as a forwarding entry if nothing announces it
    /// ([`teach_bridge`]). The host side is created down so that it never is up without a
    /// carrier: up with its peer down, the kernel queues a linkwatch event for it, and the
    /// next `RTM_GETLINK` of it or the linkwatch work runs `dev_deactivate` under RTNL, which
    /// waits for an expedited RCU grace period (`synchronize_net()`). Up after its peer, it
    /// gets its carrier at once (`veth_open`) and that path waits for none. `None` for
    /// macvlan/ipvlan (no host side).
    pub(crate) host_up: Option<String>,
    pub(crate) ifname: String,
    pub(crate) addrs: Vec<IpNet>,
    pub(crate) routes: Vec<RoutePlan>,
    /// What the link waits for before it goes up (the firewall elements that guard it).
    pub(crate) gate: Option<LinkGate>,
}

impl ContainerSide {
    /// Configures the interface (which exists now) on `nl`, a socket of the container
    /// namespace; `host_nl` is one of the host's, for the host side's up and look-up.
    /// Returns how long it waited for the gate, in µs.
    fn configure(self, nl: &mut SyncNetlink, host_nl: &mut SyncNetlink) -> Result<u64> {
        let ifname = &self.ifname;
        let ns = self.netns.display();
        let link = nl.link_brief(get_link_msg(ifname), true, || {
            format!("looking up {ifname} in {ns}")
        })?;
        let index = link.index;
        if self.disable_ipv6 {
            // Before the link goes up, so not one IPv6 packet (DAD, RS, MLD) leaves it. This
            // thread is in the container namespace: /proc/sys/net is resolved per opener.
            write_disable_ipv6(ifname)?;
        }
        // The announcements (gratuitous ARP, unsolicited NA) are the kernel's, sent for the
        // addresses the link has when it goes up (devinet's and ndisc's NETDEV_UP handlers)
        // and when its MAC is set (NETDEV_CHANGEADDR), each under its knob. Both knobs are
        // /proc/sys writes like disable_ipv6 (≈ 20–40 µs each on the loaded test machine; an
        // RTM_SETLINK carrying IFLA_INET_CONF costs more, 45–100 µs, for the RTM_NEWLINK
        // notification it builds, and IPv6's devconf has no netlink setter at all).
        //
        // A veth on a bridge announces ONCE, after its port forwards (`reannounce`, below):
        // the knobs are set only after the link is up, so the NETDEV_UP announcement is not
        // sent. That one raced the port's enabling (linkwatch) — dropped at a disabled port,
        // or flooded to every port of the bridge, where every other container's namespace
        // processes it (`arp_process`, a route lookup) inside this RTM_SETLINK, under RTNL:
        // at 500 ports, two floods per start were ≈ 13 % of berthd's and its inits' CPU.
        // A link without a port to wait for (macvlan) announces at link up, as before.
        let announce_at_up = !self.reannounce;
        if announce_at_up {
            self.set_announce_knobs()?;
        }
        for net in &self.addrs {
            nl.request(
                RouteNetlinkMessage::NewAddress(addr_msg(index, net)),
                CREATE_REPLACE,
                || format!("adding address {net} to {ifname} in {ns}"),
            )?;
        }
        let mut gate_wait_us = 0;
        if let Some(gate) = &self.gate {
            // Everything above overlapped the firewall transaction; the link goes up only
            // once the elements that guard it are in (an error rolls the endpoint back).
            let t = Instant::now();
            gate.wait_blocking(GATE_WAIT)?;
            gate_wait_us = micros(t);
        }
        if !link.up {
            // A macvlan cannot go up while another up macvlan on its parent has its MAC
            // (EADDRINUSE). berth's MACs derive from the address, and an address is free for
            // reuse as soon as its container exits, while the kernel destroys that container's
            // namespace (and its macvlan) in background work some tens of ms later: wait for
            // it, bounded.
            let deadline = std::time::Instant::now() + LINK_UP_BUSY_WAIT;
            loop {
                match nl.set_link_up(index, &format!("bringing up {ifname} in {ns}")) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EADDRINUSE)
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    other => break other?,
                }
            }
        }
        if let Some(host_ifname) = &self.host_up {
            let mut up = get_link_msg(host_ifname);
            up.header.flags = LinkFlags::Up;
            up.header.change_mask = LinkFlags::Up;
            host_nl.request(RouteNetlinkMessage::SetLink(up), CHANGE, || {
                format!("bringing up {host_ifname}")
            })?;
            // Both ends have their carrier now; what follows from it is the kernel's linkwatch
            // work, run later on its own: the bridge enables the port (`br_port_carrier_check`)
            // and each end gets its queue (`dev_activate`); until then the port drops frames
            // and our link drops what it sends (the command's first SYN, an announcement). An
            // RTM_GETLINK of a device runs its pending work at once (`rtnl_getlink` →
            // `linkwatch_sync_dev`): one for each end, neither waiting for a grace period
            // (carrier on activates, nothing is torn down).
            // That look-up names the port's index too, which a forwarding entry needs (an
            // AF_BRIDGE neighbour names its port by index only).
            let port = host_nl.link_brief(get_link_msg(host_ifname), false, || {
                format!("looking up {host_ifname}")
            })?;
            if self.announce.is_silent() {
                if let Some(mac) = link.mac.clone() {
                    teach_bridge(host_nl, port.index, mac, host_ifname)?;
                }
            }
            let mut get = LinkMessage::default();
            get.header.index = index;
            nl.link_brief(get, false, || format!("looking up {ifname} in {ns}"))?;
        }
        for route in &self.routes {
            nl.request(
                RouteNetlinkMessage::NewRoute(route_msg(route, Some(index))?),
                CREATE_REPLACE,
                || format!("adding route {} via {} in {ns}", route.dst, route.via),
            )?;
        }
        nl.set_link_up(1, &format!("bringing up lo in {ns}"))?;
        if self.reannounce {
            self.set_announce_knobs()?;
            // The bridge port forwards (the host side's linkwatch work was run above, when it
            // came up): setting our MAC to itself makes the kernel announce
            // (NETDEV_CHANGEADDR: a gratuitous ARP per IPv4 address under arp_notify, an
            // unsolicited NA per IPv6 address under ndisc_notify, both just set), learned by
            // the bridge.
            if let Some(mac) = link.mac.clone() {
                announce_again(nl, index, mac, &format!("{ifname} in {ns}"))?;
            }
        }
        Ok(gate_wait_us)
    }

    /// `arp_notify` / `ndisc_notify` on the interface, as `announce` asks (this thread is in
    /// the container namespace: /proc/sys/net is resolved per opener).
    fn set_announce_knobs(&self) -> Result<()> {
        let ifname = &self.ifname;
        if self.announce.arp {
            write_conf(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"))?;
        }
        if self.announce.na {
            write_conf(&format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"))?;
        }
        Ok(())
    }
}

/// Makes the kernel announce the addresses of link `index` again: `RTM_SETLINK` with
/// `IFLA_ADDRESS` = its own MAC raises `NETDEV_CHANGEADDR`, on which the kernel sends a
/// gratuitous ARP per IPv4 address (`arp_notify`) and an unsolicited NA per IPv6 one
/// (`ndisc_notify`). `what` names the link for errors.
fn announce_again(nl: &mut SyncNetlink, index: u32, mac: Vec<u8>, what: &str) -> Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = vec![LinkAttribute::Address(mac)];
    nl.request(RouteNetlinkMessage::SetLink(msg), CHANGE, || {
        format!("announcing {what} again")
    })
    .map(drop)
}

/// The `RTM_NEWLINK` that creates berth's bridge port `name` (kind and data in `info`), up if
/// `up`, with `mtu`, as a port of the bridge with index `master`, and marked as berth's in the
/// very request that creates it: its owner MAC (`plan::names::owner_mac`).
pub(crate) fn marked_port_msg(
    name: &str,
    mtu: u32,
    master: u32,
    info: Vec<NlLinkInfo>,
    up: bool,
) -> LinkMessage {
    let mut msg = LinkMessage::default();
    if up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::Address(berth_plan::names::owner_mac(name).to_vec()),
        LinkAttribute::Controller(master),
        LinkAttribute::LinkInfo(info),
    ];
    msg
}

/// `IFLA_NUM_TX_QUEUES` and `IFLA_NUM_RX_QUEUES` of 1, for each end of a veth berth creates.
///
/// Without them a veth is allocated with a queue per possible CPU and `veth_newlink` then
/// lowers its real queue counts to 1 (`veth_init_queues` → `netif_set_real_num_tx_queues`),
/// which waits for an expedited RCU grace period (`synchronize_net()` under RTNL) for each end:
/// two grace periods inside every veth's creation, longer while another is running (a
/// container's mount namespace being set up or torn down). Given 1 from the start, the device
/// is what it became before (one real TX and RX queue) and no grace period is waited for
/// (`ip link add … type veth`, as netavark and Docker create theirs, pays both).
pub(crate) fn veth_queues() -> [LinkAttribute; 2] {
    [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)]
}

/// A link message naming a link by `IFLA_IFNAME` (index 0): for get, delete and change.
pub(crate) fn get_link_msg(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
    msg
}

/// A link message setting `IFF_UP`.
pub(crate) fn link_up_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

/// The first `RTM_NEWLINK` of a get's answers.
pub(crate) fn first_link(answers: Vec<RouteNetlinkMessage>, name: &str) -> Result<LinkMessage> {
    answers
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })
        .ok_or_else(|| KernelError::NotFound {
            what: format!("link {name}"),
        })
}

/// `IFLA_INFO_KIND` of a link.
fn link_kind(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            NlLinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// A link message as [`LinkInfo`].
fn link_info(link: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: link.header.index,
        kind: link_kind(link),
        master: None,
        up: link.header.flags.contains(LinkFlags::Up),
    };
    for a in &link.attributes {
        match a {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Controller(m) => info.master = Some(*m),
            _ => {}
        }
    }
    info
}

/// An `RTM_NEWADDR` message: IPv4 with local, address and broadcast (like `ip addr add … brd
/// +`), IPv6 with `IFA_F_NODAD` (no duplicate address detection: usable at once).
pub(crate) fn addr_msg(index: u32, net: &IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = net.prefix_len();
    msg.header.scope = AddressScope::Universe;
    match net {
        IpNet::V4(v4) => {
            msg.header.family = AddressFamily::Inet;
            let ip = IpAddr::V4(v4.addr());
            msg.attributes = vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)];
            if v4.prefix_len() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        IpNet::V6(v6) => {
            msg.header.family = AddressFamily::Inet6;
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes = vec![
                AddressAttribute::Address(IpAddr::V6(v6.addr())),
                AddressAttribute::Flags(AddressFlags::Nodad),
            ];
        }
    }
    msg
}

/// The `RTM_DELADDR` for an address as the kernel reported it: its header and the attributes
/// that identify it (`IFA_ADDRESS`, `IFA_LOCAL`).
fn del_addr_msg(a: &AddressMessage) -> AddressMessage {
    let mut del = AddressMessage::default();
    del.header = a.header.clone();
    del.attributes = a
        .attributes
        .iter()
        .filter(|x| matches!(x, AddressAttribute::Address(_) | AddressAttribute::Local(_)))
        .cloned()
        .collect();
    del
}

/// The address of an address message (`IFA_LOCAL` first: on point-to-point links
/// `IFA_ADDRESS` is the peer's).
pub(crate) fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

/// `fe80::/10`.
pub(crate) fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// An `RTM_NEWROUTE` message for the main table (`oif` when the device is known).
pub(crate) fn route_msg(route: &RoutePlan, oif: Option<u32>) -> Result<RouteMessage> {
    let family = match (route.dst, route.via) {
        (IpNet::V4(_), IpAddr::V4(_)) => AddressFamily::Inet,
        (IpNet::V6(_), IpAddr::V6(_)) => AddressFamily::Inet6,
        _ => {
            return Err(KernelError::invalid(
                format!("route {} via {}", route.dst, route.via),
                "destination and gateway are of different families",
            ))
        }
    };
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = MAIN_TABLE;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    if route.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route.dst.trunc().addr().into()));
    }
    msg.attributes
        .push(RouteAttribute::Gateway(route.via.into()));
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    Ok(msg)
}

/// A main-table route as read back ([`Kernel::main_routes`]).
#[derive(Debug, Clone)]
pub(crate) struct MainRoute {
    /// Its address family.
    pub family: AddressFamily,
    /// The destination's prefix length.
    pub prefix_len: u8,
    /// The output interface.
    pub oif: Option<u32>,
    /// The destination address (`RTA_DST`; absent on a default route).
    pub dst: Option<IpAddr>,
    /// The gateway (`RTA_GATEWAY`).
    pub via: Option<IpAddr>,
}

impl MainRoute {
    /// Its destination prefix, a default route's included (`0.0.0.0/0`, `::/0`).
    pub fn net(&self) -> Option<IpNet> {
        let dst = match (self.dst, self.family) {
            (Some(ip), _) => ip,
            (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            _ => return None,
        };
        IpNet::new(dst, self.prefix_len).ok()
    }
}

/// The table of a route (`RTA_TABLE` overrides the 8-bit header field).
pub(crate) fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// `02:42:0a:01:00:02` as bytes; empty means "let the kernel pick one".
pub(crate) fn parse_mac(mac: &str) -> Result<Option<Vec<u8>>> {
    if mac.is_empty() {
        return Ok(None);
    }
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| {
            if b.len() == 2 {
                u8::from_str_radix(b, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()
        .filter(|v: &Vec<u8>| v.len() == 6)
        .ok_or_else(|| KernelError::invalid(format!("MAC address {mac:?}"), "not 6 hex bytes"))?;
    Ok(Some(bytes))
}

/// `IFLA_LINKINFO` of a berth bridge: kind `bridge`, `IFLA_BR_FORWARD_DELAY` 0 (no STP runs,
/// and a non-zero delay only arms a useless timer per port that ends in a notification) and
/// `IFLA_BR_MCAST_SNOOPING` 0 (why: `berth_plan::host::bridge_settings_drift`).
fn bridge_info() -> LinkAttribute {
    LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(InfoKind::Bridge),
        NlLinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::ForwardDelay(0),
            InfoBridge::MulticastSnooping(false),
        ])),
    ])
}

/// A bridge's `IFLA_BR_FORWARD_DELAY` (centiseconds) and `IFLA_BR_MCAST_SNOOPING` as read in
/// its link message (`None`: not there, not a bridge).
pub(crate) fn bridge_settings(link: &LinkMessage) -> (Option<u32>, Option<bool>) {
    let attrs = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            NlLinkInfo::Data(InfoData::Bridge(attrs)) => Some(attrs),
            _ => None,
        }),
        _ => None,
    });
    let Some(attrs) = attrs else {
        return (None, None);
    };
    let delay = attrs.iter().find_map(|b| match b {
        InfoBridge::ForwardDelay(d) => Some(*d),
        _ => None,
    });
    let snooping = attrs.iter().find_map(|b| match b {
        InfoBridge::MulticastSnooping(on) => Some(*on),
        _ => None,
    });
    (delay, snooping)
}

/// The MAC a bridge is created with: derived from its name (FNV-1a), locally administered and
/// unicast (`06:…`, never `02:42:…` like container endpoints), so it is stable and distinct.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    berth_plan::names::owner_mac(name)
}

/// `net.ipv6.conf.<ifname>.disable_ipv6 = 1` in the calling thread's network namespace.
fn write_disable_ipv6(ifname: &str) -> Result<()> {
    let rel = format!("ipv6/conf/{ifname}/disable_ipv6");
    let path = format!("/proc/sys/net/{rel}");
    match crate::sysctl::write_net(&rel, "1") {
        Ok(()) => Ok(()),
        // IPv6 disabled in the whole kernel (ipv6.disable=1): nothing to turn off.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io(format!("writing {path}"), e)),
    }
}

/// The addresses of the links `indices` of the calling thread's namespace: one `RTM_GETADDR`
/// dump per link and family with `ifa_index` set, on a socket with `NETLINK_GET_STRICT_CHK`,
/// which makes the kernel dump that one device's addresses (`inet_dump_ifaddr`,
/// `inet6_dump_addr`: "if (fillargs.ifindex) …"). An unfiltered dump walks every device of
/// the namespace: in berthd's, one veth per running container. A link gone meanwhile
/// (`ENODEV`) or a family the kernel lacks has none.
fn addrs_of(indices: &[u32]) -> Result<Vec<AddressMessage>> {
    let mut out = Vec::new();
    if indices.is_empty() {
        return Ok(out);
    }
    let mut nl = SyncNetlink::open_strict()?;
    for &index in indices {
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = AddressMessage::default();
            msg.header.family = family;
            msg.header.index = index;
            let answers = nl.request(RouteNetlinkMessage::GetAddress(msg), DUMP, || {
                format!("listing the addresses of link {index}")
            });
            match answers {
                Ok(a) => out.extend(a.into_iter().filter_map(|m| match m {
                    // The filter is the kernel's; the index is checked anyway.
                    RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                    _ => None,
                })),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENODEV | libc::EOPNOTSUPP | libc::EAFNOSUPPORT)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
}

/// Writes `1` to a per-interface `/proc/sys/net/…/conf/<if>/…` file in the calling thread's
/// network namespace.
fn write_conf(path: &str) -> Result<()> {
    let written = match path.strip_prefix("/proc/sys/net/") {
        // Relative to the thread's /proc/sys/net: see `sysctl`'s module doc.
        Some(rel) => crate::sysctl::write_net(rel, "1"),
        None => std::fs::write(path, "1"),
    };
    written.map_err(|e| KernelError::io(format!("writing {path}"), e))
}

/// `EXFULL` from an `RTM_NEWLINK` naming `bridge` as master: `br_add_if()` found no free port
/// number (`BR_MAX_PORTS`); the request was undone whole (the veth does not exist).
fn bridge_full(e: KernelError, bridge: &str) -> KernelError {
    if e.raw_os_error() == Some(libc::EXFULL) {
        KernelError::Full {
            what: format!(
                "bridge {bridge} already holds {} ports, the most a Linux bridge can hold \
                 (BR_MAX_PORTS); connect the container to another network",
                berth_plan::capacity::BRIDGE_MAX_PORTS
            ),
        }
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:42:0a:01:00:02").ok().flatten(),
            Some(vec![2, 0x42, 10, 1, 0, 2])
        );
        assert!(parse_mac("02:42:0a:01:00").is_err());
        assert!(parse_mac("02:42:0a:01:00:zz").is_err());
        assert_eq!(parse_mac("").ok().flatten(), None);
    }

    #[test]
    fn route_families_must_match() {
        let r = RoutePlan {
            dst: "0.0.0.0/0".parse().expect("net"),
            via: "fd00::1".parse().expect("ip"),
        };
        assert!(route_msg(&r, None).is_err());
    }

    #[test]
    fn link_local_is_recognised() {
        assert!(is_ipv6_link_local(&"fe80::1".parse().expect("ip")));
        assert!(!is_ipv6_link_local(&"fd00::1".parse().expect("ip")));
    }
}
