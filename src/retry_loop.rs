//! One Ximilar call with retries inside an overall deadline. Generic over the
//! transport and the clock, as tower keeps its retry layer apart from the
//! service it wraps: Spin's outbound HTTP in production, scripted fakes in tests.

use std::time::Duration;

use crate::retry::{RetryPolicy, RetryReason};
use crate::upstream_request::{UpstreamRequest, XimilarCall};

/// What came back from one try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Could not connect (refused, DNS, TLS). Retryable.
    Connect,
    /// No answer within the try's budget. Retryable.
    Timeout,
    /// Anything else (the host denied the request, the connection dropped after
    /// the request was sent, a protocol error): not retried, since Ximilar may
    /// already have billed it.
    Other(String),
}

#[allow(async_fn_in_trait)] // used generically, never as `dyn`
pub trait Transport {
    /// Sends one request; must give up after `budget`.
    async fn send(&self, request: &UpstreamRequest, budget: Duration) -> Result<UpstreamResponse, TransportError>;
}

/// Asked before every try whether it may be sent, and told how each try went:
/// where a caller's budget is reserved, one unit a try, and an unbilled try
/// gives its unit back. Kept apart from the retry rules, as the transport is.
#[allow(async_fn_in_trait)]
pub trait TryGate {
    /// Whether the next try may go; `false` ends the call with [`CallError::NotAdmitted`].
    async fn admit(&mut self) -> bool;
    async fn settle(&mut self, outcome: Outcome);
}

/// A gate that admits every try.
pub struct Open;

impl TryGate for Open {
    async fn admit(&mut self) -> bool {
        true
    }
    async fn settle(&mut self, _: Outcome) {}
}

#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Monotonic time since an arbitrary origin.
    fn now(&self) -> Duration;
    async fn sleep(&self, duration: Duration);
    /// A uniform draw in [0, 1) for jitter.
    fn random_unit(&self) -> f64;
}

/// How one try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Timeout,
    Connect,
    /// The connection failed after the request was sent, or the host refused it.
    Error,
}

impl Outcome {
    /// Whether Ximilar may have billed the try: an answer it gave, and any try
    /// whose fate is unknown (a timeout, a connection lost after sending). A
    /// refused connection or an error status never reached its billing.
    pub fn may_be_billed(self) -> bool {
        matches!(self, Outcome::Status(200..=299) | Outcome::Timeout | Outcome::Error)
    }

    /// The `status` label of `ximilar_requests_total`: the HTTP status, or `timeout`, `connect`, `error`.
    pub fn label(self) -> String {
        match self {
            Outcome::Status(status) => status.to_string(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Connect => "connect".into(),
            Outcome::Error => "error".into(),
        }
    }
}

/// How one try went, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: Outcome,
    pub duration: Duration,
    /// The `Retry-After` the answer carried, if any.
    pub retry_after: Option<Duration>,
}

/// Everything the calls of one gateway request did upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallLog {
    pub attempts: Vec<(XimilarCall, Attempt)>,
    pub retries: Vec<(XimilarCall, RetryReason)>,
}

/// Why a call produced no usable HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Transient failures to the end of the retry allowance.
    Exhausted { last: RetryReason, retry_after: Duration },
    /// The overall deadline passed.
    Deadline,
    /// A failure that retrying cannot fix.
    Transport(String),
    /// The [`TryGate`] refused a try (nothing was sent for it).
    NotAdmitted,
}

/// Sends `request`, retrying transient failures per `policy`, until `deadline`
/// (a [`Clock::now`] value), each try only if `gate` admits it. Non-retryable
/// HTTP statuses come back as responses.
pub async fn call<T: Transport, C: Clock, G: TryGate>(
    transport: &T,
    clock: &C,
    policy: &RetryPolicy,
    deadline: Duration,
    request: &UpstreamRequest,
    gate: &mut G,
    log: &mut CallLog,
) -> Result<UpstreamResponse, CallError> {
    let mut retries = 0;
    loop {
        if clock.now() >= deadline {
            return Err(CallError::Deadline);
        }
        if !gate.admit().await {
            return Err(CallError::NotAdmitted);
        }
        let started = clock.now();
        let budget = deadline.saturating_sub(started).min(policy.attempt_timeout);
        let result = transport.send(request, budget).await;
        let outcome = match &result {
            Ok(response) => Outcome::Status(response.status),
            Err(TransportError::Connect) => Outcome::Connect,
            Err(TransportError::Timeout) => Outcome::Timeout,
            Err(TransportError::Other(_)) => Outcome::Error,
        };
        let retry_after = result.as_ref().ok().and_then(|r| r.retry_after);
        let duration = clock.now().saturating_sub(started);
        log.attempts.push((request.endpoint, Attempt { outcome, duration, retry_after }));
        gate.settle(outcome).await;

        let (reason, hint) = match result {
            Ok(response) => match RetryReason::from_status(response.status) {
                None => return Ok(response),
                Some(reason) => (reason, response.retry_after),
            },
            Err(TransportError::Connect) => (RetryReason::Connect, None),
            Err(TransportError::Timeout) => (RetryReason::Timeout, None),
            Err(TransportError::Other(why)) => return Err(CallError::Transport(why)),
        };
        let wait = policy.wait_before(retries, hint, clock.random_unit());
        let out_of_time = clock.now() + wait >= deadline;
        if out_of_time && matches!(reason, RetryReason::Timeout | RetryReason::GatewayTimeout) {
            return Err(CallError::Deadline);
        }
        if retries >= policy.max_retries || out_of_time {
            // What our caller should wait: Ximilar's hint, bounded like our own waits, or our next backoff.
            let suggested = hint.map_or_else(|| policy.backoff_ceiling(retries), |h| h.min(policy.max_retry_after));
            let retry_after = suggested.max(Duration::from_secs(1));
            return Err(CallError::Exhausted { last: reason, retry_after });
        }
        clock.sleep(wait).await;
        retries += 1;
        log.retries.push((request.endpoint, reason));
    }
}

/// Drives a future that never truly waits (fakes resolve at once) to completion;
/// enough for native tests of async code without an executor crate.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[cfg(test)]
pub(crate) mod fakes {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    /// A clock that only moves when slept on (or when a fake try takes time).
    #[derive(Default)]
    pub struct FakeClock {
        pub now: Cell<Duration>,
        pub sleeps: RefCell<Vec<Duration>>,
        pub draw: Cell<f64>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.now.get()
        }
        async fn sleep(&self, d: Duration) {
            self.sleeps.borrow_mut().push(d);
            self.now.set(self.now.get() + d);
        }
        fn random_unit(&self) -> f64 {
            self.draw.get()
        }
    }

    /// Answers from a script, one entry per try; a timeout uses the whole budget.
    pub struct Scripted<'c> {
        pub clock: &'c FakeClock,
        pub script: RefCell<VecDeque<Result<UpstreamResponse, TransportError>>>,
        pub budgets: RefCell<Vec<Duration>>,
        pub latency: Duration,
    }

    impl<'c> Scripted<'c> {
        pub fn new(clock: &'c FakeClock, script: Vec<Result<UpstreamResponse, TransportError>>) -> Self {
            Scripted {
                clock,
                script: RefCell::new(script.into()),
                budgets: RefCell::default(),
                latency: Duration::from_millis(50),
            }
        }
        pub fn tries(&self) -> usize {
            self.budgets.borrow().len()
        }
    }

    impl Transport for Scripted<'_> {
        async fn send(&self, _: &UpstreamRequest, budget: Duration) -> Result<UpstreamResponse, TransportError> {
            self.budgets.borrow_mut().push(budget);
            let next = self.script.borrow_mut().pop_front().expect("script ran out: more tries than expected");
            let spent = if next == Err(TransportError::Timeout) { budget } else { self.latency.min(budget) };
            self.clock.now.set(self.clock.now.get() + spent);
            next
        }
    }

    pub fn status(code: u16) -> Result<UpstreamResponse, TransportError> {
        Ok(UpstreamResponse { status: code, retry_after: None, body: b"{}".to_vec() })
    }

    pub fn status_with_retry_after(code: u16, secs: u64) -> Result<UpstreamResponse, TransportError> {
        Ok(UpstreamResponse { status: code, retry_after: Some(Duration::from_secs(secs)), body: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::fakes::*;
    use super::*;

    fn request() -> UpstreamRequest {
        UpstreamRequest {
            endpoint: XimilarCall::DetectTags,
            method: "POST",
            url: "http://x/".into(),
            headers: vec![],
            body: None,
        }
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(10),
        }
    }

    fn run(
        script: Vec<Result<UpstreamResponse, TransportError>>,
        policy: RetryPolicy,
        deadline: Duration,
    ) -> (Result<UpstreamResponse, CallError>, usize, Vec<Duration>, CallLog) {
        let clock = FakeClock::default();
        clock.draw.set(0.5);
        let transport = Scripted::new(&clock, script);
        let mut log = CallLog::default();
        let result = block_on(call(&transport, &clock, &policy, deadline, &request(), &mut Open, &mut log));
        let sleeps = clock.sleeps.borrow().clone();
        (result, transport.tries(), sleeps, log)
    }

    #[test]
    fn success_first_try_makes_one_call() {
        let (result, tries, sleeps, log) = run(vec![status(200)], policy(3), Duration::from_secs(30));
        assert_eq!(result.unwrap().status, 200);
        assert_eq!((tries, sleeps.len(), log.retries.len()), (1, 0, 0));
        assert_eq!(log.attempts[0].1.outcome, Outcome::Status(200));
    }

    #[test]
    fn transient_statuses_are_retried_with_jittered_exponential_backoff() {
        let script = vec![status(429), status(502), Err(TransportError::Connect), status(200)];
        let (result, tries, sleeps, log) = run(script, policy(3), Duration::from_secs(30));
        assert_eq!(result.unwrap().status, 200);
        assert_eq!(tries, 4);
        // draw 0.5 of ceilings 100, 200, 400 ms
        assert_eq!(sleeps, vec![Duration::from_millis(50), Duration::from_millis(100), Duration::from_millis(200)]);
        let reasons: Vec<_> = log.retries.iter().map(|(_, r)| r.label()).collect();
        assert_eq!(reasons, vec!["429", "502", "connect"]);
    }

    #[test]
    fn non_retryable_statuses_come_back_at_once() {
        for code in [400, 401, 403, 404, 500, 501] {
            let (result, tries, _, _) = run(vec![status(code)], policy(3), Duration::from_secs(30));
            assert_eq!((result.unwrap().status, tries), (code, 1), "status {code}");
        }
    }

    #[test]
    fn exhausted_429_after_four_tries_suggests_the_next_backoff() {
        let p = RetryPolicy { base_backoff: Duration::from_millis(300), ..policy(3) };
        let (result, tries, _, log) = run(vec![status(429); 4], p, Duration::from_secs(30));
        assert_eq!(tries, 4);
        assert_eq!(log.retries.len(), 3);
        // No Retry-After from upstream: the backoff ceiling after 3 retries, min(2 s, 300 ms × 2³).
        let retry_after = Duration::from_secs(2);
        assert_eq!(result.unwrap_err(), CallError::Exhausted { last: RetryReason::TooManyRequests, retry_after });
    }

    #[test]
    fn a_huge_or_zero_retry_after_is_bounded_for_the_caller_and_the_waits() {
        // Capped at max_retry_after (5 s here) for the caller...
        let (result, _, _, _) = run(vec![status_with_retry_after(503, 3_600)], policy(0), Duration::from_secs(30));
        let retry_after = Duration::from_secs(5);
        assert_eq!(result.unwrap_err(), CallError::Exhausted { last: RetryReason::Unavailable, retry_after });
        // ... and 0 waits the jittered backoff, not nothing.
        let script = vec![status_with_retry_after(429, 0), status_with_retry_after(429, 0), status(200)];
        let (result, _, sleeps, _) = run(script, policy(3), Duration::from_secs(30));
        assert!(result.is_ok());
        assert_eq!(sleeps, vec![Duration::from_millis(50), Duration::from_millis(100)]);
    }

    #[test]
    fn exhausted_with_retry_after_passes_it_on_and_never_below_a_second() {
        let (result, _, _, _) = run(vec![status_with_retry_after(503, 4)], policy(0), Duration::from_secs(30));
        let retry_after = Duration::from_secs(4);
        assert_eq!(result.unwrap_err(), CallError::Exhausted { last: RetryReason::Unavailable, retry_after });
        let (result, _, _, _) = run(vec![status(503)], policy(0), Duration::from_secs(30));
        let retry_after = Duration::from_secs(1);
        assert_eq!(result.unwrap_err(), CallError::Exhausted { last: RetryReason::Unavailable, retry_after });
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let script = vec![status_with_retry_after(503, 2), status_with_retry_after(429, 60), status(200)];
        let (result, _, sleeps, _) = run(script, policy(3), Duration::from_secs(30));
        assert!(result.is_ok());
        assert_eq!(sleeps, vec![Duration::from_secs(2), Duration::from_secs(5)]);
    }

    #[test]
    fn max_retries_zero_means_a_single_try() {
        let (result, tries, _, _) = run(vec![status(503)], policy(0), Duration::from_secs(30));
        assert!(matches!(result, Err(CallError::Exhausted { last: RetryReason::Unavailable, .. })));
        assert_eq!(tries, 1);
    }

    #[test]
    fn a_hang_is_cut_at_the_deadline_and_becomes_504() {
        let (result, tries, _, _) = run(vec![Err(TransportError::Timeout)], policy(3), Duration::from_secs(1));
        assert_eq!(result.unwrap_err(), CallError::Deadline);
        assert_eq!(tries, 1);
    }

    #[test]
    fn each_try_gets_at_most_the_attempt_timeout_and_the_remaining_budget() {
        let p = RetryPolicy { attempt_timeout: Duration::from_secs(4), ..policy(3) };
        let clock = FakeClock::default();
        let transport = Scripted::new(
            &clock,
            vec![Err(TransportError::Timeout), Err(TransportError::Timeout), Err(TransportError::Timeout)],
        );
        let result = block_on(call(
            &transport,
            &clock,
            &p,
            Duration::from_secs(10),
            &request(),
            &mut Open,
            &mut CallLog::default(),
        ));
        assert_eq!(result.unwrap_err(), CallError::Deadline);
        assert_eq!(
            *transport.budgets.borrow(),
            vec![Duration::from_secs(4), Duration::from_secs(4), Duration::from_secs(2)]
        );
        assert!(clock.now() <= Duration::from_secs(10));
    }

    #[test]
    fn a_retry_that_would_outlive_the_deadline_is_not_made() {
        let script = vec![status_with_retry_after(503, 5)];
        let (result, tries, sleeps, _) = run(script, policy(3), Duration::from_secs(3));
        assert!(matches!(result, Err(CallError::Exhausted { last: RetryReason::Unavailable, .. })));
        assert_eq!((tries, sleeps.len()), (1, 0));
    }

    #[test]
    fn denied_or_broken_transport_is_not_retried() {
        let (result, tries, _, log) =
            run(vec![Err(TransportError::Other("denied".into()))], policy(3), Duration::from_secs(30));
        assert_eq!(tries, 1);
        assert_eq!(result.unwrap_err(), CallError::Transport("denied".into()));
        assert_eq!(log.attempts[0].1.outcome, Outcome::Error);
    }

    #[test]
    fn exhausted_502_and_504_keep_their_reason() {
        let (r, _, _, _) = run(vec![status(502); 2], policy(1), Duration::from_secs(30));
        assert!(matches!(r, Err(CallError::Exhausted { last: RetryReason::BadGateway, .. })));
        let (r, _, _, _) = run(vec![status(504); 2], policy(1), Duration::from_secs(30));
        assert!(matches!(r, Err(CallError::Exhausted { last: RetryReason::GatewayTimeout, .. })));
    }

    /// Admits `allowed` tries and remembers what it was told.
    struct Allowance {
        allowed: usize,
        settled: Vec<Outcome>,
    }

    impl TryGate for Allowance {
        async fn admit(&mut self) -> bool {
            let admitted = self.allowed > 0;
            self.allowed = self.allowed.saturating_sub(1);
            admitted
        }
        async fn settle(&mut self, outcome: Outcome) {
            self.settled.push(outcome);
        }
    }

    #[test]
    fn the_gate_is_asked_before_every_try_and_told_each_outcome() {
        let clock = FakeClock::default();
        let transport = Scripted::new(&clock, vec![status(503), Err(TransportError::Connect), status(200)]);
        let gated = |gate: &mut Allowance| {
            let deadline = Duration::from_secs(30);
            block_on(call(&transport, &clock, &policy(3), deadline, &request(), gate, &mut CallLog::default()))
        };
        let mut gate = Allowance { allowed: 2, settled: vec![] };
        assert_eq!(gated(&mut gate).unwrap_err(), CallError::NotAdmitted);
        assert_eq!(transport.tries(), 2, "the third try was never sent");
        assert_eq!(gate.settled, vec![Outcome::Status(503), Outcome::Connect]);
        let mut none = Allowance { allowed: 0, settled: vec![] };
        assert_eq!((gated(&mut none).unwrap_err(), transport.tries()), (CallError::NotAdmitted, 2));
    }

    #[test]
    fn only_answers_and_tries_of_unknown_fate_may_be_billed() {
        assert!(
            Outcome::Status(200).may_be_billed() && Outcome::Timeout.may_be_billed() && Outcome::Error.may_be_billed()
        );
        for unbilled in [Outcome::Connect, Outcome::Status(429), Outcome::Status(401), Outcome::Status(503)] {
            assert!(!unbilled.may_be_billed(), "{unbilled:?}");
        }
    }
}
