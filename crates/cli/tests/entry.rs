//! The CLI's own entry point (`src/entry.rs`), which replaces std's start-up: run as a user's
//! shell may run it, with a standard descriptor closed.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proves: started with its standard output closed (`1>&-`), `berth` has `/dev/null` on fd 1
/// while it talks to its daemon, not the daemon's socket (which would take the lowest free
/// number, 1, and receive whatever the command prints while the connection is open: a
/// container's output under `logs -f`). Seen from a fake daemon while it holds the request.
/// Without the entry's check of fds 0–2 fd 1 is the socket (checked by hand).
#[test]
fn a_closed_stdout_never_becomes_the_daemons_socket() {
    let dir = TempDir(std::env::temp_dir().join(format!("berth-entry-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let sock = dir.0.join("fake.sock");
    let listener = UnixListener::bind(&sock).expect("bind the fake daemon");
    // `sh` execs berth: the child's pid is berth's.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("exec \"$0\" -H \"unix://$1\" network ls 1>&-")
        .arg(env!("CARGO_BIN_EXE_berth-cli"))
        .arg(&sock)
        .spawn()
        .expect("run berth");
    let (mut conn, _) = listener.accept().expect("accept");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => break,
        }
    }
    let stdout = std::fs::read_link(format!("/proc/{}/fd/1", child.id()));
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
    )
    .expect("answer");
    drop(conn);
    let status = child.wait().expect("wait for berth");
    assert!(
        request.starts_with(b"GET /"),
        "request: {:?}",
        String::from_utf8_lossy(&request)
    );
    assert_eq!(
        stdout.ok(),
        Some(PathBuf::from("/dev/null")),
        "berth's fd 1 while it held the daemon's connection"
    );
    assert!(status.success(), "berth network ls 1>&-: {status}");
}

/// Proves: SIGPIPE stays ignored as under std's start-up: `berth --version` writing into a
/// pipe whose reader is gone gets EPIPE and exits 0, not killed by the signal (checked by
/// hand: without the entry's `signal(SIGPIPE, SIG_IGN)` it dies of signal 13).
#[test]
fn a_closed_pipe_is_an_error_not_a_death() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = Command::new(env!("CARGO_BIN_EXE_berth-cli"))
        .arg("--version")
        .stdout(writer)
        .status()
        .expect("run berth");
    assert_eq!(
        status.signal(),
        None,
        "berth --version into a closed pipe: {status}"
    );
    assert!(
        status.success(),
        "berth --version into a closed pipe: {status}"
    );
}
