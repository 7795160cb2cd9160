//! Backpressure: a full queue (`MAX_QUEUED_ITEMS`) and too many uploads in
//! progress on one instance (`MAX_CONCURRENT_UPLOADS`) answer 503
//! `overloaded` with `Retry-After`, store nothing, and let uploads through
//! again once there is room, without a restart.

use std::time::Duration;

use futures::StreamExt;
use image2model_http::ServeRole;
use serde_json::Value;

use crate::helpers::{USER_KEY, file_part, png, spawn_app_built, spawn_app_with};

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_queue_refuses_uploads_with_503_until_there_is_room() {
    // The API role alone: nothing takes items off the queue.
    let app = spawn_app_built(
        |v| {
            v.insert("MAX_QUEUED_ITEMS".into(), "2".into());
        },
        |b| b.role(ServeRole::Api),
    )
    .await;
    let job = app
        .upload_ok(vec![("a.png", png(8, 8)), ("b.png", png(8, 8))])
        .await;
    let files_before = app.stored_files();

    let resp = app.upload(vec![("c.png", png(8, 8))]).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(retry_after(&resp), 5);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 items are waiting"), "{message}");
    assert_eq!(
        app.stored_files(),
        files_before,
        "a refused upload stores nothing"
    );
    assert_eq!(app.job_count().await, 1);

    // Room again (the job is cancelled: its items no longer wait):
    // accepted, once the count is re-read.
    let resp = app
        .delete_job(job["job_id"].as_str().unwrap(), USER_KEY)
        .await;
    assert!(resp.status().is_success());
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.upload_ok(vec![("d.png", png(8, 8))]).await;
}

#[tokio::test]
async fn uploads_past_the_instances_cap_are_refused_while_others_stream() {
    let app = spawn_app_with(|v| {
        v.insert("MAX_CONCURRENT_UPLOADS".into(), "1".into());
    })
    .await;
    // An upload whose body stalls halfway until told to go on.
    let boundary = "i2m-test-boundary";
    let image = png(16, 12);
    let mut head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(&image[..image.len() / 2]);
    let mut tail = image[image.len() / 2..].to_vec();
    tail.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures::stream::once(async move {
            let _ = wait.await;
            Ok(tail)
        }),
    );
    let slow = app
        .client
        .post(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let slow = tokio::spawn(slow);
    // Wait until the stalled upload holds the one slot.
    let mut refused = None;
    for _ in 0..100 {
        let resp = app.upload(vec![("b.png", png(8, 8))]).await;
        if resp.status() == 503 {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("an upload was refused while the slot was held");
    assert_eq!(retry_after(&refused), 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");

    go.send(()).unwrap();
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 202, "the stalled upload completes");
    // The slot is free again.
    let form = reqwest::multipart::Form::new().part("files", file_part("c.png", png(8, 8)));
    assert_eq!(
        app.upload_form(form, Some(USER_KEY), None).await.status(),
        202
    );
}
