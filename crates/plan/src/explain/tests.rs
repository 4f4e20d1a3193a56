use super::*;
use crate::testutil::{container, lan, net};

fn published(host: &str, hp: u16, cip: &str, cp: u16) -> Published {
    Published {
        proto: Proto::Tcp,
        host_ip: host.parse().unwrap(),
        host_port: hp,
        container_ip: cip.parse().unwrap(),
        container_port: cp,
    }
}

struct World {
    nets: Vec<NetworkSpec>,
    cs: Vec<ContainerSpec>,
}

/// web, db, priv (internal), quiet (icc off), open (allow_direct); api (web, published
/// 8080:80 and 127.0.0.1:8081:80), client (web), store (db), vault (priv only), q1 and q2
/// (quiet), d1 (open), h1 (host), n1 (none), side (container:api).
fn world() -> World {
    let web = net('a', "web", "10.1.0.0/24");
    let db = net('b', "db", "10.2.0.0/24");
    let mut private = net('c', "priv", "10.3.0.0/24");
    private.internal = true;
    let mut quiet = net('e', "quiet", "10.5.0.0/24");
    quiet.icc = false;
    let mut open = net('f', "open", "10.6.0.0/24");
    open.options
        .insert(crate::network::OPT_ALLOW_DIRECT.into(), "true".into());
    let api = container('1', "api", &[(&web, "10.1.0.2/24")]);
    let client = container('2', "client", &[(&web, "10.1.0.3/24")]);
    let store = container('3', "store", &[(&db, "10.2.0.2/24")]);
    let vault = container('4', "vault", &[(&private, "10.3.0.2/24")]);
    let q1 = container('5', "q1", &[(&quiet, "10.5.0.2/24")]);
    let q2 = container('6', "q2", &[(&quiet, "10.5.0.3/24")]);
    let d1 = container('7', "d1", &[(&open, "10.6.0.2/24")]);
    let mut h1 = container('8', "h1", &[]);
    h1.mode = NetworkMode::Host;
    let mut n1 = container('9', "n1", &[]);
    n1.mode = NetworkMode::None;
    let mut side = container('0', "side", &[]);
    side.mode = NetworkMode::Container(api.id.clone());
    World {
        nets: vec![web, db, private, quiet, open],
        cs: vec![api, client, store, vault, q1, q2, d1, h1, n1, side],
    }
}

fn ctx(w: &World) -> Context<'_> {
    Context {
        networks: &w.nets,
        containers: w
            .cs
            .iter()
            .map(|c| Member {
                spec: c,
                running: true,
                published: if c.name == "api" {
                    vec![
                        published("0.0.0.0", 8080, "10.1.0.2", 80),
                        published("127.0.0.1", 8081, "10.1.0.2", 80),
                    ]
                } else {
                    Vec::new()
                },
                listening: (c.name == "api").then(|| {
                    vec![
                        "0.0.0.0:80".parse().unwrap(),
                        "127.0.0.1:5432".parse().unwrap(),
                    ]
                }),
            })
            .collect(),
        firewall: FirewallConfig::default(),
        user_rules: 0,
    }
}

fn id_of(w: &World, name: &str) -> String {
    w.cs.iter().find(|c| c.name == name).unwrap().id.clone()
}

fn run(w: &World, name: &str) -> Exposure {
    explain(&ctx(w), &id_of(w, name)).unwrap()
}

fn flow<'x>(x: &'x [Flow], peer: &str, target: &str) -> &'x Flow {
    x.iter()
        .find(|f| f.peer.contains(peer) && f.target.contains(target))
        .unwrap_or_else(|| panic!("no flow from {peer} to {target} in {x:#?}"))
}

fn fw(comment: &str) -> String {
    format!("forward \"{comment}\"")
}

#[test]
fn published_ports_from_every_vantage_point() {
    let w = world();
    let x = run(&w, "api");
    let any = "0.0.0.0:8080";
    let lo = "127.0.0.1:8081";
    // From the LAN: the port on every address is open by the DNAT rule, the loopback one
    // never (prerouting_raw), with the fix.
    let f = flow(&x.inbound, "outside", any);
    assert!(f.allowed);
    assert_eq!(f.rule, fw(rule::PUBLISHED));
    let f = flow(&x.inbound, "outside", lo);
    assert!(!f.allowed);
    assert!(f.rule.starts_with("prerouting_raw"));
    assert!(f.fix.as_deref().unwrap().contains("-p 8081:80"), "{f:?}");
    // From the host: through 127.0.0.1, translated in output.
    let f = flow(&x.inbound, "the host", any);
    assert!(f.allowed);
    assert_eq!(
        f.probes,
        vec![Probe {
            from: Vantage::Host,
            dst: "127.0.0.1:8080".parse().unwrap()
        }]
    );
    assert_eq!(
        flow(&x.inbound, "the host", lo).probes[0].dst,
        "127.0.0.1:8081".parse().unwrap()
    );
    // From another network: through its own gateway, accepted before isolation.
    let f = flow(&x.inbound, "container store", any);
    assert!(f.allowed);
    assert_eq!(f.rule, fw(rule::PUBLISHED));
    assert_eq!(f.probes[0].dst, "10.2.0.1:8080".parse().unwrap());
    assert_eq!(f.probes[0].from, Vantage::Container("store".into()));
    // From its own network: hairpin, the same-bridge rule.
    let f = flow(&x.inbound, "container client", any);
    assert!(f.allowed);
    assert_eq!(f.rule, fw(rule::SAME_BRIDGE));
    // From an internal network: nothing routed out of it.
    let f = flow(&x.inbound, "container vault", any);
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::INTERNAL_OUT));
    assert_eq!(f.probes[0].dst, "10.3.0.1:8080".parse().unwrap());
    // A 127.0.0.1 port from a container: its loopback is its own; no probe.
    let f = flow(&x.inbound, "container store", lo);
    assert!(!f.allowed);
    assert!(f.probes.is_empty());
}

#[test]
fn isolation_between_networks_names_the_rule_and_the_fix() {
    let w = world();
    let x = run(&w, "api");
    let f = flow(&x.inbound, "container store", "10.1.0.2 on network web");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::ISOLATION));
    assert_eq!(f.cause, "networks db and web are isolated");
    assert_eq!(f.fix.as_deref(), Some("berth network connect web store"));
    // Only the port it listens on for everyone; its 127.0.0.1 listener is not probed.
    assert_eq!(
        f.probes,
        vec![Probe {
            from: Vantage::Container("store".into()),
            dst: "10.1.0.2:80".parse().unwrap()
        }]
    );
    let f = flow(&x.inbound, "container client", "10.1.0.2");
    assert!(f.allowed);
    assert!(f.rule.is_empty(), "bridged, no rule: {f:?}");
    let f = flow(&x.inbound, "the host", "10.1.0.2");
    assert!(f.allowed);
    let f = flow(&x.inbound, "outside", "10.1.0.2");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::NOT_FROM_OUTSIDE));
    assert!(f.fix.as_deref().unwrap().contains("allow_direct"));
    // Outbound: out and to the host yes, the other networks no.
    assert!(flow(&x.outbound, "outside", "any").allowed);
    assert_eq!(flow(&x.outbound, "outside", "any").rule, fw(rule::OUT));
    assert!(flow(&x.outbound, "the host", "").allowed);
    let f = flow(&x.outbound, "network db", "");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::ISOLATION));
    assert!(f
        .fix
        .as_deref()
        .unwrap()
        .contains("berth network connect db api"));
    let f = flow(&x.outbound, "network priv", "");
    assert_eq!(f.rule, fw(rule::INTERNAL_IN));
    // The container that shares its namespace, and the loopback listener.
    assert!(flow(&x.inbound, "container side", "127.0.0.1").allowed);
    assert!(x.notes.iter().any(|n| n.contains("127.0.0.1:5432 only")));
}

#[test]
fn internal_networks_reach_nothing_routed() {
    let w = world();
    let x = run(&w, "vault");
    let f = flow(&x.outbound, "outside", "any");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::INTERNAL_OUT));
    assert!(f.fix.is_some());
    let f = flow(&x.inbound, "container api", "10.3.0.2");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::INTERNAL_IN));
    assert_eq!(
        f.cause,
        "network priv is internal: nothing is routed into it"
    );
    let f = flow(&x.inbound, "outside", "10.3.0.2");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::INTERNAL_IN));
    assert!(f.fix.is_none());
    // The host is on the internal bridge itself.
    assert!(flow(&x.inbound, "the host", "10.3.0.2").allowed);
    // Not listening info: the flows say so, no probes.
    assert!(flow(&x.inbound, "the host", "10.3.0.2").probes.is_empty());
}

#[test]
fn allow_direct_opens_addresses_to_the_outside_only() {
    let w = world();
    let x = run(&w, "d1");
    let f = flow(&x.inbound, "outside", "10.6.0.2");
    assert!(f.allowed);
    assert_eq!(f.rule, fw(rule::DIRECT));
    let f = flow(&x.inbound, "container api", "10.6.0.2");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::ISOLATION));
}

#[test]
fn icc_off_isolates_neighbours() {
    let w = world();
    let x = run(&w, "q1");
    let f = flow(&x.inbound, "container q2", "10.5.0.2");
    assert!(!f.allowed);
    assert!(f.cause.contains("enable_icc=false"), "{f:?}");
    assert!(!flow(&x.outbound, "network quiet", "").allowed);
}

#[test]
fn host_none_and_container_modes() {
    let w = world();
    let x = run(&w, "h1");
    assert_eq!(x.mode, "host");
    assert!(x.inbound.iter().all(|f| f.allowed));
    assert!(flow(&x.inbound, "outside", "")
        .cause
        .contains("--network host"));
    let x = run(&w, "n1");
    assert_eq!(x.mode, "none");
    assert!(x.inbound.iter().chain(&x.outbound).all(|f| !f.allowed));
    assert_eq!(
        flow(&x.inbound, "the host", "").fix.as_deref(),
        Some("berth network connect NETWORK n1")
    );
    let x = run(&w, "side");
    assert_eq!(x.mode, "container:api");
    assert_eq!(x.netns_of.as_deref(), Some("api"));
    // api's exposure, and api itself reaches it on loopback.
    assert!(flow(&x.inbound, "outside", "0.0.0.0:8080").allowed);
    assert!(flow(&x.inbound, "container api", "127.0.0.1").allowed);
    assert!(x.notes[0].contains("container:api"));
    // Neither the namespace's owner nor its sharer is a vantage point against it.
    assert!(!x.inbound.iter().any(|f| f.peer == "container side"));
}

#[test]
fn macvlan_is_on_the_lan_and_not_the_host_without_a_shim() {
    let mut w = world();
    let lan = lan();
    let mut p = container('c', "printer", &[(&lan, "192.168.1.200/24")]);
    p.endpoints[0].mac = "02:42:c0:a8:01:c8".into();
    w.nets.push(lan);
    w.cs.push(p);
    let x = run(&w, "printer");
    assert!(flow(&x.inbound, "outside", "192.168.1.200").allowed);
    let f = flow(&x.inbound, "the host", "192.168.1.200");
    assert!(!f.allowed);
    assert!(f.fix.as_deref().unwrap().contains("host_shim"));
    assert!(!flow(&x.inbound, "container api", "192.168.1.200").allowed);
    assert!(flow(&x.outbound, "outside", "").allowed);
    // With a host shim over its ip range, the host and routed containers reach it.
    let lan = w.nets.iter_mut().find(|n| n.name == "lan").unwrap();
    lan.options
        .insert(crate::network::OPT_HOST_SHIM.into(), "true".into());
    lan.shim_src = Some("192.168.1.10".parse().unwrap());
    lan.subnets[0].ip_range = Some("192.168.1.192/27".parse().unwrap());
    let x = run(&w, "printer");
    assert!(flow(&x.inbound, "the host", "192.168.1.200").allowed);
    let f = flow(&x.inbound, "container api", "192.168.1.200");
    assert!(f.allowed);
    assert_eq!(f.rule, fw(rule::OUT));
    // A private macvlan network keeps its containers apart.
    let lan = w.nets.iter_mut().find(|n| n.name == "lan").unwrap();
    lan.options
        .insert(crate::network::OPT_MACVLAN_MODE.into(), "private".into());
    let lan = lan.clone();
    let mut other = container('d', "scanner", &[(&lan, "192.168.1.201/24")]);
    other.endpoints[0].mac = "02:42:c0:a8:01:c9".into();
    w.cs.push(other);
    let x = run(&w, "printer");
    let f = flow(&x.inbound, "container scanner", "192.168.1.200");
    assert!(!f.allowed);
    assert!(f.cause.contains("private"));
}

#[test]
fn the_forward_guard_and_user_rules() {
    let cfg = FirewallConfig {
        forwarding_was_off: true,
        ipv6_forwarding_was_off: false,
        relay6_port: 0,
    };
    let d = forward(&cfg, Side::Outside, Side::Outside, false, false);
    assert!(!d.allowed);
    assert_eq!(d.rule, fw(rule::GUARD4));
    assert!(forward(&cfg, Side::Outside, Side::Outside, false, true).allowed);
    // Every rule named here is one base_script writes.
    let rules = crate::firewall::static_rules(&cfg);
    for c in [
        rule::ICC_OFF,
        rule::SAME_BRIDGE,
        rule::INTERNAL_OUT,
        rule::INTERNAL_IN,
        rule::PUBLISHED,
        rule::ISOLATION,
        rule::DIRECT,
        rule::NOT_FROM_OUTSIDE,
        rule::OUT,
        rule::GUARD4,
        rule::LOOPBACK4,
    ] {
        assert!(rules.iter().any(|(_, r)| r == c), "{c} is not a rule");
    }
    let w = world();
    let mut c = ctx(&w);
    c.user_rules = 2;
    let x = explain(&c, &id_of(&w, "api")).unwrap();
    assert!(x.notes.iter().any(|n| n.contains("chain user holds 2")));
    assert!(explain(&c, "nope").is_none());
}

#[test]
fn a_published_port_nobody_serves_and_a_stopped_container() {
    let w = world();
    let mut c = ctx(&w);
    for m in &mut c.containers {
        if m.spec.name == "api" {
            m.listening = Some(vec!["0.0.0.0:9999".parse().unwrap()]);
        }
        if m.spec.name == "store" {
            m.running = false;
        }
    }
    let x = explain(&c, &id_of(&w, "api")).unwrap();
    assert!(
        x.notes
            .iter()
            .any(|n| n.contains("nothing listens on 10.1.0.2:80")),
        "{:?}",
        x.notes
    );
    // A stopped container is no vantage point.
    assert!(!x.inbound.iter().any(|f| f.peer == "container store"));
    // Probes follow the listeners.
    let f = flow(&x.inbound, "container client", "10.1.0.2");
    assert_eq!(f.probes[0].dst, "10.1.0.2:9999".parse().unwrap());
}

/// An overlay network's bridge is in its namespace: the host reaches it through the uplink
/// (not at all when the overlay is internal), and its containers on other hosts are bridged
/// through the VXLAN port.
#[test]
fn an_overlay_is_reached_through_its_uplink_and_its_tunnel() {
    let mut w = world();
    let mut ov = net('9', "app", "10.50.0.0/24");
    ov.driver = Driver::Overlay;
    ov.overlay = Some(crate::model::OverlaySpec {
        vni: 4097,
        port: 4789,
        encrypted: false,
    });
    let mut iov = net('8', "backend", "10.51.0.0/24");
    iov.driver = Driver::Overlay;
    iov.internal = true;
    iov.overlay = Some(crate::model::OverlaySpec {
        vni: 4098,
        port: 4790,
        encrypted: true,
    });
    let o1 = container('d', "o1", &[(&ov, "10.50.0.2/24")]);
    let o2 = container('e', "o2", &[(&ov, "10.50.0.3/24")]);
    let i1 = container('f', "i1", &[(&iov, "10.51.0.2/24")]);
    w.nets.extend([ov.clone(), iov.clone()]);
    w.cs.extend([o1, o2, i1]);

    let x = run(&w, "o1");
    let f = flow(&x.inbound, "the host", "10.50.0.2");
    assert!(f.allowed);
    let (uplink, ns) = (
        crate::names::uplink_name(&ov.id),
        crate::names::overlay_netns_name(&ov.id),
    );
    assert!(
        f.cause.contains(&uplink) && f.cause.contains(&ns) && f.cause.contains("10.50.0.0/24"),
        "{f:?}"
    );
    let f = flow(&x.inbound, "container o2", "10.50.0.2");
    assert!(f.allowed);
    assert!(f.cause.contains(&ns), "{f:?}");
    let f = flow(&x.inbound, "network app on other hosts", "10.50.0.2");
    assert!(f.allowed);
    assert_eq!(f.peer_kind, PeerKind::Network);
    assert!(
        f.cause.contains("VNI 4097") && f.cause.contains("unencrypted"),
        "{f:?}"
    );
    // Another network's container is isolated from the overlay, as from a bridge network.
    let f = flow(&x.inbound, "container api", "10.50.0.2");
    assert!(!f.allowed);
    assert_eq!(f.rule, fw(rule::ISOLATION));
    assert!(x.notes.iter().any(|n| n.contains("berth trace")), "{x:?}");

    // Internal: no uplink, so not even the host reaches it; the tunnel still joins the hosts.
    let x = run(&w, "i1");
    let f = flow(&x.inbound, "the host", "10.51.0.2");
    assert!(!f.allowed);
    assert!(f.cause.contains("internal overlay"), "{f:?}");
    let f = flow(&x.inbound, "network backend on other hosts", "10.51.0.2");
    assert!(f.allowed);
    assert!(
        f.cause.contains("VNI 4098") && f.cause.contains("WireGuard"),
        "{f:?}"
    );
    assert!(!flow(&x.outbound, "outside", "any").allowed);
}
