//! Retention: which stored things are old enough to remove, and in which
//! order. The server only schedules [`Pipeline::remove_older_than`] and
//! audits what it reports; the rules live here.
//!
//! What counts:
//! - **jobs**: ended jobs (`succeeded`, `partial`, `failed`, `cancelled`)
//!   last updated before the cutoff, removed through [`Pipeline::delete`]
//!   with their uploads, models and previews. Queued and running jobs are
//!   never touched, however old.
//! - **orphan files**: objects in the blob store's [`area`]s written before
//!   the cutoff whose job ([`BlobKey::job`]) has no row: left by a crash
//!   between storing and recording, or by a failed delete. Objects whose key
//!   names no job are left alone. The cutoff for orphans is at least
//!   [`ORPHAN_MIN_AGE`] back, so an upload in flight (stored before its job
//!   row is written) is never taken for an orphan. Counted with them: the
//!   partial writes of a process killed mid-upload that the blob store
//!   keeps out of its listing (a local store's staged files), swept by
//!   [`BlobStore::sweep_abandoned`](crate::ports::BlobStore::sweep_abandoned)
//!   under the same age rule.
//!
//! The order: the areas are listed first, so a file written while a run goes
//! on is not considered by it; then ended jobs are removed (at most
//! [`MAX_JOBS_PER_RUN`], oldest first); then orphans, asking the job store
//! once per job id.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};

use super::{Pipeline, PipelineError, Scope};
use crate::domain::{BlobKey, BlobPrefix, JobId, area};
use crate::ports::{BlobMeta, Usage};

/// The most jobs one run removes; the rest wait for the next run.
pub const MAX_JOBS_PER_RUN: u32 = 5000;

/// A file without a job is removed only when at least this old.
pub const ORPHAN_MIN_AGE: Duration = Duration::hours(1);

/// What a run removed, or would remove in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whether nothing was actually removed.
    pub dry_run: bool,
    /// Things last changed before this time were candidates.
    pub cutoff: DateTime<Utc>,
    /// The ended jobs removed, oldest first.
    pub jobs: Vec<JobId>,
    /// The stored files of those jobs.
    pub job_files: Usage,
    /// Files without a job.
    pub orphan_files: Usage,
    /// Whether more jobs qualified than one run removes
    /// ([`MAX_JOBS_PER_RUN`]).
    pub truncated: bool,
}

/// Bytes and objects in each area of the blob store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageUsage {
    /// Uploaded images.
    pub uploads: Usage,
    /// Generated models.
    pub models: Usage,
    /// Previews of generated models.
    pub previews: Usage,
}

impl StorageUsage {
    /// The three areas together.
    #[must_use]
    pub fn total(&self) -> Usage {
        Usage {
            bytes: self.uploads.bytes + self.models.bytes + self.previews.bytes,
            objects: self.uploads.objects + self.models.objects + self.previews.objects,
        }
    }
}

fn add(usage: &mut Usage, meta: &BlobMeta) {
    usage.objects += 1;
    usage.bytes += meta.size;
}

impl Pipeline {
    /// Bytes and objects in each area of the blob store.
    ///
    /// # Errors
    /// Blob store failures.
    pub async fn storage_usage(&self) -> Result<StorageUsage, PipelineError> {
        let blobs = &self.inner.blobs;
        let mut areas = [Usage::default(); 3];
        for (slot, name) in areas.iter_mut().zip(area::ALL) {
            *slot = blobs.usage(&BlobPrefix::area(name)).await?;
        }
        let [uploads, models, previews] = areas;
        Ok(StorageUsage {
            uploads,
            models,
            previews,
        })
    }

    /// Removes (or with `dry_run` only reports) ended jobs last updated more
    /// than `age` ago with their files, and orphan files older than that (and
    /// at least [`ORPHAN_MIN_AGE`]); see the module documentation of
    /// `retention` for the rules. A file that fails to delete is logged and
    /// counted with its job (the next run retries orphans).
    ///
    /// # Errors
    /// Job store or blob store failures before anything is decided; a job
    /// that fails to be removed is logged and left for the next run.
    pub async fn remove_older_than(
        &self,
        age: Duration,
        dry_run: bool,
    ) -> Result<RetentionReport, PipelineError> {
        self.remove_as_of(Utc::now(), age, dry_run).await
    }

    async fn remove_as_of(
        &self,
        now: DateTime<Utc>,
        age: Duration,
        dry_run: bool,
    ) -> Result<RetentionReport, PipelineError> {
        let cutoff = now
            .checked_sub_signed(age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let orphan_cutoff = cutoff.min(now - ORPHAN_MIN_AGE);
        let blobs = &self.inner.blobs;
        let mut files: BTreeMap<BlobKey, BlobMeta> = BTreeMap::new();
        for name in area::ALL {
            for meta in blobs.list(&BlobPrefix::area(name)).await? {
                files.insert(meta.key.clone(), meta);
            }
        }

        let ended = self
            .inner
            .jobs
            .ended_jobs_before(cutoff, MAX_JOBS_PER_RUN)
            .await?;
        let mut report = RetentionReport {
            dry_run,
            cutoff,
            truncated: ended.len() >= MAX_JOBS_PER_RUN as usize,
            jobs: Vec::with_capacity(ended.len()),
            job_files: Usage::default(),
            orphan_files: Usage::default(),
        };
        for job in ended {
            if !dry_run {
                match self.delete(job.job_id, &Scope::Any).await {
                    Ok(_) | Err(PipelineError::NotFound) => {}
                    Err(e) => {
                        tracing::warn!(job_id = %job.job_id, error = %e, "retention could not remove a job");
                        continue;
                    }
                }
            }
            for key in job.items.iter().flat_map(|item| {
                [
                    Some(&item.upload_key),
                    item.model_key.as_ref(),
                    item.preview_key.as_ref(),
                ]
            }) {
                if let Some(meta) = key.and_then(|key| files.remove(key)) {
                    add(&mut report.job_files, &meta);
                }
            }
            report.jobs.push(job.job_id);
        }

        let mut exists: HashMap<JobId, bool> = HashMap::new();
        for (key, meta) in &files {
            if meta.last_modified >= orphan_cutoff {
                continue;
            }
            let Some(job_id) = key.job() else { continue };
            let alive = match exists.get(&job_id) {
                Some(alive) => *alive,
                None => {
                    let alive = self.inner.jobs.get_job(job_id).await?.is_some();
                    exists.insert(job_id, alive);
                    alive
                }
            };
            if alive {
                continue;
            }
            if !dry_run && let Err(e) = blobs.delete(key).await {
                tracing::warn!(key = %key, error = %e, "retention could not remove an orphan file");
                continue;
            }
            add(&mut report.orphan_files, meta);
        }
        // What writers killed mid-put left (staged files no list shows),
        // under the same age rule as orphans.
        match blobs.sweep_abandoned(orphan_cutoff, dry_run).await {
            Ok(swept) => {
                report.orphan_files.objects += swept.objects;
                report.orphan_files.bytes += swept.bytes;
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention could not sweep abandoned staged files");
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::domain::{ApiKeyId, ItemId, JobStatus};
    use crate::memory::{MemoryBlobStore, MemoryJobStore};
    use crate::ports::{BlobStore, bytes_stream};
    use crate::testing::generators::{Script, ScriptedGenerator, minimal_glb};
    use crate::testing::images;
    use crate::{Generators, PipelineConfig, SubmitOptions};

    struct Setup {
        pipeline: Pipeline,
        blobs: Arc<MemoryBlobStore>,
    }

    fn setup() -> Setup {
        let blobs = Arc::new(MemoryBlobStore::default());
        let generator = Arc::new(ScriptedGenerator::new(
            "scripted",
            Script::Succeed(minimal_glb()),
        ));
        let pipeline = Pipeline::new(
            Arc::new(MemoryJobStore::default()),
            blobs.clone(),
            Generators::new(vec![generator]).unwrap(),
            PipelineConfig::default(),
        );
        Setup { pipeline, blobs }
    }

    async fn job(p: &Pipeline) -> JobId {
        let files = vec![("a.png".to_owned(), Bytes::from(images::png(8, 8)))];
        p.submit(&ApiKeyId::bootstrap_user(), files, SubmitOptions::default())
            .await
            .unwrap()
            .job_id
    }

    async fn put(blobs: &MemoryBlobStore, key: &BlobKey) {
        blobs
            .put(key, bytes_stream(Bytes::from_static(b"12345")))
            .await
            .unwrap();
    }

    async fn keys(blobs: &MemoryBlobStore) -> Vec<BlobKey> {
        let mut keys: Vec<BlobKey> = blobs
            .list(&BlobPrefix::root())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        keys.sort();
        keys
    }

    /// An ended job, a queued one, an orphan and a file that names no job,
    /// all written now; then retention as of two hours later.
    async fn scene(s: &Setup) -> (JobId, JobId, BlobKey, BlobKey) {
        let p = &s.pipeline;
        let ended = job(p).await;
        p.cancel(ended, &Scope::Any).await.unwrap();
        let queued = job(p).await;
        let orphan = BlobKey::model(JobId::new(), ItemId::new());
        put(&s.blobs, &orphan).await;
        let stray = BlobKey::parse("models/readme.txt").unwrap();
        put(&s.blobs, &stray).await;
        (ended, queued, orphan, stray)
    }

    #[tokio::test]
    async fn old_ended_jobs_and_orphans_go_and_live_jobs_and_strays_stay() {
        let s = setup();
        let (ended, queued, orphan, stray) = scene(&s).await;
        let later = Utc::now() + Duration::hours(2);
        let report = s
            .pipeline
            .remove_as_of(later, Duration::minutes(30), false)
            .await
            .unwrap();
        assert_eq!(report.jobs, vec![ended]);
        assert_eq!(report.job_files.objects, 1, "the ended job's upload");
        assert_eq!(
            report.orphan_files,
            Usage {
                objects: 1,
                bytes: 5
            }
        );
        assert!(!report.truncated && !report.dry_run);
        let left = keys(&s.blobs).await;
        assert!(!left.contains(&orphan));
        assert!(left.contains(&stray));
        assert_eq!(left.iter().filter(|k| k.job() == Some(queued)).count(), 1);
        assert!(left.iter().all(|k| k.job() != Some(ended)));
        let p = &s.pipeline;
        assert!(matches!(
            p.job(ended, &Scope::Any).await,
            Err(PipelineError::NotFound)
        ));
        assert_eq!(
            p.job(queued, &Scope::Any).await.unwrap().status,
            JobStatus::Queued
        );
    }

    #[tokio::test]
    async fn a_dry_run_reports_the_same_and_removes_nothing() {
        let s = setup();
        let (ended, _, _, _) = scene(&s).await;
        let before = keys(&s.blobs).await;
        let later = Utc::now() + Duration::hours(2);
        let report = s
            .pipeline
            .remove_as_of(later, Duration::minutes(30), true)
            .await
            .unwrap();
        assert!(report.dry_run);
        assert_eq!(report.jobs, vec![ended]);
        assert_eq!(report.orphan_files.objects, 1);
        assert_eq!(keys(&s.blobs).await, before);
        assert!(s.pipeline.job(ended, &Scope::Any).await.is_ok());
    }

    #[tokio::test]
    async fn young_orphans_stay_whatever_the_age_asked() {
        let s = setup();
        let (ended, _, orphan, _) = scene(&s).await;
        // Thirty minutes later with an age of zero: the ended job goes, the
        // orphan is younger than an hour and stays.
        let soon = Utc::now() + Duration::minutes(30);
        let report = s
            .pipeline
            .remove_as_of(soon, Duration::zero(), false)
            .await
            .unwrap();
        assert_eq!(report.jobs, vec![ended]);
        assert_eq!(report.orphan_files.objects, 0);
        assert!(keys(&s.blobs).await.contains(&orphan));
    }

    #[tokio::test]
    async fn storage_usage_counts_each_area() {
        let s = setup();
        scene(&s).await;
        let usage = s.pipeline.storage_usage().await.unwrap();
        assert_eq!(usage.uploads.objects, 2);
        assert_eq!(usage.models.objects, 2);
        assert_eq!(usage.previews, Usage::default());
        assert_eq!(
            usage.total().objects,
            4,
            "uploads of two jobs, an orphan and a stray model file"
        );
        assert_eq!(
            usage.total().bytes,
            usage.uploads.bytes + 10,
            "the two 5-byte model files"
        );
    }
}
