//! End-to-end: a container cannot undo berth's isolation (issue 8, "Containers").
//!
//! Each escape is tried the way an attacker would, with one script: it fails in a default
//! container, and the very same script works with `--privileged`, so a pass proves the
//! mechanism (capabilities, seccomp, the filesystem view) and not a missing binary. Nothing
//! outside the world's namespaces and temp dir is changed, except the one marker file the
//! privileged `/etc` test writes on purpose, which a guard removes.

mod common;

use std::path::{Path, PathBuf};

use common::{code, show, stdout, World};

/// Runs `sh -c SCRIPT` in a fresh `--rm` container with `opts`.
fn run_sh(w: &World, opts: &[&str], script: &str) -> std::process::Output {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(opts);
    a.extend_from_slice(&["sh", "-c", script]);
    w.berth(&a)
}

/// Proves: berthd's network namespace (`/run/netns/<host ns>`) is gone from a container's
/// view, and even uncovered (`umount /run`) it cannot be entered without CAP_SYS_ADMIN;
/// `--privileged` can do both.
#[test]
fn nsenter_into_berthds_netns() {
    require_root!();
    let w = World::new();
    let script = format!(
        "ls /run/netns/{ns} >/dev/null 2>&1 && echo VISIBLE; umount -l /run 2>/dev/null; \
         nsenter --net=/run/netns/{ns} ip -o link show uplink",
        ns = w.host_ns
    );
    let o = run_sh(&w, &["--network", "none"], &script);
    assert_ne!(
        code(&o),
        0,
        "default container entered berthd's netns: {}",
        show(&o)
    );
    assert!(!stdout(&o).contains("VISIBLE"), "{}", show(&o));
    assert!(!stdout(&o).contains("uplink"), "{}", show(&o));

    let o = run_sh(&w, &["--network", "none", "--privileged"], &script);
    assert_eq!(code(&o), 0, "privileged: {}", show(&o));
    assert!(stdout(&o).contains("uplink"), "privileged: {}", show(&o));
}

/// A directory with `sh` and `python3` (the host's /usr, bound read-only) and a marker.
fn small_rootfs(w: &World) -> (PathBuf, Vec<String>) {
    let root = w.dir.join("rootfs");
    std::fs::create_dir_all(root.join("usr")).expect("rootfs");
    std::fs::write(root.join("rootfs-marker"), "in-rootfs\n").expect("marker");
    let mut opts = vec!["-v".to_string(), "/usr:/usr:ro".to_string()];
    for d in ["bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(d);
        match std::fs::read_link(&host) {
            Ok(to) => std::os::unix::fs::symlink(to, root.join(d)).expect("symlink"),
            Err(_) if host.is_dir() => opts.extend(["-v".into(), format!("/{d}:/{d}:ro")]),
            Err(_) => {}
        }
    }
    (root, opts)
}

/// The file handle (hex, type, length) of the root of the filesystem holding `dir`, or `None`
/// when the filesystem has no handles (then the privileged half of the test cannot run).
fn fs_root_handle(dir: &Path) -> Option<(String, i32, usize, String)> {
    let o = common::sh(
        "findmnt",
        &["-n", "-o", "TARGET", "-T", &dir.display().to_string()],
    );
    let mnt = stdout(&o).trim().to_string();
    if mnt.is_empty() {
        return None;
    }
    let script = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class FH(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("h", ctypes.c_ubyte * 128)]
fh = FH(); fh.bytes = 128; mid = ctypes.c_int()
if libc.name_to_handle_at(-100, sys.argv[1].encode(), ctypes.byref(fh), ctypes.byref(mid), 0) != 0:
    sys.exit(1)
print(bytes(fh.h[:fh.bytes]).hex(), fh.type, fh.bytes)
"#;
    let o = common::sh("python3", &["-c", script, &mnt]);
    let out = stdout(&o);
    let mut it = out.split_whitespace();
    let (hex, ty, len) = (
        it.next()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    );
    // The first component of `dir` below the mount point: visible only from the fs root.
    let rel = dir.strip_prefix(&mnt).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    Some((hex.to_string(), ty, len, first))
}

/// The classic chroot escape, as a Python function: chroot into a subdirectory `d` while
/// holding a descriptor of the current root, go back to it, `..` up as far as the kernel lets
/// a path go, and chroot there.
const CHROOT_ESCAPE: &str = r#"
def escape(d):
    fd = os.open("/", os.O_RDONLY)
    os.makedirs(d, exist_ok=True)
    os.chroot(d)
    os.fchdir(fd)
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
"#;

/// Proves: `--rootfs` is entered with pivot_root, so the classic chroot escape (chroot into a
/// subdirectory, `..` up, chroot again) ends in the rootfs, privileged or not; and the
/// "shocker" escape (open_by_handle_at on the filesystem's root) needs CAP_DAC_READ_SEARCH and
/// seccomp off: it fails by default and lists the host filesystem with `--privileged`.
#[test]
fn chroot_escape_from_rootfs() {
    require_root!();
    let w = World::new();
    let (root, mut opts) = small_rootfs(&w);
    let handle = fs_root_handle(&w.dir);
    let (hex, ty, len, first) = handle
        .clone()
        .unwrap_or_else(|| ("00".into(), 0, 1, "-".into()));
    let script = format!(
        r#"
import ctypes, os
{CHROOT_ESCAPE}
# The handle below is opened on this descriptor of the rootfs's root.
fd = os.open("/", os.O_RDONLY)
try:
    escape("/esc")
    print("CHROOT", sorted(os.listdir("/")))
except OSError as e:
    print("CHROOT-FAILED", e)
libc = ctypes.CDLL(None, use_errno=True)
class FH(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("h", ctypes.c_ubyte * 128)]
fh = FH(); fh.bytes = {len}; fh.type = {ty}
raw = bytes.fromhex("{hex}")
for i, b in enumerate(raw):
    fh.h[i] = b
h = libc.open_by_handle_at(fd, ctypes.byref(fh), os.O_RDONLY | os.O_DIRECTORY)
if h >= 0:
    print("HANDLE", sorted(os.listdir(h)))
else:
    print("HANDLE-FAILED", os.strerror(ctypes.get_errno()))
"#
    );
    let root_s = root.display().to_string();
    opts.extend(["--rootfs".into(), root_s]);
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = vec!["run", "--rm", "--network", "none"];
        a.extend(opts.iter().map(String::as_str));
        a.extend_from_slice(extra);
        a.extend(["python3", "-c", script.as_str()]);
        w.berth(&a)
    };
    let quoted = format!("'{first}'");

    let o = run(&[]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    let chroot = out.lines().find(|l| l.starts_with("CHROOT")).unwrap_or("");
    assert!(
        chroot.contains("'rootfs-marker'"),
        "escaped the rootfs: {}",
        show(&o)
    );
    assert!(out.contains("HANDLE-FAILED"), "{}", show(&o));

    let o = run(&["--privileged"]);
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    let chroot = out.lines().find(|l| l.starts_with("CHROOT")).unwrap_or("");
    assert!(
        chroot.contains("'rootfs-marker'") && !chroot.contains(&quoted),
        "pivot_root must hold even privileged: {}",
        show(&o)
    );
    if handle.is_some() {
        let listing = out.lines().find(|l| l.starts_with("HANDLE")).unwrap_or("");
        assert!(
            listing.starts_with("HANDLE [") && listing.contains(&quoted),
            "privileged open_by_handle_at must reach the host filesystem: {}",
            show(&o)
        );
    } else {
        eprintln!("note: no file handles on this filesystem; privileged half skipped");
    }
}

/// Proves: berthd's state directory (store, other containers' files, logs) and its socket are
/// invisible to a default container; `--privileged` can uncover them (`umount`).
#[test]
fn berths_state_is_hidden() {
    require_root!();
    let w = World::new();
    let other = w.run_d("other", &["--network", "none"], &["sleep", "60"]);
    let state = w.state_dir.display().to_string();
    let sock = w.socket.display().to_string();
    let script = format!(
        "umount -l {state} 2>/dev/null; umount -l {sockdir} 2>/dev/null; \
         ls {state} {state}/containers; test -S {sock} && echo SOCKET",
        sockdir = w.socket.parent().expect("socket dir").display()
    );
    let o = run_sh(&w, &["--network", "none"], &script);
    let out = stdout(&o);
    assert!(!out.contains("state.redb"), "state visible: {}", show(&o));
    assert!(
        !out.contains(&other),
        "another container's files visible: {}",
        show(&o)
    );
    assert!(
        !out.contains("SOCKET"),
        "berthd's socket visible: {}",
        show(&o)
    );

    let o = run_sh(&w, &["--network", "none", "--privileged"], &script);
    let out = stdout(&o);
    assert!(out.contains("state.redb"), "privileged: {}", show(&o));
    assert!(
        out.contains(&other) && out.contains("SOCKET"),
        "privileged: {}",
        show(&o)
    );
}

/// Proves: without `--rootfs`, the view of the host's root is the container's mount
/// namespace's own root, so the classic chroot escape (chroot into a subdirectory, `..` up,
/// chroot again) has nowhere else to go, privileged or not: it ends in the same view, with the
/// container's own `/tmp` (a marker written there first is still there), berthd's state
/// directory still covered (empty) and `/` still read-only.
#[test]
fn chroot_escape_from_the_hosts_view() {
    require_root!();
    let w = World::new();
    let state = w.state_dir.display().to_string();
    let script = format!(
        r#"
import os
{CHROOT_ESCAPE}
open("/tmp/berth-view-marker", "w").write("inside")
escape("/tmp/esc")
print("MARKER", os.path.exists("/tmp/berth-view-marker"))
print("STATE", sorted(os.listdir("{state}")))
try:
    open("/etc/berth-view-escape", "w")
    print("ETC writable")
except OSError as e:
    print("ETC", e.errno)
"#
    );
    for opts in [
        &["--network", "none"][..],
        &["--network", "none", "--privileged"],
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(opts);
        a.extend(["python3", "-c", script.as_str()]);
        let o = w.berth(&a);
        let _ = std::fs::remove_file("/etc/berth-view-escape");
        assert_eq!(code(&o), 0, "{opts:?}: {}", show(&o));
        let out = stdout(&o);
        assert!(
            out.contains("MARKER True"),
            "{opts:?}: escaped the view: {}",
            show(&o)
        );
        assert!(out.contains("STATE []"), "{opts:?}: {}", show(&o));
        assert!(
            out.contains("ETC 30"),
            "{opts:?}: / not read-only (EROFS): {}",
            show(&o)
        );
    }
}

/// Proves: no CAP_SYS_MODULE (init_module is refused with EPERM before the kernel looks at the
/// image; privileged gets past that check: ENOSYS, ENOEXEC or EINVAL for the garbage image,
/// nothing is loaded) and no CAP_NET_ADMIN (`ip link add`) by default; `--cap-add NET_ADMIN`
/// and `--privileged` give it.
#[test]
fn no_module_loading_no_net_admin() {
    require_root!();
    let w = World::new();
    let module = r#"
import ctypes, os, platform
nr = {"x86_64": 175, "aarch64": 105}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
img = b"\0" * 64
r = libc.syscall(nr, img, len(img), b"")
print("INIT_MODULE", os.strerror(ctypes.get_errno()) if r != 0 else "ok")
"#;
    let o = w.berth(&["run", "--rm", "--network", "none", "python3", "-c", module]);
    assert!(
        stdout(&o).contains("INIT_MODULE Operation not permitted"),
        "{}",
        show(&o)
    );
    let o = w.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--privileged",
        "python3",
        "-c",
        module,
    ]);
    assert!(stdout(&o).contains("INIT_MODULE"), "{}", show(&o));
    assert!(
        !stdout(&o).contains("Operation not permitted"),
        "privileged: {}",
        show(&o)
    );

    let link = "ip link add b0 type veth peer name b1 && ip -o link show b0";
    let o = run_sh(&w, &["--network", "none"], link);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(
        common::stderr(&o).contains("Operation not permitted"),
        "{}",
        show(&o)
    );
    for opts in [
        &["--network", "none", "--cap-add", "NET_ADMIN"][..],
        &["--network", "none", "--privileged"][..],
    ] {
        let o = run_sh(&w, opts, link);
        assert_eq!(code(&o), 0, "{opts:?}: {}", show(&o));
        assert!(stdout(&o).contains("b0"), "{opts:?}: {}", show(&o));
    }
}

/// Removes a file on drop (also while unwinding).
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Proves: the host's root is read-only in a container (and cannot be remounted without
/// CAP_SYS_ADMIN); `--privileged` can remount it and write the host's /etc (the marker is
/// checked on the host, then removed). Writes to /tmp stay in the container.
#[test]
fn writing_the_hosts_etc() {
    require_root!();
    let w = World::new();
    let marker = PathBuf::from(format!("/etc/berth-e2e-marker-{}", w.prefix));
    let _guard = RemoveOnDrop(marker.clone());
    let script = format!(
        "mount -o remount,bind,rw / 2>/dev/null; echo escaped > {m} && echo WROTE",
        m = marker.display()
    );
    let o = run_sh(&w, &["--network", "none"], &script);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(
        common::stderr(&o).contains("Read-only file system"),
        "{}",
        show(&o)
    );
    assert!(
        !marker.exists(),
        "a default container wrote the host's /etc"
    );

    // /tmp is the container's own.
    let tmp_marker = format!("/tmp/berth-e2e-tmp-{}", w.prefix);
    let o = run_sh(
        &w,
        &["--network", "none"],
        &format!("echo x > {tmp_marker} && cat {tmp_marker}"),
    );
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert!(!Path::new(&tmp_marker).exists(), "/tmp is not private");

    let o = run_sh(&w, &["--network", "none", "--privileged"], &script);
    assert_eq!(code(&o), 0, "privileged: {}", show(&o));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default(),
        "escaped\n",
        "privileged: {}",
        show(&o)
    );
}

/// Proves: a container cannot change its hostname (sethostname needs CAP_SYS_ADMIN, which
/// seccomp and the capability set both deny); `--privileged` can, in its own uts namespace
/// only: the host's hostname never changes.
#[test]
fn changing_the_hostname() {
    require_root!();
    let w = World::new();
    let host_before = nix::unistd::gethostname().expect("hostname");
    let script = "hostname berth-evil && hostname";
    let o = run_sh(&w, &["--network", "none", "--name", "hn1"], script);
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert!(!stdout(&o).contains("berth-evil"), "{}", show(&o));

    let o = run_sh(&w, &["--network", "none", "--privileged"], script);
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o).trim(), "berth-evil");
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host_before);
}

fn status_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Proves: the default confinement and each flag as seen from inside (`/proc/self/status`),
/// for the command and for `berth exec`; inspect shows the flags in HostConfig as Docker does;
/// masked and read-only paths; only the container's processes in /proc; bad flags are a 400.
#[test]
fn default_confinement_and_flags() {
    require_root!();
    let w = World::new();
    let status = "grep -E '^(CapBnd|CapEff|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status";
    // Docker's default set: 0x a80425fb.
    let o = run_sh(&w, &["--network", "none"], status);
    let out = stdout(&o);
    assert_eq!(
        status_field(&out, "CapBnd:"),
        "00000000a80425fb",
        "{}",
        show(&o)
    );
    assert_eq!(
        status_field(&out, "CapEff:"),
        "00000000a80425fb",
        "{}",
        show(&o)
    );
    assert_eq!(status_field(&out, "CapInh:"), "0000000000000000");
    assert_eq!(status_field(&out, "CapAmb:"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&out, "Seccomp:"), "2");

    let o = run_sh(
        &w,
        &[
            "--network",
            "none",
            "--cap-add",
            "net_admin",
            "--cap-drop",
            "CAP_MKNOD",
        ],
        status,
    );
    // + NET_ADMIN (bit 12), - MKNOD (bit 27).
    assert_eq!(
        status_field(&stdout(&o), "CapBnd:"),
        format!("{:016x}", (0xa804_25fbu64 | 1 << 12) & !(1u64 << 27)),
        "{}",
        show(&o)
    );
    let o = run_sh(&w, &["--network", "none", "--cap-drop", "ALL"], status);
    assert_eq!(status_field(&stdout(&o), "CapBnd:"), "0000000000000000");
    let o = run_sh(
        &w,
        &[
            "--network",
            "none",
            "--security-opt",
            "no-new-privileges=false",
            "--security-opt",
            "seccomp=unconfined",
        ],
        status,
    );
    assert_eq!(
        status_field(&stdout(&o), "NoNewPrivs:"),
        "0",
        "{}",
        show(&o)
    );
    assert_eq!(status_field(&stdout(&o), "Seccomp:"), "0", "{}", show(&o));

    // exec gets the container's confinement.
    w.run_d(
        "conf",
        &[
            "--network",
            "none",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "no-new-privileges",
        ],
        &["sleep", "60"],
    );
    let out = w.exec_ok("conf", &["sh", "-c", status]);
    assert_eq!(
        status_field(&out, "CapBnd:"),
        format!("{:016x}", 0xa804_25fbu64 | 1 << 12)
    );
    assert_eq!(status_field(&out, "Seccomp:"), "2");
    let hc = &w.inspect("conf")["HostConfig"];
    assert_eq!(hc["CapAdd"], serde_json::json!(["CAP_NET_ADMIN"]), "{hc}");
    assert_eq!(
        hc["SecurityOpt"],
        serde_json::json!(["no-new-privileges"]),
        "{hc}"
    );
    assert_eq!(hc["Privileged"], serde_json::json!(false), "{hc}");

    // /proc: only the container's processes; masked and read-only paths; a minimal /dev.
    let out = w.exec_ok(
        "conf",
        &[
            "sh",
            "-c",
            "ls /proc | grep -c '^[0-9]'; wc -c </proc/timer_list; ls /sys/firmware | wc -l; \
             (echo 1 >/proc/sys/kernel/ns_last_pid) 2>&1; ls /dev",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    let procs: usize = lines[0].trim().parse().unwrap_or(999);
    assert!(procs <= 5, "/proc shows {procs} processes: {out}");
    assert_eq!(lines[1].trim(), "0", "/proc/timer_list masked: {out}");
    assert_eq!(lines[2].trim(), "0", "/sys/firmware masked: {out}");
    assert!(lines[3].contains("Read-only file system"), "{out}");
    for dev in ["null", "zero", "urandom", "pts", "shm"] {
        assert!(out.lines().any(|l| l == dev), "/dev/{dev} missing: {out}");
    }
    assert!(!out
        .lines()
        .any(|l| l.starts_with("sd") || l.starts_with("vd") || l == "mem"));

    // Bad flags: 125 with the daemon's reason.
    for (flag, value) in [
        ("--cap-add", "FLY"),
        ("--security-opt", "seccomp=/nope.json"),
        ("-v", "relative:/x"),
        ("--tmpfs", "/x:dev"),
    ] {
        let o = w.berth(&["run", "--rm", flag, value, "true"]);
        assert_eq!(code(&o), 125, "{flag} {value}: {}", show(&o));
        assert!(
            common::stderr(&o).contains(flag),
            "{flag} {value}: {}",
            show(&o)
        );
    }
}

/// Proves: `-v` (rw and ro), `--tmpfs` and `--read-only` behave as in Docker; a rw bind is the
/// only way a write reaches the host.
#[test]
fn volumes_tmpfs_and_read_only() {
    require_root!();
    let w = World::new();
    let data = w.dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // /run is the container's own tmpfs, so the mount point can be made there; on the host's
    // read-only root it cannot.
    let rw = format!("{}:/run/data", data.display());
    let ro = format!("{}:/run/data:ro", data.display());
    let missing = format!("{}:/berth-no-such-dir", data.display());
    let o = run_sh(&w, &["--network", "none", "-v", &missing], "true");
    assert_eq!(code(&o), 125, "{}", show(&o));
    assert!(
        common::stderr(&o).contains("create the mount point /berth-no-such-dir"),
        "{}",
        show(&o)
    );
    let o = run_sh(
        &w,
        &["--network", "none", "-v", &rw],
        "echo hi > /run/data/f && echo ok",
    );
    assert_eq!(code(&o), 0, "{}", show(&o));
    assert_eq!(
        std::fs::read_to_string(data.join("f")).unwrap_or_default(),
        "hi\n"
    );
    let o = run_sh(
        &w,
        &["--network", "none", "-v", &ro],
        "cat /run/data/f; echo x > /run/data/g",
    );
    assert_ne!(code(&o), 0, "{}", show(&o));
    assert_eq!(stdout(&o), "hi\n");
    assert!(!data.join("g").exists());

    let o = run_sh(
        &w,
        &[
            "--network",
            "none",
            "--tmpfs",
            "/run/scratch:size=1m",
            "--read-only",
        ],
        "echo x > /run/scratch/a && cat /run/scratch/a && grep ' /run/scratch ' /proc/mounts; \
         (echo y > /tmp/b) 2>&1",
    );
    let out = stdout(&o);
    assert!(out.starts_with("x\n"), "{}", show(&o));
    assert!(
        out.contains("nodev") && out.contains("noexec"),
        "{}",
        show(&o)
    );
    assert!(
        out.contains("Read-only file system"),
        "--read-only /tmp: {}",
        show(&o)
    );

    // --read-only with a rootfs; the generated files still work.
    let (root, mut opts) = small_rootfs(&w);
    opts.extend([
        "--rootfs".into(),
        root.display().to_string(),
        "--read-only".into(),
    ]);
    let mut a: Vec<&str> = vec!["run", "--rm", "--network", "none", "--hostname", "ro1"];
    a.extend(opts.iter().map(String::as_str));
    a.extend(["sh", "-c", "cat /etc/hostname; (echo x > /new) 2>&1"]);
    let o = w.berth(&a);
    assert!(stdout(&o).starts_with("ro1\n"), "{}", show(&o));
    assert!(stdout(&o).contains("Read-only file system"), "{}", show(&o));
    assert!(!root.join("new").exists());
}

/// Proves: a container that may unmount (`--cap-add SYS_ADMIN`) finds nothing of the host's
/// under its /proc and /sys (they were detached, not just covered), and a default one cannot
/// unmount at all.
#[test]
fn nothing_of_the_hosts_under_proc() {
    require_root!();
    let w = World::new();
    // /sys first: umount(8) reads /proc/self/mountinfo.
    let script = "umount -l /sys 2>/dev/null && echo UNMOUNTED; ls /sys | wc -l; \
                  umount -l /proc 2>/dev/null; ls /proc | grep -c '^[0-9]'";
    let o = run_sh(&w, &["--network", "none"], script);
    assert!(!stdout(&o).contains("UNMOUNTED"), "{}", show(&o));
    let o = run_sh(&w, &["--network", "none", "--cap-add", "SYS_ADMIN"], script);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"UNMOUNTED"), "{}", show(&o));
    assert_eq!(
        lines.get(1),
        Some(&"0"),
        "the host's sysfs under /sys: {}",
        show(&o)
    );
    assert_eq!(
        lines.get(2),
        Some(&"0"),
        "host processes under /proc: {}",
        show(&o)
    );
}

/// Proves hostile strings cannot inject lines into the files berth writes into a container
/// (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`): a hostname, a DNS search domain, a DNS
/// option or an `--add-host` name carrying a newline (or other whitespace, `#`, `;`) is refused
/// with 400 through the API and the CLI, and nothing is stored; the same container created
/// with sane values gets exactly those lines.
#[test]
fn hostile_strings_cannot_inject_lines_into_generated_files() {
    require_root!();
    let w = World::new();
    let bodies = [
        r#"{"Cmd":["true"],"Hostname":"web\n6.6.6.6 bank.example"}"#,
        r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"none","DnsSearch":["ok.example\nnameserver 6.6.6.6"]}}"#,
        r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"none","DnsOptions":["ndots:1\nnameserver 6.6.6.6"]}}"#,
        r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"none","ExtraHosts":["evil\n6.6.6.6 bank:10.0.0.9"]}}"#,
        r#"{"Cmd":["true"],"HostConfig":{"NetworkMode":"none","DnsSearch":["a#b"]}}"#,
    ];
    for (i, body) in bodies.iter().enumerate() {
        let (status, reply) = w.api(
            "POST",
            &format!("/containers/create?name=hostile{i}"),
            Some(body),
        );
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains("/etc files"), "{body}: {reply}");
    }
    let o = w.berth(&["run", "--rm", "--network", "none", "-h", "a\nb", "true"]);
    assert_eq!(code(&o), 125, "{}", show(&o));
    let ps = w.berth_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(!ps.contains("hostile"), "nothing stored: {ps}");

    let o = run_sh(
        &w,
        &[
            "--network",
            "none",
            "-h",
            "web",
            "--dns-search",
            "svc.example",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "db:10.0.0.9",
        ],
        "cat /etc/hostname /etc/hosts /etc/resolv.conf",
    );
    assert_eq!(code(&o), 0, "{}", show(&o));
    let out = stdout(&o);
    assert!(out.starts_with("web\n"), "{out}");
    assert!(out.contains("10.0.0.9\tdb\n"), "{out}");
    assert!(out.contains("search svc.example\n"), "{out}");
    assert!(out.contains("options ndots:2\n"), "{out}");
    assert!(!out.contains("6.6.6.6"), "{out}");
}
