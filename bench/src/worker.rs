//! A timing worker that runs inside a bench "host" namespace.
//!
//! The peers must run inside the bench's host namespace through `ip netns exec` (which also
//! gives them a private mount namespace with that namespace's `/sys`). Instead of paying
//! `ip netns exec` on every timed call, the bench starts itself once per host namespace as
//! `ip netns exec HOST berth-bench __worker`; the worker reads one [`Request`] per line on stdin,
//! runs it and answers one [`Response`] per line, timed with `Instant` around spawn → exit, like
//! peers.md's `$EPOCHREALTIME` around each process. It exits at end of input.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::guard::{Netns, Proc, PEER_PATH};

/// The argument that makes the binary a worker.
pub const WORKER_ARG: &str = "__worker";

/// One process to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment on top of `PATH` and an empty `DBUS_SYSTEM_BUS_ADDRESS` (nothing else is
    /// inherited).
    pub env: Vec<(String, String)>,
    /// Written to the process's stdin, which is then closed.
    pub stdin: String,
    /// The process is killed (SIGKILL, by its PID) after this long.
    pub timeout_ms: u64,
}

/// How it went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Wall time from just before spawn to its exit, in nanoseconds.
    pub ns: u64,
    /// Exit code (`None`: killed by a signal, or could not be started: see `stderr`).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr (or why it could not run).
    pub stderr: String,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

impl Response {
    /// The time in milliseconds.
    pub fn ms(&self) -> f64 {
        self.ns as f64 / 1e6
    }
}

/// The worker's main loop: one request per stdin line, one response per stdout line.
pub fn serve() -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading a request")?;
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = serde_json::from_str(&line).context("parsing a request")?;
        let resp = run(&req);
        serde_json::to_writer(&mut out, &resp).context("writing a response")?;
        out.write_all(b"\n").context("writing a response")?;
        out.flush().context("writing a response")?;
    }
    Ok(())
}

fn run(req: &Request) -> Response {
    let failed = |msg: String| Response {
        ns: 0,
        code: None,
        stdout: String::new(),
        stderr: msg,
        timed_out: false,
    };
    let Some((prog, args)) = req.argv.split_first() else {
        return failed("empty argv".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", PEER_PATH)
        .env("DBUS_SYSTEM_BUS_ADDRESS", "")
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    // Watchdog, started before the clock: gets the PID, kills it if not told "done" in time.
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let fired = Arc::new(AtomicBool::new(false));
    let fired_dog = Arc::clone(&fired);
    let timeout = Duration::from_millis(req.timeout_ms);
    let dog = std::thread::spawn(move || {
        let Ok(pid) = pid_rx.recv() else { return };
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
            fired_dog.store(true, Ordering::SeqCst);
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    });

    let start = Instant::now();
    let result = (|| -> std::io::Result<std::process::Output> {
        let mut child = cmd.spawn()?;
        let _ = pid_tx.send(child.id());
        if let Some(mut si) = child.stdin.take() {
            match si.write_all(req.stdin.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e),
            }
        }
        child.wait_with_output()
    })();
    let elapsed = start.elapsed();
    let _ = done_tx.send(());
    drop(pid_tx);
    let _ = dog.join();

    match result {
        Ok(out) => Response {
            ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out: fired.load(Ordering::SeqCst),
        },
        Err(e) => failed(format!("could not run {prog}: {e}")),
    }
}

/// The bench's handle on a worker running in one host namespace.
#[derive(Debug)]
pub struct Worker {
    /// `None` once closed (dropping it ends the worker's input).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    host: String,
    proc: Proc,
}

impl Worker {
    /// Starts `ip netns exec HOST <this binary> __worker` (`ip` execs the worker in place, so
    /// the child's PID is the worker's).
    pub fn start(host: &Netns) -> Result<Worker> {
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let child = Command::new("ip")
            .arg("netns")
            .arg("exec")
            .arg(host.name())
            .arg(&exe)
            .arg(WORKER_ARG)
            .env_clear()
            .env("PATH", PEER_PATH)
            .env("DBUS_SYSTEM_BUS_ADDRESS", "")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting a worker in namespace {}", host.name()))?;
        let mut proc = Proc::new(
            child,
            format!("worker in {}", host.name()),
            Duration::from_secs(2),
        );
        let stdin = proc.child_mut().stdin.take();
        let stdout = proc
            .child_mut()
            .stdout
            .take()
            .context("worker has no stdout pipe")?;
        Ok(Worker {
            stdin,
            stdout: BufReader::new(stdout),
            host: host.name().to_string(),
            proc,
        })
    }

    /// Runs one request in the worker's namespace.
    pub fn run(&mut self, req: &Request) -> Result<Response> {
        let what = || format!("worker in {} (pid {})", self.host, self.proc.id());
        let stdin = self.stdin.as_mut().context("worker already closed")?;
        let mut line = serde_json::to_string(req).context("encoding a request")?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("sending to {}", what()))?;
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .with_context(|| format!("reading from {}", what()))?;
        if n == 0 {
            bail!("{} exited", what());
        }
        serde_json::from_str(&answer).with_context(|| format!("parsing answer of {}", what()))
    }

    /// Runs one request and fails unless it exited 0.
    pub fn run_ok(&mut self, what: &str, req: &Request) -> Result<Response> {
        let resp = self.run(req)?;
        if resp.code != Some(0) {
            bail!(
                "{what} failed (exit {:?}{}): {}{}",
                resp.code,
                if resp.timed_out { ", timed out" } else { "" },
                resp.stderr.trim(),
                if resp.stdout.trim().is_empty() {
                    String::new()
                } else {
                    format!(" / stdout: {}", resp.stdout.trim())
                }
            );
        }
        Ok(resp)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input: the worker exits; `proc`'s own drop then reaps it (or kills it).
        self.stdin = None;
    }
}
