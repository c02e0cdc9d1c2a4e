//! spin.toml against the code: least capability per component, and every
//! variable the code reads is declared (a typo would silently become a default).

use std::collections::BTreeSet;
use toml::Value;

fn manifest() -> toml::Table {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")).unwrap();
    text.parse().unwrap()
}

fn component<'a>(m: &'a toml::Table, name: &str) -> &'a toml::Table {
    m["component"][name].as_table().unwrap_or_else(|| panic!("no component {name}"))
}

fn variables_of(c: &toml::Table) -> BTreeSet<String> {
    c.get("variables").and_then(Value::as_table).map(|t| t.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn one_component_per_endpoint_with_a_build_command() {
    let m = manifest();
    let routes: Vec<(String, String)> = m["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["route"].as_str().unwrap().to_string(), t["component"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> =
        ["detect", "tag", "search", "health", "metrics"].iter().map(|c| (format!("/{c}"), c.to_string())).collect();
    assert_eq!(routes, expected);
    for (_, name) in &routes {
        let c = component(&m, name);
        let build = c["build"]["command"].as_str().unwrap();
        assert_eq!(build, format!("cargo build --target wasm32-wasip2 --release -p {name}"));
        assert_eq!(c["source"].as_str().unwrap(), format!("target/wasm32-wasip2/release/{name}.wasm"));
    }
}

#[test]
fn metrics_component_has_no_token_and_no_outbound_host() {
    let m = manifest();
    let metrics = component(&m, "metrics");
    assert!(metrics.get("allowed_outbound_hosts").is_none());
    // Only what checking a caller's key and finding the counters need: no token, no Ximilar setting.
    let expected: BTreeSet<String> =
        ["inbound_keys", "inbound_protect_metrics", "state_store"].map(String::from).into();
    assert_eq!(variables_of(metrics), expected);
    assert_eq!(metrics["key_value_stores"].as_array().unwrap(), &vec![Value::from("metrics")]);
}

#[test]
fn every_component_finds_the_state_wherever_it_is_kept() {
    let m = manifest();
    assert_eq!(m["variables"]["state_store"]["default"].as_str(), Some("key-value"));
    for name in ["detect", "tag", "search", "health", "metrics"] {
        let c = component(&m, name);
        assert!(variables_of(c).contains("state_store"), "{name}");
        assert_eq!(c["sqlite_databases"].as_array().unwrap(), &vec![Value::from("gateway")], "{name}");
    }
}

#[test]
fn only_ximilar_callers_get_the_token_and_host_and_only_search_the_collection() {
    let m = manifest();
    for name in ["detect", "tag", "search", "health"] {
        let c = component(&m, name);
        let hosts = c["allowed_outbound_hosts"].as_array().unwrap();
        assert_eq!(hosts[0], Value::from("{{ api_url }}"), "{name}");
        // Besides Ximilar, only search may reach the image hosts of crop mode.
        let image_hosts: Vec<Value> =
            ximilar_gw::config::IMAGE_HOST_VARIABLES.iter().map(|v| Value::from(format!("{{{{ {v} }}}}"))).collect();
        let expected = if name == "search" { image_hosts } else { vec![] };
        assert_eq!(hosts[1..], expected[..], "{name}");
        assert!(variables_of(c).contains("api_token"), "{name}");
        assert_eq!(variables_of(c).contains("collection_id"), name == "search", "{name}");
    }
    let token = &m["variables"]["api_token"];
    assert_eq!(token["required"].as_bool(), Some(true));
    assert_eq!(token["secret"].as_bool(), Some(true));
    assert_eq!(m["variables"]["collection_id"]["secret"].as_bool(), Some(true));
}

#[test]
fn image_hosts_grant_nothing_until_ops_set_them() {
    let m = manifest();
    for var in ximilar_gw::config::IMAGE_HOST_VARIABLES {
        let default = m["variables"][var]["default"].as_str().unwrap();
        assert!(default.ends_with(ximilar_gw::image_hosts::PLACEHOLDER_DOMAIN), "{var} = {default}");
        for name in ["detect", "tag", "health", "metrics"] {
            assert!(!variables_of(component(&m, name)).contains(var), "{name} sees {var}");
        }
    }
    assert_eq!(m["variables"]["search_crop"]["default"].as_str(), Some("false"));
}

#[test]
fn only_the_components_that_check_callers_see_the_key_list() {
    let m = manifest();
    assert_eq!(m["variables"]["inbound_keys"]["secret"].as_bool(), Some(true));
    for (name, sees) in [("detect", true), ("tag", true), ("search", true), ("metrics", true), ("health", false)] {
        assert_eq!(variables_of(component(&m, name)).contains("inbound_keys"), sees, "{name}");
    }
}

#[test]
fn component_variables_are_declared_and_read_by_the_code() {
    let m = manifest();
    let declared: BTreeSet<String> = m["variables"].as_table().unwrap().keys().cloned().collect();
    let read: BTreeSet<String> = ximilar_gw::config::VARIABLES.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, read, "spin.toml [variables] and config::VARIABLES differ");
    for (name, c) in m["component"].as_table().unwrap() {
        for (var, template) in c.get("variables").and_then(Value::as_table).into_iter().flatten() {
            assert!(read.contains(var), "component {name} maps {var}, which the code never reads");
            assert_eq!(template.as_str().unwrap(), format!("{{{{ {var} }}}}"), "component {name}: {var}");
        }
    }
}

#[test]
fn manifest_defaults_match_the_code_defaults() {
    let m = manifest();
    let defaults: std::collections::HashMap<String, String> = m["variables"]
        .as_table()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| v.get("default").and_then(Value::as_str).map(|d| (k.clone(), d.to_string())))
        .collect();
    let from_manifest = ximilar_gw::config::Config::from_lookup(|k| defaults.get(k).cloned()).unwrap();
    let from_code = ximilar_gw::config::Config::from_lookup(|_| None).unwrap();
    assert_eq!(from_manifest, from_code);
}
