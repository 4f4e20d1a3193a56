//! Turning requests into specs (networks, endpoints) and specs into kernel plans.
//!
//! Everything the user can get wrong is checked here, before anything is stored, so the daemon
//! never converges towards a state the kernel would refuse halfway through.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::PlanError;
use crate::ipam;
use crate::model::{
    Announce, BridgePlan, ContainerSpec, Driver, EndpointPlan, EndpointSpec, Id, NetworkMode,
    NetworkSpec, OverlaySpec, ParentKind, ParentPlan, RoutePlan, ShimPlan, ShimRoute, SublinkKind,
    SublinkPlan, SubnetSpec, UnusedIpam,
};
use crate::names;

/// Docker's option key for the bridge interface name.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Docker's option key for inter-container communication.
pub const OPT_ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Docker's option key for masquerading outbound traffic.
pub const OPT_ENABLE_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// Docker's option key for the MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Docker's option naming an overlay network's VXLAN id (one id; berth allocates one when
/// absent).
pub const OPT_VXLANID: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// Docker's option asking for an encrypted overlay network (`--opt encrypted`).
pub const OPT_ENCRYPTED: &str = "encrypted";
/// The largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN adds to a frame on an IPv4 underlay.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Docker's option key for the default host address of published ports.
pub const OPT_HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
/// Docker's option key marking the default bridge.
pub const OPT_DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// berth's option: container addresses of this network may be reached directly (routed) from
/// outside the host, not only through published ports (default false).
pub const OPT_ALLOW_DIRECT: &str = "berth.network.allow_direct";
/// berth's option: turn off anti-spoofing on this network's bridge ports (default false): its
/// containers may then send from any MAC or address, answer ARP/ND for any address and send
/// router advertisements and DHCP server replies, as on a plain Linux bridge.
pub const OPT_ALLOW_SPOOFING: &str = "berth.network.allow_spoofing";
/// berth's own option: use the existing bridge named by `com.docker.network.bridge.name`
/// although berth did not create it. berth then adds its gateway addresses to it and never
/// removes the bridge or any address it had.
pub const OPT_ADOPT_BRIDGE: &str = "berth.bridge.adopt";

/// Docker's macvlan/ipvlan option: the host interface the network's containers hang off.
pub const OPT_PARENT: &str = "parent";
/// Docker's macvlan option: `bridge` (default), `private`, `vepa` or `passthru`.
pub const OPT_MACVLAN_MODE: &str = "macvlan_mode";
/// Docker's ipvlan option: `l2` (default), `l3` or `l3s`.
pub const OPT_IPVLAN_MODE: &str = "ipvlan_mode";
/// Docker's ipvlan option: `bridge` (default), `private` or `vepa`.
pub const OPT_IPVLAN_FLAG: &str = "ipvlan_flag";
/// berth's macvlan option: give the host a macvlan interface of its own on the parent (bridge
/// mode) with a route to the network's ip range, so it can reach its containers.
pub const OPT_HOST_SHIM: &str = "berth.macvlan.host_shim";
/// What `network inspect` says about a macvlan network's host ↔ container limitation.
pub const MACVLAN_HOST_NOTE: &str = "the host cannot reach its macvlan containers through the \
     parent; use -o berth.macvlan.host_shim=true";

/// Whether `net` is a macvlan network with a host shim ([`OPT_HOST_SHIM`], validated at create).
pub fn host_shim(net: &NetworkSpec) -> bool {
    net.driver == Driver::Macvlan
        && net
            .options
            .get(OPT_HOST_SHIM)
            .is_some_and(|v| parse_bool_opt(OPT_HOST_SHIM, v).unwrap_or(false))
}

/// The host shim of a macvlan network, once the daemon found the host's address on the parent
/// (`shim_src`): bridge mode on the parent, a route to the IPv4 ip range from that address.
pub fn shim_plan(net: &NetworkSpec) -> Option<ShimPlan> {
    if !host_shim(net) {
        return None;
    }
    let src = net.shim_src?;
    let range = net
        .subnets
        .iter()
        .find(|s| s.subnet.addr().is_ipv4())
        .and_then(|s| s.ip_range)?;
    Some(ShimPlan {
        name: names::shim_name(&net.id),
        parent: parent_of(net)?.to_string(),
        alias: format!(
            "{}shim:{}",
            crate::host::MARK_PREFIX,
            names::short_id(&net.id)
        ),
        routes: vec![ShimRoute { dst: range, src }],
    })
}

/// What `network inspect` tells about a network beyond Docker's fields (`BerthNotes`): the
/// host ↔ container limitation of macvlan (or the shim that lifts it), the routes the LAN needs
/// for an ipvlan network in l3 mode, where its containers' resolver is.
pub fn notes(n: &NetworkSpec) -> Vec<String> {
    let mut out = Vec::new();
    if !matches!(n.driver, Driver::Macvlan | Driver::Ipvlan) {
        return out;
    }
    let parent = parent_of(n).unwrap_or_default();
    if let Some(shim) = shim_plan(n) {
        for r in &shim.routes {
            out.push(format!(
                "the host reaches the network's containers in {} through its shim {} on {} (from {})",
                r.dst, shim.name, shim.parent, r.src
            ));
        }
    } else if n.driver == Driver::Macvlan {
        out.push(MACVLAN_HOST_NOTE.to_string());
    }
    match n.owned_parent.as_ref().map(|p| (&p.name, &p.kind)) {
        Some((name, ParentKind::Vlan { base, vid })) => out.push(format!(
            "berth created {name}, the 802.1Q sub-interface for VLAN {vid} of {base}, and removes \
             it with the last network on it"
        )),
        Some((name, _)) => out.push(format!(
            "an isolated segment: the containers hang off {name}, a dummy link berth created \
             (and removes with the network); nothing reaches the LAN or the host"
        )),
        None => {}
    }
    if let Some(SublinkKind::Ipvlan(mode @ (1 | 2), _)) = sublink_kind(n) {
        let mode = if mode == 1 { "l3" } else { "l3s" };
        for s in &n.subnets {
            out.push(format!(
                "ipvlan {mode}: the LAN does not learn the containers' addresses by ARP; its router \
                 needs the route `{} via <this host's address on {parent}>` (berth never changes \
                 the LAN's router)",
                s.subnet
            ));
        }
    }
    out.push(format!(
        "container names resolve through berth's resolver at {}:53 inside each container's own \
         namespace (a container also on a bridge network asks that bridge's gateway instead); \
         a container process cannot listen on port 53 of the wildcard address there (bind its \
         own address instead)",
        crate::dns::LOCAL_RESOLVER
    ));
    out
}

/// The parent interface of a macvlan or ipvlan network (`-o parent=`, or the segment berth
/// made for an `--internal` one without it), if any.
pub fn parent_of(net: &NetworkSpec) -> Option<&str> {
    match net.driver {
        Driver::Macvlan | Driver::Ipvlan => net
            .options
            .get(OPT_PARENT)
            .map(String::as_str)
            .filter(|p| !p.is_empty())
            .or(net.owned_parent.as_ref().map(|p| p.name.as_str())),
        _ => None,
    }
}

/// The `ifalias` of a parent link berth created (shared by every network on it).
pub fn parent_alias(name: &str) -> String {
    format!("{}parent:{name}", crate::host::MARK_PREFIX)
}

/// The isolated segment of an `--internal` macvlan/ipvlan network without `-o parent=`: as
/// Docker, a `dummy` link named `dm-` (macvlan) or `di-` (ipvlan) + 12 hex of the network id.
/// Where the kernel has no `dummy` module the daemon refuses the network, naming it.
pub fn segment_parent(driver: Driver, id: &str) -> ParentPlan {
    let prefix = if driver == Driver::Ipvlan { "di" } else { "dm" };
    let name = format!("{prefix}-{}", names::short_id(id));
    ParentPlan {
        alias: parent_alias(&name),
        name,
        kind: ParentKind::Dummy,
    }
}

/// The parent link berth made for `net` that goes with it: its own, unless another of
/// `others` is on it too (a shared 802.1Q sub-interface stays until its last network goes).
pub fn released_parent<'a>(net: &'a NetworkSpec, others: &[NetworkSpec]) -> Option<&'a str> {
    let p = net.owned_parent.as_ref()?;
    let shared = others
        .iter()
        .any(|n| n.id != net.id && n.owned_parent.as_ref().is_some_and(|q| q.name == p.name));
    (!shared).then_some(p.name.as_str())
}

/// The 802.1Q sub-interface berth creates as the parent `v` names.
pub fn vlan_parent(v: &VlanPlan) -> ParentPlan {
    ParentPlan {
        name: v.name.clone(),
        kind: ParentKind::Vlan {
            base: v.base.clone(),
            vid: v.vid,
        },
        alias: parent_alias(&v.name),
    }
}

/// An 802.1Q sub-interface a parent such as `eth0.10` stands for (Docker creates it when it
/// does not exist, and removes only the ones it created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanPlan {
    /// The sub-interface (`eth0.10`).
    pub name: String,
    /// The interface it is on (`eth0`).
    pub base: String,
    /// The VLAN id, 1 to 4094.
    pub vid: u16,
}

/// The VLAN sub-interface `parent` names (`BASE.VID`, VID from 1 to 4094), if it names one.
pub fn vlan_plan(parent: &str) -> Option<VlanPlan> {
    let (base, vid) = parent.rsplit_once('.')?;
    if base.is_empty() || vid.is_empty() || !vid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let vid: u16 = vid.parse().ok().filter(|v| (1..=4094).contains(v))?;
    Some(VlanPlan {
        name: parent.to_string(),
        base: base.to_string(),
        vid,
    })
}

/// The kind and mode of the links a macvlan or ipvlan network's containers get (validated at
/// create; `None` for other drivers).
pub fn sublink_kind(net: &NetworkSpec) -> Option<SublinkKind> {
    match net.driver {
        Driver::Macvlan => Some(SublinkKind::Macvlan(
            macvlan_mode(net.options.get(OPT_MACVLAN_MODE).map(String::as_str)).ok()?,
        )),
        Driver::Ipvlan => {
            let (m, f) = ipvlan_mode(
                net.options.get(OPT_IPVLAN_MODE).map(String::as_str),
                net.options.get(OPT_IPVLAN_FLAG).map(String::as_str),
            )
            .ok()?;
            Some(SublinkKind::Ipvlan(m, f))
        }
        _ => None,
    }
}

/// `MACVLAN_MODE_PASSTHRU`.
pub const MACVLAN_PASSTHRU: u32 = 8;

/// `IFLA_MACVLAN_MODE` of `-o macvlan_mode=` (default bridge).
fn macvlan_mode(v: Option<&str>) -> Result<u32, PlanError> {
    match v.unwrap_or("") {
        "" | "bridge" => Ok(4),
        "private" => Ok(1),
        "vepa" => Ok(2),
        "passthru" => Ok(MACVLAN_PASSTHRU),
        other => Err(PlanError::Invalid(format!(
            "invalid value {other:?} for option {OPT_MACVLAN_MODE}: expected bridge, private, vepa or passthru"
        ))),
    }
}

/// `IFLA_IPVLAN_MODE` and `IFLA_IPVLAN_FLAGS` of `-o ipvlan_mode= -o ipvlan_flag=` (default l2,
/// bridge).
fn ipvlan_mode(mode: Option<&str>, flag: Option<&str>) -> Result<(u16, u16), PlanError> {
    let m = match mode.unwrap_or("") {
        "" | "l2" => 0,
        "l3" => 1,
        "l3s" => 2,
        other => {
            return Err(PlanError::Invalid(format!(
                "invalid value {other:?} for option {OPT_IPVLAN_MODE}: expected l2, l3 or l3s"
            )))
        }
    };
    let f = match flag.unwrap_or("") {
        "" | "bridge" => 0,
        "private" => 1,
        "vepa" => 2,
        other => {
            return Err(PlanError::Invalid(format!(
                "invalid value {other:?} for option {OPT_IPVLAN_FLAG}: expected bridge, private or vepa"
            )))
        }
    };
    Ok((m, f))
}

/// The routes a container gets through an endpoint on `net`: default routes via the network's
/// gateways, for each family the endpoint has an address in, when it is the gateway endpoint
/// (never on an internal network).
fn default_routes(net: &NetworkSpec, ep: &EndpointSpec, gateway: bool) -> Vec<RoutePlan> {
    let mut routes = Vec::new();
    if gateway && !net.internal {
        for s in &net.subnets {
            if !ep
                .addrs
                .iter()
                .any(|a| a.addr().is_ipv4() == s.subnet.addr().is_ipv4())
            {
                continue;
            }
            let dst = match s.subnet {
                IpNet::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
            };
            routes.push(RoutePlan {
                dst,
                via: s.gateway,
            });
        }
    }
    routes
}

/// What the kernel layer must do to give a container its interface on a macvlan or ipvlan
/// network (`None` for other drivers).
pub fn sublink_plan(
    net: &NetworkSpec,
    ep: &EndpointSpec,
    netns_path: &str,
    gateway: bool,
) -> Option<SublinkPlan> {
    let kind = sublink_kind(net)?;
    let parent = parent_of(net)?;
    let disable_ipv6 = !net.subnets.iter().any(|s| s.subnet.addr().is_ipv6());
    Some(SublinkPlan {
        parent: parent.to_string(),
        kind,
        netns: netns_path.to_string(),
        ifname: ep.ifname.clone(),
        // ipvlan links have their parent's MAC; a passthru macvlan takes its parent's over
        // (setting another would change the parent's).
        mac: matches!(kind, SublinkKind::Macvlan(m) if m != MACVLAN_PASSTHRU)
            .then(|| ep.mac.clone()),
        addrs: ep.addrs.clone(),
        routes: default_routes(net, ep, gateway),
        disable_ipv6,
        announce: announce(AnnounceKind::Sublink(kind), &ep.addrs, disable_ipv6),
    })
}

/// The kind of container interface an announcement is decided for ([`announce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceKind {
    /// A veth on a bridge: bridge networks, the default bridge and overlay networks (whose
    /// bridge also holds the VXLAN port; the other hosts' forwarding entries come from etcd, so
    /// the announcement is for the local bridge and the local containers).
    Veth,
    /// A macvlan or ipvlan link on a parent interface: the announcement reaches the LAN's
    /// switches and hosts.
    Sublink(SublinkKind),
}

/// How a new container interface announces its addresses when it comes up (see [`Announce`]).
///
/// - Every IPv4 address: a gratuitous ARP, except on an ipvlan in L3 or L3S mode, which has
///   no ARP at all (`IFF_NOARP`: the kernel would send nothing, and there is nothing on the
///   other side of it to tell).
/// - Every IPv6 address: an unsolicited NA, when IPv6 is on for the interface (an IPv4-only
///   network turns it off) and again not on an L3 ipvlan.
///
/// Docker 28 sends the same announcements from userspace (libnetwork's `l2disco`: a packet
/// socket per address); Docker 20.10 sends none.
pub fn announce(kind: AnnounceKind, addrs: &[IpNet], disable_ipv6: bool) -> Announce {
    let l2 = !matches!(kind, AnnounceKind::Sublink(SublinkKind::Ipvlan(mode, _)) if mode != 0);
    Announce {
        arp: l2 && addrs.iter().any(|a| a.addr().is_ipv4()),
        na: l2
            && !disable_ipv6
            && addrs
                .iter()
                .any(|a| a.addr().is_ipv6() && !is_link_local6(a)),
    }
}

/// An IPv6 link-local address (`fe80::/10`): not announced (the kernel announces only the
/// addresses present when the link goes up; a link-local one is announced by DAD anyway).
fn is_link_local6(a: &IpNet) -> bool {
    matches!(a.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Whether `net` uses a bridge the user asked berth to adopt ([`OPT_ADOPT_BRIDGE`]).
pub fn adopts_bridge(net: &NetworkSpec) -> bool {
    net.options
        .get(OPT_ADOPT_BRIDGE)
        .is_some_and(|v| parse_bool_opt(OPT_ADOPT_BRIDGE, v).unwrap_or(false))
}

/// Ranges that cannot work as a container network or would shadow the host: (range, why).
pub const RESERVED_SUBNETS: [(&str, &str); 9] = [
    ("0.0.0.0/8", "\"this network\" (RFC 1122), not routable"),
    (
        "127.0.0.0/8",
        "loopback: it would shadow the host's own loopback",
    ),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("224.0.0.0/4", "multicast"),
    (
        "240.0.0.0/4",
        "reserved (RFC 1112) and the broadcast address",
    ),
    ("::/128", "the unspecified address"),
    ("::1/128", "IPv6 loopback"),
    (
        "fe80::/10",
        "IPv6 link-local: every interface already has addresses there",
    ),
    ("ff00::/8", "IPv6 multicast"),
];

/// Refuses a subnet that overlaps one of [`RESERVED_SUBNETS`], naming the reason.
pub fn check_reserved(subnet: &IpNet) -> Result<(), PlanError> {
    for (range, why) in RESERVED_SUBNETS {
        let Ok(r) = range.parse::<IpNet>() else {
            continue;
        };
        let overlap = match (r, subnet) {
            (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
                r.contains(&subnet.network()) || subnet.contains(&r.network())
            }
            _ => false,
        };
        if overlap {
            return Err(PlanError::Invalid(format!(
                "subnet {subnet} cannot be used for a network: it overlaps {range} ({why})"
            )));
        }
    }
    Ok(())
}

/// Whether a network was created with `berth.network.allow_direct=true` (validated at create).
pub fn allow_direct(net: &NetworkSpec) -> bool {
    net.options
        .get(OPT_ALLOW_DIRECT)
        .is_some_and(|v| parse_bool_opt(OPT_ALLOW_DIRECT, v).unwrap_or(false))
}

/// Whether a network was created with `berth.network.allow_spoofing=true` (validated at
/// create): its bridge ports get no anti-spoofing elements.
pub fn allow_spoofing(net: &NetworkSpec) -> bool {
    net.options
        .get(OPT_ALLOW_SPOOFING)
        .is_some_and(|v| parse_bool_opt(OPT_ALLOW_SPOOFING, v).unwrap_or(false))
}

/// The MTU used when none is given.
pub const DEFAULT_MTU: u32 = 1500;
/// Bytes VXLAN adds to a frame on an IPv6 underlay (inner Ethernet 14, VXLAN 8, UDP 8, IPv6 40).
pub const VXLAN6_OVERHEAD: u32 = 70;
/// The smallest MTU IPv4 allows (RFC 791: every host must take a 68-byte datagram whole).
pub const MIN_MTU_IPV4: u32 = 68;
/// The smallest MTU IPv6 allows (RFC 8200 §5); below it the kernel turns IPv6 off on the
/// interface (`addrconf_notify`, NETDEV_CHANGEMTU), so a network with IPv6 cannot have less.
pub const MIN_MTU_IPV6: u32 = 1280;

/// The underlay an overlay network's VXLAN packets cross, as the cluster's hosts published it:
/// the smallest interface MTU among them and whether any of them tunnels over IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// The smallest MTU of the hosts' advertised interfaces.
    pub mtu: u32,
    /// Whether some host's advertised address is IPv6 (VXLAN then costs 70 bytes, not 50).
    pub ipv6: bool,
}

impl Default for Underlay {
    /// A 1500-byte IPv4 underlay (what a host that published no MTU is taken to have).
    fn default() -> Self {
        Underlay {
            mtu: DEFAULT_MTU,
            ipv6: false,
        }
    }
}

impl Underlay {
    /// The underlay of hosts with these advertised addresses and published MTUs (`None`: a
    /// host of a berth that did not publish one, taken as [`DEFAULT_MTU`]). No host: the default.
    pub fn of_hosts(hosts: impl IntoIterator<Item = (std::net::IpAddr, Option<u32>)>) -> Underlay {
        let mut out: Option<Underlay> = None;
        for (addr, mtu) in hosts {
            let mtu = mtu.unwrap_or(DEFAULT_MTU);
            let u = out.get_or_insert(Underlay { mtu, ipv6: false });
            u.mtu = u.mtu.min(mtu);
            u.ipv6 |= addr.is_ipv6();
        }
        out.unwrap_or_default()
    }

    /// What VXLAN adds to each frame on this underlay.
    pub fn vxlan_overhead(&self) -> u32 {
        if self.ipv6 {
            VXLAN6_OVERHEAD
        } else {
            VXLAN_OVERHEAD
        }
    }

    /// The largest MTU an overlay network (`encrypted` or not) can have on this underlay, with
    /// how it was reached, for messages.
    pub fn overlay_mtu(&self, encrypted: bool) -> (u32, String) {
        if encrypted {
            let m = crate::wireguard::encrypted_mtu(self.mtu);
            (
                m,
                format!(
                    "the underlay's MTU {} − {} bytes of WireGuard − {} bytes of VXLAN over IPv6",
                    self.mtu,
                    crate::wireguard::WG_OVERHEAD,
                    VXLAN6_OVERHEAD
                ),
            )
        } else {
            let o = self.vxlan_overhead();
            let fam = if self.ipv6 { "IPv6" } else { "IPv4" };
            (
                self.mtu.saturating_sub(o),
                format!(
                    "the underlay's MTU {} − {o} bytes of VXLAN over {fam}",
                    self.mtu
                ),
            )
        }
    }
}

/// The MTU overlay network `net` has on a host now, with the cluster's underlay as the live
/// hosts publish it at this moment (`None`: not known yet, e.g. before the node watch's first
/// delivery; then the MTU decided at create, `net.mtu`). Other networks: `net.mtu`.
///
/// The rule (docs/OVERLAY.md, "MTU"): the most the cluster's *current* underlay carries
/// ([`Underlay::overlay_mtu`]: the smallest underlay MTU among the live hosts, minus VXLAN's
/// and WireGuard's bytes), or the `com.docker.network.driver.mtu` option when that is
/// smaller. Every host computes it from the same node records, so the network keeps one MTU
/// on every host (a segment has no path-MTU discovery between its members), and it follows a
/// host joining or leaving and an underlay interface whose MTU changed. Never below the
/// protocol minimum (68, or 1280 with IPv6), where the interface would lose the protocol.
pub fn overlay_mtu_now(net: &NetworkSpec, underlay: Option<Underlay>) -> u32 {
    let (Driver::Overlay, Some(u)) = (net.driver, underlay) else {
        return net.mtu;
    };
    let encrypted = net.overlay.is_some_and(|o| o.encrypted);
    let fits = u.overlay_mtu(encrypted).0;
    let explicit = net.options.get(OPT_MTU).and_then(|v| v.parse::<u32>().ok());
    let min = if net.enable_ipv6 {
        MIN_MTU_IPV6
    } else {
        MIN_MTU_IPV4
    };
    explicit.map_or(fits, |e| e.min(fits)).max(min)
}

/// A network's MTU: the `com.docker.network.driver.mtu` option (`explicit`) when given, else
/// 1500, or for an overlay network the most its underlay carries ([`Underlay::overlay_mtu`]).
/// Refused: an option that is no number, below the protocol minimum (68, or 1280 when the
/// network has IPv6), above 65535, or — overlay — above what the underlay carries (a frame
/// the VXLAN port cannot send in one underlay packet would be fragmented or dropped).
pub fn decide_mtu(
    name: &str,
    explicit: Option<&str>,
    driver: Driver,
    encrypted: bool,
    ipv6: bool,
    underlay: Underlay,
) -> Result<u32, PlanError> {
    let (min, why_min) = if ipv6 {
        (MIN_MTU_IPV6, "a network with IPv6")
    } else {
        (MIN_MTU_IPV4, "IPv4")
    };
    let limit = (driver == Driver::Overlay).then(|| underlay.overlay_mtu(encrypted));
    let mtu = match explicit {
        None => match &limit {
            Some((m, _)) => *m,
            None => DEFAULT_MTU,
        },
        Some(v) => {
            let m = v
                .parse::<u32>()
                .ok()
                .filter(|m| (MIN_MTU_IPV4..=65535).contains(m))
                .ok_or_else(|| {
                    PlanError::Invalid(format!(
                        "invalid value {v:?} for option {OPT_MTU}: expected a number from \
                         {MIN_MTU_IPV4} to 65535"
                    ))
                })?;
            if let Some((max, how)) = &limit {
                if m > *max {
                    return Err(PlanError::Invalid(format!(
                        "network {name:?}: option {OPT_MTU}={m} is larger than the overlay \
                         can carry: at most {max} ({how}); give {max} or less, or leave the \
                         option out"
                    )));
                }
            }
            m
        }
    };
    if mtu < min {
        let how = match (&limit, explicit) {
            (Some((_, how)), None) => format!(" ({how})"),
            _ => String::new(),
        };
        return Err(PlanError::Invalid(format!(
            "network {name:?}: MTU {mtu}{how} is below {min}, the minimum for {why_min}"
        )));
    }
    Ok(mtu)
}
/// Interface name of the predefined `bridge` network.
pub use crate::names::DEFAULT_BRIDGE_IFNAME;

/// One `IPAM.Config` entry of a create request, as given (unparsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamRequest {
    /// `--subnet`.
    pub subnet: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--ip-range`.
    pub ip_range: Option<String>,
    /// `--aux-address NAME=IP` (Docker's `AuxiliaryAddresses`).
    pub aux_addresses: BTreeMap<String, String>,
}

/// A network create request, as given (unparsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Name.
    pub name: String,
    /// `--driver` (`None`, `""` and `"bridge"` mean bridge).
    pub driver: Option<String>,
    /// IPAM pools.
    pub ipam: Vec<IpamRequest>,
    /// `--ipv6`.
    pub enable_ipv6: bool,
    /// `--internal`.
    pub internal: bool,
    /// `--attachable`.
    pub attachable: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--opt`.
    pub options: BTreeMap<String, String>,
    /// `--ipam-opt` (`IPAM.Options`), kept as given: `None` when the request had none.
    pub ipam_options: Option<BTreeMap<String, String>>,
}

/// Docker's driver option that enables IPv6 when the request leaves `EnableIPv6` out.
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";

/// Whether a create request enables IPv6, as dockerd decides it: `EnableIPv6` when given,
/// else the driver option [`OPT_ENABLE_IPV6`], else no.
pub fn enable_ipv6(
    requested: Option<bool>,
    options: &BTreeMap<String, String>,
) -> Result<bool, PlanError> {
    match (requested, options.get(OPT_ENABLE_IPV6)) {
        (Some(b), _) => Ok(b),
        (None, None) => Ok(false),
        (None, Some(v)) => parse_bool_opt(OPT_ENABLE_IPV6, v).map_err(|_| {
            PlanError::Invalid(format!(
                "driver-opt {OPT_ENABLE_IPV6:?} is not a valid bool"
            ))
        }),
    }
}

/// The IPv6 pool `pool` stands for, kept as given, when it is one (its subnet parses as an
/// IPv6 prefix, host bits allowed, as Go's `netip.ParsePrefix` reads it).
fn ipv6_pool(pool: &IpamRequest) -> Option<UnusedIpam> {
    let subnet = pool.subnet.as_deref()?;
    let (addr, len) = subnet.split_once('/')?;
    addr.parse::<std::net::Ipv6Addr>().ok()?;
    len.parse::<u8>().ok().filter(|l| *l <= 128)?;
    Some(UnusedIpam {
        subnet: subnet.to_string(),
        ip_range: pool.ip_range.clone().unwrap_or_default(),
        gateway: pool.gateway.clone().unwrap_or_default(),
        aux_addresses: pool.aux_addresses.clone(),
    })
}

/// What `network create` warns about a network it created (the answer's `Warning`): IPv6
/// pools kept but not used because IPv6 is not enabled.
pub fn create_warnings(net: &NetworkSpec) -> Vec<String> {
    net.unused_ipam
        .iter()
        .map(|p| {
            format!(
                "IPv6 subnet {} of network {:?} is kept but not used: IPv6 is not enabled on it \
                 (add --ipv6, or EnableIPv6: true, to use it)",
                p.subnet, net.name
            )
        })
        .collect()
}

/// Parses a CIDR strictly: the prefix must be in range and no host bits may be set.
///
/// `what` names the field for the message (`subnet`, `ip range`).
pub fn parse_cidr(what: &str, s: &str) -> Result<IpNet, PlanError> {
    let bad = |reason: String| PlanError::Invalid(format!("invalid {what} {s:?}: {reason}"));
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| bad("expected an address/prefix such as 10.1.0.0/24".into()))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = len.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
        bad(format!(
            "prefix length {len:?} is not a number from 0 to {max}"
        ))
    })?;
    let net = IpNet::new(addr, len).map_err(|e| bad(e.to_string()))?;
    if net.network() != addr {
        return Err(bad(format!("host bits set, did you mean {}?", net.trunc())));
    }
    Ok(net)
}

/// Parses a Docker boolean option value (Go's `strconv.ParseBool`).
fn parse_bool_opt(key: &str, v: &str) -> Result<bool, PlanError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(PlanError::Invalid(format!(
            "invalid value {v:?} for option {key}: expected true or false"
        ))),
    }
}

fn driver_of(req: &NetworkRequest) -> Result<Driver, PlanError> {
    match req.driver.as_deref().unwrap_or("") {
        "" | "bridge" => Ok(Driver::Bridge),
        "macvlan" => Ok(Driver::Macvlan),
        "ipvlan" => Ok(Driver::Ipvlan),
        "overlay" => Ok(Driver::Overlay),
        d @ ("host" | "null") => Err(PlanError::Forbidden(format!(
            "only one instance of {d:?} network is allowed"
        ))),
        d => Err(PlanError::Invalid(format!(
            "driver {d:?} is not supported (berth supports: bridge, macvlan, ipvlan, overlay)"
        ))),
    }
}

/// Checks one requested pool and turns it into a [`SubnetSpec`] (without overlap checks).
fn plan_subnet(name: &str, req: &IpamRequest) -> Result<SubnetSpec, PlanError> {
    let Some(subnet_s) = req.subnet.as_deref().filter(|s| !s.is_empty()) else {
        return Err(PlanError::Invalid(format!(
            "network {name:?}: a gateway or ip range needs a subnet in the same IPAM config (add --subnet)"
        )));
    };
    let subnet = parse_cidr("subnet", subnet_s)?;
    check_reserved(&subnet)?;
    let (min_hosts_prefix, fam) = match subnet {
        IpNet::V4(_) => (30, "IPv4"),
        IpNet::V6(_) => (126, "IPv6"),
    };
    if subnet.prefix_len() > min_hosts_prefix {
        return Err(PlanError::Invalid(format!(
            "invalid subnet {subnet_s:?}: a /{} has no room for a gateway and a container (use a /{min_hosts_prefix} or larger {fam} subnet)",
            subnet.prefix_len()
        )));
    }
    let gateway = match req.gateway.as_deref().filter(|s| !s.is_empty()) {
        None => ipam::gateway_for(&subnet),
        Some(g) => {
            let gw: IpAddr = g.parse().map_err(|_| {
                PlanError::Invalid(format!("invalid gateway {g:?}: not an IP address"))
            })?;
            if !subnet.contains(&gw) {
                return Err(PlanError::Invalid(format!(
                    "gateway {gw} is outside subnet {subnet} of network {name:?}"
                )));
            }
            let is_bcast = subnet.addr().is_ipv4() && gw == subnet.broadcast();
            if gw == subnet.network() || is_bcast {
                return Err(PlanError::Invalid(format!(
                    "gateway {gw} is the network or broadcast address of subnet {subnet} of network {name:?}"
                )));
            }
            gw
        }
    };
    let ip_range = match req.ip_range.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(r) => {
            let range = parse_cidr("ip range", r)?;
            if !subnet.contains(&range) {
                return Err(PlanError::Invalid(format!(
                    "ip range {range} is outside subnet {subnet} of network {name:?}"
                )));
            }
            Some(range)
        }
    };
    let aux_addresses = plan_aux_addresses(name, &subnet, gateway, &req.aux_addresses)?;
    Ok(SubnetSpec {
        subnet,
        gateway,
        ip_range,
        aux_addresses,
    })
}

/// Checks the auxiliary addresses of one pool (moby's `ValidateIPAM` rules: an address of the
/// subnet's family inside it; and what moby only finds when it reserves them: not the network,
/// broadcast or gateway address, no address under two names).
fn plan_aux_addresses(
    name: &str,
    subnet: &IpNet,
    gateway: IpAddr,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, IpAddr>, PlanError> {
    let mut out: BTreeMap<String, IpAddr> = BTreeMap::new();
    for (aux, value) in given {
        let bad = |why: String| {
            PlanError::Invalid(format!(
                "invalid auxiliary address {aux} ({value:?}) of network {name:?}: {why}"
            ))
        };
        let addr: IpAddr = value.parse().map_err(|_| bad("invalid address".into()))?;
        if addr.is_ipv4() != subnet.addr().is_ipv4() {
            let fam = if subnet.addr().is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            };
            return Err(bad(format!("parent subnet is an {fam} block")));
        }
        if !subnet.contains(&addr) {
            return Err(bad(format!(
                "parent subnet {subnet} doesn't contain this address"
            )));
        }
        if addr == subnet.network() || (addr.is_ipv4() && addr == subnet.broadcast()) {
            return Err(bad(format!(
                "it is the network or broadcast address of subnet {subnet}"
            )));
        }
        if addr == gateway {
            return Err(bad(format!("it is the gateway of subnet {subnet}")));
        }
        if let Some((other, _)) = out.iter().find(|(_, a)| **a == addr) {
            return Err(bad(format!(
                "auxiliary address {other} is the same address"
            )));
        }
        out.insert(aux.clone(), addr);
    }
    Ok(out)
}

/// Checks a subnet against existing networks and host routes.
fn check_overlaps(
    name: &str,
    subnet: &IpNet,
    existing: &[NetworkSpec],
    host_routes: &[IpNet],
) -> Result<(), PlanError> {
    for other in existing {
        if let Some(s) = other
            .subnets
            .iter()
            .find(|s| ipam::overlaps(subnet, &s.subnet))
        {
            return Err(PlanError::Conflict(format!(
                "network {name:?} overlaps {} of network {:?}",
                s.subnet, other.name
            )));
        }
    }
    if let Some(route) = host_routes
        .iter()
        .find(|r| r.prefix_len() > 0 && ipam::overlaps(subnet, r))
    {
        return Err(PlanError::Conflict(format!(
            "subnet {subnet} overlaps {route}, already routed on the host"
        )));
    }
    Ok(())
}

/// Plans a new network from a create request.
///
/// * The name must be valid and unused (Docker's `network with name X already exists`).
/// * Only the bridge driver can be created; `host` and `null` exist once, as predefined networks.
/// * Subnets, gateways and ip ranges are parsed strictly (no host bits, room for a gateway and a
///   container, gateway and range inside the subnet). At most one IPv4 and one IPv6 pool; IPv6
///   only with `enable_ipv6`.
/// * Without an IPv4 subnet one is taken from Docker's default pools, avoiding every existing
///   network and every prefix in `host_routes` (default routes are ignored). With `enable_ipv6`
///   and no IPv6 subnet, a /64 is taken from [`ipam::ULA_POOL`], chosen from the id.
/// * A given subnet may overlap neither an existing network nor a host route (Conflict).
/// * Docker's bridge options are validated and applied; unknown options are kept as given.
pub fn plan_network(
    req: &NetworkRequest,
    id: Id,
    created: String,
    existing: &[NetworkSpec],
    host_routes: &[IpNet],
) -> Result<NetworkSpec, PlanError> {
    plan_network_on(req, id, created, existing, host_routes, Underlay::default())
}

/// [`plan_network`] for a cluster whose underlay is `underlay`: an overlay network's MTU is
/// decided from it ([`decide_mtu`]).
pub fn plan_network_on(
    req: &NetworkRequest,
    id: Id,
    created: String,
    existing: &[NetworkSpec],
    host_routes: &[IpNet],
    underlay: Underlay,
) -> Result<NetworkSpec, PlanError> {
    let name = req.name.as_str();
    names::validate_network_name(name)?;
    if existing.iter().any(|n| n.name == name) {
        return Err(PlanError::NetworkExists(name.to_string()));
    }
    let driver = driver_of(req)?;
    let direct = matches!(driver, Driver::Macvlan | Driver::Ipvlan);
    let opts = &req.options;
    let parent = opts
        .get(OPT_PARENT)
        .map(String::as_str)
        .filter(|p| !p.is_empty());
    if direct {
        match parent {
            Some(p) => names::validate_ifname(p).map_err(|e| {
                PlanError::Invalid(format!("invalid value for option {OPT_PARENT}: {e}"))
            })?,
            // Docker: an --internal network without a parent gets a dummy link of its own.
            None if req.internal => {}
            None => {
                return Err(PlanError::Invalid(format!(
                    "network {name:?}: the {} driver needs the host interface its containers hang off: add -o {OPT_PARENT}=IFACE",
                    driver.as_str()
                )))
            }
        }
        if driver == Driver::Macvlan {
            macvlan_mode(opts.get(OPT_MACVLAN_MODE).map(String::as_str))?;
        } else {
            ipvlan_mode(
                opts.get(OPT_IPVLAN_MODE).map(String::as_str),
                opts.get(OPT_IPVLAN_FLAG).map(String::as_str),
            )?;
        }
    }
    let shim = match opts.get(OPT_HOST_SHIM) {
        Some(v) => parse_bool_opt(OPT_HOST_SHIM, v)?,
        None => false,
    };
    if shim && driver != Driver::Macvlan {
        return Err(PlanError::Invalid(format!(
            "option {OPT_HOST_SHIM} is for macvlan networks only"
        )));
    }
    // A macvlan/ipvlan subnet is the LAN's, routed on the host through the parent: it may
    // overlap host routes and the networks of other parents, not a bridge network nor another
    // network on the same parent.
    let peers: Vec<NetworkSpec> = existing
        .iter()
        .filter(|n| !direct || parent_of(n).is_none_or(|p| Some(p) == parent))
        .filter(|n| !direct || !matches!(n.driver, Driver::Host | Driver::Null))
        .cloned()
        .collect();
    let overlap_routes: &[IpNet] = if direct { &[] } else { host_routes };

    let mut v4: Option<SubnetSpec> = None;
    let mut v6: Option<SubnetSpec> = None;
    let mut unused_ipam = Vec::new();
    for pool in &req.ipam {
        // moby 27: an IPv6 pool of a network without IPv6 is neither checked nor allocated,
        // but kept (and shown by inspect) as given.
        if !req.enable_ipv6 {
            if let Some(kept) = ipv6_pool(pool) {
                unused_ipam.push(kept);
                continue;
            }
        }
        let spec = plan_subnet(name, pool)?;
        let (slot, fam) = match spec.subnet {
            IpNet::V4(_) => (&mut v4, "IPv4"),
            IpNet::V6(_) => (&mut v6, "IPv6"),
        };
        if slot.is_some() {
            return Err(PlanError::Invalid(format!(
                "network {name:?}: more than one {fam} subnet is not supported"
            )));
        }
        check_overlaps(name, &spec.subnet, &peers, overlap_routes)?;
        *slot = Some(spec);
    }

    if shim && v4.as_ref().and_then(|s| s.ip_range).is_none() {
        return Err(PlanError::Invalid(format!(
            "network {name:?}: option {OPT_HOST_SHIM}=true needs an IPv4 --ip-range: the host \
             routes that range to the network's containers through the shim"
        )));
    }

    let mut used: Vec<IpNet> = existing
        .iter()
        .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
        .collect();
    used.extend(host_routes.iter().copied());
    if v4.is_none() {
        let subnet = ipam::allocate_subnet(&used).ok_or_else(|| {
            PlanError::Conflict(format!(
                "no free IPv4 subnet for network {name:?}: every default pool (172.17.0.0/16-172.31.0.0/16, 192.168.0.0/16) overlaps an existing network or a host route; give one with --subnet"
            ))
        })?;
        v4 = Some(SubnetSpec {
            subnet,
            gateway: ipam::gateway_for(&subnet),
            ip_range: None,
            aux_addresses: Default::default(),
        });
    }
    if req.enable_ipv6 && v6.is_none() {
        let subnet = ipam::allocate_ula_subnet(&id, &used).ok_or_else(|| {
            PlanError::Conflict(format!(
                "no free IPv6 subnet for network {name:?} in {}; give one with --subnet",
                ipam::ULA_POOL
            ))
        })?;
        v6 = Some(SubnetSpec {
            subnet,
            gateway: ipam::gateway_for(&subnet),
            ip_range: None,
            aux_addresses: Default::default(),
        });
    }

    let bridge = match opts.get(OPT_BRIDGE_NAME).filter(|b| !b.is_empty()) {
        _ if direct => String::new(),
        Some(b) => {
            names::validate_bridge_name(b).map_err(|e| {
                PlanError::Invalid(format!("invalid value for option {OPT_BRIDGE_NAME}: {e}"))
            })?;
            b.clone()
        }
        None => names::bridge_name(&id),
    };
    if let Some(other) = existing.iter().find(|n| !direct && n.bridge == bridge) {
        return Err(PlanError::Conflict(format!(
            "bridge name {bridge:?} is already used by network {:?}",
            other.name
        )));
    }
    let icc = match opts.get(OPT_ENABLE_ICC) {
        Some(v) => parse_bool_opt(OPT_ENABLE_ICC, v)?,
        None => true,
    };
    if !icc && driver == Driver::Overlay {
        // Bridge-port isolation holds on one host's bridge only: an overlay's VXLAN port
        // would still carry every other host's containers to these (Docker's overlay driver
        // has no such option either). Refused rather than half kept.
        return Err(PlanError::Invalid(format!(
            "network {name:?}: {OPT_ENABLE_ICC}=false is not supported by the overlay driver:              containers on other hosts would still reach each other through the VXLAN tunnel;              use one network per group of containers that may talk"
        )));
    }
    let masquerade = match opts.get(OPT_ENABLE_MASQUERADE) {
        Some(v) => parse_bool_opt(OPT_ENABLE_MASQUERADE, v)?,
        None => !direct,
    };
    let encrypted = match opts.get(OPT_ENCRYPTED) {
        Some(v) => {
            let on = crate::wireguard::parse_encrypted(v)?;
            if on && driver != Driver::Overlay {
                return Err(PlanError::Invalid(format!(
                    "network {name:?}: option {OPT_ENCRYPTED} is for overlay networks (-d overlay) only"
                )));
            }
            on
        }
        None => false,
    };
    let mtu = decide_mtu(
        name,
        opts.get(OPT_MTU).map(String::as_str),
        driver,
        encrypted,
        v6.is_some(),
        underlay,
    )?;
    let overlay = if driver == Driver::Overlay {
        let vni = match opts.get(OPT_VXLANID) {
            None => 0,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_VNI).contains(n))
                .ok_or_else(|| {
                    PlanError::Invalid(format!(
                        "invalid value {v:?} for option {OPT_VXLANID}: expected one VXLAN id \
                         from 1 to {MAX_VNI}"
                    ))
                })?,
        };
        Some(OverlaySpec {
            vni,
            port: if encrypted {
                crate::wireguard::ENCRYPTED_VXLAN_PORT
            } else {
                VXLAN_PORT
            },
            encrypted,
        })
    } else {
        None
    };
    if let Some(v) = opts.get(OPT_HOST_BINDING_IPV4) {
        if v.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(PlanError::Invalid(format!(
                "invalid value {v:?} for option {OPT_HOST_BINDING_IPV4}: expected an IPv4 address"
            )));
        }
    }
    for key in [OPT_ALLOW_DIRECT, OPT_ALLOW_SPOOFING] {
        if let Some(v) = opts.get(key) {
            parse_bool_opt(key, v)?;
        }
    }
    if let Some(v) = opts.get(OPT_ADOPT_BRIDGE) {
        if parse_bool_opt(OPT_ADOPT_BRIDGE, v)? && !opts.contains_key(OPT_BRIDGE_NAME) {
            return Err(PlanError::Invalid(format!(
                "option {OPT_ADOPT_BRIDGE} needs the name of the bridge to adopt in {OPT_BRIDGE_NAME}"
            )));
        }
    }
    if let Some(v) = opts.get(OPT_DEFAULT_BRIDGE) {
        if parse_bool_opt(OPT_DEFAULT_BRIDGE, v)? {
            return Err(PlanError::Invalid(format!(
                "invalid value {v:?} for option {OPT_DEFAULT_BRIDGE}: only the predefined \"bridge\" network is the default bridge"
            )));
        }
    }

    let owned_parent = (direct && parent.is_none()).then(|| segment_parent(driver, &id));
    Ok(NetworkSpec {
        id,
        name: name.to_string(),
        driver,
        created,
        subnets: v4.into_iter().chain(v6).collect(),
        enable_ipv6: req.enable_ipv6,
        internal: req.internal,
        attachable: req.attachable,
        labels: req.labels.clone(),
        options: req.options.clone(),
        adopted_addrs: Vec::new(),
        shim_src: None,
        overlay,
        owned_parent,
        bridge,
        icc,
        masquerade,
        mtu,
        // Names on every user-defined network: on a bridge berth's resolver listens on the
        // gateway; a macvlan/ipvlan gateway is the LAN's router, so its containers ask the
        // resolver berth opens inside their own namespace (`dns::LOCAL_RESOLVER`).
        dns: true,
        predefined: false,
        ipam_options: req.ipam_options.clone(),
        unused_ipam,
    })
}

/// The three networks every berth host has: `bridge` (interface `berth0`, on `bridge_subnet`),
/// `host` and `none`. `ids` are their ids in that order.
pub fn predefined_networks(
    ids: [Id; 3],
    created: String,
    bridge_subnet: IpNet,
) -> Vec<NetworkSpec> {
    let [bridge_id, host_id, none_id] = ids;
    let bridge_subnet = bridge_subnet.trunc();
    let options: BTreeMap<String, String> = [
        (OPT_DEFAULT_BRIDGE, "true"),
        (OPT_ENABLE_ICC, "true"),
        (OPT_ENABLE_MASQUERADE, "true"),
        (OPT_HOST_BINDING_IPV4, "0.0.0.0"),
        (OPT_BRIDGE_NAME, DEFAULT_BRIDGE_IFNAME),
        (OPT_MTU, "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let other = |id: Id, name: &str, driver: Driver| NetworkSpec {
        id,
        name: name.to_string(),
        driver,
        created: created.clone(),
        subnets: Vec::new(),
        enable_ipv6: false,
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        adopted_addrs: Vec::new(),
        shim_src: None,
        overlay: None,
        owned_parent: None,
        bridge: String::new(),
        icc: true,
        masquerade: false,
        mtu: DEFAULT_MTU,
        dns: false,
        predefined: true,
        ipam_options: None,
        unused_ipam: Vec::new(),
    };
    vec![
        NetworkSpec {
            id: bridge_id,
            name: "bridge".into(),
            driver: Driver::Bridge,
            created: created.clone(),
            subnets: vec![SubnetSpec {
                subnet: bridge_subnet,
                gateway: ipam::gateway_for(&bridge_subnet),
                ip_range: None,
                aux_addresses: Default::default(),
            }],
            enable_ipv6: false,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            options,
            adopted_addrs: Vec::new(),
            shim_src: None,
            overlay: None,
            owned_parent: None,
            bridge: DEFAULT_BRIDGE_IFNAME.into(),
            icc: true,
            masquerade: true,
            mtu: DEFAULT_MTU,
            dns: false,
            predefined: true,
            ipam_options: None,
            unused_ipam: Vec::new(),
        },
        other(host_id, "host", Driver::Host),
        other(none_id, "none", Driver::Null),
    ]
}

/// A request to attach a container to a network, as given (unparsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRequest {
    /// `--ip`.
    pub ipv4: Option<String>,
    /// `--ip6`.
    pub ipv6: Option<String>,
    /// `--alias` / `--network-alias`.
    pub aliases: Vec<String>,
    /// Docker's `GwPriority`.
    pub gw_priority: i64,
    /// `--mac-address` / the endpoint's `MacAddress`: the container interface's MAC (else one
    /// derived from its address).
    pub mac: Option<String>,
    /// Docker's endpoint `DriverOpts`: kept and returned by inspect (berth's drivers read none).
    pub driver_opts: BTreeMap<String, String>,
    /// Docker's endpoint `Links` (`NAME[:ALIAS]`): checked by [`parse_link`], kept as given.
    pub links: Vec<String>,
    /// Docker's `IPAMConfig.LinkLocalIPs` (`--link-local-ip`): checked by
    /// [`parse_link_local_ips`].
    pub link_local_ips: Vec<String>,
}

/// Parses a legacy link `NAME[:ALIAS]` as moby's `opts.ParseLink` does (`NAME` alone is
/// `NAME:NAME`; the `/NAME:/PARENT/ALIAS` form an inspected `HostConfig.Links` carries gives
/// `NAME`, `ALIAS`), then checks both parts: the name as a container name, the alias as a DNS
/// name (it is answered by berth's resolver and written to `/etc/hosts`, so no newline or
/// other character can reach either). Returns `(name, alias)`.
pub fn parse_link(link: &str) -> Result<(String, String), PlanError> {
    if link.is_empty() {
        return Err(PlanError::Invalid(
            "empty string specified for links".into(),
        ));
    }
    let parts: Vec<&str> = link.split(':').collect();
    let (name, alias) = match parts.as_slice() {
        [one] => (*one, *one),
        [name, alias] => match name.strip_prefix('/') {
            Some(n) => (n, alias.rsplit('/').next().unwrap_or(alias)),
            None => (*name, *alias),
        },
        _ => return Err(PlanError::Invalid(format!("bad format for links: {link}"))),
    };
    names::validate_name("linked container", name).map_err(|e| match e {
        PlanError::Invalid(m) => PlanError::Invalid(format!("link {link:?}: {m}")),
        other => other,
    })?;
    validate_alias(alias).map_err(|e| match e {
        PlanError::Invalid(m) => PlanError::Invalid(format!("link {link:?}: {m}")),
        other => other,
    })?;
    Ok((name.to_string(), alias.to_string()))
}

/// Checks Docker's `IPAMConfig.LinkLocalIPs`: addresses (moby: valid and not unspecified),
/// each in the link-local ranges `169.254.0.0/16` or `fe80::/10`. moby takes any address;
/// berth refuses the others because they would bypass anti-spoofing: a container could put a
/// neighbour's address on its interface and send from it. Duplicates are dropped.
pub fn parse_link_local_ips(given: &[String]) -> Result<Vec<IpAddr>, PlanError> {
    let mut out: Vec<IpAddr> = Vec::new();
    for s in given {
        let a = IpAddr::from_str(s.trim())
            .map_err(|_| PlanError::Invalid(format!("invalid link-local IP address: {s}")))?;
        let a = match a {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
            IpAddr::V4(_) => a,
        };
        if a.is_unspecified() {
            return Err(PlanError::Invalid(format!(
                "invalid link-local IP address: {s}"
            )));
        }
        let link_local = match a {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if !link_local {
            return Err(PlanError::Invalid(format!(
                "invalid link-local IP address: {s} is not in 169.254.0.0/16 or fe80::/10 \
                 (berth takes no other address there: it would bypass anti-spoofing; use --ip \
                 or --ip6 for an address of the network)"
            )));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Checks a requested MAC: six hex octets, unicast, not all zero. Returns it lower-case.
pub fn parse_requested_mac(s: &str) -> Result<String, PlanError> {
    let bad = |why: &str| {
        PlanError::Invalid(format!(
            "invalid MAC address {s:?}: {why} (e.g. 02:42:ac:11:00:02)"
        ))
    };
    let m = names::parse_mac(s).ok_or_else(|| bad("expected six hex octets"))?;
    if m[0] & 1 == 1 {
        return Err(bad("a multicast address cannot be an interface's"));
    }
    if m == [0; 6] {
        return Err(bad("all zeros is not an address"));
    }
    Ok(names::fmt_mac(m))
}

/// Checks a DNS alias: labels of 1..=63 characters from `[A-Za-z0-9_-]` not starting or ending
/// with `-`, 253 characters at most in total. (`_` is allowed because container names may
/// contain it and must resolve.)
pub fn validate_alias(alias: &str) -> Result<(), PlanError> {
    let bad = |reason: &str| {
        Err(PlanError::Invalid(format!(
            "invalid alias {alias:?}: {reason}"
        )))
    };
    if alias.is_empty() {
        return bad("it is empty");
    }
    if alias.len() > 253 {
        return bad("a DNS name is at most 253 characters long");
    }
    for label in alias.strip_suffix('.').unwrap_or(alias).split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated part must be 1 to 63 characters long");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a part must not start or end with '-'");
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return bad(&format!("character {c:?} is not allowed in a DNS name"));
        }
    }
    Ok(())
}

fn parse_requested(fam: &str, s: Option<&str>) -> Result<Option<IpAddr>, PlanError> {
    let Some(s) = s.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let addr = IpAddr::from_str(s)
        .ok()
        .filter(|a| a.is_ipv4() == (fam == "IPv4"))
        .ok_or_else(|| PlanError::Invalid(format!("invalid {fam} address {s:?}")))?;
    Ok(Some(addr))
}

/// Plans the attachment of `container` to `net`.
///
/// `all` is every container (used to find the addresses already taken on `net`; `container`
/// itself may be in it). Unlike Docker, `--ip` is accepted on networks whose subnet berth
/// allocated itself: the subnet is stored, so a static address is just as stable there.
pub fn plan_endpoint(
    net: &NetworkSpec,
    container: &ContainerSpec,
    all: &[ContainerSpec],
    req: &EndpointRequest,
    endpoint_id: Id,
) -> Result<EndpointSpec, PlanError> {
    plan_endpoint_with(net, container, all, req, endpoint_id, &BTreeMap::new())
}

/// [`plan_endpoint`] with addresses held elsewhere (an overlay network's addresses claimed by
/// containers of other hosts: address → holder, for the message), over any slice of
/// containers.
pub fn plan_endpoint_with<C: std::borrow::Borrow<ContainerSpec>>(
    net: &NetworkSpec,
    container: &ContainerSpec,
    all: &[C],
    req: &EndpointRequest,
    endpoint_id: Id,
    held_elsewhere: &BTreeMap<IpAddr, String>,
) -> Result<EndpointSpec, PlanError> {
    let book = ipam::AddressBook::of(all.iter().map(|c| c.borrow()));
    plan_endpoint_in(net, container, all, &book, req, endpoint_id, held_elsewhere)
}

/// [`plan_endpoint_with`] with the addresses' holders taken from `book` (every container's
/// addresses, kept by berthd as the documents change) instead of collected from `all`. `all`
/// is read only when `req` asks for a MAC or link-local addresses (who else holds them on
/// the network); berthd passes an empty slice otherwise.
pub fn plan_endpoint_in<C: std::borrow::Borrow<ContainerSpec>>(
    net: &NetworkSpec,
    container: &ContainerSpec,
    all: &[C],
    book: &ipam::AddressBook,
    req: &EndpointRequest,
    endpoint_id: Id,
    held_elsewhere: &BTreeMap<IpAddr, String>,
) -> Result<EndpointSpec, PlanError> {
    // Every other container (`all` may hold shared documents: no copy of each).
    let others = || {
        all.iter()
            .map(|c| -> &ContainerSpec { c.borrow() })
            .filter(|c| c.id != container.id)
    };
    match net.driver {
        Driver::Bridge | Driver::Macvlan | Driver::Ipvlan | Driver::Overlay => {}
        Driver::Host => {
            return Err(PlanError::Forbidden(
                "container cannot be disconnected from host network or connected to host network"
                    .into(),
            ))
        }
        Driver::Null => {
            return Err(PlanError::Forbidden(
                "container cannot be disconnected from none network or connected to none network"
                    .into(),
            ))
        }
    }
    if container.mode != NetworkMode::Networks {
        return Err(PlanError::Forbidden(format!(
            "container {:?} shares the network namespace of the host or of another container and cannot be connected to any other network",
            container.name
        )));
    }
    if container.endpoints.iter().any(|e| e.network_id == net.id) {
        return Err(PlanError::AlreadyConnected {
            container: container.name.clone(),
            network: net.name.clone(),
        });
    }
    let mut aliases: Vec<String> = Vec::new();
    for a in &req.aliases {
        validate_alias(a)?;
        if !aliases.contains(a) {
            aliases.push(a.clone());
        }
    }
    let mut links: Vec<String> = Vec::new();
    for l in &req.links {
        parse_link(l)?;
        if !links.contains(l) {
            links.push(l.clone());
        }
    }
    let link_local_ips = parse_link_local_ips(&req.link_local_ips)?;
    if !link_local_ips.is_empty() && !net.driver.has_bridge() {
        return Err(PlanError::Invalid(format!(
            "link-local addresses ({}) are only supported on bridge networks, not on {:?} ({})",
            req.link_local_ips.join(", "),
            net.name,
            net.driver.as_str()
        )));
    }
    // Two containers on one bridge with the same link-local address would each answer ARP for
    // it (and anti-spoofing would let both send from it).
    for a in &link_local_ips {
        let holder = others().find(|c| {
            c.endpoints
                .iter()
                .any(|e| e.network_id == net.id && e.link_local_ips.contains(a))
        });
        if let Some(h) = holder {
            return Err(PlanError::AddressInUse {
                addr: *a,
                network: net.name.clone(),
                by: Some(h.name.clone()),
            });
        }
    }

    // Who holds an address on this network, for the allocator and for the message: another
    // host's container (an overlay's claims) or another container of this host.
    let on_net = book.on(&net.id);
    let holder = |a: IpAddr| -> Option<&str> {
        held_elsewhere
            .get(&a)
            .map(String::as_str)
            .or_else(|| on_net.holder(a, &container.id))
    };
    // The container itself holds nothing on this network (it is not connected to it: see
    // above), so whoever holds an address is someone else.
    let used = |a: &IpAddr| held_elsewhere.contains_key(a) || on_net.is_held(*a);

    let want4 = parse_requested("IPv4", req.ipv4.as_deref())?;
    let want6 = parse_requested("IPv6", req.ipv6.as_deref())?;
    let mut addrs = Vec::new();
    for (fam, want) in [("IPv4", want4), ("IPv6", want6)] {
        let subnet = net
            .subnets
            .iter()
            .find(|s| s.subnet.addr().is_ipv4() == (fam == "IPv4"));
        let Some(subnet) = subnet else {
            if let Some(a) = want {
                return Err(PlanError::Invalid(format!(
                    "cannot use {fam} address {a}: network {:?} has no {fam} subnet",
                    net.name
                )));
            }
            continue;
        };
        if let Some(a) = want {
            if let Some(by) = holder(a) {
                return Err(PlanError::AddressInUse {
                    addr: a,
                    network: net.name.clone(),
                    by: Some(by.to_string()),
                });
            }
        }
        let addr = ipam::allocate_address_with(&net.name, subnet, &used, want)?;
        let with_len = IpNet::new(addr, subnet.subnet.prefix_len())
            .map_err(|e| PlanError::Invalid(format!("address {addr}: {e}")))?;
        addrs.push(with_len);
    }

    let taken: BTreeSet<&str> = container
        .endpoints
        .iter()
        .map(|e| e.ifname.as_str())
        .collect();
    let ifname = (0u32..)
        .map(|i| format!("eth{i}"))
        .find(|n| !taken.contains(n.as_str()))
        .unwrap_or_else(|| "eth0".into());

    let v4 = addrs.iter().find_map(|a| match a.addr() {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    });
    let mac = match &req.mac {
        Some(m) => {
            let m = parse_requested_mac(m)?;
            let holder = others().find(|c| {
                c.endpoints
                    .iter()
                    .any(|e| e.network_id == net.id && e.mac.eq_ignore_ascii_case(&m))
            });
            if let Some(h) = holder {
                return Err(PlanError::Conflict(format!(
                    "MAC address {m} is already used by container {:?} on network {:?}",
                    h.name, net.name
                )));
            }
            m
        }
        None => names::mac_for(v4, &endpoint_id),
    };
    Ok(EndpointSpec {
        host_ifname: names::veth_name(&endpoint_id),
        mac,
        id: endpoint_id,
        network_id: net.id.clone(),
        ifname,
        addrs,
        static_ipv4: want4,
        static_ipv6: want6,
        aliases,
        gw_priority: req.gw_priority,
        driver_opts: req.driver_opts.clone(),
        links,
        link_local_ips,
        reused_mac: false,
    })
}

/// The endpoint that gives `container` its default route: the highest `gw_priority`, ties
/// broken by network name (ascending). Endpoints on internal networks, on networks without a
/// subnet, or on networks not in `networks` never qualify.
pub fn gateway_endpoint<'a>(
    container: &'a ContainerSpec,
    networks: &[NetworkSpec],
) -> Option<&'a EndpointSpec> {
    container
        .endpoints
        .iter()
        .filter_map(|ep| {
            let net = networks.iter().find(|n| n.id == ep.network_id)?;
            (!net.internal && !net.subnets.is_empty()).then_some((ep, net.name.as_str()))
        })
        .max_by(|(a, an), (b, bn)| a.gw_priority.cmp(&b.gw_priority).then(bn.cmp(an)))
        .map(|(ep, _)| ep)
}

/// What the kernel layer must create for a network: the bridge with its gateway addresses.
/// `None` for host and null networks, which have no bridge.
pub fn bridge_plan(net: &NetworkSpec) -> Option<BridgePlan> {
    if !net.driver.has_bridge() {
        return None;
    }
    Some(BridgePlan {
        name: net.bridge.clone(),
        mtu: net.mtu,
        addrs: net
            .subnets
            .iter()
            .filter_map(|s| IpNet::new(s.gateway, s.subnet.prefix_len()).ok())
            .collect(),
    })
}

/// What the kernel layer must do to attach one endpoint. With `gateway`, default routes via the
/// network's gateways are added for each family the endpoint has an address in (never on an
/// internal network, which has no way out).
pub fn endpoint_plan(
    net: &NetworkSpec,
    ep: &EndpointSpec,
    netns_path: &str,
    gateway: bool,
) -> EndpointPlan {
    let routes = default_routes(net, ep, gateway);
    let addrs = ep.interface_addrs();
    // An IPv6 link-local address asked for needs IPv6 on the interface even on an
    // IPv4-only network.
    let disable_ipv6 = !net.subnets.iter().any(|s| s.subnet.addr().is_ipv6())
        && !ep.link_local_ips.iter().any(IpAddr::is_ipv6);
    EndpointPlan {
        host_ifname: ep.host_ifname.clone(),
        bridge: net.bridge.clone(),
        netns: netns_path.to_string(),
        ifname: ep.ifname.clone(),
        mac: ep.mac.clone(),
        mtu: net.mtu,
        announce: veth_announce(net, ep, &addrs, disable_ipv6),
        addrs,
        routes,
        isolated: !net.icc,
        disable_ipv6,
        // Placed by the daemon, which knows its run directory (an overlay network's
        // endpoints: `berth_plan::overlayns::place_endpoints`).
        host_netns: None,
    }
}

/// How a veth endpoint on `net` announces itself ([`announce`]), with the gratuitous ARP left
/// out when no neighbour can hold another MAC for its IPv4 address: on a local bridge network,
/// its MAC is the one derived from that address (`02:42:` + the address, as every holder of
/// it without a `--mac-address` of its own had), and the address's previous holder had that
/// MAC too (`reused_mac` unset). Its only other effect, the bridge learning the MAC on the
/// port, comes from a forwarding entry the kernel layer adds instead
/// ([`crate::model::EndpointPlan::announce`]). A broadcast reaches every port of the bridge and
/// every other container's namespace processes it: at 500 ports it was ≈ 2.7 ms of CPU per
/// start (docs/PERFORMANCE.md), for nothing.
///
/// Kept: on an overlay network (a previous holder may have been on another host, with its own
/// MAC), for a link-local IPv4 address (never claimed, so its previous holders are unknown),
/// and the unsolicited NA of every IPv6 address (an IPv6 address is not what the MAC derives
/// from).
fn veth_announce(
    net: &NetworkSpec,
    ep: &EndpointSpec,
    addrs: &[IpNet],
    disable_ipv6: bool,
) -> Announce {
    let mut a = announce(AnnounceKind::Veth, addrs, disable_ipv6);
    let derived = ep
        .ipv4()
        .is_some_and(|v4| names::is_derived_mac(&ep.mac, v4));
    let link_local4 = ep.link_local_ips.iter().any(IpAddr::is_ipv4);
    if net.driver != Driver::Overlay && derived && !ep.reused_mac && !link_local4 {
        a.arp = false;
    }
    a
}

fn label_matches(net: &NetworkSpec, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => net.labels.get(k).is_some_and(|have| have == v),
        None => net.labels.contains_key(want),
    }
}

/// Applies Docker's `GET /networks?filters=` to `nets` (moby's `FilterNetworks`).
///
/// Keys: `driver` (exact), `id` (prefix), `name` (substring), `label` (`key` or `key=value`),
/// `scope` (`local` matches everything, `swarm`/`global` nothing), `type` (`custom` or
/// `builtin`), `dangling` (one value: `true`/`1` keeps the user networks no container uses,
/// `false`/`0` the predefined networks and those in use; `in_use` holds the ids of networks
/// with endpoints). Values of one key are alternatives, except `label` where all must match
/// (as in Docker); different keys must all match.
pub fn filter_networks<'a>(
    nets: &'a [NetworkSpec],
    filters: &BTreeMap<String, Vec<String>>,
    in_use: &BTreeSet<Id>,
) -> Result<Vec<&'a NetworkSpec>, PlanError> {
    for (key, values) in filters {
        match key.as_str() {
            "driver" | "id" | "name" | "label" | "scope" => {}
            "type" => {
                if let Some(v) = values.iter().find(|v| *v != "custom" && *v != "builtin") {
                    return Err(PlanError::Invalid(format!("invalid filter: 'type'='{v}'")));
                }
            }
            "dangling" => {}
            _ => return Err(PlanError::Invalid(format!("invalid filter '{key}'"))),
        }
    }
    let dangling = match filters.get("dangling").map(Vec::as_slice) {
        None | Some([]) => None,
        Some([v]) => Some(match v.as_str() {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => {
                return Err(PlanError::Invalid(
                    "invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")"
                        .into(),
                ))
            }
        }),
        Some(_) => {
            return Err(PlanError::Invalid(
                "got more than one value for filter key \"dangling\"".into(),
            ))
        }
    };
    let matches = |net: &NetworkSpec, key: &str, v: &str| match key {
        "driver" => net.driver.as_str() == v,
        "id" => net.id.starts_with(v),
        "name" => net.name.contains(v),
        "label" => label_matches(net, v),
        "scope" => v == net.driver.scope(),
        "type" => (v == "builtin") == net.predefined,
        _ => true,
    };
    Ok(nets
        .iter()
        .filter(|net| {
            filters.iter().all(|(key, values)| {
                // Docker ANDs label filters (MatchKVList) and ORs the values of other keys.
                if key == "label" {
                    values.iter().all(|v| matches(net, key, v))
                } else {
                    values.is_empty() || values.iter().any(|v| matches(net, key, v))
                }
            })
        })
        .filter(|net| match dangling {
            None => true,
            Some(true) => !net.predefined && !in_use.contains(&net.id),
            Some(false) => net.predefined || in_use.contains(&net.id),
        })
        .collect())
}

/// The networks `POST /networks/prune?filters=` may remove (moby's `localNetworksPrune`): every
/// non-predefined network that
///
/// * matches every `label` filter (`key` or `key=value`),
/// * does not match *all* of the `label!` filters (moby's `MatchKVList` semantics),
/// * was created at or before `until` (a Go duration back from `now`, an RFC 3339 time or a
///   Unix timestamp; see [`crate::until::parse_until`]); `now` is Unix nanoseconds.
///
/// Other keys are refused, like dockerd. The caller still keeps networks that have endpoints.
pub fn prune_candidates<'a>(
    nets: &'a [NetworkSpec],
    filters: &BTreeMap<String, Vec<String>>,
    now: i128,
) -> Result<Vec<&'a NetworkSpec>, PlanError> {
    for key in filters.keys() {
        if !matches!(key.as_str(), "label" | "label!" | "until") {
            return Err(PlanError::Invalid(format!("invalid filter '{key}'")));
        }
    }
    let until = match filters.get("until").map(Vec::as_slice) {
        None | Some([]) => None,
        Some([v]) => Some(crate::until::parse_until(v, now)?),
        Some(_) => {
            return Err(PlanError::Invalid(
                "more than one until filter specified".into(),
            ))
        }
    };
    let empty = Vec::new();
    let with = filters.get("label").unwrap_or(&empty);
    let without = filters.get("label!").unwrap_or(&empty);
    Ok(nets
        .iter()
        .filter(|n| !n.predefined)
        .filter(|n| with.iter().all(|l| label_matches(n, l)))
        .filter(|n| without.is_empty() || !without.iter().all(|l| label_matches(n, l)))
        .filter(|n| match until {
            None => true,
            // A creation time berth cannot read is never "old enough": keep the network.
            Some(t) => crate::until::parse_rfc3339(&n.created).is_some_and(|c| c <= t),
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests;
