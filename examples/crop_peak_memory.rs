//! Peak memory of one crop of crop mode's image step, run natively.
//!
//! Builds a test photo (a smooth gradient, so it compresses like the large,
//! flat images that are the risk), pads the file to `XIMILAR_IMAGE_MAX_BYTES`
//! (15 MB; bytes after the image's end are allowed) as the largest download
//! would be, then crops it in a fresh process and prints that process's peak
//! resident memory (`VmHWM`, Linux) beside its memory before the crop.
//!
//! ```sh
//! cargo run --release -p ximilar-gw --example crop_peak_memory -- jpeg 7700 5800
//! cargo run --release -p ximilar-gw --example crop_peak_memory -- rgba16 4096 4096 part
//! ```
//!
//! Kinds: `jpeg` (8-bit RGB, baseline), `rgb8`, `rgba8`, `rgba16` (PNG), `webp`
//! and `webp-rgb` (8-bit RGBA and RGB, lossless). `measure FILE WIDTH HEIGHT [whole|part|bottom]` measures a
//! file made elsewhere (a progressive JPEG from `jpegtran -progressive`). The box
//! is the whole photo (`whole`, the default: the largest crop there is), a
//! 1200 × 1800 garment in its middle (`part`), or a 600 × 800 one at its
//! bottom (`bottom`: a JPEG decoded at full size and to its last row, the most
//! memory a JPEG crop takes). Native memory only approximates
//! the component's, whose linear memory also never shrinks.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb, Rgba};
use ximilar_gw::crop::{crop_to_jpeg, CropLimits};
use ximilar_gw::urls::Crop;

/// What the gateway downloads at most, by default (`XIMILAR_IMAGE_MAX_BYTES`).
const MAX_DOWNLOAD: usize = 15_000_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["measure", file, w, h, part] => measure(Path::new(file), number(w), number(h), part),
        [kind, w, h] => run(kind, number(w), number(h), "whole"),
        [kind, w, h, part] => run(kind, number(w), number(h), part),
        _ => {
            eprintln!("usage: crop_peak_memory jpeg|rgb8|rgba8|rgba16|webp|webp-rgb WIDTH HEIGHT [whole|part|bottom]");
            std::process::exit(2);
        }
    }
}

fn number(text: &str) -> u32 {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text}"))
}

/// Makes the photo (once) and measures its crop in a child process, so the
/// memory that building the photo took is not counted.
fn run(kind: &str, width: u32, height: u32, part: &str) {
    let file = photo_file(kind, width, height);
    let measured = Command::new(std::env::current_exe().expect("own path"))
        .args(["measure", file.to_str().expect("UTF-8 path"), &width.to_string(), &height.to_string(), part])
        .output()
        .expect("run the measurement");
    print!("{kind} {width}x{height} {part}: {}", String::from_utf8_lossy(&measured.stdout));
    eprint!("{}", String::from_utf8_lossy(&measured.stderr));
}

fn photo_file(kind: &str, width: u32, height: u32) -> PathBuf {
    let (ext, format) = match kind {
        "jpeg" => ("jpg", ImageFormat::Jpeg),
        "webp" | "webp-rgb" => ("webp", ImageFormat::WebP),
        _ => ("png", ImageFormat::Png),
    };
    let file = std::env::temp_dir().join(format!("crop-peak-{kind}-{width}x{height}.{ext}"));
    if file.exists() {
        return file;
    }
    let level = |v: u32, n: u32| (u64::from(v) * 255 / u64::from(n.max(2) - 1)) as u8;
    let wide = |v: u32, n: u32| (u64::from(v) * 65_535 / u64::from(n.max(2) - 1)) as u16;
    let image = match kind {
        "jpeg" | "rgb8" | "webp-rgb" => DynamicImage::ImageRgb8(ImageBuffer::from_fn(width, height, |x, y| {
            Rgb([level(x, width), level(y, height), 128])
        })),
        "rgba8" | "webp" => DynamicImage::ImageRgba8(ImageBuffer::from_fn(width, height, |x, y| {
            Rgba([level(x, width), level(y, height), 128, 200])
        })),
        "rgba16" => DynamicImage::ImageRgba16(ImageBuffer::from_fn(width, height, |x, y| {
            Rgba([wide(x, width), wide(y, height), 32_768, 50_000])
        })),
        other => panic!("unknown kind {other}"),
    };
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).expect("encode the photo");
    drop(image);
    if bytes.len() < MAX_DOWNLOAD {
        bytes.resize(MAX_DOWNLOAD, 0);
    }
    std::fs::write(&file, bytes).expect("write the photo");
    file
}

fn measure(file: &Path, width: u32, height: u32, part: &str) {
    let bytes = std::fs::read(file).expect("read the photo");
    let before = status_kib("VmRSS");
    let b = match part {
        "part" => Crop { x: i64::from(width / 2) - 600, y: i64::from(height / 2) - 900, w: 1200, h: 1800 },
        "bottom" => Crop { x: 0, y: i64::from(height) - 800, w: 600, h: 800 },
        _ => Crop { x: 0, y: 0, w: i64::from(width), h: i64::from(height) },
    };
    let limits = CropLimits { max_pixels: 50_000_000, max_side: 1024, margin_pct: 5, quality: 90 };
    let started = Instant::now();
    let result = crop_to_jpeg(&bytes, b, &limits, Duration::MAX);
    let took = started.elapsed();
    let outcome = match &result {
        Ok(c) => format!("ok {}x{} JPEG of {} bytes", c.width, c.height, c.jpeg.len()),
        Err(e) => format!("refused: {}", e.label()),
    };
    println!(
        "peak {:.1} MiB (VmHWM), {:.1} MiB before the crop with the {:.1} MB file read; {} in {} ms",
        status_kib("VmHWM") as f64 / 1024.0,
        before as f64 / 1024.0,
        bytes.len() as f64 / 1e6,
        outcome,
        took.as_millis()
    );
}

/// A `/proc/self/status` figure, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}
