//! Crop mode's image step for `/search`: is the photo's host allowed, then the
//! garment cut out of the downloaded photo as JPEG. Every way it fails is the
//! caller's image, so none of them reaches Ximilar; each outcome is recorded
//! for `gateway_image_crops_total` and the image histograms.
//!
//! A photo is downloaded and decoded once for all its garments: when its
//! detection is in the cache, the garments it found are cut from the same
//! decode and left in the cache (a few slots of their own, two minutes) for the
//! searches the orchestrator sends for them next.

use std::time::Duration;

use super::breaker;
use super::context::Context;
use super::image_fetch::{self, FetchError};
use super::report::ImageStep;
use crate::cache::{self, CROP_TTL_MS};
use crate::config::{Config, SearchCrop};
use crate::contract::ApiError;
use crate::crop::{self, CropError};
use crate::mapping::DetectedItem;
use crate::metrics;
use crate::retry_loop::Clock;
use crate::upstream_request::XimilarCall;
use crate::urls::{Crop, ImageUrl};

/// The most other garments of a photo cut along with the one asked for.
const MAX_OTHERS: usize = 8;

/// Refuses a photo whose host is not an allowed image host, before anything is fetched.
pub fn refuse_unless_allowed(ctx: &mut Context, settings: &SearchCrop, url: &ImageUrl) -> Result<(), ApiError> {
    let allowed = url.source().parse::<http::Uri>().is_ok_and(|source| settings.hosts.allows(&source));
    if allowed {
        return Ok(());
    }
    let refused = FetchError::HostNotAllowed;
    ctx.record_image_step(ImageStep { outcome: refused.label(), fetch: Duration::ZERO, bytes: 0, crop: None });
    Err(refused.to_api_error(settings.max_bytes))
}

/// The garment in `b`, cut out of the photo at `source` and encoded as JPEG:
/// left by a search for another garment of the photo, or cut now. Nothing is
/// fetched while the breaker is open, and a decode starts only if even a slow
/// one ends before the deadline.
pub async fn jpeg(ctx: &mut Context, settings: &SearchCrop, source: &ImageUrl, b: Crop) -> Result<Vec<u8>, ApiError> {
    breaker::refuse_if_open(&mut ctx.counters, XimilarCall::VisualKnn).await?;
    if let Some(jpeg) = left_by_others(ctx, settings, source, b).await {
        return Ok(jpeg);
    }
    let config = ctx.config().await?;
    let others = other_garments(ctx, config, source, b).await;
    if others.is_empty() {
        return cut(ctx, settings, source, b, &[]).await;
    }
    // Searches for the photo's other garments may be arriving too: one of them
    // cuts them all, the others wait for it and take theirs from the cache.
    let mut mine = None;
    let shared = ctx
        .once_aside(&cache::photo_cuts_key(&settings.limits, source), async |ctx| {
            mine = Some(cut(ctx, settings, source, b, &others).await?);
            Ok(others.len())
        })
        .await;
    match mine {
        Some(jpeg) => Ok(jpeg),
        None => {
            shared?;
            match left_by_others(ctx, settings, source, b).await {
                Some(jpeg) => Ok(jpeg),
                None => cut(ctx, settings, source, b, &[]).await,
            }
        }
    }
}

/// The garment, if a search for another garment of the photo cut it already.
async fn left_by_others(ctx: &mut Context, settings: &SearchCrop, source: &ImageUrl, b: Crop) -> Option<Vec<u8>> {
    let key = cache::crop_key(&settings.limits, source, b);
    let jpeg = ctx.left_by_others::<String>(&key).await.and_then(|encoded| base64_decode(&encoded))?;
    ctx.record_image_step(ImageStep { outcome: metrics::CROP_REUSED, fetch: Duration::ZERO, bytes: 0, crop: None });
    Some(jpeg)
}

/// Downloads the photo and cuts `b` out of it, and `others` from the same
/// decode, which are left in the cache for the searches still to come.
async fn cut(
    ctx: &mut Context,
    settings: &SearchCrop,
    source: &ImageUrl,
    b: Crop,
    others: &[Crop],
) -> Result<Vec<u8>, ApiError> {
    let config = ctx.config().await?;
    let started = ctx.clock.now();
    let budget = ctx.remaining().min(config.retry.attempt_timeout);
    let mut bytes = 0;
    let fetched = image_fetch::fetch(source.as_str(), &settings.hosts, settings.max_bytes, budget, &mut bytes).await;
    let mut step = ImageStep { outcome: "ok", fetch: ctx.clock.now() - started, bytes, crop: None };
    let result = match fetched {
        Err(error) => {
            step.outcome = error.label();
            Err(error.to_api_error(settings.max_bytes))
        }
        Ok(image) => {
            let cropping = ctx.clock.now();
            let cropped = crop::crops_to_jpeg(&image, b, others, &settings.limits, ctx.remaining());
            if cropped.as_ref().err() != Some(&CropError::NoTime) {
                step.crop = Some(ctx.clock.now() - cropping);
            }
            match cropped {
                Ok((garment, rest)) => {
                    for (other, cut) in others.iter().zip(rest) {
                        if let Ok(cut) = cut {
                            let key = cache::crop_key(&settings.limits, source, *other);
                            ctx.leave_for_others(&key, &base64_encode(&cut.jpeg), CROP_TTL_MS).await;
                        }
                    }
                    Ok(garment.jpeg)
                }
                Err(error) => {
                    step.outcome = error.label();
                    Err(error.to_api_error(&settings.limits))
                }
            }
        }
    };
    ctx.record_image_step(step);
    result
}

/// The other garments Ximilar found in the photo, if its detection is cached
/// (it is when the orchestrator asked `/detect` first): their searches come next.
async fn other_garments(ctx: &mut Context, config: &Config, source: &ImageUrl, b: Crop) -> Vec<Crop> {
    let detected = ctx.left_by_others::<Vec<DetectedItem>>(&cache::detect_key(config, source)).await;
    let mut others: Vec<Crop> = Vec::new();
    for item in detected.unwrap_or_default() {
        let other = Crop::from_bbox(item.item.bbox);
        if other != b && !others.contains(&other) && others.len() < MAX_OTHERS {
            others.push(other);
        }
    }
    others
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
