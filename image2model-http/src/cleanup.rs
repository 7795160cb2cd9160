//! Scheduling and auditing of retention. The rules (what is old enough to
//! remove, and in which order) are core's
//! ([`image2model_core::pipeline::retention`]); this module runs them:
//! `POST /api/v1/admin/cleanup` (any age, optionally a dry run) and the
//! retention task ([`run_schedule`]), which runs every
//! `CLEANUP_INTERVAL_MINUTES` (an hour by default), removes what is older
//! than `RETENTION_HOURS`, and prunes audit records older than
//! `AUDIT_RETENTION_DAYS`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use image2model_core::pipeline::RetentionReport;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{Entry, kind};
use crate::state::AppState;

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

/// A retention report as audit details (counts, never file names).
#[must_use]
pub fn audit_detail(report: &RetentionReport, trigger: &str) -> serde_json::Value {
    json!({
        "trigger": trigger,
        "dry_run": report.dry_run,
        "cutoff": report.cutoff.to_rfc3339(),
        "jobs": report.jobs.len(),
        "job_files": report.job_files.objects,
        "job_bytes": report.job_files.bytes,
        "orphan_files": report.orphan_files.objects,
        "orphan_bytes": report.orphan_files.bytes,
        "truncated": report.truncated,
    })
}

/// The retention task: removes what is older than `RETENTION_HOURS`
/// ([`image2model_core::Pipeline::remove_older_than`]) and prunes
/// the audit records older than `AUDIT_RETENTION_DAYS` on `schedule` until
/// `shutdown` fires, logging each run and auditing those that removed
/// something.
pub async fn run_schedule(state: AppState, schedule: CleanupSchedule, shutdown: CancellationToken) {
    let hours = i64::try_from(state.config.retention_hours).unwrap_or(i64::MAX);
    let age = chrono::Duration::try_hours(hours).unwrap_or(chrono::Duration::MAX);
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
        match state.pipeline.remove_older_than(age, false).await {
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
                    let mut detail = audit_detail(&report, "schedule");
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
