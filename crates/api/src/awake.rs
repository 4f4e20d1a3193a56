//! The client's side of keeping idle CPUs polling while berthd answers (berthd's side is
//! `berth_kernel::cpu_latency`): a PM QoS CPU latency request of 0 µs, by writing 0 to
//! `/dev/cpu_dma_latency`, held from before the request is sent until the answer's head came
//! or [`AWAKE_CAP`] passed, whichever is first.
//!
//! Why the client too: berthd asks only once its worker woke for the request, so until then
//! the client's own CPU may go to sleep while it waits, and waking it for the answer then
//! costs its exit latency (≈ 70–80 µs on this project's VM, `bench/wake`). Asked before the
//! request, the client's CPU polls while it waits, and berthd's CPU, if asleep, is woken by
//! the request's own change of the target (`wake_up_all_idle_cpus`) while the client connects.
//! Measured through the CLI against the same berthd (docs/PERFORMANCE.md, stop 50):
//! `berth version` and `network inspect` ≈ 0.14 ms quicker, `network connect` 0.1–0.33 ms.
//!
//! Only root may open the device (0600): any other user's client asks nothing, and berthd's
//! own request still covers most of a call. `BERTH_NO_IDLE_POLL` (any non-empty value) turns
//! it off. The kernel drops the request when the file is closed: at the latest when the
//! process exits, however it exits.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

/// The longest the client keeps idle CPUs polling for one answer: longer than berthd takes
/// for the calls it answers at once (a connect 1–2 ms, a container's start ≈ 8 ms), short
/// enough that a call that waits (a `stop` with a grace period) lets the CPUs sleep again.
pub(crate) const AWAKE_CAP: Duration = Duration::from_millis(20);

/// The device whose open file is a CPU latency request.
const DEVICE: &str = "/dev/cpu_dma_latency";

/// A CPU latency request of 0, held while this lives (`None` inside when it could not be made).
#[derive(Debug)]
pub(crate) struct Awake(Option<File>);

impl Awake {
    /// Asks, if this process may and the user did not turn it off.
    pub(crate) fn ask() -> Awake {
        Awake::ask_unless(std::env::var_os("BERTH_NO_IDLE_POLL").is_some_and(|v| !v.is_empty()))
    }

    /// [`Awake::ask`], unless `off`.
    fn ask_unless(off: bool) -> Awake {
        if off {
            return Awake(None);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(DEVICE)
            .ok()
            .and_then(|mut f| {
                // The device takes the value as a native-endian s32.
                f.write_all(&0i32.to_ne_bytes()).ok().map(|()| f)
            });
        Awake(file)
    }

    /// Lets go before the drop (the kernel drops the request with the file).
    pub(crate) fn let_go(&mut self) {
        self.0 = None;
    }

    /// Whether the request is in force.
    pub(crate) fn held(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine-wide target, read back from the device (`cpu_latency_qos_read`: an s32).
    fn target() -> Option<i32> {
        let mut f = File::open(DEVICE).ok()?;
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut f, &mut b).ok()?;
        Some(i32::from_ne_bytes(b))
    }

    /// As root on a machine with cpuidle: the target is 0 while an [`Awake`] lives and what it
    /// was after; turned off, nothing is asked.
    #[test]
    fn asks_for_a_latency_of_zero_while_it_lives() {
        let off = Awake::ask_unless(true);
        assert!(!off.held());
        let Some(before) = target() else {
            eprintln!("skipped: {DEVICE} cannot be read here");
            return;
        };
        let mut a = Awake::ask_unless(false);
        if !a.held() {
            eprintln!("skipped: {DEVICE} cannot be written here (not root)");
            return;
        }
        assert_eq!(target(), Some(0));
        a.let_go();
        assert!(!a.held());
        assert_eq!(target(), Some(before));
        let b = Awake::ask_unless(false);
        assert_eq!(target(), Some(0));
        drop(b);
        assert_eq!(target(), Some(before));
    }
}
