//! The thin layer that binds the pure modules to Spin. Data flows one way:
//! [`serve`] (the pipeline every request takes) owns the request's
//! [`Context`](context::Context) and hands it to an [`Endpoint`]; endpoints
//! reach the configuration, the stores and Ximilar only through it. What the
//! request did besides its answer comes back to the pipeline as one
//! [`Report`](report::Report), which it records, logs and times the request from.

mod breaker;
mod budget;
mod config;
mod context;
mod endpoint;
mod endpoints;
mod garment;
mod image_fetch;
mod report;
mod serve;
mod stores;
mod upstream;
mod wire;

pub use endpoint::Endpoint;
pub use endpoints::{Detect, Health, Metrics, Search, Tag};
pub use serve::serve;
