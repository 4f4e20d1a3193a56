//! Reading and writing sysctls, in the current network namespace or in another one.
//!
//! `/proc/sys/net/*` shows the namespace of the thread that opens the file, so for another
//! namespace the file is opened on a short-lived thread that `setns`'d into it
//! ([`crate::netns::run_in_netns`]).
//!
//! Every network namespace that ever looked up a sysctl has dentries of its own for the
//! directories right below `/proc/sys/net` (`ipv4`, `ipv6`, `core`, …: procfs keeps one per
//! namespace's sysctl set, under the one shared `net`), so all namespaces' `ipv4` hash to the
//! same dcache chain, and a lookup of `net/ipv4` compares against each of them
//! (`proc_sys_compare`, which skips the other namespaces' ones; newest first, so berthd's own,
//! the oldest, is found last). With 1,000 containers that was a walk of 1,000 dentries per
//! open, 1.6 ms, and 7 ms of berthd's CPU per container start. Below `ipv4` the names are the
//! namespace's own: a lookup there costs the same with 1 or 1,000 namespaces. So berthd's own
//! namespace's `net/<top>` directories are opened once per process (`O_PATH`, [`HOME`]) and
//! its sysctls opened relative to them; a thread in another namespace (a short-lived one)
//! opens its namespace's `net/<top>` once per thread.

use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{KernelError, Result};
use crate::netns;

/// `/proc/sys` path of a key: `net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`. A key
/// that contains `/` is taken as already `/`-separated (for interface names with dots, like
/// `net/ipv4/conf/eth0.100/forwarding`), as `sysctl(8)` does.
fn key_path(key: &str) -> Result<PathBuf> {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let bad = rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(KernelError::invalid(
            format!("sysctl key {key:?}"),
            "not a sysctl name",
        ));
    }
    Ok(Path::new("/proc/sys").join(rel))
}

/// Runs `f` in `netns` (on a throwaway thread), or on the calling thread when `None`.
fn in_netns<T: Send + 'static>(
    netns: Option<&Path>,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match netns {
        Some(ns) => netns::run_in_netns(ns, f)?,
        None => f(),
    }
}

/// Reads a sysctl (`net.ipv4.ip_forward`), trailing newline removed, in `netns` or, when
/// `None`, in the calling thread's namespace.
pub fn read(netns: Option<&Path>, key: &str) -> Result<String> {
    let path = key_path(key)?;
    let op = format!("reading sysctl {key}{}", in_ns(netns));
    in_netns(netns, move || {
        let mut s = String::new();
        open_file(&path, false)
            .and_then(|mut f| f.read_to_string(&mut s))
            .map(|_| s.trim_end_matches('\n').to_string())
            .map_err(|e| KernelError::io(op, e))
    })
}

/// Writes a sysctl in `netns` or, when `None`, in the calling thread's namespace.
pub fn write(netns: Option<&Path>, key: &str, value: &str) -> Result<()> {
    let path = key_path(key)?;
    let op = format!("writing {value:?} to sysctl {key}{}", in_ns(netns));
    let bytes = value.as_bytes().to_vec();
    in_netns(netns, move || {
        open_file(&path, true)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| KernelError::io(op, e))
    })?;
    tracing::debug!(key, value, "wrote sysctl");
    Ok(())
}

/// Writes `value` to `/proc/sys/net/<rel>` (e.g. `ipv6/conf/eth0/disable_ipv6`) in the calling
/// thread's network namespace, opened relative to that namespace's `/proc/sys/net/<top>` (see
/// the module's doc).
pub fn write_net(rel: &str, value: &str) -> std::io::Result<()> {
    open_net_file(rel, true)?.write_all(value.as_bytes())
}

/// A thread's sysctl directories outside the process's own namespace.
#[derive(Default)]
struct ThreadDirs {
    /// A procfs instance of this thread's own (see [`private_proc`]), `None` where the kernel
    /// cannot make one (then `/proc`).
    proc: Option<OwnedFd>,
    /// Whether [`ThreadDirs::proc`] was tried.
    tried: bool,
    /// `sys/net/<top>` directories (`O_PATH`), each opened at its first use.
    dirs: Vec<(String, OwnedFd)>,
    /// The namespace [`ThreadDirs::dirs`] belong to: a thread that moves on (an endpoint's
    /// thread writes its host side's sysctl in one namespace, then its container side's in
    /// another) opens them again rather than write into the namespace it left.
    ns: Option<(u64, u64)>,
}

impl ThreadDirs {
    /// Tries [`private_proc`] once per thread (a failure: `/proc` for this thread's lookups).
    fn make_proc(&mut self) {
        if !self.tried {
            self.tried = true;
            self.proc = private_proc()
                .inspect_err(|e| tracing::debug!("no procfs instance of this thread's: {e}"))
                .ok();
        }
    }
}

/// Makes this thread's procfs instance ([`private_proc`]) now, for a thread made ahead of a
/// job that may enter another namespace and set its sysctls there (a spare,
/// [`crate::spare`]): made on the job's path, `fsopen` + `fsmount` held the connect's endpoint
/// thread ≈ 0.05 ms before its `disable_ipv6` write. The instance shows the namespace of the
/// thread that looks a name up in it, whichever it was made in, so making it before the
/// `setns` changes nothing it shows. A failure is left for the first use to meet (then
/// `/proc`, as there).
///
/// It also learns which namespace the thread is in (see `ENTERED`): a spare is made by a
/// maker that never leaves berthd's namespace, so its job's first sysctl (the host side's
/// `disable_ipv6`, before the thread enters the container's namespace) need not `stat`
/// `/proc/thread-self/ns/net` on the call's path (≈ 0.05 ms of a connect's endpoint thread:
/// 85 of its 301 `disable_ipv6` samples in a profile of 80 connects, stop 47).
pub fn prepare_thread() {
    NET_DIRS.with(|slot| slot.borrow_mut().make_proc());
    let here = netns_id("/proc/thread-self/ns/net").ok();
    ENTERED.with(|e| e.set(here));
}

/// Forgets which namespace this thread is in (see [`ENTERED`]): for a thread that moves by
/// other means than [`crate::netns::enter`] (`unshare(CLONE_NEWNET)`); its next `net` sysctl
/// asks `/proc/thread-self/ns/net` again.
pub(crate) fn forget_namespace() {
    ENTERED.with(|e| e.set(None));
}

/// Records, on a thread that just `setns`'d into `ns`, which namespace it is now in (its
/// nsfs device and inode by `fstat` of the descriptor it entered by), so that its first
/// `net` sysctl need not `stat` `/proc/thread-self/ns/net` to learn it: a walk through
/// `/proc` of ≈ 0.05 ms on a connect's endpoint thread, measured before its `disable_ipv6`
/// write (stop 40).
pub(crate) fn entered(ns: &fs::File) {
    use std::os::unix::fs::MetadataExt;
    let id = ns.metadata().ok().map(|m| (m.dev(), m.ino()));
    ENTERED.with(|e| e.set(id));
}

thread_local! {
    /// The namespace this thread is known to be in: the one it `setns`'d into ([`entered`]),
    /// or, for a spare, the one it was made in ([`prepare_thread`]); `None` when unknown.
    /// Every way berth moves a thread keeps it right ([`crate::netns::enter`] sets it,
    /// [`forget_namespace`] clears it after an `unshare`).
    static ENTERED: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// This thread's directories, for a thread outside berthd's own namespace, kept for the
    /// namespace they were opened in ([`ThreadDirs::ns`]) and opened again if the thread is
    /// found in another. Dropped (the procfs instance unmounted) when the thread exits.
    static NET_DIRS: RefCell<ThreadDirs> = RefCell::new(ThreadDirs::default());
}

/// A new procfs instance, detached (`fsopen`, `fsmount`: mounted nowhere, reachable only
/// through the returned descriptor), for a thread that entered another namespace — in
/// practice a container's, just created. The kernel keeps one dcache per procfs instance:
/// through `/proc`, that namespace's first lookup of `sys/net/ipv6` would walk every other
/// namespace's `ipv6` dentry twice (a miss, then the creation), 0.6–1.6 ms each with 1,000
/// namespaces; through its own instance it compares against none. The sysctls it shows are
/// still those of the opening thread's network namespace. Creating and unmounting an
/// instance costs ≈ 0.1–0.3 ms, the same with 1 or 1,000 namespaces.
fn private_proc() -> std::io::Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags,
    };
    let fs = fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )?;
    Ok(mnt)
}

/// The `/proc/sys/net/<top>` directories of the process's own network namespace (its main
/// thread's, which berthd never moves), shared by every thread found in that namespace.
struct HomeDirs {
    /// The namespace (device and inode of its nsfs file).
    ns: (u64, u64),
    dirs: Vec<(String, OwnedFd)>,
}

/// See [`HomeDirs`]; `None` until the first `net.*` sysctl.
static HOME: Mutex<Option<HomeDirs>> = Mutex::new(None);

/// How many times this process opened its own namespace's `/proc/sys/net/ipv4` (for the
/// tests: once, whatever the threads).
static HOME_IPV4_OPENS: AtomicU64 = AtomicU64::new(0);

/// The namespace a `/proc/…/ns/net` file names: its device and inode.
fn netns_id(path: &str) -> std::io::Result<(u64, u64)> {
    let st = nix::sys::stat::stat(path).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // `dev_t` and `ino_t` differ in width between targets.
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// `/proc/sys/<path>`: a `net/…` one relative to its namespace's `/proc/sys/net/<top>`, any
/// other by its path.
fn open_file(path: &Path, write: bool) -> std::io::Result<fs::File> {
    match path
        .strip_prefix("/proc/sys/net")
        .ok()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
    {
        Some(rel) => open_net_file(rel, write),
        None => fs::OpenOptions::new().read(!write).write(write).open(path),
    }
}

/// Opens `rel` (`ipv4/ip_forward`) under the calling thread's namespace's `/proc/sys/net`:
/// relative to the process-wide directory of its top component when the thread is in the
/// process's own namespace, else to this thread's.
fn open_net_file(rel: &str, write: bool) -> std::io::Result<fs::File> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::Mode;
    let mode = if write {
        OFlag::O_WRONLY
    } else {
        OFlag::O_RDONLY
    } | OFlag::O_CLOEXEC;
    let Some((top, below)) = rel
        .split_once('/')
        .filter(|(t, b)| !t.is_empty() && !b.is_empty())
    else {
        // A file right under `net` (none today): no directory of its own to keep.
        return open(
            Path::new("/proc/sys/net").join(rel).as_path(),
            mode,
            Mode::empty(),
        )
        .map(fs::File::from)
        .map_err(std::io::Error::from);
    };
    let open_below = |dir: &OwnedFd| {
        openat(dir, below, mode, Mode::empty())
            .map(fs::File::from)
            .map_err(std::io::Error::from)
    };
    // The thread's namespace, compared with the one the shared directories belong to: a
    // thread that entered another namespace must never be handed berthd's (nor the reverse).
    let here = match ENTERED.with(|e| e.get()) {
        Some(id) => id,
        None => netns_id("/proc/thread-self/ns/net")?,
    };
    {
        let mut home = HOME.lock().unwrap_or_else(|p| p.into_inner());
        if home.is_none() && netns_id("/proc/self/ns/net")? == here {
            *home = Some(HomeDirs {
                ns: here,
                dirs: Vec::new(),
            });
        }
        if let Some(h) = home.as_mut().filter(|h| h.ns == here) {
            if let Some((_, dir)) = h.dirs.iter().find(|(t, _)| t == top) {
                return open_below(dir);
            }
            let dir = open_top(top)?;
            if top == "ipv4" {
                HOME_IPV4_OPENS.fetch_add(1, Ordering::Relaxed);
            }
            let file = open_below(&dir);
            h.dirs.push((top.to_string(), dir));
            return file;
        }
    }
    NET_DIRS.with(|slot| {
        let mut t = slot.borrow_mut();
        if t.ns != Some(here) {
            t.dirs.clear();
            t.ns = Some(here);
        }
        if let Some((_, dir)) = t.dirs.iter().find(|(d, _)| d == top) {
            return open_below(dir);
        }
        t.make_proc();
        let dir = match &t.proc {
            Some(proc) => openat(
                proc,
                Path::new("sys/net").join(top).as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?,
            None => open_top(top)?,
        };
        let file = open_below(&dir);
        t.dirs.push((top.to_string(), dir));
        file
    })
}

/// `open("/proc/sys/net/<top>", O_PATH | O_DIRECTORY)` in the calling thread's namespace: the
/// lookup that walks every namespace's dentry of that name.
fn open_top(top: &str) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    open(
        Path::new("/proc/sys/net").join(top).as_path(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
}

/// ` in PATH` for messages.
fn in_ns(netns: Option<&Path>) -> String {
    netns
        .map(|p| format!(" in network namespace {}", p.display()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            key_path("net/ipv4/conf/eth0.100/forwarding").ok(),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding"))
        );
        assert!(key_path("net/../../etc/passwd").is_err());
        assert!(key_path("").is_err());
        assert!(key_path("/net/ipv4").is_err());
    }

    /// Proves: a thread that writes a sysctl in one namespace and then enters another writes
    /// the second one's there, not into the first (its cached directories are that
    /// namespace's): an endpoint's thread writes its host side's `disable_ipv6`, then its
    /// container side's. Needs root; skipped otherwise.
    #[test]
    fn a_thread_that_moves_on_writes_in_its_new_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-sysctl-move-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b) = (dir.join("a"), dir.join("b"));
        crate::netns::create_netns(&a).expect("netns a");
        crate::netns::create_netns(&b).expect("netns b");
        let (pa, pb) = (a.clone(), b.clone());
        let moved = std::thread::spawn(move || {
            for (path, value) in [(&pa, "1"), (&pb, "0")] {
                let f = fs::File::open(path).map_err(|e| KernelError::io("open", e))?;
                crate::netns::enter(&f, path)?;
                write_net("ipv4/conf/lo/forwarding", value)
                    .map_err(|e| KernelError::io("write", e))?;
            }
            Ok::<(), KernelError>(())
        })
        .join()
        .expect("thread");
        let seen = (
            read(Some(&a), "net.ipv4.conf.lo.forwarding"),
            read(Some(&b), "net.ipv4.conf.lo.forwarding"),
        );
        let _ = crate::netns::delete_netns(&a);
        let _ = crate::netns::delete_netns(&b);
        let _ = std::fs::remove_dir_all(&dir);
        moved.expect("writes");
        assert_eq!(
            (seen.0.expect("read a"), seen.1.expect("read b")),
            ("1".to_string(), "0".to_string())
        );
    }

    /// Proves: a prepared thread (`prepare_thread`, as a spare is) knows its namespace ahead,
    /// and once it leaves it by `unshare` (a namespace made on it) writes into the new
    /// namespace, not through the directories it had opened in the one it was prepared in.
    /// Without `forget_namespace` the write lands in that first namespace, and this fails.
    /// Both namespaces are the test's own (the thread is prepared in a scratch namespace it
    /// entered): whichever way it goes, nothing is written in the machine's. Needs root;
    /// skipped otherwise.
    #[test]
    fn a_prepared_thread_that_unshares_writes_in_its_new_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-sysctl-spare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (first, second) = (dir.join("first"), dir.join("second"));
        crate::netns::create_netns(&first).expect("first netns");
        std::fs::File::create(&second).expect("mount point");
        let (pf, ps) = (first.clone(), second.clone());
        let moved = std::thread::spawn(move || {
            let f = fs::File::open(&pf).map_err(|e| KernelError::io("open", e))?;
            crate::netns::enter(&f, &pf)?;
            prepare_thread();
            let known = ENTERED.with(|e| e.get());
            let here = netns_id("/proc/thread-self/ns/net").ok();
            // Opens (and keeps) the first namespace's `net/ipv4` for this thread.
            let mut before = String::new();
            open_net_file("ipv4/conf/lo/forwarding", false)
                .and_then(|mut f| f.read_to_string(&mut before))
                .map_err(|e| KernelError::io("read before", e))?;
            let value = if before.trim_end() == "1" { "0" } else { "1" };
            crate::netns::new_netns_on_this_thread(&ps)?;
            write_net("ipv4/conf/lo/forwarding", value).map_err(|e| KernelError::io("write", e))?;
            Ok::<_, KernelError>((known, here, before.trim_end().to_string(), value))
        })
        .join()
        .expect("thread");
        let seen = (
            read(Some(&first), "net.ipv4.conf.lo.forwarding"),
            read(Some(&second), "net.ipv4.conf.lo.forwarding"),
        );
        let _ = crate::netns::delete_netns(&first);
        let _ = crate::netns::delete_netns(&second);
        let _ = std::fs::remove_dir_all(&dir);
        let (known, here, before, value) = moved.expect("the thread's reads and write");
        assert!(known.is_some(), "a prepared thread knows its namespace");
        assert_eq!(known, here, "the namespace it was prepared in");
        assert_eq!(
            seen.1.expect("read the new namespace"),
            value,
            "written there"
        );
        assert_eq!(
            seen.0.expect("read the first namespace"),
            before,
            "the namespace it left is untouched"
        );
    }

    /// berthd's namespace's `net/ipv4` is looked up once per process, not once per thread
    /// (each lookup walks every namespace's `ipv4` dentry); threads read the same values.
    #[test]
    fn the_own_namespace_top_directories_are_opened_once_per_process() {
        let read = || read(None, "net.ipv4.ip_forward").expect("read ip_forward");
        let first = read();
        let before = HOME_IPV4_OPENS.load(Ordering::Relaxed);
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(read)).collect();
        for t in threads {
            assert_eq!(t.join().expect("reader thread"), first);
        }
        assert_eq!(read(), first);
        assert!(before <= 1, "opened {before} times");
        assert_eq!(
            HOME_IPV4_OPENS.load(Ordering::Relaxed),
            before,
            "no thread of the process's own namespace opened net/ipv4 again"
        );
    }
}
