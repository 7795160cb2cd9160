//! `image2model convert IMAGE… -o DIR`: the pipeline in-process, with memory
//! stores and the configured generator (relief unless a FAL key is set), one
//! job per image, a progress bar, and `<stem>.glb` files in DIR.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use image2model_core::domain::{ApiKeyId, FaceLimit, JobId, ModelName};
use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
use image2model_core::{Pipeline, PipelineConfig, Scope, SubmitOptions, WorkerConfig};
use image2model_http::config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

struct Submitted {
    source: PathBuf,
    job_id: JobId,
}

/// Runs the conversion; the exit code is 1 when any image failed.
pub async fn run(
    config: Config,
    images: Vec<PathBuf>,
    out: PathBuf,
    model: Option<String>,
    face_limit: Option<u32>,
) -> ExitCode {
    let model = match model.map(|m| ModelName::parse(&m)).transpose() {
        Ok(m) => m,
        Err(e) => return fail(&e.message),
    };
    let face_limit = match face_limit.map(FaceLimit::new).transpose() {
        Ok(f) => f,
        Err(e) => return fail(&e.message),
    };
    let generators = match image2model_http::wiring::generators(&config) {
        Ok(g) => g,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = tokio::fs::create_dir_all(&out).await {
        return fail(&format!("cannot create {}: {e}", out.display()));
    }
    let pipeline = Pipeline::new(
        Arc::new(MemoryJobStore::default()),
        Arc::new(MemoryBlobStore::default()),
        generators,
        PipelineConfig {
            limits: config.upload_limits(),
            event_poll_interval: Duration::from_millis(200),
            ..PipelineConfig::default()
        },
    );
    let owner = ApiKeyId::bootstrap_user();
    let mut failures = 0usize;
    let mut submitted = Vec::new();
    for path in &images {
        match submit(&pipeline, &owner, path, model.clone(), face_limit).await {
            Ok(job_id) => submitted.push(Submitted {
                source: path.clone(),
                job_id,
            }),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                failures += 1;
            }
        }
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(
        pipeline
            .worker(WorkerConfig {
                concurrency: config.worker_concurrency,
                ..WorkerConfig::default()
            })
            .run(shutdown.clone()),
    );
    let bar = ProgressBar::new((submitted.len() * 100) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let scope = Scope::Owner(owner.clone());
    let jobs = loop {
        let mut jobs = Vec::with_capacity(submitted.len());
        for s in &submitted {
            match pipeline.job(s.job_id, &scope).await {
                Ok(job) => jobs.push(job),
                Err(e) => return fail(&e.to_string()),
            }
        }
        let done = jobs.iter().filter(|j| j.status.is_terminal()).count();
        bar.set_position(jobs.iter().map(|j| u64::from(j.progress.get())).sum());
        bar.set_message(format!("{done}/{} done", jobs.len()));
        if done == jobs.len() {
            break jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    let mut used = HashSet::new();
    for (s, job) in submitted.iter().zip(jobs) {
        let item = &job.items[0];
        if let Some(err) = &item.error {
            eprintln!("{}: {} ({})", s.source.display(), err.message, err.code);
            failures += 1;
            continue;
        }
        let target = unique_target(&out, &s.source, &mut used);
        match write_model(&pipeline, &scope, s.job_id, item.item_id, &target).await {
            Ok(bytes) => println!(
                "{} -> {} ({bytes} bytes)",
                s.source.display(),
                target.display()
            ),
            Err(e) => {
                eprintln!("{}: {e}", s.source.display());
                failures += 1;
            }
        }
    }
    shutdown.cancel();
    let _ = worker.await;
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failures} of {} image(s) failed", images.len());
        ExitCode::FAILURE
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

async fn submit(
    pipeline: &Pipeline,
    owner: &ApiKeyId,
    path: &Path,
    model: Option<ModelName>,
    face_limit: Option<FaceLimit>,
) -> Result<JobId, String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let upload = match pipeline
        .begin_upload(owner.clone(), None)
        .await
        .map_err(|e| e.to_string())?
    {
        image2model_core::pipeline::UploadStart::New(u) => u,
        image2model_core::pipeline::UploadStart::Existing(job) => return Ok(job.job_id),
    };
    let mut upload = upload;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    upload
        .add_file(name, ReaderStream::new(file).boxed())
        .await
        .map_err(|e| format!("{e} ({})", e.code()))?;
    let job = upload
        .commit(SubmitOptions {
            model,
            face_limit,
            ..SubmitOptions::default()
        })
        .await
        .map_err(|e| format!("{e} ({})", e.code()))?;
    Ok(job.job_id)
}

/// `DIR/<stem>.glb`, with `-2`, `-3`… when two inputs share a stem.
fn unique_target(out: &Path, source: &Path, used: &mut HashSet<PathBuf>) -> PathBuf {
    let stem = source
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("model");
    let mut n = 1;
    loop {
        let name = if n == 1 {
            format!("{stem}.glb")
        } else {
            format!("{stem}-{n}.glb")
        };
        let target = out.join(name);
        if used.insert(target.clone()) {
            return target;
        }
        n += 1;
    }
}

async fn write_model(
    pipeline: &Pipeline,
    scope: &Scope,
    job_id: JobId,
    item_id: image2model_core::domain::ItemId,
    target: &Path,
) -> Result<u64, String> {
    let (_, object) = pipeline
        .model(job_id, item_id, scope)
        .await
        .map_err(|e| e.to_string())?;
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    let mut stream = object.stream;
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        written += chunk.len() as u64;
    }
    file.flush().await.map_err(|e| e.to_string())?;
    Ok(written)
}
