//! redb backend: the conformance suite plus what only the embedded store does (old files,
//! leases dying with the process, in-memory history limits).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, TableDefinition};

use super::*;
use crate::conformance::{self, next_event, Backend};
use crate::{ManualClock, StoreExt};

/// A directory removed on drop (no tempfile crate in this workspace).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-store-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct RedbBackend {
    dir: TempDir,
    files: usize,
    clock: Arc<ManualClock>,
}

impl RedbBackend {
    fn new() -> RedbBackend {
        RedbBackend {
            dir: TempDir::new(),
            files: 0,
            clock: Arc::new(ManualClock::new()),
        }
    }
}

impl Backend for RedbBackend {
    type Store = RedbStore;

    fn fresh(&mut self) -> Result<RedbStore> {
        self.files += 1;
        let path = self.dir.file(&format!("s{}.redb", self.files));
        RedbStore::open_with_clock(&path, self.clock.clone())
    }

    fn reopen(&mut self, store: RedbStore) -> Result<RedbStore> {
        let path = store.path().to_path_buf();
        drop(store);
        RedbStore::open_with_clock(&path, self.clock.clone())
    }

    fn advance(&mut self, _store: &RedbStore, by: Duration) {
        self.clock.advance(by);
    }
}

/// One test per conformance check, so a failure names the behaviour that broke.
macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        mod conformance_suite {
            use super::*;
            $(
                #[test]
                fn $check() -> Result<()> {
                    conformance::$check(&mut RedbBackend::new())
                }
            )*
        }
    };
}

conformance_tests!(
    revisions_are_monotonic,
    txn_compares_all_or_nothing,
    typed_helpers_and_retries,
    allocation_race_has_unique_winners,
    watch_orders_scopes_and_replays,
    watch_from_compacted_history_fails,
    leases_expire_and_revoke,
    reopen_keeps_values_and_revisions,
    deferred_commits_are_visible_then_synced,
);

/// The child half of [`a_synced_deferred_commit_survives_a_crash`]: commits deferred, syncs,
/// and leaves without closing the database (as a crash would: no destructor runs).
#[test]
fn crash_child() -> Result<()> {
    let Some(path) = std::env::var_os("BERTH_STORE_CRASH_CHILD") else {
        return Ok(());
    };
    let s = RedbStore::open(Path::new(&path))?;
    s.txn_deferred(vec![], vec![Op::Put("k".into(), b"synced".to_vec())])?;
    s.sync()?;
    std::process::exit(0);
}

/// A deferred commit that `sync` returned for is on disk: a process that ends without
/// closing the file (no clean shutdown, so redb repairs on open) still finds it. Without the
/// `sync` the child's commit is lost (checked: this test then fails), so it shows the sync
/// is what persists it.
#[test]
fn a_synced_deferred_commit_survives_a_crash() -> Result<()> {
    let dir = TempDir::new();
    let path = dir.file("crash.redb");
    drop(RedbStore::open(&path)?);
    let exe = std::env::current_exe().expect("the test binary");
    let status = std::process::Command::new(exe)
        .args(["--exact", "redb_store::tests::crash_child", "--nocapture"])
        .env("BERTH_STORE_CRASH_CHILD", &path)
        .status()
        .expect("running the child");
    assert!(status.success(), "child failed: {status}");
    let s = RedbStore::open(&path)?;
    assert_eq!(s.get("k")?, Some(b"synced".to_vec()));
    Ok(())
}

#[test]
fn daemon_style_use_through_dyn_store() -> Result<()> {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let s: Arc<dyn Store> = Arc::new(RedbStore::open(&path)?);
    s.apply(vec![
        Op::put_json("net/a", &1),
        Op::put_json("net/b", &2),
        Op::put_json("nez/c", &3),
    ])?;
    let v: Vec<i32> = s.list_json("net/")?;
    assert_eq!(v, vec![1, 2]);
    s.apply(vec![
        Op::Delete("net/a".into()),
        Op::Delete("missing".into()),
    ])?;
    assert_eq!(s.get_json::<i32>("net/a")?, None);
    assert_eq!(s.get_json::<i32>("net/b")?, Some(2));
    let updated = s.update_json::<i32, StoreError, _>("net/b", |n| Ok(n.map(|n| n * 10)))?;
    assert_eq!(updated.map(|(_, n)| n), Some(20));
    assert!(s.describe().starts_with("redb:"));
    drop(s);
    let s = RedbStore::open(&path)?;
    assert_eq!(s.list("").map(|v| v.len())?, 2);
    Ok(())
}

/// A file written by the berth before revisions: only the `kv` table, raw JSON.
#[test]
fn old_format_file_opens_and_reads_the_same() -> Result<()> {
    const OLD_KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
    let dir = TempDir::new();
    let path = dir.file("old.redb");
    let docs: [(&str, &[u8]); 3] = [
        ("containers/1", br#"{"id":"1","name":"web"}"#),
        ("meta", br#"{"version":3}"#),
        ("networks/n", br#"{"id":"n", "subnets" : [] }"#),
    ];
    {
        let db = Database::create(&path).map_err(io("test: create"))?;
        let txn = db.begin_write().map_err(io("test: write"))?;
        {
            let mut t = txn.open_table(OLD_KV).map_err(io("test: write"))?;
            for (k, v) in docs {
                t.insert(k, v).map_err(io("test: write"))?;
            }
        }
        txn.commit().map_err(io("test: commit"))?;
    }

    let s = RedbStore::open(&path)?;
    for (k, v) in docs {
        assert_eq!(s.get(k)?.as_deref(), Some(v), "{k}: bytes unchanged");
        let versioned = s.get_versioned(k)?.expect("present");
        assert_eq!(
            (versioned.create_revision, versioned.mod_revision),
            (LEGACY_REVISION, LEGACY_REVISION)
        );
    }
    assert_eq!(s.revision()?, LEGACY_REVISION);
    assert_eq!(s.list("networks/")?.len(), 1);
    assert_eq!(s.list_json::<serde_json::Value>("containers/")?.len(), 1);
    // CAS against the legacy revision works; writes continue after it.
    assert!(s
        .cas_json(
            "meta",
            Some(LEGACY_REVISION),
            &serde_json::json!({"version": 4})
        )?
        .is_committed());
    assert_eq!(s.revision()?, LEGACY_REVISION + 1);
    // History starts at open.
    assert!(matches!(
        s.watch("", Some(0)),
        Err(StoreError::Compacted {
            requested: 0,
            oldest: LEGACY_REVISION
        })
    ));
    drop(s);
    // Reopening does not re-stamp anything.
    let s = RedbStore::open(&path)?;
    assert_eq!(s.revision()?, LEGACY_REVISION + 1);
    let c = s.get_versioned("containers/1")?.expect("present");
    assert_eq!(c.mod_revision, LEGACY_REVISION);
    Ok(())
}

#[test]
fn fresh_store_starts_at_zero_and_counts_by_one() -> Result<()> {
    let dir = TempDir::new();
    let s = RedbStore::open(&dir.file("s.redb"))?;
    assert_eq!(s.revision()?, 0);
    assert_eq!(s.list_versioned("")?, (0, vec![]));
    for expected in 1..=3 {
        s.apply(vec![Op::Put("k".into(), vec![expected as u8])])?;
        assert_eq!(s.revision()?, expected);
    }
    Ok(())
}

/// Leases are in memory: at open, keys of leases of the previous process are deleted.
#[test]
fn leased_keys_of_a_previous_process_are_deleted_at_open() -> Result<()> {
    let mut b = RedbBackend::new();
    let s = b.fresh()?;
    let lease = s.grant_lease(Duration::from_secs(30))?;
    s.apply(vec![
        Op::PutLease("claims/a".into(), b"a".to_vec(), lease),
        Op::Put("plain".into(), b"p".to_vec()),
    ])?;
    let rev = s.revision()?;
    let s = b.reopen(s)?;
    assert_eq!(s.get("claims/a")?, None);
    assert_eq!(s.get("plain")?, Some(b"p".to_vec()));
    assert_eq!(s.revision()?, rev + 1, "the cleanup is one revision");
    assert!(matches!(
        s.keep_alive(lease),
        Err(StoreError::LeaseNotFound { .. })
    ));
    let s = b.reopen(s)?;
    assert_eq!(s.revision()?, rev + 1, "nothing left to clean");
    Ok(())
}

#[test]
fn expire_leases_reports_and_ttl_is_checked() -> Result<()> {
    let mut b = RedbBackend::new();
    let s = b.fresh()?;
    assert!(matches!(
        s.grant_lease(Duration::from_millis(500)),
        Err(StoreError::LeaseTtl { .. })
    ));
    let l1 = s.grant_lease(Duration::from_secs(5))?;
    let _l2 = s.grant_lease(Duration::from_secs(5))?;
    let l3 = s.grant_lease(Duration::from_secs(50))?;
    s.apply(vec![Op::PutLease("k".into(), b"v".to_vec(), l1)])?;
    let mut w = s.watch("", None)?;
    assert_eq!(s.expire_leases()?, 0);
    b.clock.advance(Duration::from_secs(5));
    // Deadline reached: expired (a TTL is "at most this long without keep-alive").
    assert_eq!(s.expire_leases()?, 2);
    let e = next_event(&mut w);
    assert_eq!((e.key.as_str(), e.kind), ("k", EventKind::Delete));
    assert_eq!(s.expire_leases()?, 0);
    s.keep_alive(l3)?;
    // Revoking a lease without keys creates no revision.
    let rev = s.revision()?;
    s.revoke_lease(l3)?;
    assert_eq!(s.revision()?, rev);
    Ok(())
}

#[test]
fn watch_history_is_bounded_and_compaction_is_exact() -> Result<()> {
    let dir = TempDir::new();
    let s = RedbStore::open_with(
        &dir.file("s.redb"),
        RedbOptions {
            watch_history: 3,
            ..RedbOptions::default()
        },
    )?;
    for i in 0..5u8 {
        s.apply(vec![Op::Put(format!("k/{i}"), vec![i])])?;
    }
    // Revisions 3..=5 are kept: a watch can start from 2 (events after it) but not from 1.
    let mut w = s.watch("k/", Some(2))?;
    assert_eq!(next_event(&mut w).revision, 3);
    assert!(matches!(
        s.watch("k/", Some(1)),
        Err(StoreError::Compacted {
            requested: 1,
            oldest: 2
        })
    ));
    // A transaction bigger than the history: kept whole or not at all.
    s.apply(
        (0..5u8)
            .map(|i| Op::Put(format!("big/{i}"), vec![i]))
            .collect(),
    )?;
    assert!(matches!(
        s.watch("", Some(5)),
        Err(StoreError::Compacted { oldest: 6, .. })
    ));
    s.compact(100)?;
    // Compacting past the present is clamped: watching from now still works.
    let mut now = s.watch("", None)?;
    s.apply(vec![Op::Put("after".into(), vec![])])?;
    assert_eq!(next_event(&mut now).revision, 7);
    Ok(())
}

#[test]
fn dropped_watchers_are_cleaned_up() -> Result<()> {
    let dir = TempDir::new();
    let s = RedbStore::open(&dir.file("s.redb"))?;
    let keep = s.watch("a/", None)?;
    for _ in 0..100 {
        drop(s.watch("a/", None)?);
    }
    assert_eq!(s.watchers(), 1);
    let mut dropped_later: Vec<Watcher> = (0..10)
        .map(|_| s.watch("b/", None))
        .collect::<Result<_>>()?;
    dropped_later.clear();
    // Cleaned on the next event, even for watchers whose prefix it does not match.
    s.apply(vec![Op::Put("a/1".into(), vec![])])?;
    assert_eq!(lock(&s.state).hub.held(), 1);
    drop(keep);
    assert_eq!(s.watchers(), 0);
    Ok(())
}

#[test]
fn newer_layout_is_refused() -> Result<()> {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    drop(RedbStore::open(&path)?);
    {
        let db = Database::create(&path).map_err(io("test: open"))?;
        let txn = db.begin_write().map_err(io("test: write"))?;
        {
            let mut t = txn.open_table(STORE_META).map_err(io("test: write"))?;
            t.insert(LAYOUT_KEY, LAYOUT_VERSION + 1)
                .map_err(io("test: write"))?;
        }
        txn.commit().map_err(io("test: commit"))?;
    }
    match RedbStore::open(&path) {
        Err(e @ StoreError::Layout { .. }) => assert!(e.to_string().contains("upgrade berth")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a newer layout must be refused"),
    }
    Ok(())
}

#[test]
fn watch_async_recv_works_in_a_runtime() -> Result<()> {
    let dir = TempDir::new();
    let s = Arc::new(RedbStore::open(&dir.file("s.redb"))?);
    let mut w = s.watch("", None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| StoreError::Io {
            op: "test: runtime",
            msg: e.to_string(),
        })?;
    let writer = s.clone();
    let got = rt.block_on(async move {
        let task =
            tokio::task::spawn_blocking(move || writer.apply(vec![Op::Put("x".into(), vec![1])]));
        let e = w.recv().await;
        (e, task.await)
    });
    let (event, written) = got;
    assert!(matches!(written, Ok(Ok(()))));
    assert_eq!(event.map(|e| e.key), Some("x".to_string()));
    drop(s);
    Ok(())
}
