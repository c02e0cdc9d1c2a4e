//! Routing like Spin 4.0.2: exact and wildcard routes, most specific wins, empty 404, no
//! method filtering, and the spin-* headers.

use crate::common::*;
use spin_test_host::client;
use spin_test_host::start_app;

/// Four components, all the forwarder; each forwards to its own mock path, so the mock's
/// record says which component a request reached.
const ROUTES_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "routes"
[variables]
upstream_url = { required = true }
[[trigger.http]]
route = "/exact"
component = "exact"
[[trigger.http]]
route = "/wild/..."
component = "wild"
[[trigger.http]]
route = "/wild/deeper/..."
component = "deeper"
[[trigger.http]]
route = "/wild/exact"
component = "wild-exact"
[component.exact]
source = "{wasm}"
allowed_outbound_hosts = ["{{ upstream_url }}"]
[component.exact.variables]
upstream_url = "{{ upstream_url }}"
upstream_path = "/which/exact"
[component.wild]
source = "{wasm}"
allowed_outbound_hosts = ["{{ upstream_url }}"]
[component.wild.variables]
upstream_url = "{{ upstream_url }}"
upstream_path = "/which/wild"
[component.deeper]
source = "{wasm}"
allowed_outbound_hosts = ["{{ upstream_url }}"]
[component.deeper.variables]
upstream_url = "{{ upstream_url }}"
upstream_path = "/which/deeper"
[component.wild-exact]
source = "{wasm}"
allowed_outbound_hosts = ["{{ upstream_url }}"]
[component.wild-exact.variables]
upstream_url = "{{ upstream_url }}"
upstream_path = "/which/wild-exact"
"#;

#[tokio::test]
async fn exact_wildcard_most_specific_and_404() {
    let mock = mock().await;
    let dir = TempDir::new("routes");
    let mut opts = options(&dir, write_manifest(&dir, ROUTES_APP));
    opts.variables.insert("upstream_url".into(), mock.url());
    let app = start_app(opts).await.unwrap();

    let cases = [
        ("/exact", "/which/exact"),
        ("/exact/", "/which/exact"),
        ("/wild", "/which/wild"),
        ("/wild/anything/else", "/which/wild"),
        ("/wild/deeper", "/which/deeper"),
        ("/wild/deeper/x/y", "/which/deeper"),
        ("/wild/exact", "/which/wild-exact"),
        ("/wild/exact/more", "/which/wild"),
    ];
    for (path, upstream) in cases {
        mock.clear_calls();
        let reply = client::post_json(&format!("{}{path}", app.base_url()), &serde_json::json!({})).await.unwrap();
        let calls = mock.calls();
        assert_eq!(calls.len(), 1, "{path}: expected one upstream call, got {calls:?}");
        assert_eq!(calls[0].path, upstream, "{path} reached the wrong component");
        // The mock answers 404 {"detail":"Not found."} for these paths, and the forwarder
        // passes it through: a non-empty body tells it apart from the host's own 404.
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json().unwrap()["detail"], "Not found.");
    }

    mock.clear_calls();
    for path in ["/", "/nothing", "/exactly", "/exact/sub", "/wil"] {
        let reply = client::get(&format!("{}{path}", app.base_url())).await.unwrap();
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.body.is_empty(), "{path}: Spin's 404 has an empty body, got {:?}", reply.text());
    }
    assert!(mock.calls().is_empty(), "unrouted requests must not reach a component");
}

#[tokio::test]
async fn routes_do_not_filter_by_method() {
    let mock = mock().await;
    let dir = TempDir::new("methods");
    let mut opts = options(&dir, write_manifest(&dir, ROUTES_APP));
    opts.variables.insert("upstream_url".into(), mock.url());
    let app = start_app(opts).await.unwrap();
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let m: http::Method = method.parse().unwrap();
        client::send(m, &format!("{}/exact", app.base_url()), &[], "").await.unwrap();
    }
    assert_eq!(mock.calls_to("/which/exact").len(), 4);
    assert_eq!(app.outbound_calls("exact"), 4);
}

#[tokio::test]
async fn spin_headers_are_added_and_request_headers_kept() {
    let dir = TempDir::new("headers");
    let manifest = write_manifest(
        &dir,
        &ROUTES_APP
            .replace("upstream_url = { required = true }", "upstream_url = { default = \"http://127.0.0.1:9\" }"),
    );
    let app = start_app(options(&dir, manifest)).await.unwrap();
    let url = format!("{}/wild/_test/headers?q=1&r=2", app.base_url());
    let reply = client::send(http::Method::GET, &url, &[("x-request-id", "req-42")], "").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_string()
    };
    assert_eq!(header("spin-path-info"), "/_test/headers");
    assert_eq!(header("spin-matched-route"), "/wild/...");
    assert_eq!(header("spin-raw-component-route"), "/wild/...");
    assert_eq!(header("spin-component-route"), "/wild");
    assert_eq!(header("spin-base-path"), "/");
    assert_eq!(header("spin-full-url"), format!("http://{}/wild/_test/headers?q=1&r=2", app.addr()));
    assert!(header("spin-client-addr").starts_with("127.0.0.1:"));
    assert_eq!(header("x-request-id"), "req-42");
    assert_eq!(header("host"), app.addr().to_string());
}

#[tokio::test]
async fn well_known_health_is_served_by_the_host() {
    let dir = TempDir::new("wellknown");
    let app = forwarder_app(&dir, "[]", &[]).await;
    let reply = client::get(&format!("{}/.well-known/spin/health", app.base_url())).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "OK"));
    let reply = client::get(&format!("{}/.well-known/spin/other", app.base_url())).await.unwrap();
    assert_eq!(reply.status, 404);
}
