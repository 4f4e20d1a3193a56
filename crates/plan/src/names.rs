//! Names and ids: validation of user-given names, derivation of kernel interface names and MAC
//! addresses, and Docker's id/name lookup rules.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::error::PlanError;

/// Longest object (network/container) name berth accepts.
pub const MAX_NAME_LEN: usize = 64;

/// Longest Linux interface name in bytes (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Length of a short id as Docker prints it.
pub const SHORT_ID_LEN: usize = 12;

/// Checks a network or container name against Docker's rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`
/// and berth's length limit (1..=64 bytes).
///
/// `what` names the kind of object ("network", "container") for the message.
pub fn validate_name(what: &str, name: &str) -> Result<(), PlanError> {
    let bad = |reason: String| {
        Err(PlanError::Invalid(format!(
            "invalid {what} name {name:?}: {reason}"
        )))
    };
    let Some(first) = name.chars().next() else {
        return Err(PlanError::Invalid(format!("{what} name must not be empty")));
    };
    if name.len() > MAX_NAME_LEN {
        return bad(format!(
            "it is {} bytes long, the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return bad(format!(
            "it must start with a letter or digit, not {first:?} (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(format!(
            "character {c:?} is not allowed (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
        ));
    }
    Ok(())
}

/// Longest network name berth accepts, in bytes (dockerd has no limit; berth keeps names short
/// enough to print and to log).
pub const MAX_NETWORK_NAME_LEN: usize = 255;

/// The names dockerd keeps for its predefined networks (`default` is how a container asks for
/// the default bridge): none of them can be created.
pub const PREDEFINED_NETWORK_NAMES: [&str; 4] = ["bridge", "host", "none", "default"];

/// Checks a network name with dockerd's rules: anything but an empty or all-whitespace name
/// (`test 01` and `a.b/c` are valid), and not one of [`PREDEFINED_NETWORK_NAMES`] (403, with
/// dockerd's message). berth also refuses control characters (a newline in a name would forge a
/// line of `network ls` or of the log) and names over [`MAX_NETWORK_NAME_LEN`] bytes.
pub fn validate_network_name(name: &str) -> Result<(), PlanError> {
    if name.trim().is_empty() {
        return Err(PlanError::Invalid(format!(
            "invalid name: {name:?} (a network name must not be empty or only white space)"
        )));
    }
    if PREDEFINED_NETWORK_NAMES.contains(&name) {
        return Err(PlanError::Forbidden(format!(
            "operation is not permitted on predefined {name} network"
        )));
    }
    if name.len() > MAX_NETWORK_NAME_LEN {
        return Err(PlanError::Invalid(format!(
            "invalid network name: it is {} bytes long, berth's limit is {MAX_NETWORK_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(PlanError::Invalid(format!(
            "invalid network name {name:?}: control character {c:?} is not allowed"
        )));
    }
    Ok(())
}

/// Checks a Linux interface name: 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
///
/// berth also refuses quotes, backslashes and control characters: the kernel would take them,
/// but the name ends up quoted inside nftables rule text, where they cannot be expressed safely.
pub fn validate_ifname(name: &str) -> Result<(), PlanError> {
    let bad = |reason: String| {
        Err(PlanError::Invalid(format!(
            "invalid interface name {name:?}: {reason}"
        )))
    };
    if name.is_empty() {
        return Err(PlanError::Invalid(
            "interface name must not be empty".into(),
        ));
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad(format!(
            "it is {} bytes long, Linux allows at most {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are reserved".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | ':' | '"' | '\'' | '\\') || c.is_whitespace() || c.is_control())
    {
        return bad(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

/// Names the kernel reserves for itself, or that its sysctl tree already uses: a link called
/// `all` or `default` would collide with `net.ipv4.conf.all`/`default`, and `lo` is loopback.
pub const RESERVED_IFNAMES: [&str; 3] = ["lo", "all", "default"];

/// Checks a bridge name a user gives (`com.docker.network.bridge.name`): a valid interface name
/// ([`validate_ifname`]), not one the kernel reserves ([`RESERVED_IFNAMES`]), and without dots:
/// berth writes per-bridge sysctls (`net.ipv4.conf.<bridge>.route_localnet`), where a dot in the
/// name would read as a path separator (`sysctl` turns `.` into `/`).
pub fn validate_bridge_name(name: &str) -> Result<(), PlanError> {
    validate_ifname(name)?;
    if RESERVED_IFNAMES.contains(&name) {
        return Err(PlanError::Invalid(format!(
            "invalid interface name {name:?}: the kernel reserves it"
        )));
    }
    if name.contains('.') {
        return Err(PlanError::Invalid(format!(
            "invalid interface name {name:?}: berth does not allow dots in bridge names (they \
             clash with sysctl paths like net.ipv4.conf.NAME.route_localnet)"
        )));
    }
    Ok(())
}

/// The MAC berth gives a link it creates, derived from the link's name (FNV-1a), locally
/// administered and unicast (`06:…`, never `02:42:…` like container endpoints). It is set in the
/// very `RTM_NEWLINK` that creates the link, so it marks the link as berth's atomically (see
/// [`crate::host::is_owned`]): a crash between creating a link and writing its alias cannot
/// leave an unmarked link of berth's behind. For a bridge it also keeps the gateway's MAC stable.
pub fn owner_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x06, b[0], b[1], b[2], b[3], b[4]]
}

/// The first (up to) 12 characters of an id, cut on a character boundary so that odd input
/// never panics.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// Whether `s` is a full Docker-style id: exactly 64 lowercase hex characters.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Interface name of the predefined `bridge` network.
pub const DEFAULT_BRIDGE_IFNAME: &str = "berth0";

/// Prefix of the bridges berth names itself.
pub const BRIDGE_PREFIX: &str = "berth-";
/// Prefix of berth's host-side veths.
pub const VETH_PREFIX: &str = "vb";

/// The bridge interface name of a network: `berth-` + the first 9 hex characters of its id
/// (15 bytes). Not Docker's `br-<id>`: berth removes orphan links carrying its own prefix at
/// start-up, and must never mistake a Docker bridge on the same host for one of its own.
pub fn bridge_name(network_id: &str) -> String {
    let hex: String = network_id.chars().take(9).collect();
    format!("{BRIDGE_PREFIX}{hex}")
}

/// The VXLAN device of an overlay network (`bvx-` + 9 hex of its id; 13 characters).
pub fn vxlan_name(network_id: &str) -> String {
    let hex: String = network_id.chars().take(9).collect();
    format!("bvx-{hex}")
}

/// The network namespace an overlay network's bridge and VXLAN port live in on each host
/// (`ov-` + 9 hex of its id), mounted at `RUNDIR/netns/<it>` (docs/OVERLAY.md).
pub fn overlay_netns_name(network_id: &str) -> String {
    let hex: String = network_id.chars().take(9).collect();
    format!("{OVERLAY_NETNS_PREFIX}{hex}")
}

/// The prefix of [`overlay_netns_name`].
pub const OVERLAY_NETNS_PREFIX: &str = "ov-";

/// Whether `name` has the shape of an overlay namespace berth named itself (`ov-<9 hex>`).
pub fn is_overlay_netns(name: &str) -> bool {
    name.strip_prefix(OVERLAY_NETNS_PREFIX)
        .is_some_and(|h| h.len() == 9 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The prefix of [`uplink_name`].
pub const UPLINK_PREFIX: &str = "bup-";

/// The host side of an overlay namespace's uplink veth (`bup-` + 9 hex of the network id;
/// 13 characters): the interface the host's rules key that network on.
pub fn uplink_name(network_id: &str) -> String {
    let hex: String = network_id.chars().take(9).collect();
    format!("{UPLINK_PREFIX}{hex}")
}

/// Whether `name` has the shape of an uplink berth named itself (`bup-<9 hex>`).
pub fn is_uplink(name: &str) -> bool {
    name.strip_prefix(UPLINK_PREFIX)
        .is_some_and(|h| h.len() == 9 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` has the shape of a bridge berth named itself (`berth0` or `berth-<9 hex>`).
pub fn is_berth_bridge(name: &str) -> bool {
    name == DEFAULT_BRIDGE_IFNAME
        || name
            .strip_prefix(BRIDGE_PREFIX)
            .is_some_and(|h| h.len() == 9 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` has the shape of a berth host-side veth (`vb<12 hex>`).
pub fn is_berth_veth(name: &str) -> bool {
    name.strip_prefix(VETH_PREFIX)
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The host-side veth name of an endpoint: `vb` + the first 12 characters of its id (14 bytes).
///
/// Derived from the endpoint id (not random like Docker's `vethXXXX`) so a restarted daemon can
/// recognise its own links and remove orphans.
pub fn veth_name(endpoint_id: &str) -> String {
    format!("{VETH_PREFIX}{}", short_id(endpoint_id))
}

/// The name of a macvlan network's host shim: `bm` + the first 12 characters of its id.
pub fn shim_name(network_id: &str) -> String {
    format!("bm{}", short_id(network_id))
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `mac` is the one [`mac_for`] derives from IPv4 address `ip` (any letter case).
pub fn is_derived_mac(mac: &str, ip: Ipv4Addr) -> bool {
    mac_for(Some(ip), "").eq_ignore_ascii_case(mac)
}

/// The MAC address of an endpoint's container side.
///
/// Docker style `02:42:` + the four IPv4 bytes when there is an IPv4 address (so the MAC
/// reveals the address, as with Docker); otherwise six bytes from the endpoint id's hex, with
/// the locally-administered bit set and the multicast bit cleared.
pub fn mac_for(ip: Option<Ipv4Addr>, endpoint_id: &str) -> String {
    let bytes: [u8; 6] = match ip {
        Some(ip) => {
            let o = ip.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        None => {
            let mut b = id_bytes(endpoint_id);
            b[0] = (b[0] & 0xfe) | 0x02;
            b
        }
    };
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Six bytes from the start of a hex id; a non-hex id is folded with FNV-1a instead, so any
/// string still gives a stable result.
fn id_bytes(id: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let hex = id.as_bytes();
    if hex.len() >= 12 && hex[..12].iter().all(u8::is_ascii_hexdigit) {
        for (i, pair) in hex[..12].chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("00");
            out[i] = u8::from_str_radix(s, 16).unwrap_or(0);
        }
        return out;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    out.copy_from_slice(&h.to_be_bytes()[..6]);
    out
}

/// Why a name or id could not be resolved to exactly one object.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Nothing matches.
    #[error("{0} not found")]
    NotFound(String),
    /// More than one id starts with the given prefix.
    #[error("{query} is ambiguous ({matches} matches found based on ID prefix)")]
    Ambiguous {
        /// What was looked up.
        query: String,
        /// How many objects matched.
        matches: usize,
    },
}

impl ResolveError {
    /// The error for a network lookup, worded as Docker words it.
    pub fn for_network(self) -> PlanError {
        match self {
            ResolveError::NotFound(q) => PlanError::NetworkNotFound(q),
            ResolveError::Ambiguous { query, matches } => PlanError::Invalid(format!(
                "network {query} is ambiguous ({matches} matches found based on ID prefix)"
            )),
        }
    }

    /// The error for a container lookup, worded as Docker words it.
    pub fn for_container(self) -> PlanError {
        match self {
            ResolveError::NotFound(q) => PlanError::ContainerNotFound(q),
            ResolveError::Ambiguous { query, .. } => {
                PlanError::Invalid(format!("multiple IDs found with provided prefix: {query}"))
            }
        }
    }
}

/// Finds the one object `query` designates, with Docker's rules: an exact name first, then an
/// exact id, then a unique id prefix. An empty query matches nothing.
pub fn resolve<'a, T>(
    query: &str,
    items: &'a [T],
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, ResolveError> {
    if query.is_empty() {
        return Err(ResolveError::NotFound(query.to_string()));
    }
    if let Some(t) = items.iter().find(|t| name(t) == query) {
        return Ok(t);
    }
    if let Some(t) = items.iter().find(|t| id(t) == query) {
        return Ok(t);
    }
    let mut found = items.iter().filter(|t| id(t).starts_with(query));
    match (found.next(), found.count()) {
        (Some(t), 0) => Ok(t),
        (Some(_), more) => Err(ResolveError::Ambiguous {
            query: query.to_string(),
            matches: more + 1,
        }),
        (None, _) => Err(ResolveError::NotFound(query.to_string())),
    }
}

/// A Docker-like generated name for an unnamed container (`brave_dock_5023a3`): derived from
/// its id, so it needs no randomness of its own. Only the id's first 24 bits show, so two
/// containers' names can be equal (≈ 3 % for some pair among 1,000): an unnamed container's id
/// is drawn with [`first_free_generated`].
pub fn generated_name(id: &str) -> String {
    const ADJ: [&str; 8] = [
        "brave", "calm", "eager", "keen", "lucid", "quiet", "swift", "tidy",
    ];
    const NOUN: [&str; 8] = [
        "anchor", "buoy", "dock", "harbor", "jetty", "keel", "mast", "quay",
    ];
    let head: String = id.chars().take(6).collect();
    let b = u32::from_str_radix(&head, 16).unwrap_or(0);
    format!(
        "{}_{}_{head}",
        ADJ[(b & 7) as usize],
        NOUN[((b >> 3) & 7) as usize]
    )
}

/// The first of `ids` whose [`generated_name`] is not `taken`, with that name: an unnamed
/// container's id and name. Docker draws another name when its pick is in use
/// (`daemon/names.go`, `generateAndReserveName`); a name here comes from the id, so another id
/// is drawn. `None` when every id's name is taken (the caller then names the container by its
/// short id).
pub fn first_free_generated(
    ids: impl IntoIterator<Item = String>,
    mut taken: impl FnMut(&str) -> bool,
) -> Option<(String, String)> {
    ids.into_iter()
        .map(|id| {
            let name = generated_name(&id);
            (id, name)
        })
        .find(|(_, name)| !taken(name))
}

/// Checks a string berth writes as one field of a generated file (`/etc/hostname`,
/// `/etc/hosts`, `/etc/resolv.conf`): no whitespace (fields are separated by it, lines by a
/// newline), no control character, no `#` or `;` (comments there), at most `max` bytes. `what`
/// names the flag in the message (`hostname`, `--dns-search`, `--dns-option`, `--add-host`).
/// Without this, `-h $'web\n6.6.6.6 bank.example'` would add a line to the container's
/// `/etc/hosts`.
pub fn validate_file_field(what: &str, v: &str, max: usize) -> Result<(), PlanError> {
    let bad = |reason: String| {
        Err(PlanError::Invalid(format!(
            "invalid {what} {v:?}: {reason}"
        )))
    };
    if v.is_empty() {
        return bad("it is empty".into());
    }
    if v.len() > max {
        return bad(format!("it is longer than {max} characters"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | ';'))
    {
        return bad(format!(
            "it contains {c:?}; it is written into the container's /etc files, where \
             whitespace, control characters, '#' and ';' would change their meaning"
        ));
    }
    Ok(())
}

/// Parses `--add-host NAME:IP` (Docker also accepts `NAME=IP`; the IP may be IPv6, bracketed
/// or not).
pub fn parse_extra_host(h: &str) -> Result<(String, std::net::IpAddr), PlanError> {
    let (name, ip) = h
        .split_once('=')
        .or_else(|| h.split_once(':'))
        .ok_or_else(|| PlanError::Invalid(format!("--add-host {h:?}: expected NAME:IP")))?;
    let ip_str = ip.trim_start_matches('[').trim_end_matches(']');
    let ip = ip_str.parse().map_err(|_| {
        PlanError::Invalid(format!("--add-host {h:?}: {ip_str:?} is not an IP address"))
    })?;
    if name.is_empty() {
        return Err(PlanError::Invalid(format!(
            "--add-host {h:?}: empty host name"
        )));
    }
    validate_file_field("--add-host name", name, crate::input::MAX_DNS_FIELD_LEN)?;
    Ok((name.to_string(), ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    #[test]
    fn generated_file_fields_refuse_what_would_inject_lines() {
        use super::validate_file_field as v;
        for ok in ["web", "web.example.com", "ndots:2", "svc.local", "a-b_c"] {
            assert!(v("hostname", ok, 64).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "web\n6.6.6.6 bank",
            "web 1.2.3.4",
            "a\tb",
            "x#y",
            "x;y",
            "a\rb",
            "nul\0",
            "\u{85}next-line",
            "\u{2028}",
        ] {
            let e = v("hostname", bad, 64).unwrap_err().to_string();
            assert!(e.contains("invalid hostname"), "{bad:?}: {e}");
        }
        assert!(v("hostname", &"a".repeat(65), 64).is_err());
        assert!(super::parse_extra_host("evil\n6.6.6.6 bank:1.2.3.4").is_err());
        assert!(super::parse_extra_host("db:10.0.0.2").is_ok());
    }

    #[test]
    fn a_taken_generated_name_draws_another_id() {
        let ids = ["5023a3aa", "5023a3bb", "77aa01cc"].map(String::from);
        let taken = generated_name("5023a3ff");
        let (id, name) = first_free_generated(ids.clone(), |n| n == taken).expect("a free name");
        assert_eq!(id, "77aa01cc");
        assert_eq!(name, generated_name("77aa01cc"));
        assert_eq!(first_free_generated(ids, |_| true), None);
        let (id, _) = first_free_generated(["abcdef01".to_string()], |_| false).expect("free");
        assert_eq!(id, "abcdef01");
    }

    #[test]
    fn extra_hosts_and_generated_names() {
        let v6: std::net::IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(parse_extra_host("db:10.0.0.1").unwrap().0, "db");
        assert_eq!(parse_extra_host("db:fd00::1").unwrap(), ("db".into(), v6));
        assert_eq!(parse_extra_host("db=[fd00::1]").unwrap(), ("db".into(), v6));
        assert!(parse_extra_host("db").is_err());
        assert!(parse_extra_host(":10.0.0.1").is_err());
        assert!(parse_extra_host("db:nope").is_err());
        let n = generated_name("5023a32964ca");
        assert!(n.ends_with("_5023a3") && n.split('_').count() == 3, "{n}");
        assert_eq!(generated_name("x").split('_').count(), 3);
    }
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("network", "web").is_ok());
        assert!(validate_name("network", "a_b.c-d9").is_ok());
        assert!(validate_name("network", &"a".repeat(64)).is_ok());
        let e = validate_name("network", &"a".repeat(65)).unwrap_err();
        assert!(e.to_string().contains("limit is 64"), "{e}");
        let e = validate_name("network", "").unwrap_err();
        assert_eq!(e.to_string(), "network name must not be empty");
        let e = validate_name("container", "-x").unwrap_err();
        assert!(
            e.to_string().contains("start with a letter or digit"),
            "{e}"
        );
        let e = validate_name("network", "we b").unwrap_err();
        assert!(e.to_string().contains("character ' '"), "{e}");
        assert!(validate_name("network", "wéb").is_err());
        assert!(validate_name("network", "a/b").is_err());
    }

    #[test]
    fn network_names_follow_dockerd() {
        for ok in [
            "web",
            "test 01",
            "a/b",
            "-x",
            "wé!rd",
            " lead",
            "Bridge",
            &"n".repeat(255),
        ] {
            assert!(validate_network_name(ok).is_ok(), "{ok:?}");
        }
        for blank in ["", " ", "\t \n"] {
            let e = validate_network_name(blank).unwrap_err();
            assert!(e.to_string().starts_with("invalid name: "), "{e}");
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        }
        for p in ["bridge", "host", "none", "default"] {
            let e = validate_network_name(p).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("operation is not permitted on predefined {p} network")
            );
            assert_eq!(e.kind(), crate::error::ErrorKind::Forbidden);
        }
        assert!(validate_network_name(&"n".repeat(256)).is_err());
        assert!(validate_network_name("a\nb").is_err());
        assert!(validate_network_name("a\u{7f}").is_err());
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("berth0").is_ok());
        assert!(validate_ifname(&"x".repeat(15)).is_ok());
        assert!(validate_ifname(&"x".repeat(16)).is_err());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a:b",
            "a\"b",
            "a\tb",
            "é".repeat(8).as_str(),
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derived_names_fit_ifnamsiz() {
        let id = "5023a32964ca40abf8641b64ec027580d2854bea43dd811749251ae56bcf6a29";
        assert_eq!(bridge_name(id), "berth-5023a3296");
        assert!(is_berth_bridge(&bridge_name(id)));
        assert!(is_berth_bridge("berth0"));
        assert!(!is_berth_bridge("br-5023a32964ca"));
        assert!(!is_berth_bridge("berth-xyz"));
        assert!(is_berth_veth("vb0123456789ab"));
        assert!(!is_berth_veth("veth0123456"));
        assert_eq!(veth_name(id), "vb5023a32964ca");
        assert!(bridge_name(id).len() <= MAX_IFNAME_LEN);
        assert!(veth_name(id).len() <= MAX_IFNAME_LEN);
        assert!(validate_ifname(&bridge_name(id)).is_ok());
        assert!(validate_ifname(&veth_name(id)).is_ok());
        // Odd ids never panic.
        assert_eq!(short_id("ab"), "ab");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
    }

    #[test]
    fn ids() {
        let id = "5023a32964ca40abf8641b64ec027580d2854bea43dd811749251ae56bcf6a29";
        assert!(is_full_id(id));
        assert!(!is_full_id(&id[..63]));
        assert!(!is_full_id(&id.to_uppercase()));
        assert_eq!(short_id(id), "5023a32964ca");
    }

    #[test]
    fn macs() {
        assert_eq!(
            mac_for(Some(Ipv4Addr::new(10, 233, 0, 10)), "x"),
            "02:42:0a:e9:00:0a"
        );
        let ip = Ipv4Addr::new(10, 233, 0, 10);
        assert!(is_derived_mac("02:42:0A:E9:00:0A", ip));
        assert!(!is_derived_mac("02:42:0a:e9:00:0b", ip));
        let m = mac_for(None, "ff23a32964ca40ab");
        assert_eq!(m, "fe:23:a3:29:64:ca");
        let m = mac_for(None, "not hex at all");
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast: {m}");
        assert_eq!(m.len(), 17);
    }

    struct Obj(&'static str, &'static str);

    #[test]
    fn resolving() {
        let items = [
            Obj("abc111", "web"),
            Obj("abc222", "db"),
            Obj("def333", "abc111"),
        ];
        let r = |q| resolve(q, &items, |o| o.0, |o| o.1).map(|o| o.1);
        assert_eq!(r("web"), Ok("web"));
        // A name wins over an id.
        assert_eq!(r("abc111"), Ok("abc111"));
        assert_eq!(r("abc2"), Ok("db"));
        assert_eq!(r("def"), Ok("abc111"));
        assert_eq!(
            r("abc"),
            Err(ResolveError::Ambiguous {
                query: "abc".into(),
                matches: 2
            })
        );
        assert_eq!(r("zzz"), Err(ResolveError::NotFound("zzz".into())));
        assert_eq!(r(""), Err(ResolveError::NotFound("".into())));
        assert_eq!(
            ResolveError::NotFound("nosuchnet".into())
                .for_network()
                .to_string(),
            "network nosuchnet not found"
        );
    }
}
