//! End-to-end firewall behaviour with real packets: outbound masquerade, internal networks,
//! isolation between networks, enable_icc=false.

mod common;

use common::World;

/// Starts the peer-address server in the outside netns on 198.18.N.2:port.
fn outside_server(w: &World, port: u16) {
    let p = port.to_string();
    let helper = w.helper("peer_server.py");
    let out_ip = w.out_ip();
    w.spawn_in(&w.out_ns.clone(), &["python3", &helper, &out_ip, &p]);
    w.wait_port(&w.out_ns, &out_ip, port);
}

/// Proves: a container's outbound connection to a LAN peer leaves masqueraded to the host's
/// own address (the peer sees 198.18.N.1, not the container address) — for a user network
/// and for the default `bridge` network.
#[test]
fn outbound_is_masqueraded_to_host_address() {
    require_root!();
    let w = World::new();
    outside_server(&w, 7000);
    w.berth_ok(&["network", "create", "--subnet", "10.2.0.0/24", "lan2"]);
    w.run_d("c1", &["--network", "lan2"], &["sleep", "120"]);
    w.run_d("c2", &[], &["sleep", "120"]); // default network `bridge`

    for c in ["c1", "c2"] {
        let reply = w.assert_reaches(c, &w.out_ip(), 7000);
        assert_eq!(
            reply.trim(),
            w.host_ip(),
            "{c}: the outside peer saw {reply:?}, expected the host address {} (masquerade)",
            w.host_ip()
        );
    }
    // Sanity: the container's own address is not the host's.
    assert!(w.ip_of("c1", "lan2").starts_with("10.2.0."));
}

/// Proves: a container on an `--internal` network cannot reach the outside peer (the
/// connection really fails), while two containers on that network reach each other.
#[test]
fn internal_network_blocks_outside_but_not_peers() {
    require_root!();
    let w = World::new();
    outside_server(&w, 7000);
    w.berth_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.3.0.0/24",
        "priv",
    ]);
    w.run_server("a", &["--network", "priv"], 8080);
    w.run_d("b", &["--network", "priv"], &["sleep", "120"]);
    w.wait_container_port("a", 8080);

    w.assert_blocked("b", &w.out_ip(), 7000);
    w.assert_blocked("a", &w.out_ip(), 7000);
    let a_ip = w.ip_of("a", "priv");
    let b_ip = w.ip_of("b", "priv");
    let reply = w.assert_reaches("b", &a_ip, 8080);
    assert_eq!(
        reply.trim(),
        b_ip,
        "a saw {reply:?} as the peer, expected b's address {b_ip}"
    );

    // Control: a normal network in the same world does reach the outside peer.
    w.berth_ok(&["network", "create", "--subnet", "10.33.0.0/24", "pub"]);
    w.run_d("p", &["--network", "pub"], &["sleep", "120"]);
    w.assert_reaches("p", &w.out_ip(), 7000);
}

/// Proves: containers on two different networks cannot reach each other (both directions);
/// a container connected to both networks at run time (`network connect`) reaches both,
/// while the others stay isolated.
#[test]
fn networks_are_isolated_multi_homed_reaches_both() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.4.1.0/24", "n1"]);
    w.berth_ok(&["network", "create", "--subnet", "10.4.2.0/24", "n2"]);
    w.run_server("s1", &["--network", "n1"], 8080);
    w.run_server("s2", &["--network", "n2"], 8080);
    w.run_d("c1", &["--network", "n1"], &["sleep", "120"]);
    w.wait_container_port("s1", 8080);
    w.wait_container_port("s2", 8080);
    let s1 = w.ip_of("s1", "n1");
    let s2 = w.ip_of("s2", "n2");

    w.assert_reaches("c1", &s1, 8080);
    w.assert_blocked("c1", &s2, 8080);
    w.assert_blocked("s2", &s1, 8080);
    w.assert_blocked("s1", &s2, 8080);

    w.berth_ok(&["network", "connect", "n2", "c1"]);
    let c1_n2 = w.ip_of("c1", "n2");
    assert!(
        c1_n2.starts_with("10.4.2."),
        "c1's address on n2: {c1_n2:?}"
    );
    let r1 = w.assert_reaches("c1", &s1, 8080);
    let r2 = w.assert_reaches("c1", &s2, 8080);
    assert_eq!(
        r1.trim(),
        w.ip_of("c1", "n1"),
        "s1 should see c1's n1 address"
    );
    assert_eq!(
        r2.trim(),
        c1_n2,
        "s2 should see c1's n2 address (same subnet, no routing)"
    );
    // The single-homed ones are still isolated.
    w.assert_blocked("s2", &s1, 8080);
    w.assert_blocked("s1", &s2, 8080);
}

/// Proves: with `-o com.docker.network.bridge.enable_icc=false` containers on the network
/// cannot reach each other, but they can reach the gateway (a server on the bridge address
/// in the host netns).
#[test]
fn enable_icc_false_blocks_peers_not_gateway() {
    require_root!();
    let w = World::new();
    w.berth_ok(&[
        "network",
        "create",
        "--subnet",
        "10.7.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "noicc",
    ]);
    w.run_server("a", &["--network", "noicc"], 8080);
    w.run_server("b", &["--network", "noicc"], 8080);
    w.wait_container_port("a", 8080);
    w.wait_container_port("b", 8080);
    let a = w.ip_of("a", "noicc");
    let b = w.ip_of("b", "noicc");
    w.assert_blocked("b", &a, 8080);
    w.assert_blocked("a", &b, 8080);

    // A server on the gateway address in the host netns.
    let gw = "10.7.0.1";
    let helper = w.helper("peer_server.py");
    w.spawn_in(&w.host_ns.clone(), &["python3", &helper, gw, "7070"]);
    w.wait_port(&w.host_ns, gw, 7070);
    let r = w.assert_reaches("a", gw, 7070);
    assert_eq!(r.trim(), a, "gateway server should see a's address");
    w.assert_reaches("b", gw, 7070);

    // Control: on a normal network in the same world, peers do talk.
    w.berth_ok(&["network", "create", "--subnet", "10.77.0.0/24", "icc"]);
    w.run_server("x", &["--network", "icc"], 8080);
    w.run_d("y", &["--network", "icc"], &["sleep", "120"]);
    w.wait_container_port("x", 8080);
    w.assert_reaches("y", &w.ip_of("x", "icc"), 8080);
}
