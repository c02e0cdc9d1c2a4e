//! Crop mode's download of a source image over outbound `wasi:http`: only
//! from the allowed image hosts (checked here before any call; Spin enforces
//! the same list), redirects followed only onto those hosts, the body counted
//! while it streams and dropped the moment it passes the limit, all inside a
//! time budget. No credential is ever sent to an image host.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use spin_sdk::http::FullBody;
use spin_sdk::wasip3::http::types::ErrorCode;

use super::upstream::{content_length, out_of_time, timeouts};
use crate::contract::ApiError;
use crate::image_hosts::{self, ImageHosts};

/// Hops after the first request; shops' CDNs redirect once at most, usually.
const MAX_REDIRECTS: usize = 3;

#[derive(Debug)]
pub enum FetchError {
    /// The URL (or a redirect) points at a host that is not allowed.
    HostNotAllowed,
    /// The image host answered, but not with the image.
    Status(u16),
    /// The body is larger than allowed (declared, or counted while streaming).
    TooLarge,
    /// No answer: refused connection, DNS, TLS, a broken transfer, a bad redirect.
    Failed(String),
    Timeout,
}

impl FetchError {
    /// The `outcome` label of `gateway_image_crops_total`.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::HostNotAllowed => "host_not_allowed",
            FetchError::Status(_) => "status",
            FetchError::TooLarge => "too_large",
            FetchError::Failed(_) => "failed",
            FetchError::Timeout => "timeout",
        }
    }

    /// The caller's error: its image could not be had, so nothing was billed.
    pub fn to_api_error(&self, max_bytes: u64) -> ApiError {
        match self {
            FetchError::HostNotAllowed => ApiError::invalid(
                "image_host_not_allowed",
                "the image is not on a host the gateway may fetch from (XIMILAR_IMAGE_HOST_A, _B, _C)",
            ),
            FetchError::Status(status) => {
                ApiError::invalid("image_fetch_failed", format!("the image host answered HTTP {status}"))
            }
            FetchError::TooLarge => {
                ApiError::invalid("image_fetch_failed", format!("the image is larger than {max_bytes} bytes"))
            }
            FetchError::Failed(why) => {
                ApiError::invalid("image_fetch_failed", format!("the image could not be fetched: {why}"))
            }
            FetchError::Timeout => ApiError::new(504, "image_timeout", "the image host did not answer in time"),
        }
    }
}

/// The body of `url`, at most `max_bytes`, within `budget`. `received` counts
/// the bytes read, whatever the outcome (for `gateway_image_fetch_bytes`).
pub async fn fetch(
    url: &str,
    hosts: &ImageHosts,
    max_bytes: u64,
    budget: Duration,
    received: &mut u64,
) -> Result<Vec<u8>, FetchError> {
    let mut target: http::Uri = url.parse().map_err(|_| FetchError::Failed("not a valid URL".into()))?;
    // The host keeps each hop inside what is left of the budget (request options);
    // the body is checked between chunks. No timer is raced (see `upstream`).
    let deadline = Instant::now() + budget;
    for _ in 0..=MAX_REDIRECTS {
        if !hosts.allows(&target) {
            return Err(FetchError::HostNotAllowed);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FetchError::Timeout);
        }
        let response = spin_sdk::http::send(request(&target, left)?).await.map_err(classify)?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok());
            target = image_hosts::redirect_target(&target, location)
                .ok_or_else(|| FetchError::Failed(format!("HTTP {status} without a usable Location")))?;
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(FetchError::Status(status));
        }
        let declared = content_length(response.headers());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge);
        }
        let mut body = response.into_body();
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(classify)?.into_data() else { continue };
            *received += data.len() as u64;
            if bytes.len() as u64 + data.len() as u64 > max_bytes {
                // Dropping the body stops the transfer.
                return Err(FetchError::TooLarge);
            }
            bytes.extend_from_slice(&data);
            if out_of_time(declared, bytes.len(), deadline) {
                return Err(FetchError::Timeout);
            }
        }
        return Ok(bytes);
    }
    Err(FetchError::Failed(format!("more than {MAX_REDIRECTS} redirects")))
}

fn request(target: &http::Uri, budget: Duration) -> Result<http::Request<FullBody<bytes::Bytes>>, FetchError> {
    let mut request = http::Request::builder()
        .method("GET")
        .uri(target)
        .header("accept", "image/jpeg, image/png, image/webp")
        .header("user-agent", "ximilar-gw")
        .body(FullBody::new(bytes::Bytes::new()))
        .map_err(|e| FetchError::Failed(e.to_string()))?;
    request.extensions_mut().insert(timeouts(budget));
    Ok(request)
}

fn classify(code: ErrorCode) -> FetchError {
    match code {
        // Spin's own refusal of a host outside allowed_outbound_hosts.
        ErrorCode::HttpRequestDenied => FetchError::HostNotAllowed,
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            FetchError::Timeout
        }
        ErrorCode::ConnectionRefused => FetchError::Failed("connection refused".into()),
        ErrorCode::DnsError(_) | ErrorCode::DnsTimeout | ErrorCode::DestinationNotFound => {
            FetchError::Failed("the host name does not resolve".into())
        }
        ErrorCode::TlsProtocolError | ErrorCode::TlsCertificateError | ErrorCode::TlsAlertReceived(_) => {
            FetchError::Failed("TLS failed".into())
        }
        ErrorCode::HttpResponseIncomplete | ErrorCode::ConnectionTerminated => {
            FetchError::Failed("the transfer broke off".into())
        }
        other => FetchError::Failed(format!("{other:?}")),
    }
}
