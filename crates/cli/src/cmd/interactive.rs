//! The interactive side of `berth run -i/-t` and `berth exec -i/-t`, as the docker CLI does
//! it: the connection berthd hands over carries the process's output one way (raw with a
//! terminal, else Docker's multiplexed frames) and our stdin the other; the local terminal is
//! in raw mode while a remote terminal is attached (so Ctrl-C, Ctrl-D and Ctrl-Z reach the
//! process through its terminal), its size follows ours (`SIGWINCH`), and it is restored on
//! every way out: the end, an error, a signal, the detach keys.

use std::io::Read;

use anyhow::Result;
use berth_api::client::{Client, Hijacked, Method, NO_BODY};
use berth_api::types::stream::{Decoder, STDERR};
use rustix::termios::{tcgetattr, tcsetattr, OptionalActions, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// What the session carries.
pub struct Options {
    /// The process runs on a terminal (raw stream; our terminal goes raw).
    pub tty: bool,
    /// Our stdin goes to the process.
    pub stdin: bool,
    /// The keys that leave the session with the process running (empty: none).
    pub detach_keys: Vec<u8>,
    /// `POST` target for our window size (`/containers/ID/resize`, `/exec/ID/resize`).
    pub resize: Option<String>,
    /// `POST` target on Ctrl-C without a terminal (`/containers/ID/stop?t=10`; a second Ctrl-C
    /// leaves).
    pub interrupt: Option<String>,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The process's output ended (it exited).
    Ended,
    /// The detach keys were typed: the process runs on.
    Detached,
    /// We got this signal (SIGTERM, SIGHUP, or a second SIGINT): exit 128 + it.
    Signalled(i32),
}

/// The local terminal in raw mode until dropped.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Puts stdin's terminal in raw mode; `None` if stdin is no terminal.
    pub fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// True when stdin is a terminal.
pub fn stdin_is_terminal() -> bool {
    rustix::termios::isatty(std::io::stdin())
}

/// Our terminal's size `(rows, columns)`, from stdout (else stdin).
pub fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// The detach keys of `--detach-keys` (Docker's default when none).
pub fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>> {
    berth_api::detach_keys(spec).map_err(anyhow::Error::msg)
}

/// Sends our window size to `path` now and on every `SIGWINCH`, until aborted.
fn follow_window_size(client: &Client, path: String) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut winch = signal(SignalKind::window_change()).ok();
        loop {
            if let Some((h, w)) = terminal_size() {
                // A failure (the process just ended) changes nothing for the session.
                let _ = client
                    .request_empty(Method::POST, &format!("{path}?h={h}&w={w}"), NO_BODY)
                    .await;
            }
            match winch.as_mut() {
                Some(s) => {
                    if s.recv().await.is_none() {
                        return;
                    }
                }
                None => return,
            }
        }
    })
}

/// Our stdin, read on a thread of its own (a read of a terminal cannot be cancelled; the
/// thread ends with the process), in chunks as they come; `None` at its end.
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Runs a session on `conn` until the process's output ends, the detach keys or a signal.
/// The caller has started the process (a resize needs it running).
pub async fn session(client: &Client, conn: Hijacked, opts: &Options) -> Result<Outcome> {
    let raw = if opts.tty { RawTerminal::enter() } else { None };
    let resizer = match (&opts.resize, opts.tty) {
        (Some(path), true) => Some(follow_window_size(client, path.clone())),
        _ => None,
    };
    let outcome = run_session(client, conn, opts, raw.is_some()).await;
    if let Some(r) = resizer {
        r.abort();
    }
    drop(raw);
    outcome
}

async fn run_session(
    client: &Client,
    conn: Hijacked,
    opts: &Options,
    raw: bool,
) -> Result<Outcome> {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let detach = if raw {
        opts.detach_keys.clone()
    } else {
        Vec::new()
    };
    let input = async {
        if !opts.stdin {
            return std::future::pending::<Outcome>().await;
        }
        let mut chunks = stdin_chunks();
        let mut held: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            let mut out = Vec::with_capacity(chunk.len());
            for b in chunk {
                if detach.is_empty() {
                    out.push(b);
                    continue;
                }
                held.push(b);
                if held == detach {
                    let _ = wr.write_all(&out).await;
                    return Outcome::Detached;
                }
                if !detach.starts_with(&held) {
                    out.append(&mut held);
                }
            }
            if wr.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = wr.write_all(&held).await;
        // Our input ended: berthd closes the process's stdin (a half-close keeps the output).
        let _ = wr.shutdown().await;
        std::future::pending::<Outcome>().await
    };
    let output = async {
        let mut buf = vec![0u8; 16384];
        let mut decoder = Decoder::default();
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => return Ok(Outcome::Ended),
                Ok(n) => n,
                Err(e) => anyhow::bail!("reading the process's output: {e}"),
            };
            if opts.tty {
                write_out(false, &buf[..n])?;
            } else {
                for (kind, payload) in decoder.push(&buf[..n]) {
                    write_out(kind == STDERR, &payload)?;
                }
            }
        }
    };
    let signals = watch_signals(client, opts, raw);
    tokio::select! {
        o = input => Ok(o),
        o = output => o,
        o = signals => Ok(o),
    }
}

fn write_out(stderr: bool, bytes: &[u8]) -> Result<()> {
    crate::format::try_write_raw(stderr, bytes)
        .map_err(|e| anyhow::anyhow!("writing the process's output: {e}"))
}

/// SIGTERM and SIGHUP end the session (the terminal is restored by the caller); without a
/// terminal, SIGINT asks berthd to stop the container (a second one leaves), as `berth run`.
async fn watch_signals(client: &Client, opts: &Options, raw: bool) -> Outcome {
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    // In raw mode Ctrl-C is a byte for the process; a SIGINT from elsewhere ends the session.
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut interrupted = false;
    loop {
        let next = async {
            tokio::select! {
                Some(()) = async { term.as_mut()?.recv().await } => 15,
                Some(()) = async { hup.as_mut()?.recv().await } => 1,
                Some(()) = async { int.as_mut()?.recv().await } => 2,
                else => std::future::pending().await,
            }
        };
        let sig = next.await;
        if sig != 2 || raw || interrupted {
            return Outcome::Signalled(sig);
        }
        match &opts.interrupt {
            Some(path) => {
                interrupted = true;
                let client = client.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.request_empty(Method::POST, &path, NO_BODY).await {
                        crate::report(&e.into());
                    }
                });
            }
            None => return Outcome::Signalled(sig),
        }
    }
}
