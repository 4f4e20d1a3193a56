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
    fd: AsyncFd<Ino>,
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
        Ok(Writes { fd })
    }

    /// Returns once any of the files was written to since the last call (its events drained:
    /// which file does not matter to the caller).
    pub async fn changed(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        let _ = guard.get_inner().0.read_events();
        guard.clear_ready();
        Ok(())
    }
}
