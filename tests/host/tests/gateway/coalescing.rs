//! Identical requests in flight at the same time share one billed Ximilar call:
//! the first takes the in-flight lease in the state store, the others wait
//! for its answer in the cache.

use crate::common::*;
use serde_json::{json, Value};
use spin_test_host::mock::Fault;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sends `n` copies of one request at once; returns (status, body) of each.
async fn at_once(
    gw: &Arc<Gateway>,
    n: usize,
    method: &'static str,
    path: &'static str,
    body: String,
) -> Vec<(u16, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (gw, body) = (gw.clone(), body.clone());
            tokio::spawn(async move {
                let r = gw.request(method, path, &[("content-type", "application/json")], body.as_bytes()).await;
                (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// A handler's series of one counter family in a scrape (0 when absent).
async fn counter(gw: &Gateway, family: &str, handler: &str) -> f64 {
    let text = gw.get("/metrics").await.text();
    let series = format!("{family}{{handler=\"{handler}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_identical_detects_make_one_call_and_get_one_answer() {
    let gw = Arc::new(gateway(&[]).await);
    // Long enough that, even on a loaded machine, the callers arrive while the first one's call is out.
    gw.mock.set_latency(Duration::from_millis(1000));
    let answers =
        at_once(&gw, 20, "POST", "/detect", json!({ "url": "https://shop.example/new.jpg" }).to_string()).await;
    assert_eq!(gw.upstream(DETECT_PATH), 1, "one billed call for twenty callers");
    assert!(answers.iter().all(|(status, body)| *status == 200 && *body == answers[0].1), "{answers:?}");
    assert_eq!(answers[0].1["items"].as_array().map(Vec::len), Some(3));
    // One miss; the 19 others waited on it, or (arriving after it finished) found its answer cached.
    assert_eq!(counter(&gw, "gateway_cache_misses_total", "detect").await, 1.0);
    assert_eq!(counter(&gw, "gateway_cache_hits_total", "detect").await, 19.0);
    let coalesced = counter(&gw, "gateway_coalesced_total", "detect").await;
    assert!((1.0..=19.0).contains(&coalesced), "coalesced {coalesced}");
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_tags_and_searches_share_one_call_too() {
    let gw = Arc::new(gateway(&[]).await);
    gw.mock.set_latency(Duration::from_millis(200));
    let tags = at_once(&gw, 10, "POST", "/tag", json!({ "url": "https://shop.example/jeans.jpg" }).to_string()).await;
    let searches = at_once(
        &gw,
        10,
        "POST",
        "/search",
        json!({ "crop_url": "https://shop.example/a.jpg", "top_k": 2 }).to_string(),
    )
    .await;
    assert_eq!((gw.upstream(TAGS_PATH), gw.upstream(SEARCH_PATH)), (1, 1));
    assert!(tags.iter().chain(&searches).all(|(status, _)| *status == 200));
    assert!(tags.iter().all(|t| t.1 == tags[0].1) && searches.iter().all(|s| s.1 == searches[0].1));
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_cold_health_checks_make_one_account_call() {
    let gw = Arc::new(gateway(&[]).await);
    gw.mock.set_latency(Duration::from_millis(200));
    let answers = at_once(&gw, 30, "GET", "/health", String::new()).await;
    assert_eq!(gw.upstream(ACCOUNT_PATH), 1);
    assert!(answers.iter().all(|(status, body)| *status == 200 && body["ximilar_reachable"] == true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_leader_hands_over_and_a_transient_error_is_not_shared() {
    let gw = Arc::new(gateway(&[("max_retries", "0")]).await);
    gw.mock.set_latency(Duration::from_millis(150));
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
    let answers =
        at_once(&gw, 5, "POST", "/detect", json!({ "url": "https://shop.example/flaky.jpg" }).to_string()).await;
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    // The leader's 503 is its own; one follower takes the lead and answers the rest.
    assert_eq!(statuses, [200, 200, 200, 200, 503]);
    assert_eq!(gw.upstream(DETECT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn ximilars_definite_answer_that_it_cannot_read_the_image_is_shared() {
    let gw = Arc::new(gateway(&[]).await);
    gw.mock.set_latency(Duration::from_millis(150));
    gw.mock.push_fault_for(DETECT_PATH, Fault::could_not_download());
    let answers =
        at_once(&gw, 5, "POST", "/detect", json!({ "url": "https://shop.example/gone.jpg" }).to_string()).await;
    assert!(
        answers.iter().all(|(status, body)| *status == 422 && body["code"] == "image_not_processed"),
        "{answers:?}"
    );
    assert_eq!(gw.upstream(DETECT_PATH), 1);
    // Not cached as an answer: once the shared error lapses (2 s of wall clock, moved on
    // by the test host), a later request asks again.
    gw.app.advance_wall_clock(Duration::from_millis(2100));
    let again = gw.post("/detect", r#"{"url": "https://shop.example/gone.jpg"}"#).await;
    assert_eq!((again.status, gw.upstream(DETECT_PATH)), (200, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_leader_never_keeps_followers_past_their_deadline() {
    let gw = Arc::new(gateway(&[("timeout_ms", "2000"), ("attempt_timeout_ms", "500"), ("max_retries", "0")]).await);
    gw.mock.push_fault_for(DETECT_PATH, Fault::hang());
    let started = Instant::now();
    let answers =
        at_once(&gw, 4, "POST", "/detect", json!({ "url": "https://shop.example/slow.jpg" }).to_string()).await;
    let took = started.elapsed();
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    statuses.sort();
    // The leader's try is cut at 500 ms (504); a follower then leads and answers the others.
    assert_eq!(statuses, [200, 200, 200, 504]);
    assert_eq!(gw.upstream(DETECT_PATH), 2);
    // Every answer within the 2 s deadline (plus a loaded machine's slack): nobody waited
    // on the hung leader to the end.
    assert!(took < Duration::from_millis(5000), "{took:?}");
}

/// The race the second lookup exists for: a leader answers between a request's cache
/// lookup and its lease. The request must use that answer (no second billed call) and
/// count it as the cache hit it is. Staged in the store, not with timing: the key-value
/// model writes the answer just after the next lookup; on SQLite a trigger writes it as
/// the lease is taken, which is after the lookup and before the second look.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_lands_between_lookup_and_lease_is_a_hit_not_a_second_call() {
    let gw = gateway(&[]).await;
    let body = json!({ "url": "https://shop.example/raced.jpg" }).to_string();
    assert_eq!(gw.post("/detect", &body).await.status, 200);
    let (slot, entry) = gw.cache_entries().remove(0);
    // Back to before the leader answered; its answer lands after the next lookup.
    match gw.state() {
        State::KeyValue(kv) => {
            kv.delete(&slot);
            kv.set_after_next_read(&slot, entry);
        }
        State::Sqlite(db) => {
            db.query_with("DELETE FROM cache WHERE slot = ?1", vec![slot.as_str().into()]).unwrap();
            let hex: String = entry.iter().map(|b| format!("{b:02x}")).collect();
            let trigger = format!(
                "CREATE TRIGGER land_answer AFTER INSERT ON leases \
                 BEGIN REPLACE INTO cache (slot, entry) VALUES ('{slot}', x'{hex}'); END"
            );
            db.query(&trigger).unwrap();
        }
    }
    let raced = gw.post("/detect", &body).await;
    assert_eq!((raced.status, raced.header("x-cache")), (200, Some("HIT")));
    assert_eq!(gw.upstream(DETECT_PATH), 1, "the leader's call is the only one");
    assert_eq!(counter(&gw, "gateway_cache_hits_total", "detect").await, 1.0);
    assert_eq!(counter(&gw, "gateway_cache_misses_total", "detect").await, 1.0);
    assert_eq!(counter(&gw, "gateway_coalesced_total", "detect").await, 0.0);
}
