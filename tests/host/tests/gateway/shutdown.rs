//! `docker stop` and rolling updates send SIGTERM: the gateway must exit within
//! seconds even under load. Runs the test host's `serve` (which stops as
//! `spin up` does: it drops in-flight requests, then waits for blocking
//! key-value calls) as a child process, so a store that never frees its lock
//! shows as a process that does not exit.

use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_within_seconds() {
    let root = spin_test_host::workspace_root();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_spin-test-host"))
        .args(["serve", "--mock", "--mock-latency-ms", "50", "--listen", "127.0.0.1:0"])
        .arg("--manifest")
        .arg(root.join("spin.toml"))
        .arg("--runtime-config-file")
        .arg(root.join("runtime-config.toml"))
        .current_dir(&root)
        .env_remove("SPIN_TEST_HOST_KV")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the test host starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("serving on ") {
                return url.to_string();
            }
        }
        panic!("serve exited before serving");
    })
    .await
    .expect("serving within 60 s");

    // 64 clients, each sending distinct misses back to back until the gateway goes.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for client in 0..64 {
        let (base, stop, sent, answered) = (base.clone(), stop.clone(), sent.clone(), answered.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                let body = json!({ "url": format!("https://shop.example/{client}-{n}.jpg") }).to_string();
                match spin_test_host::client::send(http::Method::POST, &format!("{base}/detect"), &[], body).await {
                    Ok(r) if r.status == 200 => answered.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => 0,
                    Err(_) => break, // the gateway has gone
                };
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(sent.load(Ordering::Relaxed) > 128, "the gateway is under load before the signal");
    assert!(answered.load(Ordering::Relaxed) > 0, "and answering");

    let pid = child.id().expect("running").to_string();
    let signalled = Instant::now();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(kill.success());
    let exited = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    stop.store(true, Ordering::Relaxed);
    let took = signalled.elapsed();
    let status = match exited {
        Ok(status) => status.expect("wait"),
        Err(_) => panic!("still running 15 s after SIGTERM (a blocked store call keeps it alive)"),
    };
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(3), "took {took:?} to exit after SIGTERM");
}
