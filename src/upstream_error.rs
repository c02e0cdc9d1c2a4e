//! Every way a Ximilar call can fail to give a usable answer, and what each
//! means for our caller (status, code, `Retry-After`) and for `/health` (its
//! `reason`). This is the one place upstream failures become caller errors.

use std::time::Duration;

use crate::contract::ApiError;
use crate::retry::RetryReason;
use crate::retry_loop::CallError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// Transient failures (429, 502, 503, 504, connect, timeout) to the end of the retries.
    Exhausted { last: RetryReason, retry_after: Duration },
    /// The overall deadline passed.
    Deadline,
    /// The connection failed after the request was sent: not retried, Ximilar may have billed it.
    Dropped,
    /// An HTTP status that retrying cannot fix.
    Refused { status: u16 },
    /// The account's credits are exhausted: not retried, and not a sign that Ximilar is down.
    Quota,
    /// A 2xx whose body is not the JSON envelope we expect, or lacks the record we sent.
    Malformed,
    /// A 2xx whose envelope `status` reports an error.
    EnvelopeStatus { code: i64 },
    /// Ximilar could not process the one record we sent (its `_status`), e.g. an unreachable image.
    RecordFailed { code: i64 },
}

impl From<CallError> for UpstreamError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Exhausted { last, retry_after } => UpstreamError::Exhausted { last, retry_after },
            CallError::Deadline => UpstreamError::Deadline,
            CallError::Transport(_) => UpstreamError::Dropped,
            // Callers answer a refused try with the gate's own reason before
            // converting; should one not, nothing was sent, so nothing was billed.
            CallError::NotAdmitted => UpstreamError::Dropped,
        }
    }
}

impl UpstreamError {
    /// The failure an answer stands for, once retries are done with it; `None` for 2xx.
    /// Ximilar documents no status for exhausted credits: 402, or an error whose body
    /// speaks of credits (its async API says "insufficient credits"), is taken as one.
    pub fn from_answer(status: u16, body: &[u8]) -> Option<UpstreamError> {
        if (200..300).contains(&status) {
            return None;
        }
        let about_credits = || String::from_utf8_lossy(body).to_ascii_lowercase().contains("credits");
        if status == 402 || ((400..500).contains(&status) && about_credits()) {
            return Some(UpstreamError::Quota);
        }
        Some(UpstreamError::Refused { status })
    }

    /// Whether this failure says Ximilar itself is failing (what a circuit breaker counts).
    pub fn is_outage(&self) -> bool {
        matches!(self, UpstreamError::Exhausted { .. } | UpstreamError::Deadline | UpstreamError::Dropped)
    }

    /// The answer our caller gets. Never carries an upstream body or header.
    pub fn to_api_error(&self) -> ApiError {
        use RetryReason::*;
        match self {
            UpstreamError::Exhausted { last: TooManyRequests | Unavailable | Connect, retry_after } => {
                ApiError::new(503, "upstream_unavailable", "Ximilar is unavailable or rate-limiting; retries exhausted")
                    .with_retry_after(retry_after.as_secs_f64().ceil() as u32)
            }
            UpstreamError::Exhausted { last: BadGateway, .. } => {
                ApiError::new(502, "upstream_error", "Ximilar kept answering 502; retries exhausted")
            }
            UpstreamError::Exhausted { last: GatewayTimeout | Timeout, .. } | UpstreamError::Deadline => {
                ApiError::new(504, "upstream_timeout", "Ximilar did not answer within the gateway's deadline")
            }
            UpstreamError::Dropped => {
                ApiError::new(502, "upstream_unreachable", "the connection to Ximilar failed before it answered")
            }
            UpstreamError::Refused { status: 401 | 403 } => {
                ApiError::new(502, "upstream_auth", "Ximilar rejected the gateway's credentials")
            }
            UpstreamError::Quota => {
                ApiError::new(503, "upstream_quota", "the Ximilar account has no credits left; retrying will not help")
            }
            UpstreamError::Refused { status } => {
                ApiError::new(502, "upstream_error", format!("Ximilar answered HTTP {status}"))
            }
            UpstreamError::Malformed => {
                ApiError::new(502, "upstream_malformed", "Ximilar sent a response that is not the expected JSON")
            }
            UpstreamError::EnvelopeStatus { code } => {
                ApiError::new(502, "upstream_error", format!("Ximilar reported status {code}"))
            }
            UpstreamError::RecordFailed { code } => ApiError::invalid(
                "image_not_processed",
                format!(
                    "Ximilar could not process the image (record status {code}); check that the URL is a public image"
                ),
            ),
        }
    }

    /// Why `/health` calls Ximilar unreachable after a failed probe.
    pub fn health_reason(&self) -> String {
        use RetryReason::*;
        match self {
            UpstreamError::Deadline | UpstreamError::Exhausted { last: Timeout | GatewayTimeout, .. } => {
                "timeout".into()
            }
            UpstreamError::Exhausted { last: Connect, .. } => "connect_error".into(),
            UpstreamError::Exhausted { last, .. } => format!("http_{}", last.label()),
            UpstreamError::Dropped => "unreachable".into(),
            UpstreamError::Refused { status: 401 | 403 } => "unauthorized".into(),
            UpstreamError::Quota => "quota".into(),
            UpstreamError::Refused { status } => format!("http_{status}"),
            UpstreamError::Malformed | UpstreamError::EnvelopeStatus { .. } | UpstreamError::RecordFailed { .. } => {
                "malformed_response".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exhausted(last: RetryReason, secs: f64) -> UpstreamError {
        UpstreamError::Exhausted { last, retry_after: Duration::from_secs_f64(secs) }
    }

    #[test]
    fn exhausted_transient_failures_map_by_their_last_reason() {
        for last in [RetryReason::TooManyRequests, RetryReason::Unavailable, RetryReason::Connect] {
            let api = exhausted(last, 1.2).to_api_error();
            assert_eq!((api.status, api.code, api.retry_after), (503, "upstream_unavailable", Some(2)), "{last:?}");
        }
        assert_eq!(exhausted(RetryReason::BadGateway, 1.0).to_api_error().status, 502);
        for last in [RetryReason::GatewayTimeout, RetryReason::Timeout] {
            let api = exhausted(last, 1.0).to_api_error();
            assert_eq!((api.status, api.code, api.retry_after), (504, "upstream_timeout", None));
        }
        assert_eq!(UpstreamError::Deadline.to_api_error().code, "upstream_timeout");
    }

    #[test]
    fn statuses_that_retrying_cannot_fix() {
        assert_eq!(UpstreamError::from_answer(200, b"{}"), None);
        assert_eq!(UpstreamError::from_answer(204, b""), None);
        for status in [401, 403] {
            let api = UpstreamError::from_answer(status, br#"{"detail": "Invalid token."}"#).unwrap().to_api_error();
            assert_eq!((api.status, api.code), (502, "upstream_auth"));
        }
        let api = UpstreamError::from_answer(400, b"{}").unwrap().to_api_error();
        assert_eq!((api.status, api.code), (502, "upstream_error"));
    }

    #[test]
    fn exhausted_credits_are_their_own_answer() {
        for (status, body) in [(402, &b"{}"[..]), (403, br#"{"detail": "Insufficient credits."}"#)] {
            let error = UpstreamError::from_answer(status, body).unwrap();
            assert_eq!(error, UpstreamError::Quota);
            let api = error.to_api_error();
            assert_eq!((api.status, api.code, api.retry_after), (503, "upstream_quota", None));
            assert!(!error.is_outage(), "no credits is not an outage");
        }
        // A 5xx that mentions credits is still an upstream fault.
        assert_eq!(
            UpstreamError::from_answer(500, b"credits service down"),
            Some(UpstreamError::Refused { status: 500 })
        );
    }

    #[test]
    fn only_transport_and_exhausted_failures_are_outages() {
        assert!(exhausted(RetryReason::Unavailable, 1.0).is_outage());
        assert!(UpstreamError::Deadline.is_outage());
        assert!(UpstreamError::Dropped.is_outage());
        for error in [
            UpstreamError::Refused { status: 401 },
            UpstreamError::Malformed,
            UpstreamError::RecordFailed { code: 400 },
        ] {
            assert!(!error.is_outage(), "{error:?}");
        }
    }

    #[test]
    fn a_dropped_connection_says_nothing_of_its_cause() {
        let error = UpstreamError::from(CallError::Transport("denied: secret.example".into()));
        let api = error.to_api_error();
        assert_eq!((api.status, api.code), (502, "upstream_unreachable"));
        assert!(!api.detail.contains("secret"));
    }

    #[test]
    fn bodies_that_are_not_answers() {
        assert_eq!(UpstreamError::Malformed.to_api_error().code, "upstream_malformed");
        let api = UpstreamError::EnvelopeStatus { code: 500 }.to_api_error();
        assert_eq!((api.status, api.code), (502, "upstream_error"));
        let api = UpstreamError::RecordFailed { code: 400 }.to_api_error();
        assert_eq!((api.status, api.code), (422, "image_not_processed"));
    }

    #[test]
    fn health_reasons() {
        let cases = [
            (UpstreamError::Deadline, "timeout"),
            (exhausted(RetryReason::GatewayTimeout, 1.0), "timeout"),
            (exhausted(RetryReason::Timeout, 1.0), "timeout"),
            (exhausted(RetryReason::Connect, 1.0), "connect_error"),
            (exhausted(RetryReason::Unavailable, 1.0), "http_503"),
            (exhausted(RetryReason::TooManyRequests, 1.0), "http_429"),
            (UpstreamError::Dropped, "unreachable"),
            (UpstreamError::Refused { status: 401 }, "unauthorized"),
            (UpstreamError::Quota, "quota"),
            (UpstreamError::Refused { status: 404 }, "http_404"),
            (UpstreamError::Malformed, "malformed_response"),
            (UpstreamError::EnvelopeStatus { code: 500 }, "malformed_response"),
        ];
        for (error, reason) in cases {
            assert_eq!(error.health_reason(), reason, "{error:?}");
        }
    }
}
