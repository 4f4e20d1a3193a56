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
