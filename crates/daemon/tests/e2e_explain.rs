//! End-to-end `berth explain --verify` and `berth topology` in a namespace world: the plan's
//! verdicts agree with real probes for published ports, an internal network and two isolated
//! networks; a rule changed by hand in chain `user` is flagged; the topology shows what the
//! kernel has and marks a veth deleted by hand.

mod common;

use common::{code, show, stderr, stdout, World};
use serde_json::Value;

/// web (api: servers on 80, published 8080:80 and 127.0.0.1:8081:80; client), db (store),
/// priv (internal: vault).
fn world() -> World {
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.91.1.0/24", "web"]);
    w.berth_ok(&["network", "create", "--subnet", "10.91.2.0/24", "db"]);
    w.berth_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.91.3.0/24",
        "priv",
    ]);
    w.run_server(
        "api",
        &[
            "--network",
            "web",
            "--ip",
            "10.91.1.2",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:8081:80",
        ],
        80,
    );
    w.run_d("client", &["--network", "web"], &["sleep", "600"]);
    w.run_d("store", &["--network", "db"], &["sleep", "600"]);
    w.run_d("vault", &["--network", "priv"], &["sleep", "600"]);
    w.wait_container_port("api", 80);
    w
}

/// `explain --verify --format json api`: (exit code, report, stderr).
fn verify(w: &World) -> (i32, Value, String) {
    let o = w.berth(&["explain", "--verify", "--format", "json", "api"]);
    let v: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("explain --verify: {e}: {}", show(&o)));
    (code(&o), v, stderr(&o))
}

/// The probe from `from` to `to` in a verify report.
fn probe<'v>(v: &'v Value, from: &str, to: &str) -> &'v Value {
    v["Verify"]["Probes"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["From"] == from && p["To"] == to))
        .unwrap_or_else(|| panic!("no probe {from} → {to} in {:#}", v["Verify"]))
}

fn nft(w: &World, args: &str) {
    let mut a = vec!["nft"];
    a.extend(args.split(' '));
    w.ns_exec_ok(&w.host_ns, &a);
}

/// Proves: every probe agrees with the plan in a world of published ports, an internal network
/// and two isolated networks (and names the flows it cannot probe); a drop of the published
/// port put into chain `user` by hand, then an accept that opens the isolation between db and
/// web, are each flagged as a difference (exit 1) naming the vantage point and target.
#[test]
fn explain_verify_agrees_with_the_kernel_and_flags_hand_made_rules() {
    require_root!();
    let w = world();
    let (rc, v, err) = verify(&w);
    assert_eq!(rc, 0, "verify should agree: {:#}", v["Verify"]);
    assert_eq!(v["Verify"]["Agrees"], true);
    assert!(err.contains("probe "), "no progress on stderr: {err}");
    let gw_db = "10.91.2.1:8080";
    let cases = [
        // (from, to, expected, outcomes that agree)
        ("the host", "127.0.0.1:8080", "open", "connected"),
        ("the host", "127.0.0.1:8081", "open", "connected"),
        ("the host", "10.91.1.2:80", "open", "connected"),
        ("container client", "10.91.1.2:80", "open", "connected"),
        ("container client", "10.91.1.1:8080", "open", "connected"),
        ("container store", gw_db, "open", "connected"),
        ("container store", "10.91.1.2:80", "blocked", "timeout"),
        ("container vault", "10.91.3.1:8080", "blocked", "timeout"),
        ("container vault", "10.91.1.2:80", "blocked", "unreachable"),
    ];
    for (from, to, expected, outcome) in cases {
        let p = probe(&v, from, to);
        assert_eq!(p["Expected"], expected, "{p}");
        assert!(
            p["Outcome"].as_str().unwrap_or("").starts_with(outcome),
            "{from} → {to}: {p}"
        );
        assert_eq!(p["Agrees"], true, "{p}");
    }
    // The flow behind a blocked probe says why and what would allow it.
    let isolated = v["Inbound"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|f| {
                f["Peer"] == "container store" && f["Target"] == "10.91.1.2 on network web"
            })
        })
        .expect("flow store → api");
    assert_eq!(isolated["Cause"], "networks db and web are isolated");
    assert_eq!(isolated["Fix"], "berth network connect web store");
    assert_eq!(isolated["Verified"], "agrees");
    assert!(v["Verify"]["NotProbed"][0]
        .as_str()
        .unwrap_or("")
        .contains("outside"));

    // A drop of the published port for routed traffic, by hand, in the user's chain.
    nft(
        &w,
        "insert rule inet berth user meta l4proto tcp ct original proto-dst 8080 drop",
    );
    let (rc, v, _) = verify(&w);
    assert_eq!(
        rc, 1,
        "the hand-made drop must be flagged: {:#}",
        v["Verify"]
    );
    let p = probe(&v, "container store", gw_db);
    assert_eq!(p["Agrees"], false, "{p}");
    assert_eq!(p["Outcome"], "timeout");
    let diffs = v["Verify"]["Differences"].to_string();
    assert!(
        diffs.contains("container store → 10.91.2.1:8080"),
        "{diffs}"
    );
    assert!(diffs.contains("chain user"), "{diffs}");
    // The host's own connections are not forwarded: still open, still agreeing.
    assert_eq!(probe(&v, "the host", "127.0.0.1:8080")["Agrees"], true);
    // The text report says so too.
    let o = w.berth(&["explain", "--verify", "api"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(stdout(&o).contains("DIFFERENCE(S)"), "{}", show(&o));
    assert!(stdout(&o).contains("verify: DIFFERS"), "{}", show(&o));

    // Instead, an accept that opens the isolation between db and web (both directions).
    nft(&w, "flush chain inet berth user");
    nft(
        &w,
        "insert rule inet berth user ip saddr 10.91.2.0/24 ip daddr 10.91.1.0/24 accept",
    );
    nft(
        &w,
        "insert rule inet berth user ip saddr 10.91.1.0/24 ip daddr 10.91.2.0/24 accept",
    );
    let (rc, v, _) = verify(&w);
    assert_eq!(
        rc, 1,
        "the opened isolation must be flagged: {:#}",
        v["Verify"]
    );
    let p = probe(&v, "container store", "10.91.1.2:80");
    assert_eq!(p["Expected"], "blocked");
    assert_eq!(p["Outcome"], "connected");
    assert_eq!(p["Agrees"], false);
    assert!(v["Notes"]
        .to_string()
        .contains("chain user holds 2 rule(s)"));
    nft(&w, "flush chain inet berth user");
    let (rc, v, _) = verify(&w);
    assert_eq!(
        rc, 0,
        "agrees again once the chain is empty: {:#}",
        v["Verify"]
    );
}

/// Proves: `berth topology` shows the networks, bridges, veths and containers as the kernel
/// has them (json, text, dot, mermaid, svg), in sync; with drift repair off, a veth deleted by
/// hand is marked missing in every format and the exit status is 1.
#[test]
fn topology_shows_the_kernel_and_marks_drift() {
    require_root!();
    let w = World::new();
    w.restart_daemon_args(&["--no-drift-repair"]);
    w.berth_ok(&["network", "create", "--subnet", "10.92.1.0/24", "web"]);
    w.berth_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.92.2.0/24",
        "priv",
    ]);
    w.run_d(
        "api",
        &[
            "--network",
            "web",
            "--network-alias",
            "www",
            "-p",
            "8080:80",
        ],
        &["sleep", "600"],
    );
    w.run_d("vault", &["--network", "priv"], &["sleep", "600"]);
    let o = w.berth(&["topology", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let t: Value = serde_json::from_str(&stdout(&o)).expect("topology json");
    assert_eq!(t["InSync"], true);
    let net = |name: &str| {
        t["Networks"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["Name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no network {name}: {t:#}"))
    };
    let web = net("web");
    let bridge = w.bridge_of("web");
    assert_eq!(web["Device"]["Name"], bridge.as_str());
    assert_eq!(web["Device"]["State"], "ok");
    assert_eq!(web["Device"]["Addrs"][0], "10.92.1.1/24");
    let ep = &web["Endpoints"][0];
    let veth = w.host_veth_of("api", "web");
    assert_eq!(ep["Container"], "api");
    assert_eq!(ep["Veth"]["Name"], veth.as_str());
    assert_eq!(ep["Veth"]["Master"], bridge.as_str());
    assert_eq!(ep["State"], "ok");
    assert_eq!(ep["ObservedAddrs"][0], ep["Addrs"][0]);
    assert!(ep["DnsNames"].to_string().contains("www"));
    assert_eq!(net("priv")["Internal"], true);
    let api = t["Containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["Name"] == "api"))
        .expect("container api");
    assert_eq!(api["Ports"][0], "0.0.0.0:8080->80/tcp");
    let text = w.berth_ok(&["topology"]);
    assert!(text.contains(&format!("veth {veth} → api eth0")), "{text}");
    assert!(text.contains("in sync"), "{text}");

    // Drift: the veth deleted by hand (drift repair is off, so it stays deleted).
    w.host_ip_cmd(&["link", "del", &veth]);
    let o = w.berth(&["topology"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    let text = stdout(&o);
    assert!(
        text.contains(&format!("[MISSING: veth {veth} missing in the kernel]")),
        "{text}"
    );
    assert!(text.contains("drift (a reconcile pass would):"), "{text}");
    let dot = stdout(&w.berth(&["topology", "--format", "dot"]));
    assert!(dot.contains(&format!("\"veth:{veth}\" [label=")), "{dot}");
    assert!(dot.contains("color=red"), "{dot}");
    let mermaid = stdout(&w.berth(&["topology", "--format", "mermaid"]));
    assert!(
        mermaid.contains("class ") && mermaid.contains("MISSING"),
        "{mermaid}"
    );
    let svg = stdout(&w.berth(&["topology", "--format", "svg"]));
    assert!(svg.contains("<svg") && svg.contains("MISSING"), "{svg}");
}
