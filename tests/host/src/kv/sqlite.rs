//! Spin 4.0.2's SQLite key-value store (`type = "spin"`), modelled from its
//! `key-value-spin` crate rather than its API, because that is where the cost and the
//! hazards are:
//!
//! - one SQLite connection per `[key_value_store.<label>]` table, behind one mutex, shared
//!   by every component and instance of the app (the rows carry the label in a `store` column);
//! - a file database is opened with SQLite's defaults (rollback journal, `synchronous=FULL`),
//!   so every `set`, `delete` and `increment` is its own transaction, synced to disk while
//!   the lock is held;
//! - get, set, delete, exists, increment and compare-and-swap take the lock inside
//!   `block_in_place`: the calling instance, with all the requests it is serving at once,
//!   stops until the lock is free;
//! - `spin:key-value` `get-keys` lists in `spawn_blocking`, **holding the lock for the whole
//!   listing**, and hands keys to the guest through a channel of four with a blocking send.
//!   If the instance that reads that stream is itself waiting for the lock (another of its
//!   requests called `get`), neither can move: on Spin that is a hang for good.
//!
//! One deliberate difference: Spin waits for the lock forever, this model for at most
//! [`LOCK_WAIT_LIMIT`] (or the app's setting). Past it the waiting call traps its instance
//! with a message saying Spin would hang here, which fails the test that caused it instead
//! of hanging the test run.

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::{blocking, counter_value, KeyStream, StoreBackend, StoreError};

/// How long a call waits for the store lock before the model calls it a deadlock.
pub const LOCK_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// What Spin's listing channel holds before its blocking send waits for the reader.
const KEY_CHANNEL_SLOTS: usize = 4;

/// The connection of one store manager, shared by the labels' store handles.
pub struct SharedConnection {
    conn: Mutex<Connection>,
    lock_limit: Duration,
    /// For messages: the label and where the database lives.
    name: String,
}

impl SharedConnection {
    /// Opens the database as Spin does: the file (creating its directory) or memory.
    pub fn open(label: &str, path: Option<&Path>, lock_limit: Duration) -> anyhow::Result<Arc<Self>> {
        let conn = match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Connection::open(path)?
            }
            None => Connection::open_in_memory()?,
        };
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                 store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (store, key))",
            [],
        )?;
        let place = path.map_or("memory".to_string(), |p| p.display().to_string());
        Ok(Arc::new(SharedConnection {
            conn: Mutex::new(conn),
            lock_limit,
            name: format!("key-value store {label:?} ({place})"),
        }))
    }

    fn deadlock(&self) -> StoreError {
        StoreError::Trap(format!(
            "{}: waited {:?} for the store lock; on Spin 4.0.2 this call would never return \
             (deadlock: a key listing holds the lock while its reader waits for it)",
            self.name, self.lock_limit
        ))
    }

    /// Runs `f` under the lock, blocking the calling instance's thread as Spin does.
    fn locked<R>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        blocking(|| {
            let mut conn = self.conn.try_lock_for(self.lock_limit).ok_or_else(|| self.deadlock())?;
            f(&mut conn).map_err(|e| StoreError::Other(e.to_string()))
        })
    }
}

/// One label's view of its manager's connection.
pub struct SqliteStore {
    label: String,
    shared: Arc<SharedConnection>,
}

impl SqliteStore {
    pub fn new(label: &str, shared: Arc<SharedConnection>) -> SqliteStore {
        SqliteStore { label: label.to_string(), shared }
    }
}

const SELECT: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const UPSERT: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                      ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";

fn select(conn: &Connection, label: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(SELECT)?.query_row([label, key], |row| row.get(0)).optional()
}

fn upsert(conn: &Connection, label: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(UPSERT)?.execute(rusqlite::params![label, key, value]).map(drop)
}

impl StoreBackend for SqliteStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.locked(|conn| select(conn, &self.label, key))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.shared.locked(|conn| upsert(conn, &self.label, key, value))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.shared.locked(|conn| {
            conn.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .execute([&self.label, key])
                .map(drop)
        })
    }

    /// `wasi:keyvalue` `list-keys`: collected under the lock, in one blocking call.
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.shared.locked(|conn| {
            let mut stmt = conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
            let keys = stmt.query_map([&self.label], |row| row.get(0))?.collect();
            keys
        })
    }

    /// `spin:key-value` `get-keys`: streamed from a blocking task that holds the lock
    /// until the last key has been taken by the guest.
    fn stream_keys(&self) -> KeyStream {
        let (keys_tx, keys) = mpsc::channel(KEY_CHANNEL_SLOTS);
        let (done_tx, done) = oneshot::channel();
        let shared = self.shared.clone();
        let label = self.label.clone();
        tokio::task::spawn_blocking(move || {
            let listing = || -> Result<(), StoreError> {
                let conn = shared.conn.try_lock_for(shared.lock_limit).ok_or_else(|| shared.deadlock())?;
                let other = |e: rusqlite::Error| StoreError::Other(e.to_string());
                let mut stmt = conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1").map_err(other)?;
                let mut rows = stmt.query([&label]).map_err(other)?;
                while let Some(row) = rows.next().map_err(other)? {
                    let key: String = row.get(0).map_err(other)?;
                    keys_tx.blocking_send(key).map_err(|_| StoreError::Other("the key stream was dropped".into()))?;
                }
                Ok(())
            };
            let _ = done_tx.send(listing());
        });
        KeyStream { keys, done }
    }

    /// One transaction: read, add, write back (8-byte little-endian, as Spin stores it).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut outcome = Ok(0);
        self.shared.locked(|conn| {
            let tx = conn.transaction()?;
            let current = select(&tx, &self.label, key)?;
            outcome = counter_value(key, current.as_deref()).map(|n| n.wrapping_add(delta));
            if let Ok(new) = outcome {
                upsert(&tx, &self.label, key, &new.to_le_bytes())?;
            }
            tx.commit()
        })?;
        outcome
    }

    /// With a snapshot, an `UPDATE ... WHERE value = snapshot`; without, an upsert.
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError> {
        self.shared.locked(|conn| match expected {
            Some(expected) => conn
                .prepare_cached("UPDATE spin_key_value SET value = ?1 WHERE store = ?2 AND key = ?3 AND value = ?4")?
                .execute(rusqlite::params![value, &self.label, key, expected])
                .map(|rows| rows == 1),
            None => upsert(conn, &self.label, key, value).map(|()| true),
        })
    }

    fn clear(&self) {
        let conn = self.shared.conn.lock();
        let _ = conn.execute("DELETE FROM spin_key_value WHERE store = ?1", [&self.label]);
    }
}
