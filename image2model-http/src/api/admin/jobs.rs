//! `GET /api/v1/admin/jobs` and `DELETE /api/v1/admin/jobs/{job_id}`: every
//! owner's jobs, and their removal (admin key only, audited).

use image2model_core::Scope;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi, param::Path, param::Query};

use crate::api::dto::{JobBody, JobListBody, SerdeJson};
use crate::api::jobs::{job_id, list_page};
use crate::api::tags::ApiTags;
use crate::audit::{Entry, kind};
use crate::error::{AdminError, ErrorBody};
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// Responses of `GET /api/v1/admin/jobs`.
#[derive(Debug, ApiResponse)]
pub enum AdminListResponse {
    /// A page of all jobs, newest first, with their owners.
    #[oai(status = 200)]
    Ok(SerdeJson<JobListBody>),
    /// `invalid_request`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

/// Responses of `DELETE /api/v1/admin/jobs/{job_id}`.
#[derive(Debug, ApiResponse)]
pub enum AdminDeleteResponse {
    /// The job (cancelled first if it was running) and its files are removed;
    /// the body is the job as it was.
    #[oai(status = 200)]
    Ok(SerdeJson<JobBody>),
    /// `not_found`.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

/// The admin job endpoints.
#[derive(Debug, Clone)]
pub struct AdminJobsApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AdminJobsApi {
    /// All jobs
    ///
    /// Every owner's jobs, newest first, with their owner key ids.
    #[oai(path = "/jobs", method = "get", operation_id = "admin_list_jobs")]
    async fn list(
        &self,
        _auth: AdminKey,
        /// Jobs per page, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<AdminListResponse, AdminError> {
        let page = list_page(&self.state, Scope::Any, limit.0, cursor.0).await?;
        Ok(AdminListResponse::Ok(SerdeJson(page)))
    }

    /// Remove a job
    ///
    /// Removes any owner's job and its files, cancelling it first if it runs.
    #[oai(
        path = "/jobs/:job_id",
        method = "delete",
        operation_id = "admin_delete_job"
    )]
    async fn delete(
        &self,
        auth: AdminKey,
        req: &Request,
        job_id: Path<String>,
    ) -> Result<AdminDeleteResponse, AdminError> {
        let job = self
            .state
            .pipeline
            .delete(self::job_id(&job_id.0)?, &Scope::Any)
            .await?;
        self.state
            .audit(
                Entry::new(kind::JOB_DELETED)
                    .actor(&auth.0.key_id)
                    .client_ip(self.state.clients.client_ip(req))
                    .detail(serde_json::json!({
                        "job_id": job.job_id.to_string(),
                        "owner": job.owner.as_str(),
                        "status": job.status.as_str(),
                        "items": job.items.len(),
                    })),
            )
            .await;
        Ok(AdminDeleteResponse::Ok(JobBody::admin(job)))
    }
}
