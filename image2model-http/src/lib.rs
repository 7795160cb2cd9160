//! # image2model-http
//!
//! The HTTP adapter of image2model: it wires the core's [`Pipeline`] to
//! poem-openapi, and nothing more. Requests become pipeline calls; pipeline
//! errors become the one error envelope.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use image2model_http::{App, config::Config};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config::from_env()?;
//! let listener = tokio::net::TcpListener::bind(config.bind_addr).await?;
//! let app = App::build(config).await?;
//! app.run(listener, CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! [`App::run`] takes a bound listener, so the binary and the tests share one
//! entry point (tests bind `127.0.0.1:0`; see [`App::spawn`]).
//!
//! ## Layout
//!
//! - [`config`]: environment (+ `.env`) → typed [`config::Config`], secrets
//!   as `SecretString`, redacted printing, production checks.
//! - [`wiring`]: config → stores, generators, auth policy (the
//!   [`KeyRegistry`]: bootstrap keys plus keys created at run time).
//! - [`audit`]: the audit trail (structured log events and stored rows) and
//!   the observer that records refused requests.
//! - [`cleanup`]: removal of old jobs, their files and orphan files, for
//!   `POST /api/v1/admin/cleanup` and the `RETENTION_HOURS` task (hourly by default).
//! - [`api`]: the `/api/v1` operations (`upload`, `jobs`, `admin`), the
//!   probes (`health`), the JSON shapes (`dto`), downloads (`model`) and the
//!   error envelope (`error`).
//! - [`security`]: the request gate that runs every step before the routes,
//!   bearer auth schemes, request ids, security headers, rate limits, client
//!   IPs, CORS, the host check.
//! - [`routes`]: the top of the routes, `/api/v1` straight to the API.
//! - [`server`]: the accept loop (hyper) with the header-size limit and the
//!   header-read timeout.
//! - [`web`]: the embedded web page.
//! - `main.rs`: the `image2model` binary (`serve`, `convert`, `config check`).

pub mod api;
pub mod audit;
pub mod cleanup;
pub mod config;
pub mod metrics;
pub mod routes;
pub mod security;
pub mod server;
pub mod web;
pub mod webhooks;
pub mod wiring;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image2model_core::auth::{KeyRegistry, StaticKeys};
use image2model_core::job_cache::{CachedJobStore, JobCacheConfig};
use image2model_core::ports::{
    AuditLog, AuthPolicy, BlobStore, JobStore, KeyStore, ModelGenerator,
};
use image2model_core::{Generators, Pipeline, PipelineConfig, WorkerConfig};
use poem::endpoint::BoxEndpoint;
use poem::{EndpointExt, IntoEndpoint, Route, get};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditObserver, Entry};
use crate::cleanup::CleanupSchedule;
use crate::config::Config;
pub use crate::routes::FAL_WEBHOOK_PATH;
use crate::routes::Routes;
use crate::security::auth::Authenticator;
use crate::security::body_limit::BodyLimit;
use crate::security::client_ip::ClientIpResolver;
use crate::security::gate::{Admission, Gate};
use crate::security::hosts::HostCheck;
use crate::security::rate_limit::{RateLimitSettings, RateLimits, Rule};
pub use crate::server::ServerLimits;
pub use crate::wiring::BuildError;

/// Where the OpenAPI document is served.
const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeRole {
    /// The HTTP API only (workers run elsewhere).
    Api,
    /// The worker only, plus `/health` and `/ready` for probes.
    Worker,
    /// Both (the default).
    #[default]
    All,
}

impl ServeRole {
    fn serves_api(self) -> bool {
        matches!(self, ServeRole::Api | ServeRole::All)
    }

    fn runs_worker(self) -> bool {
        matches!(self, ServeRole::Worker | ServeRole::All)
    }
}

/// What every handler shares: one allocation, so a clone (one per request,
/// for the request's data) is a reference count. Its parts are read through
/// `Deref` ([`SharedState`]).
#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// Shares `state`.
    #[must_use]
    pub fn new(state: SharedState) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct SharedState {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The configuration.
    pub config: Arc<Config>,
    /// Fires on shutdown: open event streams end so the server can drain.
    pub shutdown: CancellationToken,
    /// Where `system-health` measures the disk.
    pub disk_path: PathBuf,
    /// Whether blobs are local files (then `disk-usage` reports their disk).
    pub file_storage: bool,
    /// Bootstrap keys and the stored keys of the admin keys API.
    pub keys: KeyRegistry,
    /// Where audit events are stored (see [`AppState::audit`]).
    pub audit_log: Arc<dyn AuditLog>,
    /// Resolves client addresses (the TCP peer, or a trusted proxy's header).
    pub clients: ClientIpResolver,
    /// The FAL generator, when configured: fal's webhooks go to it.
    pub fal: Option<Arc<image2model_core::generators::fal::FalGenerator>>,
}

impl AppState {
    /// Records an audit event: a structured `tracing` event (target `audit`)
    /// and a row of the audit log, stamped with the time and the current
    /// request id. A storage failure is logged, never returned: auditing
    /// must not turn a request into an error.
    pub async fn audit(&self, entry: Entry) {
        let event = entry.into_event();
        tracing::info!(
            target: "audit",
            kind = %event.kind,
            actor = event.actor.as_ref().map(|a| a.as_str()),
            client_ip = event.client_ip.as_deref(),
            request_id = event.request_id.as_deref(),
            detail = %event.detail,
            "audit event"
        );
        if let Err(e) = self.audit_log.record(event).await {
            tracing::error!(error = %e, "could not store an audit event");
        }
    }
}

/// Builds an [`App`] with parts replaced (tests, embedding).
#[derive(Debug)]
pub struct AppBuilder {
    config: Config,
    role: ServeRole,
    job_store: Option<Arc<dyn JobStore>>,
    blob_store: Option<Arc<dyn BlobStore>>,
    generators: Option<Vec<Arc<dyn ModelGenerator>>>,
    auth: Option<Arc<dyn AuthPolicy>>,
    bootstrap_keys: Option<StaticKeys>,
    key_store: Option<Arc<dyn KeyStore>>,
    audit_log: Option<Arc<dyn AuditLog>>,
    cleanup: CleanupSchedule,
    worker: WorkerConfig,
    event_poll_interval: Option<Duration>,
    server_limits: ServerLimits,
    body_limit: BodyLimit,
    rate_limit_windows: Option<(Duration, Duration)>,
    rate_limit_redis_prefix: Option<String>,
}

impl AppBuilder {
    /// Connection limits (header size, header-read timeout, drain time).
    #[must_use]
    pub fn server_limits(mut self, limits: ServerLimits) -> Self {
        self.server_limits = limits;
        self
    }

    /// The bound on request bodies other than uploads (default 64 KiB).
    #[must_use]
    pub fn max_body_bytes(mut self, max: u64) -> Self {
        self.body_limit = BodyLimit { max };
        self
    }

    /// Refill windows of the upload and general buckets instead of one
    /// minute and one hour (tests use short ones to see buckets refill).
    #[must_use]
    pub fn rate_limit_windows(mut self, upload: Duration, general: Duration) -> Self {
        self.rate_limit_windows = Some((upload, general));
        self
    }

    /// The prefix of the Redis keys of shared rate limits (instances that
    /// share budgets use the same; default `image2model:ratelimit`).
    #[must_use]
    pub fn rate_limit_redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.rate_limit_redis_prefix = Some(prefix.into());
        self
    }

    /// Runs `role`.
    #[must_use]
    pub fn role(mut self, role: ServeRole) -> Self {
        self.role = role;
        self
    }

    /// Uses this job store instead of `DATABASE_URL`'s.
    #[must_use]
    pub fn job_store(mut self, store: Arc<dyn JobStore>) -> Self {
        self.job_store = Some(store);
        self
    }

    /// Uses this blob store instead of `STORAGE_URL`'s.
    #[must_use]
    pub fn blob_store(mut self, store: Arc<dyn BlobStore>) -> Self {
        self.blob_store = Some(store);
        self
    }

    /// Uses these generators (the first model of the first is the default)
    /// instead of those `GENERATOR` names.
    #[must_use]
    pub fn generators(mut self, generators: Vec<Arc<dyn ModelGenerator>>) -> Self {
        self.generators = Some(generators);
        self
    }

    /// Authenticates with this policy instead of the [`KeyRegistry`] (keys
    /// created through the admin API then authenticate only if `auth` knows
    /// them; prefer [`AppBuilder::bootstrap_keys`]).
    #[must_use]
    pub fn auth(mut self, auth: Arc<dyn AuthPolicy>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Uses these bootstrap keys instead of `API_KEY` and `ADMIN_API_KEY`
    /// (keys created through the admin API still authenticate).
    #[must_use]
    pub fn bootstrap_keys(mut self, keys: StaticKeys) -> Self {
        self.bootstrap_keys = Some(keys);
        self
    }

    /// Uses this key store instead of `DATABASE_URL`'s.
    #[must_use]
    pub fn key_store(mut self, store: Arc<dyn KeyStore>) -> Self {
        self.key_store = Some(store);
        self
    }

    /// Uses this audit log instead of `DATABASE_URL`'s.
    #[must_use]
    pub fn audit_log(mut self, log: Arc<dyn AuditLog>) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// When the `RETENTION_HOURS` cleanup task runs (default: a minute after
    /// start, then every `CLEANUP_INTERVAL_MINUTES`, hourly unless set).
    #[must_use]
    pub fn cleanup_schedule(mut self, schedule: CleanupSchedule) -> Self {
        self.cleanup = schedule;
        self
    }

    /// Worker settings (concurrency comes from `WORKER_CONCURRENCY` unless set here).
    #[must_use]
    pub fn worker(mut self, worker: WorkerConfig) -> Self {
        self.worker = worker;
        self
    }

    /// How often event streams re-read a job changed by another process.
    #[must_use]
    pub fn event_poll_interval(mut self, every: Duration) -> Self {
        self.event_poll_interval = Some(every);
        self
    }

    /// Opens the stores and builds the pipeline.
    ///
    /// # Errors
    /// [`BuildError`] when the configuration has fatal problems, a store cannot
    /// be opened or no generator is available.
    pub async fn build(self) -> Result<App, BuildError> {
        let problems = if self.config.is_production() {
            self.config.problems()
        } else {
            self.config.fatal_problems()
        };
        if !problems.is_empty() {
            return Err(BuildError::Config(problems.join("; ")));
        }
        let image2model_store::Database {
            jobs,
            keys,
            audit: audit_log,
        } = wiring::database(&self.config, self.job_store, self.key_store, self.audit_log).await?;
        let blobs = match self.blob_store {
            Some(s) => s,
            None => wiring::blob_store(&self.config).await?,
        };
        let (generators, fal) = match self.generators {
            Some(list) => (
                Generators::new(list).map_err(|e| BuildError::Generators(e.to_string()))?,
                None,
            ),
            None => wiring::generators_and_fal(&self.config)?,
        };
        let mut pipeline_config = PipelineConfig {
            limits: self.config.upload_limits(),
            ..PipelineConfig::default()
        };
        if let Some(every) = self.event_poll_interval {
            pipeline_config.event_poll_interval = every;
        }
        let jobs = CachedJobStore::wrap(
            jobs,
            JobCacheConfig {
                ttl: Duration::from_millis(self.config.job_cache_ttl_ms),
                ..JobCacheConfig::default()
            },
        );
        let pipeline = Pipeline::new(jobs, blobs, generators, pipeline_config);
        let bootstrap = self.bootstrap_keys.unwrap_or_else(|| {
            StaticKeys::bootstrap(
                self.config.api_key.clone(),
                self.config.admin_api_key.clone(),
            )
        });
        let registry = wiring::key_registry(&self.config, bootstrap, keys);
        let auth = self
            .auth
            .unwrap_or_else(|| Arc::new(registry.clone()) as Arc<dyn AuthPolicy>);
        let clients = ClientIpResolver::new(self.config.trusted_proxies.clone());
        let mut settings = RateLimitSettings::new(
            self.config.rate_limit_upload_per_minute,
            self.config.rate_limit_per_hour,
        );
        if let Some((upload, general)) = self.rate_limit_windows {
            settings.upload = Rule::new(settings.upload.limit, upload);
            settings.general = Rule::new(settings.general.limit, general);
        }
        settings.redis_url.clone_from(&self.config.redis_url);
        if let Some(prefix) = self.rate_limit_redis_prefix {
            settings.redis_prefix = prefix;
        }
        let rate_limits =
            RateLimits::with_settings(&settings, clients.clone()).map_err(BuildError::Config)?;
        if rate_limits.is_shared() {
            tracing::info!("rate limits are shared through Redis");
        }
        let mut worker = self.worker;
        if worker.concurrency == WorkerConfig::default().concurrency {
            worker.concurrency = self.config.worker_concurrency;
        }
        if worker.lease == WorkerConfig::default().lease {
            worker.lease = Duration::from_secs(self.config.worker_lease_seconds);
        }
        let state = AppState::new(SharedState {
            pipeline,
            disk_path: wiring::disk_path(&self.config),
            file_storage: image2model_store::local_blob_dir(&self.config.storage_url).is_some(),
            config: Arc::new(self.config),
            shutdown: CancellationToken::new(),
            keys: registry,
            audit_log,
            clients,
            fal,
        });
        Ok(App {
            state,
            auth,
            rate_limits,
            role: self.role,
            worker,
            cleanup: self.cleanup,
            server_limits: self.server_limits,
            body_limit: self.body_limit,
        })
    }
}

/// The server: HTTP API, worker, or both.
#[derive(Debug)]
pub struct App {
    state: AppState,
    auth: Arc<dyn AuthPolicy>,
    rate_limits: RateLimits,
    role: ServeRole,
    worker: WorkerConfig,
    cleanup: CleanupSchedule,
    server_limits: ServerLimits,
    body_limit: BodyLimit,
}

/// A server started by [`App::spawn`].
#[derive(Debug)]
pub struct SpawnedApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// Ends when the server has drained and the worker stopped.
    pub handle: JoinHandle<io::Result<()>>,
    /// Its state (pipeline, config).
    pub state: AppState,
}

impl App {
    /// A builder over `config`.
    #[must_use]
    pub fn builder(config: Config) -> AppBuilder {
        let cleanup = CleanupSchedule::every_minutes(config.cleanup_interval_minutes);
        AppBuilder {
            config,
            role: ServeRole::default(),
            job_store: None,
            blob_store: None,
            generators: None,
            auth: None,
            bootstrap_keys: None,
            key_store: None,
            audit_log: None,
            cleanup,
            worker: WorkerConfig::default(),
            event_poll_interval: None,
            server_limits: ServerLimits::default(),
            body_limit: BodyLimit::default(),
            rate_limit_windows: None,
            rate_limit_redis_prefix: None,
        }
    }

    /// Builds the app from `config` alone, running API and worker.
    ///
    /// # Errors
    /// See [`AppBuilder::build`].
    pub async fn build(config: Config) -> Result<App, BuildError> {
        Self::builder(config).build().await
    }

    /// The shared state.
    #[must_use]
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The whole HTTP endpoint: the routes behind the request gate (see
    /// [`security::gate`]).
    #[must_use]
    pub fn endpoint(&self) -> BoxEndpoint<'static> {
        self.gate().boxed()
    }

    /// [`App::endpoint`] unboxed: the server runs it in place, so that a
    /// request's future is not copied into a box of its own.
    fn gate(&self) -> Gate<Routes<BoxEndpoint<'static>>> {
        let config = &self.state.config;
        let mut other = Route::new()
            .at("/health", get(api::health::health))
            .at("/ready", get(api::health::ready));
        if self.state.fal.is_some() {
            other = other.at(FAL_WEBHOOK_PATH, poem::post(webhooks::fal));
        }
        let mut api = Route::new().boxed();
        if self.role.serves_api() {
            let service = api::service(&self.state);
            let spec = service.spec_endpoint();
            let docs = service.swagger_ui();
            other = other
                .at("/", get(web::index))
                .at("/static/:file", get(web::asset))
                .at(OPENAPI_PATH, spec)
                .nest("/docs", docs);
            api = service.into_endpoint();
        }
        let routes = Routes {
            api,
            other,
            exact: &[OPENAPI_PATH],
        };
        let admission = Arc::new(Admission {
            routes,
            limits: self.rate_limits.clone(),
            body_limit: self.body_limit,
            state: self.state.clone(),
            authenticator: Authenticator(self.auth.clone()),
        });
        let cors = security::cors::cors(&config.cors_origins)
            .map(|cors| admission.clone().with(cors).boxed());
        Gate {
            admission,
            cors,
            hsts: config.is_production(),
            hosts: HostCheck::new(config.allowed_hosts.clone()),
            audit: AuditObserver::new(
                self.state.clone(),
                self.state.clients.clone(),
                self.auth.clone(),
            ),
            clients: self.state.clients.clone(),
        }
    }

    /// Serves on `listener` (and runs the worker, by role) until `shutdown`
    /// fires; then stops accepting, ends event streams, lets requests drain
    /// (up to [`ServerLimits::drain_timeout`]) and stops the worker, which
    /// releases unfinished items. Connections are bounded as [`server`] says.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
        let state_shutdown = self.state.shutdown.clone();
        let link = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                state_shutdown.cancel();
            })
        };
        let worker = self.role.runs_worker().then(|| {
            let worker = self.state.pipeline.worker(self.worker.clone());
            tokio::spawn(worker.run(shutdown.clone()))
        });
        // Retention runs where the worker runs (one place per deployment role).
        let cleaner = self.role.runs_worker().then(|| {
            tokio::spawn(cleanup::run_schedule(
                self.state.clone(),
                self.cleanup,
                shutdown.clone(),
            ))
        });
        let sweeper = {
            let limits = self.rate_limits.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(60)) => limits.retain_recent(),
                        () = shutdown.cancelled() => return,
                    }
                }
            })
        };
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, role = ?self.role, "listening");
        let endpoint = self.gate();
        let served = server::serve(listener, endpoint, self.server_limits, shutdown.clone()).await;
        shutdown.cancel();
        if let Some(worker) = worker
            && let Err(e) = worker.await
        {
            tracing::error!(error = %e, "worker task failed");
        }
        let _ = sweeper.await;
        if let Some(cleaner) = cleaner {
            let _ = cleaner.await;
        }
        let _ = link.await;
        tracing::info!("stopped");
        served
    }

    /// Binds `addr` (use port 0 for any) and runs in a background task.
    ///
    /// # Errors
    /// The bind error.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<SpawnedApp> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = self.state.clone();
        let handle = tokio::spawn(self.run(listener, shutdown.clone()));
        Ok(SpawnedApp {
            addr,
            shutdown,
            handle,
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_task_runs_every_cleanup_interval_minutes() {
        let config = Config::from_lookup(|name| {
            (name == "CLEANUP_INTERVAL_MINUTES").then(|| "15".to_owned())
        })
        .expect("config");

        let builder = App::builder(config);

        assert_eq!(
            builder.cleanup.every,
            std::time::Duration::from_secs(15 * 60)
        );
        assert_eq!(
            builder.cleanup.first_after,
            std::time::Duration::from_secs(60)
        );
    }
}
