//! A small bound on every request body except the upload's.
//!
//! JSON bodies (admin cleanup, key creation, …) are tiny; poem would read
//! any length into memory before parsing. This layer refuses a body whose
//! `Content-Length` announces more than the bound, and cuts off a chunked
//! body that grows past it while it is read; both answer **413**
//! `request_too_large`. `POST /api/v1/upload` is left alone: it has its own
//! streaming bounds (per file and per request, see `api::upload`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use poem::http::{Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use crate::api::error::{ApiError, envelope};

/// The default bound: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;

/// Middleware bounding non-upload request bodies to `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// The largest body accepted.
    pub max: u64,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self {
            max: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        BodyLimitEndpoint {
            inner: ep,
            max: self.max,
        }
    }
}

/// The endpoint made by [`BodyLimit`].
#[derive(Debug)]
pub struct BodyLimitEndpoint<E> {
    inner: E,
    max: u64,
}

fn too_large(max: u64) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body is larger than {max} bytes"),
    )
    .to_response()
}

/// Ends a body stream with an error once more than `max` bytes came.
struct Bounded<S> {
    inner: S,
    read: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for Bounded<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.read += chunk.len() as u64;
                if this.read > this.max {
                    this.exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(std::io::Error::other(
                        "the request body exceeds its bound",
                    ))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if req.method() == Method::POST && req.uri().path() == "/api/v1/upload" {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match announced {
            Some(len) if len > self.max => return Ok(too_large(self.max)),
            // hyper delivers exactly the announced length.
            Some(_) => return self.inner.call(req).await.map(IntoResponse::into_response),
            None if !req.headers().contains_key(header::TRANSFER_ENCODING) => {
                // No body at all.
                return self.inner.call(req).await.map(IntoResponse::into_response);
            }
            None => {}
        }
        let exceeded = Arc::new(AtomicBool::new(false));
        let body = req.take_body();
        let bounded = Bounded {
            inner: Box::pin(body.into_bytes_stream().map_err(std::io::Error::other)),
            read: 0,
            max: self.max,
            exceeded: exceeded.clone(),
        };
        req.set_body(Body::from_bytes_stream(bounded));
        let resp = match self.inner.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => envelope(e),
        };
        if exceeded.load(Ordering::Relaxed) {
            return Ok(too_large(self.max));
        }
        Ok(resp)
    }
}
