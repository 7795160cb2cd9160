//! The deployment guide's "Testing Security" commands, against default limits.

use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, spawn_app_with};

#[tokio::test]
async fn fifteen_quick_upload_policy_calls_are_limited_after_ten() {
    let app = spawn_app_with(|vars| {
        vars.remove("RATE_LIMIT_UPLOAD_PER_MINUTE");
        vars.remove("RATE_LIMIT_PER_HOUR");
    })
    .await;

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..15 {
        let resp = app.upload_policy(Some(USER_KEY)).await;
        statuses.push(resp.status().as_u16());
        assert_eq!(resp.headers()["ratelimit-limit"], "10");
        if resp.status() == 429 && limited.is_none() {
            limited = Some(resp);
        }
    }

    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10..], [429; 5]);
    let limited = limited.unwrap();
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert!(limited.headers().contains_key("ratelimit-reset"));
    assert_eq!(error_code(limited).await, "rate_limited");
}

#[tokio::test]
async fn the_general_bucket_is_separate_from_the_upload_bucket() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
        vars.insert("RATE_LIMIT_PER_HOUR".into(), "3".into());
    })
    .await;

    for _ in 0..2 {
        assert_eq!(app.upload_policy(Some(USER_KEY)).await.status(), 200);
    }
    assert_eq!(app.upload_policy(Some(USER_KEY)).await.status(), 429);
    let jobs: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(app.list_jobs("", USER_KEY).await.status().as_u16());
        }
        v
    };

    assert_eq!(jobs, [200, 200, 200, 429]);
    assert_eq!(
        app.get("/health", None).await.status(),
        200,
        "probes are not limited"
    );
}

#[tokio::test]
async fn unauthenticated_requests_count_too() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
    })
    .await;

    let statuses = [
        app.upload_policy(None).await.status(),
        app.upload_policy(Some("guess")).await.status(),
        app.upload_policy(Some(ADMIN_KEY)).await.status(),
    ];

    assert_eq!(statuses.map(|s| s.as_u16()), [401, 401, 429]);
}
