//! fal's wire types (see `docs/FAL.md` and the shared protocol notes).
//!
//! Shared by the client and the fake FAL server so both speak the same JSON;
//! unknown fields are ignored and optional ones default, as fal adds fields
//! freely.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::GenerateError;

/// The answer to a submit: `POST {queue}/{endpoint_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    /// The request id: persist it before waiting.
    pub request_id: String,
    /// `…/{owner}/{app}/requests/{id}`.
    #[serde(default)]
    pub response_url: Option<String>,
    /// `…/requests/{id}/status`.
    #[serde(default)]
    pub status_url: Option<String>,
    /// `…/requests/{id}/cancel`.
    #[serde(default)]
    pub cancel_url: Option<String>,
    /// Position in the queue.
    #[serde(default)]
    pub queue_position: Option<u64>,
    /// `IN_QUEUE`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatus {
    /// Waiting for a runner.
    InQueue,
    /// Running.
    InProgress,
    /// Finished: succeeded, failed or cancelled (the result tells which).
    Completed,
}

/// One log line of a running request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The message.
    pub message: String,
    /// `INFO`, `ERROR`, …
    #[serde(default)]
    pub level: Option<String>,
    /// Where it came from.
    #[serde(default)]
    pub source: Option<String>,
    /// When (ISO 8601).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// The answer to `GET …/requests/{id}/status?logs=1`: 202 while queued or
/// running, 200 when completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The state.
    pub status: QueueStatus,
    /// Position while `IN_QUEUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// Logs while `IN_PROGRESS` (or null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    /// Timing once `COMPLETED` (`inference_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// Set on some failed requests (the result has the real outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error's type, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The result URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
}

/// A file in a model's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Where to download it (public CDN URL: no credentials are sent).
    pub url: String,
    /// Its media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

/// The answer to `PUT …/requests/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// `CANCELLATION_REQUESTED`, `ALREADY_COMPLETED` or `NOT_FOUND`.
    pub status: String,
}

/// The body of `POST {rest}/storage/upload/initiate?storage_type=fal-cdn-v3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInitiate {
    /// The file's media type.
    pub content_type: String,
    /// The file's name.
    pub file_name: String,
}

/// The answer to an upload initiate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadTarget {
    /// Where to `PUT` the bytes (presigned: no credentials are sent).
    pub upload_url: String,
    /// The file's URL once uploaded: pass it as the image URL.
    pub file_url: String,
}

/// One validation problem in a 422's `detail` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationDetail {
    /// Where in the input.
    #[serde(default)]
    pub loc: Vec<Value>,
    /// What is wrong.
    #[serde(default)]
    pub msg: String,
    /// The kind, e.g. `content_policy_violation`.
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// The content-policy validation type.
pub const CONTENT_POLICY_VIOLATION: &str = "content_policy_violation";

/// Request headers and values.
pub mod headers {
    /// Seconds a request may wait in the queue.
    pub const REQUEST_TIMEOUT: &str = "x-fal-request-timeout";
    /// `user` when a 504 comes from our own queue timeout.
    pub const REQUEST_TIMEOUT_TYPE: &str = "x-fal-request-timeout-type";
    /// An infrastructure error's type.
    pub const ERROR_TYPE: &str = "x-fal-error-type";
    /// Whether a retry may help (`true`/`false`).
    pub const RETRYABLE: &str = "x-fal-retryable";
    /// The request id on result responses.
    pub const REQUEST_ID: &str = "x-fal-request-id";
}

/// Whether a request id is safe to put in a path segment: fal's ids are
/// UUIDs; anything else (e.g. a corrupted id from a store) is refused rather
/// than escaped.
#[must_use]
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Reads the (successful) answer to a submit, as the generator does: a
/// [`SubmitResponse`] whose request id passes [`is_valid_request_id`].
///
/// ```
/// use image2model_core::generators::fal::protocol::parse_submit;
///
/// let ok = parse_submit(r#"{"request_id":"764cabcf-b745","status":"IN_QUEUE"}"#).unwrap();
/// assert_eq!(ok.request_id, "764cabcf-b745");
/// assert!(parse_submit(r#"{"request_id":"../x"}"#).is_err());
/// ```
///
/// # Errors
/// `Upstream` when the body is not a submit answer or its id is unusable.
pub fn parse_submit(body: &str) -> Result<SubmitResponse, GenerateError> {
    let submitted: SubmitResponse = serde_json::from_str(body)
        .map_err(|e| GenerateError::Upstream(format!("submit: unexpected answer: {e}")))?;
    if !is_valid_request_id(&submitted.request_id) {
        return Err(GenerateError::Upstream(format!(
            "fal returned an unusable request id {:?}",
            submitted.request_id.chars().take(140).collect::<String>()
        )));
    }
    Ok(submitted)
}

/// Reads a status: the answer to a status poll or one event of the status
/// stream.
///
/// # Errors
/// `Upstream` when the text is not a status.
pub fn parse_status(body: &str) -> Result<StatusResponse, GenerateError> {
    serde_json::from_str(body)
        .map_err(|e| GenerateError::Upstream(format!("status: unexpected answer: {e}")))
}

/// Reads the answer to an upload initiate.
///
/// # Errors
/// `Upstream` when the body is not an [`UploadTarget`].
pub fn parse_upload_target(body: &str) -> Result<UploadTarget, GenerateError> {
    serde_json::from_str(body)
        .map_err(|e| GenerateError::Upstream(format!("upload initiate: unexpected answer: {e}")))
}

/// The file object in `output[field]`, when there is one with a URL.
#[must_use]
pub fn file_ref(output: &Value, field: &str) -> Option<FileRef> {
    serde_json::from_value::<FileRef>(output.get(field)?.clone())
        .ok()
        .filter(|f| !f.url.is_empty())
}

/// The files named by a completed request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultFiles {
    /// The model file (`output[output_field]`).
    pub model: FileRef,
    /// The preview image (`output[preview_field]`), when there is one.
    pub preview: Option<FileRef>,
}

/// Reads a (successful) result body, as the generator does: the model file
/// under `output_field` and the preview under `preview_field`. A result
/// without a model file is a failure behind `COMPLETED`: the error says what
/// fal said (`status_error`, the status's own error, first; then the body's
/// `detail` or `error`), if anything.
///
/// ```
/// use image2model_core::generators::fal::protocol::parse_result;
///
/// let body = r#"{"model_glb":{"url":"https://cdn/x.glb","file_size":12}}"#;
/// let files = parse_result(body, "model_glb", Some("thumbnail"), None).unwrap();
/// assert_eq!(files.model.url, "https://cdn/x.glb");
/// assert!(files.preview.is_none());
/// let failed = parse_result(r#"{"detail":"boom"}"#, "model_glb", None, None).unwrap_err();
/// assert!(failed.to_string().contains("boom"));
/// ```
///
/// # Errors
/// `InvalidOutput` when the body is not JSON or names no model file and fal
/// said nothing; `Upstream` with fal's message when it did.
pub fn parse_result(
    body: &str,
    output_field: &str,
    preview_field: Option<&str>,
    status_error: Option<&str>,
) -> Result<ResultFiles, GenerateError> {
    let output: Value = serde_json::from_str(body)
        .map_err(|e| GenerateError::InvalidOutput(format!("the result is not JSON: {e}")))?;
    let Some(model) = file_ref(&output, output_field) else {
        let said = status_error
            .map(str::to_owned)
            .or_else(|| output.get("detail").map(|d| error_message(&d.to_string())))
            .or_else(|| {
                output
                    .get("error")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        return Err(match said {
            Some(message) => GenerateError::Upstream(format!("fal reported: {message}")),
            None => GenerateError::InvalidOutput(format!("the result has no {output_field} file")),
        });
    };
    let preview = preview_field.and_then(|field| file_ref(&output, field));
    Ok(ResultFiles { model, preview })
}

/// The message inside fal's error bodies: `detail` as text, or the first
/// `msg` of a detail list, or the raw text (shortened).
#[must_use]
pub fn error_message(body: &str) -> String {
    let short = |s: &str| s.chars().take(300).collect::<String>();
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v.get("detail") {
            Some(Value::String(s)) => short(s),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.get("msg").and_then(Value::as_str))
                .map(short)
                .collect::<Vec<_>>()
                .join("; "),
            _ => v
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| short(body), short),
        },
        Err(_) => short(body.trim()),
    }
}

/// The validation details of a 422 body, when it has a list.
#[must_use]
pub fn validation_details(body: &str) -> Vec<ValidationDetail> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("detail").cloned())
        .and_then(|d| serde_json::from_value::<Vec<ValidationDetail>>(d).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_detail() {
        assert_eq!(
            error_message(r#"{"detail": "No user found for Key ID and Secret"}"#),
            "No user found for Key ID and Secret"
        );
        assert_eq!(
            error_message(r#"{"detail": [{"loc": ["body"], "msg": "bad image", "type": "x"}]}"#),
            "bad image"
        );
        assert_eq!(error_message("oops"), "oops");
    }

    #[test]
    fn validation_details_parse_the_type() {
        let d = validation_details(
            r#"{"detail": [{"loc": ["body","image_url"], "msg": "no", "type": "content_policy_violation"}]}"#,
        );
        assert_eq!(d[0].kind, CONTENT_POLICY_VIOLATION);
        assert!(validation_details(r#"{"detail": "x"}"#).is_empty());
    }

    #[test]
    fn request_ids_cannot_escape_their_segment() {
        assert!(is_valid_request_id("764cabcf-b745-4b3e-ae38-1200304cf45b"));
        for bad in ["", "..", "../x", "a?b", "a/b", "a%2Fb"] {
            assert!(!is_valid_request_id(bad), "{bad}");
        }
    }

    #[test]
    fn status_parses_fal_shapes() {
        let s: StatusResponse =
            serde_json::from_str(r#"{"status":"IN_PROGRESS","logs":null,"extra":1}"#).unwrap();
        assert_eq!(s.status, QueueStatus::InProgress);
        let s: StatusResponse = serde_json::from_str(
            r#"{"status":"COMPLETED","metrics":{"inference_time":1.2},"error":"boom"}"#,
        )
        .unwrap();
        assert_eq!(s.error.as_deref(), Some("boom"));
    }
}
