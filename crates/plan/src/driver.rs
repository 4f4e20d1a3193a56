//! The driver seam: what a network driver contributes to the desired host state.
//!
//! The reconcile loop does not know bridges from anything else: [`desired`] asks
//! each network's driver ([`driver`]) for its part — the network's own links and sysctls, each
//! running container's endpoint on it, its nft elements — and the daemon asks the driver what
//! a network can do (join other networks, has a link of its own to guard against foreign
//! ones). A new driver (macvlan, ipvlan, a VXLAN overlay) is one more implementation of
//! [`NetworkDriver`] plus, where it needs a new kind of kernel object, a new map in
//! [`DesiredHost`] with its diff and its step; nothing in the daemon changes.

use crate::firewall::Elements;
use crate::firewall::FirewallConfig;
use crate::host::{
    bridge_alias, sublink_key, veth_alias, DesiredBridge, DesiredEndpoint, DesiredHost,
    DesiredParent, DesiredRoutes, DesiredShim, DesiredSublink, StepOp,
};
use crate::model::{
    ContainerSpec, Driver, EndpointPlan, EndpointSpec, NetworkMode, NetworkSpec, RoutePlan,
};
use crate::network as planner;

/// Endpoint `ep` of running container `c` (namespace `netns`) on bridge network `net`, as
/// [`desired`] has it (its plan without routes), and the default routes it brings when it is
/// the gateway endpoint.
fn bridge_endpoint(
    net: &NetworkSpec,
    c: &ContainerSpec,
    ep: &EndpointSpec,
    netns: &str,
    gateway: bool,
) -> (DesiredEndpoint, Vec<RoutePlan>) {
    let mut plan = planner::endpoint_plan(net, ep, netns, gateway);
    let routes = std::mem::take(&mut plan.routes);
    let desired = DesiredEndpoint {
        plan,
        alias: veth_alias(&ep.id, &c.id),
        container: c.name.clone(),
        network: net.name.clone(),
    };
    (desired, routes)
}

/// The creation of endpoint `ep` of running container `c` (namespace `netns`) on `net`, as a
/// pass that plans it would have it before it adds routes: `Some` only on a local bridge
/// network, whose endpoint's plan depends on nothing but the network, the endpoint and the
/// namespace. A `network connect` starts this while its pass reads the store and plans, and
/// the pass takes it over when it plans the same creation (`berthd`'s `Prestart`).
pub fn endpoint_creation(
    net: &NetworkSpec,
    c: &ContainerSpec,
    ep: &EndpointSpec,
    netns: &str,
) -> Option<StepOp> {
    if net.driver != Driver::Bridge {
        return None;
    }
    let (desired, _) = bridge_endpoint(net, c, ep, netns, false);
    Some(StepOp::CreateEndpoint {
        plan: desired.plan,
        alias: desired.alias,
    })
}

/// Whether the step a pass planned, `planned`, is the creation `started` that a call began
/// before the pass ([`endpoint_creation`]): the same endpoint, mark and plan, except that the
/// pass's plan may carry the routes of a gateway endpoint, which only it knows. `Some` with
/// the steps to apply once the started creation is done (the routes, as a
/// [`StepOp::ReplaceRoutes`] of its namespace; none when there are none); `None` when it is
/// another step.
pub fn taken_over(started: &StepOp, planned: &StepOp) -> Option<Vec<StepOp>> {
    let (
        StepOp::CreateEndpoint {
            plan: began,
            alias: a,
        },
        StepOp::CreateEndpoint { plan, alias },
    ) = (started, planned)
    else {
        return None;
    };
    let same = a == alias
        && began.routes.is_empty()
        && *began
            == EndpointPlan {
                routes: Vec::new(),
                ..plan.clone()
            };
    same.then(|| {
        (!plan.routes.is_empty())
            .then(|| StepOp::ReplaceRoutes {
                netns: plan.netns.clone(),
                routes: plan.routes.clone(),
            })
            .into_iter()
            .collect()
    })
}

/// What a network driver contributes and can do.
pub trait NetworkDriver: Sync {
    /// Docker's name (`bridge`, `host`, `null`).
    fn name(&self) -> &'static str;

    /// Whether a container may be attached to networks of this driver together with others
    /// (`host` and `null` replace the container's whole network namespace).
    fn combinable(&self) -> bool;

    /// The link berth creates for the network itself (the bridge), if any: at create time the
    /// daemon refuses a name taken by a link berth did not create.
    fn network_link(&self, net: &NetworkSpec) -> Option<String>;

    /// The host interface the network's endpoints hang off (macvlan, ipvlan), if any: berth
    /// never creates, changes or removes it; at create time the daemon refuses a parent that
    /// does not exist or is one of berth's own links.
    fn parent(&self, _net: &NetworkSpec) -> Option<String> {
        None
    }

    /// The kernel module the driver's links need (`macvlan`, `ipvlan`), if any: the daemon
    /// refuses to create a network of a driver whose module the kernel lacks.
    fn kernel_module(&self) -> Option<&'static str> {
        None
    }

    /// Adds the network's own kernel objects (links, their sysctls) to `d`.
    fn contribute_network(&self, net: &NetworkSpec, d: &mut DesiredHost);

    /// Adds the endpoint `ep` of running container `c` (namespace `netns`) to `d`. Returns the
    /// default routes the container gets through it when it is the gateway endpoint.
    fn contribute_endpoint(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        ep: &EndpointSpec,
        netns: &str,
        gateway: bool,
        d: &mut DesiredHost,
    ) -> Vec<RoutePlan>;

    /// Adds the network's nft set elements.
    fn elements(&self, net: &NetworkSpec, e: &mut Elements);
}

/// One running (or starting) container, as the desired state needs it.
#[derive(Debug, Clone)]
pub struct RunningContainer<'a> {
    /// Its spec.
    pub spec: &'a ContainerSpec,
    /// Path of its network namespace (`/proc/PID/ns/net`, or the fd path of a namespace being
    /// set up).
    pub netns: String,
}

/// What the host-wide sysctls depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardingIntent {
    /// IPv6 forwarding must be on (a dual-stack network exists).
    pub ipv6: bool,
    /// No dual-stack network is left but berth turned IPv6 forwarding on earlier and the host
    /// had it off: turn it off again.
    pub ipv6_restore_off: bool,
}

/// Computes the desired host state from the intent: networks, the containers that run (with
/// their namespaces) and the firewall configuration. `elements` are the nft elements wanted
/// (the caller adds port maps for a full pass).
pub fn desired(
    networks: &[NetworkSpec],
    running: &[RunningContainer<'_>],
    firewall: FirewallConfig,
    forwarding: ForwardingIntent,
    elements: Elements,
    with_maps: bool,
) -> DesiredHost {
    let mut d = DesiredHost {
        firewall,
        elements,
        with_maps,
        ..DesiredHost::default()
    };
    d.sysctls.insert(
        "net.ipv4.ip_forward".into(),
        ("1".into(), "containers reach the outside".into()),
    );
    if forwarding.ipv6 {
        d.sysctls.insert(
            "net.ipv6.conf.all.forwarding".into(),
            ("1".into(), "a dual-stack network exists".into()),
        );
    } else if forwarding.ipv6_restore_off {
        d.sysctls.insert(
            "net.ipv6.conf.all.forwarding".into(),
            (
                "0".into(),
                "no dual-stack network is left; the host had IPv6 forwarding off".into(),
            ),
        );
    }
    for net in networks {
        driver(net.driver).contribute_network(net, &mut d);
    }
    for rc in running {
        let c = rc.spec;
        let gw = planner::gateway_endpoint(c, networks).map(|e| e.id.clone());
        let mut routes = DesiredRoutes {
            container: c.name.clone(),
            ifname: String::new(),
            routes: Vec::new(),
        };
        for ep in &c.endpoints {
            let Some(net) = networks.iter().find(|n| n.id == ep.network_id) else {
                continue;
            };
            let is_gw = gw.as_deref() == Some(ep.id.as_str());
            let r = driver(net.driver).contribute_endpoint(net, c, ep, &rc.netns, is_gw, &mut d);
            if is_gw {
                routes.ifname = ep.ifname.clone();
                routes.routes = r;
            }
        }
        // A container of its own namespace is looked into even without endpoints: a macvlan
        // link of a network it just left lives there and must go.
        if !c.endpoints.is_empty() || c.mode == NetworkMode::Networks {
            d.routes.insert(rc.netns.clone(), routes);
        }
    }
    d
}

/// Linux bridge + veth endpoints (Docker's `bridge`).
pub struct BridgeDriver;
/// The host's own namespace (Docker's `host`): nothing to create.
pub struct HostDriver;
/// Loopback only (Docker's `null`): nothing to create.
pub struct NullDriver;

/// Links on a host interface created directly in each container's namespace (Docker's
/// `macvlan` and `ipvlan`): the network has no link of its own and no nft elements; its gateway
/// is the LAN's router.
pub struct SublinkDriver {
    name: &'static str,
}
/// Docker's `macvlan`.
pub static MACVLAN: SublinkDriver = SublinkDriver { name: "macvlan" };
/// Docker's `ipvlan`.
pub static IPVLAN: SublinkDriver = SublinkDriver { name: "ipvlan" };

/// The driver of `d`.
pub fn driver(d: Driver) -> &'static dyn NetworkDriver {
    match d {
        Driver::Bridge => &BridgeDriver,
        Driver::Host => &HostDriver,
        Driver::Null => &NullDriver,
        Driver::Macvlan => &MACVLAN,
        Driver::Ipvlan => &IPVLAN,
        Driver::Overlay => &OverlayDriver,
    }
}

impl NetworkDriver for SublinkDriver {
    fn name(&self) -> &'static str {
        self.name
    }
    fn combinable(&self) -> bool {
        true
    }
    fn network_link(&self, net: &NetworkSpec) -> Option<String> {
        planner::host_shim(net).then(|| crate::names::shim_name(&net.id))
    }
    fn parent(&self, net: &NetworkSpec) -> Option<String> {
        planner::parent_of(net).map(str::to_string)
    }
    fn kernel_module(&self) -> Option<&'static str> {
        Some(self.name)
    }
    fn contribute_network(&self, net: &NetworkSpec, d: &mut DesiredHost) {
        if let Some(plan) = &net.owned_parent {
            d.parents
                .entry(plan.name.clone())
                .or_insert_with(|| DesiredParent {
                    plan: plan.clone(),
                    networks: Vec::new(),
                })
                .networks
                .push(net.name.clone());
        }
        if let Some(plan) = planner::shim_plan(net) {
            d.shims.insert(
                plan.name.clone(),
                DesiredShim {
                    plan,
                    network: net.name.clone(),
                },
            );
        }
    }

    fn contribute_endpoint(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        ep: &EndpointSpec,
        netns: &str,
        gateway: bool,
        d: &mut DesiredHost,
    ) -> Vec<RoutePlan> {
        let Some(mut plan) = planner::sublink_plan(net, ep, netns, gateway) else {
            return Vec::new();
        };
        let routes = std::mem::take(&mut plan.routes);
        d.sublinks.insert(
            sublink_key(netns, &ep.ifname),
            DesiredSublink {
                plan,
                container: c.name.clone(),
                network: net.name.clone(),
            },
        );
        routes
    }

    fn elements(&self, _net: &NetworkSpec, _e: &mut Elements) {}
}

impl NetworkDriver for BridgeDriver {
    fn name(&self) -> &'static str {
        "bridge"
    }
    fn combinable(&self) -> bool {
        true
    }
    fn network_link(&self, net: &NetworkSpec) -> Option<String> {
        Some(net.bridge.clone())
    }

    fn contribute_network(&self, net: &NetworkSpec, d: &mut DesiredHost) {
        let Some(plan) = planner::bridge_plan(net) else {
            return;
        };
        // Settings of one of berth's bridges (never an interface that faces the outside) that
        // published ports need; they must be in place before the bridge's first port is up:
        // * `net.ipv4.conf.<bridge>.route_localnet = 1`: the host's own connection to
        //   `127.0.0.1:PORT`, DNATed to a container, leaves through the bridge with a loopback
        //   source (masqueraded in `postrouting`), and its replies come back through the bridge
        //   addressed to 127.0.0.1 — both "martian" unless the bridge allows local-net routing.
        //   `prerouting_raw` drops any packet for 127.0.0.0/8 arriving on a non-loopback
        //   interface, so a container cannot use this to reach the host's loopback services.
        // * `net.ipv6.conf.<bridge>.accept_dad = 0`: the bridge's link-local address stays
        //   tentative for the ~1-2 s of duplicate address detection after its first port comes
        //   up; meanwhile a forwarded packet makes the host solicit the container's address
        //   from `::`, which the container takes for a DAD probe and does not answer: the first
        //   IPv6 connections to a new container's published port would time out. A bridge that
        //   only faces berth's own containers has nobody to collide with.
        let why = format!("bridge {} of network {}", plan.name, net.name);
        d.sysctls.insert(
            format!("net.ipv4.conf.{}.route_localnet", plan.name),
            ("1".into(), format!("{why}: published ports on 127.0.0.1")),
        );
        d.sysctls.insert(
            format!("net.ipv6.conf.{}.accept_dad", plan.name),
            (
                "0".into(),
                format!("{why}: no DAD delay on a private bridge"),
            ),
        );
        d.bridges.insert(
            plan.name.clone(),
            DesiredBridge {
                alias: bridge_alias(net),
                adopted: planner::adopts_bridge(net),
                network: net.name.clone(),
                plan,
            },
        );
    }

    fn contribute_endpoint(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        ep: &EndpointSpec,
        netns: &str,
        gateway: bool,
        d: &mut DesiredHost,
    ) -> Vec<RoutePlan> {
        let (desired, routes) = bridge_endpoint(net, c, ep, netns, gateway);
        d.endpoints.insert(ep.host_ifname.clone(), desired);
        // Anti-spoofing for its bridge port (none with allow_spoofing).
        d.elements
            .extend(&crate::firewall::guard_elements(&c.name, net, ep));
        routes
    }

    fn elements(&self, net: &NetworkSpec, e: &mut Elements) {
        e.extend(&crate::firewall::desired_elements(std::slice::from_ref(
            net,
        )));
    }
}

/// One network across a cluster's hosts (Docker's classic `overlay`): on each host a bridge
/// with veth endpoints exactly as [`BridgeDriver`] builds it, plus a VXLAN port on that bridge
/// and the remote endpoints' forwarding entries, which need cluster facts (this host's tunnel
/// address, the other hosts' endpoints) and are added by [`crate::overlay::contribute`].
pub struct OverlayDriver;

impl NetworkDriver for OverlayDriver {
    fn name(&self) -> &'static str {
        "overlay"
    }
    fn combinable(&self) -> bool {
        true
    }
    fn network_link(&self, net: &NetworkSpec) -> Option<String> {
        BridgeDriver.network_link(net)
    }
    fn kernel_module(&self) -> Option<&'static str> {
        Some("vxlan")
    }
    fn contribute_network(&self, net: &NetworkSpec, d: &mut DesiredHost) {
        BridgeDriver.contribute_network(net, d);
    }
    fn contribute_endpoint(
        &self,
        net: &NetworkSpec,
        c: &ContainerSpec,
        ep: &EndpointSpec,
        netns: &str,
        gateway: bool,
        d: &mut DesiredHost,
    ) -> Vec<RoutePlan> {
        BridgeDriver.contribute_endpoint(net, c, ep, netns, gateway, d)
    }
    fn elements(&self, net: &NetworkSpec, e: &mut Elements) {
        BridgeDriver.elements(net, e);
    }
}

macro_rules! nothing_to_create {
    ($t:ty, $name:literal) => {
        impl NetworkDriver for $t {
            fn name(&self) -> &'static str {
                $name
            }
            fn combinable(&self) -> bool {
                false
            }
            fn network_link(&self, _net: &NetworkSpec) -> Option<String> {
                None
            }
            fn contribute_network(&self, _net: &NetworkSpec, _d: &mut DesiredHost) {}
            fn contribute_endpoint(
                &self,
                _net: &NetworkSpec,
                _c: &ContainerSpec,
                _ep: &EndpointSpec,
                _netns: &str,
                _gateway: bool,
                _d: &mut DesiredHost,
            ) -> Vec<RoutePlan> {
                Vec::new()
            }
            fn elements(&self, _net: &NetworkSpec, _e: &mut Elements) {}
        }
    };
}

nothing_to_create!(HostDriver, "host");
nothing_to_create!(NullDriver, "null");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_is_registered_under_its_wire_name() {
        for d in [
            Driver::Bridge,
            Driver::Host,
            Driver::Null,
            Driver::Macvlan,
            Driver::Ipvlan,
        ] {
            assert_eq!(driver(d).name(), d.as_str());
        }
        assert!(driver(Driver::Bridge).combinable());
        assert!(!driver(Driver::Host).combinable());
        assert!(!driver(Driver::Null).combinable());
        assert!(driver(Driver::Macvlan).combinable());
        assert_eq!(driver(Driver::Macvlan).kernel_module(), Some("macvlan"));
        assert_eq!(driver(Driver::Ipvlan).kernel_module(), Some("ipvlan"));
        assert_eq!(driver(Driver::Bridge).kernel_module(), None);
    }

    /// A connect starts its endpoint's creation before its pass plans it: what it starts must
    /// be exactly what the pass's diff creates (less the routes, which a gateway endpoint's
    /// pass adds after), or the pass could not take it over.
    #[test]
    fn the_creation_a_connect_starts_is_the_one_its_pass_plans() {
        use crate::host::{assumed, diff};
        use crate::testutil::{container, lan, net};
        let web = net('a', "web", "10.1.0.0/24");
        let db = net('b', "db", "10.2.0.0/24");
        let before = container('c', "api", &[(&web, "10.1.0.2/24")]);
        let after = container('c', "api", &[(&web, "10.1.0.2/24"), (&db, "10.2.0.2/24")]);
        let nets = [web.clone(), db.clone()];
        let ns = "/proc/4242/ns/net";
        let of = |c: &ContainerSpec| {
            desired(
                &nets,
                &[RunningContainer {
                    spec: c,
                    netns: ns.into(),
                }],
                FirewallConfig::default(),
                ForwardingIntent::default(),
                Elements::default(),
                false,
            )
        };
        let was = assumed(&of(&before)).expect("no overlay");
        let plan = diff(&was, &of(&after));
        let created: Vec<&StepOp> = plan
            .steps
            .iter()
            .map(|s| &s.op)
            .filter(|op| matches!(op, StepOp::CreateEndpoint { .. }))
            .collect();
        let ep = &after.endpoints[1];
        let started = endpoint_creation(&db, &after, ep, ns).expect("a bridge endpoint");
        assert_eq!(created, vec![&started]);
        assert_eq!(taken_over(&started, created[0]), Some(Vec::new()));

        // The gateway endpoint of a container that had none: the pass's creation carries the
        // routes, the started one does not (and is otherwise the same).
        let alone = container('c', "api", &[(&db, "10.2.0.2/24")]);
        let mut none = alone.clone();
        none.endpoints.clear();
        let plan = diff(&assumed(&of(&none)).expect("no overlay"), &of(&alone));
        let Some(StepOp::CreateEndpoint { plan: p, alias }) = plan
            .steps
            .iter()
            .map(|s| &s.op)
            .find(|op| matches!(op, StepOp::CreateEndpoint { .. }))
        else {
            panic!("no creation: {:#?}", plan.steps);
        };
        assert!(!p.routes.is_empty(), "the gateway's routes come with it");
        let Some(StepOp::CreateEndpoint { plan: s, alias: a }) =
            endpoint_creation(&db, &alone, &alone.endpoints[0], ns)
        else {
            panic!("a bridge endpoint");
        };
        assert!(s.routes.is_empty());
        assert_eq!(
            (
                &EndpointPlan {
                    routes: Vec::new(),
                    ..p.clone()
                },
                alias
            ),
            (&s, &a)
        );
        let started =
            endpoint_creation(&db, &alone, &alone.endpoints[0], ns).expect("a bridge endpoint");
        let planned = StepOp::CreateEndpoint {
            plan: p.clone(),
            alias: alias.clone(),
        };
        assert_eq!(
            taken_over(&started, &planned),
            Some(vec![StepOp::ReplaceRoutes {
                netns: ns.into(),
                routes: p.routes.clone(),
            }]),
            "the gateway's routes are replaced after the started creation"
        );
        // Another mark, or another kind of step: not this creation.
        let other = StepOp::CreateEndpoint {
            plan: s,
            alias: "berth:ep:0:0".into(),
        };
        assert_eq!(taken_over(&other, &planned), None);
        let routes = StepOp::ReplaceRoutes {
            netns: ns.into(),
            routes: p.routes.clone(),
        };
        assert_eq!(taken_over(&started, &routes), None);

        // Not on other drivers: their endpoints' plans are not veth creations, or depend on
        // cluster facts (an overlay network's MTU and namespace).
        let mut ov = db.clone();
        ov.driver = Driver::Overlay;
        assert_eq!(endpoint_creation(&ov, &after, ep, ns), None);
        assert_eq!(endpoint_creation(&lan(), &after, ep, ns), None);
    }
}
