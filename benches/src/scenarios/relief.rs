//! The relief generator on one thread, against decoding the same JPEG with
//! the `image` crate (the least any generator must do with it).

use std::time::{Duration, Instant};

use image2model_core::domain::{ImageKind, Texture};
use image2model_core::generators::relief::ReliefGenerator;

use crate::Result;
use crate::images::photo_jpeg;

/// The best of a few runs of each.
#[derive(Debug, Clone, Copy)]
pub struct Relief {
    /// Megapixels of the input.
    pub megapixels: f64,
    /// Whole render (decode, height field, mesh, GLB).
    pub render: Duration,
    /// Decode alone.
    pub decode: Duration,
}

/// Measures on the calling thread (run it in `spawn_blocking`), `runs` times
/// each, best kept.
///
/// # Errors
/// When the render fails.
pub fn relief(side: u32, runs: u32) -> Result<Relief> {
    let jpeg = photo_jpeg(side);
    let generator = ReliefGenerator::default();
    let mut render = Duration::MAX;
    let mut decode = Duration::MAX;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)?;
        decode = decode.min(t.elapsed());
        std::hint::black_box(img);
        let t = Instant::now();
        let glb = generator.render(&jpeg, ImageKind::Jpeg, None, Texture::Standard)?;
        render = render.min(t.elapsed());
        std::hint::black_box(glb);
    }
    Ok(Relief {
        megapixels: f64::from(side) * f64::from(side) / 1e6,
        render,
        decode,
    })
}
