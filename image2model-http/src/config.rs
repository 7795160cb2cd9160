//! Configuration: defaults → optional `.env` file → environment → command-line
//! flags, into one typed [`Config`].
//!
//! [`Config::from_lookup`] reads every variable through a lookup function, so
//! tests build configurations without touching the process environment.
//! Secrets are [`SecretString`]s: they print as `[redacted]` in
//! [`Config::to_redacted_json`] and in the `Display` form, and are exposed only
//! where they are used.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use image2model_core::domain::{KeyLimits, MicroUsd, PriceTable};
use image2model_core::generators::fal;
use image2model_core::generators::registry::{GeneratorRegistry, GeneratorSettings, Surroundings};
use image2model_store::redact_url;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::request_id::SpanMode;
use crate::security::gate::GateMode;

/// The deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local work: lenient checks, pretty logs.
    Development,
    /// Strict checks, host check, HSTS, JSON logs.
    Production,
}

impl Environment {
    /// The text form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

/// The whole configuration of the server and the worker. Field docs name the
/// environment variable each comes from; API.md has the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ENVIRONMENT`.
    pub environment: Environment,
    /// `BIND_ADDR`.
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL` (may hold a password).
    pub database_url: SecretString,
    /// `STORAGE_URL`.
    pub storage_url: String,
    /// `REDIS_URL` (may hold a password).
    pub redis_url: Option<SecretString>,
    /// `API_KEY`: the bootstrap user key.
    pub api_key: Option<SecretString>,
    /// `ADMIN_API_KEY`: the bootstrap admin key.
    pub admin_api_key: Option<SecretString>,
    /// `SECRET_KEY`: the server secret.
    pub secret_key: Option<SecretString>,
    /// `GENERATOR` and each generator's own section (`FAL_*`,
    /// `DEFAULT_MODEL`, …), read by the generator registry
    /// ([`GeneratorRegistry::builtin`]); [`crate::wiring::generators`] builds
    /// them.
    pub generators: GeneratorSettings,
    /// `BACKEND_CORS_ORIGINS`: exact origins.
    pub cors_origins: Vec<String>,
    /// `ALLOWED_HOSTS`: host names (without port), lower-case.
    pub allowed_hosts: Vec<String>,
    /// `TRUSTED_PROXIES`: networks whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `RATE_LIMIT_UPLOAD_PER_MINUTE`.
    pub rate_limit_upload_per_minute: u32,
    /// `RATE_LIMIT_PER_HOUR`.
    pub rate_limit_per_hour: u32,
    /// `RATE_LIMIT_DOWNLOADS_PER_HOUR`: the downloads bucket (an item's
    /// model or preview, with a key), per client IP (default 1000).
    pub rate_limit_downloads_per_hour: u32,
    /// `MAX_FILES`.
    pub max_files: usize,
    /// `MAX_FILE_BYTES`.
    pub max_file_bytes: u64,
    /// `MAX_IMAGE_PIXELS`.
    pub max_image_pixels: u64,
    /// `RETENTION_HOURS`.
    pub retention_hours: u64,
    /// `AUDIT_RETENTION_DAYS`: audit records older than this are removed by
    /// the retention task.
    pub audit_retention_days: u64,
    /// `CLEANUP_INTERVAL_MINUTES`: time between runs of the retention task.
    pub cleanup_interval_minutes: u64,
    /// `WORKER_CONCURRENCY`.
    pub worker_concurrency: usize,
    /// `WORKER_LEASE_SECONDS`: how long a worker's claim on an item holds
    /// without renewal, so how soon a crashed worker's items are picked up.
    pub worker_lease_seconds: u64,
    /// `JOB_CACHE_TTL_MS`: how long a job read may be answered from memory
    /// (changes made in this process are seen at once; other processes'
    /// after at most this long). `0` turns the cache off.
    pub job_cache_ttl_ms: u64,
    /// `METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    /// `REQUEST_GATE`: how the request gate's steps are put together
    /// (`merged`, the default, or `layered` to rule the gate out; see
    /// [`crate::security::gate`]).
    pub request_gate: GateMode,
    /// `REQUEST_SPAN`: when a request's span is made (`lazy`, the default,
    /// or `eager` to rule the lazy span out; see [`crate::request_id`]).
    pub request_span: SpanMode,
    /// `PUBLIC_BASE_URL`: where the internet reaches this server (the
    /// Cloudflare tunnel's hostname). With FAL, requests are submitted with a
    /// webhook to [`crate::routes::FAL_WEBHOOK_PATH`] under it.
    pub public_base_url: Option<url::Url>,
    /// The estimated price per item of each model: fal's public prices
    /// ([`image2model_core::generators::fal::DEFAULT_PRICES_USD`]) with
    /// `MODEL_PRICES_USD` (`model=usd,…`) over them.
    pub prices: PriceTable,
    /// `API_KEY_ITEMS_PER_DAY`, `API_KEY_SPEND_PER_DAY_USD`,
    /// `API_KEY_SPEND_PER_MONTH_USD`: the bootstrap user key's quotas.
    pub api_key_limits: KeyLimits,
    /// `WEBHOOK_*`: how jobs' ends are posted to callback URLs.
    pub webhooks: WebhookConfig,
    /// `MAX_QUEUED_ITEMS`: beyond this many items waiting for a worker,
    /// uploads answer 503 `overloaded` (default 10000; `0`: no cap).
    pub max_queued_items: u64,
    /// `MAX_CONCURRENT_UPLOADS`: uploads one instance streams at once;
    /// beyond, 503 `overloaded` (default 256).
    pub max_concurrent_uploads: usize,
    /// `MAX_EVENT_STREAMS_PER_KEY`: `GET /api/v1/events` streams one key
    /// may have open at once on one instance; beyond, 429
    /// `too_many_streams` (default 4).
    pub max_event_streams_per_key: usize,
}

/// How jobs' ends are posted to integrators' callback URLs
/// (`docs/WEBHOOKS.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `WEBHOOK_ALLOW_HTTP`: plain `http` callback URLs are accepted
    /// (default `false`: `https` only).
    pub allow_http: bool,
    /// `WEBHOOK_ALLOWED_NETS`: networks a callback may reach although they
    /// are loopback, private, link-local or otherwise reserved (default
    /// none).
    pub allowed_nets: Vec<IpNet>,
    /// `WEBHOOK_TIMEOUT_SECS`: the limit on one attempt, connecting
    /// included (default 10).
    pub timeout: std::time::Duration,
    /// `WEBHOOK_RETRY_INITIAL_MS`: the wait before the second attempt,
    /// doubled for each after (default 5000).
    pub retry_initial: std::time::Duration,
    /// `WEBHOOK_RETRY_MAX_SECS`: the longest wait between attempts
    /// (default 3600).
    pub retry_max: std::time::Duration,
    /// `WEBHOOK_RETRY_FOR_SECS`: how long after the job's end attempts go
    /// on before the delivery is marked failed (default 86400: a day).
    pub retry_for: std::time::Duration,
    /// `WEBHOOK_POLL_MS`: how often the outbox is read for due deliveries
    /// (default 500).
    pub poll: std::time::Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allowed_nets: Vec::new(),
            timeout: std::time::Duration::from_secs(10),
            retry_initial: std::time::Duration::from_secs(5),
            retry_max: std::time::Duration::from_secs(3600),
            retry_for: std::time::Duration::from_secs(24 * 3600),
            poll: std::time::Duration::from_millis(500),
        }
    }
}

/// Variables that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// The server's own variables; [`variables`] adds the generators'.
pub const SERVER_VARIABLES: &[&str] = &[
    "ENVIRONMENT",
    "BIND_ADDR",
    "DATABASE_URL",
    "STORAGE_URL",
    "BLOB_DIRECT_IO",
    "SQLITE_FAST_WRITES",
    "REDIS_URL",
    "API_KEY",
    "ADMIN_API_KEY",
    "SECRET_KEY",
    "BACKEND_CORS_ORIGINS",
    "ALLOWED_HOSTS",
    "TRUSTED_PROXIES",
    "RATE_LIMIT_UPLOAD_PER_MINUTE",
    "RATE_LIMIT_PER_HOUR",
    "RATE_LIMIT_DOWNLOADS_PER_HOUR",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "RETENTION_HOURS",
    "AUDIT_RETENTION_DAYS",
    "CLEANUP_INTERVAL_MINUTES",
    "WORKER_CONCURRENCY",
    "WORKER_LEASE_SECONDS",
    "JOB_CACHE_TTL_MS",
    "METRICS_ADDR",
    "PUBLIC_BASE_URL",
    "REQUEST_GATE",
    "REQUEST_SPAN",
    "MODEL_PRICES_USD",
    "API_KEY_ITEMS_PER_DAY",
    "API_KEY_SPEND_PER_DAY_USD",
    "API_KEY_SPEND_PER_MONTH_USD",
    "WEBHOOK_ALLOW_HTTP",
    "WEBHOOK_ALLOWED_NETS",
    "WEBHOOK_TIMEOUT_SECS",
    "WEBHOOK_RETRY_INITIAL_MS",
    "WEBHOOK_RETRY_MAX_SECS",
    "WEBHOOK_RETRY_FOR_SECS",
    "WEBHOOK_POLL_MS",
    "MAX_QUEUED_ITEMS",
    "MAX_CONCURRENT_UPLOADS",
    "MAX_EVENT_STREAMS_PER_KEY",
];

/// Every variable [`Config::from_lookup`] reads: the server's, then
/// `GENERATOR` and each registered generator's.
#[must_use]
pub fn variables() -> Vec<&'static str> {
    let mut names = SERVER_VARIABLES.to_vec();
    for name in GeneratorRegistry::builtin().variables() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Where generators are called back, under `PUBLIC_BASE_URL`: generator `x`
/// at `{PUBLIC_BASE_URL}{WEBHOOKS_PATH}x` ([`crate::FAL_WEBHOOK_PATH`] for
/// FAL).
pub const WEBHOOKS_PATH: &str = "/webhooks/";

/// The shortest secret accepted in production.
pub const MIN_SECRET_LEN: usize = 32;

/// Values that are obviously copied from an example file.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change",
    "your",
    "placeholder",
    "example",
    "replace",
    "xxxx",
    "todo",
    "secret-key",
    "dev-key",
];

struct Reader<F> {
    lookup: F,
    errors: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// A variable's value; empty counts as unset.
    fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.text(name).map(SecretString::from)
    }

    fn parsed<T: FromStr>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.text(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|e| {
                self.errors.push(format!("{name}: {e}"));
                default
            }),
        }
    }

    fn positive<T: FromStr + PartialOrd + Default + Copy>(&mut self, name: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        let v = self.parsed(name, default);
        if v <= T::default() {
            self.errors.push(format!("{name}: must be greater than 0"));
            return default;
        }
        v
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Config {
    /// Reads the configuration from the process environment, after loading an
    /// optional `.env` file from the working directory (variables already set
    /// win over the file).
    ///
    /// # Errors
    /// [`ConfigError`] listing every variable that could not be parsed.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env file is the normal case; a malformed one is reported.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(ConfigError(vec![format!(".env: {e}")]));
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable name → its value).
    ///
    /// # Errors
    /// [`ConfigError`] listing every variable that could not be parsed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        let environment = match r.text("ENVIRONMENT").map(|e| e.to_ascii_lowercase()) {
            None => Environment::Development,
            Some(e) if e == "development" || e == "dev" || e == "local" => Environment::Development,
            Some(e) if e == "production" || e == "prod" => Environment::Production,
            Some(e) => {
                r.errors.push(format!(
                    "ENVIRONMENT: {e:?} is neither development nor production"
                ));
                Environment::Development
            }
        };
        let bind_addr = r.parsed("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)));
        let database_url = SecretString::from(
            r.text("DATABASE_URL")
                .unwrap_or_else(|| "sqlite://./data/image2model.db".to_owned()),
        );
        let storage_url = r
            .text("STORAGE_URL")
            .unwrap_or_else(|| "file://./data/blobs".to_owned());
        // The stores read their switches when they open; checked here too so
        // that `config check` reports a bad value with the rest.
        let switch_errors = image2model_store::open::check_switches(|name| r.text(name));
        r.errors.extend(switch_errors);
        let public_base_url = match r.text("PUBLIC_BASE_URL") {
            None => None,
            Some(v) => match fal::parse_base_url("PUBLIC_BASE_URL", &v) {
                Ok(url) => Some(url),
                Err(e) => {
                    r.errors.push(format!("{}: {}", e.name, e.message));
                    None
                }
            },
        };
        let mut prices = image2model_core::generators::fal::default_prices();
        if let Some(text) = r.text("MODEL_PRICES_USD")
            && let Err(e) = prices.apply_overrides(&text)
        {
            r.errors.push(format!("MODEL_PRICES_USD: {e}"));
        }
        let mut usd = |name: &str| {
            r.text(name).and_then(|v| match MicroUsd::parse_usd(&v) {
                Ok(m) => Some(m),
                Err(e) => {
                    r.errors.push(format!("{name}: {e}"));
                    None
                }
            })
        };
        let spend_per_day = usd("API_KEY_SPEND_PER_DAY_USD");
        let spend_per_month = usd("API_KEY_SPEND_PER_MONTH_USD");
        let api_key_limits = KeyLimits {
            items_per_day: r
                .text("API_KEY_ITEMS_PER_DAY")
                .and_then(|v| match v.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        r.errors.push(format!(
                            "API_KEY_ITEMS_PER_DAY: {v:?} is not a whole number"
                        ));
                        None
                    }
                }),
            spend_per_day,
            spend_per_month,
        };
        let mut around = Surroundings::default();
        if let Some(base) = &public_base_url {
            let hooks = format!("{}{WEBHOOKS_PATH}", base.as_str().trim_end_matches('/'));
            match url::Url::parse(&hooks) {
                Ok(url) => around = Surroundings::with_webhook_base(url),
                Err(e) => r.errors.push(format!("PUBLIC_BASE_URL: {e}")),
            }
        }
        let registry = GeneratorRegistry::builtin();
        let generators = match registry.configure(|name| (r.lookup)(name), &around) {
            Ok(settings) => settings,
            Err(errors) => {
                r.errors.extend(errors.iter().map(ToString::to_string));
                // Never used (the errors refuse this configuration): the
                // settings of an empty environment, so that the variables
                // below are still read and their errors reported too.
                match registry.configure(|_| None, &Surroundings::default()) {
                    Ok(settings) => settings,
                    Err(_) => return Err(ConfigError(r.errors)),
                }
            }
        };
        let mut trusted_proxies = Vec::new();
        for net in r.list("TRUSTED_PROXIES") {
            match parse_net(&net) {
                Some(n) => trusted_proxies.push(n),
                None => r.errors.push(format!(
                    "TRUSTED_PROXIES: {net:?} is not an IP address or CIDR"
                )),
            }
        }
        let metrics_addr = match r.text("METRICS_ADDR") {
            None => None,
            Some(v) => match v.parse() {
                Ok(a) => Some(a),
                Err(e) => {
                    r.errors.push(format!("METRICS_ADDR: {e}"));
                    None
                }
            },
        };
        let mut allowed_nets = Vec::new();
        for net in r.list("WEBHOOK_ALLOWED_NETS") {
            match parse_net(&net) {
                Some(n) => allowed_nets.push(n),
                None => r.errors.push(format!(
                    "WEBHOOK_ALLOWED_NETS: {net:?} is not an IP address or CIDR"
                )),
            }
        }
        let defaults = WebhookConfig::default();
        let webhooks = WebhookConfig {
            allow_http: match r.text("WEBHOOK_ALLOW_HTTP") {
                None => false,
                Some(v) => image2model_store::open::parse_switch("WEBHOOK_ALLOW_HTTP", &v, false)
                    .unwrap_or_else(|e| {
                        r.errors.push(e);
                        false
                    }),
            },
            allowed_nets,
            timeout: std::time::Duration::from_secs(
                r.positive("WEBHOOK_TIMEOUT_SECS", defaults.timeout.as_secs()),
            ),
            retry_initial: std::time::Duration::from_millis(r.positive(
                "WEBHOOK_RETRY_INITIAL_MS",
                u64::try_from(defaults.retry_initial.as_millis()).unwrap_or(u64::MAX),
            )),
            retry_max: std::time::Duration::from_secs(
                r.positive("WEBHOOK_RETRY_MAX_SECS", defaults.retry_max.as_secs()),
            ),
            retry_for: std::time::Duration::from_secs(
                r.positive("WEBHOOK_RETRY_FOR_SECS", defaults.retry_for.as_secs()),
            ),
            poll: std::time::Duration::from_millis(r.positive(
                "WEBHOOK_POLL_MS",
                u64::try_from(defaults.poll.as_millis()).unwrap_or(u64::MAX),
            )),
        };
        let config = Config {
            environment,
            bind_addr,
            database_url,
            storage_url,
            redis_url: r.secret("REDIS_URL"),
            api_key: r.secret("API_KEY"),
            admin_api_key: r.secret("ADMIN_API_KEY"),
            secret_key: r.secret("SECRET_KEY"),
            generators,
            cors_origins: r.list("BACKEND_CORS_ORIGINS"),
            allowed_hosts: r
                .list("ALLOWED_HOSTS")
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            trusted_proxies,
            rate_limit_upload_per_minute: r.positive("RATE_LIMIT_UPLOAD_PER_MINUTE", 10),
            rate_limit_per_hour: r.positive("RATE_LIMIT_PER_HOUR", 100),
            rate_limit_downloads_per_hour: r.positive(
                "RATE_LIMIT_DOWNLOADS_PER_HOUR",
                crate::security::rate_limit::DEFAULT_DOWNLOADS_PER_HOUR,
            ),
            max_files: r.positive("MAX_FILES", 25),
            max_file_bytes: r.positive("MAX_FILE_BYTES", 10 * 1024 * 1024),
            max_image_pixels: r.positive("MAX_IMAGE_PIXELS", 8192 * 8192),
            retention_hours: r.positive("RETENTION_HOURS", 168),
            audit_retention_days: r.positive("AUDIT_RETENTION_DAYS", 365),
            cleanup_interval_minutes: r.positive("CLEANUP_INTERVAL_MINUTES", 60),
            worker_concurrency: r
                .positive("WORKER_CONCURRENCY", image2model_core::available_cores()),
            worker_lease_seconds: r.positive("WORKER_LEASE_SECONDS", 30),
            job_cache_ttl_ms: r.parsed("JOB_CACHE_TTL_MS", 500),
            request_gate: r.parsed("REQUEST_GATE", GateMode::default()),
            request_span: r.parsed("REQUEST_SPAN", SpanMode::default()),
            metrics_addr,
            public_base_url,
            prices,
            api_key_limits,
            webhooks,
            max_queued_items: r.parsed("MAX_QUEUED_ITEMS", 10_000),
            max_concurrent_uploads: r.positive("MAX_CONCURRENT_UPLOADS", 256),
            max_event_streams_per_key: r.positive("MAX_EVENT_STREAMS_PER_KEY", 4),
        };
        if r.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(r.errors))
        }
    }

    /// Whether this is a production deployment.
    #[must_use]
    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// Every problem that makes this configuration unsafe to run. In
    /// production these refuse start-up; in development only the ones that
    /// break the contract everywhere do (see [`Config::fatal_problems`]).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.fatal_problems();
        if !self.is_production() {
            return problems;
        }
        for (name, value) in [
            ("SECRET_KEY", &self.secret_key),
            ("API_KEY", &self.api_key),
            ("ADMIN_API_KEY", &self.admin_api_key),
        ] {
            match value {
                None => problems.push(format!("{name} is required in production")),
                Some(v) if is_placeholder(v.expose_secret()) => {
                    problems.push(format!("{name} looks like a placeholder value"));
                }
                Some(v) if v.expose_secret().len() < MIN_SECRET_LEN => problems.push(format!(
                    "{name} is shorter than {MIN_SECRET_LEN} characters (generate one with `openssl rand -hex 32`)"
                )),
                Some(_) => {}
            }
        }
        for (name, secret) in self.generators.secrets() {
            if is_placeholder(secret.expose_secret()) {
                problems.push(format!("{name} looks like a placeholder value"));
            }
        }
        for (name, url) in [
            ("DATABASE_URL", Some(&self.database_url)),
            ("REDIS_URL", self.redis_url.as_ref()),
        ] {
            if let Some(url) = url
                && url_password(url.expose_secret()).is_some_and(|p| is_placeholder(&p))
            {
                problems.push(format!("{name} has a placeholder password"));
            }
        }
        if self.allowed_hosts.is_empty() {
            problems.push("ALLOWED_HOSTS is required in production".to_owned());
        }
        problems.dedup();
        problems
    }

    /// Problems that refuse start-up in every environment.
    #[must_use]
    pub fn fatal_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let (Some(user), Some(admin)) = (&self.api_key, &self.admin_api_key)
            && user.expose_secret() == admin.expose_secret()
        {
            problems.push("API_KEY and ADMIN_API_KEY must differ".to_owned());
        }
        for (name, key) in [
            ("API_KEY", &self.api_key),
            ("ADMIN_API_KEY", &self.admin_api_key),
        ] {
            if let Some(key) = key
                && !crate::security::auth::is_token68(key.expose_secret())
            {
                problems.push(format!(
                    "{name} may hold only letters, digits and - . _ ~ + / (then = padding): \
                     a bearer token cannot carry other characters"
                ));
            }
        }
        problems.extend(self.generators.problems());
        if self.cors_origins.iter().any(|o| o.contains('*')) && self.is_production() {
            problems.push("BACKEND_CORS_ORIGINS must list exact origins, not *".to_owned());
        }
        if let Some(url) = &self.redis_url
            && !url::Url::parse(url.expose_secret())
                .is_ok_and(|u| matches!(u.scheme(), "redis" | "redis+unix" | "unix"))
        {
            problems.push("REDIS_URL must be a redis:// URL".to_owned());
        }
        for origin in &self.cors_origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                problems.push(format!(
                    "BACKEND_CORS_ORIGINS: {origin:?} is not an origin like https://example.com"
                ));
            }
        }
        problems.dedup();
        problems
    }

    /// The upload bounds for the pipeline.
    #[must_use]
    pub fn upload_limits(&self) -> image2model_core::validate::UploadLimits {
        let defaults = image2model_core::validate::UploadLimits::default();
        image2model_core::validate::UploadLimits {
            max_files: self.max_files,
            max_file_bytes: self.max_file_bytes,
            max_request_bytes: self.max_file_bytes.saturating_mul(self.max_files as u64),
            max_image_pixels: self.max_image_pixels,
            max_image_side: defaults.max_image_side,
        }
    }

    /// The effective configuration with every secret redacted (and URLs
    /// shown as the store crate shows them: password and query string
    /// masked, [`redact_url`]), for `config check` and start-up logs.
    #[must_use]
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let secret = |s: &Option<SecretString>| s.as_ref().map(|_| "[redacted]");
        let mut shown = json!({
            "ENVIRONMENT": self.environment.as_str(),
            "BIND_ADDR": self.bind_addr.to_string(),
            "DATABASE_URL": redact_url(self.database_url.expose_secret()),
            "STORAGE_URL": redact_url(&self.storage_url),
            "REDIS_URL": self.redis_url.as_ref().map(|u| redact_url(u.expose_secret())),
            "API_KEY": secret(&self.api_key),
            "ADMIN_API_KEY": secret(&self.admin_api_key),
            "SECRET_KEY": secret(&self.secret_key),
            "BACKEND_CORS_ORIGINS": self.cors_origins,
            "ALLOWED_HOSTS": self.allowed_hosts,
            "TRUSTED_PROXIES": self.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "RATE_LIMIT_UPLOAD_PER_MINUTE": self.rate_limit_upload_per_minute,
            "RATE_LIMIT_PER_HOUR": self.rate_limit_per_hour,
            "RATE_LIMIT_DOWNLOADS_PER_HOUR": self.rate_limit_downloads_per_hour,
            "MAX_FILES": self.max_files,
            "MAX_FILE_BYTES": self.max_file_bytes,
            "MAX_IMAGE_PIXELS": self.max_image_pixels,
            "RETENTION_HOURS": self.retention_hours,
            "AUDIT_RETENTION_DAYS": self.audit_retention_days,
            "CLEANUP_INTERVAL_MINUTES": self.cleanup_interval_minutes,
            "WORKER_CONCURRENCY": self.worker_concurrency,
            "WORKER_LEASE_SECONDS": self.worker_lease_seconds,
            "JOB_CACHE_TTL_MS": self.job_cache_ttl_ms,
            "METRICS_ADDR": self.metrics_addr.map(|a| a.to_string()),
            "PUBLIC_BASE_URL": self.public_base_url.as_ref().map(url::Url::as_str),
            "REQUEST_GATE": self.request_gate.as_str(),
            "REQUEST_SPAN": self.request_span.as_str(),
            "MODEL_PRICES_USD": self.prices.iter().map(|(m, p)| format!("{m}={}", p.as_usd())).collect::<Vec<_>>().join(","),
            "API_KEY_ITEMS_PER_DAY": self.api_key_limits.items_per_day,
            "API_KEY_SPEND_PER_DAY_USD": self.api_key_limits.spend_per_day.map(MicroUsd::as_usd),
            "API_KEY_SPEND_PER_MONTH_USD": self.api_key_limits.spend_per_month.map(MicroUsd::as_usd),
            "WEBHOOK_ALLOW_HTTP": self.webhooks.allow_http,
            "WEBHOOK_ALLOWED_NETS": self.webhooks.allowed_nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "WEBHOOK_TIMEOUT_SECS": self.webhooks.timeout.as_secs(),
            "WEBHOOK_RETRY_INITIAL_MS": self.webhooks.retry_initial.as_millis(),
            "WEBHOOK_RETRY_MAX_SECS": self.webhooks.retry_max.as_secs(),
            "WEBHOOK_RETRY_FOR_SECS": self.webhooks.retry_for.as_secs(),
            "WEBHOOK_POLL_MS": self.webhooks.poll.as_millis(),
            "MAX_QUEUED_ITEMS": self.max_queued_items,
            "MAX_CONCURRENT_UPLOADS": self.max_concurrent_uploads,
            "MAX_EVENT_STREAMS_PER_KEY": self.max_event_streams_per_key,
        });
        if let Some(map) = shown.as_object_mut() {
            for (name, value) in self.generators.shown() {
                map.insert(name.to_owned(), value);
            }
        }
        shown
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_redacted_json();
        let map = value.as_object().expect("an object");
        for name in variables() {
            if let Some(v) = map.get(name) {
                let shown = match v {
                    serde_json::Value::Null => "(unset)".to_owned(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                writeln!(f, "{name}={shown}")?;
            }
        }
        Ok(())
    }
}

fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDER_MARKERS.iter().any(|m| lower.contains(m))
}

/// The password of a URL (as written, percent-encoded), if it has one.
fn url_password(raw: &str) -> Option<String> {
    url::Url::parse(raw).ok()?.password().map(ToOwned::to_owned)
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image2model_core::generators::fal::FalConfig;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_api_table() {
        let c = config(&[]).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(
            c.database_url.expose_secret(),
            "sqlite://./data/image2model.db"
        );
        assert_eq!(c.storage_url, "file://./data/blobs");
        assert_eq!(c.generators.default_generator(), "relief");
        assert_eq!(c.to_redacted_json()["DEFAULT_MODEL"], "tripo3d-v2.5");
        assert_eq!(c.rate_limit_upload_per_minute, 10);
        assert_eq!(c.rate_limit_per_hour, 100);
        assert_eq!(c.max_files, 25);
        assert_eq!(c.max_file_bytes, 10_485_760);
        assert_eq!(c.max_image_pixels, 67_108_864);
        assert_eq!(c.retention_hours, 168);
        assert_eq!(c.audit_retention_days, 365);
        assert_eq!(c.cleanup_interval_minutes, 60);
        assert_eq!(c.worker_concurrency, image2model_core::available_cores());
        assert!(c.metrics_addr.is_none());
        assert_eq!(c.request_gate, GateMode::Merged);
        assert_eq!(c.request_span, SpanMode::Lazy);
    }

    #[test]
    fn the_performance_paths_can_be_switched_off() {
        let c = config(&[("REQUEST_GATE", "layered"), ("REQUEST_SPAN", "eager")]).unwrap();

        assert_eq!(c.request_gate, GateMode::Layered);
        assert_eq!(c.request_span, SpanMode::Eager);
        let err = config(&[("REQUEST_GATE", "off"), ("REQUEST_SPAN", "never")]).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }

    #[test]
    fn a_fal_key_makes_fal_the_default_generator() {
        let c = config(&[("FAL_KEY_ID", "id"), ("FAL_KEY_SECRET", "s")]).unwrap();
        assert_eq!(c.generators.default_generator(), "fal");
        let fal = c.generators.section::<FalConfig>().unwrap();
        assert_eq!(fal.credentials.expose_secret(), "id:s");
    }

    #[test]
    fn with_a_public_url_fal_is_called_back_at_its_webhook_route() {
        let c = config(&[
            ("FAL_KEY", "id:s"),
            ("PUBLIC_BASE_URL", "https://api.image2model.test/"),
        ])
        .unwrap();

        let fal = c.generators.section::<FalConfig>().unwrap();

        assert_eq!(
            fal.webhook_url.as_ref().map(url::Url::as_str),
            Some(format!("https://api.image2model.test{}", crate::FAL_WEBHOOK_PATH).as_str())
        );
    }

    #[test]
    fn generator_must_name_a_registered_generator() {
        let err = config(&[("GENERATOR", "blender")]).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid configuration: GENERATOR: \"blender\" is not one of fal, relief"
        );
    }

    #[test]
    fn generator_fal_without_a_key_is_a_problem_everywhere() {
        let c = config(&[("GENERATOR", "fal")]).unwrap();

        assert_eq!(
            c.fatal_problems(),
            ["GENERATOR=fal needs FAL_API_KEY (or FAL_KEY)"]
        );
    }

    #[test]
    fn every_unparsable_variable_is_reported() {
        let err = config(&[
            ("BIND_ADDR", "nowhere"),
            ("MAX_FILES", "-1"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, bogus"),
            ("ENVIRONMENT", "staging"),
            ("CLEANUP_INTERVAL_MINUTES", "0"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("BLOB_DIRECT_IO", "sometimes"),
            ("SQLITE_FAST_WRITES", "2"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "BIND_ADDR",
            "MAX_FILES",
            "TRUSTED_PROXIES",
            "ENVIRONMENT",
            "CLEANUP_INTERVAL_MINUTES",
            "AUDIT_RETENTION_DAYS",
            "BLOB_DIRECT_IO",
            "SQLITE_FAST_WRITES",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[test]
    fn production_refuses_weak_or_missing_secrets_and_wildcards() {
        let c = config(&[
            ("ENVIRONMENT", "production"),
            ("API_KEY", "short"),
            (
                "ADMIN_API_KEY",
                "your-admin-api-key-goes-here-please-change",
            ),
            ("BACKEND_CORS_ORIGINS", "*"),
        ])
        .unwrap();
        let problems = c.problems().join("\n");
        assert!(problems.contains("SECRET_KEY is required"));
        assert!(problems.contains("API_KEY is shorter"));
        assert!(problems.contains("ADMIN_API_KEY looks like a placeholder"));
        assert!(problems.contains("not *"));
        assert!(problems.contains("ALLOWED_HOSTS is required"));
    }

    #[test]
    fn equal_user_and_admin_keys_are_refused_everywhere() {
        let c = config(&[("API_KEY", "same"), ("ADMIN_API_KEY", "same")]).unwrap();
        assert!(c.fatal_problems().iter().any(|p| p.contains("must differ")));
    }

    #[test]
    fn redacted_output_never_contains_a_secret() {
        let c = config(&[
            ("API_KEY", "user-secret-value"),
            ("ADMIN_API_KEY", "admin-secret-value"),
            ("SECRET_KEY", "server-secret-value"),
            ("FAL_KEY", "fal-secret-value"),
            ("DATABASE_URL", "postgres://app:db-password@db/app"),
            ("REDIS_URL", "redis://:redis-password@cache:6379"),
        ])
        .unwrap();
        let shown = format!("{}{}", c, c.to_redacted_json());
        for secret in [
            "user-secret-value",
            "admin-secret-value",
            "server-secret-value",
            "fal-secret-value",
            "db-password",
            "redis-password",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked");
        }
        assert!(shown.contains("postgres://app:REDACTED@db/app"));
    }

    const EXAMPLE: &str = include_str!("../../.env.production.example");

    /// `NAME=value` lines of the example file, commented-out ones included.
    fn example_entries() -> Vec<(String, String, bool)> {
        EXAMPLE
            .lines()
            .filter_map(|line| {
                let (active, rest) = match line.strip_prefix("# ") {
                    Some(rest) => (false, rest),
                    None => (true, line),
                };
                let (name, value) = rest.split_once('=')?;
                let is_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                is_name.then(|| (name.to_owned(), value.to_owned(), active))
            })
            .collect()
    }

    /// A production configuration with good secrets, plus `extra`.
    fn production(extra: &[(&str, &str)]) -> Config {
        let mut vars = vec![
            ("ENVIRONMENT", "production"),
            (
                "SECRET_KEY",
                "3f9a1c27be4d8e05f6a7b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0",
            ),
            (
                "API_KEY",
                "9b1e6f0c2d4a7e3b5c8d0f1a2b3c4d5e6f7a8b9c0d1e2f3a",
            ),
            (
                "ADMIN_API_KEY",
                "a7c3e9f1b5d2c8e4f0a6b2c7d3e9f5a1b8c4d0e6f2a7b3c9",
            ),
            ("ALLOWED_HOSTS", "api.image2model.test"),
            ("BACKEND_CORS_ORIGINS", "https://image2model.test"),
        ];
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k, v));
        }
        config(&vars).unwrap()
    }

    #[test]
    fn the_example_file_lists_every_variable_the_config_reads() {
        let names: Vec<String> = example_entries().into_iter().map(|(n, _, _)| n).collect();

        let missing: Vec<&str> = variables()
            .into_iter()
            .filter(|v| !names.iter().any(|n| n == v))
            .collect();

        assert!(
            missing.is_empty(),
            "missing from .env.production.example: {missing:?}"
        );
    }

    #[test]
    fn every_variable_in_the_example_file_says_how_to_set_it() {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            if name.starts_with('#') || !variables().contains(&name) {
                continue;
            }
            let comment_above = lines[..i]
                .iter()
                .rev()
                .take_while(|l| !l.trim().is_empty())
                .any(|l| l.starts_with('#'));
            let section_default = !line.contains("CHANGE_ME");
            assert!(
                comment_above || section_default,
                "{name}: a placeholder without a comment saying how to generate it"
            );
        }
    }

    #[test]
    fn the_example_file_as_it_is_refuses_to_start_in_production() {
        let entries: HashMap<String, String> = example_entries()
            .into_iter()
            .filter(|(_, _, active)| *active)
            .map(|(n, v, _)| (n, v))
            .collect();
        let c = Config::from_lookup(|name| entries.get(name).cloned()).unwrap();

        let problems = c.problems().join("\n");

        assert!(c.is_production());
        for expected in [
            "SECRET_KEY looks like a placeholder",
            "API_KEY looks like a placeholder",
            "ADMIN_API_KEY looks like a placeholder",
            "FAL_API_KEY looks like a placeholder",
            "DATABASE_URL has a placeholder password",
            "REDIS_URL has a placeholder password",
        ] {
            assert!(
                problems.contains(expected),
                "{expected} not in:\n{problems}"
            );
        }
    }

    #[test]
    fn a_well_configured_production_has_no_problems() {
        assert_eq!(production(&[]).problems(), Vec::<String>::new());
    }

    #[test]
    fn production_refuses_each_missing_secret() {
        for name in ["SECRET_KEY", "API_KEY", "ADMIN_API_KEY"] {
            let c = production(&[(name, "")]);

            let problems = c.problems();

            assert_eq!(problems, [format!("{name} is required in production")]);
        }
    }

    #[test]
    fn production_refuses_each_short_secret() {
        let short = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d"; // 31 characters
        for name in ["SECRET_KEY", "API_KEY", "ADMIN_API_KEY"] {
            let c = production(&[(name, short)]);

            let problems = c.problems();

            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert!(problems[0].starts_with(&format!("{name} is shorter than 32")));
        }
    }

    #[test]
    fn production_refuses_each_placeholder_secret() {
        for value in [
            "change-me-change-me-change-me-change-me",
            "your-secret-key-here-0123456789abcdef",
            "CHANGE_ME_openssl_rand_hex_32_0123456789",
            "changeme0123456789abcdef0123456789abcdef",
        ] {
            for name in ["SECRET_KEY", "API_KEY", "ADMIN_API_KEY"] {
                let c = production(&[(name, value)]);

                let problems = c.problems();

                assert_eq!(
                    problems,
                    [format!("{name} looks like a placeholder value")],
                    "{name}={value}"
                );
            }
        }
    }

    #[test]
    fn production_refuses_equal_user_and_admin_keys() {
        let same = "9b1e6f0c2d4a7e3b5c8d0f1a2b3c4d5e6f7a8b9c0d1e2f3a";
        let c = production(&[("API_KEY", same), ("ADMIN_API_KEY", same)]);

        assert_eq!(c.problems(), ["API_KEY and ADMIN_API_KEY must differ"]);
    }

    #[test]
    fn production_refuses_a_cors_wildcard() {
        for origins in [
            "*",
            "https://image2model.test,*",
            "https://*.image2model.test",
        ] {
            let c = production(&[("BACKEND_CORS_ORIGINS", origins)]);

            let problems = c.problems();

            assert!(
                problems.iter().any(|p| p.contains("not *")),
                "{origins}: {problems:?}"
            );
        }
    }

    #[test]
    fn development_allows_missing_keys_but_not_equal_ones() {
        assert!(config(&[]).unwrap().problems().is_empty());
        let c = config(&[("API_KEY", "k"), ("ADMIN_API_KEY", "k")]).unwrap();
        assert_eq!(c.problems(), ["API_KEY and ADMIN_API_KEY must differ"]);
    }

    #[test]
    fn a_redis_url_of_another_scheme_is_a_problem() {
        let c = config(&[("REDIS_URL", "http://cache:6379")]).unwrap();

        assert_eq!(c.fatal_problems(), ["REDIS_URL must be a redis:// URL"]);
    }
}
