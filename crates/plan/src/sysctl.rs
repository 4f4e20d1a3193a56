//! Per-container sysctls (`--sysctl`, Docker's `HostConfig.Sysctls`): which are allowed.
//!
//! Only sysctls of a kernel namespace the container has alone may be set, or one container
//! would change the host (runc's validator, whose words dockerd passes on): `net.*` in a network
//! namespace of its own (not `--network host`), the IPC namespace's `kernel.shm*`, `kernel.msg*`,
//! `kernel.sem` and `fs.mqueue.*` (berth always gives a container its own IPC namespace), and
//! the UTS namespace's `kernel.domainname` (`kernel.hostname` is `--hostname`'s). The init
//! writes them through `/proc/sys` inside the container's namespaces, so on top of that a name
//! must be plain dot-separated words (no `/`, no `..`: nothing can lead the write elsewhere)
//! and a value one line.

use std::collections::BTreeMap;

use crate::error::PlanError;

/// The IPC namespace's sysctls by name (runc's list).
const IPC_NAMES: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Longest name or value accepted (far beyond any real sysctl; bounds what the init reads).
const MAX_LEN: usize = 4096;

/// Whether the docker CLI lets `--sysctl KEY=VALUE` through (its `ValidateSysctl`: a `=`, and a
/// namespaced name); its message otherwise.
pub fn cli_check(kv: &str) -> Result<(String, String), PlanError> {
    let refused = || PlanError::Invalid(format!("sysctl '{kv}' is not allowed"));
    let (k, v) = kv.split_once('=').ok_or_else(refused)?;
    let ok = IPC_NAMES.contains(&k) || k.starts_with("net.") || k.starts_with("fs.mqueue.");
    if !ok {
        return Err(refused());
    }
    Ok((k.to_string(), v.to_string()))
}

/// Validates a container's sysctls (a 400 naming the first refused one). `host_network`: the
/// container is in the host's network namespace, where `net.*` would change the host.
pub fn validate(sysctls: &BTreeMap<String, String>, host_network: bool) -> Result<(), PlanError> {
    for (k, v) in sysctls {
        validate_one(k, v, host_network)?;
    }
    Ok(())
}

fn validate_one(k: &str, v: &str, host_network: bool) -> Result<(), PlanError> {
    let plain = !k.is_empty()
        && k.len() <= MAX_LEN
        && k.split('.').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        });
    if !plain {
        return Err(PlanError::Invalid(format!(
            "invalid sysctl name {k:?}: it must be dot-separated words of letters, digits, '_' \
             and '-' (no '/', no empty part)"
        )));
    }
    if v.len() > MAX_LEN || v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(PlanError::Invalid(format!(
            "invalid value {v:?} for sysctl {k:?}: it must be one line without control characters"
        )));
    }
    if IPC_NAMES.contains(&k) || k.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if k.starts_with("net.") {
        if host_network {
            return Err(PlanError::Invalid(format!(
                "sysctl {k:?} not allowed in host network namespace"
            )));
        }
        return Ok(());
    }
    match k {
        "kernel.domainname" => Ok(()),
        "kernel.hostname" => Err(PlanError::Invalid(format!(
            "sysctl {k:?} is not allowed as it conflicts with the OCI \"hostname\" field"
        ))),
        _ => Err(PlanError::Invalid(format!(
            "sysctl {k:?} is not in a separate kernel namespace"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str, host: bool) -> Result<(), String> {
        let m = BTreeMap::from([(k.to_string(), v.to_string())]);
        validate(&m, host).map_err(|e| e.to_string())
    }

    #[test]
    fn namespaced_sysctls_pass() {
        for k in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.eth0.rp_filter",
            "net.ipv6.conf.all.disable_ipv6",
            "kernel.shmmax",
            "kernel.sem",
            "kernel.msgmnb",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            assert_eq!(one(k, "1", false), Ok(()), "{k}");
        }
        assert_eq!(
            one("net.ipv4.ip_local_port_range", "20000\t30000", false),
            Ok(())
        );
        assert_eq!(one("kernel.sem", "250 32000 32 128", true), Ok(()));
    }

    #[test]
    fn runcs_refusals_in_its_words() {
        assert_eq!(
            one("vm.swappiness", "10", false),
            Err("sysctl \"vm.swappiness\" is not in a separate kernel namespace".into())
        );
        assert_eq!(
            one("kernel.hostname", "x", false),
            Err(
                "sysctl \"kernel.hostname\" is not allowed as it conflicts with the OCI \
                 \"hostname\" field"
                    .into()
            )
        );
        assert_eq!(
            one("net.ipv4.ip_forward", "1", true),
            Err("sysctl \"net.ipv4.ip_forward\" not allowed in host network namespace".into())
        );
        assert!(one("kernel.shm", "1", false).is_err(), "not an IPC name");
    }

    #[test]
    fn nothing_can_lead_the_write_elsewhere() {
        for k in [
            "net/../../kernel/hostname",
            "net.ipv4/../../kernel/core_pattern",
            "net..ipv4",
            ".net.ipv4",
            "net.ipv4.",
            "net.ipv4.ip forward",
            "net.ipv4.ip_forward\n",
            "",
        ] {
            let e = one(k, "1", false).expect_err(k);
            assert!(e.contains("invalid sysctl name"), "{k:?}: {e}");
        }
        for v in ["1\n2", "1\0", "\r"] {
            let e = one("net.ipv4.ip_forward", v, false).expect_err(v);
            assert!(e.contains("one line"), "{v:?}: {e}");
        }
    }

    #[test]
    fn the_docker_clis_own_check() {
        assert_eq!(
            cli_check("net.ipv4.ip_forward=1"),
            Ok(("net.ipv4.ip_forward".into(), "1".into()))
        );
        assert_eq!(
            cli_check("kernel.sem=1 2 3 4"),
            Ok(("kernel.sem".into(), "1 2 3 4".into()))
        );
        for kv in ["foo", "kernel.hostname=x", "vm.swappiness=1"] {
            assert_eq!(
                cli_check(kv).map_err(|e| e.to_string()),
                Err(format!("sysctl '{kv}' is not allowed"))
            );
        }
    }
}
