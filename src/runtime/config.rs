//! Configuration from Spin variables, read once per instance (Spin reuses
//! instances for many requests; variables do not change while it runs).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::config::{Config, Inbound, VARIABLES};

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

static INBOUND: OnceLock<Result<Inbound, String>> = OnceLock::new();

/// The inbound keys alone: what a component that only checks callers reads.
pub async fn inbound() -> Result<&'static Inbound, String> {
    if INBOUND.get().is_none() {
        let mut values = HashMap::new();
        for name in ["inbound_keys", "inbound_protect_metrics"] {
            if let Ok(value) = spin_sdk::variables::get(name).await {
                values.insert(name, value);
            }
        }
        let _ = INBOUND.set(Inbound::from_lookup(|name| values.get(name).cloned()));
    }
    INBOUND.get().expect("set above").as_ref().map_err(Clone::clone)
}
