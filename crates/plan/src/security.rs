//! A container's confinement, decided from Docker's `HostConfig` security fields.
//!
//! Docker's names and meaning: `CapAdd`/`CapDrop` take capability names with or without the
//! `CAP_` prefix, in any case, and `ALL`; `Privileged` gives every capability and turns seccomp
//! and the masked paths off; `SecurityOpt` takes `no-new-privileges[=BOOL]`,
//! `seccomp=unconfined` and `systempaths=unconfined`; `ReadonlyRootfs`, `Binds`
//! (`HOST:CONTAINER[:ro|rw]`) and `Tmpfs` (`PATH` → `OPTIONS`). Everything is validated here
//! (400 with the field named) and stored typed; the kernel layer applies it.
//!
//! Where berth differs from Docker's defaults, it is stricter: `no_new_privs` is on unless
//! `no-new-privileges=false` is given, and every writable mount is `nodev` (berth has no device
//! cgroup, so a device node a container makes with `CAP_MKNOD` must not open). See
//! docs/SECURITY.md.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// Every capability the kernel defines, in number order (`CAP_CHOWN` is 0).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `--cap-add`/`--cap-drop` value meaning every capability.
pub const ALL: &str = "ALL";

/// Normalizes a `--cap-add`/`--cap-drop` value like Docker: any case, `CAP_` optional, `ALL`.
pub fn normalize_cap(flag: &str, value: &str) -> Result<String, PlanError> {
    let upper = value.trim().to_ascii_uppercase();
    if upper == ALL {
        return Ok(upper);
    }
    let name = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(PlanError::Invalid(format!(
            "{flag}: unknown capability: {value:?} (e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)"
        )))
    }
}

/// The capability set of a container, in number order (Docker's `TweakCapabilities`):
/// privileged → all; `ALL` in `add` → all but `drop`; `ALL` in `drop` → only `add`; else the
/// defaults minus `drop` plus `add`. `add` and `drop` must be normalized.
pub fn capabilities(privileged: bool, add: &[String], drop: &[String]) -> Vec<&'static str> {
    let has = |list: &[String], c: &str| list.iter().any(|x| x == c);
    ALL_CAPS
        .iter()
        .copied()
        .filter(|c| {
            if privileged {
                true
            } else if has(add, ALL) {
                !has(drop, c)
            } else if has(drop, ALL) {
                has(add, c)
            } else {
                (DEFAULT_CAPS.contains(c) && !has(drop, c)) || has(add, c)
            }
        })
        .collect()
}

/// `-v HOST:CONTAINER[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// `:ro`.
    #[serde(default)]
    pub read_only: bool,
}

/// `--tmpfs PATH[:OPTIONS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path in the container.
    pub target: String,
    /// The options as given (shown by inspect).
    #[serde(default)]
    pub options: String,
    /// `ro`.
    #[serde(default)]
    pub read_only: bool,
    /// `exec` (default `noexec`, like Docker).
    #[serde(default)]
    pub exec: bool,
    /// `suid` (default `nosuid`).
    #[serde(default)]
    pub suid: bool,
    /// tmpfs data options, validated: `size=`, `mode=`, `uid=`, `gid=`, `nr_inodes=`.
    #[serde(default)]
    pub data: Vec<String>,
}

/// The security part of a container's spec. `Default` is berth's default confinement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    /// `--privileged`.
    #[serde(default)]
    pub privileged: bool,
    /// `--cap-add`, normalized (`CAP_…` or `ALL`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// `--cap-drop`, normalized.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// `--security-opt` as given (shown by inspect).
    #[serde(default)]
    pub security_opt: Vec<String>,
    /// `no-new-privileges[=BOOL]`; `None`: berth's default (on unless privileged).
    #[serde(default)]
    pub no_new_privileges: Option<bool>,
    /// `seccomp=unconfined`.
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// `systempaths=unconfined`: no masked or read-only /proc and /sys paths.
    #[serde(default)]
    pub systempaths_unconfined: bool,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `-v`.
    #[serde(default)]
    pub binds: Vec<BindMount>,
    /// `--tmpfs`.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
}

impl SecuritySpec {
    /// The capabilities the container's processes keep.
    pub fn capabilities(&self) -> Vec<&'static str> {
        capabilities(self.privileged, &self.cap_add, &self.cap_drop)
    }

    /// Whether `no_new_privs` is set.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privileges.unwrap_or(!self.privileged)
    }

    /// Whether the default seccomp filter applies.
    pub fn seccomp(&self) -> bool {
        !self.privileged && !self.seccomp_unconfined
    }

    /// Whether Docker's masked and read-only paths apply.
    pub fn mask_system_paths(&self) -> bool {
        !self.privileged && !self.systempaths_unconfined
    }

    /// `HostConfig.Binds` as Docker shows them.
    pub fn binds_view(&self) -> Vec<String> {
        self.binds
            .iter()
            .map(|b| {
                let ro = if b.read_only { ":ro" } else { "" };
                format!("{}:{}{ro}", b.source, b.target)
            })
            .collect()
    }

    /// `HostConfig.Tmpfs` as Docker shows it.
    pub fn tmpfs_view(&self) -> BTreeMap<String, String> {
        self.tmpfs
            .iter()
            .map(|t| (t.target.clone(), t.options.clone()))
            .collect()
    }
}

/// The security fields of Docker's `HostConfig`, as received.
#[derive(Debug, Clone, Default)]
pub struct SecurityRequest<'a> {
    pub privileged: bool,
    pub cap_add: &'a [String],
    pub cap_drop: &'a [String],
    pub security_opt: &'a [String],
    pub read_only: bool,
    pub binds: &'a [String],
    pub tmpfs: Option<&'a BTreeMap<String, String>>,
}

/// Validates the request into a [`SecuritySpec`] (every error names its flag).
pub fn parse(req: &SecurityRequest<'_>) -> Result<SecuritySpec, PlanError> {
    let mut spec = SecuritySpec {
        privileged: req.privileged,
        read_only: req.read_only,
        security_opt: req.security_opt.to_vec(),
        ..SecuritySpec::default()
    };
    for c in req.cap_add {
        spec.cap_add.push(normalize_cap("--cap-add", c)?);
    }
    for c in req.cap_drop {
        spec.cap_drop.push(normalize_cap("--cap-drop", c)?);
    }
    for opt in req.security_opt {
        match parse_security_opt(opt)? {
            SecurityOpt::NoNewPrivileges(b) => spec.no_new_privileges = Some(b),
            SecurityOpt::SeccompUnconfined => spec.seccomp_unconfined = true,
            SecurityOpt::SystemPathsUnconfined => spec.systempaths_unconfined = true,
        }
    }
    let mut targets: Vec<String> = Vec::new();
    for b in req.binds {
        let bind = parse_bind(b)?;
        check_duplicate(&mut targets, &bind.target)?;
        spec.binds.push(bind);
    }
    if let Some(tmpfs) = req.tmpfs {
        for (path, options) in tmpfs {
            let t = parse_tmpfs(path, options)?;
            check_duplicate(&mut targets, &t.target)?;
            spec.tmpfs.push(t);
        }
    }
    Ok(spec)
}

fn check_duplicate(targets: &mut Vec<String>, target: &str) -> Result<(), PlanError> {
    if targets.iter().any(|t| t == target) {
        // Docker's message.
        return Err(PlanError::Invalid(format!(
            "Duplicate mount point: {target}"
        )));
    }
    targets.push(target.to_string());
    Ok(())
}

/// One `--security-opt` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `no-new-privileges`, `no-new-privileges=true|false` (also Docker's old `:` form).
    NoNewPrivileges(bool),
    /// `seccomp=unconfined`.
    SeccompUnconfined,
    /// `systempaths=unconfined`.
    SystemPathsUnconfined,
}

/// Parses one `--security-opt` value (Docker's names; `=` or the legacy `:`).
pub fn parse_security_opt(opt: &str) -> Result<SecurityOpt, PlanError> {
    let bad = |why: &str| PlanError::Invalid(format!("--security-opt {opt:?}: {why}"));
    if opt == "no-new-privileges" {
        return Ok(SecurityOpt::NoNewPrivileges(true));
    }
    let Some((key, value)) = opt.split_once('=').or_else(|| opt.split_once(':')) else {
        return Err(bad(
            "expected no-new-privileges[=true|false], seccomp=unconfined or systempaths=unconfined",
        ));
    };
    match key {
        "no-new-privileges" => match value {
            "true" | "1" => Ok(SecurityOpt::NoNewPrivileges(true)),
            "false" | "0" => Ok(SecurityOpt::NoNewPrivileges(false)),
            _ => Err(bad("the value must be true or false")),
        },
        "seccomp" if value == "unconfined" => Ok(SecurityOpt::SeccompUnconfined),
        "seccomp" => Err(bad(
            "berth has one seccomp profile (Docker's default); only seccomp=unconfined turns it off",
        )),
        "systempaths" if value == "unconfined" => Ok(SecurityOpt::SystemPathsUnconfined),
        "apparmor" | "label" => Err(bad(
            "berth applies no AppArmor or SELinux profile, so it has nothing to change",
        )),
        _ => Err(bad(
            "expected no-new-privileges[=true|false], seccomp=unconfined or systempaths=unconfined",
        )),
    }
}

/// Checks a path inside the container: absolute, no `..`, not `/`, no NUL.
fn container_path(flag: &str, p: &str) -> Result<String, PlanError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || path.components().any(|c| c == Component::ParentDir)
        || p.contains('\0')
    {
        return Err(PlanError::Invalid(format!(
            "{flag}: the container path {p:?} must be absolute, without '..'"
        )));
    }
    if path.components().count() == 1 {
        // Docker's message.
        return Err(PlanError::Invalid(format!(
            "{flag}: invalid mount config: destination can't be '/'"
        )));
    }
    Ok(normalize(path))
}

fn normalize(path: &Path) -> String {
    let mut out = String::new();
    for c in path.components() {
        if let Component::Normal(s) = c {
            out.push('/');
            out.push_str(&s.to_string_lossy());
        }
    }
    out
}

/// Parses `-v HOST:CONTAINER[:ro|rw]` (host paths only: berth has no named volumes).
pub fn parse_bind(spec: &str) -> Result<BindMount, PlanError> {
    let bad = |why: &str| PlanError::Invalid(format!("-v {spec:?}: {why}"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [s, t] => (*s, *t, ""),
        [s, t, o] => (*s, *t, *o),
        _ => return Err(bad("expected HOST:CONTAINER[:ro]")),
    };
    if !source.starts_with('/') || source.contains('\0') {
        return Err(bad(
            "the host path must be absolute (berth has no named volumes)",
        ));
    }
    let target = container_path("-v", target)?;
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => return Err(bad(&format!("unsupported option {o:?} (ro or rw)"))),
        }
    }
    let source = match normalize(Path::new(source)) {
        s if s.is_empty() => "/".to_string(),
        s => s,
    };
    Ok(BindMount {
        source,
        target,
        read_only,
    })
}

/// Parses `--tmpfs PATH` with its options (Docker's: `rw`, `ro`, `exec`, `noexec`, `suid`,
/// `nosuid`, `dev`/`nodev` (berth: always `nodev`), `size=`, `mode=`, `uid=`, `gid=`,
/// `nr_inodes=`).
pub fn parse_tmpfs(path: &str, options: &str) -> Result<TmpfsMount, PlanError> {
    let target = container_path("--tmpfs", path)?;
    let bad = |why: String| PlanError::Invalid(format!("--tmpfs {path}:{options}: {why}"));
    let mut t = TmpfsMount {
        target,
        options: options.to_string(),
        read_only: false,
        exec: false,
        suid: false,
        data: Vec::new(),
    };
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => t.read_only = false,
            "ro" => t.read_only = true,
            "exec" => t.exec = true,
            "noexec" => t.exec = false,
            "suid" => t.suid = true,
            "nosuid" => t.suid = false,
            "nodev" => {}
            "dev" => {
                return Err(bad(
                    "dev is not allowed: berth mounts every writable path nodev".into(),
                ))
            }
            _ => {
                let Some((k, v)) = o.split_once('=') else {
                    return Err(bad(format!("unknown option {o:?}")));
                };
                let ok = match k {
                    "size" | "nr_inodes" => {
                        let digits = v.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G', '%']);
                        !digits.is_empty()
                            && digits.bytes().all(|b| b.is_ascii_digit())
                            && v.len() - digits.len() <= 1
                    }
                    "mode" => {
                        !v.is_empty()
                            && v.len() <= 4
                            && v.bytes().all(|b| (b'0'..=b'7').contains(&b))
                    }
                    "uid" | "gid" => {
                        !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
                    }
                    _ => return Err(bad(format!("unknown option {o:?}"))),
                };
                if !ok {
                    return Err(bad(format!("invalid value in {o:?}")));
                }
                t.data.push(o.to_string());
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cap_names_like_docker() {
        assert_eq!(
            normalize_cap("--cap-add", "net_admin").unwrap(),
            "CAP_NET_ADMIN"
        );
        assert_eq!(
            normalize_cap("--cap-add", "CAP_NET_ADMIN").unwrap(),
            "CAP_NET_ADMIN"
        );
        assert_eq!(
            normalize_cap("--cap-add", "cap_sys_admin").unwrap(),
            "CAP_SYS_ADMIN"
        );
        assert_eq!(normalize_cap("--cap-drop", "all").unwrap(), "ALL");
        let e = normalize_cap("--cap-add", "NET_ADMIM").unwrap_err();
        assert!(
            e.to_string().contains("--cap-add: unknown capability"),
            "{e}"
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidArgument);
        assert!(normalize_cap("--cap-add", "").is_err());
    }

    #[test]
    fn cap_sets_like_dockers_tweak_capabilities() {
        let default = capabilities(false, &[], &[]);
        assert_eq!(default.len(), 14);
        assert!(DEFAULT_CAPS.iter().all(|c| default.contains(c)));
        for c in [
            "CAP_SYS_ADMIN",
            "CAP_NET_ADMIN",
            "CAP_SYS_MODULE",
            "CAP_SYS_PTRACE",
        ] {
            assert!(!default.contains(&c), "{c} must not be a default");
        }
        // Number order.
        assert_eq!(default[0], "CAP_CHOWN");
        assert_eq!(default[13], "CAP_SETFCAP");

        assert_eq!(capabilities(true, &[], &s(&["ALL"])).len(), ALL_CAPS.len());
        let c = capabilities(false, &s(&["CAP_NET_ADMIN"]), &s(&["CAP_MKNOD"]));
        assert!(c.contains(&"CAP_NET_ADMIN") && !c.contains(&"CAP_MKNOD"));
        assert_eq!(c.len(), 14);
        assert_eq!(
            capabilities(false, &s(&["CAP_NET_RAW"]), &s(&["ALL"])),
            vec!["CAP_NET_RAW"]
        );
        assert!(capabilities(false, &[], &s(&["ALL"])).is_empty());
        let all_but = capabilities(false, &s(&["ALL"]), &s(&["CAP_SYS_ADMIN"]));
        assert_eq!(all_but.len(), ALL_CAPS.len() - 1);
        assert!(!all_but.contains(&"CAP_SYS_ADMIN"));
        // Adding a default twice changes nothing.
        assert_eq!(capabilities(false, &s(&["CAP_CHOWN"]), &[]), default);
    }

    #[test]
    fn security_opts() {
        use SecurityOpt::*;
        assert_eq!(
            parse_security_opt("no-new-privileges").unwrap(),
            NoNewPrivileges(true)
        );
        assert_eq!(
            parse_security_opt("no-new-privileges=false").unwrap(),
            NoNewPrivileges(false)
        );
        assert_eq!(
            parse_security_opt("no-new-privileges:true").unwrap(),
            NoNewPrivileges(true)
        );
        assert_eq!(
            parse_security_opt("seccomp=unconfined").unwrap(),
            SeccompUnconfined
        );
        assert_eq!(
            parse_security_opt("seccomp:unconfined").unwrap(),
            SeccompUnconfined
        );
        assert_eq!(
            parse_security_opt("systempaths=unconfined").unwrap(),
            SystemPathsUnconfined
        );
        for bad in [
            "no-new-privileges=maybe",
            "seccomp=/tmp/p.json",
            "apparmor=x",
            "bogus",
        ] {
            let e = parse_security_opt(bad).unwrap_err();
            assert!(e.to_string().starts_with("--security-opt"), "{bad}: {e}");
        }
    }

    #[test]
    fn spec_defaults_and_flags() {
        let d = SecuritySpec::default();
        assert!(d.no_new_privs() && d.seccomp() && d.mask_system_paths());
        let p = parse(&SecurityRequest {
            privileged: true,
            ..Default::default()
        })
        .unwrap();
        assert!(!p.no_new_privs() && !p.seccomp() && !p.mask_system_paths());
        assert_eq!(p.capabilities().len(), ALL_CAPS.len());
        let opts = s(&["no-new-privileges=false", "seccomp=unconfined"]);
        let adds = s(&["net_admin"]);
        let spec = parse(&SecurityRequest {
            cap_add: &adds,
            security_opt: &opts,
            ..Default::default()
        })
        .unwrap();
        assert!(!spec.no_new_privs() && !spec.seccomp() && spec.mask_system_paths());
        assert_eq!(spec.cap_add, vec!["CAP_NET_ADMIN"]);
        assert_eq!(spec.security_opt, opts);
    }

    #[test]
    fn binds() {
        let b = parse_bind("/srv/data:/data:ro").unwrap();
        assert_eq!(
            b,
            BindMount {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true
            }
        );
        assert!(!parse_bind("/srv//x/:/y/").unwrap().read_only);
        assert_eq!(parse_bind("/srv//x/:/y/").unwrap().target, "/y");
        assert_eq!(parse_bind("/:/host").unwrap().source, "/");
        for bad in [
            "data:/data",
            "/a",
            "/a:rel",
            "/a:/b/../c",
            "/a:/",
            "/a:/b:z",
            "/a:/b:ro:x",
        ] {
            let e = parse_bind(bad).unwrap_err();
            assert!(e.to_string().starts_with("-v"), "{bad}: {e}");
        }
        let v = SecuritySpec {
            binds: vec![b],
            ..Default::default()
        };
        assert_eq!(v.binds_view(), vec!["/srv/data:/data:ro"]);
    }

    #[test]
    fn tmpfs_options() {
        let t = parse_tmpfs("/run/x", "rw,exec,size=64m,mode=1777,uid=0").unwrap();
        assert!(t.exec && !t.read_only && !t.suid);
        assert_eq!(t.data, vec!["size=64m", "mode=1777", "uid=0"]);
        let t = parse_tmpfs("/cache", "").unwrap();
        assert!(!t.exec && !t.suid && t.data.is_empty());
        for (p, o) in [
            ("rel", ""),
            ("/", ""),
            ("/x", "dev"),
            ("/x", "size=lots"),
            ("/x", "mode=999"),
            ("/x", "size=1m,context=x"),
            ("/x", "foo"),
        ] {
            assert!(parse_tmpfs(p, o).is_err(), "{p}:{o}");
        }
        let mut m = BTreeMap::new();
        m.insert("/data".to_string(), String::new());
        let binds = s(&["/srv:/data"]);
        let e = parse(&SecurityRequest {
            binds: &binds,
            tmpfs: Some(&m),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "Duplicate mount point: /data");
    }
}
