//! The front's only contact with the machine: the process entry (`_start`), the system calls it
//! makes (raw `syscall` instructions, Linux x86-64 numbers), and the four memory functions
//! the compiler calls. There is no C library under this program (that is its point, see the
//! crate's doc), so nothing else provides them.
//!
//! This module is the front's only `unsafe` code.
#![allow(unsafe_code)]

use core::arch::{asm, global_asm};

/// The most bytes of an argument or environment string the front reads (`MAX_ARG_STRLEN`, the
/// kernel's own limit for one of them, is 128 KiB).
const MAX_STRING: usize = 128 * 1024;

// The kernel starts a process at `_start` with `argc`, the `argv` pointers, a NULL, the `envp`
// pointers and a NULL on the stack, `rsp` pointing at `argc` (x86-64 psABI §3.4.1). `rbp` is
// zeroed to end the frame chain; `rsp` is aligned to 16 before the call, as a C call expects.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// The process's arguments and environment, as the kernel laid them out.
pub struct Process {
    argc: usize,
    argv: *const *const u8,
    envp: *const *const u8,
}

extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: `sp` is the stack pointer the kernel started the process with (see `_start`):
    // `argc`, then `argc` argument pointers and a NULL, then the environment's pointers ending
    // in a NULL.
    let process = unsafe {
        let argc = *sp;
        let argv = sp.add(1).cast::<*const u8>();
        Process {
            argc,
            argv,
            envp: argv.add(argc + 1),
        }
    };
    crate::run(&process)
}

/// The C string at `p` without its NUL (at most [`MAX_STRING`] bytes).
///
/// SAFETY (for the callers below): `p` is one of the process's argument or environment
/// strings, NUL-terminated and alive for the whole process.
fn c_str(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: see above; the scan stops at the NUL, which the kernel put there.
    unsafe {
        while n < MAX_STRING && *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

impl Process {
    /// The number of arguments, the program's name included.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// Argument `i` (`i < argc`).
    pub fn arg(&self, i: usize) -> &'static [u8] {
        debug_assert!(i < self.argc);
        // SAFETY: `i < argc`, so the pointer is one of the kernel's argument pointers.
        c_str(unsafe { *self.argv.add(i) })
    }

    /// The value of the environment variable `name`.
    pub fn env(&self, name: &[u8]) -> Option<&'static [u8]> {
        let mut i = 0;
        loop {
            // SAFETY: the environment's pointers end with a NULL, and the walk stops there.
            let p = unsafe { *self.envp.add(i) };
            if p.is_null() {
                return None;
            }
            let entry = c_str(p);
            if let Some(value) = entry
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
            {
                return Some(value);
            }
            i += 1;
        }
    }

    /// `execve(path, argv, envp)` with this process's own arguments and environment; returns
    /// only on failure, with the `errno`.
    pub fn exec(&self, path_nul: &[u8]) -> i32 {
        debug_assert_eq!(path_nul.last(), Some(&0));
        // SAFETY: `path_nul` ends with a NUL; `argv` and `envp` are the kernel's own arrays.
        let r = unsafe {
            syscall3(
                59,
                path_nul.as_ptr() as usize,
                self.argv as usize,
                self.envp as usize,
            )
        };
        errno(r)
    }
}

fn errno(r: isize) -> i32 {
    if r < 0 {
        -r as i32
    } else {
        0
    }
}

/// A result: `Ok(value)` or `Err(errno)`.
fn result(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(r as usize)
    }
}

// SAFETY (the three raw calls): the caller passes arguments valid for the system call `n`;
// `syscall` clobbers `rcx` and `r11` and nothing else (x86-64 Linux ABI).
unsafe fn syscall1(n: usize, a: usize) -> isize {
    let r;
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, lateout("rcx") _, lateout("r11") _, options(nostack))
    };
    r
}

unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
    let r;
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b, in("rdx") c,
             lateout("rcx") _, lateout("r11") _, options(nostack))
    };
    r
}

unsafe fn syscall6(n: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let r;
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => r, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _, options(nostack))
    };
    r
}

const EINTR: i32 = 4;
/// What `recv` fails with when the time-out of [`set_recv_timeout`] passed.
pub const EAGAIN: i32 = 11;

/// `exit_group(code)`.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an int and does not return.
        unsafe { syscall1(231, code as usize) };
    }
}

/// `write(fd, bytes)`, whole (retried after a partial write or EINTR); errors are ignored (the
/// front writes only its own messages to stderr).
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: a buffer and its length.
        match result(unsafe { syscall3(1, fd as usize, bytes.as_ptr() as usize, bytes.len()) }) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(EINTR) => {}
            Err(_) => return,
        }
    }
}

/// `open(path, O_WRONLY | O_CLOEXEC)`.
pub fn open_write(path_nul: &[u8]) -> Result<i32, i32> {
    debug_assert_eq!(path_nul.last(), Some(&0));
    const O_WRONLY: usize = 1;
    const O_CLOEXEC: usize = 0o2000000;
    // SAFETY: a NUL-terminated path.
    result(unsafe { syscall3(2, path_nul.as_ptr() as usize, O_WRONLY | O_CLOEXEC, 0) })
        .map(|fd| fd as i32)
}

/// `close(fd)`.
pub fn close(fd: i32) {
    // SAFETY: closes a descriptor this program opened.
    unsafe { syscall1(3, fd as usize) };
}

/// `readlink(path)` into `buf`: the link's length.
pub fn readlink(path_nul: &[u8], buf: &mut [u8]) -> Result<usize, i32> {
    debug_assert_eq!(path_nul.last(), Some(&0));
    // SAFETY: a NUL-terminated path and a buffer with its length.
    result(unsafe {
        syscall3(
            89,
            path_nul.as_ptr() as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        )
    })
}

/// `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)` connected to `path`.
pub fn connect_unix(path: &[u8]) -> Result<i32, i32> {
    const AF_UNIX: usize = 1;
    const SOCK_STREAM: usize = 1;
    const SOCK_CLOEXEC: usize = 0o2000000;
    // struct sockaddr_un: sa_family_t (u16), then sun_path[108].
    let mut addr = [0u8; 110];
    addr[0] = AF_UNIX as u8;
    let room = &mut addr[2..];
    if path.len() >= room.len() {
        return Err(36); // ENAMETOOLONG
    }
    room[..path.len()].copy_from_slice(path);
    // SAFETY: plain integers.
    let fd = result(unsafe { syscall3(41, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) })? as i32;
    loop {
        // SAFETY: the address and its length (family, path, NUL).
        let r = unsafe { syscall3(42, fd as usize, addr.as_ptr() as usize, 2 + path.len() + 1) };
        match result(r) {
            Ok(_) => return Ok(fd),
            Err(EINTR) => continue,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        }
    }
}

/// `send(fd, bytes, MSG_NOSIGNAL)`, whole: a closed peer is `EPIPE`, not a SIGPIPE.
pub fn send_all(fd: i32, mut bytes: &[u8]) -> Result<(), i32> {
    const MSG_NOSIGNAL: usize = 0x4000;
    while !bytes.is_empty() {
        // SAFETY: a buffer and its length; no address.
        let r = unsafe {
            syscall6(
                44,
                fd as usize,
                bytes.as_ptr() as usize,
                bytes.len(),
                MSG_NOSIGNAL,
                0,
                0,
            )
        };
        match result(r) {
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `recv(fd, buf)`: the bytes received, 0 at the end; `EAGAIN` when a time-out set by
/// [`set_recv_timeout`] passed.
pub fn recv(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: a buffer and its length; no address.
        let r = unsafe {
            syscall6(
                45,
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            )
        };
        match result(r) {
            Err(EINTR) => {}
            other => return other,
        }
    }
}

/// `setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, {0, micros})`; 0 is no time-out.
pub fn set_recv_timeout(fd: i32, micros: u64) {
    const SOL_SOCKET: usize = 1;
    const SO_RCVTIMEO: usize = 20;
    let tv: [i64; 2] = [(micros / 1_000_000) as i64, (micros % 1_000_000) as i64];
    // SAFETY: a `struct timeval` and its size.
    unsafe {
        syscall6(
            54,
            fd as usize,
            SOL_SOCKET,
            SO_RCVTIMEO,
            tv.as_ptr() as usize,
            16,
            0,
        )
    };
}

/// `rt_sigaction(SIGPIPE, SIG_IGN)`: a message written to a closed pipe is an error the write
/// ignores, not the process's death (berth-cli ignores SIGPIPE too).
pub fn ignore_sigpipe() {
    const SIGPIPE: usize = 13;
    const SIG_IGN: usize = 1;
    // struct kernel_sigaction { handler, flags, restorer, mask } (x86-64).
    let act: [usize; 4] = [SIG_IGN, 0, 0, 0];
    // SAFETY: the action above, no old action asked, the kernel's 8-byte signal set.
    unsafe { syscall6(13, SIGPIPE, act.as_ptr() as usize, 0, 8, 0, 0) };
}

/// `poll` of fds 0–2 with no events: which of them are closed (`POLLNVAL`).
pub fn closed_standard_fds() -> bool {
    const POLLNVAL: i16 = 0x20;
    // struct pollfd { int fd; short events; short revents; }
    let mut fds = [0i32, 0, 1, 0, 2, 0];
    // SAFETY: three `struct pollfd` (8 bytes each, laid out as above) and their count.
    let r = unsafe { syscall3(7, fds.as_mut_ptr() as usize, 3, 0) };
    if r < 0 {
        return true;
    }
    (0..3).any(|i| ((fds[2 * i + 1] >> 16) as i16) & POLLNVAL != 0)
}

// The memory functions the compiler emits calls to (struct copies, slice copies and
// comparisons). A C library would provide them; `rep movsb` / `rep stosb` / `repe cmpsb` are
// short and, for the few hundred bytes copied here, quick.

/// SAFETY: `dest` and `src` valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags))
    };
    dest
}

/// SAFETY: `dest` and `src` valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        return unsafe { memcpy(dest, src, n) };
    }
    // Overlapping with `dest` above `src`: copy backwards (direction flag set, then cleared, as
    // the ABI requires it clear).
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dest.add(n).wrapping_sub(1) => _,
             inout("rsi") src.add(n).wrapping_sub(1) => _, options(nostack))
    };
    dest
}

/// SAFETY: `dest` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
             options(nostack, preserves_flags))
    };
    dest
}

/// SAFETY: `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// SAFETY: as `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe { memcmp(a, b, n) }
}

/// The unwinder's personality routine, which `core` (built to unwind) names. This program
/// aborts on a panic (its profile says `panic = "abort"`), so nothing ever calls it.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
