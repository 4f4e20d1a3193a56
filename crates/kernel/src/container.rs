//! Container process primitives: the init stages and `exec` entry.
//!
//! berth containers have no images: a process from a read-only view of the host's filesystem (or
//! a `--rootfs` directory) runs in its own net, uts, ipc, mount and pid namespaces, with
//! generated `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` bind-mounted over the real
//! ones ([`crate::rootfs`]: a `--rootfs` entered with `pivot_root`), with Docker's default capabilities and
//! seccomp profile and `no_new_privs` ([`crate::confine`]).
//!
//! The daemon is multi-threaded and never calls `setns`/`unshare` itself. It executes
//! `berth-init` (beside berthd, [`init_executable`]; else its own binary) with a hidden first
//! argument; its `main()` hands argv to [`dispatch`] before anything else, so all namespace work
//! happens in fresh single-threaded processes:
//!
//! * stage 1 ([`INIT_ARG`]): joins the network namespace, unshares mnt/uts/pid/ipc, makes `/`
//!   recursively private, forks stage 2, writes its pid to `pid_file`, forwards signals to it,
//!   waits, writes the exit code to `exit_file`, tells it on the start pipe ([`ExitPipe`]) and
//!   exits with it. Stage 1 shares stage 2's mount namespace, where the host's paths end up
//!   covered, read-only or (a rootfs's `pivot_root`) gone, so it writes those files through
//!   descriptors of their directories, opened first.
//! * stage 2: a fork of stage 1 (no second load of the executable: an `execve` of berthd
//!   costs 2–2.5 ms of CPU in relocations and page faults), pid 1 of the new pid namespace; its
//!   command line is stage 1's ([`init_processes`] tells them apart by their parent). Dies with
//!   stage 1 (parent-death signal), sets the hostname, forks the command's process (which drops its privileges
//!   meanwhile: [`crate::confine::apply`]), assembles the root ([`crate::rootfs::prepare`]:
//!   /proc, /sys, /dev, masked paths, the generated files, `-v`, `--tmpfs`; a rootfs is
//!   entered with `pivot_root`, which moves the waiting child too) and lets the child go: it unblocks signals, looks the
//!   command up in `$PATH` and `exec`s it. Then stage 2 forwards signals, reaps every child and
//!   exits with the command's exit code.
//! * enter ([`ENTER_ARG`]): joins the net/uts/ipc/pid namespaces of a running container, spawns
//!   the command through the exec hop (which joins the mount namespace and root), forwards
//!   signals to it and exits with its code (`berth exec`).
//! * exec hop ([`EXEC_ARG`], internal): the process that becomes an `exec` command. It joins a
//!   running container's mount namespace and root, unblocks the signals its parent blocked,
//!   looks the command up in `$PATH`, drops its privileges ([`crate::confine::apply`]) and
//!   `exec`s the command in place, so the command's pid is the one its parent supervises.
//!
//! Exit codes follow docker: the command's code, `128 + signal` if it was killed by a signal,
//! 127 if the command was not found, 126 if it could not be executed, 125 if berth itself failed
//! to set the container up.
//!
//! Signals are handled without handlers or threads (no `unsafe`): the forwarded signals and
//! `SIGCHLD` are blocked before a child is spawned and collected with `sigwait`. Blocked signals
//! are also how pid 1 of a pid namespace receives signals it has no handler for. std's `Command`
//! hands the parent's signal mask to the child, so the command is never spawned directly: the
//! exec hop clears the mask, then `exec`s it. A signal that arrives in between stays pending and
//! takes effect at that moment, as it would for the command.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, chroot, fchdir, gethostname, sethostname, Pid};
use serde::{Deserialize, Serialize};

use crate::confine::Privileges;
use crate::rootfs::Filesystem;
use crate::sys::Forked;

/// argv\[1\] for stage 1; argv\[2\] is the [`InitConfig`] as JSON.
pub const INIT_ARG: &str = "__berth_init";
/// argv\[1\] for `exec`: argv\[2\] is the container's init pid, argv\[3\] the [`Privileges`] as
/// JSON, argv\[4\] `tty` or `-` (see [`TTY_FLAG`]), argv\[5..\] the command.
pub const ENTER_ARG: &str = "__berth_enter";

/// Internal: argv\[1\] of the exec hop (`berth exec`); argv\[2\] is `-` (stay) or a container
/// init's pid (join its mount namespace and root); argv\[3\] the [`Privileges`] as JSON;
/// argv\[4\] `tty` or `-`; argv\[5..\] is the command. [`dispatch`] handles it like the other stages.
pub const EXEC_ARG: &str = "__berth_exec";

/// The argument that asks the enter process and the exec hop for a pseudo-terminal (their
/// stdin is then the console socket, [`crate::console`]); `-` for none.
pub const TTY_FLAG: &str = "tty";

/// The PATH every container starts with (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Exit code when berth itself fails to set up the container (docker uses 125 too).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_CANNOT_EXEC: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Signals forwarded from stage 1 to stage 2, from stage 2 to the command, and from the enter
/// process to its command.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Everything stage 1 and stage 2 need to start a container.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct InitConfig {
    /// `setns(CLONE_NEWNET)` into this (a bind-mounted netns file or `/proc/PID/ns/net`);
    /// `None` = stay in the current netns (`--network host`).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// (host file, target path inside the container), e.g. (`.../hosts`, `/etc/hosts`). The
    /// target is relative to the rootfs when `rootfs` is set; there a missing target is created
    /// (empty). Without a rootfs a missing target is skipped with a warning: berth never creates
    /// files in the host's filesystem.
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub rootfs: Option<PathBuf>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`, added to the default env (PATH, HOSTNAME, HOME); entries without `=` are
    /// ignored.
    pub env: Vec<String>,
    /// Capabilities, seccomp and `no_new_privs` of the command (and of `exec` processes: pass
    /// the same to [`enter_command`]).
    #[serde(default)]
    pub privileges: Privileges,
    /// How the root is assembled.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// The command gets a pseudo-terminal made in the container ([`crate::console`]); stage
    /// 1's stdin is then the console socket the master is sent over.
    #[serde(default)]
    pub tty: bool,
    /// The directory the command starts in, inside the container (empty: `/`).
    #[serde(default)]
    pub working_dir: String,
    /// `UID[:GID]` or `NAME[:GROUP]` the command runs as, resolved in the container's
    /// `/etc/passwd` and `/etc/group` (empty: root).
    #[serde(default)]
    pub user: String,
    /// `(name, value)` sysctls written by the container's init in its namespaces, before the
    /// command runs (validated by the caller: namespaced, plain dotted names).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// Stage 1 writes the container init's pid (stage 2's pid as seen from the daemon) here, once
    /// the container is set up and the command started (or stage 2 failed); always before
    /// `exit_file`.
    pub pid_file: PathBuf,
    /// Stage 1 writes the command's exit code here (decimal) before it exits.
    pub exit_file: PathBuf,
    /// A pipe the command waits on (a path that opens its reading end, e.g. the daemon's
    /// `/proc/PID/fd/N`), opened by stage 1 first thing: stage 2 lets the command go only once
    /// it has read a byte from it, and gives up at end of file (the daemon closed it, or died)
    /// with [`EXIT_SETUP_FAILED`]. The daemon plumbs the container's network meanwhile, while
    /// the init assembles the root, and writes the byte once the network is complete. `None`:
    /// nothing to wait for.
    #[serde(default)]
    pub gate: Option<PathBuf>,
    /// A detached read-only mount of the container's network namespace's sysfs, made ahead
    /// with the namespace (a path that opens it, e.g. the daemon's `/proc/PID/fd/N`, held by
    /// the daemon until the command runs: [`crate::netns::premount_sysfs`]), opened by stage 1
    /// first thing and attached on `/sys` by stage 2 instead of mounting one. `None`, or one
    /// that cannot be opened or attached: stage 2 mounts a new one.
    #[serde(default)]
    pub sysfs: Option<PathBuf>,
    /// A pipe the daemon reads the container init's pid from (a path that opens its writing
    /// end, e.g. the daemon's `/proc/PID/fd/N`), opened by stage 1 first thing: right after
    /// `pid_file`, stage 1 writes the same pid there (a decimal line), so the daemon wakes
    /// once instead of polling the file; right after `exit_file`, the exit code (`exit
    /// CODE` line, [`ExitPipe`]), then it exits. `None`: the daemon polls `pid_file`.
    #[serde(default)]
    pub started: Option<PathBuf>,
    /// Directories whose mounts stage 1 detaches in the container's mount namespace right
    /// after making it private: berthd's `RUNDIR/netns`, where the overlay namespaces are
    /// held by bind mounts. The container's mount namespace is a private copy of berthd's, so
    /// it would otherwise hold a copy of each such mount that existed at its start, out of
    /// reach of `network rm`'s unmount, and the removed namespace — bridge, VXLAN port and
    /// the port's UDP socket on the host — would live on until the container exits (a
    /// container with a rootfs lets go at its `pivot_root`; one without never does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detach_under: Vec<PathBuf>,
}

/// Errors of this module, worded for people: what failed, with the path or command.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container config: {0}")]
    Config(String),
    #[error("{what}: {err}")]
    Sys { what: String, err: Errno },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> ContainerError {
    let what = what.into();
    move |err| ContainerError::Sys { what, err }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |err| ContainerError::Io { what, err }
}

/// Called by berthd's `main()` before anything else (`args` = `std::env::args()`, argv\[0\]
/// included). Returns `Some(exit code)` if argv was one of ours (the caller then exits with it),
/// `None` otherwise.
pub fn dispatch(args: &[String]) -> Option<i32> {
    let code = match args.get(1).map(String::as_str) {
        Some(INIT_ARG) => stage1_main(args.get(2)),
        Some(ENTER_ARG) => enter_main(&args[2..]),
        Some(EXEC_ARG) => exec_main(&args[2..]),
        _ => return None,
    };
    Some(code)
}

/// The name of the init-only executable (`berth-init`) that berthd spawns for its containers
/// when it lies beside berthd's own executable.
pub const INIT_EXECUTABLE: &str = "berth-init";

/// What berthd spawns as a container's stage 1 (and `exec`'s enter process): `berth-init`
/// beside `self_exe` (berthd's own executable) if it is an executable file there, else
/// `/proc/self/exe` (berthd itself, which dispatches the same arguments). The init alone maps
/// and relocates a fraction of berthd: its `execve` and start cost ~2.5 ms less CPU per
/// container (docs/PERFORMANCE.md). Resolved once, at berthd's start.
pub fn init_executable(self_exe: Option<&Path>) -> PathBuf {
    let beside = self_exe
        .and_then(Path::parent)
        .map(|dir| dir.join(INIT_EXECUTABLE))
        .filter(|p| {
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    beside.unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Builds the `Command` the daemon spawns for a container: self exe + [`INIT_ARG`] + JSON.
/// The environment is replaced by the container's environment (stage 2 inherits it, and `exec`
/// reads it back from `/proc/PID/environ`). The daemon sets stdout/stderr itself.
pub fn init_command(self_exe: &Path, cfg: &InitConfig) -> Result<Command, ContainerError> {
    validate(cfg)?;
    let json = serde_json::to_string(cfg)
        .map_err(|e| ContainerError::Config(format!("cannot serialize: {e}")))?;
    let mut cmd = Command::new(self_exe);
    cmd.arg(INIT_ARG)
        .arg(json)
        .env_clear()
        .envs(container_env(&cfg.hostname, &cfg.env))
        .current_dir("/");
    Ok(cmd)
}

/// Sends `sig` to a container's stage-1 init (`kill(2)`); it forwards the signal to the
/// command, and a SIGKILL takes the whole container down (stage 2 dies with it: pdeathsig).
pub fn signal(pid: i32, sig: Signal) -> nix::Result<()> {
    kill(Pid::from_raw(pid), sig)
}

/// Builds the `Command` for `exec` into a running container whose init pid is `pid`. The
/// command runs with the container's environment plus `env` (`KEY=VALUE`), which is passed to
/// the enter process as its environment, and with `privileges` (the container's). With `tty`,
/// the caller makes the command's stdin the console socket ([`crate::console`]).
pub fn enter_command(
    self_exe: &Path,
    pid: i32,
    cmd: &[String],
    env: &[String],
    privileges: &Privileges,
    tty: bool,
) -> Command {
    // Serializing plain strings and bools cannot fail; an empty argument would be refused by
    // the hop (exit 125), never run unconfined.
    let privileges = serde_json::to_string(privileges).unwrap_or_default();
    let mut c = Command::new(self_exe);
    c.arg(ENTER_ARG)
        .arg(pid.to_string())
        .arg(privileges)
        .arg(if tty { TTY_FLAG } else { "-" })
        .args(cmd)
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .current_dir("/");
    c
}

fn validate(cfg: &InitConfig) -> Result<(), ContainerError> {
    if cfg.cmd.is_empty() || cfg.cmd[0].is_empty() {
        return Err(ContainerError::Config("no command given".into()));
    }
    // A dotted name only: a '/' would be taken as a path under /proc/sys.
    if let Some((key, _)) = cfg.sysctls.iter().find(|(k, _)| k.contains('/')) {
        return Err(ContainerError::Config(format!(
            "sysctl {key:?}: a name is dot-separated, without '/'"
        )));
    }
    for (_, target) in &cfg.binds {
        if !target.is_absolute() || target.components().any(|c| c == Component::ParentDir) {
            return Err(ContainerError::Config(format!(
                "bind target {} must be an absolute path without '..'",
                target.display()
            )));
        }
    }
    if let Some(rootfs) = &cfg.rootfs {
        if !rootfs.is_absolute() {
            return Err(ContainerError::Config(format!(
                "rootfs {} must be an absolute path",
                rootfs.display()
            )));
        }
    }
    Ok(())
}

fn parse_config(json: Option<&String>) -> Result<InitConfig, ContainerError> {
    let json = json.ok_or_else(|| ContainerError::Config("missing JSON argument".into()))?;
    let cfg: InitConfig =
        serde_json::from_str(json).map_err(|e| ContainerError::Config(e.to_string()))?;
    validate(&cfg)?;
    Ok(cfg)
}

/// The default env (PATH, HOSTNAME, HOME) overlaid with `extra` (`KEY=VALUE`), in a stable order.
fn container_env(hostname: &str, extra: &[String]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert("HOSTNAME".to_string(), hostname.to_string());
    env.insert("HOME".to_string(), "/root".to_string());
    overlay_env(&mut env, extra.iter().map(String::as_str));
    env
}

fn overlay_env<'a>(env: &mut BTreeMap<String, String>, extra: impl Iterator<Item = &'a str>) {
    for kv in extra {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
}

fn report(err: &ContainerError) {
    eprintln!("berth: {err}");
}

// ---------------------------------------------------------------------------------------------
// Stage 1
// ---------------------------------------------------------------------------------------------

fn stage1_main(json: Option<&String>) -> i32 {
    let cfg = match parse_config(json) {
        Ok(cfg) => cfg,
        Err(e) => {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    };
    // Opened first, in berthd's mount namespace: in ours (stage 2's) the host's paths end up
    // read-only and berthd's state directory covered (or gone: a rootfs's pivot_root moves
    // us too); the directories' descriptors still lead there, writable.
    let (pid_out, exit_out) = match (OutFile::open(&cfg.pid_file), OutFile::open(&cfg.exit_file)) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    };
    // The daemon holds the reading end (and its own copy of the writing end, whose path
    // this is) until we wrote the pid or exited.
    let started = match cfg.started.as_deref().map(open_started).transpose() {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    };
    let inherited = [
        pid_out.dir.as_raw_fd(),
        exit_out.dir.as_raw_fd(),
        started.as_ref().map_or(-1, AsRawFd::as_raw_fd),
    ];
    let (code, started) = match stage1(&cfg, &pid_out, started, inherited) {
        Ok(told) => told,
        Err(e) => {
            report(&e);
            (EXIT_SETUP_FAILED, None)
        }
    };
    if let Err(e) = exit_out.write(&code.to_string()) {
        report(&e);
    }
    if let Some(mut started) = started {
        // Told before our own exit, whose teardown of the container's mount namespace (an
        // RCU grace period per unmount batch, before the parent is notified) the daemon then
        // need not wait for: the container's processes are all gone (stage 2, pid 1 of its
        // pid namespace, is reaped only once every other one is). A few bytes into the pipe:
        // never blocks; EPIPE (a daemon that restarted since) changes nothing.
        let _ = started.write_all(format!("{EXIT_TOLD}{code}\n").as_bytes());
    }
    code
}

/// What stage 1 writes on its start pipe before the exit code, after the pid's line.
const EXIT_TOLD: &str = "exit ";

/// Opens the writing end of [`InitConfig::started`] without blocking (the daemon holds the
/// reading end, so the open cannot wait for a reader), close-on-exec.
fn open_started(path: &Path) -> Result<File, ContainerError> {
    nix::fcntl::open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(sys(format!("open the start pipe {}", path.display())))
}

/// Lazily unmounts (`MNT_DETACH`) every mount at an entry of `dir` in the calling process's
/// mount namespace (see [`InitConfig::detach_under`]). A missing directory and entries that
/// are not mount points (an interrupted creation's empty file) are nothing to do.
fn detach_mounts_under(dir: &Path) -> Result<(), ContainerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(format!("list {}", dir.display()))(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(format!("list {}", dir.display())))?.path();
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(sys(format!("detach {}", path.display()))(e)),
        }
    }
    Ok(())
}

/// `inherited`: stage 1's descriptors of host directories and of the start pipe (-1: none),
/// closed in stage 2. Returns the command's exit code and the start pipe, on which the caller
/// tells it.
fn stage1(
    cfg: &InitConfig,
    pid_out: &OutFile,
    started: Option<File>,
    inherited: [std::os::fd::RawFd; 3],
) -> Result<(i32, Option<File>), ContainerError> {
    if let Some(netns) = &cfg.netns {
        let f = File::open(netns).map_err(io(format!("open netns {}", netns.display())))?;
        setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(sys(format!("setns(CLONE_NEWNET) into {}", netns.display())))?;
    }
    // The daemon holds its reading end (the path) until we published our pid; its byte may
    // be there already. An end of file without the byte can only mean it gave up or died.
    let gate = cfg.gate.as_deref().map(Gate::open).transpose()?;
    // Opened while /proc is the host's (the daemon's descriptor); a failure only costs the
    // mount it would have spared.
    let sysfs = cfg.sysfs.as_deref().and_then(|p| {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(p, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ok()
    });
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(sys("unshare(mnt, uts, pid, ipc namespaces)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make / recursively private"))?;
    for dir in &cfg.detach_under {
        detach_mounts_under(dir)?;
    }

    // Stage 2 writes a byte (or just closes) when the container is set up and the command is
    // started; only then is the pid published, so an `exec` right after sees the finished
    // container. Both ends are close-on-exec: the command never inherits them.
    let (mut ready_r, ready_w) = std::io::pipe().map_err(io("create the ready pipe"))?;
    let signals = block_signals()?;
    // The first child after unshare(CLONE_NEWPID) is pid 1 of the new namespace. Stage 1 is a
    // fresh single-threaded exec of berthd, so the child may run any code.
    let pid = match crate::sys::fork_single_threaded() {
        Ok(Forked::Child) => {
            drop(ready_r);
            // Stage 2 (pid 1, alive as long as the container) keeps no descriptor of the
            // host's directories: stage 1's are closed here (never dropped: we exit below).
            for fd in inherited.into_iter().filter(|fd| *fd >= 0) {
                let _ = nix::unistd::close(fd);
            }
            std::process::exit(stage2_main(cfg, ready_w, gate, sysfs));
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => return Err(io("fork the container init (stage 2)")(e)),
    };
    drop(ready_w);
    drop(gate);
    drop(sysfs);
    // EOF (stage 2 failed and exited) is fine too: supervise collects its exit code.
    let _ = ready_r.read_exact(&mut [0u8; 1]);
    drop(ready_r);
    if let Err(e) = pid_out.write(&pid.to_string()) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    let started = started.and_then(|mut started| {
        // A few bytes into an empty pipe: never blocks. An error (EPIPE: the daemon gave up
        // waiting) changes nothing: the pid file is written, as a restarted daemon reads it.
        // One line: the exit code may follow in the same read.
        started
            .write_all(format!("{pid}\n").as_bytes())
            .ok()
            .map(|()| started)
    });
    Ok((supervise(&signals, pid, false), started))
}

/// The reading end of [`InitConfig::gate`].
struct Gate {
    file: File,
    shown: PathBuf,
}

impl Gate {
    /// Opens the pipe's reading end without blocking (the daemon may have written its byte
    /// and closed its writing end already: a blocking open would wait for another writer),
    /// then makes it blocking for [`Gate::wait`].
    fn open(path: &Path) -> Result<Gate, ContainerError> {
        let what = || format!("open the network gate {}", path.display());
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(what()))?;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(sys(what()))?;
        Ok(Gate {
            file: File::from(fd),
            shown: path.to_path_buf(),
        })
    }

    /// Blocks until the daemon writes its byte (the network is ready); end of file means it
    /// gave up (or died) and the container must not run.
    fn wait(mut self) -> Result<(), ContainerError> {
        let mut byte = [0u8; 1];
        loop {
            match self.file.read(&mut byte) {
                Ok(1) => return Ok(()),
                Ok(_) => {
                    return Err(ContainerError::Config(format!(
                        "the container's network was not set up (the daemon closed {})",
                        self.shown.display()
                    )))
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(format!("read {}", self.shown.display()))(e)),
            }
        }
    }
}

/// A file stage 1 writes (atomically: `NAME.tmp`, then renamed) through a descriptor of its
/// directory, so it works once stage 2 has covered the host's paths (or moved stage 1 into a
/// rootfs with its pivot_root).
struct OutFile {
    dir: File,
    name: PathBuf,
    shown: PathBuf,
}

impl OutFile {
    fn open(path: &Path) -> Result<OutFile, ContainerError> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(ContainerError::Config(format!(
                "{} is not a file path",
                path.display()
            )));
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok(OutFile {
            dir: File::open(dir).map_err(io(format!("open {}", dir.display())))?,
            name: PathBuf::from(name),
            shown: path.to_path_buf(),
        })
    }

    fn write(&self, content: &str) -> Result<(), ContainerError> {
        let mut tmp = self.name.as_os_str().to_owned();
        tmp.push(".tmp");
        let what = || format!("write {}", self.shown.display());
        let fd = nix::fcntl::openat(
            &self.dir,
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(sys(what()))?;
        File::from(fd)
            .write_all(content.as_bytes())
            .map_err(io(what()))?;
        nix::fcntl::renameat(&self.dir, tmp.as_os_str(), &self.dir, self.name.as_os_str())
            .map_err(sys(what()))
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 2 (pid 1 of the container)
// ---------------------------------------------------------------------------------------------

fn stage2_main(
    cfg: &InitConfig,
    ready: std::io::PipeWriter,
    gate: Option<Gate>,
    sysfs: Option<std::os::fd::OwnedFd>,
) -> i32 {
    let mut ready = Some(ready);
    let mut gate = gate;
    let result = (|| {
        // A sysctl may name one of the container's interfaces (`net.ipv4.conf.eth0.…`): with
        // sysctls, the network is waited for before they are written (no overlap then).
        if !cfg.sysctls.is_empty() {
            if let Some(g) = gate.take() {
                g.wait()?;
            }
        }
        stage2_setup(cfg)?;
        let signals = block_signals()?;
        // The command's process is a fork of ours (no second load of this big executable): it
        // confines itself (compiling and attaching the seccomp filter) while we assemble the
        // root, then waits for our go. The view of the host's root is assembled on the
        // namespace's own root, where it already is; a rootfs's pivot_root moves it (and us:
        // pid 1's root is what `exec` joins) into the rootfs.
        let env = container_env(&cfg.hostname, &cfg.env);
        let (go_r, mut go_w) = std::io::pipe().map_err(io("create the go pipe"))?;
        let child = match crate::sys::fork_single_threaded() {
            Ok(Forked::Child) => {
                drop(go_w);
                drop(ready.take());
                std::process::exit(command_child(cfg, &env, go_r));
            }
            Ok(Forked::Parent(child)) => child,
            Err(e) => return Err(io("fork the command's process")(e)),
        };
        drop(go_r);
        let entered =
            crate::rootfs::prepare(&cfg.filesystem, cfg.rootfs.as_deref(), &cfg.binds, sysfs)
                .and_then(|root| crate::rootfs::enter(&root));
        // The command runs only in a complete network (addresses, routes, the firewall's
        // anti-spoofing elements): the daemon set it up while the root was assembled.
        let entered = entered.and_then(|()| gate.take().map_or(Ok(()), Gate::wait));
        if let Err(e) = entered {
            // The child reads EOF and exits.
            let _ = kill(child, Signal::SIGKILL);
            return Err(e);
        }
        let _ = go_w.write_all(b"1");
        drop(go_w);
        if let Some(mut ready) = ready.take() {
            let _ = ready.write_all(b"1");
        }
        Ok((signals, child))
    })();
    match result {
        Ok((signals, child)) => supervise(&signals, child, true),
        Err(e) => {
            report(&e);
            EXIT_SETUP_FAILED
        }
    }
}

/// Everything before the hop is spawned (stage 1 made the mount namespace).
fn stage2_setup(cfg: &InitConfig) -> Result<(), ContainerError> {
    // If stage 1 is SIGKILLed, pid 1 dies, and with it the whole pid namespace.
    set_pdeathsig(Signal::SIGKILL).map_err(sys("prctl(PR_SET_PDEATHSIG)"))?;
    if !cfg.hostname.is_empty() {
        sethostname(&cfg.hostname).map_err(sys(format!("sethostname {:?}", cfg.hostname)))?;
    }
    // Through the host's /proc, still mounted here: a net.* file is the network namespace's of
    // the thread that opens it, an IPC one its IPC namespace's, and we are in the container's.
    for (key, value) in &cfg.sysctls {
        crate::sysctl::write(None, key, value)
            .map_err(|e| ContainerError::Config(format!("setting sysctl {key}={value:?}: {e}")))?;
    }
    chdir("/").map_err(sys("chdir /"))
}

// ---------------------------------------------------------------------------------------------
// Enter (berth exec)
// ---------------------------------------------------------------------------------------------

fn enter_main(args: &[String]) -> i32 {
    let Some(pid) = args
        .first()
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
    else {
        report(&ContainerError::Config(format!(
            "{ENTER_ARG}: expected a pid, got {:?}",
            args.first()
        )));
        return EXIT_SETUP_FAILED;
    };
    let privileges = match args.get(1).map(|j| serde_json::from_str::<Privileges>(j)) {
        Some(Ok(p)) => p,
        other => {
            report(&ContainerError::Config(format!(
                "{ENTER_ARG}: expected the privileges as JSON: {other:?}"
            )));
            return EXIT_SETUP_FAILED;
        }
    };
    let tty = args.get(2).is_some_and(|t| t == TTY_FLAG);
    let cmd = args.get(3..).unwrap_or_default();
    if cmd.is_empty() || cmd[0].is_empty() {
        report(&ContainerError::Config("exec: no command given".into()));
        return EXIT_SETUP_FAILED;
    }
    let result = enter_setup(pid).and_then(|env| {
        let signals = block_signals()?;
        let child = spawn_hop(&pid.to_string(), &privileges, tty, cmd, &env)?;
        Ok((signals, child))
    });
    match result {
        Ok((signals, child)) => supervise(&signals, child, false),
        Err(e) => {
            report(&e);
            EXIT_SETUP_FAILED
        }
    }
}

/// Joins the net, uts, ipc and pid (for children) namespaces of container init `pid`; the exec
/// hop joins its mount namespace and root (this process must keep the host's `/proc` to find
/// its own executable). Returns the env for the command: the container's env plus ours.
fn enter_setup(pid: i32) -> Result<BTreeMap<String, String>, ContainerError> {
    // Open everything first, so a vanished container fails before anything changed; the mount
    // namespace and root are checked here and used by the exec hop.
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let mut files = Vec::new();
    for (name, flag) in [
        ("net", Some(CloneFlags::CLONE_NEWNET)),
        ("uts", Some(CloneFlags::CLONE_NEWUTS)),
        ("ipc", Some(CloneFlags::CLONE_NEWIPC)),
        ("pid", Some(CloneFlags::CLONE_NEWPID)),
        ("mnt", None),
    ] {
        let path = proc_dir.join("ns").join(name);
        let f = File::open(&path).map_err(io(format!(
            "open {} (is container {pid} running?)",
            path.display()
        )))?;
        files.push((path, f, flag));
    }
    let root_path = proc_dir.join("root");
    File::open(&root_path).map_err(io(format!("open {}", root_path.display())))?;

    // The container's env as its init got it (init_command sets it); the given env on top.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(raw) = fs::read(proc_dir.join("environ")) {
        for kv in raw.split(|b| *b == 0) {
            overlay_env(&mut env, std::str::from_utf8(kv).into_iter());
        }
    }
    for (path, f, flag) in &files {
        if let Some(flag) = flag {
            setns(f, *flag).map_err(sys(format!("setns into {}", path.display())))?;
        }
    }
    if env.is_empty() {
        // Not started by init_command: the default env, with the container's hostname.
        let hostname = gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        env = container_env(&hostname, &[]);
    }
    for (k, v) in std::env::vars_os() {
        if let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) {
            env.insert(k, v);
        }
    }
    Ok(env)
}

// ---------------------------------------------------------------------------------------------
// Exec hop: becomes the command
// ---------------------------------------------------------------------------------------------

/// Spawns the exec hop (our own executable) that becomes `cmd`, with exactly `env` and
/// `privileges`. `root` is `-` (stay), a pid (join the mount namespace and root of that
/// container init) or `go:FD` (wait to be moved into the root). Call with the forwarded signals
/// blocked.
fn spawn_hop(
    root: &str,
    privileges: &Privileges,
    tty: bool,
    cmd: &[String],
    env: &BTreeMap<String, String>,
) -> Result<Pid, ContainerError> {
    let privileges = serde_json::to_string(privileges)
        .map_err(|e| ContainerError::Config(format!("cannot serialize: {e}")))?;
    let child = Command::new("/proc/self/exe")
        .arg(EXEC_ARG)
        .arg(root)
        .arg(privileges)
        .arg(if tty { TTY_FLAG } else { "-" })
        .args(cmd)
        .env_clear()
        .envs(env)
        .current_dir("/")
        .spawn()
        .map_err(io(format!("spawn {:?}", cmd[0])))?;
    Ok(child_pid(&child))
}

fn exec_main(args: &[String]) -> i32 {
    let (Some(root), Some(privileges), Some(tty), Some(_)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        report(&ContainerError::Config(format!(
            "{EXEC_ARG}: expected a root, privileges, a tty flag and a command"
        )));
        return EXIT_SETUP_FAILED;
    };
    let privileges: Privileges = match serde_json::from_str(privileges) {
        Ok(p) => p,
        Err(e) => {
            report(&ContainerError::Config(format!(
                "{EXEC_ARG}: privileges: {e}"
            )));
            return EXIT_SETUP_FAILED;
        }
    };
    let rooted = if root == "-" {
        Ok(())
    } else {
        join_mount_ns_and_root(root)
    };
    // The terminal is made in the container's own /dev/pts, so joined first.
    let rooted = rooted.and_then(|()| {
        if tty == TTY_FLAG {
            crate::console::take_terminal()
        } else {
            Ok(())
        }
    });
    if let Err(e) = rooted {
        report(&e);
        return EXIT_SETUP_FAILED;
    }
    become_command(Some(&privileges), &args[3..], None)
}

/// The command's process in a new container (a fork of stage 2): confines itself, waits for
/// stage 2's go (it has moved us into the root), becomes the command.
fn command_child(
    cfg: &InitConfig,
    env: &BTreeMap<String, String>,
    mut go: std::io::PipeReader,
) -> i32 {
    if let Err(e) = crate::confine::apply(&cfg.privileges) {
        report(&e);
        return EXIT_SETUP_FAILED;
    }
    // EOF: stage 2 failed, and reports why.
    if go.read_exact(&mut [0u8; 1]).is_err() {
        return EXIT_SETUP_FAILED;
    }
    drop(go);
    if let Err(e) = chdir("/") {
        report(&ContainerError::Sys {
            what: "chdir /".into(),
            err: e,
        });
        return EXIT_SETUP_FAILED;
    }
    // In the container's root now: the terminal comes from its own /dev/pts.
    if cfg.tty {
        if let Err(e) = crate::console::take_terminal() {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    }
    let home = match working_dir_and_user(cfg) {
        Ok(home) => home,
        Err(e) => {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    };
    // With -u, HOME is the user's from passwd unless the container's environment sets one
    // (as runc does for docker).
    let given = cfg.env.iter().any(|kv| kv.starts_with("HOME="));
    match home.filter(|_| !given) {
        Some(home) => {
            let mut env = env.clone();
            env.insert("HOME".into(), home);
            become_command(None, &cfg.cmd, Some(&env))
        }
        None => become_command(None, &cfg.cmd, Some(env)),
    }
}

/// `-w` and `-u`, in the container's root, after the terminal (whose ownership needs root)
/// and before the exec: the ids come from the container's own passwd and group files. Returns
/// the user's home with `-u`.
fn working_dir_and_user(cfg: &InitConfig) -> Result<Option<String>, ContainerError> {
    if !cfg.working_dir.is_empty() {
        chdir(cfg.working_dir.as_str()).map_err(sys(format!(
            "chdir to the working directory {:?} (does it exist in the container?)",
            cfg.working_dir
        )))?;
    }
    if cfg.user.is_empty() {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let u = crate::user::resolve(&cfg.user, &passwd, &group).map_err(ContainerError::Config)?;
    let gid = nix::unistd::Gid::from_raw(u.gid);
    let groups: Vec<nix::unistd::Gid> = u
        .groups()
        .into_iter()
        .map(nix::unistd::Gid::from_raw)
        .collect();
    // Groups first: once the uid is not 0 the process may no longer change them.
    nix::unistd::setgroups(&groups).map_err(sys(format!("setgroups {:?}", u.groups())))?;
    nix::unistd::setgid(gid).map_err(sys(format!("setgid {}", u.gid)))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(u.uid))
        .map_err(sys(format!("setuid {}", u.uid)))?;
    Ok(Some(u.home))
}

/// Unblocks the signals its parent blocked, looks `cmd[0]` up in `$PATH` (of `env`, else of
/// our environment), applies `privileges` (unless already done), closes inherited descriptors
/// and `exec`s `cmd` (with exactly `env` if given). Returns only on failure, with docker's
/// exit code.
fn become_command(
    privileges: Option<&Privileges>,
    cmd: &[String],
    env: Option<&BTreeMap<String, String>>,
) -> i32 {
    let Some(name) = cmd.first() else {
        report(&ContainerError::Config("no command given".into()));
        return EXIT_SETUP_FAILED;
    };
    // Default dispositions first (nothing ignored is inherited, see `sys`), then pending
    // signals (sent to the command before it existed) take effect here.
    crate::sys::reset_signal_dispositions();
    if let Err(e) = signal_set().thread_unblock() {
        report(&ContainerError::Sys {
            what: "unblock signals".into(),
            err: e,
        });
        return EXIT_SETUP_FAILED;
    }
    let path_var = match env {
        Some(env) => env.get("PATH").cloned().unwrap_or_default(),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    let program = match resolve_command(name, &path_var) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Some(privileges) = privileges {
        if let Err(e) = crate::confine::apply(privileges) {
            report(&e);
            return EXIT_SETUP_FAILED;
        }
    }
    close_inherited_fds();
    let mut command = Command::new(&program);
    command.arg0(name).args(&cmd[1..]);
    if let Some(env) = env {
        command.env_clear().envs(env);
    }
    // exec only returns on failure.
    let e = command.exec();
    eprintln!("berth: exec: {name:?}: {e}");
    if e.kind() == ErrorKind::NotFound {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXEC
    }
}

/// Closes every descriptor above stderr that whoever started berth let us inherit, so the
/// command starts with exactly stdin, stdout and stderr (like runc). Called right before
/// `exec`, when this process owns no descriptors of its own.
fn close_inherited_fds() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The directory's own descriptor is closed by now and just fails with EBADF.
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

fn join_mount_ns_and_root(pid: &str) -> Result<(), ContainerError> {
    let mnt_path = format!("/proc/{pid}/ns/mnt");
    let root_path = format!("/proc/{pid}/root");
    // Both opened before setns: afterwards /proc is the container's.
    let mnt = File::open(&mnt_path).map_err(io(format!("open {mnt_path}")))?;
    let root = File::open(&root_path).map_err(io(format!("open {root_path}")))?;
    setns(&mnt, CloneFlags::CLONE_NEWNS).map_err(sys(format!("setns into {mnt_path}")))?;
    fchdir(&root).map_err(sys(format!("fchdir {root_path}")))?;
    chroot(".").map_err(sys(format!("chroot {root_path}")))?;
    chdir("/").map_err(sys("chdir /"))
}

// ---------------------------------------------------------------------------------------------
// Shared: signals, PATH lookup, reaping
// ---------------------------------------------------------------------------------------------

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the forwarded signals and SIGCHLD so `supervise` can `sigwait` for them. Must be
/// called before the child is spawned so that no SIGCHLD is lost.
fn block_signals() -> Result<SigSet, ContainerError> {
    let set = signal_set();
    set.thread_block().map_err(sys("block signals"))?;
    Ok(set)
}

fn child_pid(child: &std::process::Child) -> Pid {
    // Pids fit in i32 on Linux (pid_max <= 2^22).
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// PATH lookup like Go's `exec.LookPath` (what docker uses), with docker's messages. Returns
/// the exit code to use on failure (127 not found, 126 not executable).
fn resolve_command(name: &str, path_var: &str) -> Result<PathBuf, i32> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return match fs::metadata(&path) {
            Err(e) => {
                eprintln!("berth: exec: {name:?}: stat {name}: {e}");
                Err(if e.kind() == ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_CANNOT_EXEC
                })
            }
            Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => {
                eprintln!("berth: exec: {name:?}: permission denied");
                Err(EXIT_CANNOT_EXEC)
            }
            Ok(_) => Ok(path),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if let Ok(m) = fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    eprintln!("berth: exec: {name:?}: executable file not found in $PATH");
    Err(EXIT_NOT_FOUND)
}

fn exit_code(status: WaitStatus) -> Option<(Pid, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid, 128 + sig as i32)),
        _ => None,
    }
}

/// Forwards the forwarded signals to `child` and waits for it; with `reap_all` (pid 1) also
/// reaps every other child. Returns the child's exit code (128 + signal if it was killed).
fn supervise(signals: &SigSet, child: Pid, reap_all: bool) -> i32 {
    let target = if reap_all { None } else { Some(child) };
    loop {
        // Reap whatever has exited; SIGCHLD is blocked, so an exit after this loop leaves a
        // pending SIGCHLD that wakes the sigwait below.
        loop {
            match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if let Some((pid, code)) = exit_code(status) {
                        if pid == child {
                            return code;
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // ECHILD: the child is gone and cannot be waited for; nothing left to do.
                    eprintln!("berth: waitpid: {e}");
                    return EXIT_SETUP_FAILED;
                }
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
        }
    }
}

/// Every stage-1 container init running on the host (any berthd's): its pid and the config it
/// was started with, read from `/proc/PID/cmdline` (`berthd __berth_init <json>`). Processes
/// that vanish during the walk or whose command line does not parse are skipped.
pub fn init_processes() -> Vec<(i32, InitConfig)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let (_, Some(arg1), Some(json)) = (args.next(), args.next(), args.next()) else {
            continue;
        };
        if arg1 != INIT_ARG.as_bytes() {
            continue;
        }
        if let Ok(cfg) = serde_json::from_slice::<InitConfig>(json) {
            out.push((pid, parent_pid(pid), cfg));
        }
    }
    // Stage 2 (and the command's process until its exec) are forks with stage 1's command
    // line: an init whose parent is one of them is not a stage 1.
    let inits: std::collections::BTreeSet<i32> = out.iter().map(|(pid, _, _)| *pid).collect();
    out.into_iter()
        .filter(|(_, ppid, _)| !ppid.is_some_and(|p| inits.contains(&p)))
        .map(|(pid, _, cfg)| (pid, cfg))
        .collect()
}

/// A pid as stage 1 writes it (decimal, maybe with blanks around).
fn parse_pid(s: &str) -> Option<i32> {
    s.trim().parse().ok()
}

/// The pid in stage 1's pid file, if it wrote one.
fn read_pid_file(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file)
        .ok()
        .as_deref()
        .and_then(parse_pid)
}

/// Waits for the pid a container's stage 1 (`stage1`, an unreaped child of the caller) writes
/// to its start pipe (`started`: the reading end of [`InitConfig::started`], whose writing end
/// the caller holds until this returns) once the command runs: one wake-up, no polling. 0 if
/// stage 1 exited without writing it (the pid file is read once more: a restarted daemon's
/// source) or after 5 s. Without pidfds (a kernel before 5.3), [`wait_for_init_pid`] on a
/// blocking thread.
pub async fn init_pid_from(started: std::io::PipeReader, stage1: i32, pid_file: &Path) -> i32 {
    init_pid_and_exit(started, stage1, pid_file).await.0
}

/// The start pipe once the pid came: stage 1 tells the command's exit code on it before its
/// own exit ([`ExitPipe::code`]).
pub struct ExitPipe {
    pipe: tokio::net::unix::pipe::Receiver,
    /// What was read past the pid's line.
    buf: Vec<u8>,
}

impl ExitPipe {
    /// The exit code stage 1 tells just before it exits, or `None` at the end of the pipe
    /// without one (stage 1 was killed, or it is an older one that does not tell it): then
    /// only stage 1's own exit status says it.
    pub async fn code(mut self) -> Option<i32> {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 64];
        loop {
            if let Some(code) = told_exit(&self.buf) {
                return Some(code);
            }
            // A line this long is not stage 1's.
            if self.buf.len() > 64 {
                return None;
            }
            match self.pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// The exit code in `exit CODE\n`, once the whole line is there.
fn told_exit(buf: &[u8]) -> Option<i32> {
    let line = buf
        .split(|b| *b == b'\n')
        .next()
        .filter(|_| buf.contains(&b'\n'))?;
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix(EXIT_TOLD)?
        .trim()
        .parse()
        .ok()
}

/// [`init_pid_from`], and the pipe, on which stage 1 tells the exit code later ([`ExitPipe`];
/// `None` when stage 1 is gone already or the kernel has no pidfds).
pub async fn init_pid_and_exit(
    started: std::io::PipeReader,
    stage1: i32,
    pid_file: &Path,
) -> (i32, Option<ExitPipe>) {
    use tokio::io::AsyncReadExt;
    // The pid's line (an older stage 1 writes the pid alone), and what followed it.
    let split = |b: &[u8]| -> (Option<i32>, Vec<u8>) {
        let end = b.iter().position(|c| *c == b'\n');
        let (pid, rest) = match end {
            Some(i) => (&b[..i], b[i + 1..].to_vec()),
            None => (b, Vec::new()),
        };
        (std::str::from_utf8(pid).ok().and_then(parse_pid), rest)
    };
    let parse = |b: &[u8]| split(b).0;
    let from_file = || read_pid_file(pid_file);
    let exited = rustix::process::Pid::from_raw(stage1)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        .map_err(std::io::Error::from)
        .and_then(|fd| {
            // The AsyncFd owns the pidfd (tokio#8587, as in [`exited_fd`]).
            #[allow(deprecated)]
            tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
        });
    // Sets the reading end non-blocking, for the runtime's reactor.
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(started.into());
    let (Ok(exited), Ok(mut pipe)) = (exited, pipe) else {
        let pid_file = pid_file.to_path_buf();
        let pid = tokio::task::spawn_blocking(move || wait_for_init_pid(&pid_file, stage1))
            .await
            .unwrap_or(0);
        return (pid, None);
    };
    // Stage 1 writes the pid in one write of a few bytes (atomic in a pipe): one read, which
    // may also hold the exit code of a command that was quick.
    let mut buf = [0u8; 64];
    tokio::select! {
        biased;
        read = pipe.read(&mut buf) => match read {
            Ok(n) if n > 0 => match split(&buf[..n]) {
                (Some(pid), rest) => (pid, Some(ExitPipe { pipe, buf: rest })),
                (None, _) => (from_file().unwrap_or(0), None),
            },
            _ => (from_file().unwrap_or(0), None),
        },
        _ = exited.readable() => {
            // Gone: its pid may have come just before it exited.
            let pid = match pipe.try_read(&mut buf) {
                Ok(n) if n > 0 => parse(&buf[..n]).unwrap_or(0),
                _ => from_file().unwrap_or(0),
            };
            (pid, None)
        }
        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => (0, None),
    }
}

/// Polls for the pid a container's stage 1 (`stage1`, a child of the caller) writes to
/// `pid_file` once the command runs; 0 if stage 1 exited first (peeked with
/// `waitid(WEXITED | WNOHANG | WNOWAIT)`, which leaves it to its reaper) or after 5 s. Blocks:
/// call it on a blocking thread. Every 200 µs: tokio's timers tick in whole milliseconds, and
/// a 1 ms sleep added 1–2 ms to every start (there is no descriptor to wait on: std's
/// `Command` passes none but stdio, and an inotify watch's close costs a grace period).
pub fn wait_for_init_pid(pid_file: &Path, stage1: i32) -> i32 {
    let read = || read_pid_file(pid_file);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    while std::time::Instant::now() < deadline {
        if let Some(p) = read() {
            return p;
        }
        match nix::sys::wait::waitid(nix::sys::wait::Id::Pid(Pid::from_raw(stage1)), flags) {
            Ok(WaitStatus::StillAlive) => {}
            // Exited (the pid file may have come just before), or not ours to wait for.
            _ => return read().unwrap_or(0),
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    0
}

/// The parent of `pid`: field 4 of `/proc/PID/stat`, after the command name in parentheses
/// (which may itself contain spaces and parentheses, hence the last `)`). Stage 2 of an init
/// is told from stage 1 by it (same command line).
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// When process `pid` started, in clock ticks after boot: field 22 of `/proc/PID/stat`. With
/// the pid it names one process for the whole boot (a pid is reused, a pid and its start time
/// are not), so a recorded pair still tells the same process after berthd's restart.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_start_time(&stat)
}

/// Field 3 of a `/proc/PID/stat` line (the state: `R`, `S`, `Z`...), right after the command
/// name in parentheses.
fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Field 22 of a `/proc/PID/stat` line: the 20th after the command name in parentheses.
fn stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A pidfd of process `pid` if it still is the one that started at `start` ([`start_time`]),
/// `None` if it is gone or its pid now names another process. The pidfd is opened before the
/// start time is read: once it matches, the pidfd is that process's, whatever reuses the pid
/// later. An error means no pidfd (a kernel before 5.3) or no `/proc`.
pub fn open_if_same(pid: i32, start: u64) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    let Some(p) = (pid > 0)
        .then(|| rustix::process::Pid::from_raw(pid))
        .flatten()
    else {
        return Ok(None);
    };
    let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        // Gone between the two (its pidfd is readable, nothing to adopt).
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A zombie has exited (its reaper has not waited yet): nothing to adopt, as a walk of
    // /proc finds nothing in its empty command line.
    let exited = stat_state(&stat).is_none_or(|s| matches!(s, 'Z' | 'X'));
    Ok((!exited && stat_start_time(&stat) == Some(start)).then_some(fd))
}

/// [`exited`] for a process whose pidfd is held already ([`open_if_same`]).
pub async fn exited_fd(fd: std::os::fd::OwnedFd) -> std::io::Result<()> {
    // The AsyncFd owns the pidfd (no one else can close or reuse it while it is registered:
    // the soundness concern of tokio#8587, as for the netlink monitors).
    #[allow(deprecated)]
    let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    // Readable once it exited, for good: the guard's readiness is never cleared.
    let _ready = fd.readable().await?;
    Ok(())
}

/// Waits until process `pid` has exited, whoever its parent is (an init adopted after a daemon
/// restart is no child of this berthd), without polling: its pidfd becomes readable the moment
/// it exits, even while it lingers as a zombie for its reaper. Polling `/proc/PID` woke berthd
/// ten times a second per adopted container, and waited for the reaper too (1–2 s under this
/// machine's init). Returns at once if no such process exists; an error means no pidfd (a
/// kernel before 5.3).
pub async fn exited(pid: i32) -> std::io::Result<()> {
    let Some(p) = (pid > 0)
        .then(|| rustix::process::Pid::from_raw(pid))
        .flatten()
    else {
        return Ok(());
    };
    let fd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    exited_fd(fd).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_whatever_the_command_name_holds() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(stat_start_time(line), Some(987654));
        assert_eq!(stat_start_time("42 (truncated) S 1"), None);
    }

    #[test]
    fn open_if_same_tells_the_same_process_from_a_reused_pid() {
        let me = i32::try_from(std::process::id()).unwrap();
        let start = start_time(me).unwrap();
        assert!(open_if_same(me, start).unwrap().is_some());
        // The same pid with another start time: another process that had the pid before.
        assert!(open_if_same(me, start + 1).unwrap().is_none());
        assert!(open_if_same(me, start.saturating_sub(1)).unwrap().is_none());
        // A pid no process has (beyond pid_max).
        assert!(open_if_same(i32::MAX, start).unwrap().is_none());
    }

    #[test]
    fn open_if_same_does_not_take_a_zombie_for_a_running_process() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let start = start_time(pid).unwrap();
        // Exited, not yet reaped.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        nix::sys::wait::waitid(nix::sys::wait::Id::Pid(Pid::from_raw(pid)), flags).unwrap();
        assert!(open_if_same(pid, start).unwrap().is_none());
        child.wait().unwrap();
    }

    #[test]
    fn parent_pid_reads_the_field_after_the_command_name() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert_eq!(
            parent_pid(me),
            Some(nix::unistd::getppid().as_raw()),
            "our own parent"
        );
        assert_eq!(parent_pid(i32::MAX), None, "no such process");
    }

    #[test]
    fn exited_waits_for_the_exit_not_the_reaping() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        rt.block_on(async {
            let wait = tokio::spawn(exited(pid));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            assert!(!wait.is_finished(), "returned while the process runs");
            kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
            // Not reaped yet (a zombie of ours): the exit is what counts.
            tokio::time::timeout(std::time::Duration::from_secs(5), wait)
                .await
                .expect("no wake-up within 5 s of the exit")
                .unwrap()
                .unwrap();
        });
        child.wait().unwrap();
        rt.block_on(exited(pid)).unwrap();
        rt.block_on(exited(0)).unwrap();
    }

    #[test]
    fn the_init_executable_beside_berthd_is_preferred() {
        let dir = std::env::temp_dir().join(format!("berth-init-exe-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let berthd = dir.join("berthd");
        let init = dir.join(INIT_EXECUTABLE);
        let own = PathBuf::from("/proc/self/exe");
        assert_eq!(init_executable(Some(&berthd)), own, "none beside it");
        assert_eq!(init_executable(None), own, "own executable unknown");
        fs::write(&init, "").unwrap();
        fs::set_permissions(&init, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(init_executable(Some(&berthd)), own, "not executable");
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(init_executable(Some(&berthd)), init);
        fs::remove_file(&init).unwrap();
        fs::create_dir(&init).unwrap();
        assert_eq!(init_executable(Some(&berthd)), own, "a directory");
        fs::remove_dir_all(&dir).unwrap();
    }
}
