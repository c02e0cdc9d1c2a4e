//! The per-request context: owned by the pipeline, lent to the endpoint. It
//! holds what the request is (id, body, clock) and what it did (Ximilar calls,
//! cache outcome, store errors), and opens the configuration and the cache on
//! first use, so an endpoint that needs neither (like `/metrics`) never links them.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

use super::breaker;
use super::config;
use super::endpoint::CacheOutcome;
use super::stores::{Cache, Counters};
use super::upstream::{SpinClock, SpinTransport};
use crate::client::{self, CallLog, Clock};
use crate::config::Config;
use crate::contract::ApiError;
use crate::retry::RetryPolicy;
use crate::upstream_error::UpstreamError;
use crate::ximilar::{self, UpstreamRequest};

pub struct Context {
    pub request_id: String,
    pub clock: SpinClock,
    pub body: Bytes,
    /// The `metrics` store's counters.
    pub counters: Counters,
    /// Every try sent to Ximilar, and every retry.
    pub calls: CallLog,
    pub cache_outcome: CacheOutcome,
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
            calls: CallLog::default(),
            cache_outcome: CacheOutcome::NotUsed,
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

    /// Opens the cache with `ttl` (zero leaves it off).
    pub async fn use_cache(&mut self, ttl: Duration) {
        self.cache = Cache::open(ttl).await;
    }

    /// A cached answer for `key`, counted as a hit or (when caching) a miss.
    pub async fn cached<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.cache.enabled() {
            return None;
        }
        let found = self.cache.get(key).await;
        self.cache_outcome = if found.is_some() { CacheOutcome::Hit } else { CacheOutcome::Miss };
        found
    }

    /// Keeps a paid-for answer for the cache's TTL.
    pub async fn remember<T: Serialize>(&mut self, key: &str, value: &T) {
        self.cache.put(key, value).await;
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
        let gate = match config.breaker.enabled() {
            true => Some(breaker::admit(&mut self.counters, &config.breaker, request.endpoint)?),
            false => None,
        };
        let first_try = self.calls.attempts.len();
        let result = client::call(&SpinTransport, &self.clock, &config.retry, deadline, request, &mut self.calls).await;
        if let Some(pass) = gate {
            breaker::settle(&mut self.counters, &config.breaker, pass, &self.calls.attempts[first_try..]);
        }
        let response = result.map_err(|e| UpstreamError::from(e).to_api_error())?;
        if let Some(error) = UpstreamError::from_answer(response.status, &response.body) {
            return Err(error.to_api_error());
        }
        ximilar::parse_envelope(&response.body).map_err(|e| e.to_api_error())
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
        let response = client::call(&SpinTransport, &self.clock, &policy, deadline, request, &mut self.calls).await?;
        if let Some(error) = UpstreamError::from_answer(response.status, &response.body) {
            return Err(error);
        }
        ximilar::parse_envelope(&response.body)
    }
}
