//! The HTTP side of the FAL generator: one call at a time, retried per the
//! [`RetryPolicy`](super::RetryPolicy), with fal's status codes mapped onto
//! [`GenerateError`]s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::config::{FalConfig, join};
use super::models::EndpointId;
use super::protocol::{
    CONTENT_POLICY_VIOLATION, StatusResponse, SubmitResponse, UploadInitiate, error_message,
    headers, parse_status, parse_submit, parse_upload_target, validation_details,
};
use super::retry::{CallKind, is_retryable, retry_after};
use crate::domain::ImageKind;
use crate::ports::GenerateError;

/// A finished HTTP exchange whose body has been read (for errors and small
/// JSON answers).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// The answer to a status poll.
#[derive(Debug)]
pub(crate) enum StatusAnswer {
    /// A parsed status (202 queued/running or 200 completed).
    Status(StatusResponse),
    /// fal does not know the request (404).
    Unknown,
}

/// Talks to fal's queue and storage hosts.
///
/// Two connection pools, each shared by every request of the process:
/// - `http` for short calls (submit, status, result, cancel, storage and
///   file downloads): HTTP/2 where the host offers it (ALPN), else pooled
///   HTTP/1.1 keep-alive connections;
/// - `streams` for status streams, HTTP/1.1 only: a stream lasts as long as
///   its request runs, and on one HTTP/2 connection a few hundred of them
///   would reach the host's concurrent-stream limit and queue the short calls
///   behind them.
#[derive(Debug, Clone)]
pub(crate) struct FalClient {
    http: reqwest::Client,
    streams: reqwest::Client,
    config: Arc<FalConfig>,
}

impl FalClient {
    /// A client with the configured connect and read timeouts.
    pub(crate) fn new(config: Arc<FalConfig>) -> Result<Self, GenerateError> {
        let build = |b: reqwest::ClientBuilder| {
            b.connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .user_agent(concat!("image2model/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| GenerateError::Internal(format!("building the HTTP client: {e}")))
        };
        let http = build(reqwest::Client::builder())?;
        let streams = build(reqwest::Client::builder().http1_only())?;
        Ok(Self {
            http,
            streams,
            config,
        })
    }

    pub(crate) fn config(&self) -> &FalConfig {
        &self.config
    }

    /// The pool for short calls (shared with the webhook key-set fetches).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `Authorization: Key …`, marked sensitive so it never shows in logs.
    fn auth(&self) -> Result<HeaderValue, GenerateError> {
        let mut value =
            HeaderValue::from_str(&format!("Key {}", self.config.credentials.expose_secret()))
                .map_err(|_| {
                    GenerateError::Account("the FAL key is not a valid header value".into())
                })?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn queue_url(&self, path: &str) -> String {
        join(&self.config.queue_base_url, path)
    }

    /// `…/[namespace/]owner/app/requests/{id}`: never the sub path. The id has
    /// passed [`is_valid_request_id`](super::protocol::is_valid_request_id).
    fn request_url(&self, endpoint: &EndpointId, request_id: &str, suffix: &str) -> String {
        self.queue_url(&format!(
            "{}/requests/{request_id}{suffix}",
            endpoint.requests_prefix(),
        ))
    }

    /// Sends the request built by `build`, retrying connection errors and
    /// retryable statuses. Returns the first non-retryable response, or the
    /// last one when retries run out; `Unavailable` when the service could not
    /// be reached at all.
    async fn send(
        &self,
        what: &str,
        kind: CallKind,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, GenerateError> {
        let policy = &self.config.retry;
        let max = match kind {
            CallKind::Call => policy.max_retries,
            CallKind::StatusPoll => policy.status_max_retries,
        };
        let mut attempt = 0u32;
        let call = match kind {
            CallKind::Call => "call",
            CallKind::StatusPoll => "status",
        };
        loop {
            let sent = build().send().await;
            let outcome = match &sent {
                Ok(r) if r.status().is_success() => "ok",
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => "http_429",
                Ok(r) if r.status().is_client_error() => "http_4xx",
                Ok(_) => "http_5xx",
                Err(_) => "unreachable",
            };
            metrics::counter!("image2model_fal_calls_total", "call" => call, "outcome" => outcome)
                .increment(1);
            let (wait, failure) = match sent {
                Ok(response) => {
                    let status = response.status();
                    let hinted_final = response
                        .headers()
                        .get(headers::RETRYABLE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
                    if !is_retryable(status, kind)
                        || hinted_final
                        || is_user_timeout(status, response.headers())
                        || attempt >= max
                    {
                        return Ok(response);
                    }
                    let after = (status == StatusCode::TOO_MANY_REQUESTS)
                        .then(|| retry_after(response.headers()))
                        .flatten();
                    (policy.wait(attempt, after), format!("HTTP {status}"))
                }
                Err(e) => {
                    if attempt >= max {
                        return Err(GenerateError::Unavailable(format!(
                            "{what}: {} after {attempt} retries",
                            describe(&e)
                        )));
                    }
                    (policy.backoff(attempt), describe(&e))
                }
            };
            tracing::debug!(what, attempt, ?wait, failure, "fal call failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Reads a response whole (bounded: error and JSON bodies are small).
    async fn read(what: &str, response: Response) -> Result<Answer, GenerateError> {
        const MAX_BODY: usize = 4 * 1024 * 1024;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                GenerateError::Unavailable(format!("{what}: reading the answer: {}", describe(&e)))
            })?;
            if body.len() + chunk.len() > MAX_BODY {
                return Err(GenerateError::Upstream(format!(
                    "{what}: answer larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Uploads an image to fal storage and returns its `file_url`.
    pub(crate) async fn upload(
        &self,
        image: Bytes,
        kind: ImageKind,
    ) -> Result<String, GenerateError> {
        let auth = self.auth()?;
        let url = join(
            &self.config.storage_base_url,
            "storage/upload/initiate?storage_type=fal-cdn-v3",
        );
        let body = UploadInitiate {
            content_type: kind.mime().to_owned(),
            file_name: format!("image.{}", kind.extension()),
        };
        let response = self
            .send("upload initiate", CallKind::Call, || {
                self.http
                    .post(&url)
                    .header(AUTHORIZATION, auth.clone())
                    .json(&body)
            })
            .await?;
        let answer = Self::read("upload initiate", response).await?;
        if !answer.status.is_success() {
            return Err(error_for("upload initiate", &answer, CallKind::Call));
        }
        let target = parse_upload_target(&answer.body)?;
        // The upload URL is presigned: the key is not sent there.
        let response = self
            .send("upload", CallKind::Call, || {
                self.http
                    .put(&target.upload_url)
                    .header(CONTENT_TYPE, kind.mime())
                    .body(image.clone())
            })
            .await?;
        let answer = Self::read("upload", response).await?;
        if !answer.status.is_success() {
            return Err(unauthenticated_error("upload", &answer));
        }
        Ok(target.file_url)
    }

    /// Submits `input` to the endpoint (the whole id), asking fal to call
    /// `webhook` when the request ends. The answer's request id has passed
    /// [`is_valid_request_id`](super::protocol::is_valid_request_id).
    pub(crate) async fn submit(
        &self,
        endpoint: &EndpointId,
        input: &Value,
        queue_timeout: Option<Duration>,
        webhook: Option<&url::Url>,
    ) -> Result<SubmitResponse, GenerateError> {
        let auth = self.auth()?;
        let mut url = self.queue_url(endpoint.as_str());
        if let Some(hook) = webhook {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("fal_webhook", hook.as_str())
                .finish();
            url = format!("{url}?{query}");
        }
        let response = self
            .send("submit", CallKind::Call, || {
                let mut rb = self
                    .http
                    .post(&url)
                    .header(AUTHORIZATION, auth.clone())
                    .json(input);
                if let Some(t) = queue_timeout {
                    rb = rb.header(headers::REQUEST_TIMEOUT, t.as_secs().max(1).to_string());
                }
                rb
            })
            .await?;
        let answer = Self::read("submit", response).await?;
        if !answer.status.is_success() {
            return Err(error_for("submit", &answer, CallKind::Call));
        }
        parse_submit(&answer.body)
    }

    /// Polls a request's status once (with retries).
    pub(crate) async fn status(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<StatusAnswer, GenerateError> {
        let auth = self.auth()?;
        let url = self.request_url(endpoint, request_id, "/status?logs=1");
        let response = self
            .send("status", CallKind::StatusPoll, || {
                self.http.get(&url).header(AUTHORIZATION, auth.clone())
            })
            .await?;
        let answer = Self::read("status", response).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(StatusAnswer::Unknown);
        }
        if !answer.status.is_success() {
            return Err(error_for("status", &answer, CallKind::StatusPoll));
        }
        parse_status(&answer.body).map(StatusAnswer::Status)
    }

    /// Opens a request's status stream (`…/status/stream?logs=1`), once: the
    /// caller falls back to polling when it fails. `Ok(None)` when fal does
    /// not know the request; a retryable failure is `Unavailable`.
    pub(crate) async fn status_stream(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<Option<Response>, GenerateError> {
        let auth = self.auth()?;
        let url = self.request_url(endpoint, request_id, "/status/stream?logs=1");
        let response = self
            .streams
            .get(&url)
            .header(AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| GenerateError::Unavailable(format!("status stream: {}", describe(&e))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = Self::read("status stream", response).await?;
        Err(error_for("status stream", &answer, CallKind::StatusPoll))
    }

    /// Fetches a completed request's result: status code and body as fal sent
    /// them (retryable statuses retried first).
    pub(crate) async fn result(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
    ) -> Result<Answer, GenerateError> {
        let auth = self.auth()?;
        let url = self.request_url(endpoint, request_id, "");
        let response = self
            .send("result", CallKind::Call, || {
                self.http.get(&url).header(AUTHORIZATION, auth.clone())
            })
            .await?;
        Self::read("result", response).await
    }

    /// Asks fal to cancel a request: best effort, one try, short timeout.
    pub(crate) async fn cancel(&self, endpoint: &EndpointId, request_id: &str) {
        let Ok(auth) = self.auth() else { return };
        let url = self.request_url(endpoint, request_id, "/cancel");
        let sent = self
            .http
            .put(&url)
            .header(AUTHORIZATION, auth)
            .timeout(self.config.cancel_timeout)
            .send()
            .await;
        match sent {
            Ok(r) => tracing::info!(request_id, status = %r.status(), "fal cancel sent"),
            Err(e) => tracing::warn!(request_id, error = %describe(&e), "fal cancel failed"),
        }
    }

    /// Starts downloading a file (public URL: no credentials), retrying
    /// connection errors and retryable statuses.
    pub(crate) async fn download(&self, what: &str, url: &str) -> Result<Response, GenerateError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| GenerateError::InvalidOutput(format!("{what}: bad URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(GenerateError::InvalidOutput(format!(
                "{what}: URL scheme {} is not http(s)",
                parsed.scheme()
            )));
        }
        let response = self
            .send(what, CallKind::Call, || self.http.get(parsed.clone()))
            .await?;
        if !response.status().is_success() {
            let answer = Self::read(what, response).await?;
            return Err(unauthenticated_error(what, &answer));
        }
        Ok(response)
    }
}

/// Whether a 504 is our own queue timeout (`X-Fal-Request-Timeout-Type: user`).
fn is_user_timeout(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::GATEWAY_TIMEOUT
        && headers
            .get(headers::REQUEST_TIMEOUT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("user"))
}

/// Maps a failed answer onto a [`GenerateError`].
pub(crate) fn error_for(what: &str, answer: &Answer, kind: CallKind) -> GenerateError {
    let message = error_message(&answer.body);
    let status = answer.status;
    match status.as_u16() {
        401 | 403 => GenerateError::Account(format!("{what}: HTTP {status}: {message}")),
        422 | 400 => {
            let details = validation_details(&answer.body);
            if details.iter().any(|d| d.kind == CONTENT_POLICY_VIOLATION)
                || answer
                    .headers
                    .get(headers::ERROR_TYPE)
                    .is_some_and(|v| v.as_bytes() == CONTENT_POLICY_VIOLATION.as_bytes())
            {
                GenerateError::ContentPolicy(message)
            } else {
                GenerateError::InvalidInput(message)
            }
        }
        504 if is_user_timeout(status, &answer.headers) => GenerateError::Timeout(format!(
            "the request waited longer than its queue timeout ({message})"
        )),
        _ if is_retryable(status, kind) => {
            GenerateError::Unavailable(format!("{what}: HTTP {status}: {message}"))
        }
        _ => GenerateError::Upstream(format!("{what}: HTTP {status}: {message}")),
    }
}

/// Maps a failed answer from a URL we send no key to (a presigned upload or a
/// CDN file): a 401/403 there is an expired link, not an account problem, and
/// must not mark the generator unhealthy.
fn unauthenticated_error(what: &str, answer: &Answer) -> GenerateError {
    match error_for(what, answer, CallKind::Call) {
        GenerateError::Account(message) => GenerateError::Upstream(message),
        other => other,
    }
}

/// A reqwest error without its URL (URLs may carry signed tokens).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "body failed"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, hdrs: &[(&'static str, &'static str)]) -> Answer {
        let mut headers = HeaderMap::new();
        for (k, v) in hdrs {
            headers.insert(*k, HeaderValue::from_static(v));
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body: body.to_owned(),
        }
    }

    #[test]
    fn statuses_map_to_error_codes() {
        let code = |a: Answer| error_for("x", &a, CallKind::Call).code();
        assert_eq!(
            code(answer(401, r#"{"detail":"No user found"}"#, &[])),
            "generator_account_error"
        );
        assert_eq!(
            code(answer(403, r#"{"detail":"User is locked"}"#, &[])),
            "generator_account_error"
        );
        assert_eq!(
            code(answer(
                422,
                r#"{"detail":[{"msg":"m","type":"value_error"}]}"#,
                &[]
            )),
            "generation_rejected"
        );
        assert_eq!(
            code(answer(
                422,
                r#"{"detail":[{"msg":"m","type":"content_policy_violation"}]}"#,
                &[]
            )),
            "content_policy_violation"
        );
        assert_eq!(code(answer(503, "{}", &[])), "generator_unavailable");
        assert_eq!(
            code(answer(504, "{}", &[("x-fal-request-timeout-type", "user")])),
            "generation_timeout"
        );
        assert_eq!(code(answer(500, "{}", &[])), "upstream_error");
        assert_eq!(code(answer(404, "{}", &[])), "upstream_error");
    }

    #[test]
    fn a_403_from_a_file_url_is_not_an_account_error() {
        let a = answer(403, "<Error>AccessDenied</Error>", &[]);
        assert_eq!(
            unauthenticated_error("model download", &a).code(),
            "upstream_error"
        );
        let a = answer(503, "{}", &[]);
        assert_eq!(
            unauthenticated_error("model download", &a).code(),
            "generator_unavailable"
        );
    }
}
