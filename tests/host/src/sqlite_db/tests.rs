use super::connection::{Connection, Failure};
use super::*;
use crate::bindings::spin::sqlite::sqlite as v3;
use std::collections::HashSet;

/// `file` (a path), `memory` (none) and `default`, in a scratch directory.
fn databases(lock_limit: Duration) -> (ScratchDir, Arc<SqliteDatabases>) {
    let dir = ScratchDir::new().unwrap();
    let configs = [
        SqliteDatabaseConfig { label: "file".into(), path: Some("data/file.db".into()), allow_attach_file: false },
        SqliteDatabaseConfig { label: "memory".into(), path: None, allow_attach_file: false },
    ];
    let dbs = SqliteDatabases::new(&configs, dir.path(), lock_limit).unwrap();
    (dir, Arc::new(dbs))
}

fn open(dbs: &SqliteDatabases, label: &str) -> Connection {
    dbs.0[label].connect()
}

async fn run(conn: &Connection, sql: &str) -> Vec<v3::RowResult> {
    match conn.query(sql.into(), Vec::new()).await {
        Ok(result) => result.rows,
        Err(e) => panic!("{sql}: {e:?}"),
    }
}

/// Values in the test-facing type, which compares.
fn plain(values: &[v3::Value]) -> Vec<SqlValue> {
    let plain = |v: &v3::Value| match v {
        v3::Value::Integer(i) => SqlValue::Integer(*i),
        v3::Value::Real(r) => SqlValue::Real(*r),
        v3::Value::Text(t) => SqlValue::Text(t.clone()),
        v3::Value::Blob(b) => SqlValue::Blob(b.clone()),
        v3::Value::Null => SqlValue::Null,
    };
    values.iter().map(plain).collect()
}

const TEN_ROWS: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT i FROM n";

#[tokio::test(flavor = "multi_thread")]
async fn two_opens_of_a_file_database_see_each_others_writes() {
    let (dir, dbs) = databases(Duration::from_secs(5));
    let (a, b) = (open(&dbs, "file"), open(&dbs, "file"));
    run(&a, "CREATE TABLE t (x INTEGER)").await;
    run(&a, "INSERT INTO t VALUES (7)").await;
    assert_eq!(a.changes().unwrap(), 1);
    assert_eq!(plain(&run(&b, "SELECT x FROM t").await[0].values), vec![SqlValue::Integer(7)]);
    assert!(dir.path().join("data/file.db").exists());
    // A test sees it too, through its own connection; the guests' calls were counted.
    let handle = dbs.handle("file").unwrap();
    assert_eq!(handle.query("SELECT x FROM t").unwrap(), vec![vec![SqlValue::Integer(7)]]);
    assert_eq!(handle.ops(), SqliteOpCounts { opens: 2, statements: 3 });
}

#[tokio::test(flavor = "multi_thread")]
async fn every_open_of_a_memory_database_is_a_new_empty_database() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let (a, b) = (open(&dbs, "memory"), open(&dbs, "memory"));
    run(&a, "CREATE TABLE t (x INTEGER)").await;
    let Err(Failure::Guest(v3::Error::Io(msg))) = b.query("SELECT x FROM t".into(), Vec::new()).await else {
        panic!("the second connection must not see the first one's table")
    };
    assert!(msg.contains("no such table"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn values_round_trip_through_parameters() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let conn = open(&dbs, "memory");
    let values = vec![
        v3::Value::Integer(-3),
        v3::Value::Real(1.5),
        v3::Value::Text("é".into()),
        v3::Value::Blob(vec![0, 255]),
        v3::Value::Null,
    ];
    let result = conn.query("SELECT ?, ?, ?, ?, ?".into(), values.clone()).await.unwrap();
    assert_eq!(result.columns, vec!["?", "?", "?", "?", "?"]);
    assert_eq!(plain(&result.rows[0].values), plain(&values));
}

/// Four rows fit in the channel, so that query finishes unread; a fifth waits for the
/// reader, and meanwhile the query keeps the connection's lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_query_keeps_the_connection_locked_until_its_rows_are_read() {
    let (_dir, dbs) = databases(Duration::from_secs(10));
    let conn = Arc::new(open(&dbs, "memory"));

    let four = conn.query_stream(format!("{TEN_ROWS} LIMIT 4"), Vec::new()).await.unwrap();
    assert_eq!(four.columns, vec!["i"]);
    let done = tokio::time::timeout(Duration::from_secs(5), four.done).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "four unread rows must not hold the query");

    let mut five = conn.query_stream(format!("{TEN_ROWS} LIMIT 5"), Vec::new()).await.unwrap();
    let waiting = conn.clone();
    let second = tokio::spawn(async move { waiting.query("SELECT 1".into(), Vec::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second query must wait for the first one's reader");

    let mut read = Vec::new();
    while let Some(row) = five.rows.recv().await {
        read.push(row.values);
    }
    assert_eq!(read.len(), 5);
    assert!(matches!(five.done.await, Ok(Ok(()))));
    let second = tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
    assert_eq!(plain(&second.unwrap().rows[0].values), vec![SqlValue::Integer(1)]);
}

/// Waiting for a lock that the reader itself would have to free hangs Spin for good; the
/// model gives up after the lock limit and traps.
#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_an_unread_query_is_reported_as_a_deadlock() {
    let (_dir, dbs) = databases(Duration::from_millis(300));
    let conn = open(&dbs, "memory");
    let _unread = conn.query_stream(TEN_ROWS.into(), Vec::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Err(Failure::Trap(msg)) = conn.query_stream("SELECT 1".into(), Vec::new()).await else {
        panic!("expected a trap")
    };
    assert!(msg.contains("deadlock"), "{msg}");
    assert!(matches!(conn.changes(), Err(Failure::Trap(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_that_does_not_prepare_fails_through_the_outcome() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let conn = open(&dbs, "memory");
    let stream = conn.query_stream("SELEC nonsense".into(), Vec::new()).await.unwrap();
    assert!(stream.columns.is_empty());
    assert!(matches!(stream.done.await, Ok(Err(Failure::Guest(v3::Error::Io(m)))) if m.contains("syntax error")));
}

#[test]
fn open_checks_the_component_list_then_the_configuration() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let allowed: HashSet<String> = ["default", "memory", "ghost"].into_iter().map(String::from).collect();
    let mut access = SqliteAccess::new(Arc::new(allowed), dbs.clone());
    assert!(matches!(access.open_label("file"), Err(v3::Error::AccessDenied)), "configured but not listed");
    assert!(matches!(access.open_label("ghost"), Err(v3::Error::NoSuchDatabase)), "listed but not configured");
    assert!(access.open_label("default").is_ok());
    assert_eq!(dbs.handle("default").unwrap().ops().opens, 1);
    assert_eq!(dbs.handle("file").unwrap().ops().opens, 0);
}

#[test]
fn an_instance_may_hold_256_connections() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let mut access = SqliteAccess::new(Arc::new(HashSet::from(["memory".to_string()])), dbs);
    let handles: Vec<u32> = (0..256).map(|_| access.open_label("memory").unwrap().rep()).collect();
    assert!(matches!(access.open_label("memory"), Err(v3::Error::Io(m)) if m == "too many connections opened"));
    access.connections.remove(&handles[0]);
    assert!(access.open_label("memory").is_ok(), "a dropped connection frees its slot");
}

#[test]
fn default_is_a_file_in_the_state_directory_and_paths_resolve_against_the_directory() {
    let (dir, dbs) = databases(Duration::from_secs(5));
    assert_eq!(dbs.handle("default").unwrap().path(), Some(dir.path().join(".spin/sqlite_db.db").as_path()));
    assert_eq!(dbs.handle("file").unwrap().path(), Some(dir.path().join("data/file.db").as_path()));
    assert_eq!(dbs.handle("memory").unwrap().path(), None);
    let absolute = dir.path().join("abs.db");
    let config = SqliteDatabaseConfig { label: "abs".into(), path: Some(absolute.clone()), allow_attach_file: false };
    let elsewhere = ScratchDir::new().unwrap();
    let dbs = SqliteDatabases::new(&[config], elsewhere.path(), Duration::from_secs(1)).unwrap();
    assert_eq!(dbs.handle("abs").unwrap().path(), Some(absolute.as_path()), "an absolute path stays as written");
}

#[test]
fn attaching_a_file_needs_allow_attach_file() {
    let (dir, dbs) = databases(Duration::from_secs(5));
    let attach = format!("ATTACH DATABASE '{}' AS other", dir.path().join("other.db").display());
    let err = dbs.handle("memory").unwrap().query(&attach).unwrap_err();
    assert!(format!("{err:#}").contains("not authorized"), "{err:#}");
    assert!(dbs.handle("memory").unwrap().query("ATTACH DATABASE ':memory:' AS scratch").is_ok());
}

#[test]
fn startup_refuses_components_that_list_unconfigured_databases() {
    let (_dir, dbs) = databases(Duration::from_secs(5));
    let manifest = |labels: &str| {
        let text = format!(
            "spin_manifest_version = 2\n[application]\nname = \"x\"\n[component.c]\nsource = \"c.wasm\"\n\
             sqlite_databases = {labels}\n"
        );
        Manifest::parse(&text, Path::new("/")).unwrap()
    };
    assert!(dbs.check_components(&manifest(r#"["default", "file", "memory"]"#)).is_ok());
    let err = dbs.check_components(&manifest(r#"["default", "gateway"]"#)).unwrap_err().to_string();
    assert!(
        err.contains("SQLite databases which are not defined") && err.contains("- Component c uses database 'gateway'"),
        "{err}"
    );
}
