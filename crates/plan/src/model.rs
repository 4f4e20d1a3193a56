//! The desired-state model: what the store holds and what every plan is computed from.
//!
//! These types are the contract between the layers: the daemon stores them, the planner turns
//! them into kernel plans ([`BridgePlan`], [`EndpointPlan`]) and rule sets, the kernel layer
//! executes those plans. Serialized as JSON in the store, so field changes must stay
//! backward-compatible (`#[serde(default)]` on anything added later).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A Docker-style object id: 64 lowercase hex characters.
pub type Id = String;

/// The driver of a network, named as Docker names it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A Linux bridge with veth endpoints (Docker's `bridge`).
    Bridge,
    /// The host's own network namespace (Docker's `host`).
    Host,
    /// Loopback only (Docker's `null`, the `none` network).
    Null,
    /// Containers directly on a host interface's LAN with their own MACs (Docker's `macvlan`).
    Macvlan,
    /// Containers directly on a host interface's LAN sharing its MAC (Docker's `ipvlan`).
    Ipvlan,
    /// One network across the hosts of a cluster: a bridge on each host joined by VXLAN
    /// (Docker's classic `overlay`).
    Overlay,
}

impl Driver {
    /// The name used on the wire (`bridge`, `host`, `null`).
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Macvlan => "macvlan",
            Driver::Ipvlan => "ipvlan",
            Driver::Overlay => "overlay",
        }
    }

    /// Docker's `Scope`: `global` for a network shared by the hosts of a cluster, else `local`.
    pub fn scope(self) -> &'static str {
        if self == Driver::Overlay {
            "global"
        } else {
            "local"
        }
    }

    /// Whether the network has a Linux bridge of its own on each host, with veth endpoints
    /// (bridge, and overlay whose bridge also holds the VXLAN port): the firewall, DNS and
    /// endpoint machinery of bridge networks apply.
    pub fn has_bridge(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Overlay)
    }
}

/// One IPAM pool of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    /// The subnet, in canonical (truncated) form.
    pub subnet: IpNet,
    /// The gateway: the bridge's address in this subnet.
    pub gateway: IpAddr,
    /// Addresses for containers are allocated only from here when set (`--ip-range`).
    #[serde(default)]
    pub ip_range: Option<IpNet>,
    /// `--aux-address NAME=IP`: addresses of the subnet reserved for something else (a router,
    /// a host on the bridge): never given to a container, dynamically or by `--ip`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// An IPAM pool kept exactly as given but not in use: an IPv6 pool of a network created
/// without IPv6, which moby 27 keeps (and shows in inspect) without allocating it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnusedIpam {
    /// `Subnet` as given.
    pub subnet: String,
    /// `IPRange` as given.
    #[serde(default)]
    pub ip_range: String,
    /// `Gateway` as given.
    #[serde(default)]
    pub gateway: String,
    /// `AuxiliaryAddresses` as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// A network as the user asked for it, fully resolved (defaults filled in, subnets allocated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// 64-hex id.
    pub id: Id,
    /// Unique name.
    pub name: String,
    /// Driver.
    pub driver: Driver,
    /// Creation time, RFC 3339 with nanoseconds (given by the daemon: the planner has no clock).
    pub created: String,
    /// IPAM pools; IPv4 first, then IPv6.
    pub subnets: Vec<SubnetSpec>,
    /// `--ipv6`.
    pub enable_ipv6: bool,
    /// `--internal`: no route out, no masquerade, nothing forwarded to or from outside.
    pub internal: bool,
    /// `--attachable` (kept for Docker compatibility; every berth network accepts connects).
    pub attachable: bool,
    /// `--label`.
    pub labels: BTreeMap<String, String>,
    /// `--opt`, exactly as given (echoed back by inspect, like Docker).
    pub options: BTreeMap<String, String>,
    /// For an adopted bridge (`berth.bridge.adopt=true`): the addresses it had before berth
    /// took it over. berth removes only the gateway addresses it added, never these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted_addrs: Vec<IpNet>,
    /// For a macvlan network with `berth.macvlan.host_shim=true`: the host's address on the
    /// parent in the network's subnet (found at create), the source of the host's packets to
    /// the network's containers through the shim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_src: Option<IpAddr>,
    /// For an overlay network: its VXLAN identity, the same on every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlaySpec>,
    /// For a macvlan/ipvlan network: the parent link berth creates and owns (an 802.1Q
    /// sub-interface `BASE.VID` that did not exist, or the isolated segment of an `--internal`
    /// network without `-o parent=`). `None`: the parent is the host's, never touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_parent: Option<ParentPlan>,
    /// Bridge interface name (empty for host/null).
    pub bridge: String,
    /// Inter-container communication on this network (`com.docker.network.bridge.enable_icc`).
    pub icc: bool,
    /// Masquerade outbound traffic (`com.docker.network.bridge.enable_ip_masquerade`).
    pub masquerade: bool,
    /// MTU of the bridge and of every veth on it (`com.docker.network.driver.mtu`).
    pub mtu: u32,
    /// Whether berth's resolver answers container names on this network (user-defined networks).
    pub dns: bool,
    /// Predefined networks (`bridge`, `host`, `none`) cannot be removed.
    pub predefined: bool,
    /// `IPAM.Options` (`--ipam-opt`) exactly as given: `None` when the request had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// IPAM pools given but not in use (see [`UnusedIpam`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unused_ipam: Vec<UnusedIpam>,
}

/// An overlay network's VXLAN identity (cluster-wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OverlaySpec {
    /// The VXLAN network identifier (Docker's `com.docker.network.driver.overlay.vxlanid_list`).
    pub vni: u32,
    /// The UDP port of the VXLAN tunnels (4789, IANA's; encrypted networks
    /// [`crate::wireguard::ENCRYPTED_VXLAN_PORT`]).
    pub port: u16,
    /// `--opt encrypted`: traffic between hosts goes through berth's WireGuard datapath.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

/// A container's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    /// 64-hex id.
    pub id: Id,
    /// The network.
    pub network_id: Id,
    /// Host-side veth name (derived from the endpoint id, ≤ 15 bytes).
    pub host_ifname: String,
    /// Container-side interface name (`eth0`, `eth1`, …).
    pub ifname: String,
    /// MAC address of the container side, `02:42:…` derived from the IPv4 address like Docker.
    pub mac: String,
    /// Allocated addresses with the subnet's prefix length (`10.1.0.2/24`).
    pub addrs: Vec<IpNet>,
    /// The `--ip` the user asked for, if any (Docker's `IPAMConfig.IPv4Address`).
    #[serde(default)]
    pub static_ipv4: Option<IpAddr>,
    /// The `--ip6` the user asked for, if any.
    #[serde(default)]
    pub static_ipv6: Option<IpAddr>,
    /// `--network-alias` / `network connect --alias`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Docker's `GwPriority`: the endpoint with the highest priority gives the default route.
    #[serde(default)]
    pub gw_priority: i64,
    /// Docker's endpoint `DriverOpts`, kept as given (berth's drivers read none of them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Docker's endpoint `Links` (`NAME[:ALIAS]`, kept as given and validated by
    /// [`crate::network::parse_link`]): on this network, `ALIAS` (and `ALIAS.NETWORK`) resolves
    /// to whatever `NAME` resolves to there, for this container only. Resolved at every
    /// answer, so a link may name a container that does not exist yet, and never outlives it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Docker's `IPAMConfig.LinkLocalIPs`: added to the container's interface next to the
    /// allocated addresses (with moby's prefixes, /16 and /64; see
    /// [`EndpointSpec::link_local_nets`]). Not in DNS, not claimed from the network's IPAM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<IpAddr>,
    /// One of its IPv4 addresses was last held by an endpoint with another MAC (a
    /// `--mac-address` of its own), so neighbours may still have that MAC cached for it: this
    /// endpoint announces itself when it comes up (see [`crate::network::endpoint_plan`]).
    /// Set when the address is allocated, from the release record of the previous holder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused_mac: bool,
}

impl EndpointSpec {
    /// Its (first) IPv4 address, the one its default MAC derives from.
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a.addr() {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
    }

    /// The link-local addresses with the prefix moby gives them (`CreateOptionIPAM`: /16 for
    /// IPv4, /64 for IPv6), as they are put on the container's interface.
    pub fn link_local_nets(&self) -> Vec<IpNet> {
        self.link_local_ips
            .iter()
            .filter_map(|a| IpNet::new(*a, if a.is_ipv4() { 16 } else { 64 }).ok())
            .collect()
    }

    /// Every address on the container's interface: the allocated ones, then the link-local
    /// ones.
    pub fn interface_addrs(&self) -> Vec<IpNet> {
        let mut all = self.addrs.clone();
        all.extend(self.link_local_nets());
        all
    }
}

/// How a container's network namespace is obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "of")]
pub enum NetworkMode {
    /// Its own namespace, attached to `ContainerSpec::endpoints` (Docker's bridge/user networks).
    Networks,
    /// The daemon's (host) namespace.
    Host,
    /// Its own namespace with loopback only.
    None,
    /// The namespace of another container (its id).
    Container(Id),
}

/// A container: a process in its own namespaces, as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// 64-hex id.
    pub id: Id,
    /// Unique name.
    pub name: String,
    /// UTS hostname (defaults to the name).
    pub hostname: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Command and arguments.
    pub cmd: Vec<String>,
    /// Environment (`KEY=VALUE`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Network mode.
    pub mode: NetworkMode,
    /// Endpoints, in attachment order (only for [`NetworkMode::Networks`]).
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// `--dns` servers (empty: berth's resolver or the host's).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    #[serde(default)]
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// `--rootfs DIR`: chroot into this directory (else the host's filesystem).
    #[serde(default)]
    pub rootfs: Option<String>,
    /// `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// Capabilities, seccomp, no_new_privs, mounts (issue 8); the default is berth's default
    /// confinement, also for containers stored before it existed.
    #[serde(default)]
    pub security: crate::security::SecuritySpec,
    /// Terminal and stdin (`-t`, `-i`); the default is neither, also for containers stored
    /// before it existed.
    #[serde(default)]
    pub stdio: StdioSpec,
    /// Working directory, user, labels (`-w`, `-u`, `--label`); the default is Docker's
    /// (`/`, root, none), also for containers stored before it existed.
    #[serde(default)]
    pub process: ProcessSpec,
    /// `--restart`; `no` also for containers stored before it existed.
    #[serde(default)]
    pub restart: crate::restart::RestartPolicy,
    /// `--link NAME:ALIAS` on the default `bridge` network (Docker's `HostConfig.Links`), the
    /// linked container found at create ([`crate::links`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_links: Vec<LegacyLink>,
}

/// One legacy link of a container on the default bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyLink {
    /// The linked container's id.
    pub child: Id,
    /// The alias it is known by in the linking container.
    pub alias: String,
}

/// How a container's command runs, and its labels: Docker's `Config.WorkingDir`, `Config.User`
/// and `Config.Labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Directory the command starts in (empty: `/`).
    #[serde(default)]
    pub working_dir: String,
    /// `UID[:GID]` or `NAME[:GROUP]` (empty: root).
    #[serde(default)]
    pub user: String,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--sysctl`: written in the container's namespaces before its command runs (validated
    /// by [`crate::sysctl::validate`]).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
}

/// A container's terminal and stdin, as Docker's `Config.Tty`, `OpenStdin` and `StdinOnce`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioSpec {
    /// `-t`: the command runs on a pseudo-terminal (its output is one stream).
    #[serde(default)]
    pub tty: bool,
    /// `-i`: the command's stdin stays open for attached clients (else it is `/dev/null`).
    #[serde(default)]
    pub open_stdin: bool,
    /// The stdin closes (EOF) when the first attached client closes its input.
    #[serde(default)]
    pub stdin_once: bool,
    /// The terminal's size when it is made, `(rows, columns)` (`HostConfig.ConsoleSize`).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

/// Where a container is in its life (Docker's `State.Status` values berth uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Its init runs.
    Running,
    /// It ran and exited.
    Exited,
    /// It exited and its restart policy starts it again after a delay (Docker's
    /// `restarting`).
    Restarting,
}

impl Status {
    /// Docker's name for it (`created`, `running`, `exited`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Restarting => "restarting",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ContainerSpec {
    /// A container `name` (id `id`) running `cmd` on no network yet, every option at its
    /// default: the starting point of the planner's and the tests' containers.
    pub fn new(id: impl Into<Id>, name: impl Into<String>, cmd: Vec<String>) -> ContainerSpec {
        let name = name.into();
        ContainerSpec {
            id: id.into(),
            hostname: name.clone(),
            name,
            created: String::new(),
            cmd,
            env: Vec::new(),
            mode: NetworkMode::Networks,
            endpoints: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            extra_hosts: Vec::new(),
            rootfs: None,
            auto_remove: false,
            security: Default::default(),
            stdio: Default::default(),
            process: Default::default(),
            restart: Default::default(),
            legacy_links: Vec::new(),
        }
    }
}

/// Where a container is in its life
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Where it is in its life.
    pub status: Status,
    /// Pid of the container's init (in the daemon's pid namespace), 0 when not running.
    pub pid: i32,
    /// Exit code of the command once exited.
    pub exit_code: i32,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Its restarts by its restart policy.
    #[serde(default)]
    pub restart: crate::restart::RestartMemory,
}

/// What the kernel layer needs to make a bridge exist as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePlan {
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Gateway addresses with prefix length (`10.1.0.1/24`).
    pub addrs: Vec<IpNet>,
}

/// A route inside a container namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Destination (`0.0.0.0/0` for the default route).
    pub dst: IpNet,
    /// Next hop.
    pub via: IpAddr,
}

/// The kind of a link berth creates on a parent interface directly inside a container namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "mode")]
pub enum SublinkKind {
    /// `macvlan` with `IFLA_MACVLAN_MODE` (private 1, vepa 2, bridge 4, passthru 8).
    Macvlan(u32),
    /// `ipvlan` with `IFLA_IPVLAN_MODE` (l2 0, l3 1, l3s 2) and `IFLA_IPVLAN_FLAGS` (private 1,
    /// vepa 2; 0 is bridge).
    Ipvlan(u16, u16),
}

impl SublinkKind {
    /// The kernel's `IFLA_INFO_KIND` (`macvlan`, `ipvlan`).
    pub fn kind(self) -> &'static str {
        match self {
            SublinkKind::Macvlan(_) => "macvlan",
            SublinkKind::Ipvlan(..) => "ipvlan",
        }
    }
}

/// What the kernel layer needs to create one container interface on a parent interface of the
/// host (macvlan, ipvlan) directly inside the container namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SublinkPlan {
    /// The host interface it hangs off (`IFLA_LINK`); berth never changes it.
    pub parent: String,
    /// Kind and mode.
    pub kind: SublinkKind,
    /// Path of the container's network namespace.
    pub netns: String,
    /// Container-side name (`eth0`).
    pub ifname: String,
    /// Its MAC (macvlan only; an ipvlan has its parent's).
    pub mac: Option<String>,
    /// Its addresses with prefix.
    pub addrs: Vec<IpNet>,
    /// Routes to add inside the container once it is up (default routes of the gateway endpoint).
    pub routes: Vec<RoutePlan>,
    /// IPv6 off on it (IPv4-only networks).
    pub disable_ipv6: bool,
    /// How it announces its addresses when it comes up ([`crate::network::announce`]).
    #[serde(default)]
    pub announce: Announce,
}

/// How a new container interface announces its addresses the moment it comes up, so that
/// bridges learn its MAC on its port, and neighbours that cached an old MAC for a reused address
/// update it, before the first frame for it arrives (else that frame is flooded to every port).
/// The kernel does it (`arp_notify`, `ndisc_notify` on the interface: one announcement per
/// address when the link goes up with its addresses already on it), so no socket, no thread and
/// no timer of berth's is involved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// `net.ipv4.conf.<if>.arp_notify = 1`: a gratuitous ARP request per IPv4 address.
    pub arp: bool,
    /// `net.ipv6.conf.<if>.ndisc_notify = 1`: an unsolicited neighbour advertisement (override
    /// flag set) to all nodes per IPv6 address.
    pub na: bool,
}

impl Announce {
    /// Nothing is announced: the bridge does not learn the MAC from a frame, so the kernel
    /// layer puts it in the bridge's forwarding database ([`EndpointPlan::announce`]).
    pub fn is_silent(self) -> bool {
        !self.arp && !self.na
    }
}

/// What kind of link berth creates as a macvlan/ipvlan network's parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentKind {
    /// An 802.1Q sub-interface of host interface `base` (`ip link add link BASE name BASE.VID
    /// type vlan id VID`): the network's containers are on that VLAN of the LAN.
    Vlan {
        /// The host interface it is on.
        base: String,
        /// The VLAN id, 1 to 4094.
        vid: u16,
    },
    /// A `dummy` link (Docker's choice for `--internal` macvlan/ipvlan networks without a
    /// parent): the containers share an L2 segment inside the host and nothing leaves it
    /// (the dummy drops whatever the macvlan driver passes down to it).
    Dummy,
}

impl ParentKind {
    /// `IFLA_INFO_KIND`.
    pub fn kind(&self) -> &'static str {
        match self {
            ParentKind::Vlan { .. } => "vlan",
            ParentKind::Dummy => "dummy",
        }
    }
}

/// A parent link berth creates for macvlan/ipvlan networks, and removes when no network wants
/// it any more (only when it carries berth's mark).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentPlan {
    /// Its name (`eth0.10`; `dm-`/`di-` + 12 hex of the network id for an internal segment).
    pub name: String,
    /// What it is.
    pub kind: ParentKind,
    /// Its ownership mark (`ifalias`).
    pub alias: String,
}

/// A route of the host through a macvlan host shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimRoute {
    /// Destination (the network's ip range).
    pub dst: IpNet,
    /// Preferred source (the host's address on the parent).
    pub src: IpAddr,
}

/// A macvlan interface of the host on a macvlan network's parent (bridge mode), so the host can
/// reach the network's containers, which it cannot through the parent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimPlan {
    /// Its name (`bm` + 12 hex of the network id).
    pub name: String,
    /// The parent.
    pub parent: String,
    /// Its ownership mark (`ifalias`).
    pub alias: String,
    /// Routes through it.
    pub routes: Vec<ShimRoute>,
}

/// What the kernel layer needs to attach one container namespace to one bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPlan {
    /// Host-side veth name.
    pub host_ifname: String,
    /// Bridge to enslave the host side to.
    pub bridge: String,
    /// Path of the container's network namespace (a bind mount or `/proc/PID/ns/net`).
    pub netns: String,
    /// Container-side name (`eth0`).
    pub ifname: String,
    /// Container-side MAC.
    pub mac: String,
    /// MTU for both ends.
    pub mtu: u32,
    /// Container-side addresses with prefix.
    pub addrs: Vec<IpNet>,
    /// Routes to add inside the container (default routes when this endpoint is the gateway one).
    pub routes: Vec<RoutePlan>,
    /// Bridge-port isolation (`enable_icc=false`): isolated ports cannot talk to each other.
    pub isolated: bool,
    /// IPv6 off on both ends (`net.ipv6.conf.<if>.disable_ipv6=1`) for IPv4-only networks,
    /// like Docker: otherwise every new veth's link-local address, DAD, router solicitations
    /// and MLD reports are flooded by the bridge into every container namespace, and setup gets
    /// slower with each container already attached.
    #[serde(default)]
    pub disable_ipv6: bool,
    /// How the container side announces its addresses ([`crate::network::announce`]). When it
    /// announces nothing, the kernel layer adds the container's MAC to the bridge's forwarding
    /// database on the host side's port instead (`bridge fdb add MAC dev PORT master static`),
    /// so the first frame for it is not flooded either.
    #[serde(default)]
    pub announce: Announce,
    /// The namespace the host side and its bridge live in: `None` for berthd's own, the
    /// overlay network's namespace (`RUNDIR/netns/ov-…`, [`crate::overlayns`]) for an
    /// endpoint on an overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<String>,
}
