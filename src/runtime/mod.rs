//! The thin layer binding the pure modules to Spin: configuration from
//! variables, the request pipeline, the endpoints, and the stores.

mod config;
mod endpoints;
mod serve;
mod stores;
mod upstream;

pub use endpoints::{Detect, Health, Metrics, Search, Tag};
pub use serve::{serve, Endpoint, Handler};
