//! The least any Spin gateway costs: forward the request body to
//! `{{ upstream_url }}{{ upstream_path }}` and answer with the upstream status and body.
//!
//! It is the benchmark baseline, and the fixture of the test host's self-tests. The forward
//! path does nothing else (no validation, no metrics, no key-value), so that it measures the
//! platform alone. Paths under `/_test/` are small probes the test host's self-tests use to
//! exercise the host interfaces (variables, key-value, clocks, stderr); they are never on the
//! forward path and cost it nothing but one string comparison.

use bytes::Bytes;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FromResponse, FullBody, HeaderMap, HeaderValue, IntoRequest, IntoResponse, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::wasip3::http::types::{ErrorCode, RequestOptions, Response};
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;

type Answer = Result<Response, ErrorCode>;

#[http_service]
async fn handle(req: Request) -> Answer {
    let path_info = header(&req, "spin-path-info");
    match path_info.strip_prefix("/_test/") {
        Some(probe) => {
            let probe = probe.to_string();
            test_probe(&probe, req).await
        }
        None => forward(req).await,
    }
}

/// The baseline: POST the body upstream and stream the answer back.
async fn forward(req: Request) -> Answer {
    let url = format!("{}{}", var("upstream_url").await, var("upstream_path").await);
    let token = var("upstream_token").await;
    let timeout_ms = var("upstream_timeout_ms").await;
    let body = req.into_body().bytes().await?;

    let mut out =
        http::Request::post(&url).header("content-type", "application/json").header("content-length", body.len());
    if !token.is_empty() {
        out = out.header("authorization", format!("Token {token}"));
    }
    let mut out = out.body(FullBody::new(body)).map_err(|_| ErrorCode::HttpRequestUriInvalid)?;
    // Optional: the same first-byte deadline any real gateway sets.
    if let Ok(ms) = timeout_ms.parse::<u64>() {
        let options = RequestOptions::new();
        let _ = options.set_first_byte_timeout(Some(ms * 1_000_000));
        out.extensions_mut().insert(RequestOptionsExtension(options));
    }

    // As the gateway does: let the body's writer task offer the bytes before the host starts
    // sending, so the request leaves as one segment (Spin's connections keep Nagle on, and a
    // body sent after its headers waits for the server's delayed ACK). Without it this
    // baseline would lose 40 ms on a third of its calls.
    let sent = async {
        let request = out.into_request()?;
        yield_once().await;
        spin_sdk::http::Response::from_response(spin_sdk::wasip3::http::client::send(request).await?)
    };
    match sent.await {
        Ok(resp) => {
            let mut headers = HeaderMap::new();
            if let Some(ct) = resp.headers().get("content-type") {
                headers.insert("content-type", ct.clone());
            }
            (resp.status(), headers, resp.into_body()).into_response()
        }
        // A denied host, a refused connection or a timeout: say which, as a 502.
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("upstream error: {e:?}")),
    }
}

/// `/_test/<probe>/<args...>`: one host interface per probe.
async fn test_probe(probe: &str, req: Request) -> Answer {
    let parts: Vec<&str> = probe.split('/').collect();
    match parts.as_slice() {
        ["var", name] => match spin_sdk::variables::get(name).await {
            Ok(v) => text(StatusCode::OK, v),
            Err(e) => text(StatusCode::NOT_FOUND, format!("{e:?}")),
        },
        ["headers"] => {
            let mut lines: Vec<String> =
                req.headers().iter().map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("<binary>"))).collect();
            lines.sort();
            text(StatusCode::OK, lines.join("\n"))
        }
        ["log", line] => {
            eprintln!("{line}");
            text(StatusCode::OK, "logged".into())
        }
        ["sleep", ms] => {
            let ms: u64 = ms.parse().unwrap_or(0);
            spin_sdk::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(StatusCode::OK, "slept".into())
        }
        // wasi:keyvalue atomics (the same call the product's counters use).
        ["incr", label, key] => match store::open(label) {
            Ok(bucket) => match atomics::increment(&bucket, key, 1) {
                Ok(n) => text(StatusCode::OK, n.to_string()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
            },
            Err(e) => text(StatusCode::FORBIDDEN, format!("{e:?}")),
        },
        // wasi:keyvalue compare-and-swap: read the current value, then swap in the body.
        ["cas", label, key] => {
            let body = req.into_body().bytes().await?;
            let bucket = match store::open(label) {
                Ok(b) => b,
                Err(e) => return text(StatusCode::FORBIDDEN, format!("{e:?}")),
            };
            let result = atomics::Cas::new(&bucket, key).and_then(|cas| {
                cas.current()?;
                Ok(cas)
            });
            match result {
                Ok(cas) => match atomics::swap(cas, &body) {
                    Ok(()) => text(StatusCode::OK, "swapped".into()),
                    Err(atomics::CasError::CasFailed(_)) => text(StatusCode::CONFLICT, "cas-failed".into()),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
                },
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
            }
        }
        // spin:key-value@3.0.0: GET reads, POST/PUT writes the body, DELETE deletes.
        ["kv", label, key] => {
            let method = req.method().clone();
            let body = req.into_body().bytes().await?;
            let kv = match spin_sdk::key_value::Store::open(label).await {
                Ok(s) => s,
                Err(e) => return text(StatusCode::FORBIDDEN, format!("{e:?}")),
            };
            let result = match method.as_str() {
                "GET" => kv.get(key).await.map(|v| match v {
                    Some(v) => (StatusCode::OK, v),
                    None => (StatusCode::NOT_FOUND, Vec::new()),
                }),
                "DELETE" => kv.delete(key).await.map(|()| (StatusCode::OK, Vec::new())),
                _ => kv.set(key, &body).await.map(|()| (StatusCode::OK, Vec::new())),
            };
            match result {
                Ok((status, bytes)) => (status, FullBody::new(Bytes::from(bytes))).into_response(),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
            }
        }
        ["exists", label, key] => match spin_sdk::key_value::Store::open(label).await {
            Ok(kv) => match kv.exists(key).await {
                Ok(b) => text(StatusCode::OK, b.to_string()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
            },
            Err(e) => text(StatusCode::FORBIDDEN, format!("{e:?}")),
        },
        ["keys", label] => match spin_sdk::key_value::Store::open(label).await {
            Ok(kv) => match kv.get_keys().await.collect().await {
                Ok(mut keys) => {
                    keys.sort();
                    text(StatusCode::OK, keys.join("\n"))
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")),
            },
            Err(e) => text(StatusCode::FORBIDDEN, format!("{e:?}")),
        },
        _ => text(StatusCode::NOT_FOUND, format!("unknown probe {probe:?}")),
    }
}

async fn var(name: &str) -> String {
    spin_sdk::variables::get(name).await.unwrap_or_default()
}

fn header(req: &Request, name: &str) -> String {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn text(status: StatusCode, body: String) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    (status, headers, FullBody::new(Bytes::from(body))).into_response()
}

/// `Pending` once, having woken itself: the guest's other ready tasks run first.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
