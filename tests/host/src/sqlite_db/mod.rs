//! SQLite databases with Spin 4.0.2's semantics, and the host side of
//! `spin:sqlite/sqlite@3.1.0` (`host.rs`).
//!
//! One database per `[sqlite_database.<label>]` of the runtime config (`type = "spin"`), plus
//! `default` unless configured. A database is a place, not a connection: **every `open`
//! makes a new connection** (`connection.rs`). For a file that means separate SQLite
//! connections to one file, serialised by SQLite's own file locking (busy timeout 5 s, then
//! "database is locked"); for memory it means every `open` gets its own empty database.
//!
//! Where the files are: a relative `path` resolves against the app's database directory
//! (Spin: its working directory), and `default` is `.spin/sqlite_db.db` in it (Spin: the
//! app's state directory, `.spin` beside `spin.toml`).
//!
//! A component may open only the labels in its `sqlite_databases`: any other is
//! `access-denied`, even one that exists; a listed label that is not configured fails
//! startup, as in Spin.

mod connection;
mod host;

use anyhow::{bail, Context as _, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::manifest::Manifest;
use crate::runtime_config::SqliteDatabaseConfig;

pub use host::{SqliteAccess, SqliteHost};

/// Where Spin keeps the `default` database, under the state directory's parent.
const DEFAULT_DATABASE_FILE: &str = ".spin/sqlite_db.db";

/// How many calls of each kind a database has served to components (a test's own
/// [`SqliteHandle::query`] is not counted).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOpCounts {
    /// `open` and `open-async` calls that made a connection.
    pub opens: u64,
    /// `execute` and `execute-async` calls on a valid connection.
    pub statements: u64,
}

impl std::ops::Sub for SqliteOpCounts {
    type Output = SqliteOpCounts;
    fn sub(self, before: SqliteOpCounts) -> SqliteOpCounts {
        SqliteOpCounts { opens: self.opens - before.opens, statements: self.statements - before.statements }
    }
}

/// A column value, as `spin:sqlite` carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> SqlValue {
        SqlValue::Integer(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> SqlValue {
        SqlValue::Text(v.to_string())
    }
}

impl From<SqlValue> for rusqlite::types::Value {
    fn from(v: SqlValue) -> rusqlite::types::Value {
        use rusqlite::types::Value as Sql;
        match v {
            SqlValue::Integer(i) => Sql::Integer(i),
            SqlValue::Real(r) => Sql::Real(r),
            SqlValue::Text(t) => Sql::Text(t),
            SqlValue::Blob(b) => Sql::Blob(b),
            SqlValue::Null => Sql::Null,
        }
    }
}

impl From<rusqlite::types::ValueRef<'_>> for SqlValue {
    fn from(v: rusqlite::types::ValueRef<'_>) -> SqlValue {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(r) => SqlValue::Real(r),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        }
    }
}

/// One label: where its database lives and how its connections behave.
pub struct Database {
    label: String,
    /// The file; `None` = a new in-memory database per connection.
    path: Option<PathBuf>,
    allow_attach_file: bool,
    /// How long a call waits for a connection's lock before the model reports a deadlock.
    lock_limit: Duration,
    counts: Mutex<SqliteOpCounts>,
}

impl Database {
    fn count(&self, op: impl FnOnce(&mut SqliteOpCounts)) {
        op(&mut self.counts.lock());
    }

    /// A guest's `open`: a new connection, which opens SQLite only when first used.
    fn connect(self: &Arc<Self>) -> connection::Connection {
        self.count(|c| c.opens += 1);
        connection::Connection::new(self.clone())
    }

    /// A new SQLite connection, with Spin's refusal to `ATTACH` files unless allowed.
    fn open_sqlite(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = match &self.path {
            Some(path) => rusqlite::Connection::open(path)?,
            None => rusqlite::Connection::open_in_memory()?,
        };
        if !self.allow_attach_file {
            conn.authorizer(Some(|ctx: rusqlite::hooks::AuthContext<'_>| {
                use rusqlite::hooks::{AuthAction, Authorization};
                match ctx.action {
                    AuthAction::Attach { filename } if !matches!(filename, "" | ":memory:") => Authorization::Deny,
                    _ => Authorization::Allow,
                }
            }));
        }
        Ok(conn)
    }

    fn describe(&self) -> String {
        let place = self.path.as_ref().map_or("memory".to_string(), |p| p.display().to_string());
        format!("SQLite database {:?} ({place})", self.label)
    }
}

/// All the databases of one app, by label.
pub struct SqliteDatabases(HashMap<String, Arc<Database>>);

impl SqliteDatabases {
    /// The runtime config's databases plus `default`, with relative paths under `dir`
    /// (whose directories are created, as Spin creates them).
    pub fn new(configs: &[SqliteDatabaseConfig], dir: &Path, lock_limit: Duration) -> Result<SqliteDatabases> {
        let default = SqliteDatabaseConfig {
            label: "default".into(),
            path: Some(PathBuf::from(DEFAULT_DATABASE_FILE)),
            allow_attach_file: false,
        };
        let mut map = HashMap::new();
        for config in configs.iter().chain([&default]) {
            if map.contains_key(&config.label) {
                continue;
            }
            let path = config.path.as_ref().map(|p| dir.join(p));
            if let Some(parent) = path.as_deref().and_then(Path::parent) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("failed to create sqlite database directory '{}'", parent.display()))?;
            }
            let db = Database {
                label: config.label.clone(),
                path,
                allow_attach_file: config.allow_attach_file,
                lock_limit,
                counts: Mutex::default(),
            };
            map.insert(config.label.clone(), Arc::new(db));
        }
        Ok(SqliteDatabases(map))
    }

    /// Spin refuses to start an app whose components list a database nobody configured.
    pub fn check_components(&self, manifest: &Manifest) -> Result<()> {
        let missing: Vec<String> = manifest
            .components
            .values()
            .flat_map(|c| c.sqlite_databases.iter().map(move |label| (&c.id, label)))
            .filter(|(_, label)| !self.0.contains_key(*label))
            .map(|(id, label)| format!("- Component {id} uses database '{label}'"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "One or more components use SQLite databases which are not defined.\n\
                 Check the spelling, or pass a runtime configuration file that defines these stores.\n\
                 Details:\n{}",
                missing.join("\n")
            );
        }
        Ok(())
    }

    pub fn handle(&self, label: &str) -> Option<SqliteHandle> {
        self.0.get(label).cloned().map(SqliteHandle)
    }
}

/// A test's view of one database.
#[derive(Clone)]
pub struct SqliteHandle(Arc<Database>);

impl SqliteHandle {
    /// The calls the components have made so far (take two and subtract).
    pub fn ops(&self) -> SqliteOpCounts {
        *self.0.counts.lock()
    }

    /// The database file; `None` for an in-memory label.
    pub fn path(&self) -> Option<&Path> {
        self.0.path.as_deref()
    }

    /// Runs one statement on a new connection, as another `open` would, and returns its rows.
    /// For an in-memory label that is a new, empty database: there is nothing to inspect.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<SqlValue>>> {
        self.query_with(sql, Vec::new())
    }

    /// [`query`](Self::query) with `?` parameters.
    pub fn query_with(&self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Vec<SqlValue>>> {
        let conn = self.0.open_sqlite()?;
        let mut statement = conn.prepare(sql)?;
        let width = statement.column_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(params.into_iter().map(rusqlite::types::Value::from)), |row| {
                (0..width).map(|i| row.get_ref(i).map(SqlValue::from)).collect::<rusqlite::Result<Vec<_>>>()
            })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A fresh directory for an app's database files, removed with the app.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> Result<ScratchDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("spin-test-host-sqlite-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests;
