//! What the SQL job stores share: the row shapes, their strict conversion to
//! and from domain types, and the item state changes.
//!
//! Both SQL backends load a whole job (with its items and leases) inside a
//! transaction, change it here in Rust, and write the changed rows back. So the
//! state machine ([`ItemStatus::can_become`], [`Job::refresh`]) lives in one
//! place and the SQL stays plain.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use image2model_core::ErrorCode;
use image2model_core::domain::{
    ApiKeyId, BlobKey, CallbackUrl, Delivery, DeliveryId, DeliveryStatus, DisplayName, FaceLimit,
    GenerateOptions, ImageKind, Item, ItemError, ItemId, ItemStatus, Job, JobId, JobStatus,
    ModelName, NewCallback, Progress, Texture,
};
use image2model_core::ports::{
    Claim, HeldChange, ItemOutcome, JobPage, LeaseToken, ListQuery, NewJob, QueueStats, StoreError,
};

/// Every job status, to parse stored text strictly.
const JOB_STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Partial,
    JobStatus::Failed,
    JobStatus::Cancelled,
];

/// The most leases one `renew_leases` statement renews: larger batches go
/// in chunks of this many (SQLite binds two values per lease, and a chunk
/// bounds how long one statement holds the write lock or row locks).
pub(crate) const RENEW_CHUNK: usize = 500;

/// The job statuses that mean a job has ended, as stored text.
pub(crate) const ENDED_STATUSES: [&str; 4] = ["succeeded", "partial", "failed", "cancelled"];

/// The most jobs a page of `list_jobs` holds.
pub(crate) const MAX_PAGE: u32 = 100;

/// A row of `jobs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub job_id: String,
    pub owner: String,
    pub status: String,
    pub progress: i64,
    pub model: String,
    pub face_limit: Option<i64>,
    pub texture: String,
    pub idempotency_key: Option<String>,
    pub cancel_requested: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A row of `items` (also read from a JSON array of its columns, in this
/// order, by SQLite's packed job reads).
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct ItemRow {
    pub item_id: String,
    pub job_id: String,
    pub position: i64,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub width: i64,
    pub height: i64,
    pub upload_key: String,
    pub status: String,
    pub progress: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub model_key: Option<String>,
    pub preview_key: Option<String>,
    pub remote_request_id: Option<String>,
    pub attempts: i64,
    pub lease_token: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// The columns of `jobs`, in [`JobRow`] order.
pub(crate) const JOB_COLUMNS: &str = "job_id, owner, status, progress, model, face_limit, texture, \
     idempotency_key, cancel_requested, created_at_ms, updated_at_ms";

/// The columns of `items`, in [`ItemRow`] order.
pub(crate) const ITEM_COLUMNS: &str = "item_id, job_id, position, filename, content_type, \
     size_bytes, width, height, upload_key, status, progress, error_code, error_message, \
     model_key, preview_key, remote_request_id, attempts, lease_token, lease_expires_at_ms, \
     updated_at_ms";

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// Milliseconds since the epoch, as stored.
pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64, what: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(what, "time out of range"))
}

/// Items failed as `worker_lost` by claims in this process, counted before
/// each failure is written (a failure that is then not committed counts
/// too): what the SQL stores answer to `JobStore::worker_lost_count`.
static WORKER_LOST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`WORKER_LOST`].
pub(crate) fn worker_lost_count() -> u64 {
    WORKER_LOST.load(std::sync::atomic::Ordering::SeqCst)
}

/// Now, at the precision the stores keep (milliseconds), so that what a call
/// returns equals what a later read returns.
pub(crate) fn now() -> DateTime<Utc> {
    from_ms(to_ms(Utc::now()), "now").unwrap_or_else(|_| Utc::now())
}

/// `now + lease` (a lease is capped at ten years).
pub(crate) fn lease_until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let cap = chrono::Duration::days(3650);
    let lease = chrono::Duration::from_std(lease).unwrap_or(cap).min(cap);
    now + lease
}

/// Maps a database error to a [`StoreError`] without SQL text: connection
/// trouble is `Unavailable`, undecodable data `Corrupt`, the rest `Backend`.
pub(crate) fn db_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(format!("{context}: {e}")),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("{context}: {e}")),
        sqlx::Error::Database(d) if is_busy(d.as_ref()) => {
            StoreError::Unavailable(format!("{context}: the database is busy"))
        }
        sqlx::Error::Database(d) if is_connection_failure(d.as_ref()) => {
            StoreError::Unavailable(format!("{context}: {}", d.message()))
        }
        sqlx::Error::Database(d) => StoreError::Backend(format!("{context}: {}", d.message())),
        _ => StoreError::Backend(format!("{context}: {e}")),
    }
}

/// SQLite's `SQLITE_BUSY` / `SQLITE_LOCKED` after the busy timeout.
fn is_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(e.code().as_deref(), Some("5" | "6" | "517" | "261"))
}

/// Postgres classes 08 (connection exception) and 57P (operator intervention:
/// shutdown, cannot connect now).
fn is_connection_failure(e: &dyn sqlx::error::DatabaseError) -> bool {
    e.code()
        .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

fn progress_of(v: i64, what: &str) -> Result<Progress, StoreError> {
    u8::try_from(v)
        .ok()
        .and_then(|p| Progress::try_from(p).ok())
        .ok_or_else(|| corrupt(what, "progress outside 0..=100"))
}

fn key_of(text: &str, what: &str) -> Result<BlobKey, StoreError> {
    BlobKey::parse(text).map_err(|e| corrupt(what, e))
}

fn int_of<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| corrupt(what, "number out of range"))
}

/// The lease of a running item, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub token: LeaseToken,
    pub expires_at: DateTime<Utc>,
}

/// A job with its items' leases: what a transaction loads and changes.
#[derive(Debug, Clone)]
pub(crate) struct LoadedJob {
    pub job: Job,
    pub leases: HashMap<ItemId, Lease>,
    /// Item indices changed since loading, to write back.
    pub dirty: Vec<usize>,
}

/// A query whose values are bound one after another, for either database.
pub(crate) type Bound<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

impl JobRow {
    /// Binds the row's values to `query`, in [`JOB_COLUMNS`] order.
    pub(crate) fn bind_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.job_id)
            .bind(self.owner)
            .bind(self.status)
            .bind(self.progress)
            .bind(self.model)
            .bind(self.face_limit)
            .bind(self.texture)
            .bind(self.idempotency_key)
            .bind(self.cancel_requested)
            .bind(self.created_at_ms)
            .bind(self.updated_at_ms)
    }
}

impl JobRow {
    /// Binds what a change may alter, in the order of the stores' job
    /// `UPDATE`: status, progress, cancel_requested, updated_at_ms, then the
    /// job id of its `WHERE`.
    pub(crate) fn bind_update_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.status)
            .bind(self.progress)
            .bind(self.cancel_requested)
            .bind(self.updated_at_ms)
            .bind(self.job_id)
    }
}

impl ItemRow {
    /// Binds what a change may alter, in the order of the stores' item
    /// `UPDATE` (status through updated_at_ms), then the item id of its
    /// `WHERE`.
    pub(crate) fn bind_update_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.status)
            .bind(self.progress)
            .bind(self.error_code)
            .bind(self.error_message)
            .bind(self.model_key)
            .bind(self.preview_key)
            .bind(self.remote_request_id)
            .bind(self.attempts)
            .bind(self.lease_token)
            .bind(self.lease_expires_at_ms)
            .bind(self.updated_at_ms)
            .bind(self.item_id)
    }

    /// Binds the row's values to `query`, in [`ITEM_COLUMNS`] order.
    pub(crate) fn bind_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.item_id)
            .bind(self.job_id)
            .bind(self.position)
            .bind(self.filename)
            .bind(self.content_type)
            .bind(self.size_bytes)
            .bind(self.width)
            .bind(self.height)
            .bind(self.upload_key)
            .bind(self.status)
            .bind(self.progress)
            .bind(self.error_code)
            .bind(self.error_message)
            .bind(self.model_key)
            .bind(self.preview_key)
            .bind(self.remote_request_id)
            .bind(self.attempts)
            .bind(self.lease_token)
            .bind(self.lease_expires_at_ms)
            .bind(self.updated_at_ms)
    }
}

impl JobRow {
    /// The row for a new job.
    pub(crate) fn from_job(job: &Job) -> Self {
        JobRow {
            job_id: job.job_id.to_string(),
            owner: job.owner.as_str().to_owned(),
            status: job.status.as_str().to_owned(),
            progress: i64::from(job.progress.get()),
            model: job.options.model.as_str().to_owned(),
            face_limit: job.options.face_limit.map(|f| i64::from(f.get())),
            texture: job.options.texture.as_str().to_owned(),
            idempotency_key: job.idempotency_key.clone(),
            cancel_requested: job.cancel_requested,
            created_at_ms: to_ms(job.created_at),
            updated_at_ms: to_ms(job.updated_at),
        }
    }
}

impl ItemRow {
    /// The row for an item at `position` of `job`, with its lease.
    pub(crate) fn from_item(
        job: JobId,
        position: usize,
        item: &Item,
        lease: Option<&Lease>,
    ) -> Self {
        ItemRow {
            item_id: item.item_id.to_string(),
            job_id: job.to_string(),
            position: position as i64,
            filename: item.filename.as_str().to_owned(),
            content_type: item.content_type.mime().to_owned(),
            size_bytes: i64::try_from(item.size_bytes).unwrap_or(i64::MAX),
            width: i64::from(item.width),
            height: i64::from(item.height),
            upload_key: item.upload_key.as_str().to_owned(),
            status: item.status.as_str().to_owned(),
            progress: i64::from(item.progress.get()),
            error_code: item.error.as_ref().map(|e| e.code.clone()),
            error_message: item.error.as_ref().map(|e| e.message.clone()),
            model_key: item.model_key.as_ref().map(|k| k.as_str().to_owned()),
            preview_key: item.preview_key.as_ref().map(|k| k.as_str().to_owned()),
            remote_request_id: item.remote_request_id.clone(),
            attempts: i64::from(item.attempts),
            lease_token: lease.map(|l| l.token.as_str().to_owned()),
            lease_expires_at_ms: lease.map(|l| to_ms(l.expires_at)),
            updated_at_ms: to_ms(item.updated_at),
        }
    }

    fn into_item(self) -> Result<(Item, Option<Lease>), StoreError> {
        let item_id = ItemId::parse(&self.item_id).map_err(|e| corrupt("item id", e))?;
        let filename = DisplayName::sanitize(&self.filename);
        if filename.as_str() != self.filename {
            return Err(corrupt("item filename", "not a sanitised display name"));
        }
        let content_type = ImageKind::from_mime(&self.content_type)
            .filter(|k| k.mime() == self.content_type)
            .ok_or_else(|| corrupt("item content type", "unknown image kind"))?;
        let status = ItemStatus::parse(&self.status)
            .ok_or_else(|| corrupt("item status", "unknown status"))?;
        let error = match (self.error_code, self.error_message) {
            (Some(code), Some(message)) => Some(ItemError { code, message }),
            (None, None) => None,
            _ => return Err(corrupt("item error", "code and message must come together")),
        };
        let lease = match (self.lease_token, self.lease_expires_at_ms) {
            (Some(token), Some(ms)) => Some(Lease {
                token: LeaseToken::from_stored(token),
                expires_at: from_ms(ms, "lease expiry")?,
            }),
            (None, None) => None,
            _ => return Err(corrupt("item lease", "token and expiry must come together")),
        };
        let item = Item {
            item_id,
            filename,
            content_type,
            size_bytes: int_of(self.size_bytes, "item size")?,
            width: int_of(self.width, "item width")?,
            height: int_of(self.height, "item height")?,
            upload_key: key_of(&self.upload_key, "item upload key")?,
            status,
            progress: progress_of(self.progress, "item progress")?,
            error,
            model_key: self
                .model_key
                .as_deref()
                .map(|k| key_of(k, "item model key"))
                .transpose()?,
            preview_key: self
                .preview_key
                .as_deref()
                .map(|k| key_of(k, "item preview key"))
                .transpose()?,
            remote_request_id: self.remote_request_id,
            attempts: int_of(self.attempts, "item attempts")?,
            updated_at: from_ms(self.updated_at_ms, "item updated_at")?,
        };
        Ok((item, lease))
    }
}

/// Parses a stored job and its items (in position order) strictly.
///
/// # Errors
/// [`StoreError::Corrupt`] when any stored value fails its domain parser.
pub(crate) fn load_job(row: JobRow, items: Vec<ItemRow>) -> Result<LoadedJob, StoreError> {
    let job_id = JobId::parse(&row.job_id).map_err(|e| corrupt("job id", e))?;
    let status = JOB_STATUSES
        .into_iter()
        .find(|s| s.as_str() == row.status)
        .ok_or_else(|| corrupt("job status", "unknown status"))?;
    let texture = Texture::parse(&row.texture)
        .ok()
        .filter(|t| t.as_str() == row.texture)
        .ok_or_else(|| corrupt("job texture", "unknown texture"))?;
    let face_limit = row
        .face_limit
        .map(|f| {
            int_of::<u32>(f, "job face limit")
                .and_then(|f| FaceLimit::new(f).map_err(|e| corrupt("job face limit", e)))
        })
        .transpose()?;
    let mut leases = HashMap::new();
    let mut parsed = Vec::with_capacity(items.len());
    for (expected, item) in items.into_iter().enumerate() {
        if item.job_id != row.job_id || item.position != expected as i64 {
            return Err(corrupt("item position", "items out of order"));
        }
        let (item, lease) = item.into_item()?;
        if let Some(lease) = lease {
            leases.insert(item.item_id, lease);
        }
        parsed.push(item);
    }
    if parsed.is_empty() {
        return Err(corrupt("job", "has no items"));
    }
    let job = Job {
        job_id,
        owner: ApiKeyId::parse(&row.owner).map_err(|e| corrupt("job owner", e))?,
        status,
        progress: progress_of(row.progress, "job progress")?,
        options: GenerateOptions {
            model: ModelName::parse(&row.model).map_err(|e| corrupt("job model", e))?,
            face_limit,
            texture,
        },
        idempotency_key: row.idempotency_key,
        cancel_requested: row.cancel_requested,
        created_at: from_ms(row.created_at_ms, "job created_at")?,
        updated_at: from_ms(row.updated_at_ms, "job updated_at")?,
        items: parsed,
    };
    Ok(LoadedJob {
        job,
        leases,
        dirty: Vec::new(),
    })
}

/// Groups item rows (ordered by job, then position) under their job rows.
/// A new job as reading it back after its insert would give it: through the
/// same rows and the same checks, without the round trips of reading.
pub(crate) fn as_stored(job: &Job) -> Result<Job, StoreError> {
    as_loaded(job).map(|loaded| loaded.job)
}

/// [`as_stored`] with its (no) leases, ready to change.
fn as_loaded(job: &Job) -> Result<LoadedJob, StoreError> {
    let items = job
        .items
        .iter()
        .enumerate()
        .map(|(position, item)| ItemRow::from_item(job.job_id, position, item, None))
        .collect();
    load_job(JobRow::from_job(job), items)
}

pub(crate) fn load_jobs(rows: Vec<JobRow>, items: Vec<ItemRow>) -> Result<Vec<Job>, StoreError> {
    let mut by_job: HashMap<String, Vec<ItemRow>> = HashMap::new();
    for item in items {
        by_job.entry(item.job_id.clone()).or_default().push(item);
    }
    rows.into_iter()
        .map(|row| {
            let items = by_job.remove(&row.job_id).unwrap_or_default();
            load_job(row, items).map(|l| l.job)
        })
        .collect()
}

/// The job a [`NewJob`] becomes: queued, progress 0, times `now`.
pub(crate) fn new_job(new: NewJob, now: DateTime<Utc>) -> Result<Job, StoreError> {
    new.into_job(now)
}

impl LoadedJob {
    /// The index of `item` when `token` holds it: the item is running and its
    /// lease carries this token.
    pub(crate) fn held(&self, item: ItemId, token: &LeaseToken) -> Option<usize> {
        let idx = self.job.items.iter().position(|i| i.item_id == item)?;
        let running = self.job.items[idx].status == ItemStatus::Running;
        let ours = self.leases.get(&item).is_some_and(|l| l.token == *token);
        (running && ours).then_some(idx)
    }

    /// Makes `change` to `item` now when `token` holds it; `Ok(false)`, with
    /// nothing changed, when it does not (the lease was lost or the item
    /// ended).
    pub(crate) fn apply_held(
        &mut self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        let Some(idx) = self.held(item, token) else {
            return Ok(false);
        };
        self.apply(idx, change, now())?;
        Ok(true)
    }

    /// Marks item `idx` changed at `now` and recomputes the job.
    fn touch(&mut self, idx: usize, now: DateTime<Utc>) {
        self.job.items[idx].updated_at = now;
        if !self.dirty.contains(&idx) {
            self.dirty.push(idx);
        }
        self.job.updated_at = now;
        self.job.refresh();
    }

    /// Moves item `idx` to `to`, checking the state machine.
    ///
    /// Every fallible change (`claim`, `fail_worker_lost`, `finish`,
    /// `cancel`'s first item) calls this before it writes anything, so a
    /// change that fails leaves the job as it was: the group commit relies
    /// on that instead of copying each job before changing it.
    fn set_status(&mut self, idx: usize, to: ItemStatus) -> Result<(), StoreError> {
        let item = &mut self.job.items[idx];
        if !item.status.can_become(to) {
            return Err(StoreError::Backend(format!(
                "item {} cannot go from {} to {}",
                item.item_id,
                item.status.as_str(),
                to.as_str()
            )));
        }
        item.status = to;
        Ok(())
    }

    /// The lease of item `idx`, if any.
    pub(crate) fn lease_of(&self, idx: usize) -> Option<&Lease> {
        self.leases.get(&self.job.items[idx].item_id)
    }

    /// Claims item `idx` (queued, or running with an expired lease).
    pub(crate) fn claim(
        &mut self,
        idx: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, StoreError> {
        self.set_status(idx, ItemStatus::Running)?;
        let item = &mut self.job.items[idx];
        item.attempts = item.attempts.saturating_add(1);
        let granted = Lease {
            token: LeaseToken::generate(),
            expires_at: lease_until(now, lease),
        };
        self.leases.insert(item.item_id, granted.clone());
        self.touch(idx, now);
        Ok(granted)
    }

    /// Fails item `idx`, whose worker lost its lease too often; counted
    /// first (see [`worker_lost_count`]).
    pub(crate) fn fail_worker_lost(
        &mut self,
        idx: usize,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        WORKER_LOST.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.set_status(idx, ItemStatus::Failed)?;
        let item = &mut self.job.items[idx];
        item.error = Some(ItemError {
            code: ErrorCode::WorkerLost.into(),
            message: format!(
                "the worker stopped during each of {} attempts",
                item.attempts
            ),
        });
        self.leases.remove(&item.item_id);
        self.touch(idx, now);
        Ok(())
    }

    /// The claim of item `idx` under `lease`, with the job as it now is.
    pub(crate) fn into_claim(self, idx: usize, lease: Lease) -> Claim {
        let item = self.job.items[idx].clone();
        Claim {
            job: self.job,
            item,
            token: lease.token,
            lease_expires_at: lease.expires_at,
        }
    }

    /// Makes `change` to held item `idx`.
    pub(crate) fn apply(
        &mut self,
        idx: usize,
        change: HeldChange,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match change {
            HeldChange::Renew(lease) => self.renew(idx, lease, now),
            HeldChange::Progress(to) => self.progress(idx, to, now),
            HeldChange::RemoteRequest(id) => self.remote_request(idx, id, now),
            HeldChange::Finish(outcome) => return self.finish(idx, outcome, now),
        }
        Ok(())
    }

    /// Extends the lease of held item `idx`: only its expiry changes. The
    /// item's and job's `updated_at` stay as they are (a renewal changes
    /// nothing a client sees), so the batched `renew_leases` of both SQL
    /// stores, which writes `lease_expires_at_ms` alone, changes exactly
    /// what this does.
    ///
    /// Keep the two in step: whatever this changes, they must change too.
    pub(crate) fn renew(&mut self, idx: usize, lease: Duration, now: DateTime<Utc>) {
        let id = self.job.items[idx].item_id;
        if let Some(l) = self.leases.get_mut(&id) {
            l.expires_at = lease_until(now, lease);
        }
        if !self.dirty.contains(&idx) {
            self.dirty.push(idx);
        }
    }

    /// Raises held item `idx`'s progress (a running item stays below 100:
    /// 100 means succeeded).
    fn progress(&mut self, idx: usize, to: Progress, now: DateTime<Utc>) {
        let item = &mut self.job.items[idx];
        item.progress = item.progress.advance(to.min(Progress::clamped(99)));
        self.touch(idx, now);
    }

    /// Records held item `idx`'s remote request id.
    fn remote_request(&mut self, idx: usize, request_id: String, now: DateTime<Utc>) {
        self.job.items[idx].remote_request_id = Some(request_id);
        self.touch(idx, now);
    }

    /// Ends or releases held item `idx`, revoking its lease.
    pub(crate) fn finish(
        &mut self,
        idx: usize,
        outcome: ItemOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match outcome {
            ItemOutcome::Succeeded {
                model_key,
                preview_key,
            } => {
                self.set_status(idx, ItemStatus::Succeeded)?;
                let item = &mut self.job.items[idx];
                item.progress = Progress::DONE;
                item.model_key = Some(model_key);
                item.preview_key = preview_key;
            }
            ItemOutcome::Failed(error) => {
                self.set_status(idx, ItemStatus::Failed)?;
                self.job.items[idx].error = Some(error);
            }
            ItemOutcome::Release => self.set_status(idx, ItemStatus::Queued)?,
        }
        let id = self.job.items[idx].item_id;
        self.leases.remove(&id);
        self.touch(idx, now);
        Ok(())
    }

    /// Requests cancellation: queued and running items become cancelled.
    pub(crate) fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.job.status.is_terminal() {
            // Nothing to cancel; leave `updated_at` alone so cleanup ages it.
            return Ok(());
        }
        self.job.cancel_requested = true;
        for idx in 0..self.job.items.len() {
            if !self.job.items[idx].status.is_terminal() {
                self.set_status(idx, ItemStatus::Cancelled)?;
                let id = self.job.items[idx].item_id;
                self.leases.remove(&id);
                self.touch(idx, now);
            }
        }
        self.job.updated_at = now;
        self.job.refresh();
        Ok(())
    }

    /// The rows of the changed items.
    pub(crate) fn dirty_rows(&self) -> Vec<ItemRow> {
        self.dirty
            .iter()
            .map(|&idx| {
                ItemRow::from_item(
                    self.job.job_id,
                    idx,
                    &self.job.items[idx],
                    self.lease_of(idx),
                )
            })
            .collect()
    }
}

/// The items of `chunk` that a batched renewal did not renew, in `chunk`
/// order: those whose `(item_id, lease_token)` is not among the `renewed`
/// rows the statement returned.
pub(crate) fn not_renewed(
    chunk: &[(ItemId, LeaseToken)],
    renewed: Vec<(String, String)>,
) -> Vec<ItemId> {
    let renewed: HashMap<String, String> = renewed.into_iter().collect();
    chunk
        .iter()
        .filter(|(item, token)| {
            renewed.get(&item.to_string()).map(String::as_str) != Some(token.as_str())
        })
        .map(|(item, _)| *item)
        .collect()
}

/// The queue's counts ([`JobStore::stats`](image2model_core::ports::JobStore::stats)):
/// the same statement on either SQL store.
pub(crate) async fn queue_stats<DB>(pool: &sqlx::Pool<DB>) -> Result<QueueStats, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    (i64, i64, i64): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let (queued, running, jobs): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM items WHERE status = 'queued'), \
                (SELECT COUNT(*) FROM items WHERE status = 'running'), \
                (SELECT COUNT(*) FROM jobs)",
    )
    .fetch_one(pool)
    .await
    .map_err(db_error("counting the queue"))?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(QueueStats {
        queued: count(queued),
        running: count(running),
        jobs: count(jobs),
    })
}

/// Checks that the database answers
/// ([`JobStore::ping`](image2model_core::ports::JobStore::ping)).
pub(crate) async fn ping<DB>(pool: &sqlx::Pool<DB>) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(db_error("ping"))?;
    Ok(())
}

/// The statement of a [`ListQuery`] page (newest first, one row more than
/// `limit` to tell whether another page follows): the same on both SQL
/// stores.
pub(crate) fn list_statement<DB>(query: &ListQuery, limit: u32) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
    if let Some(owner) = &query.owner {
        q.push(" AND owner = ").push_bind(owner.as_str().to_owned());
    }
    if let Some(cursor) = query.cursor {
        q.push(" AND job_id < ").push_bind(cursor.to_string());
    }
    if query.active_only {
        // The statuses a job has before it ends (JobStatus::is_terminal).
        q.push(" AND status IN ('queued', 'running')");
    }
    q.push(" ORDER BY job_id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    q
}

/// The rows of a page that [`list_statement`] fetched, at most `limit`, and
/// whether more follow.
pub(crate) fn page_rows(mut rows: Vec<JobRow>, limit: u32) -> (Vec<JobRow>, bool) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, more)
}

/// The page of `jobs` (a whole page when `more` follow).
pub(crate) fn page(jobs: Vec<Job>, more: bool) -> JobPage {
    let next_cursor = if more {
        jobs.last().map(|j| j.job_id)
    } else {
        None
    };
    JobPage { jobs, next_cursor }
}

/// The statement that adds a charge to one `(owner, period)` row, with the
/// engine's four placeholders: the one text both charge paths run (the
/// checked one below, with `RETURNING`, and SQLite's one-command create).
macro_rules! add_usage_sql {
    ($p1:literal, $p2:literal, $p3:literal, $p4:literal) => {
        concat!(
            "INSERT INTO key_usage (owner, period, items, spend_micros) VALUES (",
            $p1,
            ", ",
            $p2,
            ", ",
            $p3,
            ", ",
            $p4,
            ") ON CONFLICT (owner, period) DO UPDATE SET ",
            "items = key_usage.items + excluded.items, ",
            "spend_micros = key_usage.spend_micros + excluded.spend_micros"
        )
    };
}
pub(crate) use add_usage_sql;

/// The columns of `webhook_deliveries`, in [`DeliveryRow`] order.
pub(crate) const DELIVERY_COLUMNS: &str = "delivery_id, job_id, owner, url, status, attempts, \
     next_attempt_at_ms, lease_until_ms, last_error, last_status_code, delivered_at_ms, \
     created_at_ms, updated_at_ms";

/// The insert of one [`DeliveryRow`]: with `$1`…`$13` when `numbered`, else
/// with `?` (SQLite's one-command job insert, whose statements take their
/// arguments in turn).
pub(crate) fn delivery_insert_sql(numbered: bool) -> String {
    let params: Vec<String> = (1..=13)
        .map(|n| {
            if numbered {
                format!("${n}")
            } else {
                "?".to_owned()
            }
        })
        .collect();
    format!(
        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) VALUES ({})",
        params.join(", ")
    )
}

/// A row of `webhook_deliveries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub delivery_id: String,
    pub job_id: String,
    pub owner: String,
    pub url: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_status_code: Option<i64>,
    pub delivered_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl DeliveryRow {
    /// The row of `delivery`, not leased.
    pub(crate) fn from_delivery(d: &Delivery) -> Self {
        DeliveryRow {
            delivery_id: d.delivery_id.to_string(),
            job_id: d.job_id.to_string(),
            owner: d.owner.as_str().to_owned(),
            url: d.url.as_str().to_owned(),
            status: d.status.as_str().to_owned(),
            attempts: i64::from(d.attempts),
            next_attempt_at_ms: to_ms(d.next_attempt_at),
            lease_until_ms: None,
            last_error: d.last_error.clone(),
            last_status_code: d.last_status_code.map(i64::from),
            delivered_at_ms: d.delivered_at.map(to_ms),
            created_at_ms: to_ms(d.created_at),
            updated_at_ms: to_ms(d.updated_at),
        }
    }

    /// Binds the row's values to `query`, in [`DELIVERY_COLUMNS`] order.
    pub(crate) fn bind_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.delivery_id)
            .bind(self.job_id)
            .bind(self.owner)
            .bind(self.url)
            .bind(self.status)
            .bind(self.attempts)
            .bind(self.next_attempt_at_ms)
            .bind(self.lease_until_ms)
            .bind(self.last_error)
            .bind(self.last_status_code)
            .bind(self.delivered_at_ms)
            .bind(self.created_at_ms)
            .bind(self.updated_at_ms)
    }

    /// The delivery, strictly parsed.
    pub(crate) fn into_delivery(self) -> Result<Delivery, StoreError> {
        const WHAT: &str = "a webhook delivery";
        Ok(Delivery {
            delivery_id: DeliveryId::parse(&self.delivery_id).map_err(|e| corrupt(WHAT, e))?,
            job_id: JobId::parse(&self.job_id).map_err(|e| corrupt(WHAT, e))?,
            owner: ApiKeyId::parse(&self.owner).map_err(|e| corrupt(WHAT, e))?,
            url: CallbackUrl::from_stored(&self.url).map_err(|e| corrupt(WHAT, e))?,
            status: DeliveryStatus::parse(&self.status)
                .ok_or_else(|| corrupt(WHAT, format!("unknown status {:?}", self.status)))?,
            attempts: int_of(self.attempts, WHAT)?,
            next_attempt_at: from_ms(self.next_attempt_at_ms, WHAT)?,
            last_error: self.last_error,
            last_status_code: self.last_status_code.map(|c| int_of(c, WHAT)).transpose()?,
            delivered_at: self.delivered_at_ms.map(|t| from_ms(t, WHAT)).transpose()?,
            created_at: from_ms(self.created_at_ms, WHAT)?,
            updated_at: from_ms(self.updated_at_ms, WHAT)?,
        })
    }
}

/// The delivery a new job is created with, if it named a callback.
pub(crate) fn new_delivery(callback: Option<NewCallback>, job: &Job) -> Option<Delivery> {
    callback.map(|c| c.into_delivery(job.job_id, job.owner.clone(), job.created_at))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use image2model_core::domain::{ApiKeyId, BlobKey, ItemError, JobId};
    use image2model_core::ports::ItemOutcome;
    use image2model_core::testing::conformance::job_store::new_job as new_test_job;

    use super::*;

    #[test]
    fn a_change_the_state_machine_refuses_leaves_the_job_as_it_was() {
        let now = now();
        let job = new_job(
            new_test_job(JobId::new(), &ApiKeyId::bootstrap_user(), 3),
            now,
        )
        .unwrap();
        let mut loaded = as_loaded(&job).unwrap();
        let later = now + chrono::Duration::seconds(5);
        // Item 0 runs and succeeds; item 1 stays queued.
        loaded.claim(0, Duration::from_secs(60), now).unwrap();
        let model_key = BlobKey::model(job.job_id, job.items[0].item_id);
        let succeeded = || ItemOutcome::Succeeded {
            model_key: model_key.clone(),
            preview_key: None,
        };
        loaded.finish(0, succeeded(), now).unwrap();
        let before = format!("{loaded:?}");

        let failed = ItemOutcome::Failed(ItemError {
            code: ErrorCode::WorkerLost.into(),
            message: "gone".into(),
        });
        assert!(loaded.claim(0, Duration::from_secs(60), later).is_err());
        assert!(loaded.fail_worker_lost(0, later).is_err());
        assert!(loaded.finish(0, failed, later).is_err());
        assert!(loaded.finish(1, succeeded(), later).is_err());
        assert!(loaded.finish(1, ItemOutcome::Release, later).is_err());
        assert_eq!(
            format!("{loaded:?}"),
            before,
            "a refused change wrote something"
        );
    }
}
