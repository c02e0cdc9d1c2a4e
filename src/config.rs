//! Gateway configuration: parsed from Spin component variables (names as in
//! spin.toml; set as `XIMILAR_<NAME>` through runtime-config.toml). Parsing is
//! pure: it takes a lookup function, so it is tested natively.

use std::time::Duration;

use crate::auth::Callers;
use crate::breaker::BreakerPolicy;
use crate::crop::CropLimits;
use crate::image_hosts::ImageHosts;
use crate::retry::RetryPolicy;

/// Every variable any component may read. A component sees only those its
/// `[component.x.variables]` maps; the rest take their defaults.
pub const VARIABLES: &[&str] = &[
    StateStore::VARIABLE,
    "api_token",
    "collection_id",
    "api_url",
    "timeout_ms",
    "attempt_timeout_ms",
    "max_retries",
    "backoff_base_ms",
    "backoff_max_ms",
    "retry_after_max_ms",
    "cache_ttl_s",
    "detect_path",
    "tags_path",
    "search_path",
    "health_path",
    "tag_mode",
    "classify_path",
    "task_id",
    "search_fields",
    "search_filter_field",
    "health_timeout_ms",
    "health_cache_s",
    "breaker_failures",
    "breaker_cooldown_ms",
    "inbound_keys",
    "inbound_protect_metrics",
    "search_crop",
    "search_crop_margin_pct",
    "image_host_a",
    "image_host_b",
    "image_host_c",
    "image_max_bytes",
    "image_max_pixels",
];

/// The variables naming the image hosts crop mode may fetch from (spin.toml
/// grants the search component the same values as outbound hosts).
pub const IMAGE_HOST_VARIABLES: [&str; 3] = ["image_host_a", "image_host_b", "image_host_c"];

/// Who may call the gateway: read by the components that check callers, and
/// by nothing else (the key list is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Empty: no key needed, every caller is `anonymous` (the private-network default).
    pub callers: Callers,
    /// Whether `/metrics` needs a key too.
    pub protect_metrics: bool,
}

impl Inbound {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Inbound, String> {
        let callers = Callers::parse(&get("inbound_keys").unwrap_or_default())?;
        let protect_metrics = match get("inbound_protect_metrics").unwrap_or_default().trim() {
            "" | "false" => false,
            "true" => true,
            _ => return Err("XIMILAR_INBOUND_PROTECT_METRICS must be true or false".into()),
        };
        Ok(Inbound { callers, protect_metrics })
    }
}

/// Where the shared state (counters, breaker, cache, leases) lives: read by
/// every component, before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStore {
    /// The `cache` and `metrics` key-value stores (the default): in memory on
    /// one node, or Redis, shared by replicas.
    KeyValue,
    /// Spin's SQLite database `gateway`, a file: answers survive restarts, and
    /// its queries run off the instance's thread.
    Sqlite,
}

impl StateStore {
    pub const VARIABLE: &'static str = "state_store";

    pub fn parse(value: Option<&str>) -> Result<StateStore, String> {
        match value.map(str::trim).unwrap_or_default() {
            "" | "key-value" => Ok(StateStore::KeyValue),
            "sqlite" => Ok(StateStore::Sqlite),
            _ => Err("XIMILAR_STATE_STORE must be key-value or sqlite".into()),
        }
    }
}

/// How `/tag` asks Ximilar about an image that `/detect` has not seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMode {
    /// `POST /tagging/fashion/v2/tags` (no training needed).
    Fashion,
    /// A custom trained model: `POST /recognition/v2/classify/` with `task_id`.
    Classify { task_id: String },
}

/// Crop mode of `/search` (`XIMILAR_SEARCH_CROP=true`): a `crop_url`'s box is cut
/// out of the source image by the gateway and sent to Ximilar as `_base64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCrop {
    /// Where source images may be fetched from; never empty.
    pub hosts: ImageHosts,
    /// Largest download, in bytes.
    pub max_bytes: u64,
    pub limits: CropLimits,
}

/// Longest side of a crop sent to Ximilar: above what its models look at
/// (they work on images of about 512 to 600 px), well below a photo's size.
pub const CROP_MAX_SIDE: u32 = 1024;
pub const CROP_JPEG_QUALITY: u8 = 90;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub api_token: String,
    pub api_url: String,
    pub collection_id: String,
    /// Overall deadline of one gateway call, retries and waits included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Zero disables the cache.
    pub cache_ttl: Duration,
    pub detect_path: String,
    pub tags_path: String,
    pub search_path: String,
    pub health_path: String,
    pub classify_path: String,
    pub tag_mode: TagMode,
    pub search_fields: Vec<String>,
    /// Field of the collection's records that `category` filters on; none by default.
    pub search_filter_field: Option<String>,
    pub health_timeout: Duration,
    pub health_cache: Duration,
    pub breaker: BreakerPolicy,
    /// `None`: `/search` sends the source image's URL, as it always has.
    pub search_crop: Option<SearchCrop>,
}

impl Config {
    /// Reads every knob through `get` (a missing or empty value means the default;
    /// a component only sees the variables spin.toml maps to it, and that is fine).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let text = |name: &str, default: &str| -> String {
            get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
        };
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            let raw = text(name, &default.to_string());
            match raw.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!("XIMILAR_{} must be an integer from 0 to {max}", name.to_ascii_uppercase())),
            }
        };
        let path = |name: &str, default: &str| -> Result<String, String> {
            let p = text(name, default);
            if p.starts_with('/') {
                Ok(p)
            } else {
                Err(format!("XIMILAR_{} must start with '/'", name.to_ascii_uppercase()))
            }
        };

        let api_url = text("api_url", "https://api.ximilar.com").trim_end_matches('/').to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err("XIMILAR_API_URL must be an http(s) URL".into());
        }
        let tag_mode = match text("tag_mode", "fashion").as_str() {
            "fashion" => TagMode::Fashion,
            "classify" => {
                let task_id = text("task_id", "");
                if task_id.is_empty() {
                    return Err("XIMILAR_TAG_MODE=classify needs XIMILAR_TASK_ID".into());
                }
                TagMode::Classify { task_id }
            }
            _ => return Err("XIMILAR_TAG_MODE must be 'fashion' or 'classify'".into()),
        };
        let search_fields = text("search_fields", "_id,_url")
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect();
        let search_filter_field = Some(text("search_filter_field", "")).filter(|f| !f.is_empty());

        let timeout = Duration::from_millis(number("timeout_ms", 30_000, 600_000)?.max(1));
        let retry = RetryPolicy {
            max_retries: number("max_retries", 3, 10)? as u32,
            base_backoff: Duration::from_millis(number("backoff_base_ms", 200, 60_000)?),
            max_backoff: Duration::from_millis(number("backoff_max_ms", 5_000, 600_000)?),
            max_retry_after: Duration::from_millis(number("retry_after_max_ms", 10_000, 600_000)?),
            attempt_timeout: Duration::from_millis(number("attempt_timeout_ms", 10_000, 600_000)?.max(1)),
        };
        let breaker = BreakerPolicy {
            failures: number("breaker_failures", 5, 1_000)? as u32,
            cooldown: Duration::from_millis(number("breaker_cooldown_ms", 10_000, 3_600_000)?),
            max_open: retry.max_retry_after,
            // A probe is one gateway call: it ends by the overall deadline.
            probe_lease: timeout,
        };

        // Spin grants these as outbound hosts: an empty value is an invalid grant, and Spin then
        // refuses every outbound call of the component, Ximilar's too. Say so instead.
        for name in IMAGE_HOST_VARIABLES {
            if get(name).is_some_and(|v| v.trim().is_empty()) {
                return Err(format!(
                    "XIMILAR_{} is set but empty, which Spin reads as an invalid outbound host: unset it or give an origin",
                    name.to_ascii_uppercase()
                ));
            }
        }
        let search_crop = match text("search_crop", "false").as_str() {
            "false" => None,
            "true" => {
                let hosts =
                    ImageHosts::parse(IMAGE_HOST_VARIABLES.iter().map(|name| {
                        (format!("XIMILAR_{}", name.to_ascii_uppercase()), get(name).unwrap_or_default())
                    }))?;
                if hosts.is_empty() {
                    return Err(
                        "XIMILAR_SEARCH_CROP=true needs an image host in XIMILAR_IMAGE_HOST_A (or _B, _C)".into()
                    );
                }
                Some(SearchCrop {
                    hosts,
                    max_bytes: number("image_max_bytes", 15_000_000, 100_000_000)?.max(1),
                    limits: CropLimits {
                        max_pixels: number("image_max_pixels", 50_000_000, 200_000_000)?.max(1),
                        max_side: CROP_MAX_SIDE,
                        margin_pct: number("search_crop_margin_pct", 5, 100)? as u32,
                        quality: CROP_JPEG_QUALITY,
                    },
                })
            }
            _ => return Err("XIMILAR_SEARCH_CROP must be true or false".into()),
        };

        Ok(Config {
            api_token: text("api_token", ""),
            api_url,
            collection_id: text("collection_id", ""),
            timeout,
            retry,
            cache_ttl: Duration::from_secs(number("cache_ttl_s", 3600, 30 * 86_400)?),
            detect_path: path("detect_path", "/tagging/fashion/v2/detect_tags")?,
            tags_path: path("tags_path", "/tagging/fashion/v2/tags")?,
            search_path: path("search_path", "/similarity/fashion-new/v2/visualKNN")?,
            health_path: path("health_path", "/account/v2/details/")?,
            classify_path: path("classify_path", "/recognition/v2/classify/")?,
            tag_mode,
            search_fields,
            search_filter_field,
            health_timeout: Duration::from_millis(number("health_timeout_ms", 3_000, 60_000)?.max(1)),
            health_cache: Duration::from_secs(number("health_cache_s", 5, 3_600)?),
            breaker,
            search_crop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = config(&[("api_token", "t")]).unwrap();
        assert_eq!(c.api_url, "https://api.ximilar.com");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.retry.max_retries, 3);
        assert_eq!(c.cache_ttl, Duration::from_secs(3600));
        assert_eq!(c.detect_path, "/tagging/fashion/v2/detect_tags");
        assert_eq!(c.tags_path, "/tagging/fashion/v2/tags");
        assert_eq!(c.search_path, "/similarity/fashion-new/v2/visualKNN");
        assert_eq!(c.health_path, "/account/v2/details/");
        assert_eq!(c.tag_mode, TagMode::Fashion);
        assert_eq!(c.search_fields, vec!["_id", "_url"]);
        assert_eq!(c.search_filter_field, None);
        assert_eq!((c.breaker.failures, c.breaker.cooldown), (5, Duration::from_secs(10)));
        assert_eq!((c.breaker.max_open, c.breaker.probe_lease), (Duration::from_secs(10), Duration::from_secs(30)));
    }

    #[test]
    fn knobs_override_defaults() {
        let c = config(&[
            ("api_token", "t"),
            ("api_url", "http://127.0.0.1:9999/"),
            ("timeout_ms", "1500"),
            ("max_retries", "0"),
            ("cache_ttl_s", "0"),
            ("tag_mode", "classify"),
            ("task_id", "abc"),
            ("search_fields", "_id, _url, brand ,price"),
            ("search_filter_field", "category"),
        ])
        .unwrap();
        assert_eq!(c.api_url, "http://127.0.0.1:9999");
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.retry.max_retries, 0);
        assert!(c.cache_ttl.is_zero(), "0 turns the cache off");
        assert_eq!(c.tag_mode, TagMode::Classify { task_id: "abc".into() });
        assert_eq!(c.search_fields, vec!["_id", "_url", "brand", "price"]);
        assert_eq!(c.search_filter_field.as_deref(), Some("category"));
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        assert!(config(&[("timeout_ms", "soon")]).unwrap_err().contains("XIMILAR_TIMEOUT_MS"));
        assert!(config(&[("max_retries", "99")]).unwrap_err().contains("XIMILAR_MAX_RETRIES"));
        assert!(config(&[("tag_mode", "classify")]).unwrap_err().contains("XIMILAR_TASK_ID"));
        assert!(config(&[("detect_path", "tagging")]).unwrap_err().contains("XIMILAR_DETECT_PATH"));
        assert!(config(&[("api_url", "api.ximilar.com")]).unwrap_err().contains("XIMILAR_API_URL"));
    }

    #[test]
    fn errors_name_the_variable_never_its_value() {
        for (name, value) in
            [("timeout_ms", "tok-SECRET-1"), ("tag_mode", "tok-SECRET-2"), ("max_retries", "tok-SECRET-3")]
        {
            let why = config(&[(name, value)]).unwrap_err();
            assert!(why.contains(&format!("XIMILAR_{}", name.to_ascii_uppercase())) && !why.contains(value), "{why}");
        }
    }

    #[test]
    fn crop_mode_is_off_by_default_and_needs_an_image_host() {
        assert_eq!(config(&[]).unwrap().search_crop, None);
        let why = config(&[("search_crop", "true")]).unwrap_err();
        assert!(why.contains("XIMILAR_IMAGE_HOST_A"), "{why}");
        let placeholders = [("search_crop", "true"), ("image_host_a", "https://image-host-a.invalid")];
        assert!(config(&placeholders).is_err(), "the manifest's placeholder allows nothing");
        assert!(config(&[("search_crop", "yes")]).unwrap_err().contains("XIMILAR_SEARCH_CROP"));
        let bad_host = config(&[("search_crop", "true"), ("image_host_c", "cdn.shop.example")]).unwrap_err();
        assert!(bad_host.starts_with("XIMILAR_IMAGE_HOST_C ") && !bad_host.contains("cdn.shop"), "{bad_host}");
    }

    #[test]
    fn an_empty_image_host_is_a_config_error_even_with_the_mode_off() {
        let why = config(&[("image_host_b", "")]).unwrap_err();
        assert!(why.contains("XIMILAR_IMAGE_HOST_B") && why.contains("unset it"), "{why}");
        assert!(config(&[("image_host_b", "https://image-host-b.invalid")]).is_ok());
    }

    #[test]
    fn crop_mode_knobs_and_defaults() {
        let on = config(&[("search_crop", "true"), ("image_host_b", "https://*.shop.example")]).unwrap();
        let crop = on.search_crop.unwrap();
        assert!(crop.hosts.allows(&"https://cdn.shop.example/a.jpg".parse().unwrap()));
        assert_eq!((crop.max_bytes, crop.limits.max_pixels, crop.limits.margin_pct), (15_000_000, 50_000_000, 5));
        let tuned = config(&[
            ("search_crop", "true"),
            ("image_host_a", "http://127.0.0.1:9100"),
            ("image_max_bytes", "1000"),
            ("image_max_pixels", "2000"),
            ("search_crop_margin_pct", "0"),
        ])
        .unwrap()
        .search_crop
        .unwrap();
        assert_eq!((tuned.max_bytes, tuned.limits.max_pixels, tuned.limits.margin_pct), (1000, 2000, 0));
    }

    #[test]
    fn a_missing_token_parses_as_empty_for_the_endpoints_to_refuse() {
        assert_eq!(config(&[]).unwrap().api_token, "");
        assert_eq!(config(&[("api_token", "  ")]).unwrap().api_token, "");
    }

    #[test]
    fn the_state_store_is_key_value_unless_sqlite_is_asked_for() {
        assert_eq!(StateStore::parse(None), Ok(StateStore::KeyValue));
        assert_eq!(StateStore::parse(Some("key-value")), Ok(StateStore::KeyValue));
        assert_eq!(StateStore::parse(Some(" sqlite ")), Ok(StateStore::Sqlite));
        let why = StateStore::parse(Some("redis://secret@host")).unwrap_err();
        assert!(!why.contains("secret"), "the value is not echoed: {why}");
    }
}
