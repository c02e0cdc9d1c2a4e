//! Counts the calls an app's components make to synchronous WIT imports that Spin 4.0.2
//! implements as async host functions (wasmtime's `func_wrap_async`): `wasi:keyvalue`'s
//! store and atomics, and WASIp2 `wasi:io/streams` writes (Rust std's stderr). Such a call
//! keeps exclusive access to the instance's store until it returns, so every other request
//! of that instance waits, and wasmtime's HTTP handler meanwhile sends new requests to new
//! instances, each holding a fiber stack from the pool. Tests pin how many a request makes.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct SyncImports(Mutex<BTreeMap<&'static str, u64>>);

impl SyncImports {
    pub fn count(&self, import: &'static str) {
        *self.0.lock().unwrap().entry(import).or_default() += 1;
    }

    /// Calls so far, by import.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}
