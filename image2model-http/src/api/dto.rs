//! The JSON shapes of the API (API.md, "The job"), built from core types.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use image2model_core::domain::{Item, ItemStatus, Job, JobStatus};
use image2model_core::ports::ModelInfo;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{ApiResponse, Enum, Object};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::routes::API_PREFIX;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "JobStatus", rename_all = "snake_case")]
pub enum JobStatusDto {
    /// No item has started.
    Queued,
    /// Some item is running, or some are done and others wait.
    Running,
    /// Every item succeeded.
    Succeeded,
    /// All items ended, some succeeded and some did not.
    Partial,
    /// All items ended and none succeeded.
    Failed,
    /// The job was cancelled.
    Cancelled,
}

impl From<JobStatus> for JobStatusDto {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Partial => Self::Partial,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// An item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "ItemStatus", rename_all = "snake_case")]
pub enum ItemStatusDto {
    /// Waiting for a worker.
    Queued,
    /// Being generated.
    Running,
    /// The model is ready.
    Succeeded,
    /// Generation failed; see `error`.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl From<ItemStatus> for ItemStatusDto {
    fn from(s: ItemStatus) -> Self {
        match s {
            ItemStatus::Queued => Self::Queued,
            ItemStatus::Running => Self::Running,
            ItemStatus::Succeeded => Self::Succeeded,
            ItemStatus::Failed => Self::Failed,
            ItemStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Why an item failed.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ItemError")]
pub struct ItemErrorDto {
    /// Stable code.
    pub code: String,
    /// Explanation, safe to show.
    pub message: String,
}

/// One image of a job and the model made from it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Item")]
pub struct ItemDto {
    /// The item's id.
    pub item_id: String,
    /// The client's file name, sanitised, for display only.
    pub filename: String,
    /// The image's media type, decided from its bytes.
    pub content_type: String,
    /// The image's size in bytes.
    pub size_bytes: u64,
    /// The item's state.
    pub status: ItemStatusDto,
    /// Progress in percent, never going down.
    pub progress: u8,
    /// Why it failed, when it did.
    #[oai(nullable)]
    pub error: Option<ItemErrorDto>,
    /// Where to download the model, once it succeeded.
    #[oai(nullable)]
    pub model_url: Option<String>,
    /// Where to download a preview image, when the generator made one.
    #[oai(nullable)]
    pub preview_url: Option<String>,
}

/// A job: one upload of one or more images.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Job")]
pub struct JobDto {
    /// The job's id (server-generated, opaque).
    pub job_id: String,
    /// The job's state, derived from its items.
    pub status: JobStatusDto,
    /// Mean progress of its items in percent, never going down.
    pub progress: u8,
    /// The model generating it.
    pub model: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The key id that owns it; shown on admin routes only.
    #[oai(skip_serializing_if_is_none)]
    pub owner: Option<String>,
    /// Its items, in upload order.
    pub items: Vec<ItemDto>,
}

impl JobDto {
    /// The client's view of a job.
    #[must_use]
    pub fn from_job(job: &Job) -> Self {
        Self {
            job_id: job.job_id.to_string(),
            status: job.status.into(),
            progress: job.progress.get(),
            model: job.options.model.to_string(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            owner: None,
            items: job.items.iter().map(|i| item_dto(job, i)).collect(),
        }
    }
}

fn item_dto(job: &Job, item: &Item) -> ItemDto {
    let base = format!("{API_PREFIX}/jobs/{}/items/{}", job.job_id, item.item_id);
    let succeeded = item.status == ItemStatus::Succeeded;
    ItemDto {
        item_id: item.item_id.to_string(),
        filename: item.filename.as_str().to_owned(),
        content_type: item.content_type.mime().to_owned(),
        size_bytes: item.size_bytes,
        status: item.status.into(),
        progress: item.progress.get(),
        error: item.error.as_ref().map(|e| ItemErrorDto {
            code: e.code.clone(),
            message: e.message.clone(),
        }),
        model_url: (succeeded && item.model_key.is_some()).then(|| format!("{base}/model")),
        preview_url: (succeeded && item.preview_key.is_some()).then(|| format!("{base}/preview")),
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Object)]
#[oai(rename = "JobList")]
pub struct JobListDto {
    /// The jobs.
    pub jobs: Vec<JobDto>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// A model clients may choose.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Model")]
pub struct ModelDto {
    /// The name to pass as `model`.
    pub name: String,
    /// The generator serving it.
    pub generator: String,
    /// One line for humans.
    pub description: String,
}

impl From<ModelInfo> for ModelDto {
    fn from(m: ModelInfo) -> Self {
        Self {
            name: m.name.to_string(),
            generator: m.generator,
            description: m.description,
        }
    }
}

/// What an upload may contain.
#[derive(Debug, Clone, Object)]
#[oai(rename = "UploadPolicy")]
pub struct UploadPolicyDto {
    /// Files per upload.
    pub max_files: u64,
    /// Bytes per file.
    pub max_file_bytes: u64,
    /// Bytes of all files of one upload together.
    pub max_request_bytes: u64,
    /// Width × height bound of an image, checked from its header.
    pub max_image_pixels: u64,
    /// Media types accepted (decided from the bytes).
    pub accepted_types: Vec<String>,
    /// Models offered.
    pub models: Vec<ModelDto>,
    /// The model used when none is named.
    pub default_model: String,
}

/// A string in a JSON request body, and only a string: poem-openapi's
/// `String` also takes `true` or `42` (as `"true"`, `"42"`), which the
/// document's `type: string` does not allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonString(pub String);

impl Type for JsonString {
    const IS_REQUIRED: bool = true;

    type RawValueType = String;

    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        String::schema_ref()
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ParseFromJSON for JsonString {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            serde_json::Value::String(text) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for JsonString {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::String(self.0.clone()))
    }
}

/// A body whose JSON is written by `serde` and whose schema is another type's.
pub trait Documented: Serialize + Send {
    /// The schema the JSON follows.
    type Schema: Type;

    /// About how many bytes the JSON takes.
    fn size_hint(&self) -> usize {
        256
    }
}

/// A JSON response body written straight from `T`'s `serde` form, and
/// documented by `T::Schema`.
///
/// poem-openapi's own `Json` first builds its value (here a [`JobDto`], a
/// dozen strings per item), converts it into a `serde_json::Value` tree (a
/// `BTreeMap` per object) and then writes the tree. The job bodies, which
/// clients poll, are written from the stored [`Job`] instead, with the same
/// bytes (keys in the same sorted order, times as RFC 3339 with `+00:00`);
/// `serde_matches_the_schema_form` checks it.
#[derive(Debug, Clone)]
pub struct SerdeJson<T>(pub T);

impl<T: Documented> Payload for SerdeJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        T::Schema::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::Schema::register(registry);
    }
}

impl<T: Documented> IntoResponse for SerdeJson<T> {
    fn into_response(self) -> Response {
        // One allocation for a typical body, instead of growing from 128 bytes.
        let mut body = Vec::with_capacity(self.0.size_hint());
        if let Err(e) = serde_json::to_writer(&mut body, &self.0) {
            tracing::error!(error = %e, "a response body did not serialize");
            return crate::error::envelope(poem::Error::from_status(
                poem::http::StatusCode::INTERNAL_SERVER_ERROR,
            ));
        }
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(body)
    }
}

impl<T: Documented> ApiResponse for SerdeJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::Schema::register(registry);
    }
}

/// A job as [`JobDto`] shows it; `admin` adds its owner.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    /// The job.
    pub job: &'a Job,
    /// Whether the owner is shown (`JobDto::owner`, admin routes only).
    pub admin: bool,
}

/// A job body ([`JobDto`]).
#[derive(Debug, Clone)]
pub struct JobBody {
    /// The job.
    pub job: Job,
    /// Whether the owner is shown.
    pub admin: bool,
}

impl JobBody {
    /// The body of `job` as its owner sees it.
    #[must_use]
    pub fn owner(job: Job) -> SerdeJson<Self> {
        SerdeJson(Self { job, admin: false })
    }

    /// The body of `job` as an admin sees it (with its owner).
    #[must_use]
    pub fn admin(job: Job) -> SerdeJson<Self> {
        SerdeJson(Self { job, admin: true })
    }
}

impl Documented for JobBody {
    type Schema = JobDto;

    fn size_hint(&self) -> usize {
        JOB_BYTES + ITEM_BYTES * self.job.items.len()
    }
}

/// About the JSON size of a job without items, and of one item.
const JOB_BYTES: usize = 192;
const ITEM_BYTES: usize = 384;

impl Serialize for JobBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        JobView {
            job: &self.job,
            admin: self.admin,
        }
        .serialize(s)
    }
}

/// A page of jobs ([`JobListDto`]).
#[derive(Debug, Clone)]
pub struct JobListBody {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
    /// Whether owners are shown.
    pub admin: bool,
}

impl Documented for JobListBody {
    type Schema = JobListDto;

    fn size_hint(&self) -> usize {
        let items: usize = self.jobs.iter().map(|j| j.items.len()).sum();
        64 + JOB_BYTES * self.jobs.len() + ITEM_BYTES * items
    }
}

impl Serialize for JobListBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let admin = self.admin;
        let mut m = s.serialize_struct("JobList", 2)?;
        m.serialize_field(
            "jobs",
            &Seq(self.jobs.iter().map(|job| JobView { job, admin })),
        )?;
        m.serialize_field("next_cursor", &self.next_cursor)?;
        m.end()
    }
}

/// A sequence written from an iterator.
struct Seq<I>(I);

impl<I: Iterator<Item = T> + Clone, T: Serialize> Serialize for Seq<I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// A time as poem-openapi writes it (`to_rfc3339`): seconds, then 3, 6 or 9
/// fraction digits as needed (none for a whole second), then `+00:00`.
/// Written by hand: chrono's general formatter was a third of the cost of a
/// job body.
struct Rfc3339<'a>(&'a DateTime<Utc>);

impl Serialize for Rfc3339<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use chrono::{Datelike, Timelike};
        let t = self.0;
        let Ok(year) = u32::try_from(t.year()) else {
            return s.collect_str(&t.to_rfc3339());
        };
        if year > 9999 {
            return s.collect_str(&t.to_rfc3339());
        }
        let mut out = Ascii::new();
        out.num(year, 4);
        out.byte(b'-');
        out.num(t.month(), 2);
        out.byte(b'-');
        out.num(t.day(), 2);
        out.byte(b'T');
        out.num(t.hour(), 2);
        out.byte(b':');
        out.num(t.minute(), 2);
        out.byte(b':');
        // A leap second is kept in the nanoseconds (1_000_000_000 and up),
        // which chrono writes as second 60.
        let nanos = t.nanosecond();
        out.num(t.second() + u32::from(nanos >= 1_000_000_000), 2);
        let nanos = nanos % 1_000_000_000;
        if nanos != 0 {
            out.byte(b'.');
            if nanos.is_multiple_of(1_000_000) {
                out.num(nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                out.num(nanos / 1_000, 6);
            } else {
                out.num(nanos, 9);
            }
        }
        for b in *b"+00:00" {
            out.byte(b);
        }
        s.serialize_str(out.as_str())
    }
}

/// A short ASCII text built on the stack (an RFC 3339 time is at most 35
/// bytes).
struct Ascii {
    buf: [u8; 36],
    len: usize,
}

impl Ascii {
    fn new() -> Self {
        Self {
            buf: [0; 36],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `value` in `digits` decimal digits, zero-padded.
    fn num(&mut self, value: u32, digits: usize) {
        let mut v = value;
        for i in (0..digits).rev() {
            self.buf[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += digits;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

// Keys in sorted order, as in the schema form (see `SerdeJson`), each value
// as `JobDto::from_job` makes it.

impl Serialize for JobView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let job = self.job;
        let mut m = s.serialize_struct("Job", 8)?;
        m.serialize_field("created_at", &Rfc3339(&job.created_at))?;
        m.serialize_field(
            "items",
            &Seq(job.items.iter().map(|item| ItemView { job, item })),
        )?;
        m.serialize_field("job_id", &Text(&job.job_id))?;
        m.serialize_field("model", job.options.model.as_str())?;
        if self.admin {
            m.serialize_field("owner", job.owner.as_str())?;
        }
        m.serialize_field("progress", &job.progress.get())?;
        m.serialize_field("status", job.status.as_str())?;
        m.serialize_field("updated_at", &Rfc3339(&job.updated_at))?;
        m.end()
    }
}

/// One item of a job, as [`ItemDto`] shows it.
#[derive(Clone, Copy)]
struct ItemView<'a> {
    job: &'a Job,
    item: &'a Item,
}

/// A value written as its `Display` text.
struct Text<'a, T>(&'a T);

impl<T: std::fmt::Display> Serialize for Text<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// An item's download URL (`model` or `preview`), when it has that file.
struct ItemUrl<'a> {
    view: ItemView<'a>,
    file: &'static str,
}

impl Serialize for ItemUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!(
            "{API_PREFIX}/jobs/{}/items/{}/{}",
            self.view.job.job_id, self.view.item.item_id, self.file
        ))
    }
}

impl Serialize for ItemView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let item = self.item;
        let succeeded = item.status == ItemStatus::Succeeded;
        let url = |has: bool, file| (succeeded && has).then_some(ItemUrl { view: *self, file });
        let mut m = s.serialize_struct("Item", 9)?;
        m.serialize_field("content_type", item.content_type.mime())?;
        m.serialize_field(
            "error",
            &item.error.as_ref().map(|e| ErrorView {
                code: &e.code,
                message: &e.message,
            }),
        )?;
        m.serialize_field("filename", item.filename.as_str())?;
        m.serialize_field("item_id", &Text(&item.item_id))?;
        m.serialize_field("model_url", &url(item.model_key.is_some(), "model"))?;
        m.serialize_field("preview_url", &url(item.preview_key.is_some(), "preview"))?;
        m.serialize_field("progress", &item.progress.get())?;
        m.serialize_field("size_bytes", &item.size_bytes)?;
        m.serialize_field("status", item.status.as_str())?;
        m.end()
    }
}

/// An item's error, as [`ItemErrorDto`] shows it.
struct ErrorView<'a> {
    code: &'a str,
    message: &'a str,
}

impl Serialize for ErrorView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("ItemError", 2)?;
        m.serialize_field("code", self.code)?;
        m.serialize_field("message", self.message)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use image2model_core::domain::{
        ApiKeyId, BlobKey, DisplayName, GenerateOptions, ImageKind, ItemError, ItemId, JobId,
        ModelName, Progress, Texture,
    };
    use poem_openapi::types::ToJSON;

    use super::*;

    fn at(nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(1_795_000_000, nanos)
            .single()
            .expect("a valid time")
    }

    fn item(job: JobId, n: usize, status: ItemStatus) -> Item {
        let item_id = ItemId::new();
        let done = status == ItemStatus::Succeeded;
        Item {
            item_id,
            filename: DisplayName::sanitize(&format!("photo \"{n}\" \\ été 📷.png")),
            content_type: if n.is_multiple_of(2) {
                ImageKind::Png
            } else {
                ImageKind::Jpeg
            },
            size_bytes: 1_000_000 + n as u64,
            width: 640,
            height: 480,
            upload_key: BlobKey::upload(job, item_id, ImageKind::Png),
            status,
            progress: Progress::clamped(17 * n as i64),
            error: (status == ItemStatus::Failed).then(|| ItemError {
                code: "generation_failed".into(),
                message: "the model said \"no\"\n\ttwice".into(),
            }),
            model_key: done.then(|| BlobKey::model(job, item_id)),
            preview_key: (done && n.is_multiple_of(2))
                .then(|| BlobKey::preview(job, item_id, ImageKind::Png)),
            remote_request_id: None,
            attempts: 1,
            updated_at: at(0),
        }
    }

    fn job(statuses: &[ItemStatus], status: JobStatus, nanos: [u32; 2]) -> Job {
        let job_id = JobId::new();
        Job {
            job_id,
            owner: ApiKeyId::bootstrap_user(),
            status,
            progress: Progress::clamped(42),
            options: GenerateOptions {
                model: ModelName::parse("tripo3d-v2.5").expect("a valid model"),
                face_limit: None,
                texture: Texture::Hd,
            },
            idempotency_key: None,
            cancel_requested: false,
            created_at: at(nanos[0]),
            updated_at: at(nanos[1]),
            items: statuses
                .iter()
                .enumerate()
                .map(|(n, s)| item(job_id, n, *s))
                .collect(),
        }
    }

    fn jobs() -> Vec<Job> {
        use ItemStatus as I;
        vec![
            job(&[I::Queued], JobStatus::Queued, [0, 382_000_000]),
            job(
                &[I::Running, I::Queued],
                JobStatus::Running,
                [1_000, 123_456_789],
            ),
            job(
                &[I::Succeeded, I::Succeeded, I::Failed],
                JobStatus::Partial,
                [999_999_999, 5_000_000],
            ),
            job(&[I::Succeeded], JobStatus::Succeeded, [7, 120_000]),
            job(&[I::Failed, I::Cancelled], JobStatus::Failed, [0, 0]),
            job(&[I::Cancelled], JobStatus::Cancelled, [1, 2]),
            job(&[], JobStatus::Queued, [0, 0]),
            Job {
                // A leap second (second 60) and a time before 1970.
                created_at: Utc
                    .timestamp_opt(1_795_000_019, 1_500_000_000)
                    .single()
                    .expect("a leap second"),
                updated_at: Utc
                    .timestamp_opt(-86_400 * 365, 10)
                    .single()
                    .expect("a valid time"),
                ..job(&[I::Succeeded], JobStatus::Succeeded, [0, 0])
            },
        ]
    }

    /// The admin routes' schema form: with the owner.
    fn admin_view(job: &Job) -> JobDto {
        JobDto {
            owner: Some(job.owner.to_string()),
            ..JobDto::from_job(job)
        }
    }

    fn schema_form<T: ToJSON>(value: &T) -> Vec<u8> {
        serde_json::to_vec(&value.to_json()).expect("a value serializes")
    }

    #[test]
    fn serde_matches_the_schema_form() {
        let jobs = jobs();
        for job in &jobs {
            for admin in [false, true] {
                let dto = if admin {
                    admin_view(job)
                } else {
                    JobDto::from_job(job)
                };
                let fast = serde_json::to_vec(&JobView { job, admin }).expect("serializes");
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(schema_form(&dto)).unwrap()
                );
            }
        }
        for admin in [false, true] {
            for next_cursor in [None, Some("c\"ursor".to_owned())] {
                let list = JobListDto {
                    jobs: jobs
                        .iter()
                        .map(if admin { admin_view } else { JobDto::from_job })
                        .collect(),
                    next_cursor: next_cursor.clone(),
                };
                let body = JobListBody {
                    jobs: jobs.clone(),
                    next_cursor,
                    admin,
                };
                assert_eq!(
                    String::from_utf8(serde_json::to_vec(&body).unwrap()).unwrap(),
                    String::from_utf8(schema_form(&list)).unwrap(),
                );
            }
        }
    }

    #[test]
    fn a_serde_json_response_is_json_with_the_payload_bytes() {
        let job = jobs().swap_remove(2);
        let dto = admin_view(&job);
        let resp = JobBody::admin(job).into_response();
        assert_eq!(resp.status(), poem::http::StatusCode::OK);
        assert_eq!(
            resp.headers()[poem::http::header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let body = futures::executor::block_on(resp.into_body().into_vec()).unwrap();
        assert_eq!(body, schema_form(&dto));
    }
}
