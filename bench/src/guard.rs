//! Cleanup guards (namespaces, child processes, the scratch directory) and the stop flag.
//!
//! Everything the bench creates is owned by a guard whose `Drop` removes it, so an error, a
//! panic (unwinding) or Ctrl-C/SIGTERM (which only sets [`request_stop`]; the running loop
//! then returns an error) leaves nothing behind. Processes are only ever signalled through
//! the [`std::process::Child`] the bench spawned itself, by that PID, while still unreaped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `PATH` given to `ip`, the peers and everything they spawn (see peers.md: netavark and
/// go-iptables look `iptables` up in `PATH`).
pub const PEER_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every loop to stop at its next check (set by the signal handler).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// `Err` once a stop was requested: loops call this between operations.
pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C or SIGTERM)");
    }
    Ok(())
}

/// The prefix of every namespace name this process creates: `bb<pid>`.
pub fn prefix() -> String {
    format!("bb{}", std::process::id())
}

/// Runs `ip ARGS` (with [`PEER_PATH`]) and fails with its stderr when it fails.
pub fn run_ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .env_clear()
        .env("PATH", PEER_PATH)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace made with `ip netns add`, deleted with `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// `ip netns add NAME`. `NAME` must start with this process's [`prefix`], so the bench can
    /// only ever delete namespaces it created.
    pub fn add(name: &str) -> Result<Netns> {
        if !name.starts_with(&prefix()) {
            bail!(
                "refusing to create namespace {name:?}: not prefixed {}",
                prefix()
            );
        }
        run_ip(&["netns", "add", name])?;
        Ok(Netns {
            name: name.to_string(),
            path: Path::new("/run/netns").join(name),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "del", &self.name]) {
            eprintln!("warning: cleanup: {e:#}");
        }
    }
}

/// A child process the bench started. On drop: wait up to `grace` for it to exit by itself,
/// then SIGTERM (by its PID, still unreaped so it cannot have been recycled), wait up to 5 s,
/// then SIGKILL.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    grace: Duration,
}

impl Proc {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child, what: impl Into<String>, grace: Duration) -> Proc {
        Proc {
            child,
            what: what.into(),
            grace,
        }
    }

    /// The child (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (`Ok(None)` from `try_wait`).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_for(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if !self.running() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.wait_for(self.grace) {
            return;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        if self.wait_for(Duration::from_secs(5)) {
            return;
        }
        eprintln!(
            "warning: cleanup: {} (pid {raw}) ignored SIGTERM; killing",
            self.what
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory (`/tmp/bb<pid>`), removed recursively on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `/tmp/<prefix>`; fails if it exists.
    pub fn create() -> Result<ScratchDir> {
        let path = std::env::temp_dir().join(prefix());
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// A time budget for one section: loops stop early (and say so) once it is spent.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    end: Instant,
}

impl Budget {
    /// A budget of `secs` seconds from now.
    pub fn new(secs: u64) -> Budget {
        Budget {
            end: Instant::now() + Duration::from_secs(secs),
        }
    }

    /// Whether the budget is spent.
    pub fn spent(&self) -> bool {
        Instant::now() >= self.end
    }
}
