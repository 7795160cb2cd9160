//! Model generation: from an image to a GLB.

use crate::error_code::ErrorCode;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::blob_store::ByteStream;
use crate::domain::{GenerateOptions, ImageKind, ItemId, JobId, ModelName, Progress};

/// A model a generator offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The name clients pass as `model`.
    pub name: ModelName,
    /// Which generator serves it (`relief`, `fal`).
    pub generator: String,
    /// One line for humans.
    pub description: String,
}

/// One image to turn into a model.
#[derive(Clone)]
pub struct GenerateRequest {
    /// The job.
    pub job_id: JobId,
    /// The item.
    pub item_id: ItemId,
    /// Options (the model among them).
    pub options: GenerateOptions,
    /// The whole image (bounded by the upload limits).
    pub image: Bytes,
    /// Its kind.
    pub image_kind: ImageKind,
    /// A remote request started by an earlier attempt (persisted through
    /// [`GenerationObserver::remote_request`]): resume it instead of starting
    /// (and paying for) a new one.
    pub resume_remote_request: Option<String>,
}

impl fmt::Debug for GenerateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRequest")
            .field("job_id", &self.job_id)
            .field("item_id", &self.item_id)
            .field("options", &self.options)
            .field("image_bytes", &self.image.len())
            .field("image_kind", &self.image_kind)
            .field("resume_remote_request", &self.resume_remote_request)
            .finish()
    }
}

/// Receives what a generator reports while it works.
#[async_trait]
pub trait GenerationObserver: Send + Sync {
    /// Progress so far (lower values than before are ignored).
    async fn progress(&self, progress: Progress);

    /// Until when a progress report would be ignored whatever its value,
    /// when that is later than now; `None` when one may count at once.
    ///
    /// A hint: a generator that learns progress often (a stream of events
    /// read elsewhere) may wait until then and report only the latest value,
    /// instead of waking for each. Reports made earlier are still allowed.
    /// The default says reports always count.
    fn quiet_until(&self) -> Option<std::time::Instant> {
        None
    }

    /// A remote request was started; the pipeline persists its id before this
    /// returns. A generator must call this before it waits on the request, and
    /// must give up (without polling) when it fails.
    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError>;
}

/// What a generator gets besides the request.
#[derive(Clone)]
pub struct GenerateContext<'a> {
    /// Where to report.
    pub observer: &'a dyn GenerationObserver,
    /// Fires when the item is cancelled or the worker stops; the generator
    /// stops promptly, cancels remote work and returns [`GenerateError::Cancelled`].
    pub cancel: CancellationToken,
    /// The longest the whole generation may take.
    pub deadline: Duration,
}

impl fmt::Debug for GenerateContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateContext")
            .field("cancelled", &self.cancel.is_cancelled())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// A preview image of a generated model.
pub struct GeneratedPreview {
    /// Its kind.
    pub kind: ImageKind,
    /// Its bytes.
    pub body: ByteStream,
}

impl fmt::Debug for GeneratedPreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedPreview")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// A generated model, streamed: the pipeline validates it as binary glTF while
/// storing it.
pub struct GeneratedModel {
    /// The GLB bytes.
    pub glb: ByteStream,
    /// The size, when known in advance.
    pub size_hint: Option<u64>,
    /// A preview image, when the generator made one.
    pub preview: Option<GeneratedPreview>,
}

impl fmt::Debug for GeneratedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedModel")
            .field("size_hint", &self.size_hint)
            .field("preview", &self.preview)
            .finish_non_exhaustive()
    }
}

/// Whether a generator can work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GeneratorHealth {
    /// Working.
    Healthy,
    /// Working with trouble (e.g. recent upstream errors).
    Degraded {
        /// What is wrong.
        message: String,
    },
    /// Not working until an admin acts (e.g. FAL credentials rejected or the
    /// account's balance exhausted).
    Unhealthy {
        /// Stable code, e.g. `generator_account_error`.
        code: String,
        /// What is wrong.
        message: String,
    },
}

/// Why generation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The generator does not offer this model.
    #[error("unknown model {0}")]
    UnknownModel(ModelName),
    /// The image could not be used (did not decode, or the model rejected it).
    #[error("the image was rejected: {0}")]
    InvalidInput(String),
    /// The remote model refused the content.
    #[error("content policy violation: {0}")]
    ContentPolicy(String),
    /// Credentials rejected or account locked: no retry helps.
    #[error("generator account error: {0}")]
    Account(String),
    /// The generator is unreachable or overloaded after retries.
    #[error("generator unavailable: {0}")]
    Unavailable(String),
    /// The deadline or the remote queue timeout passed.
    #[error("generation timed out: {0}")]
    Timeout(String),
    /// Cancelled through the context.
    #[error("generation cancelled")]
    Cancelled,
    /// The generator's output is not a valid model.
    #[error("invalid model output: {0}")]
    InvalidOutput(String),
    /// The model file exceeds the size cap.
    #[error("model larger than {0} bytes")]
    OutputTooLarge(u64),
    /// The remote service failed in a way not covered above.
    #[error("upstream error: {0}")]
    Upstream(String),
    /// A bug or an unexpected local failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GenerateError {
    /// The stable error code stored in the item's error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            GenerateError::UnknownModel(_) => ErrorCode::UnknownModel.as_str(),
            GenerateError::InvalidInput(_) => ErrorCode::GenerationRejected.as_str(),
            GenerateError::ContentPolicy(_) => ErrorCode::ContentPolicyViolation.as_str(),
            GenerateError::Account(_) => ErrorCode::GeneratorAccountError.as_str(),
            GenerateError::Unavailable(_) => ErrorCode::GeneratorUnavailable.as_str(),
            GenerateError::Timeout(_) => ErrorCode::GenerationTimeout.as_str(),
            GenerateError::Cancelled => ErrorCode::Cancelled.as_str(),
            GenerateError::InvalidOutput(_) => ErrorCode::InvalidModelOutput.as_str(),
            GenerateError::OutputTooLarge(_) => ErrorCode::ModelTooLarge.as_str(),
            GenerateError::Upstream(_) => ErrorCode::UpstreamError.as_str(),
            GenerateError::Internal(_) => ErrorCode::InternalError.as_str(),
        }
    }
}

/// What limits how many generations of one generator a worker runs at once.
///
/// The worker keeps one pool of local slots (about one per core) for every
/// [`Capacity::Local`] generator, and a separate in-flight limit for each
/// [`Capacity::Remote`] one: an item waiting on a remote service holds no
/// local slot, so remote throughput is bound by the service, not by cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// The work burns this machine's CPU (e.g. the relief generator).
    Local,
    /// The work waits on a remote service; at most `max_in_flight` at once
    /// per worker process.
    Remote {
        /// Generations in flight at once (at least 1).
        max_in_flight: usize,
    },
}

/// Builds a 3D model from an image.
#[async_trait]
pub trait ModelGenerator: Send + Sync + fmt::Debug {
    /// The generator's name: `relief`, `fal`, …
    fn name(&self) -> &str;

    /// The models it offers.
    fn models(&self) -> Vec<ModelInfo>;

    /// Generates a model from `request.image`.
    ///
    /// The contract, which the conformance suite
    /// (`testing::conformance::model_generator`) checks for every generator:
    /// a valid image gives a valid GLB, of `size_hint` bytes when it says; a
    /// model it does not offer is [`GenerateError::UnknownModel`]; progress
    /// is reported and never goes down; once `ctx.cancel` fires (before the
    /// call or during it) it stops its work, remote work included, and
    /// returns [`GenerateError::Cancelled`] promptly; once `ctx.deadline` has
    /// passed it does the same with [`GenerateError::Timeout`]; it reports
    /// nothing after it returns; its errors' [`GenerateError::code`]s are
    /// the same for the same failure.
    async fn generate(
        &self,
        request: GenerateRequest,
        ctx: GenerateContext<'_>,
    ) -> Result<GeneratedModel, GenerateError>;

    /// Its current health (cheap; no I/O).
    fn health(&self) -> GeneratorHealth {
        GeneratorHealth::Healthy
    }

    /// What limits it (see [`Capacity`]); local CPU slots unless it says
    /// otherwise.
    fn capacity(&self) -> Capacity {
        Capacity::Local
    }
}
