//! Every upstream fault the mock can script, mapped to its documented status,
//! with the exact number of calls Ximilar received (retries counted).

use crate::common::*;
use serde_json::json;
use spin_test_host::mock::Fault;
use std::time::{Duration, Instant};

const BODY: &str = r#"{"url": "https://shop.example/outfit.jpg"}"#;

/// Scripts `faults` for the detect path, calls /detect once, and returns the
/// reply and how many calls Ximilar saw.
async fn detect_with(vars: &[(&str, &str)], faults: Vec<Fault>) -> (Reply, usize, Duration) {
    let gw = gateway(vars).await;
    for f in faults {
        gw.mock.push_fault_for(DETECT_PATH, f);
    }
    let started = Instant::now();
    let reply = gw.post("/detect", BODY).await;
    let elapsed = started.elapsed();
    (reply, gw.upstream(DETECT_PATH), elapsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_until_success() {
    let (reply, calls, _) =
        detect_with(&[], vec![Fault::too_many_requests(), Fault::Status(502), Fault::Status(503)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(calls, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_429_without_retry_after_is_503_with_retry_after() {
    let (reply, calls, _) = detect_with(&[], vec![Fault::too_many_requests(); 4]).await;
    assert_eq!((reply.status, reply.code().as_str()), (503, "upstream_unavailable"));
    // No Retry-After from Ximilar: the next backoff ceiling, min(100 ms, 20 ms × 2³) with the
    // harness's backoff, raised to the 1 s floor.
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(calls, 4, "1 try + 3 retries");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_503_is_503_and_max_retries_is_honoured() {
    let (reply, calls, _) = detect_with(&[], vec![Fault::Status(503); 4]).await;
    assert_eq!((reply.status, calls), (503, 4));
    let (reply, calls, _) = detect_with(&[("max_retries", "1")], vec![Fault::Status(503); 2]).await;
    assert_eq!((reply.status, calls), (503, 2));
    let (reply, calls, _) = detect_with(&[("max_retries", "0")], vec![Fault::Status(503)]).await;
    assert_eq!((reply.status, calls), (503, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_from_ximilar_is_honoured() {
    let (reply, calls, elapsed) = detect_with(&[], vec![Fault::too_many_requests_retry_after(1)]).await;
    assert_eq!((reply.status, calls), (200, 2));
    assert!(elapsed >= Duration::from_millis(950), "waited {elapsed:?}, Retry-After said 1 s");
    // ... but capped: a 120 s hint waits at most retry_after_max_ms.
    let (reply, calls, elapsed) =
        detect_with(&[("retry_after_max_ms", "300")], vec![Fault::too_many_requests_retry_after(120)]).await;
    assert_eq!((reply.status, calls), (200, 2));
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_502_is_502_and_504_is_504() {
    let (reply, calls, _) = detect_with(&[], vec![Fault::Status(502); 4]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_error", 4));
    let (reply, calls, _) = detect_with(&[], vec![Fault::Status(504); 4]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (504, "upstream_timeout", 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_is_502_and_never_retried() {
    let (reply, calls, _) = detect_with(&[], vec![Fault::Status(401)]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_auth", 1));
    let (reply, calls, _) = detect_with(&[], vec![Fault::Status(403)]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_auth", 1));
    // A wrong token configured: the mock itself refuses it.
    let (reply, calls, _) = detect_with(&[("api_token", "not-the-token")], vec![]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_auth", 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn other_errors_are_502_and_not_retried() {
    for fault in [Fault::Status(400), Fault::Status(404), Fault::Status(500), Fault::BareStatus500] {
        let label = format!("{fault:?}");
        let (reply, calls, _) = detect_with(&[], vec![fault]).await;
        assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_error", 1), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers_are_502_and_not_retried() {
    for fault in [Fault::Html, Fault::MalformedJson] {
        let label = format!("{fault:?}");
        let (reply, calls, _) = detect_with(&[], vec![fault]).await;
        assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_malformed", 1), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_status_in_the_envelope_is_502() {
    let fault = Fault::EnvelopeError { code: 500, text: "Internal error".into() };
    let (reply, calls, _) = detect_with(&[], vec![fault]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_error", 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_record_failure_is_422_that_says_so() {
    let (reply, calls, _) = detect_with(&[], vec![Fault::could_not_download()]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (422, "image_not_processed", 1));
    assert!(reply.json()["detail"].as_str().unwrap().contains("could not process the image"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_is_cut_at_the_deadline_with_504() {
    let (reply, calls, elapsed) = detect_with(&[("timeout_ms", "1500")], vec![Fault::hang()]).await;
    assert_eq!((reply.status, reply.code().as_str()), (504, "upstream_timeout"));
    assert_eq!(calls, 1);
    assert!(elapsed >= Duration::from_millis(1400), "answered before the deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(3000), "answered long after the deadline: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_try_leaves_budget_for_a_retry() {
    // Each try gets at most 600 ms of the 3 s deadline; the second try answers.
    let (reply, calls, elapsed) =
        detect_with(&[("timeout_ms", "3000"), ("attempt_timeout_ms", "600")], vec![Fault::hang()]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(calls, 2);
    assert!(elapsed >= Duration::from_millis(550) && elapsed < Duration::from_millis(2500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_after_the_request_is_502_and_not_retried() {
    // Ximilar may have processed (and billed) the request: only connect
    // errors, timeouts and the transient statuses are retried.
    let (reply, calls, _) = detect_with(&[], vec![Fault::Disconnect]).await;
    assert_eq!((reply.status, reply.code().as_str(), calls), (502, "upstream_unreachable", 1), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_retried_then_503() {
    // Nobody listens on port 9 of loopback: every try is a connect error.
    let gw = gateway(&[("api_url", "http://127.0.0.1:9")]).await;
    let reply = gw.post("/detect", BODY).await;
    assert_eq!((reply.status, reply.code().as_str(), gw.upstream_total()), (503, "upstream_unavailable", 0));
    assert_eq!(reply.header("retry-after"), Some("1"));
    // The tries never reached the mock: the request's log line counts them.
    let lines = gw.app.wait_for_logs(1, Duration::from_secs(5)).await;
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!((line["upstream_calls"].as_u64(), line["retries"].as_u64()), (Some(4), Some(3)), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_on_tag_and_search_map_the_same_way() {
    let gw = gateway(&[]).await;
    gw.mock.push_fault_for(TAGS_PATH, Fault::Status(401));
    let reply = gw.post("/tag", r#"{"url": "https://shop.example/jeans.jpg"}"#).await;
    assert_eq!((reply.status, gw.upstream(TAGS_PATH)), (502, 1));
    for _ in 0..4 {
        gw.mock.push_fault_for(SEARCH_PATH, Fault::too_many_requests());
    }
    let reply = gw.post("/search", &json!({ "crop_url": "https://shop.example/a.jpg" }).to_string()).await;
    assert_eq!((reply.status, gw.upstream(SEARCH_PATH)), (503, 4));
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_the_configured_host_are_allowed_and_counted() {
    // api_url is also the allowed outbound host (a template in spin.toml), so
    // pointing the gateway at a mock needs no manifest edit. Denial of other
    // hosts is the test host's own self-test.
    let gw = gateway(&[]).await;
    assert_eq!(gw.app.denied_calls(), 0);
    gw.post("/detect", BODY).await;
    assert_eq!(gw.app.denied_calls(), 0, "calls to api_url are allowed");
    assert_eq!(gw.app.outbound_calls("detect"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_passed_to_callers_is_bounded_and_zero_is_no_burst() {
    // Ximilar asks for an hour: the gateway waits at most retry_after_max_ms between tries,
    // and tells its caller no more than that either (rounded up to whole seconds).
    let (reply, calls, _) =
        detect_with(&[("retry_after_max_ms", "300")], vec![Fault::too_many_requests_retry_after(3_600); 4]).await;
    assert_eq!((reply.status, reply.header("retry-after"), calls), (503, Some("1"), 4));
    // Retry-After: 0 still waits the jittered backoff: four tries, never faster than 0 waits,
    // and the caller is told at least 1 s.
    let (reply, calls, _) = detect_with(&[], vec![Fault::too_many_requests_retry_after(0); 4]).await;
    assert_eq!((reply.status, reply.header("retry-after"), calls), (503, Some("1"), 4));
}

/// A Ximilar on a raw socket that answers every request with `body` (its length
/// declared) in two halves: the headers after `before`, the second half `gap`
/// after the first. Returns its URL and how many requests it has answered.
async fn answering_in_two_halves(
    body: String,
    before: Duration,
    gap: Duration,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let (body, count) = (body.clone(), count.clone());
            tokio::spawn(async move {
                // The request: headers, then as many bytes as it declares.
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let declared = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + declared {
                            break;
                        }
                    }
                }
                tokio::time::sleep(before).await;
                let (first, second) = body.as_bytes().split_at(body.len() / 2);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(&[head.as_bytes(), first].concat()).await;
                tokio::time::sleep(gap).await;
                let _ = socket.write_all(second).await;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, answered)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_that_ends_after_the_tries_deadline_is_not_sent_again() {
    // Each try has 600 ms: the headers come at 350 ms, the end of the body at 700 ms,
    // no gap longer than the between-bytes timeout. The whole answer is there, and may
    // have been billed: it is the answer, not a timeout to retry.
    let answer = json!({
        "records": [{ "_url": "https://shop.example/outfit.jpg", "_objects": [], "_status": { "code": 200, "text": "OK" } }],
        "status": { "code": 200, "text": "OK" },
    });
    let (url, answered) =
        answering_in_two_halves(answer.to_string(), Duration::from_millis(350), Duration::from_millis(350)).await;
    let vars = [("api_url", url.as_str()), ("timeout_ms", "3000"), ("attempt_timeout_ms", "600")];
    let gw = gateway(&vars).await;
    let reply = gw.post("/detect", BODY).await;
    assert_eq!((reply.status, reply.json()), (200, json!({ "items": [] })), "{}", reply.text());
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 1, "one try");
}
