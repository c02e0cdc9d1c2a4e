//! One connection as Spin 4.0.2's in-process driver (`spin-sqlite-inproc`) runs it:
//!
//! - the SQLite connection is opened lazily, on the first call that needs it, on the calling
//!   (async) thread, and lives behind this connection's own mutex;
//! - `execute` runs the statement in `spawn_blocking` under that mutex and collects every row
//!   (at most 128 MiB of values in all);
//! - `execute-async` runs it in `spawn_blocking` too, hands the column names back first, then
//!   sends the rows through a channel of four with a blocking send **while holding the
//!   mutex**, so the connection stays locked until the guest has read every row (or dropped
//!   the stream); one row over 128 MiB fails the query;
//! - `changes` and `last-insert-rowid` take the mutex on the calling thread itself.
//!
//! One deliberate difference: Spin waits for the mutex forever, this model for at most the
//! database's lock limit; past it the call traps with a message saying Spin would hang here.

use parking_lot::{Mutex, MutexGuard};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

use super::Database;
use crate::bindings::spin::sqlite::sqlite as v3;

/// Spin's `MAX_HOST_BUFFERED_BYTES`: the most a query result (`execute`) or one row
/// (`execute-async`) may hold.
const MAX_RESULT_BYTES: usize = 128 << 20;

/// What the row channel holds before the query's blocking send waits for the reader.
const ROW_CHANNEL_SLOTS: usize = 4;

/// Why a call failed: an error the guest sees, or a trap (where Spin panics or hangs).
#[derive(Debug, Clone)]
pub enum Failure {
    Guest(v3::Error),
    Trap(String),
}

fn io(message: impl Into<String>) -> Failure {
    Failure::Guest(v3::Error::Io(message.into()))
}

fn sql_error(e: rusqlite::Error) -> Failure {
    io(e.to_string())
}

/// A streamed query: its columns, its rows, and its outcome once the last row is sent.
pub struct RowStream {
    pub columns: Vec<String>,
    pub rows: mpsc::Receiver<v3::RowResult>,
    pub done: oneshot::Receiver<Result<(), Failure>>,
}

/// What a guest's `open` returns: its own connection to the label's database.
pub struct Connection {
    db: Arc<Database>,
    sqlite: OnceLock<Arc<Mutex<rusqlite::Connection>>>,
}

impl Connection {
    pub(super) fn new(db: Arc<Database>) -> Connection {
        Connection { db, sqlite: OnceLock::new() }
    }

    /// The SQLite connection, opened on first use.
    fn sqlite(&self) -> Result<Arc<Mutex<rusqlite::Connection>>, Failure> {
        if let Some(conn) = self.sqlite.get() {
            return Ok(conn.clone());
        }
        let opened = self.db.open_sqlite().map_err(sql_error)?;
        Ok(self.sqlite.get_or_init(|| Arc::new(Mutex::new(opened))).clone())
    }

    /// `execute`: the whole result, collected in a blocking task.
    pub async fn query(&self, sql: String, params: Vec<v3::Value>) -> Result<v3::QueryResult, Failure> {
        self.db.count(|c| c.statements += 1);
        let sqlite = self.sqlite()?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let conn = lock(&db, &sqlite)?;
            collect_rows(&conn, &sql, params)
        })
        .await
        .map_err(|e| io(format!("internal runtime error: {e}")))?
    }

    /// `execute-async`: returns once the blocking task holds the lock and has prepared the
    /// statement; the rows follow through the stream.
    pub async fn query_stream(&self, sql: String, params: Vec<v3::Value>) -> Result<RowStream, Failure> {
        self.db.count(|c| c.statements += 1);
        let sqlite = self.sqlite()?;
        let db = self.db.clone();
        let (columns_tx, columns_rx) = oneshot::channel();
        let (rows_tx, rows) = mpsc::channel(ROW_CHANNEL_SLOTS);
        let (done_tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(stream_rows(&db, &sqlite, &sql, params, columns_tx, &rows_tx));
        });
        match columns_rx.await {
            Ok(columns) => Ok(RowStream { columns, rows, done }),
            // The task gave up before preparing: it waited too long for the lock.
            Err(e) => Err(match done.await {
                Ok(Err(failure)) => failure,
                _ => io(e.to_string()),
            }),
        }
    }

    pub fn changes(&self) -> Result<u64, Failure> {
        let sqlite = self.sqlite()?;
        let conn = lock(&self.db, &sqlite)?;
        Ok(conn.changes())
    }

    pub fn last_insert_rowid(&self) -> Result<i64, Failure> {
        let sqlite = self.sqlite()?;
        let conn = lock(&self.db, &sqlite)?;
        Ok(conn.last_insert_rowid())
    }
}

/// Waits for the connection's lock, blocking the calling thread as Spin's `Mutex::lock` does.
fn lock<'a>(
    db: &Database,
    sqlite: &'a Mutex<rusqlite::Connection>,
) -> Result<MutexGuard<'a, rusqlite::Connection>, Failure> {
    sqlite.try_lock_for(db.lock_limit).ok_or_else(|| {
        Failure::Trap(format!(
            "{}: waited {:?} for a connection's lock; on Spin 4.0.2 this call would never return \
             (deadlock: a query on the same connection keeps the lock until its rows are read)",
            db.describe(),
            db.lock_limit
        ))
    })
}

fn collect_rows(conn: &rusqlite::Connection, sql: &str, params: Vec<v3::Value>) -> Result<v3::QueryResult, Failure> {
    let mut statement = conn.prepare_cached(sql).map_err(sql_error)?;
    let columns = column_names(&statement);
    let mut rows = statement.query(rusqlite::params_from_iter(params.into_iter().map(to_sql))).map_err(sql_error)?;
    let mut bytes = std::mem::size_of::<v3::QueryResult>();
    let mut collected = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        let row = from_row(row)?;
        bytes += row_bytes(&row);
        if bytes > MAX_RESULT_BYTES {
            return Err(too_large());
        }
        collected.push(row);
    }
    Ok(v3::QueryResult { columns, rows: collected })
}

fn stream_rows(
    db: &Database,
    sqlite: &Mutex<rusqlite::Connection>,
    sql: &str,
    params: Vec<v3::Value>,
    columns_tx: oneshot::Sender<Vec<String>>,
    rows_tx: &mpsc::Sender<v3::RowResult>,
) -> Result<(), Failure> {
    let conn = lock(db, sqlite)?;
    let mut statement = match conn.prepare_cached(sql) {
        Ok(s) => s,
        Err(e) => {
            // As in Spin: no columns, and the error arrives through the outcome.
            let _ = columns_tx.send(Vec::new());
            return Err(sql_error(e));
        }
    };
    columns_tx.send(column_names(&statement)).map_err(|_| io("column send error"))?;
    let mut rows = statement.query(rusqlite::params_from_iter(params.into_iter().map(to_sql))).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let row = from_row(row)?;
        if row_bytes(&row) > MAX_RESULT_BYTES {
            return Err(too_large());
        }
        rows_tx.blocking_send(row).map_err(|_| io("row send error"))?;
    }
    Ok(())
}

fn column_names(statement: &rusqlite::Statement<'_>) -> Vec<String> {
    statement.column_names().into_iter().map(str::to_owned).collect()
}

fn too_large() -> Failure {
    io(format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes"))
}

/// Spin's `Value::memory_size`, summed over a row.
fn row_bytes(row: &v3::RowResult) -> usize {
    let size = |v: &v3::Value| {
        std::mem::size_of::<v3::Value>()
            + match v {
                v3::Value::Text(t) => t.len(),
                v3::Value::Blob(b) => b.len(),
                _ => 0,
            }
    };
    row.values.iter().map(size).sum()
}

pub(super) fn to_sql(value: v3::Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as Sql;
    match value {
        v3::Value::Integer(i) => Sql::Integer(i),
        v3::Value::Real(r) => Sql::Real(r),
        v3::Value::Text(t) => Sql::Text(t),
        v3::Value::Blob(b) => Sql::Blob(b),
        v3::Value::Null => Sql::Null,
    }
}

pub(super) fn from_row(row: &rusqlite::Row<'_>) -> Result<v3::RowResult, Failure> {
    use rusqlite::types::ValueRef;
    let mut values = Vec::new();
    for i in 0..row.as_ref().column_count() {
        values.push(match row.get_ref(i).map_err(sql_error)? {
            ValueRef::Null => v3::Value::Null,
            ValueRef::Integer(i) => v3::Value::Integer(i),
            ValueRef::Real(r) => v3::Value::Real(r),
            ValueRef::Text(t) => v3::Value::Text(String::from_utf8(t.to_vec()).map_err(|_| {
                // Spin unwraps this conversion: its query task panics.
                Failure::Trap("a TEXT value is not UTF-8 (Spin 4.0.2's SQLite host panics on it)".into())
            })?),
            ValueRef::Blob(b) => v3::Value::Blob(b.to_vec()),
        });
    }
    Ok(v3::RowResult { values })
}
