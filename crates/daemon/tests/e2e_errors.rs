//! End-to-end: bad input is refused with a clear message, a non-zero exit, and no change.

mod common;

use std::process::Output;

use common::{show, stderr, World};

struct Baseline {
    ls: String,
    ps: Vec<String>,
    links: Vec<String>,
}

fn baseline(w: &World) -> Baseline {
    let mut ps = w.container_ids();
    ps.sort();
    let mut links = w.host_links();
    links.sort();
    Baseline {
        ls: w.network_ls(),
        ps,
        links,
    }
}

/// Asserts `o` failed, its stderr mentions every one of `needles` (case-insensitive), and
/// nothing changed (network ls, containers, host links).
fn refused(w: &World, base: &Baseline, what: &str, o: &Output, needles: &[&str]) {
    assert!(
        !o.status.success(),
        "{what}: should fail but succeeded: {}",
        show(o)
    );
    eprintln!("{what}: exit {} {}", common::code(o), stderr(o).trim());
    let err = stderr(o).to_lowercase();
    assert!(!err.trim().is_empty(), "{what}: no message: {}", show(o));
    for n in needles {
        assert!(
            err.contains(&n.to_lowercase()),
            "{what}: message should mention {n:?}: {}",
            show(o)
        );
    }
    let now = baseline(w);
    assert_eq!(base.ls, now.ls, "{what}: network ls changed");
    assert_eq!(base.ps, now.ps, "{what}: containers changed");
    assert_eq!(base.links, now.links, "{what}: host links changed");
}

/// Proves: bad CIDR, gateway outside the subnet, overlapping subnets (naming the other
/// network), duplicate names, unknown networks, removing a network in use, over-long names,
/// bad characters, `--ip` outside the subnet and `--ip` already taken are each refused with a
/// clear message and a non-zero exit, and leave networks, containers and links unchanged.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.10.0.0/24", "alpha"]);
    w.run_d("busy", &["--network", "alpha"], &["sleep", "120"]);
    let busy_ip = w.ip_of("busy", "alpha");
    let base = baseline(&w);

    let o = w.berth(&["network", "create", "--subnet", "10.20.0.0/33", "bad1"]);
    refused(&w, &base, "bad CIDR /33", &o, &["10.20.0.0/33"]);
    let o = w.berth(&["network", "create", "--subnet", "banana", "bad1"]);
    refused(&w, &base, "bad CIDR banana", &o, &["banana"]);

    let o = w.berth(&[
        "network",
        "create",
        "--subnet",
        "10.20.0.0/24",
        "--gateway",
        "10.21.0.1",
        "bad2",
    ]);
    refused(&w, &base, "gateway outside subnet", &o, &["10.21.0.1"]);

    let o = w.berth(&["network", "create", "--subnet", "10.10.0.128/25", "bad3"]);
    refused(&w, &base, "overlapping subnet", &o, &["alpha"]);
    let o = w.berth(&["network", "create", "--subnet", "10.0.0.0/8", "bad3"]);
    refused(&w, &base, "overlapping supernet", &o, &["alpha"]);

    let o = w.berth(&["network", "create", "--subnet", "10.30.0.0/24", "alpha"]);
    refused(&w, &base, "duplicate name", &o, &["alpha", "exists"]);

    let o = w.berth(&["run", "-d", "--network", "nosuchnet", "sleep", "5"]);
    refused(
        &w,
        &base,
        "run on unknown network",
        &o,
        &["nosuchnet", "not found"],
    );
    let o = w.berth(&["network", "connect", "nosuchnet", "busy"]);
    refused(
        &w,
        &base,
        "connect to unknown network",
        &o,
        &["nosuchnet", "not found"],
    );
    let o = w.berth(&["network", "inspect", "nosuchnet"]);
    refused(&w, &base, "inspect unknown network", &o, &["nosuchnet"]);
    let o = w.berth(&["network", "rm", "nosuchnet"]);
    refused(
        &w,
        &base,
        "rm unknown network",
        &o,
        &["nosuchnet", "not found"],
    );

    let o = w.berth(&["network", "rm", "alpha"]);
    refused(&w, &base, "rm network in use", &o, &["alpha"]);
    let e = stderr(&o).to_lowercase();
    assert!(
        e.contains("active endpoint") || e.contains("in use"),
        "rm in use: message should say it has active endpoints / is in use: {}",
        show(&o)
    );

    // Network names follow dockerd (anything but blank or predefined); berth adds a length
    // limit and no control characters.
    let long = "n".repeat(256);
    let o = w.berth(&["network", "create", "--subnet", "10.40.0.0/24", &long]);
    refused(&w, &base, "256-byte name", &o, &["255"]);
    for bad in ["", "  ", "a\nb", "default", "bridge"] {
        let o = w.berth(&["network", "create", "--subnet", "10.41.0.0/24", "--", bad]);
        refused(&w, &base, &format!("bad name {bad:?}"), &o, &[]);
    }
    let o = w.berth(&[
        "run",
        "-d",
        "--name",
        "bad/name",
        "--network",
        "alpha",
        "sleep",
        "5",
    ]);
    refused(&w, &base, "bad container name", &o, &[]);

    let o = w.berth(&[
        "run",
        "-d",
        "--network",
        "alpha",
        "--ip",
        "10.99.0.5",
        "sleep",
        "5",
    ]);
    refused(&w, &base, "--ip outside subnet", &o, &["10.99.0.5"]);
    let o = w.berth(&[
        "run",
        "-d",
        "--network",
        "alpha",
        "--ip",
        &busy_ip,
        "sleep",
        "5",
    ]);
    refused(&w, &base, "--ip already taken", &o, &[&busy_ip]);
    let o = w.berth(&[
        "run",
        "-d",
        "--network",
        "alpha",
        "--ip",
        "10.10.0.1",
        "sleep",
        "5",
    ]);
    refused(&w, &base, "--ip = gateway", &o, &["10.10.0.1"]);

    // Connect-time variants on a second network.
    w.berth_ok(&["network", "create", "--subnet", "10.50.0.0/24", "beta"]);
    w.run_d(
        "b2",
        &["--network", "beta", "--ip", "10.50.0.7"],
        &["sleep", "120"],
    );
    let base = baseline(&w);
    let o = w.berth(&["network", "connect", "--ip", "10.50.0.7", "beta", "busy"]);
    refused(&w, &base, "connect --ip taken", &o, &["10.50.0.7"]);
    let o = w.berth(&["network", "connect", "--ip", "10.51.0.7", "beta", "busy"]);
    refused(&w, &base, "connect --ip outside subnet", &o, &["10.51.0.7"]);
    let v = w.inspect("busy");
    assert!(
        v["NetworkSettings"]["Networks"].get("beta").is_none(),
        "busy got connected: {v}"
    );
    let o = w.berth(&["network", "connect", "alpha", "busy"]);
    refused(&w, &base, "connect twice", &o, &["alpha"]);

    // The daemon is still healthy after all that.
    w.berth_ok(&["network", "create", "--subnet", "10.60.0.0/24", "fine"]);
    w.berth_ok(&["network", "rm", "fine"]);
}

/// Proves an over-long request body is refused with 413 and a JSON message that names the
/// limit and why (not axum's bare "length limit exceeded"), and that a body just under the
/// limit is read (and refused for what it says, not for its size); nothing is created.
#[test]
fn an_oversized_body_names_the_limit() {
    require_root!();
    let w = World::new();
    let post = |bytes: usize| -> (u16, String) {
        let name = "x".repeat(bytes.saturating_sub(40));
        let body = format!(r#"{{"Name":"big","Labels":{{"l":"{name}"}}}}"#);
        let file = w.dir.join("body.json");
        std::fs::write(&file, body).expect("write body");
        let data = format!("@{}", file.display());
        w.api_data("POST", "/networks/create", Some(("--data-binary", &data)))
    };
    let (status, text) = post(9 * 1024 * 1024);
    assert_eq!(status, 413, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON error");
    let m = v["message"].as_str().unwrap_or("");
    assert!(
        m.contains("larger than 8 MiB") && m.contains("limit for one API request"),
        "{m}"
    );
    let (status, text) = post(7 * 1024 * 1024);
    assert_eq!(status, 201, "a 7 MiB body is read: {text}");
    w.berth_ok(&["network", "rm", "big"]);
}

/// Proves bad endpoint `Links` and `LinkLocalIPs` are refused with a clear 400 naming them, on
/// connect and on container create (which then stores nothing): moby's link format errors, a
/// newline in an alias, an address that is not link-local (berth: it would bypass
/// anti-spoofing) or not an address; empty lists are fine.
#[test]
fn bad_links_and_link_local_ips_are_refused() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.33.0.0/24", "lk"]);
    w.run_d("peer", &[], &["sleep", "120"]);
    for (body, want) in [
        (
            r#"{"Container":"peer","EndpointConfig":{"Links":["a:b:c"]}}"#,
            "bad format for links",
        ),
        (
            r#"{"Container":"peer","EndpointConfig":{"Links":[""]}}"#,
            "empty string specified for links",
        ),
        (
            r#"{"Container":"peer","EndpointConfig":{"Links":["db:d\nb"]}}"#,
            "invalid alias",
        ),
        (
            r#"{"Container":"peer","EndpointConfig":{"IPAMConfig":{"LinkLocalIPs":["10.33.0.9"]}}}"#,
            "invalid link-local IP address: 10.33.0.9 is not in 169.254.0.0/16",
        ),
        (
            r#"{"Container":"peer","EndpointConfig":{"IPAMConfig":{"LinkLocalIPs":["nope"]}}}"#,
            "invalid link-local IP address: nope",
        ),
    ] {
        let (status, reply) = w.api("POST", "/networks/lk/connect", Some(body));
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains(want), "{reply}");
    }
    let body = r#"{"Cmd":["sleep","60"],"HostConfig":{"NetworkMode":"lk"},
        "NetworkingConfig":{"EndpointsConfig":{"lk":{"Links":["peer:p:q"]}}}}"#;
    let (status, reply) = w.api("POST", "/containers/create?name=linked", Some(body));
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("bad format for links"), "{reply}");
    let ps = w.berth_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("linked"), "{ps}");
    let (status, reply) = w.api(
        "POST",
        "/networks/lk/connect",
        Some(r#"{"Container":"peer","EndpointConfig":{"Links":[],"IPAMConfig":{"LinkLocalIPs":[]}}}"#),
    );
    assert_eq!(status, 200, "empty lists are fine: {reply}");
}
