//! `POST /tag`: colour, material, pattern and type of one garment (or crop).
use spin_sdk::http::{IntoResponse, Request};
use ximilar_gw::runtime::{serve, Tag};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve::<Tag>(request).await
}
