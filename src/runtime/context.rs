//! The per-request context: owned by the pipeline, lent to the endpoint. It
//! holds what the request is (id, body, clock) and what it did (Ximilar calls,
//! cache outcome, store errors), and opens the configuration and the cache on
//! first use, so an endpoint that needs neither (like `/metrics`) never links them.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use super::breaker;
use super::budget::{Budget, BudgetGate};
use super::config;
use super::report::{CacheOutcome, ImageStep, Report};
use super::stores::{now_ms, Cache, Counters, Lease};
use super::upstream::{SpinClock, SpinTransport};
use crate::auth::{Caller, ANONYMOUS};
use crate::cache;
use crate::cache_control::CacheControl;
use crate::config::Config;
use crate::contract::ApiError;
use crate::retry::RetryPolicy;
use crate::retry_loop::{self, CallError, Clock, Open, UpstreamResponse};
use crate::upstream_error::UpstreamError;
use crate::upstream_request::UpstreamRequest;
use crate::ximilar;

/// How often a request waiting on another's identical call looks for its answer.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// The one error a leader shares with the requests that waited on it: Ximilar's
/// definite answer that it cannot read the image (asking again repeats it, and pays).
const SHARED_ERROR_CODE: &str = "image_not_processed";

/// Long enough for the waiting requests to read it, too short to be a cache of errors.
const SHARED_ERROR_TTL_MS: u64 = 2_000;

#[derive(Serialize, Deserialize)]
struct SharedError {
    detail: String,
}

/// Where an answer comes from.
enum Found<T> {
    Cached(T),
    /// Ask Ximilar, then hand the outcome to [`Context::finish`] with this lease.
    Lead(Option<Lease>),
}

pub struct Context {
    pub request_id: String,
    pub clock: SpinClock,
    pub body: Bytes,
    /// The counters and the breaker's state, in the state store.
    pub counters: Counters,
    /// What the request did, for the pipeline (see [`Context::take_report`]).
    report: Report,
    /// What the caller's `Cache-Control` asks of the cache.
    pub cache_control: CacheControl,
    /// When the request arrived (Unix ms): `no-cache` wants an answer from then on.
    started_ms: u64,
    /// Who is calling, when inbound keys are configured (see [`Context::admit`]).
    caller: Option<Caller>,
    /// The caller's daily budget, when it has one.
    budget: Option<Budget>,
    cache: Cache,
    /// When the Ximilar calls of this request must be done by (set with the configuration).
    deadline: Option<Duration>,
}

impl Context {
    pub fn new(request_id: String, clock: SpinClock, counters: Counters) -> Context {
        Context {
            request_id,
            clock,
            body: Bytes::new(),
            counters,
            report: Report::default(),
            cache_control: CacheControl::default(),
            started_ms: now_ms(),
            caller: None,
            budget: None,
            cache: Cache::disabled(),
            deadline: None,
        }
    }

    /// The configuration, which the gateway cannot work without: a bad value or a
    /// missing token is a 500 naming the variable. The overall deadline starts here.
    pub async fn config(&mut self) -> Result<&'static Config, ApiError> {
        let config = config::load().await.map_err(|why| ApiError::new(500, "config_error", why))?;
        if config.api_token.is_empty() {
            return Err(ApiError::new(500, "config_error", "XIMILAR_API_TOKEN is not set"));
        }
        self.deadline.get_or_insert(self.clock.now() + config.timeout);
        Ok(config)
    }

    /// Time left before the request's deadline (set with the configuration).
    pub fn remaining(&self) -> Duration {
        self.deadline.map_or(Duration::ZERO, |d| d.saturating_sub(self.clock.now()))
    }

    /// The authenticated caller, whose budget (if any) every Ximilar try now spends.
    pub fn admit(&mut self, caller: Option<Caller>) {
        self.budget = caller.as_ref().and_then(|c| Budget::of(c, now_ms()));
        self.caller = caller;
    }

    /// Gives back the budget unit held for a try that was never sent (the
    /// answer came from the cache or another request's call, or the request
    /// failed first). Every request ends with it.
    pub async fn release_unused_budget(&mut self) {
        if let Some(budget) = &mut self.budget {
            budget.release_held(&mut self.counters).await;
        }
    }

    /// How the cache served the request so far.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.report.cache
    }

    /// Crop mode's image step, as it went.
    pub fn record_image_step(&mut self, step: ImageStep) {
        self.report.image = Some(step);
    }

    /// What the request did; the pipeline takes it once the answer is ready.
    pub fn take_report(&mut self) -> Report {
        std::mem::take(&mut self.report)
    }

    /// The caller's name for logs and labels: a configured name, or `anonymous`.
    pub fn caller_name(&self) -> &str {
        self.caller.as_ref().map_or(ANONYMOUS, |c| c.name.as_str())
    }

    /// Opens the cache with `ttl` (zero leaves it off).
    pub async fn use_cache(&mut self, ttl: Duration) {
        self.cache = Cache::open(ttl, &self.counters).await;
    }

    /// A cached answer for `key` young enough for the caller, counted as a hit,
    /// or (when caching) a miss, or a refresh the caller asked for.
    async fn cached<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.cache.enabled() {
            return None;
        }
        let found = self.cache_lookup(key).await;
        self.report.cache = match (&found, self.cache_control.no_cache) {
            (Some(_), _) => CacheOutcome::Hit,
            (None, true) => CacheOutcome::Refresh,
            (None, false) => CacheOutcome::Miss,
        };
        found
    }

    /// One look in the cache, for an entry as young as the caller wants.
    async fn cache_lookup<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let not_before = self.cache_control.not_before(self.started_ms, now_ms());
        let (value, at) = self.cache.get_since(key, not_before).await?;
        self.report.cached_at = Some(at);
        Some(value)
    }

    /// The answer to `key`, asked of Ximilar at most once across every instance
    /// and replica: from the cache; or, when another request is already asking
    /// the same question, from that request once it has answered; or from `ask`,
    /// whose answer is then cached (and a definite error shared with those who
    /// waited). The lease is always given back, whatever `ask` returns.
    pub async fn once<T: Serialize + DeserializeOwned>(
        &mut self,
        key: &str,
        ask: impl AsyncFnOnce(&mut Context) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let lease = match self.cached_or_lead::<T>(key).await? {
            Found::Cached(hit) => return Ok(hit),
            Found::Lead(lease) => lease,
        };
        let answer = ask(self).await;
        self.finish(key, lease, answer.as_ref()).await;
        answer
    }

    /// [`Context::once`] for a step that requests for different answers share
    /// (the download and decode of a photo that several garments are cut
    /// from): how it was found is not this request's cache outcome.
    pub async fn once_aside<T: Serialize + DeserializeOwned>(
        &mut self,
        key: &str,
        ask: impl AsyncFnOnce(&mut Context) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let own = (self.report.cache, self.report.cached_at, self.report.coalesced);
        let found = self.once(key, ask).await;
        (self.report.cache, self.report.cached_at, self.report.coalesced) = own;
        found
    }

    /// From the cache; or from another request that holds the in-flight lease
    /// (shared through the store), once it has answered; or [`Found::Lead`]: ask
    /// Ximilar, then [`Context::finish`]. A follower waits with the async clock
    /// (the instance goes on serving), and never so long that it could not still
    /// make its own call in time.
    async fn cached_or_lead<T: DeserializeOwned>(&mut self, key: &str) -> Result<Found<T>, ApiError> {
        if let Some(hit) = self.cached(key).await {
            return Ok(Found::Cached(hit));
        }
        // A miss may cost a billed call: the caller's budget decides now, before
        // the lease is taken or any image is fetched.
        if let Some(budget) = &mut self.budget {
            budget.hold(&mut self.counters).await?;
        }
        if !self.cache.enabled() {
            return Ok(Found::Lead(None));
        }
        let config = self.config().await?;
        let period = config.timeout.as_millis() as u64;
        let wait_until = self.deadline.expect("set by config()").saturating_sub(config.retry.attempt_timeout);
        // The lease's contest goes in rounds: a round can end with nobody leading
        // (see `stores`), and two looks in a row (some 20 ms) without a leader move
        // the followers on to the next round.
        let mut lease = Lease { key: cache::lease_key(key, now_ms(), period), round: 0 };
        let mut leaderless = 0;
        loop {
            match self.cache.take_lease(&lease).await {
                None => return Ok(Found::Lead(None)),
                Some(true) => {
                    // A leader may have answered between our lookup and our lease.
                    if let Some(hit) = self.cache_lookup(key).await {
                        self.cache.release_lease(&lease).await;
                        self.report.cache = CacheOutcome::Hit;
                        return Ok(Found::Cached(hit));
                    }
                    return Ok(Found::Lead(Some(lease)));
                }
                Some(false) => {}
            }
            // Follow the leader until its answer is in the cache or it has gone.
            loop {
                if self.clock.now() + FOLLOW_POLL >= wait_until {
                    return Ok(Found::Lead(None));
                }
                self.clock.sleep(FOLLOW_POLL).await;
                if let Some(answer) = self.cache_lookup(key).await {
                    self.report.coalesced = true;
                    self.report.cache = CacheOutcome::Hit;
                    return Ok(Found::Cached(answer));
                }
                if !self.cache.lease_held(&lease).await {
                    break;
                }
                leaderless = 0;
            }
            if let Some(shared) = self.cache.get::<SharedError>(&cache::shared_error_key(key)).await {
                self.report.coalesced = true;
                return Err(ApiError::invalid(SHARED_ERROR_CODE, shared.detail));
            }
            // Take the lead (or follow a new leader): the leader finished without an
            // answer to share, or nobody won this round.
            leaderless += 1;
            if leaderless == 2 {
                lease.round += 1;
                leaderless = 0;
            }
        }
    }

    /// Ends a lead: keeps the answer (or a definite error, for the followers
    /// only) and frees the lease, so those waiting on it see the outcome.
    async fn finish<T: Serialize>(&mut self, key: &str, lease: Option<Lease>, outcome: Result<&T, &ApiError>) {
        match outcome {
            Ok(answer) => self.cache.put(key, answer).await,
            Err(error) if lease.is_some() && error.code == SHARED_ERROR_CODE => {
                let shared = SharedError { detail: error.detail.clone() };
                self.cache.put_for(&cache::shared_error_key(key), &shared, SHARED_ERROR_TTL_MS).await;
            }
            Err(_) => {}
        }
        if let Some(lease) = lease {
            self.cache.release_lease(&lease).await;
        }
    }

    /// A value another request left in the cache for this one (it does not
    /// count as this request's cache outcome).
    pub async fn left_by_others<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        self.cache.get(key).await
    }

    /// Leaves `value` in the cache for `ttl_ms`, for requests still to come.
    pub async fn leave_for_others<T: Serialize>(&mut self, key: &str, value: &T, ttl_ms: u64) {
        self.cache.put_for(key, value, ttl_ms).await;
    }

    /// Store errors met by the cache (they never fail a request).
    pub fn cache_errors(&self) -> u32 {
        self.cache.errors
    }

    /// One Ximilar call with retries, inside the request's deadline; returns the
    /// checked JSON envelope, or the caller's error for whatever went wrong.
    pub async fn ximilar(&mut self, request: &UpstreamRequest) -> Result<Map<String, Value>, ApiError> {
        let config = self.config().await?;
        let deadline = self.deadline.expect("set by config()");
        let breaker_pass = match config.breaker.enabled() {
            true => Some(breaker::admit(&mut self.counters, &config.breaker, request.endpoint).await?),
            false => None,
        };
        let first_try = self.report.calls.attempts.len();
        // A caller's budget pays for every try that may be billed; cache hits and
        // waiting on another's identical call cost nothing.
        let mut budget = BudgetGate { budget: self.budget.as_mut(), counters: &mut self.counters, refusal: None };
        let result = retry_loop::call(
            &SpinTransport,
            &self.clock,
            &config.retry,
            deadline,
            request,
            &mut budget,
            &mut self.report.calls,
        )
        .await;
        let refusal = budget.refusal.take();
        let tries = &self.report.calls.attempts[first_try..];
        if let Some(pass) = breaker_pass {
            breaker::settle(&mut self.counters, &config.breaker, pass, tries).await;
        }
        match (result, refusal) {
            (Err(CallError::NotAdmitted), Some(refusal)) => Err(refusal),
            (result, _) => result.map_err(UpstreamError::from).and_then(|r| envelope(&r)).map_err(|e| e.to_api_error()),
        }
    }

    /// One try of `request` within `timeout`, no retries: the health probe. Returns the envelope.
    pub async fn probe(
        &mut self,
        request: &UpstreamRequest,
        retry: &RetryPolicy,
        timeout: Duration,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let policy = RetryPolicy { max_retries: 0, attempt_timeout: timeout, ..retry.clone() };
        let deadline = self.clock.now() + timeout;
        let response = retry_loop::call(
            &SpinTransport,
            &self.clock,
            &policy,
            deadline,
            request,
            &mut Open,
            &mut self.report.calls,
        )
        .await?;
        envelope(&response)
    }
}

/// The checked JSON envelope of an answer the retry loop handed back, or what is wrong with it.
fn envelope(response: &UpstreamResponse) -> Result<Map<String, Value>, UpstreamError> {
    if let Some(error) = UpstreamError::from_answer(response.status, &response.body) {
        return Err(error);
    }
    ximilar::parse_envelope(&response.body)
}
