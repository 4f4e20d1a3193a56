//! Interactive processes: the terminal or stdin berthd holds for a container or an exec
//! session, and the hijacked connections of attach and exec start that copy both ways.
//!
//! A terminal's master comes from inside the container ([`berth_kernel::console`]); berthd
//! copies its output to the container's log (Docker logs the raw terminal stream too) or, for
//! an exec, to its client, from a thread that never waits for a client: a client that is slow
//! holds back only itself, one that is gone loses the output, the process never blocks on it.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Mutex};

/// The input side of an interactive process: where attached clients' input goes.
pub struct Console {
    /// The terminal's master (for the window size), if it has a terminal.
    master: Option<Arc<OwnedFd>>,
    /// The master or the write end of the stdin pipe; `None` once closed.
    input: Mutex<Option<Box<dyn AsyncWrite + Send + Unpin>>>,
    /// The process's stdin closes when the first client closes its input.
    stdin_once: bool,
}

impl Console {
    /// A process on a terminal whose master is `master`.
    pub fn tty(master: OwnedFd, stdin_once: bool) -> std::io::Result<Console> {
        let writer = std::fs::File::from(master.try_clone()?);
        Ok(Console {
            master: Some(Arc::new(master)),
            input: Mutex::new(Some(Box::new(tokio::fs::File::from_std(writer)))),
            stdin_once,
        })
    }

    /// A process whose stdin is a pipe berthd writes.
    pub fn pipe(stdin: impl AsyncWrite + Send + Unpin + 'static, stdin_once: bool) -> Console {
        Console {
            master: None,
            input: Mutex::new(Some(Box::new(stdin))),
            stdin_once,
        }
    }

    /// Sets the terminal's size (the process gets `SIGWINCH`); nothing without a terminal, as
    /// dockerd.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        match &self.master {
            Some(m) => berth_kernel::console::resize(m.as_ref(), rows, cols),
            None => Ok(()),
        }
    }

    /// Passes a client's input on; dropped once the input is closed.
    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        let mut input = self.input.lock().await;
        if let Some(w) = input.as_mut() {
            w.write_all(data).await?;
            w.flush().await?;
        }
        Ok(())
    }

    /// A client closed its input: with `stdin_once` a stdin pipe is closed (the process reads
    /// end-of-file). A terminal is left as it is, as dockerd does: on a terminal the end of
    /// input is a character the user types (Ctrl-D), and a client that leaves is a detach.
    pub async fn client_input_ended(&self) {
        if !self.stdin_once || self.master.is_some() {
            return;
        }
        if let Some(mut w) = self.input.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }
}

/// Copies a terminal's output (from its master) to `sink` on a thread of its own until the
/// terminal is closed (every process holding it is gone: `EIO`). Returns when it is done.
pub fn pump_master(master: &OwnedFd, mut sink: impl FnMut(&[u8]) + Send + 'static) -> PumpDone {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader = master.try_clone().map(std::fs::File::from);
    std::thread::spawn(move || {
        if let Ok(mut reader) = reader {
            let mut buf = vec![0u8; 16384];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: the last holder of the slave closed it.
                    Err(_) => break,
                }
            }
        }
        let _ = done_tx.send(());
    });
    PumpDone(done_rx)
}

/// Resolves when a [`pump_master`] thread has copied everything.
pub struct PumpDone(tokio::sync::oneshot::Receiver<()>);

impl PumpDone {
    /// Waits for the copy to end, at most `limit` (a process that passed its terminal to a
    /// descendant outside the container's pid namespace could keep it open).
    pub async fn wait(self, limit: std::time::Duration) {
        let _ = tokio::time::timeout(limit, self.0).await;
    }
}

/// Copies a client's input to `console` until the client closes it (then the process's stdin
/// ends if it should) or types the detach sequence (then only this client leaves). Returns
/// true on a detach.
pub async fn copy_input(
    mut from: impl AsyncRead + Unpin,
    console: &Console,
    detach: &[u8],
) -> bool {
    let mut buf = vec![0u8; 8192];
    // Bytes that may be the start of the detach sequence, held back until decided.
    let mut held: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if !held.is_empty() {
                    let _ = console.write(&held).await;
                }
                console.client_input_ended().await;
                return false;
            }
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if detach.is_empty() {
                out.push(b);
                continue;
            }
            held.push(b);
            if held.len() == detach.len() && held == detach {
                let _ = console.write(&out).await;
                return true;
            }
            if !detach.starts_with(&held) {
                out.append(&mut held);
            }
        }
        if !out.is_empty() && console.write(&out).await.is_err() {
            // The process's input is gone (it exited): keep reading so the client can leave.
            continue;
        }
    }
}

/// Copies `output` to the client, then half-closes the connection so the client sees the end.
pub async fn copy_output(mut output: mpsc::Receiver<Bytes>, mut to: impl AsyncWrite + Unpin) {
    while let Some(chunk) = output.recv().await {
        if to.write_all(&chunk).await.is_err() {
            // The client left: the process goes on (Docker's detach).
            return;
        }
        let _ = to.flush().await;
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_is_passed_on_until_the_detach_sequence() {
        let (w, mut r) = tokio::io::duplex(1024);
        let console = Console::pipe(w, true);
        let client: &[u8] = b"ab\x10c\x10\x11never";
        assert!(copy_input(client, &console, &[0x10, 0x11]).await);
        drop(console);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ab\x10c");
    }

    #[tokio::test]
    async fn end_of_input_closes_a_stdin_once_pipe() {
        let (w, mut r) = tokio::io::duplex(1024);
        let console = Console::pipe(w, true);
        let client: &[u8] = b"hello\x10";
        assert!(!copy_input(client, &console, &[0x10, 0x11]).await);
        // The pipe is closed although the console lives on.
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello\x10");
        drop(console);
    }
}
