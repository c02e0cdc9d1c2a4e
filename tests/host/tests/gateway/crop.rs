//! Crop mode of `/search`: the garment is cut out of its photo, fetched from
//! an allowed image host on loopback, and sent inline. Each test reads what
//! the mock Ximilar received, decodes it, and checks where its pixels came from.

use crate::common::*;
use serde_json::{json, Value};
use spin_test_host::images::{photo, photo_pixel, ImageHost, Served};
use std::time::Duration;

async fn image_host() -> ImageHost {
    ImageHost::start(([127, 0, 0, 1], 0).into()).await.expect("image host starts")
}

/// A gateway in crop mode that may fetch from `host`, plus `vars`.
async fn cropping_gateway(host: &ImageHost, vars: &[(&str, &str)]) -> Gateway {
    let origin = host.origin();
    let mut all = vec![("search_crop", "true"), ("image_host_a", origin.as_str())];
    all.extend_from_slice(vars);
    gateway(&all).await
}

fn search(crop_url: &str) -> String {
    json!({ "crop_url": crop_url, "top_k": 3 }).to_string()
}

/// The query record of each search Ximilar was sent.
fn queries(gw: &Gateway) -> Vec<Value> {
    gw.mock.calls_to(SEARCH_PATH).iter().map(|c| c.json().expect("JSON body")["query_record"].clone()).collect()
}

/// The JPEG a query carried inline, decoded.
fn sent_image(query: &Value) -> image::RgbImage {
    let encoded = query["_base64"].as_str().unwrap_or_else(|| panic!("no _base64 in {query}"));
    assert_eq!(query.as_object().unwrap().len(), 1, "only the image: {query}");
    let jpeg = decode_base64(encoded);
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).expect("decodes").to_rgb8()
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let mut out = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = group.iter().copied().filter(|c| *c != b'=').collect();
        let n = digits.iter().enumerate().fold(0u32, |n, (i, c)| n | value(*c) << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

/// Whether `got` shows the region of a generated `w` × `h` photo starting at
/// (`x0`, `y0`): pixels sampled across it, away from JPEG's edge smear.
fn shows_region(got: &image::RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> Result<(), String> {
    for (fx, fy) in [(0.1, 0.1), (0.5, 0.5), (0.9, 0.2), (0.2, 0.9), (0.9, 0.9)] {
        let (x, y) = ((got.width() as f64 * fx) as u32, (got.height() as f64 * fy) as u32);
        let want = photo_pixel(x0 + x, y0 + y, w, h);
        let have = got.get_pixel(x, y).0;
        if want.iter().zip(have).any(|(a, b)| a.abs_diff(b) > 6) {
            return Err(format!("at ({x},{y}) of the crop: {have:?}, the photo has {want:?} there"));
        }
    }
    Ok(())
}

async fn metric(gw: &Gateway, series: &str) -> Option<f64> {
    let text = gw.get("/metrics").await.text();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_garment_is_sent_cut_from_the_right_region_of_its_photo() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[("search_crop_margin_pct", "10")]).await;
    let url = format!("{}/photo-800x600.png#xywh=200,100,240,320", host.origin());
    let reply = gw.post("/search", &search(&url)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["candidates"].as_array().unwrap().len(), 3);

    let sent = queries(&gw);
    assert_eq!(sent.len(), 1);
    let got = sent_image(&sent[0]);
    // The box plus 10 % of its width and height on every side: x 176..464, y 68..452.
    assert_eq!((got.width(), got.height()), (288, 384));
    shows_region(&got, 176, 68, 800, 600).unwrap();
    assert_eq!(host.hits("/photo-800x600.png"), 1);
    assert_eq!(host.requests_with_credentials(), 0, "the Ximilar token never goes to an image host");

    // A JPEG photo, and a box at its edge: the margin stops at the image's border.
    let url = format!("{}/photo-1000x700.jpg#xywh=0,600,300,100", host.origin());
    assert_eq!(gw.post("/search", &search(&url)).await.status, 200);
    let got = sent_image(&queries(&gw)[1]);
    assert_eq!((got.width(), got.height()), (330, 110), "x 0..330, y 590..700: the margin clipped at two edges");
    shows_region(&got, 0, 590, 1000, 700).unwrap();
    gw.assert_no_secret_in_logs();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_garment_is_decoded_at_half_scale_and_matches_a_full_resolution_crop() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    // 1,100 × 1,700 plus the default 5 % margin: 1,210 × 1,870 px, which a full
    // decode would send at 1,024 px and a half-scale decode sends at 936.
    let url = format!("{}/photo-2400x3000.jpg#xywh=300,150,1100,1700", host.origin());
    let reply = gw.post("/search", &search(&url)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got = sent_image(&queries(&gw)[0]);
    assert_eq!((got.width(), got.height()), (606, 936), "x 244..1456, y 64..1936 at half scale");
    for (x, y) in [(60, 90), (303, 468), (545, 150), (60, 840), (545, 840)] {
        // Pixel (x, y) of the crop shows the photo's 2 × 2 pixels from (244 + 2x, 64 + 2y).
        let want = photo_pixel(244 + 2 * x, 64 + 2 * y, 2400, 3000);
        let have = got.get_pixel(x, y).0;
        assert!(want.iter().zip(have).all(|(a, b)| a.abs_diff(b) <= 6), "at ({x},{y}): {have:?}, photo {want:?}");
    }

    // The reference: the same region of the fully decoded photo, scaled to the same size.
    let photo = photo(2400, 3000, image::ImageFormat::Jpeg);
    let full = image::load_from_memory_with_format(&photo, image::ImageFormat::Jpeg).unwrap();
    let reference = full.crop_imm(244, 64, 1212, 1872).resize_exact(606, 936, image::imageops::FilterType::Triangle);
    let reference = reference.to_rgb8();
    let total: u64 = got.as_raw().iter().zip(reference.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
    let mean = total as f64 / got.as_raw().len() as f64;
    // The crop's own JPEG encoding alone moves a smooth photo by about 1.
    assert!(mean < 2.0, "mean absolute difference from the full-resolution crop: {mean:.2}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_garment_is_its_own_search_and_each_is_cached() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    let photo_url = format!("{}/photo-900x1200.jpg", host.origin());
    let boxes = ["#xywh=100,100,400,500", "#xywh=120,650,380,450", "#xywh=300,1120,200,80"];
    let mut answers = Vec::new();
    for b in boxes {
        let reply = gw.post("/search", &search(&format!("{photo_url}{b}"))).await;
        assert_eq!((reply.status, reply.header("x-cache")), (200, Some("MISS")), "{}", reply.text());
        answers.push(reply.json());
    }
    let sent = queries(&gw);
    assert_eq!(sent.len(), 3, "one search per garment");
    let sizes: Vec<(u32, u32)> = sent.iter().map(sent_image).map(|i| (i.width(), i.height())).collect();
    // Default margin 5 % (whole pixels): 400x500 → 440x550, 380x450 → 418x494.
    assert_eq!(sizes[0], (440, 550));
    assert_eq!(sizes[1], (418, 494));
    assert_eq!(sizes[2], (220, 84), "y 1116..1200: clipped at the photo's bottom edge");
    // The same box again: from the cache, no fetch, no call.
    let again = gw.post("/search", &search(&format!("{photo_url}{}", boxes[1]))).await;
    assert_eq!((again.status, again.header("x-cache")), (200, Some("HIT")));
    assert_eq!(again.json(), answers[1]);
    assert_eq!((queries(&gw).len(), host.hits("/photo-900x1200.jpg")), (3, 3));
    // A whole photo (no box) is sent by URL, as always.
    assert_eq!(gw.post("/search", &search(&photo_url)).await.status, 200);
    assert_eq!(queries(&gw)[3], json!({ "_url": photo_url }));
    assert_eq!(host.hits("/photo-900x1200.jpg"), 3);
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="ok"}"#).await, Some(3.0));
    assert_eq!(metric(&gw, "gateway_image_crop_duration_seconds_count").await, Some(3.0));
    assert_eq!(metric(&gw, "gateway_image_fetch_duration_seconds_count").await, Some(3.0));
    assert!(metric(&gw, "gateway_image_fetch_bytes_sum").await.unwrap() > 3.0 * 10_000.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_is_downloaded_and_decoded_once_for_all_its_detected_garments() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    let photo_url = format!("{}/photo-800x1700.jpg", host.origin());
    // The orchestrator's order: the photo's garments, then a search for each.
    let detected = gw.post("/detect", &json!({ "url": photo_url }).to_string()).await.json();
    let crop_urls: Vec<String> =
        detected["items"].as_array().unwrap().iter().map(|i| i["crop_url"].as_str().unwrap().to_string()).collect();
    assert_eq!(crop_urls.len(), 3, "{detected}");
    for crop_url in &crop_urls {
        let reply = gw.post("/search", &search(crop_url)).await;
        assert_eq!((reply.status, reply.header("x-cache")), (200, Some("MISS")), "{}", reply.text());
    }
    assert_eq!(host.hits("/photo-800x1700.jpg"), 1, "one download for the three garments");
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="ok"}"#).await, Some(1.0));
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="reused"}"#).await, Some(2.0));
    assert_eq!(metric(&gw, "gateway_image_fetch_duration_seconds_count").await, Some(1.0));
    // Each garment reached Ximilar exactly as a gateway cutting it alone sends it.
    let alone = cropping_gateway(&host, &[]).await;
    for crop_url in &crop_urls {
        assert_eq!(alone.post("/search", &search(crop_url)).await.status, 200);
    }
    assert_eq!(host.hits("/photo-800x1700.jpg"), 4, "without a detection, one download per garment");
    assert_eq!(queries(&gw), queries(&alone));
    // A box the detection does not name is cut from a download of its own.
    let other = format!("{photo_url}#xywh=10,10,200,200");
    assert_eq!(gw.post("/search", &search(&other)).await.status, 200);
    assert_eq!(host.hits("/photo-800x1700.jpg"), 5);
    let sent = sent_image(queries(&gw).last().unwrap());
    shows_region(&sent, 0, 0, 800, 1700).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn searches_of_an_outfit_sent_together_share_one_download() {
    let host = image_host().await;
    let gw = std::sync::Arc::new(cropping_gateway(&host, &[]).await);
    // A slow image host, so the three searches overlap.
    let slow = Served::Slow(Duration::from_millis(200), photo(800, 1700, image::ImageFormat::Jpeg));
    host.serve("/outfit.jpg", slow);
    let photo_url = format!("{}/outfit.jpg", host.origin());
    let detected = gw.post("/detect", &json!({ "url": photo_url }).to_string()).await.json();
    let crop_urls: Vec<String> =
        detected["items"].as_array().unwrap().iter().map(|i| i["crop_url"].as_str().unwrap().to_string()).collect();
    let together: Vec<_> = crop_urls
        .iter()
        .map(|crop_url| {
            let (gw, body) = (gw.clone(), search(crop_url));
            tokio::spawn(async move { gw.post("/search", &body).await })
        })
        .collect();
    for reply in together {
        let reply = reply.await.unwrap();
        assert_eq!((reply.status, reply.header("x-cache")), (200, Some("MISS")), "{}", reply.text());
    }
    assert_eq!(host.hits("/outfit.jpg"), 1, "one download for three searches at once");
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="reused"}"#).await, Some(2.0));
    assert_eq!(metric(&gw, "gateway_coalesced_total{handler=\"search\"}").await, None, "three searches of their own");
    let mut sent: Vec<String> = queries(&gw).iter().map(Value::to_string).collect();
    let alone = cropping_gateway(&host, &[]).await;
    for crop_url in &crop_urls {
        assert_eq!(alone.post("/search", &search(crop_url)).await.status, 200);
    }
    let mut expected: Vec<String> = queries(&alone).iter().map(Value::to_string).collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "each garment as a gateway cutting it alone sends it");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_off_the_list_is_refused_before_any_call_even_through_a_redirect() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    // `localhost` is the same server but not the allowed origin (`127.0.0.1:<port>`).
    let elsewhere = format!("http://localhost:{}/photo-400x300.jpg", host.addr().port());
    let reply = gw.post("/search", &search(&format!("{elsewhere}#xywh=10,10,100,100"))).await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "image_host_not_allowed"));
    assert_eq!(host.total_hits(), 0);
    assert_eq!(gw.app.denied_calls(), 0, "refused by the gateway itself, before Spin had to");

    host.serve("/hop", Served::Redirect(elsewhere.clone()));
    let reply = gw.post("/search", &search(&format!("{}/hop#xywh=10,10,100,100", host.origin()))).await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "image_host_not_allowed"));
    assert_eq!((host.hits("/hop"), host.total_hits()), (1, 1), "the redirect was not followed");

    // A redirect within the allowed origin is followed.
    host.serve("/moved", Served::Redirect("/photo-400x300.jpg".into()));
    let reply = gw.post("/search", &search(&format!("{}/moved#xywh=10,10,100,100", host.origin()))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(queries(&gw).len(), 1, "only the last request reached Ximilar");
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="host_not_allowed"}"#).await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_truncated_bomb_and_foreign_images_are_refused_unbilled() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[("image_max_bytes", "300000"), ("image_max_pixels", "30000000")]).await;
    let jpeg = photo(600, 400, image::ImageFormat::Jpeg);
    host.serve("/truncated.jpg", Served::Bytes { content_type: "image/jpeg", body: jpeg.slice(..jpeg.len() / 2) });
    host.serve("/bomb.png", Served::Bytes { content_type: "image/png", body: png_bomb(20_000, 20_000).into() });
    host.serve("/page.jpg", Served::Bytes { content_type: "text/html", body: "<html>sold out</html>".into() });
    host.serve("/endless.jpg", Served::Endless(vec![0xAB; 16 * 1024].into()));
    host.serve("/big.jpg", Served::Bytes { content_type: "image/jpeg", body: vec![0xFF; 400_000].into() });
    host.serve("/gone.jpg", Served::Status(404));
    let cases = [
        ("/big.jpg", 422, "image_fetch_failed", "larger than 300000 bytes"),
        ("/endless.jpg", 422, "image_fetch_failed", "larger than 300000 bytes"),
        ("/gone.jpg", 422, "image_fetch_failed", "HTTP 404"),
        ("/truncated.jpg", 422, "image_unreadable", "truncated"),
        ("/bomb.png", 422, "image_unreadable", "20000x20000"),
        ("/page.jpg", 422, "image_unreadable", "not a JPEG, PNG or WebP"),
        ("/photo-600x400.jpg", 422, "crop_outside_image", "600x400"),
    ];
    for (path, status, code, detail) in cases {
        let b = if path.starts_with("/photo") { "#xywh=700,10,50,50" } else { "#xywh=10,10,50,50" };
        let reply = gw.post("/search", &search(&format!("{}{path}{b}", host.origin()))).await;
        assert_eq!((reply.status, reply.code().as_str()), (status, code), "{path}: {}", reply.text());
        assert!(reply.json()["detail"].as_str().unwrap().contains(detail), "{path}: {}", reply.text());
    }
    assert_eq!(gw.upstream_total(), 0, "no image problem ever reaches Ximilar");
    for (outcome, n) in
        [("too_large", 2.0), ("status", 1.0), ("unreadable", 2.0), ("too_many_pixels", 1.0), ("outside_image", 1.0)]
    {
        let series = format!(r#"gateway_image_crops_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric(&gw, &series).await, Some(n), "{outcome}");
    }
    // The endless body was dropped at the limit, not read forever.
    let read = metric(&gw, "gateway_image_fetch_bytes_sum").await.unwrap();
    assert!(read < 2.0 * 400_000.0 + 100_000.0, "{read} bytes read");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_too_large_once_decoded_is_refused_unbilled() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    // A real 16-bit RGBA PNG of 16.8 MP, under the pixel limit: a few hundred KB
    // on the wire, 134,400,000 bytes decoded, just over the 128 MiB limit.
    let deep = deep_png(4200, 4000);
    assert!(deep.len() < 1_000_000, "{} bytes", deep.len());
    host.serve("/deep.png", Served::Bytes { content_type: "image/png", body: deep.into() });
    let reply = gw.post("/search", &search(&format!("{}/deep.png#xywh=100,100,800,800", host.origin()))).await;
    assert_eq!((reply.status, reply.code().as_str()), (422, "image_unreadable"), "{}", reply.text());
    let detail = reply.json()["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("4200x4000") && detail.contains("134400000 bytes") && detail.contains("decoded size limit"),
        "{detail}"
    );
    assert_eq!(host.hits("/deep.png"), 1);
    assert_eq!(gw.upstream_total(), 0, "nothing reached Ximilar");
    assert_eq!(metric(&gw, r#"gateway_image_crops_total{outcome="decoded_too_large"}"#).await, Some(1.0));

    // A photo that fits still crops, on the same instance.
    let reply = gw.post("/search", &search(&format!("{}/photo-800x600.png#xywh=10,10,100,100", host.origin()))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(gw.upstream_total(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_redirects_resolve_on_the_allowed_host_and_never_leave_it() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[]).await;
    host.serve(
        "/shop/img/photo.jpg",
        Served::Bytes { content_type: "image/jpeg", body: photo(400, 300, image::ImageFormat::Jpeg) },
    );
    let port = host.addr().port();
    let hops = [
        ("/shop/a/absolute", "/shop/img/photo.jpg".to_string()),
        ("/shop/a/up", "../img/photo.jpg".to_string()),
        ("/shop/img/same-dir", "photo.jpg".to_string()),
        ("/shop/img/dot", "./photo.jpg?v=2".to_string()),
        ("/network-path", format!("//127.0.0.1:{port}/shop/img/photo.jpg")),
        // Two relative hops: ../a/up, then ../img/photo.jpg from there.
        ("/shop/b/chain", "../a/up".to_string()),
    ];
    for (path, location) in &hops {
        host.serve(path, Served::Redirect(location.clone()));
    }
    for (n, (path, _)) in hops.iter().enumerate() {
        let reply = gw.post("/search", &search(&format!("{}{path}#xywh=100,50,200,150", host.origin()))).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let got = sent_image(&queries(&gw)[n]);
        assert_eq!((got.width(), got.height()), (220, 164), "{path}: the box plus 5 % (whole pixels) on every side");
        shows_region(&got, 90, 43, 400, 300).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert_eq!(host.hits("/shop/img/photo.jpg"), hops.len());
    assert_eq!(host.hits("/shop/a/up"), 2, "once directly, once through the chain");

    // Relative forms that resolve elsewhere are still checked against the allowed hosts.
    let refused = [
        ("/shop/away", format!("//localhost:{port}/shop/img/photo.jpg")),
        ("/shop/other-port", "//127.0.0.1:1/shop/img/photo.jpg".to_string()),
    ];
    let before = host.hits("/shop/img/photo.jpg");
    for (path, location) in &refused {
        host.serve(path, Served::Redirect(location.clone()));
        let reply = gw.post("/search", &search(&format!("{}{path}#xywh=100,50,200,150", host.origin()))).await;
        assert_eq!((reply.status, reply.code().as_str()), (422, "image_host_not_allowed"), "{path}: {}", reply.text());
    }
    assert_eq!(host.hits("/shop/img/photo.jpg"), before, "not followed");
    assert_eq!(gw.app.denied_calls(), 0, "refused by the gateway itself, before Spin had to");
    assert_eq!(queries(&gw).len(), hops.len(), "only the crops that worked reached Ximilar");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_image_host_is_a_504_inside_the_deadline() {
    let host = image_host().await;
    let vars = [("timeout_ms", "3000"), ("attempt_timeout_ms", "600")];
    let gw = cropping_gateway(&host, &vars).await;
    host.serve("/slow.jpg", Served::Slow(Duration::from_secs(5), photo(100, 100, image::ImageFormat::Jpeg)));
    let started = std::time::Instant::now();
    let reply = gw.post("/search", &search(&format!("{}/slow.jpg#xywh=0,0,50,50", host.origin()))).await;
    assert_eq!((reply.status, reply.code().as_str()), (504, "image_timeout"));
    assert!(started.elapsed() < Duration::from_millis(2000), "gave up after {:?}", started.elapsed());
    assert_eq!(gw.upstream_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_fetched_while_the_breaker_is_open() {
    let host = image_host().await;
    let gw = cropping_gateway(&host, &[("breaker_failures", "1"), ("max_retries", "0")]).await;
    gw.mock.push_fault_for(SEARCH_PATH, spin_test_host::mock::Fault::Status(503));
    let photo_url = format!("{}/photo-400x300.jpg", host.origin());
    assert_eq!(gw.post("/search", &search(&photo_url)).await.status, 503);
    let reply = gw.post("/search", &search(&format!("{photo_url}#xywh=10,10,100,100"))).await;
    assert_eq!((reply.status, reply.code().as_str()), (503, "upstream_unavailable"));
    assert_eq!(host.total_hits(), 0, "no download for a call that would be refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_mode_off_search_sends_exactly_the_photo_url() {
    let host = image_host().await;
    let gw = gateway(&[("image_host_a", &host.origin())]).await;
    let url = format!("{}/photo-800x600.jpg#xywh=200,100,240,320", host.origin());
    assert_eq!(gw.post("/search", &search(&url)).await.status, 200);
    let call = &gw.mock.calls_to(SEARCH_PATH)[0];
    assert_eq!(
        call.json().unwrap(),
        json!({
            "query_record": { "_url": format!("{}/photo-800x600.jpg", host.origin()) },
            "k": 3,
            "fields_to_return": ["_id", "_url"],
        })
    );
    assert_eq!(host.total_hits(), 0, "nothing fetched");
    assert!(!gw.get("/metrics").await.text().contains("gateway_image_crops_total{"));
}

/// A PNG declaring `width` × `height` (8-bit grey) with 8 bytes of pixel data.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut body = kind.to_vec();
        body.extend(data);
        let crc = body.iter().fold(!0u32, |mut crc, byte| {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
            crc
        });
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(body);
        png.extend((!crc).to_be_bytes());
    }
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x01, 0x08, 0x00, 0xF7, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08]);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A real, valid 16-bit RGBA PNG of one colour: small on the wire, `width` × `height` × 8 bytes decoded.
fn deep_png(width: u32, height: u32) -> Vec<u8> {
    let pixels = image::ImageBuffer::from_pixel(width, height, image::Rgba([20_000u16, 40_000, 60_000, 50_000]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgba16(pixels)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encode the PNG");
    png
}
