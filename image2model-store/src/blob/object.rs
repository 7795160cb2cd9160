//! [`ObjectBlobStore`]: blobs in an [`object_store`] backend: S3 (and
//! S3-compatible servers) or memory.
//!
//! A body is buffered until it passes one part size (5 MiB, S3's smallest
//! part): a smaller body is sent with one atomic `PUT`; a larger one goes
//! through a multipart upload, so a large object is never held in memory
//! whole. Either way nothing is visible until the upload completes: a body
//! error aborts the multipart upload, and so does dropping the `put` future
//! (the abort is spawned). Buckets should still carry a lifecycle rule that
//! aborts incomplete multipart uploads, for processes that die mid-upload.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobMeta, BlobObject, BlobStore, ByteStream};
use object_store::aws::AmazonS3Builder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

/// The part size of multipart uploads, and the body size from which they are
/// used (S3's smallest allowed part).
const PART_SIZE: usize = 5 * 1024 * 1024;

/// How many parts of one upload may be in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Where and how to reach an S3 bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A folder inside the bucket for every key (no leading or trailing `/`).
    pub prefix: Option<String>,
    /// The region (`us-east-1` by default).
    pub region: String,
    /// A custom endpoint (an S3-compatible server), e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// The access key id; without one, the instance's credentials are used.
    pub access_key_id: Option<String>,
    /// The secret access key (never printed by `Debug`).
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials.
    pub session_token: Option<String>,
    /// How often a request S3 answered with a 5xx, 429 or 408 (or that
    /// timed out) is retried, with exponential backoff from 100 ms, before
    /// the operation fails (`S3_MAX_RETRIES`, default 10).
    pub max_retries: usize,
    /// How long retries of one request may go on (`S3_RETRY_TIMEOUT_SECS`,
    /// default 180).
    pub retry_timeout: std::time::Duration,
}

/// The default of [`S3Config::max_retries`] (`object_store`'s).
pub const S3_DEFAULT_MAX_RETRIES: usize = 10;

/// The default of [`S3Config::retry_timeout`] (`object_store`'s).
pub const S3_DEFAULT_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

impl S3Config {
    /// A configuration for `bucket` (and `prefix`) with the rest read from the
    /// usual variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`, else
    /// `us-east-1`) and `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`; the
    /// retries from `S3_MAX_RETRIES` and `S3_RETRY_TIMEOUT_SECS` (a value
    /// that is not a whole number is ignored with a warning).
    #[must_use]
    pub fn from_env(bucket: &str, prefix: Option<&str>) -> Self {
        Self::from_lookup(bucket, prefix, |name| std::env::var(name).ok())
    }

    /// As [`S3Config::from_env`], reading variables through `lookup`.
    #[must_use]
    pub fn from_lookup(
        bucket: &str,
        prefix: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            bucket: bucket.to_owned(),
            prefix: prefix.map(str::to_owned),
            region: get("AWS_REGION")
                .or_else(|| get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint: get("AWS_ENDPOINT_URL_S3").or_else(|| get("AWS_ENDPOINT_URL")),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            max_retries: parse_number("S3_MAX_RETRIES", &get)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(S3_DEFAULT_MAX_RETRIES),
            retry_timeout: parse_number("S3_RETRY_TIMEOUT_SECS", &get)
                .map_or(S3_DEFAULT_RETRY_TIMEOUT, std::time::Duration::from_secs),
        }
    }
}

/// A whole number read through `get`; `None` (with a warning when set)
/// otherwise.
fn parse_number(name: &str, get: &impl Fn(&str) -> Option<String>) -> Option<u64> {
    let text = get(name)?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::warn!(variable = name, value = %text, "not a whole number: the default is used");
            None
        }
    }
}

/// A [`BlobStore`] over any [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    /// Every key lives under this path, when set.
    prefix: Option<Path>,
    /// What `describe` shows (no secrets).
    description: String,
}

fn backend(e: impl fmt::Display) -> BlobError {
    BlobError::Backend(e.to_string())
}

/// Whether an error chain looks like the server could not be reached.
fn unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string().to_ascii_lowercase();
        if [
            "connect",
            "timed out",
            "dns",
            "error sending request",
            "broken pipe",
        ]
        .iter()
        .any(|needle| text.contains(needle))
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// Whether an error chain holds an answer that says the server is failing
/// for now (5xx, 429 or 408, or S3's `InternalError`/`SlowDown` in a 200)
/// after the retries: the store is unavailable, not broken. (`object_store`
/// keeps its retry error type private, so this reads its message, as
/// [`unreachable`] does.)
fn server_failing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if ["status code: 5", "status code: 429", "status code: 408"]
            .iter()
            .any(|needle| text.contains(needle))
            || text.contains("Server returned error response")
        {
            return true;
        }
        current = err.source();
    }
    false
}

fn map_error(key: Option<&BlobKey>, e: object_store::Error) -> BlobError {
    match (e, key) {
        (object_store::Error::NotFound { .. }, Some(key)) => BlobError::NotFound(key.clone()),
        (e, _) if unreachable(&e) || server_failing(&e) => BlobError::Unavailable(e.to_string()),
        (e, _) => backend(e),
    }
}

/// Aborts a multipart upload that was neither finished nor aborted, e.g.
/// when the `put` future is dropped.
struct AbortOnDrop(Option<WriteMultipart>);

impl AbortOnDrop {
    fn writer(&mut self) -> &mut WriteMultipart {
        self.0.as_mut().expect("the upload is live until taken")
    }

    fn take(&mut self) -> WriteMultipart {
        self.0.take().expect("the upload is taken once")
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "aborting an abandoned multipart upload failed");
                }
            });
        }
    }
}

impl ObjectBlobStore {
    /// Wraps `store`, keeping every key under `prefix` (a `/`-separated
    /// folder path, no leading or trailing `/`).
    ///
    /// # Errors
    /// [`BlobError::Backend`] when the prefix is not a valid path.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Option<&str>,
        description: impl Into<String>,
    ) -> Result<Self, BlobError> {
        let prefix = match prefix
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
        {
            Some(p) => Some(
                Path::parse(p)
                    .map_err(|e| BlobError::Backend(format!("invalid object store prefix: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            store,
            prefix,
            description: description.into(),
        })
    }

    /// A store in memory, lost when dropped.
    #[must_use]
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            prefix: None,
            description: "memory://".to_owned(),
        }
    }

    /// A store in an S3 bucket (path-style requests, so that S3-compatible
    /// servers on any host work; plain HTTP allowed only for an `http://`
    /// endpoint).
    ///
    /// # Errors
    /// [`BlobError::Backend`] when the configuration is rejected.
    pub fn s3(config: &S3Config) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(false);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        builder = builder.with_retry(object_store::RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
            ..object_store::RetryConfig::default()
        });
        let store = builder
            .build()
            .map_err(|e| BlobError::Backend(format!("configuring S3: {e}")))?;
        let description = match &config.prefix {
            Some(p) if !p.is_empty() => format!("s3://{}/{p}", config.bucket),
            _ => format!("s3://{}", config.bucket),
        };
        Self::new(Arc::new(store), config.prefix.as_deref(), description)
    }

    fn location(&self, key: &BlobKey) -> Result<Path, BlobError> {
        // Re-check the key before it becomes a path (defence in depth).
        let key = BlobKey::parse(key.as_str())
            .map_err(|e| BlobError::Backend(format!("refusing an invalid blob key: {e}")))?;
        let text = match &self.prefix {
            Some(p) => format!("{p}/{key}"),
            None => key.to_string(),
        };
        Path::parse(text).map_err(backend)
    }

    fn folder(&self, prefix: &BlobPrefix) -> Result<Option<Path>, BlobError> {
        let text = match (&self.prefix, prefix.as_str()) {
            (Some(p), Some(sub)) => format!("{p}/{sub}"),
            (Some(p), None) => p.to_string(),
            (None, Some(sub)) => sub.to_owned(),
            (None, None) => return Ok(None),
        };
        Path::parse(text).map(Some).map_err(backend)
    }

    /// The key of a stored path, `None` for objects that are not ours.
    fn key_of(&self, location: &Path) -> Option<BlobKey> {
        let text = location.as_ref();
        let rest = match &self.prefix {
            Some(p) => text.strip_prefix(p.as_ref())?.strip_prefix('/')?,
            None => text,
        };
        BlobKey::parse(rest).ok()
    }

    async fn put_multipart(
        &self,
        key: &BlobKey,
        location: &Path,
        first: bytes::Bytes,
        mut body: ByteStream,
    ) -> Result<u64, BlobError> {
        let upload = self
            .store
            .put_multipart(location)
            .await
            .map_err(|e| map_error(Some(key), e))?;
        let mut upload = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        let mut written = first.len() as u64;
        upload.writer().put(first);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // Nothing becomes visible: the parts are discarded.
                    let _ = upload.take().abort().await;
                    return Err(BlobError::Body(e));
                }
            };
            if let Err(e) = upload.writer().wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = upload.take().abort().await;
                return Err(map_error(Some(key), e));
            }
            written += chunk.len() as u64;
            upload.writer().put(chunk);
        }
        upload
            .take()
            .finish()
            .await
            .map_err(|e| map_error(Some(key), e))?;
        Ok(written)
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        let location = self.location(key)?;
        let mut buffer = BytesMut::new();
        while let Some(chunk) = body.next().await {
            // Nothing has been sent yet, so a body error leaves nothing.
            buffer.extend_from_slice(&chunk.map_err(BlobError::Body)?);
            if buffer.len() >= PART_SIZE {
                return self
                    .put_multipart(key, &location, buffer.freeze(), body)
                    .await;
            }
        }
        let written = buffer.len() as u64;
        self.store
            .put(&location, PutPayload::from(buffer.freeze()))
            .await
            .map_err(|e| map_error(Some(key), e))?;
        Ok(written)
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject, BlobError> {
        let location = self.location(key)?;
        let result = self
            .store
            .get(&location)
            .await
            .map_err(|e| map_error(Some(key), e))?;
        let size = result.meta.size;
        let stream = result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .boxed();
        Ok(BlobObject { size, stream })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta, BlobError> {
        let location = self.location(key)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(|e| map_error(Some(key), e))?;
        Ok(BlobMeta {
            key: key.clone(),
            size: meta.size,
            last_modified: meta.last_modified,
        })
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        let location = self.location(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_error(Some(key), e)),
        }
    }

    async fn list(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let folder = self.folder(prefix)?;
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(folder.as_ref())
            .try_collect()
            .await
            .map_err(|e| map_error(None, e))?;
        let mut found: Vec<BlobMeta> = metas
            .into_iter()
            .filter_map(|m| {
                let key = self.key_of(&m.location)?;
                key.starts_with(prefix).then_some(BlobMeta {
                    key,
                    size: m.size,
                    last_modified: m.last_modified,
                })
            })
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.store
            .list_with_delimiter(self.prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| map_error(None, e))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
