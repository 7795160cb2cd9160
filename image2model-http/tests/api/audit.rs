//! `GET /api/v1/admin/audit`: every kind of event is recorded, newest first,
//! and no key material ever appears in it.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{ADMIN_KEY, USER_KEY, spawn_app, spawn_app_with};

/// The events of `kind` in an audit page.
fn of_kind<'a>(page: &'a Value, kind: &str) -> Vec<&'a Value> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn every_event_kind_is_recorded_and_no_key_material_is_shown() {
    let app = spawn_app().await;
    let wrong_key = "i2m_not-a-real-key-0123456789abcdef0123456789";
    // auth_failed: no key, then an unknown key.
    assert_eq!(app.upload_policy(None).await.status(), 401);
    assert_eq!(app.upload_policy(Some(wrong_key)).await.status(), 401);
    // forbidden: a user key on an admin route.
    assert_eq!(app.list_keys(USER_KEY).await.status(), 403);
    // key_created, key_revoked.
    let created = app.create_key_ok("audited", "user").await;
    let (secret, prefix) = (
        created["secret"].as_str().unwrap().to_owned(),
        created["prefix"].as_str().unwrap().to_owned(),
    );
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(app.revoke_key(&key_id, ADMIN_KEY).await.status(), 204);
    // job_deleted.
    let job = app
        .upload_ok(vec![("a.png", crate::helpers::png(16, 16))])
        .await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    assert_eq!(app.admin_delete_job(&job_id, ADMIN_KEY).await.status(), 200);
    // cleanup.
    assert_eq!(app.cleanup(24, true, ADMIN_KEY).await.status(), 200);

    let resp = app
        .get("/api/v1/admin/audit?limit=1000", Some(ADMIN_KEY))
        .await;

    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for material in [USER_KEY, ADMIN_KEY, wrong_key, &secret, &prefix] {
        assert!(
            !text.contains(material),
            "{material:?} appears in the audit"
        );
    }
    let page: Value = serde_json::from_str(&text).unwrap();
    let failures = of_kind(&page, "auth_failed");
    let reasons: Vec<&str> = failures
        .iter()
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"missing_credentials"), "{reasons:?}");
    assert!(reasons.contains(&"unknown_or_revoked_key"), "{reasons:?}");
    let unknown = failures
        .iter()
        .find(|e| e["detail"]["reason"] == "unknown_or_revoked_key")
        .unwrap();
    let fingerprint = unknown["detail"]["key_fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 12);
    assert_eq!(unknown["detail"]["path"], "/api/v1/upload");
    assert_eq!(unknown["client_ip"], "127.0.0.1");
    assert!(
        unknown["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    let forbidden = of_kind(&page, "forbidden");
    assert_eq!(forbidden[0]["actor"], "bootstrap-user");
    let key_created = of_kind(&page, "key_created");
    assert_eq!(key_created[0]["actor"], "bootstrap-admin");
    assert_eq!(key_created[0]["detail"]["key_id"], key_id.as_str());
    assert_eq!(
        of_kind(&page, "key_revoked")[0]["detail"]["key_id"],
        key_id.as_str()
    );
    let deleted = of_kind(&page, "job_deleted");
    assert_eq!(deleted[0]["detail"]["job_id"], job_id.as_str());
    assert_eq!(deleted[0]["detail"]["owner"], "bootstrap-user");
    let cleanup = of_kind(&page, "cleanup");
    assert_eq!(cleanup[0]["detail"]["dry_run"], true);
    assert_eq!(cleanup[0]["detail"]["trigger"], "admin");
}

#[tokio::test]
async fn rate_limit_refusals_are_recorded() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "1".into());
    })
    .await;
    assert_eq!(app.upload_policy(Some(USER_KEY)).await.status(), 200);

    let refused = app.upload_policy(Some(USER_KEY)).await;

    assert_eq!(refused.status(), 429);
    let page = app.audit_ok("").await;
    let limited = of_kind(&page, "rate_limited");
    assert_eq!(limited.len(), 1, "{page}");
    assert_eq!(limited[0]["detail"]["path"], "/api/v1/upload");
    assert_eq!(limited[0]["client_ip"], "127.0.0.1");
    assert!(!page.to_string().contains(USER_KEY));
}

#[tokio::test]
async fn the_audit_is_newest_first_and_pages_with_before() {
    let app = spawn_app().await;
    for name in ["first", "second", "third"] {
        app.create_key_ok(name, "user").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let page = app.audit_ok("?limit=2").await;

    let names: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["third", "second"]);
    let before = page["next_before"].as_str().expect("a next page");
    let next = app
        .audit_ok(&format!(
            "?limit=2&before={}",
            before.replace('+', "%2B").replace(':', "%3A")
        ))
        .await;
    let names: Vec<&str> = next["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first"]);
    assert!(next["next_before"].is_null());
}

#[tokio::test]
async fn the_audit_is_for_admins_only() {
    let app = spawn_app().await;

    let as_user = app.get("/api/v1/admin/audit", Some(USER_KEY)).await;
    let bad_limit = app
        .get("/api/v1/admin/audit?limit=0", Some(ADMIN_KEY))
        .await;

    assert_eq!(as_user.status(), 403);
    assert_eq!(bad_limit.status(), 400);
}
