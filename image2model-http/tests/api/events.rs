//! `GET /api/v1/events`: one stream for all of a key's jobs.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{OTHER_KEY, TestApp, USER_KEY, error_code, png, spawn_app_with};
use crate::process::{free_port, start_role};

/// An open event stream, read one event at a time.
pub struct Events {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

/// One event: its type and its data as JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub data: Value,
}

impl Events {
    /// Opens `GET {base}/api/v1/events{query}` as `key`; panics unless 200.
    pub async fn open(client: &reqwest::Client, base: &str, query: &str, key: &str) -> Events {
        let resp = client
            .get(format!("{base}/api/v1/events{query}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Events {
            body: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event within `within`; `None` when the stream ended.
    /// Panics when none comes in time.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next_event())
            .await
            .expect("an event in time")
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(kind) = kind {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(Event { kind, data });
                }
            }
            let chunk = self.body.next().await?.expect("stream chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until `done` says the last one is reached (at most 30 s).
    pub async fn until(&mut self, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let event = self
                .next(Duration::from_secs(30))
                .await
                .expect("the stream stays open");
            let last = done(&event);
            seen.push(event);
            if last {
                return seen;
            }
        }
    }
}

fn is_terminal(status: &Value) -> bool {
    ["succeeded", "partial", "failed", "cancelled"].contains(&status.as_str().unwrap_or(""))
}

/// Uploads one image for the `test-hold` model (runs until cancelled).
async fn upload_hold(app: &TestApp) -> Value {
    let form = Form::new()
        .part("files", Part::bytes(png(8, 8)).file_name("hold.png"))
        .text("model", "test-hold");
    let resp = app.upload_form(form, Some(USER_KEY), None).await;
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_stream_sends_active_jobs_then_every_change_of_new_jobs_and_stays_open() {
    let app = spawn_app_with(|_| {}).await;
    let held = upload_hold(&app).await;
    let held_id = held["job_id"].as_str().unwrap().to_owned();
    // An ended job before the stream opens is not sent.
    let old = app.upload_ok(vec![("old.png", png(8, 8))]).await;
    app.wait_for_end(old["job_id"].as_str().unwrap()).await;

    let mut events = Events::open(&app.client, &app.base, "", USER_KEY).await;
    let opening = events.until(|e| e.kind == "synced").await;
    let job = app.upload_ok(vec![("new.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let new_job = events
        .until(|e| e.data["job_id"] == job_id.as_str() && is_terminal(&e.data["status"]))
        .await;
    app.delete_job(&held_id, USER_KEY).await;
    let held_end = events
        .until(|e| e.data["job_id"] == held_id.as_str() && is_terminal(&e.data["status"]))
        .await;

    // Opening: the one active job, then `synced`.
    assert_eq!(opening.len(), 2, "{opening:?}");
    assert_eq!(opening[0].kind, "job");
    assert_eq!(opening[0].data["job_id"], held_id.as_str());
    assert!(!is_terminal(&opening[0].data["status"]));
    assert_eq!(opening[1].data["active"], 1);
    // The new job: job events carrying its id, in the per-job stream's
    // shape, progress never falling, ending succeeded with its model.
    assert!(new_job.iter().all(|e| e.kind == "job"));
    assert!(new_job.iter().all(|e| e.data["job_id"] == job_id.as_str()));
    let progress: Vec<u64> = new_job
        .iter()
        .map(|e| e.data["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let last = &new_job.last().unwrap().data;
    assert_eq!(last["status"], "succeeded");
    assert!(last["items"][0]["model_url"].is_string());
    assert_eq!(
        last,
        &app.get_job(&job_id, USER_KEY)
            .await
            .json::<Value>()
            .await
            .unwrap()
    );
    // The held job's end is its last event.
    assert_eq!(held_end.last().unwrap().data["status"], "cancelled");
    // Nothing more, and the stream stays open (keep-alives only).
    let quiet = tokio::time::timeout(Duration::from_millis(1500), events.next_event()).await;
    assert!(quiet.is_err(), "no event and no end: {quiet:?}");
}

#[tokio::test]
async fn the_stream_shows_only_the_callers_jobs() {
    let app = spawn_app_with(|_| {}).await;
    let mut mine = Events::open(&app.client, &app.base, "", USER_KEY).await;
    let mut theirs = Events::open(&app.client, &app.base, "", OTHER_KEY).await;
    mine.until(|e| e.kind == "synced").await;
    theirs.until(|e| e.kind == "synced").await;

    let job = app.upload_ok(vec![("mine.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let seen = mine
        .until(|e| e.data["job_id"] == job_id.as_str() && is_terminal(&e.data["status"]))
        .await;

    assert!(!seen.is_empty());
    let other = tokio::time::timeout(Duration::from_millis(1500), theirs.next_event()).await;
    assert!(other.is_err(), "the other key saw nothing: {other:?}");
}

#[tokio::test]
async fn timeout_seconds_closes_the_stream_and_bad_values_are_400() {
    let app = spawn_app_with(|_| {}).await;

    let mut events = Events::open(&app.client, &app.base, "?timeout_seconds=1", USER_KEY).await;
    let first = events.next(Duration::from_secs(20)).await;
    let end = events.next(Duration::from_secs(20)).await;
    let zero = app
        .get("/api/v1/events?timeout_seconds=0", Some(USER_KEY))
        .await;
    let text = app
        .get("/api/v1/events?timeout_seconds=soon", Some(USER_KEY))
        .await;
    let no_key = app.get("/api/v1/events", None).await;

    assert_eq!(first.unwrap().kind, "synced");
    assert!(end.is_none(), "the stream ended after a second");
    assert_eq!(zero.status(), 400);
    assert_eq!(error_code(text).await, "invalid_request");
    assert_eq!(no_key.status(), 401);
}

#[tokio::test]
async fn a_key_has_at_most_its_cap_of_streams_and_a_closed_stream_frees_its_slot() {
    let app = spawn_app_with(|vars| {
        vars.insert("MAX_EVENT_STREAMS_PER_KEY".into(), "2".into());
    })
    .await;
    let first = Events::open(&app.client, &app.base, "", USER_KEY).await;
    let _second = Events::open(&app.client, &app.base, "", USER_KEY).await;

    let third = app.get("/api/v1/events", Some(USER_KEY)).await;
    let retry_after = third.headers().get("retry-after").cloned();
    let code = error_code(third).await;
    // Another key has its own slots.
    let _other = Events::open(&app.client, &app.base, "", OTHER_KEY).await;
    assert_eq!(app.app.state.event_streams.total(), 3);
    // A client that goes away gives its slot back: nothing lingers.
    drop(first);
    let mut reopened = None;
    for _ in 0..200 {
        let resp = app.get("/api/v1/events", Some(USER_KEY)).await;
        if resp.status() == 200 {
            reopened = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(code, "too_many_streams");
    assert!(retry_after.is_some(), "429 carries Retry-After");
    assert!(reopened.is_some(), "the closed stream's slot came back");
    drop(reopened);
    drop(_second);
    drop(_other);
    for _ in 0..200 {
        if app.app.state.event_streams.total() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "streams still counted after every client left: {}",
        app.app.state.event_streams.total()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_of_an_api_process_follows_jobs_run_by_a_separate_worker_process() {
    let data = tempfile::tempdir().unwrap();
    let env = vec![("JOB_CACHE_TTL_MS", "0".to_owned())];
    let api = start_role(free_port(), data.path(), &env, "api").await;
    let client = reqwest::Client::new();
    let mut events = Events::open(&client, &api.base, "", USER_KEY).await;
    events.until(|e| e.kind == "synced").await;

    let form = Form::new().part("files", Part::bytes(png(8, 8)).file_name("a.png"));
    let job: Value = client
        .post(format!("{}/api/v1/upload", api.base))
        .bearer_auth(USER_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let queued = events.next(Duration::from_secs(10)).await.unwrap();
    // Only now a worker: the job can only end in another process.
    let _worker = start_role(free_port(), data.path(), &env, "worker").await;
    let rest = events
        .until(|e| e.data["job_id"] == job_id.as_str() && is_terminal(&e.data["status"]))
        .await;

    assert_eq!(queued.data["job_id"], job_id.as_str());
    assert_eq!(queued.data["status"], "queued");
    assert_eq!(rest.last().unwrap().data["status"], "succeeded");
}
