//! What a request did besides answering: Ximilar's tries, how the cache served
//! it, whether another request's call answered it, crop mode's image step. The
//! context fills it in as the endpoint works; the pipeline takes it once the
//! answer is ready and records, logs and times the request from it alone.

use std::time::Duration;

use crate::retry_loop::CallLog;

#[derive(Default)]
pub struct Report {
    /// Every try sent to Ximilar, and every retry.
    pub calls: CallLog,
    pub cache: CacheOutcome,
    /// When the answer served from the cache was stored (Unix ms), for `Age`.
    pub cached_at: Option<u64>,
    /// Answered by another request's identical call (counted in `gateway_coalesced_total`).
    pub coalesced: bool,
    pub image: Option<ImageStep>,
}

/// What crop mode's image step did, for the metrics.
pub struct ImageStep {
    /// `ok`, or what stopped it (a label of `gateway_image_crops_total`).
    pub outcome: &'static str,
    pub fetch: Duration,
    pub bytes: u64,
    /// Decode, crop and encode, when the download succeeded and there was time for it.
    pub crop: Option<Duration>,
}

/// How the cache served a request (a miss still counts when the call then failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheOutcome {
    #[default]
    NotUsed,
    Hit,
    Miss,
    /// The caller's `no-cache`: asked Ximilar afresh, and replaced the cached answer.
    Refresh,
}

impl CacheOutcome {
    /// The `x-cache` header, if the cache was consulted.
    pub fn header(self) -> Option<&'static str> {
        match self {
            CacheOutcome::NotUsed => None,
            CacheOutcome::Hit => Some("HIT"),
            CacheOutcome::Miss => Some("MISS"),
            CacheOutcome::Refresh => Some("REFRESH"),
        }
    }

    /// The log line's `cache` field.
    pub fn label(self) -> &'static str {
        match self {
            CacheOutcome::NotUsed => "none",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Refresh => "refresh",
        }
    }
}
