//! The transport and clock the pure client runs on under Spin: outbound
//! `wasi:http` (p3) with request-option timeouts, and `wasi:clocks` sleeps.
//!
//! A try's budget is enforced by the host through the request options (Spin
//! 4.0.2 applies all three: the first-byte timeout covers connecting and the
//! answer's headers, the between-bytes timeout each gap in the body), and by
//! the component between body chunks. Never by racing a timer: dropping a
//! `wasi:clocks` wait that has not fired cancels a host subtask, and that
//! cancellation parks the request on a fiber of its own until the host
//! confirms it, a second fiber stack from Spin's pool for every call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use spin_sdk::http::{FromResponse, FullBody, IntoRequest, Response};
use spin_sdk::wasip3::clocks::monotonic_clock;
use spin_sdk::wasip3::http::client;
use spin_sdk::wasip3::http::types::{ErrorCode, RequestOptions};
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;

use super::wire::yield_to_body_writer;
use crate::retry::parse_retry_after;
use crate::retry_loop::{Clock, Transport, TransportError, UpstreamResponse};
use crate::upstream_request::UpstreamRequest;

pub struct SpinClock {
    origin: Instant,
}

impl SpinClock {
    pub fn new() -> Self {
        SpinClock { origin: Instant::now() }
    }
}

impl Clock for SpinClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn sleep(&self, duration: Duration) {
        monotonic_clock::wait_for(nanos(duration)).await;
    }

    fn random_unit(&self) -> f64 {
        // 53 random bits → uniform in [0, 1)
        (spin_sdk::wasip3::random::random::get_random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct SpinTransport;

impl Transport for SpinTransport {
    async fn send(&self, request: &UpstreamRequest, budget: Duration) -> Result<UpstreamResponse, TransportError> {
        let outgoing = build(request, budget).map_err(|e| TransportError::Other(e.to_string()))?;
        exchange(outgoing, Instant::now() + budget).await
    }
}

fn build(request: &UpstreamRequest, budget: Duration) -> anyhow::Result<http::Request<FullBody<Bytes>>> {
    let mut builder = http::Request::builder().method(request.method).uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let body = request.body.clone().unwrap_or_default();
    if request.body.is_some() {
        builder = builder.header(http::header::CONTENT_LENGTH, body.len());
    }
    let mut outgoing = builder.body(FullBody::new(Bytes::from(body)))?;
    outgoing.extensions_mut().insert(timeouts(budget));
    Ok(outgoing)
}

/// Asks the host to give up on a request after `budget`: connect, first byte and
/// between bytes (see the module's comment).
pub fn timeouts(budget: Duration) -> RequestOptionsExtension {
    let options = RequestOptions::new();
    let budget = Some(nanos(budget));
    let _ = options.set_connect_timeout(budget);
    let _ = options.set_first_byte_timeout(budget);
    let _ = options.set_between_bytes_timeout(budget);
    RequestOptionsExtension(options)
}

/// Sends `outgoing` and reads the whole answer, giving up once `deadline` has
/// passed between two chunks of its body.
async fn exchange(
    outgoing: http::Request<FullBody<Bytes>>,
    deadline: Instant,
) -> Result<UpstreamResponse, TransportError> {
    let request = outgoing.into_request().map_err(classify)?;
    // Headers and body in one segment (see `wire`).
    yield_to_body_writer().await;
    let response = client::send(request).await.map_err(classify)?;
    let response = Response::from_response(response).map_err(classify)?;
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let body = read_body(response, deadline).await?;
    Ok(UpstreamResponse { status, retry_after, body })
}

/// The whole body, or a timeout when `deadline` passes before its end.
async fn read_body(response: Response, deadline: Instant) -> Result<Vec<u8>, TransportError> {
    let declared = content_length(response.headers());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(classify)?.into_data() {
            bytes.extend_from_slice(&data);
        }
        if out_of_time(declared, bytes.len(), deadline) {
            return Err(TransportError::Timeout);
        }
    }
    Ok(bytes)
}

/// Whether a body being read, `read` bytes so far of the `declared` length, has run
/// past `deadline`. A body that has all its declared length is complete, however
/// late its last chunk came: it may have been billed, and a timeout would send the
/// try again.
pub fn out_of_time(declared: Option<u64>, read: usize, deadline: Instant) -> bool {
    let complete = declared.is_some_and(|n| read as u64 >= n);
    !complete && Instant::now() >= deadline
}

/// The `Content-Length` an answer declares, if it declares a readable one.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

fn classify(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            TransportError::Timeout
        }
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => TransportError::Connect,
        // A connection dropped after the request went out (terminated, incomplete
        // answer, protocol error) may already have been billed: not retried.
        other => TransportError::Other(format!("{other:?}")),
    }
}

/// A duration in the nanoseconds WASI's clocks and request options take (saturating).
fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}
