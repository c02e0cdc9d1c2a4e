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

/// Spin's default `total_stacks`, and the connections of the real-Spin run that failed.
const CONNECTIONS: usize = 1_000;

/// How long the connections keep sending, each its next request as soon as the last is
/// answered, as `wrk -c1000` does; `XGW_LOAD_SECONDS` overrides it.
fn duration() -> Duration {
    let seconds = std::env::var("XGW_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    Duration::from_secs(seconds)
}

/// What `CONNECTIONS` connections sending distinct misses for [`duration`] got back.
struct Outcome {
    statuses: BTreeMap<u16, usize>,
    peak_instances: usize,
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

async fn load(app: &RunningApp, path: &'static str, body: Body) -> Outcome {
    // Distinct photos across connections, requests and runs: every request is a miss.
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let base = app.base_url();
    let until = Instant::now() + duration();
    let connections: Vec<_> = (0..CONNECTIONS)
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
    Outcome { statuses, peak_instances: app.peak_instances() }
}

/// The process's peak resident memory, as the kernel reports it.
fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("VmHWM: ?").split_whitespace().skip(1).collect()
}

/// Not yet met, so not run by default (`cargo test --test load -- --ignored`): on this
/// host the gateway, like the build before it, can still run the pool out of stacks at
/// 1,000 connections ("maximum concurrent limit of 1000 for fibers reached", the message
/// real Spin logs), in about half the runs, while the forwarder never does. With
/// `SPIN_WASMTIME_TOTAL_STACKS=4000` it passes. README, "Under load", has the figures.
#[ignore = "fails in about half the runs on a 2-core machine: the 1,000-connection target is open"]
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
    let baseline = load(&forwarder, "/", ximilar_body).await;
    drop(forwarder);
    // The pool is the process's: let the forwarder's idle instances go (1 s) first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.mock.clear_calls();

    let gateway = load(&gw.app, "/detect", gateway_body).await;
    let failures = gw.app.worker_errors();
    eprintln!(
        "in {:?}: forwarder {:?}, at most {} instances; gateway {:?}, at most {} instances; peak RSS {}; sync imports: {:?}",
        duration(),
        baseline.statuses,
        baseline.peak_instances,
        gateway.statuses,
        gateway.peak_instances,
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
