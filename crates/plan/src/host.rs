//! The host plan: the complete kernel state berth owns on this host ([`DesiredHost`]), what the
//! kernel has ([`ObservedHost`]), and the pure diff between them ([`diff`]) as ordered,
//! idempotent [`Step`]s, each naming the object it serves and why it is needed.
//!
//! [`crate::driver::desired`] computes the desired state from the intent, each network's driver
//! contributing its part. This is the middle of the reconcile loop (docs/DESIGN.md):
//!
//! ```text
//! store ──▶ driver::desired(intent) ──▶ DesiredHost ─┐
//!                                            ├─▶ diff ──▶ Vec<Step> ──▶ kernel::apply
//! kernel::observe(request) ──▶ ObservedHost ─┘
//! ```
//!
//! # Ownership
//! berth changes or deletes only links that carry its mark ([`is_owned`]): an `ifalias` starting
//! with `berth:` (human-readable, set right after creation) or the MAC berth derives from the
//! link's name ([`crate::names::owner_mac`], set atomically *in* the creating `RTM_NEWLINK`, so
//! a crash between creating a link and writing its alias cannot leave an unmarked link of
//! berth's behind). A link without the mark is never touched, whatever its name — with one
//! exception the user asks for explicitly: a bridge adopted with `berth.bridge.adopt=true`,
//! which berth only adds addresses to and never removes.
//!
//! # Scope
//! An API call changes one container or one network: its pass observes only the links, network
//! namespaces and sysctls that object involves ([`ObserveRequest`]), and the diff proposes steps
//! only for what was observed, so the work is O(what changed). Start-up, drift notifications
//! and the timer observe everything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::firewall::{Elements, FirewallConfig};
use crate::model::{
    BridgePlan, EndpointPlan, NetworkSpec, ParentPlan, RoutePlan, ShimPlan, SublinkPlan,
};
use crate::names;

/// Prefix of the `ifalias` of every link berth creates.
pub const MARK_PREFIX: &str = "berth:";

/// The `ifalias` of a network's bridge: `berth:net:<12 hex of the network id>`.
pub fn bridge_alias(net: &NetworkSpec) -> String {
    format!("{MARK_PREFIX}net:{}", names::short_id(&net.id))
}

/// The `ifalias` of an endpoint's host-side veth: `berth:ep:<endpoint>:<container>` (12 hex
/// each), so `ip -d link` names both causes.
pub fn veth_alias(endpoint_id: &str, container_id: &str) -> String {
    format!(
        "{MARK_PREFIX}ep:{}:{}",
        names::short_id(endpoint_id),
        names::short_id(container_id)
    )
}

/// Whether berth created `link` (see the module doc): the alias mark, or the owner MAC.
pub fn is_owned(link: &ObservedLink) -> bool {
    link.alias
        .as_deref()
        .is_some_and(|a| a.starts_with(MARK_PREFIX))
        || link.mac == Some(names::owner_mac(&link.name))
}

/// A bridge berth wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredBridge {
    /// Name, MTU, gateway addresses.
    pub plan: BridgePlan,
    /// Its ownership mark.
    pub alias: String,
    /// Adopted (`berth.bridge.adopt=true`): not berth's; berth adds its gateway addresses and
    /// never removes the bridge or any other address.
    pub adopted: bool,
    /// The network's name, for messages.
    pub network: String,
}

/// An endpoint berth wants: a veth whose host side is a port of a bridge and whose peer is
/// `plan.ifname` inside a running container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredEndpoint {
    /// What the kernel layer needs (names, bridge, netns path, addresses, flags). Its `routes`
    /// are empty: routes are per namespace ([`DesiredHost::routes`]).
    pub plan: EndpointPlan,
    /// Its ownership mark.
    pub alias: String,
    /// Container name, for messages.
    pub container: String,
    /// Network name, for messages.
    pub network: String,
}

/// The key of a container interface in [`DesiredHost::sublinks`]: `<netns path>#<ifname>`.
pub fn sublink_key(netns: &str, ifname: &str) -> String {
    format!("{netns}#{ifname}")
}

/// The prefix of a retired container interface's name ([`retired_name`]).
pub const RETIRED_PREFIX: &str = "bret";

/// The name a retired macvlan/ipvlan container interface takes until its deletion, which
/// runs in the background, is done: `bret` + 8 hex of its endpoint's id (12 characters).
pub fn retired_name(endpoint_id: &str) -> String {
    let hex: String = endpoint_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("{RETIRED_PREFIX}{hex:0>8}")
}

/// Whether `ifname` is a retired container interface: already down, without addresses and
/// out of every endpoint, so deleting it can wait.
pub fn is_retired(ifname: &str) -> bool {
    ifname.len() == RETIRED_PREFIX.len() + 8
        && ifname.starts_with(RETIRED_PREFIX)
        && ifname[RETIRED_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

/// A container interface on a host interface (macvlan, ipvlan) berth wants, created directly in
/// the container's namespace. It lives and dies with that namespace: berth owns every such link
/// of the namespaces of its containers, and never touches the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSublink {
    /// What the kernel layer needs. Its `routes` are empty: routes are per namespace.
    pub plan: SublinkPlan,
    /// Container name, for messages.
    pub container: String,
    /// Network name, for messages.
    pub network: String,
}

/// A macvlan network's host shim berth wants (a link of berthd's namespace, marked like a
/// bridge: owner MAC in the creating request, then the alias).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredShim {
    /// Name, parent, mark, routes.
    pub plan: ShimPlan,
    /// The network's name, for messages.
    pub network: String,
}

/// A parent link berth creates for macvlan/ipvlan networks (an 802.1Q sub-interface, or the
/// isolated segment of an `--internal` network), wanted while any network is on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredParent {
    /// Name, kind, mark.
    pub plan: ParentPlan,
    /// The networks on it, for messages.
    pub networks: Vec<String>,
}

/// The default routes a container namespace should have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRoutes {
    /// Container name, for messages.
    pub container: String,
    /// The gateway endpoint's interface (`eth0`), empty when there is none.
    pub ifname: String,
    /// The default routes (one per family the gateway endpoint has), possibly none.
    pub routes: Vec<RoutePlan>,
}

/// Everything berth wants the kernel of this host to have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredHost {
    /// Bridges by name.
    pub bridges: BTreeMap<String, DesiredBridge>,
    /// Endpoints by host-side veth name.
    pub endpoints: BTreeMap<String, DesiredEndpoint>,
    /// Default routes per container namespace path.
    pub routes: BTreeMap<String, DesiredRoutes>,
    /// Container interfaces on a host interface (macvlan, ipvlan) by [`sublink_key`].
    #[serde(default)]
    pub sublinks: BTreeMap<String, DesiredSublink>,
    /// Host shims of macvlan networks by name.
    #[serde(default)]
    pub shims: BTreeMap<String, DesiredShim>,
    /// Parent links berth creates for macvlan/ipvlan networks, by name.
    #[serde(default)]
    pub parents: BTreeMap<String, DesiredParent>,
    /// VXLAN ports of overlay networks by name, with their remote entries.
    #[serde(default)]
    pub vxlans: BTreeMap<String, crate::overlay::DesiredVxlan>,
    /// Links berthd's own datapath holds open (the WireGuard tun device of encrypted overlay
    /// networks): marked as berth's, created and removed by that datapath, never orphans.
    #[serde(default)]
    pub kept_links: BTreeSet<String>,
    /// Sysctls of berthd's namespace: key → (value, why).
    pub sysctls: BTreeMap<String, (String, String)>,
    /// The static rule set's configuration.
    pub firewall: FirewallConfig,
    /// nft set (and, in a full pass, map) elements.
    pub elements: Elements,
    /// Whether `elements` includes the published-port maps (a full pass) or only the sets.
    pub with_maps: bool,
    /// The bridge ports whose anti-spoofing elements (`table bridge berth`) this pass decides:
    /// `None` for every port (a pass over every running container); a scoped pass names the
    /// ports of its containers and links, and leaves the other ports' elements alone.
    #[serde(default)]
    pub guard_scope: Option<BTreeSet<String>>,
}

/// What a pass observes. `None` for `links` means every link of the namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserveRequest {
    /// Links of berthd's namespace to look at (by name); `None`: all of them.
    pub links: Option<BTreeSet<String>>,
    /// Container namespaces to look into (paths).
    pub netns: BTreeSet<String>,
    /// Of those, namespaces berthd just created (a container being started): they hold only
    /// `lo`, so they are not looked into.
    #[serde(default)]
    pub fresh_netns: BTreeSet<String>,
    /// Sysctls to read.
    pub sysctls: BTreeSet<String>,
    /// Read berth's nft table back (else the caller supplies what it last applied).
    pub firewall: bool,
    /// Links of berthd's namespace whose routes (main table) to read.
    #[serde(default)]
    pub routes_of: BTreeSet<String>,
    /// VXLAN devices whose permanent forwarding and neighbour entries to read.
    #[serde(default)]
    pub vxlan_entries_of: BTreeSet<String>,
    /// Overlay namespaces (paths) whose endpoint host sides (their veths) to read, added to
    /// `links` with [`ObservedLink::netns`] set; with `links: None`, all of them (orphans).
    #[serde(default)]
    pub overlay_netns: BTreeSet<String>,
}

/// The overlay namespaces the endpoints of `desired` have their host sides in.
pub fn endpoint_namespaces(desired: &DesiredHost) -> BTreeSet<String> {
    desired
        .endpoints
        .values()
        .filter_map(|e| e.plan.host_netns.clone())
        .collect()
}

impl ObserveRequest {
    /// Everything `desired` involves, plus every link of the namespace (orphans).
    pub fn full(desired: &DesiredHost) -> ObserveRequest {
        ObserveRequest {
            links: None,
            netns: desired.routes.keys().cloned().collect(),
            fresh_netns: BTreeSet::new(),
            sysctls: desired.sysctls.keys().cloned().collect(),
            firewall: true,
            routes_of: desired.shims.keys().cloned().collect(),
            vxlan_entries_of: crate::overlay::devices(desired),
            overlay_netns: endpoint_namespaces(desired),
        }
    }

    /// Only what `desired` involves plus the links named in `also` (e.g. the veth of an
    /// endpoint just disconnected), and no nft read-back.
    pub fn scoped(desired: &DesiredHost, also: &[String]) -> ObserveRequest {
        let mut links: BTreeSet<String> = desired.bridges.keys().cloned().collect();
        links.extend(desired.endpoints.keys().cloned());
        links.extend(desired.shims.keys().cloned());
        links.extend(desired.parents.keys().cloned());
        links.extend(desired.vxlans.keys().cloned());
        links.extend(also.iter().cloned());
        ObserveRequest {
            links: Some(links),
            netns: desired.routes.keys().cloned().collect(),
            fresh_netns: BTreeSet::new(),
            sysctls: desired.sysctls.keys().cloned().collect(),
            firewall: false,
            routes_of: desired.shims.keys().cloned().collect(),
            vxlan_entries_of: crate::overlay::devices(desired),
            overlay_netns: endpoint_namespaces(desired),
        }
    }
}

/// Why a bridge berth owns must have its settings changed (forward delay 0, multicast
/// snooping off), or `None` when it has them.
///
/// *Forward delay.* berth's bridges run without STP, where the forward delay has no use, but a
/// non-zero one still costs: the kernel's `br_make_forwarding` puts each new port in
/// forwarding at once and then re-arms the port's `forward_delay_timer`, whose expiry 15 s
/// later (the default) changes nothing and sends an `RTM_NEWLINK` (`AF_BRIDGE`) for the port
/// anyway: a timer per port and a wake-up of every link listener 15 s after each start. With
/// 0 the kernel arms no timer at all.
///
/// *Multicast snooping.* With snooping on (the kernel's default), each port that comes up
/// runs `br_port_state_selection`, which calls `br_multicast_enable_port` for every port of
/// the bridge and restarts each one's own-query timers: O(ports) work and timers on every
/// start, 0.16 ms more per port up at 500 ports (measured bare, `floor.c`). What snooping
/// would give — multicast only to the ports that joined a group — needs a querier on the
/// bridge's segment, which berth does not run (the bridge's own querier is off, as Docker
/// leaves it), and without one the kernel floods multicast to every port anyway
/// (`br_multicast_querier_exists`). Off, multicast is flooded to the network's containers,
/// as it already was (only a container sending IGMP/MLD queries itself made snooping filter);
/// nothing reaches a container that it could not get by joining the group.
pub fn bridge_settings_drift(link: &ObservedLink) -> Option<String> {
    let mut why = Vec::new();
    if let Some(d) = link.forward_delay.filter(|d| *d != 0) {
        why.push(format!(
            "forward delay {}.{:02} s instead of 0 (no STP: a timer and a notification per port)",
            d / 100,
            d % 100
        ));
    }
    if link.mcast_snooping == Some(true) {
        why.push(
            "multicast snooping on (no querier: every port's timers restarted at each port's up)"
                .to_string(),
        );
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// One link as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedLink {
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `veth`, …); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    /// Name of its master (the bridge of a bridge port).
    pub master: Option<String>,
    /// `IFF_UP`.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// `IFLA_IFALIAS`.
    pub alias: Option<String>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// Addresses with prefix length (IPv6 link-local ones left out).
    pub addrs: Vec<IpNet>,
    /// Bridge-port flags of a port: (hairpin, isolated).
    pub port_flags: Option<(bool, bool)>,
    /// A bridge's forward delay (`IFLA_BR_FORWARD_DELAY`, in centiseconds); `None` for other
    /// links or when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_delay: Option<u32>,
    /// A bridge's multicast snooping (`IFLA_BR_MCAST_SNOOPING`); `None` for other links or
    /// when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcast_snooping: Option<bool>,
    /// The namespace it was read in when not berthd's own: an endpoint's host side in an
    /// overlay network's namespace ([`ObserveRequest::overlay_netns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// A container namespace as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNetns {
    /// Whether it could be entered at all (the container may have just died).
    pub reachable: bool,
    /// Its links by name.
    pub links: BTreeMap<String, ObservedLink>,
    /// Its default routes (main table).
    pub default_routes: Vec<RoutePlan>,
}

/// berth's nft table as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedFirewall {
    /// The rules of berth's own chains as (chain, comment), in order
    /// ([`crate::firewall::observed_static_rules`]); empty after `nft flush table` or when the
    /// table does not exist.
    pub rules: Vec<(String, String)>,
    /// Set and map elements.
    pub elements: Elements,
}

impl ObservedFirewall {
    /// Whether the static chains hold exactly the rules [`crate::firewall::base_script`]
    /// writes for `cfg` (rule order within a chain matters).
    pub fn static_ok(&self, cfg: &FirewallConfig) -> bool {
        fn group(v: &[(String, String)]) -> BTreeMap<&str, Vec<&str>> {
            let mut m: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (chain, comment) in v {
                m.entry(chain.as_str()).or_default().push(comment.as_str());
            }
            m
        }
        let want = crate::firewall::static_rules_shared(cfg);
        // The same sequence is the same grouping (berth's cache stands in for the table in
        // most passes and holds exactly these); otherwise compare chain by chain.
        self.rules == *want || group(&self.rules) == group(&want)
    }
}

/// What the kernel has, as far as a pass looked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedHost {
    /// Links of berthd's namespace that were looked at, by name (a requested link that does
    /// not exist is simply absent).
    pub links: BTreeMap<String, ObservedLink>,
    /// Whether `links` is every link of the namespace (orphans can be judged).
    pub all_links: bool,
    /// Container namespaces by path.
    pub netns: BTreeMap<String, ObservedNetns>,
    /// Sysctl values (absent: the key does not exist).
    pub sysctls: BTreeMap<String, String>,
    /// berth's table, when it was read back.
    pub firewall: Option<ObservedFirewall>,
    /// Destinations of the main-table routes through the links of `routes_of`, by link.
    #[serde(default)]
    pub link_routes: BTreeMap<String, Vec<IpNet>>,
    /// Permanent entries of the VXLAN devices of `vxlan_entries_of`, by device.
    #[serde(default)]
    pub vxlan_entries: BTreeMap<String, crate::overlay::ObservedEntries>,
}

/// What a step does. Every variant is idempotent: applying it twice, or after an interruption,
/// converges to the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Kind")]
pub enum StepOp {
    /// Creates an overlay network's VXLAN device (learning off, ARP proxy on) as a port of
    /// its bridge, up, with berth's owner MAC and mark.
    CreateVxlan {
        /// Name, VNI, port, local address, MTU, bridge, mark.
        plan: crate::overlay::VxlanPlan,
    },
    /// Makes a VXLAN device's permanent remote entries exactly the wanted ones.
    SetVxlanEntries {
        /// The VXLAN device.
        dev: String,
        /// Forwarding entries to add or replace: MAC → remote VTEP.
        fdb_add: Vec<(String, IpAddr)>,
        /// Forwarding entries to remove (by MAC).
        fdb_del: Vec<String>,
        /// Neighbour entries to add or replace: address → MAC.
        neigh_add: Vec<(IpAddr, String)>,
        /// Neighbour entries to remove.
        neigh_del: Vec<IpAddr>,
        /// The namespace the device is in (an overlay network's), `None` for berthd's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
    },
    /// (Re)writes the static rules of `table inet berth` (creating table, sets and chains if
    /// missing; never touching chain `user` or any element).
    FirewallBase {
        /// The configuration the rules depend on.
        config: FirewallConfig,
    },
    /// Writes a sysctl of berthd's namespace.
    SetSysctl {
        /// Key (`net.ipv4.ip_forward`).
        key: String,
        /// Value.
        value: String,
    },
    /// Creates a bridge with berth's mark, then configures it as [`StepOp::ConfigureBridge`].
    CreateBridge {
        /// The bridge.
        plan: BridgePlan,
        /// Its mark.
        alias: String,
    },
    /// Makes an existing bridge's MTU, up state, alias and addresses as planned. With
    /// `keep_others`, addresses not in the plan are left alone (an adopted bridge).
    ConfigureBridge {
        /// The bridge.
        plan: BridgePlan,
        /// Its mark (`None`: leave the alias alone, an adopted bridge).
        alias: Option<String>,
        /// Keep addresses that are not in the plan.
        keep_others: bool,
    },
    /// Creates an endpoint's veth pair (host side marked, port of its bridge, up; peer inside
    /// the container namespace with its addresses and up).
    CreateEndpoint {
        /// The endpoint.
        plan: EndpointPlan,
        /// The host side's mark.
        alias: String,
    },
    /// Creates a container interface on a host interface (macvlan, ipvlan) directly in the
    /// container's namespace (one `RTM_NEWLINK`), then configures it there (up, addresses,
    /// routes).
    CreateSublink {
        /// The interface.
        plan: SublinkPlan,
    },
    /// Makes a parent link berth owns exist: created if missing (an 802.1Q sub-interface of its
    /// base, a dummy link or an empty bridge), marked and up.
    EnsureParent {
        /// The link.
        plan: ParentPlan,
    },
    /// Makes a macvlan network's host shim exist: created on its parent if missing (macvlan,
    /// bridge mode, owner MAC), marked, up, its routes in place (replace: idempotent).
    EnsureShim {
        /// The shim.
        plan: ShimPlan,
    },
    /// Inside a container namespace: deletes the interface `ifname` (a stale or unwanted
    /// macvlan/ipvlan link; the namespace is one of berth's containers').
    DeleteContainerLink {
        /// Namespace path.
        netns: String,
        /// Interface.
        ifname: String,
    },
    /// Makes an existing host-side veth a port of its bridge, with its flags, up and marked.
    AttachPort {
        /// Host-side veth.
        veth: String,
        /// The bridge.
        bridge: String,
        /// Bridge-port isolation (`enable_icc=false`).
        isolated: bool,
        /// Its mark.
        alias: String,
        /// The namespace the veth and the bridge are in, `None` for berthd's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_netns: Option<String>,
    },
    /// Inside a container namespace: brings `ifname` up and adds the addresses it lacks, then
    /// announces them as a new endpoint does (`announce`), so the bridge and the neighbours
    /// learn its MAC again for addresses that came back.
    ConfigureContainerSide {
        /// Namespace path.
        netns: String,
        /// Interface (`eth0`).
        ifname: String,
        /// Addresses it must have.
        addrs: Vec<IpNet>,
        /// How it announces its addresses ([`crate::network::announce`]).
        #[serde(default)]
        announce: crate::model::Announce,
        /// For a veth on a bridge: the host side, whose bridge port must forward before the
        /// announcement is sent (`None` for macvlan/ipvlan, whose parent forwards already).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_ifname: Option<String>,
        /// The namespace `host_ifname` is in, `None` for berthd's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_netns: Option<String>,
    },
    /// Sets an endpoint's MTU on both ends of its veth (`RTM_SETLINK` with `IFLA_MTU` on
    /// `veth` here and on `ifname` in `netns`): an overlay network's MTU follows the
    /// cluster's underlay, and a container that keeps a larger one than its bridge and VXLAN
    /// port would see its big frames dropped there in silence.
    SetEndpointMtu {
        /// Host-side veth.
        veth: String,
        /// Namespace path.
        netns: String,
        /// Interface in the container (`eth0`).
        ifname: String,
        /// The MTU.
        mtu: u32,
        /// The namespace `veth` is in, `None` for berthd's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_netns: Option<String>,
    },
    /// Inside a container namespace: replaces every default route by `routes`.
    ReplaceRoutes {
        /// Namespace path.
        netns: String,
        /// The default routes to have.
        routes: Vec<RoutePlan>,
    },
    /// Applies an nft element diff (one atomic transaction).
    FirewallElements {
        /// The `nft -f` script (delete/add element lines): what the step does, for people.
        script: String,
        /// The same changes, per set: what the kernel layer executes (over netlink where it
        /// can, see `berth_kernel::nftnl`).
        #[serde(skip)]
        changes: Vec<crate::firewall::SetChange>,
        /// Elements added.
        added: usize,
        /// Elements removed.
        removed: usize,
        /// What the table's sets (and maps) hold once the script is applied: the daemon's
        /// cache of the table, and what a fake kernel takes on. As far as the observation
        /// went: a scoped pass given only its own ports' anti-spoofing elements (berthd's
        /// cache) has only those here.
        #[serde(skip)]
        after: Elements,
    },
    /// Removes addresses berth added to a link it does not own (an adopted bridge's gateway).
    RemoveAddrs {
        /// The link.
        link: String,
        /// The addresses.
        addrs: Vec<IpNet>,
    },
    /// Inside a container namespace: takes `ifname` down and removes its addresses, so the
    /// container can no longer use an endpoint whose veth is about to be deleted (the deletion
    /// itself, ~20 ms of the kernel's RCU grace periods, then happens off the request's path).
    RetireContainerSide {
        /// Namespace path.
        netns: String,
        /// Interface (`eth1`).
        ifname: String,
        /// Then renamed to this ([`retired_name`]): a macvlan/ipvlan link, deleted off the
        /// request's path by a later pass, must not hold its name (a quick reconnect reuses it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rename_to: Option<String>,
    },
    /// Deletes a link berth owns (`RTM_DELLINK`; a veth's peer goes with it).
    DeleteLink {
        /// Its name.
        name: String,
        /// The namespace it is in (an endpoint's host side in an overlay network's), `None`
        /// for berthd's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
    },
}

/// One step of a plan: what to do, to which object, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What to do.
    pub op: StepOp,
    /// The object it serves, for people (`veth vb1a2b… of container web on network app`).
    pub object: String,
    /// Why it is needed (`missing`, `not a port of berth-1234`, `orphan: no network wants it`).
    pub reason: String,
}

impl StepOp {
    /// The action's name (`CreateBridge`, …).
    pub fn action(&self) -> &'static str {
        match self {
            StepOp::FirewallBase { .. } => "FirewallBase",
            StepOp::SetSysctl { .. } => "SetSysctl",
            StepOp::CreateBridge { .. } => "CreateBridge",
            StepOp::ConfigureBridge { .. } => "ConfigureBridge",
            StepOp::CreateEndpoint { .. } => "CreateEndpoint",
            StepOp::AttachPort { .. } => "AttachPort",
            StepOp::CreateSublink { .. } => "CreateSublink",
            StepOp::EnsureShim { .. } => "EnsureShim",
            StepOp::EnsureParent { .. } => "EnsureParent",
            StepOp::DeleteContainerLink { .. } => "DeleteContainerLink",
            StepOp::ConfigureContainerSide { .. } => "ConfigureContainerSide",
            StepOp::SetEndpointMtu { .. } => "SetEndpointMtu",
            StepOp::ReplaceRoutes { .. } => "ReplaceRoutes",
            StepOp::FirewallElements { .. } => "FirewallElements",
            StepOp::RemoveAddrs { .. } => "RemoveAddrs",
            StepOp::RetireContainerSide { .. } => "RetireContainerSide",
            StepOp::DeleteLink { .. } => "DeleteLink",
            StepOp::CreateVxlan { .. } => "CreateVxlan",
            StepOp::SetVxlanEntries { .. } => "SetVxlanEntries",
        }
    }
}

impl Step {
    /// The step's action name (`CreateBridge`, …).
    pub fn action(&self) -> &'static str {
        self.op.action()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.action(), self.object, self.reason)
    }
}

/// Something the diff cannot fix and must not touch (a foreign link in the way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The object.
    pub object: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// What the kernel shows once `desired` is fully applied, as far as [`diff`] looks: the state a
/// pass may assume instead of observing it when nothing but its own request changed the
/// objects in its scope since the last pass (an API call on a running container: its
/// endpoints before the change, turned into the steps of exactly that change).
///
/// `None` when `desired` holds objects this model does not describe exactly (overlay VXLAN
/// ports and their remote entries): such a pass observes. The firewall is left `None` (the
/// caller supplies its element cache) and `all_links` false (nothing is judged an orphan but
/// what the model itself holds). Drift inside the scope is not seen by such a pass; the
/// kernel's notifications and the periodic check repair it as they repair drift anywhere.
pub fn assumed(desired: &DesiredHost) -> Option<ObservedHost> {
    if !desired.vxlans.is_empty() {
        return None;
    }
    let mut o = ObservedHost::default();
    let link = |name: &str, kind: &str| ObservedLink {
        name: name.to_string(),
        kind: Some(kind.into()),
        up: true,
        ..ObservedLink::default()
    };
    for (name, b) in &desired.bridges {
        o.links.insert(
            name.clone(),
            ObservedLink {
                mtu: b.plan.mtu,
                alias: Some(b.alias.clone()),
                mac: Some(names::owner_mac(name)),
                addrs: b.plan.addrs.clone(),
                ..link(name, "bridge")
            },
        );
    }
    for (name, p) in &desired.parents {
        o.links.insert(
            name.clone(),
            ObservedLink {
                alias: Some(p.plan.alias.clone()),
                ..link(name, p.plan.kind.kind())
            },
        );
    }
    for (name, sh) in &desired.shims {
        o.links.insert(
            name.clone(),
            ObservedLink {
                alias: Some(sh.plan.alias.clone()),
                mac: Some(names::owner_mac(name)),
                ..link(name, "macvlan")
            },
        );
        o.link_routes
            .insert(name.clone(), sh.plan.routes.iter().map(|r| r.dst).collect());
    }
    for (name, e) in &desired.endpoints {
        o.links.insert(
            name.clone(),
            ObservedLink {
                master: Some(e.plan.bridge.clone()),
                mtu: e.plan.mtu,
                alias: Some(e.alias.clone()),
                mac: Some(names::owner_mac(name)),
                port_flags: Some((true, e.plan.isolated)),
                netns: e.plan.host_netns.clone(),
                ..link(name, "veth")
            },
        );
        let ns = o.netns.entry(e.plan.netns.clone()).or_default();
        ns.reachable = true;
        ns.links.insert(
            e.plan.ifname.clone(),
            ObservedLink {
                mtu: e.plan.mtu,
                addrs: e.plan.addrs.clone(),
                ..link(&e.plan.ifname, "veth")
            },
        );
    }
    for sl in desired.sublinks.values() {
        let ns = o.netns.entry(sl.plan.netns.clone()).or_default();
        ns.reachable = true;
        ns.links.insert(
            sl.plan.ifname.clone(),
            ObservedLink {
                mac: sl.plan.mac.as_deref().and_then(names::parse_mac),
                addrs: sl.plan.addrs.clone(),
                ..link(&sl.plan.ifname, sl.plan.kind.kind())
            },
        );
    }
    for (ns, r) in &desired.routes {
        let n = o.netns.entry(ns.clone()).or_default();
        n.reachable = true;
        n.default_routes = r.routes.clone();
    }
    for (k, (v, _)) in &desired.sysctls {
        o.sysctls.insert(k.clone(), v.clone());
    }
    Some(o)
}

/// [`assumed`], limited to what the observation `req` would have looked at: its links (all of
/// them when it names none), namespaces, sysctls and links' routes. What a scoped pass would
/// have seen if the kernel held exactly `desired`.
pub fn assumed_for(desired: &DesiredHost, req: &ObserveRequest) -> Option<ObservedHost> {
    let mut o = assumed(desired)?;
    if let Some(links) = &req.links {
        o.links.retain(|name, _| links.contains(name));
    }
    o.netns.retain(|path, _| req.netns.contains(path));
    o.sysctls.retain(|key, _| req.sysctls.contains(key));
    o.link_routes.retain(|name, _| req.routes_of.contains(name));
    Some(o)
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Ordered steps.
    pub steps: Vec<Step>,
    /// What is wrong but not berth's to change.
    pub problems: Vec<Problem>,
}

fn same_addrs(have: &[IpNet], want: &[IpNet]) -> bool {
    let a: BTreeSet<IpNet> = have.iter().copied().collect();
    let b: BTreeSet<IpNet> = want.iter().copied().collect();
    a == b
}

fn missing_addrs(have: &[IpNet], want: &[IpNet]) -> Vec<IpNet> {
    want.iter().filter(|w| !have.contains(w)).copied().collect()
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// Addresses that count for comparisons (IPv6 link-local ones are the kernel's).
pub fn significant(addrs: &[IpNet]) -> Vec<IpNet> {
    addrs
        .iter()
        .filter(|a| !is_v6_link_local(&a.addr()))
        .copied()
        .collect()
}

/// The ordered steps that turn `observed` into `desired`, for everything `observed` looked at.
///
/// Order: static firewall rules (the forwarding guard must exist before forwarding is on), the
/// host sysctls, bridges (and their sysctls), endpoints (veth, bridge port, container side),
/// default routes, nft elements, and last the deletions (veths before bridges): what makes
/// containers work comes first, what only cleans up comes after (a veth deletion costs the
/// kernel ~20 ms of RCU grace periods).
pub fn diff(observed: &ObservedHost, desired: &DesiredHost) -> Plan {
    let mut plan = Plan::default();
    let steps = &mut plan.steps;

    // 1. Static firewall rules.
    if let Some(fw) = &observed.firewall {
        if !fw.static_ok(&desired.firewall) {
            steps.push(Step {
                op: StepOp::FirewallBase {
                    config: desired.firewall,
                },
                object: "table inet berth".into(),
                reason: "its static rules are missing or differ from berth's".into(),
            });
        }
    }

    // 2. Host sysctls (per-bridge ones come with their bridge, below).
    for (key, (value, why)) in desired.sysctls.iter().filter(|(k, _)| !is_link_sysctl(k)) {
        match observed.sysctls.get(key) {
            Some(v) if v.trim() != value => steps.push(Step {
                op: StepOp::SetSysctl {
                    key: key.clone(),
                    value: value.clone(),
                },
                object: format!("sysctl {key}"),
                reason: format!("is {}, must be {value} ({why})", v.trim()),
            }),
            _ => {}
        }
    }

    // 3. Bridges.
    let mut new_bridges = BTreeSet::new();
    for (name, b) in &desired.bridges {
        let object = format!("bridge {name} of network {}", b.network);
        match observed.links.get(name) {
            None => {
                new_bridges.insert(name.clone());
                steps.push(Step {
                    op: StepOp::CreateBridge {
                        plan: b.plan.clone(),
                        alias: b.alias.clone(),
                    },
                    object,
                    reason: "missing".into(),
                });
            }
            Some(link) if link.kind.as_deref() != Some("bridge") => {
                plan.problems.push(Problem {
                    object,
                    message: format!(
                        "a link of kind {} named {name} exists and is not berth's: remove it or \
                         recreate the network with another bridge name",
                        link.kind.as_deref().unwrap_or("device")
                    ),
                });
            }
            Some(link) if !b.adopted && !is_owned(link) => {
                plan.problems.push(Problem {
                    object,
                    message: format!(
                        "bridge {name} exists but berth did not create it: berth leaves it alone \
                         (remove it, or recreate the network with -o berth.bridge.adopt=true)"
                    ),
                });
            }
            Some(link) => {
                let have = significant(&link.addrs);
                let addrs_ok = if b.adopted {
                    missing_addrs(&have, &b.plan.addrs).is_empty()
                } else {
                    same_addrs(&have, &b.plan.addrs)
                };
                let alias_ok = b.adopted || link.alias.as_deref() == Some(b.alias.as_str());
                let mut why = Vec::new();
                if !link.up {
                    why.push("down".to_string());
                }
                if link.mtu != b.plan.mtu {
                    why.push(format!("mtu {} instead of {}", link.mtu, b.plan.mtu));
                }
                if !addrs_ok {
                    why.push(format!(
                        "addresses {} instead of {}",
                        fmt_addrs(&have),
                        fmt_addrs(&b.plan.addrs)
                    ));
                }
                if !alias_ok {
                    why.push("mark missing".into());
                }
                // An adopted bridge's timers and snooping are its owner's business.
                if let Some(w) = bridge_settings_drift(link).filter(|_| !b.adopted) {
                    why.push(w);
                }
                if !why.is_empty() {
                    steps.push(Step {
                        op: StepOp::ConfigureBridge {
                            plan: b.plan.clone(),
                            alias: (!b.adopted).then(|| b.alias.clone()),
                            keep_others: b.adopted,
                        },
                        object,
                        reason: why.join(", "),
                    });
                }
            }
        }
    }
    // Per-bridge sysctls: a bridge created in this pass has its defaults, which differ.
    for (key, (value, why)) in desired.sysctls.iter().filter(|(k, _)| is_link_sysctl(k)) {
        let bridge = key.split('.').nth(3).unwrap_or_default();
        let fresh = new_bridges.contains(bridge);
        let current = observed.sysctls.get(key).map(|v| v.trim().to_string());
        // A bridge created in this pass has the kernel's defaults (its keys could not be read
        // before it existed). A key that does not exist (IPv6 disabled in the kernel) is left.
        let needed = fresh || current.as_deref().is_some_and(|v| v != value);
        if needed {
            steps.push(Step {
                op: StepOp::SetSysctl {
                    key: key.clone(),
                    value: value.clone(),
                },
                object: format!("sysctl {key}"),
                reason: match current {
                    Some(v) if !fresh => format!("is {v}, must be {value} ({why})"),
                    _ => format!("new bridge ({why})"),
                },
            });
        }
    }

    // 3a. Parent links berth owns (before the shims and container links on them).
    for (name, p) in &desired.parents {
        let object = format!(
            "{} parent {name} of network {}",
            p.plan.kind.kind(),
            p.networks.join(", ")
        );
        let ensure = |reason: String| Step {
            op: StepOp::EnsureParent {
                plan: p.plan.clone(),
            },
            object: object.clone(),
            reason,
        };
        match observed.links.get(name) {
            None => steps.push(ensure("missing".into())),
            Some(link) if link.alias.as_deref() != Some(p.plan.alias.as_str()) => {
                // Not berth's (made by hand after berth's went away): used as it is, never
                // changed or removed.
                if !link.up {
                    plan.problems.push(Problem {
                        object: object.clone(),
                        message: format!(
                            "{name} exists, is down and is not berth's: berth leaves it alone \
                             (bring it up, or remove it and berth makes its own)"
                        ),
                    });
                }
            }
            Some(link) if !link.up => steps.push(ensure("down".into())),
            Some(_) => {}
        }
    }

    // 3b. Host shims of macvlan networks.
    for (name, sh) in &desired.shims {
        let object = format!("host shim {name} of network {}", sh.network);
        let ensure = |reason: String| Step {
            op: StepOp::EnsureShim {
                plan: sh.plan.clone(),
            },
            object: object.clone(),
            reason,
        };
        match observed.links.get(name) {
            None => steps.push(ensure("missing".into())),
            Some(link) if !is_owned(link) || link.kind.as_deref() != Some("macvlan") => {
                plan.problems.push(Problem {
                    object: object.clone(),
                    message: format!(
                        "a {} link named {name} exists and is not berth's shim: berth leaves it alone",
                        link.kind.as_deref().unwrap_or("device")
                    ),
                })
            }
            Some(link) => {
                let mut why = Vec::new();
                if !link.up {
                    why.push("down".to_string());
                }
                if link.alias.as_deref() != Some(sh.plan.alias.as_str()) {
                    why.push("mark missing".into());
                }
                let have = observed.link_routes.get(name).cloned().unwrap_or_default();
                let missing: Vec<String> = sh
                    .plan
                    .routes
                    .iter()
                    .filter(|r| !have.contains(&r.dst))
                    .map(|r| r.dst.to_string())
                    .collect();
                if !missing.is_empty() {
                    why.push(format!("no route to {}", missing.join(", ")));
                }
                if !why.is_empty() {
                    steps.push(ensure(why.join(", ")));
                }
            }
        }
    }

    // 3c. VXLAN ports of overlay networks and their remote endpoints' entries.
    crate::overlay::diff(observed, desired, &mut plan);
    let steps = &mut plan.steps;

    // 3d. New nft elements (keys the table does not hold), in a transaction of their own before
    //     any endpoint is plumbed: a new bridge port must be in `guarded`, with its MAC and
    //     addresses, before its container can send through it — `prerouting` checks only the
    //     ports in `guarded`, so a port that went up first would forward a hostile container's
    //     spoofed frames until step 6. Changed and unwanted elements stay in step 6, after the
    //     links they describe are made or retired.
    let mut elements_have = None;
    if let Some(fw) = &observed.firewall {
        let mut have = elements_in_scope(&fw.elements, desired);
        let fresh = crate::firewall::fresh_elements(&have, &desired.elements);
        if !fresh.is_empty() {
            // Only additions: none of their keys is in the table.
            let changes = crate::firewall::diff_changes(&Elements::default(), &fresh);
            let script = crate::firewall::changes_script(&changes);
            let mut after = fw.elements.clone();
            after.extend(&fresh);
            let added = fresh.len();
            steps.push(Step {
                op: StepOp::FirewallElements {
                    script,
                    changes,
                    added,
                    removed: 0,
                    after,
                },
                object: "elements of table inet berth".into(),
                reason: format!("{added} missing (before the endpoints that need them)"),
            });
        }
        have.extend(&fresh);
        elements_have = Some(have);
    }

    // 4a. Container interfaces on host interfaces (macvlan, ipvlan) no endpoint wants any more
    //     (a disconnect), before anything is created under their name.
    for (path, ns) in observed.netns.iter().filter(|(_, n)| n.reachable) {
        for (ifname, link) in &ns.links {
            let kind = link.kind.as_deref().unwrap_or_default();
            if !matches!(kind, "macvlan" | "ipvlan")
                || desired.sublinks.contains_key(&sublink_key(path, ifname))
            {
                continue;
            }
            steps.push(Step {
                op: StepOp::DeleteContainerLink {
                    netns: path.clone(),
                    ifname: ifname.clone(),
                },
                object: format!("{kind} {ifname} in {path}"),
                reason: "no endpoint of the container wants it".into(),
            });
        }
    }

    // 4b. Container interfaces on host interfaces.
    for s in desired.sublinks.values() {
        let p = &s.plan;
        let Some(ns) = observed.netns.get(&p.netns).filter(|n| n.reachable) else {
            continue;
        };
        let kind = p.kind.kind();
        let object = format!(
            "{kind} {} on {} of container {} on network {}",
            p.ifname, p.parent, s.container, s.network
        );
        let create = Step {
            op: StepOp::CreateSublink { plan: p.clone() },
            object: object.clone(),
            reason: "missing".into(),
        };
        let Some(link) = ns.links.get(&p.ifname) else {
            steps.push(create);
            continue;
        };
        let want_mac = p.mac.as_deref().and_then(names::parse_mac);
        let mut stale = Vec::new();
        if link.kind.as_deref() != Some(kind) {
            stale.push(format!(
                "is a {} link, not {kind}",
                link.kind.as_deref().unwrap_or("device")
            ));
        }
        if want_mac.is_some() && link.mac != want_mac {
            stale.push(format!(
                "MAC {} instead of {}",
                link.mac.map(names::fmt_mac).unwrap_or_default(),
                p.mac.as_deref().unwrap_or_default()
            ));
        }
        if !stale.is_empty() {
            steps.push(Step {
                op: StepOp::DeleteContainerLink {
                    netns: p.netns.clone(),
                    ifname: p.ifname.clone(),
                },
                object: object.clone(),
                reason: stale.join(", "),
            });
            steps.push(Step {
                reason: "replaced".into(),
                ..create
            });
            continue;
        }
        let missing = missing_addrs(&significant(&link.addrs), &p.addrs);
        if !link.up || !missing.is_empty() {
            let mut why = Vec::new();
            if !link.up {
                why.push("down".to_string());
            }
            if !missing.is_empty() {
                why.push(format!("lacks {}", fmt_addrs(&missing)));
            }
            steps.push(Step {
                op: StepOp::ConfigureContainerSide {
                    netns: p.netns.clone(),
                    ifname: p.ifname.clone(),
                    addrs: p.addrs.clone(),
                    announce: p.announce,
                    host_ifname: None,
                    host_netns: None,
                },
                object,
                reason: why.join(", "),
            });
        }
    }

    // 4c. Endpoints.
    for (veth, e) in &desired.endpoints {
        let object = format!(
            "veth {veth} of container {} on network {}",
            e.container, e.network
        );
        let ns = observed.netns.get(&e.plan.netns);
        if ns.is_some_and(|n| !n.reachable) {
            // The container just died: its namespace and veths go with it.
            continue;
        }
        let peer = ns.and_then(|n| n.links.get(&e.plan.ifname));
        let bridge_missing_or_new = new_bridges.contains(&e.plan.bridge);
        match observed.links.get(veth) {
            None => steps.push(Step {
                op: StepOp::CreateEndpoint {
                    plan: e.plan.clone(),
                    alias: e.alias.clone(),
                },
                object,
                reason: if bridge_missing_or_new {
                    "missing (its bridge is being recreated)".into()
                } else {
                    "missing".into()
                },
            }),
            Some(link) if !is_owned(link) => plan.problems.push(Problem {
                object,
                message: format!(
                    "a link named {veth} exists and is not berth's: berth leaves it alone"
                ),
            }),
            Some(link) => {
                let elsewhere = link.netns != e.plan.host_netns;
                if elsewhere || (ns.is_some() && peer.is_none()) {
                    // The host side exists but its peer is not in this container: a leftover of
                    // an earlier run whose namespace is still being destroyed. Or it is in
                    // another namespace than its bridge (an overlay network's endpoint made
                    // before overlay networks had namespaces of their own). Replace it.
                    steps.push(Step {
                        op: StepOp::DeleteLink {
                            name: veth.clone(),
                            netns: link.netns.clone(),
                        },
                        object: object.clone(),
                        reason: if elsewhere {
                            format!(
                                "in {}, not in {} with its bridge",
                                link.netns.as_deref().unwrap_or("berthd's namespace"),
                                e.plan.host_netns.as_deref().unwrap_or("berthd's namespace")
                            )
                        } else {
                            format!(
                                "its peer {} is not in the container's namespace",
                                e.plan.ifname
                            )
                        },
                    });
                    steps.push(Step {
                        op: StepOp::CreateEndpoint {
                            plan: e.plan.clone(),
                            alias: e.alias.clone(),
                        },
                        object,
                        reason: "replaced".into(),
                    });
                    continue;
                }
                let mut why = Vec::new();
                if link.master.as_deref() != Some(e.plan.bridge.as_str()) {
                    why.push(match &link.master {
                        Some(m) => format!("port of {m} instead of {}", e.plan.bridge),
                        None => format!("not a port of {}", e.plan.bridge),
                    });
                }
                if !link.up {
                    why.push("down".into());
                }
                if let Some((hairpin, isolated)) = link.port_flags {
                    if !hairpin || isolated != e.plan.isolated {
                        why.push("bridge-port flags differ".into());
                    }
                }
                if link.alias.as_deref() != Some(e.alias.as_str()) {
                    why.push("mark missing".into());
                }
                if !why.is_empty() {
                    steps.push(Step {
                        op: StepOp::AttachPort {
                            veth: veth.clone(),
                            bridge: e.plan.bridge.clone(),
                            isolated: e.plan.isolated,
                            alias: e.alias.clone(),
                            host_netns: e.plan.host_netns.clone(),
                        },
                        object: object.clone(),
                        reason: why.join(", "),
                    });
                }
                let peer_mtu = peer.map(|p| p.mtu).filter(|m| *m != e.plan.mtu);
                if link.mtu != e.plan.mtu || peer_mtu.is_some() {
                    steps.push(Step {
                        op: StepOp::SetEndpointMtu {
                            veth: veth.clone(),
                            netns: e.plan.netns.clone(),
                            ifname: e.plan.ifname.clone(),
                            mtu: e.plan.mtu,
                            host_netns: e.plan.host_netns.clone(),
                        },
                        object: object.clone(),
                        reason: format!(
                            "mtu {} instead of {}",
                            peer_mtu.unwrap_or(link.mtu),
                            e.plan.mtu
                        ),
                    });
                }
                if let Some(peer) = peer {
                    // IPv6 link-local addresses are not observed (the kernel makes its own on
                    // every interface), so one asked for (`--link-local-ip fe80::…`) is put
                    // there with the endpoint and not checked for drift.
                    let missing =
                        missing_addrs(&significant(&peer.addrs), &significant(&e.plan.addrs));
                    if !peer.up || !missing.is_empty() {
                        let mut why = Vec::new();
                        if !peer.up {
                            why.push("down".to_string());
                        }
                        if !missing.is_empty() {
                            why.push(format!("lacks {}", fmt_addrs(&missing)));
                        }
                        steps.push(Step {
                            op: StepOp::ConfigureContainerSide {
                                netns: e.plan.netns.clone(),
                                ifname: e.plan.ifname.clone(),
                                addrs: e.plan.addrs.clone(),
                                announce: e.plan.announce,
                                host_ifname: Some(e.plan.host_ifname.clone()),
                                host_netns: e.plan.host_netns.clone(),
                            },
                            object: format!(
                                "{} of container {} on network {}",
                                e.plan.ifname, e.container, e.network
                            ),
                            reason: why.join(", "),
                        });
                    }
                }
            }
        }
    }

    // 5. Default routes of container namespaces. A namespace whose gateway endpoint is being
    //    created gets its routes with the endpoint (CreateEndpoint adds no routes: they are
    //    replaced here, after every interface exists).
    for (netns, r) in &desired.routes {
        let Some(ns) = observed.netns.get(netns) else {
            continue;
        };
        if !ns.reachable {
            continue;
        }
        let have: BTreeSet<(IpNet, IpAddr)> =
            ns.default_routes.iter().map(|r| (r.dst, r.via)).collect();
        let want: BTreeSet<(IpNet, IpAddr)> = r.routes.iter().map(|r| (r.dst, r.via)).collect();
        // A macvlan gateway interface replaced in this pass loses its routes with it.
        let recreated = steps.iter().any(|s| match &s.op {
            StepOp::DeleteContainerLink { netns: n, ifname } => n == netns && *ifname == r.ifname,
            // A replaced veth (deleted, then created again) takes its peer's routes with it.
            StepOp::DeleteLink { name, .. } => desired
                .endpoints
                .get(name)
                .is_some_and(|e| e.plan.netns == *netns && e.plan.ifname == r.ifname),
            _ => false,
        });
        if have != want || recreated {
            // The gateway interface is created in this pass and nothing is routed yet: its
            // creation adds the routes (no second trip into the namespace).
            if have.is_empty() || recreated {
                let creating = steps.iter_mut().find_map(|s| match &mut s.op {
                    StepOp::CreateEndpoint { plan, .. }
                        if plan.netns == *netns && plan.ifname == r.ifname =>
                    {
                        Some(&mut plan.routes)
                    }
                    StepOp::CreateSublink { plan }
                        if plan.netns == *netns && plan.ifname == r.ifname =>
                    {
                        Some(&mut plan.routes)
                    }
                    _ => None,
                });
                if let Some(routes) = creating {
                    *routes = r.routes.clone();
                    continue;
                }
            }
            steps.push(Step {
                op: StepOp::ReplaceRoutes {
                    netns: netns.clone(),
                    routes: r.routes.clone(),
                },
                object: format!("default routes of container {}", r.container),
                reason: format!(
                    "has [{}], must have [{}]",
                    fmt_routes(&ns.default_routes),
                    fmt_routes(&r.routes)
                ),
            });
        }
    }

    // 6. nft elements: what step 3d left (changed and unwanted elements).
    if let (Some(fw), Some(have)) = (&observed.firewall, &elements_have) {
        // A rewritten base keeps the sets' elements; a deleted table has none (observed empty).
        let changes = crate::firewall::diff_changes(have, &desired.elements);
        if !changes.is_empty() {
            let script = crate::firewall::changes_script(&changes);
            let (added, removed) = count_diff(have, &desired.elements);
            let after = elements_after(&fw.elements, desired);
            steps.push(Step {
                op: StepOp::FirewallElements {
                    script,
                    changes,
                    added,
                    removed,
                    after,
                },
                object: "elements of table inet berth".into(),
                reason: format!("{added} missing, {removed} not wanted"),
            });
        }
    }

    // 7. Deletions: links berth owns that nothing wants (veths first, then bridges); an
    //    adopted bridge loses only the gateway addresses berth added.
    let mut veth_dels = Vec::new();
    let mut bridge_dels = Vec::new();
    for (name, link) in &observed.links {
        if desired.bridges.contains_key(name)
            || desired.endpoints.contains_key(name)
            || desired.shims.contains_key(name)
            || desired.parents.contains_key(name)
            || desired.vxlans.contains_key(name)
            || desired.kept_links.contains(name)
        {
            continue;
        }
        if !is_owned(link) {
            continue;
        }
        let step = Step {
            op: StepOp::DeleteLink {
                name: name.clone(),
                netns: link.netns.clone(),
            },
            object: format!(
                "{} {name}{}{}",
                link.kind.as_deref().unwrap_or("link"),
                link.alias
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default(),
                link.netns
                    .as_deref()
                    .map(|n| format!(" in {n}"))
                    .unwrap_or_default()
            ),
            reason: "orphan: nothing berth stores wants it".into(),
        };
        if link.kind.as_deref() == Some("bridge") {
            bridge_dels.push(step);
        } else {
            veth_dels.push(step);
        }
    }
    steps.extend(veth_dels);
    steps.extend(bridge_dels);
    plan
}

/// What berth's table holds once `desired`'s elements are applied over `observed`: all of
/// `desired` in a full pass; in a scoped pass (sets only) the observed maps are kept.
/// The anti-spoofing elements of the ports outside the pass's scope are kept as observed.
pub fn elements_after(observed: &Elements, desired: &DesiredHost) -> Elements {
    use crate::firewall as fw;
    let mut e = if desired.with_maps {
        desired.elements.clone()
    } else {
        let mut e = observed.only(&fw::map_names());
        e.extend(&desired.elements.only(&fw::set_names()));
        e.extend(&desired.elements.only(&fw::guard_names()));
        e
    };
    // The other ports' elements as observed, in one walk (no intermediate copies: with 1,000
    // containers these are most of the elements a scoped pass carries).
    if let Some(scope) = &desired.guard_scope {
        for name in fw::guard_names() {
            let Some(have) = observed.0.get(name) else {
                continue;
            };
            let mine = e.0.entry(name.to_string()).or_default();
            for (k, c) in have {
                if fw::element_port(k).is_none_or(|p| !scope.contains(p)) {
                    mine.insert(k.clone(), c.clone());
                }
            }
        }
    }
    e
}

/// The part of the observed elements a pass decides: the sets, the maps in a full pass, and the
/// anti-spoofing elements of the ports in its scope.
fn elements_in_scope(observed: &Elements, desired: &DesiredHost) -> Elements {
    use crate::firewall as fw;
    let mut names = fw::set_names();
    if desired.with_maps {
        names.extend(fw::map_names());
    }
    let mut have = observed.only(&names);
    have.extend(&fw::guard_part(observed, desired.guard_scope.as_ref()));
    have
}

/// Whether a sysctl key is per interface (`net.ipv4.conf.<if>.…`, `net.ipv6.conf.<if>.…`) rather
/// than host-wide.
pub fn is_link_sysctl(key: &str) -> bool {
    let mut parts = key.split('.');
    let (Some("net"), Some(_), Some("conf"), Some(ifname)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !matches!(ifname, "all" | "default")
}

fn count_diff(have: &Elements, want: &Elements) -> (usize, usize) {
    let empty = BTreeMap::new();
    let mut added = 0;
    let mut removed = 0;
    let sets: BTreeSet<&String> = have.0.keys().chain(want.0.keys()).collect();
    for s in sets {
        let h = have.0.get(s).unwrap_or(&empty);
        let w = want.0.get(s).unwrap_or(&empty);
        added += w.iter().filter(|(k, c)| h.get(*k) != Some(*c)).count();
        removed += h.iter().filter(|(k, c)| w.get(*k) != Some(*c)).count();
    }
    (added, removed)
}

fn fmt_addrs(a: &[IpNet]) -> String {
    if a.is_empty() {
        return "none".into();
    }
    a.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_routes(r: &[RoutePlan]) -> String {
    r.iter()
        .map(|r| format!("{} via {}", r.dst, r.via))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
