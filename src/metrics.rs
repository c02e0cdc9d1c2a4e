//! Prometheus metrics kept as key-value counters (README: Metrics).
//!
//! Spin pools and reuses instances, so counters cannot live in memory. Each
//! series is one key in the `metrics` store, named by its own Prometheus
//! identifier (`name{label="value",...}`), and is only ever changed by an atomic
//! increment, so several instances and replicas add up. Histograms store one
//! non-cumulative key per bucket plus `_sum_us` (integer microseconds); the
//! metrics component makes the buckets cumulative and derives `_count`, so
//! `+Inf` always equals `_count`. Every label value comes from a fixed set:
//! no URL, token or collection id can ever become a label.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Buckets (seconds) for a gateway whose upstream answers in 200–500 ms, with
/// low buckets for cache hits and validation errors.
pub const DURATION_BUCKETS: [f64; 15] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets (bytes) for downloaded source images: product shots to 12 MP photos.
pub const BYTE_BUCKETS: [f64; 10] = [50_000.0, 100_000.0, 250_000.0, 500_000.0, 1e6, 2.5e6, 5e6, 10e6, 25e6, 100e6];

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_IN_PROGRESS: &str = "http_requests_in_progress";
pub const XIMILAR_REQUESTS: &str = "ximilar_requests_total";
pub const XIMILAR_DURATION: &str = "ximilar_request_duration_seconds";
pub const XIMILAR_RETRIES: &str = "ximilar_retries_total";
pub const XIMILAR_REACHABLE: &str = "ximilar_reachable";
pub const XIMILAR_CREDITS_USED: &str = "ximilar_credits_used";
pub const XIMILAR_CREDITS_LIMIT: &str = "ximilar_credits_limit";
pub const XIMILAR_BILLED_RECORDS: &str = "ximilar_billed_records_total";
pub const CALLER_BUDGET: &str = "gateway_caller_budget";
pub const CALLER_BUDGET_SPENT: &str = "gateway_caller_budget_spent";
pub const XIMILAR_BREAKER_OPEN: &str = "ximilar_breaker_open";
pub const XIMILAR_BREAKER_REJECTIONS: &str = "ximilar_breaker_rejections_total";
pub const CACHE_HITS: &str = "gateway_cache_hits_total";
pub const CACHE_MISSES: &str = "gateway_cache_misses_total";
pub const COALESCED: &str = "gateway_coalesced_total";
pub const IMAGE_CROPS: &str = "gateway_image_crops_total";
pub const IMAGE_FETCH_DURATION: &str = "gateway_image_fetch_duration_seconds";
pub const IMAGE_FETCH_BYTES: &str = "gateway_image_fetch_bytes";
pub const IMAGE_CROP_DURATION: &str = "gateway_image_crop_duration_seconds";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram(Unit),
}

/// What a histogram measures: its buckets, and how its sum is stored (an integer key).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Stored in microseconds, rendered in seconds.
    Seconds,
    Bytes,
}

impl Unit {
    fn bounds(self) -> &'static [f64] {
        match self {
            Unit::Seconds => &DURATION_BUCKETS,
            Unit::Bytes => &BYTE_BUCKETS,
        }
    }

    fn sum_suffix(self) -> &'static str {
        match self {
            Unit::Seconds => "_sum_us",
            Unit::Bytes => "_sum_bytes",
        }
    }

    /// Stored sum per rendered unit.
    fn scale(self) -> f64 {
        match self {
            Unit::Seconds => 1e6,
            Unit::Bytes => 1.0,
        }
    }
}

/// Every family the gateway exposes, in output order.
const FAMILIES: &[(&str, Kind, &str)] = &[
    (HTTP_REQUESTS, Kind::Counter, "Requests answered, by handler, method and status class (2xx, 4xx, 5xx)."),
    (HTTP_DURATION, Kind::Histogram(Unit::Seconds), "Time to answer a request, in seconds."),
    (HTTP_IN_PROGRESS, Kind::Gauge, "Requests being answered right now."),
    (
        XIMILAR_REQUESTS,
        Kind::Counter,
        "Tries sent to Ximilar, by endpoint and outcome (HTTP status, timeout, connect, error).",
    ),
    (XIMILAR_DURATION, Kind::Histogram(Unit::Seconds), "Time of one try against Ximilar, in seconds."),
    (XIMILAR_RETRIES, Kind::Counter, "Retries against Ximilar, by endpoint and reason."),
    (XIMILAR_REACHABLE, Kind::Gauge, "1 if the last health probe reached Ximilar with a valid token, else 0."),
    (
        XIMILAR_CREDITS_USED,
        Kind::Gauge,
        "Credits the Ximilar account has used (credits_counter), from the last health probe.",
    ),
    (
        XIMILAR_CREDITS_LIMIT,
        Kind::Gauge,
        "The Ximilar account's credit limit (credits_limit), from the last health probe.",
    ),
    (
        XIMILAR_BILLED_RECORDS,
        Kind::Counter,
        "Image records this gateway sent in calls Ximilar answered with success, by endpoint (what it billed).",
    ),
    (CALLER_BUDGET, Kind::Gauge, "A caller's daily budget of billed Ximilar calls, as configured, by caller."),
    (
        CALLER_BUDGET_SPENT,
        Kind::Gauge,
        "Units of a caller's budget reserved so far this UTC day (tries that may be billed), by caller.",
    ),
    (
        XIMILAR_BREAKER_OPEN,
        Kind::Gauge,
        "1 while the circuit breaker refuses calls to Ximilar (open or half-open), else 0.",
    ),
    (
        XIMILAR_BREAKER_REJECTIONS,
        Kind::Counter,
        "Calls the open circuit breaker refused without asking Ximilar, by endpoint.",
    ),
    (CACHE_HITS, Kind::Counter, "Requests answered from the cache, by handler."),
    (CACHE_MISSES, Kind::Counter, "Cacheable requests that had to ask Ximilar, by handler."),
    (
        COALESCED,
        Kind::Counter,
        "Requests answered by another request's identical in-flight Ximilar call instead of their own, by handler.",
    ),
    (
        IMAGE_CROPS,
        Kind::Counter,
        "Crop mode's image steps (fetch, decode, crop, encode) for /search, by outcome; only ok goes on to Ximilar.",
    ),
    (IMAGE_FETCH_DURATION, Kind::Histogram(Unit::Seconds), "Time to download a source image in crop mode, in seconds."),
    (
        IMAGE_FETCH_BYTES,
        Kind::Histogram(Unit::Bytes),
        "Bytes of a source image downloaded in crop mode (as far as read).",
    ),
    (
        IMAGE_CROP_DURATION,
        Kind::Histogram(Unit::Seconds),
        "Time to decode a source image, crop the garment and encode it as JPEG, in seconds.",
    ),
];

/// `"2xx"`: the FastAPI instrumentator the server card used grouped statuses by class.
pub fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut key = String::from(name);
    key.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        let _ = write!(key, "{k}=\"{}\"", escape(v));
    }
    key.push('}');
    key
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The keys (and deltas) that record one observation of a duration histogram.
fn observe(name: &str, labels: &[(&str, &str)], value: Duration) -> [(String, i64); 2] {
    observe_in(Unit::Seconds, name, labels, value.as_micros().min(i64::MAX as u128) as i64)
}

/// One observation of `stored` (in the unit's stored scale): its bucket, and the sum.
fn observe_in(unit: Unit, name: &str, labels: &[(&str, &str)], stored: i64) -> [(String, i64); 2] {
    let value = stored as f64 / unit.scale();
    let le = unit.bounds().iter().find(|b| value <= **b).map_or("+Inf".to_string(), |b| b.to_string());
    let mut bucket_labels = labels.to_vec();
    bucket_labels.push(("le", &le));
    [
        (series(&format!("{name}_bucket"), &bucket_labels), 1),
        (series(&format!("{name}{}", unit.sum_suffix()), labels), stored),
    ]
}

/// The image step's outcome when another request had already cut the garment
/// (from the one download of its photo): nothing was downloaded or decoded.
pub const CROP_REUSED: &str = "reused";

/// Increments recording crop mode's image step: its outcome, the download's
/// time and size, and (when it got that far) the decode-crop-encode time.
pub fn image_increments(outcome: &str, fetch: Duration, bytes: u64, crop: Option<Duration>) -> Vec<(String, i64)> {
    let mut out = vec![(series(IMAGE_CROPS, &[("outcome", outcome)]), 1)];
    if outcome == CROP_REUSED {
        return out;
    }
    out.extend(observe(IMAGE_FETCH_DURATION, &[], fetch));
    out.extend(observe_in(Unit::Bytes, IMAGE_FETCH_BYTES, &[], bytes.min(i64::MAX as u64) as i64));
    if let Some(crop) = crop {
        out.extend(observe(IMAGE_CROP_DURATION, &[], crop));
    }
    out
}

/// The in-progress gauge key of a handler (+1 on entry, -1 on exit).
pub fn in_progress_key(handler: &str, method: &str) -> String {
    series(HTTP_IN_PROGRESS, &[("handler", handler), ("method", method)])
}

/// Increments recording one answered request: 3 keys.
pub fn request_increments(
    handler: &str,
    method: &str,
    status: u16,
    caller: &str,
    duration: Duration,
) -> Vec<(String, i64)> {
    let class = status_class(status);
    let labels = [("handler", handler), ("method", method), ("status", &class), ("caller", caller)];
    let mut out = vec![(series(HTTP_REQUESTS, &labels), 1)];
    out.extend(observe(HTTP_DURATION, &[("handler", handler), ("method", method)], duration));
    out
}

/// Increments recording one try against Ximilar: 3 keys.
pub fn upstream_increments(endpoint: &str, outcome: &str, duration: Duration) -> Vec<(String, i64)> {
    let mut out = vec![(series(XIMILAR_REQUESTS, &[("endpoint", endpoint), ("status", outcome)]), 1)];
    out.extend(observe(XIMILAR_DURATION, &[("endpoint", endpoint)], duration));
    out
}

pub fn retry_key(endpoint: &str, reason: &str) -> String {
    series(XIMILAR_RETRIES, &[("endpoint", endpoint), ("reason", reason)])
}

pub fn cache_outcome_key(handler: &str, hit: bool) -> String {
    series(if hit { CACHE_HITS } else { CACHE_MISSES }, &[("handler", handler)])
}

pub fn coalesced_key(handler: &str) -> String {
    series(COALESCED, &[("handler", handler)])
}

pub fn reachable_key() -> String {
    XIMILAR_REACHABLE.to_string()
}

pub fn credits_used_key() -> String {
    XIMILAR_CREDITS_USED.to_string()
}

pub fn credits_limit_key() -> String {
    XIMILAR_CREDITS_LIMIT.to_string()
}

/// A caller's configured daily budget (written by `/metrics` from the configuration).
pub fn caller_budget_key(caller: &str) -> String {
    format!("{CALLER_BUDGET}{{caller=\"{caller}\"}}")
}

/// What a caller has reserved of today's budget.
pub fn caller_budget_spent_key(caller: &str) -> String {
    format!("{CALLER_BUDGET_SPENT}{{caller=\"{caller}\"}}")
}

pub fn breaker_open_key() -> String {
    XIMILAR_BREAKER_OPEN.to_string()
}

pub fn breaker_rejections_key(endpoint: &str) -> String {
    series(XIMILAR_BREAKER_REJECTIONS, &[("endpoint", endpoint)])
}

/// Records billed by Ximilar in successful calls of one endpoint, for one caller.
pub fn billed_records_key(endpoint: &str, caller: &str) -> String {
    series(XIMILAR_BILLED_RECORDS, &[("endpoint", endpoint), ("caller", caller)])
}

/// A stored counter: Spin's SQLite store keeps an 8-byte little-endian i64,
/// Redis (`INCRBY`) ASCII decimal. An 8-byte value that is all digits is read
/// as decimal: as little-endian it would exceed 3.4e18, which no counter reaches.
pub fn decode_counter(bytes: &[u8]) -> Option<i64> {
    let is_decimal = !bytes.is_empty()
        && bytes.iter().enumerate().all(|(i, b)| b.is_ascii_digit() || (i == 0 && *b == b'-' && bytes.len() > 1));
    if is_decimal {
        return std::str::from_utf8(bytes).ok()?.parse().ok();
    }
    Some(i64::from_le_bytes(bytes.try_into().ok()?))
}

/// Renders stored series as Prometheus text exposition format 0.0.4.
/// Keys that are not ours are ignored.
pub fn render(entries: &[(String, i64)]) -> String {
    // family -> label set (without le) -> samples
    let mut plain: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut histograms: BTreeMap<&str, BTreeMap<String, Histogram>> = BTreeMap::new();

    for (key, value) in entries {
        let Some((name, labels)) = split_key(key) else { continue };
        if let Some(family) = FAMILIES.iter().find(|f| f.0 == name && !matches!(f.1, Kind::Histogram(_))) {
            *plain.entry(family.0).or_default().entry(labels).or_default() += value;
            continue;
        }
        for (family, kind, _) in FAMILIES {
            let Kind::Histogram(unit) = *kind else { continue };
            if name == format!("{family}_bucket") {
                let (rest, le) = take_le(labels);
                let Some(bound) = le.and_then(|l| if l == "+Inf" { Some(f64::INFINITY) } else { l.parse().ok() })
                else {
                    break;
                };
                let h = histograms.entry(family).or_default().entry(rest).or_default();
                h.buckets.push((bound, *value));
            } else if name == format!("{family}{}", unit.sum_suffix()) {
                histograms.entry(family).or_default().entry(labels.to_string()).or_default().sum += value;
            }
        }
    }

    let mut out = String::new();
    for (name, kind, help) in FAMILIES {
        let type_name = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram(_) => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {type_name}");
        match kind {
            Kind::Histogram(unit) => {
                for (labels, h) in histograms.get(name).into_iter().flatten() {
                    h.write(&mut out, name, labels, *unit);
                }
            }
            _ => {
                for (labels, value) in plain.get(name).into_iter().flatten() {
                    let _ = writeln!(out, "{name}{} {value}", braces(labels));
                }
            }
        }
    }
    out
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative (upper bound, count) pairs as stored.
    buckets: Vec<(f64, i64)>,
    /// In the unit's stored scale.
    sum: i64,
}

impl Histogram {
    fn write(&self, out: &mut String, name: &str, labels: &str, unit: Unit) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for bound in unit.bounds().iter().copied().chain([f64::INFINITY]) {
            cumulative += self.buckets.iter().filter(|(b, _)| *b == bound).map(|(_, c)| c).sum::<i64>();
            let le = if bound.is_infinite() { "+Inf".to_string() } else { bound.to_string() };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum as f64 / unit.scale());
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// `name{a="1",b="2"}` → (`name`, `a="1",b="2"`); a bare name has no labels.
fn split_key(key: &str) -> Option<(&str, &str)> {
    match key.split_once('{') {
        Some((name, rest)) => Some((name, rest.strip_suffix('}')?)),
        None => Some((key, "")),
    }
}

/// Removes the `le` label (always last, as we write it) from a label string.
fn take_le(labels: &str) -> (String, Option<&str>) {
    match labels.rsplit_once("le=\"") {
        Some((rest, le)) => (rest.trim_end_matches(',').to_string(), le.strip_suffix('"')),
        None => (labels.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(increments: impl IntoIterator<Item = (String, i64)>) -> Vec<(String, i64)> {
        let mut map: BTreeMap<String, i64> = BTreeMap::new();
        for (k, d) in increments {
            *map.entry(k).or_default() += d;
        }
        map.into_iter().collect()
    }

    #[test]
    fn request_recording_touches_three_keys_with_bounded_labels() {
        let inc = request_increments("detect", "POST", 502, "anonymous", Duration::from_millis(420));
        let keys: Vec<&str> = inc.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                r#"http_requests_total{handler="detect",method="POST",status="5xx",caller="anonymous"}"#,
                r#"http_request_duration_seconds_bucket{handler="detect",method="POST",le="0.5"}"#,
                r#"http_request_duration_seconds_sum_us{handler="detect",method="POST"}"#,
            ]
        );
        assert_eq!(inc[2].1, 420_000);
    }

    #[test]
    fn histogram_renders_cumulative_buckets_with_inf_equal_to_count() {
        let mut inc = Vec::new();
        for ms in [3, 40, 40, 250, 420, 60_000] {
            inc.extend(request_increments("tag", "POST", 200, "orch", Duration::from_millis(ms)));
        }
        let text = render(&store(inc));
        let bucket = |le: &str| -> i64 {
            let prefix = format!(r#"http_request_duration_seconds_bucket{{handler="tag",method="POST",le="{le}"}} "#);
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
                .parse()
                .unwrap()
        };
        assert_eq!(bucket("0.005"), 1);
        assert_eq!(bucket("0.05"), 3);
        assert_eq!(bucket("0.3"), 4);
        assert_eq!(bucket("0.5"), 5);
        assert_eq!(bucket("30"), 5);
        assert_eq!(bucket("+Inf"), 6);
        assert!(text.contains("http_request_duration_seconds_count{handler=\"tag\",method=\"POST\"} 6\n"));
        assert!(text.contains("http_request_duration_seconds_sum{handler=\"tag\",method=\"POST\"} 60.753\n"));
        assert!(
            text.contains("http_requests_total{handler=\"tag\",method=\"POST\",status=\"2xx\",caller=\"orch\"} 6\n")
        );
    }

    #[test]
    fn a_reused_crop_counts_its_outcome_and_no_download_or_decode() {
        let inc = image_increments(CROP_REUSED, Duration::ZERO, 0, None);
        assert_eq!(inc, vec![(r#"gateway_image_crops_total{outcome="reused"}"#.to_string(), 1)]);
        assert!(image_increments("ok", Duration::ZERO, 0, None).len() > 1);
    }

    #[test]
    fn image_steps_render_with_their_own_buckets() {
        let mut inc = image_increments("ok", Duration::from_millis(80), 3_400_000, Some(Duration::from_millis(450)));
        inc.extend(image_increments("too_large", Duration::from_millis(20), 15_000_001, None));
        let text = render(&store(inc));
        assert!(text.contains("gateway_image_crops_total{outcome=\"ok\"} 1\n"), "{text}");
        assert!(text.contains("gateway_image_crops_total{outcome=\"too_large\"} 1\n"));
        assert!(text.contains("gateway_image_fetch_bytes_bucket{le=\"5000000\"} 1\n"), "{text}");
        assert!(text.contains("gateway_image_fetch_bytes_bucket{le=\"25000000\"} 2\n"));
        assert!(text.contains("gateway_image_fetch_bytes_sum 18400001\n"));
        assert!(text.contains("gateway_image_fetch_bytes_count 2\n"));
        assert!(text.contains("gateway_image_fetch_duration_seconds_count 2\n"));
        assert!(text.contains("gateway_image_crop_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("gateway_image_crop_duration_seconds_sum 0.45\n"));
        assert!(text.contains("# TYPE gateway_image_fetch_bytes histogram\n"));
    }

    #[test]
    fn every_family_has_help_and_type_and_foreign_keys_are_ignored() {
        let text = render(&[("something_else".into(), 5), ("v1:writes".into(), 9)]);
        for (name, _, _) in FAMILIES {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(!text.contains("something_else") && !text.contains("v1:writes"));
    }

    #[test]
    fn gauges_and_counters_render_plainly() {
        let text = render(&store([
            (in_progress_key("detect", "POST"), 1),
            (in_progress_key("detect", "POST"), -1),
            (retry_key("detect_tags", "429"), 2),
            (cache_outcome_key("tag", true), 3),
            (reachable_key(), 1),
        ]));
        assert!(text.contains("http_requests_in_progress{handler=\"detect\",method=\"POST\"} 0\n"));
        assert!(text.contains("ximilar_retries_total{endpoint=\"detect_tags\",reason=\"429\"} 2\n"));
        assert!(text.contains("gateway_cache_hits_total{handler=\"tag\"} 3\n"));
        assert!(text.contains("\nximilar_reachable 1\n"));
    }

    #[test]
    fn counters_decode_from_sqlite_and_redis_encodings() {
        assert_eq!(decode_counter(&42i64.to_le_bytes()), Some(42));
        assert_eq!(decode_counter(&(-1i64).to_le_bytes()), Some(-1));
        assert_eq!(decode_counter(b"42"), Some(42));
        assert_eq!(decode_counter(b"-3"), Some(-3));
        assert_eq!(decode_counter(b"12345678"), Some(12_345_678), "8 ASCII digits are decimal");
        assert_eq!(decode_counter(b"abc"), None);
        assert_eq!(decode_counter(b""), None);
        assert_eq!(decode_counter(b"-"), None);
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(422), "4xx");
        assert_eq!(status_class(504), "5xx");
    }
}
