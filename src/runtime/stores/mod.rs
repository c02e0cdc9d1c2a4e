//! The gateway's shared state: counters (for `/metrics`, the breaker and the
//! callers' budgets) and the response cache with its in-flight leases. It lives
//! in a store, never in an instance, because Spin pools instances and runs
//! replicas. Two backends, chosen by `state_store` ([`StateStore`]): Spin's
//! key-value stores (`key_value.rs`, the default; Redis for replicas) or its
//! SQLite database (`sqlite.rs`, a file that survives restarts). Neither may
//! ever fail a request: errors are counted in the request's log line and
//! otherwise ignored.

mod key_value;
mod sqlite;
mod tally;

use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::sqlite::Value;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use self::key_value::{Failed, KvCache, KvCounters};
use self::sqlite::Database;
use crate::cache;
use crate::config::StateStore;
use crate::metrics;

enum CounterStore {
    Unavailable,
    KeyValue(KvCounters),
    /// Shared with the request's cache: one connection per request.
    Sqlite(Rc<Database>),
}

/// Counters, and the few values kept beside them (the breaker's state, gauges).
/// Increments are kept until [`Counters::flush`], which writes them together.
pub struct Counters {
    store: CounterStore,
    pending: BTreeMap<String, i64>,
    pub errors: u32,
}

impl Counters {
    /// Opens the configured store; `None` (a configuration error) opens nothing.
    pub async fn open(kind: Option<StateStore>) -> Counters {
        let store = match kind {
            None => Ok(CounterStore::Unavailable),
            Some(StateStore::KeyValue) => KvCounters::open().await.map(CounterStore::KeyValue),
            Some(StateStore::Sqlite) => Database::open().await.map(|db| CounterStore::Sqlite(Rc::new(db))),
        };
        let errors = u32::from(store.is_err());
        Counters { store: store.unwrap_or(CounterStore::Unavailable), pending: BTreeMap::new(), errors }
    }

    /// An atomic increment, written now, that reports the new value (`None` on a store error).
    pub async fn increment(&mut self, key: &str, delta: i64) -> Option<i64> {
        let result = match &self.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(kv) => kv.0.increment(key, delta),
            CounterStore::Sqlite(db) => db.increment(key, delta).await,
        };
        tally(&mut self.errors, result)
    }

    /// Takes one unit of `limit` on `key` for good, or nothing: `Ok(true)` when
    /// the count, this unit included, is within the limit. Concurrent callers
    /// can never take more than `limit` between them. A spent limit costs one
    /// read and no write; a store error is `Err` (the caller decides, and
    /// budgets refuse).
    pub async fn reserve(&mut self, key: &str, limit: u64) -> Result<bool, Failed> {
        if limit == 0 {
            return Ok(false);
        }
        let limit = limit.min(i64::MAX as u64) as i64;
        let result = match &self.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(kv) => kv.reserve(key, limit).await,
            CounterStore::Sqlite(db) => db.reserve(key, limit).await,
        };
        tally(&mut self.errors, result).ok_or(Failed)
    }

    /// Gives back units taken with [`Counters::reserve`], at once.
    pub async fn release(&mut self, key: &str, units: i64) {
        if units > 0 {
            let _ = self.increment(key, -units).await;
        }
    }

    /// Counts `delta` on `key`, written at the next [`Counters::flush`].
    pub fn add(&mut self, key: &str, delta: i64) {
        *self.pending.entry(key.to_string()).or_default() += delta;
    }

    pub fn add_all(&mut self, increments: impl IntoIterator<Item = (String, i64)>) {
        for (key, delta) in increments {
            *self.pending.entry(key).or_default() += delta;
        }
    }

    /// Writes the increments counted so far: one statement on SQLite; on the
    /// key-value store, into this instance's totals, written as one record
    /// (`tally`), shared with the instance's other requests.
    pub async fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        match &self.store {
            CounterStore::Unavailable => self.errors += u32::from(!pending.is_empty()),
            CounterStore::KeyValue(kv) => {
                self.errors += tally::take_errors();
                if !pending.is_empty() {
                    tally::add_and_write(&kv.0, pending).await;
                }
            }
            CounterStore::Sqlite(db) => {
                tally(&mut self.errors, db.add_all(&pending).await);
            }
        }
    }

    /// [`Counters::flush`] without waiting for the write where the store allows
    /// it (the key-value store's record; SQLite writes at once).
    pub async fn flush_in_background(&mut self) {
        match &self.store {
            CounterStore::KeyValue(kv) => {
                let pending = std::mem::take(&mut self.pending);
                if !pending.is_empty() {
                    tally::add_in_background(&kv.0, pending);
                }
            }
            _ => self.flush().await,
        }
    }

    /// A counter's value, in either encoding (`None` if absent or on a store error).
    pub async fn get_number(&mut self, key: &str) -> Option<i64> {
        self.get_raw(key).await.and_then(|bytes| metrics::decode_counter(&bytes))
    }

    /// The bytes at `key` (`None` if absent or on a store error, which is counted).
    pub async fn get_raw(&mut self, key: &str) -> Option<Vec<u8>> {
        let result = match &self.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(kv) => kv.0.get(key).await,
            CounterStore::Sqlite(db) => db.get(key).await,
        };
        tally(&mut self.errors, result).flatten()
    }

    /// Writes bytes at a key that is never incremented.
    pub async fn set_raw(&mut self, key: &str, value: &[u8]) {
        let result = match &self.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(kv) => kv.0.set(key, value).await,
            CounterStore::Sqlite(db) => db.set(key, Value::Blob(value.to_vec())).await,
        };
        tally(&mut self.errors, result);
    }

    /// A gauge, written whole and at once.
    pub async fn set_gauge(&mut self, key: &str, value: i64) {
        let result = match &self.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(kv) => kv.set_gauge(key, value).await,
            CounterStore::Sqlite(db) => db.set(key, Value::Integer(value)).await,
        };
        tally(&mut self.errors, result);
    }

    /// Every stored series with its value, for `/metrics`.
    pub async fn read_all(&self) -> Result<Vec<(String, i64)>, String> {
        match &self.store {
            CounterStore::Unavailable => Err("the metrics store is not available".into()),
            CounterStore::KeyValue(kv) => kv.read_all().await,
            CounterStore::Sqlite(db) => db.read_all().await,
        }
    }
}

enum CacheStore {
    Off,
    KeyValue(KvCache),
    Sqlite(Rc<Database>),
}

/// The response cache. Off (every lookup misses, nothing is written) when the
/// TTL is zero or the store cannot be opened. One read per lookup and one write
/// per answer, whatever the backend: nothing here lists or counts keys.
pub struct Cache {
    store: CacheStore,
    ttl_ms: u64,
    pub errors: u32,
}

impl Cache {
    /// A cache that misses every lookup and keeps nothing.
    pub fn disabled() -> Cache {
        Cache { store: CacheStore::Off, ttl_ms: 0, errors: 0 }
    }

    /// Opens the cache in the same store as `counters` (on SQLite, the same connection).
    pub async fn open(ttl: std::time::Duration, counters: &Counters) -> Cache {
        if ttl.is_zero() {
            return Cache::disabled();
        }
        let store = match &counters.store {
            CounterStore::Unavailable => Err(Failed),
            CounterStore::KeyValue(_) => KvCache::open().await.map(CacheStore::KeyValue),
            CounterStore::Sqlite(db) => Ok(CacheStore::Sqlite(db.clone())),
        };
        match store {
            Ok(store) => Cache { store, ttl_ms: ttl.as_millis() as u64, errors: 0 },
            Err(Failed) => Cache { errors: 1, ..Cache::disabled() },
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.store, CacheStore::Off)
    }

    /// The fresh entry stored under `key`, if its slot holds one.
    pub async fn get<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        self.get_since(key, 0).await.map(|(value, _)| value)
    }

    /// The fresh entry stored under `key` no earlier than `not_before_ms`, with
    /// when it was stored.
    pub async fn get_since<T: DeserializeOwned>(&mut self, key: &str, not_before_ms: u64) -> Option<(T, u64)> {
        let slot = cache::slot(key);
        let result = match &self.store {
            CacheStore::Off => return None,
            CacheStore::KeyValue(kv) => kv.get(&slot).await,
            CacheStore::Sqlite(db) => db.cache_get(&slot).await,
        };
        let bytes = tally(&mut self.errors, result).flatten()?;
        cache::decode_since(key, &bytes, now_ms(), not_before_ms)
    }

    /// Stores `value` under `key` for the TTL, replacing whatever held its slot.
    pub async fn put<T: Serialize>(&mut self, key: &str, value: &T) {
        self.put_for(key, value, self.ttl_ms).await;
    }

    /// Stores `value` under `key` for `ttl_ms`.
    pub async fn put_for<T: Serialize>(&mut self, key: &str, value: &T, ttl_ms: u64) {
        let (slot, entry) = (cache::slot(key), cache::encode(key, value, now_ms(), ttl_ms));
        let result = match &self.store {
            CacheStore::Off => return,
            CacheStore::KeyValue(kv) => kv.set(&slot, entry).await,
            CacheStore::Sqlite(db) => db.cache_set(&slot, entry).await,
        };
        tally(&mut self.errors, result);
    }

    /// Takes part in round `round` of the contest for `lease`: `Some(true)` when
    /// this request leads (`None`: the store failed). On SQLite the first taker
    /// always leads and rounds play no part; on the key-value store a round can end
    /// without a winner, and those who found nobody leading move on to the next.
    pub async fn take_lease(&mut self, lease: &Lease) -> Option<bool> {
        let result = match &mut self.store {
            CacheStore::Off => Err(Failed),
            CacheStore::KeyValue(kv) => kv.take_lease(&lease.key, lease.round).await,
            CacheStore::Sqlite(db) => db.take_lease(&lease.key).await,
        };
        tally(&mut self.errors, result)
    }

    /// Whether the lease is still held (its leader has not finished).
    pub async fn lease_held(&mut self, lease: &Lease) -> bool {
        let result = match &mut self.store {
            CacheStore::Off => Err(Failed),
            CacheStore::KeyValue(kv) => kv.lease_held(&lease.key).await,
            CacheStore::Sqlite(db) => db.lease_held(&lease.key).await,
        };
        tally(&mut self.errors, result).unwrap_or(false)
    }

    /// Frees a lease this request won.
    pub async fn release_lease(&mut self, lease: &Lease) {
        let result = match &mut self.store {
            CacheStore::Off => Err(Failed),
            CacheStore::KeyValue(kv) => kv.release_lease(&lease.key, lease.round).await,
            CacheStore::Sqlite(db) => db.release_lease(&lease.key).await,
        };
        tally(&mut self.errors, result);
    }
}

/// The in-flight lease of one question in one period of the clock (its `key`,
/// see `crate::cache::lease_key`), and the round of its contest a request is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub round: u32,
}

/// The value of a store call; a failure is counted in `errors` (the request's
/// log line) and otherwise ignored.
fn tally<T>(errors: &mut u32, result: Result<T, Failed>) -> Option<T> {
    if result.is_err() {
        *errors += 1;
    }
    result.ok()
}

/// Wall-clock milliseconds: entries must expire across instances and restarts.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
