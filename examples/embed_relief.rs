//! Embeds the conversion pipeline without HTTP: SQLite job store, local blob
//! store, the offline relief generator and one worker, all in this process.
//!
//! ```text
//! cargo run -p image2model-examples --example embed_relief -- [IMAGE…] [-o OUT_DIR]
//! ```
//! With no image it converts `examples/assets/dome.png`. It writes one `.glb`
//! per image into OUT_DIR (default: a new temporary directory) and prints the
//! job's progress as it goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use image2model_core::domain::ApiKeyId;
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::{Generators, Pipeline, PipelineConfig, Scope, SubmitOptions, WorkerConfig};
use image2model_store::{open_blob_store, open_job_store};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut images: Vec<PathBuf> = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-o" {
            out = Some(args.next().context("-o needs a directory")?.into());
        } else {
            images.push(arg.into());
        }
    }
    if images.is_empty() {
        images.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dome.png"));
    }
    let scratch = tempfile::tempdir()?;
    let out = out.unwrap_or_else(|| scratch.path().join("models"));
    std::fs::create_dir_all(&out)?;

    // The embedded defaults: a SQLite file and a folder of blobs.
    let data = scratch.path();
    let jobs = open_job_store(&format!("sqlite://{}", data.join("jobs.db").display())).await?;
    let blobs = open_blob_store(&format!("file://{}", data.join("blobs").display())).await?;
    let generators = Generators::new(vec![Arc::new(ReliefGenerator::default())])?;
    let pipeline = Pipeline::new(jobs, blobs, generators, PipelineConfig::default());

    let stop = CancellationToken::new();
    let worker = tokio::spawn(pipeline.worker(WorkerConfig::default()).run(stop.clone()));

    let owner = ApiKeyId::parse("embedder")?;
    let mut files = Vec::new();
    for path in &images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        files.push((
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            bytes.into(),
        ));
    }
    let job = pipeline
        .submit(&owner, files, SubmitOptions::default())
        .await?;
    println!("job {} queued with {} item(s)", job.job_id, job.items.len());

    let scope = Scope::Owner(owner);
    let mut events = Box::pin(pipeline.subscribe(job.job_id, &scope).await?);
    let mut last = job;
    while let Some(state) = events.next().await {
        println!("  {:>3}% {}", state.progress.get(), state.status.as_str());
        last = state;
    }
    for (item, path) in last.items.iter().zip(&images) {
        if let Some(error) = &item.error {
            bail!(
                "{} failed: {} ({})",
                path.display(),
                error.message,
                error.code
            );
        }
        let (_, object) = pipeline.model(last.job_id, item.item_id, &scope).await?;
        let bytes: Vec<u8> = object
            .stream
            .map(|c| c.map(|b| b.to_vec()))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let target = out.join(format!("{stem}.glb"));
        std::fs::write(&target, &bytes)?;
        println!("wrote {} ({} bytes)", target.display(), bytes.len());
    }

    stop.cancel();
    worker.await?;
    if out.starts_with(scratch.path()) {
        // Keep the output when it went to the temporary directory.
        let kept = std::env::temp_dir().join(format!("image2model-{}", last.job_id));
        std::fs::create_dir_all(&kept)?;
        for entry in std::fs::read_dir(&out)? {
            let entry = entry?;
            std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
        }
        println!("models kept in {}", kept.display());
    }
    Ok(())
}
