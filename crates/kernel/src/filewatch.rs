//! Waiting for writes to files without polling: inotify (`IN_MODIFY`) behind tokio's readiness.
//! berthd stamps container log lines with it (an idle container costs nothing).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

/// The inotify instance, for tokio (`AsyncFd` wants `AsRawFd`).
struct Ino(Inotify);

impl AsRawFd for Ino {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Writes to a set of files.
pub struct Writes {
    /// Always `Some` until dropped (taken by [`Drop`]).
    fd: Option<AsyncFd<Ino>>,
}

impl Drop for Writes {
    /// Closing an inotify instance waits for an SRCU grace period in the kernel
    /// (`fsnotify_destroy_group`: 15–20 ms under load). Closed inline on a tokio worker it held
    /// whatever task that worker had queued next (a container's exit handling, woken into its
    /// LIFO slot) for that long: the instance is closed on a blocking thread instead.
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        // Deregistered from the reactor here; only the close itself moves.
        let ino = fd.into_inner();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || drop(ino));
            }
            Err(_) => drop(ino),
        }
    }
}

impl Writes {
    /// Watches those of `paths` that exist for writes (`inotify_add_watch(IN_MODIFY)`,
    /// non-blocking). Must run inside the tokio runtime.
    pub fn watch(paths: &[PathBuf]) -> io::Result<Writes> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        for p in paths.iter().filter(|p| p.exists()) {
            ino.add_watch(p.as_path(), AddWatchFlags::IN_MODIFY)?;
        }
        // `AsyncFd::new` is deprecated for values that merely borrow an fd; `Ino` owns the
        // inotify instance and with it the fd, so nothing else can close or reuse it while it
        // is registered (the soundness concern of tokio#8587; the replacement is `unsafe`).
        #[allow(deprecated)]
        let fd = AsyncFd::new(Ino(ino))?;
        Ok(Writes { fd: Some(fd) })
    }

    /// Returns once any of the files was written to since the last call (its events drained:
    /// which file does not matter to the caller).
    pub async fn changed(&self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return Err(io::Error::other("the watch is closed"));
        };
        let mut guard = fd.readable().await?;
        let _ = guard.get_inner().0.read_events();
        guard.clear_ready();
        Ok(())
    }
}
