//! The client IP behind proxies: forwarding headers count only from
//! `TRUSTED_PROXIES`. Observed through the rate limit, which is per client IP.

use crate::helpers::{TestApp, USER_KEY, spawn_app_with};

/// A server with an upload bucket of 1 whose trusted proxies are `trusted`.
async fn app_trusting(trusted: &'static str) -> TestApp {
    spawn_app_with(move |vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "1".into());
        vars.insert("TRUSTED_PROXIES".into(), trusted.into());
    })
    .await
}

/// The upload policy's status, sent with `headers`.
async fn status_with(app: &TestApp, headers: &[(&str, &str)]) -> u16 {
    let mut req = app
        .client
        .get(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // The test connects from 127.0.0.1, which is not trusted here.
    let app = app_trusting("10.0.0.0/8").await;

    let statuses = [
        status_with(&app, &[("cf-connecting-ip", "198.51.100.1")]).await,
        status_with(&app, &[("cf-connecting-ip", "198.51.100.2")]).await,
        status_with(&app, &[("x-forwarded-for", "198.51.100.3")]).await,
        status_with(&app, &[("x-real-ip", "198.51.100.4")]).await,
        status_with(&app, &[("forwarded", "for=198.51.100.5")]).await,
    ];

    assert_eq!(
        statuses,
        [200, 429, 429, 429, 429],
        "one bucket: the peer's"
    );
}

#[tokio::test]
async fn with_no_trusted_proxies_at_all_the_peer_is_the_client() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "1".into());
    })
    .await;

    let first = status_with(&app, &[("cf-connecting-ip", "198.51.100.1")]).await;
    let second = status_with(&app, &[("cf-connecting-ip", "198.51.100.2")]).await;

    assert_eq!((first, second), (200, 429));
}

#[tokio::test]
async fn a_trusted_peer_passes_cf_connecting_ip_first() {
    let app = app_trusting("127.0.0.1/32").await;

    let first = status_with(
        &app,
        &[
            ("cf-connecting-ip", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.1"),
        ],
    )
    .await;
    // Same CF-Connecting-IP, different X-Forwarded-For: the same client.
    let same_client = status_with(
        &app,
        &[
            ("cf-connecting-ip", "198.51.100.1"),
            ("x-forwarded-for", "203.0.113.2"),
        ],
    )
    .await;
    let other_client = status_with(
        &app,
        &[
            ("cf-connecting-ip", "198.51.100.2"),
            ("x-forwarded-for", "203.0.113.1"),
        ],
    )
    .await;

    assert_eq!((first, same_client, other_client), (200, 429, 200));
}

#[tokio::test]
async fn a_trusted_peer_without_cf_header_passes_the_right_most_untrusted_forwarded_entry() {
    let app = app_trusting("127.0.0.1/32,10.0.0.0/8").await;

    // The client wrote the left entry itself; the right-most untrusted entry
    // is the one a trusted proxy saw.
    let first = status_with(
        &app,
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")],
    )
    .await;
    let forged_left = status_with(&app, &[("x-forwarded-for", "7.7.7.7, 198.51.100.7")]).await;
    let other = status_with(&app, &[("x-forwarded-for", "6.6.6.6, 198.51.100.8")]).await;

    assert_eq!((first, forged_left, other), (200, 429, 200));
}

#[tokio::test]
async fn a_garbage_forwarded_header_from_a_trusted_peer_falls_back_to_the_peer() {
    let app = app_trusting("127.0.0.1/32").await;

    let garbage = status_with(
        &app,
        &[
            ("cf-connecting-ip", "not-an-ip"),
            ("x-forwarded-for", "<script>"),
        ],
    )
    .await;
    let peer_again = status_with(&app, &[]).await;

    assert_eq!(
        (garbage, peer_again),
        (200, 429),
        "both counted as 127.0.0.1"
    );
}
