//! The pipeline with the FAL generator against the fake FAL server on a real
//! socket: end to end, failures surfacing with their codes, crash recovery
//! without paying twice, and cancellation reaching fal.

mod fal_helpers;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use image2model_core::domain::{ApiKeyId, BlobPrefix, ItemStatus, Job, JobId, JobStatus};
use image2model_core::generators::fal::FalGenerator;
use image2model_core::gltf::read_glb;
use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
use image2model_core::ports::BlobStore;
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, Scenario};
use image2model_core::testing::images;
use image2model_core::{Generators, Pipeline, PipelineConfig, Scope, SubmitOptions, WorkerConfig};
use tokio_util::sync::CancellationToken;

struct Setup {
    fake: FakeFal,
    pipeline: Pipeline,
    blobs: Arc<MemoryBlobStore>,
}

async fn setup(scenario: Scenario, queue_time: Duration, progress_time: Duration) -> Setup {
    let fake = FakeFal::start(FakeFalConfig {
        queue_time,
        progress_time,
        scenario,
        ..FakeFalConfig::default()
    })
    .await;
    let config = fal_helpers::fast_config(&fake, fake.key());
    let generator = Arc::new(FalGenerator::new(config).unwrap());
    let blobs = Arc::new(MemoryBlobStore::default());
    let pipeline = Pipeline::new(
        Arc::new(MemoryJobStore::default()),
        blobs.clone(),
        Generators::new(vec![generator]).unwrap(),
        PipelineConfig {
            event_poll_interval: Duration::from_millis(100),
            ..PipelineConfig::default()
        },
    );
    Setup {
        fake,
        pipeline,
        blobs,
    }
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
        lease: Duration::from_millis(400),
        max_attempts: 3,
        idle_poll: Duration::from_millis(20),
        shutdown_grace: Duration::from_millis(200),
        progress_interval: Duration::ZERO,
        progress_step: 0,
        progress_writes_per_sec: 0,
        claimers: 4,
    }
}

fn owner() -> ApiKeyId {
    ApiKeyId::bootstrap_user()
}

async fn submit(p: &Pipeline) -> Job {
    let files = vec![("chair.png".to_owned(), Bytes::from(images::png(64, 48)))];
    p.submit(&owner(), files, SubmitOptions::default())
        .await
        .unwrap()
}

async fn until_terminal(p: &Pipeline, id: JobId) -> Job {
    let events = p.subscribe(id, &Scope::Owner(owner())).await.unwrap();
    let all: Vec<Job> = tokio::time::timeout(Duration::from_secs(20), events.collect())
        .await
        .expect("the job ends");
    all.last().cloned().unwrap()
}

/// Waits until `done()` holds, failing the test (instead of hanging it) after 10 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_fal_job_stores_the_model_and_its_preview() {
    let s = setup(
        Scenario::Success,
        Duration::from_millis(20),
        Duration::from_millis(20),
    )
    .await;
    let stop = CancellationToken::new();
    tokio::spawn(s.pipeline.worker(worker_config()).run(stop.clone()));
    let job = submit(&s.pipeline).await;
    assert_eq!(job.options.model.as_str(), "tripo3d-v2.5");
    let last = until_terminal(&s.pipeline, job.job_id).await;
    assert_eq!(last.status, JobStatus::Succeeded, "{last:?}");
    let item = &last.items[0];
    assert!(item.remote_request_id.is_some());
    assert!(item.preview_key.is_some());
    let (_, object) = s
        .pipeline
        .model(job.job_id, item.item_id, &Scope::Any)
        .await
        .unwrap();
    let bytes: Vec<u8> = object.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert!(read_glb(&bytes).unwrap().triangle_count() > 0);
    assert_eq!(s.fake.submits(), 1);
    stop.cancel();
}

#[tokio::test]
async fn a_truncated_model_fails_the_item_as_invalid_output_and_stores_nothing() {
    let s = setup(Scenario::TruncatedModel, Duration::ZERO, Duration::ZERO).await;
    let stop = CancellationToken::new();
    tokio::spawn(s.pipeline.worker(worker_config()).run(stop.clone()));
    let job = submit(&s.pipeline).await;
    let last = until_terminal(&s.pipeline, job.job_id).await;
    assert_eq!(last.status, JobStatus::Failed);
    assert_eq!(
        last.items[0].error.as_ref().unwrap().code,
        "invalid_model_output"
    );
    assert!(
        s.blobs
            .list(&BlobPrefix::area("models"))
            .await
            .unwrap()
            .is_empty()
    );
    stop.cancel();
}

#[tokio::test]
async fn an_account_error_fails_the_item_with_its_code() {
    let s = setup(Scenario::AccountLocked, Duration::ZERO, Duration::ZERO).await;
    let stop = CancellationToken::new();
    tokio::spawn(s.pipeline.worker(worker_config()).run(stop.clone()));
    let job = submit(&s.pipeline).await;
    let last = until_terminal(&s.pipeline, job.job_id).await;
    assert_eq!(
        last.items[0].error.as_ref().unwrap().code,
        "generator_account_error"
    );
    let health = s.pipeline.health().await;
    assert!(matches!(
        health.generators[0].health,
        image2model_core::ports::GeneratorHealth::Unhealthy { ref code, .. } if code == "generator_account_error"
    ));
    stop.cancel();
}

// Multi-threaded: the fake keeps serving while worker A's thread is joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_request_is_resumed_without_a_second_submit() {
    let s = setup(
        Scenario::Success,
        Duration::from_millis(300),
        Duration::from_millis(600),
    )
    .await;
    let job = submit(&s.pipeline).await;

    // Worker A runs on a runtime of its own that is torn down once fal has the
    // request: no release, no cancel sent — as when the process is killed.
    let pipeline = s.pipeline.clone();
    let probe = s.fake.probe();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(
            pipeline
                .worker(worker_config())
                .run(CancellationToken::new()),
        );
        rt.block_on(async {
            eventually("fal receives the submit", || probe.submits() > 0).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    let stored = s.pipeline.job(job.job_id, &Scope::Any).await.unwrap();
    assert_eq!(stored.items[0].status, ItemStatus::Running);
    assert!(
        stored.items[0].remote_request_id.is_some(),
        "the request id is persisted before polling"
    );

    let stop = CancellationToken::new();
    tokio::spawn(s.pipeline.worker(worker_config()).run(stop.clone()));
    let last = until_terminal(&s.pipeline, job.job_id).await;
    assert_eq!(last.status, JobStatus::Succeeded);
    assert_eq!(last.items[0].attempts, 2);
    assert_eq!(s.fake.submits(), 1, "resumed, not paid for twice");
    assert_eq!(s.fake.cancels(), 0);
    stop.cancel();
}

#[tokio::test]
async fn cancelling_a_job_cancels_its_fal_request() {
    let s = setup(Scenario::NeverCompletes, Duration::ZERO, Duration::ZERO).await;
    let stop = CancellationToken::new();
    tokio::spawn(s.pipeline.worker(worker_config()).run(stop.clone()));
    let job = submit(&s.pipeline).await;
    eventually("the request is followed", || {
        s.fake.status_polls() + s.fake.status_streams() > 0
    })
    .await;
    s.pipeline
        .cancel(job.job_id, &Scope::Owner(owner()))
        .await
        .unwrap();
    let last = until_terminal(&s.pipeline, job.job_id).await;
    assert_eq!(last.status, JobStatus::Cancelled);
    for _ in 0..200 {
        if s.fake.cancels() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.fake.cancels(), 1);
    stop.cancel();
}
