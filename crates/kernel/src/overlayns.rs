//! Overlay namespaces (issue 11; `berth_plan::overlayns`): executes an [`NsOp`] and reads
//! back an [`ObservedOverlay`]. The namespaces are held by bind mounts under berthd's run
//! directory ([`crate::netns::create_netns`]); everything inside one goes through a [`Kernel`]
//! bound to it, except the VXLAN port, which the host's socket creates into it (its UDP socket
//! binds on the underlay, [`Kernel::create_vxlan_into`]).
//!
//! What `ip link add bup-… type veth peer name up0 netns …`, `ip route replace SUBNET via GW dev
//! bup-… onlink` and `ip neigh replace GW lladdr MAC dev bup-… nud permanent` do, as netlink
//! requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_plan::host::{ObservedLink, StepOp};
use berth_plan::model::RoutePlan;
use berth_plan::overlayns::{
    DesiredOverlay, NsOp, ObservedOverlay, ObservedOverlayNs, UplinkPlan, NETNS_SUBDIR,
};
use ipnet::IpNet;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteFlags, RouteProtocol};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{KernelError, Result};
use crate::link::{route_msg, Kernel, CHANGE, CREATE_EXCL, CREATE_REPLACE};
use crate::netns;
use crate::vxlan::{family, neigh_addr};

/// How long a VXLAN port's creation waits for the same identity to be released by a
/// namespace the kernel is still tearing down (see [`apply`]).
const VXLAN_EEXIST_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether `path` is a mounted network namespace (not an empty mount point left behind): its
/// device is nsfs's, the same as `/proc/self/ns/net`'s.
pub fn is_netns_mount(path: &Path) -> bool {
    netns_identity(path).is_some()
}

/// The identity (nsfs device, inode) of the network namespace mounted at `path`, `None` when
/// nothing (or something else) is mounted there.
fn netns_identity(path: &Path) -> Option<(u64, u64)> {
    let nsfs = std::fs::metadata("/proc/self/ns/net").ok()?.dev();
    let here = std::fs::metadata(path).ok()?;
    (here.dev() == nsfs).then(|| (here.dev(), here.ino()))
}

/// What is held open in one overlay namespace: its rtnetlink kernel and, once the guard's
/// elements changed there, its nf_tables socket.
struct Held {
    /// The namespace these were opened in ([`netns_identity`]): a namespace mounted again at
    /// the same path is another one.
    id: (u64, u64),
    kernel: Kernel,
    nft: Option<crate::nftnl::NftSocket>,
}

/// The sockets berthd keeps per overlay namespace, keyed by its mount path: a kernel bound to
/// it (one thread start and `setns` when first used, not one per step and pass) and its
/// nf_tables socket (a guard change costs one `sendmsg`, as in the host's namespace).
///
/// A socket bound in a namespace holds that namespace alive, and with it its VXLAN port,
/// whose identity (VNI, UDP port) is registered in the host's namespace: a namespace that is
/// unmounted — by `network rm`, or by hand (drift) — must be forgotten here, or its port
/// would refuse its successor (`EEXIST`). [`apply`] forgets a namespace before it unmounts
/// it or replaces a stale mount point, [`observe`] every namespace it finds unmounted, and
/// [`Namespaces::kernel`] one whose mount now holds another namespace.
#[derive(Default)]
pub struct Namespaces {
    held: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Held>>,
}

impl std::fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespaces")
            .field("held", &self.held())
            .finish()
    }
}

impl Namespaces {
    /// Nothing held yet.
    pub fn new() -> Namespaces {
        Namespaces::default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::path::PathBuf, Held>> {
        // The map holds no invariant a panic could break halfway: a poisoned lock is still
        // a valid cache.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The paths of the namespaces something is held open in, sorted.
    pub fn held(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Drops what is held in the namespace at `path` (before it is unmounted, or once it was).
    pub fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    /// The namespace mounted at `path`, or an error naming it (and whatever was held for
    /// that path dropped) when none is.
    fn identity(&self, path: &Path) -> Result<(u64, u64)> {
        match netns_identity(path) {
            Some(id) => Ok(id),
            None => {
                self.forget(path);
                Err(KernelError::NotFound {
                    what: format!("overlay namespace {}", path.display()),
                })
            }
        }
    }

    /// A kernel bound to the namespace mounted at `path`, opened on first use and kept.
    pub async fn kernel(&self, path: &Path) -> Result<Kernel> {
        let id = self.identity(path)?;
        if let Some(h) = self.lock().get(path).filter(|h| h.id == id) {
            return Ok(h.kernel.clone());
        }
        let kernel = Kernel::new_in(path).await?;
        // Opened without the lock: another task may have opened one meanwhile; either is
        // bound to the same namespace, the last one is kept.
        self.lock().insert(
            path.to_path_buf(),
            Held {
                id,
                kernel: kernel.clone(),
                nft: None,
            },
        );
        Ok(kernel)
    }

    /// Applies anti-spoofing element changes (`table bridge berth`'s sets) in the overlay
    /// namespace at `path`, as one transaction over its kept nf_tables socket (opened there
    /// on first use; dropped after an error, like berthd's own), `nft -f` for what the
    /// socket cannot encode.
    pub async fn apply_guard_changes(
        &self,
        path: &Path,
        changes: &[berth_plan::firewall::SetChange],
    ) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        // The kernel first: it makes the entry (and checks the mount) the socket goes in.
        self.kernel(path).await?;
        let id = self.identity(path)?;
        let kept = self
            .lock()
            .get_mut(path)
            .filter(|h| h.id == id)
            .and_then(|h| h.nft.take());
        let mut sock = match kept {
            Some(s) => s,
            None => netns::run_in_netns_async(path, crate::nftnl::NftSocket::open).await??,
        };
        let sent = sock.apply(changes)?;
        if let Some(h) = self.lock().get_mut(path).filter(|h| h.id == id) {
            h.nft = Some(sock);
        }
        if sent {
            return Ok(());
        }
        crate::nft::apply(Some(path), &berth_plan::firewall::changes_script(changes))
    }
}

impl Kernel {
    /// Creates an overlay namespace's uplink: the veth `plan.host` in this kernel's namespace
    /// (its owner MAC in the creating request, MTU, up) with its peer `plan.peer` in the
    /// namespace at `netns` (its MAC, MTU), in one `RTM_NEWLINK`; then the host side's mark,
    /// and the peer up through `there` (a kernel bound to `netns`: the peer cannot be created
    /// up, veth_newlink configures it before the pair is linked).
    pub async fn create_uplink(
        &self,
        plan: &UplinkPlan,
        netns: &Path,
        there: &Kernel,
    ) -> Result<()> {
        let what = || {
            format!(
                "creating uplink {} (peer {} in {})",
                plan.host,
                plan.peer,
                netns.display()
            )
        };
        let ns = netns::open_netns(netns).map_err(|e| e.context(&what()))?;
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(plan.peer.clone()),
            LinkAttribute::Mtu(plan.mtu),
            LinkAttribute::Address(plan.peer_mac.to_vec()),
            LinkAttribute::NetNsFd(ns.as_raw_fd()),
        ];
        peer.attributes.extend(crate::link::veth_queues());
        let mut host = LinkMessage::default();
        host.header.flags = LinkFlags::Up;
        host.header.change_mask = LinkFlags::Up;
        host.attributes = vec![
            LinkAttribute::IfName(plan.host.clone()),
            LinkAttribute::Mtu(plan.mtu),
            LinkAttribute::Address(plan.host_mac.to_vec()),
            LinkAttribute::LinkInfo(vec![
                NlLinkInfo::Kind(InfoKind::Veth),
                NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        host.attributes.extend(crate::link::veth_queues());
        self.request(RouteNetlinkMessage::NewLink(host), CREATE_EXCL, what)
            .await?;
        let link = self
            .link_by_name(&plan.host, || format!("looking up uplink {}", plan.host))
            .await?;
        let mut mark = crate::link::link_up_msg(link.header.index);
        mark.attributes
            .push(LinkAttribute::IfAlias(plan.alias.clone()));
        self.request(RouteNetlinkMessage::SetLink(mark), CHANGE, || {
            format!("marking uplink {}", plan.host)
        })
        .await?;
        let peer = there
            .link_by_name(&plan.peer, || {
                format!("looking up {} in {}", plan.peer, netns.display())
            })
            .await?;
        there
            .request(
                RouteNetlinkMessage::SetLink(crate::link::link_up_msg(peer.header.index)),
                CHANGE,
                || format!("bringing {} up in {}", plan.peer, netns.display()),
            )
            .await?;
        tracing::debug!(uplink = %plan.host, netns = %netns.display(), "created uplink");
        Ok(())
    }

    /// Makes the routes and permanent neighbours through the uplink exactly the planned ones
    /// on both sides: here (the host) each subnet on-link via its gateway and the gateway's
    /// neighbour entry; through `there` (the overlay namespace) the default routes via the
    /// host's labels and theirs. Others through either side are removed.
    pub async fn set_uplink_routes(&self, plan: &UplinkPlan, there: &Kernel) -> Result<()> {
        self.set_link_routes(&plan.host, &plan.host_routes, &plan.host_neigh())
            .await?;
        there
            .set_link_routes(&plan.peer, &plan.ns_routes, &plan.ns_neigh())
            .await
    }

    /// Routes (on-link, via a gateway) and permanent neighbours of link `name`: made exactly
    /// `routes` and `neigh`.
    async fn set_link_routes(
        &self,
        name: &str,
        routes: &[RoutePlan],
        neigh: &BTreeMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
        let index = self
            .link_by_name(name, || format!("looking up {name}"))
            .await?
            .header
            .index;
        let (have_routes, have_neigh) = self.gateway_routes_and_neigh(index).await?;
        for (ip, mac) in neigh {
            let mut m = NeighbourMessage::default();
            m.header.family = family(*ip);
            m.header.ifindex = index;
            m.header.state = NeighbourState::Permanent;
            m.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(*ip)));
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
            self.request(RouteNetlinkMessage::NewNeighbour(m), CREATE_REPLACE, || {
                format!("adding neighbour {ip} on {name}")
            })
            .await?;
        }
        for ip in have_neigh.keys().filter(|ip| !neigh.contains_key(ip)) {
            let mut m = NeighbourMessage::default();
            m.header.family = family(*ip);
            m.header.ifindex = index;
            m.attributes
                .push(NeighbourAttribute::Destination(neigh_addr(*ip)));
            match self
                .request(RouteNetlinkMessage::DelNeighbour(m), CHANGE, || {
                    format!("removing neighbour {ip} from {name}")
                })
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        for r in routes {
            let mut msg = route_msg(r, Some(index))?;
            // The next hop is on the other end of the veth, with no address of this side's
            // subnet to make it reachable: on-link, resolved by the neighbour entry above.
            msg.header.flags = RouteFlags::Onlink;
            self.request(RouteNetlinkMessage::NewRoute(msg), CREATE_REPLACE, || {
                format!("adding route {} via {} dev {name} onlink", r.dst, r.via)
            })
            .await?;
        }
        let want: BTreeSet<(IpNet, IpAddr)> = routes.iter().map(|r| (r.dst, r.via)).collect();
        for r in have_routes
            .iter()
            .filter(|r| !want.contains(&(r.dst, r.via)))
        {
            let mut del = route_msg(r, Some(index))?;
            // Whoever added it: a stale route through the uplink is not berth's to keep.
            del.header.protocol = RouteProtocol::Unspec;
            match self
                .request(RouteNetlinkMessage::DelRoute(del), CHANGE, || {
                    format!("removing route {} via {} from {name}", r.dst, r.via)
                })
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The main-table routes with a gateway through link `index`, and its permanent
    /// neighbour entries (IPv4 and IPv6).
    async fn gateway_routes_and_neigh(
        &self,
        index: u32,
    ) -> Result<(Vec<RoutePlan>, BTreeMap<IpAddr, [u8; 6]>)> {
        let routes = self
            .main_routes()
            .await?
            .iter()
            .filter(|r| r.oif == Some(index))
            .filter_map(|r| {
                Some(RoutePlan {
                    dst: r.net()?,
                    via: r.via?,
                })
            })
            .collect();
        let mut neigh = BTreeMap::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            for (dst, mac, _) in self
                .permanent_neighbours(fam, index, || "listing neighbours".to_string())
                .await?
            {
                neigh.insert(dst, mac);
            }
        }
        Ok((routes, neigh))
    }

    /// [`Kernel::gateway_routes_and_neigh`] of link `name`; `None` when it does not exist.
    async fn link_routes_and_neigh(
        &self,
        name: &str,
    ) -> Result<Option<(Vec<RoutePlan>, BTreeMap<IpAddr, [u8; 6]>)>> {
        match self
            .link_by_name(name, || format!("looking up {name}"))
            .await
        {
            Ok(l) => Ok(Some(self.gateway_routes_and_neigh(l.header.index).await?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Writes the static `table bridge berth` (anti-spoofing:
/// [`berth_plan::firewall::bridge_guard_script`]) in the overlay namespace at `netns`, where
/// its bridge's ports are (one `nft -f` transaction, run in that namespace; idempotent: the
/// chains are flushed and written again, the sets' elements kept).
pub fn apply_guard_base(netns: &Path) -> Result<()> {
    crate::nft::apply(Some(netns), &berth_plan::firewall::bridge_guard_script())
}

/// Reads a sysctl of the namespace at `netns` (`None`: the caller's), `None` when the key
/// does not exist.
fn read_sysctl(netns: Option<&Path>, key: &str) -> Result<Option<String>> {
    match crate::sysctl::read(netns, key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Executes one overlay step; `host` is the kernel of berthd's namespace (the host's), `held`
/// the sockets kept per overlay namespace (in-namespace steps use them; an unmounted
/// namespace is forgotten there).
pub async fn apply(host: &Kernel, held: &Namespaces, op: &NsOp) -> Result<()> {
    match op {
        NsOp::CreateNetns { path } => {
            let p = Path::new(path);
            if p.exists() && !is_netns_mount(p) {
                // A mount point left by an interrupted creation, or unmounted by hand.
                held.forget(p);
                netns::delete_netns(p)?;
            }
            if is_netns_mount(p) {
                return Ok(());
            }
            netns::create_netns(p)
        }
        NsOp::InNetns { netns, op } => {
            let p = Path::new(netns);
            let there = held.kernel(p).await?;
            match op {
                StepOp::CreateVxlan { plan } => {
                    // The port's identity (VNI, UDP port) is registered in the host's
                    // namespace, where its socket is: a port of a namespace that was unmounted
                    // lives on until the kernel's asynchronous namespace cleanup has run, and
                    // its twin is refused with EEXIST meanwhile. Waited for, within a bound:
                    // past it, something else holds that namespace (or another device has
                    // that identity) and the error says so.
                    let deadline = std::time::Instant::now() + VXLAN_EEXIST_WAIT;
                    loop {
                        match host.create_vxlan_into(plan, p, &there).await {
                            Err(e)
                                if e.raw_os_error() == Some(libc::EEXIST)
                                    && std::time::Instant::now() < deadline =>
                            {
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                                return Err(e.context(&format!(
                                    "VNI {} on port {} is still taken in the host's namespace \
                                     (a removed overlay namespace held by a process or socket, \
                                     or another VXLAN device)",
                                    plan.vni, plan.port
                                )))
                            }
                            other => return other,
                        }
                    }
                }
                op => {
                    use crate::ops::KernelOps;
                    crate::ops::HostKernel::new(there).apply(op).await
                }
            }
        }
        NsOp::SetSysctl {
            netns,
            key,
            value,
            if_present,
        } => match crate::sysctl::write(Some(Path::new(netns)), key, value) {
            Err(e) if e.is_not_found() && *if_present => Ok(()),
            other => other,
        },
        NsOp::CreateUplink { netns, plan } => {
            let p = Path::new(netns);
            let there = held.kernel(p).await?;
            host.create_uplink(plan, p, &there).await
        }
        NsOp::SetUplinkRoutes { netns, plan } => {
            let there = held.kernel(Path::new(netns)).await?;
            host.set_uplink_routes(plan, &there).await
        }
        NsOp::SetHostSysctl { key, value } => crate::sysctl::write(host.netns(), key, value),
        NsOp::DeleteUplink { name } | NsOp::DeleteHostLink { name } => host.delete_link(name).await,
        NsOp::GuardBase { netns } => {
            let p = std::path::PathBuf::from(netns);
            tokio::task::spawn_blocking(move || apply_guard_base(&p))
                .await
                .map_err(|e| KernelError::invalid("blocking nft call", e.to_string()))?
        }
        NsOp::GuardElements { netns, changes, .. } => {
            held.apply_guard_changes(Path::new(netns), changes).await
        }
        NsOp::RemoveNetns { path } => {
            // Our sockets there would keep the namespace — and its VXLAN port — alive.
            let p = Path::new(path);
            held.forget(p);
            netns::delete_netns(p)
        }
    }
}

/// One mounted overlay namespace: its links, default routes, the desired sysctls, the
/// uplink peer's neighbours and the VXLAN port's entries.
async fn observe_ns(
    path: &Path,
    held: &Namespaces,
    sysctls: &BTreeSet<String>,
    peer: &str,
    vxlan: Option<&str>,
) -> Result<ObservedOverlayNs> {
    let shown = path.display().to_string();
    let ns = crate::observe::netns(&shown).await?;
    let there = held.kernel(path).await?;
    let uplink_neigh = match there.link_routes_and_neigh(peer).await? {
        Some((_, neigh)) => neigh,
        None => BTreeMap::new(),
    };
    let vxlan_entries = match vxlan {
        Some(dev) if ns.links.contains_key(dev) => there.vxlan_entries(dev).await?,
        _ => Default::default(),
    };
    let mut read = BTreeMap::new();
    for key in sysctls {
        if let Some(v) = read_sysctl(Some(path), key)? {
            read.insert(key.clone(), v);
        }
    }
    // Its `table bridge berth` (there is no `inet berth` there): rules and elements.
    let fw = netns::run_in_netns_async(path, crate::observe::firewall).await??;
    let guard_rules = fw
        .rules
        .into_iter()
        .filter(|(chain, _)| chain.starts_with("bridge "))
        .collect();
    Ok(ObservedOverlayNs {
        path: shown,
        links: ns.links,
        sysctls: read,
        default_routes: ns.default_routes,
        uplink_neigh,
        vxlan_entries,
        guard_rules,
        guard: berth_plan::firewall::guard_part(&fw.elements, None),
    })
}

/// Reads what `desired` involves; with `all`, also every namespace mounted under
/// `rundir/netns` and every `bup-…` link of the host, so leftovers can be judged. A
/// namespace found unmounted is forgotten in `held`.
pub async fn observe(
    host: &Kernel,
    held: &Namespaces,
    rundir: &Path,
    desired: &DesiredOverlay,
    all: bool,
) -> Result<ObservedOverlay> {
    let mut out = ObservedOverlay {
        all,
        ..ObservedOverlay::default()
    };
    let mut paths: BTreeMap<String, std::path::PathBuf> = desired
        .namespaces
        .iter()
        .map(|(name, d)| (name.clone(), d.path.clone().into()))
        .collect();
    if all {
        let dir = rundir.join(NETNS_SUBDIR);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if berth_plan::names::is_overlay_netns(&name) {
                        paths.entry(name).or_insert_with(|| e.path());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KernelError::io(format!("listing {}", dir.display()), e)),
        }
    }
    for (name, path) in paths {
        if !is_netns_mount(&path) {
            held.forget(&path);
            if all && path.exists() {
                // An empty mount point: reported as a namespace to remove (its removal
                // unlinks it) when no network wants it, made again when one does.
                if !desired.namespaces.contains_key(&name) {
                    out.netns.insert(
                        name,
                        ObservedOverlayNs {
                            path: path.display().to_string(),
                            ..Default::default()
                        },
                    );
                }
            }
            continue;
        }
        let d = desired.namespaces.get(&name);
        let sysctls: BTreeSet<String> = d
            .map(|d| d.sysctls.keys().cloned().collect())
            .unwrap_or_default();
        let vxlan = d
            .and_then(|d| d.vxlan.as_ref())
            .map(|v| v.plan.name.as_str());
        let ns = observe_ns(
            &path,
            held,
            &sysctls,
            berth_plan::overlayns::UPLINK_PEER,
            vxlan,
        )
        .await?;
        out.netns.insert(name, ns);
    }
    let mut uplinks: BTreeSet<String> = desired
        .namespaces
        .values()
        .map(|d| d.uplink_name.clone())
        .collect();
    let old: BTreeSet<String> = desired
        .namespaces
        .values()
        .flat_map(|d| d.old_links.iter().cloned())
        .collect();
    let links: BTreeMap<String, ObservedLink> = if all {
        crate::observe::host_links(host, None).await?
    } else {
        let names: BTreeSet<String> = uplinks.union(&old).cloned().collect();
        crate::observe::host_links(host, Some(&names)).await?
    };
    for name in &old {
        if let Some(l) = links.get(name) {
            out.old_links.insert(name.clone(), l.clone());
        }
    }
    uplinks.extend(
        links
            .keys()
            .filter(|n| berth_plan::names::is_uplink(n))
            .cloned(),
    );
    for name in uplinks {
        let Some(l) = links.get(&name) else { continue };
        out.uplinks.insert(name.clone(), l.clone());
        if let Some((routes, neigh)) = host.link_routes_and_neigh(&name).await? {
            out.uplink_routes.insert(name.clone(), routes);
            out.uplink_neigh.insert(name, neigh);
        }
    }
    for d in desired.namespaces.values() {
        for key in d.host_sysctls.keys() {
            if let Some(v) = read_sysctl(host.netns(), key)? {
                out.host_sysctls.insert(key.clone(), v);
            }
        }
    }
    Ok(out)
}
