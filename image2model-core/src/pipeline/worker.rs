//! The worker: claims queued items under leases and turns them into models.
//!
//! Limits: local work and remote waiting are limited separately. Every
//! [`Capacity::Local`] generator (relief) shares one pool of
//! [`WorkerConfig::concurrency`] slots, about one per core; each
//! [`Capacity::Remote`] generator (FAL) has its own in-flight limit, and an
//! item waiting on the remote service holds no local slot. The claim loop
//! asks the job store only for items of generators that have room
//! ([`ClaimOptions::models`]), so an item this worker could not start stays
//! claimable by other workers, and a whole batch starts at once when the
//! limits allow.
//!
//! Crash safety: an item is claimed with a lease that the worker renews while
//! it works: one [`JobStore::renew_leases`](crate::ports::JobStore::renew_leases)
//! call per worker every third of the lease, whatever the number of items in
//! flight. If the process dies, the lease expires and any worker reclaims the
//! item (up to `max_attempts` claims); a generator that started a remote request
//! persisted its id first, so the new attempt resumes it instead of paying for
//! a second run. On graceful shutdown, in-flight items get `shutdown_grace` to
//! finish; the rest are released back to `queued` at once.
//!
//! Progress is written to the job store only when it rose by at least
//! [`WorkerConfig::progress_step`] points and [`WorkerConfig::progress_interval`]
//! has passed since the claim or the last write: with thousands of items in
//! flight, a write per status event would cost more than the items, and the
//! item's end writes 100 anyway. Both at zero write every rise.

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::domain::{BlobKey, ItemError, ItemId, JobId, ModelName, Progress};
use crate::gltf::inspect_glb_stream;
use crate::ports::{
    BlobError, Capacity, Claim, ClaimOptions, GenerateContext, GenerateError, GenerateRequest,
    GeneratedModel, GenerationObserver, ItemOutcome, LeaseToken,
};

use super::Pipeline;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Local slots: items of [`Capacity::Local`] generators (relief)
    /// generated at once. Remote generators have their own in-flight limit.
    /// Defaults to the number of cores.
    pub concurrency: usize,
    /// How long a claim holds without renewal; renewed every third of it.
    pub lease: Duration,
    /// Claims of one item before it is failed with `worker_lost`.
    pub max_attempts: u32,
    /// How often an idle worker looks for work created by other processes.
    pub idle_poll: Duration,
    /// How long in-flight items may run on after shutdown is requested.
    pub shutdown_grace: Duration,
    /// The shortest time between the claim or a progress write of one item
    /// and its next progress write.
    pub progress_interval: Duration,
    /// The smallest rise (in percentage points) worth a progress write.
    pub progress_step: u8,
    /// The progress writes a second this process aims at, across all its
    /// items: with more items running than `progress_interval` allows for
    /// (at the default, over 200), each item's writes are spaced further
    /// apart (items running ÷ this many seconds), so that the store's load
    /// stays flat with thousands of items waiting on a remote service.
    /// `0` turns the budget off (only `progress_interval` spaces writes).
    /// See `docs/BENCHMARKS.md`, "Session 14".
    pub progress_writes_per_sec: u32,
    /// Claims in flight at once: each is a store round trip, so one at a
    /// time would cap a worker at one item per round trip.
    pub claimers: usize,
}

/// The number of cores this process may use (at least 1).
#[must_use]
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: available_cores(),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            idle_poll: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(10),
            progress_interval: Duration::from_secs(2),
            progress_step: 10,
            progress_writes_per_sec: 100,
            claimers: 4,
        }
    }
}

/// Claims and processes items until shut down. See the module docs.
#[derive(Debug)]
pub struct Worker {
    pipeline: Pipeline,
    config: WorkerConfig,
}

/// One limit: the local slots, or one remote generator's in-flight limit.
struct Lane {
    name: String,
    permits: Arc<Semaphore>,
    models: Vec<ModelName>,
}

/// The lanes of a pipeline's generators, and which lane serves each model.
fn lanes(pipeline: &Pipeline, local_slots: usize) -> (Vec<Lane>, HashMap<ModelName, usize>) {
    let mut lanes: Vec<Lane> = Vec::new();
    let mut local: Option<usize> = None;
    let mut lane_of = HashMap::new();
    for (generator, models) in pipeline.inner.generators.each() {
        let idx = match generator.capacity() {
            Capacity::Local => *local.get_or_insert_with(|| {
                lanes.push(Lane {
                    name: "local".into(),
                    permits: Arc::new(Semaphore::new(local_slots.max(1))),
                    models: Vec::new(),
                });
                lanes.len() - 1
            }),
            Capacity::Remote { max_in_flight } => {
                lanes.push(Lane {
                    name: generator.name().to_owned(),
                    permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
                    models: Vec::new(),
                });
                lanes.len() - 1
            }
        };
        for m in models {
            lane_of.insert(m.clone(), idx);
            lanes[idx].models.push(m);
        }
    }
    (lanes, lane_of)
}

/// The leases this worker holds, renewed together.
#[derive(Default)]
struct Leases {
    held: Mutex<HashMap<ItemId, (LeaseToken, CancellationToken)>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ItemId, (LeaseToken, CancellationToken)>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews every held lease with one store call every third of `lease`
    /// until `stop` fires; an item whose lease was refused (cancelled or
    /// taken over) is told to stop.
    async fn renew(self: Arc<Self>, pipeline: Pipeline, lease: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let held: Vec<(ItemId, LeaseToken)> = self
                .lock()
                .iter()
                .map(|(id, (token, _))| (*id, token.clone()))
                .collect();
            if held.is_empty() {
                continue;
            }
            match pipeline.inner.jobs.renew_leases(&held, lease).await {
                Ok(lost) => {
                    let held = self.lock();
                    for id in lost {
                        if let Some((_, cancel)) = held.get(&id) {
                            cancel.cancel();
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, items = held.len(), "lease renewal failed");
                }
            }
        }
    }
}

impl Worker {
    pub(super) fn new(pipeline: Pipeline, config: WorkerConfig) -> Self {
        Self { pipeline, config }
    }

    /// Runs until `shutdown` fires, then drains (see the module docs).
    pub async fn run(self, shutdown: CancellationToken) {
        let local_slots = self.config.concurrency.max(1);
        let claimers = self.config.claimers.max(1);
        let (lanes, lane_of) = lanes(&self.pipeline, local_slots);
        // Wakes the claim loop when an item ends and its slot is free again.
        let slot_freed = Arc::new(Notify::new());
        // Fires when the grace period after shutdown is over.
        let stop_now = CancellationToken::new();
        let leases = Arc::new(Leases::default());
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(leases.clone().renew(
            self.pipeline.clone(),
            self.config.lease,
            stop_renewing.clone(),
        ));
        let mut tasks = JoinSet::new();
        let mut claims = FuturesUnordered::new();
        tracing::info!(
            local_slots,
            claimers,
            lanes = ?lanes.iter().map(|l| (l.name.as_str(), l.permits.available_permits())).collect::<Vec<_>>(),
            "worker started"
        );
        let work = &self.pipeline.inner.work;
        // Registered before claiming, so that a job created while a claim
        // comes back empty still wakes us.
        let mut notified = Box::pin(work.notified());
        notified.as_mut().enable();
        // The last claim found nothing (or failed): wait for news first.
        let mut idle = false;
        let mut failures = 0u32;
        loop {
            while tasks.try_join_next().is_some() {}
            // Keep up to `claimers` claims in flight: one at a time would
            // cap a worker at one item per store round trip. Each claim
            // holds one slot of every lane it may claim for, so claims in
            // flight never take more items than there is room for; the slot
            // of the lane it did claim for goes to the item.
            while !idle && claims.len() < claimers {
                let reserved: Vec<(usize, OwnedSemaphorePermit)> = lanes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| l.permits.clone().try_acquire_owned().ok().map(|p| (i, p)))
                    .collect();
                if reserved.is_empty() {
                    break;
                }
                // Only items of generators with room, unless every one has
                // room (then also items of unknown models, which fail at once).
                let models: Option<Arc<[ModelName]>> = (reserved.len() < lanes.len()).then(|| {
                    reserved
                        .iter()
                        .flat_map(|(i, _)| lanes[*i].models.iter().cloned())
                        .collect()
                });
                let options = ClaimOptions {
                    lease: self.config.lease,
                    max_attempts: self.config.max_attempts,
                    models,
                };
                let jobs = self.pipeline.inner.jobs.clone();
                claims.push(async move { (jobs.claim_next(options).await, reserved) });
            }
            let wait = if failures > 0 {
                Duration::from_millis(100 * 2u64.pow(failures.min(6)))
            } else {
                self.config.idle_poll
            };
            tokio::select! {
                Some((claimed, reserved)) = claims.next(), if !claims.is_empty() => match claimed {
                    Ok(Some(mut claim)) => {
                        failures = 0;
                        // The item's task holds its claim for the whole run,
                        // minutes of remote waiting with thousands in
                        // flight; the job's other items (up to 25 a job,
                        // about half a KiB each) are not needed there.
                        claim.job.items.clear();
                        let lane = lane_of.get(&claim.job.options.model).copied();
                        // Unknown model: it fails at once and needs no slot.
                        let permit = reserved
                            .into_iter()
                            .find_map(|(i, p)| (Some(i) == lane).then_some(p));
                        tasks.spawn(self.start(claim, permit, &leases, &stop_now, &slot_freed));
                    }
                    Ok(None) => idle = true,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        idle = true;
                        tracing::warn!(error = %e, retry_ms = wait.as_millis() as u64, "worker could not claim");
                    }
                },
                () = &mut notified => {
                    idle = false;
                    notified.set(work.notified());
                    notified.as_mut().enable();
                }
                () = slot_freed.notified() => idle = false,
                () = tokio::time::sleep(wait), if idle || claims.is_empty() => idle = false,
                () = shutdown.cancelled() => break,
            }
        }
        // Claims that were in flight: give their items back at once.
        while let Some((claimed, _)) = claims.next().await {
            if let Ok(Some(claim)) = claimed {
                let _ = self
                    .pipeline
                    .inner
                    .jobs
                    .finish_item(claim.item.item_id, &claim.token, ItemOutcome::Release)
                    .await;
                self.pipeline.notify(claim.job.job_id);
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
        stop_renewing.cancel();
        let _ = renewer.await;
        tracing::info!("worker stopped");
    }

    /// The task that processes a claimed item, holding its lane's slot.
    fn start(
        &self,
        claim: Claim,
        permit: Option<OwnedSemaphorePermit>,
        leases: &Arc<Leases>,
        stop_now: &CancellationToken,
        slot_freed: &Arc<Notify>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pipeline = self.pipeline.clone();
        let config = self.config.clone();
        let stop_now = stop_now.clone();
        let leases = leases.clone();
        let slot_freed = slot_freed.clone();
        async move {
            process(pipeline, config, claim, leases, stop_now, permit).await;
            slot_freed.notify_one();
        }
    }
}

/// Persists what the generator reports, under the item's lease.
struct LeaseObserver {
    pipeline: Pipeline,
    job_id: JobId,
    item_id: ItemId,
    token: LeaseToken,
    interval: Duration,
    step: u8,
    /// [`WorkerConfig::progress_writes_per_sec`].
    budget: u32,
    /// The progress last written, and when (or when the item was claimed).
    last: Mutex<(Progress, Instant)>,
}

impl LeaseObserver {
    /// The least time between two progress writes of this item now: the
    /// interval, or more with the write budget shared by many running items.
    fn spacing(&self) -> Duration {
        if self.budget == 0 {
            return self.interval;
        }
        let running = self
            .pipeline
            .inner
            .running
            .lock()
            .expect("running lock")
            .len();
        self.interval.max(progress_spacing(running, self.budget))
    }
}

#[async_trait]
impl GenerationObserver for LeaseObserver {
    async fn progress(&self, progress: Progress) {
        {
            let mut last = self.last.lock().expect("progress lock");
            let now = Instant::now();
            let since = now.duration_since(last.1);
            // The cheap checks first: most reports stop here.
            if progress <= last.0
                || progress.get() < last.0.get().saturating_add(self.step)
                || since < self.interval
                || since < self.spacing()
            {
                return;
            }
            *last = (progress, now);
        }
        let store = &self.pipeline.inner.jobs;
        match store
            .record_progress(self.item_id, &self.token, progress)
            .await
        {
            Ok(true) => self.pipeline.notify(self.job_id),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record progress"),
        }
    }

    fn quiet_until(&self) -> Option<Instant> {
        let since = self.last.lock().expect("progress lock").1;
        Some(since + self.spacing()).filter(|&until| until > Instant::now())
    }

    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError> {
        let store = &self.pipeline.inner.jobs;
        match store
            .record_remote_request(self.item_id, &self.token, request_id)
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

/// The shortest time between two progress writes of one item that keeps
/// `running` items within `budget` writes a second.
fn progress_spacing(running: usize, budget: u32) -> Duration {
    if budget == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(running as f64 / f64::from(budget))
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
    leases: Arc<Leases>,
    stop_now: CancellationToken,
    permit: Option<OwnedSemaphorePermit>,
) {
    let job_id = claim.job.job_id;
    let item_id = claim.item.item_id;
    let span = tracing::info_span!("item", %job_id, %item_id, attempt = claim.item.attempts, model = %claim.job.options.model);
    async move {
        tracing::info!("item claimed");
        metrics::counter!("image2model_items_claimed_total").increment(1);
        let cancel = CancellationToken::new();
        pipeline.inner.running.lock().expect("running lock").insert(item_id, cancel.clone());
        // The worker's renewal task keeps the lease while the item is here; a
        // refused renewal (cancelled or taken over) fires `cancel`.
        leases.lock().insert(item_id, (claim.token.clone(), cancel.clone()));
        pipeline.notify(job_id);

        let started = std::time::Instant::now();
        let work = std::panic::AssertUnwindSafe(run_item(&pipeline, &claim, cancel.clone(), &config)).catch_unwind();
        let ending = tokio::select! {
            result = work => match result {
                Ok(ending) => ending,
                Err(_) => {
                    tracing::error!("generator panicked");
                    Ending::Outcome(ItemOutcome::Failed(ItemError {
                        code: ErrorCode::InternalError.into(),
                        message: "the generator failed unexpectedly".into(),
                    }))
                }
            },
            // Shutdown grace is over: give the item back (its remote request,
            // if any, stays persisted and is resumed by the next worker).
            () = stop_now.cancelled() => Ending::Outcome(ItemOutcome::Release),
        };
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
        leases.lock().remove(&item_id);
        drop(permit);
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

async fn run_item(
    pipeline: &Pipeline,
    claim: &Claim,
    cancel: CancellationToken,
    config: &WorkerConfig,
) -> Ending {
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
                code: ErrorCode::UploadMissing.into(),
                message: "the uploaded image could not be read".into(),
            }));
        }
    };
    let observer = LeaseObserver {
        pipeline: pipeline.clone(),
        job_id: job.job_id,
        item_id: item.item_id,
        token: claim.token.clone(),
        interval: config.progress_interval,
        step: config.progress_step,
        budget: config.progress_writes_per_sec,
        last: Mutex::new((item.progress, Instant::now())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryBlobStore, MemoryJobStore};
    use crate::ports::LeaseToken;
    use crate::testing::generators::{Script, ScriptedGenerator, minimal_glb};
    use crate::{Generators, PipelineConfig};

    /// An observer whose item last wrote `ago` before now, with `running`
    /// items in the pipeline.
    fn observer(ago: Duration, running: usize, budget: u32) -> LeaseObserver {
        let generator = Arc::new(ScriptedGenerator::new(
            "scripted",
            Script::Succeed(minimal_glb()),
        ));
        let pipeline = Pipeline::new(
            Arc::new(MemoryJobStore::default()),
            Arc::new(MemoryBlobStore::default()),
            Generators::new(vec![generator]).unwrap(),
            PipelineConfig::default(),
        );
        {
            let mut running_now = pipeline.inner.running.lock().unwrap();
            for _ in 0..running {
                running_now.insert(ItemId::new(), CancellationToken::new());
            }
        }
        LeaseObserver {
            pipeline,
            job_id: JobId::new(),
            item_id: ItemId::new(),
            token: LeaseToken::generate(),
            interval: Duration::from_secs(2),
            step: 10,
            budget,
            last: Mutex::new((Progress::clamped(20), Instant::now() - ago)),
        }
    }

    #[test]
    fn the_observer_is_quiet_until_a_progress_write_would_count() {
        let near = |until: Option<Instant>, expected: Duration| {
            let left = until
                .expect("quiet")
                .saturating_duration_since(Instant::now());
            assert!(
                left <= expected && left + Duration::from_millis(500) > expected,
                "quiet for {left:?}, expected about {expected:?}"
            );
        };
        // Few items: the 2 s interval.
        near(
            observer(Duration::ZERO, 10, 100).quiet_until(),
            Duration::from_secs(2),
        );
        // 2,000 running within 100 writes a second: 20 s between writes.
        near(
            observer(Duration::from_secs(5), 2_000, 100).quiet_until(),
            Duration::from_secs(15),
        );
        // The budget off: the interval alone.
        near(
            observer(Duration::from_millis(500), 2_000, 0).quiet_until(),
            Duration::from_millis(1500),
        );
        // Past the time: a report may count at once.
        assert_eq!(
            observer(Duration::from_secs(3), 10, 100).quiet_until(),
            None
        );
    }

    #[test]
    fn progress_writes_spread_out_as_more_items_run() {
        // Few items: the budget adds nothing over the 2 s interval.
        assert_eq!(progress_spacing(10, 100), Duration::from_millis(100));
        assert!(progress_spacing(200, 100) <= WorkerConfig::default().progress_interval);
        // Thousands waiting on FAL: 2,000 items within 100 writes a second
        // write each at most every 20 s.
        assert_eq!(progress_spacing(2_000, 100), Duration::from_secs(20));
        // Off: nothing beyond the interval.
        assert_eq!(progress_spacing(2_000, 0), Duration::ZERO);
    }
}
