//! The deployment guide's "Testing Security" commands, against default limits.

use std::time::Duration;

use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, png, spawn_app_built, spawn_app_with};

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

/// The `RateLimit-*` and `Retry-After` values of a response, as numbers.
fn numbers(resp: &reqwest::Response) -> (u64, u64, u64, Option<u64>) {
    let n = |name: &str| -> Option<u64> {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    };
    (
        n("ratelimit-limit").expect("ratelimit-limit"),
        n("ratelimit-remaining").expect("ratelimit-remaining"),
        n("ratelimit-reset").expect("ratelimit-reset"),
        n("retry-after"),
    )
}

#[tokio::test]
async fn exactly_the_limit_passes_and_the_headers_count_down() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "4".into());
    })
    .await;

    let mut seen = Vec::new();
    for _ in 0..5 {
        let resp = app.upload_policy(Some(USER_KEY)).await;
        seen.push((resp.status().as_u16(), numbers(&resp)));
    }

    // 4 per minute: one slot comes back every 15 s.
    assert_eq!(seen[0], (200, (4, 3, 15, None)));
    assert_eq!(seen[1], (200, (4, 2, 30, None)));
    assert_eq!(seen[2], (200, (4, 1, 45, None)));
    assert_eq!(seen[3], (200, (4, 0, 60, None)));
    let (status, (limit, remaining, reset, retry)) = seen[4];
    assert_eq!((status, limit, remaining), (429, 4, 0));
    let retry = retry.expect("retry-after on 429");
    assert!((14..=15).contains(&retry), "retry-after {retry}");
    assert!((59..=60).contains(&reset), "reset {reset}");
}

#[tokio::test]
async fn the_bucket_refills_after_its_window() {
    let app = spawn_app_built(
        |vars| {
            vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
        },
        |b| b.rate_limit_windows(Duration::from_secs(3), Duration::from_secs(3600)),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(app.upload_policy(Some(USER_KEY)).await.status(), 200);
    }
    let refused = app.upload_policy(Some(USER_KEY)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "2", "1.5 s, rounded up");

    // Wide margins: a slot comes back every 1.5 s, the bucket is full after 3 s.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(app.upload_policy(Some(USER_KEY)).await.status().as_u16());
    }

    assert_eq!(
        after,
        [200, 200, 429],
        "a full bucket again, of the same size"
    );
}

#[tokio::test]
async fn each_client_ip_has_its_own_bucket() {
    // The test client connects from 127.0.0.1; a trusted proxy on loopback
    // lets the test speak for several clients.
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
        vars.insert("TRUSTED_PROXIES".into(), "127.0.0.1/32".into());
    })
    .await;
    let from = |ip: &'static str| {
        app.client
            .get(app.url("/api/v1/upload"))
            .bearer_auth(USER_KEY)
            .header("cf-connecting-ip", ip)
            .send()
    };

    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(from("198.51.100.1").await.unwrap().status().as_u16());
    }
    let b = from("198.51.100.2").await.unwrap();

    assert_eq!(a, [200, 200, 429]);
    assert_eq!(b.status(), 200);
    assert_eq!(b.headers()["ratelimit-remaining"], "1");
}

#[tokio::test]
async fn the_upload_bucket_covers_get_and_post_upload_only() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
    })
    .await;

    let policy = app.upload_policy(Some(USER_KEY)).await;
    let post = app.upload(vec![("a.png", png(8, 8))]).await;
    let third = app.upload_policy(Some(USER_KEY)).await;
    let jobs = app.list_jobs("", USER_KEY).await;
    let spec = app.get("/api/v1/openapi.json", None).await;

    assert_eq!(policy.headers()["ratelimit-remaining"], "1");
    assert_eq!(post.status(), 202);
    assert_eq!(post.headers()["ratelimit-remaining"], "0");
    assert_eq!(third.status(), 429);
    assert_eq!(jobs.status(), 200, "the general bucket is separate");
    assert_eq!(jobs.headers()["ratelimit-limit"], "100000");
    assert_eq!(spec.headers()["ratelimit-limit"], "100000");
    for path in ["/health", "/ready", "/", "/static/app.js", "/docs"] {
        let resp = app.get(path, None).await;
        assert!(
            resp.headers().get("ratelimit-limit").is_none(),
            "{path} is not limited"
        );
    }
}

/// Redis for shared-limit tests: `TEST_REDIS_URL`, else skipped.
fn test_redis_url() -> Option<String> {
    let url = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        println!("skipped: set TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) to run this test");
    }
    url
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_budget() {
    let Some(redis) = test_redis_url() else {
        return;
    };
    let prefix = format!("image2model-test:{}", ulid::Ulid::new());
    let spawn = || {
        let redis = redis.clone();
        let prefix = prefix.clone();
        spawn_app_built(
            move |vars| {
                vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "5".into());
                vars.insert("REDIS_URL".into(), redis);
            },
            move |b| b.rate_limit_redis_prefix(prefix),
        )
    };
    let (one, two) = (spawn().await, spawn().await);

    let mut statuses = Vec::new();
    let mut remaining = Vec::new();
    let mut last = None;
    for i in 0..7 {
        let app = if i % 2 == 0 { &one } else { &two };
        let resp = app.upload_policy(Some(USER_KEY)).await;
        statuses.push(resp.status().as_u16());
        remaining.push(numbers(&resp).1);
        last = Some(numbers(&resp));
    }

    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(remaining, [4, 3, 2, 1, 0, 0, 0]);
    // 5 per minute: a slot every 12 s; the bucket is full 60 s after.
    let (limit, _, reset, retry) = last.unwrap();
    assert_eq!(limit, 5);
    assert!(
        (11..=12).contains(&retry.expect("retry-after")),
        "{retry:?}"
    );
    assert!((59..=60).contains(&reset), "{reset}");
}

#[tokio::test]
async fn the_shared_bucket_refills_after_its_window() {
    let Some(redis) = test_redis_url() else {
        return;
    };
    let prefix = format!("image2model-test:{}", ulid::Ulid::new());
    let app = spawn_app_built(
        |vars| {
            vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
            vars.insert("REDIS_URL".into(), redis);
        },
        |b| {
            b.rate_limit_redis_prefix(prefix)
                .rate_limit_windows(Duration::from_secs(3), Duration::from_secs(3600))
        },
    )
    .await;
    let mut before = Vec::new();
    for _ in 0..3 {
        before.push(app.upload_policy(Some(USER_KEY)).await.status().as_u16());
    }

    // Wide margins: a slot comes back every 1.5 s, the bucket is full after 3 s.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(app.upload_policy(Some(USER_KEY)).await.status().as_u16());
    }

    assert_eq!(before, [200, 200, 429]);
    assert_eq!(after, [200, 200, 429]);
}

#[tokio::test]
async fn with_redis_down_each_instance_still_limits_on_its_own() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "2".into());
        vars.insert("REDIS_URL".into(), "redis://127.0.0.1:1".into());
    })
    .await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.upload_policy(Some(USER_KEY)).await.status().as_u16());
    }

    assert_eq!(
        statuses,
        [200, 200, 429],
        "fails open to local limits, not to none"
    );
}
