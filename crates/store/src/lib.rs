//! berth-store: where berth keeps its desired state.
//!
//! A tiny key/value contract ([`Store`]): values are JSON documents under `kind/id` keys, every
//! change is one atomic transaction of puts and deletes. The embedded backend is redb (one file
//! under the state dir, crash-safe, no server); a cluster backend (etcd) can implement the same
//! trait later without the daemon changing.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

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
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One write in a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or replace `key`.
    Put(String, Vec<u8>),
    /// Remove `key` (no error when absent).
    Delete(String),
}

impl Op {
    /// A put of `value` serialized as JSON.
    pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> Op {
        // Serializing our own plain structs to JSON cannot fail (no maps with non-string keys).
        Op::Put(key.into(), serde_json::to_vec(value).unwrap_or_default())
    }
}

/// The store contract the daemon codes against.
pub trait Store: Send + Sync {
    /// The value under `key`.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Applies all `ops` atomically: all or nothing.
    fn apply(&self, ops: Vec<Op>) -> Result<()>;
    /// A short description (`redb:/var/lib/berth/state.redb`).
    fn describe(&self) -> String;
}

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    /// Decodes the JSON document under `key`.
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Decode {
                        key: key.to_string(),
                        source,
                    })
            }
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
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The embedded backend: one redb file.
pub struct RedbStore {
    db: Database,
    path: String,
}

fn io(op: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Io {
        op,
        msg: e.to_string(),
    }
}

impl RedbStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<RedbStore> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        // Create the table up front so reads on a fresh store see an empty table, not an error.
        let txn = db.begin_write().map_err(|e| io("begin")(e.into()))?;
        txn.open_table(KV).map_err(|e| io("open table")(e.into()))?;
        txn.commit().map_err(|e| io("commit")(e.into()))?;
        Ok(RedbStore {
            db,
            path: path.display().to_string(),
        })
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(|e| io("read")(e.into()))?;
        let table = txn.open_table(KV).map_err(|e| io("read")(e.into()))?;
        let value = table.get(key).map_err(|e| io("read")(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(|e| io("list")(e.into()))?;
        let table = txn.open_table(KV).map_err(|e| io("list")(e.into()))?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| io("list")(e.into()))? {
            let (k, v) = item.map_err(|e| io("list")(e.into()))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| io("write")(e.into()))?;
        {
            let mut table = txn.open_table(KV).map_err(|e| io("write")(e.into()))?;
            for op in &ops {
                match op {
                    Op::Put(k, v) => {
                        table
                            .insert(k.as_str(), v.as_slice())
                            .map_err(|e| io("write")(e.into()))?;
                    }
                    Op::Delete(k) => {
                        table
                            .remove(k.as_str())
                            .map_err(|e| io("write")(e.into()))?;
                    }
                }
            }
        }
        // Dropping an uncommitted WriteTransaction aborts it: a failed op above leaves nothing.
        txn.commit().map_err(|e| io("commit")(e.into()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("redb:{}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_list_delete_are_atomic_and_prefix_scoped() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("berth-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("s.redb");
        let _ = std::fs::remove_file(&path);
        let s = RedbStore::open(&path)?;
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
        drop(s);
        // Reopen: durable.
        let s = RedbStore::open(&path)?;
        assert_eq!(s.list("").map(|v| v.len())?, 2);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
