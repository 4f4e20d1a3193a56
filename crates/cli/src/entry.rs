//! The process's entry point, a C `main`, without std's runtime start-up.
//!
//! A Rust `fn main` runs std's start-up first: it reads `/proc/self/maps` (the main thread's
//! stack guard), maps an alternate signal stack and installs SIGSEGV/SIGBUS handlers (to print
//! "has overflowed its stack"), checks that fds 0–2 are open and ignores SIGPIPE: 17 system
//! calls. A `berth` command starts cold (the user types it seconds apart), and there that
//! start-up costs ≈ 0.05–0.1 ms: an empty static Rust program 1.00 ms from the shell, 0.90
//! with this entry, an empty static C program 0.85; `berth --version` 1.21 → 1.16 ms and
//! `berth version` 1.64 → 1.56 ms (medians of 100 rounds, the builds alternating;
//! docs/PERFORMANCE.md, stop 43). berth keeps what a client needs of it: fds 0–2 open and
//! SIGPIPE ignored; a panic still prints its message and exits with 101. A stack overflow is a
//! plain SIGSEGV. `std::env::args` works as before: glibc hands argc and argv to std's own
//! initialiser in `.init_array`.
//!
//! This module is the CLI's only `unsafe` code: the exported symbol and three libc calls
//! (`poll`, `open`, `signal`).
#![allow(unsafe_code)]

use std::io::Write;
use std::os::raw::{c_char, c_int};

/// Called by the C runtime (glibc's `__libc_start_main`) as a C program's `main`.
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    open_standard_fds();
    // A write to berthd's socket closed under us (or to a closed pipe) must be EPIPE, an error
    // berth reports (or, for its output, `format::out`'s quiet exit), not a silent death.
    // SAFETY: only the signal's disposition changes (to SIG_IGN): no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic may not unwind out of an `extern "C"` function (it would abort): caught here,
    // after the panic hook printed its message, it exits with 101 as under std's `main`.
    let code = std::panic::catch_unwind(crate::run).unwrap_or(101);
    // std flushes stdout at exit only from its own runtime.
    let _ = std::io::stdout().flush();
    code
}

/// Opens `/dev/null` on whichever of fds 0, 1 and 2 is closed, as std's start-up does: a
/// socket opened while fd 1 is closed would get number 1, and the command's output would go
/// to berthd.
fn open_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is an array of 3 `pollfd` that outlives the call.
    if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
        return;
    }
    for closed in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // `open` takes the lowest free number: the closed one (lower ones were checked first).
        // SAFETY: a NUL-terminated path; the descriptor is meant to stay open for the
        // process's life.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd != closed.fd {
            // Not the number we meant to fill (or no descriptor at all): stop as std does.
            std::process::abort();
        }
    }
}
