//! Key-value: Spin's encoding of counters, store access control, and shared stores.

use crate::common::*;
use spin_test_host::client;
use spin_test_host::start_app;

const KV_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "kv"
[[trigger.http]]
route = "/one/..."
component = "one"
[[trigger.http]]
route = "/two/..."
component = "two"
[component.one]
source = "{wasm}"
key_value_stores = ["default", "metrics"]
[component.two]
source = "{wasm}"
key_value_stores = ["metrics"]
"#;

const RUNTIME_CONFIG: &str = r#"
[key_value_store.cache]
type = "spin"
path = ".spin/cache.db"
[key_value_store.metrics]
type = "spin"
"#;

async fn kv_app(dir: &TempDir) -> spin_test_host::RunningApp {
    let mut opts = options(dir, write_manifest(dir, KV_APP));
    opts.runtime_config = Some(dir.write("runtime-config.toml", RUNTIME_CONFIG));
    start_app(opts).await.unwrap()
}

async fn get(app: &spin_test_host::RunningApp, path: &str) -> (u16, String) {
    let r = client::get(&format!("{}{path}", app.base_url())).await.unwrap();
    (r.status.as_u16(), r.text())
}

#[tokio::test]
async fn increment_stores_an_8_byte_little_endian_i64() {
    let dir = TempDir::new("incr");
    let app = kv_app(&dir).await;
    assert_eq!(get(&app, "/one/_test/incr/metrics/requests").await, (200, "1".into()));
    assert_eq!(get(&app, "/one/_test/incr/metrics/requests").await, (200, "2".into()));
    // The other component shares the store.
    assert_eq!(get(&app, "/two/_test/incr/metrics/requests").await, (200, "3".into()));

    let metrics = app.kv("metrics").unwrap();
    assert_eq!(metrics.get("requests").unwrap(), 3i64.to_le_bytes().to_vec());
    assert_eq!(metrics.get_counter("requests"), Some(3));
    assert!(app.kv("default").unwrap().get("requests").is_none(), "stores are separate");

    // A value written by the test in Spin's encoding continues from there.
    metrics.set("preset", 41i64.to_le_bytes().to_vec());
    assert_eq!(get(&app, "/two/_test/incr/metrics/preset").await, (200, "42".into()));
}

#[tokio::test]
async fn incrementing_a_text_value_fails_loudly_like_spin() {
    let dir = TempDir::new("incr-text");
    let app = kv_app(&dir).await;
    app.kv("metrics").unwrap().set("text", "12");
    let (status, _) = get(&app, "/one/_test/incr/metrics/text").await;
    assert_eq!(status, 500);
    let errors = app.errors().join("\n");
    assert!(errors.contains("incorrect length"), "{errors}");
}

#[tokio::test]
async fn only_declared_labels_can_be_opened() {
    let dir = TempDir::new("access");
    let app = kv_app(&dir).await;
    // `cache` exists in the runtime config but `two` does not list it; `default` neither.
    for path in
        ["/two/_test/incr/cache/x", "/two/_test/incr/default/x", "/two/_test/kv/cache/x", "/two/_test/keys/default"]
    {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("AccessDenied"), "{path}: {body}");
    }
    assert!(app.kv("cache").unwrap().keys().is_empty());
}

#[tokio::test]
async fn an_undeclared_label_fails_startup() {
    let dir = TempDir::new("unknown-label");
    let manifest =
        write_manifest(&dir, &KV_APP.replace(r#"key_value_stores = ["metrics"]"#, r#"key_value_stores = ["nope"]"#));
    let mut opts = options(&dir, manifest);
    opts.runtime_config = Some(dir.write("runtime-config.toml", RUNTIME_CONFIG));
    let err = start_app(opts).await.err().expect("unknown label must fail");
    assert!(format!("{err:#}").contains("unknown key_value_stores label \"nope\""), "{err:#}");
}

#[tokio::test]
async fn spin_key_value_get_set_delete_exists_and_keys() {
    let dir = TempDir::new("kv-v3");
    let app = kv_app(&dir).await;
    let base = app.base_url();
    let put = client::send(http::Method::PUT, &format!("{base}/one/_test/kv/default/b"), &[], "bee").await.unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    client::send(http::Method::PUT, &format!("{base}/one/_test/kv/default/a"), &[], "ay").await.unwrap();

    assert_eq!(get(&app, "/one/_test/kv/default/b").await, (200, "bee".into()));
    assert_eq!(get(&app, "/one/_test/kv/default/missing").await.0, 404);
    assert_eq!(get(&app, "/one/_test/exists/default/a").await, (200, "true".into()));
    assert_eq!(get(&app, "/one/_test/keys/default").await, (200, "a\nb".into()));
    assert_eq!(app.kv("default").unwrap().get_string("b").as_deref(), Some("bee"));

    client::send(http::Method::DELETE, &format!("{base}/one/_test/kv/default/a"), &[], "").await.unwrap();
    assert_eq!(get(&app, "/one/_test/exists/default/a").await, (200, "false".into()));
    assert_eq!(app.kv("default").unwrap().keys(), vec!["b".to_string()]);
}

#[tokio::test]
async fn compare_and_swap_through_wasi_keyvalue() {
    let dir = TempDir::new("cas");
    let app = kv_app(&dir).await;
    let kv = app.kv("default").unwrap();
    kv.set("k", "old");
    let r = client::send(http::Method::POST, &format!("{}/one/_test/cas/default/k", app.base_url()), &[], "new")
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "swapped"));
    assert_eq!(kv.get_string("k").as_deref(), Some("new"));
}
