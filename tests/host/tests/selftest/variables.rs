//! Variables: Spin's provider precedence, required variables, and per-component scoping.

use crate::common::*;
use spin_test_host::client;
use spin_test_host::start_app;
use std::collections::HashMap;

const VARS_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "vars"
[variables]
from_cli = { default = "manifest" }
from_env = { default = "manifest" }
env_beats_dotenv = { default = "manifest" }
from_dotenv = { default = "manifest" }
from_spin_env = { default = "manifest" }
from_spin_dotenv = { default = "manifest" }
from_manifest = { default = "manifest" }
api_token = { required = true, secret = true }
[[trigger.http]]
route = "/a/..."
component = "a"
[[trigger.http]]
route = "/b/..."
component = "b"
[component.a]
source = "{wasm}"
[component.a.variables]
from_cli = "{{ from_cli }}"
from_env = "{{ from_env }}"
env_beats_dotenv = "{{ env_beats_dotenv }}"
from_dotenv = "{{ from_dotenv }}"
from_spin_env = "{{ from_spin_env }}"
from_spin_dotenv = "{{ from_spin_dotenv }}"
from_manifest = "{{ from_manifest }}"
composed = "pre-{{ from_cli }}-{{from_manifest}}-post"
token = "{{ api_token }}"
[component.b]
source = "{wasm}"
[component.b.variables]
only_b = "{{ from_manifest }}"
"#;

const RUNTIME_CONFIG: &str = r#"
[[variables_provider]]
type = "env"
prefix = "XIMILAR"
dotenv_path = "ximilar.env"
"#;

async fn var(app: &spin_test_host::RunningApp, component: &str, name: &str) -> (u16, String) {
    let reply = client::get(&format!("{}/{component}/_test/var/{name}", app.base_url())).await.unwrap();
    (reply.status.as_u16(), reply.text())
}

#[tokio::test]
async fn precedence_cli_then_runtime_config_providers_then_spin_default_then_manifest() {
    let dir = TempDir::new("vars");
    dir.write(
        "ximilar.env",
        "XIMILAR_FROM_DOTENV=ximilar-dotenv\nXIMILAR_ENV_BEATS_DOTENV=ximilar-dotenv\nXIMILAR_FROM_CLI=ximilar-dotenv\n",
    );
    dir.write(".env", "SPIN_VARIABLE_FROM_SPIN_DOTENV=spin-dotenv\nSPIN_VARIABLE_FROM_DOTENV=spin-dotenv\n");
    let mut opts = options(&dir, write_manifest(&dir, VARS_APP));
    opts.runtime_config = Some(dir.write("runtime-config.toml", RUNTIME_CONFIG));
    opts.variables.insert("from_cli".into(), "cli".into());
    opts.env = HashMap::from([
        ("XIMILAR_FROM_CLI".to_string(), "ximilar-env".to_string()),
        ("XIMILAR_FROM_ENV".to_string(), "ximilar-env".to_string()),
        ("XIMILAR_ENV_BEATS_DOTENV".to_string(), "ximilar-env".to_string()),
        ("XIMILAR_API_TOKEN".to_string(), "secret".to_string()),
        ("SPIN_VARIABLE_FROM_SPIN_ENV".to_string(), "spin-env".to_string()),
        ("SPIN_VARIABLE_FROM_ENV".to_string(), "spin-env".to_string()),
    ]);
    let app = start_app(opts).await.unwrap();

    let expected = [
        ("from_cli", "cli"),
        ("from_env", "ximilar-env"),
        ("env_beats_dotenv", "ximilar-env"),
        ("from_dotenv", "ximilar-dotenv"),
        ("from_spin_env", "spin-env"),
        ("from_spin_dotenv", "spin-dotenv"),
        ("from_manifest", "manifest"),
        ("composed", "pre-cli-manifest-post"),
        ("token", "secret"),
    ];
    for (name, value) in expected {
        assert_eq!(var(&app, "a", name).await, (200, value.to_string()), "variable {name}");
    }
}

#[tokio::test]
async fn a_component_reads_only_its_own_variables() {
    let dir = TempDir::new("scope");
    let mut opts = options(&dir, write_manifest(&dir, VARS_APP));
    opts.variables.insert("api_token".into(), "t".into());
    let app = start_app(opts).await.unwrap();

    assert_eq!(var(&app, "b", "only_b").await, (200, "manifest".to_string()));
    let (status, body) = var(&app, "b", "token").await;
    assert_eq!(status, 404);
    assert!(body.contains("Undefined"), "{body}");
    // Application variables are not component variables: `a` maps `api_token` as `token`.
    let (status, body) = var(&app, "a", "api_token").await;
    assert_eq!(status, 404);
    assert!(body.contains("Undefined"), "{body}");
    let (status, body) = var(&app, "a", "Not-Valid").await;
    assert_eq!(status, 404);
    assert!(body.contains("InvalidName"), "{body}");
}

#[tokio::test]
async fn a_missing_required_variable_fails_startup_naming_it() {
    let dir = TempDir::new("required");
    let opts = options(&dir, write_manifest(&dir, VARS_APP));
    let err = start_app(opts).await.err().expect("startup must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("api_token"), "{msg}");
    assert!(msg.contains("required"), "{msg}");
}

#[tokio::test]
async fn the_environment_map_is_the_only_environment() {
    // Take a variable that really is in this process's environment, shaped PREFIX_NAME, and
    // declare an app variable that an env provider with that prefix would find there. With an
    // empty env map, startup must still fail: the host must not read the process environment.
    let (key, _) = std::env::vars()
        .find(|(k, _)| {
            let Some((prefix, name)) = k.split_once('_') else {
                return false;
            };
            !prefix.is_empty()
                && prefix.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && spin_test_host::manifest::validate_variable_name(&name.to_ascii_lowercase()).is_ok()
                && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .expect("precondition: some PREFIX_NAME variable in the process environment");
    let (prefix, name) = key.split_once('_').unwrap();
    let name = name.to_ascii_lowercase();
    let dir = TempDir::new("hermetic");
    let manifest = write_manifest(
        &dir,
        &format!(
            r#"
spin_manifest_version = 2
[application]
name = "hermetic"
[variables]
{name} = {{ required = true }}
[[trigger.http]]
route = "/..."
component = "a"
[component.a]
source = "{{wasm}}"
"#
        ),
    );
    let mut opts = options(&dir, manifest);
    opts.runtime_config =
        Some(dir.write("rc.toml", &format!("[[variables_provider]]\ntype = \"env\"\nprefix = \"{prefix}\"\n")));
    let err = start_app(opts.clone()).await.err().expect("the process environment leaked in");
    assert!(format!("{err:#}").contains(&name), "{err:#}");

    // And the map is read: the same app starts when the map has the value.
    opts.env.insert(key.clone(), "from-map".into());
    let app = start_app(opts).await.unwrap();
    assert_eq!(app.variable(&name).as_deref(), Some("from-map"));
}
