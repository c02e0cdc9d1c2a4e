//! The pipeline every request goes through, whatever the endpoint: method
//! check, bounded body, request id, the endpoint, then metrics and one JSON
//! log line. Errors become `{"detail", "code"}` bodies here and nowhere else.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::{FullBody, Request};

use super::config;
use super::context::Context;
use super::endpoint::{Answer, Endpoint, Guard};
use super::report::{CacheOutcome, Report};
use super::stores::{now_ms, Counters};
use super::upstream::SpinClock;
use crate::auth::Caller;
use crate::cache_control::CacheControl;
use crate::contract::{ApiError, MAX_BODY_BYTES};
use crate::metrics;
use crate::retry_loop::{Clock, Outcome};
use crate::server_timing::Timing;

pub type Response = http::Response<FullBody<Bytes>>;

pub async fn serve<E: Endpoint>(request: Request) -> Response {
    let method = method_label(request.method());
    let state_store = config::state_store().await;
    let counters = Counters::open(state_store.as_ref().ok().copied()).await;
    let mut ctx = Context::new(request_id(request.headers()), SpinClock::new(), counters);
    let cache_control = request.headers().get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok());
    ctx.cache_control = CacheControl::parse(cache_control);
    if E::COUNTED_IN_FLIGHT {
        ctx.counters.add(&metrics::in_progress_key(E::NAME, method), 1);
        ctx.counters.flush_in_background().await;
    }

    let accepted = match state_store {
        Ok(_) => accept::<E>(request, &mut ctx).await,
        Err(why) => Err(ApiError::new(500, "config_error", why)),
    };
    let answer = match accepted {
        Ok(body) => {
            ctx.body = body;
            E::answer(&mut ctx).await
        }
        Err(error) => Err(error),
    };
    ctx.release_unused_budget().await;
    let report = ctx.take_report();
    let status = match &answer {
        Ok(a) => a.status,
        Err(e) => e.status,
    };
    record::<E>(&mut ctx, &report, method, status);
    ctx.counters.flush().await;
    log_line(E::NAME, method, status, answer.as_ref().err().map(|e| e.code), &ctx, &report).await;
    let timing = timing(&ctx, &report);
    // How old a cached answer is, in whole seconds (RFC 9111's `Age`).
    let age =
        report.cached_at.filter(|_| report.cache == CacheOutcome::Hit).map(|at| now_ms().saturating_sub(at) / 1000);
    respond(answer, report.cache, age, &ctx.request_id, &timing)
}

/// Where the request's time went, for `Server-Timing`.
fn timing(ctx: &Context, report: &Report) -> Timing {
    Timing {
        total: ctx.clock.now(),
        ximilar: report.calls.attempts.iter().map(|(_, attempt)| attempt.duration).sum(),
        tries: report.calls.attempts.len(),
        image: report.image.as_ref().map(|step| step.fetch + step.crop.unwrap_or_default()),
        cache: report.cache.header(),
    }
}

/// The method check, the caller's key and the bounded body read, before the endpoint runs.
async fn accept<E: Endpoint>(request: Request, ctx: &mut Context) -> Result<Bytes, ApiError> {
    if request.method().as_str() != E::METHOD {
        return Err(ApiError::method_not_allowed(request.method().as_str(), E::METHOD));
    }
    if E::GUARD != Guard::Never {
        ctx.admit(authenticate(E::GUARD, E::NAME, request.headers()).await?);
    }
    match E::METHOD {
        "POST" => read_body(request).await,
        _ => Ok(Bytes::new()),
    }
}

/// The configured caller whose key the request carries, if that key's scopes
/// include `endpoint`; `None` (anonymous) while no keys are configured or the
/// endpoint does not need one.
async fn authenticate(guard: Guard, endpoint: &str, headers: &http::HeaderMap) -> Result<Option<Caller>, ApiError> {
    let inbound = config::inbound().await.map_err(|why| ApiError::new(500, "config_error", why))?;
    if inbound.callers.is_empty() || (guard == Guard::WhenMetricsProtected && !inbound.protect_metrics) {
        return Ok(None);
    }
    let authorization = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = inbound.callers.authenticate(authorization).ok_or_else(ApiError::unauthorized)?;
    if !caller.scopes.allows(endpoint) {
        return Err(ApiError::forbidden(endpoint));
    }
    Ok(Some(caller.clone()))
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by its declared
/// length first, so an honest oversized upload is not read at all).
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::body_too_large(MAX_BODY_BYTES));
    }
    match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::body_too_large(MAX_BODY_BYTES)),
        Err(_) => Err(ApiError::new(400, "body_unreadable", "the request body could not be read")),
    }
}

/// The request's metrics: its count and latency, each Ximilar try and retry,
/// the cache outcome, and the in-flight gauge back down (written by the next flush).
fn record<E: Endpoint>(ctx: &mut Context, report: &Report, method: &str, status: u16) {
    let elapsed = ctx.clock.now();
    let caller = ctx.caller_name().to_string();
    let counters = &mut ctx.counters;
    counters.add_all(metrics::request_increments(E::NAME, method, status, &caller, elapsed));
    for (endpoint, attempt) in &report.calls.attempts {
        counters.add_all(metrics::upstream_increments(endpoint.label(), &attempt.outcome.label(), attempt.duration));
        // Every call carries one image record; Ximilar bills the ones it answers.
        if endpoint.is_billed() && matches!(attempt.outcome, Outcome::Status(200..=299)) {
            counters.add(&metrics::billed_records_key(endpoint.label(), &caller), 1);
        }
    }
    for (endpoint, reason) in &report.calls.retries {
        counters.add(&metrics::retry_key(endpoint.label(), reason.label()), 1);
    }
    if report.coalesced {
        counters.add(&metrics::coalesced_key(E::NAME), 1);
    }
    if let Some(step) = &report.image {
        counters.add_all(metrics::image_increments(step.outcome, step.fetch, step.bytes, step.crop));
    }
    match report.cache {
        CacheOutcome::Hit => counters.add(&metrics::cache_outcome_key(E::NAME, true), 1),
        CacheOutcome::Miss | CacheOutcome::Refresh => counters.add(&metrics::cache_outcome_key(E::NAME, false), 1),
        CacheOutcome::NotUsed => {}
    }
    if E::COUNTED_IN_FLIGHT {
        counters.add(&metrics::in_progress_key(E::NAME, method), -1);
    }
}

fn respond(
    answer: Result<Answer, ApiError>,
    cache: CacheOutcome,
    age: Option<u64>,
    request_id: &str,
    timing: &Timing,
) -> Response {
    let mut builder =
        http::Response::builder().header("x-request-id", request_id).header("server-timing", timing.header());
    let body = match answer {
        Ok(answer) => {
            builder = builder.status(answer.status).header("content-type", answer.content_type);
            if let Some(value) = cache.header() {
                builder = builder.header("x-cache", value);
            }
            if let Some(seconds) = age {
                builder = builder.header("age", seconds);
            }
            answer.body
        }
        Err(error) => {
            builder = builder.status(error.status).header("content-type", "application/json");
            if let Some(seconds) = error.retry_after {
                builder = builder.header("retry-after", seconds.to_string());
            }
            if let Some(allow) = error.allow {
                builder = builder.header("allow", allow);
            }
            if let Some(challenge) = error.challenge {
                builder = builder.header("www-authenticate", challenge);
            }
            error.body()
        }
    };
    // A known length: no chunked framing, so the answer ends with its last byte
    // instead of a terminating chunk the client must also wait for.
    builder.header("content-length", body.len()).body(FullBody::new(Bytes::from(body))).expect("valid response parts")
}

/// Bounded label values: an unknown method is `other`.
fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The caller's `x-request-id` if it is a sane token, else a fresh one.
fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| {
        (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    });
    match given {
        Some(id) => id.to_string(),
        None => {
            let random = || spin_sdk::wasip3::random::random::get_random_u64();
            format!("{:016x}{:016x}", random(), random())
        }
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

/// One JSON line per request on stderr. No URL, token or collection id.
async fn log_line(handler: &str, method: &str, status: u16, code: Option<&str>, ctx: &Context, report: &Report) {
    let mut line = serde_json::json!({
        "handler": handler,
        "method": method,
        "status": status,
        "code": code,
        "duration_ms": millis(ctx.clock.now()),
        "upstream_calls": report.calls.attempts.len(),
        "retries": report.calls.retries.len(),
        "cache": report.cache.label(),
        "caller": ctx.caller_name(),
        "metrics_errors": ctx.counters.errors,
        "cache_errors": ctx.cache_errors(),
        "request_id": ctx.request_id,
    });
    if let Some(step) = &report.image {
        line["image_ms"] = millis(step.fetch).into();
        line["crop_ms"] = step.crop.map(millis).into();
    }
    let mut text = line.to_string();
    text.push('\n');
    write_stderr(text.into_bytes()).await;
}

/// One write to stderr through WASIp3's `wasi:cli/stderr`, an asynchronous
/// import: Rust std's `eprintln!` goes through WASIp2's blocking write, which
/// Spin runs holding the whole instance (and `eprintln!` of a `Value` would make
/// a host call per token).
async fn write_stderr(bytes: Vec<u8>) {
    use spin_sdk::wasip3::{cli::stderr, wit_stream};
    let (mut writer, reader) = wit_stream::new::<u8>();
    let written = stderr::write_via_stream(reader);
    let _ = writer.write_all(bytes).await;
    drop(writer);
    let _ = written.await;
}
