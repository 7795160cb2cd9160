//! The real `image2model` binary killed with SIGKILL while FAL works on an
//! item, then started again: the job completes, and fal saw one submit.

use std::time::{Duration, Instant};

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{USER_KEY, png};
use crate::process::{free_port, start};

fn fal_env(fake: &FakeFal) -> Vec<(&'static str, String)> {
    vec![
        ("FAL_API_KEY", fake.key().to_owned()),
        ("FAL_QUEUE_BASE_URL", fake.queue_base_url()),
        ("FAL_STORAGE_BASE_URL", fake.storage_base_url()),
        ("WORKER_LEASE_SECONDS", "1".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_request_completes_the_job_after_restart_with_one_submit() {
    let fake = FakeFal::start(FakeFalConfig {
        queue_time: Duration::from_millis(800),
        progress_time: Duration::from_millis(800),
        ..FakeFalConfig::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut server = start(port, data.path(), &fal_env(&fake)).await;
    let form = Form::new().part("files", Part::bytes(png(32, 24)).file_name("chair.png"));
    let job: Value = client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    // Once fal's status is being followed (stream or poll), the request id
    // is in the database: kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.status_polls() + fake.status_streams() == 0 {
        assert!(Instant::now() < deadline, "fal's status was never followed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert_eq!(fake.submits(), 1);
    drop(server);

    let _server = start(port, data.path(), &fal_env(&fake)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let job: Value = client
            .get(format!("{base}/api/v1/jobs/{job_id}"))
            .bearer_auth(USER_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "partial" | "cancelled")
        ) {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish after the restart: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        fake.submits(),
        1,
        "the restarted server resumed the request instead of paying again"
    );
    let model = client
        .get(format!(
            "{base}{}",
            done["items"][0]["model_url"].as_str().unwrap()
        ))
        .bearer_auth(USER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(model.status(), 200);
    assert!(gltf::Gltf::from_slice(&model.bytes().await.unwrap()).is_ok());
}
