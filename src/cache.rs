//! The response cache's pure half: what an entry is called, where it is stored,
//! and how it expires. Ximilar bills every image it analyses, so a repeat within
//! the TTL, and `/tag` of any crop of a photo `/detect` just saw, cost nothing.
//!
//! The store is bounded without ever being listed or counted (a key listing on
//! Spin's SQLite store holds its one lock for the whole listing, which deadlocks
//! an instance serving several requests). Every entry lives in one of [`SLOTS`]
//! store keys, chosen by a hash of its full key, and carries that full key: a
//! lookup is one `get`, a write one `set`, and a write to a taken slot replaces
//! whatever was there. So the store never holds more than [`SLOTS`] entries, an
//! expired entry is simply ignored until its slot is reused, and a collision
//! costs at most a miss, never a wrong answer.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{Config, TagMode};
use crate::crop::CropLimits;
use crate::urls::{Crop, ImageUrl};

/// How many store keys the cache may use. At a few KiB an entry (a detection
/// with every garment's tags), the store stays within some tens of MiB.
pub const SLOTS: u64 = 16_384;

/// Every store key of ours starts with this; a format change bumps it.
pub const PREFIX: &str = "v3:";

/// Garments already cut for crop mode live in slots of their own, few because
/// each holds a JPEG of up to 1,024 px (a few hundred kB): at most
/// [`CROP_SLOTS`] of them are kept, whatever else the cache holds.
pub const CROP_SLOTS: u64 = 64;

/// How long a garment cut for another request waits for it: the orchestrator
/// asks for a photo's garments one after another, within seconds.
pub const CROP_TTL_MS: u64 = 120_000;

const CROP: &str = "crop:";

/// The store key (slot) an entry with this full key lives in.
pub fn slot(key: &str) -> String {
    let hash = fnv1a(key.as_bytes());
    match key.starts_with(CROP) {
        true => format!("{PREFIX}{CROP}{:02x}", hash % CROP_SLOTS),
        false => format!("{PREFIX}{:04x}", hash % SLOTS),
    }
}

/// FNV-1a, 64 bits: stable across builds, instances and replicas, which the
/// slot of a key must be (std's hasher is randomly seeded).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A fingerprint of the settings that shape one kind of upstream request and
/// its mapping. It is part of every key, so a cached answer cannot outlive the
/// configuration that paid for it (a changed path, collection, mode or field
/// list starts afresh), and two gateways configured differently that share one
/// store never serve each other's answers. SHA-256, because secrets (the token,
/// the collection id) go into some fingerprints and must not be recoverable
/// from a store key.
fn fingerprint(parts: &[&str]) -> String {
    let mut bytes = Vec::new();
    for part in parts {
        // Length-prefixed, so no two lists of parts give the same bytes.
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    crate::auth::sha256(&bytes)[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn tag_mode_parts(config: &Config) -> [&str; 3] {
    match &config.tag_mode {
        TagMode::Fashion => ["fashion", &config.tags_path, ""],
        TagMode::Classify { task_id } => ["classify", &config.classify_path, task_id],
    }
}

/// A photo's detection: every garment with the tags `detect_tags` gave it, so
/// `/detect` repeats and `/tag` of any crop of the photo read this one entry.
pub fn detect_key(config: &Config, source: &ImageUrl) -> String {
    let fp = fingerprint(&[&config.api_url, &config.detect_path]);
    format!("detect:{fp}:{}", source.cache_key())
}

/// `/tag` of a whole image (crops are answered from the detection).
pub fn tag_key(config: &Config, url: &ImageUrl) -> String {
    let fp = fingerprint(&[&[config.api_url.as_str()][..], &tag_mode_parts(config)].concat());
    format!("tag:{fp}:{}", url.cache_key())
}

/// `/search`, keyed by the request Ximilar is sent: the image it is asked
/// about, `k`, and the category only where a filter field sends it. That image
/// is the source photo (every crop of a photo is then one billed search), or in
/// crop mode the `crop_url` itself, whose box and margin decide what is sent.
pub fn search_key(config: &Config, query: &ImageUrl, category: Option<&str>, top_k: u32) -> String {
    let fields = config.search_fields.join(",");
    let filter_field = config.search_filter_field.as_deref().unwrap_or("");
    let mut parts = vec![config.api_url.as_str(), &config.search_path, &config.collection_id, &fields, filter_field];
    // Crop mode's settings change the bytes sent; without it the keys stay as they were.
    let (settings, image) = match (&config.search_crop, query.crop()) {
        (Some(crop), Some(b)) => (crop_settings(&crop.limits), boxed(query.source_url().cache_key(), b)),
        // The source photo is what Ximilar gets, so every crop of it shares the key.
        _ => (String::new(), query.source_url().cache_key()),
    };
    if !settings.is_empty() {
        parts.push(&settings);
    }
    let fp = fingerprint(&parts);
    // The category's length makes the key unambiguous whatever it contains.
    let category = if filter_field.is_empty() { "" } else { category.unwrap_or("") };
    format!("search:{fp}:{top_k}:{}:{category}:{image}", category.len())
}

/// A garment of the photo at `source` cut for crop mode with `limits`: the
/// JPEG bytes depend on nothing else.
pub fn crop_key(limits: &CropLimits, source: &ImageUrl, b: Crop) -> String {
    boxed(photo_cuts_key(limits, source), b)
}

/// The one cutting of the photo at `source` for several of its garments (see
/// [`crop_key`]): searches of its garments that arrive together wait for it.
pub fn photo_cuts_key(limits: &CropLimits, source: &ImageUrl) -> String {
    format!("{}:{}", crop_settings(limits), source.cache_key())
}

/// What decides the bytes of a cut garment besides its photo and box.
fn crop_settings(CropLimits { margin_pct, max_side, quality, .. }: &CropLimits) -> String {
    format!("{CROP}{margin_pct}:{max_side}:{quality}")
}

/// `photo` with the box, as numbers: `pixel:10,20,...` and `10,20,...` are one crop.
fn boxed(photo: String, b: Crop) -> String {
    format!("{photo}#xywh={},{},{},{}", b.x, b.y, b.w, b.h)
}

/// The health probe's verdict, for the token and host it was probed with.
pub fn health_key(config: &Config) -> String {
    format!("health:{}", fingerprint(&[&config.api_url, &config.health_path, &config.api_token]))
}

/// The in-flight lease of `key`: the request whose increment of it returns 1
/// calls Ximilar; the others wait for its answer in the cache. Named after a
/// period of the clock, so a lease whose holder died lapses with its period.
pub fn lease_key(key: &str, now_ms: u64, period_ms: u64) -> String {
    format!("lease:{:016x}:{}", fnv1a(key.as_bytes()), now_ms / period_ms.max(1))
}

/// Where a leader leaves a definite error (one that asking again would only
/// repeat, such as an image Ximilar cannot read) for the requests that waited on it.
pub fn shared_error_key(key: &str) -> String {
    format!("error:{key}")
}

#[derive(Serialize, Deserialize)]
struct Entry<T> {
    /// The full key: a slot is shared, so an entry must say whose it is.
    k: String,
    /// Unix milliseconds after which the entry is stale.
    exp: u64,
    /// Unix milliseconds when it was stored (0 in entries written before it was kept).
    #[serde(default)]
    at: u64,
    v: T,
}

pub fn encode<T: Serialize>(key: &str, value: &T, now_ms: u64, ttl_ms: u64) -> Vec<u8> {
    let entry = Entry { k: key.to_string(), exp: now_ms.saturating_add(ttl_ms), at: now_ms, v: value };
    serde_json::to_vec(&entry).expect("entry serialises")
}

/// The value stored in a slot, if it is `key`'s, still fresh and readable.
pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8], now_ms: u64) -> Option<T> {
    decode_since(key, bytes, now_ms, 0).map(|(value, _)| value)
}

/// The value of an entry for `key` still fresh at `now_ms` and stored no earlier
/// than `not_before_ms` (a caller's `no-cache` or `max-age`), with when it was stored.
pub fn decode_since<T: DeserializeOwned>(key: &str, bytes: &[u8], now_ms: u64, not_before_ms: u64) -> Option<(T, u64)> {
    let entry: Entry<T> = serde_json::from_slice(bytes).ok()?;
    (entry.k == key && now_ms < entry.exp && entry.at >= not_before_ms).then_some((entry.v, entry.at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::urls::parse_image_url;
    use serde_json::{json, Value};

    fn url(s: &str) -> ImageUrl {
        parse_image_url(s).unwrap()
    }

    #[test]
    fn a_caller_may_ask_for_an_entry_stored_recently_enough() {
        let bytes = encode("k", &json!(7), 10_000, 60_000);
        assert_eq!(decode_since::<Value>("k", &bytes, 20_000, 10_000), Some((json!(7), 10_000)));
        assert_eq!(decode_since::<Value>("k", &bytes, 20_000, 10_001), None);
        let older = br#"{"k":"k","exp":99999,"v":7}"#;
        assert_eq!(decode_since::<Value>("k", older, 1, 0), Some((json!(7), 0)), "entries without a time still serve");
        assert_eq!(decode_since::<Value>("k", older, 1, 1), None);
    }

    #[test]
    fn entries_expire_at_the_ttl() {
        let bytes = encode("k", &json!({"items": []}), 1_000, 500);
        assert_eq!(decode::<Value>("k", &bytes, 1_499), Some(json!({"items": []})));
        assert_eq!(decode::<Value>("k", &bytes, 1_500), None);
        assert_eq!(decode::<Value>("k", b"garbage", 0), None);
    }

    #[test]
    fn a_slot_answers_only_for_the_key_it_holds() {
        let bytes = encode("detect:https://a.example/x.jpg", &json!(1), 0, 1_000);
        assert_eq!(decode::<Value>("detect:https://a.example/x.jpg", &bytes, 1), Some(json!(1)));
        assert_eq!(decode::<Value>("detect:https://a.example/y.jpg", &bytes, 1), None);
        // The right key with the wrong shape is a miss, not an error.
        assert_eq!(decode::<Vec<String>>("detect:https://a.example/x.jpg", &bytes, 1), None);
    }

    #[test]
    fn slots_are_bounded_stable_and_spread() {
        let slots: std::collections::HashSet<String> =
            (0..50_000).map(|i| slot(&format!("tag:https://a.example/{i}.jpg"))).collect();
        // A uniform hash fills 1 - e^(-50000/16384), about 95 %, of the slots.
        assert!(slots.len() as u64 <= SLOTS && slots.len() > 15_300, "{} slots used", slots.len());
        assert!(slots.iter().all(|s| s.starts_with(PREFIX) && s.len() == PREFIX.len() + 4));
        // Fixed values: a slot must not change between builds or replicas.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(slot("health"), slot("health"));
        let c = config(&[("api_token", "tok-1")]);
        assert_ne!(health_key(&c), health_key(&config(&[("api_token", "tok-2")])));
        assert!(!health_key(&c).contains("tok-1"));
    }

    fn config(pairs: &[(&str, &str)]) -> Config {
        let map: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
        Config::from_lookup(|k| map.get(k).map(|v| v.to_string())).unwrap()
    }

    #[test]
    fn cut_garments_keep_to_a_few_slots_of_their_own() {
        let limits = CropLimits { max_pixels: 1, max_side: 1024, margin_pct: 5, quality: 90 };
        let photo = crate::urls::parse_image_url("https://shop.example/a.jpg").unwrap();
        let b = Crop { x: 1, y: 2, w: 3, h: 4 };
        let key = crop_key(&limits, &photo, b);
        assert_ne!(key, crop_key(&CropLimits { quality: 80, ..limits }, &photo, b));
        assert_ne!(key, crop_key(&limits, &photo, Crop { x: 0, ..b }));
        assert!(slot(&photo_cuts_key(&limits, &photo)).starts_with("v3:crop:"));
        assert_ne!(photo_cuts_key(&limits, &photo), key);
        let slots: std::collections::BTreeSet<String> =
            (0..5_000).map(|x| slot(&crop_key(&limits, &photo, Crop { x, ..b }))).collect();
        assert_eq!(slots.len() as u64, CROP_SLOTS);
        assert!(slots.iter().all(|s| s.starts_with("v3:crop:")));
        assert!(!slot("detect:x").starts_with("v3:crop:"));
    }

    #[test]
    fn a_lease_lasts_one_period_and_names_no_url() {
        let key = "detect:0:https://a.example/x.jpg";
        assert_eq!(lease_key(key, 30_000, 30_000), lease_key(key, 59_999, 30_000));
        assert_ne!(lease_key(key, 30_000, 30_000), lease_key(key, 60_000, 30_000));
        assert_ne!(lease_key(key, 0, 30_000), lease_key("detect:0:https://a.example/y.jpg", 0, 30_000));
        assert!(!lease_key(key, 0, 30_000).contains("example"));
        assert_ne!(slot(&shared_error_key(key)), slot(key));
    }

    #[test]
    fn keys_follow_url_normalisation_and_keep_the_query() {
        let c = config(&[]);
        assert_eq!(
            detect_key(&c, &url("HTTPS://A.example:443/x.jpg?s=1")),
            detect_key(&c, &url("https://a.example/x.jpg?s=1"))
        );
        assert_ne!(
            detect_key(&c, &url("https://a.example/x.jpg?s=1")),
            detect_key(&c, &url("https://a.example/x.jpg?s=2"))
        );
        assert_ne!(tag_key(&c, &url("https://a.example/x.jpg?a")), tag_key(&c, &url("https://a.example/x.jpg")));
        let u = url("https://a.example/x.jpg");
        assert_ne!(search_key(&c, &u, None, 10), search_key(&c, &u, None, 11));
        assert_ne!(detect_key(&c, &u), tag_key(&c, &u));
    }

    #[test]
    fn every_setting_that_shapes_a_request_changes_its_key() {
        let u = url("https://a.example/x.jpg");
        let base = config(&[("collection_id", "col-A")]);
        let changed = |pairs: &[(&str, &str)]| config(&[&[("collection_id", "col-A")][..], pairs].concat());
        for pairs in
            [&[("api_url", "https://eu.ximilar.com")][..], &[("detect_path", "/tagging/fashion/v2/detect_tags_all")]]
        {
            assert_ne!(detect_key(&base, &u), detect_key(&changed(pairs), &u), "{pairs:?}");
        }
        for pairs in [&[("tags_path", "/t2")][..], &[("tag_mode", "classify"), ("task_id", "t1")]] {
            assert_ne!(tag_key(&base, &u), tag_key(&changed(pairs), &u), "{pairs:?}");
        }
        let task = |t| config(&[("tag_mode", "classify"), ("task_id", t)]);
        assert_ne!(tag_key(&task("t1"), &u), tag_key(&task("t2"), &u));
        for pairs in [
            &[("collection_id", "col-B")][..],
            &[("search_path", "/similarity/fashion/v2/visualTagsKNN")],
            &[("search_fields", "_id,_url,price")],
            &[("search_filter_field", "cat")],
        ] {
            assert_ne!(search_key(&base, &u, None, 5), search_key(&changed(pairs), &u, None, 5), "{pairs:?}");
        }
        // Settings of other endpoints do not matter.
        assert_eq!(detect_key(&base, &u), detect_key(&changed(&[("search_path", "/s2")]), &u));
        // The collection id never appears in a key.
        assert!(!search_key(&base, &u, None, 5).contains("col-A"));
    }

    #[test]
    fn in_crop_mode_each_box_is_its_own_search() {
        let off = config(&[("collection_id", "c")]);
        let on = config(&[("collection_id", "c"), ("search_crop", "true"), ("image_host_a", "https://a.example")]);
        let photo = url("https://a.example/x.jpg");
        let jacket = url("https://a.example/x.jpg#xywh=10,20,300,400");
        let shoes = url("https://a.example/x.jpg#xywh=50,900,200,100");
        assert_eq!(search_key(&off, &jacket, None, 5), search_key(&off, &shoes, None, 5), "off: one search per photo");
        assert_eq!(search_key(&off, &jacket, None, 5), search_key(&off, &photo, None, 5));
        assert_ne!(search_key(&on, &jacket, None, 5), search_key(&on, &shoes, None, 5), "on: one per box");
        assert_eq!(
            search_key(&on, &photo, None, 5),
            search_key(&off, &photo, None, 5),
            "no box: the photo's URL, as before"
        );
        assert_ne!(search_key(&on, &jacket, None, 5), search_key(&off, &jacket, None, 5));
        let same_box = url("https://A.example:443/x.jpg#xywh=pixel:10,20,300,400");
        assert_eq!(search_key(&on, &jacket, None, 5), search_key(&on, &same_box, None, 5));
        let wider = config(&[
            ("collection_id", "c"),
            ("search_crop", "true"),
            ("image_host_a", "https://a.example"),
            ("search_crop_margin_pct", "20"),
        ]);
        assert_ne!(
            search_key(&on, &jacket, None, 5),
            search_key(&wider, &jacket, None, 5),
            "the margin changes the bytes"
        );
    }

    #[test]
    fn search_keys_follow_what_is_sent() {
        let u = url("https://a.example/x.jpg");
        let no_filter = config(&[("collection_id", "c")]);
        // Without a filter field the category is not sent, so it cannot change the answer.
        assert_eq!(search_key(&no_filter, &u, Some("jeans"), 5), search_key(&no_filter, &u, None, 5));
        let filtered = config(&[("collection_id", "c"), ("search_filter_field", "cat")]);
        assert_ne!(search_key(&filtered, &u, Some("jeans"), 5), search_key(&filtered, &u, None, 5));
        assert_ne!(search_key(&filtered, &u, Some("a:1"), 5), search_key(&filtered, &u, Some("a"), 5));
    }
}
