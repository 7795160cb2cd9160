//! Signed download links: `POST /jobs/{job_id}/items/{item_id}/link` makes
//! one (the owner's key), `GET /links/{job_id}/{item_id}/{format}` serves
//! the model through it without a key.
//!
//! The signature and what it binds are [`crate::links`]'. The public GET
//! passes the request gate like every API route (the per-IP general rate
//! limit, the body limit, the audit observer); only the bearer check is
//! absent, replaced by the link's signature, expiry and a check that the
//! owner's key is still live. Its refusals are stable codes:
//! `link_invalid` (403), `link_expired` and `link_revoked` (410), then the
//! download's own (`not_found`, `model_not_ready`, `conversion_failed`).

use chrono::{DateTime, Utc};
use image2model_core::domain::{ApiKeyId, ItemId, ItemStatus, JobId};
use image2model_core::gltf::ModelFormat;
use image2model_core::{ErrorCode, PipelineError, Scope};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query};

use super::jobs::{FormatParam, item_id, job_id};
use super::model::{LinkModelResponse, ModelFile};
use super::tags::ApiTags;
use crate::error::{ApiError, ErrorBody, PublicError};
use crate::links::{DEFAULT_LINK_SECONDS, Link, LinkRefusal};
use crate::security::auth::UserKey;
use crate::state::AppState;

/// A signed download link.
#[derive(Debug, Clone, Object)]
#[oai(rename = "DownloadLink")]
pub struct LinkBody {
    /// The link: absolute under `PUBLIC_BASE_URL` when the server has one,
    /// else a path on this server. It works without `Authorization` until
    /// `expires_at`, and carries no API key.
    pub url: String,
    /// The format it serves.
    pub format: FormatParam,
    /// The last moment the link works (whole seconds).
    pub expires_at: DateTime<Utc>,
}

/// Responses of `POST /api/v1/jobs/{job_id}/items/{item_id}/link`.
#[derive(Debug, ApiResponse)]
pub enum CreateLinkResponse {
    /// The link.
    #[oai(status = 200)]
    Ok(Json<LinkBody>),
    /// `invalid_request`: unknown `format`, or `expires_in_seconds` outside
    /// 60..=604800.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `not_found`: no such job or item, or not the caller's.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// `model_not_ready`: the item has not succeeded.
    #[oai(status = 409)]
    NotReady(Json<ErrorBody>),
}

/// The link endpoints.
#[derive(Debug, Clone)]
pub struct LinksApi {
    pub(crate) state: AppState,
}

fn invalid() -> ApiError {
    ApiError::of(
        ErrorCode::LinkInvalid,
        "this download link is malformed or has been altered",
    )
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl LinksApi {
    /// Make a download link
    ///
    /// A URL that downloads the item's model in one format without an API
    /// key until it expires (default one hour, at most 7 days). It stops
    /// working early when the job or item is deleted or the caller's key is
    /// revoked.
    #[oai(
        path = "/jobs/:job_id/items/:item_id/link",
        method = "post",
        operation_id = "create_download_link"
    )]
    async fn create(
        &self,
        auth: UserKey,
        job_id: Path<String>,
        item_id: Path<String>,
        /// `glb` (default), `obj` or `stl`.
        format: Query<Option<FormatParam>>,
        /// How long the link works, in seconds: 60 to 604800 (7 days),
        /// default 3600.
        #[oai(validator(minimum(value = "60"), maximum(value = "604800")))]
        expires_in_seconds: Query<Option<u32>>,
    ) -> Result<CreateLinkResponse, ApiError> {
        let job_id = self::job_id(&job_id.0)?;
        let item_id = self::item_id(&item_id.0)?;
        let job = self
            .state
            .pipeline
            .job(job_id, &Scope::Owner(auth.0.key_id))
            .await?;
        let item = job.item(item_id).ok_or(PipelineError::NotFound)?;
        if item.status != ItemStatus::Succeeded {
            return Err(PipelineError::ModelNotReady(item.status.as_str()).into());
        }
        if item.model_key.is_none() {
            return Err(PipelineError::ModelNotReady("succeeded").into());
        }
        let format_param = format.0.unwrap_or(FormatParam::Glb);
        let lifetime = expires_in_seconds.0.unwrap_or(DEFAULT_LINK_SECONDS);
        let link = Link {
            job_id,
            item_id,
            format: format_param.into(),
            expires: Utc::now().timestamp() + i64::from(lifetime),
            owner: job.owner.clone(),
        };
        let path = self.state.links.signed_path(&link);
        let url = match &self.state.config.public_base_url {
            Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
            None => path,
        };
        Ok(CreateLinkResponse::Ok(Json(LinkBody {
            url,
            format: format_param,
            expires_at: link.expires_at(),
        })))
    }

    /// Download a model through a signed link
    ///
    /// No `Authorization`: the link made by `create_download_link` is the
    /// credential. Serves what `download_model` serves (same media types,
    /// `Content-Disposition`, conversion to OBJ/STL). Counts in the general
    /// per-IP rate limit like every API request.
    #[oai(
        path = "/links/:job_id/:item_id/:format",
        method = "get",
        operation_id = "download_model_by_link"
    )]
    async fn download(
        &self,
        job_id: Path<String>,
        item_id: Path<String>,
        /// `glb`, `obj` or `stl`, as signed.
        format: Path<String>,
        /// The key id of the job's owner, as signed.
        owner: Query<Option<String>>,
        /// The last second (Unix time) the link works, as signed.
        expires: Query<Option<String>>,
        /// The signature: 64 hex digits.
        sig: Query<Option<String>>,
    ) -> Result<LinkModelResponse, PublicError> {
        let (Some(owner), Some(expires), Some(sig)) = (owner.0, expires.0, sig.0) else {
            return Err(invalid().into());
        };
        let link = Link {
            job_id: JobId::parse(&job_id.0).map_err(|_| invalid())?,
            item_id: ItemId::parse(&item_id.0).map_err(|_| invalid())?,
            format: ModelFormat::ALL
                .into_iter()
                .find(|f| f.name() == format.0)
                .ok_or_else(invalid)?,
            expires: expires.parse().map_err(|_| invalid())?,
            owner: ApiKeyId::parse(&owner).map_err(|_| invalid())?,
        };
        match self.state.links.check(&link, &sig, Utc::now().timestamp()) {
            Ok(()) => {}
            Err(LinkRefusal::Invalid) => {
                tracing::warn!("download link with a wrong signature");
                return Err(invalid().into());
            }
            Err(LinkRefusal::Expired) => {
                return Err(
                    ApiError::of(ErrorCode::LinkExpired, "this download link has expired").into(),
                );
            }
        }
        crate::request_id::record_key_id(link.owner.as_str());
        match self.state.keys.is_live(&link.owner).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::of(
                    ErrorCode::LinkRevoked,
                    "the API key that made this download link has been revoked",
                )
                .into());
            }
            Err(e) => {
                tracing::error!(error = %e, "key store unavailable");
                return Err(ApiError::of(
                    ErrorCode::AuthUnavailable,
                    "authentication is unavailable; retry later",
                )
                .into());
            }
        }
        let (item, object) = self
            .state
            .pipeline
            .model(link.job_id, link.item_id, &Scope::Owner(link.owner))
            .await?;
        let max = self.state.pipeline.config().max_model_bytes;
        Ok(LinkModelResponse::Ok(
            ModelFile::new(&item, object, link.format, max)
                .await
                .map_err(PublicError)?,
        ))
    }
}
