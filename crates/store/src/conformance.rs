//! The behaviour every [`Store`] backend must have, as a test suite a backend runs from its own
//! tests: implement [`Backend`] and call [`run_all`] (or the individual checks).
//!
//! The checks panic on a violation (they are tests) and return store errors as `Err`.
//! They assume nobody else writes to the store while they run: revisions are global, so a
//! shared etcd would see foreign revisions. They do not assume a fresh store starts at
//! revision 0 (an etcd namespace starts wherever the cluster is).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::{
    Compare, EventKind, LeaseId, Op, Result, Revision, Store, StoreError, StoreExt, TxnOutcome,
    WatchEvent, Watcher,
};

/// How the suite makes, reopens and ages stores of one backend.
pub trait Backend {
    /// The store type under test.
    type Store: Store;

    /// A new, empty store (for etcd: an empty, private key space).
    fn fresh(&mut self) -> Result<Self::Store>;

    /// Closes `store` and opens the same data again (same file, new client, ...).
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store>;

    /// Lets `by` pass on the clock `store` uses for lease TTLs (a manual clock, or sleeping).
    fn advance(&mut self, store: &Self::Store, by: Duration);

    /// The TTL the lease checks use; big enough for the backend's minimum.
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Runs every check, each on a fresh store.
pub fn run_all<B: Backend>(b: &mut B) -> Result<()> {
    revisions_are_monotonic(b)?;
    txn_compares_all_or_nothing(b)?;
    typed_helpers_and_retries(b)?;
    allocation_race_has_unique_winners(b)?;
    watch_orders_scopes_and_replays(b)?;
    watch_from_compacted_history_fails(b)?;
    leases_expire_and_revoke(b)?;
    reopen_keeps_values_and_revisions(b)?;
    deferred_commits_are_visible_then_synced(b)?;
    Ok(())
}

/// How long to wait for an event a backend delivers asynchronously. Backends that deliver at
/// commit time (redb) never wait.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The next event of `w`, waiting up to 10 s (for backends that deliver asynchronously).
pub fn next_event(w: &mut Watcher) -> WatchEvent {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        match w.try_recv() {
            Ok(event) => return event,
            Err(crate::TryRecvError::Disconnected) => panic!("watch ended unexpectedly"),
            Err(crate::TryRecvError::Empty) => {
                assert!(
                    Instant::now() < deadline,
                    "no watch event within {EVENT_WAIT:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The next `n` events of `w` as `(revision, key, kind)`.
fn events(w: &mut Watcher, n: usize) -> Vec<(Revision, String, EventKind)> {
    (0..n)
        .map(|_| {
            let e = next_event(w);
            match e.kind {
                EventKind::Put => assert!(e.value.is_some(), "put event without value"),
                EventKind::Delete => assert!(e.value.is_none(), "delete event with a value"),
            }
            (e.revision, e.key, e.kind)
        })
        .collect()
}

/// Writes `marker` and asserts it is the next thing `w` reports: proves no other event is
/// pending without sleeping.
fn assert_quiet<S: Store>(s: &S, w: &mut Watcher, marker: &str) -> Result<()> {
    s.apply(vec![Op::Put(marker.to_string(), b"m".to_vec())])?;
    let e = next_event(w);
    assert_eq!(e.key, marker, "unexpected event before the marker: {e:?}");
    Ok(())
}

fn committed(outcome: TxnOutcome) -> Revision {
    match outcome {
        TxnOutcome::Committed(rev) => rev,
        TxnOutcome::Failed { failed, .. } => panic!("compare {failed} failed unexpectedly"),
    }
}

fn put(key: &str, value: &[u8]) -> Op {
    Op::Put(key.to_string(), value.to_vec())
}

/// Every changing write creates exactly one new revision; writes that change nothing create
/// none; per-key create/mod revisions follow.
pub fn revisions_are_monotonic<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let r0 = s.revision()?;
    let r1 = committed(s.txn(vec![], vec![put("m/a", b"1"), put("m/b", b"1")])?);
    assert_eq!(r1, r0 + 1, "one transaction, one revision");
    assert_eq!(s.revision()?, r1);
    let r2 = committed(s.txn(vec![], vec![put("m/a", b"2")])?);
    assert_eq!(r2, r1 + 1);
    let a = s.get_versioned("m/a")?.expect("m/a exists");
    assert_eq!((a.create_revision, a.mod_revision), (r1, r2));
    assert_eq!(a.value, b"2");
    assert_eq!(a.lease, None);
    let bv = s.get_versioned("m/b")?.expect("m/b exists");
    assert_eq!((bv.create_revision, bv.mod_revision), (r1, r1));

    // Nothing changed: same revision (etcd semantics).
    assert_eq!(s.txn(vec![], vec![])?, TxnOutcome::Committed(r2));
    s.apply(vec![Op::Delete("m/missing".into())])?;
    assert_eq!(s.revision()?, r2);

    // Delete and re-create: a new create revision.
    s.apply(vec![Op::Delete("m/a".into())])?;
    let r4 = committed(s.txn(vec![], vec![put("m/a", b"3")])?);
    assert_eq!(r4, r2 + 2);
    let a = s.get_versioned("m/a")?.expect("m/a exists");
    assert_eq!((a.create_revision, a.mod_revision), (r4, r4));

    let (at, items) = s.list_versioned("m/")?;
    assert_eq!(at, r4);
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["m/a", "m/b"]);
    assert_eq!(s.get("m/a")?, Some(b"3".to_vec()));
    assert_eq!(s.list("m/")?.len(), 2);
    Ok(())
}

/// Compares decide; a failed transaction writes nothing and names the failing compare;
/// a transaction writing a key twice is refused.
pub fn txn_compares_all_or_nothing<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let r1 = committed(s.txn(vec![Compare::Absent("c/k".into())], vec![put("c/k", b"a")])?);

    let r2 = committed(s.txn(
        vec![
            Compare::ModRevision("c/k".into(), r1),
            Compare::Present("c/k".into()),
            Compare::Value("c/k".into(), b"a".to_vec()),
            Compare::Absent("c/other".into()),
            Compare::ModRevision("c/other".into(), 0),
        ],
        vec![put("c/k", b"b"), put("c/other", b"x")],
    )?);
    assert_eq!(r2, r1 + 1);

    // A stale mod revision: nothing of the transaction is written.
    let outcome = s.txn(
        vec![
            Compare::Present("c/k".into()),
            Compare::ModRevision("c/k".into(), r1),
        ],
        vec![
            put("c/k", b"c"),
            put("c/new", b"y"),
            Op::Delete("c/other".into()),
        ],
    )?;
    assert_eq!(
        outcome,
        TxnOutcome::Failed {
            revision: r2,
            failed: 1
        }
    );
    assert!(!outcome.is_committed());
    assert_eq!(s.get("c/k")?, Some(b"b".to_vec()));
    assert_eq!(s.get("c/new")?, None);
    assert_eq!(s.get("c/other")?, Some(b"x".to_vec()));
    assert_eq!(
        s.revision()?,
        r2,
        "a failed transaction creates no revision"
    );

    for (i, compare) in [
        Compare::Absent("c/k".into()),
        Compare::Present("c/none".into()),
        Compare::Value("c/k".into(), b"a".to_vec()),
        Compare::Value("c/none".into(), b"a".to_vec()),
        Compare::ModRevision("c/none".into(), r2),
        Compare::ModRevision("c/k".into(), 0),
    ]
    .into_iter()
    .enumerate()
    {
        let outcome = s.txn(
            vec![Compare::Present("c/k".into()), compare.clone()],
            vec![put("c/k", b"z")],
        )?;
        assert_eq!(
            outcome,
            TxnOutcome::Failed {
                revision: r2,
                failed: 1
            },
            "case {i}: {compare:?} must fail"
        );
    }
    assert_eq!(s.get("c/k")?, Some(b"b".to_vec()));

    match s.txn(vec![], vec![put("c/d", b"1"), Op::Delete("c/d".into())]) {
        Err(StoreError::DuplicateKey { key }) => assert_eq!(key, "c/d"),
        other => panic!("a key written twice must be refused, got {other:?}"),
    }
    assert_eq!(s.get("c/d")?, None);
    assert_eq!(s.revision()?, r2);
    Ok(())
}

/// `cas_json`, `update_json` and `retry_txn`, including concurrent increments that must not
/// lose updates.
pub fn typed_helpers_and_retries<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let created = s.cas_json("t/n", None, &1u32)?;
    assert!(created.is_committed());
    assert!(!s.cas_json("t/n", None, &2u32)?.is_committed(), "exists");
    let (n, rev) = s.get_json_versioned::<u32>("t/n")?.expect("t/n exists");
    assert_eq!((n, rev), (1, created.revision()));
    assert!(!s.cas_json("t/n", Some(rev + 100), &2u32)?.is_committed());
    assert!(s.cas_json("t/n", Some(rev), &2u32)?.is_committed());
    assert_eq!(s.get_json::<u32>("t/n")?, Some(2));

    // update_json declining writes nothing.
    let before = s.revision()?;
    let declined = s.update_json::<u32, StoreError, _>("t/n", |_| Ok(None))?;
    assert!(declined.is_none());
    assert_eq!(s.revision()?, before);

    const THREADS: u32 = 8;
    const EACH: u32 = 25;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    for _ in 0..EACH {
                        s.update_json::<u32, StoreError, _>("t/counter", |n| {
                            Ok(Some(n.unwrap_or(0) + 1))
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok::<(), StoreError>(())
    })?;
    assert_eq!(s.get_json::<u32>("t/counter")?, Some(THREADS * EACH));

    // retry_txn: move a value between two keys atomically.
    s.apply(vec![
        Op::put_json("t/from", &5u32),
        Op::put_json("t/to", &0u32),
    ])?;
    s.retry_txn(|s| {
        let (from, rf) = s.get_json_versioned::<u32>("t/from")?.expect("t/from");
        let (to, rt) = s.get_json_versioned::<u32>("t/to")?.expect("t/to");
        Ok((
            vec![
                Compare::ModRevision("t/from".into(), rf),
                Compare::ModRevision("t/to".into(), rt),
            ],
            vec![
                Op::put_json("t/from", &(from - 1)),
                Op::put_json("t/to", &(to + 1)),
            ],
        ))
    })?;
    assert_eq!(s.get_json::<u32>("t/from")?, Some(4));
    assert_eq!(s.get_json::<u32>("t/to")?, Some(1));
    Ok(())
}

/// 8 threads race to allocate 20 addresses with `Absent` compares: each address is won
/// exactly once and the store agrees with every winner.
pub fn allocation_race_has_unique_winners<B: Backend>(b: &mut B) -> Result<()> {
    const THREADS: usize = 8;
    const ADDRESSES: usize = 20;
    let s = b.fresh()?;
    let key = |i: usize| format!("ipam/10.0.0.{}", i + 1);
    let barrier = std::sync::Barrier::new(THREADS);
    let wins: Vec<Vec<(String, Revision)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, barrier, key) = (&s, &barrier, &key);
                scope.spawn(move || -> Result<Vec<(String, Revision)>> {
                    let mut won = Vec::new();
                    barrier.wait();
                    // Bounded: every failed attempt means someone else won an address.
                    for _ in 0..(ADDRESSES * THREADS * 4) {
                        let (_, taken) = s.list_versioned("ipam/")?;
                        let taken: BTreeSet<String> = taken.into_iter().map(|(k, _)| k).collect();
                        // Everyone wants the lowest free address: maximum contention.
                        let Some(free) = (0..ADDRESSES).map(key).find(|k| !taken.contains(k))
                        else {
                            return Ok(won);
                        };
                        let outcome = s.txn(
                            vec![Compare::Absent(free.clone())],
                            vec![Op::Put(free.clone(), t.to_string().into_bytes())],
                        )?;
                        if let TxnOutcome::Committed(rev) = outcome {
                            won.push((free, rev));
                        }
                    }
                    panic!("thread {t} never saw the pool exhausted");
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect::<Result<Vec<_>>>()
    })?;

    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let mut revisions = BTreeSet::new();
    for (t, won) in wins.iter().enumerate() {
        for (k, rev) in won {
            assert!(owner.insert(k.clone(), t).is_none(), "{k} allocated twice");
            assert!(revisions.insert(*rev), "two winners share revision {rev}");
        }
    }
    assert_eq!(owner.len(), ADDRESSES, "every address allocated");
    for (k, t) in &owner {
        assert_eq!(
            s.get(k)?,
            Some(t.to_string().into_bytes()),
            "{k}: store disagrees"
        );
    }
    Ok(())
}

/// Watches see every change under their prefix, in revision order, nothing else; a watch
/// from a past revision replays exactly what followed it.
pub fn watch_orders_scopes_and_replays<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    s.apply(vec![put("w/a/0", b"before")])?;
    let (listed_at, listed) = s.list_versioned("w/")?;
    assert_eq!(listed.len(), 1);
    let mut all = s.watch("w/", None)?;
    let mut only_a = s.watch("w/a/", Some(listed_at))?;

    let r1 = committed(s.txn(
        vec![],
        vec![put("w/a/1", b"1"), put("w/b/1", b"1"), put("wx/1", b"no")],
    )?);
    let r2 = committed(s.txn(vec![], vec![Op::Delete("w/a/1".into())])?);
    let r3 = committed(s.txn(vec![], vec![put("w/b/1", b"2"), put("w/a/2", b"2")])?);
    s.apply(vec![put("x/1", b"no")])?;

    use EventKind::{Delete, Put};
    let expect_all = vec![
        (r1, "w/a/1".to_string(), Put),
        (r1, "w/b/1".to_string(), Put),
        (r2, "w/a/1".to_string(), Delete),
        (r3, "w/b/1".to_string(), Put),
        (r3, "w/a/2".to_string(), Put),
    ];
    assert_eq!(events(&mut all, 5), expect_all);
    let expect_a: Vec<_> = expect_all
        .iter()
        .filter(|(_, k, _)| k.starts_with("w/a/"))
        .cloned()
        .collect();
    assert_eq!(events(&mut only_a, 3), expect_a);

    // Replay from a past revision: exactly what followed it, then live events.
    let mut replay = s.watch("w/", Some(r1))?;
    assert_eq!(events(&mut replay, 3), expect_all[2..].to_vec());
    let r5 = committed(s.txn(vec![], vec![put("w/c/1", b"3")])?);
    let e = next_event(&mut replay);
    assert_eq!((e.revision, e.key.as_str(), e.kind), (r5, "w/c/1", Put));
    assert_eq!(e.value.as_deref(), Some(&b"3"[..]));
    assert_eq!(next_event(&mut all).revision, r5);

    assert_quiet(&s, &mut all, "w/zz-marker")?;
    assert_quiet(&s, &mut only_a, "w/a/zz-marker")?;

    // Dropping a watcher is fine for the store and for other watchers.
    drop(replay);
    s.apply(vec![put("w/after-drop", b"1")])?;
    assert_eq!(next_event(&mut all).key, "w/a/zz-marker");
    assert_eq!(next_event(&mut all).key, "w/after-drop");
    Ok(())
}

/// A watch from history that was compacted away fails with `Compacted`; from the present
/// it works.
pub fn watch_from_compacted_history_fails<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let r0 = s.revision()?;
    let mut last = r0;
    for i in 0..5 {
        last = committed(s.txn(vec![], vec![put(&format!("k/{i}"), b"v")])?);
    }
    s.compact(last - 1)?;
    match s.watch("k/", Some(r0)) {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, r0);
            assert!(oldest > r0 && oldest <= last, "oldest {oldest}");
        }
        other => panic!("watch from compacted history must fail, got {other:?}"),
    }
    let mut w = s.watch("k/", Some(last))?;
    let r = committed(s.txn(vec![], vec![put("k/new", b"v")])?);
    assert_eq!(next_event(&mut w).revision, r);
    Ok(())
}

/// Keys of a lease vanish when it expires or is revoked, as delete events; keep-alive extends
/// it; a key re-put without the lease is detached; unknown leases are refused.
pub fn leases_expire_and_revoke<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let ttl = b.lease_ttl();
    let short = grant(&s, ttl)?;
    let kept = grant(&s, ttl)?;
    let detached = grant(&s, ttl)?;
    assert!(short != kept && kept != detached && short != detached);

    let gone = grant(&s, ttl)?;
    s.revoke_lease(gone)?;
    let before = s.revision()?;
    match s.txn(
        vec![],
        vec![
            put("l/x", b"1"),
            Op::PutLease("l/y".into(), b"1".to_vec(), gone),
        ],
    ) {
        Err(StoreError::LeaseNotFound { lease }) => assert_eq!(lease, gone),
        other => panic!("a put on a revoked lease must fail, got {other:?}"),
    }
    assert_eq!(
        s.get("l/x")?,
        None,
        "nothing of a refused transaction is written"
    );
    assert_eq!(s.revision()?, before);
    assert!(matches!(
        s.revoke_lease(gone),
        Err(StoreError::LeaseNotFound { .. })
    ));
    let r = s.keep_alive(gone);
    assert!(
        matches!(r, Err(StoreError::LeaseNotFound { .. })),
        "keep-alive of a revoked lease: {r:?}"
    );

    let mut w = s.watch("l/", None)?;
    let r1 = committed(s.txn(
        vec![],
        vec![
            Op::PutLease("l/a".into(), b"a".to_vec(), short),
            Op::put_json_lease("l/b", &"b", short),
            Op::PutLease("l/c".into(), b"c".to_vec(), kept),
            put("l/d", b"d"),
            Op::PutLease("l/e".into(), b"e".to_vec(), detached),
        ],
    )?);
    assert_eq!(events(&mut w, 5).len(), 5);
    assert_eq!(s.get_versioned("l/a")?.and_then(|v| v.lease), Some(short));
    assert_eq!(s.get_versioned("l/d")?.and_then(|v| v.lease), None);
    // Re-put without a lease: l/e no longer dies with `detached`.
    let r2 = committed(s.txn(vec![], vec![put("l/e", b"e2")])?);
    assert_eq!(next_event(&mut w).revision, r2);
    assert_eq!(s.get_versioned("l/e")?.and_then(|v| v.lease), None);

    // 0.6 TTL: everyone alive; keep `kept` alive. 1.2 TTL: `short` and `detached` expired.
    b.advance(&s, ttl.mul_f64(0.6));
    s.keep_alive(kept)?;
    assert!(s.get("l/a")?.is_some(), "not expired yet");
    b.advance(&s, ttl.mul_f64(0.6));
    // No explicit expire_leases: expiry is checked on every call.
    assert_eq!(s.get("l/a")?, None, "expired lease's key is invisible");
    assert_eq!(s.get_versioned("l/b")?, None);
    assert!(s.get("l/c")?.is_some(), "kept alive");
    assert_eq!(
        s.get("l/e")?,
        Some(b"e2".to_vec()),
        "detached from its lease"
    );
    let (_, left) = s.list_versioned("l/")?;
    let left: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(left, ["l/c", "l/d", "l/e"]);
    s.expire_leases()?;
    assert!(matches!(
        s.keep_alive(short),
        Err(StoreError::LeaseNotFound { .. })
    ));

    let expired = events(&mut w, 2);
    assert!(expired[0].0 > r1 && expired[0].0 == expired[1].0);
    let keys: BTreeSet<&str> = expired.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(keys, BTreeSet::from(["l/a", "l/b"]));
    assert!(expired
        .iter()
        .all(|(_, _, kind)| *kind == EventKind::Delete));

    // Revoke: its keys go in one revision.
    s.revoke_lease(kept)?;
    assert_eq!(s.get("l/c")?, None);
    let e = next_event(&mut w);
    assert_eq!((e.key.as_str(), e.kind), ("l/c", EventKind::Delete));
    assert_eq!(e.revision, s.revision()?);
    assert_quiet(&s, &mut w, "l/zz-marker")?;
    Ok(())
}

/// Values, per-key revisions and the global revision survive a reopen, and revisions keep
/// counting from where they were.
pub fn reopen_keeps_values_and_revisions<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    s.apply(vec![
        put("p/a", b"{\"x\":1}"),
        put("p/b", b"raw bytes \x00\xff"),
    ])?;
    s.apply(vec![put("p/a", b"{\"x\":2}")])?;
    s.apply(vec![Op::Delete("p/b".into())])?;
    s.apply(vec![put("p/c", b"c")])?;
    let (rev, before) = s.list_versioned("p/")?;
    let s = b.reopen(s)?;
    assert_eq!(s.revision()?, rev);
    assert_eq!(s.list_versioned("p/")?, (rev, before.clone()));
    assert_eq!(s.get("p/a")?, Some(b"{\"x\":2}".to_vec()));
    let r = committed(s.txn(vec![], vec![put("p/a", b"{\"x\":3}")])?);
    assert_eq!(r, rev + 1);
    let a = s.get_versioned("p/a")?.expect("p/a exists");
    let old = &before[0].1;
    assert_eq!(
        a.create_revision, old.create_revision,
        "create revision kept"
    );
    assert_eq!(a.mod_revision, r);
    Ok(())
}

/// [`Store::txn_deferred`] is a transaction like any other for readers, watchers and
/// compares (a failed compare applies nothing); after [`Store::sync`] it survives a reopen.
pub fn deferred_commits_are_visible_then_synced<B: Backend>(b: &mut B) -> Result<()> {
    let s = b.fresh()?;
    let mut w = s.watch("d/", None)?;
    let r = committed(s.txn_deferred(
        vec![Compare::Absent("d/a".into())],
        vec![put("d/a", b"1"), put("d/b", b"2")],
    )?);
    assert_eq!(
        s.get("d/a")?,
        Some(b"1".to_vec()),
        "visible before any sync"
    );
    let e = next_event(&mut w);
    assert_eq!((e.revision, e.key.as_str()), (r, "d/a"));
    let failed = s.txn_deferred(
        vec![Compare::Absent("d/a".into())],
        vec![put("d/a", b"lost")],
    )?;
    assert!(!failed.is_committed(), "a failed compare applies nothing");
    // A durable commit after a deferred one, then the sync (nothing left to flush is fine).
    s.apply(vec![put("d/c", b"3")])?;
    s.sync()?;
    s.sync()?;
    let s = b.reopen(s)?;
    assert_eq!(s.get("d/a")?, Some(b"1".to_vec()));
    assert_eq!(s.get("d/b")?, Some(b"2".to_vec()));
    assert_eq!(s.revision()?, r + 1);
    Ok(())
}

/// Grants a lease, checking the id is not the reserved 0.
fn grant<S: Store>(s: &S, ttl: Duration) -> Result<LeaseId> {
    let id = s.grant_lease(ttl)?;
    assert_ne!(id, LeaseId(0), "lease id 0 is reserved for no lease");
    Ok(id)
}
