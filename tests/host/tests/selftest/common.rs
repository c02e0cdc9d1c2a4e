//! Helpers shared by the self-tests: temporary apps around the forwarder component.

use spin_test_host::mock::{MockConfig, MockHandle, MockXimilar};
use spin_test_host::{start_app, AppOptions, RunningApp};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The built forwarder component, or a panic that says how to build it.
pub fn forwarder_wasm() -> PathBuf {
    let path = spin_test_host::workspace_root().join("target/wasm32-wasip2/release/forwarder.wasm");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --target wasm32-wasip2 --release -p forwarder` \
         (the self-tests build nothing themselves)",
        path.display()
    );
    path
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spin-test-host-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a manifest, replacing `{wasm}` with the forwarder's absolute path.
pub fn write_manifest(dir: &TempDir, text: &str) -> PathBuf {
    let wasm = forwarder_wasm();
    dir.write("spin.toml", &text.replace("{wasm}", &wasm.display().to_string()))
}

/// Options for a manifest in `dir`, hermetic: empty environment, `dir` as working directory.
pub fn options(dir: &TempDir, manifest: PathBuf) -> AppOptions {
    AppOptions { manifest, work_dir: Some(dir.path().to_path_buf()), ..Default::default() }
}

pub async fn mock() -> MockHandle {
    MockXimilar::start(MockConfig::default()).await.expect("start mock")
}

/// The standard single-component app: the forwarder on `/...`, pointed at `upstream_url`
/// with `allowed_outbound_hosts` given verbatim (a TOML array).
pub const FORWARDER_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "selftest"
[variables]
upstream_url = { default = "http://127.0.0.1:9" }
upstream_path = { default = "/tagging/fashion/v2/detect_tags" }
upstream_token = { default = "test-token" }
upstream_timeout_ms = { default = "" }
[[trigger.http]]
route = "/..."
component = "fwd"
[component.fwd]
source = "{wasm}"
allowed_outbound_hosts = ALLOWED
key_value_stores = ["default"]
[component.fwd.variables]
upstream_url = "{{ upstream_url }}"
upstream_path = "{{ upstream_path }}"
upstream_token = "{{ upstream_token }}"
upstream_timeout_ms = "{{ upstream_timeout_ms }}"
"#;

/// Starts [`FORWARDER_APP`] with `allowed` and explicit variables.
pub async fn forwarder_app(dir: &TempDir, allowed: &str, vars: &[(&str, &str)]) -> RunningApp {
    let manifest = write_manifest(dir, &FORWARDER_APP.replace("ALLOWED", allowed));
    let mut opts = options(dir, manifest);
    for (k, v) in vars {
        opts.variables.insert(k.to_string(), v.to_string());
    }
    start_app(opts).await.expect("start app")
}
