//! Ximilar records → the orchestrator's shapes. Every upstream field is treated
//! as optional and of uncertain type (docs/ximilar-api.md: the `_tags` keys depend
//! on the taxonomy, `Category` may be a string or a tag list, ...).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::colors;
use crate::contract::{Attribute, Candidate, Item, TagResponse};
use crate::urls::{self, Crop};

/// A detected garment with the tags `detect_tags` gave it (cached as is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedItem {
    pub item: Item,
    pub tags: TagResponse,
}

/// `records[0]._objects` of a `detect_tags` answer. Objects without a usable
/// box are skipped: without one there is no crop to name.
pub fn detected_items(record: &Map<String, Value>, source_url: &str) -> Vec<DetectedItem> {
    let Some(objects) = record.get("_objects").and_then(Value::as_array) else {
        return Vec::new();
    };
    objects
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|object| {
            let bbox = bbox(object.get("bound_box")?)?;
            let category = object_category(object);
            let item = Item {
                crop_url: urls::crop_url(source_url, Crop::from_bbox(bbox)),
                bbox,
                category: category.clone(),
                confidence: object.get("prob").and_then(Value::as_f64).map_or(0.0, |p| p.clamp(0.0, 1.0)),
            };
            let tags = tag_response(object.get("_tags"), Some(&category));
            Some(DetectedItem { item, tags })
        })
        .collect()
}

/// `[xmin, ymin, xmax, ymax]` pixels, rounded; a box must have positive area.
fn bbox(value: &Value) -> Option<[i64; 4]> {
    let nums: Vec<i64> =
        value.as_array()?.iter().map(|n| n.as_f64().map(|f| f.round() as i64)).collect::<Option<_>>()?;
    match nums[..] {
        [x1, y1, x2, y2] if x1 >= 0 && y1 >= 0 && x2 > x1 && y2 > y1 => Some([x1, y1, x2, y2]),
        _ => None,
    }
}

/// The object's category: `Category` (a string or a tag list, at object level or
/// in `_tags`), else its `name`, else `Top Category`.
fn object_category(object: &Map<String, Value>) -> String {
    let tags = object.get("_tags").and_then(Value::as_object);
    object
        .get("Category")
        .and_then(best_value)
        .or_else(|| tags.and_then(|t| feature(t, &["Category"])))
        .or_else(|| object.get("name").and_then(best_value))
        .or_else(|| object.get("Top Category").and_then(best_value))
        .or_else(|| tags.and_then(|t| feature(t, &["Top Category"])))
        .map(|(name, _)| name)
        .unwrap_or_else(|| "unknown".into())
}

/// The `/tag` answer from a `_tags` map. `fallback_type` is used when no type
/// feature is present (a detected item's category).
pub fn tag_response(tags: Option<&Value>, fallback_type: Option<&str>) -> TagResponse {
    let tags = tags.and_then(Value::as_object);
    let pick = |names: &[&str]| tags.and_then(|t| feature(t, names)).map(|(v, _)| v).unwrap_or_default();
    let color = pick(&["Color", "Colour"]);
    let kind = tags
        .and_then(|t| feature(t, &["Subcategory", "Category"]))
        .map(|(v, _)| v)
        .or_else(|| fallback_type.map(str::to_string))
        .unwrap_or_default();
    let attributes: BTreeMap<String, Attribute> = tags
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| {
                    best_value(v).map(|(value, confidence)| (k.clone(), Attribute { value, confidence }))
                })
                .collect()
        })
        .unwrap_or_default();
    TagResponse {
        kind,
        color_hex: colors::hex_for(&color).unwrap_or_default(),
        color,
        material: pick(&["Material"]),
        pattern: pick(&["Pattern", "Design", "Pattern and Material"]),
        attributes,
    }
}

/// The `/tag` answer from a `tags` record: its own `_tags`, or else the tags of
/// its most probable object.
pub fn tag_record(record: &Map<String, Value>) -> TagResponse {
    if let Some(tags) = record.get("_tags").filter(|t| t.as_object().is_some_and(|m| !m.is_empty())) {
        return tag_response(Some(tags), None);
    }
    let best_object = record
        .get("_objects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .max_by(|a, b| prob(a).total_cmp(&prob(b)));
    match best_object {
        Some(object) => tag_response(object.get("_tags"), Some(&object_category(object))),
        None => tag_response(None, None),
    }
}

/// The `/tag` answer from a custom classifier record (`best_label`, `labels`).
pub fn classify_record(record: &Map<String, Value>) -> TagResponse {
    let mut response = tag_response(None, None);
    if let Some((name, confidence)) = record.get("best_label").and_then(best_value) {
        response.attributes.insert("label".into(), Attribute { value: name.clone(), confidence });
        response.kind = name;
    }
    response
}

/// Of the items `detect_tags` found, the one that best matches `crop`
/// (intersection over union of at least 0.5).
pub fn item_for_crop(items: &[DetectedItem], crop: Crop) -> Option<&DetectedItem> {
    items
        .iter()
        .map(|d| (iou(d.item.bbox, crop.to_bbox()), d))
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d)
}

fn iou(a: [i64; 4], b: [i64; 4]) -> f64 {
    // In f64: boxes come from Ximilar and crops from callers, so any i64 is possible.
    let area = |r: [i64; 4]| (r[2] as f64 - r[0] as f64).max(0.0) * (r[3] as f64 - r[1] as f64).max(0.0);
    let inter = [a[0].max(b[0]), a[1].max(b[1]), a[2].min(b[2]), a[3].min(b[3])];
    let inter_area = area(inter);
    let union = area(a) + area(b) - inter_area;
    if union <= 0.0 {
        0.0
    } else {
        inter_area / union
    }
}

/// `visualKNN`: `answer_records[i]` paired with `answer_distances[i]`. Lower
/// distance is closer; the score is `1 / (1 + distance)`, so it is in (0, 1] and
/// falls as the distance grows. Records without a distance score 0 and keep
/// their upstream order after the scored ones.
pub fn candidates(envelope: &Map<String, Value>, top_k: usize) -> Vec<Candidate> {
    let records = envelope.get("answer_records").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let distances = envelope.get("answer_distances").and_then(Value::as_array);
    let mut out: Vec<Candidate> = records
        .iter()
        .enumerate()
        .filter_map(|(i, record)| {
            let record = record.as_object()?;
            let sku_id = match record.get("_id")? {
                Value::String(s) if !s.is_empty() => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let distance = distances
                .and_then(|d| d.get(i))
                .and_then(Value::as_f64)
                .or_else(|| record.get("_distance").and_then(Value::as_f64))
                .filter(|d| d.is_finite());
            let mut image_urls: Vec<String> = Vec::new();
            for key in ["_url", "_urls", "image_urls"] {
                match record.get(key) {
                    Some(Value::String(s)) => image_urls.push(s.clone()),
                    Some(Value::Array(list)) => {
                        image_urls.extend(list.iter().filter_map(Value::as_str).map(str::to_string))
                    }
                    _ => {}
                }
            }
            image_urls.dedup();
            let metadata = record
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "_id" | "_url" | "_urls" | "image_urls" | "_distance"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some(Candidate { sku_id, score: distance.map_or(0.0, |d| 1.0 / (1.0 + d.max(0.0))), image_urls, metadata })
        })
        .collect();
    // Stable: equal scores keep Ximilar's order.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(top_k);
    out
}

fn prob(object: &Map<String, Value>) -> f64 {
    object.get("prob").and_then(Value::as_f64).unwrap_or(0.0)
}

/// The first feature of `names` present in `tags` (keys compared without case).
fn feature(tags: &Map<String, Value>, names: &[&str]) -> Option<(String, f64)> {
    names
        .iter()
        .find_map(|name| tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| best_value(v)))
}

/// The most probable name in a tag value: a list of `{name, prob}`, one such
/// object, or a bare string.
fn best_value(value: &Value) -> Option<(String, f64)> {
    let one = |v: &Value| -> Option<(String, f64)> {
        match v {
            Value::String(s) if !s.trim().is_empty() => Some((s.trim().to_string(), 1.0)),
            Value::Object(o) => {
                let name = o.get("name").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())?;
                Some((name.to_string(), o.get("prob").and_then(Value::as_f64).unwrap_or(0.0).clamp(0.0, 1.0)))
            }
            _ => None,
        }
    };
    match value {
        Value::Array(list) => {
            list.iter().filter_map(one).reduce(|best, next| if next.1 > best.1 { next } else { best })
        }
        other => one(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ximilar::{parse_envelope, single_record};

    fn fixture(name: &str) -> Map<String, Value> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        parse_envelope(&text).unwrap()
    }

    const SRC: &str = "https://shop.example/outfit.jpg?sig=abc";

    #[test]
    fn detect_tags_maps_items_crops_and_tags() {
        let env = fixture("detect_tags.json");
        let items = detected_items(single_record(&env).unwrap(), SRC);
        assert_eq!(items.len(), 2);
        let jacket = &items[0];
        assert_eq!(jacket.item.bbox, [212, 340, 705, 1122]);
        assert_eq!(jacket.item.crop_url, "https://shop.example/outfit.jpg?sig=abc#xywh=212,340,493,782");
        assert_eq!(jacket.item.category, "Clothing/Upper");
        assert_eq!(jacket.item.confidence, 0.93);
        assert_eq!(jacket.tags.kind, "jackets");
        assert_eq!((jacket.tags.color.as_str(), jacket.tags.color_hex.as_str()), ("navy", "#000080"));
        assert_eq!(jacket.tags.material, "denim");
        assert_eq!(jacket.tags.pattern, "solid");
        assert_eq!(jacket.tags.attributes["Sleeves"].value, "long sleeves");
        let jeans = &items[1];
        assert_eq!(jeans.item.category, "Clothing/Lower", "category from _tags when the object has none");
        assert_eq!(jeans.item.bbox, [100, 1100, 651, 1900], "float boxes are rounded");
        assert_eq!(jeans.tags.pattern, "plain", "Pattern and Material is a pattern fallback");
    }

    #[test]
    fn odd_detect_records_do_not_break_mapping() {
        let env = fixture("detect_tags_odd.json");
        let items = detected_items(single_record(&env).unwrap(), SRC);
        // 5 objects: one without a box, one with a zero-area box are skipped
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].item.category, "Footwear", "Category given as a tag list");
        assert_eq!(items[1].item.category, "bag", "falls back to name");
        assert_eq!(items[1].item.confidence, 0.0, "missing prob is 0");
        assert_eq!(items[2].item.category, "Accessories", "falls back to Top Category");
        assert_eq!(items[0].tags.color, "beige");
        assert_eq!(items[0].tags.color_hex, "#F5F5DC");
        assert_eq!(items[1].tags.color, "ultraviolet sparkle");
        assert_eq!(items[1].tags.color_hex, "", "unknown colours get no made-up hex");
        assert_eq!(items[2].tags, tag_response(None, Some("Accessories")));
    }

    #[test]
    fn empty_objects_give_no_items() {
        let env = parse_envelope(br#"{"records": [{"_url": "x", "_objects": []}]}"#).unwrap();
        assert!(detected_items(single_record(&env).unwrap(), SRC).is_empty());
        let env = parse_envelope(br#"{"records": [{"_url": "x"}]}"#).unwrap();
        assert!(detected_items(single_record(&env).unwrap(), SRC).is_empty());
    }

    #[test]
    fn tags_record_maps_the_contract_fields() {
        let env = fixture("tags.json");
        let tag = tag_record(single_record(&env).unwrap());
        assert_eq!(tag.kind, "bomber jackets");
        assert_eq!((tag.color.as_str(), tag.color_hex.as_str()), ("khaki", "#F0E68C"));
        assert_eq!(tag.material, "nylon");
        assert_eq!(tag.pattern, "plain");
        let json = serde_json::to_value(&tag).unwrap();
        for key in ["type", "color", "color_hex", "material", "pattern"] {
            assert!(json[key].is_string(), "{key}");
        }
    }

    #[test]
    fn tags_record_without_tags_uses_its_best_object_or_nothing() {
        let env = parse_envelope(
            br#"{"records": [{"_objects": [
                {"prob": 0.2, "Category": "Bags", "_tags": {"Color": [{"name": "red", "prob": 0.9}]}},
                {"prob": 0.8, "Category": "Shoes", "_tags": {"Color": [{"name": "black", "prob": 0.7}]}}]}]}"#,
        )
        .unwrap();
        let tag = tag_record(single_record(&env).unwrap());
        assert_eq!((tag.kind.as_str(), tag.color.as_str(), tag.color_hex.as_str()), ("Shoes", "black", "#000000"));
        let env = parse_envelope(br#"{"records": [{"_tags": {}}]}"#).unwrap();
        assert_eq!(tag_record(single_record(&env).unwrap()), tag_response(None, None));
    }

    #[test]
    fn best_value_prefers_the_highest_probability() {
        let v =
            serde_json::json!([{"name": "red", "prob": 0.2}, {"name": "blue", "prob": 0.7}, {"name": "", "prob": 0.9}]);
        assert_eq!(best_value(&v), Some(("blue".into(), 0.7)));
        assert_eq!(best_value(&serde_json::json!("denim")), Some(("denim".into(), 1.0)));
        assert_eq!(best_value(&serde_json::json!(3)), None);
    }

    #[test]
    fn classify_uses_best_label_as_type() {
        let env = parse_envelope(
            br#"{"records": [{"best_label": {"id": "1", "name": "bomber_jacket", "prob": 0.9}, "labels": []}]}"#,
        )
        .unwrap();
        let tag = classify_record(single_record(&env).unwrap());
        assert_eq!(tag.kind, "bomber_jacket");
        assert_eq!((tag.color.as_str(), tag.color_hex.as_str()), ("", ""));
    }

    #[test]
    fn crop_matching_uses_overlap() {
        let env = fixture("detect_tags.json");
        let items = detected_items(single_record(&env).unwrap(), SRC);
        let exact = Crop::from_bbox([212, 340, 705, 1122]);
        assert_eq!(item_for_crop(&items, exact).unwrap().tags.kind, "jackets");
        let shifted = Crop::from_bbox([220, 350, 700, 1100]);
        assert_eq!(item_for_crop(&items, shifted).unwrap().tags.kind, "jackets");
        let elsewhere = Crop::from_bbox([0, 0, 50, 50]);
        assert!(item_for_crop(&items, elsewhere).is_none());
    }

    #[test]
    fn search_scores_are_monotone_sorted_and_bounded() {
        let env = fixture("visual_knn.json");
        let cands = candidates(&env, 10);
        let ids: Vec<&str> = cands.iter().map(|c| c.sku_id.as_str()).collect();
        assert_eq!(ids, vec!["sku-123", "sku-456", "789", "sku-no-distance"]);
        assert!(cands.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(cands.iter().all(|c| (0.0..=1.0).contains(&c.score)));
        assert_eq!(cands[0].score, 1.0 / 1.21);
        assert_eq!(cands[0].image_urls, vec!["https://cdn.example/123.jpg"]);
        assert_eq!(cands[0].metadata["brand"], "Nike");
        assert!(cands[0].metadata.get("_id").is_none());
        assert_eq!(cands[3].score, 0.0);
        assert_eq!(candidates(&env, 2).len(), 2);
    }

    #[test]
    fn search_without_answers_is_empty() {
        let env = parse_envelope(br#"{"status": {"code": 200}}"#).unwrap();
        assert!(candidates(&env, 10).is_empty());
    }
}
