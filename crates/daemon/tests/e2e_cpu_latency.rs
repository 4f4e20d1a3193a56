//! End-to-end: berthd keeps idle CPUs polling only while it answers a request
//! (`berth_kernel::cpu_latency`): the machine's CPU latency target is 0 while a request is
//! being answered, back to what it was once the answer is written, and back after the 20 ms
//! cap for a request that lasts. A test binary of its own: another test's berthd answering at
//! the same moment would hold the same machine-wide target.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_kernel::cpu_latency::current_target as target;
use common::World;

/// Polls `target()` until it is `want` or `within` passed; the last value read.
fn target_becomes(want: i32, within: Duration) -> Option<i32> {
    let until = Instant::now() + within;
    loop {
        let now = target();
        if now == Some(want) || Instant::now() >= until {
            return now;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Proves: a `POST /containers/{id}/wait` of a running container (an answer whose body
/// lasts until the container exits) holds the target at 0 while it waits, and the cap lets go
/// after 20 ms although the wait goes on; a `network connect` through the CLI leaves nothing held
/// once it answered; `--no-idle-poll` holds nothing at all.
#[test]
fn idle_cpus_poll_only_while_a_request_is_answered() {
    require_root!();
    let Some(before) = target() else {
        eprintln!("skipped: /dev/cpu_dma_latency cannot be read here (no cpuidle)");
        return;
    };
    if before == 0 {
        eprintln!("skipped: something else holds a CPU latency of 0 on this machine");
        return;
    }
    let w = World::new();
    w.berth_ok(&["network", "create", "--subnet", "10.93.0.0/24", "lat"]);
    w.run_d("s", &[], &["sleep", "120"]);

    // The wait, by hand on the socket: its request is in berthd's hands once written.
    let socket = w.host_url().trim_start_matches("unix://").to_string();
    let mut wait = std::os::unix::net::UnixStream::connect(&socket).expect("connect to berthd");
    wait.write_all(b"POST /containers/s/wait HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n")
        .expect("send the wait");
    let sent = Instant::now();
    assert_eq!(
        target_becomes(0, Duration::from_millis(15)),
        Some(0),
        "berthd asked for a latency of 0 while answering"
    );
    assert!(
        sent.elapsed() < Duration::from_millis(20),
        "seen within the cap"
    );
    assert_eq!(
        target_becomes(before, Duration::from_secs(2)),
        Some(before),
        "the cap let go while the wait went on"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(19),
        "held until the cap: {:?}",
        sent.elapsed()
    );
    // The wait goes on: its head may have come (berthd, like dockerd, sends it at once and
    // the exit status when the container exits), its status not.
    wait.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 4096];
    let got = match wait.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => String::new(),
        Err(e) => panic!("reading the wait's answer: {e}"),
    };
    assert!(!got.contains("StatusCode"), "the wait ended early: {got}");
    drop(wait);

    // A connect: held while it ran, let go once its answer was written.
    w.berth_ok(&["network", "connect", "lat", "s"]);
    assert_eq!(
        target_becomes(before, Duration::from_millis(50)),
        Some(before),
        "nothing held after the answer"
    );

    // `--no-idle-poll`: a berthd that never asks.
    w.stop_daemon(false);
    w.start_daemon_with(&["--no-idle-poll"]);
    let mut wait = std::os::unix::net::UnixStream::connect(&socket).expect("connect to berthd");
    wait.write_all(b"POST /containers/s/wait HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n")
        .expect("send the wait");
    assert_eq!(
        target_becomes(0, Duration::from_millis(15)),
        Some(before),
        "--no-idle-poll asked for nothing"
    );
}
