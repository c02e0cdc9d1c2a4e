//! What an endpoint is to the pipeline: a name and a method, and an answer
//! computed from the request's context.

use serde::Serialize;

use super::context::Context;
use crate::contract::ApiError;

/// One endpoint. A trait (not a runtime switch) so each component links only
/// its own endpoint: the metrics component carries no outbound HTTP at all.
#[allow(async_fn_in_trait)]
pub trait Endpoint {
    /// The `handler` label of the metrics and the log line.
    const NAME: &'static str;
    /// The one method it answers; any other gets 405 with `Allow`.
    const METHOD: &'static str;
    /// Whether `http_requests_in_progress` counts it (`/metrics` would always read 1).
    const COUNTED_IN_FLIGHT: bool = true;
    /// When it needs a caller key (once `XIMILAR_INBOUND_KEYS` is set).
    const GUARD: Guard = Guard::Always;

    async fn answer(ctx: &mut Context) -> Result<Answer, ApiError>;
}

/// When an endpoint needs `Authorization: Bearer <key>`, once keys are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The endpoints that spend credits.
    Always,
    /// `/metrics`: only with `XIMILAR_INBOUND_PROTECT_METRICS=true`.
    WhenMetricsProtected,
    /// `/health`: probes must work without a key.
    Never,
}

/// A successful answer, before the pipeline adds its headers.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(value: &impl Serialize) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("answer serialises"),
        }
    }
}
