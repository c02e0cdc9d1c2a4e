//! ximilar-gw: the gateway between the Recognition Orchestrator and the Ximilar
//! fashion API. The modules below are pure Rust (no Spin imports) and unit-tested
//! natively; `runtime` (feature `spin`) is the thin layer that binds them to Spin.

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod cache_control;
pub mod colors;
pub mod config;
pub mod contract;
pub mod crop;
pub mod image_hosts;
pub mod mapping;
pub mod metrics;
pub mod retry;
pub mod retry_loop;
pub mod server_timing;
pub mod tally;
pub mod upstream_error;
pub mod upstream_request;
pub mod urls;
pub mod ximilar;

#[cfg(feature = "spin")]
pub mod runtime;
