//! The one accept loop of the host's HTTP/1.1 servers: the app itself, the mock
//! Ximilar and the image host.

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper::{Request, Response};
use std::error::Error;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Serves every connection `listener` accepts, until `stop` fires, with the
/// service `service` makes for the client's address. `nodelay` sets
/// `TCP_NODELAY` on each connection (Spin's own listener leaves Nagle on).
pub async fn serve_connections<S, B>(
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    nodelay: bool,
    service: impl Fn(SocketAddr) -> S,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else { continue };
                stream.set_nodelay(nodelay).ok();
                let service = service(client);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}
