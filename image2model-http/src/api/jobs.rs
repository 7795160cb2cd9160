//! The caller's jobs: list, get, follow (SSE), cancel or delete, download.
//!
//! Every path id is parsed strictly ([`JobId::parse`], [`ItemId::parse`]); a
//! malformed id is 404 like a missing job, and another key's job is 404 too,
//! so nothing tells a caller whether a job id exists.

use image2model_core::ErrorCode;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use image2model_core::Scope;
use image2model_core::domain::{ItemId, JobId};
use image2model_core::pipeline::Removal;
use poem::Body;
use poem_openapi::payload::{Binary, EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Enum, OpenApi, param::Path, param::Query};

use super::dto::{JobBody, JobDto, JobListBody, SerdeJson};
use super::model::{ModelFile, ModelResponse, PreviewResponse};
use super::tags::ApiTags;
use crate::error::{ApiError, ErrorBody};
use crate::security::auth::UserKey;
use crate::state::AppState;
use image2model_core::gltf::ModelFormat;

/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A job id from a path: malformed ids are simply not found.
/// One page of the jobs `scope` may see (`limit` defaults to 20; `cursor`
/// is the previous page's `next_cursor`), shown with owners to admins
/// (`Scope::Any`). Shared by `list_jobs` and `admin_list_jobs`.
pub(crate) async fn list_page(
    state: &AppState,
    scope: Scope,
    limit: Option<u32>,
    cursor: Option<String>,
) -> Result<JobListBody, ApiError> {
    let cursor = match cursor {
        None => None,
        Some(c) => Some(
            JobId::parse(&c)
                .map_err(|_| ApiError::of(ErrorCode::InvalidRequest, "cursor is not a job id"))?,
        ),
    };
    let admin = scope == Scope::Any;
    let page = state
        .pipeline
        .list_jobs(&scope, limit.unwrap_or(20), cursor)
        .await?;
    Ok(JobListBody {
        jobs: page.jobs,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
        admin,
    })
}

pub(crate) fn job_id(text: &str) -> Result<JobId, ApiError> {
    JobId::parse(text).map_err(|_| ApiError::not_found())
}

pub(crate) fn item_id(text: &str) -> Result<ItemId, ApiError> {
    ItemId::parse(text).map_err(|_| ApiError::not_found())
}

/// Responses of `GET /api/v1/jobs`.
#[derive(Debug, ApiResponse)]
pub enum ListJobsResponse {
    /// A page of the caller's jobs, newest first.
    #[oai(status = 200)]
    Ok(SerdeJson<JobListBody>),
    /// `invalid_request`: `limit` outside 1..=100, or a malformed `cursor`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

/// Responses of `GET /api/v1/jobs/{job_id}`.
#[derive(Debug, ApiResponse)]
pub enum GetJobResponse {
    /// The job.
    #[oai(status = 200)]
    Ok(SerdeJson<JobBody>),
    /// `not_found`: no such job, or not the caller's.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

/// Responses of `GET /api/v1/jobs/{job_id}/events`.
#[derive(ApiResponse)]
pub enum EventsResponse {
    /// Server-Sent Events: one `job` event per state of the job (the full
    /// job as JSON), starting with the current one; the stream closes after
    /// the job ends. Keep-alive comments every 15 s.
    #[oai(status = 200)]
    Ok(EventStream<BoxStream<'static, JobDto>>),
    /// `not_found`.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

impl std::fmt::Debug for EventsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventsResponse")
    }
}

/// Responses of `DELETE /api/v1/jobs/{job_id}`.
#[derive(Debug, ApiResponse)]
pub enum DeleteJobResponse {
    /// The job was still running: it is now cancelled (queued items will not
    /// run, running ones are stopped, remote requests cancelled). Its files
    /// stay until a second DELETE removes it.
    #[oai(status = 200)]
    Cancelled(SerdeJson<JobBody>),
    /// The job had ended: it and its files are removed.
    #[oai(status = 204)]
    Deleted,
    /// `not_found`.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

/// `?format=` of a model download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum FormatParam {
    /// Binary glTF (`model/gltf-binary`), as generated.
    Glb,
    /// Wavefront OBJ (`model/obj`).
    Obj,
    /// Binary STL (`model/stl`).
    Stl,
    /// A zip (`application/zip`) of `model.obj`, `model.mtl` and the
    /// textures, so that a textured model stays textured.
    #[oai(rename = "obj.zip")]
    ObjZip,
}

impl From<FormatParam> for ModelFormat {
    fn from(f: FormatParam) -> Self {
        match f {
            FormatParam::Glb => ModelFormat::Glb,
            FormatParam::Obj => ModelFormat::Obj,
            FormatParam::Stl => ModelFormat::Stl,
            FormatParam::ObjZip => ModelFormat::ObjZip,
        }
    }
}

/// The job endpoints.
#[derive(Debug, Clone)]
pub struct JobsApi {
    pub(crate) state: AppState,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// List jobs
    ///
    /// The caller's jobs, newest first, a page at a time.
    #[oai(path = "/jobs", method = "get", operation_id = "list_jobs")]
    async fn list(
        &self,
        auth: UserKey,
        /// Jobs per page, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// The `next_cursor` of the previous page.
        #[oai(validator(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
        cursor: Query<Option<String>>,
    ) -> Result<ListJobsResponse, ApiError> {
        let page = list_page(&self.state, Scope::Owner(auth.0.key_id), limit.0, cursor.0).await?;
        Ok(ListJobsResponse::Ok(SerdeJson(page)))
    }

    /// Get a job
    ///
    /// One job with its items and progress.
    #[oai(path = "/jobs/:job_id", method = "get", operation_id = "get_job")]
    async fn get(&self, auth: UserKey, job_id: Path<String>) -> Result<GetJobResponse, ApiError> {
        let job = self
            .state
            .pipeline
            .job(self::job_id(&job_id.0)?, &Scope::Owner(auth.0.key_id))
            .await?;
        Ok(GetJobResponse::Ok(JobBody::owner(job)))
    }

    /// Follow a job
    ///
    /// Server-Sent Events with the job's progress until it ends. Browsers'
    /// `EventSource` cannot send `Authorization`: read the stream with
    /// `fetch` instead (the web page does).
    #[oai(
        path = "/jobs/:job_id/events",
        method = "get",
        operation_id = "job_events"
    )]
    async fn events(
        &self,
        auth: UserKey,
        job_id: Path<String>,
    ) -> Result<EventsResponse, ApiError> {
        let stream = self
            .state
            .pipeline
            .subscribe(self::job_id(&job_id.0)?, &Scope::Owner(auth.0.key_id))
            .await?;
        // Close open streams on shutdown so that the server can drain.
        let shutdown = self.state.shutdown.clone().cancelled_owned();
        let stream = stream
            .map(|job| JobDto::from_job(&job))
            .take_until(shutdown)
            .boxed();
        Ok(EventsResponse::Ok(
            EventStream::new(stream)
                .keep_alive(KEEP_ALIVE)
                .to_event(|dto| {
                    let data = dto.to_json_string();
                    poem::web::sse::Event::message(data)
                        .event_type("job")
                        .id(format!(
                            "{}-{}",
                            dto.updated_at.timestamp_millis(),
                            dto.progress
                        ))
                }),
        ))
    }

    /// Cancel or delete a job
    ///
    /// A running job is cancelled (200 with the job); an ended job is
    /// deleted with its files (204).
    #[oai(path = "/jobs/:job_id", method = "delete", operation_id = "delete_job")]
    async fn delete(
        &self,
        auth: UserKey,
        job_id: Path<String>,
    ) -> Result<DeleteJobResponse, ApiError> {
        let removal = self
            .state
            .pipeline
            .cancel_or_delete(self::job_id(&job_id.0)?, &Scope::Owner(auth.0.key_id))
            .await?;
        Ok(match removal {
            Removal::Cancelled(job) => DeleteJobResponse::Cancelled(JobBody::owner(job)),
            Removal::Deleted(_) => DeleteJobResponse::Deleted,
        })
    }

    /// Download a model
    ///
    /// The item's 3D model, streamed, as an attachment: binary glTF by
    /// default, or converted with `?format=obj|stl`, or `?format=obj.zip`
    /// for the OBJ with its material and textures (a zip).
    #[oai(
        path = "/jobs/:job_id/items/:item_id/model",
        method = "get",
        operation_id = "download_model"
    )]
    async fn model(
        &self,
        auth: UserKey,
        job_id: Path<String>,
        item_id: Path<String>,
        /// `glb` (default), `obj`, `stl` or `obj.zip`.
        format: Query<Option<FormatParam>>,
    ) -> Result<ModelResponse, ApiError> {
        let (item, object) = self
            .state
            .pipeline
            .model(
                self::job_id(&job_id.0)?,
                self::item_id(&item_id.0)?,
                &Scope::Owner(auth.0.key_id),
            )
            .await?;
        let format = format.0.map_or(ModelFormat::Glb, Into::into);
        let max = self.state.pipeline.config().max_model_bytes;
        Ok(ModelResponse::Ok(
            ModelFile::new(&item, object, format, max).await?,
        ))
    }

    /// Download a preview image
    ///
    /// The preview image the generator made for the item, when it made one.
    #[oai(
        path = "/jobs/:job_id/items/:item_id/preview",
        method = "get",
        operation_id = "download_preview"
    )]
    async fn preview(
        &self,
        auth: UserKey,
        job_id: Path<String>,
        item_id: Path<String>,
    ) -> Result<PreviewResponse, ApiError> {
        let (_, preview) = self
            .state
            .pipeline
            .preview(
                self::job_id(&job_id.0)?,
                self::item_id(&item_id.0)?,
                &Scope::Owner(auth.0.key_id),
            )
            .await?;
        Ok(PreviewResponse::Ok(
            Binary(Body::from_bytes_stream(preview.object.stream)),
            preview.kind.mime().to_owned(),
        ))
    }
}
