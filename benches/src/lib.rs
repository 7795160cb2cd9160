//! # image2model-benches
//!
//! How fast and how lean image2model is, measured against references taken
//! in the same run on the same machine, so that every figure is a ratio that
//! survives a noisy or different machine. See `docs/BENCHMARKS.md` for the
//! commands, the targets and the latest figures.
//!
//! - `benches/` (criterion, `cargo bench -p image2model-benches`): the hot
//!   paths one by one: validation, relief, glTF writing, blob put/get, job
//!   claim/finish.
//! - the `load` binary (`cargo run --release -p image2model-benches --bin
//!   load`): starts the real `image2model` server as a child process with a
//!   fake FAL at zero latency and measures it over loopback.
//!
//! ## Layout
//!
//! - [`client`]: the load generator's HTTP/1.1 client on hyper, multipart
//!   bodies (in memory or streamed).
//! - [`api`]: the image2model calls the scenarios make (upload, events).
//! - [`reference`](mod@reference): the bare hyper "hello" server and the `dd` write speed.
//! - [`process`], [`server`]: child processes; the server's environment.
//! - [`scenarios`]: the measurements, each bounded in count and time.
//! - [`rss`]: resident memory of a process, sampled and peak.
//! - [`cpu`]: CPU time of a process or of some of its threads.
//! - [`fs`]: the file system a run's data directory is on.
//! - [`stats`]: latency percentiles.
//! - [`report`]: figures, ratios, targets; the table and its JSON.
//! - [`images`]: upload bodies of exact sizes that validate as images.

pub mod api;
pub mod client;
pub mod cpu;
pub mod fs;
pub mod images;
pub mod process;
pub mod reference;
pub mod report;
pub mod rss;
pub mod scenarios;
pub mod server;
pub mod stats;

/// The harness's error: anything, with a message for the operator.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The harness's result.
pub type Result<T> = std::result::Result<T, Error>;
