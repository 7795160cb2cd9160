//! A small bound on every request body except the upload's.
//!
//! JSON bodies (admin cleanup, key creation, …) are tiny; poem would read
//! any length into memory before parsing. This layer refuses a body whose
//! `Content-Length` announces more than the bound, and reads a chunked body
//! (into memory: it is small) only up to the bound; both answer **413**
//! `request_too_large`. `POST /api/v1/upload` is left alone: it has its own
//! streaming bounds (per file and per request, see `api::upload`).

use futures::StreamExt;
use image2model_core::ErrorCode;
use poem::http::{Method, header};
use poem::{Body, Request, Response};

use crate::error::ApiError;
use crate::routes::{UPLOAD_PATH, api_path};

/// The default bound: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;

/// The bound on non-upload request bodies: `max` bytes.
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

fn too_large(max: u64) -> Response {
    ApiError::of(
        ErrorCode::RequestTooLarge,
        format!("the request body is larger than {max} bytes"),
    )
    .to_response()
}

impl BodyLimit {
    /// Admits `req` if its body fits (uploads are bounded by the upload
    /// route itself): an announced `Content-Length` is checked up front, a
    /// chunked body is read up to the bound and put back.
    ///
    /// # Errors
    /// The response to send instead (`413 request_too_large`, or `400` when
    /// the body cannot be read).
    pub async fn admit(self, req: &mut Request) -> Result<(), Response> {
        if req.method() == Method::POST && api_path(req.uri().path()) == Some(UPLOAD_PATH) {
            return Ok(());
        }
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match announced {
            Some(len) if len > self.max => return Err(too_large(self.max)),
            Some(_) => return Ok(()),
            None if !req.headers().contains_key(header::TRANSFER_ENCODING) => return Ok(()),
            None => {}
        }
        let mut stream = req.take_body().into_bytes_stream();
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Err(ApiError::of(
                    ErrorCode::InvalidRequest,
                    "the request body could not be read",
                )
                .to_response());
            };
            if (read.len() + chunk.len()) as u64 > self.max {
                return Err(too_large(self.max));
            }
            read.extend_from_slice(&chunk);
        }
        req.set_body(Body::from_vec(read));
        Ok(())
    }
}
