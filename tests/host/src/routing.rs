//! HTTP routing like Spin 4.0.2's trigger, for the routes this project's manifests use:
//! exact routes and trailing `/...` wildcards; the most specific matching route wins;
//! routes never filter by method. Spin's `:name` segments are not modelled and refused.
//!
//! Specificity, segment by segment from the left: a literal beats the trailing wildcard; if
//! one route's segments are a prefix of the other's, the longer one is more specific. A
//! single trailing slash on the request path is tolerated by exact routes (`/detect/`
//! matches `/detect`), as Spin's router does.

use anyhow::{bail, Result};

#[derive(Debug, Clone)]
struct Route {
    component: String,
    /// The route as written in the manifest.
    raw: String,
    /// The literal segments before any wildcard.
    segments: Vec<String>,
    wildcard: bool,
}

/// The result of routing one request path.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub component: String,
    /// Route as written (`/foo/...`).
    pub raw_route: String,
    /// Route without the trailing `/...` (`/foo`), Spin's "component route".
    pub component_route: String,
    /// What the wildcard matched, with Spin's trailing-slash rules (`""`, `/`, `/a/b`).
    pub path_info: String,
}

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the router from `(route, component)` pairs in manifest order.
    /// A duplicate route replaces the earlier one, as in Spin.
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Router> {
        let mut out: Vec<Route> = Vec::new();
        for (raw, component) in routes {
            let route = parse_route(raw, component)?;
            if let Some(existing) =
                out.iter_mut().find(|r| r.segments == route.segments && r.wildcard == route.wildcard)
            {
                *existing = route;
            } else {
                out.push(route);
            }
        }
        Ok(Router { routes: out })
    }

    /// Routes a request path (without the query).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let trimmed = path.trim_start_matches('/');
        let request: Vec<&str> = if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() };

        let mut best: Option<(&Route, RouteMatch)> = None;
        for route in &self.routes {
            let Some(m) = route.matches(path, &request) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((current, _)) => more_specific(route, current),
            };
            if better {
                best = Some((route, m));
            }
        }
        best.map(|(_, m)| m)
    }
}

impl Route {
    fn matches(&self, path: &str, request: &[&str]) -> Option<RouteMatch> {
        // A trailing slash yields one empty last segment; exact routes ignore it.
        let mut request = request;
        let had_trailing_slash = path.len() > 1 && path.ends_with('/');
        if !self.wildcard && had_trailing_slash {
            request = &request[..request.len() - 1];
        }
        if self.wildcard {
            if request.len() < self.segments.len() {
                return None;
            }
        } else if request.len() != self.segments.len() {
            return None;
        }

        if self.segments.iter().zip(request).any(|(seg, got)| seg != got) {
            return None;
        }

        let path_info = if self.wildcard {
            let rest = &request[self.segments.len()..];
            // Spin's rules: /foo/... on /foo -> "", /foo/ -> "/", /foo/a -> "/a", /foo/a/ -> "/a/".
            let joined = rest.join("/");
            if joined.is_empty() {
                if had_trailing_slash {
                    "/".to_string()
                } else {
                    String::new()
                }
            } else {
                format!("/{joined}")
            }
        } else {
            String::new()
        };

        Some(RouteMatch {
            component: self.component.clone(),
            raw_route: self.raw.clone(),
            component_route: self.raw.strip_suffix("/...").unwrap_or(&self.raw).to_string(),
            path_info,
        })
    }
}

fn parse_route(raw: &str, component: &str) -> Result<Route> {
    let mut path = raw.trim().to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let (body, wildcard) = if let Some(b) = path.strip_suffix("/...") {
        (b.to_string(), true)
    } else if path == "/..." {
        (String::new(), true)
    } else if let Some(b) = path.strip_suffix("/*") {
        (b.to_string(), true)
    } else {
        // Spin strips a single trailing slash from the route.
        (path.strip_suffix('/').unwrap_or(&path).to_string(), false)
    };
    if body.contains("...") {
        bail!("route {raw:?} of component {component:?}: `...` is allowed only as the last segment");
    }
    let segments: Vec<String> =
        body.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    if segments.iter().any(|s| s.starts_with(':')) {
        bail!("route {raw:?} of component {component:?}: `:name` segments are not modelled by the test host");
    }
    Ok(Route { component: component.to_string(), raw: raw.to_string(), segments, wildcard })
}

/// Is `a` more specific than `b`? (Both match the same path.)
fn more_specific(a: &Route, b: &Route) -> bool {
    fn rank(s: Option<&String>, wildcard: bool) -> u8 {
        match s {
            Some(_) => 2,
            None if wildcard => 1,
            None => 0,
        }
    }
    let n = a.segments.len().max(b.segments.len());
    for i in 0..n {
        let ra = rank(a.segments.get(i), a.wildcard);
        let rb = rank(b.segments.get(i), b.wildcard);
        if ra != rb {
            return ra > rb;
        }
    }
    // Same shape: an exact route beats a wildcard one.
    !a.wildcard && b.wildcard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(routes.iter().map(|(r, c)| (*r, *c))).unwrap()
    }

    fn comp(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_routes() {
        let r = router(&[("/foo", "foo"), ("/foo/bar", "foobar")]);
        assert_eq!(comp(&r, "/foo").as_deref(), Some("foo"));
        assert_eq!(comp(&r, "/foo/").as_deref(), Some("foo"));
        assert_eq!(comp(&r, "/foo/bar").as_deref(), Some("foobar"));
        assert_eq!(comp(&r, "/foo/baz"), None);
        assert_eq!(comp(&r, "/"), None);
        assert_eq!(comp(&r, "/foox"), None);
    }

    #[test]
    fn wildcards_longest_wins_and_exact_beats_wildcard() {
        let r = router(&[("/...", "all"), ("/one/...", "one"), ("/one/two/...", "two"), ("/one", "one_exact")]);
        assert_eq!(comp(&r, "/one/two/three").as_deref(), Some("two"));
        assert_eq!(comp(&r, "/one/x").as_deref(), Some("one"));
        assert_eq!(comp(&r, "/one").as_deref(), Some("one_exact"));
        assert_eq!(comp(&r, "/elsewhere").as_deref(), Some("all"));
        assert_eq!(comp(&r, "/").as_deref(), Some("all"));
    }

    #[test]
    fn path_info_follows_spins_trailing_slash_rules() {
        let r = router(&[("/test/...", "t")]);
        let info = |p: &str| r.route(p).unwrap().path_info;
        assert_eq!(info("/test"), "");
        assert_eq!(info("/test/"), "/");
        assert_eq!(info("/test/hello"), "/hello");
        assert_eq!(info("/test/hello/"), "/hello/");
        let m = r.route("/test/a").unwrap();
        assert_eq!(m.raw_route, "/test/...");
        assert_eq!(m.component_route, "/test");
    }

    #[test]
    fn a_duplicate_replaces_and_named_segments_are_refused() {
        let r = router(&[("/x", "first"), ("/x", "second")]);
        assert_eq!(comp(&r, "/x").as_deref(), Some("second"));
        assert!(Router::build([("/1/:two/3", "a")]).is_err());
    }
}
