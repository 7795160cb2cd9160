//! The pipeline and worker through their public API, on the in-memory stores.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use image2model_core::domain::{ApiKeyId, BlobPrefix, ItemStatus, JobStatus, ModelName};
use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
use image2model_core::pipeline::{OwnerEvent, Removal};
use image2model_core::ports::{BlobStore, ClaimOptions, GenerateError, JobStore};
use image2model_core::testing::generators::{Script, ScriptedGenerator, minimal_glb};
use image2model_core::testing::images;
use image2model_core::validate::UploadLimits;
use image2model_core::{Generators, Pipeline, PipelineConfig, Scope, SubmitOptions, WorkerConfig};
use tokio_util::sync::CancellationToken;

struct Harness {
    pipeline: Pipeline,
    jobs: Arc<MemoryJobStore>,
    blobs: Arc<MemoryBlobStore>,
    generator: Arc<ScriptedGenerator>,
    owner: ApiKeyId,
}

fn harness(script: Script) -> Harness {
    let jobs = Arc::new(MemoryJobStore::default());
    let blobs = Arc::new(MemoryBlobStore::default());
    let generator = Arc::new(ScriptedGenerator::new("scripted", script));
    let config = PipelineConfig {
        limits: UploadLimits {
            max_files: 3,
            max_file_bytes: 200_000,
            max_request_bytes: 300_000,
            max_image_pixels: 1_000_000,
            max_image_side: 2000,
        },
        event_poll_interval: Duration::from_millis(200),
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(
        jobs.clone(),
        blobs.clone(),
        Generators::new(vec![generator.clone()]).unwrap(),
        config,
    );
    Harness {
        pipeline,
        jobs,
        blobs,
        generator,
        owner: ApiKeyId::bootstrap_user(),
    }
}

fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        concurrency: 2,
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

fn start_worker(
    pipeline: &Pipeline,
    config: WorkerConfig,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(pipeline.worker(config).run(stop.clone()));
    (stop, handle)
}

fn png(w: u32, h: u32) -> (String, Bytes) {
    ("photo.png".to_owned(), Bytes::from(images::png(w, h)))
}

async fn wait_terminal(
    h: &Harness,
    job: image2model_core::domain::JobId,
) -> image2model_core::domain::Job {
    let scope = Scope::Owner(h.owner.clone());
    let events = h.pipeline.subscribe(job, &scope).await.unwrap();
    let all: Vec<_> = tokio::time::timeout(Duration::from_secs(10), events.collect::<Vec<_>>())
        .await
        .expect("job ends");
    all.last().cloned().unwrap()
}

async fn blob_count(h: &Harness) -> usize {
    h.blobs.list(&BlobPrefix::root()).await.unwrap().len()
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
async fn an_upload_becomes_a_stored_model_with_rising_progress() {
    let h = harness(Script::Succeed(minimal_glb()));
    let (stop, worker) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(
            &h.owner,
            vec![png(30, 20), ("b.jpg".into(), images::jpeg(10, 10).into())],
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.items.len(), 2);

    let events = h
        .pipeline
        .subscribe(job.job_id, &Scope::Owner(h.owner.clone()))
        .await
        .unwrap();
    let seen: Vec<_> = tokio::time::timeout(Duration::from_secs(10), events.collect::<Vec<_>>())
        .await
        .unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.status, JobStatus::Succeeded);
    assert_eq!(last.progress.get(), 100);
    assert!(
        seen.windows(2).all(|w| w[0].progress <= w[1].progress),
        "progress went down"
    );

    let item = &last.items[0];
    let (_, object) = h
        .pipeline
        .model(job.job_id, item.item_id, &Scope::Owner(h.owner.clone()))
        .await
        .unwrap();
    let bytes: Vec<u8> = object.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(Bytes::from(bytes), minimal_glb());
    assert_eq!(h.generator.calls(), 2);
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_rejected_file_stores_nothing_and_creates_no_job() {
    let h = harness(Script::Succeed(minimal_glb()));
    let cases: Vec<(Vec<(String, Bytes)>, &str)> = vec![
        (
            vec![
                png(10, 10),
                (
                    "evil.png".into(),
                    Bytes::from_static(b"<script>alert(1)</script>"),
                ),
            ],
            "unsupported_type",
        ),
        (
            vec![png(10, 10), ("empty.png".into(), Bytes::new())],
            "empty_file",
        ),
        (
            vec![
                png(10, 10),
                (
                    "bomb.png".into(),
                    images::png_header_only(50_000, 50_000).into(),
                ),
            ],
            "image_too_large",
        ),
        (
            vec![png(10, 10), png(10, 10), png(10, 10), png(10, 10)],
            "too_many_files",
        ),
        (
            vec![
                png(10, 10),
                ("big.png".into(), {
                    let mut b = images::png(10, 10);
                    b.resize(200_001, 0);
                    b.into()
                }),
            ],
            "file_too_large",
        ),
        (vec![], "no_files"),
    ];
    for (files, code) in cases {
        let err = h
            .pipeline
            .submit(&h.owner, files, SubmitOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), code);
        assert_eq!(blob_count(&h).await, 0, "blobs left after {code}");
        assert_eq!(
            h.jobs.stats().await.unwrap().jobs,
            0,
            "job created after {code}"
        );
    }
}

#[tokio::test]
async fn an_unknown_model_is_refused_and_its_files_removed() {
    let h = harness(Script::Succeed(minimal_glb()));
    let options = SubmitOptions {
        model: Some(ModelName::parse("nope").unwrap()),
        ..SubmitOptions::default()
    };
    let err = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], options)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unknown_model");
    assert_eq!(blob_count(&h).await, 0);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job() {
    let h = harness(Script::Succeed(minimal_glb()));
    let options = SubmitOptions {
        idempotency_key: Some("retry-42".into()),
        ..SubmitOptions::default()
    };
    let first = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], options.clone())
        .await
        .unwrap();
    let second = h
        .pipeline
        .submit(&h.owner, vec![png(12, 12)], options.clone())
        .await
        .unwrap();
    assert_eq!(first.job_id, second.job_id);
    assert_eq!(h.jobs.stats().await.unwrap().jobs, 1);
    assert_eq!(blob_count(&h).await, 1);
    let bad = SubmitOptions {
        idempotency_key: Some("has space".into()),
        ..SubmitOptions::default()
    };
    assert_eq!(
        h.pipeline
            .submit(&h.owner, vec![png(10, 10)], bad)
            .await
            .unwrap_err()
            .code(),
        "invalid_idempotency_key"
    );
}

#[tokio::test]
async fn another_owner_sees_not_found() {
    let h = harness(Script::Succeed(minimal_glb()));
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    let stranger = Scope::Owner(ApiKeyId::parse("someone-else").unwrap());
    assert_eq!(
        h.pipeline
            .job(job.job_id, &stranger)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(
        h.pipeline
            .cancel_or_delete(job.job_id, &stranger)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert!(h.pipeline.subscribe(job.job_id, &stranger).await.is_err());
    assert!(
        h.pipeline
            .list_jobs(&stranger, 10, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(h.pipeline.job(job.job_id, &Scope::Any).await.is_ok());
}

#[tokio::test]
async fn failures_are_recorded_with_their_code_and_the_job_is_failed() {
    let h = harness(Script::Fail(GenerateError::ContentPolicy("flagged".into())));
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(last.status, JobStatus::Failed);
    assert_eq!(
        last.items[0].error.as_ref().unwrap().code,
        "content_policy_violation"
    );
    let err = h
        .pipeline
        .model(job.job_id, last.items[0].item_id, &Scope::Any)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "model_not_ready");
    stop.cancel();
}

#[tokio::test]
async fn invalid_generator_output_fails_the_item_and_stores_no_model() {
    let h = harness(Script::Succeed(Bytes::from_static(
        b"this is not a glb file at all",
    )));
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(
        last.items[0].error.as_ref().unwrap().code,
        "invalid_model_output"
    );
    assert!(
        h.blobs
            .list(&BlobPrefix::area("models"))
            .await
            .unwrap()
            .is_empty()
    );
    stop.cancel();
}

#[tokio::test]
async fn a_panicking_generator_fails_the_item_and_the_worker_goes_on() {
    let h = harness(Script::Panic);
    let (stop, worker) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(last.items[0].error.as_ref().unwrap().code, "internal_error");
    h.generator.set_script(Script::Succeed(minimal_glb()));
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    assert_eq!(
        wait_terminal(&h, job.job_id).await.status,
        JobStatus::Succeeded
    );
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_generator() {
    let h = harness(Script::Hang {
        remote_request: None,
    });
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    eventually("the generator is called", || h.generator.calls() > 0).await;
    let removal = h
        .pipeline
        .cancel_or_delete(job.job_id, &Scope::Owner(h.owner.clone()))
        .await
        .unwrap();
    assert!(matches!(removal, Removal::Cancelled(ref j) if j.status == JobStatus::Cancelled));
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(last.items[0].status, ItemStatus::Cancelled);
    // Deleting the ended job removes it and its files.
    let removal = h
        .pipeline
        .cancel_or_delete(job.job_id, &Scope::Owner(h.owner.clone()))
        .await
        .unwrap();
    assert!(matches!(removal, Removal::Deleted(_)));
    assert_eq!(blob_count(&h).await, 0);
    assert_eq!(
        h.pipeline
            .job(job.job_id, &Scope::Any)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    stop.cancel();
}

#[tokio::test]
async fn an_item_left_running_by_a_crashed_worker_is_reclaimed_after_its_lease() {
    let h = harness(Script::Succeed(minimal_glb()));
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    // A worker that claims and then dies: its lease is never renewed.
    let crashed = h
        .jobs
        .claim_next(ClaimOptions {
            lease: Duration::from_millis(200),
            max_attempts: 3,
            models: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(crashed.item.status, ItemStatus::Running);
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(last.status, JobStatus::Succeeded);
    assert_eq!(last.items[0].attempts, 2);
    stop.cancel();
}

#[tokio::test]
async fn a_remote_request_is_resumed_after_a_crash() {
    let h = harness(Script::Hang {
        remote_request: Some("req-123".into()),
    });
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();

    // Worker A runs on its own runtime, which is torn down mid-generation: no
    // release, no cleanup, just like a killed process.
    let pipeline = h.pipeline.clone();
    let generator = h.generator.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(pipeline.worker(fast_worker()).run(CancellationToken::new()));
        rt.block_on(async {
            eventually("the generator is called", || generator.calls() > 0).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        rt.shutdown_background();
    })
    .join()
    .unwrap();
    let stored = h.pipeline.job(job.job_id, &Scope::Any).await.unwrap();
    assert_eq!(
        stored.items[0].remote_request_id.as_deref(),
        Some("req-123")
    );
    assert_eq!(stored.items[0].status, ItemStatus::Running);

    h.generator.set_script(Script::Succeed(minimal_glb()));
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    assert_eq!(
        wait_terminal(&h, job.job_id).await.status,
        JobStatus::Succeeded
    );
    let requests = h.generator.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].resume_remote_request, None);
    assert_eq!(
        requests[1].resume_remote_request.as_deref(),
        Some("req-123")
    );
    stop.cancel();
}

#[tokio::test]
async fn an_item_whose_workers_keep_dying_fails_as_worker_lost() {
    let h = harness(Script::Succeed(minimal_glb()));
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    let options = ClaimOptions {
        lease: Duration::from_millis(50),
        max_attempts: 2,
        models: None,
    };
    for _ in 0..2 {
        assert!(h.jobs.claim_next(options.clone()).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(h.jobs.claim_next(options.clone()).await.unwrap().is_none());
    let stored = h.pipeline.job(job.job_id, &Scope::Any).await.unwrap();
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(stored.items[0].error.as_ref().unwrap().code, "worker_lost");
}

#[tokio::test]
async fn shutdown_releases_items_still_running_after_the_grace_period() {
    let h = harness(Script::Hang {
        remote_request: None,
    });
    let (stop, worker) = start_worker(&h.pipeline, fast_worker());
    let job = h
        .pipeline
        .submit(&h.owner, vec![png(10, 10)], SubmitOptions::default())
        .await
        .unwrap();
    eventually("the generator is called", || h.generator.calls() > 0).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("worker stops within its grace")
        .unwrap();
    let stored = h.pipeline.job(job.job_id, &Scope::Any).await.unwrap();
    assert_eq!(stored.items[0].status, ItemStatus::Queued);

    h.generator.set_script(Script::Succeed(minimal_glb()));
    let (stop, _w) = start_worker(&h.pipeline, fast_worker());
    assert_eq!(
        wait_terminal(&h, job.job_id).await.status,
        JobStatus::Succeeded
    );
    stop.cancel();
}

#[tokio::test]
async fn one_failing_item_makes_the_job_partial() {
    let h = harness(Script::Succeed(minimal_glb()));
    let (stop, _w) = start_worker(
        &h.pipeline,
        WorkerConfig {
            concurrency: 1,
            ..fast_worker()
        },
    );
    // The second file's model is made after the script changes.
    h.generator
        .set_script(Script::Delay(Duration::from_millis(100)));
    let job = h
        .pipeline
        .submit(
            &h.owner,
            vec![png(10, 10), png(11, 11)],
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    eventually("the generator is called", || h.generator.calls() > 0).await;
    h.generator
        .set_script(Script::Fail(GenerateError::Unavailable("down".into())));
    let last = wait_terminal(&h, job.job_id).await;
    assert_eq!(last.status, JobStatus::Partial);
    assert_eq!(last.items[0].status, ItemStatus::Succeeded);
    assert_eq!(
        last.items[1].error.as_ref().unwrap().code,
        "generator_unavailable"
    );
    stop.cancel();
}

#[tokio::test]
async fn jobs_are_listed_newest_first_with_a_cursor() {
    let h = harness(Script::Succeed(minimal_glb()));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            h.pipeline
                .submit(&h.owner, vec![png(8, 8)], SubmitOptions::default())
                .await
                .unwrap()
                .job_id,
        );
    }
    let scope = Scope::Owner(h.owner.clone());
    let page1 = h.pipeline.list_jobs(&scope, 2, None).await.unwrap();
    assert_eq!(
        page1.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let page2 = h
        .pipeline
        .list_jobs(&scope, 2, page1.next_cursor)
        .await
        .unwrap();
    assert_eq!(
        page2.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let page3 = h
        .pipeline
        .list_jobs(&scope, 2, page2.next_cursor)
        .await
        .unwrap();
    assert_eq!(page3.jobs.len(), 1);
    assert!(page3.next_cursor.is_none());
}

#[tokio::test]
async fn a_slow_owner_stream_reader_gets_each_jobs_latest_state_not_a_backlog() {
    let h = harness(Script::Succeed(minimal_glb()));
    let stranger = ApiKeyId::parse("stranger").unwrap();
    let mut events = Box::pin(h.pipeline.subscribe_owner(h.owner.clone()));
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, OwnerEvent::Synced { active: 0 });

    // Changes while the reader reads nothing: three jobs made and cancelled,
    // and another owner's job.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = h
            .pipeline
            .submit(&h.owner, vec![png(8, 8)], SubmitOptions::default())
            .await
            .unwrap();
        h.pipeline
            .cancel(job.job_id, &Scope::Owner(h.owner.clone()))
            .await
            .unwrap();
        ids.push(job.job_id);
    }
    h.pipeline
        .submit(&stranger, vec![png(8, 8)], SubmitOptions::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(700), events.next()).await
    {
        seen.push(event);
    }

    // One event per job: its last state, the queued ones coalesced away.
    assert_eq!(seen.len(), 3, "{seen:?}");
    for event in &seen {
        let OwnerEvent::Job(job) = event else {
            panic!("a job event: {event:?}");
        };
        assert!(ids.contains(&job.job_id));
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.owner, h.owner);
    }
}
