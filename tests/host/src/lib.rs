//! spin-test-host: TEST INFRASTRUCTURE, not the product.
//!
//! Runs built `wasm32-wasip2` Spin components under wasmtime 44 the way Spin 4.0.2 would
//! (routing, spin-* headers, variables, allowed_outbound_hosts, key-value, SQLite, WASIp3 HTTP), plus
//! a mock of the Ximilar API, and an audit of component imports against `wit/`.
//! See README.md for the public API.

mod accept;
pub mod audit;
mod bindings;
mod channel_stream;
pub mod client;
mod engine;
pub mod images;
pub mod kv;
mod logs;
pub mod manifest;
pub mod mock;
pub mod outbound;
pub mod routing;
pub mod runtime_config;
mod server;
pub mod sqlite_db;
pub mod sync_imports;
pub mod variables;

pub use audit::audit_component_imports;
pub use kv::{KvBackend, KvHandle};
pub use outbound::DeniedCall;
pub use server::{start_app, AppOptions, InstanceReuse, RunningApp, ShiftedWallClock};
pub use sqlite_db::{SqlValue, SqliteHandle, SqliteOpCounts};

/// The workspace root (`tests/host/../..`), for tests that locate manifests and wasm.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}
