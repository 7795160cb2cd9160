//! CORS: exact origins only; preflights from listed and unlisted origins.

use crate::helpers::{TestApp, USER_KEY, spawn_app_with};

const LISTED: &str = "https://app.example";

async fn app_with_origins(origins: &'static str) -> TestApp {
    spawn_app_with(move |vars| {
        vars.insert("BACKEND_CORS_ORIGINS".into(), origins.into());
    })
    .await
}

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_allowed_for_the_api_methods_and_headers() {
    let app = app_with_origins("https://app.example, https://other.example").await;

    for (path, method) in [
        ("/api/v1/upload", "POST"),
        ("/api/v1/jobs", "GET"),
        ("/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", "DELETE"),
    ] {
        let resp = preflight(&app, path, LISTED, method).await;

        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], LISTED, "{path}");
        let methods = h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .to_ascii_uppercase();
        assert!(methods.contains(method), "{path}: {methods}");
        let headers = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(headers.contains("authorization"), "{headers}");
        assert!(
            h.get("access-control-allow-credentials").is_none(),
            "no credentials mode"
        );
    }
}

#[tokio::test]
async fn a_preflight_from_an_unlisted_origin_gets_no_allow_origin() {
    let app = app_with_origins(LISTED).await;

    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "https://evilapp.example",
        "http://app.example",
        "https://app.example:8443",
        "null",
        "HTTPS://APP.EXAMPLE.",
    ] {
        let resp = preflight(&app, "/api/v1/jobs", origin, "GET").await;

        assert!(
            resp.headers().get("access-control-allow-origin").is_none(),
            "{origin}"
        );
        assert!(!resp.status().is_success(), "{origin}: {}", resp.status());
        assert_eq!(
            resp.headers()["x-frame-options"],
            "DENY",
            "headers on refusals too"
        );
    }
}

#[tokio::test]
async fn a_request_from_a_listed_origin_exposes_the_rate_limit_and_request_id_headers() {
    let app = app_with_origins(LISTED).await;

    let resp = app
        .client
        .get(app.url("/api/v1/jobs"))
        .bearer_auth(USER_KEY)
        .header("origin", LISTED)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], LISTED);
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "x-request-id",
        "retry-after",
        "ratelimit-remaining",
        "content-disposition",
    ] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }
}

#[tokio::test]
async fn a_request_from_an_unlisted_origin_gets_no_allow_origin() {
    let app = app_with_origins(LISTED).await;

    let resp = app
        .client
        .get(app.url("/api/v1/jobs"))
        .bearer_auth(USER_KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();

    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_wildcard_in_development_allows_no_origin_at_all() {
    let app = app_with_origins("*").await;

    let resp = preflight(&app, "/api/v1/jobs", "https://evil.example", "GET").await;

    assert!(resp.headers().get("access-control-allow-origin").is_none());
}
