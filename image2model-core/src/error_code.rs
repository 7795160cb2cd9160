//! Every stable error code, in one registry: [`ErrorCode`].
//!
//! A code is part of the API: clients match on it, so it is never renamed,
//! only added. Each has the HTTP status it is answered with (none for codes
//! no response carries: a failed item's, start-up's) and a line of
//! documentation.
//! `docs/ERRORS.md` lists the same codes; a test checks that the two agree,
//! so a code added here without its row there (or the other way round)
//! fails the build's tests.
//!
//! Adding a code: one line in the table below, one row in `docs/ERRORS.md`,
//! then use `ErrorCode::NewCode.as_str()` (or the variant) where the error
//! is made.

use std::fmt;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:expr, $doc:literal;)+) => {
        /// A stable error code (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                #[doc = $doc]
                $variant,
            )+
        }

        impl ErrorCode {
            /// Every code, in the registry's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as clients see it: snake_case.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)+
                }
            }

            /// The HTTP status a response with this code has; `None` for a
            /// code no response carries (a failed item's, or start-up's).
            #[must_use]
            pub const fn http_status(self) -> Option<u16> {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }

            /// What the code means, in one line.
            #[must_use]
            pub const fn doc(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)+
                }
            }
        }
    };
}

error_codes! {
    // Upload validation.
    NoFiles = "no_files", Some(400), "The upload had no `files` part.";
    TooManyFiles = "too_many_files", Some(413), "More than `MAX_FILES` files.";
    EmptyFile = "empty_file", Some(400), "A file had no bytes.";
    FileTooLarge = "file_too_large", Some(413), "A file exceeded `MAX_FILE_BYTES`.";
    RequestTooLarge = "request_too_large", Some(413), "The request body exceeded its bound.";
    UnsupportedType = "unsupported_type", Some(415), "The bytes are not PNG, JPEG or WebP.";
    InvalidImage = "invalid_image", Some(400), "The image header is malformed or gives no dimensions.";
    ImageTooLarge = "image_too_large", Some(400), "The image's dimensions are over the bound.";
    // Options and requests.
    InvalidFaceLimit = "invalid_face_limit", Some(400), "`face_limit` is not a whole number in 500..=1000000.";
    InvalidTexture = "invalid_texture", Some(400), "`texture` is not `no`, `standard` or `hd`.";
    InvalidModel = "invalid_model", Some(400), "`model` is not 1–64 characters of `[a-z0-9._-]`.";
    UnknownModel = "unknown_model", Some(400), "No configured generator offers the model.";
    InvalidIdempotencyKey = "invalid_idempotency_key", Some(400), "`Idempotency-Key` is not 1–255 visible ASCII characters.";
    InvalidCallbackUrl = "invalid_callback_url", Some(400), "`callback_url` is not an https URL this server may call (a loopback, private, link-local or metadata address is refused).";
    WebhookSecretMissing = "webhook_secret_missing", Some(409), "A webhook was asked for, but the key has no webhook secret yet (`POST /api/v1/webhook/secret`).";
    NotFound = "not_found", Some(404), "No such job, item or route, or it belongs to another key.";
    ModelNotReady = "model_not_ready", Some(409), "The item has not succeeded (yet).";
    UploadInterrupted = "upload_interrupted", Some(400), "The request body ended or failed mid-file.";
    Conflict = "conflict", Some(409), "A unique value (an id, a key) is already taken.";
    StoreUnavailable = "store_unavailable", Some(503), "The job database did not answer.";
    StorageUnavailable = "storage_unavailable", Some(503), "The blob store did not answer.";
    InsufficientStorage = "insufficient_storage", Some(507), "The blob store is full (disk, inodes or quota): nothing was stored; retry once space is freed.";
    InvalidConfiguration = "invalid_configuration", Some(500), "The server's configuration cannot serve the request.";
    InternalError = "internal_error", Some(500), "Anything else; details only in the server log.";
    // The HTTP layer.
    Unauthorized = "unauthorized", Some(401), "Missing, malformed or unknown API key.";
    Forbidden = "forbidden", Some(403), "This key may not call this endpoint.";
    RateLimited = "rate_limited", Some(429), "The client's request budget is spent for now.";
    TooManyStreams = "too_many_streams", Some(429), "The key already has `MAX_EVENT_STREAMS_PER_KEY` event streams open (`GET /api/v1/events`): close one and retry after `Retry-After` seconds.";
    QuotaExceeded = "quota_exceeded", Some(429), "The upload would pass one of its key's limits (items a day, estimated spend a day or a month).";
    Overloaded = "overloaded", Some(503), "The server is busy (its queue or its uploads in progress are at their cap): retry after `Retry-After` seconds.";
    InvalidRequest = "invalid_request", Some(400), "A query or path parameter, or an option field, could not be parsed.";
    InvalidMultipart = "invalid_multipart", Some(400), "The multipart body is malformed.";
    UnexpectedField = "unexpected_field", Some(400), "An upload form field the API does not know.";
    UnsupportedMediaType = "unsupported_media_type", Some(415), "The body's media type is not the one the route takes.";
    MethodNotAllowed = "method_not_allowed", Some(405), "The route exists, the method does not.";
    InvalidHost = "invalid_host", Some(400), "`Host` is not in `ALLOWED_HOSTS`.";
    ConversionFailed = "conversion_failed", Some(500), "A stored model could not be converted to OBJ or STL.";
    AuthUnavailable = "auth_unavailable", Some(503), "The key store did not answer.";
    InvalidKeyName = "invalid_key_name", Some(400), "A key name that is empty, too long or has control characters.";
    BootstrapKey = "bootstrap_key", Some(409), "The bootstrap keys come from the environment and cannot be deleted.";
    PayloadTooLarge = "payload_too_large", Some(413), "A webhook body over its bound.";
    LinkInvalid = "link_invalid", Some(403), "A download link that is malformed or whose signature does not match.";
    LinkExpired = "link_expired", Some(410), "A download link past its expiry.";
    LinkRevoked = "link_revoked", Some(410), "A download link whose owner's API key has been revoked.";
    // Failed items.
    GenerationRejected = "generation_rejected", None, "The generator could not use the image.";
    ContentPolicyViolation = "content_policy_violation", None, "The remote model refused the content.";
    GeneratorAccountError = "generator_account_error", None, "The generator's credentials or account were refused.";
    GeneratorUnavailable = "generator_unavailable", None, "The generator stayed unreachable through its retries.";
    GenerationTimeout = "generation_timeout", None, "The item's deadline or the remote queue timeout passed.";
    Cancelled = "cancelled", None, "The job was cancelled.";
    InvalidModelOutput = "invalid_model_output", None, "The generator's file is not a valid binary glTF.";
    ModelTooLarge = "model_too_large", None, "The model file exceeded the size cap.";
    UpstreamError = "upstream_error", None, "The remote service failed otherwise, or the model could not be stored.";
    UploadMissing = "upload_missing", None, "The uploaded image could not be read back.";
    WorkerLost = "worker_lost", None, "Workers died holding the item too many times.";
    // Start-up.
    InvalidConfig = "invalid_config", None, "The server's settings cannot be used; it does not start.";
}

impl ErrorCode {
    /// The code with this text, if it is one.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> Self {
        code.as_str().to_owned()
    }
}

impl From<ErrorCode> for std::borrow::Cow<'static, str> {
    fn from(code: ErrorCode) -> Self {
        std::borrow::Cow::Borrowed(code.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// The codes of `docs/ERRORS.md`: each table row's first cell, with
    /// the HTTP status where the table has an `HTTP` column.
    fn documented() -> BTreeMap<String, BTreeSet<Option<u16>>> {
        let text = include_str!("../../docs/ERRORS.md");
        let mut codes: BTreeMap<String, BTreeSet<Option<u16>>> = BTreeMap::new();
        let mut http_column = None;
        for line in text.lines() {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if !line.trim_start().starts_with('|') {
                http_column = None;
                continue;
            }
            if cells.first() == Some(&"code") {
                http_column = cells.iter().position(|c| *c == "HTTP");
                continue;
            }
            let Some(code) = cells
                .first()
                .and_then(|c| c.strip_prefix('`')?.strip_suffix('`'))
            else {
                continue;
            };
            let status = http_column
                .and_then(|i| cells.get(i))
                .map(|s| s.parse::<u16>().expect("an HTTP cell is a status"));
            codes.entry(code.to_owned()).or_default().insert(status);
        }
        codes
    }

    #[test]
    fn codes_are_unique_snake_case_with_a_doc_line() {
        let mut seen = BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text} is not snake_case"
            );
            assert!(!code.doc().is_empty(), "{text} has no doc line");
            assert_eq!(ErrorCode::parse(text), Some(*code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn docs_errors_md_lists_exactly_the_registry_with_its_statuses() {
        let documented = documented();
        for code in ErrorCode::ALL {
            let Some(statuses) = documented.get(code.as_str()) else {
                panic!("{code} is missing from docs/ERRORS.md");
            };
            for status in statuses.iter().flatten() {
                assert_eq!(
                    code.http_status(),
                    Some(*status),
                    "docs/ERRORS.md gives {code} HTTP {status}"
                );
            }
            if code.http_status().is_some() {
                assert!(
                    statuses.iter().any(Option::is_some),
                    "docs/ERRORS.md lists {code} without its HTTP status"
                );
            }
        }
        for code in documented.keys() {
            assert!(
                ErrorCode::parse(code).is_some(),
                "docs/ERRORS.md lists {code}, which the registry does not have"
            );
        }
    }
}
