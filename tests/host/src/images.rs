//! A shop's image host on loopback, for crop mode: serves generated test photos
//! and scripted misbehaviour (redirects, wrong statuses, lies about length,
//! stalls), and counts what it was asked for.
//!
//! Generated photos (`/photo-<W>x<H>.jpg`, `.png`, `.webp`) are a gradient
//! whose pixels tell where they are: red = x · 255 / (W − 1), green = y · 255 / (H − 1),
//! blue 128, so a test can check which region of the photo a crop shows.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// What one path answers.
#[derive(Debug, Clone)]
pub enum Served {
    /// 200 with these bytes and this content type.
    Bytes { content_type: &'static str, body: Bytes },
    /// 302 to this location.
    Redirect(String),
    /// This status, empty body.
    Status(u16),
    /// 200 after this long.
    Slow(Duration, Bytes),
    /// 200 with a body that never ends: `chunk` repeated forever, with no length declared.
    Endless(Bytes),
}

/// The colour a generated `w` × `h` photo has at (x, y).
pub fn photo_pixel(x: u32, y: u32, w: u32, h: u32) -> [u8; 3] {
    let scale = |v: u32, n: u32| (u64::from(v) * 255 / u64::from(n.max(2) - 1)) as u8;
    [scale(x, w), scale(y, h), 128]
}

/// The generated photo, encoded as `format`.
pub fn photo(w: u32, h: u32, format: image::ImageFormat) -> Bytes {
    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(photo_pixel(x, y, w, h)));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(rgb).write_to(&mut Cursor::new(&mut out), format).expect("encode the test photo");
    Bytes::from(out)
}

/// `photo-4000x3000.jpg` → (4000, 3000, JPEG).
fn generated(path: &str) -> Option<(u32, u32, image::ImageFormat)> {
    let name = path.strip_prefix("/photo-")?;
    let (size, ext) = name.rsplit_once('.')?;
    let (w, h) = size.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    if !(1..=12_000).contains(&w) || !(1..=12_000).contains(&h) {
        return None;
    }
    let format = match ext {
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        "png" => image::ImageFormat::Png,
        "webp" => image::ImageFormat::WebP,
        _ => return None,
    };
    Some((w, h, format))
}

struct State {
    routes: Mutex<HashMap<String, Served>>,
    /// Photos generated so far, by path (12 MP takes a while to encode).
    cache: Mutex<HashMap<String, Bytes>>,
    hits: Mutex<Vec<String>>,
    /// Requests that carried an `authorization` header (a leaked credential).
    with_credentials: std::sync::atomic::AtomicUsize,
}

/// A running image host; dropping it stops it.
pub struct ImageHost {
    addr: SocketAddr,
    state: Arc<State>,
    _stop: oneshot::Sender<()>,
}

impl ImageHost {
    pub async fn start(listen: SocketAddr) -> Result<ImageHost> {
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("image host cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            routes: Mutex::default(),
            cache: Mutex::default(),
            hits: Mutex::default(),
            with_credentials: Default::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let serving = state.clone();
        tokio::spawn(crate::accept::serve_connections(listener, stopped, false, move |_| {
            let state = serving.clone();
            hyper::service::service_fn(move |req| answer(state.clone(), req))
        }));
        Ok(ImageHost { addr, state, _stop: stop })
    }

    /// `http://127.0.0.1:<port>`: the origin to allow (`image_host_a`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts `path` (which then takes precedence over a generated photo).
    pub fn serve(&self, path: &str, served: Served) {
        self.state.routes.lock().unwrap().insert(path.to_string(), served);
    }

    /// Requests for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().iter().filter(|p| *p == path).count()
    }

    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Requests that carried an `authorization` header.
    pub fn requests_with_credentials(&self) -> usize {
        self.state.with_credentials.load(std::sync::atomic::Ordering::Relaxed)
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    state.hits.lock().unwrap().push(path.clone());
    if req.headers().contains_key(hyper::header::AUTHORIZATION) {
        state.with_credentials.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let scripted = state.routes.lock().unwrap().get(&path).cloned();
    let served = match scripted {
        Some(served) => served,
        None => match generated(&path) {
            Some((w, h, format)) => {
                let cached = state.cache.lock().unwrap().get(&path).cloned();
                let body = match cached {
                    Some(body) => body,
                    None => {
                        let body = tokio::task::spawn_blocking(move || photo(w, h, format)).await.expect("encode");
                        state.cache.lock().unwrap().insert(path.clone(), body.clone());
                        body
                    }
                };
                Served::Bytes { content_type: format.to_mime_type(), body }
            }
            None => Served::Status(404),
        },
    };
    let full = |b: Bytes| Full::new(b).boxed();
    let response = match served {
        Served::Bytes { content_type, body } => {
            Response::builder().header("content-type", content_type).body(full(body))
        }
        Served::Redirect(location) => {
            Response::builder().status(302).header("location", location).body(full(Bytes::new()))
        }
        Served::Status(status) => Response::builder().status(status).body(full(Bytes::new())),
        Served::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            Response::builder().header("content-type", "image/jpeg").body(full(body))
        }
        Served::Endless(chunk) => Response::builder().header("content-type", "image/jpeg").body(endless(chunk).boxed()),
    };
    Ok(response.expect("valid response"))
}

/// `chunk` forever. hyper asks for the next chunk only when it can send it, so a client
/// that stops reading is never flooded.
fn endless(chunk: Bytes) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    StreamBody::new(futures::stream::repeat_with(move || Ok(Frame::data(chunk.clone()))))
}
