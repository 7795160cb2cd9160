//! The worker: claims queued items under leases and turns them into models.
//!
//! Crash safety: an item is claimed with a lease that the worker renews while
//! it works. If the process dies, the lease expires and any worker reclaims the
//! item (up to `max_attempts` claims); a generator that started a remote request
//! persisted its id first, so the new attempt resumes it instead of paying for
//! a second run. On graceful shutdown, in-flight items get `shutdown_grace` to
//! finish; the rest are released back to `queued` at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{BlobKey, ItemError, Progress};
use crate::gltf::inspect_glb_stream;
use crate::ports::{
    BlobError, Claim, ClaimOptions, GenerateContext, GenerateError, GenerateRequest,
    GeneratedModel, GenerationObserver, ItemOutcome,
};

use super::Pipeline;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Items generated at once.
    pub concurrency: usize,
    /// How long a claim holds without renewal; renewed every third of it.
    pub lease: Duration,
    /// Claims of one item before it is failed with `worker_lost`.
    pub max_attempts: u32,
    /// How often an idle worker looks for work created by other processes.
    pub idle_poll: Duration,
    /// How long in-flight items may run on after shutdown is requested.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            idle_poll: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Claims and processes items until shut down. See the module docs.
#[derive(Debug)]
pub struct Worker {
    pipeline: Pipeline,
    config: WorkerConfig,
}

impl Worker {
    pub(super) fn new(pipeline: Pipeline, config: WorkerConfig) -> Self {
        Self { pipeline, config }
    }

    /// Runs until `shutdown` fires, then drains (see the module docs).
    pub async fn run(self, shutdown: CancellationToken) {
        let concurrency = self.config.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        // Fires when the grace period after shutdown is over.
        let stop_now = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let claim_options = ClaimOptions {
            lease: self.config.lease,
            max_attempts: self.config.max_attempts,
        };
        tracing::info!(concurrency, "worker started");
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                () = shutdown.cancelled() => break,
            };
            // Register interest before claiming so that a job created between
            // an empty claim and the wait still wakes us.
            let notified = self.pipeline.inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pipeline.inner.jobs.claim_next(claim_options).await {
                Ok(Some(claim)) => {
                    failures = 0;
                    let pipeline = self.pipeline.clone();
                    let config = self.config.clone();
                    let stop_now = stop_now.clone();
                    tasks.spawn(async move {
                        process(pipeline, config, claim, stop_now).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(self.config.idle_poll) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                Err(e) => {
                    drop(permit);
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "worker could not claim");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        tracing::info!(in_flight = tasks.len(), "worker stopping");
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            stop_now.cancel();
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!("worker stopped");
    }
}

/// Persists what the generator reports, under the item's lease.
struct LeaseObserver {
    pipeline: Pipeline,
    claim: Claim,
    last: std::sync::Mutex<Progress>,
}

#[async_trait]
impl GenerationObserver for LeaseObserver {
    async fn progress(&self, progress: Progress) {
        {
            let mut last = self.last.lock().expect("progress lock");
            if progress <= *last {
                return;
            }
            *last = progress;
        }
        let store = &self.pipeline.inner.jobs;
        match store
            .record_progress(self.claim.item.item_id, &self.claim.token, progress)
            .await
        {
            Ok(true) => self.pipeline.notify(self.claim.job.job_id),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record progress"),
        }
    }

    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError> {
        let store = &self.pipeline.inner.jobs;
        match store
            .record_remote_request(self.claim.item.item_id, &self.claim.token, request_id)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(GenerateError::Cancelled),
            Err(e) => Err(GenerateError::Internal(format!(
                "could not persist the remote request: {}",
                e.code()
            ))),
        }
    }
}

enum Ending {
    Outcome(ItemOutcome),
    /// The lease is gone (cancelled or taken over): record nothing.
    LeaseLost,
}

async fn process(
    pipeline: Pipeline,
    config: WorkerConfig,
    claim: Claim,
    stop_now: CancellationToken,
) {
    let job_id = claim.job.job_id;
    let item_id = claim.item.item_id;
    let span = tracing::info_span!("item", %job_id, %item_id, attempt = claim.item.attempts, model = %claim.job.options.model);
    async move {
        tracing::info!("item claimed");
        metrics::counter!("image2model_items_claimed_total").increment(1);
        let cancel = CancellationToken::new();
        pipeline.inner.running.lock().expect("running lock").insert(item_id, cancel.clone());
        pipeline.notify(job_id);

        // Renew the lease while working; a refused renewal means the item was
        // cancelled or taken over, so stop generating.
        let renewer = {
            let pipeline = pipeline.clone();
            let token = claim.token.clone();
            let cancel = cancel.clone();
            let lease = config.lease;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match pipeline.inner.jobs.renew_lease(item_id, &token, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            cancel.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };

        let started = std::time::Instant::now();
        let work = std::panic::AssertUnwindSafe(run_item(&pipeline, &claim, cancel.clone())).catch_unwind();
        let ending = tokio::select! {
            result = work => match result {
                Ok(ending) => ending,
                Err(_) => {
                    tracing::error!("generator panicked");
                    Ending::Outcome(ItemOutcome::Failed(ItemError {
                        code: "internal_error".into(),
                        message: "the generator failed unexpectedly".into(),
                    }))
                }
            },
            // Shutdown grace is over: give the item back (its remote request,
            // if any, stays persisted and is resumed by the next worker).
            () = stop_now.cancelled() => Ending::Outcome(ItemOutcome::Release),
        };
        renewer.abort();
        pipeline.inner.running.lock().expect("running lock").remove(&item_id);

        if let Ending::Outcome(outcome) = ending {
            let stored_model = match &outcome {
                ItemOutcome::Succeeded { model_key, preview_key } => Some((model_key.clone(), preview_key.clone())),
                _ => None,
            };
            let label = match &outcome {
                ItemOutcome::Succeeded { .. } => "succeeded".to_owned(),
                ItemOutcome::Failed(e) => format!("failed: {}", e.code),
                ItemOutcome::Release => "released".to_owned(),
            };
            let (kind, code) = match &outcome {
                ItemOutcome::Succeeded { .. } => ("succeeded", String::new()),
                ItemOutcome::Failed(e) => ("failed", e.code.clone()),
                ItemOutcome::Release => ("released", String::new()),
            };
            metrics::counter!("image2model_items_finished_total", "outcome" => kind, "code" => code).increment(1);
            metrics::histogram!("image2model_item_seconds", "outcome" => kind).record(started.elapsed().as_secs_f64());
            match pipeline.inner.jobs.finish_item(item_id, &claim.token, outcome).await {
                Ok(true) => tracing::info!(outcome = %label, "item finished"),
                Ok(false) => {
                    tracing::info!("item was cancelled or taken over meanwhile; result discarded");
                    if let Some((model, preview)) = stored_model {
                        discard(&pipeline, &model, preview.as_ref()).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not record the item's outcome; its lease will expire and it will be retried"),
            }
        }
        pipeline.notify(job_id);
    }
    .instrument(span)
    .await;
}

async fn discard(pipeline: &Pipeline, model: &BlobKey, preview: Option<&BlobKey>) {
    let _ = pipeline.inner.blobs.delete(model).await;
    if let Some(p) = preview {
        let _ = pipeline.inner.blobs.delete(p).await;
    }
}

fn failed(e: &GenerateError) -> Ending {
    Ending::Outcome(ItemOutcome::Failed(ItemError {
        code: e.code().to_owned(),
        message: e.to_string(),
    }))
}

async fn run_item(pipeline: &Pipeline, claim: &Claim, cancel: CancellationToken) -> Ending {
    let job = &claim.job;
    let item = &claim.item;
    let Some(generator) = pipeline
        .inner
        .generators
        .resolve(&job.options.model)
        .cloned()
    else {
        return failed(&GenerateError::UnknownModel(job.options.model.clone()));
    };
    let image = match pipeline.inner.blobs.get_bytes(&item.upload_key).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "uploaded image unreadable");
            return Ending::Outcome(ItemOutcome::Failed(ItemError {
                code: "upload_missing".into(),
                message: "the uploaded image could not be read".into(),
            }));
        }
    };
    let observer = LeaseObserver {
        pipeline: pipeline.clone(),
        claim: claim.clone(),
        last: std::sync::Mutex::new(item.progress),
    };
    let request = GenerateRequest {
        job_id: job.job_id,
        item_id: item.item_id,
        options: job.options.clone(),
        image,
        image_kind: item.content_type,
        resume_remote_request: item.remote_request_id.clone(),
    };
    let deadline = pipeline.inner.config.generation_deadline;
    let ctx = GenerateContext {
        observer: &observer,
        cancel: cancel.clone(),
        deadline,
    };
    // The generator must honour the deadline itself; this is the backstop.
    let generated = match tokio::time::timeout(
        deadline + Duration::from_secs(5),
        generator.generate(request, ctx),
    )
    .await
    {
        Ok(Ok(model)) => model,
        Ok(Err(GenerateError::Cancelled)) | Err(_) if cancel.is_cancelled() => {
            return Ending::LeaseLost;
        }
        Ok(Err(e)) => {
            tracing::warn!(code = e.code(), error = %e, "generation failed");
            return failed(&e);
        }
        Err(_) => {
            return failed(&GenerateError::Timeout(
                "the generator did not finish in time".into(),
            ));
        }
    };
    if cancel.is_cancelled() {
        return Ending::LeaseLost;
    }
    store_model(pipeline, claim, generated).await
}

async fn store_model(pipeline: &Pipeline, claim: &Claim, generated: GeneratedModel) -> Ending {
    let (job_id, item_id) = (claim.job.job_id, claim.item.item_id);
    let blobs = &pipeline.inner.blobs;
    let model_key = BlobKey::model(job_id, item_id);
    let (stream, verdict) =
        inspect_glb_stream(generated.glb, pipeline.inner.config.max_model_bytes);
    let stored = blobs.put(&model_key, stream).await;
    match (stored, verdict.get()) {
        (Ok(_), Some(Ok(_))) => {}
        (_, Some(Err(e))) => {
            let _ = blobs.delete(&model_key).await;
            return failed(&e);
        }
        (Err(BlobError::Body(e)), _) => {
            let _ = blobs.delete(&model_key).await;
            // The generator's stream failed: keep its own reason when it gave one.
            let reason = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<GenerateError>())
                .cloned();
            return failed(&reason.unwrap_or_else(|| {
                GenerateError::Upstream(format!("the model download failed: {e}"))
            }));
        }
        (Err(e), _) => {
            let _ = blobs.delete(&model_key).await;
            tracing::error!(error = %e, "could not store the model");
            return failed(&GenerateError::Upstream(format!(
                "the model could not be stored ({})",
                e.code()
            )));
        }
        (Ok(_), None) => {
            let _ = blobs.delete(&model_key).await;
            return failed(&GenerateError::InvalidOutput(
                "the model stream ended early".into(),
            ));
        }
    }
    let mut preview_key = None;
    if let Some(preview) = generated.preview {
        let key = BlobKey::preview(job_id, item_id, preview.kind);
        match blobs.put(&key, preview.body).await {
            Ok(_) => preview_key = Some(key),
            Err(e) => tracing::warn!(error = %e, "preview not stored; the model is kept"),
        }
    }
    Ending::Outcome(ItemOutcome::Succeeded {
        model_key,
        preview_key,
    })
}
