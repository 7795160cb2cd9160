//! `GET /api/v1/admin/audit`: the audit trail, newest first (admin key only).
//! What is recorded, and that no secret ever is, is described in
//! [`crate::audit`].

use chrono::{DateTime, Utc};
use image2model_core::ports::AuditEvent;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Query};

use crate::api::tags::ApiTags;
use crate::error::{AdminError, ErrorBody};
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// One audit event.
#[derive(Debug, Clone, Object)]
#[oai(rename = "AuditEvent")]
pub struct AuditEventDto {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `auth_failed`, `forbidden`, `rate_limited`, `key_created`,
    /// `key_revoked`, `job_deleted` or `cleanup`.
    pub kind: String,
    /// The key id that acted, when known (never a secret).
    #[oai(nullable)]
    pub actor: Option<String>,
    /// The client's address, when known.
    #[oai(nullable)]
    pub client_ip: Option<String>,
    /// The request's id (as in `X-Request-Id` and the logs).
    #[oai(nullable)]
    pub request_id: Option<String>,
    /// Details: method and path, reason, ids, counts.
    pub detail: serde_json::Value,
}

impl From<AuditEvent> for AuditEventDto {
    fn from(e: AuditEvent) -> Self {
        Self {
            at: e.at,
            kind: e.kind,
            actor: e.actor.map(|a| a.to_string()),
            client_ip: e.client_ip,
            request_id: e.request_id,
            detail: e.detail,
        }
    }
}

/// A page of the audit trail.
#[derive(Debug, Clone, Object)]
#[oai(rename = "AuditPage")]
pub struct AuditPageDto {
    /// Events, newest first.
    pub events: Vec<AuditEventDto>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    #[oai(nullable)]
    pub next_before: Option<DateTime<Utc>>,
}

/// Responses of `GET /api/v1/admin/audit`.
#[derive(Debug, ApiResponse)]
pub enum AuditResponse {
    /// A page of events.
    #[oai(status = 200)]
    Ok(Json<AuditPageDto>),
    /// `invalid_request`: `limit` outside 1..=1000, `before` not an RFC 3339 time.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

/// The audit endpoint.
#[derive(Debug, Clone)]
pub struct AuditApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AuditApi {
    /// Audit trail
    ///
    /// Authentication failures, refused roles, rate-limit refusals, key
    /// changes, admin job removals and cleanups, newest first.
    #[oai(path = "/audit", method = "get", operation_id = "admin_audit")]
    async fn audit(
        &self,
        _auth: AdminKey,
        /// Events per page, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
        /// Only events strictly before this time (the previous page's
        /// `next_before`).
        before: Query<Option<DateTime<Utc>>>,
    ) -> Result<AuditResponse, AdminError> {
        let limit = limit.0.unwrap_or(100);
        let events = self
            .state
            .audit_log
            .recent(limit, before.0)
            .await
            .map_err(image2model_core::PipelineError::from)?;
        let next_before = if events.len() >= limit as usize {
            events.last().map(|e| e.at)
        } else {
            None
        };
        Ok(AuditResponse::Ok(Json(AuditPageDto {
            events: events.into_iter().map(AuditEventDto::from).collect(),
            next_before,
        })))
    }
}
