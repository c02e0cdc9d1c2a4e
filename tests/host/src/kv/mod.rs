//! Key-value stores with Spin's semantics, and the host side of
//! `spin:key-value/key-value@3.0.0` and `wasi:keyvalue/{store,atomics}@0.2.0-draft2`.
//!
//! One store per label of the runtime config, plus `default`; all the components of an app
//! share them, and tests inspect them through [`KvHandle`]. A component may open only the
//! labels in its `key_value_stores`; anything else is `access-denied`, as in Spin (even for
//! labels that exist).
//!
//! Two backends ([`KvBackend`]):
//! - `Spin` (the default): a `type = "spin"` label is Spin's SQLite store, with its one
//!   locked connection, its blocking calls and its synced writes (`sqlite.rs`). Other types
//!   (`redis`) are kept in a map: Redis is not modelled.
//! - `Map`: every label in a map, no blocking and no cost (`map.rs`).
//!
//! `increment` stores the counter as an 8-byte little-endian i64, like Spin's SQLite store.
//! Incrementing a value of another length panics Spin's host (and poisons that store's lock);
//! here it traps the guest with a message saying so, which fails the request loudly.

mod map;
mod sqlite;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

use crate::bindings::spin::key_value::key_value as v3;
use crate::bindings::wasi::keyvalue::{atomics, store as wasi_store};
use crate::channel_stream::ChannelProducer;
use crate::runtime_config::KvStoreConfig;

pub use sqlite::LOCK_WAIT_LIMIT;

/// Which key-value model an app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvBackend {
    /// Spin's SQLite store for `type = "spin"` labels, modelled with its locking and cost.
    #[default]
    Spin,
    /// A plain map for every label.
    Map,
}

impl KvBackend {
    /// `SPIN_TEST_HOST_KV=map` selects the map; anything else (or nothing) Spin's model.
    pub fn from_env() -> KvBackend {
        match std::env::var("SPIN_TEST_HOST_KV").as_deref() {
            Ok("map") => KvBackend::Map,
            _ => KvBackend::Spin,
        }
    }
}

/// Why a store call failed: an error the guest sees, or a trap (Spin would panic or hang).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    Other(String),
    Trap(String),
}

/// Keys streamed to a `get-keys` caller, and the listing's outcome.
pub struct KeyStream {
    pub keys: mpsc::Receiver<String>,
    pub done: oneshot::Receiver<Result<(), StoreError>>,
}

/// What a backend offers one label.
pub trait StoreBackend: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    fn keys(&self) -> Result<Vec<String>, StoreError>;
    fn stream_keys(&self) -> KeyStream;
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// Compare-and-swap: with `expected`, write only if the value is unchanged; without,
    /// write unconditionally (Spin's behaviour when the key was absent).
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError>;
    /// Test helper: forget every key.
    fn clear(&self);
}

/// A counter's current value: absent is 0, otherwise exactly 8 little-endian bytes.
fn counter_value(key: &str, value: Option<&[u8]>) -> Result<i64, StoreError> {
    match value {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v).map(i64::from_le_bytes).map_err(|_| {
            StoreError::Trap(format!(
                "increment of key {key:?}, whose value is {} bytes, not an 8-byte little-endian i64 \
                 (Spin's SQLite store panics here: \"incorrect length\")",
                v.len()
            ))
        }),
    }
}

/// Runs a blocking store call the way Spin does: `block_in_place` on a multi-threaded
/// runtime (the instance's task stops, the runtime goes on); inline on a single thread.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How many calls of each kind a store has served, guests' and tests' alike.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpCounts {
    pub reads: u64,
    /// `set` and compare-and-swap writes.
    pub writes: u64,
    pub deletes: u64,
    pub increments: u64,
    pub listings: u64,
}

impl std::ops::Sub for OpCounts {
    type Output = OpCounts;
    fn sub(self, before: OpCounts) -> OpCounts {
        OpCounts {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            deletes: self.deletes - before.deletes,
            increments: self.increments - before.increments,
            listings: self.listings - before.listings,
        }
    }
}

/// A backend that counts the calls it passes on, so tests can hold a request to a
/// number of store calls (each one blocks its instance on Spin's SQLite store). It can
/// also write a value just after a read, for races that timing cannot stage reliably.
struct Counted {
    inner: Arc<dyn StoreBackend>,
    counts: Mutex<OpCounts>,
    /// (key, value): written right after the next read of `key` has returned.
    after_read: Mutex<Option<(String, Vec<u8>)>>,
}

impl Counted {
    fn new(inner: Arc<dyn StoreBackend>) -> Counted {
        Counted { inner, counts: Mutex::default(), after_read: Mutex::default() }
    }

    fn count(&self, op: impl FnOnce(&mut OpCounts)) {
        op(&mut self.counts.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl StoreBackend for Counted {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.count(|c| c.reads += 1);
        let found = self.inner.get(key);
        let mut hook = self.after_read.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, value)) = hook.take_if(|(k, _)| k == key) {
            self.inner.set(key, &value)?;
        }
        found
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.count(|c| c.writes += 1);
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count(|c| c.deletes += 1);
        self.inner.delete(key)
    }
    fn keys(&self) -> Result<Vec<String>, StoreError> {
        self.count(|c| c.listings += 1);
        self.inner.keys()
    }
    fn stream_keys(&self) -> KeyStream {
        self.count(|c| c.listings += 1);
        self.inner.stream_keys()
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.count(|c| c.increments += 1);
        self.inner.increment(key, delta)
    }
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError> {
        self.count(|c| c.writes += 1);
        self.inner.swap(key, expected, value)
    }
    fn clear(&self) {
        self.inner.clear()
    }
}

/// A test's view of one store.
#[derive(Clone)]
pub struct KvHandle(Arc<Counted>);

impl KvHandle {
    /// The calls this store has served so far (take two and subtract).
    pub fn ops(&self) -> OpCounts {
        *self.0.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Writes `value` at `key` right after the next read of `key` has returned what was
    /// there: as if another request wrote it between that read and the reader's next call.
    pub fn set_after_next_read(&self, key: &str, value: impl Into<Vec<u8>>) {
        *self.0.after_read.lock().unwrap_or_else(|e| e.into_inner()) = Some((key.to_string(), value.into()));
    }
    /// Raw bytes at `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).expect("store readable")
    }
    /// The value as UTF-8 text, if it is.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| String::from_utf8(v).ok())
    }
    /// The value as a counter written by `increment`: exactly 8 bytes, little-endian.
    pub fn get_counter(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(i64::from_le_bytes)
    }
    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = self.0.keys().expect("store listable");
        keys.sort();
        keys
    }
    /// A copy of the whole store.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.keys().into_iter().filter_map(|k| Some((k.clone(), self.get(&k)?))).collect()
    }
    pub fn set(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.0.set(key, &value.into()).expect("store writable")
    }
    pub fn delete(&self, key: &str) {
        self.0.delete(key).expect("store writable")
    }
    pub fn clear(&self) {
        self.0.clear()
    }
}

/// All the stores of one app, by label.
#[derive(Default)]
pub struct KvStores(HashMap<String, Arc<Counted>>);

impl KvStores {
    /// `default` (in memory) plus the stores of the runtime config, on `backend`.
    pub fn new(configs: &[KvStoreConfig], backend: KvBackend, lock_limit: Duration) -> anyhow::Result<KvStores> {
        let mut map: HashMap<String, Arc<Counted>> = HashMap::new();
        let default = KvStoreConfig { label: "default".into(), kind: "spin".into(), path: None };
        for config in configs.iter().chain([&default]) {
            if map.contains_key(&config.label) {
                continue;
            }
            let store: Arc<dyn StoreBackend> = match (backend, config.kind.as_str()) {
                (KvBackend::Spin, "spin") => {
                    let shared = sqlite::SharedConnection::open(&config.label, config.path.as_deref(), lock_limit)?;
                    Arc::new(sqlite::SqliteStore::new(&config.label, shared))
                }
                _ => Arc::new(map::MapStore::default()),
            };
            map.insert(config.label.clone(), Arc::new(Counted::new(store)));
        }
        Ok(KvStores(map))
    }

    pub fn handle(&self, label: &str) -> Option<KvHandle> {
        self.0.get(label).cloned().map(KvHandle)
    }

    pub fn contains(&self, label: &str) -> bool {
        self.0.contains_key(label)
    }
}

/// An open store (both `spin:key-value` stores and `wasi:keyvalue` buckets).
pub struct OpenStore(Arc<dyn StoreBackend>);

/// A `wasi:keyvalue/atomics.cas` handle.
pub struct CasState {
    store: Arc<dyn StoreBackend>,
    key: String,
    snapshot: Option<Vec<u8>>,
}

/// Per-instance key-value state: which labels the component may open, and its handles.
pub struct KvAccess {
    pub allowed: Arc<HashSet<String>>,
    pub stores: Arc<KvStores>,
    pub table: ResourceTable,
    /// Where the app counts calls to synchronous imports.
    pub sync_imports: Arc<crate::sync_imports::SyncImports>,
}

impl KvAccess {
    fn open_label(&self, label: &str) -> Result<Arc<dyn StoreBackend>, OpenError> {
        if !self.allowed.contains(label) {
            return Err(OpenError::AccessDenied);
        }
        let store = self.stores.0.get(label).ok_or(OpenError::NoSuchStore)?;
        Ok(store.clone())
    }

    fn store<T: 'static>(&self, r: &Resource<T>) -> wasmtime::Result<Arc<dyn StoreBackend>> {
        let r: Resource<OpenStore> = Resource::new_borrow(r.rep());
        Ok(self.table.get(&r)?.0.clone())
    }
}

enum OpenError {
    AccessDenied,
    NoSuchStore,
}

/// A store outcome for the guest: `Ok(Ok(_))`, an error result, or a trap.
fn outcome<T, E>(result: Result<T, StoreError>, other: impl FnOnce(String) -> E) -> wasmtime::Result<Result<T, E>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(StoreError::Other(msg)) => Ok(Err(other(msg))),
        Err(StoreError::Trap(msg)) => Err(wasmtime::format_err!("{msg}")),
    }
}

/// The listing's outcome, for the `get-keys` future.
struct ListingDone(oneshot::Receiver<Result<(), StoreError>>);

impl Future for ListingDone {
    type Output = wasmtime::Result<Result<(), v3::Error>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(result) => outcome(result, v3::Error::Other),
            Err(_) => Ok(Err(v3::Error::Other("the listing stopped".into()))),
        })
    }
}

/// The `HasData` marker the key-value bindings are registered with.
pub struct KvHost;

impl HasData for KvHost {
    type Data<'a> = &'a mut KvAccess;
}

// ---------------------------------------------------------------------------------------
// spin:key-value/key-value@3.0.0 (async functions: they run with an `Accessor`)

impl v3::Host for KvAccess {}

impl v3::HostStore for KvAccess {
    async fn drop(&mut self, store: Resource<v3::Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl v3::HostStoreWithStore for KvHost {
    async fn open<T>(
        acc: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<v3::Store>, v3::Error>> {
        acc.with(|mut a| {
            let kv = a.get();
            match kv.open_label(&label) {
                Ok(store) => Ok(Ok(kv.table.push(OpenStore(store))?)),
                Err(OpenError::AccessDenied) => Ok(Err(v3::Error::AccessDenied)),
                Err(OpenError::NoSuchStore) => Ok(Err(v3::Error::NoSuchStore)),
            }
        })
    }

    async fn get<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        outcome(store.get(&key), v3::Error::Other)
    }

    async fn set<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        outcome(store.set(&key, &value), v3::Error::Other)
    }

    async fn delete<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        outcome(store.delete(&key), v3::Error::Other)
    }

    async fn exists<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        outcome(store.get(&key).map(|v| v.is_some()), v3::Error::Other)
    }

    async fn get_keys<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        let listing = store.stream_keys();
        acc.with(|mut a| {
            let keys = StreamReader::new(&mut a, ChannelProducer(listing.keys))?;
            let done = FutureReader::new(&mut a, ListingDone(listing.done))?;
            Ok((keys, done))
        })
    }
}

// ---------------------------------------------------------------------------------------
// wasi:keyvalue@0.2.0-draft2 store and atomics: synchronous WIT functions that Spin
// implements as async host functions (`func_wrap_async`), so a call holds the calling
// instance's store until it returns. Each call is counted in `sync_imports`.

fn wasi_open_error(e: OpenError) -> wasi_store::Error {
    match e {
        OpenError::AccessDenied => wasi_store::Error::AccessDenied,
        OpenError::NoSuchStore => wasi_store::Error::NoSuchStore,
    }
}

impl wasi_store::Host for KvAccess {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<wasi_store::Bucket>, wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.open");
        match self.open_label(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(OpenStore(store))?)),
            Err(e) => Ok(Err(wasi_open_error(e))),
        }
    }
}

impl wasi_store::HostBucket for KvAccess {
    async fn get(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.[method]bucket.get");
        outcome(self.store(&this)?.get(&key), wasi_store::Error::Other)
    }

    async fn set(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.[method]bucket.set");
        outcome(self.store(&this)?.set(&key, &value), wasi_store::Error::Other)
    }

    async fn delete(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.[method]bucket.delete");
        outcome(self.store(&this)?.delete(&key), wasi_store::Error::Other)
    }

    async fn exists(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.[method]bucket.exists");
        outcome(self.store(&this)?.get(&key).map(|v| v.is_some()), wasi_store::Error::Other)
    }

    async fn list_keys(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        self.sync_imports.count("wasi:keyvalue/store.[method]bucket.list-keys");
        if cursor.is_some() {
            // Spin does not support cursors either.
            return Ok(Err(wasi_store::Error::Other("list_keys: cursor not supported".into())));
        }
        let keys = self.store(&this)?.keys();
        outcome(keys.map(|keys| wasi_store::KeyResponse { keys, cursor: None }), wasi_store::Error::Other)
    }

    async fn drop(&mut self, this: Resource<wasi_store::Bucket>) -> wasmtime::Result<()> {
        self.sync_imports.count("wasi:keyvalue/store.[resource-drop]bucket");
        let this: Resource<OpenStore> = Resource::new_own(this.rep());
        self.table.delete(this)?;
        Ok(())
    }
}

impl atomics::Host for KvAccess {
    async fn increment(
        &mut self,
        bucket: Resource<atomics::Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, atomics::Error>> {
        self.sync_imports.count("wasi:keyvalue/atomics.increment");
        outcome(self.store(&bucket)?.increment(&key, delta), atomics::Error::Other)
    }

    async fn swap(
        &mut self,
        cas: Resource<atomics::Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        self.sync_imports.count("wasi:keyvalue/atomics.swap");
        let state = self.table.delete(cas)?;
        let swapped = state.store.swap(&state.key, state.snapshot.as_deref(), &value);
        match outcome(swapped, |m| atomics::CasError::StoreError(atomics::Error::Other(m)))? {
            Ok(true) => return Ok(Ok(())),
            Ok(false) => {}
            Err(e) => return Ok(Err(e)),
        }
        // Like Spin: hand back a fresh CAS handle that has already read the current value.
        let snapshot = match outcome(state.store.get(&state.key), atomics::Error::Other)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(atomics::CasError::StoreError(e))),
        };
        let fresh = self.table.push(CasState { store: state.store, key: state.key, snapshot })?;
        Ok(Err(atomics::CasError::CasFailed(fresh)))
    }
}

impl atomics::HostCas for KvAccess {
    async fn new(
        &mut self,
        bucket: Resource<atomics::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<atomics::Cas>, atomics::Error>> {
        self.sync_imports.count("wasi:keyvalue/atomics.[static]cas.new");
        let store = self.store(&bucket)?;
        Ok(Ok(self.table.push(CasState { store, key, snapshot: None })?))
    }

    async fn current(
        &mut self,
        this: Resource<atomics::Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, atomics::Error>> {
        self.sync_imports.count("wasi:keyvalue/atomics.[method]cas.current");
        let state = self.table.get_mut(&this)?;
        let value = match outcome(state.store.get(&state.key), atomics::Error::Other)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        state.snapshot = value.clone();
        Ok(Ok(value))
    }

    async fn drop(&mut self, this: Resource<atomics::Cas>) -> wasmtime::Result<()> {
        self.sync_imports.count("wasi:keyvalue/atomics.[resource-drop]cas");
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(backend: KvBackend) -> KvStores {
        let configs = [KvStoreConfig { label: "metrics".into(), kind: "spin".into(), path: None }];
        KvStores::new(&configs, backend, LOCK_WAIT_LIMIT).unwrap()
    }

    #[test]
    fn increment_uses_8_byte_little_endian_on_both_backends() {
        for backend in [KvBackend::Spin, KvBackend::Map] {
            let s = stores(backend).0["metrics"].clone();
            assert_eq!(s.increment("c", 1), Ok(1));
            assert_eq!(s.increment("c", 41), Ok(42));
            assert_eq!(s.get("c").unwrap().unwrap(), 42i64.to_le_bytes().to_vec());
            assert_eq!(s.increment("c", -50), Ok(-8));
        }
    }

    #[test]
    fn increment_of_text_traps_like_spins_panic() {
        for backend in [KvBackend::Spin, KvBackend::Map] {
            let s = stores(backend).0["metrics"].clone();
            s.set("t", b"12").unwrap();
            let Err(StoreError::Trap(msg)) = s.increment("t", 1) else { panic!("expected a trap") };
            assert!(msg.contains("incorrect length"), "{msg}");
        }
    }

    #[test]
    fn cas_swaps_only_an_unchanged_value() {
        for backend in [KvBackend::Spin, KvBackend::Map] {
            let s = stores(backend).0["metrics"].clone();
            s.set("k", b"a").unwrap();
            assert_eq!(s.swap("k", Some(b"a"), b"b"), Ok(true));
            assert_eq!(s.swap("k", Some(b"a"), b"c"), Ok(false));
            assert_eq!(s.get("k").unwrap().unwrap(), b"b");
            assert_eq!(s.swap("absent", None, b"x"), Ok(true), "no snapshot: unconditional write");
        }
    }

    #[test]
    fn labels_of_one_database_do_not_see_each_other() {
        let s = stores(KvBackend::Spin);
        s.0["metrics"].set("k", b"1").unwrap();
        assert_eq!(s.0["default"].get("k").unwrap(), None);
        assert_eq!(s.0["metrics"].keys().unwrap(), vec!["k".to_string()]);
    }

    #[test]
    fn stores_are_default_plus_labels() {
        let configs: Vec<KvStoreConfig> = ["cache", "metrics"]
            .into_iter()
            .map(|l| KvStoreConfig { label: l.into(), kind: "spin".into(), path: None })
            .collect();
        let stores = KvStores::new(&configs, KvBackend::Spin, LOCK_WAIT_LIMIT).unwrap();
        assert!(stores.contains("default") && stores.contains("cache") && stores.contains("metrics"));
        assert!(stores.handle("other").is_none());
    }

    /// Spin's listing holds the lock until its reader has taken every key: a reader that
    /// first waits for the same lock can never get it. The model reports that as a trap.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_listing_whose_reader_waits_for_the_lock_is_reported_as_a_deadlock() {
        let configs = [KvStoreConfig { label: "cache".into(), kind: "spin".into(), path: None }];
        let stores = KvStores::new(&configs, KvBackend::Spin, Duration::from_millis(300)).unwrap();
        let store = stores.0["cache"].clone();
        for i in 0..100 {
            store.set(&format!("k{i}"), b"v").unwrap();
        }
        let mut listing = store.stream_keys();
        // Let the listing take the lock and fill its channel; nobody reads it yet.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Err(StoreError::Trap(msg)) = store.get("k1") else { panic!("the get must not succeed") };
        assert!(msg.contains("deadlock"), "{msg}");
        // Once the reader drains the stream, the lock is free again.
        let mut n = 0;
        while listing.keys.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!((&mut listing.done).await.unwrap(), Ok(()));
        assert_eq!(store.get("k1").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
