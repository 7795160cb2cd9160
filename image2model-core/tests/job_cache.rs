//! `CachedJobStore`: keeps the job store contract, answers repeated reads from
//! memory, sees its own changes at once and other processes' after the time
//! to live, and never caches a read that raced a change.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use image2model_core::domain::{ApiKeyId, ItemId, Job, JobId, JobStatus, Progress};
use image2model_core::job_cache::{CachedJobStore, JobCacheConfig};
use image2model_core::memory::MemoryJobStore;
use image2model_core::ports::{
    Claim, ClaimOptions, CreateOutcome, HeldChange, ItemOutcome, JobPage, JobStore, LeaseToken,
    ListQuery, NewJob, QueueStats, StoreError,
};
use image2model_core::testing::conformance::job_store::new_job;

mod conformance {
    use super::*;

    // A long time to live: the contract must hold through invalidation alone.
    image2model_core::job_store_conformance_tests!(|| async {
        let inner = Arc::new(MemoryJobStore::default()) as Arc<dyn JobStore>;
        Some(Arc::new(CachedJobStore::new(
            inner,
            config(Duration::from_secs(3600)),
        )) as Arc<dyn JobStore>)
    });
}

fn config(ttl: Duration) -> JobCacheConfig {
    JobCacheConfig {
        ttl,
        capacity: 1000,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

const CLAIM: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(60),
    max_attempts: 3,
    models: None,
};

/// A memory store that counts `get_job` calls and can hold a read between
/// taking its snapshot and returning it.
#[derive(Debug, Default)]
struct Probe {
    inner: MemoryJobStore,
    reads: AtomicUsize,
    /// `renew_lease` calls.
    renewals: AtomicUsize,
    /// `renew_leases` calls.
    batch_renewals: AtomicUsize,
    /// When set, each read waits here after taking its snapshot.
    gate: std::sync::Mutex<Option<Arc<Notify>>>,
    /// Told when a read has its snapshot and waits at the gate.
    holding: Notify,
    /// When set, each claim waits here after the backend committed it.
    claim_gate: std::sync::Mutex<Option<Arc<Notify>>>,
    /// Told when a claim has committed and waits at the claim gate.
    claim_holding: Notify,
}

impl Probe {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JobStore for Probe {
    async fn create_job(&self, job: NewJob) -> Result<CreateOutcome, StoreError> {
        self.inner.create_job(job).await
    }
    async fn usage(
        &self,
        owner: &ApiKeyId,
        periods: image2model_core::domain::Periods,
    ) -> Result<image2model_core::domain::Usage, StoreError> {
        self.inner.usage(owner, periods).await
    }
    async fn usage_by_owner(
        &self,
        periods: image2model_core::domain::Periods,
    ) -> Result<Vec<image2model_core::domain::OwnerUsage>, StoreError> {
        self.inner.usage_by_owner(periods).await
    }
    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let snapshot = self.inner.get_job(id).await;
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            self.holding.notify_one();
            gate.notified().await;
        }
        snapshot
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
    fn worker_lost_count(&self) -> Option<u64> {
        self.inner.worker_lost_count()
    }
    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError> {
        let claim = self.inner.claim_next(options).await;
        let gate = self.claim_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            self.claim_holding.notify_one();
            gate.notified().await;
        }
        claim
    }
    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        if matches!(change, HeldChange::Renew(_)) {
            self.renewals.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.change_held(item, token, change).await
    }
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        self.batch_renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew_leases(leases, lease).await
    }
    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.cancel_job(id).await
    }
    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.delete_job(id).await
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

    fn callbacks(&self) -> Option<std::sync::Arc<dyn image2model_core::ports::CallbackStore>> {
        self.inner.callbacks()
    }
}

fn owner() -> ApiKeyId {
    ApiKeyId::parse("alice").unwrap()
}

fn progress(p: u8) -> Progress {
    Progress::try_from(p).unwrap()
}

async fn create(store: &dyn JobStore, items: usize) -> Job {
    match store
        .create_job(new_job(JobId::new(), &owner(), items))
        .await
        .unwrap()
    {
        CreateOutcome::Created(job) => job,
        CreateOutcome::Existing(job) => panic!("existing job {}", job.job_id),
        CreateOutcome::OverQuota(over) => panic!("over quota: {over}"),
    }
}

async fn get(store: &dyn JobStore, id: JobId) -> Job {
    store.get_job(id).await.unwrap().expect("job exists")
}

#[tokio::test]
async fn repeated_reads_are_answered_from_memory() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let job = create(&cache, 2).await;

    let first = get(&cache, job.job_id).await;
    assert_eq!(first, job, "the created job, as created");
    for _ in 0..50 {
        assert_eq!(get(&cache, job.job_id).await, first);
    }
    assert_eq!(probe.reads(), 0, "the create left its job in the cache");
    assert_eq!(cache.len(), 1);

    // Forgotten (as by a change): one backend read, then memory again.
    cache.cancel_job(job.job_id).await.unwrap().unwrap();
    let cancelled = get(&cache, job.job_id).await;
    for _ in 0..50 {
        assert_eq!(get(&cache, job.job_id).await, cancelled);
    }
    assert_eq!(probe.reads(), 1, "one backend read for 51 reads");
}

#[tokio::test]
async fn a_claimed_job_is_cached_as_the_claim_committed_it() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let job = create(&cache, 2).await;

    let claim = cache.claim_next(CLAIM).await.unwrap().unwrap();
    let cached = get(&cache, job.job_id).await;
    assert_eq!(probe.reads(), 0, "the claim left its job in the cache");
    assert_eq!(cached, claim.job);
    assert_eq!(cached.status, JobStatus::Running);
    assert_eq!(
        Some(cached),
        probe.inner.get_job(job.job_id).await.unwrap(),
        "the snapshot is what the backend holds"
    );
}

#[tokio::test]
async fn a_claim_that_fails_another_jobs_item_as_worker_lost_forgets_that_job() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let short = ClaimOptions {
        lease: Duration::from_millis(1),
        max_attempts: 1,
        models: None,
    };
    let lost = create(&cache, 1).await;
    cache.claim_next(short.clone()).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        get(&cache, lost.job_id).await.status,
        JobStatus::Running,
        "cached as its claim left it"
    );

    // Its lease has run out: the next claim fails it on the way to a new
    // job's item.
    let next = create(&cache, 1).await;
    let claim = cache.claim_next(short).await.unwrap().unwrap();
    assert_eq!(claim.job.job_id, next.job_id);
    assert_eq!(probe.worker_lost_count(), Some(1));
    assert_eq!(
        get(&cache, lost.job_id).await.items[0].status,
        image2model_core::domain::ItemStatus::Failed,
        "the failed job was forgotten, not answered from memory"
    );
}

#[tokio::test]
async fn a_claims_snapshot_is_not_kept_when_its_job_changed_meanwhile() {
    let probe = Arc::new(Probe::default());
    let cache = Arc::new(CachedJobStore::new(probe.clone(), config(HOUR)));
    let job = create(cache.as_ref(), 2).await;

    // The claim commits (its job running, not cancelled) and is held before
    // it returns.
    let gate = Arc::new(Notify::new());
    *probe.claim_gate.lock().unwrap() = Some(gate.clone());
    let holding = probe.claim_holding.notified();
    let claimer = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.claim_next(CLAIM).await.unwrap().unwrap() })
    };
    holding.await;
    *probe.claim_gate.lock().unwrap() = None;

    // Meanwhile the job is cancelled through the cache.
    cache.cancel_job(job.job_id).await.unwrap().unwrap();
    gate.notify_one();
    let claim = claimer.await.unwrap();
    assert!(!claim.job.cancel_requested, "the claim saw the old state");

    assert!(
        get(cache.as_ref(), job.job_id).await.cancel_requested,
        "the claim's stale snapshot must not have been cached"
    );
}

#[tokio::test]
async fn missing_jobs_are_not_cached() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let id = JobId::new();
    assert!(cache.get_job(id).await.unwrap().is_none());
    assert!(cache.get_job(id).await.unwrap().is_none());
    assert_eq!(probe.reads(), 2);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn every_change_through_the_cache_is_seen_by_the_next_read() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let job = create(&cache, 2).await;
    assert_eq!(get(&cache, job.job_id).await.status, JobStatus::Queued);

    let claim = cache.claim_next(CLAIM).await.unwrap().unwrap();
    let item = claim.item.item_id;
    assert_eq!(get(&cache, job.job_id).await.status, JobStatus::Running);

    assert!(
        cache
            .record_progress(item, &claim.token, progress(40))
            .await
            .unwrap()
    );
    assert_eq!(
        get(&cache, job.job_id).await.items[0].progress,
        progress(40)
    );

    assert!(
        cache
            .record_remote_request(item, &claim.token, "req-1")
            .await
            .unwrap()
    );
    assert_eq!(
        get(&cache, job.job_id).await.items[0]
            .remote_request_id
            .as_deref(),
        Some("req-1")
    );

    assert!(
        cache
            .finish_item(
                item,
                &claim.token,
                ItemOutcome::Succeeded {
                    model_key: image2model_core::domain::BlobKey::model(job.job_id, item),
                    preview_key: None,
                },
            )
            .await
            .unwrap()
    );
    let after_finish = get(&cache, job.job_id).await;
    assert_eq!(
        after_finish.items[0].status,
        image2model_core::domain::ItemStatus::Succeeded
    );

    let cancelled = cache.cancel_job(job.job_id).await.unwrap().unwrap();
    assert_eq!(get(&cache, job.job_id).await, cancelled);

    cache.delete_job(job.job_id).await.unwrap().unwrap();
    assert!(cache.get_job(job.job_id).await.unwrap().is_none());
    // The reads after the create and the claim were answered with their
    // snapshots; each of the five after another change went to the backend.
    assert_eq!(probe.reads(), 5);
}

#[tokio::test(start_paused = true)]
async fn changes_made_elsewhere_are_seen_after_the_time_to_live() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(Duration::from_millis(500)));
    let job = create(&cache, 1).await;
    assert_eq!(get(&cache, job.job_id).await.status, JobStatus::Queued);

    // Another process cancels it, behind the cache's back.
    probe.inner.cancel_job(job.job_id).await.unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(
        get(&cache, job.job_id).await.status,
        JobStatus::Queued,
        "within the time to live the snapshot answers"
    );
    tokio::time::advance(Duration::from_millis(101)).await;
    assert_eq!(get(&cache, job.job_id).await.status, JobStatus::Cancelled);

    // Deleted elsewhere: gone once the snapshot is older than the ttl.
    probe.inner.delete_job(job.job_id).await.unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(501)).await;
    assert!(cache.get_job(job.job_id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_read_that_races_a_change_does_not_cache_its_stale_snapshot() {
    let probe = Arc::new(Probe::default());
    let cache = Arc::new(CachedJobStore::new(probe.clone(), config(HOUR)));
    // Created behind the cache, so that the read goes to the backend.
    let job = create(probe.as_ref(), 1).await;

    // A read takes its snapshot (queued) and is held before returning it.
    let gate = Arc::new(Notify::new());
    *probe.gate.lock().unwrap() = Some(gate.clone());
    let holding = probe.holding.notified();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move { get(cache.as_ref(), job.job_id).await })
    };
    holding.await;
    *probe.gate.lock().unwrap() = None;

    // Meanwhile the job is cancelled through the cache.
    cache.cancel_job(job.job_id).await.unwrap().unwrap();
    gate.notify_one();
    let raced = reader.await.unwrap();
    assert_eq!(
        raced.status,
        JobStatus::Queued,
        "the racing read saw the old state"
    );

    assert_eq!(
        get(cache.as_ref(), job.job_id).await.status,
        JobStatus::Cancelled,
        "the stale snapshot must not have been cached"
    );
}

#[tokio::test]
async fn a_change_to_an_item_claimed_elsewhere_forgets_every_job() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let a = create(&cache, 1).await;
    let b = create(&cache, 1).await;
    // Claimed behind the cache's back: the cache cannot know the item's job.
    let claim = probe.inner.claim_next(CLAIM).await.unwrap().unwrap();
    get(&cache, a.job_id).await;
    get(&cache, b.job_id).await;
    assert_eq!(cache.len(), 2);

    assert!(
        cache
            .record_progress(claim.item.item_id, &claim.token, progress(10))
            .await
            .unwrap()
    );
    assert!(cache.is_empty());
    assert_eq!(get(&cache, claim.job.job_id).await.progress, progress(10));
}

#[tokio::test]
async fn renew_leases_reach_the_backend_as_one_batch() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(probe.clone(), config(HOUR));
    let job = create(&cache, 3).await;
    let mut leases = Vec::new();
    while let Some(c) = cache.claim_next(CLAIM).await.unwrap() {
        leases.push((c.item.item_id, c.token));
    }
    let gone = create(&cache, 1).await;
    let lost_claim = cache.claim_next(CLAIM).await.unwrap().unwrap();
    cache.delete_job(gone.job_id).await.unwrap().unwrap();
    leases.push((lost_claim.item.item_id, lost_claim.token));
    let before = get(&cache, job.job_id).await;

    let lost = cache.renew_leases(&leases, HOUR).await.unwrap();

    assert_eq!(lost, vec![lost_claim.item.item_id]);
    assert_eq!(probe.batch_renewals.load(Ordering::SeqCst), 1);
    assert_eq!(
        probe.renewals.load(Ordering::SeqCst),
        0,
        "not one renew_lease per item"
    );
    assert_eq!(get(&cache, job.job_id).await, before);
}

#[tokio::test]
async fn a_zero_time_to_live_turns_the_cache_off() {
    let probe = Arc::new(Probe::default());
    let store = CachedJobStore::wrap(probe.clone(), config(Duration::ZERO));
    let job = create(store.as_ref(), 1).await;
    for _ in 0..5 {
        get(store.as_ref(), job.job_id).await;
    }
    assert_eq!(probe.reads(), 5);
}

#[tokio::test]
async fn the_cache_holds_at_most_its_capacity() {
    let probe = Arc::new(Probe::default());
    let cache = CachedJobStore::new(
        probe.clone(),
        JobCacheConfig {
            ttl: HOUR,
            capacity: 16,
        },
    );
    for _ in 0..200 {
        let job = create(&cache, 1).await;
        get(&cache, job.job_id).await;
    }
    assert!(cache.len() <= 16, "{} jobs cached", cache.len());
    assert!(!cache.is_empty());
}
