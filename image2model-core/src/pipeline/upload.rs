//! Streamed uploads: each file is validated while it is stored; the job is
//! created only when every file passed, and a failed upload leaves nothing.

use crate::domain::{
    ApiKeyId, BlobKey, CallbackUrl, Charge, DisplayName, FaceLimit, GenerateOptions, ItemId, Job,
    JobId, KeyLimits, ModelName, NewCallback, Periods, Texture, Usage,
};
use crate::ports::{ByteStream, CreateOutcome, NewItem, NewJob};
use crate::validate::{FileInspector, ValidationError, inspect_stream, sniff};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// Bytes needed to sniff every accepted type.
const SNIFF_BYTES: usize = 12;

/// Reads at least `n` bytes (fewer if the body is shorter) and returns them with
/// the rest of the body.
async fn read_prefix(mut body: ByteStream, n: usize) -> std::io::Result<(Bytes, ByteStream)> {
    let mut prefix = BytesMut::new();
    while prefix.len() < n {
        match body.next().await {
            Some(chunk) => prefix.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok((prefix.freeze(), body))
}

use super::{Pipeline, PipelineError};

/// What the client chose for a job.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// The model; the pipeline's default when `None`.
    pub model: Option<ModelName>,
    /// The face limit, when any.
    pub face_limit: Option<FaceLimit>,
    /// Texture quality; `standard` when `None`.
    pub texture: Option<Texture>,
    /// Makes retried submissions return the first job instead of a new one.
    pub idempotency_key: Option<String>,
    /// Where the job's end is posted (a signed webhook), written with the
    /// job; the job store must keep callbacks ([`crate::ports::JobStore::callbacks`]).
    pub callback: Option<CallbackUrl>,
}

/// How [`Pipeline::begin_upload`] started.
#[derive(Debug)]
pub enum UploadStart {
    /// The owner already submitted with this idempotency key: its job.
    Existing(Job),
    /// A new upload, ready for files.
    New(Upload),
}

pub(super) fn check_idempotency_key(key: &str) -> Result<(), PipelineError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PipelineError::InvalidIdempotencyKey);
    }
    Ok(())
}

/// An upload in progress: add files one by one as they stream in, then
/// [`commit`](Upload::commit). Every error, and dropping it uncommitted,
/// removes the files already stored.
#[derive(Debug)]
pub struct Upload {
    pipeline: Pipeline,
    owner: ApiKeyId,
    idempotency_key: Option<String>,
    job_id: JobId,
    items: Vec<NewItem>,
    bytes: u64,
    finished: bool,
    /// Set by [`Upload::charge_owner`]: the job is counted in its owner's
    /// usage and checked against these limits.
    charge: Option<Charging>,
}

/// How an upload is charged to its owner.
#[derive(Debug)]
struct Charging {
    limits: KeyLimits,
    periods: Periods,
    /// The model as far as known (for the check before each file).
    model: Option<ModelName>,
    /// The owner's counts, read before the first file when limits are set.
    usage: Option<Usage>,
}

impl Upload {
    pub(super) fn new(
        pipeline: Pipeline,
        owner: ApiKeyId,
        idempotency_key: Option<String>,
    ) -> Self {
        Self {
            pipeline,
            owner,
            idempotency_key,
            job_id: JobId::new(),
            items: Vec::new(),
            bytes: 0,
            finished: false,
            charge: None,
        }
    }

    /// Counts the job in its owner's usage (items, estimated spend by the
    /// pipeline's price table) and refuses it with
    /// [`PipelineError::QuotaExceeded`] when it would pass `limits`: before
    /// each file is stored when the files so far already would, and
    /// exactly, in the job's own transaction, at [`commit`](Self::commit).
    pub fn charge_owner(&mut self, limits: KeyLimits) {
        self.charge = Some(Charging {
            limits,
            periods: Periods::at(chrono::Utc::now()),
            model: None,
            usage: None,
        });
    }

    /// The model the job will use, when known before its files (it makes
    /// the check before each file exact for spend limits; without it the
    /// default model's price is assumed until the commit).
    pub fn note_model(&mut self, model: ModelName) {
        if let Some(charge) = &mut self.charge {
            charge.model = Some(model);
        }
    }

    /// The model, as given or the default.
    fn model_or_default(&self, model: Option<&ModelName>) -> ModelName {
        model
            .cloned()
            .unwrap_or_else(|| self.pipeline.generators().default_model().clone())
    }

    /// Refuses one more file when the files so far and it would pass the
    /// owner's limits.
    async fn check_quota_before_file(&mut self) -> Result<(), PipelineError> {
        let Some(charge) = &self.charge else {
            return Ok(());
        };
        if !charge.limits.any() {
            return Ok(());
        }
        let usage = match charge.usage {
            Some(usage) => usage,
            None => {
                let usage = self
                    .pipeline
                    .job_store()
                    .usage(&self.owner, charge.periods)
                    .await?;
                if let Some(c) = &mut self.charge {
                    c.usage = Some(usage);
                }
                usage
            }
        };
        let charge = self.charge.as_ref().expect("checked above");
        let items = self.items.len() as u64 + 1;
        let model = self.model_or_default(charge.model.as_ref());
        let spend = self.pipeline.config().prices.cost(&model, items);
        match charge.limits.check(&usage, items, spend) {
            Some(over) => Err(PipelineError::QuotaExceeded(over)),
            None => Ok(()),
        }
    }

    /// The id the job will have.
    #[must_use]
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// How many files were accepted so far.
    #[must_use]
    pub fn file_count(&self) -> usize {
        self.items.len()
    }

    /// Validates `body` while storing it. On error the whole upload is
    /// aborted: every file stored so far is removed.
    ///
    /// # Errors
    /// A [`ValidationError`] (as [`PipelineError::Validation`]), an interrupted
    /// body, or a blob store error.
    pub async fn add_file(
        &mut self,
        filename: &str,
        body: ByteStream,
    ) -> Result<(), PipelineError> {
        let result = self.store_file(filename, body).await;
        if let Err(e) = &result {
            metrics::counter!("image2model_uploads_total", "outcome" => e.code()).increment(1);
            self.discard().await;
        }
        result
    }

    async fn store_file(&mut self, filename: &str, body: ByteStream) -> Result<(), PipelineError> {
        let limits = *self.pipeline.limits();
        if self.items.len() >= limits.max_files {
            return Err(ValidationError::TooManyFiles {
                max: limits.max_files,
            }
            .into());
        }
        self.check_quota_before_file().await?;
        let item_id = ItemId::new();
        // The key's extension comes from the type, so read just enough of the
        // body to sniff it; the inspector re-checks everything while storing.
        let (prefix, rest) = read_prefix(body, SNIFF_BYTES)
            .await
            .map_err(|e| PipelineError::from(crate::ports::BlobError::Body(e)))?;
        let kind = match sniff(&prefix) {
            Some(kind) => kind,
            None if prefix.is_empty() => return Err(ValidationError::EmptyFile.into()),
            None => return Err(ValidationError::UnsupportedType.into()),
        };
        let key = BlobKey::upload(self.job_id, item_id, kind);
        let body = futures::stream::once(async move { Ok(prefix) })
            .chain(rest)
            .boxed();
        let (stream, verdict) = inspect_stream(body, FileInspector::new(limits, self.bytes));
        let blobs = self.pipeline.blob_store().clone();
        blobs.put(&key, stream).await?;
        let file = match verdict.get() {
            Some(Ok(file)) => file,
            other => {
                let _ = blobs.delete(&key).await;
                return Err(match other {
                    Some(Err(e)) => e.into(),
                    _ => PipelineError::Interrupted("the file ended early".into()),
                });
            }
        };
        self.bytes += file.size;
        metrics::counter!("image2model_upload_bytes_total").increment(file.size);
        self.items.push(NewItem {
            item_id,
            filename: DisplayName::sanitize(filename),
            content_type: file.kind,
            size_bytes: file.size,
            width: file.width,
            height: file.height,
            upload_key: key,
        });
        Ok(())
    }

    /// Creates the job from the files added.
    ///
    /// # Errors
    /// [`ValidationError::NoFiles`], [`PipelineError::UnknownModel`], store errors;
    /// on any error the stored files are removed.
    pub async fn commit(mut self, options: SubmitOptions) -> Result<Job, PipelineError> {
        let result = self.create(options).await;
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(e) => e.code(),
        };
        metrics::counter!("image2model_uploads_total", "outcome" => outcome).increment(1);
        if result.is_err() {
            self.discard().await;
        }
        self.finished = true;
        result
    }

    async fn create(&mut self, options: SubmitOptions) -> Result<Job, PipelineError> {
        if self.items.is_empty() {
            return Err(ValidationError::NoFiles.into());
        }
        let generators = self.pipeline.generators();
        let model = options
            .model
            .unwrap_or_else(|| generators.default_model().clone());
        if generators.resolve(&model).is_none() {
            return Err(PipelineError::UnknownModel(model));
        }
        let charge = self.charge.as_ref().map(|c| {
            let items = self.items.len() as u64;
            Charge {
                periods: c.periods,
                items,
                spend: self.pipeline.config().prices.cost(&model, items),
                limits: c.limits,
            }
        });
        let new = NewJob {
            job_id: self.job_id,
            owner: self.owner.clone(),
            options: GenerateOptions {
                model,
                face_limit: options.face_limit,
                texture: options.texture.unwrap_or_default(),
            },
            idempotency_key: self.idempotency_key.clone(),
            items: std::mem::take(&mut self.items),
            charge,
            callback: options.callback.map(NewCallback::to),
        };
        let items = new.items.clone();
        match self.pipeline.job_store().create_job(new).await {
            Ok(CreateOutcome::Created(job)) => {
                tracing::info!(job_id = %job.job_id, owner = %job.owner, items = job.items.len(), model = %job.options.model, "job created");
                self.pipeline.notify(job.job_id);
                self.pipeline.note_queued(job.items.len() as u64);
                self.pipeline.inner.work.notify_waiters();
                Ok(job)
            }
            Ok(CreateOutcome::Existing(job)) => {
                // A concurrent submission with the same key won: ours is surplus.
                self.items = items;
                self.discard().await;
                Ok(job)
            }
            Ok(CreateOutcome::OverQuota(over)) => {
                self.items = items;
                tracing::info!(owner = %self.owner, limit = over.limit.as_str(), "upload refused: over quota");
                Err(PipelineError::QuotaExceeded(over))
            }
            Err(e) => {
                self.items = items;
                Err(e.into())
            }
        }
    }

    /// Abandons the upload, removing the files stored so far.
    pub async fn abort(mut self) {
        self.discard().await;
        self.finished = true;
    }

    async fn discard(&mut self) {
        let blobs = self.pipeline.blob_store();
        for item in self.items.drain(..) {
            if let Err(e) = blobs.delete(&item.upload_key).await {
                tracing::warn!(key = %item.upload_key, error = %e, "could not remove a rejected upload's file");
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished || self.items.is_empty() {
            return;
        }
        // Dropped mid-upload (e.g. the client went away): remove its files.
        let keys: Vec<BlobKey> = self.items.drain(..).map(|i| i.upload_key).collect();
        let blobs = self.pipeline.blob_store().clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for key in keys {
                    let _ = blobs.delete(&key).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::domain::BlobPrefix;
    use crate::memory::MemoryBlobStore;
    use crate::ports::{BlobStore, MockJobStore, StoreError};
    use crate::testing::generators::{Script, ScriptedGenerator, minimal_glb};
    use crate::testing::images;
    use crate::{Generators, PipelineConfig};

    fn pipeline(jobs: MockJobStore, blobs: Arc<MemoryBlobStore>) -> Pipeline {
        let generator = Arc::new(ScriptedGenerator::new(
            "scripted",
            Script::Succeed(minimal_glb()),
        ));
        Pipeline::new(
            Arc::new(jobs),
            blobs,
            Generators::new(vec![generator]).unwrap(),
            PipelineConfig::default(),
        )
    }

    #[tokio::test]
    async fn a_store_failure_at_commit_removes_the_stored_images() {
        let mut jobs = MockJobStore::new();
        jobs.expect_create_job()
            .times(1)
            .returning(|_| Err(StoreError::Unavailable("db down".into())));
        let blobs = Arc::new(MemoryBlobStore::default());
        let p = pipeline(jobs, blobs.clone());
        let files = vec![("a.png".to_owned(), Bytes::from(images::png(8, 8)))];
        let err = p
            .submit(&ApiKeyId::bootstrap_user(), files, SubmitOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "store_unavailable");
        assert!(blobs.list(&BlobPrefix::root()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_upload_removes_its_files() {
        let jobs = MockJobStore::new();
        let blobs = Arc::new(MemoryBlobStore::default());
        let p = pipeline(jobs, blobs.clone());
        let UploadStart::New(mut upload) = p
            .begin_upload(ApiKeyId::bootstrap_user(), None)
            .await
            .unwrap()
        else {
            panic!("no idempotency key, so a new upload");
        };
        upload
            .add_file(
                "a.png",
                crate::ports::bytes_stream(images::png(8, 8).into()),
            )
            .await
            .unwrap();
        assert_eq!(blobs.list(&BlobPrefix::root()).await.unwrap().len(), 1);
        drop(upload);
        for _ in 0..100 {
            if blobs.list(&BlobPrefix::root()).await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the dropped upload's file was not removed");
    }
}
