//! The state in Spin's key-value stores (`state_store = "key-value"`, the
//! default): counters and the breaker in `metrics`, cache entries and leases in
//! `cache`. Redis behind both is how replicas share them.
//!
//! Reads and writes go through `spin:key-value`, whose functions are
//! asynchronous: while one waits (a Redis round trip) the instance serves its
//! other requests. `wasi:keyvalue` atomics are a synchronous import that Spin
//! runs holding the whole instance, so they are kept for what must be exact: a
//! budget's reservation and the breaker's failure count and probe. What only
//! needs one winner among requests racing for it, the in-flight lease of a miss
//! and the slot a new instance takes for its counters (`crate::tally`), is
//! decided with reads and writes alone ([`Handles::split`]). Counters
//! themselves cost no call per request: they are added up in the instance and
//! written as one record (see the `tally` module beside this one). Store handles
//! are opened once per instance and kept.

use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
use spin_sdk::key_value::Store;
use std::cell::RefCell;
use std::rc::Rc;

use super::now_ms;
use crate::metrics;
use crate::tally::{self, Record};

pub const METRICS_LABEL: &str = "metrics";
pub const CACHE_LABEL: &str = "cache";

/// A store call failed; the facade counts it and goes on.
pub struct Failed;

/// One store, opened once per instance through both interfaces: `spin:key-value`
/// at once, `wasi:keyvalue` (for atomics) on first use.
pub struct Handles {
    label: &'static str,
    store: Store,
    atomic: RefCell<Option<store::Bucket>>,
}

impl Handles {
    async fn open(label: &'static str) -> Result<Handles, Failed> {
        let store = Store::open(label).await.map_err(|_| Failed)?;
        Ok(Handles { label, store, atomic: RefCell::new(None) })
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Failed> {
        self.store.get(key).await.map_err(|_| Failed)
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), Failed> {
        self.store.set(key, value).await.map_err(|_| Failed)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Failed> {
        self.store.exists(key).await.map_err(|_| Failed)
    }

    pub async fn delete(&self, key: &str) -> Result<(), Failed> {
        self.store.delete(key).await.map_err(|_| Failed)
    }

    /// Whether this caller, named `me`, is the one winner of `name`: of all the
    /// callers that run it on the same name, at most one wins; a caller alone
    /// wins. Under contention every caller may lose, which callers must allow
    /// for. A splitter (Moir and Anderson, 1995) on two keys, `name/last` and
    /// `name/door`, built from reads and writes alone, so from asynchronous
    /// calls; it needs a store whose single-key reads and writes are
    /// linearisable, as Spin's SQLite store and a single Redis are. Why at most
    /// one wins: a winner read its own name in `last` after closing the door, so
    /// anyone who wrote `last` after that read found the door closed.
    pub async fn split(&self, name: &str, me: &[u8]) -> Result<bool, Failed> {
        let (last, door) = split_keys(name);
        // A latecomer leaves `last` alone, so it cannot take the win from the others.
        if self.exists(&door).await? {
            return Ok(false);
        }
        self.set(&last, me).await?;
        if self.exists(&door).await? {
            return Ok(false);
        }
        self.set(&door, b"-").await?;
        Ok(self.get(&last).await?.as_deref() == Some(me))
    }

    /// Makes `name` winnable again (its two keys gone).
    pub async fn reset_split(&self, name: &str) -> Result<(), Failed> {
        let (last, door) = split_keys(name);
        self.delete(&last).await?;
        self.delete(&door).await
    }

    /// The store through `wasi:keyvalue`, opened on first use.
    fn bucket(&self) -> Result<std::cell::Ref<'_, store::Bucket>, Failed> {
        if self.atomic.borrow().is_none() {
            let bucket = store::open(self.label).map_err(|_| Failed)?;
            *self.atomic.borrow_mut() = Some(bucket);
        }
        Ok(std::cell::Ref::map(self.atomic.borrow(), |b| b.as_ref().expect("opened above")))
    }

    /// The store's own atomic increment (synchronous: keep it off the common path).
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Failed> {
        atomics::increment(&*self.bucket()?, key, delta).map_err(|_| Failed)
    }

    /// Every key, in one synchronous call that returns them all. Not
    /// `spin:key-value`'s `get-keys`: Spin's SQLite store streams that listing
    /// while holding its lock, so a second scrape in the same instance, waiting
    /// for the lock with the instance's thread, would stop the first from ever
    /// reading its stream to the end.
    fn keys(&self) -> Result<Vec<String>, Failed> {
        let page = self.bucket()?.list_keys(None).map_err(|_| Failed)?;
        Ok(page.keys)
    }
}

fn round_key(lease: &str, round: u32) -> String {
    format!("{lease}/{round}")
}

fn split_keys(name: &str) -> (String, String) {
    (format!("{name}/last"), format!("{name}/door"))
}

/// A name for this request in [`Handles::split`]: 64 random bits, in hex.
pub fn random_name() -> Vec<u8> {
    format!("{:016x}", spin_sdk::wasip3::random::random::get_random_u64()).into_bytes()
}

thread_local! {
    static METRICS: RefCell<Option<Rc<Handles>>> = const { RefCell::new(None) };
    static CACHE: RefCell<Option<Rc<Handles>>> = const { RefCell::new(None) };
}

/// The instance's handles to `label`, opened on first use.
async fn handles(
    slot: &'static std::thread::LocalKey<RefCell<Option<Rc<Handles>>>>,
    label: &'static str,
) -> Result<Rc<Handles>, Failed> {
    if let Some(open) = slot.with_borrow(Clone::clone) {
        return Ok(open);
    }
    let opened = Rc::new(Handles::open(label).await?);
    // Another request of this instance may have opened it meanwhile: keep the first.
    Ok(slot.with_borrow_mut(|s| s.get_or_insert(opened).clone()))
}

pub struct KvCounters(pub Rc<Handles>);

impl KvCounters {
    pub async fn open() -> Result<KvCounters, Failed> {
        handles(&METRICS, METRICS_LABEL).await.map(KvCounters)
    }

    /// The store's increment decides; a unit over the limit is given back.
    /// A read first, so a spent limit writes nothing.
    pub async fn reserve(&self, key: &str, limit: i64) -> Result<bool, Failed> {
        let spent = self.0.get(key).await?.and_then(|bytes| metrics::decode_counter(&bytes)).unwrap_or(0);
        if spent >= limit {
            return Ok(false);
        }
        if self.0.increment(key, 1)? <= limit {
            return Ok(true);
        }
        self.0.increment(key, -1)?;
        Ok(false)
    }

    /// Gauges are written whole, in the same 8-byte little-endian form an
    /// increment leaves in Spin's SQLite key-value store.
    pub async fn set_gauge(&self, key: &str, value: i64) -> Result<(), Failed> {
        self.0.set(key, &value.to_le_bytes()).await
    }

    /// Every series with its value, for `/metrics`: the instances' records (see
    /// `crate::tally`) and the values kept under keys of their own. The one
    /// listing of keys the gateway makes, over a bounded set of them.
    pub async fn read_all(&self) -> Result<Vec<(String, i64)>, String> {
        let keys = self.0.keys().map_err(|_| "listing the metrics store failed".to_string())?;
        let now = now_ms();
        let mut entries = Vec::new();
        for key in keys.into_iter().filter(|key| !tally::is_claim_key(key)) {
            let Ok(Some(bytes)) = self.0.get(&key).await else { continue };
            if tally::is_record_key(&key) {
                entries.extend(Record::decode(&bytes).iter().flat_map(|r| r.series(now)));
            } else if let Some(value) = metrics::decode_counter(&bytes) {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }
}

pub struct KvCache(Rc<Handles>);

impl KvCache {
    pub async fn open() -> Result<KvCache, Failed> {
        handles(&CACHE, CACHE_LABEL).await.map(KvCache)
    }

    pub async fn get(&self, slot: &str) -> Result<Option<Vec<u8>>, Failed> {
        self.0.get(slot).await
    }

    pub async fn set(&self, slot: &str, entry: Vec<u8>) -> Result<(), Failed> {
        self.0.set(slot, &entry).await
    }

    /// Whether this request leads: the winner of round `round` of the lease's
    /// contest (a split of its own, so a round nobody won never stops the next),
    /// which then marks the lease held, under the lease's own key, for those who follow.
    pub async fn take_lease(&self, lease: &str, round: u32) -> Result<bool, Failed> {
        let me = random_name();
        if !self.0.split(&round_key(lease, round), &me).await? {
            return Ok(false);
        }
        self.0.set(lease, &me).await?;
        Ok(true)
    }

    pub async fn lease_held(&self, lease: &str) -> Result<bool, Failed> {
        self.0.exists(lease).await
    }

    /// The mark first, so followers look for the answer at once; then the
    /// contest's rounds up to the one won, so the lease can be taken again.
    pub async fn release_lease(&self, lease: &str, round: u32) -> Result<(), Failed> {
        self.0.delete(lease).await?;
        for past in 0..=round {
            self.0.reset_split(&round_key(lease, past)).await?;
        }
        Ok(())
    }
}
