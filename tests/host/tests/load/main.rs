//! Load as real Spin meets it: the built components on the test host with Spin 4.0.2's
//! pooling allocator (1,000 fiber stacks, 1,000 instances), instance reuse (128 requests,
//! 16 at a time) and host functions registered as Spin registers them, so a gateway whose
//! instances stall in synchronous imports runs out of stacks here as it does on Spin.
//! A binary of its own: the stack pool belongs to the process, and no other test may
//! share it while this one fills it.

#[allow(dead_code)]
#[path = "../gateway/common.rs"]
mod common;

use common::*;
use serde_json::json;
use spin_test_host::{start_app, workspace_root, AppOptions, RunningApp};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Spin's default `total_stacks`, and the connections of the real-Spin run that failed;
/// `XGW_LOAD_CONNECTIONS` overrides it.
fn connections() -> usize {
    std::env::var("XGW_LOAD_CONNECTIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000)
}

/// How long the connections keep sending, each its next request as soon as the last is
/// answered, as `wrk -c1000` does; `XGW_LOAD_SECONDS` overrides it.
fn duration() -> Duration {
    let seconds = std::env::var("XGW_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    Duration::from_secs(seconds)
}

/// What [`connections`] connections sending distinct misses for [`duration`] got back.
struct Outcome {
    statuses: BTreeMap<u16, usize>,
    peak_instances: usize,
    peak_stacks: usize,
}

impl Outcome {
    fn answered(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// The body of request `n` of connection `c` for a photo URL: the gateway's contract, or
/// Ximilar's own shape for the forwarder, which passes the body on as it is.
type Body = fn(&str) -> String;

fn gateway_body(url: &str) -> String {
    json!({ "url": url }).to_string()
}

fn ximilar_body(url: &str) -> String {
    json!({ "records": [{ "_url": url }] }).to_string()
}

/// `connections` connections sending distinct misses back to back for `lasting`.
async fn load(app: &RunningApp, path: &'static str, body: Body, connections: usize, lasting: Duration) -> Outcome {
    // Distinct photos across connections, requests and runs: every request is a miss.
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let base = app.base_url();
    let until = Instant::now() + lasting;
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        while Instant::now() < until {
            peak = peak.max(RunningApp::stacks_in_use());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    });
    let connections: Vec<_> = (0..connections)
        .map(|c| {
            let base = base.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0.. {
                    if Instant::now() >= until {
                        break;
                    }
                    let body = body(&format!("https://shop.example/load-{run}-{c}-{n}.jpg"));
                    let headers = [("content-type", "application/json")];
                    statuses.push(send(&base, "POST", path, &headers, body.as_bytes()).await.status);
                }
                statuses
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for connection in connections {
        for status in connection.await.unwrap() {
            *statuses.entry(status).or_default() += 1;
        }
    }
    Outcome { statuses, peak_instances: app.peak_instances(), peak_stacks: sampler.await.unwrap() }
}

/// The process's peak resident memory, as the kernel reports it.
fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").split_whitespace().skip(1).collect()
}

/// Not run by default (`cargo test --test load -- --ignored`): it passes on a 2-core machine
/// since nothing on the request path races a timer (each busy instance held a second stack
/// for the cancelled wait), but under CPU saturation the instances pile up to within a few
/// hundred stacks of the pool, too thin a margin for CI. README, "Under load", has the figures.
#[ignore = "passes, with a thin margin to the pool of stacks on a 2-core machine"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_of_misses_are_all_answered() {
    // The baseline first, alone: a bare component that forwards each request to the same
    // mock Ximilar (300 ms, as in the benchmark's 1,000-connection scenario).
    let gw = gateway(&[]).await;
    gw.mock.set_latency(Duration::from_millis(300));
    let mut opts = AppOptions::new(workspace_root().join("bench/forwarder/spin.toml"));
    opts.variables.insert("upstream_url".into(), gw.mock.url());
    opts.variables.insert("upstream_token".into(), TOKEN.into());
    let forwarder = start_app(opts).await.expect("the forwarder starts (build it: see README)");
    let baseline = load(&forwarder, "/", ximilar_body, connections(), duration()).await;
    drop(forwarder);
    // The pool is the process's: let the forwarder's idle instances go (1 s) first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.mock.clear_calls();

    let gateway = load(&gw.app, "/detect", gateway_body, connections(), duration()).await;
    let failures = gw.app.worker_errors();
    eprintln!(
        "in {:?}: forwarder {:?}, at most {} instances, {} stacks; gateway {:?}, at most {} instances, {} stacks; peak RSS {}; sync imports: {:?}",
        duration(),
        baseline.statuses,
        baseline.peak_instances,
        baseline.peak_stacks,
        gateway.statuses,
        gateway.peak_instances,
        gateway.peak_stacks,
        peak_rss(),
        gw.app.sync_imports()
    );
    assert_eq!(
        gateway.statuses.get(&200).copied(),
        Some(gateway.answered()),
        "answers by status: {:?}; {} instance failures, the first: {:?}",
        gateway.statuses,
        failures.len(),
        failures.first()
    );
    assert_eq!(gw.upstream(DETECT_PATH), gateway.answered(), "one billed call per distinct photo");
}

/// Every instance keeps one fiber stack; a request that cancels an unfinished host call (a
/// timer raced against its Ximilar call, say) parks on a second one until the cancellation
/// is done, which doubled the stacks of a busy gateway. Each instance here serves a few
/// concurrent misses of 300 ms, so a parked fiber would be caught by the sampling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_holds_one_fiber_stack() {
    let gw = gateway(&[]).await;
    gw.mock.set_latency(Duration::from_millis(300));
    let outcome = load(&gw.app, "/detect", gateway_body, 8, Duration::from_millis(1500)).await;
    assert_eq!(outcome.statuses.get(&200).copied(), Some(outcome.answered()), "{:?}", outcome.statuses);
    assert!(outcome.peak_instances >= 1);
    assert!(
        outcome.peak_stacks <= outcome.peak_instances,
        "{} stacks in use for {} instances",
        outcome.peak_stacks,
        outcome.peak_instances
    );
}
