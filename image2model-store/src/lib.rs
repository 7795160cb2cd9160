//! # image2model-store
//!
//! The core's storage ports on real engines: job stores in SQLite and
//! PostgreSQL, blob stores on the local file system, in memory and in S3.
//! Every store here passes the core's conformance suites
//! (`image2model_core::testing::conformance`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), image2model_store::OpenError> {
//! let jobs = image2model_store::open_job_store("sqlite://./data/image2model.db").await?;
//! let blobs = image2model_store::open_blob_store("file://./data/blobs").await?;
//! jobs.ping().await?;
//! blobs.ping().await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - [`open`]: `DATABASE_URL` / `STORAGE_URL` → the right store
//!   ([`open_database`] for jobs, keys and audit; [`open_job_store`],
//!   [`open_blob_store`]), [`local_blob_dir`] for the disk of `file://`
//!   storage, and [`redact_url`], the one way a URL is shown (password and
//!   query hidden).
//! - [`sqlite`]: [`SqliteDatabase`]: one file, WAL mode, claims under
//!   `BEGIN IMMEDIATE`; migrations in `migrations/sqlite/`.
//! - [`postgres`]: [`PostgresDatabase`]: claims with
//!   `FOR UPDATE SKIP LOCKED`; migrations in `migrations/postgres/`.
//! - `keys` (private): `KeyStore` and `AuditLog` for both SQL stores, in
//!   the same database and pool as the jobs (tables `api_keys`,
//!   `audit_events`).
//! - `rows` (private): what both SQL stores share: row shapes, strict
//!   parsing of stored text back into domain types (a bad row is
//!   `StoreError::Corrupt`), and the item state changes, so the state machine
//!   lives in one place.
//! - [`blob::local`]: [`LocalBlobStore`]: staged writes renamed into place,
//!   keys re-checked before they touch a path, symbolic links refused.
//! - [`blob::object`]: [`ObjectBlobStore`] over `object_store`: S3 (multipart
//!   for large bodies) and memory.
//!
//! - [`backup`]: `image2model backup` / `restore`: a snapshot of a SQL
//!   store and the blobs its jobs use, with a manifest of checksums, and
//!   its checked restore.
//!
//! Migrations are embedded in the binary and run when a store opens.

pub mod backup;
pub mod blob;
mod callbacks;
mod keys;
pub mod open;
pub mod postgres;
mod rows;
pub mod sqlite;
mod usage;

pub use blob::{
    LocalBlobStore, LocalOptions, ObjectBlobStore, S3_DEFAULT_MAX_RETRIES,
    S3_DEFAULT_RETRY_TIMEOUT, S3Config,
};
pub use open::{
    Database, DatabaseProbe, OpenError, local_blob_dir, open_blob_store, open_database,
    open_job_store, probe_database, redact_url,
};
pub use postgres::PostgresDatabase;
pub use sqlite::{SqliteDatabase, SqliteOptions};

/// The former name of [`SqliteDatabase`], which holds keys and audit too.
#[deprecated(since = "0.1.0", note = "renamed SqliteDatabase")]
pub type SqliteJobStore = SqliteDatabase;

/// The former name of [`PostgresDatabase`], which holds keys and audit too.
#[deprecated(since = "0.1.0", note = "renamed PostgresDatabase")]
pub type PostgresJobStore = PostgresDatabase;
