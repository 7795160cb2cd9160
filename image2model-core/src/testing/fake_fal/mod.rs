//! A fake FAL.AI that speaks fal's real queue and storage protocol on
//! `127.0.0.1`, for tests, examples and benches.
//!
//! ```no_run
//! # async fn demo() {
//! use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, Scenario, WebhookDelivery};
//!
//! let fake = FakeFal::start(FakeFalConfig::default()).await;
//! println!("queue at {}, storage at {}", fake.queue_base_url(), fake.storage_base_url());
//! fake.set_scenario(Scenario::SubmitFails { status: 503, times: 2, retry_after: None });
//! // … point a FalGenerator at it, with key `fake.key()` …
//! assert_eq!(fake.submits(), 0);
//! // Webhooks are signed with the fake's own key, published at `fake.jwks_url()`.
//! fake.set_webhook_delivery(WebhookDelivery::BadSignature);
//! # }
//! ```
//!
//! What it does, as fal does:
//! - checks `Authorization: Key <key>` on the queue and on upload initiation
//!   (401 with fal's body otherwise);
//! - submit (`POST /{endpoint_id}`) for the endpoints it knows (see
//!   [`ENDPOINTS`]), checking the model's image field; status
//!   (`GET /{owner}/{app}/requests/{id}/status`, 202 `IN_QUEUE` → 202
//!   `IN_PROGRESS` with logs → 200 `COMPLETED`), result, cancel; request URLs
//!   built with the sub path get a 404;
//! - the status stream (`GET …/requests/{id}/status/stream`, SSE), event
//!   driven: the current status at once, then one event at each phase change
//!   (at `created + queue_time` and `created + queue_time + progress_time`),
//!   an `IN_PROGRESS` event every [`FakeFalConfig::stream_progress_interval`]
//!   while running, `COMPLETED` and the end of the stream; a cancel wakes the
//!   request's streams at once; a keep-alive comment every 15 s. An open
//!   stream costs a sleeping task, nothing more, so thousands can be open;
//! - webhooks: a submit with `?fal_webhook=<url>` is `POST`ed, when the
//!   request ends, `{"request_id", "gateway_request_id", "status": "OK" |
//!   "ERROR", "payload", "error"}` (the payload is the result endpoint's JSON;
//!   a failed result is `ERROR` with `Invalid status code: N`, a cancel is
//!   `ERROR` with a `null` payload), signed as fal signs (Ed25519 over
//!   `request_id \n user_id \n timestamp \n sha256hex(body)`, headers
//!   `X-Fal-Webhook-{Request-Id,User-Id,Timestamp,Signature}`; see
//!   [`crate::generators::fal::webhook`]). The fake makes its key pair at
//!   start and publishes the public key as a JSON Web Key Set at
//!   `{storage}/.well-known/jwks.json` ([`FakeFalProbe::jwks_url`]). A failed
//!   delivery (connection error or non-2xx) is tried [`WEBHOOK_ATTEMPTS`]
//!   times in all, with a short doubling backoff, from a task of its own;
//! - storage upload (initiate + `PUT`), and the files themselves: a real
//!   textured GLB (a cube with normals, UVs and an embedded PNG base-colour
//!   texture, [`textured_glb`]; or the bare [`cube_glb`], see [`FakeModel`])
//!   and a PNG preview;
//! - keeps each request's state keyed by its id, so a client that "restarts"
//!   can resume polling it.
//!
//! Behaviour is scripted with a [`Scenario`], set at start or changed at
//! runtime; a request keeps the scenario in force when it was submitted.
//! Streams can be made to break ([`FakeFal::set_stream_breaks`],
//! [`FakeFal::set_stream_refusals`]) and webhooks to be lost or forged
//! ([`FakeFal::set_webhook_delivery`]) to test a client's fallbacks.
//! Counters and an event log let tests assert what the client did.

mod glb;
mod server;
mod webhooks;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use glb::{
    BASE_COLOR_FACTOR, GLB_MAGIC, TEXTURE_QUADRANTS, TEXTURE_SIDE, cube_glb, cube_glb_padded,
    draco_required_glb, texture_png, textured_glb,
};
pub use server::{ENDPOINTS, FakeEndpoint};

use crate::generators::fal::webhook::WebhookStatus;

/// The key the fake accepts unless configured otherwise.
pub const DEFAULT_FAKE_KEY: &str = "fake-key-id:fake-key-secret";

/// The user id the fake's webhooks carry (`X-Fal-Webhook-User-Id`).
pub const FAKE_WEBHOOK_USER_ID: &str = "fake-fal-user";

/// How many times in all the fake tries to deliver one webhook (fal: the
/// first try and 10 retries over 2 hours; the fake: 50 ms, 100 ms, 200 ms
/// apart).
pub const WEBHOOK_ATTEMPTS: u32 = 4;

/// What the fake does; one failure at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Everything works.
    Success,
    /// The first `times` submits answer `status` (429, 500, 502, 503, 504, …),
    /// then submits work. `u32::MAX` fails forever. A 429 carries
    /// `Retry-After: retry_after` seconds when set.
    SubmitFails {
        /// The HTTP status.
        status: u16,
        /// How many submits fail.
        times: u32,
        /// `Retry-After` seconds on a 429.
        retry_after: Option<u32>,
    },
    /// The first `times` status polls (or status stream opens) answer
    /// `status`, then they work.
    StatusFails {
        /// The HTTP status.
        status: u16,
        /// How many polls fail.
        times: u32,
    },
    /// The result is a 422 validation error.
    ResultInvalidInput,
    /// The result is a 422 whose detail type is `content_policy_violation`.
    ContentPolicy,
    /// The status is `COMPLETED` with an `error`; the result is a 500.
    CompletedWithError,
    /// The request stays `IN_PROGRESS` forever (until cancelled): no
    /// `COMPLETED` event, no webhook.
    NeverCompletes,
    /// The status answers (and stream events) are not JSON.
    MalformedStatus,
    /// The result is a 200 whose body is not JSON.
    MalformedResult,
    /// The result is a 200 JSON without the model's output field.
    ResultWithoutModel,
    /// The model file ends halfway (no `Content-Length`; the GLB header
    /// declares the whole length).
    TruncatedModel,
    /// The model file is a valid GLB of at least `bytes` bytes; sent with a
    /// `Content-Length` (and `file_size` in the result) when
    /// `content_length`, else chunked.
    OversizedModel {
        /// The file's size.
        bytes: usize,
        /// Whether its size is announced.
        content_length: bool,
    },
    /// The model file is not a GLB (what `quad` makes Tripo return: FBX).
    NotGlb,
    /// Every queue call answers 401 `No user found for Key ID and Secret`.
    Unauthorized,
    /// Every queue call answers 403 `User is locked … Exhausted balance`.
    AccountLocked,
    /// The result is a 504 with `X-Fal-Request-Timeout-Type: user`.
    UserTimeout,
}

impl Scenario {
    /// The names [`Scenario::from_str`](std::str::FromStr) accepts, for help
    /// texts.
    pub const NAMES: &'static [&'static str] = &[
        "success",
        "submit-429",
        "submit-503",
        "status-503",
        "invalid-input",
        "content-policy",
        "completed-with-error",
        "never-completes",
        "malformed-status",
        "malformed-result",
        "no-model",
        "truncated",
        "oversized",
        "not-glb",
        "unauthorized",
        "locked",
        "user-timeout",
    ];
}

impl std::str::FromStr for Scenario {
    type Err = String;

    /// Parses one of [`Scenario::NAMES`]; the transient failures fail twice
    /// then succeed, `oversized` serves 200 MB.
    fn from_str(name: &str) -> Result<Self, String> {
        Ok(match name {
            "success" => Scenario::Success,
            "submit-429" => Scenario::SubmitFails {
                status: 429,
                times: 2,
                retry_after: Some(1),
            },
            "submit-503" => Scenario::SubmitFails {
                status: 503,
                times: 2,
                retry_after: None,
            },
            "status-503" => Scenario::StatusFails {
                status: 503,
                times: 2,
            },
            "invalid-input" => Scenario::ResultInvalidInput,
            "content-policy" => Scenario::ContentPolicy,
            "completed-with-error" => Scenario::CompletedWithError,
            "never-completes" => Scenario::NeverCompletes,
            "malformed-status" => Scenario::MalformedStatus,
            "malformed-result" => Scenario::MalformedResult,
            "no-model" => Scenario::ResultWithoutModel,
            "truncated" => Scenario::TruncatedModel,
            "oversized" => Scenario::OversizedModel {
                bytes: 200 * 1024 * 1024,
                content_length: true,
            },
            "not-glb" => Scenario::NotGlb,
            "unauthorized" => Scenario::Unauthorized,
            "locked" => Scenario::AccountLocked,
            "user-timeout" => Scenario::UserTimeout,
            other => {
                return Err(format!(
                    "unknown scenario {other:?}; one of: {}",
                    Scenario::NAMES.join(", ")
                ));
            }
        })
    }
}

/// The model file a successful request returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeModel {
    /// [`textured_glb`]: what FAL's models return (normals, UVs, a PBR
    /// material with an embedded PNG base-colour texture), about 1.6 KB.
    #[default]
    Textured,
    /// [`cube_glb`]: positions and indices only, under 300 bytes. The
    /// benches use it, so that their figures stay comparable with those
    /// measured before the fake served textures.
    Cube,
    /// [`draco_required_glb`]: the textured cube declaring that it needs
    /// Draco mesh compression, which the page's viewer cannot decode.
    DracoRequired,
}

impl FakeModel {
    /// The GLB's bytes.
    #[must_use]
    pub fn glb(self) -> Vec<u8> {
        match self {
            FakeModel::Textured => textured_glb(),
            FakeModel::Cube => cube_glb(),
            FakeModel::DracoRequired => draco_required_glb(),
        }
    }
}

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct FakeFalConfig {
    /// The key it accepts (`Authorization: Key <key>`).
    pub key: String,
    /// How long a request stays `IN_QUEUE`.
    pub queue_time: Duration,
    /// How long it then stays `IN_PROGRESS`.
    pub progress_time: Duration,
    /// The initial scenario.
    pub scenario: Scenario,
    /// How often a status stream sends an `IN_PROGRESS` event while the
    /// request runs (default 1 s).
    pub stream_progress_interval: Duration,
    /// The model file results point at (default [`FakeModel::Textured`];
    /// the oversized scenario always pads the bare cube).
    pub model: FakeModel,
}

impl Default for FakeFalConfig {
    fn default() -> Self {
        Self {
            key: DEFAULT_FAKE_KEY.to_owned(),
            queue_time: Duration::from_millis(30),
            progress_time: Duration::from_millis(60),
            scenario: Scenario::Success,
            stream_progress_interval: Duration::from_secs(1),
            model: FakeModel::default(),
        }
    }
}

/// What the fake does with the webhooks it owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookDelivery {
    /// Sends them, correctly signed.
    #[default]
    Deliver,
    /// Loses them (counted by [`FakeFalProbe::webhooks_dropped`]).
    Drop,
    /// Sends them with a signature that does not verify.
    BadSignature,
}

/// One webhook delivery attempt, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// The request it reports.
    pub request_id: String,
    /// Where it went (the submit's `fal_webhook`).
    pub url: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The webhook's `status`.
    pub status: WebhookStatus,
    /// Whether it was signed correctly (not under
    /// [`WebhookDelivery::BadSignature`]).
    pub signed: bool,
    /// The HTTP status the receiver answered; `None` when it could not be
    /// reached (then `error` says why).
    pub response: Option<u16>,
    /// The connection error, if any.
    pub error: Option<String>,
}

/// What kind of call the fake received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeEventKind {
    /// `POST /{endpoint_id}`.
    Submit,
    /// `GET …/status`.
    Status,
    /// `GET …/status/stream`.
    StatusStream,
    /// `GET …/requests/{id}`.
    Result,
    /// `PUT …/cancel`.
    Cancel,
    /// `POST /storage/upload/initiate`.
    UploadInitiate,
    /// `PUT /uploads/{token}`.
    Upload,
    /// `GET /.well-known/jwks.json` (storage host).
    Jwks,
    /// `GET /files/…`.
    Download,
    /// Anything answered 404 for its path.
    NotFound,
    /// Anything answered 401 for a missing or wrong key.
    Unauthorized,
}

/// One call, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeEvent {
    /// Its kind.
    pub kind: FakeEventKind,
    /// Method and path, e.g. `GET /tripo3d/tripo/requests/…/status`.
    pub target: String,
}

/// How the image reached the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Inline, as a `data:` URI.
    DataUri {
        /// Its media type.
        mime: String,
        /// Decoded size.
        bytes: usize,
    },
    /// A file uploaded to the fake's storage.
    Uploaded {
        /// Its size.
        bytes: usize,
    },
}

/// The last accepted submit, for assertions on the input.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedSubmit {
    /// The endpoint id (the whole path).
    pub endpoint_id: String,
    /// The JSON body.
    pub body: Value,
    /// The `X-Fal-Request-Timeout` header, when sent.
    pub request_timeout: Option<String>,
    /// Where the image came from.
    pub image: ImageSource,
    /// The request id given.
    pub request_id: String,
    /// The `fal_webhook` query parameter (decoded), when sent.
    pub webhook: Option<String>,
}

/// A running fake. Shuts down when dropped (or through [`FakeFal::shutdown`]).
#[derive(Debug)]
pub struct FakeFal {
    shared: Arc<Shared>,
    /// The same state, as the handle [`FakeFal`] derefs to.
    probe: FakeFalProbe,
    queue_addr: SocketAddr,
    storage_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub submits: AtomicU64,
    pub status_polls: AtomicU64,
    pub status_streams: AtomicU64,
    pub results: AtomicU64,
    pub cancels: AtomicU64,
    pub upload_initiates: AtomicU64,
    pub uploads: AtomicU64,
    pub downloads: AtomicU64,
    pub not_found: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Requests to presigned upload or public file URLs that carried an
    /// `Authorization` header: the key must never go there.
    pub credential_leaks: AtomicU64,
    /// Streams closed early or refused by `set_stream_breaks`/`_refusals`.
    pub streams_broken: AtomicU64,
    pub webhooks_sent: AtomicU64,
    pub webhook_attempts: AtomicU64,
    pub webhooks_dropped: AtomicU64,
    /// Webhooks given up after [`WEBHOOK_ATTEMPTS`] failed tries.
    pub webhooks_failed: AtomicU64,
    pub jwks_fetches: AtomicU64,
}

/// One request the fake knows.
#[derive(Debug, Clone)]
pub(crate) struct FakeRequest {
    pub endpoint: &'static FakeEndpoint,
    pub created: Instant,
    pub queue_time: Duration,
    pub progress_time: Duration,
    pub scenario: Scenario,
    pub cancelled: bool,
    /// `quad: true` makes Tripo answer with FBX.
    pub quad: bool,
    /// Where to `POST` the outcome.
    pub webhook: Option<String>,
    /// Signalled when the request changes other than by the clock (a
    /// cancel): wakes its streams and its webhook task.
    pub changes: Arc<watch::Sender<()>>,
}

impl FakeRequest {
    pub(crate) fn new(endpoint: &'static FakeEndpoint, state: &State) -> Self {
        Self {
            endpoint,
            created: Instant::now(),
            queue_time: state.queue_time,
            progress_time: state.progress_time,
            scenario: state.scenario.clone(),
            cancelled: false,
            quad: false,
            webhook: None,
            changes: Arc::new(watch::Sender::new(())),
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub scenario: Scenario,
    pub queue_time: Duration,
    pub progress_time: Duration,
    /// Failures injected under the current scenario (reset when it changes).
    pub injected: u32,
    pub requests: HashMap<String, FakeRequest>,
    /// Uploads by token: name, bytes once `PUT`.
    pub uploads: HashMap<String, (String, Option<bytes::Bytes>)>,
    pub last_submit: Option<RecordedSubmit>,
    pub submits_by_endpoint: HashMap<String, u64>,
    pub polls_by_request: HashMap<String, u64>,
    pub events: Vec<FakeEvent>,
    pub stream_progress_interval: Duration,
    /// Streams still to close after their first event.
    pub stream_breaks: u32,
    /// Stream opens still to answer 503.
    pub stream_refusals: u32,
    pub webhook_delivery: WebhookDelivery,
    pub webhook_log: Vec<WebhookAttempt>,
}

/// The webhook signing keys: the current one signs; the JWKS lists both.
#[derive(Debug)]
pub(crate) struct WebhookKeys {
    pub current: SigningKey,
    pub previous: Option<SigningKey>,
}

fn random_signing_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub key: String,
    /// What successful requests return ([`FakeFal::set_model`] changes it).
    pub model: Mutex<FakeModel>,
    pub queue_base: String,
    pub storage_base: String,
    pub counters: Counters,
    pub state: Mutex<State>,
    pub webhook_keys: Mutex<WebhookKeys>,
    /// One client for every webhook delivery.
    pub http: reqwest::Client,
    /// Cancelled at shutdown: ends streams and webhook tasks.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model file results point at now.
    pub(crate) fn model(&self) -> FakeModel {
        *self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn webhook_keys(&self) -> std::sync::MutexGuard<'_, WebhookKeys> {
        self.webhook_keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn event(&self, kind: FakeEventKind, target: String) {
        self.state().events.push(FakeEvent { kind, target });
    }
}

impl FakeFal {
    /// Starts the fake on two ephemeral ports of `127.0.0.1` (queue and
    /// storage).
    ///
    /// # Panics
    /// When it cannot bind (tests want to know at once).
    pub async fn start(config: FakeFalConfig) -> FakeFal {
        Self::try_start(config)
            .await
            .expect("binding the fake FAL to 127.0.0.1")
    }

    /// Starts the fake on two ephemeral ports of `127.0.0.1`.
    ///
    /// # Errors
    /// When it cannot bind.
    pub async fn try_start(config: FakeFalConfig) -> io::Result<FakeFal> {
        let queue = TcpListener::bind("127.0.0.1:0").await?;
        let storage = TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(queue, storage, config)
    }

    /// Starts the fake on listeners the caller bound (e.g. fixed ports).
    ///
    /// # Errors
    /// When a listener's address cannot be read.
    pub fn start_on(
        queue: TcpListener,
        storage: TcpListener,
        config: FakeFalConfig,
    ) -> io::Result<FakeFal> {
        let queue_addr = queue.local_addr()?;
        let storage_addr = storage.local_addr()?;
        let shutdown = CancellationToken::new();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared {
            key: config.key,
            model: Mutex::new(config.model),
            queue_base: format!("http://{queue_addr}"),
            storage_base: format!("http://{storage_addr}"),
            counters: Counters::default(),
            state: Mutex::new(State {
                scenario: config.scenario,
                queue_time: config.queue_time,
                progress_time: config.progress_time,
                injected: 0,
                requests: HashMap::new(),
                uploads: HashMap::new(),
                last_submit: None,
                submits_by_endpoint: HashMap::new(),
                polls_by_request: HashMap::new(),
                events: Vec::new(),
                stream_progress_interval: config.stream_progress_interval,
                stream_breaks: 0,
                stream_refusals: 0,
                webhook_delivery: WebhookDelivery::Deliver,
                webhook_log: Vec::new(),
            }),
            webhook_keys: Mutex::new(WebhookKeys {
                current: random_signing_key(),
                previous: None,
            }),
            http,
            shutdown: shutdown.clone(),
        });
        let tasks = vec![
            serve(
                queue,
                server::queue_router(shared.clone()),
                shutdown.clone(),
            ),
            serve(
                storage,
                server::storage_router(shared.clone()),
                shutdown.clone(),
            ),
        ];
        Ok(FakeFal {
            probe: FakeFalProbe {
                shared: shared.clone(),
            },
            shared,
            queue_addr,
            storage_addr,
            shutdown,
            tasks,
        })
    }

    /// Stops serving and waits (briefly) for the servers to end.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    /// The queue base URL, e.g. `http://127.0.0.1:40123`.
    #[must_use]
    pub fn queue_base_url(&self) -> String {
        self.shared.queue_base.clone()
    }

    /// The storage (REST) base URL.
    #[must_use]
    pub fn storage_base_url(&self) -> String {
        self.shared.storage_base.clone()
    }

    /// The queue address.
    #[must_use]
    pub fn queue_addr(&self) -> SocketAddr {
        self.queue_addr
    }

    /// The storage address.
    #[must_use]
    pub fn storage_addr(&self) -> SocketAddr {
        self.storage_addr
    }

    /// The key it accepts.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// A cheap handle to the counters and records, e.g. for an observer that
    /// checks what the fake saw when it is called.
    #[must_use]
    pub fn probe(&self) -> FakeFalProbe {
        self.probe.clone()
    }

    /// Changes the model file that results point at from now on.
    pub fn set_model(&self, model: FakeModel) {
        *self.shared.model.lock().unwrap_or_else(|p| p.into_inner()) = model;
    }

    /// Changes the scenario for the calls and submits that follow (requests
    /// already submitted keep theirs) and resets the injected-failure count.
    pub fn set_scenario(&self, scenario: Scenario) {
        let mut state = self.shared.state();
        state.scenario = scenario;
        state.injected = 0;
    }

    /// Changes the time requests submitted from now on spend queued and
    /// running.
    pub fn set_latency(&self, queue_time: Duration, progress_time: Duration) {
        let mut state = self.shared.state();
        state.queue_time = queue_time;
        state.progress_time = progress_time;
    }

    /// Creates a request as if it had been submitted earlier (not counted as
    /// a submit), under the current scenario; returns its id.
    ///
    /// # Panics
    /// When the fake does not know the endpoint.
    #[must_use]
    pub fn seed_request(&self, endpoint_id: &str) -> String {
        let endpoint = ENDPOINTS
            .iter()
            .find(|e| e.endpoint_id == endpoint_id)
            .unwrap_or_else(|| panic!("the fake knows no endpoint {endpoint_id}"));
        let id = server::new_request_id();
        let mut state = self.shared.state();
        let request = FakeRequest::new(endpoint, &state);
        state.requests.insert(id.clone(), request);
        id
    }

    /// Sets how often status streams opened from now on send an
    /// `IN_PROGRESS` event while the request runs.
    pub fn set_stream_progress_interval(&self, interval: Duration) {
        self.shared.state().stream_progress_interval = interval;
    }

    /// Makes the next `n` status streams close after their first event,
    /// without `COMPLETED` (as a dropped connection would), so a client's
    /// fallback to polling can be tested. `0` stops it.
    pub fn set_stream_breaks(&self, n: u32) {
        self.shared.state().stream_breaks = n;
    }

    /// Makes the next `n` status stream opens answer 503 (fal's runner
    /// failure body). `0` stops it.
    pub fn set_stream_refusals(&self, n: u32) {
        self.shared.state().stream_refusals = n;
    }

    /// Sets what happens to the webhooks that fall due from now on.
    pub fn set_webhook_delivery(&self, delivery: WebhookDelivery) {
        self.shared.state().webhook_delivery = delivery;
    }

    /// Makes a new webhook signing key: it signs from now on, and the key
    /// set lists it beside the previous one (as during fal's rotations).
    pub fn rotate_webhook_key(&self) {
        let mut keys = self.shared.webhook_keys();
        let old = std::mem::replace(&mut keys.current, random_signing_key());
        keys.previous = Some(old);
    }
}

impl std::ops::Deref for FakeFal {
    type Target = FakeFalProbe;

    fn deref(&self) -> &FakeFalProbe {
        &self.probe
    }
}

impl Drop for FakeFal {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}

/// The fake's counters and records; cloneable, usable after the fake moved
/// (e.g. inside an observer). [`FakeFal`] derefs to it.
#[derive(Debug, Clone)]
pub struct FakeFalProbe {
    shared: Arc<Shared>,
}

impl FakeFalProbe {
    fn count(&self, c: impl Fn(&Counters) -> &AtomicU64) -> u64 {
        c(&self.shared.counters).load(Ordering::SeqCst)
    }

    /// Submit calls received (failed ones included).
    #[must_use]
    pub fn submits(&self) -> u64 {
        self.count(|c| &c.submits)
    }

    /// Submit calls received for one endpoint id (failed ones included).
    #[must_use]
    pub fn submits_to(&self, endpoint_id: &str) -> u64 {
        self.shared
            .state()
            .submits_by_endpoint
            .get(endpoint_id)
            .copied()
            .unwrap_or(0)
    }

    /// Status polls received (failed ones included; streams not).
    #[must_use]
    pub fn status_polls(&self) -> u64 {
        self.count(|c| &c.status_polls)
    }

    /// Status polls received for one request id.
    #[must_use]
    pub fn status_polls_for(&self, request_id: &str) -> u64 {
        self.shared
            .state()
            .polls_by_request
            .get(request_id)
            .copied()
            .unwrap_or(0)
    }

    /// Status streams opened.
    #[must_use]
    pub fn status_streams(&self) -> u64 {
        self.count(|c| &c.status_streams)
    }

    /// Result fetches.
    #[must_use]
    pub fn results(&self) -> u64 {
        self.count(|c| &c.results)
    }

    /// Cancel calls.
    #[must_use]
    pub fn cancels(&self) -> u64 {
        self.count(|c| &c.cancels)
    }

    /// Upload initiations.
    #[must_use]
    pub fn upload_initiates(&self) -> u64 {
        self.count(|c| &c.upload_initiates)
    }

    /// Uploaded files (`PUT`s).
    #[must_use]
    pub fn uploads(&self) -> u64 {
        self.count(|c| &c.uploads)
    }

    /// File downloads (models and previews).
    #[must_use]
    pub fn downloads(&self) -> u64 {
        self.count(|c| &c.downloads)
    }

    /// Calls answered 404 because of their path (e.g. status URLs built with
    /// the sub path).
    #[must_use]
    pub fn not_found(&self) -> u64 {
        self.count(|c| &c.not_found)
    }

    /// Calls answered 401 for a missing or wrong key.
    #[must_use]
    pub fn unauthorized(&self) -> u64 {
        self.count(|c| &c.unauthorized)
    }

    /// Calls to upload or file URLs that carried an `Authorization` header.
    #[must_use]
    pub fn credential_leaks(&self) -> u64 {
        self.count(|c| &c.credential_leaks)
    }

    /// The last accepted submit.
    #[must_use]
    pub fn last_submit(&self) -> Option<RecordedSubmit> {
        self.shared.state().last_submit.clone()
    }

    /// Every call so far, in arrival order.
    #[must_use]
    pub fn events(&self) -> Vec<FakeEvent> {
        self.shared.state().events.clone()
    }

    /// Whether a cancel reached this request before it completed.
    #[must_use]
    pub fn is_cancelled(&self, request_id: &str) -> bool {
        self.shared
            .state()
            .requests
            .get(request_id)
            .is_some_and(|r| r.cancelled)
    }

    /// The ids of every request the fake knows.
    #[must_use]
    pub fn request_ids(&self) -> Vec<String> {
        self.shared.state().requests.keys().cloned().collect()
    }

    /// Status streams that were closed early or refused on purpose
    /// ([`FakeFal::set_stream_breaks`], [`FakeFal::set_stream_refusals`]).
    #[must_use]
    pub fn streams_broken(&self) -> u64 {
        self.count(|c| &c.streams_broken)
    }

    /// Webhooks delivered (answered 2xx).
    #[must_use]
    pub fn webhooks_sent(&self) -> u64 {
        self.count(|c| &c.webhooks_sent)
    }

    /// Webhook `POST`s tried, failed ones included.
    #[must_use]
    pub fn webhook_attempts(&self) -> u64 {
        self.count(|c| &c.webhook_attempts)
    }

    /// Webhooks lost on purpose ([`WebhookDelivery::Drop`]).
    #[must_use]
    pub fn webhooks_dropped(&self) -> u64 {
        self.count(|c| &c.webhooks_dropped)
    }

    /// Webhooks given up after [`WEBHOOK_ATTEMPTS`] failed tries.
    #[must_use]
    pub fn webhooks_failed(&self) -> u64 {
        self.count(|c| &c.webhooks_failed)
    }

    /// Every webhook delivery attempt so far, in order.
    #[must_use]
    pub fn webhook_deliveries(&self) -> Vec<WebhookAttempt> {
        self.shared.state().webhook_log.clone()
    }

    /// Fetches of the key set.
    #[must_use]
    pub fn jwks_fetches(&self) -> u64 {
        self.count(|c| &c.jwks_fetches)
    }

    /// Where the fake publishes its webhook keys:
    /// `{storage}/.well-known/jwks.json` (fal: on its REST host).
    #[must_use]
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.shared.storage_base)
    }

    /// The public key that verifies the webhooks signed from now on.
    #[must_use]
    pub fn webhook_public_key(&self) -> [u8; 32] {
        self.shared
            .webhook_keys()
            .current
            .verifying_key()
            .to_bytes()
    }
}
