//! End-to-end: run-time `network connect/disconnect` with a static IP and an alias, and IPAM
//! under concurrent container starts.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{berth_bin, run_timeout, show, stdout, World};

/// Networks `back` (10.9.0.0/24) and `front` (10.1.0.0/24), a TCP server `srv` on port 8080
/// on `back`, and a client `cli` on `front`.
fn server_on_back_client_on_front() -> World {
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.berth_ok(&["network", "create", "--subnet", "10.1.0.0/24", "front"]);
    w.run_server("srv", &["--network", "back"], 8080);
    w.run_d("cli", &["--network", "front"], &["sleep", "120"]);
    w.wait_container_port("srv", 8080);
    w
}

/// Proves: `network connect --ip 10.1.0.50 --alias www` plumbs a second interface at run
/// time (reachable at .50 from another container; inspect shows the IP and alias) and
/// `network disconnect` removes it (no longer reachable; inspect no longer lists it) while the
/// container keeps running on its first network.
#[test]
fn connect_with_static_ip_then_disconnect() {
    require_root!();
    let w = server_on_back_client_on_front();
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

/// Proves: `berth`, the front, answers `network connect` and `disconnect` on its own (with
/// berth-cli made unreachable, `BERTH_CLI` pointing nowhere): the container gets its address
/// and alias and is reached there with real packets, a refused call prints berthd's reason,
/// and after the disconnect the address is unreachable again.
#[test]
fn the_front_alone_connects_and_disconnects() {
    require_root!();
    let w = server_on_back_client_on_front();
    let front = |args: &[&str]| {
        let mut c = std::process::Command::new(berth_bin());
        c.arg("-H").arg(w.host_url()).args(args);
        c.env_remove("BERTH_HOST")
            .env("BERTH_CLI", "/nonexistent/berth-cli");
        run_timeout(c, Duration::from_secs(60))
    };
    w.assert_blocked("cli", "10.1.0.60", 8080);
    let o = front(&[
        "network",
        "connect",
        "--ip",
        "10.1.0.60",
        "--alias",
        "web2",
        "front",
        "srv",
    ]);
    assert!(
        o.status.success(),
        "connect through the front: {}",
        show(&o)
    );
    assert_eq!(
        w.inspect("srv")["NetworkSettings"]["Networks"]["front"]["IPAddress"].as_str(),
        Some("10.1.0.60")
    );
    let reply = w.assert_reaches("cli", "10.1.0.60", 8080);
    assert_eq!(reply.trim(), w.ip_of("cli", "front"));
    let o = front(&["network", "connect", "nosuchnet", "srv"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("Error response from daemon: ") && err.contains("nosuchnet"),
        "{err}"
    );
    let o = front(&["network", "disconnect", "-f", "front", "srv"]);
    assert!(
        o.status.success(),
        "disconnect through the front: {}",
        show(&o)
    );
    w.assert_blocked("cli", "10.1.0.60", 8080);
    // Anything else needs berth-cli, which is not there: the front says so.
    let o = front(&["network", "ls"]);
    assert_eq!(o.status.code(), Some(127), "{}", show(&o));
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

/// A packet capture for [`new_endpoints_announce_themselves`]: every ARP frame and every
/// ICMPv6 neighbour advertisement seen on any interface of the namespace it runs in, one line
/// each (`arp SHA SPA TPA`, `na SRC-MAC TARGET`), bounded in time.
const ANNOUNCE_CAPTURE_PY: &str = r#"
import socket, struct, sys, time
out, secs = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.1)
f = open(out, "a", buffering=1)
f.write("READY\n")
end = time.time() + secs
while time.time() < end:
    try:
        fr = s.recv(2048)
    except socket.timeout:
        continue
    et = struct.unpack("!H", fr[12:14])[0]
    if et == 0x0806 and len(fr) >= 42:
        f.write("arp %s %s %s\n" % (fr[22:28].hex(":"), socket.inet_ntoa(fr[28:32]),
                                   socket.inet_ntoa(fr[38:42])))
    elif et == 0x86DD and len(fr) >= 78 and fr[20] == 58 and fr[54] == 136:
        f.write("na %s %s\n" % (fr[6:12].hex(":"), socket.inet_ntop(socket.AF_INET6, fr[62:78])))
"#;

/// Starts [`ANNOUNCE_CAPTURE_PY`] in namespace `ns` for 60 s, writing to `capture-TAG.txt` in
/// the world's directory; returns that file once the capture runs.
fn start_capture(w: &World, ns: &str, tag: &str) -> std::path::PathBuf {
    let script = w.dir.join("announce_capture.py");
    std::fs::write(&script, ANNOUNCE_CAPTURE_PY).expect("write capture helper");
    let out = w.dir.join(format!("capture-{tag}.txt"));
    let _ = std::fs::remove_file(&out);
    let (script, shown) = (script.display().to_string(), out.display().to_string());
    w.spawn_in(ns, &["python3", &script, &shown, "60"]);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&out).is_ok_and(|s| s.contains("READY")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "capture did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

/// Proves: a new container's interface announces itself the moment it comes up, before any
/// traffic to it, whenever a neighbour may hold another MAC for one of its addresses: a
/// gratuitous ARP for an IPv4 address when the container has a MAC of its own
/// (`--mac-address`) or the address's previous holder had one (that neighbour's entry then
/// holds the new MAC, and the next holder with the derived MAC is quiet again), an unsolicited
/// NA for every IPv6 address (dual-stack network), and the same on a macvlan network, seen by
/// a neighbour on the LAN. A container with the MAC derived from a fresh IPv4 address sends
/// nothing (no neighbour can have it wrong; the broadcast would reach every port of the
/// bridge), yet right after `run` returns the bridge's forwarding database holds its MAC on its
/// veth (a static entry, not a permanent one, which would be the bridge's own address), so the
/// first frame for it is not flooded.
#[test]
fn new_endpoints_announce_themselves() {
    require_root!();
    let w = World::new();
    // An IPv4-only and a dual-stack bridge network, and a macvlan network on the host's
    // uplink, in the upper half of the LAN's /24.
    let lan = format!("198.18.{}", w.n);
    let creates: [&[&str]; 3] = [
        &["--subnet", "10.31.0.0/24", "ann4"],
        &[
            "--ipv6",
            "--subnet",
            "10.32.0.0/24",
            "--subnet",
            "fd00:32::/64",
            "ann6",
        ],
        &[
            "-d",
            "macvlan",
            "--subnet",
            &format!("{lan}.0/24"),
            "--ip-range",
            &format!("{lan}.128/25"),
            "-o",
            "parent=uplink",
            "annmv",
        ],
    ];
    for args in creates {
        w.berth_ok(&[&["network", "create"], args].concat());
    }
    let capture = |ns: &str, tag: &str| start_capture(&w, ns, tag);
    // Waits (≤ 1 s: the announcement is sent as the link comes up, inside `run`) for `want`.
    let seen = |out: &std::path::Path, want: &str| {
        let start = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            if text.lines().any(|l| l == want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "no `{want}` within 1 s of `run` returning; captured:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let net_of = |ctr: &str, net: &str, key: &str| {
        w.inspect(ctr)["NetworkSettings"]["Networks"][net][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // `run -d` on `net` with `extra` flags; the container's MAC and IPv4 address there.
    let start_with = |name: &str, net: &str, extra: &[&str]| {
        w.berth_ok(
            &[
                &["run", "-d", "--name", name, "--network", net][..],
                extra,
                &["sleep", "600"],
            ]
            .concat(),
        );
        (
            net_of(name, net, "MacAddress"),
            net_of(name, net, "IPAddress"),
        )
    };
    let start = |name: &str, net: &str| start_with(name, net, &[]);
    // Nothing of `what` in the capture 300 ms after `run` returned (an announcement is sent
    // inside `run`, as the link comes up).
    let quiet = |out: &std::path::Path, what: &str| {
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(out).unwrap_or_default();
        assert!(
            !text.lines().any(|l| l.contains(what)),
            "`{what}` was announced; captured:\n{text}"
        );
    };

    // Bridge network, IPv4 only, the MAC derived from a fresh address: no broadcast, and the
    // bridge knows the MAC on the container's port all the same.
    let host_cap = capture(&w.host_ns, "host");
    let (mac, ip) = start("a4", "ann4");
    assert_eq!(mac, mac_of(&ip), "a4's MAC is not derived from {ip}");
    quiet(&host_cap, &format!("arp {mac} {ip}"));
    let bridge = w.bridge_of("ann4");
    let veth = w.host_veth_of("a4", "ann4");
    let fdb = w.ns_exec_ok(&w.host_ns, &["bridge", "fdb", "show", "br", &bridge]);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&format!("{mac} dev {veth}")) && !l.contains("permanent")),
        "bridge {bridge} does not know {mac} on {veth} right after start:\n{fdb}"
    );

    // A MAC of its own: a gratuitous ARP request (sender = target = its address).
    let own = "02:00:00:31:00:aa";
    let (mac, ip) = start_with("m4", "ann4", &["--mac-address", own, "--ip", "10.31.0.50"]);
    assert_eq!(mac, own);
    seen(&host_cap, &format!("arp {mac} {ip} {ip}"));
    // A neighbour (the container a4) caches that MAC for the address.
    let a4 = w.pid("a4");
    let o = w.pid_net_exec(a4, &["ping", "-c", "1", "-W", "2", &ip]);
    assert!(o.status.success(), "a4 → m4: {}", show(&o));
    let neigh = |pid: i64| stdout(&w.pid_net_exec(pid, &["ip", "neigh", "show", &ip]));
    assert!(
        neigh(a4).contains(own),
        "a4's neighbour entry: {}",
        neigh(a4)
    );
    // The address's next holder has the derived MAC: it announces, and a4's entry follows.
    w.berth_ok(&["rm", "-f", "m4"]);
    let (mac, ip2) = start_with("r4", "ann4", &["--ip", "10.31.0.50"]);
    assert_eq!(
        (mac.as_str(), ip2.as_str()),
        (mac_of(&ip).as_str(), ip.as_str())
    );
    seen(&host_cap, &format!("arp {mac} {ip} {ip}"));
    let start_t = std::time::Instant::now();
    while !neigh(a4).contains(&mac) {
        assert!(
            start_t.elapsed() < Duration::from_secs(1),
            "a4 still holds {:?} for {ip} after r4's announcement",
            neigh(a4)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The holder after that has the MAC every neighbour has now: quiet again.
    w.berth_ok(&["rm", "-f", "r4"]);
    let before = std::fs::read_to_string(&host_cap).unwrap_or_default();
    let (mac, _) = start_with("q4", "ann4", &["--ip", "10.31.0.50"]);
    std::thread::sleep(Duration::from_millis(300));
    let after = std::fs::read_to_string(&host_cap).unwrap_or_default();
    let announced = after
        .lines()
        .skip(before.lines().count())
        .filter(|l| l.starts_with(&format!("arp {mac} ")))
        .count();
    assert_eq!(announced, 0, "q4 announced itself; captured:\n{after}");

    // Dual stack: an unsolicited NA for its IPv6 address; its IPv4 address (the MAC is derived
    // from it) is not announced.
    let (mac, ip) = start("a6", "ann6");
    let ip6 = net_of("a6", "ann6", "GlobalIPv6Address");
    assert!(!ip6.is_empty(), "a6 has no IPv6 address");
    seen(&host_cap, &format!("na {mac} {ip6}"));
    quiet(&host_cap, &format!("arp {mac} {ip}"));

    // macvlan: the LAN's neighbour (the outside namespace) hears it.
    let lan_cap = capture(&w.out_ns, "lan");
    let (mac, ip) = start("am", "annmv");
    seen(&lan_cap, &format!("arp {mac} {ip} {ip}"));
}

/// The MAC berth derives from IPv4 address `ip` (`02:42:` + its four bytes), as inspect
/// shows it.
fn mac_of(ip: &str) -> String {
    let v4: std::net::Ipv4Addr = ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    let o = v4.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Proves: an interface (with a MAC of its own) the reconciler configures again — its address deleted inside the
/// container, put back by the repair (`ConfigureContainerSide`, the path of a reconnect and of
/// a repair) — announces itself as a new one does: the gratuitous ARP for the address reaches
/// the host's namespace within 3 s of the deletion. Before, the address came back in
/// silence.
#[test]
fn reconfigured_endpoints_announce_themselves() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.34.0.0/24", "reann"]);
    // A MAC of its own, so its address is one a neighbour may have wrong (the derived MAC is
    // announced by no one, see `new_endpoints_announce_themselves`).
    w.run_d(
        "r4",
        &["--network", "reann", "--mac-address", "02:00:00:34:00:aa"],
        &["sleep", "600"],
    );
    let net = &w.inspect("r4")["NetworkSettings"]["Networks"]["reann"];
    let mac = net["MacAddress"].as_str().unwrap_or_default().to_string();
    let ip = net["IPAddress"].as_str().unwrap_or_default().to_string();
    assert!(!mac.is_empty() && !ip.is_empty(), "{net}");
    let pid = w.pid("r4");

    let out = start_capture(&w, &w.host_ns, "reconfigure");
    let o = w.pid_net_exec(
        pid,
        &["ip", "addr", "del", &format!("{ip}/24"), "dev", "eth0"],
    );
    assert!(o.status.success(), "ip addr del: {}", show(&o));
    let want = format!("arp {mac} {ip} {ip}");
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().any(|l| l == want) {
            break;
        }
        let back = stdout(&w.pid_net_exec(pid, &["ip", "-4", "-o", "addr", "show", "eth0"]));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "no `{want}` within 3 s of deleting the address (back on eth0: {}); \
             captured:\n{text}",
            back.contains(&ip)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
