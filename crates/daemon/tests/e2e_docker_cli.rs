//! End-to-end: the stock docker CLI manages berthd's networks.

mod common;

use common::{code, show, stderr, World};

/// Proves: `DOCKER_HOST=unix://… docker network create/ls/ls -q --filter/inspect -f/connect
/// --ip --alias/disconnect -f/rm/prune --filter` work against berthd with docker's own output
/// conventions, including `network nosuch not found` and exit 1 for an unknown network; the
/// connect made through docker really carries packets.
#[test]
fn stock_docker_cli_manages_networks() {
    require_root!();
    let w = World::new();
    if !std::path::Path::new("/usr/local/bin/docker").exists()
        && common::sh("sh", &["-c", "command -v docker"])
            .status
            .success()
            .then_some(())
            .is_none()
    {
        panic!("the docker CLI is not installed");
    }

    let id = w
        .docker_ok(&[
            "network",
            "create",
            "--subnet",
            "10.11.0.0/24",
            "--label",
            "team=x",
            "n2",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "create should print the full id: {id:?}");

    let ls = w.docker_ok(&["network", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("n2")),
        "ls:\n{ls}"
    );
    assert!(ls.contains("NETWORK ID"), "ls header:\n{ls}");

    let q = w.docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=team=x",
        "--no-trunc",
    ]);
    assert_eq!(q.trim(), id, "ls -q --filter label=team=x --no-trunc");
    let q = w.docker_ok(&["network", "ls", "-q", "--filter", "label=team=y"]);
    assert_eq!(q.trim(), "", "filter on another label");

    let f = w.docker_ok(&["network", "inspect", "-f", "{{.Name}}/{{.Driver}}", "n2"]);
    assert_eq!(f.trim(), "n2/bridge");
    let f = w.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}} {{index .Labels \"team\"}}",
        "n2",
    ]);
    assert_eq!(f.trim(), "10.11.0.0/24 x");

    // connect/disconnect a berth container through docker.
    w.run_server("c", &[], 8080);
    w.run_d("peer", &["--network", "n2"], &["sleep", "120"]);
    w.wait_container_port("c", 8080);
    w.docker_ok(&[
        "network",
        "connect",
        "--ip",
        "10.11.0.9",
        "--alias",
        "web",
        "n2",
        "c",
    ]);
    let ep = &w.inspect("c")["NetworkSettings"]["Networks"]["n2"];
    assert_eq!(ep["IPAddress"].as_str(), Some("10.11.0.9"), "{ep}");
    assert!(ep["Aliases"].to_string().contains("web"), "alias web: {ep}");
    let f = w.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}};{{end}}",
        "n2",
    ]);
    assert!(
        f.contains("c 10.11.0.9/24"),
        "network inspect Containers: {f}"
    );
    w.assert_reaches("peer", "10.11.0.9", 8080);

    w.docker_ok(&["network", "disconnect", "-f", "n2", "c"]);
    assert!(w.inspect("c")["NetworkSettings"]["Networks"]
        .get("n2")
        .is_none());
    w.assert_blocked("peer", "10.11.0.9", 8080);

    w.berth_ok(&["rm", "-f", "peer"]);
    w.docker_ok(&["network", "rm", "n2"]);
    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!ls.lines().any(|l| l == "n2"), "n2 still listed:\n{ls}");

    let o = w.docker(&["network", "rm", "nosuch"]);
    assert_eq!(code(&o), 1, "rm nosuch: {}", show(&o));
    assert!(
        stderr(&o).contains("network nosuch not found"),
        "rm nosuch: {}",
        show(&o)
    );

    // prune with a label filter removes only the matching unused network.
    w.docker_ok(&["network", "create", "--label", "team=x", "n3"]);
    w.docker_ok(&["network", "create", "--label", "team=z", "n4"]);
    w.docker_ok(&["network", "create", "--label", "team=x", "n5"]);
    w.run_d("user5", &["--network", "n5"], &["sleep", "120"]);
    let out = w.docker_ok(&["network", "prune", "-f", "--filter", "label=team=x"]);
    assert!(out.contains("n3"), "prune output should list n3: {out}");
    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let names: Vec<&str> = ls.lines().collect();
    assert!(!names.contains(&"n3"), "n3 not pruned: {names:?}");
    assert!(names.contains(&"n4"), "n4 (other label) pruned: {names:?}");
    assert!(names.contains(&"n5"), "n5 (in use) pruned: {names:?}");
    for builtin in ["bridge", "host", "none"] {
        assert!(names.contains(&builtin), "{builtin} missing: {names:?}");
    }
}
