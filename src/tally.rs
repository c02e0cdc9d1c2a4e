//! Counters that cost no store call per increment, for the key-value state store.
//!
//! Each instance keeps its own cumulative totals and writes them whole, as one
//! record, to a slot of the `metrics` store: one asynchronous write for many
//! requests, where an atomic increment per series would be a synchronous call
//! each (Spin runs those holding the instance). `/metrics` adds up the records.
//!
//! The slots form a ring of [`RING`] keys, so the store stays bounded without
//! anything ever deleting a record. An instance takes the next slot of a shared
//! sequence; the record it finds there belongs to an instance that is gone
//! (its last write is more than [`QUIET_MS`] old, and instances live seconds),
//! so the newcomer absorbs its counters and carries them on: the sum over all
//! slots never goes down, which Prometheus would read as a counter reset.
//! Gauges (requests in progress) belong to the live instance alone.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::metrics::HTTP_IN_PROGRESS;

/// How many slots the records use: well over the instances alive at once, so a
/// newcomer finds a free slot within a few random picks.
pub const RING: u64 = 4096;

const PREFIX: &str = "tally:";

const CLAIM_PREFIX: &str = "tally-claim:";

/// A record not written for this long belongs to an instance that is gone: Spin drops
/// an instance after 1 s without requests, and a request ends within its deadline.
pub const QUIET_MS: u64 = 120_000;

/// One instance's totals, as stored in its slot.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was last written (Unix milliseconds).
    pub at: u64,
    /// Counters and histogram buckets: this instance's, plus those of the gone
    /// instances whose slot it took over.
    pub counters: BTreeMap<String, i64>,
    /// Gauges of this instance alone.
    pub gauges: BTreeMap<String, i64>,
}

/// The store key of the slot that number `n` names (any number: it wraps round the ring).
pub fn slot_key(n: u64) -> String {
    format!("{PREFIX}{:04x}", n % RING)
}

pub fn is_record_key(key: &str) -> bool {
    key.starts_with(PREFIX)
}

/// What newcomers contend on for `slot` while its record was last written at
/// `at` (0: no record): a new record, or a new claim, makes a new contest.
pub fn claim_key(slot: &str, at: u64) -> String {
    format!("{CLAIM_PREFIX}{slot}:{at}")
}

/// The keys of claims (not series, and never listed on `/metrics`).
pub fn is_claim_key(key: &str) -> bool {
    key.starts_with(CLAIM_PREFIX)
}

/// Series that go up and down with the instance's life (never absorbed).
pub fn is_gauge(series: &str) -> bool {
    series.starts_with(HTTP_IN_PROGRESS)
}

impl Record {
    pub fn add(&mut self, series: &str, delta: i64) {
        let totals = if is_gauge(series) { &mut self.gauges } else { &mut self.counters };
        match totals.get_mut(series) {
            Some(total) => *total += delta,
            None => {
                totals.insert(series.to_string(), delta);
            }
        }
    }

    /// Takes over the counters of the gone instance that held the slot before.
    pub fn absorb(&mut self, gone: &Record) {
        for (series, value) in &gone.counters {
            *self.counters.entry(series.clone()).or_default() += value;
        }
    }

    /// Whether the instance that wrote it can still be running.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.at) < QUIET_MS
    }

    /// Its series for `/metrics`: the counters, and the gauges while the instance can be live.
    pub fn series(&self, now_ms: u64) -> impl Iterator<Item = (String, i64)> + '_ {
        let gauges = self.gauges.iter().filter(move |_| self.is_live(now_ms));
        self.counters.iter().chain(gauges).map(|(k, v)| (k.clone(), *v))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serialises")
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUESTS: &str = r#"http_requests_total{handler="detect",method="POST",status="2xx",caller="anonymous"}"#;
    const IN_PROGRESS: &str = r#"http_requests_in_progress{handler="detect",method="POST"}"#;

    #[test]
    fn slots_wrap_round_the_ring() {
        assert_eq!(slot_key(1), "tally:0001");
        assert_eq!(slot_key(RING + 1), slot_key(1));
        assert_ne!(slot_key(RING), slot_key(RING - 1));
        assert_eq!(slot_key(u64::MAX), "tally:0fff");
        let claim = claim_key(&slot_key(7), 1_700_000_000_000);
        assert!(is_record_key(&slot_key(7)) && !is_record_key(&claim));
        assert!(is_claim_key(&format!("{claim}/door")) && !is_claim_key(&slot_key(7)));
        assert_ne!(claim, claim_key(&slot_key(7), 0));
    }

    #[test]
    fn a_newcomer_carries_the_gone_instances_counters_but_not_its_gauges() {
        let mut gone = Record { at: 1_000, ..Record::default() };
        gone.add(REQUESTS, 5);
        gone.add(IN_PROGRESS, 1);
        let mut new = Record::default();
        new.add(REQUESTS, 2);
        new.add(IN_PROGRESS, 1);
        new.absorb(&gone);
        assert_eq!(new.counters[REQUESTS], 7, "nothing is lost when a slot changes hands");
        assert_eq!(new.gauges[IN_PROGRESS], 1, "a gone instance has nothing in progress");
    }

    #[test]
    fn gauges_of_a_quiet_record_are_not_reported() {
        let mut r = Record { at: 10_000, ..Record::default() };
        r.add(IN_PROGRESS, 1);
        r.add(REQUESTS, 3);
        assert_eq!(r.series(10_000 + QUIET_MS - 1).count(), 2);
        let quiet: Vec<_> = r.series(10_000 + QUIET_MS).collect();
        assert_eq!(quiet, vec![(REQUESTS.to_string(), 3)], "an instance that died mid-request leaves no gauge");
        assert!(!r.is_live(10_000 + QUIET_MS) && r.is_live(10_000));
    }

    #[test]
    fn records_round_trip_and_junk_is_none() {
        let mut r = Record { at: 42, ..Record::default() };
        r.add(REQUESTS, 1);
        r.add(REQUESTS, 1);
        r.add(IN_PROGRESS, 1);
        r.add(IN_PROGRESS, -1);
        assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
        assert_eq!(r.counters[REQUESTS], 2);
        assert_eq!(r.gauges[IN_PROGRESS], 0);
        assert_eq!(Record::decode(b"\x01\x00\x00\x00\x00\x00\x00\x00"), None);
    }
}
