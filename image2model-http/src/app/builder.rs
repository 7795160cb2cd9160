//! [`AppBuilder`]: from a [`Config`] (and any parts given in its place) to
//! the parts of an app ([`Assembled`]): the stores and generators
//! ([`crate::wiring`]), the pipeline, the key registry, the rate limits and
//! the shared [`AppState`]. `app.rs` turns them into an `App`.

use std::sync::Arc;
use std::time::Duration;

use image2model_core::auth::StaticKeys;
use image2model_core::domain::ApiKeyId;
use image2model_core::job_cache::{CachedJobStore, JobCacheConfig};
use image2model_core::ports::{
    AuditLog, AuthPolicy, BlobStore, JobStore, KeyStore, ModelGenerator,
};
use image2model_core::{Generators, Pipeline, PipelineConfig, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::callbacks::{AddressPolicy, WebhookSecrets};
use crate::cleanup::CleanupSchedule;
use crate::config::Config;
use crate::links::LinkSigner;
use crate::security::body_limit::BodyLimit;
use crate::security::client_ip::ClientIpResolver;
use crate::security::rate_limit::{RateLimitSettings, RateLimits, Rule};
use crate::server::ServerLimits;
use crate::state::{AppState, SharedState};
use crate::wiring::{self, BuildError};

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
    /// Whether the API (and the page and its documents) is served.
    pub(super) fn serves_api(self) -> bool {
        matches!(self, ServeRole::Api | ServeRole::All)
    }

    /// Whether the worker and the retention task run.
    pub(super) fn runs_worker(self) -> bool {
        matches!(self, ServeRole::Worker | ServeRole::All)
    }
}

/// The parts of an app, as [`AppBuilder`] made them.
#[derive(Debug)]
pub(super) struct Assembled {
    pub(super) state: AppState,
    pub(super) auth: Arc<dyn AuthPolicy>,
    pub(super) rate_limits: RateLimits,
    pub(super) role: ServeRole,
    pub(super) worker: WorkerConfig,
    pub(super) cleanup: CleanupSchedule,
    pub(super) server_limits: ServerLimits,
    pub(super) body_limit: BodyLimit,
}

/// Builds an [`App`](super::App) with parts replaced (tests, embedding).
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
    /// A builder over `config` with nothing replaced
    /// ([`App::builder`](super::App::builder)).
    pub(super) fn new(config: Config) -> Self {
        let cleanup = CleanupSchedule::every_minutes(config.cleanup_interval_minutes);
        Self {
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

    /// Authenticates with this policy instead of the key registry (keys
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

    /// What [`AppBuilder::build`] makes an [`App`](super::App) of: the
    /// stores opened, the pipeline built, the shared state made.
    pub(super) async fn assemble(self) -> Result<Assembled, BuildError> {
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
            prices: self.config.prices.clone(),
            max_queued_items: (self.config.max_queued_items > 0)
                .then_some(self.config.max_queued_items),
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
        let mut bootstrap = self.bootstrap_keys.unwrap_or_else(|| {
            StaticKeys::bootstrap(
                self.config.api_key.clone(),
                self.config.admin_api_key.clone(),
            )
        });
        bootstrap.set_limits(&ApiKeyId::bootstrap_user(), self.config.api_key_limits);
        let registry = wiring::key_registry(&self.config, bootstrap, keys);
        let auth = self
            .auth
            .unwrap_or_else(|| Arc::new(registry.clone()) as Arc<dyn AuthPolicy>);
        let clients = ClientIpResolver::new(self.config.trusted_proxies.clone());
        let mut settings = RateLimitSettings::new(
            self.config.rate_limit_upload_per_minute,
            self.config.rate_limit_per_hour,
        );
        settings.downloads = Rule::new(
            self.config.rate_limit_downloads_per_hour,
            settings.downloads.window,
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
        let links = LinkSigner::from_secret(self.config.secret_key.as_ref());
        let webhook_secrets = WebhookSecrets::from_secret(self.config.secret_key.as_ref());
        let upload_slots = Arc::new(tokio::sync::Semaphore::new(
            self.config.max_concurrent_uploads,
        ));
        let event_streams = crate::streams::StreamSlots::new(self.config.max_event_streams_per_key);
        let webhook_addresses = Arc::new(AddressPolicy::new(
            self.config.webhooks.allowed_nets.clone(),
        ));
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
            links,
            webhook_secrets,
            webhook_addresses,
            upload_slots,
            event_streams,
        });
        Ok(Assembled {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retention_task_runs_every_cleanup_interval_minutes() {
        let config = Config::from_lookup(|name| {
            (name == "CLEANUP_INTERVAL_MINUTES").then(|| "15".to_owned())
        })
        .expect("config");

        let builder = AppBuilder::new(config);

        assert_eq!(builder.cleanup.every, Duration::from_secs(15 * 60));
        assert_eq!(builder.cleanup.first_after, Duration::from_secs(60));
    }
}
