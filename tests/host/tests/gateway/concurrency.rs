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
                        assert!(
                            items[0]["crop_url"].as_str().unwrap().starts_with(&url),
                            "answer for another request?"
                        );
                    }
                    1 => {
                        let r = gw
                            .post("/tag", &json!({ "url": format!("https://shop.example/jeans-{i}.jpg") }).to_string())
                            .await;
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
    gw.assert_no_secret_in_logs();
}

/// The burst that hung real Spin 4.0.2 when the cache listed its keys: many
/// distinct misses at once, so every instance serves 16 requests while cache
/// entries are written, on the test host's model of Spin's SQLite store (one
/// locked connection, blocking calls, a listing that holds the lock). Any key
/// listing on the request path deadlocks an instance here; the model reports it
/// after a short lock wait instead of hanging, and the requests fail.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_distinct_misses_never_waits_on_the_store_lock() {
    let gw = Arc::new(gateway_with(&[], |opts| opts.kv_lock_limit = std::time::Duration::from_secs(3)).await);
    gw.mock.set_latency(std::time::Duration::from_millis(20));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let path = ["/detect", "/tag", "/search"][i % 3];
                let body = match path {
                    "/search" => json!({ "crop_url": format!("https://shop.example/p-{i}.jpg"), "top_k": 2 }),
                    _ => json!({ "url": format!("https://shop.example/p-{i}.jpg") }),
                };
                gw.post(path, &body.to_string()).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("request task"));
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    let errors = gw.app.errors();
    // The reason is at the end of a trap's message, after the wasm backtrace.
    let first = errors.iter().find(|e| e.contains("instance failed")).or(errors.first());
    let reason = first.map(|e| &e[e.len().saturating_sub(300)..]);
    assert_eq!(
        (failed, errors.len()),
        (0, 0),
        "{failed} of 400 failed; {} host errors, e.g. …{reason:?}",
        errors.len()
    );
    assert_eq!(gw.upstream_total(), 400);
    if let State::Sqlite(db) = gw.state() {
        // The first requests of the burst made the tables, and the database is in WAL mode.
        assert_eq!(db.query("PRAGMA journal_mode").unwrap(), vec![vec![SqlValue::Text("wal".into())]]);
    }
    eprintln!("400 distinct misses in {:?}", started.elapsed());
}
