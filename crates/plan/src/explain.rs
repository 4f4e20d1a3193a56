//! `berth explain CONTAINER`: who can reach a container, on which ports, from where, and where it
//! can go — computed from the intent with the same decisions berth's nft rules make.
//!
//! The routed part follows the forward chain of [`crate::firewall`] rule by rule ([`forward`]):
//! a flow between two networks, from the outside, or to a published port after DNAT is decided
//! by the first rule that matches it, and the explanation names that rule (its comment, as
//! `nft list table inet berth` shows it), the cause in berth's terms ("networks web and db are
//! isolated") and what would allow the flow (`berth network connect db web`, publish a port).
//! What never reaches the forward hook is said as such: containers of one network are bridged at
//! layer 2 (only bridge-port isolation, `enable_icc=false`, stops them), the host talks to its
//! own bridges directly, a published port reached from the host is translated in `output`, a
//! `127.0.0.1` port never comes in from the LAN (`prerouting_raw`).
//!
//! Each flow that can be tried from this host carries its [`Probe`]s: the vantage point (the
//! host's namespace or another container's) and the address and port to connect to. The daemon
//! runs them for `--verify` and reports any flow where the kernel disagrees with this plan.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::firewall::{rule, FirewallConfig};
use crate::model::{ContainerSpec, Driver, EndpointSpec, NetworkMode, NetworkSpec, SublinkKind};
use crate::names;
use crate::network::{self as planner, MACVLAN_HOST_NOTE};
use crate::ports::{Proto, Published};

/// One container as `explain` needs it.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    /// Its spec.
    pub spec: &'a ContainerSpec,
    /// Whether it runs (only running containers are vantage points, and only a running
    /// container's ports are published).
    pub running: bool,
    /// Its ports in force.
    pub published: Vec<Published>,
    /// TCP sockets listening in its namespace, when they were read (`/proc/PID/net/tcp`).
    pub listening: Option<Vec<SocketAddr>>,
}

/// Everything `explain` looks at.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Every network.
    pub networks: &'a [NetworkSpec],
    /// Every container.
    pub containers: Vec<Member<'a>>,
    /// The static rules' configuration.
    pub firewall: FirewallConfig,
    /// Rules in chain `user` (the administrator's, evaluated first; berth cannot know what
    /// they do), when known.
    pub user_rules: usize,
}

/// Who is on the other side of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// Anything beyond the host (the LAN, the internet).
    Outside,
    /// The host itself (its own namespace, where berthd runs).
    Host,
    /// Another container.
    Container,
    /// The members of a network.
    Network,
    /// Containers sharing the network namespace (`--network container:NAME`).
    Namespace,
}

/// Where a probe is sent from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vantage {
    /// berthd's own namespace (the host).
    Host,
    /// Inside the namespace of this (running) container, by name.
    Container(String),
}

/// A TCP connection attempt that tests a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// From where.
    pub from: Vantage,
    /// To where.
    pub dst: SocketAddr,
}

/// One flow and berth's verdict on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Who is on the other side.
    pub peer_kind: PeerKind,
    /// Its name for people (`the outside (LAN)`, `the host`, `container client`).
    pub peer: String,
    /// What is reached: inbound, the container's address or published port; outbound, the
    /// destination.
    pub target: String,
    /// Which ports (`80/tcp`, `its listening ports`, `any`).
    pub ports: String,
    /// Whether berth lets it through.
    pub allowed: bool,
    /// The rule deciding it, as `chain "comment"`; empty where no rule of berth's is involved
    /// (the cause says why).
    pub rule: String,
    /// Why, in berth's terms.
    pub cause: String,
    /// What would allow a blocked flow (a command), if anything.
    pub fix: Option<String>,
    /// Connection attempts that test it from this host (`--verify`).
    pub probes: Vec<Probe>,
}

/// An address of the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Network name.
    pub network: String,
    /// Its driver.
    pub driver: String,
    /// The address with its prefix.
    pub addr: IpNet,
    /// Interface inside the container.
    pub ifname: String,
}

/// The exposure of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// The container asked about.
    pub container: String,
    /// The container whose network namespace it uses (`container:` mode), if not its own.
    pub netns_of: Option<String>,
    /// `bridge networks`, `host`, `none`, `container:NAME`.
    pub mode: String,
    /// Whether the namespace's holder runs.
    pub running: bool,
    /// Its addresses.
    pub addresses: Vec<Address>,
    /// TCP sockets listening in its namespace, when read.
    pub listening: Option<Vec<SocketAddr>>,
    /// Ports published on the host for it.
    pub published: Vec<Published>,
    /// Who can reach it.
    pub inbound: Vec<Flow>,
    /// Where it can go.
    pub outbound: Vec<Flow>,
    /// Everything else worth knowing.
    pub notes: Vec<String>,
}

/// One side of a routed flow at the forward hook.
#[derive(Debug, Clone, Copy)]
pub enum Side<'a> {
    /// A berth bridge (the network's).
    Bridge(&'a NetworkSpec),
    /// Any interface that is not a berth bridge (the uplink, a macvlan host shim).
    Outside,
}

/// The forward chain's decision on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Accepted.
    pub allowed: bool,
    /// The rule, `forward "comment"`.
    pub rule: String,
    /// Why, in berth's terms.
    pub cause: String,
}

fn decide(allowed: bool, comment: &str, cause: String) -> Decision {
    Decision {
        allowed,
        rule: format!("forward \"{comment}\""),
        cause,
    }
}

/// What berth's forward chain does with the first packet of a connection routed from `from`
/// to `to` (`dnat`: its destination was translated, a published port), rule by rule as
/// [`crate::firewall::base_script`] writes them. Chain `user` (rule 1) is the administrator's
/// and not known here.
pub fn forward(
    cfg: &FirewallConfig,
    from: Side<'_>,
    to: Side<'_>,
    dnat: bool,
    v6: bool,
) -> Decision {
    let (fb, tb) = match (from, to) {
        (Side::Bridge(a), Side::Bridge(b)) => (Some(a), Some(b)),
        (Side::Bridge(a), Side::Outside) => (Some(a), None),
        (Side::Outside, Side::Bridge(b)) => (None, Some(b)),
        (Side::Outside, Side::Outside) => (None, None),
    };
    if let (Some(a), Some(b)) = (fb, tb) {
        if !a.icc && !b.icc {
            let cause = if a.id == b.id {
                format!("network {} has enable_icc=false", a.name)
            } else {
                format!(
                    "networks {} and {} both have enable_icc=false",
                    a.name, b.name
                )
            };
            return decide(false, rule::ICC_OFF, cause);
        }
        if a.id == b.id {
            return decide(
                true,
                rule::SAME_BRIDGE,
                format!("the traffic stays on network {}", a.name),
            );
        }
    }
    if let Some(a) = fb.filter(|a| a.internal) {
        return decide(
            false,
            rule::INTERNAL_OUT,
            format!(
                "network {} is internal: nothing is routed out of it",
                a.name
            ),
        );
    }
    if let Some(b) = tb.filter(|b| b.internal) {
        return decide(
            false,
            rule::INTERNAL_IN,
            format!("network {} is internal: nothing is routed into it", b.name),
        );
    }
    if let (Some(b), true) = (tb, dnat) {
        return decide(
            true,
            rule::PUBLISHED,
            format!(
                "a port published on the host, forwarded to network {}",
                b.name
            ),
        );
    }
    if let (Some(a), Some(b)) = (fb, tb) {
        return decide(
            false,
            rule::ISOLATION,
            format!("networks {} and {} are isolated", a.name, b.name),
        );
    }
    if let Some(b) = tb {
        if planner::allow_direct(b) {
            return decide(
                true,
                rule::DIRECT,
                format!("network {} has berth.network.allow_direct=true", b.name),
            );
        }
        return decide(
            false,
            rule::NOT_FROM_OUTSIDE,
            format!(
                "nothing outside reaches addresses of network {} unless a port is published",
                b.name
            ),
        );
    }
    if let Some(a) = fb {
        let how = if a.masquerade {
            "masqueraded as the host's address"
        } else {
            "not masqueraded (enable_ip_masquerade=false): the outside must route its subnet back to the host"
        };
        return decide(
            true,
            rule::OUT,
            format!("containers of network {} may connect out, {how}", a.name),
        );
    }
    let guard = if v6 {
        cfg.ipv6_forwarding_was_off
    } else {
        cfg.forwarding_was_off
    };
    if guard {
        let c = if v6 { rule::GUARD6 } else { rule::GUARD4 };
        return decide(false, c, "the host does not route for others".into());
    }
    Decision {
        allowed: true,
        rule: String::new(),
        cause: "not berth's traffic: the chain's policy accepts it".into(),
    }
}

/// What `explain` found for `id`: `None` when no such container.
pub fn explain(ctx: &Context<'_>, id: &str) -> Option<Exposure> {
    let subject = ctx.containers.iter().find(|m| m.spec.id == id)?;
    // `container:` mode: the namespace (and so the exposure) is its owner's.
    let (holder, netns_of) = match &subject.spec.mode {
        NetworkMode::Container(owner) => {
            match ctx.containers.iter().find(|m| &m.spec.id == owner) {
                Some(o) => (o, Some(o.spec.name.clone())),
                None => {
                    return Some(Exposure {
                        container: subject.spec.name.clone(),
                        netns_of: None,
                        mode: "container:?".into(),
                        running: false,
                        addresses: Vec::new(),
                        listening: None,
                        published: Vec::new(),
                        inbound: Vec::new(),
                        outbound: Vec::new(),
                        notes: vec![
                            "the container whose network namespace it should share does not exist"
                                .into(),
                        ],
                    })
                }
            }
        }
        _ => (subject, None),
    };
    let mut x = Exposure {
        container: subject.spec.name.clone(),
        netns_of: netns_of.clone(),
        mode: mode_text(ctx, subject.spec),
        running: holder.running,
        addresses: Vec::new(),
        listening: holder.listening.clone(),
        published: holder.published.clone(),
        inbound: Vec::new(),
        outbound: Vec::new(),
        notes: Vec::new(),
    };
    if let Some(o) = &netns_of {
        x.notes.push(format!(
            "it shares the network namespace of container {o} (--network container:{o}): \
             everything below is {o}'s exposure, and they reach each other on 127.0.0.1"
        ));
    }
    if !holder.running {
        x.notes.push(
            "it is not running: nothing reaches it now; this is what applies once it runs \
             (ports are published at start)"
                .into(),
        );
    }
    let ex = Explainer { ctx, holder };
    match &holder.spec.mode {
        NetworkMode::Host => ex.host_mode(&mut x),
        NetworkMode::None => ex.none_mode(&mut x),
        _ => ex.networks_mode(&mut x),
    }
    // Containers that share the holder's namespace.
    for m in &ctx.containers {
        if m.spec.id != subject.spec.id
            && m.spec.mode == NetworkMode::Container(holder.spec.id.clone())
        {
            x.inbound.push(Flow {
                peer_kind: PeerKind::Namespace,
                peer: format!("container {}", m.spec.name),
                target: "127.0.0.1 and every address".into(),
                ports: "any".into(),
                allowed: true,
                rule: String::new(),
                cause: format!(
                    "{} shares this network namespace (--network container:{})",
                    m.spec.name, holder.spec.name
                ),
                fix: None,
                probes: Vec::new(),
            });
        }
    }
    if subject.spec.id != holder.spec.id {
        x.inbound.push(Flow {
            peer_kind: PeerKind::Namespace,
            peer: format!("container {}", holder.spec.name),
            target: "127.0.0.1 and every address".into(),
            ports: "any".into(),
            allowed: true,
            rule: String::new(),
            cause: "the same network namespace".into(),
            fix: None,
            probes: Vec::new(),
        });
    }
    if ctx.user_rules > 0 {
        x.notes.push(format!(
            "chain user holds {} rule(s) of yours: berth evaluates them before its own, so they \
             may change any routed flow above (--verify shows what the kernel does)",
            ctx.user_rules
        ));
    }
    ex.listener_notes(&mut x);
    Some(x)
}

fn mode_text(ctx: &Context<'_>, c: &ContainerSpec) -> String {
    match &c.mode {
        NetworkMode::Networks => "networks".into(),
        NetworkMode::Host => "host".into(),
        NetworkMode::None => "none".into(),
        NetworkMode::Container(id) => format!(
            "container:{}",
            ctx.containers
                .iter()
                .find(|m| &m.spec.id == id)
                .map_or(id.as_str(), |m| m.spec.name.as_str())
        ),
    }
}

/// The address of `net`'s gateway in the family of `want` (the host's address on that bridge).
fn gateway_of(net: &NetworkSpec, v6: bool) -> Option<IpAddr> {
    net.subnets
        .iter()
        .find(|s| s.gateway.is_ipv6() == v6)
        .map(|s| s.gateway)
}

/// Whether and how the host (berthd's namespace) reaches `addr` of `net`, a network with a
/// bridge. A bridge network's bridge is the host's own interface. An overlay network's bridge
/// is in the network's namespace, which the host reaches through the uplink the subnets are
/// routed to; an `--internal` overlay has no uplink (docs/OVERLAY.md), so no route.
fn host_reach(net: &NetworkSpec, addr: IpAddr) -> (bool, String) {
    let gateway = gateway_of(net, addr.is_ipv6());
    if net.driver != Driver::Overlay {
        return (
            true,
            format!(
                "the host is on bridge {} ({}): it talks to the network directly, no forwarding rule applies",
                net.bridge,
                gateway.map_or(String::new(), |g| format!("gateway {g}"))
            ),
        );
    }
    let ns = names::overlay_netns_name(&net.id);
    if net.internal {
        return (
            false,
            format!(
                "network {} is an internal overlay: its bridge is in the namespace {ns} and no uplink joins that to the host, so the host has no route to {addr}",
                net.name
            ),
        );
    }
    (
        true,
        format!(
            "the host routes {} to uplink {}, into the network's namespace {ns} where its bridge is{}: the host's own traffic, no forwarding rule applies",
            net.subnets
                .iter()
                .find(|s| s.subnet.contains(&addr))
                .map_or_else(|| addr.to_string(), |s| s.subnet.to_string()),
            names::uplink_name(&net.id),
            gateway.map_or(String::new(), |g| format!(" (gateway {g})"))
        ),
    )
}

fn same_netns(a: &ContainerSpec, holder: &ContainerSpec) -> bool {
    a.id == holder.id || a.mode == NetworkMode::Container(holder.id.clone())
}

struct Explainer<'c, 'a> {
    ctx: &'c Context<'a>,
    holder: &'c Member<'a>,
}

impl<'a> Explainer<'_, 'a> {
    fn net(&self, id: &str) -> Option<&'a NetworkSpec> {
        self.ctx.networks.iter().find(|n| n.id == id)
    }

    /// The network of `c`'s default route, if any.
    fn gateway_net(&self, c: &ContainerSpec) -> Option<&'a NetworkSpec> {
        let ep = planner::gateway_endpoint(c, self.ctx.networks)?;
        self.net(&ep.network_id)
    }

    /// Running containers with their own namespace that are other than the holder: the
    /// vantage points.
    fn peers(&self) -> impl Iterator<Item = &Member<'a>> {
        self.ctx.containers.iter().filter(|m| {
            m.running
                && m.spec.mode == NetworkMode::Networks
                && !same_netns(m.spec, self.holder.spec)
        })
    }

    /// The TCP ports a probe of `addr` tries: the listeners that accept on it.
    fn ports_on(&self, addr: IpAddr) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .holder
            .listening
            .iter()
            .flatten()
            .filter(|l| {
                (l.ip().is_unspecified() && l.ip().is_ipv6() == addr.is_ipv6()) || l.ip() == addr
                    // A `::` listener without IPV6_V6ONLY accepts IPv4 too.
                    || (l.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && addr.is_ipv4())
            })
            .map(SocketAddr::port)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn ports_text(&self, addr: IpAddr) -> String {
        match &self.holder.listening {
            None => "its listening ports".into(),
            Some(_) => {
                let p = self.ports_on(addr);
                if p.is_empty() {
                    "its listening ports (none)".into()
                } else {
                    p.iter()
                        .map(|p| format!("{p}/tcp"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            }
        }
    }

    fn probes_to(&self, from: Vantage, addr: IpAddr) -> Vec<Probe> {
        self.ports_on(addr)
            .into_iter()
            .map(|p| Probe {
                from: from.clone(),
                dst: SocketAddr::new(addr, p),
            })
            .collect()
    }

    fn host_mode(&self, x: &mut Exposure) {
        let probes = self.probes_to(Vantage::Host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        x.inbound.push(Flow {
            peer_kind: PeerKind::Outside,
            peer: "the outside (LAN)".into(),
            target: "the host's addresses".into(),
            ports: "its listening ports".into(),
            allowed: true,
            rule: String::new(),
            cause: "it uses the host's network namespace (--network host): its sockets are the \
                    host's, no berth rule applies (only the host's own firewall)"
                .into(),
            fix: None,
            probes: Vec::new(),
        });
        x.inbound.push(Flow {
            peer_kind: PeerKind::Host,
            peer: "the host".into(),
            target: "127.0.0.1 and the host's addresses".into(),
            ports: self.ports_text(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            allowed: true,
            rule: String::new(),
            cause: "the same network namespace".into(),
            fix: None,
            probes,
        });
        x.inbound.push(Flow {
            peer_kind: PeerKind::Network,
            peer: "containers of other networks".into(),
            target: "the host's addresses (e.g. a network's gateway)".into(),
            ports: "its listening ports".into(),
            allowed: true,
            rule: String::new(),
            cause: "like any host service: berth filters nothing addressed to the host itself"
                .into(),
            fix: None,
            probes: Vec::new(),
        });
        x.outbound.push(Flow {
            peer_kind: PeerKind::Outside,
            peer: "anywhere the host reaches".into(),
            target: "any".into(),
            ports: "any".into(),
            allowed: true,
            rule: String::new(),
            cause: "it is the host as far as the network goes".into(),
            fix: None,
            probes: Vec::new(),
        });
    }

    fn none_mode(&self, x: &mut Exposure) {
        let name = &self.holder.spec.name;
        let fix = Some(format!("berth network connect NETWORK {name}"));
        for (kind, peer) in [
            (PeerKind::Outside, "the outside (LAN)"),
            (PeerKind::Host, "the host"),
            (PeerKind::Network, "other containers"),
        ] {
            x.inbound.push(Flow {
                peer_kind: kind,
                peer: peer.into(),
                target: "—".into(),
                ports: "any".into(),
                allowed: false,
                rule: String::new(),
                cause: "--network none: loopback only, no interface reaches it".into(),
                fix: fix.clone(),
                probes: Vec::new(),
            });
        }
        x.outbound.push(Flow {
            peer_kind: PeerKind::Outside,
            peer: "anything but itself".into(),
            target: "any".into(),
            ports: "any".into(),
            allowed: false,
            rule: String::new(),
            cause: "--network none: loopback only".into(),
            fix,
            probes: Vec::new(),
        });
    }

    fn networks_mode(&self, x: &mut Exposure) {
        let c = self.holder.spec;
        for ep in &c.endpoints {
            let Some(net) = self.net(&ep.network_id) else {
                continue;
            };
            for a in &ep.addrs {
                x.addresses.push(Address {
                    network: net.name.clone(),
                    driver: net.driver.as_str().into(),
                    addr: *a,
                    ifname: ep.ifname.clone(),
                });
            }
            match net.driver {
                Driver::Bridge | Driver::Overlay => self.bridge_endpoint(x, net, ep),
                Driver::Macvlan | Driver::Ipvlan => self.sublink_endpoint(x, net, ep),
                Driver::Host | Driver::Null => {}
            }
        }
        if c.endpoints.is_empty() {
            x.notes
                .push("it is attached to no network: loopback only".into());
        }
        for p in &self.holder.published {
            self.published_port(x, p);
        }
        self.outbound(x);
    }

    fn bridge_endpoint(&self, x: &mut Exposure, net: &'a NetworkSpec, ep: &EndpointSpec) {
        let cfg = &self.ctx.firewall;
        let name = &self.holder.spec.name;
        for a in &ep.addrs {
            let addr = a.addr();
            let target = format!("{addr} on network {}", net.name);
            let ports = self.ports_text(addr);
            let d = forward(cfg, Side::Outside, Side::Bridge(net), false, addr.is_ipv6());
            x.inbound.push(Flow {
                peer_kind: PeerKind::Outside,
                peer: "the outside (LAN)".into(),
                target: target.clone(),
                ports: ports.clone(),
                allowed: d.allowed,
                fix: (!d.allowed && !net.internal)
                    .then(|| format!("publish a port (berth run -p HOSTPORT:PORT …), or create the network with -o {}=true", planner::OPT_ALLOW_DIRECT)),
                rule: d.rule,
                cause: format!("{} (when a router sends it {addr} through this host)", d.cause),
                probes: Vec::new(),
            });
            let (host_ok, host_why) = host_reach(net, addr);
            x.inbound.push(Flow {
                peer_kind: PeerKind::Host,
                peer: "the host".into(),
                target: target.clone(),
                ports: ports.clone(),
                allowed: host_ok,
                rule: String::new(),
                cause: host_why,
                fix: None,
                probes: self.probes_to(Vantage::Host, addr),
            });
            if let Some(ov) = net.overlay.filter(|_| net.driver == Driver::Overlay) {
                // The other hosts' containers of the network are bridged to this one through
                // the VXLAN port in the network's namespace: no host's inet hook sees them.
                let (allowed, cause, fix) = if net.icc {
                    let how = if ov.encrypted {
                        "encrypted by berth's WireGuard datapath between the hosts"
                    } else {
                        "unencrypted on the underlay"
                    };
                    (
                        true,
                        format!(
                            "bridged at layer 2 in the network's namespace {} through its VXLAN port (VNI {}, UDP {}, {how}): no forwarding rule applies",
                            names::overlay_netns_name(&net.id),
                            ov.vni,
                            ov.port
                        ),
                        None,
                    )
                } else {
                    (
                        false,
                        format!(
                            "network {} has enable_icc=false: its bridge ports are isolated from each other (kernel bridge-port isolation)",
                            net.name
                        ),
                        Some("publish a port: containers of the network reach it through a host address".to_string()),
                    )
                };
                x.inbound.push(Flow {
                    peer_kind: PeerKind::Network,
                    peer: format!("containers of network {} on other hosts", net.name),
                    target: target.clone(),
                    ports: ports.clone(),
                    allowed,
                    rule: String::new(),
                    cause,
                    fix,
                    probes: Vec::new(),
                });
            }
            for s in self.peers() {
                let probes = self.probes_to(Vantage::Container(s.spec.name.clone()), addr);
                let fix = Some(format!(
                    "berth network connect {} {}",
                    net.name, s.spec.name
                ));
                let peer = format!("container {}", s.spec.name);
                let (allowed, rule, cause, fix) = if s
                    .spec
                    .endpoints
                    .iter()
                    .any(|e| e.network_id == net.id)
                {
                    if net.icc {
                        let place = if net.driver == Driver::Overlay {
                            format!(" in its namespace {}", names::overlay_netns_name(&net.id))
                        } else {
                            String::new()
                        };
                        (
                            true,
                            String::new(),
                            format!("both are on network {}: bridged at layer 2{place}, no forwarding rule applies", net.name),
                            None,
                        )
                    } else {
                        (
                            false,
                            String::new(),
                            format!(
                                "network {} has enable_icc=false: its bridge ports are isolated from each other (kernel bridge-port isolation)",
                                net.name
                            ),
                            Some("publish a port: containers of the network reach it through a host address".to_string()),
                        )
                    }
                } else {
                    match self.gateway_net(s.spec) {
                        None => (
                            false,
                            String::new(),
                            format!(
                                "{} is only on internal networks: it has no route beyond them",
                                s.spec.name
                            ),
                            fix,
                        ),
                        Some(g) if !g.driver.has_bridge() => (
                            false,
                            String::new(),
                            format!(
                                "{} leaves through the LAN of its {} network {}: the host does not route the LAN to container addresses",
                                s.spec.name,
                                g.driver.as_str(),
                                g.name
                            ),
                            fix,
                        ),
                        Some(g) => {
                            let d = forward(cfg, Side::Bridge(g), Side::Bridge(net), false, addr.is_ipv6());
                            let fix = (!d.allowed).then_some(fix).flatten();
                            (d.allowed, d.rule, d.cause, fix)
                        }
                    }
                };
                x.inbound.push(Flow {
                    peer_kind: PeerKind::Container,
                    peer,
                    target: target.clone(),
                    ports: ports.clone(),
                    allowed,
                    rule,
                    cause,
                    fix,
                    probes,
                });
            }
        }
        if !net.icc {
            x.notes.push(format!(
                "network {} has enable_icc=false: {name} and its neighbours there cannot reach each other directly",
                net.name
            ));
        }
        if net.driver == Driver::Overlay {
            x.notes.push(format!(
                "network {} is an overlay: its traffic between containers, on this host or \
                 others, is bridged in its namespace {} and never reaches the host's hooks \
                 (berth trace follows it there too: the bridge, the anti-spoofing guard, the \
                 VXLAN port)",
                net.name,
                names::overlay_netns_name(&net.id)
            ));
        }
    }

    fn sublink_endpoint(&self, x: &mut Exposure, net: &'a NetworkSpec, ep: &EndpointSpec) {
        let parent = planner::parent_of(net).unwrap_or("?").to_string();
        let kind = planner::sublink_kind(net);
        let (same_ok, same_why) = match kind {
            Some(SublinkKind::Macvlan(1)) => (false, "macvlan_mode=private: containers of the network cannot reach each other".to_string()),
            Some(SublinkKind::Macvlan(2)) => (true, "macvlan_mode=vepa: through the LAN switch, which must reflect frames back (hairpin on its port)".to_string()),
            Some(SublinkKind::Ipvlan(_, 1)) => (false, "ipvlan_flag=private: containers of the network cannot reach each other".to_string()),
            _ => (true, format!("both are on {} network {}: switched by the kernel on {parent}", net.driver.as_str(), net.name)),
        };
        let shim = planner::shim_plan(net);
        for a in &ep.addrs {
            let addr = a.addr();
            let target = format!("{addr} on network {}", net.name);
            let ports = self.ports_text(addr);
            let via_shim = shim
                .as_ref()
                .filter(|s| s.routes.iter().any(|r| r.dst.contains(&addr)));
            x.inbound.push(Flow {
                peer_kind: PeerKind::Outside,
                peer: "the outside (LAN)".into(),
                target: target.clone(),
                ports: ports.clone(),
                allowed: true,
                rule: String::new(),
                cause: format!(
                    "directly on the LAN of {parent} with its own address: no NAT and no berth rule applies"
                ),
                fix: None,
                probes: Vec::new(),
            });
            let (h_ok, h_why, h_fix) = match via_shim {
                Some(s) => (
                    true,
                    format!("through the host shim {} on {parent}", s.name),
                    None,
                ),
                None => (
                    false,
                    MACVLAN_HOST_NOTE.to_string(),
                    (net.driver == Driver::Macvlan).then(|| {
                        format!(
                            "create the network with -o {}=true (and an --ip-range)",
                            planner::OPT_HOST_SHIM
                        )
                    }),
                ),
            };
            x.inbound.push(Flow {
                peer_kind: PeerKind::Host,
                peer: "the host".into(),
                target: target.clone(),
                ports: ports.clone(),
                allowed: h_ok,
                rule: String::new(),
                cause: h_why.clone(),
                fix: h_fix.clone(),
                probes: self.probes_to(Vantage::Host, addr),
            });
            for s in self.peers() {
                let probes = self.probes_to(Vantage::Container(s.spec.name.clone()), addr);
                let on_net = s.spec.endpoints.iter().any(|e| e.network_id == net.id);
                let (ok, rule, why, fix) = if on_net {
                    (same_ok, String::new(), same_why.clone(), None)
                } else {
                    match (self.gateway_net(s.spec), via_shim) {
                        (Some(g), Some(_)) if g.driver.has_bridge() => {
                            let d = forward(
                                &self.ctx.firewall,
                                Side::Bridge(g),
                                Side::Outside,
                                false,
                                addr.is_ipv6(),
                            );
                            (
                                d.allowed,
                                d.rule,
                                format!("routed by the host through its shim: {}", d.cause),
                                None,
                            )
                        }
                        (Some(g), None) if g.driver.has_bridge() => (
                            false,
                            String::new(),
                            format!("{} is routed through the host, and {h_why}", s.spec.name),
                            h_fix.clone(),
                        ),
                        _ => (
                            false,
                            String::new(),
                            format!("{} has no route to the LAN of {parent}", s.spec.name),
                            Some(format!(
                                "berth network connect {} {}",
                                net.name, s.spec.name
                            )),
                        ),
                    }
                };
                x.inbound.push(Flow {
                    peer_kind: PeerKind::Container,
                    peer: format!("container {}", s.spec.name),
                    target: target.clone(),
                    ports: ports.clone(),
                    allowed: ok,
                    rule,
                    cause: why,
                    fix,
                    probes,
                });
            }
        }
    }

    fn published_port(&self, x: &mut Exposure, p: &Published) {
        let cfg = &self.ctx.firewall;
        let v6 = p.host_ip.is_ipv6();
        let target = format!(
            "{} → {}:{}",
            p.host_text(),
            fmt_ip(p.container_ip),
            p.container_port
        );
        let ports = format!("{}/{}", p.host_port, p.proto);
        let tcp = p.proto == Proto::Tcp;
        let gw = self.gateway_net(self.holder.spec);
        let to = gw.map_or(Side::Outside, Side::Bridge);
        let loopback = p.host_ip.is_loopback();
        let any_text = if p.host_ip.is_unspecified() {
            "every address of the host"
        } else {
            "that address"
        };
        // From the outside.
        let (ok, rule_s, cause, fix) = if loopback {
            (
                false,
                format!("prerouting_raw \"{}\"", rule::LOOPBACK4),
                format!(
                    "published on {} only: never reachable from the LAN",
                    fmt_ip(p.host_ip)
                ),
                Some(format!(
                    "publish on every address (-p {}:{}) or on a LAN address of the host",
                    p.host_port, p.container_port
                )),
            )
        } else {
            let d = forward(cfg, Side::Outside, to, true, v6);
            (
                d.allowed,
                d.rule,
                format!("DNAT in prerouting to {any_text}; {}", d.cause),
                None,
            )
        };
        x.inbound.push(Flow {
            peer_kind: PeerKind::Outside,
            peer: "the outside (LAN)".into(),
            target: target.clone(),
            ports: ports.clone(),
            allowed: ok,
            rule: rule_s,
            cause,
            fix,
            probes: Vec::new(),
        });
        // From the host (the nat output hook translates; nothing is forwarded).
        let host_dst = if p.host_ip.is_unspecified() {
            if v6 {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
        } else {
            p.host_ip
        };
        let how = if host_dst == IpAddr::V6(Ipv6Addr::LOCALHOST) {
            "berthd's relay answers [::1] (the kernel cannot DNAT ::1)".to_string()
        } else {
            format!(
                "DNAT in output for the host's own connections ({} included)",
                fmt_ip(host_dst)
            )
        };
        x.inbound.push(Flow {
            peer_kind: PeerKind::Host,
            peer: "the host".into(),
            target: target.clone(),
            ports: ports.clone(),
            allowed: true,
            rule: String::new(),
            cause: how,
            fix: None,
            probes: if tcp {
                vec![Probe {
                    from: Vantage::Host,
                    dst: SocketAddr::new(host_dst, p.host_port),
                }]
            } else {
                Vec::new()
            },
        });
        // From other containers, through a host address.
        for s in self.peers() {
            let sg = self.gateway_net(s.spec);
            // The host address the peer can use: the given one, or its network's gateway.
            let via_net = sg.or_else(|| {
                s.spec
                    .endpoints
                    .iter()
                    .filter_map(|e| self.net(&e.network_id))
                    .find(|n| n.driver.has_bridge() && gateway_of(n, v6).is_some())
            });
            let dst = if p.host_ip.is_unspecified() {
                via_net.and_then(|n| gateway_of(n, v6))
            } else {
                Some(p.host_ip)
            };
            let (ok, rule_s, cause, fix) = if loopback {
                (
                    false,
                    String::new(),
                    format!(
                        "published on {} only: a container's loopback is its own",
                        fmt_ip(p.host_ip)
                    ),
                    Some(format!(
                        "publish on every address (-p {}:{})",
                        p.host_port, p.container_port
                    )),
                )
            } else {
                match via_net {
                    Some(n) if n.driver.has_bridge() && dst.is_some() => {
                        let d = forward(cfg, Side::Bridge(n), to, true, v6);
                        let fix = (!d.allowed).then(|| match gw {
                            Some(g) => format!("berth network connect {} {}", g.name, s.spec.name),
                            None => String::new(),
                        });
                        (
                            d.allowed,
                            d.rule,
                            format!(
                                "through {}: {}",
                                dst.map(fmt_ip).unwrap_or_default(),
                                d.cause
                            ),
                            fix,
                        )
                    }
                    _ => (
                        false,
                        String::new(),
                        format!(
                            "{} has no route to a host address of this family",
                            s.spec.name
                        ),
                        None,
                    ),
                }
            };
            x.inbound.push(Flow {
                peer_kind: PeerKind::Container,
                peer: format!("container {}", s.spec.name),
                target: target.clone(),
                ports: ports.clone(),
                allowed: ok,
                rule: rule_s,
                cause,
                fix,
                probes: match (tcp, dst, loopback) {
                    (true, Some(d), false) => vec![Probe {
                        from: Vantage::Container(s.spec.name.clone()),
                        dst: SocketAddr::new(d, p.host_port),
                    }],
                    _ => Vec::new(),
                },
            });
        }
    }

    fn outbound(&self, x: &mut Exposure) {
        let c = self.holder.spec;
        let cfg = &self.ctx.firewall;
        let nets: Vec<&NetworkSpec> = c
            .endpoints
            .iter()
            .filter_map(|e| self.net(&e.network_id))
            .collect();
        let gw = self.gateway_net(c);
        let connect_any = Some(format!(
            "berth network connect NETWORK {} (a network that is not internal)",
            c.name
        ));
        // Beyond the host.
        let flow = match gw {
            Some(g) if g.driver.has_bridge() => {
                let d = forward(cfg, Side::Bridge(g), Side::Outside, false, false);
                (
                    d.allowed,
                    d.rule,
                    format!(
                        "through its default route on network {}: {}",
                        g.name, d.cause
                    ),
                    None,
                )
            }
            Some(g) => (
                true,
                String::new(),
                format!(
                    "directly on the LAN of {} network {}, through its router",
                    g.driver.as_str(),
                    g.name
                ),
                None,
            ),
            None => match nets.iter().find(|n| n.internal) {
                Some(n) => {
                    let d = forward(cfg, Side::Bridge(n), Side::Outside, false, false);
                    (
                        d.allowed,
                        d.rule,
                        format!("{}; it has no default route", d.cause),
                        connect_any.clone(),
                    )
                }
                None => (
                    false,
                    String::new(),
                    "it has no network with a way out".into(),
                    connect_any.clone(),
                ),
            },
        };
        x.outbound.push(Flow {
            peer_kind: PeerKind::Outside,
            peer: "the outside (LAN, internet)".into(),
            target: "any".into(),
            ports: "any".into(),
            allowed: flow.0,
            rule: flow.1,
            cause: flow.2,
            fix: flow.3,
            probes: Vec::new(),
        });
        // The host.
        let bridge = nets.iter().find(|n| n.driver.has_bridge());
        let host_flow = match bridge {
            Some(n) => (true, format!("the host's addresses (gateway of network {} included); berth filters nothing addressed to the host itself", n.name), None),
            None if nets.iter().any(|n| planner::shim_plan(n).is_some()) => (true, "through the macvlan host shim".into(), None),
            None if nets.is_empty() => (false, "it is on no network".into(), connect_any.clone()),
            None => (false, MACVLAN_HOST_NOTE.to_string(), None),
        };
        x.outbound.push(Flow {
            peer_kind: PeerKind::Host,
            peer: "the host".into(),
            target: "its listening services".into(),
            ports: "any".into(),
            allowed: host_flow.0,
            rule: String::new(),
            cause: host_flow.1,
            fix: host_flow.2,
            probes: Vec::new(),
        });
        // Its own networks' members.
        for n in &nets {
            let (ok, why) = match n.driver {
                Driver::Bridge | Driver::Overlay if n.icc => {
                    (true, "bridged at layer 2".to_string())
                }
                Driver::Bridge | Driver::Overlay => (
                    false,
                    format!(
                        "network {} has enable_icc=false (bridge-port isolation)",
                        n.name
                    ),
                ),
                _ => match planner::sublink_kind(n) {
                    Some(SublinkKind::Macvlan(1)) | Some(SublinkKind::Ipvlan(_, 1)) => {
                        (false, "private mode".to_string())
                    }
                    _ => (
                        true,
                        format!("switched by the kernel on the parent of {}", n.name),
                    ),
                },
            };
            x.outbound.push(Flow {
                peer_kind: PeerKind::Network,
                peer: format!("containers of network {}", n.name),
                target: "their addresses".into(),
                ports: "any".into(),
                allowed: ok,
                rule: String::new(),
                cause: why,
                fix: None,
                probes: Vec::new(),
            });
        }
        // Other bridge networks.
        for m in self
            .ctx
            .networks
            .iter()
            .filter(|m| m.driver == Driver::Bridge && !nets.iter().any(|n| n.id == m.id))
        {
            let fix = Some(format!(
                "berth network connect {} {}, or publish a port of theirs",
                m.name, c.name
            ));
            let (ok, rule_s, why) = match gw {
                Some(g) if g.driver.has_bridge() => {
                    let d = forward(cfg, Side::Bridge(g), Side::Bridge(m), false, false);
                    (d.allowed, d.rule, d.cause)
                }
                Some(g) => (
                    false,
                    String::new(),
                    format!("it leaves through the LAN of network {}", g.name),
                ),
                None => (
                    false,
                    String::new(),
                    "it has no route beyond its networks".into(),
                ),
            };
            x.outbound.push(Flow {
                peer_kind: PeerKind::Network,
                peer: format!("containers of network {}", m.name),
                target: "their addresses".into(),
                ports: "any".into(),
                allowed: ok,
                rule: rule_s,
                cause: why,
                fix: (!ok).then_some(fix).flatten(),
                probes: Vec::new(),
            });
        }
    }

    fn listener_notes(&self, x: &mut Exposure) {
        let Some(l) = &self.holder.listening else {
            return;
        };
        for s in l.iter().filter(|s| s.ip().is_loopback()) {
            x.notes.push(format!(
                "it listens on {s} only: reachable from inside its own namespace, nowhere else"
            ));
        }
        for p in self
            .holder
            .published
            .iter()
            .filter(|p| p.proto == Proto::Tcp)
        {
            let served = l.iter().any(|s| {
                s.port() == p.container_port
                    && (s.ip().is_unspecified() || s.ip() == p.container_ip)
            });
            if !served {
                x.notes.push(format!(
                    "port {}/tcp is published ({}) but nothing listens on {}:{}: connections are refused",
                    p.container_port,
                    p.host_text(),
                    fmt_ip(p.container_ip),
                    p.container_port
                ));
            }
        }
    }
}

fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests;
