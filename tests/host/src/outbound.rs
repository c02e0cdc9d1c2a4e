//! Outbound HTTP: `allowed_outbound_hosts` enforcement, per-component call counting and the
//! sender itself.
//!
//! Spin checks every outbound request against the component's (template-resolved)
//! `allowed_outbound_hosts`: scheme, host and port must all match, the port defaulting to
//! 80/443 for http/https. A request that does not match fails with
//! `ErrorCode::HttpRequestDenied` and never leaves the host. A component without the key
//! can make no outbound request at all.
//!
//! Plain-http requests go through a small keep-alive pool (Spin pools outbound connections
//! too, and benchmarks against a loopback upstream would otherwise measure TCP handshakes
//! and fill the ephemeral port range). HTTPS requests use wasmtime-wasi-http's default
//! sender. Both honour the request options' connect, first-byte and between-bytes timeouts,
//! defaulting to Spin's 600 s.

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::p3::bindings::http::types::{DnsErrorPayload, ErrorCode};
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpHooks};

/// Spin's default for every outbound timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Idle pooled connections older than this are not reused.
const POOL_IDLE_LIMIT: Duration = Duration::from_secs(30);

type HostBody = UnsyncBoxBody<Bytes, ErrorCode>;

// ---------------------------------------------------------------------------------------
// allowed_outbound_hosts

/// One parsed `allowed_outbound_hosts` entry: `<scheme>://<host>[:<port>]`, `*` allowed in
/// each part (`*.example.com` for subdomains, `a..b` for a port range).
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Any,
    Subdomain(String),
    Literal(String),
    /// `self` / `self.alt`: only relative (service-chaining) requests, which this host does
    /// not implement; it never matches an absolute URL.
    ToSelf,
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    Any,
    One(u16),
    Range(u16, u16),
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<AllowedHost> {
        let text = entry.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            bail!("{text:?} has no scheme: allowed hosts look like <scheme>://<host>[:<port>]");
        };
        if scheme != "*" && !scheme.chars().all(|c| c.is_ascii_alphabetic()) {
            bail!("{text:?}: invalid scheme {scheme:?}");
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("{text:?} has a path but is not allowed to");
        }
        // Split the port off the last ':' unless it sits inside an IPv6 literal.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            None | Some("") => match default_port(scheme) {
                Some(p) => PortPattern::One(p),
                None if scheme == "*" => {
                    bail!("{text:?}: a port is required when the scheme is '*'")
                }
                None => bail!("{text:?}: no port and the scheme {scheme:?} has no default port"),
            },
            Some("*") => PortPattern::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => PortPattern::Range(
                    a.parse().with_context(|| format!("{text:?}: bad port range"))?,
                    b.parse().with_context(|| format!("{text:?}: bad port range"))?,
                ),
                None => PortPattern::One(p.parse().with_context(|| format!("{text:?}: bad port {p:?}"))?),
            },
        };
        let host = match host {
            "*" => HostPattern::Any,
            "self" | "self.alt" => HostPattern::ToSelf,
            h if h.starts_with("*.") => {
                if h[2..].contains('*') {
                    bail!("{text:?}: wildcards are allowed only as a subdomain prefix");
                }
                HostPattern::Subdomain(h[1..].to_ascii_lowercase())
            }
            h if h.contains('*') => {
                bail!("{text:?}: wildcards are allowed only as a subdomain prefix")
            }
            "" => bail!("{text:?}: empty host"),
            h => HostPattern::Literal(normalize_host(h)),
        };
        Ok(AllowedHost { scheme: (scheme != "*").then(|| scheme.to_string()), host, port })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host = normalize_host(host);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()) && host.parse::<IpAddr>().is_err(),
            HostPattern::Literal(l) => *l == host,
            HostPattern::ToSelf => false,
        };
        let port = port.or_else(|| default_port(scheme));
        let port_ok = match (&self.port, port) {
            (PortPattern::Any, _) => true,
            (PortPattern::One(p), Some(q)) => *p == q,
            (PortPattern::Range(a, b), Some(q)) => (*a..*b).contains(&q),
            (_, None) => false,
        };
        scheme_ok && host_ok && port_ok
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

/// Lower-cases names and strips IPv6 brackets so `[::1]` and `::1` compare equal.
fn normalize_host(h: &str) -> String {
    h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// A component's resolved allow-list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Vec<AllowedHost>);

impl AllowedHosts {
    /// Parses already-rendered entries. An empty list allows nothing.
    pub fn parse(entries: &[String]) -> Result<AllowedHosts> {
        entries.iter().map(|e| AllowedHost::parse(e)).collect::<Result<Vec<_>>>().map(AllowedHosts)
    }

    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            // Relative (self) requests: not supported, so never allowed.
            return false;
        };
        self.0.iter().any(|a| a.allows(scheme, host, uri.port_u16()))
    }
}

// ---------------------------------------------------------------------------------------
// Accounting

/// An outbound request the allow-list refused.
#[derive(Debug, Clone)]
pub struct DeniedCall {
    pub component: String,
    pub url: String,
}

/// Outbound accounting shared by all the components of one app.
#[derive(Debug, Default)]
pub struct OutboundLedger {
    calls: Mutex<HashMap<String, usize>>,
    denied: Mutex<Vec<DeniedCall>>,
}

impl OutboundLedger {
    pub fn calls(&self, component: &str) -> usize {
        self.calls.lock().unwrap().get(component).copied().unwrap_or(0)
    }

    pub fn denied(&self) -> Vec<DeniedCall> {
        self.denied.lock().unwrap().clone()
    }

    fn record_call(&self, component: &str) {
        *self.calls.lock().unwrap().entry(component.to_string()).or_default() += 1;
    }

    fn record_denied(&self, component: &str, url: String) {
        self.denied.lock().unwrap().push(DeniedCall { component: component.to_string(), url });
    }
}

// ---------------------------------------------------------------------------------------
// The hooks wasmtime-wasi-http calls for every outbound request

/// Per-component outbound policy; cheap to clone into each store.
#[derive(Clone)]
pub struct OutboundPolicy {
    pub component: Arc<str>,
    pub allowed: Arc<AllowedHosts>,
    pub ledger: Arc<OutboundLedger>,
    pub pool: Arc<ConnectionPool>,
}

type SendResult = Result<
    (http::Response<HostBody>, Box<dyn Future<Output = Result<(), ErrorCode>> + Send>),
    wasmtime_wasi::TrappableError<ErrorCode>,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<HostBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        // Nothing useful can be done with the guest's report on how it consumed the
        // response body (Spin ignores it too).
        drop(fut);
        let policy = self.clone();
        Box::new(async move {
            if !policy.allowed.allows_uri(request.uri()) {
                policy.ledger.record_denied(&policy.component, request.uri().to_string());
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            policy.ledger.record_call(&policy.component);
            let timeouts = Timeouts::from(options);
            let response = if request.uri().scheme() == Some(&Scheme::HTTPS) {
                send_https(request, options).await?
            } else {
                policy.pool.send(request, timeouts).await?
            };
            Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl From<Option<RequestOptions>> for Timeouts {
    fn from(o: Option<RequestOptions>) -> Self {
        let o = o.unwrap_or_default();
        Timeouts {
            connect: o.connect_timeout.unwrap_or(DEFAULT_TIMEOUT),
            first_byte: o.first_byte_timeout.unwrap_or(DEFAULT_TIMEOUT),
            between_bytes: o.between_bytes_timeout.unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

async fn send_https(
    request: http::Request<HostBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<HostBody>, ErrorCode> {
    let (response, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
    // The default sender hands back the connection's I/O future; drive it in the background.
    tokio::spawn(io);
    Ok(response.map(BodyExt::boxed_unsync))
}

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 keep-alive pool for plain-http upstreams

/// An idle connection and when it became idle.
type IdleConnection = (SendRequest<HostBody>, Instant);

/// Idle HTTP/1.1 connections by `host:port`.
#[derive(Default)]
pub struct ConnectionPool {
    idle: Mutex<HashMap<String, Vec<IdleConnection>>>,
}

impl ConnectionPool {
    async fn send(
        self: &Arc<Self>,
        mut request: http::Request<HostBody>,
        timeouts: Timeouts,
    ) -> Result<http::Response<HostBody>, ErrorCode> {
        let authority = request.uri().authority().ok_or(ErrorCode::HttpRequestUriInvalid)?;
        let key = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        // HTTP/1.1 wants the origin form on the wire; the Host header is already set.
        let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *request.uri_mut() = path.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?;

        // As Spin does, the first-byte timeout covers connecting as well as the answer's
        // headers: a try's headers arrive within it, whatever connecting took.
        let exchange = async {
            let mut sender = match self.take_idle(&key).await {
                Some(s) => s,
                None => connect(&key, timeouts.connect).await?,
            };
            let response = sender.send_request(request).await.map_err(ErrorCode::from_hyper_request_error)?;
            Ok::<_, ErrorCode>((sender, response))
        };
        let (sender, response) = tokio::time::timeout(timeouts.first_byte, exchange)
            .await
            .map_err(|_| ErrorCode::ConnectionReadTimeout)??;
        let pool = self.clone();
        Ok(response.map(|incoming| {
            PooledBody {
                incoming,
                between_bytes: timeouts.between_bytes,
                deadline: None,
                give_back: Some((pool, key, sender)),
            }
            .boxed_unsync()
        }))
    }

    /// An idle connection that is still open and ready for a new request.
    async fn take_idle(&self, key: &str) -> Option<SendRequest<HostBody>> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap();
                idle.get_mut(key).and_then(Vec::pop)
            };
            let (mut sender, since) = candidate?;
            if since.elapsed() > POOL_IDLE_LIMIT || sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn give_back(&self, key: String, sender: SendRequest<HostBody>) {
        if !sender.is_closed() {
            self.idle.lock().unwrap().entry(key).or_default().push((sender, Instant::now()));
        }
    }
}

async fn connect(authority: &str, timeout: Duration) -> Result<SendRequest<HostBody>, ErrorCode> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(authority)).await {
        Err(_) => return Err(ErrorCode::ConnectionTimeout),
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.to_string().contains("failed to lookup address") => {
            return Err(ErrorCode::DnsError(DnsErrorPayload {
                rcode: Some("address not available".into()),
                info_code: Some(0),
            }))
        }
        Ok(Err(_)) => return Err(ErrorCode::ConnectionRefused),
    };
    // Nagle's algorithm stays on, as on Spin 4.0.2, whose outbound connector never sets
    // TCP_NODELAY: a request whose body leaves after its headers, as a second small segment,
    // then waits for the server's (delayed) ACK, and a component must avoid that itself.
    stream.set_nodelay(false).ok();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = tokio::time::timeout(timeout, hyper::client::conn::http1::handshake(io))
        .await
        .map_err(|_| ErrorCode::ConnectionTimeout)?
        .map_err(ErrorCode::from_hyper_request_error)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A response body that enforces the between-bytes timeout and returns its connection to
/// the pool once it has been read to the end.
struct PooledBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    give_back: Option<(Arc<ConnectionPool>, String, SendRequest<HostBody>)>,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.give_back = None;
                let code = if e.is_timeout() { ErrorCode::HttpResponseTimeout } else { ErrorCode::HttpProtocolError };
                Poll::Ready(Some(Err(code)))
            }
            Poll::Ready(None) => {
                if let Some((pool, key, sender)) = this.give_back.take() {
                    pool.give_back(key, sender);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let between = this.between_bytes;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.give_back = None;
                        Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.incoming)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.incoming)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allows(h: &AllowedHosts, url: &str) -> bool {
        h.allows_uri(&url.parse().unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let h = hosts(&["https://api.ximilar.com"]);
        assert!(allows(&h, "https://api.ximilar.com/x"));
        assert!(allows(&h, "https://api.ximilar.com:443/x"));
        assert!(!allows(&h, "http://api.ximilar.com/x"), "scheme");
        assert!(!allows(&h, "https://api.ximilar.com:8443/x"), "port");
        assert!(!allows(&h, "https://evil.com/x"), "host");
        assert!(!allows(&h, "https://sub.api.ximilar.com/x"), "subdomain");
    }

    #[test]
    fn loopback_with_port_and_wildcards() {
        let h = hosts(&["http://127.0.0.1:4321"]);
        assert!(allows(&h, "http://127.0.0.1:4321/p"));
        assert!(!allows(&h, "http://127.0.0.1:4322/p"));
        assert!(!allows(&h, "http://localhost:4321/p"));
        let w = hosts(&["*://*.example.com:*", "http://localhost:1000..2000"]);
        assert!(allows(&w, "https://a.example.com:9/x"));
        assert!(!allows(&w, "https://example.com/x"));
        assert!(allows(&w, "http://localhost:1500/"));
        assert!(!allows(&w, "http://localhost:2000/"));
        let all = hosts(&["*://*:*"]);
        assert!(allows(&all, "http://anything:1/"));
    }

    #[test]
    fn nothing_is_allowed_by_default_and_bad_entries_fail() {
        assert!(!allows(&hosts(&[]), "http://127.0.0.1:1/"));
        assert!(AllowedHost::parse("api.ximilar.com").is_err());
        assert!(AllowedHost::parse("https://api.ximilar.com/v2").is_err());
        assert!(AllowedHost::parse("https://a.*.com").is_err());
        assert!(AllowedHost::parse("https://api.ximilar.com/").is_ok());
    }
}
