//! The embedded backend: one redb file, single host.
//!
//! Layout (version [`LAYOUT_VERSION`]):
//! - `kv`: key → value bytes, exactly as written. This is the table of the original format,
//!   unchanged, so `get` returns the same bytes as before and older files need no rewrite.
//! - `kv_meta`: key → (create_revision, mod_revision, lease id or 0), written in the same
//!   transaction as the value.
//! - `store_meta`: `revision` → the global revision, `layout` → the layout version.
//!
//! Opening reconciles the file (one write transaction):
//! - Keys without metadata (a file from before revisions existed, or keys written by such a
//!   berth after a downgrade) get create = mod = one new revision; for an old file that is
//!   revision 1. Revision 1 rather than 0 because a mod revision of 0 means "absent" in
//!   compares. (A value an older berth *overwrote* keeps its earlier revisions: downgrading
//!   and upgrading again is not CAS-exact.)
//! - Metadata of keys that no longer exist is dropped.
//! - Leases live in memory, so a key still attached to a lease belongs to a holder in a
//!   previous process, which is gone: every such key is deleted, in one new revision.
//!
//! Watch history is kept in memory only (the last [`RedbOptions::watch_history`] events):
//! after a reopen, watches can start at the revision the store opened at, not before.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::watch::Hub;
use crate::{
    Clock, Compare, EventKind, LeaseId, Op, Result, Revision, Store, StoreError, SystemClock,
    TxnOutcome, Versioned, WatchEvent, Watcher,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// (create_revision, mod_revision, lease id; 0 = no lease).
const KV_META: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("kv_meta");
const STORE_META: TableDefinition<&str, u64> = TableDefinition::new("store_meta");
const REVISION_KEY: &str = "revision";
const LAYOUT_KEY: &str = "layout";
/// The layout this build writes. Files with a higher one are refused rather than misread.
const LAYOUT_VERSION: u64 = 1;
/// Revisions given to a key found without metadata, when the file has no revision yet.
const LEGACY_REVISION: Revision = 1;

/// How to open a [`RedbStore`].
#[derive(Clone)]
pub struct RedbOptions {
    /// Time source for lease TTLs.
    pub clock: Arc<dyn Clock>,
    /// How many recent events are kept in memory for watches that start in the past.
    pub watch_history: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            clock: Arc::new(SystemClock),
            watch_history: 10_000,
        }
    }
}

/// The embedded backend: one redb file.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    /// Held across every write transaction (and what it changes in memory), so watchers see
    /// commits in revision order and lease bookkeeping matches the file. redb serializes
    /// writers anyway, so this costs no concurrency; reads do not take it.
    state: Mutex<State>,
    /// The earliest lease deadline, readable without waiting for a write in progress: reads
    /// check expiry on every call and must stay cheap when nothing is due.
    next_deadline: Mutex<Option<Instant>>,
    /// Deferred (not yet durable) commits so far, and how many of them a finished
    /// [`Store::sync`] made durable: `sync` returns at once when nothing is pending.
    deferred: AtomicU64,
    synced: AtomicU64,
    /// One `sync` at a time: a second caller waits for the flush in progress (which may not
    /// cover its commit) instead of returning before it ends.
    sync_lock: Mutex<()>,
}

struct State {
    /// The committed revision (mirrors the file; all writes go through this lock).
    revision: Revision,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: u64,
    hub: Hub,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// A key's metadata row.
#[derive(Clone, Copy)]
struct Meta {
    create: Revision,
    modified: Revision,
    lease: Option<LeaseId>,
}

impl Meta {
    fn from_row((create, modified, lease): (u64, u64, u64)) -> Meta {
        Meta {
            create,
            modified,
            lease: (lease != 0).then_some(LeaseId(lease)),
        }
    }

    fn row(self) -> (u64, u64, u64) {
        (self.create, self.modified, self.lease.map_or(0, |l| l.0))
    }
}

fn io<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Io {
        op,
        msg: e.into().to_string(),
    }
}

/// Locks `m` even if a thread panicked while holding it: write transactions that panic are
/// aborted by redb, and in-memory state is only changed after a commit, so what the lock
/// protects is still consistent with the file.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_revision(table: &impl ReadableTable<&'static str, u64>) -> Result<Revision> {
    Ok(table
        .get(REVISION_KEY)
        .map_err(io("read revision"))?
        .map_or(0, |g| g.value()))
}

fn read_versioned(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    key: &str,
) -> Result<Option<Versioned>> {
    let Some(value) = kv.get(key).map_err(io("read"))? else {
        return Ok(None);
    };
    // Every key has metadata once open() reconciled the file; the fallback only keeps a
    // damaged row from making the value unreadable.
    let m = meta.get(key).map_err(io("read"))?.map_or(
        Meta {
            create: LEGACY_REVISION,
            modified: LEGACY_REVISION,
            lease: None,
        },
        |g| Meta::from_row(g.value()),
    );
    Ok(Some(Versioned {
        value: value.value().to_vec(),
        create_revision: m.create,
        mod_revision: m.modified,
        lease: m.lease,
    }))
}

impl RedbStore {
    /// Opens (or creates) the database at `path` with the real clock.
    pub fn open(path: &Path) -> Result<RedbStore> {
        RedbStore::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the database at `path`, reading lease time from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<RedbStore> {
        RedbStore::open_with(
            path,
            RedbOptions {
                clock,
                ..RedbOptions::default()
            },
        )
    }

    /// Opens (or creates) the database at `path`. See the module docs for what opening
    /// changes in an existing file (metadata for old keys, deletion of leased keys).
    pub fn open_with(path: &Path, options: RedbOptions) -> Result<RedbStore> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let revision = reconcile(&db, path)?;
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
            clock: options.clock,
            state: Mutex::new(State {
                revision,
                leases: BTreeMap::new(),
                next_lease: 1,
                hub: Hub::new(options.watch_history, revision),
            }),
            next_deadline: Mutex::new(None),
            deferred: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many watches are live (receivers not dropped). For tests and metrics.
    pub fn watchers(&self) -> usize {
        lock(&self.state).hub.prune()
    }

    /// Expires due leases if the cheap deadline check says any are due.
    fn expire_due(&self) -> Result<usize> {
        let due = lock(&self.next_deadline).is_some_and(|d| d <= self.clock.now());
        if !due {
            return Ok(0);
        }
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)
    }

    fn expire_locked(&self, st: &mut State) -> Result<usize> {
        let now = self.clock.now();
        let expired: Vec<LeaseId> = st
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        self.end_leases(st, &expired)?;
        Ok(expired.len())
    }

    /// Deletes the keys of `leases` in one revision, then forgets the leases. If the write
    /// fails the leases stay, so the next call tries again.
    fn end_leases(&self, st: &mut State, leases: &[LeaseId]) -> Result<()> {
        let deletes: Vec<Op> = leases
            .iter()
            .filter_map(|id| st.leases.get(id))
            .flat_map(|l| l.keys.iter().map(|k| Op::Delete(k.clone())))
            .collect();
        self.write_locked(st, &[], deletes, true)?;
        for id in leases {
            st.leases.remove(id);
        }
        self.refresh_deadline(st);
        Ok(())
    }

    fn refresh_deadline(&self, st: &State) {
        *lock(&self.next_deadline) = st.leases.values().map(|l| l.deadline).min();
    }

    /// The one write path: evaluates `compares` and applies `ops` inside one redb write
    /// transaction, then updates lease bookkeeping and notifies watchers. Caller holds `state`.
    /// `durable: false` commits with redb's `Durability::None` (no fsync; made durable by the
    /// next durable commit, which is what [`Store::sync`] is).
    fn write_locked(
        &self,
        st: &mut State,
        compares: &[Compare],
        ops: Vec<Op>,
        durable: bool,
    ) -> Result<TxnOutcome> {
        let mut seen = HashSet::new();
        for op in &ops {
            if !seen.insert(op.key()) {
                return Err(StoreError::DuplicateKey {
                    key: op.key().to_string(),
                });
            }
            if let Op::PutLease(_, _, lease) = op {
                if !st.leases.contains_key(lease) {
                    return Err(StoreError::LeaseNotFound { lease: *lease });
                }
            }
        }

        let mut txn = self.db.begin_write().map_err(io("begin write"))?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| StoreError::Io {
                    op: "deferring durability",
                    msg: e.to_string(),
                })?;
        }
        let next;
        let mut events = Vec::new();
        // (key, lease before, lease after) for keys whose attachment may have changed.
        let mut moves: Vec<(String, Option<LeaseId>, Option<LeaseId>)> = Vec::new();
        {
            let mut kv = txn.open_table(KV).map_err(io("write"))?;
            let mut meta = txn.open_table(KV_META).map_err(io("write"))?;
            let mut store_meta = txn.open_table(STORE_META).map_err(io("write"))?;
            let current = read_revision(&store_meta)?;
            // Compares are read inside the write transaction: no other writer can commit
            // between the check and the write.
            for (i, compare) in compares.iter().enumerate() {
                let now = read_versioned(&kv, &meta, compare.key())?;
                if !compare.holds(now.as_ref()) {
                    // Dropping the uncommitted transaction aborts it.
                    return Ok(TxnOutcome::Failed {
                        revision: current,
                        failed: i,
                    });
                }
            }
            next = current + 1;
            for op in ops {
                let (key, value, lease) = match op {
                    Op::Put(k, v) => (k, Some(v), None),
                    Op::PutLease(k, v, l) => (k, Some(v), Some(l)),
                    Op::Delete(k) => (k, None, None),
                };
                let old = meta
                    .get(key.as_str())
                    .map_err(io("write"))?
                    .map(|g| Meta::from_row(g.value()));
                match value {
                    Some(value) => {
                        let create = old.map_or(next, |m| m.create);
                        kv.insert(key.as_str(), value.as_slice())
                            .map_err(io("write"))?;
                        let row = Meta {
                            create,
                            modified: next,
                            lease,
                        };
                        meta.insert(key.as_str(), row.row()).map_err(io("write"))?;
                        moves.push((key.clone(), old.and_then(|m| m.lease), lease));
                        events.push(WatchEvent {
                            revision: next,
                            key,
                            kind: EventKind::Put,
                            value: Some(value),
                        });
                    }
                    None => {
                        let existed = kv.remove(key.as_str()).map_err(io("write"))?.is_some();
                        meta.remove(key.as_str()).map_err(io("write"))?;
                        if existed {
                            moves.push((key.clone(), old.and_then(|m| m.lease), None));
                            events.push(WatchEvent {
                                revision: next,
                                key,
                                kind: EventKind::Delete,
                                value: None,
                            });
                        }
                    }
                }
            }
            if events.is_empty() {
                // Nothing changed: no new revision (etcd does the same). Aborting also drops
                // the removal of any stray metadata row above, which is harmless.
                return Ok(TxnOutcome::Committed(current));
            }
            store_meta.insert(REVISION_KEY, next).map_err(io("write"))?;
        }
        txn.commit().map_err(io("commit"))?;
        if !durable {
            self.deferred.fetch_add(1, Ordering::SeqCst);
        }

        // Committed: bring memory in line with the file.
        st.revision = next;
        for (key, before, after) in moves {
            if before == after {
                continue;
            }
            if let Some(lease) = before.and_then(|id| st.leases.get_mut(&id)) {
                lease.keys.remove(&key);
            }
            if let Some(lease) = after.and_then(|id| st.leases.get_mut(&id)) {
                lease.keys.insert(key);
            }
        }
        st.hub.publish(&events);
        Ok(TxnOutcome::Committed(next))
    }
}

/// Brings a file of any earlier layout to the current one (see the module docs) and returns
/// its revision.
fn reconcile(db: &Database, path: &Path) -> Result<Revision> {
    let txn = db.begin_write().map_err(io("open: begin"))?;
    let revision;
    {
        // Opening in a write transaction creates missing tables, so reads on a fresh store
        // see empty tables rather than errors.
        let mut kv = txn.open_table(KV).map_err(io("open: tables"))?;
        let mut meta = txn.open_table(KV_META).map_err(io("open: tables"))?;
        let mut store_meta = txn.open_table(STORE_META).map_err(io("open: tables"))?;
        if let Some(found) = store_meta.get(LAYOUT_KEY).map_err(io("open: read"))? {
            let found = found.value();
            if found > LAYOUT_VERSION {
                return Err(StoreError::Layout {
                    path: path.display().to_string(),
                    found,
                    supported: LAYOUT_VERSION,
                });
            }
        }
        let mut rev = read_revision(&store_meta)?;

        let mut without_meta = Vec::new();
        for item in kv.iter().map_err(io("open: scan"))? {
            let (k, _) = item.map_err(io("open: scan"))?;
            if meta.get(k.value()).map_err(io("open: scan"))?.is_none() {
                without_meta.push(k.value().to_string());
            }
        }
        let mut stale = Vec::new();
        let mut leased = Vec::new();
        for item in meta.iter().map_err(io("open: scan"))? {
            let (k, m) = item.map_err(io("open: scan"))?;
            if kv.get(k.value()).map_err(io("open: scan"))?.is_none() {
                stale.push(k.value().to_string());
            } else if Meta::from_row(m.value()).lease.is_some() {
                leased.push(k.value().to_string());
            }
        }

        if !without_meta.is_empty() {
            rev = if rev == 0 { LEGACY_REVISION } else { rev + 1 };
            let row = Meta {
                create: rev,
                modified: rev,
                lease: None,
            };
            for k in &without_meta {
                meta.insert(k.as_str(), row.row())
                    .map_err(io("open: write"))?;
            }
        }
        for k in &stale {
            meta.remove(k.as_str()).map_err(io("open: write"))?;
        }
        if !leased.is_empty() {
            rev += 1;
            for k in &leased {
                kv.remove(k.as_str()).map_err(io("open: write"))?;
                meta.remove(k.as_str()).map_err(io("open: write"))?;
            }
            tracing::info!(
                keys = leased.len(),
                "state store: deleted keys held by leases of a previous process"
            );
        }
        store_meta
            .insert(REVISION_KEY, rev)
            .map_err(io("open: write"))?;
        store_meta
            .insert(LAYOUT_KEY, LAYOUT_VERSION)
            .map_err(io("open: write"))?;
        revision = rev;
    }
    txn.commit().map_err(io("open: commit"))?;
    Ok(revision)
}

impl Store for RedbStore {
    // get and list skip the metadata table: they are the daemon's hot read path (DNS).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.expire_due()?;
        let txn = self.db.begin_read().map_err(io("read"))?;
        let table = txn.open_table(KV).map_err(io("read"))?;
        let value = table.get(key).map_err(io("read"))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.expire_due()?;
        let txn = self.db.begin_read().map_err(io("list"))?;
        let table = txn.open_table(KV).map_err(io("list"))?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(io("list"))? {
            let (k, v) = item.map_err(io("list"))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.path.display())
    }

    fn revision(&self) -> Result<Revision> {
        self.expire_due()?;
        let txn = self.db.begin_read().map_err(io("read"))?;
        let table = txn.open_table(STORE_META).map_err(io("read"))?;
        read_revision(&table)
    }

    fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        self.expire_due()?;
        let txn = self.db.begin_read().map_err(io("read"))?;
        let kv = txn.open_table(KV).map_err(io("read"))?;
        let meta = txn.open_table(KV_META).map_err(io("read"))?;
        read_versioned(&kv, &meta, key)
    }

    fn list_versioned(&self, prefix: &str) -> Result<(Revision, Vec<(String, Versioned)>)> {
        self.expire_due()?;
        // One read transaction: the revision and the values come from the same snapshot.
        let txn = self.db.begin_read().map_err(io("list"))?;
        let kv = txn.open_table(KV).map_err(io("list"))?;
        let meta = txn.open_table(KV_META).map_err(io("list"))?;
        let store_meta = txn.open_table(STORE_META).map_err(io("list"))?;
        let revision = read_revision(&store_meta)?;
        let mut out = Vec::new();
        for item in kv.range(prefix..).map_err(io("list"))? {
            let (k, _) = item.map_err(io("list"))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if let Some(v) = read_versioned(&kv, &meta, key)? {
                out.push((key.to_string(), v));
            }
        }
        Ok((revision, out))
    }

    fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let mut st = lock(&self.state);
        // Expire first, so a compare never sees a key whose lease already ran out.
        self.expire_locked(&mut st)?;
        self.write_locked(&mut st, &compares, ops, true)
    }

    fn txn_deferred(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)?;
        self.write_locked(&mut st, &compares, ops, false)
    }

    fn sync(&self) -> Result<()> {
        let _one = lock(&self.sync_lock);
        let target = self.deferred.load(Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        // An empty write transaction committed with Durability::Immediate persists every
        // earlier Durability::None commit (redb's contract): one fdatasync. Not under `state`:
        // it changes no key and no revision, and readers never wait for it.
        let txn = self.db.begin_write().map_err(io("begin write"))?;
        txn.commit().map_err(io("commit (sync)"))?;
        self.synced.fetch_max(target, Ordering::SeqCst);
        Ok(())
    }

    fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Watcher> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)?;
        let current = st.revision;
        st.hub.subscribe(prefix, from, current)
    }

    fn compact(&self, revision: Revision) -> Result<()> {
        let mut st = lock(&self.state);
        // Never past the present: a watch from "now" must keep working.
        let upto = revision.min(st.revision);
        st.hub.compact(upto);
        Ok(())
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl < Duration::from_secs(1) {
            return Err(StoreError::LeaseTtl { ttl });
        }
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)?;
        let id = LeaseId(st.next_lease);
        st.next_lease += 1;
        st.leases.insert(
            id,
            Lease {
                ttl,
                deadline: self.clock.now() + ttl,
                keys: BTreeSet::new(),
            },
        );
        self.refresh_deadline(&st);
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)?;
        let now = self.clock.now();
        let Some(l) = st.leases.get_mut(&lease) else {
            return Err(StoreError::LeaseNotFound { lease });
        };
        l.deadline = now + l.ttl;
        self.refresh_deadline(&st);
        Ok(())
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)?;
        if !st.leases.contains_key(&lease) {
            return Err(StoreError::LeaseNotFound { lease });
        }
        self.end_leases(&mut st, &[lease])
    }

    fn expire_leases(&self) -> Result<usize> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st)
    }
}

#[cfg(test)]
mod tests;
