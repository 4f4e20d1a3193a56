//! `berth trace`: the journey of a real packet, from the kernel's own trace (the seed's §6).
//!
//! The daemon installs a temporary table, `table inet berth-trace-ID` ([`table_script`]), whose
//! chains hook in before everything else (priority `raw - 10`, before berth's `prerouting_raw`,
//! conntrack and NAT) with ONE rule matching only the traced flow that sets `meta nftrace set 1`,
//! plus a second pair of chains after conntrack (priority -150) that marks the flow's replies
//! (`ct direction reply` with the original tuple), so the way back is traced too. Both rules are
//! bounded (`limit rate N/minute burst N packets`); the daemon also bounds the trace in time and
//! deletes the table when it ends. The kernel then reports every rule, return and policy each
//! marked packet meets (`NFT_MSG_TRACE` events, what `nft monitor trace` prints); this module
//! turns those [`Event`]s, the rule set with handles ([`parse_ruleset`]) and berth's state
//! ([`World`]) into a [`Journey`]: each hop in order, the rule that decided it, the berth object
//! that caused it, and on a drop why the rule exists and what would allow the flow. Rendered as
//! text ([`render_text`]), JSON (serde) or a mermaid sequence diagram ([`render_mermaid`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::firewall::rule;
use crate::ports::Proto;

mod overlay;
pub use overlay::{
    ns_delete_script, ns_table_script, NsTrace, OverlayInfo, RemoteInfo, OVERLAY_BRIDGE, REMOTE,
    TUNNEL,
};

/// Name prefix of every trace table: what berthd removes at start (orphans of a crash).
pub const TABLE_PREFIX: &str = "berth-trace-";
/// The comment every trace table carries (a second mark, for people listing the rule set).
pub const MARKER: &str = "berth trace: temporary, removed when the trace ends";
/// Priority of the chains that mark the flow: before berth's `prerouting_raw` (raw, -300),
/// conntrack (-200) and NAT (-100).
pub const MARK_PRIORITY: i32 = -310;
/// Priority of the chains that mark the flow's replies: after conntrack (so `ct original`
/// is known), before NAT.
pub const REPLY_PRIORITY: i32 = -150;
/// Most packets one trace may mark in each direction (the `burst` of its `limit`).
pub const MAX_PACKETS: u32 = 100;

/// The name of trace `id`'s table (`berth-trace-ID`).
pub fn table_name(id: &str) -> String {
    format!("{TABLE_PREFIX}{id}")
}

/// Whether `name` is a trace table's (one of ours, or an orphan of a crash).
pub fn is_trace_table(name: &str) -> bool {
    name.strip_prefix(TABLE_PREFIX)
        .is_some_and(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The flow to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// TCP or UDP.
    pub proto: Proto,
    /// Destination address, as the client sends it (before any DNAT).
    pub dst: IpAddr,
    /// Destination port, as the client sends it.
    pub dport: u16,
    /// Source address, when known.
    pub src: Option<IpAddr>,
    /// Source port, when known (a probe's: the flow is then exactly one connection).
    pub sport: Option<u16>,
}

fn fam(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

impl Filter {
    /// The source address, if it is of the destination's family (one of the other family
    /// cannot be matched: it is left out).
    fn src_same_family(&self) -> Option<IpAddr> {
        self.src.filter(|s| s.is_ipv4() == self.dst.is_ipv4())
    }

    /// The nft match of the flow's original direction.
    fn match_original(&self) -> String {
        let mut s = format!("{} daddr {}", fam(self.dst), self.dst);
        if let Some(src) = self.src_same_family() {
            let _ = write!(s, " {} saddr {src}", fam(src));
        }
        let _ = write!(s, " meta l4proto {} th dport {}", self.proto, self.dport);
        if let Some(p) = self.sport {
            let _ = write!(s, " th sport {p}");
        }
        s
    }

    /// The nft match of the flow's replies (conntrack's original tuple of the connection).
    fn match_reply(&self) -> String {
        let mut s = format!(
            "ct direction reply meta l4proto {} ct original {} daddr {}",
            self.proto,
            fam(self.dst),
            self.dst
        );
        if let Some(src) = self.src_same_family() {
            let _ = write!(s, " ct original {} saddr {src}", fam(src));
        }
        let _ = write!(s, " ct original proto-dst {}", self.dport);
        if let Some(p) = self.sport {
            let _ = write!(s, " ct original proto-src {p}");
        }
        s
    }

    /// Whether a packet header belongs to the original direction of this flow.
    pub fn is_original(&self, h: &Header) -> bool {
        h.dst == self.dst && h.dport == self.dport && self.src.is_none_or(|s| s == h.src)
    }

    /// `tcp 198.18.0.2 → 198.18.0.1:8080` for people.
    pub fn text(&self) -> String {
        let src = match (self.src_same_family(), self.sport) {
            (Some(a), Some(p)) => format!("{} ", sock(a, p)),
            (Some(a), None) => format!("{a} "),
            (None, Some(p)) => format!("*:{p} "),
            (None, None) => String::new(),
        };
        format!("{} {src}→ {}", self.proto, sock(self.dst, self.dport))
    }
}

/// `a:p`, `[a]:p` for IPv6.
fn sock(a: IpAddr, p: u16) -> String {
    std::net::SocketAddr::new(a, p).to_string()
}

/// The script that creates trace `id`'s table: four chains, one marking rule each, limited to
/// `packets` per direction (at most [`MAX_PACKETS`]). One `nft -f -` transaction.
pub fn table_script(id: &str, f: &Filter, packets: u32) -> String {
    let t = format!("inet {}", table_name(id));
    let n = packets.clamp(1, MAX_PACKETS);
    let mut s = String::new();
    let _ = writeln!(s, "add table {t} {{ comment \"{MARKER}\"; }}");
    for (chain, hook, prio, m) in [
        ("mark_in", "prerouting", MARK_PRIORITY, f.match_original()),
        ("mark_out", "output", MARK_PRIORITY, f.match_original()),
        ("reply_in", "prerouting", REPLY_PRIORITY, f.match_reply()),
        ("reply_out", "output", REPLY_PRIORITY, f.match_reply()),
    ] {
        let _ = writeln!(
            s,
            "add chain {t} {chain} {{ type filter hook {hook} priority {prio}; policy accept; }}"
        );
        let _ = writeln!(
            s,
            "add rule {t} {chain} {m} limit rate {n}/minute burst {n} packets meta nftrace set 1 comment \"berth trace {id}\""
        );
    }
    s
}

/// The script that removes a trace table.
pub fn delete_script(table: &str) -> String {
    format!("delete table inet {table}\n")
}

// ------------------------------------------------------------------------------ events

/// What kind of trace event (`NFT_TRACETYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A rule matched (`NFT_TRACETYPE_RULE`).
    Rule,
    /// The end of a chain was reached (`NFT_TRACETYPE_RETURN`).
    Return,
    /// A base chain's policy decided (`NFT_TRACETYPE_POLICY`).
    Policy,
    /// Anything else.
    Other,
}

impl EventKind {
    /// From `NFTA_TRACE_TYPE`.
    pub fn from_code(c: u32) -> EventKind {
        match c {
            1 => EventKind::Policy,
            2 => EventKind::Return,
            3 => EventKind::Rule,
            _ => EventKind::Other,
        }
    }
}

/// One `NFT_MSG_TRACE` event, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `NFTA_TRACE_ID`: the same for every event of one packet.
    pub id: u32,
    /// The table's family (`inet`, `ip`, `bridge`, …).
    pub family: String,
    /// `NFTA_TRACE_TABLE`.
    pub table: String,
    /// `NFTA_TRACE_CHAIN`.
    pub chain: String,
    /// `NFTA_TRACE_RULE_HANDLE`, for a rule that matched.
    pub handle: Option<u64>,
    /// `NFTA_TRACE_TYPE`.
    pub kind: Option<EventKind>,
    /// `NFTA_VERDICT_CODE` (`NF_DROP` 0, `NF_ACCEPT` 1, `NFT_CONTINUE` -1, `NFT_JUMP` -3, …).
    pub verdict: Option<i32>,
    /// `NFTA_VERDICT_CHAIN`: the target of a jump or goto.
    pub target: Option<String>,
    /// `NFTA_TRACE_POLICY`: a base chain's policy verdict.
    pub policy: Option<u32>,
    /// `NFTA_TRACE_IIF`.
    pub iif: Option<u32>,
    /// `NFTA_TRACE_OIF`.
    pub oif: Option<u32>,
    /// `NFTA_TRACE_NFPROTO` (2 IPv4, 10 IPv6).
    pub nfproto: Option<u32>,
    /// `NFTA_TRACE_MARK`.
    pub mark: Option<u32>,
    /// `NFTA_TRACE_NETWORK_HEADER`, raw.
    #[serde(skip)]
    pub network: Vec<u8>,
    /// `NFTA_TRACE_TRANSPORT_HEADER`, raw.
    #[serde(skip)]
    pub transport: Vec<u8>,
}

/// The family name of an `nfgenmsg` family byte.
pub fn family_name(f: u8) -> String {
    match f {
        1 => "inet".into(),
        2 => "ip".into(),
        3 => "arp".into(),
        5 => "netdev".into(),
        7 => "bridge".into(),
        10 => "ip6".into(),
        n => format!("family{n}"),
    }
}

/// A verdict code for people.
pub fn verdict_text(code: i32) -> &'static str {
    match code {
        0 => "drop",
        1 => "accept",
        2 => "stolen",
        3 => "queue",
        4 => "repeat",
        5 => "stop",
        -1 => "continue",
        -2 => "break",
        -3 => "jump",
        -4 => "goto",
        -5 => "return",
        _ => "unknown",
    }
}

impl Event {
    /// The verdict this event reports (a policy's for a policy event).
    pub fn verdict_code(&self) -> Option<i32> {
        match self.kind {
            Some(EventKind::Policy) => self.policy.map(|p| p as i32).or(self.verdict),
            _ => self.verdict,
        }
    }

    /// Whether the packet was dropped here.
    pub fn is_drop(&self) -> bool {
        self.verdict_code() == Some(0)
    }
}

/// The addresses and ports of a packet, from the trace's copy of its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port (0 without ports).
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
}

impl Header {
    /// `tcp 198.18.0.2:41000 → 198.18.0.1:8080 [SYN]`.
    pub fn text(&self) -> String {
        let p = match self.proto {
            6 => "tcp",
            17 => "udp",
            132 => "sctp",
            1 | 58 => "icmp",
            _ => "ip",
        };
        let mut s = format!(
            "{p} {} → {}",
            sock(self.src, self.sport),
            sock(self.dst, self.dport)
        );
        if self.proto == 6 {
            let _ = write!(s, " [{}]", tcp_flags_text(self.tcp_flags));
        }
        s
    }
}

/// TCP flags as `SYN,ACK`.
fn tcp_flags_text(f: u8) -> String {
    let names = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join(",")
}

/// Decodes the network and transport headers a trace event carries; `None` when too short.
pub fn decode(network: &[u8], transport: &[u8]) -> Option<Header> {
    let version = network.first()? >> 4;
    let (proto, src, dst, l4) = match version {
        4 => {
            let ihl = usize::from(network[0] & 0x0f) * 4;
            let b = network.get(..20)?;
            let src = IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19]));
            (b[9], src, dst, network.get(ihl..).unwrap_or(&[]))
        }
        6 => {
            let b = network.get(..40)?;
            let s: [u8; 16] = b[8..24].try_into().ok()?;
            let d: [u8; 16] = b[24..40].try_into().ok()?;
            (
                b[6],
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                network.get(40..).unwrap_or(&[]),
            )
        }
        _ => return None,
    };
    // The kernel copies the transport header separately; the network copy may hold it too.
    let t = if transport.is_empty() { l4 } else { transport };
    let (sport, dport) = match (proto, t.get(..4)) {
        (6 | 17 | 132, Some(p)) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        _ => (0, 0),
    };
    let tcp_flags = if proto == 6 {
        t.get(13).copied().unwrap_or(0)
    } else {
        0
    };
    Some(Header {
        proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags,
    })
}

// ------------------------------------------------------------------------------ rule set

/// One rule as `nft -a list ruleset` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleText {
    /// The rule without its `comment` and handle.
    pub text: String,
    /// Its comment, if any.
    pub comment: Option<String>,
}

/// Rules by (family, table, chain, handle), and each chain's hook line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Rules.
    pub rules: BTreeMap<(String, String, String, u64), RuleText>,
    /// `type filter hook forward priority filter; policy accept;` by (family, table, chain).
    pub hooks: BTreeMap<(String, String, String), String>,
}

impl Rules {
    /// The rule an event names.
    pub fn get(&self, e: &Event) -> Option<&RuleText> {
        self.rules.get(&(
            e.family.clone(),
            e.table.clone(),
            e.chain.clone(),
            e.handle?,
        ))
    }

    /// The hook of a base chain (`forward`), or `None` for a regular chain.
    pub fn hook(&self, family: &str, table: &str, chain: &str) -> Option<String> {
        let line = self
            .hooks
            .get(&(family.to_string(), table.to_string(), chain.to_string()))?;
        let mut words = line.split_whitespace();
        words.find(|w| *w == "hook")?;
        words.next().map(|w| w.trim_end_matches(';').to_string())
    }
}

/// Parses the text of `nft -a list ruleset` (or of one table): every rule with its handle and
/// comment, and every base chain's `type … hook …` line. Set and map bodies are skipped.
pub fn parse_ruleset(text: &str) -> Rules {
    let mut out = Rules::default();
    let (mut family, mut table, mut chain) = (String::new(), String::new(), None::<String>);
    let mut depth = 0usize;
    for raw in text.lines() {
        let line = raw.trim();
        let opens = line.ends_with('{') || line.contains("{ #");
        if let Some(rest) = line.strip_prefix("table ") {
            let mut w = rest.split_whitespace();
            family = w.next().unwrap_or_default().to_string();
            table = w.next().unwrap_or_default().to_string();
            chain = None;
            depth = 1;
            continue;
        }
        if depth == 1 {
            if let Some(rest) = line.strip_prefix("chain ") {
                chain = rest.split_whitespace().next().map(str::to_string);
                depth = 2;
                continue;
            }
            if opens {
                // a set, map, flowtable…: skip its body
                chain = None;
                depth = 2;
                continue;
            }
        }
        if line == "}" || line.starts_with("}") {
            depth = depth.saturating_sub(1);
            if depth <= 1 {
                chain = None;
            }
            continue;
        }
        let Some(c) = chain.clone().filter(|_| depth == 2) else {
            continue;
        };
        if line.starts_with("type ") {
            out.hooks
                .insert((family.clone(), table.clone(), c), line.to_string());
            continue;
        }
        let Some((body, handle)) = line.rsplit_once("# handle ") else {
            continue;
        };
        let Ok(handle) = handle.trim().parse::<u64>() else {
            continue;
        };
        let body = body.trim();
        let (text, comment) = match body.rfind(" comment \"") {
            Some(i) if body.ends_with('"') => (
                body[..i].trim().to_string(),
                Some(body[i + 10..body.len() - 1].to_string()),
            ),
            _ => (body.to_string(), None),
        };
        out.rules.insert(
            (family.clone(), table.clone(), c, handle),
            RuleText { text, comment },
        );
    }
    out
}

// ------------------------------------------------------------------------------ the world

/// A berth network, as the journey names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// Name.
    pub name: String,
    /// Its bridge.
    pub bridge: String,
    /// `--internal`.
    pub internal: bool,
}

/// A container's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The container's name.
    pub container: String,
    /// The network's name.
    pub network: String,
    /// The host side of its veth (the bridge port).
    pub host_ifname: String,
    /// Its interface inside the container (`eth0`).
    pub ifname: String,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
}

/// What berth knows of the world the packet crosses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// Interface names by index, in berthd's namespace.
    pub links: BTreeMap<u32, String>,
    /// Berth's networks.
    pub networks: Vec<NetInfo>,
    /// Every endpoint of every container.
    pub endpoints: Vec<EndpointInfo>,
    /// Who sends (`the host`, `container client`, `netns /run/netns/x`, `any source`).
    pub vantage: String,
    /// The overlay networks' namespaces the trace looked into.
    #[serde(default)]
    pub overlays: Vec<OverlayInfo>,
}

impl World {
    fn net_of_bridge(&self, ifname: &str) -> Option<&NetInfo> {
        self.networks.iter().find(|n| n.bridge == ifname)
    }

    fn endpoint_of_addr(&self, a: IpAddr) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.addrs.contains(&a))
    }

    fn endpoint_of_port(&self, ifname: &str) -> Option<&EndpointInfo> {
        self.endpoints.iter().find(|e| e.host_ifname == ifname)
    }

    /// `uplink`, `berth-1a2b (bridge of network web)`, `vethX (container api on web)`.
    fn describe_if(&self, ifname: &str) -> String {
        if let Some(o) = overlay::uplink_of(self, Some(ifname)) {
            format!("{ifname} (uplink of overlay network {})", o.network)
        } else if let Some(n) = self.net_of_bridge(ifname) {
            format!("{ifname} (bridge of network {})", n.name)
        } else if let Some(e) = self.endpoint_of_port(ifname) {
            format!("{ifname} (container {} on {})", e.container, e.network)
        } else {
            ifname.to_string()
        }
    }
}

// ------------------------------------------------------------------------------ the journey

/// One event of a packet, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// `inet berth forward`.
    pub chain: String,
    /// The hook (`prerouting`, `forward`, …) when the chain is a base chain.
    pub hook: Option<String>,
    /// The rule's handle, for a rule.
    pub handle: Option<u64>,
    /// The rule, as nft prints it (without the comment).
    pub rule: Option<String>,
    /// Its comment (berth's rules all have one: the reason they exist).
    pub comment: Option<String>,
    /// `accept`, `drop`, `jump user`, `continue`, `return (end of chain)`, `policy accept`.
    pub verdict: String,
    /// The berth object behind it, when there is one.
    pub cause: Option<String>,
}

/// One traced packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// The kernel's trace id.
    pub id: u32,
    /// `original` (client → server) or `reply`.
    pub direction: String,
    /// Its headers as they arrived (before NAT).
    pub header: Option<Header>,
    /// Its headers at its last traced step (after NAT), when different.
    pub translated: Option<Header>,
    /// The interface it came in on.
    pub iif: Option<String>,
    /// The interface it was routed out of.
    pub oif: Option<String>,
    /// Every step (the trace table's own marking rule left out).
    pub steps: Vec<Step>,
    /// Whether a rule or policy dropped it.
    pub dropped: bool,
    /// The overlay network whose namespace it was seen in; `None`: berthd's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
}

/// A drop, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drop {
    /// `inet berth forward`.
    pub chain: String,
    /// The rule (or `policy drop`).
    pub rule: String,
    /// Its handle.
    pub handle: Option<u64>,
    /// Its comment.
    pub comment: Option<String>,
    /// Why it exists, in berth's terms.
    pub cause: String,
    /// What would allow the flow.
    pub fix: Option<String>,
}

/// One hop of the journey, as in the seed's sequence diagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Who hands the packet on (a participant).
    pub from: String,
    /// To whom.
    pub to: String,
    /// What happens.
    pub what: String,
    /// Whether it was observed in the kernel's trace (`true`) or inferred from berth's state
    /// and the traced reply (`false`).
    pub traced: bool,
}

/// The whole journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journey {
    /// The flow traced.
    pub flow: String,
    /// Who sent.
    pub from: String,
    /// One line: delivered, refused, dropped, not seen.
    pub result: String,
    /// Whether the flow got through to its destination.
    pub delivered: bool,
    /// The NAT seen (`DNAT 198.18.0.1:8080 → 10.1.0.2:80, port published by container web`).
    pub nat: Option<String>,
    /// The conntrack entry, when one was read.
    pub conntrack: Option<String>,
    /// The kernel's routing decision for the flow's first packet (`ip route get`, after NAT),
    /// when it was asked ([`route_query`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The drop, if the flow was dropped.
    pub drop: Option<Drop>,
    /// The hops in order.
    pub hops: Vec<Hop>,
    /// Every traced packet with its steps.
    pub packets: Vec<Packet>,
    /// What the probe saw, if one was sent (`connected`, `refused`, `timeout`).
    pub probe: Option<String>,
}

/// A header's addresses and ports.
type Tuple = (IpAddr, u16, IpAddr, u16);

fn tuple(h: &Header) -> Tuple {
    (h.src, h.sport, h.dst, h.dport)
}

/// Groups events by packet (trace id, in order of arrival) and keeps the packets that `table`
/// (this trace's) marked — whose marking rule matched: another trace's packet crosses this
/// trace's chains too (their end-of-chain and policy events name this table), and is not ours.
///
/// The kernel derives a packet's trace id from the packet's hash, which may be computed only
/// after the first chains ran (a reply coming out of a veth): the later events of that packet
/// then carry another id. Such a group, unmarked but with the addresses and ports a marked
/// packet of this trace had (before or after NAT, either direction), is the continuation of the
/// last packet that ended with that header, and is merged into it.
pub fn packets_of(events: &[Event], table: &str) -> Vec<(u32, Vec<Event>)> {
    // The kernel reuses ids (they hash the packet's buffer address): a packet ends where this
    // trace's marking rule matches again under its id.
    let marks = |e: &Event| e.table == table && e.handle.is_some();
    let mut groups: Vec<(u32, Vec<Event>)> = Vec::new();
    let mut current: BTreeMap<u32, usize> = BTreeMap::new();
    for e in events {
        match current.get(&e.id) {
            Some(&i) if !(marks(e) && groups[i].1.iter().any(marks)) => groups[i].1.push(e.clone()),
            _ => {
                groups.push((e.id, vec![e.clone()]));
                current.insert(e.id, groups.len() - 1);
            }
        }
    }
    let headers = |evs: &[Event]| -> Vec<Header> {
        evs.iter()
            .filter_map(|e| decode(&e.network, &e.transport))
            .collect()
    };
    let mut ours: std::collections::BTreeSet<Tuple> = std::collections::BTreeSet::new();
    let mut out: Vec<(u32, Vec<Event>)> = Vec::new();
    for (id, evs) in groups {
        let hs = headers(&evs);
        if evs.iter().any(marks) {
            for h in &hs {
                ours.insert(tuple(h));
                ours.insert((h.dst, h.dport, h.src, h.sport));
            }
            out.push((id, evs));
            continue;
        }
        let Some(first) = hs.first() else {
            continue;
        };
        if !ours.contains(&tuple(first)) {
            continue;
        }
        let chains = |p: &[Event]| -> Vec<(String, String, String)> {
            p.iter()
                .map(|e| (e.family.clone(), e.table.clone(), e.chain.clone()))
                .collect()
        };
        let mine = chains(&evs);
        let prev = out.iter_mut().rev().find(|(_, p)| {
            headers(p).last().is_some_and(|l| tuple(l) == tuple(first))
                && !chains(p).iter().any(|c| mine.contains(c))
        });
        match prev {
            Some((_, p)) => p.extend(evs),
            None => out.push((id, evs)),
        }
    }
    out
}

/// Is this one of berth's own chains (`table inet berth`)?
fn is_berth(e: &Event) -> bool {
    e.family == "inet" && e.table == "berth"
}

/// What a step of berth's own rules means here, in berth's terms.
fn cause_of(e: &Event, r: Option<&RuleText>, p: &Packet, w: &World) -> Option<String> {
    if !is_berth(e) {
        return None;
    }
    let c = r.and_then(|r| r.comment.as_deref())?;
    let oif_net = p.oif.as_deref().and_then(|o| w.net_of_bridge(o));
    let iif_net = p.iif.as_deref().and_then(|i| w.net_of_bridge(i));
    let dst = p.translated.or(p.header).map(|h| h.dst);
    let to = dst
        .and_then(|d| w.endpoint_of_addr(d))
        .map(|ep| format!("container {} on network {}", ep.container, ep.network));
    match c {
        rule::PUBLISHED => to.map(|t| format!("a published port of {t}")),
        rule::OUT => iif_net.map(|n| format!("network {} may connect out", n.name)),
        rule::SAME_BRIDGE => iif_net.map(|n| format!("traffic within network {}", n.name)),
        rule::REPLIES => to.map(|t| format!("a reply to a connection {t} opened")),
        rule::DIRECT => oif_net.map(|n| format!("network {} has allow_direct=true", n.name)),
        _ => None,
    }
}

/// Why a drop happened and what would allow the flow.
fn explain_drop(e: &Event, r: Option<&RuleText>, p: &Packet, w: &World) -> Drop {
    let chain = format!("{} {} {}", e.family, e.table, e.chain);
    let rule_text = match (e.kind, r) {
        (Some(EventKind::Policy), _) => "policy drop".to_string(),
        (_, Some(r)) => r.text.clone(),
        _ => format!("handle {}", e.handle.unwrap_or(0)),
    };
    let comment = r.and_then(|r| r.comment.clone());
    let h = p.translated.or(p.header);
    let src_ep = h.and_then(|h| w.endpoint_of_addr(h.src));
    let dst_ep = h.and_then(|h| w.endpoint_of_addr(h.dst));
    let iif_net = p.iif.as_deref().and_then(|i| w.net_of_bridge(i));
    let oif_net = p.oif.as_deref().and_then(|o| w.net_of_bridge(o));
    let port = h.map(|h| h.dport).unwrap_or(0);
    let proto = h.map_or("tcp", |h| if h.proto == 17 { "udp" } else { "tcp" });
    let (cause, fix) = if is_berth(e) && e.chain == "user" {
        (
            format!(
                "dropped by your rule in chain user: {rule_text} (berth never adds rules there)"
            ),
            Some(format!(
                "if the flow should pass: nft delete rule inet berth user handle {}",
                e.handle.unwrap_or(0)
            )),
        )
    } else if is_berth(e) {
        match comment.as_deref().unwrap_or("") {
            rule::ISOLATION => {
                let a = iif_net.map_or("?", |n| n.name.as_str());
                let b = oif_net.map_or("?", |n| n.name.as_str());
                let fix = match src_ep {
                    Some(s) => format!("berth network connect {b} {}", s.container),
                    None => format!("connect the client to network {b}"),
                };
                (format!("networks {a} and {b} are isolated"), Some(fix))
            }
            rule::INTERNAL_IN => {
                let b = oif_net.map_or("?", |n| n.name.as_str());
                let fix = match src_ep {
                    Some(s) => format!("berth network connect {b} {}", s.container),
                    None => format!(
                        "nothing from outside reaches an internal network; publish the port of a container on a network that is not internal (-p HOSTPORT:{port})"
                    ),
                };
                (
                    format!("network {b} is internal: nothing is routed into it"),
                    Some(fix),
                )
            }
            rule::INTERNAL_OUT => {
                let a = iif_net.map_or("?", |n| n.name.as_str());
                let fix = src_ep.map(|s| {
                    format!(
                        "connect container {} to a network that is not internal: berth network connect NETWORK {}",
                        s.container, s.container
                    )
                });
                (
                    format!("network {a} is internal: nothing is routed out of it"),
                    fix,
                )
            }
            rule::ICC_OFF => {
                let a = iif_net.map_or("?", |n| n.name.as_str());
                (
                    format!("network {a} has enable_icc=false: its containers do not talk to each other"),
                    None,
                )
            }
            rule::NOT_FROM_OUTSIDE => {
                let what = dst_ep.map_or_else(
                    || "a container address".to_string(),
                    |d| format!("container {} on network {}", d.container, d.network),
                );
                let fix = dst_ep.map(|d| {
                    format!(
                        "publish the port: berth run -p HOSTPORT:{port}/{proto} … {} (then connect to a host address), or create network {} with -o berth.network.allow_direct=true",
                        d.container, d.network
                    )
                });
                (
                    format!("{what} is not reachable from outside unless a port is published"),
                    fix,
                )
            }
            rule::GUARD4 | rule::GUARD6 => (
                "forwarding that does not involve a berth network stays off (it was off before berth turned it on)".into(),
                None,
            ),
            c if c.starts_with("loopback addresses never arrive") => (
                "a loopback address arrived from outside (moby#45610): 127.0.0.1-published ports are for the host only".into(),
                Some("publish on an address of the host that the client can reach (-p HOSTPORT:PORT)".into()),
            ),
            c => (format!("berth's rule: {c}"), None),
        }
    } else if e.family == "bridge" && e.table == "berth" {
        (
            format!(
                "berth's anti-spoofing: {} (a container may send only from its own addresses and MAC)",
                comment.as_deref().unwrap_or("guard")
            ),
            None,
        )
    } else {
        let what = if e.kind == Some(EventKind::Policy) {
            format!("the policy of chain {chain}")
        } else {
            format!("a rule in chain {chain}: {rule_text}")
        };
        (
            format!("dropped by {what}, which is not berth's"),
            Some(format!(
                "change that table (nft -a list table {} {})",
                e.family, e.table
            )),
        )
    };
    Drop {
        chain,
        rule: rule_text,
        handle: e.handle,
        comment,
        cause,
        fix,
    }
}

/// A dropped packet's steps end at the drop; returns the event that dropped it (not one of
/// this trace's own chains'), `None` for a packet that was not dropped.
fn truncate_at_drop<'a>(p: &mut Packet, evs: &'a [Event], table: &str) -> Option<&'a Event> {
    if !p.dropped {
        return None;
    }
    let at = p
        .steps
        .iter()
        .position(|s| s.verdict == "drop" || s.verdict == "policy drop")
        .map_or(p.steps.len(), |i| i + 1);
    p.steps.truncate(at);
    evs.iter()
        .filter(|e| e.table != table)
        .find(|e| e.is_drop())
}

/// Builds one packet from its events.
fn packet(id: u32, evs: &[Event], table: &str, f: &Filter, rules: &Rules, w: &World) -> Packet {
    packet_with(id, evs, table, f, rules, w, &w.links)
}

/// [`packet`] with the interface names of the namespace the events came from.
fn packet_with(
    id: u32,
    evs: &[Event],
    table: &str,
    f: &Filter,
    rules: &Rules,
    w: &World,
    links: &BTreeMap<u32, String>,
) -> Packet {
    let name = |idx: Option<u32>| {
        idx.filter(|i| *i != 0)
            .map(|i| links.get(&i).cloned().unwrap_or_else(|| format!("if{i}")))
    };
    let with_hdr: Vec<Header> = evs
        .iter()
        .filter_map(|e| decode(&e.network, &e.transport))
        .collect();
    let header = with_hdr.first().copied();
    let last = with_hdr.last().copied();
    let translated = match (header, last) {
        (Some(a), Some(b))
            if a != b && (a.src, a.dst, a.sport, a.dport) != (b.src, b.dst, b.sport, b.dport) =>
        {
            Some(b)
        }
        _ => None,
    };
    let direction = match header {
        Some(h) if !f.is_original(&h) => "reply",
        _ => "original",
    };
    let iif = name(evs.iter().find_map(|e| e.iif.filter(|i| *i != 0)));
    let oif = name(evs.iter().rev().find_map(|e| e.oif.filter(|i| *i != 0)));
    let mut p = Packet {
        id,
        direction: direction.into(),
        header,
        translated,
        iif,
        oif,
        steps: Vec::new(),
        dropped: false,
        overlay: None,
    };
    for e in evs.iter().filter(|e| e.table != table) {
        let r = rules.get(e);
        let verdict = match e.kind {
            Some(EventKind::Policy) => {
                format!("policy {}", verdict_text(e.verdict_code().unwrap_or(1)))
            }
            Some(EventKind::Return) => "return (end of chain)".into(),
            _ => {
                let v = e.verdict.map_or("?", verdict_text);
                match &e.target {
                    Some(t) => format!("{v} {t}"),
                    None if e.handle.is_none() && v == "continue" => "end of chain".into(),
                    None => v.to_string(),
                }
            }
        };
        let step = Step {
            chain: format!("{} {} {}", e.family, e.table, e.chain),
            hook: rules.hook(&e.family, &e.table, &e.chain),
            handle: e.handle,
            rule: r.map(|r| r.text.clone()),
            comment: r.and_then(|r| r.comment.clone()),
            verdict,
            cause: cause_of(e, r, &p, w),
        };
        p.steps.push(step);
        if e.is_drop() {
            p.dropped = true;
        }
    }
    p
}

/// The journey of a traced flow. `events` in arrival order (any number of packets and other
/// traces' events mixed in), `table` this trace's table, `probe` what the probe saw (if one was
/// sent), `conntrack` the entry of the flow (`orig ⇄ reply`), if one was read.
pub fn journey(
    events: &[Event],
    table: &str,
    f: &Filter,
    rules: &Rules,
    w: &World,
    probe: Option<&str>,
    conntrack: Option<String>,
) -> Journey {
    journey_with(events, table, f, rules, w, probe, conntrack, &[])
}

/// [`journey`] with what the trace saw inside overlay namespaces (`ns`, one per network whose
/// namespace it looked into; their networks described in [`World::overlays`]).
#[allow(clippy::too_many_arguments)]
pub fn journey_with(
    events: &[Event],
    table: &str,
    f: &Filter,
    rules: &Rules,
    w: &World,
    probe: Option<&str>,
    conntrack: Option<String>,
    ns: &[NsTrace],
) -> Journey {
    let host: Vec<(Packet, Option<Drop>)> = packets_of(events, table)
        .iter()
        .map(|(id, evs)| {
            let mut p = packet(*id, evs, table, f, rules, w);
            let drop =
                truncate_at_drop(&mut p, evs, table).map(|e| explain_drop(e, rules.get(e), &p, w));
            (p, drop)
        })
        .collect();
    let inside: Vec<(Packet, Option<Drop>)> = ns
        .iter()
        .flat_map(|t| overlay::ns_packets(t, table, f, w))
        .collect();
    let drop = host
        .iter()
        .chain(inside.iter())
        .find_map(|(_, d)| d.clone());
    let host_orig = host
        .iter()
        .map(|(p, _)| p)
        .find(|p| p.direction == "original");
    let host_reply = host.iter().map(|(p, _)| p).find(|p| p.direction == "reply");
    let ns_orig = inside.iter().find(|(p, _)| p.direction == "original");
    let ns_reply = inside.iter().find(|(p, _)| p.direction == "reply");
    let orig = host_orig.or(ns_orig.map(|(p, _)| p));
    let reply = host_reply.or(ns_reply.map(|(p, _)| p));
    let nat = host_orig.and_then(|p| {
        let (a, b) = (p.header?, p.translated?);
        if a.dst == b.dst && a.dport == b.dport {
            return None;
        }
        let by = w
            .endpoint_of_addr(b.dst)
            .map(|e| {
                format!(
                    ", port published by container {} ({}/{})",
                    e.container,
                    b.dport,
                    proto_name(b.proto)
                )
            })
            .unwrap_or_default();
        Some(format!(
            "DNAT {} → {}{by}",
            sock(a.dst, a.dport),
            sock(b.dst, b.dport)
        ))
    });
    let delivered = drop.is_none()
        && (reply.is_some()
            || probe.is_some_and(|o| o == "connected" || o == "refused" || o == "answered"));
    let seen = !host.is_empty() || !inside.is_empty();
    let result = if let Some(d) = &drop {
        format!("DROPPED in {}: {}", d.chain, d.cause)
    } else if !seen {
        "no packet of this flow was seen in this host's network stack (is the address routed here? is the client sending?)".into()
    } else if let Some(r) = reply {
        let h = r.header;
        let refused = h.is_some_and(|h| h.proto == 6 && h.tcp_flags & 0x04 != 0);
        let to = orig
            .and_then(|o| o.translated.or(o.header))
            .map(|h| sock(h.dst, h.dport))
            .unwrap_or_default();
        if refused {
            format!("reached {to}, refused: nothing listens there (TCP reset)")
        } else {
            format!("delivered to {to} and answered")
        }
    } else {
        match probe {
            Some(p) => format!("no reply traced (probe: {p}); no rule in this host dropped it"),
            None => "traced, no reply seen".into(),
        }
    };
    let host_drop = host.iter().find_map(|(_, d)| d.as_ref());
    let mut hops = hops(host_orig, host_reply, host_drop, w, nat.as_deref());
    // The overlay namespace's legs: before the host's hops when the flow came up the uplink
    // (a container of an overlay network connecting out), after them when the host routed it
    // down an uplink, alone when the host's stack never saw it (container to container).
    let up_in = overlay::uplink_of(w, host_orig.and_then(|p| p.iif.as_deref()));
    let down_out = overlay::uplink_of(w, host_orig.and_then(|p| p.oif.as_deref()));
    // The first packet of direction `dir` seen in network `net`'s namespace.
    let in_ns = |net: &str, dir: &str| {
        inside
            .iter()
            .find(|(p, _)| p.direction == dir && p.overlay.as_deref() == Some(net))
    };
    let leg = |x: Option<&(Packet, Option<Drop>)>| {
        x.map(|(p, d)| overlay::ns_hops(p, d.as_ref(), w))
            .unwrap_or_default()
    };
    if host_orig.is_none() {
        hops = leg(ns_orig);
        if ns_orig.is_some_and(|(p, _)| !p.dropped) {
            hops.extend(leg(ns_reply));
        }
    } else if let Some(o) = up_in {
        let mut before = leg(in_ns(&o.network, "original"));
        if !before.is_empty() {
            if let Some(h) = hops.first_mut() {
                h.from = OVERLAY_BRIDGE.into();
            }
            before.append(&mut hops);
            hops = before;
        }
        hops.extend(leg(in_ns(&o.network, "reply")));
    } else if let Some(o) = down_out {
        let there = in_ns(&o.network, "original");
        hops.extend(leg(there));
        if there.is_some_and(|(p, _)| !p.dropped) {
            hops.extend(leg(in_ns(&o.network, "reply")));
            if let Some(r) = host_reply {
                let after = host_orig.and_then(|p| p.translated.or(p.header));
                hops.push(Hop {
                    from: HOST.into(),
                    to: CLIENT.into(),
                    what: back_to_client(host_orig.and_then(|p| p.header), after, r, w),
                    traced: true,
                });
            }
        }
    }
    let mut packets: Vec<Packet> = host.into_iter().map(|(p, _)| p).collect();
    packets.extend(inside.into_iter().map(|(p, _)| p));
    Journey {
        flow: f.text(),
        from: w.vantage.clone(),
        result,
        delivered,
        nat,
        conntrack,
        route: None,
        drop,
        hops,
        packets,
        probe: probe.map(str::to_string),
    }
}

/// What to ask the kernel's routing table about a journey (`ip route get DST from SRC iif
/// IIF`): the first original packet's destination after NAT, its source, and the interface it
/// came in on (none for a packet the host itself sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteQuery {
    /// Destination, after DNAT.
    pub dst: IpAddr,
    /// Source as it arrived.
    pub src: IpAddr,
    /// Input interface, if the packet came in on one.
    pub iif: Option<String>,
}

/// The [`RouteQuery`] of `j`, if a packet of the flow was traced.
pub fn route_query(j: &Journey) -> Option<RouteQuery> {
    let p = j.packets.iter().find(|p| p.direction == "original")?;
    let first = p.header?;
    let after = p.translated.unwrap_or(first);
    Some(RouteQuery {
        dst: after.dst,
        src: first.src,
        iif: p.iif.clone().filter(|i| !i.is_empty()),
    })
}

fn proto_name(p: u8) -> &'static str {
    match p {
        17 => "udp",
        132 => "sctp",
        _ => "tcp",
    }
}

/// Participant names of the diagram.
const CLIENT: &str = "Client";
const HOST: &str = "Host stack";
const NAT: &str = "NAT";
const BRIDGE: &str = "Bridge";
const VETH: &str = "veth";
const CONT: &str = "Container";
const PROC: &str = "Process";

/// The decisive step of a hook: the last rule or policy with a final verdict in berth's chains
/// for it, or the last step.
fn decisive<'a>(p: &'a Packet, hooks: &[&str]) -> Option<&'a Step> {
    let steps = p
        .steps
        .iter()
        .filter(|s| {
            s.hook.as_deref().is_some_and(|h| hooks.contains(&h))
                || (s.chain == "inet berth user" && hooks.contains(&"forward"))
        })
        .filter(|s| {
            s.verdict == "accept" || s.verdict == "drop" || s.verdict.starts_with("policy")
        });
    let steps: Vec<&Step> = steps.collect();
    steps
        .iter()
        .rev()
        .find(|s| s.handle.is_some())
        .or(steps.last())
        .copied()
}

fn step_text(s: &Step) -> String {
    let mut t = format!("{}: ", s.chain);
    match (&s.comment, &s.rule) {
        (Some(c), _) => {
            let _ = write!(t, "rule \"{c}\"");
        }
        (None, Some(r)) => {
            let _ = write!(t, "rule `{r}`");
        }
        _ => {}
    }
    if s.handle.is_some() {
        let _ = write!(t, " (handle {})", s.handle.unwrap_or(0));
    }
    let _ = write!(t, " → {}", s.verdict);
    if let Some(c) = &s.cause {
        let _ = write!(t, "; {c}");
    }
    t
}

fn hops(
    orig: Option<&Packet>,
    reply: Option<&Packet>,
    drop: Option<&Drop>,
    w: &World,
    nat: Option<&str>,
) -> Vec<Hop> {
    let mut v = Vec::new();
    let mut hop = |from: &str, to: &str, what: String, traced: bool| {
        v.push(Hop {
            from: from.into(),
            to: to.into(),
            what,
            traced,
        })
    };
    let Some(o) = orig else {
        return v;
    };
    let h = o.header;
    let inn = o
        .iif
        .as_deref()
        .map(|i| format!(" (in on {})", w.describe_if(i)))
        .unwrap_or_else(|| " (sent by the host itself)".into());
    hop(
        CLIENT,
        HOST,
        format!(
            "{}{inn}",
            h.map_or_else(|| "packet".to_string(), |h| h.text())
        ),
        true,
    );
    // NAT on arrival (prerouting / output): a hop when a rule there matched or NAT happened.
    let pre = decisive(o, &["prerouting", "output"]).filter(|s| s.handle.is_some());
    let nat_hop = pre.is_some() || nat.is_some();
    if let Some(s) = pre {
        let what = match nat {
            Some(n) => format!("{} — {n}", step_text(s)),
            None => step_text(s),
        };
        hop(HOST, NAT, what, true);
    } else if let Some(n) = nat {
        hop(HOST, NAT, n.to_string(), true);
    }
    if let Some(d) = drop.filter(|_| o.dropped) {
        let at = if nat_hop { NAT } else { HOST };
        hop(at, at, dropped_text(d), true);
        return v;
    }
    let here = if nat_hop { NAT } else { HOST };
    let fwd = decisive(o, &["forward"]);
    let after = o.translated.or(o.header);
    let Some(oif) = o.oif.clone() else {
        if let Some(s) = fwd {
            hop(here, here, step_text(s), true);
        }
        return v;
    };
    let bridge_net = w.net_of_bridge(&oif);
    let fwd_text = fwd
        .map(|s| format!("{}; ", step_text(s)))
        .unwrap_or_default();
    let Some(net) = bridge_net else {
        hop(
            here,
            HOST,
            format!("{fwd_text}routed out of {}", w.describe_if(&oif)),
            true,
        );
        return v;
    };
    hop(
        here,
        BRIDGE,
        format!(
            "{fwd_text}routed out of {oif} (bridge of network {})",
            net.name
        ),
        true,
    );
    let ep = after.and_then(|a| w.endpoint_of_addr(a.dst));
    let Some(ep) = ep else {
        return v;
    };
    let addr = after.map(|a| sock(a.dst, a.dport)).unwrap_or_default();
    hop(
        BRIDGE,
        VETH,
        format!(
            "bridge port {} (container {}'s veth on {})",
            ep.host_ifname, ep.container, ep.network
        ),
        false,
    );
    hop(
        VETH,
        CONT,
        format!(
            "arrives at {} {addr} in container {}",
            ep.ifname, ep.container
        ),
        false,
    );
    let Some(r) = reply else {
        return v;
    };
    let rh = r.header;
    let refused = rh.is_some_and(|h| h.proto == 6 && h.tcp_flags & 0x04 != 0);
    if refused {
        hop(
            CONT,
            PROC,
            "nothing listens on that port: the kernel answers with a reset".into(),
            false,
        );
    } else {
        hop(
            CONT,
            PROC,
            format!("delivered to the process listening on {addr}"),
            false,
        );
        hop(PROC, CONT, "answers".into(), false);
    }
    hop(CONT, VETH, format!("leaves through {}", ep.ifname), false);
    hop(
        VETH,
        BRIDGE,
        format!("enters bridge {} on port {}", net.bridge, ep.host_ifname),
        false,
    );
    let back = decisive(r, &["forward"])
        .map(|s| format!("; {}", step_text(s)))
        .unwrap_or_default();
    hop(
        BRIDGE,
        HOST,
        format!(
            "{}{back}",
            rh.map_or_else(|| "reply".to_string(), |h| h.text())
        ),
        true,
    );
    hop(HOST, CLIENT, back_to_client(o.header, after, r, w), true);
    v
}

/// The last hop's text: the reply `r` leaves the host (un-NATed when the original packet's
/// destination `first` was translated to `after`).
fn back_to_client(first: Option<Header>, after: Option<Header>, r: &Packet, w: &World) -> String {
    let unnat = match (first, after) {
        (Some(a), Some(b)) if a.dst != b.dst || a.dport != b.dport => format!(
            "conntrack reverses the DNAT: source {} → {}; ",
            sock(b.dst, b.dport),
            sock(a.dst, a.dport)
        ),
        _ => String::new(),
    };
    let out = r
        .oif
        .as_deref()
        .map(|o| format!("out of {}", w.describe_if(o)))
        .unwrap_or_else(|| "delivered to the host's own socket".into());
    format!("{unnat}{out}")
}

/// A drop's hop text: `✗ DROPPED by CHAIN "COMMENT": CAUSE`.
fn dropped_text(d: &Drop) -> String {
    let rule = d
        .comment
        .as_ref()
        .map(|c| format!(" \"{c}\""))
        .unwrap_or_default();
    format!("✗ DROPPED by {}{rule}: {}", d.chain, d.cause)
}

// ------------------------------------------------------------------------------ rendering

/// The journey as text for people.
pub fn render_text(j: &Journey) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "trace {} from {}", j.flow, j.from);
    let _ = writeln!(s, "result: {}", j.result);
    if let Some(n) = &j.nat {
        let _ = writeln!(s, "NAT: {n}");
    }
    if let Some(c) = &j.conntrack {
        let _ = writeln!(s, "conntrack: {c}");
    }
    if let Some(r) = &j.route {
        let _ = writeln!(s, "route: {r}");
    }
    if let Some(p) = &j.probe {
        let _ = writeln!(s, "probe: {p}");
    }
    if let Some(d) = &j.drop {
        let _ = writeln!(
            s,
            "dropped by: {} {}{}",
            d.chain,
            match &d.comment {
                Some(c) => format!("\"{c}\""),
                None => format!("`{}`", d.rule),
            },
            d.handle
                .map(|h| format!(" (handle {h})"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "why: {}", d.cause);
        if let Some(f) = &d.fix {
            let _ = writeln!(s, "to allow it: {f}");
        }
    }
    if !j.hops.is_empty() {
        let _ = writeln!(s, "\njourney:");
        for (i, h) in j.hops.iter().enumerate() {
            let mark = if h.traced {
                ""
            } else {
                " (from berth's state)"
            };
            let _ = writeln!(s, "  {:>2}. {} → {}: {}{mark}", i + 1, h.from, h.to, h.what);
        }
    }
    for p in &j.packets {
        let _ = writeln!(
            s,
            "\npacket {:08x} ({}{}): {}{}{}",
            p.id,
            p.direction,
            p.overlay
                .as_deref()
                .map(|n| format!(", in overlay network {n}'s namespace"))
                .unwrap_or_default(),
            p.header.map_or_else(|| "?".to_string(), |h| h.text()),
            p.iif
                .as_deref()
                .map(|i| format!(", in {i}"))
                .unwrap_or_default(),
            p.oif
                .as_deref()
                .map(|o| format!(", out {o}"))
                .unwrap_or_default(),
        );
        if let Some(t) = p.translated {
            let _ = writeln!(s, "  after NAT: {}", t.text());
        }
        for st in &p.steps {
            let what = match (&st.rule, &st.comment) {
                (Some(r), Some(c)) => format!("{r}  # {c}"),
                (Some(r), None) => r.clone(),
                _ => String::new(),
            };
            let _ = writeln!(s, "  {:<28} {:<22} {}", st.chain, st.verdict, what);
        }
    }
    s
}

/// A mermaid participant id.
fn pid(name: &str) -> &'static str {
    match name {
        CLIENT => "C",
        HOST => "H",
        NAT => "N",
        BRIDGE => "B",
        VETH => "V",
        CONT => "K",
        OVERLAY_BRIDGE => "O",
        TUNNEL => "X",
        REMOTE => "R",
        _ => "P",
    }
}

/// Text safe inside a mermaid message (no `;`, `#` or line breaks).
fn mermaid_text(s: &str) -> String {
    s.replace([';', '#'], ",").replace('\n', " ")
}

/// The journey as a mermaid `sequenceDiagram`, like the seed's §6.
pub fn render_mermaid(j: &Journey) -> String {
    let mut s = String::from("sequenceDiagram\n");
    let mut seen: Vec<&str> = Vec::new();
    for h in &j.hops {
        for p in [h.from.as_str(), h.to.as_str()] {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
    }
    for p in &seen {
        let label = if *p == CLIENT {
            format!("Client ({})", j.from)
        } else {
            p.to_string()
        };
        let _ = writeln!(s, "    participant {} as {}", pid(p), mermaid_text(&label));
    }
    for h in &j.hops {
        let arrow = if h.traced { "->>" } else { "-->>" };
        let _ = writeln!(
            s,
            "    {}{arrow}{}: {}",
            pid(&h.from),
            pid(&h.to),
            mermaid_text(&h.what)
        );
    }
    if let Some(d) = &j.drop {
        let last = j.hops.last().map_or("H", |h| pid(&h.to));
        let _ = writeln!(s, "    Note over {last}: {}", mermaid_text(&d.cause));
        if let Some(f) = &d.fix {
            let _ = writeln!(s, "    Note over {last}: to allow it: {}", mermaid_text(f));
        }
    }
    s
}

#[cfg(test)]
mod tests;
