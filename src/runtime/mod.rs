//! The thin layer that binds the pure modules to Spin. Data flows one way:
//! [`serve`] (the pipeline every request takes) owns the request's
//! [`Context`](context::Context) and hands it to an [`Endpoint`]; endpoints
//! reach the configuration, the stores and Ximilar only through it.

mod breaker;
mod budget;
mod config;
mod context;
mod endpoint;
mod endpoints;
mod garment;
mod image_fetch;
mod serve;
mod stores;
mod upstream;
mod wire;

pub use endpoint::Endpoint;
pub use endpoints::{Detect, Health, Metrics, Search, Tag};
pub use serve::serve;
