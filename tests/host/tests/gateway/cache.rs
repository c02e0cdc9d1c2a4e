//! The crop-aware cache, asserted by exact upstream call counts.

use crate::common::*;
use serde_json::json;
use spin_test_host::mock::Fault;
use std::time::Duration;

const PHOTO: &str = "https://shop.example/outfit.jpg?sig=abc";

#[tokio::test(flavor = "multi_thread")]
async fn detect_then_tag_every_crop_costs_one_call() {
    let gw = gateway(&[]).await;
    let detect = gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    assert_eq!(detect.header("x-cache"), Some("MISS"));
    let items = detect.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    let mut types = Vec::new();
    for item in &items {
        let tag = gw.post("/tag", &json!({ "url": item["crop_url"] }).to_string()).await;
        assert_eq!(tag.status, 200, "{}", tag.text());
        assert_eq!(tag.header("x-cache"), Some("HIT"));
        types.push(tag.json()["type"].as_str().unwrap().to_string());
    }
    assert_eq!(types, ["jackets", "jeans", "Footwear/Sneakers"]);
    assert_eq!(gw.upstream_total(), 1, "one detect_tags call for the whole outfit");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unseen_crop_is_tagged_through_detect_of_its_source() {
    let gw = gateway(&[]).await;
    // A crop close to (not exactly) the jacket's box, never detected here.
    let crop = format!("{PHOTO}#xywh=215,345,490,775");
    let tag = gw.post("/tag", &json!({ "url": crop }).to_string()).await;
    assert_eq!(tag.status, 200, "{}", tag.text());
    assert_eq!(tag.json()["type"], "jackets");
    assert_eq!((gw.upstream(DETECT_PATH), gw.upstream(TAGS_PATH)), (1, 0));
    // That detect's one entry answers this crop again, and the photo's other garments.
    let again = gw.post("/tag", &json!({ "url": crop }).to_string()).await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    let jeans = gw.post("/tag", &json!({ "url": format!("{PHOTO}#xywh=260,1050,430,490") }).to_string()).await;
    assert_eq!((jeans.json()["type"].as_str(), jeans.header("x-cache")), (Some("jeans"), Some("HIT")));
    assert_eq!(gw.upstream_total(), 1);
    // A crop where nothing was detected is 422, and says so.
    let nothing = gw.post("/tag", &json!({ "url": format!("{PHOTO}#xywh=0,0,50,50") }).to_string()).await;
    assert_eq!((nothing.status, nothing.code().as_str()), (422, "crop_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_detect_twice_costs_one_call() {
    let gw = gateway(&[]).await;
    let first = gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    // Same image, scheme and host in another case, default port spelt out.
    let second = gw.post("/detect", r#"{"url": "HTTPS://Shop.Example:443/outfit.jpg?sig=abc"}"#).await;
    assert_eq!((first.header("x-cache"), second.header("x-cache")), (Some("MISS"), Some("HIT")));
    assert_eq!(first.json(), second.json());
    assert_eq!(gw.upstream_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_and_search_repeats_are_free() {
    let gw = gateway(&[]).await;
    for _ in 0..3 {
        assert_eq!(gw.post("/tag", r#"{"url": "https://shop.example/jeans.jpg"}"#).await.status, 200);
        let search = gw.post("/search", r#"{"crop_url": "https://shop.example/jeans.jpg", "top_k": 3}"#).await;
        assert_eq!(search.status, 200);
    }
    assert_eq!((gw.upstream(TAGS_PATH), gw.upstream(SEARCH_PATH)), (1, 1));
    // A different top_k is a different question; so is a category, where a filter field sends it.
    gw.post("/search", r#"{"crop_url": "https://shop.example/jeans.jpg", "top_k": 4}"#).await;
    assert_eq!(gw.upstream(SEARCH_PATH), 2);
    let filtered = gateway(&[("search_filter_field", "cat")]).await;
    filtered.post("/search", r#"{"crop_url": "https://shop.example/jeans.jpg", "top_k": 3}"#).await;
    filtered.post("/search", r#"{"crop_url": "https://shop.example/jeans.jpg", "top_k": 3, "category": "x"}"#).await;
    assert_eq!(filtered.upstream(SEARCH_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_expire_after_the_ttl() {
    let gw = gateway(&[("cache_ttl_s", "1")]).await;
    let body = json!({ "url": PHOTO }).to_string();
    gw.post("/detect", &body).await;
    assert_eq!(gw.post("/detect", &body).await.header("x-cache"), Some("HIT"));
    // Entries expire by the wall clock, which the test host moves on without waiting.
    gw.app.advance_wall_clock(Duration::from_millis(1100));
    assert_eq!(gw.post("/detect", &body).await.header("x-cache"), Some("MISS"));
    assert_eq!(gw.upstream_total(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_zero_disables_all_caching() {
    let gw = gateway(&[("cache_ttl_s", "0")]).await;
    let body = json!({ "url": PHOTO }).to_string();
    let first = gw.post("/detect", &body).await;
    let second = gw.post("/detect", &body).await;
    assert_eq!((first.header("x-cache"), second.header("x-cache")), (None, None));
    let crop = first.json()["items"][0]["crop_url"].clone();
    assert_eq!(gw.post("/tag", &json!({ "url": crop }).to_string()).await.status, 200);
    assert_eq!(gw.upstream(DETECT_PATH), 3, "the crop's tag needed a detect of its own");
    assert!(gw.cache_entries().is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_never_cached() {
    let gw = gateway(&[("max_retries", "0")]).await;
    let body = json!({ "url": PHOTO }).to_string();
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
    assert_eq!(gw.post("/detect", &body).await.status, 503);
    gw.mock.push_fault_for(DETECT_PATH, Fault::could_not_download());
    assert_eq!(gw.post("/detect", &body).await.status, 422);
    let ok = gw.post("/detect", &body).await;
    assert_eq!((ok.status, ok.header("x-cache")), (200, Some("MISS")));
    assert_eq!(gw.upstream_total(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn different_query_strings_are_different_keys() {
    let gw = gateway(&[]).await;
    gw.post("/detect", r#"{"url": "https://shop.example/outfit.jpg?sig=1"}"#).await;
    gw.post("/detect", r#"{"url": "https://shop.example/outfit.jpg?sig=2"}"#).await;
    gw.post("/detect", r#"{"url": "https://shop.example/outfit.jpg"}"#).await;
    assert_eq!(gw.upstream_total(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detect_miss_writes_one_entry_and_every_crop_reads_it() {
    let gw = gateway(&[]).await;
    let detect = gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    // One slot, holding the photo's detection with every garment's tags.
    let entries = gw.cache_entries();
    let slots: Vec<&str> = entries.iter().map(|(slot, _)| slot.as_str()).collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert!(slots[0].starts_with("v3:") && slots[0].len() == 7, "{slots:?}");
    let entry: serde_json::Value = serde_json::from_slice(&entries[0].1).unwrap();
    let key = entry["k"].as_str().unwrap();
    // The kind, a fingerprint of the settings that shaped the call, and the photo.
    assert!(key.starts_with("detect:") && key.ends_with(":https://shop.example/outfit.jpg?sig=abc"), "{key}");
    assert_eq!(entry["v"].as_array().map(Vec::len), Some(3));
    assert_eq!(entry["v"][1]["tags"]["type"], "jeans");
    // Tagging each crop reads that entry and writes nothing.
    let before = gw.cache_entries();
    for item in detect.json()["items"].as_array().unwrap() {
        let tag = gw.post("/tag", &json!({ "url": item["crop_url"] }).to_string()).await;
        assert_eq!(tag.header("x-cache"), Some("HIT"));
    }
    assert_eq!(gw.cache_entries(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_photos_entry_in_the_same_slot_is_a_miss_not_its_answer() {
    let gw = gateway(&[]).await;
    let body = json!({ "url": PHOTO }).to_string();
    gw.post("/detect", &body).await;
    let (slot, entry) = gw.cache_entries().remove(0);
    // Make the slot hold another key's entry, as a hash collision would.
    let mut entry: serde_json::Value = serde_json::from_slice(&entry).unwrap();
    entry["k"] = json!("detect:https://shop.example/another.jpg");
    gw.set_cache_entry(&slot, entry.to_string().as_bytes());
    let again = gw.post("/detect", &body).await;
    assert_eq!((again.status, again.header("x-cache")), (200, Some("MISS")));
    assert_eq!(gw.upstream_total(), 2);
}

/// With `state_store = sqlite` the answers live in a file: a gateway started again on it
/// (a restart, or the next deploy) answers from it, and so does `/metrics` with the
/// counters of the first run.
#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite_paid_answers_and_counters_survive_a_restart() {
    let dir = tempdir("restart");
    let body = json!({ "url": PHOTO }).to_string();
    let first = gateway_on_store(&[("state_store", "sqlite")], &dir).await;
    assert_eq!(first.post("/detect", &body).await.header("x-cache"), Some("MISS"));
    // Stop the first app (its mock keeps counting for both runs), then start anew.
    let Gateway { app, mock, .. } = first;
    app.shutdown().await;
    let again = gateway_on_store(&[("state_store", "sqlite"), ("api_url", mock.url().as_str())], &dir).await;
    assert_eq!(again.post("/detect", &body).await.header("x-cache"), Some("HIT"));
    assert_eq!(mock.calls_to(DETECT_PATH).len(), 1, "one billed call across both runs");
    let metrics = again.get("/metrics").await.text();
    assert!(metrics.contains(r#"gateway_cache_misses_total{handler="detect"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gateway_cache_hits_total{handler="detect"} 1"#), "{metrics}");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
