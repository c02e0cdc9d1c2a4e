//! The parts of a Spin runtime config file (`--runtime-config-file`) the test host honours:
//! `[[variables_provider]]` (env and static), the `[key_value_store.<label>]` tables and the
//! `[sqlite_database.<label>]` tables.
//! A `type = "spin"` store becomes Spin's SQLite store (the file at `path`, resolved against
//! the runtime config's directory as Spin does, or memory without one); see `kv`.
//! A `type = "spin"` database is a local SQLite database (the file at `path`, or memory);
//! Spin resolves a relative database path against its working directory, not against the
//! runtime config, so `path` is kept as written here and resolved by `sqlite_db`.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::variables::Provider;

#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Configured providers, in file order (Spin's default provider is not included).
    pub variable_providers: Vec<Provider>,
    /// Key-value stores declared in the file, in file order. `default` always exists besides these.
    pub key_value_stores: Vec<KvStoreConfig>,
    /// SQLite databases declared in the file. `default` always exists besides these.
    pub sqlite_databases: Vec<SqliteDatabaseConfig>,
}

/// One `[key_value_store.<label>]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct KvStoreConfig {
    pub label: String,
    /// `spin`, `redis`, ...
    pub kind: String,
    /// For `spin`: the database file, already resolved; `None` = in memory.
    pub path: Option<PathBuf>,
}

/// One `[sqlite_database.<label>]` table of `type = "spin"` (the only type the host runs).
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteDatabaseConfig {
    pub label: String,
    /// The database file as written (relative or absolute); `None` = in memory.
    pub path: Option<PathBuf>,
    /// Spin's `allow_attach_file`: without it, `ATTACH` of a file is refused.
    pub allow_attach_file: bool,
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<RuntimeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let mut config = Self::parse(&text).with_context(|| format!("invalid runtime config {}", path.display()))?;
        // Like Spin: a relative store path is relative to the runtime config file.
        let dir = path.parent().unwrap_or(Path::new("."));
        for store in &mut config.key_value_stores {
            if let Some(p) = store.path.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        }
        Ok(config)
    }

    /// The labels, for checking a component's `key_value_stores`.
    pub fn key_value_labels(&self) -> Vec<String> {
        self.key_value_stores.iter().map(|s| s.label.clone()).collect()
    }

    pub fn parse(text: &str) -> Result<RuntimeConfig> {
        let table: toml::Table = toml::from_str(text)?;
        let mut config = RuntimeConfig::default();

        let providers = table.get("variables_provider").or_else(|| table.get("config_provider"));
        if let Some(providers) = providers {
            let Some(list) = providers.as_array() else {
                bail!("variables_provider must be an array of tables ([[variables_provider]])");
            };
            for p in list {
                config.variable_providers.push(parse_provider(p)?);
            }
        }

        if let Some(stores) = table.get("key_value_store") {
            let Some(stores) = stores.as_table() else {
                bail!("key_value_store must be a table of labels");
            };
            for (label, store) in stores {
                let kind = store.get("type").and_then(toml::Value::as_str).unwrap_or("");
                if kind.is_empty() {
                    bail!("key_value_store.{label} has no `type`");
                }
                let path = store.get("path").and_then(toml::Value::as_str).map(PathBuf::from);
                config.key_value_stores.push(KvStoreConfig { label: label.clone(), kind: kind.to_string(), path });
            }
        }

        if let Some(databases) = table.get("sqlite_database") {
            let Some(databases) = databases.as_table() else {
                bail!("sqlite_database must be a table of labels");
            };
            for (label, database) in databases {
                let database = parse_sqlite_database(database).with_context(|| format!("sqlite_database.{label}"))?;
                config.sqlite_databases.push(SqliteDatabaseConfig { label: label.clone(), ..database });
            }
        }
        Ok(config)
    }
}

/// A database table as Spin reads it: `type` first, then that type's fields, unknown
/// fields refused.
fn parse_sqlite_database(database: &toml::Value) -> Result<SqliteDatabaseConfig> {
    let Some(fields) = database.as_table() else { bail!("must be a table") };
    match fields.get("type").map(|t| t.as_str().context("`type` must be a string")).transpose()? {
        Some("spin") => {}
        Some("libsql") => bail!("type \"libsql\" (a remote database) is not supported by the test host"),
        Some(other) => bail!("Unknown database kind: {other}"),
        None => bail!("missing field `type`"),
    }
    let mut config = SqliteDatabaseConfig { label: String::new(), path: None, allow_attach_file: false };
    for (key, value) in fields {
        match key.as_str() {
            "type" => {}
            "path" => config.path = Some(PathBuf::from(value.as_str().context("`path` must be a string")?)),
            "allow_attach_file" => {
                config.allow_attach_file = value.as_bool().context("`allow_attach_file` must be a boolean")?
            }
            other => bail!("unknown field `{other}`, expected `path` or `allow_attach_file`"),
        }
    }
    Ok(config)
}

fn parse_provider(p: &toml::Value) -> Result<Provider> {
    let kind = p.get("type").and_then(toml::Value::as_str).unwrap_or("");
    match kind {
        "env" => {
            for key in p.as_table().into_iter().flat_map(|t| t.keys()) {
                if !matches!(key.as_str(), "type" | "prefix" | "dotenv_path") {
                    bail!("unknown field {key:?} in env variables provider");
                }
            }
            let prefix = p.get("prefix").and_then(toml::Value::as_str).unwrap_or("SPIN_VARIABLE").to_string();
            let dotenv_path = p.get("dotenv_path").and_then(toml::Value::as_str).map(PathBuf::from);
            Ok(Provider::Env { prefix, dotenv_path })
        }
        "static" => {
            let values = p
                .get("values")
                .and_then(toml::Value::as_table)
                .context("static variables provider needs `values`")?
                .iter()
                .map(|(k, v)| {
                    let v = v.as_str().with_context(|| format!("static value {k:?} must be a string"))?;
                    Ok((k.clone(), v.to_string()))
                })
                .collect::<Result<HashMap<_, _>>>()?;
            Ok(Provider::Static(values))
        }
        other => bail!("variables provider type {other:?} is not supported by the test host (env, static)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_projects_shape() {
        let c = RuntimeConfig::parse(
            r#"
[[variables_provider]]
type = "env"
prefix = "XIMILAR"
dotenv_path = ".env"
[[variables_provider]]
type = "static"
values = { a = "1" }
[key_value_store.cache]
type = "spin"
path = ".spin/cache.db"
[key_value_store.metrics]
type = "spin"
"#,
        )
        .unwrap();
        assert_eq!(c.key_value_labels(), vec!["cache", "metrics"]);
        assert_eq!(c.key_value_stores[0].path.as_deref(), Some(Path::new(".spin/cache.db")));
        assert_eq!((c.key_value_stores[1].kind.as_str(), c.key_value_stores[1].path.as_ref()), ("spin", None));
        assert!(matches!(&c.variable_providers[0], Provider::Env { prefix, dotenv_path }
            if prefix == "XIMILAR" && dotenv_path.as_deref() == Some(Path::new(".env"))));
        assert!(matches!(&c.variable_providers[1], Provider::Static(m) if m["a"] == "1"));
    }

    #[test]
    fn reads_sqlite_databases_with_and_without_a_path() {
        let c = RuntimeConfig::parse(
            r#"
[sqlite_database.gateway]
type = "spin"
path = "data/gateway.db"
[sqlite_database.scratch]
type = "spin"
allow_attach_file = true
"#,
        )
        .unwrap();
        assert_eq!(
            c.sqlite_databases,
            vec![
                SqliteDatabaseConfig {
                    label: "gateway".into(),
                    path: Some(PathBuf::from("data/gateway.db")),
                    allow_attach_file: false
                },
                SqliteDatabaseConfig { label: "scratch".into(), path: None, allow_attach_file: true },
            ]
        );
        assert!(RuntimeConfig::parse("").unwrap().sqlite_databases.is_empty());
    }

    #[test]
    fn sqlite_databases_spin_cannot_run_here_are_errors() {
        for (table, expected) in [
            ("type = \"libsql\"\nurl = \"https://x\"\ntoken = \"t\"", "libsql"),
            ("type = \"postgres\"", "Unknown database kind"),
            ("path = \"x.db\"", "missing field `type`"),
            ("type = \"spin\"\nfile = \"x.db\"", "unknown field `file`"),
        ] {
            let err = RuntimeConfig::parse(&format!("[sqlite_database.x]\n{table}\n")).unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{table}: {err:#}");
        }
    }

    #[test]
    fn unsupported_provider_is_an_error() {
        assert!(RuntimeConfig::parse("[[variables_provider]]\ntype = \"vault\"\n").is_err());
    }
}
