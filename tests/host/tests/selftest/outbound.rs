//! allowed_outbound_hosts enforcement, call counting and outbound timeouts.

use crate::common::*;
use spin_test_host::client;
use spin_test_host::mock::{Fault, DETECT_PATH};
use spin_test_host::start_app;
use std::time::{Duration, Instant};

fn detect_body() -> serde_json::Value {
    serde_json::json!({"records": [{"_url": "https://shop.example.com/single.jpg"}]})
}

#[tokio::test]
async fn an_allowed_host_is_reached_and_counted() {
    let mock = mock().await;
    let dir = TempDir::new("allowed");
    let app = forwarder_app(&dir, r#"["{{ upstream_url }}"]"#, &[("upstream_url", &mock.url())]).await;

    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json().unwrap();
    assert_eq!(json["records"][0]["_objects"].as_array().unwrap().len(), 1);

    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, DETECT_PATH);
    assert_eq!(calls[0].header("authorization"), Some("Token test-token"));
    assert_eq!(calls[0].json().unwrap(), detect_body());
    assert_eq!(app.outbound_calls("fwd"), 1);
    assert_eq!(app.denied_calls(), 0);
}

#[tokio::test]
async fn a_host_outside_the_list_is_denied_and_never_contacted() {
    let mock = mock().await;
    let dir = TempDir::new("denied");
    // The list names another port on the same address: scheme and host match, port does not.
    let app = forwarder_app(&dir, r#"["http://127.0.0.1:1"]"#, &[("upstream_url", &mock.url())]).await;

    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("HttpRequestDenied"), "{}", reply.text());
    assert_eq!(mock.calls().len(), 0, "a denied request reached the upstream");
    assert_eq!(app.outbound_calls("fwd"), 0);
    assert_eq!(app.denied_calls(), 1);
    let denied = app.denied();
    assert_eq!(denied[0].component, "fwd");
    assert!(denied[0].url.starts_with(&mock.url()), "{:?}", denied[0]);
}

#[tokio::test]
async fn scheme_must_match_too() {
    let mock = mock().await;
    let dir = TempDir::new("scheme");
    let https = mock.url().replace("http://", "https://");
    let app = forwarder_app(&dir, &format!(r#"["{https}"]"#), &[("upstream_url", &mock.url())]).await;
    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    assert!(reply.text().contains("HttpRequestDenied"), "{}", reply.text());
    assert_eq!(mock.calls().len(), 0);
}

#[tokio::test]
async fn no_allowed_hosts_means_no_outbound_requests() {
    let mock = mock().await;
    let dir = TempDir::new("none");
    let app = forwarder_app(&dir, "[]", &[("upstream_url", &mock.url())]).await;
    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    assert!(reply.text().contains("HttpRequestDenied"), "{}", reply.text());
    assert_eq!(mock.calls().len(), 0);
    assert_eq!(app.denied_calls(), 1);
}

#[tokio::test]
async fn an_invalid_resolved_entry_fails_startup() {
    let dir = TempDir::new("invalid");
    let manifest = write_manifest(&dir, &FORWARDER_APP.replace("ALLOWED", r#"["{{ upstream_url }}"]"#));
    let mut opts = options(&dir, manifest);
    opts.variables.insert("upstream_url".into(), "127.0.0.1:80".into());
    let err = start_app(opts).await.err().expect("an entry without a scheme must be rejected");
    assert!(format!("{err:#}").contains("allowed_outbound_hosts"), "{err:#}");
}

#[tokio::test]
async fn the_first_byte_timeout_of_the_request_options_is_honoured() {
    let mock = mock().await;
    mock.push_fault(Fault::hang());
    let dir = TempDir::new("timeout");
    let app = forwarder_app(
        &dir,
        r#"["{{ upstream_url }}"]"#,
        &[("upstream_url", &mock.url()), ("upstream_timeout_ms", "300")],
    )
    .await;
    let started = Instant::now();
    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("ConnectionReadTimeout"), "{}", reply.text());
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10), "{elapsed:?}");
    let calls = mock.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, None, "the mock is still hanging");
}

#[tokio::test]
async fn a_refused_connection_is_reported_to_the_guest() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = TempDir::new("refused");
    let url = format!("http://127.0.0.1:{port}");
    let app = forwarder_app(&dir, r#"["{{ upstream_url }}"]"#, &[("upstream_url", &url)]).await;
    let reply = client::post_json(&format!("{}/detect", app.base_url()), &detect_body()).await.unwrap();
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("ConnectionRefused"), "{}", reply.text());
    assert_eq!(app.outbound_calls("fwd"), 1, "an allowed attempt counts even if it fails");
}

#[tokio::test]
async fn concurrent_requests_all_get_through_the_pool() {
    let mock = mock().await;
    mock.set_latency(Duration::from_millis(50));
    let dir = TempDir::new("concurrent");
    let app = forwarder_app(&dir, r#"["{{ upstream_url }}"]"#, &[("upstream_url", &mock.url())]).await;
    let url = format!("{}/detect", app.base_url());
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { client::post_json(&url, &detect_body()).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(mock.calls().len(), 40);
    assert_eq!(app.outbound_calls("fwd"), 40);
    // A second wave reuses pooled connections; it must work just as well.
    for _ in 0..5 {
        assert_eq!(client::post_json(&url, &detect_body()).await.unwrap().status, 200);
    }
}
