//! Creating, removing and entering network namespaces.
//!
//! With `container.rs`, the only place that calls `setns(2)`/`unshare(2)`. Both change only the
//! calling *thread* (DESIGN.md §4), so every one of them runs on a short-lived `std::thread`
//! that exits afterwards: never on a tokio worker or a pooled `spawn_blocking` thread, which
//! would be left in a foreign namespace. New threads inherit the creating thread's namespace,
//! so nothing spawned from such a thread may outlive it either.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{KernelError, Result};
use crate::nl::SyncNetlink;

/// This thread's own network namespace: `/proc/self/ns/net` would be the main thread's.
const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";

/// Creates a new network namespace kept alive by a bind mount onto `path` (the file and its
/// parent directory are created), with `lo` up inside it.
///
/// Done on a short-lived thread that `unshare(CLONE_NEWNET)`s, bind-mounts its own
/// `/proc/thread-self/ns/net` onto `path`, brings `lo` up and exits. Fails with `EEXIST` when
/// `path` already exists. Nothing is left behind on failure.
pub fn create_netns(path: &Path) -> Result<()> {
    let op = || format!("creating network namespace {}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| KernelError::io(format!("{}: creating {}", op(), parent.display()), e))?;
    }
    // The mount point: an empty regular file, like `ip netns add`. `create_new` so that an
    // existing namespace is never shadowed by a second mount.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| KernelError::io(op(), e))?;

    let target = path.to_path_buf();
    let result = std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(move || new_netns_on_this_thread(&target))
        .map_err(|e| KernelError::io(format!("{}: spawning thread", op()), e))
        .and_then(|t| {
            t.join()
                .unwrap_or_else(|_| Err(KernelError::invalid(op(), "namespace thread panicked")))
        });
    if let Err(e) = result {
        // Undo whatever got done: the mount may or may not exist.
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(path);
        return Err(e.context(&op()));
    }
    tracing::debug!(path = %path.display(), "created network namespace");
    Ok(())
}

/// Body of [`create_netns`]'s thread: leaves the thread in the new namespace, so the thread
/// must exit right after.
pub(crate) fn new_netns_on_this_thread(target: &Path) -> Result<()> {
    // unshare(CLONE_NEWNET) moves only this thread into a fresh namespace.
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| KernelError::io("unshare(CLONE_NEWNET)", e))?;
    crate::sysctl::forget_namespace();
    mount(
        Some(THREAD_SELF_NET),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| KernelError::io(format!("bind-mounting {THREAD_SELF_NET}"), e))?;
    // A fresh namespace has only `lo`, down, always ifindex 1.
    let mut nl = SyncNetlink::open().map_err(|e| e.context("opening netlink socket"))?;
    nl.set_link_up(1, "bringing up lo")?;
    Ok(())
}

/// Removes a namespace made by [`create_netns`]: `umount2(MNT_DETACH)` then unlink. The
/// namespace itself goes away once nothing else (process, socket, open fd) holds it.
/// `Ok` when `path` does not exist.
pub fn delete_netns(path: &Path) -> Result<()> {
    let op = || format!("deleting network namespace {}", path.display());
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (already unmounted); ENOENT: no such file.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(KernelError::io(format!("{}: umount2", op()), e)),
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(KernelError::io(format!("{}: unlink", op()), e)),
    }
    tracing::debug!(path = %path.display(), "deleted network namespace");
    Ok(())
}

/// Opens a namespace file, with an error naming it.
pub(crate) fn open_netns(path: &Path) -> Result<File> {
    File::open(path)
        .map_err(|e| KernelError::io(format!("opening network namespace {}", path.display()), e))
}

/// Runs `f` on a short-lived thread that first `setns(CLONE_NEWNET)`s into `path`, and waits for
/// it (blocking the calling thread). Sockets created by `f` stay bound to that namespace after
/// the thread exits; hand them back and use them anywhere.
///
/// A panic in `f` is propagated to the caller. From async code prefer
/// [`run_in_netns_async`], which does not block the runtime's worker.
pub fn run_in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let ns = open_netns(path)?;
    let shown = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || enter(&ns, &shown).map(|()| f()))
        .map_err(|e| KernelError::io(format!("spawning thread for netns {}", path.display()), e))?;
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Like [`run_in_netns`], but awaits the thread instead of blocking: the thread is still a
/// short-lived `std::thread` (a spare made ahead, [`crate::spare`]), never a runtime worker.
/// A panic in `f` becomes an error.
pub async fn run_in_netns_async<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let ns = open_netns(path)?;
    let shown = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A spare thread (`crate::spare`), made ahead: not spawned on the caller's path.
    crate::spare::run(
        "berth-netns",
        Box::new(move || {
            let _ = tx.send(enter(&ns, &shown).map(|()| f()));
        }),
    )
    .map_err(|e| KernelError::io(format!("spawning thread for netns {}", path.display()), e))?;
    rx.await.unwrap_or_else(|_| {
        Err(KernelError::invalid(
            format!("running in network namespace {}", path.display()),
            "thread panicked",
        ))
    })
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread (which must be a throwaway thread).
pub(crate) fn enter(ns: &File, path: &Path) -> Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
        KernelError::io(format!("entering network namespace {}", path.display()), e)
    })?;
    crate::sysctl::entered(ns);
    Ok(())
}

/// Creates a new network namespace held only by the returned file descriptor (no bind mount),
/// with `lo` up inside it ([`make_netns`] without the namespace's id).
pub fn create_netns_fd() -> Result<std::os::fd::OwnedFd> {
    make_netns().map(|made| made.fd)
}

/// A network namespace [`make_netns`] made.
#[derive(Debug)]
pub struct MadeNetns {
    /// The only holder of the namespace until a process joins it.
    pub fd: std::os::fd::OwnedFd,
    /// Its id in the caller's namespace (`NETNSA_NSID`: what the caller's all-namespace
    /// notifications carry), given before anything happened in it; `None` if the kernel
    /// refused (the namespace then gets the kernel's choice at its first veth).
    pub nsid: Option<i32>,
    /// A detached, read-only mount of the namespace's own sysfs ([`premount_sysfs`]) for the
    /// container's `/sys`, made with the namespace; `None` if the kernel refused (the init
    /// then mounts one itself, as before).
    pub sysfs: Option<std::os::fd::OwnedFd>,
}

/// A detached mount of the calling thread's network namespace's sysfs, read-only, `nosuid`,
/// `nodev`, `noexec` (what a container's `/sys` is): `fsopen("sysfs")`,
/// `fsconfig(FSCONFIG_CMD_CREATE)`, `fsmount(MOUNT_ATTR_RDONLY|NOSUID|NODEV|NOEXEC)`. sysfs is
/// per network namespace (the superblock is the one of the namespace `fsopen` was called in),
/// and making one compares every existing sysfs superblock (`sget_fc` → `kernfs_test_super`,
/// one per network namespace on the host: +0.13 to +0.36 ms per mount at 1,000 containers,
/// bare, `bench/init_floor/floor.c`).
/// Made here, off the start's path, it is attached by the container's init
/// (`move_mount`, [`crate::rootfs::prepare`]), which mounts nothing then. Held only by the
/// returned descriptor: dropped unattached, it is gone (the kernel dissolves a detached tree
/// with its last descriptor), nothing is left mounted anywhere. The superblock itself is left
/// writable (the mount is not): a container with the host's devices mounts the same
/// namespace's sysfs writable itself (the kernel gives it this superblock, which a read-only
/// one would make read-only too); without `CAP_SYS_ADMIN` neither can be remounted.
pub fn premount_sysfs() -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let fs = fsopen("sysfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    // The source `mount -t sysfs sysfs /sys` gives, shown in the container's /proc/mounts.
    fsconfig_set_string(&fs, "source", "sysfs")?;
    fsconfig_create(&fs)?;
    Ok(fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?)
}

/// Creates a new network namespace held only by the returned file descriptor (no bind mount),
/// with `lo` up inside it, and gives it its id in the caller's namespace first.
///
/// berthd uses this for containers: the fd keeps the namespace alive while endpoints are
/// plumbed and the container's init joins it (through [`fd_path`]); once the fd is dropped, the
/// container's processes alone hold it, so the namespace — and the container end of every veth
/// in it — disappears with the container. No mount can leak into other mount namespaces.
pub fn make_netns() -> Result<MadeNetns> {
    let op = "creating a network namespace";
    let thread = std::thread::Builder::new()
        .name("berth-netns-fd".into())
        .spawn(|| -> Result<MadeNetns> {
            // A socket of the caller's namespace (berthd's), opened before the unshare: the
            // new namespace's id there is given through it.
            let host = SyncNetlink::open();
            // unshare(CLONE_NEWNET) moves only this short-lived thread; it exits right after.
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| KernelError::io("unshare(CLONE_NEWNET)", e))?;
            crate::sysctl::forget_namespace();
            let file = File::open(THREAD_SELF_NET)
                .map_err(|e| KernelError::io(format!("opening {THREAD_SELF_NET}"), e))?;
            // Its id first, so that even `lo`'s notifications below find it at once (see
            // `give_first_found_nsid`). Without one it works as before: its first veth gives
            // it the kernel's choice.
            let nsid =
                match host.and_then(|mut h| crate::monitor::give_first_found_nsid(&mut h, &file)) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::debug!("a new network namespace keeps the kernel's id: {e}");
                        None
                    }
                };
            // A fresh namespace has only `lo`, down, always ifindex 1.
            let mut nl = SyncNetlink::open().map_err(|e| e.context("opening netlink socket"))?;
            nl.set_link_up(1, "bringing up lo")?;
            // Still in the new namespace: its sysfs.
            let sysfs = match premount_sysfs() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::debug!("a new network namespace's sysfs, made ahead: {e}");
                    None
                }
            };
            Ok(MadeNetns {
                fd: std::os::fd::OwnedFd::from(file),
                nsid,
                sysfs,
            })
        })
        .map_err(|e| KernelError::io(format!("{op}: spawning thread"), e))?;
    thread
        .join()
        .unwrap_or_else(|_| Err(KernelError::invalid(op, "namespace thread panicked")))
}

/// A path naming the file behind `fd` (a namespace, a pipe's end) for any process on the
/// host, including children about to `setns` into it or open it: `/proc/<our pid>/fd/<fd>`.
/// It names that file only while we hold `fd`.
pub fn fd_path(fd: &impl std::os::fd::AsRawFd) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}
