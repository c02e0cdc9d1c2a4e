//! One wasmtime `Engine` per process, configured as Spin 4.0.2 configures its own, and a
//! cache of compiled components.
//!
//! Spin's settings (its `crates/core`, read at the v4.0.2 tag): epoch interruption with a
//! 10 ms ticker, the component model with its async ABI, and the pooling instance allocator
//! wherever the address space allows it, sized from `SPIN_MAX_INSTANCE_COUNT` (1,000) with
//! every `SPIN_WASMTIME_*` override. The pool is what makes load fail as it does on Spin:
//! every live instance holds a fiber stack, and `total_stacks` (1,000) caps them, so an app
//! whose instances stall spawns instances until "maximum concurrent limit of 1000 for
//! fibers reached". `SPIN_WASMTIME_POOLING=0` turns pooling off, `1` forces it, as in Spin.
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
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::{Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The process-wide engine, configured as Spin 4.0.2 configures it for WASIp3 components.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.wasm_component_model_async(true);
        // For `perf`: name the guest's functions in /tmp/perf-<pid>.map.
        if std::env::var_os("SPIN_TEST_HOST_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if use_pooling() {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(spin_pooling()));
        }
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
        let engine = Engine::new(&config).expect("wasmtime engine");
        start_epoch_ticker(engine.clone());
        engine
    })
}

/// The epoch deadline Spin gives every store: never reached, but the checks run.
pub const EPOCH_DEADLINE: u64 = u64::MAX / 2;

/// Spin advances the epoch every 10 ms from a thread of its own.
fn start_epoch_ticker(engine: Engine) {
    std::thread::Builder::new()
        .name("spin-test-host-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(10));
            engine.increment_epoch();
        })
        .expect("epoch thread");
}

/// `SPIN_WASMTIME_POOLING`: `1` on, `0` off, unset: on if the address space allows the
/// large reservations the pool makes (Spin asks the same question with a 2^42-byte one).
pub fn use_pooling() -> bool {
    match std::env::var("SPIN_WASMTIME_POOLING").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        Ok(other) => panic!("SPIN_WASMTIME_POOLING must be 0 or 1, not {other:?}"),
        Err(_) => address_space_allows_pooling(),
    }
}

fn address_space_allows_pooling() -> bool {
    let mut config = Config::new();
    config.wasm_memory64(true);
    config.memory_reservation(1 << 42);
    let Ok(engine) = Engine::new(&config) else { return false };
    let mut store = wasmtime::Store::new(&engine, ());
    wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new64(0, None)).is_ok()
}

/// An environment override of a pool setting; like Spin, a value that does not parse is fatal.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}

/// The pool Spin 4.0.2 builds (values and variable names from its `crates/core`).
pub fn spin_pooling() -> PoolingAllocationConfig {
    const MIB: usize = 1 << 20;
    let max = setting("SPIN_MAX_INSTANCE_COUNT", 1_000u32);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(setting("SPIN_WASMTIME_INSTANCE_COUNT", max))
        .total_memories(setting("SPIN_WASMTIME_TOTAL_MEMORIES", max))
        .total_tables(setting("SPIN_WASMTIME_TOTAL_TABLES", 2 * max))
        .total_stacks(setting("SPIN_WASMTIME_TOTAL_STACKS", max))
        .total_core_instances(setting("SPIN_WASMTIME_TOTAL_CORE_INSTANCES", 4 * max))
        .table_elements(setting("SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", 100_000))
        .max_component_instance_size(setting("SPIN_WASMTIME_INSTANCE_SIZE", 10 * MIB))
        .max_core_instance_size(setting("SPIN_WASMTIME_CORE_INSTANCE_SIZE", 10 * MIB))
        .max_core_instances_per_component(setting("SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200))
        .max_tables_per_component(setting("SPIN_WASMTIME_INSTANCE_TABLES", 64))
        .max_memories_per_component(setting("SPIN_WASMTIME_INSTANCE_MEMORIES", 32))
        .max_tables_per_module(setting("SPIN_WASMTIME_MAX_TABLES_PER_MODULE", 2))
        .max_memories_per_module(setting("SPIN_WASMTIME_MAX_MEMORIES_PER_MODULE", 2))
        .max_memory_size(4 << 30)
        .linear_memory_keep_resident(setting("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 * MIB))
        .table_keep_resident(setting("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", MIB / 2));
    pool
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
