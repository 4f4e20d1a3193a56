use super::*;
use berth_plan::host::{ObservedNetns, Problem, Step, StepOp};
use berth_plan::names::owner_mac;
use berth_plan::network::{
    plan_endpoint, plan_network, EndpointRequest, IpamRequest, NetworkRequest,
};

fn hex(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Network web (10.1.0.0/24) and container api on it with alias www, through the real planners.
fn world() -> (Vec<NetworkSpec>, Vec<Entry>) {
    let req = NetworkRequest {
        name: "web".into(),
        ipam: vec![IpamRequest {
            subnet: Some("10.1.0.0/24".into()),
            ..IpamRequest::default()
        }],
        ..NetworkRequest::default()
    };
    let web = plan_network(&req, hex('a'), String::new(), &[], &[]).unwrap();
    let mut api = ContainerSpec::new(hex('1'), "api", vec!["sleep".into()]);
    let ep_req = EndpointRequest {
        aliases: vec!["www".into()],
        ..EndpointRequest::default()
    };
    let ep = plan_endpoint(&web, &api, &[], &ep_req, hex('e')).unwrap();
    api.endpoints.push(ep);
    let published = vec![Published {
        proto: berth_plan::ports::Proto::Tcp,
        host_ip: "0.0.0.0".parse().unwrap(),
        host_port: 8080,
        container_ip: "10.1.0.2".parse().unwrap(),
        container_port: 80,
    }];
    let e = Entry {
        spec: api,
        status: Status::Running,
        netns: Some("/proc/42/ns/net".into()),
        published,
    };
    (vec![web], vec![e])
}

fn owned(name: &str, kind: &str, master: Option<&str>, addrs: &[&str]) -> ObservedLink {
    ObservedLink {
        name: name.into(),
        kind: Some(kind.into()),
        master: master.map(String::from),
        up: true,
        mtu: 1500,
        alias: None,
        mac: Some(owner_mac(name)),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        port_flags: None,
        forward_delay: (kind == "bridge").then_some(0),
        mcast_snooping: (kind == "bridge").then_some(false),
        netns: None,
    }
}

/// What the kernel has once the world is in place, plus one orphan veth of berth's.
fn observed(nets: &[NetworkSpec], cs: &[Entry]) -> ObservedHost {
    let br = nets[0].bridge.clone();
    let ep = &cs[0].spec.endpoints[0];
    let mut o = ObservedHost {
        all_links: true,
        ..ObservedHost::default()
    };
    o.links
        .insert(br.clone(), owned(&br, "bridge", None, &["10.1.0.1/24"]));
    o.links.insert(
        ep.host_ifname.clone(),
        owned(&ep.host_ifname, "veth", Some(&br), &[]),
    );
    o.links.insert(
        "vbdeadbeef000".into(),
        owned("vbdeadbeef000", "veth", None, &[]),
    );
    o.links.insert(
        "uplink".into(),
        ObservedLink {
            name: "uplink".into(),
            up: true,
            ..ObservedLink::default()
        },
    );
    let mut ns = ObservedNetns {
        reachable: true,
        ..ObservedNetns::default()
    };
    ns.links
        .insert("eth0".into(), owned("eth0", "veth", None, &["10.1.0.2/24"]));
    o.netns.insert("/proc/42/ns/net".into(), ns);
    o
}

#[test]
fn a_converged_world_with_an_orphan() {
    let (nets, cs) = world();
    let o = observed(&nets, &cs);
    let t = build(&nets, &cs, &o, &Plan::default());
    assert!(t.in_sync);
    let n = &t.networks[0];
    assert_eq!(n.name, "web");
    assert_eq!(n.subnets, vec!["10.1.0.0/24"]);
    let dev = n.device.as_ref().unwrap();
    assert_eq!((dev.kind.as_str(), dev.state.as_str()), ("bridge", "ok"));
    assert_eq!(dev.addrs, vec!["10.1.0.1/24"]);
    let e = &n.endpoints[0];
    assert_eq!(e.state, "ok");
    assert_eq!(e.observed_addrs, vec!["10.1.0.2/24"]);
    assert_eq!(e.veth.as_ref().unwrap().state, "ok");
    assert_eq!(e.veth.as_ref().unwrap().master, nets[0].bridge);
    for name in ["api", "www", "api.web", "111111111111"] {
        assert!(
            e.dns_names.contains(&name.to_string()),
            "{name} in {:?}",
            e.dns_names
        );
    }
    assert_eq!(t.containers[0].ports, vec!["0.0.0.0:8080->80/tcp"]);
    // The orphan is berth's and not wanted; the uplink is not berth's and not listed.
    assert_eq!(t.orphans.len(), 1);
    assert_eq!(t.orphans[0].name, "vbdeadbeef000");
    assert_eq!(t.orphans[0].state, "not wanted");
}

#[test]
fn drift_is_marked_where_it_is() {
    let (nets, cs) = world();
    let veth = cs[0].spec.endpoints[0].host_ifname.clone();
    let br = nets[0].bridge.clone();
    // The veth is gone, the bridge lost its address, eth0 lost its address.
    let mut o = observed(&nets, &cs);
    o.links.remove(&veth);
    o.links.get_mut(&br).unwrap().addrs.clear();
    let ns = o.netns.get_mut("/proc/42/ns/net").unwrap();
    ns.links.get_mut("eth0").unwrap().addrs.clear();
    let plan = Plan {
        steps: vec![Step {
            op: StepOp::DeleteLink {
                name: "x".into(),
                netns: None,
            },
            object: format!("veth {veth} of container api on network web"),
            reason: "missing".into(),
        }],
        problems: vec![Problem {
            object: "link y".into(),
            message: "in the way".into(),
        }],
    };
    let t = build(&nets, &cs, &o, &plan);
    assert!(!t.in_sync);
    let n = &t.networks[0];
    let v = n.endpoints[0].veth.as_ref().unwrap();
    assert_eq!(v.state, "missing");
    assert_eq!(v.detail, format!("veth {veth} missing in the kernel"));
    let dev = n.device.as_ref().unwrap();
    assert_eq!(dev.state, "differs");
    assert!(dev.detail.contains("lacks 10.1.0.1/24"), "{dev:?}");
    assert_eq!(n.endpoints[0].state, "differs");
    assert_eq!(t.drift.len(), 2);
    assert!(t.drift[0].contains("missing"));
    assert_eq!(t.drift[1], "link y: in the way");
    // A bridge name held by a link berth did not create.
    let mut o = observed(&nets, &cs);
    o.links.get_mut(&br).unwrap().mac = Some([2, 0, 0, 0, 0, 1]);
    let t = build(&nets, &cs, &o, &Plan::default());
    assert_eq!(t.networks[0].device.as_ref().unwrap().state, "not berth's");
    // A stopped container has no endpoint in the kernel and none is shown.
    let (nets, mut cs) = world();
    cs[0].netns = None;
    cs[0].status = Status::Exited;
    let t = build(&nets, &cs, &observed(&nets, &cs), &Plan::default());
    assert!(t.networks[0].endpoints.is_empty());
    // Its veth would then be an orphan.
    assert_eq!(t.orphans.len(), 2);
}
