//! Ownership: every job route answers another key's job exactly like a job
//! that does not exist (404 `not_found`), and changes nothing.

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use serde_json::Value;

use crate::helpers::{OTHER_KEY, TestApp, USER_KEY, error_code, png, spawn_app_with_fal};

/// A server on the fake FAL (whose models make previews) and one finished
/// job of the user's: (app, job id, model URL, preview URL).
async fn finished_job() -> (TestApp, FakeFal, String, String, String) {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = spawn_app_with_fal(&fake).await;
    let job = app.upload_ok(vec![("mine.png", png(16, 16))]).await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_for_end(&job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let item = &done["items"][0];
    let model = item["model_url"].as_str().expect("model_url").to_owned();
    let preview = item["preview_url"]
        .as_str()
        .expect("preview_url")
        .to_owned();
    (app, fake, job_id, model, preview)
}

#[tokio::test]
async fn another_key_gets_404_on_every_job_route_and_the_owner_keeps_the_job() {
    let (app, _fake, job_id, model, preview) = finished_job().await;
    let job_path = format!("/api/v1/jobs/{job_id}");
    let events_path = format!("{job_path}/events");

    let others = [
        ("get", app.get(&job_path, Some(OTHER_KEY)).await),
        ("events", app.get(&events_path, Some(OTHER_KEY)).await),
        ("model", app.get(&model, Some(OTHER_KEY)).await),
        (
            "model obj",
            app.get(&format!("{model}?format=obj"), Some(OTHER_KEY))
                .await,
        ),
        ("preview", app.get(&preview, Some(OTHER_KEY)).await),
        ("delete", app.delete(&job_path, Some(OTHER_KEY)).await),
    ];
    let other_list: Value = app.list_jobs("", OTHER_KEY).await.json().await.unwrap();

    for (route, resp) in others {
        assert_eq!(resp.status(), 404, "{route}");
        assert_eq!(error_code(resp).await, "not_found", "{route}");
    }
    assert_eq!(
        other_list["jobs"].as_array().unwrap().len(),
        0,
        "list: none of theirs"
    );
    // The owner still has everything: the other key's DELETE did nothing.
    let mine: Value = app.list_jobs("", USER_KEY).await.json().await.unwrap();
    assert_eq!(mine["jobs"][0]["job_id"], job_id.as_str());
    assert_eq!(app.get(&job_path, Some(USER_KEY)).await.status(), 200);
    assert_eq!(app.get(&model, Some(USER_KEY)).await.status(), 200);
    assert_eq!(app.get(&preview, Some(USER_KEY)).await.status(), 200);
    assert_eq!(
        app.events(&job_id, USER_KEY).await.last().unwrap()["status"],
        "succeeded"
    );
    assert_eq!(app.delete(&job_path, Some(USER_KEY)).await.status(), 204);
}

#[tokio::test]
async fn another_keys_job_and_a_missing_job_answer_the_same_bytes_but_the_request_id() {
    let (app, _fake, job_id, _, _) = finished_job().await;
    let missing = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    let theirs = app
        .get(&format!("/api/v1/jobs/{job_id}"), Some(OTHER_KEY))
        .await;
    let none = app
        .get(&format!("/api/v1/jobs/{missing}"), Some(OTHER_KEY))
        .await;

    let strip = |v: Value| {
        let mut v = v;
        v["error"]["request_id"] = Value::Null;
        v
    };
    assert_eq!(theirs.status(), none.status());
    assert_eq!(
        strip(theirs.json().await.unwrap()),
        strip(none.json().await.unwrap())
    );
}
