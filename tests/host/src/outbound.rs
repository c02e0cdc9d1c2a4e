//! Outbound HTTP: `allowed_outbound_hosts` enforcement, per-component call counting and the
//! sender itself.
//!
//! Spin checks every outbound request against the component's (template-resolved)
//! `allowed_outbound_hosts`: scheme, host and port must all match, the port defaulting to
//! 80/443 for http/https. A request that does not match fails with
//! `ErrorCode::HttpRequestDenied` and never leaves the host. A component without the key
//! can make no outbound request at all.
//!
//! Plain-http requests go through hyper-util's pooled client with a connector of our own, as
//! in Spin 4.0.2 (keep-alive matters: a benchmark against a loopback upstream would otherwise
//! measure TCP handshakes and fill the ephemeral port range). HTTPS requests use
//! wasmtime-wasi-http's default sender. Both honour the request options' connect, first-byte
//! and between-bytes timeouts, defaulting to Spin's 600 s.

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi_http::p3::bindings::http::types::{DnsErrorPayload, ErrorCode};
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpHooks};

/// Spin's default for every outbound timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type HostBody = UnsyncBoxBody<Bytes, ErrorCode>;
/// What both senders answer.
type HttpResult = Result<http::Response<HostBody>, ErrorCode>;

// ---------------------------------------------------------------------------------------
// allowed_outbound_hosts

/// One parsed `allowed_outbound_hosts` entry: `<scheme>://<host>[:<port>]`, `*` allowed in
/// each part (`*.example.com` for subdomains). The forms this project never writes (port
/// ranges, `self`, the default ports of non-HTTP schemes) are refused, not modelled.
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
}

#[derive(Debug, Clone, PartialEq)]
enum PortPattern {
    Any,
    One(u16),
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
            Some(p) => PortPattern::One(
                p.parse().with_context(|| format!("{text:?}: bad port {p:?} (ranges are not modelled)"))?,
            ),
        };
        let host = match host {
            "*" => HostPattern::Any,
            "self" | "self.alt" => bail!("{text:?}: service chaining is not modelled"),
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
        };
        let port = port.or_else(|| default_port(scheme));
        let port_ok = match (&self.port, port) {
            (PortPattern::Any, _) => true,
            (PortPattern::One(p), Some(q)) => *p == q,
            (_, None) => false,
        };
        scheme_ok && host_ok && port_ok
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
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
    pub http: HttpClient,
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
                send_http(&policy.http, request, timeouts).await?
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

async fn send_https(request: http::Request<HostBody>, options: Option<RequestOptions>) -> HttpResult {
    let (response, io) = wasmtime_wasi_http::p3::default_send_request(request, options).await?;
    // The default sender hands back the connection's I/O future; drive it in the background.
    tokio::spawn(io);
    Ok(response.map(BodyExt::boxed_unsync))
}

// ---------------------------------------------------------------------------------------
// Plain http: hyper-util's pooled client, as Spin 4.0.2 sends it

/// Spin's plain-http client: hyper-util's legacy client (which keeps idle connections per
/// host) over a connector that applies the request's connect timeout.
pub type HttpClient = Client<Connector, HostBody>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(Connector)
}

tokio::task_local! {
    /// The connect timeout of the request being sent. The client calls its connector from
    /// within the request's own future, so a task-local is how a per-request value reaches
    /// it (Spin passes its connect options the same way); a pooled connection ignores it.
    static CONNECT_TIMEOUT: Duration;
}

async fn send_http(client: &HttpClient, request: http::Request<HostBody>, timeouts: Timeouts) -> HttpResult {
    // As Spin does, the first-byte timeout covers connecting as well as the answer's
    // headers: a try's headers arrive within it, whatever connecting took.
    let response = CONNECT_TIMEOUT.scope(timeouts.connect, client.request(request));
    let response = tokio::time::timeout(timeouts.first_byte, response)
        .await
        .map_err(|_| ErrorCode::ConnectionReadTimeout)?
        .map_err(|e| {
            // The connector's own error travels as the source; anything else is protocol.
            std::error::Error::source(&e)
                .and_then(|cause| cause.downcast_ref::<ErrorCode>())
                .cloned()
                .unwrap_or(ErrorCode::HttpProtocolError)
        })?;
    Ok(response.map(|incoming| {
        BetweenBytesBody { incoming, between_bytes: timeouts.between_bytes, deadline: None }.boxed_unsync()
    }))
}

/// Opens TCP connections for the client, with the request's connect timeout.
#[derive(Clone)]
pub struct Connector;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<SpinTcpStream>;
    type Error = ErrorCode;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ErrorCode>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ErrorCode>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT.try_with(|t| *t).unwrap_or(DEFAULT_TIMEOUT);
        Box::pin(async move {
            let authority = uri.authority().ok_or(ErrorCode::HttpRequestUriInvalid)?;
            let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
            let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
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
            // Nagle's algorithm stays on, as on Spin 4.0.2, whose outbound connector never
            // sets TCP_NODELAY: a request whose body leaves after its headers, as a second
            // small segment, then waits for the server's (delayed) ACK, and a component must
            // avoid that itself.
            stream.set_nodelay(false).ok();
            Ok(TokioIo::new(SpinTcpStream(stream)))
        })
    }
}

/// A TCP stream as Spin's connector wraps it: its writes are not vectored (Spin's wrapper
/// forwards `poll_write` only), so hyper flattens a request's headers and body into one
/// buffer rather than queueing them for `writev`.
pub struct SpinTcpStream(tokio::net::TcpStream);

impl hyper_util::client::legacy::connect::Connection for SpinTcpStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.0.connected()
    }
}

impl tokio::io::AsyncRead for SpinTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SpinTcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// A response body that enforces the between-bytes timeout, as Spin's does.
struct BetweenBytesBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for BetweenBytesBody {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|f| {
                    f.map_err(|e| {
                        if e.is_timeout() {
                            ErrorCode::HttpResponseTimeout
                        } else {
                            ErrorCode::HttpProtocolError
                        }
                    })
                }))
            }
            Poll::Pending => {
                let between = this.between_bytes;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(between)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(ErrorCode::ConnectionReadTimeout))),
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
        let w = hosts(&["*://*.example.com:*"]);
        assert!(allows(&w, "https://a.example.com:9/x"));
        assert!(!allows(&w, "https://example.com/x"));
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
        // Forms the project never writes are refused rather than half-modelled.
        assert!(AllowedHost::parse("http://localhost:1000..2000").is_err());
        assert!(AllowedHost::parse("http://self").is_err());
        assert!(AllowedHost::parse("redis://cache").is_err());
    }
}
