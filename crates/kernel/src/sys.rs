//! The only `unsafe` in berth: the system and libc calls that neither std nor nix wraps.
//!
//! * `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)`: no wrapper in std or nix; the program
//!   is berth's own ([`crate::seccomp`]), installed without forcing `no_new_privs` so that
//!   `--security-opt no-new-privileges=false` stays possible.
//! * `mount_setattr(2)` (Linux 5.12): makes a whole mount tree read-only (and `nodev`) in one
//!   atomic call, where `mount(MS_REMOUNT)` changes one mount at a time and would have to chase
//!   the host's submounts through `/proc/self/mountinfo`.
//! * `ioctl(TUNSETIFF)`: attaches an open `/dev/net/tun` to a new tun device (berth's WireGuard
//!   datapath for encrypted overlay networks reads and writes its packets), with
//!   `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD` for its virtio-net header and offloads, and
//!   `poll(2)` on it (nix's `poll` feature is not built; this is one call).
//! * `fork(2)` in a container's stage 2 (single-threaded, checked): the command's process is a
//!   copy of it instead of a fresh load of berthd's large executable (about 2 ms per container).
//!
//! * `sigaction(SIG_DFL)` for every signal just before a container's command is executed: an
//!   ignored signal stays ignored across `execve`, and berthd's inits ignore SIGPIPE (Rust's
//!   runtime does) and inherit whatever berthd was started with (`nohup`: SIGHUP). nix's
//!   wrappers are `unsafe` as well.
//!
//! * `close_range(3, ~0, CLOSE_RANGE_UNSHARE)`: gives berthd's spawner thread a descriptor
//!   table of its own with only the standard streams (see [`own_small_fd_table`]); neither std
//!   nor nix nor rustix wraps it safely (closing descriptors others may own).
//!
//! * `malloc_trim(0)` (glibc): hands the heap's free pages back to the kernel after berthd's
//!   big passes (see [`release_free_memory`]); `mallopt(M_ARENA_MAX)` caps its arenas (see
//!   [`limit_malloc_arenas`]); `mallopt(M_MXFAST, 0)` turns its fastbins off (see
//!   [`no_malloc_fastbins`]). `mi_option_set` (mimalloc): freed pages purged at once (see
//!   [`purge_freed_pages_at_once`]).
//!
//! * `recvmmsg(2)` / `sendmmsg(2)`: the embedded resolver's UDP thread takes every query
//!   waiting on its socket in one call and sends their answers in one (see [`DatagramBatch`]);
//!   with many queries in flight that saves two system calls per query. nix's wrappers need
//!   its `socket` feature, which is not built.
//!
//! Each call passes pointers to values that live until it returns; the kernel copies them.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` (linux/mount.h, `MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Installs a compiled seccomp filter on the calling thread (single-threaded callers only: no
/// TSYNC). Needs `CAP_SYS_ADMIN` or `no_new_privs`.
pub fn install_seccomp_filter(prog: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(prog.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads the program (it copies it).
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` initialized instructions borrowed for the whole call; the
    // kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets mount attributes (`MOUNT_ATTR_*`) on the mount at `path`, and with `recursive` on every
/// mount below it.
pub fn mount_setattr(path: &Path, recursive: bool, set: u64) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: `c_path` is NUL-terminated and `attr` is a valid `struct mount_attr` of the size
    // passed; both outlive the call, which only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What [`fork_single_threaded`] returned in this process.
pub enum Forked {
    /// The parent; the child's pid.
    Parent(nix::unistd::Pid),
    /// The child.
    Child,
}

/// `fork(2)`, refused unless the calling process has exactly one thread: the child then runs a
/// copy of the only thread, with no lock held by a thread that does not exist in it.
pub fn fork_single_threaded() -> io::Result<Forked> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    if threads != Some("1") {
        return Err(io::Error::other(format!(
            "fork needs a single-threaded process (threads: {threads:?})"
        )));
    }
    // SAFETY: the process has a single thread (checked above; nothing in the container stages
    // starts one), so the child can run any code.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child)),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(e.into()),
    }
}

/// `_IOW('T', 202, int)` (linux/if_tun.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags (the rest of the union
/// is unused padding; the whole struct is 40 bytes).
#[repr(C)]
struct TunReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`).
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUNSETVNETHDRSZ` (`_IOW('T', 216, int)`).
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `IFF_VNET_HDR`: every packet read or written carries a virtio-net header first.
const IFF_VNET_HDR: libc::c_int = 0x4000;
/// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`: the reader completes checksums and cuts TCP
/// aggregates itself.
const TUN_F_PLAIN: libc::c_uint = 0x01 | 0x02 | 0x04;
/// `TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM` (Linux 6.17): … TCP aggregates inside a
/// UDP tunnel too (VXLAN's), with or without an outer checksum.
const TUN_F_TUNNEL: libc::c_uint = 0x080 | 0x100;

/// A tun device opened by [`open_tun`].
pub struct Tun {
    /// The file its packets are read from and written to, each behind a
    /// [`crate::vnet::HDR_LEN`]-byte virtio-net header.
    pub file: std::fs::File,
    /// Whether the kernel hands out whole TCP aggregates, also inside UDP tunnels (the reader
    /// cuts them: [`crate::vnet::split`]); false on kernels before 6.17, where every packet
    /// read is one the wire carries (its header all zero).
    pub offload: bool,
}

/// Creates tun device `name` (layer 3, no packet information header) in the calling thread's
/// network namespace and returns the file its packets are read from and written to. The
/// device is not persistent: it disappears when the file is closed (berthd exiting included),
/// so a crash never leaves it behind. `IFF_NAPI` makes written packets go through a NAPI
/// context and GRO (Linux ≥ 4.15), so consecutive ones can be received as one aggregate.
/// `IFF_VNET_HDR` with a 24-byte header (`struct virtio_net_hdr_v1_hash_tunnel`) and the
/// offloads of [`Tun::offload`] where the kernel has them: the stack in front of the device
/// then runs once per aggregate instead of once per segment.
/// The file is non-blocking (`O_NONBLOCK`): its readers wait with [`readable`].
pub fn open_tun(name: &str) -> io::Result<Tun> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut req = TunReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_NAPI | IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `req` is a properly sized, initialized `struct ifreq` that lives for the whole
    // call; the kernel reads it and writes the chosen name back into it.
    let rc = unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut req as *mut TunReq) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr_len = crate::vnet::HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(fd, TUNSETVNETHDRSZ as _, &hdr_len as *const libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // TUNSETOFFLOAD takes the flags as the argument itself; a kernel without the tunnel
    // offloads refuses them (EINVAL): the device then works without any offload.
    // SAFETY: an integer argument, no memory passed.
    let offload = unsafe {
        libc::ioctl(
            fd,
            TUNSETOFFLOAD as _,
            (TUN_F_PLAIN | TUN_F_TUNNEL) as libc::c_ulong,
        )
    } == 0;
    Ok(Tun { file, offload })
}

/// Holds GRO open on device `dev` for `ns` nanoseconds after a poll
/// (`/sys/class/net/DEV/gro_flush_timeout`), so packets written one by one can merge.
pub fn set_gro_flush_timeout(dev: &str, ns: u32) -> io::Result<()> {
    std::fs::write(
        format!("/sys/class/net/{dev}/gro_flush_timeout"),
        ns.to_string(),
    )
}

/// A UDP socket bound to `addr` with receive and send buffers of `buffer` bytes asked for
/// (`SO_RCVBUF`/`SO_SNDBUF`; best effort, the kernel caps them at `net.core.rmem_max` and
/// `wmem_max`).
pub fn bind_udp(addr: std::net::SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind(addr)?;
    let s2 = socket2::SockRef::from(&sock);
    let _ = s2.set_recv_buffer_size(buffer);
    let _ = s2.set_send_buffer_size(buffer);
    Ok(sock)
}

/// Raises this process's soft limit of open files to its hard limit (`setrlimit(RLIMIT_NOFILE)`,
/// what `LimitNOFILE=` in a service unit does) and returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(hard.max(soft))
}

/// Whether `fd` has something to read within `timeout_ms` (`poll(2)`, `POLLIN`).
pub fn readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid, initialized pollfd borrowed for the call; `fd` is open for its
    // lifetime (BorrowedFd).
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// Gives every signal its default disposition (`sigaction(sig, SIG_DFL)`), as runc does for a
/// container's process: a command must not inherit an ignored SIGPIPE (Rust's runtime ignores
/// it in the init) or SIGHUP (a berthd started under `nohup`); a shell could not even `trap` a
/// signal ignored on entry. SIGKILL and SIGSTOP cannot be changed; numbers the C library
/// reserves for itself answer EINVAL and are left as they are.
pub fn reset_signal_dispositions() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no code of ours runs asynchronously; `sa`
        // lives until the call returns and the kernel copies it.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Caps glibc's malloc arenas at `n` (`mallopt(M_ARENA_MAX, n)`); call before any thread
/// starts. glibc gives threads arenas of their own as they contend (up to 8 per core), and
/// each keeps the free memory of its own heaps: berthd's short-lived threads (one per
/// container namespace read, the blocking pool) spread its memory over many. Returns whether
/// glibc took the setting.
pub fn limit_malloc_arenas(n: i32) -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: two integers; glibc's documented tunable, set before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n) == 1
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = n;
        false
    }
}

/// Turns glibc's fastbins off (`mallopt(M_MXFAST, 0)`); call before any thread starts.
/// A small chunk freed past the thread's cache (7 per size) waits in a fastbin, and the next
/// request of 1 KiB or more merges every waiting chunk of the arena first
/// (`malloc_consolidate`): berthd's passes free many small chunks, and the next request's
/// task cell (tokio's, 128-byte aligned, through `posix_memalign`) paid for all of them on
/// the request's path (3.3 % of berthd's CPU over connect/disconnect cycles, ≈ 0.12 ms per
/// call). Without fastbins a free merges its own chunk at once. Small frees still go to the
/// thread's cache first. Returns whether glibc took the setting.
pub fn no_malloc_fastbins() -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: two integers; glibc's documented tunable, set before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0) == 1
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// Hands free memory back to the kernel: mimalloc's (berthd's allocator: `mi_collect(true)`)
/// and glibc's (`malloc_trim(0)`; glibc's own allocations). glibc kept memory freed in the
/// middle of its heaps: after a full reconcile pass over 1,000 containers (dumps, 10,000
/// firewall elements copied, JSON) berthd kept 320 MB it no longer used, against 70 MB live
/// (measured with `malloc_trim` through gdb). mimalloc, with its default purge delay, returned
/// freed pages only a second after they were freed and only when called again: an idle berthd
/// after a restart with 1,000 containers kept 68 MiB resident without this call (52 with
/// glibc's malloc, stop 48). berthd now purges at once ([`purge_freed_pages_at_once`]); this
/// collection stays for what mimalloc's heaps still hold. Costs a walk of the free lists and
/// pages: call it after big work, off any request's path.
pub fn release_free_memory() {
    // SAFETY: a flag; mimalloc takes its own locks (this thread's heap, then the arenas' pending
    // purges, which are shared).
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: no arguments but a size; glibc takes its own arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `mi_option_purge_delay`, its place in `mi_option_e` (mimalloc.h) of the mimalloc that
/// `libmimalloc-sys` 0.1.49 builds (v3.3.2; v2.3.2 puts it there too); the crate names no
/// constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc hand a page back to the kernel as soon as it is free (`mi_option_set(
/// mi_option_purge_delay, 0)`) instead of 1 s later (mimalloc v3's default); call before any
/// thread starts.
///
/// Why: with the delay, the pages berthd's threads freed in a burst (a restart's pass, 1,000
/// removals) stayed resident once the burst was over, `mi_collect(true)` after the passes
/// ([`release_free_memory`]) notwithstanding. Its runtime workers go idle then and its
/// endpoint threads end after one job; why the collection missed those pages was not traced
/// further. Measured (docs/PERFORMANCE.md, stop 49): VmRSS once 1,000 containers were removed
/// 61.8–66.6 → 49.7–51.0 MiB, after a restart with them 57.9–62.8 → 57.7–58.0; and no slower:
/// connect 0.17–0.24 ms and disconnect 0.25 ms quicker (`connect_ab.sh`, both slots), `run
/// --rm` 0.3–0.6 ms (`start_ab.sh`, both slots). The restart with 1,000 containers, which frees
/// most of what it reads, took 342–457 ms against 315–349 (the goal is 1 s).
///
/// Does nothing for glibc's malloc (a binary that does not allocate with mimalloc).
pub fn purge_freed_pages_at_once() {
    // SAFETY: sets one of mimalloc's options (an integer it reads when it purges); called
    // before berthd starts any thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// `CLOSE_RANGE_UNSHARE` (linux/close_range.h).
const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// Gives the calling thread a file descriptor table of its own that holds only descriptors
/// 0, 1 and 2 (`close_range(3, ~0, CLOSE_RANGE_UNSHARE)`: the kernel copies just those three);
/// the process's other threads keep the shared table, untouched. A process spawned from this
/// thread then starts from that small table: `clone` copies (`dup_fd`) and `execve` closes
/// (close-on-exec) three descriptors instead of every one berthd holds (tens of thousands at
/// 1,000 containers: relays, pidfds, sockets). Linux 5.9.
pub fn own_small_fd_table() -> io::Result<()> {
    // SAFETY: with CLOSE_RANGE_UNSHARE the range is closed in the calling thread's new,
    // private table only; every descriptor the process's owners (OwnedFd, File, sockets) hold
    // stays open in the shared table they use. The caller must not use any of those from
    // this thread afterwards (the spawner thread only opens its own).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_UNSHARE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams for `recvmmsg(2)` on a UDP socket: `slots` buffers of `slot_len` bytes each
/// (whole datagrams when `slot_len` is 65,535), and their senders' addresses.
///
/// The buffers are allocated zeroed in one block, so pages no datagram ever reaches are never
/// touched (a large zeroed allocation is mapped lazily): 32 slots of 64 KiB cost about a page
/// each in practice. The headers the call needs are kept too, so a receive allocates nothing.
pub struct DatagramBatch {
    bufs: Vec<u8>,
    slot_len: usize,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

impl DatagramBatch {
    /// A batch of `slots` (at least 1) buffers of `slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> DatagramBatch {
        let slots = slots.max(1);
        let mut b = DatagramBatch {
            bufs: vec![0u8; slots * slot_len],
            slot_len,
            lens: vec![0; slots],
            truncated: vec![false; slots],
            // SAFETY: all zeros is a valid sockaddr_storage, iovec and mmsghdr (plain C
            // structs of integers and null pointers); the pointers are set just below.
            addrs: vec![unsafe { std::mem::zeroed() }; slots],
            iovs: vec![unsafe { std::mem::zeroed() }; slots],
            hdrs: vec![unsafe { std::mem::zeroed() }; slots],
            count: 0,
        };
        // The headers point into the vectors' heap blocks, which never move or grow (moving
        // the struct moves only the vectors' handles): they are set once, here, and a receive
        // only resets what the kernel writes back (name length, flags, length).
        for (i, ((iov, hdr), addr)) in b
            .iovs
            .iter_mut()
            .zip(b.hdrs.iter_mut())
            .zip(b.addrs.iter_mut())
            .enumerate()
        {
            // In bounds: `bufs` holds `slots` × `slot_len` bytes.
            iov.iov_base = b.bufs[i * slot_len..].as_mut_ptr().cast();
            iov.iov_len = slot_len;
            let h = &mut hdr.msg_hdr;
            h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
        }
        b
    }

    /// How many datagrams the last [`recv_batch`] received.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last [`recv_batch`] received nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive: its bytes, its sender (`None` when not IPv4/IPv6),
    /// and whether it was longer than a slot (then only its first `slot_len` bytes are here).
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<std::net::SocketAddr>, bool)> {
        if i >= self.count {
            return None;
        }
        let start = i * self.slot_len;
        let data = self.bufs.get(start..start + self.lens[i])?;
        Some((data, sockaddr_to_std(&self.addrs[i]), self.truncated[i]))
    }
}

/// The IPv4 or IPv6 address in `ss` (as the kernel filled it in), `None` for other families.
fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(
                SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )
                .into(),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(
                SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

/// Receives up to a batch of datagrams on `fd` with one `recvmmsg(2)`: waits for the first as
/// a `recv` would (the socket's blocking mode and `SO_RCVTIMEO` apply; `MSG_WAITFORONE`), then
/// takes only those already queued. Returns how many ([`DatagramBatch::len`]).
pub fn recv_batch(fd: std::os::fd::BorrowedFd<'_>, batch: &mut DatagramBatch) -> io::Result<usize> {
    batch.count = 0;
    let name_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    for hdr in batch.hdrs.iter_mut() {
        hdr.msg_hdr.msg_namelen = name_len;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
    }
    // SAFETY: `hdrs` holds `hdrs.len()` initialized headers whose name and iovec pointers
    // point into `batch`'s heap blocks (set in `new`, which never move), alive for the call;
    // `fd` is open for its lifetime.
    let rc = unsafe {
        libc::recvmmsg(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            batch.hdrs.as_mut_ptr(),
            batch.hdrs.len() as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = rc as usize;
    let slot_len = batch.slot_len;
    for (i, m) in batch.hdrs.iter().take(n).enumerate() {
        batch.lens[i] = (m.msg_len as usize).min(slot_len);
        batch.truncated[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
    }
    batch.count = n;
    Ok(n)
}

/// Receives one datagram on `fd` into the batch's first slot with a plain `recvmsg(2)`, as a
/// `recv` would wait (blocking mode and `SO_RCVTIMEO` apply). For when queries come one at a
/// time: [`recv_batch`] would, after the first, look for a second that is not there, which
/// costs the kernel a second pass through the socket for nothing. Returns 1
/// ([`DatagramBatch::len`]).
pub fn recv_one(fd: std::os::fd::BorrowedFd<'_>, batch: &mut DatagramBatch) -> io::Result<usize> {
    batch.count = 0;
    let Some(hdr) = batch.hdrs.first_mut() else {
        return Ok(0);
    };
    hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    hdr.msg_hdr.msg_flags = 0;
    // SAFETY: the header's name and iovec pointers point into `batch`'s heap blocks (set in
    // `new`, which never move), alive for the call; `fd` is open for its lifetime.
    let rc = unsafe { libc::recvmsg(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut hdr.msg_hdr, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    batch.lens[0] = (rc as usize).min(batch.slot_len);
    batch.truncated[0] = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
    batch.count = 1;
    Ok(1)
}

/// `UDP_SEGMENT` (linux/udp.h; not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;

/// One message for [`send_batch`]: `data` to `dest`, as one datagram, or with `segment` as
/// several: `data` is then datagrams of `segment` bytes end to end (the last may be shorter),
/// which the kernel sends through its stack as one packet (UDP GSO, `UDP_SEGMENT`, Linux
/// 4.18) and cuts into datagrams as late as it can: at the receiving socket when the receiver
/// is local or behind a veth. The destination gets the same datagrams either way.
pub struct Outgoing<'a> {
    /// The datagram, or the datagrams end to end.
    pub data: &'a [u8],
    /// Where it goes.
    pub dest: std::net::SocketAddr,
    /// The size of every datagram but the last (`None`: `data` is one datagram).
    pub segment: Option<u16>,
}

/// What [`send_batch`] builds for the kernel, kept between calls so a send allocates nothing
/// once it has seen its largest batch.
#[derive(Default)]
pub struct SendScratch {
    addrs: Vec<socket2::SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    control: Vec<u64>,
}

/// Sends `msgs` on `fd` with one `sendmmsg(2)`. Returns how many messages the kernel took,
/// from the first: fewer than `msgs.len()` when one failed (its error comes from the next
/// call, which starts with it). A message with a `segment` fails as a whole (`EINVAL`, `EIO`)
/// where the route cannot carry it; send its datagrams one by one then.
pub fn send_batch(
    fd: std::os::fd::BorrowedFd<'_>,
    msgs: &[Outgoing<'_>],
    scratch: &mut SendScratch,
) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // u64 words: control buffers must be aligned for cmsghdr.
    let words = space.div_ceil(8);
    let SendScratch {
        addrs,
        iovs,
        hdrs,
        control,
    } = scratch;
    control.clear();
    control.resize(words * msgs.len(), 0);
    addrs.clear();
    addrs.extend(msgs.iter().map(|m| socket2::SockAddr::from(m.dest)));
    iovs.clear();
    iovs.extend(msgs.iter().map(|m| libc::iovec {
        iov_base: m.data.as_ptr() as *mut libc::c_void,
        iov_len: m.data.len(),
    }));
    hdrs.clear();
    for (((m, iov), addr), ctl) in msgs
        .iter()
        .zip(iovs.iter_mut())
        .zip(addrs.iter())
        .zip(control.chunks_mut(words))
    {
        // SAFETY: all zeros is a valid msghdr.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_name = addr.as_ptr() as *mut libc::c_void;
        h.msg_namelen = addr.len();
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        if let Some(seg) = m.segment {
            h.msg_control = ctl.as_mut_ptr().cast();
            h.msg_controllen = space;
            // SAFETY: the control buffer is `space` bytes, aligned, zeroed, and room for
            // exactly one cmsghdr with a u16 of data, which is what is written.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            }
        }
        hdrs.push(libc::mmsghdr {
            msg_hdr: h,
            msg_len: 0,
        });
    }
    // SAFETY: `hdrs` holds initialized headers whose pointers point into `addrs`, `iovs`,
    // `control` (not resized since) and the caller's data, all alive for the call; the kernel
    // only reads them.
    let rc = unsafe {
        libc::sendmmsg(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    /// [`MI_OPTION_PURGE_DELAY`] is mimalloc's purge delay in the version this build links:
    /// its default there, 1,000 ms (v3's `options.c`), is what the option at that place holds
    /// (a newer mimalloc that moved its options fails here rather than have berthd set
    /// another).
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
            || std::env::var_os("MIMALLOC_RESET_DELAY").is_some()
        {
            return;
        }
        // SAFETY: reads one of mimalloc's options (an integer).
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            delay,
            1000,
            "mimalloc's option {} is not its purge delay",
            super::MI_OPTION_PURGE_DELAY
        );
    }
}
