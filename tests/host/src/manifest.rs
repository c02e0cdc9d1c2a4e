//! The subset of the Spin manifest (v2) that an HTTP application like ours uses:
//! `[application]`, `[variables]`, `[[trigger.http]]` and `[component.<id>]`.
//!
//! Anything this host cannot honour faithfully (inline components, remote sources,
//! other trigger types) is an error rather than silently ignored, so a test never
//! passes against a manifest Spin would run differently.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed `spin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory holding the manifest; component sources are relative to it.
    pub dir: PathBuf,
    pub name: String,
    /// Application variables, by name.
    pub variables: BTreeMap<String, VariableDecl>,
    /// HTTP triggers in file order (order matters for duplicate routes: the last wins).
    pub http_triggers: Vec<HttpTrigger>,
    /// Components, by id.
    pub components: BTreeMap<String, ComponentDecl>,
}

/// One `[variables]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry. Private routes (`route = { private = true }`) are kept
/// with `route == None`: they are reachable only through service chaining, which this host
/// does not implement.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: Option<String>,
    pub component: String,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub id: String,
    /// Absolute path of the component's Wasm file.
    pub source: PathBuf,
    /// Entries as written: they may be templates such as `"{{ api_url }}"`.
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// `sqlite_databases`: the database labels the component may open.
    pub sqlite_databases: Vec<String>,
    /// Component variable name -> template over application variables.
    pub variables: BTreeMap<String, String>,
    /// `environment`: variables the component sees through wasi:cli/environment.
    pub environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    allowed_http_hosts: Option<toml::Value>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Option<toml::Value>,
    // Fields Spin knows that do not change how this host runs the component.
    #[serde(flatten)]
    _rest: BTreeMap<String, toml::Value>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read manifest {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        Self::parse(&text, &dir).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses manifest text; `dir` is where relative component sources resolve.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version.as_integer() != Some(2) {
            bail!("only spin_manifest_version = 2 is supported");
        }

        for (name, decl) in &raw.variables {
            validate_variable_name(name)?;
            if decl.required && decl.default.is_some() {
                bail!("variable {name:?}: `required` and `default` are mutually exclusive");
            }
        }

        let mut http_triggers = Vec::new();
        for (kind, entries) in &raw.trigger {
            if kind != "http" {
                bail!("trigger type {kind:?} is not supported by the test host (HTTP only)");
            }
            for entry in entries {
                http_triggers.push(parse_http_trigger(entry)?);
            }
        }

        let mut components = BTreeMap::new();
        for (id, raw_c) in raw.component {
            let source = match &raw_c.source {
                // Canonical when it exists, so messages and caches see one spelling.
                toml::Value::String(s) => {
                    let p = dir.join(s);
                    p.canonicalize().unwrap_or(p)
                }
                _ => bail!("component {id:?}: only a local file `source` is supported"),
            };
            if raw_c.files.is_some() {
                bail!("component {id:?}: `files` (mounted files) is not supported by the test host");
            }
            if raw_c.allowed_http_hosts.is_some() {
                bail!("component {id:?}: `allowed_http_hosts` is gone in manifest v2; use allowed_outbound_hosts");
            }
            for (name, template) in &raw_c.variables {
                validate_variable_name(name).with_context(|| format!("component {id:?} variable"))?;
                for referenced in crate::variables::Template::parse(template)?.referenced() {
                    if !raw.variables.contains_key(referenced) {
                        bail!(
                            "component {id:?} variable {name:?} refers to unknown application variable {referenced:?}"
                        );
                    }
                }
            }
            components.insert(
                id.clone(),
                ComponentDecl {
                    id,
                    source,
                    allowed_outbound_hosts: raw_c.allowed_outbound_hosts,
                    key_value_stores: raw_c.key_value_stores,
                    sqlite_databases: raw_c.sqlite_databases,
                    variables: raw_c.variables,
                    environment: raw_c.environment,
                },
            );
        }

        for t in &http_triggers {
            if !components.contains_key(&t.component) {
                bail!("trigger refers to unknown component {:?}", t.component);
            }
        }

        Ok(Manifest {
            dir: dir.to_path_buf(),
            name: raw.application.name,
            variables: raw.variables,
            http_triggers,
            components,
        })
    }
}

fn parse_http_trigger(entry: &toml::Table) -> Result<HttpTrigger> {
    let component = match entry.get("component") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => {
            bail!("inline components in [[trigger.http]] are not supported; use component = \"id\"")
        }
        None => bail!("[[trigger.http]] without `component` (static responses are not supported)"),
    };
    let route = match entry.get("route") {
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(toml::Value::Table(t)) if t.get("private").and_then(toml::Value::as_bool) == Some(true) => None,
        _ => bail!("[[trigger.http]] for {component:?}: route must be a string or {{ private = true }}"),
    };
    Ok(HttpTrigger { route, component })
}

/// Spin's rule for variable names: words of lower-case ASCII letters and digits joined by
/// single underscores, every word starting with a letter (`image_host_1` is refused, as
/// Spin 4.0.2 refuses it when it parses the manifest).
pub fn validate_variable_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('_').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        bail!(
            "invalid variable name {name:?}: use words of lower-case letters and digits, each starting with a \
             letter, joined by single underscores"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
api_url = { default = "http://127.0.0.1:1" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/a"
component = "a"
[[trigger.http]]
route = { private = true }
component = "a"
[component.a]
source = "a.wasm"
allowed_outbound_hosts = ["{{ api_url }}"]
key_value_stores = ["default"]
sqlite_databases = ["default", "gateway"]
[component.a.build]
command = "true"
[component.a.variables]
url = "{{ api_url }}/x"
"#;

    #[test]
    fn parses_the_parts_the_host_uses() {
        let m = Manifest::parse(SAMPLE, Path::new("/tmp/app")).unwrap();
        assert_eq!(m.name, "demo");
        assert!(m.variables["token"].required);
        assert_eq!(m.http_triggers.len(), 2);
        assert_eq!(m.http_triggers[0].route.as_deref(), Some("/a"));
        assert_eq!(m.http_triggers[1].route, None);
        let a = &m.components["a"];
        assert_eq!(a.source, Path::new("/tmp/app/a.wasm"));
        assert_eq!(a.allowed_outbound_hosts, vec!["{{ api_url }}"]);
        assert_eq!(a.variables["url"], "{{ api_url }}/x");
        assert_eq!(a.sqlite_databases, vec!["default", "gateway"]);
        let without = SAMPLE.replace("sqlite_databases = [\"default\", \"gateway\"]\n", "");
        assert!(Manifest::parse(&without, Path::new("/")).unwrap().components["a"].sqlite_databases.is_empty());
    }

    #[test]
    fn rejects_unknown_template_variables_and_bad_names() {
        let bad = SAMPLE.replace("{{ api_url }}/x", "{{ nope }}");
        let err = Manifest::parse(&bad, Path::new("/")).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        assert!(validate_variable_name("Api").is_err());
        assert!(validate_variable_name("a__b").is_err());
        assert!(validate_variable_name("api_url2").is_ok());
        assert!(validate_variable_name("image_host_1").is_err(), "a word must start with a letter");
        assert!(validate_variable_name("image_host_a").is_ok());
        assert!(validate_variable_name("_a").is_err() && validate_variable_name("a_").is_err());
    }

    #[test]
    fn required_with_default_is_an_error() {
        let bad = SAMPLE.replace("required = true", "required = true, default = \"x\"");
        assert!(Manifest::parse(&bad, Path::new("/")).is_err());
    }
}
