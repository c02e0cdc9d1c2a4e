//! `POST /detect`: find the garments in a photo.
use spin_sdk::http::{IntoResponse, Request};
use ximilar_gw::runtime::{serve, Detect};

#[spin_sdk::http_service]
async fn handle(request: Request) -> impl IntoResponse {
    serve::<Detect>(request).await
}
