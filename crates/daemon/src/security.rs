//! Container confinement on the daemon side (issue 8): Docker's `HostConfig` security fields →
//! a typed [`SecuritySpec`] (400 naming the flag on bad input), stored in the container's spec;
//! at start and exec, the spec → the kernel layer's [`Privileges`] and [`Filesystem`].
//!
//! The parsing and the capability set are pure (`berth_plan::security`); what needs the host is
//! here: a `-v` source must exist, and berthd's own state and socket directories are hidden from
//! every container.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_api::types::HostConfig;
use berth_kernel::confine::Privileges;
use berth_kernel::rootfs::{Filesystem, Mount};
use berth_plan::security::{self as plan, SecurityRequest, SecuritySpec};

use crate::error::{ApiError, ApiResult};

/// berthd's API socket, set once by `main` (the daemon's `Config` does not carry it).
static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Records berthd's socket path: its directory is hidden from containers.
pub fn set_socket(path: &Path) {
    let _ = SOCKET.set(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
}

/// Validates the security fields of a create request.
pub fn spec_from_api(hc: &HostConfig) -> ApiResult<SecuritySpec> {
    let spec = plan::parse(&SecurityRequest {
        privileged: hc.privileged,
        cap_add: &hc.cap_add,
        cap_drop: &hc.cap_drop,
        security_opt: &hc.security_opt,
        read_only: hc.readonly_rootfs,
        binds: &hc.binds,
        tmpfs: Some(&hc.tmpfs),
    })?;
    for b in &spec.binds {
        if std::fs::symlink_metadata(&b.source).is_err() {
            // Docker would create it; berth never creates paths on the host for a container.
            return Err(ApiError::bad_request(format!(
                "-v {}:{}: the host path {} does not exist",
                b.source, b.target, b.source
            )));
        }
    }
    Ok(spec)
}

/// Fills the security fields of an inspect's `HostConfig` as Docker shows them.
pub fn host_config_view(mut hc: HostConfig, spec: &SecuritySpec) -> HostConfig {
    hc.privileged = spec.privileged;
    hc.cap_add = spec.cap_add.clone();
    hc.cap_drop = spec.cap_drop.clone();
    hc.security_opt = spec.security_opt.clone();
    hc.readonly_rootfs = spec.read_only;
    hc.binds = spec.binds_view();
    hc.tmpfs = spec.tmpfs_view();
    hc
}

/// What the container's processes (and `exec`s) may do.
pub fn privileges(spec: &SecuritySpec) -> Privileges {
    Privileges {
        caps: spec.capabilities().iter().map(|c| c.to_string()).collect(),
        no_new_privs: spec.no_new_privs(),
        seccomp: spec.seccomp(),
    }
}

/// How the container's filesystem is assembled; `state_dir` is berthd's (hidden, with the
/// socket's directory).
pub fn filesystem(spec: &SecuritySpec, state_dir: &Path) -> Filesystem {
    let mut hide = vec![std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf())];
    if let Some(dir) = SOCKET.get().and_then(|s| s.parent()) {
        if dir != Path::new("/") && !hide.iter().any(|h| h == dir) {
            hide.push(dir.to_path_buf());
        }
    }
    let mut mounts: Vec<Mount> = spec
        .binds
        .iter()
        .map(|b| Mount::Bind {
            source: PathBuf::from(&b.source),
            target: PathBuf::from(&b.target),
            read_only: b.read_only,
        })
        .collect();
    mounts.extend(spec.tmpfs.iter().map(|t| Mount::Tmpfs {
        target: PathBuf::from(&t.target),
        read_only: t.read_only,
        exec: t.exec,
        suid: t.suid,
        data: t.data.join(","),
    }));
    Filesystem {
        read_only: spec.read_only,
        mask_system_paths: spec.mask_system_paths(),
        host_devices: spec.privileged,
        mounts,
        hide,
        detach_host_mounts: spec.capabilities().contains(&"CAP_SYS_ADMIN"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn defaults_and_privileged() {
        let spec = spec_from_api(&HostConfig::default()).unwrap();
        assert_eq!(privileges(&spec), Privileges::default());
        let fs = filesystem(&spec, Path::new("/var/lib/berth"));
        assert!(fs.mask_system_paths && !fs.host_devices && !fs.read_only);
        assert_eq!(fs.hide[0], PathBuf::from("/var/lib/berth"));

        let hc = HostConfig {
            privileged: true,
            ..Default::default()
        };
        let spec = spec_from_api(&hc).unwrap();
        assert_eq!(privileges(&spec), Privileges::unconfined());
        let fs = filesystem(&spec, Path::new("/var/lib/berth"));
        assert!(!fs.mask_system_paths && fs.host_devices);
    }

    #[test]
    fn flags_round_trip_to_inspect() {
        let mut hc = HostConfig {
            cap_add: vec!["net_admin".into()],
            cap_drop: vec!["MKNOD".into()],
            security_opt: vec!["no-new-privileges=false".into()],
            readonly_rootfs: true,
            binds: vec!["/etc:/hostetc:ro".into()],
            ..Default::default()
        };
        hc.tmpfs.insert("/cache".into(), "size=1m".into());
        let spec = spec_from_api(&hc).unwrap();
        let p = privileges(&spec);
        assert!(p.caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!p.caps.contains(&"CAP_MKNOD".to_string()));
        assert!(!p.no_new_privs && p.seccomp);
        let view = host_config_view(HostConfig::default(), &spec);
        assert_eq!(view.cap_add, vec!["CAP_NET_ADMIN"]);
        assert_eq!(view.binds, vec!["/etc:/hostetc:ro"]);
        assert_eq!(
            view.tmpfs.get("/cache").map(String::as_str),
            Some("size=1m")
        );
        assert!(view.readonly_rootfs);
        let fs = filesystem(&spec, Path::new("/s"));
        assert_eq!(fs.mounts.len(), 2);
    }

    #[test]
    fn bad_input_is_a_400_naming_the_flag() {
        for hc in [
            HostConfig {
                cap_add: vec!["FLY".into()],
                ..Default::default()
            },
            HostConfig {
                security_opt: vec!["seccomp=/p.json".into()],
                ..Default::default()
            },
            HostConfig {
                binds: vec!["/no/such/berth/path:/x".into()],
                ..Default::default()
            },
        ] {
            let e = spec_from_api(&hc).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{e:?}");
        }
    }
}
