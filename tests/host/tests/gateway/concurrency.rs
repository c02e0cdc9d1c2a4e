//! Many requests at once: every one answered, correctly, with one upstream call each.

use crate::common::*;
use serde_json::json;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_requests_are_all_answered_correctly() {
    let gw = Arc::new(gateway(&[]).await);
    gw.mock.set_latency(std::time::Duration::from_millis(50));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let url = format!("https://shop.example/outfit-{i}.jpg");
                match i % 3 {
                    0 => {
                        let r = gw.post("/detect", &json!({ "url": url }).to_string()).await;
                        assert_eq!(r.status, 200, "{}", r.text());
                        let items = r.json()["items"].as_array().unwrap().clone();
                        assert_eq!(items.len(), 3);
                        assert!(items[0]["crop_url"].as_str().unwrap().starts_with(&url), "answer for another request?");
                    }
                    1 => {
                        let r = gw.post("/tag", &json!({ "url": format!("https://shop.example/jeans-{i}.jpg") }).to_string()).await;
                        assert_eq!((r.status, r.json()["type"].as_str()), (200, Some("jeans")));
                    }
                    _ => {
                        let r = gw.post("/search", &json!({ "crop_url": url, "top_k": 2 }).to_string()).await;
                        assert_eq!((r.status, r.json()["candidates"].as_array().map(Vec::len)), (200, Some(2)));
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("request task");
    }
    assert_eq!(gw.upstream_total(), 200, "one Ximilar call per distinct request");
    gw.logs();
}
