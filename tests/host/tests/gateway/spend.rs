//! Spend control: a caller's daily budget is a reservation taken before
//! anything billable or costly happens, so concurrent requests can never spend
//! more than it; a key opens only the endpoints of its scopes; a malformed key
//! list is a configuration error, never "no keys".

use crate::common::*;
use serde_json::json;
use spin_test_host::images::ImageHost;
use spin_test_host::mock::Fault;
use std::sync::Arc;
use std::time::Duration;

const ORCH_KEY: &str = "key-SECRET-orch-5e1f";
const SCRAPE_KEY: &str = "key-SECRET-scrape-90d2";

async fn post_as(gw: &Gateway, key: &str, path: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {key}");
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    gw.request("POST", path, &headers, body.as_bytes()).await
}

fn detect(name: &str) -> String {
    json!({ "url": format!("https://shop.example/{name}.jpg") }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_concurrent_misses_on_a_budget_of_five_bill_five() {
    let gw = Arc::new(gateway(&[("inbound_keys", &format!("orch:{ORCH_KEY}:5"))]).await);
    // Slow enough that all forty are in flight together.
    gw.mock.set_latency(Duration::from_millis(300));
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { post_as(&gw, ORCH_KEY, "/detect", &detect(&format!("burst-{i}"))).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        if reply.status == 429 {
            assert_eq!(reply.code(), "budget_exhausted");
        }
        statuses.push(reply.status);
    }
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(gw.upstream(DETECT_PATH), 5, "billed calls: the budget, not the burst ({statuses:?})");
    assert_eq!((served, refused), (5, 35), "{statuses:?}");
    // Nothing was left reserved: the day is spent, exactly.
    let next = post_as(&gw, ORCH_KEY, "/detect", &detect("after")).await;
    assert_eq!(next.status, 429);
    assert_eq!(gw.upstream_total(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn unbilled_tries_and_cache_hits_give_their_unit_back() {
    let gw = gateway(&[("inbound_keys", &format!("orch:{ORCH_KEY}:2")), ("max_retries", "2")]).await;
    // Two refused tries (never billed), then an answer: one unit spent.
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(429));
    assert_eq!(post_as(&gw, ORCH_KEY, "/detect", &detect("a")).await.status, 200);
    assert_eq!(gw.upstream(DETECT_PATH), 3);
    // A hit holds nothing back either.
    let hit = post_as(&gw, ORCH_KEY, "/detect", &detect("a")).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT")));
    assert_eq!(post_as(&gw, ORCH_KEY, "/detect", &detect("b")).await.status, 200);
    let spent = post_as(&gw, ORCH_KEY, "/detect", &detect("c")).await;
    assert_eq!((spent.status, spent.code().as_str()), (429, "budget_exhausted"));
    assert_eq!(gw.upstream(DETECT_PATH), 4, "two answers billed, two refusals free, nothing for the third");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_needs_a_unit_of_its_own() {
    let keys = format!("orch:{ORCH_KEY}:1");
    let gw = gateway(&[("inbound_keys", &keys), ("max_retries", "3"), ("attempt_timeout_ms", "300")]).await;
    // The first try times out: Ximilar may have billed it, so its unit is kept,
    // and the retry finds the budget spent.
    gw.mock.push_fault_for(DETECT_PATH, Fault::hang());
    let reply = post_as(&gw, ORCH_KEY, "/detect", &detect("slow")).await;
    assert_eq!((reply.status, reply.code().as_str()), (429, "budget_exhausted"), "{}", reply.text());
    assert_eq!(gw.upstream(DETECT_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_fetches_no_image() {
    let host = ImageHost::start(([127, 0, 0, 1], 0).into()).await.expect("image host starts");
    let origin = host.origin();
    let keys = format!("orch:{ORCH_KEY}:1");
    let gw = gateway(&[("search_crop", "true"), ("image_host_a", &origin), ("inbound_keys", &keys)]).await;
    let search = |x: u32| json!({ "crop_url": format!("{origin}/photo-800x600.jpg#xywh={x},10,200,200") }).to_string();
    assert_eq!(post_as(&gw, ORCH_KEY, "/search", &search(10)).await.status, 200);
    assert_eq!((host.total_hits(), gw.upstream(SEARCH_PATH)), (1, 1));
    for x in [20, 30, 40] {
        let refused = post_as(&gw, ORCH_KEY, "/search", &search(x)).await;
        assert_eq!((refused.status, refused.code().as_str()), (429, "budget_exhausted"));
    }
    assert_eq!(host.total_hits(), 1, "no download, no decode for a caller who cannot pay");
    assert_eq!(gw.upstream(SEARCH_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_budgeted_caller_is_refused_when_the_store_cannot_count() {
    let dir = tempdir("budget-store");
    // Not a database: every query fails, as after a corruption.
    std::fs::write(dir.join("gateway.db"), [0x5a; 8192]).unwrap();
    let keys = format!("orch:{ORCH_KEY}:100,batch:key-SECRET-batch-77aa");
    let gw = gateway_on_store(&[("state_store", "sqlite"), ("inbound_keys", &keys)], &dir).await;
    let refused = post_as(&gw, ORCH_KEY, "/detect", &detect("a")).await;
    assert_eq!((refused.status, refused.code().as_str()), (503, "budget_unavailable"));
    assert!(refused.header("retry-after").is_some());
    assert_eq!(gw.upstream_total(), 0, "fail closed: no call it cannot count");
    // A caller without a budget has nothing to count and is served.
    assert_eq!(post_as(&gw, "key-SECRET-batch-77aa", "/detect", &detect("a")).await.status, 200);
    assert_eq!(gw.upstream_total(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_only_key_reads_metrics_and_spends_nothing() {
    let keys = format!("orch:{ORCH_KEY}:-:detect+tag+search,prometheus:{SCRAPE_KEY}:0:metrics");
    let gw = gateway(&[("inbound_keys", &keys), ("inbound_protect_metrics", "true")]).await;
    for path in ["/detect", "/tag"] {
        let refused = post_as(&gw, SCRAPE_KEY, path, &detect("a")).await;
        assert_eq!((refused.status, refused.code().as_str()), (403, "forbidden"), "{path}");
    }
    let refused = post_as(&gw, SCRAPE_KEY, "/search", r#"{"crop_url": "https://shop.example/a.jpg"}"#).await;
    assert_eq!(refused.status, 403);
    assert_eq!(gw.upstream_total(), 0);
    let scrape = gw.request("GET", "/metrics", &[("authorization", &format!("Bearer {SCRAPE_KEY}"))], b"").await;
    assert_eq!(scrape.status, 200);
    // And the orchestrator's key is not for scraping.
    let orch = gw.request("GET", "/metrics", &[("authorization", &format!("Bearer {ORCH_KEY}"))], b"").await;
    assert_eq!((orch.status, orch.code().as_str()), (403, "forbidden"));
    assert_eq!(post_as(&gw, ORCH_KEY, "/detect", &detect("a")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_key_list_is_a_config_error_never_no_keys() {
    for keys in [",", "orch:short:5", &format!("orch:{ORCH_KEY}:5,batch:{ORCH_KEY}")] {
        let gw = gateway(&[("inbound_keys", keys)]).await;
        let reply = gw.post("/detect", &detect("a")).await;
        assert_eq!((reply.status, reply.code().as_str()), (500, "config_error"), "{keys}");
        assert!(reply.json()["detail"].as_str().unwrap().starts_with("XIMILAR_INBOUND_KEYS entry "));
        assert!(!reply.text().contains("SECRET") && !reply.text().contains("short"));
        assert_eq!(gw.upstream_total(), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_each_budget_and_what_is_spent_of_it_today() {
    let keys = format!("orch:{ORCH_KEY}:5,unlimited:key-SECRET-batch-77aa");
    let gw = gateway(&[("inbound_keys", &keys)]).await;
    for name in ["a", "b"] {
        assert_eq!(post_as(&gw, ORCH_KEY, "/detect", &detect(name)).await.status, 200);
    }
    assert_eq!(post_as(&gw, ORCH_KEY, "/detect", &detect("a")).await.header("x-cache"), Some("HIT"));
    let text = gw.get("/metrics").await.text();
    assert!(text.contains("# TYPE gateway_caller_budget gauge"), "{text}");
    assert!(text.contains("\ngateway_caller_budget{caller=\"orch\"} 5\n"), "{text}");
    assert!(text.contains("\ngateway_caller_budget_spent{caller=\"orch\"} 2\n"), "a hit spends nothing: {text}");
    assert!(!text.contains("gateway_caller_budget{caller=\"unlimited\"}"), "no budget, no budget series: {text}");
    // A new UTC day starts from nothing.
    gw.app.advance_wall_clock(Duration::from_secs(86_400));
    let text = gw.get("/metrics").await.text();
    assert!(text.contains("\ngateway_caller_budget_spent{caller=\"orch\"} 0\n"), "{text}");
}
