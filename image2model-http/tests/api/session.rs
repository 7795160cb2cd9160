//! A person's session on the page, on the deployment guide's default
//! limits (issue 16's "Done when"): ten five-image jobs in a row, followed
//! through one event stream, each model fetched once (the page reuses it
//! for the preview and the download), without a single 429; while the
//! guide's limits still hold for the API itself.

use std::time::{Duration, Instant};

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, textured_glb};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::events::Events;
use crate::helpers::{TestApp, USER_KEY, error_code, fake_fal_vars, png, spawn_app_configured};

/// The server of the guide: default rate limits (10 uploads a minute, 100
/// requests an hour, per IP), five files per upload, the fake FAL.
async fn default_limits_app(
    fake: &FakeFal,
    tweak: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> TestApp {
    let fal = fake_fal_vars(fake);
    spawn_app_configured(move |vars| {
        vars.remove("RATE_LIMIT_UPLOAD_PER_MINUTE");
        vars.remove("RATE_LIMIT_PER_HOUR");
        vars.insert("MAX_FILES".into(), "5".into());
        vars.extend(fal);
        tweak(vars);
    })
    .await
}

/// Fails on a 429, naming the request.
fn no_429(what: &str, resp: &reqwest::Response) {
    assert_ne!(resp.status(), 429, "{what} was rate limited");
}

/// The least time one job takes a person: upload, wait, look at five
/// models. Real FAL jobs take tens of seconds; the fake takes a tenth of a
/// second, so the test waits out the rest of this. It is what lets the
/// page's eleventh upload-bucket request (the policy and ten uploads) in
/// after the bucket's ten at once: one slot comes back every 6 s.
const LEAST_TIME_PER_JOB: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_five_image_jobs_in_a_row_on_the_default_limits_meet_no_429() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = default_limits_app(&fake, |_| {}).await;
    let mut requests = 0;

    // The page opens: the upload policy, the one event stream, the job list.
    let policy = app.upload_policy(Some(USER_KEY)).await;
    no_429("the policy", &policy);
    let policy: Value = policy.json().await.unwrap();
    assert_eq!(policy["max_files"], 5);
    let mut events = Events::open(&app.client, &app.base, "", USER_KEY).await;
    events.until(|e| e.kind == "synced").await;
    let list = app.list_jobs("", USER_KEY).await;
    no_429("the job list", &list);
    requests += 3;

    let mut models = 0;
    for job_number in 0..10 {
        let started = Instant::now();
        let mut form = Form::new();
        for i in 0..5 {
            form = form.part(
                "files",
                Part::bytes(png(16 + i, 16)).file_name(format!("photo-{job_number}-{i}.png")),
            );
        }
        let upload = app.upload_form(form, Some(USER_KEY), None).await;
        no_429("an upload", &upload);
        assert_eq!(upload.status(), 202);
        requests += 1;
        let job: Value = upload.json().await.unwrap();
        let job_id = job["job_id"].as_str().unwrap().to_owned();

        // Followed through the one stream: no request per job.
        let seen = events
            .until(|e| {
                e.data["job_id"] == job_id.as_str()
                    && ["succeeded", "partial", "failed", "cancelled"]
                        .contains(&e.data["status"].as_str().unwrap_or(""))
            })
            .await;
        let done = &seen.last().unwrap().data;
        assert_eq!(done["status"], "succeeded", "{done}");

        // Each model fetched once: shown in the viewer, saved from memory.
        for item in done["items"].as_array().unwrap() {
            let resp = app
                .download(item["model_url"].as_str().unwrap(), None, USER_KEY)
                .await;
            no_429("a model download", &resp);
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.bytes().await.unwrap().as_ref(),
                textured_glb().as_slice()
            );
            requests += 1;
            models += 1;
        }
        if let Some(rest) = LEAST_TIME_PER_JOB.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }

    assert_eq!(models, 50);
    assert_eq!(requests, 3 + 10 + 50);
}

#[tokio::test]
async fn the_general_limit_still_holds_for_ordinary_calls_after_a_session() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = default_limits_app(&fake, |_| {}).await;
    // A session's general-bucket requests: the stream and the job list,
    // and model downloads, which draw from their own bucket.
    let _events = Events::open(&app.client, &app.base, "?timeout_seconds=60", USER_KEY).await;
    app.list_jobs("", USER_KEY).await;
    let job = app.upload_ok(vec![("a.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();
    for _ in 0..20 {
        assert_eq!(app.download(&url, None, USER_KEY).await.status(), 200);
    }

    // Ordinary calls: the guide's 100 an hour, less the three above
    // (the stream, the list and the per-job stream that waited for the end).
    let mut passed = 0;
    let refused = loop {
        let resp = app.list_jobs("", USER_KEY).await;
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 200);
        passed += 1;
        assert!(passed <= 100, "never limited");
    };

    assert_eq!(passed, 97);
    assert_eq!(refused.headers()["ratelimit-limit"], "100");
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(error_code(refused).await, "rate_limited");
}

#[tokio::test]
async fn downloads_have_their_own_per_ip_bucket() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = default_limits_app(&fake, |vars| {
        vars.insert("RATE_LIMIT_DOWNLOADS_PER_HOUR".into(), "3".into());
    })
    .await;
    let job = app.upload_ok(vec![("a.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let mut statuses = Vec::new();
    let mut limits = Vec::new();
    for _ in 0..4 {
        let resp = app.download(&url, None, USER_KEY).await;
        statuses.push(resp.status().as_u16());
        limits.push(
            resp.headers()["ratelimit-limit"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    let list = app.list_jobs("", USER_KEY).await;

    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(limits, ["3"; 4]);
    // The general bucket is untouched by downloads.
    assert_eq!(list.status(), 200);
    assert_eq!(list.headers()["ratelimit-limit"], "100");
    assert_eq!(list.headers()["ratelimit-remaining"], "98");
}
