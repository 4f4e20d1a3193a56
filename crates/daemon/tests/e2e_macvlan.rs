//! End-to-end: macvlan networks, containers directly on the host's LAN (issue 12).
//!
//! Besides the [`World`] (berthd's "host" namespace), every test builds a LAN:
//! * `<p>l`, the "LAN" namespace: a Linux bridge `br0` holding the LAN's router address
//!   192.168.77.1/24 (the macvlan network's gateway);
//! * `<p>m`, a "LAN machine" at 192.168.77.10/24, a port of that bridge;
//! * `lan0` in berthd's namespace, the host's NIC on the LAN (192.168.77.2/24), a port of the
//!   bridge too: the macvlan networks' parent.
//!
//! The LAN namespaces are removed on drop (also while unwinding). Traffic only goes to
//! addresses inside these namespaces; every wait is bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{code, sh, sh_ok, show, stderr, stdout, World};

const ROUTER: &str = "192.168.77.1";
const MACHINE: &str = "192.168.77.10";

/// The LAN of a world (see the module doc).
struct Lan {
    ns: String,
    machine: String,
}

impl Lan {
    fn new(w: &World) -> Lan {
        let lan = Lan {
            ns: format!("{}l", w.prefix),
            machine: format!("{}m", w.prefix),
        };
        // From here on, Drop removes whatever was made.
        sh_ok("ip", &["netns", "add", &lan.ns]);
        sh_ok("ip", &["netns", "add", &lan.machine]);
        let (l, m, h) = (lan.ns.as_str(), lan.machine.as_str(), w.host_ns.as_str());
        for ns in [l, m] {
            sh_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        sh_ok("ip", &["-n", l, "link", "add", "br0", "type", "bridge"]);
        sh_ok(
            "ip",
            &[
                "-n",
                l,
                "addr",
                "add",
                &format!("{ROUTER}/24"),
                "dev",
                "br0",
            ],
        );
        sh_ok("ip", &["-n", l, "link", "set", "br0", "up"]);
        // The host's NIC on the LAN: lan0 in berthd's namespace, port p-host of br0.
        sh_ok(
            "ip",
            &[
                "-n", l, "link", "add", "p-host", "type", "veth", "peer", "name", "lan0", "netns",
                h,
            ],
        );
        // The LAN machine: m0, port p-mach of br0.
        sh_ok(
            "ip",
            &[
                "-n", l, "link", "add", "p-mach", "type", "veth", "peer", "name", "m0", "netns", m,
            ],
        );
        for port in ["p-host", "p-mach"] {
            sh_ok("ip", &["-n", l, "link", "set", port, "master", "br0"]);
            sh_ok("ip", &["-n", l, "link", "set", port, "up"]);
        }
        sh_ok(
            "ip",
            &["-n", h, "addr", "add", "192.168.77.2/24", "dev", "lan0"],
        );
        sh_ok("ip", &["-n", h, "link", "set", "lan0", "up"]);
        sh_ok(
            "ip",
            &[
                "-n",
                m,
                "addr",
                "add",
                &format!("{MACHINE}/24"),
                "dev",
                "m0",
            ],
        );
        sh_ok("ip", &["-n", m, "link", "set", "m0", "up"]);
        sh_ok("ip", &["-n", m, "route", "add", "default", "via", ROUTER]);
        lan
    }
}

impl Lan {
    /// Another NIC of the host on the LAN: `name` in berthd's namespace, a port of br0, up,
    /// without an address.
    fn add_host_port(&self, w: &World, name: &str) {
        let port = format!("p-{name}");
        sh_ok(
            "ip",
            &[
                "-n", &self.ns, "link", "add", &port, "type", "veth", "peer", "name", name,
                "netns", &w.host_ns,
            ],
        );
        sh_ok(
            "ip",
            &["-n", &self.ns, "link", "set", &port, "master", "br0"],
        );
        sh_ok("ip", &["-n", &self.ns, "link", "set", &port, "up"]);
        sh_ok("ip", &["-n", &w.host_ns, "link", "set", name, "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in [&self.ns, &self.machine] {
            if Path::new("/run/netns").join(ns).exists() {
                let o = sh("ip", &["netns", "del", ns]);
                if !o.status.success() {
                    eprintln!("[harness] ip netns del {ns}: {}", show(&o));
                }
            }
        }
    }
}

/// `berth network create -d macvlan` on lan0 with the LAN's subnet, router and a range.
fn create_lan(w: &World, name: &str, extra: &[&str]) {
    let mut a = vec![
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        ROUTER,
        "--ip-range",
        "192.168.77.192/27",
        "-o",
        "parent=lan0",
    ];
    a.extend_from_slice(extra);
    a.push(name);
    w.berth_ok(&a);
}

/// From the LAN machine: connect to addr:port and return the reply (the server's view of the
/// client's address), retrying for up to 10 s (ARP on a fresh LAN, a repair in progress).
fn machine_reaches(w: &World, lan: &Lan, addr: &str, port: u16) -> String {
    let start = Instant::now();
    loop {
        match w.tcp_from_ns(&lan.machine, addr, port, 2.0) {
            Ok(r) => return r.trim().to_string(),
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("the LAN machine should reach {addr}:{port} but: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// From the LAN machine: the connection must fail, and the probe must have run.
fn machine_blocked(w: &World, lan: &Lan, addr: &str, port: u16) {
    let o = w.ns_exec(
        &lan.machine,
        &[
            "python3",
            &w.helper("probe.py"),
            addr,
            &port.to_string(),
            "1.5",
        ],
    );
    assert!(
        !o.status.success(),
        "the LAN machine must NOT reach {addr}:{port}: {}",
        show(&o)
    );
    assert!(
        code(&o) == 1 && stderr(&o).contains(&format!("probe {addr}:{port} failed")),
        "the probe did not run properly: {}",
        show(&o)
    );
}

/// Waits (bounded by `secs`) until `berth system check` says the kernel is in sync.
fn wait_in_sync(w: &World, secs: u64) {
    let start = Instant::now();
    loop {
        let o = w.system_check(&[]);
        if o.status.success() && stdout(&o).contains("in sync") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "check after the repair: {}",
            show(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn mac_of(w: &World, container: &str, net: &str) -> String {
    w.inspect(container)["NetworkSettings"]["Networks"][net]["MacAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pid_of(w: &World, container: &str) -> i64 {
    w.inspect(container)["State"]["Pid"].as_i64().unwrap_or(0)
}

/// Proves: a LAN machine reaches a macvlan container directly at its own address and the
/// container sees the machine's real address (no NAT, no published port), and the reverse; two
/// containers on one bridge-mode network reach each other; each has the MAC berth planned
/// (unique, shown by inspect, seen by the LAN); inspect states the host limitation; a second
/// network on the same parent with an overlapping subnet is refused with 409.
#[test]
fn lan_reaches_macvlan_containers_directly() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &[]);
    w.run_server(
        "printer",
        &["--network", "lan", "--ip", "192.168.77.200"],
        8080,
    );
    w.run_server("scanner", &["--network", "lan"], 8080);
    w.wait_container_port("printer", 8080);
    w.wait_container_port("scanner", 8080);

    // LAN machine -> container: direct, and the container sees the machine's address.
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    // Container -> LAN machine: the machine sees the container's own address.
    w.spawn_in(
        &lan.machine,
        &["python3", &w.helper("peer_server.py"), "0.0.0.0", "9000"],
    );
    w.wait_port(&lan.machine, MACHINE, 9000);
    assert_eq!(
        w.assert_reaches("printer", MACHINE, 9000).trim(),
        "192.168.77.200"
    );
    // The container's default route is the LAN's router.
    let routes = w.exec_ok("printer", &["ip", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("via {ROUTER} dev eth0")),
        "{routes}"
    );

    // Two containers on the network (bridge mode) reach each other.
    let scanner_ip = w.ip_of("scanner", "lan");
    assert!(scanner_ip.starts_with("192.168.77.19") || scanner_ip.starts_with("192.168.77.2"));
    assert_eq!(
        w.assert_reaches("printer", &scanner_ip, 8080).trim(),
        "192.168.77.200"
    );
    assert_eq!(
        w.assert_reaches("scanner", "192.168.77.200", 8080).trim(),
        scanner_ip
    );

    // MACs: the planned ones, unique, on the link, and what the LAN learned.
    let mac = mac_of(&w, "printer", "lan");
    assert_eq!(mac, "02:42:c0:a8:4d:c8");
    assert_ne!(mac, mac_of(&w, "scanner", "lan"));
    let link = w.exec_ok("printer", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains(&mac), "{link}");
    assert!(link.contains("macvlan mode bridge"), "{link}");
    let neigh = w.ns_exec_ok(&lan.machine, &["ip", "neigh", "show", "192.168.77.200"]);
    assert!(
        neigh.contains(&mac),
        "the LAN machine's neighbour entry: {neigh}"
    );
    // Nothing of the container's exists in berthd's namespace; the parent is untouched.
    let host_links = w.host_links();
    assert!(
        !host_links.iter().any(|l| l.starts_with("vb")),
        "{host_links:?}"
    );

    // Inspect: the driver, the parent, and the host limitation.
    let v = w.network_inspect("lan");
    assert_eq!(v["Driver"], "macvlan", "{v}");
    assert_eq!(v["Options"]["parent"], "lan0", "{v}");
    assert!(
        v["BerthNotes"].to_string().contains("host_shim=true"),
        "{v}"
    );

    // Same parent, overlapping subnet: 409.
    let (status, body) = w.api(
        "POST",
        "/networks/create",
        Some(
            r#"{"Name":"lan2","Driver":"macvlan","Options":{"parent":"lan0"},
               "IPAM":{"Config":[{"Subnet":"192.168.77.128/25"}]}}"#,
        ),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("overlaps"), "{body}");

    // rm: the link goes with the namespace; the parent stays.
    w.berth_ok(&["rm", "-f", "printer", "scanner"]);
    w.berth_ok(&["network", "rm", "lan"]);
    let link = w.host_ip_cmd(&["link", "show", "lan0"]);
    assert!(link.contains("UP"), "{link}");
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "{}",
        show(&o)
    );
}

/// Proves: in `private` mode two containers on the same network cannot talk (the probe ran
/// and failed) while the LAN machine reaches both.
#[test]
fn private_mode_isolates_containers() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &["-o", "macvlan_mode=private"]);
    w.run_server("a", &["--network", "lan", "--ip", "192.168.77.200"], 8080);
    w.run_server("b", &["--network", "lan", "--ip", "192.168.77.201"], 8080);
    w.wait_container_port("a", 8080);
    w.wait_container_port("b", 8080);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.201", 8080), MACHINE);
    let link = w.exec_ok("a", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains("macvlan mode private"), "{link}");
    w.assert_blocked("a", "192.168.77.201", 8080);
    w.assert_blocked("b", "192.168.77.200", 8080);
}

/// Proves: `network connect` gives a running container a macvlan interface at run time
/// (reachable from the LAN at its static address) and `disconnect` removes it (not reachable,
/// gone from the namespace) while the container keeps its bridge network; berthd killed with
/// SIGKILL and restarted keeps macvlan containers reachable and `system check` in sync; a
/// deleted macvlan link (drift) is recreated with its address, MAC and default route, also
/// when it is deleted the moment a restarted berthd answers (notification, not timer).
#[test]
fn connect_disconnect_restart_and_drift() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &[]);
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.run_server("app", &["--network", "back"], 8080);
    w.wait_container_port("app", 8080);
    machine_blocked(&w, &lan, "192.168.77.201", 8080);

    w.berth_ok(&["network", "connect", "--ip", "192.168.77.201", "lan", "app"]);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.201", 8080), MACHINE);
    let link = w.exec_ok("app", &["ip", "-d", "link", "show", "eth1"]);
    assert!(link.contains("macvlan"), "{link}");

    w.berth_ok(&["network", "disconnect", "lan", "app"]);
    machine_blocked(&w, &lan, "192.168.77.201", 8080);
    let links = w.exec_ok("app", &["ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "eth1 must be gone: {links}");
    assert!(w.inspect("app")["NetworkSettings"]["Networks"]["lan"].is_null());
    // The disconnect renamed the link and deleted it in the background: an immediate
    // reconnect gets eth1 again, and no retired link outlives its deletion.
    for _ in 0..3 {
        w.berth_ok(&["network", "connect", "--ip", "192.168.77.201", "lan", "app"]);
        w.berth_ok(&["network", "disconnect", "lan", "app"]);
    }
    w.berth_ok(&["network", "connect", "--ip", "192.168.77.201", "lan", "app"]);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.201", 8080), MACHINE);
    w.berth_ok(&["network", "disconnect", "lan", "app"]);
    let start = Instant::now();
    loop {
        let links = w.exec_ok("app", &["ip", "-o", "link"]);
        if !links.contains("bret") && !links.contains("eth1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "retired links must be deleted: {links}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Restart: a macvlan container survives a SIGKILLed berthd.
    w.run_server("srv", &["--network", "lan", "--ip", "192.168.77.200"], 8080);
    w.wait_container_port("srv", 8080);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    let mac = mac_of(&w, "srv", "lan");
    w.restart_daemon(true);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "check after the restart: {}",
        show(&o)
    );
    let o = w.system_check(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("check --format json: {e}: {}", show(&o)));
    let sl = &v["Summary"]["ContainerSublinks"];
    assert_eq!(
        (sl["Desired"].as_u64(), sl["Observed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let ep = &v["Summary"]["Endpoints"];
    assert_eq!(ep["Desired"], ep["Observed"], "{v}");

    // Drift: the container's macvlan link deleted behind berth's back.
    let pid = pid_of(&w, "srv");
    assert!(pid > 0);
    let o = w.pid_net_exec(pid, &["ip", "link", "del", "eth0"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    let link = w.exec_ok("srv", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains(&mac) && link.contains("macvlan"), "{link}");
    let routes = w.exec_ok("srv", &["ip", "route", "show", "default"]);
    assert!(routes.contains(&format!("via {ROUTER}")), "{routes}");
    wait_in_sync(&w, 10);

    // The same drift right after a SIGKILL restart, with the timer out of the way: only the
    // namespace notification of an adopted container can repair it (regression: the watch of
    // an adopted container began 200 ms late, and a deletion in that window waited for the
    // 10 s timer).
    w.try_restart_daemon_full(true, &["--check-interval", "3600"], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let o = w.pid_net_exec(pid, &["ip", "link", "del", "eth0"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    let link = w.exec_ok("srv", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains(&mac) && link.contains("macvlan"), "{link}");
}

/// Proves the clear refusals: ipvlan without the kernel's ipvlan module (400 naming it; on a
/// kernel that has it, a container on an ipvlan network is reached from the LAN instead), a
/// VLAN parent without 8021q (400 naming it) or on a base that does not exist (404 naming
/// it), a missing parent (404 naming it), no parent (400), one of berth's own links as parent
/// (409).
#[test]
fn refusals_name_what_is_missing() {
    require_root!();
    let w = World::new();
    let _lan = Lan::new(&w);

    let o = w.berth(&[
        "network",
        "create",
        "-d",
        "ipvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        ROUTER,
        "-o",
        "parent=lan0",
        "iv",
    ]);
    if kernel_has(&w, "ipvlan") {
        assert!(o.status.success(), "ipvlan create: {}", show(&o));
        w.run_server("iv1", &["--network", "iv", "--ip", "192.168.77.210"], 8080);
        w.wait_container_port("iv1", 8080);
        assert_eq!(machine_reaches(&w, &_lan, "192.168.77.210", 8080), MACHINE);
        w.berth_ok(&["rm", "-f", "iv1"]);
        w.berth_ok(&["network", "rm", "iv"]);
    } else {
        assert!(!o.status.success(), "{}", show(&o));
        let (status, body) = w.api(
            "POST",
            "/networks/create",
            Some(r#"{"Name":"iv","Driver":"ipvlan","Options":{"parent":"lan0"}}"#),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("kernel module ipvlan"), "{body}");
        assert!(stderr(&o).contains("ipvlan"), "{}", show(&o));
    }

    // An 802.1Q parent whose base does not exist: 404 naming the base (where the kernel has
    // 8021q), or 400 naming the module.
    let (status, body) = w.api(
        "POST",
        "/networks/create",
        Some(r#"{"Name":"v10","Driver":"macvlan","Options":{"parent":"eth7.10"}}"#),
    );
    if kernel_has(&w, "vlan") {
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("eth7 does not exist"), "{body}");
    } else {
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("8021q"), "{body}");
    }

    let (status, body) = w.api(
        "POST",
        "/networks/create",
        Some(r#"{"Name":"nope","Driver":"macvlan","Options":{"parent":"eth7"}}"#),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("\\\"eth7\\\"") || body.contains("eth7"),
        "{body}"
    );

    let (status, body) = w.api(
        "POST",
        "/networks/create",
        Some(r#"{"Name":"noparent","Driver":"macvlan"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("parent"), "{body}");

    let (status, body) = w.api(
        "POST",
        "/networks/create",
        Some(r#"{"Name":"ours","Driver":"macvlan","Options":{"parent":"berth0"}}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("berth's own"), "{body}");

    // Nothing was stored.
    let ls = w.network_ls();
    for n in ["iv", "v10", "nope", "noparent", "ours"] {
        assert!(
            !ls.lines().any(|l| l.split_whitespace().nth(1) == Some(n)),
            "{n} must not exist: {ls}"
        );
    }
}

/// Proves `vepa` (containers talk only through the LAN switch: not while the LAN bridge's port
/// refuses to send a frame back where it came from, yes once that port is in hairpin mode) and
/// `passthru` (the one container takes the parent over: it has the parent's MAC and the LAN
/// reaches it; on rm the parent is given back, with its MAC, up and not promiscuous).
#[test]
fn vepa_needs_a_hairpin_lan_and_passthru_takes_the_parent() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &["-o", "macvlan_mode=vepa"]);
    w.run_server("a", &["--network", "lan", "--ip", "192.168.77.200"], 8080);
    w.run_server("b", &["--network", "lan", "--ip", "192.168.77.201"], 8080);
    w.wait_container_port("a", 8080);
    w.wait_container_port("b", 8080);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.201", 8080), MACHINE);
    let link = w.exec_ok("a", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains("macvlan mode vepa"), "{link}");
    w.assert_blocked("a", "192.168.77.201", 8080);
    sh_ok(
        "ip",
        &[
            "-n",
            &lan.ns,
            "link",
            "set",
            "p-host",
            "type",
            "bridge_slave",
            "hairpin",
            "on",
        ],
    );
    let start = Instant::now();
    loop {
        match w.tcp_from("a", "192.168.77.201", 8080, 1.0) {
            Ok(r) => {
                assert_eq!(r.trim(), "192.168.77.200");
                break;
            }
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "vepa through a hairpin LAN port: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    w.berth_ok(&["rm", "-f", "a", "b"]);
    w.berth_ok(&["network", "rm", "lan"]);

    // passthru on a second NIC.
    lan.add_host_port(&w, "lan1");
    let mac_before = w.host_ip_cmd(&["-o", "link", "show", "lan1"]);
    let mac_before = mac_before
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(mac_before.len(), 17, "{mac_before}");
    w.berth_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        ROUTER,
        "-o",
        "parent=lan1",
        "-o",
        "macvlan_mode=passthru",
        "pt",
    ]);
    w.run_server("p", &["--network", "pt", "--ip", "192.168.77.202"], 8080);
    w.wait_container_port("p", 8080);
    let link = w.exec_ok("p", &["ip", "-d", "link", "show", "eth0"]);
    assert!(
        link.contains("macvlan mode passthru") && link.contains(&mac_before),
        "{link}"
    );
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.202", 8080), MACHINE);
    // In sync: berth does not fight the parent's MAC the passthru link took.
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "{}",
        show(&o)
    );
    w.berth_ok(&["rm", "-f", "p"]);
    w.berth_ok(&["network", "rm", "pt"]);
    let after = w.host_ip_cmd(&["-o", "link", "show", "lan1"]);
    assert!(
        after.contains(&mac_before) && after.contains("UP"),
        "{after}"
    );
    assert!(!after.contains("PROMISC"), "{after}");
}

/// Proves dual stack: on a macvlan network with an IPv6 subnet the container has its static
/// IPv6 address on the LAN (no DAD wait), a default IPv6 route via the LAN's router, and the LAN
/// machine reaches it over IPv6 seeing its own real address.
#[test]
fn dual_stack_macvlan() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    sh_ok(
        "ip",
        &[
            "-n",
            &lan.ns,
            "addr",
            "add",
            "fd77::1/64",
            "dev",
            "br0",
            "nodad",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &lan.machine,
            "addr",
            "add",
            "fd77::10/64",
            "dev",
            "m0",
            "nodad",
        ],
    );
    create_lan(
        &w,
        "lan",
        &["--ipv6", "--subnet", "fd77::/64", "--gateway", "fd77::1"],
    );
    w.run_d(
        "v6",
        &[
            "--network",
            "lan",
            "--ip",
            "192.168.77.200",
            "--ip6",
            "fd77::200",
        ],
        &["python3", &w.helper("peer_server.py"), "::", "8080"],
    );
    w.wait_container_port("v6", 8080);
    let addrs = w.exec_ok("v6", &["ip", "-o", "addr", "show", "eth0"]);
    assert!(
        addrs.contains("fd77::200/64") && addrs.contains("192.168.77.200/24"),
        "{addrs}"
    );
    let routes = w.exec_ok("v6", &["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains("via fd77::1"), "{routes}");
    assert_eq!(machine_reaches(&w, &lan, "fd77::200", 8080), "fd77::10");
    assert_eq!(
        machine_reaches(&w, &lan, "192.168.77.200", 8080),
        format!("::ffff:{MACHINE}")
    );
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "{}",
        show(&o)
    );
}

/// Proves the stock docker CLI manages macvlan networks: create with options, inspect (driver,
/// parent, mode), connect with a static address (the LAN reaches it), disconnect, rm; and its
/// ipvlan create gets berth's message naming the module on a kernel without it.
#[test]
fn stock_docker_cli_manages_macvlan() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    let id = w.docker_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "--gateway",
        ROUTER,
        "--ip-range",
        "192.168.77.192/27",
        "-o",
        "parent=lan0",
        "-o",
        "macvlan_mode=bridge",
        "dlan",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let shown = w.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{.Driver}} {{index .Options \"parent\"}} {{index .Options \"macvlan_mode\"}}",
        "dlan",
    ]);
    assert_eq!(shown.trim(), "macvlan lan0 bridge");
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.run_server("app", &["--network", "back"], 8080);
    w.wait_container_port("app", 8080);
    w.docker_ok(&[
        "network",
        "connect",
        "--ip",
        "192.168.77.205",
        "dlan",
        "app",
    ]);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.205", 8080), MACHINE);
    w.docker_ok(&["network", "disconnect", "dlan", "app"]);
    machine_blocked(&w, &lan, "192.168.77.205", 8080);
    w.docker_ok(&["network", "rm", "dlan"]);

    let probe = sh(
        "ip",
        &[
            "-n", &w.host_ns, "link", "add", "link", "lan0", "name", "kprobe0", "type", "ipvlan",
        ],
    );
    if probe.status.success() {
        sh_ok("ip", &["-n", &w.host_ns, "link", "del", "kprobe0"]);
    } else {
        let o = w.docker(&[
            "network",
            "create",
            "-d",
            "ipvlan",
            "--subnet",
            "192.168.77.0/24",
            "-o",
            "parent=lan0",
            "div",
        ]);
        assert!(!o.status.success(), "{}", show(&o));
        assert!(stderr(&o).contains("kernel module ipvlan"), "{}", show(&o));
    }
}

/// From berthd's namespace (the host): connect to addr:port, retrying for up to 10 s.
fn host_reaches(w: &World, addr: &str, port: u16) -> String {
    let start = Instant::now();
    loop {
        match w.tcp_from_ns(&w.host_ns, addr, port, 2.0) {
            Ok(r) => return r.trim().to_string(),
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("the host should reach {addr}:{port} but: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Proves the host ↔ container limitation and its fix: without a shim the host cannot reach
/// its macvlan container through the parent (the probe ran and failed) and inspect says so;
/// with `-o berth.macvlan.host_shim=true` berth gives the host a marked macvlan interface on the
/// parent with a route to the ip range, the host reaches the container from its own LAN
/// address, a deleted shim is repaired, and `network rm` removes it (never the parent).
#[test]
fn host_shim_lets_the_host_reach_its_containers() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &[]);
    w.run_server("srv", &["--network", "lan", "--ip", "192.168.77.200"], 8080);
    w.wait_container_port("srv", 8080);
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    let o = w.ns_exec(
        &w.host_ns,
        &[
            "python3",
            &w.helper("probe.py"),
            "192.168.77.200",
            "8080",
            "1.5",
        ],
    );
    assert!(
        code(&o) == 1 && stderr(&o).contains("probe 192.168.77.200:8080 failed"),
        "without a shim the host must not reach its macvlan container: {}",
        show(&o)
    );
    assert!(w.network_inspect("lan")["BerthNotes"]
        .to_string()
        .contains("host cannot reach"));
    w.berth_ok(&["rm", "-f", "srv"]);
    w.berth_ok(&["network", "rm", "lan"]);

    // The shim needs an ip range (its route).
    let o = w.berth(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.77.0/24",
        "-o",
        "parent=lan0",
        "-o",
        "berth.macvlan.host_shim=true",
        "noshim",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("--ip-range"),
        "{}",
        show(&o)
    );

    create_lan(&w, "lan", &["-o", "berth.macvlan.host_shim=true"]);
    let id = w.network_inspect("lan")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let shim = format!("bm{}", &id[..12]);
    let link = w.host_ip_cmd(&["-d", "link", "show", &shim]);
    assert!(
        link.contains("macvlan mode bridge") && link.contains("alias berth:shim:"),
        "{link}"
    );
    let routes = w.host_ip_cmd(&["route", "show", "192.168.77.192/27"]);
    assert!(
        routes.contains(&shim) && routes.contains("src 192.168.77.2"),
        "{routes}"
    );
    w.run_server("srv", &["--network", "lan", "--ip", "192.168.77.200"], 8080);
    w.wait_container_port("srv", 8080);
    assert_eq!(host_reaches(&w, "192.168.77.200", 8080), "192.168.77.2");
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.200", 8080), MACHINE);
    assert!(w.network_inspect("lan")["BerthNotes"]
        .to_string()
        .contains(&shim));

    // Drift: the shim deleted behind berth's back comes back.
    w.host_ip_cmd(&["link", "del", &shim]);
    assert_eq!(host_reaches(&w, "192.168.77.200", 8080), "192.168.77.2");
    let start = Instant::now();
    loop {
        let o = w.system_check(&[]);
        if o.status.success() && stdout(&o).contains("in sync") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{}", show(&o));
        std::thread::sleep(Duration::from_millis(100));
    }

    w.berth_ok(&["rm", "-f", "srv"]);
    w.berth_ok(&["network", "rm", "lan"]);
    assert!(!w.host_links().contains(&shim), "{:?}", w.host_links());
    assert!(w.host_links().contains(&"lan0".to_string()));
}

/// Not a test of behaviour: times macvlan endpoint setup end to end through the CLI (run with
/// `--ignored --nocapture`).
#[test]
#[ignore]
fn bench_macvlan_setup() {
    require_root!();
    let w = World::new();
    let _lan = Lan::new(&w);
    create_lan(&w, "lan", &[]);
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.run_d("idle", &["--network", "back"], &["sleep", "600"]);
    let time = |args: &[&str]| {
        let t = Instant::now();
        w.berth_ok(args);
        t.elapsed().as_secs_f64() * 1000.0
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut connect = Vec::new();
    for _ in 0..20 {
        connect.push(time(&["network", "connect", "lan", "idle"]));
        w.berth_ok(&["network", "disconnect", "lan", "idle"]);
    }
    w.berth_ok(&["network", "create", "--subnet", "10.10.0.0/24", "front"]);
    let mut bridge = Vec::new();
    for _ in 0..20 {
        bridge.push(time(&["network", "connect", "front", "idle"]));
        w.berth_ok(&["network", "disconnect", "front", "idle"]);
    }
    // The kernel part, as berthd logs it.
    let kernel: Vec<f64> = w
        .log_text()
        .lines()
        .filter(|l| l.contains("container interface created"))
        .filter_map(|l| {
            l.split("elapsed_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .map(|us: f64| us / 1000.0)
        .collect();
    let mut run_lan = Vec::new();
    let mut run_none = Vec::new();
    for _ in 0..10 {
        run_lan.push(time(&["run", "--rm", "--network", "lan", "true"]));
        run_none.push(time(&["run", "--rm", "--network", "none", "true"]));
    }
    eprintln!(
        "BENCH macvlan create in berthd median {:.2} ms ({}); connect median macvlan {:.2} ms, bridge {:.2} ms (20 each); run --rm lan true median {:.2} ms, none {:.2} ms (10 each)",
        median(kernel.clone()),
        kernel.len(),
        median(connect),
        median(bridge),
        median(run_lan.clone()),
        median(run_none.clone())
    );
}

/// `hostile.py`: tries to take berth's resolver port inside its own namespace, the ways a
/// process with default capabilities could (UDP and TCP on 127.0.0.11:53 with SO_REUSEADDR and
/// SO_REUSEPORT, the wildcard address on port 53), and, as a control, port 53 of another
/// loopback address (which must work: the process may bind port 53 at all). Prints one line
/// per attempt: `NAME ok` or `NAME errno`.
const HOSTILE_PY: &str = r#"
import socket
def attempt(name, kind, addr):
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind((addr, 53))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
attempt("udp-11", socket.SOCK_DGRAM, "127.0.0.11")
attempt("tcp-11", socket.SOCK_STREAM, "127.0.0.11")
attempt("udp-any", socket.SOCK_DGRAM, "0.0.0.0")
attempt("tcp-any", socket.SOCK_STREAM, "0.0.0.0")
attempt("udp-12", socket.SOCK_DGRAM, "127.0.0.12")
"#;

/// A world with a LAN whose berthd forwards to a fake upstream on 127.0.0.53 in its own
/// namespace (answering `outside.test`), never to the machine's resolvers.
fn dns_world() -> (World, Lan, Vec<String>) {
    let w = World::new();
    let lan = Lan::new(&w);
    for (name, text) in [
        ("dnsq.py", common::dns::DNSQ_PY),
        ("fakedns.py", common::dns::FAKEDNS_PY),
        ("hostile.py", HOSTILE_PY),
    ] {
        std::fs::write(w.dir.join(name), text).expect("write helper");
    }
    let fake = w.helper("fakedns.py");
    w.spawn_in(
        &w.host_ns,
        &["python3", &fake, "127.0.0.53", "outside.test=192.0.2.7"],
    );
    w.wait_port(&w.host_ns, "127.0.0.53", 53);
    let resolv = w.dir.join("host-resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\n").expect("write resolv.conf");
    let args = vec!["--resolv-conf".to_string(), resolv.display().to_string()];
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    w.try_restart_daemon_full(false, &a, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    (w, lan, args)
}

/// `dnsq.py` from container `from` through its resolv.conf's nameserver: (rcode, answers).
fn dnsq(w: &World, from: &str, name: &str, tcp: bool) -> (String, Vec<String>) {
    let helper = w.helper("dnsq.py");
    let mut cmd = vec!["python3", helper.as_str(), "-", name, "A"];
    if tcp {
        cmd.push("--tcp");
    }
    let out = w.exec_ok(from, &cmd);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("dnsq {out:?}: {e}"));
    assert_eq!(v["server"], "127.0.0.11", "{from} asks 127.0.0.11: {v}");
    let answers = v["answers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (v["rcode"].as_str().unwrap_or("").to_string(), answers)
}

/// The A answers libc gives container `from` for `name` (empty when it does not resolve).
fn getent(w: &World, from: &str, name: &str) -> String {
    stdout(&w.exec(from, &["getent", "ahostsv4", name]))
}

/// The names of berthd's threads (its UDP resolver threads are `dns-<short id>`).
fn daemon_threads(w: &World) -> Vec<String> {
    let pid = w.daemon_pid().expect("berthd runs");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (≤ 10 s) until berthd has no thread named `name` (a closed listener's UDP thread
/// ends right after it is woken).
fn wait_thread_gone(w: &World, name: &str) {
    let start = Instant::now();
    while daemon_threads(w).iter().any(|t| t == name) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "berthd's thread {name} is still there after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn short_id(w: &World, name: &str) -> String {
    w.inspect(name)["Id"].as_str().unwrap_or("")[..12].to_string()
}

/// Proves DNS on macvlan networks (berth's resolver at 127.0.0.11 inside each container's own
/// namespace): containers resolve each other by name, alias and `NAME.NETWORK` over UDP and TCP
/// and through libc, and talk by name; names of a network the asker is not on do not resolve
/// (forwarded: the fake upstream says NXDOMAIN) while external names are forwarded; a removed
/// container stops resolving and its listener goes; a container with default capabilities
/// cannot take 127.0.0.11:53 (nor the wildcard port 53), although it may bind port 53
/// elsewhere, and names keep resolving; after berthd is SIGKILLed and restarted, adopted
/// containers resolve again; `network connect` to the macvlan network gives a bridge container
/// the macvlan names through its bridge resolver, and once it leaves the bridge network its
/// resolv.conf names 127.0.0.11 and the listener berth opened in its running namespace answers.
#[test]
fn dns_by_name_inside_macvlan_containers() {
    require_root!();
    let (w, _lan, args) = dns_world();
    create_lan(&w, "lan", &[]);
    w.berth_ok(&["network", "create", "--subnet", "10.9.0.0/24", "back"]);
    w.run_server(
        "printer",
        &[
            "--network",
            "lan",
            "--ip",
            "192.168.77.200",
            "--network-alias",
            "prn",
        ],
        8080,
    );
    w.run_server("asker", &["--network", "lan"], 8080);
    w.run_server("other", &["--network", "back"], 8080);
    w.wait_container_port("printer", 8080);
    w.wait_container_port("asker", 8080);
    w.wait_container_port("other", 8080);

    let conf = w.exec_ok("asker", &["cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 127.0.0.11\n"), "{conf}");
    assert!(!conf.contains("127.0.0.53"), "{conf}");
    for name in ["printer", "PRN", "printer.lan"] {
        for tcp in [false, true] {
            assert_eq!(
                dnsq(&w, "asker", name, tcp),
                ("NOERROR".to_string(), vec!["192.168.77.200".to_string()]),
                "{name} (tcp {tcp})"
            );
        }
    }
    assert!(getent(&w, "asker", "prn").contains("192.168.77.200"));
    let asker_ip = w.ip_of("asker", "lan");
    assert_eq!(
        w.assert_reaches("printer", "asker", 8080).trim(),
        "192.168.77.200"
    );
    assert_eq!(w.assert_reaches("asker", "prn", 8080).trim(), asker_ip);
    // Another network's container: not local, forwarded, NXDOMAIN; external names forwarded.
    assert_eq!(
        dnsq(&w, "asker", "other", false),
        ("NXDOMAIN".into(), vec![])
    );
    assert_eq!(getent(&w, "asker", "other"), "");
    assert_eq!(
        dnsq(&w, "asker", "outside.test", false),
        ("NOERROR".into(), vec!["192.0.2.7".into()])
    );

    // A hostile process cannot take the port from berth (EADDRINUSE, 98), but may bind 53.
    let out = w.exec_ok("asker", &["python3", &w.helper("hostile.py")]);
    for line in [
        "udp-11 98",
        "tcp-11 98",
        "udp-any 98",
        "tcp-any 98",
        "udp-12 ok",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} in {out}");
    }
    assert_eq!(
        dnsq(&w, "asker", "printer", false).1,
        vec!["192.168.77.200"]
    );

    // Removed: no longer resolves, and its listener is closed.
    let short = short_id(&w, "printer");
    let thread = format!("dns-{}", &short[..11]);
    assert!(daemon_threads(&w).contains(&thread), "{thread}");
    w.berth_ok(&["rm", "-f", "printer"]);
    assert_eq!(
        dnsq(&w, "asker", "printer", false),
        ("NXDOMAIN".into(), vec![])
    );
    assert_eq!(getent(&w, "asker", "prn"), "");
    wait_thread_gone(&w, &thread);

    // berthd SIGKILLed and restarted: adopted containers get their listener back.
    w.run_server(
        "scanner",
        &["--network", "lan", "--ip", "192.168.77.201"],
        8080,
    );
    w.wait_container_port("scanner", 8080);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    w.try_restart_daemon_full(true, &a, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dnsq(&w, "asker", "scanner", false).1,
        vec!["192.168.77.201"]
    );
    assert_eq!(dnsq(&w, "asker", "scanner", true).1, vec!["192.168.77.201"]);
    assert!(getent(&w, "scanner", "asker").contains(&asker_ip));

    // network connect: a bridge container keeps its bridge resolver, which now also knows
    // the macvlan network's names; after it leaves the bridge, 127.0.0.11 in its namespace.
    w.berth_ok(&["network", "connect", "--alias", "odd", "lan", "other"]);
    let conf = w.exec_ok("other", &["cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 10.9.0.1\n"), "{conf}");
    assert!(getent(&w, "other", "scanner").contains("192.168.77.201"));
    assert_eq!(dnsq(&w, "asker", "odd", false).0, "NOERROR");
    w.berth_ok(&["network", "disconnect", "back", "other"]);
    let conf = w.exec_ok("other", &["cat", "/etc/resolv.conf"]);
    assert!(conf.contains("nameserver 127.0.0.11\n"), "{conf}");
    assert_eq!(
        dnsq(&w, "other", "scanner", false).1,
        vec!["192.168.77.201"]
    );
    assert_eq!(dnsq(&w, "other", "scanner", true).1, vec!["192.168.77.201"]);
    // And a stopped container's listener goes with it.
    let short = short_id(&w, "other");
    let thread = format!("dns-{}", &short[..11]);
    assert!(daemon_threads(&w).contains(&thread), "{thread}");
    w.berth_ok(&["stop", "-t", "1", "other"]);
    wait_thread_gone(&w, &thread);
}

/// Proves `--mac-address` on a macvlan network: the container's link carries the requested
/// MAC, inspect shows it, the LAN machine reaches the container and learns that MAC, and a
/// second container asking for the same MAC on the network is refused (409, naming the holder).
#[test]
fn requested_mac_address_on_macvlan() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    create_lan(&w, "lan", &[]);
    let mac = "02:aa:bb:cc:dd:01";
    w.run_server(
        "nas",
        &[
            "--network",
            "lan",
            "--ip",
            "192.168.77.205",
            "--mac-address",
            mac,
        ],
        8080,
    );
    w.wait_container_port("nas", 8080);
    assert_eq!(mac_of(&w, "nas", "lan"), mac);
    let link = w.exec_ok("nas", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains(mac) && link.contains("macvlan"), "{link}");
    assert_eq!(machine_reaches(&w, &lan, "192.168.77.205", 8080), MACHINE);
    let neigh = w.ns_exec_ok(&lan.machine, &["ip", "neigh", "show", "192.168.77.205"]);
    assert!(
        neigh.contains(mac),
        "the LAN machine's neighbour entry: {neigh}"
    );
    let o = w.berth(&[
        "run",
        "-d",
        "--name",
        "twin",
        "--network",
        "lan",
        "--mac-address",
        mac,
        "sleep",
        "60",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("already used by container \"nas\""),
        "{}",
        show(&o)
    );
}

/// Whether the kernel of berthd's namespace creates links of `kind` (`vlan`, `ipvlan`,
/// `dummy`): tried on a throw-away veth in that namespace (as their parent where they need one).
fn kernel_has(w: &World, kind: &str) -> bool {
    let h = w.host_ns.as_str();
    sh_ok(
        "ip",
        &[
            "-n", h, "link", "add", "kp0", "type", "veth", "peer", "name", "kp1",
        ],
    );
    let mut a = vec!["-n", h, "link", "add"];
    match kind {
        "vlan" => a.extend(["link", "kp0", "name", "kp2", "type", "vlan", "id", "5"]),
        "ipvlan" | "macvlan" => a.extend(["link", "kp0", "name", "kp2", "type", kind]),
        _ => a.extend(["kp2", "type", kind]),
    }
    let ok = sh("ip", &a).status.success();
    sh("ip", &["-n", h, "link", "del", "kp2"]);
    sh_ok("ip", &["-n", h, "link", "del", "kp0"]);
    ok
}

/// The link named `name` in berthd's namespace as `ip -d -j link` shows it (Null if none).
fn host_link(w: &World, name: &str) -> serde_json::Value {
    let o = sh("ip", &["-n", &w.host_ns, "-d", "-j", "link", "show", name]);
    if !o.status.success() {
        return serde_json::Value::Null;
    }
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
    v.get(0).cloned().unwrap_or_default()
}

/// Proves `--internal` macvlan without `-o parent=` (an isolated L2 segment, as Docker's dummy
/// link): where the kernel has no dummy module (the project's machines) the create is refused
/// with 400 naming it and nothing is left; elsewhere berth creates the segment's parent, the
/// dummy link `dm-<12 hex of the id>`, marked and without IPv6; two containers on it talk by
/// address and by name; they have no default route and reach neither the LAN
/// nor the host; inspect says what the segment is; a SIGKILL restart changes nothing; the
/// segment deleted behind berth's back is made again with the containers' links on it; rm of
/// the network removes it.
#[test]
fn internal_macvlan_is_an_isolated_segment() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    let o = w.berth(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "10.88.0.0/24",
        "seg",
    ]);
    if !kernel_has(&w, "dummy") {
        assert!(!o.status.success(), "{}", show(&o));
        assert!(
            stderr(&o).contains("no dummy support") && stderr(&o).contains("modprobe dummy"),
            "{}",
            show(&o)
        );
        assert!(!w.network_ls().contains("seg"));
        assert!(
            !w.host_links().iter().any(|l| l.starts_with("dm-")),
            "{:?}",
            w.host_links()
        );
        return;
    }
    assert!(o.status.success(), "{}", show(&o));
    let seg = format!(
        "dm-{}",
        &w.network_inspect("seg")["Id"].as_str().unwrap_or("")[..12]
    );
    let l = host_link(&w, &seg);
    assert_eq!(l["linkinfo"]["info_kind"], "dummy", "{l}");
    assert_eq!(l["ifalias"], format!("berth:parent:{seg}"), "{l}");
    assert!(
        l["flags"].to_string().contains("\"UP\""),
        "the segment is up: {l}"
    );
    let addrs = w.host_ip_cmd(&["-6", "addr", "show", "dev", &seg]);
    assert!(!addrs.contains("inet6"), "no IPv6 on the segment: {addrs}");
    let v = w.network_inspect("seg");
    assert_eq!(v["Internal"], true, "{v}");
    assert!(
        v["BerthNotes"].to_string().contains("isolated segment"),
        "{v}"
    );

    w.run_server("a", &["--network", "seg", "--ip", "10.88.0.10"], 8080);
    w.run_server("b", &["--network", "seg"], 8080);
    w.wait_container_port("a", 8080);
    w.wait_container_port("b", 8080);
    let b_ip = w.ip_of("b", "seg");
    assert_eq!(w.assert_reaches("b", "10.88.0.10", 8080).trim(), b_ip);
    assert_eq!(w.assert_reaches("a", "b", 8080).trim(), "10.88.0.10");
    let link = w.exec_ok("a", &["ip", "-d", "link", "show", "eth0"]);
    assert!(link.contains("@if") && link.contains("macvlan"), "{link}");
    let routes = w.exec_ok("a", &["ip", "route", "show", "default"]);
    assert!(routes.trim().is_empty(), "no way out: {routes}");
    // Nothing leaves the segment: the LAN machine, the LAN's router and the host are not
    // reachable from it, and the LAN machine does not reach in.
    w.spawn_in(
        &lan.machine,
        &["python3", &w.helper("peer_server.py"), "0.0.0.0", "9000"],
    );
    w.wait_port(&lan.machine, MACHINE, 9000);
    w.assert_blocked("a", MACHINE, 9000);
    w.assert_blocked("a", "192.168.77.2", 9000);
    machine_blocked(&w, &lan, "10.88.0.10", 8080);

    // SIGKILL restart: adopted as it is.
    w.restart_daemon(true);
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "{}",
        show(&o)
    );
    assert_eq!(w.assert_reaches("b", "10.88.0.10", 8080).trim(), b_ip);

    // Drift: the segment deleted by hand takes the containers' links with it; berth makes
    // both again.
    w.host_ip_cmd(&["link", "del", &seg]);
    wait_in_sync(&w, 15);
    assert_eq!(w.assert_reaches("b", "10.88.0.10", 8080).trim(), b_ip);
    assert_eq!(
        host_link(&w, &seg)["ifalias"],
        format!("berth:parent:{seg}")
    );

    w.berth_ok(&["rm", "-f", "a", "b"]);
    w.berth_ok(&["network", "rm", "seg"]);
    assert!(host_link(&w, &seg).is_null(), "{seg} must be gone");
}

/// Proves 802.1Q parents: on a kernel with 8021q, `-o parent=lan0.10` that does not exist is
/// created by berth (VLAN 10 of lan0, marked); a LAN machine on VLAN 10 reaches a container
/// directly while the untagged LAN does not see it; a second network shares the sub-interface;
/// it goes with the last network on it; a sub-interface made by hand is used and never
/// removed. On a kernel without 8021q (the project's machines) the create is refused with 400
/// naming the module and nothing is stored or created.
#[test]
fn vlan_parents_are_created_and_removed_by_berth() {
    require_root!();
    let w = World::new();
    let lan = Lan::new(&w);
    if !kernel_has(&w, "vlan") {
        let o = w.berth(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "192.168.78.0/24",
            "-o",
            "parent=lan0.10",
            "v10",
        ]);
        assert!(!o.status.success(), "{}", show(&o));
        assert!(stderr(&o).contains("8021q"), "{}", show(&o));
        assert!(host_link(&w, "lan0.10").is_null());
        assert!(!w.network_ls().contains("v10"));
        return;
    }
    // VLAN 10 on the LAN machine (the LAN bridge passes tagged frames as they are).
    let m = lan.machine.as_str();
    sh_ok(
        "ip",
        &[
            "-n", m, "link", "add", "link", "m0", "name", "m0.10", "type", "vlan", "id", "10",
        ],
    );
    sh_ok(
        "ip",
        &["-n", m, "addr", "add", "192.168.78.10/24", "dev", "m0.10"],
    );
    sh_ok("ip", &["-n", m, "link", "set", "m0.10", "up"]);
    for (name, subnet) in [("v10", "192.168.78.0/24"), ("v10b", "192.168.79.0/24")] {
        w.berth_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            subnet,
            "-o",
            "parent=lan0.10",
            name,
        ]);
    }
    let l = host_link(&w, "lan0.10");
    assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["id"], 10, "{l}");
    assert_eq!(l["ifalias"], "berth:parent:lan0.10", "{l}");
    assert!(
        w.network_inspect("v10")["BerthNotes"]
            .to_string()
            .contains("802.1Q"),
        "notes"
    );
    w.run_server(
        "tagged",
        &["--network", "v10", "--ip", "192.168.78.200"],
        8080,
    );
    w.wait_container_port("tagged", 8080);
    let start = Instant::now();
    loop {
        match w.tcp_from_ns(m, "192.168.78.200", 8080, 2.0) {
            Ok(r) => {
                assert_eq!(r.trim(), "192.168.78.10");
                break;
            }
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("VLAN 10 should reach the container: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    // Untagged, the container's address is nowhere on the LAN.
    w.berth_ok(&["rm", "-f", "tagged"]);
    w.berth_ok(&["network", "rm", "v10"]);
    assert!(!host_link(&w, "lan0.10").is_null(), "v10b still uses it");
    w.berth_ok(&["network", "rm", "v10b"]);
    assert!(
        host_link(&w, "lan0.10").is_null(),
        "gone with the last network"
    );

    // Made by hand: used, never removed.
    sh_ok(
        "ip",
        &[
            "-n", &w.host_ns, "link", "add", "link", "lan0", "name", "lan0.20", "type", "vlan",
            "id", "20",
        ],
    );
    sh_ok("ip", &["-n", &w.host_ns, "link", "set", "lan0.20", "up"]);
    w.berth_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.80.0/24",
        "-o",
        "parent=lan0.20",
        "v20",
    ]);
    w.berth_ok(&["network", "rm", "v20"]);
    assert!(!host_link(&w, "lan0.20").is_null(), "not berth's: kept");
}
