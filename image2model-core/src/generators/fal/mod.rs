//! The FAL.AI generator: image-to-3D models run on fal's queue.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use image2model_core::generators::fal::{FalConfig, FalGenerator};
//!
//! // `Ok(None)` when no FAL key is set: run without the FAL models.
//! if let Some(config) = FalConfig::from_lookup(|name| std::env::var(name).ok())? {
//!     let generator = FalGenerator::new(config)?;
//!     # let _ = generator;
//! }
//! # Ok(()) }
//! ```
//!
//! One generation follows fal's queue lifecycle: the image goes inline as a
//! `data:` URI (small) or through fal storage (big); the request is submitted
//! to the model's whole endpoint id; its id is handed to
//! [`GenerationObserver::remote_request`] (which persists it) before the first
//! look at its status; the image is dropped; completion is awaited through
//! fal's status stream, a webhook when the server has a public URL, or
//! polling when a stream breaks (owner/app URLs only, see `follow`) while
//! progress is reported; on `COMPLETED` the result endpoint decides the
//! outcome; the model file is downloaded at once, streamed and size-capped.
//! A request id from an earlier attempt is resumed instead of resubmitted.
//! On deadline or cancellation fal's cancel is sent, best effort.
//!
//! ## Layout
//!
//! - `config`: [`FalConfig`] and reading it from the environment.
//! - `kind`: [`FalKind`], FAL in the generator registry (its section is the
//!   [`FalConfig`]).
//! - `models`: the model table ([`MODELS`]) and [`EndpointId`].
//! - [`protocol`]: fal's wire types and the functions that read fal's
//!   answers (submit, status, result), shared with the fuzz targets.
//! - `retry`: [`RetryPolicy`] and [`PollPolicy`].
//! - `client`: HTTP calls with retries and fal's errors mapped; the two
//!   shared connection pools.
//! - `follow`: waiting for completion (status stream, webhook, polling).
//! - [`sse`]: a bounded reader of the status stream's events.
//! - `output`: downloading the model and the preview.

mod client;
mod config;
mod follow;
mod kind;
mod models;
mod output;
pub mod protocol;
mod pump;
mod retry;
pub mod sse;
pub mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use tracing::Instrument;

pub use config::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_QUEUE_BASE_URL, DEFAULT_STORAGE_BASE_URL,
    DEFAULT_STREAM_PUMP_FROM, DEFAULT_STREAM_TICK_MS, FalConfig, FalConfigError,
    MAX_STREAM_TICK_MS, parse_base_url,
};
pub use kind::FalKind;
pub use models::{
    DEFAULT_MODEL, DEFAULT_PRICES_USD, EndpointId, EndpointIdError, FalModel, MODELS,
    default_prices, find_model,
};
pub use retry::{PollPolicy, RetryPolicy};

use self::client::{FalClient, error_for};
use self::follow::Waiters;
use self::output::{download_model, download_preview};
use self::protocol::{QueueStatus, StatusResponse, is_valid_request_id, parse_result};
use self::retry::CallKind;
use crate::domain::{GenerateOptions, ImageKind, ModelName, Progress};
use crate::ports::{
    Capacity, GenerateContext, GenerateError, GenerateRequest, GeneratedModel, GenerationObserver,
    GeneratorHealth, ModelGenerator, ModelInfo,
};
use bytes::Bytes;

/// The generator's name, as in [`ModelInfo::generator`].
pub const GENERATOR_NAME: &str = "fal";

/// Generates models through FAL.AI. Cheap to share (`Arc`); one instance serves
/// every worker.
#[derive(Debug)]
pub struct FalGenerator {
    client: FalClient,
    /// The last account verdict: set to `Unhealthy` by a 401/403, back to
    /// `Healthy` by the next success. Read by the admin health view.
    health: Mutex<GeneratorHealth>,
    /// Requests waiting for their webhook.
    waiters: Waiters,
    /// Checks webhooks' signatures against fal's published keys.
    verifier: webhook::WebhookVerifier,
    /// Reads the status streams in ticks (`FalConfig::stream_tick`); `None`
    /// reads each on its item's task.
    pump: Option<pump::Pump>,
    /// Status streams open now (see `FalConfig::stream_pump_from`).
    open_streams: std::sync::atomic::AtomicUsize,
    /// Status streams read on the pump so far.
    pumped_streams: std::sync::atomic::AtomicU64,
}

/// What the generator knows of the remote request, shared with the code that
/// cancels it when the deadline passes or the item is cancelled.
#[derive(Debug, Default)]
struct Remote {
    request_id: Option<String>,
    /// The result has been fetched: nothing left to cancel.
    finished: bool,
}

impl FalGenerator {
    /// Checks that fal answers and takes the key, at no cost: one status read
    /// of a request that does not exist, on the default model's endpoint
    /// (fal answers a key it accepts with 404; nothing is submitted).
    ///
    /// # Errors
    /// `Account` for a refused key, `Unavailable` when fal cannot be
    /// reached, others as fal answers.
    pub async fn check_account(&self) -> Result<(), GenerateError> {
        let model = MODELS
            .iter()
            .find(|m| m.name == DEFAULT_MODEL)
            .unwrap_or(&MODELS[0]);
        self.client
            .status(&model.endpoint(), "00000000-0000-4000-8000-000000000000")
            .await
            .map(|_| ())
    }

    /// A generator with this configuration.
    ///
    /// # Errors
    /// `Internal` when the HTTP client cannot be built (e.g. no TLS roots).
    pub fn new(config: FalConfig) -> Result<Self, GenerateError> {
        // A stream goes to the pump only while `stream_pump_from` others are
        // open, and a worker keeps at most `max_in_flight` open: below that
        // the thread would never be used (the default configuration). Were
        // several workers to share this generator, streams past the limit
        // would only be read on their items' tasks, as without a pump.
        let pump = (config.status_stream
            && !config.stream_tick.is_zero()
            && config.max_in_flight > config.stream_pump_from)
            .then(|| pump::Pump::start(config.stream_tick))
            .transpose()
            .map_err(|e| GenerateError::Internal(format!("starting the fal stream thread: {e}")))?;
        let client = FalClient::new(Arc::new(config))?;
        let verifier =
            webhook::WebhookVerifier::new(client.config().jwks_url.clone(), client.http().clone());
        Ok(Self {
            client,
            health: Mutex::new(GeneratorHealth::Healthy),
            waiters: Waiters::default(),
            verifier,
            pump,
            open_streams: std::sync::atomic::AtomicUsize::new(0),
            pumped_streams: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Handles a webhook fal sent to the server's public URL: checks its
    /// signature against fal's keys, then wakes the generation waiting for
    /// that request, which fetches the result as usual (the webhook's payload
    /// is not trusted for the outcome, only as the signal). A webhook for a
    /// request this process is not waiting for (another worker's, or one
    /// that came before its submit was answered) is remembered for a while
    /// and otherwise harmless: the safety net follows every request anyway.
    ///
    /// # Errors
    /// The [`webhook::WebhookError`] that refused it; only
    /// [`webhook::WebhookError::is_transient`] ones are worth fal's retry.
    pub async fn handle_webhook(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<webhook::WebhookPayload, webhook::WebhookError> {
        let payload = match self.verifier.verify(headers, body).await {
            Ok(payload) => payload,
            Err(e) => {
                metrics::counter!("image2model_fal_webhooks_total", "outcome" => "refused")
                    .increment(1);
                tracing::warn!(code = e.code(), error = %e, "fal webhook refused");
                return Err(e);
            }
        };
        let error = match payload.status {
            webhook::WebhookStatus::Ok => None,
            webhook::WebhookStatus::Error => Some(
                payload
                    .error
                    .clone()
                    .unwrap_or_else(|| "fal reported an error".to_owned()),
            ),
        };
        let woke = self.waiters.completed(&payload.request_id, error);
        let outcome = if woke { "woke" } else { "no_waiter" };
        metrics::counter!("image2model_fal_webhooks_total", "outcome" => outcome).increment(1);
        tracing::info!(request_id = %payload.request_id, status = ?payload.status, woke, "fal webhook");
        Ok(payload)
    }

    /// Generations waiting for their webhook now.
    #[must_use]
    pub fn awaiting_webhooks(&self) -> usize {
        self.waiters.len()
    }

    /// Whether this generator has a stream pump: status streams on,
    /// `FalConfig::stream_tick` not zero, and more requests allowed in
    /// flight than `FalConfig::stream_pump_from`, so that it can be used.
    #[must_use]
    pub fn has_stream_pump(&self) -> bool {
        self.pump.is_some()
    }

    /// Status streams read on the stream pump so far (each opening counts).
    #[must_use]
    pub fn pumped_streams(&self) -> u64 {
        self.pumped_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The model clients get when they name none.
    #[must_use]
    pub fn default_model(&self) -> ModelName {
        self.client.config().default_model.clone()
    }

    /// The configuration in use (its `Debug` redacts the key).
    #[must_use]
    pub fn config(&self) -> &FalConfig {
        self.client.config()
    }

    fn set_health(&self, outcome: &Result<GeneratedModel, GenerateError>) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(_) => *health = GeneratorHealth::Healthy,
            Err(GenerateError::Account(message)) => {
                *health = GeneratorHealth::Unhealthy {
                    code: crate::ErrorCode::GeneratorAccountError.into(),
                    message: message.clone(),
                };
            }
            Err(GenerateError::Unavailable(message)) if *health == GeneratorHealth::Healthy => {
                *health = GeneratorHealth::Degraded {
                    message: message.clone(),
                };
            }
            Err(_) => {}
        }
    }

    /// The image as fal gets it: a data URI when small, else a storage URL.
    async fn image_url(&self, image: Bytes, kind: ImageKind) -> Result<String, GenerateError> {
        if image.len() <= self.client.config().data_uri_max_bytes {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
            Ok(format!("data:{};base64,{b64}", kind.mime()))
        } else {
            self.client.upload(image, kind).await
        }
    }

    /// The queue timeout to send: the configured one, never past the deadline.
    fn queue_timeout(&self, deadline: Duration) -> Option<Duration> {
        self.client
            .config()
            .queue_timeout
            .map(|t| t.min(deadline).max(Duration::from_secs(1)))
    }

    /// Submits the image and persists the request id through the observer.
    /// The image and its encoding are gone once this returns: a request that
    /// waits for fal keeps only its id.
    async fn submit(
        &self,
        model: &FalModel,
        image: Bytes,
        kind: ImageKind,
        options: &GenerateOptions,
        ctx: &GenerateContext<'_>,
        remote: &Mutex<Remote>,
    ) -> Result<String, GenerateError> {
        let endpoint = model.endpoint();
        let submitted = {
            let image_url = self.image_url(image, kind).await?;
            let input = model.input(&image_url, options);
            drop(image_url);
            self.client
                .submit(
                    &endpoint,
                    &input,
                    self.queue_timeout(ctx.deadline),
                    self.client.config().webhook_url.as_ref(),
                )
                .await?
        };
        // `parse_submit` checked that the id is usable in a path.
        let id = submitted.request_id;
        lock(remote).request_id = Some(id.clone());
        tracing::info!(request_id = %id, endpoint = %endpoint, "fal request submitted");
        if let Err(e) = ctx.observer.remote_request(&id).await {
            // Nobody will ever collect this request: stop paying for it.
            tracing::warn!(request_id = %id, error = %e, "could not persist the request id; cancelling it");
            self.client.cancel(&endpoint, &id).await;
            lock(remote).finished = true;
            return Err(e);
        }
        report(ctx.observer, 5).await;
        Ok(id)
    }

    /// The whole lifecycle, without the deadline and cancellation (see
    /// [`ModelGenerator::generate`]).
    async fn run(
        &self,
        model: &FalModel,
        request: GenerateRequest,
        ctx: &GenerateContext<'_>,
        remote: &Mutex<Remote>,
    ) -> Result<GeneratedModel, GenerateError> {
        let endpoint = model.endpoint();
        let GenerateRequest {
            options,
            image,
            image_kind,
            resume_remote_request,
            ..
        } = request;
        let mut image = Some(image);
        let resumed = resume_remote_request
            .as_deref()
            .filter(|id| is_valid_request_id(id));
        let mut completed = None;
        let mut request_id = String::new();
        if let Some(id) = resumed {
            tracing::info!(request_id = %id, "resuming fal request");
            lock(remote).request_id = Some(id.to_owned());
            request_id = id.to_owned();
            completed = self.wait(model, id, ctx.observer, false).await?;
            if completed.is_none() {
                tracing::info!(request_id = %id, "fal does not know the resumed request; submitting anew");
                lock(remote).request_id = None;
            }
        } else if let Some(id) = &resume_remote_request {
            tracing::warn!(request_id = %id, "ignoring a malformed resume request id; submitting anew");
        }
        let status = match completed {
            Some(status) => status,
            None => {
                let image = image.take().ok_or_else(|| {
                    GenerateError::Internal("the image was already submitted".into())
                })?;
                request_id = self
                    .submit(model, image, image_kind, &options, ctx, remote)
                    .await?;
                self.wait(model, &request_id, ctx.observer, true)
                    .await?
                    .ok_or_else(|| {
                        GenerateError::Upstream(format!(
                            "fal does not know request {request_id} it just accepted"
                        ))
                    })?
            }
        };
        report(ctx.observer, 90).await;

        let answer = self.client.result(&endpoint, &request_id).await?;
        lock(remote).finished = true;
        if !answer.status.is_success() {
            return Err(error_for("result", &answer, CallKind::Call));
        }
        let files = parse_result(
            &answer.body,
            model.output_field,
            model.preview_field,
            status.error.as_deref(),
        )?;
        report(ctx.observer, 92).await;
        let config = self.client.config();
        let preview = match files.preview {
            Some(file) => download_preview(&self.client, &file, config.max_preview_bytes).await,
            None => None,
        };
        let download = download_model(&self.client, &files.model, config.max_model_bytes).await?;
        report(ctx.observer, 95).await;
        tracing::info!(request_id = %request_id, bytes = download.length, "fal model ready");
        Ok(GeneratedModel {
            glb: download.stream,
            size_hint: Some(download.length),
            preview,
        })
    }
}

fn lock(remote: &Mutex<Remote>) -> std::sync::MutexGuard<'_, Remote> {
    remote.lock().unwrap_or_else(|p| p.into_inner())
}

async fn report(observer: &dyn GenerationObserver, percent: i64) {
    observer.progress(Progress::clamped(percent)).await;
}

/// Turns status polls into rising percentages: 5–15 % while queued (higher as
/// the queue position falls), 20–89 % while running (a percentage found in the
/// logs, else creeping up with each poll and log line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ProgressTracker {
    steps: u32,
    percent: i64,
}

impl ProgressTracker {
    /// The percentage reached so far.
    fn percent(&self) -> i64 {
        self.percent
    }

    fn update(&mut self, status: &StatusResponse) -> i64 {
        let next = match status.status {
            QueueStatus::InQueue => {
                let position = status.queue_position.unwrap_or(0).min(10) as i64;
                15 - position
            }
            QueueStatus::InProgress => {
                let logs = status.logs.as_deref().unwrap_or_default();
                self.steps = self.steps.saturating_add(1);
                let from_logs = logs
                    .iter()
                    .rev()
                    .find_map(|l| percent_in(&l.message))
                    .map(|p| 20 + p * 69 / 100);
                let creeping =
                    20.0 + 69.0 * (1.0 - 0.85f64.powi(self.steps as i32 + logs.len() as i32));
                from_logs.unwrap_or(creeping as i64)
            }
            QueueStatus::Completed => 90,
        };
        self.percent = self.percent.max(next);
        self.percent
    }
}

/// The last `NN%` in a log line, if any.
fn percent_in(message: &str) -> Option<i64> {
    let bytes = message.as_bytes();
    let mut found = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let digits: String = message[..i]
                .chars()
                .rev()
                .take_while(char::is_ascii_digit)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if let Ok(p) = digits.parse::<i64>()
                && p <= 100
            {
                found = Some(p);
            }
        }
    }
    found
}

#[async_trait]
impl ModelGenerator for FalGenerator {
    fn name(&self) -> &str {
        GENERATOR_NAME
    }

    fn models(&self) -> Vec<ModelInfo> {
        MODELS
            .iter()
            .map(|m| ModelInfo {
                name: m.model_name(),
                generator: GENERATOR_NAME.to_owned(),
                description: m.description.to_owned(),
            })
            .collect()
    }

    /// Runs one generation, bounded by `ctx.deadline` (`Timeout`) and
    /// `ctx.cancel` (`Cancelled`); either sends fal's cancel (best effort,
    /// `cancel_timeout`) for a request that has not finished.
    async fn generate(
        &self,
        request: GenerateRequest,
        ctx: GenerateContext<'_>,
    ) -> Result<GeneratedModel, GenerateError> {
        let model = find_model(request.options.model.as_str())
            .ok_or_else(|| GenerateError::UnknownModel(request.options.model.clone()))?;
        let span = tracing::info_span!(
            "fal.generate",
            job_id = %request.job_id,
            item_id = %request.item_id,
            model = model.name,
        );
        let remote = Mutex::new(Remote::default());
        let interrupted = async {
            tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => Err(GenerateError::Cancelled),
                () = tokio::time::sleep(ctx.deadline) => Err(GenerateError::Timeout(format!(
                    "no model within {:?}", ctx.deadline
                ))),
                outcome = self.run(model, request, &ctx, &remote) => Ok(outcome),
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match interrupted {
            Ok(outcome) => outcome,
            Err(e) => {
                let pending = {
                    let r = lock(&remote);
                    r.request_id.clone().filter(|_| !r.finished)
                };
                if let Some(id) = pending {
                    self.client
                        .cancel(&model.endpoint(), &id)
                        .instrument(span.clone())
                        .await;
                }
                Err(e)
            }
        };
        if let Err(e) = &outcome {
            span.in_scope(|| tracing::warn!(code = e.code(), error = %e, "fal generation failed"));
        }
        self.set_health(&outcome);
        outcome
    }

    fn health(&self) -> GeneratorHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remote: a request waiting on fal holds no local slot.
    fn capacity(&self) -> Capacity {
        Capacity::Remote {
            max_in_flight: self.client.config().max_in_flight.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FaceLimit, GenerateOptions, Texture};
    use protocol::LogLine;

    fn status(s: QueueStatus, position: Option<u64>, logs: &[&str]) -> StatusResponse {
        StatusResponse {
            status: s,
            queue_position: position,
            logs: Some(
                logs.iter()
                    .map(|m| LogLine {
                        message: (*m).to_owned(),
                        level: None,
                        source: None,
                        timestamp: None,
                    })
                    .collect(),
            ),
            metrics: None,
            error: None,
            error_type: None,
            response_url: None,
        }
    }

    #[test]
    fn progress_rises_through_queue_and_run() {
        let mut t = ProgressTracker::default();
        let a = t.update(&status(QueueStatus::InQueue, Some(3), &[]));
        let b = t.update(&status(QueueStatus::InQueue, Some(0), &[]));
        let c = t.update(&status(QueueStatus::InProgress, None, &["loading"]));
        let d = t.update(&status(
            QueueStatus::InProgress,
            None,
            &["loading", "meshing"],
        ));
        let e = t.update(&status(QueueStatus::InProgress, None, &["step 80%"]));
        assert!(a < b && b < c && c < d && d < e, "{a} {b} {c} {d} {e}");
        assert!(e < 90);
        // Never goes down.
        assert_eq!(t.update(&status(QueueStatus::InQueue, Some(9), &[])), e);
    }

    #[test]
    fn percentages_are_read_from_logs() {
        assert_eq!(percent_in("Generating: 45% done, 12/20"), Some(45));
        assert_eq!(percent_in("a 10% b 30%"), Some(30));
        assert_eq!(percent_in("no percent"), None);
        assert_eq!(percent_in("999%"), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let g =
            FalGenerator::new(FalConfig::new("sekrit-id:sekrit-secret".to_owned().into())).unwrap();
        let shown = format!("{g:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
    }

    #[test]
    fn models_are_listed_as_fal() {
        let g = FalGenerator::new(FalConfig::new("k:s".to_owned().into())).unwrap();
        let models = g.models();
        assert_eq!(models.len(), MODELS.len());
        assert!(models.iter().all(|m| m.generator == "fal"));
        assert!(models.iter().any(|m| m.name.as_str() == "hunyuan3d-v3"));
        let _ = GenerateOptions {
            model: g.default_model(),
            face_limit: Some(FaceLimit::new(1000).unwrap()),
            texture: Texture::No,
        };
    }
}
