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
//! The filter ([`filter`], compiled by [`crate::seccomp`]) denies with `EPERM` what the profile
//! does not allow, `clone3` without `CAP_SYS_ADMIN` with `ENOSYS` (so libc falls back to
//! `clone`, whose namespace flags are then checked), and kills the process on a foreign
//! architecture's system call (32-bit x86 on x86_64): it filters one architecture, which is
//! stricter than Docker.

use std::collections::BTreeMap;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use serde::{Deserialize, Serialize};

use crate::container::ContainerError;
use crate::seccomp::{self, Action, Cmp, Rule};
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
        crate::sys::install_seccomp_filter(&filter(&p.caps)?)
            .map_err(|e| err("install the seccomp filter", e))?;
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

/// Docker's default profile for a process holding `caps`, as one program
/// ([`crate::seccomp`]): the allow-list (everything else `EPERM`); without `CAP_SYS_ADMIN`,
/// `clone3` answers `ENOSYS` (libc then falls back to `clone`, whose namespace flags the
/// filter can see) and `clone` is allowed only without `CLONE_NEW*` flags.
pub fn filter(caps: &[String]) -> Result<Vec<seccomp::Insn>, ContainerError> {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let sys_admin = has("CAP_SYS_ADMIN");
    let nr =
        |n: i64| u32::try_from(n).map_err(|_| err("seccomp table", format!("system call {n}")));
    let allow = Rule::Always(Action::Allow);
    let eperm = Action::Errno(libc::EPERM as u16);
    let mut rules: BTreeMap<u32, Rule> = BTreeMap::new();
    for (_, n) in ALLOW {
        rules.insert(nr(*n)?, allow.clone());
    }
    for (cap, list) in BY_CAP {
        if has(cap) {
            for (_, n) in *list {
                rules.insert(nr(*n)?, allow.clone());
            }
        }
    }
    let any_of = |tests: Vec<Cmp>| Rule::Arg {
        arg: 0,
        tests,
        then: Action::Allow,
        otherwise: eperm,
    };
    // socket(2): every family but AF_ALG (38) and AF_VSOCK (40).
    rules.insert(
        nr(libc::SYS_socket)?,
        any_of(vec![Cmp::Lt(38), Cmp::Eq(39), Cmp::Gt(40)]),
    );
    // personality(2): the harmless personas only (PER_LINUX, PER_LINUX32, UNAME26, query).
    rules.insert(
        nr(libc::SYS_personality)?,
        any_of(
            [0u32, 8, 0x20000, 0x20008, 0xffff_ffff]
                .into_iter()
                .map(Cmp::Eq)
                .collect(),
        ),
    );
    if !sys_admin {
        // clone(2) without any CLONE_NEW* flag (0x7E020000).
        rules.insert(
            nr(libc::SYS_clone)?,
            any_of(vec![Cmp::NoBitOf(0x7E02_0000)]),
        );
        rules.insert(
            nr(libc::SYS_clone3)?,
            Rule::Always(Action::Errno(libc::ENOSYS as u16)),
        );
    }
    seccomp::compile(seccomp::NATIVE_ARCH, &rules, eperm).map_err(|e| err("seccomp filter", e))
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

    /// The filters seccompiler built before berth compiled its own (stop 32 and earlier):
    /// the reference the new program must agree with.
    fn seccompiler_filters(caps: &[String]) -> Vec<seccompiler::BpfProgram> {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition,
            SeccompFilter, SeccompRule, TargetArch,
        };
        let cond = |arg: u8, op: Op, value: u64| {
            SeccompRule::new(vec![
                SeccompCondition::new(arg, Len::Dword, op, value).unwrap()
            ])
            .unwrap()
        };
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
        rules.insert(
            libc::SYS_socket,
            vec![
                cond(0, Op::Lt, 38),
                cond(0, Op::Eq, 39),
                cond(0, Op::Gt, 40),
            ],
        );
        rules.insert(
            libc::SYS_personality,
            [0u64, 8, 0x20000, 0x20008, 0xffff_ffff]
                .iter()
                .map(|v| cond(0, Op::Eq, *v))
                .collect(),
        );
        if !sys_admin {
            rules.insert(libc::SYS_clone, vec![cond(0, Op::MaskedEq(0x7E02_0000), 0)]);
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let main = SeccompFilter::new(
            rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            arch,
        )
        .unwrap();
        let mut out = vec![seccompiler::BpfProgram::try_from(main).unwrap()];
        if !sys_admin {
            let mut clone3 = BTreeMap::new();
            clone3.insert(libc::SYS_clone3, Vec::new());
            let f = SeccompFilter::new(
                clone3,
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                arch,
            )
            .unwrap();
            out.push(seccompiler::BpfProgram::try_from(f).unwrap());
        }
        out
    }

    /// The kernel's verdict of a stack of filters: each runs, the newest first, and the
    /// action of highest precedence wins (`SECCOMP_RET_ACTION_FULL` compared as signed, the
    /// first of equal precedence kept).
    fn stacked(filters: &[Vec<seccomp::Insn>], d: &crate::seccomp::tests::Data) -> u32 {
        let mut best: Option<u32> = None;
        for f in filters.iter().rev() {
            let r = crate::seccomp::tests::run(f, d);
            let prec = |v: u32| (v & libc::SECCOMP_RET_ACTION_FULL) as i32;
            if best.is_none_or(|b| prec(r) < prec(b)) {
                best = Some(r);
            }
        }
        best.unwrap()
    }

    /// Proves the one-program filter decides exactly as seccompiler's two filters did, for
    /// Docker's default capabilities, with CAP_SYS_ADMIN, with every capability and with
    /// none: every system call number 0–1023, the x32 numbers, the largest, a foreign
    /// architecture, and the argument values at every edge of the socket, personality and
    /// clone rules (high bits set too); and that it is a fraction of the old size.
    #[test]
    fn the_one_program_decides_as_seccompilers_filters_did() {
        use crate::seccomp::tests::Data;
        let default = Privileges::default().caps;
        let mut admin = default.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let all = Privileges::unconfined().caps;
        let args: Vec<u64> = [
            0u64,
            1,
            2,
            8,
            10,
            16,
            37,
            38,
            39,
            40,
            41,
            0x20000,
            0x20008,
            0xffff_ffff,
            0x11,
            0x0100_0000,
            0x0002_0000,
            0x0400_0000,
            0x0800_0000,
            0x1000_0000,
            0x2000_0000,
            0x4000_0000,
            0x7E02_0000,
            0x8000_0000,
            0x0001_0000,
        ]
        .into_iter()
        .flat_map(|v| [v, v | (1 << 32), v | (0xffff_ffff << 32)])
        .collect();
        let nrs: Vec<u32> = (0..1024)
            .chain((0..600).map(|n| 0x4000_0000 | n))
            .chain([u32::MAX, 0x8000_0000])
            .collect();
        for caps in [default.clone(), admin, all, Vec::new()] {
            let old: Vec<Vec<seccomp::Insn>> = seccompiler_filters(&caps)
                .into_iter()
                .map(|p| {
                    p.iter()
                        .map(|i| seccomp::Insn {
                            code: i.code,
                            jt: i.jt,
                            jf: i.jf,
                            k: i.k,
                        })
                        .collect()
                })
                .collect();
            let new = filter(&caps).unwrap();
            let old_len: usize = old.iter().map(Vec::len).sum();
            assert!(
                new.len() * 3 < old_len,
                "{} instructions against {old_len}",
                new.len()
            );
            for arch in [crate::seccomp::NATIVE_ARCH, 0x4000_0003, 0xC000_00B7] {
                for nr in &nrs {
                    let special = [libc::SYS_socket, libc::SYS_personality, libc::SYS_clone]
                        .contains(&i64::from(*nr));
                    let tried: &[u64] = if special { &args } else { &[0, u64::MAX] };
                    for a in tried {
                        let d = Data {
                            nr: *nr,
                            arch,
                            args: [*a, *a, 0, 0, 0, 0],
                        };
                        assert_eq!(
                            crate::seccomp::tests::run(&new, &d),
                            stacked(&old, &d),
                            "caps {} nr {nr} arg {a:#x} arch {arch:#x}",
                            caps.len()
                        );
                    }
                }
            }
        }
        // Docker's default: a few hundred instructions at most.
        assert!(filter(&default).unwrap().len() < 300);
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
