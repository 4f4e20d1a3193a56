//! Reading and writing sysctls, in the current network namespace or in another one.
//!
//! `/proc/sys/net/*` shows the namespace of the thread that opens the file, so for another
//! namespace the file is opened on a short-lived thread that `setns`'d into it
//! ([`crate::netns::run_in_netns`]).
//!
//! `net.*` files are opened relative to a per-thread `O_PATH` descriptor of that thread's
//! `/proc/sys/net` ([`open_net`]), not by their full path. Every network namespace that ever
//! looked up `/proc/sys/net` has a dentry of its own named `net` under the same parent
//! (procfs keeps one per namespace's sysctl set), so they all hash to the same dcache chain,
//! and a lookup of `/proc/sys/net` compares against each of them (`proc_sys_compare`, which
//! skips the other namespaces' ones). With 1,000 containers that was a walk of 1,000 dentries
//! per open, 11 % of berthd's CPU while containers started. Below `net` the names are the
//! namespace's own: a lookup there costs the same with 1 or 1,000 namespaces.

use std::cell::RefCell;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

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
/// thread's network namespace, opened relative to the thread's `/proc/sys/net` (see the
/// module's doc).
pub fn write_net(rel: &str, value: &str) -> std::io::Result<()> {
    open_net_file(rel, true)?.write_all(value.as_bytes())
}

thread_local! {
    /// This thread's `/proc/sys/net` (`O_PATH`), opened at its first `net.*` sysctl. A thread
    /// whose network namespace changes does so before any sysctl (the throwaway threads of
    /// `netns::run_in_netns` `setns` first; a container's init joins its namespace before it
    /// sets the container's sysctls), so the descriptor is always its current namespace's.
    static NET_DIR: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

/// `/proc/sys/<path>`: a `net/…` one relative to the thread's `/proc/sys/net`, any other by
/// its path.
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

/// Opens `rel` under this thread's `/proc/sys/net` (opened once per thread).
fn open_net_file(rel: &str, write: bool) -> std::io::Result<fs::File> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    NET_DIR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(open_net()?);
        }
        let Some(dir) = slot.as_ref() else {
            return Err(std::io::Error::other("no /proc/sys/net descriptor"));
        };
        let mode = if write {
            OFlag::O_WRONLY
        } else {
            OFlag::O_RDONLY
        };
        let fd = openat(dir, rel, mode | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)?;
        Ok(fs::File::from(fd))
    })
}

/// `open("/proc/sys/net", O_PATH | O_DIRECTORY)` in the calling thread's namespace: the one
/// lookup of `net` that walks every namespace's dentry of that name.
fn open_net() -> std::io::Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    open(
        "/proc/sys/net",
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
}
