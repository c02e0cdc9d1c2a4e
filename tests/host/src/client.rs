//! A minimal HTTP/1.1 client for tests (one connection per request, no TLS), so tests of the
//! host and of the product need no extra HTTP crate.

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request to `url` (`http://host:port/path?query`) and reads the whole answer.
/// Times out after 60 s so a hung server fails the test instead of the CI run.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Result<Reply> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let authority = uri.authority().context("URL without host")?.clone();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let fut = async move {
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true).ok();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder().method(method).uri(path).header("host", authority.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender.send_request(req.body(Full::new(body.into()))?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(Reply { status: parts.status, headers: parts.headers, body })
    };
    tokio::time::timeout(Duration::from_secs(60), fut).await.with_context(|| format!("{url}: no answer within 60 s"))?
}

pub async fn get(url: &str) -> Result<Reply> {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// POSTs a JSON value with `content-type: application/json`.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<Reply> {
    send(Method::POST, url, &[("content-type", "application/json")], body.to_string()).await
}
