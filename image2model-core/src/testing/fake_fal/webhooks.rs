//! The fake's webhooks: one task per request submitted with `fal_webhook`,
//! which sleeps until the request ends, then `POST`s its outcome signed as
//! fal signs (see [`crate::generators::fal::webhook`]), retrying a failed
//! delivery a few times; and the key set that verifies them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::server::{PhaseKind, phase, phase_end, result_response, sleep_until};
use super::{
    FAKE_WEBHOOK_USER_ID, FakeEventKind, FakeRequest, Shared, WEBHOOK_ATTEMPTS, WebhookAttempt,
    WebhookDelivery,
};
use crate::generators::fal::webhook::{
    HEADER_REQUEST_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_USER_ID, WebhookPayload,
    WebhookStatus,
};

/// The first retry's delay; each next one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The most of a result read into a webhook.
const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Starts the task that owes request `id`'s webhook to `url`.
pub(crate) fn spawn(s: Arc<Shared>, id: String, url: String, changes: watch::Receiver<()>) {
    tokio::spawn(async move {
        let shutdown = s.shutdown.clone();
        tokio::select! {
            () = run(s, id, url, changes) => {}
            () = shutdown.cancelled() => {}
        }
    });
}

async fn run(s: Arc<Shared>, id: String, url: String, mut changes: watch::Receiver<()>) {
    let request = loop {
        let Some(request) = s.state().requests.get(&id).cloned() else {
            return;
        };
        let kind = phase(&request, std::time::Instant::now()).kind();
        if kind == PhaseKind::Completed {
            break request;
        }
        tokio::select! {
            () = sleep_until(phase_end(&request, kind)) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    };
    let payload = outcome(&s, &id, &request).await;
    let body = serde_json::to_vec(&payload).unwrap_or_default();
    let delivery = s.state().webhook_delivery;
    if delivery == WebhookDelivery::Drop {
        s.counters.webhooks_dropped.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let signed = delivery == WebhookDelivery::Deliver;
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        s.counters.webhook_attempts.fetch_add(1, Ordering::SeqCst);
        let sent = post(&s, &url, &id, &body, signed).await;
        let (response, error) = match &sent {
            Ok(status) => (Some(*status), None),
            Err(e) => (None, Some(e.clone())),
        };
        s.state().webhook_log.push(WebhookAttempt {
            request_id: id.clone(),
            url: url.clone(),
            attempt,
            status: payload.status,
            signed,
            response,
            error,
        });
        if matches!(sent, Ok(status) if (200..300).contains(&status)) {
            s.counters.webhooks_sent.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    s.counters.webhooks_failed.fetch_add(1, Ordering::SeqCst);
}

/// The webhook body for an ended request, made from what its result
/// endpoint answers, as fal does.
async fn outcome(s: &Shared, id: &str, request: &FakeRequest) -> WebhookPayload {
    let mut payload = WebhookPayload {
        request_id: id.to_owned(),
        gateway_request_id: Some(id.to_owned()),
        status: WebhookStatus::Ok,
        payload: None,
        error: None,
        payload_error: None,
    };
    if request.cancelled {
        payload.status = WebhookStatus::Error;
        payload.error = Some("Request was cancelled".to_owned());
        return payload;
    }
    let response = result_response(s, id, request);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), MAX_RESULT_BYTES)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice::<Value>(&bytes).ok();
    if status.is_success() {
        if json.is_none() {
            payload.payload_error = Some(
                "Response payload is not JSON serializable. Either return a JSON serializable \
                 object or use the queue endpoint to retrieve the response."
                    .to_owned(),
            );
        }
        payload.payload = json;
    } else {
        payload.status = WebhookStatus::Error;
        payload.error = Some(format!("Invalid status code: {}", status.as_u16()));
        payload.payload = json;
    }
    payload
}

/// One delivery attempt: the HTTP status received, or why none was.
async fn post(s: &Shared, url: &str, id: &str, body: &[u8], signed: bool) -> Result<u16, String> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let message = format!(
        "{id}\n{FAKE_WEBHOOK_USER_ID}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    );
    let mut signature = s.webhook_keys().current.sign(message.as_bytes()).to_bytes();
    if !signed {
        signature[0] ^= 0x01;
    }
    s.http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_REQUEST_ID, id)
        .header(HEADER_USER_ID, FAKE_WEBHOOK_USER_ID)
        .header(HEADER_TIMESTAMP, timestamp)
        .header(HEADER_SIGNATURE, hex::encode(signature))
        .body(body.to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// `GET /.well-known/jwks.json`: the keys that verify the fake's webhooks,
/// as fal publishes its own (OKP / Ed25519, `x` base64url).
pub(crate) async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.counters.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Jwks, "GET /.well-known/jwks.json".to_owned());
    let keys = s.webhook_keys();
    let jwks: Vec<Value> = std::iter::once(&keys.current)
        .chain(keys.previous.as_ref())
        .map(|key| {
            let public = key.verifying_key().to_bytes();
            json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "use": "sig",
                "alg": "EdDSA",
                "kid": hex::encode(&public[..8]),
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
            })
        })
        .collect();
    drop(keys);
    (StatusCode::OK, axum::Json(json!({ "keys": jwks }))).into_response()
}
