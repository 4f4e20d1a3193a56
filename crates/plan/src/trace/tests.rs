use super::*;

const T: &str = "berth-trace-abc";

fn v4(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// An IPv4 header and a TCP header, as the trace carries them.
fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> (Vec<u8>, Vec<u8>) {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (v4(src), v4(dst)) else {
        panic!("IPv4 only")
    };
    let mut n = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    n.extend_from_slice(&s.octets());
    n.extend_from_slice(&d.octets());
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 9]);
    t.push(flags);
    t.extend_from_slice(&[0; 6]);
    (n, t)
}

fn ev(id: u32, table: &str, chain: &str, handle: Option<u64>, verdict: i32) -> Event {
    Event {
        id,
        family: "inet".into(),
        table: table.into(),
        chain: chain.into(),
        handle,
        kind: Some(EventKind::Rule),
        verdict: Some(verdict),
        ..Event::default()
    }
}

fn with(mut e: Event, h: &(Vec<u8>, Vec<u8>), iif: u32, oif: u32) -> Event {
    e.network = h.0.clone();
    e.transport = h.1.clone();
    e.iif = (iif != 0).then_some(iif);
    e.oif = (oif != 0).then_some(oif);
    e
}

const RULESET: &str = r#"table inet berth { # handle 7
	set bridges { # handle 1
		type ifname
		comment "every berth bridge"
		elements = { "br-web" comment "network web",
			     "br-db" comment "network db" }
	}
	chain user { # handle 10
		meta l4proto tcp ct original proto-dst 8080 drop # handle 40
	}
	chain forward { # handle 11
		type filter hook forward priority filter; policy accept;
		jump user comment "administrator's rules first" # handle 20
		oifname @internal drop comment "internal networks: nothing routed in" # handle 24
		oifname @bridges ct status dnat accept comment "published ports, also from other networks through a host address" # handle 25
		iifname @bridges oifname @bridges drop comment "isolation: networks do not reach each other" # handle 26
		iifname @bridges accept comment "containers may connect out" # handle 30
	}
	chain prerouting { # handle 12
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @publish4_any comment "ports published on every IPv4 host address" # handle 38
	}
}
table inet mine { # handle 9
	chain input { # handle 1
		type filter hook input priority filter; policy drop;
	}
}
"#;

fn world() -> World {
    World {
        links: [(2, "uplink"), (5, "br-web"), (6, "br-db"), (7, "br-priv")]
            .into_iter()
            .map(|(i, n)| (i, n.to_string()))
            .collect(),
        networks: vec![
            NetInfo {
                name: "web".into(),
                bridge: "br-web".into(),
                internal: false,
            },
            NetInfo {
                name: "db".into(),
                bridge: "br-db".into(),
                internal: false,
            },
            NetInfo {
                name: "priv".into(),
                bridge: "br-priv".into(),
                internal: true,
            },
        ],
        endpoints: vec![
            EndpointInfo {
                container: "api".into(),
                network: "web".into(),
                host_ifname: "vapi".into(),
                ifname: "eth0".into(),
                addrs: vec![v4("10.1.0.2")],
            },
            EndpointInfo {
                container: "store".into(),
                network: "db".into(),
                host_ifname: "vstore".into(),
                ifname: "eth0".into(),
                addrs: vec![v4("10.2.0.2")],
            },
        ],
        vantage: "netns /run/netns/out".into(),
        overlays: Vec::new(),
    }
}

fn filter(dst: &str, dport: u16) -> Filter {
    Filter {
        proto: Proto::Tcp,
        dst: v4(dst),
        dport,
        src: None,
        sport: Some(40000),
    }
}

/// A published-port connection's SYN and SYN-ACK as a 6.x kernel reports them: the SYN marked
/// in `mark_in`, DNATed in `prerouting`, accepted in `forward`; the SYN-ACK marked in
/// `reply_in`, its `forward` events under another id (its hash was computed after the mark).
fn published_events() -> Vec<Event> {
    let syn = tcp("192.0.2.9", 40000, "192.0.2.1", 8080, 0x02);
    let syn_nat = tcp("192.0.2.9", 40000, "10.1.0.2", 80, 0x02);
    let synack = tcp("10.1.0.2", 80, "192.0.2.9", 40000, 0x12);
    vec![
        with(ev(1, T, "mark_in", Some(2), -1), &syn, 2, 0),
        with(ev(1, "berth", "prerouting", Some(38), 1), &syn, 2, 0),
        with(ev(1, "berth", "forward", Some(20), -3), &syn_nat, 2, 5),
        ev(1, "berth", "user", None, -1),
        with(ev(1, "berth", "forward", Some(25), 1), &syn_nat, 2, 5),
        with(ev(9, T, "reply_in", Some(6), -1), &synack, 5, 0),
        with(ev(3, "berth", "forward", Some(20), -3), &synack, 5, 2),
        with(ev(3, "berth", "forward", Some(30), 1), &synack, 5, 2),
        // Another trace's packet crossing this trace's chains (no rule of ours matched): not ours.
        with(
            ev(11, T, "mark_in", None, -1),
            &tcp("127.0.0.1", 2, "127.0.0.1", 8080, 0x02),
            1,
            0,
        ),
        // Another trace's packet: not ours.
        with(
            ev(4, "berth-trace-other", "mark_in", Some(2), -1),
            &tcp("192.0.2.50", 1, "192.0.2.1", 53, 0x02),
            2,
            0,
        ),
    ]
}

#[test]
fn names_and_scripts() {
    assert_eq!(table_name("abc"), "berth-trace-abc");
    assert!(is_trace_table("berth-trace-0123abc"));
    for n in [
        "berth-trace-",
        "berth-tracer",
        "berth",
        "berth-trace-a b",
        "x-berth-trace-1",
    ] {
        assert!(!is_trace_table(n), "{n}");
    }
    let mut f = filter("192.0.2.1", 8080);
    f.src = Some(v4("192.0.2.9"));
    let s = table_script("abc", &f, 500);
    assert!(s.starts_with("add table inet berth-trace-abc { comment \"berth trace"));
    assert!(s.contains(
        "add chain inet berth-trace-abc mark_in { type filter hook prerouting priority -310; policy accept; }"
    ));
    assert!(s.contains("hook output priority -310"));
    assert!(s.contains(
        "add chain inet berth-trace-abc reply_in { type filter hook prerouting priority -150;"
    ));
    assert!(s.contains(
        "mark_in ip daddr 192.0.2.1 ip saddr 192.0.2.9 meta l4proto tcp th dport 8080 th sport 40000 limit rate 100/minute burst 100 packets meta nftrace set 1"
    ), "{s}");
    assert!(s.contains(
        "reply_in ct direction reply meta l4proto tcp ct original ip daddr 192.0.2.1 ct original ip saddr 192.0.2.9 ct original proto-dst 8080 ct original proto-src 40000 limit"
    ), "{s}");
    assert_eq!(s.matches("meta nftrace set 1").count(), 4);
    assert_eq!(
        delete_script("berth-trace-abc"),
        "delete table inet berth-trace-abc\n"
    );
    // IPv6, and a source of the other family is not used.
    let mut f6 = filter("192.0.2.1", 53);
    f6.dst = "fd00::1".parse().expect("v6");
    f6.src = Some(v4("192.0.2.9"));
    f6.proto = Proto::Udp;
    let s = table_script("x", &f6, 0);
    assert!(
        s.contains("ip6 daddr fd00::1 meta l4proto udp th dport 53"),
        "{s}"
    );
    assert!(!s.contains("saddr"), "{s}");
    assert!(s.contains("rate 1/minute burst 1 packets"));
    assert_eq!(f6.text(), "udp *:40000 → [fd00::1]:53");
}

#[test]
fn decodes_headers() {
    let (n, t) = tcp("192.0.2.9", 40000, "10.1.0.2", 80, 0x12);
    let h = decode(&n, &t).expect("v4");
    assert_eq!(h.text(), "tcp 192.0.2.9:40000 → 10.1.0.2:80 [SYN,ACK]");
    // The transport header inside the network copy is used when none is given apart.
    let both = [n.clone(), t.clone()].concat();
    assert_eq!(decode(&both, &[]), Some(h));
    // IPv6 UDP.
    let mut n6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    n6.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().expect("v6").octets());
    n6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().expect("v6").octets());
    let h6 = decode(&n6, &[0x9c, 0x40, 0, 53, 0, 8, 0, 0]).expect("v6");
    assert_eq!(h6.text(), "udp [fd00::2]:40000 → [fd00::1]:53");
    assert_eq!(decode(&[], &[]), None);
    assert_eq!(decode(&[0x45, 0, 0], &[]), None);
    assert_eq!(decode(&[0x15; 40], &[]), None);
}

#[test]
fn parses_a_ruleset_with_handles() {
    let r = parse_ruleset(RULESET);
    let k = |t: &str, c: &str, h: u64| ("inet".to_string(), t.to_string(), c.to_string(), h);
    let iso = r.rules.get(&k("berth", "forward", 26)).expect("rule 26");
    assert_eq!(iso.text, "iifname @bridges oifname @bridges drop");
    assert_eq!(
        iso.comment.as_deref(),
        Some("isolation: networks do not reach each other")
    );
    let user = r.rules.get(&k("berth", "user", 40)).expect("user rule");
    assert_eq!(
        user.text,
        "meta l4proto tcp ct original proto-dst 8080 drop"
    );
    assert_eq!(user.comment, None);
    assert_eq!(r.rules.len(), 7, "{:?}", r.rules.keys());
    assert_eq!(
        r.hook("inet", "berth", "forward").as_deref(),
        Some("forward")
    );
    assert_eq!(
        r.hook("inet", "berth", "prerouting").as_deref(),
        Some("prerouting")
    );
    assert_eq!(r.hook("inet", "berth", "user"), None);
    assert_eq!(r.hook("inet", "mine", "input").as_deref(), Some("input"));
    assert!(parse_ruleset("garbage { } }}} # handle x").rules.is_empty());
}

#[test]
fn a_published_port_journey_names_every_hop_in_order() {
    let rules = parse_ruleset(RULESET);
    let j = journey(
        &published_events(),
        T,
        &filter("192.0.2.1", 8080),
        &rules,
        &world(),
        Some("connected"),
        Some("tcp 192.0.2.9:40000 → 192.0.2.1:8080 ⇄ reply 10.1.0.2:80 → 192.0.2.9:40000".into()),
    );
    assert!(j.delivered);
    assert_eq!(j.result, "delivered to 10.1.0.2:80 and answered");
    assert_eq!(
        j.nat.as_deref(),
        Some("DNAT 192.0.2.1:8080 → 10.1.0.2:80, port published by container api (80/tcp)")
    );
    assert_eq!(j.packets.len(), 2, "the other trace's packet is not ours");
    assert_eq!(j.packets[1].direction, "reply");
    assert_eq!(
        j.packets[1].steps.len(),
        2,
        "the reply's forward events under another id are merged into it"
    );
    let route: Vec<(&str, &str)> = j
        .hops
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str()))
        .collect();
    assert_eq!(
        route,
        [
            (CLIENT, HOST),
            (HOST, NAT),
            (NAT, BRIDGE),
            (BRIDGE, VETH),
            (VETH, CONT),
            (CONT, PROC),
            (PROC, CONT),
            (CONT, VETH),
            (VETH, BRIDGE),
            (BRIDGE, HOST),
            (HOST, CLIENT),
        ]
    );
    assert!(j.hops[1]
        .what
        .contains("rule \"ports published on every IPv4 host address\" (handle 38) → accept"));
    assert!(j.hops[2]
        .what
        .contains("a published port of container api on network web"));
    assert!(j.hops[2]
        .what
        .contains("routed out of br-web (bridge of network web)"));
    assert!(j.hops[3].what.contains("vapi") && !j.hops[3].traced);
    assert!(j.hops[9].what.contains("containers may connect out"));
    assert!(j.hops[10]
        .what
        .contains("source 10.1.0.2:80 → 192.0.2.1:8080; out of uplink"));

    let text = render_text(&j);
    assert!(
        text.contains("NAT: DNAT 192.0.2.1:8080 → 10.1.0.2:80"),
        "{text}"
    );
    assert!(
        text.contains(
            " 1. Client → Host stack: tcp 192.0.2.9:40000 → 192.0.2.1:8080 [SYN] (in on uplink)"
        ),
        "{text}"
    );
    let m = render_mermaid(&j);
    assert!(
        m.starts_with("sequenceDiagram\n    participant C as Client (netns /run/netns/out)\n"),
        "{m}"
    );
    assert!(m.contains("    B-->>V: bridge port vapi"), "{m}");
    assert!(m.contains("    H->>N: "), "{m}");
    assert!(!m.contains("Note over"), "{m}");
    // JSON round trip (the CLI reads what berthd sends).
    let back: Journey =
        serde_json::from_str(&serde_json::to_string(&j).expect("json")).expect("parse");
    assert_eq!(back.hops, j.hops);
}

/// A SYN dropped in `forward` by `rule`, from `src` to `dst`, on bridges `iif` → `oif`.
fn dropped(handle: u64, chain: &str, src: &str, dst: &str, iif: u32, oif: u32) -> Journey {
    let syn = tcp(src, 40000, dst, 80, 0x02);
    let events = vec![
        with(ev(7, T, "mark_in", Some(2), -1), &syn, iif, 0),
        with(ev(7, "berth", "forward", Some(20), -3), &syn, iif, oif),
        with(ev(7, "berth", chain, Some(handle), 0), &syn, iif, oif),
    ];
    let mut w = world();
    w.vantage = "container store".into();
    journey(
        &events,
        T,
        &filter(dst, 80),
        &parse_ruleset(RULESET),
        &w,
        Some("timeout"),
        None,
    )
}

#[test]
fn drops_say_why_and_what_would_allow_the_flow() {
    let j = dropped(26, "forward", "10.2.0.2", "10.1.0.2", 6, 5);
    assert!(!j.delivered);
    let d = j.drop.as_ref().expect("drop");
    assert_eq!(d.chain, "inet berth forward");
    assert_eq!(d.handle, Some(26));
    assert_eq!(d.cause, "networks db and web are isolated");
    assert_eq!(d.fix.as_deref(), Some("berth network connect web store"));
    assert_eq!(
        j.result,
        "DROPPED in inet berth forward: networks db and web are isolated"
    );
    let last = j.hops.last().expect("hops");
    assert!(
        last.what
            .starts_with("✗ DROPPED by inet berth forward \"isolation"),
        "{last:?}"
    );
    // No NAT and no rule in prerouting: the drop is the host stack's, right after the arrival.
    assert_eq!(j.hops.len(), 2, "{:?}", j.hops);
    assert_eq!((last.from.as_str(), last.to.as_str()), (HOST, HOST));
    let m = render_mermaid(&j);
    assert!(
        m.contains("Note over H: networks db and web are isolated"),
        "{m}"
    );
    assert!(
        m.contains("to allow it: berth network connect web store"),
        "{m}"
    );
    let t = render_text(&j);
    assert!(t.contains("why: networks db and web are isolated"), "{t}");

    let j = dropped(24, "forward", "10.2.0.2", "10.3.0.2", 6, 7);
    let d = j.drop.expect("drop");
    assert_eq!(
        d.cause,
        "network priv is internal: nothing is routed into it"
    );
    assert_eq!(d.fix.as_deref(), Some("berth network connect priv store"));

    let j = dropped(40, "user", "10.2.0.2", "10.1.0.2", 6, 5);
    let d = j.drop.expect("drop");
    assert_eq!(d.chain, "inet berth user");
    assert_eq!(
        d.cause,
        "dropped by your rule in chain user: meta l4proto tcp ct original proto-dst 8080 drop (berth never adds rules there)"
    );
    assert_eq!(
        d.fix.as_deref(),
        Some("if the flow should pass: nft delete rule inet berth user handle 40")
    );

    // Another table's policy.
    let syn = tcp("192.0.2.9", 40000, "192.0.2.1", 22, 0x02);
    let mut pol = with(ev(8, "mine", "input", None, 0), &syn, 2, 0);
    pol.kind = Some(EventKind::Policy);
    pol.verdict = None;
    pol.policy = Some(0);
    let events = vec![with(ev(8, T, "mark_in", Some(2), -1), &syn, 2, 0), pol];
    let j = journey(
        &events,
        T,
        &filter("192.0.2.1", 22),
        &parse_ruleset(RULESET),
        &world(),
        None,
        None,
    );
    let d = j.drop.expect("drop");
    assert_eq!(d.rule, "policy drop");
    assert!(
        d.cause
            .contains("the policy of chain inet mine input, which is not berth's"),
        "{}",
        d.cause
    );
}

#[test]
fn packets_are_split_where_the_kernel_reuses_an_id() {
    let a = tcp("192.0.2.9", 40000, "192.0.2.1", 8080, 0x10);
    let b = tcp("192.0.2.9", 40000, "192.0.2.1", 8080, 0x11);
    let events = vec![
        with(ev(5, T, "mark_in", Some(2), -1), &a, 2, 0),
        with(ev(5, "berth", "forward", Some(25), 1), &a, 2, 5),
        with(ev(5, T, "mark_in", Some(2), -1), &b, 2, 0),
        with(ev(5, "berth", "forward", Some(25), 1), &b, 2, 5),
        // Unmarked, unrelated traffic.
        with(
            ev(6, "berth", "forward", Some(30), 1),
            &tcp("10.9.0.2", 1, "192.0.2.77", 2, 2),
            5,
            2,
        ),
    ];
    let p = packets_of(&events, T);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].1.len(), 2);
    assert!(packets_of(&events, "berth-trace-zzz").is_empty());
    let j = journey(
        &[],
        T,
        &filter("192.0.2.1", 8080),
        &Rules::default(),
        &world(),
        None,
        None,
    );
    assert!(j.result.starts_with("no packet of this flow was seen"));
    assert!(j.hops.is_empty() && !j.delivered);
}

// ------------------------------------------------------------------ overlay namespaces

fn bev(id: u32, table: &str, chain: &str, handle: Option<u64>, verdict: i32) -> Event {
    Event {
        family: "bridge".into(),
        ..ev(id, table, chain, handle, verdict)
    }
}

/// The policy event an empty base chain reports (where the frame leaves).
fn seen(id: u32, h: &(Vec<u8>, Vec<u8>), iif: u32, oif: u32) -> Event {
    let mut e = bev(id, T, "seen_out", None, -1);
    e.kind = Some(EventKind::Policy);
    e.policy = Some(1);
    with(e, h, iif, oif)
}

/// Host-a of a cluster: container `cli` on overlay network `app` (10.63.0.2, port `vbcli`),
/// `db` (10.63.0.3) on host-b behind VTEP 10.77.0.2.
fn overlay_world() -> World {
    let mut w = world();
    w.vantage = "container cli".into();
    w.endpoints.push(EndpointInfo {
        container: "cli".into(),
        network: "app".into(),
        host_ifname: "vbcli".into(),
        ifname: "eth0".into(),
        addrs: vec![v4("10.63.0.2")],
    });
    w.links.insert(9, "bup-abc".into());
    w.overlays.push(OverlayInfo {
        network: "app".into(),
        netns: "ov-abc".into(),
        bridge: "berth-abc".into(),
        vxlan: "bvx-abc".into(),
        vni: 4096,
        uplink: Some("bup-abc".into()),
        links: [(2, "up0"), (3, "vbcli"), (4, "bvx-abc"), (5, "berth-abc")]
            .into_iter()
            .map(|(i, n)| (i, n.to_string()))
            .collect(),
        remotes: vec![RemoteInfo {
            container: "db".into(),
            node: "host-b".into(),
            vtep: v4("10.77.0.2"),
            addrs: vec![v4("10.63.0.3")],
        }],
    });
    w
}

fn overlay_filter() -> Filter {
    Filter {
        proto: Proto::Tcp,
        dst: v4("10.63.0.3"),
        dport: 5432,
        src: Some(v4("10.63.0.2")),
        sport: Some(40000),
    }
}

const NS_RULESET: &str = r#"table bridge berth { # handle 3
	chain prerouting { # handle 1
		type filter hook prerouting priority filter; policy accept;
		iifname @guarded jump guard comment "anti-spoofing for berth's bridge ports" # handle 5
	}
	chain guard { # handle 2
		iifname . ip saddr != @port_ip4 drop comment "a container sends only from its own IPv4 addresses" # handle 12
	}
}
"#;

#[test]
fn overlay_namespace_scripts_mark_by_the_source_port_and_report_exits() {
    let s = ns_table_script("abc", &overlay_filter(), 8);
    for want in [
        "add table bridge berth-trace-abc { comment",
        "add chain bridge berth-trace-abc mark_in { type filter hook prerouting priority -310; policy accept; }",
        "add rule bridge berth-trace-abc mark_in ip saddr 10.63.0.2 meta l4proto tcp th sport 40000 limit rate 8/minute burst 8 packets meta nftrace set 1",
        "add rule bridge berth-trace-abc mark_in ip daddr 10.63.0.2 meta l4proto tcp th dport 40000 limit",
        "add chain bridge berth-trace-abc seen_out { type filter hook postrouting priority 300; policy accept; }",
        "add chain bridge berth-trace-abc seen_local { type filter hook input priority 300;",
        // The inet table marks only what comes up the uplink (the bridge's marks are routed on).
        "add rule inet berth-trace-abc mark_in iifname \"up0\" ip saddr 10.63.0.2 meta l4proto tcp th sport 40000",
        "add chain inet berth-trace-abc seen_out { type filter hook postrouting priority 300;",
    ] {
        assert!(s.contains(want), "{want}\nin\n{s}");
    }
    assert!(!s.contains("hook output"), "{s}");
    // Without a source port (a watch): by the destination, both ways.
    let mut f = overlay_filter();
    f.sport = None;
    let s = ns_table_script("abc", &f, 8);
    assert!(
        s.contains("mark_in ip daddr 10.63.0.3 ip saddr 10.63.0.2 meta l4proto tcp th dport 5432"),
        "{s}"
    );
    assert!(
        s.contains("mark_in ip saddr 10.63.0.3 ip daddr 10.63.0.2 meta l4proto tcp th sport 5432"),
        "{s}"
    );
    assert_eq!(
        ns_delete_script("berth-trace-abc"),
        "delete table bridge berth-trace-abc\ndelete table inet berth-trace-abc\n"
    );
}

#[test]
fn a_journey_through_the_overlay_namespace_and_the_tunnel() {
    let syn = tcp("10.63.0.2", 40000, "10.63.0.3", 5432, 0x02);
    let synack = tcp("10.63.0.3", 5432, "10.63.0.2", 40000, 0x12);
    let mut jump = with(bev(7, "berth", "prerouting", Some(5), -3), &syn, 3, 0);
    jump.target = Some("guard".into());
    let events = vec![
        with(bev(7, T, "mark_in", Some(2), -1), &syn, 3, 0),
        jump,
        with(bev(7, "berth", "guard", None, -1), &syn, 3, 0),
        seen(7, &syn, 3, 4),
        with(bev(8, T, "mark_in", Some(3), -1), &synack, 4, 0),
        seen(8, &synack, 4, 3),
    ];
    let ns = [NsTrace {
        network: "app".into(),
        events,
        rules: parse_ruleset(NS_RULESET),
    }];
    let w = overlay_world();
    let j = journey_with(
        &[],
        T,
        &overlay_filter(),
        &Rules::default(),
        &w,
        Some("connected"),
        None,
        &ns,
    );
    assert!(j.delivered, "{j:#?}");
    assert_eq!(j.result, "delivered to 10.63.0.3:5432 and answered");
    let legs: Vec<(&str, &str)> = j
        .hops
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str()))
        .collect();
    assert_eq!(
        legs,
        [
            (CONT, OVERLAY_BRIDGE),
            (OVERLAY_BRIDGE, TUNNEL),
            (TUNNEL, REMOTE),
            (REMOTE, TUNNEL),
            (TUNNEL, OVERLAY_BRIDGE),
            (OVERLAY_BRIDGE, CONT),
        ]
    );
    assert!(
        j.hops[0].what.contains(
            "leaves container cli (eth0), in on bridge port vbcli of berth-abc (namespace ov-abc)"
        ),
        "{:?}",
        j.hops[0]
    );
    assert!(j.hops[1].what.contains("anti-spoofing (table bridge berth chain guard) passed; out of bvx-abc: encapsulated in VXLAN (VNI 4096, UDP) to 10.77.0.2 (host host-b)"), "{:?}", j.hops[1]);
    assert!(!j.hops[2].traced && j.hops[2].what.contains("container db"));
    assert!(j.hops[4].traced && j.hops[4].what.contains("[SYN,ACK] decapsulated by bvx-abc"));
    assert!(
        j.hops[5]
            .what
            .contains("to container cli (eth0 10.63.0.2:40000)"),
        "{:?}",
        j.hops[5]
    );
    assert_eq!(j.packets.len(), 2);
    assert!(j
        .packets
        .iter()
        .all(|p| p.overlay.as_deref() == Some("app")));
    assert_eq!(j.packets[1].direction, "reply");
    assert_eq!(j.packets[0].oif.as_deref(), Some("bvx-abc"));
    let text = render_text(&j);
    assert!(
        text.contains("(original, in overlay network app's namespace)"),
        "{text}"
    );
    let m = render_mermaid(&j);
    assert!(
        m.contains("participant O as Overlay bridge") && m.contains("O->>X:"),
        "{m}"
    );

    // A spoofed source: the guard drops it in the namespace, and the journey says so.
    let spoof = tcp("10.63.0.99", 40000, "10.63.0.3", 5432, 0x02);
    let mut jump = with(bev(9, "berth", "prerouting", Some(5), -3), &spoof, 3, 0);
    jump.target = Some("guard".into());
    let ns = [NsTrace {
        network: "app".into(),
        events: vec![
            with(bev(9, T, "mark_in", Some(2), -1), &spoof, 3, 0),
            jump,
            with(bev(9, "berth", "guard", Some(12), 0), &spoof, 3, 0),
        ],
        rules: parse_ruleset(NS_RULESET),
    }];
    let mut f = overlay_filter();
    f.src = None;
    let j = journey_with(
        &[],
        T,
        &f,
        &Rules::default(),
        &w,
        Some("timeout"),
        None,
        &ns,
    );
    assert!(!j.delivered);
    let d = j.drop.as_ref().expect("drop");
    assert_eq!(d.chain, "bridge berth guard");
    assert!(d.cause.contains("anti-spoofing in overlay network app's namespace ov-abc: a container sends only from its own IPv4 addresses"), "{}", d.cause);
    assert!(
        j.result.starts_with("DROPPED in bridge berth guard"),
        "{}",
        j.result
    );
    let last = j.hops.last().expect("hops");
    assert!(
        last.what.starts_with("✗ DROPPED by bridge berth guard"),
        "{last:?}"
    );
}

#[test]
fn the_host_names_an_overlay_uplink() {
    let w = overlay_world();
    assert_eq!(
        w.describe_if("bup-abc"),
        "bup-abc (uplink of overlay network app)"
    );
}
