//! The FAL generator's configuration, and reading it from the environment.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::models::{DEFAULT_MODEL, find_model};
use super::retry::{PollPolicy, RetryPolicy};
use crate::domain::ModelName;

/// fal's queue host.
pub const DEFAULT_QUEUE_BASE_URL: &str = "https://queue.fal.run";
/// fal's REST host (storage uploads).
pub const DEFAULT_STORAGE_BASE_URL: &str = "https://rest.fal.ai";
/// Requests in flight per worker process unless `FAL_MAX_IN_FLIGHT` says
/// otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// How often the stream pump reads the status streams unless
/// `FAL_STREAM_TICK_MS` says otherwise.
pub const DEFAULT_STREAM_TICK_MS: u64 = 20;
/// Streams open from which new ones go to the stream pump: the default
/// `FAL_MAX_IN_FLIGHT` keeps every stream off it; it serves processes that
/// keep more requests in flight.
pub const DEFAULT_STREAM_PUMP_FROM: usize = DEFAULT_MAX_IN_FLIGHT;
/// The longest tick `FAL_STREAM_TICK_MS` takes.
pub const MAX_STREAM_TICK_MS: u64 = 100;

/// Everything the FAL generator needs. Build it with [`FalConfig::new`] or
/// [`FalConfig::from_lookup`], then adjust the public fields.
///
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct FalConfig {
    /// The fal key (`key_id:key_secret`), sent only as `Authorization: Key …`
    /// to the queue and storage hosts, never to file or upload URLs.
    pub credentials: SecretString,
    /// The queue base URL, scheme included, no trailing slash.
    pub queue_base_url: Url,
    /// The REST (storage) base URL, scheme included, no trailing slash.
    pub storage_base_url: Url,
    /// The model our clients get when they name none (one of the table's).
    pub default_model: ModelName,
    /// How often a queued request is polled.
    pub poll: PollPolicy,
    /// How failed calls are retried.
    pub retry: RetryPolicy,
    /// How long a request may wait in fal's queue, sent as
    /// `X-Fal-Request-Timeout` (never more than the item's deadline).
    pub queue_timeout: Option<Duration>,
    /// Images up to this many bytes are sent inline as `data:` URIs; bigger
    /// ones go through fal storage.
    pub data_uri_max_bytes: usize,
    /// The largest model file accepted.
    pub max_model_bytes: u64,
    /// The largest preview image accepted (bigger previews are dropped).
    pub max_preview_bytes: u64,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// The longest wait for any read on a connection.
    pub read_timeout: Duration,
    /// The best-effort cancel sent on timeout or cancellation waits at most
    /// this long.
    pub cancel_timeout: Duration,
    /// Requests in flight at once per worker process (`FAL_MAX_IN_FLIGHT`).
    /// A waiting request costs this process a few KiB and no CPU; fal's own
    /// account concurrency decides how many run at once, the rest wait in
    /// fal's queue, so this only bounds what one process keeps open.
    pub max_in_flight: usize,
    /// Follow each request's status stream to see its completion at once
    /// (`FAL_STATUS_STREAM`, default on); off, the status is polled per
    /// [`FalConfig::poll`]. Either way polling takes over when a stream
    /// breaks.
    pub status_stream: bool,
    /// How often the stream pump reads the status streams
    /// (`FAL_STREAM_TICK_MS`, default 20 ms, at most 100): every event
    /// waiting then is read in one go, for speed with thousands of streams
    /// open (module `pump`); zero reads each stream on its item's task.
    pub stream_tick: Duration,
    /// Streams open in the process from which a new one is read by the
    /// stream pump (`FAL_STREAM_PUMP_FROM`, default
    /// [`DEFAULT_STREAM_PUMP_FROM`]): below it, a stream's few events a
    /// second cost less than a tick's delay. A stream opened below it moves
    /// to the pump at its next event once this many others are open.
    pub stream_pump_from: usize,
    /// Where fal should call back when a request ends (the server's public
    /// URL of its FAL webhook route); `None` sends no webhook.
    pub webhook_url: Option<Url>,
    /// With a webhook, how long to wait for it before following the request's
    /// status anyway (`FAL_WEBHOOK_SAFETY_SECS`): the safety net for a lost
    /// webhook.
    pub webhook_safety: Duration,
    /// Where fal publishes the keys that sign its webhooks (`FAL_JWKS_URL`).
    pub jwks_url: Url,
}

impl fmt::Debug for FalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FalConfig")
            .field("credentials", &"[REDACTED]")
            .field("queue_base_url", &self.queue_base_url.as_str())
            .field("storage_base_url", &self.storage_base_url.as_str())
            .field("default_model", &self.default_model)
            .field("poll", &self.poll)
            .field("retry", &self.retry)
            .field("queue_timeout", &self.queue_timeout)
            .field("data_uri_max_bytes", &self.data_uri_max_bytes)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("max_preview_bytes", &self.max_preview_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("cancel_timeout", &self.cancel_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("status_stream", &self.status_stream)
            .field("stream_tick", &self.stream_tick)
            .field("stream_pump_from", &self.stream_pump_from)
            .field("webhook_url", &self.webhook_url.as_ref().map(Url::as_str))
            .field("webhook_safety", &self.webhook_safety)
            .field("jwks_url", &self.jwks_url.as_str())
            .finish()
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid FAL configuration: {name}: {message}")]
pub struct FalConfigError {
    /// The setting (environment variable name).
    pub name: String,
    /// What is wrong (never the secret itself).
    pub message: String,
}

fn config_err(name: &str, message: impl Into<String>) -> FalConfigError {
    FalConfigError {
        name: name.to_owned(),
        message: message.into(),
    }
}

impl FalConfig {
    /// A configuration with fal's hosts and our defaults.
    #[must_use]
    pub fn new(credentials: SecretString) -> Self {
        Self {
            credentials,
            queue_base_url: Url::parse(DEFAULT_QUEUE_BASE_URL).expect("a valid default URL"),
            storage_base_url: Url::parse(DEFAULT_STORAGE_BASE_URL).expect("a valid default URL"),
            default_model: ModelName::parse(DEFAULT_MODEL).expect("a valid default model"),
            poll: PollPolicy::default(),
            retry: RetryPolicy::default(),
            queue_timeout: Some(Duration::from_secs(300)),
            data_uri_max_bytes: 2 * 1024 * 1024,
            max_model_bytes: 100 * 1024 * 1024,
            max_preview_bytes: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            cancel_timeout: Duration::from_secs(2),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            status_stream: true,
            stream_tick: Duration::from_millis(DEFAULT_STREAM_TICK_MS),
            stream_pump_from: DEFAULT_STREAM_PUMP_FROM,
            webhook_url: None,
            webhook_safety: Duration::from_secs(60),
            jwks_url: Url::parse(super::webhook::DEFAULT_JWKS_URL).expect("a valid default URL"),
        }
    }

    /// Reads the configuration through `lookup` (the HTTP crate passes
    /// `|name| std::env::var(name).ok()`); empty values count as unset.
    ///
    /// - key: `FAL_API_KEY`, else `FAL_KEY`, else `FAL_KEY_ID` + `FAL_KEY_SECRET`
    ///   joined by `:`;
    /// - `FAL_QUEUE_BASE_URL`, `FAL_STORAGE_BASE_URL`: full base URLs;
    /// - `DEFAULT_MODEL`: used when it names a FAL model; another valid model
    ///   name (e.g. `relief`) is left to the other generators;
    /// - `FAL_QUEUE_TIMEOUT_SECS` (0 sends no queue timeout),
    ///   `FAL_DATA_URI_MAX_BYTES`, `FAL_MAX_MODEL_BYTES`;
    /// - `FAL_MAX_IN_FLIGHT` (at least 1), `FAL_STATUS_STREAM` (`true` or
    ///   `false`), `FAL_WEBHOOK_SAFETY_SECS` (at least 1), `FAL_JWKS_URL`.
    ///
    /// The webhook URL is not read here: the server sets it from its public
    /// URL.
    ///
    /// Returns `Ok(None)` when no key is set.
    ///
    /// # Errors
    /// A [`FalConfigError`] naming the variable for an unusable value: an
    /// unparsable or non-HTTP URL, half a key id/secret pair, a malformed
    /// model name, a non-numeric size.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, FalConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let key = if let Some(key) = get("FAL_API_KEY") {
            key
        } else if let Some(key) = get("FAL_KEY") {
            key
        } else {
            match (get("FAL_KEY_ID"), get("FAL_KEY_SECRET")) {
                (Some(id), Some(secret)) => format!("{}:{}", id.trim(), secret.trim()),
                (None, None) => return Ok(None),
                (Some(_), None) => {
                    return Err(config_err("FAL_KEY_SECRET", "FAL_KEY_ID is set without it"));
                }
                (None, Some(_)) => {
                    return Err(config_err("FAL_KEY_ID", "FAL_KEY_SECRET is set without it"));
                }
            }
        };
        let key = key.trim().to_owned();
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(config_err(
                "FAL_API_KEY",
                "the key contains whitespace or control characters",
            ));
        }
        let mut config = Self::new(SecretString::from(key));
        if let Some(v) = get("FAL_QUEUE_BASE_URL") {
            config.queue_base_url = parse_base_url("FAL_QUEUE_BASE_URL", &v)?;
        }
        if let Some(v) = get("FAL_STORAGE_BASE_URL") {
            config.storage_base_url = parse_base_url("FAL_STORAGE_BASE_URL", &v)?;
        }
        if let Some(v) = get("DEFAULT_MODEL") {
            let name = ModelName::parse(&v).map_err(|e| config_err("DEFAULT_MODEL", e.message))?;
            if find_model(name.as_str()).is_some() {
                config.default_model = name;
            }
        }
        if let Some(v) = get("FAL_QUEUE_TIMEOUT_SECS") {
            let secs: u64 = parse_number("FAL_QUEUE_TIMEOUT_SECS", &v)?;
            config.queue_timeout = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(v) = get("FAL_DATA_URI_MAX_BYTES") {
            config.data_uri_max_bytes = parse_number("FAL_DATA_URI_MAX_BYTES", &v)?;
        }
        if let Some(v) = get("FAL_MAX_MODEL_BYTES") {
            config.max_model_bytes = parse_number("FAL_MAX_MODEL_BYTES", &v)?;
        }
        if let Some(v) = get("FAL_MAX_IN_FLIGHT") {
            config.max_in_flight = parse_positive("FAL_MAX_IN_FLIGHT", &v)?;
        }
        if let Some(v) = get("FAL_STATUS_STREAM") {
            config.status_stream = crate::settings::parse_bool(&v).ok_or_else(|| {
                config_err("FAL_STATUS_STREAM", format!("{v:?} is not true or false"))
            })?;
        }
        if let Some(v) = get("FAL_STREAM_TICK_MS") {
            let ms: u64 = parse_number("FAL_STREAM_TICK_MS", &v)?;
            if ms > MAX_STREAM_TICK_MS {
                return Err(config_err(
                    "FAL_STREAM_TICK_MS",
                    format!(
                        "{ms} is more than {MAX_STREAM_TICK_MS} (a completion must be seen within 100 ms)"
                    ),
                ));
            }
            config.stream_tick = Duration::from_millis(ms);
        }
        if let Some(v) = get("FAL_STREAM_PUMP_FROM") {
            config.stream_pump_from = parse_number("FAL_STREAM_PUMP_FROM", &v)?;
        }
        if let Some(v) = get("FAL_JWKS_URL") {
            let url = Url::parse(v.trim())
                .map_err(|e| config_err("FAL_JWKS_URL", format!("{v:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(config_err(
                    "FAL_JWKS_URL",
                    "the scheme must be http or https",
                ));
            }
            config.jwks_url = url;
        }
        if let Some(v) = get("FAL_WEBHOOK_SAFETY_SECS") {
            let secs: usize = parse_positive("FAL_WEBHOOK_SAFETY_SECS", &v)?;
            config.webhook_safety = Duration::from_secs(secs as u64);
        }
        Ok(Some(config))
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, FalConfigError> {
    value.trim().parse().map_err(|_| {
        config_err(
            name,
            format!("{value:?} is not a non-negative whole number"),
        )
    })
}

fn parse_positive(name: &str, value: &str) -> Result<usize, FalConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(config_err(
            name,
            format!("{value:?} is not a whole number of at least 1"),
        )),
    }
}

/// Parses a base URL: `http` or `https`, a host, no query, fragment or
/// credentials; a trailing slash is dropped.
///
/// # Errors
/// A [`FalConfigError`] naming `name` when the URL is unusable.
pub fn parse_base_url(name: &str, value: &str) -> Result<Url, FalConfigError> {
    let url = Url::parse(value.trim())
        .map_err(|e| config_err(name, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(config_err(name, "the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config_err(name, "the URL has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_err(name, "a base URL takes no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_err(name, "a base URL takes no credentials"));
    }
    let trimmed = url.as_str().trim_end_matches('/').to_owned();
    Url::parse(&trimmed).map_err(|e| config_err(name, e.to_string()))
}

/// Joins a base URL and a path of segments (`/` separated, already safe).
pub(crate) fn join(base: &Url, path: &str) -> String {
    format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn no_key_means_no_config() {
        assert!(FalConfig::from_lookup(lookup(&[])).unwrap().is_none());
        assert!(
            FalConfig::from_lookup(lookup(&[("FAL_API_KEY", " ")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn fal_api_key_wins_over_fal_key_and_the_pair() {
        let c = FalConfig::from_lookup(lookup(&[
            ("FAL_API_KEY", "a:b"),
            ("FAL_KEY", "c:d"),
            ("FAL_KEY_ID", "e"),
            ("FAL_KEY_SECRET", "f"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.credentials.expose_secret(), "a:b");
        let c = FalConfig::from_lookup(lookup(&[("FAL_KEY", "c:d"), ("FAL_KEY_ID", "e")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.credentials.expose_secret(), "c:d");
    }

    #[test]
    fn key_id_and_secret_are_joined_with_a_colon() {
        let c = FalConfig::from_lookup(lookup(&[("FAL_KEY_ID", "id"), ("FAL_KEY_SECRET", "s")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.credentials.expose_secret(), "id:s");
        let err = FalConfig::from_lookup(lookup(&[("FAL_KEY_ID", "id")])).unwrap_err();
        assert_eq!(err.name, "FAL_KEY_SECRET");
    }

    #[test]
    fn defaults_are_fal_hosts_and_tripo() {
        let c = FalConfig::from_lookup(lookup(&[("FAL_KEY", "k")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.queue_base_url.as_str(), "https://queue.fal.run/");
        assert_eq!(c.storage_base_url.as_str(), "https://rest.fal.ai/");
        assert_eq!(c.default_model.as_str(), "tripo3d-v2.5");
    }

    #[test]
    fn base_urls_and_default_model_are_read() {
        let c = FalConfig::from_lookup(lookup(&[
            ("FAL_KEY", "k"),
            ("FAL_QUEUE_BASE_URL", "http://127.0.0.1:9000/"),
            ("FAL_STORAGE_BASE_URL", "http://127.0.0.1:9001/prefix"),
            ("DEFAULT_MODEL", "trellis"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(join(&c.queue_base_url, "a/b"), "http://127.0.0.1:9000/a/b");
        assert_eq!(
            join(&c.storage_base_url, "/storage/x"),
            "http://127.0.0.1:9001/prefix/storage/x"
        );
        assert_eq!(c.default_model.as_str(), "trellis");
    }

    #[test]
    fn a_non_fal_default_model_keeps_ours() {
        let c = FalConfig::from_lookup(lookup(&[("FAL_KEY", "k"), ("DEFAULT_MODEL", "relief")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.default_model.as_str(), "tripo3d-v2.5");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        for (name, value) in [
            ("FAL_QUEUE_BASE_URL", "not a url"),
            ("FAL_QUEUE_BASE_URL", "ftp://x"),
            ("FAL_STORAGE_BASE_URL", "http://h/?q=1"),
            ("DEFAULT_MODEL", "../etc"),
            ("FAL_MAX_MODEL_BYTES", "lots"),
            ("FAL_MAX_IN_FLIGHT", "0"),
            ("FAL_STATUS_STREAM", "maybe"),
            ("FAL_WEBHOOK_SAFETY_SECS", "-1"),
            ("FAL_JWKS_URL", "ftp://keys"),
            ("FAL_STREAM_TICK_MS", "101"),
            ("FAL_STREAM_TICK_MS", "soon"),
            ("FAL_STREAM_PUMP_FROM", "-5"),
        ] {
            let err =
                FalConfig::from_lookup(lookup(&[("FAL_KEY", "k"), (name, value)])).unwrap_err();
            assert_eq!(err.name, name, "{value}");
        }
    }

    #[test]
    fn in_flight_stream_and_safety_are_read() {
        let c = FalConfig::from_lookup(lookup(&[("FAL_KEY", "k")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert!(c.status_stream);
        assert_eq!(c.stream_tick, Duration::from_millis(DEFAULT_STREAM_TICK_MS));
        assert_eq!(c.stream_pump_from, DEFAULT_STREAM_PUMP_FROM);
        let c = FalConfig::from_lookup(lookup(&[
            ("FAL_KEY", "k"),
            ("FAL_MAX_IN_FLIGHT", "2048"),
            ("FAL_STATUS_STREAM", "false"),
            ("FAL_WEBHOOK_SAFETY_SECS", "5"),
            ("FAL_STREAM_TICK_MS", "0"),
            ("FAL_STREAM_PUMP_FROM", "64"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.stream_pump_from, 64);
        assert_eq!(c.max_in_flight, 2048);
        assert!(!c.status_stream);
        assert_eq!(c.stream_tick, Duration::ZERO);
        assert_eq!(c.webhook_safety, Duration::from_secs(5));
    }

    #[test]
    fn debug_redacts_the_key() {
        let c = FalConfig::new(SecretString::from("sekrit-id:sekrit-secret".to_owned()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
