//! End-to-end: berth's embedded DNS resolver, queried from inside containers.
//!
//! Every world points berthd's `--resolv-conf` at a file of its own naming a fake upstream
//! resolver (a small Python server) in the world's "outside" namespace, or on a loopback
//! address of the host namespace: no query ever leaves the test namespaces.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::dns::{DNSQ_PY, FAKEDNS_PY};
use common::{show, stdout, World};
use serde_json::Value;

/// Load: `dnsload.py SERVER SECONDS INFLIGHT NAME=EXPECT…` sends A queries over UDP for
/// SECONDS, NAME in turn, at most INFLIGHT outstanding, each waited for up to 3 s with no retry,
/// then drains. EXPECT is an address the answer must contain, or `*` for "any answer". Prints
/// a JSON summary.
const DNSLOAD_PY: &str = r#"
import json, select, socket, struct, sys, time
server, seconds, inflight = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
names = [a.split("=") for a in sys.argv[4:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)
pending = {}
sent = answered = bad = expired_total = 0
examples = []
qid = 0
start = time.time()
while True:
    now = time.time()
    sending = now - start < seconds
    while sending and len(pending) < inflight:
        qid = (qid + 1) % 65536
        name, expect = names[sent % len(names)]
        s.sendto(query(qid, name), (server, 53))
        pending[qid] = (name, expect, now)
        sent += 1
    if not sending and not pending:
        break
    r, _, _ = select.select([s], [], [], 0.2)
    if r:
        m, _ = s.recvfrom(4096)
        rid, flags, qd, an = struct.unpack(">HHHH", m[:8])
        if rid not in pending:
            continue
        name, expect, _ = pending.pop(rid)
        answered += 1
        ips = []
        i = 12
        while m[i] != 0: i += 1 + m[i]
        i += 5
        for _ in range(an):
            i += 2
            t, c, ttl, l = struct.unpack(">HHIH", m[i:i + 10]); i += 10
            if t == 1: ips.append(socket.inet_ntoa(m[i:i + l]))
            i += l
        if expect != "*" and expect not in ips:
            bad += 1
            if len(examples) < 5: examples.append([name, expect, flags & 0xF, ips])
    now = time.time()
    expired = [k for k, v in pending.items() if now - v[2] > 3]
    for k in expired:
        pending.pop(k)
    expired_total += len(expired)
    if expired and len(examples) < 5:
        examples.append(["lost", [k for k in expired][:3]])
print(json.dumps({"sent": sent, "answered": answered, "lost": sent - answered, "bad": bad,
                  "expired": expired_total, "examples": examples,
                  "seconds": round(time.time() - start, 2)}))
"#;

/// Burst: `dnsburst.py SERVER ROUNDS SPEC…` sends every SPEC (`NAME/TYPE=RCODE:IP,IP…`, the
/// addresses in any order, none for an empty answer) ROUNDS times from one socket as fast as it
/// can, without reading, so the queries queue up on the resolver's socket together; then reads
/// every answer (3 s at most) and checks each one by its id. Prints a JSON summary.
const DNSBURST_PY: &str = r#"
import json, socket, struct, sys, time
server, rounds, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
types = {"A": 1, "AAAA": 28}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
want = {}
qid = 0
for _ in range(rounds):
    for spec in specs:
        q, exp = spec.split("=")
        name, qtype = q.split("/")
        rcode, ips = exp.split(":")
        qid += 1
        m = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        for label in name.split("."):
            m += bytes([len(label)]) + label.encode()
        m += b"\0" + struct.pack(">HH", types[qtype], 1)
        want[qid] = (spec, int(rcode), sorted(filter(None, ips.split(","))))
        s.sendto(m, (server, 53))
bad = []
s.settimeout(0.5)
end = time.time() + 3
while want and time.time() < end:
    try:
        m, _ = s.recvfrom(4096)
    except socket.timeout:
        continue
    rid, flags, qd, an = struct.unpack(">HHHH", m[:8])
    if rid not in want:
        bad.append(["unexpected id", rid]); continue
    spec, rcode, ips = want.pop(rid)
    i = 12
    while m[i] != 0: i += 1 + m[i]
    i += 5
    got = []
    for _ in range(an):
        i += 2
        t, c, ttl, l = struct.unpack(">HHIH", m[i:i + 10]); i += 10
        if t == 1: got.append(socket.inet_ntoa(m[i:i + l]))
        if t == 28: got.append(socket.inet_ntop(socket.AF_INET6, m[i:i + l]))
        i += l
    if (flags & 0xF, sorted(got)) != (rcode, ips):
        bad.append([spec, flags & 0xF, got])
print(json.dumps({"sent": qid, "missing": len(want), "bad": bad[:10]}))
"#;

/// A world with the DNS helpers, and berthd forwarding to the resolvers of `resolv_conf`.
struct DnsWorld {
    w: World,
    resolv: PathBuf,
}

impl DnsWorld {
    /// Builds the world; berthd's host resolv.conf names the outside peer (where the tests
    /// start a fake upstream when they need one).
    fn new() -> DnsWorld {
        let w = World::new();
        for (name, text) in [
            ("dnsq.py", DNSQ_PY),
            ("fakedns.py", FAKEDNS_PY),
            ("dnsload.py", DNSLOAD_PY),
            ("dnsburst.py", DNSBURST_PY),
        ] {
            std::fs::write(w.dir.join(name), text).expect("write helper");
        }
        let resolv = w.dir.join("host-resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {}\nsearch corp.test\n", w.out_ip()),
        )
        .expect("write host resolv.conf");
        let arg = resolv.display().to_string();
        w.restart_daemon_args(&["--resolv-conf", &arg]);
        DnsWorld { w, resolv }
    }

    /// [`DnsWorld::new`] with the fake upstream on the outside peer, answering `names`
    /// (`NAME=IP`) and NXDOMAIN for the rest.
    fn with_upstream(names: &[&str]) -> DnsWorld {
        let d = DnsWorld::new();
        d.fake_upstream(&d.w.out_ns, &d.w.out_ip(), names);
        d
    }

    /// `dnsq.py` from container `from` (server `-`: its resolv.conf nameserver).
    fn q(&self, from: &str, server: &str, name: &str, qtype: &str, extra: &[&str]) -> Value {
        let helper = self.w.helper("dnsq.py");
        let mut cmd = vec!["python3", helper.as_str(), server, name, qtype];
        cmd.extend_from_slice(extra);
        let out = self.w.exec_ok(from, &cmd);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("dnsq output {out:?}: {e}"))
    }

    /// The A answers `from` gets for `name` through its resolv.conf.
    fn a(&self, from: &str, name: &str) -> Vec<String> {
        let v = self.q(from, "-", name, "A", &[]);
        assert_eq!(v["id_ok"], true, "{from} → {name}: {v}");
        answers(&v)
    }

    /// Starts a fake upstream at `addr` inside `ns`, answering `names` (`NAME=IP`).
    fn fake_upstream(&self, ns: &str, addr: &str, names: &[&str]) {
        let helper = self.w.helper("fakedns.py");
        let mut cmd = vec!["python3", helper.as_str(), addr];
        cmd.extend_from_slice(names);
        self.w.spawn_in(ns, &cmd);
        // Bounded wait until its TCP side accepts (the UDP side is bound first).
        self.w.wait_port(ns, addr, 53);
    }

    /// `GET /info` → `Dns`.
    fn dns_info(&self) -> Value {
        let out = common::sh_ok(
            "curl",
            &[
                "-sf",
                "--max-time",
                "10",
                "--unix-socket",
                &self.w.socket.display().to_string(),
                "http://berth/info",
            ],
        );
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("/info {out:?}: {e}"));
        v["Dns"].clone()
    }
}

fn answers(v: &Value) -> Vec<String> {
    v["answers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Proves: container names, short ids and `--network-alias` names resolve (any case) to the
/// address on the shared network, an alias of two containers gives both addresses in rotating
/// order, PTR answers every container address, answers are authoritative with TTL 0, libc
/// resolves through the generated resolv.conf (nameserver = the network's gateway,
/// `ndots:0`), and scoping holds across 3 networks: a container never resolves a container of
/// a network it is not on, `network connect --alias` adds names at once and `disconnect` takes
/// them away at once.
/// Proves: a container that publishes port 53 on every host address while no network has
/// berth's resolver (on the default bridge, so the publish is allowed) does not capture the
/// DNS of a network created after it: a container there asks its gateway and gets berth's
/// answer, not the publisher's. The publish itself still works from outside. Without the
/// `dns` set's rule the catcher's address comes back (the DNAT of every host address took the
/// gateway's port 53 too).
#[test]
fn a_published_port_53_never_captures_a_later_networks_dns() {
    require_root!();
    let d = DnsWorld::new();
    let w = &d.w;
    let fake = w.helper("fakedns.py");
    w.run_d(
        "catcher",
        &["-p", "53:53/udp", "-p", "53:53/tcp"],
        &["python3", &fake, "0.0.0.0", "x=10.66.0.66", "y=10.66.0.67"],
    );
    w.wait_container_port("catcher", 53);
    w.berth_ok(&["network", "create", "--subnet", "10.67.0.0/24", "late"]);
    w.run_d("x", &["--network", "late"], &["sleep", "300"]);
    w.run_d("y", &["--network", "late"], &["sleep", "300"]);
    let x_ip = w.ip_of("x", "late");
    for extra in [&[][..], &["--tcp"][..]] {
        let v = d.q("y", "-", "x", "A", extra);
        assert_eq!(
            answers(&v),
            vec![x_ip.clone()],
            "y asked its gateway for x ({extra:?}): berth's answer, not the catcher's: {v}"
        );
    }
    // The published port still answers from outside.
    let dnsq = w.helper("dnsq.py");
    let out = w.ns_exec_ok(&w.out_ns, &["python3", &dnsq, &w.host_ip(), "x", "A"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(
        answers(&v),
        vec!["10.66.0.66".to_string()],
        "from outside: {v}"
    );
    w.assert_in_sync("a port 53 published before a served network");
}

#[test]
fn names_aliases_scoping_ptr() {
    require_root!();
    let d = DnsWorld::new();
    let w = &d.w;
    w.berth_ok(&["network", "create", "--subnet", "10.61.0.0/24", "na"]);
    w.berth_ok(&["network", "create", "--subnet", "10.62.0.0/24", "nb"]);
    w.berth_ok(&["network", "create", "--subnet", "10.63.0.0/24", "nc"]);
    let x = w.run_d(
        "x",
        &["--network", "na", "--network-alias", "web"],
        &["sleep", "300"],
    );
    w.run_d(
        "x2",
        &["--network", "na", "--network-alias", "web"],
        &["sleep", "300"],
    );
    w.run_d("y", &["--network", "na"], &["sleep", "300"]);
    w.run_d("z", &["--network", "nb"], &["sleep", "300"]);
    w.run_d("v", &["--network", "nc"], &["sleep", "300"]);
    let (x_ip, x2_ip, y_ip) = (w.ip_of("x", "na"), w.ip_of("x2", "na"), w.ip_of("y", "na"));
    let z_ip = w.ip_of("z", "nb");

    let rc = w.exec_ok("x", &["cat", "/etc/resolv.conf"]);
    assert!(
        rc.contains("nameserver 10.61.0.1\n"),
        "x's resolv.conf:\n{rc}"
    );
    assert!(
        rc.contains("search corp.test\n") && rc.contains("ndots:0"),
        "{rc}"
    );

    // Names, any case, short id; authoritative, TTL 0.
    let v = d.q("y", "-", "X", "A", &[]);
    assert_eq!(answers(&v), vec![x_ip.clone()], "{v}");
    assert_eq!(
        (v["aa"].as_bool(), v["ttls"][0].as_u64()),
        (Some(true), Some(0)),
        "{v}"
    );
    assert_eq!(d.a("y", &x[..12]), vec![x_ip.clone()]);
    assert_eq!(d.a("y", "x.na"), vec![x_ip.clone()]);
    // libc through /etc/resolv.conf.
    let g = w.exec_ok("y", &["getent", "ahostsv4", "x2"]);
    assert!(g.contains(&x2_ip), "getent x2 from y: {g}");

    // The alias of two containers: both addresses, the first one rotating.
    let mut firsts = BTreeSet::new();
    for _ in 0..4 {
        let got = d.a("y", "web");
        assert_eq!(
            sorted(got.clone()),
            sorted(vec![x_ip.clone(), x2_ip.clone()])
        );
        firsts.insert(got[0].clone());
    }
    assert_eq!(firsts.len(), 2, "answer order never rotated: {firsts:?}");

    // PTR.
    let rev: Vec<&str> = y_ip.split('.').rev().collect();
    let v = d.q(
        "x",
        "-",
        &format!("{}.in-addr.arpa", rev.join(".")),
        "PTR",
        &[],
    );
    assert_eq!(v["ptrs"], serde_json::json!(["y.na."]), "{v}");

    // Scoping: z (nb) and v (nc) are invisible from x, and x from them.
    assert!(d.a("x", "z").is_empty());
    assert!(d.a("x", "v").is_empty());
    assert!(d.a("z", "x").is_empty());
    assert!(d.a("v", "y").is_empty());
    assert!(d.a("v", "web").is_empty());

    // connect --alias: y joins nb; z now sees y (by name and alias) at its nb address, and x
    // still does not see the alias, which lives on nb only.
    w.berth_ok(&["network", "connect", "--alias", "dbalias", "nb", "y"]);
    let y_b = w.ip_of("y", "nb");
    assert_eq!(d.a("z", "y"), vec![y_b.clone()]);
    assert_eq!(d.a("z", "DBalias"), vec![y_b.clone()]);
    assert!(d.a("x", "dbalias").is_empty());
    // y now sees both sides.
    assert_eq!(d.a("y", "z"), vec![z_ip.clone()]);
    assert_eq!(d.a("y", "x"), vec![x_ip.clone()]);

    // disconnect: gone at once.
    w.berth_ok(&["network", "disconnect", "nb", "y"]);
    assert!(d.a("z", "y").is_empty());
    assert!(d.a("z", "dbalias").is_empty());
    assert!(d.a("y", "z").is_empty());

    // A stopped container is no longer answered.
    w.berth_ok(&["stop", "-t", "1", "x2"]);
    assert_eq!(d.a("y", "web"), vec![x_ip.clone()]);
    assert!(d.a("y", "x2").is_empty());
}

/// Proves: on a dual-stack network AAAA answers the container's IPv6 address, the resolver
/// also listens on the IPv6 gateway, PTR answers IPv6 addresses, and A/AAAA of a v4-only name
/// is NOERROR without records (not forwarded).
#[test]
fn dual_stack_aaaa() {
    require_root!();
    let d = DnsWorld::new();
    let w = &d.w;
    w.berth_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.64.0.0/24",
        "--subnet",
        "fd64:1::/64",
        "ds",
    ]);
    w.run_d("p", &["--network", "ds"], &["sleep", "300"]);
    w.run_d("q", &["--network", "ds"], &["sleep", "300"]);
    let v = w.inspect("q");
    let q6 = v["NetworkSettings"]["Networks"]["ds"]["GlobalIPv6Address"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(q6.starts_with("fd64:1::"), "q has no IPv6 address: {v}");
    let q4 = w.ip_of("q", "ds");

    let v = d.q("p", "-", "q", "AAAA", &[]);
    assert_eq!(answers(&v), vec![q6.clone()], "{v}");
    assert_eq!(d.a("p", "q"), vec![q4.clone()]);
    // Over the IPv6 gateway too, A and AAAA at once.
    let v = d.q("p", "fd64:1::1", "q", "ANY", &[]);
    assert_eq!(sorted(answers(&v)), sorted(vec![q4, q6.clone()]), "{v}");
    // PTR of the IPv6 address.
    let ip: std::net::Ipv6Addr = q6.parse().expect("v6");
    let nibbles: String = ip
        .octets()
        .iter()
        .rev()
        .flat_map(|b| [b & 0xF, b >> 4])
        .map(|n| format!("{n:x}."))
        .collect();
    let v = d.q("p", "-", &format!("{nibbles}ip6.arpa"), "PTR", &[]);
    assert_eq!(v["ptrs"], serde_json::json!(["q.ds."]), "{v}");
    // A name with no record of the type: NOERROR, no answer.
    let v = d.q("p", "-", "q", "TXT", &[]);
    assert_eq!(
        (v["rcode"].as_str(), answers(&v).len()),
        (Some("NOERROR"), 0),
        "{v}"
    );
}

/// Proves: other names are forwarded to the host's upstream (over UDP and TCP), containers on
/// an `--internal` network resolve their own names but get REFUSED for the rest, `--dns`
/// servers are used for that container's forwarded queries, a change of the host resolv.conf
/// (here to a loopback stub in berthd's namespace) is picked up without a restart, large
/// answers are truncated over UDP and complete over TCP, and `/info` + `/metrics` count it all.
#[test]
fn forwarding_internal_and_resolv_conf_change() {
    require_root!();
    let d = DnsWorld::new();
    let w = &d.w;
    let out_ip = w.out_ip();
    d.fake_upstream(
        &w.out_ns,
        &out_ip,
        &["ext.test=192.0.2.10", "only.outside=192.0.2.11"],
    );
    w.berth_ok(&["network", "create", "--subnet", "10.65.0.0/24", "pub"]);
    w.berth_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.66.0.0/24",
        "priv",
    ]);
    w.run_d("c", &["--network", "pub"], &["sleep", "300"]);
    w.run_d(
        "cdns",
        &["--network", "pub", "--dns", &out_ip],
        &["sleep", "300"],
    );
    w.run_d("i1", &["--network", "priv"], &["sleep", "300"]);
    w.run_d("i2", &["--network", "priv"], &["sleep", "300"]);

    assert_eq!(d.a("c", "ext.test"), vec!["192.0.2.10"]);
    let v = d.q("c", "-", "ext.test", "A", &["--tcp"]);
    assert_eq!(answers(&v), vec!["192.0.2.10"], "over TCP: {v}");
    let v = d.q("c", "-", "nope.test", "A", &[]);
    assert_eq!(v["rcode"], "NXDOMAIN", "{v}");
    // --dns: the container's resolv.conf still names berth, which forwards to its server.
    let rc = w.exec_ok("cdns", &["cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 10.65.0.1\n"), "{rc}");
    assert_eq!(d.a("cdns", "ext.test"), vec!["192.0.2.10"]);

    // Internal: own names yes, the rest REFUSED.
    assert_eq!(d.a("i1", "i2"), vec![w.ip_of("i2", "priv")]);
    let v = d.q("i1", "-", "ext.test", "A", &[]);
    assert_eq!(v["rcode"], "REFUSED", "{v}");

    // The host's resolv.conf changes to a loopback stub in berthd's namespace, which answers
    // differently: picked up within about a second, no restart.
    d.fake_upstream(&w.host_ns, "127.0.0.53", &["ext.test=192.0.2.20"]);
    std::fs::write(&d.resolv, "nameserver 127.0.0.53\n").expect("rewrite resolv.conf");
    let start = Instant::now();
    loop {
        let got = d.a("c", "ext.test");
        if got == vec!["192.0.2.20"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "new upstream not used after 5 s: still {got:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.a("c", "only.outside").is_empty());
    // cdns keeps its own --dns server.
    assert_eq!(d.a("cdns", "only.outside"), vec!["192.0.2.11"]);

    // Truncation: 40 containers share an alias (40 × 16 bytes of records > 512).
    for i in 0..40 {
        w.berth_ok(&[
            "run",
            "-d",
            "--name",
            &format!("m{i}"),
            "--network",
            "pub",
            "--network-alias",
            "many",
            "sleep",
            "300",
        ]);
    }
    let v = d.q("c", "-", "many", "A", &[]);
    assert_eq!(
        (v["tc"].as_bool(), answers(&v).len()),
        (Some(true), 0),
        "UDP: {v}"
    );
    let v = d.q("c", "-", "many", "A", &["--tcp"]);
    assert_eq!(answers(&v).len(), 40, "TCP: {v}");
    let v = d.q("c", "-", "many", "A", &["--edns", "1232"]);
    assert_eq!(
        (v["tc"].as_bool(), answers(&v).len()),
        (Some(false), 40),
        "EDNS: {v}"
    );
    // libc retries over TCP by itself.
    let g = w.exec_ok("c", &["getent", "ahostsv4", "many"]);
    assert_eq!(
        g.lines().filter(|l| l.contains("STREAM")).count(),
        40,
        "getent many: {g}"
    );

    let info = d.dns_info();
    for key in [
        "Queries",
        "TcpQueries",
        "AnsweredLocally",
        "Forwarded",
        "Refused",
        "Truncated",
    ] {
        assert!(
            info[key].as_u64().unwrap_or(0) > 0,
            "/info Dns.{key} is 0: {info}"
        );
    }
    assert!(info["LocalP99Us"].as_f64().unwrap_or(0.0) > 0.0, "{info}");
    assert!(
        info["Listen"].to_string().contains("10.65.0.1:53"),
        "/info Dns.Listen: {info}"
    );
    let metrics = common::sh_ok(
        "curl",
        &[
            "-sf",
            "--max-time",
            "10",
            "--unix-socket",
            &w.socket.display().to_string(),
            "http://berth/metrics",
        ],
    );
    assert!(metrics.contains("berth_dns_queries_total "), "{metrics}");
    assert!(metrics.contains("berth_dns_latency_seconds{path=\"local\",quantile=\"0.99\"}"));

    // A removed network's listener goes away (the address is gone with its bridge).
    w.berth_ok(&["rm", "-f", "i1", "i2"]);
    w.berth_ok(&["network", "rm", "priv"]);
    let info = d.dns_info();
    assert!(!info["Listen"].to_string().contains("10.66.0.1"), "{info}");
}

/// Proves: a container re-created with another address is answered with the new address as
/// soon as `run -d` returns, and while containers come and go (and the table is swapped dozens
/// of times) thousands of queries from another container are all answered, correctly.
#[test]
fn churn_loses_nothing() {
    require_root!();
    let d = DnsWorld::with_upstream(&["ext.test=192.0.2.10"]);
    let w = &d.w;
    w.berth_ok(&["network", "create", "--subnet", "10.67.0.0/24", "churn"]);
    w.run_d(
        "stable",
        &["--network", "churn", "--network-alias", "svc"],
        &["sleep", "600"],
    );
    w.run_d("asker", &["--network", "churn"], &["sleep", "600"]);
    let stable = w.ip_of("stable", "churn");

    let seconds = 15;
    let load = {
        let helper = w.helper("dnsload.py");
        let sock = w.host_url();
        let berth = common::berth_bin();
        let (s1, s2) = (format!("stable={stable}"), format!("svc={stable}"));
        std::thread::spawn(move || {
            let mut c = std::process::Command::new(berth);
            c.args([
                "-H",
                &sock,
                "exec",
                "asker",
                "python3",
                &helper,
                "10.67.0.1",
            ])
            .arg(seconds.to_string())
            .args(["20", &s1, &s2, "ext.test=192.0.2.10", "mover=*", "gone=*"]);
            common::run_timeout(c, Duration::from_secs(240))
        })
    };

    // Meanwhile: re-create "mover" with a new address each time, and start/remove others.
    let mut rounds = 0;
    while !load.is_finished() && rounds < 100 {
        let ip = format!("10.67.0.{}", 100 + rounds);
        w.berth_ok(&[
            "run",
            "-d",
            "--name",
            "mover",
            "--network",
            "churn",
            "--ip",
            &ip,
            "sleep",
            "600",
        ]);
        assert_eq!(d.a("stable", "mover"), vec![ip.clone()], "round {rounds}");
        w.berth_ok(&[
            "run",
            "-d",
            "--name",
            "gone",
            "--network",
            "churn",
            "sleep",
            "600",
        ]);
        w.berth_ok(&["rm", "-f", "mover", "gone"]);
        rounds += 1;
    }
    let out = load.join().expect("load thread");
    assert!(out.status.success(), "load: {}", show(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("load output: {e}: {}", show(&out)));
    eprintln!("load from asker: {v}; churn rounds: {rounds}");
    assert!(
        v["sent"].as_u64().unwrap_or(0) >= 2000,
        "too few queries sent: {v}"
    );
    assert_eq!(v["lost"].as_u64(), Some(0), "queries lost: {v}");
    assert_eq!(v["bad"].as_u64(), Some(0), "wrong answers: {v}");
    assert!(
        rounds >= 3,
        "only {rounds} churn rounds during the load: {v}"
    );
}

/// Proves: queries that reach the resolver together are taken off its socket together (fewer
/// receive calls than queries, `berth_dns_udp_batches_total`) and every one of them still gets
/// its own right answer by id: a container name, an alias of two containers, AAAA of a v4-only
/// name (NOERROR, empty), a forwarded name and a forwarded NXDOMAIN, mixed in one burst of 400
/// from one socket. Without batching (one `recv_from` per query) the batch counter is missing
/// from `/metrics`, or equals the queries.
#[test]
fn a_burst_is_batched_and_every_answer_is_right() {
    require_root!();
    let d = DnsWorld::with_upstream(&["ext.test=192.0.2.10"]);
    let w = &d.w;
    w.berth_ok(&["network", "create", "--subnet", "10.68.0.0/24", "burst"]);
    w.run_d(
        "b1",
        &["--network", "burst", "--network-alias", "pair"],
        &["sleep", "300"],
    );
    w.run_d(
        "b2",
        &["--network", "burst", "--network-alias", "pair"],
        &["sleep", "300"],
    );
    w.run_d("asker", &["--network", "burst"], &["sleep", "300"]);
    let (b1, b2) = (w.ip_of("b1", "burst"), w.ip_of("b2", "burst"));
    // Warm up: the resolver answers (and its thread has been woken once).
    assert_eq!(d.a("asker", "b1"), vec![b1.clone()]);
    let batches = |w: &World| -> u64 {
        let (_, m) = w.api("GET", "/metrics", None);
        m.lines()
            .find_map(|l| l.strip_prefix("berth_dns_udp_batches_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no berth_dns_udp_batches_total in /metrics:\n{m}"))
    };
    let (q0, b0) = (d.dns_info()["Queries"].as_u64().unwrap_or(0), batches(w));
    let helper = w.helper("dnsburst.py");
    let specs = [
        format!("b1/A=0:{b1}"),
        format!("pair/A=0:{b1},{b2}"),
        "b2/AAAA=0:".to_string(),
        "ext.test/A=0:192.0.2.10".to_string(),
        "nope.test/A=3:".to_string(),
    ];
    let mut cmd = vec!["python3", helper.as_str(), "10.68.0.1", "80"];
    cmd.extend(specs.iter().map(String::as_str));
    let out = w.exec_ok("asker", &cmd);
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(v["sent"], 400, "{v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert_eq!(v["bad"], serde_json::json!([]), "{v}");
    let (q1, b1n) = (d.dns_info()["Queries"].as_u64().unwrap_or(0), batches(w));
    let (queries, recvs) = (q1 - q0, b1n - b0);
    eprintln!("burst: {queries} queries in {recvs} receive calls");
    assert!(queries >= 400, "{queries} queries counted");
    assert!(
        recvs < queries,
        "{queries} queries took {recvs} receive calls: not batched"
    );
}

/// Proves Docker's endpoint `Links` on a user-defined network, with real queries from inside
/// the containers: a link `db:data` given at create (`EndpointsConfig`, before `db` exists)
/// makes `data` and `data.NETWORK` answer db's address to the linking container only — another
/// container on the same network gets the upstream's NXDOMAIN for `data` — and inspect returns
/// the `Links`; a link given at `network connect` likewise; the link is never stale: `db`
/// removed → NXDOMAIN, a new `db` → its new address at once, the linking container
/// disconnected and connected again without links → no answer.
#[test]
fn endpoint_links_resolve_only_from_the_linking_container() {
    require_root!();
    let d = DnsWorld::with_upstream(&["ext.test=192.0.2.10"]);
    let w = &d.w;
    for (subnet, name) in [("10.69.0.0/24", "lk"), ("10.70.0.0/24", "side")] {
        w.berth_ok(&["network", "create", "--subnet", subnet, name]);
    }
    let create = |name: &str, net: &str, links: &str| {
        let body = format!(
            r#"{{"Cmd":["sleep","300"],"HostConfig":{{"NetworkMode":"{net}"}},
               "NetworkingConfig":{{"EndpointsConfig":{{"{net}":{{"Links":{links}}}}}}}}}"#
        );
        let (status, reply) = w.api(
            "POST",
            &format!("/containers/create?name={name}"),
            Some(&body),
        );
        assert_eq!(status, 201, "create {name}: {reply}");
        let (status, reply) = w.api("POST", &format!("/containers/{name}/start"), None);
        assert_eq!(status, 204, "start {name}: {reply}");
    };
    // The link names a container that does not exist yet, as docker-py's test does.
    create("app", "lk", r#"["db:data"]"#);
    assert_eq!(
        w.inspect("app")["NetworkSettings"]["Networks"]["lk"]["Links"],
        serde_json::json!(["db:data"])
    );
    let rcode = |from: &str, name: &str| d.q(from, "-", name, "A", &[])["rcode"].clone();
    assert_eq!(rcode("app", "data"), "NXDOMAIN", "no db yet");
    w.run_d("db", &["--network", "lk"], &["sleep", "300"]);
    w.run_d("other", &["--network", "lk"], &["sleep", "300"]);
    let db_ip = w.ip_of("db", "lk");
    assert_eq!(d.a("app", "data"), vec![db_ip.clone()]);
    assert_eq!(d.a("app", "DATA.lk"), vec![db_ip.clone()]);
    assert_eq!(d.a("app", "db"), vec![db_ip.clone()], "the name as before");
    // libc in the linking container, through its resolv.conf.
    let g = w.exec_ok("app", &["getent", "ahostsv4", "data"]);
    assert!(g.contains(&db_ip), "getent data from app: {g}");
    // Scoped: the other container on the same network does not have the link.
    assert_eq!(rcode("other", "data"), "NXDOMAIN");
    assert_eq!(d.a("other", "db"), vec![db_ip.clone()]);
    assert_eq!(
        d.a("app", "ext.test"),
        vec!["192.0.2.10"],
        "the rest is forwarded"
    );

    // A link given at connect.
    w.run_d("late", &["--network", "side"], &["sleep", "300"]);
    let (status, reply) = w.api(
        "POST",
        "/networks/lk/connect",
        Some(r#"{"Container":"late","EndpointConfig":{"Links":["db:store"]}}"#),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(d.a("late", "store"), vec![db_ip.clone()]);
    assert_eq!(rcode("app", "store"), "NXDOMAIN");
    assert_eq!(
        w.inspect("late")["NetworkSettings"]["Networks"]["lk"]["Links"],
        serde_json::json!(["db:store"])
    );

    // Never stale: db removed, then a new db with another address.
    w.berth_ok(&["rm", "-f", "db"]);
    assert_eq!(rcode("app", "data"), "NXDOMAIN");
    assert_eq!(rcode("late", "store"), "NXDOMAIN");
    w.run_d("filler", &["--network", "lk"], &["sleep", "300"]);
    w.run_d("db", &["--network", "lk"], &["sleep", "300"]);
    let db2 = w.ip_of("db", "lk");
    assert_ne!(db2, db_ip);
    assert_eq!(d.a("app", "data"), vec![db2.clone()]);
    // The link goes with the endpoint.
    w.berth_ok(&["network", "disconnect", "lk", "late"]);
    w.berth_ok(&["network", "connect", "lk", "late"]);
    assert_eq!(rcode("late", "store"), "NXDOMAIN");
    assert_eq!(d.a("late", "db"), vec![db2]);
}
