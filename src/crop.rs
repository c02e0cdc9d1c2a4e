//! Crop mode's image work: from the bytes of an untrusted source image to the
//! JPEG of one garment's box. Pure, so it is tested natively; the component
//! runs the same code inside its sandbox.
//!
//! Limits come first: only JPEG, PNG and WebP are decoded, and the pixel count
//! is read from the header and refused before any pixel buffer is allocated
//! (a small file can declare a huge image). The box is taken in the image as
//! displayed (EXIF orientation applied), and only the box is rotated.

use std::io::Cursor;
use std::time::Duration;

use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::contract::ApiError;
use crate::urls::Crop;

/// What the crop step may cost and produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CropLimits {
    /// Largest image (width × height) that is decoded at all.
    pub max_pixels: u64,
    /// Longest side of the JPEG sent to Ximilar; a larger crop is scaled down.
    pub max_side: u32,
    /// Added around the box on every side, in percent of the box's width (left,
    /// right) and height (top, bottom), within the image.
    pub margin_pct: u32,
    /// JPEG quality of the crop.
    pub quality: u8,
}

/// The garment, ready to send.
#[derive(Debug)]
pub struct Cropped {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The region of the displayed source image it shows: `[x1, y1, x2, y2]`.
    pub region: [u32; 4],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CropError {
    /// Not a JPEG, PNG or WebP image, or a damaged or truncated one.
    Unreadable(String),
    /// The header declares more pixels than allowed (a decompression bomb, or just too big).
    TooManyPixels { width: u32, height: u32 },
    /// The box (with its margin) does not overlap the image.
    OutsideImage { width: u32, height: u32 },
    /// Too little time is left to decode an image this large (decoding cannot be interrupted).
    NoTime,
}

impl CropError {
    /// The `outcome` label of `gateway_image_crops_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CropError::Unreadable(_) => "unreadable",
            CropError::TooManyPixels { .. } => "too_many_pixels",
            CropError::OutsideImage { .. } => "outside_image",
            CropError::NoTime => "timeout",
        }
    }

    /// The caller's error: its image, so nothing was sent to Ximilar.
    pub fn to_api_error(&self, limits: &CropLimits) -> ApiError {
        match self {
            CropError::Unreadable(why) => ApiError::invalid("image_unreadable", why.clone()),
            CropError::TooManyPixels { width, height } => ApiError::invalid(
                "image_unreadable",
                format!("the image is {width}x{height} pixels, more than the {} allowed", limits.max_pixels),
            ),
            CropError::OutsideImage { width, height } => ApiError::invalid(
                "crop_outside_image",
                format!("the #xywh box lies outside the {width}x{height} image"),
            ),
            CropError::NoTime => {
                ApiError::new(504, "image_timeout", "too little of the deadline is left to crop the image")
            }
        }
    }
}

/// Decoding speed assumed when deciding whether the crop still fits in the
/// deadline: slower than measured inside the component (BENCHMARKS.md), so a
/// crop that starts is expected to end in time.
const ASSUMED_PIXELS_PER_SECOND: u64 = 20_000_000;

/// A pessimistic estimate of decoding, cropping and encoding an image of `pixels`.
fn estimated_cost(pixels: u64) -> Duration {
    Duration::from_micros(pixels.saturating_mul(1_000_000) / ASSUMED_PIXELS_PER_SECOND)
}

/// The format by its first bytes; only the three that crop mode accepts.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn open(bytes: &[u8]) -> Result<impl ImageDecoder + '_, CropError> {
    let format = sniff(bytes).ok_or_else(|| CropError::Unreadable("not a JPEG, PNG or WebP image".into()))?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(CropError::Unreadable("the JPEG is truncated (its last scan has no end)".into()));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(Limits::default());
    reader.into_decoder().map_err(unreadable)
}

/// The JPEG decoder fills a cut-off scan with grey instead of failing, so a
/// truncated download is caught here: the last start-of-scan marker must be
/// followed by the end-of-image marker (data appended after it is allowed).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const START_OF_SCAN: [u8; 2] = [0xFF, 0xDA];
    const END_OF_IMAGE: [u8; 2] = [0xFF, 0xD9];
    match bytes.windows(2).rposition(|w| w == START_OF_SCAN) {
        Some(scan) => bytes[scan..].windows(2).any(|w| w == END_OF_IMAGE),
        None => false,
    }
}

fn unreadable(e: image::ImageError) -> CropError {
    CropError::Unreadable(format!("the image could not be decoded ({e})"))
}

/// Decodes `bytes`, cuts out `crop` plus the margin and encodes it as JPEG.
/// Decoding starts only if [`estimated_cost`] of the declared size fits in `time_left`.
pub fn crop_to_jpeg(bytes: &[u8], crop: Crop, limits: &CropLimits, time_left: Duration) -> Result<Cropped, CropError> {
    let mut decoder = open(bytes)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(CropError::TooManyPixels { width, height });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (shown_w, shown_h) = displayed_size(orientation, width, height);
    let region = region(crop, limits.margin_pct, shown_w, shown_h)
        .ok_or(CropError::OutsideImage { width: shown_w, height: shown_h })?;
    let raw = stored_region(orientation, region, width, height);
    if estimated_cost(pixels) > time_left {
        return Err(CropError::NoTime);
    }

    let image = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    let mut piece = image.crop_imm(raw[0], raw[1], raw[2] - raw[0], raw[3] - raw[1]);
    drop(image);
    piece.apply_orientation(orientation);
    let longest = piece.width().max(piece.height());
    if longest > limits.max_side {
        let scale = f64::from(limits.max_side) / f64::from(longest);
        let w = ((f64::from(piece.width()) * scale).round() as u32).max(1);
        let h = ((f64::from(piece.height()) * scale).round() as u32).max(1);
        piece = piece.resize_exact(w, h, FilterType::Triangle);
    }
    let rgb = flatten_on_white(piece);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, limits.quality)
        .encode_image(&rgb)
        .map_err(|e| CropError::Unreadable(format!("the crop could not be encoded ({e})")))?;
    Ok(Cropped { jpeg, width: rgb.width(), height: rgb.height(), region })
}

/// The box grown by `margin_pct` on every side, clipped to a `width` × `height`
/// image: `[x1, y1, x2, y2]`, or `None` when nothing of it is inside.
pub fn region(crop: Crop, margin_pct: u32, width: u32, height: u32) -> Option<[u32; 4]> {
    let margin = |side: i64| side.saturating_mul(i64::from(margin_pct)) / 100;
    let (mx, my) = (margin(crop.w), margin(crop.h));
    let clip = |v: i64, max: u32| v.clamp(0, i64::from(max)) as u32;
    let x1 = clip(crop.x.saturating_sub(mx), width);
    let y1 = clip(crop.y.saturating_sub(my), height);
    let x2 = clip(crop.x.saturating_add(crop.w).saturating_add(mx), width);
    let y2 = clip(crop.y.saturating_add(crop.h).saturating_add(my), height);
    (x2 > x1 && y2 > y1).then_some([x1, y1, x2, y2])
}

fn displayed_size(orientation: Orientation, width: u32, height: u32) -> (u32, u32) {
    match orientation {
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => {
            (height, width)
        }
        _ => (width, height),
    }
}

/// The rectangle of the stored (unrotated) `width` × `height` image that shows
/// `region` of the displayed one: cropping there and then orienting the piece
/// equals orienting the whole image and cropping, without rotating 12 MP.
fn stored_region(orientation: Orientation, region: [u32; 4], width: u32, height: u32) -> [u32; 4] {
    let [x1, y1, x2, y2] = region;
    // Edges map to edges; each case is the inverse of the orientation's transform.
    let (ax, ay, bx, by) = match orientation {
        Orientation::NoTransforms => (x1, y1, x2, y2),
        Orientation::Rotate90 => (y1, height - x1, y2, height - x2),
        Orientation::Rotate180 => (width - x1, height - y1, width - x2, height - y2),
        Orientation::Rotate270 => (width - y1, x1, width - y2, x2),
        Orientation::FlipHorizontal => (width - x1, y1, width - x2, y2),
        Orientation::FlipVertical => (x1, height - y1, x2, height - y2),
        Orientation::Rotate90FlipH => (y1, x1, y2, x2),
        Orientation::Rotate270FlipH => (width - y1, height - x1, width - y2, height - x2),
    };
    [ax.min(bx), ay.min(by), ax.max(bx), ay.max(by)]
}

/// JPEG has no alpha: transparent pixels become white (a product photo's
/// usual background), not whatever colour hides under them.
fn flatten_on_white(image: DynamicImage) -> image::RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb, RgbImage};

    const LIMITS: CropLimits = CropLimits { max_pixels: 40_000_000, max_side: 1024, margin_pct: 0, quality: 95 };

    /// A picture whose every pixel says where it is: red = x / 4, green = y / 4.
    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x / 4) as u8, (y / 4) as u8, 128]))
    }

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg).unwrap().to_rgb8()
    }

    fn near(a: Rgb<u8>, b: Rgb<u8>) -> bool {
        a.0.iter().zip(b.0).all(|(x, y)| x.abs_diff(y) <= 6)
    }

    #[test]
    fn the_crop_shows_the_box_and_only_the_box() {
        let source = png(&DynamicImage::ImageRgb8(gradient(800, 600)));
        let out = crop_to_jpeg(&source, Crop { x: 200, y: 100, w: 240, h: 320 }, &LIMITS, Duration::MAX).unwrap();
        assert_eq!((out.width, out.height), (240, 320));
        assert_eq!(out.region, [200, 100, 440, 420]);
        let got = decode(&out.jpeg);
        // Sample away from the block edges JPEG smears.
        for (x, y) in [(8, 8), (120, 160), (230, 310)] {
            assert!(near(*got.get_pixel(x, y), Rgb([((200 + x) / 4) as u8, ((100 + y) / 4) as u8, 128])), "{x},{y}");
        }
    }

    #[test]
    fn the_margin_grows_the_box_and_stops_at_the_edges() {
        assert_eq!(region(Crop { x: 100, y: 100, w: 200, h: 100 }, 10, 1000, 1000), Some([80, 90, 320, 210]));
        assert_eq!(region(Crop { x: 0, y: 950, w: 200, h: 100 }, 10, 1000, 1000), Some([0, 940, 220, 1000]));
        assert_eq!(region(Crop { x: 2000, y: 0, w: 10, h: 10 }, 10, 1000, 1000), None);
        let source = png(&DynamicImage::ImageRgb8(gradient(400, 300)));
        let limits = CropLimits { margin_pct: 10, ..LIMITS };
        let out = crop_to_jpeg(&source, Crop { x: 100, y: 100, w: 100, h: 50 }, &limits, Duration::MAX).unwrap();
        assert_eq!((out.width, out.height, out.region), (120, 60, [90, 95, 210, 155]));
        let outside = crop_to_jpeg(&source, Crop { x: 500, y: 10, w: 10, h: 10 }, &limits, Duration::MAX).unwrap_err();
        assert_eq!(outside, CropError::OutsideImage { width: 400, height: 300 });
    }

    #[test]
    fn a_large_crop_is_scaled_to_the_longest_side() {
        let source = png(&DynamicImage::ImageRgb8(gradient(3000, 1000)));
        let out = crop_to_jpeg(&source, Crop { x: 0, y: 0, w: 3000, h: 600 }, &LIMITS, Duration::MAX).unwrap();
        assert_eq!((out.width, out.height), (1024, 205));
    }

    #[test]
    fn every_exif_orientation_crops_the_displayed_image() {
        let stored = DynamicImage::ImageRgb8(gradient(64, 48));
        for orientation in [
            Orientation::NoTransforms,
            Orientation::Rotate90,
            Orientation::Rotate180,
            Orientation::Rotate270,
            Orientation::FlipHorizontal,
            Orientation::FlipVertical,
            Orientation::Rotate90FlipH,
            Orientation::Rotate270FlipH,
        ] {
            let mut shown = stored.clone();
            shown.apply_orientation(orientation);
            let (w, h) = displayed_size(orientation, 64, 48);
            assert_eq!((w, h), (shown.width(), shown.height()));
            let r = [5, 7, 29, 40.min(h)];
            let expected = shown.crop_imm(r[0], r[1], r[2] - r[0], r[3] - r[1]).to_rgb8();
            let s = stored_region(orientation, r, 64, 48);
            let mut piece = stored.crop_imm(s[0], s[1], s[2] - s[0], s[3] - s[1]);
            piece.apply_orientation(orientation);
            assert_eq!(piece.to_rgb8(), expected, "{orientation:?}");
        }
    }

    #[test]
    fn the_pixel_limit_holds_before_anything_is_decoded() {
        let bomb = jpeg_bomb(20_000, 20_000);
        assert!(bomb.len() < 2_000);
        assert_eq!(open(&bomb).unwrap().dimensions(), (20_000, 20_000));
        let limits = CropLimits { max_pixels: 30_000_000, ..LIMITS };
        assert_eq!(
            crop_to_jpeg(&bomb, Crop { x: 0, y: 0, w: 10, h: 10 }, &limits, Duration::MAX).unwrap_err(),
            CropError::TooManyPixels { width: 20_000, height: 20_000 }
        );
    }

    /// A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to declare
    /// `width` × `height`: what a decompression bomb looks like to a header reader.
    fn jpeg_bomb(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(gradient(16, 16)).write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG has SOF0");
        // FF C0, length (2), precision (1), then height and width (2 each, big-endian).
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn truncated_foreign_and_empty_bytes_are_unreadable() {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(gradient(300, 300)).write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).unwrap();
        let box_ = Crop { x: 0, y: 0, w: 100, h: 100 };
        for bad in [&jpeg[..jpeg.len() / 3], b"GIF89a......", b"", b"<html>not an image</html>"] {
            assert!(
                matches!(crop_to_jpeg(bad, box_, &LIMITS, Duration::MAX), Err(CropError::Unreadable(_))),
                "{:?}",
                &bad[..bad.len().min(8)]
            );
        }
        assert!(crop_to_jpeg(&jpeg, box_, &LIMITS, Duration::MAX).is_ok());
    }

    #[test]
    fn a_decode_that_would_outlast_the_deadline_does_not_start() {
        let source = png(&DynamicImage::ImageRgb8(gradient(400, 300)));
        let box_ = Crop { x: 10, y: 10, w: 100, h: 100 };
        // 120,000 pixels at the assumed 20 MP/s: 6 ms.
        assert_eq!(crop_to_jpeg(&source, box_, &LIMITS, Duration::from_millis(5)).unwrap_err(), CropError::NoTime);
        assert!(crop_to_jpeg(&source, box_, &LIMITS, Duration::from_millis(7)).is_ok());
        assert_eq!(CropError::NoTime.to_api_error(&LIMITS).status, 504);
    }

    #[test]
    fn transparency_becomes_white() {
        let rgba = image::RgbaImage::from_fn(40, 40, |x, _| image::Rgba([0, 0, 0, if x < 20 { 0 } else { 255 }]));
        let out = crop_to_jpeg(
            &png(&DynamicImage::ImageRgba8(rgba)),
            Crop { x: 0, y: 0, w: 40, h: 40 },
            &LIMITS,
            Duration::MAX,
        );
        let got = decode(&out.unwrap().jpeg);
        assert!(near(*got.get_pixel(4, 20), Rgb([255, 255, 255])) && near(*got.get_pixel(36, 20), Rgb([0, 0, 0])));
    }

    #[test]
    fn webp_is_read() {
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(gradient(50, 40).as_raw(), 50, 40, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(sniff(&webp), Some(ImageFormat::WebP));
        let out = crop_to_jpeg(&webp, Crop { x: 10, y: 10, w: 20, h: 20 }, &LIMITS, Duration::MAX).unwrap();
        assert_eq!((out.width, out.height), (20, 20));
    }
}
