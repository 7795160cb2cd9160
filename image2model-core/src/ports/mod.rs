//! The ports: the traits through which the pipeline reaches the outside world.
//!
//! All are async and object-safe (`Arc<dyn JobStore>` and so on). Each has an
//! in-memory implementation in [`crate::memory`] (or [`crate::auth`]) and, for
//! the stores, a conformance suite in `crate::testing` that every implementation
//! must pass.

mod auth;
mod blob_store;
mod callbacks;
mod generator;
mod job_store;
mod keys;

pub use auth::{AuthError, AuthPolicy, Principal, Role};
pub use blob_store::{BlobError, BlobMeta, BlobObject, BlobStore, ByteStream, Usage, bytes_stream};
pub use callbacks::{
    AttemptOutcome, CallbackStore, DeliveryClaim, DeliveryQuery, MAX_DELIVERY_PAGE,
};
pub use generator::{
    Capacity, GenerateContext, GenerateError, GenerateRequest, GeneratedModel, GeneratedPreview,
    GenerationObserver, GeneratorHealth, ModelGenerator, ModelInfo,
};
#[cfg(test)]
pub(crate) use job_store::MockJobStore;
pub use job_store::{
    Claim, ClaimOptions, CreateOutcome, HeldChange, ItemOutcome, JobPage, JobStore, LeaseToken,
    ListQuery, NewItem, NewJob, QueueStats, StoreError,
};
pub use keys::{AuditEvent, AuditLog, KeyStore, StoredKey};
