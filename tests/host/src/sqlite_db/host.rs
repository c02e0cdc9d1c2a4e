//! The guest-facing side: `spin:sqlite/sqlite@3.1.0` for one instance, as Spin's
//! `factor-sqlite` serves it. Every function is async on the host, as Spin binds them: the
//! synchronous ones (`open`, `execute`, `changes`, ...) hold the calling instance until they
//! return, while the `-async` ones let its other requests run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use super::connection::{Connection, Failure};
use super::SqliteDatabases;
use crate::bindings::spin::sqlite::sqlite as v3;
use crate::channel_stream::ChannelProducer;

/// Spin's limit of open connections per instance.
const MAX_CONNECTIONS: usize = 256;

/// Per-instance SQLite state: which labels the component may open, and its connections.
pub struct SqliteAccess {
    allowed: Arc<HashSet<String>>,
    databases: Arc<SqliteDatabases>,
    pub(super) connections: HashMap<u32, Arc<Connection>>,
    /// The next handle to try; handles are not reused until the counter wraps, as in Spin.
    next_handle: u32,
}

impl SqliteAccess {
    pub fn new(allowed: Arc<HashSet<String>>, databases: Arc<SqliteDatabases>) -> SqliteAccess {
        SqliteAccess { allowed, databases, connections: HashMap::new(), next_handle: 0 }
    }

    pub(super) fn open_label(&mut self, label: &str) -> Result<Resource<v3::Connection>, v3::Error> {
        if !self.allowed.contains(label) {
            return Err(v3::Error::AccessDenied);
        }
        let db = self.databases.0.get(label).ok_or(v3::Error::NoSuchDatabase)?;
        let connection = Arc::new(db.connect());
        if self.connections.len() >= MAX_CONNECTIONS {
            return Err(v3::Error::Io("too many connections opened".into()));
        }
        while self.connections.contains_key(&self.next_handle) {
            self.next_handle = self.next_handle.wrapping_add(1);
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        self.connections.insert(handle, connection);
        Ok(Resource::new_own(handle))
    }

    fn connection(&self, this: &Resource<v3::Connection>) -> Result<Arc<Connection>, v3::Error> {
        self.connections.get(&this.rep()).cloned().ok_or(v3::Error::InvalidConnection)
    }
}

/// A result for the guest: `Ok(Ok(_))`, an error it sees, or a trap.
fn outcome<T>(result: Result<T, Failure>) -> wasmtime::Result<Result<T, v3::Error>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(Failure::Guest(e)) => Ok(Err(e)),
        Err(Failure::Trap(msg)) => Err(wasmtime::format_err!("{msg}")),
    }
}

/// `changes` and `last-insert-rowid` have no error in WIT: Spin traps on any failure.
fn or_trap<T>(result: Result<T, Failure>) -> wasmtime::Result<T> {
    match outcome(result)? {
        Ok(v) => Ok(v),
        Err(e) => Err(wasmtime::format_err!("spin:sqlite: {e:?}")),
    }
}

/// The `HasData` marker the SQLite bindings are registered with.
pub struct SqliteHost;

impl HasData for SqliteHost {
    type Data<'a> = &'a mut SqliteAccess;
}

impl v3::Host for SqliteAccess {}

impl v3::HostConnection for SqliteAccess {
    async fn open(&mut self, database: String) -> wasmtime::Result<Result<Resource<v3::Connection>, v3::Error>> {
        Ok(self.open_label(&database))
    }

    async fn execute(
        &mut self,
        this: Resource<v3::Connection>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> wasmtime::Result<Result<v3::QueryResult, v3::Error>> {
        match self.connection(&this) {
            Ok(connection) => outcome(connection.query(statement, parameters).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn last_insert_rowid(&mut self, this: Resource<v3::Connection>) -> wasmtime::Result<i64> {
        or_trap(self.connection(&this).map_err(Failure::Guest).and_then(|c| c.last_insert_rowid()))
    }

    async fn changes(&mut self, this: Resource<v3::Connection>) -> wasmtime::Result<u64> {
        or_trap(self.connection(&this).map_err(Failure::Guest).and_then(|c| c.changes()))
    }

    async fn drop(&mut self, this: Resource<v3::Connection>) -> wasmtime::Result<()> {
        self.connections.remove(&this.rep());
        Ok(())
    }
}

impl v3::HostConnectionWithStore for SqliteHost {
    async fn open_async<T>(
        acc: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<v3::Connection>, v3::Error>> {
        Ok(acc.with(|mut a| a.get().open_label(&database)))
    }

    async fn execute_async<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Connection>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> wasmtime::Result<
        Result<(Vec<String>, StreamReader<v3::RowResult>, FutureReader<Result<(), v3::Error>>), v3::Error>,
    > {
        let connection = match acc.with(|mut a| a.get().connection(&this)) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let stream = match outcome(connection.query_stream(statement, parameters).await)? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let done = stream.done;
        let outcome = async move {
            match done.await {
                Ok(result) => outcome(result),
                Err(_) => Err(wasmtime::format_err!("spin:sqlite: the query task stopped without an outcome")),
            }
        };
        let readers = acc.with(|mut a| -> wasmtime::Result<_> {
            let rows = StreamReader::new(&mut a, ChannelProducer(stream.rows))?;
            let outcome = FutureReader::new(&mut a, outcome)?;
            Ok((rows, outcome))
        });
        Ok(match readers {
            Ok((rows, outcome)) => Ok((stream.columns, rows, outcome)),
            Err(e) => Err(v3::Error::Io(e.to_string())),
        })
    }

    async fn changes_async<T>(acc: &Accessor<T, Self>, this: Resource<v3::Connection>) -> wasmtime::Result<u64> {
        let connection = acc.with(|mut a| a.get().connection(&this));
        or_trap(connection.map_err(Failure::Guest).and_then(|c| c.changes()))
    }

    async fn last_insert_rowid_async<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Connection>,
    ) -> wasmtime::Result<i64> {
        let connection = acc.with(|mut a| a.get().connection(&this));
        or_trap(connection.map_err(Failure::Guest).and_then(|c| c.last_insert_rowid()))
    }
}
