//! End-to-end: interactive containers under a real pseudo-terminal (the test is the user's
//! terminal emulator: it owns the master, types, reads and resizes), and piped stdin.
//! `berth run -it`, `berth exec -it`, `berth run -i`, `berth exec -i`, the detach keys, and the
//! stock docker CLI's `docker run -it` / `docker exec -it` against berthd.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{code, show, stdout, World};
use rustix::pty::OpenptFlags;
use rustix::termios::{LocalModes, Winsize};

/// How long any expected output may take (generous: CI runs two tests at once on two cores).
const WAIT: Duration = Duration::from_secs(30);

/// A program running on a pseudo-terminal as its controlling terminal (`setsid --ctty`).
struct Pty {
    master: std::fs::File,
    /// Kept to read the terminal's modes back (raw mode must be undone on exit).
    slave: OwnedFd,
    out: Arc<Mutex<Vec<u8>>>,
    child: Child,
    what: String,
}

impl Pty {
    fn spawn(cmd: Command, rows: u16, cols: u16) -> Pty {
        let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        rustix::pty::grantpt(&master).expect("grantpt");
        rustix::pty::unlockpt(&master).expect("unlockpt");
        set_size(&master, rows, cols);
        let slave =
            rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
                .expect("open the slave");
        let what = format!("{cmd:?}");
        let dup = || Stdio::from(slave.try_clone().expect("dup slave"));
        // setsid --ctty: a session of its own with this terminal as the controlling one, so
        // the program gets SIGWINCH and its terminal's job control like in a real terminal.
        let mut wrapped = Command::new("setsid");
        wrapped
            .args(["--ctty", "--wait"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        let child = wrapped
            .stdin(dup())
            .stdout(dup())
            .stderr(dup())
            .spawn()
            .expect("spawn on the pty");
        let master = std::fs::File::from(master);
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().expect("dup master"), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once nothing holds the slave any more (ours is held until drop).
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("output lock")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            slave,
            out,
            child,
            what,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("output lock")).into_owned()
    }

    fn typ(&mut self, s: &str) {
        self.master
            .write_all(s.as_bytes())
            .expect("type on the pty");
    }

    /// Waits until the output (from `from` on) contains `needle`; returns where it ends.
    fn expect_from(&self, from: usize, needle: &str) -> usize {
        let start = Instant::now();
        loop {
            let t = self.text();
            if let Some(i) = t.get(from..).and_then(|rest| rest.find(needle)) {
                return from + i + needle.len();
            }
            assert!(
                start.elapsed() < WAIT,
                "{}: no {needle:?} in the terminal's output after {WAIT:?}:\n{t}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        set_size(&self.master, rows, cols);
    }

    fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < WAIT,
                "{} did not exit; terminal:\n{}",
                self.what,
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The terminal is back in canonical mode with echo (the CLI undid its raw mode).
    fn is_cooked(&self) -> bool {
        let t = rustix::termios::tcgetattr(&self.slave).expect("tcgetattr");
        t.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO)
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // Only the process this test started, by its pid.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn set_size(fd: &impl AsFd, rows: u16, cols: u16) {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("set the window size");
}

fn berth_cmd(w: &World, args: &[&str]) -> Command {
    let mut c = Command::new(common::berth_bin());
    c.arg("-H").arg(w.host_url()).args(args);
    c.env_remove("BERTH_HOST");
    c
}

/// The shell session every terminal test runs: arithmetic done inside (the typed text has
/// `$((6*7))`, only the shell's answer has `42`), the terminal's name, its size, a resize seen
/// by `stty size`, Ctrl-C delivered through the terminal to a foreground job that traps it
/// (the shell session goes on), then `exit N`. Returns the CLI's exit code.
fn shell_session(t: &mut Pty, exit: i32) -> i32 {
    let mut at = 0;
    t.typ("echo A$((6*7))Z; tty; stty size\r");
    at = t.expect_from(at, "A42Z");
    at = t.expect_from(at, "/dev/pts/");
    t.expect_from(at, "30 100");
    // The window changes: the process sees the new size (SIGWINCH went to the CLI, which
    // asked berthd to resize the container's terminal). Asked again until it has landed, and
    // the window changed again each time: the docker CLI installs its SIGWINCH handler only
    // after its start request returns (moby's `MonitorTtySize`), so a change that comes
    // before is lost, and the kernel signals no change to the size the terminal already has.
    let start = Instant::now();
    loop {
        t.resize(40, 130);
        t.resize(41, 131);
        let from = t.text().len();
        t.typ("stty size\r");
        std::thread::sleep(Duration::from_millis(200));
        if t.text()[from..].contains("41 131") {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the resize never reached the container:\n{}",
            t.text()
        );
    }
    at = t.text().len();
    t.typ("sh -c 'trap \"echo GOT-INT; exit 7\" INT; echo READY-$((1+2)); while :; do sleep 1; done'\r");
    at = t.expect_from(at, "READY-3");
    t.typ("\x03");
    at = t.expect_from(at, "GOT-INT");
    t.typ("echo STATUS-$?-$((1+1))\r");
    t.expect_from(at, "STATUS-7-2");
    t.typ(&format!("exit {exit}\r"));
    t.wait()
}

/// Proves: `berth run -it --rm sh` under a real terminal: the command runs on a terminal made
/// in the container (`/dev/pts/N`), sized from ours at once and resized with it, Ctrl-C reaches
/// its foreground job through the terminal (the CLI and the session survive), `exit 3` is the
/// CLI's exit code, our terminal leaves raw mode, and `--rm` removed the container.
#[test]
fn run_it_shell_on_a_terminal() {
    require_root!();
    let w = World::new();
    let mut t = Pty::spawn(
        berth_cmd(&w, &["run", "-it", "--rm", "--name", "it1", "sh"]),
        30,
        100,
    );
    let code = shell_session(&mut t, 3);
    assert_eq!(code, 3, "exit code of the session; terminal:\n{}", t.text());
    assert!(t.is_cooked(), "the CLI left the terminal in raw mode");
    let ps = w.berth_ok(&["ps", "-a"]);
    assert!(!ps.contains("it1"), "--rm: the container is gone:\n{ps}");
}

/// Proves: `berth exec -it NAME sh` gets a terminal of its own in the running container, with
/// resize, Ctrl-C and its exit code; the container runs on; and `berth run -t` without `-i`
/// shows the command's terminal output raw (`\r\n`) and exits with its code.
#[test]
fn exec_it_shell_on_a_terminal() {
    require_root!();
    let w = World::new();
    w.run_d("ex1", &[], &["sleep", "300"]);
    w.wait_running("ex1");
    let mut t = Pty::spawn(berth_cmd(&w, &["exec", "-it", "ex1", "sh"]), 30, 100);
    let code = shell_session(&mut t, 4);
    assert_eq!(code, 4, "exit code of the exec; terminal:\n{}", t.text());
    assert!(t.is_cooked(), "the CLI left the terminal in raw mode");
    assert_eq!(w.inspect("ex1")["State"]["Running"], true);

    let mut t = Pty::spawn(
        berth_cmd(&w, &["run", "-t", "--rm", "sh", "-c", "tty; exit 6"]),
        24,
        80,
    );
    t.expect_from(0, "/dev/pts/0\r\n");
    assert_eq!(t.wait(), 6, "terminal:\n{}", t.text());
}

/// Proves: the detach keys (Ctrl-P Ctrl-Q) leave `berth run -it` with exit 0 and the container
/// running; its terminal is kept by berthd and `berth exec` still works in it.
#[test]
fn detach_keys_leave_the_container_running() {
    require_root!();
    let w = World::new();
    let mut t = Pty::spawn(berth_cmd(&w, &["run", "-it", "--name", "dk", "sh"]), 24, 80);
    t.typ("echo IN-$((2*3))\r");
    t.expect_from(0, "IN-6");
    t.typ("\x10\x11");
    assert_eq!(t.wait(), 0, "terminal:\n{}", t.text());
    assert!(t.is_cooked());
    assert_eq!(w.inspect("dk")["State"]["Running"], true);
    assert_eq!(w.exec_ok("dk", &["echo", "still"]).trim(), "still");
}

fn piped(mut cmd: Command, input: &str) -> std::process::Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
        // Dropped: EOF.
    });
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = writer.join();
    child.wait_with_output().expect("output")
}

/// Proves: `berth run -i` passes a piped stdin to the command (`cat` echoes it back) and its
/// end is the command's EOF (`cat` ends, the code after it is the CLI's); `berth exec -i NAME
/// sh <script` runs the script and exits with its code.
#[test]
fn piped_stdin_run_and_exec() {
    require_root!();
    let w = World::new();
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let o = piped(
        berth_cmd(
            &w,
            &["run", "-i", "--rm", "sh", "-c", "cat; echo END; exit 5"],
        ),
        &input,
    );
    assert_eq!(code(&o), 5, "{}", show(&o));
    assert_eq!(stdout(&o), format!("{input}END\n"), "{}", show(&o));

    w.run_d("px", &[], &["sleep", "300"]);
    w.wait_running("px");
    let o = piped(
        berth_cmd(&w, &["exec", "-i", "px", "sh"]),
        "echo script-$((40+2))\necho err >&2\nexit 9\n",
    );
    assert_eq!(code(&o), 9, "{}", show(&o));
    assert_eq!(stdout(&o), "script-42\n", "{}", show(&o));
    assert_eq!(common::stderr(&o), "err\n", "{}", show(&o));
}

/// Proves: the stock docker CLI's `docker run -it --rm` and `docker exec -it` work against
/// berthd under a real terminal (attach/exec start hijacked with 101 UPGRADED, resize, exit
/// codes), as with dockerd.
#[test]
fn docker_cli_run_it_and_exec_it() {
    require_root!();
    let w = World::new();
    assert!(
        Command::new("docker")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false),
        "the docker CLI is not installed"
    );
    let mut t = Pty::spawn(
        w.docker_command(&["run", "-it", "--rm", "--name", "dr", "busybox", "sh"]),
        30,
        100,
    );
    let code = shell_session(&mut t, 3);
    assert_eq!(code, 3, "docker run -it exit code; terminal:\n{}", t.text());
    assert!(t.is_cooked(), "docker left the terminal in raw mode");

    w.run_d("dx", &[], &["sleep", "300"]);
    w.wait_running("dx");
    let mut t = Pty::spawn(w.docker_command(&["exec", "-it", "dx", "sh"]), 30, 100);
    let code = shell_session(&mut t, 4);
    assert_eq!(
        code,
        4,
        "docker exec -it exit code; terminal:\n{}",
        t.text()
    );
}
