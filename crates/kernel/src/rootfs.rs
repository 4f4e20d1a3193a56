//! The container's filesystem, assembled in its own mount namespace, as a runtime does.
//!
//! Stage 2 (pid 1) forks the command's process, calls [`prepare`] in a fresh, recursively
//! private mount namespace, then [`enter`]. With a `--rootfs`, `pivot_root` moves every process
//! of the namespace whose root is the old root (pid 1 and the waiting command) into the new one,
//! and the old root is detached, so no path leads back (a chroot can be escaped with a second
//! chroot; a detached root cannot). Without one, the view of the host's root is assembled on
//! the namespace's own root, where every process is already: there is no other root to escape
//! to, and `pivot_root`'s walk of every task on the machine is spared.
//!
//! The root:
//! * `--rootfs DIR`: DIR, bind-mounted (`nodev`) and read-only with `--read-only`.
//! * no rootfs: the namespace's private copy of the host's mounts, read-only and `nodev` as a
//!   whole (`mount_setattr`), with private tmpfs on `/tmp` and `/run` (so `/run/netns`, berthd's socket
//!   and the namespaces it holds are gone) and berthd's state and socket directories covered by
//!   empty read-only tmpfs ([`Filesystem::hide`]). Nothing the container writes reaches the
//!   host, except through a `-v` bind it was given. See docs/SECURITY.md for why read-only
//!   rather than a copy-on-write overlay.
//!
//! In both: a fresh `/proc` (the container's pid namespace), a fresh read-only `/sys` (its
//! network namespace), a `/dev` tmpfs with only null, zero, full, random, urandom and tty
//! bind-mounted from the host plus its own `/dev/pts`, `/dev/shm` and `/dev/mqueue`; Docker's
//! masked paths (an empty read-only tmpfs on directories, `/dev/null` on files) and read-only
//! paths; then the generated files and the `-v`/`--tmpfs` mounts. Every writable mount is
//! `nodev`: berth has no device cgroup, so a node made with `CAP_MKNOD` must not open.
//! `--privileged` gets the host's `/dev` and no masked paths, like Docker.

use std::fs::{self, File};
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};
use serde::{Deserialize, Serialize};

use crate::container::ContainerError;
use crate::sys::{mount_setattr, MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY};

/// Docker's masked paths (moby `oci/defaults.go`).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes every container gets (bind-mounted from the host's `/dev`).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// One `-v` or `--tmpfs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    /// `-v SOURCE:TARGET[:ro]`.
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    /// `--tmpfs TARGET:OPTIONS` (always `nodev`).
    Tmpfs {
        target: PathBuf,
        read_only: bool,
        exec: bool,
        suid: bool,
        /// `size=…,mode=…` (validated by the plan layer).
        data: String,
    },
}

impl Mount {
    fn target(&self) -> &Path {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// How the container's filesystem is assembled. `Default` is berth's default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Filesystem {
    /// `--read-only`: the rootfs (and without one, also `/tmp` and `/run`) read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Docker's masked and read-only paths (off with `--privileged` or
    /// `systempaths=unconfined`).
    #[serde(default = "yes")]
    pub mask_system_paths: bool,
    /// The host's `/dev` instead of the minimal one (`--privileged`).
    #[serde(default)]
    pub host_devices: bool,
    /// `-v` and `--tmpfs`, mounted after everything else, parents first.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Host directories (or files) made invisible in the view of the host's root: berthd's
    /// state directory and its socket's directory.
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    /// Detach the host's /proc, /sys and /dev from the view rather than cover them with the
    /// container's own: for a container that can unmount (`CAP_SYS_ADMIN`), which would
    /// otherwise find the host's /proc (and every namespace in it) underneath. Each detach
    /// waits for an RCU grace period, so a container that cannot unmount is spared it.
    #[serde(default)]
    pub detach_host_mounts: bool,
}

fn yes() -> bool {
    true
}

impl Default for Filesystem {
    fn default() -> Filesystem {
        Filesystem {
            read_only: false,
            mask_system_paths: true,
            host_devices: false,
            mounts: Vec::new(),
            hide: Vec::new(),
            detach_host_mounts: false,
        }
    }
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> ContainerError {
    let what = what.into();
    move |err| ContainerError::Sys { what, err }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |err| ContainerError::Io { what, err }
}

/// `root` + an absolute path inside the container, with symlinks resolved *inside* `root` (an
/// absolute link starts again at `root`, `..` stops there), as the container would see the
/// path. A plain join would let a link planted in a `--rootfs` (`etc -> /etc`) send a mount or
/// a created mount point into the host's filesystem, and the host's own links (`/var/run ->
/// /run`) would miss the view. More than 40 links (a loop) is an error, like the kernel's.
fn inside(root: &Path, target: &Path) -> Result<PathBuf, ContainerError> {
    let mut todo: Vec<std::ffi::OsString> = target
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&done);
        here.push(&c);
        match fs::read_link(&here) {
            Ok(_) if links >= 40 => {
                return Err(ContainerError::Io {
                    what: format!("resolve {} in the container's root", target.display()),
                    err: std::io::Error::from_raw_os_error(libc::ELOOP),
                })
            }
            Ok(to) => {
                links += 1;
                if to.is_absolute() {
                    done.clear();
                }
                for part in to.components().rev() {
                    match part {
                        Component::Normal(s) => todo.push(s.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

fn bind(src: &Path, dest: &Path, flags: MsFlags) -> Result<(), ContainerError> {
    mount(
        Some(src),
        dest,
        None::<&str>,
        MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(sys(format!(
        "bind-mount {} on {}",
        src.display(),
        dest.display()
    )))
}

fn tmpfs(dest: &Path, flags: MsFlags, data: &str) -> Result<(), ContainerError> {
    mount(Some("tmpfs"), dest, Some("tmpfs"), flags, Some(data))
        .map_err(sys(format!("mount tmpfs on {}", dest.display())))
}

fn setattr(path: &Path, recursive: bool, attrs: u64, what: &str) -> Result<(), ContainerError> {
    mount_setattr(path, recursive, attrs).map_err(io(format!("{what} {}", path.display())))
}

/// Creates a missing mount point (a directory, or an empty file); `shown` is its path inside
/// the container, for the message.
fn ensure_target(dest: &Path, dir: bool, shown: &Path) -> Result<(), ContainerError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
    }
    let made = if dir {
        fs::create_dir(dest)
    } else {
        File::create(dest).map(drop)
    };
    made.map_err(io(format!(
        "create the mount point {} (the host's root is read-only in a container: use a path \
         that exists, one under /tmp or /run or a --tmpfs, or --rootfs)",
        shown.display()
    )))
}

/// A detached copy of a mount (`open_tree(OPEN_TREE_CLONE)`): what `mount --bind SOURCE` would
/// attach, held by a descriptor until [`MountCopy::attach`] puts it somewhere (`move_mount`).
/// Taken before the source's path is covered (a tmpfs on `/tmp`, `/dev`, berthd's hidden state
/// directory) or sealed (the view made read-only and `nodev` as a whole), it keeps the source's
/// mount and flags. Dropped unattached, the kernel unmounts it with its descriptor.
struct MountCopy(std::os::fd::OwnedFd);

impl MountCopy {
    /// Copies the mount at `path` (like a bind mount of it; with `recursive` the mounts below
    /// it too, like `MS_BIND | MS_REC`).
    fn of(path: &Path, recursive: bool) -> std::io::Result<MountCopy> {
        use rustix::mount::OpenTreeFlags as F;
        let mut flags = F::OPEN_TREE_CLONE | F::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= F::AT_RECURSIVE;
        }
        Ok(MountCopy(rustix::mount::open_tree(
            rustix::fs::CWD,
            path,
            flags,
        )?))
    }

    /// Another copy of this one, which stays usable: one source attached at several places
    /// (`/dev/null` over every masked file).
    fn again(&self) -> std::io::Result<MountCopy> {
        use rustix::mount::OpenTreeFlags as F;
        let flags = F::OPEN_TREE_CLONE | F::OPEN_TREE_CLOEXEC | F::AT_EMPTY_PATH;
        Ok(MountCopy(rustix::mount::open_tree(&self.0, "", flags)?))
    }

    /// Attaches the copy at `dest`, in the caller's mount namespace.
    fn attach(self, dest: &Path) -> std::io::Result<()> {
        rustix::mount::move_mount(
            &self.0,
            "",
            rustix::fs::CWD,
            dest,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
        Ok(())
    }
}

/// Where [`prepare`] assembled the container's root (pass it to [`enter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A `--rootfs` directory, bound on itself: [`enter`] `pivot_root`s into it.
    Dir(PathBuf),
    /// The view of the host's root, assembled on the mount namespace's own root: the
    /// processes are in it already.
    InPlace,
}

/// Copies of every host path the container's mounts come from, taken before the view covers
/// (`/dev`, `/tmp`, `/run`, berthd's hidden state directory, where the generated files live)
/// or seals (read-only and `nodev` as a whole) the paths they are at.
struct Sources {
    /// `/dev/null`, laid over masked and hidden files (`None`: none to mask, or no such node).
    null: Option<MountCopy>,
    /// The standard device nodes (`host_devices`: none).
    devices: Vec<(&'static str, MountCopy)>,
    /// The host's whole `/dev` (`host_devices` only).
    host_dev: Option<MountCopy>,
    /// One per generated file, in `binds` order.
    binds: Vec<MountCopy>,
    /// One per `fsys.mounts` entry: a `-v`'s copy with its source's metadata (`None`: a tmpfs).
    volumes: Vec<Option<(MountCopy, fs::Metadata)>>,
}

impl Sources {
    fn take(fsys: &Filesystem, binds: &[(PathBuf, PathBuf)]) -> Result<Sources, ContainerError> {
        let copy = |path: &Path, recursive: bool| {
            MountCopy::of(path, recursive)
                .map_err(io(format!("copy the mount of {}", path.display())))
        };
        // A copy taken and never attached costs its dropping an RCU grace period: only
        // what will be used is copied.
        let null = if (fsys.mask_system_paths || !fsys.hide.is_empty())
            && Path::new("/dev/null").exists()
        {
            Some(copy(Path::new("/dev/null"), false)?)
        } else {
            None
        };
        let mut devices = Vec::new();
        let host_dev = if fsys.host_devices {
            Some(copy(Path::new("/dev"), true)?)
        } else {
            for name in DEVICES {
                let host = Path::new("/dev").join(name);
                if fs::metadata(&host).is_ok() {
                    devices.push((name, copy(&host, false)?));
                }
            }
            None
        };
        let binds = binds
            .iter()
            .map(|(src, _)| {
                MountCopy::of(src, false).map_err(io(format!("bind source {}", src.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let volumes = fsys
            .mounts
            .iter()
            .map(|m| match m {
                Mount::Bind { source, .. } => {
                    let meta = fs::metadata(source)
                        .map_err(io(format!("-v: the host path {}", source.display())))?;
                    Ok(Some((copy(source, true)?, meta)))
                }
                Mount::Tmpfs { .. } => Ok(None),
            })
            .collect::<Result<Vec<_>, ContainerError>>()?;
        Ok(Sources {
            null,
            devices,
            host_dev,
            binds,
            volumes,
        })
    }
}

fn attach(copy: MountCopy, dest: &Path, what: &Path) -> Result<(), ContainerError> {
    copy.attach(dest).map_err(io(format!(
        "bind-mount {} on {}",
        what.display(),
        dest.display()
    )))
}

/// Assembles the container's root (pass what it returns to [`enter`]). Call in a fresh mount
/// namespace whose `/` is recursively private. `binds` are the generated files (host file,
/// path inside).
///
/// Without a `--rootfs`, the view of the host's root is assembled on the namespace's own root,
/// a private copy of the host's mounts that nothing else sees: made read-only and `nodev` as a
/// whole (one `mount_setattr`), then covered. The processes are there already, so nothing has
/// to be entered: `pivot_root`, which walks every task on the machine (`chroot_fs_refs`,
/// about 1 ms at 1,000 containers, 3,000 tasks), and the detach of the old root are spared.
/// What a container can reach is the same as from a copy entered with `pivot_root`: the same
/// mounts, with the same flags, with the same covers; the root beneath `/` is the kernel's
/// empty `rootfs` in both (see docs/SECURITY.md). Every source (generated files, `-v`, device
/// nodes) is copied first ([`Sources`]), so a cover or the seal never hides or changes one.
/// `sysfs`: the network namespace's sysfs, mounted ahead and detached
/// ([`crate::netns::premount_sysfs`]), attached on `/sys` unless the container has the host's
/// devices (a writable `/sys`); without it (or if it cannot be attached) a new one is mounted.
pub fn prepare(
    fsys: &Filesystem,
    rootfs: Option<&Path>,
    binds: &[(PathBuf, PathBuf)],
    sysfs: Option<std::os::fd::OwnedFd>,
) -> Result<Root, ContainerError> {
    let mut sources = Sources::take(fsys, binds)?;
    // Files /dev/null is laid over, all at once after the masked paths.
    let mut nulled: Vec<PathBuf> = Vec::new();
    // Made read-only last (--read-only): mount points may have to be created in them first.
    let mut read_only_last: Vec<PathBuf> = Vec::new();
    let root = match rootfs {
        Some(dir) => {
            if fsys.read_only {
                read_only_last.push(dir.to_path_buf());
            }
            bind(dir, dir, MsFlags::MS_REC)?;
            setattr(dir, true, MOUNT_ATTR_NODEV, "make nodev")?;
            dir.to_path_buf()
        }
        None => {
            let root = PathBuf::from("/");
            // mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, {RDONLY|NODEV}): in this namespace
            // only (the host's own mounts keep their flags).
            setattr(
                &root,
                true,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV,
                "make read-only",
            )?;
            for (dir, data) in [("/tmp", "mode=1777"), ("/run", "mode=755")] {
                let dest = inside(&root, Path::new(dir))?;
                if dest.is_dir() {
                    tmpfs(&dest, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, data)?;
                    if fsys.read_only {
                        read_only_last.push(dest);
                    }
                }
            }
            for hidden in &fsys.hide {
                let dest = inside(&root, hidden)?;
                match fs::metadata(&dest) {
                    Ok(m) if m.is_dir() => tmpfs(
                        &dest,
                        MsFlags::MS_RDONLY
                            | MsFlags::MS_NOSUID
                            | MsFlags::MS_NODEV
                            | MsFlags::MS_NOEXEC,
                        "size=4k,mode=000",
                    )?,
                    Ok(_) => nulled.push(dest),
                    // Not there (or under /tmp or /run, gone already).
                    Err(_) => {}
                }
            }
            root
        }
    };

    if rootfs.is_none() && fsys.detach_host_mounts {
        // The host's /proc, /sys and /dev (and what is mounted below them) leave the view;
        // fresh ones take their place.
        for dir in ["proc", "sys", "dev"] {
            match umount2(&inside(&root, Path::new(dir))?, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(sys(format!("detach the host's /{dir}"))(e)),
            }
        }
    }
    // /proc for the container's pid namespace.
    let proc_dir = inside(&root, Path::new("/proc"))?;
    ensure_target(&proc_dir, true, Path::new("/proc"))?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys(format!("mount proc on {}", proc_dir.display())))?;

    // /sys for its network namespace.
    let sys_dir = inside(&root, Path::new("/sys"))?;
    ensure_target(&sys_dir, true, Path::new("/sys"))?;
    let ro = if fsys.host_devices {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    // The one made ahead is read-only: a container with the host's devices mounts its own.
    let attached = sysfs
        .filter(|_| !fsys.host_devices)
        .is_some_and(|fd| MountCopy(fd).attach(&sys_dir).is_ok());
    // Attached: nothing to mount, no comparison with every other namespace's sysfs here.
    if !attached {
        match mount(
            Some("sysfs"),
            &sys_dir,
            Some("sysfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | ro,
            None::<&str>,
        ) {
            Ok(()) => {}
            // The view's /sys is already this network namespace's sysfs (the container shares
            // berthd's namespace, `--network host`), read-only with the view; the kernel refuses
            // to stack a superblock on itself.
            Err(nix::errno::Errno::EBUSY) if rootfs.is_none() => {}
            Err(e) => return Err(sys(format!("mount sysfs on {}", sys_dir.display()))(e)),
        }
    }

    let dev = inside(&root, Path::new("/dev"))?;
    ensure_target(&dev, true, Path::new("/dev"))?;
    match sources.host_dev.take() {
        Some(host) => attach(host, &dev, Path::new("/dev"))?,
        None => setup_dev(&dev, std::mem::take(&mut sources.devices))?,
    }

    if fsys.mask_system_paths {
        for p in MASKED_PATHS {
            let dest = inside(&root, Path::new(p))?;
            match fs::metadata(&dest) {
                Ok(m) if m.is_dir() => tmpfs(
                    &dest,
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    "size=4k,mode=555",
                )?,
                Ok(_) => nulled.push(dest),
                Err(_) => {}
            }
        }
    }
    if let Some(null) = sources.null.take() {
        // A copy per file, the first copy itself on the last one: no copy is left over to
        // be dropped (each drop an RCU grace period).
        let null_path = Path::new("/dev/null");
        if let Some((last, rest)) = nulled.split_last() {
            for dest in rest {
                let again = null.again().map_err(io("copy the mount of /dev/null"))?;
                attach(again, dest, null_path)?;
            }
            attach(null, last, null_path)?;
        }
    }
    if fsys.mask_system_paths {
        for p in READONLY_PATHS {
            let dest = inside(&root, Path::new(p))?;
            if fs::symlink_metadata(&dest).is_ok() {
                bind(&dest, &dest, MsFlags::MS_REC)?;
                setattr(&dest, true, MOUNT_ATTR_RDONLY, "make read-only")?;
            }
        }
    }

    for ((src, target), copy) in binds.iter().zip(std::mem::take(&mut sources.binds)) {
        bind_file(copy, src, target, &root, rootfs.is_some())?;
    }

    let mut mounts: Vec<(&Mount, Option<(MountCopy, fs::Metadata)>)> = fsys
        .mounts
        .iter()
        .zip(std::mem::take(&mut sources.volumes))
        .collect();
    mounts.sort_by_key(|(m, _)| m.target().components().count());
    for (m, copy) in mounts {
        let dest = inside(&root, m.target())?;
        match (m, copy) {
            (
                Mount::Bind {
                    source, read_only, ..
                },
                Some((copy, meta)),
            ) => {
                ensure_target(&dest, meta.is_dir(), m.target())?;
                attach(copy, &dest, source)?;
                let device =
                    meta.file_type().is_char_device() || meta.file_type().is_block_device();
                let mut attrs = if device { 0 } else { MOUNT_ATTR_NODEV };
                if *read_only {
                    attrs |= MOUNT_ATTR_RDONLY;
                }
                if attrs != 0 {
                    setattr(&dest, true, attrs, "set the flags of")?;
                }
            }
            (
                Mount::Tmpfs {
                    read_only,
                    exec,
                    suid,
                    data,
                    ..
                },
                _,
            ) => {
                ensure_target(&dest, true, m.target())?;
                let mut flags = MsFlags::MS_NODEV;
                if *read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                if !exec {
                    flags |= MsFlags::MS_NOEXEC;
                }
                if !suid {
                    flags |= MsFlags::MS_NOSUID;
                }
                tmpfs(&dest, flags, data)?;
            }
            // Sources::take made a copy for every bind.
            (Mount::Bind { source, .. }, None) => {
                return Err(ContainerError::Config(format!(
                    "-v: no copy of {} was taken",
                    source.display()
                )))
            }
        }
    }
    for dir in &read_only_last {
        setattr(dir, false, MOUNT_ATTR_RDONLY, "make read-only")?;
    }
    Ok(match rootfs {
        Some(_) => Root::Dir(root),
        None => Root::InPlace,
    })
}

/// A minimal `/dev`: a tmpfs (nodev) with the standard nodes bind-mounted from the host's
/// (copies taken before: a bind mount keeps the host's flags, so they open), `/dev/pts`,
/// `/dev/shm`, `/dev/mqueue` and the usual links.
fn setup_dev(dev: &Path, devices: Vec<(&'static str, MountCopy)>) -> Result<(), ContainerError> {
    // A fresh tmpfs: nothing in it can be a link the container planted.
    tmpfs(
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for (name, copy) in devices {
        let dest = dev.join(name);
        File::create(&dest).map_err(io(format!("create {}", dest.display())))?;
        attach(copy, &dest, &Path::new("/dev").join(name))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let dest = dev.join(link);
        symlink(to, &dest).map_err(io(format!("create the link {}", dest.display())))?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(io(format!("create {}", pts.display())))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(sys(format!("mount devpts on {}", pts.display())))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(io(format!("create {}", shm.display())))?;
    tmpfs(
        &shm,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "mode=1777,size=65536k",
    )?;
    let mq = dev.join("mqueue");
    fs::create_dir(&mq).map_err(io(format!("create {}", mq.display())))?;
    mount(
        Some("mqueue"),
        &mq,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(sys(format!("mount mqueue on {}", mq.display())))
}

/// Bind-mounts a generated file (hosts, resolv.conf, hostname) from its copy. The daemon
/// rewrites the source in place, so the container sees changes. A missing target is created
/// in a rootfs; on the host's (read-only) root it is skipped with a warning.
fn bind_file(
    copy: MountCopy,
    src: &Path,
    target: &Path,
    root: &Path,
    in_rootfs: bool,
) -> Result<(), ContainerError> {
    let dest = inside(root, target)?;
    if fs::symlink_metadata(&dest).is_err() {
        if !in_rootfs {
            eprintln!(
                "berth: warning: {} does not exist on the host, not binding {} there",
                target.display(),
                src.display()
            );
            return Ok(());
        }
        let src_meta = fs::metadata(src).map_err(io(format!("bind source {}", src.display())))?;
        ensure_target(&dest, src_meta.is_dir(), target)?;
    }
    attach(copy, &dest, src)
}

/// Enters the root [`prepare`] assembled. A `--rootfs`: moves the calling process, and every
/// process of its mount namespace still in the old root, into it, and detaches the old root
/// (a chroot can be escaped with a second chroot; a detached root cannot). The view of the
/// host's root is the namespace's own root: nothing to move.
pub fn enter(root: &Root) -> Result<(), ContainerError> {
    let Root::Dir(root) = root else {
        return chdir("/").map_err(sys("chdir /"));
    };
    chdir(root).map_err(sys(format!("chdir {}", root.display())))?;
    // The old root ends up stacked on the new one, at "/"; unmounting "." removes it.
    pivot_root(".", ".").map_err(sys(format!("pivot_root into {}", root.display())))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root"))?;
    chdir("/").map_err(sys("chdir /"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("berth-rootfs-links-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("../../../..", root.join("usr/lib/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str| inside(&root, Path::new(p)).unwrap();
        assert_eq!(r("/escape/usr/x"), root.join("usr/x"));
        // etc -> /etc is root/etc again: a loop, refused.
        assert!(inside(&root, Path::new("/etc/hosts")).is_err());
        assert_eq!(r("/lib/x"), root.join("usr/lib/x"));
        assert_eq!(r("/usr/lib/up/x"), root.join("x"));
        assert_eq!(r("/../../x"), root.join("x"));
        assert!(inside(&root, Path::new("/loop/x")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
