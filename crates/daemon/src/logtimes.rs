//! Per-line times of a container's logs, for `logs --timestamps`, and `--tail`.
//!
//! The container writes straight into `stdout.log`/`stderr.log` (so a daemon restart loses
//! nothing), which leaves no room for a time per line. A stamper watches the files with
//! inotify (`IN_MODIFY`: no polling, so an idle container costs nothing) while the container
//! runs and appends `END_OFFSET UNIX_NANOS` to `stdout.times`/`stderr.times` for every newline
//! it sees: the time is when berthd saw the line (one wake-up after the write), not when it
//! was written. Lines logged before berthd kept times (older daemons) have none and are
//! given the time of the next stamped line, else the log's modification time.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;

/// One line of a log: its bytes (with the newline, if it had one) and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line's bytes as written.
    pub bytes: Vec<u8>,
    /// Unix nanoseconds.
    pub nanos: i128,
}

/// The index file that goes with a log file.
pub fn times_path(log: &Path) -> PathBuf {
    log.with_extension("times")
}

/// Stamps the lines of a running container's logs until it is told to finish.
pub struct Stamper {
    stop: oneshot::Sender<oneshot::Sender<()>>,
}

impl Stamper {
    /// Starts stamping what is appended to `dir`'s logs from now on.
    pub fn spawn(dir: &Path) -> Stamper {
        let mut streams: Vec<(PathBuf, u64)> = ["stdout.log", "stderr.log"]
            .iter()
            .map(|n| {
                let p = dir.join(n);
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        let (stop, mut stopped) = oneshot::channel::<oneshot::Sender<()>>();
        let paths: Vec<PathBuf> = streams.iter().map(|(p, _)| p.clone()).collect();
        tokio::spawn(async move {
            let fd = match berth_kernel::filewatch::Writes::watch(&paths) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    // Without inotify, lines get their times from the final pass (at exit).
                    tracing::warn!("watching the logs for their line times: {e}");
                    None
                }
            };
            loop {
                let done = tokio::select! {
                    r = &mut stopped => match r {
                        Ok(done) => Some(done),
                        // The container's supervisor is gone (daemon shutting down): stop.
                        Err(_) => return,
                    },
                    ready = async {
                        match &fd {
                            Some(fd) => fd.changed().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        if let Err(e) = ready {
                            tracing::debug!("watching the logs: {e}");
                        }
                        None
                    }
                };
                for (path, seen) in streams.iter_mut() {
                    if let Err(e) = stamp(path, seen) {
                        tracing::debug!("stamping {}: {e}", path.display());
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(());
                    // The watches go with `fd` (`inotify_rm_watch` on the process's shared
                    // instance: nothing waits for the kernel's grace period).
                    return;
                }
            }
        });
        Stamper { stop }
    }

    /// A last pass (the container has exited and its output is in the files), then stop.
    pub async fn finish(self) {
        let (tx, rx) = oneshot::channel();
        if self.stop.send(tx).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// Records the time of each complete line appended to `path` since offset `seen`.
fn stamp(path: &Path, seen: &mut u64) -> std::io::Result<()> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let len = f.metadata()?.len();
    if len <= *seen {
        return Ok(());
    }
    f.seek(SeekFrom::Start(*seen))?;
    let mut buf = Vec::new();
    f.take(len - *seen).read_to_end(&mut buf)?;
    let nanos = now_nanos();
    let mut index = String::new();
    let mut end = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            end = i + 1;
            index.push_str(&format!("{} {nanos}\n", *seen + end as u64));
        }
    }
    if !index.is_empty() {
        crate::runtime::log_file(&times_path(path))?.write_all(index.as_bytes())?;
    }
    // A partial line waits for its newline.
    *seen += end as u64;
    Ok(())
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// The lines of `content` (a log), each with its time from `index` (the `.times` file).
pub fn lines(content: &[u8], index: &str, fallback: i128) -> Vec<Line> {
    let stamps: Vec<(u64, i128)> = index
        .lines()
        .filter_map(|l| {
            let (o, t) = l.split_once(' ')?;
            Some((o.parse().ok()?, t.parse().ok()?))
        })
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < content.len() {
        let end = content[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(content.len(), |i| start + i + 1);
        // The stamp of this line, or of the first line after it that has one.
        let at = stamps.partition_point(|(o, _)| *o < end as u64);
        let nanos = stamps.get(at).map_or(fallback, |s| s.1);
        out.push(Line {
            bytes: content[start..end].to_vec(),
            nanos,
        });
        start = end;
    }
    out
}

/// Docker's `tail` query value: a count, or everything (`all`, or anything not a number).
pub fn parse_tail(v: Option<&str>) -> Option<usize> {
    v.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|n| usize::try_from(n).ok())
}

/// Docker's fixed-width RFC 3339 with nanoseconds (`2006-01-02T15:04:05.000000000Z`).
pub fn rfc3339_nano(nanos: i128) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_take_their_stamp_or_the_next_one() {
        let log = b"a\nbb\nccc\npartial";
        // "a\n" ends at 2 (no stamp: logged by an older daemon), "bb\n" at 5, "ccc\n" at 9.
        let index = "5 100\n9 200\n";
        let got = lines(log, index, 7);
        let want: Vec<(&[u8], i128)> = vec![
            (b"a\n", 100),
            (b"bb\n", 100),
            (b"ccc\n", 200),
            (b"partial", 7),
        ];
        let got: Vec<(&[u8], i128)> = got.iter().map(|l| (&l.bytes[..], l.nanos)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tail_values_as_docker() {
        assert_eq!(parse_tail(Some("2")), Some(2));
        assert_eq!(parse_tail(Some("0")), Some(0));
        assert_eq!(parse_tail(Some("all")), None);
        assert_eq!(parse_tail(Some("-1")), None);
        assert_eq!(parse_tail(None), None);
    }

    #[test]
    fn timestamps_are_fixed_width() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123000000Z"
        );
    }
}
