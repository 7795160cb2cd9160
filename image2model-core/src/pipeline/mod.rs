//! The job pipeline: submit uploads, follow jobs, fetch models; and the
//! [`Worker`] that turns queued items into models.
//!
//! A job flows one way: [`Pipeline::begin_upload`] (or [`Pipeline::submit`])
//! validates and stores each image as it streams in, then creates the job in
//! the [`JobStore`]; a [`Worker`] claims its items under leases, runs the
//! [`ModelGenerator`](crate::ports::ModelGenerator), validates and stores the
//! GLB in the [`BlobStore`] and records the outcome; [`Pipeline::subscribe`]
//! streams the job's progress; [`Pipeline::model`] streams the stored result;
//! [`Pipeline::remove_older_than`] applies retention (module [`retention`]).

mod error;
mod events;
mod generators;
pub mod retention;
mod upload;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use error::{BodyLimitError, ErrorKind, PipelineError};
pub use events::{MAX_FOLLOWED, OwnerEvent};
pub use generators::Generators;
pub use retention::{RetentionReport, StorageUsage};
pub use upload::{SubmitOptions, Upload, UploadStart};
pub use worker::{Worker, WorkerConfig, available_cores};

use crate::domain::{
    ApiKeyId, BlobKey, ImageKind, Item, ItemId, ItemStatus, Job, JobId, PriceTable,
};
use crate::ports::{
    BlobObject, BlobStore, GeneratorHealth, JobPage, JobStore, ListQuery, ModelInfo, QueueStats,
    bytes_stream,
};
use crate::validate::UploadLimits;

use events::EventHub;

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Upload bounds.
    pub limits: UploadLimits,
    /// How often event subscribers re-read a job when no in-process change was
    /// announced (changes made by workers in other processes).
    pub event_poll_interval: Duration,
    /// The largest model file accepted from a generator.
    pub max_model_bytes: u64,
    /// The longest one item's generation may take.
    pub generation_deadline: Duration,
    /// Estimated prices per item, by model: what per-key spend limits count.
    /// Empty by default (every model free);
    /// [`crate::generators::fal::default_prices`] has fal's public prices.
    pub prices: PriceTable,
    /// Backpressure: beyond this many queued items (waiting for a worker,
    /// across every process on the job store), uploads are refused with
    /// [`PipelineError::Overloaded`] instead of growing the queue without
    /// bound. `None`: no cap.
    pub max_queued_items: Option<u64>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            limits: UploadLimits::default(),
            event_poll_interval: Duration::from_secs(1),
            max_model_bytes: 200 * 1024 * 1024,
            generation_deadline: Duration::from_secs(15 * 60),
            prices: PriceTable::new(),
            max_queued_items: None,
        }
    }
}

/// How long a count of queued items is trusted before the store is asked
/// again (items this process queues are added to it meanwhile).
const QUEUE_COUNT_TTL: Duration = Duration::from_millis(500);

/// The queued items as last counted, plus those this process queued since.
#[derive(Debug, Default)]
pub(crate) struct QueueCount {
    counted_at: Option<Instant>,
    queued: u64,
}

/// Whose jobs a call may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only jobs created by this key.
    Owner(ApiKeyId),
    /// Every job (admin).
    Any,
}

impl Scope {
    fn allows(&self, job: &Job) -> bool {
        match self {
            Scope::Owner(key) => &job.owner == key,
            Scope::Any => true,
        }
    }

    fn owner(&self) -> Option<ApiKeyId> {
        match self {
            Scope::Owner(key) => Some(key.clone()),
            Scope::Any => None,
        }
    }
}

/// What [`Pipeline::cancel_or_delete`] did.
#[derive(Debug, Clone)]
pub enum Removal {
    /// The job was running: it is cancelled (its files are kept until deleted).
    Cancelled(Job),
    /// The job had ended: it and its files are gone.
    Deleted(Job),
}

/// A stored preview image.
#[derive(Debug)]
pub struct Preview {
    /// Its kind.
    pub kind: ImageKind,
    /// Its bytes.
    pub object: BlobObject,
}

/// Health of the pipeline's dependencies.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// Whether the job store answered, and how fast.
    pub job_store: DependencyHealth,
    /// Whether the blob store answered, and how fast.
    pub blob_store: DependencyHealth,
    /// Queue figures (zero when the job store is down).
    pub queue: QueueFigures,
    /// Each generator's state.
    pub generators: Vec<GeneratorState>,
}

impl HealthReport {
    /// Whether both stores answered.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.job_store.ok && self.blob_store.ok
    }
}

/// One dependency's health.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyHealth {
    /// Whether it answered.
    pub ok: bool,
    /// Round-trip time in milliseconds.
    pub latency_ms: f64,
    /// The error code when it did not answer.
    pub error: Option<String>,
}

/// Queue figures.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct QueueFigures {
    /// Items waiting.
    pub queued: u64,
    /// Items being generated.
    pub running: u64,
    /// Jobs stored.
    pub jobs: u64,
}

impl From<QueueStats> for QueueFigures {
    fn from(s: QueueStats) -> Self {
        Self {
            queued: s.queued,
            running: s.running,
            jobs: s.jobs,
        }
    }
}

/// A generator's state.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorState {
    /// Its name.
    pub name: String,
    /// Its health.
    pub health: GeneratorHealth,
}

pub(crate) struct Inner {
    pub(crate) jobs: Arc<dyn JobStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) generators: Generators,
    pub(crate) config: PipelineConfig,
    pub(crate) events: EventHub,
    /// Wakes idle workers of this process when a job is created.
    pub(crate) work: Notify,
    /// Cancellation handles of the items this process is generating, so that a
    /// cancel takes effect at once (workers elsewhere notice at lease renewal).
    pub(crate) running: Mutex<HashMap<ItemId, CancellationToken>>,
    /// For [`PipelineConfig::max_queued_items`].
    pub(crate) queue_count: Mutex<QueueCount>,
}

/// The conversion pipeline. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("jobs", &self.inner.jobs)
            .field("blobs", &self.inner.blobs.describe())
            .field("generators", &self.inner.generators)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline over these stores and generators.
    #[must_use]
    pub fn new(
        jobs: Arc<dyn JobStore>,
        blobs: Arc<dyn BlobStore>,
        generators: Generators,
        config: PipelineConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                jobs,
                blobs,
                generators,
                config,
                events: EventHub::new(),
                work: Notify::new(),
                running: Mutex::new(HashMap::new()),
                queue_count: Mutex::new(QueueCount::default()),
            }),
        }
    }

    /// The upload bounds.
    #[must_use]
    pub fn limits(&self) -> &UploadLimits {
        &self.inner.config.limits
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &PipelineConfig {
        &self.inner.config
    }

    /// The generators.
    #[must_use]
    pub fn generators(&self) -> &Generators {
        &self.inner.generators
    }

    /// Every model offered.
    #[must_use]
    pub fn models(&self) -> Vec<ModelInfo> {
        self.inner.generators.models()
    }

    /// The job store.
    #[must_use]
    pub fn job_store(&self) -> &Arc<dyn JobStore> {
        &self.inner.jobs
    }

    /// The blob store.
    #[must_use]
    pub fn blob_store(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// A worker for this pipeline.
    #[must_use]
    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(self.clone(), config)
    }

    /// Submits images already in memory: validates them all, stores them and
    /// creates the job. A rejected file stores nothing and creates no job.
    ///
    /// # Errors
    /// Validation, option and store errors; see [`PipelineError::code`].
    pub async fn submit(
        &self,
        owner: &ApiKeyId,
        files: Vec<(String, Bytes)>,
        options: SubmitOptions,
    ) -> Result<Job, PipelineError> {
        let mut upload = match self
            .begin_upload(owner.clone(), options.idempotency_key.clone())
            .await?
        {
            UploadStart::Existing(job) => return Ok(job),
            UploadStart::New(upload) => upload,
        };
        for (name, bytes) in files {
            upload.add_file(&name, bytes_stream(bytes)).await?;
        }
        upload.commit(options).await
    }

    /// Starts a streamed upload for `owner`. With an idempotency key the owner
    /// already used, returns that job instead (the body need not be read).
    ///
    /// # Errors
    /// [`PipelineError::InvalidIdempotencyKey`], store errors.
    pub async fn begin_upload(
        &self,
        owner: ApiKeyId,
        idempotency_key: Option<String>,
    ) -> Result<UploadStart, PipelineError> {
        if let Some(key) = &idempotency_key {
            upload::check_idempotency_key(key)?;
            if let Some(job) = self.inner.jobs.find_by_idempotency_key(&owner, key).await? {
                return Ok(UploadStart::Existing(job));
            }
        }
        self.check_queue_room().await?;
        Ok(UploadStart::New(Upload::new(
            self.clone(),
            owner,
            idempotency_key,
        )))
    }

    /// Refuses new work while the queue holds
    /// [`PipelineConfig::max_queued_items`] items or more: counted by the
    /// store at most [`QUEUE_COUNT_TTL`] ago, plus what this process queued
    /// since.
    async fn check_queue_room(&self) -> Result<(), PipelineError> {
        let Some(limit) = self.inner.config.max_queued_items else {
            return Ok(());
        };
        let fresh = {
            let count = self.inner.queue_count.lock().expect("queue count lock");
            count
                .counted_at
                .is_some_and(|at| at.elapsed() < QUEUE_COUNT_TTL)
                .then_some(count.queued)
        };
        let queued = match fresh {
            Some(q) => q,
            None => {
                let q = self.inner.jobs.stats().await?.queued;
                let mut count = self.inner.queue_count.lock().expect("queue count lock");
                *count = QueueCount {
                    counted_at: Some(Instant::now()),
                    queued: q,
                };
                q
            }
        };
        if queued >= limit {
            metrics::counter!("image2model_uploads_total", "outcome" => "overloaded").increment(1);
            return Err(PipelineError::Overloaded { queued, limit });
        }
        Ok(())
    }

    /// Counts `items` just queued by this process toward the queue cap.
    pub(crate) fn note_queued(&self, items: u64) {
        let mut count = self.inner.queue_count.lock().expect("queue count lock");
        count.queued = count.queued.saturating_add(items);
    }

    /// One job, when `scope` may see it.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`] for a missing job or another owner's.
    pub async fn job(&self, id: JobId, scope: &Scope) -> Result<Job, PipelineError> {
        match self.inner.jobs.get_job(id).await? {
            Some(job) if scope.allows(&job) => Ok(job),
            _ => Err(PipelineError::NotFound),
        }
    }

    /// Jobs newest first, `limit` clamped to `1..=100`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_jobs(
        &self,
        scope: &Scope,
        limit: u32,
        cursor: Option<JobId>,
    ) -> Result<JobPage, PipelineError> {
        let query = ListQuery {
            owner: scope.owner(),
            limit: limit.clamp(1, 100),
            cursor,
            active_only: false,
        };
        Ok(self.inner.jobs.list_jobs(&query).await?)
    }

    /// A stream of the job's states: the current one, then each change, ending
    /// after a terminal state.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`] as for [`Pipeline::job`].
    pub async fn subscribe(
        &self,
        id: JobId,
        scope: &Scope,
    ) -> Result<impl Stream<Item = Job> + Send + 'static, PipelineError> {
        // Followed before the read, so that a change right after it is seen.
        let follow = self.inner.events.follow(id);
        let job = self.job(id, scope).await?;
        Ok(events::job_events(
            self.clone(),
            follow,
            job,
            self.inner.config.event_poll_interval,
        ))
    }

    /// A stream of all of `owner`'s jobs (see [`OwnerEvent`]): the current
    /// state of each job that has not ended, [`OwnerEvent::Synced`], then
    /// every change of those jobs and of jobs created later, each job's
    /// last event being its terminal state (or [`OwnerEvent::Deleted`]).
    /// It never ends by itself; drop it to stop. Changes made in this
    /// process are seen at once, other processes' within
    /// [`PipelineConfig::event_poll_interval`].
    pub fn subscribe_owner(
        &self,
        owner: ApiKeyId,
    ) -> impl Stream<Item = OwnerEvent> + Send + 'static {
        events::owner_events(self.clone(), owner, self.inner.config.event_poll_interval)
    }

    /// Cancels a job that has not ended (its running remote requests are
    /// cancelled too), or deletes one that has, with its files.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`], store errors.
    pub async fn cancel_or_delete(
        &self,
        id: JobId,
        scope: &Scope,
    ) -> Result<Removal, PipelineError> {
        let job = self.job(id, scope).await?;
        if job.status.is_terminal() {
            Ok(Removal::Deleted(self.delete(id, scope).await?))
        } else {
            Ok(Removal::Cancelled(self.cancel(id, scope).await?))
        }
    }

    /// Cancels a job: queued items will not run, running ones are stopped.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`], store errors.
    pub async fn cancel(&self, id: JobId, scope: &Scope) -> Result<Job, PipelineError> {
        let before = self.job(id, scope).await?;
        let job = self
            .inner
            .jobs
            .cancel_job(id)
            .await?
            .ok_or(PipelineError::NotFound)?;
        {
            let running = self.inner.running.lock().expect("running lock");
            for item in &before.items {
                if let Some(token) = running.get(&item.item_id) {
                    token.cancel();
                }
            }
        }
        tracing::info!(job_id = %id, "job cancelled");
        self.inner.events.notify(id);
        Ok(job)
    }

    /// Deletes a job and its files, cancelling it first if it is running.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`], store errors.
    pub async fn delete(&self, id: JobId, scope: &Scope) -> Result<Job, PipelineError> {
        let job = self.job(id, scope).await?;
        if !job.status.is_terminal() {
            self.cancel(id, scope).await?;
        }
        let job = self
            .inner
            .jobs
            .delete_job(id)
            .await?
            .ok_or(PipelineError::NotFound)?;
        self.delete_files(&job).await;
        tracing::info!(job_id = %id, "job deleted");
        self.inner.events.notify(id);
        Ok(job)
    }

    /// Removes a job's blobs; failures are logged (retention retries
    /// orphans), since the job itself is already gone.
    pub(crate) async fn delete_files(&self, job: &Job) {
        for item in &job.items {
            let keys = [
                Some(&item.upload_key),
                item.model_key.as_ref(),
                item.preview_key.as_ref(),
            ];
            for key in keys.into_iter().flatten() {
                if let Err(e) = self.inner.blobs.delete(key).await {
                    tracing::warn!(job_id = %job.job_id, key = %key, error = %e, "could not delete blob");
                }
            }
        }
    }

    fn succeeded_item(job: &Job, item_id: ItemId) -> Result<&Item, PipelineError> {
        let item = job.item(item_id).ok_or(PipelineError::NotFound)?;
        if item.status != ItemStatus::Succeeded {
            return Err(PipelineError::ModelNotReady(item.status.as_str()));
        }
        Ok(item)
    }

    /// The stored model of a succeeded item, streamed.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`] (job, item or blob), [`PipelineError::ModelNotReady`].
    pub async fn model(
        &self,
        id: JobId,
        item_id: ItemId,
        scope: &Scope,
    ) -> Result<(Item, BlobObject), PipelineError> {
        let job = self.job(id, scope).await?;
        let item = Self::succeeded_item(&job, item_id)?;
        let key = item
            .model_key
            .as_ref()
            .ok_or(PipelineError::ModelNotReady("succeeded"))?;
        let object = self.inner.blobs.get(key).await?;
        Ok((item.clone(), object))
    }

    /// The stored preview image of a succeeded item, streamed.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`] also when the generator made no preview.
    pub async fn preview(
        &self,
        id: JobId,
        item_id: ItemId,
        scope: &Scope,
    ) -> Result<(Item, Preview), PipelineError> {
        let job = self.job(id, scope).await?;
        let item = Self::succeeded_item(&job, item_id)?;
        let key = item.preview_key.as_ref().ok_or(PipelineError::NotFound)?;
        let kind = preview_kind(key).ok_or(PipelineError::NotFound)?;
        let object = self.inner.blobs.get(key).await?;
        Ok((item.clone(), Preview { kind, object }))
    }

    /// The uploaded image of an item, streamed.
    ///
    /// # Errors
    /// [`PipelineError::NotFound`].
    pub async fn image(
        &self,
        id: JobId,
        item_id: ItemId,
        scope: &Scope,
    ) -> Result<(Item, BlobObject), PipelineError> {
        let job = self.job(id, scope).await?;
        let item = job.item(item_id).ok_or(PipelineError::NotFound)?.clone();
        let object = self.inner.blobs.get(&item.upload_key).await?;
        Ok((item, object))
    }

    /// Pings both stores and reads queue figures and generator states.
    pub async fn health(&self) -> HealthReport {
        let t = Instant::now();
        let job_store = match self.inner.jobs.ping().await {
            Ok(()) => DependencyHealth {
                ok: true,
                latency_ms: ms(t),
                error: None,
            },
            Err(e) => DependencyHealth {
                ok: false,
                latency_ms: ms(t),
                error: Some(e.code().to_owned()),
            },
        };
        let t = Instant::now();
        let blob_store = match self.inner.blobs.ping().await {
            Ok(()) => DependencyHealth {
                ok: true,
                latency_ms: ms(t),
                error: None,
            },
            Err(e) => DependencyHealth {
                ok: false,
                latency_ms: ms(t),
                error: Some(e.code().to_owned()),
            },
        };
        let queue = if job_store.ok {
            self.inner
                .jobs
                .stats()
                .await
                .map(Into::into)
                .unwrap_or_default()
        } else {
            QueueFigures::default()
        };
        let generators = self
            .inner
            .generators
            .health()
            .into_iter()
            .map(|(name, health)| GeneratorState { name, health })
            .collect();
        HealthReport {
            job_store,
            blob_store,
            queue,
            generators,
        }
    }

    pub(crate) fn notify(&self, job: JobId) {
        self.inner.events.notify(job);
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn preview_kind(key: &BlobKey) -> Option<ImageKind> {
    let ext = key.as_str().rsplit('.').next()?;
    ImageKind::ALL.into_iter().find(|k| k.extension() == ext)
}
