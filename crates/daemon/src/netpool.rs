//! Fresh network namespaces made ahead of the starts that take them.
//!
//! A container of a bridge network (or `--network none`) gets a new network namespace, held by
//! a descriptor of berthd's until its init has joined it ([`berth_kernel::netns::make_netns`]):
//! `unshare(CLONE_NEWNET)` on a throwaway thread and `lo` brought up, 0.6–1.1 ms on this
//! project's machines, on the path from the start request to the container's command. The
//! pool keeps [`READY`] of them made beforehand; a start takes one in O(1) and a thread of
//! the pool's makes the next once the container has exited or run a while (off the start's
//! path and off a quick container's exit: see `Runtime::start`).
//!
//! Each namespace is taken once and never given back: a container never sees what another
//! did to its namespace. A pooled namespace is exactly what an on-demand one would be (made
//! by berthd, in berthd's network namespace, holding only `lo`, up), held only by the pool's
//! descriptor: it is gone with berthd (kill -9 included), nothing is mounted, nothing is
//! left behind. An empty pool (the first start, a failed refill) makes one on demand, as
//! before. Idle, the pool does nothing: it is refilled only after a start took from it.

use berth_kernel::netns::MadeNetns;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Namespaces kept ready: one covers starts that come one after another; concurrent starts
/// beyond it make theirs on demand.
pub const READY: usize = 1;

/// See the module documentation.
#[derive(Default)]
pub struct NetnsPool {
    ready: Mutex<Vec<MadeNetns>>,
    /// A refill thread is running.
    refilling: AtomicBool,
}

impl NetnsPool {
    /// A ready namespace, or a new one when none is.
    pub fn take(&self) -> berth_kernel::error::Result<MadeNetns> {
        let pooled = self.ready.lock().ok().and_then(|mut r| r.pop());
        match pooled {
            Some(made) => Ok(made),
            None => berth_kernel::netns::make_netns(),
        }
    }

    /// How many are ready.
    pub fn ready(&self) -> usize {
        self.ready.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Brings the pool back to [`READY`] on a thread of its own (unless one is at it already)
    /// and returns at once. A failure is logged and leaves the pool short: starts then make
    /// their namespaces on demand, and the next refill tries again.
    pub fn refill(self: &Arc<Self>) {
        if self.ready() >= READY || self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name("berth-netns-pool".into())
            .spawn(move || {
                while pool.ready() < READY {
                    match berth_kernel::netns::make_netns() {
                        Ok(made) => match pool.ready.lock() {
                            Ok(mut r) => r.push(made),
                            Err(_) => break,
                        },
                        Err(e) => {
                            tracing::debug!("making a network namespace ahead: {e}");
                            break;
                        }
                    }
                }
                pool.refilling.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::debug!("spawning the network namespace pool's thread: {e}");
            self.refilling.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;

    fn ns_inode(fd: &OwnedFd) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    /// Proves: the pool hands out a namespace at most once (every taken one is new: no two
    /// share an inode while held), refills to READY after a take, and makes one on demand
    /// when empty. Needs root (unshare(CLONE_NEWNET)); skipped otherwise.
    #[test]
    fn every_take_is_a_new_namespace_and_the_pool_refills() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let pool = Arc::new(NetnsPool::default());
        assert_eq!(pool.ready(), 0);
        let first = pool.take().unwrap();
        pool.refill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pool.ready() < READY {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never refilled"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut held = vec![first];
        for _ in 0..4 {
            held.push(pool.take().unwrap());
            pool.refill();
        }
        let mut inodes: Vec<u64> = held.iter().map(|m| ns_inode(&m.fd)).collect();
        inodes.sort_unstable();
        inodes.dedup();
        assert_eq!(inodes.len(), held.len(), "a namespace was handed out twice");
        // Each came with its own id in our namespace, given before it was handed out (what
        // lets a start watch its namespace from the first change on).
        let mut ids: Vec<i32> = held.iter().filter_map(|m| m.nsid).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), held.len(), "namespace ids: {ids:?}");
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(!inodes.contains(&ours), "berthd's own namespace handed out");
    }
}
