//! The decoded documents under one store prefix (containers, their states), kept in memory and
//! brought up to date from the store's own change feed instead of a list of the prefix.
//!
//! At 1,000 containers every request listed every container document several times (a name
//! check, each DNS table rebuild, each full pass): a read transaction over 1,000 keys and
//! their metadata, and 1,000 specs cloned each time, most of berthd's CPU per `run -d`. The
//! index lists the prefix once, then applies the watch events of every later commit: the
//! embedded store publishes a commit's events to its watchers before the commit returns
//! (`berth_store::RedbStore`), so draining the watch at each call sees every write made
//! before it, like a list would. Callers get a shared snapshot (`Arc`), rebuilt only after a
//! change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_store::{EventKind, Store, StoreError, Watcher};
use serde::de::DeserializeOwned;

/// The documents under one prefix, decoded, by store key.
pub struct DocIndex<T> {
    prefix: &'static str,
    inner: Mutex<Option<Inner<T>>>,
}

struct Inner<T> {
    watcher: Watcher,
    /// By key without the prefix (a container id).
    docs: BTreeMap<String, Arc<T>>,
    /// The documents in key order (the order of a list), until the next change.
    snapshot: Option<Arc<[Arc<T>]>>,
    /// The same by key without the prefix, until the next change.
    keyed: Option<Arc<BTreeMap<String, Arc<T>>>>,
    /// The generation of the last change applied (of the listing, before any).
    generation: u64,
    /// The keys changed after `log_floor`, with the generation of each change, oldest first:
    /// what a follower ([`DocIndex::changes_since`]) needs to catch up without a list.
    log: VecDeque<(u64, String)>,
    /// Every change after this generation is in `log`.
    log_floor: u64,
}

/// Generations of every index: unique across indexes and reloads, so a follower's generation
/// from before a reload (whose log starts afresh) is never taken for one of the new log's.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

/// Changes kept for followers: more than any follower lets pass between two catch-ups (the
/// DNS table follows every create, start, exit and removal); one that fell further behind
/// starts over from the whole list.
const CHANGE_LOG: usize = 4096;

/// What changed under the prefix since a follower's generation: the generation it is now at
/// and each changed key once, with its document now (`None`: removed).
pub type Changes<T> = (u64, Vec<(String, Option<Arc<T>>)>);

impl<T: DeserializeOwned> DocIndex<T> {
    /// An index of the documents under `prefix`, filled on first use.
    pub fn new(prefix: &'static str) -> DocIndex<T> {
        DocIndex {
            prefix,
            inner: Mutex::new(None),
        }
    }

    /// Every document under the prefix, in key order, as of every write committed before
    /// this call.
    pub fn all(&self, store: &dyn Store) -> Result<Arc<[Arc<T>]>, StoreError> {
        self.with(store, |inner| {
            inner
                .snapshot
                .get_or_insert_with(|| inner.docs.values().cloned().collect())
                .clone()
        })
    }

    /// Every document under the prefix by its key without the prefix.
    pub fn all_keyed(
        &self,
        store: &dyn Store,
    ) -> Result<Arc<BTreeMap<String, Arc<T>>>, StoreError> {
        self.with(store, |inner| {
            inner
                .keyed
                .get_or_insert_with(|| Arc::new(inner.docs.clone()))
                .clone()
        })
    }

    /// The generation the index is at: a follower that reads every document after taking it
    /// and later asks [`DocIndex::changes_since`] with it misses no change (one made in
    /// between is read twice).
    pub fn generation(&self, store: &dyn Store) -> Result<u64, StoreError> {
        self.with(store, |inner| inner.generation)
    }

    /// The documents changed after generation `since` (see [`Changes`]); `None` when the index
    /// no longer knows (the follower fell more than [`CHANGE_LOG`] changes behind, or the
    /// index was listed again): the follower reads everything again.
    pub fn changes_since(
        &self,
        store: &dyn Store,
        since: u64,
    ) -> Result<Option<Changes<T>>, StoreError> {
        self.with(store, |inner| {
            if since < inner.log_floor {
                return None;
            }
            let keys: BTreeSet<&String> = inner
                .log
                .iter()
                .rev()
                .take_while(|(g, _)| *g > since)
                .map(|(_, k)| k)
                .collect();
            let changed = keys
                .into_iter()
                .map(|k| (k.clone(), inner.docs.get(k).cloned()))
                .collect();
            Some((inner.generation, changed))
        })
    }

    /// The document at `key` (without the prefix: a container id), if any.
    pub fn get(&self, store: &dyn Store, key: &str) -> Result<Option<Arc<T>>, StoreError> {
        self.with(store, |inner| inner.docs.get(key).cloned())
    }

    /// Runs `f` on the index once it holds every committed write.
    fn with<R>(
        &self,
        store: &dyn Store,
        f: impl FnOnce(&mut Inner<T>) -> R,
    ) -> Result<R, StoreError> {
        let mut slot = match self.inner.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let inner = match slot.take() {
            Some(inner) => inner,
            None => self.load(store)?,
        };
        // On a document that does not decode the index is dropped (the next call lists the
        // prefix again, and fails the same way a list would until the document is fixed).
        let mut inner = inner;
        self.catch_up(&mut inner)?;
        let out = f(&mut inner);
        *slot = Some(inner);
        Ok(out)
    }

    /// Subscribes, then lists: an event of a write between the two is applied on top of the
    /// listed value, in commit order, so the last one wins as in the store.
    fn load(&self, store: &dyn Store) -> Result<Inner<T>, StoreError> {
        let watcher = store.watch(self.prefix, None)?;
        let mut docs = BTreeMap::new();
        for (key, bytes) in store.list(self.prefix)? {
            let doc = decode(&key, &bytes)?;
            docs.insert(self.short(&key), Arc::new(doc));
        }
        let generation = next_generation();
        Ok(Inner {
            watcher,
            docs,
            snapshot: None,
            keyed: None,
            generation,
            log: VecDeque::new(),
            log_floor: generation,
        })
    }

    fn short(&self, key: &str) -> String {
        key.strip_prefix(self.prefix).unwrap_or(key).to_string()
    }

    /// Applies the events waiting in the watch.
    fn catch_up(&self, inner: &mut Inner<T>) -> Result<(), StoreError> {
        use tokio::sync::mpsc::error::TryRecvError;
        loop {
            match inner.watcher.try_recv() {
                Ok(ev) => {
                    inner.snapshot = None;
                    inner.keyed = None;
                    let key = self.short(&ev.key);
                    inner.generation = next_generation();
                    if inner.log.len() == CHANGE_LOG {
                        if let Some((g, _)) = inner.log.pop_front() {
                            inner.log_floor = g;
                        }
                    }
                    inner.log.push_back((inner.generation, key.clone()));
                    match (ev.kind, ev.value) {
                        (EventKind::Put, Some(bytes)) => {
                            let doc = decode(&ev.key, &bytes)?;
                            inner.docs.insert(key, Arc::new(doc));
                        }
                        _ => {
                            inner.docs.remove(&key);
                        }
                    }
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(StoreError::Io {
                        op: "watch",
                        msg: "the store's change feed ended".into(),
                    })
                }
            }
        }
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{Op, RedbStore, StoreExt};

    /// A store holding `c/a` = "A" (in a directory that lives as long as the first value)
    /// and an index of `c/`.
    fn with_a() -> (tempfile::TempDir, RedbStore, DocIndex<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        store
            .apply(vec![Op::put_json("c/a", &"A".to_string())])
            .expect("put");
        (dir, store, DocIndex::new("c/"))
    }

    fn keys(v: &[Arc<String>]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// After every kind of write the index answers what a fresh list answers.
    #[test]
    fn follows_every_write_like_a_list() {
        let (_dir, store, idx) = with_a();
        let list = |s: &RedbStore| -> Vec<String> { s.list_json("c/").expect("list") };
        assert_eq!(keys(&idx.all(&store).expect("all")), list(&store));
        let steps: Vec<Vec<Op>> = vec![
            vec![Op::put_json("c/b", &"B".to_string())],
            vec![Op::put_json("c/a", &"A2".to_string())],
            vec![Op::put_json("d/x", &"other prefix".to_string())],
            vec![
                Op::Delete("c/a".into()),
                Op::put_json("c/c", &"C".to_string()),
            ],
            vec![Op::put_json("c/c", &"C2".to_string())],
            vec![Op::Delete("c/nothing".into())],
        ];
        for ops in steps {
            store.apply(ops).expect("apply");
            assert_eq!(keys(&idx.all(&store).expect("all")), list(&store));
        }
        assert_eq!(
            idx.get(&store, "c").expect("get").as_deref(),
            Some(&"C2".to_string())
        );
        assert!(idx.get(&store, "a").expect("get").is_none());
        let keyed = idx.all_keyed(&store).expect("keyed");
        assert_eq!(keyed.keys().collect::<Vec<_>>(), vec!["b", "c"]);
    }

    /// A follower catches up from its generation: each changed key once with its document
    /// now, nothing when nothing changed, and `None` (read everything again) once the log no
    /// longer reaches back to it or the index was listed again.
    #[test]
    fn followers_get_the_changed_keys() {
        let (_dir, store, idx) = with_a();
        let g0 = idx.generation(&store).expect("generation");
        let (g, none) = idx.changes_since(&store, g0).expect("ok").expect("known");
        assert!(none.is_empty() && g == g0);
        store
            .apply(vec![
                Op::put_json("c/b", &"B".to_string()),
                Op::put_json("d/x", &"other prefix".to_string()),
            ])
            .expect("put");
        store
            .apply(vec![Op::put_json("c/b", &"B2".to_string())])
            .expect("put");
        store.apply(vec![Op::Delete("c/a".into())]).expect("delete");
        let (g1, changed) = idx.changes_since(&store, g0).expect("ok").expect("known");
        let changed: Vec<(String, Option<String>)> = changed
            .into_iter()
            .map(|(k, v)| (k, v.map(|v| v.to_string())))
            .collect();
        assert_eq!(
            changed,
            vec![
                ("a".to_string(), None),
                ("b".to_string(), Some("B2".to_string()))
            ]
        );
        assert!(g1 > g0);
        let (_, none) = idx.changes_since(&store, g1).expect("ok").expect("known");
        assert!(none.is_empty());
        // More changes than the log keeps: a follower at g1 must read everything again.
        for i in 0..=CHANGE_LOG {
            store
                .apply(vec![Op::put_json("c/b", &format!("B{i}"))])
                .expect("put");
        }
        assert!(idx.changes_since(&store, g1).expect("ok").is_none());
        // A reload (after a document that does not decode) starts a new log.
        let g2 = idx.generation(&store).expect("generation");
        store
            .apply(vec![Op::Put("c/x".into(), b"not json".to_vec())])
            .expect("put");
        assert!(idx.changes_since(&store, g2).is_err());
        store.apply(vec![Op::Delete("c/x".into())]).expect("delete");
        assert!(idx.changes_since(&store, g2).expect("ok").is_none());
    }

    /// A document that does not decode fails the call, as a list would, and a later fix of
    /// it is seen.
    #[test]
    fn a_bad_document_fails_until_fixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("s.redb")).expect("open");
        let idx: DocIndex<String> = DocIndex::new("c/");
        assert!(idx.all(&store).expect("all").is_empty());
        store
            .apply(vec![Op::Put("c/x".into(), b"not json".to_vec())])
            .expect("put");
        assert!(idx.all(&store).is_err());
        assert!(idx.all(&store).is_err());
        store
            .apply(vec![Op::put_json("c/x", &"ok".to_string())])
            .expect("put");
        assert_eq!(keys(&idx.all(&store).expect("all")), vec!["ok".to_string()]);
    }
}
