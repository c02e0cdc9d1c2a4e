//! What a caller's `Cache-Control` asks of the response cache: `no-cache`, a
//! fresh answer from Ximilar that replaces the cached one; `max-age=N`, a cached
//! answer only if it is at most N seconds old. Every other directive is ignored,
//! as RFC 9111 lets a cache ignore what it does not implement.

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub no_cache: bool,
    /// Seconds.
    pub max_age: Option<u64>,
}

impl CacheControl {
    /// From the request's `Cache-Control` value (absent or unreadable: no wishes).
    pub fn parse(header: Option<&str>) -> CacheControl {
        let mut wishes = CacheControl::default();
        for directive in header.unwrap_or_default().split(',') {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-cache") {
                wishes.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                // A malformed age is ignored, not read as zero.
                if let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok()) {
                    wishes.max_age = Some(wishes.max_age.map_or(seconds, |m| m.min(seconds)));
                }
            }
        }
        wishes
    }

    /// The oldest store time (Unix ms) an answer may have to be served, for a
    /// request that started at `started_ms`, now `now_ms`. A refresh takes only
    /// an answer stored after it began; one stored in the very millisecond it
    /// began may come from a call that ended before it, so that one does not count.
    pub fn not_before(&self, started_ms: u64, now_ms: u64) -> u64 {
        if self.no_cache {
            return started_ms + 1;
        }
        self.max_age.map_or(0, |seconds| now_ms.saturating_sub(seconds.saturating_mul(1000)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_case_blind_and_the_rest_ignored() {
        assert_eq!(CacheControl::parse(None), CacheControl::default());
        assert!(CacheControl::parse(Some("No-Cache")).no_cache);
        assert_eq!(CacheControl::parse(Some("max-age=60, no-transform")).max_age, Some(60));
        assert_eq!(CacheControl::parse(Some(r#"MAX-AGE="30""#)).max_age, Some(30));
        assert_eq!(CacheControl::parse(Some("max-age=60, max-age=5")).max_age, Some(5));
        assert_eq!(CacheControl::parse(Some("max-age=soon, foo=bar, private")), CacheControl::default());
        assert_eq!(CacheControl::parse(Some("max-age=-1")).max_age, None);
    }

    #[test]
    fn no_cache_wants_an_answer_from_this_request_on_and_max_age_one_young_enough() {
        let now = 1_000_000;
        assert_eq!(CacheControl::default().not_before(now - 5, now), 0);
        assert_eq!(CacheControl::parse(Some("no-cache, max-age=60")).not_before(now - 5, now), now - 4);
        assert_eq!(CacheControl::parse(Some("max-age=60")).not_before(now - 5, now), now - 60_000);
        assert_eq!(CacheControl::parse(Some("max-age=99999999999999")).not_before(now, now), 0);
    }
}
