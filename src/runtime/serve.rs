//! The pipeline every request goes through, whatever the endpoint: method
//! check, bounded body, request id, the endpoint, then metrics and one JSON
//! log line. Errors become `{"detail", "code"}` bodies here and nowhere else.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use spin_sdk::http::{FullBody, Request};
use std::time::Duration;

use super::endpoints::{Answer, CacheOutcome};
use super::stores::Counters;
use super::upstream::SpinClock;
use crate::client::{CallLog, Clock};
use crate::contract::{ApiError, MAX_BODY_BYTES};
use crate::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Detect,
    Tag,
    Search,
    Health,
    Metrics,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Detect => "detect",
            Handler::Tag => "tag",
            Handler::Search => "search",
            Handler::Health => "health",
            Handler::Metrics => "metrics",
        }
    }

    pub(crate) fn allow(self) -> &'static str {
        match self {
            Handler::Detect | Handler::Tag | Handler::Search => "POST",
            Handler::Health | Handler::Metrics => "GET",
        }
    }
}

pub type Response = http::Response<FullBody<Bytes>>;

/// One endpoint. A trait (not a runtime switch) so each component links only
/// its own endpoint: the metrics component carries no outbound HTTP at all.
#[allow(async_fn_in_trait)]
pub trait Endpoint {
    const HANDLER: Handler;
    async fn answer(exchange: &mut Exchange<'_>) -> Result<Answer, ApiError>;
}

/// What an endpoint gets from the pipeline, and leaves for it to record.
pub struct Exchange<'a> {
    pub request_id: &'a str,
    pub clock: &'a SpinClock,
    pub body: Bytes,
    pub metrics: &'a mut Counters,
    pub log: CallLog,
    pub cache: CacheUse,
}

/// How the cache served a request (a miss still counts when the call then failed).
#[derive(Default)]
pub struct CacheUse {
    pub outcome: CacheOutcome,
    pub errors: u32,
}

pub async fn serve<E: Endpoint>(request: Request) -> Response {
    let handler = E::HANDLER;
    let clock = SpinClock::new();
    let method = method_label(request.method());
    let request_id = request_id(request.headers());
    let mut metrics = Counters::open();
    // /metrics itself is not counted in flight: it would always read 1.
    let counts_in_flight = handler != Handler::Metrics;
    if counts_in_flight {
        metrics.add(&metrics::in_progress_key(handler.name(), method), 1);
    }

    let (answer, log, cache_use) = match accept(request, handler).await {
        Err(error) => (Err(error), CallLog::default(), CacheUse::default()),
        Ok(body) => {
            let mut exchange = Exchange {
                request_id: &request_id,
                clock: &clock,
                body,
                metrics: &mut metrics,
                log: CallLog::default(),
                cache: CacheUse::default(),
            };
            let answer = E::answer(&mut exchange).await;
            (answer, exchange.log, exchange.cache)
        }
    };
    let cache_outcome = cache_use.outcome;
    let status = match &answer {
        Ok(a) => a.status,
        Err(e) => e.status,
    };
    let elapsed = clock.now();

    metrics.add_all(metrics::request_increments(handler.name(), method, status, elapsed));
    for (endpoint, attempt) in &log.attempts {
        metrics.add_all(metrics::upstream_increments(endpoint.label(), &attempt.outcome, attempt.duration));
    }
    for (endpoint, reason) in &log.retries {
        metrics.add(&metrics::retry_key(endpoint.label(), reason.label()), 1);
    }
    match cache_outcome {
        CacheOutcome::Hit => metrics.add(&metrics::cache_key(handler.name(), true), 1),
        CacheOutcome::Miss => metrics.add(&metrics::cache_key(handler.name(), false), 1),
        CacheOutcome::NotUsed => {}
    }
    if counts_in_flight {
        metrics.add(&metrics::in_progress_key(handler.name(), method), -1);
    }

    log_line(handler, method, status, answer.as_ref().err().map(|e| e.code), elapsed, &log, cache_outcome, metrics.errors, cache_use.errors, &request_id);
    respond(answer, cache_outcome, &request_id)
}

/// The method check and the bounded body read, before any endpoint runs.
async fn accept(request: Request, handler: Handler) -> Result<Bytes, ApiError> {
    if request.method().as_str() != handler.allow() {
        return Err(ApiError::method_not_allowed(request.method().as_str(), handler.allow()));
    }
    match handler.allow() {
        "POST" => read_body(request).await,
        _ => Ok(Bytes::new()),
    }
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

fn respond(answer: Result<Answer, ApiError>, cache: CacheOutcome, request_id: &str) -> Response {
    let mut builder = http::Response::builder().header("x-request-id", request_id);
    let body = match answer {
        Ok(answer) => {
            builder = builder.status(answer.status).header("content-type", answer.content_type);
            match cache {
                CacheOutcome::Hit => builder = builder.header("x-cache", "HIT"),
                CacheOutcome::Miss => builder = builder.header("x-cache", "MISS"),
                CacheOutcome::NotUsed => {}
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
            error.body()
        }
    };
    builder.body(FullBody::new(Bytes::from(body))).expect("valid response parts")
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

/// One JSON line per request on stderr. No URL, token or collection id.
#[allow(clippy::too_many_arguments)]
fn log_line(
    handler: Handler,
    method: &str,
    status: u16,
    code: Option<&str>,
    elapsed: Duration,
    log: &CallLog,
    cache: CacheOutcome,
    metrics_errors: u32,
    cache_errors: u32,
    request_id: &str,
) {
    let line = serde_json::json!({
        "handler": handler.name(),
        "method": method,
        "status": status,
        "code": code,
        "duration_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "upstream_calls": log.attempts.len(),
        "retries": log.retries.len(),
        "cache": match cache { CacheOutcome::Hit => "hit", CacheOutcome::Miss => "miss", CacheOutcome::NotUsed => "none" },
        "metrics_errors": metrics_errors,
        "cache_errors": cache_errors,
        "request_id": request_id,
    });
    // One write: `eprintln!` of a Value would format straight into unbuffered
    // stderr, a host call per token (about 230 per request, measured).
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), text.as_bytes());
}
