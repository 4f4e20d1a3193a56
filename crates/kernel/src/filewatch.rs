//! Waiting for writes to files without polling: inotify (`IN_MODIFY`). berthd stamps container
//! log lines with it (an idle container costs nothing).
//!
//! One inotify instance serves the whole process, read by one thread: an instance per watcher
//! ran into `fs.inotify.max_user_instances` (128 for root on Debian) past ~100 running
//! containers — each later container's log lines lost their times until it exited, with a
//! "Too many open files" warning each — and closing an instance waits for an SRCU grace
//! period in the kernel (`fsnotify_destroy_group`: 15–20 ms under load). Removing a watch
//! (`inotify_rm_watch`) defers that wait to the kernel's own work.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::Notify;

/// The process's inotify instance and who waits for which watch.
struct Shared {
    ino: Inotify,
    waiters: Mutex<HashMap<WatchDescriptor, Arc<Notify>>>,
}

/// The shared instance, started with its reader thread on first use (an error is kept: no
/// second try, callers then go without write notifications).
fn shared() -> io::Result<&'static Shared> {
    static SHARED: OnceLock<Result<&'static Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Blocking reads on a thread of its own: no runtime to outlive (tests run many),
            // and tokio's `Notify` wakes waiters on any runtime.
            let ino = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| e.to_string())?;
            let shared: &'static Shared = Box::leak(Box::new(Shared {
                ino,
                waiters: Mutex::new(HashMap::new()),
            }));
            std::thread::Builder::new()
                .name("berth-inotify".into())
                .spawn(move || read_loop(shared))
                .map_err(|e| e.to_string())?;
            Ok(shared)
        })
        .as_ref()
        .copied()
        .map_err(|e| io::Error::other(format!("the inotify instance: {e}")))
}

/// Wakes the watcher of every event's watch, for ever (the instance lives as long as the
/// process).
fn read_loop(shared: &'static Shared) {
    loop {
        match shared.ino.read_events() {
            Ok(events) => {
                let waiters = shared.waiters.lock().unwrap_or_else(|p| p.into_inner());
                for ev in events {
                    if let Some(n) = waiters.get(&ev.wd) {
                        // A permit is kept when nobody waits yet: "written since the last
                        // call" is not lost between two calls.
                        n.notify_one();
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("reading inotify events: {e}; log line times come at exit now");
                return;
            }
        }
    }
}

/// Writes to a set of files.
pub struct Writes {
    wds: Vec<WatchDescriptor>,
    notify: Arc<Notify>,
}

impl Drop for Writes {
    /// `inotify_rm_watch` of each watch (the mark's destruction, with its grace period, is the
    /// kernel's background work: nothing here waits for it).
    fn drop(&mut self) {
        let Ok(shared) = shared() else { return };
        let mut waiters = shared.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for wd in self.wds.drain(..) {
            waiters.remove(&wd);
            // EINVAL when the kernel already dropped it (the file was deleted): nothing left.
            let _ = shared.ino.rm_watch(wd);
        }
    }
}

impl Writes {
    /// Watches those of `paths` that exist for writes (`inotify_add_watch(IN_MODIFY)` on the
    /// process's shared instance).
    pub fn watch(paths: &[PathBuf]) -> io::Result<Writes> {
        let shared = shared()?;
        let notify = Arc::new(Notify::new());
        let mut w = Writes {
            wds: Vec::new(),
            notify: notify.clone(),
        };
        // Registered under the lock, so an event for a new watch finds its waiter.
        let mut waiters = shared.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for p in paths.iter().filter(|p| p.exists()) {
            // Added to `w` at once: a later failure drops `w`, which removes these again.
            match shared.ino.add_watch(p.as_path(), AddWatchFlags::IN_MODIFY) {
                Ok(wd) => {
                    waiters.insert(wd, notify.clone());
                    w.wds.push(wd);
                }
                Err(e) => {
                    drop(waiters);
                    return Err(io::Error::other(format!("watching {}: {e}", p.display())));
                }
            }
        }
        Ok(w)
    }

    /// Returns once any of the files was written to since the last call (which file does not
    /// matter to the caller).
    pub async fn changed(&self) -> io::Result<()> {
        self.notify.notified().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Many watchers at once (more than `max_user_instances`, 128 here) all see their own
    /// file's writes, and only those; a dropped watcher's watch is gone.
    #[tokio::test]
    async fn many_watchers_share_one_instance() {
        let dir = std::env::temp_dir().join(format!("berth-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut watchers = Vec::new();
        for i in 0..200 {
            let p = dir.join(format!("log{i}"));
            std::fs::write(&p, b"").expect("create");
            watchers.push((p.clone(), Writes::watch(&[p]).expect("watch")));
        }
        for (p, w) in watchers.iter().step_by(7) {
            std::fs::write(p, b"line\n").expect("write");
            tokio::time::timeout(Duration::from_secs(5), w.changed())
                .await
                .expect("the write is seen")
                .expect("changed");
        }
        // An unwritten file's watcher is not woken.
        let quiet = tokio::time::timeout(Duration::from_millis(100), watchers[1].1.changed()).await;
        assert!(quiet.is_err(), "woken without a write");
        let before = shared()
            .expect("shared")
            .waiters
            .lock()
            .expect("lock")
            .len();
        watchers.truncate(100);
        let after = shared()
            .expect("shared")
            .waiters
            .lock()
            .expect("lock")
            .len();
        assert_eq!(
            before - after,
            100,
            "dropped watchers leave no watch behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
