//! The plain backend: a sorted map behind a mutex, with no blocking and no cost. Quick and
//! deterministic, but it cannot show what Spin's SQLite store does under concurrency; select
//! it with `KvBackend::Map` (or `SPIN_TEST_HOST_KV=map`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{KeyStream, StoreBackend, StoreError};

#[derive(Debug, Default)]
pub struct MapStore {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl StoreBackend for MapStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.lock().unwrap().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.data.lock().unwrap().insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.data.lock().unwrap().remove(key);
        Ok(())
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.data.lock().unwrap().keys().cloned().collect())
    }

    fn stream_keys(&self) -> KeyStream {
        let keys = self.data.lock().unwrap().keys().cloned().collect::<Vec<_>>();
        let (tx, rx) = mpsc::channel(keys.len().max(1));
        for key in keys {
            let _ = tx.try_send(key);
        }
        let (done_tx, done_rx) = oneshot::channel();
        let _ = done_tx.send(Ok(()));
        KeyStream { keys: rx, done: done_rx }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut data = self.data.lock().unwrap();
        let new = super::counter_value(key, data.get(key).map(Vec::as_slice))?.wrapping_add(delta);
        data.insert(key.to_string(), new.to_le_bytes().to_vec());
        Ok(new)
    }

    fn swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, StoreError> {
        let mut data = self.data.lock().unwrap();
        if let Some(expected) = expected {
            if data.get(key).map(Vec::as_slice) != Some(expected) {
                return Ok(false);
            }
        }
        data.insert(key.to_string(), value.to_vec());
        Ok(true)
    }

    fn clear(&self) {
        self.data.lock().unwrap().clear();
    }
}
