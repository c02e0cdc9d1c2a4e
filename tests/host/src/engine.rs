//! One wasmtime `Engine` per process and a cache of compiled components.
//!
//! Compiling a component with Cranelift is the slow part of starting an app (seconds in an
//! optimised build, much longer in a debug build), and tests start many apps from the same
//! few files. So compiled components are kept in memory for the life of the process, keyed
//! by path, size and modification time, and wasmtime's own on-disk cache (keyed by a hash of
//! the bytes and the compiler settings) carries them across test binaries and runs.
//! `SPIN_TEST_HOST_CACHE=off` disables the disk cache; any other value is its directory
//! (default: `<workspace>/target/spin-test-host-cache`).

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Config, Engine};

/// The process-wide engine, configured as Spin 4.0.2 configures it for WASIp3 components.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        if let Some(dir) = cache_dir() {
            let mut cache_config = CacheConfig::new();
            cache_config.with_directory(&dir);
            match Cache::new(cache_config) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(e) => eprintln!("spin-test-host: compile cache disabled ({}): {e:#}", dir.display()),
            }
        }
        Engine::new(&config).expect("wasmtime engine")
    })
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var("SPIN_TEST_HOST_CACHE") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/spin-test-host-cache")),
    }
}

type Key = (PathBuf, u64, SystemTime);

/// Loads (compiling at most once per process and file version) the component at `path`.
/// `id` names the component in errors.
pub async fn load_component(id: &str, path: &Path) -> Result<Component> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => bail!(
            "component {id:?}: {} does not exist. Build the components first (see tests/host/README.md), \
             e.g. `cargo build --target wasm32-wasip2 --release --workspace --exclude spin-test-host`",
            path.display()
        ),
    };
    let key: Key = (
        path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    );
    let id = id.to_string();
    // Compilation is CPU-bound and blocking: keep it off the async workers.
    tokio::task::spawn_blocking(move || compile_cached(&id, key)).await.context("compile task panicked")?
}

fn compile_cached(id: &str, key: Key) -> Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Component>>> = OnceLock::new();
    // One compilation at a time: Cranelift already uses every core for one component, and
    // this way two apps starting together do not compile the same file twice.
    static COMPILING: Mutex<()> = Mutex::new(());

    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(&key) {
        return Ok(c.clone());
    }
    let _guard = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.lock().unwrap().get(&key) {
        return Ok(c.clone());
    }
    let component = Component::from_file(engine(), &key.0)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("component {id:?}: cannot compile {}", key.0.display()))?;
    cache.lock().unwrap().insert(key, component.clone());
    Ok(component)
}
