//! Blob stores: [`LocalBlobStore`] (files under a root directory) and
//! [`ObjectBlobStore`] (`object_store`: S3 and memory).

pub mod local;
pub mod object;

pub use local::{LocalBlobStore, LocalOptions};
pub use object::{ObjectBlobStore, S3_DEFAULT_MAX_RETRIES, S3_DEFAULT_RETRY_TIMEOUT, S3Config};
