//! Graceful shutdown: event streams close, the server stops, and the worker
//! releases the item it was generating back to the queue.

use std::time::Duration;

use futures::StreamExt;
use image2model_core::Scope;
use image2model_core::domain::{ItemStatus, JobId};
use reqwest::multipart::Form;
use serde_json::Value;

use crate::helpers::{USER_KEY, file_part, png, spawn_app};

#[tokio::test]
async fn shutdown_ends_event_streams_and_releases_running_items() {
    let app = spawn_app().await;
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("model", "test-hold");
    let job: Value = app
        .upload_form(form, Some(USER_KEY), None)
        .await
        .json()
        .await
        .unwrap();
    let job_id = JobId::parse(job["job_id"].as_str().unwrap()).unwrap();
    let pipeline = app.app.state.pipeline.clone();
    // Wait until the worker holds the item.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let job = pipeline.job(job_id, &Scope::Any).await.unwrap();
            if job.items[0].status == ItemStatus::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the worker claims the item");
    let events = app
        .get(&format!("/api/v1/jobs/{job_id}/events"), Some(USER_KEY))
        .await;
    assert_eq!(events.status(), 200);
    let mut stream = events.bytes_stream();
    let first = stream.next().await.expect("a first event").unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: job"));

    app.app.shutdown.cancel();

    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the event stream closed on shutdown");
    let stopped = tokio::time::timeout(Duration::from_secs(30), app.app.handle)
        .await
        .expect("the server stops");
    stopped.unwrap().unwrap();
    let job = pipeline.job(job_id, &Scope::Any).await.unwrap();
    assert_eq!(
        job.items[0].status,
        ItemStatus::Queued,
        "released for another worker"
    );
    assert!(
        reqwest::get(format!("{}/health", app.base)).await.is_err(),
        "no longer accepting"
    );
}
