//! Pseudo-terminals of containers and exec sessions (`berth run -t`, `docker exec -it`).
//!
//! Like runc's console socket: the terminal is made *inside* the container, in its own
//! `/dev/pts` (so `tty` there prints `/dev/pts/0`), by the process that becomes the command,
//! after it entered the container's root. It sends the master end to berthd over a unix socket
//! it got as its stdin ([`send_master`]), makes itself a session leader with the slave as its
//! controlling terminal and as stdin, stdout and stderr, then `exec`s the command. berthd keeps
//! the master: it copies the output to the log and to attached clients, the input from them,
//! and sets the window size on it (the kernel sends `SIGWINCH` to the terminal's foreground
//! process group).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::pty::OpenptFlags;

use crate::container::ContainerError;

fn sys(what: &str) -> impl FnOnce(rustix::io::Errno) -> ContainerError + '_ {
    move |e| ContainerError::Sys {
        what: what.to_string(),
        err: nix::errno::Errno::from_raw(e.raw_os_error()),
    }
}

/// In the process about to become the command, whose stdin is the console socket: opens a
/// new pseudo-terminal through `/dev/ptmx` (the container's, once in its root), sends the
/// master to the socket's peer, starts a new session with the slave as controlling terminal
/// and makes it stdin, stdout and stderr. The socket and the master are closed here.
pub fn take_terminal() -> Result<(), ContainerError> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(sys("open /dev/ptmx"))?;
    rustix::pty::grantpt(&master).map_err(sys("grantpt"))?;
    rustix::pty::unlockpt(&master).map_err(sys("unlockpt"))?;
    // The peer of this master whatever path it has here (TIOCGPTPEER, Linux 4.13).
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(sys("open the terminal's slave end"))?;
    send_master(std::io::stdin().as_fd(), master.as_fd())?;
    drop(master);
    rustix::process::setsid().map_err(sys("setsid"))?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(sys("make the terminal controlling"))?;
    // Replaces the socket on fd 0.
    rustix::stdio::dup2_stdin(&slave).map_err(sys("dup the terminal to stdin"))?;
    rustix::stdio::dup2_stdout(&slave).map_err(sys("dup the terminal to stdout"))?;
    rustix::stdio::dup2_stderr(&slave).map_err(sys("dup the terminal to stderr"))?;
    Ok(())
}

fn send_master(socket: BorrowedFd<'_>, master: BorrowedFd<'_>) -> Result<(), ContainerError> {
    let fds = [master];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"T")],
        &mut control,
        SendFlags::empty(),
    )
    .map_err(sys("send the terminal to berthd"))?;
    Ok(())
}

/// berthd's side: blocks until the master of a terminal arrives on `socket` (then returns it)
/// or every other holder of the socket's peer is gone (then `None`: the process died first).
pub fn receive_master(socket: &impl AsFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
    let mut got = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            for fd in fds {
                // Anything beyond the one expected is dropped (closed).
                if got.is_none() {
                    got = Some(fd);
                }
            }
        }
    }
    got
}

/// Sets a terminal's window size (on the master: the kernel signals the foreground process
/// group of its slave with `SIGWINCH` when it changed).
pub fn resize(master: &impl AsFd, rows: u16, cols: u16) -> std::io::Result<()> {
    rustix::termios::tcsetwinsize(
        master,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(std::io::Error::from)
}
