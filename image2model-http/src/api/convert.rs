//! `?format=obj|stl|obj.zip`: converts a stored GLB on the fly.
//!
//! The GLB is read whole (it was bounded by the pipeline's model size cap when
//! it was stored, and is checked against it again here) and converted on a
//! blocking thread, so a large model does not stall the async workers.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use image2model_core::ErrorCode;
use image2model_core::gltf::ModelFormat;
use image2model_core::ports::BlobObject;

use crate::error::ApiError;

/// Converts the GLB in `object` into `format`.
///
/// # Errors
/// 500 `conversion_failed` when the stored model cannot be read or
/// converted (details are logged), and read errors of the store.
pub async fn convert(
    object: BlobObject,
    format: ModelFormat,
    max_bytes: u64,
) -> Result<Bytes, ApiError> {
    if object.size > max_bytes {
        return Err(ApiError::internal(format!(
            "stored model of {} bytes exceeds the {max_bytes}-byte cap",
            object.size
        )));
    }
    let mut glb = BytesMut::with_capacity(usize::try_from(object.size).unwrap_or(0));
    let mut stream = object.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ApiError::internal)?;
        if (glb.len() + chunk.len()) as u64 > max_bytes {
            return Err(ApiError::internal(
                "stored model grew past its cap while read",
            ));
        }
        glb.extend_from_slice(&chunk);
    }
    let converted =
        tokio::task::spawn_blocking(move || image2model_core::gltf::convert(&glb, format))
            .await
            .map_err(ApiError::internal)?;
    match converted {
        Ok(bytes) => Ok(Bytes::from(bytes)),
        Err(e) => {
            tracing::error!(request_id = %crate::request_id::current(), error = %e, code = e.code(), "model conversion failed");
            Err(ApiError::of(
                ErrorCode::ConversionFailed,
                "the model could not be converted; the GLB download still works",
            ))
        }
    }
}
