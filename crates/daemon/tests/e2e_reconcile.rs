//! End-to-end proof of the reconciler (desired state → observe the kernel → diff → steps →
//! apply): link ownership (berth touches only links it marked `berth:`, adoption of a foreign
//! bridge is opt-in), input refused before any kernel call, drift repaired within a second
//! (host veth, bridge, a container's default route, the nft table) and counted, the
//! `--no-drift-repair` dry run, and kill -9 at every step of `run -d`.
//!
//! Written before the reconciler exists: against the code of the time most of these fail; each
//! failure message says which promise was broken.

mod common;

use std::time::{Duration, Instant};

use common::{code, show, stderr, stdout, World};
use serde_json::json;

/// Status, body of `POST /networks/create` with `body`.
fn create_network_api(w: &World, body: &serde_json::Value) -> (u16, String) {
    w.api("POST", "/networks/create", Some(&body.to_string()))
}

/// An nft listing with counter values blanked (`packets N bytes N`), so that traffic between
/// two listings does not count as a change.
fn nft_norm(s: &str) -> String {
    s.lines()
        .map(|l| {
            let mut out: Vec<&str> = Vec::new();
            let mut blank_next = false;
            for tok in l.split_whitespace() {
                if blank_next {
                    out.push("N");
                    blank_next = false;
                    continue;
                }
                blank_next = tok == "packets" || tok == "bytes";
                out.push(tok);
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What must not change on a foreign link: its addresses, its link line (state, flags,
/// master), and the host's routes.
#[derive(Debug, PartialEq)]
struct LinkView {
    addrs: String,
    link: String,
    routes4: String,
    routes6: String,
}

fn link_view(w: &World, name: &str) -> LinkView {
    let strip_lft = |s: String| {
        s.lines()
            .map(|l| l.split("valid_lft").next().unwrap_or(l).trim().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Only this link's addresses and routes, without the IPv6 link-local ones: those are the
    // kernel's, and their state (tentative until DAD ends, then a `local fe80::…` route) moves
    // by itself while the test runs, on this link and on the world's others.
    let dev = format!("dev {name}");
    let own = |s: String| {
        s.lines()
            .filter(|l| {
                (l.contains(&format!("{dev} ")) || l.trim_end().ends_with(&dev))
                    && !l.contains("fe80")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    LinkView {
        addrs: strip_lft(w.host_ip_cmd(&["-o", "addr", "show", "dev", name]))
            .lines()
            .filter(|l| !l.contains("inet6 fe80"))
            .collect::<Vec<_>>()
            .join("\n"),
        link: w.host_ip_cmd(&["-o", "link", "show", "dev", name]),
        routes4: own(w.host_ip_cmd(&["route", "show", "table", "all"])),
        routes6: own(w.host_ip_cmd(&["-6", "route", "show", "table", "all"])),
    }
}

/// Creates a bridge berth did not make, with an address and a route, up.
fn foreign_bridge(w: &World, name: &str, addr: &str, route: &str) {
    w.host_ip_cmd(&["link", "add", name, "type", "bridge"]);
    w.host_ip_cmd(&["addr", "add", addr, "dev", name]);
    w.host_ip_cmd(&["link", "set", name, "up"]);
    w.host_ip_cmd(&["route", "add", route, "dev", name]);
}

/// Proves: asking for a bridge name that is an existing link berth did not create (the world's
/// `uplink` veth, a foreign bridge) is refused with 409 naming the link and its kind (CLI: exit
/// 1, message on stderr); the link keeps its addresses, state and routes; no network appears
/// and nothing new appears in `table inet berth`.
#[test]
fn foreign_link_names_are_refused_with_409_and_left_alone() {
    require_root!();
    let w = World::new();
    foreign_bridge(&w, "fbr0", "192.0.2.1/24", "203.0.113.0/24");
    let ls_before = w.network_ls();
    let nft_before = nft_norm(&w.nft_table());
    let links_before = w.host_links();

    for (i, (name, kind)) in [("uplink", "veth"), ("fbr0", "bridge")].iter().enumerate() {
        let view_before = link_view(&w, name);
        let body = json!({
            "Name": format!("own{i}"),
            "IPAM": {"Config": [{"Subnet": format!("10.63.{i}.0/24")}]},
            "Options": {"com.docker.network.bridge.name": name},
        });
        let (status, msg) = create_network_api(&w, &body);
        eprintln!("bridge.name={name}: HTTP {status} {}", msg.trim());
        assert!(
            status < 500,
            "bridge.name={name} ({kind}): a 5xx is never right: {status} {msg}"
        );
        assert_eq!(
            status, 409,
            "bridge.name={name}: an existing {kind} berth did not create must be a 409: {msg}"
        );
        let lower = msg.to_lowercase();
        assert!(
            lower.contains(name) && lower.contains(kind),
            "bridge.name={name}: the message must name the link and its kind {kind:?}: {msg}"
        );
        // The CLI says the same and exits 1.
        let subnet = format!("10.63.{}.0/24", i + 10);
        let o = w.berth(&[
            "network",
            "create",
            "--subnet",
            &subnet,
            "-o",
            &format!("com.docker.network.bridge.name={name}"),
            &format!("cli{i}"),
        ]);
        assert_eq!(
            code(&o),
            1,
            "CLI with bridge.name={name} must exit 1: {}",
            show(&o)
        );
        assert!(
            stderr(&o).contains(name),
            "CLI message must name {name}: {}",
            show(&o)
        );
        let view_after = link_view(&w, name);
        assert_eq!(
            view_before, view_after,
            "{name} ({kind}) was changed by the refused create"
        );
    }
    assert_eq!(w.network_ls(), ls_before, "a network appeared");
    assert_eq!(w.host_links(), links_before, "links changed");
    let nft_after = nft_norm(&w.nft_table());
    assert_eq!(
        nft_before, nft_after,
        "table inet berth changed by refused creates"
    );
}

/// Proves: `-o berth.bridge.adopt=true` with an existing foreign bridge is accepted;
/// containers on that network reach each other; `network rm` leaves the bridge with the
/// addresses and routes it had before adoption and removes only the gateway address berth added.
#[test]
fn foreign_bridge_adoption_is_opt_in_and_rm_leaves_it() {
    require_root!();
    let w = World::new();
    foreign_bridge(&w, "fbr1", "192.0.2.1/24", "203.0.113.0/24");
    let before = link_view(&w, "fbr1");

    // Without the opt-in: refused, untouched (see the test above for the details).
    let (status, msg) = create_network_api(
        &w,
        &json!({
            "Name": "noadopt",
            "IPAM": {"Config": [{"Subnet": "10.61.0.0/24"}]},
            "Options": {"com.docker.network.bridge.name": "fbr1"},
        }),
    );
    assert_eq!(
        status, 409,
        "fbr1 without berth.bridge.adopt=true must be a 409: {msg}"
    );
    assert_eq!(before, link_view(&w, "fbr1"), "fbr1 changed by a refusal");

    w.berth_ok(&[
        "network",
        "create",
        "--subnet",
        "10.61.0.0/24",
        "-o",
        "com.docker.network.bridge.name=fbr1",
        "-o",
        "berth.bridge.adopt=true",
        "adopted",
    ]);
    let during = w.host_ip_cmd(&["-o", "addr", "show", "dev", "fbr1"]);
    eprintln!("fbr1 while adopted:\n{during}");
    w.run_server("a", &["--network", "adopted"], 8080);
    w.run_d("b", &["--network", "adopted"], &["sleep", "300"]);
    w.wait_container_port("a", 8080);
    let a_ip = w.ip_of("a", "adopted");
    let r = w.assert_reaches("b", &a_ip, 8080);
    assert_eq!(
        r.trim(),
        w.ip_of("b", "adopted"),
        "b -> a on the adopted bridge"
    );

    w.berth_ok(&["rm", "-f", "a", "b"]);
    w.berth_ok(&["network", "rm", "adopted"]);
    assert!(
        w.host_links().contains(&"fbr1".to_string()),
        "network rm deleted the adopted bridge fbr1: {:?}",
        w.host_links()
    );
    let after = link_view(&w, "fbr1");
    assert!(
        after.addrs.contains("192.0.2.1/24"),
        "fbr1 lost the address it had before adoption: {}",
        after.addrs
    );
    assert!(
        !after.addrs.contains("10.61.0.1"),
        "berth's gateway address stayed on fbr1 after rm: {}",
        after.addrs
    );
    assert!(
        after.routes4.contains("203.0.113.0/24 dev fbr1"),
        "fbr1's route is gone: {}",
        after.routes4
    );
    assert!(
        after.link.contains("UP"),
        "fbr1 is no longer up: {}",
        after.link
    );
}

/// Proves: bridge names `lo`, `all`, `default`, `a.b`, a 16-byte name, `a/b` and `a b` are
/// refused with 400 (never a 5xx), and nothing is created: no network, no link, no nft change,
/// `lo` untouched.
#[test]
fn reserved_or_malformed_bridge_names_are_400() {
    require_root!();
    let w = World::new();
    let ls_before = w.network_ls();
    let links_before = w.host_links();
    let nft_before = nft_norm(&w.nft_table());
    let lo_before = link_view(&w, "lo");

    let mut wrong = Vec::new();
    for (i, name) in [
        "lo",
        "all",
        "default",
        "a.b",
        "abcdefghijklmnop",
        "a/b",
        "a b",
    ]
    .iter()
    .enumerate()
    {
        let (status, msg) = create_network_api(
            &w,
            &json!({
                "Name": format!("bad{i}"),
                "IPAM": {"Config": [{"Subnet": format!("10.64.{i}.0/24")}]},
                "Options": {"com.docker.network.bridge.name": name},
            }),
        );
        eprintln!("bridge.name={name:?}: HTTP {status} {}", msg.trim());
        if status != 400 {
            wrong.push(format!("{name:?} -> {status} {}", msg.trim()));
        }
    }
    let o = w.berth(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=lo",
        "badcli",
    ]);
    if code(&o) != 1 {
        wrong.push(format!("CLI bridge.name=lo: {}", show(&o)));
    }
    // Whatever got created by mistake: listed, then removed so the world can clean up.
    let ls_after = w.network_ls();
    let links_after = w.host_links();
    let nft_after = nft_norm(&w.nft_table());
    let lo_after = link_view(&w, "lo");
    assert!(
        wrong.is_empty(),
        "must be HTTP 400 (CLI exit 1): {wrong:#?}"
    );
    assert_eq!(ls_before, ls_after, "a network was created");
    assert_eq!(links_before, links_after, "links changed");
    assert_eq!(nft_before, nft_after, "table inet berth changed");
    assert_eq!(lo_before, lo_after, "lo changed");
}

/// Proves: an IPv6 subnet that is multicast (`ff00::/8`) or link-local (`fe80::/64`) is refused
/// with 400 (CLI: exit 1), and the refusal leaves `net.ipv6.conf.all.forwarding` as it was and
/// adds no IPv6 guard rule.
#[test]
fn ipv6_multicast_and_link_local_subnets_are_400_and_change_nothing() {
    require_root!();
    let w = World::new();
    let fwd = || {
        w.ns_exec_ok(
            &w.host_ns,
            &["sysctl", "-n", "net.ipv6.conf.all.forwarding"],
        )
        .trim()
        .to_string()
    };
    let fwd_before = fwd();
    let ls_before = w.network_ls();
    let mut wrong = Vec::new();
    for (i, subnet) in ["ff00::/8", "fe80::/64"].iter().enumerate() {
        let (status, msg) = create_network_api(
            &w,
            &json!({
                "Name": format!("v6api{i}"),
                "EnableIPv6": true,
                "IPAM": {"Config": [{"Subnet": subnet}]},
            }),
        );
        eprintln!("--ipv6 --subnet {subnet}: HTTP {status} {}", msg.trim());
        if status != 400 {
            wrong.push(format!("API {subnet} -> {status} {}", msg.trim()));
        }
        let o = w.berth(&[
            "network",
            "create",
            "--ipv6",
            "--subnet",
            subnet,
            &format!("v6cli{i}"),
        ]);
        if code(&o) != 1 {
            wrong.push(format!("CLI {subnet}: {}", show(&o)));
        }
    }
    let fwd_after = fwd();
    if fwd_before != fwd_after {
        wrong.push(format!(
            "net.ipv6.conf.all.forwarding changed: {fwd_before} -> {fwd_after}"
        ));
    }
    let nft = w.nft_table();
    if nft.contains("meta nfproto ipv6 drop") {
        wrong.push("an IPv6 guard rule (meta nfproto ipv6 drop) was added".into());
    }
    let ls_after = w.network_ls();
    if ls_before != ls_after {
        wrong.push(format!("networks were created:\n{ls_after}"));
    }
    assert!(
        wrong.is_empty(),
        "must be 400 / exit 1 and change nothing: {wrong:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Drift repair

const DRIFT_PORT: u16 = 18080;
const OUT_PORT: u16 = 9099;

/// A world with network `dr` (10.62.0.0/24): `srv` (peer-address server on 8080, published as
/// host port 18080), `cli`; a peer-address server in the outside netns on OUT_PORT; a user rule
/// in `chain user` and the user's own `table inet mine`.
struct Drift {
    w: World,
    srv_ip: String,
}

fn drift_world() -> Drift {
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.62.0.0/24", "dr"]);
    let port = format!("{DRIFT_PORT}:8080");
    w.run_server("srv", &["--network", "dr", "-p", &port], 8080);
    w.run_d("cli", &["--network", "dr"], &["sleep", "600"]);
    w.wait_container_port("srv", 8080);
    let out_ip = w.out_ip();
    let helper = w.helper("peer_server.py");
    let out_port = OUT_PORT.to_string();
    w.spawn_in(&w.out_ns, &["python3", &helper, &out_ip, &out_port]);
    w.wait_port(&w.out_ns, &out_ip, OUT_PORT);
    for cmd in [
        &[
            "nft", "add", "rule", "inet", "berth", "user", "tcp", "dport", "9", "counter",
        ][..],
        &["nft", "add", "table", "inet", "mine"],
        &["nft", "add", "chain", "inet", "mine", "c"],
        &[
            "nft", "add", "rule", "inet", "mine", "c", "tcp", "dport", "7", "counter",
        ],
    ] {
        w.ns_exec_ok(&w.host_ns, cmd);
    }
    let srv_ip = w.ip_of("srv", "dr");
    let d = Drift { w, srv_ip };
    for p in d.probes() {
        if let Err(e) = p.1(&d) {
            panic!("before any damage, {} fails: {e}", p.0);
        }
    }
    d
}

type Probe = fn(&Drift) -> Result<(), String>;

impl Drift {
    /// cli -> srv over the bridge.
    fn cli_to_srv(&self) -> Result<(), String> {
        self.w
            .tcp_from("cli", &self.srv_ip, 8080, 0.3)
            .and_then(nonempty)
    }

    /// outside -> host:18080 -> srv (published port; the reply needs srv's default route).
    fn published(&self) -> Result<(), String> {
        self.w
            .tcp_from_ns(&self.w.out_ns, &self.w.host_ip(), DRIFT_PORT, 0.3)
            .and_then(nonempty)
    }

    /// srv -> the outside server (default route, forwarding, masquerade).
    fn srv_to_outside(&self) -> Result<(), String> {
        self.w
            .tcp_from("srv", &self.w.out_ip(), OUT_PORT, 0.3)
            .and_then(nonempty)
    }

    fn probes(&self) -> [(&'static str, Probe); 3] {
        [
            ("cli -> srv", Drift::cli_to_srv),
            ("outside -> published port", Drift::published),
            ("srv -> outside", Drift::srv_to_outside),
        ]
    }

    /// `Reconciler.Repairs` of `GET /info` (None if absent).
    fn info_repairs(&self) -> Option<u64> {
        let (status, body) = self.w.api("GET", "/info", None);
        assert_eq!(status, 200, "GET /info: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/info json");
        v["Reconciler"]["Repairs"].as_u64()
    }

    /// `berth_reconcile_repairs_total` of `GET /metrics` (None if absent).
    fn metric_repairs(&self) -> Option<u64> {
        let (status, body) = self.w.api("GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics: {body}");
        body.lines()
            .find(|l| l.starts_with("berth_reconcile_repairs_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n as u64)
    }

    /// Damages, then polls `probe` every 20 ms (bound 5 s) and asserts the first success came
    /// within 1 s; then every probe works, the repair was logged and counted, `system check`
    /// is in sync, and the user's nft objects survived (`user_rule`: also the rule in the
    /// user chain of table inet berth).
    fn repair(&self, kind: &str, damage: impl FnOnce(), probe: Probe, user_rule: bool) {
        let w = &self.w;
        let repairs_before = self.info_repairs().unwrap_or(0);
        let metric_before = self.metric_repairs().unwrap_or(0);
        let log_mark = w.log_text().len();
        damage();
        let t0 = Instant::now();
        let mut last;
        loop {
            match probe(self) {
                Ok(()) => break,
                Err(e) => last = e,
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "repair {kind}: still broken 5 s after the damage; last probe: {last}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ms = t0.elapsed().as_millis();
        eprintln!("repair {kind}: {ms} ms");
        // Event-driven, not the 10 s periodic check: a bound well under that interval. The
        // speed itself (typically tens of ms) is a benchmark figure, not a test assertion: at a
        // load average of 7 on 2 cores this took 1.0–1.2 s once.
        assert!(
            ms <= 3000,
            "repair {kind}: took {ms} ms (> 3 s: not driven by the kernel's notification?)"
        );

        for (name, p) in self.probes() {
            if let Err(e) = p(self) {
                panic!("repair {kind}: afterwards {name} fails: {e}");
            }
        }
        let start = Instant::now();
        loop {
            let log = w.log_text();
            if log.get(log_mark..).is_some_and(|l| l.contains("repaired")) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "repair {kind}: no `repaired` line in berthd's log since the damage"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let repairs = self.info_repairs();
        assert!(
            repairs.is_some_and(|r| r > repairs_before),
            "repair {kind}: GET /info Reconciler.Repairs {repairs:?}, was {repairs_before}"
        );
        let metric = self.metric_repairs();
        assert!(
            metric.is_some_and(|r| r > metric_before),
            "repair {kind}: berth_reconcile_repairs_total {metric:?}, was {metric_before}"
        );
        let o = w.system_check(&[]);
        assert!(
            o.status.success() && stdout(&o).contains("in sync"),
            "repair {kind}: system check after the repair: {}",
            show(&o)
        );
        let mine = w.ns_exec_ok(&w.host_ns, &["nft", "list", "table", "inet", "mine"]);
        assert!(
            mine.contains("chain c") && mine.contains("tcp dport 7"),
            "repair {kind}: the user's table inet mine was changed:\n{mine}"
        );
        if user_rule {
            let user = w.ns_exec_ok(
                &w.host_ns,
                &["nft", "list", "chain", "inet", "berth", "user"],
            );
            assert!(
                user.contains("tcp dport 9"),
                "repair {kind}: the user's rule in chain user is gone:\n{user}"
            );
        }
    }
}

fn nonempty(reply: String) -> Result<(), String> {
    if reply.trim().is_empty() {
        Err("connected but got no reply".into())
    } else {
        Ok(())
    }
}

/// Proves: a running container's deleted host-side veth is recreated (container reachable
/// again) within 1 s, logged, counted; check in sync; the user's nft objects survive.
#[test]
fn drift_deleted_host_veth_is_repaired() {
    require_root!();
    let d = drift_world();
    let veth = d.w.host_veth_of("srv", "dr");
    assert!(
        d.w.host_links().contains(&veth),
        "srv's veth {veth} missing"
    );
    d.repair(
        "host veth",
        || {
            d.w.host_ip_cmd(&["link", "del", &veth]);
        },
        Drift::cli_to_srv,
        true,
    );
}

/// Proves: drift that raises no notification of its own (a bridge's `route_localnet`, which
/// published ports on 127.0.0.1 need, written back to 0) is repaired within a few check
/// intervals, long before the next full check (the 30th tick, 30 s here): by the light
/// periodic check (the sysctls and bridges of every network), or by a pass another
/// notification woke first (a pass over the host reads the sysctls too), so the log may name
/// either trigger.
#[test]
fn drift_of_a_bridge_sysctl_is_repaired_by_the_light_periodic_check() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.63.0.0/24", "sy"]);
    w.restart_daemon_args(&["--check-interval", "1"]);
    let key = format!("net.ipv4.conf.{}.route_localnet", w.bridge_of("sy"));
    assert_eq!(
        w.ns_exec_ok(&w.host_ns, &["sysctl", "-n", &key]).trim(),
        "1"
    );
    w.ns_exec_ok(&w.host_ns, &["sysctl", "-qw", &format!("{key}=0")]);
    let damaged = Instant::now();
    loop {
        let v = w.ns_exec_ok(&w.host_ns, &["sysctl", "-n", &key]);
        if v.trim() == "1" {
            break;
        }
        assert!(
            damaged.elapsed() < Duration::from_secs(10),
            "{key} is still {} 10 s after the damage (check interval 1 s)",
            v.trim()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The pass logs the repair just after writing the value back: give the line a moment.
    let logged = |log: &str| {
        log.lines()
            .any(|l| l.contains("repaired drift (") && l.contains(&key))
    };
    let mut log = w.log_text();
    for _ in 0..20 {
        if logged(&log) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        log = w.log_text();
    }
    assert!(
        logged(&log),
        "the repair of {key} is not logged as a drift repair:\n{log}"
    );
}

/// Proves: a deleted bridge of a network with running containers is recreated with its ports
/// re-attached within 1 s: containers reach each other and the published port works from
/// outside; logged, counted; check in sync; the user's nft objects survive.
#[test]
fn drift_deleted_bridge_is_repaired() {
    require_root!();
    let d = drift_world();
    let bridge = d.w.bridge_of("dr");
    assert!(
        d.w.host_links().contains(&bridge),
        "bridge {bridge} missing"
    );
    d.repair(
        "bridge",
        || {
            d.w.host_ip_cmd(&["link", "del", &bridge]);
        },
        |d| d.cli_to_srv().and_then(|()| d.published()),
        true,
    );
}

/// Proves: a container's deleted default route is put back within 1 s (it reaches the
/// outside again); logged, counted; check in sync; the user's nft objects survive.
#[test]
fn drift_deleted_container_default_route_is_repaired() {
    require_root!();
    let d = drift_world();
    repair_srv_default_route(&d, "default route");
}

/// Deletes srv's default route inside its namespace and asserts the repair ([`Drift::repair`]).
fn repair_srv_default_route(d: &Drift, kind: &str) {
    let pid = d.w.inspect("srv")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "srv has no pid");
    d.repair(
        kind,
        || {
            let o = d.w.pid_net_exec(pid, &["ip", "route", "del", "default"]);
            assert!(o.status.success(), "ip route del default: {}", show(&o));
        },
        Drift::srv_to_outside,
        true,
    );
}

/// Proves: after a restart, an adopted container's namespace is watched from start-up's own
/// read of it (one thread inside it subscribes, then reads): its deleted default route is put
/// back by the notification (within the repair bound, far under the periodic full check),
/// logged and counted; check in sync.
#[test]
fn drift_in_an_adopted_containers_namespace_is_repaired_after_a_restart() {
    require_root!();
    let d = drift_world();
    d.w.restart_daemon(false);
    repair_srv_default_route(&d, "default route of an adopted container");
}

/// Proves: `nft flush table inet berth` is repaired within 1 s (the published port works from
/// outside again); logged, counted; check in sync; the user's own table survives.
#[test]
fn drift_flushed_nft_table_is_repaired() {
    require_root!();
    let d = drift_world();
    d.repair(
        "nft flush",
        || {
            d.w.ns_exec_ok(&d.w.host_ns, &["nft", "flush", "table", "inet", "berth"]);
        },
        Drift::published,
        false,
    );
}

/// Proves: `nft delete table inet berth` is repaired within 1 s (the published port works
/// from outside again); logged, counted; check in sync; the user's own table survives.
#[test]
fn drift_deleted_nft_table_is_repaired() {
    require_root!();
    let d = drift_world();
    d.repair(
        "nft delete",
        || {
            d.w.ns_exec_ok(&d.w.host_ns, &["nft", "delete", "table", "inet", "berth"]);
        },
        Drift::published,
        false,
    );
}

/// Proves: with `--no-drift-repair` a deleted host veth stays deleted (no notification or
/// timer repair), `system check` exits 1 listing a step that names the veth or the endpoint,
/// and does not repair it either (dry run); a normal restart repairs it and check exits 0.
#[test]
fn no_drift_repair_flag_only_reports() {
    require_root!();
    let w = World::new();
    w.restart_daemon_args(&["--no-drift-repair"]);
    w.berth_ok(&["network", "create", "--subnet", "10.65.0.0/24", "nd"]);
    w.run_server("srv", &["--network", "nd"], 8080);
    w.run_d("cli", &["--network", "nd"], &["sleep", "600"]);
    w.wait_container_port("srv", 8080);
    let srv_ip = w.ip_of("srv", "nd");
    w.assert_reaches("cli", &srv_ip, 8080);
    let ep = w.inspect("srv")["NetworkSettings"]["Networks"]["nd"]["EndpointID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let veth = w.host_veth_of("srv", "nd");
    w.host_ip_cmd(&["link", "del", &veth]);
    // Longer than the repair bound.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !w.host_links().contains(&veth),
        "--no-drift-repair: {veth} was recreated without an API call or restart"
    );
    let o = w.system_check(&[]);
    eprintln!("system check with {veth} missing: {}", show(&o));
    assert_eq!(code(&o), 1, "check must exit 1 with drift: {}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&veth) || out.contains(&ep[..12]),
        "check must list a step naming {veth} or endpoint {}: {out}",
        &ep[..12]
    );
    let o = w.system_check(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("check --format json: {e}: {}", show(&o)));
    assert_eq!(v["InSync"], json!(false), "json: {v}");
    assert!(
        v["Steps"].as_array().is_some_and(|s| !s.is_empty()
            && s.iter().all(|st| st["Action"].is_string()
                && st["Object"].is_string()
                && st["Reason"].is_string())),
        "json Steps must be a non-empty list of {{Action, Object, Reason}}: {v}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !w.host_links().contains(&veth),
        "system check repaired {veth}: it must be a dry run"
    );

    w.restart_daemon_checked(false);
    let start = Instant::now();
    while w.tcp_from("cli", &srv_ip, 8080, 0.3).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "after a normal restart srv is still unreachable; links {:?}",
            w.host_links()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "check after the restart: {}",
        show(&o)
    );
    let o = w.system_check(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("check --format json: {e}: {}", show(&o)));
    assert_eq!(v["InSync"], json!(true), "json: {v}");
}

// ---------------------------------------------------------------------------------------------
// kill -9 in the middle of `run -d`

/// Stage-1 and stage-2 init processes of container `id`.
fn procs_of(w: &World, id: &str) -> Vec<common::InitProc> {
    w.init_procs()
        .into_iter()
        .filter(|p| p.cmdline.contains(id))
        .collect()
}

fn stage1_count(w: &World, id: &str) -> usize {
    procs_of(w, id)
        .iter()
        .filter(|p| p.stage == "__berth_init")
        .count()
}

/// Whether the failpoint `fp` fired: berthd logged it, or it is gone (waits ≤ 5 s for it to
/// die once it logged).
fn aborted(w: &World, fp: &str) -> bool {
    let line = format!("failpoint {fp} reached");
    let fired = w.log_text().contains(&line) || !w.daemon_alive();
    if fired {
        let st = w.wait_daemon_exit(Duration::from_secs(5));
        assert!(
            st.is_some(),
            "{fp}: berthd logged {line:?} but did not abort within 5 s"
        );
        eprintln!("{fp}: berthd ended: {st:?}");
    }
    fired
}

/// Proves: with berthd killed (failpoint abort, no cleanup) after each step of `run -d -p`
/// and restarted: a container whose init still runs is `running` in inspect with that pid and
/// reaches a peer; `start` never makes a second copy; `rm -f` leaves no process of it.
#[test]
fn kill9_at_every_step_of_run_d_never_duplicates_a_container() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.66.0.0/24", "k9"]);
    w.run_server("peer", &["--network", "k9"], 8080);
    w.wait_container_port("peer", 8080);
    let peer_ip = w.ip_of("peer", "k9");
    let peer_id = w.inspect("peer")["Id"].as_str().unwrap_or("").to_string();
    let helper = w.helper("peer_server.py");
    let mut boundaries = 0;
    for k in 1..=30 {
        let fp = format!("start:{k}");
        w.restart_daemon_env(false, &[("BERTH_FAILPOINT", fp.as_str())]);
        let o = w.berth(&[
            "run",
            "-d",
            "--name",
            "c6",
            "--network",
            "k9",
            "-p",
            "18086:8080",
            "python3",
            &helper,
            "0.0.0.0",
            "8080",
        ]);
        let fired = aborted(&w, &fp);
        eprintln!("{fp}: run -d: {} (aborted: {fired})", show(&o));
        w.restart_daemon_checked(false);
        if !fired {
            assert!(o.status.success(), "{fp}: run -d failed: {}", show(&o));
            w.wait_running("c6");
            w.wait_container_port("c6", 8080);
            w.assert_reaches("c6", &peer_ip, 8080);
            w.berth_ok(&["rm", "-f", "c6"]);
            break;
        }
        boundaries = k;
        if code(&w.berth(&["inspect", "--type", "container", "c6"])) != 0 {
            // `run -d` is one request (`create?start=1`): the create is made durable by the
            // start's commit, so a kill before that leaves no container at all, and no
            // process either (the start-up ends one it does not know, with its directory).
            let start = Instant::now();
            loop {
                let stray: Vec<common::InitProc> = w
                    .init_procs()
                    .into_iter()
                    .filter(|p| !p.cmdline.contains(&peer_id))
                    .collect();
                if stray.is_empty() {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{fp}: c6 is not stored, but processes are left: {stray:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{fp}: after restart: no c6 (its create was not durable yet), no process");
            continue;
        }
        let v = w.inspect("c6");
        let id = v["Id"].as_str().expect("c6 Id").to_string();
        let procs = procs_of(&w, &id);
        eprintln!("{fp}: after restart: State={} procs={procs:?}", v["State"]);
        if procs.is_empty() {
            assert_ne!(
                v["State"]["Status"].as_str(),
                Some("running"),
                "{fp}: inspect says running but no process of c6 exists"
            );
        } else {
            assert_eq!(
                v["State"]["Status"].as_str(),
                Some("running"),
                "{fp}: c6's init runs ({procs:?}) but inspect says {}",
                v["State"]
            );
            let pid = v["State"]["Pid"].as_i64().unwrap_or(0);
            assert!(
                procs.iter().any(|p| i64::from(p.pid) == pid),
                "{fp}: inspect Pid {pid} is none of c6's processes {procs:?}"
            );
            w.wait_container_port("c6", 8080);
            w.assert_reaches("c6", &peer_ip, 8080);
        }
        // `start` (running or not) leaves exactly one copy, running and connected.
        let (status, body) = w.api("POST", "/containers/c6/start", None);
        assert!(
            matches!(status, 204 | 304),
            "{fp}: start c6: HTTP {status} {body}"
        );
        w.wait_running("c6");
        let n = stage1_count(&w, &id);
        assert_eq!(
            n,
            1,
            "{fp}: {n} copies of c6 after start: {:?}",
            procs_of(&w, &id)
        );
        w.wait_container_port("c6", 8080);
        w.assert_reaches("c6", &peer_ip, 8080);
        w.berth_ok(&["rm", "-f", "c6"]);
        let start = Instant::now();
        while !procs_of(&w, &id).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{fp}: processes of c6 left after rm -f: {:?}",
                procs_of(&w, &id)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("start: {boundaries} step boundaries");
    assert!(
        boundaries >= 1,
        "BERTH_FAILPOINT=start:1 never fired: `start` has no step boundaries"
    );
}

/// `berth_reconcile_passes_total` of `GET /metrics`.
fn passes_total(w: &World) -> u64 {
    let (status, body) = w.api("GET", "/metrics", None);
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .find(|l| l.starts_with("berth_reconcile_passes_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// Proves: a container berthd starts is watched from the start itself (its namespace's id is
/// the one berthd gave it when it made it): no pass runs over it after `run -d` answered —
/// none in the next second names it (berthd's debug log), where a pass 200 ms after every
/// start used to cover the window before a late registration — and its default route,
/// deleted at once (inside that former window), is put back by the notification.
#[test]
fn a_started_containers_namespace_is_watched_from_its_start() {
    require_root!();
    let w = World::new();
    // No periodic check in the second watched below.
    w.restart_daemon_args(&["--check-interval", "3600"]);
    w.berth_ok(&["network", "create", "--subnet", "10.67.0.0/24", "ws"]);
    // The first start opens the all-namespace subscription.
    w.run_d("warm", &["--network", "ws"], &["sleep", "600"]);
    let mark = w.log_text().len();
    let id = w.run_d("watched", &["--network", "ws"], &["sleep", "600"]);
    let id = id.trim();
    let pid = w.inspect("watched")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "watched has no pid");
    std::thread::sleep(Duration::from_secs(1));
    // Passes over the host (the bridge's own IPv6 address settling, say) may run; none over
    // this container.
    let over_it = format!("Container(\"{id}\")");
    let log = w.log_text();
    let passes: Vec<&str> = log
        .get(mark..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("drift loop: looked") && l.contains(&over_it))
        .collect();
    assert!(
        passes.is_empty(),
        "a pass over the started container: {passes:?}"
    );
    let before = passes_total(&w);
    let o = w.pid_net_exec(pid, &["ip", "route", "del", "default"]);
    assert!(o.status.success(), "ip route del default: {}", show(&o));
    let t0 = Instant::now();
    loop {
        let routes = w.pid_net_exec(pid, &["ip", "route", "show", "default"]);
        if !stdout(&routes).trim().is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the deleted default route is still missing 3 s later (no notification?)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(passes_total(&w) > before, "the repair ran no pass");
}
