//! The measurements, each bounded in count and time.
//!
//! - [`storm`]: many keep-alive connections sending one GET in a loop
//!   (the job status endpoint, and the hello reference).
//! - [`ingest`]: concurrent uploads of one prepared image.
//! - [`e2e`]: upload, then follow the job's event stream until it ends.
//! - [`memory`]: RSS idle, with many SSE subscribers, while an oversized
//!   upload is refused and while large uploads stream in.
//! - [`relief`]: the relief generator against a plain JPEG decode.

pub mod e2e;
pub mod ingest;
pub mod memory;
pub mod relief;
pub mod storm;
