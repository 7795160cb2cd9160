//! Model and preview downloads: streamed bodies with a safe
//! `Content-Disposition`, documented by hand because one operation answers
//! with several media types.

use image2model_core::domain::Item;
use image2model_core::ports::BlobObject;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Body, IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::payload::Binary;
use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Type;

use image2model_core::gltf::ModelFormat;

use crate::error::{ApiError, ErrorBody, error_meta};

/// A model ready to stream.
pub struct ModelFile {
    format: ModelFormat,
    disposition: String,
    size: Option<u64>,
    body: Body,
}

impl std::fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFile")
            .field("format", &self.format)
            .field("disposition", &self.disposition)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ModelFile {
    /// The stored GLB of `item`, in `format`.
    ///
    /// # Errors
    /// A conversion failure.
    pub async fn new(
        item: &Item,
        object: BlobObject,
        format: ModelFormat,
        max_model_bytes: u64,
    ) -> Result<Self, ApiError> {
        let disposition = content_disposition(item.filename.as_str(), format.extension());
        match format {
            ModelFormat::Glb => Ok(Self {
                format,
                disposition,
                size: Some(object.size),
                body: Body::from_bytes_stream(object.stream),
            }),
            ModelFormat::Obj | ModelFormat::Stl | ModelFormat::ObjZip => {
                let bytes = super::convert::convert(object, format, max_model_bytes).await?;
                Ok(Self {
                    format,
                    disposition,
                    size: Some(bytes.len() as u64),
                    body: Body::from_bytes(bytes),
                })
            }
        }
    }
}

/// `attachment` with an ASCII `filename` and the full name as RFC 5987
/// `filename*`, both from the sanitised display name (never a path).
#[must_use]
pub fn content_disposition(display_name: &str, extension: &str) -> String {
    let stem = match display_name.rsplit_once('.') {
        Some((stem, _)) if !stem.trim().is_empty() => stem.trim(),
        _ if !display_name.trim().is_empty() && !display_name.contains('.') => display_name.trim(),
        _ => "model",
    };
    let full = format!("{stem}.{extension}");
    let ascii: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        rfc5987(&full)
    )
}

fn rfc5987(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn binary_schema() -> poem_openapi::registry::MetaSchemaRef {
    poem_openapi::types::Binary::<Vec<u8>>::schema_ref()
}

fn header_meta(name: &str, description: &str) -> MetaHeader {
    MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required: true,
        deprecated: false,
        schema: String::schema_ref(),
    }
}

/// Responses of the model download.
#[derive(Debug)]
pub enum ModelResponse {
    /// The file.
    Ok(ModelFile),
}

/// The 200 of a model download: the file in one of the formats.
fn model_ok_meta() -> MetaResponse {
    MetaResponse {
        description: "The model, streamed as an attachment.",
        status: Some(200),
        status_range: None,
        content: ModelFormat::ALL
            .into_iter()
            .map(|f| MetaMediaType {
                content_type: f.mime(),
                schema: binary_schema(),
            })
            .collect(),
        headers: vec![header_meta(
            "Content-Disposition",
            "attachment; filename=\"chair.glb\"; filename*=UTF-8''chair.glb",
        )],
    }
}

impl ApiResponse for ModelResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![
                model_ok_meta(),
                error_meta(400, "`invalid_request`: unknown `format`."),
                error_meta(
                    404,
                    "`not_found`: no such job or item, or not the caller's.",
                ),
                error_meta(409, "`model_not_ready`: the item has not succeeded."),
                error_meta(
                    500,
                    "`conversion_failed`: the stored model could not be converted.",
                ),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

impl IntoResponse for ModelResponse {
    fn into_response(self) -> Response {
        let ModelResponse::Ok(file) = self;
        let mut resp = Response::builder()
            .status(StatusCode::OK)
            .content_type(file.format.mime())
            .body(file.body);
        if let Ok(v) = HeaderValue::from_str(&file.disposition) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        if let Some(size) = file.size {
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        resp
    }
}

/// Responses of a download through a signed link: what the authenticated
/// download answers ([`ModelResponse`]), refused with the link's own codes.
#[derive(Debug)]
pub enum LinkModelResponse {
    /// The file.
    Ok(ModelFile),
}

impl ApiResponse for LinkModelResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![
                model_ok_meta(),
                error_meta(
                    403,
                    "`link_invalid`: a malformed link, or one whose signature does not match \
                     (a changed job, item, format, expiry or owner).",
                ),
                error_meta(404, "`not_found`: the job or item no longer exists."),
                error_meta(409, "`model_not_ready`: the item has not succeeded."),
                error_meta(
                    410,
                    "`link_expired`: the link is past its expiry; `link_revoked`: the \
                     owner's API key has been revoked.",
                ),
                error_meta(503, "`auth_unavailable`: the key store did not answer."),
                error_meta(
                    500,
                    "`conversion_failed`: the stored model could not be converted.",
                ),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

impl IntoResponse for LinkModelResponse {
    fn into_response(self) -> Response {
        let LinkModelResponse::Ok(file) = self;
        ModelResponse::Ok(file).into_response()
    }
}

/// Responses of the preview download.
#[derive(Debug)]
pub enum PreviewResponse {
    /// The image and its media type.
    Ok(Binary<Body>, String),
}

impl ApiResponse for PreviewResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The preview image.",
                    status: Some(200),
                    status_range: None,
                    content: ["image/png", "image/jpeg", "image/webp"]
                        .into_iter()
                        .map(|t| MetaMediaType {
                            content_type: t,
                            schema: binary_schema(),
                        })
                        .collect(),
                    headers: vec![],
                },
                error_meta(
                    404,
                    "`not_found`: no such job or item, not the caller's, or no preview.",
                ),
                error_meta(409, "`model_not_ready`: the item has not succeeded."),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

impl IntoResponse for PreviewResponse {
    fn into_response(self) -> Response {
        let PreviewResponse::Ok(Binary(body), mime) = self;
        Response::builder()
            .status(StatusCode::OK)
            .content_type(mime)
            .body(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_ascii_safe_with_the_full_name_encoded() {
        assert_eq!(
            content_disposition("chair.png", "glb"),
            "attachment; filename=\"chair.glb\"; filename*=UTF-8''chair.glb"
        );
        let d = content_disposition("stühl 1.jpeg", "stl");
        assert!(d.contains("filename=\"st_hl 1.stl\""), "{d}");
        assert!(d.contains("filename*=UTF-8''st%C3%BChl%201.stl"), "{d}");
        assert!(content_disposition(".png", "glb").contains("filename=\"model.glb\""));
    }
}
