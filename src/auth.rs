//! Inbound authentication: who may spend the gateway's Ximilar credits, and on what.
//!
//! `XIMILAR_INBOUND_KEYS` is a comma-separated list of callers:
//!
//! ```text
//! name:key[:budget[:scopes]]          the key itself
//! name:sha256:<hex>[:budget[:scopes]] its SHA-256, for ops who keep only a digest in .env
//! ```
//!
//! `budget` is how many billed Ximilar calls the caller may cause per UTC day
//! (`-` for no limit), `scopes` the endpoints the key opens, joined by `+`
//! (`detect+tag+search+metrics`; without it, all of them). A scrape-only key is
//! `prometheus:<key>:0:metrics`. When the list is set, a request must carry
//! `Authorization: Bearer <key>`.
//!
//! The syntax is strict on purpose: a malformed list is a configuration error
//! naming the entry's position, never a silent reinterpretation, and never
//! "authentication off". Keys are compared as SHA-256 digests, against every
//! configured digest, in constant time, so neither timing nor an error says
//! which key was close. Only a caller's *name* is ever logged or used as a label.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Shortest key accepted: anything shorter is guessable.
pub const MIN_KEY_LEN: usize = 16;

/// Largest daily budget: far above any real day, far below any overflow.
pub const MAX_BUDGET: u64 = 1_000_000_000;

/// The label of requests when inbound keys are off.
pub const ANONYMOUS: &str = "anonymous";

/// What a key may be used for: the endpoints, by their handler name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The endpoints a key can open (`/health` never needs one).
    pub const NAMES: [&'static str; 4] = ["detect", "tag", "search", "metrics"];
    pub const ALL: Scopes = Scopes(0b1111);

    fn bit(name: &str) -> Option<u8> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| 1 << i)
    }

    /// `detect+tag`, or `all`.
    pub fn parse(text: &str) -> Option<Scopes> {
        if text == "all" {
            return Some(Scopes::ALL);
        }
        let mut bits = 0;
        for name in text.split('+') {
            bits |= Scopes::bit(name)?;
        }
        Some(Scopes(bits))
    }

    pub fn allows(self, endpoint: &str) -> bool {
        Scopes::bit(endpoint).is_some_and(|bit| self.0 & bit != 0)
    }
}

/// A configured caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    digest: [u8; 32],
    /// Billed Ximilar calls allowed per UTC day, if limited.
    pub budget: Option<u64>,
    pub scopes: Scopes,
}

impl fmt::Debug for Caller {
    // The digest of a plain key is as good as the key to a brute force of short keys: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The callers of `XIMILAR_INBOUND_KEYS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callers(Vec<Caller>);

impl Callers {
    /// Parses the list; an unset or blank value means no keys. Errors name the
    /// entry by position, never its content.
    pub fn parse(text: &str) -> Result<Callers, String> {
        let mut callers: Vec<Caller> = Vec::new();
        if text.trim().is_empty() {
            return Ok(Callers(callers));
        }
        for (i, entry) in text.split(',').map(str::trim).enumerate() {
            let caller = parse_entry(entry).map_err(|why| format!("XIMILAR_INBOUND_KEYS entry {}: {why}", i + 1))?;
            let clash = callers.iter().find(|c| c.name == caller.name || c.digest == caller.digest);
            if let Some(other) = clash {
                let what = if other.name == caller.name { "name" } else { "key" };
                return Err(format!("XIMILAR_INBOUND_KEYS entry {}: the same {what} as an earlier entry", i + 1));
            }
            callers.push(caller);
        }
        Ok(Callers(callers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Caller> {
        self.0.iter()
    }

    /// The caller an `Authorization` header names, if it carries a configured key.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&Caller> {
        let presented = authorization?.strip_prefix("Bearer ").or_else(|| authorization?.strip_prefix("bearer "))?;
        let digest = sha256(presented.trim().as_bytes());
        // Compare with every key, whatever matches, so the time does not depend on which.
        let mut found = None;
        for caller in &self.0 {
            if bool::from(caller.digest[..].ct_eq(&digest[..])) {
                found = Some(caller);
            }
        }
        found
    }
}

fn parse_entry(entry: &str) -> Result<Caller, &'static str> {
    const SHAPE: &str = "expected name:key[:budget[:scopes]] or name:sha256:<hex>[:budget[:scopes]]";
    if entry.is_empty() {
        return Err("the entry is empty");
    }
    let parts: Vec<&str> = entry.split(':').collect();
    let (name, digest, rest) = match parts[..] {
        [name, "sha256", hex, ref rest @ ..] => (name, parse_hex(hex).ok_or("sha256 needs 64 hex digits")?, rest),
        [name, key, ref rest @ ..] => (name, sha256(check_key(key)?.as_bytes()), rest),
        _ => return Err(SHAPE),
    };
    if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        return Err("a name is 1-32 characters of A-Z a-z 0-9 - _");
    }
    if name == ANONYMOUS {
        return Err("'anonymous' is the name of requests without a key");
    }
    let (budget, scopes) = match rest {
        [] => (None, Scopes::ALL),
        [budget] => (parse_budget(budget)?, Scopes::ALL),
        [budget, scopes] => {
            let scopes = Scopes::parse(scopes).ok_or("scopes are detect, tag, search, metrics joined by +, or all")?;
            (parse_budget(budget)?, scopes)
        }
        _ => return Err(SHAPE),
    };
    Ok(Caller { name: name.to_string(), digest, budget, scopes })
}

fn check_key(key: &str) -> Result<&str, &'static str> {
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a key has no whitespace");
    }
    if key.chars().count() < MIN_KEY_LEN {
        return Err("a key is at least 16 characters");
    }
    Ok(key)
}

fn parse_budget(text: &str) -> Result<Option<u64>, &'static str> {
    const WHY: &str = "a budget is a whole number of calls per day from 0 to 1000000000, or - for no limit";
    if text == "-" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WHY);
    }
    match text.parse::<u64>() {
        Ok(n) if n <= MAX_BUDGET => Ok(Some(n)),
        _ => Err(WHY),
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The store key counting a caller's billed calls on one UTC day.
pub fn budget_key(name: &str, now_ms: u64) -> String {
    format!("budget:{name}:{}", now_ms / DAY_MS)
}

/// Whole seconds until the next UTC midnight (at least 1): when a spent budget is new again.
pub fn seconds_until_midnight(now_ms: u64) -> u32 {
    (DAY_MS - now_ms % DAY_MS).div_ceil(1000).max(1) as u32
}

const DAY_MS: u64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1-secret-0123456789";
    const K2: &str = "k2-secret-0123456789";
    const K3: &str = "k3-secret-0123456789";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn plain_and_hashed_keys_with_budgets_and_scopes() {
        let digest = hex(&sha256(K2.as_bytes()));
        let text = format!(" orch:{K1} , batch:sha256:{digest}:500 ,prometheus:{K3}:0:metrics");
        let callers = Callers::parse(&text).unwrap();
        let who = |h: &str| callers.authenticate(Some(h)).map(|c| (c.name.as_str(), c.budget));
        assert_eq!(who(&format!("Bearer {K1}")), Some(("orch", None)));
        assert_eq!(who(&format!("Bearer {K2}")), Some(("batch", Some(500))));
        assert_eq!(who(&format!("Bearer {K3}")), Some(("prometheus", Some(0))));
        assert_eq!(who(&format!("Bearer {}", K1.to_uppercase())), None);
        assert_eq!(who(&format!("Basic {K1}")), None);
        assert_eq!(who("Bearer "), None);
        assert_eq!(callers.authenticate(None), None);
        let scrape = callers.authenticate(Some(&format!("Bearer {K3}"))).unwrap().scopes;
        assert!(scrape.allows("metrics") && !scrape.allows("detect") && !scrape.allows("search"));
        let orch = callers.authenticate(Some(&format!("Bearer {K1}"))).unwrap().scopes;
        assert!(Scopes::NAMES.iter().all(|n| orch.allows(n)));
    }

    #[test]
    fn scopes_and_unlimited_budgets() {
        let callers = Callers::parse(&format!("a:{K1}:-:detect+tag,b:{K2}:7:all")).unwrap();
        let a = callers.authenticate(Some(&format!("Bearer {K1}"))).unwrap();
        assert_eq!(a.budget, None);
        assert!(a.scopes.allows("detect") && a.scopes.allows("tag") && !a.scopes.allows("search"));
        assert!(!a.scopes.allows("metrics") && !a.scopes.allows("health"));
        let b = callers.authenticate(Some(&format!("Bearer {K2}"))).unwrap();
        assert_eq!((b.budget, b.scopes), (Some(7), Scopes::ALL));
    }

    #[test]
    fn blank_means_no_keys_but_nothing_else_does() {
        assert!(Callers::parse("").unwrap().is_empty());
        assert!(Callers::parse("  ").unwrap().is_empty());
        for text in [",", " , ", ",,"] {
            assert!(Callers::parse(text).is_err(), "{text:?} must not switch keys off");
        }
    }

    #[test]
    fn malformed_lists_are_errors_naming_the_position() {
        let digest = hex(&sha256(K1.as_bytes()));
        let cases = [
            (format!("a:{K1},"), 2, "empty"),
            (format!(",a:{K1}"), 1, "empty"),
            ("orch".to_string(), 1, "expected"),
            (format!(":{K1}"), 1, "name"),
            ("orch:".to_string(), 1, "16 characters"),
            ("orch:short-key:5".to_string(), 1, "16 characters"),
            (format!("orch:{K1}:lots"), 1, "budget"),
            (format!("orch:{K1}:"), 1, "budget"),
            (format!("orch:{K1}:-5"), 1, "budget"),
            (format!("orch:{K1}:1000000001"), 1, "budget"),
            (format!("orch:{K1}:99999999999999999999"), 1, "budget"),
            (format!("orch:{K1}:5:"), 1, "scopes"),
            (format!("orch:{K1}:5:detect+bill"), 1, "scopes"),
            (format!("orch:{K1}:5:health"), 1, "scopes"),
            (format!("orch:{K1}:5:all:x"), 1, "expected"),
            ("a:sha256:abc".to_string(), 1, "64 hex"),
            (format!("bad name:{K1}"), 1, "name"),
            (format!("anonymous:{K1}"), 1, "anonymous"),
            (format!("a:{K1},a:{K2}"), 2, "same name"),
            (format!("a:{K1},b:{K1}"), 2, "same key"),
            (format!("a:{K1},b:sha256:{digest}"), 2, "same key"),
            ("a:k1-secret 0123456789".to_string(), 1, "whitespace"),
        ];
        for (text, position, why) in cases {
            let error = Callers::parse(&text).unwrap_err();
            assert!(error.starts_with(&format!("XIMILAR_INBOUND_KEYS entry {position}: ")), "{text}: {error}");
            assert!(error.contains(why), "{text}: {error}");
            assert!(!error.contains("secret") && !error.contains(&digest), "{text}: {error}");
        }
    }

    #[test]
    fn a_key_with_digits_after_a_colon_is_never_split_into_key_and_budget() {
        // Before, `orch:abc:123` quietly became key `abc` with budget 123.
        let error = Callers::parse("orch:abc:123").unwrap_err();
        assert!(error.contains("16 characters"), "{error}");
    }

    #[test]
    fn debug_never_shows_the_key_or_its_digest() {
        let callers = Callers::parse(&format!("orch:{K1}")).unwrap();
        let shown = format!("{callers:?}");
        assert!(shown.contains("orch") && !shown.contains(K1) && !shown.contains(&hex(&sha256(K1.as_bytes()))[..16]));
    }

    #[test]
    fn budgets_are_per_utc_day() {
        let day = 86_400_000;
        assert_eq!(budget_key("orch", 3 * day), budget_key("orch", 4 * day - 1));
        assert_ne!(budget_key("orch", 3 * day), budget_key("orch", 4 * day));
        assert_eq!(seconds_until_midnight(3 * day + 1), 86_400);
        assert_eq!(seconds_until_midnight(4 * day - 1_500), 2);
        assert_eq!(seconds_until_midnight(4 * day - 1), 1);
    }
}
