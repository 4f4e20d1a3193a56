//! The container's seccomp filter ([`berth_kernel::confine::filter`]) in the running kernel:
//! installed on a thread of this test (a filter without `SECCOMP_FILTER_FLAG_TSYNC` binds only
//! the calling thread, and `no_new_privs` set first lets it be installed without root), which
//! then makes the calls whose answers the filter decides and reports what the kernel said.
//! Every call tried is harmless if the filter failed to deny it (`unshare(0)`, a mount of an
//! empty path), so a broken filter fails the test and nothing else.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::thread;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::personality::Persona;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// What the calls below got: `Ok` or the errno.
#[derive(Debug, PartialEq)]
struct Answers {
    inet: Result<(), Errno>,
    unix: Result<(), Errno>,
    alg: Result<(), Errno>,
    vsock: Result<(), Errno>,
    persona_query: Result<(), Errno>,
    persona_bsd: Result<(), Errno>,
    unshare: Result<(), Errno>,
    mount: Result<(), Errno>,
    spawn: Result<(), String>,
}

fn sock(family: AddressFamily, ty: SockType) -> Result<(), Errno> {
    socket(family, ty, SockFlag::SOCK_CLOEXEC, None).map(drop)
}

/// Installs the filter for `caps` on a new thread, which then makes the calls.
fn under_filter(caps: Vec<String>) -> Answers {
    thread::spawn(move || {
        nix::sys::prctl::set_no_new_privs().unwrap();
        let prog = berth_kernel::confine::filter(&caps).unwrap();
        berth_kernel::sys::install_seccomp_filter(&prog).unwrap();
        Answers {
            inet: sock(AddressFamily::Inet, SockType::Datagram),
            unix: sock(AddressFamily::Unix, SockType::Stream),
            alg: sock(AddressFamily::Alg, SockType::SeqPacket),
            vsock: sock(AddressFamily::Vsock, SockType::Stream),
            persona_query: nix::sys::personality::get().map(drop),
            // PER_BSD (6): the persona stays unchanged if the call is refused.
            persona_bsd: nix::sys::personality::set(Persona::from_bits_retain(6)).map(drop),
            // unshare(0) changes nothing even where it is allowed.
            unshare: nix::sched::unshare(CloneFlags::empty()),
            // An empty path: the kernel refuses it (ENOENT) where the filter lets it through.
            mount: nix::mount::mount(
                None::<&str>,
                "",
                None::<&str>,
                nix::mount::MsFlags::empty(),
                None::<&str>,
            ),
            // glibc spawns with clone3 first and falls back to clone on ENOSYS only.
            spawn: Command::new("true")
                .status()
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(s.to_string())
                    }
                }),
        }
    })
    .join()
    .unwrap()
}

/// Proves, in the kernel: Docker's default profile allows sockets of ordinary families and
/// denies AF_ALG and AF_VSOCK ones, allows the personality query and denies a non-Linux
/// persona, denies `unshare` and `mount` with EPERM; a process spawned under it starts (its
/// `clone3` gets ENOSYS, glibc's cue to fall back to `clone` without namespace flags, which
/// passes). With CAP_SYS_ADMIN, `unshare` and `mount` reach the kernel.
#[test]
fn the_filter_answers_in_the_kernel_as_dockers_profile_does() {
    let default = berth_kernel::confine::Privileges::default().caps;
    let got = under_filter(default.clone());
    assert_eq!(
        got,
        Answers {
            inet: Ok(()),
            unix: Ok(()),
            alg: Err(Errno::EPERM),
            vsock: Err(Errno::EPERM),
            persona_query: Ok(()),
            persona_bsd: Err(Errno::EPERM),
            unshare: Err(Errno::EPERM),
            mount: Err(Errno::EPERM),
            spawn: Ok(()),
        }
    );

    let mut admin = default;
    admin.push("CAP_SYS_ADMIN".into());
    let got = under_filter(admin);
    assert_eq!(got.unshare, Ok(()), "{got:?}");
    assert_eq!(got.mount, Err(Errno::ENOENT), "{got:?}");
    assert_eq!(got.spawn, Ok(()), "{got:?}");
}
