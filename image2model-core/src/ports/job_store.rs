//! Job metadata: jobs, items, the work queue with leases.

use crate::error_code::ErrorCode;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    ApiKeyId, BlobKey, Charge, DisplayName, GenerateOptions, ImageKind, Item, ItemError, ItemId,
    ItemStatus, Job, JobId, JobStatus, ModelName, NewCallback, OwnerUsage, Periods, Progress,
    QuotaExceeded, Usage,
};

/// A job to create, with its items (whose images are already stored).
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Server-made id.
    pub job_id: JobId,
    /// The key creating it.
    pub owner: ApiKeyId,
    /// Generation options.
    pub options: GenerateOptions,
    /// The client's `Idempotency-Key`, unique per owner.
    pub idempotency_key: Option<String>,
    /// Its items, in upload order (at least one).
    pub items: Vec<NewItem>,
    /// What the job charges its owner, counted in the same transaction
    /// (`None`: nothing counted, as for jobs a library makes for itself).
    pub charge: Option<Charge>,
    /// The webhook delivery told of the job's end, written in the same
    /// transaction (see [`CallbackStore`](super::CallbackStore)); only for
    /// stores whose [`JobStore::callbacks`] is `Some`.
    pub callback: Option<NewCallback>,
}

impl NewJob {
    /// The job this becomes when stored: queued, progress 0, times `now`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] for a job without items.
    pub fn into_job(self, now: DateTime<Utc>) -> Result<Job, StoreError> {
        if self.items.is_empty() {
            return Err(StoreError::Backend("a job needs at least one item".into()));
        }
        let items = self
            .items
            .into_iter()
            .map(|i| Item {
                item_id: i.item_id,
                filename: i.filename,
                content_type: i.content_type,
                size_bytes: i.size_bytes,
                width: i.width,
                height: i.height,
                upload_key: i.upload_key,
                status: ItemStatus::Queued,
                progress: Progress::ZERO,
                error: None,
                model_key: None,
                preview_key: None,
                remote_request_id: None,
                attempts: 0,
                updated_at: now,
            })
            .collect();
        Ok(Job {
            job_id: self.job_id,
            owner: self.owner,
            status: JobStatus::Queued,
            progress: Progress::ZERO,
            options: self.options,
            idempotency_key: self.idempotency_key,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
            items,
        })
    }
}

/// One item of a [`NewJob`].
#[derive(Debug, Clone)]
pub struct NewItem {
    /// Server-made id.
    pub item_id: ItemId,
    /// Display name.
    pub filename: DisplayName,
    /// Image kind from the bytes.
    pub content_type: ImageKind,
    /// Image size.
    pub size_bytes: u64,
    /// Width from the header.
    pub width: u32,
    /// Height from the header.
    pub height: u32,
    /// Where the image is stored.
    pub upload_key: BlobKey,
}

/// What [`JobStore::create_job`] did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// The job was created (queued).
    Created(Job),
    /// The owner already has a job with this idempotency key: here it is, and
    /// nothing was created.
    Existing(Job),
    /// The charge would pass one of the owner's limits: nothing was created
    /// and nothing counted.
    OverQuota(QuotaExceeded),
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only this owner's jobs; `None` for every owner (admin).
    pub owner: Option<ApiKeyId>,
    /// At most this many (the store caps it at 100).
    pub limit: u32,
    /// Only jobs older than this one (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
    /// Only jobs that have not ended (`queued` or `running`): what an
    /// owner's event stream follows.
    pub active_only: bool,
}

/// One page of [`JobStore::list_jobs`].
#[derive(Debug, Clone)]
pub struct JobPage {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// A random token that proves a worker holds an item's lease.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A new random token.
    #[must_use]
    pub fn generate() -> Self {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        Self(hex::encode(bytes))
    }

    /// Wraps a stored token.
    #[must_use]
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The token as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseToken({}…)", &self.0[..self.0.len().min(6)])
    }
}

/// How [`JobStore::claim_next`] claims.
#[derive(Debug, Clone)]
pub struct ClaimOptions {
    /// How long the claim holds without renewal.
    pub lease: Duration,
    /// An item whose lease expired after this many claims is failed with
    /// `worker_lost` instead of being claimed again.
    pub max_attempts: u32,
    /// Only items of jobs whose model is one of these; `None` for any model.
    /// A worker passes the models of the generators that have room, so an
    /// item it could not start at once stays claimable by other workers.
    pub models: Option<Arc<[ModelName]>>,
}

/// An item claimed by a worker.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job, as it was at the claim (the claimed item already `running`).
    pub job: Job,
    /// The claimed item.
    pub item: Item,
    /// Proves the lease in later calls.
    pub token: LeaseToken,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// A change to an item that a lease holds ([`JobStore::change_held`]).
#[derive(Debug, Clone)]
pub enum HeldChange {
    /// Extend the lease to `now + this`.
    Renew(Duration),
    /// Raise the item's progress (never lower it).
    Progress(crate::domain::Progress),
    /// Record the generator's remote request id.
    RemoteRequest(String),
    /// End (or release) the item.
    Finish(ItemOutcome),
}

/// How a claimed item ends.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// The model (and maybe a preview) is stored.
    Succeeded {
        /// Where the GLB is.
        model_key: BlobKey,
        /// Where the preview is, if any.
        preview_key: Option<BlobKey>,
    },
    /// It failed for good.
    Failed(ItemError),
    /// The worker gives it back (shutting down): it becomes `queued` again,
    /// keeping its progress and remote request id.
    Release,
}

/// Queue figures for health views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Items waiting.
    pub queued: u64,
    /// Items being generated.
    pub running: u64,
    /// Jobs in all.
    pub jobs: u64,
}

/// A job store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    /// A unique value (id, hash, idempotency key) is already taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data did not parse (a bug or tampering).
    #[error("corrupt job store row: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("job store failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// The stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => ErrorCode::StoreUnavailable.as_str(),
            StoreError::Conflict(_) => ErrorCode::Conflict.as_str(),
            StoreError::Corrupt(_) | StoreError::Backend(_) => ErrorCode::InternalError.as_str(),
        }
    }
}

/// Persists jobs and items and hands queued items to workers under leases.
///
/// Contract (checked by `testing::conformance::job_store`):
/// - `create_job` is atomic; with an idempotency key already used by the same
///   owner it creates nothing and returns [`CreateOutcome::Existing`].
/// - Every change to an item recomputes its job's `status` and `progress`
///   ([`Job::refresh`]); progress never goes down; terminal items never change.
/// - `claim_next` is safe under concurrency (two workers never hold the same
///   item): it takes the oldest claimable item, where claimable means `queued`,
///   or `running` with an expired lease (a crashed worker). It sets the item
///   `running`, a fresh token, `lease_expires_at = now + lease` and
///   `attempts + 1`. Items of a job with `cancel_requested` are never claimed.
///   With [`ClaimOptions::models`] set, only items of jobs with one of those
///   models are claimable (and only those are failed as `worker_lost`).
/// - `renew_leases` renews every listed lease its token still holds, as
///   `renew_lease` would, and returns the items it did not renew.
/// - Calls that take a [`LeaseToken`] return `Ok(false)` and change nothing when
///   the token no longer holds the item (lease taken over, item cancelled or
///   deleted).
/// - `cancel_job` sets `cancel_requested`, turns queued and running items
///   `cancelled` (revoking their leases) and leaves ended items alone.
/// - `delete_job` removes the job and its items and returns them as they were.
/// - With a [`NewJob::charge`], `create_job` adds its items and spend to the
///   owner's counts for the charge's day and month in the same transaction,
///   and creates nothing (returning [`CreateOutcome::OverQuota`]) when the
///   counts would pass the charge's limits; concurrent creates (from any
///   number of processes on one database) never both pass the last unit.
///   An idempotent replay charges nothing.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait JobStore: Send + Sync + fmt::Debug {
    /// Creates a queued job with its items.
    async fn create_job(&self, job: NewJob) -> Result<CreateOutcome, StoreError>;

    /// One job with its items.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// An owner's counts for the day and month of `periods`.
    async fn usage(&self, owner: &ApiKeyId, periods: Periods) -> Result<Usage, StoreError>;

    /// Every owner's counts for the day and month of `periods` (owners
    /// without use this month left out), by owner.
    async fn usage_by_owner(&self, periods: Periods) -> Result<Vec<OwnerUsage>, StoreError>;

    /// The owner's job with this idempotency key.
    async fn find_by_idempotency_key(
        &self,
        owner: &ApiKeyId,
        key: &str,
    ) -> Result<Option<Job>, StoreError>;

    /// Jobs newest first.
    async fn list_jobs(&self, query: &ListQuery) -> Result<JobPage, StoreError>;

    /// Claims the oldest claimable item.
    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError>;

    /// How many items claims have failed as `worker_lost` in this process
    /// so far (counted before each failure is written, and by every store of
    /// the kind alike); `None`, the default, when the store does not count.
    /// [`CachedJobStore`](crate::job_cache::CachedJobStore) reads it around
    /// a claim: when it did not move, the claim changed its own job only.
    fn worker_lost_count(&self) -> Option<u64> {
        None
    }

    /// Changes an item its token holds, as [`HeldChange`] says, in one
    /// write; `Ok(false)` (and nothing changed) when the token no longer
    /// holds it. The one write a store implements for the four below.
    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError>;

    /// Extends a lease to `now + lease`.
    async fn renew_lease(
        &self,
        item: ItemId,
        token: &LeaseToken,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        self.change_held(item, token, HeldChange::Renew(lease))
            .await
    }

    /// Extends many leases to `now + lease` at once (a worker renews all its
    /// items with one call per interval). Returns the items whose token no
    /// longer holds them; those are left unchanged.
    ///
    /// The default renews one by one; stores override it with one statement
    /// per batch.
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        let mut lost = Vec::new();
        for (item, token) in leases {
            if !self.renew_lease(*item, token, lease).await? {
                lost.push(*item);
            }
        }
        Ok(lost)
    }

    /// Raises a running item's progress (never lowers it).
    async fn record_progress(
        &self,
        item: ItemId,
        token: &LeaseToken,
        progress: crate::domain::Progress,
    ) -> Result<bool, StoreError> {
        self.change_held(item, token, HeldChange::Progress(progress))
            .await
    }

    /// Persists the generator's remote request id.
    async fn record_remote_request(
        &self,
        item: ItemId,
        token: &LeaseToken,
        request_id: &str,
    ) -> Result<bool, StoreError> {
        let change = HeldChange::RemoteRequest(request_id.to_owned());
        self.change_held(item, token, change).await
    }

    /// Ends (or releases) a claimed item.
    async fn finish_item(
        &self,
        item: ItemId,
        token: &LeaseToken,
        outcome: ItemOutcome,
    ) -> Result<bool, StoreError> {
        self.change_held(item, token, HeldChange::Finish(outcome))
            .await
    }

    /// Requests cancellation; returns the job after it, `None` if missing.
    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Removes a job; returns it as it was, `None` if missing.
    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError>;

    /// Ended jobs last updated before `before`, oldest first, at most `limit`.
    async fn ended_jobs_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Queue figures.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// This store's webhook deliveries and settings, when it keeps them
    /// (memory, SQLite and Postgres do; a store that does not refuses a
    /// [`NewJob::callback`] with [`StoreError::Backend`]). Wrappers return
    /// the store they wrap's.
    fn callbacks(&self) -> Option<Arc<dyn super::CallbackStore>> {
        None
    }
}
