//! `berth`: answers `berth network connect` and `berth network disconnect` itself, without a C
//! library, and hands every other command line to `berth-cli` (`execve`, the arguments and the
//! environment unchanged). What it answers and how is decided by the library
//! (`berth_front`, see there for why); this file only does the system calls.
//!
//! Build: `cargo build --profile front -p berth-front --features bin` (see Cargo.toml).
#![no_std]
#![no_main]

mod sys;

use berth_front::{answer, decimal_digits, plan, write_message, Answer, Buf, MAX_ARGS};
use sys::Process;

/// How long the CPUs are kept polling for the answer, as berth-cli's `AWAKE_CAP`.
const AWAKE_CAP_US: u64 = 20_000;

/// The largest answer read (berthd's answers to these calls are a head and a short message).
const ANSWER_MAX: usize = 64 * 1024;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    sys::write_all(2, b"berth: internal error in the front; try berth-cli\n");
    sys::exit(101)
}

/// The whole program: the call if the library takes it, else berth-cli.
fn run(p: &Process) -> ! {
    let argc = p.argc();
    if argc < 1 || argc - 1 > MAX_ARGS {
        hand_over(p);
    }
    let mut args: [&[u8]; MAX_ARGS] = [&[]; MAX_ARGS];
    for (i, a) in args.iter_mut().enumerate().take(argc - 1) {
        *a = p.arg(i + 1);
    }
    let Some(call) = plan(&args[..argc - 1], p.env(b"BERTH_HOST")) else {
        hand_over(p);
    };
    let mut head = [0u8; 16 * 1024];
    let mut body = [0u8; 16 * 1024];
    let mut out = Buf::new(&mut head);
    let Some(request) = call.request(&mut out, &mut Buf::new(&mut body)) else {
        hand_over(p);
    };
    // A descriptor opened while 0–2 are closed would take one of their numbers; berth-cli
    // opens /dev/null on them first, so such a start is its.
    if sys::closed_standard_fds() {
        hand_over(p);
    }
    // Keep idle CPUs polling while berthd answers (berth-cli's `Awake`, same device, same rule).
    let awake = match p.env(b"BERTH_NO_IDLE_POLL") {
        Some(v) if !v.is_empty() => None,
        _ => sys::open_write(b"/dev/cpu_dma_latency\0").ok(),
    };
    if let Some(fd) = awake {
        // The device takes the target as a native-endian s32.
        sys::write_all(fd, &0i32.to_ne_bytes());
    }
    let Ok(sock) = sys::connect_unix(call.socket) else {
        // Nothing was sent: berth-cli tries again and explains what failed, in its words.
        if let Some(fd) = awake {
            sys::close(fd);
        }
        hand_over(p);
    };
    let sent = sys::send_all(sock, request);
    let mut buf = [0u8; ANSWER_MAX];
    let mut len = 0;
    let mut closed = false;
    let mut read_error = None;
    if let Some(fd) = awake {
        sys::set_recv_timeout(sock, AWAKE_CAP_US);
        match sys::recv(sock, &mut buf) {
            Ok(0) => closed = true,
            Ok(n) => len = n,
            // The cap passed with no answer yet: read on below, without it.
            Err(sys::EAGAIN) => {}
            Err(e) => {
                read_error = Some(e);
                closed = true;
            }
        }
        sys::set_recv_timeout(sock, 0);
        sys::close(fd);
    }
    let verdict = loop {
        let a = answer(&buf[..len], closed);
        if a != Answer::More {
            break a;
        }
        if len == buf.len() {
            break Answer::Broken("HTTP answer too large for berth's quick path");
        }
        match sys::recv(sock, &mut buf[len..]) {
            Ok(0) => closed = true,
            Ok(n) => len += n,
            Err(e) => {
                read_error = Some(e);
                closed = true;
            }
        }
    };
    let mut text = [0u8; 4096];
    let mut w = Writer {
        buf: &mut text,
        len: 0,
    };
    let code = match verdict {
        Answer::Done => 0,
        Answer::Refused(m) => {
            w.put(b"Error response from daemon: ");
            write_message(&m, &mut |b| w.put(b));
            w.put(b"\n");
            1
        }
        Answer::Broken(why) => {
            w.put(b"berth: talking to berthd at ");
            w.put(call.socket);
            w.put(b": ");
            match (sent, read_error, len) {
                // No answer at all: the failed write is the error (berth-cli's rule).
                (Err(e), _, 0) => os_error(&mut w, e),
                (_, Some(e), _) => {
                    w.put(b"reading the answer: ");
                    os_error(&mut w, e);
                }
                _ => w.put(why.as_bytes()),
            }
            w.put(b"\n");
            1
        }
        // The loop above ends only on a verdict.
        Answer::More => 1,
    };
    w.flush();
    sys::exit(code)
}

/// Runs berth-cli with this process's arguments and environment: `$BERTH_CLI` if set, else
/// `berth-cli` in this program's own directory.
fn hand_over(p: &Process) -> ! {
    let mut path = [0u8; 4096];
    let n = match p.env(b"BERTH_CLI") {
        Some(v) if !v.is_empty() && v.len() < path.len() => {
            path[..v.len()].copy_from_slice(v);
            v.len()
        }
        _ => {
            let exe = sys::readlink(b"/proc/self/exe\0", &mut path[..4000]).unwrap_or(0);
            let dir = path[..exe].iter().rposition(|b| *b == b'/').unwrap_or(0);
            let name = b"/berth-cli";
            path[dir..dir + name.len()].copy_from_slice(name);
            dir + name.len()
        }
    };
    path[n] = 0;
    let e = p.exec(&path[..=n]);
    let mut text = [0u8; 4200];
    let mut w = Writer {
        buf: &mut text,
        len: 0,
    };
    w.put(b"berth: cannot run ");
    w.put(&path[..n]);
    w.put(b": ");
    os_error(&mut w, e);
    w.put(b" (berth-cli belongs beside berth, or set BERTH_CLI to it)\n");
    w.flush();
    sys::exit(127)
}

/// A message assembled for one write to stderr (flushed early when full).
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            sys::ignore_sigpipe();
        }
        sys::write_all(2, &self.buf[..self.len]);
        self.len = 0;
    }
}

/// An OS error as Rust's `io::Error` shows it: `Broken pipe (os error 32)`.
fn os_error(w: &mut Writer<'_>, e: i32) {
    let text: &[u8] = match e {
        2 => b"No such file or directory",
        11 => b"Resource temporarily unavailable",
        13 => b"Permission denied",
        32 => b"Broken pipe",
        104 => b"Connection reset by peer",
        110 => b"Connection timed out",
        111 => b"Connection refused",
        _ => b"Unknown error",
    };
    w.put(text);
    w.put(b" (os error ");
    w.put(decimal_digits(u64::from(e.unsigned_abs()), &mut [0; 20]));
    w.put(b")");
}
