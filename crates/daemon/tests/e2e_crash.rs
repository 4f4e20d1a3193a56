//! The kill-at-every-step matrix: for each API operation, berthd is started with
//! `BERTH_FAILPOINT=<op>:<k>` (it aborts right after the k-th step boundary of that operation,
//! with no cleanup, like kill -9), the operation is run, berthd is restarted normally, and then
//! the API and the kernel must agree:
//! * `berth system check` is in sync (exit 0);
//! * every endpoint of every running container has its host veth present and up, and its
//!   container-side interface up with the inspected address;
//! * no link that berth marked (`berth:` alias, or berth's `vb…`/`berth-…` names) that no
//!   stored network or endpoint wants;
//! * no container init process whose container is not running;
//! * the operation can be retried and succeeds.
//!
//! k runs from 1 until the operation completes without an abort (bound 30); each test prints how
//! many boundaries its operation had. One world per operation; berthd restarts between k's.
//!
//! `BERTH_E2E_TIMED_KILL=MS` replaces the failpoints by a plain SIGKILL `MS * k` ms after the
//! op was sent: the same checks against a berthd that has no failpoints (timing decides which
//! steps are hit).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bridge_of_inspect, host_veth_for_endpoint, show, stdout, World};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// What "API and kernel agree" means

fn api_json(w: &World, path: &str) -> Value {
    let (status, body) = w.api("GET", path, None);
    assert_eq!(status, 200, "GET {path}: HTTP {status} {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `<FLAGS>` of an `ip -o link` line contain UP.
fn flags_up(line: &str) -> bool {
    line.split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
}

/// A berth-owned link by its mark (`berth:` alias) or by berth's naming (`vb` + 12 hex,
/// `berth-` + 9 hex).
fn berth_owned(name: &str, alias: Option<&str>) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    alias.is_some_and(|a| a.starts_with("berth:"))
        || name.strip_prefix("vb").is_some_and(|r| hex(r, 12))
        || name.strip_prefix("berth-").is_some_and(|r| hex(r, 9))
}

/// The kernel-side checks (everything but `system check`). Returns the problems found.
fn kernel_disagreements(w: &World) -> Vec<String> {
    let mut bad = Vec::new();
    let links = w.host_link_aliases();
    let link_lines = w.host_ip_cmd(&["-o", "link", "show"]);
    let line_of = |name: &str| {
        link_lines
            .lines()
            .find(|l| {
                l.split(": ")
                    .nth(1)
                    .is_some_and(|n| n.split('@').next() == Some(name))
            })
            .map(str::to_string)
    };

    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let nets = api_json(w, "/networks");
    for n in nets.as_array().into_iter().flatten() {
        if n["Driver"].as_str() == Some("bridge") {
            wanted.insert(bridge_of_inspect(n));
        }
    }
    let list = api_json(w, "/containers/json?all=1");
    let mut running_ids = Vec::new();
    for c in list.as_array().into_iter().flatten() {
        let id = c["Id"].as_str().unwrap_or("").to_string();
        let v = api_json(w, &format!("/containers/{id}/json"));
        let running = v["State"]["Running"].as_bool() == Some(true);
        let pid = v["State"]["Pid"].as_i64().unwrap_or(0);
        if running {
            running_ids.push(id.clone());
        }
        let nets = v["NetworkSettings"]["Networks"].as_object().cloned();
        for (net, ep) in nets.into_iter().flatten() {
            let ep_id = ep["EndpointID"].as_str().unwrap_or("");
            if ep_id.is_empty() {
                continue;
            }
            let veth = host_veth_for_endpoint(&links, ep_id);
            wanted.insert(veth.clone());
            if !running {
                continue;
            }
            let what = format!("container {} on {net}", &id[..12]);
            match line_of(&veth) {
                None => bad.push(format!("{what}: host veth {veth} missing")),
                Some(l) if !flags_up(&l) => bad.push(format!("{what}: host veth down: {l}")),
                Some(_) => {}
            }
            let ip = ep["IPAddress"].as_str().unwrap_or("");
            let plen = ep["IPPrefixLen"].as_i64().unwrap_or(0);
            if ip.is_empty() || pid <= 0 {
                bad.push(format!(
                    "{what}: inspect has no address/pid: {ep} pid {pid}"
                ));
                continue;
            }
            let want = format!("inet {ip}/{plen} ");
            let o = w.pid_net_exec(pid, &["ip", "-o", "addr", "show"]);
            let addrs = stdout(&o);
            let Some(line) = addrs.lines().find(|l| l.contains(&want)) else {
                bad.push(format!(
                    "{what}: {ip}/{plen} not in its netns: {}",
                    show(&o)
                ));
                continue;
            };
            let ifname = line.split_whitespace().nth(1).unwrap_or("");
            let o = w.pid_net_exec(pid, &["ip", "-o", "link", "show", "dev", ifname]);
            if !flags_up(&stdout(&o)) {
                bad.push(format!(
                    "{what}: container-side {ifname} not up: {}",
                    show(&o)
                ));
            }
        }
    }
    for (name, alias) in &links {
        if berth_owned(name, alias.as_deref()) && !wanted.contains(name) {
            bad.push(format!(
                "link {name} (alias {alias:?}) is berth's but nothing stored wants it"
            ));
        }
    }
    for p in w.init_procs() {
        if !running_ids.iter().any(|id| p.cmdline.contains(id.as_str())) {
            bad.push(format!(
                "init process {} ({}) belongs to no running container: {}",
                p.pid,
                p.stage,
                p.cmdline.chars().take(300).collect::<String>()
            ));
        }
    }
    bad
}

fn assert_kernel_agrees(w: &World, what: &str) {
    let bad = kernel_disagreements(w);
    assert!(bad.is_empty(), "{what}: API and kernel disagree: {bad:#?}");
}

fn assert_in_sync(w: &World, what: &str) {
    let o = w.system_check(&[]);
    assert!(
        o.status.success() && stdout(&o).contains("in sync"),
        "{what}: berth system check: {}",
        show(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// The operations

struct Op {
    /// The failpoint's operation name.
    name: &'static str,
    /// Builds the preconditions (once per world).
    setup: fn(&World),
    /// The operation.
    run: fn(&World) -> Result<(), String>,
    /// Finishes an interrupted operation (usually `run` again).
    retry: fn(&World) -> Result<(), String>,
    /// Whether the operation's effect is in place.
    done: fn(&World) -> bool,
    /// Checks the effect works (traffic); called when `done`.
    verify: fn(&World),
    /// Back to the preconditions from the `done` state.
    reset: fn(&World),
}

fn cli(w: &World, args: &[&str]) -> Result<(), String> {
    let o = w.berth(args);
    if o.status.success() {
        Ok(())
    } else {
        Err(show(&o))
    }
}

fn exists(w: &World, kind: &str, name: &str) -> bool {
    let path = format!(
        "/{kind}/{name}{}",
        if kind == "containers" { "/json" } else { "" }
    );
    let (status, body) = w.api("GET", &path, None);
    match status {
        200 => true,
        404 => false,
        s => panic!("GET {path}: HTTP {s} {body}"),
    }
}

fn running(w: &World, name: &str) -> bool {
    exists(w, "containers", name) && w.inspect(name)["State"]["Running"].as_bool() == Some(true)
}

fn on_network(w: &World, name: &str, net: &str) -> bool {
    w.inspect(name)["NetworkSettings"]["Networks"]
        .get(net)
        .is_some()
}

/// Networks `a` (peer_a) and `b` (peer_b), peer-address servers on 8080.
fn two_networks(w: &World) {
    w.berth_ok(&["network", "create", "--subnet", "10.72.0.0/24", "a"]);
    w.berth_ok(&["network", "create", "--subnet", "10.73.0.0/24", "b"]);
    w.run_server("peer_a", &["--network", "a"], 8080);
    w.run_server("peer_b", &["--network", "b"], 8080);
    w.wait_container_port("peer_a", 8080);
    w.wait_container_port("peer_b", 8080);
}

fn reaches_peer(w: &World, from: &str, net: &str) {
    let peer = format!("peer_{net}");
    let ip = w.ip_of(&peer, net);
    let r = w.assert_reaches(from, &ip, 8080);
    assert_eq!(r.trim(), w.ip_of(from, net), "{from} -> {peer} on {net}");
}

fn net_x_create(w: &World) -> Result<(), String> {
    cli(w, &["network", "create", "--subnet", "10.71.0.0/24", "x"])
}

fn net_x_verify(w: &World) {
    let br = w.bridge_of("x");
    assert!(w.host_links().contains(&br), "x's bridge {br} missing");
}

fn run_s(w: &World) -> Result<(), String> {
    let helper = w.helper("peer_server.py");
    cli(
        w,
        &[
            "run",
            "-d",
            "--name",
            "s",
            "--network",
            "a",
            "-p",
            "18087:8080",
            "python3",
            &helper,
            "0.0.0.0",
            "8080",
        ],
    )
}

const CREATE_BODY: &str =
    r#"{"Cmd":["sleep","600"],"HostConfig":{"NetworkMode":"a","PortBindings":{}}}"#;

fn api_create_n(w: &World) -> Result<(), String> {
    match w.api("POST", "/containers/create?name=n", Some(CREATE_BODY)) {
        (201, _) => Ok(()),
        (s, b) => Err(format!("HTTP {s} {b}")),
    }
}

fn api_start(w: &World, name: &str) -> Result<(), String> {
    match w.api("POST", &format!("/containers/{name}/start"), None) {
        (204 | 304, _) => Ok(()),
        (s, b) => Err(format!("HTTP {s} {b}")),
    }
}

fn ops() -> Vec<Op> {
    vec![
        Op {
            name: "network_create",
            setup: |_| {},
            run: net_x_create,
            retry: net_x_create,
            done: |w| exists(w, "networks", "x"),
            verify: net_x_verify,
            reset: |w| {
                w.berth_ok(&["network", "rm", "x"]);
            },
        },
        Op {
            name: "network_rm",
            setup: |w| {
                w.berth_ok(&["network", "create", "--subnet", "10.71.0.0/24", "x"]);
            },
            run: |w| cli(w, &["network", "rm", "x"]),
            retry: |w| cli(w, &["network", "rm", "x"]),
            done: |w| !exists(w, "networks", "x"),
            verify: |_| {},
            reset: |w| {
                net_x_create(w).expect("network create x");
                net_x_verify(w);
            },
        },
        Op {
            name: "connect",
            setup: |w| {
                two_networks(w);
                w.run_d("c", &["--network", "a"], &["sleep", "600"]);
            },
            run: |w| cli(w, &["network", "connect", "b", "c"]),
            retry: |w| cli(w, &["network", "connect", "b", "c"]),
            done: |w| on_network(w, "c", "b"),
            verify: |w| {
                reaches_peer(w, "c", "a");
                reaches_peer(w, "c", "b");
            },
            reset: |w| {
                w.berth_ok(&["network", "disconnect", "b", "c"]);
            },
        },
        Op {
            name: "disconnect",
            setup: |w| {
                two_networks(w);
                w.run_d("c", &["--network", "a"], &["sleep", "600"]);
                w.berth_ok(&["network", "connect", "b", "c"]);
            },
            run: |w| cli(w, &["network", "disconnect", "b", "c"]),
            retry: |w| cli(w, &["network", "disconnect", "b", "c"]),
            done: |w| !on_network(w, "c", "b"),
            verify: |w| reaches_peer(w, "c", "a"),
            reset: |w| {
                w.berth_ok(&["network", "connect", "b", "c"]);
                reaches_peer(w, "c", "b");
            },
        },
        Op {
            name: "create",
            setup: two_networks,
            run: api_create_n,
            retry: api_create_n,
            done: |w| exists(w, "containers", "n"),
            verify: |w| {
                api_start(w, "n").expect("start n");
                w.wait_running("n");
                reaches_peer(w, "n", "a");
            },
            reset: |w| {
                w.berth_ok(&["rm", "-f", "n"]);
            },
        },
        Op {
            name: "start",
            setup: two_networks,
            run: run_s,
            retry: |w| {
                if exists(w, "containers", "s") {
                    api_start(w, "s")
                } else {
                    run_s(w)
                }
            },
            done: |w| running(w, "s"),
            verify: |w| {
                w.wait_running("s");
                w.wait_container_port("s", 8080);
                reaches_peer(w, "s", "a");
                let r = w
                    .tcp_from_ns(&w.out_ns, &w.host_ip(), 18087, 3.0)
                    .unwrap_or_else(|e| panic!("published port of s from outside: {e}"));
                assert!(!r.trim().is_empty(), "published port of s: no reply");
            },
            reset: |w| {
                w.berth_ok(&["rm", "-f", "s"]);
            },
        },
        Op {
            name: "stop",
            setup: |w| {
                two_networks(w);
                w.run_d(
                    "s2",
                    &["--network", "a", "-p", "18088:8080"],
                    &["sleep", "600"],
                );
            },
            run: |w| cli(w, &["stop", "-t", "1", "s2"]),
            retry: |w| cli(w, &["stop", "-t", "1", "s2"]),
            done: |w| !running(w, "s2"),
            verify: |_| {},
            reset: |w| {
                w.berth_ok(&["rm", "-f", "s2"]);
                w.run_d(
                    "s2",
                    &["--network", "a", "-p", "18088:8080"],
                    &["sleep", "600"],
                );
            },
        },
        Op {
            name: "rm",
            setup: |w| {
                two_networks(w);
                w.run_d(
                    "r",
                    &["--network", "a", "-p", "18089:8080"],
                    &["sleep", "600"],
                );
            },
            run: |w| cli(w, &["rm", "-f", "r"]),
            retry: |w| cli(w, &["rm", "-f", "r"]),
            done: |w| !exists(w, "containers", "r"),
            verify: |_| {},
            reset: |w| {
                w.run_d(
                    "r",
                    &["--network", "a", "-p", "18089:8080"],
                    &["sleep", "600"],
                );
            },
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The matrix

/// Whether failpoint `fp` fired (berthd logged it or died); once it fired, berthd must be gone
/// within 5 s.
fn aborted(w: &World, fp: &str) -> bool {
    let line = format!("failpoint {fp} reached");
    let fired = w.log_text().contains(&line) || !w.daemon_alive();
    if fired {
        let st = w.wait_daemon_exit(Duration::from_secs(5));
        assert!(
            st.is_some(),
            "{fp}: berthd logged {line:?} but did not abort within 5 s"
        );
    }
    fired
}

/// `BERTH_E2E_TIMED_KILL=MS`: instead of failpoints, SIGKILL berthd `MS * k` ms after the op
/// was sent (for showing what a real kill -9 does to a berthd without failpoints; which steps
/// get hit depends on timing).
fn timed_kill() -> Option<u64> {
    std::env::var("BERTH_E2E_TIMED_KILL")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// Runs the op with berthd set to die at "step" `k`; returns the op's result and whether
/// berthd died before the op completed.
fn run_killed_at(w: &World, op: &Op, k: u64) -> (Result<(), String>, bool) {
    let Some(step_ms) = timed_kill() else {
        let fp = format!("{}:{k}", op.name);
        w.restart_daemon_env(false, &[("BERTH_FAILPOINT", fp.as_str())]);
        let r = (op.run)(w);
        return (r, aborted(w, &fp));
    };
    w.restart_daemon_checked(false);
    let pid = w.daemon_pid().expect("berthd pid");
    let finished = Arc::new(AtomicBool::new(false));
    let f2 = Arc::clone(&finished);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(step_ms * k));
        if !f2.load(Ordering::SeqCst) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    });
    let r = (op.run)(w);
    finished.store(true, Ordering::SeqCst);
    let _ = killer.join();
    let died = w.wait_daemon_exit(Duration::from_millis(300)).is_some();
    (r, died)
}

fn matrix(op_name: &str) {
    let op = ops()
        .into_iter()
        .find(|o| o.name == op_name)
        .expect("known op");
    let w = World::new();
    let t0 = Instant::now();
    (op.setup)(&w);
    assert_kernel_agrees(&w, &format!("{op_name}: preconditions"));
    let mut boundaries = 0;
    for k in 1..=30 {
        let fp = format!("{op_name}:{k}");
        let (r, fired) = run_killed_at(&w, &op, k);
        eprintln!("{fp}: aborted={fired} op={r:?}");
        w.restart_daemon_checked(false);
        if !fired {
            // Past the last boundary: an ordinary, complete operation.
            if let Err(e) = r {
                panic!("{fp}: the op failed without an abort: {e}");
            }
            assert!(
                (op.done)(&w),
                "{fp}: op succeeded but its effect is missing"
            );
            assert_kernel_agrees(&w, &format!("{fp} (completed)"));
            (op.verify)(&w);
            eprintln!(
                "{op_name}: {boundaries} step boundaries ({} s)",
                t0.elapsed().as_secs()
            );
            assert!(
                boundaries >= 1 || timed_kill().is_some(),
                "BERTH_FAILPOINT={op_name}:1 never fired: `{op_name}` ran to completion, no step boundary"
            );
            assert_in_sync(&w, &format!("{fp} (completed)"));
            return;
        }
        boundaries = k;
        assert_kernel_agrees(&w, &format!("{fp}: after the abort and restart"));
        assert_in_sync(&w, &format!("{fp}: after the abort and restart"));
        if !(op.done)(&w) {
            if let Err(e) = (op.retry)(&w) {
                panic!("{fp}: retrying {op_name} after the restart failed: {e}");
            }
        }
        assert!((op.done)(&w), "{fp}: retried op but its effect is missing");
        (op.verify)(&w);
        (op.reset)(&w);
    }
    assert!(
        timed_kill().is_some(),
        "{op_name}: still aborting at k=30 (more than 30 step boundaries?)"
    );
}

/// Proves (network create): after a kill at any step and a restart, API and kernel agree
/// and the create can be finished.
#[test]
fn crash_matrix_network_create() {
    require_root!();
    matrix("network_create");
}

/// Proves (network rm): as above.
#[test]
fn crash_matrix_network_rm() {
    require_root!();
    matrix("network_rm");
}

/// Proves (connect a running container to a second network): as above.
#[test]
fn crash_matrix_connect() {
    require_root!();
    matrix("connect");
}

/// Proves (disconnect a running container from one of its two networks): as above.
#[test]
fn crash_matrix_disconnect() {
    require_root!();
    matrix("disconnect");
}

/// Proves (container create): as above.
#[test]
fn crash_matrix_create() {
    require_root!();
    matrix("create");
}

/// Proves (container start with a published port, as `run -d -p`): as above; the finished
/// container reaches its peer and its port from outside.
#[test]
fn crash_matrix_start() {
    require_root!();
    matrix("start");
}

/// Proves (stop): as above.
#[test]
fn crash_matrix_stop() {
    require_root!();
    matrix("stop");
}

/// Proves (rm -f of a running container with a published port): as above.
#[test]
fn crash_matrix_rm() {
    require_root!();
    matrix("rm");
}
