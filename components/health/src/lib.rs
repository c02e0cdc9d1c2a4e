//! `GET /health`: is Ximilar reachable with our token?
use spin_sdk::http::{IntoResponse, Request};
use ximilar_gw::runtime::{serve, Health};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve::<Health>(request).await
}
