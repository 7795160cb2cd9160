//! Small real images made on the fly, for tests, examples and benches.

use std::io::Cursor;

use image::{ImageFormat, Rgba, RgbaImage};

/// A deterministic test picture: a bright disc on a gradient, with an alpha
/// channel that is opaque except in the corners.
#[must_use]
pub fn picture(width: u32, height: u32) -> RgbaImage {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let r = cx.min(cy) * 0.6;
    RgbaImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let inside = dx * dx + dy * dy <= r * r;
        let g = ((x * 255) / width.max(1)) as u8;
        let b = ((y * 255) / height.max(1)) as u8;
        if inside {
            Rgba([240, 200, 60, 255])
        } else {
            Rgba([40, g, b, 255])
        }
    })
}

fn encode(img: &RgbaImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img.clone())
            .to_rgb8()
            .write_to(&mut out, format),
        _ => img.write_to(&mut out, format),
    }
    .expect("encoding a test image");
    out.into_inner()
}

/// A PNG of [`picture`].
#[must_use]
pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::Png)
}

/// A JPEG of [`picture`].
#[must_use]
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::Jpeg)
}

/// A lossless WebP of [`picture`].
#[must_use]
pub fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::WebP)
}

/// A PNG with a transparent background: the disc of [`picture`] is the only
/// opaque part (a silhouette).
#[must_use]
pub fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let mut img = picture(width, height);
    for p in img.pixels_mut() {
        if p.0 != [240, 200, 60, 255] {
            p.0[3] = 0;
        }
    }
    encode(&img, ImageFormat::Png)
}

/// The signature and a valid `IHDR` chunk claiming `width × height`, and
/// nothing more: what a decompression bomb looks like to a header check.
#[must_use]
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&width.to_be_bytes());
    chunk.extend_from_slice(&height.to_be_bytes());
    chunk.extend_from_slice(&[8, 6, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// [`picture`] with deterministic noise added, so that it compresses like a
/// photograph (for benchmarks: a flat picture compresses unrealistically well).
#[must_use]
pub fn photo_like(width: u32, height: u32) -> RgbaImage {
    let mut img = picture(width, height);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for p in img.pixels_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        for (k, c) in p.0[..3].iter_mut().enumerate() {
            *c = c.saturating_add((state >> (8 * k)) as u8 % 48);
        }
    }
    img
}

/// Encodes an image as JPEG (quality 75).
#[must_use]
pub fn encode_jpeg(img: &RgbaImage) -> Vec<u8> {
    encode(img, ImageFormat::Jpeg)
}

/// Encodes an image as PNG.
#[must_use]
pub fn encode_png(img: &RgbaImage) -> Vec<u8> {
    encode(img, ImageFormat::Png)
}
