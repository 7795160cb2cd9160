use image2model_http::ServeRole;

use crate::helpers::{USER_KEY, error_code, spawn_app, spawn_app_built};

#[tokio::test]
async fn unknown_routes_are_an_enveloped_404() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/jobs",
        "/api/v1",
        "/api/v1/",
        "/api/v10/jobs",
        "/api/v1x/jobs",
        "/api/v1//jobs",
        "/api/v1/jobs/",
        "/static/../../Cargo.toml",
        "/static/secret.txt",
    ] {
        let resp = app.get(path, Some(USER_KEY)).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_code(resp).await, "not_found", "{path}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_an_enveloped_405() {
    let app = spawn_app().await;

    let resp = app
        .client
        .put(app.url("/api/v1/jobs"))
        .bearer_auth(USER_KEY)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(error_code(resp).await, "method_not_allowed");
}

/// RFC 9110: a 405 lists the methods the path has, in the API (paths with
/// parameters too, before any key is checked) and outside it.
#[tokio::test]
async fn every_405_says_what_the_path_allows() {
    let app = spawn_app().await;
    let job = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let cases = [
        ("PUT", "/api/v1/jobs".to_owned(), "GET, HEAD"),
        ("TRACE", format!("/api/v1/jobs/{job}"), "GET, HEAD, DELETE"),
        (
            "PATCH",
            format!("/api/v1/jobs/{job}/items/{job}/link"),
            "POST",
        ),
        ("HEAD", "/api/v1/admin/cleanup".to_owned(), "POST"),
        ("DELETE", "/api/v1/upload".to_owned(), "GET, HEAD, POST"),
        ("GET", "/api/v1/admin/keys/key_x/limits".to_owned(), "PUT"),
        ("POST", "/health".to_owned(), "GET, HEAD"),
        ("PUT", "/static/app.js".to_owned(), "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        if method != "HEAD" {
            assert_eq!(
                error_code(resp).await,
                "method_not_allowed",
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn errors_are_json_with_the_envelope_content_type() {
    let app = spawn_app().await;

    let resp = app.get("/api/v1/jobs?limit=0", Some(USER_KEY)).await;

    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(error_code(resp).await, "invalid_request");
}

#[tokio::test]
async fn health_says_ok_and_nothing_else_and_ready_is_200() {
    let app = spawn_app().await;

    let health: serde_json::Value = app.get("/health", None).await.json().await.unwrap();
    let ready = app.get("/ready", None).await;

    assert_eq!(health, serde_json::json!({"status": "ok"}));
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_worker_serves_the_probes_and_nothing_of_the_api() {
    let app = spawn_app_built(|_| {}, |b| b.role(ServeRole::Worker)).await;

    assert_eq!(app.get("/health", None).await.status(), 200);
    assert_eq!(app.get("/ready", None).await.status(), 200);
    for path in [
        "/",
        "/api/v1/jobs",
        "/api/v1/openapi.json",
        "/docs",
        "/static/app.js",
    ] {
        let resp = app.get(path, Some(USER_KEY)).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_code(resp).await, "not_found", "{path}");
    }
}
