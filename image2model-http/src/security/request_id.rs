//! `X-Request-Id` on every response, and a tracing span per request.
//!
//! A sane incoming id (1 to 64 characters of `[A-Za-z0-9._-]`) is echoed so
//! that a proxy's id follows the request through our logs; anything else is
//! replaced by a new ULID, so a client cannot inject log lines or headers.
//! The id is kept in a task-local for the request's future, where the error
//! envelope reads it.
//!
//! # The access log
//!
//! Each request ends with one `response` event (status, elapsed time, and
//! the span's method, path, client IP and key id) under the target
//! [`ACCESS_LOG_TARGET`]. It is logged at `info` when the request changed
//! something (any method but `GET`, `HEAD` and `OPTIONS`), failed (status
//! 400 and up, which covers every refused key, forbidden route and rate
//! limit) or was slow ([`SLOW_REQUEST`]); successful reads are logged at
//! `debug`. Clients poll job status many times a second, and one `info` line
//! per poll cost a quarter of the server's throughput on that endpoint (see
//! `docs/BENCHMARKS.md`) while telling an operator nothing new. Every read
//! is logged with `RUST_LOG=info,access=debug`.

use std::net::IpAddr;
use std::time::Duration;

use poem::http::{HeaderValue, Method, header::HeaderName};
use poem::{Request, Response};

/// The target of the access log's events (`RUST_LOG=info,access=debug` logs
/// successful reads too).
pub const ACCESS_LOG_TARGET: &str = "access";

/// A request that takes this long is logged at `info` whatever it was.
pub const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// The header name.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id (`-` outside a request).
#[must_use]
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

/// The request id, also put into each request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Whether an incoming id may be echoed.
#[must_use]
pub fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a finished request is a routine read, logged at `debug`: a
/// successful `GET`, `HEAD` or `OPTIONS` that took less than [`SLOW_REQUEST`].
#[must_use]
pub fn is_routine(method: &Method, status: u16, elapsed: Duration) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && status < 400
        && elapsed < SLOW_REQUEST
}

/// The id of `req`: its sane `X-Request-Id`, or a new ULID.
#[must_use]
pub fn resolve(req: &Request) -> String {
    req.headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| ulid::Ulid::new().to_string(), ToOwned::to_owned)
}

/// Runs `fut` with `id` as the [`current`] request id.
pub fn scope<F: Future>(id: String, fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, fut)
}

/// The span of one request: the access log's and every event's context
/// (`key_id` is recorded once known).
#[must_use]
pub fn span(id: &str, req: &Request, client_ip: Option<IpAddr>) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        client_ip = client_ip.map(tracing::field::display),
        key_id = tracing::field::Empty,
    )
}

/// The access log's `response` event of a finished request (call inside
/// its span); see the module docs for its level.
pub fn log_response(method: &Method, status: u16, elapsed: Duration) {
    if is_routine(method, status, elapsed) {
        tracing::debug!(
            target: ACCESS_LOG_TARGET,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "response"
        );
    } else {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            status,
            elapsed_ms = elapsed.as_millis() as u64,
            "response"
        );
    }
}

/// Sets `X-Request-Id` on `resp`.
pub fn set_header(resp: &mut Response, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(HEADER, v);
    }
}
