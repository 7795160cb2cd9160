//! `GET /api/v1/upload` (the policy) and `POST /api/v1/upload` (a streamed
//! multipart upload).
//!
//! The upload never buffers a file whole and never writes a temp file: each
//! `files` part streams from the socket through the core's validator into the
//! blob store ([`image2model_core::pipeline::Upload::add_file`]). The whole
//! request is bounded too, while it is read ([`UploadBody`]), so a client
//! cannot make us read an endless body of small parts or huge option fields.

use image2model_core::ErrorCode;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use image2model_core::domain::{
    ApiKeyId, CallbackUrl, FaceLimit, MAX_CALLBACK_URL_BYTES, ModelName, Texture,
};
use image2model_core::pipeline::{Upload, UploadStart};
use image2model_core::validate::ValidationError;
use image2model_core::{PipelineError, SubmitOptions};
use multer::{Field, Multipart};
use poem::http::header;
use poem::{Request, RequestBody};
use poem_openapi::payload::Json;
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, OpenApi, param::Header,
};

use super::dto::{JobBody, SerdeJson, UploadPolicyDto};
use super::tags::ApiTags;
use crate::error::{ApiError, ErrorBody};
use crate::quota;
use crate::routes::API_PREFIX;
use crate::security::auth::UserKey;
use crate::state::AppState;

/// Bytes allowed for the multipart framing (boundaries, part headers, option
/// fields) on top of the files themselves.
const FRAMING_ALLOWANCE: u64 = 1024 * 1024;
/// The longest option field (`model`, `face_limit`, `texture`).
const MAX_OPTION_BYTES: u64 = 256;

/// The multipart form of `POST /api/v1/upload` (documentation of the body;
/// the body itself is streamed by [`UploadBody`], which checks each field
/// itself: the validators here only describe those checks). The document
/// adds what a derive cannot say (`crate::api::document`): the models this
/// server offers as `model`'s values, and the media types of `files`.
#[derive(Debug, poem_openapi::Multipart)]
pub struct UploadForm {
    /// One part per image (1 to `max_files`): PNG, JPEG or WebP, decided from
    /// the bytes. The part's file name is kept for display only.
    pub files: Vec<poem_openapi::types::multipart::Upload>,
    /// The model (see `GET /api/v1/upload` for those offered); the default
    /// model when absent.
    #[oai(validator(pattern = r"^[a-z0-9._-]{1,64}$"))]
    pub model: Option<String>,
    /// At most this many faces (500 to 1000000), for models that honour it.
    #[oai(validator(minimum(value = "500"), maximum(value = "1000000")))]
    pub face_limit: Option<u32>,
    /// Texture quality: `no`, `standard` (default) or `hd`; `none`/`false`
    /// and `yes`/`true` are accepted as the original's spellings of `no` and
    /// `standard`.
    pub texture: Option<TextureParam>,
    /// Where to post the job's end, signed (see `docs/WEBHOOKS.md`): an
    /// `https` URL of a public host, at most 2048 bytes. The key's default
    /// callback URL (`PUT /api/v1/webhook`) when absent; the key needs a
    /// webhook secret (`POST /api/v1/webhook/secret`) for either.
    #[oai(validator(max_length = 2048))]
    pub callback_url: Option<String>,
}

/// The `texture` field of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename = "Texture", rename_all = "lowercase")]
pub enum TextureParam {
    /// No texture.
    No,
    /// A standard texture (the default).
    Standard,
    /// A high-definition texture, where the model offers one.
    Hd,
    /// The same as `no`, as the Python original's clients send it.
    None,
    /// The same as `no` (the original's boolean form).
    False,
    /// The same as `standard`, as the original's clients send it.
    Yes,
    /// The same as `standard` (the original's boolean form).
    True,
}

/// The streamed multipart body of an upload.
///
/// Implements [`ApiExtractor`] itself (rather than poem's `FromRequest`) so
/// that the OpenAPI document describes the body as [`UploadForm`] while the
/// handler reads parts one by one from the socket.
pub struct UploadBody {
    multipart: Multipart<'static>,
    /// Set when the whole-request bound was hit, so the error surfaces as
    /// `request_too_large` whatever layer noticed the broken stream.
    exceeded: Arc<AtomicBool>,
    max_body: u64,
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// Stops a body stream after `max` bytes with an error, and hands out one
/// chunk per poll.
///
/// The second part bounds memory: the multipart parser (multer) pulls chunks
/// from its body for as long as they are ready and copies them all into its
/// own buffer, so with a fast client it held whatever the socket had
/// received (megabytes per upload on loopback). After each chunk this
/// stream answers `Pending` once (waking itself at once), so the parser
/// returns after every chunk and holds at most about one socket read.
struct Bounded<S> {
    inner: S,
    read: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
    /// A chunk went out in this poll: answer `Pending` once.
    yield_next: bool,
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for Bounded<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut this.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.yield_next = true;
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

fn too_large(max: u64) -> ApiError {
    ApiError::from(PipelineError::Validation(
        ValidationError::RequestTooLarge { max },
    ))
}

impl<'a> ApiExtractor<'a> for UploadBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <UploadForm as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The images and options, as `multipart/form-data`."),
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: <UploadForm as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        let Some(state) = req.data::<AppState>() else {
            return Err(ApiError::internal("no app state in request data").into());
        };
        let limits = state.pipeline.limits();
        let max_body = limits.max_request_bytes.saturating_add(FRAMING_ALLOWANCE);
        // Refuse early what announces itself as too large.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(too_large(limits.max_request_bytes).into());
        }
        // multer reads the body's chunks as they come off the socket and
        // hands file data on as slices of its buffer: no reader in between
        // copying every byte once more.
        let boundary = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            // Checks the type is multipart/form-data, then takes the boundary.
            .and_then(|v| multer::parse_boundary(v).ok())
            .ok_or_else(|| {
                ApiError::of(
                    ErrorCode::UnsupportedMediaType,
                    "the body must be multipart/form-data",
                )
            })?;
        let exceeded = Arc::new(AtomicBool::new(false));
        let bounded = Bounded {
            inner: body.take()?.into_bytes_stream().boxed(),
            read: 0,
            max: max_body,
            exceeded: exceeded.clone(),
            yield_next: false,
        };
        let multipart = Multipart::new(bounded, boundary);
        Ok(Self {
            multipart,
            exceeded,
            max_body,
        })
    }
}

/// Responses of `GET /api/v1/upload`.
#[derive(Debug, ApiResponse)]
pub enum PolicyResponse {
    /// The upload policy.
    #[oai(status = 200)]
    Ok(Json<UploadPolicyDto>),
}

/// Responses of `POST /api/v1/upload`.
#[derive(Debug, ApiResponse)]
pub enum UploadResponse {
    /// The job was created and queued; with an `Idempotency-Key` already used
    /// by this key, the job created the first time.
    #[oai(status = 202)]
    Accepted(SerdeJson<JobBody>, #[oai(header = "Location")] String),
    /// `no_files`, `empty_file`, `invalid_image`, `image_too_large`,
    /// `invalid_model`, `unknown_model`, `invalid_face_limit`,
    /// `invalid_texture`, `invalid_idempotency_key`, `invalid_callback_url`,
    /// `unexpected_field`, `upload_interrupted`.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `webhook_secret_missing`: a webhook was asked for but the key has no
    /// webhook secret yet.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `too_many_files`, `file_too_large`, `request_too_large`.
    #[oai(status = 413)]
    TooLarge(Json<ErrorBody>),
    /// `unsupported_type` (a file is not PNG, JPEG or WebP) or
    /// `unsupported_media_type` (the body is not multipart/form-data).
    #[oai(status = 415)]
    Unsupported(Json<ErrorBody>),
    /// `overloaded` (the queue or the uploads in progress are at their cap;
    /// see `Retry-After`), or `storage_unavailable` or another dependency is
    /// down.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// `insufficient_storage`: the blob store is full; nothing was stored.
    #[oai(status = 507)]
    InsufficientStorage(Json<ErrorBody>),
}

/// The upload endpoints.
#[derive(Debug, Clone)]
pub struct UploadApi {
    pub(crate) state: AppState,
}

#[OpenApi(tag = "ApiTags::Upload")]
impl UploadApi {
    /// The upload policy
    ///
    /// What an upload may contain and the models offered. Counts in the
    /// upload rate-limit bucket.
    #[oai(path = "/upload", method = "get", operation_id = "upload_policy")]
    async fn policy(&self, _auth: UserKey) -> Result<PolicyResponse, ApiError> {
        let limits = self.state.pipeline.limits();
        Ok(PolicyResponse::Ok(Json(UploadPolicyDto {
            max_files: limits.max_files as u64,
            max_file_bytes: limits.max_file_bytes,
            max_request_bytes: limits.max_request_bytes,
            max_image_pixels: limits.max_image_pixels,
            accepted_types: image2model_core::domain::ImageKind::ALL
                .iter()
                .map(|k| k.mime().to_owned())
                .collect(),
            models: self
                .state
                .pipeline
                .models()
                .into_iter()
                .map(Into::into)
                .collect(),
            default_model: self.state.pipeline.generators().default_model().to_string(),
        })))
    }

    /// Upload images
    ///
    /// Streams the images in and creates one job for them (one item per
    /// file). Every file is checked while it streams: type from the bytes,
    /// size, and dimensions from the header. A rejected upload stores
    /// nothing and creates no job. Send an `Idempotency-Key` to make retries
    /// safe: the same key (for the same API key) returns the first job.
    #[oai(path = "/upload", method = "post", operation_id = "upload")]
    async fn upload(
        &self,
        auth: UserKey,
        req: &Request,
        /// 1 to 255 visible ASCII characters; retries with the same key
        /// return the job created first.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: UploadBody,
    ) -> Result<UploadResponse, ApiError> {
        let UploadBody {
            mut multipart,
            exceeded,
            max_body,
        } = body;
        let key = idempotency_key.0;
        // Backpressure: a bounded number of uploads stream at once here.
        let Ok(_slot) = self.state.upload_slots.clone().try_acquire_owned() else {
            let max = self.state.config.max_concurrent_uploads;
            return Err(ApiError::of(
                ErrorCode::Overloaded,
                format!("this server has {max} uploads in progress (its limit); retry shortly"),
            )
            .with_header(header::RETRY_AFTER, 1));
        };
        let start = self
            .state
            .pipeline
            .begin_upload(auth.0.key_id.clone(), key.clone())
            .await?;
        let mut upload = match start {
            UploadStart::Existing(job) => {
                tracing::info!(job_id = %job.job_id, "idempotent upload replayed");
                return Ok(accepted(job));
            }
            UploadStart::New(upload) => upload,
        };
        let limits = *self.state.pipeline.limits();
        upload.charge_owner(auth.0.limits);
        let allow_http = self.state.config.webhooks.allow_http;
        let read = read_parts(&mut upload, &mut multipart, allow_http).await;
        let bound_hit = exceeded.load(Ordering::Relaxed);
        let read = match read {
            Ok(mut options) => callback_of(&self.state, &auth.0.key_id, options.callback.take())
                .await
                .map(|callback| SubmitOptions {
                    callback,
                    ..options
                }),
            Err(e) => Err(e),
        };
        let options = match (read, bound_hit) {
            (Ok(options), false) => options,
            (_, true) => {
                upload.abort().await;
                tracing::info!(max_body, "upload over the request bound");
                return Err(too_large(limits.max_request_bytes));
            }
            (Err(e), false) => {
                upload.abort().await;
                if e.code() == ErrorCode::QuotaExceeded.as_str() {
                    quota::refused(&self.state, &auth.0, req, e.message()).await;
                }
                return Err(e);
            }
        };
        let job = match upload
            .commit(SubmitOptions {
                idempotency_key: key,
                ..options
            })
            .await
        {
            Ok(job) => job,
            Err(e @ PipelineError::QuotaExceeded(_)) => {
                let e = ApiError::from(e);
                quota::refused(&self.state, &auth.0, req, e.message()).await;
                return Err(e);
            }
            Err(e) => return Err(e.into()),
        };
        quota::after_upload(&self.state, &auth.0, req, &job).await;
        Ok(accepted(job))
    }
}

fn accepted(job: image2model_core::domain::Job) -> UploadResponse {
    let location = format!("{API_PREFIX}/jobs/{}", job.job_id);
    UploadResponse::Accepted(JobBody::owner(job), location)
}

/// The webhook of an upload: its own `callback_url`, else its key's
/// default; checked for an address a delivery may reach and for the key's
/// secret.
async fn callback_of(
    state: &AppState,
    owner: &ApiKeyId,
    asked: Option<CallbackUrl>,
) -> Result<Option<CallbackUrl>, ApiError> {
    let Some(outbox) = state.pipeline.job_store().callbacks() else {
        return match asked {
            Some(_) => Err(ApiError::of(
                ErrorCode::InvalidCallbackUrl,
                "this server's job store keeps no webhooks",
            )),
            None => Ok(None),
        };
    };
    let settings = outbox
        .webhook_settings(owner)
        .await
        .map_err(PipelineError::from)?;
    let Some(url) = asked.or(settings.default_url) else {
        return Ok(None);
    };
    if settings.secret_seed.is_none() {
        return Err(ApiError::of(
            ErrorCode::WebhookSecretMissing,
            "this key has no webhook secret: make one with POST /api/v1/webhook/secret, then \
             verify deliveries with it",
        ));
    }
    state
        .webhook_addresses
        .check_url(url.url(), CALLBACK_LOOKUP_TIMEOUT)
        .await
        .map_err(|m| ApiError::of(ErrorCode::InvalidCallbackUrl, format!("callback_url: {m}")))?;
    Ok(Some(url))
}

/// How long an upload waits for its callback host's address.
const CALLBACK_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Reads every part: files into the upload, options into the result.
async fn read_parts(
    upload: &mut Upload,
    multipart: &mut Multipart<'static>,
    allow_http: bool,
) -> Result<SubmitOptions, ApiError> {
    let mut options = SubmitOptions::default();
    // An option given twice is ambiguous: refused, not last-one-wins.
    let mut seen: Vec<String> = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Ok(options),
            Err(e) => {
                return Err(ApiError::of(
                    ErrorCode::InvalidMultipart,
                    format!("the multipart body could not be read: {e}"),
                ));
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        if name != "files" {
            if seen.contains(&name) {
                return Err(ApiError::of(
                    ErrorCode::InvalidRequest,
                    format!(
                        "the field {:?} is given more than once",
                        name.chars().take(40).collect::<String>()
                    ),
                ));
            }
            seen.push(name);
        }
        match field.name().unwrap_or("") {
            "files" => {
                let name = field.file_name().unwrap_or("image").to_owned();
                let stream = field.map_err(std::io::Error::other).boxed();
                upload.add_file(&name, stream).await?;
            }
            "model" => {
                let text = option_text(field, "model", MAX_OPTION_BYTES).await?;
                let model = ModelName::parse(&text).map_err(PipelineError::from)?;
                upload.note_model(model.clone());
                options.model = Some(model);
            }
            "face_limit" => {
                let text = option_text(field, "face_limit", MAX_OPTION_BYTES).await?;
                options.face_limit = Some(FaceLimit::parse(&text).map_err(PipelineError::from)?);
            }
            "texture" => {
                let text = option_text(field, "texture", MAX_OPTION_BYTES).await?;
                options.texture = Some(Texture::parse(&text).map_err(PipelineError::from)?);
            }
            "callback_url" => {
                let text =
                    option_text(field, "callback_url", MAX_CALLBACK_URL_BYTES as u64).await?;
                let url = CallbackUrl::parse(&text, allow_http)
                    .map_err(|e| ApiError::of(ErrorCode::InvalidCallbackUrl, e.to_string()))?;
                options.callback = Some(url);
            }
            other => {
                return Err(ApiError::of(
                    ErrorCode::UnexpectedField,
                    format!(
                        "unexpected form field {:?}: expected files, model, face_limit, texture, callback_url",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        }
    }
}

/// An option field's text, of at most `max` bytes.
async fn option_text(
    mut field: Field<'static>,
    name: &'static str,
    max: u64,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > max {
                    return Err(ApiError::of(
                        ErrorCode::InvalidRequest,
                        format!("the field {name} is longer than {max} bytes"),
                    ));
                }
            }
            Ok(None) => break,
            Err(_) => {
                return Err(ApiError::of(
                    ErrorCode::InvalidMultipart,
                    format!("the field {name} could not be read"),
                ));
            }
        }
    }
    String::from_utf8(buf).map_err(|_| {
        ApiError::of(
            ErrorCode::InvalidRequest,
            format!("the field {name} is not UTF-8"),
        )
    })
}
