//! # image2model-core
//!
//! The heart of image2model: turns uploaded photos into 3D models (binary glTF),
//! independent of any HTTP framework, database or storage backend.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use image2model_core::{Pipeline, PipelineConfig, Generators};
//! use image2model_core::domain::ApiKeyId;
//! use image2model_core::generators::relief::ReliefGenerator;
//! use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
//!
//! let pipeline = Pipeline::new(
//!     Arc::new(MemoryJobStore::default()),
//!     Arc::new(MemoryBlobStore::default()),
//!     Generators::new(vec![Arc::new(ReliefGenerator::default())])?,
//!     PipelineConfig::default(),
//! );
//! let job = pipeline
//!     .submit(&ApiKeyId::bootstrap_user(), vec![("chair.png".into(), std::fs::read("chair.png")?.into())], Default::default())
//!     .await?;
//! println!("queued job {}", job.job_id);
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`domain`]: newtypes that can only be built valid (ids, blob keys, options,
//!   display names) and the job/item state machine.
//! - [`ports`]: the traits the pipeline talks through: [`ports::JobStore`],
//!   [`ports::BlobStore`], [`ports::ModelGenerator`], [`ports::AuthPolicy`].
//! - [`validate`]: upload validation: type from magic bytes, size bounded while
//!   streaming, dimensions from the header before any decode.
//! - [`pipeline`]: [`Pipeline`] (submit, job, subscribe, cancel, model) and the
//!   [`pipeline::Worker`] that claims items and runs generators.
//! - [`generators`]: the offline relief generator, the FAL.AI client and the
//!   registry that builds generators from configuration.
//! - [`gltf`]: writing, reading and converting binary glTF.
//! - [`memory`]: in-memory job and blob stores.
//! - [`job_cache`]: [`job_cache::CachedJobStore`], which answers repeated job
//!   reads from memory.
//! - [`checked_stream`]: checking a byte stream while a store consumes it.
//! - [`error_code`]: the one registry of stable error codes
//!   ([`error_code::ErrorCode`]), which `docs/ERRORS.md` lists.
//! - [`settings`]: the rule for switch settings (`true`/`false`…).
//! - [`auth`]: the bootstrap-key [`ports::AuthPolicy`].
//! - `testing` (feature `testing`): conformance suites for the ports (the
//!   stores and the model generators), the scripted generator and the fake
//!   FAL server.

pub mod auth;
pub mod callbacks;
pub mod checked_stream;
pub mod domain;
pub mod error_code;
pub mod generators;
pub mod gltf;
pub mod job_cache;
pub mod memory;
pub mod pipeline;
pub mod ports;
pub mod settings;
pub mod validate;

#[cfg(feature = "testing")]
pub mod testing;
pub use error_code::ErrorCode;
pub use pipeline::{
    Generators, Pipeline, PipelineConfig, PipelineError, Scope, SubmitOptions, Worker,
    WorkerConfig, available_cores,
};
