//! End-to-end: the per-container options of `berth run` through berthd — `--hostname`,
//! `--add-host`, `--dns`, `-e`, and `--rootfs` (a chroot with generated files bind-mounted).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{code, show, stdout, World};

/// A minimal rootfs: dash and the libraries `ldd` names, plus a marker file. `None` when the
/// host has no `ldd`.
fn make_rootfs(root: &Path) -> Option<()> {
    let sh = std::fs::canonicalize("/bin/sh").ok()?;
    let ldd = Command::new("ldd").arg(&sh).output().ok()?;
    if !ldd.status.success() {
        return None;
    }
    let mut files = vec![sh.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in &files {
        let dest = root.join(f.strip_prefix("/").ok()?);
        std::fs::create_dir_all(dest.parent()?).ok()?;
        std::fs::copy(f, &dest).ok()?;
    }
    std::fs::create_dir_all(root.join("bin")).ok()?;
    let bin_sh = root.join("bin/sh");
    if !bin_sh.exists() {
        std::fs::copy(&sh, &bin_sh).ok()?;
    }
    std::fs::create_dir_all(root.join("etc")).ok()?;
    std::fs::write(root.join("rootfs-marker"), "in-rootfs\n").ok()?;
    Some(())
}

/// Proves: `--hostname` sets the UTS name and /etc/hostname; `--add-host` lands in /etc/hosts;
/// `--dns` in /etc/resolv.conf (on the default bridge, which has no embedded resolver); `-e`
/// in the environment; the name is the hostname by default.
#[test]
fn hostname_add_host_dns_env() {
    require_root!();
    let w = World::new();
    let o = w.berth(&[
        "run",
        "--rm",
        "--hostname",
        "box1",
        "--add-host",
        "db.internal:10.9.9.9",
        "--dns",
        "10.53.0.53",
        "-e",
        "GREETING=hi",
        "sh",
        "-c",
        "hostname; cat /etc/hostname; cat /etc/hosts; cat /etc/resolv.conf; echo $GREETING",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("box1"), "{out}");
    assert_eq!(lines.get(1).copied(), Some("box1"), "{out}");
    assert!(
        out.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.first() == Some(&"10.9.9.9") && f.contains(&"db.internal")
        }),
        "--add-host must be in /etc/hosts: {out}"
    );
    assert!(
        out.contains("nameserver 10.53.0.53"),
        "--dns must be in /etc/resolv.conf: {out}"
    );
    assert_eq!(lines.last().copied(), Some("hi"), "{out}");

    // Without --hostname, the name is the hostname.
    let named = w.berth_ok(&["run", "--rm", "--name", "web-7", "hostname"]);
    assert_eq!(named.trim(), "web-7");
}

/// Proves: `--rootfs DIR` runs the command chrooted into DIR, on a network, with the generated
/// /etc/hosts bind-mounted inside it, and the host's own /etc/hosts untouched.
#[test]
fn rootfs_container_on_a_network() {
    require_root!();
    let w = World::new();
    let root = w.dir.join("rootfs");
    if make_rootfs(&root).is_none() {
        eprintln!("skipped: cannot build a rootfs from /bin/sh and ldd");
        return;
    }
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    w.berth_ok(&["network", "create", "--subnet", "10.66.0.0/24", "rfs"]);
    let root_s = root.display().to_string();
    let o = w.berth(&[
        "run",
        "--rm",
        "--name",
        "chrooted",
        "--network",
        "rfs",
        "--rootfs",
        &root_s,
        "/bin/sh",
        "-c",
        "read m </rootfs-marker; echo $m; while read l; do echo \"$l\"; done </etc/hosts",
    ]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("in-rootfs"),
        "must run inside the rootfs: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("10.66.0.") && l.contains("chrooted")),
        "the generated /etc/hosts (with the container's address) must be visible: {out}"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        host_hosts,
        "the host's /etc/hosts must be untouched"
    );
    // A bad --rootfs is refused before anything starts.
    let bad = w.berth(&["run", "--rm", "--rootfs", "/nonexistent-rootfs", "true"]);
    assert_ne!(code(&bad), 0, "{}", show(&bad));
    assert!(
        common::stderr(&bad).contains("--rootfs"),
        "the error must name --rootfs: {}",
        show(&bad)
    );
}
