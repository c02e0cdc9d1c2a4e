//! Self-tests of the test host, using the `forwarder` component (bench/forwarder) and the
//! mock Ximilar, so they do not depend on the product being finished.
//!
//! They need the forwarder built first; they build nothing themselves:
//!     cargo build --target wasm32-wasip2 --release -p forwarder

mod common;

mod audit;
mod kv;
mod mock;
mod outbound;
mod routing;
mod runtime;
mod sqlite;
mod variables;
