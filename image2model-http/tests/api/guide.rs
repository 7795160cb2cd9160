//! The deployment guide's "Testing Security" section, run as written: real
//! `curl` (reqwest when curl is missing) over a socket against a production
//! server that answers to `yourdomain.com`, with the default limits.

use serde_json::Value;

use crate::helpers::{ADMIN_KEY, TestApp, USER_KEY, has_curl, spawn_app_with};

const HOST: &str = "yourdomain.com";

/// One `curl [-H "Authorization: Bearer KEY"] URL` of the guide:
/// (status, body).
async fn guide_curl(app: &TestApp, path: &str, key: Option<&str>) -> (u16, Value) {
    let port = app.app.addr.port();
    let url = format!("http://{HOST}:{port}{path}");
    if has_curl() {
        // tokio's Command: the server runs on this test's runtime thread.
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "--resolve"])
            .arg(format!("{HOST}:{port}:127.0.0.1"));
        if let Some(key) = key {
            cmd.arg("-H").arg(format!("Authorization: Bearer {key}"));
        }
        let out = cmd.arg(&url).output().await.expect("curl runs");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').expect("status line");
        (status.parse().unwrap(), serde_json::from_str(body).unwrap())
    } else {
        println!("curl not installed: running the guide's commands with reqwest");
        let client = reqwest::Client::builder()
            .resolve(HOST, app.app.addr)
            .build()
            .unwrap();
        let mut req = client.get(&url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }
}

#[tokio::test]
async fn the_guides_testing_security_commands_behave_as_it_says() {
    let app = spawn_app_with(|vars| {
        vars.insert("ENVIRONMENT".into(), "production".into());
        vars.insert("SECRET_KEY".into(), "7".repeat(64));
        vars.insert("ALLOWED_HOSTS".into(), HOST.into());
        // The guide's limits: 10 uploads a minute, 100 requests an hour.
        vars.remove("RATE_LIMIT_UPLOAD_PER_MINUTE");
        vars.remove("RATE_LIMIT_PER_HOUR");
    })
    .await;

    // 1. Test Authentication.
    let (no_key, no_key_body) = guide_curl(&app, "/api/v1/upload", None).await;
    let (with_key, policy) = guide_curl(&app, "/api/v1/upload", Some(USER_KEY)).await;
    assert_eq!(no_key, 401, "should fail without API key");
    assert_eq!(no_key_body["error"]["code"], "unauthorized");
    assert_eq!(with_key, 200, "should succeed with API key");
    assert!(policy["max_files"].is_u64(), "{policy}");

    // 2. Test Rate Limiting: `for i in {1..15}; do curl …/upload; done`.
    let mut loop_statuses = Vec::new();
    for _ in 1..=15 {
        let (status, body) = guide_curl(&app, "/api/v1/upload", Some(USER_KEY)).await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
        }
        loop_statuses.push(status);
    }
    // The two requests of block 1 came from the same IP and count too: the
    // 11th upload-bucket request of this client is the first refused.
    let all: Vec<u16> = [no_key, with_key]
        .into_iter()
        .chain(loop_statuses)
        .collect();
    assert!(all[..10].iter().all(|s| *s != 429), "{all:?}");
    assert!(
        all[10..].iter().all(|s| *s == 429),
        "rate limit errors after 10: {all:?}"
    );

    // 3. Test Admin Endpoints.
    let (user_on_admin, user_body) =
        guide_curl(&app, "/api/v1/admin/system-health", Some(USER_KEY)).await;
    let (admin, health) = guide_curl(&app, "/api/v1/admin/system-health", Some(ADMIN_KEY)).await;
    assert_eq!(user_on_admin, 403, "should fail with regular API key");
    assert_eq!(user_body["error"]["code"], "forbidden");
    assert_eq!(admin, 200, "should succeed with admin key");
    assert!(health["status"].is_string(), "{health}");
}

#[tokio::test]
async fn a_host_other_than_allowed_hosts_is_refused_in_production() {
    let app = spawn_app_with(|vars| {
        vars.insert("ENVIRONMENT".into(), "production".into());
        vars.insert("SECRET_KEY".into(), "7".repeat(64));
        vars.insert("ALLOWED_HOSTS".into(), HOST.into());
    })
    .await;

    // The test client sends `Host: 127.0.0.1:PORT`.
    let resp = app.upload_policy(Some(USER_KEY)).await;

    assert_eq!(resp.status(), 400);
    assert_eq!(crate::helpers::error_code(resp).await, "invalid_host");
}
