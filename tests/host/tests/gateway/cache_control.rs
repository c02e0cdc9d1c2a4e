//! The caller's `Cache-Control`: `no-cache` forces a fresh Ximilar answer that
//! replaces the cached one (still coalesced, still budgeted); `max-age=N` takes a
//! cached answer only if it is at most N seconds old; `x-cache` and `Age` say
//! what happened; other directives are ignored.

use crate::common::*;
use std::time::Duration;

const BODY: &str = r#"{"url": "https://shop.example/cache-control.jpg"}"#;

async fn detect(gw: &Gateway, cache_control: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = cache_control {
        headers.push(("cache-control", value));
    }
    let reply = gw.request("POST", "/detect", &headers, BODY.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
}

fn seen(reply: &Reply) -> (Option<&str>, Option<u64>) {
    (reply.header("x-cache"), reply.header("age").map(|a| a.parse().unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_pays_once_more_and_replaces_the_cached_answer() {
    let gw = gateway(&[]).await;
    assert_eq!(seen(&detect(&gw, None).await), (Some("MISS"), None));
    gw.app.advance_wall_clock(Duration::from_secs(100));
    assert_eq!(seen(&detect(&gw, None).await), (Some("HIT"), Some(100)));
    assert_eq!(gw.upstream(DETECT_PATH), 1);
    // The caller knows the photo changed: one more billed call...
    assert_eq!(seen(&detect(&gw, Some("no-cache")).await), (Some("REFRESH"), None));
    assert_eq!(gw.upstream(DETECT_PATH), 2);
    // ...whose answer replaced the old one: the next hit is young.
    assert_eq!(seen(&detect(&gw, None).await), (Some("HIT"), Some(0)));
    assert_eq!(gw.upstream(DETECT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_age_takes_only_an_answer_young_enough() {
    let gw = gateway(&[]).await;
    detect(&gw, None).await;
    gw.app.advance_wall_clock(Duration::from_secs(30));
    assert_eq!(seen(&detect(&gw, Some("max-age=60")).await), (Some("HIT"), Some(30)));
    assert_eq!(gw.upstream(DETECT_PATH), 1);
    assert_eq!(seen(&detect(&gw, Some("max-age=10")).await), (Some("MISS"), None));
    assert_eq!(gw.upstream(DETECT_PATH), 2);
    assert_eq!(seen(&detect(&gw, Some("max-age=10")).await), (Some("HIT"), Some(0)));
    // Directives the gateway does not implement are ignored.
    assert_eq!(seen(&detect(&gw, Some("no-transform, private, stale-if-error=5")).await).0, Some("HIT"));
    assert_eq!(gw.upstream(DETECT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_is_still_coalesced_and_budgeted() {
    let key = "key-SECRET-orch-5e1f";
    let gw = std::sync::Arc::new(gateway(&[("inbound_keys", &format!("orch:{key}:3"))]).await);
    let bearer = format!("Bearer {key}");
    let send = |gw: std::sync::Arc<Gateway>, bearer: String| async move {
        let headers =
            [("content-type", "application/json"), ("authorization", bearer.as_str()), ("cache-control", "no-cache")];
        gw.request("POST", "/detect", &headers, BODY.as_bytes()).await
    };
    gw.mock.set_latency(Duration::from_millis(300));
    // Three identical refreshes at once: one call to Ximilar answers them all (each
    // holds a unit while it waits; the two that were answered by the third give theirs back).
    let together: Vec<_> = (0..3).map(|_| tokio::spawn(send(gw.clone(), bearer.clone()))).collect();
    for reply in together {
        assert_eq!(reply.await.unwrap().status, 200);
    }
    assert_eq!(gw.upstream(DETECT_PATH), 1);
    // Each refresh alone is a billed call: two more spend the day, the next is refused.
    assert_eq!(send(gw.clone(), bearer.clone()).await.status, 200);
    assert_eq!(send(gw.clone(), bearer.clone()).await.status, 200);
    let refused = send(gw.clone(), bearer.clone()).await;
    assert_eq!(refused.status, 429, "{} upstream={} {:?}", refused.text(), gw.upstream(DETECT_PATH), refused.headers);
    assert_eq!(refused.code(), "budget_exhausted");
    assert_eq!(gw.upstream(DETECT_PATH), 3);
}
