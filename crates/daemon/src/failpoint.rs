//! Failpoints for the crash-consistency tests: with `BERTH_FAILPOINT=<op>:<k>` in its
//! environment, berthd aborts (`SIGABRT`: no destructors, no cleanup, as good as a `kill -9`)
//! right after the k-th step boundary of operation `<op>`. A boundary is every committed store
//! write and every applied kernel step of that operation. Without the variable every call here
//! is a cheap no-op.
//!
//! Operations: `network_create`, `network_rm`, `connect`, `disconnect`, `create`, `start`,
//! `stop`, `rm`. Mutations are serialized by the daemon's lock, so one counter suffices.

use std::sync::{Mutex, OnceLock};

fn config() -> &'static Option<(String, usize)> {
    static CONFIG: OnceLock<Option<(String, usize)>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let v = std::env::var("BERTH_FAILPOINT").ok()?;
        let (op, k) = v.split_once(':')?;
        Some((op.to_string(), k.parse().ok()?))
    })
}

/// (operation in progress, boundaries passed).
static CURRENT: Mutex<Option<(String, usize)>> = Mutex::new(None);

/// Marks the start of operation `op` (the daemon's lock is held).
pub fn begin(op: &str) {
    if config().is_none() {
        return;
    }
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some((op.to_string(), 0));
    }
}

/// Marks the end of the operation in progress.
pub fn end() {
    if config().is_none() {
        return;
    }
    if let Ok(mut c) = CURRENT.lock() {
        *c = None;
    }
}

/// A step boundary of the operation in progress (`what` names it in the log).
pub fn boundary(what: &str) {
    let Some((op, k)) = config() else {
        return;
    };
    let Ok(mut c) = CURRENT.lock() else {
        return;
    };
    let Some((cur, n)) = c.as_mut() else {
        return;
    };
    if cur != op {
        return;
    }
    *n += 1;
    if *n == *k {
        eprintln!("failpoint {op}:{k} reached after {what}: aborting");
        std::process::abort();
    }
}

/// A guard that ends the operation when dropped (also on an early `?` return).
pub struct Op;

impl Op {
    /// Begins `op`.
    pub fn begin(op: &str) -> Op {
        begin(op);
        Op
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        end();
    }
}
