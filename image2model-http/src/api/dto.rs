//! The JSON shapes of the API (API.md, "The job"), built from core types.

use chrono::{DateTime, Utc};
use image2model_core::domain::{Item, ItemStatus, Job, JobStatus};
use image2model_core::ports::ModelInfo;
use poem_openapi::{Enum, Object};

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
    pub error: Option<ItemErrorDto>,
    /// Where to download the model, once it succeeded.
    pub model_url: Option<String>,
    /// Where to download a preview image, when the generator made one.
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

    /// The admin's view: with the owner.
    #[must_use]
    pub fn admin_view(job: &Job) -> Self {
        Self {
            owner: Some(job.owner.to_string()),
            ..Self::from_job(job)
        }
    }
}

fn item_dto(job: &Job, item: &Item) -> ItemDto {
    let base = format!("/api/v1/jobs/{}/items/{}", job.job_id, item.item_id);
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
