//! End-to-end: Docker's link-local endpoint addresses (`--link-local-ip`) and legacy links
//! (`--link`) on the default bridge, with real packets and the files and environment inside
//! the containers. Links on user-defined networks (a DNS matter) are in `e2e_dns.rs`.

mod common;

use common::{show, World};

/// Proves `--link-local-ip` as dockerd: `run --link-local-ip` and `network connect
/// --link-local-ip` put the address on the container's interface next to its IPAM address
/// (/16 as moby), inspect returns it in `IPAMConfig.LinkLocalIPs`, two containers on the
/// network talk over those addresses (TCP; the server sees the client's link-local address, so
/// anti-spoofing lets it through), a second container cannot take an address another one on
/// the network holds (409), an address that is not link-local is refused (400), an IPv6 one on
/// an IPv4-only network is set too, and berth stays in sync (no repair loop).
#[test]
fn link_local_ips_carry_traffic() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.71.0.0/24", "ll"]);
    let cli = "--network ll --link-local-ip 169.254.10.3 --link-local-ip fe80::10:3";
    w.run_d(
        "cli",
        &cli.split(' ').collect::<Vec<_>>(),
        &["sleep", "120"],
    );
    w.run_server(
        "srv",
        &["--network", "ll", "--link-local-ip", "169.254.10.2"],
        8080,
    );
    w.wait_container_port("srv", 8080);
    let addrs = w.exec_ok("srv", &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet 169.254.10.2/16"), "{addrs}");
    assert!(
        addrs.contains(&format!("inet {}/24", w.ip_of("srv", "ll"))),
        "{addrs}"
    );
    let addrs = w.exec_ok("cli", &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("inet6 fe80::10:3/64"), "{addrs}");
    assert_eq!(
        w.inspect("srv")["NetworkSettings"]["Networks"]["ll"]["IPAMConfig"]["LinkLocalIPs"],
        serde_json::json!(["169.254.10.2"])
    );
    let reply = w.assert_reaches("cli", "169.254.10.2", 8080);
    assert!(reply.contains("169.254.10.3"), "the server saw: {reply}");

    // At connect, on a container started on another network.
    w.berth_ok(&["network", "create", "--subnet", "10.72.0.0/24", "side"]);
    w.run_d("late", &["--network", "side"], &["sleep", "120"]);
    w.berth_ok(&[
        "network",
        "connect",
        "--link-local-ip",
        "169.254.10.4",
        "ll",
        "late",
    ]);
    let reply = w.assert_reaches("late", "169.254.10.2", 8080);
    assert!(reply.contains("169.254.10.4"), "the server saw: {reply}");

    // Taken on this network, or not link-local: refused, nothing created.
    for (addr, want) in [
        ("169.254.10.2", "169.254.10.2 is already in use on network"),
        (
            "10.71.0.9",
            "invalid link-local IP address: 10.71.0.9 is not in 169.254.0.0/16",
        ),
    ] {
        let args = "run -d --name dup --network ll --link-local-ip";
        let mut args: Vec<&str> = args.split(' ').collect();
        args.extend([addr, "sleep", "60"]);
        let o = w.berth(&args);
        assert!(
            !o.status.success() && show(&o).contains(want),
            "{}",
            show(&o)
        );
    }
    let names = w.berth_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!names.contains("dup"), "{names}");
    w.assert_in_sync("link-local addresses");
}

/// Proves `berth run --link NAME:ALIAS` as dockerd on the default bridge: the linking
/// container's `/etc/hosts` names the linked one (alias, hostname, name) and a TCP connection to
/// the alias reaches it; its environment has Docker's `ALIAS_NAME`, `ALIAS_PORT…` (from the
/// published port) and `ALIAS_ENV_…` variables (its own `-e` wins); inspect's
/// `HostConfig.Links` is moby's `/CHILD:/PARENT/ALIAS`; a start with the linked container
/// stopped fails with moby's words; an unknown container or `--network host` is refused; on a
/// user-defined network `--link` is the endpoint's link (the alias resolves there).
#[test]
fn legacy_links_on_the_default_bridge() {
    require_root!();
    let w = World::new();
    w.run_server("db", &["-e", "PASSWORD=s3cret", "-p", "8080"], 8080);
    w.wait_container_port("db", 8080);
    let db_ip = w.ip_of("db", "bridge");
    w.run_d(
        "app",
        &["--link", "db:data", "-e", "DATA_ENV_PASSWORD=mine"],
        &["sleep", "120"],
    );
    let hosts = w.exec_ok("app", &["cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{db_ip}\tdata db db\n")), "{hosts}");
    let reply = w.assert_reaches("app", "data", 8080);
    assert!(reply.contains(&w.ip_of("app", "bridge")), "{reply}");
    let env = w.exec_ok("app", &["env"]);
    for want in [
        "DATA_NAME=/app/data".to_string(),
        format!("DATA_PORT=tcp://{db_ip}:8080"),
        format!("DATA_PORT_8080_TCP_ADDR={db_ip}"),
        "DATA_PORT_8080_TCP_PROTO=tcp".to_string(),
        "DATA_ENV_PASSWORD=mine".to_string(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    assert!(!env.contains("DATA_ENV_PASSWORD=s3cret"), "{env}");
    assert_eq!(
        w.inspect("app")["HostConfig"]["Links"],
        serde_json::json!(["/db:/app/data"])
    );

    // The linked container stopped: the linking one cannot start.
    w.berth_ok(&["stop", "-t", "1", "app"]);
    w.berth_ok(&["stop", "-t", "1", "db"]);
    let o = w.berth(&["start", "app"]);
    assert!(
        !o.status.success()
            && show(&o).contains("Cannot link to a non running container: /db AS /app/data"),
        "{}",
        show(&o)
    );
    for (opts, want) in [
        (["--link", "nope:x"], "could not get container for nope"),
        (
            ["--network", "host"],
            "host type networking can't be used with links",
        ),
    ] {
        let mut args = vec!["run", "-d", "--link", "db"];
        args.extend(opts);
        args.extend(["sleep", "60"]);
        let o = w.berth(&args);
        assert!(
            !o.status.success() && show(&o).contains(want),
            "{}",
            show(&o)
        );
    }

    // On a user-defined network: the endpoint's link, answered by berth's resolver.
    w.berth_ok(&["network", "create", "--subnet", "10.73.0.0/24", "ud"]);
    w.run_d("db2", &["--network", "ud"], &["sleep", "120"]);
    w.run_d(
        "app2",
        &["--network", "ud", "--link", "db2:store"],
        &["sleep", "120"],
    );
    let got = w.exec_ok("app2", &["getent", "ahostsv4", "store"]);
    assert!(got.contains(&w.ip_of("db2", "ud")), "{got}");
    assert_eq!(
        w.inspect("app2")["NetworkSettings"]["Networks"]["ud"]["Links"],
        serde_json::json!(["db2:store"])
    );
}
