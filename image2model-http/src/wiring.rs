//! From [`Config`] to the pipeline's parts: stores, generators, auth.

use std::path::PathBuf;
use std::sync::Arc;

use image2model_core::Generators;
use image2model_core::auth::StaticKeys;
use image2model_core::generators::fal::FalGenerator;
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::memory::MemoryJobStore;
use image2model_core::ports::{AuthPolicy, BlobStore, JobStore, ModelGenerator};
use secrecy::ExposeSecret;

use crate::config::{Config, GeneratorChoice};

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

/// The job store named by `DATABASE_URL` (`sqlite://…`, `postgres://…`, or
/// `memory://` for a throwaway one).
///
/// # Errors
/// [`BuildError::Store`] for an unsupported or unreachable URL.
pub async fn job_store(config: &Config) -> Result<Arc<dyn JobStore>, BuildError> {
    let url = config.database_url.expose_secret();
    // An in-memory job store for trials and tests (lost on exit).
    if url.starts_with("memory:") {
        return Ok(Arc::new(MemoryJobStore::default()));
    }
    image2model_store::open_job_store(url)
        .await
        .map_err(|e| BuildError::Store(e.to_string()))
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

/// Where `system-health` measures the disk: the blob directory for
/// `file://` storage, else the working directory.
#[must_use]
pub fn disk_path(config: &Config) -> PathBuf {
    match config.storage_url.strip_prefix("file://") {
        Some(dir) if std::path::Path::new(dir).exists() => PathBuf::from(dir),
        _ => PathBuf::from("."),
    }
}

/// The generators for the configuration: relief always (offline), FAL when
/// a key is set; `GENERATOR` decides whose default model clients get (FAL's
/// is `DEFAULT_MODEL`).
///
/// # Errors
/// [`BuildError::Generators`] when `GENERATOR=fal` has no key, or the FAL
/// client cannot be built.
pub fn generators(config: &Config) -> Result<Generators, BuildError> {
    let relief: Arc<dyn ModelGenerator> = Arc::new(ReliefGenerator::default());
    let fal = match &config.fal {
        Some(fal_config) => Some(Arc::new(
            FalGenerator::new(fal_config.clone())
                .map_err(|e| BuildError::Generators(format!("FAL client: {e}")))?,
        )),
        None => None,
    };
    let (list, default) = match (config.generator, fal) {
        (GeneratorChoice::Fal, Some(fal)) => {
            let default = fal.default_model();
            let list: Vec<Arc<dyn ModelGenerator>> = vec![fal, relief];
            (list, Some(default))
        }
        (GeneratorChoice::Fal, None) => {
            return Err(BuildError::Generators(
                "GENERATOR=fal needs FAL_API_KEY (or FAL_KEY)".to_owned(),
            ));
        }
        (GeneratorChoice::Relief, Some(fal)) => {
            let list: Vec<Arc<dyn ModelGenerator>> = vec![relief, fal];
            (list, None)
        }
        (GeneratorChoice::Relief, None) => (vec![relief], None),
    };
    let generators = Generators::new(list).map_err(|e| BuildError::Generators(e.to_string()))?;
    match default {
        Some(model) => generators
            .with_default_model(model)
            .map_err(|e| BuildError::Generators(e.to_string())),
        None => Ok(generators),
    }
}

/// The bootstrap keys.
#[must_use]
pub fn auth(config: &Config) -> Arc<dyn AuthPolicy> {
    Arc::new(StaticKeys::bootstrap(
        config.api_key.clone(),
        config.admin_api_key.clone(),
    ))
}
