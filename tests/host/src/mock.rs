//! A mock of the Ximilar API: the real paths and JSON shapes (docs/ximilar-api.md),
//! deterministic answers, optional latency, a scriptable queue of faults, and a record of
//! every call. Test infrastructure, not the product.
//!
//! Endpoints (all need `Authorization: Token <token>`, else 401 `{"detail": ...}`):
//! - `POST /tagging/fashion/v2/detect_tags`: per record `_objects` with pixel `bound_box`,
//!   `Top Category`, `Category`, `_tags`, `_tags_simple`. By default three objects (a jacket,
//!   jeans, sneakers); a `_url` containing `single` gives only the jacket, `no-objects` none,
//!   `bag` adds a handbag (whose pattern is under "Pattern and Material").
//! - `POST /tagging/fashion/v2/tags`: the record itself carries `_tags` (jacket, or jeans /
//!   sneakers / bag when the `_url` mentions `jeans`, `sneaker`/`shoe`, `bag`).
//! - `POST /recognition/v2/classify/`: needs `task_id` (or `task`); `best_label`, `labels`.
//! - `POST /similarity/fashion-new/v2/visualKNN`: header `collection-id` must be the configured
//!   one (missing: 400, wrong: 404); body `query_record`, `k`, optional `fields_to_return` and
//!   `filter` (equality or `$in`); `answer_records` (`_id`, `_url`, requested fields) with
//!   ascending `answer_distances`, at most `k`.
//! - `GET /account/v2/details/`: `credits_counter` (records processed so far), `credits_limit`.
//!
//! Anything else: 404 `{"detail": "Not found."}`.

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const DETECT_PATH: &str = "/tagging/fashion/v2/detect_tags";
pub const TAGS_PATH: &str = "/tagging/fashion/v2/tags";
pub const CLASSIFY_PATH: &str = "/recognition/v2/classify/";
pub const SEARCH_PATH: &str = "/similarity/fashion-new/v2/visualKNN";
pub const ACCOUNT_PATH: &str = "/account/v2/details/";

/// Ximilar's documented limit of records per request.
pub const MAX_RECORDS: usize = 10;

#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The token `Authorization: Token <token>` must carry.
    pub token: String,
    /// The `collection-id` visualKNN requires.
    pub collection_id: String,
    /// Sleep before every answer (benchmarks use 50 ms or 300 ms).
    pub latency: Duration,
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            token: "test-token".into(),
            collection_id: "test-collection".into(),
            latency: Duration::ZERO,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// One scripted misbehaviour, consumed by the next matching call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429, with `Retry-After: <value>` when given (e.g. `"1"` or an HTTP date).
    TooManyRequests { retry_after: Option<String> },
    /// That HTTP status with a JSON `{"detail": ...}` body (401 says "Invalid token.").
    Status(u16),
    /// HTTP 500 with the body `{"status": 500}`: a bare-integer status, as the official
    /// client expects some errors to look.
    BareStatus500,
    /// Sleep this long, then answer normally (use more than any client deadline).
    Hang(Duration),
    /// HTTP 200 with an HTML page (a proxy or maintenance page).
    Html,
    /// HTTP 200; every record's `_status` carries this error (e.g. 400 "could not download
    /// image") and has no results.
    RecordError { code: u16, text: String },
    /// HTTP 200 with an error in the envelope `status` and no results.
    EnvelopeError { code: u16, text: String },
    /// HTTP 200, `application/json`, body cut off mid-object.
    MalformedJson,
    /// Close the connection without answering.
    Disconnect,
}

impl Fault {
    /// 429 without Retry-After.
    pub fn too_many_requests() -> Fault {
        Fault::TooManyRequests { retry_after: None }
    }
    /// 429 with `Retry-After: <seconds>`.
    pub fn too_many_requests_retry_after(seconds: u64) -> Fault {
        Fault::TooManyRequests { retry_after: Some(seconds.to_string()) }
    }
    /// A hang longer than any deadline our gateway uses (10 minutes).
    pub fn hang() -> Fault {
        Fault::Hang(Duration::from_secs(600))
    }
    /// The per-record failure Ximilar reports when it cannot fetch the image.
    pub fn could_not_download() -> Fault {
        Fault::RecordError { code: 400, text: "could not download image".into() }
    }
}

/// One call the mock received.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// Arrival order, from 1.
    pub seq: u64,
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: Option<String>,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The HTTP status the mock answered; `None` while it has not answered yet (a hang)
    /// and for a disconnect. Calls are recorded when they arrive.
    pub status: Option<u16>,
}

impl RecordedCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub struct MockXimilar;

impl MockXimilar {
    pub async fn start(cfg: MockConfig) -> Result<MockHandle> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("mock Ximilar cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(MockState {
            latency_ms: AtomicU64::new(cfg.latency.as_millis() as u64),
            cfg,
            faults: Mutex::default(),
            calls: Mutex::default(),
            credits: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
            call_seq: AtomicU64::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let serving = state.clone();
        tokio::spawn(crate::accept::serve_connections(listener, stop_rx, true, move |_| {
            let state = serving.clone();
            hyper::service::service_fn(move |req| handle(state.clone(), req))
        }));
        Ok(MockHandle { addr, state, stop: Some(stop_tx) })
    }
}

/// A running mock. Dropping it stops accepting connections.
pub struct MockHandle {
    addr: SocketAddr,
    state: Arc<MockState>,
    stop: Option<oneshot::Sender<()>>,
}

impl MockHandle {
    /// `http://127.0.0.1:<port>` (no trailing slash): the value for the `api_url` variable.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a fault for the next call, whatever its path.
    pub fn push_fault(&self, f: Fault) {
        self.state.faults.lock().unwrap().push_back((None, f));
    }

    /// Queues a fault for the next call to `path` (e.g. [`DETECT_PATH`]).
    pub fn push_fault_for(&self, path: &str, f: Fault) {
        self.state.faults.lock().unwrap().push_back((Some(path.to_string()), f));
    }

    /// Faults not consumed yet.
    pub fn pending_faults(&self) -> usize {
        self.state.faults.lock().unwrap().len()
    }

    pub fn clear_faults(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Calls to one path.
    pub fn calls_to(&self, path: &str) -> Vec<RecordedCall> {
        self.calls().into_iter().filter(|c| c.path == path).collect()
    }

    pub fn clear_calls(&self) {
        self.state.calls.lock().unwrap().clear();
    }

    /// Changes the latency of later calls.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn config(&self) -> &MockConfig {
        &self.state.cfg
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct MockState {
    cfg: MockConfig,
    latency_ms: AtomicU64,
    faults: Mutex<VecDeque<(Option<String>, Fault)>>,
    calls: Mutex<Vec<RecordedCall>>,
    credits: AtomicU64,
    request_ids: AtomicU64,
    call_seq: AtomicU64,
}

impl MockState {
    fn set_status(&self, seq: u64, status: u16) {
        if let Some(call) = self.calls.lock().unwrap().iter_mut().find(|c| c.seq == seq) {
            call.status = Some(status);
        }
    }
}

type MockBody = Full<Bytes>;

/// Why the mock refuses to answer at all: hyper then closes the connection.
#[derive(Debug)]
struct Disconnect;

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted disconnect")
    }
}

impl std::error::Error for Disconnect {}

async fn handle(state: Arc<MockState>, req: Request<Incoming>) -> Result<Response<MockBody>, Disconnect> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let seq = state.call_seq.fetch_add(1, Ordering::Relaxed) + 1;
    let call = RecordedCall {
        seq,
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        status: None,
    };
    state.calls.lock().unwrap().push(call);

    // Faults are taken in arrival order, before the latency.
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        let pos = faults.iter().position(|(p, _)| p.as_deref().is_none_or(|p| p == path));
        pos.and_then(|i| faults.remove(i)).map(|(_, f)| f)
    };
    let latency = state.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let response = match fault {
        Some(Fault::Disconnect) => return Err(Disconnect),
        Some(Fault::Hang(d)) => {
            tokio::time::sleep(d).await;
            answer(&state, &parts.method, &path, &parts.headers, &body, None)
        }
        Some(f @ (Fault::RecordError { .. } | Fault::EnvelopeError { .. })) => {
            answer(&state, &parts.method, &path, &parts.headers, &body, Some(&f))
        }
        Some(f) => fault_response(&f),
        None => answer(&state, &parts.method, &path, &parts.headers, &body, None),
    };
    state.set_status(seq, response.status().as_u16());
    Ok(response)
}

fn fault_response(f: &Fault) -> Response<MockBody> {
    match f {
        Fault::TooManyRequests { retry_after } => {
            let mut r = json_response(StatusCode::TOO_MANY_REQUESTS, &json!({"detail": "Request was throttled."}));
            if let Some(v) = retry_after {
                r.headers_mut().insert("retry-after", v.parse().expect("Retry-After value"));
            }
            r
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let detail = match code {
                401 => "Invalid token.".to_string(),
                403 => "You do not have permission to perform this action.".to_string(),
                _ => status.canonical_reason().unwrap_or("Error").to_string(),
            };
            json_response(status, &json!({ "detail": detail }))
        }
        Fault::BareStatus500 => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"status": 500})),
        Fault::Html => raw_response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!DOCTYPE html><html><head><title>Maintenance</title></head><body><h1>We'll be back soon</h1></body></html>",
        ),
        Fault::MalformedJson => raw_response(
            StatusCode::OK,
            "application/json",
            r#"{"records": [{"_url": "https://example.com/a.jpg", "_objects": [{"name": "Clot"#,
        ),
        // Handled by the caller.
        Fault::Hang(_) | Fault::RecordError { .. } | Fault::EnvelopeError { .. } | Fault::Disconnect => {
            unreachable!("not a whole-response fault")
        }
    }
}

/// The normal behaviour of each endpoint; `modifier` is a record or envelope error fault.
fn answer(
    state: &MockState,
    method: &Method,
    path: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    modifier: Option<&Fault>,
) -> Response<MockBody> {
    let expected_method = match path {
        DETECT_PATH | TAGS_PATH | CLASSIFY_PATH | SEARCH_PATH => Method::POST,
        ACCOUNT_PATH => Method::GET,
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"detail": "Not found."})),
    };

    // Authentication comes before anything else, as in Django REST framework.
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    match auth {
        None => {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"detail": "Authentication credentials were not provided."}),
            )
        }
        Some(a) if a != format!("Token {}", state.cfg.token) => {
            return json_response(StatusCode::UNAUTHORIZED, &json!({"detail": "Invalid token."}))
        }
        Some(_) => {}
    }
    if *method != expected_method {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"detail": format!("Method \"{method}\" not allowed.")}),
        );
    }

    let request_id = format!("mock-{:08}", state.request_ids.fetch_add(1, Ordering::Relaxed) + 1);
    if path == ACCOUNT_PATH {
        return json_response(
            StatusCode::OK,
            &json!({
                "credits_counter": state.credits.load(Ordering::Relaxed),
                "credits_limit": 100000,
                "status": {"code": 200, "text": "OK", "request_id": request_id},
            }),
        );
    }

    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_request("JSON parse error - expected an object"),
        Err(e) => return bad_request(&format!("JSON parse error - {e}")),
    };

    if let Some(Fault::EnvelopeError { code, text }) = modifier {
        return json_response(
            StatusCode::OK,
            &json!({
                "records": [],
                "status": {"code": code, "text": text, "request_id": request_id},
                "statistics": {"processing time": 0.01},
            }),
        );
    }

    if path == SEARCH_PATH {
        return search(state, headers, &parsed, &request_id, modifier);
    }

    let records = match parsed.get("records") {
        Some(Value::Array(r)) if !r.is_empty() => r,
        Some(Value::Array(_)) | None => return bad_request("records: at least one record is required"),
        Some(_) => return bad_request("records: expected a list"),
    };
    if records.len() > MAX_RECORDS {
        return bad_request(&format!("Too many records, maximum is {MAX_RECORDS}."));
    }
    if path == CLASSIFY_PATH && parsed.get("task_id").or_else(|| parsed.get("task")).is_none() {
        return bad_request("task_id: this field is required");
    }
    let mut out = Vec::new();
    for record in records {
        let Some(record) = record.as_object() else {
            return bad_request("records: every record must be an object");
        };
        if !record.contains_key("_url") && !record.contains_key("_base64") {
            return bad_request("every record needs `_url` or `_base64`");
        }
        state.credits.fetch_add(1, Ordering::Relaxed);
        let mut r = record.clone();
        if let Some(Fault::RecordError { code, text }) = modifier {
            r.insert("_status".into(), json!({"code": code, "text": text, "request_id": request_id}));
            out.push(Value::Object(r));
            continue;
        }
        r.insert("_status".into(), json!({"code": 200, "text": "OK", "request_id": request_id}));
        r.insert("_width".into(), json!(IMAGE_WIDTH));
        r.insert("_height".into(), json!(IMAGE_HEIGHT));
        let url = record.get("_url").and_then(Value::as_str).unwrap_or("");
        match path {
            DETECT_PATH => {
                r.insert("_objects".into(), Value::Array(detected_objects(url)));
            }
            TAGS_PATH => {
                let item = item_for_tags(url);
                r.insert("Top Category".into(), json!(item.top_category));
                r.insert("Category".into(), json!(item.category));
                r.insert("_tags".into(), item.tags(url));
                r.insert("_tags_simple".into(), item.tags_simple());
            }
            _ => {
                let labels = classify_labels(url);
                r.insert("best_label".into(), labels[0].clone());
                r.insert("labels".into(), Value::Array(labels));
            }
        }
        out.push(Value::Object(r));
    }
    json_response(
        StatusCode::OK,
        &json!({
            "records": out,
            "status": {"code": 200, "text": "OK", "request_id": request_id},
            "statistics": {"processing time": 0.42},
        }),
    )
}

// ---------------------------------------------------------------------------------------
// Deterministic content

const IMAGE_WIDTH: u32 = 1200;
const IMAGE_HEIGHT: u32 = 1600;

struct Item {
    name: &'static str,
    top_category: &'static str,
    category: &'static str,
    prob: f64,
    bound_box: [u32; 4],
    tags: &'static [(&'static str, &'static str, f64)],
}

const JACKET: Item = Item {
    name: "Clothing",
    top_category: "Clothing",
    category: "Clothing/Upper",
    prob: 0.93,
    bound_box: [212, 340, 705, 1122],
    tags: &[
        ("Category", "Clothing/Upper", 0.95),
        ("Subcategory", "jackets", 0.9),
        ("Color", "blue", 0.81),
        ("Material", "denim", 0.64),
        ("Design", "plain", 0.77),
        ("Sleeves", "long sleeves", 0.88),
    ],
};

const JEANS: Item = Item {
    name: "Clothing",
    top_category: "Clothing",
    category: "Clothing/Lower",
    prob: 0.88,
    bound_box: [260, 1050, 690, 1540],
    tags: &[
        ("Category", "Clothing/Lower", 0.92),
        ("Subcategory", "jeans", 0.87),
        ("Color", "black", 0.79),
        ("Material", "cotton", 0.58),
        ("Design", "plain", 0.7),
        ("Length", "long", 0.83),
    ],
};

const SNEAKERS: Item = Item {
    name: "Footwear",
    top_category: "Footwear",
    category: "Footwear/Sneakers",
    prob: 0.81,
    bound_box: [300, 1480, 620, 1590],
    tags: &[
        ("Category", "Footwear/Sneakers", 0.9),
        ("Color", "white", 0.86),
        ("Material", "leather", 0.52),
        ("Design", "logo", 0.61),
    ],
};

const HANDBAG: Item = Item {
    name: "Bags",
    top_category: "Bags",
    category: "Bags/Handbags",
    prob: 0.76,
    bound_box: [720, 800, 1010, 1130],
    tags: &[
        ("Category", "Bags/Handbags", 0.88),
        ("Color", "brown", 0.74),
        ("Material", "leather", 0.69),
        ("Pattern and Material", "croco", 0.57),
    ],
};

impl Item {
    fn tags(&self, url: &str) -> Value {
        let mut map = Map::new();
        for (feature, name, prob) in self.tags {
            // Ximilar lists candidates per feature, best first; add a weaker runner-up.
            let runner_up = format!("not {name}");
            map.insert(
                feature.to_string(),
                json!([
                    {"name": name, "prob": prob, "id": stable_id(&format!("{feature}/{name}"))},
                    {"name": runner_up, "prob": round3((1.0 - prob) / 2.0), "id": stable_id(&format!("{feature}/{runner_up}/{url}"))},
                ]),
            );
        }
        Value::Object(map)
    }

    fn tags_simple(&self) -> Value {
        Value::Array(self.tags.iter().map(|(_, name, _)| json!(name)).collect())
    }

    fn object(&self, url: &str, index: usize) -> Value {
        let [x1, y1, x2, y2] = self.bound_box;
        let area = f64::from((x2 - x1) * (y2 - y1)) / f64::from(IMAGE_WIDTH * IMAGE_HEIGHT);
        json!({
            "name": self.name,
            "id": stable_id(&format!("{url}#{index}")),
            "prob": self.prob,
            "area": round3(area),
            "bound_box": self.bound_box,
            "Top Category": self.top_category,
            "Category": self.category,
            "_tags": self.tags(url),
            "_tags_simple": self.tags_simple(),
        })
    }
}

fn detected_objects(url: &str) -> Vec<Value> {
    let items: Vec<&Item> = if url.contains("no-objects") {
        vec![]
    } else if url.contains("single") {
        vec![&JACKET]
    } else if url.contains("bag") {
        vec![&JACKET, &JEANS, &SNEAKERS, &HANDBAG]
    } else {
        vec![&JACKET, &JEANS, &SNEAKERS]
    };
    items.iter().enumerate().map(|(i, item)| item.object(url, i)).collect()
}

fn item_for_tags(url: &str) -> &'static Item {
    let u = url.to_ascii_lowercase();
    if u.contains("jeans") {
        &JEANS
    } else if u.contains("sneaker") || u.contains("shoe") {
        &SNEAKERS
    } else if u.contains("bag") {
        &HANDBAG
    } else {
        &JACKET
    }
}

fn classify_labels(url: &str) -> Vec<Value> {
    [("denim jacket", 0.91), ("leather jacket", 0.06), ("blazer", 0.03)]
        .iter()
        .map(|(name, prob)| json!({"id": stable_id(&format!("label/{name}")), "name": name, "prob": prob}))
        .chain(std::iter::once(json!({"id": stable_id(url), "name": "other", "prob": 0.0})))
        .collect()
}

const BRANDS: [&str; 3] = ["Acme", "Globex", "Initech"];

/// The searchable collection: 30 products in three categories.
fn catalog() -> Vec<Value> {
    let categories = ["Clothing/Upper", "Clothing/Lower", "Footwear/Sneakers"];
    (1..=30)
        .map(|n| {
            json!({
                "_id": format!("sku-{n:03}"),
                "_url": format!("https://cdn.example.com/products/sku-{n:03}.jpg"),
                "product_id": format!("P{n:03}"),
                "name": format!("Product {n}"),
                "category": categories[(n - 1) % 3],
                "brand": BRANDS[(n / 3) % 3],
                "price": 10 + n * 5,
            })
        })
        .collect()
}

fn search(
    state: &MockState,
    headers: &http::HeaderMap,
    body: &Value,
    request_id: &str,
    modifier: Option<&Fault>,
) -> Response<MockBody> {
    match headers.get("collection-id").and_then(|v| v.to_str().ok()) {
        None => return bad_request("collection-id header is required"),
        Some(c) if c != state.cfg.collection_id => {
            return json_response(StatusCode::NOT_FOUND, &json!({"detail": "Collection not found."}))
        }
        Some(_) => {}
    }
    let Some(query) = body.get("query_record").and_then(Value::as_object) else {
        return bad_request("query_record: this field is required");
    };
    if !["_url", "_base64", "_id"].iter().any(|k| query.contains_key(*k)) {
        return bad_request("query_record needs `_url`, `_base64` or `_id`");
    }
    let k = match body.get("k") {
        None => 10,
        Some(v) => match v.as_u64() {
            Some(k) if k >= 1 => k as usize,
            _ => return bad_request("k: a positive integer is required"),
        },
    };
    let fields: Vec<String> = match body.get("fields_to_return") {
        None => vec![],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(_) => return bad_request("fields_to_return: expected a list"),
    };
    state.credits.fetch_add(1, Ordering::Relaxed);
    if let Some(Fault::RecordError { code, text }) = modifier {
        // Visual search has one query record: its failure is reported in the envelope.
        return json_response(
            StatusCode::OK,
            &json!({"answer_records": [], "answer_distances": [], "answer_count": 0,
                    "status": {"code": code, "text": text, "request_id": request_id}}),
        );
    }

    let filter = body.get("filter").and_then(Value::as_object);
    let mut matching: Vec<Value> =
        catalog().into_iter().filter(|item| filter.is_none_or(|f| matches_filter(item, f))).collect();
    // A deterministic order that depends on the query, and ascending distances.
    let query_key = query
        .get("_url")
        .or_else(|| query.get("_id"))
        .or_else(|| query.get("_base64"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let seed = fnv1a(query_key);
    matching.sort_by_key(|item| fnv1a(&format!("{seed}/{}", item["_id"])));
    matching.truncate(k);
    let base = (seed % 100) as f64 / 1000.0;
    let distances: Vec<f64> = (0..matching.len()).map(|i| round3(0.1 + base + 0.05 * i as f64)).collect();
    let records: Vec<Value> = matching
        .iter()
        .map(|item| {
            let mut r = Map::new();
            r.insert("_id".into(), item["_id"].clone());
            r.insert("_url".into(), item["_url"].clone());
            for f in &fields {
                if let Some(v) = item.get(f) {
                    r.insert(f.clone(), v.clone());
                }
            }
            Value::Object(r)
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "answer_records": records,
            "answer_distances": distances,
            "answer_count": records.len(),
            "status": {"code": 200, "text": "OK", "request_id": request_id},
            "statistics": {"processing time": 0.12},
        }),
    )
}

/// `{"field": value}` or `{"field": {"$in": [..]}}`, all of which must hold.
fn matches_filter(item: &Value, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(field, cond)| {
        let actual = item.get(field);
        match cond {
            Value::Object(ops) => ops.iter().all(|(op, arg)| match (op.as_str(), arg) {
                ("$in", Value::Array(options)) => actual.is_some_and(|a| options.contains(a)),
                ("$eq", v) => actual == Some(v),
                ("$ne", v) => actual != Some(v),
                _ => false,
            }),
            v => actual == Some(v),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Helpers

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

/// A UUID-shaped id that depends only on `seed`.
fn stable_id(seed: &str) -> String {
    let a = fnv1a(seed);
    let b = fnv1a(&format!("{seed}~"));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn bad_request(detail: &str) -> Response<MockBody> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "detail": detail }))
}

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    raw_response(status, "application/json", &body.to_string())
}

fn raw_response(status: StatusCode, content_type: &str, body: &str) -> Response<MockBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", content_type.parse().expect("content type"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_filter_forms() {
        let item = json!({"category": "Clothing/Upper", "price": 15});
        let f = |v: Value| matches_filter(&item, v.as_object().unwrap());
        assert!(f(json!({"category": "Clothing/Upper"})));
        assert!(f(json!({"category": {"$in": ["Clothing/Upper", "x"]}})));
        assert!(!f(json!({"category": {"$in": ["x"]}})));
        assert!(!f(json!({"category": "Clothing/Lower"})));
        assert!(f(json!({})));
    }

    #[test]
    fn detected_boxes_lie_inside_the_image() {
        for url in ["https://x/a.jpg", "https://x/bag.jpg"] {
            for o in detected_objects(url) {
                let b: Vec<u64> = o["bound_box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                assert!(
                    b[0] < b[2] && b[1] < b[3] && b[2] <= u64::from(IMAGE_WIDTH) && b[3] <= u64::from(IMAGE_HEIGHT)
                );
            }
        }
        assert_eq!(detected_objects("https://x/no-objects.jpg").len(), 0);
        assert_eq!(detected_objects("https://x/single.jpg").len(), 1);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(stable_id("a"), stable_id("a"));
        assert_ne!(stable_id("a"), stable_id("b"));
        assert_eq!(stable_id("a").len(), 36);
    }
}
