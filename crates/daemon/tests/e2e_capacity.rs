//! Capacity before it runs out: `/info`'s `Capacity`, `berth info` and `/metrics` count bridge
//! ports (running containers) and addresses (every container), and warn at 90 %.

mod common;

use common::{show, World};

#[test]
fn bridge_ports_and_addresses_are_reported_and_warned_about() {
    require_root!();
    let w = World::new();
    // A /29: 8 addresses − network, gateway, broadcast = 5 for containers.
    w.berth_ok(&["network", "create", "--subnet", "10.209.0.0/29", "small"]);
    w.berth_ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--network",
        "small",
        "sleep",
        "600",
    ]);
    w.berth_ok(&["create", "--name", "c1", "--network", "small", "true"]);

    let (status, body) = w.api("GET", "/info", None);
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("info json");
    let cap = &info["Capacity"];
    assert_eq!(cap["BridgeMaxPorts"], 1023, "{cap}");
    let small = cap["Networks"]
        .as_array()
        .expect("networks")
        .iter()
        .find(|n| n["Network"] == "small")
        .unwrap_or_else(|| panic!("no network small in {cap}"));
    assert_eq!(
        small["BridgePorts"], 1,
        "only the running container: {small}"
    );
    assert_eq!(
        small["Subnets"][0]["Used"], 2,
        "both hold an address: {small}"
    );
    assert_eq!(small["Subnets"][0]["Usable"], 5, "{small}");
    assert!(
        !body.contains("addresses of 10.209.0.0/29 are taken"),
        "no warning at 2 of 5: {body}"
    );

    let (status, metrics) = w.api("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("berth_bridge_ports{network=\"small\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "berth_ipam_addresses_usable{network=\"small\",subnet=\"10.209.0.0/29\"} 5\n"
        ),
        "{metrics}"
    );

    // 5 of 5: the docker-style warning on stderr, and the summary line.
    for n in ["c2", "c3", "c4"] {
        w.berth_ok(&["create", "--name", n, "--network", "small", "true"]);
    }
    let out = w.berth(&["info"]);
    assert!(out.status.success(), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "WARNING: network \"small\": 5 of the 5 addresses of 10.209.0.0/29 are taken"
        ),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  small (bridge): 1/1023 bridge ports, 10.209.0.0/29 5/5 addresses"),
        "{stdout}"
    );
    // The sixth is refused by IPAM, as before; the report was there first.
    let o = w.berth(&["create", "--name", "c5", "--network", "small", "true"]);
    assert!(!o.status.success(), "{}", show(&o));
}
