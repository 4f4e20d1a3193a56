//! End-to-end: berth hosts joined into a cluster through etcd (issue 11, membership part).
//!
//! Three [`World`]s are three hosts (each its own "host" namespace and berthd). An underlay
//! namespace `<p>u` holds a bridge with the hosts' underlay NICs (`ul0`, 10.77.0.N/24 in each
//! host namespace) and an etcd member (Debian's etcd-server) listening on 10.77.0.254 inside it,
//! started by the test and killed by PID. Everything is removed on drop, also while unwinding.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{code, sh, sh_ok, show, stderr, stdout, World};

const ETCD: &str = "10.77.0.254";
const TTL: u64 = 3;

struct Underlay {
    ns: String,
    etcd_pid: Option<u32>,
    data: std::path::PathBuf,
}

impl Underlay {
    fn new(w: &World, hosts: &[&World]) -> Underlay {
        let u = Underlay {
            ns: format!("{}u", w.prefix),
            etcd_pid: None,
            data: w.dir.join("etcd-data"),
        };
        sh_ok("ip", &["netns", "add", &u.ns]);
        sh_ok("ip", &["-n", &u.ns, "link", "set", "lo", "up"]);
        sh_ok("ip", &["-n", &u.ns, "link", "add", "br0", "type", "bridge"]);
        sh_ok(
            "ip",
            &[
                "-n",
                &u.ns,
                "addr",
                "add",
                &format!("{ETCD}/24"),
                "dev",
                "br0",
            ],
        );
        sh_ok("ip", &["-n", &u.ns, "link", "set", "br0", "up"]);
        for (i, h) in hosts.iter().enumerate() {
            let port = format!("p{i}");
            sh_ok(
                "ip",
                &[
                    "-n", &u.ns, "link", "add", &port, "type", "veth", "peer", "name", "ul0",
                    "netns", &h.host_ns,
                ],
            );
            sh_ok("ip", &["-n", &u.ns, "link", "set", &port, "master", "br0"]);
            sh_ok("ip", &["-n", &u.ns, "link", "set", &port, "up"]);
            let addr = format!("10.77.0.{}/24", i + 1);
            sh_ok(
                "ip",
                &["-n", &h.host_ns, "addr", "add", &addr, "dev", "ul0"],
            );
            sh_ok("ip", &["-n", &h.host_ns, "link", "set", "ul0", "up"]);
        }
        u
    }

    /// `etcdctl --endpoints http://ETCD:2379 ARGS…` in the underlay; its output.
    fn etcdctl(&self, args: &[&str]) -> String {
        let endpoints = format!("http://{ETCD}:2379");
        let mut cmd = vec![
            "netns",
            "exec",
            &self.ns,
            "etcdctl",
            "--endpoints",
            &endpoints,
        ];
        cmd.extend_from_slice(args);
        stdout(&sh("ip", &cmd))
    }

    /// Gives host `i` (`h`) of the underlay an MTU of `mtu` on both ends of its NIC.
    fn set_mtu(&self, i: usize, h: &World, mtu: u32) {
        let mtu = mtu.to_string();
        let port = format!("p{i}");
        sh_ok("ip", &["-n", &self.ns, "link", "set", &port, "mtu", &mtu]);
        sh_ok("ip", &["-n", &h.host_ns, "link", "set", "ul0", "mtu", &mtu]);
    }

    /// Starts (or restarts, on the same data) the etcd member; waits until it answers.
    fn start_etcd(&mut self, w: &World) {
        let data = self.data.display().to_string();
        let pid = self.spawn_member(w, "e0", ETCD, &data, &format!("e0=http://{ETCD}:2380"));
        self.etcd_pid = Some(pid);
        self.wait_healthy(&format!("http://{ETCD}:2379"));
    }

    /// One etcd member `name` on `ip` (client port 2379, peer port 2380) in the underlay.
    fn spawn_member(&self, w: &World, name: &str, ip: &str, data: &str, initial: &str) -> u32 {
        let url = format!("http://{ip}:2379");
        let peer = format!("http://{ip}:2380");
        w.spawn_in(
            &self.ns,
            &[
                "etcd",
                "--name",
                name,
                "--data-dir",
                data,
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                initial,
            ],
        )
    }

    /// Waits (≤ 30 s) until `etcdctl endpoint health` succeeds for `endpoints`.
    fn wait_healthy(&self, endpoints: &str) {
        let start = Instant::now();
        loop {
            let o = sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns,
                    "etcdctl",
                    "--endpoints",
                    endpoints,
                    "--dial-timeout=1s",
                    "endpoint",
                    "health",
                ],
            );
            if o.status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not come up: {}",
                show(&o)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a 3-member etcd cluster on 10.77.0.251-253 (addresses of the underlay bridge);
    /// returns the members' PIDs, in order.
    fn start_etcd_cluster(&mut self, w: &World) -> Vec<u32> {
        let ips = ["10.77.0.251", "10.77.0.252", "10.77.0.253"];
        for ip in ips {
            sh_ok(
                "ip",
                &[
                    "-n",
                    &self.ns,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "br0",
                ],
            );
        }
        let initial: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("m{i}=http://{ip}:2380"))
            .collect();
        let initial = initial.join(",");
        let mut pids = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let data = w.dir.join(format!("etcd-m{i}")).display().to_string();
            pids.push(self.spawn_member(w, &format!("m{i}"), ip, &data, &initial));
        }
        let eps = ips
            .iter()
            .map(|ip| format!("http://{ip}:2379"))
            .collect::<Vec<_>>()
            .join(",");
        self.wait_healthy(&eps);
        pids
    }

    fn kill_etcd(&mut self) {
        if let Some(pid) = self.etcd_pid.take() {
            sh_ok("kill", &["-9", &pid.to_string()]);
            let start = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        self.kill_etcd();
        if Path::new("/run/netns").join(&self.ns).exists() {
            let o = sh("ip", &["netns", "del", &self.ns]);
            if !o.status.success() {
                eprintln!("[harness] ip netns del {}: {}", self.ns, show(&o));
            }
        }
    }
}

fn cluster_args(name: &str) -> Vec<String> {
    [
        "--cluster-store",
        &format!("etcd://{ETCD}:2379"),
        "--advertise-addr",
        "ul0",
        "--node-name",
        name,
        "--cluster-lease-ttl",
        &TTL.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn join(w: &World, name: &str) -> Result<(), String> {
    // Overlay namespaces are mounts of berthd's: kept across its restarts, as on a host.
    w.keep_mounts();
    let args = cluster_args(name);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    w.try_restart_daemon_full(false, &args, &[])
}

/// `berth node ls --format json` as (name, addr, self) sorted by name.
fn nodes(w: &World) -> Result<Vec<(String, String, bool)>, String> {
    let o = w.berth(&["node", "ls", "--format", "json"]);
    if !o.status.success() {
        return Err(show(&o));
    }
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&o)).map_err(|e| format!("{e}: {}", show(&o)))?;
    let mut out: Vec<(String, String, bool)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["Name"].as_str().unwrap_or_default().to_string(),
                        n["Addr"].as_str().unwrap_or_default().to_string(),
                        n["Self"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    Ok(out)
}

fn names(w: &World) -> Vec<String> {
    nodes(w)
        .unwrap_or_else(|e| panic!("node ls: {e}"))
        .into_iter()
        .map(|n| n.0)
        .collect()
}

/// Waits (bounded by `limit`) until `w` lists exactly `want`; returns how long it took.
fn wait_names(w: &World, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = names(w);
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "nodes after {:?}: {got:?}, want {want:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Proves: three hosts with `--cluster-store etcd://… --advertise-addr ul0` see each other in
/// `berth node ls` with the underlay address of ul0 and `Self` on themselves; `/info` carries
/// Docker's ClusterStore/ClusterAdvertise and a healthy Cluster; a host killed with SIGKILL and
/// not restarted is forgotten within the lease TTL + 1.5 s; a host restarted (SIGKILL) within the
/// TTL never disappears from the others (its lease is adopted); another host claiming a live
/// node's name is refused at start-up with a message naming the holder.
#[test]
fn hosts_join_see_each_other_and_forget_the_dead() {
    require_root!();
    let (a, b, c) = (World::new(), World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b, &c]);
    u.start_etcd(&a);
    for (w, n) in [(&a, "host-a"), (&b, "host-b"), (&c, "host-c")] {
        join(w, n).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    let all = ["host-a", "host-b", "host-c"];
    wait_names(&a, &all, Duration::from_secs(5));
    let list = nodes(&b).expect("node ls");
    assert_eq!(
        list,
        vec![
            ("host-a".into(), "10.77.0.1".into(), false),
            ("host-b".into(), "10.77.0.2".into(), true),
            ("host-c".into(), "10.77.0.3".into(), false),
        ]
    );
    let table = w_ok(&c, &["node", "ls"]);
    assert!(table.lines().any(|l| l.starts_with("* host-c")), "{table}");
    let (st, body) = a.api("GET", "/info", None);
    assert_eq!(st, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).expect("info json");
    assert_eq!(info["ClusterStore"], format!("etcd://{ETCD}:2379"));
    assert_eq!(info["ClusterAdvertise"], "10.77.0.1");
    assert_eq!(info["Cluster"]["Healthy"], true, "{info}");
    assert_eq!(info["Cluster"]["Nodes"], 3, "{info}");
    let text = w_ok(&a, &["info"]);
    assert!(text.contains("healthy, 3 live node(s)"), "{text}");

    // A restart within the TTL: host-b never drops out of host-a's view.
    b.stop_daemon(true);
    let restarted = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let start = Instant::now();
            let mut min = usize::MAX;
            while start.elapsed() < Duration::from_secs(TTL + 2) {
                min = min.min(names(&a).len());
                std::thread::sleep(Duration::from_millis(100));
            }
            min
        });
        join(&b, "host-b").unwrap_or_else(|e| panic!("host-b again: {e}"));
        watcher.join().expect("watcher")
    });
    assert_eq!(
        restarted, 3,
        "host-b vanished during a restart within the TTL"
    );
    assert!(
        b.log_text().contains("adopted=true"),
        "the restarted host-b should adopt its live lease"
    );

    // The same name from another address while host-a lives: refused, naming the holder.
    let e = join(&c, "host-a").expect_err("a live node's name must be refused");
    assert!(
        e.contains("node name \"host-a\" is held by a live host at 10.77.0.1"),
        "{e}"
    );
    join(&c, "host-c").unwrap_or_else(|e| panic!("host-c again: {e}"));

    // A host that dies for good is forgotten within TTL + 1.5 s.
    c.stop_daemon(true);
    let took = wait_names(
        &a,
        &["host-a", "host-b"],
        Duration::from_millis(TTL * 1000 + 1500),
    );
    eprintln!("host-c forgotten {took:?} after its berthd was killed (TTL {TTL} s)");
    assert_eq!(names(&b), ["host-a", "host-b"]);
    u.kill_etcd();
}

/// Proves: with etcd down, berthd keeps serving local work (a bridge network is created and a
/// container on it answers), `node ls` fails within the request timeout with a 503 that names
/// etcd, and `berth info` says UNREACHABLE; when etcd is back, the hosts are listed again
/// without duplicates. A berthd started while etcd is down starts, and joins once etcd is up.
/// `-d overlay` without a cluster store is refused with the flags to add.
#[test]
fn etcd_down_and_back_and_overlay_refusals() {
    require_root!();
    let (a, b) = (World::new(), World::new());
    // Without a cluster store.
    let o = a.berth(&["network", "create", "-d", "overlay", "ov"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("needs a cluster store: start berthd with --cluster-store"),
        "{}",
        show(&o)
    );
    let o = a.berth(&["node", "ls"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not part of a cluster"),
        "{}",
        show(&o)
    );

    let mut u = Underlay::new(&a, &[&a, &b]);
    u.start_etcd(&a);
    join(&a, "host-a").unwrap_or_else(|e| panic!("{e}"));
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));

    u.kill_etcd();
    let t = Instant::now();
    let o = a.berth(&["node", "ls"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("unreachable") && stderr(&o).contains(ETCD),
        "{}",
        show(&o)
    );
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let (st, _) = a.api("GET", "/cluster/nodes", None);
    assert_eq!(st, 503);
    let text = w_ok(&a, &["info"]);
    assert!(text.contains("UNREACHABLE"), "{text}");
    // Local work goes on.
    a.berth_ok(&["network", "create", "--subnet", "10.91.0.0/24", "local"]);
    a.run_server("srv", &["--network", "local"], 8080);
    a.wait_container_port("srv", 8080);
    // A host (re)started while etcd is down comes up and waits for it.
    join(&b, "host-b").unwrap_or_else(|e| panic!("host-b with etcd down: {e}"));

    u.start_etcd(&a);
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(TTL * 3 + 5));
    wait_names(&b, &["host-a", "host-b"], Duration::from_secs(TTL * 3 + 5));
    let text = w_ok(&b, &["info"]);
    assert!(text.contains("healthy, 2 live node(s)"), "{text}");
    u.kill_etcd();
}

/// Two hosts `host-a` and `host-b` on an underlay with one etcd member, both listed.
fn two_hosts() -> (World, World, Underlay) {
    two_hosts_with(&[])
}

/// [`two_hosts`], host-b's berthd started with `b_extra` after its cluster arguments.
fn two_hosts_with(b_extra: &[&str]) -> (World, World, Underlay) {
    let (a, b) = (World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b]);
    u.start_etcd(&a);
    join(&a, "host-a").unwrap_or_else(|e| panic!("{e}"));
    let mut args = cluster_args("host-b");
    args.extend(b_extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.keep_mounts();
    b.try_restart_daemon_full(false, &args, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));
    (a, b, u)
}

fn w_ok(w: &World, args: &[&str]) -> String {
    let o = w.berth(args);
    assert!(o.status.success(), "berth {args:?}: {}", show(&o));
    stdout(&o)
}

/// `berth network ls` names on `w`.
fn network_names(w: &World) -> Vec<String> {
    w_ok(w, &["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// `berth network create -d overlay --subnet SUBNET [EXTRA…] NAME` on `w`.
/// Waits (≤ 5 s) until `w` lists every network of `names` (a network made on another host,
/// learned from etcd); returns how long it took.
fn wait_networks(w: &World, names: &[&str]) -> Duration {
    wait_until(
        &format!("{} on {}", names.join(" and "), w.host_ns),
        Duration::from_secs(5),
        || {
            let have = network_names(w);
            names.iter().all(|n| have.iter().any(|h| h == n))
        },
    )
}

fn create_overlay(w: &World, subnet: &str, name: &str, extra: &[&str]) {
    let mut args = vec!["network", "create", "-d", "overlay", "--subnet", subnet];
    args.extend_from_slice(extra);
    args.push(name);
    w.berth_ok(&args);
}

/// `iperf3 -c IP -p PORT -t 3 -J` from container `from` of `w`, retried (bounded) until the
/// server in the other container answers.
fn iperf_from(w: &World, from: &str, ip: &str, port: u16) -> std::process::Output {
    let port = port.to_string();
    let start = Instant::now();
    loop {
        let o = w.exec(from, &["iperf3", "-c", ip, "-p", &port, "-t", "3", "-J"]);
        if o.status.success() || start.elapsed() > Duration::from_secs(10) {
            return o;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Gbit/s received in `iperf3 -J` output (0 when it failed).
fn gbps(o: &std::process::Output) -> f64 {
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap_or_default();
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// Runs `cmd` in `w`'s namespace of the overlay network whose VXLAN port is `vx`
/// (`bvx-<9 hex of its id>`, in `ov-<the same>`).
fn in_ov(w: &World, vx: &str, cmd: &[&str]) -> std::process::Output {
    w.ov_exec(vx.trim_start_matches("bvx-"), cmd)
}

/// The forwarding entries (`bridge fdb show dev DEV`) with a remote VTEP, in `w`'s overlay
/// namespace of VXLAN port `dev`.
fn fdb_dsts(w: &World, dev: &str) -> String {
    let o = in_ov(w, dev, &["bridge", "fdb", "show", "dev", dev]);
    stdout(&o)
        .lines()
        .filter(|l| l.contains(" dst "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Proves the overlay network across hosts (VXLAN between the hosts' bridges, over the
/// underlay): created on one host it appears on the other; containers on different hosts get
/// different addresses from one subnet and talk TCP by address and by name (the other host's
/// DNS answers), with the overlay MTU (1450) on their interface; egress leaves through the
/// container's own host, masqueraded; `-p` publishes on the container's host; a container of a bridge
/// network of the same host cannot reach them; `network rm` is refused while a host has an
/// endpoint, naming it; a host whose berthd dies is dropped from the other's VXLAN forwarding
/// entries within the TTL + 1.5 s; ten concurrent runs on two hosts in one /28 get ten
/// different addresses; removal on one host removes it from the other.
#[test]
fn overlay_network_spans_hosts() {
    require_root!();
    let (a, b, mut u) = two_hosts();

    create_overlay(&a, "10.50.0.0/24", "app", &[]);
    let took = wait_networks(&b, &["app"]);
    eprintln!("overlay network visible on the other host after {took:?}");
    let id_a = a.network_inspect("app")["Id"].clone();
    assert_eq!(
        b.network_inspect("app")["Id"],
        id_a,
        "same id on every host"
    );
    assert_eq!(b.network_inspect("app")["Driver"], "overlay");
    assert_eq!(b.network_inspect("app")["Scope"], "global");
    let vx = format!("bvx-{}", &id_a.as_str().expect("id")[..9]);

    a.run_server("db", &["--network", "app"], 8080);
    a.wait_container_port("db", 8080);
    b.run_server("web", &["--network", "app"], 8081);
    b.wait_container_port("web", 8081);
    let (ip_db, ip_web) = (a.ip_of("db", "app"), b.ip_of("web", "app"));
    assert!(ip_db.starts_with("10.50.0.") && ip_web.starts_with("10.50.0."));
    assert_ne!(ip_db, ip_web, "two hosts must not hand out one address");

    // Across hosts, both ways, by address and by name.
    let r = b.assert_reaches("web", &ip_db, 8080);
    assert!(
        r.contains(&ip_web),
        "db saw the client as {r}, not {ip_web}"
    );
    a.assert_reaches("db", &ip_web, 8081);
    let start = Instant::now();
    loop {
        match b.tcp_from("web", "db", 8080, 2.0) {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "web on host-b should reach db on host-a by name: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let link = b.exec_ok("web", &["ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1450"), "{link}");
    // The network's bridge and VXLAN port are in its namespace, not in the host's, and the
    // frames bridged there skip the inet hooks (br_netfilter off there, or not loaded);
    // the containers' ports are guarded there.
    let bridge = vx.replace("bvx-", "berth-");
    for w in [&a, &b] {
        for dev in [&bridge, &vx] {
            assert!(
                !sh("ip", &["-n", &w.host_ns, "link", "show", dev])
                    .status
                    .success(),
                "{dev} in the host's namespace"
            );
            assert!(in_ov(w, &vx, &["ip", "link", "show", dev]).status.success());
        }
        let o = in_ov(
            w,
            &vx,
            &["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"],
        );
        assert!(
            !o.status.success() || stdout(&o).trim() == "0",
            "bridge-nf-call-iptables in the overlay namespace: {}",
            show(&o)
        );
        let guarded = stdout(&in_ov(
            w,
            &vx,
            &["nft", "list", "set", "bridge", "berth", "guarded"],
        ));
        assert!(guarded.contains("\"vb"), "{guarded}");
    }
    assert!(
        fdb_dsts(&b, &vx).contains("dst 10.77.0.1"),
        "{}",
        fdb_dsts(&b, &vx)
    );
    // inspect: the VXLAN id and the peers (hosts with endpoints), as Docker shows them.
    let ins = a.network_inspect("app");
    assert_eq!(
        ins["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4096",
        "{ins}"
    );
    assert_eq!(
        ins["Peers"],
        serde_json::json!([{"Name": "host-a", "IP": "10.77.0.1"}, {"Name": "host-b", "IP": "10.77.0.2"}]),
        "{ins}"
    );
    // node ls counts each host's published endpoints.
    let o = w_ok(&a, &["node", "ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o).expect("json");
    let eps: Vec<(String, u64)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|n| {
            (
                n["Name"].as_str().unwrap_or_default().to_string(),
                n["Endpoints"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        eps,
        [("host-a".to_string(), 1), ("host-b".to_string(), 1)],
        "{o}"
    );

    // Egress through the container's own host (masqueraded to its address), and a published
    // port of an overlay container on its host, from that host's outside.
    let helper = a.helper("peer_server.py");
    let out_ip = a.out_ip();
    a.spawn_in(&a.out_ns.clone(), &["python3", &helper, &out_ip, "7000"]);
    a.wait_port(&a.out_ns, &out_ip, 7000);
    let seen = a.assert_reaches("db", &out_ip, 7000);
    assert_eq!(
        seen.trim(),
        a.host_ip(),
        "egress must be masqueraded to host-a's address"
    );
    a.run_server("pub", &["--network", "app", "-p", "9090:8090"], 8090);
    a.wait_container_port("pub", 8090);
    let r = a
        .tcp_from_ns(&a.out_ns, &a.host_ip(), 9090, 3.0)
        .unwrap_or_else(|e| panic!("published port of an overlay container: {e}"));
    assert!(r.contains(&a.out_ip()), "{r}");
    a.berth_ok(&["rm", "-f", "pub"]);

    // Isolation: a bridge network's container on host-b does not reach the overlay's.
    b.berth_ok(&["network", "create", "--subnet", "10.92.0.0/24", "side"]);
    b.run_server("other", &["--network", "side"], 8082);
    b.wait_container_port("other", 8082);
    b.assert_blocked("other", &ip_web, 8081);

    // host-b's berthd dies (its containers keep running): host-a forgets its endpoints.
    b.stop_daemon(true);
    let took = wait_until(
        "host-b's entries gone from host-a",
        Duration::from_millis(TTL * 1000 + 1500),
        || !fdb_dsts(&a, &vx).contains("dst 10.77.0.2"),
    );
    eprintln!("host-b's endpoints dropped by host-a {took:?} after its berthd was killed");
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "host-b's entries back on host-a",
        Duration::from_secs(5),
        || fdb_dsts(&a, &vx).contains("dst 10.77.0.2"),
    );
    b.assert_reaches("web", &ip_db, 8080);

    // Concurrent runs on both hosts in a small subnet: every address handed out once.
    create_overlay(&a, "10.51.0.0/28", "race", &[]);
    wait_networks(&b, &["race"]);
    assert_unique_concurrent_addresses(&a, &b, "race", 5, |w: &World, c: &str| w.ip_of(c, "race"));
    b.berth_ok(&["network", "rm", "race"]);

    // Removal: refused on host-b while host-a still has an endpoint (naming host-a); once the
    // containers are gone on both hosts, rm on host-b removes it from host-a too.
    b.berth_ok(&["rm", "-f", "web"]);
    let o = b.berth(&["network", "rm", "app"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("active endpoints on host(s) host-a"),
        "{}",
        show(&o)
    );
    a.berth_ok(&["rm", "-f", "db"]);
    b.berth_ok(&["network", "rm", "app"]);
    wait_until("app gone from host-a", Duration::from_secs(5), || {
        !network_names(&a).contains(&"app".to_string())
    });
    // The namespace goes with its bridge, VXLAN port and the host's uplink to it.
    wait_until(
        "overlay namespace gone from host-a",
        Duration::from_secs(5),
        || {
            !in_ov(&a, &vx, &["ip", "link", "show", &vx])
                .status
                .success()
        },
    );
    let uplink = vx.replace("bvx-", "bup-");
    assert!(!sh("ip", &["-n", &a.host_ns, "link", "show", &uplink])
        .status
        .success());
    u.kill_etcd();
}

/// Proves, with real packets across two hosts: an `--internal` overlay joins its containers
/// across hosts but has no uplink (nothing routed out: no egress, the host itself has no route
/// to it); two overlays are isolated from each other on either host; `enable_icc=false` on an
/// overlay is refused (it would isolate one host's ports, not the tunnel); and
/// `explain --verify` of overlay containers agrees with the kernel (the host reaches a
/// routed overlay's container through its uplink, not an internal one's).
#[test]
fn overlay_internal_and_isolation_between_overlays() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.60.0.0/24", "front", &[]);
    create_overlay(&a, "10.61.0.0/24", "vault", &["--internal"]);
    wait_networks(&b, &["front", "vault"]);
    let o = a.berth(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.62.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("not supported by the overlay driver"),
        "{}",
        show(&o)
    );

    a.run_server("f1", &["--network", "front"], 8080);
    a.run_server("v1", &["--network", "vault"], 8081);
    b.run_server("f2", &["--network", "front"], 8082);
    b.run_server("v2", &["--network", "vault"], 8083);
    for (w, c, p) in [
        (&a, "f1", 8080),
        (&a, "v1", 8081),
        (&b, "f2", 8082),
        (&b, "v2", 8083),
    ] {
        w.wait_container_port(c, p);
    }
    let (f1, v1) = (a.ip_of("f1", "front"), a.ip_of("v1", "vault"));
    let (f2, v2) = (b.ip_of("f2", "front"), b.ip_of("v2", "vault"));

    // The internal overlay spans the hosts, by address and by name.
    b.assert_reaches("v2", &v1, 8081);
    a.assert_reaches("v1", &v2, 8083);
    reaches_by_name(&b, "v2", "v1", 8081, Duration::from_secs(5));
    // Two overlays are isolated, on one host and across hosts, both ways.
    a.assert_blocked("f1", &v1, 8081);
    a.assert_blocked("v1", &f1, 8080);
    b.assert_blocked("f2", &v1, 8081);
    b.assert_blocked("v2", &f1, 8080);
    // The routed overlay still spans the hosts.
    b.assert_reaches("f2", &f1, 8080);
    a.assert_reaches("f1", &f2, 8082);

    // Nothing routed out of the internal overlay: no egress; and no uplink into it.
    let helper = a.helper("peer_server.py");
    let out_ip = a.out_ip();
    a.spawn_in(&a.out_ns.clone(), &["python3", &helper, &out_ip, "7000"]);
    a.wait_port(&a.out_ns, &out_ip, 7000);
    a.assert_reaches("f1", &out_ip, 7000);
    a.assert_blocked("v1", &out_ip, 7000);
    let vault_id = a.network_inspect("vault")["Id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let uplink = format!("bup-{}", &vault_id[..9]);
    assert!(
        !sh("ip", &["-n", &a.host_ns, "link", "show", &uplink])
            .status
            .success(),
        "an internal overlay has no uplink"
    );
    assert!(a.tcp_from_ns(&a.host_ns, &v1, 8081, 1.5).is_err());
    assert!(a.tcp_from_ns(&a.host_ns, &f1, 8080, 3.0).is_ok());

    // explain --verify: the plan's verdicts (host through the uplink; no route into the
    // internal overlay; the other overlay isolated) are what the kernel does.
    for (c, net) in [("f1", "front"), ("v1", "vault")] {
        let o = a.berth(&["explain", "--verify", "--format", "json", c]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("explain --verify {c}: {e}: {}", show(&o)));
        assert_eq!(code(&o), 0, "verify of {c} should agree: {:#}", v["Verify"]);
        let host = v["Inbound"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["Peer"] == "the host"))
            .unwrap_or_else(|| panic!("no host flow for {c}: {v:#}"));
        assert_eq!(host["Allowed"], c == "f1", "{host}");
        assert_eq!(host["Verified"], "agrees", "{host}");
        let remote = format!("containers of network {net} on other hosts");
        assert!(
            v["Inbound"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["Peer"] == remote.as_str())),
            "{v:#}"
        );
    }
    // Someone deletes front's bridge inside its namespace on host-a: the namespace's
    // notification wakes a pass at once (the timer's check is 10 s away), which makes the
    // bridge again with its ports, and f1 talks across hosts again.
    let front_id = a.network_inspect("front")["Id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (fvx, fbr) = (
        format!("bvx-{}", &front_id[..9]),
        format!("berth-{}", &front_id[..9]),
    );
    let o = in_ov(&a, &fvx, &["ip", "link", "del", &fbr]);
    assert!(o.status.success(), "{}", show(&o));
    let back = within(Duration::from_secs(3), || {
        stdout(&in_ov(
            &a,
            &fvx,
            &["ip", "-o", "link", "show", "master", &fbr],
        ))
        .contains(&fvx)
    });
    assert!(
        back.is_some(),
        "front's bridge not made again with its VXLAN port: {}",
        stdout(&in_ov(&a, &fvx, &["ip", "-o", "link"]))
    );
    eprintln!("front's bridge made again {back:?} after its deletion");
    assert!(
        a.log_text()
            .lines()
            .any(|l| l.contains("repaired drift (Notification)") && l.contains(&fbr)),
        "the repair was not woken by the namespace's notification"
    );
    b.assert_reaches("f2", &f1, 8080);

    for (w, c) in [(&a, "f1"), (&a, "v1"), (&b, "f2"), (&b, "v2")] {
        w.berth_ok(&["rm", "-f", c]);
    }

    // A second berthd with a cluster store whose socket is in host-a's berthd's directory
    // (where that one mounts its overlay namespaces) is refused before it touches anything.
    let run_dir = a.socket.parent().expect("socket dir");
    let (sock, state) = (run_dir.join("second.sock"), run_dir.join("second-state"));
    let mut cmd = vec![
        "20".to_string(),
        "ip".into(),
        "netns".into(),
        "exec".into(),
        a.host_ns.clone(),
        common::berthd_bin().display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--socket".into(),
        sock.display().to_string(),
    ];
    cmd.extend(cluster_args("second"));
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = sh("timeout", &args);
    assert!(
        !o.status.success() && code(&o) != 124,
        "a second berthd on the same run directory: {}",
        show(&o)
    );
    assert!(
        stderr(&o).contains("another berthd with a cluster store uses the run directory"),
        "{}",
        show(&o)
    );
    assert!(!sock.exists(), "the refused berthd made its socket");
    // host-a's berthd is untouched and still alone in the cluster under its name.
    a.berth_ok(&["network", "ls"]);
    assert!(!names(&a).contains(&"second".to_string()));
    u.kill_etcd();
}

/// The index of the first hop from `from` to `to` whose text holds every one of `words`.
fn hop_at(hops: &[(String, String, String)], from: &str, to: &str, words: &[&str]) -> usize {
    hops.iter()
        .position(|(f, t, w)| f == from && t == to && words.iter().all(|x| w.contains(x)))
        .unwrap_or_else(|| panic!("no hop {from} → {to} with {words:?} in {hops:#?}"))
}

/// Trace tables (`berth-trace-*`) in `w`'s namespace of overlay network `id`, and in its host.
fn trace_tables_of(w: &World, id: &str) -> Vec<String> {
    let mut out = w.ns_exec_ok(&w.host_ns, &["nft", "list", "tables"]);
    out.push_str(&w.ov_exec_ok(&id[..9], &["nft", "list", "tables"]));
    out.lines()
        .filter(|l| l.contains("berth-trace-"))
        .map(str::to_string)
        .collect()
}

/// Proves `berth trace` follows a flow through an overlay network's namespace, where the host's
/// own trace table sees nothing: from a container to one on the other host, the frame enters
/// the bridge at the container's port, passes the anti-spoofing guard and leaves through the
/// VXLAN port to host-b's VTEP; the reply comes back decapsulated and out of the container's
/// port — delivered, each of those hops traced, the packets marked as seen in the namespace;
/// and host-b's `--watch` sees the same flow arrive from the tunnel, naming the sender on
/// host-a.
/// From the host to a local overlay container the journey goes down the uplink and out of the
/// container's port, answered. A flow to a port where nothing listens on the other host is
/// reported refused with the reset traced back through the tunnel. Afterwards no trace table
/// is left in the host or the namespace, and the text form names the namespace; a `--watch`
/// whose client goes away removes its namespace tables, and one left by a kill -9 of berthd
/// is removed at its start (someone else's table of a similar name stays).
#[test]
fn trace_follows_a_flow_through_the_overlay_namespace() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.63.0.0/24", "tr", &[]);
    wait_networks(&b, &["tr"]);
    a.run_server("t1", &["--network", "tr"], 8084);
    b.run_server("t2", &["--network", "tr"], 8085);
    a.wait_container_port("t1", 8084);
    b.wait_container_port("t2", 8085);
    let (t1, t2) = (a.ip_of("t1", "tr"), b.ip_of("t2", "tr"));
    a.assert_reaches("t1", &t2, 8085);
    let id = a.network_inspect("tr")["Id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let vni = vni_of(&a, "tr");

    // Container → container on the other host.
    let (rc, v) = a.trace_json(&["t1", "--to", &format!("{t2}:8085")]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["delivered"], true, "{v:#}");
    assert_eq!(v["probe"], "connected", "{v:#}");
    let h = common::journey_hops(&v);
    let out = hop_at(
        &h,
        "Container",
        "Overlay bridge",
        &["leaves container t1", "[SYN]"],
    );
    let tunnel = hop_at(
        &h,
        "Overlay bridge",
        "VXLAN",
        &[
            "anti-spoofing",
            "passed",
            &format!("VNI {vni}"),
            "10.77.0.",
            "host-b",
        ],
    );
    let back = hop_at(
        &h,
        "VXLAN",
        "Overlay bridge",
        &["decapsulated", "[SYN,ACK]"],
    );
    let to_t1 = hop_at(&h, "Overlay bridge", "Container", &["to container t1"]);
    assert!(out < tunnel && tunnel < back && back < to_t1, "{h:#?}");
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    assert!(
        packets
            .iter()
            .any(|p| p["overlay"] == "tr" && p["direction"] == "original")
            && packets
                .iter()
                .any(|p| p["overlay"] == "tr" && p["direction"] == "reply"),
        "{v:#}"
    );
    assert!(
        packets.iter().any(|p| p["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["chain"] == "bridge berth guard"))),
        "the guard's chain is among the steps: {v:#}"
    );

    // The other side: host-b watches its container's port; the frame arrives from the
    // tunnel, decapsulated into b's namespace and out of t2's port; the journey names the
    // sender on host-a.
    let b_id = b.network_inspect("tr")["Id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let out_path = b.dir.join("watch.json");
    let out_file = std::fs::File::create(&out_path).expect("watch output file");
    let mut watch = std::process::Command::new(common::berth_bin())
        .args(["-H", &b.host_url(), "trace", "--watch", "--count", "1"])
        .args(["--timeout", "20", "--format", "json", "--to"])
        .arg(format!("{t2}:8085"))
        .stdout(out_file)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn berth trace --watch on host-b");
    wait_until("host-b's namespace tables", Duration::from_secs(10), || {
        trace_tables_of(&b, &b_id).len() >= 3
    });
    a.assert_reaches("t1", &t2, 8085);
    let status = watch.wait().expect("the watch ends");
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(status.success(), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let h = common::journey_hops(&v);
    hop_at(&h, "Remote host", "VXLAN", &["container t1 on host host-a"]);
    hop_at(&h, "VXLAN", "Overlay bridge", &["decapsulated", "[SYN]"]);
    hop_at(&h, "Overlay bridge", "Container", &["to container t2"]);

    // The host → a local overlay container: down the uplink, out of its port, answered.
    let (rc, v) = a.trace_json(&["--to", &format!("{t1}:8084")]);
    assert_eq!(rc, 0, "{v:#}");
    assert_eq!(v["delivered"], true, "{v:#}");
    let h = common::journey_hops(&v);
    let down = h
        .iter()
        .position(|(_, _, w)| w.contains("uplink of overlay network tr"))
        .unwrap_or_else(|| panic!("no uplink hop: {h:#?}"));
    let port = hop_at(&h, "Overlay bridge", "Container", &["to container t1"]);
    let up = hop_at(&h, "Overlay bridge", "Host stack", &["up the uplink"]);
    assert!(down < port && port < up, "{h:#?}");

    // Nothing listens there: refused, the reset traced back through the tunnel.
    let (_, v) = a.trace_json(&["t1", "--to", &format!("{t2}:9")]);
    assert!(
        v["result"].as_str().unwrap_or("").contains("refused"),
        "{v:#}"
    );
    let h = common::journey_hops(&v);
    hop_at(&h, "VXLAN", "Overlay bridge", &["decapsulated", "RST"]);

    // The text form names the namespace; no table is left anywhere.
    let text = w_ok(&a, &["trace", "t1", "--to", &format!("{t2}:8085")]);
    assert!(text.contains("in overlay network tr's namespace"), "{text}");
    assert!(text.contains("Overlay bridge → VXLAN"), "{text}");
    assert!(
        trace_tables_of(&a, &id).is_empty(),
        "{:?}",
        trace_tables_of(&a, &id)
    );

    // A client that goes away mid-watch: its tables go from the namespace too.
    let mut child = std::process::Command::new(common::berth_bin())
        .args(["-H", &a.host_url(), "trace", "--watch", "--timeout", "120"])
        .args(["--to", &format!("{t1}:8084")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn berth trace --watch");
    wait_until(
        "the namespace's trace tables",
        Duration::from_secs(10),
        || trace_tables_of(&a, &id).len() >= 3,
    );
    // Our own child, by PID.
    child.kill().expect("kill the client");
    let _ = child.wait();
    wait_until("the tables removed", Duration::from_secs(10), || {
        trace_tables_of(&a, &id).is_empty()
    });
    // A crash mid-trace leaves a table in the namespace: berthd's start removes it (and
    // nothing else there).
    a.ov_exec_ok(
        &id[..9],
        &["nft", "add", "table", "bridge", "berth-trace-0123456789ab"],
    );
    a.ov_exec_ok(&id[..9], &["nft", "add", "table", "inet", "berth-tracer"]);
    let args = cluster_args("host-a");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.try_restart_daemon_full(true, &args, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        trace_tables_of(&a, &id).is_empty(),
        "{:?}",
        trace_tables_of(&a, &id)
    );
    let all = a.ov_exec_ok(&id[..9], &["nft", "list", "tables"]);
    assert!(
        all.contains("berth-tracer") && all.contains("bridge berth"),
        "{all}"
    );
    a.assert_reaches("t1", &t2, 8085);
    u.kill_etcd();
}

/// Proves the overlay MTU follows the underlay: host-b's underlay NIC has MTU 1400 (host-a's
/// 1500) and host-b advertises its address (host-a its interface name); each host publishes
/// its interface's MTU in its node record, and a network created on host-a gets 1400 − 50 =
/// 1350 (the smallest underlay in the cluster), shown by `network inspect` on both hosts and
/// set on the containers' interfaces. The largest DF datagram (1322 + UDP 8 + IPv4 20) crosses
/// from host-a to host-b whole; 1323 is refused with EMSGSIZE at the container's interface
/// instead of vanishing in the underlay; TCP crosses. An explicit MTU the underlay cannot
/// carry is a 400 naming both figures; a smaller one is taken.
#[test]
fn overlay_mtu_follows_the_underlay() {
    require_root!();
    let (a, b) = (World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b]);
    u.set_mtu(1, &b, 1400);
    u.start_etcd(&a);
    join(&a, "host-a").unwrap_or_else(|e| panic!("{e}"));
    let args: Vec<String> = cluster_args("host-b")
        .into_iter()
        .map(|s| {
            if s == "ul0" {
                "10.77.0.2".to_string()
            } else {
                s
            }
        })
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    b.keep_mounts();
    b.try_restart_daemon_full(false, &args, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));
    let recs = u.etcdctl(&["get", "--prefix", "/berth/nodes/", "--print-value-only"]);
    assert!(
        recs.contains("\"UnderlayMtu\":1500") && recs.contains("\"UnderlayMtu\":1400"),
        "{recs}"
    );

    // Too big for host-b's underlay: refused, naming both figures.
    let o = a.berth(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.52.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "big",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    let err = stderr(&o);
    assert!(
        err.contains("mtu=1400 is larger than the overlay can carry: at most 1350 (the underlay's MTU 1400 − 50 bytes of VXLAN over IPv4)"),
        "{err}"
    );
    create_overlay(
        &a,
        "10.52.0.0/24",
        "small",
        &["-o", "com.docker.network.driver.mtu=1300"],
    );
    assert_eq!(
        a.network_inspect("small")["Options"]["com.docker.network.driver.mtu"],
        "1300"
    );
    a.berth_ok(&["network", "rm", "small"]);

    create_overlay(&a, "10.53.0.0/24", "app", &[]);
    wait_networks(&b, &["app"]);
    for w in [&a, &b] {
        assert_eq!(
            w.network_inspect("app")["Options"]["com.docker.network.driver.mtu"],
            "1350"
        );
    }
    a.run_server("db", &["--network", "app"], 8080);
    a.wait_container_port("db", 8080);
    b.run_server("web", &["--network", "app"], 8081);
    b.wait_container_port("web", 8081);
    let (ip_db, ip_web) = (a.ip_of("db", "app"), b.ip_of("web", "app"));
    for (w, c) in [(&a, "db"), (&b, "web")] {
        let link = w.exec_ok(c, &["ip", "link", "show", "eth0"]);
        assert!(link.contains("mtu 1350"), "{link}");
    }
    b.assert_reaches("web", &ip_db, 8080);
    // From the 1500-byte host to the 1400-byte one: the largest DF datagram arrives whole.
    assert_largest_df_datagram((&a, "db"), (&b, "web"), &ip_web, 1322);
    a.berth_ok(&["rm", "-f", "db"]);
    b.berth_ok(&["rm", "-f", "web"]);
    a.berth_ok(&["network", "rm", "app"]);
    u.kill_etcd();
}

/// The MTU of `w`'s container `ctr`'s `eth0` (`ip -o link show eth0`).
fn eth0_mtu(w: &World, ctr: &str) -> u32 {
    let o = w.exec(ctr, &["ip", "-o", "link", "show", "eth0"]);
    stdout(&o)
        .split_whitespace()
        .skip_while(|t| *t != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Proves that an overlay network's MTU follows the cluster's *current* underlay on every
/// host (docs/OVERLAY.md, "MTU"), not the one the hosts had when it was created: created while
/// host-b's underlay NIC has MTU 1400 the network has 1350 everywhere; host-b's NIC raised to
/// 1500 (a link notification in its namespace, no restart) makes it 1450 on both hosts, in
/// the running containers too, and a 1,400-byte DF datagram (in fact the largest, 1422) now
/// crosses from host-a to host-b and back whole; a host joining later with a 1400-byte
/// underlay (host-c) shrinks it to 1350 on every host, running containers included, so the
/// largest DF datagram to host-c's container (1322) arrives whole and one byte more is refused
/// at the sender's own interface (`EMSGSIZE`) instead of vanishing on host-c's underlay.
#[test]
fn overlay_mtu_follows_underlay_changes_and_later_hosts() {
    require_root!();
    let (a, b, c) = (World::new(), World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b, &c]);
    u.set_mtu(1, &b, 1400);
    u.set_mtu(2, &c, 1400);
    u.start_etcd(&a);
    join(&a, "host-a").unwrap_or_else(|e| panic!("{e}"));
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));
    create_overlay(&a, "10.56.0.0/24", "pm", &[]);
    wait_networks(&b, &["pm"]);
    a.run_d("ca", &["--network", "pm"], &["sleep", "600"]);
    b.run_d("cb", &["--network", "pm"], &["sleep", "600"]);
    let inspected = |w: &World| {
        w.network_inspect("pm")["Options"]["com.docker.network.driver.mtu"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for (w, ctr) in [(&a, "ca"), (&b, "cb")] {
        assert_eq!(eth0_mtu(w, ctr), 1350);
        assert_eq!(inspected(w), "1350");
    }

    // host-b's underlay grows: the network follows on both hosts, running containers too.
    u.set_mtu(1, &b, 1500);
    wait_until("MTU 1450 on both hosts", Duration::from_secs(10), || {
        eth0_mtu(&a, "ca") == 1450 && eth0_mtu(&b, "cb") == 1450
    });
    for w in [&a, &b] {
        assert_eq!(inspected(w), "1450");
    }
    let (ip_a, ip_b) = (a.ip_of("ca", "pm"), b.ip_of("cb", "pm"));
    assert_largest_df_datagram((&a, "ca"), (&b, "cb"), &ip_b, 1422);
    assert_largest_df_datagram((&b, "cb"), (&a, "ca"), &ip_a, 1422);
    // A restart of host-b's berthd keeps 1450: its start-up pass does not fall back to the
    // MTU decided at create (1350) for the running container.
    let startup_mtu = |w: &World| {
        w.log_text()
            .lines()
            .filter(|l| l.contains("repaired at start-up: SetEndpointMtu"))
            .count()
    };
    // Nor does it drop host-a's endpoint (ca) from its VXLAN port, to put it back moments
    // later when the cluster's sync lists the endpoints: a cross-host outage per restart.
    let startup_vxlan = |w: &World| {
        w.log_text()
            .lines()
            .filter(|l| l.contains("repaired at start-up: SetVxlanEntries"))
            .count()
    };
    let before = startup_mtu(&b);
    let before_vxlan = startup_vxlan(&b);
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));
    assert_eq!(eth0_mtu(&b, "cb"), 1450);
    assert_eq!(startup_mtu(&b), before, "{}", b.log_text());
    assert_eq!(startup_vxlan(&b), before_vxlan, "{}", b.log_text());

    // host-c joins with a 1400-byte underlay: every host shrinks the network.
    join(&c, "host-c").unwrap_or_else(|e| panic!("{e}"));
    wait_names(&a, &["host-a", "host-b", "host-c"], Duration::from_secs(5));
    wait_until("pm on host-c", Duration::from_secs(5), || {
        network_names(&c).contains(&"pm".to_string())
    });
    wait_until("MTU 1350 on hosts a and b", Duration::from_secs(10), || {
        eth0_mtu(&a, "ca") == 1350 && eth0_mtu(&b, "cb") == 1350
    });
    c.run_d("cc", &["--network", "pm"], &["sleep", "600"]);
    assert_eq!(eth0_mtu(&c, "cc"), 1350);
    for w in [&a, &b, &c] {
        assert_eq!(inspected(w), "1350");
    }
    let ip_c = c.ip_of("cc", "pm");
    assert_largest_df_datagram((&a, "ca"), (&c, "cc"), &ip_c, 1322);
    assert_largest_df_datagram((&c, "cc"), (&b, "cb"), &ip_b, 1322);
    for w in [&a, &b, &c] {
        w.assert_in_sync("the overlay's MTU followed the underlay");
    }
    a.berth_ok(&["rm", "-f", "ca"]);
    b.berth_ok(&["rm", "-f", "cb"]);
    c.berth_ok(&["rm", "-f", "cc"]);
    a.berth_ok(&["network", "rm", "pm"]);
    u.kill_etcd();
}

/// Proves an IPv6 underlay: hosts advertising IPv6 addresses of their LAN NICs
/// (`fd77::N`, etcd still reached over IPv4) tunnel an overlay network's VXLAN over IPv6 —
/// the VXLAN port's `local` and the other host's forwarding entry are those IPv6 addresses,
/// the network's MTU is the underlay's − 70 (1430), and the largest DF datagram it allows
/// (1402 + UDP 8 + IPv4 20) crosses whole — and containers on the two hosts talk TCP by
/// address and by name both ways.
#[test]
fn overlay_over_an_ipv6_underlay() {
    require_root!();
    let (a, b) = (World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b]);
    for (i, w) in [&a, &b].iter().enumerate() {
        let addr = format!("fd77::{}/64", i + 1);
        w.ns_exec_ok(
            &w.host_ns,
            &["ip", "addr", "add", &addr, "dev", "ul0", "nodad"],
        );
    }
    u.start_etcd(&a);
    for (w, name, addr) in [(&a, "host-a", "fd77::1"), (&b, "host-b", "fd77::2")] {
        let args: Vec<String> = cluster_args(name)
            .into_iter()
            .map(|s| if s == "ul0" { addr.to_string() } else { s })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.keep_mounts();
        w.try_restart_daemon_full(false, &args, &[])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));
    let listed = nodes(&a).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        listed.iter().any(|n| n.1 == "fd77::2"),
        "host-b's address: {listed:?}"
    );
    create_overlay(&a, "10.57.0.0/24", "v6u", &[]);
    wait_networks(&b, &["v6u"]);
    for w in [&a, &b] {
        assert_eq!(
            w.network_inspect("v6u")["Options"]["com.docker.network.driver.mtu"],
            "1430"
        );
    }
    a.run_server("db6", &["--network", "v6u"], 8080);
    b.run_server("web6", &["--network", "v6u"], 8081);
    a.wait_container_port("db6", 8080);
    b.wait_container_port("web6", 8081);
    let vx = format!(
        "bvx-{}",
        &a.network_inspect("v6u")["Id"].as_str().unwrap_or_default()[..9]
    );
    let details = stdout(&in_ov(&a, &vx, &["ip", "-d", "link", "show", &vx]));
    assert!(details.contains("local fd77::1"), "{details}");
    let mac_web = mac_of(&b, "web6", "v6u");
    wait_until(
        "host-a's forwarding entry for web6",
        Duration::from_secs(5),
        || {
            stdout(&in_ov(&a, &vx, &["bridge", "fdb", "show", "dev", &vx]))
                .lines()
                .any(|l| l.starts_with(&mac_web) && l.contains("dst fd77::2"))
        },
    );
    let (ip_db, ip_web) = (a.ip_of("db6", "v6u"), b.ip_of("web6", "v6u"));
    b.assert_reaches("web6", &ip_db, 8080);
    a.assert_reaches("db6", &ip_web, 8081);
    reaches_by_name(&b, "web6", "db6", 8080, Duration::from_secs(5));
    reaches_by_name(&a, "db6", "web6", 8081, Duration::from_secs(5));
    assert_largest_df_datagram((&a, "db6"), (&b, "web6"), &ip_web, 1402);
    a.berth_ok(&["rm", "-f", "db6"]);
    b.berth_ok(&["rm", "-f", "web6"]);
    a.berth_ok(&["network", "rm", "v6u"]);
    u.kill_etcd();
}

/// Connects over IPv6 from `w`'s container `from` to `name:port` (an AAAA lookup by the
/// container's resolver, `AF_INET6` only) and returns the server's reply.
fn tcp6_by_name(w: &World, from: &str, name: &str, port: u16) -> Result<String, String> {
    let py = "import socket,sys\n\
ai=socket.getaddrinfo(sys.argv[1],int(sys.argv[2]),socket.AF_INET6,socket.SOCK_STREAM)\n\
s=socket.socket(socket.AF_INET6,socket.SOCK_STREAM); s.settimeout(2)\n\
s.connect(ai[0][4]); print(ai[0][4][0], s.recv(200).decode().strip())\n";
    let o = w.exec(from, &["python3", "-c", py, name, &port.to_string()]);
    if o.status.success() {
        Ok(stdout(&o).trim().to_string())
    } else {
        Err(show(&o))
    }
}

fn ip6_of(w: &World, ctr: &str, net: &str) -> String {
    w.inspect(ctr)["NetworkSettings"]["Networks"][net]["GlobalIPv6Address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Proves dual-stack overlay networks: `--ipv6 --subnet fd00:50::/64` next to an IPv4
/// subnet; containers on two hosts get different IPv6 addresses claimed in etcd
/// (`ipam/<net>/<addr>` of both families; eight concurrent runs on two hosts, eight
/// addresses), each host holds a permanent NDP entry (next to the
/// ARP one) for the other's container on its VXLAN port, and TCP over IPv6 crosses both ways by
/// address and by name (an AAAA answer of the other host's DNS); egress to an IPv6 peer
/// outside leaves masqueraded to the host's address (NAT66, as on bridge networks) and the
/// container's IPv6 address is among its port's anti-spoofing elements.
#[test]
fn overlay_ipv6_spans_hosts() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(
        &a,
        "10.55.0.0/24",
        "six",
        &["--ipv6", "--subnet", "fd00:50::/64"],
    );
    wait_networks(&b, &["six"]);
    let ins = b.network_inspect("six");
    assert_eq!(ins["EnableIPv6"], true, "{ins}");
    let id = ins["Id"].as_str().expect("id").to_string();
    let vx = format!("bvx-{}", &id[..9]);
    let server = |w: &World, name: &str, port: u16| {
        let p = port.to_string();
        w.run_d(
            name,
            &["--network", "six"],
            &["python3", &w.helper("peer_server.py"), "::", &p],
        );
        w.wait_container_port(name, port);
    };
    server(&a, "db", 8080);
    server(&b, "web", 8081);
    let (db6, web6) = (ip6_of(&a, "db", "six"), ip6_of(&b, "web", "six"));
    assert!(
        db6.starts_with("fd00:50::") && web6.starts_with("fd00:50::"),
        "{db6} {web6}"
    );
    assert_ne!(db6, web6, "two hosts must not hand out one IPv6 address");
    // Both families claimed cluster-wide.
    let claims = u.etcdctl(&[
        "get",
        "--prefix",
        &format!("/berth/ipam/{id}/"),
        "--keys-only",
    ]);
    assert!(claims.contains(&db6) && claims.contains(&web6), "{claims}");

    // NDP entries on each host's VXLAN port for the other's container.
    wait_until("db's NDP entry on host-b", Duration::from_secs(5), || {
        let o = in_ov(&b, &vx, &["ip", "-6", "neigh", "show", "dev", &vx]);
        let t = stdout(&o);
        t.contains(&db6) && t.contains("PERMANENT")
    });
    // By address, both ways: the server sees the client's own IPv6 address (no NAT inside).
    let r = b.assert_reaches("web", &db6, 8080);
    assert_eq!(r.trim(), web6, "db saw web as {r}");
    let r = a.assert_reaches("db", &web6, 8081);
    assert_eq!(r.trim(), db6, "web saw db as {r}");
    // By name: AAAA from host-b's DNS for a container of host-a.
    let start = Instant::now();
    let got = loop {
        match tcp6_by_name(&b, "web", "db", 8080) {
            Ok(r) => break r,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "web should reach db over IPv6 by name: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got, format!("{db6} {web6}"));
    // Egress through host-a, its IPv6 subnet masqueraded (NAT66, as on a dual-stack bridge
    // network): host-a gets an IPv6 uplink, the outside peer sees host-a's address.
    let (h, o) = (a.host_ns.clone(), a.out_ns.clone());
    sh_ok(
        "ip",
        &[
            "-n",
            &h,
            "addr",
            "add",
            "fd98::1/64",
            "dev",
            "uplink",
            "nodad",
        ],
    );
    sh_ok(
        "ip",
        &["-n", &o, "addr", "add", "fd98::2/64", "dev", "lan", "nodad"],
    );
    sh_ok(
        "ip",
        &["-n", &h, "-6", "route", "add", "default", "via", "fd98::2"],
    );
    let helper = a.helper("peer_server.py");
    a.spawn_in(&o, &["python3", &helper, "fd98::2", "7000"]);
    a.wait_port(&o, "fd98::2", 7000);
    let seen = a.assert_reaches("db", "fd98::2", 7000);
    assert_eq!(
        seen.trim(),
        "fd98::1",
        "egress must be masqueraded to host-a's address"
    );
    let nft = a.nft_table();
    assert!(
        nft.contains("fd00:50::/64"),
        "masq6 lacks the subnet: {nft}"
    );
    // Anti-spoofing: the container's IPv6 address is its port's, as on a bridge network.
    // (In the overlay network's namespace, where its bridge is.)
    let guard = stdout(&in_ov(
        &a,
        &vx,
        &["nft", "list", "set", "bridge", "berth", "port_ip6"],
    ));
    assert!(guard.contains(&db6), "{guard}");

    a.berth_ok(&["rm", "-f", "db"]);
    wait_until(
        "db's NDP entry gone from host-b",
        Duration::from_secs(5),
        || {
            let o = in_ov(&b, &vx, &["ip", "-6", "neigh", "show", "dev", &vx]);
            !stdout(&o).contains(&db6)
        },
    );
    b.berth_ok(&["rm", "-f", "web"]);
    // Concurrent runs on both hosts: no IPv6 address handed out twice.
    assert_unique_concurrent_addresses(&a, &b, "six", 4, |w: &World, c: &str| {
        let v6 = ip6_of(w, c, "six");
        assert!(v6.starts_with("fd00:50::"), "{c}: {v6}");
        v6
    });
    b.berth_ok(&["network", "rm", "six"]);
    u.kill_etcd();
}

/// Runs `per_host` containers at once on each of `a` and `b` on network `net`, asserts that
/// `addr` (the address of one family a container got) never repeats, and removes them.
fn assert_unique_concurrent_addresses(
    a: &World,
    b: &World,
    net: &str,
    per_host: usize,
    addr: impl Fn(&World, &str) -> String + Sync,
) {
    let addr = &addr;
    let ips: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [(a, "ra"), (b, "rb")]
            .into_iter()
            .flat_map(|(w, p)| {
                (0..per_host).map(move |i| {
                    s.spawn(move || {
                        let name = format!("{p}{i}");
                        w.berth_ok(&[
                            "run",
                            "-d",
                            "--name",
                            &name,
                            "--network",
                            net,
                            "sleep",
                            "60",
                        ]);
                        addr(w, &name)
                    })
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().expect("run")).collect()
    });
    let unique: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        unique.len(),
        ips.len(),
        "duplicate addresses across hosts: {ips:?}"
    );
    for (w, p) in [(a, "ra"), (b, "rb")] {
        for i in 0..per_host {
            w.berth_ok(&["rm", "-f", &format!("{p}{i}")]);
        }
    }
}

/// Runs a `client` container on `net` on host `w` and returns its pid and a look-up of a name
/// as `w`'s resolver answers it to that client (`dig` at the network's gateway; "" when it
/// does not).
fn resolver_client<'a>(w: &'a World, net: &str) -> (i64, impl Fn(&str) -> String + 'a) {
    w.run_d("client", &["--network", net], &["sleep", "600"]);
    let pid = w.inspect("client")["State"]["Pid"]
        .as_i64()
        .expect("client pid");
    // An overlay network's containers ask berth's resolver at 127.0.0.11 in their own
    // namespace (the gateway is in the overlay network's namespace, not on the host).
    let resolv = w.exec_ok("client", &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    let at = "@127.0.0.11".to_string();
    (pid, move |name: &str| {
        let o = w.pid_net_exec(pid, &["dig", "+short", "+tries=1", "+time=1", &at, name]);
        stdout(&o).trim().to_string()
    })
}

/// Not a test of behaviour: times the overlay across hosts as a user sees it (run with
/// `--ignored --nocapture`): from `berth run -d` returning on host-a to the container being
/// reachable by TCP from a container on host-b, by address and by name (host-b's DNS), over
/// 20 runs; and TCP throughput across hosts through the overlay against the underlay itself,
/// when iperf3 is installed.
/// `Reconciler.Passes` of `w`'s `GET /info`.
fn passes(w: &World) -> u64 {
    let (status, body) = w.api("GET", "/info", None);
    assert_eq!(status, 200, "GET /info: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/info json");
    v["Reconciler"]["Passes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no Reconciler.Passes in /info: {body}"))
}

/// Polls `f` every 5 ms until it holds; returns how long it took, or None after `limit`.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Proves the event path: with host-b's drift repair off and its periodic check an hour away,
/// a container started on host-a has its neighbour entry on host-b within a few hundred ms
/// after `run` returned, resolves there by name and answers the first ping at once, and
/// host-b ran no reconcile pass for it: the etcd watch event alone programmed its entries and
/// its DNS record. Removed, its entry goes and its name stops resolving, again without a pass.
#[test]
fn overlay_endpoints_follow_the_watch_event() {
    require_root!();
    let (a, b, mut u) = two_hosts_with(&["--no-drift-repair", "--check-interval", "3600"]);
    create_overlay(&a, "10.53.0.0/24", "ev", &[]);
    wait_networks(&b, &["ev"]);
    let (pid, lookup) = resolver_client(&b, "ev");
    let vx = format!(
        "bvx-{}",
        &b.network_inspect("ev")["Id"].as_str().expect("id")[..9]
    );
    let neigh = |ip: &str| stdout(&in_ov(&b, &vx, &["ip", "neigh", "show", ip]));
    let limit = Duration::from_millis(800);
    for i in 0..3 {
        let name = format!("ev{i}");
        let before = passes(&b);
        a.run_d(&name, &["--network", "ev"], &["sleep", "600"]);
        let returned = Instant::now();
        let ip = a.ip_of(&name, "ev");
        // The neighbour entry first (a negative DNS answer may wait for the upstream).
        let programmed = within(limit, || neigh(&ip).contains("PERMANENT"));
        let took = returned.elapsed();
        assert!(
            programmed.is_some(),
            "no permanent neighbour entry for {name} ({ip}) on host-b {took:?} after run \
             returned: {}\nhost-b log:\n{}",
            neigh(&ip),
            b.log_text()
        );
        // The DNS table is swapped right after the entries: the name answers at once…
        assert_eq!(lookup(&name), ip, "{name} not resolvable on host-b");
        // …and so does the address, at the first echo request.
        let ping = b.pid_net_exec(pid, &["ping", "-c", "1", "-W", "1", &ip]);
        assert!(
            ping.status.success(),
            "{name} resolved on host-b but the first ping failed: {}\nneighbour: {}",
            show(&ping),
            neigh(&ip)
        );
        eprintln!("{name}: programmed and resolvable on host-b {took:?} after run returned");
        assert_eq!(
            passes(&b),
            before,
            "host-b ran a reconcile pass for {name}: the watch event should have been enough"
        );
        a.berth_ok(&["rm", "-f", &name]);
        let gone = within(limit, || neigh(&ip).is_empty());
        assert!(
            gone.is_some(),
            "{name} still in host-b's neighbour table after rm: {}",
            neigh(&ip)
        );
        assert!(
            !lookup(&name).contains(&ip),
            "{name} still resolvable on host-b after rm"
        );
        assert_eq!(
            passes(&b),
            before,
            "host-b ran a reconcile pass for rm {name}"
        );
    }
    u.kill_etcd();
}

/// Proves that another host's container on two overlay networks answers on both on host-b:
/// its two published endpoints go into host-b's DNS table as one container (with one
/// stand-in per endpoint, both under the container's id, the second replaced the first and
/// `NAME.NETWORK` answered on one network only). Disconnected from one, only that network's
/// name goes.
#[test]
fn overlay_remote_container_on_two_networks_resolves_on_both() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.54.0.0/24", "dn1", &[]);
    create_overlay(&a, "10.55.0.0/24", "dn2", &[]);
    wait_networks(&b, &["dn1", "dn2"]);
    a.run_d("two", &["--network", "dn1"], &["sleep", "600"]);
    a.berth_ok(&["network", "connect", "dn2", "two"]);
    let (ip1, ip2) = (a.ip_of("two", "dn1"), a.ip_of("two", "dn2"));
    let (_pid, lookup) = resolver_client(&b, "dn1");
    b.berth_ok(&["network", "connect", "dn2", "client"]);
    let both = within(Duration::from_secs(5), || {
        lookup("two.dn1") == ip1 && lookup("two.dn2") == ip2
    });
    assert!(
        both.is_some(),
        "host-b: two.dn1 -> {:?} (want {ip1}), two.dn2 -> {:?} (want {ip2})\nhost-b log:\n{}",
        lookup("two.dn1"),
        lookup("two.dn2"),
        b.log_text()
    );
    a.berth_ok(&["network", "disconnect", "dn2", "two"]);
    let one = within(Duration::from_secs(5), || {
        // Not local any more: forwarded upstream, where nothing answers it.
        !lookup("two.dn2").contains(&ip2) && lookup("two.dn1") == ip1
    });
    assert!(
        one.is_some(),
        "host-b after disconnect: two.dn1 -> {:?} (want {ip1}), two.dn2 -> {:?} (want none)",
        lookup("two.dn1"),
        lookup("two.dn2")
    );
    u.kill_etcd();
}

/// Proves that the index of a VXLAN port the event path programs follows the port: host-b
/// programs a remote endpoint (its port's index now cached), its VXLAN port is deleted behind
/// its back and made again by the drift repair (a new index), and the next endpoint event
/// from host-a still lands on the new port: its neighbour entry there, its name resolving, the
/// first ping answered; the entries of the container started before the deletion are back too.
#[test]
fn overlay_event_programs_a_vxlan_port_made_again() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.58.0.0/24", "re", &[]);
    wait_networks(&b, &["re"]);
    let id = b.network_inspect("re")["Id"]
        .as_str()
        .expect("id")
        .to_string();
    let vx = format!("bvx-{}", &id[..9]);
    let (pid, lookup) = resolver_client(&b, "re");
    // Both read nothing while the port is missing (between its deletion and its repair).
    let neigh = |ip: &str| stdout(&in_ov(&b, &vx, &["ip", "neigh", "show", ip, "dev", &vx]));
    let index = || {
        stdout(&in_ov(&b, &vx, &["ip", "-o", "link", "show", &vx]))
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let limit = Duration::from_secs(3);
    a.run_d("re0", &["--network", "re"], &["sleep", "600"]);
    let ip0 = a.ip_of("re0", "re");
    assert!(
        within(limit, || neigh(&ip0).contains("PERMANENT")).is_some(),
        "re0 ({ip0}) never programmed on host-b: {}",
        neigh(&ip0)
    );
    let old = index();
    let o = in_ov(&b, &vx, &["ip", "link", "del", &vx]);
    assert!(o.status.success(), "{}", show(&o));
    // The drift repair makes the port again, with every remote entry.
    let remade = within(limit, || {
        let now = index();
        !now.is_empty() && now != old && neigh(&ip0).contains("PERMANENT")
    });
    assert!(
        remade.is_some(),
        "host-b's {vx} not made again with re0's entry ({}): {}\nhost-b log:\n{}",
        neigh(&ip0),
        index(),
        b.log_text()
    );
    a.run_d("re1", &["--network", "re"], &["sleep", "600"]);
    let ip1 = a.ip_of("re1", "re");
    assert!(
        within(limit, || neigh(&ip1).contains("PERMANENT")).is_some(),
        "re1 ({ip1}) not programmed on host-b's new {vx}: {}\nhost-b log:\n{}",
        neigh(&ip1),
        b.log_text()
    );
    assert_eq!(lookup("re1"), ip1, "re1 not resolvable on host-b");
    let ping = b.pid_net_exec(pid, &["ping", "-c", "1", "-W", "1", &ip1]);
    assert!(
        ping.status.success(),
        "re1 programmed on host-b's new {vx} but the first ping failed: {}",
        show(&ping)
    );
    u.kill_etcd();
}

/// The `mod_revision` of etcd key `key` (None when it does not exist).
fn mod_revision(u: &Underlay, key: &str) -> Option<u64> {
    let out = u.etcdctl(&["get", key, "-w", "json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl get {key}: {e}: {out}"));
    v["kvs"].as_array()?.first()?["mod_revision"].as_u64()
}

/// How many range requests (reads) etcd has served.
fn etcd_ranges(u: &Underlay) -> u64 {
    let url = format!("http://{ETCD}:2379/metrics");
    let o = sh(
        "ip",
        &["netns", "exec", &u.ns, "curl", "-sf", "-m", "5", &url],
    );
    stdout(&o)
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total") && l.contains("grpc_method=\"Range\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Proves the publication timing of `run -d` and its limits (Docker's semantics):
/// - a container that is only *created* on host-a is not published (no endpoint in etcd) and
///   does not resolve on host-b, though its address is claimed; started, it resolves;
/// - `run -d` publishes the endpoint in the same etcd transaction as its address claim (both
///   keys have one `mod_revision`: berth's `start=1`), picks the address from the watched
///   copy of the claims (etcd serves no read for it), and it resolves on host-b;
/// - a `run -d` whose start fails (its published port is held by a host process) withdraws
///   the endpoint: not in etcd, not resolvable on host-b; the container stays created, and
///   with `--rm` it is gone together with its claim.
///
/// Against the berthd before the change the `mod_revision`s differ (the claim at create, the
/// endpoint at the start), and the create lists the claims in etcd.
#[test]
fn overlay_run_publishes_with_its_claim_and_create_alone_does_not() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.54.0.0/24", "pub", &[]);
    wait_networks(&b, &["pub"]);
    let net = a.network_inspect("pub")["Id"]
        .as_str()
        .expect("network id")
        .to_string();
    let (_, lookup) = resolver_client(&b, "pub");
    let endpoint_key = |id: &str| format!("/berth/endpoints/{net}/host-a/{id}");
    let claim_key = |ip: &str| format!("/berth/ipam/{net}/{ip}");
    let id_of = |w: &World, name: &str| {
        w.inspect(name)["Id"]
            .as_str()
            .expect("container id")
            .to_string()
    };

    // Created only: claimed, not published, not resolvable.
    a.berth_ok(&[
        "create",
        "--network",
        "pub",
        "--name",
        "made",
        "sleep",
        "600",
    ]);
    let made = id_of(&a, "made");
    let made_ip = a.ip_of("made", "pub");
    assert!(
        mod_revision(&u, &claim_key(&made_ip)).is_some(),
        "made's address {made_ip} is not claimed"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        mod_revision(&u, &endpoint_key(&made)),
        None,
        "a created container was published"
    );
    // No answer at all (or the upstream's failure), never an address of the network.
    let resolves = |name: &str| {
        lookup(name)
            .lines()
            .any(|l| l.parse::<std::net::Ipv4Addr>().is_ok())
    };
    assert!(!resolves("made"), "a created container resolves on host-b");
    a.berth_ok(&["start", "made"]);
    assert!(
        within(Duration::from_secs(2), || lookup("made") == made_ip).is_some(),
        "made started: not resolvable on host-b"
    );

    // run -d: the endpoint is written with the claim, and the address is picked from the
    // watched copy of the claims: no etcd read on the way.
    let ranges = etcd_ranges(&u);
    a.run_d("fast", &["--network", "pub"], &["sleep", "600"]);
    assert_eq!(
        etcd_ranges(&u),
        ranges,
        "run -d read etcd (the address holders listed instead of the watched copy)"
    );
    let fast = id_of(&a, "fast");
    let fast_ip = a.ip_of("fast", "pub");
    let (ep_rev, claim_rev) = (
        mod_revision(&u, &endpoint_key(&fast)),
        mod_revision(&u, &claim_key(&fast_ip)),
    );
    assert!(ep_rev.is_some(), "fast is not published");
    assert_eq!(
        ep_rev, claim_rev,
        "run -d: the endpoint was not published in the claim's transaction"
    );
    assert!(
        within(Duration::from_secs(2), || lookup("fast") == fast_ip).is_some(),
        "fast not resolvable on host-b"
    );

    // A start that fails withdraws what the run published.
    a.spawn_in(
        &a.host_ns,
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',18099))\ns.listen()\ntime.sleep(600)",
        ],
    );
    wait_until("the host's listener", Duration::from_secs(10), || {
        let o = sh(
            "ip",
            &["netns", "exec", &a.host_ns, "ss", "-Hltn", "sport = :18099"],
        );
        !stdout(&o).trim().is_empty()
    });
    for (name, rm) in [("bad", false), ("badrm", true)] {
        let mut args = vec![
            "run",
            "-d",
            "--network",
            "pub",
            "-p",
            "18099:80",
            "--name",
            name,
        ];
        if rm {
            args.push("--rm");
        }
        args.extend(["sleep", "600"]);
        let o = a.berth(&args);
        assert!(
            !o.status.success() && stderr(&o).contains("18099"),
            "run with a port held on the host: {}",
            show(&o)
        );
        let eps = u.etcdctl(&[
            "get",
            "--prefix",
            &format!("/berth/endpoints/{net}/host-a/"),
        ]);
        assert!(
            !eps.contains(&format!("\"Name\":\"{name}\"")),
            "{name}'s endpoint stayed published after its start failed: {eps}"
        );
        // The run published the endpoint before its start failed, so host-b may have its
        // put and not yet its delete when the CLI returns (a debug build's pass under CI's
        // load holds host-b's lock for a while): it must stop resolving, soon.
        assert!(
            within(Duration::from_secs(5), || !resolves(name)).is_some(),
            "{name} still resolves on host-b 5 s after its start failed"
        );
        if rm {
            assert!(
                !a.berth(&["inspect", "--type", "container", name])
                    .status
                    .success(),
                "{name} kept"
            );
            let claims = u.etcdctl(&["get", "--prefix", &format!("/berth/ipam/{net}/")]);
            assert!(
                !claims.contains(&format!("\"Name\":\"{name}\"")),
                "{name}'s claim kept: {claims}"
            );
        } else {
            assert_eq!(
                a.inspect(name)["State"]["Status"].as_str(),
                Some("created"),
                "{name} after its start failed"
            );
        }
    }
    u.kill_etcd();
}

#[test]
#[ignore]
fn bench_overlay_cross_host() {
    require_root!();
    let (a, b) = (World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b]);
    u.start_etcd(&a);
    join(&a, "host-a").unwrap_or_else(|e| panic!("{e}"));
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    create_overlay(&a, "10.50.0.0/24", "app", &[]);
    wait_networks(&b, &["app"]);
    b.run_server("client", &["--network", "app"], 8081);
    b.wait_container_port("client", 8081);
    let median = |mut v: Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    // What one probe costs when the target is there at once (exec into the container and
    // python3's start): the floor under the figures below.
    let own = b.ip_of("client", "app");
    let floor: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            b.tcp_from("client", &own, 8081, 0.5).expect("own port");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let (mut by_addr, mut by_name, mut run_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..20 {
        let name = format!("s{i}");
        let t = Instant::now();
        a.run_server(&name, &["--network", "app"], 8080);
        run_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let ip = a.ip_of(&name, "app");
        let t = Instant::now();
        // The server needs its own start-up time too: the first TCP success is the figure.
        while b.tcp_from("client", &ip, 8080, 0.5).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name} never reachable"
            );
        }
        by_addr.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        while b.tcp_from("client", &name, 8080, 0.5).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{name} never resolvable"
            );
        }
        by_name.push(t.elapsed().as_secs_f64() * 1000.0);
        a.berth_ok(&["rm", "-f", &name]);
    }
    eprintln!(
        "overlay, 2 hosts, 20 runs (medians): berth run -d {:.1} ms; then reachable from the \
         other host by address after {:.1} ms, by name after {:.1} ms more; one probe to an \
         address that is there at once takes {:.1} ms (the floor of both)",
        median(run_ms),
        median(by_addr),
        median(by_name),
        median(floor)
    );

    // Throughput (3 s each, bounded): the underlay between the two host namespaces, then
    // container to container across the hosts through the overlay.
    if sh("sh", &["-c", "command -v iperf3"]).status.success() {
        a.spawn_in(
            &a.host_ns.clone(),
            &["iperf3", "-s", "-B", "10.77.0.1", "-p", "5301"],
        );
        a.wait_port(&a.host_ns, "10.77.0.1", 5301);
        let under = b.ns_exec(
            &b.host_ns,
            &["iperf3", "-c", "10.77.0.1", "-p", "5301", "-t", "3", "-J"],
        );
        a.run_d(
            "perf",
            &["--network", "app"],
            &["iperf3", "-s", "-p", "5302"],
        );
        let ip = a.ip_of("perf", "app");
        let over = iperf_from(&b, "client", &ip, 5302);
        // The same on an overlay network without the anti-spoofing guard: its cost.
        create_overlay(
            &a,
            "10.52.0.0/24",
            "open",
            &["-o", "berth.network.allow_spoofing=true"],
        );
        wait_networks(&b, &["open"]);
        a.run_d(
            "perf2",
            &["--network", "open"],
            &["iperf3", "-s", "-p", "5303"],
        );
        b.run_d("client2", &["--network", "open"], &["sleep", "600"]);
        let ip2 = a.ip_of("perf2", "open");
        let open = iperf_from(&b, "client2", &ip2, 5303);
        let (u_g, o_g, n_g) = (gbps(&under), gbps(&over), gbps(&open));
        eprintln!(
            "TCP throughput, 3 s: underlay {u_g:.2} Gbit/s; overlay container to container \
             across hosts {o_g:.2} Gbit/s = {:.0}% of the underlay; without the anti-spoofing \
             guard {n_g:.2} Gbit/s",
            if u_g > 0.0 { o_g / u_g * 100.0 } else { 0.0 }
        );
    }
    u.kill_etcd();
}

/// Proves: with a 3-member etcd cluster, losing one member changes nothing for berth (nodes
/// listed, an overlay network created, containers on two hosts talking across them); a host
/// cut off from the underlay for longer than its lease TTL is forgotten by the other host (its
/// node record and VXLAN entries), and once back it registers again under a new lease and
/// publishes its endpoints again: cross-host traffic works again without any command.
#[test]
fn etcd_member_loss_and_a_cut_off_host() {
    require_root!();
    let (a, b) = (World::new(), World::new());
    let mut u = Underlay::new(&a, &[&a, &b]);
    let members = u.start_etcd_cluster(&a);
    let store = "etcd://10.77.0.251:2379,10.77.0.252:2379,10.77.0.253:2379";
    for (w, n) in [(&a, "host-a"), (&b, "host-b")] {
        let ttl = TTL.to_string();
        let args = [
            "--cluster-store",
            store,
            "--advertise-addr",
            "ul0",
            "--node-name",
            n,
            "--cluster-lease-ttl",
            &ttl,
        ];
        w.keep_mounts();
        w.try_restart_daemon_full(false, &args, &[])
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    wait_names(&a, &["host-a", "host-b"], Duration::from_secs(5));

    // One member of three dies: quorum holds, berth goes on.
    sh_ok("kill", &["-9", &members[0].to_string()]);
    create_overlay(&a, "10.50.0.0/24", "app", &[]);
    wait_until("app on host-b", Duration::from_secs(10), || {
        network_names(&b).contains(&"app".to_string())
    });
    a.run_server("db", &["--network", "app"], 8080);
    a.wait_container_port("db", 8080);
    b.run_server("web", &["--network", "app"], 8081);
    b.wait_container_port("web", 8081);
    let ip_db = a.ip_of("db", "app");
    // Claimed cluster-wide: never the same address on two hosts (a publication that read
    // the local store before db's record was stored once dropped db's claim, and host-b
    // took the address).
    assert_ne!(
        b.ip_of("web", "app"),
        ip_db,
        "web and db hold the same address"
    );
    // The member killed above may have been etcd's leader: until a new one is elected the
    // watch that brings db's endpoint to host-b waits, and web's packets for db have no
    // path yet (a CI run under load saw this probe fail once, refused). Wait for db's
    // neighbour entry on host-b's VXLAN port (what the watch event programs), then send.
    // The member's loss also restarts host-a's sync, whose publication from scratch then
    // meets db's claim: before claims and publications were ordered (stop 44) it could
    // delete db's endpoint right after the claim committed it, or put db's claims without
    // it, and host-a then held it published: host-b never got it (3 runs in 12 under load).
    let vx = format!(
        "bvx-{}",
        &a.network_inspect("app")["Id"].as_str().expect("id")[..9]
    );
    wait_until(
        "db's neighbour entry on host-b",
        Duration::from_secs(10),
        || {
            let o = in_ov(&b, &vx, &["ip", "neigh", "show", "dev", &vx]);
            let t = stdout(&o);
            t.contains(&format!("{ip_db} ")) && t.contains("PERMANENT")
        },
    );
    b.assert_reaches("web", &ip_db, 8080);
    wait_names(&b, &["host-a", "host-b"], Duration::from_secs(5));

    // host-b loses the underlay for longer than its TTL.
    sh_ok("ip", &["-n", &b.host_ns, "link", "set", "ul0", "down"]);
    wait_names(&a, &["host-a"], Duration::from_millis(TTL * 1000 + 3000));
    wait_until(
        "host-b's entries gone from host-a",
        Duration::from_secs(3),
        || !fdb_dsts(&a, &vx).contains("dst 10.77.0.2"),
    );
    sh_ok("ip", &["-n", &b.host_ns, "link", "set", "ul0", "up"]);
    let took = wait_names(&a, &["host-a", "host-b"], Duration::from_secs(20));
    eprintln!("host-b back in host-a's node list {took:?} after its underlay came back");
    wait_until(
        "host-b's entries back on host-a",
        Duration::from_secs(10),
        || fdb_dsts(&a, &vx).contains("dst 10.77.0.2"),
    );
    let start = Instant::now();
    while b.tcp_from("web", &ip_db, 8080, 1.0).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "web on host-b should reach db again"
        );
    }
    a.assert_reaches("db", &b.ip_of("web", "app"), 8081);
    a.berth_ok(&["rm", "-f", "db"]);
    b.berth_ok(&["rm", "-f", "web"]);
    u.kill_etcd();
    for p in &members[1..] {
        let _ = sh("kill", &["-9", &p.to_string()]);
    }
}

/// Waits (≤ 10 s) for one UDP datagram on `port` in container `ctr`; prints it, or `TIMEOUT`.
const UDP_RECV_PY: &str = "import socket,sys\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
s.bind(('0.0.0.0',int(sys.argv[1])))\n\
s.settimeout(10)\n\
try:\n    d,a=s.recvfrom(4096); print(d.decode(errors='replace'))\n\
except socket.timeout:\n    print('TIMEOUT')\n";

/// Sends `marker` to `target:port` ten times, 0.2 s apart (by name: the container's resolver);
/// with a size, the marker padded to that many bytes, Don't Fragment set (IP_PMTUDISC_DO).
const UDP_SEND_PY: &str = "import socket,sys,time\n\
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
m=sys.argv[3].encode()\n\
if len(sys.argv)>4:\n    n=int(sys.argv[4]); m=(m*n)[:n]; s.setsockopt(socket.IPPROTO_IP,10,2)\n\
for _ in range(10):\n    s.sendto(m,(sys.argv[1],int(sys.argv[2]))); time.sleep(0.2)\n";

/// Captures every frame in the underlay namespace (AF_PACKET, all interfaces) until the file
/// `argv[1]` exists or 30 s pass; writes `ready` next to it first; then prints, as JSON, which
/// of the markers in argv[2:] were seen in clear and how many WireGuard (UDP 51820) frames.
const CAPTURE_PY: &str = r#"import socket, sys, os, time, json
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
# Every interface of the LAN namespace: the bridge's ports carry the hosts' traffic.
s.settimeout(0.2)
open(sys.argv[1] + '.ready', 'w').close()
seen = {m: False for m in sys.argv[2:]}
wg = 0
end = time.time() + 30
while time.time() < end and not os.path.exists(sys.argv[1]):
    try:
        f = s.recv(65535)
    except socket.timeout:
        continue
    for m in seen:
        seen[m] = seen[m] or m.encode() in f
    if len(f) >= 38 and f[12:14] == b'\x08\x00' and f[23] == 17:
        ihl = (f[14] & 15) * 4
        if int.from_bytes(f[14 + ihl + 2:14 + ihl + 4], 'big') == 51820:
            wg += 1
print(json.dumps({'seen': seen, 'wireguard': wg}))
"#;

/// Sends plaintext VXLAN frames from the LAN: `DST PORT VNI MAC IP UDPPORT MARKER`, an inner
/// Ethernet/IPv4/UDP frame to the container with that MAC and address, five times.
const INJECT_PY: &str = "import socket,sys,struct,time\n\
dst,port,vni,mac,ip,uport,marker=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4],sys.argv[5],int(sys.argv[6]),sys.argv[7].encode()\n\
def csum(b):\n    s=sum(struct.unpack('!%dH'%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16; return (~s)&0xffff\n\
udp=struct.pack('!HHHH',5555,uport,8+len(marker),0)+marker\n\
iph=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(udp),1,0,64,17,0,socket.inet_aton(ip.rsplit('.',1)[0]+'.200'),socket.inet_aton(ip))\n\
iph=iph[:10]+struct.pack('!H',csum(iph))+iph[12:]\n\
eth=bytes.fromhex(mac.replace(':',''))+bytes.fromhex('02000000bb99')+b'\\x08\\x00'\n\
vx=struct.pack('!II',0x08000000,vni<<8)\n\
fam=socket.AF_INET6 if ':' in dst else socket.AF_INET\n\
s=socket.socket(fam,socket.SOCK_DGRAM)\n\
for _ in range(5):\n    s.sendto(vx+eth+iph+udp,(dst,port)); time.sleep(0.3)\n";

/// Captures the underlay (`CAPTURE_PY` in `u`'s namespace, files in `w`'s directory) while
/// `f` runs; returns its JSON summary.
fn capture_underlay(
    u: &Underlay,
    w: &World,
    markers: &[&str],
    f: impl FnOnce(),
) -> serde_json::Value {
    let stopf = w.dir.join(format!("capture-{}.stop", markers.join("-")));
    let stopf = stopf.display().to_string();
    let cap = w.helper("capture.py");
    std::fs::write(&cap, CAPTURE_PY).expect("write helper");
    let mut args = vec![
        "netns",
        "exec",
        u.ns.as_str(),
        "python3",
        cap.as_str(),
        stopf.as_str(),
    ];
    args.extend_from_slice(markers);
    let out = std::thread::scope(|s| {
        let h = s.spawn(|| sh("ip", &args));
        wait_until("capture ready", Duration::from_secs(10), || {
            Path::new(&format!("{stopf}.ready")).exists()
        });
        f();
        std::fs::write(&stopf, "").expect("stop capture");
        h.join().expect("capture")
    });
    assert!(out.status.success(), "{}", show(&out));
    serde_json::from_str(stdout(&out).trim()).expect("capture json")
}

/// Runs `UDP_RECV_PY` in `rw`'s container `rc` on `port`, runs `f` once it listens, and
/// returns what it got.
fn udp_received(rw: &World, rc: &str, port: u16, f: impl FnOnce()) -> String {
    let py = rw.helper("udp_recv.py");
    std::fs::write(&py, UDP_RECV_PY).expect("write helper");
    let p = port.to_string();
    std::thread::scope(|s| {
        let recv = s.spawn(|| {
            let o = rw.exec(rc, &["python3", &py, &p]);
            stdout(&o).trim().to_string()
        });
        // Only once the receiver listens: a datagram that does not arrive then was dropped.
        let filter = format!("sport = :{port}");
        wait_until("the UDP receiver listening", Duration::from_secs(8), || {
            let o = rw.exec(rc, &["ss", "-Hnul", &filter]);
            o.status.success() && !stdout(&o).trim().is_empty()
        });
        f();
        recv.join().expect("receiver")
    })
}

fn udp_send(w: &World, from: &str, target: &str, port: u16, marker: &str) {
    let o = udp_send_sized(w, from, target, port, marker, None);
    assert!(o.status.success(), "{}", show(&o));
}

fn udp_send_sized(
    w: &World,
    from: &str,
    target: &str,
    port: u16,
    marker: &str,
    size: Option<usize>,
) -> std::process::Output {
    let py = w.helper("udp_send.py");
    std::fs::write(&py, UDP_SEND_PY).expect("write helper");
    let port = port.to_string();
    let size = size.map(|n| n.to_string());
    let mut args = vec!["python3", py.as_str(), target, port.as_str(), marker];
    args.extend(size.as_deref());
    w.exec(from, &args)
}

/// A UDP datagram of `size` bytes with DF set (`IP_PMTUDISC_DO`) from container `from` to
/// container `to` (at `to_ip`) arrives whole; one byte more is refused at the sender's own
/// interface (`EMSGSIZE`), not lost on the way.
fn assert_largest_df_datagram(from: (&World, &str), to: (&World, &str), to_ip: &str, size: usize) {
    let got = udp_received(to.0, to.1, 9994, || {
        let o = udp_send_sized(from.0, from.1, to_ip, 9994, "big", Some(size));
        assert!(o.status.success(), "{}", show(&o));
    });
    assert_eq!(got.len(), size, "{got}");
    let o = udp_send_sized(from.0, from.1, to_ip, 9994, "big", Some(size + 1));
    assert!(
        !o.status.success() && stderr(&o).contains("Message too long"),
        "{}",
        show(&o)
    );
}

fn mac_of(w: &World, ctr: &str, net: &str) -> String {
    w.inspect(ctr)["NetworkSettings"]["Networks"][net]["MacAddress"]
        .as_str()
        .expect("mac")
        .to_string()
}

fn vni_of(w: &World, net: &str) -> String {
    w.network_inspect(net)["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
        .as_str()
        .expect("vni")
        .to_string()
}

fn has_link(w: &World, name: &str) -> bool {
    sh("ip", &["-n", &w.host_ns, "link", "show", name])
        .status
        .success()
}

/// TCP by name from `w`'s container `from` to `name:port`, retried for up to `limit`.
fn reaches_by_name(w: &World, from: &str, name: &str, port: u16, limit: Duration) {
    let start = Instant::now();
    loop {
        match w.tcp_from(from, name, port, 2.0) {
            Ok(_) => return,
            Err(e) => assert!(
                start.elapsed() < limit,
                "{from} should reach {name}:{port}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Proves `--opt encrypted` (userspace WireGuard): an encrypted overlay network spans two
/// hosts, containers talk TCP and UDP by address and by name with MTU 1370 (a 1342-byte ping
/// with DF passes, 1343 does not); a capture of the underlay finds the marker sent on an
/// unencrypted overlay in clear but never the one sent on the encrypted network, whose frames
/// cross as WireGuard; a plaintext VXLAN frame a LAN neighbour injects with the encrypted
/// network's VNI (to its port, to 4789, to the tunnel address) never reaches the container,
/// while the same injection on the unencrypted network does (the injection works); each host's
/// private key is 0600 and its public key is in its node record; a SIGKILLed berthd restarted
/// converges; a host with a new key (file deleted, restart) is reached again; the tun device
/// goes with the last encrypted network.
#[test]
fn encrypted_overlay_spans_hosts() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    let key = a.state_dir.join("wireguard.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "private key mode");

    create_overlay(&a, "10.60.0.0/24", "sec", &["--opt", "encrypted"]);
    create_overlay(&a, "10.61.0.0/24", "plain", &[]);
    wait_networks(&b, &["sec", "plain"]);
    let ins = b.network_inspect("sec");
    assert_eq!(ins["Options"]["encrypted"], "", "{ins}");
    // The datapath runs where an encrypted network exists (created, or mirrored from etcd).
    wait_until("berth-wg0 on both hosts", Duration::from_secs(5), || {
        has_link(&a, "berth-wg0") && has_link(&b, "berth-wg0")
    });

    a.run_server("db", &["--network", "sec"], 8080);
    a.wait_container_port("db", 8080);
    b.run_server("web", &["--network", "sec"], 8081);
    b.wait_container_port("web", 8081);
    a.run_server("pdb", &["--network", "plain"], 8080);
    a.wait_container_port("pdb", 8080);
    b.run_server("pweb", &["--network", "plain"], 8081);
    b.wait_container_port("pweb", 8081);
    assert!(has_link(&a, "berth-wg0") && has_link(&b, "berth-wg0"));
    let (ip_db, ip_web, ip_pdb) = (
        a.ip_of("db", "sec"),
        b.ip_of("web", "sec"),
        a.ip_of("pdb", "plain"),
    );

    // TCP both ways by address, by name; UDP by name.
    let start = Instant::now();
    loop {
        if b.tcp_from("web", &ip_db, 8080, 2.0).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "web on host-b never reached db on host-a over the encrypted network"
        );
    }
    eprintln!(
        "encrypted network: first TCP across hosts after {:?}",
        start.elapsed()
    );
    a.assert_reaches("db", &ip_web, 8081);
    reaches_by_name(&b, "web", "db", 8080, Duration::from_secs(5));
    let got = udp_received(&a, "db", 9997, || {
        udp_send(&b, "web", "db", 9997, "udp-over-wg")
    });
    assert_eq!(got, "udp-over-wg");
    let link = b.exec_ok("web", &["ip", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1370"), "{link}");
    // The largest DF datagram (1342 + UDP 8 + IPv4 20 = 1370) crosses whole; one byte more
    // is refused at the container's interface.
    assert_largest_df_datagram((&b, "web"), (&a, "db"), &ip_db, 1342);
    // The node records carry the public keys.
    let rec = u.etcdctl(&["get", "--prefix", "/berth/nodes/", "--print-value-only"]);
    assert_eq!(rec.matches("\"WgKey\"").count(), 2, "{rec}");

    // A capture of the underlay: the unencrypted marker in clear, the encrypted one never.
    let v = capture_underlay(&u, &a, &["PLAIN-MARK-7f3a", "SECRET-MARK-9c1e"], || {
        udp_send(&b, "pweb", &ip_pdb, 9996, "PLAIN-MARK-7f3a");
        udp_send(&b, "web", &ip_db, 9996, "SECRET-MARK-9c1e");
        b.exec_ok(
            "web",
            &["python3", "-c", &format!(
                "import socket; s=socket.create_connection(('{ip_db}',8080),3); s.sendall(b'SECRET-MARK-9c1e'*50); s.close()"
            )],
        );
    });
    eprintln!("underlay capture: {v}");
    assert_eq!(
        v["seen"]["PLAIN-MARK-7f3a"], true,
        "the capture must see the plain overlay's marker: {v}"
    );
    assert_eq!(
        v["seen"]["SECRET-MARK-9c1e"], false,
        "plaintext of the encrypted network on the underlay: {v}"
    );
    assert!(v["wireguard"].as_u64().unwrap_or(0) >= 10, "{v}");

    // Injection from the LAN: plaintext VXLAN with the encrypted network's VNI is dropped on
    // every path; the same on the plain network arrives (the injection itself works).
    let inj = a.helper("inject.py");
    std::fs::write(&inj, INJECT_PY).expect("write helper");
    let inject = |dst: &str, port: &str, vni: &str, mac: &str, ip: &str, marker: &str| {
        let o = sh(
            "ip",
            &[
                "netns", "exec", &u.ns, "python3", &inj, dst, port, vni, mac, ip, "9995", marker,
            ],
        );
        assert!(o.status.success(), "{}", show(&o));
    };
    let (vni_sec, vni_plain) = (vni_of(&a, "sec"), vni_of(&a, "plain"));
    let (mac_db, mac_pdb) = (mac_of(&a, "db", "sec"), mac_of(&a, "pdb", "plain"));
    let got = udp_received(&a, "pdb", 9995, || {
        inject(
            "10.77.0.1",
            "4789",
            &vni_plain,
            &mac_pdb,
            &ip_pdb,
            "INJECTED-PLAIN",
        )
    });
    assert_eq!(got, "INJECTED-PLAIN", "the control injection must arrive");
    let ul_mac = sh_ok("ip", &["-n", &a.host_ns, "-br", "link", "show", "ul0"]);
    let ul_mac = ul_mac.split_whitespace().nth(2).expect("mac").to_string();
    let tunnel_a = "fd62:6572:7468::a4d:1";
    sh_ok(
        "ip",
        &[
            "-n",
            &u.ns,
            "-6",
            "route",
            "add",
            "fd62:6572:7468::/96",
            "dev",
            "br0",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n", &u.ns, "-6", "neigh", "add", tunnel_a, "lladdr", &ul_mac, "dev", "br0",
        ],
    );
    let got = udp_received(&a, "db", 9995, || {
        inject(
            "10.77.0.1",
            "4792",
            &vni_sec,
            &mac_db,
            &ip_db,
            "INJECTED-SEC",
        );
        inject(
            "10.77.0.1",
            "4789",
            &vni_sec,
            &mac_db,
            &ip_db,
            "INJECTED-SEC",
        );
        inject(tunnel_a, "4792", &vni_sec, &mac_db, &ip_db, "INJECTED-SEC");
    });
    assert_eq!(
        got, "TIMEOUT",
        "an injected plaintext frame reached the encrypted network"
    );
    let fw = a.nft_table();
    assert!(
        fw.contains("udp dport 4792 fib daddr type local counter packets")
            && !fw.contains("udp dport 4792 fib daddr type local counter packets 0 "),
        "the drop rule should have counted the injected frames: {fw}"
    );

    // host-b's berthd killed: its tun device is gone, and even with an IPv6 default route
    // onto the underlay the encrypted network's packets do not leave in clear (the firewall,
    // which outlives berthd, drops them). Restarted: the tun device comes back, traffic flows.
    b.stop_daemon(true);
    assert!(
        !has_link(&b, "berth-wg0"),
        "the tun device dies with berthd"
    );
    sh_ok(
        "ip",
        &[
            "-n", &b.host_ns, "-6", "route", "add", "default", "dev", "ul0",
        ],
    );
    let v = capture_underlay(&u, &a, &["WHILE-DOWN-4d2b"], || {
        let _ = udp_send_sized(&b, "web", &ip_db, 9993, "WHILE-DOWN-4d2b", None);
    });
    sh_ok(
        "ip",
        &[
            "-n", &b.host_ns, "-6", "route", "del", "default", "dev", "ul0",
        ],
    );
    assert_eq!(
        v["seen"]["WHILE-DOWN-4d2b"], false,
        "plaintext while berthd was down: {v}"
    );
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    let took = wait_until(
        "web reaches db after host-b's restart",
        Duration::from_secs(20),
        || b.tcp_from("web", &ip_db, 8080, 1.0).is_ok(),
    );
    eprintln!("encrypted network converged {took:?} after host-b's berthd restart");
    a.assert_reaches("db", &ip_web, 8081);

    // Key rotation: host-b's key deleted, berthd restarted; host-a picks up the new key.
    let old = std::fs::read_to_string(b.state_dir.join("wireguard.key")).expect("key");
    b.stop_daemon(false);
    std::fs::remove_file(b.state_dir.join("wireguard.key")).expect("rm key");
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    let new = std::fs::read_to_string(b.state_dir.join("wireguard.key")).expect("key");
    assert_ne!(old, new, "a new key");
    wait_until(
        "db reaches web after host-b's key rotation",
        Duration::from_secs(20),
        || a.tcp_from("db", &ip_web, 8081, 1.0).is_ok(),
    );
    reaches_by_name(&b, "web", "db", 8080, Duration::from_secs(10));

    // A host gone for good (berthd killed, lease expired): its peer goes on host-a.
    b.stop_daemon(true);
    wait_until(
        "host-b's WireGuard peer removed on host-a",
        Duration::from_millis(TTL * 1000 + 3000),
        || a.log_text().contains("wireguard: peer removed peer=host-b"),
    );
    join(&b, "host-b").unwrap_or_else(|e| panic!("{e}"));
    wait_until("web reaches db again", Duration::from_secs(20), || {
        b.tcp_from("web", &ip_db, 8080, 1.0).is_ok()
    });

    // The last encrypted network goes: so does the tun device (and its route).
    for (w, c) in [(&a, "db"), (&b, "web"), (&a, "pdb"), (&b, "pweb")] {
        w.berth_ok(&["rm", "-f", c]);
    }
    a.berth_ok(&["network", "rm", "sec"]);
    wait_until(
        "berth-wg0 gone on both hosts",
        Duration::from_secs(10),
        || !has_link(&a, "berth-wg0") && !has_link(&b, "berth-wg0"),
    );
    let vx = format!(
        "bvx-{}",
        &a.network_inspect("plain")["Id"].as_str().expect("id")[..9]
    );
    assert!(in_ov(&a, &vx, &["ip", "link", "show", &vx])
        .status
        .success());
    u.kill_etcd();
}

/// Not a test of behaviour: TCP throughput (iperf3, 3 s each) container to container across
/// two hosts on an encrypted overlay network against an unencrypted one and the underlay, in
/// one run (`--ignored --nocapture`), with the load average.
#[test]
#[ignore]
fn bench_encrypted_overlay() {
    require_root!();
    let (a, b, mut u) = two_hosts();
    create_overlay(&a, "10.60.0.0/24", "sec", &["--opt", "encrypted"]);
    create_overlay(&a, "10.61.0.0/24", "plain", &[]);
    wait_networks(&b, &["sec", "plain"]);
    a.spawn_in(
        &a.host_ns.clone(),
        &["iperf3", "-s", "-B", "10.77.0.1", "-p", "5301"],
    );
    a.wait_port(&a.host_ns, "10.77.0.1", 5301);
    for net in ["sec", "plain"] {
        a.run_d(
            &format!("srv-{net}"),
            &["--network", net],
            &["iperf3", "-s", "-p", "5302"],
        );
        b.run_d(
            &format!("cli-{net}"),
            &["--network", net],
            &["sleep", "600"],
        );
    }
    let (ip_sec, ip_plain) = (a.ip_of("srv-sec", "sec"), a.ip_of("srv-plain", "plain"));
    eprintln!(
        "boringtun alone on this CPU (one core, in memory, 1440-byte packets): {:.2} Gbit/s \
         encrypted and decrypted",
        crypto_ceiling_gbps()
    );
    for round in 0..3 {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let under = b.ns_exec(
            &b.host_ns,
            &["iperf3", "-c", "10.77.0.1", "-p", "5301", "-t", "3", "-J"],
        );
        let plain = iperf_from(&b, "cli-plain", &ip_plain, 5302);
        let sec = iperf_from(&b, "cli-sec", &ip_sec, 5302);
        let (ug, pg, sg) = (gbps(&under), gbps(&plain), gbps(&sec));
        // Where packets are lost, if they are: TCP's retransmissions on the encrypted path,
        // each host's UDP receive-buffer overflows and the tun device's drops.
        eprintln!(
            "round {round}: plain retransmits {}; encrypted retransmits {}; host A {}; host B {}",
            retransmits(&plain),
            retransmits(&sec),
            drop_counters(&a),
            drop_counters(&b)
        );
        eprintln!(
            "round {round} (load {}): underlay {ug:.2} Gbit/s; overlay {pg:.2} Gbit/s; \
             encrypted overlay {sg:.2} Gbit/s = {:.0}% of the overlay, {:.0}% of the underlay",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            if pg > 0.0 { sg / pg * 100.0 } else { 0.0 },
            if ug > 0.0 { sg / ug * 100.0 } else { 0.0 }
        );
    }
    u.kill_etcd();
}

/// TCP retransmissions, largest congestion window and mean round trip of the sender in
/// `iperf3 -J` output.
fn retransmits(o: &std::process::Output) -> String {
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap_or_default();
    let sender = &v["end"]["streams"][0]["sender"];
    format!(
        "{} (max cwnd {} KiB, mean rtt {} µs)",
        v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        sender["max_snd_cwnd"].as_u64().unwrap_or(0) / 1024,
        sender["mean_rtt"].as_u64().unwrap_or(0)
    )
}

/// `w`'s host namespace's UDP receive-buffer errors (since it was made) and the WireGuard tun
/// device's dropped packets, for the encrypted bench.
fn drop_counters(w: &World) -> String {
    let snmp = stdout(&w.ns_exec(&w.host_ns, &["cat", "/proc/net/snmp"]));
    let udp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Udp:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let rcvbuf = match udp.as_slice() {
        [names, values, ..] => names
            .iter()
            .position(|n| *n == "RcvbufErrors")
            .and_then(|i| values.get(i))
            .copied()
            .unwrap_or("?")
            .to_string(),
        _ => "?".into(),
    };
    let link = stdout(&w.ns_exec(&w.host_ns, &["ip", "-s", "link", "show", "berth-wg0"]));
    let lines: Vec<&str> = link.lines().map(str::trim).collect();
    let field = |header: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(header))
            .and_then(|i| lines.get(i + 1))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "UdpRcvbufErrors {rcvbuf}, berth-wg0 rx dropped {} tx dropped {}",
        field("RX:"),
        field("TX:")
    )
}

/// What boringtun's ChaCha20-Poly1305 alone does on this CPU: two sessions in memory (after
/// their handshake), 1440-byte packets (a full tun MTU) encrypted by one and decrypted by the
/// other for about a second, in Gbit/s of packets: the ceiling of a userspace datapath here.
fn crypto_ceiling_gbps() -> f64 {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let pub_of = |k: [u8; 32]| PublicKey::from(&StaticSecret::from(k));
    let mut ta = Tunn::new(StaticSecret::from(ka), pub_of(kb), None, None, 1 << 8, None);
    let mut tb = Tunn::new(StaticSecret::from(kb), pub_of(ka), None, None, 2 << 8, None);
    let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
    // Handshake: initiation a → b, response b → a, then a's first (keepalive) packet to b.
    let TunnResult::WriteToNetwork(init) = ta.format_handshake_initiation(&mut buf, false) else {
        panic!("no initiation")
    };
    let TunnResult::WriteToNetwork(resp) = tb.decapsulate(None, init, &mut out) else {
        panic!("no response")
    };
    let resp = resp.to_vec();
    if let TunnResult::WriteToNetwork(k) = ta.decapsulate(None, &resp, &mut buf) {
        let k = k.to_vec();
        let _ = tb.decapsulate(None, &k, &mut out);
    }
    // An IPv6 packet of 1440 bytes (the tun MTU).
    let mut pkt = vec![0u8; 1440];
    pkt[0] = 0x60;
    pkt[4..6].copy_from_slice(&(1440u16 - 40).to_be_bytes());
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            let TunnResult::WriteToNetwork(c) = ta.encapsulate(&pkt, &mut buf) else {
                panic!("encapsulate")
            };
            let c = c.len();
            match tb.decapsulate(None, &buf[..c], &mut out) {
                TunnResult::WriteToTunnelV6(..) => n += 1,
                _ => panic!("decapsulate"),
            }
        }
    }
    n as f64 * 1440.0 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}
