//! The shared circuit breaker around every Ximilar call, kept beside the
//! counters (the `metrics` store, which never evicts, or the SQLite database):
//! before a call, one read of its state and one of its failure count decide
//! whether the call may go; after it, the tries' outcomes move the state. See
//! `crate::breaker` for the rules.

use super::stores::{now_ms, Counters};
use crate::breaker::{self, BreakerPolicy, State, Stored, FAILURES_KEY, STATE_KEY};
use crate::contract::ApiError;
use crate::metrics;
use crate::retry_loop::Attempt;
use crate::upstream_request::XimilarCall;

/// What the breaker saw when it let a call through.
pub struct Pass {
    stored: Stored,
    failures: i64,
    probing: bool,
}

/// The state `/health` reports.
pub async fn state(counters: &mut Counters) -> State {
    let stored = Stored::decode(counters.get_raw(STATE_KEY).await.as_deref());
    State::read(stored.open_until_ms, now_ms())
}

/// Lets a call through, or refuses it at once with 503 and the time left.
pub async fn admit(counters: &mut Counters, policy: &BreakerPolicy, endpoint: XimilarCall) -> Result<Pass, ApiError> {
    let stored = Stored::decode(counters.get_raw(STATE_KEY).await.as_deref());
    let failures = counters.get_number(FAILURES_KEY).await.unwrap_or(0);
    let now = now_ms();
    let state = State::read(stored.open_until_ms, now);
    let probing = match state {
        State::Closed => false,
        State::HalfOpen => {
            // The first increment of this lease period's key wins the probe.
            let key = breaker::probe_key(stored.open_until_ms, now, policy.probe_lease);
            counters.increment(&key, 1).await == Some(1)
        }
        State::Open { .. } => false,
    };
    if state != State::Closed && !probing {
        return Err(refuse(counters, state, endpoint));
    }
    Ok(Pass { stored, failures, probing })
}

/// Refuses at once while the breaker is open, before a request spends
/// anything else (crop mode's download) on a call that would be refused.
/// Half-open lets it on: the call itself may be the probe.
pub async fn refuse_if_open(counters: &mut Counters, endpoint: XimilarCall) -> Result<(), ApiError> {
    match state(counters).await {
        open @ State::Open { .. } => Err(refuse(counters, open, endpoint)),
        _ => Ok(()),
    }
}

fn refuse(counters: &mut Counters, state: State, endpoint: XimilarCall) -> ApiError {
    counters.add(&metrics::breaker_rejections_key(endpoint.label()), 1);
    ApiError::new(
        503,
        "upstream_unavailable",
        "Ximilar is failing; the gateway's circuit breaker refuses calls for now",
    )
    .with_retry_after(breaker::retry_after_secs(state))
}

/// Moves the breaker by the tries of one call: any answer that is not a failure
/// closes it and restarts the count; failures add up and open it.
pub async fn settle(counters: &mut Counters, policy: &BreakerPolicy, pass: Pass, tries: &[(XimilarCall, Attempt)]) {
    let failed = tries.iter().rev().take_while(|(_, a)| breaker::is_failure(a.outcome)).count() as i64;
    let answered = failed < tries.len() as i64;
    if answered {
        // Up again: close, and make the failures counted so far not count.
        let run_before = pass.failures - pass.stored.failures_at_reset;
        if pass.probing || pass.stored.open_until_ms != 0 || run_before > 0 {
            let now_counted = counters.increment(FAILURES_KEY, failed).await.unwrap_or(pass.failures + failed);
            let closed = Stored { open_until_ms: 0, failures_at_reset: now_counted - failed };
            counters.set_raw(STATE_KEY, &closed.encode()).await;
            counters.set_gauge(&metrics::breaker_open_key(), 0).await;
        }
        return;
    }
    let Some(total) = counters.increment(FAILURES_KEY, failed).await else { return };
    // Ximilar's own Retry-After on the last try, if it sent one, may keep it open longer.
    let upstream_wait = tries.last().and_then(|(_, a)| a.retry_after);
    if pass.probing || total - pass.stored.failures_at_reset >= i64::from(policy.failures) {
        let open = Stored {
            open_until_ms: policy.open_until_ms(now_ms(), upstream_wait),
            failures_at_reset: pass.stored.failures_at_reset,
        };
        counters.set_raw(STATE_KEY, &open.encode()).await;
        counters.set_gauge(&metrics::breaker_open_key(), 1).await;
    }
}
