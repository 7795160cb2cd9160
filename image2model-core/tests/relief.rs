//! The relief generator through the public `ModelGenerator` interface: the
//! GLB it streams is parsed with the `gltf` crate and checked to be a closed,
//! outward-facing solid within the face limit.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use image::{ImageFormat, Rgba, RgbaImage};
use image2model_core::domain::{
    FaceLimit, GenerateOptions, ImageKind, ItemId, JobId, ModelName, Progress, Texture,
};
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::gltf::{Mesh, read_glb};
use image2model_core::ports::{
    GenerateContext, GenerateError, GenerateRequest, GenerationObserver, ModelGenerator,
};
use image2model_core::testing::images;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

// ----- helpers -------------------------------------------------------------

/// Records the progress it is told about.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<u8>>);

#[async_trait]
impl GenerationObserver for Recorder {
    async fn progress(&self, progress: Progress) {
        self.0.lock().unwrap().push(progress.get());
    }
    async fn remote_request(&self, _: &str) -> Result<(), GenerateError> {
        Ok(())
    }
}

fn options(face_limit: Option<u32>, texture: Texture) -> GenerateOptions {
    GenerateOptions {
        model: ModelName::parse("relief").unwrap(),
        face_limit: face_limit.map(|f| FaceLimit::new(f).unwrap()),
        texture,
    }
}

fn request(image: Vec<u8>, kind: ImageKind, options: GenerateOptions) -> GenerateRequest {
    GenerateRequest {
        job_id: JobId::new(),
        item_id: ItemId::new(),
        options,
        image: image.into(),
        image_kind: kind,
        resume_remote_request: None,
    }
}

/// Runs the generator; returns the GLB and the progress reported.
async fn run_with(
    request: GenerateRequest,
    cancel: CancellationToken,
    deadline: Duration,
) -> Result<(Vec<u8>, Vec<u8>), GenerateError> {
    let recorder = Recorder::default();
    let ctx = GenerateContext {
        observer: &recorder,
        cancel,
        deadline,
    };
    let model = ReliefGenerator::default().generate(request, ctx).await?;
    let chunks: Vec<_> = model.glb.try_collect().await.unwrap();
    let glb = chunks.concat();
    assert_eq!(model.size_hint, Some(glb.len() as u64));
    let progress = recorder.0.into_inner().unwrap();
    Ok((glb, progress))
}

async fn run(image: Vec<u8>, kind: ImageKind, options: GenerateOptions) -> Vec<u8> {
    let req = request(image, kind, options);
    run_with(req, CancellationToken::new(), Duration::from_secs(60))
        .await
        .unwrap()
        .0
}

async fn run_png(image: Vec<u8>, face_limit: Option<u32>) -> Mesh {
    read_glb(
        &run(
            image,
            ImageKind::Png,
            options(face_limit, Texture::Standard),
        )
        .await,
    )
    .unwrap()
}

fn encode_png(img: &RgbaImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f64; 3] {
    [0, 1, 2].map(|k| f64::from(a[k]) - f64::from(b[k]))
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Asserts the mesh is a closed, consistently wound, outward-facing solid
/// without degenerate triangles; returns its Euler characteristic V − E + F.
fn assert_closed_solid(mesh: &Mesh) -> i64 {
    let mut directed: HashMap<(u32, u32), u32> = HashMap::new();
    let mut volume = 0.0f64;
    for t in mesh.triangles() {
        assert!(
            t[0] != t[1] && t[1] != t[2] && t[0] != t[2],
            "repeated vertex in {t:?}"
        );
        let [a, b, c] = t.map(|i| mesh.positions[i as usize]);
        let n = cross(sub(b, a), sub(c, a));
        let area2 = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        assert!(area2 > 1e-12, "degenerate triangle {t:?}");
        let (a, b, c) = (a.map(f64::from), b.map(f64::from), c.map(f64::from));
        volume += (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
            + a[2] * (b[0] * c[1] - b[1] * c[0]))
            / 6.0;
        for (u, v) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
            *directed.entry((u, v)).or_default() += 1;
        }
    }
    for (&(u, v), &n) in &directed {
        // Each undirected edge in exactly two triangles, traversed once each
        // way: manifold and consistently oriented.
        assert_eq!(n, 1, "edge {u}→{v} used {n} times in the same direction");
        assert_eq!(directed.get(&(v, u)), Some(&1), "edge {u}→{v} has no twin");
    }
    assert!(
        volume > 0.0,
        "signed volume {volume} must be positive (outward normals)"
    );
    let used: std::collections::HashSet<u32> = mesh.indices.iter().copied().collect();
    assert_eq!(used.len(), mesh.positions.len(), "every vertex is used");
    used.len() as i64 - (directed.len() / 2) as i64 + mesh.triangle_count() as i64
}

/// (x extent, y extent, z extent).
fn extents(mesh: &Mesh) -> [f32; 3] {
    let (lo, hi) = mesh.bounds().unwrap();
    assert!(lo.iter().chain(&hi).all(|c| c.is_finite()));
    [0, 1, 2].map(|k| hi[k] - lo[k])
}

// ----- tests ---------------------------------------------------------------

#[tokio::test]
async fn output_parses_with_the_gltf_crate_and_counts_are_consistent() {
    let glb = run(
        images::png(80, 60),
        ImageKind::Png,
        options(None, Texture::Standard),
    )
    .await;

    let gltf = gltf::Gltf::from_slice(&glb).expect("valid glTF");
    let prim = gltf.meshes().next().unwrap().primitives().next().unwrap();
    let positions = prim.get(&gltf::Semantic::Positions).unwrap().count();
    let colors = prim.get(&gltf::Semantic::Colors(0)).unwrap().count();
    let indices = prim.indices().unwrap().count();
    let mesh = read_glb(&glb).unwrap();
    assert_eq!(positions, mesh.positions.len());
    assert_eq!(colors, positions);
    assert_eq!(indices, mesh.indices.len());
    assert_eq!(indices % 3, 0);
    assert!(mesh.indices.iter().all(|&i| (i as usize) < positions));
    assert_eq!(
        gltf.document.as_json().asset.generator.as_deref(),
        Some("image2model")
    );
}

#[tokio::test]
async fn footprint_keeps_the_image_aspect_ratio() {
    for (w, h) in [(120u32, 60u32), (50, 100), (64, 64), (300, 7)] {
        let mesh = run_png(images::png(w, h), None).await;

        let [x, y, z] = extents(&mesh);
        let expected = w as f32 / h as f32;
        assert!(
            (x / z - expected).abs() / expected < 1e-3,
            "{w}×{h}: {x}/{z}"
        );
        assert!(y > 0.0 && y < x.max(z), "{w}×{h}: height {y}");
        assert!((x.max(z) - 0.1).abs() < 1e-6, "longer side is 100 mm");
    }
}

#[tokio::test]
async fn opaque_images_of_every_kind_give_closed_solids() {
    for (bytes, kind) in [
        (images::png(64, 48), ImageKind::Png),
        (images::jpeg(64, 48), ImageKind::Jpeg),
        (images::webp(64, 48), ImageKind::Webp),
    ] {
        let mesh = read_glb(&run(bytes, kind, options(None, Texture::Standard)).await).unwrap();

        let euler = assert_closed_solid(&mesh);
        assert_eq!(euler, 2, "{kind:?}: one solid without holes is a sphere");
    }
}

#[tokio::test]
async fn face_limit_is_respected_and_mostly_used() {
    for limit in [500u32, 5_000, 50_000] {
        let opaque = run_png(images::png(400, 300), Some(limit)).await;
        let alpha = run_png(images::png_with_alpha(400, 300), Some(limit)).await;

        assert!(
            opaque.triangle_count() <= limit as usize,
            "{limit}: {}",
            opaque.triangle_count()
        );
        assert!(
            opaque.triangle_count() * 10 >= limit as usize * 7,
            "{limit}: uses the budget"
        );
        assert!(alpha.triangle_count() <= limit as usize);
        assert_closed_solid(&opaque);
        assert_closed_solid(&alpha);
    }
}

#[tokio::test]
async fn default_face_limit_is_20000() {
    let mesh = run_png(images::png(1000, 800), None).await;

    assert!(mesh.triangle_count() <= 20_000);
    assert!(mesh.triangle_count() > 15_000);
}

#[tokio::test]
async fn alpha_silhouette_gives_fewer_faces_and_stays_closed() {
    let opaque = run_png(images::png(128, 96), Some(5_000)).await;
    let cut = run_png(images::png_with_alpha(128, 96), Some(5_000)).await;

    assert!(cut.triangle_count() < opaque.triangle_count());
    assert_eq!(assert_closed_solid(&cut), 2);
    // The disc's diameter is 0.6 of the shorter side: a smaller footprint.
    let [x, _, z] = extents(&cut);
    assert!(x < 0.1 * 0.5 && z < 0.1 * 0.5, "{x} × {z}");
}

#[tokio::test]
async fn holes_and_islands_make_the_right_topology() {
    // A ring (one hole) and a separate dot: a torus and a sphere, whose Euler
    // characteristics are 0 and 2.
    let img = RgbaImage::from_fn(64, 64, |x, y| {
        let d = |cx: f32, cy: f32| ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
        let ring = (10.0..=20.0).contains(&d(22.0, 32.0));
        let dot = d(52.0, 32.0) <= 6.0;
        if ring || dot {
            Rgba([200, 120, 40, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });

    let mesh = run_png(encode_png(&img), None).await;

    assert_eq!(assert_closed_solid(&mesh), 2);
}

#[tokio::test]
async fn diagonal_pinches_are_joined_into_a_manifold() {
    // A checkerboard: every interior corner is a pinch.
    let img = RgbaImage::from_fn(9, 7, |x, y| {
        Rgba([255, 255, 255, if (x + y) % 2 == 0 { 255 } else { 0 }])
    });

    let mesh = run_png(encode_png(&img), None).await;

    assert_closed_solid(&mesh);
}

#[tokio::test]
async fn thin_images_still_make_closed_solids() {
    for (w, h) in [(1, 1), (1, 40), (40, 1), (2, 1)] {
        let mesh = run_png(images::png(w, h), None).await;

        assert_eq!(assert_closed_solid(&mesh), 2, "{w}×{h}");
        let [x, _, z] = extents(&mesh);
        assert!((x / z - w as f32 / h as f32).abs() < 1e-3 * (w as f32 / h as f32));
    }
}

#[tokio::test]
async fn same_input_gives_identical_bytes() {
    let a = run(
        images::png_with_alpha(90, 70),
        ImageKind::Png,
        options(Some(3_000), Texture::Hd),
    )
    .await;
    let b = run(
        images::png_with_alpha(90, 70),
        ImageKind::Png,
        options(Some(3_000), Texture::Hd),
    )
    .await;

    assert_eq!(a, b);
}

#[tokio::test]
async fn texture_no_leaves_out_vertex_colours() {
    let glb = run(
        images::png(40, 30),
        ImageKind::Png,
        options(None, Texture::No),
    )
    .await;

    let gltf = gltf::Gltf::from_slice(&glb).unwrap();
    let prim = gltf.meshes().next().unwrap().primitives().next().unwrap();
    assert!(prim.get(&gltf::Semantic::Colors(0)).is_none());
    assert!(read_glb(&glb).unwrap().colors.is_none());
}

#[tokio::test]
async fn colours_come_from_the_image() {
    let img = RgbaImage::from_pixel(16, 16, Rgba([10, 200, 30, 255]));

    let mesh = run_png(encode_png(&img), None).await;

    assert!(
        mesh.colors
            .unwrap()
            .iter()
            .all(|c| *c == [10, 200, 30, 255])
    );
}

#[tokio::test]
async fn brighter_pixels_stand_higher() {
    let img = RgbaImage::from_fn(32, 8, |x, _| {
        if x < 16 {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([255, 255, 255, 255])
        }
    });

    let mesh = run_png(encode_png(&img), None).await;

    let top_at = |pick: fn(f32) -> bool| {
        mesh.positions
            .iter()
            .filter(|p| pick(p[0]))
            .map(|p| p[1])
            .fold(0.0f32, f32::max)
    };
    let dark = top_at(|x| x < -0.01);
    let bright = top_at(|x| x > 0.01);
    assert!(
        (dark - 0.003).abs() < 1e-6,
        "black is the 3 mm base: {dark}"
    );
    assert!((bright - 0.013).abs() < 1e-6, "white is 13 mm: {bright}");
}

#[tokio::test]
async fn progress_is_reported_in_increasing_steps() {
    let req = request(
        images::png(64, 64),
        ImageKind::Png,
        options(None, Texture::Standard),
    );

    let (_, progress) = run_with(req, CancellationToken::new(), Duration::from_secs(60))
        .await
        .unwrap();

    assert!(progress.len() >= 3, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert!(progress.iter().all(|&p| p < 100));
}

#[tokio::test]
async fn a_cancelled_token_gives_cancelled() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let req = request(
        images::png(64, 64),
        ImageKind::Png,
        options(None, Texture::Standard),
    );

    let err = run_with(req, cancel, Duration::from_secs(60))
        .await
        .unwrap_err();

    assert_eq!(err, GenerateError::Cancelled);
}

#[tokio::test]
async fn a_passed_deadline_gives_timeout() {
    let req = request(
        images::png(64, 64),
        ImageKind::Png,
        options(None, Texture::Standard),
    );

    let err = run_with(req, CancellationToken::new(), Duration::ZERO)
        .await
        .unwrap_err();

    assert!(matches!(err, GenerateError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn undecodable_bytes_are_invalid_input() {
    let req = request(
        b"\x89PNG\r\n\x1a\ngarbage".to_vec(),
        ImageKind::Png,
        options(None, Texture::Standard),
    );

    let err = run_with(req, CancellationToken::new(), Duration::from_secs(60))
        .await
        .unwrap_err();

    assert!(matches!(err, GenerateError::InvalidInput(_)), "{err:?}");
    assert_eq!(err.code(), "generation_rejected");
}

#[tokio::test]
async fn a_fully_transparent_image_is_invalid_input() {
    let img = RgbaImage::from_pixel(20, 20, Rgba([255, 0, 0, 0]));
    let req = request(
        encode_png(&img),
        ImageKind::Png,
        options(None, Texture::Standard),
    );

    let err = run_with(req, CancellationToken::new(), Duration::from_secs(60))
        .await
        .unwrap_err();

    assert!(
        matches!(err, GenerateError::InvalidInput(ref m) if m.contains("transparent")),
        "{err:?}"
    );
}

#[tokio::test]
async fn other_models_are_unknown() {
    let mut opts = options(None, Texture::Standard);
    opts.model = ModelName::parse("tripo3d-v2.5").unwrap();
    let req = request(images::png(8, 8), ImageKind::Png, opts);

    let err = run_with(req, CancellationToken::new(), Duration::from_secs(60))
        .await
        .unwrap_err();

    assert!(matches!(err, GenerateError::UnknownModel(_)));
}

#[tokio::test]
async fn output_passes_the_pipelines_streaming_glb_check() {
    let glb = run(
        images::png_with_alpha(64, 64),
        ImageKind::Png,
        options(None, Texture::Standard),
    )
    .await;
    let stream = image2model_core::ports::bytes_stream(glb.clone().into());

    let (checked, verdict) = image2model_core::gltf::inspect_glb_stream(stream, 10 << 20);
    let _: Vec<_> = checked.try_collect().await.unwrap();

    assert_eq!(verdict.get(), Some(Ok(glb.len() as u64)));
}

#[test]
fn it_offers_one_model_named_relief() {
    let generator = ReliefGenerator::default();

    let models = generator.models();

    assert_eq!(generator.name(), "relief");
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name.as_str(), "relief");
    assert_eq!(models[0].generator, "relief");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_silhouettes_make_closed_solids_within_the_limit(
        (w, h, mask) in (1u32..64, 1u32..64).prop_flat_map(|(w, h)| {
            (Just(w), Just(h), proptest::collection::vec(any::<bool>(), (w * h) as usize))
        }),
        limit in 500u32..6_000,
        seed in any::<u8>(),
    ) {
        prop_assume!(mask.contains(&true));
        let img = RgbaImage::from_fn(w, h, |x, y| {
            let v = (x * 7 + y * 13 + u32::from(seed)) as u8;
            Rgba([v, v.wrapping_mul(3), 255 - v, if mask[(y * w + x) as usize] { 255 } else { 0 }])
        });

        let glb = ReliefGenerator::default()
            .render(&encode_png(&img), ImageKind::Png, Some(FaceLimit::new(limit).unwrap()), Texture::Standard)
            .unwrap();
        let mesh = read_glb(&glb).unwrap();

        prop_assert!(mesh.triangle_count() <= limit as usize);
        assert_closed_solid(&mesh);
    }
}

#[test]
fn the_closed_solid_check_catches_open_and_inverted_meshes() {
    let tetra = Mesh {
        positions: vec![
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ],
        indices: vec![0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3],
        ..Mesh::default()
    };
    assert_eq!(assert_closed_solid(&tetra), 2);

    let mut open = tetra.clone();
    open.indices.truncate(9);
    let mut one_flipped = tetra.clone();
    one_flipped.indices.swap(0, 1);
    let mut inside_out = tetra.clone();
    for t in inside_out.indices.chunks_exact_mut(3) {
        t.swap(1, 2);
    }
    for bad in [open, one_flipped, inside_out] {
        assert!(std::panic::catch_unwind(|| assert_closed_solid(&bad)).is_err());
    }
}
