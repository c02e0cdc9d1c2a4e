//! Credit safety: cache keys that follow the configuration and the request
//! actually billed, the shared circuit breaker, exhausted credits, and the
//! credit gauges, each asserted by exact upstream call counts.

use crate::common::*;
use serde_json::{json, Value};
use spin_test_host::mock::Fault;
use std::sync::Arc;
use std::time::Duration;

const PHOTO: &str = "https://shop.example/outfit.jpg";

fn search(crop: &str) -> String {
    json!({ "crop_url": crop, "top_k": 3 }).to_string()
}

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = gw.get("/metrics").await.text();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn searching_every_garment_of_a_photo_is_billed_once() {
    let gw = gateway(&[]).await;
    let crops = ["#xywh=212,340,493,782", "#xywh=260,1050,430,490", "#xywh=300,1480,320,110"];
    let mut answers: Vec<Value> = Vec::new();
    for crop in crops {
        let reply = gw.post("/search", &search(&format!("{PHOTO}{crop}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        answers.push(reply.json());
    }
    // Ximilar is sent the whole photo for each crop: one billed call answers all three.
    assert_eq!(gw.upstream(SEARCH_PATH), 1);
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    // Without a filter field the category is not sent, so it is the same question too.
    let with_category = json!({ "crop_url": PHOTO, "top_k": 3, "category": "jackets" }).to_string();
    assert_eq!(gw.post("/search", &with_category).await.header("x-cache"), Some("HIT"));
    assert_eq!(gw.upstream(SEARCH_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_change_never_serves_the_old_configurations_answers() {
    let store = tempdir("config-change");
    let body = search(PHOTO);
    let first = gateway_on_store(&[], &store).await;
    assert_eq!(first.post("/search", &body).await.header("x-cache"), Some("MISS"));
    // Every gateway below calls the first one's mock, so the calls add up there.
    let mock_url = first.mock.url();
    let on_first_mock = |extra: &[(&'static str, &'static str)]| {
        let mut vars = vec![("api_url", mock_url.as_str())];
        vars.extend_from_slice(extra);
        vars
    };
    // Same store, other fields asked of the collection: a new question, paid again.
    let changed = gateway_on_store(&on_first_mock(&[("search_fields", "_id,_url,price")]), &store).await;
    assert_eq!(changed.post("/search", &body).await.header("x-cache"), Some("MISS"));
    drop(changed);
    // A gateway on the first configuration still finds the first answer in the shared store.
    let same = gateway_on_store(&on_first_mock(&[]), &store).await;
    assert_eq!(same.post("/search", &body).await.header("x-cache"), Some("HIT"));
    assert_eq!(first.upstream(SEARCH_PATH), 2, "the first question and the changed one, nothing more");
    drop((first, same));
    let _ = std::fs::remove_dir_all(&store);
}

#[tokio::test(flavor = "multi_thread")]
async fn any_crop_of_a_detected_photo_is_tagged_from_the_cached_detection() {
    let gw = gateway(&[]).await;
    gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    // Near the jacket's box, not byte-identical to its crop_url.
    let near = gw.post("/tag", &json!({ "url": format!("{PHOTO}#xywh=214,338,490,786") }).to_string()).await;
    assert_eq!(
        (near.status, near.json()["type"].as_str(), near.header("x-cache")),
        (200, Some("jackets"), Some("HIT"))
    );
    let nothing = gw.post("/tag", &json!({ "url": format!("{PHOTO}#xywh=0,0,40,40") }).to_string()).await;
    assert_eq!((nothing.status, nothing.code().as_str()), (422, "crop_not_found"));
    assert_eq!(gw.upstream_total(), 1, "only the detect was billed");
}

/// Five failed tries open the breaker (one per request with retries off).
async fn open_the_breaker(gw: &Gateway) {
    for i in 0..5 {
        gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
        let r = gw.post("/detect", &json!({ "url": format!("https://shop.example/down-{i}.jpg") }).to_string()).await;
        assert_eq!(r.status, 503);
    }
    assert_eq!(gw.upstream(DETECT_PATH), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_after_five_failed_tries_and_refuses_at_once() {
    let gw = gateway(&[("max_retries", "0")]).await;
    open_the_breaker(&gw).await;
    let refused = gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    assert_eq!((refused.status, refused.code().as_str()), (503, "upstream_unavailable"));
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((9..=10).contains(&retry_after), "the cool-down left: {retry_after}");
    assert_eq!(gw.upstream_total(), 5, "no call while open");
    // Other endpoints share it; /health reports it and keeps probing the (free) account call.
    assert_eq!(gw.post("/tag", r#"{"url": "https://shop.example/j.jpg"}"#).await.status, 503);
    let health = gw.get("/health").await.json();
    assert_eq!((health["breaker"].as_str(), health["ximilar_reachable"].as_bool()), (Some("open"), Some(true)));
    assert_eq!(metric(&gw, "ximilar_breaker_open").await, Some(1.0));
    assert_eq!(metric(&gw, r#"ximilar_breaker_rejections_total{endpoint="detect_tags"}"#).await, Some(1.0));
    assert_eq!(metric(&gw, r#"ximilar_breaker_rejections_total{endpoint="tags"}"#).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_cooldown_one_request_probes_and_its_success_closes_the_breaker() {
    let gw = Arc::new(gateway(&[("max_retries", "0"), ("breaker_cooldown_ms", "300")]).await);
    open_the_breaker(&gw).await;
    // The cool-down runs on the wall clock, which the test host moves on without waiting.
    gw.app.advance_wall_clock(Duration::from_millis(350));
    gw.mock.set_latency(Duration::from_millis(200));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                gw.post("/detect", &json!({ "url": format!("https://shop.example/p-{i}.jpg") }).to_string())
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503, 503, 503, 503, 503], "one probe, the rest refused");
    assert_eq!(gw.upstream(DETECT_PATH), 6, "5 failures and 1 probe");
    // Closed again: calls go through.
    gw.mock.set_latency(Duration::ZERO);
    assert_eq!(gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await.status, 200);
    assert_eq!(gw.upstream(DETECT_PATH), 7);
    assert_eq!(gw.get("/health").await.json()["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_probe_opens_the_breaker_again() {
    let gw = gateway(&[("max_retries", "0"), ("breaker_cooldown_ms", "300")]).await;
    open_the_breaker(&gw).await;
    // The cool-down runs on the wall clock, which the test host moves on without waiting.
    gw.app.advance_wall_clock(Duration::from_millis(350));
    assert_eq!(gw.get("/health").await.json()["breaker"], "half_open");
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(502));
    assert_eq!(gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await.status, 502);
    let refused = gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    assert_eq!((refused.status, refused.code().as_str()), (503, "upstream_unavailable"));
    assert_eq!(gw.upstream(DETECT_PATH), 6, "5 failures and the failed probe; then nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_that_are_not_outages_never_trip_the_breaker() {
    let gw = gateway(&[("max_retries", "0")]).await;
    for i in 0..8 {
        let fault = if i % 2 == 0 { Fault::Status(401) } else { Fault::could_not_download() };
        gw.mock.push_fault_for(DETECT_PATH, fault);
        gw.post("/detect", &json!({ "url": format!("https://shop.example/x-{i}.jpg") }).to_string()).await;
    }
    // Nor does a run of failures that an answer interrupts.
    for i in 0..4 {
        gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
        gw.post("/detect", &json!({ "url": format!("https://shop.example/y-{i}.jpg") }).to_string()).await;
    }
    assert_eq!(gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await.status, 200);
    for i in 0..4 {
        gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
        gw.post("/detect", &json!({ "url": format!("https://shop.example/z-{i}.jpg") }).to_string()).await;
    }
    assert_eq!(gw.post("/detect", r#"{"url": "https://shop.example/last.jpg"}"#).await.status, 200);
    assert_eq!(gw.upstream(DETECT_PATH), 18);
    assert_eq!(gw.get("/health").await.json()["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_credits_are_503_upstream_quota_not_retried_not_an_outage() {
    let gw = gateway(&[]).await;
    for i in 0..6 {
        gw.mock.push_fault_for(DETECT_PATH, Fault::Status(402));
        let r = gw.post("/detect", &json!({ "url": format!("https://shop.example/q-{i}.jpg") }).to_string()).await;
        assert_eq!((r.status, r.code().as_str(), r.header("retry-after")), (503, "upstream_quota", None));
    }
    assert_eq!(gw.upstream(DETECT_PATH), 6, "one try each: retrying cannot buy credits");
    assert_eq!(gw.get("/health").await.json()["breaker"], "closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn credits_are_gauges_and_billed_records_are_counted() {
    let gw = gateway(&[]).await;
    gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    gw.post("/search", &search(PHOTO)).await;
    gw.mock.push_fault_for(TAGS_PATH, Fault::Status(503));
    gw.post("/tag", r#"{"url": "https://shop.example/jeans.jpg"}"#).await;
    assert_eq!(gw.get("/health").await.json()["ximilar_reachable"], true);
    // The mock charges one credit per record it analysed: 1 detect, 1 search, 1 tag (after a 503).
    assert_eq!(metric(&gw, "ximilar_credits_used").await, Some(3.0));
    assert_eq!(metric(&gw, "ximilar_credits_limit").await, Some(100_000.0));
    assert_eq!(
        metric(&gw, r#"ximilar_billed_records_total{endpoint="detect_tags",caller="anonymous"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, r#"ximilar_billed_records_total{endpoint="visual_knn",caller="anonymous"}"#).await,
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, r#"ximilar_billed_records_total{endpoint="tags",caller="anonymous"}"#).await,
        Some(1.0),
        "the 503 is not billed"
    );
    assert_eq!(metric(&gw, r#"ximilar_billed_records_total{endpoint="account",caller="anonymous"}"#).await, None);
}
