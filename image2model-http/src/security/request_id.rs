//! `X-Request-Id` on every response, and a tracing span per request.
//!
//! A sane incoming id (1 to 64 characters of `[A-Za-z0-9._-]`) is echoed so
//! that a proxy's id follows the request through our logs; anything else is
//! replaced by a new ULID, so a client cannot inject log lines or headers.
//! The id is kept in a task-local for the request's future, where the error
//! envelope reads it.

use std::time::Instant;

use poem::http::{HeaderValue, header::HeaderName};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tracing::Instrument;

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

/// Middleware: assigns the id, runs the request inside its span, logs the
/// outcome, and sets `X-Request-Id` on the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<E: Endpoint> Middleware<E> for RequestIdLayer {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestIdEndpoint { inner: ep }
    }
}

/// The endpoint made by [`RequestIdLayer`].
#[derive(Debug)]
pub struct RequestIdEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let id = req
            .headers()
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane(v))
            .map_or_else(|| ulid::Ulid::new().to_string(), ToOwned::to_owned);
        req.extensions_mut().insert(RequestId(id.clone()));
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.uri().path(),
            // Filled in by the rate limit and auth layers, for monitoring:
            // who (key id, never the key) called from where.
            client_ip = tracing::field::Empty,
            key_id = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = REQUEST_ID
            .scope(id.clone(), self.inner.call(req))
            .instrument(span.clone())
            .await;
        let mut resp = match result {
            Ok(resp) => resp.into_response(),
            // Inner layers render errors; this is a last resort.
            Err(err) => {
                REQUEST_ID
                    .scope(id.clone(), async { crate::api::error::envelope(err) })
                    .await
            }
        };
        span.in_scope(|| {
            tracing::info!(
                status = resp.status().as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "response"
            );
        });
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(HEADER, v);
        }
        Ok(resp)
    }
}
