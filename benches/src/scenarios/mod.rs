//! The measurements, each bounded in count and time.
//!
//! - [`storm`]: many keep-alive connections sending one GET in a loop
//!   (the job status endpoint, and the hello reference).
//! - [`ingest`]: concurrent uploads of one prepared image.
//! - [`e2e`]: upload, then follow the job's event stream until it ends.
//! - [`fal_bound`]: the same with FAL's latency: clients in a closed loop,
//!   or many items in flight at once; jobs/s against C ÷ L, CPU per job.
//! - [`memory`]: RSS idle, with many SSE subscribers, while an oversized
//!   upload is refused and while large uploads stream in.
//! - [`relief`]: the relief generator against a plain JPEG decode.
//! - [`soak`]: mixed traffic for minutes against a fake FAL that fails on
//!   purpose; fails if RSS, descriptors or tasks grow, or an item is lost.

pub mod e2e;
pub mod fal_bound;
pub mod ingest;
pub mod memory;
pub mod relief;
pub mod soak;
pub mod storm;
