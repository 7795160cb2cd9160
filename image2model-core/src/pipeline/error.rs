//! The pipeline's error type.

use crate::domain::{ModelName, OptionError, QuotaExceeded};
use crate::error_code::ErrorCode;
use crate::ports::{BlobError, GenerateError, StoreError};
use crate::validate::ValidationError;

/// How a [`PipelineError`] should be understood by a caller (an HTTP adapter
/// maps these to status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    BadRequest,
    /// The upload is too large (413).
    TooLarge,
    /// The file type is not accepted (415).
    UnsupportedMedia,
    /// No such thing, or not the caller's (404).
    NotFound,
    /// Not possible in the current state (409).
    Conflict,
    /// A key's quota would be passed (429).
    QuotaExceeded,
    /// Too much work already: retry later (503, safe to show).
    Overloaded,
    /// The storage is full (507, safe to show).
    InsufficientStorage,
    /// A dependency is down (503).
    Unavailable,
    /// A bug or an unexpected failure (500).
    Internal,
}

/// Why a pipeline call failed. Every variant has a stable [`code`](Self::code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// An uploaded file was rejected.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// An option was invalid.
    #[error(transparent)]
    InvalidOption(#[from] OptionError),
    /// No generator offers the requested model.
    #[error("unknown model {0}: see the upload policy for the models offered")]
    UnknownModel(ModelName),
    /// The idempotency key is not 1 to 255 visible ASCII characters.
    #[error("the Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    /// The job (or item) does not exist or belongs to another key.
    #[error("not found")]
    NotFound,
    /// The item has no model (yet).
    #[error("the model is not ready: the item is {0}")]
    ModelNotReady(&'static str),
    /// The upload's body failed while it was read (client gone, or a limit of
    /// the transport).
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The generator configuration is invalid.
    #[error("invalid generator configuration: {0}")]
    Config(String),
    /// The upload would pass one of its key's limits.
    #[error(transparent)]
    QuotaExceeded(QuotaExceeded),
    /// The queue is full: `queued` items wait, the cap is `limit`.
    #[error("the server is busy: {queued} items are waiting (at most {limit}); retry later")]
    Overloaded {
        /// Items waiting.
        queued: u64,
        /// The cap.
        limit: u64,
    },
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(BlobError),
    /// A generator failed outside an item (rare).
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

impl PipelineError {
    /// The stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Validation(e) => e.code(),
            PipelineError::InvalidOption(e) => e.code,
            PipelineError::UnknownModel(_) => ErrorCode::UnknownModel.as_str(),
            PipelineError::InvalidIdempotencyKey => ErrorCode::InvalidIdempotencyKey.as_str(),
            PipelineError::NotFound => ErrorCode::NotFound.as_str(),
            PipelineError::ModelNotReady(_) => ErrorCode::ModelNotReady.as_str(),
            PipelineError::Interrupted(_) => ErrorCode::UploadInterrupted.as_str(),
            PipelineError::Config(_) => ErrorCode::InvalidConfiguration.as_str(),
            PipelineError::QuotaExceeded(_) => ErrorCode::QuotaExceeded.as_str(),
            PipelineError::Overloaded { .. } => ErrorCode::Overloaded.as_str(),
            PipelineError::Store(e) => e.code(),
            PipelineError::Blob(e) => e.code(),
            PipelineError::Generate(e) => e.code(),
        }
    }

    /// How to understand it.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Validation(ValidationError::UnsupportedType) => {
                ErrorKind::UnsupportedMedia
            }
            PipelineError::Validation(e) if e.is_size() => ErrorKind::TooLarge,
            PipelineError::Validation(_)
            | PipelineError::InvalidOption(_)
            | PipelineError::UnknownModel(_)
            | PipelineError::InvalidIdempotencyKey
            | PipelineError::Interrupted(_) => ErrorKind::BadRequest,
            PipelineError::NotFound | PipelineError::Blob(BlobError::NotFound(_)) => {
                ErrorKind::NotFound
            }
            PipelineError::ModelNotReady(_) | PipelineError::Store(StoreError::Conflict(_)) => {
                ErrorKind::Conflict
            }
            PipelineError::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            PipelineError::Overloaded { .. } => ErrorKind::Overloaded,
            PipelineError::Blob(BlobError::Full(_)) => ErrorKind::InsufficientStorage,
            PipelineError::Store(StoreError::Unavailable(_))
            | PipelineError::Blob(BlobError::Unavailable(_)) => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether the message is safe to show to a client. Internal errors may
    /// carry backend details: show only their code.
    #[must_use]
    pub fn is_client_safe(&self) -> bool {
        !matches!(self.kind(), ErrorKind::Internal | ErrorKind::Unavailable)
    }
}

impl From<BlobError> for PipelineError {
    fn from(e: BlobError) -> Self {
        // A body that failed because validation rejected it is a validation
        // error, not a storage one.
        if let BlobError::Body(io) = &e {
            if let Some(v) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<ValidationError>())
            {
                return PipelineError::Validation(v.clone());
            }
            if let Some(p) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<BodyLimitError>())
            {
                return PipelineError::Validation(p.0.clone());
            }
            return PipelineError::Interrupted(io.to_string());
        }
        PipelineError::Blob(e)
    }
}

/// An adapter's own limit rejection, carried through a body stream as an
/// `io::Error` so that it surfaces as the right [`ValidationError`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyLimitError(pub ValidationError);
