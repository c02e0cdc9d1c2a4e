//! Property-based fuzzing of everything that reads untrusted bytes: the
//! caller's request bodies and Ximilar's answers. No input may panic, and every
//! failure must be one of the documented statuses and codes (openapi.yaml).
//! Bounded (`PROPTEST_CASES`, default 512 per property) so it runs in CI.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use ximilar_gw::contract::{parse_image_request, parse_search_request, ApiError};
use ximilar_gw::upstream_error::UpstreamError;
use ximilar_gw::{mapping, urls, ximilar};

const REQUEST_CODES: &[&str] = &["invalid_json", "missing_field", "invalid_field", "invalid_url"];
const UPSTREAM_CODES: &[(u16, &str)] =
    &[(502, "upstream_malformed"), (502, "upstream_error"), (422, "image_not_processed")];

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any JSON value, a few levels deep, biased towards the keys Ximilar uses so
/// the mapping code is reached rather than rejected at the door.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("records".to_string()),
        Just("_objects".to_string()),
        Just("_tags".to_string()),
        Just("bound_box".to_string()),
        Just("prob".to_string()),
        Just("name".to_string()),
        Just("Category".to_string()),
        Just("Top Category".to_string()),
        Just("Color".to_string()),
        Just("_status".to_string()),
        Just("status".to_string()),
        Just("code".to_string()),
        Just("answer_records".to_string()),
        Just("answer_distances".to_string()),
        Just("_id".to_string()),
        Just("_url".to_string()),
        Just("best_label".to_string()),
        "[a-zA-Z_ ]{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-5i64..3000).prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn assert_request_error(err: &ApiError) {
    assert_eq!(err.status, 422, "{err:?}");
    assert!(REQUEST_CODES.contains(&err.code), "{err:?}");
}

fn assert_upstream_error(err: &UpstreamError) {
    let err = err.to_api_error();
    assert!(UPSTREAM_CODES.contains(&(err.status, err.code)), "{err:?}");
}

/// Runs a Ximilar body through every mapping; only documented errors may come out.
fn map_everything(body: &[u8]) {
    let envelope = match ximilar::parse_envelope(body) {
        Ok(envelope) => envelope,
        Err(err) => return assert_upstream_error(&err),
    };
    for k in [1usize, 10, 100] {
        for c in mapping::candidates(&envelope, k) {
            assert!((0.0..=1.0).contains(&c.score) && c.score.is_finite(), "{c:?}");
        }
    }
    match ximilar::single_record(&envelope) {
        Ok(record) => {
            let items = mapping::detected_items(record, "https://s.example/a.jpg");
            for d in &items {
                assert!(d.item.bbox[0] >= 0 && d.item.bbox[2] > d.item.bbox[0] && d.item.bbox[3] > d.item.bbox[1]);
                assert!((0.0..=1.0).contains(&d.item.confidence));
                assert!(
                    urls::parse_image_url(&d.item.crop_url).map(|u| u.crop().is_some()).unwrap_or(false),
                    "{}",
                    d.item.crop_url
                );
                assert!(d.tags.color_hex.is_empty() || d.tags.color_hex.len() == 7);
            }
            let _ = mapping::tag_record(record);
            let _ = mapping::classify_record(record);
            let _ = mapping::item_for_crop(&items, urls::Crop { x: 0, y: 0, w: 10, h: 10 });
            let _ = mapping::item_for_crop(&items, urls::Crop { x: i64::MAX, y: i64::MAX, w: i64::MAX, h: 1 });
        }
        Err(err) => assert_upstream_error(&err),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_bodies_of_random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        for result in [parse_image_request(&body).map(|_| ()), parse_search_request(&body).map(|_| ())] {
            if let Err(err) = result { assert_request_error(&err) }
        }
    }

    #[test]
    fn request_bodies_of_random_json_never_panic(value in json_value(), url in "[ -~]{0,40}", top_k in any::<i64>()) {
        let bodies = [
            value.to_string(),
            json!({ "url": value }).to_string(),
            json!({ "url": url }).to_string(),
            json!({ "crop_url": format!("https://s.example/{url}"), "top_k": top_k, "category": value }).to_string(),
        ];
        for body in bodies {
            match parse_image_request(body.as_bytes()) {
                Ok(req) => prop_assert!(req.url.as_str().len() <= urls::MAX_URL_LEN),
                Err(err) => assert_request_error(&err),
            }
            match parse_search_request(body.as_bytes()) {
                Ok(req) => prop_assert!((1..=100).contains(&req.top_k)),
                Err(err) => assert_request_error(&err),
            }
        }
    }

    #[test]
    fn upstream_json_of_any_shape_maps_or_fails_as_documented(value in json_value()) {
        map_everything(value.to_string().as_bytes());
        // The same value placed where Ximilar puts records and objects.
        let wrapped = json!({ "records": [{ "_objects": [value.clone()], "_tags": value.clone() }], "answer_records": [value] });
        map_everything(wrapped.to_string().as_bytes());
    }

    #[test]
    fn upstream_random_bytes_are_502(body in prop::collection::vec(any::<u8>(), 0..256)) {
        map_everything(&body);
    }

    #[test]
    fn crop_fragments_of_any_numbers_never_panic(x in any::<i64>(), y in any::<i64>(), w in any::<i64>(), h in any::<i64>()) {
        if let Ok(url) = urls::parse_image_url(&format!("https://s.example/a.jpg#xywh={x},{y},{w},{h}")) {
            if let Some(crop) = url.crop() {
                let bbox = crop.to_bbox();
                prop_assert!(bbox[2] >= bbox[0] && bbox[3] >= bbox[1]);
            }
        }
    }

    #[test]
    fn url_normalisation_is_idempotent(host in "[A-Za-z0-9.-]{1,20}", path in "[A-Za-z0-9/._?=&%-]{0,40}", https in any::<bool>()) {
        let scheme = if https { "HTTPS" } else { "Http" };
        if let Ok(url) = urls::parse_image_url(&format!("{scheme}://{host}/{path}")) {
            let once = url.cache_key();
            let twice = urls::parse_image_url(&once).expect("normal form stays valid").cache_key();
            prop_assert_eq!(once, twice);
        }
    }
}

#[test]
fn the_property_checks_can_fail() {
    // A guard that the harness is live: an error a body cannot cause must trip the assertion.
    let caught = std::panic::catch_unwind(|| assert_upstream_error(&UpstreamError::Deadline));
    assert!(caught.is_err());
    let _unused: Map<String, Value> = Map::new();
}
