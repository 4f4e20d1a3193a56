//! End-to-end: run-time `network connect/disconnect` with a static IP and an alias, and IPAM
//! under concurrent container starts.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{show, stdout, World};

/// Proves: `network connect --ip 10.1.0.50 --alias www` plumbs a second interface at run
/// time (reachable at .50 from another container; inspect shows the IP and alias) and
/// `network disconnect` removes it (no longer reachable; inspect no longer lists it) while the
/// container keeps running on its first network.
#[test]
fn connect_with_static_ip_then_disconnect() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.berth_ok(&["network", "create", "--subnet", "10.1.0.0/24", "front"]);
    w.run_server("srv", &["--network", "back"], 8080);
    w.run_d("cli", &["--network", "front"], &["sleep", "120"]);
    w.wait_container_port("srv", 8080);
    w.assert_blocked("cli", "10.1.0.50", 8080);

    w.berth_ok(&[
        "network",
        "connect",
        "--ip",
        "10.1.0.50",
        "--alias",
        "www",
        "front",
        "srv",
    ]);
    let v = w.inspect("srv");
    let ep = &v["NetworkSettings"]["Networks"]["front"];
    assert_eq!(
        ep["IPAddress"].as_str(),
        Some("10.1.0.50"),
        "inspect srv: {ep}"
    );
    let aliases = ep["Aliases"].to_string();
    assert!(
        aliases.contains("www"),
        "alias www missing from inspect: {ep}"
    );
    let links = w.exec_ok("srv", &["ip", "-o", "-4", "addr"]);
    assert!(
        links.contains("10.1.0.50/24"),
        "srv lacks 10.1.0.50/24:\n{links}"
    );

    let reply = w.assert_reaches("cli", "10.1.0.50", 8080);
    assert_eq!(reply.trim(), w.ip_of("cli", "front"));

    w.berth_ok(&["network", "disconnect", "front", "srv"]);
    w.assert_blocked("cli", "10.1.0.50", 8080);
    let v = w.inspect("srv");
    assert!(
        v["NetworkSettings"]["Networks"].get("front").is_none(),
        "front still in inspect after disconnect: {}",
        v["NetworkSettings"]["Networks"]
    );
    assert_eq!(
        v["State"]["Running"].as_bool(),
        Some(true),
        "srv stopped by disconnect"
    );
    let links = w.exec_ok("srv", &["ip", "-o", "-4", "addr"]);
    assert!(
        !links.contains("10.1.0.50"),
        "10.1.0.50 still inside srv:\n{links}"
    );
    // Still reachable on back from the host netns.
    let srv_back = w.ip_of("srv", "back");
    w.tcp_from_ns(&w.host_ns, &srv_back, 8080, 3.0)
        .unwrap_or_else(|e| panic!("srv on back unreachable from the host: {e}"));
    // The address is free again: reconnecting with it works.
    w.berth_ok(&["network", "connect", "--ip", "10.1.0.50", "front", "srv"]);
    w.assert_reaches("cli", "10.1.0.50", 8080);
}

/// Proves: 12 concurrent `run -d` on one network all succeed and get distinct addresses in
/// the subnet (never the gateway), each actually configured inside its container.
#[test]
fn ipam_concurrent_runs_get_distinct_addresses() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.12.0.0/24", "web"]);
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..12)
            .map(|_| {
                let w = &w;
                s.spawn(move || {
                    let o = w.berth_timeout(
                        &["run", "-d", "--network", "web", "sleep", "30"],
                        Duration::from_secs(90),
                    );
                    assert!(o.status.success(), "concurrent run -d failed: {}", show(&o));
                    stdout(&o).trim().to_string()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("runner thread panicked"))
            .collect()
    });
    let uniq_ids: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(uniq_ids.len(), 12, "container ids not distinct: {ids:?}");
    let mut ips = BTreeSet::new();
    for id in &ids {
        let ip = w.ip_of(id, "web");
        let a: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|_| panic!("container {id}: bad IP {ip:?}"));
        assert_eq!(&a.octets()[..3], &[10, 12, 0], "{ip} outside 10.12.0.0/24");
        assert_ne!(a.octets()[3], 0, "network address handed out");
        assert_ne!(a.octets()[3], 1, "gateway address handed out");
        assert_ne!(a.octets()[3], 255, "broadcast handed out");
        assert!(ips.insert(ip.clone()), "duplicate address {ip}: {ids:?}");
    }
    assert_eq!(ips.len(), 12);
    for id in &ids {
        let ip = w.ip_of(id, "web");
        let inside = w.exec_ok(id, &["ip", "-o", "-4", "addr"]);
        assert!(
            inside.contains(&format!("{ip}/24")),
            "{id} lacks {ip}/24:\n{inside}"
        );
    }
}
