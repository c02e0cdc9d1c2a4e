//! Configuration from Spin variables, read once per instance (Spin reuses
//! instances for many requests; variables do not change while it runs).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::config::{Config, Inbound, StateStore, VARIABLES};

static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();

pub async fn load() -> Result<&'static Config, String> {
    if CONFIG.get().is_none() {
        let values = read(VARIABLES).await;
        let _ = CONFIG.set(Config::from_lookup(|name| values.get(name).cloned()));
    }
    CONFIG.get().expect("set above").as_ref().map_err(Clone::clone)
}

static INBOUND: OnceLock<Result<Inbound, String>> = OnceLock::new();

/// The inbound keys alone: what a component that only checks callers reads.
pub async fn inbound() -> Result<&'static Inbound, String> {
    if INBOUND.get().is_none() {
        let values = read(&["inbound_keys", "inbound_protect_metrics"]).await;
        let _ = INBOUND.set(Inbound::from_lookup(|name| values.get(name).cloned()));
    }
    INBOUND.get().expect("set above").as_ref().map_err(Clone::clone)
}

/// The values of those of `names` this component is given (the others take their defaults).
async fn read(names: &[&'static str]) -> HashMap<&'static str, String> {
    let mut values = HashMap::new();
    for name in names {
        if let Ok(value) = spin_sdk::variables::get(name).await {
            values.insert(*name, value);
        }
    }
    values
}

static STATE_STORE: OnceLock<Result<StateStore, String>> = OnceLock::new();

/// Where the shared state lives: what every component reads first.
pub async fn state_store() -> Result<StateStore, String> {
    if STATE_STORE.get().is_none() {
        let values = read(&[StateStore::VARIABLE]).await;
        let _ = STATE_STORE.set(StateStore::parse(values.get(StateStore::VARIABLE).map(String::as_str)));
    }
    STATE_STORE.get().expect("set above").clone()
}
