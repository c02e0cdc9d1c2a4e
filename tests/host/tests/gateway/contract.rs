//! Every row of the orchestrator contract, end to end on the built
//! components: shapes, upstream requests, validation that never reaches Ximilar.

use crate::common::*;
use serde_json::json;

const PHOTO: &str = "https://shop.example/outfit.jpg?sig=abc";

#[tokio::test(flavor = "multi_thread")]
async fn detect_answers_items_from_detect_tags() {
    let gw = gateway(&[]).await;
    let reply = gw
        .request("POST", "/detect", &[("x-request-id", "orch-42")], json!({ "url": PHOTO }).to_string().as_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-request-id"), Some("orch-42"));
    let body = reply.json();
    assert_eq!(keys(&body), ["items"]);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(keys(item), ["bbox", "category", "confidence", "crop_url"]);
    }
    assert_eq!(items[0]["bbox"], json!([212, 340, 705, 1122]));
    assert_eq!(items[0]["crop_url"], format!("{PHOTO}#xywh=212,340,493,782"));
    assert_eq!(items[0]["category"], "Clothing/Upper");
    assert_eq!(items[0]["confidence"], 0.93);

    let calls = gw.mock.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", DETECT_PATH));
    assert_eq!(call.header("authorization"), Some(format!("Token {TOKEN}").as_str()));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("x-request-id"), Some("orch-42"), "the request id is forwarded");
    assert_eq!(call.json().unwrap(), json!({ "records": [{ "_url": PHOTO }] }));
    gw.assert_no_secret_in_logs();
}

#[tokio::test(flavor = "multi_thread")]
async fn detect_of_a_photo_without_garments_is_an_empty_list() {
    let gw = gateway(&[]).await;
    let reply = gw.post("/detect", r#"{"url": "https://shop.example/no-objects.jpg"}"#).await;
    assert_eq!((reply.status, reply.json()), (200, json!({ "items": [] })));
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_of_a_product_image_asks_the_tags_endpoint() {
    let gw = gateway(&[]).await;
    let reply = gw.post("/tag", r#"{"url": "https://shop.example/jeans.jpg"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(keys(&body), ["attributes", "color", "color_hex", "material", "pattern", "type"]);
    assert_eq!(body["type"], "jeans");
    assert_eq!((body["color"].as_str(), body["color_hex"].as_str()), (Some("black"), Some("#000000")));
    assert_eq!(body["material"], "cotton");
    assert_eq!(body["pattern"], "plain");
    let calls = gw.mock.calls_to(TAGS_PATH);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json().unwrap(), json!({ "records": [{ "_url": "https://shop.example/jeans.jpg" }] }));
    assert_eq!(gw.upstream_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_in_classify_mode_sends_the_task_id() {
    let gw = gateway(&[("tag_mode", "classify"), ("task_id", "task-77")]).await;
    let reply = gw.post("/tag", r#"{"url": "https://shop.example/jacket.jpg"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["type"], "denim jacket");
    let calls = gw.mock.calls_to("/recognition/v2/classify/");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json().unwrap()["task_id"], "task-77");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_sends_the_collection_header_and_sorts_candidates() {
    let gw = gateway(&[("search_fields", "_id,_url,brand,price"), ("search_filter_field", "category")]).await;
    let body = json!({ "crop_url": format!("{PHOTO}#xywh=212,340,493,782"), "category": "Clothing/Upper", "top_k": 5 });
    let reply = gw.post("/search", &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let candidates = reply.json()["candidates"].as_array().unwrap().clone();
    assert_eq!(candidates.len(), 5);
    let scores: Vec<f64> = candidates.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted best first: {scores:?}");
    assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0));
    for c in &candidates {
        assert_eq!(keys(c), ["image_urls", "metadata", "score", "sku_id"]);
        assert!(c["sku_id"].as_str().unwrap().starts_with("sku-"));
        assert_eq!(c["image_urls"].as_array().unwrap().len(), 1);
        assert!(c["metadata"]["brand"].is_string() && c["metadata"]["price"].is_number());
    }
    let calls = gw.mock.calls_to(SEARCH_PATH);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("collection-id"), Some(COLLECTION));
    let sent = calls[0].json().unwrap();
    assert_eq!(sent["query_record"], json!({ "_url": PHOTO }), "the crop's source image");
    assert_eq!(sent["k"], 5);
    assert_eq!(sent["fields_to_return"], json!(["_id", "_url", "brand", "price"]));
    assert_eq!(sent["filter"], json!({ "category": "Clothing/Upper" }));
    assert!(!calls[0].body.windows(COLLECTION.len()).any(|w| w == COLLECTION.as_bytes()), "not in the body");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_defaults_to_ten_and_sends_no_filter_unless_configured() {
    let gw = gateway(&[]).await;
    let reply = gw.post("/search", &json!({ "crop_url": PHOTO, "category": "jacket" }).to_string()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["candidates"].as_array().unwrap().len(), 10);
    let sent = gw.mock.calls_to(SEARCH_PATH)[0].json().unwrap();
    assert_eq!(sent["k"], 10);
    assert!(sent.get("filter").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn search_without_a_collection_is_503_not_configured_and_calls_nothing() {
    let gw = gateway(&[("collection_id", "")]).await;
    let reply = gw.post("/search", &json!({ "crop_url": PHOTO }).to_string()).await;
    assert_eq!((reply.status, reply.code().as_str()), (503, "not_configured"));
    assert_eq!(gw.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probes_the_account_with_the_token() {
    let gw = gateway(&[]).await;
    let reply = gw.get("/health").await;
    let expected = json!({ "status": "ok", "ximilar_reachable": true, "breaker": "closed" });
    assert_eq!((reply.status, reply.json()), (200, expected));
    let calls = gw.mock.calls_to(ACCOUNT_PATH);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].header("authorization"), Some(format!("Token {TOKEN}").as_str()));
    // Cached for health_cache_s (5 s by default): a second check is free.
    assert_eq!(gw.get("/health").await.json()["ximilar_reachable"], true);
    assert_eq!(gw.upstream(ACCOUNT_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_with_a_rejected_token_is_not_reachable_and_not_retried() {
    let gw = gateway(&[("api_token", "wrong-token"), ("health_cache_s", "0")]).await;
    let reply = gw.get("/health").await;
    assert_eq!(reply.status, 200);
    let expected = json!({ "status": "ok", "ximilar_reachable": false, "reason": "unauthorized", "breaker": "closed" });
    assert_eq!(reply.json(), expected);
    assert_eq!(gw.upstream(ACCOUNT_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_of_an_unreachable_ximilar_is_false_with_a_reason() {
    // A closed loopback port: connect errors, one try only.
    let gw = gateway(&[("api_url", "http://127.0.0.1:9"), ("health_cache_s", "0")]).await;
    let reply = gw.get("/health").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["ximilar_reachable"], false);
    assert_eq!(reply.json()["reason"], "connect_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_422_with_a_code_and_never_reaches_ximilar() {
    let gw = gateway(&[]).await;
    let long_url = format!("https://shop.example/{}", "a".repeat(2100));
    let cases: Vec<(&str, String, &str)> = vec![
        ("/detect", "not json".into(), "invalid_json"),
        ("/detect", "[]".into(), "invalid_json"),
        ("/detect", "{}".into(), "missing_field"),
        ("/detect", r#"{"url": 7}"#.into(), "invalid_field"),
        ("/detect", r#"{"url": "ftp://shop.example/a.jpg"}"#.into(), "invalid_url"),
        ("/detect", r#"{"url": "shop.example/a.jpg"}"#.into(), "invalid_url"),
        ("/detect", json!({ "url": long_url }).to_string(), "invalid_url"),
        ("/tag", "".into(), "invalid_json"),
        ("/tag", r#"{"url": "javascript:alert(1)"}"#.into(), "invalid_url"),
        ("/search", r#"{"url": "https://shop.example/a.jpg"}"#.into(), "missing_field"),
        ("/search", r#"{"crop_url": "https://shop.example/a.jpg", "top_k": 0}"#.into(), "invalid_field"),
        ("/search", r#"{"crop_url": "https://shop.example/a.jpg", "top_k": 101}"#.into(), "invalid_field"),
        ("/search", r#"{"crop_url": "https://shop.example/a.jpg", "top_k": "5"}"#.into(), "invalid_field"),
        ("/search", r#"{"crop_url": "https://shop.example/a.jpg", "category": ["a"]}"#.into(), "invalid_field"),
    ];
    for (path, body, code) in cases {
        let reply = gw.post(path, &body).await;
        assert_eq!((reply.status, reply.code().as_str()), (422, code), "{path} {body}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    assert_eq!(gw.upstream_total(), 0, "bad input must never reach Ximilar");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_413_without_an_upstream_call() {
    let gw = gateway(&[]).await;
    let big = json!({ "url": "https://shop.example/a.jpg", "pad": "x".repeat(70 * 1024) }).to_string();
    let reply = gw.post("/detect", &big).await;
    assert_eq!((reply.status, reply.code().as_str()), (413, "body_too_large"));
    // Without a Content-Length (chunked), the limit still holds while reading.
    let reply = gw.request("POST", "/tag", &[("transfer-encoding", "chunked")], big.as_bytes()).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    // Just under the limit is read and judged on its content.
    let fits = json!({ "url": "https://shop.example/a.jpg", "pad": "x".repeat(60 * 1024) }).to_string();
    assert_eq!(gw.post("/detect", &fits).await.status, 200);
    assert_eq!(gw.upstream_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let gw = gateway(&[]).await;
    for (method, path, allow) in [
        ("GET", "/detect", "POST"),
        ("PUT", "/tag", "POST"),
        ("DELETE", "/search", "POST"),
        ("POST", "/health", "GET"),
        ("POST", "/metrics", "GET"),
    ] {
        let reply = gw.request(method, path, &[], b"{}").await;
        assert_eq!((reply.status, reply.code().as_str()), (405, "method_not_allowed"), "{method} {path}");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
    let reply = gw.post("/nope", "{}").await;
    assert_eq!((reply.status, reply.body.len()), (404, 0));
    let reply = gw.get("/detect/extra").await;
    assert_eq!(reply.status, 404);
    assert_eq!(gw.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_minted_when_missing_or_unsafe() {
    let gw = gateway(&[]).await;
    let minted = gw.get("/health").await.header("x-request-id").unwrap().to_string();
    assert_eq!(minted.len(), 32);
    assert!(minted.bytes().all(|b| b.is_ascii_hexdigit()));
    let unsafe_id = gw.request("GET", "/health", &[("x-request-id", "a b<script>")], b"").await;
    assert_ne!(unsafe_id.header("x-request-id"), Some("a b<script>"));
    assert_ne!(unsafe_id.header("x-request-id"), Some(minted.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_log_line_per_request_without_urls_or_secrets() {
    let gw = gateway(&[]).await;
    gw.post("/detect", &json!({ "url": PHOTO }).to_string()).await;
    gw.post("/detect", "{}").await;
    let lines: Vec<serde_json::Value> = gw
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("handler").is_some())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["upstream_calls"], 1);
    assert_eq!(lines[1]["status"], 422);
    assert_eq!(lines[1]["code"], "missing_field");
    for line in gw.logs() {
        assert!(!line.contains("shop.example"), "no URL in logs: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crop_box_that_does_not_parse_is_422_without_a_call() {
    let gw = gateway(&[]).await;
    for fragment in ["xywh=1,2,0,4", "xywh=-1,2,3,4", "xywh=a,b,c,d", "xywh=1,2,3", "xywh=99999999999999999999,0,1,1"] {
        let url = format!("https://shop.example/outfit.jpg#{fragment}");
        let tag = gw.post("/tag", &json!({ "url": url }).to_string()).await;
        assert_eq!((tag.status, tag.code().as_str()), (422, "invalid_url"), "{fragment}");
        assert!(tag.json()["detail"].as_str().unwrap().contains("#xywh"), "{}", tag.text());
        let search = gw.post("/search", &json!({ "crop_url": url }).to_string()).await;
        assert_eq!((search.status, search.code().as_str()), (422, "invalid_url"), "{fragment}");
    }
    let percent = gw.post("/tag", r#"{"url": "https://shop.example/a.jpg#xywh=percent:10,10,50,50"}"#).await;
    assert_eq!(percent.status, 422);
    assert!(percent.json()["detail"].as_str().unwrap().contains("percent"));
    assert_eq!(gw.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_crop_url_of_a_long_signed_url_is_accepted() {
    let gw = gateway(&[]).await;
    let long = format!("https://shop.example/outfit.jpg?sig={}", "s".repeat(2048 - 36));
    assert_eq!(long.len(), 2048);
    let detect = gw.post("/detect", &json!({ "url": long }).to_string()).await;
    assert_eq!(detect.status, 200, "{}", detect.text());
    for item in detect.json()["items"].as_array().unwrap() {
        assert!(item["crop_url"].as_str().unwrap().len() > 2048);
        let tag = gw.post("/tag", &json!({ "url": item["crop_url"] }).to_string()).await;
        assert_eq!((tag.status, tag.header("x-cache")), (200, Some("HIT")), "{}", tag.text());
        assert_eq!(gw.post("/search", &json!({ "crop_url": item["crop_url"] }).to_string()).await.status, 200);
    }
    assert_eq!((gw.upstream(DETECT_PATH), gw.upstream(SEARCH_PATH)), (1, 1));
    let too_long = gw.post("/detect", &json!({ "url": format!("{long}s") }).to_string()).await;
    assert_eq!((too_long.status, too_long.code().as_str()), (422, "invalid_url"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_error_names_the_variable_never_its_value() {
    let gw = gateway(&[("timeout_ms", "soon-SECRET-value")]).await;
    let reply = gw.post("/detect", r#"{"url": "https://shop.example/a.jpg"}"#).await;
    assert_eq!((reply.status, reply.code().as_str()), (500, "config_error"));
    assert!(reply.text().contains("XIMILAR_TIMEOUT_MS") && !reply.text().contains("SECRET"), "{}", reply.text());
    assert_eq!(gw.upstream_total(), 0);
}
