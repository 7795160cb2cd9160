//! Removal of what is old: ended jobs with their files, and orphan files.
//!
//! Used by `POST /api/v1/admin/cleanup` (any age, optionally a dry run) and
//! by the retention task ([`run_schedule`]), which runs every
//! `CLEANUP_INTERVAL_MINUTES` (an hour by default) and removes what is older
//! than `RETENTION_HOURS`, and audit records older than
//! `AUDIT_RETENTION_DAYS`.
//!
//! What counts:
//! - **jobs**: ended jobs (`succeeded`, `partial`, `failed`, `cancelled`)
//!   last updated before the cutoff, removed with their uploads, models and
//!   previews. Queued and running jobs are never touched, however old.
//! - **orphan files**: objects under `uploads/`, `models/` and `previews/`
//!   written before the cutoff whose job (the key's second segment) has no
//!   row: left by a crash between storing and recording, or by a failed
//!   delete. Objects whose key names no job id are left alone. The cutoff is
//!   at least an hour back, so an upload in flight (stored before its job
//!   row is written) is never taken for an orphan.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use image2model_core::domain::{BlobKey, BlobPrefix, JobId, area};
use image2model_core::ports::{BlobMeta, Usage};
use image2model_core::{Pipeline, PipelineError, Scope};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{Entry, kind};
use crate::state::AppState;

/// The most jobs one run removes; the rest wait for the next run.
pub const MAX_JOBS_PER_RUN: u32 = 5000;

/// The areas of the blob store that cleanup looks at.
const AREAS: [&str; 3] = [area::UPLOADS, area::MODELS, area::PREVIEWS];

/// When the retention task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupSchedule {
    /// Delay before the first run after start.
    pub first_after: Duration,
    /// Time between runs.
    pub every: Duration,
}

impl Default for CleanupSchedule {
    /// A minute after start, then hourly.
    fn default() -> Self {
        Self::every_minutes(60)
    }
}

impl CleanupSchedule {
    /// A minute after start, then every `minutes` (`CLEANUP_INTERVAL_MINUTES`;
    /// at least one).
    #[must_use]
    pub fn every_minutes(minutes: u64) -> Self {
        Self {
            first_after: Duration::from_secs(60),
            every: Duration::from_secs(minutes.max(1).saturating_mul(60)),
        }
    }
}

/// What a cleanup removed, or would remove in a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupReport {
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

impl CleanupReport {
    /// The report as audit details (counts, never file names).
    #[must_use]
    pub fn audit_detail(&self, trigger: &str) -> serde_json::Value {
        json!({
            "trigger": trigger,
            "dry_run": self.dry_run,
            "cutoff": self.cutoff.to_rfc3339(),
            "jobs": self.jobs.len(),
            "job_files": self.job_files.objects,
            "job_bytes": self.job_files.bytes,
            "orphan_files": self.orphan_files.objects,
            "orphan_bytes": self.orphan_files.bytes,
            "truncated": self.truncated,
        })
    }
}

fn add(usage: &mut Usage, meta: &BlobMeta) {
    usage.objects += 1;
    usage.bytes += meta.size;
}

/// The job a blob key belongs to: its second segment, if it is a job id.
fn job_of(key: &BlobKey) -> Option<JobId> {
    key.segments().nth(1).and_then(|s| JobId::parse(s).ok())
}

/// Removes (or with `dry_run` only lists) ended jobs last updated more than
/// `older_than_hours` hours ago with their files, and orphan files older than
/// that (and at least an hour old). A file that fails to delete is logged
/// and counted as removed by the job delete (the next run retries orphans).
///
/// # Errors
/// Job store or blob store failures before anything is decided; failures
/// while removing one job are logged and that job is left for the next run.
pub async fn cleanup(
    pipeline: &Pipeline,
    older_than_hours: u32,
    dry_run: bool,
) -> Result<CleanupReport, PipelineError> {
    let now = Utc::now();
    let cutoff = now - chrono::Duration::hours(i64::from(older_than_hours));
    let orphan_cutoff = cutoff.min(now - chrono::Duration::hours(1));
    let blobs = pipeline.blob_store();
    let mut files: BTreeMap<BlobKey, BlobMeta> = BTreeMap::new();
    for a in AREAS {
        let prefix = BlobPrefix::parse(a).expect("area names are valid prefixes");
        for meta in blobs.list(&prefix).await? {
            files.insert(meta.key.clone(), meta);
        }
    }

    let ended = pipeline
        .job_store()
        .ended_jobs_before(cutoff, MAX_JOBS_PER_RUN)
        .await?;
    let truncated = ended.len() >= MAX_JOBS_PER_RUN as usize;
    let mut report = CleanupReport {
        dry_run,
        cutoff,
        jobs: Vec::with_capacity(ended.len()),
        job_files: Usage::default(),
        orphan_files: Usage::default(),
        truncated,
    };
    for job in ended {
        if !dry_run {
            match pipeline.delete(job.job_id, &Scope::Any).await {
                Ok(_) | Err(PipelineError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(job_id = %job.job_id, error = %e, "cleanup could not remove a job");
                    continue;
                }
            }
        }
        for item in &job.items {
            let keys = [
                Some(&item.upload_key),
                item.model_key.as_ref(),
                item.preview_key.as_ref(),
            ];
            for key in keys.into_iter().flatten() {
                if let Some(meta) = files.remove(key) {
                    add(&mut report.job_files, &meta);
                }
            }
        }
        report.jobs.push(job.job_id);
    }

    // Which jobs still exist, asked once per job id.
    let mut exists: HashMap<JobId, bool> = HashMap::new();
    for (key, meta) in &files {
        if meta.last_modified >= orphan_cutoff {
            continue;
        }
        let Some(job_id) = job_of(key) else { continue };
        let alive = match exists.get(&job_id) {
            Some(alive) => *alive,
            None => {
                let alive = pipeline.job_store().get_job(job_id).await?.is_some();
                exists.insert(job_id, alive);
                alive
            }
        };
        if alive {
            continue;
        }
        if !dry_run && let Err(e) = blobs.delete(key).await {
            tracing::warn!(key = %key, error = %e, "cleanup could not remove an orphan file");
            continue;
        }
        add(&mut report.orphan_files, meta);
    }
    Ok(report)
}

/// The retention task: runs [`cleanup`] with `RETENTION_HOURS` and prunes
/// the audit records older than `AUDIT_RETENTION_DAYS` on `schedule` until
/// `shutdown` fires, logging each run and auditing those that removed
/// something.
pub async fn run_schedule(state: AppState, schedule: CleanupSchedule, shutdown: CancellationToken) {
    let hours = u32::try_from(state.config.retention_hours).unwrap_or(u32::MAX);
    let audit_days = i64::try_from(state.config.audit_retention_days).unwrap_or(i64::MAX);
    let mut wait = schedule.first_after;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        wait = schedule.every;
        let audit_cutoff = chrono::Duration::try_days(audit_days)
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let pruned = match state.audit_log.prune(audit_cutoff).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, code = e.code(), "pruning the audit trail failed");
                0
            }
        };
        match cleanup(&state.pipeline, hours, false).await {
            Ok(report) => {
                tracing::info!(
                    jobs = report.jobs.len(),
                    job_files = report.job_files.objects,
                    orphan_files = report.orphan_files.objects,
                    bytes = report.job_files.bytes + report.orphan_files.bytes,
                    audit_events = pruned,
                    retention_hours = hours,
                    audit_retention_days = audit_days,
                    "retention cleanup done"
                );
                if !report.jobs.is_empty() || report.orphan_files.objects > 0 || pruned > 0 {
                    let mut detail = report.audit_detail("schedule");
                    detail["audit_events"] = pruned.into();
                    state.audit(Entry::new(kind::CLEANUP).detail(detail)).await;
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                code = e.code(),
                audit_events = pruned,
                "retention cleanup failed"
            ),
        }
    }
}
