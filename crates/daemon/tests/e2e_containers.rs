//! End-to-end: containers on a user network talk HTTP; run/logs/exec behave like docker;
//! the network modes host, none and container:NAME.

mod common;

use common::{code, show, stderr, stdout, World};

/// Proves: two containers on a user network reach each other over real HTTP; a foreground
/// `run` streams output and exits with the command's code; `logs` shows a detached
/// container's output; `exec` runs inside the container (hostname, generated /etc/hosts).
#[test]
fn user_network_http_run_logs_exec() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.1.0.0/24", "web"]);

    // HTTP server container serving a file from the world dir.
    let site = w.dir.join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("index.html"), "hello-from-berth\n").expect("index");
    let site_s = site.display().to_string();
    w.run_d(
        "srv",
        &["--network", "web"],
        &[
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "0.0.0.0",
            "--directory",
            &site_s,
        ],
    );
    w.run_d("cli", &["--network", "web"], &["sleep", "120"]);
    let srv_ip = w.ip_of("srv", "web");
    let cli_ip = w.ip_of("cli", "web");
    assert!(srv_ip.starts_with("10.1.0."), "srv ip {srv_ip:?}");
    assert!(cli_ip.starts_with("10.1.0."), "cli ip {cli_ip:?}");
    assert_ne!(srv_ip, cli_ip);
    w.wait_container_port("srv", 80);

    let url = format!("http://{srv_ip}/index.html");
    let got = w.exec_ok("cli", &["python3", &w.helper("http_get.py"), &url, "3"]);
    assert!(got.starts_with("200"), "GET {url}: {got:?}");
    assert!(got.contains("hello-from-berth"), "GET {url}: {got:?}");

    // Foreground run: output streamed, exit code propagated.
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "web",
        "sh",
        "-c",
        "echo fg-out; exit 3",
    ]);
    assert_eq!(code(&o), 3, "foreground exit code: {}", show(&o));
    assert!(
        stdout(&o).contains("fg-out"),
        "foreground output: {}",
        show(&o)
    );
    let o = w.berth(&["run", "--rm", "--network", "web", "true"]);
    assert_eq!(code(&o), 0, "{}", show(&o));

    // logs of a detached container.
    w.berth_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "web",
        "sh",
        "-c",
        "echo hello-from-logs; echo err-line >&2; sleep 60",
    ]);
    let start = std::time::Instant::now();
    loop {
        let o = w.berth(&["logs", "talker"]);
        let all = format!("{}{}", stdout(&o), common::stderr(&o));
        if o.status.success() && all.contains("hello-from-logs") && all.contains("err-line") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "logs talker never showed the output: {}",
            show(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // exec: hostname and /etc/hosts.
    assert_eq!(w.exec_ok("cli", &["hostname"]).trim(), "cli");
    let hosts = w.exec_ok("cli", &["cat", "/etc/hosts"]);
    assert!(
        hosts
            .lines()
            .any(|l| l.split_whitespace().next() == Some(cli_ip.as_str())
                && l.split_whitespace().any(|n| n == "cli")),
        "/etc/hosts of cli lacks '{cli_ip} cli':\n{hosts}"
    );
    // exec propagates the exit code too.
    let o = w.exec("cli", &["sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7, "exec exit code: {}", show(&o));
}

/// Proves: `--network host` shares the host netns (sees its uplink and 198.18.N.1);
/// `--network none` has only `lo`; `--network container:NAME` shares NAME's netns (reaches
/// a server bound to 127.0.0.1 inside it).
#[test]
fn network_modes_host_none_container() {
    require_root!();
    let w = World::new();

    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "host",
        "ip",
        "-o",
        "addr",
        "show",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let addrs = stdout(&o);
    assert!(
        addrs.contains("uplink"),
        "host mode does not see the host's uplink:\n{addrs}"
    );
    assert!(
        addrs.contains(&format!("{}/24", w.host_ip())),
        "host mode does not see {}:\n{addrs}",
        w.host_ip()
    );

    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "ip",
        "-o",
        "link",
        "show",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let links: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|s| s.split('@').next().unwrap_or(s).to_string())
        })
        .collect();
    assert_eq!(
        links,
        vec!["lo".to_string()],
        "none mode links: {}",
        stdout(&o)
    );
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
    ]);
    assert!(
        stdout(&o).lines().all(|l| l.contains(" lo ")),
        "none mode has non-loopback addresses: {}",
        show(&o)
    );

    w.berth_ok(&["network", "create", "--subnet", "10.6.0.0/24", "six"]);
    w.run_d(
        "owner",
        &["--network", "six"],
        &["python3", &w.helper("peer_server.py"), "127.0.0.1", "9000"],
    );
    w.wait_container_port("owner", 9000);
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "container:owner",
        "python3",
        &w.helper("probe.py"),
        "127.0.0.1",
        "9000",
        "2",
    ]);
    assert!(
        o.status.success(),
        "container:owner cannot reach owner's 127.0.0.1:9000: {}",
        show(&o)
    );
    assert_eq!(stdout(&o).trim(), "127.0.0.1");
    // The joiner sees owner's eth0 address.
    let owner_ip = w.ip_of("owner", "six");
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "container:owner",
        "ip",
        "-o",
        "-4",
        "addr",
    ]);
    assert!(
        stdout(&o).contains(&format!("{owner_ip}/")),
        "container:owner does not see {owner_ip}: {}",
        show(&o)
    );
}

/// Proves: a berthd whose state dir lies under /tmp runs containers (their generated
/// /etc/hosts, resolv.conf and hostname are bound from there). The host's root view used to be
/// staged on /tmp inside the container's mount namespace, which hid every bind source under
/// /tmp: every container failed to start.
#[test]
fn a_state_dir_under_tmp_works() {
    require_root!();
    let w = World::new();
    let dir = std::env::temp_dir().join(format!("berth-tmpstate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tmp state dir");
    let sock = dir.join("s.sock");
    let mut result = None;
    w.restart_daemon_with(false, || {
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", &w.host_ns])
            .arg(common::berthd_bin())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&sock)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn berthd");
        let start = std::time::Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err()
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let host = format!("unix://{}", sock.display());
        let out = common::run_timeout(
            {
                let mut c = std::process::Command::new(common::berth_bin());
                c.args(["-H", &host, "run", "--rm", "cat", "/etc/hostname"]);
                c
            },
            common::CMD_TIMEOUT,
        );
        // Ended by PID: the process this test started.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
        result = Some(out);
    });
    let _ = std::fs::remove_dir_all(&dir);
    let out = result.expect("ran");
    assert!(
        out.status.success() && !stdout(&out).trim().is_empty(),
        "a container of a berthd with its state under /tmp: {}",
        show(&out)
    );
}

/// Proves: `run --mac-address` gives the container's interface that MAC (seen inside and in
/// inspect), on a user network and through the API's container-level `MacAddress` (API < 1.44);
/// the same MAC for a second container on that network is refused naming the holder, a
/// multicast MAC is refused, and nothing is left of a refused run.
#[test]
fn mac_address_is_honoured_and_checked() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.61.0.0/24", "macs"]);
    w.berth_ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        "--network",
        "macs",
        "--mac-address",
        "02:42:AC:11:00:99",
        "sleep",
        "600",
    ]);
    let link = w.exec_ok("m1", &["ip", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 02:42:ac:11:00:99"), "{link}");
    assert_eq!(
        w.inspect("m1")["NetworkSettings"]["Networks"]["macs"]["MacAddress"],
        "02:42:ac:11:00:99"
    );
    let o = w.berth(&[
        "run",
        "-d",
        "--name",
        "m2",
        "--network",
        "macs",
        "--mac-address",
        "02:42:ac:11:00:99",
        "sleep",
        "600",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        stderr(&o).contains("is already used by container \"m1\""),
        "{}",
        show(&o)
    );
    let o = w.berth(&[
        "run",
        "-d",
        "--name",
        "m3",
        "--network",
        "macs",
        "--mac-address",
        "01:00:5e:00:00:01",
        "sleep",
        "600",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("multicast"),
        "{}",
        show(&o)
    );
    let ps = w.berth_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("m2") && !ps.contains("m3"), "{ps}");
    // API < 1.44: MacAddress at the container level, for the first network.
    let (st, body) = w.api(
        "POST",
        "/v1.43/containers/create?name=m4",
        Some(
            r#"{"Cmd":["sleep","600"],"MacAddress":"02:42:ac:11:00:44","HostConfig":{"NetworkMode":"macs"}}"#,
        ),
    );
    assert_eq!(st, 201, "{body}");
    let (st, body) = w.api("POST", "/v1.43/containers/m4/start", None);
    assert!(st == 204 || st == 200, "{st} {body}");
    let link = w.exec_ok("m4", &["ip", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 02:42:ac:11:00:44"), "{link}");
}

/// Proves: berthd's state is root's alone — the state dir and its containers dir are 0700, the
/// store 0600, a container's log files 0600.
#[test]
fn state_files_are_private() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let id = w.run_d("p1", &[], &["sh", "-c", "echo hi; sleep 600"]);
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&w.state_dir), 0o700);
    assert_eq!(mode(&w.state_dir.join("containers")), 0o700);
    assert_eq!(mode(&w.state_dir.join("state.redb")), 0o600);
    let dir = w.state_dir.join("containers").join(id.trim());
    for f in ["stdout.log", "stderr.log"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

/// Proves: a removed container leaves no directory in the state dir — `rm -f` of a running one
/// and `rm` of an exited one (their files go after the answer, on a blocking thread) and a
/// `--rm` one at its exit — while a kept container's stays. (Beside them: the one empty
/// `.root` every container's init assembles its root on, in its own mount namespace.)
#[test]
fn removed_containers_leave_no_directory() {
    require_root!();
    let w = World::new();
    let dir_of = |id: &str| w.state_dir.join("containers").join(id.trim());
    let running = w.run_d("gone1", &[], &["sleep", "600"]);
    let run_true =
        |name: &str| w.berth_ok(&["run", "-d", "--network", "none", "--name", name, "true"]);
    let exited = run_true("gone2");
    let kept = run_true("kept1");
    for id in [&running, &exited, &kept] {
        assert!(
            dir_of(id).is_dir(),
            "{} missing before rm",
            dir_of(id).display()
        );
    }
    wait_for("gone2 exited", 10, || {
        w.inspect("gone2")["State"]["Running"] == serde_json::Value::Bool(false)
    });
    w.berth_ok(&["rm", "-f", "gone1"]);
    w.berth_ok(&["rm", "gone2"]);
    let out = w.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        "gone3",
        "true",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let dirs = || -> Vec<String> {
        std::fs::read_dir(w.state_dir.join("containers"))
            .expect("containers dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".root")
            .collect()
    };
    wait_for("only the kept container's directory left", 5, || {
        dirs() == vec![kept.trim().to_string()]
    });
    assert!(!dir_of(&running).exists() && !dir_of(&exited).exists());
    let staging = w.state_dir.join("containers").join(".root");
    assert_eq!(
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0),
        0,
        "{} holds nothing on the host",
        staging.display()
    );
}

/// Proves: with `berth-init` beside berthd (cargo builds both), a container's init runs from
/// it, not from a second load of berthd, and `exec` (its enter process and hop) works through
/// it too.
#[test]
fn the_container_init_is_berth_init() {
    require_root!();
    let w = World::new();
    w.run_d("i1", &["--network", "none"], &["sleep", "600"]);
    let pid = w.inspect("i1")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "no pid");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("its executable");
    assert_eq!(
        exe,
        common::berthd_bin().with_file_name("berth-init"),
        "the init's executable"
    );
    assert_eq!(w.exec_ok("i1", &["echo", "in"]).trim(), "in");
}

/// Polls `f` every 50 ms until it is true, panicking after `secs` seconds with `what`.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Proves: `berth kill -s SIG` delivers that signal to the command (its trap runs and sets the
/// exit code), a bare `berth kill` is SIGKILL (exit code 137, as docker), an unknown signal is
/// refused with dockerd's message and leaves the container running, and killing a container
/// that is not running is a 409 naming it.
#[test]
fn kill_sends_signals_as_docker_does() {
    require_root!();
    let w = World::new();
    let trap = "trap 'echo got-hup; exit 7' HUP; echo ready; while :; do sleep 0.1; done";
    w.run_d("k1", &["--network", "none"], &["sh", "-c", trap]);
    w.run_d("k2", &["--network", "none"], &["sleep", "600"]);
    let logs = |n: &str| stdout(&w.berth(&["logs", n]));
    wait_for("k1's trap installed", 10, || logs("k1").contains("ready"));

    let o = w.berth(&["kill", "-s", "hup", "k1"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o).trim(), "k1");
    wait_for("k1 exited", 10, || {
        w.inspect("k1")["State"]["Status"].as_str() == Some("exited")
    });
    assert_eq!(w.inspect("k1")["State"]["ExitCode"].as_i64(), Some(7));
    assert!(logs("k1").contains("got-hup"), "{}", logs("k1"));

    let o = w.berth(&["kill", "k1"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        stderr(&o).contains("is not running"),
        "killing an exited container: {}",
        show(&o)
    );

    let o = w.berth(&["kill", "-s", "NOPE", "k2"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(stderr(&o).contains("Invalid signal: NOPE"), "{}", show(&o));
    assert_eq!(
        w.inspect("k2")["State"]["Status"].as_str(),
        Some("running"),
        "a refused signal must not touch the container"
    );

    w.berth_ok(&["kill", "k2"]);
    wait_for("k2 exited", 10, || {
        w.inspect("k2")["State"]["Status"].as_str() == Some("exited")
    });
    assert_eq!(w.inspect("k2")["State"]["ExitCode"].as_i64(), Some(137));
    w.berth_ok(&["rm", "-f", "k1", "k2"]);
}

/// Proves: a container's command starts with no signal ignored (as with runc), whatever
/// berthd inherited: Rust's runtime ignores SIGPIPE in berthd's init, and a berthd started
/// under `nohup` ignores SIGHUP; both would otherwise pass through `execve`.
#[test]
fn the_command_ignores_no_signal() {
    require_root!();
    let w = World::new();
    let out = w.berth_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "grep",
        "^SigIgn:",
        "/proc/self/status",
    ]);
    let mask = out
        .trim()
        .strip_prefix("SigIgn:")
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn line: {out:?}"));
    // Signals 1–31 (bit n−1 is signal n). 32 and 33 belong to the C library, which refuses
    // to change them and installs its own handlers for them in every program.
    assert_eq!(mask & 0x7fff_ffff, 0, "ignored signals: {mask:#x}");
    // Real-time signals above those too.
    assert_eq!(mask >> 33, 0, "ignored signals: {mask:#x}");
}

/// Unmounts a test's namespace mount on the way out, whatever happened.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Proves: a container does not get a copy of the mounts under berthd's `RUNDIR/netns` (the
/// API socket's directory; where berthd holds its overlay namespaces, issue 11): its mount
/// namespace is a private copy of berthd's, so a copied mount would hold that namespace —
/// bridge, VXLAN port and its socket — after berthd unmounts it, for the container's life.
/// And berthd's start removes a namespace of berth's shape there that no network wants (a
/// leftover of a crash or of a cluster left), never one it did not name.
#[test]
fn containers_hold_no_copy_of_the_overlay_namespaces() {
    require_root!();
    let w = World::new();
    let run_dir = w.socket.parent().expect("socket dir").to_path_buf();
    let dir = run_dir.join("netns");
    std::fs::create_dir_all(&dir).expect("netns dir");
    // `keep`: not a name berth gives, so berthd leaves it; `ov-123456789`: berth's shape, for
    // no network of this host, so berthd's start removes it.
    let (kept, leftover) = (dir.join("keep"), dir.join("ov-123456789"));
    let mut unmount = Vec::new();
    for ns in [&kept, &leftover] {
        std::fs::write(ns, "").expect("mount point");
        unmount.push(Unmount(ns.clone()));
    }
    // Mounted while berthd is down: its mount namespace (`ip netns exec`'s copy) has them.
    w.restart_daemon_with(false, || {
        for ns in [&kept, &leftover] {
            let o = common::sh("unshare", &[&format!("--net={}", ns.display()), "true"]);
            assert_eq!(code(&o), 0, "unshare --net: {}", show(&o));
        }
    });
    let (shown, gone) = (kept.display().to_string(), leftover.display().to_string());
    let berthd = w.daemon_pid().expect("berthd");
    let theirs = std::fs::read_to_string(format!("/proc/{berthd}/mountinfo")).expect("mountinfo");
    assert!(
        theirs.contains(&shown),
        "berthd's mount namespace has {shown} (else the check below proves nothing)"
    );
    assert!(
        !theirs.contains(&gone),
        "berthd's start should have removed the leftover {gone}:\n{theirs}"
    );
    w.run_d("c", &[], &["sleep", "120"]);
    let pid = w.inspect("c")["State"]["Pid"]
        .as_u64()
        .expect("the container's pid");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    assert!(
        !mounts.contains(&shown),
        "the container holds a copy of {shown}:\n{mounts}"
    );
    drop(unmount);
}

/// One request to berthd over its socket (HTTP/1.0: the answer ends when berthd closes the
/// connection, no chunks): the status, the content type and the body's bytes.
fn raw_request(w: &World, head: &str, body: &str) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&w.socket).expect("connect to berthd");
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let req = format!(
        "{head} HTTP/1.0\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, all[split + 4..].to_vec())
}

/// Proves berth's one-request `run` (`POST /containers/create?start=1&attach=1`, what `berth
/// run` without `-d`/`-i`/`-t` sends): the answer is Docker's multiplexed stream framed by
/// berth's create frame (the id) first and its exit frame (the code) last, with all of the
/// command's stdout and stderr in between, even for a `--rm` command that is gone at once;
/// the container is removed afterwards, and the CLI's `run --rm` gives the output and code.
/// A start that fails is an error answer, and with `AutoRemove` leaves nothing behind.
#[test]
fn run_attached_is_one_request_with_output_and_exit() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.1.7.0/24", "one"]);
    let body = r#"{"Cmd":["sh","-c","echo out; echo err >&2; exit 3"],"HostConfig":{"NetworkMode":"one","AutoRemove":true}}"#;
    let (status, ctype, bytes) = raw_request(
        &w,
        "POST /containers/create?name=att&start=1&attach=1",
        body,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ctype, "application/vnd.docker.multiplexed-stream");
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        frames.push((
            rest[0],
            String::from_utf8_lossy(&rest[8..8 + len]).to_string(),
        ));
        rest = &rest[8 + len..];
    }
    assert!(rest.is_empty(), "a partial frame: {frames:?} {rest:?}");
    let (first, last) = (frames.first().cloned(), frames.last().cloned());
    let created: serde_json::Value =
        serde_json::from_str(&first.clone().map(|f| f.1).unwrap_or_default())
            .unwrap_or_else(|e| panic!("create frame {first:?}: {e}"));
    assert_eq!(first.map(|f| f.0), Some(0xB0), "{frames:?}");
    assert_eq!(created["Id"].as_str().map(str::len), Some(64), "{created}");
    assert_eq!(
        last,
        Some((0xB1, "{\"StatusCode\":3}".to_string())),
        "{frames:?}"
    );
    let out: String = frames
        .iter()
        .filter(|f| f.0 == 1)
        .map(|f| f.1.as_str())
        .collect();
    let err: String = frames
        .iter()
        .filter(|f| f.0 == 2)
        .map(|f| f.1.as_str())
        .collect();
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("out\n", "err\n"),
        "{frames:?}"
    );
    let (s, _) = w.api("GET", "/containers/att/json", None);
    assert_eq!(s, 404, "the --rm container is still there");

    // A start that fails (the namespace of a container that does not run): an error, and
    // nothing left.
    let (s, b) = w.api(
        "POST",
        "/containers/create?name=idle",
        Some(r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}"#),
    );
    assert_eq!(s, 201, "{b}");
    let body =
        r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"container:idle","AutoRemove":true}}"#;
    let (status, _, bytes) = raw_request(
        &w,
        "POST /containers/create?name=bad&start=1&attach=1",
        body,
    );
    assert!(
        status >= 400,
        "{status} {}",
        String::from_utf8_lossy(&bytes)
    );
    let (s, _) = w.api("GET", "/containers/bad/json", None);
    assert_eq!(s, 404, "the failed --rm container is still there");

    // Through the CLI.
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "one",
        "sh",
        "-c",
        "echo hi; echo ho >&2; exit 5",
    ]);
    assert_eq!(code(&o), 5, "{}", show(&o));
    assert_eq!(stdout(&o), "hi\n", "{}", show(&o));
    assert_eq!(stderr(&o), "ho\n", "{}", show(&o));
}

/// Proves: every container gets a network namespace of its own, never one another container
/// used, though berthd makes them ahead (`netpool.rs`): a container with NET_ADMIN adds a
/// veth pair to its namespace, and the containers started after it, on the bridge network
/// and with `--network none`, each in a namespace no other has (all kept running, so no
/// namespace's inode number can be recycled meanwhile), see only their own `lo` (and `eth0`
/// on the network), never that pair.
#[test]
fn each_container_has_a_fresh_network_namespace() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.67.0.0/24", "fresh"]);
    let show_ns = "readlink /proc/self/ns/net; ls /sys/class/net | tr '\\n' ' '; echo";
    let look = |name: &str| -> (String, Vec<String>) {
        let out = w.exec_ok(name, &["sh", "-c", show_ns]);
        let mut lines = out.lines();
        let ns = lines.next().unwrap_or_default().to_string();
        let mut links: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        links.sort_unstable();
        (ns, links)
    };
    w.run_d(
        "dirty",
        &["--network", "fresh", "--cap-add", "NET_ADMIN"],
        &[
            "sh",
            "-c",
            "ip link add berthdirty type veth peer name berthdirty2 && sleep 600",
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (dirty_ns, links) = loop {
        let (ns, links) = look("dirty");
        if links.iter().any(|l| l == "berthdirty") {
            break (ns, links);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pair was never made: {links:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(dirty_ns.starts_with("net:["), "{dirty_ns:?} {links:?}");
    let mut seen = vec![dirty_ns];
    for (i, net) in ["fresh", "none", "fresh", "none"].into_iter().enumerate() {
        let name = format!("clean{i}");
        w.run_d(&name, &["--network", net], &["sleep", "600"]);
        let (ns, links) = look(&name);
        assert!(
            !seen.contains(&ns),
            "{name} ({net}): namespace {ns} is another container's ({seen:?})"
        );
        seen.push(ns);
        let want: Vec<String> = if net == "none" {
            vec!["lo".into()]
        } else {
            vec!["eth0".into(), "lo".into()]
        };
        assert_eq!(
            links, want,
            "{name} ({net}): interfaces of a fresh namespace"
        );
    }
}
