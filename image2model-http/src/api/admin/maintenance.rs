//! `GET /api/v1/admin/disk-usage` and `POST /api/v1/admin/cleanup` (admin
//! key only). The rules are core's
//! ([`image2model_core::pipeline::retention`]); these endpoints report and
//! audit them.

use chrono::{DateTime, Utc};
use image2model_core::ports::Usage;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::system::{DiskDto, disk};
use crate::api::tags::ApiTags;
use crate::audit::{Entry, kind};
use crate::cleanup::audit_detail;
use crate::error::{AdminError, ApiError, ErrorBody};
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// Bytes and objects in one area of the blob store.
#[derive(Debug, Clone, Copy, Object)]
#[oai(rename = "StorageUsage")]
pub struct UsageDto {
    /// Total size in bytes.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

impl From<Usage> for UsageDto {
    fn from(u: Usage) -> Self {
        Self {
            bytes: u.bytes,
            objects: u.objects,
        }
    }
}

/// `GET /api/v1/admin/disk-usage`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DiskUsage")]
pub struct DiskUsageDto {
    /// Uploaded images.
    pub uploads: UsageDto,
    /// Generated models.
    pub models: UsageDto,
    /// Previews of generated models.
    pub previews: UsageDto,
    /// The three together.
    pub total: UsageDto,
    /// The disk holding the blobs, for local-file storage; `null` for
    /// remote storage (S3, memory).
    #[oai(nullable)]
    pub disk: Option<DiskDto>,
}

/// `POST /api/v1/admin/cleanup`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "CleanupRequest")]
pub struct CleanupRequestDto {
    /// Remove what is older than this many hours (1 to 87600).
    #[oai(validator(minimum(value = "1"), maximum(value = "87600")))]
    pub older_than_hours: u32,
    /// `true`: only report what would be removed. Required, so that a
    /// removal is always asked for explicitly.
    pub dry_run: bool,
}

/// What a cleanup removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Object)]
#[oai(rename = "CleanupResult")]
pub struct CleanupResultDto {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Ended jobs last updated before this time, and orphan files written
    /// before it, were candidates.
    pub cutoff: DateTime<Utc>,
    /// How many ended jobs were (would be) removed.
    pub jobs_removed: u64,
    /// Their ids, oldest first.
    pub job_ids: Vec<String>,
    /// Their files (uploads, models, previews).
    pub job_files: UsageDto,
    /// Files with no job (left by a crash or a failed delete).
    pub orphan_files: UsageDto,
    /// More jobs qualified than one run removes (5000): run it again.
    pub truncated: bool,
}

/// Responses of `GET /api/v1/admin/disk-usage`.
#[derive(Debug, ApiResponse)]
pub enum DiskUsageResponse {
    /// Storage figures.
    #[oai(status = 200)]
    Ok(Json<DiskUsageDto>),
    /// `storage_unavailable`.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Responses of `POST /api/v1/admin/cleanup`.
#[derive(Debug, ApiResponse)]
pub enum CleanupResponse {
    /// What was (or would be) removed.
    #[oai(status = 200)]
    Ok(Json<CleanupResultDto>),
    /// `invalid_request`: `older_than_hours` outside 1..=87600, or a body
    /// that does not parse.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `store_unavailable` or `storage_unavailable`.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The storage maintenance endpoints.
#[derive(Debug, Clone)]
pub struct MaintenanceApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl MaintenanceApi {
    /// Disk usage
    ///
    /// Bytes and object counts for uploads, models and previews, and the
    /// free and total space of the disk holding them (local-file storage).
    #[oai(
        path = "/disk-usage",
        method = "get",
        operation_id = "admin_disk_usage"
    )]
    async fn disk_usage(&self, _auth: AdminKey) -> Result<DiskUsageResponse, AdminError> {
        let usage = self.state.pipeline.storage_usage().await?;
        let disk = if self.state.file_storage {
            let path = self.state.disk_path.clone();
            tokio::task::spawn_blocking(move || disk(&path))
                .await
                .map_err(ApiError::internal)?
        } else {
            None
        };
        Ok(DiskUsageResponse::Ok(Json(DiskUsageDto {
            uploads: usage.uploads.into(),
            models: usage.models.into(),
            previews: usage.previews.into(),
            total: usage.total().into(),
            disk,
        })))
    }

    /// Remove old jobs and files
    ///
    /// Removes ended jobs last updated more than `older_than_hours` ago with
    /// their files, and files without a job older than that (and at least an
    /// hour old). Queued and running jobs are never removed. With
    /// `dry_run: true`, only reports what would be removed.
    #[oai(path = "/cleanup", method = "post", operation_id = "admin_cleanup")]
    async fn cleanup(
        &self,
        auth: AdminKey,
        req: &Request,
        body: Json<CleanupRequestDto>,
    ) -> Result<CleanupResponse, AdminError> {
        let age = chrono::Duration::hours(i64::from(body.0.older_than_hours));
        let report = self
            .state
            .pipeline
            .remove_older_than(age, body.0.dry_run)
            .await?;
        let mut detail = audit_detail(&report, "admin");
        detail["older_than_hours"] = body.0.older_than_hours.into();
        self.state
            .audit(
                Entry::new(kind::CLEANUP)
                    .actor(&auth.0.key_id)
                    .client_ip(self.state.clients.client_ip(req))
                    .detail(detail),
            )
            .await;
        Ok(CleanupResponse::Ok(Json(CleanupResultDto {
            dry_run: report.dry_run,
            cutoff: report.cutoff,
            jobs_removed: report.jobs.len() as u64,
            job_ids: report.jobs.iter().map(ToString::to_string).collect(),
            job_files: report.job_files.into(),
            orphan_files: report.orphan_files.into(),
            truncated: report.truncated,
        })))
    }
}
