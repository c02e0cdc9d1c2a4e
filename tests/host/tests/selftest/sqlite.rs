//! SQLite databases at startup: where their files go, and the labels Spin refuses.
//! The app has no route, so no component is compiled: these need no built wasm.

use crate::common::*;
use spin_test_host::{start_app, SqlValue};

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "sqlite"
[component.db]
source = "db.wasm"
sqlite_databases = ["default", "gateway"]
"#;

const RUNTIME_CONFIG: &str = r#"
[sqlite_database.gateway]
type = "spin"
path = "data/gateway.db"
"#;

#[tokio::test]
async fn a_component_listing_an_unconfigured_database_fails_startup() {
    let dir = TempDir::new("sqlite-missing");
    let err = start_app(options(&dir, dir.write("spin.toml", APP))).await.err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("- Component db uses database 'gateway'"), "{msg}");
}

#[tokio::test]
async fn without_a_database_dir_the_files_live_in_a_scratch_directory_removed_with_the_app() {
    let dir = TempDir::new("sqlite-scratch");
    let mut opts = options(&dir, dir.write("spin.toml", APP));
    opts.runtime_config = Some(dir.write("runtime-config.toml", RUNTIME_CONFIG));
    let app = start_app(opts).await.unwrap();

    let gateway = app.sqlite("gateway").unwrap();
    let file = gateway.path().unwrap().to_path_buf();
    assert!(file.ends_with("data/gateway.db") && !file.starts_with(dir.path()), "{}", file.display());
    let default = app.sqlite("default").unwrap();
    assert_eq!(default.path(), Some(file.parent().unwrap().parent().unwrap().join(".spin/sqlite_db.db").as_path()));
    assert!(app.sqlite("other").is_none());

    gateway.query("CREATE TABLE t (x TEXT)").unwrap();
    gateway.query_with("INSERT INTO t VALUES (?)", vec!["kept".into()]).unwrap();
    assert_eq!(gateway.query("SELECT x FROM t").unwrap(), vec![vec![SqlValue::Text("kept".into())]]);
    assert_eq!(gateway.ops().statements, 0, "a test's own queries are not counted");

    app.shutdown().await;
    assert!(!file.exists(), "the scratch directory goes with the app");
}

#[tokio::test]
async fn relative_paths_resolve_against_the_database_dir() {
    let dir = TempDir::new("sqlite-dir");
    let mut opts = options(&dir, dir.write("spin.toml", APP));
    opts.runtime_config = Some(dir.write("runtime-config.toml", RUNTIME_CONFIG));
    opts.database_dir = Some(dir.path().join("state"));
    let app = start_app(opts).await.unwrap();
    assert_eq!(app.sqlite("gateway").unwrap().path(), Some(dir.path().join("state/data/gateway.db").as_path()));
    assert_eq!(app.sqlite("default").unwrap().path(), Some(dir.path().join("state/.spin/sqlite_db.db").as_path()));
}
