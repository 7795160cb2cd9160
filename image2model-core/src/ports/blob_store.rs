//! Blob storage: uploaded images, generated models and previews.

use crate::error_code::ErrorCode;
use std::fmt;
use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};

use crate::domain::{BlobKey, BlobPrefix};

/// A stream of bytes; an `Err` item aborts whatever consumes it.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// A [`ByteStream`] of one chunk.
#[must_use]
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    stream::once(async move { Ok(bytes) }).boxed()
}

/// What a store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// The object's key.
    pub key: BlobKey,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written.
    pub last_modified: DateTime<Utc>,
}

/// An object being read.
pub struct BlobObject {
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes.
    pub stream: ByteStream,
}

impl fmt::Debug for BlobObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobObject")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Bytes and object count under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Total size in bytes.
    pub bytes: u64,
    /// Number of objects.
    pub objects: u64,
}

/// A blob store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No object has this key.
    #[error("no blob at {0}")]
    NotFound(BlobKey),
    /// The body being written failed (its stream returned an error, e.g. a
    /// validation rejection or a client disconnect). Nothing was stored.
    #[error("the body being stored failed: {0}")]
    Body(io::Error),
    /// The backend could not be reached.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// The backend has no room (a full disk, no inodes left, a quota).
    /// Nothing was stored.
    #[error("blob store full: {0}")]
    Full(String),
    /// Any other backend failure.
    #[error("blob store failure: {0}")]
    Backend(String),
}

impl BlobError {
    /// The stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            BlobError::NotFound(_) => ErrorCode::NotFound.as_str(),
            BlobError::Body(_) => ErrorCode::UploadInterrupted.as_str(),
            BlobError::Unavailable(_) => ErrorCode::StorageUnavailable.as_str(),
            BlobError::Full(_) => ErrorCode::InsufficientStorage.as_str(),
            BlobError::Backend(_) => ErrorCode::InternalError.as_str(),
        }
    }
}

/// Stores bytes under server-made [`BlobKey`]s.
///
/// Contract (checked by the conformance suite):
/// - `put` streams the body and is atomic: on success the whole body is stored
///   under the key (replacing any old object); on any failure, including an
///   error from the body stream, nothing new is visible and no partial file or
///   staging file is left behind.
/// - `get` streams the object; a missing key is [`BlobError::NotFound`].
/// - `delete` of a missing key succeeds.
/// - `list` returns every object whose key lies under the prefix (segment-wise),
///   sorted by key.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`; returns the number of bytes stored.
    async fn put(&self, key: &BlobKey, body: ByteStream) -> Result<u64, BlobError>;

    /// Streams the object under `key`.
    async fn get(&self, key: &BlobKey) -> Result<BlobObject, BlobError>;

    /// What is known of the object under `key`.
    async fn head(&self, key: &BlobKey) -> Result<BlobMeta, BlobError>;

    /// Removes the object under `key`, if any.
    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError>;

    /// Every object under `prefix`, sorted by key.
    async fn list(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError>;

    /// Bytes and objects under `prefix`.
    async fn usage(&self, prefix: &BlobPrefix) -> Result<Usage, BlobError> {
        let all = self.list(prefix).await?;
        Ok(Usage {
            bytes: all.iter().map(|m| m.size).sum(),
            objects: all.len() as u64,
        })
    }

    /// Removes what a writer that died mid-`put` left behind (a killed
    /// process's staged files), when last written before `before`; with
    /// `dry_run` only counts it. The age keeps a live writer's staging out
    /// of reach. Stores whose partial writes are never visible as files
    /// (memory; S3, where a bucket lifecycle rule aborts incomplete
    /// multipart uploads) have nothing to sweep: the default.
    async fn sweep_abandoned(
        &self,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Usage, BlobError> {
        let _ = (before, dry_run);
        Ok(Usage::default())
    }

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), BlobError>;

    /// A short description for logs and health output, without secrets
    /// (e.g. `file:///srv/blobs`, `s3://bucket/prefix`).
    fn describe(&self) -> String;

    /// Stores bytes already in memory.
    async fn put_bytes(&self, key: &BlobKey, bytes: Bytes) -> Result<u64, BlobError> {
        self.put(key, bytes_stream(bytes)).await
    }

    /// Reads a whole object into memory (for small objects such as images).
    async fn get_bytes(&self, key: &BlobKey) -> Result<Bytes, BlobError> {
        let obj = self.get(key).await?;
        let mut buf = Vec::with_capacity(usize::try_from(obj.size).unwrap_or(0));
        let mut s = obj.stream;
        while let Some(chunk) = s.next().await {
            buf.extend_from_slice(&chunk.map_err(|e| BlobError::Backend(e.to_string()))?);
        }
        Ok(Bytes::from(buf))
    }
}
