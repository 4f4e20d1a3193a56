//! The part of a journey inside an overlay network's namespace (issue 11): the network's
//! bridge, the host sides of its containers' veths, its VXLAN port and the uplink's `up0` live
//! in a namespace of their own (`crate::overlayns`), where the host's trace table sees nothing.
//! A trace that involves an overlay network also installs a table in that namespace
//! ([`ns_table_script`]): `table bridge berth-trace-ID`, marking the flow where a frame enters
//! the bridge (hook `prerouting`, from a port or the tunnel), and `table inet berth-trace-ID`,
//! marking it where it comes up the uplink (hook `prerouting`, `iifname "up0"`); empty base
//! chains at the last hooks make the kernel report where each marked frame leaves. The daemon reads that namespace's events on a trace
//! socket opened inside it and hands them here ([`NsTrace`]); they become packets of their own
//! ([`Packet::overlay`] names the network) and hops through the participants
//! [`OVERLAY_BRIDGE`], [`TUNNEL`] and [`REMOTE`].
//!
//! Inside the namespace no NAT happens, but the host's DNAT of a published port happened before
//! the frame got there, so the namespace's rules match the flow by its source port (the probe's,
//! which no NAT here changes) when one is known, and by the flow's destination otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{
    decisive, dropped_text, fam, packet_with, packets_of, step_text, truncate_at_drop, Drop, Event,
    Filter, Header, Hop, Packet, Rules, World, CONT, HOST, MARKER, MARK_PRIORITY, MAX_PACKETS,
};
use crate::overlayns::UPLINK_PEER;

/// Participant: an overlay network's bridge, in its namespace.
pub const OVERLAY_BRIDGE: &str = "Overlay bridge";
/// Participant: the network's VXLAN port and the underlay between the hosts.
pub const TUNNEL: &str = "VXLAN";
/// Participant: the host of the cluster where the other container lives.
pub const REMOTE: &str = "Remote host";

/// Priority of the empty chains that report where a marked frame leaves: after everything.
const SEEN_PRIORITY: i32 = 300;

/// A container of the network on another host (from the cluster's published endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInfo {
    /// The container's name.
    pub container: String,
    /// The host it runs on.
    pub node: String,
    /// That host's tunnel endpoint.
    pub vtep: IpAddr,
    /// Its addresses on the network.
    pub addrs: Vec<IpAddr>,
}

/// An overlay network's namespace on this host, as the journey names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInfo {
    /// The network's name.
    pub network: String,
    /// Its namespace (`ov-<9 hex>`).
    pub netns: String,
    /// Its bridge (in the namespace).
    pub bridge: String,
    /// Its VXLAN port (in the namespace).
    pub vxlan: String,
    /// Its VXLAN id.
    pub vni: u32,
    /// The host side of its uplink; `None` for an `--internal` network (it has none).
    pub uplink: Option<String>,
    /// Interface names by index, in the namespace.
    pub links: BTreeMap<u32, String>,
    /// The network's containers on other hosts.
    pub remotes: Vec<RemoteInfo>,
}

impl OverlayInfo {
    fn remote_of(&self, a: IpAddr) -> Option<&RemoteInfo> {
        self.remotes.iter().find(|r| r.addrs.contains(&a))
    }
}

/// The events read in one overlay namespace during a trace, and its rule set with handles.
#[derive(Debug, Clone, Default)]
pub struct NsTrace {
    /// The network (its [`OverlayInfo::network`]).
    pub network: String,
    /// The events, in arrival order.
    pub events: Vec<Event>,
    /// `nft -a list ruleset` of the namespace, parsed.
    pub rules: Rules,
}

impl Filter {
    /// The namespace's match of the original direction, or of the replies with `reply` (no
    /// conntrack is asked there, so both directions match on headers).
    fn ns_match(&self, reply: bool) -> String {
        let mut s = String::new();
        let src = self.src_same_family();
        match (self.sport, reply) {
            (Some(p), false) => {
                if let Some(a) = src {
                    let _ = write!(s, "{} saddr {a} ", fam(a));
                }
                let _ = write!(s, "meta l4proto {} th sport {p}", self.proto);
            }
            (Some(p), true) => {
                if let Some(a) = src {
                    let _ = write!(s, "{} daddr {a} ", fam(a));
                }
                let _ = write!(s, "meta l4proto {} th dport {p}", self.proto);
            }
            (None, false) => {
                let _ = write!(s, "{} daddr {}", fam(self.dst), self.dst);
                if let Some(a) = src {
                    let _ = write!(s, " {} saddr {a}", fam(a));
                }
                let _ = write!(s, " meta l4proto {} th dport {}", self.proto, self.dport);
            }
            (None, true) => {
                let _ = write!(s, "{} saddr {}", fam(self.dst), self.dst);
                if let Some(a) = src {
                    let _ = write!(s, " {} daddr {a}", fam(a));
                }
                let _ = write!(s, " meta l4proto {} th sport {}", self.proto, self.dport);
            }
        }
        s
    }

    /// Whether a header seen in an overlay namespace is of the original direction (by the
    /// source port when known: the destination may have been translated by the host's DNAT).
    fn ns_is_original(&self, h: &Header) -> bool {
        match self.sport {
            Some(p) => h.sport == p,
            None => self.is_original(h),
        }
    }
}

/// The script that creates trace `id`'s tables in an overlay namespace (one `nft -f -`
/// transaction run inside it): `table bridge berth-trace-ID` and `table inet berth-trace-ID`.
///
/// The inet rules mark only what comes up the uplink (`iifname "up0"`): a frame marked when it
/// entered the bridge and routed by the namespace (towards the uplink) is the same packet.
pub fn ns_table_script(id: &str, f: &Filter, packets: u32) -> String {
    let n = packets.clamp(1, MAX_PACKETS);
    let name = super::table_name(id);
    let mut s = String::new();
    for family in ["bridge", "inet"] {
        let t = format!("{family} {name}");
        let _ = writeln!(s, "add table {t} {{ comment \"{MARKER}\"; }}");
        // Only `prerouting`: the bridge's `output` hook needs no mark (what the namespace's
        // stack sends through the bridge came up the uplink, marked there by the inet chain),
        // and the inet chain marks only what comes up the uplink: a frame the bridge's chain
        // marked is routed with its mark (nftables cannot read `meta nftrace` to skip it), and
        // would count twice.
        let not_yet = if family == "inet" {
            format!("iifname \"{UPLINK_PEER}\" ")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "add chain {t} mark_in {{ type filter hook prerouting priority {MARK_PRIORITY}; policy accept; }}"
        );
        for reply in [false, true] {
            let _ = writeln!(
                s,
                "add rule {t} mark_in {not_yet}{} limit rate {n}/minute burst {n} packets meta nftrace set 1 comment \"berth trace {id}\"",
                f.ns_match(reply)
            );
        }
        let seen: &[(&str, &str)] = if family == "bridge" {
            &[("seen_out", "postrouting"), ("seen_local", "input")]
        } else {
            &[("seen_out", "postrouting")]
        };
        for (chain, hook) in seen {
            let _ = writeln!(
                s,
                "add chain {t} {chain} {{ type filter hook {hook} priority {SEEN_PRIORITY}; policy accept; }}"
            );
        }
    }
    s
}

/// The script that removes trace tables from an overlay namespace.
pub fn ns_delete_script(table: &str) -> String {
    format!("delete table bridge {table}\ndelete table inet {table}\n")
}

/// The packets of one namespace's events, with names from that namespace.
pub(super) fn ns_packets(
    t: &NsTrace,
    table: &str,
    f: &Filter,
    w: &World,
) -> Vec<(Packet, Option<Drop>)> {
    let Some(ov) = w.overlays.iter().find(|o| o.network == t.network) else {
        return Vec::new();
    };
    // A frame's bridge events and its routed events carry different ids (the kernel hashes
    // the input interface into the id): `packets_of` joins them by their headers.
    packets_of(&t.events, table)
        .into_iter()
        .map(|(id, evs)| {
            let mut p = packet_with(id, &evs, table, f, &t.rules, w, &ov.links);
            p.overlay = Some(ov.network.clone());
            if let Some(h) = p.header {
                p.direction = if f.ns_is_original(&h) {
                    "original"
                } else {
                    "reply"
                }
                .into();
            }
            let drop =
                truncate_at_drop(&mut p, &evs, table).map(|e| ns_drop(e, t.rules.get(e), ov));
            (p, drop)
        })
        .collect()
}

/// A drop inside an overlay namespace, explained.
fn ns_drop(e: &Event, r: Option<&super::RuleText>, ov: &OverlayInfo) -> Drop {
    let chain = format!("{} {} {}", e.family, e.table, e.chain);
    let rule = r.map_or_else(
        || format!("handle {}", e.handle.unwrap_or(0)),
        |r| r.text.clone(),
    );
    let comment = r.and_then(|r| r.comment.clone());
    let (cause, fix) = if e.family == "bridge" && e.table == "berth" {
        (
            format!(
                "berth's anti-spoofing in overlay network {}'s namespace {}: {} (a container may send only from its own addresses and MAC)",
                ov.network,
                ov.netns,
                comment.as_deref().unwrap_or("guard")
            ),
            None,
        )
    } else {
        (
            format!(
                "dropped by {chain} in overlay network {}'s namespace {}, which is not berth's",
                ov.network, ov.netns
            ),
            Some(format!(
                "remove that table: nsenter --net=RUNDIR/netns/{} nft delete table {} {}",
                ov.netns, e.family, e.table
            )),
        )
    };
    Drop {
        chain,
        rule,
        handle: e.handle,
        comment,
        cause,
        fix,
    }
}

/// Where a frame came into or left an overlay namespace, in berth's terms.
enum Port<'a> {
    /// A container's veth (the host side, a bridge port).
    Container(&'a super::EndpointInfo),
    /// `up0`, the namespace's end of the uplink.
    Uplink,
    /// The VXLAN port.
    Tunnel,
    /// Anything else (the bridge itself: the namespace's own stack).
    Other(String),
}

fn port<'a>(w: &'a World, ov: &OverlayInfo, ifname: &str) -> Port<'a> {
    if ifname == UPLINK_PEER {
        Port::Uplink
    } else if ifname == ov.vxlan {
        Port::Tunnel
    } else if let Some(e) = w
        .endpoints
        .iter()
        .find(|e| e.host_ifname == ifname && e.network == ov.network)
    {
        Port::Container(e)
    } else {
        Port::Other(ifname.to_string())
    }
}

/// The hops of one packet through an overlay namespace.
pub(super) fn ns_hops(p: &Packet, drop: Option<&Drop>, w: &World) -> Vec<Hop> {
    let mut v = Vec::new();
    let Some(ov) = p
        .overlay
        .as_deref()
        .and_then(|n| w.overlays.iter().find(|o| o.network == n))
    else {
        return v;
    };
    let mut hop = |from: &str, to: &str, what: String, traced: bool| {
        v.push(Hop {
            from: from.into(),
            to: to.into(),
            what,
            traced,
        })
    };
    let h = p.header;
    let text = h.map_or_else(|| "packet".to_string(), |h| h.text());
    let remote = |a: Option<IpAddr>| a.and_then(|a| ov.remote_of(a));
    let ns = format!("{} (namespace {})", ov.bridge, ov.netns);
    match p.iif.as_deref().map(|i| port(w, ov, i)) {
        Some(Port::Container(e)) => hop(
            CONT,
            OVERLAY_BRIDGE,
            format!(
                "{text} leaves container {} ({}), in on bridge port {} of {ns}",
                e.container, e.ifname, e.host_ifname
            ),
            true,
        ),
        Some(Port::Uplink) => hop(
            HOST,
            OVERLAY_BRIDGE,
            format!(
                "{text} in on {UPLINK_PEER} from the host (uplink {}), routed to {ns}",
                ov.uplink.as_deref().unwrap_or("?")
            ),
            true,
        ),
        Some(Port::Tunnel) => {
            let r = remote(h.map(|h| h.src));
            if let Some(r) = r {
                hop(
                    REMOTE,
                    TUNNEL,
                    format!(
                        "container {} on host {} sends it; VXLAN (VNI {}) from {}",
                        r.container, r.node, ov.vni, r.vtep
                    ),
                    false,
                );
            }
            hop(
                TUNNEL,
                OVERLAY_BRIDGE,
                format!(
                    "{text} decapsulated by {} (VNI {}), in on {ns}",
                    ov.vxlan, ov.vni
                ),
                true,
            );
        }
        Some(Port::Other(i)) => hop(
            HOST,
            OVERLAY_BRIDGE,
            format!("{text} in on {i} of {ns}"),
            true,
        ),
        None => hop(HOST, OVERLAY_BRIDGE, format!("{text} in {ns}"), true),
    }
    // Anti-spoofing: the guard's verdict for frames of a guarded port.
    let guard = p
        .steps
        .iter()
        .any(|s| s.chain == "bridge berth prerouting" && s.verdict.starts_with("jump"));
    if let Some(d) = drop.filter(|_| p.dropped) {
        hop(OVERLAY_BRIDGE, OVERLAY_BRIDGE, dropped_text(d), true);
        return v;
    }
    let passed = if guard {
        "anti-spoofing (table bridge berth chain guard) passed; "
    } else {
        ""
    };
    let after = p.translated.or(p.header);
    match p.oif.as_deref().map(|o| port(w, ov, o)) {
        Some(Port::Container(e)) => hop(
            OVERLAY_BRIDGE,
            CONT,
            format!(
                "{passed}out of bridge port {} to container {} ({}{})",
                e.host_ifname,
                e.container,
                e.ifname,
                after
                    .map(|a| format!(" {}", super::sock(a.dst, a.dport)))
                    .unwrap_or_default()
            ),
            true,
        ),
        Some(Port::Uplink) => hop(
            OVERLAY_BRIDGE,
            HOST,
            format!(
                "{passed}routed out of {UPLINK_PEER} up the uplink to the host's stack ({})",
                ov.uplink.as_deref().unwrap_or("?")
            ),
            true,
        ),
        Some(Port::Tunnel) => {
            let r = remote(after.map(|a| a.dst));
            let to = r.map_or_else(
                || "the host whose static FDB entry holds the destination MAC".to_string(),
                |r| format!("{} (host {})", r.vtep, r.node),
            );
            hop(
                OVERLAY_BRIDGE,
                TUNNEL,
                format!(
                    "{passed}out of {}: encapsulated in VXLAN (VNI {}, UDP) to {to}",
                    ov.vxlan, ov.vni
                ),
                true,
            );
            if let Some(r) = r {
                hop(
                    TUNNEL,
                    REMOTE,
                    format!(
                        "host {} decapsulates it and delivers it to container {} (traced there by berth trace on that host)",
                        r.node, r.container
                    ),
                    false,
                );
            }
        }
        Some(Port::Other(o)) => hop(
            OVERLAY_BRIDGE,
            OVERLAY_BRIDGE,
            format!("{passed}out of {o}"),
            true,
        ),
        None => {
            if let Some(s) = decisive(p, &["prerouting", "input", "forward"]) {
                hop(OVERLAY_BRIDGE, OVERLAY_BRIDGE, step_text(s), true);
            }
        }
    }
    v
}

/// The overlay network whose uplink (host side) `ifname` is.
pub(super) fn uplink_of<'a>(w: &'a World, ifname: Option<&str>) -> Option<&'a OverlayInfo> {
    let i = ifname?;
    w.overlays.iter().find(|o| o.uplink.as_deref() == Some(i))
}
