//! What each endpoint does, once the pipeline has checked the method and read
//! the body: validate, look in the cache, ask Ximilar, map, remember.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

use super::config;
use super::serve::{CacheUse, Endpoint, Exchange, Handler};
use super::stores::Cache;
use super::upstream::{SpinClock, SpinTransport};
use crate::cache;
use crate::client::{self, CallError, CallLog, Clock};
use crate::config::{Config, TagMode};
use crate::contract::{self, ApiError, DetectResponse, HealthResponse, SearchResponse, TagResponse};
use crate::mapping::{self, DetectedItem};
use crate::metrics;
use crate::retry::RetryPolicy;
use crate::urls::{self, ImageUrl};
use crate::ximilar::{self, UpstreamRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheOutcome {
    #[default]
    NotUsed,
    Hit,
    Miss,
}

pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn json(value: &impl Serialize) -> Answer {
        Answer { status: 200, content_type: "application/json", body: serde_json::to_vec(value).expect("answer serialises") }
    }
}

/// An endpoint that talks to Ximilar: configuration, deadline, cache, call log.
struct Ctx<'a> {
    config: &'static Config,
    request_id: &'a str,
    clock: &'a SpinClock,
    deadline: Duration,
    cache: Cache,
    cache_use: &'a mut CacheUse,
    log: &'a mut CallLog,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        self.cache_use.errors += self.cache.errors;
    }
}

impl<'a> Ctx<'a> {
    /// Loads the configuration and opens the cache; the deadline starts now.
    async fn open(x: &'a mut Exchange<'_>, cache_ttl: fn(&Config) -> Duration) -> Result<Ctx<'a>, ApiError> {
        let config = config::load().await.map_err(|why| ApiError::new(500, "config_error", why))?;
        if config.api_token.is_empty() {
            return Err(ApiError::new(500, "config_error", "XIMILAR_API_TOKEN is not set"));
        }
        Ok(Ctx {
            config,
            request_id: x.request_id,
            clock: x.clock,
            deadline: x.clock.now() + config.timeout,
            cache: Cache::open(cache_ttl(config)).await,
            cache_use: &mut x.cache,
            log: &mut x.log,
        })
    }

    /// A cached answer for `key`, counted as a hit or (when caching) a miss.
    async fn cached<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.cache.enabled() {
            return None;
        }
        let found = self.cache.get(key).await;
        self.cache_use.outcome = if found.is_some() { CacheOutcome::Hit } else { CacheOutcome::Miss };
        found
    }

    /// One Ximilar call with retries; returns the checked JSON envelope.
    async fn ximilar(&mut self, request: &UpstreamRequest) -> Result<Map<String, Value>, ApiError> {
        let response = client::call(&SpinTransport, self.clock, &self.config.retry, self.deadline, request, self.log)
            .await
            .map_err(|e| e.to_api_error())?;
        if let Some(error) = ximilar::status_error(response.status) {
            return Err(error);
        }
        ximilar::parse_envelope(&response.body)
    }
}

/// The endpoints, one type each (see [`Endpoint`]).
pub struct Detect;
pub struct Tag;
pub struct Search;
pub struct Health;
pub struct Metrics;

impl Endpoint for Detect {
    const HANDLER: Handler = Handler::Detect;
    async fn answer(x: &mut Exchange<'_>) -> Result<Answer, ApiError> {
        let body = x.body.clone();
        detect(&mut Ctx::open(x, |c| c.cache_ttl).await?, &body).await
    }
}

impl Endpoint for Tag {
    const HANDLER: Handler = Handler::Tag;
    async fn answer(x: &mut Exchange<'_>) -> Result<Answer, ApiError> {
        let body = x.body.clone();
        tag(&mut Ctx::open(x, |c| c.cache_ttl).await?, &body).await
    }
}

impl Endpoint for Search {
    const HANDLER: Handler = Handler::Search;
    async fn answer(x: &mut Exchange<'_>) -> Result<Answer, ApiError> {
        let body = x.body.clone();
        search(&mut Ctx::open(x, |c| c.cache_ttl).await?, &body).await
    }
}

impl Endpoint for Health {
    const HANDLER: Handler = Handler::Health;
    async fn answer(x: &mut Exchange<'_>) -> Result<Answer, ApiError> {
        let (reachable, answer) = {
            let mut ctx = Ctx::open(x, |c| c.health_cache).await?;
            health(&mut ctx).await
        };
        if let Some(reachable) = reachable {
            x.metrics.set_gauge(&metrics::reachable_key(), i64::from(reachable));
        }
        Ok(answer)
    }
}

impl Endpoint for Metrics {
    const HANDLER: Handler = Handler::Metrics;
    async fn answer(x: &mut Exchange<'_>) -> Result<Answer, ApiError> {
        let entries = x
            .metrics
            .read_all()
            .map_err(|_| ApiError::new(503, "metrics_unavailable", "the metrics store is not available"))?;
        Ok(Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(&entries).into_bytes(),
        })
    }
}

async fn detect(ctx: &mut Ctx<'_>, body: &[u8]) -> Result<Answer, ApiError> {
    let request = contract::parse_image_request(body)?;
    let detected = detection(ctx, &source_of(&request.url)).await?;
    Ok(Answer::json(&DetectResponse { items: detected.into_iter().map(|d| d.item).collect() }))
}

/// Every garment of a photo with its tags: from the cache, or from one
/// `detect_tags` call whose answer is stored as one entry (one write), from
/// which `/detect` repeats and `/tag` of any crop of the photo are answered.
async fn detection(ctx: &mut Ctx<'_>, source: &ImageUrl) -> Result<Vec<DetectedItem>, ApiError> {
    let key = cache::detect_key(source);
    if let Some(hit) = ctx.cached(&key).await {
        return Ok(hit);
    }
    let request = ximilar::detect_tags(ctx.config, ctx.request_id, source.as_str());
    let envelope = ctx.ximilar(&request).await?;
    let items = mapping::detected_items(ximilar::single_record(&envelope)?, source.as_str());
    ctx.cache.put(&key, &items).await;
    Ok(items)
}

async fn tag(ctx: &mut Ctx<'_>, body: &[u8]) -> Result<Answer, ApiError> {
    let request = contract::parse_image_request(body)?;
    // A crop is answered from its photo's detection (cached, or detected now):
    // the garment whose box fills the crop best, whether or not the caller's
    // box is byte-identical to a `crop_url` that `/detect` returned.
    if let Some(crop) = request.url.crop() {
        let detected = detection(ctx, &source_of(&request.url)).await?;
        let item = mapping::item_for_crop(&detected, crop).ok_or_else(|| {
            ApiError::invalid("crop_not_found", "Ximilar found no garment matching the crop in the image")
        })?;
        return Ok(Answer::json(&item.tags));
    }
    let key = cache::tag_key(&request.url);
    if let Some(hit) = ctx.cached::<TagResponse>(&key).await {
        return Ok(Answer::json(&hit));
    }
    let upstream = ximilar::tag(ctx.config, ctx.request_id, request.url.source());
    let envelope = ctx.ximilar(&upstream).await?;
    let record = ximilar::single_record(&envelope)?;
    let tags = match ctx.config.tag_mode {
        TagMode::Fashion => mapping::tag_record(record),
        TagMode::Classify { .. } => mapping::classify_record(record),
    };
    ctx.cache.put(&key, &tags).await;
    Ok(Answer::json(&tags))
}

async fn search(ctx: &mut Ctx<'_>, body: &[u8]) -> Result<Answer, ApiError> {
    let request = contract::parse_search_request(body)?;
    if ctx.config.collection_id.is_empty() {
        return Err(ApiError::new(503, "not_configured", "search is not configured: XIMILAR_COLLECTION_ID is not set"));
    }
    let key = cache::search_key(&request.crop_url, request.category.as_deref(), request.top_k);
    if let Some(hit) = ctx.cached::<SearchResponse>(&key).await {
        return Ok(Answer::json(&hit));
    }
    let upstream = ximilar::visual_knn(
        ctx.config,
        ctx.request_id,
        request.crop_url.source(),
        request.top_k,
        request.category.as_deref(),
    );
    let envelope = ctx.ximilar(&upstream).await?;
    let response = SearchResponse { candidates: mapping::candidates(&envelope, request.top_k as usize) };
    ctx.cache.put(&key, &response).await;
    Ok(Answer::json(&response))
}

/// One credit-free, authenticated probe with a short timeout and no retries;
/// its result is kept for `health_cache_s` so frequent checks stay cheap.
/// Returns the probe's verdict (`None` when answered from the cache).
async fn health(ctx: &mut Ctx<'_>) -> (Option<bool>, Answer) {
    if let Some(hit) = ctx.cache.get::<HealthResponse>(cache::HEALTH_KEY).await {
        return (None, Answer::json(&hit));
    }
    let probe = ximilar::account_details(ctx.config, ctx.request_id);
    let policy = RetryPolicy { max_retries: 0, attempt_timeout: ctx.config.health_timeout, ..ctx.config.retry.clone() };
    let deadline = ctx.clock.now() + ctx.config.health_timeout;
    let reason = match client::call(&SpinTransport, ctx.clock, &policy, deadline, &probe, ctx.log).await {
        Ok(response) if (200..300).contains(&response.status) => match ximilar::parse_envelope(&response.body) {
            Ok(_) => None,
            Err(_) => Some("malformed_response".to_string()),
        },
        Ok(response) if matches!(response.status, 401 | 403) => Some("unauthorized".into()),
        Ok(response) => Some(format!("http_{}", response.status)),
        Err(CallError::Deadline) => Some("timeout".into()),
        Err(CallError::Exhausted { last, .. }) => Some(match last.label() {
            "timeout" | "504" => "timeout".to_string(),
            "connect" => "connect_error".to_string(),
            status => format!("http_{status}"),
        }),
        Err(CallError::Transport(_)) => Some("unreachable".into()),
    };
    let response = HealthResponse { status: "ok".into(), ximilar_reachable: reason.is_none(), reason };
    ctx.cache.put(cache::HEALTH_KEY, &response).await;
    (Some(response.ximilar_reachable), Answer::json(&response))
}

/// The image itself, without any crop fragment.
fn source_of(url: &ImageUrl) -> ImageUrl {
    urls::parse_image_url(url.source()).expect("the source of a valid URL is valid")
}
