//! `berth lab` end to end: every lesson runs in its sandbox (the hand-made host and berth's host
//! with a private berthd), its checks pass with real packets, a learner's own typing is checked
//! with `--check`, and `berth lab --clean` leaves no namespace, process or file behind and the
//! machine's own network namespace as it was.
//!
//! The lab's names get a prefix unique to this test process, so it cannot meet a learner's lab or
//! another test; the guard cleans up also when an assertion fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{berth_bin, berthd_bin, code, run_timeout, show, stdout};
use serde_json::Value;

/// One lab: its prefix and state directory; cleans up on drop.
struct Lab {
    prefix: String,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("blt{}", std::process::id() % 1_000_000);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("berth-lab-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        Lab { prefix, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(berth_bin());
        c.arg("lab")
            .args(args)
            .env("BERTH_LAB_PREFIX", &self.prefix)
            .env("BERTH_LAB_DIR", &self.dir)
            .env("BERTH_LAB_BERTHD", berthd_bin());
        run_timeout(c, Duration::from_secs(120))
    }

    /// `berth lab ARGS --format json`: (exit code, document).
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--format", "json"]);
        let o = self.run(&a);
        let v = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("berth lab {a:?}: not JSON ({e}): {}", show(&o)));
        (code(&o), v)
    }

    fn namespaces(&self) -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = self.run(&["--clean"]);
        if !o.status.success() {
            eprintln!("berth lab --clean failed: {}", show(&o));
        }
        // Belt and braces: anything of this prefix still there after a failed clean.
        for ns in self.namespaces() {
            let _ = common::sh("ip", &["netns", "delete", &ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the lab could change in the machine's own network namespace, were it wrong: links and
/// addresses and routes with the lab's names and subnets, nft tables named like its own, and
/// forwarding. Other tests run beside this one, so only these are compared.
fn root_snapshot() -> Vec<String> {
    const NAMES: [&str; 14] = [
        "br0",
        "veth-red",
        "veth-blue",
        "uplink",
        "lan",
        "eth1",
        "vxlan42",
        "lan0",
        "port1",
        "port2",
        "berth-",
        "vb",
        "bvx-",
        "ul0",
    ];
    const NETS: [&str; 8] = [
        "10.0.0.",
        "10.1.0.",
        "198.18.0.",
        "198.18.1.",
        "192.168.50.",
        "10.0.9.",
        "192.168.60.",
        "10.50.0.",
    ];
    let mut snap = Vec::new();
    let links = common::sh_ok("ip", &["-o", "link", "show"]);
    for l in links.lines() {
        let name = l.split(": ").nth(1).unwrap_or("");
        let name = name.split('@').next().unwrap_or(name);
        if NAMES.iter().any(|n| name.starts_with(n)) {
            snap.push(format!("link {name}"));
        }
    }
    for what in [
        &["-o", "addr", "show"][..],
        &["route", "show", "table", "all"][..],
    ] {
        for l in common::sh_ok("ip", what).lines() {
            if NETS.iter().any(|n| l.contains(n)) {
                snap.push(l.to_string());
            }
        }
    }
    for l in common::sh_ok("nft", &["list", "tables"]).lines() {
        if l.ends_with(" lab") || l.contains(" berth") {
            snap.push(l.to_string());
        }
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    snap.push(format!("ip_forward {}", fwd.trim()));
    snap
}

/// Runs a command in the lab's hand-made host, as a learner in `berth lab shell` would.
fn type_in_host(lab: &Lab, cmd: &str) {
    let berth_dir = berth_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}-host", lab.prefix))
        .args(["sh", "-c", cmd])
        .env(
            "PATH",
            format!(
                "{}:{}",
                berth_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let o = run_timeout(c, Duration::from_secs(30));
    assert!(o.status.success(), "typing {cmd:?}: {}", show(&o));
}

#[test]
fn every_lesson_runs_in_its_sandbox_and_clean_leaves_the_host_unchanged() {
    require_root!();
    // Built (if stale) before the clock starts: the time below is the lab's.
    let _ = berth_bin();
    let t0 = Instant::now();
    let before = root_snapshot();
    let lab = Lab::new();

    let (rc, list) = lab.json(&["--list"]);
    assert_eq!(rc, 0);
    assert_eq!(list["lessons"].as_array().map(Vec::len), Some(9));
    assert_eq!(list["next"], 1);

    // --next, nine times: each lesson in order, every check (by hand and berth's) passing.
    for n in 1..=9u64 {
        let started = Instant::now();
        let (rc, v) = lab.json(&["--next"]);
        assert_eq!(v["lesson"], n, "{v:#}");
        assert_eq!(rc, 0, "lesson {n} failed: {v:#}");
        assert_eq!(v["passed"], true);
        let checks = v["checks"].as_array().cloned().unwrap_or_default();
        assert!(!checks.is_empty(), "lesson {n} has no checks");
        for c in checks.iter().chain(
            v["berth_checks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ) {
            assert_eq!(c["passed"], true, "lesson {n}: {c:#}");
        }
        if n >= 2 {
            assert!(
                !v["berth_steps"].as_array().is_none_or(Vec::is_empty),
                "lesson {n} shows no berth side"
            );
        }
        eprintln!("lesson {n}: {:?}", started.elapsed());
    }
    let (_, v) = lab.json(&["--list"]);
    assert!(v["next"].is_null(), "every lesson done: {v:#}");
    assert!(v["lessons"]
        .as_array()
        .is_some_and(|l| l.iter().all(|l| l["done"] == true)));

    // Lesson 9's berth side is an overlay across two berth hosts, in a VXLAN port berth named.
    let (_, nine) = lab.json(&["9"]);
    let vxlan = nine["compare"][0]["berth"].as_str().unwrap_or("");
    assert!(
        vxlan.contains("bvx-") && vxlan.contains("nolearning proxy"),
        "{nine:#}"
    );
    // Lesson 6's berth side is berth trace naming the DNAT by the container's published port;
    // lesson 8 maps Docker's chains.
    let (_, six) = lab.json(&["6"]);
    let trace = six["berth_steps"][2]["output"].as_str().unwrap_or("");
    assert!(
        trace.contains("port published by container web (80/tcp)"),
        "{trace}"
    );
    let (_, eight) = lab.json(&["8"]);
    let map = eight["chain_map"].to_string();
    for d in [
        "DOCKER-USER",
        "DOCKER-ISOLATION-STAGE-1/-2",
        "DOCKER-INGRESS",
    ] {
        assert!(map.contains(d), "{map}");
    }

    // A learner's own typing: --show prepares lesson 2 and lists the commands; --check fails
    // before they are typed and passes after.
    let (rc, shown) = lab.json(&["2", "--show"]);
    assert_eq!(rc, 0, "{shown:#}");
    let (rc, early) = lab.json(&["--check"]);
    assert_eq!(rc, 1, "nothing typed yet, yet --check passed: {early:#}");
    assert_eq!(early["passed"], false);
    for cmd in shown["commands"].as_array().cloned().unwrap_or_default() {
        type_in_host(&lab, cmd.as_str().unwrap_or(""));
    }
    let (rc, checked) = lab.json(&["--check"]);
    assert_eq!(rc, 0, "{checked:#}");
    assert_eq!(checked["passed"], true);

    // --clean: nothing of the lab's left, and the machine's namespace as it was.
    let berthd_pid = std::fs::read_to_string(lab.dir.join("sandbox.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["berthd_pid"].as_u64());
    assert!(berthd_pid.is_some(), "no private berthd recorded");
    let (rc, cleaned) = lab.json(&["--clean"]);
    assert_eq!(rc, 0, "{cleaned:#}");
    assert!(lab.namespaces().is_empty(), "left: {:?}", lab.namespaces());
    if let Some(pid) = berthd_pid {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the private berthd (pid {pid}) still runs"
        );
    }
    // No process of the lab's left: berthds and etcd name the lab dir on their command line,
    // the helpers (`berth lab serve`) ran inside the lab's namespaces, now gone.
    let dir = lab.dir.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    cmd.contains(&dir).then_some(cmd)
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "processes of the lab left: {left:?}");
    let etc_left: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&lab.prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(etc_left.is_empty(), "left in /etc/netns: {etc_left:?}");
    assert_eq!(
        root_snapshot(),
        before,
        "the machine's own namespace changed"
    );
    let (_, again) = lab.json(&["--clean"]);
    assert_eq!(
        again["removed"].as_array().map(Vec::len),
        Some(0),
        "{again:#}"
    );
    eprintln!("whole lab: {:?}", t0.elapsed());
}
