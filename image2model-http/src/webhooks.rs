//! `POST /webhooks/fal`: fal's callbacks when a request ends.
//!
//! Served only when a FAL key is configured, outside `/api/v1` (fal sends no
//! bearer key, and the per-IP rate limits must not turn fal's retries into
//! 429s). Each call is authenticated by its Ed25519 signature against fal's
//! published key set ([`FalGenerator::handle_webhook`]); a valid one wakes the
//! generation waiting for that request in this process. Answers: 200 when
//! accepted (also for a request this process is not waiting for: another
//! worker follows it through its safety net), 401 for a missing or bad
//! signature, 400 for a malformed body, 413 past 1 MiB, and 503 when fal's
//! keys cannot be fetched (fal retries).
//!
//! [`FalGenerator::handle_webhook`]: image2model_core::generators::fal::FalGenerator::handle_webhook

use image2model_core::ErrorCode;
use poem::error::ReadBodyError;
use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{Body, IntoResponse, Request, Response, handler};
use serde_json::json;

use image2model_core::generators::fal::webhook::{MAX_BODY_BYTES, WebhookError};

use crate::error::ApiError;
use crate::state::AppState;

/// Receives one fal webhook (see the module docs).
#[handler]
pub async fn fal(req: &Request, body: Body, state: Data<&AppState>) -> Response {
    let Some(fal) = state.fal.as_ref() else {
        return ApiError::of(ErrorCode::NotFound, "no FAL generator").to_response();
    };
    let bytes = match body.into_bytes_limit(MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(ReadBodyError::PayloadTooLarge) => {
            return ApiError::of(
                ErrorCode::PayloadTooLarge,
                format!("a webhook body is at most {MAX_BODY_BYTES} bytes"),
            )
            .to_response();
        }
        Err(e) => {
            return ApiError::of(ErrorCode::InvalidRequest, e.to_string()).to_response();
        }
    };
    match fal.handle_webhook(req.headers(), &bytes).await {
        Ok(payload) => Json(json!({ "status": "ok", "request_id": payload.request_id }))
            .with_status(StatusCode::OK)
            .into_response(),
        Err(e) => {
            let status = match &e {
                _ if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
                WebhookError::Malformed(_) | WebhookError::RequestIdMismatch => {
                    StatusCode::BAD_REQUEST
                }
                WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::UNAUTHORIZED,
            };
            ApiError::new(status, e.code(), e.to_string()).to_response()
        }
    }
}
