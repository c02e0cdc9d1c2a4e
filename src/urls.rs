//! Image URLs: validation, `crop_url`s (W3C media fragments `#xywh=x,y,w,h`) and
//! the normal form used for cache keys.

/// Longest image URL we accept, not counting a fragment: a `crop_url` that
/// `/detect` made from an accepted URL is accepted too.
pub const MAX_URL_LEN: usize = 2048;

/// Longest fragment (`#...`): room for any `xywh=` box and a little more.
pub const MAX_FRAGMENT_LEN: usize = 256;

/// An absolute http(s) URL that passed validation. Keeps the caller's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUrl(String);

/// A crop rectangle in pixels: origin and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl Crop {
    /// From a `[x1, y1, x2, y2]` box.
    pub fn from_bbox(b: [i64; 4]) -> Crop {
        Crop { x: b[0], y: b[1], w: b[2].saturating_sub(b[0]), h: b[3].saturating_sub(b[1]) }
    }

    pub fn to_bbox(self) -> [i64; 4] {
        [self.x, self.y, self.x.saturating_add(self.w), self.y.saturating_add(self.h)]
    }
}

pub fn parse_image_url(text: &str) -> Result<ImageUrl, String> {
    let (source, fragment) = text.split_once('#').unwrap_or((text, ""));
    if source.len() > MAX_URL_LEN {
        return Err(format!("URL is longer than {MAX_URL_LEN} characters (not counting a #fragment)"));
    }
    if fragment.len() > MAX_FRAGMENT_LEN {
        return Err(format!("the #fragment is longer than {MAX_FRAGMENT_LEN} characters"));
    }
    // A crop that does not parse must not silently become the whole image (a billed call).
    if let Some(spec) = xywh_spec(fragment) {
        parse_crop(spec)?;
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URL contains whitespace or control characters".into());
    }
    // The text goes to Ximilar and to the image fetch as an `http::Uri`, and its
    // cache key is the WHATWG normal form: it must be a valid URL to both.
    let uri: http::Uri = source.parse().map_err(|_| "not a valid absolute URL".to_string())?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "https") => {}
        Some(_) => return Err("URL scheme must be http or https".into()),
        None => return Err("URL must be absolute (http or https)".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("URL has no host".into());
    }
    let parsed = url::Url::parse(source).map_err(|e| format!("not a valid absolute URL ({e})"))?;
    // The key must name the host that is fetched: no URL the two read differently
    // (a percent-encoded host name, an IPv4 address in hex or in parts).
    if parsed.host_str().is_none_or(|host| !host.eq_ignore_ascii_case(uri.host().unwrap_or_default())) {
        return Err("URL has an ambiguous host".into());
    }
    Ok(ImageUrl(text.to_string()))
}

impl ImageUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL without its fragment: what Ximilar must fetch.
    pub fn source(&self) -> &str {
        self.0.split('#').next().unwrap_or_default()
    }

    /// The photo a `crop_url` names: this URL without its fragment. It is valid
    /// whenever the whole URL is, so it is not validated again.
    pub fn source_url(&self) -> ImageUrl {
        ImageUrl(self.source().to_string())
    }

    /// The crop named by an `#xywh=x,y,w,h` fragment (pixels), if any
    /// (validation has already refused one that does not parse).
    pub fn crop(&self) -> Option<Crop> {
        parse_crop(xywh_spec(self.0.split_once('#')?.1)?).ok()
    }

    /// Normal form for cache keys: the source as the `url` crate (WHATWG)
    /// serialises it, so scheme and host are lower-cased, a default port is
    /// dropped, an empty path is `/`, dot segments are resolved and
    /// percent-encoding is the crate's. Userinfo, path and query keep their
    /// case (signed image URLs differ only by their query, and a password by
    /// its case); the fragment, which names the crop, is kept exactly as sent.
    pub fn cache_key(&self) -> String {
        let source = url::Url::parse(self.source()).expect("validated by parse_image_url");
        match self.0.split_once('#') {
            Some((_, fragment)) => format!("{source}#{fragment}"),
            None => source.into(),
        }
    }
}

/// The value of an `xywh=` part of a fragment (`#xywh=...&t=...`), if there is one.
fn xywh_spec(fragment: &str) -> Option<&str> {
    fragment.split('&').find_map(|p| p.strip_prefix("xywh="))
}

/// A Media Fragments box in pixels (`x,y,w,h` or `pixel:x,y,w,h`): four integers,
/// the origin not negative, the size positive, the far corner representable.
fn parse_crop(spec: &str) -> Result<Crop, String> {
    const WHY: &str = "the #xywh fragment must be four integers x,y,w,h in pixels, with w and h above 0";
    if spec.starts_with("percent:") {
        return Err("the #xywh fragment is in percent; only pixel boxes are supported (as /detect returns)".into());
    }
    let spec = spec.strip_prefix("pixel:").unwrap_or(spec);
    let nums: Vec<i64> = spec.split(',').map(|n| n.trim().parse().ok()).collect::<Option<_>>().ok_or(WHY)?;
    match nums[..] {
        [x, y, w, h]
            if x >= 0 && y >= 0 && w > 0 && h > 0 && x.checked_add(w).is_some() && y.checked_add(h).is_some() =>
        {
            Ok(Crop { x, y, w, h })
        }
        _ => Err(WHY.into()),
    }
}

/// `source#xywh=x,y,w,h`: the `crop_url` of a detected item (Ximilar returns no crop images).
pub fn crop_url(source: &str, crop: Crop) -> String {
    let source = source.split('#').next().unwrap_or_default();
    format!("{source}#xywh={},{},{},{}", crop.x, crop.y, crop.w, crop.h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> ImageUrl {
        parse_image_url(s).unwrap()
    }

    #[test]
    fn crop_fragment_round_trips() {
        let c = crop_url("https://shop.example/a.jpg?sig=1", Crop::from_bbox([212, 340, 705, 1122]));
        assert_eq!(c, "https://shop.example/a.jpg?sig=1#xywh=212,340,493,782");
        let parsed = url(&c);
        assert_eq!(parsed.crop().unwrap().to_bbox(), [212, 340, 705, 1122]);
        assert_eq!(parsed.source(), "https://shop.example/a.jpg?sig=1");
        let photo = parsed.source_url();
        assert_eq!((photo.as_str(), photo.crop()), ("https://shop.example/a.jpg?sig=1", None));
        assert_eq!(photo, url("https://shop.example/a.jpg?sig=1"), "the same as parsing the source");
    }

    #[test]
    fn crop_url_replaces_an_existing_fragment() {
        let c = crop_url("https://s.example/a.jpg#old", Crop { x: 1, y: 2, w: 3, h: 4 });
        assert_eq!(c, "https://s.example/a.jpg#xywh=1,2,3,4");
    }

    #[test]
    fn fragments_without_a_box_are_not_crops() {
        for s in ["https://s.example/a.jpg", "https://s.example/a.jpg#t=10", "https://s.example/a.jpg#"] {
            assert_eq!(url(s).crop(), None, "{s}");
        }
        assert_eq!(url("https://s.example/a.jpg#xywh=pixel:1,2,3,4").crop(), Some(Crop { x: 1, y: 2, w: 3, h: 4 }));
        assert_eq!(url("https://s.example/a.jpg#t=1&xywh=1,2,3,4").crop(), Some(Crop { x: 1, y: 2, w: 3, h: 4 }));
    }

    #[test]
    fn a_box_that_does_not_parse_is_refused_not_ignored() {
        for s in [
            "https://s.example/a.jpg#xywh=1,2,3",
            "https://s.example/a.jpg#xywh=1,2,0,4",
            "https://s.example/a.jpg#xywh=1,2,3,-4",
            "https://s.example/a.jpg#xywh=-1,2,3,4",
            "https://s.example/a.jpg#xywh=a,b,c,d",
            "https://s.example/a.jpg#xywh=1,2,3,4,5",
            "https://s.example/a.jpg#xywh=9223372036854775807,0,1,1",
            "https://s.example/a.jpg#xywh=99999999999999999999,0,1,1",
            "https://s.example/a.jpg#xywh=",
        ] {
            let why = parse_image_url(s).unwrap_err();
            assert!(why.contains("#xywh"), "{s}: {why}");
        }
        let why = parse_image_url("https://s.example/a.jpg#xywh=percent:10,10,50,50").unwrap_err();
        assert!(why.contains("percent"), "{why}");
    }

    #[test]
    fn the_length_limit_is_for_the_source_so_crops_of_long_urls_pass() {
        let long = format!("https://s.example/{}", "a".repeat(MAX_URL_LEN - 18));
        assert_eq!(long.len(), MAX_URL_LEN);
        let crop = crop_url(&long, Crop { x: 212, y: 340, w: 493, h: 782 });
        assert_eq!(url(&crop).source(), long);
        assert!(parse_image_url(&format!("{long}a")).is_err());
        assert!(parse_image_url(&format!("https://s.example/a.jpg#{}", "x".repeat(MAX_FRAGMENT_LEN + 1))).is_err());
    }

    #[test]
    fn cache_key_normalises_scheme_host_and_default_port_not_path_or_query() {
        assert_eq!(url("HTTPS://Shop.Example:443/A.jpg?Sig=X").cache_key(), "https://shop.example/A.jpg?Sig=X");
        assert_eq!(url("http://shop.example:80").cache_key(), "http://shop.example/");
        assert_eq!(url("http://shop.example:8080/a").cache_key(), "http://shop.example:8080/a");
        assert_eq!(url("https://shop.example:80/a").cache_key(), "https://shop.example:80/a");
        assert_ne!(url("https://s.example/a.jpg?sig=1").cache_key(), url("https://s.example/a.jpg?sig=2").cache_key());
        assert_ne!(
            url("https://s.example/a.jpg#xywh=1,2,3,4").cache_key(),
            url("https://s.example/a.jpg#xywh=1,2,3,5").cache_key()
        );
    }

    #[test]
    fn cache_key_keeps_userinfo_case_but_not_host_case_or_default_ports() {
        let key = |s: &str| url(s).cache_key();
        assert_ne!(key("https://u:Secret@h.example/x.jpg"), key("https://u:secret@h.example/x.jpg"));
        assert_ne!(key("https://U:secret@h.example/x.jpg"), key("https://u:secret@h.example/x.jpg"));
        assert_eq!(key("https://u:Secret@h.example/x.jpg"), "https://u:Secret@h.example/x.jpg");
        assert_eq!(key("HTTPS://u:Secret@H.Example:443/x.jpg"), key("https://u:Secret@h.example/x.jpg"));
        assert_eq!(key("http://H.EXAMPLE:80/X.jpg?A=B"), "http://h.example/X.jpg?A=B");
        assert_ne!(key("https://h.example/X.jpg"), key("https://h.example/x.jpg"));
        assert_ne!(key("https://h.example/x.jpg?A=1"), key("https://h.example/x.jpg?a=1"));
        // What a WHATWG client fetches is one resource, so one key.
        assert_eq!(key("https://h.example/a/../b/./x.jpg"), "https://h.example/b/x.jpg");
    }

    #[test]
    fn cache_key_keeps_the_fragment_exactly() {
        let crop = url("HTTPS://H.example:443/x.jpg?s=1#xywh=pixel:1,2,3,4");
        assert_eq!(crop.cache_key(), "https://h.example/x.jpg?s=1#xywh=pixel:1,2,3,4");
        assert_eq!(url("https://h.example/x.jpg#").cache_key(), "https://h.example/x.jpg#");
        assert_eq!(
            url("https://h.example/x.jpg#t=1&xywh=1,2,3,4").cache_key(),
            "https://h.example/x.jpg#t=1&xywh=1,2,3,4"
        );
        assert_eq!(crop.source_url().cache_key(), "https://h.example/x.jpg?s=1");
    }

    #[test]
    fn rejects_non_http_and_junk() {
        for s in
            ["ftp://a/b", "file:///etc/passwd", "javascript:alert(1)", "a b", "https://exa mple.com/", "//host/x", ""]
        {
            assert!(parse_image_url(s).is_err(), "{s}");
        }
        // Valid to one parser but not the other: refused, so every accepted URL has a key.
        for s in [
            "http://h.example:99999/x.jpg",
            "https://h.example\\@evil.example/x.jpg",
            "https:h.example/x.jpg",
            "http://ex%61mple.com/x.jpg",
            "http://0x7f.1/x.jpg",
            "http://2130706433/x.jpg",
        ] {
            assert!(parse_image_url(s).is_err(), "{s}");
        }
        for s in ["http://127.0.0.1:9100/x.jpg", "http://[::1]:9100/x.jpg", "https://U:P@Shop.Example./x.jpg"] {
            assert!(parse_image_url(s).is_ok(), "{s}");
        }
    }
}
