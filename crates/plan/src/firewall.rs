//! berth's nftables rule set, as text for `nft -f`.
//!
//! berth owns exactly one table, `table inet berth`, and never flushes or deletes it, nor touches
//! any other table. The split that keeps every change small:
//!
//! * **Static rules** live in chains berth fully owns (`forward`, `postrouting`). They do not
//!   mention any network: they match *sets*. [`base_script`] (re)writes them at daemon start, in
//!   one transaction (`nft -f` is atomic), flushing only those owned chains.
//! * **Everything per network** is a set element carrying a `comment` that names its cause
//!   (`network web`). Creating or removing a network is a [`diff_script`] of a few `add element` /
//!   `delete element` lines: O(what changed), never a rule rewrite.
//! * Chain **`user`** (Docker's `DOCKER-USER`) is created if missing, jumped to first from
//!   `forward`, and otherwise never flushed or edited: it is the administrator's.
//!
//! # The forward chain, rule by rule
//!
//! Two kinds of traffic reach the `inet` forward hook. Routed traffic: container ↔ outside,
//! container ↔ another network, and traffic that enters and leaves the *same* bridge after
//! routing (hairpin, e.g. a container reaching a published port of a neighbour through a host
//! address). And, when `br_netfilter` is loaded with `net.bridge.bridge-nf-call-iptables=1`
//! (the per-namespace default once the module is in, e.g. because Docker loaded it), even
//! traffic *bridged* between two containers of one network — with the bridge itself as both
//! `iifname` and `oifname`. berth never loads the module, but must be right either way, so
//! same-bridge traffic is decided before anything that looks at one side only.
//!
//! 1. `jump user`: the administrator's rules come first and may accept or drop anything.
//! 2. `iifname @icc_off oifname @icc_off drop`: with `enable_icc=false`, traffic between
//!    containers of that network is dropped here too when it reaches this hook (layer 2 is
//!    handled by bridge-port isolation in the kernel plan). It also matches traffic between two
//!    different icc-off bridges, which rule 5 would drop anyway.
//! 3. `iifname . oifname @same_bridge accept`: traffic that leaves the bridge it came in on is
//!    the network talking to itself (bridged, or hairpin), allowed — also on internal networks.
//!    `same_bridge` holds `"br" . "br"` for every bridge: nft cannot compare two interface names
//!    with each other, so the pairs are spelled out, one element per network.
//! 4. `iifname @internal drop`, `oifname @internal drop`: an internal network exchanges
//!    nothing routed with anything else.
//! 5. `oifname @bridges ct status dnat accept`: published ports (DNAT happened in `prerouting`
//!    or `output`), from outside and from containers of other networks through a host address.
//!    Before the isolation rule on purpose: a published port is published to everyone that can
//!    reach the host, as in Docker with its userland proxy; internal networks stay out (rule 4).
//! 6. `iifname @bridges oifname @bridges drop`: isolation, one berth network never reaches
//!    another's container addresses (Docker's `DOCKER-ISOLATION-STAGE-1/2`).
//! 7. `oifname @bridges ct state established,related accept`: replies to connections containers
//!    opened.
//! 8. `oifname @direct accept`: networks created with `berth.network.allow_direct=true`, whose
//!    container addresses may be reached directly (routed) from outside.
//! 9. `oifname @bridges drop`: nothing else from outside reaches a container address.
//! 10. `iifname @bridges accept`: containers may open connections out.
//! 11. Only when the host had forwarding of a family off before berth enabled it:
//!     `meta nfproto ipv4 drop` / `meta nfproto ipv6 drop`. Enabling forwarding for berth must not
//!     turn the host into a router for anything else.
//!
//! `postrouting` masquerades traffic from `masq4`/`masq6` subnets (non-internal networks with
//! masquerade on) that leaves through an interface that is not a berth bridge; the host's own
//! loopback-sourced connections to published ports (`curl 127.0.0.1:8080`: `route_localnet` is on
//! for berth's bridges only); and hairpinned published-port traffic (a container reaching a
//! port published by itself or a neighbour through a host address: without the masquerade the
//! reply would bypass the host and never be un-DNATed).
//!
//! # Published ports
//!
//! Two maps per family and host-address kind. One element per published port:
//!
//! * `publish4` / `publish6`: `host address . protocol . host port : container address .
//!   container port`, for ports published on one host address (`127.0.0.1:8080:80`).
//! * `publish4_any` / `publish6_any`: `protocol . host port : container address . container
//!   port`, for ports published on every host address (`8080:80`).
//!
//! and one interval element per run of 32 or more consecutive ports of one container whose
//! container ports are their host ports (`-p 30000-30999:30000-30999`), in `publish4_runs`,
//! `publish4_any_runs`, `publish6_runs`, `publish6_any_runs` (`[address .] protocol .
//! FIRST-LAST : container address`: the DNAT keeps the port). A range with its container
//! ports elsewhere stays one element per port (nft maps cannot shift a port by an offset).
//!
//! Four DNAT rules per family read them, in `prerouting` (`nat`, priority `dstnat`: traffic
//! arriving from outside and from containers) and the same four in `output` (`nat`, priority
//! -100: the host's own connections, IPv4 loopback included), each guarded by `fib daddr type
//! local`. `::1` is never DNATed (IPv6 has no `route_localnet`: a `::1` packet cannot leave
//! `lo`); berthd answers `[::1]:PORT` itself with a relay (see `ports::loopback6_relays`): for
//! TCP, two more `output` rules redirect the host's `[::1]` connections to the ports in set
//! `relay6_tcp` (`::1 . PORT`, one element per relayed port) and in set `relay6_tcp_runs`
//! (`::1 . FIRST-LAST`, one interval element per run of 32 or more consecutive ports), both
//! owned by their container like the map elements, to berthd's one listener on `[::1]:R`
//! ([`FirewallConfig::relay6_port`]).
//! `prerouting` never translates loopback destinations; `prerouting_raw` (`filter`, priority
//! `raw`) drops any packet for 127.0.0.0/8 or ::1 that did not come from `lo` — Docker's
//! moby#45610, where a LAN neighbour reached `127.0.0.1`-published ports by sending to the host's
//! MAC. Adding or removing a port is one `add element` / `delete element` transaction whatever
//! the number of ports already published.
//!
//! # Anti-spoofing: `table bridge berth`
//!
//! A container with `CAP_NET_RAW`/`CAP_NET_ADMIN` could otherwise send from a neighbour's
//! address, answer ARP or neighbour discovery for the gateway, or act as a router (IPv6 router
//! advertisements) or DHCP server (the class of CVE-2020-13401). berth's second table, in the
//! `bridge` family, sees every frame a container sends into its bridge, before it is forwarded
//! to another port or delivered to the host (hook `prerouting`). Its static rules never name a
//! container: chain `prerouting` jumps to chain `guard` for ports in set `guarded`, and `guard`
//! reads sets keyed by the bridge port (the host-side veth, `iifname`):
//!
//! 1. the Ethernet source is the port's own MAC (`port_mac`);
//! 2. only IPv4, IPv6 and ARP frames (no VLAN tags or other protocols to smuggle through);
//! 3. ARP: the sender hardware address is the port's MAC, the sender protocol address one of
//!    its IPv4 addresses (`port_ip4`) or 0.0.0.0 (an RFC 5227 probe);
//! 4. IPv4: the source is one of its addresses;
//! 5. IPv6: the source is one of its addresses, its EUI-64 link-local address (`port_ip6`), or
//!    `::` (duplicate address detection, MLD);
//! 6. no router advertisements and no redirects (ICMPv6 134, 137): containers are not routers;
//! 7. a neighbour advertisement's target is one of its own IPv6 addresses (`port_nd`: the same
//!    addresses as raw 128-bit integers, because nft 1.0.6 cannot name the target field);
//! 8. no DHCP or DHCPv6 server replies (UDP source port 67, 547).
//!
//! Every endpoint adds one element per set (one per address in the address sets) when it is
//! plumbed, with its container's start (the same transaction as its published ports), and
//! loses them when its container exits. Networks created with `berth.network.allow_spoofing=true`
//! get no elements: their ports are not in `guarded`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use serde_json::Value;

use crate::model::NetworkSpec;
use crate::ports::Published;

/// The family and name of berth's table, as written in nft commands.
pub const TABLE: &str = "inet berth";

/// Set of every berth bridge (`type ifname`).
pub const SET_BRIDGES: &str = "bridges";
/// Set of the bridges of internal networks (`type ifname`).
pub const SET_INTERNAL: &str = "internal";
/// Set of the bridges with `enable_icc=false` (`type ifname`).
pub const SET_ICC_OFF: &str = "icc_off";
/// Set of `bridge . bridge` pairs: routed traffic that stays on its bridge (`ifname . ifname`).
pub const SET_SAME_BRIDGE: &str = "same_bridge";
/// Set of IPv4 subnets to masquerade (`ipv4_addr`, interval).
pub const SET_MASQ4: &str = "masq4";
/// Set of IPv6 subnets to masquerade (`ipv6_addr`, interval).
pub const SET_MASQ6: &str = "masq6";
/// Set of `subnet . bridge` pairs (`ipv4_addr . ifname`, interval): DNATed traffic from a
/// network's subnet back into its own bridge is hairpin and is masqueraded.
pub const SET_HAIRPIN4: &str = "hairpin4";
/// Same for IPv6 (`ipv6_addr . ifname`, interval).
pub const SET_HAIRPIN6: &str = "hairpin6";
/// Bridges whose container addresses may be reached directly from outside (`ifname`).
pub const SET_DIRECT: &str = "direct";
/// Bridges of the networks berth's resolver answers on, at their gateways (`ifname`).
pub const SET_DNS: &str = "dns";
/// Ports published on one IPv4 host address.
pub const MAP_PUBLISH4: &str = "publish4";
/// Ports published on every IPv4 address of the host.
pub const MAP_PUBLISH4_ANY: &str = "publish4_any";
/// Ports published on one IPv6 host address.
pub const MAP_PUBLISH6: &str = "publish6";
/// Ports published on every IPv6 address of the host.
pub const MAP_PUBLISH6_ANY: &str = "publish6_any";
/// TCP host ports whose `[::1]` connections go to berthd's one relay listener, one element
/// `::1 . PORT` per port (`ipv6_addr . inet_service`): the ports published on `::1` or on
/// every address (see `ports::loopback6_relays`) that are not part of a long run (those are in
/// [`SET_RELAY6_TCP_RUNS`]). The address is in the key on purpose: a set keyed by a port alone
/// gets the kernel's bitmap backend, which finds an element by walking a list of all of them
/// (an insert or delete costs O(elements) with 10,000 ports published).
pub const SET_RELAY6_TCP: &str = "relay6_tcp";
/// The same for runs of at least [`MIN_RELAY6_RUN`] consecutive ports of ONE container, one
/// element per run (`::1 . 30000-30999`; `flags interval`: the kernel's pipapo backend for a
/// concatenation with ranges), so a 1,000-port range is one element. Not used for every port:
/// a pipapo transaction has a fixed cost of its own (it rebuilds its lookup tables; bare,
/// 2026-12-01: one element added 0.18 ms, deleted 0.40 ms, against 0.05 / 0.07 ms in the hash
/// set), which a port alone would pay at every publish and removal.
pub const SET_RELAY6_TCP_RUNS: &str = "relay6_tcp_runs";
/// The shortest run of one container's consecutive relayed TCP ports that is one element of
/// [`SET_RELAY6_TCP_RUNS`] rather than one element per port in [`SET_RELAY6_TCP`] (the same
/// length from which a publish asks the kernel for the bound ports of a run,
/// `ports::MIN_PROBE_RUN`): 32 hash elements cost about what one pipapo transaction does.
pub const MIN_RELAY6_RUN: usize = crate::ports::MIN_PROBE_RUN as usize;

/// Runs of ports published on one IPv4 host address whose container port is the host port
/// (`-p 127.0.0.1:30000-30999:30000-30999`): `host address . protocol . FIRST-LAST :
/// container address`, one interval element per run of [`MIN_PUBLISH_RUN`] or more ports of
/// one container (`flags interval`, the kernel's pipapo backend). Its DNAT rule translates the
/// address only, so the port stays the one the client asked for. Every other published port
/// (alone, in a shorter run, or with its container port elsewhere: nft maps cannot shift a
/// port by an offset) is one element per port in [`MAP_PUBLISH4`].
pub const MAP_PUBLISH4_RUNS: &str = "publish4_runs";
/// The same for runs published on every IPv4 address (`-p 30000-30999:30000-30999`):
/// `protocol . FIRST-LAST : container address`; the others are in [`MAP_PUBLISH4_ANY`].
pub const MAP_PUBLISH4_ANY_RUNS: &str = "publish4_any_runs";
/// [`MAP_PUBLISH4_RUNS`] for IPv6.
pub const MAP_PUBLISH6_RUNS: &str = "publish6_runs";
/// [`MAP_PUBLISH4_ANY_RUNS`] for IPv6.
pub const MAP_PUBLISH6_ANY_RUNS: &str = "publish6_any_runs";
/// The shortest run of one container's consecutive published ports (same protocol, host
/// address and container address, each container port equal to its host port) that is one
/// element of a `publish*_runs` map rather than one element per port: the same length as
/// [`MIN_RELAY6_RUN`], for the same reason (a pipapo transaction's fixed cost, paid by runs
/// only, never by a port published alone).
pub const MIN_PUBLISH_RUN: usize = MIN_RELAY6_RUN;

/// Every map (and set) the published ports own: name, key type, value type (`None`: a plain
/// set), comment. Their elements belong to running containers (`port_elements`), not to
/// networks; the daemon diffs them per container. Only [`SET_RELAY6_TCP_RUNS`] and the
/// `publish*_runs` maps hold intervals ([`is_interval_port_set`]).
pub const MAPS: [(&str, &str, Option<&str>, &str); 10] = [
    (
        MAP_PUBLISH4,
        "ipv4_addr . inet_proto . inet_service",
        Some("ipv4_addr . inet_service"),
        "ports published on one IPv4 host address",
    ),
    (
        MAP_PUBLISH4_ANY,
        "inet_proto . inet_service",
        Some("ipv4_addr . inet_service"),
        "ports published on every IPv4 host address",
    ),
    (
        MAP_PUBLISH6,
        "ipv6_addr . inet_proto . inet_service",
        Some("ipv6_addr . inet_service"),
        "ports published on one IPv6 host address",
    ),
    (
        MAP_PUBLISH6_ANY,
        "inet_proto . inet_service",
        Some("ipv6_addr . inet_service"),
        "ports published on every IPv6 host address",
    ),
    (
        MAP_PUBLISH4_RUNS,
        "ipv4_addr . inet_proto . inet_service",
        Some("ipv4_addr"),
        "runs of ports published on one IPv4 host address, port unchanged",
    ),
    (
        MAP_PUBLISH4_ANY_RUNS,
        "inet_proto . inet_service",
        Some("ipv4_addr"),
        "runs of ports published on every IPv4 host address, port unchanged",
    ),
    (
        MAP_PUBLISH6_RUNS,
        "ipv6_addr . inet_proto . inet_service",
        Some("ipv6_addr"),
        "runs of ports published on one IPv6 host address, port unchanged",
    ),
    (
        MAP_PUBLISH6_ANY_RUNS,
        "inet_proto . inet_service",
        Some("ipv6_addr"),
        "runs of ports published on every IPv6 host address, port unchanged",
    ),
    (
        SET_RELAY6_TCP,
        "ipv6_addr . inet_service",
        None,
        "TCP ports whose [::1] connections berthd relays",
    ),
    (
        SET_RELAY6_TCP_RUNS,
        "ipv6_addr . inet_service",
        None,
        "runs of TCP ports whose [::1] connections berthd relays",
    ),
];

/// Whether `name`, one of [`MAPS`], holds intervals (`flags interval`): the runs of
/// [`SET_RELAY6_TCP_RUNS`] and of the `publish*_runs` maps.
pub fn is_interval_port_set(name: &str) -> bool {
    matches!(
        name,
        SET_RELAY6_TCP_RUNS
            | MAP_PUBLISH4_RUNS
            | MAP_PUBLISH4_ANY_RUNS
            | MAP_PUBLISH6_RUNS
            | MAP_PUBLISH6_ANY_RUNS
    )
}

/// Every set berth owns: name, nft type, whether it holds intervals, comment.
pub const SETS: [(&str, &str, bool, &str); 10] = [
    (SET_BRIDGES, "ifname", false, "every berth bridge"),
    (
        SET_INTERNAL,
        "ifname",
        false,
        "bridges of internal networks",
    ),
    (
        SET_ICC_OFF,
        "ifname",
        false,
        "bridges with enable_icc=false",
    ),
    (
        SET_SAME_BRIDGE,
        "ifname . ifname",
        false,
        "routed traffic staying on its bridge",
    ),
    (
        SET_MASQ4,
        "ipv4_addr",
        true,
        "IPv4 subnets masqueraded when leaving the host",
    ),
    (
        SET_MASQ6,
        "ipv6_addr",
        true,
        "IPv6 subnets masqueraded when leaving the host",
    ),
    (
        SET_HAIRPIN4,
        "ipv4_addr . ifname",
        true,
        "subnet . own bridge: hairpinned published-port traffic is masqueraded",
    ),
    (
        SET_HAIRPIN6,
        "ipv6_addr . ifname",
        true,
        "subnet . own bridge: hairpinned published-port traffic is masqueraded",
    ),
    (
        SET_DIRECT,
        "ifname",
        false,
        "bridges whose container addresses are reachable directly (allow_direct)",
    ),
    (
        SET_DNS,
        "ifname",
        false,
        "bridges whose gateway answers DNS (berth's resolver)",
    ),
];

/// The family and name of berth's anti-spoofing table, as written in nft commands.
pub const BRIDGE_TABLE: &str = "bridge berth";
/// Bridge ports whose frames are checked (`ifname`).
pub const SET_GUARDED: &str = "guarded";
/// `port . MAC`: the one Ethernet source a port may use.
pub const SET_PORT_MAC: &str = "port_mac";
/// `port . address`: the IPv4 sources (and ARP sender addresses) a port may use.
pub const SET_PORT_IP4: &str = "port_ip4";
/// `port . address`: the IPv6 sources a port may use (its addresses and its link-local one).
pub const SET_PORT_IP6: &str = "port_ip6";
/// `port . address as a 128-bit integer`: the targets a port may advertise in neighbour
/// advertisements.
pub const SET_PORT_ND: &str = "port_nd";
/// `port . MAC . IPv4 address`: the port's own MAC and addresses together, the one lookup of
/// the guard's fast path (see [`guard_rule::FAST4`]).
pub const SET_PORT_OK4: &str = "port_ok4";
/// `port . MAC . IPv6 address`, as [`SET_PORT_OK4`] for IPv6.
pub const SET_PORT_OK6: &str = "port_ok6";

/// Every set of `table bridge berth`: name, type declaration, comment. Their elements are owned
/// by endpoints (see [`guard_elements`]), not networks.
pub const GUARD_SETS: [(&str, &str, &str); 7] = [
    (
        SET_GUARDED,
        "type ifname",
        "bridge ports under anti-spoofing",
    ),
    (
        SET_PORT_MAC,
        "type ifname . ether_addr",
        "the MAC each bridge port may send from",
    ),
    (
        SET_PORT_IP4,
        "type ifname . ipv4_addr",
        "the IPv4 addresses each bridge port may send from",
    ),
    (
        SET_PORT_IP6,
        "type ifname . ipv6_addr",
        "the IPv6 addresses each bridge port may send from",
    ),
    (
        SET_PORT_ND,
        "typeof iifname . @th,64,128",
        "the IPv6 addresses each bridge port may advertise",
    ),
    (
        SET_PORT_OK4,
        "type ifname . ether_addr . ipv4_addr",
        "each bridge port's own MAC and IPv4 addresses together (the TCP fast path)",
    ),
    (
        SET_PORT_OK6,
        "type ifname . ether_addr . ipv6_addr",
        "each bridge port's own MAC and IPv6 addresses together (the TCP fast path)",
    ),
];

/// Comments of the anti-spoofing rules.
pub mod guard_rule {
    /// `prerouting`: the jump.
    pub const JUMP: &str = "anti-spoofing for berth's bridge ports";
    /// The fast path, before rule 1: a TCP frame whose port, source MAC and source IPv4
    /// address are all the port's own passes every rule below (it is IPv4, from its MAC and
    /// address, neither ARP, ICMPv6 nor DHCP), so one lookup accepts it.
    pub const FAST4: &str = "TCP from its own MAC and IPv4 address: passes every rule below";
    /// The fast path for IPv6.
    pub const FAST6: &str = "TCP from its own MAC and IPv6 address: passes every rule below";
    /// Rule 1.
    pub const MAC: &str = "a container sends only from its own MAC";
    /// Rule 2.
    pub const ETHERTYPE: &str = "only IPv4, IPv6 and ARP";
    /// Rule 3, hardware address.
    pub const ARP_MAC: &str = "ARP: only its own MAC as sender";
    /// Rule 3, protocol address.
    pub const ARP_IP: &str = "ARP: only its own IPv4 addresses as sender";
    /// Rule 4.
    pub const IP4: &str = "IPv4: only its own addresses as source";
    /// Rule 5.
    pub const IP6: &str = "IPv6: only its own and its link-local address as source";
    /// Rule 6.
    pub const RA: &str = "no router advertisements or redirects from containers";
    /// Rule 7.
    pub const NA: &str = "neighbour advertisements only for its own addresses";
    /// Rule 8.
    pub const DHCP: &str = "no DHCP or DHCPv6 server replies from containers";
}

/// Comments of the forward chain's rules (the text `nft list table inet berth` shows, and what
/// `berth explain` names as the rule deciding a flow).
pub mod rule {
    /// Rule 1.
    pub const USER: &str = "administrator's rules first";
    /// Rule 2.
    pub const ICC_OFF: &str = "enable_icc=false: no routed traffic between its containers";
    /// Rule 3.
    pub const SAME_BRIDGE: &str = "routed traffic staying on its network";
    /// Rule 4, inbound side.
    pub const INTERNAL_OUT: &str = "internal networks: nothing routed out";
    /// Rule 4, outbound side.
    pub const INTERNAL_IN: &str = "internal networks: nothing routed in";
    /// Rule 5.
    pub const PUBLISHED: &str = "published ports, also from other networks through a host address";
    /// Before the published ports' DNAT.
    pub const DNS_NOT_PUBLISHED: &str =
        "a network's gateway port 53 is berth's resolver, never a published port";
    /// Rule 6.
    pub const ISOLATION: &str = "isolation: networks do not reach each other";
    /// Rule 7.
    pub const REPLIES: &str = "replies to connections containers opened";
    /// Rule 8.
    pub const DIRECT: &str = "allow_direct networks: container addresses reachable from outside";
    /// Rule 9.
    pub const NOT_FROM_OUTSIDE: &str =
        "container addresses are not reachable from outside unless published";
    /// Rule 10.
    pub const OUT: &str = "containers may connect out";
    /// Rule 11 (IPv4).
    pub const GUARD4: &str =
        "berth enabled ip_forward; forwarding that does not involve berth stays off";
    /// Rule 11 (IPv6).
    pub const GUARD6: &str =
        "berth enabled IPv6 forwarding; forwarding that does not involve berth stays off";
    /// `prerouting_raw`: the VXLAN port of encrypted overlay networks.
    pub const WG_VXLAN: &str =
        "encrypted overlay VXLAN port: only what the berth WireGuard device decrypted";
    /// `prerouting_raw`: the tunnel addresses of encrypted overlay networks.
    pub const WG_TUNNEL: &str =
        "encrypted overlay tunnel addresses: only through the berth WireGuard device";
    /// `egress`: encrypted overlay traffic never leaves in clear.
    pub const WG_EGRESS: &str =
        "encrypted overlay traffic leaves only through the berth WireGuard device, never in clear";
    /// `prerouting_raw`, IPv4.
    pub const LOOPBACK4: &str = "loopback addresses never arrive from outside (moby#45610; route_localnet is on for berth bridges)";
}

/// Longest comment nft accepts on an element or rule.
const MAX_COMMENT: usize = 128;

/// Host state the static rules depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FirewallConfig {
    /// The host had IPv4 forwarding off before berth turned it on: IPv4 forwarding that does
    /// not involve berth must stay off, so the forward chain ends with `meta nfproto ipv4 drop`.
    pub forwarding_was_off: bool,
    /// Same for IPv6 (`net.ipv6.conf.all.forwarding`, turned on once a dual-stack network
    /// exists): the chain then ends with `meta nfproto ipv6 drop`.
    pub ipv6_forwarding_was_off: bool,
    /// The port of berthd's one `[::1]` relay listener (`[::1]:R`): chain `output` redirects
    /// the host's `[::1]` TCP connections to the ports in [`SET_RELAY6_TCP`] there. 0: no such
    /// rule (no listener, so those connections are refused as if nothing were published).
    #[serde(default)]
    pub relay6_port: u16,
}

/// The comment of the `[::1]` redirect rule: it names the port, so a rule left by an earlier
/// berthd whose listener had another port does not match ([`static_rules_match`] compares
/// comments) and is rewritten.
pub fn relay6_rule_comment(port: u16) -> String {
    format!("the host's [::1] connections to published TCP ports: berthd's relay on [::1]:{port}")
}

/// The comment of the `[::1]` redirect rule for the runs ([`SET_RELAY6_TCP_RUNS`]), naming the
/// port like [`relay6_rule_comment`].
pub fn relay6_runs_rule_comment(port: u16) -> String {
    format!(
        "the host's [::1] connections to published TCP port runs: berthd's relay on [::1]:{port}"
    )
}

/// Makes a string safe inside an nft double-quoted string: quotes, backslashes and control
/// characters cannot be expressed there, so they become `_`; cut to nft's 128-byte limit.
fn quote(s: &str) -> String {
    format!("\"{}\"", comment_text(s))
}

/// An interface name as element text (`"br-web"`), as [`parse_observed`] writes one that nft
/// printed: what a reader of the kernel's bytes (`berth_kernel::nftnl`) must write too, so its
/// elements compare equal to the desired ones.
pub fn ifname_text(name: &str) -> String {
    quote(name)
}

/// The text nft keeps of comment `s` (see [`quote`]): what it prints back, so a desired
/// comment compares equal to the observed one (a network name may hold any character).
fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut len = 0;
    for c in s.chars() {
        let c = if c == '"' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        len += c.len_utf8();
        if len > MAX_COMMENT {
            break;
        }
        out.push(c);
    }
    out
}

/// The idempotent script that creates berth's table, chains and sets if missing and rewrites
/// the static rules of the chains berth owns. Sets are never flushed (their elements are the
/// per-network state, reconciled by [`diff_script`]); chain `user` is never flushed.
pub fn base_script(cfg: &FirewallConfig) -> String {
    let mut s = String::new();
    let t = TABLE;
    s.push_str("# berth: static rules of table inet berth (generated; do not edit).\n");
    s.push_str("# Add your own forwarding rules to chain user: berth jumps there first and never changes it.\n");
    let _ = writeln!(s, "add table {t}");
    let _ = writeln!(s, "add chain {t} user");
    for (name, ty, interval, comment) in SETS {
        let flags = if interval { " flags interval;" } else { "" };
        let _ = writeln!(
            s,
            "add set {t} {name} {{ type {ty};{flags} comment {}; }}",
            quote(comment)
        );
    }
    for (name, key, value, comment) in MAPS {
        let flags = if is_interval_port_set(name) {
            " flags interval;"
        } else {
            ""
        };
        let _ = match value {
            Some(value) => writeln!(
                s,
                "add map {t} {name} {{ type {key} : {value};{flags} comment {}; }}",
                quote(comment)
            ),
            None => writeln!(
                s,
                "add set {t} {name} {{ type {key};{flags} comment {}; }}",
                quote(comment)
            ),
        };
    }
    let _ = writeln!(
        s,
        "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    // nft 1.0.6 knows `dstnat` only for the prerouting hook; -100 is the same priority.
    let _ = writeln!(
        s,
        "add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} output {{ type nat hook output priority -100; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} prerouting_raw {{ type filter hook prerouting priority raw; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} egress {{ type filter hook postrouting priority filter; policy accept; }}"
    );
    for chain in [
        "forward",
        "postrouting",
        "prerouting",
        "output",
        "prerouting_raw",
        "egress",
    ] {
        let _ = writeln!(s, "flush chain {t} {chain}");
    }

    let mut rule = |chain: &str, body: &str, comment: &str| {
        let _ = writeln!(s, "add rule {t} {chain} {body} comment {}", quote(comment));
    };
    rule("forward", "jump user", rule::USER);
    rule(
        "forward",
        "iifname @icc_off oifname @icc_off drop",
        rule::ICC_OFF,
    );
    rule(
        "forward",
        "iifname . oifname @same_bridge accept",
        rule::SAME_BRIDGE,
    );
    rule("forward", "iifname @internal drop", rule::INTERNAL_OUT);
    rule("forward", "oifname @internal drop", rule::INTERNAL_IN);
    rule(
        "forward",
        "oifname @bridges ct status dnat accept",
        rule::PUBLISHED,
    );
    rule(
        "forward",
        "iifname @bridges oifname @bridges drop",
        rule::ISOLATION,
    );
    rule(
        "forward",
        "oifname @bridges ct state established,related accept",
        rule::REPLIES,
    );
    rule("forward", "oifname @direct accept", rule::DIRECT);
    rule("forward", "oifname @bridges drop", rule::NOT_FROM_OUTSIDE);
    rule("forward", "iifname @bridges accept", rule::OUT);
    // One rule per family: a host that already routed IPv4 keeps doing so even if berth had
    // to turn IPv6 forwarding on (and the other way round).
    if cfg.forwarding_was_off {
        rule("forward", "meta nfproto ipv4 drop", rule::GUARD4);
    }
    if cfg.ipv6_forwarding_was_off {
        rule("forward", "meta nfproto ipv6 drop", rule::GUARD6);
    }
    rule(
        "postrouting",
        "oifname != @bridges ip saddr @masq4 masquerade",
        "masquerade IPv4 networks leaving the host",
    );
    rule(
        "postrouting",
        "oifname != @bridges ip6 saddr @masq6 masquerade",
        "masquerade IPv6 networks leaving the host",
    );
    rule(
        "postrouting",
        "oifname @bridges ip saddr 127.0.0.0/8 masquerade",
        "the host reaching a published port through 127.0.0.1",
    );
    rule(
        "postrouting",
        "ct status dnat ip saddr . oifname @hairpin4 masquerade",
        "hairpin: a published port reached from its own network through a host address",
    );
    rule(
        "postrouting",
        "ct status dnat ip6 saddr . oifname @hairpin6 masquerade",
        "hairpin: a published port reached from its own network through a host address",
    );
    // A container's queries to its own gateway's port 53 are for berth's resolver, even when a
    // container publishes port 53 on every host address: that publish is refused while a
    // served network exists, but a network created after it would otherwise have its
    // containers' DNS sent to the publishing container. `fib daddr . iif type local`: the
    // destination is an address of the bridge the packet came in on (its gateway).
    rule(
        "prerouting",
        "iifname @dns fib daddr . iif type local meta l4proto { tcp, udp } th dport 53 return",
        rule::DNS_NOT_PUBLISHED,
    );
    // Published ports: specific host address first (a port is never published both on one
    // address and on every address of a family: the daemon refuses that), then every address.
    for chain in ["prerouting", "output"] {
        let (guard4, guard6) = if chain == "prerouting" {
            // From outside, loopback destinations are never translated (prerouting_raw drops
            // them before they get here anyway).
            (
                "ip daddr != 127.0.0.0/8 fib daddr type local",
                "ip6 daddr != ::1 fib daddr type local",
            )
        } else {
            // The host's own connections: IPv4 loopback is translated (route_localnet on
            // berth's bridges carries it); `::1` is not — the kernel never lets a `::1` packet
            // leave `lo`, so berthd's own `[::1]:PORT` relay answers it (daemon `ports_local6`).
            (
                "meta nfproto ipv4 fib daddr type local",
                "ip6 daddr != ::1 fib daddr type local",
            )
        };
        // Each per-port map is followed by its runs' map (address only: the port stays the one
        // asked for, which is the container's for a run). Their order does not matter: a host
        // port has one owner per protocol and family, and one address kind (`ports::allocate`
        // refuses a second, and a specific address next to the wildcard), and each of its
        // ports is in exactly one of the two maps (`port_elements`), so no packet matches two
        // of these rules.
        rule(
            chain,
            &format!("{guard4} dnat ip to ip daddr . meta l4proto . th dport map @{MAP_PUBLISH4}"),
            "ports published on one IPv4 host address",
        );
        rule(
            chain,
            &format!(
                "{guard4} dnat ip to ip daddr . meta l4proto . th dport map @{MAP_PUBLISH4_RUNS}"
            ),
            "runs of ports published on one IPv4 host address",
        );
        rule(
            chain,
            &format!("{guard4} dnat ip to meta l4proto . th dport map @{MAP_PUBLISH4_ANY}"),
            "ports published on every IPv4 host address",
        );
        rule(
            chain,
            &format!("{guard4} dnat ip to meta l4proto . th dport map @{MAP_PUBLISH4_ANY_RUNS}"),
            "runs of ports published on every IPv4 host address",
        );
        rule(
            chain,
            &format!(
                "{guard6} dnat ip6 to ip6 daddr . meta l4proto . th dport map @{MAP_PUBLISH6}"
            ),
            "ports published on one IPv6 host address",
        );
        rule(
            chain,
            &format!(
                "{guard6} dnat ip6 to ip6 daddr . meta l4proto . th dport map @{MAP_PUBLISH6_RUNS}"
            ),
            "runs of ports published on one IPv6 host address",
        );
        rule(
            chain,
            &format!("{guard6} dnat ip6 to meta l4proto . th dport map @{MAP_PUBLISH6_ANY}"),
            "ports published on every IPv6 host address",
        );
        rule(
            chain,
            &format!("{guard6} dnat ip6 to meta l4proto . th dport map @{MAP_PUBLISH6_ANY_RUNS}"),
            "runs of ports published on every IPv6 host address",
        );
    }
    // `::1` cannot be DNATed to a container (a `::1` packet never leaves `lo`): the host's
    // `[::1]:PORT` TCP connections to a published port go to berthd's one listener on
    // `[::1]:R` instead (REDIRECT keeps `::1`), which reads the port asked for from conntrack
    // (`IP6T_SO_ORIGINAL_DST`) and relays to the container. No socket per port: a 1,000-port
    // range is 1,000 set elements. Only in `output`: nothing from outside or from a container
    // is ever redirected (and `prerouting_raw` drops `::1` not from `lo`).
    if cfg.relay6_port != 0 {
        rule(
            "output",
            &format!(
                "ip6 daddr . tcp dport @{SET_RELAY6_TCP} redirect to :{}",
                cfg.relay6_port
            ),
            &relay6_rule_comment(cfg.relay6_port),
        );
        rule(
            "output",
            &format!(
                "ip6 daddr . tcp dport @{SET_RELAY6_TCP_RUNS} redirect to :{}",
                cfg.relay6_port
            ),
            &relay6_runs_rule_comment(cfg.relay6_port),
        );
    }
    rule(
        "prerouting_raw",
        "iifname != \"lo\" ip daddr 127.0.0.0/8 counter drop",
        rule::LOOPBACK4,
    );
    rule(
        "prerouting_raw",
        "iifname != \"lo\" ip6 daddr ::1 counter drop",
        "loopback addresses never arrive from outside (moby#45610)",
    );
    // Encrypted overlay networks: their VXLAN port and the hosts' tunnel addresses are only
    // reachable through berth's WireGuard device, i.e. decrypted and authenticated. A LAN
    // neighbour's plaintext VXLAN frame with an encrypted network's VNI dies here.
    let wg = crate::wireguard::DEVICE;
    rule(
        "prerouting_raw",
        &format!(
            "iifname != \"{wg}\" udp dport {} fib daddr type local counter drop",
            crate::wireguard::ENCRYPTED_VXLAN_PORT
        ),
        rule::WG_VXLAN,
    );
    rule(
        "prerouting_raw",
        &format!(
            "iifname != \"{wg}\" ip6 daddr {}/{} counter drop",
            crate::wireguard::TUNNEL_PREFIX,
            crate::wireguard::TUNNEL_PREFIX_LEN
        ),
        rule::WG_TUNNEL,
    );
    // ... and leave only into it: while berthd is down its tun device is gone, and an
    // encrypted network's VXLAN packets must not follow some other route (an IPv6 default
    // route) onto the underlay in clear. The table outlives berthd; this rule does too.
    rule(
        "egress",
        &format!(
            "oifname != \"{wg}\" ip6 daddr {}/{} counter drop",
            crate::wireguard::TUNNEL_PREFIX,
            crate::wireguard::TUNNEL_PREFIX_LEN
        ),
        rule::WG_EGRESS,
    );
    bridge_base(&mut s);
    s
}

/// The static part of `table bridge berth` alone, as one `nft -f` script: the anti-spoofing
/// of an overlay namespace (`crate::overlayns`), where the bridge lives and nothing of
/// `table inet berth` is wanted.
pub fn bridge_guard_script() -> String {
    let mut s = String::new();
    bridge_base(&mut s);
    s
}

/// The static part of `table bridge berth` (anti-spoofing), appended to the same transaction.
fn bridge_base(s: &mut String) {
    let t = BRIDGE_TABLE;
    let _ = writeln!(s, "add table {t}");
    for (name, ty, comment) in GUARD_SETS {
        let _ = writeln!(
            s,
            "add set {t} {name} {{ {ty}; comment {}; }}",
            quote(comment)
        );
    }
    // Priority filter (-200): after nothing berth owns, before the bridge forwards the frame or
    // hands it to the host.
    let _ = writeln!(
        s,
        "add chain {t} prerouting {{ type filter hook prerouting priority filter; policy accept; }}"
    );
    let _ = writeln!(s, "add chain {t} guard");
    for chain in ["prerouting", "guard"] {
        let _ = writeln!(s, "flush chain {t} {chain}");
    }
    let mut rule = |chain: &str, body: &str, comment: &str| {
        let _ = writeln!(s, "add rule {t} {chain} {body} comment {}", quote(comment));
    };
    use guard_rule as g;
    rule("prerouting", "iifname @guarded jump guard", g::JUMP);
    // Most frames a container sends are TCP from itself: one lookup of the three together
    // instead of the nine rules below (a frame with a VLAN tag or any other ether type has no
    // `ip saddr` and does not match). Measured: +5–10 % TCP throughput across an overlay.
    rule(
        "guard",
        "meta l4proto tcp iifname . ether saddr . ip saddr @port_ok4 accept",
        g::FAST4,
    );
    rule(
        "guard",
        "meta l4proto tcp iifname . ether saddr . ip6 saddr @port_ok6 accept",
        g::FAST6,
    );
    rule("guard", "iifname . ether saddr != @port_mac drop", g::MAC);
    rule("guard", "ether type != { ip, ip6, arp } drop", g::ETHERTYPE);
    rule(
        "guard",
        "iifname . arp saddr ether != @port_mac drop",
        g::ARP_MAC,
    );
    rule(
        "guard",
        "arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @port_ip4 drop",
        g::ARP_IP,
    );
    rule("guard", "iifname . ip saddr != @port_ip4 drop", g::IP4);
    rule(
        "guard",
        "ip6 saddr != :: iifname . ip6 saddr != @port_ip6 drop",
        g::IP6,
    );
    rule(
        "guard",
        "icmpv6 type { nd-router-advert, nd-redirect } drop",
        g::RA,
    );
    // The target address sits 8 bytes into the ICMPv6 header.
    rule(
        "guard",
        "icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @port_nd drop",
        g::NA,
    );
    rule("guard", "udp sport { 67, 547 } drop", g::DHCP);
}

/// Set elements, as nft text, with their comments: set name → element → comment.
///
/// Element text is what nft prints and accepts: `"br-web"` (quoted interface name),
/// `"br-web" . "br-web"` (concatenation), `10.1.0.0/24` (prefix), `10.1.0.5` (address),
/// `10.1.0.1-10.1.0.9` (range).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Elements(pub BTreeMap<String, BTreeMap<String, String>>);

impl Elements {
    /// Adds one element (the first comment given for an element is kept, as nft keeps it).
    pub fn insert(&mut self, set: &str, element: String, comment: String) {
        self.0
            .entry(set.to_string())
            .or_default()
            .entry(element)
            .or_insert_with(|| comment_text(&comment));
    }

    /// Number of elements over all sets.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeMap::len).sum()
    }

    /// Whether there are no elements at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A prefix as nft prints it: a full-length prefix is just the address.
fn prefix_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.trunc().to_string()
    }
}

/// Whether a bridge name can be written as an nft string. Names that cannot (only possible in a
/// hand-edited store; planning refuses them) are left out rather than producing a broken script.
fn ifname_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::names::MAX_IFNAME_LEN
        && !name
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
}

/// The elements every berth set should hold for `networks`. Only bridge networks contribute.
/// The published-port maps are not included: see [`port_elements`].
pub fn desired_elements(networks: &[NetworkSpec]) -> Elements {
    // An overlay network is reached from the host through its namespace's uplink.
    desired_elements_keyed(networks, crate::overlayns::firewall_key)
}

/// [`desired_elements`], with each network's elements keyed on the host interface `key`
/// names for it instead of its bridge (`None`: the network has no such interface and
/// contributes nothing). An overlay network whose bridge lives in its own namespace is
/// reached from the host through its uplink veth, so its sets name that veth
/// ([`crate::overlayns::firewall_key`]): the rules stay the same rules.
pub fn desired_elements_keyed(
    networks: &[NetworkSpec],
    key: impl Fn(&NetworkSpec) -> Option<String>,
) -> Elements {
    let mut e = Elements::default();
    for (name, ..) in SETS {
        e.0.insert(name.to_string(), BTreeMap::new());
    }
    for net in networks {
        if !net.driver.has_bridge() {
            continue;
        }
        let Some(iface) = key(net).filter(|i| ifname_ok(i)) else {
            continue;
        };
        let why = || format!("network {}", net.name);
        let br = quote(&iface);
        e.insert(SET_BRIDGES, br.clone(), why());
        e.insert(SET_SAME_BRIDGE, format!("{br} . {br}"), why());
        if net.internal {
            e.insert(SET_INTERNAL, br.clone(), why());
        }
        if !net.icc {
            e.insert(SET_ICC_OFF, br.clone(), why());
        }
        if crate::network::allow_direct(net) {
            e.insert(SET_DIRECT, br.clone(), why());
        }
        if crate::dns::serves(net) {
            e.insert(SET_DNS, br.clone(), why());
        }
        for s in &net.subnets {
            let set = match s.subnet {
                IpNet::V4(_) => SET_HAIRPIN4,
                IpNet::V6(_) => SET_HAIRPIN6,
            };
            e.insert(set, format!("{} . {br}", prefix_text(&s.subnet)), why());
        }
        if net.masquerade && !net.internal {
            for s in &net.subnets {
                let set = match s.subnet {
                    IpNet::V4(_) => SET_MASQ4,
                    IpNet::V6(_) => SET_MASQ6,
                };
                e.insert(set, prefix_text(&s.subnet), why());
            }
        }
    }
    e
}

/// The map elements of one container's published ports (a run of [`MIN_PUBLISH_RUN`] or more
/// consecutive ports published to the same container ports is one element of a
/// `publish*_runs` map, see [`MAP_PUBLISH4_ANY_RUNS`]; any other port one element of
/// `publish4`, `publish4_any`, …), and the [`SET_RELAY6_TCP`] and
/// [`SET_RELAY6_TCP_RUNS`] elements of its TCP ports reachable through `[::1]` (berthd's
/// relay: a run of [`MIN_RELAY6_RUN`] or more consecutive ports is one element of the latter,
/// any other port one element of the former); each comment names the container and the port
/// (`container web 80/tcp`, a run `container web 30000-30999/tcp`). A map element's text is
/// `key : value`.
///
/// One string per element and per comment, written in place, and each map's elements
/// collected apart before they join `Elements`: a 1,000-port range is 1,000 elements on every
/// publish and every removal, so what this allocates per element counts.
pub fn port_elements(container: &str, published: &[Published]) -> Elements {
    let mut maps: [BTreeMap<String, String>; 4] = Default::default();
    // `comment_text` of the container's part, once: the port's part (`80/tcp`) never needs
    // quoting, so a comment that fits is that prefix and the port.
    let prefix = format!("container {container} ");
    let prefix_clean = comment_text(&prefix) == prefix;
    // Runs whose container ports are their host ports: one element each in a `publish*_runs`
    // map; their ports are left out of the per-port maps below.
    let (run_maps, in_run) = publish_runs(published, &prefix, prefix_clean);
    for (i, p) in published.iter().enumerate() {
        // A family mismatch (never produced by the planner) would make nft refuse the whole
        // transaction: leave such an entry out instead.
        if p.host_ip.is_ipv4() != p.container_ip.is_ipv4() || in_run.get(i) == Some(&true) {
            continue;
        }
        let mut text = String::with_capacity(48);
        let slot = port_slot(p.host_ip);
        if !p.host_ip.is_unspecified() {
            let _ = write!(text, "{} . ", p.host_ip);
        }
        let _ = write!(
            text,
            "{} . {} : {} . {}",
            p.proto, p.host_port, p.container_ip, p.container_port
        );
        let mut comment = String::with_capacity(prefix.len() + 10);
        comment.push_str(&prefix);
        let _ = write!(comment, "{}/{}", p.container_port, p.proto);
        if !prefix_clean || comment.len() > MAX_COMMENT {
            comment = comment_text(&comment);
        }
        // The first comment given for an element is kept, as `Elements::insert` does.
        maps[slot].entry(text).or_insert(comment);
    }
    // The TCP ports the host's `[::1]` connections are redirected for, to berthd's relay: one
    // element per run of consecutive host ports (`loopback6_relays` yields them sorted).
    let relays: Vec<crate::ports::LoopbackRelay> = crate::ports::loopback6_relays(published)
        .into_iter()
        .filter(|r| r.proto == crate::ports::Proto::Tcp)
        .collect();
    let mut relay6 = BTreeMap::new();
    let mut relay6_runs = BTreeMap::new();
    for run in port_runs(relays.iter().map(|r| r.host_port)) {
        let run_relays = &relays[run.clone()];
        let (Some(first), Some(last)) = (run_relays.first(), run_relays.last()) else {
            continue;
        };
        if run_relays.len() < MIN_RELAY6_RUN {
            // Short runs and ports alone: one hash element per port.
            for r in run_relays {
                let mut comment = String::with_capacity(prefix.len() + 10);
                comment.push_str(&prefix);
                comment.push_str(&r.key);
                if !prefix_clean || comment.len() > MAX_COMMENT {
                    comment = comment_text(&comment);
                }
                relay6.insert(format!("::1 . {}", r.host_port), comment);
            }
            continue;
        }
        let mut comment = String::with_capacity(prefix.len() + 16);
        comment.push_str(&prefix);
        run_comment(&mut comment, run_relays);
        if !prefix_clean || comment.len() > MAX_COMMENT {
            comment = comment_text(&comment);
        }
        relay6_runs.insert(
            format!("::1 . {}-{}", first.host_port, last.host_port),
            comment,
        );
    }
    let mut e = Elements::default();
    let names = [
        MAP_PUBLISH4,
        MAP_PUBLISH4_ANY,
        MAP_PUBLISH6,
        MAP_PUBLISH6_ANY,
        MAP_PUBLISH4_RUNS,
        MAP_PUBLISH4_ANY_RUNS,
        MAP_PUBLISH6_RUNS,
        MAP_PUBLISH6_ANY_RUNS,
        SET_RELAY6_TCP,
        SET_RELAY6_TCP_RUNS,
    ];
    let [m0, m1, m2, m3] = maps;
    let [r0, r1, r2, r3] = run_maps;
    for (name, map) in names
        .into_iter()
        .zip([m0, m1, m2, m3, r0, r1, r2, r3, relay6, relay6_runs])
    {
        if !map.is_empty() {
            e.0.insert(name.to_string(), map);
        }
    }
    e
}

/// Which of the four per-port maps (and of the four runs' maps, in the same order) a port
/// published on `host_ip` belongs to: one address or every address, IPv4 or IPv6.
fn port_slot(host_ip: std::net::IpAddr) -> usize {
    match (host_ip.is_ipv4(), host_ip.is_unspecified()) {
        (true, false) => 0,
        (true, true) => 1,
        (false, false) => 2,
        (false, true) => 3,
    }
}

/// The `publish*_runs` elements of one container's `published` ports (in [`port_slot`]'s
/// order), each comment `prefix` and the run (`container web 30000-30999/tcp`), and which
/// entries of `published` they cover (those are in no per-port map).
///
/// A run is [`MIN_PUBLISH_RUN`] or more consecutive host ports with the same protocol, host
/// address and container address, each published to the same container port as its host port
/// (`-p 30000-30999:30000-30999`): the map's value is the container's address only, so the
/// DNAT keeps the port. A gap ends a run; a port whose container port is another one (`-p
/// 30000-30999:40000-40999`, `8080:80`) is never part of one.
fn publish_runs(
    published: &[Published],
    prefix: &str,
    prefix_clean: bool,
) -> ([BTreeMap<String, String>; 4], Vec<bool>) {
    let mut maps: [BTreeMap<String, String>; 4] = Default::default();
    // (slot, host address, protocol, container address, port, index): sorted, a run is a
    // stretch of one (slot, address, protocol, container) whose ports follow on.
    let mut same: Vec<_> = published
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.host_port == p.container_port && p.host_ip.is_ipv4() == p.container_ip.is_ipv4()
        })
        .map(|(i, p)| {
            let slot = port_slot(p.host_ip);
            (slot, p.host_ip, p.proto, p.container_ip, p.host_port, i)
        })
        .collect();
    if same.len() < MIN_PUBLISH_RUN {
        return (maps, Vec::new());
    }
    same.sort_unstable();
    let mut in_run = vec![false; published.len()];
    let mut start = 0;
    while start < same.len() {
        let (slot, host_ip, proto, container_ip, first, _) = same[start];
        let mut end = start + 1;
        let mut ports = 1;
        while let Some(&(s, h, pr, c, port, _)) = same.get(end) {
            let prev = same[end - 1].4;
            // The same port twice (a duplicate entry) continues the run without lengthening it.
            let follows = port == prev || prev.checked_add(1) == Some(port);
            if (s, h, pr, c) != (slot, host_ip, proto, container_ip) || !follows {
                break;
            }
            if port != prev {
                ports += 1;
            }
            end += 1;
        }
        if ports >= MIN_PUBLISH_RUN {
            let last = same[end - 1].4;
            for entry in &same[start..end] {
                in_run[entry.5] = true;
            }
            let mut text = String::with_capacity(48);
            if !host_ip.is_unspecified() {
                let _ = write!(text, "{host_ip} . ");
            }
            let _ = write!(text, "{proto} . {first}-{last} : {container_ip}");
            let mut comment = format!("{prefix}{first}-{last}/{proto}");
            if !prefix_clean || comment.len() > MAX_COMMENT {
                comment = comment_text(&comment);
            }
            maps[slot].entry(text).or_insert(comment);
        }
        start = end;
    }
    (maps, in_run)
}

/// The runs of consecutive values of `ports` (sorted ascending, no duplicates): index ranges
/// into it, each the longest stretch where every port is the previous one plus one. A gap
/// ends a run; a port alone is a run of one.
pub fn port_runs(ports: impl IntoIterator<Item = u16>) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut prev: Option<u16> = None;
    let mut n = 0;
    for (i, p) in ports.into_iter().enumerate() {
        if let Some(q) = prev {
            if q.checked_add(1) != Some(p) {
                runs.push(start..i);
                start = i;
            }
        }
        prev = Some(p);
        n = i + 1;
    }
    if n > start {
        runs.push(start..n);
    }
    runs
}

/// The port part of a [`SET_RELAY6_TCP_RUNS`] element's comment for a run of relays (one
/// container's, consecutive host ports): the container port's key for a port alone
/// (`80/tcp`, as the map elements name it), `30000-30999/tcp` when the container ports are
/// consecutive too (a range published port by port), else the keys one by one, which the
/// comment's 128-byte limit cuts (`80/tcp, 443/tcp`).
fn run_comment(out: &mut String, run: &[crate::ports::LoopbackRelay]) {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    let first_port = first.target.port();
    let consecutive = run.iter().enumerate().all(|(i, r)| {
        u16::try_from(i)
            .ok()
            .and_then(|i| first_port.checked_add(i))
            == Some(r.target.port())
    });
    if run.len() == 1 {
        out.push_str(&first.key);
    } else if consecutive {
        let _ = write!(out, "{first_port}-{}/tcp", last.target.port());
    } else {
        for (i, r) in run.iter().enumerate() {
            if out.len() > MAX_COMMENT {
                break;
            }
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&r.key);
        }
    }
}

impl Elements {
    /// The elements of these sets/maps only (empty entries for names with none).
    pub fn only(&self, names: &[&str]) -> Elements {
        let mut out = Elements::default();
        for n in names {
            out.0
                .insert(n.to_string(), self.0.get(*n).cloned().unwrap_or_default());
        }
        out
    }

    /// Adds every element of `other` (its comments win).
    pub fn extend(&mut self, other: &Elements) {
        for (set, elems) in &other.0 {
            let mine = self.0.entry(set.clone()).or_default();
            for (k, c) in elems {
                mine.insert(k.clone(), c.clone());
            }
        }
    }

    /// Removes every element of `other` (by element text).
    pub fn remove_all(&mut self, other: &Elements) {
        for (set, elems) in &other.0 {
            if let Some(mine) = self.0.get_mut(set) {
                for k in elems.keys() {
                    mine.remove(k);
                }
            }
        }
    }
}

/// The part of `applied` that removing `remove` and adding `add` touches (`current`), and what
/// it must become (`desired`): `diff_script(current, desired)` is then the whole transaction.
/// Elements of `remove` that `applied` does not hold are left out (a delete of a missing
/// element would fail the transaction), and a map element of `applied` whose key an element of
/// `add` reuses with another value is part of `current`, so it is replaced, not clashed with.
/// Costs O(|remove| + |add|) lookups, whatever the size of `applied`.
pub fn delta(applied: &Elements, remove: &Elements, add: &Elements) -> (Elements, Elements) {
    let mut current = Elements::default();
    for (set, elems) in &remove.0 {
        if let Some(have) = applied.0.get(set) {
            for k in elems.keys() {
                if let Some(c) = have.get(k) {
                    current.insert(set, k.clone(), c.clone());
                }
            }
        }
    }
    for (set, elems) in &add.0 {
        let Some(have) = applied.0.get(set) else {
            continue;
        };
        for k in elems.keys() {
            if let Some(c) = have.get(k) {
                current.insert(set, k.clone(), c.clone());
            }
            // Map elements with the same key (at most one), found by their text's prefix.
            if k.contains(" : ") {
                let prefix = format!("{} : ", map_key(k));
                for (hk, hc) in have.range(prefix.clone()..) {
                    if !hk.starts_with(&prefix) {
                        break;
                    }
                    current.insert(set, hk.clone(), hc.clone());
                }
            }
        }
    }
    let mut desired = current.clone();
    desired.remove_all(remove);
    // A map holds one value per key: an added element replaces whatever had its key.
    for (set, elems) in &add.0 {
        if let Some(want) = desired.0.get_mut(set) {
            for k in elems.keys().filter(|k| k.contains(" : ")) {
                let prefix = format!("{} : ", map_key(k));
                want.retain(|wk, _| !wk.starts_with(&prefix));
            }
        }
    }
    desired.extend(add);
    (current, desired)
}

/// Names of every map berth owns.
pub fn map_names() -> Vec<&'static str> {
    MAPS.iter().map(|m| m.0).collect()
}

/// Names of every set berth owns.
pub fn set_names() -> Vec<&'static str> {
    SETS.iter().map(|s| s.0).collect()
}

/// Names of every set of `table bridge berth`.
pub fn guard_names() -> Vec<&'static str> {
    GUARD_SETS.iter().map(|g| g.0).collect()
}

/// Whether `name` is a set of `table bridge berth`.
fn is_guard_set(name: &str) -> bool {
    GUARD_SETS.iter().any(|g| g.0 == name)
}

/// The bridge port an anti-spoofing element belongs to: its first, quoted component.
pub fn element_port(element: &str) -> Option<&str> {
    let first = element.split(" . ").next()?;
    first.strip_prefix('"')?.strip_suffix('"')
}

/// The anti-spoofing elements of `e`, only those of the bridge ports in `ports` when given.
///
/// With `ports`, costs O(|ports| · log |e|), whatever the number of other ports' elements: a
/// port's elements all begin with its quoted name (`"vb…"` or `"vb…" . …`), so they are one
/// range of each set's sorted keys. (A pass over one container looked at all 3,000 elements
/// of 1,000 containers, twice.)
pub fn guard_part(e: &Elements, ports: Option<&std::collections::BTreeSet<String>>) -> Elements {
    let mut out = Elements::default();
    for name in guard_names() {
        let mine = out.0.entry(name.to_string()).or_default();
        let Some(have) = e.0.get(name) else { continue };
        match ports {
            None => mine.extend(have.iter().map(|(k, c)| (k.clone(), c.clone()))),
            Some(ports) => {
                for port in ports {
                    mine.extend(port_range(have, port).map(|(k, c)| (k.clone(), c.clone())));
                }
            }
        }
    }
    out
}

/// Takes the anti-spoofing elements of the bridge ports `ports` out of `e`, in
/// O(|ports| · log |e|) (see [`guard_part`]).
pub fn remove_guard_ports(e: &mut Elements, ports: &std::collections::BTreeSet<String>) {
    for name in guard_names() {
        let Some(set) = e.0.get_mut(name) else {
            continue;
        };
        let gone: Vec<String> = ports
            .iter()
            .flat_map(|p| {
                port_range(set, p)
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for k in gone {
            set.remove(&k);
        }
    }
}

/// The elements of one guard set that belong to bridge port `port` (see [`guard_part`]).
fn port_range<'a>(
    set: &'a BTreeMap<String, String>,
    port: &'a str,
) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
    let quoted = quote(port);
    set.range(quoted.clone()..)
        .take_while(move |(k, _)| k.starts_with(&quoted))
        .filter(move |(k, _)| element_port(k) == Some(port))
}

/// A MAC as nft prints it (`02:42:0a:01:00:02`), `None` when `mac` is not six hex bytes.
fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The EUI-64 link-local address the kernel gives an interface with this MAC.
pub fn link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The anti-spoofing elements of one endpoint of container `container` on `net`: its port in
/// `guarded`, its MAC, its addresses (and, with IPv6, its link-local address). Empty for
/// networks without a bridge, networks with `berth.network.allow_spoofing=true`, and names or
/// MACs nft could not take (only possible in a hand-edited store): such a port stays
/// unguarded rather than breaking the transaction.
pub fn guard_elements(
    container: &str,
    net: &NetworkSpec,
    ep: &crate::model::EndpointSpec,
) -> Elements {
    let mut e = Elements::default();
    if !net.driver.has_bridge()
        || crate::network::allow_spoofing(net)
        || !ifname_ok(&ep.host_ifname)
    {
        return e;
    }
    let Some(mac) = parse_mac(&ep.mac) else {
        return e;
    };
    let why = || format!("container {container} on network {}", net.name);
    let port = quote(&ep.host_ifname);
    e.insert(SET_GUARDED, port.clone(), why());
    let m = mac.map(|b| format!("{b:02x}")).join(":");
    e.insert(SET_PORT_MAC, format!("{port} . {m}"), why());
    let mut v6 = Vec::new();
    // Its link-local addresses (`--link-local-ip`) are its own too.
    for a in &ep.interface_addrs() {
        match a.addr() {
            std::net::IpAddr::V4(a) => {
                e.insert(SET_PORT_IP4, format!("{port} . {a}"), why());
                e.insert(SET_PORT_OK4, format!("{port} . {m} . {a}"), why());
            }
            std::net::IpAddr::V6(a) => v6.push(a),
        }
    }
    if !v6.is_empty() {
        v6.push(link_local(mac));
    }
    for a in v6 {
        e.insert(SET_PORT_IP6, format!("{port} . {a}"), why());
        e.insert(SET_PORT_ND, format!("{port} . {:#x}", u128::from(a)), why());
        e.insert(SET_PORT_OK6, format!("{port} . {m} . {a}"), why());
    }
    e
}

/// The anti-spoofing elements of every endpoint of container `c` (networks from `nets`).
pub fn container_guard_elements(c: &crate::model::ContainerSpec, nets: &[NetworkSpec]) -> Elements {
    let mut e = Elements::default();
    for ep in &c.endpoints {
        if let Some(net) = nets.iter().find(|n| n.id == ep.network_id) {
            e.extend(&guard_elements(&c.name, net, ep));
        }
    }
    e
}

/// The key part of a map element's text (`tcp . 8080` of `tcp . 8080 : 10.1.0.2 . 80`).
pub fn map_key(element: &str) -> &str {
    element.split_once(" : ").map_or(element, |(k, _)| k)
}

/// Renders one JSON element value as nft text; `ty` is the set's type for that position
/// (strings of string-like types are quoted). `None` for shapes berth does not know.
fn value_text(v: &Value, ty: &str) -> Option<String> {
    match v {
        Value::String(s) if ty == "ifname" || ty == "string" => Some(quote(s)),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr")?.as_str()?;
                let len = p.get("len")?.as_u64()?;
                let net: IpNet = format!("{addr}/{len}").parse().ok()?;
                Some(prefix_text(&net))
            } else if let Some(r) = o.get("range") {
                let r = r.as_array()?;
                let (a, b) = (r.first()?, r.get(1)?);
                Some(format!("{}-{}", value_text(a, ty)?, value_text(b, ty)?))
            } else if let Some(c) = o.get("concat") {
                let parts = c.as_array()?;
                let tys: Vec<&str> = ty.split(" . ").collect();
                let texts: Option<Vec<String>> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| value_text(p, tys.get(i).copied().unwrap_or("")))
                    .collect();
                Some(texts?.join(" . "))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Reads the elements of berth's sets from `nft -j list table inet berth` and `list table
/// bridge berth` (or `list ruleset`) output. Sets of other tables, unknown value shapes and malformed entries are skipped; a
/// missing `comment` reads as "".
pub fn parse_observed(json: &Value) -> Elements {
    let mut e = Elements::default();
    let Some(items) = json.get("nftables").and_then(Value::as_array) else {
        return e;
    };
    for item in items {
        let (set, is_map) = match (item.get("set"), item.get("map")) {
            (Some(s), _) => (s, false),
            (None, Some(m)) => (m, true),
            _ => continue,
        };
        let field = |k: &str| set.get(k).and_then(Value::as_str);
        let Some(name) = field("name") else { continue };
        let family = if is_guard_set(name) { "bridge" } else { "inet" };
        if field("table") != Some("berth") || field("family").is_some_and(|f| f != family) {
            continue;
        }
        let ty = match set.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" . "),
            _ => String::new(),
        };
        let data_ty = field("map").unwrap_or("").to_string();
        let elems = e.0.entry(name.to_string()).or_default();
        for el in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A map element is `[key, value]`; the key carries the comment.
            let (el, data) = match (is_map, el.as_array()) {
                (true, Some(pair)) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
                (true, _) => continue,
                (false, _) => (el, None),
            };
            let (val, comment) = match el.get("elem") {
                Some(inner) => (
                    inner.get("val"),
                    inner.get("comment").and_then(Value::as_str).unwrap_or(""),
                ),
                None => (Some(el), ""),
            };
            let Some(text) = val.and_then(|v| value_text(v, &ty)) else {
                continue;
            };
            let text = match data {
                None => text,
                Some(d) => match value_text(d, &data_ty) {
                    Some(dt) => format!("{text} : {dt}"),
                    None => continue,
                },
            };
            elems.insert(text, comment.to_string());
        }
    }
    e
}

/// One set's (or map's) part of an element transaction: what [`diff_changes`] decides and
/// both executors take, `nft -f` text ([`changes_script`]) or nf_tables netlink messages
/// (`berth_kernel::nftnl`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// Table family as nft names it: `inet` or `bridge`.
    pub family: &'static str,
    /// Table name (`berth`).
    pub table: &'static str,
    /// Set or map name.
    pub set: &'static str,
    /// The key's type as declared (`ifname . ipv4_addr`; `iifname . @th,64,128` for a
    /// `typeof` set), without the `type`/`typeof` keyword.
    pub key_type: &'static str,
    /// The value's type for a map.
    pub data_type: Option<&'static str>,
    /// Whether the set holds intervals (prefixes, ranges).
    pub interval: bool,
    /// Keys to delete (a map element is deleted by its key).
    pub delete: Vec<String>,
    /// Elements to add: element text (`key`, or `key : value` for a map) and comment.
    pub add: Vec<(String, String)>,
}

/// `(family, name)` of a table as nft commands write it (`inet berth`).
fn family_and_name(table: &'static str) -> (&'static str, &'static str) {
    table.split_once(' ').unwrap_or(("inet", table))
}

/// Every set and map berth owns, with no changes yet: their tables, names and types (what a
/// reader of the kernel's bytes needs to turn them into element text, `berth_kernel::nftnl`).
pub fn owned_sets() -> impl Iterator<Item = SetChange> {
    let new = |table, set, key_type, data_type, interval| SetChange {
        family: family_and_name(table).0,
        table: family_and_name(table).1,
        set,
        key_type,
        data_type,
        interval,
        delete: Vec::new(),
        add: Vec::new(),
    };
    let sets = SETS.iter().map(move |s| new(TABLE, s.0, s.1, None, s.2));
    let maps = MAPS
        .iter()
        .map(move |m| new(TABLE, m.0, m.1, m.2, is_interval_port_set(m.0)));
    let guard = GUARD_SETS.iter().map(move |g| {
        let ty = g.1.strip_prefix("typeof ").unwrap_or(g.1);
        let ty = ty.strip_prefix("type ").unwrap_or(ty);
        new(BRIDGE_TABLE, g.0, ty, None, false)
    });
    sets.chain(maps).chain(guard)
}

/// The elements of `desired` whose key no element of `observed` holds, in berth's sets and maps
/// that are not intervals: adding them cannot clash with what the table has (a changed comment
/// or map value keeps its key, a moved prefix may overlap, and both are left to
/// [`diff_changes`]). A pass adds these before it plumbs endpoints, so a new bridge port's
/// anti-spoofing elements are in force before its container can send through it (a port that
/// is not in `guarded` is not checked at all).
pub fn fresh_elements(observed: &Elements, desired: &Elements) -> Elements {
    let empty = BTreeMap::new();
    let mut out = Elements::default();
    for ch in owned_sets().filter(|c| !c.interval) {
        let Some(want) = desired.0.get(ch.set) else {
            continue;
        };
        let have = observed.0.get(ch.set).unwrap_or(&empty);
        let key = |e: &'_ str| -> String {
            if ch.data_type.is_some() {
                map_key(e).to_string()
            } else {
                e.to_string()
            }
        };
        let held: std::collections::BTreeSet<String> = have.keys().map(|e| key(e)).collect();
        for (e, c) in want {
            if !held.contains(&key(e)) {
                out.insert(ch.set, e.clone(), c.clone());
            }
        }
    }
    out
}

/// What turns `observed` into `desired`, per set, only for sets where something differs. Only
/// berth's own sets and maps ([`SETS`], [`MAPS`], [`GUARD_SETS`]) are touched. An element
/// whose comment changed (a subnet handed from a removed network to a new one) is deleted and
/// re-added in the same transaction, so every comment keeps naming the element's current
/// cause; a map element is deleted by its key and re-added with its new value.
pub fn diff_changes(observed: &Elements, desired: &Elements) -> Vec<SetChange> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for mut ch in owned_sets() {
        let is_map = ch.data_type.is_some();
        let have = observed.0.get(ch.set).unwrap_or(&empty);
        let want = desired.0.get(ch.set).unwrap_or(&empty);
        ch.delete = have
            .iter()
            .filter(|(k, c)| want.get(*k).is_none_or(|w| w != *c))
            .map(|(k, _)| if is_map { map_key(k) } else { k.as_str() }.to_string())
            .collect();
        ch.add = want
            .iter()
            .filter(|(k, c)| have.get(*k).is_none_or(|h| h != *c))
            .map(|(k, c)| (k.clone(), c.clone()))
            .collect();
        if !ch.delete.is_empty() || !ch.add.is_empty() {
            out.push(ch);
        }
    }
    out
}

/// `changes` as an `nft -f` script: every `delete element` line first (so a subnet that moved
/// between networks does not clash), then the `add element` lines, one statement per set.
pub fn changes_script(changes: &[SetChange]) -> String {
    let mut deletes = String::new();
    let mut adds = String::new();
    for ch in changes {
        let table = format!("{} {}", ch.family, ch.table);
        if !ch.delete.is_empty() {
            let _ = writeln!(
                deletes,
                "delete element {table} {} {{ {} }}",
                ch.set,
                ch.delete.join(", ")
            );
        }
        let new: Vec<String> = ch
            .add
            .iter()
            .map(|(k, c)| match k.split_once(" : ") {
                // nft wants a map element's comment on its key: `key comment "…" : value`.
                Some((key, value)) if ch.data_type.is_some() => {
                    format!("{key} comment {} : {value}", quote(c))
                }
                _ => format!("{k} comment {}", quote(c)),
            })
            .collect();
        if !new.is_empty() {
            let _ = writeln!(
                adds,
                "add element {table} {} {{ {} }}",
                ch.set,
                new.join(", ")
            );
        }
    }
    deletes + &adds
}

/// The nft script that turns `observed` into `desired` ([`diff_changes`] as text, see
/// [`changes_script`]). Empty when nothing differs.
pub fn diff_script(observed: &Elements, desired: &Elements) -> String {
    changes_script(&diff_changes(observed, desired))
}

/// The static rules [`base_script`] writes for `cfg`, as (chain, comment) pairs in rule order.
/// Every static rule carries a comment naming its purpose, so this is a fingerprint of the
/// rule set that a read-back can be compared with ([`observed_static_rules`]).
/// Chains of `table bridge berth` are named `bridge CHAIN`.
pub fn static_rules(cfg: &FirewallConfig) -> Vec<(String, String)> {
    static_rules_shared(cfg).as_ref().clone()
}

/// [`static_rules`], computed once per configuration and shared: every pass that does not
/// read the table back stands berth's cache in for it (these rules) and compares them with
/// the wanted ones, and generating [`base_script`] for each was ≈ 75 µs of a connect's
/// planning (2 per pass, `perf`, stop 29). The configuration changes only with the host's
/// forwarding settings and the relay's port, so the last one is kept.
pub fn static_rules_shared(cfg: &FirewallConfig) -> std::sync::Arc<Vec<(String, String)>> {
    type Memo = Option<(FirewallConfig, std::sync::Arc<Vec<(String, String)>>)>;
    static LAST: std::sync::Mutex<Memo> = std::sync::Mutex::new(None);
    if let Ok(last) = LAST.lock() {
        if let Some((c, rules)) = last.as_ref() {
            if c == cfg {
                return rules.clone();
            }
        }
    }
    let rules = std::sync::Arc::new(compute_static_rules(cfg));
    if let Ok(mut last) = LAST.lock() {
        *last = Some((*cfg, rules.clone()));
    }
    rules
}

fn compute_static_rules(cfg: &FirewallConfig) -> Vec<(String, String)> {
    let inet = format!("add rule {TABLE} ");
    let bridge = format!("add rule {BRIDGE_TABLE} ");
    base_script(cfg)
        .lines()
        .filter_map(|l| {
            let (rest, tag) = match l.strip_prefix(&inet) {
                Some(r) => (r, ""),
                None => (l.strip_prefix(&bridge)?, "bridge "),
            };
            let chain = format!("{tag}{}", rest.split_whitespace().next()?);
            let (_, c) = rest.rsplit_once(" comment \"")?;
            Some((chain, c.strip_suffix('"')?.to_string()))
        })
        .collect()
}

/// The rules of `table bridge berth`'s chains alone, as [`static_rules`] names them
/// (`bridge CHAIN`, comment): what an overlay network's namespace holds
/// ([`bridge_guard_script`]; the same for every configuration).
pub fn bridge_guard_rules() -> Vec<(String, String)> {
    static_rules(&FirewallConfig::default())
        .into_iter()
        .filter(|(chain, _)| chain.starts_with("bridge "))
        .collect()
}

/// The rules of berth's own chains (every chain of `table inet berth` except `user`, which is
/// the administrator's, and those of `table bridge berth`, named `bridge CHAIN`) in
/// `nft -j list table …` output, as (chain, comment) pairs in
/// the kernel's order. Empty when the table does not exist.
pub fn observed_static_rules(json: &Value) -> Vec<(String, String)> {
    let Some(items) = json.get("nftables").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let r = item.get("rule")?;
            let field = |k: &str| r.get(k).and_then(Value::as_str);
            if field("table") != Some("berth") {
                return None;
            }
            let chain = field("chain")?;
            let chain = match field("family") {
                None | Some("inet") if chain != "user" => chain.to_string(),
                Some("bridge") => format!("bridge {chain}"),
                _ => return None,
            };
            Some((chain, field("comment").unwrap_or("").to_string()))
        })
        .collect()
}

/// How many rules chain `user` (the administrator's) holds in `nft -j list table inet berth`
/// output.
pub fn user_rule_count(json: &Value) -> usize {
    json.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .filter(|r| {
            r.get("table").and_then(Value::as_str) == Some("berth")
                && r.get("chain").and_then(Value::as_str) == Some("user")
        })
        .count()
}

/// Whether the observed static rules are exactly those of `cfg` (order within each chain
/// matters: the forward chain is a sequence of decisions).
pub fn static_rules_match(cfg: &FirewallConfig, json: &Value) -> bool {
    let group = |v: Vec<(String, String)>| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (chain, comment) in v {
            m.entry(chain).or_default().push(comment);
        }
        m
    };
    group(static_rules(cfg)) == group(observed_static_rules(json))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use serde_json::json;

    /// The shared static rules follow the configuration they are asked for, also when it
    /// alternates (the memo keeps one).
    #[test]
    fn shared_static_rules_are_those_of_the_configuration_asked_for() {
        let a = FirewallConfig::default();
        let b = FirewallConfig {
            forwarding_was_off: true,
            ipv6_forwarding_was_off: true,
            relay6_port: 4711,
        };
        assert_ne!(compute_static_rules(&a), compute_static_rules(&b));
        for cfg in [a, b, b, a, a, b] {
            assert_eq!(*static_rules_shared(&cfg), compute_static_rules(&cfg));
            assert_eq!(static_rules(&cfg), compute_static_rules(&cfg));
        }
    }

    /// The host's `[::1]` TCP connections are redirected to berthd's relay for exactly the TCP
    /// ports published on `::1` or on every address: not UDP (per-port sockets), not SCTP,
    /// not ports bound to another address (DNAT carries those).
    #[test]
    fn relay6_elements_are_the_tcp_ports_reachable_through_ipv6_loopback() {
        use crate::ports::{Proto, Published};
        let port = |host: &str, hp: u16, proto: Proto| Published {
            proto,
            host_ip: host.parse().unwrap(),
            host_port: hp,
            container_ip: if host.contains(':') {
                "fd00::2"
            } else {
                "10.1.0.2"
            }
            .parse()
            .unwrap(),
            container_port: 80,
        };
        let ports = vec![
            port("0.0.0.0", 8080, Proto::Tcp),
            port("::", 8080, Proto::Tcp),
            port("::1", 8081, Proto::Tcp),
            port("0.0.0.0", 8082, Proto::Udp),
            port("::1", 8083, Proto::Udp),
            port("::1", 8084, Proto::Sctp),
            port("127.0.0.1", 8085, Proto::Tcp),
            port("2001:db8::1", 8086, Proto::Tcp),
            port("::", 8087, Proto::Tcp),
        ];
        let e = port_elements("web", &ports);
        let relay: Vec<(&str, &str)> = e.0[SET_RELAY6_TCP]
            .iter()
            .map(|(k, c)| (k.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            relay,
            [
                ("::1 . 8080", "container web 80/tcp"),
                ("::1 . 8081", "container web 80/tcp"),
                ("::1 . 8087", "container web 80/tcp"),
            ]
        );
        assert!(!e.0.contains_key(SET_RELAY6_TCP_RUNS), "no run of 32 ports");
        // Without a TCP port on `::1` or every address, the set is not mentioned at all.
        let none = port_elements("web", &[port("127.0.0.1", 8085, Proto::Tcp)]);
        assert!(!none.0.contains_key(SET_RELAY6_TCP));
    }

    /// The redirect rule names the relay's port in its comment (so a rule for another port
    /// does not pass for the static rules), and is left out when there is no listener.
    #[test]
    fn relay6_redirect_rule_follows_the_listener_port() {
        let with = FirewallConfig {
            relay6_port: 40123,
            ..FirewallConfig::default()
        };
        let script = base_script(&with);
        assert!(script.contains(
            "add rule inet berth output ip6 daddr . tcp dport @relay6_tcp redirect to :40123 "
        ));
        assert!(script.contains(
            "add rule inet berth output ip6 daddr . tcp dport @relay6_tcp_runs redirect to :40123 "
        ));
        assert!(script.contains("add set inet berth relay6_tcp { type ipv6_addr . inet_service;"));
        assert!(script.contains(
            "add set inet berth relay6_tcp_runs { type ipv6_addr . inet_service; flags interval;"
        ));
        let comments = static_rules(&with);
        assert!(comments.contains(&("output".to_string(), relay6_rule_comment(40123))));
        assert!(comments.contains(&("output".to_string(), relay6_runs_rule_comment(40123))));
        let other = FirewallConfig {
            relay6_port: 40124,
            ..FirewallConfig::default()
        };
        assert_ne!(static_rules(&with), static_rules(&other));
        let without = base_script(&FirewallConfig::default());
        assert!(!without.contains("redirect to"));
        // The sets exist either way: elements can be diffed with or without the listener.
        assert!(without.contains("add set inet berth relay6_tcp "));
        assert!(without.contains("add set inet berth relay6_tcp_runs "));
    }

    /// The runs' maps are interval maps whose value is an address, and both NAT chains read
    /// each of them with a DNAT that translates the address only.
    #[test]
    fn dnat_runs_maps_and_rules() {
        let script = base_script(&FirewallConfig::default());
        assert!(script.contains(
            "add map inet berth publish4_any_runs { type inet_proto . inet_service : ipv4_addr; flags interval;"
        ));
        assert!(script.contains(
            "add map inet berth publish6_runs { type ipv6_addr . inet_proto . inet_service : ipv6_addr; flags interval;"
        ));
        for chain in ["prerouting", "output"] {
            for (proto, map) in [
                (
                    "ip",
                    "ip daddr . meta l4proto . th dport map @publish4_runs",
                ),
                ("ip", "meta l4proto . th dport map @publish4_any_runs"),
                (
                    "ip6",
                    "ip6 daddr . meta l4proto . th dport map @publish6_runs",
                ),
                ("ip6", "meta l4proto . th dport map @publish6_any_runs"),
            ] {
                let found = script.lines().any(|l| {
                    l.starts_with(&format!("add rule inet berth {chain} "))
                        && l.contains(&format!(" dnat {proto} to {map} comment "))
                });
                assert!(found, "{chain}: {map}");
            }
        }
        // The per-port map of a kind comes right before its runs' map (the rules are
        // exclusive; this keeps the listing readable).
        let rules = static_rules(&FirewallConfig::default());
        let pre: Vec<&str> = rules
            .iter()
            .filter(|(c, _)| c == "prerouting")
            .map(|(_, c)| c.as_str())
            .collect();
        let at = pre
            .iter()
            .position(|c| *c == "ports published on every IPv4 host address")
            .unwrap();
        assert_eq!(
            pre[at + 1],
            "runs of ports published on every IPv4 host address"
        );
    }

    /// `port_elements` writes each element and comment in place; what it yields is exactly
    /// what one `Elements::insert` per port of the plain formatting gives, also for container
    /// names that need quoting or cutting, every map kind, and a family mismatch (left out).
    #[test]
    fn port_elements_are_the_plain_formatting() {
        use crate::ports::{Proto, Published};
        let reference = |container: &str, published: &[Published]| {
            let mut e = Elements::default();
            // The DNAT runs, built the plain way: ports published to themselves, sorted, a run
            // grows while the next one of the same address, protocol and container follows on.
            let mut same: Vec<&Published> = published
                .iter()
                .filter(|p| {
                    p.host_port == p.container_port
                        && p.host_ip.is_ipv4() == p.container_ip.is_ipv4()
                })
                .collect();
            same.sort_by_key(|p| {
                (
                    p.host_ip.is_ipv6(),
                    p.host_ip.is_unspecified(),
                    p.host_ip,
                    p.proto,
                    p.container_ip,
                    p.host_port,
                )
            });
            let mut dnat_runs: Vec<Vec<&Published>> = Vec::new();
            for p in same {
                match dnat_runs.last_mut() {
                    Some(run)
                        if (run[0].host_ip, run[0].proto, run[0].container_ip)
                            == (p.host_ip, p.proto, p.container_ip)
                            && run.last().unwrap().host_port + 1 == p.host_port =>
                    {
                        run.push(p)
                    }
                    _ => dnat_runs.push(vec![p]),
                }
            }
            let mut covered = std::collections::BTreeSet::new();
            for run in dnat_runs.iter().filter(|r| r.len() >= 32) {
                let (a, b) = (run[0], run.last().unwrap());
                let (map, addr) = match (a.host_ip.is_ipv4(), a.host_ip.is_unspecified()) {
                    (true, false) => (MAP_PUBLISH4_RUNS, format!("{} . ", a.host_ip)),
                    (true, true) => (MAP_PUBLISH4_ANY_RUNS, String::new()),
                    (false, false) => (MAP_PUBLISH6_RUNS, format!("{} . ", a.host_ip)),
                    (false, true) => (MAP_PUBLISH6_ANY_RUNS, String::new()),
                };
                e.insert(
                    map,
                    format!(
                        "{addr}{} . {}-{} : {}",
                        a.proto, a.host_port, b.host_port, a.container_ip
                    ),
                    format!(
                        "container {container} {}-{}/{}",
                        a.host_port, b.host_port, a.proto
                    ),
                );
                covered.extend(run.iter().map(|p| (*p).clone()));
            }
            for p in published {
                if p.host_ip.is_ipv4() != p.container_ip.is_ipv4() || covered.contains(p) {
                    continue;
                }
                let (map, key) = match (p.host_ip, p.host_ip.is_unspecified()) {
                    (std::net::IpAddr::V4(_), true) => {
                        (MAP_PUBLISH4_ANY, format!("{} . {}", p.proto, p.host_port))
                    }
                    (std::net::IpAddr::V6(_), true) => {
                        (MAP_PUBLISH6_ANY, format!("{} . {}", p.proto, p.host_port))
                    }
                    (std::net::IpAddr::V4(a), false) => {
                        (MAP_PUBLISH4, format!("{a} . {} . {}", p.proto, p.host_port))
                    }
                    (std::net::IpAddr::V6(a), false) => {
                        (MAP_PUBLISH6, format!("{a} . {} . {}", p.proto, p.host_port))
                    }
                };
                e.insert(
                    map,
                    format!("{key} : {} . {}", p.container_ip, p.container_port),
                    format!("container {container} {}", p.key()),
                );
            }
            // The runs, built the plain way: a run grows while the next port follows on.
            let mut runs: Vec<Vec<crate::ports::LoopbackRelay>> = Vec::new();
            for r in crate::ports::loopback6_relays(published) {
                if r.proto != Proto::Tcp {
                    continue;
                }
                match runs.last_mut() {
                    Some(run) if run.last().unwrap().host_port + 1 == r.host_port => run.push(r),
                    _ => runs.push(vec![r]),
                }
            }
            for run in runs {
                let (a, b) = (&run[0], run.last().unwrap());
                if run.len() < 32 {
                    for r in &run {
                        e.insert(
                            SET_RELAY6_TCP,
                            format!("::1 . {}", r.host_port),
                            format!("container {container} {}", r.key),
                        );
                    }
                    continue;
                }
                let key = format!("::1 . {}-{}", a.host_port, b.host_port);
                let ports =
                    if (0..run.len()).all(|i| run[i].target.port() == a.target.port() + i as u16) {
                        format!("{}-{}/tcp", a.target.port(), b.target.port())
                    } else {
                        run.iter()
                            .map(|r| r.key.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                e.insert(
                    SET_RELAY6_TCP_RUNS,
                    key,
                    format!("container {container} {ports}"),
                );
            }
            e
        };
        let port = |host: &str, hp: u16, cip: &str, cp: u16, proto: Proto| Published {
            proto,
            host_ip: host.parse().unwrap(),
            host_port: hp,
            container_ip: cip.parse().unwrap(),
            container_port: cp,
        };
        let ports = vec![
            port("0.0.0.0", 8080, "10.1.0.2", 80, Proto::Tcp),
            port("0.0.0.0", 8080, "10.1.0.2", 80, Proto::Udp),
            port("127.0.0.1", 5353, "10.1.0.2", 53, Proto::Udp),
            port("::", 8080, "fd00::2", 80, Proto::Tcp),
            port("::1", 9090, "fd00::2", 90, Proto::Sctp),
            port("0.0.0.0", 7070, "fd00::2", 70, Proto::Tcp),
            port("0.0.0.0", 8080, "10.1.0.3", 81, Proto::Tcp),
        ];
        let long = "n".repeat(120);
        for name in [
            "web",
            "a\"b",
            "tab\there",
            long.as_str(),
            "é".repeat(60).as_str(),
        ] {
            assert_eq!(
                port_elements(name, &ports),
                reference(name, &ports),
                "{name}"
            );
        }
        assert_eq!(port_elements("x", &[]), Elements::default());
        let range: Vec<Published> = (30000..31000)
            .map(|p| port("0.0.0.0", p, "10.1.0.2", p, Proto::Tcp))
            .collect();
        assert_eq!(port_elements("range", &range), reference("range", &range));
        // A range with its container ports elsewhere, and two runs with a gap between them, one
        // too short to be a run element.
        let shifted: Vec<Published> = (30000..30040)
            .chain(30050..30060)
            .map(|p| port("0.0.0.0", p, "10.1.0.2", p - 29000, Proto::Tcp))
            .collect();
        assert_eq!(
            port_elements("shifted", &shifted),
            reference("shifted", &shifted)
        );
        // Runs on every map kind and protocol, with the long and quoted names above, next to
        // ports alone and a run one port short.
        let mixed: Vec<Published> = (20000..20100)
            .map(|p| port("127.0.0.1", p, "10.1.0.2", p, Proto::Udp))
            .chain((20000..20040).map(|p| port("::", p, "fd00::2", p, Proto::Sctp)))
            .chain((20000..20031).map(|p| port("::1", p, "fd00::2", p, Proto::Tcp)))
            .chain((20050..20090).map(|p| port("::1", p, "fd00::2", p, Proto::Tcp)))
            .chain(ports.iter().cloned())
            .collect();
        for name in ["web", "a\"b", long.as_str()] {
            assert_eq!(
                port_elements(name, &mixed),
                reference(name, &mixed),
                "{name}"
            );
        }
    }

    /// The DNAT runs: at least 32 consecutive ports published to the same container ports are
    /// ONE element of a `publish*_runs` map (address only: the DNAT keeps the port), 31 are
    /// not; a gap splits a run; a range with its container ports elsewhere stays one element
    /// per port; runs of two containers next to each other stay two elements, each with its
    /// owner's comment, and removing one container deletes exactly its own.
    #[test]
    fn dnat_runs_are_one_element_per_run_of_one_container() {
        use crate::ports::{Proto, Published};
        let port = |host: &str, hp: u16, cip: &str, cp: u16| Published {
            proto: Proto::Tcp,
            host_ip: host.parse().unwrap(),
            host_port: hp,
            container_ip: cip.parse().unwrap(),
            container_port: cp,
        };
        let keys = |e: &Elements, name: &str| -> Vec<String> {
            e.0.get(name)
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect()
        };
        // 32 ports: one element; its comment names the run.
        let run: Vec<Published> = (30000..30032)
            .map(|p| port("0.0.0.0", p, "10.1.0.2", p))
            .collect();
        let e = port_elements("a", &run);
        assert_eq!(
            e.0[MAP_PUBLISH4_ANY_RUNS],
            BTreeMap::from([(
                "tcp . 30000-30031 : 10.1.0.2".to_string(),
                "container a 30000-30031/tcp".to_string()
            )])
        );
        assert!(!e.0.contains_key(MAP_PUBLISH4_ANY), "no port twice");
        // 31 ports: one element per port, as before.
        let e = port_elements("a", &run[..31]);
        assert!(!e.0.contains_key(MAP_PUBLISH4_ANY_RUNS));
        assert_eq!(e.0[MAP_PUBLISH4_ANY].len(), 31);
        assert!(e.0[MAP_PUBLISH4_ANY].contains_key("tcp . 30000 : 10.1.0.2 . 30000"));
        // A gap splits a run: 40 + 40 ports are two elements, 40 + 10 one and 10 per port.
        let split: Vec<Published> = (30000..30040)
            .chain(30041..30081)
            .map(|p| port("0.0.0.0", p, "10.1.0.2", p))
            .collect();
        assert_eq!(
            keys(&port_elements("a", &split), MAP_PUBLISH4_ANY_RUNS),
            [
                "tcp . 30000-30039 : 10.1.0.2",
                "tcp . 30041-30080 : 10.1.0.2"
            ]
        );
        let uneven = port_elements("a", &split[..50]);
        assert_eq!(keys(&uneven, MAP_PUBLISH4_ANY_RUNS).len(), 1);
        assert_eq!(uneven.0[MAP_PUBLISH4_ANY].len(), 10);
        // An offset (`-p 30000-30999:40000-40999`): every port stays in the per-port map.
        let shifted: Vec<Published> = (30000..31000)
            .map(|p| port("0.0.0.0", p, "10.1.0.2", p + 10000))
            .collect();
        let e = port_elements("a", &shifted);
        assert!(!e.0.contains_key(MAP_PUBLISH4_ANY_RUNS));
        assert_eq!(e.0[MAP_PUBLISH4_ANY].len(), 1000);
        // One host address, IPv6: their own maps, the address in the key.
        let e = port_elements(
            "a",
            &(30000..30100)
                .map(|p| port("127.0.0.1", p, "10.1.0.2", p))
                .chain((30000..30100).map(|p| port("2001:db8::1", p, "fd00::2", p)))
                .chain((30000..30100).map(|p| port("::", p, "fd00::2", p)))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            keys(&e, MAP_PUBLISH4_RUNS),
            ["127.0.0.1 . tcp . 30000-30099 : 10.1.0.2"]
        );
        assert_eq!(
            keys(&e, MAP_PUBLISH6_RUNS),
            ["2001:db8::1 . tcp . 30000-30099 : fd00::2"]
        );
        assert_eq!(
            keys(&e, MAP_PUBLISH6_ANY_RUNS),
            ["tcp . 30000-30099 : fd00::2"]
        );
        for m in [
            MAP_PUBLISH4,
            MAP_PUBLISH4_ANY,
            MAP_PUBLISH6,
            MAP_PUBLISH6_ANY,
        ] {
            assert!(!e.0.contains_key(m), "{m}");
        }
        // Two containers' adjacent runs (b: 29900-29999, a: 30000-30999): two elements, two
        // owners; removing b deletes exactly b's.
        let a = port_elements(
            "a",
            &(30000..31000)
                .map(|p| port("0.0.0.0", p, "10.1.0.2", p))
                .collect::<Vec<_>>(),
        );
        let b = port_elements(
            "b",
            &(29900..30000)
                .map(|p| port("0.0.0.0", p, "10.1.0.3", p))
                .collect::<Vec<_>>(),
        );
        let mut both = a.clone();
        both.extend(&b);
        assert_eq!(
            both.0[MAP_PUBLISH4_ANY_RUNS],
            BTreeMap::from([
                (
                    "tcp . 29900-29999 : 10.1.0.3".to_string(),
                    "container b 29900-29999/tcp".to_string()
                ),
                (
                    "tcp . 30000-30999 : 10.1.0.2".to_string(),
                    "container a 30000-30999/tcp".to_string()
                ),
            ])
        );
        let (current, desired) = delta(&both, &b, &Elements::default());
        let changes = diff_changes(&current, &desired);
        let runs: Vec<&SetChange> = changes
            .iter()
            .filter(|c| c.set == MAP_PUBLISH4_ANY_RUNS)
            .collect();
        assert_eq!(runs.len(), 1);
        assert!(runs[0].interval);
        assert_eq!(runs[0].data_type, Some("ipv4_addr"));
        assert_eq!(runs[0].delete, ["tcp . 29900-29999"]);
        assert!(runs[0].add.is_empty());
        assert!(
            changes.iter().all(|c| c.set != MAP_PUBLISH4_ANY),
            "no per-port element touched"
        );
    }

    /// A run is consecutive ports: a gap splits it, a port alone stays a run of one, and the
    /// top port ends a run without overflowing.
    #[test]
    fn port_runs_split_at_gaps() {
        let runs = |ports: &[u16]| -> Vec<(usize, usize)> {
            port_runs(ports.iter().copied())
                .into_iter()
                .map(|r| (r.start, r.end))
                .collect()
        };
        assert_eq!(runs(&[]), []);
        assert_eq!(runs(&[80]), [(0, 1)]);
        assert_eq!(runs(&[80, 81, 82]), [(0, 3)]);
        assert_eq!(runs(&[80, 82]), [(0, 1), (1, 2)]);
        assert_eq!(runs(&[80, 81, 90, 91, 92, 100]), [(0, 2), (2, 5), (5, 6)]);
        assert_eq!(runs(&[65534, 65535]), [(0, 2)]);
        assert_eq!(runs(&[0, 65535]), [(0, 1), (1, 2)]);
    }

    /// The `[::1]` relay's runs: a run of at least 32 consecutive ports of one container is ONE
    /// interval element of `relay6_tcp_runs` (a 1,000-port range), a gap splits runs, shorter
    /// runs and ports alone stay one hash element per port in `relay6_tcp`, UDP ports are in
    /// neither, and adjacent runs of two containers stay two elements, each with its owner's
    /// comment, so removing one container removes exactly its own.
    #[test]
    fn relay6_elements_are_runs_owned_by_one_container() {
        use crate::ports::{Proto, Published};
        let port = |hp: u16, cp: u16, proto: Proto| Published {
            proto,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: hp,
            container_ip: "10.1.0.2".parse().unwrap(),
            container_port: cp,
        };
        let set = |e: &Elements, name: &str| -> Vec<(String, String)> {
            e.0.get(name)
                .into_iter()
                .flatten()
                .map(|(k, c)| (k.clone(), c.clone()))
                .collect()
        };
        let pair = |k: &str, c: &str| (k.to_string(), c.to_string());
        let range: Vec<Published> = (30000..31000)
            .map(|p| port(p, p, Proto::Tcp))
            .chain((30000..31000).map(|p| port(p, p, Proto::Udp)))
            .chain([port(8080, 80, Proto::Tcp), port(31002, 22, Proto::Tcp)])
            .chain((40000..40031).map(|p| port(p, p, Proto::Tcp)))
            .collect();
        let a = port_elements("a", &range);
        assert_eq!(
            set(&a, SET_RELAY6_TCP_RUNS),
            [pair("::1 . 30000-30999", "container a 30000-30999/tcp")]
        );
        let singles = set(&a, SET_RELAY6_TCP);
        assert_eq!(singles.len(), 2 + 31, "8080, 31002 and a run of 31");
        assert!(singles.contains(&pair("::1 . 31002", "container a 22/tcp")));
        assert!(singles.contains(&pair("::1 . 40030", "container a 40030/tcp")));
        // The map elements: the two 1,000-port ranges are one run each, the rest one per port.
        assert_eq!(a.0[MAP_PUBLISH4_ANY_RUNS].len(), 2);
        assert_eq!(a.0[MAP_PUBLISH4_ANY].len(), 33);
        // Container b's run ends right before a's (29968-29999): two elements, two owners.
        let b = port_elements(
            "b",
            &(29968..30000)
                .map(|p| port(p, p - 29900, Proto::Tcp))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            set(&b, SET_RELAY6_TCP_RUNS),
            [pair("::1 . 29968-29999", "container b 68-99/tcp")]
        );
        assert!(!b.0.contains_key(SET_RELAY6_TCP));
        let mut both = a.clone();
        both.extend(&b);
        assert_eq!(both.0[SET_RELAY6_TCP_RUNS].len(), 2, "no run across owners");
        // Removing b (what the daemon diffs at its removal) deletes exactly b's element.
        let (current, desired) = delta(&both, &b, &Elements::default());
        let changes = diff_changes(&current, &desired);
        let relay_change: Vec<&SetChange> = changes
            .iter()
            .filter(|c| c.set == SET_RELAY6_TCP_RUNS || c.set == SET_RELAY6_TCP)
            .collect();
        assert_eq!(relay_change.len(), 1);
        assert!(relay_change[0].interval);
        assert_eq!(relay_change[0].delete, ["::1 . 29968-29999"]);
        assert!(relay_change[0].add.is_empty());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("network web"), "\"network web\"");
        assert_eq!(quote("a\"b\\c\nd"), "\"a_b_c_d\"");
        assert_eq!(quote(&"x".repeat(200)).len(), 130);
        assert_eq!(quote(&"é".repeat(100)).len(), 128 + 2);
    }

    /// A network name may hold quotes or be long: the comment kept as desired is the one nft
    /// prints back, so a pass never sees a difference where there is none.
    #[test]
    fn desired_comments_are_what_nft_keeps() {
        let mut e = Elements::default();
        let name = format!("network a\"b {}", "n".repeat(200));
        e.insert(SET_BRIDGES, "\"br\"".into(), name.clone());
        let kept = &e.0[SET_BRIDGES]["\"br\""];
        assert_eq!(format!("\"{kept}\""), quote(&name));
        assert!(kept.len() <= MAX_COMMENT && !kept.contains('"'));
        assert_eq!(diff_script(&e, &e), "");
    }

    #[test]
    fn parse_real_shapes() {
        // Shapes as printed by nft 1.0.6 for this table.
        let j = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "berth", "handle": 1}},
            {"set": {"family": "inet", "name": "bridges", "table": "berth", "type": "ifname",
                     "elem": [{"elem": {"val": "br-abc", "comment": "network web"}}, "br-bare"]}},
            {"set": {"family": "inet", "name": "same_bridge", "table": "berth", "type": ["ifname", "ifname"],
                     "elem": [{"elem": {"val": {"concat": ["br-a", "br-a"]}, "comment": "network a"}}]}},
            {"set": {"family": "inet", "name": "masq4", "table": "berth", "type": "ipv4_addr",
                     "flags": ["interval"],
                     "elem": [{"elem": {"val": {"prefix": {"addr": "10.1.0.0", "len": 24}}, "comment": "network web"}},
                              {"elem": {"val": "10.2.0.5", "comment": "single"}},
                              {"range": ["10.3.0.1", "10.3.0.9"]},
                              {"weird": true}, 17, null]}},
            {"set": {"family": "inet", "name": "masq6", "table": "berth", "type": "ipv6_addr"}},
            {"set": {"family": "ip", "name": "bridges", "table": "berth", "type": "ifname",
                     "elem": ["not-ours"]}},
            {"set": {"family": "inet", "name": "x", "table": "other", "elem": ["no"]}},
            {"chain": {"family": "inet", "table": "berth", "name": "user"}}
        ]});
        let e = parse_observed(&j);
        let get = |s: &str| e.0.get(s).cloned().unwrap_or_default();
        assert_eq!(
            get("bridges"),
            BTreeMap::from([
                ("\"br-abc\"".into(), "network web".into()),
                ("\"br-bare\"".into(), String::new()),
            ])
        );
        assert_eq!(
            get("same_bridge"),
            BTreeMap::from([("\"br-a\" . \"br-a\"".into(), "network a".into())])
        );
        let m = get("masq4");
        assert_eq!(
            m.keys().collect::<Vec<_>>(),
            ["10.1.0.0/24", "10.2.0.5", "10.3.0.1-10.3.0.9", "17"]
        );
        assert!(get("masq6").is_empty());
        assert!(!e.0.contains_key("x"));
        // Garbage in, nothing out, no panic.
        assert!(parse_observed(&json!(null)).is_empty());
        let rules = json!({"nftables": [
            {"rule": {"family": "inet", "table": "berth", "chain": "user", "handle": 9}},
            {"rule": {"family": "inet", "table": "berth", "chain": "forward", "handle": 3}},
            {"rule": {"family": "inet", "table": "other", "chain": "user", "handle": 4}}
        ]});
        assert_eq!(user_rule_count(&rules), 1);
        assert_eq!(user_rule_count(&json!(null)), 0);
        assert!(
            parse_observed(&json!({"nftables": [{"set": 5}, {"set": {"elem": "x"}}]})).is_empty()
        );
    }

    #[test]
    fn port_delta_touches_only_what_changes() {
        let el = |key: &str, val: &str, c: &str| {
            let mut e = Elements::default();
            e.insert(MAP_PUBLISH4_ANY, format!("{key} : {val}"), c.to_string());
            e
        };
        let mut applied = el("tcp . 8080", "10.1.0.2 . 80", "container a 80/tcp");
        applied.extend(&el("tcp . 9000", "10.1.0.3 . 80", "container b 80/tcp"));
        for i in 0..1000 {
            applied.extend(&el(
                &format!("udp . {}", 20000 + i),
                "10.1.0.4 . 53",
                "container c 53/udp",
            ));
        }
        // Stale state: the key 8080 is taken over by a new container; a removal of an element
        // the table does not hold is skipped.
        let add = el("tcp . 8080", "10.1.0.9 . 8000", "container d 8000/tcp");
        let remove = el("tcp . 7", "10.1.0.5 . 7", "container gone 7/tcp");
        let (current, desired) = delta(&applied, &remove, &add);
        assert_eq!(current.len(), 1);
        assert_eq!(
            diff_script(&current, &desired),
            "delete element inet berth publish4_any { tcp . 8080 }\n\
             add element inet berth publish4_any { tcp . 8080 comment \"container d 8000/tcp\" : 10.1.0.9 . 8000 }\n"
        );
        // Unpublishing b touches b only.
        let (current, desired) = delta(
            &applied,
            &el("tcp . 9000", "10.1.0.3 . 80", "container b 80/tcp"),
            &Elements::default(),
        );
        assert_eq!(
            diff_script(&current, &desired),
            "delete element inet berth publish4_any { tcp . 9000 }\n"
        );
    }

    #[test]
    fn parse_map_shapes() {
        let j = json!({"nftables": [
            {"map": {"family": "inet", "name": "publish4", "table": "berth",
                     "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "ipv4_addr . inet_service",
                     "elem": [
                        [{"concat": ["10.0.0.1", "udp", 53]}, {"concat": ["10.1.0.2", 53]}],
                        [{"elem": {"val": {"concat": ["127.0.0.1", "tcp", 8080]}, "comment": "container web 80/tcp"}},
                         {"concat": ["10.1.0.2", 80]}],
                        ["broken"], 7
                     ]}}
        ]});
        let e = parse_observed(&j);
        assert_eq!(
            e.0["publish4"],
            BTreeMap::from([
                (
                    "10.0.0.1 . udp . 53 : 10.1.0.2 . 53".to_string(),
                    String::new()
                ),
                (
                    "127.0.0.1 . tcp . 8080 : 10.1.0.2 . 80".to_string(),
                    "container web 80/tcp".to_string()
                ),
            ])
        );
    }

    #[test]
    fn link_local_and_ports_of_elements() {
        // What the kernel derives for 02:42:0a:05:00:02 (EUI-64, universal/local bit flipped).
        assert_eq!(
            link_local([0x02, 0x42, 0x0a, 0x05, 0x00, 0x02]).to_string(),
            "fe80::42:aff:fe05:2"
        );
        assert_eq!(
            parse_mac("02:42:AC:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(element_port("\"veth1\" . 10.1.0.2"), Some("veth1"));
        assert_eq!(element_port("\"veth1\""), Some("veth1"));
        assert_eq!(element_port("10.1.0.2"), None);
        let mut e = Elements::default();
        e.insert(SET_GUARDED, "\"a\"".into(), String::new());
        e.insert(SET_GUARDED, "\"b\"".into(), String::new());
        e.insert(SET_PORT_IP4, "\"b\" . 10.0.0.2".into(), String::new());
        e.insert(SET_BRIDGES, "\"b\"".into(), String::new());
        let only_b = guard_part(&e, Some(&["b".to_string()].into()));
        assert_eq!(only_b.len(), 2);
        assert_eq!(guard_part(&e, None).len(), 3);
    }

    /// A port's elements are one range of each set's keys: ports whose names extend another's
    /// (`vb1`, `vb12`, `vb1x`) are told apart, and taking a scope out leaves the rest.
    #[test]
    fn guard_part_and_removal_by_port_range() {
        let mut e = Elements::default();
        for port in ["vb1", "vb12", "vb1x", "vb2"] {
            let q = quote(port);
            e.insert(SET_GUARDED, q.clone(), format!("container of {port}"));
            e.insert(
                SET_PORT_MAC,
                format!("{q} . 02:42:0a:00:00:01"),
                String::new(),
            );
            e.insert(SET_PORT_IP4, format!("{q} . 10.0.0.1"), String::new());
            e.insert(SET_PORT_IP4, format!("{q} . 10.0.0.9"), String::new());
        }
        e.insert(SET_BRIDGES, "\"vb1\"".into(), String::new());
        let scope: std::collections::BTreeSet<String> = ["vb1".to_string(), "vb2".into()].into();
        let part = guard_part(&e, Some(&scope));
        // What a walk over every element would pick.
        let mut walked = Elements::default();
        for name in guard_names() {
            for (k, c) in e.0.get(name).into_iter().flatten() {
                if element_port(k).is_some_and(|p| scope.contains(p)) {
                    walked.insert(name, k.clone(), c.clone());
                }
            }
        }
        assert_eq!(part.len(), 8);
        for name in guard_names() {
            assert_eq!(
                part.0.get(name),
                walked.0.get(name).or(Some(&BTreeMap::new()))
            );
        }
        let mut rest = e.clone();
        remove_guard_ports(&mut rest, &scope);
        assert_eq!(rest.len(), e.len() - 8);
        let left: std::collections::BTreeSet<&str> = guard_names()
            .into_iter()
            .flat_map(|n| rest.0.get(n).into_iter().flatten())
            .filter_map(|(k, _)| element_port(k))
            .collect();
        assert_eq!(left, ["vb12", "vb1x"].into());
        // Not a guard set: untouched.
        assert_eq!(rest.0[SET_BRIDGES].len(), 1);
    }

    #[test]
    fn diff_round_trip_is_empty() {
        let mut want = Elements::default();
        want.insert(SET_BRIDGES, "\"br-a\"".into(), "network a".into());
        assert_eq!(diff_script(&want, &want), "");
        // A changed comment is rewritten.
        let mut have = Elements::default();
        have.insert(SET_BRIDGES, "\"br-a\"".into(), "old".into());
        assert_eq!(
            diff_script(&have, &want),
            "delete element inet berth bridges { \"br-a\" }\n\
             add element inet berth bridges { \"br-a\" comment \"network a\" }\n"
        );
        // Sets that are not berth's are never touched.
        let mut have = Elements::default();
        have.insert("foreign", "1".into(), String::new());
        assert_eq!(diff_script(&have, &Elements::default()), "");
    }

    /// Proves: only keys the table lacks count as fresh; a changed comment, a map key with a
    /// new value and any element of an interval set are left to `diff_changes`, and the
    /// fresh elements with what the table holds add up to no deletion.
    #[test]
    fn fresh_elements_are_new_keys_outside_interval_sets() {
        let mut have = Elements::default();
        have.insert(SET_GUARDED, "\"a\"".into(), "c1".into());
        have.insert(SET_BRIDGES, "\"br0\"".into(), "old".into());
        have.insert(
            MAP_PUBLISH4_ANY,
            "tcp . 8080 : 10.1.0.2 . 80".into(),
            String::new(),
        );
        let mut want = have.clone();
        want.insert(SET_GUARDED, "\"b\"".into(), "c2".into());
        want.insert(SET_PORT_IP4, "\"b\" . 10.1.0.3".into(), "c2".into());
        want.insert(SET_MASQ4, "10.1.0.0/24".into(), "net".into());
        want.0
            .get_mut(SET_BRIDGES)
            .expect("set")
            .insert("\"br0\"".into(), "new".into());
        want.0.get_mut(MAP_PUBLISH4_ANY).expect("map").clear();
        want.insert(
            MAP_PUBLISH4_ANY,
            "tcp . 8080 : 10.1.0.9 . 80".into(),
            String::new(),
        );
        want.insert(
            MAP_PUBLISH4_ANY,
            "tcp . 9090 : 10.1.0.3 . 80".into(),
            String::new(),
        );
        let fresh = fresh_elements(&have, &want);
        let mut expect = Elements::default();
        expect.insert(SET_GUARDED, "\"b\"".into(), "c2".into());
        expect.insert(SET_PORT_IP4, "\"b\" . 10.1.0.3".into(), "c2".into());
        expect.insert(
            MAP_PUBLISH4_ANY,
            "tcp . 9090 : 10.1.0.3 . 80".into(),
            String::new(),
        );
        assert_eq!(fresh, expect);
        let mut with = have.clone();
        with.extend(&fresh);
        assert!(diff_changes(&have, &with)
            .iter()
            .all(|c| c.delete.is_empty()));
    }
}
