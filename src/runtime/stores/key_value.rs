//! The state in Spin's key-value stores (`state_store = "key-value"`, the
//! default): counters in `metrics` through `wasi:keyvalue` atomics, cache
//! entries and leases in `cache`. Redis behind both is how replicas share them.
//! Spin runs each call on the calling instance's own thread, so every call here
//! holds up the requests that instance is serving, if only briefly.

use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
use spin_sdk::key_value::Store;

use crate::metrics;

pub const METRICS_LABEL: &str = "metrics";
pub const CACHE_LABEL: &str = "cache";

/// A store call failed; the facade counts it and goes on.
pub struct Failed;

pub struct KvCounters(store::Bucket);

impl KvCounters {
    pub fn open() -> Result<KvCounters, Failed> {
        store::open(METRICS_LABEL).map(KvCounters).map_err(|_| Failed)
    }

    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Failed> {
        atomics::increment(&self.0, key, delta).map_err(|_| Failed)
    }

    /// The store's own increment decides; a unit over the limit is given back.
    /// A read first, so a spent limit writes nothing.
    pub fn reserve(&self, key: &str, limit: i64) -> Result<bool, Failed> {
        let spent = self.get(key)?.and_then(|bytes| metrics::decode_counter(&bytes)).unwrap_or(0);
        if spent >= limit {
            return Ok(false);
        }
        if self.increment(key, 1)? <= limit {
            return Ok(true);
        }
        self.increment(key, -1)?;
        Ok(false)
    }

    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failed> {
        self.0.get(key).map_err(|_| Failed)
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Failed> {
        self.0.set(key, value).map_err(|_| Failed)
    }

    /// Gauges are written whole, in the same 8-byte little-endian form an
    /// increment leaves in Spin's SQLite key-value store.
    pub fn set_gauge(&self, key: &str, value: i64) -> Result<(), Failed> {
        self.set(key, &value.to_le_bytes())
    }

    /// Every stored series with its value, for `/metrics`: the one listing of keys
    /// the gateway makes, over a bounded set of them.
    pub fn read_all(&self) -> Result<Vec<(String, i64)>, String> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.0.list_keys(cursor.as_deref()).map_err(|e| format!("listing metrics: {e:?}"))?;
            for key in page.keys {
                if let Ok(Some(bytes)) = self.0.get(&key) {
                    if let Some(value) = metrics::decode_counter(&bytes) {
                        entries.push((key, value));
                    }
                }
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(entries),
            }
        }
    }
}

pub struct KvCache {
    store: Store,
    /// The same store through `wasi:keyvalue`, for the atomic in-flight leases;
    /// opened on the first miss.
    leases: Option<store::Bucket>,
}

impl KvCache {
    pub async fn open() -> Result<KvCache, Failed> {
        let store = Store::open(CACHE_LABEL).await.map_err(|_| Failed)?;
        Ok(KvCache { store, leases: None })
    }

    pub async fn get(&self, slot: &str) -> Result<Option<Vec<u8>>, Failed> {
        self.store.get(slot).await.map_err(|_| Failed)
    }

    pub async fn set(&self, slot: &str, entry: Vec<u8>) -> Result<(), Failed> {
        self.store.set(slot, entry).await.map_err(|_| Failed)
    }

    fn leases(&mut self) -> Result<&store::Bucket, Failed> {
        if self.leases.is_none() {
            self.leases = store::open(CACHE_LABEL).ok();
        }
        self.leases.as_ref().ok_or(Failed)
    }

    pub fn take_lease(&mut self, lease: &str) -> Result<i64, Failed> {
        atomics::increment(self.leases()?, lease, 1).map_err(|_| Failed)
    }

    pub fn lease_held(&mut self, lease: &str) -> Result<bool, Failed> {
        self.leases()?.exists(lease).map_err(|_| Failed)
    }

    pub fn release_lease(&mut self, lease: &str) -> Result<(), Failed> {
        self.leases()?.delete(lease).map_err(|_| Failed)
    }
}
