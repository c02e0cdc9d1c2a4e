//! The circuit breaker's pure half: its state, read from two numbers in the
//! `metrics` key-value store (shared by every instance and, with Redis, every
//! replica), and the decisions taken from it. When Ximilar is down, failing
//! fast saves callers the retries' waits and Ximilar the hammering.
//!
//! - `breaker:failures` counts failed tries (429, 5xx, connect, timeout, a
//!   dropped connection), only ever by atomic increments (Spin's SQLite and
//!   Redis stores encode counters differently, so a counter is never `set`).
//! - `breaker:state` (only ever `set`) holds two numbers: when the breaker
//!   stays open until (0 while closed), and the failure count at the last
//!   answer that was not a failure. Their difference is the run of consecutive
//!   failures; at [`BreakerPolicy::failures`] the breaker opens for the
//!   cool-down (or the upstream's `Retry-After` if longer, capped), and until
//!   then every call is refused at once.
//! - After that time the breaker is half-open: the first request of each lease
//!   period (an atomic increment of a key named after the period returns 1)
//!   probes Ximilar; the others are refused. A good answer closes the breaker,
//!   a failure opens it again. A probe that dies only costs one lease period.

use std::time::Duration;

use crate::retry_loop::Outcome;

pub const FAILURES_KEY: &str = "breaker:failures";
pub const STATE_KEY: &str = "breaker:state";

/// What `breaker:state` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// Unix ms until which the breaker is open; 0 while closed.
    pub open_until_ms: i64,
    /// `breaker:failures` at the last try that was not a failure.
    pub failures_at_reset: i64,
}

impl Stored {
    pub fn encode(self) -> Vec<u8> {
        [self.open_until_ms.to_le_bytes(), self.failures_at_reset.to_le_bytes()].concat()
    }

    /// Absent or unreadable is closed, with nothing counted.
    pub fn decode(bytes: Option<&[u8]>) -> Stored {
        match bytes.map(<[u8; 16]>::try_from) {
            Some(Ok(b)) => Stored {
                open_until_ms: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                failures_at_reset: i64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
            },
            _ => Stored::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed tries that open the breaker; 0 turns it off.
    pub failures: u32,
    pub cooldown: Duration,
    /// The longest an upstream `Retry-After` may keep it open.
    pub max_open: Duration,
    /// How long a half-open probe may take before another request may probe.
    pub probe_lease: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { remaining: Duration },
    HalfOpen,
}

impl State {
    pub fn read(open_until_ms: i64, now_ms: u64) -> State {
        match u64::try_from(open_until_ms) {
            Ok(0) | Err(_) => State::Closed,
            Ok(until) if until > now_ms => State::Open { remaining: Duration::from_millis(until - now_ms) },
            Ok(_) => State::HalfOpen,
        }
    }

    /// `/health`'s `breaker` field.
    pub fn label(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// The key whose first increment wins the half-open probe of the current lease period.
pub fn probe_key(open_until_ms: i64, now_ms: u64, lease: Duration) -> String {
    let since = now_ms.saturating_sub(open_until_ms.max(0) as u64);
    let period = since / (lease.as_millis().max(1) as u64);
    format!("breaker:probe:{open_until_ms}:{period}")
}

/// Whether a try's outcome says Ximilar is failing (any other answer means it is up).
pub fn is_failure(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Status(status) => status == 429 || (500..600).contains(&status),
        Outcome::Timeout | Outcome::Connect | Outcome::Error => true,
    }
}

impl BreakerPolicy {
    pub fn enabled(&self) -> bool {
        self.failures > 0
    }

    /// When a breaker opened now stays open until: the cool-down, or the
    /// upstream's wait if it asked for longer (capped).
    pub fn open_until_ms(&self, now_ms: u64, upstream_wait: Option<Duration>) -> i64 {
        let open_for = self.cooldown.max(upstream_wait.unwrap_or_default().min(self.max_open));
        (now_ms + open_for.as_millis() as u64) as i64
    }
}

/// `Retry-After` for a refused call: what is left of the open period, at least 1 s.
pub fn retry_after_secs(state: State) -> u32 {
    match state {
        State::Open { remaining } => remaining.as_secs_f64().ceil().max(1.0) as u32,
        State::Closed | State::HalfOpen => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 5,
            cooldown: Duration::from_secs(10),
            max_open: Duration::from_secs(60),
            probe_lease: Duration::from_secs(30),
        }
    }

    #[test]
    fn stored_state_round_trips_and_defaults_to_closed() {
        let s = Stored { open_until_ms: 1_700_000_000_123, failures_at_reset: 42 };
        assert_eq!(Stored::decode(Some(&s.encode())), s);
        assert_eq!(Stored::decode(None), Stored::default());
        assert_eq!(Stored::decode(Some(b"garbage")), Stored::default());
    }

    #[test]
    fn state_from_the_stored_time() {
        assert_eq!(State::read(0, 5_000), State::Closed);
        assert_eq!(State::read(-3, 5_000), State::Closed);
        assert_eq!(State::read(7_500, 5_000), State::Open { remaining: Duration::from_millis(2_500) });
        assert_eq!(State::read(5_000, 5_000), State::HalfOpen);
        assert_eq!(State::read(4_000, 5_000).label(), "half_open");
    }

    #[test]
    fn open_for_the_cooldown_or_a_longer_capped_retry_after() {
        let p = policy();
        assert_eq!(p.open_until_ms(1_000, None), 11_000);
        assert_eq!(p.open_until_ms(1_000, Some(Duration::from_secs(3))), 11_000);
        assert_eq!(p.open_until_ms(1_000, Some(Duration::from_secs(20))), 21_000);
        assert_eq!(p.open_until_ms(1_000, Some(Duration::from_secs(3_600))), 61_000);
    }

    #[test]
    fn retry_after_is_the_time_left_rounded_up() {
        assert_eq!(retry_after_secs(State::Open { remaining: Duration::from_millis(2_100) }), 3);
        assert_eq!(retry_after_secs(State::Open { remaining: Duration::from_millis(10) }), 1);
        assert_eq!(retry_after_secs(State::HalfOpen), 1);
    }

    #[test]
    fn one_probe_key_per_lease_period() {
        let lease = Duration::from_secs(30);
        assert_eq!(probe_key(10_000, 10_000, lease), probe_key(10_000, 39_999, lease));
        assert_ne!(probe_key(10_000, 10_000, lease), probe_key(10_000, 40_000, lease));
        assert_ne!(probe_key(10_000, 10_000, lease), probe_key(20_000, 20_000, lease), "a new opening, a new key");
    }

    #[test]
    fn what_counts_as_a_failed_try() {
        for outcome in [
            Outcome::Status(429),
            Outcome::Status(500),
            Outcome::Status(503),
            Outcome::Timeout,
            Outcome::Connect,
            Outcome::Error,
        ] {
            assert!(is_failure(outcome), "{outcome:?}");
        }
        for outcome in [
            Outcome::Status(200),
            Outcome::Status(400),
            Outcome::Status(401),
            Outcome::Status(402),
            Outcome::Status(404),
        ] {
            assert!(!is_failure(outcome), "{outcome:?}");
        }
    }

    #[test]
    fn zero_failures_turns_it_off() {
        assert!(!BreakerPolicy { failures: 0, ..policy() }.enabled());
        assert!(policy().enabled());
    }
}
