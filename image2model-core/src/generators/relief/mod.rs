//! The offline relief generator: a printable height-field solid from one
//! image, with no network and no model weights.
//!
//! # Algorithm
//!
//! 1. **Decode** the image once (`image` crate, with [`image::Limits`] as a
//!    second line of defence behind upload validation; EXIF orientation
//!    applied).
//! 2. **Grid.** Choose a grid of `gw × gh` cells so that the finished mesh
//!    has at most `face_limit` triangles (default 20 000), with cells about
//!    square and at most one per pixel. Box-average the pixels straight from
//!    the decoded buffer: each pixel belongs to one cell. A pixel is part of
//!    the object when its alpha is at least 128 (images without alpha are all
//!    object); a cell is inside when at least half its pixels are (or, if no
//!    cell reaches half, when any is, so thin silhouettes survive). A cell's
//!    colour is the mean of its opaque pixels, its height their Rec. 709 luma.
//! 3. **Pinches.** Two inside cells that touch only at a corner would make a
//!    non-manifold edge; one of the two outside cells of such a 2×2 block is
//!    filled (repeated until none is left; linear time).
//! 4. **Mesh.** The top is a grid surface over the inside cells whose corner
//!    heights average the adjacent inside cells (brighter is higher). Every
//!    edge between an inside and an outside cell gets a vertical wall down to
//!    the base plane. The flat base is triangulated row by row with only the
//!    boundary corners, so it costs about as many triangles as the outline and
//!    the top gets most of the budget. The result is closed (each edge shared
//!    by exactly two triangles, consistently wound, facing outward), has no
//!    degenerate triangle, and handles holes and separate islands. If a
//!    silhouette makes the mesh exceed the budget, the grid shrinks and the
//!    cells are recomputed.
//! 5. **GLB** through [`crate::gltf::write_glb`], with vertex colours
//!    (`COLOR_0`) unless `texture` is `no`.
//!
//! All of it is linear in the pixels and the cells, and deterministic: the
//! same image and options give byte-identical GLBs.
//!
//! # Axes and size
//!
//! glTF is +Y up, in metres. The relief lies flat: the base is on the plane
//! `y = 0`, the relief rises along +Y, image columns run along +X and image
//! rows (top to bottom) along +Z, so seen from above (+Y, with −Z up on the
//! screen) it reads like the image. The footprint is centred on the origin,
//! its longer side is [`ReliefConfig::size`] (100 mm by default) and its
//! `x extent / z extent` is the image's `width / height`. A black pixel stands
//! [`ReliefConfig::base`] high (3 mm), a white one `base + depth` (13 mm).
//!
//! ```
//! use image2model_core::domain::{FaceLimit, ImageKind, Texture};
//! use image2model_core::generators::relief::ReliefGenerator;
//!
//! let png = image2model_core::testing::images::png(64, 48);
//! let glb = ReliefGenerator::default()
//!     .render(&png, ImageKind::Png, Some(FaceLimit::new(2_000)?), Texture::Standard)?;
//! let mesh = image2model_core::gltf::read_glb(&glb)?;
//! assert!(mesh.triangle_count() <= 2_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod build;
mod kind;
mod raster;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use self::kind::ReliefKind;

use self::build::{Shape, build, initial_grid, remove_pinches, shrink};
use self::raster::{Stop, decode, rasterize};
use crate::domain::{FaceLimit, ImageKind, ModelName, Progress, Texture};
use crate::gltf::write_glb;
use crate::ports::{
    GenerateContext, GenerateError, GenerateRequest, GeneratedModel, ModelGenerator, ModelInfo,
    bytes_stream,
};

/// The generator's name, and the one model it offers.
pub const RELIEF: &str = "relief";

/// Settings of the [`ReliefGenerator`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReliefConfig {
    /// The face limit when a job sets none.
    pub default_face_limit: FaceLimit,
    /// The decoder refuses images wider or taller than this.
    pub max_image_side: u32,
    /// The decoder's allocation limit, in bytes.
    pub max_decode_bytes: u64,
    /// The longer side of the footprint, in metres.
    pub size: f32,
    /// The base's thickness under the darkest pixel, in metres.
    pub base: f32,
    /// How much higher the brightest pixel stands than the darkest, in metres.
    pub depth: f32,
}

impl Default for ReliefConfig {
    fn default() -> Self {
        Self {
            default_face_limit: FaceLimit::new(20_000).expect("20 000 is within the face limits"),
            max_image_side: 16_384,
            max_decode_bytes: 512 * 1024 * 1024,
            size: 0.1,
            base: 0.003,
            depth: 0.01,
        }
    }
}

/// The offline relief generator (see the [module doc](self)).
#[derive(Debug, Clone, Default)]
pub struct ReliefGenerator {
    config: ReliefConfig,
}

impl ReliefGenerator {
    /// A generator with these settings.
    #[must_use]
    pub fn new(config: ReliefConfig) -> Self {
        Self { config }
    }

    /// Its settings.
    #[must_use]
    pub fn config(&self) -> &ReliefConfig {
        &self.config
    }

    /// Builds the relief synchronously, on the calling thread: image bytes in,
    /// GLB bytes out. [`ModelGenerator::generate`] runs this on a blocking
    /// thread with progress, cancellation and a deadline.
    ///
    /// # Errors
    /// [`GenerateError::InvalidInput`] when the image does not decode (or
    /// exceeds the decoder limits) or is fully transparent.
    pub fn render(
        &self,
        image: &[u8],
        kind: ImageKind,
        face_limit: Option<FaceLimit>,
        texture: Texture,
    ) -> Result<Vec<u8>, GenerateError> {
        let job = Job {
            config: &self.config,
            image,
            kind,
            face_limit,
            texture,
        };
        job.run(&|| false, &|_| {}).map_err(|stop| match stop {
            Stop::Failed(e) => e,
            Stop::Stopped => GenerateError::Cancelled,
        })
    }
}

/// One relief to build.
struct Job<'a> {
    config: &'a ReliefConfig,
    image: &'a [u8],
    kind: ImageKind,
    face_limit: Option<FaceLimit>,
    texture: Texture,
}

impl Job<'_> {
    /// The CPU work. `stop` is polled between stages (and while averaging);
    /// `progress` receives percentages.
    fn run(&self, stop: &dyn Fn() -> bool, progress: &dyn Fn(u8)) -> Result<Vec<u8>, Stop> {
        let check = || if stop() { Err(Stop::Stopped) } else { Ok(()) };
        progress(5);
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.config.max_image_side);
        limits.max_image_height = Some(self.config.max_image_side);
        limits.max_alloc = Some(self.config.max_decode_bytes);
        let pixels = decode(self.image, self.kind, limits)?;
        check()?;
        progress(35);

        let limit = self
            .face_limit
            .unwrap_or(self.config.default_face_limit)
            .get();
        let shape = Shape {
            size: self.config.size,
            base: self.config.base,
            depth: self.config.depth,
        };
        let dims = (pixels.width, pixels.height);
        let (mut gw, mut gh) = initial_grid(pixels.width, pixels.height, limit);
        let mesh = loop {
            let mut grid = rasterize(&pixels, gw, gh, stop)?;
            remove_pinches(&mut grid);
            check()?;
            progress(60);
            let mesh = build(&grid, shape, dims, self.texture != Texture::No);
            let faces = mesh.triangle_count();
            tracing::debug!(gw, gh, faces, limit, "relief mesh built");
            if faces <= limit as usize {
                break mesh;
            }
            // Only a busy silhouette gets here; (1, 1) always fits (12 faces).
            (gw, gh) = shrink(gw, gh, faces, limit);
            check()?;
        };
        drop(pixels);
        progress(80);
        let glb = write_glb(&mesh).map_err(|e| Stop::Failed(e.into()))?;
        check()?;
        progress(95);
        Ok(glb)
    }
}

#[async_trait]
impl ModelGenerator for ReliefGenerator {
    fn name(&self) -> &str {
        RELIEF
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: ModelName::parse(RELIEF).expect("a valid model name"),
            generator: RELIEF.to_owned(),
            description: "Offline, printable relief: height from brightness, silhouette from \
                          alpha, vertex colours from the image"
                .to_owned(),
        }]
    }

    async fn generate(
        &self,
        request: GenerateRequest,
        ctx: GenerateContext<'_>,
    ) -> Result<GeneratedModel, GenerateError> {
        if request.options.model.as_str() != RELIEF {
            return Err(GenerateError::UnknownModel(request.options.model));
        }
        if ctx.cancel.is_cancelled() {
            return Err(GenerateError::Cancelled);
        }
        // A year stands in for "no deadline" (and avoids Instant overflow).
        let budget = ctx.deadline.min(Duration::from_secs(365 * 24 * 3600));
        let deadline = tokio::time::sleep(budget);
        tokio::pin!(deadline);

        // Stops the blocking work when we return early (cancel, timeout, or
        // this future being dropped) without touching the caller's token.
        let stop = ctx.cancel.child_token();
        let _stop_on_return = stop.clone().drop_guard();
        let (tx, mut rx) = mpsc::unbounded_channel::<u8>();
        let config = self.config.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let job = Job {
                config: &config,
                image: &request.image,
                kind: request.image_kind,
                face_limit: request.options.face_limit,
                texture: request.options.texture,
            };
            job.run(&|| stop.is_cancelled(), &|p| {
                let _ = tx.send(p);
            })
        });

        let joined = loop {
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => return Err(GenerateError::Cancelled),
                () = &mut deadline => {
                    return Err(GenerateError::Timeout(format!(
                        "relief generation took longer than {:?}",
                        ctx.deadline
                    )));
                }
                Some(p) = rx.recv() => ctx.observer.progress(Progress::clamped(p.into())).await,
                joined = &mut task => break joined,
            }
        };
        while let Ok(p) = rx.try_recv() {
            ctx.observer.progress(Progress::clamped(p.into())).await;
        }
        let glb = match joined {
            Ok(Ok(glb)) => glb,
            Ok(Err(Stop::Failed(e))) => return Err(e),
            Ok(Err(Stop::Stopped)) if ctx.cancel.is_cancelled() => {
                return Err(GenerateError::Cancelled);
            }
            Ok(Err(Stop::Stopped)) => {
                return Err(GenerateError::Timeout(
                    "relief generation was stopped".to_owned(),
                ));
            }
            Err(e) => {
                return Err(GenerateError::Internal(format!(
                    "relief generation failed: {e}"
                )));
            }
        };
        let len = glb.len() as u64;
        Ok(GeneratedModel {
            glb: bytes_stream(Bytes::from(glb)),
            size_hint: Some(len),
            preview: None,
        })
    }
}
