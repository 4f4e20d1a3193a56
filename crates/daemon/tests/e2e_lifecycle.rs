//! End-to-end lifecycle: clean removal, and convergence after berthd restarts (crash and
//! graceful), including orphan removal.

mod common;

use std::time::{Duration, Instant};

use common::{show, World};

fn network_id(w: &World, name: &str) -> String {
    let out = w.berth_ok(&["network", "inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("network inspect json");
    v[0]["Id"].as_str().expect("network Id").to_string()
}

/// Rule lines of an nft listing (lines inside chains that are rules, not chain headers).
fn nft_rule_count(table: &str) -> usize {
    let mut in_chain = false;
    let mut n = 0;
    for l in table.lines().map(str::trim) {
        if l.starts_with("chain ") {
            in_chain = true;
        } else if l == "}" {
            in_chain = false;
        } else if in_chain && !l.is_empty() && !l.starts_with("type ") && !l.starts_with("policy ")
        {
            n += 1;
        }
    }
    n
}

/// Proves: removing containers and networks leaves nothing behind in the host netns: no
/// `vb*` veths, no `berth-*` (or custom-named) bridges, and no nft elements naming the removed
/// networks, their subnets or bridges — while another network's state is untouched.
#[test]
fn removal_leaves_nothing_behind() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.8.0.0/24", "gone"]);
    w.berth_ok(&[
        "network",
        "create",
        "--subnet",
        "10.88.0.0/24",
        "--internal",
        "-o",
        "com.docker.network.bridge.name=brgone",
        "gone2",
    ]);
    w.berth_ok(&["network", "create", "--subnet", "10.80.0.0/24", "stays"]);
    let gone_id = network_id(&w, "gone");
    let gone_br = format!("berth-{}", &gone_id[..9]);
    w.run_d("a", &["--network", "gone"], &["sleep", "120"]);
    w.run_d("b", &["--network", "gone"], &["sleep", "120"]);
    w.run_d("c", &["--network", "gone2"], &["sleep", "120"]);
    w.berth_ok(&["network", "connect", "gone2", "a"]);
    w.run_d("keep", &["--network", "stays"], &["sleep", "120"]);

    let links = w.host_links();
    assert!(
        links.contains(&gone_br),
        "bridge {gone_br} missing: {links:?}"
    );
    assert!(
        links.contains(&"brgone".to_string()),
        "custom bridge brgone missing: {links:?}"
    );
    assert_eq!(
        links.iter().filter(|l| l.starts_with("vb")).count(),
        5,
        "veths: {links:?}"
    );
    let nft = w.nft_table();
    assert!(
        nft.contains("10.8.0.0/24") && nft.contains(&gone_br),
        "nft lacks gone:\n{nft}"
    );

    w.berth_ok(&["rm", "-f", "a", "b", "c"]);
    w.berth_ok(&["network", "rm", "gone", "gone2"]);

    let links = w.host_links();
    let stays_id = network_id(&w, "stays");
    let stays_br = format!("berth-{}", &stays_id[..9]);
    let vbs: Vec<&String> = links.iter().filter(|l| l.starts_with("vb")).collect();
    assert_eq!(vbs.len(), 1, "only keep's veth may remain: {links:?}");
    let bridges: Vec<&String> = links.iter().filter(|l| l.starts_with("berth-")).collect();
    assert_eq!(
        bridges,
        vec![&stays_br],
        "only the `stays` bridge may remain: {links:?}"
    );
    assert!(
        !links.contains(&"brgone".to_string()),
        "brgone left behind: {links:?}"
    );
    assert!(
        links.contains(&"berth0".to_string()),
        "default bridge vanished: {links:?}"
    );

    let nft = w.nft_table();
    for needle in [
        "10.8.0.0",
        "10.88.0.0",
        gone_br.as_str(),
        "brgone",
        "\"network gone\"",
        "network gone2",
        &gone_id[..12],
    ] {
        assert!(
            !nft.contains(needle),
            "nft still mentions {needle:?} after removal:\n{nft}"
        );
    }
    assert!(
        nft.contains("10.80.0.0/24") && nft.contains(&stays_br),
        "stays' elements lost:\n{nft}"
    );

    // Finally remove the rest: no vb* and no berth-* at all.
    w.berth_ok(&["rm", "-f", "keep"]);
    w.berth_ok(&["network", "rm", "stays"]);
    let links = w.host_links();
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("vb") || l.starts_with("berth-")),
        "leftover links: {links:?}"
    );
    let nft = w.nft_table();
    assert!(
        !nft.contains("10.80.0.0") && !nft.contains(&stays_br),
        "leftover nft:\n{nft}"
    );
}

struct Snapshot {
    bridges: Vec<String>,
    rules: usize,
}

fn check_converged(w: &World, net: &str, bridge: &str, srv_ip: &str, what: &str) -> Snapshot {
    let ls = w.network_ls();
    assert!(
        ls.contains(net),
        "{what}: network {net} missing from ls:\n{ls}"
    );
    let id = network_id(w, net);
    assert!(
        bridge.ends_with(&id[..9]),
        "{what}: network id changed: {id}"
    );
    let links = w.host_links();
    let bridges: Vec<String> = links
        .iter()
        .filter(|l| l.starts_with("berth"))
        .cloned()
        .collect();
    assert_eq!(
        bridges.iter().filter(|b| *b == bridge).count(),
        1,
        "{what}: expected exactly one {bridge}: {links:?}"
    );
    // The container survived and is reachable (from another container and from the host).
    let v = w.inspect("srv");
    assert_eq!(
        v["State"]["Running"].as_bool(),
        Some(true),
        "{what}: srv state {}",
        v["State"]
    );
    let r = w.assert_reaches("cli", srv_ip, 8080);
    assert_eq!(r.trim(), w.ip_of("cli", net), "{what}");
    w.tcp_from_ns(&w.host_ns, srv_ip, 8080, 3.0)
        .unwrap_or_else(|e| panic!("{what}: srv unreachable from the host netns: {e}"));
    let tables = w.ns_exec_ok(&w.host_ns, &["nft", "list", "tables"]);
    assert_eq!(
        tables.matches("table inet berth").count(),
        1,
        "{what}: {tables}"
    );
    Snapshot {
        bridges,
        rules: nft_rule_count(&w.nft_table()),
    }
}

/// Proves: berthd converges after a crash (kill -9) and after a graceful restart: the
/// network persists (ls/inspect, same id), exactly one bridge for it, an orphan `vb…` veth
/// nobody wants is removed, the running container survives and stays reachable, and the nft
/// table is not duplicated (same rule count, same elements).
#[test]
fn restart_converges_and_removes_orphans() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "keep"]);
    let id = network_id(&w, "keep");
    let bridge = format!("berth-{}", &id[..9]);
    w.run_server("srv", &["--network", "keep"], 8080);
    w.run_d("cli", &["--network", "keep"], &["sleep", "300"]);
    w.wait_container_port("srv", 8080);
    let srv_ip = w.ip_of("srv", "keep");
    let before = check_converged(&w, "keep", &bridge, &srv_ip, "before restart");
    let nft_before = w.nft_table();

    // Crash, plant an orphan veth as berth leaves one (its mark: an ifalias starting with
    // `berth:`) and a foreign veth with a berth-shaped name but no mark, restart: the orphan
    // goes, the foreign link stays (berth never deletes a link without its mark).
    w.restart_daemon_with(true, || {
        for (name, peer) in [
            ("vb0123456789ab", "orphanpeer"),
            ("vbfedcba987654", "foreignpeer"),
        ] {
            w.host_ip_cmd(&["link", "add", name, "type", "veth", "peer", "name", peer]);
        }
        w.host_ip_cmd(&[
            "link",
            "set",
            "vb0123456789ab",
            "alias",
            "berth:ep:0123456789ab:000000000000",
        ]);
        assert!(w.host_links().contains(&"vb0123456789ab".to_string()));
    });
    let start = Instant::now();
    while w.host_links().contains(&"vb0123456789ab".to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "orphan vb0123456789ab still present 5 s after restart: {:?}",
            w.host_links()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        w.host_links().contains(&"vbfedcba987654".to_string()),
        "berth deleted a link it did not create: {:?}",
        w.host_links()
    );
    w.host_ip_cmd(&["link", "del", "vbfedcba987654"]);
    let after = check_converged(&w, "keep", &bridge, &srv_ip, "after kill -9 restart");
    assert_eq!(
        before.bridges, after.bridges,
        "bridges differ after restart"
    );
    assert_eq!(
        before.rules,
        after.rules,
        "nft rule count changed across restart:\nBEFORE\n{nft_before}\nAFTER\n{}",
        w.nft_table()
    );
    let nft_after = w.nft_table();
    assert_eq!(
        nft_before.lines().count(),
        nft_after.lines().count(),
        "nft listing changed across restart:\nBEFORE\n{nft_before}\nAFTER\n{nft_after}"
    );

    // Graceful restart.
    w.restart_daemon(false);
    let after2 = check_converged(&w, "keep", &bridge, &srv_ip, "after graceful restart");
    assert_eq!(before.bridges, after2.bridges);
    assert_eq!(
        before.rules,
        after2.rules,
        "nft rule count changed:\n{}",
        w.nft_table()
    );
    // And the daemon still works: a new container on the network reaches srv.
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "keep",
        "python3",
        &w.helper("probe.py"),
        &srv_ip,
        "8080",
        "3",
    ]);
    assert!(
        o.status.success(),
        "new container after restarts cannot reach srv: {}",
        show(&o)
    );
}

/// Proves: a `--rm` container whose process ended while berthd was down (killed with -9) is
/// removed by the restart, as its waiter would have been told (its exit and its removal are
/// one commit, flushed to disk only after the waiter has its answer: a crash in between must
/// end the same way), while a container without `--rm` in the same case is kept, exited.
#[test]
fn restart_removes_a_rm_container_that_ended_meanwhile() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "n"]);
    w.run_d("gone", &["--rm", "--network", "n"], &["sleep", "300"]);
    w.run_d("kept", &["--network", "n"], &["sleep", "300"]);
    let pids: Vec<i64> = ["gone", "kept"]
        .iter()
        .map(|n| {
            w.inspect(n)["State"]["Pid"]
                .as_i64()
                .expect("a running container has a pid")
        })
        .collect();
    w.restart_daemon_with(true, || {
        for pid in &pids {
            // The container's pid 1: its pid namespace and its init end with it.
            let _ = common::sh("kill", &["-KILL", &pid.to_string()]);
        }
        let start = Instant::now();
        while pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the containers did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (status, body) = w.api("GET", "/containers/gone/json", None);
    assert_eq!(status, 404, "the --rm container is still stored: {body}");
    let v = w.inspect("kept");
    assert_eq!(v["State"]["Status"], "exited", "{}", v["State"]);
    w.assert_in_sync("the restart");
}
