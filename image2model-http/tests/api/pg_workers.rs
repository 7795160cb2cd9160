//! Fault drill: two worker processes on one Postgres (and an API process),
//! one killed with SIGKILL while it holds an item whose FAL request is in
//! flight. Every item ends succeeded and FAL saw exactly one submit per
//! item: the survivor resumes the dead worker's request by its stored id.

use std::time::Duration;

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{USER_KEY, png};
use crate::process::{free_port, fresh_postgres_schema, start_role, wait_for, wait_job_end};

/// The items with a FAL request submitted and a live claim.
async fn running_with_request(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT item_id FROM items WHERE status = 'running' AND remote_request_id IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

async fn item_status(url: &str, item_id: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT status FROM items WHERE item_id = $1")
        .bind(item_id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_of_two_postgres_workers_mid_fal_keeps_one_submit_per_item() {
    let Some(url) = fresh_postgres_schema("the two-worker Postgres kill drill").await else {
        return;
    };
    let fake = FakeFal::start(FakeFalConfig {
        queue_time: Duration::from_millis(2500),
        progress_time: Duration::from_millis(2500),
        ..FakeFalConfig::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("DATABASE_URL", url.clone()),
        ("FAL_API_KEY", fake.key().to_owned()),
        ("FAL_QUEUE_BASE_URL", fake.queue_base_url()),
        ("FAL_STORAGE_BASE_URL", fake.storage_base_url()),
        ("WORKER_LEASE_SECONDS", "1".to_owned()),
        ("MAX_FILES", "4".to_owned()),
    ];
    let api = start_role(free_port(), data.path(), &env, "api").await;
    // The first worker takes one FAL request at a time, so it holds
    // exactly one item; the second takes the rest.
    let mut one_at_a_time = env.clone();
    one_at_a_time.push(("FAL_MAX_IN_FLIGHT", "1".to_owned()));
    let mut doomed = start_role(free_port(), data.path(), &one_at_a_time, "worker").await;
    let client = reqwest::Client::new();

    let mut jobs = Vec::new();
    for _ in 0..2 {
        let form = Form::new()
            .part("files", Part::bytes(png(32, 24)).file_name("a.png"))
            .part("files", Part::bytes(png(24, 32)).file_name("b.png"));
        let resp = client
            .post(format!("{}/api/v1/upload", api.base))
            .bearer_auth(USER_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let job: Value = resp.json().await.unwrap();
        jobs.push(job["job_id"].as_str().unwrap().to_owned());
    }

    // The first worker (alone so far) holds an item whose request FAL is
    // working on; then the second starts and takes the others.
    let held = wait_for(
        30,
        "the first worker holds an item with a FAL request",
        || {
            let url = url.clone();
            async move {
                let items = running_with_request(&url).await;
                (items.len() == 1).then_some(items)
            }
        },
    )
    .await;
    let _survivor = start_role(free_port(), data.path(), &env, "worker").await;
    wait_for(30, "both workers hold items with a FAL request", || {
        let url = url.clone();
        async move { (running_with_request(&url).await.len() >= 2).then_some(()) }
    })
    .await;

    // kill -9 the first while its item is still in flight at FAL.
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    drop(doomed);
    assert_eq!(
        item_status(&url, &held[0]).await,
        "running",
        "the killed worker's item was still in flight"
    );
    assert!(fake.submits() >= 2);

    for job_id in &jobs {
        let done = wait_job_end(&client, &api.base, job_id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        for item in done["items"].as_array().unwrap() {
            assert_eq!(item["status"], "succeeded", "{item}");
        }
    }
    assert_eq!(
        fake.submits(),
        4,
        "one FAL submit per item, the dead worker's request resumed, not paid again"
    );
}
