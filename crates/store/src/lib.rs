//! berth-store: where berth keeps its desired state.
//!
//! A key/value contract ([`Store`]) shaped after etcd v3, so the embedded backend (redb: one
//! file under the state dir, crash-safe, no server) and the cluster backend (etcd) can be
//! swapped without the daemon changing ([`EtcdStore`] is that cluster backend):
//!
//! - **Revisions.** The store has one global [`Revision`], incremented by every committed
//!   transaction that changes at least one key. Each key records the revision that created it
//!   and the one that last modified it ([`Versioned`]).
//! - **Transactions.** [`Store::txn`] evaluates [`Compare`]s and, only if all hold, applies its
//!   [`Op`]s atomically under one new revision. This is the compare-and-swap that lets several
//!   writers (threads now, hosts later) allocate addresses or update documents without locks.
//! - **Watch.** [`Store::watch`] streams every change under a prefix, in revision order, from a
//!   revision on: list with [`Store::list_versioned`], then watch from the revision it returns
//!   and nothing is missed or seen twice.
//! - **Leases.** A key written with [`Op::PutLease`] lives only as long as its lease is kept
//!   alive; expiry or revocation deletes it (and watchers see the delete). This is how a
//!   host's claims disappear when the host dies.
//!
//! Values are opaque bytes; by convention JSON documents under `kind/id` keys ([`StoreExt`]).
//! [`conformance`] holds the behavioural test suite every backend must pass.

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

mod clock;
pub mod conformance;
#[cfg(feature = "etcd")]
mod etcd_store;
mod redb_store;
mod watch;

pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdOptions, EtcdStore, EtcdTls};
pub use redb_store::{RedbOptions, RedbStore};
pub use tokio::sync::mpsc::error::TryRecvError;
pub use watch::{EventKind, WatchEvent, Watcher};

/// A point in the store's history: the number of committed changing transactions so far
/// (0 for a store that was never written). Like etcd's revision, it only grows.
pub type Revision = u64;

/// A lease: keys attached to it are deleted when it expires or is revoked.
///
/// Ids are never 0 (etcd reserves 0 for "no lease", and the redb backend stores it that way).
/// For the embedded store they are only meaningful within the process that granted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex like etcdctl prints lease ids, so logs of both backends look alike.
        write!(f, "{:x}", self.0)
    }
}

/// A value together with its place in the store's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes, exactly as written.
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (kept across later updates; a key
    /// deleted and written again gets a new one).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key. Never 0 for an existing key, so
    /// [`Compare::ModRevision`] with 0 means "absent", as in etcd.
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened/created.
    #[error("opening the state store {path}: {source}")]
    Open {
        /// Database file.
        path: String,
        /// Cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write failed.
    #[error("state store {op}: {msg}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Cause.
        msg: String,
    },
    /// A stored document does not parse (corruption or an incompatible older berth).
    #[error("state store: document {key} is unreadable: {source}")]
    Decode {
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A document could not be serialized to JSON.
    #[error("state store: document {key} cannot be encoded: {source}")]
    Encode {
        /// Key.
        key: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The database was written by a newer berth whose layout this one does not know.
    #[error(
        "the state store {path} uses layout version {found}, this berth understands up to \
         {supported}: upgrade berth (or move the file away to start empty)"
    )]
    Layout {
        /// Database file.
        path: String,
        /// Layout version in the file.
        found: u64,
        /// Newest layout this build understands.
        supported: u64,
    },
    /// A watch asked for history the store no longer keeps.
    #[error(
        "state store: cannot watch from revision {requested}: history before revision {oldest} \
         is no longer kept; list again and watch from the revision that list returns"
    )]
    Compacted {
        /// The `from` revision asked for.
        requested: Revision,
        /// The oldest `from` revision a watch can start at now.
        oldest: Revision,
    },
    /// The lease was never granted, was revoked, or expired.
    #[error("state store: lease {lease} does not exist (never granted, revoked or expired)")]
    LeaseNotFound {
        /// The lease.
        lease: LeaseId,
    },
    /// A lease was asked for with a TTL it cannot have.
    #[error("state store: a lease needs a TTL of at least one second, not {ttl:?}")]
    LeaseTtl {
        /// The TTL asked for.
        ttl: Duration,
    },
    /// One transaction wrote the same key twice (etcd refuses this too: the outcome would
    /// depend on op order and watchers would see two events for one key in one revision).
    #[error("state store: one transaction writes {key} more than once")]
    DuplicateKey {
        /// Key.
        key: String,
    },
    /// A cluster store (etcd) did not answer: changes that need it must wait until it is back.
    #[error("{store} is unreachable ({msg}): check that etcd runs and this host reaches it")]
    Unavailable {
        /// Which store (`etcd at http://10.0.0.10:2379`).
        store: String,
        /// What was being done and what failed.
        msg: String,
    },
    /// A read-modify-write kept losing races and gave up.
    #[error(
        "state store: gave up after {attempts} attempts to update {what}: it kept changing \
         concurrently"
    )]
    Contended {
        /// What was being updated (a key, or "transaction").
        what: String,
        /// Attempts made.
        attempts: usize,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace `key`; the key is no longer attached to any lease.
    Put(String, Vec<u8>),
    /// Remove `key` (no error and no new revision when absent).
    Delete(String),
    /// Create or replace `key` and attach it to a lease: it is deleted when the lease expires
    /// or is revoked. The transaction fails with [`StoreError::LeaseNotFound`] if the lease
    /// does not exist.
    PutLease(String, Vec<u8>, LeaseId),
}

impl Op {
    /// A put of `value` serialized as JSON.
    pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> Op {
        // Serializing our own plain structs to JSON cannot fail (no maps with non-string keys).
        Op::Put(key.into(), serde_json::to_vec(value).unwrap_or_default())
    }

    /// A put of `value` serialized as JSON, attached to `lease`.
    pub fn put_json_lease<T: Serialize>(key: impl Into<String>, value: &T, lease: LeaseId) -> Op {
        // As in put_json: our own plain structs always serialize.
        Op::PutLease(
            key.into(),
            serde_json::to_vec(value).unwrap_or_default(),
            lease,
        )
    }

    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::Delete(k) | Op::PutLease(k, _, _) => k,
        }
    }
}

/// A condition a transaction checks before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// `key` does not exist.
    Absent(String),
    /// `key` exists.
    Present(String),
    /// `key`'s mod revision equals the given one; 0 stands for "absent" (etcd's convention).
    ModRevision(String, Revision),
    /// `key` exists and holds exactly these bytes.
    Value(String, Vec<u8>),
}

impl Compare {
    /// The key this compare reads.
    pub fn key(&self) -> &str {
        match self {
            Compare::Absent(k)
            | Compare::Present(k)
            | Compare::ModRevision(k, _)
            | Compare::Value(k, _) => k,
        }
    }

    /// Whether the compare holds for the key's current state (`None`: absent). Shared so every
    /// backend that evaluates compares itself gives them the same meaning.
    pub fn holds(&self, current: Option<&Versioned>) -> bool {
        match self {
            Compare::Absent(_) => current.is_none(),
            Compare::Present(_) => current.is_some(),
            Compare::ModRevision(_, rev) => current.map_or(0, |v| v.mod_revision) == *rev,
            Compare::Value(_, bytes) => current.is_some_and(|v| v.value == *bytes),
        }
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// All compares held and the ops are applied. The revision is the one the ops were written
    /// at, or the unchanged current revision when they changed nothing (no ops, or only
    /// deletes of absent keys: like etcd, such a transaction does not create a revision).
    Committed(Revision),
    /// A compare did not hold; nothing was written.
    Failed {
        /// The store's revision when the compares were evaluated.
        revision: Revision,
        /// Index (in the `compares` given) of the first compare that did not hold.
        failed: usize,
    },
}

impl TxnOutcome {
    /// Whether the ops were applied.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }

    /// The revision the transaction committed at or was evaluated at.
    pub fn revision(&self) -> Revision {
        match self {
            TxnOutcome::Committed(rev) | TxnOutcome::Failed { revision: rev, .. } => *rev,
        }
    }
}

/// The store contract the daemon codes against. Object safe: the daemon holds an
/// `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key)?.map(|v| v.value))
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let (_, items) = self.list_versioned(prefix)?;
        Ok(items.into_iter().map(|(k, v)| (k, v.value)).collect())
    }

    /// Applies all `ops` atomically: all or nothing. A transaction without compares.
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.txn(Vec::new(), ops).map(|_| ())
    }

    /// Like [`Store::txn`], but the commit need not be durable yet when this returns: it is
    /// visible to every reader and watcher at once, and [`Store::sync`] makes it (with every
    /// earlier one) durable. For a caller with other work to do while the disk flushes
    /// (berthd programs the kernel meanwhile) that answers only after `sync`: a crash before
    /// `sync` loses the transaction as if it never ran, and nobody was told it had. Stores
    /// whose commits are durable anyway (etcd's quorum) keep this default.
    fn txn_deferred(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        self.txn(compares, ops)
    }

    /// Makes every transaction committed so far durable (see [`Store::txn_deferred`]).
    /// Blocking: call it off the async workers.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// A short description (`redb:/var/lib/berth/state.redb`).
    fn describe(&self) -> String;

    /// The current revision.
    fn revision(&self) -> Result<Revision>;

    /// The value under `key` with its revisions and lease.
    fn get_versioned(&self, key: &str) -> Result<Option<Versioned>>;

    /// Every key under `prefix` with its revisions, in key order, and the revision this
    /// consistent snapshot was read at (the `from` for a [`Store::watch`] that continues it).
    fn list_versioned(&self, prefix: &str) -> Result<(Revision, Vec<(String, Versioned)>)>;

    /// If every compare holds, applies `ops` atomically under one new revision; otherwise
    /// writes nothing and reports the first compare that failed. Compares and writes are one
    /// atomic step with respect to every other writer. Errors are for I/O, a missing lease
    /// ([`Op::PutLease`]) or a key written twice; a failed compare is an `Ok` outcome.
    fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome>;

    /// Streams every put and delete under `prefix` committed after revision `from` (after the
    /// current revision when `None`; etcd's `start_revision` is `from + 1`), in revision order and, within a revision, in op order.
    /// Deletes caused by lease expiry or revocation are included. Fails with
    /// [`StoreError::Compacted`] if events after `from` are no longer kept. The stream ends
    /// when the store is dropped; dropping the [`Watcher`] cancels the watch.
    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Watcher>;

    /// Forgets watch history up to and including `revision`: watches from an older revision
    /// then fail with [`StoreError::Compacted`]. Values are not affected.
    fn compact(&self, revision: Revision) -> Result<()>;

    /// Grants a lease that expires `ttl` after it was granted or last kept alive. Backends
    /// may round `ttl` up to whole seconds (etcd does); less than a second is refused.
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Restarts the lease's TTL. Fails with [`StoreError::LeaseNotFound`] if it expired or
    /// was revoked: its keys are gone, and the holder must grant a new lease and re-put them.
    fn keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Ends the lease now, deleting all its keys in one revision.
    fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Deletes the keys of every lease whose TTL ran out; returns how many leases expired.
    /// Backends check expiry on every call anyway; this is for a periodic timer so expired
    /// keys also disappear (and watchers hear of it) while nobody calls the store. Backends
    /// whose server expires leases itself (etcd) return 0.
    fn expire_leases(&self) -> Result<usize>;
}

/// How often the retrying helpers of [`StoreExt`] try before reporting
/// [`StoreError::Contended`]. Each failure means another writer committed, so this many in a
/// row means something is writing the key in a tight loop.
pub const MAX_TXN_ATTEMPTS: usize = 100;

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    /// Decodes the JSON document under `key`.
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(key, &bytes).map(Some),
        }
    }

    /// Decodes every JSON document under `prefix`.
    fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        self.list(prefix)?
            .into_iter()
            .map(|(key, bytes)| {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode { key, source })
            })
            .collect()
    }

    /// Decodes the JSON document under `key` together with its mod revision (the
    /// `expected_mod_revision` for a following [`StoreExt::cas_json`]).
    fn get_json_versioned<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, Revision)>> {
        match self.get_versioned(key)? {
            None => Ok(None),
            Some(v) => Ok(Some((decode(key, &v.value)?, v.mod_revision))),
        }
    }

    /// Writes `value` as JSON under `key` only if the key is unchanged since it was read:
    /// absent when `expected_mod_revision` is `None`, else last written at that revision.
    fn cas_json<T: Serialize>(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
        value: &T,
    ) -> Result<TxnOutcome> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            key: key.to_string(),
            source,
        })?;
        let compare = match expected_mod_revision {
            None => Compare::Absent(key.to_string()),
            Some(rev) => Compare::ModRevision(key.to_string(), rev),
        };
        self.txn(vec![compare], vec![Op::Put(key.to_string(), bytes)])
    }

    /// Runs a read-modify-write loop: `plan` reads what it needs and returns the compares
    /// guarding those reads plus the ops to apply; a failed compare means someone else wrote
    /// in between, so `plan` runs again on fresh data. Returns the committed revision, or
    /// [`StoreError::Contended`] after [`MAX_TXN_ATTEMPTS`] lost races.
    fn retry_txn<F>(&self, mut plan: F) -> Result<Revision>
    where
        F: FnMut(&Self) -> Result<(Vec<Compare>, Vec<Op>)>,
    {
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let (compares, ops) = plan(self)?;
            if let TxnOutcome::Committed(rev) = self.txn(compares, ops)? {
                return Ok(rev);
            }
            backoff(attempt);
        }
        Err(StoreError::Contended {
            what: "the keys a transaction read".into(),
            attempts: MAX_TXN_ATTEMPTS,
        })
    }

    /// Updates the JSON document under `key` with `f`, retrying on concurrent writes. `f`
    /// gets the current document (`None`: absent) and returns the new one, or `None` to leave
    /// the key as it is. It may run several times, so it should not have side effects. Returns
    /// the revision and document written, or `None` when `f` declined. `E` lets `f` fail with
    /// the caller's own error type.
    fn update_json<T, E, F>(
        &self,
        key: &str,
        mut f: F,
    ) -> std::result::Result<Option<(Revision, T)>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
        F: FnMut(Option<T>) -> std::result::Result<Option<T>, E>,
    {
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let (current, rev) = match self.get_json_versioned::<T>(key)? {
                Some((doc, rev)) => (Some(doc), Some(rev)),
                None => (None, None),
            };
            let Some(next) = f(current)? else {
                return Ok(None);
            };
            if let TxnOutcome::Committed(at) = self.cas_json(key, rev, &next)? {
                return Ok(Some((at, next)));
            }
            backoff(attempt);
        }
        Err(StoreError::Contended {
            what: key.to_string(),
            attempts: MAX_TXN_ATTEMPTS,
        }
        .into())
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Waits before retry `attempt + 1` of a lost compare-and-swap. Without it, writers racing
/// for one key in lockstep can make the same one lose again and again (seen with 8 threads on
/// 2 cores); growing, jittered waits let the losers spread out.
fn backoff(attempt: usize) {
    use std::hash::{BuildHasher, Hasher};
    if attempt < 2 {
        // Most conflicts clear once the winner's commit is done.
        std::thread::yield_now();
        return;
    }
    // Up to 50 µs · 2^n, capped at 20 ms; RandomState gives per-call random keys, enough
    // jitter without a dependency.
    let cap_us = (50u64 << attempt.min(9)).min(20_000);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let wait_us = cap_us / 2 + random % (cap_us / 2 + 1);
    std::thread::sleep(std::time::Duration::from_micros(wait_us));
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}
