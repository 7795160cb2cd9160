//! A small bound on every request body except the upload's.
//!
//! JSON bodies (admin cleanup, key creation, …) are tiny; poem would read
//! any length into memory before parsing. This layer refuses a body whose
//! `Content-Length` announces more than the bound, and reads a chunked body
//! (into memory: it is small) only up to the bound; both answer **413**
//! `request_too_large`. `POST /api/v1/upload` is left alone: it has its own
//! streaming bounds (per file and per request, see `api::upload`).

use futures::StreamExt;
use poem::http::{Method, StatusCode, header};
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Response};

use crate::api::error::ApiError;

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
        // A chunked body: read at most `max + 1` bytes (small, so buffering
        // is fine), then hand the handler what was read.
        let mut stream = req.take_body().into_bytes_stream();
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Ok(ApiError::bad_request(
                    "invalid_request",
                    "the request body could not be read",
                )
                .to_response());
            };
            if (read.len() + chunk.len()) as u64 > self.max {
                return Ok(too_large(self.max));
            }
            read.extend_from_slice(&chunk);
        }
        req.set_body(Body::from_vec(read));
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}
