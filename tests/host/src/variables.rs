//! Application and component variables, resolved the way Spin 4.0.2 resolves them.
//!
//! Precedence for an application variable (first that has a value wins):
//! 1. explicit overrides (`spin up --variable k=v`);
//! 2. the runtime config's `[[variables_provider]]` entries, in file order
//!    (`type = "env"`: `<PREFIX>_<NAME>` upper-cased, from the environment, then from its
//!    `dotenv_path`, which Spin resolves against the working directory, not the config file);
//! 3. Spin's always-present default provider: `SPIN_VARIABLE_<NAME>`, then `./.env`;
//! 4. the manifest `default`.
//!
//! A variable without a default that no provider resolves fails startup, naming it.
//! Component variables are templates over application variables; a component can read only
//! the names in its own `[component.<id>.variables]`.
//!
//! Unlike Spin, which asks the providers again on every `get`, everything is resolved once at
//! startup. The environment is an explicit map, so tests are hermetic.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, VariableDecl};

/// A `{{ name }}` template: literal text and variable references.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find("{{") {
                Some(0) => {
                    let Some(end) = rest.find("}}") else {
                        bail!("unmatched '{{{{' in template {text:?}");
                    };
                    parts.push(Part::Var(rest[2..end].trim().to_string()));
                    rest = &rest[end + 2..];
                }
                Some(i) => {
                    parts.push(Part::Lit(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    parts.push(Part::Lit(rest.to_string()));
                    rest = "";
                }
            }
        }
        Ok(Template { parts })
    }

    /// Names of the variables the template refers to.
    pub fn referenced(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Substitutes resolved application variables.
    pub fn render(&self, values: &HashMap<String, String>) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Var(v) => {
                    out.push_str(values.get(v).with_context(|| format!("unknown variable {v:?} in template"))?)
                }
            }
        }
        Ok(out)
    }
}

/// One source of variable values.
#[derive(Debug, Clone)]
pub enum Provider {
    /// `--variable k=v` (and the test API's explicit overrides).
    Explicit(HashMap<String, String>),
    /// `type = "env"`: `<prefix>_<NAME>` from the environment map, then from a dotenv file.
    Env { prefix: String, dotenv_path: Option<PathBuf> },
    /// `type = "static"` in the runtime config.
    Static(HashMap<String, String>),
}

/// What the env providers read: the environment and the directory relative dotenv paths
/// resolve against (Spin: the process working directory).
pub struct Environment<'a> {
    pub vars: &'a HashMap<String, String>,
    pub work_dir: &'a Path,
}

impl Provider {
    /// Spin's default provider, always consulted after the configured ones.
    pub fn spin_default() -> Provider {
        Provider::Env { prefix: "SPIN_VARIABLE".into(), dotenv_path: Some(PathBuf::from(".env")) }
    }

    fn lookup(&self, name: &str, env: &Environment, dotenv_cache: &mut DotenvCache) -> Result<Option<String>> {
        Ok(match self {
            Provider::Explicit(m) | Provider::Static(m) => m.get(name).cloned(),
            Provider::Env { prefix, dotenv_path } => {
                let key = format!("{prefix}_{}", name.to_ascii_uppercase());
                match env.vars.get(&key) {
                    Some(v) => Some(v.clone()),
                    None => match dotenv_path {
                        Some(p) => dotenv_cache.load(&env.work_dir.join(p))?.get(&key).cloned(),
                        None => None,
                    },
                }
            }
        })
    }
}

/// Dotenv files are read at most once per resolution, like Spin's per-provider cache.
#[derive(Default)]
struct DotenvCache(HashMap<PathBuf, HashMap<String, String>>);

impl DotenvCache {
    fn load(&mut self, path: &Path) -> Result<&HashMap<String, String>> {
        if !self.0.contains_key(path) {
            // A missing dotenv file is not an error in Spin: it just provides nothing.
            let parsed = match std::fs::read_to_string(path) {
                Ok(text) => parse_dotenv(&text).with_context(|| format!("invalid dotenv file {}", path.display()))?,
                Err(_) => HashMap::new(),
            };
            self.0.insert(path.to_path_buf(), parsed);
        }
        Ok(&self.0[path])
    }
}

/// A small dotenv reader: `KEY=value`, optional `export `, `#` comments, single- or
/// double-quoted values (double quotes understand `\n`, `\"` and `\\`).
pub fn parse_dotenv(text: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=VALUE", n + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            bail!("line {}: invalid key {key:?}", n + 1);
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"') {
            let Some(end) = inner.rfind('"') else {
                bail!("line {}: unterminated double quote", n + 1);
            };
            unescape_double(&inner[..end])
        } else if let Some(inner) = value.strip_prefix('\'') {
            let Some(end) = inner.rfind('\'') else {
                bail!("line {}: unterminated single quote", n + 1);
            };
            inner[..end].to_string()
        } else {
            // An unquoted value ends at a ` #` comment.
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        // Like dotenvy's iterator collected into a map: a later line wins.
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn unescape_double(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Resolves every application variable, or fails naming the required ones nobody provides.
pub fn resolve_app_variables(
    declared: &BTreeMap<String, VariableDecl>,
    providers: &[Provider],
    env: &Environment,
) -> Result<HashMap<String, String>> {
    let mut cache = DotenvCache::default();
    let mut values = HashMap::new();
    let mut missing = Vec::new();
    for (name, decl) in declared {
        let mut found = None;
        for p in providers {
            if let Some(v) = p.lookup(name, env, &mut cache)? {
                found = Some(v);
                break;
            }
        }
        match found.or_else(|| decl.default.clone()) {
            Some(v) => {
                values.insert(name.clone(), v);
            }
            None => missing.push(name.clone()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "no provider resolved required variable(s): {} (set them with --variable, the runtime config's variables providers, or SPIN_VARIABLE_<NAME>)",
            missing.join(", ")
        );
    }
    Ok(values)
}

/// Errors a component sees from `spin:variables/variables.get`, as Spin words them.
#[derive(Debug, Clone, PartialEq)]
pub enum VarError {
    InvalidName(String),
    Undefined(String),
}

/// The variables one component may read, already rendered.
#[derive(Debug, Default)]
pub struct ComponentVariables {
    component: String,
    values: HashMap<String, String>,
}

impl ComponentVariables {
    pub fn resolve(
        manifest: &Manifest,
        component: &str,
        app_values: &HashMap<String, String>,
    ) -> Result<ComponentVariables> {
        let decl = &manifest.components[component];
        let mut values = HashMap::new();
        for (name, template) in &decl.variables {
            let rendered = Template::parse(template)?.render(app_values)?;
            values.insert(name.clone(), rendered);
        }
        Ok(ComponentVariables { component: component.to_string(), values })
    }

    pub fn get(&self, name: &str) -> Result<String, VarError> {
        if crate::manifest::validate_variable_name(name).is_err() {
            return Err(VarError::InvalidName(format!("{name:?}")));
        }
        self.values
            .get(name)
            .cloned()
            .ok_or_else(|| VarError::Undefined(format!("no variable for {:?}.{name:?}", self.component)))
    }
}

// ---------------------------------------------------------------------------------------
// Host side of spin:variables/variables@3.0.0 (an async WIT function: it runs with an
// `Accessor`)

use crate::bindings::spin::variables::variables as wit;
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData};

/// Per-instance view: the component's own variables.
pub struct VarsCtx(pub Arc<ComponentVariables>);

/// The `HasData` marker the variables binding is registered with.
pub struct VarsHost;

impl HasData for VarsHost {
    type Data<'a> = &'a mut VarsCtx;
}

impl wit::Host for VarsCtx {}

impl wit::HostWithStore for VarsHost {
    async fn get<T>(acc: &Accessor<T, Self>, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        let vars = acc.with(|mut a| a.get().0.clone());
        Ok(vars.get(&name).map_err(|e| match e {
            VarError::InvalidName(m) => wit::Error::InvalidName(m),
            VarError::Undefined(m) => wit::Error::Undefined(m),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(default: Option<&str>) -> VariableDecl {
        VariableDecl { default: default.map(str::to_string), required: default.is_none(), ..Default::default() }
    }

    #[test]
    fn template_parses_and_renders() {
        let t = Template::parse("{{ a }}/x/{{b}}").unwrap();
        assert_eq!(t.referenced().collect::<Vec<_>>(), vec!["a", "b"]);
        let vals = HashMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        assert_eq!(t.render(&vals).unwrap(), "1/x/2");
        assert!(Template::parse("{{ a").is_err());
        assert_eq!(Template::parse("plain").unwrap().render(&HashMap::new()).unwrap(), "plain");
    }

    #[test]
    fn precedence_explicit_then_providers_in_order_then_default_provider_then_manifest() {
        let dir = std::env::temp_dir().join(format!("sth-vars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.env"), "XIMILAR_FROM_DOTENV=dotenv\nXIMILAR_SHADOWED=dotenv\n").unwrap();
        std::fs::write(dir.join(".env"), "SPIN_VARIABLE_DEFAULT_DOTENV=spin-dotenv\n").unwrap();

        let declared = BTreeMap::from([
            ("explicit".to_string(), decl(Some("manifest"))),
            ("shadowed".to_string(), decl(Some("manifest"))),
            ("from_dotenv".to_string(), decl(None)),
            ("default_dotenv".to_string(), decl(None)),
            ("spin_env".to_string(), decl(None)),
            ("untouched".to_string(), decl(Some("manifest"))),
        ]);
        let env_vars = HashMap::from([
            ("XIMILAR_EXPLICIT".to_string(), "env".to_string()),
            ("XIMILAR_SHADOWED".to_string(), "env".to_string()),
            ("SPIN_VARIABLE_SPIN_ENV".to_string(), "spin-env".to_string()),
        ]);
        let providers = vec![
            Provider::Explicit(HashMap::from([("explicit".into(), "cli".into())])),
            Provider::Env { prefix: "XIMILAR".into(), dotenv_path: Some("x.env".into()) },
            Provider::spin_default(),
        ];
        let env = Environment { vars: &env_vars, work_dir: &dir };
        let v = resolve_app_variables(&declared, &providers, &env).unwrap();
        assert_eq!(v["explicit"], "cli");
        assert_eq!(v["shadowed"], "env", "the environment beats the provider's dotenv");
        assert_eq!(v["from_dotenv"], "dotenv");
        assert_eq!(v["default_dotenv"], "spin-dotenv");
        assert_eq!(v["spin_env"], "spin-env");
        assert_eq!(v["untouched"], "manifest");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_required_variables_are_named() {
        let declared = BTreeMap::from([("api_token".to_string(), decl(None)), ("b".to_string(), decl(None))]);
        let env = Environment { vars: &HashMap::new(), work_dir: Path::new("/nonexistent") };
        let err = resolve_app_variables(&declared, &[Provider::spin_default()], &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("api_token") && msg.contains("b"), "{msg}");
    }

    #[test]
    fn dotenv_syntax() {
        let m = parse_dotenv("# c\nexport A=1\nB=\"two\\nlines\"\nC='lit #x'\nD=v # comment\n\nA=3\n").unwrap();
        assert_eq!(m["A"], "3");
        assert_eq!(m["B"], "two\nlines");
        assert_eq!(m["C"], "lit #x");
        assert_eq!(m["D"], "v");
        assert!(parse_dotenv("novalue\n").is_err());
    }

    #[test]
    fn component_sees_only_its_own_names() {
        let vars = ComponentVariables { component: "c".into(), values: HashMap::from([("a".into(), "1".into())]) };
        assert_eq!(vars.get("a"), Ok("1".into()));
        assert!(matches!(vars.get("b"), Err(VarError::Undefined(_))));
        assert!(matches!(vars.get("Bad-Name"), Err(VarError::InvalidName(_))));
    }
}
