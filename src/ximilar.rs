//! The Ximilar API as this gateway uses it (docs/ximilar-api.md): request
//! builders for each endpoint and the checks every answer goes through.
//! The HTTP send itself is a [`crate::retry_loop::Transport`]; what a failed check
//! means for our caller is [`UpstreamError`]'s business.

use serde_json::{json, Map, Value};

use crate::config::{Config, TagMode};
use crate::upstream_error::UpstreamError;
pub use crate::upstream_request::{UpstreamRequest, XimilarCall};
use base64::Engine as _;

fn post(config: &Config, endpoint: XimilarCall, path: &str, request_id: &str, body: Value) -> UpstreamRequest {
    UpstreamRequest {
        endpoint,
        method: "POST",
        url: format!("{}{}", config.api_url, path),
        headers: vec![
            ("authorization", format!("Token {}", config.api_token)),
            ("content-type", "application/json".into()),
            ("accept", "application/json".into()),
            ("x-request-id", request_id.into()),
        ],
        body: Some(serde_json::to_vec(&body).expect("request JSON serialises")),
    }
}

/// Detect every garment and tag it, in one credit-bearing call.
pub fn detect_tags(config: &Config, request_id: &str, image_url: &str) -> UpstreamRequest {
    post(
        config,
        XimilarCall::DetectTags,
        &config.detect_path,
        request_id,
        json!({ "records": [{ "_url": image_url }] }),
    )
}

/// Tag one product image, by the configured mode.
pub fn tag(config: &Config, request_id: &str, image_url: &str) -> UpstreamRequest {
    match &config.tag_mode {
        TagMode::Fashion => post(
            config,
            XimilarCall::Tags,
            &config.tags_path,
            request_id,
            json!({ "records": [{ "_url": image_url }] }),
        ),
        TagMode::Classify { task_id } => post(
            config,
            XimilarCall::Classify,
            &config.classify_path,
            request_id,
            json!({ "task_id": task_id, "records": [{ "_url": image_url }] }),
        ),
    }
}

/// The picture a search asks about.
#[derive(Debug, Clone, Copy)]
pub enum QueryImage<'a> {
    /// A public URL that Ximilar fetches itself.
    Url(&'a str),
    /// Image bytes the gateway made (crop mode), sent inline as `_base64`.
    Inline(&'a [u8]),
}

/// Nearest neighbours of one image in the configured collection. The
/// collection travels in the `collection-id` header, never in the body.
pub fn visual_knn(
    config: &Config,
    request_id: &str,
    query: QueryImage,
    k: u32,
    category: Option<&str>,
) -> UpstreamRequest {
    let record = match query {
        QueryImage::Url(url) => json!({ "_url": url }),
        QueryImage::Inline(bytes) => json!({ "_base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    };
    let mut body = json!({
        "query_record": record,
        "k": k,
        "fields_to_return": config.search_fields,
    });
    if let (Some(field), Some(category)) = (&config.search_filter_field, category) {
        body["filter"] = json!({ field: category });
    }
    let mut req = post(config, XimilarCall::VisualKnn, &config.search_path, request_id, body);
    req.headers.push(("collection-id", config.collection_id.clone()));
    req
}

/// Authenticated and free of credits: the health probe.
pub fn account_details(config: &Config, request_id: &str) -> UpstreamRequest {
    UpstreamRequest {
        endpoint: XimilarCall::Account,
        method: "GET",
        url: format!("{}{}", config.api_url, config.health_path),
        headers: vec![
            ("authorization", format!("Token {}", config.api_token)),
            ("accept", "application/json".into()),
            ("x-request-id", request_id.into()),
        ],
        body: None,
    }
}

// ---------------------------------------------------------------- answers

/// Parses a 2xx body and checks the envelope `status`, which Ximilar sends
/// either as `{"code": 200, ...}` or as a bare integer.
pub fn parse_envelope(body: &[u8]) -> Result<Map<String, Value>, UpstreamError> {
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
        return Err(UpstreamError::Malformed);
    };
    match envelope.get("status").and_then(status_code) {
        Some(code) if code >= 300 => Err(UpstreamError::EnvelopeStatus { code }),
        _ => Ok(envelope),
    }
}

/// The one record we sent, with its own `_status` checked: a per-record
/// failure (say, Ximilar could not download the image) is not an upstream fault.
pub fn single_record(envelope: &Map<String, Value>) -> Result<&Map<String, Value>, UpstreamError> {
    let record = envelope
        .get("records")
        .and_then(Value::as_array)
        .and_then(|records| records.first())
        .and_then(Value::as_object)
        .ok_or(UpstreamError::Malformed)?;
    match record.get("_status").and_then(status_code) {
        Some(code) if code >= 300 => Err(UpstreamError::RecordFailed { code }),
        _ => Ok(record),
    }
}

fn status_code(status: &Value) -> Option<i64> {
    match status {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) => o.get("code").and_then(Value::as_i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(extra: &[(&str, &str)]) -> Config {
        let mut map: HashMap<String, String> =
            [("api_token", "tok-123"), ("collection_id", "col-9"), ("api_url", "https://api.ximilar.com")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    fn header<'a>(req: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        req.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn body(req: &UpstreamRequest) -> Value {
        serde_json::from_slice(req.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn detect_uses_detect_tags_with_token_auth() {
        let req = detect_tags(&config(&[]), "rid-1", "https://s.example/a.jpg");
        assert_eq!(req.url, "https://api.ximilar.com/tagging/fashion/v2/detect_tags");
        assert_eq!(req.method, "POST");
        assert_eq!(header(&req, "authorization"), Some("Token tok-123"));
        assert_eq!(header(&req, "content-type"), Some("application/json"));
        assert_eq!(header(&req, "x-request-id"), Some("rid-1"));
        assert_eq!(body(&req), json!({"records": [{"_url": "https://s.example/a.jpg"}]}));
    }

    #[test]
    fn tag_follows_the_mode() {
        let req = tag(&config(&[]), "r", "https://s.example/a.jpg");
        assert_eq!(req.url, "https://api.ximilar.com/tagging/fashion/v2/tags");
        let req = tag(&config(&[("tag_mode", "classify"), ("task_id", "t-1")]), "r", "https://s.example/a.jpg");
        assert_eq!(req.url, "https://api.ximilar.com/recognition/v2/classify/");
        assert_eq!(body(&req), json!({"task_id": "t-1", "records": [{"_url": "https://s.example/a.jpg"}]}));
    }

    #[test]
    fn search_sends_collection_header_and_query_record() {
        let req = visual_knn(&config(&[]), "r", QueryImage::Url("https://s.example/a.jpg"), 7, Some("jacket"));
        assert_eq!(req.url, "https://api.ximilar.com/similarity/fashion-new/v2/visualKNN");
        assert_eq!(header(&req, "collection-id"), Some("col-9"));
        assert_eq!(
            body(&req),
            json!({"query_record": {"_url": "https://s.example/a.jpg"}, "k": 7, "fields_to_return": ["_id", "_url"]}),
            "no filter unless a filter field is configured"
        );
        let req = visual_knn(
            &config(&[("search_filter_field", "cat")]),
            "r",
            QueryImage::Url("https://s.example/a.jpg"),
            7,
            Some("jacket"),
        );
        assert_eq!(body(&req)["filter"], json!({"cat": "jacket"}));
        assert!(!body(&req).to_string().contains("col-9"));
    }

    #[test]
    fn a_crop_travels_inline_as_base64() {
        let req = visual_knn(&config(&[]), "r", QueryImage::Inline(&[0xFF, 0xD8, 0xFF, 0xFE]), 3, None);
        assert_eq!(body(&req)["query_record"], json!({"_base64": "/9j//g=="}));
        assert_eq!(body(&req)["k"], json!(3));
    }

    #[test]
    fn paths_are_configurable() {
        let c = config(&[
            ("detect_path", "/tagging/fashion/v2/detect_tags_all"),
            ("search_path", "/similarity/fashion/v2/visualTagsKNN"),
        ]);
        assert!(detect_tags(&c, "r", "https://s/a").url.ends_with("/detect_tags_all"));
        assert!(visual_knn(&c, "r", QueryImage::Url("https://s/a"), 1, None)
            .url
            .ends_with("/similarity/fashion/v2/visualTagsKNN"));
        assert_eq!(account_details(&c, "r").url, "https://api.ximilar.com/account/v2/details/");
    }

    #[test]
    fn debug_output_hides_the_token_and_collection() {
        let req = visual_knn(&config(&[]), "r", QueryImage::Url("https://s.example/a.jpg"), 1, None);
        let shown = format!("{req:?}");
        assert!(!shown.contains("tok-123") && !shown.contains("col-9"), "{shown}");
    }

    #[test]
    fn envelope_status_object_or_integer() {
        assert!(parse_envelope(br#"{"status": {"code": 200, "text": "OK"}, "records": []}"#).is_ok());
        assert!(parse_envelope(br#"{"records": []}"#).is_ok());
        let err = parse_envelope(br#"{"status": {"code": 500, "text": "Internal"}}"#).unwrap_err();
        assert_eq!(err, UpstreamError::EnvelopeStatus { code: 500 });
        let err = parse_envelope(br#"{"status": 500}"#).unwrap_err();
        assert_eq!(err, UpstreamError::EnvelopeStatus { code: 500 });
    }

    #[test]
    fn malformed_bodies_are_malformed() {
        for body in [&b"<html>oops</html>"[..], b"", b"[1]", b"{\"records\": "] {
            assert_eq!(parse_envelope(body).unwrap_err(), UpstreamError::Malformed);
        }
    }

    #[test]
    fn per_record_failure_is_the_records_own() {
        let env =
            parse_envelope(br#"{"records": [{"_url": "x", "_status": {"code": 400, "text": "Cannot download"}}]}"#)
                .unwrap();
        assert_eq!(single_record(&env).unwrap_err(), UpstreamError::RecordFailed { code: 400 });
        let env = parse_envelope(br#"{"records": []}"#).unwrap();
        assert_eq!(single_record(&env).unwrap_err(), UpstreamError::Malformed);
    }
}
