//! Inbound keys (`XIMILAR_INBOUND_KEYS`): off by default; when set, the
//! endpoints that spend credits need `Authorization: Bearer <key>`, callers are
//! named in logs and labels (never their keys), and an optional daily budget
//! caps the Ximilar calls a caller causes.

use crate::common::*;
use serde_json::json;
use std::time::Duration;

const ORCH_KEY: &str = "key-SECRET-orch-5e1f";
const BATCH_KEY: &str = "key-SECRET-batch-77aa";

/// SHA-256 of BATCH_KEY, computed outside the project (Python's hashlib), as ops would.
const BATCH_DIGEST: &str = "d961b68caf3ec091b12e7a3c8081834e81bceca0466ff547abfa73e7ff263c76";

fn keys() -> String {
    format!("orch:{ORCH_KEY},batch:sha256:{BATCH_DIGEST}")
}

async fn post_as(gw: &Gateway, key: Option<&str>, path: &str, body: &str) -> Reply {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    gw.request("POST", path, &headers, body.as_bytes()).await
}

fn assert_no_key_anywhere(gw: &Gateway, replies: &[&Reply]) {
    for line in gw.logs() {
        assert!(!line.contains(ORCH_KEY) && !line.contains(BATCH_KEY), "a key in a log line: {line}");
    }
    for r in replies {
        assert!(!r.text().contains("SECRET"), "a key in an answer: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_everything_is_open_and_anonymous_as_before() {
    let gw = gateway(&[]).await;
    let reply = gw.post("/detect", r#"{"url": "https://shop.example/a.jpg"}"#).await;
    assert_eq!(reply.status, 200);
    let metrics = gw.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"http_requests_total{handler="detect",method="POST",status="2xx",caller="anonymous"} 1"#)
    );
    let line: serde_json::Value =
        serde_json::from_str(&gw.app.wait_for_logs(1, Duration::from_secs(5)).await[0]).unwrap();
    assert_eq!(line["caller"], "anonymous");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_keys_the_credit_spending_endpoints_need_one() {
    let gw = gateway(&[("inbound_keys", &keys())]).await;
    let body = r#"{"url": "https://shop.example/a.jpg"}"#;
    for (key, path) in [(None, "/detect"), (Some("wrong"), "/tag"), (Some("key-SECRET-orch-5e1"), "/detect")] {
        let refused = post_as(&gw, key, path, body).await;
        assert_eq!((refused.status, refused.code().as_str()), (401, "unauthorized"), "{key:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    let search = post_as(&gw, None, "/search", r#"{"crop_url": "https://shop.example/a.jpg"}"#).await;
    assert_eq!(search.status, 401);
    assert_eq!(gw.upstream_total(), 0, "no refused request reaches Ximilar");
    // Both keys work: the plain one and the one configured as a digest.
    let orch = post_as(&gw, Some(ORCH_KEY), "/detect", body).await;
    let batch = post_as(&gw, Some(BATCH_KEY), "/tag", r#"{"url": "https://shop.example/j.jpg"}"#).await;
    assert_eq!((orch.status, batch.status), (200, 200));
    // Probes and scrapes stay open.
    assert_eq!(gw.get("/health").await.status, 200);
    let metrics = gw.get("/metrics").await.text();
    assert!(metrics.contains(r#"status="2xx",caller="orch"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"status="2xx",caller="batch"} 1"#));
    assert!(metrics.contains(r#"ximilar_billed_records_total{endpoint="detect_tags",caller="orch"} 1"#));
    assert!(metrics.contains(r#"status="4xx",caller="anonymous"} "#), "refused requests are anonymous");
    let lines = gw.logs();
    assert!(
        lines.iter().any(|l| l.contains(r#""caller":"orch""#))
            && lines.iter().any(|l| l.contains(r#""caller":"batch""#))
    );
    assert_no_key_anywhere(&gw, &[&orch, &batch, &search]);
    assert!(!metrics.contains("SECRET"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_a_key_only_when_protected() {
    let gw = gateway(&[("inbound_keys", &keys()), ("inbound_protect_metrics", "true")]).await;
    let open = gw.get("/metrics").await;
    assert_eq!((open.status, open.code().as_str()), (401, "unauthorized"));
    let with_key = gw.request("GET", "/metrics", &[("authorization", &format!("Bearer {ORCH_KEY}"))], b"").await;
    assert_eq!(with_key.status, 200);
    assert_eq!(gw.get("/health").await.status, 200, "health stays open for probes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_daily_budget_is_429_until_midnight_utc_and_cache_hits_are_free() {
    let gw = gateway(&[("inbound_keys", &format!("orch:{ORCH_KEY}:2"))]).await;
    let detect = |n: u32| json!({ "url": format!("https://shop.example/b-{n}.jpg") }).to_string();
    assert_eq!(post_as(&gw, Some(ORCH_KEY), "/detect", &detect(1)).await.status, 200);
    assert_eq!(post_as(&gw, Some(ORCH_KEY), "/detect", &detect(2)).await.status, 200);
    let spent = post_as(&gw, Some(ORCH_KEY), "/detect", &detect(3)).await;
    assert_eq!((spent.status, spent.code().as_str()), (429, "budget_exhausted"));
    let retry_after: u64 = spent.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    assert_eq!(gw.upstream_total(), 2, "the third call was never made");
    // What is cached costs no budget.
    let again = post_as(&gw, Some(ORCH_KEY), "/detect", &detect(1)).await;
    assert_eq!((again.status, again.header("x-cache")), (200, Some("HIT")));
    // A new UTC day, a new budget.
    gw.app.advance_wall_clock(Duration::from_secs(retry_after + 1));
    assert_eq!(post_as(&gw, Some(ORCH_KEY), "/detect", &detect(3)).await.status, 200);
    assert_eq!(gw.upstream_total(), 3);
    assert_no_key_anywhere(&gw, &[&spent]);
}
