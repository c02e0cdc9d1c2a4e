//! /metrics end to end: counters add up across concurrent requests
//! and pooled instances, histograms are cumulative, gauges settle, labels stay
//! bounded. Also leaves a real scrape in target/metrics-sample.txt for
//! `promtool check metrics` (scripts/test.sh).

use crate::common::*;
use serde_json::json;
use spin_test_host::mock::Fault;
use std::collections::BTreeMap;
use std::time::Duration;

/// `name{labels}` → value, from the exposition text.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("series value");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(gw: &Gateway) -> (String, BTreeMap<String, f64>) {
    let reply = gw.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = reply.text();
    let parsed = samples(&text);
    (text, parsed)
}

const DETECT_2XX: &str = r#"http_requests_total{handler="detect",method="POST",status="2xx",caller="anonymous"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn request_counts_add_up_across_concurrent_requests() {
    let gw = std::sync::Arc::new(gateway(&[("cache_ttl_s", "0")]).await);
    const N: usize = 40;
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                gw.post("/detect", &json!({ "url": format!("https://shop.example/{i}.jpg") }).to_string()).await.status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, m) = scrape(&gw).await;
    assert_eq!(m[DETECT_2XX], N as f64);
    let count = m[r#"http_request_duration_seconds_count{handler="detect",method="POST"}"#];
    let inf = m[r#"http_request_duration_seconds_bucket{handler="detect",method="POST",le="+Inf"}"#];
    assert_eq!((count, inf), (N as f64, N as f64), "+Inf equals _count");
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with(r#"http_request_duration_seconds_bucket{handler="detect""#))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), 16);
    // Cumulative: ordered by le, never decreasing (BTreeMap order is textual, so sort by le).
    let mut by_le: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix(r#"http_request_duration_seconds_bucket{handler="detect",method="POST",le=""#)?
                .strip_suffix("\"}")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v))
        })
        .collect();
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(by_le.windows(2).all(|w| w[0].1 <= w[1].1), "{by_le:?}");
    assert_eq!(m[r#"http_requests_in_progress{handler="detect",method="POST"}"#], 0.0, "the gauge settles at 0");
    assert_eq!(m[r#"ximilar_requests_total{endpoint="detect_tags",status="200"}"#], N as f64);
    assert!(m[r#"ximilar_request_duration_seconds_count{endpoint="detect_tags"}"#] == N as f64);
    // Counters are SQLite integers, or 8-byte little-endian i64 in Spin's key-value store.
    match gw.state() {
        State::Sqlite(db) => {
            let rows = db.query_with("SELECT value FROM counters WHERE key = ?1", vec![DETECT_2XX.into()]).unwrap();
            assert_eq!(rows, vec![vec![SqlValue::Integer(N as i64)]]);
        }
        State::KeyValue(_) => {
            // Each instance's totals are one record (JSON) in a slot of the ring; no
            // series has a key of its own.
            let store = gw.app.kv("metrics").unwrap();
            let records: Vec<serde_json::Value> = store
                .keys()
                .iter()
                .filter(|k| k.starts_with("tally:"))
                .map(|k| serde_json::from_slice(&store.get(k).unwrap()).unwrap())
                .collect();
            let total: i64 = records.iter().filter_map(|r| r["counters"][DETECT_2XX].as_i64()).sum();
            assert_eq!(total, N as i64, "{records:?}");
            assert_eq!(store.get(DETECT_2XX), None);
        }
    }
}

/// On the SQLite state store a request opens one connection and makes every call on it,
/// none of them on a key-value store; its counters are one statement at its end.
#[tokio::test(flavor = "multi_thread")]
async fn a_miss_on_sqlite_is_one_connection_ten_statements_and_no_key_value_call() {
    let gw = gateway(&[("state_store", "sqlite")]).await;
    let db = gw.app.sqlite("gateway").unwrap();
    // The first request makes the tables (a failed statement, four to make them, the retry).
    let fresh = db.ops();
    assert_eq!(gw.post("/detect", "{}").await.status, 422);
    assert_eq!((db.ops() - fresh).statements, 1 + 5 + 1 + 1, "synchronous, schema and retry, flush");
    let (metrics, cache) = (gw.app.kv("metrics").unwrap(), gw.app.kv("cache").unwrap());
    let before = (db.ops(), metrics.ops(), cache.ops());
    assert_eq!(gw.post("/detect", &json!({ "url": "https://shop.example/a.jpg" }).to_string()).await.status, 200);
    let sql = db.ops() - before.0;
    // synchronous = NORMAL; in progress up; the breaker's two reads; lookup, lease, second
    // lookup, write, release; every counter of the request (and in progress down) at once.
    assert_eq!((sql.opens, sql.statements), (1, 10), "{sql:?}");
    assert_eq!((metrics.ops() - before.1, cache.ops() - before.2), Default::default(), "no key-value call");
}

/// A miss's store calls on the key-value state store (BENCHMARKS.md quotes them), and
/// that none is a synchronous import, which Spin runs holding the whole instance: not
/// even a new instance's first request, which opens its store handles and takes its
/// counters' slot. The in-flight lease and the slot are won with reads and writes.
/// Before, a miss made 19 (an increment per counter, the breaker's reads, the lease's
/// take and release, store handles, the log line's WASIp2 write), then 1 (the lease).
#[tokio::test(flavor = "multi_thread")]
async fn a_miss_makes_no_synchronous_import_and_lists_nothing() {
    // One instance for both requests, however slow a loaded machine is between them.
    let gw =
        gateway_with(&[("state_store", "key-value")], |opts| opts.reuse.idle_timeout = Duration::from_secs(60)).await;
    let (metrics, cache) = (gw.app.kv("metrics").unwrap(), gw.app.kv("cache").unwrap());
    // The instance's first request opens its store handles and takes its counters' slot.
    assert_eq!(gw.post("/detect", &json!({ "url": "https://shop.example/first.jpg" }).to_string()).await.status, 200);
    assert_eq!(gw.app.sync_imports(), BTreeMap::new(), "synchronous imports of a new instance's miss");
    let before = (metrics.ops(), cache.ops(), gw.app.instances_started());
    assert_eq!(gw.post("/detect", &json!({ "url": "https://shop.example/a.jpg" }).to_string()).await.status, 200);
    let (counters, cached) = (metrics.ops() - before.0, cache.ops() - before.1);
    assert_eq!(gw.app.sync_imports(), BTreeMap::new(), "synchronous imports of a miss");
    // A loaded machine may start a new instance for it anyway: that instance takes its
    // counters' slot (the slot read twice, the claim's split: two reads, two writes and a
    // read; the record written and the claim cleared).
    let started = (gw.app.instances_started() - before.2) as u64;
    // Counters: the breaker's two reads, and the instance's record written twice (in
    // progress up at the start, every count of the request at its end), or once when
    // the end's counts join a start write still under way. A new instance's first
    // record is the one its slot's claim writes, so only the split's two writes come
    // on top.
    assert_eq!((counters.increments, counters.reads), (0, 2 + 5 * started), "{counters:?}");
    assert!((1 + 2 * started..=2 + 2 * started).contains(&counters.writes), "{counters:?}");
    assert_eq!(counters.deletes, 2 * started, "{counters:?}");
    // Cache: the lookup; the lease's split (its door looked at twice, `last` written and
    // read back, the door closed) and its mark; the second lookup; the answer; the
    // release (the mark and the split's two keys).
    assert_eq!((cached.reads, cached.increments, cached.writes, cached.deletes), (5, 0, 4, 3), "{cached:?}");
    assert_eq!(counters.listings + cached.listings, 0, "no request lists keys");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_errors_and_cache_are_counted() {
    let gw = gateway(&[]).await;
    gw.mock.push_fault_for(DETECT_PATH, Fault::too_many_requests());
    gw.mock.push_fault_for(DETECT_PATH, Fault::Status(503));
    let body = json!({ "url": "https://shop.example/a.jpg" }).to_string();
    assert_eq!(gw.post("/detect", &body).await.status, 200);
    assert_eq!(gw.post("/detect", &body).await.status, 200); // cache hit
    assert_eq!(gw.post("/detect", "{}").await.status, 422);
    let (_, m) = scrape(&gw).await;
    assert_eq!(m[r#"ximilar_retries_total{endpoint="detect_tags",reason="429"}"#], 1.0);
    assert_eq!(m[r#"ximilar_retries_total{endpoint="detect_tags",reason="503"}"#], 1.0);
    assert_eq!(m[r#"ximilar_requests_total{endpoint="detect_tags",status="429"}"#], 1.0);
    assert_eq!(m[r#"ximilar_requests_total{endpoint="detect_tags",status="503"}"#], 1.0);
    assert_eq!(m[r#"ximilar_requests_total{endpoint="detect_tags",status="200"}"#], 1.0);
    assert_eq!(m[r#"gateway_cache_misses_total{handler="detect"}"#], 1.0);
    assert_eq!(m[r#"gateway_cache_hits_total{handler="detect"}"#], 1.0);
    assert_eq!(m[DETECT_2XX], 2.0);
    assert_eq!(m[r#"http_requests_total{handler="detect",method="POST",status="4xx",caller="anonymous"}"#], 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_sets_the_reachable_gauge() {
    let gw = gateway(&[("api_token", "wrong"), ("health_cache_s", "0")]).await;
    gw.get("/health").await;
    let (_, m) = scrape(&gw).await;
    assert_eq!(m["ximilar_reachable"], 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn label_values_are_bounded_and_hold_no_url_or_secret() {
    let gw = gateway(&[]).await;
    gw.post("/detect", r#"{"url": "https://shop.example/private/123.jpg?sig=zzz"}"#).await;
    gw.request("BREW", "/tag", &[], b"{}").await;
    gw.post("/search", r#"{"crop_url": "https://shop.example/x.jpg"}"#).await;
    gw.get("/health").await;
    let (text, m) = scrape(&gw).await;
    for forbidden in ["shop.example", "sig=", TOKEN, COLLECTION, "BREW"] {
        assert!(!text.contains(forbidden), "{forbidden} in /metrics");
    }
    assert!(
        m.contains_key(r#"http_requests_total{handler="tag",method="other",status="4xx",caller="anonymous"}"#),
        "unknown methods are 'other'"
    );
    let families = [
        "http_requests_total",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "ximilar_",
        "gateway_cache_",
        "gateway_coalesced_",
    ];
    for series in m.keys() {
        assert!(families.iter().any(|f| series.starts_with(f)), "unexpected series {series}");
    }
    // A sample for promtool, from a gateway that has seen every kind of request.
    let out = spin_test_host::workspace_root().join("target/metrics-sample.txt");
    std::fs::write(&out, &text).unwrap();
}

/// A state store that cannot be used (here: the database file is not a database, as after a
/// corruption) costs the cache and the counters, never an answer: the request is served from Ximilar, its log line
/// counts the store errors, and `/metrics` says it has nothing to serve.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_state_store_never_fails_a_request() {
    let dir = tempdir("broken-store");
    std::fs::write(dir.join("gateway.db"), [0x5a; 8192]).unwrap();
    let gw = gateway_on_store(&[("state_store", "sqlite")], &dir).await;
    let detect = gw.post("/detect", &json!({ "url": "https://shop.example/a.jpg" }).to_string()).await;
    assert_eq!((detect.status, detect.header("x-cache")), (200, None), "{}", detect.text());
    assert_eq!(detect.json()["items"].as_array().map(Vec::len), Some(3));
    let line: serde_json::Value = gw
        .logs()
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok().filter(|v: &serde_json::Value| v["handler"] == "detect"))
        .expect("the request's log line");
    assert!(line["metrics_errors"].as_u64() >= Some(1) && line["cache_errors"].as_u64() >= Some(1), "{line}");
    let metrics = gw.get("/metrics").await;
    assert_eq!((metrics.status, metrics.code()), (503, "metrics_unavailable".to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}
