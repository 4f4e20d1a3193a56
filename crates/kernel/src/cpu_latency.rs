//! Idle CPUs kept polling while berthd answers: a PM QoS CPU latency request of 0 µs, made by
//! writing to `/dev/cpu_dma_latency`, held for the time of a request and dropped after.
//!
//! Why: an idle CPU sleeps (a C-state, or on a VM `hlt`, which leaves the guest), and waking it
//! costs its exit latency. On this project's test machine, a VM whose guest idles with
//! `cpuidle_haltpoll` and `haltpoll.guest_halt_poll_ns=0`, that is ≈ 70–80 µs per wake-up
//! (`bench/wake`). A `network connect` hands work between the client, berthd's worker, the
//! endpoint's thread and the disk's completion several times, and each hand-off to a sleeping
//! CPU paid it. With a latency request of 0, cpuidle only picks states with an exit latency
//! of 0: its polling state (`POLL`), where a CPU that is woken sees it at once. Measured
//! through the CLI, which asks the same while it waits (`berth_api`'s `awake`), against stop
//! 49's build (docs/PERFORMANCE.md, stop 50): connect 0.29–0.35 ms and disconnect 0.53–0.54 ms
//! quicker, both slots.
//!
//! What else it does, and its bounds:
//! - While it is held, every idle CPU of the machine polls instead of sleeping: power, and on
//!   a VM the host's CPU time. It is held only while requests are being answered, at most
//!   [`HOLD_CAP`] per busy stretch (a request that takes longer, or a client that does not
//!   read its answer, lets the CPUs sleep again); berthd idle holds nothing, so it still uses
//!   no CPU when idle.
//! - The kernel drops the request when the file is closed, so berthd's exit, even a kill -9,
//!   leaves nothing behind.
//! - It is not a network knob and opens nothing: no packet can go anywhere it could not.
//! - Each change of the constraint makes the kernel wake every idle CPU once
//!   (`cpu_latency_qos_apply` → `wake_up_all_idle_cpus`), so that each picks its idle state
//!   again; a polling CPU only notices a flag.
//!
//! The decisions (when to ask, when to let go) are [`Holds`], pure; [`CpuLatency`] applies
//! them.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a busy stretch keeps idle CPUs polling: a connect answers in 1–2 ms, a
/// container's start in ≈ 8 ms; a `stop` that waits for its container, a `wait`, a stream or
/// a client that reads slowly are let go after this.
pub const HOLD_CAP: Duration = Duration::from_millis(20);

/// The device whose open file is a CPU latency request (`Documentation/power/pm_qos_interface.rst`).
const DEVICE: &str = "/dev/cpu_dma_latency";

/// The value that asks for nothing: the kernel's `PM_QOS_CPU_LATENCY_DEFAULT_VALUE`
/// (2,000 s), which an open file starts with.
const NO_CONSTRAINT: i32 = 2_000_000_000;

/// The machine-wide CPU latency target in µs, as the kernel has it now (a read of the device
/// gives it: `cpu_latency_qos_read`, an s32); `None` when the device cannot be read (no
/// cpuidle, not root). For tests and diagnostics: what every holder together asks.
pub fn current_target() -> Option<i32> {
    let mut f = File::open(DEVICE).ok()?;
    let mut b = [0u8; 4];
    std::io::Read::read_exact(&mut f, &mut b).ok()?;
    Some(i32::from_ne_bytes(b))
}

/// What the kernel must be told after a change of [`Holds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask for a wake-up latency of 0 (write 0).
    Ask,
    /// Let go (write [`NO_CONSTRAINT`]).
    LetGo,
    /// Nothing.
    Nothing,
}

/// The holders of the request, and whether it is in force. A busy stretch starts when the
/// first holder comes and ends when the last leaves; it has a number, so that a cap meant for
/// an earlier stretch does nothing to a later one.
#[derive(Debug, Default)]
pub struct Holds {
    holders: usize,
    asked: bool,
    stretch: u64,
}

impl Holds {
    /// A holder comes: what to tell the kernel, and the number of the busy stretch this starts
    /// (`None` when one was going on), whose cap the caller arms.
    pub fn take(&mut self) -> (Action, Option<u64>) {
        self.holders += 1;
        if self.holders > 1 {
            return (Action::Nothing, None);
        }
        self.stretch += 1;
        self.asked = true;
        (Action::Ask, Some(self.stretch))
    }

    /// A holder leaves.
    pub fn give(&mut self) -> Action {
        self.holders = self.holders.saturating_sub(1);
        if self.holders == 0 && self.asked {
            self.asked = false;
            return Action::LetGo;
        }
        Action::Nothing
    }

    /// The cap of busy stretch `stretch` ran out: the request goes if that stretch is still on
    /// (its holders stay counted; the next stretch asks again).
    pub fn expire(&mut self, stretch: u64) -> Action {
        if self.stretch == stretch && self.asked {
            self.asked = false;
            return Action::LetGo;
        }
        Action::Nothing
    }

    /// Whether the request is in force.
    pub fn asked(&self) -> bool {
        self.asked
    }
}

/// berthd's CPU latency request: [`CpuLatency::hold`] for the time of a request.
#[derive(Debug)]
pub struct CpuLatency {
    /// The open device, or `None` when it cannot be opened (no cpuidle, not root) or holding
    /// is off: then nothing is ever asked. Written only under `state` (through `&File`), so
    /// the writes follow the decisions in order.
    device: Option<File>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    holds: Holds,
    /// The cap's timer of the current busy stretch.
    cap: Option<tokio::task::AbortHandle>,
}

impl CpuLatency {
    /// Opens the device; a failure leaves holding off (said at debug level: a machine without
    /// cpuidle, or a berthd that is not root, simply keeps its CPUs' default).
    pub fn open() -> Arc<CpuLatency> {
        let device = match std::fs::OpenOptions::new().write(true).open(DEVICE) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!("{DEVICE}: {e}: idle CPUs sleep while requests are answered");
                None
            }
        };
        Arc::new(CpuLatency {
            device,
            state: Mutex::default(),
        })
    }

    /// One that never asks (berthd's `--no-idle-poll`).
    pub fn off() -> Arc<CpuLatency> {
        Arc::new(CpuLatency {
            device: None,
            state: Mutex::default(),
        })
    }

    /// Whether holding does anything.
    pub fn active(&self) -> bool {
        self.device.is_some()
    }

    /// Holds the request until the returned [`Hold`] is dropped (or the busy stretch's
    /// [`HOLD_CAP`] runs out). `None` when holding is off. Call it on the tokio runtime: the
    /// cap is a timer task there.
    pub fn hold(self: &Arc<Self>) -> Option<Hold> {
        self.device.as_ref()?;
        let mut st = self.state.lock().ok()?;
        let (action, stretch) = st.holds.take();
        self.apply(action);
        if let (Some(stretch), Ok(rt)) = (stretch, tokio::runtime::Handle::try_current()) {
            let me = Arc::clone(self);
            let timer = rt.spawn(async move {
                tokio::time::sleep(HOLD_CAP).await;
                if let Ok(mut st) = me.state.lock() {
                    let action = st.holds.expire(stretch);
                    me.apply(action);
                }
            });
            st.cap = Some(timer.abort_handle());
        }
        Some(Hold {
            owner: Arc::clone(self),
        })
    }

    /// A holder left (see [`Hold`]'s drop).
    fn give(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let action = st.holds.give();
        self.apply(action);
        if st.holds.holders == 0 {
            if let Some(cap) = st.cap.take() {
                cap.abort();
            }
        }
    }

    /// Tells the kernel (called under `state`, so the writes follow the decisions in order).
    fn apply(&self, action: Action) {
        let value = match action {
            Action::Ask => 0,
            Action::LetGo => NO_CONSTRAINT,
            Action::Nothing => return,
        };
        let Some(mut device) = self.device.as_ref() else {
            return;
        };
        // The device takes the value as a native-endian s32 (or as hex text).
        if let Err(e) = device.write_all(&value.to_ne_bytes()) {
            tracing::debug!("{DEVICE}: writing {value}: {e}");
        }
    }
}

/// One holder of the request: dropping it lets go, after the current task's poll when dropped
/// on the tokio runtime. Why after: a response's body is dropped by hyper just before it
/// flushes the answer to the socket; letting go there would put the client's CPU back to
/// sleep a few µs before the answer reaches it. A task spawned from the connection's task runs
/// once that task yields, after the flush.
#[derive(Debug)]
pub struct Hold {
    owner: Arc<CpuLatency>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let owner = Arc::clone(&self.owner);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { owner.give() });
            }
            Err(_) => owner.give(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_holder_asks_and_the_last_lets_go() {
        let mut h = Holds::default();
        assert_eq!(h.take(), (Action::Ask, Some(1)));
        assert_eq!(h.take(), (Action::Nothing, None));
        assert_eq!(h.give(), Action::Nothing);
        assert!(h.asked());
        assert_eq!(h.give(), Action::LetGo);
        assert!(!h.asked());
        // A give too many (never expected) changes nothing.
        assert_eq!(h.give(), Action::Nothing);
        assert_eq!(h.take(), (Action::Ask, Some(2)));
    }

    #[test]
    fn the_cap_lets_go_of_its_own_stretch_only() {
        let mut h = Holds::default();
        assert_eq!(h.take(), (Action::Ask, Some(1)));
        assert_eq!(h.expire(1), Action::LetGo);
        // The stretch's holders are still counted: a new holder does not ask again, and the
        // last one leaving has nothing to let go.
        assert_eq!(h.take(), (Action::Nothing, None));
        assert_eq!(h.give(), Action::Nothing);
        assert_eq!(h.give(), Action::Nothing);
        // A cap that fires late, for stretch 1, leaves stretch 2 alone.
        assert_eq!(h.take(), (Action::Ask, Some(2)));
        assert_eq!(h.expire(1), Action::Nothing);
        assert!(h.asked());
        assert_eq!(h.give(), Action::LetGo);
        assert_eq!(h.expire(2), Action::Nothing);
    }

    /// Against the kernel (root, cpuidle): a hold is in force at once and gone after the
    /// drop's task ran, and the cap lets go of a hold that is never dropped. The machine-wide
    /// target is read back from the device itself (`cpu_latency_qos_read`: the current
    /// target, an s32).
    #[tokio::test]
    async fn holds_and_caps_the_kernels_request() {
        let lat = CpuLatency::open();
        if !lat.active() {
            eprintln!("skipped: {DEVICE} cannot be opened here (needs root and cpuidle)");
            return;
        }
        let target = || current_target().expect("the device reads back");
        // Another process (a test of ours, a latency tool) may hold a request of its own:
        // only a target of 0 while held, and the before-value after, are checked.
        let before = target();
        let h = lat.hold().expect("a hold");
        assert_eq!(target(), 0);
        drop(h);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(target(), before);
        let forgotten = lat.hold().expect("a hold");
        assert_eq!(target(), 0);
        tokio::time::sleep(HOLD_CAP + Duration::from_millis(30)).await;
        assert_eq!(target(), before, "the cap let go");
        drop(forgotten);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(target(), before);
    }
}
