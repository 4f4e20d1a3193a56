//! End-to-end tests of `berth_kernel::container`: stage 1, stage 2 (pid 1) and enter, run through
//! the `berth-init-test` example binary (pid-namespace semantics need fresh processes).
//!
//! Need root (skipped otherwise). Every container runs in a fresh network namespace
//! (`ip netns add bc-…`); guards kill every process and delete every namespace and temp dir even
//! when an assertion fails. Nothing in the root network namespace is touched.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_kernel::confine::Privileges;
use berth_kernel::container::{enter_command, init_command, InitConfig};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{geteuid, mkfifo, Pid};

const TIMEOUT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    if geteuid().is_root() {
        return true;
    }
    eprintln!("skipping: container tests need root");
    false
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfffff
    )
}

/// The `berth-init-test` example next to this test executable (`target/<profile>/examples`),
/// built here if `cargo test` did not build it (it does not with `--test NAME`).
fn helper_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let me = std::env::current_exe().unwrap();
        let profile_dir = me.parent().unwrap().parent().unwrap().to_path_buf();
        let exe = profile_dir.join("examples").join("berth-init-test");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "-p",
                "berth-kernel",
                "--example",
                "berth-init-test",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for the example");
        assert!(
            status.success(),
            "cargo build --example berth-init-test failed"
        );
        assert!(exe.exists(), "{} missing after build", exe.display());
        exe
    })
}

/// A fresh network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = unique("bc-");
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        Netns { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        // Not under /tmp: containers get a private /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique("berth-ct-"));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running process we started (stage 1 or enter); SIGKILLed and reaped on drop. Killing
/// stage 1 kills the container (stage 2 has a parent-death signal, and it is pid 1).
struct Proc {
    child: Child,
    out: Option<thread::JoinHandle<String>>,
    err: Option<thread::JoinHandle<String>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        Proc {
            child,
            out: Some(read_all(out)),
            err: Some(read_all(err)),
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits up to `timeout`; panics (and the guard kills) if still running.
    fn finish(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr = self.err.take().unwrap().join().unwrap();
        Outcome {
            code: status.code().expect("exited normally, not by a signal"),
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn config(tmp: &TempDir, netns: &Netns, cmd: &[&str]) -> InitConfig {
    InitConfig {
        netns: Some(netns.path()),
        hostname: "berth-test".into(),
        binds: vec![],
        rootfs: None,
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        privileges: Privileges::default(),
        filesystem: Default::default(),
        tty: false,
        working_dir: String::new(),
        user: String::new(),
        sysctls: vec![],
        pid_file: tmp.0.join("pid"),
        exit_file: tmp.0.join("exit"),
        gate: None,
        started: None,
        sysfs: None,
        detach_under: vec![],
    }
}

fn start(cfg: &InitConfig) -> Proc {
    Proc::spawn(init_command(helper_exe(), cfg).unwrap())
}

fn run(cfg: &InitConfig) -> Outcome {
    start(cfg).finish(TIMEOUT)
}

/// Waits for stage 1 to write the container init's pid.
fn wait_pid_file(path: &Path) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            return s.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no pid file {}", path.display());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `pid` runs `needle` as its command (stage 2 has spawned it) — ready for exec.
fn wait_child_running(init_pid: i32, needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let children = fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children"))
            .unwrap_or_default();
        let running = children.split_whitespace().any(|c| {
            fs::read(format!("/proc/{c}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).contains(needle))
                .unwrap_or(false)
        });
        if running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} never started in {init_pid}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn gone_or_zombie(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn hostname_is_set() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let mut cfg = config(&tmp, &ns, &["hostname"]);
    cfg.env = vec!["FOO=bar".into()];
    let out = run(&cfg);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "berth-test");
    // HOSTNAME is in the default env, PATH is docker's default.
    cfg.cmd = ["sh", "-c", "echo $HOSTNAME $FOO $PATH"]
        .map(String::from)
        .to_vec();
    let out = run(&cfg);
    assert_eq!(
        out.stdout.trim(),
        "berth-test bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

#[test]
fn binds_are_seen_inside_only() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let host_hosts = fs::read("/etc/hosts").unwrap();
    let hosts = tmp.0.join("hosts");
    fs::write(&hosts, "10.99.0.7\tberth-bind-marker\n").unwrap();
    let mut cfg = config(&tmp, &ns, &["cat", "/etc/hosts"]);
    cfg.binds = vec![(hosts.clone(), "/etc/hosts".into())];
    let out = run(&cfg);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "10.99.0.7\tberth-bind-marker\n");
    // The host's /etc/hosts and mount table are untouched.
    assert_eq!(fs::read("/etc/hosts").unwrap(), host_hosts);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(tmp.0.to_str().unwrap()));
    assert!(!mountinfo.contains(" /etc/hosts "), "{mountinfo}");
}

/// Proves: the view of the host's root, assembled on the mount namespace's own root, still
/// mounts every source it then covers or seals: a generated file from a directory the view
/// hides (as it hides berthd's state directory), a `-v` from under the host's `/tmp` onto the
/// container's own `/tmp`, writable while `/` is read-only, and the device nodes in its own
/// `/dev`. Two containers at once each see their own file, the hidden directory is empty
/// inside, and the host's mount table and files are untouched.
#[test]
fn the_view_still_mounts_the_sources_it_covers() {
    if !is_root() {
        return;
    }
    let (tmp, ns_a, ns_b) = (TempDir::new(), Netns::new(), Netns::new());
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    // A -v source under the host's /tmp, which every container gets a tmpfs on.
    let vol = std::env::temp_dir().join(unique("berth-ct-vol-"));
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("in"), "from-the-host\n").unwrap();
    let script = format!(
        "cat /etc/hosts; cat /tmp/vol/in; echo written >/tmp/vol/out-$(hostname) && echo rw; \
         touch /etc/berth-ct-x 2>/dev/null || echo ro; head -c 3 /dev/zero | wc -c; \
         echo x >/dev/null && echo null; ls -A {} | wc -l",
        state.display()
    );
    let mut procs = Vec::new();
    for (name, ns) in [("a", &ns_a), ("b", &ns_b)] {
        let hosts = state.join(format!("hosts-{name}"));
        fs::write(&hosts, format!("10.99.0.7\tberth-{name}\n")).unwrap();
        let dir = tmp.0.join(name);
        fs::create_dir_all(&dir).unwrap();
        let mut cfg = config(&tmp, ns, &["sh", "-c", &script]);
        cfg.hostname = format!("berth-{name}");
        cfg.pid_file = dir.join("pid");
        cfg.exit_file = dir.join("exit");
        cfg.binds = vec![(hosts, "/etc/hosts".into())];
        cfg.filesystem.hide = vec![state.clone()];
        cfg.filesystem.mounts = vec![berth_kernel::rootfs::Mount::Bind {
            source: vol.clone(),
            target: "/tmp/vol".into(),
            read_only: false,
        }];
        procs.push((name, dir, start(&cfg)));
    }
    let outs: Vec<_> = procs
        .into_iter()
        .map(|(name, _, proc)| (name, proc.finish(TIMEOUT)))
        .collect();
    let written: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| fs::read_to_string(vol.join(format!("out-berth-{n}"))).ok())
        .collect();
    let _ = fs::remove_dir_all(&vol).map_err(|e| eprintln!("{e}"));
    for (name, out) in &outs {
        // Line by line: the file, the -v read and written, / read-only, /dev/zero and
        // /dev/null usable, the hidden directory empty.
        assert_eq!(
            out.stdout,
            format!("10.99.0.7\tberth-{name}\nfrom-the-host\nrw\nro\n3\nnull\n0\n"),
            "{out:?}"
        );
        assert_eq!(out.code, 0, "{out:?}");
    }
    assert_eq!(
        written,
        vec![Some("written\n".to_string()); 2],
        "the -v's writes on the host"
    );
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(tmp.0.to_str().unwrap()), "{mountinfo}");
    assert!(!mountinfo.contains(vol.to_str().unwrap()), "{mountinfo}");
    assert!(!Path::new("/etc/berth-ct-x").exists());
}

#[test]
fn command_is_in_its_own_pid_namespace() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let out = run(&config(
        &tmp,
        &ns,
        &[
            "sh",
            "-c",
            "echo $$; ls /proc; tr '\\0' ' ' </proc/1/cmdline",
        ],
    ));
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    // pid 1 is berth's init (stage 2), the command is its first child.
    assert_eq!(lines.next(), Some("2"), "{out:?}");
    let pids: Vec<u32> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        pids.contains(&1) && pids.len() <= 4,
        "pids in /proc: {pids:?}"
    );
    // Stage 2 is a fork of stage 1: its command line.
    assert!(out.stdout.contains("__berth_init "), "{out:?}");

    // No descriptor of berth's leaks into the command (3 is ls's own directory fd).
    let out = run(&config(&tmp, &ns, &["ls", "/proc/self/fd"]));
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(
        fds.iter().all(|fd| ["0", "1", "2", "3"].contains(fd)),
        "{out:?}"
    );
}

#[test]
fn exit_codes_propagate() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let cfg = config(&tmp, &ns, &["sh", "-c", "exit 7"]);
    let out = run(&cfg);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(fs::read_to_string(&cfg.exit_file).unwrap(), "7");

    let cfg = config(&tmp, &ns, &["berth-no-such-command", "x"]);
    let out = run(&cfg);
    assert_eq!(out.code, 127, "{out:?}");
    assert!(
        out.stderr
            .contains("berth: exec: \"berth-no-such-command\": executable file not found in $PATH"),
        "{out:?}"
    );
    assert_eq!(fs::read_to_string(&cfg.exit_file).unwrap(), "127");

    let not_executable = tmp.0.join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&config(&tmp, &ns, &[not_executable.to_str().unwrap()]));
    assert_eq!(out.code, 126, "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");

    let out = run(&config(&tmp, &ns, &["sh", "-c", "kill -KILL $$"]));
    assert_eq!(out.code, 128 + 9, "{out:?}");
}

#[test]
fn sigterm_to_stage1_stops_the_container() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let cfg = config(&tmp, &ns, &["sleep", "100"]);
    let proc = start(&cfg);
    // No waiting for `sleep` to run: a signal to the command before it is exec'd stays pending.
    let init = wait_pid_file(&cfg.pid_file);
    // The init is in another pid namespace than ours.
    assert_ne!(
        fs::read_link(format!("/proc/{init}/ns/pid")).unwrap(),
        fs::read_link("/proc/self/ns/pid").unwrap()
    );
    let t0 = Instant::now();
    kill(proc.pid(), Signal::SIGTERM).unwrap();
    let out = proc.finish(Duration::from_secs(5));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(out.code, 128 + 15, "{out:?}");
    assert_eq!(fs::read_to_string(&cfg.exit_file).unwrap(), "143");
    assert!(gone_or_zombie(init));
}

#[test]
fn sigkill_to_stage1_kills_the_container() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let cfg = config(&tmp, &ns, &["sleep", "100"]);
    let proc = start(&cfg);
    let init = wait_pid_file(&cfg.pid_file);
    wait_child_running(init, "sleep");
    kill(proc.pid(), Signal::SIGKILL).unwrap();
    drop(proc);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone_or_zombie(init) {
        assert!(
            Instant::now() < deadline,
            "container init {init} survived stage 1"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn enter_runs_in_the_containers_namespaces() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let mut cfg = config(&tmp, &ns, &["sleep", "100"]);
    cfg.hostname = "entered".into();
    cfg.env = vec!["FROM_RUN=1".into()];
    let container = start(&cfg);
    // No waiting for `sleep`: the pid file appears only once the container is set up.
    let init = wait_pid_file(&cfg.pid_file);

    let script = "hostname; readlink /proc/self/ns/net; echo $FROM_RUN $FROM_EXEC; \
                  tr '\\0' ' ' </proc/1/cmdline; echo";
    let cmd: Vec<String> = ["sh", "-c", script].iter().map(|s| s.to_string()).collect();
    let out = Proc::spawn(enter_command(
        helper_exe(),
        init,
        &cmd,
        &["FROM_EXEC=2".into()],
        &Privileges::default(),
        false,
    ))
    .finish(TIMEOUT);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "entered", "{out:?}");
    let container_net = fs::read_link(format!("/proc/{init}/ns/net")).unwrap();
    assert_eq!(lines[1], container_net.to_str().unwrap());
    assert_ne!(
        Path::new(lines[1]),
        fs::read_link("/proc/self/ns/net").unwrap()
    );
    assert_eq!(lines[2], "1 2", "container env plus exec env: {out:?}");
    assert!(
        lines[3].contains("__berth_init "),
        "pid 1 / proc view: {out:?}"
    );

    let missing = vec!["berth-no-such-command".to_string()];
    let out = Proc::spawn(enter_command(
        helper_exe(),
        init,
        &missing,
        &[],
        &Privileges::default(),
        false,
    ))
    .finish(TIMEOUT);
    assert_eq!(out.code, 127, "{out:?}");
    assert!(
        out.stderr.contains("executable file not found in $PATH"),
        "{out:?}"
    );

    let out = Proc::spawn(enter_command(
        helper_exe(),
        init,
        &["sh".into(), "-c".into(), "exit 3".into()],
        &[],
        &Privileges::default(),
        false,
    ))
    .finish(TIMEOUT);
    assert_eq!(out.code, 3, "{out:?}");
    drop(container);
}

#[test]
fn fresh_netns_has_only_lo() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let out = run(&config(&tmp, &ns, &["cat", "/proc/net/dev"]));
    assert_eq!(out.code, 0, "{out:?}");
    let ifaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out:?}");
}

/// Proves: the read-only sysfs berthd makes with a namespace (`netns::premount_sysfs`) is the
/// very mount on the container's `/sys` (same mount id: attached, not a new one mounted),
/// read-only, showing that namespace's interfaces; and a sysfs that cannot be opened leaves
/// the init mounting its own, as before.
#[test]
fn the_sysfs_made_with_the_namespace_is_the_containers() {
    if !is_root() {
        return;
    }
    let made = berth_kernel::netns::make_netns().unwrap();
    let sysfs = made
        .sysfs
        .as_ref()
        .expect("a sysfs made with the namespace");
    let premade_id = rustix::fs::statx(
        sysfs,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .unwrap()
    .stx_mnt_id;
    let tmp = TempDir::new();
    let ns = Netns::new();
    let mut cfg = config(&tmp, &ns, &[]);
    cfg.netns = Some(berth_kernel::netns::fd_path(&made.fd));
    cfg.sysfs = Some(berth_kernel::netns::fd_path(sysfs));
    // Every mount on /sys (id, parent, options: the one nothing is stacked on is what the
    // container sees), then the interfaces it shows.
    cfg.cmd = [
        "sh",
        "-c",
        "awk '$5 == \"/sys\" {print \"sys\", $1, $2, $6}' /proc/self/mountinfo; ls /sys/class/net",
    ]
    .map(String::from)
    .to_vec();
    // (id, options) of the /sys mount on top.
    let top = |out: &Outcome| -> (String, String) {
        let sys: Vec<Vec<&str>> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("sys "))
            .map(|l| l.split(' ').collect())
            .collect();
        let top = sys
            .iter()
            .find(|m| !sys.iter().any(|o| o.get(1) == m.first()))
            .unwrap_or_else(|| panic!("no /sys mount: {out:?}"));
        (top[0].to_string(), top[2].to_string())
    };
    // Runs the container: the id of its /sys, which is read-only and shows only `lo`.
    let sys_id = |cfg: &InitConfig| -> String {
        let out = run(cfg);
        assert_eq!(out.code, 0, "{out:?}");
        let (id, opts) = top(&out);
        assert!(opts.starts_with("ro,"), "{out:?}");
        let ifaces: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| !l.starts_with("sys "))
            .collect();
        assert_eq!(ifaces, ["lo"], "{out:?}");
        id
    };
    assert_eq!(
        sys_id(&cfg),
        premade_id.to_string(),
        "not the premade mount"
    );
    // Not there: mounted by the init, read-only all the same.
    cfg.sysfs = Some(tmp.0.join("no-such-sysfs"));
    assert_ne!(sys_id(&cfg), premade_id.to_string());
    drop(made);
}

/// A minimal rootfs: dash and the libraries `ldd` names, plus a marker file.
fn make_rootfs(root: &Path) -> Option<()> {
    let sh = fs::canonicalize("/bin/sh").ok()?;
    let ldd = Command::new("ldd").arg(&sh).output().ok()?;
    if !ldd.status.success() {
        return None;
    }
    let mut files = vec![sh.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in &files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).ok()?;
        fs::copy(f, &dest).ok()?;
    }
    fs::create_dir_all(root.join("bin")).ok()?;
    let bin_sh = root.join("bin/sh");
    if !bin_sh.exists() {
        fs::copy(&sh, &bin_sh).ok()?;
    }
    fs::write(root.join("rootfs-marker"), "in-rootfs\n").ok()?;
    Some(())
}

#[test]
fn rootfs_is_chrooted_with_binds_and_proc() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let root = tmp.0.join("rootfs");
    if make_rootfs(&root).is_none() {
        eprintln!("skipping: cannot build a rootfs from /bin/sh and ldd");
        return;
    }
    let hosts = tmp.0.join("hosts");
    fs::write(&hosts, "10.99.0.8 rootfs-bind\n").unwrap();
    let mut cfg = config(
        &tmp,
        &ns,
        &[
            "sh",
            "-c",
            "read l </rootfs-marker; echo $l; read h </etc/hosts; echo $h; \
                       test -e /proc/1/cmdline && echo proc; pwd; exit 4",
        ],
    );
    cfg.rootfs = Some(root.clone());
    cfg.binds = vec![(hosts, "/etc/hosts".into())];
    let out = run(&cfg);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(
        out.stdout, "in-rootfs\n10.99.0.8 rootfs-bind\nproc\n/\n",
        "{out:?}"
    );

    // exec into a running rootfs container sees the rootfs.
    mkfifo(&root.join("wait"), Mode::from_bits_truncate(0o600)).unwrap();
    cfg.cmd = vec!["sh".into(), "-c".into(), "read x </wait".into()];
    fs::remove_file(&cfg.pid_file).unwrap();
    let container = start(&cfg);
    let init = wait_pid_file(&cfg.pid_file);
    let cmd: Vec<String> = ["sh", "-c", "read l </rootfs-marker; echo $l; pwd"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = Proc::spawn(enter_command(
        helper_exe(),
        init,
        &cmd,
        &[],
        &Privileges::default(),
        false,
    ))
    .finish(TIMEOUT);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "in-rootfs\n/\n", "{out:?}");
    drop(container);
    // The missing bind target was created (empty) in the rootfs, not on the host.
    assert_eq!(fs::read(root.join("etc/hosts")).unwrap(), b"");
}

/// A container of `cmd` with a gate: the pipe the test holds both ends of (the init opens
/// its reading end by the test's `/proc/PID/fd/N`), with the guards of its directory and
/// namespace.
struct Gated {
    r: std::io::PipeReader,
    w: std::io::PipeWriter,
    cfg: InitConfig,
    _tmp: TempDir,
    _netns: Netns,
}

fn gated(cmd: &[&str]) -> Gated {
    use std::os::fd::AsRawFd;
    let tmp = TempDir::new();
    let netns = Netns::new();
    let (r, w) = std::io::pipe().unwrap();
    let mut cfg = config(&tmp, &netns, cmd);
    cfg.gate = Some(PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        r.as_raw_fd()
    )));
    Gated {
        r,
        w,
        cfg,
        _tmp: tmp,
        _netns: netns,
    }
}

/// Proves the network gate: with `gate` set, the command does not run (and the pid is not
/// published) while the gate stays shut, however long the root took; the byte written, it
/// runs at once with its output and code.
#[test]
fn the_command_waits_for_its_gate() {
    if !is_root() {
        return;
    }
    let mut g = gated(&["sh", "-c", "echo ran; exit 3"]);
    let mut p = start(&g.cfg);
    // Long enough for the init to assemble the root (a few ms) many times over.
    thread::sleep(Duration::from_millis(500));
    assert!(
        !g.cfg.pid_file.exists(),
        "the container's pid was published before its gate opened"
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the init exited before its gate opened"
    );
    use std::io::Write;
    g.w.write_all(b"1").unwrap();
    let o = p.finish(TIMEOUT);
    assert_eq!((o.code, o.stdout.as_str()), (3, "ran\n"), "{o:?}");
}

/// Proves that a gate closed without its byte (the daemon gave up on the network, or died)
/// fails the start: code 125, the command never ran.
#[test]
fn a_closed_gate_fails_the_start() {
    if !is_root() {
        return;
    }
    let g = gated(&["sh", "-c", "echo ran"]);
    let p = start(&g.cfg);
    thread::sleep(Duration::from_millis(200));
    drop((g.r, g.w));
    let o = p.finish(TIMEOUT);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(!o.stdout.contains("ran"), "the command ran: {o:?}");
    assert!(o.stderr.contains("network"), "{o:?}");
}

/// Proves that a gate whose byte was written, and whose writing end was closed, before the
/// init opened it (a plumbing faster than the init's start) lets the command run.
#[test]
fn a_gate_opened_before_the_init_reads_it_lets_it_run() {
    if !is_root() {
        return;
    }
    let mut g = gated(&["sh", "-c", "echo ran"]);
    use std::io::Write;
    g.w.write_all(b"1").unwrap();
    drop(g.w);
    let o = start(&g.cfg).finish(TIMEOUT);
    assert_eq!((o.code, o.stdout.as_str()), (0, "ran\n"), "{o:?}");
}

/// `cfg` with a start pipe: the test holds both ends (the init opens the writing end by the
/// test's `/proc/PID/fd/N`, as berthd's).
fn with_start_pipe(cfg: &mut InitConfig) -> (std::io::PipeReader, std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    let (r, w) = std::io::pipe().unwrap();
    cfg.started = Some(PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        w.as_raw_fd()
    )));
    (r, w)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Proves the start pipe: stage 1 tells the pid it writes to its pid file on the pipe once
/// the command runs, and `init_pid_from` wakes with it (without stage 1's write it would
/// wait its whole 5 s and answer 0).
#[test]
fn the_start_pipe_tells_the_init_pid() {
    if !is_root() {
        return;
    }
    let tmp = TempDir::new();
    let netns = Netns::new();
    let mut cfg = config(&tmp, &netns, &["sleep", "30"]);
    let (r, w) = with_start_pipe(&mut cfg);
    let p = start(&cfg);
    let stage1 = p.pid().as_raw();
    let told = block_on(berth_kernel::container::init_pid_from(
        r,
        stage1,
        &cfg.pid_file,
    ));
    drop(w);
    assert!(told > 0, "no pid on the start pipe");
    assert_eq!(told, wait_pid_file(&cfg.pid_file));
    assert_ne!(told, stage1);
    kill(p.pid(), Signal::SIGTERM).unwrap();
    let o = p.finish(TIMEOUT);
    assert_eq!(o.code, 143, "{o:?}");
}

/// Proves: after the pid, stage 1 tells the command's exit code on the start pipe (the same
/// code as its exit file and its own exit status), also for a command that exits at once
/// (the code may come in the pid's read); and a stage 1 killed before it could tell leaves
/// `None`, so the caller takes its exit status.
#[test]
fn the_start_pipe_tells_the_exit_code() {
    if !is_root() {
        return;
    }
    for (cmd, want) in [
        (vec!["sh", "-c", "exit 7"], 7),
        (vec!["sh", "-c", "sleep 0.2; exit 3"], 3),
    ] {
        let tmp = TempDir::new();
        let netns = Netns::new();
        let mut cfg = config(&tmp, &netns, &cmd);
        let (r, w) = with_start_pipe(&mut cfg);
        let p = start(&cfg);
        // One runtime for both: the pipe is registered with its reactor.
        let (pid, told) = block_on(async {
            let (pid, pipe) =
                berth_kernel::container::init_pid_and_exit(r, p.pid().as_raw(), &cfg.pid_file)
                    .await;
            drop(w);
            (pid, pipe.expect("the pipe after the pid").code().await)
        });
        assert!(pid > 0, "{cmd:?}: no pid");
        assert_eq!(told, Some(want), "{cmd:?}");
        assert_eq!(
            fs::read_to_string(&cfg.exit_file).unwrap().trim(),
            want.to_string()
        );
        let o = p.finish(TIMEOUT);
        assert_eq!(o.code, want, "{o:?}");
    }
    let tmp = TempDir::new();
    let netns = Netns::new();
    let mut cfg = config(&tmp, &netns, &["sleep", "30"]);
    let (r, w) = with_start_pipe(&mut cfg);
    let p = start(&cfg);
    let stage1 = p.pid();
    let (pid, told) = block_on(async {
        let (pid, pipe) =
            berth_kernel::container::init_pid_and_exit(r, stage1.as_raw(), &cfg.pid_file).await;
        drop(w);
        kill(stage1, Signal::SIGKILL).unwrap();
        (pid, pipe.expect("the pipe").code().await)
    });
    assert!(pid > 0);
    assert_eq!(told, None);
    drop(p); // reaps it
}

/// Proves that a stage 1 that fails before it forks the init (no such network namespace)
/// ends the wait at its exit with 0 (no pid), not after the 5 s timeout: the pipe's writing
/// end is still held by the caller, so only the exit can tell it.
#[test]
fn a_start_pipe_without_a_pid_ends_with_stage_1() {
    if !is_root() {
        return;
    }
    let tmp = TempDir::new();
    let netns = Netns::new();
    let mut cfg = config(&tmp, &netns, &["true"]);
    cfg.netns = Some(tmp.0.join("no-such-netns"));
    let (r, w) = with_start_pipe(&mut cfg);
    let p = start(&cfg);
    let t = Instant::now();
    let told = block_on(berth_kernel::container::init_pid_from(
        r,
        p.pid().as_raw(),
        &cfg.pid_file,
    ));
    let waited = t.elapsed();
    drop(w);
    assert_eq!(told, 0);
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    let o = p.finish(TIMEOUT);
    assert_ne!(o.code, 0, "{o:?}");
}

/// Proves: the mounts under a directory of `detach_under` (berthd's overlay namespaces) are not
/// in the container's mount namespace — a container without a rootfs, which keeps the host's
/// mounts, would otherwise hold a copy of each — while without it they are (the check can fail).
#[test]
fn mounts_under_detach_dirs_are_not_in_the_container() {
    if !is_root() {
        return;
    }
    let (tmp, ns) = (TempDir::new(), Netns::new());
    let held = tmp.0.join("netns").join("ov-0123456789");
    berth_kernel::netns::create_netns(&held).unwrap();
    let shown = held.display().to_string();
    let mut cfg = config(&tmp, &ns, &["cat", "/proc/self/mountinfo"]);
    let out = run(&cfg);
    let without = out.stdout.contains(&shown);
    cfg.detach_under = vec![tmp.0.join("netns"), tmp.0.join("missing")];
    let _ = fs::remove_file(&cfg.pid_file);
    let _ = fs::remove_file(&cfg.exit_file);
    let out = run(&cfg);
    berth_kernel::netns::delete_netns(&held).unwrap();
    assert!(without, "a container without detach_under sees {shown}");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !out.stdout.contains(&shown),
        "{shown} still mounted in the container: {}",
        out.stdout
    );
}
