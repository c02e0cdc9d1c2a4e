//! Retry policy, kept apart from the transport: it only decides
//! *whether* an attempt's outcome is worth another try and *how long* to wait.
//! Every retry costs Ximilar credits again, so only transient failures qualify.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try (so `max_retries + 1` tries at most).
    pub max_retries: u32,
    /// Backoff ceiling for retry n is `min(max_backoff, base_backoff * 2^n)`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` from upstream is honoured up to this long.
    pub max_retry_after: Duration,
    /// One try never waits longer than this (nor past the overall deadline),
    /// so a hung try leaves budget for another.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a try may be repeated. Also the `reason` label of `ximilar_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    TooManyRequests,
    BadGateway,
    Unavailable,
    GatewayTimeout,
    Connect,
    Timeout,
}

impl RetryReason {
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::TooManyRequests => "429",
            RetryReason::BadGateway => "502",
            RetryReason::Unavailable => "503",
            RetryReason::GatewayTimeout => "504",
            RetryReason::Connect => "connect",
            RetryReason::Timeout => "timeout",
        }
    }

    /// The HTTP status worth retrying, if this reason is one.
    pub fn from_status(status: u16) -> Option<RetryReason> {
        match status {
            429 => Some(RetryReason::TooManyRequests),
            502 => Some(RetryReason::BadGateway),
            503 => Some(RetryReason::Unavailable),
            504 => Some(RetryReason::GatewayTimeout),
            _ => None,
        }
    }
}

impl RetryPolicy {
    /// Full-jitter exponential backoff before retry number `retry` (0-based):
    /// uniform in `[0, min(max, base * 2^retry)]`; `unit` is a random draw in [0, 1).
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        self.backoff_ceiling(retry).mul_f64(unit.clamp(0.0, 1.0))
    }

    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX);
        self.base_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// The wait before the next try: jittered backoff, or the server's
    /// `Retry-After` (capped) when it asks for longer; a `Retry-After: 0` does
    /// not turn the retries into a burst.
    pub fn wait_before(&self, retry: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let backoff = self.backoff(retry, unit);
        match retry_after {
            Some(hint) => hint.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }
}

/// `Retry-After` as delta-seconds. An HTTP-date is not used (Ximilar documents
/// no Retry-After at all); it falls back to backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..Default::default()
        }
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = policy();
        let ceilings: Vec<u128> = (0..6).map(|n| p.backoff_ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff_ceiling(200), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.backoff(2, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(200));
        assert_eq!(p.backoff(2, 0.999_999), Duration::from_nanos(399_999_600));
        assert_eq!(p.backoff(2, 7.0), Duration::from_millis(400), "out-of-range draws are clamped");
    }

    #[test]
    fn retry_after_wins_over_backoff_but_is_capped() {
        let p = RetryPolicy { max_retry_after: Duration::from_secs(3), ..policy() };
        assert_eq!(p.wait_before(0, Some(Duration::from_secs(2)), 0.9), Duration::from_secs(2));
        assert_eq!(p.wait_before(0, Some(Duration::from_secs(120)), 0.9), Duration::from_secs(3));
        assert_eq!(p.wait_before(1, None, 0.5), Duration::from_millis(100));
    }

    #[test]
    fn only_transient_statuses_are_retryable() {
        let retryable: Vec<u16> = (100..600).filter(|s| RetryReason::from_status(*s).is_some()).collect();
        assert_eq!(retryable, vec![429, 502, 503, 504]);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
