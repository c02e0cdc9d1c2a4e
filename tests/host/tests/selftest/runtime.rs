//! Startup failures, stderr capture, WASIp3 clocks and instance reuse.

use crate::common::*;
use spin_test_host::client;
use spin_test_host::start_app;
use spin_test_host::InstanceReuse;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_missing_component_file_says_to_build_first() {
    let dir = TempDir::new("missing");
    let manifest = dir.write(
        "spin.toml",
        r#"
spin_manifest_version = 2
[application]
name = "missing"
[[trigger.http]]
route = "/..."
component = "ghost"
[component.ghost]
source = "target/wasm32-wasip2/release/ghost.wasm"
"#,
    );
    let err = start_app(options(&dir, manifest)).await.err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("ghost.wasm") && msg.contains("Build the components first"), "{msg}");
}

#[tokio::test]
async fn component_stderr_lines_are_captured() {
    let dir = TempDir::new("logs");
    let app = forwarder_app(&dir, "[]", &[]).await;
    for word in ["first", "second"] {
        let r = client::get(&format!("{}/_test/log/{word}", app.base_url())).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(app.wait_for_logs(2, Duration::from_secs(5)).await, vec!["first".to_string(), "second".to_string()]);
    assert_eq!(app.component_logs("fwd").len(), 2);
    assert!(app.component_logs("other").is_empty());
    app.clear_logs();
    assert!(app.logs().is_empty());
}

#[tokio::test]
async fn wasip3_monotonic_clock_wait_for_works() {
    let dir = TempDir::new("sleep");
    let app = forwarder_app(&dir, "[]", &[]).await;
    let started = Instant::now();
    let r = client::get(&format!("{}/_test/sleep/250", app.base_url())).await.unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "slept"));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn sleeping_requests_run_concurrently() {
    // With instance reuse (16 concurrent requests per instance) and new instances beyond
    // that, 20 requests that each sleep 300 ms finish in far less than 20 x 300 ms.
    let dir = TempDir::new("parallel");
    let app = forwarder_app(&dir, "[]", &[]).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = format!("{}/_test/sleep/300", app.base_url());
        tasks.push(tokio::spawn(async move { client::get(&url).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn reuse_can_be_turned_off_and_state_does_not_live_in_instances() {
    let dir = TempDir::new("noreuse");
    let manifest = write_manifest(&dir, &FORWARDER_APP.replace("ALLOWED", "[]"));
    let mut opts = options(&dir, manifest);
    opts.reuse = InstanceReuse { max_requests: 1, max_concurrent: 1, idle_timeout: Duration::from_millis(100) };
    let app = start_app(opts).await.unwrap();
    for expected in 1..=3 {
        let r = client::get(&format!("{}/_test/incr/default/n", app.base_url())).await.unwrap();
        assert_eq!(r.text(), expected.to_string(), "counters live in the key-value store, not in the instance");
    }
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let dir = TempDir::new("shutdown");
    let app = forwarder_app(&dir, "[]", &[]).await;
    let url = format!("{}/.well-known/spin/health", app.base_url());
    assert_eq!(client::get(&url).await.unwrap().status, 200);
    app.shutdown().await;
    assert!(client::get(&url).await.is_err());
}
