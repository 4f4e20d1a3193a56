//! `berth`, the front (crates/front), against `berth-cli`: for the same command line and the
//! same answers from a fake berthd, the same requests reach berthd, and the same output and
//! exit code reach the user, whether the front answered itself or handed the line over.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn berth_cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth-cli"))
}

/// The front, built in its own profile (`cargo build --profile front -p berth-front --features
/// bin`, a few seconds: it has no dependencies) once per test process.
fn front() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let o = Command::new(cargo)
            .args([
                "build",
                "--profile",
                "front",
                "-p",
                "berth-front",
                "--features",
                "bin",
            ])
            .current_dir(root)
            .output()
            .expect("run cargo");
        assert!(
            o.status.success(),
            "building the front: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        berth_cli()
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("front/berth")
    })
    .clone()
}

/// A directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "berth-front-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one run of a binary did: the requests berthd got, stdout, stderr, exit code.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    requests: Vec<String>,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs `bin` with `args` (and `env`) against a fake berthd at `SOCK` in a directory of its own,
/// which answers every request with `answer` once it has read it whole.
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)], answer: &[u8]) -> Seen {
    let dir = TempDir::new();
    let sock = dir.0.join("s.sock");
    let listener = UnixListener::bind(&sock).expect("bind the fake berthd");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let answer = answer.to_vec();
    let fake = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut requests = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if req.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(&answer);
                requests.push(String::from_utf8_lossy(&req).into_owned());
            }
            requests
        })
    };
    let sock_s = sock.display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("SOCK", &sock_s)).collect();
    let mut c = Command::new(bin);
    c.args(&args)
        .env_remove("BERTH_HOST")
        .env("BERTH_CLI", berth_cli())
        .env("BERTH_NO_IDLE_POLL", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v.replace("SOCK", &sock_s));
    }
    let o = c.output().expect("run");
    stop.store(true, Ordering::Relaxed);
    let requests = fake.join().expect("fake berthd");
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&sock_s, "SOCK");
    Seen {
        requests: requests
            .iter()
            .map(|r| r.replace(&sock_s, "SOCK"))
            .collect(),
        stdout: clean(&o.stdout),
        stderr: clean(&o.stderr),
        code: o.status.code(),
    }
}

/// A fake berthd that reads one request and answers `answer`: its directory, socket, thread.
fn answer_once(answer: &'static [u8]) -> (TempDir, PathBuf, std::thread::JoinHandle<()>) {
    let dir = TempDir::new();
    let sock = dir.0.join("s.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        s.write_all(answer).expect("answer");
    });
    (dir, sock, server)
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const REFUSED: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
    content-length: 63\r\n\r\n{\"message\":\"container s is not connected to network c\\n(why)\"}";
const TEXT: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 6\r\n\r\n boom\n";

/// Proves: for every command line (those the front answers and those it hands over: other
/// commands, help, bad flags, hostile names) and every kind of answer, `berth` and
/// `berth-cli` send the same requests and print the same things with the same exit code.
#[test]
fn the_front_and_berth_cli_agree_on_every_command_line() {
    let hostile = "we\"b\\\n\t/%?é x";
    let lines: Vec<Vec<&str>> = vec![
        vec!["-H", "unix://SOCK", "network", "connect", "net", "web"],
        vec!["network", "connect", "-H", "SOCK", "net", "web"],
        vec!["network", "connect", "net", "web", "--host=unix://SOCK"],
        vec![
            "-H",
            "SOCK",
            "network",
            "connect",
            "--alias",
            "a",
            "--alias=b",
            "--ip",
            "10.1.0.9",
            "--ip6=fd00::9",
            "--link-local-ip",
            "169.254.3.3",
            "--link",
            "db:d",
            "net",
            "web",
        ],
        vec![
            "-H", "SOCK", "network", "connect", hostile, hostile, "--alias", hostile,
        ],
        vec!["-H", "SOCK", "network", "disconnect", "net", "web"],
        vec!["-H", "SOCK", "network", "disconnect", "-f", "net", "web"],
        vec![
            "-H",
            "SOCK",
            "network",
            "disconnect",
            "net",
            "web",
            "--force",
        ],
        // Handed over: parse errors, help, repeated or unknown flags, other commands.
        vec!["-H", "SOCK", "network", "connect", "net"],
        vec![
            "-H", "SOCK", "network", "connect", "--ip", "1.2.3.4", "--ip", "1.2.3.5", "n", "c",
        ],
        vec!["-H", "SOCK", "network", "connect", "--bogus", "n", "c"],
        vec![
            "-H", "SOCK", "network", "connect", "--alias", "-x", "n", "c",
        ],
        vec!["-H", "SOCK", "network", "connect", "", "c"],
        vec!["-H", "SOCK", "network", "connect", "--help"],
        vec!["-H", "SOCK", "network", "disconnect", "-f", "-f", "n", "c"],
        vec!["-H", "SOCK", "network", "rm", "n"],
        vec!["-H", "SOCK", "stop", "c"],
        vec!["-H", "tcp://127.0.0.1:1", "network", "connect", "n", "c"],
        vec!["-H", "SOCK", "-H", "SOCK", "network", "connect", "n", "c"],
        vec!["--version"],
    ];
    for line in &lines {
        for answer in [OK, REFUSED, TEXT] {
            let cli = run(&berth_cli(), line, &[], answer);
            let fr = run(&front(), line, &[], answer);
            assert_eq!(
                fr,
                cli,
                "{line:?} answered {:?}",
                String::from_utf8_lossy(answer)
            );
        }
    }
    // The socket from the environment.
    for env in [
        &[("BERTH_HOST", "unix://SOCK")][..],
        &[("BERTH_HOST", "SOCK")],
    ] {
        let line = ["network", "connect", "net", "web"];
        let cli = run(&berth_cli(), &line, env, REFUSED);
        assert_eq!(cli.requests.len(), 1, "{cli:?}");
        assert_eq!(run(&front(), &line, env, REFUSED), cli);
    }
}

/// Proves: where nothing listens, the front hands over before sending anything, so the user
/// reads berth-cli's own explanation (and the same exit code).
#[test]
fn without_berthd_the_user_reads_berth_clis_explanation() {
    let line = [
        "-H",
        "/nonexistent/berth-front-test.sock",
        "network",
        "connect",
        "n",
        "c",
    ];
    let cli = run(&berth_cli(), &line, &[], OK);
    assert!(
        cli.stderr
            .contains("cannot connect to berthd at /nonexistent/berth-front-test.sock"),
        "{cli:?}"
    );
    assert_eq!(run(&front(), &line, &[], OK), cli);
}

/// Proves: the front answers the two calls itself (it works with berth-cli gone), hands the
/// rest to `$BERTH_CLI`, and says what to do when that cannot run.
#[test]
fn the_front_answers_connect_alone_and_says_when_berth_cli_is_missing() {
    let missing = "/nonexistent/berth-cli";
    let env = [("BERTH_CLI", missing)];
    let seen = run(
        &front(),
        &["-H", "SOCK", "network", "connect", "n", "c"],
        &env,
        OK,
    );
    assert_eq!(
        (seen.code, seen.requests.len(), seen.stderr.as_str()),
        (Some(0), 1, "")
    );
    let seen = run(&front(), &["-H", "SOCK", "network", "ls"], &env, OK);
    assert_eq!(seen.code, Some(127));
    assert_eq!(seen.requests.len(), 0);
    assert!(
        seen.stderr.starts_with(&format!(
            "berth: cannot run {missing}: No such file or directory"
        )),
        "{seen:?}"
    );
}

/// Proves: the front is a static program with no interpreter and no C library (what makes it
/// quick), small, and it still answers when its standard output is closed by handing over
/// (berth-cli opens /dev/null there first).
#[test]
fn the_front_is_a_small_static_program_without_a_c_library() {
    let bytes = std::fs::read(front()).expect("read the front");
    assert!(
        bytes.len() < 256 * 1024,
        "the front is {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..4], b"\x7fELF");
    // e_type 2 = ET_EXEC (not position-independent); no PT_INTERP (3) or PT_DYNAMIC (2).
    assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 2);
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let phentsize = usize::from(u16::from_le_bytes([bytes[54], bytes[55]]));
    let phnum = usize::from(u16::from_le_bytes([bytes[56], bytes[57]]));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        assert!(
            kind != 2 && kind != 3,
            "program header {i} is of type {kind}"
        );
    }
    for glibc in [&b"__libc_start_main"[..], b"GLIBC_"] {
        assert!(
            !bytes.windows(glibc.len()).any(|w| w == glibc),
            "{}",
            String::from_utf8_lossy(glibc)
        );
    }
    // fd 1 closed: the command still reaches berthd and succeeds (handed over: berth-cli fills
    // fd 1 with /dev/null first).
    let (_dir, sock, server) = answer_once(OK);
    let start = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec \"$0\" -H {} network connect n c 1>&-",
            sock.display()
        ))
        .arg(front())
        .env("BERTH_CLI", berth_cli())
        .env("BERTH_NO_IDLE_POLL", "1")
        .status()
        .expect("run");
    assert!(status.success(), "{status:?}");
    server.join().expect("server");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// Proves: a refusal written to a closed pipe (`berth … 2>&1 | head -0`) ends the front as it
/// ends berth-cli, with exit code 1, not killed by SIGPIPE.
#[test]
fn a_message_to_a_closed_pipe_is_not_a_death_by_sigpipe() {
    for bin in [front(), berth_cli()] {
        let (_dir, sock, server) = answer_once(REFUSED);
        // A socket pair with one end closed: a write to the other fails with EPIPE and raises
        // SIGPIPE, as a pipe's does (`std::io::pipe` is newer than the workspace's MSRV).
        let (writer, reader) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        drop(reader);
        let writer = std::os::fd::OwnedFd::from(writer);
        let status = Command::new(&bin)
            .args([
                "-H",
                &sock.display().to_string(),
                "network",
                "disconnect",
                "c",
                "s",
            ])
            .env("BERTH_CLI", berth_cli())
            .env("BERTH_NO_IDLE_POLL", "1")
            .stderr(writer)
            .status()
            .expect("run");
        server.join().expect("server");
        assert_eq!(status.code(), Some(1), "{}: {status:?}", bin.display());
    }
}
