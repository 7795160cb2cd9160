//! Verifying fal's webhook calls.
//!
//! When a request is submitted with `?fal_webhook=<url>`, fal `POST`s the
//! outcome to that URL once the request ends:
//!
//! ```json
//! {"request_id": "…", "gateway_request_id": "…", "status": "OK",
//!  "payload": {"model_mesh": {"url": "…"}}}
//! ```
//!
//! `status` is `OK` or `ERROR`; on `ERROR`, `error` holds a message (e.g.
//! `Invalid status code: 422`) and `payload` the error body; when the result
//! is not JSON, `payload` is `null` and `payload_error` says why.
//!
//! ## The signature (as fal documents it)
//!
//! Source: fal's webhook documentation, "Verifying Your Webhook"
//! (<https://fal.ai/docs/documentation/model-apis/inference/webhooks>, formerly
//! <https://docs.fal.ai/model-endpoints/webhooks>), read while writing this
//! module:
//!
//! - the public keys are a JSON Web Key Set at
//!   [`DEFAULT_JWKS_URL`] (`https://rest.fal.ai/.well-known/jwks.json`; the
//!   older page named `https://rest.alpha.fal.ai/.well-known/jwks.json`); each
//!   key's `x` is a base64url Ed25519 public key (some publish it padded);
//!   the set "is cacheable … do not cache longer than 24 hours since they can
//!   change";
//! - four headers, all required: `X-Fal-Webhook-Request-Id`,
//!   `X-Fal-Webhook-User-Id`, `X-Fal-Webhook-Timestamp` (Unix seconds) and
//!   `X-Fal-Webhook-Signature` (hex);
//! - the timestamp must be within ±300 s of now (replays are refused);
//! - the signed message is the UTF-8 of
//!   `request_id \n user_id \n timestamp \n hex(sha256(raw body))`;
//! - the signature is valid if any key of the set verifies it (Ed25519).
//!
//! fal gives a delivery 15 s and retries a failed one 10 times over 2 hours,
//! so a handler must be idempotent on `request_id`. Answer a
//! [`WebhookError::is_transient`] failure with a 5xx (fal will retry), any
//! other with a 4xx.
//!
//! ## This verifier
//!
//! [`WebhookVerifier`] checks, in order: body size, headers, timestamp
//! window, signature shape, signature against the cached key set, and only
//! then parses the body, whose `request_id` must equal the header's. The key
//! set is fetched on first use and kept for [`DEFAULT_CACHE_TTL`]; it is
//! fetched again, at most once per [`DEFAULT_MIN_REFETCH_INTERVAL`], when it
//! is stale or when no key verifies a signature (fal rotated its keys). A
//! failed fetch keeps the set already held. One fetch runs at a time, however
//! many webhooks wait for it. Nothing secret passes through here; bodies and
//! signatures are never logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// fal's JSON Web Key Set (see the module docs for the source).
pub const DEFAULT_JWKS_URL: &str = "https://rest.fal.ai/.well-known/jwks.json";

/// The request id header.
pub const HEADER_REQUEST_ID: &str = "x-fal-webhook-request-id";
/// The user id header.
pub const HEADER_USER_ID: &str = "x-fal-webhook-user-id";
/// The timestamp header (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-fal-webhook-timestamp";
/// The signature header (hex of the 64-byte Ed25519 signature).
pub const HEADER_SIGNATURE: &str = "x-fal-webhook-signature";

/// How far the timestamp may be from now, either way (fal: ±300 s).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// How long a fetched key set is used before it is fetched again (fal: at
/// most 24 hours).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(12 * 3600);
/// The least time between two fetches of the key set.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// The largest body accepted. fal's payloads carry file URLs, not files: an
/// image-to-3D result is well under 10 KB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest key set read.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long one key set fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How a request ended, as the webhook says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookStatus {
    /// `OK`: `payload` is the model's result.
    Ok,
    /// `ERROR`: `error` says what went wrong, `payload` may hold the details.
    Error,
}

/// A verified webhook body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// The queue's request id (the one submit returned).
    pub request_id: String,
    /// The id of the last attempt, when fal retried the request.
    #[serde(default)]
    pub gateway_request_id: Option<String>,
    /// `OK` or `ERROR`.
    pub status: WebhookStatus,
    /// The result JSON (or the error body); `None` when `null` or absent.
    #[serde(default)]
    pub payload: Option<Value>,
    /// The error message on `ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why `payload` is `null` although the request succeeded (the result
    /// was not JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_error: Option<String>,
}

/// Why a webhook call was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("webhook body of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A required header is missing, empty or not text.
    #[error("webhook header {0} is missing")]
    MissingHeader(&'static str),
    /// The timestamp header is not a number of seconds.
    #[error("webhook timestamp is not a Unix time")]
    BadTimestamp,
    /// The timestamp is too far in the past or the future.
    #[error("webhook timestamp is {skew_secs} s away from now (tolerance {tolerance_secs} s)")]
    StaleTimestamp {
        /// Now minus the timestamp (negative: in the future).
        skew_secs: i64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// The signature is not 64 hex-encoded bytes, or no key verifies it.
    #[error("webhook signature does not verify")]
    BadSignature,
    /// No key set is held and it could not be fetched.
    #[error("fal's webhook keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// The (signed) body is not a webhook body.
    #[error("webhook body is malformed: {0}")]
    Malformed(String),
    /// The body's `request_id` is not the signed header's.
    #[error("webhook body's request_id differs from its signed header")]
    RequestIdMismatch,
}

impl WebhookError {
    /// A stable snake_case code for logs, metrics and API answers.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::TooLarge { .. } => "too_large",
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::BadTimestamp => "bad_timestamp",
            WebhookError::StaleTimestamp { .. } => "stale_timestamp",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::KeysUnavailable(_) => "keys_unavailable",
            WebhookError::Malformed(_) => "malformed",
            WebhookError::RequestIdMismatch => "request_id_mismatch",
        }
    }

    /// Whether the same call may verify later (the keys could not be
    /// fetched): answer it with a 5xx so fal retries; anything else is
    /// refused for good (4xx).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, WebhookError::KeysUnavailable(_))
    }
}

/// Verifies fal's webhook calls against fal's published keys. `Send + Sync`;
/// share one in an `Arc` so every handler uses the same cached key set.
#[derive(Debug)]
pub struct WebhookVerifier {
    jwks_url: url::Url,
    http: reqwest::Client,
    tolerance: Duration,
    cache_ttl: Duration,
    min_refetch: Duration,
    cache: Mutex<KeyCache>,
    /// Held while fetching, so concurrent calls wait for one fetch.
    fetching: tokio::sync::Mutex<()>,
}

type KeySet = Arc<[VerifyingKey]>;

#[derive(Debug, Default)]
struct KeyCache {
    keys: Option<KeySet>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl WebhookVerifier {
    /// A verifier that fetches keys from `jwks_url` (normally
    /// [`DEFAULT_JWKS_URL`]) with `http`. Nothing is fetched until the first
    /// call.
    #[must_use]
    pub fn new(jwks_url: url::Url, http: reqwest::Client) -> Self {
        Self {
            jwks_url,
            http,
            tolerance: DEFAULT_TOLERANCE,
            cache_ttl: DEFAULT_CACHE_TTL,
            min_refetch: DEFAULT_MIN_REFETCH_INTERVAL,
            cache: Mutex::new(KeyCache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// How far a timestamp may be from now, either way (default
    /// [`DEFAULT_TOLERANCE`], fal's 300 s).
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How long a fetched key set is trusted before it is fetched again
    /// (default [`DEFAULT_CACHE_TTL`]; fal asks for at most 24 hours).
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The least time between two fetches of the key set (default
    /// [`DEFAULT_MIN_REFETCH_INTERVAL`]): bounds what forged calls can make
    /// us fetch.
    #[must_use]
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch = interval;
        self
    }

    /// The key set URL.
    #[must_use]
    pub fn jwks_url(&self) -> &url::Url {
        &self.jwks_url
    }

    /// Verifies one call: its headers and its raw body, byte for byte as
    /// received (not re-serialized).
    ///
    /// # Errors
    /// [`WebhookError`] when the call is not fal's, is stale, or the keys
    /// cannot be had (see [`WebhookError::is_transient`]).
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<WebhookPayload, WebhookError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WebhookError::TooLarge {
                size: body.len(),
                limit: MAX_BODY_BYTES,
            });
        }
        let request_id = header(headers, HEADER_REQUEST_ID)?;
        let user_id = header(headers, HEADER_USER_ID)?;
        let timestamp = header(headers, HEADER_TIMESTAMP)?;
        let signature = header(headers, HEADER_SIGNATURE)?;

        self.check_timestamp(timestamp)?;
        let signature = parse_signature(signature)?;
        let message = signed_message(request_id, user_id, timestamp, body);

        let keys = self.keys().await?;
        if !verifies(&keys, &message, &signature) {
            // fal may have rotated its keys since we fetched them.
            let fresh = self.refresh(Some(&keys)).await;
            let verified = fresh
                .as_ref()
                .is_some_and(|f| !Arc::ptr_eq(f, &keys) && verifies(f, &message, &signature));
            if !verified {
                return Err(WebhookError::BadSignature);
            }
        }

        let payload: WebhookPayload =
            serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        if payload.request_id != request_id {
            return Err(WebhookError::RequestIdMismatch);
        }
        Ok(payload)
    }

    fn check_timestamp(&self, timestamp: &str) -> Result<(), WebhookError> {
        let sent: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadTimestamp)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let skew = now.saturating_sub(sent);
        let tolerance = self.tolerance.as_secs();
        if skew.unsigned_abs() > tolerance {
            return Err(WebhookError::StaleTimestamp {
                skew_secs: skew,
                tolerance_secs: tolerance,
            });
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key set to verify with: the cached one while fresh, else a fetched
    /// one (or the stale one when the fetch fails).
    async fn keys(&self) -> Result<KeySet, WebhookError> {
        let held = {
            let cache = self.cache();
            let fresh = cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < self.cache_ttl);
            match &cache.keys {
                Some(keys) if fresh => return Ok(keys.clone()),
                keys => keys.clone(),
            }
        };
        self.refresh(held.as_ref()).await.ok_or_else(|| {
            WebhookError::KeysUnavailable(format!("no key set fetched from {} yet", self.jwks_url))
        })
    }

    /// Fetches the key set unless another call did since `seen` was read or
    /// the last attempt is too recent; returns the set then held.
    async fn refresh(&self, seen: Option<&KeySet>) -> Option<KeySet> {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut cache = self.cache();
            let changed = match (&cache.keys, seen) {
                (Some(now), Some(seen)) => !Arc::ptr_eq(now, seen),
                (Some(_), None) => true,
                (None, _) => false,
            };
            let too_soon = cache
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.min_refetch);
            if changed || too_soon {
                return cache.keys.clone();
            }
            cache.last_attempt = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.jwks_url, keys = keys.len(), "fetched fal's webhook keys");
                let mut cache = self.cache();
                cache.keys = Some(keys.clone());
                cache.fetched_at = Some(Instant::now());
                Some(keys)
            }
            Err(error) => {
                let cache = self.cache();
                tracing::warn!(
                    url = %self.jwks_url,
                    %error,
                    keeping_cached = cache.keys.is_some(),
                    "could not fetch fal's webhook keys"
                );
                cache.keys.clone()
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let mut response = self
            .http
            .get(self.jwks_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(JWKS_FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err("key set too large".into());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if bytes.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("key set too large".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        parse_jwks(&bytes)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::MissingHeader(name))
}

fn parse_signature(hex_signature: &str) -> Result<Signature, WebhookError> {
    let bytes = hex::decode(hex_signature).map_err(|_| WebhookError::BadSignature)?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|_| WebhookError::BadSignature)?;
    Ok(Signature::from_bytes(&bytes))
}

/// `request_id \n user_id \n timestamp \n hex(sha256(body))`, as fal signs it.
fn signed_message(request_id: &str, user_id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(body));
    format!("{request_id}\n{user_id}\n{timestamp}\n{digest}").into_bytes()
}

fn verifies(keys: &[VerifyingKey], message: &[u8], signature: &Signature) -> bool {
    keys.iter()
        .any(|key| key.verify_strict(message, signature).is_ok())
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
}

/// The Ed25519 keys of a JSON Web Key Set; others are skipped.
fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let jwks: Jwks = serde_json::from_slice(bytes).map_err(|e| format!("not a key set: {e}"))?;
    let keys: Vec<VerifyingKey> = jwks
        .keys
        .iter()
        .filter(|k| k.kty.as_deref().is_none_or(|t| t == "OKP"))
        .filter(|k| k.crv.as_deref().is_none_or(|c| c == "Ed25519"))
        .filter_map(|k| {
            let x = k.x.as_deref()?.trim_end_matches('=');
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .ok()?;
            VerifyingKey::from_bytes(&raw.try_into().ok()?).ok()
        })
        .collect();
    if keys.is_empty() {
        return Err("the key set holds no Ed25519 key".into());
    }
    Ok(keys.into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ed25519_dalek::{Signer, SigningKey};
    use reqwest::header::HeaderValue;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn jwk(key: &SigningKey) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(key.verifying_key().as_bytes()),
        })
    }

    /// What the test JWKS server answers: a status and a body.
    #[derive(Clone)]
    struct Answer(u16, String);

    /// A one-route HTTP server for the key set, counting fetches.
    struct JwksServer {
        url: url::Url,
        answer: Arc<Mutex<Answer>>,
        fetches: Arc<AtomicUsize>,
    }

    impl JwksServer {
        async fn start(keys: &[&SigningKey]) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            )
            .parse()
            .unwrap();
            let server = JwksServer {
                url,
                answer: Arc::new(Mutex::new(Answer(200, String::new()))),
                fetches: Arc::new(AtomicUsize::new(0)),
            };
            server.serve_keys(keys);
            let (answer, fetches) = (server.answer.clone(), server.fetches.clone());
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let Answer(status, body) = answer.lock().unwrap().clone();
                    fetches.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            server
        }

        fn serve_keys(&self, keys: &[&SigningKey]) {
            let body = json!({ "keys": keys.iter().map(|k| jwk(k)).collect::<Vec<_>>() });
            *self.answer.lock().unwrap() = Answer(200, body.to_string());
        }

        fn fail(&self) {
            *self.answer.lock().unwrap() = Answer(503, "{}".into());
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn verifier(&self) -> WebhookVerifier {
            WebhookVerifier::new(self.url.clone(), reqwest::Client::new())
        }
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .try_into()
            .unwrap()
    }

    fn body(request_id: &str) -> Vec<u8> {
        json!({
            "request_id": request_id,
            "gateway_request_id": request_id,
            "status": "OK",
            "payload": {"model_mesh": {"url": "https://v3.fal.media/files/x/model.glb"}},
        })
        .to_string()
        .into_bytes()
    }

    /// Headers as fal sends them, built from the documentation's recipe
    /// (independently of `signed_message`).
    fn signed(key: &SigningKey, request_id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let message = format!(
            "{request_id}\nuser-123\n{timestamp}\n{}",
            hex::encode(Sha256::digest(body))
        );
        let signature = hex::encode(key.sign(message.as_bytes()).to_bytes());
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("X-Fal-Webhook-Request-Id", request_id.to_owned()),
            ("X-Fal-Webhook-User-Id", "user-123".to_owned()),
            ("X-Fal-Webhook-Timestamp", timestamp.to_string()),
            ("X-Fal-Webhook-Signature", signature),
        ] {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        headers
    }

    #[tokio::test]
    async fn a_good_signature_verifies_and_the_body_is_parsed() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = server.verifier();
        let body = body("req-1");

        let payload = verifier
            .verify(&signed(&k, "req-1", now(), &body), &body)
            .await
            .unwrap();

        assert_eq!(payload.request_id, "req-1");
        assert_eq!(payload.gateway_request_id.as_deref(), Some("req-1"));
        assert_eq!(payload.status, WebhookStatus::Ok);
        assert_eq!(
            payload.payload.unwrap()["model_mesh"]["url"],
            "https://v3.fal.media/files/x/model.glb"
        );
        assert_eq!(payload.error, None);
        // A second call uses the cached set.
        verifier
            .verify(&signed(&k, "req-1", now(), &body), &body)
            .await
            .unwrap();
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn an_error_webhook_parses_with_its_message_and_null_payload() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let body = br#"{"request_id":"r","gateway_request_id":"r","status":"ERROR","error":"Invalid status code: 422","payload":null}"#;

        let payload = server
            .verifier()
            .verify(&signed(&k, "r", now(), body), body)
            .await
            .unwrap();

        assert_eq!(payload.status, WebhookStatus::Error);
        assert_eq!(payload.error.as_deref(), Some("Invalid status code: 422"));
        assert_eq!(payload.payload, None);
    }

    #[tokio::test]
    async fn a_tampered_body_is_refused() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let body = body("req-1");
        let headers = signed(&k, "req-1", now(), &body);
        let tampered = String::from_utf8(body).unwrap().replace("OK", "ERROR");

        let err = server
            .verifier()
            .verify(&headers, tampered.as_bytes())
            .await
            .unwrap_err();

        assert_eq!(err.code(), "bad_signature");
    }

    #[tokio::test]
    async fn a_signature_by_another_key_is_refused() {
        let server = JwksServer::start(&[&key(1)]).await;
        let verifier = server.verifier();
        let body = body("req-1");

        let err = verifier
            .verify(&signed(&key(2), "req-1", now(), &body), &body)
            .await
            .unwrap_err();

        assert_eq!(err.code(), "bad_signature");
        // The refetch it triggered is rate limited: a second forgery fetches
        // nothing more.
        assert_eq!(server.fetches(), 1);
        let err = verifier
            .verify(&signed(&key(2), "req-1", now(), &body), &body)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "bad_signature");
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn stale_and_future_timestamps_are_refused() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = server.verifier();
        let body = body("req-1");

        let old = verifier
            .verify(&signed(&k, "req-1", now() - 301, &body), &body)
            .await
            .unwrap_err();
        let future = verifier
            .verify(&signed(&k, "req-1", now() + 301, &body), &body)
            .await
            .unwrap_err();
        let within = verifier
            .verify(&signed(&k, "req-1", now() - 250, &body), &body)
            .await;
        let tight = server
            .verifier()
            .with_tolerance(Duration::from_secs(10))
            .verify(&signed(&k, "req-1", now() - 60, &body), &body)
            .await
            .unwrap_err();

        assert_eq!(old.code(), "stale_timestamp");
        assert!(matches!(old, WebhookError::StaleTimestamp { skew_secs, .. } if skew_secs >= 301));
        assert_eq!(future.code(), "stale_timestamp");
        assert!(within.is_ok());
        assert_eq!(tight.code(), "stale_timestamp");
        // The window is checked before any key is fetched.
        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn missing_or_garbled_headers_are_refused() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = server.verifier();
        let body = body("req-1");

        for name in [
            HEADER_REQUEST_ID,
            HEADER_USER_ID,
            HEADER_TIMESTAMP,
            HEADER_SIGNATURE,
        ] {
            let mut headers = signed(&k, "req-1", now(), &body);
            headers.remove(name);
            let err = verifier.verify(&headers, &body).await.unwrap_err();
            assert_eq!(err.code(), "missing_header", "{name}");
            assert!(err.to_string().contains(name));
        }
        let mut headers = signed(&k, "req-1", now(), &body);
        headers.insert(HEADER_TIMESTAMP, HeaderValue::from_static("yesterday"));
        assert_eq!(
            verifier.verify(&headers, &body).await.unwrap_err().code(),
            "bad_timestamp"
        );
        let mut headers = signed(&k, "req-1", now(), &body);
        headers.insert(HEADER_SIGNATURE, HeaderValue::from_static("zz-not-hex"));
        assert_eq!(
            verifier.verify(&headers, &body).await.unwrap_err().code(),
            "bad_signature"
        );
        let mut headers = signed(&k, "req-1", now(), &body);
        headers.insert(HEADER_SIGNATURE, HeaderValue::from_static("abcd"));
        assert_eq!(
            verifier.verify(&headers, &body).await.unwrap_err().code(),
            "bad_signature"
        );
        assert_eq!(server.fetches(), 0);
    }

    #[tokio::test]
    async fn an_unknown_key_refetches_the_set_once() {
        let (old, new) = (key(1), key(2));
        let server = JwksServer::start(&[&old]).await;
        let verifier = server
            .verifier()
            .with_min_refetch_interval(Duration::from_millis(50));
        let body = body("req-1");
        verifier
            .verify(&signed(&old, "req-1", now(), &body), &body)
            .await
            .unwrap();
        assert_eq!(server.fetches(), 1);

        // fal rotates: the new key signs, the set lists both.
        server.serve_keys(&[&old, &new]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let payload = verifier
            .verify(&signed(&new, "req-1", now(), &body), &body)
            .await
            .unwrap();

        assert_eq!(payload.request_id, "req-1");
        assert_eq!(server.fetches(), 2);
        // Both keys verify now without more fetches.
        for k in [&old, &new] {
            verifier
                .verify(&signed(k, "req-1", now(), &body), &body)
                .await
                .unwrap();
        }
        assert_eq!(server.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_cached_set() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = server
            .verifier()
            .with_cache_ttl(Duration::from_millis(20))
            .with_min_refetch_interval(Duration::ZERO);
        let body = body("req-1");
        verifier
            .verify(&signed(&k, "req-1", now(), &body), &body)
            .await
            .unwrap();

        server.fail();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let payload = verifier
            .verify(&signed(&k, "req-1", now(), &body), &body)
            .await;

        assert!(payload.is_ok(), "{payload:?}");
        assert_eq!(server.fetches(), 2, "the stale set was refetched");
    }

    #[tokio::test]
    async fn no_keys_at_all_is_a_transient_error() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        server.fail();
        let body = body("req-1");

        let err = server
            .verifier()
            .verify(&signed(&k, "req-1", now(), &body), &body)
            .await
            .unwrap_err();

        assert_eq!(err.code(), "keys_unavailable");
        assert!(err.is_transient());
        assert!(!WebhookError::BadSignature.is_transient());
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_fetch() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = Arc::new(server.verifier());
        let body = Arc::new(body("req-1"));

        let calls: Vec<_> = (0..16)
            .map(|_| {
                let (verifier, body, headers) = (
                    verifier.clone(),
                    body.clone(),
                    signed(&k, "req-1", now(), &body),
                );
                tokio::spawn(async move { verifier.verify(&headers, &body).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }

        assert_eq!(server.fetches(), 1);
    }

    #[tokio::test]
    async fn the_body_must_name_the_signed_request_and_parse() {
        let k = key(1);
        let server = JwksServer::start(&[&k]).await;
        let verifier = server.verifier();
        let other = body("req-2");
        let garbage = b"not json";

        let mismatch = verifier
            .verify(&signed(&k, "req-1", now(), &other), &other)
            .await
            .unwrap_err();
        let malformed = verifier
            .verify(&signed(&k, "req-1", now(), garbage), garbage)
            .await
            .unwrap_err();
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let too_large = verifier
            .verify(&signed(&k, "req-1", now(), &big), &big)
            .await
            .unwrap_err();

        assert_eq!(mismatch.code(), "request_id_mismatch");
        assert_eq!(malformed.code(), "malformed");
        assert_eq!(too_large.code(), "too_large");
    }

    #[test]
    fn the_key_set_accepts_padded_keys_and_skips_others() {
        let k = key(1);
        let padded = format!(
            "{}=",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())
        );
        let set = json!({"keys": [
            {"kty": "RSA", "n": "abc", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "x": "not*base64"},
            {"kty": "OKP", "crv": "Ed25519", "x": padded},
        ]});

        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();

        assert_eq!(&*keys, &[k.verifying_key()]);
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn the_message_is_fals_recipe() {
        let message = signed_message("r", "u", "17", b"{}");
        assert_eq!(
            String::from_utf8(message).unwrap(),
            "r\nu\n17\n44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn the_verifier_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WebhookVerifier>();
        assert_send_sync::<WebhookError>();
    }
}
