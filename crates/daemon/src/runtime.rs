//! Container processes: start (namespace, endpoints, init), supervise, signal, logs, exec.
//!
//! A container's network namespace is created and held by a file descriptor only while its init
//! joins it; from then on the process alone keeps it alive, so when the container dies its
//! namespace (and the container side of every veth) goes with it: nothing can leak, even after a
//! `kill -9` of berthd. Output goes to files in the container's directory, so a daemon restart
//! loses nothing and `berth logs` works after exit.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api::types::stream;
use berth_kernel::container::{self as ct, InitConfig};
use berth_plan::firewall::Elements;
use berth_plan::model::{ContainerSpec, NetworkMode, Status};
use berth_plan::names;
use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::console::{Console, PumpDone};
use crate::daemon::Daemon;
use crate::error::{ApiError, ApiResult};

/// One exec session.
struct Exec {
    container_id: String,
    cmd: Vec<String>,
    env: Vec<String>,
    /// On a terminal of its own.
    tty: bool,
    /// Its stdin comes from the client (else `/dev/null`).
    attach_stdin: bool,
    /// The terminal's initial `(rows, columns)`.
    console_size: Option<(u16, u16)>,
    /// Its terminal or stdin once started (for resize).
    console: Option<Arc<Console>>,
    exit: watch::Sender<Option<i32>>,
}

/// What an exec's creation asks for.
pub struct ExecRequest {
    /// The command.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` added to the container's.
    pub env: Vec<String>,
    /// On a terminal.
    pub tty: bool,
    /// Stdin from the client.
    pub attach_stdin: bool,
    /// The terminal's initial `(rows, columns)`.
    pub console_size: Option<(u16, u16)>,
}

/// A started exec: its output (raw with a terminal, else multiplexed frames) and its input.
pub struct ExecSession {
    /// Ends once the process exited and its exit code is recorded.
    pub output: mpsc::Receiver<Bytes>,
    /// Where the client's input goes (with `AttachStdin`).
    pub console: Option<Arc<Console>>,
    /// It runs on a terminal (the stream is raw).
    pub tty: bool,
}

/// Supervises container processes.
pub struct Runtime {
    dir: PathBuf,
    /// Stage-1 init pid per running container (the process berthd signals).
    procs: Mutex<HashMap<String, i32>>,
    execs: Mutex<HashMap<String, Exec>>,
    /// The terminal or open stdin of running containers that have one (`-t`, `-i`).
    consoles: Mutex<HashMap<String, Arc<Console>>>,
    /// What a container's init and `exec`'s enter process are spawned from
    /// ([`ct::init_executable`]).
    init_exe: PathBuf,
    /// Spawns the inits from a small descriptor table ([`crate::spawner`]).
    spawner: crate::spawner::Spawner,
    /// Network namespaces made ahead of the starts ([`crate::netpool`]).
    netns_pool: Arc<crate::netpool::NetnsPool>,
}

impl Runtime {
    /// A runtime keeping container files under `dir`.
    pub fn new(dir: PathBuf) -> Runtime {
        let init_exe = ct::init_executable(std::env::current_exe().ok().as_deref());
        tracing::debug!(init = %init_exe.display(), "container init executable");
        Runtime {
            dir,
            procs: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            consoles: Mutex::new(HashMap::new()),
            init_exe,
            spawner: crate::spawner::Spawner::start(),
            netns_pool: Arc::default(),
        }
    }

    /// The directory of a container's generated files and logs.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Writes /etc/hosts, /etc/resolv.conf and /etc/hostname for `c`. Files are rewritten in
    /// place (same inode), so a running container sees the change through its bind mounts.
    pub fn write_files(&self, d: &Daemon, c: &ContainerSpec) -> ApiResult<()> {
        let dir = self.container_dir(&c.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        let nets = d.networks()?;
        let linked: Vec<(std::net::IpAddr, String)> = d
            .linked(c, false)?
            .iter()
            .flat_map(|l| berth_plan::links::hosts_lines(&l.view()))
            .collect();
        let files = [
            ("hosts", berth_plan::files::hosts_file(c, &nets, &linked)),
            ("hostname", berth_plan::files::hostname_file(c)),
            (
                "resolv.conf",
                berth_plan::files::resolv_conf(
                    &d.host_resolv_conf(),
                    c,
                    berth_plan::dns::embedded_server(c, &nets),
                ),
            ),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            // Written in place (the container sees each file through a bind mount of its
            // inode), and only when it changed (a connect changes only `hosts`).
            if std::fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
                continue;
            }
            write_in_place(&path, content.as_bytes())
                .map_err(|e| ApiError::internal(format!("writing {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Starts `c`: namespace, endpoints, files, init. Returns (stage-1 pid, container init pid,
    /// the watch of its namespace when berthd made it and watches it from the start:
    /// [`crate::converge::watch_from_start`], which the caller keeps once the start is stored).
    /// `guard`: its anti-spoofing elements, if not installed yet
    /// ([`crate::ports::publish_with`]); they are before any of its endpoints exists.
    pub async fn start(
        &self,
        d: &Arc<Daemon>,
        c: &ContainerSpec,
        guard: Option<&Elements>,
    ) -> ApiResult<(i32, i32, Option<crate::converge::EarlyWatch>)> {
        let dir = self.container_dir(&c.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        // Links first: a linked container that is not running fails the start before anything
        // is set up (moby's words).
        let link_env = d.env_with_links(c)?;
        self.write_files(d, c)?;
        let pid_file = dir.join("init.pid");
        let exit_file = dir.join("exit");
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&exit_file);
        // The previous run's record (and an older berthd's `stage1.pid`) name a process
        // that is gone: a crash before this run's record is written must not find them.
        let _ = std::fs::remove_file(dir.join(RECORD));
        let _ = std::fs::remove_file(dir.join(LEGACY_STAGE1));

        // The network namespace the init joins.
        // The namespace made ahead and its sysfs (`premount_sysfs`), held until the init runs.
        let mut held_ns = None;
        let mut watch = None;
        let netns: Option<PathBuf> = match &c.mode {
            NetworkMode::Host => None,
            NetworkMode::Container(target) => {
                let st = d.state(target)?;
                if st.status != Status::Running || st.pid == 0 {
                    let name = d
                        .find_container(target)
                        .map(|t| t.name)
                        .unwrap_or_else(|_| target.clone());
                    return Err(ApiError::conflict(format!(
                        "cannot join the network namespace of container {name:?}: it is not running"
                    )));
                }
                Some(PathBuf::from(format!("/proc/{}/ns/net", st.pid)))
            }
            NetworkMode::Networks | NetworkMode::None => {
                // Made ahead (a new one when none is ready); the next is made once this
                // container runs (below).
                let made = self.netns_pool.take().map_err(|e| {
                    ApiError::internal(format!("creating the network namespace: {e}"))
                })?;
                // Watched before its endpoints are made: drift from here on raises a
                // notification (forgotten again if this start fails).
                watch = made
                    .nsid
                    .and_then(|nsid| crate::converge::watch_from_start(d, &c.id, nsid));
                let path = berth_kernel::netns::fd_path(&made.fd);
                held_ns = Some(made);
                Some(path)
            }
        };

        // Endpoints: part of the desired state from now on (the namespace is held by our fd);
        // one reconcile pass scoped to this container plumbs them before its command runs,
        // while its init assembles the container's root: the init waits at its gate (a pipe
        // whose reading end it opens by our `/proc/PID/fd/N`) before the command runs, and
        // the pass's end writes the byte that lets it go. Closed instead (a failed pass, or
        // berthd gone), the init gives up and the command never runs.
        let plumbed = matches!((&c.mode, &netns), (NetworkMode::Networks, Some(_)))
            && !c.endpoints.is_empty();
        if let (Some(g), false) = (guard, plumbed) {
            crate::ports::install_guard(d, c, g)?;
        }
        let gate = if plumbed {
            let pipe = std::io::pipe()
                .map_err(|e| ApiError::internal(format!("creating the network gate: {e}")))?;
            Some(pipe)
        } else {
            None
        };
        let gate_path = gate.as_ref().map(|(r, _)| berth_kernel::netns::fd_path(r));

        // The init tells its pid on this pipe (its writing end opened by stage 1 by our
        // `/proc/PID/fd/N`, so we hold it until the pid came): one wake-up, not a poll.
        let (started_r, started_w) = std::io::pipe()
            .map_err(|e| ApiError::internal(format!("creating the start pipe: {e}")))?;
        let started_path = berth_kernel::netns::fd_path(&started_w);

        let rootfs = c.rootfs.as_ref().map(PathBuf::from);
        let cfg = InitConfig {
            netns: netns.clone(),
            hostname: c.hostname.clone(),
            binds: vec![
                (dir.join("hosts"), PathBuf::from("/etc/hosts")),
                (dir.join("resolv.conf"), PathBuf::from("/etc/resolv.conf")),
                (dir.join("hostname"), PathBuf::from("/etc/hostname")),
            ],
            rootfs,
            cmd: c.cmd.clone(),
            env: link_env,
            // issue 8: confinement.
            privileges: crate::security::privileges(&c.security),
            filesystem: crate::security::filesystem(&c.security, &d.config.state_dir),
            pid_file: pid_file.clone(),
            exit_file: exit_file.clone(),
            gate: gate_path,
            started: Some(started_path),
            sysfs: held_ns
                .as_ref()
                .and_then(|m: &berth_kernel::netns::MadeNetns| m.sysfs.as_ref())
                .map(berth_kernel::netns::fd_path),
            // berthd's overlay namespaces (issue 11): the container's mount namespace is a
            // private copy of ours, so a copy of their mounts would hold them — bridge, VXLAN
            // port and its socket on the host's port — past `network rm` for the container's
            // life.
            detach_under: vec![d.config.rundir.join(berth_plan::overlayns::NETNS_SUBDIR)],
            tty: c.stdio.tty,
            working_dir: c.process.working_dir.clone(),
            user: c.process.user.clone(),
            sysctls: c
                .process
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let open_log = |name: &str| {
            crate::runtime::log_file(&dir.join(name))
                .map_err(|e| ApiError::internal(format!("opening log {name}: {e}")))
        };
        let (out, err) = match (open_log("stdout.log"), open_log("stderr.log")) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err(e);
            }
        };
        let cmd = match ct::init_command(&self.init_exe, &cfg) {
            Ok(cmd) => cmd,
            Err(e) => {
                return Err(ApiError::internal(format!(
                    "preparing the container init: {e}"
                )));
            }
        };
        // With -t the init's stdin is the console socket the terminal's master comes back on
        // (our copy of its peer goes with the spawn); with -i a pipe we keep the writing end
        // of; else /dev/null.
        let mut console_socket = None;
        let mut stdin_writer = None;
        let stdin: Option<std::os::fd::OwnedFd> = if c.stdio.tty {
            match std::os::unix::net::UnixStream::pair() {
                Ok((ours, theirs)) => {
                    console_socket = Some(ours);
                    Some(theirs.into())
                }
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "creating the console socket: {e}"
                    )));
                }
            }
        } else if c.stdio.open_stdin {
            let piped = std::io::pipe().and_then(|(r, w)| {
                let w = std::process::ChildStdin::from(std::os::fd::OwnedFd::from(w));
                Ok((r, tokio::process::ChildStdin::from_std(w)?))
            });
            match piped {
                Ok((r, w)) => {
                    stdin_writer = Some(w);
                    Some(r.into())
                }
                Err(e) => {
                    return Err(ApiError::internal(format!("creating the stdin pipe: {e}")));
                }
            }
        } else {
            None
        };
        // Until the record below is written into it, this empty record marks the start: a
        // start-up after a crash finds this container's process by a walk of /proc
        // ([`Runtime::scan_processes`]). The same file as the record, not a mark of its own
        // made and deleted per start: on an ext4 without a journal every inode allocation
        // steps over the group's inodes freed in the last minutes (`find_inode_bit` →
        // `recently_deleted`), so each deleted mark made the next starts' files dearer.
        let marked = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(RECORD));
        if let Err(e) = marked {
            return Err(ApiError::internal(format!(
                "marking the container as starting: {e}"
            )));
        }
        // The network's pass is polled once before the init is spawned: its first step plans
        // the endpoints and hands them to their thread, which makes the veths while the init
        // starts. Polled only after the spawn, the pass (and with it the endpoint's thread)
        // waited for a CPU behind the init's `execve` on a 2-CPU machine, and the network
        // became the longer path to the command (a scheduler trace of `run --rm`: the
        // endpoint's thread made 1.0 ms after the init's exec, its command 2.1 ms after that).
        let mut plumbing = match (&gate, &netns) {
            (Some(_), Some(ns)) => Some(Box::pin(self.plumb(d, c, ns, guard))),
            _ => None,
        };
        let mut plumbed = None;
        if let Some(p) = plumbing.as_mut() {
            if let std::task::Poll::Ready(r) = futures::poll!(p.as_mut()) {
                plumbed = Some(r);
                plumbing = None;
            }
        }
        let spawned = self.spawner.spawn(cmd, stdin, out.into(), err.into());
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // A pass under way finishes (never dropped half-way), then what it made goes.
                if let Some(p) = plumbing {
                    let _ = p.await;
                }
                if gate.is_some() {
                    self.abandon_start(d, c).await;
                }
                return Err(ApiError::internal(format!(
                    "starting the container init: {e}"
                )));
            }
        };
        let stage1 = child.id() as i32;
        crate::failpoint::boundary("spawn init");
        // Started before anything can be written past the log's current end: every line of
        // this run gets its time.
        let stamper = crate::logtimes::Stamper::spawn(&dir);
        let spawned = std::time::Instant::now();

        // The gate's reading end stays open here until the init has published its pid (it
        // opened the gate before that) or died: the init opens it by its `/proc` path, which
        // goes with our descriptor, and a fast plumbing may be done before the init got there.
        let mut gate_reader = None;
        if let Some((gate_r, mut gate_w)) = gate {
            let result = match (plumbed, plumbing) {
                (Some(r), _) => r,
                (None, Some(p)) => p.await,
                // A gate comes with a pass (both need the container's own namespace).
                (None, None) => Err(ApiError::internal(
                    "starting the container: its network's pass was lost".to_string(),
                )),
            };
            let result = result.and_then(|()| {
                // Never blocks (one byte in an empty pipe) nor fails for want of a reader
                // (we hold one): the init's command may run from here on.
                gate_w
                    .write_all(b"1")
                    .map_err(|e| ApiError::internal(format!("opening the network gate: {e}")))
            });
            // The byte waits in the pipe for the init; end of file follows it.
            drop(gate_w);
            if let Err(e) = result {
                // The gate closed unopened: the init gives up before its command; killed
                // as well, so that it is gone before the start answers.
                let _ = ct::signal(stage1, Signal::SIGKILL);
                let _ = child.wait().await;
                stamper.finish().await;
                forget_process(&dir);
                self.abandon_start(d, c).await;
                return Err(e);
            }
            gate_reader = Some(gate_r);
            tracing::debug!(
                container = %c.name,
                plumbed_us = spawned.elapsed().as_micros() as u64,
                "network ready, the init's gate open"
            );
        }

        // Wait until the init has joined the namespace and started the command (it writes its
        // pid), or died trying.
        let (mut init_pid, exit_pipe) = ct::init_pid_and_exit(started_r, stage1, &pid_file).await;
        drop(started_w);
        if init_pid == 0 {
            // Gone before it wrote its pid: the waiter below records why.
            let _ = child.try_wait();
        } else {
            // Our child, not yet reaped: its pid cannot name another process yet.
            write_record(&dir, stage1, init_pid);
            crate::failpoint::boundary("record init");
        }
        tracing::debug!(
            container = %c.name,
            init_us = spawned.elapsed().as_micros() as u64,
            "container init running its command (or gone)"
        );
        // The next start's namespace, made off this one's path and off a quick container's
        // exit: 3 ms after its exit is told (its answer and its client's exit have gone by
        // then), or once it has run 50 ms. Made right here it ran beside a quick command's
        // exit (stages 1 and 2 ending, berthd's exit handling, the answer, the client's exit)
        // on 2 CPUs: `run --rm` 8.56 ms (median of five `start_timeline.sh 30`) against 8.21
        // with the wait and 9.52 without the pool (docs/PERFORMANCE.md).
        if held_ns.is_some() {
            let pool = self.netns_pool.clone();
            let mut exit = d.exit_channel(&c.id).subscribe();
            tokio::spawn(async move {
                let told = exit.wait_for(Option::is_some);
                let exited = matches!(
                    tokio::time::timeout(Duration::from_millis(50), told).await,
                    Ok(Ok(_))
                );
                if exited {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                pool.refill();
            });
        }
        drop(held_ns);
        drop(gate_reader);
        let pump = self
            .take_console(c, &dir, console_socket, stdin_writer)
            .await;
        if let Ok(mut procs) = self.procs.lock() {
            procs.insert(c.id.clone(), stage1);
        }
        if let Ok(mut s) = d.starting.lock() {
            s.remove(&c.id);
        }

        let id = c.id.clone();
        let d2 = d.clone();
        tokio::spawn(async move {
            // Stage 1 tells the command's exit code on the start pipe just before it exits:
            // the exit is handled from there, and stage 1 is reaped beside it (its exit tears
            // the container's mount namespace down first, ≈ 0.5 ms of grace periods before
            // the kernel would notify us). Without the code (stage 1 was killed), its status.
            let told = match exit_pipe {
                Some(pipe) => pipe.code().await,
                None => None,
            };
            let code = match told {
                Some(code) => {
                    tokio::spawn(async move {
                        let _ = child.wait().await;
                    });
                    code
                }
                None => match child.wait().await {
                    Ok(status) => exit_code(status),
                    Err(_) => -1,
                },
            };
            tracing::debug!(
                container = %id,
                told = told.is_some(),
                "container exited (told on the start pipe, else stage 1 reaped)"
            );
            // Everything the terminal still held is in the log before the exit is told.
            if let Some(pump) = pump {
                pump.wait(Duration::from_secs(5)).await;
            }
            stamper.finish().await;
            let code = read_exit_file(&d2.runtime.container_dir(&id)).unwrap_or(code);
            forget_process(&d2.runtime.container_dir(&id));
            if let Ok(mut procs) = d2.runtime.procs.lock() {
                procs.remove(&id);
            }
            if let Ok(mut consoles) = d2.runtime.consoles.lock() {
                consoles.remove(&id);
            }
            d2.container_exited(&id, code).await;
        });
        if init_pid == 0 {
            // It exited before writing its pid (e.g. a bad --rootfs); the waiter records why.
            init_pid = stage1;
        }
        Ok((stage1, init_pid, watch))
    }

    /// Plumbs a starting container's endpoints into its namespace `ns` (one reconcile pass
    /// scoped to it, after its anti-spoofing elements `guard` if left) and opens its
    /// in-namespace resolver if it needs one. On an error the caller abandons the start
    /// ([`Runtime::abandon_start`]).
    async fn plumb(
        &self,
        d: &Arc<Daemon>,
        c: &ContainerSpec,
        ns: &Path,
        guard: Option<&Elements>,
    ) -> ApiResult<()> {
        // In force before its veths exist: a port's first frame is already checked.
        if let Some(g) = guard {
            crate::ports::install_guard(d, c, g)?;
        }
        if let Ok(mut s) = d.starting.lock() {
            s.insert(c.id.clone(), ns.display().to_string());
        }
        // Its namespace is new and holds only `lo`: before this pass the container had
        // no endpoint in the kernel, which is the state the pass starts from.
        let before = ContainerSpec {
            endpoints: Vec::new(),
            ..c.clone()
        };
        d.converge_api_from(
            crate::converge::Scope::Containers {
                ids: vec![c.id.clone()],
                also: vec![],
            },
            Some(&before),
        )
        .await
        .map_err(|e| ApiError {
            status: e.status,
            message: format!("connecting container {:?}: {}", c.name, e.message),
        })?;
        // Its resolver inside the namespace (macvlan/ipvlan networks only), before its
        // command runs: nothing in the container can hold 127.0.0.11:53 first.
        let needs = d
            .networks()
            .map(|nets| berth_plan::dns::needs_local_resolver(c, &nets))?;
        if needs {
            d.dns
                .open_local(&c.id, ns, true)
                .map_err(|e| ApiError::internal(format!("starting container {:?}: {e}", c.name)))?;
        }
        Ok(())
    }

    /// The container's terminal (its master arrives on `socket` once the command took it; its
    /// output is copied to `stdout.log`) or its stdin pipe, kept for attach and resize.
    async fn take_console(
        &self,
        c: &ContainerSpec,
        dir: &Path,
        socket: Option<std::os::unix::net::UnixStream>,
        stdin: Option<tokio::process::ChildStdin>,
    ) -> Option<PumpDone> {
        let once = c.stdio.stdin_once;
        let console = if let Some(socket) = socket {
            // `None` if the command died before it had a terminal (its log says why).
            let received = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::task::spawn_blocking(move || berth_kernel::console::receive_master(&socket)),
            )
            .await;
            let Ok(Ok(Some(master))) = received else {
                tracing::warn!(container = %c.name, "the container's terminal never arrived");
                return None;
            };
            if let Some((rows, cols)) = c.stdio.console_size {
                let _ = berth_kernel::console::resize(&master, rows, cols);
            }
            let mut log = match log_file(&dir.join("stdout.log")) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(container = %c.name, "opening its log: {e}");
                    return None;
                }
            };
            let pump = crate::console::pump_master(&master, move |b| {
                use std::io::Write;
                let _ = log.write_all(b);
            });
            match Console::tty(master, once) {
                Ok(console) => Some((console, Some(pump))),
                Err(e) => {
                    tracing::warn!(container = %c.name, "keeping its terminal: {e}");
                    return Some(pump);
                }
            }
        } else {
            stdin.map(|s| (Console::pipe(s, once), None))
        };
        let (console, pump) = console?;
        if let Ok(mut consoles) = self.consoles.lock() {
            consoles.insert(c.id.clone(), Arc::new(console));
        }
        pump
    }

    /// The terminal or open stdin of a running container, if it has one.
    pub fn console(&self, id: &str) -> Option<Arc<Console>> {
        self.consoles.lock().ok()?.get(id).cloned()
    }

    /// A start that failed after its endpoints were plumbed: the container is no longer
    /// "starting", and a pass takes its veths away (the namespace goes with our fd anyway).
    async fn abandon_start(&self, d: &Arc<Daemon>, c: &ContainerSpec) {
        if let Ok(mut s) = d.starting.lock() {
            s.remove(&c.id);
        }
        let also = c.endpoints.iter().map(|e| e.host_ifname.clone()).collect();
        if let Err(e) = d
            .converge(
                crate::reconcile::Trigger::Api,
                crate::converge::Scope::Containers {
                    ids: vec![c.id.clone()],
                    also,
                },
                false,
            )
            .await
        {
            tracing::warn!(container = %c.name, "cleaning up a failed start: {}", e.message);
        }
    }

    /// berth's container processes that run now, by container id: stage-1 inits whose command
    /// line names a pid file in this runtime's directory (so another berthd's containers on
    /// the same host are never mistaken for ours). Found by a walk of `/proc`, so a container
    /// started just before a crash (before its state or even its `stage1.pid` was written) is
    /// found too.
    pub fn scan_processes(&self) -> BTreeMap<String, Vec<ProcInfo>> {
        let mut out: BTreeMap<String, Vec<ProcInfo>> = BTreeMap::new();
        let prefix = format!("{}/", self.dir.display());
        for (pid, args) in berth_kernel::container::init_processes() {
            let Some(pid_file) = args.pid_file.to_str() else {
                continue;
            };
            let Some(rest) = pid_file.strip_prefix(&prefix) else {
                continue;
            };
            let Some(id) = rest.split('/').next().filter(|i| names::is_full_id(i)) else {
                continue;
            };
            // The container init's pid, once stage 1 wrote it (else its namespace is stage
            // 1's own: stage 1 joined it before anything else).
            let init = read_pid(&args.pid_file).unwrap_or(pid);
            out.entry(id.to_string())
                .or_default()
                .push(ProcInfo { stage1: pid, init });
        }
        out
    }

    /// berth's container processes that run now, by container id, from the records their
    /// starts left in the containers' directories: a pid and its start time, checked against
    /// the process that has the pid now (a pid reused by another process is not adopted), with
    /// the pidfd of each that still runs. `None` when a record cannot be trusted and only
    /// [`Runtime::scan_processes`] can tell: a start a crash interrupted before its record
    /// was written (its `starting` mark), a process started by a berthd that wrote no record,
    /// a kernel without pidfds. Reading 1,000 records costs a few syscalls each where the scan
    /// read the command line of every process on the host (~2,000 inits' at 1,000
    /// containers).
    pub fn recorded_processes(&self) -> Option<Recorded> {
        let mut found = Recorded::default();
        for e in std::fs::read_dir(&self.dir).ok()?.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().filter(|n| names::is_full_id(n)) else {
                continue;
            };
            let dir = e.path();
            let read = std::fs::read_to_string(dir.join(RECORD));
            // The start's mark (an empty record), or an older berthd's `starting` file.
            if read.as_deref().is_ok_and(str::is_empty) || dir.join(STARTING).exists() {
                tracing::info!(container = %id, "a start was interrupted: looking for its process");
                return None;
            }
            let record = match read {
                Ok(r) => Some(Record::parse(&r)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => return None,
            };
            // An older berthd writes `stage1.pid` at each start (and rewrites it when it
            // adopts): another pid than the record's is a process it started.
            if let Some(legacy) = read_pid(&dir.join(LEGACY_STAGE1)) {
                if record.is_none_or(|r| r.stage1 != legacy) {
                    return None;
                }
            }
            let alive = match record {
                Some(r) => ct::open_if_same(r.stage1, r.start).ok()?.map(|fd| (r, fd)),
                None => None,
            };
            match alive {
                Some((r, fd)) => {
                    let p = ProcInfo {
                        stage1: r.stage1,
                        init: r.init,
                    };
                    found.procs.insert(id.to_string(), vec![p]);
                    found.pidfds.insert(id.to_string(), fd);
                }
                None => {
                    // Its recorded process is gone, so is its command (it dies with stage 1):
                    // a live process under the pid its init wrote can only be a later start's
                    // that left no record (an older berthd's, killed before its own file).
                    let init = read_pid(&dir.join("init.pid"));
                    if init.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                        return None;
                    }
                }
            }
        }
        Some(found)
    }

    /// After [`Runtime::scan_processes`]: the records of the processes it found (the next
    /// start-up reads them instead), and no `starting` mark or older berthd's `stage1.pid` left
    /// to make it scan again. No container starts meanwhile (start-up runs before the API).
    pub fn rewrite_records(&self, alive: &BTreeMap<String, Vec<ProcInfo>>) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str().filter(|n| names::is_full_id(n)) else {
                continue;
            };
            let dir = e.path();
            let _ = std::fs::remove_file(dir.join(RECORD));
            if let Some(p) = alive.get(id).and_then(|v| v.first()) {
                write_record(&dir, p.stage1, p.init);
            }
            let _ = std::fs::remove_file(dir.join(STARTING));
            let _ = std::fs::remove_file(dir.join(LEGACY_STAGE1));
        }
    }

    /// After a daemon restart: re-attach to a container whose init still runs (found by
    /// [`Runtime::recorded_processes`] with its `pidfd`, or by [`Runtime::scan_processes`]):
    /// signals go to it, and its exit is recorded.
    pub fn adopt(
        &self,
        d: &Arc<Daemon>,
        c: &ContainerSpec,
        p: ProcInfo,
        pidfd: Option<std::os::fd::OwnedFd>,
    ) {
        let stage1 = p.stage1;
        if let Ok(mut procs) = self.procs.lock() {
            procs.insert(c.id.clone(), stage1);
        }
        let id = c.id.clone();
        let d2 = d.clone();
        // Lines written while no daemon ran get the time of the next stamped line.
        let stamper = crate::logtimes::Stamper::spawn(&self.container_dir(&c.id));
        tokio::spawn(async move {
            // Not our child any more: wait for its end on its pidfd (no wake-up until then),
            // then read the code it left behind.
            let waited = match pidfd {
                Some(fd) => ct::exited_fd(fd).await,
                None => ct::exited(stage1).await,
            };
            if let Err(e) = waited {
                tracing::debug!(container = %id, "no pidfd ({e}): polling for its end");
                while Path::new(&format!("/proc/{stage1}")).exists() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            stamper.finish().await;
            let code = read_exit_file(&d2.runtime.container_dir(&id)).unwrap_or(-1);
            forget_process(&d2.runtime.container_dir(&id));
            if let Ok(mut procs) = d2.runtime.procs.lock() {
                procs.remove(&id);
            }
            d2.container_exited(&id, code).await;
        });
    }

    /// The exit code a container's init left behind.
    pub fn read_exit_code(&self, id: &str) -> Option<i32> {
        read_exit_file(&self.container_dir(id))
    }

    /// Sends `sig` to a running container's init.
    pub fn signal(&self, id: &str, sig: Signal) {
        let pid = self.procs.lock().ok().and_then(|p| p.get(id).copied());
        if let Some(pid) = pid {
            if let Err(e) = ct::signal(pid, sig) {
                tracing::debug!("signalling container {id} (pid {pid}): {e}");
            }
        }
    }

    /// Start-up: removes the directories of containers the store no longer has (a crash
    /// between the store's removal and the files'). Only names shaped like container ids.
    pub fn remove_orphan_dirs(&self, known: &std::collections::BTreeSet<&str>) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        // An older berthd's shared staging directory: empty on the host (every mount on it was
        // made in a container's own mount namespace); `remove_dir` leaves it if it is not.
        let _ = std::fs::remove_dir(self.dir.join(OLD_STAGING));
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if names::is_full_id(name) && !known.contains(name) {
                tracing::info!(container = %name, "removing the files of a removed container");
                self.remove_files(name);
            }
        }
    }

    /// Removes a container's directory.
    pub fn remove_files(&self, id: &str) {
        remove_dir(&self.container_dir(id));
    }

    /// [`Runtime::remove_files`] on a blocking thread, not waited for: once a container's
    /// record is gone nothing refers to its files (a log stream still open reads through its
    /// own descriptors), and removing them cost `rm` 0.4–0.7 ms here (each directory's blocks
    /// are discarded synchronously on this ext4 without a journal, `ext4_free_blocks` →
    /// `blkdev_issue_discard`). A crash before it is done leaves a directory the start-up
    /// removes ([`Runtime::remove_orphan_dirs`]).
    pub fn remove_files_behind(&self, id: &str) {
        let dir = self.container_dir(id);
        tokio::task::spawn_blocking(move || remove_dir(&dir));
    }

    /// Streams a container's logs as Docker multiplexed frames; with `follow`, until it exits.
    pub fn logs(
        &self,
        id: &str,
        opts: LogOptions,
        mut exit: watch::Receiver<Option<i32>>,
        running: bool,
    ) -> mpsc::Receiver<Bytes> {
        let LogOptions {
            follow,
            stdout,
            stderr,
            tail,
            timestamps,
        } = opts;
        let (tx, rx) = mpsc::channel(64);
        let dir = self.container_dir(id);
        // Opened here, before the answer goes out: a client that asks for the logs before it
        // starts the container gets every byte even if the container is gone a moment later.
        let open = |name: &str| {
            std::fs::File::open(dir.join(name))
                .ok()
                .map(tokio::fs::File::from_std)
        };
        let out_file = open("stdout.log");
        let err_file = open("stderr.log");
        tokio::spawn(async move {
            // Files are opened once and kept: a `--rm` container's directory may be deleted
            // while its last output is still being streamed.
            let mut files: [(bool, PathBuf, u8, Option<tokio::fs::File>); 2] = [
                (stdout, dir.join("stdout.log"), stream::STDOUT, out_file),
                (stderr, dir.join("stderr.log"), stream::STDERR, err_file),
            ];
            let mut buf = Vec::new();
            // Partial lines held back until their newline (with timestamps only).
            let mut partial: [Vec<u8>; 2] = Default::default();
            if tail.is_some() || timestamps {
                // What is there now, as lines; the files are left at its end for `follow`.
                if first_lines(&mut files, tail, timestamps, &tx)
                    .await
                    .is_none()
                {
                    return;
                }
            }
            loop {
                // Read the exit state *before* draining: anything written before the exit is
                // then guaranteed to be read in this pass.
                let exited = !running || exit.borrow().is_some();
                let got = if timestamps {
                    drain_stamped(&mut files, &mut buf, &mut partial, exited, &tx).await
                } else {
                    drain(&mut files, &mut buf, &tx, false).await
                };
                let Some(got) = got else {
                    return;
                };
                if !follow || (exited && !got) {
                    return;
                }
                if !got {
                    // Woken by the exit too, so the stream ends (and `berth run` returns) as
                    // soon as the last output is read, not up to 5 ms later.
                    tokio::select! {
                        changed = exit.changed() => {
                            if changed.is_err() {
                                // No exit will be told any more (the container is gone).
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        rx
    }

    /// The output of an attach: what the container writes from now on (raw with a terminal,
    /// else multiplexed frames), until its next exit (it may not have started yet). Its log
    /// files are created if need be, so nothing written after this call is missed.
    pub fn attach_output(
        &self,
        id: &str,
        raw: bool,
        stdout: bool,
        stderr: bool,
        mut exit: watch::Receiver<Option<i32>>,
    ) -> mpsc::Receiver<Bytes> {
        use std::io::Seek;
        let (tx, rx) = mpsc::channel(64);
        let dir = self.container_dir(id);
        let _ = std::fs::create_dir_all(&dir);
        let open = |name: &str| {
            let path = dir.join(name);
            drop(log_file(&path).ok()?);
            let mut f = std::fs::File::open(&path).ok()?;
            f.seek(std::io::SeekFrom::End(0)).ok()?;
            Some(tokio::fs::File::from_std(f))
        };
        let mut files: [(bool, PathBuf, u8, Option<tokio::fs::File>); 2] = [
            (
                stdout,
                dir.join("stdout.log"),
                stream::STDOUT,
                open("stdout.log"),
            ),
            (
                stderr,
                dir.join("stderr.log"),
                stream::STDERR,
                open("stderr.log"),
            ),
        ];
        // Ran since this call: `None` (running) seen once; then the next `Some` ends it.
        let mut ran = exit.borrow_and_update().is_none();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let exited = ran && exit.borrow().is_some();
                let Some(got) = drain(&mut files, &mut buf, &tx, raw).await else {
                    return;
                };
                if exited && !got {
                    return;
                }
                if !got {
                    tokio::select! {
                        changed = exit.changed() => {
                            if changed.is_err() {
                                // The container is gone with its channel: drain and stop.
                                ran = true;
                            } else if exit.borrow_and_update().is_none() {
                                ran = true;
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        rx
    }

    /// Registers an exec session; returns its id.
    pub fn create_exec(&self, container_id: &str, req: ExecRequest) -> String {
        let id = crate::ids::new_id();
        if let Ok(mut execs) = self.execs.lock() {
            execs.insert(
                id.clone(),
                Exec {
                    container_id: container_id.to_string(),
                    cmd: req.cmd,
                    env: req.env,
                    tty: req.tty,
                    attach_stdin: req.attach_stdin,
                    console_size: req.console_size,
                    console: None,
                    exit: watch::channel(None).0,
                },
            );
        }
        id
    }

    /// The container an exec session belongs to.
    pub fn exec_container(&self, id: &str) -> Option<String> {
        let execs = self.execs.lock().ok()?;
        execs.get(id).map(|e| e.container_id.clone())
    }

    /// `(running, exit code)` of an exec session.
    pub fn exec_status(&self, id: &str) -> Option<(bool, Option<i32>)> {
        let execs = self.execs.lock().ok()?;
        let e = execs.get(id)?;
        let code = *e.exit.borrow();
        Some((code.is_none() && e.console.is_some(), code))
    }

    /// `Some(console)` of a known exec session (`None` inside: not started, or no input).
    pub fn exec_console(&self, id: &str) -> Option<Option<Arc<Console>>> {
        let execs = self.execs.lock().ok()?;
        execs.get(id).map(|e| e.console.clone())
    }

    /// Starts an exec session inside the container whose init pid is `init_pid`, with the
    /// container's `privileges`; its output comes as raw bytes (terminal) or multiplexed frames
    /// until it exits.
    pub async fn start_exec(
        &self,
        exec_id: &str,
        init_pid: i32,
        privileges: &berth_kernel::confine::Privileges, // issue 8
        console_size: Option<(u16, u16)>,
    ) -> ApiResult<ExecSession> {
        let (cmd, env, exit, tty, attach_stdin, size) = {
            let execs = self
                .execs
                .lock()
                .map_err(|_| ApiError::internal("exec table lock poisoned"))?;
            let e = execs
                .get(exec_id)
                .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {exec_id}")))?;
            if e.console.is_some() || e.exit.borrow().is_some() {
                return Err(ApiError::conflict(format!(
                    "exec {exec_id} has already been started"
                )));
            }
            (
                e.cmd.clone(),
                e.env.clone(),
                e.exit.clone(),
                e.tty,
                e.attach_stdin,
                console_size.or(e.console_size),
            )
        };
        let mut command = ct::enter_command(&self.init_exe, init_pid, &cmd, &env, privileges, tty);
        let mut socket = None;
        if tty {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| ApiError::internal(format!("creating the console socket: {e}")))?;
            command.stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
            socket = Some(ours);
        } else if attach_stdin {
            command.stdin(Stdio::piped());
        } else {
            command.stdin(Stdio::null());
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = tokio::process::Command::from(command)
            .spawn()
            .map_err(|e| ApiError::internal(format!("starting exec {cmd:?}: {e}")))?;
        let (tx, rx) = mpsc::channel(64);
        // Without a terminal, output is framed by stream; with one, it is one raw stream
        // (berth's own setup errors, before the terminal exists, come through as they are).
        let frame = move |kind: u8, b: &[u8]| -> Bytes {
            if tty {
                Bytes::copy_from_slice(b)
            } else {
                Bytes::from(stream::frame(kind, b))
            }
        };
        let mut pump = None;
        let console = if let Some(socket) = socket {
            let master =
                tokio::task::spawn_blocking(move || berth_kernel::console::receive_master(&socket))
                    .await
                    .ok()
                    .flatten();
            match master {
                Some(master) => {
                    if let Some((rows, cols)) = size {
                        let _ = berth_kernel::console::resize(&master, rows, cols);
                    }
                    let out = tx.clone();
                    pump = Some(crate::console::pump_master(&master, move |b| {
                        // A client that is gone loses the output; the process goes on.
                        let _ = out.blocking_send(Bytes::copy_from_slice(b));
                    }));
                    Some(Arc::new(Console::tty(master, true).map_err(|e| {
                        ApiError::internal(format!("keeping the exec's terminal: {e}"))
                    })?))
                }
                None => None,
            }
        } else {
            child.stdin.take().map(|s| Arc::new(Console::pipe(s, true)))
        };
        if let Ok(mut execs) = self.execs.lock() {
            if let Some(e) = execs.get_mut(exec_id) {
                // Marks it started even without input.
                e.console = Some(
                    console
                        .clone()
                        .unwrap_or_else(|| Arc::new(Console::pipe(tokio::io::sink(), false))),
                );
            }
        }
        let out = child.stdout.take();
        let err = child.stderr.take();
        tokio::spawn(async move {
            let pump_pipe = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                             kind: u8,
                             tx: mpsc::Sender<Bytes>| async move {
                let Some(mut r) = r else { return };
                let mut buf = vec![0u8; 16384];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tx.send(frame(kind, &buf[..n])).await.is_err() {
                                // The client left: keep draining so the process never blocks.
                                continue;
                            }
                        }
                    }
                }
            };
            let a = pump_pipe(out.map(|o| Box::new(o) as _), stream::STDOUT, tx.clone());
            let b = pump_pipe(err.map(|o| Box::new(o) as _), stream::STDERR, tx.clone());
            tokio::join!(a, b);
            let code = match child.wait().await {
                Ok(s) => exit_code(s),
                Err(_) => -1,
            };
            if let Some(pump) = pump {
                pump.wait(Duration::from_secs(5)).await;
            }
            // Recorded before the stream ends: a client inspects the exec right after.
            exit.send_replace(Some(code));
            drop(tx);
        });
        Ok(ExecSession {
            output: rx,
            console,
            tty,
        })
    }
}

/// Sends what was appended to `files` since the last call (framed by stream unless `raw`);
/// `Some(anything sent)`, `None` once the client is gone.
/// What `GET /containers/{id}/logs` asks for.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Keep streaming until the container exits.
    pub follow: bool,
    /// Include its stdout.
    pub stdout: bool,
    /// Include its stderr.
    pub stderr: bool,
    /// Only the last this many lines of what is logged so far (`None`: all).
    pub tail: Option<usize>,
    /// Each line prefixed by its time (RFC 3339, nanoseconds) and a space.
    pub timestamps: bool,
}

/// Sends what the log files hold now as lines: both streams merged by time, the last `tail`
/// of them, each prefixed by its time if asked. `None` if the client is gone.
async fn first_lines(
    files: &mut [(bool, PathBuf, u8, Option<tokio::fs::File>); 2],
    tail: Option<usize>,
    timestamps: bool,
    tx: &mpsc::Sender<Bytes>,
) -> Option<()> {
    let mut all: Vec<(crate::logtimes::Line, u8)> = Vec::new();
    for (wanted, path, kind, file) in files.iter_mut() {
        if !*wanted {
            continue;
        }
        if file.is_none() {
            *file = tokio::fs::File::open(&*path).await.ok();
        }
        let Some(f) = file.as_mut() else { continue };
        let mut content = Vec::new();
        if f.read_to_end(&mut content).await.is_err() {
            continue;
        }
        let index = tokio::fs::read_to_string(crate::logtimes::times_path(path))
            .await
            .unwrap_or_default();
        let fallback = match f.metadata().await.and_then(|m| m.modified()) {
            Ok(t) => time::OffsetDateTime::from(t).unix_timestamp_nanos(),
            Err(_) => crate::logtimes::now_nanos(),
        };
        all.extend(
            crate::logtimes::lines(&content, &index, fallback)
                .into_iter()
                .map(|l| (l, *kind)),
        );
    }
    // Stable: on equal times stdout's lines come first, each stream in its own order.
    all.sort_by_key(|(l, _)| l.nanos);
    let skip = tail.map_or(0, |n| all.len().saturating_sub(n));
    for (line, kind) in all.into_iter().skip(skip) {
        let payload = if timestamps {
            stamped(line.nanos, &line.bytes)
        } else {
            line.bytes
        };
        tx.send(Bytes::from(stream::frame(kind, &payload)))
            .await
            .ok()?;
    }
    Some(())
}

fn stamped(nanos: i128, line: &[u8]) -> Vec<u8> {
    let mut out = crate::logtimes::rfc3339_nano(nanos).into_bytes();
    out.push(b' ');
    out.extend_from_slice(line);
    out
}

/// As [`drain`], a frame per complete line prefixed by the time it was read; a partial line
/// waits in `partial` for its newline, or for the exit (`flush`).
async fn drain_stamped(
    files: &mut [(bool, PathBuf, u8, Option<tokio::fs::File>); 2],
    buf: &mut Vec<u8>,
    partial: &mut [Vec<u8>; 2],
    flush: bool,
    tx: &mpsc::Sender<Bytes>,
) -> Option<bool> {
    let mut got = false;
    for ((wanted, path, kind, file), held) in files.iter_mut().zip(partial.iter_mut()) {
        if !*wanted {
            continue;
        }
        if read_more(path, file, buf).await {
            got = true;
            held.extend_from_slice(buf);
        }
        let now = crate::logtimes::now_nanos();
        let complete = held.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let upto = if flush && !got { held.len() } else { complete };
        let rest = held.split_off(upto);
        for line in crate::logtimes::lines(held, "", now) {
            tx.send(Bytes::from(stream::frame(
                *kind,
                &stamped(now, &line.bytes),
            )))
            .await
            .ok()?;
        }
        *held = rest;
    }
    Some(got)
}

/// Reads into `buf` what was appended to a log since the last read (opening it first if it
/// did not exist yet); whether there was anything.
async fn read_more(path: &Path, file: &mut Option<tokio::fs::File>, buf: &mut Vec<u8>) -> bool {
    if file.is_none() {
        *file = tokio::fs::File::open(path).await.ok();
    }
    let Some(f) = file.as_mut() else {
        return false;
    };
    buf.clear();
    matches!(f.read_to_end(buf).await, Ok(n) if n > 0)
}

async fn drain(
    files: &mut [(bool, PathBuf, u8, Option<tokio::fs::File>); 2],
    buf: &mut Vec<u8>,
    tx: &mpsc::Sender<Bytes>,
    raw: bool,
) -> Option<bool> {
    let mut got = false;
    for (wanted, path, kind, file) in files.iter_mut() {
        if !*wanted {
            continue;
        }
        if read_more(path, file, buf).await {
            got = true;
            let chunk = if raw {
                Bytes::copy_from_slice(buf)
            } else {
                Bytes::from(stream::frame(*kind, buf))
            };
            if tx.send(chunk).await.is_err() {
                return None;
            }
        }
    }
    Some(got)
}

/// A container's processes as found on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    /// Stage-1 init (the process berthd signals).
    pub stage1: i32,
    /// The container's init (pid 1 inside), or stage 1 until it is known.
    pub init: i32,
}

/// What [`Runtime::recorded_processes`] found.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The running containers' processes, by container id.
    pub procs: BTreeMap<String, Vec<ProcInfo>>,
    /// A pidfd of each one's stage 1, by container id.
    pub pidfds: HashMap<String, std::os::fd::OwnedFd>,
}

/// A container's record of its running processes: `STAGE1 START INIT\n` (stage 1's pid and
/// start time in clock ticks after boot, the container init's pid), written once its command
/// runs. Made empty just before the init is spawned: empty, it marks a start in progress.
const RECORD: &str = "process";
/// The empty directory, in the containers' directory, that older berthds' container inits
/// assembled their view of the host's root on before entering it with `pivot_root` (the view is
/// now assembled on the mount namespace's own root): removed at start-up when empty.
const OLD_STAGING: &str = ".root";
/// An older berthd's mark of a start in progress (present from just before a container's init
/// was spawned until its record was written): still honoured, removed after a scan.
const STARTING: &str = "starting";
/// The stage-1 pid that berthd versions before the records wrote at each start and adoption.
const LEGACY_STAGE1: &str = "stage1.pid";

/// Records `stage1` (a process that cannot have been reaped yet) and the container's `init` in
/// `dir`'s [`RECORD`], which is empty (the start's mark) or absent. Without stage 1's start
/// time nothing is written and the mark stays: the next start-up then scans /proc rather than
/// trust less.
fn write_record(dir: &Path, stage1: i32, init: i32) {
    let Some(start) = ct::start_time(stage1) else {
        return;
    };
    // Written into the empty mark (no truncation or rename over an old file, which make ext4
    // flush it at close), in one `write`; a crash before it leaves the mark, and a record
    // without its final newline is never trusted.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(RECORD))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(format!("{stage1} {start} {init}\n").as_bytes())
        });
    if let Err(e) = written {
        tracing::debug!("recording stage 1 in {}: {e}", dir.display());
    }
}

/// After its process exited: its record and the pid its init wrote go, so that a start-up finds
/// no pid of this run that another process may have taken since.
fn forget_process(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(RECORD));
    let _ = std::fs::remove_file(dir.join("init.pid"));
}

/// A container's [`RECORD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    stage1: i32,
    start: u64,
    init: i32,
}

impl Record {
    /// `STAGE1 START INIT\n`, `None` if malformed or without its final newline (torn).
    fn parse(s: &str) -> Option<Record> {
        let mut it = s.strip_suffix('\n')?.split_whitespace();
        let stage1 = it.next()?.parse().ok().filter(|p| *p > 0)?;
        let start = it.next()?.parse().ok()?;
        let init = it.next()?.parse().ok().filter(|p| *p > 0)?;
        it.next().is_none().then_some(Record {
            stage1,
            start,
            init,
        })
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn read_exit_file(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("exit"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Opens (creating it `0600`, root's alone) a container's log file for appending.
pub fn log_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Removes a container's directory `dir` (already gone is fine).
fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", dir.display());
        }
    }
}

/// Overwrites `path` from its start and then sets its length, instead of truncating it first
/// (`O_TRUNC`): truncating to 0 frees the file's block and the write allocates one again,
/// an ext4 journal update each (≈ 250 µs per rewrite of a `hosts` file on this machine,
/// against ≈ 12 µs this way). The inode stays the same, which the container's bind mount
/// needs. A reader may see the file between the two calls, as it could see it empty before.
fn write_in_place(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(content)?;
    f.set_len(content.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A runtime over a fresh directory, and one container directory in it.
    fn runtime_with_container(tag: &str) -> (Runtime, PathBuf, String) {
        let root = std::env::temp_dir().join(format!("berth-rec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let id = format!("{:064x}", 0xbe27u32);
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir).expect("container dir");
        (Runtime::new(root), dir, id)
    }

    fn me() -> (i32, u64) {
        let pid = i32::try_from(std::process::id()).expect("pid");
        (pid, ct::start_time(pid).expect("own start time"))
    }

    /// A recorded process that still runs is adopted with its pidfd and the pid its init
    /// wrote; without any record or mark, a container has no process.
    #[test]
    fn a_record_of_a_running_process_is_adopted() {
        let (rt, dir, id) = runtime_with_container("alive");
        let (pid, start) = me();
        std::fs::write(dir.join(RECORD), format!("{pid} {start} 4242\n")).expect("record");
        let found = rt.recorded_processes().expect("trusted");
        assert_eq!(
            found.procs.get(&id),
            Some(&vec![ProcInfo {
                stage1: pid,
                init: 4242
            }])
        );
        assert!(found.pidfds.contains_key(&id));
        std::fs::remove_file(dir.join(RECORD)).expect("rm");
        assert!(rt.recorded_processes().expect("trusted").procs.is_empty());
        let _ = std::fs::remove_dir_all(dir.parent().expect("root"));
    }

    /// A start's empty mark becomes its record in place (the same file, no other made or
    /// deleted), and that record is trusted.
    #[test]
    fn the_starts_mark_becomes_its_record() {
        let (rt, dir, id) = runtime_with_container("mark");
        let (pid, _) = me();
        std::fs::write(dir.join(RECORD), "").expect("mark");
        let ino = std::fs::metadata(dir.join(RECORD)).expect("stat").ino();
        write_record(&dir, pid, 4242);
        assert_eq!(
            std::fs::metadata(dir.join(RECORD)).expect("stat").ino(),
            ino
        );
        let found = rt.recorded_processes().expect("trusted");
        assert_eq!(found.procs.get(&id).map(|v| v[0].init), Some(4242));
        let _ = std::fs::remove_dir_all(dir.parent().expect("root"));
    }

    /// A pid now held by another process than the recorded one (another start time) is
    /// not adopted: the container's process is gone.
    #[test]
    fn a_reused_pid_is_not_adopted() {
        let (rt, dir, id) = runtime_with_container("reused");
        let (pid, start) = me();
        std::fs::write(dir.join(RECORD), format!("{pid} {} {pid}\n", start + 1)).expect("record");
        let found = rt.recorded_processes().expect("trusted");
        assert!(!found.procs.contains_key(&id));
        let _ = std::fs::remove_dir_all(dir.parent().expect("root"));
    }

    /// What only a walk of /proc can settle: a start interrupted before its record, a torn
    /// record, an older berthd's start (its `stage1.pid` names another pid than the record, or
    /// its init's pid runs while the record's process is gone).
    #[test]
    fn untrusted_records_make_start_up_scan() {
        let (rt, dir, _) = runtime_with_container("scan");
        let (pid, start) = me();
        std::fs::write(dir.join(RECORD), "").expect("mark");
        assert!(rt.recorded_processes().is_none(), "interrupted start");
        std::fs::remove_file(dir.join(RECORD)).expect("rm");
        std::fs::File::create(dir.join(STARTING)).expect("mark");
        assert!(
            rt.recorded_processes().is_none(),
            "an older berthd's interrupted start"
        );
        std::fs::remove_file(dir.join(STARTING)).expect("rm");
        std::fs::write(dir.join(RECORD), format!("{pid} {start}")).expect("record");
        assert!(rt.recorded_processes().is_none(), "torn record");
        std::fs::write(dir.join(RECORD), format!("{pid} {start} {pid}")).expect("record");
        assert!(rt.recorded_processes().is_none(), "torn before its newline");
        std::fs::write(dir.join(RECORD), format!("{pid} {start} {pid}\n")).expect("record");
        std::fs::write(dir.join(LEGACY_STAGE1), format!("{}", pid + 1)).expect("legacy");
        assert!(rt.recorded_processes().is_none(), "another berthd's start");
        // An older berthd's adoption rewrites the same pid: nothing new.
        std::fs::write(dir.join(LEGACY_STAGE1), format!("{pid}")).expect("legacy");
        assert!(rt.recorded_processes().is_some(), "same pid");
        std::fs::write(dir.join(RECORD), format!("{pid} {} {pid}\n", start + 1)).expect("record");
        std::fs::remove_file(dir.join(LEGACY_STAGE1)).expect("rm");
        std::fs::write(dir.join("init.pid"), format!("{pid}")).expect("init.pid");
        assert!(
            rt.recorded_processes().is_none(),
            "a live init the record does not name"
        );
        let _ = std::fs::remove_dir_all(dir.parent().expect("root"));
    }

    /// After a scan, the processes it found are recorded and the marks that made it scan
    /// are gone: the next start-up trusts the records.
    #[test]
    fn rewritten_records_are_trusted_next_time() {
        let (rt, dir, id) = runtime_with_container("rewrite");
        let (pid, _) = me();
        std::fs::File::create(dir.join(STARTING)).expect("mark");
        std::fs::write(dir.join(LEGACY_STAGE1), "1").expect("legacy");
        let alive = BTreeMap::from([(
            id.clone(),
            vec![ProcInfo {
                stage1: pid,
                init: pid,
            }],
        )]);
        rt.rewrite_records(&alive);
        let found = rt.recorded_processes().expect("trusted");
        assert_eq!(found.procs.get(&id).map(|v| v[0].stage1), Some(pid));
        let _ = std::fs::remove_dir_all(dir.parent().expect("root"));
    }

    /// Growing and shrinking rewrites leave exactly the new content, in the same inode (what a
    /// container's bind mount of the file sees).
    #[test]
    fn write_in_place_keeps_the_inode_and_the_exact_content() {
        let dir = std::env::temp_dir().join(format!("berth-wip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("hosts");
        write_in_place(&path, b"127.0.0.1 localhost\n").expect("create");
        let ino = std::fs::metadata(&path).expect("stat").ino();
        for content in [
            &b"127.0.0.1 localhost\n10.1.0.2 web\n10.2.0.2 web\n"[..],
            b"127.0.0.1 localhost\n",
            b"",
            b"::1 localhost\n",
        ] {
            write_in_place(&path, content).expect("rewrite");
            assert_eq!(std::fs::read(&path).expect("read"), content);
            assert_eq!(std::fs::metadata(&path).expect("stat").ino(), ino);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
