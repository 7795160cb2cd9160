//! Domain types: identifiers, storage keys, options, jobs and items.
//!
//! Every type here can only be built valid ("parse, don't validate"): ids are
//! server-generated or strictly parsed, [`BlobKey`]s are built from ids, client
//! file names become [`DisplayName`]s that never reach a path.

mod blob_key;
mod callback;
mod display_name;
mod ids;
mod job;
mod options;
mod quota;

pub use blob_key::{BlobKey, BlobKeyError, BlobPrefix, area};
pub use callback::{
    AttemptOutcome, CallbackUrl, CallbackUrlError, Delivery, DeliveryStatus,
    MAX_CALLBACK_URL_BYTES, NewCallback, WebhookSettings,
};
pub use display_name::{DisplayName, MAX_DISPLAY_NAME_CHARS};
pub use ids::{ApiKeyId, DeliveryId, IdError, ItemId, JobId};
pub use job::{Item, ItemError, ItemStatus, Job, JobStatus, Progress, mean_progress};
pub use options::{FaceLimit, GenerateOptions, ImageKind, ModelName, OptionError, Texture};
pub use quota::{
    Charge, Counts, KeyLimits, MicroUsd, OwnerUsage, Periods, PriceTable, QuotaExceeded,
    QuotaLimit, Usage,
};
