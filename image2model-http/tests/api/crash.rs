//! The real `image2model` binary killed with SIGKILL while FAL works on an
//! item, then started again: the job completes, and fal saw one submit.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{USER_KEY, png};

/// Kills the server when a test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, data: &std::path::Path, fake: &FakeFal) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_image2model"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(data)
        .env("API_KEY", USER_KEY)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data.join("jobs.db").display()),
        )
        .env(
            "STORAGE_URL",
            format!("file://{}", data.join("blobs").display()),
        )
        .env("FAL_API_KEY", fake.key())
        .env("FAL_QUEUE_BASE_URL", fake.queue_base_url())
        .env("FAL_STORAGE_BASE_URL", fake.storage_base_url())
        .env("WORKER_LEASE_SECONDS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the image2model binary starts");
    Server(child)
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become healthy");
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

    let mut server = start(port, data.path(), &fake);
    wait_healthy(&client, &base).await;
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

    // Once fal is being polled, the request id is in the database: kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.status_polls() == 0 {
        assert!(Instant::now() < deadline, "fal was never polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    assert_eq!(fake.submits(), 1);
    drop(server);

    let _server = start(port, data.path(), &fake);
    wait_healthy(&client, &base).await;
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
