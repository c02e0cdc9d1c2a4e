//! The two key-value stores: `metrics` (atomic counters through
//! `wasi:keyvalue`) and `cache` (JSON entries with expiry through Spin's
//! key-value API, in a bounded set of slots). Neither may ever fail a request: errors are counted in the
//! request's log line and otherwise ignored.

use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
use spin_sdk::key_value::Store;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache;
use crate::metrics;

pub const METRICS_LABEL: &str = "metrics";
pub const CACHE_LABEL: &str = "cache";

/// Counters in the `metrics` store. `None` inside if the store cannot be opened.
pub struct Counters {
    bucket: Option<store::Bucket>,
    pub errors: u32,
}

impl Counters {
    pub fn open() -> Counters {
        match store::open(METRICS_LABEL) {
            Ok(bucket) => Counters { bucket: Some(bucket), errors: 0 },
            Err(_) => Counters { bucket: None, errors: 1 },
        }
    }

    /// An atomic increment that reports the new value (`None`, counted, on a store error).
    pub fn increment(&mut self, key: &str, delta: i64) -> Option<i64> {
        let value = self.bucket.as_ref().and_then(|b| atomics::increment(b, key, delta).ok());
        if value.is_none() {
            self.errors += 1;
        }
        value
    }

    /// A counter's value, in either encoding (`None` if absent or on a store error).
    pub fn get_number(&mut self, key: &str) -> Option<i64> {
        self.get_raw(key).and_then(|bytes| metrics::decode_counter(&bytes))
    }

    /// The bytes at `key` (`None` if absent or on a store error, which is counted).
    pub fn get_raw(&mut self, key: &str) -> Option<Vec<u8>> {
        match self.bucket.as_ref().map(|b| b.get(key)) {
            Some(Ok(value)) => value,
            _ => {
                self.errors += 1;
                None
            }
        }
    }

    /// Writes bytes at a key that is never incremented.
    pub fn set_raw(&mut self, key: &str, value: &[u8]) {
        let ok = self.bucket.as_ref().is_some_and(|b| b.set(key, value).is_ok());
        if !ok {
            self.errors += 1;
        }
    }

    /// An atomic increment whose new value is not needed.
    pub fn add(&mut self, key: &str, delta: i64) {
        let _ = self.increment(key, delta);
    }

    pub fn add_all(&mut self, increments: impl IntoIterator<Item = (String, i64)>) {
        for (key, delta) in increments {
            self.add(&key, delta);
        }
    }

    /// Gauges are written whole, in the same 8-byte little-endian form an
    /// increment leaves in Spin's SQLite store.
    pub fn set_gauge(&mut self, key: &str, value: i64) {
        self.set_raw(key, &value.to_le_bytes());
    }

    /// Every stored series with its value, for `/metrics`.
    pub fn read_all(&self) -> Result<Vec<(String, i64)>, String> {
        let bucket = self.bucket.as_ref().ok_or("the metrics store is not available")?;
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = bucket.list_keys(cursor.as_deref()).map_err(|e| format!("listing metrics: {e:?}"))?;
            for key in page.keys {
                if let Ok(Some(bytes)) = bucket.get(&key) {
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

/// The response cache. Disabled (every lookup misses, nothing is written)
/// when the TTL is zero or the store cannot be opened. One `get` per lookup and
/// one `set` per write, whatever the backend: nothing here lists or counts keys.
pub struct Cache {
    store: Option<Store>,
    /// The same store through `wasi:keyvalue`, for the atomic in-flight leases;
    /// opened on the first miss.
    leases: Option<store::Bucket>,
    ttl_ms: u64,
    pub errors: u32,
}

impl Cache {
    /// A cache that misses every lookup and keeps nothing.
    pub fn disabled() -> Cache {
        Cache { store: None, leases: None, ttl_ms: 0, errors: 0 }
    }

    pub async fn open(ttl: std::time::Duration) -> Cache {
        if ttl.is_zero() {
            return Cache::disabled();
        }
        match Store::open(CACHE_LABEL).await {
            Ok(store) => Cache { store: Some(store), leases: None, ttl_ms: ttl.as_millis() as u64, errors: 0 },
            Err(_) => Cache { errors: 1, ..Cache::disabled() },
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// The fresh entry stored under `key`, if its slot holds one.
    pub async fn get<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let store = self.store.as_ref()?;
        match store.get(&cache::slot(key)).await {
            Ok(Some(bytes)) => cache::decode(key, &bytes, now_ms()),
            Ok(None) => None,
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    /// Stores `value` under `key` for the TTL, replacing whatever held its slot.
    pub async fn put<T: Serialize>(&mut self, key: &str, value: &T) {
        self.put_for(key, value, self.ttl_ms).await;
    }

    /// Stores `value` under `key` for `ttl_ms`.
    pub async fn put_for<T: Serialize>(&mut self, key: &str, value: &T, ttl_ms: u64) {
        let Some(store) = self.store.as_ref() else { return };
        let bytes = cache::encode(key, value, now_ms(), ttl_ms);
        if store.set(&cache::slot(key), bytes).await.is_err() {
            self.errors += 1;
        }
    }

    /// Takes a turn on the lease: `Some(1)` for the first taker, who leads.
    pub fn take_lease(&mut self, lease: &str) -> Option<i64> {
        if self.leases.is_none() {
            self.leases = store::open(CACHE_LABEL).ok();
        }
        let taken = self.leases.as_ref().and_then(|b| atomics::increment(b, lease, 1).ok());
        if taken.is_none() {
            self.errors += 1;
        }
        taken
    }

    /// Whether the lease is still held (its leader has not finished).
    pub fn lease_held(&mut self, lease: &str) -> bool {
        match self.leases.as_ref().map(|b| b.exists(lease)) {
            Some(Ok(held)) => held,
            _ => {
                self.errors += 1;
                false
            }
        }
    }

    pub fn release_lease(&mut self, lease: &str) {
        if self.leases.as_ref().is_some_and(|b| b.delete(lease).is_err()) {
            self.errors += 1;
        }
    }
}

/// Wall-clock milliseconds: entries must expire across instances and restarts.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
