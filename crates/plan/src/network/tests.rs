use super::*;
use crate::error::ErrorKind;

fn id(c: char) -> Id {
    std::iter::repeat_n(c, 64).collect()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn req(name: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn with_subnet(name: &str, subnet: &str) -> NetworkRequest {
    NetworkRequest {
        ipam: vec![IpamRequest {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        ..req(name)
    }
}

fn plan(r: &NetworkRequest, existing: &[NetworkSpec]) -> Result<NetworkSpec, PlanError> {
    plan_network(r, id('a'), "t".into(), existing, &[])
}

fn predefined() -> Vec<NetworkSpec> {
    predefined_networks(
        [id('1'), id('2'), id('3')],
        "t".into(),
        net("172.17.0.0/16"),
    )
}

#[test]
fn plain_network_gets_defaults() {
    let n = plan(&req("web"), &predefined()).unwrap();
    assert_eq!(n.driver, Driver::Bridge);
    assert_eq!(n.subnets.len(), 1);
    assert_eq!(n.subnets[0].subnet, net("172.18.0.0/16"));
    assert_eq!(n.subnets[0].gateway, ip("172.18.0.1"));
    assert_eq!(n.bridge, "berth-aaaaaaaaa");
    assert!(n.icc && n.masquerade && n.dns && !n.predefined);
    assert_eq!(n.mtu, 1500);
}

#[test]
fn docker_like_full_create() {
    let mut r = with_subnet("n2", "10.233.0.0/24");
    r.ipam[0].gateway = Some("10.233.0.1".into());
    r.ipam[0].ip_range = Some("10.233.0.128/25".into());
    r.options.insert(OPT_BRIDGE_NAME.into(), "cpbr0".into());
    r.options
        .insert("com.example.unknown".into(), "kept".into());
    r.labels.insert("team".into(), "x".into());
    let n = plan(&r, &[]).unwrap();
    assert_eq!(n.bridge, "cpbr0");
    assert_eq!(n.subnets[0].ip_range, Some(net("10.233.0.128/25")));
    assert_eq!(n.options, r.options);
}

#[test]
fn name_rules() {
    let existing = predefined();
    // dockerd: predefined names are forbidden (403) before any duplicate check.
    let e = plan(&req("bridge"), &existing).unwrap_err();
    assert_eq!(
        e.to_string(),
        "operation is not permitted on predefined bridge network"
    );
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert_eq!(
        plan(&req("default"), &existing).unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    // A space, a leading dash, a slash: all valid in dockerd, all valid here.
    let mut nets = existing.clone();
    for (name, c) in [("test 01", 'b'), ("-x", 'c'), ("a/b", 'd')] {
        let n = plan_network(&req(name), id(c), "t".into(), &nets, &[]).unwrap();
        nets.push(n);
    }
    let e = plan(&req("test 01"), &nets).unwrap_err();
    assert_eq!(e.to_string(), "network with name test 01 already exists");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        plan(&req("  "), &[]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn drivers() {
    let mut r = req("x");
    for d in ["", "bridge"] {
        r.driver = Some(d.into());
        assert!(plan(&r, &[]).is_ok());
    }
    r.driver = Some("host".into());
    let e = plan(&r, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"only one instance of "host" network is allowed"#
    );
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    r.driver = Some("weave".into());
    let e = plan(&r, &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"driver "weave" is not supported (berth supports: bridge, macvlan, ipvlan, overlay)"#
    );
    // Overlay: the VNI is the daemon's to allocate unless given; MTU leaves VXLAN's 50 bytes;
    // a VNI out of range is refused.
    r.driver = Some("overlay".into());
    let n = plan(&r, &[]).expect("overlay");
    assert_eq!(n.overlay.map(|o| (o.vni, o.port)), Some((0, 4789)));
    assert_eq!(n.mtu, 1450);
    r.options.insert(OPT_VXLANID.into(), "16777216".into());
    let e = plan(&r, &[]).unwrap_err();
    assert!(e.to_string().contains("from 1 to 16777215"), "{e}");
    r.options.insert(OPT_VXLANID.into(), "4097".into());
    assert_eq!(
        plan(&r, &[]).expect("vni").overlay.map(|o| o.vni),
        Some(4097)
    );
    // enable_icc=false would isolate one host's bridge ports only, not the VXLAN tunnel.
    let mut quiet = r.clone();
    quiet.options.insert(OPT_ENABLE_ICC.into(), "false".into());
    let e = plan(&quiet, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.to_string()
            .contains("not supported by the overlay driver"),
        "{e}"
    );
    // Dual stack: an IPv6 subnet as given (or a ULA /64), next to the IPv4 one.
    r.enable_ipv6 = true;
    r.ipam = vec![IpamRequest {
        subnet: Some("fd00:50::/64".into()),
        ..Default::default()
    }];
    let n = plan(&r, &[]).expect("dual-stack overlay");
    assert_eq!(n.subnets.len(), 2);
    assert_eq!(n.subnets[1].subnet, net("fd00:50::/64"));
    assert_eq!(n.mtu, 1450);
}

#[test]
fn strict_cidrs() {
    let e = plan(&with_subnet("web", "10.1.0.5/24"), &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"invalid subnet "10.1.0.5/24": host bits set, did you mean 10.1.0.0/24?"#
    );
    let e = plan(&with_subnet("web", "10.1.0.0/33"), &[]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"invalid subnet "10.1.0.0/33": "#),
        "{e}"
    );
    for bad in [
        "10.1.0.0",
        "x/24",
        "10.1.0.0/x",
        "10.1.0.0/31",
        "10.1.0.0/32",
        "fd00::/127",
    ] {
        let mut r = with_subnet("web", bad);
        r.enable_ipv6 = true;
        assert_eq!(
            plan(&r, &[]).unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "{bad}"
        );
    }
    assert!(plan(&with_subnet("web", "10.1.0.0/30"), &[]).is_ok());
}

#[test]
fn gateways_and_ranges() {
    let mut r = with_subnet("web", "10.1.0.0/24");
    r.ipam[0].gateway = Some("10.2.0.1".into());
    assert_eq!(
        plan(&r, &[]).unwrap_err().to_string(),
        r#"gateway 10.2.0.1 is outside subnet 10.1.0.0/24 of network "web""#
    );
    for bad in ["10.1.0.0", "10.1.0.255", "nope", "fd00::1"] {
        r.ipam[0].gateway = Some(bad.into());
        assert!(plan(&r, &[]).is_err(), "{bad}");
    }
    r.ipam[0].gateway = Some("10.1.0.254".into());
    assert_eq!(plan(&r, &[]).unwrap().subnets[0].gateway, ip("10.1.0.254"));
    r.ipam[0].ip_range = Some("10.1.1.0/25".into());
    assert_eq!(
        plan(&r, &[]).unwrap_err().to_string(),
        r#"ip range 10.1.1.0/25 is outside subnet 10.1.0.0/24 of network "web""#
    );
    let r = NetworkRequest {
        ipam: vec![IpamRequest {
            gateway: Some("10.1.0.1".into()),
            ..Default::default()
        }],
        ..req("web")
    };
    assert!(plan(&r, &[])
        .unwrap_err()
        .to_string()
        .contains("needs a subnet"));
}

#[test]
fn ipv6() {
    let mut r = with_subnet("web", "fd00:1::/64");
    r.enable_ipv6 = true;
    let n = plan(&r, &[]).unwrap();
    assert_eq!(n.subnets.len(), 2);
    assert!(n.subnets[0].subnet.addr().is_ipv4() && n.subnets[1].subnet.addr().is_ipv6());
    assert_eq!(n.subnets[1].gateway, ip("fd00:1::1"));

    let r = NetworkRequest {
        enable_ipv6: true,
        ..req("web")
    };
    let n = plan(&r, &[]).unwrap();
    assert_eq!(n.subnets[1].subnet, net("fd00:b3e7:0:aaaa::/64"));
    // Deterministic and avoiding used ones.
    let same_start = format!("aaaa{}", "b".repeat(60));
    let r2 = NetworkRequest {
        name: "w2".into(),
        ..r.clone()
    };
    let n2 = plan_network(&r2, same_start, "t".into(), &[n], &[]).unwrap();
    assert_eq!(n2.subnets[1].subnet, net("fd00:b3e7:0:aaab::/64"));
    assert_eq!(n2.subnets[0].subnet, net("172.18.0.0/16"));
}

/// moby 27: an IPv6 pool without EnableIPv6 is kept as given (even with host bits or a
/// gateway outside it), not validated, not allocated; an IPv4 network is made as usual.
#[test]
fn ipv6_pool_without_ipv6_is_kept_unused() {
    let mut r = with_subnet("web", "fd00:1::5/64");
    r.ipam[0].gateway = Some("fd00:9::1".into());
    r.ipam[0]
        .aux_addresses
        .insert("x".into(), "nonsense".into());
    r.ipam.push(IpamRequest {
        subnet: Some("10.9.0.0/24".into()),
        ..Default::default()
    });
    let n = plan(&r, &[]).unwrap();
    assert!(!n.enable_ipv6);
    assert_eq!(n.subnets.len(), 1);
    assert_eq!(n.subnets[0].subnet, net("10.9.0.0/24"));
    assert_eq!(n.unused_ipam.len(), 1);
    assert_eq!(n.unused_ipam[0].subnet, "fd00:1::5/64");
    assert_eq!(n.unused_ipam[0].gateway, "fd00:9::1");
    assert_eq!(n.unused_ipam[0].aux_addresses["x"], "nonsense");
    let w = create_warnings(&n);
    assert!(w.len() == 1 && w[0].contains("fd00:1::5/64"), "{w:?}");
    // The subnet must still be a prefix, as moby's ValidateIPAM wants.
    let r = with_subnet("web", "fd00:1::/999");
    assert_eq!(
        plan(&r, &[]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Nothing kept once IPv6 is on.
    let mut r = with_subnet("web", "fd00:1::/64");
    r.enable_ipv6 = true;
    assert!(plan(&r, &[]).unwrap().unused_ipam.is_empty());
}

#[test]
fn enable_ipv6_from_driver_option() {
    let mut o = BTreeMap::new();
    assert!(!enable_ipv6(None, &o).unwrap());
    o.insert(OPT_ENABLE_IPV6.to_string(), "true".to_string());
    assert!(enable_ipv6(None, &o).unwrap());
    assert!(!enable_ipv6(Some(false), &o).unwrap());
    o.insert(OPT_ENABLE_IPV6.to_string(), "maybe".to_string());
    assert_eq!(
        enable_ipv6(None, &o).unwrap_err().to_string(),
        r#"driver-opt "com.docker.network.enable_ipv6" is not a valid bool"#
    );
}

#[test]
fn ipam_options_are_kept_as_given() {
    assert_eq!(plan(&req("a"), &[]).unwrap().ipam_options, None);
    let mut r = req("a");
    r.ipam_options = Some(BTreeMap::new());
    assert_eq!(plan(&r, &[]).unwrap().ipam_options, Some(BTreeMap::new()));
    let opts: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
    r.ipam_options = Some(opts.clone());
    assert_eq!(plan(&r, &[]).unwrap().ipam_options, Some(opts));
}

#[test]
fn auxiliary_addresses() {
    let aux = |pairs: &[(&str, &str)]| {
        let mut r = with_subnet("web", "10.1.0.0/24");
        r.ipam[0].ip_range = Some("10.1.0.128/25".into());
        for (k, v) in pairs {
            r.ipam[0].aux_addresses.insert(k.to_string(), v.to_string());
        }
        plan(&r, &[])
    };
    // Inside the subnet, in or out of the ip range.
    let n = aux(&[("router", "10.1.0.254"), ("nas", "10.1.0.5")]).unwrap();
    assert_eq!(n.subnets[0].aux_addresses["router"], ip("10.1.0.254"));
    assert_eq!(n.subnets[0].aux_addresses["nas"], ip("10.1.0.5"));
    for (bad, why) in [
        (
            ("a", "10.2.0.5"),
            "parent subnet 10.1.0.0/24 doesn't contain this address",
        ),
        (("a", "fd00::5"), "parent subnet is an IPv4 block"),
        (("a", "10.1.0.300"), "invalid address"),
        (("a", ""), "invalid address"),
        (("a", "10.1.0.1"), "it is the gateway of subnet 10.1.0.0/24"),
        (("a", "10.1.0.0"), "network or broadcast"),
        (("a", "10.1.0.255"), "network or broadcast"),
    ] {
        let e = aux(&[bad]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        assert!(e.to_string().contains(why), "{bad:?}: {e}");
        assert!(
            e.to_string().starts_with("invalid auxiliary address a"),
            "{e}"
        );
    }
    let e = aux(&[("a", "10.1.0.9"), ("b", "10.1.0.9")]).unwrap_err();
    assert!(
        e.to_string()
            .contains("auxiliary address a is the same address"),
        "{e}"
    );
    // IPv6 pools get theirs checked against the IPv6 subnet.
    let mut r = with_subnet("v6", "fd00:5::/64");
    r.enable_ipv6 = true;
    r.ipam[0]
        .aux_addresses
        .insert("gw2".into(), "fd00:5::fe".into());
    let n = plan(&r, &[]).unwrap();
    assert_eq!(n.subnets[1].aux_addresses["gw2"], ip("fd00:5::fe"));
}

#[test]
fn one_subnet_per_family() {
    let mut r = with_subnet("web", "10.1.0.0/24");
    r.ipam.push(IpamRequest {
        subnet: Some("10.2.0.0/24".into()),
        ..Default::default()
    });
    assert_eq!(
        plan(&r, &[]).unwrap_err().to_string(),
        r#"network "web": more than one IPv4 subnet is not supported"#
    );
}

#[test]
fn overlaps() {
    let db = plan(&with_subnet("db", "10.1.0.0/24"), &[]).unwrap();
    let existing = [db];
    for s in ["10.1.0.0/24", "10.1.0.0/16", "10.1.0.128/25"] {
        let e =
            plan_network(&with_subnet("web", s), id('b'), "t".into(), &existing, &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(
            e.to_string(),
            r#"network "web" overlaps 10.1.0.0/24 of network "db""#
        );
    }
    let routes = [net("0.0.0.0/0"), net("10.9.0.0/16")];
    let e = plan_network(
        &with_subnet("web", "10.9.1.0/24"),
        id('b'),
        "t".into(),
        &[],
        &routes,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "subnet 10.9.1.0/24 overlaps 10.9.0.0/16, already routed on the host"
    );
    // The default route does not block anything; host routes steer allocation.
    let routes = [net("0.0.0.0/0"), net("172.17.0.0/16"), net("172.18.3.0/24")];
    let n = plan_network(&req("web"), id('b'), "t".into(), &[], &routes).unwrap();
    assert_eq!(n.subnets[0].subnet, net("172.19.0.0/16"));
}

#[test]
fn options() {
    let with_opt = |k: &str, v: &str| {
        let mut r = req("web");
        r.options.insert(k.into(), v.into());
        plan(&r, &predefined())
    };
    assert!(!with_opt(OPT_ENABLE_ICC, "false").unwrap().icc);
    assert!(!with_opt(OPT_ENABLE_MASQUERADE, "0").unwrap().masquerade);
    assert_eq!(with_opt(OPT_MTU, "9000").unwrap().mtu, 9000);
    let e = with_opt(OPT_MTU, "67").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"invalid value "67" for option com.docker.network.driver.mtu: expected a number from 68 to 65535"#
    );
    let e = with_opt(OPT_ENABLE_ICC, "yes").unwrap_err();
    assert!(e.to_string().contains("expected true or false"), "{e}");
    assert!(with_opt(OPT_BRIDGE_NAME, "this-is-too-long").is_err());
    let e = with_opt(OPT_BRIDGE_NAME, "berth0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        r#"bridge name "berth0" is already used by network "bridge""#
    );
    assert!(with_opt(OPT_HOST_BINDING_IPV4, "127.0.0.1").is_ok());
    assert!(with_opt(OPT_HOST_BINDING_IPV4, "nope").is_err());
    assert!(with_opt(OPT_DEFAULT_BRIDGE, "true").is_err());
    assert!(with_opt(OPT_DEFAULT_BRIDGE, "false").is_ok());
    assert!(with_opt("com.docker.network.something", "whatever").is_ok());
}

#[test]
fn predefined_like_docker() {
    let p = predefined();
    assert_eq!(p.len(), 3);
    let b = &p[0];
    assert_eq!(
        (b.name.as_str(), b.driver, b.bridge.as_str()),
        ("bridge", Driver::Bridge, "berth0")
    );
    assert!(b.predefined && !b.dns);
    assert_eq!(b.subnets[0].gateway, ip("172.17.0.1"));
    assert_eq!(b.options[OPT_DEFAULT_BRIDGE], "true");
    assert_eq!(b.options[OPT_BRIDGE_NAME], "berth0");
    assert_eq!((p[1].name.as_str(), p[1].driver), ("host", Driver::Host));
    assert_eq!((p[2].name.as_str(), p[2].driver), ("none", Driver::Null));
    assert!(bridge_plan(&p[1]).is_none());
}

fn container(name: &str, c: char) -> ContainerSpec {
    ContainerSpec {
        id: id(c),
        name: name.into(),
        hostname: name.into(),
        created: "t".into(),
        cmd: vec![],
        env: vec![],
        mode: NetworkMode::Networks,
        endpoints: vec![],
        dns: vec![],
        dns_search: vec![],
        dns_options: vec![],
        extra_hosts: vec![],
        rootfs: None,
        auto_remove: false,
        security: Default::default(),
        stdio: Default::default(),
        process: Default::default(),
        restart: Default::default(),
        legacy_links: Vec::new(),
    }
}

#[test]
fn endpoints() {
    let mut r = with_subnet("n2", "10.233.0.0/24");
    r.ipam[0].ip_range = Some("10.233.0.128/25".into());
    let n2 = plan(&r, &[]).unwrap();
    let mut api = container("api", 'c');
    let ep = plan_endpoint(
        &n2,
        &api,
        &[],
        &EndpointRequest {
            ipv4: Some("10.233.0.10".into()),
            aliases: vec!["web".into(), "www".into(), "web".into()],
            ..Default::default()
        },
        id('e'),
    )
    .unwrap();
    assert_eq!(ep.addrs, vec![net("10.233.0.10/24")]);
    assert_eq!(ep.mac, "02:42:0a:e9:00:0a");
    assert_eq!(ep.ifname, "eth0");
    assert_eq!(ep.host_ifname, "vbeeeeeeeeeeee");
    assert_eq!(ep.static_ipv4, Some(ip("10.233.0.10")));
    assert_eq!(ep.aliases, vec!["web", "www"]);
    api.endpoints.push(ep);

    // Already connected.
    let e = plan_endpoint(&n2, &api, &[], &EndpointRequest::default(), id('f')).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"container "api" is already connected to network "n2""#
    );
    assert_eq!(e.kind(), ErrorKind::Conflict);

    // The address is taken, and the message names the holder.
    let db = container("db", 'd');
    let all = [api.clone(), db.clone()];
    let e = plan_endpoint(
        &n2,
        &db,
        &all,
        &EndpointRequest {
            ipv4: Some("10.233.0.10".into()),
            ..Default::default()
        },
        id('f'),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"address 10.233.0.10 is already in use on network "n2" (container "api")"#
    );
    let e = plan_endpoint(
        &n2,
        &db,
        &all,
        &EndpointRequest {
            ipv4: Some("10.9.0.5".into()),
            ..Default::default()
        },
        id('f'),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"address 10.9.0.5 is outside subnet 10.233.0.0/24 of network "n2""#
    );
    // Dynamic: first of the range.
    let ep = plan_endpoint(&n2, &db, &all, &EndpointRequest::default(), id('f')).unwrap();
    assert_eq!(ep.addrs, vec![net("10.233.0.128/24")]);
    // IPv6 request on a v4-only network.
    let e = plan_endpoint(
        &n2,
        &db,
        &all,
        &EndpointRequest {
            ipv6: Some("fd00::5".into()),
            ..Default::default()
        },
        id('f'),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // Bad alias.
    let e = plan_endpoint(
        &n2,
        &db,
        &all,
        &EndpointRequest {
            aliases: vec!["bad alias".into()],
            ..Default::default()
        },
        id('f'),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn endpoint_ifnames_and_dual_stack() {
    let mut r = with_subnet("a", "10.1.0.0/24");
    r.enable_ipv6 = true;
    let a = plan(&r, &[]).unwrap();
    let b = plan_network(
        &with_subnet("b", "10.2.0.0/24"),
        id('b'),
        "t".into(),
        &[],
        &[],
    )
    .unwrap();
    let mut c = container("c", 'c');
    let ep = plan_endpoint(&a, &c, &[], &EndpointRequest::default(), id('e')).unwrap();
    assert_eq!(ep.addrs.len(), 2);
    assert_eq!(ep.addrs[1], net("fd00:b3e7:0:aaaa::2/64"));
    c.endpoints.push(ep);
    let ep = plan_endpoint(&b, &c, &[], &EndpointRequest::default(), id('f')).unwrap();
    assert_eq!(ep.ifname, "eth1");
    // Free the lowest name: eth0 is reused.
    c.endpoints.remove(0);
    let ep2 = plan_endpoint(&a, &c, &[], &EndpointRequest::default(), id('g')).unwrap();
    assert_eq!(ep2.ifname, "eth0");
}

#[test]
fn host_and_none_and_shared() {
    let p = predefined();
    let c = container("c", 'c');
    let e = plan_endpoint(&p[1], &c, &[], &EndpointRequest::default(), id('e')).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    assert!(e.to_string().contains("host network"));
    let e = plan_endpoint(&p[2], &c, &[], &EndpointRequest::default(), id('e')).unwrap_err();
    assert!(e.to_string().contains("none network"));
    let mut shared = container("s", 's');
    shared.mode = NetworkMode::Host;
    let e = plan_endpoint(&p[0], &shared, &[], &EndpointRequest::default(), id('e')).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

/// Network `r` planned alone, its id `c` repeated.
fn planned(r: &NetworkRequest, c: char) -> NetworkSpec {
    plan_network(r, id(c), "t".into(), &[], &[]).unwrap()
}

#[test]
fn gateway_choice_and_plans() {
    let a = planned(&with_subnet("a", "10.1.0.0/24"), 'a');
    let b = planned(&with_subnet("b", "10.2.0.0/24"), 'b');
    let mut i = planned(&with_subnet("i", "10.3.0.0/24"), '9');
    i.internal = true;
    let nets = [a.clone(), b.clone(), i.clone()];
    let mut c = container("c", 'c');
    for (n, e, prio) in [(&b, 'e', 0), (&a, 'f', 0), (&i, 'g', 100)] {
        let mut ep = plan_endpoint(n, &c, &[], &EndpointRequest::default(), id(e)).unwrap();
        ep.gw_priority = prio;
        c.endpoints.push(ep);
    }
    // Internal never wins; tie → name ascending.
    assert_eq!(gateway_endpoint(&c, &nets).unwrap().network_id, a.id);
    c.endpoints[0].gw_priority = 1;
    assert_eq!(gateway_endpoint(&c, &nets).unwrap().network_id, b.id);
    assert!(gateway_endpoint(&c, &[i.clone()]).is_none());

    let bp = bridge_plan(&a).unwrap();
    assert_eq!(bp.addrs, vec![net("10.1.0.1/24")]);
    let ep = &c.endpoints[1];
    let plan = endpoint_plan(&a, ep, "/run/berth/netns/c", true);
    assert_eq!(
        plan.routes,
        vec![RoutePlan {
            dst: net("0.0.0.0/0"),
            via: ip("10.1.0.1")
        }]
    );
    assert!(!plan.isolated);
    assert_eq!(plan.bridge, a.bridge);
    // An IPv4-only endpoint with the MAC derived from its fresh address announces nothing
    // (IPv6 is off on it; see `a_veth_announces_only_what_a_neighbour_may_have_wrong`).
    assert_eq!(plan.announce, Announce::default());
    assert!(endpoint_plan(&a, ep, "/x", false).routes.is_empty());
    assert!(endpoint_plan(&i, &c.endpoints[2], "/x", true)
        .routes
        .is_empty());
}

/// The gratuitous ARP of a veth endpoint is left out exactly when no neighbour can hold
/// another MAC for its IPv4 address; the NA of an IPv6 address is always sent.
#[test]
fn a_veth_announces_only_what_a_neighbour_may_have_wrong() {
    let a = planned(&with_subnet("a", "10.1.0.0/24"), 'a');
    let c = container("c", 'c');
    let ep_with =
        |net: &NetworkSpec, r: EndpointRequest| plan_endpoint(net, &c, &[], &r, id('e')).unwrap();
    let plain = ep_with(&a, EndpointRequest::default());
    assert_eq!(plain.mac, "02:42:0a:01:00:02");
    let quiet = Announce::default();
    let arp = Announce {
        arp: true,
        na: false,
    };
    assert_eq!(endpoint_plan(&a, &plain, "/x", true).announce, quiet);
    // The previous holder of the address had a MAC of its own.
    let mut reused = plain.clone();
    reused.reused_mac = true;
    assert_eq!(endpoint_plan(&a, &reused, "/x", true).announce, arp);
    // A MAC of its own (even differing only in case from the derived one is the same MAC).
    let own = ep_with(
        &a,
        EndpointRequest {
            mac: Some("02:00:00:00:00:aa".into()),
            ..Default::default()
        },
    );
    assert_eq!(endpoint_plan(&a, &own, "/x", true).announce, arp);
    let mut upper = plain.clone();
    upper.mac = upper.mac.to_uppercase();
    assert_eq!(endpoint_plan(&a, &upper, "/x", true).announce, quiet);
    // A link-local IPv4 address: never claimed, its previous holders are unknown.
    let ll = ep_with(
        &a,
        EndpointRequest {
            link_local_ips: vec!["169.254.7.7".into()],
            ..Default::default()
        },
    );
    assert_eq!(endpoint_plan(&a, &ll, "/x", true).announce, arp);
    // An overlay network: the previous holder may have been on another host.
    let mut ov = a.clone();
    ov.driver = Driver::Overlay;
    assert_eq!(endpoint_plan(&ov, &plain, "/x", true).announce, arp);
    // Dual stack: the NA of the IPv6 address stays, the ARP goes.
    let mut d = with_subnet("d", "10.4.0.0/24");
    d.enable_ipv6 = true;
    d.ipam.push(IpamRequest {
        subnet: Some("fd00:4::/64".into()),
        ..Default::default()
    });
    let d = planned(&d, 'd');
    let dual = ep_with(&d, EndpointRequest::default());
    assert_eq!(
        endpoint_plan(&d, &dual, "/x", true).announce,
        Announce {
            arp: false,
            na: true
        }
    );
}

#[test]
fn filters() {
    let mut nets = predefined();
    let mut r = req("web-front");
    r.labels.insert("team".into(), "x".into());
    r.labels.insert("tier".into(), "1".into());
    nets.push(plan(&r, &nets).unwrap());
    let used = plan_network(&req("used"), id('u'), "t".into(), &nets, &[]).unwrap();
    let in_use: BTreeSet<Id> = [used.id.clone()].into();
    nets.push(used);
    let f = |pairs: &[(&str, &[&str])]| {
        let m: BTreeMap<String, Vec<String>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        filter_networks(&nets, &m, &in_use)
            .map(|v| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
    };
    assert_eq!(f(&[]).unwrap().len(), 5);
    assert_eq!(
        f(&[("driver", &["bridge"])]).unwrap(),
        ["bridge", "web-front", "used"]
    );
    assert_eq!(
        f(&[("driver", &["bridge"]), ("label", &["team=x"])]).unwrap(),
        ["web-front"]
    );
    assert_eq!(f(&[("label", &["team", "tier=1"])]).unwrap(), ["web-front"]);
    assert!(f(&[("label", &["team", "tier=2"])]).unwrap().is_empty());
    assert_eq!(
        f(&[("name", &["front", "non"])]).unwrap(),
        ["none", "web-front"]
    );
    assert_eq!(
        f(&[("id", &["aaaa", "2222"])]).unwrap(),
        ["host", "web-front"]
    );
    assert_eq!(f(&[("type", &["custom"])]).unwrap(), ["web-front", "used"]);
    assert_eq!(f(&[("type", &["builtin"])]).unwrap().len(), 3);
    assert_eq!(f(&[("scope", &["local"])]).unwrap().len(), 5);
    assert!(f(&[("scope", &["swarm"])]).unwrap().is_empty());
    // moby's filterNetworkByUse: dangling = user networks without endpoints; not dangling =
    // predefined networks and networks in use.
    assert_eq!(f(&[("dangling", &["true"])]).unwrap(), ["web-front"]);
    assert_eq!(f(&[("dangling", &["1"])]).unwrap(), ["web-front"]);
    assert_eq!(
        f(&[("dangling", &["false"])]).unwrap(),
        ["bridge", "host", "none", "used"]
    );
    assert_eq!(
        f(&[("dangling", &["0"]), ("type", &["custom"])]).unwrap(),
        ["used"]
    );
    assert!(f(&[("dangling", &["yes"])])
        .unwrap_err()
        .to_string()
        .starts_with("invalid value for filter 'dangling'"));
    assert_eq!(
        f(&[("dangling", &["true", "false"])])
            .unwrap_err()
            .to_string(),
        r#"got more than one value for filter key "dangling""#
    );
    assert_eq!(
        f(&[("xyz", &["1"])]).unwrap_err().to_string(),
        "invalid filter 'xyz'"
    );
    assert_eq!(
        f(&[("type", &["nope"])]).unwrap_err().to_string(),
        "invalid filter: 'type'='nope'"
    );

    let p = |pairs: &[(&str, &[&str])]| {
        let m: BTreeMap<String, Vec<String>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        prune_candidates(&nets, &m, 0).map(|v| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
    };
    assert_eq!(p(&[]).unwrap(), ["web-front", "used"]);
    assert_eq!(p(&[("label", &["team=x"])]).unwrap(), ["web-front"]);
    assert_eq!(p(&[("label!", &["team"])]).unwrap(), ["used"]);
    assert!(p(&[("driver", &["bridge"])]).is_err());
    assert_eq!(
        p(&[("until", &["1h", "2h"])]).unwrap_err().to_string(),
        "more than one until filter specified"
    );
    assert!(p(&[("until", &["soon"])]).is_err());
}

#[test]
fn prune_until_and_label_not() {
    let mk = |name: &str, created: &str, labels: &[(&str, &str)]| {
        let mut r = req(name);
        for (k, v) in labels {
            r.labels.insert(k.to_string(), v.to_string());
        }
        plan_network(&r, id('a'), created.into(), &[], &[]).unwrap()
    };
    let nets = vec![
        mk(
            "old",
            "2026-01-01T00:00:00.5Z",
            &[("team", "x"), ("keep", "1")],
        ),
        mk("new", "2026-01-02T00:00:00Z", &[("team", "x")]),
        mk("bare", "2026-01-01T12:00:00Z", &[]),
        mk("unreadable", "yesterday", &[]),
    ];
    let now = crate::until::parse_rfc3339("2026-01-02T00:00:10Z").unwrap();
    let p = |pairs: &[(&str, &[&str])]| {
        let m: BTreeMap<String, Vec<String>> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        prune_candidates(&nets, &m, now)
            .unwrap()
            .iter()
            .map(|n| n.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(p(&[("until", &["1h"])]), ["old", "bare"]);
    assert_eq!(p(&[("until", &["24h"])]), ["old"]);
    assert_eq!(p(&[("until", &["2026-01-01T06:00:00Z"])]), ["old"]);
    assert_eq!(p(&[("until", &["1767225600"])]), Vec::<String>::new());
    assert_eq!(p(&[("until", &["1767225601"])]), ["old"]);
    // label!: a network is kept only when it matches every label! filter (MatchKVList).
    assert_eq!(p(&[("label!", &["team"])]), ["bare", "unreadable"]);
    assert_eq!(
        p(&[("label!", &["team", "keep"])]),
        ["new", "bare", "unreadable"]
    );
    assert_eq!(p(&[("label!", &["team=y"])]).len(), 4);
    assert_eq!(
        p(&[
            ("label", &["team"]),
            ("label!", &["keep=1"]),
            ("until", &["5s"])
        ]),
        ["new"]
    );
}

#[test]
fn aliases() {
    assert!(validate_alias("web").is_ok());
    assert!(validate_alias("my_app.svc.local").is_ok());
    assert!(validate_alias("a.").is_ok());
    for bad in [
        "",
        "-a",
        "a-",
        "a..b",
        "a b",
        &"a".repeat(64),
        &["a"; 130].join("."),
    ] {
        assert!(validate_alias(bad).is_err(), "{bad:?}");
    }
}

fn macvlan(name: &str, subnet: &str, parent: Option<&str>) -> NetworkRequest {
    let mut r = with_subnet(name, subnet);
    r.driver = Some("macvlan".into());
    if let Some(p) = parent {
        r.options.insert(OPT_PARENT.into(), p.into());
    }
    r
}

#[test]
fn macvlan_networks() {
    let mut r = macvlan("lan", "192.168.1.0/24", Some("eth0"));
    r.ipam[0].gateway = Some("192.168.1.1".into());
    r.ipam[0].ip_range = Some("192.168.1.192/27".into());
    // The LAN is routed on the host through the parent: no conflict with host routes.
    let n = plan_network(
        &r,
        id('a'),
        "t".into(),
        &predefined(),
        &[net("192.168.1.0/24")],
    )
    .unwrap();
    assert_eq!(n.driver, Driver::Macvlan);
    assert_eq!(n.bridge, "");
    assert!(n.dns && !n.masquerade);
    assert_eq!(parent_of(&n), Some("eth0"));
    assert_eq!(sublink_kind(&n), Some(SublinkKind::Macvlan(4)));
    assert_eq!(
        crate::driver::driver(n.driver).parent(&n).as_deref(),
        Some("eth0")
    );
    assert_eq!(crate::driver::driver(n.driver).network_link(&n), None);

    // Modes.
    for (m, v) in [("bridge", 4), ("private", 1), ("vepa", 2), ("passthru", 8)] {
        let mut r = macvlan("m", "10.9.0.0/24", Some("eth0"));
        r.options.insert(OPT_MACVLAN_MODE.into(), m.into());
        let n = plan(&r, &[]).unwrap();
        assert_eq!(sublink_kind(&n), Some(SublinkKind::Macvlan(v)));
    }
    let mut r = macvlan("m", "10.9.0.0/24", Some("eth0"));
    r.options.insert(OPT_MACVLAN_MODE.into(), "source".into());
    let e = plan(&r, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("macvlan_mode"), "{e}");

    // A parent is required, except with --internal: as Docker, an isolated segment on a
    // dummy link of its own (dm-/di- + 12 hex of the id), which berth owns.
    let e = plan(&macvlan("m", "10.9.0.0/24", None), &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("-o parent=IFACE"), "{e}");
    let mut r = macvlan("m", "10.9.0.0/24", None);
    r.internal = true;
    let n = plan_network(&r, id('c'), "t".into(), &predefined(), &[]).unwrap();
    let seg = n.owned_parent.clone().expect("a segment of its own");
    assert_eq!(seg.name, "dm-cccccccccccc");
    assert_eq!(seg.kind, ParentKind::Dummy);
    assert_eq!(seg.alias, "berth:parent:dm-cccccccccccc");
    assert_eq!(parent_of(&n), Some("dm-cccccccccccc"));
    let ep = plan_endpoint(
        &n,
        &container("c", 'c'),
        &[],
        &EndpointRequest::default(),
        id('e'),
    )
    .unwrap();
    let sp = sublink_plan(&n, &ep, "/proc/1/ns/net", true).unwrap();
    assert_eq!(sp.parent, "dm-cccccccccccc");
    assert!(sp.routes.is_empty(), "internal: no default route");
    assert!(
        notes(&n).iter().any(|l| l.contains("isolated segment")),
        "{:?}",
        notes(&n)
    );
    // An internal network with a parent uses that parent; a plain one owns none.
    let mut r = macvlan("m", "10.9.0.0/24", Some("eth0"));
    r.internal = true;
    assert_eq!(plan(&r, &[]).unwrap().owned_parent, None);
    assert_eq!(
        plan(&macvlan("m", "10.9.0.0/24", Some("eth0")), &[])
            .unwrap()
            .owned_parent,
        None
    );
    // An 802.1Q parent berth creates (the daemon decides it does not exist yet).
    let v = vlan_plan("eth0.10").unwrap();
    let p = vlan_parent(&v);
    assert_eq!(p.name, "eth0.10");
    assert_eq!(
        p.kind,
        ParentKind::Vlan {
            base: "eth0".into(),
            vid: 10
        }
    );
    assert_eq!(p.alias, parent_alias("eth0.10"));
    // It goes with the last network on it.
    let mut a = plan(&macvlan("a", "10.9.0.0/24", Some("eth0.10")), &[]).unwrap();
    a.owned_parent = Some(p.clone());
    let mut b = a.clone();
    b.id = id('b');
    assert_eq!(released_parent(&a, &[a.clone(), b.clone()]), None);
    assert_eq!(released_parent(&a, &[a.clone()]), Some("eth0.10"));
    b.owned_parent = None;
    assert_eq!(released_parent(&a, &[b]), Some("eth0.10"));

    // The host shim needs an ip range (the route it gets), and macvlan.
    let mut r = macvlan("m", "10.9.0.0/24", Some("eth0"));
    r.options.insert(OPT_HOST_SHIM.into(), "true".into());
    let e = plan(&r, &[]).unwrap_err();
    assert!(e.to_string().contains("needs an IPv4 --ip-range"), "{e}");
    r.ipam[0].ip_range = Some("10.9.0.192/27".into());
    let mut n = plan(&r, &[]).unwrap();
    assert!(host_shim(&n));
    assert_eq!(
        shim_plan(&n),
        None,
        "no plan before the daemon found the host's address"
    );
    n.shim_src = Some(ip("10.9.0.2"));
    let s = shim_plan(&n).unwrap();
    assert_eq!(s.name, "bmaaaaaaaaaaaa");
    assert_eq!(s.parent, "eth0");
    assert_eq!(s.alias, "berth:shim:aaaaaaaaaaaa");
    assert_eq!(
        s.routes,
        vec![ShimRoute {
            dst: net("10.9.0.192/27"),
            src: ip("10.9.0.2")
        }]
    );
    assert_eq!(
        crate::driver::driver(n.driver).network_link(&n).as_deref(),
        Some("bmaaaaaaaaaaaa")
    );
    r.driver = Some("ipvlan".into());
    assert!(plan(&r, &[])
        .unwrap_err()
        .to_string()
        .contains("macvlan networks only"));
}

#[test]
fn macvlan_overlaps() {
    let lan = plan(&macvlan("lan", "192.168.1.0/24", Some("eth0")), &[]).unwrap();
    // Same parent, overlapping subnet: 409.
    let e = plan(
        &macvlan("lan2", "192.168.1.128/25", Some("eth0")),
        std::slice::from_ref(&lan),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("192.168.1.0/24"), "{e}");
    // Another parent (another LAN): fine.
    assert!(plan(
        &macvlan("lan2", "192.168.1.0/24", Some("eth1")),
        std::slice::from_ref(&lan)
    )
    .is_ok());
    // A bridge network overlapping it: 409 (the host would route the LAN into the bridge).
    let e = plan(
        &with_subnet("br", "192.168.1.0/25"),
        std::slice::from_ref(&lan),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // A macvlan network overlapping a bridge network: 409.
    let br = plan(&with_subnet("br", "10.50.0.0/24"), &[]).unwrap();
    let e = plan(&macvlan("lan3", "10.50.0.0/16", Some("eth2")), &[br]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn ipvlan_networks() {
    let mut r = macvlan("routed", "10.60.0.0/24", Some("eth0"));
    r.driver = Some("ipvlan".into());
    let n = plan(&r, &[]).unwrap();
    assert_eq!(n.driver, Driver::Ipvlan);
    assert_eq!(sublink_kind(&n), Some(SublinkKind::Ipvlan(0, 0)));
    for (m, mv) in [("l2", 0), ("l3", 1), ("l3s", 2)] {
        for (f, fv) in [("bridge", 0), ("private", 1), ("vepa", 2)] {
            let mut r = r.clone();
            r.options.insert(OPT_IPVLAN_MODE.into(), m.into());
            r.options.insert(OPT_IPVLAN_FLAG.into(), f.into());
            let n = plan(&r, &[]).unwrap();
            assert_eq!(sublink_kind(&n), Some(SublinkKind::Ipvlan(mv, fv)));
        }
    }
    let mut bad = r.clone();
    bad.options.insert(OPT_IPVLAN_MODE.into(), "l4".into());
    assert!(plan(&bad, &[])
        .unwrap_err()
        .to_string()
        .contains("ipvlan_mode"));
    let mut bad = r;
    bad.options.insert(OPT_IPVLAN_FLAG.into(), "loud".into());
    assert!(plan(&bad, &[])
        .unwrap_err()
        .to_string()
        .contains("ipvlan_flag"));
}

#[test]
fn vlan_parents() {
    assert_eq!(
        vlan_plan("eth0.10"),
        Some(VlanPlan {
            name: "eth0.10".into(),
            base: "eth0".into(),
            vid: 10,
        })
    );
    assert_eq!(vlan_plan("lan0.4094").map(|v| v.vid), Some(4094));
    assert_eq!(
        vlan_plan("bond0.1.20").map(|v| (v.base, v.vid)),
        Some(("bond0.1".to_string(), 20))
    );
    for no in [
        "eth0",
        "eth0.",
        ".10",
        "eth0.0",
        "eth0.4095",
        "eth0.1x",
        "eth0.-1",
    ] {
        assert_eq!(vlan_plan(no), None, "{no}");
    }
    // A VLAN parent is a valid parent for the plan (the daemon checks that it exists).
    assert!(plan(&macvlan("v", "10.70.0.0/24", Some("eth0.10")), &[]).is_ok());
}

#[test]
fn macvlan_endpoints() {
    let mut r = macvlan("lan", "192.168.1.0/24", Some("lan0"));
    r.ipam[0].gateway = Some("192.168.1.1".into());
    r.options.insert(OPT_MACVLAN_MODE.into(), "private".into());
    let n = plan(&r, &[]).unwrap();
    let c = container("c", 'c');
    let req = EndpointRequest {
        ipv4: Some("192.168.1.200".into()),
        ..Default::default()
    };
    let ep = plan_endpoint(&n, &c, &[], &req, id('e')).unwrap();
    assert_eq!(ep.mac, "02:42:c0:a8:01:c8");
    let p = sublink_plan(&n, &ep, "/proc/9/ns/net", true).unwrap();
    assert_eq!(p.parent, "lan0");
    assert_eq!(p.kind, SublinkKind::Macvlan(1));
    assert_eq!(p.ifname, "eth0");
    assert_eq!(p.mac.as_deref(), Some("02:42:c0:a8:01:c8"));
    assert_eq!(p.addrs, vec![net("192.168.1.200/24")]);
    assert_eq!(
        p.routes,
        vec![RoutePlan {
            dst: net("0.0.0.0/0"),
            via: ip("192.168.1.1")
        }]
    );
    assert!(p.disable_ipv6);
    assert!(sublink_plan(&n, &ep, "/x", false)
        .unwrap()
        .routes
        .is_empty());
    // The gateway is the LAN's router: never given to a container.
    let req = EndpointRequest {
        ipv4: Some("192.168.1.1".into()),
        ..Default::default()
    };
    assert!(plan_endpoint(&n, &c, &[], &req, id('e')).is_err());
}

#[test]
fn inspect_notes() {
    assert!(notes(&plan(&req("br"), &[]).unwrap()).is_empty());
    let n = plan(&macvlan("lan", "192.168.1.0/24", Some("eth0")), &[]).unwrap();
    let t = notes(&n).join("\n");
    assert!(
        t.contains("host_shim=true") && t.contains("127.0.0.11:53"),
        "{t}"
    );
    let mut r = macvlan("routed", "10.60.0.0/24", Some("eth0"));
    r.driver = Some("ipvlan".into());
    r.options.insert(OPT_IPVLAN_MODE.into(), "l3".into());
    let t = notes(&plan(&r, &[]).unwrap()).join("\n");
    assert!(
        t.contains("ipvlan l3") && t.contains("`10.60.0.0/24 via <this host's address on eth0>`"),
        "{t}"
    );
    assert!(!t.contains("host_shim"), "{t}");
    r.options.insert(OPT_IPVLAN_MODE.into(), "l2".into());
    assert!(!notes(&plan(&r, &[]).unwrap())
        .join("\n")
        .contains("ipvlan l"));
}

#[test]
fn requested_macs() {
    assert_eq!(
        parse_requested_mac("02:42:AC:11:00:99").expect("valid"),
        "02:42:ac:11:00:99"
    );
    for (bad, says) in [
        ("01:00:5e:00:00:01", "multicast"),
        ("00:00:00:00:00:00", "all zeros"),
        ("02:42:ac:11:00", "six hex octets"),
        ("02:42:ac:11:00:zz", "six hex octets"),
        ("02:42:ac:11:00:01\n", "six hex octets"),
    ] {
        let e = parse_requested_mac(bad).expect_err(bad);
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

/// Proves: an endpoint's `DriverOpts` are kept on the planned endpoint as given, and an endpoint
/// stored before they existed still reads (no options) and writes no empty member.
#[test]
fn endpoint_driver_opts_are_kept() {
    let n = plan(&req("br"), &[]).unwrap();
    let c = container("c", 'c');
    let mut req = EndpointRequest::default();
    req.driver_opts
        .insert("com.docker-py.setting".into(), "on".into());
    let ep = plan_endpoint(&n, &c, &[], &req, id('e')).unwrap();
    assert_eq!(ep.driver_opts, req.driver_opts);
    let mut old = serde_json::to_value(&ep).unwrap();
    old.as_object_mut().unwrap().remove("driver_opts");
    let back: EndpointSpec = serde_json::from_value(old).unwrap();
    assert!(back.driver_opts.is_empty());
    let json = serde_json::to_value(&back).unwrap();
    assert!(json.get("driver_opts").is_none(), "{json}");
}

#[test]
fn overlay_mtu_follows_the_underlay() {
    let u = |mtu, ipv6| Underlay { mtu, ipv6 };
    let ov = |explicit: Option<&str>, ipv6_net: bool, underlay| {
        decide_mtu("app", explicit, Driver::Overlay, false, ipv6_net, underlay)
    };
    // Underlay − 50 (VXLAN over IPv4), − 70 over IPv6; WireGuard's 60 more when encrypted.
    assert_eq!(ov(None, false, u(1500, false)), Ok(1450));
    assert_eq!(ov(None, false, u(1400, false)), Ok(1350));
    assert_eq!(ov(None, false, u(9000, true)), Ok(8930));
    assert_eq!(
        decide_mtu("s", None, Driver::Overlay, true, false, u(1400, false)),
        Ok(1270)
    );
    // The option wins when it fits, and is refused naming both figures when it does not.
    assert_eq!(ov(Some("1300"), false, u(1400, false)), Ok(1300));
    assert_eq!(ov(Some("1350"), false, u(1400, false)), Ok(1350));
    let e = ov(Some("1400"), false, u(1400, false)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        e.to_string(),
        "network \"app\": option com.docker.network.driver.mtu=1400 is larger than the overlay \
         can carry: at most 1350 (the underlay's MTU 1400 − 50 bytes of VXLAN over IPv4); give \
         1350 or less, or leave the option out"
    );
    let e = ov(Some("1440"), false, u(1500, true)).unwrap_err();
    assert!(
        e.to_string()
            .contains("at most 1430 (the underlay's MTU 1500 − 70 bytes of VXLAN over IPv6)"),
        "{e}"
    );
    // Protocol minimums: 68 for IPv4, 1280 once the network has IPv6 (also on bridges).
    assert_eq!(ov(Some("68"), false, u(1500, false)), Ok(68));
    let e = ov(Some("1279"), true, u(1500, false)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "network \"app\": MTU 1279 is below 1280, the minimum for a network with IPv6"
    );
    let e = decide_mtu(
        "b",
        Some("1000"),
        Driver::Bridge,
        false,
        true,
        u(1500, false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("below 1280"), "{e}");
    assert_eq!(
        decide_mtu(
            "b",
            Some("9000"),
            Driver::Bridge,
            false,
            true,
            u(1400, false)
        ),
        Ok(9000),
        "the underlay limits overlay networks only"
    );
    // An underlay too small for IPv6 over the overlay: refused with the arithmetic.
    let e = ov(None, true, u(1300, false)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "network \"app\": MTU 1250 (the underlay's MTU 1300 − 50 bytes of VXLAN over IPv4) is \
         below 1280, the minimum for a network with IPv6"
    );
}

#[test]
fn underlay_of_the_hosts_is_the_smallest() {
    let a = |s: &str| -> IpAddr { s.parse().unwrap() };
    assert_eq!(Underlay::of_hosts([]), Underlay::default());
    let u = Underlay::of_hosts([(a("10.0.0.1"), Some(9000)), (a("10.0.0.2"), Some(1400))]);
    assert_eq!(
        u,
        Underlay {
            mtu: 1400,
            ipv6: false
        }
    );
    // A record without an MTU (an older berth) counts as 1500; one IPv6 host makes it IPv6.
    let u = Underlay::of_hosts([(a("10.0.0.1"), Some(9000)), (a("fd00::2"), None)]);
    assert_eq!(
        u,
        Underlay {
            mtu: 1500,
            ipv6: true
        }
    );
    assert_eq!(u.vxlan_overhead(), 70);
}

/// Links as moby's `ParseLink` reads them, and the names berth refuses on top (they reach DNS
/// answers and /etc/hosts).
#[test]
fn links_parse_as_moby() {
    let ok = |s: &str| parse_link(s).unwrap();
    assert_eq!(ok("db"), ("db".into(), "db".into()));
    assert_eq!(ok("db:data"), ("db".into(), "data".into()));
    assert_eq!(ok("/db:/app/data"), ("db".into(), "data".into()));
    for (bad, want) in [
        ("", "empty string specified for links"),
        ("a:b:c", "bad format for links: a:b:c"),
        ("db:da\nta", "invalid alias"),
        ("d b:data", "invalid linked container name"),
        (":data", "linked container name must not be empty"),
    ] {
        let e = parse_link(bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad:?}: {e}");
    }
}

/// Link-local addresses: moby's checks (an address, not unspecified), and berth's own: in
/// 169.254.0.0/16 or fe80::/10 (anything else would bypass anti-spoofing); mapped IPv4 is
/// IPv4; duplicates dropped.
#[test]
fn link_local_ips_are_link_local() {
    let got = parse_link_local_ips(&[
        "169.254.8.8".into(),
        "fe80::8".into(),
        "::ffff:169.254.8.8".into(),
    ])
    .unwrap();
    assert_eq!(got, vec![ip("169.254.8.8"), ip("fe80::8")]);
    for bad in [
        "10.0.0.1",
        "0.0.0.0",
        "::",
        "2001:db8::1",
        "nope",
        "169.254.8.8/16",
    ] {
        let e = parse_link_local_ips(&[bad.into()]).unwrap_err().to_string();
        assert!(e.contains("invalid link-local IP address"), "{bad}: {e}");
    }
}

#[test]
fn announcements_follow_the_addresses_and_the_kind() {
    let v4 = [net("10.1.0.2/24")];
    let dual = [net("10.1.0.2/24"), net("fd00:1::2/64")];
    let v6 = [net("fd00:1::2/64")];
    let ll6 = [net("10.1.0.2/24"), net("fe80::2/64")];
    let both = Announce {
        arp: true,
        na: true,
    };
    let arp = Announce {
        arp: true,
        na: false,
    };
    let na = Announce {
        arp: false,
        na: true,
    };
    // A veth (bridge and overlay networks): ARP for IPv4, NA for IPv6 when IPv6 is on.
    assert_eq!(announce(AnnounceKind::Veth, &v4, true), arp);
    assert_eq!(announce(AnnounceKind::Veth, &dual, false), both);
    assert_eq!(announce(AnnounceKind::Veth, &dual, true), arp);
    assert_eq!(announce(AnnounceKind::Veth, &v6, false), na);
    // A link-local address alone (--link-local-ip) is announced by DAD, not by us.
    assert_eq!(announce(AnnounceKind::Veth, &ll6, false), arp);
    // No address, nothing to announce.
    assert_eq!(
        announce(AnnounceKind::Veth, &[], false),
        Announce::default()
    );
    // macvlan (every mode) and ipvlan L2 talk to the LAN's neighbours; ipvlan L3/L3S has no ARP.
    for mode in [1, 2, 4, 8] {
        let k = AnnounceKind::Sublink(SublinkKind::Macvlan(mode));
        assert_eq!(announce(k, &dual, false), both, "macvlan mode {mode}");
    }
    let l2 = AnnounceKind::Sublink(SublinkKind::Ipvlan(0, 0));
    assert_eq!(announce(l2, &dual, false), both);
    for mode in [1, 2] {
        let k = AnnounceKind::Sublink(SublinkKind::Ipvlan(mode, 0));
        assert_eq!(
            announce(k, &dual, false),
            Announce::default(),
            "ipvlan mode {mode}"
        );
    }
}

/// Proves: an overlay network's MTU on a host follows the cluster's current underlay (a host
/// joining with a smaller one shrinks it, an underlay raised again grows it back), an option
/// caps it, the create-time MTU holds while no node record is known, and bridge networks
/// ignore the underlay.
#[test]
fn overlay_mtu_now_follows_the_current_underlay() {
    let u = |mtu, ipv6| Some(Underlay { mtu, ipv6 });
    let mut n = plan(&req("ov"), &[]).unwrap();
    n.driver = Driver::Overlay;
    n.mtu = 1450;
    assert_eq!(overlay_mtu_now(&n, None), 1450, "no node record yet");
    assert_eq!(overlay_mtu_now(&n, u(1400, false)), 1350);
    assert_eq!(overlay_mtu_now(&n, u(1500, false)), 1450);
    assert_eq!(overlay_mtu_now(&n, u(9000, false)), 8950);
    assert_eq!(overlay_mtu_now(&n, u(1500, true)), 1430);
    n.options.insert(OPT_MTU.into(), "1400".into());
    assert_eq!(
        overlay_mtu_now(&n, u(9000, false)),
        1400,
        "the option caps it"
    );
    assert_eq!(
        overlay_mtu_now(&n, u(1400, false)),
        1350,
        "the underlay caps the option"
    );
    n.enable_ipv6 = true;
    assert_eq!(overlay_mtu_now(&n, u(1300, false)), MIN_MTU_IPV6);
    let mut b = plan(&req("br"), &[]).unwrap();
    b.mtu = 1500;
    assert_eq!(overlay_mtu_now(&b, u(1400, false)), 1500);
}
