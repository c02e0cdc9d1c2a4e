//! Crop mode's image step for `/search`: is the photo's host allowed, then the
//! garment cut out of the downloaded photo as JPEG. Every way it fails is the
//! caller's image, so none of them reaches Ximilar; each outcome is recorded
//! for `gateway_image_crops_total` and the image histograms.

use std::time::Duration;

use super::breaker;
use super::context::{Context, ImageStep};
use super::image_fetch::{self, FetchError};
use crate::config::SearchCrop;
use crate::contract::ApiError;
use crate::crop::{self, CropError};
use crate::retry_loop::Clock;
use crate::upstream_request::XimilarCall;
use crate::urls::{Crop, ImageUrl};

/// Refuses a photo whose host is not an allowed image host, before anything is fetched.
pub fn refuse_unless_allowed(ctx: &mut Context, settings: &SearchCrop, url: &ImageUrl) -> Result<(), ApiError> {
    let allowed = url.source().parse::<http::Uri>().is_ok_and(|source| settings.hosts.allows(&source));
    if allowed {
        return Ok(());
    }
    let refused = FetchError::HostNotAllowed;
    ctx.image = Some(ImageStep { outcome: refused.label(), fetch: Duration::ZERO, bytes: 0, crop: None });
    Err(refused.to_api_error(settings.max_bytes))
}

/// The garment in `b`, cut out of the photo at `source` and encoded as JPEG.
/// Nothing is fetched while the breaker is open, and a decode starts only if
/// even a slow one ends before the deadline.
pub async fn jpeg(ctx: &mut Context, settings: &SearchCrop, source: &ImageUrl, b: Crop) -> Result<Vec<u8>, ApiError> {
    breaker::refuse_if_open(&mut ctx.counters, XimilarCall::VisualKnn).await?;
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
            let cropped = crop::crop_to_jpeg(&image, b, &settings.limits, ctx.remaining());
            if cropped.as_ref().err() != Some(&CropError::NoTime) {
                step.crop = Some(ctx.clock.now() - cropping);
            }
            cropped.map(|garment| garment.jpeg).map_err(|error| {
                step.outcome = error.label();
                error.to_api_error(&settings.limits)
            })
        }
    };
    ctx.image = Some(step);
    result
}
