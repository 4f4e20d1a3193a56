//! Watch streams, and the in-memory event history the embedded backend serves them from.

use std::collections::VecDeque;

use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver, UnboundedSender};

use crate::{Revision, StoreError};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Created or replaced.
    Put,
    /// Deleted (explicitly, or because its lease expired or was revoked).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The revision the change was committed at (several events can share one).
    pub revision: Revision,
    /// The key.
    pub key: String,
    /// Put or delete.
    pub kind: EventKind,
    /// The new value for a put; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// The receiving end of [`crate::Store::watch`]. Dropping it cancels the watch.
///
/// The channel is unbounded so a slow reader never blocks writers; a watcher that is kept but
/// never read therefore accumulates events, so drop watches that are no longer read.
#[derive(Debug)]
pub struct Watcher {
    rx: UnboundedReceiver<WatchEvent>,
}

impl Watcher {
    /// Wraps a channel a backend feeds (for backends outside this crate).
    pub fn new(rx: UnboundedReceiver<WatchEvent>) -> Watcher {
        Watcher { rx }
    }

    /// The next event; `None` once the store is gone.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }

    /// The next event if one is already there.
    pub fn try_recv(&mut self) -> std::result::Result<WatchEvent, TryRecvError> {
        self.rx.try_recv()
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<WatchEvent> {
        self.rx.blocking_recv()
    }

    /// The underlying channel, e.g. to wrap it in a stream.
    pub fn into_receiver(self) -> UnboundedReceiver<WatchEvent> {
        self.rx
    }
}

struct Subscriber {
    prefix: String,
    /// Only events after this revision are sent (a `from` ahead of the store's revision).
    after: Revision,
    tx: UnboundedSender<WatchEvent>,
}

/// Recent events plus the live watchers. Callers serialize access together with commits, so
/// a new watcher's replay and its live events neither overlap nor leave a gap.
pub(crate) struct Hub {
    history: VecDeque<WatchEvent>,
    /// At most this many events are kept (whole revisions are dropped, oldest first).
    capacity: usize,
    /// Events of revisions up to and including this one are no longer in `history`.
    compacted: Revision,
    subscribers: Vec<Subscriber>,
}

impl Hub {
    /// A hub for a store at revision `current`, with no history yet.
    pub(crate) fn new(capacity: usize, current: Revision) -> Hub {
        Hub {
            history: VecDeque::new(),
            capacity,
            compacted: current,
            subscribers: Vec::new(),
        }
    }

    /// Records and delivers the events of one committed transaction.
    pub(crate) fn publish(&mut self, events: &[WatchEvent]) {
        for event in events {
            // A failed send means the receiver was dropped: forget that watcher now rather
            // than keep its sender (and a reference to nothing) forever.
            self.subscribers.retain(|s| {
                if event.revision <= s.after || !event.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                s.tx.send(event.clone()).is_ok()
            });
            self.history.push_back(event.clone());
        }
        while self.history.len() > self.capacity {
            // Drop a whole revision at a time, so a replay never starts mid-transaction.
            let Some(oldest) = self.history.front().map(|e| e.revision) else {
                break;
            };
            while self.history.front().is_some_and(|e| e.revision == oldest) {
                self.history.pop_front();
            }
            self.compacted = self.compacted.max(oldest);
        }
    }

    /// Forgets history up to and including `revision`.
    pub(crate) fn compact(&mut self, revision: Revision) {
        while self.history.front().is_some_and(|e| e.revision <= revision) {
            self.history.pop_front();
        }
        self.compacted = self.compacted.max(revision);
    }

    /// A watcher on `prefix` for events after `from` (after `current` when `None`).
    pub(crate) fn subscribe(
        &mut self,
        prefix: &str,
        from: Option<Revision>,
        current: Revision,
    ) -> Result<Watcher, StoreError> {
        let after = from.unwrap_or(current);
        if after < self.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.compacted,
            });
        }
        self.prune();
        let (tx, rx) = mpsc::unbounded_channel();
        for event in self
            .history
            .iter()
            .filter(|e| e.revision > after && e.key.starts_with(prefix))
        {
            // The receiver is in our hands, so this cannot fail.
            let _ = tx.send(event.clone());
        }
        self.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            after,
            tx,
        });
        Ok(Watcher::new(rx))
    }

    /// Watchers held, without pruning (tests check what publishing cleaned up).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.subscribers.len()
    }

    /// Drops watchers whose receiver is gone; returns how many remain.
    pub(crate) fn prune(&mut self) -> usize {
        self.subscribers.retain(|s| !s.tx.is_closed());
        self.subscribers.len()
    }
}
