//! Published ports (`-p`): parsing Docker's spec forms, Docker's API shape, choosing host ports
//! and the conflicts between them. Pure: the daemon injects what only the host knows (its
//! addresses, whether a host process holds a port, a random start for free-port searches).
//!
//! Three shapes of one port:
//! * [`PortSpec`]: what the user asked for, one container port each (a `-p` range is expanded
//!   into one spec per port, as Docker's CLI does): `8080:80/tcp`, `127.0.0.1::53/udp`, `80`.
//!   Stored with the container.
//! * Docker's API shape: `HostConfig.PortBindings = {"80/tcp": [{"HostIp": "", "HostPort":
//!   "8080"}]}`; [`PortSpec::from_binding`] / [`PortSpec::binding_key`] convert.
//! * [`Published`]: what is in force while the container runs, one per address family, with the
//!   host port chosen and the container address resolved (`0.0.0.0:8080 → 10.1.0.2:80/tcp`).
//!   Each one is one element of an nft map (see `firewall::port_elements`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The name Docker and nft use (`tcp`, `udp`, `sctp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Parses `tcp`, `udp`, `sctp` (any case, like Docker).
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One requested published port: one container port, a host address (or every address) and a
/// host port (or a range to pick one from, or any free port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port inside the container (1–65535).
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Host address; `None` publishes on every address of the host, in every family the
    /// container has an address in (Docker's empty `HostIp`). `0.0.0.0` / `::` publish on every
    /// address of that family only.
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    /// First host port to choose from; 0: any free port (Docker's empty `HostPort`).
    pub host_port: u16,
    /// Last host port to choose from (equal to `host_port` for a fixed port).
    pub host_port_end: u16,
}

impl PortSpec {
    /// Docker's `PortBindings` key: `80/tcp`.
    pub fn binding_key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }

    /// Docker's `HostIp`: `""` for every address, else the address (IPv6 without brackets).
    pub fn binding_host_ip(&self) -> String {
        self.host_ip.map(|a| a.to_string()).unwrap_or_default()
    }

    /// Docker's `HostPort`: `""` (any free port), `8080`, or `8000-8010` (pick one).
    pub fn binding_host_port(&self) -> String {
        match (self.host_port, self.host_port_end) {
            (0, _) => String::new(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        }
    }

    /// Parses one entry of Docker's `HostConfig.PortBindings`: `key` is `80`, `80/tcp`,
    /// `53/udp`; `host_ip` may be empty (every address); `host_port` may be empty or `0` (any
    /// free port), a port, or a range to pick one from.
    pub fn from_binding(key: &str, host_ip: &str, host_port: &str) -> Result<PortSpec, PlanError> {
        let bad = |why: String| {
            PlanError::Invalid(format!(
                "invalid port binding {key:?} -> {host_ip:?}:{host_port:?}: {why}"
            ))
        };
        let (port, proto) = split_proto(key).map_err(bad)?;
        let (container_port, end) = parse_range(port, "container port").map_err(bad)?;
        if end != container_port {
            return Err(bad(
                "a PortBindings key names one container port, not a range".into(),
            ));
        }
        let host_ip = parse_host_ip(host_ip).map_err(bad)?;
        let (host_port, host_port_end) = parse_host_ports(host_port).map_err(bad)?;
        Ok(PortSpec {
            container_port,
            proto,
            host_ip,
            host_port,
            host_port_end,
        })
    }
}

/// `80/udp` → (`80`, Udp); no suffix means TCP.
fn split_proto(s: &str) -> Result<(&str, Proto), String> {
    match s.split_once('/') {
        None => Ok((s, Proto::Tcp)),
        Some((p, proto)) => Proto::parse(proto)
            .map(|pr| (p, pr))
            .ok_or_else(|| format!("unknown protocol {proto:?} (use tcp, udp or sctp)")),
    }
}

/// A port number 1–65535.
fn parse_port(s: &str, what: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("{what} {s} is out of range (1-65535)")),
    }
}

/// `80` → (80, 80); `8000-8010` → (8000, 8010).
fn parse_range(s: &str, what: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        None => parse_port(s, what).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (parse_port(a, what)?, parse_port(b, what)?);
            if a > b {
                return Err(format!("{what} range {s} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

/// Docker's `HostPort`: empty or `0` → (0, 0): any free port.
fn parse_host_ports(s: &str) -> Result<(u16, u16), String> {
    if s.is_empty() || s == "0" {
        return Ok((0, 0));
    }
    parse_range(s, "host port")
}

/// Docker's `HostIp`: empty → every address; `[::1]` and `::1` both accepted.
fn parse_host_ip(s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(Some)
        .map_err(|_| format!("host address {s:?} is not an IP address"))
}

/// Parses one `-p`/`--publish` value in any of Docker's forms, expanding ranges:
///
/// | form | meaning |
/// |---|---|
/// | `80` | container port 80/tcp on any free host port, every host address |
/// | `8080:80` | host port 8080 → 80 |
/// | `127.0.0.1:8080:80` | only on that host address |
/// | `127.0.0.1::80` | that address, any free host port |
/// | `[::1]:8080:80` | an IPv6 host address (brackets required to be unambiguous) |
/// | `8000-8010:8000-8010` | a range, port by port (both sides the same length) |
/// | `8000-8010:80` | container port 80 on the first free host port of the range |
/// | `8000-8010` | container ports 8000–8010, each on any free host port |
/// | `…/udp`, `…/sctp` | protocol (default tcp) |
pub fn parse_publish(spec: &str) -> Result<Vec<PortSpec>, PlanError> {
    let bad = |why: String| PlanError::Invalid(format!("invalid publish spec {spec:?}: {why}"));
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad("empty".into()));
    }
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => (
            r,
            Proto::parse(p)
                .ok_or_else(|| bad(format!("unknown protocol {p:?} (use tcp, udp or sctp)")))?,
        ),
        None => (s, Proto::Tcp),
    };
    // [ip:]host:container, where an IPv6 ip is bracketed: split the bracketed part off first.
    let (ip_part, ports): (Option<&str>, &str) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' around the host address".into()))?;
        let tail = tail
            .strip_prefix(':')
            .ok_or_else(|| bad("expected ':' after the bracketed host address".into()))?;
        (Some(ip), tail)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (None, rest),
            3 => (Some(parts[0]), &rest[parts[0].len() + 1..]),
            _ => {
                return Err(bad(
                    "too many ':' (write an IPv6 host address in brackets: [::1]:8080:80)".into(),
                ))
            }
        }
    };
    let host_ip = match ip_part {
        Some(ip) => parse_host_ip(ip).map_err(bad)?,
        None => None,
    };
    if ip_part.is_some_and(str::is_empty) {
        return Err(bad("empty host address before ':'".into()));
    }
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (h, c),
        None if ip_part.is_some() => return Err(bad("missing the container port".into())),
        None => ("", ports),
    };
    if container.contains(':') {
        return Err(bad("too many ':'".into()));
    }
    if container.is_empty() {
        return Err(bad("missing the container port".into()));
    }
    let (c_start, c_end) = parse_range(container, "container port").map_err(bad)?;
    let (h_start, h_end) = parse_host_ports(host).map_err(bad)?;
    let c_len = u32::from(c_end) - u32::from(c_start);
    let h_len = u32::from(h_end) - u32::from(h_start);
    let mut out = Vec::new();
    if h_start == 0 {
        // Any free host port for each container port.
        for p in c_start..=c_end {
            out.push(PortSpec {
                container_port: p,
                proto,
                host_ip,
                host_port: 0,
                host_port_end: 0,
            });
        }
    } else if c_len == 0 {
        // One container port: a fixed host port, or the first free one of a host range.
        out.push(PortSpec {
            container_port: c_start,
            proto,
            host_ip,
            host_port: h_start,
            host_port_end: h_end,
        });
    } else if c_len == h_len {
        for i in 0..=c_len {
            let (h, c) = (h_start as u32 + i, c_start as u32 + i);
            out.push(PortSpec {
                container_port: c as u16,
                proto,
                host_ip,
                host_port: h as u16,
                host_port_end: h as u16,
            });
        }
    } else {
        return Err(bad(format!(
            "the host range {host} ({} ports) and the container range {container} ({} ports) \
             differ in length",
            h_len + 1,
            c_len + 1
        )));
    }
    Ok(out)
}

/// Groups specs into Docker's `PortBindings` shape: key → [(HostIp, HostPort)], in order.
pub fn to_bindings(specs: &[PortSpec]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for s in specs {
        out.entry(s.binding_key())
            .or_default()
            .push((s.binding_host_ip(), s.binding_host_port()));
    }
    out
}

/// One port in force: host address and port → container address and port, for one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Published {
    /// Protocol.
    pub proto: Proto,
    /// Host address; unspecified (`0.0.0.0`, `::`) means every address of that family,
    /// loopback included.
    pub host_ip: IpAddr,
    /// Host port.
    pub host_port: u16,
    /// The container's address (the endpoint that gives it its default route).
    pub container_ip: IpAddr,
    /// Container port.
    pub container_port: u16,
}

impl Published {
    /// Docker's key of this port: `80/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }

    /// `0.0.0.0:8080`, `[::]:8080`.
    pub fn host_text(&self) -> String {
        match self.host_ip {
            IpAddr::V4(a) => format!("{a}:{}", self.host_port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.host_port),
        }
    }

    /// Whether `self` and `other` cannot both be in force: same protocol, family and host port,
    /// and the same host address or either one on every address.
    pub fn clashes_with(&self, other: &Published) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.host_ip.is_ipv4() == other.host_ip.is_ipv4()
            && (self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified()
                || self.host_ip == other.host_ip)
    }
}

/// Where a container's ports point: the addresses of its gateway endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Name of the network of that endpoint (for messages).
    pub network: String,
    /// Its IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address.
    pub v6: Option<Ipv6Addr>,
    /// The network's `com.docker.network.bridge.host_binding_ipv4`: the host address used for
    /// IPv4 when a spec names none (`None` or `0.0.0.0`: every address).
    pub default_host_v4: Option<Ipv4Addr>,
}

/// Why a host port cannot be used even though berth does not publish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostUse {
    /// The port is free on the host.
    Free,
    /// A host process holds it; the text names it (`process 1234 (nginx)`), or says
    /// `a process` when it could not be identified.
    Held(String),
}

/// Whether publishing `proto` `ip:port` would take a port berthd itself serves on the host:
/// its embedded DNS resolver answers on `dns_port` (TCP and UDP) at every address of `dns`
/// (the gateways of the networks it serves). A publish there (or on every address of that
/// family) would DNAT the containers' own queries to the publishing container, so it is
/// refused like a port a host process holds — known at create, so refused before anything is
/// stored (`-p 1-65535:1-65535` on a network with berth's DNS).
pub fn held_by_berthd(
    proto: Proto,
    ip: IpAddr,
    port: u16,
    dns: &[IpAddr],
    dns_port: u16,
) -> HostUse {
    if port != dns_port || proto == Proto::Sctp {
        return HostUse::Free;
    }
    let clash = dns
        .iter()
        .find(|a| a.is_ipv4() == ip.is_ipv4() && (ip.is_unspecified() || **a == ip));
    match clash {
        Some(a) => HostUse::Held(format!(
            "berthd's embedded DNS resolver (it answers the containers on {}; publish \
             another host port, e.g. -p 5353:{port}/{proto})",
            SocketAddr::new(*a, port)
        )),
        None => HostUse::Free,
    }
}

/// The ports already in force for other containers, and where to search for free ones.
pub struct Allocation<'a> {
    /// The port in force for another (running) container that clashes with a candidate, with
    /// that container's name; `None` when free. (The daemon answers from an index by host
    /// port, so a check costs the same whatever the number of ports published.)
    pub taken: &'a dyn Fn(&Published) -> Option<(String, Published)>,
    /// Range for "any free port" (Docker uses the kernel's ephemeral range).
    pub ephemeral: (u16, u16),
    /// Where in `ephemeral` to start searching (random, from the daemon).
    pub start: u16,
}

/// Looks a candidate up in a list of ports in force: the first one it clashes with.
pub fn find_clash(taken: &[(String, Published)], p: &Published) -> Option<(String, Published)> {
    taken.iter().find(|(_, o)| o.clashes_with(p)).cloned()
}

/// The (host address, container address) pairs one spec is published on, one per family.
pub fn placements(spec: &PortSpec, t: &Target) -> Result<Vec<(IpAddr, IpAddr)>, PlanError> {
    let no_family = |fam: &str| {
        PlanError::Invalid(format!(
            "cannot publish {} on an {fam} host address: the container has no {fam} address on \
             network {:?}{}",
            spec.binding_key(),
            t.network,
            if fam == "IPv6" {
                " (create the network with --ipv6)"
            } else {
                ""
            }
        ))
    };
    match spec.host_ip {
        Some(ip @ IpAddr::V4(_)) => {
            let c = t.v4.ok_or_else(|| no_family("IPv4"))?;
            Ok(vec![(ip, IpAddr::V4(c))])
        }
        Some(ip @ IpAddr::V6(_)) => {
            let c = t.v6.ok_or_else(|| no_family("IPv6"))?;
            Ok(vec![(ip, IpAddr::V6(c))])
        }
        None => {
            let mut out = Vec::new();
            if let Some(c) = t.v4 {
                let host = t.default_host_v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
                out.push((IpAddr::V4(host), IpAddr::V4(c)));
            }
            if let Some(c) = t.v6 {
                out.push((IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V6(c)));
            }
            if out.is_empty() {
                return Err(PlanError::Invalid(format!(
                    "cannot publish {}: the container has no address on network {:?}",
                    spec.binding_key(),
                    t.network
                )));
            }
            Ok(out)
        }
    }
}

/// Checks a host address for a spec against the host's own addresses: unspecified addresses
/// and loopback always qualify (IPv4 loopback is all of 127.0.0.0/8).
pub fn check_host_ip(ip: IpAddr, host_addrs: &[IpAddr]) -> Result<(), PlanError> {
    if ip.is_unspecified() || ip.is_loopback() || host_addrs.contains(&ip) {
        return Ok(());
    }
    Err(PlanError::Invalid(format!(
        "cannot publish on {ip}: it is not an address of this host (the host has: {})",
        host_addrs
            .iter()
            .filter(|a| !a.is_loopback())
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Parses the kernel's `ip_local_port_range` text (`"32768\t60999"`): the pool for "any free
/// port". `None` when malformed or empty.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
    let (a, b) = (it.next()??, it.next()??);
    (a > 0 && a <= b).then_some((a, b))
}

/// Chooses host ports for `specs` and returns what will be in force, or the first refusal:
/// a port published by another container (named), a port a host process holds (named by
/// `host_use`), a fixed port clashing within the same request.
///
/// `host_use(proto, host_ip, port)` asks the host whether a process holds the port (the daemon
/// tries to bind it). For "any free port" the search walks the ephemeral range once from
/// `alloc.start`, skipping ports berth publishes and ports the host holds; one host port is
/// chosen per spec for all its families (like Docker: `0.0.0.0:49153` and `[::]:49153`).
pub fn allocate(
    specs: &[PortSpec],
    target: &Target,
    alloc: &Allocation<'_>,
    host_use: &mut dyn FnMut(Proto, IpAddr, u16) -> HostUse,
) -> Result<Vec<Published>, PlanError> {
    let mut chosen: Vec<Published> = Vec::new();
    // This request's own choices by (protocol, host port), so that checking one more port
    // against them costs the same whatever their number: scanning `chosen` made
    // `-p 1-65535:1-65535` quadratic (2 billion comparisons, 49 s in a debug build).
    let mut chosen_at: BTreeMap<(Proto, u16), Vec<usize>> = BTreeMap::new();
    for spec in specs {
        let places = placements(spec, target)?;
        // A port is usable for this spec when every placement is free of berth and the host.
        let mut try_port = |port: u16,
                            chosen: &[Published],
                            chosen_at: &BTreeMap<(Proto, u16), Vec<usize>>|
         -> Result<Vec<Published>, String> {
            let mut out = Vec::new();
            for (host_ip, container_ip) in &places {
                let p = Published {
                    proto: spec.proto,
                    host_ip: *host_ip,
                    host_port: port,
                    container_ip: *container_ip,
                    container_port: spec.container_port,
                };
                if let Some((name, other)) = (alloc.taken)(&p) {
                    return Err(format!(
                        "Bind for {} failed: port is already allocated (published by container \
                         {name:?} for {})",
                        p.host_text(),
                        other.key()
                    ));
                }
                let mine = chosen_at.get(&(p.proto, port)).into_iter().flatten();
                if let Some(other) = mine.map(|&i| &chosen[i]).find(|o| o.clashes_with(&p)) {
                    return Err(format!(
                        "Bind for {} failed: port is already allocated (this container publishes \
                         it for {} too)",
                        p.host_text(),
                        other.key()
                    ));
                }
                if let HostUse::Held(by) = host_use(spec.proto, *host_ip, port) {
                    return Err(format!(
                        "Bind for {} failed: port is already in use by {by} on the host",
                        p.host_text()
                    ));
                }
                out.push(p);
            }
            Ok(out)
        };
        let (first, last) = if spec.host_port == 0 {
            alloc.ephemeral
        } else {
            (spec.host_port, spec.host_port_end)
        };
        let span = u32::from(last.saturating_sub(first)) + 1;
        let offset = if spec.host_port == 0 {
            u32::from(alloc.start.saturating_sub(first)) % span
        } else {
            0
        };
        let mut last_err = None;
        let mut got = None;
        for i in 0..span {
            let port = (u32::from(first) + (offset + i) % span) as u16;
            match try_port(port, &chosen, &chosen_at) {
                Ok(v) => {
                    got = Some(v);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        match got {
            Some(v) => {
                for p in v {
                    chosen_at
                        .entry((p.proto, p.host_port))
                        .or_default()
                        .push(chosen.len());
                    chosen.push(p);
                }
            }
            None if span == 1 => {
                return Err(PlanError::Conflict(last_err.unwrap_or_default()));
            }
            None => {
                return Err(PlanError::Conflict(format!(
                    "no free host port in {first}-{last} for {} (last refusal: {})",
                    spec.binding_key(),
                    last_err.unwrap_or_default()
                )));
            }
        }
    }
    Ok(chosen)
}

/// Shortest run of consecutive fixed host ports worth one `sock_diag` dump instead of a bind
/// probe per port: below it, the probes cost less than opening a netlink socket and two dumps.
pub const MIN_PROBE_RUN: u16 = 32;

/// The runs of consecutive host ports (per protocol, `first..=last`, each at least
/// [`MIN_PROBE_RUN`] long) that `specs` publish on fixed ports: where the daemon asks the kernel
/// once which ports any socket holds, and probes only those. A port outside these runs (a
/// single `-p 8080:80`, a "pick one of" range, a free port) is probed as before. SCTP is never
/// probed, so never listed.
pub fn probe_runs(specs: &[PortSpec]) -> Vec<(Proto, u16, u16)> {
    let mut fixed: BTreeMap<Proto, std::collections::BTreeSet<u16>> = BTreeMap::new();
    for s in specs {
        if s.host_port != 0 && s.host_port == s.host_port_end && s.proto != Proto::Sctp {
            fixed.entry(s.proto).or_default().insert(s.host_port);
        }
    }
    let mut out = Vec::new();
    for (proto, ports) in fixed {
        let mut run: Option<(u16, u16)> = None;
        let close = |run: Option<(u16, u16)>, out: &mut Vec<(Proto, u16, u16)>| {
            if let Some((a, b)) = run {
                if b - a + 1 >= MIN_PROBE_RUN {
                    out.push((proto, a, b));
                }
            }
        };
        for p in ports {
            run = match run {
                Some((a, b)) if b.checked_add(1) == Some(p) => Some((a, p)),
                other => {
                    close(other, &mut out);
                    Some((p, p))
                }
            };
        }
        close(run, &mut out);
    }
    out
}

/// A listener berthd opens itself on the host's IPv6 loopback, `[::1]:host_port`, relaying to a
/// container. The kernel never lets a packet with a `::1` address leave `lo` (IPv6 has no
/// `route_localnet`), so no DNAT can carry the host's own connections to `[::1]:PORT`; this
/// relay is the one case where berth proxies in user space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoopbackRelay {
    /// Protocol (TCP or UDP; SCTP is never relayed).
    pub proto: Proto,
    /// The host port, listened on at `[::1]:host_port`.
    pub host_port: u16,
    /// Where connections and datagrams go: the container's IPv6 address when the port is
    /// published for IPv6, else its IPv4 address.
    pub target: SocketAddr,
    /// Docker's key of the container port (`80/tcp`), for messages.
    pub key: String,
    /// Whether the port was published on `::1` itself: then a relay that cannot listen fails
    /// the publish like any other conflict. Otherwise (a wildcard publish) it is a warning:
    /// the port still works through every other address.
    pub required: bool,
}

/// The `[::1]` relays a container's ports in force need: one per (protocol, host port) of a TCP
/// or UDP port published on `::1` or on a wildcard (`0.0.0.0`, `::`, or no address), relaying
/// to the container's IPv6 address when that port is published for IPv6 too, else to its IPv4
/// address. Ports published on any other specific address (`127.0.0.1`, a LAN address) need
/// none: DNAT carries them.
pub fn loopback6_relays(published: &[Published]) -> Vec<LoopbackRelay> {
    let mut out: BTreeMap<(Proto, u16), LoopbackRelay> = BTreeMap::new();
    for p in published {
        if p.proto == Proto::Sctp {
            continue;
        }
        let required = p.host_ip == IpAddr::V6(Ipv6Addr::LOCALHOST);
        if !required && !p.host_ip.is_unspecified() {
            continue;
        }
        let relay = LoopbackRelay {
            proto: p.proto,
            host_port: p.host_port,
            target: SocketAddr::new(p.container_ip, p.container_port),
            key: p.key(),
            required,
        };
        match out.get_mut(&(p.proto, p.host_port)) {
            None => {
                out.insert((p.proto, p.host_port), relay);
            }
            Some(have) => {
                // `::1` itself beats a wildcard; otherwise IPv6 beats IPv4.
                let better = (relay.required, relay.target.is_ipv6())
                    > (have.required, have.target.is_ipv6());
                if better {
                    *have = relay;
                }
            }
        }
    }
    out.into_values().collect()
}

/// Docker's `NetworkSettings.Ports`: every requested key, with its bindings in force (an
/// empty list while the container is not running, as Docker shows `null`).
pub fn ports_view(
    specs: &[PortSpec],
    published: &[Published],
) -> BTreeMap<String, Option<Vec<(String, String)>>> {
    let mut out: BTreeMap<String, Option<Vec<(String, String)>>> = BTreeMap::new();
    for s in specs {
        out.entry(s.binding_key()).or_insert(None);
    }
    for p in published {
        out.entry(p.key())
            .or_insert(None)
            .get_or_insert_with(Vec::new)
            .push((p.host_ip.to_string(), p.host_port.to_string()));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {

    #[test]
    fn ephemeral_range_text() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("60999 32768"), None);
        assert_eq!(parse_port_range("0 10"), None);
        assert_eq!(parse_port_range("garbage"), None);
        assert_eq!(parse_port_range(""), None);
    }
    use super::*;

    fn one(s: &str) -> PortSpec {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}: {v:?}");
        v[0].clone()
    }

    fn err(s: &str) -> String {
        parse_publish(s).unwrap_err().to_string()
    }

    fn spec(c: u16, proto: Proto, ip: Option<&str>, h: u16, he: u16) -> PortSpec {
        PortSpec {
            container_port: c,
            proto,
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port: h,
            host_port_end: he,
        }
    }

    #[test]
    fn probe_runs_are_the_long_fixed_runs_only() {
        let mut specs = parse_publish("30000-30999:30000-30999").unwrap();
        specs.extend(parse_publish("30000-30999:30000-30999/udp").unwrap());
        // A second address for the same ports: one run, not two.
        specs.extend(parse_publish("127.0.0.1:30500-30600:30500-30600").unwrap());
        // Short runs, a "pick one" range, free ports, SCTP: probed one by one.
        specs.extend(parse_publish("8080:80").unwrap());
        specs.extend(parse_publish("9000-9030:9000-9030").unwrap());
        specs.extend(parse_publish("7000-7999:80").unwrap());
        specs.extend(parse_publish("90").unwrap());
        specs.extend(parse_publish("40000-40999:40000-40999/sctp").unwrap());
        // Two runs of one protocol split by a gap.
        specs.extend(parse_publish("50000-50031:50000-50031").unwrap());
        specs.extend(parse_publish("50033-50100:50033-50100").unwrap());
        // Touching 65535 does not overflow.
        specs.extend(parse_publish("65500-65535:65500-65535/udp").unwrap());
        assert_eq!(
            probe_runs(&specs),
            vec![
                (Proto::Tcp, 30000, 30999),
                (Proto::Tcp, 50000, 50031),
                (Proto::Tcp, 50033, 50100),
                (Proto::Udp, 30000, 30999),
                (Proto::Udp, 65500, 65535),
            ]
        );
        assert!(probe_runs(&parse_publish("1-31:1-31").unwrap()).is_empty());
        assert_eq!(
            probe_runs(&parse_publish("1-32:1-32").unwrap()),
            vec![(Proto::Tcp, 1, 32)]
        );
    }

    #[test]
    fn every_docker_form() {
        assert_eq!(one("80"), spec(80, Proto::Tcp, None, 0, 0));
        assert_eq!(one("8080:80"), spec(80, Proto::Tcp, None, 8080, 8080));
        assert_eq!(one("8080:80/udp"), spec(80, Proto::Udp, None, 8080, 8080));
        assert_eq!(one("8080:80/SCTP"), spec(80, Proto::Sctp, None, 8080, 8080));
        assert_eq!(
            one("127.0.0.1:8080:80"),
            spec(80, Proto::Tcp, Some("127.0.0.1"), 8080, 8080)
        );
        assert_eq!(
            one("127.0.0.1::53/udp"),
            spec(53, Proto::Udp, Some("127.0.0.1"), 0, 0)
        );
        assert_eq!(
            one("[::1]:8080:80"),
            spec(80, Proto::Tcp, Some("::1"), 8080, 8080)
        );
        assert_eq!(one("[::]::80"), spec(80, Proto::Tcp, Some("::"), 0, 0));
        assert_eq!(
            one("0.0.0.0:8080:80"),
            spec(80, Proto::Tcp, Some("0.0.0.0"), 8080, 8080)
        );
        assert_eq!(one("8000-8010:80"), spec(80, Proto::Tcp, None, 8000, 8010));
        let r = parse_publish("8000-8002:9000-9002/udp").unwrap();
        assert_eq!(
            r,
            vec![
                spec(9000, Proto::Udp, None, 8000, 8000),
                spec(9001, Proto::Udp, None, 8001, 8001),
                spec(9002, Proto::Udp, None, 8002, 8002),
            ]
        );
        let r = parse_publish("10.0.0.1::7000-7001").unwrap();
        assert_eq!(
            r,
            vec![
                spec(7000, Proto::Tcp, Some("10.0.0.1"), 0, 0),
                spec(7001, Proto::Tcp, Some("10.0.0.1"), 0, 0),
            ]
        );
        assert_eq!(parse_publish("1-1000:1-1000").unwrap().len(), 1000);
        assert_eq!(one("0:80"), spec(80, Proto::Tcp, None, 0, 0));
    }

    #[test]
    fn bad_specs_say_why() {
        assert!(err("").contains("empty"));
        assert!(err("abc").contains("container port \"abc\" is not a number"));
        assert!(err("8080:").contains("missing the container port"));
        assert!(err("70000:80").contains("host port 70000 is out of range (1-65535)"));
        assert!(err("8080:0").contains("container port 0 is out of range"));
        assert!(err("80/icmp").contains("unknown protocol \"icmp\""));
        assert!(err("8000-8010:9000-9005").contains("differ in length"));
        assert!(err("8010-8000:80").contains("ends before it starts"));
        assert!(err("foo:8080:80").contains("\"foo\" is not an IP address"));
        assert!(err("::1:8080:80").contains("brackets"));
        assert!(err("[::1:8080:80").contains("unclosed"));
        assert!(err("[::1]8080:80").contains("expected ':'"));
        assert!(err("1.2.3.4:80").contains("host port \"1.2.3.4\" is not a number"));
        assert!(err(":8080:80").contains("empty host address"));
        assert!(err("1:2:3:4").contains("too many"));
        assert!(err("-1:80").contains("is not a number"));
    }

    #[test]
    fn bindings_round_trip() {
        for s in [
            "80",
            "8080:80",
            "127.0.0.1:8080:80/udp",
            "[::1]:8080:80",
            "8000-8010:80/sctp",
            "10.0.0.1::53",
        ] {
            for p in parse_publish(s).unwrap() {
                let back = PortSpec::from_binding(
                    &p.binding_key(),
                    &p.binding_host_ip(),
                    &p.binding_host_port(),
                )
                .unwrap();
                assert_eq!(back, p, "{s}");
            }
        }
        assert_eq!(
            PortSpec::from_binding("80", "[::1]", "0").unwrap(),
            spec(80, Proto::Tcp, Some("::1"), 0, 0)
        );
        assert!(PortSpec::from_binding("80-81/tcp", "", "")
            .unwrap_err()
            .to_string()
            .contains("not a range"));
        assert!(PortSpec::from_binding("80/xyz", "", "")
            .unwrap_err()
            .to_string()
            .contains("unknown protocol"));
        let b = to_bindings(&parse_publish("127.0.0.1:8080:80").unwrap());
        assert_eq!(
            b["80/tcp"],
            vec![("127.0.0.1".to_string(), "8080".to_string())]
        );
    }

    fn target() -> Target {
        Target {
            network: "web".into(),
            v4: Some("10.1.0.2".parse().unwrap()),
            v6: Some("fd00::2".parse().unwrap()),
            default_host_v4: None,
        }
    }

    fn free(_: Proto, _: IpAddr, _: u16) -> HostUse {
        HostUse::Free
    }

    #[test]
    fn berthds_own_dns_port_is_held() {
        let dns = ["10.1.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let held =
            |proto, ip: &str, port| held_by_berthd(proto, ip.parse().unwrap(), port, &dns, 53);
        for (proto, ip) in [
            (Proto::Udp, "0.0.0.0"),
            (Proto::Tcp, "10.1.0.1"),
            (Proto::Udp, "::"),
        ] {
            match held(proto, ip, 53) {
                HostUse::Held(why) => assert!(why.contains("embedded DNS"), "{why}"),
                HostUse::Free => panic!("{proto} {ip}:53 must be held"),
            }
        }
        assert_eq!(held(Proto::Udp, "198.18.0.1", 53), HostUse::Free);
        assert_eq!(held(Proto::Udp, "0.0.0.0", 54), HostUse::Free);
        assert_eq!(held(Proto::Sctp, "0.0.0.0", 53), HostUse::Free);
        assert_eq!(
            held_by_berthd(Proto::Udp, "0.0.0.0".parse().unwrap(), 53, &[], 53),
            HostUse::Free
        );
    }

    /// `-p 1-65535:1-65535`, both families: every port placed, and a clash with one of this
    /// request's own ports is still found (through the index by port, not a scan).
    #[test]
    fn allocating_every_port_at_once() {
        let none = |_: &Published| None;
        let a = Allocation {
            taken: &none,
            ephemeral: (49153, 60999),
            start: 49153,
        };
        let mut specs = parse_publish("1-65535:1-65535").unwrap();
        let got = allocate(&specs, &target(), &a, &mut free).unwrap();
        assert_eq!(got.len(), 2 * 65535);
        assert_eq!(
            got.last().map(Published::host_text).as_deref(),
            Some("[::]:65535")
        );
        specs.extend(parse_publish("127.0.0.1:65535:80").unwrap());
        let e = allocate(&specs, &target(), &a, &mut free).unwrap_err();
        assert!(e.to_string().contains("this container publishes it"), "{e}");
        assert!(e.to_string().contains("127.0.0.1:65535"), "{e}");
    }

    #[test]
    fn allocation_families_and_conflicts() {
        let t = target();
        let none = |_: &Published| None;
        let a = Allocation {
            taken: &none,
            ephemeral: (49153, 49160),
            start: 49155,
        };
        let got = allocate(&parse_publish("8080:80").unwrap(), &t, &a, &mut free).unwrap();
        assert_eq!(got.len(), 2, "both families: {got:?}");
        assert_eq!(got[0].host_text(), "0.0.0.0:8080");
        assert_eq!(got[1].host_text(), "[::]:8080");
        assert_eq!(got[1].container_ip.to_string(), "fd00::2");

        // v4-only container: only the v4 wildcard; an explicit IPv6 host address is refused.
        let v4only = Target {
            v6: None,
            ..target()
        };
        let got = allocate(&parse_publish("8080:80").unwrap(), &v4only, &a, &mut free).unwrap();
        assert_eq!(got.len(), 1);
        let e = allocate(
            &parse_publish("[::1]:8080:80").unwrap(),
            &v4only,
            &a,
            &mut free,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--ipv6"), "{e}");

        // Random: starts at `start`, skips what berth publishes.
        let taken = vec![(
            "web".to_string(),
            Published {
                proto: Proto::Tcp,
                host_ip: "0.0.0.0".parse().unwrap(),
                host_port: 49155,
                container_ip: "10.1.0.9".parse().unwrap(),
                container_port: 80,
            },
        )];
        let lookup = |p: &Published| find_clash(&taken, p);
        let a2 = Allocation {
            taken: &lookup,
            ephemeral: a.ephemeral,
            start: a.start,
        };
        let got = allocate(&parse_publish("80").unwrap(), &v4only, &a2, &mut free).unwrap();
        assert_eq!(got[0].host_port, 49156);
        // UDP does not clash with TCP.
        let got = allocate(&parse_publish("49155:80/udp").unwrap(), &t, &a2, &mut free).unwrap();
        assert_eq!(got[0].host_port, 49155);
        // A fixed port that is taken names the holder; a specific address clashes with the
        // wildcard, but not across families.
        let e = allocate(
            &parse_publish("127.0.0.1:49155:80").unwrap(),
            &t,
            &a2,
            &mut free,
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Conflict);
        assert!(e.to_string().contains("port is already allocated"), "{e}");
        assert!(e.to_string().contains("\"web\""), "{e}");
        assert!(allocate(
            &parse_publish("[::1]:49155:80").unwrap(),
            &t,
            &a2,
            &mut free
        )
        .is_ok());
        // Twice in one request.
        let mut specs = parse_publish("9000:80").unwrap();
        specs.extend(parse_publish("9000:81").unwrap());
        let e = allocate(&specs, &t, &a, &mut free).unwrap_err();
        assert!(e.to_string().contains("this container publishes it"), "{e}");
        // A host process holds the port: named; a host range moves on to the next port.
        let mut held = |_: Proto, _: IpAddr, p: u16| {
            if p == 7000 {
                HostUse::Held("process 42 (nginx)".into())
            } else {
                HostUse::Free
            }
        };
        let e = allocate(&parse_publish("7000:80").unwrap(), &t, &a, &mut held).unwrap_err();
        assert!(e.to_string().contains("process 42 (nginx)"), "{e}");
        let got = allocate(
            &parse_publish("7000-7002:80").unwrap(),
            &v4only,
            &a,
            &mut held,
        )
        .unwrap();
        assert_eq!(got[0].host_port, 7001);
        // Exhausted range.
        let mut all_held = |_: Proto, _: IpAddr, _: u16| HostUse::Held("x".into());
        let e = allocate(&parse_publish("80").unwrap(), &t, &a, &mut all_held).unwrap_err();
        assert!(
            e.to_string().contains("no free host port in 49153-49160"),
            "{e}"
        );
    }

    #[test]
    fn host_binding_ipv4_default_and_host_ip_check() {
        let t = Target {
            default_host_v4: Some("192.0.2.7".parse().unwrap()),
            v6: None,
            ..target()
        };
        let none = |_: &Published| None;
        let a = Allocation {
            taken: &none,
            ephemeral: (49153, 65535),
            start: 50000,
        };
        let got = allocate(&parse_publish("8080:80").unwrap(), &t, &a, &mut free).unwrap();
        assert_eq!(got[0].host_text(), "192.0.2.7:8080");

        let host: Vec<IpAddr> = vec!["198.18.1.1".parse().unwrap()];
        assert!(check_host_ip("198.18.1.1".parse().unwrap(), &host).is_ok());
        assert!(check_host_ip("127.0.0.5".parse().unwrap(), &host).is_ok());
        assert!(check_host_ip("::".parse().unwrap(), &host).is_ok());
        let e = check_host_ip("203.0.113.9".parse().unwrap(), &host).unwrap_err();
        assert!(e.to_string().contains("not an address of this host"), "{e}");
        assert!(e.to_string().contains("198.18.1.1"), "{e}");
    }

    #[test]
    fn loopback6_relays_for_wildcards_and_ipv6_loopback() {
        let t = target();
        let v4only = Target {
            v6: None,
            ..target()
        };
        let none = |_: &Published| None;
        let a = Allocation {
            taken: &none,
            ephemeral: (49153, 65535),
            start: 50000,
        };
        let relays = |specs: &[&str], t: &Target| {
            let mut all = Vec::new();
            for s in specs {
                all.extend(parse_publish(s).unwrap());
            }
            loopback6_relays(&allocate(&all, t, &a, &mut free).unwrap())
        };
        // Dual stack, wildcard: one relay per protocol, to the container's IPv6 address.
        let r = relays(&["8080:80", "8080:80/udp"], &t);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].proto, Proto::Tcp);
        assert_eq!(r[1].proto, Proto::Udp);
        for x in &r {
            assert_eq!(x.host_port, 8080);
            assert_eq!(x.target.to_string(), "[fd00::2]:80");
            assert!(!x.required);
            assert_eq!(x.key, format!("80/{}", x.proto));
        }
        // IPv4-only container, wildcard: to its IPv4 address.
        let r = relays(&["8080:80"], &v4only);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].target.to_string(), "10.1.0.2:80");
        // `0.0.0.0` and `::` alone are wildcards too.
        assert_eq!(
            relays(&["0.0.0.0:8080:80"], &t)[0].target.to_string(),
            "10.1.0.2:80"
        );
        assert_eq!(
            relays(&["[::]:8080:80"], &t)[0].target.to_string(),
            "[fd00::2]:80"
        );
        // `::1` itself: required.
        let r = relays(&["[::1]:9090:90/udp"], &t);
        assert_eq!(r.len(), 1);
        assert!(r[0].required);
        assert_eq!(r[0].proto, Proto::Udp);
        assert_eq!(r[0].target.to_string(), "[fd00::2]:90");
        // `::1` beats a wildcard of the other family on the same port.
        let r = relays(&["0.0.0.0:7000:70", "[::1]:7000:71"], &t);
        assert_eq!(r.len(), 1);
        assert!(r[0].required);
        assert_eq!(r[0].target.port(), 71);
        // Specific addresses, 127.0.0.1 included, and SCTP: none.
        assert!(relays(&["127.0.0.1:8080:80", "[fd00::9]:8081:80"], &t).is_empty());
        assert!(relays(&["8080:80/sctp"], &t).is_empty());
        // The network's default IPv4 host address is not a wildcard; IPv6 still is.
        let bound = Target {
            default_host_v4: Some("192.0.2.7".parse().unwrap()),
            ..target()
        };
        let r = relays(&["8080:80"], &bound);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].target.to_string(), "[fd00::2]:80");
        let bound4 = Target { v6: None, ..bound };
        assert!(relays(&["8080:80"], &bound4).is_empty());
    }

    #[test]
    fn ports_view_like_docker() {
        let specs = parse_publish("8080:80").unwrap();
        let v = ports_view(&specs, &[]);
        assert_eq!(v["80/tcp"], None);
        let p = Published {
            proto: Proto::Tcp,
            host_ip: "0.0.0.0".parse().unwrap(),
            host_port: 8080,
            container_ip: "10.1.0.2".parse().unwrap(),
            container_port: 80,
        };
        let v = ports_view(&specs, std::slice::from_ref(&p));
        assert_eq!(
            v["80/tcp"],
            Some(vec![("0.0.0.0".to_string(), "8080".to_string())])
        );
    }
}
