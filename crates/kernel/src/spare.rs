//! Threads made ahead of the jobs that take them.
//!
//! Work inside a container's network namespace runs on a thread of its own that
//! `setns(CLONE_NEWNET)`s there and then exits: a thread that entered another namespace never
//! serves berthd again. Spawning that thread was on the path of every connect, disconnect and
//! start: `clone3`, its stack's `mmap`, and the time until the new thread first runs, 0.14–0.19
//! ms median (up to 0.8) between the spawn and the thread's first instruction while the
//! runtime's workers plan the same call (`berth-endpoint`'s `thread_start_us`, stop 39). So one
//! thread is kept made, parked on a channel: a job wakes it (a futex wake, a few µs when a CPU is
//! free), and a maker thread makes the next one a little after that job has ended
//! (`REFILL_DELAY`), off the call's path.
//! A job that finds no spare (two at once, or one right after another) gets a thread spawned
//! for it, as before.
//!
//! A spare is exactly what a spawned thread would be: made by the maker, which never enters
//! another namespace and was made by berthd's own threads, it runs one job and exits. Either
//! kind exits [`EXIT_DELAY`] after its job, not at once: a thread's exit frees its memory with
//! a TLB shootdown that held up the call it had just served. Idle, nothing runs: the spare
//! waits in `recv`, the maker too, a thread done with its job sleeps. A spare is woken onto
//! another CPU than its caller's ([`away_from_this_cpu`]); a spawned thread is placed by the
//! scheduler alone.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, SendError, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::thread::{CpuSet, Pid};

/// How long the maker waits, after a job that took the spare ended, before it makes the next.
/// The job's end is when its call finishes (a connect's pass, the answer and the store's flush
/// are then running): made at once, the next spare's `clone3` and first run (its procfs
/// instance: `fsopen`, `fsmount`) competed with them for the 2 CPUs. 3 ms later they are
/// done; a job that comes sooner gets a thread spawned, as when no spare is ready
/// (`connect_ab.sh`, both slots, stop 47: connect 0.13–0.16 ms and disconnect 0.11–0.13 ms
/// quicker; `run --rm` unchanged, 7.11 / 7.03 ms).
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(3);

/// How long a thread lingers after its job before it exits. A thread's exit is work of its own
/// that ran inside the call it served, a few µs after its result: mimalloc's `_mi_thread_done`
/// frees the thread's pages and, with the purge delay 0 (`sys::purge_freed_pages_at_once`),
/// `madvise`s them at once, whose TLB shootdown interrupts the other vCPU and spins until it
/// answers (`smp_call_function_many_cond`: 8.6 % of a connect's endpoint thread's samples,
/// ≈ 0.1 ms per thread), and glibc `madvise`s the unused part of the thread's stack. The call's
/// answer (≈ 0.1–0.3 ms after the job's end) and the CLI's exit waited for that vCPU:
/// lingering 5 ms, the exit comes after them (`connect_ab.sh`, both slots, stop 51: connect
/// 0.46–0.50 ms and disconnect 0.34–0.35 ms quicker). A lingering thread only sleeps.
pub const EXIT_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// What a thread runs.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// A parked spare: its job slot, and its thread id (for [`away_from_this_cpu`]) when it told.
type Parked = (SyncSender<Job>, Option<Pid>);

/// A parked thread and its maker (see the module documentation).
pub struct Spares {
    /// The parked thread's job slot, when one is ready.
    ready: Arc<Mutex<Option<Parked>>>,
    /// Asks the maker for the next spare (one message per spare taken); `None` when the maker
    /// could not be started.
    refill: Option<Sender<()>>,
    /// Jobs run on a spare.
    taken: AtomicU64,
    /// Jobs that found none and got a thread spawned.
    spawned: AtomicU64,
    /// How long a thread lingers after its job ([`EXIT_DELAY`]).
    linger: std::time::Duration,
}

impl Spares {
    /// Starts the maker, which makes the first spare at once.
    pub fn start() -> Spares {
        Spares::start_lingering(EXIT_DELAY)
    }

    /// [`Spares::start`] with threads that linger `linger` after their job before they exit.
    pub fn start_lingering(linger: std::time::Duration) -> Spares {
        let ready: Arc<Mutex<Option<Parked>>> = Arc::default();
        let (tx, rx) = channel::<()>();
        let slot = Arc::clone(&ready);
        let maker = std::thread::Builder::new()
            .name("berth-spare-maker".into())
            .spawn(move || {
                loop {
                    let (job_tx, job_rx) = sync_channel::<Job>(1);
                    let (tid_tx, tid_rx) = sync_channel(1);
                    let made = std::thread::Builder::new()
                        .name("berth-spare".into())
                        .spawn(move || {
                            let _ = tid_tx.send(rustix::thread::gettid());
                            // Off any call's path: what a job in a container namespace
                            // would otherwise make first (`crate::sysctl::prepare_thread`).
                            crate::sysctl::prepare_thread();
                            // The sender dropped (the maker's end at exit): nothing to do.
                            if let Ok(job) = job_rx.recv() {
                                run_then_linger(job, linger);
                            }
                        });
                    match made {
                        Ok(_) => {
                            let tid = tid_rx.recv().ok();
                            if let Ok(mut r) = slot.lock() {
                                *r = Some((job_tx, tid));
                            }
                        }
                        // Out of threads for now: jobs spawn their own (and fail the same way
                        // if the system still cannot make one); the next take asks again.
                        Err(e) => tracing::warn!("making a spare thread: {e}"),
                    }
                    // Until a spare is taken (or every sender is gone: the process exits).
                    if rx.recv().is_err() {
                        return;
                    }
                    std::thread::sleep(REFILL_DELAY);
                }
            });
        let refill = match maker {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(
                    "starting the spare-thread maker (threads are spawned per job): {e}"
                );
                None
            }
        };
        Spares {
            ready,
            refill,
            taken: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            linger,
        }
    }

    /// Runs `job` on a thread that runs nothing else: the spare if one is ready (then the
    /// maker makes the next), else a thread spawned now. `name` names a spawned thread and
    /// renames the spare (`PR_SET_NAME`, ≤ 15 bytes shown), for `top -H` and `perf`.
    pub fn run(&self, name: &str, job: Job) -> std::io::Result<()> {
        let slot = self.ready.lock().ok().and_then(|mut r| r.take());
        let job = match slot {
            Some((slot, tid)) => {
                // Woken from here, the spare would be queued on this CPU behind the caller,
                // which goes on with the same call (see `away_from_this_cpu`).
                let restore = tid.and_then(away_from_this_cpu);
                // The next spare is asked for when this job ends (a panic included): made at
                // the take, its `clone3` and first run competed for a CPU with the job and the
                // call's planning (on 2 cores the spare then waited as long as a spawn did).
                let refill = Refill(self.refill.clone());
                let named = CString::new(name).ok();
                let job: Job = Box::new(move || {
                    // Running now, elsewhere: free to move again, as any thread.
                    if let Some(set) = restore {
                        let _ = rustix::thread::sched_setaffinity(None, &set);
                    }
                    let _refill = refill;
                    if let Some(n) = named {
                        let _ = rustix::thread::set_name(&n);
                    }
                    job();
                });
                match slot.send(job) {
                    Ok(()) => {
                        self.taken.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // The spare is gone (it cannot be, short of a kill of that one thread):
                    // the job gets a thread of its own.
                    Err(SendError(job)) => job,
                }
            }
            None => job,
        };
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let linger = self.linger;
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run_then_linger(job, linger))
            .map(drop)
    }

    /// Jobs run on a spare and jobs that got a thread spawned, since the start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.spawned.load(Ordering::Relaxed),
        )
    }

    /// Whether a spare is parked now.
    pub fn is_ready(&self) -> bool {
        self.ready.lock().is_ok_and(|r| r.is_some())
    }
}

/// Runs `job`, then sleeps `linger` ([`EXIT_DELAY`]) so that the thread's exit comes after the
/// call it served.
fn run_then_linger(job: Job, linger: std::time::Duration) {
    job();
    std::thread::sleep(linger);
}

/// Keeps thread `tid` (a parked spare about to be woken) off the calling thread's CPU:
/// `sched_setaffinity(tid, its CPUs minus this one)`; returns the set it had, which the job
/// puts back once it runs. `None` (nothing changed) when this CPU was not in its set or it has
/// no other.
///
/// Why: the caller goes on with the same call (a connect's worker stores the intent and plans
/// the pass while the endpoint's thread makes the veth), and a wake-up from it may leave the
/// woken thread queued on this CPU while the other idles: `select_idle_sibling` moves a wakee
/// only to a CPU `available_idle_cpu` calls idle, which on a VM excludes a vCPU the host
/// reports preempted (`vcpu_is_preempted`; the likely cause here, not traced). A `perf sched`
/// timeline of a connect showed the endpoint's thread and the worker sharing one vCPU for
/// 1.7 ms while the other stayed idle; kept off it, connect is 0.23–0.38 ms and disconnect
/// 0.31–0.43 ms quicker, and `run --rm --network NET` 0.17–0.92 ms (stop 51, both slots, while
/// the host ran the vCPUs promptly; ≈ 0.1 ms slower, within the noise, in a slow stretch).
fn away_from_this_cpu(tid: Pid) -> Option<CpuSet> {
    let orig = rustix::thread::sched_getaffinity(Some(tid)).ok()?;
    let here = rustix::thread::sched_getcpu();
    if !orig.is_set(here) || orig.count() < 2 {
        return None;
    }
    let mut away = orig;
    away.unset(here);
    rustix::thread::sched_setaffinity(Some(tid), &away).ok()?;
    Some(orig)
}

/// Asks the maker for the next spare when dropped: at the end of the job that took one,
/// whether it returned or panicked.
struct Refill(Option<Sender<()>>);

impl Drop for Refill {
    fn drop(&mut self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(());
        }
    }
}

/// berthd's spares, started at first use.
pub fn global() -> &'static Spares {
    static SPARES: OnceLock<Spares> = OnceLock::new();
    SPARES.get_or_init(Spares::start)
}

/// [`Spares::run`] on berthd's spares.
pub fn run(name: &str, job: Job) -> std::io::Result<()> {
    global().run(name, job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    fn wait_ready(s: &Spares) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.is_ready() {
            assert!(Instant::now() < deadline, "no spare made within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The thread a job ran on, and its name.
    fn run_on(s: &Spares, name: &str) -> (std::thread::ThreadId, String) {
        let (tx, rx) = channel();
        s.run(
            name,
            Box::new(move || {
                let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
                let _ = tx.send((std::thread::current().id(), name.trim().to_string()));
            }),
        )
        .expect("running a job");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the job ran")
    }

    #[test]
    fn each_job_runs_once_on_a_thread_of_its_own_taken_from_the_spare() {
        let s = Spares::start();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..5 {
            wait_ready(&s);
            let (id, name) = run_on(&s, "berth-test");
            assert_ne!(id, std::thread::current().id());
            assert!(seen.insert(format!("{id:?}")), "job {i} reused a thread");
            assert_eq!(name, "berth-test", "the spare takes the job's name");
        }
        // Every job found a spare ready (the maker made the next after each take).
        assert_eq!(s.counts(), (5, 0));
    }

    #[test]
    fn jobs_beyond_the_spare_get_threads_spawned_and_all_run_at_once() {
        let s = Spares::start();
        wait_ready(&s);
        // Eight jobs that can only finish together: none waits for another's thread.
        let n = 8;
        let barrier = Arc::new(Barrier::new(n + 1));
        for _ in 0..n {
            let b = Arc::clone(&barrier);
            s.run(
                "berth-test",
                Box::new(move || {
                    b.wait();
                }),
            )
            .expect("running a job");
        }
        barrier.wait();
        let (taken, spawned) = s.counts();
        assert_eq!(taken + spawned, n as u64);
        assert!(taken >= 1, "the ready spare took the first job");
        assert!(spawned >= 1, "one spare cannot take eight jobs at once");
    }

    /// Whether thread `tid` of this process exists.
    fn alive(tid: i32) -> bool {
        std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
    }

    /// Waits up to 5 s for thread `tid` to be gone.
    fn wait_gone(tid: i32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(tid) {
            assert!(
                Instant::now() < deadline,
                "thread {tid} still there after 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_thread_outlives_its_job_by_the_linger_then_exits() {
        // 2 s: long enough that the check right after the job cannot miss the thread.
        let linger = Duration::from_secs(2);
        let s = Spares::start_lingering(linger);
        let tid = || rustix::thread::gettid().as_raw_nonzero().get();
        wait_ready(&s);
        // The first job takes the spare and holds it (no refill is asked before its end), so
        // the second gets a thread spawned: both kinds of thread are checked.
        let (tx, rx) = channel();
        let (release, held) = channel::<()>();
        let tx2 = tx.clone();
        s.run(
            "berth-test",
            Box::new(move || {
                let _ = tx.send(tid());
                let _ = held.recv();
            }),
        )
        .expect("running a job");
        let on_spare = rx.recv_timeout(Duration::from_secs(5)).expect("job 1 ran");
        s.run(
            "berth-test",
            Box::new(move || {
                let _ = tx2.send(tid());
            }),
        )
        .expect("running a job");
        let spawned = rx.recv_timeout(Duration::from_secs(5)).expect("job 2 ran");
        assert_eq!(s.counts(), (1, 1));
        drop(release);
        let ended = Instant::now();
        // Job 2 has ended (it sent its last message); job 1 ends now.
        std::thread::sleep(Duration::from_millis(50));
        assert!(alive(on_spare), "the spare exited with its job's end");
        assert!(
            alive(spawned),
            "the spawned thread exited with its job's end"
        );
        wait_gone(on_spare);
        wait_gone(spawned);
        assert!(
            ended.elapsed() >= linger - Duration::from_millis(100),
            "the threads exited {:?} after their jobs, before the linger of {linger:?}",
            ended.elapsed()
        );
    }

    #[test]
    fn a_spare_is_woken_off_the_callers_cpu_and_runs_free_again() {
        let allowed = rustix::thread::sched_getaffinity(None).expect("this thread's CPUs");
        // A thread standing for a parked spare: it waits until told.
        let (tid_tx, tid_rx) = channel();
        let (go, wait) = channel::<()>();
        let parked = std::thread::spawn(move || {
            let _ = tid_tx.send(rustix::thread::gettid());
            let _ = wait.recv();
        });
        let tid = tid_rx.recv().expect("its tid");
        let before = rustix::thread::sched_getaffinity(Some(tid)).expect("its CPUs");
        match away_from_this_cpu(tid) {
            Some(orig) => {
                assert_eq!(orig, before, "the set handed back is the one it had");
                let now = rustix::thread::sched_getaffinity(Some(tid)).expect("its CPUs");
                assert_eq!(now.count() + 1, before.count(), "exactly one CPU taken out");
                // The one taken out was this thread's CPU when it asked; this thread may have
                // moved since, so only the subset is checked.
                for cpu in 0..CpuSet::MAX_CPU {
                    assert!(!now.is_set(cpu) || before.is_set(cpu), "CPU {cpu} added");
                }
            }
            // A machine (or cpuset) with one CPU: nothing to steer to, nothing changed.
            None => assert_eq!(
                rustix::thread::sched_getaffinity(Some(tid)).expect("its CPUs"),
                before
            ),
        }
        drop(go);
        parked.join().expect("the parked thread");
        // Through the spares: the job runs with every CPU it had, once running.
        let s = Spares::start_lingering(Duration::ZERO);
        wait_ready(&s);
        let (tx, rx) = channel();
        s.run(
            "berth-test",
            Box::new(move || {
                let _ = tx.send(rustix::thread::sched_getaffinity(None).expect("its CPUs"));
            }),
        )
        .expect("running a job");
        let in_job = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the job ran");
        assert_eq!(in_job, allowed, "the job's thread got its CPUs back");
        assert_eq!(s.counts(), (1, 0));
    }

    #[test]
    fn a_job_that_panics_takes_only_its_own_thread_down() {
        let s = Spares::start();
        wait_ready(&s);
        s.run("berth-test", Box::new(|| panic!("a job's panic")))
            .expect("running a job");
        // The maker is untouched: the next job finds a new spare.
        wait_ready(&s);
        let (id, _) = run_on(&s, "berth-test");
        assert_ne!(id, std::thread::current().id());
        assert_eq!(s.counts(), (2, 0));
    }
}
