//! Configuration from Spin variables, read once per instance (Spin reuses
//! instances for many requests; variables do not change while it runs).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::config::{Config, VARIABLES};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

pub async fn load() -> Result<&'static Config, String> {
    if CONFIG.get().is_none() {
        let mut values = HashMap::new();
        for name in VARIABLES {
            if let Ok(value) = spin_sdk::variables::get(name).await {
                values.insert(*name, value);
            }
        }
        let _ = CONFIG.set(Config::from_lookup(|name| values.get(name).cloned()));
    }
    CONFIG.get().expect("set above").as_ref().map_err(Clone::clone)
}
