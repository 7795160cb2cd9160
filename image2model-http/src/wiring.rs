//! From [`Config`] to the pipeline's parts: stores, generators, the key
//! registry.

use std::path::PathBuf;
use std::sync::Arc;

use image2model_core::auth::{KeyRegistry, StaticKeys};
use image2model_core::generators::fal::FalGenerator;
use image2model_core::memory::{MemoryAuditLog, MemoryKeyStore};
use image2model_core::ports::{AuditLog, BlobStore, JobStore, KeyStore};
use image2model_core::{Generators, PipelineError};
use image2model_store::Database;
use secrecy::{ExposeSecret, SecretString};

use crate::config::Config;

/// Why the app could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A store could not be opened.
    #[error("store: {0}")]
    Store(String),
    /// The generators could not be set up.
    #[error("generators: {0}")]
    Generators(String),
}

/// The job store, key store and audit log: those given, the rest from the
/// database `DATABASE_URL` names (`sqlite://…`, `postgres://…`, or
/// `memory://` for throwaway in-memory ones; [`image2model_store::open`]
/// reads the URL), all three in one database.
///
/// When a job store is given but no key store or audit log, those are kept
/// in memory rather than opening `DATABASE_URL` beside a store it may not
/// describe (tests and embedding).
///
/// # Errors
/// [`BuildError::Store`] for an unsupported or unreachable URL.
pub async fn database(
    config: &Config,
    jobs: Option<Arc<dyn JobStore>>,
    keys: Option<Arc<dyn KeyStore>>,
    audit: Option<Arc<dyn AuditLog>>,
) -> Result<Database, BuildError> {
    if let Some(jobs) = jobs {
        return Ok(Database {
            jobs,
            keys: keys.unwrap_or_else(|| Arc::new(MemoryKeyStore::default())),
            audit: audit.unwrap_or_else(|| Arc::new(MemoryAuditLog::default())),
        });
    }
    let db = image2model_store::open_database(config.database_url.expose_secret())
        .await
        .map_err(|e| BuildError::Store(e.to_string()))?;
    Ok(Database {
        jobs: db.jobs,
        keys: keys.unwrap_or(db.keys),
        audit: audit.unwrap_or(db.audit),
    })
}

/// The blob store named by `STORAGE_URL` (`file://…`, `s3://…`, `memory://`).
///
/// # Errors
/// [`BuildError::Store`] for an unsupported or unreachable URL.
pub async fn blob_store(config: &Config) -> Result<Arc<dyn BlobStore>, BuildError> {
    image2model_store::open_blob_store(&config.storage_url)
        .await
        .map_err(|e| BuildError::Store(e.to_string()))
}

/// Where `system-health` measures the disk: the blob directory of
/// `file://` storage ([`image2model_store::local_blob_dir`]) once it
/// exists, else the working directory.
#[must_use]
pub fn disk_path(config: &Config) -> PathBuf {
    match image2model_store::local_blob_dir(&config.storage_url) {
        Some(dir) if dir.exists() => dir,
        _ => PathBuf::from("."),
    }
}

/// The generators the configuration's registry settings build
/// ([`image2model_core::generators::registry`]): every configured kind
/// (relief always, FAL when a key is set), the one `GENERATOR` names first;
/// clients that name no model get its default model (FAL's is
/// `DEFAULT_MODEL`).
///
/// # Errors
/// [`BuildError::Generators`] when the kind `GENERATOR` names is not
/// configured (`GENERATOR=fal` without a key), or a generator cannot be built.
pub fn generators(config: &Config) -> Result<Generators, BuildError> {
    generators_and_fal(config).map(|(generators, _)| generators)
}

/// [`generators`], and the FAL generator among them when there is one (the
/// server hands it fal's webhooks).
///
/// # Errors
/// As [`generators`].
pub fn generators_and_fal(
    config: &Config,
) -> Result<(Generators, Option<Arc<FalGenerator>>), BuildError> {
    let built = config.generators.build().map_err(|e| match e {
        PipelineError::Config(message) => BuildError::Generators(message),
        other => BuildError::Generators(other.to_string()),
    })?;
    let fal = built.find::<FalGenerator>();
    Ok((built.into_generators(), fal))
}

/// The pepper used without `SECRET_KEY` (development only: production
/// refuses to start without `SECRET_KEY`). Keys created under it stop
/// working once a `SECRET_KEY` is set.
pub const DEVELOPMENT_PEPPER: &str = "image2model-development-pepper-not-secret";

/// The server's key policy: `bootstrap` plus the keys in `store`, hashed
/// with `SECRET_KEY` as the pepper (or [`DEVELOPMENT_PEPPER`], with a
/// warning logged once per process).
#[must_use]
pub fn key_registry(
    config: &Config,
    bootstrap: StaticKeys,
    store: Arc<dyn KeyStore>,
) -> KeyRegistry {
    let pepper = match &config.secret_key {
        Some(secret) if !secret.expose_secret().is_empty() => secret.clone(),
        _ => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "SECRET_KEY is not set: API keys created through the admin API are hashed \
                     with a fixed development pepper; set SECRET_KEY before relying on them"
                );
            });
            SecretString::from(DEVELOPMENT_PEPPER)
        }
    };
    KeyRegistry::new(bootstrap, store, pepper)
}
