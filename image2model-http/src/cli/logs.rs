//! The binary's logs: a `tracing` subscriber writing to stderr from a
//! background thread.

use image2model_http::config::{Config, Environment};
use image2model_http::request_id::{RequestSpans, SpanMode};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// Logs: JSON in production, human-readable otherwise (coloured only on a
/// terminal); `RUST_LOG` filters (default `info`, or `warn` for the quiet
/// `convert`).
///
/// Lines are formatted where they happen and written to stderr by one
/// background thread, which writes whatever has queued up in one go and
/// flushes as soon as the queue is empty: the access log costs a request no
/// write system call and no contention on stderr's lock. The queue holds
/// [`LOG_QUEUE_LINES`] lines; when it is full, logging waits (no line is
/// dropped). Lines still queued are written when the returned guard drops.
pub fn init_tracing(config: &Config, quiet: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let format = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    if config.environment == Environment::Production {
        install(
            filter,
            format.json().flatten_event(true),
            config.request_span,
        );
    } else {
        install(filter, format, config.request_span);
    }
    guard
}

/// Installs `filter` and the formatter `format`. With lazy request spans
/// (the default) the formatter sits inside [`RequestSpans`], which gives
/// events logged during a request the request's span, made only when one is
/// written; with `REQUEST_SPAN=eager` the server enters each request's span
/// itself and the formatter is installed alone.
fn install<F>(filter: EnvFilter, format: F, spans: SpanMode)
where
    F: Layer<Layered<EnvFilter, Registry>> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match spans {
        SpanMode::Lazy => registry.with(RequestSpans::new(format)).try_init(),
        SpanMode::Eager => registry.with(format).try_init(),
    };
}

/// How many log lines may wait for the writer thread.
const LOG_QUEUE_LINES: usize = 16 * 1024;
