//! The orchestrator contract (README, openapi.yaml): request parsing and validation, answer
//! shapes, and the error body. Nothing here knows about Spin or Ximilar.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::urls::{self, ImageUrl};

/// Largest request body we read. Every valid request is a few kilobytes at most
/// (a 2,048-character URL plus a little JSON), so 64 KiB leaves room and bounds memory.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `top_k` when the caller gives none, and its accepted range.
pub const DEFAULT_TOP_K: u32 = 10;
pub const MAX_TOP_K: u32 = 100;

/// Upper bound on `category`: it is a label, not free text.
pub const MAX_CATEGORY_LEN: usize = 128;

// ---------------------------------------------------------------- errors

/// What went wrong, as the caller sees it: an HTTP status, a stable machine code
/// and a sentence. Never carries upstream bodies or headers, the token or the
/// collection id: every constructor takes only text we wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
    /// Seconds, for 503 answers the caller may retry.
    pub retry_after: Option<u32>,
    /// For 405: the methods the endpoint accepts.
    pub allow: Option<&'static str>,
    /// For 401: the `WWW-Authenticate` challenge.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), retry_after: None, allow: None, challenge: None }
    }

    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(422, code, detail)
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(413, "body_too_large", format!("request body is larger than {limit} bytes"))
    }

    pub fn method_not_allowed(method: &str, allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(405, "method_not_allowed", format!("method {method} is not allowed; use {allow}"))
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            challenge: Some("Bearer"),
            ..Self::new(401, "unauthorized", "a valid caller key is required: Authorization: Bearer <key>")
        }
    }

    /// A known caller whose key is not for this endpoint (its scopes leave it out).
    pub fn forbidden(endpoint: &str) -> Self {
        Self::new(403, "forbidden", format!("this caller key may not call /{endpoint}"))
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The JSON body: `{"detail": ..., "code": ...}` (FastAPI's shape plus a code).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody { detail: &self.detail, code: self.code }).expect("error body serialises")
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    code: &'a str,
}

// ---------------------------------------------------------------- requests

/// `POST /detect` and `POST /tag`: one image URL (for /tag, possibly a `crop_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    pub url: ImageUrl,
}

/// `POST /search`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    pub crop_url: ImageUrl,
    pub category: Option<String>,
    pub top_k: u32,
}

pub fn parse_image_request(body: &[u8]) -> Result<ImageRequest, ApiError> {
    let obj = parse_object(body)?;
    let url = required_url(&obj, "url")?;
    Ok(ImageRequest { url })
}

pub fn parse_search_request(body: &[u8]) -> Result<SearchRequest, ApiError> {
    let obj = parse_object(body)?;
    let crop_url = required_url(&obj, "crop_url")?;
    let category = match obj.get("category") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) if s.chars().count() > MAX_CATEGORY_LEN => {
            return Err(ApiError::invalid(
                "invalid_field",
                format!("field 'category' is longer than {MAX_CATEGORY_LEN} characters"),
            ))
        }
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(_) => return Err(wrong_type("category", "a string")),
    };
    let top_k = match obj.get("top_k") {
        None | Some(Value::Null) => DEFAULT_TOP_K,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(k) if (1..=MAX_TOP_K as u64).contains(&k) => k as u32,
            _ => {
                return Err(ApiError::invalid(
                    "invalid_field",
                    format!("field 'top_k' must be an integer from 1 to {MAX_TOP_K}"),
                ))
            }
        },
        Some(_) => return Err(wrong_type("top_k", "an integer")),
    };
    Ok(SearchRequest { crop_url, category, top_k })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("invalid_json", "request body must be a JSON object")),
        Err(_) => Err(ApiError::invalid("invalid_json", "request body is not valid JSON")),
    }
}

fn required_url(obj: &Map<String, Value>, field: &str) -> Result<ImageUrl, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid("missing_field", format!("field '{field}' is required"))),
        Some(Value::String(s)) => {
            urls::parse_image_url(s).map_err(|why| ApiError::invalid("invalid_url", format!("field '{field}': {why}")))
        }
        Some(_) => Err(wrong_type(field, "a string")),
    }
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::invalid("invalid_field", format!("field '{field}' must be {expected}"))
}

// ---------------------------------------------------------------- answers

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectResponse {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub crop_url: String,
    /// `[x1, y1, x2, y2]` in pixels of the source image, top-left origin.
    pub bbox: [i64; 4],
    pub category: String,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagResponse {
    #[serde(rename = "type")]
    pub kind: String,
    pub color: String,
    /// `#RRGGBB`, or `""` when the colour name is not in our table.
    pub color_hex: String,
    pub material: String,
    pub pattern: String,
    /// Every feature Ximilar returned, best value first (an allowed extra).
    #[serde(default)]
    pub attributes: BTreeMap<String, Attribute>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub value: String,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub candidates: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub sku_id: String,
    /// In (0, 1]; higher is closer. Candidates are sorted best first.
    pub score: f64,
    pub image_urls: Vec<String>,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: String,
    pub ximilar_reachable: bool,
    /// Why Ximilar is not reachable (`unauthorized`, `timeout`, `http_503`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The shared circuit breaker around Ximilar: `closed`, `open` or `half_open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_request_accepts_http_and_https() {
        for url in ["http://shop.example/a.jpg", "https://cdn.example/x/y.png?sig=1"] {
            let body = serde_json::json!({ "url": url }).to_string();
            assert_eq!(parse_image_request(body.as_bytes()).unwrap().url.as_str(), url);
        }
    }

    #[test]
    fn image_request_rejects_bad_input_with_422_and_a_code() {
        let cases: &[(&str, &str)] = &[
            ("not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            ("{}", "missing_field"),
            (r#"{"url": null}"#, "missing_field"),
            (r#"{"url": 5}"#, "invalid_field"),
            (r#"{"url": "ftp://x/y.jpg"}"#, "invalid_url"),
            (r#"{"url": "/relative.jpg"}"#, "invalid_url"),
            (r#"{"url": "https://"}"#, "invalid_url"),
        ];
        for (body, code) in cases {
            let err = parse_image_request(body.as_bytes()).unwrap_err();
            assert_eq!((err.status, err.code), (422, *code), "body {body}");
        }
    }

    #[test]
    fn url_longer_than_2048_is_rejected() {
        let long = format!("https://x.example/{}", "a".repeat(2048));
        let body = serde_json::json!({ "url": long }).to_string();
        assert_eq!(parse_image_request(body.as_bytes()).unwrap_err().code, "invalid_url");
        let fits = format!("https://x.example/{}", "a".repeat(2048 - 18));
        assert_eq!(fits.len(), 2048);
        let body = serde_json::json!({ "url": fits }).to_string();
        assert!(parse_image_request(body.as_bytes()).is_ok());
    }

    #[test]
    fn search_request_defaults_and_bounds() {
        let req = parse_search_request(br#"{"crop_url": "https://a.example/i.jpg#xywh=1,2,3,4"}"#).unwrap();
        assert_eq!((req.top_k, req.category), (DEFAULT_TOP_K, None));

        let req =
            parse_search_request(br#"{"crop_url": "https://a.example/i.jpg", "category": "jacket", "top_k": 100}"#)
                .unwrap();
        assert_eq!((req.top_k, req.category.as_deref()), (100, Some("jacket")));

        for bad in [r#"0"#, "101", "-1", "2.5", r#""10""#, "true"] {
            let body = format!(r#"{{"crop_url": "https://a.example/i.jpg", "top_k": {bad}}}"#);
            let err = parse_search_request(body.as_bytes()).unwrap_err();
            assert_eq!((err.status, err.code), (422, "invalid_field"), "top_k {bad}");
        }
        let accented =
            serde_json::json!({"crop_url": "https://a.example/i.jpg", "category": "é".repeat(MAX_CATEGORY_LEN)});
        assert!(
            parse_search_request(accented.to_string().as_bytes()).is_ok(),
            "the limit counts characters, not bytes"
        );
        let over =
            serde_json::json!({"crop_url": "https://a.example/i.jpg", "category": "é".repeat(MAX_CATEGORY_LEN + 1)});
        assert_eq!(parse_search_request(over.to_string().as_bytes()).unwrap_err().code, "invalid_field");
        let err = parse_search_request(br#"{"crop_url": "https://a.example/i.jpg", "category": 3}"#).unwrap_err();
        assert_eq!(err.code, "invalid_field");
        let err = parse_search_request(br#"{"url": "https://a.example/i.jpg"}"#).unwrap_err();
        assert_eq!(err.code, "missing_field");
    }

    #[test]
    fn error_body_is_detail_and_code_only() {
        let err = ApiError::new(502, "upstream_auth", "Ximilar rejected the gateway's credentials");
        let v: Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"detail": "Ximilar rejected the gateway's credentials", "code": "upstream_auth"})
        );
    }

    #[test]
    fn tag_response_uses_type_as_the_field_name() {
        let tag = TagResponse {
            kind: "jackets".into(),
            color: "khaki".into(),
            color_hex: "#F0E68C".into(),
            material: "nylon".into(),
            pattern: "solid".into(),
            attributes: BTreeMap::new(),
        };
        let v = serde_json::to_value(&tag).unwrap();
        assert_eq!(v["type"], "jackets");
        assert!(v.get("kind").is_none());
    }
}
