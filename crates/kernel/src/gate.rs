//! [`LinkGate`]: holds a new container interface down until the step it depends on has been
//! applied, so the two can run at the same time.
//!
//! Why: a connect's (or a start's) pass applies the firewall elements that guard a new port
//! (`guarded`, the port's MAC and addresses) *before* its endpoint, because a port that went up
//! first would forward a hostile container's spoofed frames until they are in. Applied one
//! after the other, the nft transaction (≈ 0.5 ms) and the endpoint (≈ 2 ms: the veth's
//! `RTM_NEWLINK`, the container side's requests) add up. Nothing reaches or leaves the new
//! interface while its container side is down (a veth without carrier: the bridge does not
//! forward to or from the port), so only that one request — the container side's
//! `RTM_SETLINK IFF_UP` — has to wait for the firewall: everything before it overlaps the
//! transaction, and a failed transaction makes the endpoint roll back instead of going up.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{KernelError, Result};

/// How long a gated interface waits for its gate before giving up (and rolling back): far
/// more than any nft transaction takes; reached only if the pass that owns the gate was
/// dropped without opening it.
pub const GATE_WAIT: Duration = Duration::from_secs(10);

/// A one-shot, shareable outcome of the step a link waits for: opened once with `Ok` (go
/// ahead) or `Err(why)` (do not bring the link up; roll back). Waited for on a blocking thread
/// ([`LinkGate::wait_blocking`]) or a task ([`LinkGate::wait`]).
#[derive(Clone, Debug, Default)]
pub struct LinkGate(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    outcome: Mutex<Option<std::result::Result<(), String>>>,
    ready: Condvar,
    notify: tokio::sync::Notify,
}

impl LinkGate {
    /// A closed gate.
    pub fn new() -> LinkGate {
        LinkGate::default()
    }

    /// Opens the gate with the outcome of the step it stands for. The first outcome counts.
    pub fn open(&self, outcome: std::result::Result<(), String>) {
        if let Ok(mut o) = self.0.outcome.lock() {
            if o.is_none() {
                *o = Some(outcome);
            }
        }
        self.0.ready.notify_all();
        self.0.notify.notify_waiters();
    }

    fn outcome(&self) -> Option<Result<()>> {
        let o = self.0.outcome.lock().ok()?;
        o.as_ref().map(refusal)
    }

    /// Blocks the calling (non-runtime) thread until the gate is open, at most `timeout`.
    pub fn wait_blocking(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut o = self
            .0
            .outcome
            .lock()
            .map_err(|_| KernelError::invalid("waiting for the firewall", "lock poisoned"))?;
        loop {
            if let Some(r) = o.as_ref() {
                return refusal(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KernelError::invalid(
                    "waiting for the firewall elements that guard the new interface",
                    format!("not applied within {} s", timeout.as_secs()),
                ));
            }
            o = self
                .0
                .ready
                .wait_timeout(o, left)
                .map_err(|_| KernelError::invalid("waiting for the firewall", "lock poisoned"))?
                .0;
        }
    }

    /// Waits on a task until the gate is open.
    pub async fn wait(&self) -> Result<()> {
        loop {
            // Registered before the check, so an `open` between the two is not missed.
            let notified = self.0.notify.notified();
            if let Some(r) = self.outcome() {
                return r;
            }
            notified.await;
        }
    }
}

fn refusal(r: &std::result::Result<(), String>) -> Result<()> {
    r.clone().map_err(|why| {
        KernelError::invalid(
            "the firewall elements that guard the new interface were not applied",
            why,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_thread_goes_on_when_the_gate_opens() {
        let gate = LinkGate::new();
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait_blocking(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        gate.open(Ok(()));
        assert!(t.join().expect("thread").is_ok());
        // The first outcome counts.
        gate.open(Err("late".into()));
        assert!(gate.wait_blocking(Duration::ZERO).is_ok());
    }

    #[test]
    fn a_failed_step_keeps_the_link_down_with_its_reason() {
        let gate = LinkGate::new();
        gate.open(Err("nft: EPERM".into()));
        let e = gate
            .wait_blocking(Duration::from_secs(1))
            .expect_err("refused");
        assert!(e.to_string().contains("nft: EPERM"), "{e}");
    }

    #[test]
    fn a_gate_nobody_opens_times_out() {
        let e = LinkGate::new()
            .wait_blocking(Duration::from_millis(10))
            .expect_err("timed out");
        assert!(e.to_string().contains("not applied within"), "{e}");
    }

    #[tokio::test]
    async fn a_task_waits_for_the_gate() {
        let gate = LinkGate::new();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        gate.open(Ok(()));
        assert!(waiter.await.expect("task").is_ok());
    }
}
