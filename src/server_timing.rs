//! The `Server-Timing` header (W3C Server Timing) every answer carries, so the
//! orchestrator can tell how much of a request's time was Ximilar's and how much
//! the gateway's own. Only durations, counts and the cache outcome: never a URL,
//! a key or anything a caller sent.

use std::fmt::Write;
use std::time::Duration;

/// What one request spent its time on.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Timing {
    /// From the request's arrival to its answer.
    pub total: Duration,
    /// Every try sent to Ximilar, end to end (waits between tries not included).
    pub ximilar: Duration,
    pub tries: usize,
    /// Crop mode's download and crop, when the request took that step.
    pub image: Option<Duration>,
    /// `HIT`, `MISS` or `REFRESH`, when the cache was consulted.
    pub cache: Option<&'static str>,
}

impl Timing {
    /// The header value: `gateway` (the total less Ximilar and the image step),
    /// then `ximilar` with its tries, `image`, `cache` and `total`.
    pub fn header(&self) -> String {
        let outside = self.ximilar + self.image.unwrap_or_default();
        let mut value = format!("gateway;dur={}", millis(self.total.saturating_sub(outside)));
        if self.tries > 0 {
            let tries = if self.tries == 1 { "1 try".to_string() } else { format!("{} tries", self.tries) };
            let _ = write!(value, ", ximilar;dur={};desc=\"{tries}\"", millis(self.ximilar));
        }
        if let Some(image) = self.image {
            let _ = write!(value, ", image;dur={}", millis(image));
        }
        if let Some(cache) = self.cache {
            let _ = write!(value, ", cache;desc={cache}");
        }
        let _ = write!(value, ", total;dur={}", millis(self.total));
        value
    }
}

/// Milliseconds with three decimals, as Server-Timing's `dur` expects.
fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_splits_its_time_between_ximilar_and_the_gateway() {
        let timing = Timing {
            total: Duration::from_micros(262_500),
            ximilar: Duration::from_millis(250),
            tries: 2,
            image: None,
            cache: Some("MISS"),
        };
        assert_eq!(
            timing.header(),
            r#"gateway;dur=12.500, ximilar;dur=250.000;desc="2 tries", cache;desc=MISS, total;dur=262.500"#
        );
    }

    #[test]
    fn a_hit_is_all_gateway_and_crop_mode_shows_its_image_step() {
        let hit = Timing { total: Duration::from_micros(1_250), cache: Some("HIT"), ..Timing::default() };
        assert_eq!(hit.header(), "gateway;dur=1.250, cache;desc=HIT, total;dur=1.250");
        let crop = Timing {
            total: Duration::from_millis(300),
            ximilar: Duration::from_millis(100),
            tries: 1,
            image: Some(Duration::from_millis(150)),
            cache: Some("MISS"),
        };
        let header = crop.header();
        assert!(
            header.starts_with("gateway;dur=50.000, ximilar;dur=100.000;desc=\"1 try\", image;dur=150.000"),
            "{header}"
        );
    }

    #[test]
    fn the_gateway_share_never_goes_negative() {
        let odd = Timing {
            total: Duration::from_millis(1),
            ximilar: Duration::from_millis(2),
            tries: 1,
            ..Timing::default()
        };
        assert!(odd.header().starts_with("gateway;dur=0.000"), "{}", odd.header());
    }
}
