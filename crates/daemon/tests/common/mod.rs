//! End-to-end harness: a "world" of network namespaces with berthd running inside.
//!
//! A [`World`] is:
//! * `<p>h`, the "host" netns where berthd runs (its own state dir and socket in a temp dir),
//! * `<p>o`, an "outside" netns playing a LAN peer / upstream server, joined to the host by a
//!   veth pair (`uplink` 198.18.N.1/24 in the host, `lan` 198.18.N.2/24 outside),
//! * the containers berthd creates.
//!
//! The machine's own (root) network namespace is never changed: links are created directly in
//! the test namespaces (`ip -n NS link add … peer … netns OTHER`). Everything is removed on drop,
//! also while unwinding from a panic; processes are ended only by PID. Every wait is bounded.

#![allow(dead_code)]

pub mod dns;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Default bound for one CLI call.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the tests can run (they need CAP_SYS_ADMIN and CAP_NET_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that cannot run without root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Running commands with a time bound

/// Runs `cmd` with stdin closed, capturing stdout/stderr; kills it (by PID) after `timeout`.
/// A timed-out command reports exit status 124 (like coreutils' timeout) and a note on stderr.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot spawn {desc}: {e}"),
    };
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => panic!("waiting for {desc}: {e}"),
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A grandchild may hold the pipes open; do not wait for it forever.
    let stdout = join_bounded(t_out, Duration::from_secs(2));
    let mut stderr = join_bounded(t_err, Duration::from_secs(2));
    let status = if timed_out {
        stderr.extend_from_slice(
            format!("\n[harness] TIMED OUT after {timeout:?}: {desc}\n").as_bytes(),
        );
        exit_status(124)
    } else {
        status
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn join_bounded(t: std::thread::JoinHandle<Vec<u8>>, d: Duration) -> Vec<u8> {
    let start = Instant::now();
    while !t.is_finished() {
        if start.elapsed() > d {
            return b"[harness] output pipe still open".to_vec();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    t.join().unwrap_or_default()
}

fn exit_status(code: i32) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(code << 8)
}

/// Runs a program with arguments (bounded by [`CMD_TIMEOUT`]).
pub fn sh(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    run_timeout(c, CMD_TIMEOUT)
}

/// Like [`sh`] but panics with the output unless the command succeeds.
pub fn sh_ok(prog: &str, args: &[&str]) -> String {
    let o = sh(prog, args);
    assert!(o.status.success(), "{prog} {args:?} failed: {}", show(&o));
    stdout(&o)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code (-1 when killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A one-line-ish description of an output, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit={} stdout={:?} stderr={:?}",
        code(o),
        stdout(o),
        stderr(o)
    )
}

// ---------------------------------------------------------------------------------------------
// Binaries

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters), so that any string, control characters included, reaches berthd as is.
pub fn percent_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The berthd binary cargo built for these tests.
pub fn berthd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berthd"))
}

/// The `berth` CLI next to berthd, as users run it: the front (crates/front), which answers
/// `network connect` / `disconnect` itself and hands the rest to `berth-cli` beside it.
/// `cargo test` only builds binaries of packages that have integration tests, so the pair is
/// (re)built here when either is missing or older than its sources (as
/// `crates/front/install.sh` builds it) — once per test process, serialized across processes
/// by a lock file.
pub fn berth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = berthd_bin().parent().expect("target dir").join("berth");
        if needs_build(&bin) {
            build_cli(&bin);
        }
        for b in [bin.clone(), bin.with_file_name("berth-cli")] {
            assert!(
                b.exists(),
                "the berth CLI is missing at {} and could not be built \
                 (run `crates/front/install.sh debug`)",
                b.display()
            );
        }
        bin
    })
    .clone()
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(p);
            } else if let Ok(m) = md.modified() {
                if newest.is_none_or(|n| m > n) {
                    newest = Some(m);
                }
            }
        }
    }
    newest
}

/// Whether the front (`bin`) or `berth-cli` beside it is missing or older than its sources.
fn needs_build(bin: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stale = |bin: &Path, sources: &[&str]| {
        let Ok(bin_m) = fs::metadata(bin).and_then(|m| m.modified()) else {
            return true;
        };
        sources
            .iter()
            .filter_map(|d| newest_mtime(&root.join(d)))
            .any(|src| src > bin_m)
    };
    stale(bin, &["crates/front"])
        || stale(
            &bin.with_file_name("berth-cli"),
            &["crates/cli", "crates/api"],
        )
}

fn build_cli(bin: &Path) {
    let lock_path = bin.with_file_name(".berth-e2e-cli-build.lock");
    // Bounded wait for the lock (another test process may be building).
    let start = Instant::now();
    let flock = loop {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("open build lock file");
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => break Some(l),
            Err(_) if start.elapsed() < Duration::from_secs(900) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(_) => break None,
        }
    };
    if !needs_build(bin) {
        return; // someone else built it while we waited
    }
    // The pair as run.sh and .ci/run build it, in the profile of the tests' own binaries
    // (`cargo` alone would build a debug pair and leave the stale target/release/berth this
    // harness runs); the script uses the `cargo` of these tests ($CARGO).
    let profile = match bin.parent().and_then(|d| d.file_name()) {
        Some(d) if d == "release" => "release",
        _ => "debug",
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut c = Command::new(Path::new(root).join("crates/front/install.sh"));
    c.arg(profile).current_dir(root);
    if let Some(target) = bin.parent().and_then(Path::parent) {
        c.env("CARGO_TARGET_DIR", target);
    }
    let o = run_timeout(c, Duration::from_secs(900));
    if !o.status.success() {
        eprintln!(
            "[harness] crates/front/install.sh {profile} failed: {}",
            show(&o)
        );
    }
    drop(flock);
}

// ---------------------------------------------------------------------------------------------
// Python helpers, written into every world's temp dir (containers see the host filesystem).

const PROBE_PY: &str = r#"
import socket, sys
# probe.py HOST PORT TIMEOUT [MESSAGE]: connect, send MESSAGE (if any), print the reply.
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
msg = sys.argv[4] if len(sys.argv) > 4 else None
try:
    s = socket.create_connection((host, port), timeout=timeout)
    if msg is not None:
        s.sendall(msg.encode())
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    sys.stdout.write(data.decode(errors="replace"))
except Exception as e:
    sys.stderr.write("probe %s:%s failed: %r\n" % (host, port, e))
    sys.exit(1)
"#;

const PEER_SERVER_PY: &str = r#"
import socket, sys
# peer_server.py ADDR PORT: reply to every TCP connection with the peer's address.
addr, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(64)
while True:
    c, peer = s.accept()
    try:
        c.settimeout(2)
        c.sendall(("%s\n" % peer[0]).encode())
    except Exception:
        pass
    finally:
        c.close()
"#;

const HTTP_GET_PY: &str = r#"
import sys, urllib.request
# http_get.py URL TIMEOUT: print the body, exit 1 on any failure.
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))
    sys.stdout.write("%d\n" % r.status)
    sys.stdout.write(r.read().decode(errors="replace"))
except Exception as e:
    sys.stderr.write("GET %s failed: %r\n" % (sys.argv[1], e))
    sys.exit(1)
"#;

// ---------------------------------------------------------------------------------------------
// The world

fn ns_inode(name: &str) -> Option<u64> {
    fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// A throwaway world; see the module doc.
pub struct World {
    /// Unique prefix (`bt<pid>-<n>`).
    pub prefix: String,
    /// The host netns (berthd runs here).
    pub host_ns: String,
    /// The outside netns.
    pub out_ns: String,
    /// N of 198.18.N.0/24.
    pub n: u8,
    /// The world's temp dir.
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    berth: PathBuf,
    daemon: Mutex<Option<Child>>,
    spawned: Mutex<Vec<Child>>,
    ns_inodes: Vec<u64>,
    /// The PID of the process holding berthd's mount namespace across its restarts, once
    /// [`World::keep_mounts`] made one.
    mnt_holder: Mutex<Option<u32>>,
}

impl World {
    /// Builds the namespaces and starts berthd (panics, after cleaning up, if it fails).
    pub fn new() -> World {
        let berth = berth_bin();
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("bt{pid}-{c}");
        assert!(prefix.len() < 15, "netns name too long: {prefix}");
        let n = u8::try_from((pid as usize * 7 + c) % 250 + 1).expect("N fits");
        // Not under /tmp (containers get a private /tmp, and the helpers here must be visible
        // to them); the socket has a directory of its own, which berthd hides from containers.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("berth-e2e-{prefix}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create world dir");
        let mut w = World {
            host_ns: format!("{prefix}h"),
            out_ns: format!("{prefix}o"),
            prefix,
            n,
            state_dir: dir.join("state"),
            socket: dir.join("run").join("berthd.sock"),
            log: dir.join("berthd.log"),
            dir,
            berth,
            daemon: Mutex::new(None),
            spawned: Mutex::new(Vec::new()),
            ns_inodes: Vec::new(),
            mnt_holder: Mutex::new(None),
        };
        for (name, text) in [
            ("probe.py", PROBE_PY),
            ("peer_server.py", PEER_SERVER_PY),
            ("http_get.py", HTTP_GET_PY),
        ] {
            fs::write(w.dir.join(name), text).expect("write helper");
        }
        // From here on, Drop cleans up whatever was made.
        sh_ok("ip", &["netns", "add", &w.host_ns]);
        sh_ok("ip", &["netns", "add", &w.out_ns]);
        w.ns_inodes = [&w.host_ns, &w.out_ns]
            .iter()
            .filter_map(|n| ns_inode(n))
            .collect();
        let (h, o) = (w.host_ns.clone(), w.out_ns.clone());
        let host_addr = format!("{}/24", w.host_ip());
        let out_addr = format!("{}/24", w.out_ip());
        sh_ok("ip", &["-n", &h, "link", "set", "lo", "up"]);
        sh_ok("ip", &["-n", &o, "link", "set", "lo", "up"]);
        sh_ok(
            "ip",
            &[
                "-n", &h, "link", "add", "uplink", "type", "veth", "peer", "name", "lan", "netns",
                &o,
            ],
        );
        sh_ok(
            "ip",
            &["-n", &h, "addr", "add", &host_addr, "dev", "uplink"],
        );
        sh_ok("ip", &["-n", &o, "addr", "add", &out_addr, "dev", "lan"]);
        sh_ok("ip", &["-n", &h, "link", "set", "uplink", "up"]);
        sh_ok("ip", &["-n", &o, "link", "set", "lan", "up"]);
        // The outside peer is the host's upstream router.
        sh_ok(
            "ip",
            &["-n", &h, "route", "add", "default", "via", &w.out_ip()],
        );
        w.start_daemon();
        w
    }

    /// 198.18.N.1, the host's address on its uplink.
    pub fn host_ip(&self) -> String {
        format!("198.18.{}.1", self.n)
    }

    /// 198.18.N.2, the outside peer.
    pub fn out_ip(&self) -> String {
        format!("198.18.{}.2", self.n)
    }

    /// Path of a helper script in the world dir.
    pub fn helper(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    // --- daemon ---------------------------------------------------------------------------

    fn start_daemon(&self) {
        self.start_daemon_with(&[]);
    }

    /// Starts berthd (stopped before: [`World::stop_daemon`]) on the same state with `extra`
    /// options.
    pub fn start_daemon_with(&self, extra: &[&str]) {
        let _ = fs::remove_file(&self.socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open berthd log");
        let child = self
            .daemon_command()
            .arg(berthd_bin())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", DAEMON_LOG_LEVEL])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        *self.daemon.lock().expect("daemon lock") = Some(child);
        // Wait (bounded) until the socket accepts connections.
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(st) = self
                .daemon
                .lock()
                .expect("daemon lock")
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "berthd exited during start-up ({st}); log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "berthd's socket {} did not come up within 10 s; log:\n{}",
                    self.socket.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops berthd by PID: SIGKILL at once (`kill9`) or SIGTERM, then SIGKILL after 5 s.
    pub fn stop_daemon(&self, kill9: bool) {
        let Some(mut child) = self.daemon.lock().expect("daemon lock").take() else {
            return;
        };
        // `ip netns exec` execs berthd in place, so the child's PID is berthd's.
        let pid = Pid::from_raw(child.id() as i32);
        if kill9 {
            let _ = kill(pid, Signal::SIGKILL);
        } else {
            let _ = kill(pid, Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("[harness] berthd did not exit within 5 s of SIGTERM; SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PID of the running berthd.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon
            .lock()
            .expect("daemon lock")
            .as_ref()
            .map(|c| c.id())
    }

    /// Whether berthd is still running.
    pub fn daemon_alive(&self) -> bool {
        self.daemon
            .lock()
            .expect("daemon lock")
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops berthd (SIGKILL if `kill9`, else graceful) and starts it again on the same state.
    pub fn restart_daemon(&self, kill9: bool) {
        self.restart_daemon_with(kill9, || {});
    }

    /// Like [`World::restart_daemon`], running `while_down` while berthd is not running.
    pub fn restart_daemon_with(&self, kill9: bool, while_down: impl FnOnce()) {
        self.stop_daemon(kill9);
        while_down();
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(f, "==== [harness] restart (kill9={kill9}) ====")
            });
        self.start_daemon();
    }

    /// berthd's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    // --- CLIs -----------------------------------------------------------------------------

    /// The socket as a `-H`/`DOCKER_HOST` value.
    pub fn host_url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `berth -H unix://SOCK ARGS…` from the root netns (it only talks to the socket).
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_timeout(args, CMD_TIMEOUT)
    }

    pub fn berth_timeout(&self, args: &[&str], t: Duration) -> Output {
        let mut c = Command::new(&self.berth);
        c.arg("-H").arg(self.host_url()).args(args);
        c.env_remove("BERTH_HOST");
        run_timeout(c, t)
    }

    /// `berth …` that must succeed; returns stdout.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        let o = self.berth(args);
        assert!(o.status.success(), "berth {args:?} failed: {}", show(&o));
        stdout(&o)
    }

    /// The stock docker CLI against berthd's socket.
    pub fn docker(&self, args: &[&str]) -> Output {
        run_timeout(self.docker_command(args), CMD_TIMEOUT)
    }

    /// The stock docker CLI's command line against berthd's socket, to run as the test likes.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", self.host_url())
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?} failed: {}", show(&o));
        stdout(&o)
    }

    // --- namespaces -----------------------------------------------------------------------

    /// From now on berthd runs, across its restarts, in one mount namespace of the world's
    /// (a copy of `ip netns exec`'s, held by a process of the harness), as on a host where it
    /// runs in the machine's own: the mounts it keeps under its run directory (the overlay
    /// networks' namespaces) outlive a restart, kill -9 included. Without it, each start's
    /// `ip netns exec` makes a new mount namespace that dies with berthd.
    pub fn keep_mounts(&self) {
        let mut g = self.mnt_holder.lock().expect("holder lock");
        if g.is_some() {
            return;
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &self.host_ns])
            .args(["unshare", "--mount", "--propagation", "slave", "--"])
            .args(["sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn the mount namespace's holder");
        let pid = child.id();
        self.spawned.lock().expect("spawned lock").push(child);
        // Every exec is in place: the PID is sleep's once the namespace is made.
        let start = Instant::now();
        while fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim() != "sleep")
            .unwrap_or(true)
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the mount namespace's holder did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        *g = Some(pid);
    }

    /// The command that runs what follows it as berthd: in the host netns, in the kept mount
    /// namespace once [`World::keep_mounts`] made one.
    fn daemon_command(&self) -> Command {
        match *self.mnt_holder.lock().expect("holder lock") {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-m", "-n", "--"]);
                c
            }
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.host_ns]);
                c
            }
        }
    }

    /// Runs `cmd` in overlay network `network_id`'s namespace on this host (berthd's
    /// `RUNDIR/netns/ov-<9 hex>`, mounted in berthd's mount namespace: needs
    /// [`World::keep_mounts`]).
    pub fn ov_exec(&self, network_id: &str, cmd: &[&str]) -> Output {
        let pid = self
            .mnt_holder
            .lock()
            .expect("holder lock")
            .expect("ov_exec needs keep_mounts");
        let path = self
            .socket
            .parent()
            .expect("socket dir")
            .join("netns")
            .join(format!("ov-{}", &network_id[..9]));
        let mut c = Command::new("nsenter");
        c.args(["-t", &pid.to_string(), "-m", "--", "nsenter"])
            .arg(format!("--net={}", path.display()))
            .arg("--")
            .args(cmd);
        run_timeout(c, CMD_TIMEOUT)
    }

    /// [`World::ov_exec`], which must succeed; its output.
    pub fn ov_exec_ok(&self, network_id: &str, cmd: &[&str]) -> String {
        let o = self.ov_exec(network_id, cmd);
        assert!(
            o.status.success(),
            "in overlay namespace of {network_id}: {cmd:?} failed: {}",
            show(&o)
        );
        stdout(&o)
    }

    /// Runs `cmd` inside netns `ns` (bounded).
    pub fn ns_exec(&self, ns: &str, cmd: &[&str]) -> Output {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(cmd);
        run_timeout(c, CMD_TIMEOUT)
    }

    pub fn ns_exec_ok(&self, ns: &str, cmd: &[&str]) -> String {
        let o = self.ns_exec(ns, cmd);
        assert!(o.status.success(), "in {ns}: {cmd:?} failed: {}", show(&o));
        stdout(&o)
    }

    /// `ip ARGS…` in the host netns.
    pub fn host_ip_cmd(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.host_ns.as_str()];
        a.extend_from_slice(args);
        sh_ok("ip", &a)
    }

    /// Names of the host netns's links.
    pub fn host_links(&self) -> Vec<String> {
        self.host_ip_cmd(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// `nft list table inet berth` in the host netns ("" if there is none).
    pub fn nft_table(&self) -> String {
        let o = self.ns_exec(&self.host_ns, &["nft", "list", "table", "inet", "berth"]);
        stdout(&o)
    }

    /// Starts a long-running process inside `ns`; it is killed by PID when the world drops.
    /// Returns its PID (`ip netns exec` execs the command in place).
    pub fn spawn_in(&self, ns: &str, cmd: &[&str]) -> u32 {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("spawned.log"))
            .expect("open spawned.log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn in netns");
        let pid = child.id();
        self.spawned.lock().expect("spawned lock").push(child);
        pid
    }

    /// Waits (≤ 10 s) until something accepts TCP connections at addr:port inside `ns`.
    pub fn wait_port(&self, ns: &str, addr: &str, port: u16) {
        let start = Instant::now();
        let port_s = port.to_string();
        let probe = self.helper("probe.py");
        loop {
            let o = self.ns_exec(ns, &["python3", &probe, addr, &port_s, "1"]);
            if o.status.success() {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "nothing listens on {addr}:{port} in {ns} after 10 s: {}",
                    show(&o)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connects from inside `ns` with a plain socket: `Ok(reply)` or `Err(why)`.
    pub fn tcp_from_ns(
        &self,
        ns: &str,
        addr: &str,
        port: u16,
        timeout_s: f64,
    ) -> Result<String, String> {
        self.probe(|args| self.ns_exec(ns, args), addr, port, timeout_s)
    }

    /// Runs the TCP probe helper through `run` (in a namespace or a container).
    fn probe(
        &self,
        run: impl FnOnce(&[&str]) -> Output,
        addr: &str,
        port: u16,
        timeout_s: f64,
    ) -> Result<String, String> {
        let helper = self.helper("probe.py");
        let (port, timeout) = (port.to_string(), timeout_s.to_string());
        let o = run(&["python3", &helper, addr, &port, &timeout]);
        if o.status.success() {
            Ok(stdout(&o))
        } else {
            Err(show(&o))
        }
    }

    // --- containers -----------------------------------------------------------------------

    /// `berth run -d --name NAME ARGS…`, panicking on failure; returns the container id.
    pub fn run_d(&self, name: &str, opts: &[&str], cmd: &[&str]) -> String {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(opts);
        a.extend_from_slice(cmd);
        let out = self.berth_ok(&a);
        let id = out.trim().to_string();
        self.wait_running(name);
        id
    }

    /// `berth trace ARGS --format json`: (exit code, journey).
    pub fn trace_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut a = vec!["trace"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "json"]);
        let o = self.berth(&a);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("berth {a:?}: {e}: {}", show(&o)));
        (code(&o), v)
    }

    /// `inspect NAME` parsed (the first element of the array).
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        // `--type container`: a name like `c6` is also a prefix of some network ids.
        let out = self.berth_ok(&["inspect", "--type", "container", name]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {name}: {e}: {out}"));
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("inspect {name}: empty array: {out}"))
    }

    /// `.NetworkSettings.Networks.<net>.IPAddress` of a container ("" if not connected).
    pub fn ip_of(&self, name: &str, net: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (≤ 10 s) until `inspect` reports the container running.
    pub fn wait_running(&self, name: &str) {
        let start = Instant::now();
        loop {
            let v = self.inspect(name);
            if v["State"]["Running"].as_bool() == Some(true) {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "container {name} not running after 10 s: State={}",
                    v["State"]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `berth exec NAME CMD…`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", name];
        a.extend_from_slice(cmd);
        self.berth(&a)
    }

    pub fn exec_ok(&self, name: &str, cmd: &[&str]) -> String {
        let o = self.exec(name, cmd);
        assert!(
            o.status.success(),
            "exec {name} {cmd:?} failed: {}",
            show(&o)
        );
        stdout(&o)
    }

    /// Starts a detached container running the peer-address TCP server on `port`.
    pub fn run_server(&self, name: &str, opts: &[&str], port: u16) -> String {
        let helper = self.helper("peer_server.py");
        let p = port.to_string();
        self.run_d(name, opts, &["python3", &helper, "0.0.0.0", &p])
    }

    /// Waits (≤ 10 s) until the server inside container `name` answers on 127.0.0.1:port.
    pub fn wait_container_port(&self, name: &str, port: u16) {
        let start = Instant::now();
        let p = port.to_string();
        let probe = self.helper("probe.py");
        loop {
            let o = self.exec(name, &["python3", &probe, "127.0.0.1", &p, "1"]);
            if o.status.success() {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "container {name}: nothing on 127.0.0.1:{port} after 10 s: {}",
                    show(&o)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// From container `from`, connects to addr:port: `Ok(reply)` or `Err(details)`.
    pub fn tcp_from(
        &self,
        from: &str,
        addr: &str,
        port: u16,
        timeout_s: f64,
    ) -> Result<String, String> {
        self.probe(|args| self.exec(from, args), addr, port, timeout_s)
    }

    /// Asserts that `from` reaches addr:port (connection and reply).
    pub fn assert_reaches(&self, from: &str, addr: &str, port: u16) -> String {
        match self.tcp_from(from, addr, port, 3.0) {
            Ok(r) => r,
            Err(e) => panic!("{from} should reach {addr}:{port} but: {e}"),
        }
    }

    /// Asserts that `from` does NOT reach addr:port within a short timeout.
    /// The probe itself must have run and reported the failure (exit 1 with its message), so
    /// a broken exec or a missing python does not pass for a blocked connection.
    pub fn assert_blocked(&self, from: &str, addr: &str, port: u16) {
        let o = self.exec(
            from,
            &[
                "python3",
                &self.helper("probe.py"),
                addr,
                &port.to_string(),
                "1.5",
            ],
        );
        assert!(
            !o.status.success(),
            "{from} must NOT reach {addr}:{port}, but it got a reply: {}",
            show(&o)
        );
        assert!(
            code(&o) == 1 && stderr(&o).contains(&format!("probe {addr}:{port} failed")),
            "{from} -> {addr}:{port}: the probe did not run properly: {}",
            show(&o)
        );
    }

    /// All container ids (`ps -a -q --no-trunc`).
    pub fn container_ids(&self) -> Vec<String> {
        let o = self.berth_timeout(&["ps", "-a", "-q", "--no-trunc"], Duration::from_secs(15));
        stdout(&o)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// `network ls` output (for "nothing changed" checks).
    pub fn network_ls(&self) -> String {
        self.berth_ok(&["network", "ls", "--no-trunc"])
    }

    // --- cleanup --------------------------------------------------------------------------

    /// Processes that belong to this world: cmdline mentions the world dir (container inits,
    /// helpers), or they live in one of the world's namespaces, plus all their descendants.
    fn world_pids(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let dir = self.dir.display().to_string();
        let mut parent: HashMap<i32, i32> = HashMap::new();
        let mut seeds: BTreeSet<i32> = BTreeSet::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                // pid (comm) state ppid …; comm may contain spaces/parens.
                if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                    if let Some(pp) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                        parent.insert(pid, pp);
                    }
                }
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                seeds.insert(pid);
                continue;
            }
            if let Ok(md) = fs::metadata(format!("/proc/{pid}/ns/net")) {
                if self.ns_inodes.contains(&md.ino()) {
                    seeds.insert(pid);
                }
            }
        }
        // Add descendants.
        let mut all = seeds.clone();
        loop {
            let before = all.len();
            for (&pid, &pp) in &parent {
                if all.contains(&pp) && pid != me {
                    all.insert(pid);
                }
            }
            if all.len() == before {
                break;
            }
        }
        all.into_iter().collect()
    }

    fn kill_leftovers(&self) {
        for round in 0..20 {
            let pids = self.world_pids();
            if pids.is_empty() {
                return;
            }
            if round == 0 {
                eprintln!(
                    "[harness] {}: killing leftover processes {pids:?}",
                    self.prefix
                );
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "[harness] {}: some processes would not die: {:?}",
            self.prefix,
            self.world_pids()
        );
    }
}

/// berthd's own debug lines, without the etcd client's transport chatter (h2 frames,
/// connection pools): a failing test prints the whole log, and CI shows only its start.
const DAEMON_LOG_LEVEL: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info";

impl Drop for World {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "==== berthd log of world {} ({}) ====\n{}\n==== end of berthd log ====",
                self.prefix,
                self.log.display(),
                self.log_text()
            );
            if let Ok(s) = fs::read_to_string(self.dir.join("spawned.log")) {
                eprintln!("==== spawned processes' output ====\n{s}\n====");
            }
        }
        // Remove every container through the API (bounded), while berthd is alive.
        if self.daemon_alive() {
            let ids = self.container_ids();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids.iter().map(String::as_str));
                let o = self.berth_timeout(&a, Duration::from_secs(30));
                if !o.status.success() {
                    eprintln!("[harness] {}: rm -f failed: {}", self.prefix, show(&o));
                }
            }
        }
        self.stop_daemon(false);
        // Our own helper servers, by PID.
        for mut c in self
            .spawned
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_leftovers();
        for ns in [&self.host_ns, &self.out_ns] {
            if Path::new("/run/netns").join(ns).exists() {
                let o = sh("ip", &["netns", "del", ns]);
                if !o.status.success() {
                    eprintln!("[harness] ip netns del {ns}: {}", show(&o));
                }
            }
        }
        if std::env::var_os("BERTH_E2E_KEEP").is_none() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("[harness] removing {}: {e}", self.dir.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon arguments (embedded DNS tests)

impl World {
    /// Restarts berthd gracefully with `extra` arguments after the usual ones (e.g.
    /// `--resolv-conf PATH`, so its upstream resolvers are test servers, never the machine's).
    /// A later [`World::restart_daemon`] starts it without them again.
    pub fn restart_daemon_args(&self, extra: &[&str]) {
        self.restart_daemon_prefixed(&[], extra);
    }

    /// Restarts berthd (as [`World::restart_daemon_args`] with no arguments) with `file`
    /// bind-mounted over `target` in its mount namespace only (the one `ip netns exec` makes,
    /// whose mounts never reach the machine's): its containers, which see berthd's view of the
    /// filesystem, find `file` there.
    pub fn restart_daemon_with_bind(&self, file: &Path, target: &str) {
        let file = file.display().to_string();
        self.restart_daemon_prefixed(
            &[
                "sh",
                "-c",
                r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#,
                "sh",
                &file,
                target,
            ],
            &[],
        );
    }

    /// Restarts berthd gracefully, started through `prefix` (a command that ends by exec'ing
    /// its arguments, so the child's PID stays berthd's) with `extra` arguments.
    fn restart_daemon_prefixed(&self, prefix: &[&str], extra: &[&str]) {
        self.stop_daemon(false);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open berthd log");
        let child = self
            .daemon_command()
            .args(prefix)
            .arg(berthd_bin())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", DAEMON_LOG_LEVEL])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        *self.daemon.lock().expect("daemon lock") = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                self.daemon_alive(),
                "berthd {extra:?} exited during start-up; log:\n{}",
                self.log_text()
            );
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "berthd {extra:?}: socket not up within 10 s; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciler tests: berthd with extra environment (failpoints), the raw API, kernel views.

/// [`InitProc::stage`] of stage 2 (a fork of stage 1, with its command line).
pub const STAGE2: &str = "stage 2";

/// A process of a container's init (`__berth_init` stage 1, or its fork stage 2).
#[derive(Debug, Clone)]
pub struct InitProc {
    pub pid: i32,
    /// `__berth_init` (stage 1) or [`STAGE2`].
    pub stage: String,
    /// The whole command line, NULs replaced by spaces.
    pub cmdline: String,
}

impl World {
    /// Restarts berthd (SIGKILL if `kill9`, else gracefully) with extra environment variables,
    /// e.g. `[("BERTH_FAILPOINT", "connect:2")]`. A later [`World::restart_daemon`] starts it
    /// without them again. Panics if berthd exits during start-up.
    pub fn restart_daemon_env(&self, kill9: bool, env: &[(&str, &str)]) {
        if let Err(e) = self.try_restart_daemon_full(kill9, &[], env) {
            panic!("{e}");
        }
    }

    /// Like [`World::restart_daemon`] (no extra arguments or environment), but a berthd that
    /// does not come up is reported by a panic raised outside the daemon lock, so the world
    /// still cleans up.
    pub fn restart_daemon_checked(&self, kill9: bool) {
        if let Err(e) = self.try_restart_daemon_full(kill9, &[], &[]) {
            panic!("{e}");
        }
    }

    /// Like [`World::restart_daemon_args`] and [`World::restart_daemon_env`] together; returns
    /// `Err(why, with the log)` instead of panicking when berthd does not come up.
    /// berthd runs with a core-size limit of 0 (a failpoint aborts it; no core files).
    pub fn try_restart_daemon_full(
        &self,
        kill9: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), String> {
        self.stop_daemon(kill9);
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| {
                use std::io::Write;
                writeln!(
                    f,
                    "==== [harness] restart (kill9={kill9}) args {extra:?} env {env:?} ===="
                )
            });
        let _ = fs::remove_file(&self.socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open berthd log");
        // `ip netns exec` (or `nsenter`) and `prlimit` both exec in place: the child's PID
        // is berthd's.
        let child = self
            .daemon_command()
            .args(["prlimit", "--core=0", "--"])
            .arg(berthd_bin())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--log-level", DAEMON_LOG_LEVEL])
            .args(extra)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        *self.daemon.lock().expect("daemon lock") = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if !self.daemon_alive() {
                return Err(format!(
                    "berthd {extra:?} {env:?} exited during start-up; log:\n{}",
                    self.log_text()
                ));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "berthd {extra:?} {env:?}: socket not up within 10 s; log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits (bounded) for berthd to exit on its own; returns its exit status, or `None` if it
    /// is still running after `timeout` (or was not started by the harness).
    pub fn wait_daemon_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            {
                let mut g = self.daemon.lock().expect("daemon lock");
                let c = g.as_mut()?;
                if let Ok(Some(st)) = c.try_wait() {
                    return Some(st);
                }
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Calls berthd's API directly (curl on the unix socket, bounded): `(HTTP status, body)`.
    /// Status 0 means no HTTP answer at all (connection refused or reset, e.g. berthd died).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api_data(method, path, body.map(|b| ("-d", b)))
    }

    /// [`World::api`] with the body as a curl data argument: `("-d", TEXT)`, or
    /// `("--data-binary", "@FILE")` for a body too large for a command line.
    pub fn api_data(&self, method: &str, path: &str, data: Option<(&str, &str)>) -> (u16, String) {
        let url = format!("http://localhost{path}");
        let sock = self.socket.display().to_string();
        let mut a = vec![
            "-s",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            sock.as_str(),
            "-X",
            method,
        ];
        if let Some((flag, b)) = data {
            a.extend(["-H", "Content-Type: application/json", flag, b]);
        }
        a.push(url.as_str());
        let o = sh("curl", &a);
        let out = stdout(&o);
        let (text, status) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
        (status.trim().parse().unwrap_or(0), text.to_string())
    }

    /// Panics unless `berth system check` passes within 5 s (a veth of a removed container may
    /// still be on its way out): the kernel agrees with what berthd stored.
    pub fn assert_in_sync(&self, after: &str) {
        let mut last = None;
        for _ in 0..20 {
            let o = self.system_check(&[]);
            if o.status.success() {
                return;
            }
            last = Some(o);
            std::thread::sleep(Duration::from_millis(250));
        }
        if let Some(o) = last {
            panic!("out of sync after {after}: {}", show(&o));
        }
    }

    /// `berth system check [ARGS…]` (bounded).
    pub fn system_check(&self, args: &[&str]) -> Output {
        let mut a = vec!["system", "check"];
        a.extend_from_slice(args);
        self.berth(&a)
    }

    /// The host netns's links as `(name, ifalias)` (`ip -o -d link show`).
    pub fn host_link_aliases(&self) -> Vec<(String, Option<String>)> {
        self.host_ip_cmd(&["-o", "-d", "link", "show"])
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                let name = name.split('@').next().unwrap_or(name).to_string();
                // `ip -o` joins the lines with `\`; the alias is `alias TEXT` up to the next one.
                let alias = l
                    .split('\\')
                    .map(str::trim)
                    .find_map(|part| part.strip_prefix("alias ").map(|a| a.trim().to_string()));
                Some((name, alias))
            })
            .collect()
    }

    /// The pid of running container `name`'s command (inspect's `State.Pid`), asserted > 0.
    pub fn pid(&self, name: &str) -> i64 {
        let pid = self.inspect(name)["State"]["Pid"].as_i64().unwrap_or(0);
        assert!(pid > 0, "{name} has no pid");
        pid
    }

    /// Runs `cmd` in the network namespace of process `pid` (`nsenter -t PID -n`, bounded).
    pub fn pid_net_exec(&self, pid: i64, cmd: &[&str]) -> Output {
        let p = pid.to_string();
        let mut a = vec!["-t", p.as_str(), "-n"];
        a.extend_from_slice(cmd);
        sh("nsenter", &a)
    }

    /// Container init processes of this world (stage 1 and stage 2; their command line names
    /// the world's state dir).
    pub fn init_procs(&self) -> Vec<InitProc> {
        let dir = self.state_dir.display().to_string();
        let mut v = Vec::new();
        let Ok(rd) = fs::read_dir("/proc") else {
            return v;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let Some(stage) = args.get(1) else { continue };
            if !stage.starts_with("__berth_init") {
                continue;
            }
            let cmdline = args.join(" ");
            if !cmdline.contains(&dir) {
                continue;
            }
            // A zombie has an empty cmdline, so it never gets here.
            v.push(InitProc {
                pid,
                stage: stage.clone(),
                cmdline,
            });
        }
        // Stage 2 is a fork of stage 1 with its command line: told apart by its parent.
        let pids: std::collections::BTreeSet<i32> = v.iter().map(|p| p.pid).collect();
        for p in v.iter_mut() {
            if berth_kernel::container::parent_pid(p.pid).is_some_and(|pp| pids.contains(&pp)) {
                p.stage = STAGE2.to_string();
            }
        }
        v
    }
}

impl World {
    /// `network inspect NAME` parsed (the first element of the array).
    pub fn network_inspect(&self, name: &str) -> serde_json::Value {
        let out = self.berth_ok(&["network", "inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("network inspect {name}: {e}: {out}"));
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("network inspect {name}: empty array: {out}"))
    }

    /// The bridge of network `net`: its `com.docker.network.bridge.name` option, else `berth0`
    /// for the predefined `bridge` network, else `berth-<first 9 of its id>`.
    pub fn bridge_of(&self, net: &str) -> String {
        let v = self.network_inspect(net);
        bridge_of_inspect(&v)
    }

    /// The host-side veth of `container`'s endpoint on `net`: the host link whose `berth:` alias
    /// names the endpoint id, else `vb<first 12 of the endpoint id>` (berth's naming). Panics
    /// when the container has no endpoint on `net`.
    pub fn host_veth_of(&self, container: &str, net: &str) -> String {
        let v = self.inspect(container);
        let ep = v["NetworkSettings"]["Networks"][net]["EndpointID"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            ep.len() >= 12,
            "{container} has no endpoint on {net}: {}",
            v["NetworkSettings"]
        );
        host_veth_for_endpoint(&self.host_link_aliases(), &ep)
    }
}

/// See [`World::bridge_of`]; `v` is one element of `network inspect`.
pub fn bridge_of_inspect(v: &serde_json::Value) -> String {
    if let Some(b) = v["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .filter(|b| !b.is_empty())
    {
        return b.to_string();
    }
    let id = v["Id"].as_str().unwrap_or("");
    if v["Name"].as_str() == Some("bridge") {
        return "berth0".to_string();
    }
    format!("berth-{}", id.get(..9).unwrap_or(id))
}

/// See [`World::host_veth_of`]; `links` from [`World::host_link_aliases`].
pub fn host_veth_for_endpoint(links: &[(String, Option<String>)], endpoint_id: &str) -> String {
    let short = endpoint_id.get(..12).unwrap_or(endpoint_id);
    let named = format!("vb{short}");
    if links.iter().any(|(name, _)| *name == named) {
        return named;
    }
    links
        .iter()
        .find(|(_, alias)| {
            alias
                .as_deref()
                .is_some_and(|a| a.starts_with("berth:") && a.contains(short))
        })
        .map_or(named, |(name, _)| name.clone())
}

/// A trace journey's hops as (from, to, what).
pub fn journey_hops(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["hops"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let f = |k: &str| h[k].as_str().unwrap_or("").to_string();
                    (f("from"), f("to"), f("what"))
                })
                .collect()
        })
        .unwrap_or_default()
}
