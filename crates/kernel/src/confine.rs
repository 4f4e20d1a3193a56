//! What a container's processes may do: capabilities, `no_new_privs` and the seccomp filter.
//!
//! Applied by the process that becomes the command to itself, before it `exec`s it: the
//! container's command (a fork of stage 2, while stage 2 still assembles the root) and every
//! `berth exec` process (the exec hop) alike, in this order:
//!
//! 1. the seccomp filter (Docker's default profile, [`crate::seccomp_table`]), while the process
//!    still has `CAP_SYS_ADMIN`, so it can be installed with or without `no_new_privs`. Docker's
//!    profile allows `capset` and `prctl`, which steps 2 and 3 need;
//! 2. capabilities: every capability not kept is dropped from the bounding set (what a root
//!    process gets back on `exec`), the ambient and inheritable sets are cleared (as Docker does
//!    since CVE-2022-24769), effective and permitted are cut to the kept set;
//! 3. `no_new_privs`.
//!
//! The filter denies with `EPERM` what the profile does not allow, `clone3` without
//! `CAP_SYS_ADMIN` with `ENOSYS` (so libc falls back to `clone`, whose namespace flags are then
//! checked), and kills the process on a foreign architecture's system call (32-bit x86 on
//! x86_64): seccompiler filters one architecture, which is stricter than Docker.

use std::collections::BTreeMap;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

use crate::container::ContainerError;
use crate::seccomp_table::{ALLOW, BY_CAP};

/// The privileges of a container's processes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// Capabilities kept (`CAP_CHOWN`, …); every other one is dropped from all five sets.
    pub caps: Vec<String>,
    /// `prctl(PR_SET_NO_NEW_PRIVS)`.
    pub no_new_privs: bool,
    /// Docker's default seccomp profile.
    pub seccomp: bool,
}

impl Default for Privileges {
    /// berth's default: Docker's default capabilities and seccomp profile, `no_new_privs`.
    fn default() -> Privileges {
        Privileges {
            caps: berth_plan::security::capabilities(false, &[], &[])
                .iter()
                .map(|c| c.to_string())
                .collect(),
            no_new_privs: true,
            seccomp: true,
        }
    }
}

impl Privileges {
    /// Everything (`--privileged`): all capabilities, no filter, no `no_new_privs`.
    pub fn unconfined() -> Privileges {
        Privileges {
            caps: berth_plan::security::ALL_CAPS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            no_new_privs: false,
            seccomp: false,
        }
    }
}

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Config(format!("{}: {e}", what.into()))
}

/// The kept capabilities as the caps crate's values.
fn kept(p: &Privileges) -> Result<CapsHashSet, ContainerError> {
    p.caps
        .iter()
        .map(|c| Capability::from_str(c).map_err(|e| err(format!("capability {c:?}"), e)))
        .collect()
}

/// Applies `p` to the calling single-threaded process (see the module doc for the order).
pub fn apply(p: &Privileges) -> Result<(), ContainerError> {
    let keep = kept(p)?;
    if p.seccomp {
        for prog in filters(&p.caps)? {
            crate::sys::install_seccomp_filter(&prog)
                .map_err(|e| err("install the seccomp filter", e))?;
        }
    }
    for cap in caps::all() {
        // An error reading it: the running kernel does not know this capability.
        if keep.contains(&cap) || caps::has_cap(None, CapSet::Bounding, cap).is_err() {
            continue;
        }
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|e| err(format!("drop {cap} from the bounding set"), e))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| err("clear the ambient capabilities", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| err("clear the inheritable capabilities", e))?;
    // Effective first: it must stay a subset of permitted.
    let effective = caps::read(None, CapSet::Effective)
        .map_err(|e| err("read the effective capabilities", e))?;
    caps::set(None, CapSet::Effective, &(&effective & &keep))
        .map_err(|e| err("set the effective capabilities", e))?;
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| err("read the permitted capabilities", e))?;
    caps::set(None, CapSet::Permitted, &(&permitted & &keep))
        .map_err(|e| err("set the permitted capabilities", e))?;
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| err("set no_new_privs", e))?;
    }
    Ok(())
}

fn arch() -> Result<TargetArch, ContainerError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| err("seccomp on this architecture", format!("{e:?}")))
}

fn cond(arg: u8, op: Op, value: u64) -> Result<SeccompRule, ContainerError> {
    let c = SeccompCondition::new(arg, Len::Dword, op, value)
        .map_err(|e| err("seccomp condition", e))?;
    SeccompRule::new(vec![c]).map_err(|e| err("seccomp rule", e))
}

/// Docker's default profile for a process holding `caps`: the allow-list (everything else
/// `EPERM`) and, without `CAP_SYS_ADMIN`, a second filter answering `clone3` with `ENOSYS`.
/// Filters are evaluated newest first and the first of equal precedence wins, so `ENOSYS`
/// beats the allow-list's `EPERM`.
pub fn filters(caps: &[String]) -> Result<Vec<BpfProgram>, ContainerError> {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let sys_admin = has("CAP_SYS_ADMIN");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in ALLOW {
        rules.insert(*nr, Vec::new());
    }
    for (cap, list) in BY_CAP {
        if has(cap) {
            for (_, nr) in *list {
                rules.insert(*nr, Vec::new());
            }
        }
    }
    // socket(2): every family but AF_ALG (38) and AF_VSOCK (40).
    rules.insert(
        libc::SYS_socket,
        vec![
            cond(0, Op::Lt, 38)?,
            cond(0, Op::Eq, 39)?,
            cond(0, Op::Gt, 40)?,
        ],
    );
    // personality(2): the harmless personas only (PER_LINUX, PER_LINUX32, UNAME26, query).
    rules.insert(
        libc::SYS_personality,
        [0u64, 8, 0x20000, 0x20008, 0xffff_ffff]
            .iter()
            .map(|v| cond(0, Op::Eq, *v))
            .collect::<Result<_, _>>()?,
    );
    if !sys_admin {
        // clone(2) without any CLONE_NEW* flag (0x7E020000).
        rules.insert(
            libc::SYS_clone,
            vec![cond(0, Op::MaskedEq(0x7E02_0000), 0)?],
        );
    }
    let arch = arch()?;
    let main = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| err("seccomp filter", e))?;
    let mut out = vec![BpfProgram::try_from(main).map_err(|e| err("seccomp filter", e))?];
    if !sys_admin {
        let mut clone3 = BTreeMap::new();
        clone3.insert(libc::SYS_clone3, Vec::new());
        let f = SeccompFilter::new(
            clone3,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(|e| err("seccomp filter", e))?;
        out.push(BpfProgram::try_from(f).map_err(|e| err("seccomp filter", e))?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn default_privileges_are_dockers_caps() {
        let p = Privileges::default();
        assert_eq!(p.caps.len(), 14);
        assert!(p.no_new_privs && p.seccomp);
        let keep = kept(&p).unwrap();
        assert!(keep.contains(&Capability::CAP_NET_RAW));
        assert!(!keep.contains(&Capability::CAP_SYS_ADMIN));
        // The caps crate knows every name berth does.
        assert_eq!(kept(&Privileges::unconfined()).unwrap().len(), 41);
        assert!(kept(&Privileges {
            caps: vec!["CAP_BOGUS".into()],
            ..Privileges::default()
        })
        .is_err());
    }

    #[test]
    fn filters_compile() {
        let p = Privileges::default();
        let f = filters(&p.caps).unwrap();
        assert_eq!(f.len(), 2, "allow-list plus clone3 → ENOSYS");
        assert!(f[0].len() > 300);
        let mut admin = p.caps.clone();
        admin.push("CAP_SYS_ADMIN".into());
        assert_eq!(filters(&admin).unwrap().len(), 1);
    }

    #[test]
    fn table_has_no_duplicates_and_no_privileged_calls() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, nr) in ALLOW {
            assert!(seen.insert(*nr), "{name} twice");
            for bad in [
                "mount",
                "umount2",
                "setns",
                "unshare",
                "init_module",
                "finit_module",
                "sethostname",
                "pivot_root",
                "chroot",
                "bpf",
                "ptrace_bad",
            ] {
                assert_ne!(*name, bad, "{bad} must need a capability");
            }
        }
        let admin = BY_CAP
            .iter()
            .find(|(c, _)| *c == "CAP_SYS_ADMIN")
            .unwrap()
            .1;
        for n in [
            "mount",
            "setns",
            "unshare",
            "sethostname",
            "clone",
            "clone3",
        ] {
            assert!(admin.iter().any(|(x, _)| *x == n), "{n} with CAP_SYS_ADMIN");
        }
    }
}
