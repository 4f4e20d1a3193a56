#![allow(clippy::expect_used)]

use super::*;
use crate::host::{DesiredHost, Step};
use crate::model::OverlaySpec;
use crate::overlay::RemoteEndpoint;
use crate::testutil;

const RUNDIR: &str = "/run/berth";

fn ov(id: char, name: &str, subnet: &str) -> NetworkSpec {
    let mut n = testutil::net(id, name, subnet);
    n.driver = Driver::Overlay;
    n.mtu = 1450;
    n.overlay = Some(OverlaySpec {
        vni: 4097,
        port: 4789,
        encrypted: false,
    });
    n
}

/// A veth named `name` with MAC `mac`, down, nothing else known.
fn veth(name: &str, mac: Option<[u8; 6]>) -> ObservedLink {
    ObservedLink {
        name: name.into(),
        kind: Some("veth".into()),
        mac,
        ..ObservedLink::default()
    }
}

/// `n` with IPv6 on, in `subnet` with `gateway`.
fn dual(mut n: NetworkSpec, subnet: &str, gateway: &str) -> NetworkSpec {
    n.enable_ipv6 = true;
    n.subnets.push(crate::model::SubnetSpec {
        subnet: subnet.parse().expect("v6"),
        gateway: gateway.parse().expect("gw6"),
        ip_range: None,
        aux_addresses: Default::default(),
    });
    n
}

fn remote(net: &NetworkSpec) -> RemoteEndpoint {
    RemoteEndpoint {
        network_id: net.id.clone(),
        node: "h2".into(),
        vtep: "192.0.2.2".parse().expect("vtep"),
        ip: "10.50.0.7".parse().expect("ip"),
        ip6: None,
        mac: "02:42:0a:32:00:07".into(),
        name: "far".into(),
        aliases: vec![],
        container_id: "c".repeat(64),
    }
}

/// The overlay namespaces of `nets` on host h1 (192.0.2.1) with one remote endpoint per network.
fn want(nets: &[NetworkSpec]) -> DesiredOverlay {
    let mut d = DesiredHost::default();
    let remotes: Vec<RemoteEndpoint> = nets.iter().map(remote).collect();
    crate::overlay::contribute(
        &mut d,
        nets,
        Some("192.0.2.1".parse().expect("local")),
        "h1",
        &remotes,
    );
    desired(nets, RUNDIR, &d.vxlans)
}

fn kinds(p: &OverlayPlan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| match &s.op {
            NsOp::CreateNetns { .. } => "CreateNetns".to_string(),
            NsOp::InNetns { op, .. } => format!("InNetns:{}", step_name(op)),
            NsOp::SetSysctl { key, .. } => format!("SetSysctl:{key}"),
            NsOp::CreateUplink { .. } => "CreateUplink".into(),
            NsOp::SetUplinkRoutes { .. } => "SetUplinkRoutes".into(),
            NsOp::SetHostSysctl { key, .. } => format!("SetHostSysctl:{key}"),
            NsOp::DeleteUplink { name } => format!("DeleteUplink:{name}"),
            NsOp::RemoveNetns { path } => format!("RemoveNetns:{path}"),
            NsOp::DeleteHostLink { name } => format!("DeleteHostLink:{name}"),
            NsOp::GuardBase { .. } => "GuardBase".into(),
            NsOp::GuardElements { late, .. } => format!("GuardElements:{late}"),
        })
        .collect()
}

fn step_name(op: &StepOp) -> &'static str {
    op.action()
}

#[test]
fn an_overlay_network_gets_a_namespace_with_its_bridge_vxlan_port_and_uplink() {
    let n = ov('a', "ov", "10.50.0.0/24");
    let d = want(std::slice::from_ref(&n));
    let ns = d.namespaces.get("ov-aaaaaaaaa").expect("namespace");
    assert_eq!(ns.path, "/run/berth/netns/ov-aaaaaaaaa");
    assert_eq!(ns.bridge.name, n.bridge);
    assert_eq!(ns.bridge.addrs, vec!["10.50.0.1/24".parse().expect("gw")]);
    let v = ns.vxlan.as_ref().expect("vxlan port in the namespace");
    assert_eq!(v.plan.name, "bvx-aaaaaaaaa");
    assert_eq!(v.plan.bridge, n.bridge);
    assert_eq!(v.plan.local, "192.0.2.1".parse::<IpAddr>().expect("ip"));
    assert_eq!(v.fdb.len(), 1);
    for key in BRIDGE_NF_CALL {
        assert_eq!(
            ns.sysctls.get(key).map(|(v, _)| v.as_str()),
            Some("0"),
            "{key}"
        );
    }
    assert_eq!(
        ns.sysctls
            .get("net.ipv4.ip_forward")
            .map(|(v, _)| v.as_str()),
        Some("1")
    );
    assert!(!ns.sysctls.contains_key("net.ipv6.conf.all.forwarding"));
    let u = ns.uplink.as_ref().expect("uplink");
    assert_eq!(u.host, "bup-aaaaaaaaa");
    assert_eq!(u.peer, "up0");
    assert_eq!(u.mtu, 1450);
    assert_eq!(u.host_mac, names::owner_mac("bup-aaaaaaaaa"));
    assert_eq!(
        u.host_routes,
        vec![RoutePlan {
            dst: "10.50.0.0/24".parse().expect("net"),
            via: "10.50.0.1".parse().expect("gw"),
        }]
    );
    assert_eq!(
        u.ns_routes,
        vec![RoutePlan {
            dst: "0.0.0.0/0".parse().expect("net"),
            via: IpAddr::V4(HOST_HOP4),
        }]
    );
    // Each side's next hop resolves to the other side's MAC.
    assert_eq!(
        u.host_neigh(),
        [("10.50.0.1".parse().expect("gw"), u.peer_mac)].into()
    );
    assert_eq!(u.ns_neigh(), [(IpAddr::V4(HOST_HOP4), u.host_mac)].into());
    assert_eq!(
        ns.host_sysctls
            .get("net.ipv4.conf.bup-aaaaaaaaa.route_localnet")
            .map(|(v, _)| v.as_str()),
        Some("1")
    );
    // Bridge networks get nothing here.
    let b = testutil::net('b', "br", "10.60.0.0/24");
    assert!(want(&[b]).namespaces.is_empty());
}

#[test]
fn a_dual_stack_overlay_routes_both_families_and_forwards_ipv6() {
    let n = dual(ov('a', "ov", "10.50.0.0/24"), "fd00:50::/64", "fd00:50::1");
    let d = want(std::slice::from_ref(&n));
    let ns = &d.namespaces["ov-aaaaaaaaa"];
    assert_eq!(
        ns.sysctls
            .get("net.ipv6.conf.all.forwarding")
            .map(|(v, _)| v.as_str()),
        Some("1")
    );
    let u = ns.uplink.as_ref().expect("uplink");
    assert_eq!(u.host_routes.len(), 2);
    assert!(u.ns_routes.contains(&RoutePlan {
        dst: "::/0".parse().expect("default6"),
        via: IpAddr::V6(HOST_HOP6),
    }));
    assert_eq!(
        u.host_neigh()
            .get(&"fd00:50::1".parse::<IpAddr>().expect("gw6")),
        Some(&u.peer_mac)
    );
}

#[test]
fn an_internal_overlay_has_no_uplink_no_forwarding_and_no_firewall_key() {
    let mut n = ov('a', "ov", "10.50.0.0/24");
    n.internal = true;
    let d = want(std::slice::from_ref(&n));
    let ns = &d.namespaces["ov-aaaaaaaaa"];
    assert!(ns.uplink.is_none());
    assert!(ns.host_sysctls.is_empty());
    assert!(!ns.sysctls.contains_key("net.ipv4.ip_forward"));
    assert_eq!(firewall_key(&n), None);
    // A leftover uplink (the network was not internal once; or a crash) is removed.
    let mut o = assumed(&d);
    o.uplinks.insert(
        "bup-aaaaaaaaa".into(),
        veth("bup-aaaaaaaaa", Some(names::owner_mac("bup-aaaaaaaaa"))),
    );
    assert_eq!(kinds(&diff(&o, &d)), vec!["DeleteUplink:bup-aaaaaaaaa"]);
}

#[test]
fn in_sync_means_zero_steps() {
    let dual = dual(ov('c', "ov6", "10.52.0.0/24"), "fd00:52::/64", "fd00:52::1");
    let mut internal = ov('b', "ovi", "10.51.0.0/24");
    internal.internal = true;
    let d = want(&[ov('a', "ov", "10.50.0.0/24"), internal, dual]);
    assert_eq!(d.namespaces.len(), 3);
    let p = diff(&assumed(&d), &d);
    assert_eq!(p, OverlayPlan::default());
}

#[test]
fn a_new_namespace_is_built_in_order() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let p = diff(&ObservedOverlay::default(), &d);
    assert!(p.problems.is_empty());
    assert_eq!(
        kinds(&p),
        vec![
            "CreateNetns",
            "GuardBase",
            "SetSysctl:net.bridge.bridge-nf-call-arptables",
            "SetSysctl:net.bridge.bridge-nf-call-ip6tables",
            "SetSysctl:net.bridge.bridge-nf-call-iptables",
            "SetSysctl:net.ipv4.ip_forward",
            "InNetns:CreateBridge",
            "SetSysctl:net.ipv6.conf.berth-aaaaaaaaa.accept_dad",
            "InNetns:CreateVxlan",
            "InNetns:SetVxlanEntries",
            "CreateUplink",
            "SetUplinkRoutes",
            "SetHostSysctl:net.ipv4.conf.bup-aaaaaaaaa.route_localnet",
        ]
    );
    // Every step in the namespace goes through its mount; the bridge-nf keys may be absent.
    for s in &p.steps {
        match &s.op {
            NsOp::InNetns { netns, .. } | NsOp::CreateUplink { netns, .. } => {
                assert_eq!(netns, "/run/berth/netns/ov-aaaaaaaaa")
            }
            NsOp::SetSysctl {
                netns,
                key,
                if_present,
                ..
            } => {
                assert_eq!(netns, "/run/berth/netns/ov-aaaaaaaaa");
                assert_eq!(*if_present, key.starts_with("net.bridge."), "{key}");
            }
            _ => {}
        }
    }
}

#[test]
fn an_unmounted_namespace_is_made_again_with_everything_in_it() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let mut o = assumed(&d);
    // Unmounted by hand while a process still held it: the uplink's host side is still there,
    // its peer in a namespace berth can no longer reach.
    o.netns.clear();
    let k = kinds(&diff(&o, &d));
    assert_eq!(k.first().map(String::as_str), Some("CreateNetns"));
    let pos = |s: &str| k.iter().position(|x| x == s).expect(s);
    assert!(pos("DeleteUplink:bup-aaaaaaaaa") < pos("CreateUplink"));
    assert!(pos("InNetns:CreateBridge") < pos("InNetns:CreateVxlan"));
    assert!(pos("CreateUplink") < pos("SetUplinkRoutes"));
    assert!(k.contains(&"InNetns:SetVxlanEntries".to_string()));
}

#[test]
fn an_overlay_bridge_with_a_forward_delay_or_snooping_is_reconfigured() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let mut o = assumed(&d);
    let ns = o.netns.get_mut("ov-aaaaaaaaa").expect("ns");
    ns.links
        .get_mut("berth-aaaaaaaaa")
        .expect("bridge")
        .forward_delay = Some(1500);
    assert_eq!(kinds(&diff(&o, &d)), vec!["InNetns:ConfigureBridge"]);
    let ns = o.netns.get_mut("ov-aaaaaaaaa").expect("ns");
    ns.links
        .get_mut("berth-aaaaaaaaa")
        .expect("bridge")
        .forward_delay = Some(0);
    assert!(diff(&o, &d).steps.is_empty());
    // Multicast snooping on (an older berth's bridge): the same one step.
    let ns = o.netns.get_mut("ov-aaaaaaaaa").expect("ns");
    ns.links
        .get_mut("berth-aaaaaaaaa")
        .expect("bridge")
        .mcast_snooping = Some(true);
    assert_eq!(kinds(&diff(&o, &d)), vec!["InNetns:ConfigureBridge"]);
}

#[test]
fn a_deleted_bridge_is_made_again_and_its_vxlan_port_with_it() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let mut o = assumed(&d);
    let ns = o.netns.get_mut("ov-aaaaaaaaa").expect("ns");
    ns.links.remove("berth-aaaaaaaaa");
    // The kernel took the port out of the deleted bridge.
    ns.links.get_mut("bvx-aaaaaaaaa").expect("vx").master = None;
    assert_eq!(
        kinds(&diff(&o, &d)),
        vec![
            "InNetns:CreateBridge",
            "SetSysctl:net.ipv6.conf.berth-aaaaaaaaa.accept_dad",
            "InNetns:DeleteLink",
            "InNetns:CreateVxlan",
            "InNetns:SetVxlanEntries",
        ]
    );
}

#[test]
fn bridge_nf_call_is_turned_off_where_it_exists_and_left_where_it_does_not() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let mut o = assumed(&d);
    let ns = o.netns.get_mut("ov-aaaaaaaaa").expect("ns");
    // br_netfilter not loaded: the keys do not exist, nothing to do.
    for key in BRIDGE_NF_CALL {
        ns.sysctls.remove(key);
    }
    assert!(diff(&o, &d).steps.is_empty());
    // Loaded later: a new namespace's value is 1 until berth writes 0.
    o.netns
        .get_mut("ov-aaaaaaaaa")
        .expect("ns")
        .sysctls
        .insert("net.bridge.bridge-nf-call-iptables".into(), "1".into());
    let p = diff(&o, &d);
    assert_eq!(
        kinds(&p),
        vec!["SetSysctl:net.bridge.bridge-nf-call-iptables"]
    );
    assert_eq!(p.steps[0].reason, "is 1");
}

#[test]
fn drifted_routes_and_neighbours_are_replaced_alone() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    for drift in 0..4 {
        let mut o = assumed(&d);
        match drift {
            0 => {
                o.uplink_routes.insert("bup-aaaaaaaaa".into(), vec![]);
            }
            1 => {
                o.uplink_neigh.remove("bup-aaaaaaaaa");
            }
            2 => o.netns.get_mut("ov-aaaaaaaaa").expect("ns").default_routes = vec![],
            _ => o
                .netns
                .get_mut("ov-aaaaaaaaa")
                .expect("ns")
                .uplink_neigh
                .clear(),
        }
        assert_eq!(
            kinds(&diff(&o, &d)),
            vec!["SetUplinkRoutes"],
            "drift {drift}"
        );
    }
}

#[test]
fn a_foreign_link_named_like_the_uplink_is_a_problem_never_touched() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let mut o = assumed(&d);
    // Up, the network's MTU, but neither berth's MAC nor its mark.
    o.uplinks.insert(
        "bup-aaaaaaaaa".into(),
        ObservedLink {
            up: true,
            mtu: 1450,
            ..veth("bup-aaaaaaaaa", None)
        },
    );
    let p = diff(&o, &d);
    assert!(p.steps.is_empty(), "{:?}", kinds(&p));
    assert_eq!(p.problems.len(), 1);
    assert!(p.problems[0].message.contains("not berth's"));
}

#[test]
fn a_removed_network_loses_its_uplink_then_its_namespace() {
    let d = want(&[
        ov('a', "ov", "10.50.0.0/24"),
        ov('b', "ov2", "10.51.0.0/24"),
    ]);
    let o = assumed(&d);
    let mut after = d.clone();
    after.namespaces.remove("ov-bbbbbbbbb");
    assert_eq!(
        kinds(&diff(&o, &after)),
        vec![
            "DeleteUplink:bup-bbbbbbbbb",
            // Its VXLAN port before the namespace: the VNI is free at once.
            "InNetns:DeleteLink",
            "RemoveNetns:/run/berth/netns/ov-bbbbbbbbb"
        ]
    );
    // A network made in the same pass (it may take the removed one's VNI) comes after.
    let mut with_new = after.clone();
    let c = want(&[ov('c', "ov3", "10.52.0.0/24")]);
    with_new.namespaces.extend(c.namespaces);
    let k = kinds(&diff(&o, &with_new));
    assert_eq!(
        &k[..4],
        &[
            "DeleteUplink:bup-bbbbbbbbb",
            "InNetns:DeleteLink",
            "RemoveNetns:/run/berth/netns/ov-bbbbbbbbb",
            "CreateNetns"
        ],
        "{k:?}"
    );
    // A pass over another network (a `network rm` of a third one observes every namespace):
    // the network outside its scope keeps its namespace and uplink.
    let mut other = after.clone();
    other.namespaces.clear();
    other.kept_networks = ["a".repeat(64)].into();
    assert_eq!(
        kinds(&diff(&o, &other)),
        vec![
            "DeleteUplink:bup-bbbbbbbbb",
            "InNetns:DeleteLink",
            "RemoveNetns:/run/berth/netns/ov-bbbbbbbbb"
        ]
    );
    // A scoped observation judges no leftovers.
    let scoped = ObservedOverlay { all: false, ..o };
    assert!(diff(&scoped, &after).steps.is_empty());
}

#[test]
fn the_firewall_sets_name_an_overlay_by_its_uplink_and_a_bridge_network_by_its_bridge() {
    use crate::firewall::{desired_elements, desired_elements_keyed, SET_BRIDGES, SET_SAME_BRIDGE};
    let o = ov('a', "ov", "10.50.0.0/24");
    let mut oi = ov('c', "ovi", "10.52.0.0/24");
    oi.internal = true;
    let b = testutil::net('b', "br", "10.60.0.0/24");
    let nets = [o.clone(), oi, b.clone()];
    let e = desired_elements_keyed(&nets, firewall_key);
    let bridges: Vec<&String> = e.0[SET_BRIDGES].keys().collect();
    assert_eq!(
        bridges,
        vec![
            &format!("\"{}\"", b.bridge),
            &"\"bup-aaaaaaaaa\"".to_string()
        ]
    );
    assert!(e.0[SET_SAME_BRIDGE].contains_key("\"bup-aaaaaaaaa\" . \"bup-aaaaaaaaa\""));
    // Nothing names the overlay's bridge, which is not in the host any more.
    assert!(!e
        .0
        .values()
        .flat_map(|s| s.keys())
        .any(|k| k.contains(&o.bridge)));
    // It is what desired_elements gives: berthd keys them so.
    assert_eq!(
        desired_elements_keyed(&nets, firewall_key),
        desired_elements(&nets)
    );
}

#[test]
fn names_have_their_shapes() {
    let id = "0123456789abcdef".repeat(4);
    assert_eq!(names::overlay_netns_name(&id), "ov-012345678");
    assert_eq!(names::uplink_name(&id), "bup-012345678");
    assert!(names::uplink_name(&id).len() <= names::MAX_IFNAME_LEN);
    assert!(names::is_overlay_netns("ov-012345678"));
    assert!(!names::is_overlay_netns("ov-01234567"));
    assert!(names::is_uplink("bup-012345678"));
    assert!(!names::is_uplink("bup-01234567z"));
    assert_eq!(
        netns_path("/run/berth/", &id),
        "/run/berth/netns/ov-012345678"
    );
}

/// A host with overlay network `o` and bridge network `b`, container `w` on both; its desired
/// state with the overlay's endpoint placed in its namespace.
fn placed() -> (NetworkSpec, DesiredHost, DesiredOverlay) {
    use crate::driver::{ForwardingIntent, RunningContainer};
    let o = ov('a', "ov", "10.50.0.0/24");
    let b = testutil::net('b', "br", "10.1.0.0/24");
    let nets = vec![o.clone(), b.clone()];
    let c = testutil::container('c', "w", &[(&o, "10.50.0.2/24"), (&b, "10.1.0.2/24")]);
    let running = [RunningContainer {
        spec: &c,
        netns: "/proc/77/ns/net".into(),
    }];
    let mut d = crate::driver::desired(
        &nets,
        &running,
        crate::firewall::FirewallConfig::default(),
        ForwardingIntent::default(),
        crate::firewall::desired_elements(&nets),
        false,
    );
    crate::overlay::contribute(
        &mut d,
        &nets,
        Some("192.0.2.1".parse().expect("local")),
        "h1",
        &[remote(&o)],
    );
    let mut ovl = desired(&nets, RUNDIR, &d.vxlans);
    place_endpoints(&mut d, &mut ovl, &nets);
    (o, d, ovl)
}

#[test]
fn an_overlay_endpoint_is_placed_in_its_namespace_with_its_guard() {
    let (o, d, ovl) = placed();
    let ns = &ovl.namespaces["ov-aaaaaaaaa"];
    // The host carries neither the overlay's bridge nor its VXLAN port any more; the bridge
    // network keeps its own.
    assert!(!d.bridges.contains_key(&o.bridge));
    assert_eq!(d.bridges.len(), 1);
    assert!(d.vxlans.is_empty());
    assert!(!d.sysctls.keys().any(|k| k.contains(&o.bridge)));
    // The uplink is the host's, never an orphan there.
    assert!(d.kept_links.contains("bup-aaaaaaaaa"));
    let (on_ov, on_br): (Vec<_>, Vec<_>) = d
        .endpoints
        .values()
        .partition(|e| e.plan.bridge == o.bridge);
    assert_eq!(on_ov.len(), 1);
    assert_eq!(
        on_ov[0].plan.host_netns.as_deref(),
        Some("/run/berth/netns/ov-aaaaaaaaa")
    );
    assert_eq!(on_br[0].plan.host_netns, None);
    // The overlay port's anti-spoofing elements moved to the namespace's table: all five
    // kinds for it there, none of it in the host's.
    let port = format!("\"{}\"", on_ov[0].plan.host_ifname);
    let there = crate::firewall::guard_part(&ns.guard, None);
    assert!(there.0[crate::firewall::SET_GUARDED].contains_key(&port));
    assert!(there.len() >= 3, "{there:?}");
    let host = crate::firewall::guard_part(&d.elements, None);
    assert!(!host
        .0
        .values()
        .flat_map(|s| s.keys())
        .any(|k| k.contains(&port)));
    let br_port = format!("\"{}\"", on_br[0].plan.host_ifname);
    assert!(host.0[crate::firewall::SET_GUARDED].contains_key(&br_port));
    // Observed as applied, nothing to do, in either plan.
    let observed = assumed(&ovl);
    assert_eq!(diff(&observed, &ovl), OverlayPlan::default());
    let mut host_obs = crate::host::assumed(&d).expect("no VXLAN port in the host");
    host_obs.firewall = Some(crate::host::ObservedFirewall {
        rules: crate::firewall::static_rules(&d.firewall),
        elements: d.elements.clone(),
    });
    let p = crate::host::diff(&host_obs, &d);
    assert!(p.steps.is_empty(), "{:#?}", p.steps);
}

#[test]
fn guard_elements_are_added_before_the_endpoints_and_removed_after_them() {
    let (_, _, ovl) = placed();
    let ns = &ovl.namespaces["ov-aaaaaaaaa"];
    // Nothing in the namespace's table: the additions are among the early steps, after
    // the table itself and before anything that makes a port.
    let mut o = assumed(&ovl);
    o.netns.get_mut("ov-aaaaaaaaa").expect("ns").guard = Elements::default();
    let p = diff(&o, &ovl);
    assert_eq!(kinds(&p), vec!["GuardElements:false"]);
    assert!(p.late.is_empty());
    // A port that left: its elements are removed late (after the host retired it).
    let mut o = assumed(&ovl);
    let gone = "\"vbgone\"".to_string();
    o.netns.get_mut("ov-aaaaaaaaa").expect("ns").guard.insert(
        crate::firewall::SET_GUARDED,
        gone.clone(),
        String::new(),
    );
    let p = diff(&o, &ovl);
    assert!(p.steps.is_empty(), "{:#?}", p.steps);
    assert_eq!(p.late.len(), 1);
    let NsOp::GuardElements { changes, late, .. } = &p.late[0].op else {
        panic!("{:?}", p.late[0])
    };
    assert!(late);
    assert!(changes.iter().any(|c| c.delete.contains(&gone)));
    // A pass scoped to other ports leaves both alone.
    let mut scoped = ovl.clone();
    scoped.guard_scope = Some(BTreeSet::from(["vbother".to_string()]));
    let p = diff(&o, &scoped);
    assert!(p.steps.is_empty() && p.late.is_empty(), "{p:#?}");
    // The namespace's guard rules gone (someone flushed its table): written again.
    let mut o = assumed(&ovl);
    o.netns
        .get_mut("ov-aaaaaaaaa")
        .expect("ns")
        .guard_rules
        .clear();
    assert_eq!(kinds(&diff(&o, &ovl)), vec!["GuardBase"]);
    let _ = ns;
}

#[test]
fn the_old_shape_in_the_host_is_removed_first_and_only_if_berths() {
    let d = want(&[ov('a', "ov", "10.50.0.0/24")]);
    let ns = &d.namespaces["ov-aaaaaaaaa"];
    let vx = names::vxlan_name(&"a".repeat(64));
    assert_eq!(ns.old_links, vec![ns.bridge.name.clone(), vx.clone()]);
    let mut o = assumed(&d);
    o.old_links.insert(
        vx.clone(),
        ObservedLink {
            name: vx.clone(),
            kind: Some("vxlan".into()),
            alias: Some("berth:vx:ov".into()),
            ..ObservedLink::default()
        },
    );
    o.old_links.insert(
        ns.bridge.name.clone(),
        ObservedLink {
            name: ns.bridge.name.clone(),
            kind: Some("bridge".into()),
            mac: Some(names::owner_mac(&ns.bridge.name)),
            ..ObservedLink::default()
        },
    );
    assert_eq!(
        kinds(&diff(&o, &d)),
        vec![
            format!("DeleteHostLink:{}", ns.bridge.name),
            format!("DeleteHostLink:{vx}")
        ]
    );
    // Not berth's (no mark, no owner MAC): left alone.
    for l in o.old_links.values_mut() {
        l.alias = None;
        l.mac = None;
    }
    assert!(diff(&o, &d).steps.is_empty());
}

#[test]
fn an_endpoint_made_in_the_host_before_is_made_again_in_its_namespace() {
    let (o, d, _) = placed();
    let mut host_obs = crate::host::assumed(&d).expect("no VXLAN port in the host");
    let (veth, e) = d
        .endpoints
        .iter()
        .find(|(_, e)| e.plan.bridge == o.bridge)
        .expect("overlay endpoint");
    // As an older berthd left it: in the host, a port of the host's bridge.
    host_obs.links.get_mut(veth).expect("veth").netns = None;
    let p = crate::host::diff(&host_obs, &d);
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.action()).collect();
    assert_eq!(
        kinds,
        vec!["DeleteLink", "CreateEndpoint"],
        "{:#?}",
        p.steps
    );
    assert!(matches!(&p.steps[0].op,
        StepOp::DeleteLink { name, netns: None } if name == veth));
    let StepOp::CreateEndpoint { plan, .. } = &p.steps[1].op else {
        panic!("{:?}", p.steps[1])
    };
    assert_eq!(plan.host_netns, e.plan.host_netns);
    // Its container side goes with the old veth, and the default route through it: the
    // new one brings the routes back when it is the gateway interface.
    let r = &d.routes[&e.plan.netns];
    if r.ifname == e.plan.ifname {
        assert_eq!(plan.routes, r.routes);
    }
    // Any step on it runs in its namespace.
    host_obs.links.get_mut(veth).expect("veth").netns = e.plan.host_netns.clone();
    host_obs.links.get_mut(veth).expect("veth").mtu = 1200;
    let p = crate::host::diff(&host_obs, &d);
    assert!(
        matches!(&p.steps[..], [Step { op: StepOp::SetEndpointMtu { host_netns, .. }, .. }]
        if *host_netns == e.plan.host_netns),
        "{:#?}",
        p.steps
    );
    // An orphan in a namespace is deleted there.
    let mut orphan = host_obs.links[veth].clone();
    orphan.name = "vbzzzzzzzzzz".into();
    orphan.alias = Some(format!("{}x", crate::host::MARK_PREFIX));
    host_obs.links.insert(orphan.name.clone(), orphan);
    host_obs.links.get_mut(veth).expect("veth").mtu = e.plan.mtu;
    host_obs.all_links = true;
    let p = crate::host::diff(&host_obs, &d);
    assert!(
        matches!(&p.steps[..], [Step { op: StepOp::DeleteLink { name, netns }, .. }]
        if name == "vbzzzzzzzzzz" && *netns == e.plan.host_netns),
        "{:#?}",
        p.steps
    );
}
