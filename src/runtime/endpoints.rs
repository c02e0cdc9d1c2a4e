//! What each endpoint does once the pipeline has checked the method and read
//! the body: validate, look in the cache, ask Ximilar, map, remember.

use super::breaker;
use super::config;
use super::context::Context;
use super::endpoint::{Answer, Endpoint, Guard};
use super::garment;
use super::report::CacheOutcome;
use super::stores::now_ms;
use crate::auth;
use crate::breaker::State;
use crate::cache;
use crate::config::{Config, TagMode};
use crate::contract::{self, ApiError, DetectResponse, HealthResponse, SearchResponse, TagResponse};
use crate::mapping::{self, DetectedItem};
use crate::metrics;
use crate::urls::ImageUrl;
use crate::ximilar::{self, QueryImage};

pub struct Detect;
pub struct Tag;
pub struct Search;
pub struct Health;
pub struct Metrics;

impl Endpoint for Detect {
    const NAME: &'static str = "detect";
    const METHOD: &'static str = "POST";

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError> {
        let config = ctx.config().await?;
        ctx.use_cache(config.cache_ttl).await;
        let request = contract::parse_image_request(&ctx.body)?;
        let detected = detection(ctx, &request.url.source_url()).await?;
        Ok(Answer::json(&DetectResponse { items: detected.into_iter().map(|d| d.item).collect() }))
    }
}

impl Endpoint for Tag {
    const NAME: &'static str = "tag";
    const METHOD: &'static str = "POST";

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError> {
        let config = ctx.config().await?;
        ctx.use_cache(config.cache_ttl).await;
        let request = contract::parse_image_request(&ctx.body)?;
        // A crop is answered from its photo's detection (cached, or detected now):
        // the garment whose box fills the crop best, whether or not the caller's
        // box is byte-identical to a `crop_url` that `/detect` returned.
        if let Some(crop) = request.url.crop() {
            let detected = detection(ctx, &request.url.source_url()).await?;
            let item = mapping::item_for_crop(&detected, crop).ok_or_else(|| {
                ApiError::invalid("crop_not_found", "Ximilar found no garment matching the crop in the image")
            })?;
            return Ok(Answer::json(&item.tags));
        }
        let key = cache::tag_key(config, &request.url);
        let tags = ctx.once(&key, async |ctx| tag_upstream(ctx, config, &request.url).await).await?;
        Ok(Answer::json(&tags))
    }
}

impl Endpoint for Search {
    const NAME: &'static str = "search";
    const METHOD: &'static str = "POST";

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError> {
        let config = ctx.config().await?;
        ctx.use_cache(config.cache_ttl).await;
        let request = contract::parse_search_request(&ctx.body)?;
        if config.collection_id.is_empty() {
            return Err(ApiError::new(
                503,
                "not_configured",
                "search is not configured: XIMILAR_COLLECTION_ID is not set",
            ));
        }
        // Crop mode sends the garment itself; otherwise (or for a whole photo) its URL.
        let crop = config.search_crop.as_ref().zip(request.crop_url.crop());
        if let Some((settings, _)) = crop {
            garment::refuse_unless_allowed(ctx, settings, &request.crop_url)?;
        }
        let source = request.crop_url.source_url();
        let key = cache::search_key(config, &request.crop_url, request.category.as_deref(), request.top_k);
        let found = ctx
            .once(&key, async |ctx| {
                let garment = match crop {
                    Some((settings, b)) => Some(garment::jpeg(ctx, settings, &source, b).await?),
                    None => None,
                };
                let query = match &garment {
                    Some(jpeg) => QueryImage::Inline(jpeg),
                    None => QueryImage::Url(source.as_str()),
                };
                let category = request.category.as_deref();
                let upstream = ximilar::visual_knn(config, &ctx.request_id, query, request.top_k, category);
                let envelope = ctx.ximilar(&upstream).await?;
                Ok(SearchResponse { candidates: mapping::candidates(&envelope, request.top_k as usize) })
            })
            .await?;
        Ok(Answer::json(&found))
    }
}

/// One credit-free, authenticated probe with a short timeout and no retries;
/// its result is kept for `health_cache_s` so frequent checks stay cheap, and
/// each fresh verdict sets the `ximilar_reachable` gauge.
impl Endpoint for Health {
    const NAME: &'static str = "health";
    const METHOD: &'static str = "GET";
    const GUARD: Guard = Guard::Never;

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError> {
        let config = ctx.config().await?;
        ctx.use_cache(config.health_cache).await;
        let key = cache::health_key(config);
        let mut response = ctx.once(&key, async |ctx| Ok(probe(ctx, config).await)).await?;
        // A cached verdict may be reused, but the breaker's state is read fresh
        // (a probe made just now has read it already).
        if ctx.cache_outcome() == CacheOutcome::Hit {
            response.breaker = Some(breaker::state(&mut ctx.counters).await.label().into());
        }
        Ok(Answer::json(&response))
    }
}

/// The health probe's verdict, and the gauges it feeds.
async fn probe(ctx: &mut Context, config: &Config) -> HealthResponse {
    let probe = ximilar::account_details(config, &ctx.request_id);
    let verdict = ctx.probe(&probe, &config.retry, config.health_timeout).await;
    if let Ok(account) = &verdict {
        // What the account has spent and may spend, for dashboards and the 90 % alert.
        let credits = |field| account.get(field).and_then(serde_json::Value::as_i64);
        if let Some(used) = credits("credits_counter") {
            ctx.counters.set_gauge(&metrics::credits_used_key(), used).await;
        }
        if let Some(limit) = credits("credits_limit") {
            ctx.counters.set_gauge(&metrics::credits_limit_key(), limit).await;
        }
    }
    let reason = verdict.err().map(|e| e.health_reason());
    let breaker = breaker::state(&mut ctx.counters).await;
    ctx.counters.set_gauge(&metrics::breaker_open_key(), i64::from(breaker != State::Closed)).await;
    let response = HealthResponse {
        status: "ok".into(),
        ximilar_reachable: reason.is_none(),
        reason,
        breaker: Some(breaker.label().into()),
    };
    ctx.counters.set_gauge(&metrics::reachable_key(), i64::from(response.ximilar_reachable)).await;
    response
}

impl Endpoint for Metrics {
    const NAME: &'static str = "metrics";
    const METHOD: &'static str = "GET";
    const COUNTED_IN_FLIGHT: bool = false;
    const GUARD: Guard = Guard::WhenMetricsProtected;

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError> {
        let mut entries = ctx
            .counters
            .read_all()
            .await
            .map_err(|_| ApiError::new(503, "metrics_unavailable", "the metrics store is not available"))?;
        entries.extend(budgets(&entries).await);
        Ok(Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(&entries).into_bytes(),
        })
    }
}

/// Each budgeted caller's daily budget and what it has reserved of today's, for
/// dashboards: the budgets come from the configuration, the spending from the
/// day's reservation counters among `stored`.
async fn budgets(stored: &[(String, i64)]) -> Vec<(String, i64)> {
    let Ok(inbound) = config::inbound().await else { return Vec::new() };
    let today = now_ms();
    inbound
        .callers
        .iter()
        .filter_map(|caller| Some((caller.name.as_str(), caller.budget?)))
        .flat_map(|(name, budget)| {
            let key = auth::budget_key(name, today);
            let spent = stored.iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| *v);
            [
                (metrics::caller_budget_key(name), budget.min(i64::MAX as u64) as i64),
                (metrics::caller_budget_spent_key(name), spent),
            ]
        })
        .collect()
}

/// Every garment of a photo with its tags: from the cache, or from one
/// `detect_tags` call whose answer is stored as one entry (one write), from
/// which `/detect` repeats and `/tag` of any crop of the photo are answered.
async fn detection(ctx: &mut Context, source: &ImageUrl) -> Result<Vec<DetectedItem>, ApiError> {
    let config = ctx.config().await?;
    let key = cache::detect_key(config, source);
    ctx.once(&key, async |ctx| detect_upstream(ctx, config, source).await).await
}

async fn detect_upstream(ctx: &mut Context, config: &Config, source: &ImageUrl) -> Result<Vec<DetectedItem>, ApiError> {
    let request = ximilar::detect_tags(config, &ctx.request_id, source.as_str());
    let envelope = ctx.ximilar(&request).await?;
    let record = ximilar::single_record(&envelope).map_err(|e| e.to_api_error())?;
    Ok(mapping::detected_items(record, source.as_str()))
}

/// `/tag` of a whole image: the fashion tagger, or the custom classifier.
async fn tag_upstream(ctx: &mut Context, config: &Config, url: &ImageUrl) -> Result<TagResponse, ApiError> {
    let upstream = ximilar::tag(config, &ctx.request_id, url.source());
    let envelope = ctx.ximilar(&upstream).await?;
    let record = ximilar::single_record(&envelope).map_err(|e| e.to_api_error())?;
    Ok(match config.tag_mode {
        TagMode::Fashion => mapping::tag_record(record),
        TagMode::Classify { .. } => mapping::classify_record(record),
    })
}
