//! Turns a generated PNG into a GLB with the FAL generator, pointed at an
//! in-process fake FAL (no network beyond 127.0.0.1, no key needed):
//!
//! ```text
//! cargo run -p image2model-examples --example embed_fal
//! ```
//!
//! Against the real fal, build the configuration with
//! `FalConfig::from_lookup(|name| std::env::var(name).ok())` instead.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use image2model_core::domain::{
    GenerateOptions, ImageKind, ItemId, JobId, ModelName, Progress, Texture,
};
use image2model_core::generators::fal::{FalConfig, FalGenerator, parse_base_url};
use image2model_core::ports::{
    GenerateContext, GenerateError, GenerateRequest, GenerationObserver, ModelGenerator,
};
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use image2model_core::testing::images;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Prints what the generator reports. A real embedding persists the request
/// id (so a restarted worker can resume it instead of paying twice).
struct PrintingObserver;

#[async_trait]
impl GenerationObserver for PrintingObserver {
    async fn progress(&self, progress: Progress) {
        println!("progress {:>3} %", progress.get());
    }

    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError> {
        println!("fal request {request_id} (persist this to resume after a crash)");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fake = FakeFal::start(FakeFalConfig {
        queue_time: Duration::from_millis(300),
        progress_time: Duration::from_millis(700),
        ..FakeFalConfig::default()
    })
    .await;

    let mut config = FalConfig::new(fake.key().to_owned().into());
    config.queue_base_url = parse_base_url("queue", &fake.queue_base_url())?;
    config.storage_base_url = parse_base_url("storage", &fake.storage_base_url())?;
    let generator = FalGenerator::new(config)?;

    let request = GenerateRequest {
        job_id: JobId::new(),
        item_id: ItemId::new(),
        options: GenerateOptions {
            model: ModelName::parse("tripo3d-v2.5")?,
            face_limit: None,
            texture: Texture::Standard,
        },
        image: images::png(256, 256).into(),
        image_kind: ImageKind::Png,
        resume_remote_request: None,
    };
    let ctx = GenerateContext {
        observer: &PrintingObserver,
        cancel: CancellationToken::new(),
        deadline: Duration::from_secs(60),
    };
    let model = generator.generate(request, ctx).await?;

    let dir = tempfile::Builder::new()
        .prefix("image2model-embed-fal-")
        .tempdir()?
        .keep();
    let path = dir.join("model.glb");
    let mut file = tokio::fs::File::create(&path).await?;
    let mut glb = model.glb;
    let mut written = 0usize;
    while let Some(chunk) = glb.next().await {
        let chunk = chunk.context("downloading the model")?;
        written += chunk.len();
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    println!("wrote {written} bytes of GLB to {}", path.display());
    if let Some(preview) = model.preview {
        let bytes: Vec<u8> = preview
            .body
            .map(|c| c.map(|b| b.to_vec()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let preview_path = dir.join(format!("preview.{}", preview.kind.extension()));
        tokio::fs::write(&preview_path, bytes).await?;
        println!("wrote the preview to {}", preview_path.display());
    }
    println!(
        "fake FAL saw {} submit, {} status polls",
        fake.submits(),
        fake.status_polls()
    );
    Ok(())
}
