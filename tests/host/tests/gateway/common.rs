//! The harness: the real spin.toml and runtime-config.toml, the built
//! components, a mock Ximilar on loopback, and requests whose every answer is
//! checked for leaked secrets as it arrives.

use serde_json::Value;
use spin_test_host::mock::{MockConfig, MockHandle, MockXimilar};
pub use spin_test_host::SqlValue;
use spin_test_host::{start_app, workspace_root, AppOptions, KvHandle, RunningApp, SqliteHandle};
use std::io::Write;

/// Distinctive so any echo of them is caught.
pub const TOKEN: &str = "tok-SECRET-e2e-7f3a9c";
pub const COLLECTION: &str = "col-SECRET-e2e-91bc40";

pub struct Gateway {
    pub app: RunningApp,
    pub mock: MockHandle,
    /// Its `state_store` variable: where [`Gateway::state`] looks.
    pub state_store: String,
    /// Holds this gateway's copy of runtime-config.toml and any store file it names.
    _state: StateDir,
}

/// A directory of its own per gateway, removed when dropped: the runtime config
/// is copied there, so a store `path` (relative to the runtime config, as in
/// Spin) never points two tests, or two runs, at one database file.
struct StateDir(std::path::PathBuf);

impl StateDir {
    fn new() -> StateDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ximilar-gw-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the state dir");
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The store a gateway keeps its cache in, for tests that look inside.
pub enum State {
    Sqlite(SqliteHandle),
    KeyValue(KvHandle),
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error `code` of a JSON error body (and that the body is exactly detail + code).
    pub fn code(&self) -> String {
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert!(obj["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        assert_eq!(obj.len(), 2, "error body has only detail and code: {v}");
        obj["code"].as_str().unwrap().to_string()
    }
}

/// A gateway on the real manifest, pointed at a fresh mock. `vars` override
/// application variables (like `spin up --variable`). Backoff is shortened so
/// retry tests are quick; the retry *count* rules are the production ones.
pub async fn gateway(vars: &[(&str, &str)]) -> Gateway {
    gateway_with(vars, |_| {}).await
}

/// A gateway whose state lives in files in `dir` (the SQLite database
/// `gateway.db`, or the key-value cache `cache.db`), so gateways started one
/// after another on the same `dir` share it, as restarts and replicas do.
pub async fn gateway_on_store(vars: &[(&str, &str)], dir: &std::path::Path) -> Gateway {
    let runtime_config = dir.join("runtime-config.toml");
    let text = "[sqlite_database.gateway]\ntype = \"spin\"\npath = \"gateway.db\"\n\
                [key_value_store.cache]\ntype = \"spin\"\npath = \"cache.db\"\n\
                [key_value_store.metrics]\ntype = \"spin\"\n";
    std::fs::write(&runtime_config, text).expect("write the runtime config");
    let dir = dir.to_path_buf();
    gateway_with(vars, |opts| {
        opts.runtime_config = Some(runtime_config);
        opts.database_dir = Some(dir);
        // Sharing a file between apps needs the SQLite model, whatever SPIN_TEST_HOST_KV says.
        opts.kv_backend = spin_test_host::KvBackend::Spin;
    })
    .await
}

/// A fresh directory for store files that several gateways share (see
/// [`gateway_on_store`]); the test removes it when done.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ximilar-gw-{tag}-{}-{:?}", std::process::id(), std::time::Instant::now()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where this run keeps the gateway's state: `XGW_E2E_STATE_STORE` (`key-value`, the
/// product's default, or `sqlite`), passed to every gateway as its `state_store`.
pub fn state_store() -> String {
    std::env::var("XGW_E2E_STATE_STORE").unwrap_or_else(|_| "key-value".into())
}

/// [`gateway`], with the host's options adjusted by `tune` before it starts.
pub async fn gateway_with(vars: &[(&str, &str)], tune: impl FnOnce(&mut AppOptions)) -> Gateway {
    let mock =
        MockXimilar::start(MockConfig { token: TOKEN.into(), collection_id: COLLECTION.into(), ..Default::default() })
            .await
            .expect("mock starts");
    let root = workspace_root();
    let mut opts = AppOptions::new(root.join("spin.toml"));
    let state = StateDir::new();
    let runtime_config = state.0.join("runtime-config.toml");
    std::fs::copy(root.join("runtime-config.toml"), &runtime_config).expect("copy runtime-config.toml");
    opts.runtime_config = Some(runtime_config);
    // Like Spin run from the app's directory: relative SQLite paths land in the state dir.
    opts.database_dir = Some(state.0.clone());
    let defaults = [
        ("state_store", state_store()),
        ("api_url", mock.url()),
        ("api_token", TOKEN.to_string()),
        ("collection_id", COLLECTION.to_string()),
        ("backoff_base_ms", "20".to_string()),
        ("backoff_max_ms", "100".to_string()),
    ];
    for (k, v) in defaults {
        opts.variables.insert(k.to_string(), v);
    }
    for (k, v) in vars {
        opts.variables.insert(k.to_string(), v.to_string());
    }
    tune(&mut opts);
    let state_store = opts.variables["state_store"].clone();
    let app = start_app(opts).await.expect("app starts (are the components built? see README)");
    Gateway { app, mock, state_store, _state: state }
}

impl Gateway {
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, &[("content-type", "application/json")], body.as_bytes()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"").await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let reply = send(&self.app.base_url(), method, path, headers, body).await;
        assert_no_secret(&reply);
        reply
    }

    /// Calls the mock received on `path` so far.
    pub fn upstream(&self, path: &str) -> usize {
        self.mock.calls_to(path).len()
    }

    pub fn upstream_total(&self) -> usize {
        self.mock.calls().len()
    }

    /// Every log line the components wrote, each checked for secrets.
    pub fn logs(&self) -> Vec<String> {
        let logs = self.app.logs();
        for line in &logs {
            assert!(!line.contains(TOKEN) && !line.contains(COLLECTION), "secret in a log line: {line}");
        }
        logs
    }

    /// The cache's slots with their entries, from whichever store holds them.
    pub fn cache_entries(&self) -> Vec<(String, Vec<u8>)> {
        match self.state() {
            State::Sqlite(db) => db
                .query("SELECT slot, entry FROM cache ORDER BY slot")
                .unwrap_or_default()
                .into_iter()
                .map(|row| match &row[..] {
                    [SqlValue::Text(slot), SqlValue::Blob(entry)] => (slot.clone(), entry.clone()),
                    other => panic!("a cache row is (text, blob): {other:?}"),
                })
                .collect(),
            State::KeyValue(kv) => kv.keys().into_iter().map(|slot| (slot.clone(), kv.get(&slot).unwrap())).collect(),
        }
    }

    /// Replaces what a cache slot holds.
    pub fn set_cache_entry(&self, slot: &str, entry: &[u8]) {
        match self.state() {
            State::Sqlite(db) => {
                db.query_with(
                    "REPLACE INTO cache (slot, entry) VALUES (?1, ?2)",
                    vec![slot.into(), SqlValue::Blob(entry.to_vec())],
                )
                .expect("write a cache slot");
            }
            State::KeyValue(kv) => kv.set(slot, entry.to_vec()),
        }
    }

    /// Where this gateway keeps its state.
    pub fn state(&self) -> State {
        match self.state_store.as_str() {
            "key-value" => State::KeyValue(self.app.kv("cache").expect("the cache store")),
            _ => State::Sqlite(self.app.sqlite("gateway").expect("the gateway database")),
        }
    }

    /// Fails if any log line so far holds the token or the collection id.
    pub fn assert_no_secret_in_logs(&self) {
        let _ = self.logs();
    }
}

pub const DETECT_PATH: &str = "/tagging/fashion/v2/detect_tags";
pub const TAGS_PATH: &str = "/tagging/fashion/v2/tags";
pub const SEARCH_PATH: &str = "/similarity/fashion-new/v2/visualKNN";
pub const ACCOUNT_PATH: &str = "/account/v2/details/";

/// One request through the host crate's HTTP/1.1 client, kept as a [`Reply`]
/// and appended to the transcript.
pub async fn send(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let method = http::Method::from_bytes(method.as_bytes()).expect("a valid method token");
    let answer = spin_test_host::client::send(method.clone(), &format!("{base}{path}"), headers, body.to_vec())
        .await
        .expect("the gateway answers within 60 s");
    let reply = Reply {
        status: answer.status.as_u16(),
        headers: answer
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: answer.body.to_vec(),
    };
    record(method.as_str(), path, &reply);
    reply
}

/// No answer may carry the token or the collection id, in a header or the body.
pub fn assert_no_secret(reply: &Reply) {
    for secret in [TOKEN, COLLECTION] {
        assert!(!reply.text().contains(secret), "secret in a body: {}", reply.text());
        for (k, v) in &reply.headers {
            assert!(!v.contains(secret) && !k.contains(secret), "secret in header {k}");
        }
    }
}

/// Appends every answer to target/transcripts/e2e.txt for the leak sweep
/// (scripts/leak_sweep.py), which also reads the schemathesis run's answers.
fn record(method: &str, path: &str, reply: &Reply) {
    let dir = workspace_root().join("target/transcripts");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("e2e.txt")) {
        let mut text = format!("{method} {path} -> {}\n", reply.status);
        for (k, v) in &reply.headers {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push_str(&reply.text());
        text.push_str("\n\n");
        let _ = file.write_all(text.as_bytes());
    }
}

pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}
