//! End-to-end tests of the product: the built wasm components of spin.toml,
//! hosted as Spin 4.0.2 hosts them (tests/host), against a mock Ximilar.
//! Build the components first (scripts/test.sh does).

mod common;

mod auth;
mod cache;
mod cache_control;
mod coalescing;
mod concurrency;
mod contract;
mod credits;
mod crop;
mod faults;
mod imports;
mod metrics;
mod shutdown;
mod spend;
mod timing;
