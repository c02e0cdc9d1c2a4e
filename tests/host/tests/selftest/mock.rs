//! The mock Ximilar: shapes, authentication, the fault queue, latency and call recording.

use crate::common::*;
use serde_json::json;
use spin_test_host::client::{self, Reply};
use spin_test_host::mock::*;
use std::time::{Duration, Instant};

async fn post(mock: &MockHandle, path: &str, body: serde_json::Value, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Token {}", mock.config().token);
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
    headers.extend_from_slice(extra);
    client::send(http::Method::POST, &format!("{}{path}", mock.url()), &headers, body.to_string()).await.unwrap()
}

fn one_record(url: &str) -> serde_json::Value {
    json!({"records": [{"_url": url, "_id": "mine"}]})
}

#[tokio::test]
async fn detect_tags_has_ximilars_shape() {
    let mock = mock().await;
    let r = post(&mock, DETECT_PATH, one_record("https://shop/photo.jpg"), &[]).await;
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["status"]["code"], 200);
    assert!(v["status"]["request_id"].is_string());
    assert!(v["statistics"]["processing time"].is_number());
    let rec = &v["records"][0];
    assert_eq!(rec["_url"], "https://shop/photo.jpg");
    assert_eq!(rec["_id"], "mine", "extra record fields are echoed");
    assert_eq!(rec["_status"]["code"], 200);
    let (w, h) = (rec["_width"].as_u64().unwrap(), rec["_height"].as_u64().unwrap());
    let objects = rec["_objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    for o in objects {
        let b: Vec<u64> = o["bound_box"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
        assert!(b[0] < b[2] && b[2] <= w && b[1] < b[3] && b[3] <= h, "pixel [xmin,ymin,xmax,ymax]: {b:?}");
        assert!(o["Top Category"].is_string() && o["Category"].is_string());
        assert!(o["prob"].as_f64().unwrap() > 0.0 && o["id"].is_string() && o["name"].is_string());
        for tag in o["_tags"]["Color"].as_array().unwrap() {
            assert!(tag["name"].is_string() && tag["prob"].is_number() && tag["id"].is_string());
        }
        assert!(o["_tags_simple"].is_array());
    }
    assert_eq!(objects[0]["_tags"]["Category"][0]["name"], "Clothing/Upper");

    let bag = post(&mock, DETECT_PATH, one_record("https://shop/bag.jpg"), &[]).await.json().unwrap();
    let bag_obj = bag["records"][0]["_objects"].as_array().unwrap().last().unwrap().clone();
    assert!(bag_obj["_tags"]["Pattern and Material"].is_array());
    let none = post(&mock, DETECT_PATH, one_record("https://shop/no-objects.jpg"), &[]).await.json().unwrap();
    assert_eq!(none["records"][0]["_objects"], json!([]));

    // Deterministic: the same input gives the same answer, ids included.
    let again = post(&mock, DETECT_PATH, one_record("https://shop/photo.jpg"), &[]).await.json().unwrap();
    assert_eq!(again["records"][0]["_objects"], v["records"][0]["_objects"]);
    assert_ne!(again["status"]["request_id"], v["status"]["request_id"], "request ids are per call");
}

#[tokio::test]
async fn tags_classify_and_account() {
    let mock = mock().await;
    let t = post(&mock, TAGS_PATH, one_record("https://shop/jeans.jpg"), &[]).await.json().unwrap();
    let rec = &t["records"][0];
    assert_eq!(rec["_tags"]["Subcategory"][0]["name"], "jeans");
    assert!(rec.get("_objects").is_none(), "tags answers on the record itself");

    let missing_task = post(&mock, CLASSIFY_PATH, one_record("https://shop/a.jpg"), &[]).await;
    assert_eq!(missing_task.status, 400);
    assert!(missing_task.json().unwrap()["detail"].is_string());
    let mut body = one_record("https://shop/a.jpg");
    body["task_id"] = json!("task-1");
    let c = post(&mock, CLASSIFY_PATH, body, &[]).await.json().unwrap();
    assert_eq!(c["records"][0]["best_label"]["name"], "denim jacket");
    assert!(c["records"][0]["labels"].as_array().unwrap().len() >= 2);

    let auth = format!("Token {}", mock.config().token);
    let acc =
        client::send(http::Method::GET, &format!("{}{ACCOUNT_PATH}", mock.url()), &[("authorization", &auth)], "")
            .await
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(acc["credits_counter"], 2, "two records processed (the rejected classify cost nothing)");
    assert!(acc["credits_limit"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn visual_knn_needs_the_collection_and_answers_k_ascending() {
    let mock = mock().await;
    let query = json!({"query_record": {"_url": "https://shop/a.jpg#xywh=1,2,3,4"}, "k": 5, "fields_to_return": ["_id", "_url", "product_id", "category"]});
    let missing = post(&mock, SEARCH_PATH, query.clone(), &[]).await;
    assert_eq!(missing.status, 400);
    assert!(missing.json().unwrap()["detail"].is_string());
    let wrong = post(&mock, SEARCH_PATH, query.clone(), &[("collection-id", "other")]).await;
    assert_eq!(wrong.status, 404);
    assert!(wrong.json().unwrap()["detail"].is_string());

    let ok = post(&mock, SEARCH_PATH, query, &[("collection-id", "test-collection")]).await.json().unwrap();
    let records = ok["answer_records"].as_array().unwrap();
    let distances: Vec<f64> = ok["answer_distances"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    assert_eq!(records.len(), 5);
    assert_eq!(distances.len(), 5);
    assert!(distances.windows(2).all(|w| w[0] < w[1]), "ascending: {distances:?}");
    for r in records {
        assert!(
            r["_id"].is_string() && r["_url"].is_string() && r["product_id"].is_string() && r["category"].is_string()
        );
        assert!(r.get("price").is_none(), "only the requested fields");
    }

    let filtered =
        json!({"query_record": {"_id": "sku-001"}, "k": 100, "filter": {"category": {"$in": ["Footwear/Sneakers"]}}});
    let f = post(&mock, SEARCH_PATH, filtered, &[("collection-id", "test-collection")]).await.json().unwrap();
    assert_eq!(f["answer_records"].as_array().unwrap().len(), 10, "30 products, a third of them sneakers");
}

#[tokio::test]
async fn authentication_and_unknown_paths() {
    let mock = mock().await;
    let url = format!("{}{DETECT_PATH}", mock.url());
    let none = client::post_json(&url, &one_record("https://a/b.jpg")).await.unwrap();
    assert_eq!(none.status, 401);
    assert!(none.json().unwrap()["detail"].is_string());
    let wrong = client::send(http::Method::POST, &url, &[("authorization", "Token nope")], one_record("x").to_string())
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json().unwrap(), json!({"detail": "Invalid token."}));
    let unknown = post(&mock, "/recognition/v2/detect", one_record("x"), &[]).await;
    assert_eq!(unknown.status, 404);
    let too_many: Vec<_> = (0..11).map(|i| json!({"_url": format!("https://a/{i}.jpg")})).collect();
    assert_eq!(post(&mock, DETECT_PATH, json!({"records": too_many}), &[]).await.status, 400);
}

#[tokio::test]
async fn faults_are_consumed_in_order_by_matching_calls() {
    let mock = mock().await;
    mock.push_fault(Fault::Status(503));
    mock.push_fault(Fault::too_many_requests_retry_after(2));
    mock.push_fault(Fault::too_many_requests());
    mock.push_fault_for(SEARCH_PATH, Fault::Status(502));
    assert_eq!(mock.pending_faults(), 4);

    let body = one_record("https://a/b.jpg");
    assert_eq!(post(&mock, DETECT_PATH, body.clone(), &[]).await.status, 503);
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (429, Some("2")));
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!((r.status.as_u16(), r.header("retry-after")), (429, None));
    // The search-only fault is still waiting: detect is answered normally.
    assert_eq!(post(&mock, DETECT_PATH, body.clone(), &[]).await.status, 200);
    assert_eq!(mock.pending_faults(), 1);
    let search = json!({"query_record": {"_id": "sku-001"}, "k": 1});
    assert_eq!(post(&mock, SEARCH_PATH, search.clone(), &[("collection-id", "test-collection")]).await.status, 502);
    assert_eq!(post(&mock, SEARCH_PATH, search, &[("collection-id", "test-collection")]).await.status, 200);
    assert_eq!(mock.pending_faults(), 0);

    let statuses: Vec<Option<u16>> = mock.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(429), Some(429), Some(200), Some(502), Some(200)]);
}

#[tokio::test]
async fn every_fault_kind_looks_like_it_should() {
    let mock = mock().await;
    let body = one_record("https://a/b.jpg");

    mock.push_fault(Fault::Status(401));
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!((r.status.as_u16(), r.json().unwrap()), (401, json!({"detail": "Invalid token."})));

    mock.push_fault(Fault::BareStatus500);
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!((r.status.as_u16(), r.json().unwrap()), (500, json!({"status": 500})));

    for code in [502, 504] {
        mock.push_fault(Fault::Status(code));
        assert_eq!(post(&mock, DETECT_PATH, body.clone(), &[]).await.status, code);
    }

    mock.push_fault(Fault::Html);
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.json().is_err());

    mock.push_fault(Fault::MalformedJson);
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!((r.status.as_u16(), r.header("content-type")), (200, Some("application/json")));
    assert!(r.json().is_err());

    mock.push_fault(Fault::could_not_download());
    let v = post(&mock, DETECT_PATH, body.clone(), &[]).await.json().unwrap();
    assert_eq!(v["status"]["code"], 200);
    assert_eq!(
        v["records"][0]["_status"],
        json!({"code": 400, "text": "could not download image", "request_id": v["records"][0]["_status"]["request_id"]})
    );
    assert!(v["records"][0].get("_objects").is_none());

    mock.push_fault(Fault::EnvelopeError { code: 500, text: "Internal error".into() });
    let r = post(&mock, DETECT_PATH, body.clone(), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["status"]["code"], 500);

    mock.push_fault(Fault::Disconnect);
    let url = format!("{}{DETECT_PATH}", mock.url());
    let auth = format!("Token {}", mock.config().token);
    assert!(client::send(http::Method::POST, &url, &[("authorization", &auth)], body.to_string()).await.is_err());

    mock.push_fault(Fault::Hang(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(post(&mock, DETECT_PATH, body.clone(), &[]).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.pending_faults(), 0);
}

#[tokio::test]
async fn latency_and_call_recording() {
    let mock = MockXimilar::start(MockConfig {
        latency: Duration::from_millis(1200),
        token: "tok".into(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let r = client::send(
        http::Method::POST,
        &format!("{}{DETECT_PATH}?x=1", mock.url()),
        &[("authorization", "Token tok"), ("x-request-id", "rid-1")],
        one_record("https://a/b.jpg").to_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1200));

    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!((c.method.as_str(), c.path.as_str(), c.query.as_deref()), ("POST", DETECT_PATH, Some("x=1")));
    assert_eq!(c.header("X-Request-Id"), Some("rid-1"));
    assert_eq!(c.json().unwrap(), one_record("https://a/b.jpg"));
    mock.clear_calls();
    assert!(mock.calls().is_empty());

    mock.set_latency(Duration::ZERO);
    let started = Instant::now();
    client::get(&format!("{}/nope", mock.url())).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1000), "latency still applied");
}
