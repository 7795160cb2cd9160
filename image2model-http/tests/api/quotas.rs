//! Per-key quotas: items a day and estimated spend, refused with 429
//! `quota_exceeded` before anything is stored, shown by `GET /usage` and
//! `GET /admin/usage`, audited; exact across two instances on one Postgres.

use std::io::Write;
use std::time::Duration;

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestApp, USER_KEY, error_code, file_part, png, spawn_app_with};

/// Uploads `n` images as `key`.
async fn upload_n(app: &TestApp, n: usize, key: &str) -> reqwest::Response {
    let mut form = Form::new();
    for i in 0..n {
        form = form.part("files", file_part(&format!("photo {i}.png"), png(12, 8)));
    }
    app.upload_form(form, Some(key), None).await
}

async fn usage(app: &TestApp, key: &str) -> Value {
    let resp = app.get("/api/v1/usage", Some(key)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

async fn audit_kinds(app: &TestApp) -> Vec<String> {
    app.audit_ok("?limit=200").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_bootstrap_key_is_held_to_its_items_a_day_and_a_refusal_stores_nothing() {
    let app = spawn_app_with(|v| {
        v.insert("API_KEY_ITEMS_PER_DAY".into(), "3".into());
    })
    .await;

    let resp = upload_n(&app, 2, USER_KEY).await;
    assert_eq!(resp.status(), 202);
    let first: Value = resp.json().await.unwrap();
    // Its models are written by the worker: wait, so only the refusal could
    // change the files.
    app.wait_for_end(first["job_id"].as_str().unwrap()).await;
    let stored_before = app.stored_files();
    let jobs_before = app.job_count().await;

    // Two more would make 4 of 3: refused before the first file is stored.
    let resp = upload_n(&app, 2, USER_KEY).await;
    assert_eq!(resp.status(), 429);
    let retry_after: i64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 items a day"), "{message}");
    assert_eq!(
        app.stored_files(),
        stored_before,
        "a refused upload stores nothing"
    );
    assert_eq!(app.job_count().await, jobs_before, "and creates no job");

    // One more fits exactly.
    assert_eq!(upload_n(&app, 1, USER_KEY).await.status(), 202);
    let u = usage(&app, USER_KEY).await;
    assert_eq!(u["key_id"], "bootstrap-user");
    assert_eq!(u["day"]["items"], 3);
    assert_eq!(u["month"]["items"], 3);
    assert_eq!(u["limits"]["items_per_day"], 3);
    assert_eq!(
        u["day"]["period"].as_str().unwrap(),
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    );
    assert_eq!(
        error_code(upload_n(&app, 1, USER_KEY).await).await,
        "quota_exceeded"
    );

    let kinds = audit_kinds(&app).await;
    assert!(kinds.iter().any(|k| k == "quota_exceeded"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "quota_nearly_used").count() == 1,
        "one warning when 80 % was crossed: {kinds:?}"
    );
}

#[tokio::test]
async fn a_created_key_with_a_spend_limit_is_refused_when_the_next_upload_would_pass_it() {
    let app = spawn_app_with(|v| {
        // Make the offline generator cost money so that spend counts.
        v.insert("MODEL_PRICES_USD".into(), "relief=0.40".into());
    })
    .await;
    let resp = app
        .post_json(
            "/api/v1/admin/keys",
            &json!({
                "name": "budget",
                "role": "user",
                "limits": { "spend_per_day_usd": 1.0 }
            }),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let created: Value = resp.json().await.unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();

    assert_eq!(upload_n(&app, 2, &key).await.status(), 202, "$0.80 of $1");
    let resp = upload_n(&app, 1, &key).await;
    assert_eq!(resp.status(), 429, "$1.20 would pass $1");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$1.000000 a day"),
        "{body}"
    );
    // Other keys are not affected.
    assert_eq!(upload_n(&app, 3, USER_KEY).await.status(), 202);

    let u = usage(&app, &key).await;
    assert_eq!(u["day"]["items"], 2);
    assert!(
        (u["day"]["spend_usd"].as_f64().unwrap() - 0.8).abs() < 1e-9,
        "{u}"
    );
    assert_eq!(u["limits"]["spend_per_day_usd"], 1.0);

    let keys: Value = app.list_keys(ADMIN_KEY).await.json().await.unwrap();
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .expect("the key is listed");
    assert_eq!(listed["limits"]["spend_per_day_usd"], 1.0);

    let resp = app.get("/api/v1/admin/usage", Some(ADMIN_KEY)).await;
    assert_eq!(resp.status(), 200);
    let all: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&key_id.as_str()) && ids.contains(&"bootstrap-user"),
        "{all}"
    );
    assert_eq!(
        app.get("/api/v1/admin/usage", Some(USER_KEY))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn limits_that_are_not_dollar_amounts_are_refused_at_key_creation() {
    let app = spawn_app_with(|_| {}).await;
    for limits in [
        json!({ "spend_per_day_usd": -1.0 }),
        json!({ "spend_per_month_usd": -0.000_000_1 }),
        json!({ "spend_per_month_usd": "1" }),
        json!({ "items_per_day": -1 }),
        json!({ "items_per_day": 1.5 }),
    ] {
        let resp = app
            .post_json(
                "/api/v1/admin/keys",
                &json!({ "name": "bad", "role": "user", "limits": limits }),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(error_code(resp).await, "invalid_request", "{limits}");
    }
}

/// A JSON number is a binary fraction: spends are rounded to the
/// micro-dollar (so `0.1 + 0.2` is 0.3, not an error), and an absurd one is
/// held at the largest the stores keep, as good as no limit.
#[tokio::test]
async fn spends_are_rounded_to_the_micro_dollar_and_capped() {
    let app = spawn_app_with(|_| {}).await;
    for (asked, kept) in [
        (0.1 + 0.2, 0.3),
        (0.000_000_4, 0.0),
        (1.234_567_8, 1.234_568),
        (1e300, 9_223_372_036_854.775),
    ] {
        let resp = app
            .post_json(
                "/api/v1/admin/keys",
                &json!({ "name": "k", "role": "user", "limits": { "spend_per_day_usd": asked } }),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(resp.status(), 201, "{asked}");
        let key_id = resp.json::<serde_json::Value>().await.unwrap()["key_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let listed: serde_json::Value = app
            .get("/api/v1/admin/keys", Some(ADMIN_KEY))
            .await
            .json()
            .await
            .unwrap();
        let key = listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == key_id.as_str())
            .unwrap();
        assert_eq!(key["limits"]["spend_per_day_usd"], kept, "{asked}");
    }
}

/// A Postgres URL of a new, empty schema of this test's own, or `None`
/// (with a "skipped" line) without `TEST_DATABASE_URL`.
async fn fresh_postgres_url() -> Option<String> {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "postgres quota test skipped: set TEST_DATABASE_URL to run it"
        );
        return None;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("TEST_DATABASE_URL is set but the server does not answer");
    let schema = format!("i2m_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test]
async fn two_instances_on_one_postgres_accept_exactly_the_limit() {
    let Some(url) = fresh_postgres_url().await else {
        return;
    };
    const LIMIT: usize = 7;
    let config = |v: &mut std::collections::HashMap<String, String>| {
        v.insert("DATABASE_URL".into(), url.clone());
        v.insert("API_KEY_ITEMS_PER_DAY".into(), LIMIT.to_string());
    };
    let a = spawn_app_with(config).await;
    let b = spawn_app_with(config).await;

    // 24 one-image uploads at once, alternating between the instances.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let app = if i % 2 == 0 { &a } else { &b };
        let client = app.client.clone();
        let url = app.url("/api/v1/upload");
        tasks.push(tokio::spawn(async move {
            let form = Form::new().part("files", file_part("photo.png", png(12, 8)));
            client
                .post(url)
                .bearer_auth(USER_KEY)
                .multipart(form)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }));
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            202 => accepted += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, refused), (LIMIT, 24 - LIMIT));
    assert_eq!(usage(&a, USER_KEY).await["day"]["items"], LIMIT);
    assert_eq!(usage(&b, USER_KEY).await["day"]["items"], LIMIT);
}

#[tokio::test]
async fn an_admin_changes_a_keys_limits_and_they_apply_from_its_next_upload() {
    let app = spawn_app_with(|_| {}).await;
    let created = app.create_key_ok("team", "user").await;
    let key = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert_eq!(upload_n(&app, 2, &key).await.status(), 202, "no limits yet");

    let put = |body: Value, id: String| {
        let app = &app;
        async move {
            app.client
                .put(app.url(&format!("/api/v1/admin/keys/{id}/limits")))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = put(json!({ "items_per_day": 2 }), key_id.clone()).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(
        error_code(upload_n(&app, 1, &key).await).await,
        "quota_exceeded",
        "two used of two"
    );
    assert_eq!(usage(&app, &key).await["limits"]["items_per_day"], 2);

    // Lifted again: uploads go through.
    assert_eq!(put(json!({}), key_id.clone()).await.status(), 200);
    assert_eq!(upload_n(&app, 1, &key).await.status(), 202);

    assert_eq!(
        error_code(put(json!({}), "bootstrap-user".into()).await).await,
        "bootstrap_key"
    );
    assert_eq!(
        error_code(put(json!({}), "01M8YFGK7MWBWWHGC6ENQ5V1EX".into()).await).await,
        "not_found"
    );
    let kinds = audit_kinds(&app).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "key_limits_changed").count(),
        2,
        "{kinds:?}"
    );
}
