//! The two key-value stores: `metrics` (atomic counters through
//! `wasi:keyvalue`) and `cache` (JSON entries with expiry through Spin's
//! key-value API). Neither may ever fail a request: errors are counted in the
//! request's log line and otherwise ignored.

use serde_json::Value;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
use spin_sdk::key_value::Store;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::{self, Lookup};
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

    pub fn add(&mut self, key: &str, delta: i64) {
        let ok = self.bucket.as_ref().is_some_and(|b| atomics::increment(b, key, delta).is_ok());
        if !ok {
            self.errors += 1;
        }
    }

    pub fn add_all(&mut self, increments: impl IntoIterator<Item = (String, i64)>) {
        for (key, delta) in increments {
            self.add(&key, delta);
        }
    }

    /// Gauges are written whole, in the same 8-byte little-endian form an
    /// increment leaves in Spin's SQLite store.
    pub fn set_gauge(&mut self, key: &str, value: i64) {
        let ok = self.bucket.as_ref().is_some_and(|b| b.set(key, &value.to_le_bytes()).is_ok());
        if !ok {
            self.errors += 1;
        }
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
/// when the TTL is zero or the store cannot be opened.
pub struct Cache {
    store: Option<Store>,
    /// The same store through `wasi:keyvalue`, for the atomic write counter.
    counter: Option<store::Bucket>,
    ttl_ms: u64,
    pub errors: u32,
}

impl Cache {
    pub async fn open(ttl: std::time::Duration) -> Cache {
        if ttl.is_zero() {
            return Cache { store: None, counter: None, ttl_ms: 0, errors: 0 };
        }
        match Store::open(CACHE_LABEL).await {
            Ok(store) => Cache {
                store: Some(store),
                counter: store::open(CACHE_LABEL).ok(),
                ttl_ms: ttl.as_millis() as u64,
                errors: 0,
            },
            Err(_) => Cache { store: None, counter: None, ttl_ms: 0, errors: 1 },
        }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    pub async fn get(&mut self, key: &str) -> Option<Value> {
        let store = self.store.as_ref()?;
        match store.get(key).await {
            Ok(Some(bytes)) => match cache::decode(&bytes, now_ms()) {
                Lookup::Fresh(value) => Some(value),
                Lookup::Stale => {
                    let _ = store.delete(key).await;
                    None
                }
            },
            Ok(None) => None,
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    pub async fn put(&mut self, key: &str, value: &Value) {
        self.put_for(key, value, self.ttl_ms).await;
    }

    /// Writes with a TTL of its own (the health probe's few seconds).
    pub async fn put_for(&mut self, key: &str, value: &Value, ttl_ms: u64) {
        let Some(store) = self.store.as_ref() else { return };
        if store.set(key, cache::encode(value, now_ms(), ttl_ms)).await.is_err() {
            self.errors += 1;
            return;
        }
        if self.write_count() % cache::SWEEP_EVERY == 0 {
            self.sweep().await;
        }
    }

    /// Counts writes in the store itself, so sweeps are paced across instances.
    fn write_count(&mut self) -> i64 {
        let counted = self.counter.as_ref().and_then(|b| atomics::increment(b, cache::WRITES_KEY, 1).ok());
        counted.unwrap_or_else(|| {
            self.errors += 1;
            1
        })
    }

    /// Reads expiries only when the store is over its bound: below it, expired
    /// entries are deleted when met, and a miss stays cheap however full the cache.
    async fn sweep(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        let mut keys = store.get_keys().await;
        let mut entries = Vec::new();
        while let Some(key) = keys.next().await {
            if key.starts_with(cache::PREFIX) && key != cache::WRITES_KEY {
                entries.push(key);
            }
        }
        if entries.len() <= cache::MAX_ENTRIES {
            return;
        }
        let mut listed = Vec::with_capacity(entries.len());
        for key in entries {
            let expiry = store.get(&key).await.ok().flatten().and_then(|b| cache::expiry(&b));
            listed.push((key, expiry));
        }
        for key in cache::sweep_plan(listed, now_ms(), cache::MAX_ENTRIES) {
            let _ = store.delete(&key).await;
        }
    }
}

/// Wall-clock milliseconds: entries must expire across instances and restarts.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
