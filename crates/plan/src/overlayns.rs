//! The overlay namespace (issue 11; docs/OVERLAY.md, "Next", item 2): on each host, an overlay
//! network's bridge and VXLAN port live in a network namespace of their own, where
//! `net.bridge.bridge-nf-call-*` is 0, so the frames bridged between a container and the
//! tunnel never reach the inet hooks (berth's chains, conntrack) the host administrator's
//! `br_netfilter` setting would hand them to. The host reaches the network through one veth
//! pair, the *uplink* (`bup-<9 hex>` in the host ↔ `up0` in the namespace): the host routes
//! the network's subnets to it and the namespace routes its default to the host, so every rule
//! of `table inet berth` that names the network's bridge today names the uplink instead
//! ([`firewall_key`]) and isolation, masquerade and `-p` stay the rules they are. An
//! `--internal` network gets no uplink at all: nothing outside is even routable.
//!
//! This module is the pure part: what each overlay namespace should hold ([`desired`]), what a
//! pass found ([`ObservedOverlay`]) and the ordered steps between them ([`diff`]), zero when
//! they agree ([`assumed`]).
//!
//! # The uplink's next hops
//! Neither side of the uplink has an address. Each direction's next hop is resolved by a
//! permanent neighbour entry berth writes with the route, so no ARP or NDP crosses the pair and
//! nothing depends on the host's `arp_ignore` or `proxy_arp`:
//! * in the host, `SUBNET via GATEWAY dev bup-… onlink`, and the neighbour `GATEWAY` →
//!   `up0`'s MAC on `bup-…` (the gateway is the bridge's address in the namespace; each overlay
//!   network has its own subnets, so these never collide);
//! * in the namespace, `default via 169.254.0.1 dev up0 onlink` (IPv6: `via fe80::1`), and the
//!   neighbour `169.254.0.1` → `bup-…`'s MAC on `up0`. The address is a label only: nothing
//!   holds it, and it exists in berth's namespace alone.
//!
//! Both MACs are [`names::owner_mac`]s, fixed by the names, so a recreated pair has the same
//! neighbours and a pass can check them without reading the other side.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::firewall::{Elements, SetChange};
use crate::host::{bridge_alias, is_link_sysctl, is_owned, ObservedLink, Problem, StepOp};
use crate::model::{BridgePlan, Driver, NetworkSpec, RoutePlan};
use crate::names;
use crate::overlay::{DesiredVxlan, ObservedEntries};

/// The directory under berthd's run directory (the API socket's) that holds the overlay
/// namespaces' mounts: `RUNDIR/netns/ov-<9 hex>`. Per berthd, so that test worlds with several
/// berthds do not collide, and under `/run`, so it goes with a reboot as the links in it do.
pub const NETNS_SUBDIR: &str = "netns";

/// The name of the uplink's side in the overlay namespace.
pub const UPLINK_PEER: &str = "up0";

/// The namespace's IPv4 next hop towards the host: a label resolved by a permanent neighbour
/// entry (module doc), held by no interface.
pub const HOST_HOP4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The namespace's IPv6 next hop towards the host, like [`HOST_HOP4`].
pub const HOST_HOP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The sysctls that hand bridged frames to the inet, ip6 and arp hooks when `br_netfilter` is
/// loaded. Absent when it is not, which means the same as 0.
pub const BRIDGE_NF_CALL: [&str; 3] = [
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
];

/// Path of an overlay network's namespace mount under berthd's run directory `rundir`.
pub fn netns_path(rundir: &str, network_id: &str) -> String {
    format!(
        "{}/{NETNS_SUBDIR}/{}",
        rundir.trim_end_matches('/'),
        names::overlay_netns_name(network_id)
    )
}

/// The interface of the host that `table inet berth`'s per-network sets name for `net`: an
/// overlay network's uplink ([`names::uplink_name`]; `None` for an `--internal` one, which has
/// none), any other network's bridge. Give it to
/// [`crate::firewall::desired_elements_keyed`].
pub fn firewall_key(net: &NetworkSpec) -> Option<String> {
    match net.driver {
        Driver::Overlay if net.internal => None,
        Driver::Overlay => Some(names::uplink_name(&net.id)),
        _ => Some(net.bridge.clone()),
    }
}

/// The veth pair between the host and an overlay namespace, with the routes through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkPlan {
    /// The host side (`bup-<9 hex>`).
    pub host: String,
    /// The namespace side ([`UPLINK_PEER`]).
    pub peer: String,
    /// The network's MTU, on both sides.
    pub mtu: u32,
    /// The host side's MAC: its owner MAC, set in the creating request (berth's mark).
    pub host_mac: [u8; 6],
    /// The namespace side's MAC (the owner MAC of the namespace's name).
    pub peer_mac: [u8; 6],
    /// The host side's `ifalias`.
    pub alias: String,
    /// In the host, through the host side, on-link: each subnet via its gateway.
    pub host_routes: Vec<RoutePlan>,
    /// In the namespace, through the namespace side, on-link: a default route per family via
    /// [`HOST_HOP4`] / [`HOST_HOP6`].
    pub ns_routes: Vec<RoutePlan>,
}

impl UplinkPlan {
    /// The permanent neighbours on the host side: each host route's next hop → the peer's MAC.
    pub fn host_neigh(&self) -> BTreeMap<IpAddr, [u8; 6]> {
        self.host_routes
            .iter()
            .map(|r| (r.via, self.peer_mac))
            .collect()
    }

    /// The permanent neighbours on the namespace side: each default route's next hop → the
    /// host side's MAC.
    pub fn ns_neigh(&self) -> BTreeMap<IpAddr, [u8; 6]> {
        self.ns_routes
            .iter()
            .map(|r| (r.via, self.host_mac))
            .collect()
    }
}

/// One overlay network's namespace on this host, as berth wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredOverlayNs {
    /// Its name (`ov-<9 hex>`).
    pub name: String,
    /// Its mount (`RUNDIR/netns/<name>`).
    pub path: String,
    /// The network's name, for messages.
    pub network: String,
    /// The network's bridge, inside the namespace, with its gateway addresses.
    pub bridge: BridgePlan,
    /// The bridge's mark (as on a bridge of the host: `ip -n … -d link` names the network).
    pub bridge_alias: String,
    /// The VXLAN port, inside the namespace, with its remote entries (`None` without a cluster
    /// address: the bridge alone, as today).
    pub vxlan: Option<DesiredVxlan>,
    /// The uplink's host-side name, desired or not (an `--internal` network's leftover one is
    /// removed by that name).
    pub uplink_name: String,
    /// The uplink (`None` on an `--internal` network).
    pub uplink: Option<UplinkPlan>,
    /// Sysctls of the namespace: key → (value, why).
    pub sysctls: BTreeMap<String, (String, String)>,
    /// Sysctls of the host's namespace on the uplink's host side: key → (value, why).
    pub host_sysctls: BTreeMap<String, (String, String)>,
    /// The anti-spoofing elements (`table bridge berth` there) of the ports of the network's
    /// running containers, as far as the pass decides them ([`DesiredOverlay::guard_scope`]).
    #[serde(default)]
    pub guard: Elements,
    /// Links of the host's namespace that carried the network before overlay networks had
    /// namespaces of their own (its bridge and VXLAN port there): deleted when berth made
    /// them, before the VXLAN port in the namespace can take the same VNI and UDP port.
    #[serde(default)]
    pub old_links: Vec<String>,
}

/// Every overlay namespace berth wants on this host, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredOverlay {
    /// By namespace name.
    pub namespaces: BTreeMap<String, DesiredOverlayNs>,
    /// The bridge ports whose anti-spoofing elements this pass decides: `None` for every
    /// port (a pass over every running container); a scoped pass names its own ports and
    /// leaves the others' elements alone (as [`crate::host::DesiredHost::guard_scope`]).
    #[serde(default)]
    pub guard_scope: Option<BTreeSet<String>>,
    /// Overlay networks that exist but are outside this pass's scope (by id): their namespaces
    /// and uplinks are not this pass's to judge, so never leftovers (a `network rm` of one
    /// overlay judges the leftovers, and must not take the others' for them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub kept_networks: BTreeSet<String>,
}

/// Places the endpoints of `desired` on overlay networks (their bridge is
/// `networks`' overlay bridge) in their network's namespace of `overlay`, and moves their
/// anti-spoofing elements from the host's `table bridge berth` to `overlay`'s namespace of
/// their network. Also drops from `desired` what the namespaces now carry: the overlay
/// networks' bridges, their link sysctls and their VXLAN ports; and keeps the uplinks out of
/// the host's orphans.
pub fn place_endpoints(
    desired: &mut crate::host::DesiredHost,
    overlay: &mut DesiredOverlay,
    networks: &[NetworkSpec],
) {
    overlay.guard_scope = desired.guard_scope.clone();
    for net in networks.iter().filter(|n| n.driver == Driver::Overlay) {
        let name = names::overlay_netns_name(&net.id);
        let Some(ns) = overlay.namespaces.get_mut(&name) else {
            continue;
        };
        desired.bridges.remove(&net.bridge);
        desired.vxlans.remove(&names::vxlan_name(&net.id));
        let infix = format!(".{}.", net.bridge);
        desired.sysctls.retain(|k, _| !k.contains(&infix));
        desired.kept_links.insert(ns.uplink_name.clone());
        let mut ports = BTreeSet::new();
        for e in desired
            .endpoints
            .values_mut()
            .filter(|e| e.plan.bridge == net.bridge)
        {
            e.plan.host_netns = Some(ns.path.clone());
            ports.insert(e.plan.host_ifname.clone());
        }
        ns.guard = crate::firewall::guard_part(&desired.elements, Some(&ports));
        crate::firewall::remove_guard_ports(&mut desired.elements, &ports);
    }
}

/// The overlay namespaces of `networks` under berthd's run directory `rundir`; `vxlans` are
/// the VXLAN ports [`crate::overlay::contribute`] computed (by device name), each placed in its
/// network's namespace.
pub fn desired(
    networks: &[NetworkSpec],
    rundir: &str,
    vxlans: &BTreeMap<String, DesiredVxlan>,
) -> DesiredOverlay {
    let mut out = DesiredOverlay::default();
    for net in networks.iter().filter(|n| n.driver == Driver::Overlay) {
        let Some(bridge) = crate::network::bridge_plan(net) else {
            continue;
        };
        let name = names::overlay_netns_name(&net.id);
        let uplink_name = names::uplink_name(&net.id);
        let v4 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv4());
        let v6 = net.subnets.iter().any(|s| s.subnet.addr().is_ipv6());
        let mut sysctls = BTreeMap::new();
        let mut host_sysctls = BTreeMap::new();
        for key in BRIDGE_NF_CALL {
            sysctls.insert(
                key.to_string(),
                (
                    "0".to_string(),
                    "frames bridged between containers and the tunnel skip the inet hooks".into(),
                ),
            );
        }
        // The bridge's link-local address stays tentative for the ~1-2 s of DAD after its
        // first port comes up otherwise (the same reason as on a bridge of the host).
        sysctls.insert(
            format!("net.ipv6.conf.{}.accept_dad", bridge.name),
            ("0".into(), "no DAD delay on a private bridge".into()),
        );
        let uplink = (!net.internal).then(|| {
            // Forwarding between the bridge and the uplink is what the namespace is for; an
            // internal network has nothing to forward to, and keeps the default (off).
            if v4 {
                sysctls.insert(
                    "net.ipv4.ip_forward".into(),
                    ("1".into(), "routes between the bridge and the host".into()),
                );
            }
            if v6 {
                sysctls.insert(
                    "net.ipv6.conf.all.forwarding".into(),
                    ("1".into(), "routes between the bridge and the host".into()),
                );
            }
            // The host's own connection to 127.0.0.1:PORT, DNATed to a container, leaves
            // through the uplink with a loopback source until postrouting masquerades it: the
            // bridge's reason on the host today, moved to the interface the packet now leaves by.
            host_sysctls.insert(
                format!("net.ipv4.conf.{uplink_name}.route_localnet"),
                (
                    "1".into(),
                    format!(
                        "uplink of network {}: published ports on 127.0.0.1",
                        net.name
                    ),
                ),
            );
            let mut ns_routes = Vec::new();
            if v4 {
                ns_routes.push(RoutePlan {
                    dst: IpNet::V4(ipnet::Ipv4Net::default()),
                    via: IpAddr::V4(HOST_HOP4),
                });
            }
            if v6 {
                ns_routes.push(RoutePlan {
                    dst: IpNet::V6(ipnet::Ipv6Net::default()),
                    via: IpAddr::V6(HOST_HOP6),
                });
            }
            UplinkPlan {
                host: uplink_name.clone(),
                peer: UPLINK_PEER.into(),
                mtu: net.mtu,
                host_mac: names::owner_mac(&uplink_name),
                peer_mac: names::owner_mac(&name),
                alias: format!(
                    "{}up:{}",
                    crate::host::MARK_PREFIX,
                    names::short_id(&net.id)
                ),
                host_routes: net
                    .subnets
                    .iter()
                    .map(|s| RoutePlan {
                        dst: s.subnet,
                        via: s.gateway,
                    })
                    .collect(),
                ns_routes,
            }
        });
        out.namespaces.insert(
            name.clone(),
            DesiredOverlayNs {
                path: netns_path(rundir, &net.id),
                name,
                network: net.name.clone(),
                bridge_alias: bridge_alias(net),
                bridge,
                vxlan: vxlans.get(&names::vxlan_name(&net.id)).cloned(),
                uplink_name,
                uplink,
                sysctls,
                host_sysctls,
                guard: Elements::default(),
                old_links: vec![net.bridge.clone(), names::vxlan_name(&net.id)],
            },
        );
    }
    out
}

/// One overlay namespace as observed (it exists: it is mounted and could be entered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedOverlayNs {
    /// Its mount.
    pub path: String,
    /// Its links by name.
    pub links: BTreeMap<String, ObservedLink>,
    /// The sysctls of its desired state that were read (absent: the key does not exist).
    pub sysctls: BTreeMap<String, String>,
    /// Its default routes (main table).
    pub default_routes: Vec<RoutePlan>,
    /// The permanent neighbour entries on [`UPLINK_PEER`].
    pub uplink_neigh: BTreeMap<IpAddr, [u8; 6]>,
    /// The permanent remote entries of its VXLAN port.
    pub vxlan_entries: ObservedEntries,
    /// The rules of its `table bridge berth` as (`bridge CHAIN`, comment), in order; empty
    /// when the table does not exist.
    #[serde(default)]
    pub guard_rules: Vec<(String, String)>,
    /// The elements of its `table bridge berth`'s sets.
    #[serde(default)]
    pub guard: Elements,
}

/// What a pass found of the overlay namespaces and their uplinks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedOverlay {
    /// Whether every namespace mounted under `RUNDIR/netns` and every `bup-…` link of the host
    /// were looked at, so leftovers can be judged (else only the desired ones were).
    pub all: bool,
    /// The mounted namespaces by name.
    pub netns: BTreeMap<String, ObservedOverlayNs>,
    /// The host's uplink-shaped links (`bup-…`) by name.
    pub uplinks: BTreeMap<String, ObservedLink>,
    /// The host's main-table routes through each uplink, by uplink.
    pub uplink_routes: BTreeMap<String, Vec<RoutePlan>>,
    /// The host's permanent neighbour entries on each uplink, by uplink.
    pub uplink_neigh: BTreeMap<String, BTreeMap<IpAddr, [u8; 6]>>,
    /// The host's sysctls of the desired uplinks that were read.
    pub host_sysctls: BTreeMap<String, String>,
    /// The host's links named like a desired namespace's [`DesiredOverlayNs::old_links`].
    #[serde(default)]
    pub old_links: BTreeMap<String, ObservedLink>,
}

/// What an overlay step does; each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Kind")]
pub enum NsOp {
    /// Creates the namespace and mounts it at `path` (`berth_kernel::netns::create_netns`),
    /// `lo` up in it. A leftover mount point without a namespace is replaced.
    CreateNetns {
        /// The mount.
        path: String,
    },
    /// A step of the host plan, run through a kernel (netlink socket) bound to the namespace
    /// at `netns`: the bridge's, the VXLAN port's (created by the host's socket into the
    /// namespace, so its UDP socket binds on the underlay) and their entries, a deletion.
    InNetns {
        /// The namespace's mount.
        netns: String,
        /// What to do there.
        op: StepOp,
    },
    /// Writes a sysctl of the namespace at `netns`. With `if_present`, a key that does not
    /// exist (`net.bridge.*` without `br_netfilter`) is left alone: it means the same as 0.
    SetSysctl {
        /// The namespace's mount.
        netns: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Whether a missing key is fine.
        if_present: bool,
    },
    /// Creates the uplink veth pair: the host side (owner MAC in the creating request, mark,
    /// MTU, up) and its peer in the namespace at `netns` (its MAC, MTU, up). The routes come
    /// with [`NsOp::SetUplinkRoutes`].
    CreateUplink {
        /// The namespace's mount.
        netns: String,
        /// The pair.
        plan: UplinkPlan,
    },
    /// Replaces the uplink's routes and permanent neighbours on both sides by exactly the
    /// planned ones (routes `replace`d, other routes through the uplink deleted).
    SetUplinkRoutes {
        /// The namespace's mount.
        netns: String,
        /// The pair.
        plan: UplinkPlan,
    },
    /// Writes a sysctl of the host's namespace (the uplink's host side's).
    SetHostSysctl {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Deletes an uplink's host side (its peer goes with it).
    DeleteUplink {
        /// The host side.
        name: String,
    },
    /// Deletes a link of the host's namespace that berth made for the network before it had
    /// a namespace of its own (its old bridge or VXLAN port).
    DeleteHostLink {
        /// The link.
        name: String,
    },
    /// Writes the static `table bridge berth` (anti-spoofing) in the namespace at `netns`
    /// (its chains flushed and written again, its sets' elements kept).
    GuardBase {
        /// The namespace's mount.
        netns: String,
    },
    /// Applies anti-spoofing element changes in the namespace at `netns` (one transaction).
    /// Additions come before the endpoints are made (a port is in `guarded` before it can
    /// forward); removals (`late`) after the host's steps have retired their ports.
    GuardElements {
        /// The namespace's mount.
        netns: String,
        /// The `nft -f` script: what the step does, for people.
        script: String,
        /// The same changes, per set: what the kernel layer executes.
        #[serde(skip)]
        changes: Vec<SetChange>,
        /// Whether it runs after the host's steps (removals).
        late: bool,
    },
    /// Unmounts and removes the namespace at `path`; its bridge, VXLAN port (and the port's
    /// socket) and endpoints' bridge sides go with it once nothing else holds it.
    RemoveNetns {
        /// The mount.
        path: String,
    },
}

impl NsOp {
    /// The step's action name (`CreateNetns`, …).
    pub fn action(&self) -> &'static str {
        match self {
            NsOp::CreateNetns { .. } => "CreateNetns",
            NsOp::InNetns { op, .. } => op.action(),
            NsOp::SetSysctl { .. } => "SetSysctl",
            NsOp::CreateUplink { .. } => "CreateUplink",
            NsOp::SetUplinkRoutes { .. } => "SetUplinkRoutes",
            NsOp::SetHostSysctl { .. } => "SetSysctl",
            NsOp::DeleteUplink { .. } => "DeleteUplink",
            NsOp::DeleteHostLink { .. } => "DeleteLink",
            NsOp::GuardBase { .. } => "FirewallBase",
            NsOp::GuardElements { .. } => "FirewallElements",
            NsOp::RemoveNetns { .. } => "RemoveNetns",
        }
    }
}

impl std::fmt::Display for NsStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op.action(), self.object, self.reason)
    }
}

/// One overlay step: what to do, to which object, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsStep {
    /// What to do.
    pub op: NsOp,
    /// The object it serves, for people.
    pub object: String,
    /// Why it is needed.
    pub reason: String,
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPlan {
    /// Ordered steps, before the host's.
    pub steps: Vec<NsStep>,
    /// Ordered steps after the host's (anti-spoofing elements of retired ports).
    #[serde(default)]
    pub late: Vec<NsStep>,
    /// What is wrong but not berth's to change (a foreign link named like an uplink).
    pub problems: Vec<Problem>,
}

/// The anti-spoofing element changes of one namespace: additions into `steps` (before the
/// endpoints), removals and changes into `late` (after the host's steps retired their ports;
/// a changed element is removed and added there, as in the host's table).
fn guard_steps(
    late: &mut Vec<NsStep>,
    d: &DesiredOverlayNs,
    o: &ObservedOverlayNs,
    scope: Option<&BTreeSet<String>>,
    steps: &mut Vec<NsStep>,
) {
    let have = crate::firewall::guard_part(&o.guard, scope);
    let want = crate::firewall::guard_part(&d.guard, scope);
    let fresh = crate::firewall::fresh_elements(&have, &want);
    let what = |n: usize, how: &str| format!("{n} anti-spoofing element(s) {how}");
    let object = format!(
        "elements of table bridge berth in overlay namespace {} (network {})",
        d.name, d.network
    );
    if !fresh.is_empty() {
        let changes = crate::firewall::diff_changes(&Elements::default(), &fresh);
        steps.push(NsStep {
            op: NsOp::GuardElements {
                netns: d.path.clone(),
                script: crate::firewall::changes_script(&changes),
                changes,
                late: false,
            },
            object: object.clone(),
            reason: what(fresh.len(), "missing (before the endpoints that need them)"),
        });
    }
    let mut have_after = have;
    have_after.extend(&fresh);
    let changes = crate::firewall::diff_changes(&have_after, &want);
    if !changes.is_empty() {
        let removed: usize = changes.iter().map(|c| c.delete.len()).sum();
        late.push(NsStep {
            op: NsOp::GuardElements {
                netns: d.path.clone(),
                script: crate::firewall::changes_script(&changes),
                changes,
                late: true,
            },
            object,
            reason: what(removed, "not wanted"),
        });
    }
}

fn route_set(r: &[RoutePlan]) -> BTreeSet<(IpNet, IpAddr)> {
    r.iter().map(|r| (r.dst, r.via)).collect()
}

/// The ordered steps that turn `observed` into `desired`.
///
/// Per namespace: the namespace itself, its own sysctls (`bridge-nf-call-*` off before any
/// port forwards a frame), the bridge and its link sysctls, the VXLAN port and its entries,
/// then the uplink, its routes and the host's sysctl on it. Then, when `observed.all`, the
/// leftovers: uplinks before their namespaces, so that a namespace is gone from the host's
/// routes before it is unmounted. A namespace that is missing (never made, or unmounted) is
/// made again and everything in it created without looking; a bridge that is missing takes
/// its VXLAN port's port membership with it, so the port is made again too.
pub fn diff(observed: &ObservedOverlay, desired: &DesiredOverlay) -> OverlayPlan {
    let mut plan = OverlayPlan::default();
    let empty = ObservedOverlayNs::default();
    // Leftovers first (when every namespace was looked at): a removed network's VXLAN port
    // holds its VNI and UDP port, which a network made in the same pass may take.
    if observed.all {
        // A wanted network's uplink name is judged with its namespace (an --internal
        // network's leftover one is deleted there).
        let wanted_uplinks: BTreeSet<String> = desired
            .namespaces
            .values()
            .map(|d| d.uplink_name.clone())
            .chain(
                desired
                    .kept_networks
                    .iter()
                    .map(|id| names::uplink_name(id)),
            )
            .collect();
        let kept_netns: BTreeSet<String> = desired
            .kept_networks
            .iter()
            .map(|id| names::overlay_netns_name(id))
            .collect();
        for (name, l) in &observed.uplinks {
            if names::is_uplink(name) && is_owned(l) && !wanted_uplinks.contains(name.as_str()) {
                plan.steps.push(NsStep {
                    op: NsOp::DeleteUplink { name: name.clone() },
                    object: format!("uplink {name}"),
                    reason: "orphan: no overlay network wants it".into(),
                });
            }
        }
        for (name, ns) in &observed.netns {
            if names::is_overlay_netns(name)
                && !desired.namespaces.contains_key(name)
                && !kept_netns.contains(name)
            {
                // Its VXLAN port first: the port's identity (VNI, UDP port) stays registered
                // in the host's namespace until the kernel's asynchronous cleanup of the
                // unmounted namespace has run (seconds on a loaded host), and a network
                // created meanwhile with the same VNI would be refused (EEXIST). Deleted, it
                // is free at once.
                for (dev, _) in ns
                    .links
                    .iter()
                    .filter(|(_, l)| l.kind.as_deref() == Some("vxlan"))
                {
                    plan.steps.push(NsStep {
                        op: NsOp::InNetns {
                            netns: ns.path.clone(),
                            op: StepOp::DeleteLink {
                                name: dev.clone(),
                                netns: None,
                            },
                        },
                        object: format!("vxlan {dev} of overlay namespace {name}"),
                        reason: "its namespace is being removed: frees its VNI now".into(),
                    });
                }
                plan.steps.push(NsStep {
                    op: NsOp::RemoveNetns {
                        path: ns.path.clone(),
                    },
                    object: format!("overlay namespace {name}"),
                    reason: "orphan: no overlay network wants it".into(),
                });
            }
        }
    }
    for (name, d) in &desired.namespaces {
        let object =
            |what: &str| format!("{what} of overlay namespace {name} (network {})", d.network);
        let in_ns = |op: StepOp, what: &str, reason: &str| NsStep {
            op: NsOp::InNetns {
                netns: d.path.clone(),
                op,
            },
            object: object(what),
            reason: reason.to_string(),
        };
        let steps = &mut plan.steps;
        let fresh = !observed.netns.contains_key(name);
        if fresh {
            steps.push(NsStep {
                op: NsOp::CreateNetns {
                    path: d.path.clone(),
                },
                object: object("the namespace"),
                reason: "missing (not mounted)".into(),
            });
        }
        // The old shape's links first: its VXLAN port holds the VNI and UDP port the
        // namespace's port takes.
        for old in &d.old_links {
            let Some(l) = observed.old_links.get(old) else {
                continue;
            };
            if !is_owned(l) {
                continue;
            }
            steps.push(NsStep {
                op: NsOp::DeleteHostLink { name: old.clone() },
                object: object(&format!(
                    "{} {old} of the host",
                    l.kind.as_deref().unwrap_or("link")
                )),
                reason: "the network is carried by its namespace now".into(),
            });
        }
        let o = observed.netns.get(name).unwrap_or(&empty);
        // The anti-spoofing table before any port exists in the namespace.
        if fresh || o.guard_rules != crate::firewall::bridge_guard_rules() {
            steps.push(NsStep {
                op: NsOp::GuardBase {
                    netns: d.path.clone(),
                },
                object: object("table bridge berth"),
                reason: if fresh {
                    "new namespace".into()
                } else {
                    "its rules are missing or differ from berth's".into()
                },
            });
        }
        guard_steps(&mut plan.late, d, o, desired.guard_scope.as_ref(), steps);
        let steps = &mut plan.steps;
        let sysctl_steps = |links: bool| -> Vec<NsStep> {
            d.sysctls
                .iter()
                .filter(|(k, _)| is_link_sysctl(k) == links)
                .filter_map(|(key, (value, why))| {
                    let if_present = BRIDGE_NF_CALL.contains(&key.as_str());
                    let reason = match o.sysctls.get(key) {
                        _ if fresh => "new namespace".to_string(),
                        Some(v) if v == value => return None,
                        None if if_present => return None,
                        Some(v) => format!("is {v}"),
                        None => "missing".to_string(),
                    };
                    Some(NsStep {
                        op: NsOp::SetSysctl {
                            netns: d.path.clone(),
                            key: key.clone(),
                            value: value.clone(),
                            if_present,
                        },
                        object: object(&format!("sysctl {key}={value} ({why})")),
                        reason,
                    })
                })
                .collect()
        };
        steps.extend(sysctl_steps(false));

        // The bridge. Everything in the namespace is berth's: a wrong link is replaced.
        let create_bridge = StepOp::CreateBridge {
            plan: d.bridge.clone(),
            alias: d.bridge_alias.clone(),
        };
        let bridge_what = format!("bridge {}", d.bridge.name);
        let bridge_fresh = match o.links.get(&d.bridge.name) {
            None => {
                steps.push(in_ns(create_bridge, &bridge_what, "missing"));
                true
            }
            Some(l) if l.kind.as_deref() != Some("bridge") => {
                steps.push(in_ns(
                    StepOp::DeleteLink {
                        name: d.bridge.name.clone(),
                        netns: None,
                    },
                    &bridge_what,
                    &format!("is a {} link", l.kind.as_deref().unwrap_or("device")),
                ));
                steps.push(in_ns(create_bridge, &bridge_what, "replaced"));
                true
            }
            Some(l) => {
                let mut why = Vec::new();
                if !l.up {
                    why.push("down".to_string());
                }
                if l.mtu != d.bridge.mtu {
                    why.push(format!("mtu {} instead of {}", l.mtu, d.bridge.mtu));
                }
                if l.alias.as_deref() != Some(d.bridge_alias.as_str()) {
                    why.push("mark missing".into());
                }
                if let Some(w) = crate::host::bridge_settings_drift(l) {
                    why.push(w);
                }
                if !crate::host::significant(&l.addrs)
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .eq(&d.bridge.addrs.iter().collect::<BTreeSet<_>>())
                {
                    why.push("gateway addresses differ".into());
                }
                if !why.is_empty() {
                    steps.push(in_ns(
                        StepOp::ConfigureBridge {
                            plan: d.bridge.clone(),
                            alias: Some(d.bridge_alias.clone()),
                            keep_others: false,
                        },
                        &bridge_what,
                        &why.join(", "),
                    ));
                }
                false
            }
        };
        if bridge_fresh && !fresh {
            // Link sysctls of a new bridge are written after it, whatever the old one had.
            for (key, (value, why)) in d.sysctls.iter().filter(|(k, _)| is_link_sysctl(k)) {
                steps.push(NsStep {
                    op: NsOp::SetSysctl {
                        netns: d.path.clone(),
                        key: key.clone(),
                        value: value.clone(),
                        if_present: false,
                    },
                    object: object(&format!("sysctl {key}={value} ({why})")),
                    reason: "new bridge".into(),
                });
            }
        } else {
            steps.extend(sysctl_steps(true));
        }

        // The VXLAN port.
        if let Some(v) = &d.vxlan {
            let vx = &v.plan.name;
            let vx_what = format!("vxlan {vx}");
            let create = StepOp::CreateVxlan {
                plan: v.plan.clone(),
            };
            let vx_fresh = match o.links.get(vx) {
                None => {
                    steps.push(in_ns(create, &vx_what, "missing"));
                    true
                }
                Some(l) => {
                    let why = crate::overlay::vxlan_faults(l, &v.plan);
                    if why.is_empty() {
                        false
                    } else {
                        // Recreated rather than patched, as on the host: one idempotent step
                        // sets kind, VNI, port, master, MTU and up together.
                        steps.push(in_ns(
                            StepOp::DeleteLink {
                                name: vx.clone(),
                                netns: None,
                            },
                            &vx_what,
                            &why.join(", "),
                        ));
                        steps.push(in_ns(create, &vx_what, "replaced"));
                        true
                    }
                }
            };
            let none = ObservedEntries::default();
            let have = if vx_fresh { &none } else { &o.vxlan_entries };
            if let Some(step) = crate::overlay::entries_step(vx, v, have) {
                steps.push(NsStep {
                    op: NsOp::InNetns {
                        netns: d.path.clone(),
                        op: step.op,
                    },
                    object: object(&step.object),
                    reason: step.reason,
                });
            }
        }

        // The uplink.
        let host_side = observed.uplinks.get(&d.uplink_name);
        match &d.uplink {
            None => {
                if let Some(l) = host_side.filter(|l| is_owned(l)) {
                    steps.push(NsStep {
                        op: NsOp::DeleteUplink {
                            name: l.name.clone(),
                        },
                        object: object(&format!("uplink {}", l.name)),
                        reason: "an --internal network has no uplink".into(),
                    });
                }
            }
            Some(u) => {
                let what = format!("uplink {} ↔ {}", u.host, u.peer);
                if let Some(l) = host_side.filter(|l| !is_owned(l)) {
                    plan.problems.push(Problem {
                        object: object(&what),
                        message: format!(
                            "a {} link named {} exists and is not berth's: berth leaves it \
                             alone, and the network is not reachable from the host",
                            l.kind.as_deref().unwrap_or("device"),
                            l.name
                        ),
                    });
                    continue;
                }
                let link_ok = |l: &ObservedLink, mac: [u8; 6]| {
                    l.kind.as_deref() == Some("veth")
                        && l.up
                        && l.mtu == u.mtu
                        && l.mac == Some(mac)
                        && l.master.is_none()
                };
                let host_ok = host_side.is_some_and(|l| link_ok(l, u.host_mac));
                let peer_ok =
                    !fresh && o.links.get(&u.peer).is_some_and(|l| link_ok(l, u.peer_mac));
                let uplink_fresh = !(host_ok && peer_ok);
                if uplink_fresh {
                    if let Some(l) = host_side {
                        steps.push(NsStep {
                            op: NsOp::DeleteUplink {
                                name: l.name.clone(),
                            },
                            object: object(&what),
                            reason: if peer_ok {
                                "host side differs".into()
                            } else {
                                "its peer is not in the namespace as planned".into()
                            },
                        });
                    }
                    steps.push(NsStep {
                        op: NsOp::CreateUplink {
                            netns: d.path.clone(),
                            plan: u.clone(),
                        },
                        object: object(&what),
                        reason: if host_side.is_some() {
                            "replaced".into()
                        } else {
                            "missing".into()
                        },
                    });
                }
                let routes_ok = !uplink_fresh
                    && route_set(&o.default_routes) == route_set(&u.ns_routes)
                    && o.uplink_neigh == u.ns_neigh()
                    && observed
                        .uplink_routes
                        .get(&u.host)
                        .is_some_and(|r| route_set(r) == route_set(&u.host_routes))
                    && observed.uplink_neigh.get(&u.host) == Some(&u.host_neigh());
                if !routes_ok {
                    steps.push(NsStep {
                        op: NsOp::SetUplinkRoutes {
                            netns: d.path.clone(),
                            plan: u.clone(),
                        },
                        object: object(&format!("routes through {what}")),
                        reason: if uplink_fresh {
                            "new uplink".into()
                        } else {
                            "routes or neighbours differ".into()
                        },
                    });
                }
                for (key, (value, why)) in &d.host_sysctls {
                    if !uplink_fresh && observed.host_sysctls.get(key) == Some(value) {
                        continue;
                    }
                    steps.push(NsStep {
                        op: NsOp::SetHostSysctl {
                            key: key.clone(),
                            value: value.clone(),
                        },
                        object: object(&format!("sysctl {key}={value} ({why})")),
                        reason: if uplink_fresh {
                            "new uplink".into()
                        } else {
                            "differs".into()
                        },
                    });
                }
            }
        }
    }

    plan
}

/// What a pass observes once `desired` is fully applied: the state [`diff`] finds nothing to
/// do in (its unit tests; a fake kernel's view).
pub fn assumed(desired: &DesiredOverlay) -> ObservedOverlay {
    let mut o = ObservedOverlay {
        all: true,
        ..ObservedOverlay::default()
    };
    for (name, d) in &desired.namespaces {
        let mut ns = ObservedOverlayNs {
            path: d.path.clone(),
            ..ObservedOverlayNs::default()
        };
        ns.links.insert(
            d.bridge.name.clone(),
            ObservedLink {
                name: d.bridge.name.clone(),
                kind: Some("bridge".into()),
                up: true,
                mtu: d.bridge.mtu,
                alias: Some(d.bridge_alias.clone()),
                mac: Some(names::owner_mac(&d.bridge.name)),
                addrs: d.bridge.addrs.clone(),
                ..ObservedLink::default()
            },
        );
        if let Some(v) = &d.vxlan {
            ns.links.insert(
                v.plan.name.clone(),
                ObservedLink {
                    name: v.plan.name.clone(),
                    kind: Some("vxlan".into()),
                    master: Some(v.plan.bridge.clone()),
                    up: true,
                    mtu: v.plan.mtu,
                    alias: Some(v.plan.alias.clone()),
                    mac: Some(names::owner_mac(&v.plan.name)),
                    ..ObservedLink::default()
                },
            );
            ns.vxlan_entries = ObservedEntries {
                fdb: v.fdb.clone(),
                neigh: v.neigh.clone(),
            };
        }
        for (k, (v, _)) in &d.sysctls {
            ns.sysctls.insert(k.clone(), v.clone());
        }
        ns.guard_rules = crate::firewall::bridge_guard_rules();
        ns.guard = d.guard.clone();
        if let Some(u) = &d.uplink {
            let veth = |name: &str, mac| ObservedLink {
                name: name.to_string(),
                kind: Some("veth".into()),
                up: true,
                mtu: u.mtu,
                mac: Some(mac),
                ..ObservedLink::default()
            };
            ns.links.insert(u.peer.clone(), veth(&u.peer, u.peer_mac));
            ns.default_routes = u.ns_routes.clone();
            ns.uplink_neigh = u.ns_neigh();
            o.uplinks.insert(
                u.host.clone(),
                ObservedLink {
                    alias: Some(u.alias.clone()),
                    ..veth(&u.host, u.host_mac)
                },
            );
            o.uplink_routes
                .insert(u.host.clone(), u.host_routes.clone());
            o.uplink_neigh.insert(u.host.clone(), u.host_neigh());
        }
        for (k, (v, _)) in &d.host_sysctls {
            o.host_sysctls.insert(k.clone(), v.clone());
        }
        o.netns.insert(name.clone(), ns);
    }
    o
}

#[cfg(test)]
mod tests;
