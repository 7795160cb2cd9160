//! The one error envelope: `{"error": {"code", "message", "request_id"}}`.
//!
//! Every failure, whether raised by a handler ([`ApiError`]), by a step of the
//! request gate, or by poem itself (unknown route, wrong method, a query that
//! does not parse, a failed security check), leaves the server through
//! [`envelope`], so a client sees one shape with a stable `code`. Internal
//! failures show only a generic message; their details are logged with the
//! request id.
//!
//! It is also where the OpenAPI document learns the refusals every operation
//! may answer (401, 429, and 403 for admin operations): from the handlers'
//! error types, [`ApiError`] and [`AdminError`], instead of a copy in each
//! operation's response enum.

use image2model_core::ErrorCode;
use std::borrow::Cow;
use std::fmt;

use image2model_core::{PipelineError, pipeline::ErrorKind};
use poem::error::ResponseError;
use poem::http::{HeaderName, HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object};

use crate::request_id;

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// A stable snake_case code (see `docs/ERRORS.md` for the list).
    pub code: String,
    /// A human-readable explanation, safe to show.
    pub message: String,
    /// The request's id, also in the `X-Request-Id` header; quote it in bug
    /// reports.
    pub request_id: String,
}

/// An error response: status, stable code, a client-safe message and any
/// headers it needs (`WWW-Authenticate`, `Retry-After`, …).
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    /// Extra headers; a list, not a map, to keep the error small.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the response.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: impl fmt::Display) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.retain(|(n, _)| *n != name);
            self.headers.push((name, v));
        }
        self
    }

    /// An error with this code, answered with the code's own status (see
    /// [`ErrorCode::http_status`]; 500 for a code no response carries).
    pub fn of(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = code
            .http_status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code, message)
    }

    /// 404 `not_found`: used alike for what does not exist and what belongs
    /// to someone else.
    #[must_use]
    pub fn not_found() -> Self {
        Self::of(ErrorCode::NotFound, "not found")
    }

    /// 401 `unauthorized` with `WWW-Authenticate: Bearer`.
    #[must_use]
    pub fn unauthorized() -> Self {
        Self::of(
            ErrorCode::Unauthorized,
            "a valid API key is required: send `Authorization: Bearer <key>`",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer")
    }

    /// 403 `forbidden`.
    #[must_use]
    pub fn forbidden() -> Self {
        Self::of(
            ErrorCode::Forbidden,
            "this API key may not call this endpoint",
        )
    }

    /// 500 `internal_error`; `detail` is logged with the request id, never sent.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(request_id = %request_id::current(), error = %detail, "internal error");
        Self::of(
            ErrorCode::InternalError,
            "internal error; quote the request id when reporting it",
        )
    }

    /// The status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The client-safe message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The envelope response for the current request.
    #[must_use]
    pub fn to_response(&self) -> Response {
        self.as_response()
    }

    /// The envelope body for the current request.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                request_id: request_id::current(),
            },
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id::current(),
            }
        });
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("application/json; charset=utf-8")
            .body(body.to_string());
        for (name, value) in &self.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    }
}

/// A documented error response (status, description, the envelope as its
/// body), for the refusals below and for hand-written [`ApiResponse`]s.
#[must_use]
pub fn error_meta(status: u16, description: &'static str) -> MetaResponse {
    MetaResponse {
        description,
        status: Some(status),
        status_range: None,
        content: vec![MetaMediaType {
            content_type: "application/json; charset=utf-8",
            schema: <Json<ErrorBody> as Payload>::schema_ref(),
        }],
        headers: vec![],
    }
}

/// A required response header, named as poem-openapi's derive names them.
fn header_meta(name: &str, schema: MetaSchemaRef) -> MetaHeader {
    MetaHeader {
        name: name.to_ascii_uppercase(),
        description: None,
        required: true,
        deprecated: false,
        schema,
    }
}

/// 401 `unauthorized`, with `WWW-Authenticate`.
fn unauthorized_meta() -> MetaResponse {
    let mut meta = error_meta(401, "`unauthorized`.");
    meta.headers = vec![header_meta("WWW-Authenticate", String::schema_ref())];
    meta
}

/// 429 `rate_limited`, with `Retry-After`.
fn rate_limited_meta() -> MetaResponse {
    let mut meta = error_meta(
        429,
        "`rate_limited`; on an upload also `quota_exceeded` (a key's limit, `Retry-After` until it resets); on `GET /events` also `too_many_streams`.",
    );
    meta.headers = vec![header_meta("Retry-After", u64::schema_ref())];
    meta
}

/// Handlers return `Result<OperationResponse, ApiError>` (admin ones
/// [`AdminError`]). The operation's own response enum documents its success
/// and the errors of its own (400, 404, 409, …); the error type documents,
/// once for every operation, the refusals that happen before any handler
/// runs: **401** `unauthorized` (every operation takes a key: the security
/// schemes of [`crate::security::auth`]) and **429** `rate_limited` (every
/// API request passes the rate limit). The test
/// `openapi::every_operation_is_secured_and_documents_its_refusals` holds
/// every operation to it.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![unauthorized_meta(), rate_limited_meta()],
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// An [`ApiError`] documented with another set of refusals than every
/// operation's: the newtype, its conversions (the inner `ApiError` leaves
/// as the `poem::Error`, so that `envelope` finds it by downcasting), and
/// its `ApiResponse` listing `$meta`.
macro_rules! documented_error {
    ($(#[$doc:meta])* $name:ident, [$($meta:expr),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(pub ApiError);

        impl From<ApiError> for $name {
            fn from(e: ApiError) -> Self {
                Self(e)
            }
        }

        impl From<PipelineError> for $name {
            fn from(e: PipelineError) -> Self {
                Self(e.into())
            }
        }

        impl From<$name> for poem::Error {
            fn from(e: $name) -> Self {
                e.0.into()
            }
        }

        impl ApiResponse for $name {
            fn meta() -> MetaResponses {
                MetaResponses {
                    responses: vec![$($meta),*],
                }
            }

            fn register(registry: &mut Registry) {
                ErrorBody::register(registry);
            }
        }
    };
}

documented_error!(
    /// The error of an admin operation: an [`ApiError`], documented with the
    /// refusals of every operation (see [`ApiError`]'s `ApiResponse`) plus
    /// **403** `forbidden` (a valid key that is not an admin key).
    AdminError,
    [
        unauthorized_meta(),
        error_meta(403, "`forbidden`: not an admin key."),
        rate_limited_meta(),
    ]
);

documented_error!(
    /// The error of a public operation, one that takes no API key (a signed
    /// download link): an [`ApiError`], documented with **429**
    /// `rate_limited` only, since no key is checked (so no 401) but the
    /// request still passes the per-IP rate limit. The test
    /// `openapi::every_operation_is_secured_and_documents_its_refusals`
    /// names the operations allowed to use it.
    PublicError,
    [rate_limited_meta()]
);

/// The `Retry-After` of a 503 `overloaded` answer: about how long a full
/// queue takes to move.
pub const OVERLOADED_RETRY_AFTER_SECS: u64 = 5;

/// The `Retry-After` of a 507 `insufficient_storage` answer: space is
/// freed by an operator or the retention task, not in seconds.
pub const FULL_RETRY_AFTER_SECS: u64 = 60;

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        let status = match e.kind() {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let PipelineError::QuotaExceeded(over) = &e {
            return ApiError::new(status, e.code(), e.to_string()).with_header(
                header::RETRY_AFTER,
                over.limit.seconds_until_reset(chrono::Utc::now()),
            );
        }
        if e.kind() == ErrorKind::InsufficientStorage {
            tracing::error!(request_id = %request_id::current(), error = %e, "the blob store is full");
            return ApiError::new(
                status,
                e.code(),
                "the server's storage is full: nothing was stored; retry later",
            )
            .with_header(header::RETRY_AFTER, FULL_RETRY_AFTER_SECS);
        }
        if e.kind() == ErrorKind::Overloaded {
            return ApiError::new(status, e.code(), e.to_string())
                .with_header(header::RETRY_AFTER, OVERLOADED_RETRY_AFTER_SECS);
        }
        if e.is_client_safe() {
            let message = if status == StatusCode::NOT_FOUND {
                "not found".to_owned()
            } else {
                e.to_string()
            };
            return ApiError::new(status, e.code(), message);
        }
        tracing::error!(request_id = %request_id::current(), code = e.code(), error = %e, "pipeline error");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A store that went away usually comes back: say when to retry.
            return ApiError::new(status, e.code(), "a dependency is unavailable; retry later")
                .with_header(header::RETRY_AFTER, OVERLOADED_RETRY_AFTER_SECS);
        }
        ApiError::new(
            status,
            e.code(),
            "internal error; quote the request id when reporting it",
        )
    }
}

/// Turns any poem error into the envelope response.
#[must_use]
pub fn envelope(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.as_response();
    }
    // Every path parameter is an id or a file name: one that does not even
    // decode (invalid UTF-8 after percent-decoding) names nothing, like a
    // malformed id.
    if err.is::<poem::error::ParsePathError>() || err.is::<poem_openapi::error::ParsePathError>() {
        return ApiError::not_found().as_response();
    }
    let status = err.status();
    let api = match status {
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
        StatusCode::FORBIDDEN => ApiError::forbidden(),
        StatusCode::NOT_FOUND => ApiError::new(status, ErrorCode::NotFound, "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            ErrorCode::MethodNotAllowed,
            "this method is not allowed on this resource",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            ErrorCode::RequestTooLarge,
            "the request body is too large",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            ErrorCode::UnsupportedMediaType,
            "this Content-Type is not accepted here",
        ),
        s if s.is_client_error() => {
            // poem's own parse errors (query, path, JSON body): their text
            // describes the client's input, never server internals.
            ApiError::new(status, ErrorCode::InvalidRequest, bounded(&err.to_string()))
        }
        s => {
            tracing::error!(request_id = %request_id::current(), status = s.as_u16(), error = %err, "unhandled error");
            ApiError::new(
                if s.is_server_error() {
                    s
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                ErrorCode::InternalError,
                "internal error; quote the request id when reporting it",
            )
        }
    };
    api.as_response()
}

fn bounded(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The final form of an endpoint's outcome: every error rendered as the
/// envelope, and error responses without a body (e.g. poem's bare 405, or a
/// refused CORS preflight) given the envelope too, their headers kept.
#[must_use]
pub fn enveloped<T: IntoResponse>(result: poem::Result<T>) -> Response {
    match result {
        Ok(resp) => {
            let resp = resp.into_response();
            let status = resp.status();
            if (status.is_client_error() || status.is_server_error())
                && !resp.headers().contains_key(header::CONTENT_TYPE)
            {
                let mut out = envelope(poem::Error::from_status(status));
                for (name, value) in resp.headers() {
                    if name == header::CONTENT_LENGTH {
                        continue;
                    }
                    out.headers_mut().entry(name).or_insert(value.clone());
                }
                return out;
            }
            resp
        }
        Err(err) => envelope(err),
    }
}
