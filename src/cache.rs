//! The response cache's pure half: keys, entry encoding with expiry, and the
//! clean-up plan. Ximilar bills every image it analyses, so a repeat within the
//! TTL, and `/tag` of a crop `/detect` just produced, cost nothing.
//!
//! Bound: an entry is served for at most the TTL, and an expired one is deleted
//! when met. Every [`SWEEP_EVERY`] writes (counted by an atomic counter in the
//! store) the keys are counted; past [`MAX_ENTRIES`] a sweep deletes the expired
//! entries and then those closest to expiry. So the store holds at most about
//! `MAX_ENTRIES + SWEEP_EVERY` entries (plus writes racing a sweep), and below
//! the bound a write costs no reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::urls::ImageUrl;

pub const MAX_ENTRIES: usize = 10_000;
pub const SWEEP_EVERY: i64 = 64;

/// Every key of ours starts with this; a format change bumps it.
pub const PREFIX: &str = "v1:";
/// The write counter that paces sweeps (an atomic counter, never an entry).
pub const WRITES_KEY: &str = "v1:writes";

pub fn detect_key(url: &ImageUrl) -> String {
    format!("{PREFIX}detect:{}", url.cache_key())
}

/// Also the key under which `/detect` leaves each item's tags (its `crop_url`).
pub fn tag_key(url: &ImageUrl) -> String {
    format!("{PREFIX}tag:{}", url.cache_key())
}

pub fn search_key(url: &ImageUrl, category: Option<&str>, top_k: u32) -> String {
    // The category's length makes the key unambiguous whatever it contains.
    let category = category.unwrap_or("");
    format!("{PREFIX}search:{top_k}:{}:{category}:{}", category.len(), url.cache_key())
}

pub const HEALTH_KEY: &str = "v1:health";

#[derive(Serialize, Deserialize)]
struct Entry {
    /// Unix milliseconds after which the entry is stale.
    exp: u64,
    v: Value,
}

pub fn encode(value: &Value, now_ms: u64, ttl_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&Entry { exp: now_ms.saturating_add(ttl_ms), v: value.clone() }).expect("entry serialises")
}

#[derive(Debug, PartialEq)]
pub enum Lookup {
    Fresh(Value),
    /// Present but stale or unreadable: delete it.
    Stale,
}

pub fn decode(bytes: &[u8], now_ms: u64) -> Lookup {
    match serde_json::from_slice::<Entry>(bytes) {
        Ok(entry) if now_ms < entry.exp => Lookup::Fresh(entry.v),
        _ => Lookup::Stale,
    }
}

/// Expiry of a stored entry, for sweeping; `None` if it is not an entry.
pub fn expiry(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Entry>(bytes).ok().map(|e| e.exp)
}

/// Which keys a sweep deletes: every expired or unreadable entry of ours, then
/// the soonest-expiring live ones beyond `max_entries`.
pub fn sweep_plan(entries: Vec<(String, Option<u64>)>, now_ms: u64, max_entries: usize) -> Vec<String> {
    let mut doomed = Vec::new();
    let mut live = Vec::new();
    for (key, exp) in entries {
        if !key.starts_with(PREFIX) || key == WRITES_KEY {
            continue;
        }
        match exp {
            Some(exp) if exp > now_ms => live.push((exp, key)),
            _ => doomed.push(key),
        }
    }
    if live.len() > max_entries {
        live.sort();
        let excess = live.len() - max_entries;
        doomed.extend(live.into_iter().take(excess).map(|(_, key)| key));
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::urls::parse_image_url;

    fn url(s: &str) -> ImageUrl {
        parse_image_url(s).unwrap()
    }

    #[test]
    fn entries_expire_at_the_ttl() {
        let bytes = encode(&serde_json::json!({"items": []}), 1_000, 500);
        assert_eq!(decode(&bytes, 1_499), Lookup::Fresh(serde_json::json!({"items": []})));
        assert_eq!(decode(&bytes, 1_500), Lookup::Stale);
        assert_eq!(decode(b"garbage", 0), Lookup::Stale);
        assert_eq!(expiry(&bytes), Some(1_500));
    }

    #[test]
    fn keys_follow_url_normalisation_and_keep_the_query() {
        assert_eq!(detect_key(&url("HTTPS://A.example:443/x.jpg?s=1")), detect_key(&url("https://a.example/x.jpg?s=1")));
        assert_ne!(detect_key(&url("https://a.example/x.jpg?s=1")), detect_key(&url("https://a.example/x.jpg?s=2")));
        assert_ne!(tag_key(&url("https://a.example/x.jpg#xywh=1,1,2,2")), tag_key(&url("https://a.example/x.jpg")));
        let u = url("https://a.example/x.jpg");
        assert_ne!(search_key(&u, Some("a"), 10), search_key(&u, None, 10));
        assert_ne!(search_key(&u, None, 10), search_key(&u, None, 11));
        assert_ne!(detect_key(&u), tag_key(&u));
    }

    #[test]
    fn sweep_deletes_expired_then_oldest_beyond_the_bound() {
        let entries = vec![
            ("v1:tag:a".to_string(), Some(50)),
            ("v1:tag:b".to_string(), Some(300)),
            ("v1:tag:c".to_string(), Some(200)),
            ("v1:tag:d".to_string(), Some(400)),
            ("v1:broken".to_string(), None),
            (WRITES_KEY.to_string(), None),
            ("not-ours".to_string(), None),
        ];
        let mut plan = sweep_plan(entries, 100, 2);
        plan.sort();
        assert_eq!(plan, vec!["v1:broken", "v1:tag:a", "v1:tag:c"]);
    }
}
