//! The fake's HTTP handlers: fal's queue on one listener, storage and files on
//! another.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use futures::stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::cube_glb_padded;
use super::webhooks;
use super::{FakeEventKind, FakeRequest, ImageSource, RecordedSubmit, Scenario, Shared};
use crate::testing::images;

/// An endpoint the fake serves, with fal's field names (independent of the
/// generator's table, so tests check the two agree).
#[derive(Debug)]
pub struct FakeEndpoint {
    /// The endpoint id.
    pub endpoint_id: &'static str,
    /// The input field that must hold the image URL.
    pub image_field: &'static str,
    /// The output field holding the model file.
    pub output_field: &'static str,
    /// The output field holding a preview image, if any.
    pub preview_field: Option<&'static str>,
}

/// The endpoints the fake serves (as in fal's model table).
pub const ENDPOINTS: &[FakeEndpoint] = &[
    FakeEndpoint {
        endpoint_id: "tripo3d/tripo/v2.5/image-to-3d",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: Some("rendered_image"),
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/trellis",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/hunyuan3d/v2",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/hunyuan3d/v2/mini",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/hunyuan3d/v2/turbo",
        image_field: "input_image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/hunyuan3d-v3/image-to-3d",
        image_field: "input_image_url",
        output_field: "model_glb",
        preview_field: Some("thumbnail"),
    },
    FakeEndpoint {
        endpoint_id: "fal-ai/triposr",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
    FakeEndpoint {
        endpoint_id: "workflows/fake-owner/fake-flow",
        image_field: "image_url",
        output_field: "model_mesh",
        preview_field: None,
    },
];

impl FakeEndpoint {
    /// `[namespace/]owner/app`: what request URLs must start with.
    #[must_use]
    pub fn requests_prefix(&self) -> String {
        let segments: Vec<&str> = self.endpoint_id.split('/').collect();
        let take = if matches!(segments[0], "workflows" | "comfy") {
            3
        } else {
            2
        };
        segments[..take].join("/")
    }
}

/// A fresh request id shaped like fal's (a UUID).
pub(crate) fn new_request_id() -> String {
    let hex = format!("{:032x}", ulid::Ulid::new().0);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

const BODY_LIMIT: usize = 64 * 1024 * 1024;

pub(crate) fn queue_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(queue)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

pub(crate) fn storage_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/storage/upload/initiate", post(upload_initiate))
        .route("/uploads/{token}", put(upload))
        .route("/files/{*path}", get(file))
        .route("/.well-known/jwks.json", get(webhooks::jwks))
        .fallback(storage_not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn detail(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "detail": message }))
}

fn not_found(s: &Shared, target: String, message: &str) -> Response {
    s.counters.not_found.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::NotFound, target);
    detail(StatusCode::NOT_FOUND, message)
}

/// fal's answer to a key it does not know.
fn unauthorized(s: &Shared, target: String) -> Response {
    s.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Unauthorized, target);
    detail(
        StatusCode::UNAUTHORIZED,
        "No user found for Key ID and Secret",
    )
}

fn locked() -> Response {
    detail(
        StatusCode::FORBIDDEN,
        "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.",
    )
}

fn has_key(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
        .is_some_and(|k| k == s.key)
}

/// The answer to an injected failure with this status, shaped like fal's.
fn injected(status: u16, retry_after: Option<u32>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match status {
        429 => detail(code, "Too many concurrent requests"),
        503 => {
            let mut r = json_response(
                code,
                json!({"detail": "Runner failed", "error_type": "runner_failure"}),
            );
            r.headers_mut().insert(
                "x-fal-error-type",
                HeaderValue::from_static("runner_failure"),
            );
            r.headers_mut()
                .insert("x-fal-retryable", HeaderValue::from_static("true"));
            r
        }
        504 => {
            let mut r = json_response(
                code,
                json!({"detail": "Request timed out", "error_type": "request_timeout"}),
            );
            r.headers_mut().insert(
                "x-fal-error-type",
                HeaderValue::from_static("request_timeout"),
            );
            r
        }
        500 => detail(code, "Internal Server Error"),
        _ => detail(code, "Injected failure"),
    };
    if let (429, Some(secs)) = (status, retry_after) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub(crate) enum Phase {
    InQueue(u64),
    InProgress(u64),
    Completed,
}

/// A phase without its numbers, for noticing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhaseKind {
    InQueue,
    InProgress,
    Completed,
}

impl Phase {
    pub(crate) fn kind(&self) -> PhaseKind {
        match self {
            Phase::InQueue(_) => PhaseKind::InQueue,
            Phase::InProgress(_) => PhaseKind::InProgress,
            Phase::Completed => PhaseKind::Completed,
        }
    }
}

/// When the request leaves `kind` by the clock alone (`None`: never, e.g.
/// [`Scenario::NeverCompletes`]).
pub(crate) fn phase_end(r: &FakeRequest, kind: PhaseKind) -> Option<Instant> {
    match kind {
        PhaseKind::InQueue => Some(r.created + r.queue_time),
        PhaseKind::InProgress if r.scenario == Scenario::NeverCompletes => None,
        PhaseKind::InProgress => Some(r.created + r.queue_time + r.progress_time),
        PhaseKind::Completed => None,
    }
}

/// Sleeps until `deadline` (forever when `None`).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn phase(r: &FakeRequest, now: Instant) -> Phase {
    if r.cancelled {
        return Phase::Completed;
    }
    let elapsed = now.saturating_duration_since(r.created);
    if elapsed < r.queue_time {
        let remaining = (r.queue_time - elapsed).as_secs_f64() / r.queue_time.as_secs_f64();
        return Phase::InQueue((remaining * 3.0).floor().min(2.0) as u64);
    }
    let running = elapsed - r.queue_time;
    if r.scenario == Scenario::NeverCompletes {
        let percent = 99 - (99.0 * 0.9f64.powf(running.as_secs_f64())) as u64;
        return Phase::InProgress(percent.min(99));
    }
    if running < r.progress_time {
        let percent =
            (running.as_secs_f64() / r.progress_time.as_secs_f64().max(1e-9) * 100.0) as u64;
        return Phase::InProgress(percent.min(99));
    }
    Phase::Completed
}

fn log(message: String) -> Value {
    json!({
        "message": message,
        "level": "INFO",
        "source": "USER",
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

/// The status object at `now` and its HTTP status (202 until completed,
/// then 200).
fn status_body(
    s: &Shared,
    id: &str,
    r: &FakeRequest,
    with_logs: bool,
    now: Instant,
) -> (StatusCode, Value) {
    let response_url = format!(
        "{}/{}/requests/{id}",
        s.queue_base,
        r.endpoint.requests_prefix()
    );
    match phase(r, now) {
        Phase::InQueue(position) => (
            StatusCode::ACCEPTED,
            json!({"status": "IN_QUEUE", "queue_position": position, "response_url": response_url}),
        ),
        Phase::InProgress(percent) => {
            let logs = with_logs.then(|| {
                json!([
                    log("Loading model weights".into()),
                    log(format!("Generating mesh: {percent}%")),
                ])
            });
            (
                StatusCode::ACCEPTED,
                json!({"status": "IN_PROGRESS", "logs": logs, "response_url": response_url}),
            )
        }
        Phase::Completed => {
            let mut body = json!({
                "status": "COMPLETED",
                "logs": with_logs.then(|| json!([log("Done".into())])),
                "metrics": {"inference_time": r.progress_time.as_secs_f64()},
                "response_url": response_url,
            });
            if r.cancelled {
                body["error"] = json!("Request was cancelled");
                body["error_type"] = json!("cancelled");
            } else if r.scenario == Scenario::CompletedWithError {
                body["error"] = json!("Internal error during inference");
                body["error_type"] = json!("runner_failure");
            }
            (StatusCode::OK, body)
        }
    }
}

/// Every queue call: fal routes by path, so the fake does too.
async fn queue(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = format!("{method} {}", uri.path());
    if !has_key(&s, &headers) {
        return unauthorized(&s, target);
    }
    let scenario = s.state().scenario.clone();
    match scenario {
        Scenario::Unauthorized => return unauthorized(&s, target),
        Scenario::AccountLocked => {
            if method == Method::POST {
                count_submit(&s, uri.path().trim_start_matches('/'), target);
            }
            return locked();
        }
        _ => {}
    }
    let path = uri.path().trim_start_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').collect();
    if let Some(i) = segments.iter().position(|seg| *seg == "requests")
        && i >= 2
    {
        let prefix = segments[..i].join("/");
        let query = uri.query().unwrap_or_default();
        return match (&method, &segments[i + 1..]) {
            (&Method::GET, [id, "status"]) => status(&s, &prefix, id, query, target),
            (&Method::GET, [id, "status", "stream"]) => {
                status_stream(&s, &prefix, id, query, target)
            }
            (&Method::GET, [id]) => result(&s, &prefix, id, target),
            (&Method::PUT, [id, "cancel"]) => cancel(&s, &prefix, id, target),
            _ => not_found(&s, target, "Not Found"),
        };
    }
    if method == Method::POST {
        return submit(&s, &path, uri.query(), &headers, &body, target);
    }
    not_found(&s, target, "Not Found")
}

fn count_submit(s: &Shared, endpoint_id: &str, target: String) {
    s.counters.submits.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Submit, target);
    *s.state()
        .submits_by_endpoint
        .entry(endpoint_id.to_owned())
        .or_default() += 1;
}

fn validation(field: &str, msg: &str, kind: &str) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"detail": [{"loc": ["body", field], "msg": msg, "type": kind}]}),
    )
}

fn submit(
    s: &Arc<Shared>,
    endpoint_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    target: String,
) -> Response {
    count_submit(s, endpoint_id, target.clone());
    let Some(endpoint) = ENDPOINTS.iter().find(|e| e.endpoint_id == endpoint_id) else {
        return not_found(s, target, &format!("Application '{endpoint_id}' not found"));
    };
    {
        let mut state = s.state();
        if let Scenario::SubmitFails {
            status,
            times,
            retry_after,
        } = state.scenario
            && state.injected < times
        {
            state.injected += 1;
            return injected(status, retry_after);
        }
    }
    let Ok(input) = serde_json::from_slice::<Value>(body) else {
        return validation(
            "body",
            "Input should be a valid JSON object",
            "json_invalid",
        );
    };
    let Some(image_url) = input.get(endpoint.image_field).and_then(Value::as_str) else {
        return validation(endpoint.image_field, "Field required", "missing");
    };
    let Some(image) = image_source(s, image_url) else {
        return validation(
            endpoint.image_field,
            "Failed to download the file. Please check if the URL is accessible.",
            "file_download_error",
        );
    };
    let webhook = query
        .into_iter()
        .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "fal_webhook")
        .map(|(_, v)| v.into_owned());
    if let Some(url) = &webhook
        && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"loc": ["query", "fal_webhook"], "msg": "Invalid webhook URL", "type": "value_error.url"}]}),
        );
    }
    let id = new_request_id();
    let mut state = s.state();
    let mut request = FakeRequest::new(endpoint, &state);
    request.quad = input.get("quad").and_then(Value::as_bool) == Some(true);
    request.webhook.clone_from(&webhook);
    let position = match phase(&request, Instant::now()) {
        Phase::InQueue(p) => p,
        _ => 0,
    };
    let changes = request.changes.subscribe();
    state.requests.insert(id.clone(), request);
    if let Some(url) = &webhook {
        webhooks::spawn(s.clone(), id.clone(), url.clone(), changes);
    }
    state.last_submit = Some(RecordedSubmit {
        endpoint_id: endpoint_id.to_owned(),
        body: input,
        request_timeout: headers
            .get("x-fal-request-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        image,
        request_id: id.clone(),
        webhook,
    });
    let base = format!(
        "{}/{}/requests/{id}",
        s.queue_base,
        endpoint.requests_prefix()
    );
    json_response(
        StatusCode::OK,
        json!({
            "request_id": id,
            "response_url": base,
            "status_url": format!("{base}/status"),
            "cancel_url": format!("{base}/cancel"),
            "queue_position": position,
            "status": "IN_QUEUE",
        }),
    )
}

/// Where an image URL points, if the fake can read it.
fn image_source(s: &Shared, url: &str) -> Option<ImageSource> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let mime = meta.strip_suffix(";base64")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        return (mime.starts_with("image/") && !bytes.is_empty()).then(|| ImageSource::DataUri {
            mime: mime.to_owned(),
            bytes: bytes.len(),
        });
    }
    let rest = url.strip_prefix(&format!("{}/files/uploads/", s.storage_base))?;
    let token = rest.split('/').next()?;
    let state = s.state();
    let (_, bytes) = state.uploads.get(token)?;
    let bytes = bytes.as_ref().filter(|b| !b.is_empty())?;
    Some(ImageSource::Uploaded { bytes: bytes.len() })
}

/// The request `id` if it exists under this owner/app prefix.
fn lookup(s: &Shared, prefix: &str, id: &str) -> Option<FakeRequest> {
    s.state()
        .requests
        .get(id)
        .filter(|r| r.endpoint.requests_prefix() == prefix)
        .cloned()
}

fn status(s: &Shared, prefix: &str, id: &str, query: &str, target: String) -> Response {
    s.counters.status_polls.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Status, target.clone());
    *s.state().polls_by_request.entry(id.to_owned()).or_default() += 1;
    let Some(request) = lookup(s, prefix, id) else {
        return not_found(s, target, "Request not found");
    };
    {
        let mut state = s.state();
        if let Scenario::StatusFails { status, times } = request.scenario
            && state.injected < times
        {
            state.injected += 1;
            return injected(status, None);
        }
    }
    if request.scenario == Scenario::MalformedStatus {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>Bad Gateway</body></html>",
        )
            .into_response();
    }
    let with_logs = query.split('&').any(|kv| kv == "logs=1");
    let (code, body) = status_body(s, id, &request, with_logs, Instant::now());
    json_response(code, body)
}

/// What a stream does besides reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamMode {
    Normal,
    /// Close after the first event (`set_stream_breaks`).
    Break,
    /// Send non-JSON data ([`Scenario::MalformedStatus`]).
    Malformed,
}

/// One open status stream: it sleeps until the request's next phase change,
/// its next progress event, a change signalled by a cancel, or shutdown.
struct StatusStream {
    s: Arc<Shared>,
    id: String,
    with_logs: bool,
    changes: watch::Receiver<()>,
    interval: Duration,
    mode: StreamMode,
    /// The phase of the last event sent.
    last: Option<PhaseKind>,
    /// When the next `IN_PROGRESS` event is due.
    next_progress: Option<Instant>,
    done: bool,
}

impl StatusStream {
    async fn next_event(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let request = self.s.state().requests.get(&self.id).cloned()?;
            let now = Instant::now();
            let kind = phase(&request, now).kind();
            let due = match self.last {
                None => true,
                Some(last) if last != kind => true,
                Some(_) => {
                    kind == PhaseKind::InProgress && self.next_progress.is_some_and(|t| now >= t)
                }
            };
            if due {
                if kind == PhaseKind::InProgress {
                    self.next_progress = Some(match (self.last, self.next_progress) {
                        // A periodic event: keep the beat.
                        (Some(PhaseKind::InProgress), Some(t)) => {
                            (t + self.interval).max(now + self.interval / 2)
                        }
                        _ => now + self.interval,
                    });
                }
                self.last = Some(kind);
                self.done = kind == PhaseKind::Completed || self.mode == StreamMode::Break;
                let data = if self.mode == StreamMode::Malformed {
                    "<html><body>Bad Gateway</body></html>".to_owned()
                } else {
                    status_body(&self.s, &self.id, &request, self.with_logs, now)
                        .1
                        .to_string()
                };
                return Some((Ok(Event::default().data(data)), self));
            }
            let deadline = match (phase_end(&request, kind), self.next_progress) {
                (end, Some(progress)) if kind == PhaseKind::InProgress => {
                    Some(end.map_or(progress, |end| end.min(progress)))
                }
                (end, _) => end,
            };
            tokio::select! {
                () = sleep_until(deadline) => {}
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = self.s.shutdown.cancelled() => return None,
            }
        }
    }
}

fn status_stream(s: &Arc<Shared>, prefix: &str, id: &str, query: &str, target: String) -> Response {
    s.counters.status_streams.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::StatusStream, target.clone());
    let Some(request) = lookup(s, prefix, id) else {
        return not_found(s, target, "Request not found");
    };
    let (interval, breaks) = {
        let mut state = s.state();
        if let Scenario::StatusFails { status, times } = request.scenario
            && state.injected < times
        {
            state.injected += 1;
            return injected(status, None);
        }
        if state.stream_refusals > 0 {
            state.stream_refusals -= 1;
            drop(state);
            s.counters.streams_broken.fetch_add(1, Ordering::SeqCst);
            return injected(503, None);
        }
        let breaks = state.stream_breaks > 0;
        if breaks {
            state.stream_breaks -= 1;
        }
        (state.stream_progress_interval, breaks)
    };
    if breaks {
        s.counters.streams_broken.fetch_add(1, Ordering::SeqCst);
    }
    let mode = if breaks {
        StreamMode::Break
    } else if request.scenario == Scenario::MalformedStatus {
        StreamMode::Malformed
    } else {
        StreamMode::Normal
    };
    let stream = StatusStream {
        s: s.clone(),
        id: id.to_owned(),
        with_logs: query.split('&').any(|kv| kv == "logs=1"),
        changes: request.changes.subscribe(),
        // A zero interval would spin.
        interval: interval.max(Duration::from_millis(1)),
        mode,
        last: None,
        next_progress: None,
        done: false,
    };
    Sse::new(stream::unfold(stream, StatusStream::next_event))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn file_object(url: String, content_type: &str, file_name: &str, size: Option<usize>) -> Value {
    let mut file = json!({"url": url, "content_type": content_type, "file_name": file_name});
    if let Some(size) = size {
        file["file_size"] = json!(size);
    }
    file
}

fn result(s: &Shared, prefix: &str, id: &str, target: String) -> Response {
    s.counters.results.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Result, target.clone());
    let Some(request) = lookup(s, prefix, id) else {
        return not_found(s, target, "Request not found");
    };
    result_response(s, id, &request)
}

/// The result endpoint's answer for a known request (what a webhook's
/// payload is made from too).
pub(crate) fn result_response(s: &Shared, id: &str, request: &FakeRequest) -> Response {
    if !matches!(phase(request, Instant::now()), Phase::Completed) {
        return detail(StatusCode::BAD_REQUEST, "Request is still in progress");
    }
    if request.cancelled {
        return detail(StatusCode::BAD_REQUEST, "Request was cancelled");
    }
    let mut response = match &request.scenario {
        Scenario::ResultInvalidInput => validation(
            request.endpoint.image_field,
            "Could not detect an object in the image",
            "value_error",
        ),
        Scenario::ContentPolicy => validation(
            request.endpoint.image_field,
            "The image was flagged by the content checker",
            "content_policy_violation",
        ),
        Scenario::CompletedWithError => {
            let mut r = json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"detail": "Internal error during inference", "error_type": "runner_failure"}),
            );
            r.headers_mut().insert(
                "x-fal-error-type",
                HeaderValue::from_static("runner_failure"),
            );
            r
        }
        Scenario::MalformedResult => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"model_mesh": {"url": "#,
        )
            .into_response(),
        Scenario::ResultWithoutModel => json_response(
            StatusCode::OK,
            json!({"seed": 42, "timings": {"inference": 1.0}}),
        ),
        Scenario::UserTimeout => {
            let mut r = json_response(
                StatusCode::GATEWAY_TIMEOUT,
                json!({"detail": "Request timed out", "error_type": "request_timeout"}),
            );
            let h = r.headers_mut();
            h.insert(
                "x-fal-error-type",
                HeaderValue::from_static("request_timeout"),
            );
            h.insert(
                "x-fal-request-timeout-type",
                HeaderValue::from_static("user"),
            );
            r
        }
        scenario => json_response(StatusCode::OK, output(s, id, request, scenario)),
    };
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert("x-fal-request-id", v);
    }
    response
}

/// The model's output: its output field pointing at the fake's own file.
fn output(s: &Shared, id: &str, request: &FakeRequest, scenario: &Scenario) -> Value {
    let (file_name, content_type, size) = if request.quad || *scenario == Scenario::NotGlb {
        ("model.fbx", "application/octet-stream", Some(FBX.len()))
    } else {
        let size = match scenario {
            Scenario::OversizedModel {
                bytes,
                content_length: true,
            } => Some(cube_glb_padded(*bytes).len()),
            Scenario::OversizedModel { .. } | Scenario::TruncatedModel => None,
            _ => Some(s.model().glb().len()),
        };
        ("model.glb", "model/gltf-binary", size)
    };
    let model = file_object(
        format!("{}/files/{id}/{file_name}", s.storage_base),
        content_type,
        file_name,
        size,
    );
    let mut out =
        json!({ "seed": 42, "timings": {"inference": request.progress_time.as_secs_f64()} });
    out[request.endpoint.output_field] = model.clone();
    if let Some(preview) = request.endpoint.preview_field {
        out[preview] = file_object(
            format!("{}/files/{id}/preview.png", s.storage_base),
            "image/png",
            "preview.png",
            None,
        );
    }
    if request.endpoint.output_field == "model_glb" {
        out["model_urls"] = json!({ "glb": model });
    }
    if request.endpoint.endpoint_id.starts_with("tripo3d/") {
        out["task_id"] = json!(format!("task-{id}"));
    }
    out
}

/// What Tripo sends when asked for quads: not a GLB.
const FBX: &[u8] = b"Kaydara FBX Binary  \x00\x1a\x00\xe8\x1c\x00\x00 fake fbx body";

fn cancel(s: &Shared, prefix: &str, id: &str, target: String) -> Response {
    s.counters.cancels.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Cancel, target.clone());
    if lookup(s, prefix, id).is_none() {
        s.counters.not_found.fetch_add(1, Ordering::SeqCst);
        return json_response(StatusCode::NOT_FOUND, json!({"status": "NOT_FOUND"}));
    }
    let mut state = s.state();
    let Some(request) = state.requests.get_mut(id) else {
        return json_response(StatusCode::NOT_FOUND, json!({"status": "NOT_FOUND"}));
    };
    if matches!(phase(request, Instant::now()), Phase::Completed) {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": "ALREADY_COMPLETED"}),
        );
    }
    request.cancelled = true;
    // Wake its streams and its webhook.
    request.changes.send_replace(());
    json_response(
        StatusCode::ACCEPTED,
        json!({"status": "CANCELLATION_REQUESTED"}),
    )
}

fn check_leak(s: &Shared, headers: &HeaderMap) {
    if headers.contains_key(header::AUTHORIZATION) {
        s.counters.credential_leaks.fetch_add(1, Ordering::SeqCst);
    }
}

async fn upload_initiate(
    State(s): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = "POST /storage/upload/initiate".to_owned();
    if !has_key(&s, &headers) {
        return unauthorized(&s, target);
    }
    s.counters.upload_initiates.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::UploadInitiate, target);
    if !query
        .unwrap_or_default()
        .split('&')
        .any(|kv| kv == "storage_type=fal-cdn-v3")
    {
        return detail(StatusCode::BAD_REQUEST, "storage_type must be fal-cdn-v3");
    }
    let Ok(init) =
        serde_json::from_slice::<crate::generators::fal::protocol::UploadInitiate>(&body)
    else {
        return validation("body", "content_type and file_name are required", "missing");
    };
    let safe_name: String = init
        .file_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let token = ulid::Ulid::new().to_string().to_ascii_lowercase();
    s.state()
        .uploads
        .insert(token.clone(), (safe_name.clone(), None));
    json_response(
        StatusCode::OK,
        json!({
            "upload_url": format!("{}/uploads/{token}", s.storage_base),
            "file_url": format!("{}/files/uploads/{token}/{safe_name}", s.storage_base),
        }),
    )
}

async fn upload(
    State(s): State<Arc<Shared>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    check_leak(&s, &headers);
    s.event(FakeEventKind::Upload, format!("PUT /uploads/{token}"));
    let mut state = s.state();
    let Some(entry) = state.uploads.get_mut(&token) else {
        drop(state);
        return not_found(&s, format!("PUT /uploads/{token}"), "Unknown upload");
    };
    entry.1 = Some(body);
    s.counters.uploads.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK.into_response()
}

fn bytes_response(content_type: &str, bytes: Vec<u8>, content_length: bool) -> Response {
    let body = if content_length {
        Body::from(bytes)
    } else {
        // Chunked: two pieces, no Content-Length.
        let mid = bytes.len() / 2;
        let second = bytes[mid..].to_vec();
        let mut first = bytes;
        first.truncate(mid);
        Body::from_stream(stream::iter([
            Ok::<Bytes, std::io::Error>(Bytes::from(first)),
            Ok(Bytes::from(second)),
        ]))
    };
    let mut response = Response::new(body);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

async fn file(
    State(s): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    check_leak(&s, &headers);
    let target = format!("GET /files/{path}");
    s.counters.downloads.fetch_add(1, Ordering::SeqCst);
    s.event(FakeEventKind::Download, target.clone());
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["uploads", token, _name] => {
            let bytes = s.state().uploads.get(*token).and_then(|(_, b)| b.clone());
            match bytes {
                Some(b) => bytes_response("application/octet-stream", b.to_vec(), true),
                None => not_found(&s, target, "Not Found"),
            }
        }
        [id, name] => {
            let Some(request) = s.state().requests.get(*id).cloned() else {
                return not_found(&s, target, "Not Found");
            };
            match *name {
                "preview.png" => bytes_response("image/png", images::png(64, 64), true),
                "model.fbx" => bytes_response("application/octet-stream", FBX.to_vec(), true),
                "model.glb" => match request.scenario {
                    Scenario::TruncatedModel => {
                        let mut glb = s.model().glb();
                        glb.truncate(glb.len() / 2);
                        bytes_response("model/gltf-binary", glb, false)
                    }
                    Scenario::OversizedModel {
                        bytes,
                        content_length,
                    } => {
                        bytes_response("model/gltf-binary", cube_glb_padded(bytes), content_length)
                    }
                    _ => bytes_response("model/gltf-binary", s.model().glb(), true),
                },
                _ => not_found(&s, target, "Not Found"),
            }
        }
        _ => not_found(&s, target, "Not Found"),
    }
}

async fn storage_not_found(State(s): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    not_found(&s, format!("{method} {}", uri.path()), "Not Found")
}
