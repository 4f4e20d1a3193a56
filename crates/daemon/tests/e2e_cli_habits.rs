//! End-to-end: docker CLI habits of issue 9 — `logs --tail/-t`, `create`, `start`,
//! `restart`, `wait` — through berth's CLI and the stock docker CLI.

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

    let o = w.berth(&["wait", "nosuch"]);
    assert_eq!(code(&o), 1, "{}", show(&o));
    assert!(common::stderr(&o).contains("nosuch"), "{}", show(&o));
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
