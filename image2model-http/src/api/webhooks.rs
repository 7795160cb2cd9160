//! Webhooks to integrators (`docs/WEBHOOKS.md`): a key's settings and
//! secret, and the deliveries of its jobs' ends.
//!
//! - `GET`/`PUT /webhook`: the key's default callback URL;
//! - `POST /webhook/secret`: makes (or rotates) the key's signing secret and
//!   shows it, once;
//! - `GET /webhook/deliveries`: the key's deliveries, newest first;
//! - `GET /jobs/{job_id}/webhook`: one job's delivery;
//! - `GET /admin/webhook-deliveries` (admin key): everyone's, e.g. the
//!   failed ones.

use chrono::{DateTime, Utc};
use image2model_core::domain::{
    ApiKeyId, CallbackUrl, Delivery, DeliveryId, DeliveryStatus, WebhookSettings,
};
use image2model_core::ports::{CallbackStore, DeliveryQuery};
use image2model_core::{ErrorCode, PipelineError, Scope};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::json;
use std::sync::Arc;

use crate::api::dto::JsonString;
use crate::api::jobs;
use crate::api::tags::ApiTags;
use crate::audit::Entry;
use crate::error::{AdminError, ApiError, ErrorBody};
use crate::security::auth::{AdminKey, UserKey};
use crate::state::AppState;

/// A key's webhook settings (never its secret).
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookSettings")]
pub struct WebhookSettingsDto {
    /// Where the ends of the key's uploads that name no `callback_url` are
    /// posted; null for none.
    #[oai(nullable)]
    pub default_url: Option<String>,
    /// Whether the key has a signing secret (webhooks need one).
    pub has_secret: bool,
    /// When the current secret was made; null without one.
    #[oai(nullable)]
    pub secret_created_at: Option<DateTime<Utc>>,
}

impl From<WebhookSettings> for WebhookSettingsDto {
    fn from(s: WebhookSettings) -> Self {
        Self {
            default_url: s.default_url.map(String::from),
            has_secret: s.secret_seed.is_some(),
            secret_created_at: s.secret_created_at,
        }
    }
}

/// A change to a key's webhook settings.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookSettingsChange")]
pub struct WebhookSettingsChangeDto {
    /// The new default callback URL (`https`, a public host, at most 2048
    /// bytes); null removes it.
    #[oai(nullable)]
    pub default_url: Option<JsonString>,
}

/// A new signing secret, shown this once.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookSecret")]
pub struct WebhookSecretDto {
    /// The secret (`whsec_` and 64 hex digits): keep it; it is not shown
    /// again. Verify each delivery's `Image2Model-Signature` with it.
    pub secret: String,
    /// When it was made; the previous secret stopped signing then.
    pub created_at: DateTime<Utc>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "DeliveryStatus", rename_all = "snake_case")]
pub enum DeliveryStatusDto {
    /// Waiting for the job to end, or for its next attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up (retried for the whole retry period, or refused for good).
    Failed,
}

impl From<DeliveryStatus> for DeliveryStatusDto {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

impl From<DeliveryStatusDto> for DeliveryStatus {
    fn from(s: DeliveryStatusDto) -> Self {
        match s {
            DeliveryStatusDto::Pending => Self::Pending,
            DeliveryStatusDto::Delivered => Self::Delivered,
            DeliveryStatusDto::Failed => Self::Failed,
        }
    }
}

/// One job's webhook delivery.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookDelivery")]
pub struct DeliveryDto {
    /// Its id: the `Image2Model-Delivery` header of every attempt.
    pub delivery_id: String,
    /// The job whose end it tells.
    pub job_id: String,
    /// The key that owns the job; shown on admin routes only.
    #[oai(skip_serializing_if_is_none)]
    pub owner: Option<String>,
    /// Where it is posted.
    pub url: String,
    /// Where it stands.
    pub status: DeliveryStatusDto,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries of ended jobs).
    pub next_attempt_at: DateTime<Utc>,
    /// What went wrong last; null when nothing did.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// The receiver's last HTTP status; null when it did not answer.
    #[oai(nullable)]
    pub last_status_code: Option<u16>,
    /// When the receiver took it; null until then.
    #[oai(nullable)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was made (with its job).
    pub created_at: DateTime<Utc>,
}

impl DeliveryDto {
    fn of(d: Delivery, admin: bool) -> Self {
        Self {
            delivery_id: d.delivery_id.to_string(),
            job_id: d.job_id.to_string(),
            owner: admin.then(|| d.owner.to_string()),
            url: d.url.into(),
            status: d.status.into(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            last_status_code: d.last_status_code,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "WebhookDeliveryList")]
pub struct DeliveryListDto {
    /// The deliveries.
    pub deliveries: Vec<DeliveryDto>,
    /// Pass as `before` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_before: Option<String>,
}

/// Responses of `GET` and `PUT /api/v1/webhook`.
#[derive(Debug, ApiResponse)]
pub enum SettingsResponse {
    /// The key's settings.
    #[oai(status = 200)]
    Ok(Json<WebhookSettingsDto>),
    /// `invalid_callback_url`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `unsupported_media_type`: the body is not JSON.
    #[oai(status = 415)]
    Unsupported(Json<ErrorBody>),
}

/// Responses of `POST /api/v1/webhook/secret`.
#[derive(Debug, ApiResponse)]
pub enum SecretResponse {
    /// The new secret, shown this once.
    #[oai(status = 201)]
    Created(Json<WebhookSecretDto>),
}

/// Responses of `GET /api/v1/jobs/{job_id}/webhook`.
#[derive(Debug, ApiResponse)]
pub enum DeliveryResponse {
    /// The job's delivery.
    #[oai(status = 200)]
    Ok(Json<DeliveryDto>),
    /// `not_found`: no such job of this key, or it named no callback.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
}

/// Responses of the delivery lists.
#[derive(Debug, ApiResponse)]
pub enum DeliveryListResponse {
    /// A page of deliveries.
    #[oai(status = 200)]
    Ok(Json<DeliveryListDto>),
    /// `invalid_request`: `limit` outside 1..=100, or a malformed `before`
    /// or `owner`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

/// The webhook endpoints of a user key.
#[derive(Debug, Clone)]
pub struct WebhooksApi {
    pub(crate) state: AppState,
}

/// The outbox, or a 503-free explanation that this store keeps none.
fn outbox(state: &AppState) -> Result<Arc<dyn CallbackStore>, ApiError> {
    state.pipeline.job_store().callbacks().ok_or_else(|| {
        ApiError::of(
            ErrorCode::NotFound,
            "this server's job store keeps no webhooks",
        )
    })
}

/// A page of deliveries as the lists answer it.
async fn page(
    state: &AppState,
    owner: Option<ApiKeyId>,
    status: Option<DeliveryStatusDto>,
    limit: Option<u32>,
    before: Option<&str>,
    admin: bool,
) -> Result<DeliveryListDto, ApiError> {
    let before = before
        .map(|b| {
            DeliveryId::parse(b)
                .map_err(|e| ApiError::of(ErrorCode::InvalidRequest, format!("before: {e}")))
        })
        .transpose()?;
    let limit = limit.unwrap_or(50);
    let found = outbox(state)?
        .list_deliveries(&DeliveryQuery {
            owner,
            status: status.map(Into::into),
            limit,
            before,
        })
        .await
        .map_err(PipelineError::from)?;
    let next_before = (found.len() >= limit as usize)
        .then(|| found.last().map(|d| d.delivery_id.to_string()))
        .flatten();
    Ok(DeliveryListDto {
        deliveries: found
            .into_iter()
            .map(|d| DeliveryDto::of(d, admin))
            .collect(),
        next_before,
    })
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl WebhooksApi {
    /// Your webhook settings
    ///
    /// The key's default callback URL and whether it has a signing secret
    /// (never the secret).
    #[oai(path = "/webhook", method = "get", operation_id = "get_webhook")]
    async fn get(&self, auth: UserKey) -> Result<SettingsResponse, ApiError> {
        let settings = outbox(&self.state)?
            .webhook_settings(&auth.0.key_id)
            .await
            .map_err(PipelineError::from)?;
        Ok(SettingsResponse::Ok(Json(settings.into())))
    }

    /// Set your default callback URL
    ///
    /// Uploads that name no `callback_url` post their job's end here; null
    /// removes it. The URL must be `https` and reach a public address.
    #[oai(path = "/webhook", method = "put", operation_id = "set_webhook")]
    async fn put(
        &self,
        auth: UserKey,
        body: Json<WebhookSettingsChangeDto>,
    ) -> Result<SettingsResponse, ApiError> {
        let url = match &body.0.default_url {
            None => None,
            Some(JsonString(text)) => {
                let url = CallbackUrl::parse(text, self.state.config.webhooks.allow_http)
                    .map_err(|e| ApiError::of(ErrorCode::InvalidCallbackUrl, e.to_string()))?;
                self.state
                    .webhook_addresses
                    .check_url(url.url(), std::time::Duration::from_secs(3))
                    .await
                    .map_err(|m| {
                        ApiError::of(ErrorCode::InvalidCallbackUrl, format!("default_url: {m}"))
                    })?;
                Some(url)
            }
        };
        let settings = outbox(&self.state)?
            .set_default_callback(&auth.0.key_id, url.as_ref())
            .await
            .map_err(PipelineError::from)?;
        self.state
            .audit(
                Entry::new("webhook_settings_changed")
                    .actor(&auth.0.key_id)
                    .detail(json!({ "default_url_set": url.is_some() })),
            )
            .await;
        Ok(SettingsResponse::Ok(Json(settings.into())))
    }

    /// Make a new webhook secret
    ///
    /// Makes the key's signing secret, or replaces it (the old one stops
    /// signing at once), and shows it this once.
    #[oai(
        path = "/webhook/secret",
        method = "post",
        operation_id = "rotate_webhook_secret"
    )]
    async fn rotate(&self, auth: UserKey) -> Result<SecretResponse, ApiError> {
        let seed = crate::callbacks::WebhookSecrets::new_seed();
        let now = Utc::now();
        let settings = outbox(&self.state)?
            .set_webhook_secret_seed(&auth.0.key_id, &seed, now)
            .await
            .map_err(PipelineError::from)?;
        self.state
            .audit(Entry::new("webhook_secret_rotated").actor(&auth.0.key_id))
            .await;
        Ok(SecretResponse::Created(Json(WebhookSecretDto {
            secret: self.state.webhook_secrets.secret(&auth.0.key_id, &seed),
            created_at: settings.secret_created_at.unwrap_or(now),
        })))
    }

    /// Your webhook deliveries
    ///
    /// The deliveries of the key's jobs, newest first, optionally only
    /// those in one state (e.g. `failed`).
    #[oai(
        path = "/webhook/deliveries",
        method = "get",
        operation_id = "list_webhook_deliveries"
    )]
    async fn deliveries(
        &self,
        auth: UserKey,
        /// Only deliveries in this state.
        status: Query<Option<DeliveryStatusDto>>,
        /// Deliveries per page, 1 to 100 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Only deliveries older than this one (the previous page's
        /// `next_before`).
        #[oai(validator(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
        before: Query<Option<String>>,
    ) -> Result<DeliveryListResponse, ApiError> {
        let dto = page(
            &self.state,
            Some(auth.0.key_id),
            status.0,
            limit.0,
            before.0.as_deref(),
            false,
        )
        .await?;
        Ok(DeliveryListResponse::Ok(Json(dto)))
    }

    /// A job's webhook delivery
    ///
    /// Where the delivery of the job's end stands: attempts, last error,
    /// when it was received.
    #[oai(
        path = "/jobs/:job_id/webhook",
        method = "get",
        operation_id = "get_job_webhook"
    )]
    async fn job_delivery(
        &self,
        auth: UserKey,
        job_id: Path<String>,
    ) -> Result<DeliveryResponse, ApiError> {
        let id = jobs::job_id(&job_id.0)?;
        self.state
            .pipeline
            .job(id, &Scope::Owner(auth.0.key_id))
            .await?;
        let delivery = outbox(&self.state)?
            .delivery(id)
            .await
            .map_err(PipelineError::from)?
            .ok_or_else(|| ApiError::of(ErrorCode::NotFound, "this job named no callback URL"))?;
        Ok(DeliveryResponse::Ok(Json(DeliveryDto::of(delivery, false))))
    }
}

/// The admin's view of every key's deliveries.
#[derive(Debug, Clone)]
pub struct AdminWebhooksApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AdminWebhooksApi {
    /// Every key's webhook deliveries
    ///
    /// Newest first, optionally one key's or those in one state (e.g.
    /// `failed`, the deliveries given up on).
    #[oai(
        path = "/webhook-deliveries",
        method = "get",
        operation_id = "admin_list_webhook_deliveries"
    )]
    async fn deliveries(
        &self,
        _auth: AdminKey,
        /// Only this key's deliveries.
        #[oai(validator(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
        owner: Query<Option<String>>,
        /// Only deliveries in this state.
        status: Query<Option<DeliveryStatusDto>>,
        /// Deliveries per page, 1 to 100 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Only deliveries older than this one (the previous page's
        /// `next_before`).
        #[oai(validator(pattern = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"))]
        before: Query<Option<String>>,
    ) -> Result<DeliveryListResponse, AdminError> {
        let owner = owner
            .0
            .map(|o| {
                ApiKeyId::parse(&o)
                    .map_err(|e| ApiError::of(ErrorCode::InvalidRequest, format!("owner: {e}")))
            })
            .transpose()?;
        let dto = page(
            &self.state,
            owner,
            status.0,
            limit.0,
            before.0.as_deref(),
            true,
        )
        .await?;
        Ok(DeliveryListResponse::Ok(Json(dto)))
    }
}
