//! The state in Spin's SQLite database `gateway` (`state_store = "sqlite"`).
//! Spin runs each query on its blocking pool and streams the rows back, so the
//! instance serves its other requests meanwhile (its key-value store blocks the
//! instance's thread for every call). But every request has a connection of its
//! own, and SQLite makes a writer that finds the database locked sleep and try
//! again (1, 2, 5, 10 ms ...), which under many concurrent writes is what the
//! slowest requests wait for (BENCHMARKS.md).
//!
//! Spin opens a new SQLite connection for every `open`, so one request uses one
//! connection for all its queries, and the database must be a file (an in-memory
//! one would be a new, empty database per request). Each connection sets
//! `synchronous = NORMAL`: in WAL mode a commit then appends to the log without
//! waiting for the disk, and a crash can lose only the last few increments.
//! The tables are created by the first query that misses them.

use spin_sdk::sqlite::{Connection, Error, RowResult, Value};
use std::collections::BTreeMap;

use super::key_value::Failed;

/// The database label in `sqlite_databases` and the runtime config.
pub const LABEL: &str = "gateway";

const SCHEMA: [&str; 4] = [
    // Readers never wait for the writer, and a commit is one append to the log.
    // Persistent: set once, by whoever creates the tables.
    "PRAGMA journal_mode = WAL",
    // Counters (integers) and the breaker's state (a blob).
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value NOT NULL)",
    // Cache entries in a bounded set of slots, each entry carrying its own key and expiry.
    "CREATE TABLE IF NOT EXISTS cache (slot TEXT PRIMARY KEY, entry BLOB NOT NULL)",
    // In-flight leases: how many requests have asked for each.
    "CREATE TABLE IF NOT EXISTS leases (key TEXT PRIMARY KEY, takers INTEGER NOT NULL)",
];

pub struct Database(Connection);

impl Database {
    pub async fn open() -> Result<Database, Failed> {
        let connection = Connection::open(LABEL).await.map_err(|_| Failed)?;
        let db = Database(connection);
        db.run("PRAGMA synchronous = NORMAL", vec![]).await?;
        Ok(db)
    }

    /// Runs one statement and reads all its rows (the host holds the connection
    /// until they are read). A missing table is created, and the statement retried.
    async fn run(&self, statement: &str, parameters: Vec<Value>) -> Result<Vec<RowResult>, Failed> {
        match self.query(statement, parameters.clone()).await {
            Err(Error::Io(why)) if why.contains("no such table") => {
                for schema in SCHEMA {
                    // A concurrent first request may be creating them too: IF NOT EXISTS.
                    let _ = self.query(schema, vec![]).await;
                }
                self.query(statement, parameters).await.map_err(|_| Failed)
            }
            result => result.map_err(|_| Failed),
        }
    }

    async fn query(&self, statement: &str, parameters: Vec<Value>) -> Result<Vec<RowResult>, Error> {
        self.0.execute(statement, parameters).await?.collect().await
    }

    /// Adds `delta` and returns the new value.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, Failed> {
        let rows = self
            .run(
                "INSERT INTO counters (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = value + excluded.value RETURNING value",
                vec![text(key), Value::Integer(delta)],
            )
            .await?;
        rows.first().and_then(|row| row.get::<i64>(0)).ok_or(Failed)
    }

    /// One conditional statement: the count rises only while below `limit`, so
    /// concurrent reservations never pass it, and a spent limit writes nothing.
    pub async fn reserve(&self, key: &str, limit: i64) -> Result<bool, Failed> {
        let rows = self
            .run(
                "INSERT INTO counters (key, value) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET value = value + 1 WHERE value < ?2 RETURNING value",
                vec![text(key), Value::Integer(limit)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Adds every delta in one statement: one write per request, whatever it counted.
    pub async fn add_all(&self, increments: &BTreeMap<String, i64>) -> Result<(), Failed> {
        if increments.is_empty() {
            return Ok(());
        }
        let rows = vec!["(?, ?)"; increments.len()].join(", ");
        let statement = format!(
            "INSERT INTO counters (key, value) VALUES {rows} \
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
        );
        let parameters = increments.iter().flat_map(|(key, delta)| [text(key), Value::Integer(*delta)]).collect();
        self.run(&statement, parameters).await.map(drop)
    }

    /// A counter as the bytes the key-value encoding would hold (8 bytes,
    /// little-endian), or the blob stored under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failed> {
        let rows = self.run("SELECT value FROM counters WHERE key = ?1", vec![text(key)]).await?;
        Ok(rows.first().and_then(|row| match row.values.first() {
            Some(Value::Integer(n)) => Some(n.to_le_bytes().to_vec()),
            Some(Value::Blob(bytes)) => Some(bytes.clone()),
            _ => None,
        }))
    }

    pub async fn set(&self, key: &str, value: Value) -> Result<(), Failed> {
        self.run(
            "INSERT INTO counters (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![text(key), value],
        )
        .await
        .map(drop)
    }

    /// Every counter (not the blobs), for `/metrics`.
    pub async fn read_all(&self) -> Result<Vec<(String, i64)>, String> {
        let rows = self
            .run("SELECT key, value FROM counters WHERE typeof(value) = 'integer'", vec![])
            .await
            .map_err(|_| "reading the counters failed".to_string())?;
        Ok(rows.iter().filter_map(|row| Some((row.get::<&str>(0)?.to_string(), row.get::<i64>(1)?))).collect())
    }

    pub async fn cache_get(&self, slot: &str) -> Result<Option<Vec<u8>>, Failed> {
        let rows = self.run("SELECT entry FROM cache WHERE slot = ?1", vec![text(slot)]).await?;
        Ok(rows.first().and_then(|row| row.get::<&[u8]>(0)).map(<[u8]>::to_vec))
    }

    pub async fn cache_set(&self, slot: &str, entry: Vec<u8>) -> Result<(), Failed> {
        self.run(
            "INSERT INTO cache (slot, entry) VALUES (?1, ?2) ON CONFLICT (slot) DO UPDATE SET entry = excluded.entry",
            vec![text(slot), Value::Blob(entry)],
        )
        .await
        .map(drop)
    }

    /// Takes a turn on the lease: the first taker leads.
    pub async fn take_lease(&self, lease: &str) -> Result<bool, Failed> {
        let rows = self
            .run(
                "INSERT INTO leases (key, takers) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET takers = takers + 1 RETURNING takers",
                vec![text(lease)],
            )
            .await?;
        rows.first().and_then(|row| row.get::<i64>(0)).map(|takers| takers == 1).ok_or(Failed)
    }

    pub async fn lease_held(&self, lease: &str) -> Result<bool, Failed> {
        Ok(!self.run("SELECT 1 FROM leases WHERE key = ?1", vec![text(lease)]).await?.is_empty())
    }

    pub async fn release_lease(&self, lease: &str) -> Result<(), Failed> {
        self.run("DELETE FROM leases WHERE key = ?1", vec![text(lease)]).await.map(drop)
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
