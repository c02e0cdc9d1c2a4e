//! `POST /search`: similar SKUs in the shops' catalogue.
use spin_sdk::http::{IntoResponse, Request};
use ximilar_gw::runtime::{serve, Search};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve::<Search>(request).await
}
