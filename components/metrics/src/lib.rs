//! `GET /metrics`: Prometheus text from the shared counters. No token, no outbound host.
use spin_sdk::http::{IntoResponse, Request};
use ximilar_gw::runtime::{serve, Metrics};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve::<Metrics>(request).await
}
