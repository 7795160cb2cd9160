use crate::helpers::{ADMIN_KEY, USER_KEY, png, spawn_app, spawn_app_with};

const PATHS: &[&str] = &[
    "/",
    "/health",
    "/ready",
    "/docs",
    "/static/app.js",
    "/api/v1/openapi.json",
    "/api/v1/upload",
    "/api/v1/jobs",
    "/api/v1/nope",
    "/nope",
];

#[tokio::test]
async fn every_response_has_a_request_id_and_the_security_headers() {
    let app = spawn_app().await;
    for path in PATHS {
        for key in [None, Some(USER_KEY)] {
            let resp = app.get(path, key).await;
            let h = resp.headers();
            let id = h
                .get("x-request-id")
                .unwrap_or_else(|| panic!("{path}: no x-request-id"));
            assert!(!id.is_empty());
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            if path.starts_with("/api/v1") {
                assert_eq!(h["cache-control"], "no-store", "{path}");
                assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'", "{path}");
            }
            assert!(
                h.get("strict-transport-security").is_none(),
                "HSTS in development"
            );
        }
    }
}

#[tokio::test]
async fn the_page_csp_allows_only_its_own_files() {
    let app = spawn_app().await;

    let resp = app.get("/", None).await;

    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"));
    assert!(csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_an_insane_one_replaced() {
    let app = spawn_app().await;
    let get = |id: &'static str| {
        app.client
            .get(app.url("/health"))
            .header("x-request-id", id)
            .send()
    };

    let sane = get("abc-123.X_y").await.unwrap();
    let insane = get("bad id\twith spaces").await.unwrap();
    let long = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "a".repeat(65))
        .send()
        .await
        .unwrap();

    assert_eq!(sane.headers()["x-request-id"], "abc-123.X_y");
    for resp in [insane, long] {
        let id = resp.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 26, "a new ULID: {id}");
    }
}

#[tokio::test]
async fn downloads_are_not_cached_and_not_sniffed() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;

    let resp = app
        .download(
            done["items"][0]["model_url"].as_str().unwrap(),
            None,
            USER_KEY,
        )
        .await;

    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn production_adds_hsts_and_checks_the_host() {
    let app = spawn_app_with(|vars| {
        vars.insert("ENVIRONMENT".into(), "production".into());
        vars.insert("SECRET_KEY".into(), "f".repeat(64));
        vars.insert("ALLOWED_HOSTS".into(), "127.0.0.1".into());
    })
    .await;

    let ok = app.get("/health", None).await;
    let wrong_host = app
        .client
        .get(app.url("/health"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();

    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(wrong_host.status(), 400);
    assert!(wrong_host.headers().contains_key("x-request-id"));
    assert_eq!(crate::helpers::error_code(wrong_host).await, "invalid_host");
}

#[tokio::test]
async fn cors_allows_only_listed_origins() {
    let app = spawn_app_with(|vars| {
        vars.insert("BACKEND_CORS_ORIGINS".into(), "https://app.example".into());
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };

    let allowed = preflight("https://app.example").await.unwrap();
    let denied = preflight("https://evil.example").await.unwrap();

    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn without_configured_origins_no_cors_headers_are_sent() {
    let app = spawn_app().await;

    let resp = app
        .client
        .get(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();

    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

/// Asserts every security header of an `/api/v1` response.
fn assert_api_security_headers(what: &str, h: &reqwest::header::HeaderMap, production: bool) {
    assert!(h.contains_key("x-request-id"), "{what}: x-request-id");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(
        h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
        "{what}"
    );
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert_eq!(
        h.contains_key("strict-transport-security"),
        production,
        "{what}: HSTS only in production"
    );
}

#[tokio::test]
async fn every_status_carries_every_header_200_401_403_404_405_413_429() {
    let app = crate::helpers::spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_PER_HOUR".into(), "9".into());
    })
    .await;
    let job = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

    let cases = [
        ("200", app.list_jobs("", USER_KEY).await),
        ("401", app.list_jobs("", "wrong-key").await),
        ("403", app.admin_jobs(USER_KEY).await),
        ("404 job", app.get_job(job, USER_KEY).await),
        ("404 route", app.get("/api/v1/nope", Some(USER_KEY)).await),
        (
            "405",
            app.client
                .put(app.url("/api/v1/jobs"))
                .bearer_auth(USER_KEY)
                .send()
                .await
                .unwrap(),
        ),
        (
            "413",
            app.client
                .post(app.url("/api/v1/admin/cleanup"))
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 70 * 1024])
                .send()
                .await
                .unwrap(),
        ),
    ];
    let mut limited = None;
    for _ in 0..10 {
        let resp = app.list_jobs("", USER_KEY).await;
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }

    for (what, resp) in &cases {
        assert!(
            resp.status().as_str().starts_with(&what[..3]),
            "{what}: {}",
            resp.status()
        );
        assert_api_security_headers(what, resp.headers(), false);
        assert!(resp.headers().contains_key("ratelimit-limit"), "{what}");
    }
    let limited = limited.expect("the general bucket runs out");
    assert_api_security_headers("429", limited.headers(), false);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn production_errors_and_429s_carry_hsts_too() {
    let app = spawn_app_with(|vars| {
        vars.insert("ENVIRONMENT".into(), "production".into());
        vars.insert("SECRET_KEY".into(), "f".repeat(64));
        vars.insert("ALLOWED_HOSTS".into(), "127.0.0.1".into());
        vars.insert("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "1".into());
    })
    .await;

    let ok = app.upload_policy(Some(USER_KEY)).await;
    let limited = app.upload_policy(Some(USER_KEY)).await;
    let unauthorized = app.list_jobs("", "nope").await;

    assert_eq!(ok.status(), 200);
    assert_eq!(limited.status(), 429);
    assert_eq!(unauthorized.status(), 401);
    for (what, resp) in [("200", ok), ("429", limited), ("401", unauthorized)] {
        assert_api_security_headers(what, resp.headers(), true);
    }
}

#[tokio::test]
async fn a_json_body_over_the_small_bound_is_413_even_when_chunked() {
    let app = spawn_app().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();

    let resp = app
        .client
        .post(app.url("/api/v1/admin/cleanup"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 413);
    assert_eq!(crate::helpers::error_code(resp).await, "request_too_large");
}
