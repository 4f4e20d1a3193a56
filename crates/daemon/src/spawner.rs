//! Container inits spawned from a thread with a small file descriptor table of its own.
//!
//! A process spawned from berthd starts with a copy of the spawning thread's descriptor table
//! (`clone` without `CLONE_FILES`: `dup_fd`), and its `execve` closes every close-on-exec
//! descriptor of that copy. berthd holds tens of thousands at 1,000 containers (ten `[::1]`
//! relay sockets per container, pidfds, namespace and netlink sockets): at starts 951–1000
//! those two walks were ~10 % of the profile of berthd and its inits, growing with every
//! container (docs/PERFORMANCE.md). The spawner thread gets a private table holding only the
//! standard streams when berthd starts ([`berth_kernel::sys::own_small_fd_table`]), takes a
//! copy of each init's three stdio descriptors from the shared table (`pidfd_getfd` on
//! berthd's own pidfd) and spawns from there: the init's table is those three, whatever
//! berthd holds.
//!
//! A descriptor number means another file (or none) on the spawner thread than on every
//! other thread, so the thread touches nothing of the shared table: no tokio (waking a task
//! writes the runtime's eventfd by its number: the first version of this module did that
//! from here, got `EBADF`, panicked after the reply was stored and left its caller waiting
//! for a wake-up that never came), no logging, no descriptor it did not open itself. Its
//! only links with the rest of berthd are two std channels (futexes). The caller blocks on
//! the reply as it blocked on the spawn it replaces (`posix_spawn` returns once the child
//! has exec'd).
//!
//! The init is still berthd's child (the thread is berthd's): it is waited for on a pidfd,
//! then reaped with `waitpid` (see [`Init::wait`]). Should the thread not get its table
//! (a kernel before 5.9) or end, inits are spawned in place as before.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

/// Spawns container inits (see the module's documentation).
pub struct Spawner {
    /// The spawner thread's queue; `None`: spawn in place.
    jobs: Option<mpsc::Sender<Job>>,
}

/// One init to spawn: the command (no stdio set, no descriptor of its own: it is dropped on
/// the spawner thread, where a number would close another file) and the raw numbers of its
/// stdin (`None`: `/dev/null`), stdout and stderr in berthd's shared table, held open by the
/// caller until the reply.
struct Job {
    cmd: Command,
    stdio: [Option<RawFd>; 3],
    reply: mpsc::SyncSender<io::Result<Child>>,
}

impl Spawner {
    /// Starts the spawner thread and waits until it has its own table.
    pub fn start() -> Spawner {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<io::Result<()>>();
        let started = std::thread::Builder::new()
            .name("berth-spawner".into())
            .spawn(move || run(queue, ready_tx));
        let ok = match started {
            Ok(_) => match ready.recv() {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!("container init spawner: {e}");
                    false
                }
                Err(_) => false,
            },
            Err(e) => {
                tracing::warn!("container init spawner: starting its thread: {e}");
                false
            }
        };
        if !ok {
            tracing::info!("container inits are spawned from berthd's own descriptor table");
        }
        Spawner {
            jobs: ok.then_some(jobs),
        }
    }

    /// A spawner that spawns in place (tests, and the fallback).
    #[cfg(test)]
    pub fn in_place() -> Spawner {
        Spawner { jobs: None }
    }

    /// Spawns `cmd` (no stdio set) with `stdin` (`None`: `/dev/null`), `stdout` and
    /// `stderr`. Blocks until the init has exec'd, or failed to (its error).
    pub fn spawn(
        &self,
        mut cmd: Command,
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Init> {
        if let Some(jobs) = &self.jobs {
            let (reply, replied) = mpsc::sync_channel(1);
            let job = Job {
                cmd,
                stdio: [
                    stdin.as_ref().map(AsRawFd::as_raw_fd),
                    Some(stdout.as_raw_fd()),
                    Some(stderr.as_raw_fd()),
                ],
                reply,
            };
            match jobs.send(job) {
                Ok(()) => {
                    // The descriptors stay open (their numbers mean them) until the spawner
                    // has its copies: they are dropped after the reply.
                    let got = replied.recv();
                    drop((stdin, stdout, stderr));
                    return match got {
                        Ok(spawned) => spawned.map(Init::new),
                        Err(_) => Err(io::Error::other("the init spawner thread ended")),
                    };
                }
                // The thread is gone: in place.
                Err(mpsc::SendError(job)) => cmd = job.cmd,
            }
        }
        cmd.stdin(stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        cmd.spawn().map(Init::new)
    }
}

/// The spawner thread: its own table first (told on `ready`), then one job at a time.
fn run(queue: mpsc::Receiver<Job>, ready: mpsc::Sender<io::Result<()>>) {
    let me = berth_kernel::sys::own_small_fd_table().and_then(|()| {
        let pid = rustix::process::getpid();
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(io::Error::from)
    });
    let me = match me {
        Ok(me) => me,
        Err(e) => {
            // Told to the caller, which logs it (logging from here could write to a
            // descriptor number of the shared table).
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    for job in queue {
        let spawned = spawn_job(&me, job.cmd, job.stdio);
        // The caller waits for this reply before it closes the descriptors it lent.
        let _ = job.reply.send(spawned);
    }
}

/// Copies the job's stdio from berthd's shared table (`pidfd_getfd` of berthd's own pidfd
/// `me`) into this thread's and spawns; the copies close with `cmd` once it has spawned.
fn spawn_job(me: &OwnedFd, mut cmd: Command, stdio: [Option<RawFd>; 3]) -> io::Result<Child> {
    let take = |fd: Option<RawFd>| -> io::Result<Stdio> {
        match fd {
            None => Ok(Stdio::null()),
            Some(fd) => {
                rustix::process::pidfd_getfd(me, fd, rustix::process::PidfdGetfdFlags::empty())
                    .map(Stdio::from)
                    .map_err(io::Error::from)
            }
        }
    };
    let [i, o, e] = stdio;
    cmd.stdin(take(i)?).stdout(take(o)?).stderr(take(e)?);
    cmd.spawn()
}

/// A spawned init (berthd's child).
pub struct Init {
    child: Child,
    /// Readable once it exited; `None` without pidfds (then waited for on a blocking thread).
    pidfd: Option<OwnedFd>,
}

impl Init {
    fn new(child: Child) -> Init {
        // Our unreaped child: its pid names it until we wait for it.
        let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        Init { child, pidfd }
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Reaps it if it has exited already.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits (without a thread) until it exits, then reaps it.
    pub async fn wait(mut self) -> io::Result<ExitStatus> {
        if let Some(fd) = self.pidfd.take() {
            berth_kernel::container::exited_fd(fd).await?;
            // Exited: a zombie until this reaps it, so the wait returns at once.
            return self.child.wait();
        }
        tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .map_err(io::Error::other)?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use std::time::Duration;

    /// The size of process `pid`'s descriptor table (`FDSize`: what its `clone` copied, kept
    /// across `execve`).
    fn table_size(pid: u32) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Spawns `sh -c SCRIPT` blocked on its stdin until the returned writer is dropped, with
    /// its output in `dir`; returns the init and the writer.
    fn blocked_sh(
        spawner: &Spawner,
        dir: &std::path::Path,
        script: &str,
    ) -> (Init, std::io::PipeWriter) {
        let out = std::fs::File::create(dir.join("out")).unwrap();
        let err = std::fs::File::create(dir.join("err")).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        let (r, w) = std::io::pipe().unwrap();
        let init = spawner
            .spawn(cmd, Some(r.into()), out.into(), err.into())
            .unwrap();
        (init, w)
    }

    /// Runs `f` on a thread of its own and fails if it has not returned within a minute: a
    /// spawner that never replies fails the test instead of hanging it.
    fn within_a_minute(f: impl FnOnce() + Send + 'static) {
        let (done, finished) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => worker.join().unwrap(),
            // The thread panicked: its panic is the failure.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no reply from the spawner in 60 s"),
        }
    }

    /// An init spawned by the spawner starts from a table of its own few descriptors whatever
    /// the daemon holds (here 600 more: the table its `clone` used to copy, and its `execve`
    /// to close), writes where it was told and is waited for with its exit code; its stdin's
    /// writer closed, it reads EOF (no copy of the pipe is left on the spawner's side);
    /// spawned in place it gets a copy of the daemon's whole table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inits_start_from_a_small_table() {
        let dir = tempfile::tempdir().unwrap();
        let held: Vec<std::fs::File> = (0..600)
            .map(|i| std::fs::File::create(dir.path().join(format!("f{i}"))).unwrap())
            .collect();
        let spawner = Spawner::start();
        assert!(spawner.jobs.is_some(), "no spawner thread");
        let script = "echo out; echo err >&2; read -r x; exit 7";
        let (init, w) = blocked_sh(&spawner, dir.path(), script);
        // 64: the smallest table (NR_OPEN_DEFAULT), not one of 600 and more.
        assert_eq!(table_size(init.id()), 64);
        drop(w);
        let waited = tokio::time::timeout(Duration::from_secs(60), init.wait()).await;
        assert_eq!(waited.unwrap().unwrap().code(), Some(7));
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!((read("out"), read("err")), ("out\n".into(), "err\n".into()));
        // The daemon's own descriptors are all still open.
        assert!(held.iter().all(|f| f.metadata().is_ok()));

        let (init, w) = blocked_sh(&Spawner::in_place(), dir.path(), script);
        assert!(table_size(init.id()) > 600);
        drop(w);
        assert_eq!(init.wait().await.unwrap().code(), Some(7));
    }

    /// Spawns in a row from a runtime whose workers are parked (waking one writes its
    /// eventfd): every spawn is answered. The first version of the spawner woke its caller's
    /// task from the spawner thread, whose private table has no such descriptor: `EBADF`, a
    /// panic, and a caller waiting for ever, in most runs of its own test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_spawn_is_answered_while_the_runtime_sleeps() {
        let spawner = std::sync::Arc::new(Spawner::start());
        assert!(spawner.jobs.is_some(), "no spawner thread");
        let handle = tokio::runtime::Handle::current();
        within_a_minute(move || {
            for _ in 0..20 {
                // The workers park in epoll_wait meanwhile.
                std::thread::sleep(Duration::from_millis(5));
                let s = spawner.clone();
                let spawned = handle.block_on(async move {
                    tokio::spawn(async move {
                        let null = || OwnedFd::from(std::fs::File::create("/dev/null").unwrap());
                        s.spawn(Command::new("/bin/true"), None, null(), null())
                    })
                    .await
                    .unwrap()
                });
                let code = handle.block_on(spawned.unwrap().wait()).unwrap().code();
                assert_eq!(code, Some(0));
            }
        });
    }

    /// A command that cannot be exec'd is refused with the exec's error (the spawn fails, no
    /// process is left), and the spawner goes on spawning.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exec_failure_is_the_spawns_error() {
        let spawner = Spawner::start();
        assert!(spawner.jobs.is_some(), "no spawner thread");
        let null = || OwnedFd::from(std::fs::File::create("/dev/null").unwrap());
        let missing = Command::new("/nonexistent/berth-init");
        let e = spawner.spawn(missing, None, null(), null()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let dir = tempfile::tempdir().unwrap();
        let not_executable = dir.path().join("init");
        std::fs::write(&not_executable, "not a program").unwrap();
        let e = spawner
            .spawn(Command::new(&not_executable), None, null(), null())
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        let ok = spawner.spawn(Command::new("/bin/true"), None, null(), null());
        assert_eq!(ok.unwrap().wait().await.unwrap().code(), Some(0));
    }
}
