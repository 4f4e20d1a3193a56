//! Whole-container start through berthd: `berth run --rm --network NET true` against
//! `berth run --rm --network none true`. The difference of the medians is the share of a
//! container start that berth's networking takes (namespace, endpoint, address allocation,
//! store writes, resolver registration, teardown), measured end to end through the CLI.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::guard::{check_stop, Budget, Netns, Proc, PEER_PATH};

/// Where the berth binaries are: next to the bench binary (`target/release`).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let dir = exe.parent().context("the bench binary has no directory")?;
    Ok(dir.join(name))
}

/// A berthd started by the bench in `host`, with its own state dir and socket.
#[derive(Debug)]
pub struct Berthd {
    /// Stopped (SIGTERM by PID, then SIGKILL) on drop.
    proc: Proc,
    socket: PathBuf,
    berth: PathBuf,
}

impl Berthd {
    /// Starts `ip netns exec HOST berthd --state-dir DIR/state --socket DIR/berthd.sock` (log in
    /// `DIR/berthd.log`) and waits up to 20 s for the socket to accept connections.
    pub fn start(host: &Netns, berthd: &Path, berth: &Path, dir: &Path) -> Result<Berthd> {
        for bin in [berthd, berth] {
            if !bin.exists() {
                bail!(
                    "{} not found: build it first with `cargo build --release -p berthd && crates/front/install.sh release`",
                    bin.display()
                );
            }
        }
        let state = dir.join("state");
        let socket = dir.join("berthd.sock");
        let log_path = dir.join("berthd.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", host.name()])
            .arg(berthd)
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "warn"])
            .env_clear()
            .env("PATH", PEER_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting berthd")?;
        // `ip netns exec` execs berthd in place: the child's PID is berthd's.
        let mut proc = Proc::new(child, "berthd", Duration::ZERO);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            check_stop()?;
            if UnixStream::connect(&socket).is_ok() {
                break;
            }
            if !proc.running() {
                bail!(
                    "berthd exited at start-up; its log ({}):\n{}",
                    log_path.display(),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() >= end {
                bail!("berthd did not open {} within 20 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Berthd {
            proc,
            socket,
            berth: berth.to_path_buf(),
        })
    }

    /// Runs `berth -H unix://SOCKET ARGS` and returns its wall time in ms (fails on non-zero).
    pub fn berth(&self, args: &[&str]) -> Result<f64> {
        let mut cmd = Command::new(&self.berth);
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env_clear()
            .env("PATH", PEER_PATH)
            .stdin(Stdio::null());
        let t0 = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running berth {}", args.join(" ")))?;
        let took = t0.elapsed();
        if !out.status.success() {
            bail!(
                "berth {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(took.as_secs_f64() * 1e3)
    }
}

/// Results of the whole-container section, in ms per run.
#[derive(Debug, Default)]
pub struct StartTimes {
    /// `run --rm --network NET true`.
    pub with_net: Vec<f64>,
    /// `run --rm --network none true`.
    pub none: Vec<f64>,
}

/// Creates network `bbnet` on `subnet` and times `runs` container starts of each kind,
/// alternating (2 untimed warm-ups each first).
pub fn measure(d: &Berthd, subnet: &str, runs: usize, budget: Budget) -> Result<StartTimes> {
    d.berth(&["network", "create", "--subnet", subnet, "bbnet"])?;
    let net_args = ["run", "--rm", "--network", "bbnet", "true"];
    let none_args = ["run", "--rm", "--network", "none", "true"];
    for _ in 0..2 {
        d.berth(&net_args)?;
        d.berth(&none_args)?;
    }
    let mut t = StartTimes::default();
    for r in 0..runs {
        check_stop()?;
        if budget.spent() {
            eprintln!("  time budget spent after {r} runs of each");
            break;
        }
        // Alternate which goes first so drift hits both alike.
        if r % 2 == 0 {
            t.with_net.push(d.berth(&net_args)?);
            t.none.push(d.berth(&none_args)?);
        } else {
            t.none.push(d.berth(&none_args)?);
            t.with_net.push(d.berth(&net_args)?);
        }
    }
    d.berth(&["network", "rm", "bbnet"])?;
    Ok(t)
}

impl Berthd {
    /// berthd's PID.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }
}
