//! The worker's limits through the public API: local slots for CPU-bound
//! generators, a separate in-flight limit for remote ones, claims only for
//! generators with room, one lease renewal call per interval, and progress
//! writes within their budget with many items running.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use image2model_core::domain::{ApiKeyId, ItemId, Job, JobId, JobStatus, ModelName, Progress};
use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
use image2model_core::ports::{
    Capacity, Claim, ClaimOptions, CreateOutcome, HeldChange, JobPage, JobStore, LeaseToken,
    ListQuery, NewJob, QueueStats, StoreError,
};
use image2model_core::testing::generators::{Script, ScriptedGenerator};
use image2model_core::testing::images;
use image2model_core::validate::UploadLimits;
use image2model_core::{Generators, Pipeline, PipelineConfig, Scope, SubmitOptions, WorkerConfig};
use tokio_util::sync::CancellationToken;

/// A job store that counts lease renewals, around the memory store.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryJobStore,
    renew_one: AtomicU64,
    progress_writes: AtomicU64,
    renew_many: AtomicU64,
    renewed_items: AtomicU64,
}

#[async_trait]
impl JobStore for Counting {
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
        self.inner.get_job(id).await
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
    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError> {
        self.inner.claim_next(options).await
    }
    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        match change {
            HeldChange::Renew(_) => self.renew_one.fetch_add(1, Ordering::SeqCst),
            HeldChange::Progress(_) => self.progress_writes.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        self.inner.change_held(item, token, change).await
    }
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        self.renew_many.fetch_add(1, Ordering::SeqCst);
        self.renewed_items
            .fetch_add(leases.len() as u64, Ordering::SeqCst);
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

const LOCAL: &str = "local-model";
const REMOTE: &str = "remote-model";

struct Harness {
    pipeline: Pipeline,
    jobs: Arc<Counting>,
    local: Arc<ScriptedGenerator>,
    remote: Arc<ScriptedGenerator>,
    owner: ApiKeyId,
}

fn harness(local: Script, remote: Script, max_in_flight: usize) -> Harness {
    let jobs = Arc::new(Counting::default());
    let local = Arc::new(ScriptedGenerator::new(LOCAL, local));
    let remote = Arc::new(
        ScriptedGenerator::new(REMOTE, remote).with_capacity(Capacity::Remote { max_in_flight }),
    );
    let config = PipelineConfig {
        limits: UploadLimits {
            max_files: 25,
            ..UploadLimits::default()
        },
        event_poll_interval: Duration::from_millis(100),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(
        jobs.clone(),
        Arc::new(MemoryBlobStore::default()),
        Generators::new(vec![local.clone(), remote.clone()]).unwrap(),
        config,
    );
    Harness {
        pipeline,
        jobs,
        local,
        remote,
        owner: ApiKeyId::bootstrap_user(),
    }
}

fn worker(local_slots: usize) -> WorkerConfig {
    WorkerConfig {
        concurrency: local_slots,
        lease: Duration::from_millis(300),
        max_attempts: 3,
        idle_poll: Duration::from_millis(20),
        shutdown_grace: Duration::from_millis(200),
        progress_interval: Duration::ZERO,
        progress_step: 0,
        progress_writes_per_sec: 0,
        claimers: 4,
    }
}

fn start(h: &Harness, config: WorkerConfig) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(h.pipeline.worker(config).run(stop.clone()));
    stop
}

async fn submit(h: &Harness, model: &str, images: usize) -> Job {
    let files: Vec<(String, Bytes)> = (0..images)
        .map(|i| {
            (
                format!("photo{i}.png"),
                Bytes::from(images::png(8 + i as u32, 8)),
            )
        })
        .collect();
    h.pipeline
        .submit(
            &h.owner,
            files,
            SubmitOptions {
                model: Some(ModelName::parse(model).unwrap()),
                ..SubmitOptions::default()
            },
        )
        .await
        .unwrap()
}

async fn wait_status(h: &Harness, job: &Job, status: JobStatus) -> Job {
    for _ in 0..500 {
        let now = h.pipeline.job(job.job_id, &Scope::Any).await.unwrap();
        if now.status == status {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {} never became {status:?}", job.job_id);
}

#[tokio::test]
async fn remote_items_hold_no_local_slot_and_a_batch_starts_at_once() {
    let h = harness(
        Script::Delay(Duration::from_millis(50)),
        Script::Delay(Duration::from_millis(400)),
        256,
    );
    let stop = start(&h, worker(1));
    let job = submit(&h, REMOTE, 20).await;
    wait_status(&h, &job, JobStatus::Succeeded).await;
    assert_eq!(
        h.remote.peak_concurrency(),
        20,
        "all 20 remote items waited at once with a single local slot"
    );
    stop.cancel();
}

#[tokio::test]
async fn local_work_is_bounded_by_the_local_slots() {
    let h = harness(
        Script::Delay(Duration::from_millis(100)),
        Script::Delay(Duration::from_millis(10)),
        256,
    );
    let stop = start(&h, worker(2));
    let job = submit(&h, LOCAL, 6).await;
    wait_status(&h, &job, JobStatus::Succeeded).await;
    assert_eq!(h.local.peak_concurrency(), 2);
    stop.cancel();
}

#[tokio::test]
async fn a_remote_generator_keeps_to_its_in_flight_limit() {
    let h = harness(
        Script::Delay(Duration::from_millis(10)),
        Script::Delay(Duration::from_millis(100)),
        3,
    );
    let stop = start(&h, worker(2));
    let job = submit(&h, REMOTE, 10).await;
    wait_status(&h, &job, JobStatus::Succeeded).await;
    assert_eq!(h.remote.peak_concurrency(), 3);
    stop.cancel();
}

#[tokio::test]
async fn full_local_slots_do_not_hold_back_remote_items_queued_behind() {
    // The local generator never finishes: its first item fills the only
    // local slot and its second must stay queued, not be claimed and block
    // the claim loop.
    let h = harness(
        Script::Hang {
            remote_request: None,
        },
        Script::Delay(Duration::from_millis(20)),
        256,
    );
    let stop = start(&h, worker(1));
    let local_job = submit(&h, LOCAL, 2).await;
    let remote_job = submit(&h, REMOTE, 3).await;
    wait_status(&h, &remote_job, JobStatus::Succeeded).await;
    let local_now = h.pipeline.job(local_job.job_id, &Scope::Any).await.unwrap();
    let statuses: Vec<&str> = local_now.items.iter().map(|i| i.status.as_str()).collect();
    assert_eq!(statuses, vec!["running", "queued"]);
    assert_eq!(h.local.calls(), 1);
    stop.cancel();
}

#[tokio::test]
async fn leases_of_all_items_in_flight_are_renewed_with_one_call_per_interval() {
    let h = harness(
        Script::Delay(Duration::from_millis(10)),
        Script::Delay(Duration::from_millis(1000)),
        256,
    );
    let stop = start(&h, worker(1));
    let job = submit(&h, REMOTE, 12).await;
    // The lease is 300 ms: without renewals the items would be reclaimed
    // (and generated again) long before they end.
    let done = wait_status(&h, &job, JobStatus::Succeeded).await;
    assert!(done.items.iter().all(|i| i.attempts == 1), "no reclaim");
    assert_eq!(h.remote.calls(), 12, "each item generated once");
    assert_eq!(h.jobs.renew_one.load(Ordering::SeqCst), 0);
    let calls = h.jobs.renew_many.load(Ordering::SeqCst);
    let items = h.jobs.renewed_items.load(Ordering::SeqCst);
    // About 1 s / (300 ms / 3) renewal ticks, each covering every item.
    assert!((5..=15).contains(&calls), "{calls} renewal calls");
    assert!(
        items >= calls * 10,
        "{items} leases in {calls} calls: each call renews the whole batch"
    );
    stop.cancel();
}

#[tokio::test]
async fn a_job_cancelled_elsewhere_stops_its_items_at_the_next_batch_renewal() {
    let h = harness(
        Script::Delay(Duration::from_millis(10)),
        Script::Hang {
            remote_request: None,
        },
        256,
    );
    let stop = start(&h, worker(1));
    let job = submit(&h, REMOTE, 3).await;
    wait_status(&h, &job, JobStatus::Running).await;
    for _ in 0..100 {
        if h.remote.calls() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Cancel straight in the store, as another process would: this worker
    // learns it only through the refused renewal.
    h.jobs.cancel_job(job.job_id).await.unwrap();
    for _ in 0..100 {
        if h.remote.running_now() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.remote.running_now(), 0, "every generation was stopped");
    stop.cancel();
}

#[tokio::test]
async fn progress_is_written_only_when_it_rose_by_the_step() {
    // The scripted generator reports 10, 50 and 90 at once.
    let h = harness(
        Script::Succeed(image2model_core::testing::generators::minimal_glb()),
        Script::Delay(Duration::from_millis(10)),
        256,
    );
    let stop = start(
        &h,
        WorkerConfig {
            progress_step: 50,
            ..worker(1)
        },
    );
    let job = submit(&h, LOCAL, 1).await;
    let done = wait_status(&h, &job, JobStatus::Succeeded).await;
    assert_eq!(done.progress, Progress::DONE);
    assert_eq!(
        h.jobs.progress_writes.load(Ordering::SeqCst),
        1,
        "10 and 90 were within 50 points of the last write; 50 was written"
    );
    stop.cancel();
}

/// Runs `jobs` jobs of 25 remote items whose progress creeps one point
/// every 5 ms for 40 points, under a progress budget; returns the progress
/// writes and how long the run took.
async fn creeping_run(budget: u32, jobs: usize) -> (u64, Duration) {
    let h = harness(
        Script::Delay(Duration::from_millis(10)),
        Script::Creep {
            every: Duration::from_millis(5),
            steps: 40,
        },
        1024,
    );
    let begin = std::time::Instant::now();
    let stop = start(
        &h,
        WorkerConfig {
            progress_writes_per_sec: budget,
            ..worker(1)
        },
    );
    let mut submitted = Vec::new();
    for _ in 0..jobs {
        submitted.push(submit(&h, REMOTE, 25).await);
    }
    for job in &submitted {
        wait_status(&h, job, JobStatus::Succeeded).await;
    }
    let took = begin.elapsed();
    stop.cancel();
    (h.jobs.progress_writes.load(Ordering::SeqCst), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_items_running_keep_to_the_progress_write_budget() {
    // 100 items at once, each reporting 40 rises: with no budget (and no
    // interval or step) every rise is written.
    let (unbudgeted, _) = creeping_run(0, 4).await;
    assert_eq!(
        unbudgeted,
        100 * 40,
        "every rise is written without a budget"
    );

    // With a budget of 200 writes a second, 100 running items space their
    // writes by half a second: at most the budget over the run, plus one
    // write per item for the edge of its first interval.
    let budget = 200;
    let (budgeted, took) = creeping_run(budget, 4).await;
    let allowed = (f64::from(budget) * took.as_secs_f64()).ceil() as u64 + 100;
    assert!(
        budgeted <= allowed,
        "{budgeted} progress writes in {took:?} with a budget of {budget}/s (at most {allowed})"
    );
    assert!(
        budgeted * 4 < unbudgeted,
        "the budget cut the writes: {budgeted} against {unbudgeted}"
    );
}
