//! In-memory key-value stores with Spin's semantics, and the host side of
//! `spin:key-value/key-value@3.0.0` and `wasi:keyvalue/{store,atomics}@0.2.0-draft2`.
//!
//! One store per label declared in the runtime config, plus `default`; all the components of
//! an app share them (like Spin's single SQLite connection), and tests inspect them through
//! [`KvHandle`]. A component may open only the labels in its `key_value_stores`; anything
//! else is `access-denied`, as in Spin (even for labels that exist).
//!
//! `increment` stores the counter as an 8-byte little-endian i64, like Spin's SQLite store.
//! Incrementing a value of another length panics Spin's host; here it traps the guest with a
//! message saying so, which fails the request loudly instead of silently differing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

use crate::bindings::spin::key_value::key_value as v3;
use crate::bindings::wasi::keyvalue::{atomics, store as wasi_store};

/// One store: a sorted map so key listings are deterministic.
#[derive(Debug, Default)]
pub struct KvStore {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl KvStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.data.lock().unwrap().get(key).cloned()
    }
    fn set(&self, key: &str, value: Vec<u8>) {
        self.data.lock().unwrap().insert(key.to_string(), value);
    }
    fn delete(&self, key: &str) {
        self.data.lock().unwrap().remove(key);
    }
    fn exists(&self, key: &str) -> bool {
        self.data.lock().unwrap().contains_key(key)
    }
    fn keys(&self) -> Vec<String> {
        self.data.lock().unwrap().keys().cloned().collect()
    }

    /// Adds `delta` to the 8-byte little-endian counter at `key` (absent = 0).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
        let mut data = self.data.lock().unwrap();
        let current = match data.get(key) {
            None => 0,
            Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
                Ok(b) => i64::from_le_bytes(b),
                Err(_) => {
                    return Err(format!(
                        "increment of key {key:?}, whose value is {} bytes, not an 8-byte little-endian i64 \
                         (Spin's SQLite store panics here: \"incorrect length\")",
                        v.len()
                    ))
                }
            },
        };
        let new = current.wrapping_add(delta);
        data.insert(key.to_string(), new.to_le_bytes().to_vec());
        Ok(new)
    }

    /// Spin's compare-and-swap: with a snapshot, swap only if the value is unchanged; with
    /// none (the key was absent, or `current` was never read), write unconditionally.
    fn swap(&self, key: &str, expected: Option<&[u8]>, value: Vec<u8>) -> bool {
        let mut data = self.data.lock().unwrap();
        if let Some(expected) = expected {
            if data.get(key).map(Vec::as_slice) != Some(expected) {
                return false;
            }
        }
        data.insert(key.to_string(), value);
        true
    }
}

/// A test's view of one store.
#[derive(Debug, Clone)]
pub struct KvHandle(Arc<KvStore>);

impl KvHandle {
    /// Raw bytes at `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    /// The value as UTF-8 text, if it is.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| String::from_utf8(v).ok())
    }
    /// The value as a counter written by `increment`: exactly 8 bytes, little-endian.
    pub fn get_counter(&self, key: &str) -> Option<i64> {
        self.get(key)
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(i64::from_le_bytes)
    }
    /// All keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.0.keys()
    }
    /// A copy of the whole store.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.data.lock().unwrap().clone()
    }
    pub fn set(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.0.set(key, value.into())
    }
    pub fn delete(&self, key: &str) {
        self.0.delete(key)
    }
    pub fn clear(&self) {
        self.0.data.lock().unwrap().clear()
    }
}

/// All the stores of one app, by label.
#[derive(Debug, Default)]
pub struct KvStores(HashMap<String, Arc<KvStore>>);

impl KvStores {
    /// `default` plus the labels of the runtime config.
    pub fn new(labels: &[String]) -> KvStores {
        let mut map = HashMap::new();
        map.insert("default".to_string(), Arc::default());
        for l in labels {
            map.entry(l.clone()).or_default();
        }
        KvStores(map)
    }

    pub fn handle(&self, label: &str) -> Option<KvHandle> {
        self.0.get(label).cloned().map(KvHandle)
    }

    pub fn contains(&self, label: &str) -> bool {
        self.0.contains_key(label)
    }
}

/// An open store (both `spin:key-value` stores and `wasi:keyvalue` buckets).
pub struct OpenStore(Arc<KvStore>);

/// A `wasi:keyvalue/atomics.cas` handle.
pub struct CasState {
    store: Arc<KvStore>,
    key: String,
    snapshot: Option<Vec<u8>>,
}

/// Per-instance key-value state: which labels the component may open, and its handles.
pub struct KvAccess {
    pub allowed: Arc<HashSet<String>>,
    pub stores: Arc<KvStores>,
    pub table: ResourceTable,
}

impl KvAccess {
    fn open_label(&self, label: &str) -> Result<Arc<KvStore>, OpenError> {
        if !self.allowed.contains(label) {
            return Err(OpenError::AccessDenied);
        }
        self.stores
            .0
            .get(label)
            .cloned()
            .ok_or(OpenError::NoSuchStore)
    }

    fn store<T: 'static>(&self, r: &Resource<T>) -> wasmtime::Result<Arc<KvStore>> {
        let r: Resource<OpenStore> = Resource::new_borrow(r.rep());
        Ok(self.table.get(&r)?.0.clone())
    }
}

enum OpenError {
    AccessDenied,
    NoSuchStore,
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
    fn drop(&mut self, store: Resource<v3::Store>) -> wasmtime::Result<()> {
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
        Ok(Ok(store.get(&key)))
    }

    async fn set<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        store.set(&key, value);
        Ok(Ok(()))
    }

    async fn delete<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        store.delete(&key);
        Ok(Ok(()))
    }

    async fn exists<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v3::Error>> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        Ok(Ok(store.exists(&key)))
    }

    async fn get_keys<T>(
        acc: &Accessor<T, Self>,
        this: Resource<v3::Store>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let store = acc.with(|mut a| a.get().store(&this))?;
        let keys = store.keys();
        acc.with(|mut a| {
            let keys = StreamReader::new(&mut a, keys)?;
            let done = FutureReader::new(&mut a, async {
                wasmtime::Result::<Result<(), v3::Error>>::Ok(Ok(()))
            })?;
            Ok((keys, done))
        })
    }
}

// ---------------------------------------------------------------------------------------
// wasi:keyvalue@0.2.0-draft2 store and atomics (synchronous functions)

fn wasi_open_error(e: OpenError) -> wasi_store::Error {
    match e {
        OpenError::AccessDenied => wasi_store::Error::AccessDenied,
        OpenError::NoSuchStore => wasi_store::Error::NoSuchStore,
    }
}

impl wasi_store::Host for KvAccess {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<wasi_store::Bucket>, wasi_store::Error>> {
        match self.open_label(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(OpenStore(store))?)),
            Err(e) => Ok(Err(wasi_open_error(e))),
        }
    }
}

impl wasi_store::HostBucket for KvAccess {
    fn get(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(Ok(self.store(&this)?.get(&key)))
    }

    fn set(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        self.store(&this)?.set(&key, value);
        Ok(Ok(()))
    }

    fn delete(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        self.store(&this)?.delete(&key);
        Ok(Ok(()))
    }

    fn exists(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        Ok(Ok(self.store(&this)?.exists(&key)))
    }

    fn list_keys(
        &mut self,
        this: Resource<wasi_store::Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        if cursor.is_some() {
            // Spin does not support cursors either.
            return Ok(Err(wasi_store::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        let keys = self.store(&this)?.keys();
        Ok(Ok(wasi_store::KeyResponse { keys, cursor: None }))
    }

    fn drop(&mut self, this: Resource<wasi_store::Bucket>) -> wasmtime::Result<()> {
        let this: Resource<OpenStore> = Resource::new_own(this.rep());
        self.table.delete(this)?;
        Ok(())
    }
}

impl atomics::Host for KvAccess {
    fn increment(
        &mut self,
        bucket: Resource<atomics::Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, atomics::Error>> {
        let store = self.store(&bucket)?;
        match store.increment(&key, delta) {
            Ok(n) => Ok(Ok(n)),
            Err(msg) => Err(wasmtime::format_err!("{msg}")),
        }
    }

    fn swap(
        &mut self,
        cas: Resource<atomics::Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let state = self.table.delete(cas)?;
        if state
            .store
            .swap(&state.key, state.snapshot.as_deref(), value)
        {
            return Ok(Ok(()));
        }
        // Like Spin: hand back a fresh CAS handle that has already read the current value.
        let snapshot = state.store.get(&state.key);
        let fresh = self.table.push(CasState {
            store: state.store,
            key: state.key,
            snapshot,
        })?;
        Ok(Err(atomics::CasError::CasFailed(fresh)))
    }
}

impl atomics::HostCas for KvAccess {
    fn new(
        &mut self,
        bucket: Resource<atomics::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<atomics::Cas>, atomics::Error>> {
        let store = self.store(&bucket)?;
        Ok(Ok(self.table.push(CasState {
            store,
            key,
            snapshot: None,
        })?))
    }

    fn current(
        &mut self,
        this: Resource<atomics::Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, atomics::Error>> {
        let state = self.table.get_mut(&this)?;
        let value = state.store.get(&state.key);
        state.snapshot = value.clone();
        Ok(Ok(value))
    }

    fn drop(&mut self, this: Resource<atomics::Cas>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_uses_8_byte_little_endian() {
        let s = KvStore::default();
        assert_eq!(s.increment("c", 1), Ok(1));
        assert_eq!(s.increment("c", 41), Ok(42));
        assert_eq!(s.get("c").unwrap(), 42i64.to_le_bytes().to_vec());
        assert_eq!(s.increment("c", -50), Ok(-8));
        let h = KvHandle(Arc::new(KvStore::default()));
        h.set("n", (-8i64).to_le_bytes().to_vec());
        assert_eq!(h.get_counter("n"), Some(-8));
    }

    #[test]
    fn increment_of_text_fails_like_spins_panic() {
        let s = KvStore::default();
        s.set("t", b"12".to_vec());
        let err = s.increment("t", 1).unwrap_err();
        assert!(err.contains("incorrect length"), "{err}");
    }

    #[test]
    fn cas_swaps_only_an_unchanged_value() {
        let s = KvStore::default();
        s.set("k", b"a".to_vec());
        assert!(s.swap("k", Some(b"a"), b"b".to_vec()));
        assert!(!s.swap("k", Some(b"a"), b"c".to_vec()));
        assert_eq!(s.get("k").unwrap(), b"b");
        assert!(
            s.swap("absent", None, b"x".to_vec()),
            "no snapshot: unconditional write"
        );
    }

    #[test]
    fn stores_are_default_plus_labels() {
        let stores = KvStores::new(&["cache".into(), "metrics".into()]);
        assert!(
            stores.contains("default") && stores.contains("cache") && stores.contains("metrics")
        );
        assert!(stores.handle("other").is_none());
    }
}
