//! End-to-end: docker CLI habits of issue 9 — `logs --tail/-t`, `create`, `start`,
//! `restart`, `wait`, `-w`/`-u`/`--env-file`/labels, `--restart` policies and `update
//! --restart`, `--sysctl`, `ps --filter` — through berth's CLI and the stock docker CLI.

mod common;

use common::{code, show, stdout, World};

/// Parses docker's `2006-01-02T15:04:05.000000000Z` into Unix nanoseconds.
fn parse_ts(s: &str) -> i128 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .unix_timestamp_nanos()
}

/// Proves: `logs --tail 2` shows exactly the last two lines, `--tail all` and `--tail 0`
/// as docker; `-t` prefixes every line with a fixed-width RFC 3339 time, in order and
/// within the run's span; the stock docker CLI's `logs --tail 1 -t` gets the same.
#[test]
fn logs_tail_and_timestamps() {
    require_root!();
    let w = World::new();
    let before = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let o = w.berth(&[
        "run",
        "--name",
        "five",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let after = time::OffsetDateTime::now_utc().unix_timestamp_nanos();

    assert_eq!(
        w.berth_ok(&["logs", "--tail", "2", "five"]),
        "line4\nline5\n"
    );
    assert_eq!(
        w.berth_ok(&["logs", "--tail", "all", "five"]),
        "line1\nline2\nline3\nline4\nline5\n"
    );
    assert_eq!(w.berth_ok(&["logs", "-n", "0", "five"]), "");

    let out = w.berth_ok(&["logs", "-t", "five"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let mut last = before;
    for (i, l) in lines.iter().enumerate() {
        let (ts, text) = l.split_once(' ').expect("a time, a space, the line");
        assert_eq!(ts.len(), 30, "fixed width like docker: {ts}");
        assert_eq!(text, format!("line{}", i + 1));
        let t = parse_ts(ts);
        assert!(
            t >= last && t <= after,
            "{l} out of order or outside the run"
        );
        last = t;
    }

    let o = w.docker(&["logs", "--tail", "1", "-t", "five"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let got = stdout(&o);
    let (ts, text) = got.trim_end().split_once(' ').expect("docker: time, line");
    assert_eq!(text, "line5", "{}", show(&o));
    assert_eq!(ts, lines[4].split_once(' ').map(|x| x.0).unwrap_or(""));
}

/// Proves: `create` prints the full id of a container in state `created`; `start` runs it;
/// `restart` (berth's and docker's) gives it a new process and keeps its addresses; `wait`
/// (berth's and docker's) prints the exit code 3 of `sh -c 'exit 3'`; `start -a` streams the
/// output of a stopped container's next run and exits with its code.
#[test]
fn create_start_restart_wait() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.41.0.0/24", "hab"]);

    let id = w
        .berth_ok(&[
            "create",
            "--name",
            "c1",
            "--network",
            "hab",
            "--ip",
            "10.41.0.9",
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "create prints the full id: {id:?}");
    assert_eq!(w.inspect("c1")["State"]["Status"], "created");
    assert_eq!(w.berth_ok(&["start", "c1"]).trim(), "c1");
    w.wait_running("c1");
    let pid = w.inspect("c1")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0);

    assert_eq!(w.berth_ok(&["restart", "-t", "1", "c1"]).trim(), "c1");
    w.wait_running("c1");
    let v = w.inspect("c1");
    let pid2 = v["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid2 > 0 && pid2 != pid, "a new process: {pid} then {pid2}");
    assert_eq!(w.ip_of("c1", "hab"), "10.41.0.9");
    assert!(
        w.exec_ok("c1", &["ip", "-4", "addr"])
            .contains("10.41.0.9/24"),
        "the address is on its interface after the restart"
    );

    let o = w.docker(&["restart", "-t", "1", "c1"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    w.wait_running("c1");
    let pid3 = w.inspect("c1")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(
        pid3 > 0 && pid3 != pid2,
        "docker restart: {pid2} then {pid3}"
    );
    assert_eq!(w.ip_of("c1", "hab"), "10.41.0.9");

    // wait: berth's, then docker's on the same exited container.
    w.berth_ok(&["create", "--name", "three", "sh", "-c", "echo bye; exit 3"]);
    w.berth_ok(&["start", "three"]);
    assert_eq!(w.berth_ok(&["wait", "three"]), "3\n");
    assert_eq!(w.docker_ok(&["wait", "three"]), "3\n");
    assert_eq!(w.inspect("three")["State"]["ExitCode"], 3);

    // start -a: the next run's output and its code.
    let o = w.berth(&["start", "-a", "three"]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert_eq!(stdout(&o), "bye\n", "{}", show(&o));
    // The stock docker CLI waits for the wait's answer head before it sends the start.
    let o = w.docker(&["start", "-a", "three"]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    assert_eq!(stdout(&o), "bye\n", "{}", show(&o));

    // `next-exit` of an exited container, in the order that hung `start -a`: berthd answers
    // the head at once (the wait is registered), then the run started AND ended before the
    // client reads on; the body is that run's code, not a wait for the run after it.
    next_exit_after_a_quick_run(&w, "three", 3);

    let o = w.berth(&["wait", "nosuch"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(common::stderr(&o).contains("nosuch"), "{}", show(&o));
}

/// A raw `POST /containers/NAME/wait?condition=next-exit` on an exited container: its head
/// comes before any start (within 5 s), and after a start whose run is over before the body
/// is read, the body is that run's exit code.
fn next_exit_after_a_quick_run(w: &World, name: &str, expected: i64) {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    let mut conn = UnixStream::connect(&w.socket).expect("connect to berthd");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        conn,
        "POST /containers/{name}/wait?condition=next-exit HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("send the wait");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|x| x == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) => panic!(
                "berthd closed the wait: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer head before the start (the wait is not registered): {e}"),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    w.berth_ok(&["start", name]);
    assert_eq!(
        w.berth_ok(&["wait", name]).trim(),
        expected.to_string(),
        "the run is over before the wait's body is read"
    );
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let want = format!("\"StatusCode\":{expected}");
    while !String::from_utf8_lossy(&got).contains(&want) {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the wait missed the run that ended ({e}): {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    assert!(
        String::from_utf8_lossy(&got).contains(&want),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Proves: `-w /tmp` → `pwd` prints /tmp; `-u 65534` → `id -u` prints 65534 (and `-u nobody`
/// the same, looked up in /etc/passwd); `--env-file` skips a comment, takes a KEY=VALUE and a
/// bare KEY's value from berth's environment, `-e` wins; `--label`/`--label-file` show in
/// inspect's `Config.Labels`; a relative `-w` is docker's 400.
#[test]
fn workdir_user_env_file_labels() {
    require_root!();
    let w = World::new();
    assert_eq!(w.berth_ok(&["run", "--rm", "-w", "/tmp", "pwd"]), "/tmp\n");
    assert_eq!(
        w.berth_ok(&["run", "--rm", "-u", "65534", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(
        w.berth_ok(&["run", "--rm", "-u", "nobody", "sh", "-c", "id -u; id -g"]),
        "65534\n65534\n"
    );
    let o = w.berth(&["run", "--rm", "-w", "tmp", "pwd"]);
    assert_eq!(code(&o), 125, "{}", show(&o));
    assert!(
        common::stderr(&o).contains("needs to be an absolute path"),
        "{}",
        show(&o)
    );

    let env_file = w.dir.join("app.env");
    std::fs::write(
        &env_file,
        "# not a variable\nGREETING=hello there\nFROM_HOST\nOVER=file\n",
    )
    .expect("env file");
    let env_file = env_file.display().to_string();
    let mut c = std::process::Command::new(common::berth_bin());
    c.args(["-H", &w.host_url(), "run", "--rm", "--env-file", &env_file])
        .args(["-e", "OVER=flag", "sh", "-c"])
        .arg("echo \"$GREETING|$FROM_HOST|$OVER\"; env | grep -c 'not a variable'")
        .env("FROM_HOST", "from-berth")
        .env_remove("BERTH_HOST");
    let o = common::run_timeout(c, std::time::Duration::from_secs(30));
    assert_eq!(
        stdout(&o),
        "hello there|from-berth|flag\n0\n",
        "{}",
        show(&o)
    );

    let label_file = w.dir.join("labels");
    std::fs::write(&label_file, "# labels\ntier=web\nbare\n").expect("label file");
    let label_file = label_file.display().to_string();
    w.berth_ok(&[
        "create",
        "--name",
        "lab",
        "--label",
        "team=net",
        "-l",
        "tier=front",
        "--label-file",
        &label_file,
        "true",
    ]);
    let labels = &w.inspect("lab")["Config"]["Labels"];
    assert_eq!(
        *labels,
        serde_json::json!({"team": "net", "tier": "front", "bare": ""}),
        "--label wins over --label-file"
    );
    let o = w.docker(&["inspect", "-f", "{{.Config.Labels.team}}", "lab"]);
    assert_eq!(stdout(&o), "net\n", "{}", show(&o));
}

/// Proves: `inspect` without `--type` takes a container first and falls back to a network
/// (docker's order), so a name that is a network id's prefix finds that network once no such
/// container exists; `--type container` then says "No such container" (exit 1) and
/// `--type network` finds the network even while a container of that name exists; a kind
/// berth has not is refused before any request, a bad value is named.
#[test]
fn inspect_type_keeps_containers_and_networks_apart() {
    require_root!();
    let w = World::new();
    let id = w.berth_ok(&["network", "create", "--subnet", "10.77.0.0/24", "tnet"]);
    let prefix: String = id.trim().chars().take(3).collect();
    assert_eq!(prefix.len(), 3, "network id {id:?}");
    // No container named like that: the network's prefix answers the untyped inspect.
    let untyped = w.berth_ok(&["inspect", "-f", "{{.Name}}", &prefix]);
    assert_eq!(untyped, "tnet\n", "untyped inspect of {prefix}");
    let o = w.berth(&["inspect", "--type", "container", &prefix]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        show(&o).contains(&format!("No such container: {prefix}")),
        "{}",
        show(&o)
    );
    // A container of that name wins the untyped look-up, --type network still finds the network.
    w.berth_ok(&["create", "--name", &prefix, "true"]);
    let untyped = w.berth_ok(&["inspect", "-f", "{{.Name}}", &prefix]);
    assert_eq!(untyped, format!("/{prefix}\n"), "container first");
    let typed = w.berth_ok(&["inspect", "--type", "network", "-f", "{{.Name}}", &prefix]);
    assert_eq!(typed, "tnet\n");
    assert_eq!(w.inspect(&prefix)["Name"], format!("/{prefix}"));
    let o = w.berth(&["inspect", "--type", "image", &prefix]);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(show(&o).contains("no image objects"), "{}", show(&o));
    let o = w.berth(&["inspect", "--type", "volumes", &prefix]);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(
        show(&o).contains("not a valid value for --type"),
        "{}",
        show(&o)
    );
}

/// Polls `inspect NAME` (≤ `secs` s) until `ok` holds; returns that inspect.
fn wait_inspect(
    w: &World,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let v = w.inspect(name);
        if ok(&v) {
            return v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "{name}: not {what} after {secs} s: State={} RestartCount={}",
            v["State"],
            v["RestartCount"]
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Proves `--restart on-failure:2`: a command that fails runs three times in all (three
/// lines in its log), then stays exited with `RestartCount` 2 (also as docker's inspect
/// reads it); `HostConfig.RestartPolicy` is shown; dockerd's 400s for a count with another
/// policy, an unknown policy and `--rm` with a policy, and the docker CLI's own refusals.
#[test]
fn restart_on_failure_counts_and_validation() {
    require_root!();
    let w = World::new();
    w.berth_ok(&[
        "run",
        "-d",
        "--name",
        "f",
        "--restart",
        "on-failure:2",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    let v = wait_inspect(&w, "f", 15, "exited after 2 restarts", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 2
    });
    assert_eq!(v["State"]["ExitCode"], 1);
    assert_eq!(
        v["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 2})
    );
    // Past the longest delay it could still have (400 ms): no fourth run.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let v = w.inspect("f");
    assert_eq!(v["State"]["Status"], "exited", "{}", v["State"]);
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(w.berth_ok(&["logs", "f"]), "run\nrun\nrun\n");
    assert_eq!(
        w.docker_ok(&[
            "inspect",
            "-f",
            "{{.RestartCount}} {{.HostConfig.RestartPolicy.Name}} {{.State.Status}}",
            "f"
        ])
        .trim(),
        "2 on-failure exited"
    );
    // A success is no failure: on-failure leaves it exited at once.
    w.berth_ok(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        "true",
    ]);
    wait_inspect(&w, "ok", 10, "exited", |v| v["State"]["Status"] == "exited");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(w.inspect("ok")["RestartCount"], 0);

    for (host_config, msg) in [
        (
            r#"{"RestartPolicy":{"Name":"always","MaximumRetryCount":2}}"#,
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            r#"{"RestartPolicy":{"Name":"sometimes"}}"#,
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
        ),
        (
            r#"{"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":-1}}"#,
            "invalid restart policy: maximum retry count cannot be negative",
        ),
        (
            r#"{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}"#,
            "can't create 'AutoRemove' container with restart policy",
        ),
    ] {
        let body = format!(r#"{{"Cmd":["true"],"HostConfig":{host_config}}}"#);
        let (status, answer) = w.api("POST", "/containers/create", Some(&body));
        assert_eq!(status, 400, "{host_config}: {answer}");
        assert!(answer.contains(msg), "{host_config}: {answer}");
    }
    // `null` reads as no policy, as dockerd reads it.
    let (status, answer) = w.api(
        "POST",
        "/containers/create?name=nul",
        Some(r#"{"Cmd":["true"],"HostConfig":{"RestartPolicy":null}}"#),
    );
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        w.inspect("nul")["HostConfig"]["RestartPolicy"]["Name"],
        "no"
    );

    for (args, msg) in [
        (
            vec!["run", "--rm", "--restart", "always", "true"],
            "conflicting options: cannot specify both --restart and --rm",
        ),
        (
            vec!["run", "--restart", ":3", "true"],
            "invalid restart policy format: no policy provided before colon",
        ),
        (
            vec!["run", "--restart", "on-failure:x", "true"],
            "invalid restart policy format: maximum retry count must be an integer",
        ),
        (
            vec!["create", "--restart", "always:1", "true"],
            "maximum retry count can only be used with 'on-failure'",
        ),
    ] {
        let o = w.berth(&args);
        assert_eq!(code(&o), 125, "{args:?}: {}", show(&o));
        assert!(common::stderr(&o).contains(msg), "{args:?}: {}", show(&o));
    }
}

/// Proves `--restart always`: a server that exits after one connection is started again
/// (a new process, `RestartCount` 1) on the same address, and a real connection from another
/// container reaches it there; `berth stop` ends it for good; a `wait` returns at each exit.
#[test]
fn restart_always_keeps_its_address_until_stopped() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.42.0.0/24", "rs"]);
    w.run_d("client", &["--network", "rs"], &["sleep", "600"]);
    let once = "import socket\n\
                s = socket.socket()\n\
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                s.bind(('0.0.0.0', 8080))\n\
                s.listen(1)\n\
                c, _ = s.accept()\n\
                c.sendall(b'once\\n')\n\
                c.close()\n";
    w.run_d(
        "srv",
        &["--network", "rs", "--restart", "always"],
        &["python3", "-c", once],
    );
    let ip = w.ip_of("srv", "rs");
    assert!(ip.starts_with("10.42.0."), "{ip}");
    let pid = w.inspect("srv")["State"]["Pid"].as_i64().unwrap_or(0);
    // Its first answer (retried while python starts listening; a refusal is quick).
    let reach = |what: &str| {
        let start = std::time::Instant::now();
        loop {
            match w.tcp_from("client", &ip, 8080, 2.0) {
                Ok(r) => return r,
                Err(e) => assert!(
                    start.elapsed() < std::time::Duration::from_secs(15),
                    "{what}: client never reached srv at {ip}:8080: {e}"
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    assert_eq!(reach("first run"), "once\n");
    let v = wait_inspect(&w, "srv", 15, "restarted", |v| {
        v["RestartCount"] == 1 && v["State"]["Status"] == "running"
    });
    let pid2 = v["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid2 > 0 && pid2 != pid, "a new process: {pid} then {pid2}");
    assert_eq!(
        w.ip_of("srv", "rs"),
        ip,
        "the same address after the restart"
    );
    assert_eq!(reach("after the restart"), "once\n");
    wait_inspect(&w, "srv", 15, "restarted twice", |v| {
        v["RestartCount"] == 2 && v["State"]["Status"] == "running"
    });

    // A stop through the API ends it for good.
    assert_eq!(w.berth_ok(&["stop", "-t", "1", "srv"]).trim(), "srv");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let v = w.inspect("srv");
    assert_eq!(v["State"]["Status"], "exited", "{}", v["State"]);
    assert_eq!(v["RestartCount"], 2);
    assert!(w.tcp_from("client", &ip, 8080, 1.0).is_err());
    // A start through the API forgets the count, as dockerd's.
    w.berth_ok(&["start", "srv"]);
    let v = wait_inspect(&w, "srv", 10, "running", |v| {
        v["State"]["Status"] == "running"
    });
    assert_eq!(v["RestartCount"], 0);
    w.berth_ok(&["rm", "-f", "srv"]);
}

/// Proves the restart policies across a berthd restart: with berthd down, the process of an
/// `always` container dies and an `unless-stopped` one stopped earlier stays stopped, while an
/// `always` one stopped earlier comes back (dockerd's rules); the `always` container keeps
/// its address.
#[test]
fn restart_policies_across_a_berthd_restart() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.43.0.0/24", "rd"]);
    w.run_d(
        "dies",
        &["--network", "rd", "--restart", "always"],
        &["sleep", "600"],
    );
    w.run_d(
        "stopped-always",
        &["--restart", "always"],
        &["sleep", "600"],
    );
    w.run_d(
        "stopped-unless",
        &["--restart", "unless-stopped"],
        &["sleep", "600"],
    );
    w.run_d("plain", &[], &["sleep", "600"]);
    for name in ["stopped-always", "stopped-unless"] {
        w.berth_ok(&["stop", "-t", "1", name]);
    }
    let ip = w.ip_of("dies", "rd");
    let pid = w.inspect("dies")["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid > 0);
    w.restart_daemon_with(false, || {
        // The container's command dies while no berthd watches it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let start = std::time::Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let v = wait_inspect(&w, "dies", 15, "running again", |v| {
        v["State"]["Status"] == "running"
    });
    let pid2 = v["State"]["Pid"].as_i64().unwrap_or(0);
    assert!(pid2 > 0 && pid2 != pid, "{pid} then {pid2}");
    assert_eq!(w.ip_of("dies", "rd"), ip);
    assert!(
        w.exec_ok("dies", &["ip", "-4", "addr"])
            .contains(&format!("{ip}/24")),
        "its address is on its interface again"
    );
    wait_inspect(&w, "stopped-always", 15, "running again", |v| {
        v["State"]["Status"] == "running"
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(w.inspect("stopped-unless")["State"]["Status"], "exited");
    assert_eq!(w.inspect("plain")["State"]["Status"], "running");
}

/// Proves `--sysctl`: `net.*` and IPC sysctls are set inside the container before its command
/// runs (read back from its /proc/sys; a container without them shows the defaults) and not
/// in berthd's network namespace nor the host's IPC namespace; inspect shows them; refused
/// with a 400 in runc's words: a non-namespaced one, `net.*` with `--network host`, a name
/// that leads elsewhere (`net/../../kernel/…`), a value with a newline; the docker CLI's own
/// refusal from `berth run`.
#[test]
fn sysctls_only_namespaced_ones() {
    require_root!();
    let w = World::new();
    let keepalive = "/proc/sys/net/ipv4/tcp_keepalive_time";
    let host_keepalive = w.ns_exec_ok(&w.host_ns, &["cat", keepalive]);
    assert_ne!(host_keepalive.trim(), "321");
    let root_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").expect("shmmni");
    assert_ne!(root_shmmni.trim(), "1234");
    w.run_d(
        "s",
        &[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "net.ipv4.tcp_keepalive_time=321",
            "--sysctl",
            "net.ipv4.ip_local_port_range=20000 30000",
            "--sysctl",
            "kernel.shmmni=1234",
        ],
        &["sleep", "600"],
    );
    w.run_d("plain", &[], &["sleep", "600"]);
    let read = |name: &str, key: &str| {
        w.exec_ok(
            name,
            &["cat", &format!("/proc/sys/{}", key.replace('.', "/"))],
        )
        .trim()
        .to_string()
    };
    assert_eq!(read("s", "net.ipv4.ip_forward"), "1");
    assert_eq!(read("plain", "net.ipv4.ip_forward"), "0");
    assert_eq!(read("s", "net.ipv4.tcp_keepalive_time"), "321");
    assert_eq!(read("s", "net.ipv4.ip_local_port_range"), "20000\t30000");
    assert_eq!(read("s", "kernel.shmmni"), "1234");
    assert_ne!(read("plain", "kernel.shmmni"), "1234");
    assert_eq!(
        w.ns_exec_ok(&w.host_ns, &["cat", keepalive]),
        host_keepalive
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").expect("shmmni"),
        root_shmmni
    );
    assert_eq!(
        w.inspect("s")["HostConfig"]["Sysctls"]["net.ipv4.tcp_keepalive_time"],
        "321"
    );

    for (host_config, msg) in [
        (
            r#"{"Sysctls":{"vm.swappiness":"10"}}"#,
            r#"sysctl \"vm.swappiness\" is not in a separate kernel namespace"#,
        ),
        (
            r#"{"Sysctls":{"kernel.hostname":"x"}}"#,
            "conflicts with the OCI",
        ),
        (
            r#"{"NetworkMode":"host","Sysctls":{"net.ipv4.ip_forward":"1"}}"#,
            r#"sysctl \"net.ipv4.ip_forward\" not allowed in host network namespace"#,
        ),
        (
            r#"{"Sysctls":{"net/../../kernel/hostname":"x"}}"#,
            "invalid sysctl name",
        ),
        (
            r#"{"Sysctls":{"net.ipv4/../../kernel/core_pattern":"x"}}"#,
            "invalid sysctl name",
        ),
        (r#"{"Sysctls":{"net.ipv4.ip_forward":"1\n0"}}"#, "one line"),
    ] {
        let body = format!(r#"{{"Cmd":["true"],"HostConfig":{host_config}}}"#);
        let (status, answer) = w.api("POST", "/containers/create", Some(&body));
        assert_eq!(status, 400, "{host_config}: {answer}");
        assert!(answer.contains(msg), "{host_config}: {answer}");
    }
    let o = w.berth(&["run", "--sysctl", "vm.swappiness=1", "true"]);
    assert_eq!(code(&o), 125, "{}", show(&o));
    assert!(
        common::stderr(&o).contains("sysctl 'vm.swappiness=1' is not allowed"),
        "{}",
        show(&o)
    );
}

/// Proves `ps --filter` through berth's CLI and the stock docker CLI: `label=KEY` and
/// `label=KEY=VALUE` (all must match), `name=` (`^…$` anchors), `id=` prefix, `status=` (lists
/// stopped containers without `-a`), `exited=`, `network=`; an unknown key is dockerd's 400.
#[test]
fn ps_filters() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "psnet"]);
    let front = w.run_d(
        "front",
        &["-l", "tier=front", "-l", "team=net", "--network", "psnet"],
        &["sleep", "600"],
    );
    w.run_d("back", &["-l", "tier=back"], &["sleep", "600"]);
    w.run_d("frontier", &["-l", "tier=front"], &["sleep", "600"]);
    let o = w.berth(&[
        "run",
        "--name",
        "done",
        "-l",
        "tier=front",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(code(&o), 3, "{}", show(&o));
    let names = |args: &[&str]| {
        let mut a = vec!["ps", "--format", "{{.Names}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = w.berth_ok(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names(&["-f", "label=tier"]), ["back", "front", "frontier"]);
    assert_eq!(names(&["-f", "label=tier=front"]), ["front", "frontier"]);
    assert_eq!(
        names(&["-a", "-f", "label=tier=front"]),
        ["done", "front", "frontier"]
    );
    assert_eq!(
        names(&["-f", "label=tier=front", "-f", "label=team=net"]),
        ["front"]
    );
    assert_eq!(names(&["-f", "name=front"]), ["front", "frontier"]);
    assert_eq!(names(&["-f", "name=^front$"]), ["front"]);
    assert_eq!(names(&["-f", &format!("id={}", &front[..12])]), ["front"]);
    assert_eq!(names(&["-f", "status=exited"]), ["done"]);
    assert_eq!(names(&["-a", "-f", "exited=3"]), ["done"]);
    assert_eq!(names(&["-f", "network=psnet"]), ["front"]);
    let o = w.berth(&["ps", "-f", "colour=red"]);
    assert_ne!(code(&o), 0);
    assert!(
        common::stderr(&o).contains("invalid filter 'colour'"),
        "{}",
        show(&o)
    );
    // The stock docker CLI, and the labels column.
    let got = w.docker_ok(&[
        "ps",
        "--filter",
        "label=tier=front",
        "--filter",
        "label=team",
        "--format",
        "{{.Names}} {{.Label \"team\"}}",
    ]);
    assert_eq!(got.trim(), "front net");
}

/// Proves `-u` as moby's GetExecUser with the container's own passwd and group (bind-mounted
/// over /etc): `HOME` is the user's home (`-e HOME=` wins; a uid without an entry gets `/`),
/// the groups listing the user are its supplementary groups (the kernel's `Groups:` of the
/// command), an explicit `USER:GROUP` gets that group alone.
#[test]
fn user_home_and_supplementary_groups() {
    require_root!();
    let w = World::new();
    let passwd = w.dir.join("passwd");
    let group = w.dir.join("group");
    std::fs::write(
        &passwd,
        "root:x:0:0:root:/root:/bin/sh\nalice:x:4321:4321:Alice:/home/alice:/bin/sh\n",
    )
    .expect("write passwd");
    std::fs::write(
        &group,
        "root:x:0:\nalice:x:4321:\nops:x:5001:alice,bob\ndev:x:5002:bob,alice\nother:x:5003:bob\n",
    )
    .expect("write group");
    let p = format!("{}:/etc/passwd:ro", passwd.display());
    let g = format!("{}:/etc/group:ro", group.display());
    let run = |extra: &[&str]| {
        let mut a = vec!["run", "--rm", "-v", &p, "-v", &g];
        a.extend_from_slice(extra);
        a.extend_from_slice(&[
            "sh",
            "-c",
            "echo $HOME; id -u; id -g; grep ^Groups: /proc/self/status",
        ]);
        let out = w.berth_ok(&a);
        let lines: Vec<String> = out.lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 4, "{out}");
        let groups: Vec<String> = lines[3]
            .split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect();
        (lines[0].clone(), lines[1].clone(), lines[2].clone(), groups)
    };
    assert_eq!(
        run(&["-u", "alice"]),
        (
            "/home/alice".into(),
            "4321".into(),
            "4321".into(),
            vec!["4321".into(), "5001".into(), "5002".into()]
        )
    );
    assert_eq!(run(&["-u", "alice", "-e", "HOME=/srv"]).0, "/srv");
    let (home, uid, gid, groups) = run(&["-u", "alice:ops"]);
    assert_eq!(
        (home.as_str(), uid.as_str(), gid.as_str()),
        ("/home/alice", "4321", "5001")
    );
    assert_eq!(groups, ["5001"]);
    let (home, uid, gid, groups) = run(&["-u", "7777"]);
    assert_eq!(
        (home.as_str(), uid.as_str(), gid.as_str()),
        ("/", "7777", "0")
    );
    assert_eq!(groups, ["0"]);
}

/// Proves `update --restart` (berth's CLI and the docker CLI): the next exit follows the new
/// policy (a container created without one is restarted once by `on-failure:1`); dockerd's
/// 409 for a `--rm` container; a resource limit is refused, not ignored.
#[test]
fn update_restart_policy() {
    require_root!();
    let w = World::new();
    w.run_d("u", &[], &["sh", "-c", "sleep 1; echo ran; exit 5"]);
    assert_eq!(
        w.berth_ok(&["update", "--restart", "on-failure:1", "u"])
            .trim(),
        "u"
    );
    assert_eq!(
        w.inspect("u")["HostConfig"]["RestartPolicy"],
        serde_json::json!({"Name": "on-failure", "MaximumRetryCount": 1})
    );
    let v = wait_inspect(&w, "u", 15, "exited after one restart", |v| {
        v["State"]["Status"] == "exited" && v["RestartCount"] == 1
    });
    assert_eq!(v["State"]["ExitCode"], 5);
    assert_eq!(w.berth_ok(&["logs", "u"]), "ran\nran\n");
    w.docker_ok(&["update", "--restart", "always", "u"]);
    assert_eq!(
        w.inspect("u")["HostConfig"]["RestartPolicy"]["Name"],
        "always"
    );

    w.run_d("r", &["--rm"], &["sleep", "600"]);
    let o = w.berth(&["update", "--restart", "always", "r"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(
        common::stderr(&o).contains(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
        ),
        "{}",
        show(&o)
    );
    let (status, answer) = w.api(
        "POST",
        "/containers/r/update",
        Some(r#"{"Memory":1048576,"CpuShares":0}"#),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("Memory"), "{answer}");
}

/// Proves: `berth run -d` asks for create and start in one request (berth's `start=1`), and
/// against a daemon that ignores the parameter (dockerd, an older berthd: its answer has no
/// `BerthStarted`) it sends the `start` itself, so the container is never left only created.
/// A fake daemon on a unix socket answers and records the requests (no root, no berthd).
#[test]
fn run_detached_starts_it_on_a_daemon_without_start_1() {
    let (_dir, sock, seen) = fake_daemon(|target| {
        if target.contains("/containers/create") {
            (
                "201 Created",
                JSON,
                br#"{"Id":"f00d","Warnings":[]}"#.to_vec(),
            )
        } else if target.ends_with("/start") {
            ("204 No Content", JSON, Vec::new())
        } else {
            ("404 Not Found", JSON, br#"{"message":"not here"}"#.to_vec())
        }
    });
    let out = std::process::Command::new(common::berth_bin())
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["run", "-d", "--name", "w", "--network", "none", "true"])
        .output()
        .expect("run berth");
    let requests = seen.lock().expect("log").clone();
    assert_eq!(code(&out), 0, "{}; requests {requests:?}", show(&out));
    assert_eq!(stdout(&out).trim(), "f00d", "{}", show(&out));
    assert_eq!(requests.len(), 2, "create, then start: {requests:?}");
    assert!(
        requests[0].contains("/containers/create") && requests[0].contains("start=1"),
        "{requests:?}"
    );
    assert!(
        requests[1].ends_with("/containers/f00d/start"),
        "{requests:?}"
    );
}

/// Proves: a foreground `berth run` asks for create, start and its output in one request
/// (berth's `start=1&attach=1`), and against a daemon that answers that as a plain create
/// (dockerd: JSON, no `BerthStarted`) it follows with the usual logs, wait and start, and
/// exits with the wait's code after printing the logs. A fake daemon answers and records the
/// requests (no root, no berthd).
#[test]
fn run_falls_back_to_four_requests_on_a_daemon_without_attach_1() {
    let (_dir, sock, seen) = fake_daemon(|target| {
        if target.contains("/containers/create") {
            (
                "201 Created",
                JSON,
                br#"{"Id":"f00d","Warnings":[]}"#.to_vec(),
            )
        } else if target.contains("/logs") {
            let mut frame = vec![1u8, 0, 0, 0, 0, 0, 0, 3];
            frame.extend_from_slice(b"hi\n");
            ("200 OK", "application/vnd.docker.multiplexed-stream", frame)
        } else if target.contains("/wait") {
            ("200 OK", JSON, b"{\"StatusCode\":7}\n".to_vec())
        } else if target.ends_with("/start") {
            ("204 No Content", JSON, Vec::new())
        } else {
            ("404 Not Found", JSON, br#"{"message":"not here"}"#.to_vec())
        }
    });
    let mut cmd = std::process::Command::new(common::berth_bin());
    cmd.arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["run", "--rm", "--network", "none", "true"]);
    let out = common::run_timeout(cmd, std::time::Duration::from_secs(20));
    let requests = seen.lock().expect("log").clone();
    assert_eq!(code(&out), 7, "{}; requests {requests:?}", show(&out));
    assert_eq!(stdout(&out), "hi\n", "{}", show(&out));
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert!(
        requests[0].contains("/containers/create") && requests[0].contains("start=1&attach=1"),
        "{requests:?}"
    );
    assert!(
        requests[1..3]
            .iter()
            .any(|r| r.contains("/containers/f00d/logs")),
        "{requests:?}"
    );
    assert!(
        requests[1..3]
            .iter()
            .any(|r| r.ends_with("/containers/f00d/wait")),
        "{requests:?}"
    );
    assert!(
        requests[3].ends_with("/containers/f00d/start"),
        "{requests:?}"
    );
}

/// Proves: `berth start -a` sends the start only once berthd has registered its
/// `wait?condition=next-exit` (the wait's answer head is in), so a command that exits at once
/// cannot end before the wait exists and leave the CLI waiting for the run after it. A fake
/// daemon holds the wait's head back for 300 ms and records the order (no root, no berthd).
#[test]
fn start_attach_sends_the_start_after_the_wait_is_registered() {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&sock).expect("bind the fake daemon");
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = Arc::clone(&events);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let Some(target) = fake_daemon_request(&conn) else {
                    return;
                };
                let reply = |conn: &mut std::os::unix::net::UnixStream,
                             status: &str,
                             answer: &str| {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                };
                if target.ends_with("/json") {
                    reply(
                        &mut conn,
                        "200 OK",
                        r#"{"Id":"f00d","Config":{"Tty":false}}"#,
                    );
                } else if target.contains("/wait") {
                    std::thread::sleep(Duration::from_millis(300));
                    log.lock().expect("log").push("wait registered".into());
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    );
                    let _ = conn.flush();
                    // The body once the run is over: after the start (or 5 s without one).
                    let until = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < until
                        && !log.lock().expect("log").iter().any(|e| e == "start")
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let json = "{\"StatusCode\":3}\n";
                    let _ = write!(conn, "{:x}\r\n{json}\r\n0\r\n\r\n", json.len());
                } else if target.contains("/attach") {
                    reply(&mut conn, "200 OK", "");
                } else if target.ends_with("/start") {
                    log.lock().expect("log").push("start".into());
                    let _ = write!(conn, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                } else {
                    reply(&mut conn, "404 Not Found", r#"{"message":"not here"}"#);
                }
            });
        }
    });
    let mut cmd = std::process::Command::new(common::berth_bin());
    cmd.arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["start", "-a", "three"]);
    let out = common::run_timeout(cmd, Duration::from_secs(20));
    let seen = events.lock().expect("log").clone();
    assert_eq!(
        seen,
        vec!["wait registered".to_string(), "start".to_string()],
        "{}",
        show(&out)
    );
    assert_eq!(code(&out), 3, "{}", show(&out));
}

const JSON: &str = "application/json";

/// What a fake daemon answers a request target with: status line, content type, body.
type FakeAnswer = fn(&str) -> (&'static str, &'static str, Vec<u8>);

/// A fake daemon on a unix socket in a temp dir (kept while the first value lives): answers
/// each request, on its own connection, closed after, with `answer(target)`, and records the
/// targets in order.
fn fake_daemon(
    answer: FakeAnswer,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind the fake daemon");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let Some(target) = fake_daemon_request(&conn) else {
                continue;
            };
            log.lock().expect("log").push(target.clone());
            let (status, ctype, body) = answer(&target);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (dir, sock, seen)
}

/// A fake daemon's side of one request: reads the request line, the headers and the body,
/// and returns the target (`None` if the client went away).
fn fake_daemon_request(conn: &std::os::unix::net::UnixStream) -> Option<String> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    Some(target)
}

/// Proves that a container's command starts in its complete network (berthd plumbs it while
/// the init assembles the root; the init's gate holds the command until then): its first
/// instruction sees its address and its default route, and a sysctl naming its interface
/// (written by the init before the command, so after the network is there) applies.
#[test]
fn run_sees_its_network_at_its_first_instruction() {
    require_root!();
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.44.0.0/24", "gate"]);
    for _ in 0..5 {
        let out = w.berth_ok(&[
            "run",
            "--rm",
            "--network",
            "gate",
            "sh",
            "-c",
            "ip -o -4 addr show dev eth0; ip route",
        ]);
        assert!(out.contains("inet 10.44.0."), "no address: {out}");
        assert!(out.contains("default via 10.44.0.1"), "no route: {out}");
    }
    let out = w.berth_ok(&[
        "run",
        "--rm",
        "--network",
        "gate",
        "--sysctl",
        "net.ipv4.conf.eth0.forwarding=1",
        "cat",
        "/proc/sys/net/ipv4/conf/eth0/forwarding",
    ]);
    assert_eq!(out, "1\n");
}
