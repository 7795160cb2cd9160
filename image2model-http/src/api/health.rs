//! `/health` (liveness) and `/ready` (readiness), outside `/api/v1` and
//! without authentication: they reveal nothing but up or not.

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{IntoResponse, handler};
use serde_json::json;

use crate::state::AppState;

/// `{"status":"ok"}` while the process serves requests.
#[handler]
pub fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 `{"status":"ready"}` when the job store and the blob store answer,
/// else 503 `{"status":"unavailable"}` (details are for admins, in
/// `/api/v1/admin/system-health`).
#[handler]
pub async fn ready(state: Data<&AppState>) -> impl IntoResponse {
    let report = state.pipeline.health().await;
    if report.ready() {
        Json(json!({ "status": "ready" })).with_status(StatusCode::OK)
    } else {
        Json(json!({ "status": "unavailable" })).with_status(StatusCode::SERVICE_UNAVAILABLE)
    }
}
