//! Crop mode's image work: from the bytes of an untrusted source image to the
//! JPEG of one garment's box. Pure, so it is tested natively; the component
//! runs the same code inside its sandbox.
//!
//! Limits come first: only JPEG, PNG and WebP are decoded, and the pixel count
//! and the decoded size are read from the header and refused before any pixel
//! buffer is allocated (a small file can declare a huge image). The image is
//! decoded once and the box is read from it in place: only the box, scaled
//! down, is ever copied. The box is taken in the image as displayed (EXIF
//! orientation applied), and only the scaled box is rotated.
//!
//! A JPEG is decoded only as far as its boxes need: down to the row below the
//! lowest one, and at 1/2, 1/4 or 1/8 of its size (JPEG's DCT scaling) when the
//! boxes, which are sent at 1,024 px at most, keep nine tenths of their size
//! that way. Most of a photo's decoding is then never done.

use std::io::Cursor;
use std::time::Duration;

use image::metadata::Orientation;
use image::{imageops, DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Limits, Pixel, RgbImage};

use crate::contract::ApiError;
use crate::urls::Crop;

/// Most memory decoding one image may hold: the decoded pixels (width ×
/// height × the bytes per pixel of the decoder's colour type, so 16-bit and
/// alpha channels count) plus the whole-image buffers that the decoder of a
/// progressive JPEG or of a WebP keeps besides them. The whole image is held
/// while its box is cut out, and one instance runs up to 16 requests in a 2 GB
/// container, so one crop gets about a sixteenth of it. Fits 44 MP of 8-bit
/// RGB in a baseline JPEG (a 12 MP photo takes 36 MB); refuses a 50 MP 16-bit
/// RGBA PNG (400 MB), however well it compresses.
pub const MAX_DECODED_BYTES: u64 = 128 * 1024 * 1024;

/// Longest side any decoder is asked to handle, checked from the header: the
/// most a JPEG can declare (a WebP stops at 16,383), so no photo is refused,
/// while a PNG declaring a side of billions cannot size its row buffers by it.
pub const MAX_IMAGE_SIDE: u32 = 65_535;

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
#[derive(Debug, PartialEq, Eq)]
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
    /// Decoding the image would hold more than [`MAX_DECODED_BYTES`] (deep or
    /// transparent pixels, a progressive JPEG): refused from its header, like a bomb.
    DecodedTooLarge { width: u32, height: u32, bytes: u64 },
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
            CropError::DecodedTooLarge { .. } => "decoded_too_large",
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
            CropError::DecodedTooLarge { width, height, bytes } => ApiError::invalid(
                "image_unreadable",
                format!(
                    "the image is {width}x{height} pixels and takes {bytes} bytes to decode: \
                     over the decoded size limit of {MAX_DECODED_BYTES} bytes (128 MiB)"
                ),
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

/// The format by its first bytes (the `image` crate's signatures); only the
/// three that crop mode accepts.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    image::guess_format(bytes)
        .ok()
        .filter(|format| matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP))
}

/// The decoders' own limits: no side over [`MAX_IMAGE_SIDE`], and at most
/// `alloc` bytes for the buffers a decoder sizes itself (the PNG decoder
/// counts its rows and chunks against it).
fn decoder_limits(alloc: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(alloc);
    limits
}

/// A decoder for `bytes` that has read the header and nothing more.
fn open(bytes: &[u8]) -> Result<impl ImageDecoder + '_, CropError> {
    let format = sniff(bytes).ok_or_else(|| CropError::Unreadable("not a JPEG, PNG or WebP image".into()))?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(CropError::Unreadable("the JPEG is truncated (its last scan has no end)".into()));
    }
    decoder_for(bytes, format)
}

/// A decoder of `format` for `bytes`, header read, within the decoders' limits.
fn decoder_for(bytes: &[u8], format: ImageFormat) -> Result<impl ImageDecoder + '_, CropError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(MAX_DECODED_BYTES));
    reader.into_decoder().map_err(unreadable)
}

/// Refuses, from the header alone, an image too large to decode: more pixels
/// than `limits` allow, or more than [`MAX_DECODED_BYTES`] held to decode it.
/// As `ImageReader::decode` does, what is left of the allowance becomes the
/// decoder's limit for its own buffers.
fn admit(bytes: &[u8], decoder: &mut impl ImageDecoder, limits: &CropLimits) -> Result<(), CropError> {
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(CropError::TooManyPixels { width, height });
    }
    let working = match sniff(bytes) {
        Some(ImageFormat::Jpeg) => jpeg_coefficient_bytes(bytes),
        Some(ImageFormat::WebP) => webp_frame_bytes(bytes, width, height),
        // The PNG decoder keeps two rows, and counts them against its `Limits`.
        _ => 0,
    };
    let needed = decoder.total_bytes().saturating_add(working);
    if needed > MAX_DECODED_BYTES {
        return Err(CropError::DecodedTooLarge { width, height, bytes: needed });
    }
    decoder.set_limits(decoder_limits(MAX_DECODED_BYTES - needed)).map_err(unreadable)
}

/// A JPEG's frame header: its size, whether it is progressive, and how each
/// component is sampled (horizontally, vertically).
struct JpegFrame {
    progressive: bool,
    width: u64,
    height: u64,
    sampling: Vec<(u64, u64)>,
}

impl JpegFrame {
    /// Every component's coefficients, 2 bytes each, on the grid of whole blocks.
    fn coefficient_bytes(&self) -> u64 {
        let h_max = self.sampling.iter().map(|s| s.0).max().unwrap_or(1);
        let v_max = self.sampling.iter().map(|s| s.1).max().unwrap_or(1);
        let (across, down) = (self.width.div_ceil(8 * h_max), self.height.div_ceil(8 * v_max));
        self.sampling.iter().map(|(h, v)| (across * h * 8) * (down * v * 8) * 2).sum()
    }
}

/// What a walk over a JPEG's segments up to its first scan tells.
struct JpegHeader {
    frame: Option<JpegFrame>,
    /// Where the frame header's height (2 bytes, big-endian) is.
    height_at: usize,
    /// The first scan is baseline with every component in it: the whole image
    /// is one stream of blocks, row after row.
    streams: bool,
    /// A restart interval is set: markers inside the scan.
    restarts: bool,
}

/// Reads a JPEG's segments up to its first scan. A header that ends before
/// its first scan does not stream.
fn jpeg_header(jpeg: &[u8]) -> JpegHeader {
    let mut header = JpegHeader { frame: None, height_at: 0, streams: false, restarts: false };
    let mut at = 2;
    // A marker is 0xFF then its code; fill bytes and anything between segments are skipped.
    while let Some(ff) = jpeg.get(at..).and_then(|rest| rest.iter().position(|b| *b == 0xFF)) {
        at += ff + 1;
        let Some(&code) = jpeg.get(at) else { break };
        if matches!(code, 0xFF | 0x00 | 0x01 | 0xD0..=0xD8) {
            continue;
        }
        let Some(&[high, low]) = jpeg.get(at + 1..at + 3) else { break };
        let length = usize::from(u16::from_be_bytes([high, low]));
        let Some(body) = jpeg.get(at + 3..(at + 1 + length).max(at + 3)) else { break };
        match code {
            // Start of frame (0xC4, 0xC8 and 0xCC are other segments).
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                let Some(&[_, h1, h0, w1, w0, count]) = body.get(..6) else { break };
                let sampling = body[6..].chunks_exact(3).take(usize::from(count));
                header.height_at = at + 4;
                header.frame = Some(JpegFrame {
                    progressive: matches!(code, 0xC2 | 0xC6 | 0xCA | 0xCE),
                    width: u64::from(u16::from_be_bytes([w1, w0])),
                    height: u64::from(u16::from_be_bytes([h1, h0])),
                    sampling: sampling.map(|c| (u64::from(c[1] >> 4).max(1), u64::from(c[1] & 0x0F).max(1))).collect(),
                });
            }
            0xDD => header.restarts = body.get(..2).is_some_and(|interval| interval != [0, 0]),
            0xDA => {
                header.streams = header.frame.as_ref().is_some_and(|f| {
                    !f.progressive && body.first().is_some_and(|n| usize::from(*n) >= f.sampling.len())
                });
                break;
            }
            0xD9 => break,
            _ => {}
        }
        at += 1 + length;
    }
    header
}

/// What the JPEG decoder holds besides the decoded pixels. A progressive JPEG
/// (or one whose first scan lacks a component) is decoded from all of its
/// coefficients at once; a baseline JPEG a row of blocks at a time (0). The
/// `image` crate's `Limits` do not reach that buffer, so it is counted here.
fn jpeg_coefficient_bytes(jpeg: &[u8]) -> u64 {
    let header = jpeg_header(jpeg);
    header.frame.filter(|_| !header.streams).map_or(0, |f| f.coefficient_bytes())
}

/// A JPEG cut off below a row, when only the rows above it are needed: its
/// frame header made to declare that height, so the decoder stops there and
/// never reads the blocks of the rows below.
struct RowCut {
    /// Where the frame header's height is.
    at: usize,
    height: [u8; 2],
}

impl RowCut {
    /// The cut below row `rows`, for a JPEG whose blocks come in one scan, row
    /// after row, without restart markers (which the decoder would meet,
    /// unread, after its last row); `None` otherwise, or when the whole height
    /// is needed.
    fn of(jpeg: &[u8], rows: u32) -> Option<RowCut> {
        let header = jpeg_header(jpeg);
        let frame = header.frame.as_ref()?;
        let rows = u16::try_from(rows).ok().filter(|&rows| rows > 0 && u64::from(rows) < frame.height)?;
        (header.streams && !header.restarts).then_some(RowCut { at: header.height_at, height: rows.to_be_bytes() })
    }

    /// The cut JPEG (a copy: both decoders read it from one slice, fastest).
    fn to_vec(&self, jpeg: &[u8]) -> Vec<u8> {
        [&jpeg[..self.at], &self.height[..], &jpeg[self.at + 2..]].concat()
    }
}

/// What the WebP decoder holds besides the decoded pixels, at most, by the
/// kind of WebP its first chunk names: a lossy frame's YUV planes (1.5 bytes a
/// pixel, on 16-pixel macroblocks); an RGBA frame (4 bytes) for a lossless
/// image without alpha; for lossy with alpha, its planes plus the alpha plane
/// decoded as RGBA and its green channel (5 bytes); for an animation, the
/// first frame composed on top of all that.
fn webp_frame_bytes(webp: &[u8], width: u32, height: u32) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let yuv = u64::from(width.div_ceil(16) * 16) * u64::from(height.div_ceil(16) * 16) * 3 / 2;
    match webp.get(12..16) {
        Some(b"VP8 ") => yuv,
        // The simple lossless header: signature 0x2F, then width, height and the alpha bit.
        Some(b"VP8L") => match webp.get(21..25) {
            Some(&[_, _, _, last]) if last & 0x10 != 0 => 0,
            _ => 4 * pixels,
        },
        Some(b"VP8X") => match webp.get(20).copied().unwrap_or(0xFF) {
            flags if flags & 0x02 != 0 => yuv + 5 * pixels + 4 * pixels,
            flags if flags & 0x10 != 0 => yuv + 5 * pixels,
            _ => 4 * pixels,
        },
        _ => yuv + 9 * pixels,
    }
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
    match e {
        image::ImageError::Limits(limit) => CropError::Unreadable(format!(
            "the image is beyond the decoder's limits ({limit}): sides up to {MAX_IMAGE_SIDE} pixels, \
             {MAX_DECODED_BYTES} bytes decoded"
        )),
        e => CropError::Unreadable(format!("the image could not be decoded ({e})")),
    }
}

/// Decodes `bytes`, cuts out `crop` plus the margin and encodes it as JPEG.
/// Decoding starts only if [`estimated_cost`] of the declared size fits in
/// `time_left`. At most one decoded image is held, plus the scaled box.
pub fn crop_to_jpeg(bytes: &[u8], crop: Crop, limits: &CropLimits, time_left: Duration) -> Result<Cropped, CropError> {
    let (first, _) = crops_to_jpeg(bytes, crop, &[], limits, time_left)?;
    Ok(first)
}

/// [`crop_to_jpeg`] of `crop`, and of each of `others` from the same decode
/// (a photo's other garments, for requests still to come): the decode, most of
/// the cost, is paid once. `crop` decides success; each of the others has its
/// own result, in order.
pub fn crops_to_jpeg(
    bytes: &[u8],
    crop: Crop,
    others: &[Crop],
    limits: &CropLimits,
    time_left: Duration,
) -> Result<(Cropped, Vec<Result<Cropped, CropError>>), CropError> {
    let mut decoder = open(bytes)?;
    admit(bytes, &mut decoder, limits)?;
    let (width, height) = decoder.dimensions();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (shown_w, shown_h) = displayed_size(orientation, width, height);
    let place = |crop: Crop| {
        region(crop, limits.margin_pct, shown_w, shown_h)
            .map(|region| (region, stored_region(orientation, region, width, height)))
            .ok_or(CropError::OutsideImage { width: shown_w, height: shown_h })
    };
    let first = place(crop)?;
    let rest: Vec<_> = others.iter().map(|&other| place(other)).collect();
    if estimated_cost(u64::from(width) * u64::from(height)) > time_left {
        return Err(CropError::NoTime);
    }

    let boxes: Vec<[u32; 4]> = std::iter::once(first.1).chain(rest.iter().flatten().map(|placed| placed.1)).collect();
    let decoded = decode(bytes, decoder, &boxes, limits)?;
    let cut = |(region, stored): ([u32; 4], [u32; 4])| {
        cut_and_encode(&decoded.image, region, decoded.scaled(stored), orientation, limits)
    };
    let answer = cut(first)?;
    let rest = rest.into_iter().map(|placed| placed.and_then(cut)).collect();
    Ok((answer, rest))
}

/// How much of a box's size a reduced decode must keep, in percent of the
/// longer side it would be sent at from a full decode. Half scale turns a
/// 1,980 px box into 990 px where a full decode sends 1,024: nothing Ximilar
/// can tell apart (its own client sends similarity search 512 px), for a
/// quarter of the decoder's work after its entropy decoding.
const MIN_SIZE_KEPT_PCT: u64 = 90;

/// The source image, decoded only as far as the boxes need it.
struct Decoded {
    image: DynamicImage,
    /// 1, 2, 4 or 8: each side of `image` is the stored image's divided by it.
    divisor: u32,
}

impl Decoded {
    /// The whole image at full size.
    fn whole(decoder: impl ImageDecoder) -> Result<Decoded, CropError> {
        Ok(Decoded { image: DynamicImage::from_decoder(decoder).map_err(unreadable)?, divisor: 1 })
    }

    /// The `stored` rectangle (full-size coordinates) in the decoded image:
    /// each edge divided and rounded outwards, within the image.
    fn scaled(&self, stored: [u32; 4]) -> [u32; 4] {
        let [x1, y1, x2, y2] = stored;
        let d = self.divisor;
        [x1 / d, y1 / d, x2.div_ceil(d).min(self.image.width()), y2.div_ceil(d).min(self.image.height())]
    }
}

/// The largest of 8, 4 and 2 by which JPEG's DCT scaling may divide the image
/// while every box keeps [`MIN_SIZE_KEPT_PCT`] of the size it is sent at; 1 if none.
fn dct_divisor(boxes: &[[u32; 4]], max_side: u32) -> u32 {
    let keeps = |d: u32, [x1, y1, x2, y2]: [u32; 4]| {
        let (w, h) = (x2 - x1, y2 - y1);
        let (sent_w, sent_h) = fitted(w, h, max_side);
        u64::from(w.max(h) / d) * 100 >= u64::from(sent_w.max(sent_h)) * MIN_SIZE_KEPT_PCT
    };
    [8, 4, 2].into_iter().find(|&d| boxes.iter().all(|&b| keeps(d, b))).unwrap_or(1)
}

/// Rows decoded below the lowest box, so that the chroma of its last rows is
/// upsampled from their true neighbours (a row of the largest blocks).
const ROWS_PAST_THE_BOX: u32 = 16;

/// Decodes what `boxes` (stored coordinates) need. A JPEG is decoded only down
/// to the rows below its lowest box, where its layout allows, and at the
/// smallest DCT scale [`dct_divisor`] allows (8-bit grey or colour); anything
/// else is decoded whole by `decoder`.
fn decode(
    bytes: &[u8],
    decoder: impl ImageDecoder,
    boxes: &[[u32; 4]],
    limits: &CropLimits,
) -> Result<Decoded, CropError> {
    let jpeg = sniff(bytes) == Some(ImageFormat::Jpeg);
    let lowest = boxes.iter().map(|b| b[3]).max().unwrap_or(u32::MAX);
    let cut = jpeg.then(|| RowCut::of(bytes, lowest.saturating_add(ROWS_PAST_THE_BOX))).flatten();
    let divisor = if jpeg { dct_divisor(boxes, limits.max_side) } else { 1 };
    if divisor == 1 && cut.is_none() {
        return Decoded::whole(decoder);
    }
    // Its copy of the file is not needed past here, so the cut's copy takes no more memory.
    drop(decoder);
    let cut = cut.map(|cut| cut.to_vec(bytes));
    let source = cut.as_deref().unwrap_or(bytes);
    if divisor > 1 {
        if let Some(image) = decode_jpeg_scaled(source, divisor) {
            return Ok(Decoded { image, divisor });
        }
    }
    // The cut ends as the file did, whose completeness `open` checked.
    let mut decoder = decoder_for(source, ImageFormat::Jpeg)?;
    admit(source, &mut decoder, limits)?;
    Decoded::whole(decoder)
}

/// A JPEG decoded at `1 / divisor` of its size by scaling its inverse DCT, or
/// `None` when this decoder cannot (12-bit samples, arithmetic coding, a
/// damaged scan) or its pixels are not 8-bit grey or colour (CMYK): the full
/// decode then takes the image or refuses it, as it would have anyway.
/// [`admit`] has already bounded its memory: the scaled planes and pixels are
/// at most half the full-size pixels it counted.
fn decode_jpeg_scaled(jpeg: &[u8], divisor: u32) -> Option<DynamicImage> {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    decoder.set_max_decoding_buffer_size(MAX_DECODED_BYTES as usize);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let wanted = (info.width.div_ceil(divisor as u16), info.height.div_ceil(divisor as u16));
    if decoder.scale(wanted.0, wanted.1).ok()? != wanted {
        return None;
    }
    let (width, height) = (u32::from(wanted.0), u32::from(wanted.1));
    match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(width, height, decoder.decode().ok()?).map(DynamicImage::ImageLuma8)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            RgbImage::from_raw(width, height, decoder.decode().ok()?).map(DynamicImage::ImageRgb8)
        }
        _ => None,
    }
}

/// The box `stored` of the decoded `image`, scaled to fit, turned upright and encoded.
fn cut_and_encode(
    image: &DynamicImage,
    region: [u32; 4],
    stored: [u32; 4],
    orientation: Orientation,
    limits: &CropLimits,
) -> Result<Cropped, CropError> {
    let (out_w, out_h) = fitted(stored[2] - stored[0], stored[3] - stored[1], limits.max_side);
    let piece = box_on_white(image, stored, out_w, out_h)
        .ok_or_else(|| CropError::Unreadable("the image's colour type is not supported".into()))?;
    let mut piece = DynamicImage::ImageRgb8(piece);
    piece.apply_orientation(orientation);
    let rgb = piece.into_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, limits.quality)
        .encode_image(&rgb)
        .map_err(|e| CropError::Unreadable(format!("the crop could not be encoded ({e})")))?;
    Ok(Cropped { jpeg, width: rgb.width(), height: rgb.height(), region })
}

/// A `width` × `height` box's size once its longer side is at most `max_side`.
fn fitted(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (side(width), side(height))
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

/// The `region` (`[x1, y1, x2, y2]`) of the decoded `image`, put on white and
/// scaled to `width` × `height`. It is read in place, one source row at a time,
/// so besides the result only a row of floats is allocated; `None` for a
/// colour type no decoder here produces.
fn box_on_white(image: &DynamicImage, region: [u32; 4], width: u32, height: u32) -> Option<RgbImage> {
    let [x1, y1, x2, y2] = region;
    if let DynamicImage::ImageRgb8(rgb) = image {
        if (x2 - x1, y2 - y1) == (width, height) {
            // Nothing to scale or blend (what a reduced JPEG decode usually leaves): a copy.
            return Some(imageops::crop_imm(rgb, x1, y1, width, height).to_image());
        }
    }
    let scaled = match image {
        DynamicImage::ImageLuma8(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageLumaA8(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgb8(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgba8(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageLuma16(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageLumaA16(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgb16(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgba16(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgb32F(b) => scale_on_white(b, region, width, height),
        DynamicImage::ImageRgba32F(b) => scale_on_white(b, region, width, height),
        _ => return None,
    };
    Some(scaled)
}

/// A channel's value on the 0..=255 scale of the JPEG.
trait Channel: Copy {
    fn to_255(self) -> f32;
}

impl Channel for u8 {
    fn to_255(self) -> f32 {
        f32::from(self)
    }
}

impl Channel for u16 {
    fn to_255(self) -> f32 {
        f32::from(self) / 257.0
    }
}

impl Channel for f32 {
    fn to_255(self) -> f32 {
        self * 255.0
    }
}

/// One pixel (grey, grey + alpha, RGB or RGBA) as RGB on white: JPEG has no
/// alpha, and transparent pixels become white (a product photo's usual
/// background), not whatever colour hides under them.
fn rgb_on_white<S: Channel>(pixel: &[S]) -> [f32; 3] {
    let (rgb, alpha) = match *pixel {
        [l] => ([l.to_255(); 3], 255.0),
        [l, a] => ([l.to_255(); 3], a.to_255()),
        [r, g, b] => ([r.to_255(), g.to_255(), b.to_255()], 255.0),
        [r, g, b, a, ..] => ([r.to_255(), g.to_255(), b.to_255()], a.to_255()),
        [] => ([255.0; 3], 255.0),
    };
    if alpha >= 255.0 {
        return rgb;
    }
    let a = alpha.max(0.0) / 255.0;
    rgb.map(|c| c * a + 255.0 * (1.0 - a))
}

/// Which source lines (rows or columns) make output line `at` when `from`
/// lines become `to`, and each one's weight: a tent as wide as the reduction
/// (what `FilterType::Triangle` does), so every source line counts.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

fn taps(from: u32, to: u32, at: u32) -> Taps {
    if from == to {
        return Taps { first: at as usize, weights: vec![1.0] };
    }
    let ratio = from as f32 / to as f32;
    let reach = ratio.max(1.0);
    let centre = (at as f32 + 0.5) * ratio;
    let first = ((centre - reach).floor().max(0.0) as u32).min(from - 1);
    let end = ((centre + reach).ceil() as u32).clamp(first + 1, from);
    let mut weights: Vec<f32> =
        (first..end).map(|i| (1.0 - ((i as f32 + 0.5 - centre) / reach).abs()).max(0.0)).collect();
    let sum: f32 = weights.iter().sum();
    if sum > 0.0 {
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    Taps { first: first as usize, weights }
}

/// Scales `region` of `image` to `width` × `height` in two passes per output
/// row: the source rows under it are summed into one row of floats, which is
/// then summed across into the output row.
fn scale_on_white<P>(image: &ImageBuffer<P, Vec<P::Subpixel>>, region: [u32; 4], width: u32, height: u32) -> RgbImage
where
    P: Pixel,
    P::Subpixel: Channel,
{
    let [x1, y1, x2, y2] = region;
    let channels = usize::from(P::CHANNEL_COUNT);
    let stride = image.width() as usize * channels;
    let (left, box_w) = (x1 as usize * channels, (x2 - x1) as usize);
    let raw: &[P::Subpixel] = image.as_raw();
    let columns: Vec<Taps> = (0..width).map(|x| taps(x2 - x1, width, x)).collect();
    let mut row = vec![0f32; box_w * 3];
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        let rows = taps(y2 - y1, height, y);
        row.fill(0.0);
        for (k, weight) in rows.weights.iter().enumerate() {
            let start = (y1 as usize + rows.first + k) * stride + left;
            let source = &raw[start..start + box_w * channels];
            for (sum, pixel) in row.chunks_exact_mut(3).zip(source.chunks_exact(channels)) {
                let rgb = rgb_on_white(pixel);
                for c in 0..3 {
                    sum[c] += weight * rgb[c];
                }
            }
        }
        for column in &columns {
            let mut rgb = [0f32; 3];
            for (k, weight) in column.weights.iter().enumerate() {
                let at = (column.first + k) * 3;
                for c in 0..3 {
                    rgb[c] += weight * row[at + c];
                }
            }
            out.extend(rgb.map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
    }
    RgbImage::from_raw(width, height, out).expect("one RGB triple per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{self, FilterType};
    use image::{ImageEncoder, Rgb};

    /// The eight EXIF orientations.
    const EVERY_ORIENTATION: [Orientation; 8] = [
        Orientation::NoTransforms,
        Orientation::Rotate90,
        Orientation::Rotate180,
        Orientation::Rotate270,
        Orientation::FlipHorizontal,
        Orientation::FlipVertical,
        Orientation::Rotate90FlipH,
        Orientation::Rotate270FlipH,
    ];

    /// Counts the heap each thread holds, so a test can show what a crop holds at once.
    mod heap {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            static HELD: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        fn change(bytes: isize) {
            let _ = HELD.try_with(|held| {
                held.set(held.get() + bytes);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(held.get())));
            });
        }

        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                change(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                change(layout.size() as isize);
                unsafe { System.alloc_zeroed(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                change(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                change(new_size as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        /// What `f` returns, and the most heap it held at once on this thread.
        pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
            let before = HELD.with(Cell::get);
            PEAK.with(|peak| peak.set(before));
            let out = f();
            (out, (PEAK.with(Cell::get) - before).max(0) as usize)
        }
    }

    #[global_allocator]
    static HEAP: heap::Counting = heap::Counting;

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
    fn a_photos_other_garments_come_from_the_same_decode_as_if_cut_alone() {
        let source = png(&DynamicImage::ImageRgb8(gradient(800, 600)));
        let limits = CropLimits { margin_pct: 5, ..LIMITS };
        let boxes = [Crop { x: 10, y: 20, w: 200, h: 300 }, Crop { x: 400, y: 100, w: 300, h: 400 }];
        let outside = Crop { x: 900, y: 0, w: 10, h: 10 };
        let (first, rest) = crops_to_jpeg(&source, boxes[0], &[boxes[1], outside], &limits, Duration::MAX).unwrap();
        assert_eq!(first, crop_to_jpeg(&source, boxes[0], &limits, Duration::MAX).unwrap());
        assert_eq!(rest[0].as_ref().unwrap(), &crop_to_jpeg(&source, boxes[1], &limits, Duration::MAX).unwrap());
        assert_eq!(rest[1], Err(CropError::OutsideImage { width: 800, height: 600 }));
        // The requested box decides: outside the photo, nothing is cut at all.
        let refused = crops_to_jpeg(&source, outside, &boxes, &limits, Duration::MAX).unwrap_err();
        assert_eq!(refused, CropError::OutsideImage { width: 800, height: 600 });
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
        for orientation in EVERY_ORIENTATION {
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

    /// A photo with detail as well as gradients: stripes about 20 px apart
    /// over where-it-is colours, as JPEG at quality 90 (baseline, 4:2:0 chroma).
    fn detailed_jpeg(w: u32, h: u32) -> (RgbImage, Vec<u8>) {
        let photo = RgbImage::from_fn(w, h, |x, y| {
            let wave = ((x as f32 / 3.0).sin() * (y as f32 / 5.0).cos() * 90.0 + 128.0) as u8;
            Rgb([(x * 255 / w) as u8, wave, (y * 255 / h) as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&photo).unwrap();
        (photo, jpeg)
    }

    /// Mean absolute difference per channel value (0..=255) of two same-sized images.
    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        total as f64 / a.as_raw().len() as f64
    }

    /// How far a crop from a reduced decode may be from the same region cut
    /// from the full decode and scaled to its size, per channel value. On the
    /// detailed picture below, encoding that reference itself as JPEG at
    /// quality 90 already moves it by 2.1; the reduced decode's crop is 2.6 away.
    const REDUCED_DECODE_MAX_MEAN_DIFF: f64 = 3.0;

    #[test]
    fn a_reduced_decode_matches_a_full_resolution_reference_crop() {
        let (_, jpeg) = detailed_jpeg(2400, 2000);
        let limits = CropLimits { margin_pct: 5, quality: 90, ..LIMITS };
        // 1,100 × 1,700 plus 5 % is 1,210 × 1,870: 1,024 px from a full decode, 936 at half scale.
        let b = Crop { x: 300, y: 150, w: 1100, h: 1700 };
        let out = crop_to_jpeg(&jpeg, b, &limits, Duration::MAX).unwrap();
        assert_eq!(out.region, [245, 65, 1455, 1935]);
        assert_eq!(
            (out.width, out.height),
            (606, 936),
            "decoded at half scale (edges rounded outwards), not scaled after"
        );

        // What was decoded: the region's edges rounded outwards to whole half-scale pixels.
        let [x1, y1, x2, y2] = [244, 64, 1456, 1936];
        let reference = DynamicImage::ImageRgb8(decode(&jpeg))
            .crop_imm(x1, y1, x2 - x1, y2 - y1)
            .resize_exact(out.width, out.height, FilterType::Triangle)
            .to_rgb8();
        let diff = mean_abs_diff(&decode(&out.jpeg), &reference);
        assert!(diff < REDUCED_DECODE_MAX_MEAN_DIFF, "mean absolute difference {diff:.2}");
        // The measure can tell: the same region 4 px to the right is far off.
        let shifted = DynamicImage::ImageRgb8(decode(&jpeg))
            .crop_imm(x1 + 4, y1, x2 - x1, y2 - y1)
            .resize_exact(out.width, out.height, FilterType::Triangle)
            .to_rgb8();
        let off = mean_abs_diff(&decode(&out.jpeg), &shifted);
        assert!(off > 3.0 * REDUCED_DECODE_MAX_MEAN_DIFF, "shifted by 4 px: {off:.2}");
    }

    #[test]
    fn a_grey_jpeg_is_decoded_reduced_too() {
        let grey = image::GrayImage::from_fn(2000, 2000, |x, y| image::Luma([((x + y) / 16) as u8]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&grey).unwrap();
        let out = crop_to_jpeg(&jpeg, Crop { x: 100, y: 100, w: 1000, h: 1900 }, &LIMITS, Duration::MAX).unwrap();
        assert_eq!((out.width, out.height), (500, 950), "half scale: 950 px keeps over nine tenths of 1,024");
        let got = decode(&out.jpeg);
        for (x, y) in [(20, 20), (250, 475), (480, 930)] {
            let level = ((100 + 2 * x + 100 + 2 * y) / 16) as u8;
            assert!(near(*got.get_pixel(x, y), Rgb([level; 3])), "at {x},{y}: {:?}", got.get_pixel(x, y));
        }
    }

    #[test]
    fn the_dct_scale_is_the_smallest_that_keeps_nine_tenths_of_the_size_sent() {
        let tall = |h: u32| [0, 0, h / 2, h];
        assert_eq!(dct_divisor(&[tall(1000)], 1024), 1, "sent whole: nothing to spare");
        assert_eq!(dct_divisor(&[tall(1800)], 1024), 1, "900 px at half scale is under 90 % of 1,024");
        assert_eq!(dct_divisor(&[tall(1870)], 1024), 2);
        assert_eq!(dct_divisor(&[tall(4000)], 1024), 4);
        assert_eq!(dct_divisor(&[tall(8000)], 1024), 8);
        assert_eq!(dct_divisor(&[tall(12_000)], 1024), 8, "never below an eighth");
        assert_eq!(dct_divisor(&[tall(4000), tall(1870)], 1024), 2, "one decode serves every box");
        assert_eq!(dct_divisor(&[tall(4000), tall(600)], 1024), 1);
    }

    #[test]
    fn a_jpeg_is_decoded_only_down_to_the_rows_its_boxes_need() {
        let (_, jpeg) = detailed_jpeg(640, 480);
        let cut = RowCut::of(&jpeg, 200).unwrap();
        let (full, top) = (decode(&jpeg), decode(&cut.to_vec(&jpeg)));
        assert_eq!(top.dimensions(), (640, 200));
        assert_eq!(top, imageops::crop_imm(&full, 0, 0, 640, 200).to_image(), "the rows above the cut are untouched");
        assert!(RowCut::of(&jpeg, 480).is_none(), "the whole height is needed");

        // A progressive JPEG, or restart markers in the scan: decoded whole.
        let mut progressive = jpeg.clone();
        let sof = progressive.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        progressive[sof + 1] = 0xC2;
        assert!(RowCut::of(&progressive, 200).is_none());
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let restart_interval = [0xFF, 0xDD, 0, 4, 0, 16];
        let restarts = [&jpeg[..sos], &restart_interval, &jpeg[sos..]].concat();
        assert!(RowCut::of(&restarts, 200).is_none());

        // A box near the top of a large photo: the crop is the same as from the whole decode.
        let (_, photo) = detailed_jpeg(1200, 2400);
        let b = Crop { x: 100, y: 40, w: 500, h: 400 };
        let out = crop_to_jpeg(&photo, b, &LIMITS, Duration::MAX).unwrap();
        let want = DynamicImage::ImageRgb8(decode(&photo)).crop_imm(100, 40, 500, 400).to_rgb8();
        assert!(mean_abs_diff(&decode(&out.jpeg), &want) < REDUCED_DECODE_MAX_MEAN_DIFF);
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

    /// A PNG whose header declares `width` × `height` of `depth`-bit samples in
    /// `colour` (0 grey, 2 RGB, 4 grey + alpha, 6 RGBA), followed by a few
    /// bytes of image data: all a header reader sees of a bomb.
    fn png_declaring(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
        fn crc(bytes: &[u8]) -> u32 {
            !bytes.iter().fold(!0u32, |crc, byte| {
                (0..8).fold(crc ^ u32::from(*byte), |c, _| if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 })
            })
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8; 4], data: &[u8]| {
            let body = [&kind[..], data].concat();
            png.extend((data.len() as u32).to_be_bytes());
            png.extend(&body);
            png.extend(crc(&body).to_be_bytes());
        };
        let header = [&width.to_be_bytes()[..], &height.to_be_bytes(), &[depth, colour, 0, 0, 0]].concat();
        chunk(b"IHDR", &header);
        chunk(b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        png
    }

    #[test]
    fn the_decoded_size_limit_holds_before_anything_is_decoded() {
        let limits = CropLimits { max_pixels: 50_000_000, ..LIMITS };
        // 48 MP, under the pixel limit; as 16-bit RGBA, 384 MB once decoded, from 70 bytes.
        let bomb = png_declaring(8_000, 6_000, 16, 6);
        assert!(bomb.len() < 100);
        let started = std::time::Instant::now();
        let (refused, held) =
            heap::peak_of(|| crop_to_jpeg(&bomb, Crop { x: 0, y: 0, w: 10, h: 10 }, &limits, Duration::MAX));
        assert_eq!(
            refused.unwrap_err(),
            CropError::DecodedTooLarge { width: 8_000, height: 6_000, bytes: 384_000_000 }
        );
        assert!(held < 1 << 20, "{held} bytes held to refuse it: no pixel buffer");
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());

        // Depth and alpha count, and the limit is exact.
        for (width, height, depth, colour, fits) in [
            (5_000, 4_000, 8, 2, true),   // 8-bit RGB, 60 MB
            (5_000, 4_000, 16, 2, true),  // 16-bit RGB, 120 MB
            (5_000, 4_000, 16, 6, false), // 16-bit RGBA, 160 MB
            (7_000, 7_000, 8, 6, false),  // 8-bit RGBA, 196 MB
            (7_000, 7_000, 16, 0, true),  // 16-bit grey, 98 MB
            (7_700, 5_800, 8, 2, true),   // 8-bit RGB, 133,980,000 bytes: just under 128 MiB
            (7_800, 5_800, 8, 2, false),  // 135,720,000 bytes: just over
        ] {
            let png = png_declaring(width, height, depth, colour);
            let admitted = admit(&png, &mut open(&png).unwrap(), &limits);
            let bytes =
                u64::from(width) * u64::from(height) * u64::from(depth / 8) * [1, 0, 3, 0, 2, 0, 4][colour as usize];
            assert_eq!(admitted.is_ok(), fits, "{width}x{height} {depth}-bit colour type {colour}: {admitted:?}");
            assert_eq!(bytes <= MAX_DECODED_BYTES, fits);
        }
        let error = CropError::DecodedTooLarge { width: 8_000, height: 6_000, bytes: 384_000_000 };
        let api = error.to_api_error(&limits);
        assert_eq!((api.status, api.code, error.label()), (422, "image_unreadable", "decoded_too_large"));
        assert!(api.detail.contains("8000x6000 pixels and takes 384000000 bytes"), "{}", api.detail);
        assert!(api.detail.contains("decoded size limit"), "{}", api.detail);
    }

    /// [`jpeg_bomb`] as a progressive JPEG (SOF2), its components sampled as `sampling` (0xHV each).
    fn progressive_bomb(width: u16, height: u16, sampling: [u8; 3]) -> Vec<u8> {
        let mut jpeg = jpeg_bomb(width, height);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 1] = 0xC2;
        // Then the component count and, per component, its id, sampling and table.
        for (n, hv) in sampling.into_iter().enumerate() {
            jpeg[sof + 11 + 3 * n] = hv;
        }
        jpeg
    }

    #[test]
    fn a_progressive_jpeg_counts_the_coefficients_its_decoder_keeps() {
        let baseline = jpeg_bomb(4000, 3000);
        assert_eq!(jpeg_coefficient_bytes(&baseline), 0, "decoded a row of blocks at a time");
        // 4:4:4: three full planes of 2-byte samples, on whole blocks (3000 rows → 3000).
        assert_eq!(jpeg_coefficient_bytes(&progressive_bomb(4000, 3000, [0x11; 3])), 3 * 4000 * 3000 * 2);
        // 4:2:0 of 4001 x 3001: luma on 16-pixel blocks pairs (4016 x 3008), chroma half that.
        assert_eq!(
            jpeg_coefficient_bytes(&progressive_bomb(4001, 3001, [0x22, 0x11, 0x11])),
            4016 * 3008 * 2 + 2 * (2008 * 1504 * 2)
        );

        let limits = CropLimits { max_pixels: 50_000_000, ..LIMITS };
        let admitted = |jpeg: &[u8]| admit(jpeg, &mut open(jpeg).unwrap(), &limits);
        // 20 MP of RGB: 60 MB decoded fits as baseline; with 120 MB of coefficients it does not.
        assert!(admitted(&jpeg_bomb(5000, 4000)).is_ok());
        assert_eq!(
            admitted(&progressive_bomb(5000, 4000, [0x11; 3])).unwrap_err(),
            CropError::DecodedTooLarge { width: 5000, height: 4000, bytes: 60_000_000 + 120_000_000 }
        );
        // Subsampled chroma holds half as much: 12 MP at 4:2:0 fits.
        assert!(admitted(&progressive_bomb(4000, 3000, [0x22, 0x11, 0x11])).is_ok());
    }

    /// The first bytes of a WebP whose first chunk is `chunk` with `data`.
    fn webp_with(chunk: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let size = (4 + 8 + data.len() + data.len() % 2) as u32;
        let mut webp = [&b"RIFF"[..], &size.to_le_bytes(), b"WEBP", chunk, &(data.len() as u32).to_le_bytes()].concat();
        webp.extend(data);
        if data.len() % 2 == 1 {
            webp.push(0);
        }
        webp
    }

    /// A simple lossless WebP header declaring `width` × `height`, with or without alpha.
    fn lossless_header(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let bits = (width - 1) | (height - 1) << 14 | u32::from(alpha) << 28;
        webp_with(b"VP8L", &[&[0x2F][..], &bits.to_le_bytes()].concat())
    }

    #[test]
    fn a_webp_counts_the_frames_its_decoder_keeps() {
        let lossless = |colour: image::ExtendedColorType, raw: &[u8]| {
            let mut webp = Vec::new();
            image::codecs::webp::WebPEncoder::new_lossless(&mut webp).write_image(raw, 50, 40, colour).unwrap();
            webp
        };
        let rgb = lossless(image::ExtendedColorType::Rgb8, gradient(50, 40).as_raw());
        let rgba =
            lossless(image::ExtendedColorType::Rgba8, DynamicImage::ImageRgb8(gradient(50, 40)).to_rgba8().as_raw());
        assert_eq!(webp_frame_bytes(&rgb, 50, 40), 4 * 2000, "an RGBA frame, then copied to RGB");
        assert_eq!(webp_frame_bytes(&rgba, 50, 40), 0, "decoded in place");
        assert_eq!(
            (
                webp_frame_bytes(&lossless_header(50, 40, false), 50, 40),
                webp_frame_bytes(&lossless_header(50, 40, true), 50, 40)
            ),
            (8000, 0)
        );
        // Lossy: YUV planes on 16-pixel macroblocks (48 x 32 for 40 x 30).
        let yuv = 48 * 32 * 3 / 2;
        let extended = |flags: u8| webp_with(b"VP8X", &[flags, 0, 0, 0, 39, 0, 0, 29, 0, 0]);
        assert_eq!(webp_frame_bytes(&webp_with(b"VP8 ", &[0; 10]), 40, 30), yuv);
        assert_eq!(webp_frame_bytes(&extended(0x10), 40, 30), yuv + 5 * 1200, "lossy with alpha");
        assert_eq!(webp_frame_bytes(&extended(0x02), 40, 30), yuv + 9 * 1200, "an animation");
        assert_eq!(webp_frame_bytes(&extended(0x00), 40, 30), 4 * 1200);

        // 20 MP: as lossless RGBA, 80 MB decoded fits; as lossless RGB, 60 MB plus an 80 MB frame does not.
        let limits = CropLimits { max_pixels: 50_000_000, ..LIMITS };
        let admitted = |webp: &[u8]| admit(webp, &mut open(webp).unwrap(), &limits);
        assert!(admitted(&lossless_header(5000, 4000, true)).is_ok());
        assert_eq!(
            admitted(&lossless_header(5000, 4000, false)).unwrap_err(),
            CropError::DecodedTooLarge { width: 5000, height: 4000, bytes: 140_000_000 }
        );
    }

    #[test]
    fn a_side_longer_than_any_photo_is_refused_from_the_header() {
        let png = png_declaring(MAX_IMAGE_SIDE + 1, 1, 8, 0);
        let refused = crop_to_jpeg(&png, Crop { x: 0, y: 0, w: 10, h: 1 }, &LIMITS, Duration::MAX).unwrap_err();
        assert!(matches!(&refused, CropError::Unreadable(why) if why.contains("limits")), "{refused:?}");
    }

    #[test]
    fn a_crop_holds_the_decoded_image_and_its_small_output_only() {
        // Deep and transparent, so decoded it is large (15.4 MB), and the box is all of it.
        let (w, h) = (1600, 1200);
        let deep =
            image::ImageBuffer::from_fn(w, h, |x, y| image::Rgba([(x * 40) as u16, (y * 50) as u16, 30_000, 60_000]));
        let source = png(&DynamicImage::ImageRgba16(deep));
        let (out, held) =
            heap::peak_of(|| crop_to_jpeg(&source, Crop { x: 0, y: 0, w: 1600, h: 1200 }, &LIMITS, Duration::MAX));
        let out = out.unwrap();
        assert_eq!((out.width, out.height), (1024, 768));
        let (decoded, output) = (w as usize * h as usize * 8, 1024 * 768 * 3);
        assert!(held < decoded + output + (1 << 20), "{held} bytes held at once; the decoded image is {decoded}");
    }

    #[test]
    fn scaling_matches_the_triangle_filter() {
        // Busy enough that a misplaced weight shows.
        let source = RgbImage::from_fn(900, 700, |x, y| {
            Rgb([((x * 7 + y * 3) % 256) as u8, ((x * x + y) % 251) as u8, ((x ^ y) % 256) as u8])
        });
        let image = DynamicImage::ImageRgb8(source.clone());
        let region = [100, 50, 800, 650];
        let piece = imageops::crop_imm(&source, 100, 50, 700, 600).to_image();
        for (w, h) in [(350, 300), (301, 258), (700, 600), (1, 1), (700, 13)] {
            let ours = box_on_white(&image, region, w, h).unwrap();
            let theirs = imageops::resize(&piece, w, h, FilterType::Triangle);
            let worst = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 1, "{w}x{h}: off by {worst}");
        }
    }

    #[test]
    fn exif_orientation_is_applied_to_the_scaled_crop() {
        let stored = DynamicImage::ImageRgb8(gradient(320, 240));
        let limits = CropLimits { max_side: 60, ..LIMITS };
        for orientation in EVERY_ORIENTATION {
            // Little-endian TIFF with one IFD entry: orientation (0x0112), SHORT, 1 value.
            let mut exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
            exif.extend([orientation.to_exif(), 0, 0, 0, 0, 0, 0, 0]);
            let mut jpeg = Vec::new();
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
            encoder.set_exif_metadata(exif).unwrap();
            encoder.write_image(stored.as_bytes(), 320, 240, image::ExtendedColorType::Rgb8).unwrap();
            assert_eq!(open(&jpeg).unwrap().orientation().unwrap(), orientation);

            let mut shown = stored.clone();
            shown.apply_orientation(orientation);
            let b = Crop { x: 40, y: 30, w: 150, h: 120 };
            let out = crop_to_jpeg(&jpeg, b, &limits, Duration::MAX).unwrap();
            assert_eq!((out.width, out.height), (60, 48), "{orientation:?}");
            let want = shown.crop_imm(40, 30, 150, 120).resize_exact(60, 48, FilterType::Triangle).to_rgb8();
            let got = decode(&out.jpeg);
            for (x, y) in [(6, 6), (30, 24), (53, 8), (8, 41), (53, 41)] {
                assert!(near(*got.get_pixel(x, y), *want.get_pixel(x, y)), "{orientation:?} at {x},{y}");
            }
        }
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
    fn only_jpeg_png_and_webp_are_recognised() {
        let png = png(&DynamicImage::ImageRgb8(gradient(4, 4)));
        assert_eq!(sniff(&png), Some(ImageFormat::Png));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"GIF89a\x01\x00\x01\x00"), None, "a GIF is an image, but not one crop mode reads");
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(&[0xFF, 0xD8]), None);
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
