//! Reading and writing sysctls, in the current network namespace or in another one.
//!
//! `/proc/sys/net/*` shows the namespace of the thread that opens the file, so for another
//! namespace the file is opened on a short-lived thread that `setns`'d into it
//! ([`crate::netns::run_in_netns`]).

use std::fs;
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
        fs::read_to_string(&path)
            .map(|s| s.trim_end_matches('\n').to_string())
            .map_err(|e| KernelError::io(op, e))
    })
}

/// Writes a sysctl in `netns` or, when `None`, in the calling thread's namespace.
pub fn write(netns: Option<&Path>, key: &str, value: &str) -> Result<()> {
    let path = key_path(key)?;
    let op = format!("writing {value:?} to sysctl {key}{}", in_ns(netns));
    let bytes = value.as_bytes().to_vec();
    in_netns(netns, move || {
        fs::write(&path, bytes).map_err(|e| KernelError::io(op, e))
    })?;
    tracing::debug!(key, value, "wrote sysctl");
    Ok(())
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
