//! Image → grid of cells: decoding (with limits and EXIF orientation) and a
//! box average straight from the decoded buffer.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

use crate::domain::ImageKind;
use crate::ports::GenerateError;

/// A pixel counts as part of the object when its alpha is at least this.
pub(crate) const ALPHA_THRESHOLD: u8 = 128;

/// Why the CPU work stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The stop flag fired (cancel or deadline; the caller knows which).
    Stopped,
    /// A real failure.
    Failed(GenerateError),
}

impl From<GenerateError> for Stop {
    fn from(e: GenerateError) -> Self {
        Stop::Failed(e)
    }
}

/// Decoded pixels, 8 bits per channel: 1 (luma), 2 (luma, alpha), 3 (RGB) or
/// 4 (RGBA) channels, rows packed.
#[derive(Debug)]
pub(crate) struct Pixels {
    pub(crate) width: u32,
    pub(crate) height: u32,
    channels: usize,
    data: Vec<u8>,
}

/// Decodes an image with `limits`, applying its EXIF orientation.
pub(crate) fn decode(
    bytes: &[u8],
    kind: ImageKind,
    limits: Limits,
) -> Result<Pixels, GenerateError> {
    let invalid = |e: &dyn std::fmt::Display| {
        GenerateError::InvalidInput(format!("the image could not be decoded: {e}"))
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(&e))?;
    if reader.format().is_none() {
        reader.set_format(match kind {
            ImageKind::Png => ImageFormat::Png,
            ImageKind::Jpeg => ImageFormat::Jpeg,
            ImageKind::Webp => ImageFormat::WebP,
        });
    }
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| invalid(&e))?;
    let orientation = decoder.orientation().map_err(|e| invalid(&e))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| invalid(&e))?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(GenerateError::InvalidInput("the image is empty".to_owned()));
    }
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (2, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (4, b.into_raw()),
        other if other.color().has_alpha() => (4, other.into_rgba8().into_raw()),
        other => (3, other.into_rgb8().into_raw()),
    };
    Ok(Pixels {
        width,
        height,
        channels,
        data,
    })
}

/// The box-averaged cells of an image: what the mesh is built from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Grid {
    /// Cells across.
    pub(crate) gw: usize,
    /// Cells down.
    pub(crate) gh: usize,
    /// Row-major: whether the cell is part of the object.
    pub(crate) inside: Vec<bool>,
    /// Row-major: Rec. 709 luma of the cell's opaque pixels, `0..=1`.
    pub(crate) luma: Vec<f32>,
    /// Row-major: mean colour of the cell's opaque pixels.
    pub(crate) color: Vec<[u8; 3]>,
}

impl Grid {
    pub(crate) fn idx(&self, i: usize, j: usize) -> usize {
        j * self.gw + i
    }

    /// Whether cell `(i, j)` exists and is inside (signed, so that callers
    /// can ask about neighbours off the grid).
    pub(crate) fn is_inside(&self, i: isize, j: isize) -> bool {
        i >= 0
            && j >= 0
            && (i as usize) < self.gw
            && (j as usize) < self.gh
            && self.inside[j as usize * self.gw + i as usize]
    }
}

/// Box-averages `px` into `gw × gh` cells: every pixel belongs to exactly one
/// cell (`x · gw / width`, `y · gh / height`). A cell is inside when at least
/// half its pixels are opaque (alpha ≥ [`ALPHA_THRESHOLD`]); if that leaves
/// no cell inside, any cell with an opaque pixel is (so a thin silhouette
/// does not vanish). `stop` is polled every few hundred rows.
///
/// # Errors
/// `InvalidInput` when no pixel is opaque; [`Stop::Stopped`] when `stop` fires.
pub(crate) fn rasterize(
    px: &Pixels,
    gw: usize,
    gh: usize,
    stop: &dyn Fn() -> bool,
) -> Result<Grid, Stop> {
    let (w, h) = (px.width as usize, px.height as usize);
    let c = px.channels;
    // Column ranges of each cell: cell gx covers x in col_start[gx]..col_start[gx + 1].
    let col_start: Vec<usize> = (0..=gw).map(|g| (g * w).div_ceil(gw)).collect();
    let cells = gw * gh;
    let mut opaque = vec![0u32; cells];
    let mut sums = vec![[0u64; 3]; cells];
    let alpha_at = match c {
        2 => Some(1),
        4 => Some(3),
        _ => None,
    };
    for y in 0..h {
        if y % 256 == 0 && stop() {
            return Err(Stop::Stopped);
        }
        let gy = y * gh / h;
        let row = &px.data[y * w * c..(y + 1) * w * c];
        for gx in 0..gw {
            let span = &row[col_start[gx] * c..col_start[gx + 1] * c];
            let (mut n, mut r, mut g, mut b) = (0u32, 0u64, 0u64, 0u64);
            for p in span.chunks_exact(c) {
                if alpha_at.is_some_and(|a| p[a] < ALPHA_THRESHOLD) {
                    continue;
                }
                n += 1;
                if c >= 3 {
                    r += u64::from(p[0]);
                    g += u64::from(p[1]);
                    b += u64::from(p[2]);
                } else {
                    r += u64::from(p[0]);
                }
            }
            let cell = gy * gw + gx;
            opaque[cell] += n;
            let s = &mut sums[cell];
            s[0] += r;
            if c >= 3 {
                s[1] += g;
                s[2] += b;
            } else {
                s[1] += r;
                s[2] += r;
            }
        }
    }
    if opaque.iter().all(|&n| n == 0) {
        return Err(Stop::Failed(GenerateError::InvalidInput(
            "the image is fully transparent: no opaque pixel to build a relief from".to_owned(),
        )));
    }
    // Pixels per cell: the product of its column span and its row span.
    let mut row_count = vec![0u64; gh];
    for y in 0..h {
        row_count[y * gh / h] += 1;
    }
    let total = |cell: usize| {
        let (gx, gy) = (cell % gw, cell / gw);
        (col_start[gx + 1] - col_start[gx]) as u64 * row_count[gy]
    };
    let mut inside: Vec<bool> = (0..cells)
        .map(|cell| u64::from(opaque[cell]) * 2 >= total(cell) && opaque[cell] > 0)
        .collect();
    if !inside.contains(&true) {
        inside = opaque.iter().map(|&n| n > 0).collect();
    }
    let color: Vec<[u8; 3]> = (0..cells)
        .map(|cell| {
            let n = u64::from(opaque[cell]);
            if n == 0 {
                [0; 3]
            } else {
                sums[cell].map(|s| ((s + n / 2) / n) as u8)
            }
        })
        .collect();
    let luma = color
        .iter()
        .map(|&[r, g, b]| {
            (0.2126 * f32::from(r) + 0.7152 * f32::from(g) + 0.0722 * f32::from(b)) / 255.0
        })
        .collect();
    Ok(Grid {
        gw,
        gh,
        inside,
        luma,
        color,
    })
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};

    use super::*;

    fn pixels(img: &RgbaImage) -> Pixels {
        Pixels {
            width: img.width(),
            height: img.height(),
            channels: 4,
            data: img.as_raw().clone(),
        }
    }

    #[test]
    fn cells_average_their_opaque_pixels() {
        // 4×2: left half red and opaque, right half transparent except one
        // white pixel.
        let mut img = RgbaImage::from_pixel(4, 2, Rgba([0, 0, 0, 0]));
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            img.put_pixel(x, y, Rgba([200, 0, 0, 255]));
        }
        img.put_pixel(3, 1, Rgba([255, 255, 255, 255]));

        let grid = rasterize(&pixels(&img), 2, 1, &|| false).unwrap();

        assert_eq!(grid.inside, vec![true, false]);
        assert_eq!(grid.color, vec![[200, 0, 0], [255, 255, 255]]);
        assert!((grid.luma[0] - 0.2126 * 200.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn a_thin_silhouette_is_kept() {
        let mut img = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 0]));
        img.put_pixel(3, 3, Rgba([9, 9, 9, 255]));

        let grid = rasterize(&pixels(&img), 2, 2, &|| false).unwrap();

        assert_eq!(grid.inside, vec![true, false, false, false]);
    }

    #[test]
    fn a_fully_transparent_image_is_invalid() {
        let img = RgbaImage::from_pixel(3, 3, Rgba([10, 10, 10, 0]));

        let err = rasterize(&pixels(&img), 3, 3, &|| false).unwrap_err();

        assert!(
            matches!(err, Stop::Failed(GenerateError::InvalidInput(m)) if m.contains("transparent"))
        );
    }

    #[test]
    fn the_stop_flag_is_polled() {
        let img = RgbaImage::from_pixel(3, 3, Rgba([10, 10, 10, 255]));

        assert_eq!(
            rasterize(&pixels(&img), 1, 1, &|| true).unwrap_err(),
            Stop::Stopped
        );
    }

    #[test]
    fn undecodable_bytes_are_invalid_input() {
        let err = decode(b"\x89PNG\r\n\x1a\nnope", ImageKind::Png, Limits::default()).unwrap_err();
        assert!(matches!(err, GenerateError::InvalidInput(_)));
    }

    #[test]
    fn decoder_limits_apply() {
        let png = crate::testing::images::png(64, 32);
        let mut limits = Limits::default();
        limits.max_image_width = Some(32);

        let err = decode(&png, ImageKind::Png, limits).unwrap_err();

        assert!(matches!(err, GenerateError::InvalidInput(_)));
    }
}
