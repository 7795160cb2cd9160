//! In-memory [`JobStore`] and [`BlobStore`]: for tests, examples and
//! embedding without persistence. They honour the same contracts as the real
//! stores (checked by the same conformance suites).

use crate::error_code::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::domain::{
    ApiKeyId, BlobKey, BlobPrefix, CallbackUrl, Counts, Delivery, DeliveryStatus, ItemError,
    ItemId, ItemStatus, Job, JobId, KeyLimits, MicroUsd, OwnerUsage, Periods, Progress, Usage,
    WebhookSettings,
};
use crate::ports::{
    AttemptOutcome, AuditEvent, AuditLog, BlobError, BlobMeta, BlobObject, BlobStore, ByteStream,
    CallbackStore, Claim, ClaimOptions, CreateOutcome, DeliveryClaim, DeliveryQuery, HeldChange,
    ItemOutcome, JobPage, JobStore, KeyStore, LeaseToken, ListQuery, MAX_DELIVERY_PAGE, NewJob,
    QueueStats, StoreError, StoredKey, bytes_stream,
};

#[derive(Debug, Clone)]
struct Lease {
    token: LeaseToken,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct JobsState {
    jobs: BTreeMap<JobId, Job>,
    leases: BTreeMap<ItemId, Lease>,
    item_jobs: BTreeMap<ItemId, JobId>,
    /// Counts by owner and period (`YYYY-MM-DD` or `YYYY-MM`).
    usage: BTreeMap<(ApiKeyId, String), Counts>,
    /// Webhook deliveries by job, with the lease (ms) of a claim.
    deliveries: BTreeMap<JobId, (Delivery, Option<i64>)>,
    /// Webhook settings by owner.
    webhooks: BTreeMap<ApiKeyId, WebhookSettings>,
    /// Items claims failed as `worker_lost`.
    worker_lost: u64,
}

/// A [`JobStore`] kept in memory, lost when dropped. Clones share one store.
#[derive(Debug, Default, Clone)]
pub struct MemoryJobStore {
    state: std::sync::Arc<Mutex<JobsState>>,
}

fn lease_until(lease: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

impl JobsState {
    /// The running item's job and index when `token` still holds it.
    fn usage(&self, owner: &ApiKeyId, periods: Periods) -> Usage {
        let counts = |period: String| {
            self.usage
                .get(&(owner.clone(), period))
                .copied()
                .unwrap_or_default()
        };
        Usage {
            day: counts(periods.day_key()),
            month: counts(periods.month_key()),
        }
    }

    fn held(&mut self, item: ItemId, token: &LeaseToken) -> Option<(&mut Job, usize)> {
        let lease = self.leases.get(&item)?;
        if lease.token != *token {
            return None;
        }
        let job_id = *self.item_jobs.get(&item)?;
        let job = self.jobs.get_mut(&job_id)?;
        let idx = job.items.iter().position(|i| i.item_id == item)?;
        (job.items[idx].status == ItemStatus::Running).then_some((job, idx))
    }
}

fn touch(job: &mut Job, idx: Option<usize>) {
    let now = Utc::now();
    if let Some(i) = idx {
        job.items[i].updated_at = now;
    }
    job.updated_at = now;
    job.refresh();
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create_job(&self, mut new: NewJob) -> Result<CreateOutcome, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = st
                .jobs
                .values()
                .find(|j| j.owner == new.owner && j.idempotency_key.as_deref() == Some(key))
        {
            return Ok(CreateOutcome::Existing(existing.clone()));
        }
        let owner = new.owner.clone();
        let charge = new.charge.clone();
        let callback = new.callback.take();
        let job = new.into_job(Utc::now())?;
        if let Some(charge) = charge {
            let usage = st.usage(&owner, charge.periods);
            if let Some(over) = charge.limits.check(&usage, charge.items, charge.spend) {
                return Ok(CreateOutcome::OverQuota(over));
            }
            for period in [charge.periods.day_key(), charge.periods.month_key()] {
                let counts = st.usage.entry((owner.clone(), period)).or_default();
                counts.items += charge.items;
                counts.spend = MicroUsd(counts.spend.0.saturating_add(charge.spend.0));
            }
        }
        for i in &job.items {
            st.item_jobs.insert(i.item_id, job.job_id);
        }
        if let Some(callback) = callback {
            let delivery = callback.into_delivery(job.job_id, owner, job.created_at);
            st.deliveries.insert(job.job_id, (delivery, None));
        }
        st.jobs.insert(job.job_id, job.clone());
        Ok(CreateOutcome::Created(job))
    }

    async fn usage(&self, owner: &ApiKeyId, periods: Periods) -> Result<Usage, StoreError> {
        Ok(self
            .state
            .lock()
            .expect("memory store lock")
            .usage(owner, periods))
    }

    async fn usage_by_owner(&self, periods: Periods) -> Result<Vec<OwnerUsage>, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        let month = periods.month_key();
        Ok(st
            .usage
            .keys()
            .filter(|(_, period)| *period == month)
            .map(|(owner, _)| OwnerUsage {
                owner: owner.clone(),
                usage: st.usage(owner, periods),
            })
            .collect())
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self
            .state
            .lock()
            .expect("memory store lock")
            .jobs
            .get(&id)
            .cloned())
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &ApiKeyId,
        key: &str,
    ) -> Result<Option<Job>, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        Ok(st
            .jobs
            .values()
            .find(|j| &j.owner == owner && j.idempotency_key.as_deref() == Some(key))
            .cloned())
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<JobPage, StoreError> {
        let limit = query.limit.clamp(1, 100) as usize;
        let st = self.state.lock().expect("memory store lock");
        let mut jobs: Vec<Job> = st
            .jobs
            .values()
            .rev()
            .filter(|j| query.owner.as_ref().is_none_or(|o| &j.owner == o))
            .filter(|j| query.cursor.is_none_or(|c| j.job_id < c))
            .filter(|j| !query.active_only || !j.status.is_terminal())
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.job_id)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    fn worker_lost_count(&self) -> Option<u64> {
        Some(self.state.lock().expect("memory store lock").worker_lost)
    }

    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError> {
        let mut guard = self.state.lock().expect("memory store lock");
        let st = &mut *guard;
        let now = Utc::now();
        let mut chosen = None;
        'jobs: for job in st.jobs.values_mut() {
            if job.cancel_requested || job.status.is_terminal() {
                continue;
            }
            // Another model's items are not touched at all: not claimed, and
            // not failed as `worker_lost` either (a worker with room for that
            // model will do it).
            if let Some(models) = &options.models
                && !models.contains(&job.options.model)
            {
                continue;
            }
            for idx in 0..job.items.len() {
                let item = &job.items[idx];
                let expired = item.status == ItemStatus::Running
                    && st
                        .leases
                        .get(&item.item_id)
                        .is_none_or(|l| l.expires_at <= now);
                if item.status == ItemStatus::Queued {
                    chosen = Some((job.job_id, idx));
                    break 'jobs;
                }
                if expired {
                    if item.attempts >= options.max_attempts {
                        st.worker_lost += 1;
                        let id = item.item_id;
                        let it = &mut job.items[idx];
                        it.status = ItemStatus::Failed;
                        it.error = Some(ItemError {
                            code: ErrorCode::WorkerLost.into(),
                            message: format!(
                                "the worker stopped during each of {} attempts",
                                it.attempts
                            ),
                        });
                        st.leases.remove(&id);
                        touch(job, Some(idx));
                        continue;
                    }
                    chosen = Some((job.job_id, idx));
                    break 'jobs;
                }
            }
        }
        let Some((job_id, idx)) = chosen else {
            return Ok(None);
        };
        let job = st.jobs.get_mut(&job_id).expect("chosen above");
        let token = LeaseToken::generate();
        let expires_at = lease_until(options.lease);
        let item = &mut job.items[idx];
        item.status = ItemStatus::Running;
        item.attempts += 1;
        let item_id = item.item_id;
        st.leases.insert(
            item_id,
            Lease {
                token: token.clone(),
                expires_at,
            },
        );
        touch(job, Some(idx));
        Ok(Some(Claim {
            job: job.clone(),
            item: job.items[idx].clone(),
            token,
            lease_expires_at: expires_at,
        }))
    }

    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        if let HeldChange::Renew(lease) = change {
            // Only the expiry changes: neither the item nor its job.
            if st.held(item, token).is_none() {
                return Ok(false);
            }
            let renewed = Lease {
                token: token.clone(),
                expires_at: lease_until(lease),
            };
            st.leases.insert(item, renewed);
            return Ok(true);
        }
        let Some((job, idx)) = st.held(item, token) else {
            return Ok(false);
        };
        let it = &mut job.items[idx];
        let ends = match change {
            HeldChange::Renew(_) => false,
            HeldChange::Progress(progress) => {
                it.progress = it.progress.advance(progress.min(Progress::clamped(99)));
                false
            }
            HeldChange::RemoteRequest(request_id) => {
                it.remote_request_id = Some(request_id);
                false
            }
            HeldChange::Finish(ItemOutcome::Succeeded {
                model_key,
                preview_key,
            }) => {
                it.status = ItemStatus::Succeeded;
                it.progress = Progress::DONE;
                it.model_key = Some(model_key);
                it.preview_key = preview_key;
                true
            }
            HeldChange::Finish(ItemOutcome::Failed(error)) => {
                it.status = ItemStatus::Failed;
                it.error = Some(error);
                true
            }
            HeldChange::Finish(ItemOutcome::Release) => {
                it.status = ItemStatus::Queued;
                true
            }
        };
        touch(job, Some(idx));
        if ends {
            st.leases.remove(&item);
        }
        Ok(true)
    }

    /// Under one lock; each lease changes exactly as [`renew_lease`] would
    /// change it (only its expiry).
    ///
    /// [`renew_lease`]: JobStore::renew_lease
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.state.lock().expect("memory store lock");
        let expires_at = lease_until(lease);
        let mut lost = Vec::new();
        for (item, token) in leases {
            if st.held(*item, token).is_none() {
                lost.push(*item);
                continue;
            }
            st.leases.insert(
                *item,
                Lease {
                    token: token.clone(),
                    expires_at,
                },
            );
        }
        Ok(lost)
    }

    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut guard = self.state.lock().expect("memory store lock");
        let st = &mut *guard;
        let Some(job) = st.jobs.get_mut(&id) else {
            return Ok(None);
        };
        if job.status.is_terminal() {
            // Nothing to cancel; leave `updated_at` alone so cleanup ages it.
            return Ok(Some(job.clone()));
        }
        job.cancel_requested = true;
        for item in &mut job.items {
            if !item.status.is_terminal() {
                item.status = ItemStatus::Cancelled;
                item.updated_at = Utc::now();
                st.leases.remove(&item.item_id);
            }
        }
        touch(job, None);
        Ok(Some(job.clone()))
    }

    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        let Some(job) = st.jobs.remove(&id) else {
            return Ok(None);
        };
        st.deliveries.remove(&id);
        for item in &job.items {
            st.item_jobs.remove(&item.item_id);
            st.leases.remove(&item.item_id);
        }
        Ok(Some(job))
    }

    async fn ended_jobs_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        let mut jobs: Vec<Job> = st
            .jobs
            .values()
            .filter(|j| j.status.is_terminal() && j.updated_at < before)
            .cloned()
            .collect();
        jobs.sort_by_key(|j| j.updated_at);
        jobs.truncate(limit as usize);
        Ok(jobs)
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        let mut stats = QueueStats {
            jobs: st.jobs.len() as u64,
            ..QueueStats::default()
        };
        for item in st.jobs.values().flat_map(|j| &j.items) {
            match item.status {
                ItemStatus::Queued => stats.queued += 1,
                ItemStatus::Running => stats.running += 1,
                _ => {}
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn callbacks(&self) -> Option<std::sync::Arc<dyn CallbackStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

#[async_trait]
impl CallbackStore for MemoryJobStore {
    async fn webhook_settings(&self, owner: &ApiKeyId) -> Result<WebhookSettings, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        Ok(st.webhooks.get(owner).cloned().unwrap_or_default())
    }

    async fn set_default_callback(
        &self,
        owner: &ApiKeyId,
        url: Option<&CallbackUrl>,
    ) -> Result<WebhookSettings, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        let settings = st.webhooks.entry(owner.clone()).or_default();
        settings.default_url = url.cloned();
        Ok(settings.clone())
    }

    async fn set_webhook_secret_seed(
        &self,
        owner: &ApiKeyId,
        seed: &str,
        at: DateTime<Utc>,
    ) -> Result<WebhookSettings, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        let settings = st.webhooks.entry(owner.clone()).or_default();
        settings.secret_seed = Some(seed.to_owned());
        settings.secret_created_at = Some(at);
        Ok(settings.clone())
    }

    async fn delivery(&self, job: JobId) -> Result<Option<Delivery>, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        Ok(st.deliveries.get(&job).map(|(d, _)| d.clone()))
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DeliveryClaim>, StoreError> {
        let mut guard = self.state.lock().expect("memory store lock");
        let st = &mut *guard;
        let now_ms = now.timestamp_millis();
        let lease_until_ms =
            now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut due: Vec<&mut (Delivery, Option<i64>)> = st
            .deliveries
            .values_mut()
            .filter(|(d, held)| {
                d.status == DeliveryStatus::Pending
                    && d.next_attempt_at <= now
                    && held.is_none_or(|until| until <= now_ms)
                    && st
                        .jobs
                        .get(&d.job_id)
                        .is_some_and(|j| j.status.is_terminal())
            })
            .collect();
        due.sort_by_key(|(d, _)| (d.next_attempt_at, d.delivery_id));
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(d, held)| {
                *held = Some(lease_until_ms);
                DeliveryClaim {
                    delivery: d.clone(),
                    lease_until_ms,
                }
            })
            .collect())
    }

    async fn record_attempt(
        &self,
        claim: &DeliveryClaim,
        outcome: &AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut st = self.state.lock().expect("memory store lock");
        let Some((d, held)) = st.deliveries.get_mut(&claim.delivery.job_id) else {
            return Ok(false);
        };
        if *held != Some(claim.lease_until_ms) || d.status != DeliveryStatus::Pending {
            return Ok(false);
        }
        *held = None;
        d.apply(outcome, at);
        Ok(true)
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let st = self.state.lock().expect("memory store lock");
        let mut found: Vec<Delivery> = st
            .deliveries
            .values()
            .map(|(d, _)| d)
            .filter(|d| query.owner.as_ref().is_none_or(|o| &d.owner == o))
            .filter(|d| query.status.is_none_or(|s| d.status == s))
            .filter(|d| query.before.is_none_or(|b| d.delivery_id < b))
            .cloned()
            .collect();
        found.sort_by_key(|d| std::cmp::Reverse(d.delivery_id));
        found.truncate(query.limit.min(MAX_DELIVERY_PAGE) as usize);
        Ok(found)
    }
}

/// A [`BlobStore`] kept in memory, lost when dropped.
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    objects: Mutex<BTreeMap<BlobKey, (Bytes, DateTime<Utc>)>>,
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        // Collect first, publish after: a failing body leaves nothing behind.
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.map_err(BlobError::Body)?);
        }
        let len = buf.len() as u64;
        self.objects
            .lock()
            .expect("memory blob lock")
            .insert(key.clone(), (buf.freeze(), Utc::now()));
        Ok(len)
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject, BlobError> {
        let bytes = self
            .objects
            .lock()
            .expect("memory blob lock")
            .get(key)
            .map(|(b, _)| b.clone());
        let bytes = bytes.ok_or_else(|| BlobError::NotFound(key.clone()))?;
        Ok(BlobObject {
            size: bytes.len() as u64,
            stream: bytes_stream(bytes),
        })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta, BlobError> {
        let objects = self.objects.lock().expect("memory blob lock");
        let (bytes, at) = objects
            .get(key)
            .ok_or_else(|| BlobError::NotFound(key.clone()))?;
        Ok(BlobMeta {
            key: key.clone(),
            size: bytes.len() as u64,
            last_modified: *at,
        })
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        self.objects.lock().expect("memory blob lock").remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let objects = self.objects.lock().expect("memory blob lock");
        Ok(objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, at))| BlobMeta {
                key: k.clone(),
                size: b.len() as u64,
                last_modified: *at,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), BlobError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".to_owned()
    }
}

/// A [`KeyStore`] kept in memory.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<Vec<StoredKey>>,
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn create_key(&self, key: StoredKey) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().expect("memory key lock");
        if keys
            .iter()
            .any(|k| k.key_id == key.key_id || k.hash == key.hash)
        {
            return Err(StoreError::Conflict(
                "a key with this id or secret exists".into(),
            ));
        }
        keys.push(key);
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut keys = self.keys.lock().expect("memory key lock").clone();
        // Oldest first, as the SQL stores order them.
        keys.sort_by(|a, b| (a.created_at, &a.key_id).cmp(&(b.created_at, &b.key_id)));
        Ok(keys)
    }

    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<StoredKey>, StoreError> {
        let keys = self.keys.lock().expect("memory key lock");
        Ok(keys
            .iter()
            .find(|k| k.hash == hash && k.revoked_at.is_none())
            .cloned())
    }

    async fn find_key(&self, key_id: &ApiKeyId) -> Result<Option<StoredKey>, StoreError> {
        let keys = self.keys.lock().expect("memory key lock");
        Ok(keys.iter().find(|k| &k.key_id == key_id).cloned())
    }

    async fn revoke_key(&self, key_id: &ApiKeyId) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().expect("memory key lock");
        match keys.iter_mut().find(|k| &k.key_id == key_id) {
            Some(k) => {
                k.revoked_at.get_or_insert_with(Utc::now);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn set_key_limits(
        &self,
        key_id: &ApiKeyId,
        limits: KeyLimits,
    ) -> Result<bool, StoreError> {
        let mut keys = self.keys.lock().expect("memory key lock");
        match keys.iter_mut().find(|k| &k.key_id == key_id) {
            Some(k) => {
                k.limits = limits;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn touch_key(&self, key_id: &ApiKeyId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().expect("memory key lock");
        if let Some(k) = keys.iter_mut().find(|k| &k.key_id == key_id) {
            k.last_used_at = Some(at);
        }
        Ok(())
    }
}

/// An [`AuditLog`] kept in memory.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    events: Mutex<Vec<AuditEvent>>,
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.events.lock().expect("memory audit lock").push(event);
        Ok(())
    }

    async fn recent(
        &self,
        limit: u32,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let events = self.events.lock().expect("memory audit lock");
        let mut found: Vec<AuditEvent> = events
            .iter()
            .rev()
            .filter(|e| before.is_none_or(|b| e.at < b))
            .cloned()
            .collect();
        // Newest first by time; a stable sort keeps later-recorded events
        // first among equal times, as the SQL stores do.
        found.sort_by_key(|e| std::cmp::Reverse(e.at));
        found.truncate(limit.min(1000) as usize);
        Ok(found)
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut events = self.events.lock().expect("memory audit lock");
        let was = events.len();
        events.retain(|e| e.at >= before);
        Ok((was - events.len()) as u64)
    }
}
