//! Inbound authentication: who may spend the gateway's Ximilar credits.
//!
//! `XIMILAR_INBOUND_KEYS` is a comma-separated list of callers: `name:key`, or
//! `name:sha256:<hex>` for ops who keep only a digest in `.env`, each optionally
//! followed by `:<budget>` (upstream calls the caller may cause per UTC day).
//! When it is set, a request must carry `Authorization: Bearer <key>`. Every
//! key is compared as its SHA-256 digest, against every configured digest, in
//! constant time, so neither the timing nor an error says which key was close.
//! Only the caller's *name* is ever logged or used as a label.

use std::fmt;

/// A configured caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    digest: [u8; 32],
    /// Upstream calls allowed per UTC day, if limited.
    pub budget: Option<u64>,
}

impl fmt::Debug for Caller {
    // The digest of a plain key is as good as the key to a brute force of short keys: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).field("budget", &self.budget).finish_non_exhaustive()
    }
}

/// The callers of `XIMILAR_INBOUND_KEYS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callers(Vec<Caller>);

/// The label of requests when inbound keys are off.
pub const ANONYMOUS: &str = "anonymous";

impl Callers {
    /// Parses the list. Errors name the entry by position, never its content.
    pub fn parse(text: &str) -> Result<Callers, String> {
        let mut callers: Vec<Caller> = Vec::new();
        for (i, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let bad = |why: &str| format!("XIMILAR_INBOUND_KEYS entry {}: {why}", i + 1);
            let parts: Vec<&str> = entry.split(':').collect();
            let (name, digest, budget) = match parts[..] {
                [name, "sha256", hex] => (name, parse_hex(hex).ok_or_else(|| bad("sha256 needs 64 hex digits"))?, None),
                [name, "sha256", hex, budget] => {
                    (name, parse_hex(hex).ok_or_else(|| bad("sha256 needs 64 hex digits"))?, Some(budget))
                }
                [name, key] => (name, sha256(key.as_bytes()), None),
                [name, key, budget] => (name, sha256(key.as_bytes()), Some(budget)),
                _ => return Err(bad("expected name:key, name:key:budget or name:sha256:<hex>[:budget]")),
            };
            if name.is_empty()
                || name.len() > 32
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(bad("a name is 1-32 characters of A-Z a-z 0-9 - _"));
            }
            if name == ANONYMOUS || callers.iter().any(|c| c.name == name) {
                return Err(bad("names must be unique and not 'anonymous'"));
            }
            if parts[1].is_empty() {
                return Err(bad("the key is empty"));
            }
            let budget = match budget {
                Some(b) => Some(b.parse::<u64>().map_err(|_| bad("a budget is a whole number of calls per day"))?),
                None => None,
            };
            callers.push(Caller { name: name.to_string(), digest, budget });
        }
        Ok(Callers(callers))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The caller an `Authorization` header names, if it carries a configured key.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&Caller> {
        let presented = authorization?.strip_prefix("Bearer ").or_else(|| authorization?.strip_prefix("bearer "))?;
        let digest = sha256(presented.trim().as_bytes());
        // Compare with every key, whatever matches, so the time does not depend on which.
        let mut found = None;
        for caller in &self.0 {
            if constant_time_eq(&caller.digest, &digest) {
                found = Some(caller);
            }
        }
        found
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal bytes, in time that depends only on the length.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The store key counting a caller's upstream calls on one UTC day.
pub fn budget_key(name: &str, now_ms: u64) -> String {
    format!("budget:{name}:{}", now_ms / DAY_MS)
}

/// Whole seconds until the next UTC midnight (at least 1): when a spent budget is new again.
pub fn seconds_until_midnight(now_ms: u64) -> u32 {
    (DAY_MS - now_ms % DAY_MS).div_ceil(1000).max(1) as u32
}

const DAY_MS: u64 = 86_400_000;

/// SHA-256 (FIPS 180-4), for comparing keys by digest without a dependency.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (state, add) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(add);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let two_blocks = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(hex(&sha256(two_blocks)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        assert_eq!(hex(&sha256(&[b'a'; 1000])), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3");
    }

    #[test]
    fn plain_and_hashed_keys_with_budgets() {
        let digest = hex(&sha256(b"k2-secret"));
        let callers = Callers::parse(&format!(" orch:k1-secret , batch:sha256:{digest}:500 ,ops:k3:0")).unwrap();
        let who = |h: &str| callers.authenticate(Some(h)).map(|c| (c.name.as_str(), c.budget));
        assert_eq!(who("Bearer k1-secret"), Some(("orch", None)));
        assert_eq!(who("Bearer k2-secret"), Some(("batch", Some(500))));
        assert_eq!(who("Bearer k3"), Some(("ops", Some(0))));
        assert_eq!(who("Bearer k1-secreT"), None);
        assert_eq!(who("Basic k1-secret"), None);
        assert_eq!(who("Bearer "), None);
        assert_eq!(callers.authenticate(None), None);
        assert!(Callers::parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry_never_the_key() {
        for bad in ["orch", "orch:", "orch:k:lots", "a:sha256:abc", "bad name:k", "anonymous:k", "a:k,a:j", "a:b:c:d:e"]
        {
            let why = Callers::parse(&format!("{bad},ok:fine")).unwrap_err();
            assert!(why.starts_with("XIMILAR_INBOUND_KEYS entry "), "{bad}: {why}");
            assert!(!why.contains("fine") && (bad.len() < 3 || !why.contains(&bad[2..])), "{bad}: {why}");
        }
        let shown = format!("{:?}", Callers::parse("orch:k1-secret").unwrap());
        assert!(shown.contains("orch") && !shown.contains("k1-secret"), "{shown}");
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

    #[test]
    fn comparison_is_of_whole_digests() {
        let a = sha256(b"x");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
