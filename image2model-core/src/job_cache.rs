//! [`CachedJobStore`]: a [`JobStore`] that answers repeated reads of one job
//! from memory.
//!
//! Clients poll `GET /jobs/{id}`; with the SQLite store every poll was a
//! round trip to SQLite's connection thread, about half of the server's CPU
//! on that endpoint (see `docs/BENCHMARKS.md`). The cache keeps the last
//! snapshot of each job read, and throws it away when the job changes:
//!
//! - **Changes made through this store** (this process's API and worker:
//!   create, claim, progress, finish, cancel, delete) remove the job's entry
//!   as soon as the backend has committed them, so a read that follows a
//!   change in this process always sees it. A create and a claim hand back
//!   the job as they committed it, and that snapshot is kept in the entry's
//!   place: the client that follows its new job, and the event stream woken
//!   by the claim, read it from memory instead of from the backend (the
//!   same guard as a read's keeps it from outliving a later change). That
//!   is for speed (docs/BENCHMARKS.md, "Session 21": 59 % fewer job reads
//!   and 7–12 % less CPU per job at L = 0); `JOB_CACHE_TTL_MS=0` turns the
//!   whole cache off.
//! - **Changes made by other processes** (a worker in another process, a
//!   second instance on the same database) are seen once the entry is older
//!   than the time to live. Each snapshot is timed from *before* the read
//!   that produced it, so no answer is older than `ttl` plus that read.
//!
//! A read that races a change never caches what it read: every change bumps
//! its job's epoch (one of 64 counters, picked by the job's id) or,
//! for a change that may touch any job, the epoch of all; a read whose
//! epochs moved while it ran removes what it put in (see
//! [`CachedJobStore::get_job`]). Per-job epochs keep a read from being
//! thrown away for another job's change. Only [`JobStore::get_job`] is
//! cached, and only jobs that exist (a missing job is asked again each
//! time); everything else goes straight to the backend. The cache holds at
//! most `capacity` jobs (`quick_cache`'s S3-FIFO eviction). Ages are read
//! from tokio's clock, so tests can pause and advance it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::domain::{ApiKeyId, ItemId, Job, JobId};
use crate::ports::{
    Claim, ClaimOptions, CreateOutcome, HeldChange, JobPage, JobStore, LeaseToken, ListQuery,
    NewJob, QueueStats, StoreError,
};

/// Settings of a [`CachedJobStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCacheConfig {
    /// How long a snapshot may answer reads. Bounds how late a change made
    /// by another process is seen; changes made through the cache itself
    /// are seen at once. Zero turns the cache off.
    pub ttl: Duration,
    /// The most jobs kept.
    pub capacity: usize,
}

impl Default for JobCacheConfig {
    /// 500 ms, 10,000 jobs.
    fn default() -> Self {
        Self {
            ttl: Duration::from_millis(500),
            capacity: 10_000,
        }
    }
}

/// The most claimed items whose job is remembered (see `items`); past it the
/// map is emptied and a change to a forgotten item empties the cache.
const MAX_TRACKED_ITEMS: usize = 100_000;

/// Per-job epochs: a change bumps the one its job's id picks.
const STRIPES: usize = 64;

/// The epochs a snapshot of one job was taken under: the epoch of all and
/// the job's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    all: u64,
    job: u64,
}

#[derive(Clone)]
struct Entry {
    /// When the read that produced it started.
    read_at: Instant,
    job: Arc<Job>,
}

/// A [`JobStore`] decorator that caches [`JobStore::get_job`]; see the
/// [module documentation](self).
pub struct CachedJobStore {
    inner: Arc<dyn JobStore>,
    ttl: Duration,
    cache: quick_cache::sync::Cache<JobId, Entry>,
    /// Bumped by every change that may touch any job, before the entries
    /// are removed.
    epoch: AtomicU64,
    /// Bumped by every change of a job whose id picks it, before its entry
    /// is removed.
    stripes: [AtomicU64; STRIPES],
    /// The job of each item claimed through this store, so that changes to
    /// an item (which name only the item) can remove the job's entry.
    items: Mutex<HashMap<ItemId, JobId>>,
}

impl fmt::Debug for CachedJobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedJobStore")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl CachedJobStore {
    /// Caches `inner`'s job reads.
    #[must_use]
    pub fn new(inner: Arc<dyn JobStore>, config: JobCacheConfig) -> Self {
        Self {
            inner,
            ttl: config.ttl,
            cache: quick_cache::sync::Cache::new(config.capacity.max(1)),
            epoch: AtomicU64::new(0),
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            items: Mutex::new(HashMap::new()),
        }
    }

    /// `inner` behind a cache, or `inner` itself when `config.ttl` is zero.
    #[must_use]
    pub fn wrap(inner: Arc<dyn JobStore>, config: JobCacheConfig) -> Arc<dyn JobStore> {
        if config.ttl.is_zero() {
            inner
        } else {
            Arc::new(Self::new(inner, config))
        }
    }

    /// The store behind the cache.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn JobStore> {
        &self.inner
    }

    /// How many jobs are cached now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn stripe_index(&self, job: JobId) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(job);
        (hash % STRIPES as u64) as usize
    }

    fn stripe(&self, job: JobId) -> &AtomicU64 {
        &self.stripes[self.stripe_index(job)]
    }

    /// The epochs now for `job`.
    fn stamp(&self, job: JobId) -> Stamp {
        Stamp {
            all: self.epoch.load(Ordering::SeqCst),
            job: self.stripe(job).load(Ordering::SeqCst),
        }
    }

    /// Every job's epoch now (taken before a claim, whose job is not known
    /// until it returns).
    fn stamps(&self) -> (u64, [u64; STRIPES]) {
        let all = self.epoch.load(Ordering::SeqCst);
        (
            all,
            std::array::from_fn(|i| self.stripes[i].load(Ordering::SeqCst)),
        )
    }

    /// Caches `job`, a snapshot taken at `read_at` under `stamp`, unless a
    /// change moved the epochs since: a change that committed after the
    /// snapshot either moved them before the check here (and the entry is
    /// taken out again) or removes the entry itself after it.
    fn fill(&self, job: &Job, stamp: Stamp, read_at: Instant) {
        let id = job.job_id;
        self.cache.insert(
            id,
            Entry {
                read_at,
                job: Arc::new(job.clone()),
            },
        );
        if self.stamp(id) != stamp {
            self.cache.remove(&id);
        }
    }

    /// Forgets the job: reads in flight will not cache what they read.
    fn changed(&self, job: JobId) {
        self.stripe(job).fetch_add(1, Ordering::SeqCst);
        self.cache.remove(&job);
    }

    /// Forgets every job (a change whose job is unknown, or one that may
    /// touch several jobs).
    fn changed_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
    }

    /// After a change to `item` (or a failed attempt at one, which may have
    /// committed): forgets its job, or every job if the item is unknown.
    /// `done` forgets the item too (its lease is over or in doubt).
    fn item_changed(&self, item: ItemId, done: bool) {
        let job = {
            let mut items = self.items.lock().expect("item map lock");
            if done {
                items.remove(&item)
            } else {
                items.get(&item).copied()
            }
        };
        match job {
            Some(job) => self.changed(job),
            None => self.changed_all(),
        }
    }

    /// [`Self::item_changed`] for many items at once: one epoch bump, and
    /// each job forgotten once (every job if any item is unknown).
    fn items_changed(&self, items: impl IntoIterator<Item = (ItemId, bool)>) {
        let mut jobs = HashSet::new();
        let mut unknown = false;
        {
            let mut map = self.items.lock().expect("item map lock");
            for (item, done) in items {
                let job = if done {
                    map.remove(&item)
                } else {
                    map.get(&item).copied()
                };
                match job {
                    Some(job) => {
                        jobs.insert(job);
                    }
                    None => unknown = true,
                }
            }
        }
        if unknown {
            self.changed_all();
        } else {
            for job in jobs {
                self.changed(job);
            }
        }
    }

    fn remember_claim(&self, claim: &Claim) {
        let mut items = self.items.lock().expect("item map lock");
        if items.len() >= MAX_TRACKED_ITEMS {
            // Leases lost without a finish leave entries behind; start over
            // rather than grow (unknown items then empty the whole cache).
            items.clear();
        }
        items.insert(claim.item.item_id, claim.job.job_id);
    }
}

#[async_trait]
impl JobStore for CachedJobStore {
    /// Caches the created job: its creator is about to follow it.
    async fn create_job(&self, job: NewJob) -> Result<CreateOutcome, StoreError> {
        let stamp = self.stamp(job.job_id);
        let read_at = Instant::now();
        let outcome = self.inner.create_job(job).await?;
        if let CreateOutcome::Created(job) = &outcome {
            self.fill(job, stamp, read_at);
        }
        Ok(outcome)
    }

    /// Always from the backend: counts change with every upload.
    async fn usage(
        &self,
        owner: &ApiKeyId,
        periods: crate::domain::Periods,
    ) -> Result<crate::domain::Usage, StoreError> {
        self.inner.usage(owner, periods).await
    }
    async fn usage_by_owner(
        &self,
        periods: crate::domain::Periods,
    ) -> Result<Vec<crate::domain::OwnerUsage>, StoreError> {
        self.inner.usage_by_owner(periods).await
    }

    /// From the cache when a snapshot younger than the time to live is
    /// there; otherwise from the backend, caching what it returns unless a
    /// change was made meanwhile.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        if let Some(entry) = self.cache.get(&id)
            && entry.read_at.elapsed() < self.ttl
        {
            return Ok(Some(Job::clone(&entry.job)));
        }
        // A change that committed while we read may have been missed by our
        // read and removed its entry before our insert: then its epoch moved
        // and `fill` takes what it inserted out again. (A change that bumps
        // an epoch after this stamp removes the entry itself.)
        let stamp = self.stamp(id);
        let read_at = Instant::now();
        let job = self.inner.get_job(id).await?;
        if let Some(job) = &job {
            self.fill(job, stamp, read_at);
        }
        Ok(job)
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &ApiKeyId,
        key: &str,
    ) -> Result<Option<Job>, StoreError> {
        self.inner.find_by_idempotency_key(owner, key).await
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<JobPage, StoreError> {
        self.inner.list_jobs(query).await
    }

    /// A claim may also fail other jobs' items (`worker_lost`). When the
    /// backend's count of such failures ([`JobStore::worker_lost_count`])
    /// did not move while the claim ran, the claim changed its own job only:
    /// that job is forgotten and then cached as the claim left it (the
    /// worker tells the job's followers next), unless another change to it
    /// came meanwhile. Otherwise (the count moved, the backend cannot say,
    /// or the claim failed) every job is forgotten.
    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError> {
        let lost = self.inner.worker_lost_count();
        let (all, jobs) = self.stamps();
        let read_at = Instant::now();
        let result = self.inner.claim_next(options).await;
        let alone = lost.is_some() && self.inner.worker_lost_count() == lost;
        if let Ok(Some(claim)) = &result {
            self.remember_claim(claim);
        }
        match &result {
            Ok(Some(claim)) if alone => {
                let id = claim.job.job_id;
                let before = self.stripe(id).fetch_add(1, Ordering::SeqCst);
                self.cache.remove(&id);
                if before == jobs[self.stripe_index(id)] {
                    let stamp = Stamp {
                        all,
                        job: before + 1,
                    };
                    self.fill(&claim.job, stamp, read_at);
                }
            }
            // Nothing claimed and nothing failed: nothing changed.
            Ok(None) if alone => {}
            _ => self.changed_all(),
        }
        result
    }

    fn worker_lost_count(&self) -> Option<u64> {
        self.inner.worker_lost_count()
    }

    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        let ends = matches!(change, HeldChange::Finish(_));
        let result = self.inner.change_held(item, token, change).await;
        // A lost lease forgets the job; an ending item too, even on an
        // error, since the write may have committed.
        self.item_changed(item, ends || !matches!(result, Ok(true)));
        result
    }

    /// As [`JobStore::change_held`] renewing each lease: a renewed item's job is
    /// forgotten; a lost one (or every one, on an error, when the write may
    /// or may not have happened) is forgotten with its job.
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        let result = self.inner.renew_leases(leases, lease).await;
        match &result {
            Ok(lost) => {
                let lost: HashSet<ItemId> = lost.iter().copied().collect();
                self.items_changed(leases.iter().map(|(item, _)| (*item, lost.contains(item))));
            }
            Err(_) => self.items_changed(leases.iter().map(|(item, _)| (*item, true))),
        }
        result
    }

    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let result = self.inner.cancel_job(id).await;
        self.changed(id);
        result
    }

    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let result = self.inner.delete_job(id).await;
        self.changed(id);
        result
    }

    async fn ended_jobs_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.inner.ended_jobs_before(before, limit).await
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        self.inner.stats().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn callbacks(&self) -> Option<std::sync::Arc<dyn crate::ports::CallbackStore>> {
        self.inner.callbacks()
    }
}
