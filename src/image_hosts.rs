//! The image hosts that crop mode may fetch from: `XIMILAR_IMAGE_HOST_A, _B, _C`,
//! each written as Spin writes an `allowed_outbound_hosts` entry
//! (`<scheme>://<host>[:<port>]`, the host optionally `*.` + a domain for any of
//! its subdomains). The same values are the search component's outbound grant in
//! spin.toml, so Spin refuses any other host; checking them here as well means a
//! refused host costs no outbound call at all and gets a clear error.

/// Placeholders under this domain (RFC 6761: it never resolves) keep a manifest
/// entry valid while ops have allowed nothing; they allow nothing here either.
pub const PLACEHOLDER_DOMAIN: &str = ".invalid";

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.shop.example`: any subdomain of `shop.example` (not the domain itself, as in Spin).
    SubdomainsOf(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageHost {
    scheme: String,
    host: HostPattern,
    /// `None`: any port (`:*`).
    port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageHosts(Vec<ImageHost>);

impl ImageHosts {
    /// Parses the configured entries; empty ones and placeholders are skipped.
    /// `name` is the variable each entry came from, for the error message.
    pub fn parse(entries: impl IntoIterator<Item = (String, String)>) -> Result<ImageHosts, String> {
        let mut hosts = Vec::new();
        for (name, entry) in entries {
            let entry = entry.trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            let host = parse_entry(&entry).map_err(|why| format!("{name} {why}"))?;
            let placeholder = match &host.host {
                HostPattern::Exact(h) | HostPattern::SubdomainsOf(h) => h.ends_with(PLACEHOLDER_DOMAIN),
            };
            if !placeholder {
                hosts.push(host);
            }
        }
        Ok(ImageHosts(hosts))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an absolute http(s) URL may be fetched.
    pub fn allows(&self, url: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (url.scheme_str(), url.host()) else { return false };
        let scheme = scheme.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let Some(port) = url.port_u16().or_else(|| default_port(&scheme)) else { return false };
        self.0.iter().any(|allowed| {
            allowed.scheme == scheme
                && allowed.port.is_none_or(|p| p == port)
                && match &allowed.host {
                    HostPattern::Exact(h) => *h == host,
                    HostPattern::SubdomainsOf(domain) => {
                        host.strip_suffix(domain.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
                    }
                }
        })
    }
}

/// Where a redirect points: `location` resolved against the URL that answered
/// (RFC 3986, by the `url` crate: `/a.jpg`, `../a.jpg`, `a.jpg`, `//host/a.jpg`,
/// `?q` and absolute URLs), if that is an http(s) URL with a host; `None` for
/// anything else. Whether it may be followed is [`ImageHosts::allows`]'s call.
pub fn redirect_target(from: &http::Uri, location: Option<&str>) -> Option<http::Uri> {
    let location = location?.trim();
    if location.is_empty() {
        return None;
    }
    let mut target = url::Url::parse(&from.to_string()).ok()?.join(location).ok()?;
    if !matches!(target.scheme(), "http" | "https") || target.host_str().is_none_or(str::is_empty) {
        return None;
    }
    // A fragment is never sent in a request.
    target.set_fragment(None);
    target.as_str().parse().ok()
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn parse_entry(entry: &str) -> Result<ImageHost, String> {
    const SHAPE: &str = "must look like https://images.shop.example, https://*.shop.example or http://host:port";
    let Some((scheme, rest)) = entry.split_once("://") else { return Err(SHAPE.into()) };
    if scheme != "http" && scheme != "https" {
        return Err("must be an http or https origin".into());
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!("has more than an origin: it {SHAPE}"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, "*")) => (host, None),
        Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| format!("has a bad port: it {SHAPE}"))?)),
        None => (rest, default_port(scheme)),
    };
    let host = match host.strip_prefix("*.") {
        Some(domain) => HostPattern::SubdomainsOf(domain.to_string()),
        None => HostPattern::Exact(host.to_string()),
    };
    let name = match &host {
        HostPattern::Exact(h) => h.as_str(),
        HostPattern::SubdomainsOf(d) => d.as_str(),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| !label.is_empty())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("has a bad host (wildcards only as a leading `*.`): it {SHAPE}"));
    }
    Ok(ImageHost { scheme: scheme.to_string(), host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> ImageHosts {
        ImageHosts::parse(entries.iter().map(|e| ("XIMILAR_IMAGE_HOST_A".to_string(), e.to_string()))).unwrap()
    }

    fn allows(h: &ImageHosts, url: &str) -> bool {
        h.allows(&url.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let h = hosts(&["https://images.shop.example"]);
        assert!(allows(&h, "https://images.shop.example/a.jpg"));
        assert!(allows(&h, "https://IMAGES.shop.example:443/a.jpg?x=1"));
        assert!(!allows(&h, "http://images.shop.example/a.jpg"), "scheme");
        assert!(!allows(&h, "https://images.shop.example:8443/a.jpg"), "port");
        assert!(!allows(&h, "https://evil.example/images.shop.example/a.jpg"), "host");
        assert!(!allows(&h, "https://images.shop.example.evil.example/a.jpg"), "suffix");
    }

    #[test]
    fn a_wildcard_allows_subdomains_only_and_ports_can_be_any() {
        let h = hosts(&["https://*.shop.example", "http://127.0.0.1:*"]);
        assert!(allows(&h, "https://cdn.shop.example/a.jpg"));
        assert!(allows(&h, "https://a.b.shop.example/a.jpg"));
        assert!(!allows(&h, "https://shop.example/a.jpg"), "the domain itself is not a subdomain");
        assert!(!allows(&h, "https://notshop.example/a.jpg"));
        assert!(allows(&h, "http://127.0.0.1:9100/a.png"));
        assert!(allows(&h, "http://127.0.0.1/a.png"));
        assert!(!allows(&h, "https://127.0.0.1:9100/a.png"));
    }

    #[test]
    fn nothing_is_allowed_by_default_or_by_placeholders() {
        assert!(hosts(&[]).is_empty());
        assert!(hosts(&["", "  "]).is_empty());
        let h = hosts(&["https://image-host-a.invalid", "https://*.x.invalid"]);
        assert!(h.is_empty());
        assert!(!allows(&h, "https://image-host-a.invalid/a.jpg"));
    }

    #[test]
    fn redirects_resolve_to_absolute_urls() {
        let from: http::Uri = "https://cdn.shop.example/a/b/c.jpg?s=1".parse().unwrap();
        let to = |l: &str| redirect_target(&from, Some(l)).map(|u| u.to_string());
        assert_eq!(to("/img/d.jpg").as_deref(), Some("https://cdn.shop.example/img/d.jpg"));
        assert_eq!(to("../d.jpg").as_deref(), Some("https://cdn.shop.example/a/d.jpg"));
        assert_eq!(to("../../../../d.jpg").as_deref(), Some("https://cdn.shop.example/d.jpg"), "not above the root");
        assert_eq!(to("d.jpg").as_deref(), Some("https://cdn.shop.example/a/b/d.jpg"));
        assert_eq!(to("./d.jpg?v=2").as_deref(), Some("https://cdn.shop.example/a/b/d.jpg?v=2"));
        assert_eq!(to("?s=2").as_deref(), Some("https://cdn.shop.example/a/b/c.jpg?s=2"));
        assert_eq!(to("//other.example/d.jpg").as_deref(), Some("https://other.example/d.jpg"));
        assert_eq!(to("http://evil.example/x").as_deref(), Some("http://evil.example/x"));
        assert_eq!(to("HTTP://Evil.Example:80/x#frag").as_deref(), Some("http://evil.example/x"));
        assert_eq!(to(" /d.jpg ").as_deref(), Some("https://cdn.shop.example/d.jpg"));
        assert_eq!(to("ftp://x.example/c.jpg"), None);
        assert_eq!(to("data:image/png;base64,AAAA"), None);
        assert_eq!(to("http://"), None);
        assert_eq!(to(""), None);
        assert_eq!(redirect_target(&from, None), None);
    }

    #[test]
    fn relative_redirects_are_followed_only_onto_allowed_hosts() {
        let h = hosts(&["https://cdn.shop.example"]);
        let from: http::Uri = "https://cdn.shop.example/a/b.jpg".parse().unwrap();
        let allowed = |l: &str| redirect_target(&from, Some(l)).is_some_and(|u| h.allows(&u));
        for stays in ["/img/b.jpg", "../b.jpg", "b.jpg", "//cdn.shop.example/b.jpg", "//CDN.shop.example:443/b.jpg"] {
            assert!(allowed(stays), "{stays}");
        }
        for leaves in ["//other-host/b.jpg", "//cdn.shop.example:8443/b.jpg", "http://cdn.shop.example/b.jpg"] {
            assert!(!allowed(leaves), "{leaves}");
        }
        // A network-path reference keeps the scheme it came with.
        let plain: http::Uri = "http://cdn.shop.example/a.jpg".parse().unwrap();
        assert!(!redirect_target(&plain, Some("//cdn.shop.example/b.jpg")).is_some_and(|u| h.allows(&u)));
    }

    #[test]
    fn bad_entries_name_the_variable() {
        for bad in [
            "images.shop.example",
            "ftp://x.example",
            "https://x.example/path",
            "https://*",
            "https://a*.b",
            "https://x.example:99999",
            "https://user@x.example",
            "https://*.x..example",
        ] {
            let err = ImageHosts::parse([("XIMILAR_IMAGE_HOST_B".to_string(), bad.to_string())]).unwrap_err();
            assert!(err.starts_with("XIMILAR_IMAGE_HOST_B "), "{bad}: {err}");
        }
    }
}
