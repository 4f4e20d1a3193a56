use super::*;
use crate::driver::{desired, ForwardingIntent, RunningContainer};
use crate::model::ContainerSpec;
use crate::testutil::{container, lan, net};

/// What the kernel shows once `d` is fully applied, its nft table included, every link seen.
fn converged(d: &DesiredHost) -> ObservedHost {
    let mut o = assumed(d).expect("no overlay in these worlds");
    o.all_links = true;
    o.firewall = Some(ObservedFirewall {
        rules: crate::firewall::static_rules(&d.firewall),
        elements: d.elements.clone(),
    });
    o
}

fn world() -> (Vec<NetworkSpec>, Vec<ContainerSpec>) {
    let web = net('a', "web", "10.1.0.0/24");
    let db = net('b', "db", "10.2.0.0/24");
    let c = container('c', "api", &[(&web, "10.1.0.2/24"), (&db, "10.2.0.2/24")]);
    (vec![web, db], vec![c])
}

fn desired_of(nets: &[NetworkSpec], cs: &[ContainerSpec]) -> DesiredHost {
    let running: Vec<RunningContainer<'_>> = cs
        .iter()
        .map(|c| RunningContainer {
            spec: c,
            netns: format!("/proc/{}/ns/net", c.name.len() + 100),
        })
        .collect();
    desired(
        nets,
        &running,
        FirewallConfig::default(),
        ForwardingIntent::default(),
        crate::firewall::desired_elements(nets),
        false,
    )
}

fn actions(p: &Plan) -> Vec<String> {
    p.steps.iter().map(|s| s.action().to_string()).collect()
}

#[test]
fn a_converged_host_needs_nothing() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let plan = diff(&converged(&d), &d);
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    assert!(plan.problems.is_empty());
}

#[test]
fn an_empty_host_is_built_in_order() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let mut o = converged(&d);
    o.links.clear();
    o.netns.values_mut().for_each(|n| {
        n.links.clear();
        n.default_routes.clear();
    });
    o.sysctls.retain(|k, _| !is_link_sysctl(k));
    o.firewall = Some(ObservedFirewall::default());
    let plan = diff(&o, &d);
    let a = actions(&plan);
    let pos = |name: &str| a.iter().position(|x| x == name).expect(name);
    assert_eq!(a[0], "FirewallBase");
    assert!(pos("CreateBridge") < pos("CreateEndpoint"));
    // The gateway endpoint's creation carries the default route: no separate step.
    assert!(!a.contains(&"ReplaceRoutes".to_string()), "{a:?}");
    let with_routes = plan
        .steps
        .iter()
        .filter(|s| matches!(&s.op, StepOp::CreateEndpoint { plan, .. } if !plan.routes.is_empty()))
        .count();
    assert_eq!(with_routes, 1);
    assert_eq!(a.iter().filter(|x| *x == "CreateBridge").count(), 2);
    assert_eq!(a.iter().filter(|x| *x == "CreateEndpoint").count(), 2);
    // New bridges get their sysctls right after they exist.
    assert_eq!(a.iter().filter(|x| *x == "SetSysctl").count(), 4);
    assert!(a.contains(&"FirewallElements".to_string()));
}

#[test]
fn foreign_links_are_never_touched() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let mut o = converged(&d);
    // A foreign veth with a berth-like name, and a foreign link where a bridge should be.
    o.links.insert(
        "vb0123456789ab".into(),
        ObservedLink {
            name: "vb0123456789ab".into(),
            kind: Some("veth".into()),
            ..ObservedLink::default()
        },
    );
    let br = nets[0].bridge.clone();
    o.links.insert(
        br.clone(),
        ObservedLink {
            name: br.clone(),
            kind: Some("dummy".into()),
            ..ObservedLink::default()
        },
    );
    let plan = diff(&o, &d);
    assert!(
        plan.steps
            .iter()
            .all(|s| !s.object.contains("vb0123456789ab")
                && !matches!(&s.op, StepOp::DeleteLink { name, .. } if *name == br)),
        "{:#?}",
        plan.steps
    );
    assert_eq!(plan.problems.len(), 1, "{:#?}", plan.problems);
    assert!(plan.problems[0].message.contains("dummy"));
}

#[test]
fn owned_orphans_are_deleted_veths_before_bridges() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let mut o = converged(&d);
    o.links.insert(
        "berth-dead00000".into(),
        ObservedLink {
            name: "berth-dead00000".into(),
            kind: Some("bridge".into()),
            alias: Some("berth:net:dead00000000".into()),
            ..ObservedLink::default()
        },
    );
    // Marked only by its MAC (crash between creation and alias).
    o.links.insert(
        "vbdeadbeef0000".into(),
        ObservedLink {
            name: "vbdeadbeef0000".into(),
            kind: Some("veth".into()),
            mac: Some(names::owner_mac("vbdeadbeef0000")),
            ..ObservedLink::default()
        },
    );
    let plan = diff(&o, &d);
    let dels: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            StepOp::DeleteLink { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(dels, vec!["vbdeadbeef0000", "berth-dead00000"]);
}

#[test]
fn drift_kinds_give_exactly_their_repair() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let veth = cs[0].endpoints[0].host_ifname.clone();
    let ns = d.endpoints[&veth].plan.netns.clone();

    // Deleted host veth: the peer went with it.
    let mut o = converged(&d);
    o.links.remove(&veth);
    o.netns.get_mut(&ns).expect("ns").links.remove("eth0");
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["CreateEndpoint"], "{:#?}", plan.steps);

    // Deleted default route.
    let mut o = converged(&d);
    o.netns.get_mut(&ns).expect("ns").default_routes.clear();
    assert_eq!(actions(&diff(&o, &d)), vec!["ReplaceRoutes"]);

    // Deleted bridge: its ports lost their master.
    let mut o = converged(&d);
    let br = nets[0].bridge.clone();
    o.links.remove(&br);
    o.links.get_mut(&veth).expect("veth").master = None;
    o.sysctls.retain(|k, _| !k.contains(&br));
    let a = actions(&diff(&o, &d));
    assert_eq!(a[0], "CreateBridge");
    assert!(a.contains(&"AttachPort".to_string()), "{a:?}");

    // nft flush: static rules gone, elements stay.
    let mut o = converged(&d);
    if let Some(fw) = o.firewall.as_mut() {
        fw.rules.clear();
    }
    assert_eq!(actions(&diff(&o, &d)), vec!["FirewallBase"]);

    // Table deleted: rules and elements gone.
    let mut o = converged(&d);
    o.firewall = Some(ObservedFirewall::default());
    // The exact-key elements first (before any endpoint would need them), the interval sets'
    // after.
    assert_eq!(
        actions(&diff(&o, &d)),
        vec!["FirewallBase", "FirewallElements", "FirewallElements"]
    );

    // A stale veth whose peer is elsewhere is replaced.
    let mut o = converged(&d);
    o.netns.get_mut(&ns).expect("ns").links.remove("eth0");
    assert_eq!(actions(&diff(&o, &d)), vec!["DeleteLink", "CreateEndpoint"]);

    // A container that just died is left alone.
    let mut o = converged(&d);
    let n = o.netns.get_mut(&ns).expect("ns");
    n.reachable = false;
    n.links.clear();
    o.links.remove(&veth);
    assert!(diff(&o, &d).steps.is_empty());
}

#[test]
fn adopted_bridges_keep_their_addresses() {
    let (mut nets, cs) = world();
    nets[0].bridge = "mybr".into();
    nets[0]
        .options
        .insert(crate::network::OPT_ADOPT_BRIDGE.into(), "true".into());
    let d = desired_of(&nets, &cs);
    let mut o = converged(&d);
    let l = o.links.get_mut("mybr").expect("mybr");
    l.alias = Some("the admin's".into());
    l.mac = Some([2, 0, 0, 0, 0, 1]);
    l.addrs.push("192.0.2.1/24".parse().expect("net"));
    // The admin's timers too (the kernel's default forward delay).
    l.forward_delay = Some(1500);
    l.mcast_snooping = Some(true);
    assert!(diff(&o, &d).steps.is_empty());
    // Not wanted any more: never deleted.
    let d2 = desired_of(&nets[1..], &[]);
    let plan = diff(&o, &d2);
    assert!(plan
        .steps
        .iter()
        .all(|s| !matches!(&s.op, StepOp::DeleteLink { name, .. } if name == "mybr")));
}

#[test]
fn an_owned_bridge_with_a_forward_delay_is_reconfigured_once() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let br = nets[0].bridge.clone();
    let mut o = converged(&d);
    // A bridge made by an older berth (the kernel's default, 15 s), or set by someone.
    o.links.get_mut(&br).expect("bridge").forward_delay = Some(1500);
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["ConfigureBridge"], "{:#?}", plan.steps);
    assert!(
        plan.steps[0]
            .reason
            .contains("forward delay 15.00 s instead of 0"),
        "{}",
        plan.steps[0].reason
    );
    assert!(matches!(
        &plan.steps[0].op,
        StepOp::ConfigureBridge {
            alias: Some(_),
            keep_others: false,
            ..
        }
    ));
    // Read back as 0 (or not read at all): nothing to do.
    for fd in [Some(0), None] {
        o.links.get_mut(&br).expect("bridge").forward_delay = fd;
        assert!(diff(&o, &d).steps.is_empty(), "{fd:?}");
    }
}

#[test]
fn an_owned_bridge_with_multicast_snooping_is_reconfigured_once() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let br = nets[0].bridge.clone();
    let mut o = converged(&d);
    // A bridge made by an older berth (the kernel's default: snooping on).
    o.links.get_mut(&br).expect("bridge").mcast_snooping = Some(true);
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["ConfigureBridge"], "{:#?}", plan.steps);
    assert!(
        plan.steps[0].reason.contains("multicast snooping on"),
        "{}",
        plan.steps[0].reason
    );
    // Both settings off at once: one step naming both.
    o.links.get_mut(&br).expect("bridge").forward_delay = Some(1500);
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["ConfigureBridge"], "{:#?}", plan.steps);
    assert!(
        plan.steps[0].reason.contains("forward delay 15.00 s")
            && plan.steps[0].reason.contains("multicast snooping on"),
        "{}",
        plan.steps[0].reason
    );
    // After the step (what the kernel then reports): nothing to do; not read: nothing either.
    for snooping in [Some(false), None] {
        let l = o.links.get_mut(&br).expect("bridge");
        l.forward_delay = Some(0);
        l.mcast_snooping = snooping;
        assert!(diff(&o, &d).steps.is_empty(), "{snooping:?}");
    }
}

#[test]
fn link_sysctls_are_told_apart() {
    assert!(is_link_sysctl("net.ipv4.conf.berth0.route_localnet"));
    assert!(is_link_sysctl("net.ipv6.conf.br-x.accept_dad"));
    assert!(!is_link_sysctl("net.ipv6.conf.all.forwarding"));
    assert!(!is_link_sysctl("net.ipv4.ip_forward"));
}

#[test]
fn ipv6_forwarding_is_restored_when_the_last_dual_stack_network_goes() {
    let d = desired(
        &[],
        &[],
        FirewallConfig::default(),
        ForwardingIntent {
            ipv6: false,
            ipv6_restore_off: true,
        },
        Elements::default(),
        false,
    );
    let mut o = ObservedHost::default();
    o.sysctls
        .insert("net.ipv6.conf.all.forwarding".into(), "1".into());
    o.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["SetSysctl"]);
}

fn macvlan_world() -> (Vec<NetworkSpec>, Vec<ContainerSpec>) {
    let lan = lan();
    let mut c = container('c', "printer", &[(&lan, "192.168.1.200/24")]);
    c.endpoints[0].mac = "02:42:c0:a8:01:c8".into();
    (vec![lan], vec![c])
}

#[test]
fn a_macvlan_endpoint_is_one_link_in_the_container() {
    let (nets, cs) = macvlan_world();
    let d = desired_of(&nets, &cs);
    assert!(d.bridges.is_empty() && d.endpoints.is_empty());
    assert_eq!(d.sublinks.len(), 1);
    let sl = d.sublinks.values().next().expect("one sublink");
    assert_eq!(sl.plan.parent, "lan0");
    assert!(sl.plan.routes.is_empty(), "routes are per namespace");
    assert!(crate::firewall::desired_elements(&nets)
        .0
        .values()
        .all(|s| s.is_empty()));

    // Converged: nothing to do.
    let o = converged(&d);
    assert!(diff(&o, &d).steps.is_empty(), "{:#?}", diff(&o, &d).steps);

    // Missing (the container just started, or someone deleted it): created, with the default
    // route in the same step.
    let mut o = converged(&d);
    for n in o.netns.values_mut() {
        n.links.clear();
        n.default_routes.clear();
    }
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), ["CreateSublink"]);
    let StepOp::CreateSublink { plan: p } = &plan.steps[0].op else {
        unreachable!()
    };
    assert_eq!(p.routes.len(), 1);
    assert_eq!(
        p.routes[0].via,
        "192.168.1.1".parse::<IpAddr>().expect("ip")
    );

    // Stale (another MAC, or a veth left by a bridge endpoint): replaced, routes included.
    let mut o = converged(&d);
    for n in o.netns.values_mut() {
        n.links
            .values_mut()
            .for_each(|l| l.mac = Some([2, 0, 0, 0, 0, 1]));
    }
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), ["DeleteContainerLink", "CreateSublink"]);
    assert!(
        plan.steps[0].reason.contains("MAC 02:00:00:00:00:01"),
        "{}",
        plan.steps[0].reason
    );
    let StepOp::CreateSublink { plan: p } = &plan.steps[1].op else {
        unreachable!()
    };
    assert_eq!(p.routes.len(), 1);

    // Down and without its address: configured in place.
    let mut o = converged(&d);
    for n in o.netns.values_mut() {
        n.links.values_mut().for_each(|l| {
            l.up = false;
            l.addrs.clear();
        });
    }
    assert_eq!(actions(&diff(&o, &d)), ["ConfigureContainerSide"]);
}

#[test]
fn a_disconnected_macvlan_endpoint_is_deleted_in_the_container() {
    let (nets, cs) = macvlan_world();
    let d = desired_of(&nets, &cs);
    let o = converged(&d);
    let mut left = cs.clone();
    left[0].endpoints.clear();
    let d2 = desired_of(&nets, &left);
    // The namespace is still looked into without endpoints.
    assert_eq!(d2.routes.len(), 1);
    let plan = diff(&o, &d2);
    assert_eq!(actions(&plan), ["DeleteContainerLink", "ReplaceRoutes"]);
    // A veth peer (a bridge endpoint) is never deleted that way, nor lo.
    let mut o2 = o.clone();
    for n in o2.netns.values_mut() {
        n.links
            .values_mut()
            .for_each(|l| l.kind = Some("veth".into()));
    }
    assert!(!actions(&diff(&o2, &d2)).contains(&"DeleteContainerLink".to_string()));
}

#[test]
fn a_dead_container_s_macvlan_link_is_left_alone() {
    let (nets, cs) = macvlan_world();
    let d = desired_of(&nets, &cs);
    let mut o = converged(&d);
    for n in o.netns.values_mut() {
        n.reachable = false;
        n.links.clear();
    }
    assert!(diff(&o, &d).steps.is_empty());
}

#[test]
fn a_host_shim_is_created_repaired_and_removed() {
    let mut lan = lan();
    lan.options
        .insert(crate::network::OPT_HOST_SHIM.into(), "true".into());
    lan.subnets[0].ip_range = Some("192.168.1.192/27".parse().expect("range"));
    lan.shim_src = Some("192.168.1.2".parse().expect("ip"));
    let nets = vec![lan];
    let d = desired_of(&nets, &[]);
    assert_eq!(d.shims.len(), 1);
    let name = d.shims.keys().next().expect("shim").clone();
    assert!(name.starts_with("bm"));

    let mut o = converged(&d);
    o.links.remove(&name);
    o.link_routes.clear();
    // Missing: ensured.
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), ["EnsureShim"]);
    assert_eq!(plan.steps[0].reason, "missing");

    // Present, marked, up, routed: nothing to do.
    let sh = &d.shims[&name];
    o.links.insert(
        name.clone(),
        ObservedLink {
            name: name.clone(),
            kind: Some("macvlan".into()),
            up: true,
            alias: Some(sh.plan.alias.clone()),
            mac: Some(names::owner_mac(&name)),
            ..ObservedLink::default()
        },
    );
    o.link_routes
        .insert(name.clone(), vec!["192.168.1.192/27".parse().expect("net")]);
    assert!(diff(&o, &d).steps.is_empty(), "{:#?}", diff(&o, &d).steps);

    // Its route deleted: ensured again.
    o.link_routes.clear();
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), ["EnsureShim"]);
    assert!(plan.steps[0]
        .reason
        .contains("no route to 192.168.1.192/27"));

    // A foreign link of that name: a problem, never touched.
    let mut foreign = o.clone();
    if let Some(l) = foreign.links.get_mut(&name) {
        l.alias = None;
        l.mac = Some([2, 0, 0, 0, 0, 9]);
    }
    let plan = diff(&foreign, &d);
    assert!(plan.steps.is_empty() && plan.problems.len() == 1);

    // The network removed: the shim is an orphan (owned) and goes.
    let empty = desired_of(&[], &[]);
    let plan = diff(&o, &empty);
    assert_eq!(actions(&plan), ["DeleteLink"]);
}

/// A parent link berth owns (an 802.1Q sub-interface, an internal segment): created before
/// the container links on it, brought up again, shared by the networks on it, removed with the
/// last one, and never touched when a link of that name is not berth's.
#[test]
fn an_owned_parent_is_created_first_shared_and_removed_last() {
    let (mut nets, mut cs) = macvlan_world();
    let v = crate::network::vlan_plan("lan0.10").expect("vlan");
    nets[0].options.insert("parent".into(), "lan0.10".into());
    nets[0].owned_parent = Some(crate::network::vlan_parent(&v));
    let mut other = lan();
    other.id = "f".repeat(64);
    other.name = "lan2".into();
    other.subnets[0].subnet = "192.168.2.0/24".parse().expect("net");
    other.options.insert("parent".into(), "lan0.10".into());
    other.owned_parent = nets[0].owned_parent.clone();
    nets.push(other);
    cs[0].endpoints[0].network_id = nets[0].id.clone();
    let d = desired_of(&nets, &cs);
    assert_eq!(d.parents.len(), 1, "one link for both networks");
    assert_eq!(d.parents["lan0.10"].networks, ["lan", "lan2"]);
    assert_eq!(
        d.sublinks.values().next().map(|s| s.plan.parent.as_str()),
        Some("lan0.10")
    );

    // Nothing yet: the parent first, then the container's link on it.
    let mut o = converged(&d);
    o.links.remove("lan0.10");
    for n in o.netns.values_mut() {
        n.links.retain(|k, _| k == "lo");
    }
    let plan = diff(&o, &d);
    let acts = actions(&plan);
    let pos = |a: &str| acts.iter().position(|x| x == a);
    assert!(
        pos("EnsureParent") < pos("CreateSublink") && pos("EnsureParent").is_some(),
        "{acts:?}"
    );

    // Converged: nothing. Down: brought up.
    let mut o = converged(&d);
    assert!(diff(&o, &d).steps.is_empty(), "{:#?}", diff(&o, &d).steps);
    if let Some(l) = o.links.get_mut("lan0.10") {
        l.up = false;
    }
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), ["EnsureParent"]);
    assert_eq!(plan.steps[0].reason, "down");

    // One network gone: still wanted by the other.
    let mut o = converged(&d);
    let d1 = desired_of(&nets[..1], &cs);
    assert!(diff(&o, &d1).steps.is_empty());
    // Both gone: an orphan carrying berth's mark, deleted.
    let empty = desired_of(&[], &[]);
    for n in o.netns.values_mut() {
        n.reachable = false;
    }
    let plan = diff(&o, &empty);
    assert_eq!(actions(&plan), ["DeleteLink"], "{:#?}", plan.steps);

    // A link of that name someone else made: used as it is, never changed nor deleted.
    if let Some(l) = o.links.get_mut("lan0.10") {
        l.alias = None;
    }
    assert!(diff(&o, &d).steps.is_empty());
    assert!(diff(&o, &empty).steps.is_empty());
    if let Some(l) = o.links.get_mut("lan0.10") {
        l.up = false;
    }
    let plan = diff(&o, &d);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.problems.len(), 1, "{:?}", plan.problems);
}

/// Anti-spoofing elements belong to endpoints: a pass scoped to one container adds and removes
/// only its ports' elements and keeps the other containers' (which it does not plan) as they
/// are; a full pass removes the elements of ports nothing wants any more.
#[test]
fn guard_elements_follow_the_scope_of_a_pass() {
    let (nets, cs) = world();
    let other = container('d', "other", &[(&nets[0], "10.1.0.3/24")]);
    let all = desired_of(&nets, &[cs[0].clone(), other.clone()]);
    let guarded = |e: &Elements| -> Vec<String> {
        e.0.get(crate::firewall::SET_GUARDED)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(guarded(&all.elements).len(), 3, "{:?}", all.elements);
    let observed = converged(&all);

    // A pass scoped to "api" alone: nothing to do, "other"'s elements are not touched.
    let mut scoped = desired_of(&nets, &cs);
    scoped.guard_scope = Some(scoped.endpoints.keys().cloned().collect());
    let fw_steps = |p: &Plan| -> Vec<Step> {
        p.steps
            .iter()
            .filter(|s| matches!(s.op, StepOp::FirewallElements { .. }))
            .cloned()
            .collect()
    };
    let plan = diff(&observed, &scoped);
    assert!(fw_steps(&plan).is_empty(), "{:#?}", plan.steps);
    let after = elements_after(
        &observed
            .firewall
            .as_ref()
            .expect("observed firewall")
            .elements,
        &scoped,
    );
    assert_eq!(guarded(&after), guarded(&all.elements));

    // "other" was disconnected (its veth is in `also`): its elements go, "api"'s stay.
    let veth = other.endpoints[0].host_ifname.clone();
    let mut scope = scoped.guard_scope.clone().expect("a scope");
    scope.insert(veth.clone());
    scoped.guard_scope = Some(scope);
    let steps = fw_steps(&diff(&observed, &scoped));
    assert_eq!(steps.len(), 1);
    let StepOp::FirewallElements { script, after, .. } = &steps[0].op else {
        panic!("{steps:?}")
    };
    assert!(
        script
            .lines()
            .all(|l| l.starts_with("delete element bridge berth ")
                && l.contains(&format!("\"{veth}\""))),
        "{script}"
    );
    assert_eq!(guarded(after).len(), 2);

    // A full pass without "other" removes its elements too.
    let full = desired_of(&nets, &cs);
    assert_eq!(fw_steps(&diff(&observed, &full)).len(), 1);
}

#[test]
fn retired_names_are_short_unique_and_recognised() {
    let n = retired_name(&"3f".repeat(32));
    assert_eq!(n, "bret3f3f3f3f");
    assert!(n.len() <= 15, "IFNAMSIZ");
    assert!(is_retired(&n));
    assert_ne!(retired_name(&"a".repeat(64)), retired_name(&"b".repeat(64)));
    // Odd ids still give a valid, recognised name.
    assert!(is_retired(&retired_name("xyz")));
    for not in [
        "eth0",
        "bret",
        "bret3f3f3f3",
        "bret3f3f3f3fz",
        "bretzzzzzzzz",
        "vb1234",
    ] {
        assert!(!is_retired(not), "{not}");
    }
}

/// The state an API call assumes, with the element cache of a converged host.
fn assumed_with_cache(d: &DesiredHost) -> ObservedHost {
    let mut o = assumed(d).expect("no overlay in these worlds");
    o.firewall = Some(ObservedFirewall {
        rules: crate::firewall::static_rules(&d.firewall),
        elements: d.elements.clone(),
    });
    o
}

#[test]
fn an_assumed_host_needs_nothing_in_every_world() {
    let (nets, cs) = world();
    let (lan_nets, lan_cs) = macvlan_world();
    let mut shim_lan = lan();
    shim_lan
        .options
        .insert(crate::network::OPT_HOST_SHIM.into(), "true".into());
    shim_lan.subnets[0].ip_range = Some("192.168.1.192/27".parse().expect("range"));
    shim_lan.shim_src = Some("192.168.1.2".parse().expect("ip"));
    for d in [
        desired_of(&nets, &cs),
        desired_of(&lan_nets, &lan_cs),
        desired_of(&[shim_lan], &[]),
        desired_of(&nets, &[]),
    ] {
        let plan = diff(&assumed_with_cache(&d), &d);
        assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
        assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    }
}

#[test]
fn a_connect_from_the_assumed_state_is_exactly_its_endpoint() {
    // Before: api on web only. After: api on web and db (a `network connect db api`).
    let (nets, cs) = world();
    let after = desired_of(&nets, &cs);
    let mut alone = cs[0].clone();
    alone.endpoints.truncate(1);
    let before = desired_of(&nets, &[alone]);
    let plan = diff(&assumed_with_cache(&before), &after);
    // Its anti-spoofing elements, then the endpoint, then the default route it now carries
    // (db sorts first: the gateway moves, as docker's does); nothing deleted, nothing else
    // touched.
    assert_eq!(
        actions(&plan),
        ["FirewallElements", "CreateEndpoint", "ReplaceRoutes"]
    );
    // The port is guarded before it exists: the elements added ahead of it name it in
    // `guarded` and give its MAC.
    let db_port = after
        .endpoints
        .iter()
        .find(|(_, e)| e.network == "db")
        .map(|(n, _)| format!("\"{n}\""))
        .expect("db endpoint");
    let StepOp::FirewallElements {
        changes, removed, ..
    } = &plan.steps[0].op
    else {
        panic!("{:#?}", plan.steps[0]);
    };
    assert_eq!(*removed, 0);
    let added = |set: &str| -> Vec<&str> {
        changes
            .iter()
            .filter(|c| c.set == set)
            .flat_map(|c| c.add.iter().map(|(e, _)| e.as_str()))
            .collect()
    };
    assert_eq!(added(crate::firewall::SET_GUARDED), [db_port.as_str()]);
    assert!(
        added(crate::firewall::SET_PORT_MAC)
            .iter()
            .any(|e| e.starts_with(&db_port)),
        "{changes:#?}"
    );
    let created: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            StepOp::CreateEndpoint { plan, .. } => Some(plan.host_ifname.as_str()),
            _ => None,
        })
        .collect();
    let db_veth = after
        .endpoints
        .iter()
        .find(|(_, e)| e.network == "db")
        .map(|(n, _)| n.as_str());
    assert_eq!(created.first().copied(), db_veth);
}

#[test]
fn a_disconnect_from_the_assumed_state_is_exactly_its_deletion() {
    let (nets, cs) = world();
    let before = desired_of(&nets, &cs);
    let mut after_c = cs[0].clone();
    let gone = after_c.endpoints.remove(1);
    let after = desired_of(&nets, &[after_c]);
    let plan = diff(&assumed_with_cache(&before), &after);
    let veth = before
        .endpoints
        .iter()
        .find(|(_, e)| e.network == "db")
        .map(|(n, _)| n.clone())
        .expect("db endpoint");
    let dels: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| matches!(&s.op, StepOp::DeleteLink { name, .. } if *name == veth))
        .collect();
    assert_eq!(dels.len(), 1, "{:#?} ({})", plan.steps, gone.ifname);
    // The default route goes back to web's gateway; db's elements go; the veth last.
    assert_eq!(
        actions(&plan),
        ["ReplaceRoutes", "FirewallElements", "DeleteLink"]
    );
}

/// Proves: an endpoint whose MTU differs from its network's (the overlay MTU followed the
/// underlay) on either end of its veth gets exactly one `SetEndpointMtu` with the network's
/// MTU, and a container side that lost its address is configured with its announcement
/// (the bridge port named, so it forwards before the announcement).
#[test]
fn endpoint_mtu_and_lost_address_are_repaired() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let veth = cs[0].endpoints[0].host_ifname.clone();
    let ns = d.endpoints[&veth].plan.netns.clone();
    let want = d.endpoints[&veth].plan.mtu;

    let mut o = converged(&d);
    peer_of(&mut o, &ns).mtu = want + 50;
    let plan = diff(&o, &d);
    assert_eq!(actions(&plan), vec!["SetEndpointMtu"], "{:#?}", plan.steps);
    assert!(
        matches!(&plan.steps[0].op, StepOp::SetEndpointMtu { veth: v, mtu, .. } if *v == veth && *mtu == want),
        "{:#?}",
        plan.steps
    );
    let mut o = converged(&d);
    o.links.get_mut(&veth).expect("veth").mtu = want - 100;
    assert_eq!(actions(&diff(&o, &d)), vec!["SetEndpointMtu"]);

    // The address put back is announced as the endpoint's plan says: not at all for the MAC
    // derived from it (no neighbour can hold another), by ARP when its previous holder had
    // another MAC.
    for reused in [false, true] {
        let mut cs = cs.clone();
        cs[0].endpoints[0].reused_mac = reused;
        let d = desired_of(&nets, &cs);
        let mut o = converged(&d);
        peer_of(&mut o, &ns).addrs.clear();
        let plan = diff(&o, &d);
        assert_eq!(
            actions(&plan),
            vec!["ConfigureContainerSide"],
            "{:#?}",
            plan.steps
        );
        match &plan.steps[0].op {
            StepOp::ConfigureContainerSide {
                announce,
                host_ifname,
                ..
            } => {
                assert_eq!(announce.arp, reused, "reused_mac {reused}: {announce:?}");
                assert_eq!(host_ifname.as_deref(), Some(veth.as_str()));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The container side `eth0` in namespace `ns` of `o`.
fn peer_of<'a>(o: &'a mut ObservedHost, ns: &str) -> &'a mut ObservedLink {
    o.netns
        .get_mut(ns)
        .and_then(|n| n.links.get_mut("eth0"))
        .expect("eth0")
}

#[test]
fn the_assumed_state_is_limited_to_what_the_observation_would_read() {
    let (nets, cs) = world();
    let d = desired_of(&nets, &cs);
    let veth = cs[0].endpoints[0].host_ifname.clone();
    let bridge = d.bridges.keys().next().expect("a bridge").clone();
    let req = ObserveRequest {
        links: Some([veth.clone()].into()),
        ..ObserveRequest::default()
    };
    let o = assumed_for(&d, &req).expect("no overlay");
    assert_eq!(o.links.keys().collect::<Vec<_>>(), [&veth]);
    assert!(!o.links.contains_key(&bridge));
    assert!(o.netns.is_empty() && o.sysctls.is_empty(), "{o:#?}");
    // Everything the full request names is there, as in `assumed`.
    let full = assumed_for(&d, &ObserveRequest::full(&d)).expect("no overlay");
    let all = assumed(&d).expect("no overlay");
    assert_eq!(full.links, all.links);
    assert_eq!(full.netns, all.netns);
    assert_eq!(full.sysctls, all.sysctls);
}
