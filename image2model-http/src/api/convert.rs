//! `?format=obj|stl`: converts a stored GLB on the fly.

use image2model_core::ports::BlobObject;
use poem::http::StatusCode;

use super::error::ApiError;
use super::model::ModelFormat;

/// Converts the GLB in `object` into `format`.
///
/// # Errors
/// `format_unavailable` (501) until the core's converter is wired in.
pub async fn convert(object: BlobObject, format: ModelFormat) -> Result<bytes::Bytes, ApiError> {
    drop(object);
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "format_unavailable",
        format!("conversion to {} is not available on this server", format.extension()),
    ))
}
