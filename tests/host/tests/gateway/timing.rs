//! `Server-Timing` on every answer: the gateway's own time, Ximilar's with its
//! tries, the cache outcome, and the total, so the orchestrator can tell whose
//! latency it is looking at.

use crate::common::*;
use serde_json::json;
use spin_test_host::mock::Fault;
use std::collections::BTreeMap;
use std::time::Duration;

/// `name` → (`dur` in ms, `desc`) of a Server-Timing header.
fn metrics(reply: &Reply) -> BTreeMap<String, (Option<f64>, Option<String>)> {
    let header = reply.header("server-timing").unwrap_or_else(|| panic!("no Server-Timing: {:?}", reply.headers));
    header
        .split(',')
        .map(|entry| {
            let mut params = entry.trim().split(';');
            let name = params.next().unwrap().to_string();
            let (mut dur, mut desc) = (None, None);
            for param in params {
                match param.split_once('=') {
                    Some(("dur", v)) => dur = Some(v.parse().unwrap()),
                    Some(("desc", v)) => desc = Some(v.trim_matches('"').to_string()),
                    other => panic!("unexpected parameter {other:?} in {header}"),
                }
            }
            (name, (dur, desc))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_shows_ximilars_share_and_its_tries() {
    let gw = gateway(&[]).await;
    gw.mock.set_latency(Duration::from_millis(60));
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
    let body = json!({ "url": "https://shop.example/timing.jpg" }).to_string();
    let miss = gw.post("/detect", &body).await;
    assert_eq!(miss.status, 200);
    let m = metrics(&miss);
    let (ximilar, tries) = m["ximilar"].clone();
    assert_eq!(tries.as_deref(), Some("2 tries"));
    assert!(ximilar.unwrap() >= 120.0, "two tries of 60 ms: {m:?}");
    let (gateway, total) = (m["gateway"].0.unwrap(), m["total"].0.unwrap());
    assert!(total >= ximilar.unwrap() + gateway - 0.01 && gateway >= 0.0, "{m:?}");
    assert_eq!(m["cache"].1.as_deref(), Some("MISS"));

    let hit = metrics(&gw.post("/detect", &body).await);
    assert_eq!(hit["cache"].1.as_deref(), Some("HIT"));
    assert!(!hit.contains_key("ximilar"), "a hit asks Ximilar nothing: {hit:?}");
    assert_eq!(hit["gateway"].0, hit["total"].0);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_it_too_and_it_names_nothing_the_caller_sent() {
    let gw = gateway(&[]).await;
    let refused = gw.post("/detect", "{}").await;
    assert_eq!(refused.status, 422);
    let m = metrics(&refused);
    assert_eq!(m.keys().map(String::as_str).collect::<Vec<_>>(), ["gateway", "total"]);
    let wrong_method = gw.get("/detect").await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.header("server-timing").is_some());
    let url = "https://shop.example/private-token-in-path.jpg";
    let reply = gw.post("/detect", &json!({ "url": url }).to_string()).await;
    let header = reply.header("server-timing").unwrap();
    assert!(!header.contains("shop.example") && !header.contains("private"), "{header}");
}
