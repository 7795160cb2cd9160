//! `GET /api/v1/admin/disk-usage`, `POST /api/v1/admin/cleanup` and the
//! `RETENTION_HOURS` task. Old jobs and files are made old by moving their
//! times back: `updated_at_ms` in the SQLite database, mtimes on disk.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use image2model_core::domain::{BlobKey, ItemId, JobId};
use image2model_http::cleanup::CleanupSchedule;
use serde_json::Value;

use crate::helpers::{ADMIN_KEY, TestApp, USER_KEY, error_code, png, spawn_app, spawn_app_built};

const HOUR_MS: i64 = 3_600_000;

/// A connection pool to the app's SQLite database, beside the server's.
async fn database(app: &TestApp) -> sqlx::SqlitePool {
    let url = format!(
        "sqlite://{}",
        app.dir.path().join("image2model.db").display()
    );
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// Moves a job's times `hours` back in the database.
async fn age_job(app: &TestApp, job_id: &str, hours: i64) {
    let pool = database(app).await;
    let done = sqlx::query(
        "UPDATE jobs SET updated_at_ms = updated_at_ms - ?, created_at_ms = created_at_ms - ? \
         WHERE job_id = ?",
    )
    .bind(hours * HOUR_MS)
    .bind(hours * HOUR_MS)
    .bind(job_id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;
}

/// Moves the modification time of the stored files under `prefix` (e.g.
/// `models/<job_id>`) `hours` back.
fn age_files(app: &TestApp, prefix: &str, hours: u64) {
    let when = SystemTime::now() - Duration::from_secs(hours * 3600);
    let dir = app.dir.path().join("blobs").join(prefix);
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(when)
                    .unwrap();
            }
        }
    }
}

/// The stored keys of a job.
async fn files_of(app: &TestApp, job_id: &str) -> Vec<String> {
    app.blob_keys()
        .await
        .into_iter()
        .filter(|k| k.split('/').nth(1) == Some(job_id))
        .collect()
}

/// A finished job (relief model) and its id.
async fn finished_job(app: &TestApp) -> String {
    let job = app.upload_ok(vec![("a.png", png(24, 24))]).await;
    let id = job["job_id"].as_str().unwrap().to_owned();
    let end = app.wait_for_end(&id).await;
    assert_eq!(end["status"], "succeeded");
    id
}

/// An old finished job, a recent finished job and an old orphan model file:
/// `(old_job, recent_job, orphan_key)`.
async fn old_recent_and_orphan(app: &TestApp) -> (String, String, String) {
    let old = finished_job(app).await;
    let recent = finished_job(app).await;
    age_job(app, &old, 48).await;
    for area in ["uploads", "models", "previews"] {
        if app.dir.path().join("blobs").join(area).join(&old).exists() {
            age_files(app, &format!("{area}/{old}"), 48);
        }
    }
    let orphan_job = JobId::new();
    let orphan = BlobKey::model(orphan_job, ItemId::new());
    app.app
        .state
        .pipeline
        .blob_store()
        .put_bytes(&orphan, Bytes::from_static(b"orphan model"))
        .await
        .unwrap();
    age_files(app, &format!("models/{orphan_job}"), 48);
    (old, recent, orphan.as_str().to_owned())
}

#[tokio::test]
async fn disk_usage_counts_what_was_uploaded_and_generated() {
    let app = spawn_app().await;
    let (a, b) = (png(20, 20), png(40, 30));
    let uploaded = (a.len() + b.len()) as u64;
    let job = app.upload_ok(vec![("a.png", a), ("b.png", b)]).await;
    app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let store = app.app.state.pipeline.blob_store().clone();
    let models: u64 = store
        .list(&image2model_core::domain::BlobPrefix::parse("models").unwrap())
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .sum();

    let resp = app.disk_usage(ADMIN_KEY).await;

    assert_eq!(resp.status(), 200);
    let usage: Value = resp.json().await.unwrap();
    assert_eq!(usage["uploads"]["bytes"], uploaded);
    assert_eq!(usage["uploads"]["objects"], 2);
    assert_eq!(usage["models"]["objects"], 2);
    assert_eq!(usage["models"]["bytes"], models);
    let total = &usage["total"];
    assert_eq!(
        total["bytes"].as_u64().unwrap(),
        uploaded + models + usage["previews"]["bytes"].as_u64().unwrap()
    );
    let disk = &usage["disk"];
    assert!(disk["total_bytes"].as_u64().unwrap() > 0);
    assert!(disk["free_bytes"].as_u64().unwrap() <= disk["total_bytes"].as_u64().unwrap());
}

#[tokio::test]
async fn disk_usage_and_cleanup_are_for_admins_only() {
    let app = spawn_app().await;

    assert_eq!(app.disk_usage(USER_KEY).await.status(), 403);
    assert_eq!(app.cleanup(24, true, USER_KEY).await.status(), 403);
    assert_eq!(
        app.get("/api/v1/admin/disk-usage", None).await.status(),
        401
    );
}

#[tokio::test]
async fn a_dry_run_reports_old_jobs_and_orphans_and_removes_nothing() {
    let app = spawn_app().await;
    let (old, recent, orphan) = old_recent_and_orphan(&app).await;
    let before = app.blob_keys().await;

    let resp = app.cleanup(24, true, ADMIN_KEY).await;

    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["jobs_removed"], 1);
    assert_eq!(report["job_ids"], serde_json::json!([old]));
    assert_eq!(
        report["job_files"]["objects"],
        files_of(&app, &old).await.len()
    );
    assert_eq!(report["orphan_files"]["objects"], 1);
    assert_eq!(report["orphan_files"]["bytes"], b"orphan model".len());
    assert_eq!(app.blob_keys().await, before, "a dry run removes no file");
    assert_eq!(app.get_job(&old, USER_KEY).await.status(), 200);
    assert_eq!(app.get_job(&recent, USER_KEY).await.status(), 200);
    assert!(app.blob_keys().await.contains(&orphan));
}

#[tokio::test]
async fn cleanup_removes_old_jobs_with_their_files_and_orphans_and_keeps_recent_jobs() {
    let app = spawn_app().await;
    let (old, recent, orphan) = old_recent_and_orphan(&app).await;
    let old_files = files_of(&app, &old).await;
    let recent_files = files_of(&app, &recent).await;
    assert!(!old_files.is_empty());

    let resp = app.cleanup(24, false, ADMIN_KEY).await;

    assert_eq!(resp.status(), 200);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["job_ids"], serde_json::json!([old]));
    assert_eq!(report["job_files"]["objects"], old_files.len());
    assert_eq!(report["orphan_files"]["objects"], 1);
    assert_eq!(
        app.get_job(&old, USER_KEY).await.status(),
        404,
        "the row is gone"
    );
    assert!(files_of(&app, &old).await.is_empty(), "its files are gone");
    assert!(
        !app.blob_keys().await.contains(&orphan),
        "the orphan is gone"
    );
    assert_eq!(app.get_job(&recent, USER_KEY).await.status(), 200);
    assert_eq!(files_of(&app, &recent).await, recent_files);
    let again: Value = app
        .cleanup(24, false, ADMIN_KEY)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["jobs_removed"], 0, "nothing is left to remove");
}

#[tokio::test]
async fn cleanup_needs_an_age_of_at_least_an_hour_and_an_explicit_dry_run() {
    let app = spawn_app().await;

    let zero = app.cleanup(0, false, ADMIN_KEY).await;
    let missing = app
        .post_json(
            "/api/v1/admin/cleanup",
            &serde_json::json!({ "older_than_hours": 24 }),
            Some(ADMIN_KEY),
        )
        .await;

    assert_eq!(zero.status(), 400);
    assert_eq!(error_code(zero).await, "invalid_request");
    assert_eq!(missing.status(), 400);
}

/// An app whose retention task runs every 200 ms, with `var` set to `value`.
async fn with_retention_every_200ms(var: &str, value: &str) -> TestApp {
    spawn_app_built(
        |vars| {
            vars.insert(var.into(), value.into());
        },
        |b| {
            b.cleanup_schedule(CleanupSchedule {
                first_after: Duration::from_millis(200),
                every: Duration::from_millis(200),
            })
        },
    )
    .await
}

#[tokio::test]
async fn the_retention_task_removes_what_is_older_than_retention_hours() {
    let app = with_retention_every_200ms("RETENTION_HOURS", "24").await;
    let old = finished_job(&app).await;
    let recent = finished_job(&app).await;

    age_job(&app, &old, 25).await;

    // A removal deletes the job's row, then its files: wait for the run to
    // finish both, not just the first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while app.get_job(&old, USER_KEY).await.status() != 404
        || !files_of(&app, &old).await.is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old job and its files are removed within a few runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(files_of(&app, &old).await.is_empty());
    assert_eq!(app.get_job(&recent, USER_KEY).await.status(), 200);
    let audit = app.audit_ok("?limit=1000").await;
    let run = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "cleanup")
        .expect("the run is audited");
    assert_eq!(run["detail"]["trigger"], "schedule");
    assert_eq!(run["detail"]["jobs"], 1);
}

/// Adds an audit record of `kind`, `days` back, straight into the database.
async fn old_audit_record(app: &TestApp, kind: &str, days: i64) {
    let pool = database(app).await;
    let at_ms = chrono::Utc::now().timestamp_millis() - days * 24 * HOUR_MS;
    sqlx::query(
        "INSERT INTO audit_events (at_ms, kind, actor, client_ip, request_id, detail) \
         VALUES (?, ?, NULL, NULL, NULL, '{}')",
    )
    .bind(at_ms)
    .bind(kind)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn the_retention_task_prunes_audit_records_older_than_audit_retention_days() {
    let app = with_retention_every_200ms("AUDIT_RETENTION_DAYS", "30").await;
    old_audit_record(&app, "test_old", 31).await;
    old_audit_record(&app, "test_kept", 29).await;

    let kinds = |audit: &Value| -> Vec<String> {
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let audit = loop {
        let audit = app.audit_ok("?limit=1000").await;
        if !kinds(&audit).iter().any(|k| k == "test_old") {
            break audit;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 31-day-old record is pruned within a few runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        kinds(&audit).iter().any(|k| k == "test_kept"),
        "the 29-day-old record is kept"
    );
    let run = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "cleanup" && e["detail"]["audit_events"] == 1)
        .expect("the run that pruned is audited with its count");
    assert_eq!(run["detail"]["trigger"], "schedule");
}
