use serde_json::Value;

use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, png, spawn_app};

#[tokio::test]
async fn system_health_reports_status_disk_queue_stores_and_generators() {
    let app = spawn_app().await;

    let resp = app.system_health(Some(ADMIN_KEY)).await;

    assert_eq!(resp.status(), 200);
    let h: Value = resp.json().await.unwrap();
    assert!(["healthy", "warning", "critical"].contains(&h["status"].as_str().unwrap()));
    assert!(h["disk"]["total_bytes"].as_u64().unwrap() > 0);
    assert!(h["disk"]["used_percent"].as_f64().is_some());
    assert_eq!(h["queue"]["queued"], 0);
    assert_eq!(h["job_store"]["ok"], true);
    assert_eq!(h["blob_store"]["ok"], true);
    assert_eq!(h["generators"][0]["name"], "relief");
    assert_eq!(h["generators"][0]["state"], "healthy");
    let text = h.to_string();
    assert!(!text.contains('/'), "no paths in the report: {text}");
}

#[tokio::test]
async fn admins_see_every_owners_jobs_with_owners() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;

    let resp = app.admin_jobs(ADMIN_KEY).await;

    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["jobs"][0]["job_id"], job["job_id"]);
    assert_eq!(list["jobs"][0]["owner"], "bootstrap-user");
}

#[tokio::test]
async fn admins_remove_any_job_with_its_files() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap();
    app.wait_for_end(job_id).await;

    let resp = app.admin_delete_job(job_id, ADMIN_KEY).await;

    assert_eq!(resp.status(), 200);
    let removed: Value = resp.json().await.unwrap();
    assert_eq!(removed["job_id"], job_id);
    assert_eq!(app.get_job(job_id, USER_KEY).await.status(), 404);
    assert!(app.blob_keys().await.is_empty());
    let again = app.admin_delete_job(job_id, ADMIN_KEY).await;
    assert_eq!(again.status(), 404);
    assert_eq!(error_code(again).await, "not_found");
}
