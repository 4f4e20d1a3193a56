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
//! 5. `iifname @bridges oifname @bridges drop`: isolation, one berth network never reaches
//!    another (Docker's `DOCKER-ISOLATION-STAGE-1/2`), published ports included (as in Docker).
//! 6. `oifname @bridges ct state established,related accept`: replies to connections containers
//!    opened.
//! 7. `oifname @bridges ct status dnat accept`: published ports (DNAT happens in `prerouting`).
//! 8. `oifname @bridges drop`: nothing else from outside reaches a container address.
//! 9. `iifname @bridges accept`: containers may open connections out.
//! 10. Only when the host had forwarding of a family off before berth enabled it:
//!     `meta nfproto ipv4 drop` / `meta nfproto ipv6 drop`. Enabling forwarding for berth must not
//!     turn the host into a router for anything else.
//!
//! `postrouting` masquerades traffic from `masq4`/`masq6` subnets (non-internal networks with
//! masquerade on) that leaves through an interface that is not a berth bridge.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use serde_json::Value;

use crate::model::{Driver, NetworkSpec};

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

/// Every set berth owns: name, nft type, whether it holds intervals, comment.
pub const SETS: [(&str, &str, bool, &str); 6] = [
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
];

/// Longest comment nft accepts on an element or rule.
const MAX_COMMENT: usize = 128;

/// Host state the static rules depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The host had IPv4 forwarding off before berth turned it on: IPv4 forwarding that does
    /// not involve berth must stay off, so the forward chain ends with `meta nfproto ipv4 drop`.
    pub forwarding_was_off: bool,
    /// Same for IPv6 (`net.ipv6.conf.all.forwarding`, turned on once a dual-stack network
    /// exists): the chain then ends with `meta nfproto ipv6 drop`.
    pub ipv6_forwarding_was_off: bool,
}

/// Makes a string safe inside an nft double-quoted string: quotes, backslashes and control
/// characters cannot be expressed there, so they become `_`; cut to nft's 128-byte limit.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
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
    out.push('"');
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
    let _ = writeln!(
        s,
        "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain {t} forward");
    let _ = writeln!(s, "flush chain {t} postrouting");

    let mut rule = |chain: &str, body: &str, comment: &str| {
        let _ = writeln!(s, "add rule {t} {chain} {body} comment {}", quote(comment));
    };
    rule("forward", "jump user", "administrator's rules first");
    rule(
        "forward",
        "iifname @icc_off oifname @icc_off drop",
        "enable_icc=false: no routed traffic between its containers",
    );
    rule(
        "forward",
        "iifname . oifname @same_bridge accept",
        "routed traffic staying on its network",
    );
    rule(
        "forward",
        "iifname @internal drop",
        "internal networks: nothing routed out",
    );
    rule(
        "forward",
        "oifname @internal drop",
        "internal networks: nothing routed in",
    );
    rule(
        "forward",
        "iifname @bridges oifname @bridges drop",
        "isolation: networks do not reach each other",
    );
    rule(
        "forward",
        "oifname @bridges ct state established,related accept",
        "replies to connections containers opened",
    );
    rule(
        "forward",
        "oifname @bridges ct status dnat accept",
        "published ports",
    );
    rule(
        "forward",
        "oifname @bridges drop",
        "container addresses are not reachable from outside unless published",
    );
    rule(
        "forward",
        "iifname @bridges accept",
        "containers may connect out",
    );
    // One rule per family: a host that already routed IPv4 keeps doing so even if berth had
    // to turn IPv6 forwarding on (and the other way round).
    if cfg.forwarding_was_off {
        rule(
            "forward",
            "meta nfproto ipv4 drop",
            "berth enabled ip_forward; forwarding that does not involve berth stays off",
        );
    }
    if cfg.ipv6_forwarding_was_off {
        rule(
            "forward",
            "meta nfproto ipv6 drop",
            "berth enabled IPv6 forwarding; forwarding that does not involve berth stays off",
        );
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
    s
}

/// Set elements, as nft text, with their comments: set name → element → comment.
///
/// Element text is what nft prints and accepts: `"br-web"` (quoted interface name),
/// `"br-web" . "br-web"` (concatenation), `10.1.0.0/24` (prefix), `10.1.0.5` (address),
/// `10.1.0.1-10.1.0.9` (range).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elements(pub BTreeMap<String, BTreeMap<String, String>>);

impl Elements {
    /// Adds one element (the first comment given for an element is kept).
    pub fn insert(&mut self, set: &str, element: String, comment: String) {
        self.0
            .entry(set.to_string())
            .or_default()
            .entry(element)
            .or_insert(comment);
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
pub fn desired_elements(networks: &[NetworkSpec]) -> Elements {
    let mut e = Elements::default();
    for (name, ..) in SETS {
        e.0.insert(name.to_string(), BTreeMap::new());
    }
    for net in networks {
        if net.driver != Driver::Bridge || !ifname_ok(&net.bridge) {
            continue;
        }
        let why = || format!("network {}", net.name);
        let br = quote(&net.bridge);
        e.insert(SET_BRIDGES, br.clone(), why());
        e.insert(SET_SAME_BRIDGE, format!("{br} . {br}"), why());
        if net.internal {
            e.insert(SET_INTERNAL, br.clone(), why());
        }
        if !net.icc {
            e.insert(SET_ICC_OFF, br.clone(), why());
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

/// Reads the elements of berth's sets from `nft -j list table inet berth` (or `list ruleset`)
/// output. Sets of other tables, unknown value shapes and malformed entries are skipped; a
/// missing `comment` reads as "".
pub fn parse_observed(json: &Value) -> Elements {
    let mut e = Elements::default();
    let Some(items) = json.get("nftables").and_then(Value::as_array) else {
        return e;
    };
    for item in items {
        let Some(set) = item.get("set") else { continue };
        let field = |k: &str| set.get(k).and_then(Value::as_str);
        if field("table") != Some("berth") || field("family").is_some_and(|f| f != "inet") {
            continue;
        }
        let Some(name) = field("name") else { continue };
        let ty = match set.get("type") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" . "),
            _ => String::new(),
        };
        let elems = e.0.entry(name.to_string()).or_default();
        for el in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (val, comment) = match el.get("elem") {
                Some(inner) => (
                    inner.get("val"),
                    inner.get("comment").and_then(Value::as_str).unwrap_or(""),
                ),
                None => (Some(el), ""),
            };
            if let Some(text) = val.and_then(|v| value_text(v, &ty)) {
                elems.insert(text, comment.to_string());
            }
        }
    }
    e
}

/// The nft script that turns `observed` into `desired`: `delete element` lines first (so a
/// subnet that moved between networks does not clash), then `add element` lines, one statement
/// per set. Only berth's own sets ([`SETS`]) are touched. An element whose comment changed (a
/// subnet handed from a removed network to a new one) is deleted and re-added in the same
/// transaction, so every comment keeps naming the element's current cause. Empty when nothing
/// differs.
pub fn diff_script(observed: &Elements, desired: &Elements) -> String {
    let empty = BTreeMap::new();
    let mut deletes = String::new();
    let mut adds = String::new();
    for (set, ..) in SETS {
        let have = observed.0.get(set).unwrap_or(&empty);
        let want = desired.0.get(set).unwrap_or(&empty);
        let gone: Vec<&str> = have
            .iter()
            .filter(|(k, c)| want.get(*k).is_none_or(|w| w != *c))
            .map(|(k, _)| k.as_str())
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                deletes,
                "delete element {TABLE} {set} {{ {} }}",
                gone.join(", ")
            );
        }
        let new: Vec<String> = want
            .iter()
            .filter(|(k, c)| have.get(*k).is_none_or(|h| h != *c))
            .map(|(k, c)| format!("{k} comment {}", quote(c)))
            .collect();
        if !new.is_empty() {
            let _ = writeln!(adds, "add element {TABLE} {set} {{ {} }}", new.join(", "));
        }
    }
    deletes + &adds
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting() {
        assert_eq!(quote("network web"), "\"network web\"");
        assert_eq!(quote("a\"b\\c\nd"), "\"a_b_c_d\"");
        assert_eq!(quote(&"x".repeat(200)).len(), 130);
        assert_eq!(quote(&"é".repeat(100)).len(), 128 + 2);
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
        assert!(
            parse_observed(&json!({"nftables": [{"set": 5}, {"set": {"elem": "x"}}]})).is_empty()
        );
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
}
