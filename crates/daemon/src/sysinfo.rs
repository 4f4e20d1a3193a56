//! What `GET /info` says about the host, read the way dockerd reads it (`/proc/meminfo`,
//! `/etc/os-release`, `uname`), so `docker info` against berthd prints the host's figures.

/// The host's figures of `GET /info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// CPUs berthd may run on.
    pub ncpu: usize,
    /// Memory, bytes.
    pub mem_total: u64,
    /// Host name.
    pub name: String,
    /// `PRETTY_NAME` of os-release (else `NAME`, else "Linux").
    pub operating_system: String,
    /// `uname -m`.
    pub architecture: String,
    /// Kernel release.
    pub kernel_version: String,
}

impl HostInfo {
    /// Reads the figures; what cannot be read is left empty or zero (never an error: `/info`
    /// must answer).
    pub fn read() -> HostInfo {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        HostInfo {
            ncpu: std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1),
            mem_total: mem_total(&text("/proc/meminfo")),
            name: text("/proc/sys/kernel/hostname").trim().to_string(),
            operating_system: pretty_name(&text("/etc/os-release")),
            // berthd runs natively: the architecture it was built for is the machine's
            // (`x86_64`, `aarch64`, as `uname -m` prints them).
            architecture: std::env::consts::ARCH.to_string(),
            kernel_version: text("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// `MemTotal` of `/proc/meminfo` in bytes (the file says kB).
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// The name of the distribution in os-release: `PRETTY_NAME`, else `NAME`, else "Linux".
fn pretty_name(os_release: &str) -> String {
    let get = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    get("PRETTY_NAME")
        .or_else(|| get("NAME"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_os_release() {
        let meminfo = "MemTotal:        8029876 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), 8_029_876 * 1024);
        assert_eq!(mem_total("garbage"), 0);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(pretty_name(os), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(pretty_name("NAME=Alpine\n"), "Alpine");
        assert_eq!(pretty_name(""), "Linux");
        let h = HostInfo::read();
        assert!(
            h.ncpu >= 1 && h.mem_total > 0 && !h.kernel_version.is_empty(),
            "{h:?}"
        );
    }
}
