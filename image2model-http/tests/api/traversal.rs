//! Path traversal: every path parameter is parsed strictly, so encoded
//! slashes, backslashes, dots, overlong and non-ASCII ids are 404
//! `not_found` and never reach the file system.

use crate::helpers::{ADMIN_KEY, RawResponse, TestApp, USER_KEY, png, raw_request, spawn_app};

/// What an attacker puts where an id belongs.
const ATTACKS: &[&str] = &[
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2foutside.txt",
    "..%5C..%5Coutside.txt",
    "%2e%2e%5c%2e%2e%5cwindows%5cwin.ini",
    "%252e%252e%252foutside.txt",
    "..%c0%af..%c0%afetc%c0%afpasswd",
    "%2Fetc%2Fpasswd",
    "outside.txt%00",
    "..",
    ".",
    "%2e%2e",
    // Unicode: full-width letters, a ULID with a Cyrillic "О", RTL override.
    "%EF%BC%A1%EF%BC%A2%EF%BC%A3",
    "01ARZ3NDEKTSV4RRFFQ69G5FA%D0%9E",
    "%E2%80%AE01ARZ3NDEKTSV4RRFFQ69G5FAV",
    // A lower-case and an alias-spelled ULID (not canonical).
    "01arz3ndektsv4rrffq69g5fav",
    "0LARZ3NDEKTSV4RRFFQ69G5FAV",
];

const SENTINEL: &str = "sentinel-outside-the-data-dir";

/// A server with one finished job of the user's, and a sentinel file next
/// to (outside) its blob directory.
async fn app_with_a_job() -> (TestApp, String, String) {
    let app = spawn_app().await;
    std::fs::write(app.dir.path().join("outside.txt"), SENTINEL).unwrap();
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let done = app.wait_for_end(&job_id).await;
    let item_id = done["items"][0]["item_id"].as_str().unwrap().to_owned();
    (app, job_id, item_id)
}

async fn send(app: &TestApp, method: &str, path: &str, key: &str) -> RawResponse {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    raw_request(app.app.addr, request.as_bytes()).await
}

fn assert_not_found(what: &str, resp: &RawResponse) {
    assert_eq!(resp.status, 404, "{what}: {}", resp.body);
    assert_eq!(resp.code(), "not_found", "{what}");
    assert!(
        !resp.body.contains(SENTINEL),
        "{what}: read outside the data dir"
    );
    assert!(!resp.body.contains("root:"), "{what}: read /etc/passwd");
}

#[tokio::test]
async fn traversal_in_every_job_and_item_parameter_is_404() {
    let (app, job_id, item_id) = app_with_a_job().await;
    let long = "A".repeat(5000);
    let attacks: Vec<&str> = ATTACKS.iter().copied().chain([long.as_str()]).collect();

    for attack in attacks {
        let routes = [
            ("GET", format!("/api/v1/jobs/{attack}"), USER_KEY),
            ("GET", format!("/api/v1/jobs/{attack}/events"), USER_KEY),
            ("DELETE", format!("/api/v1/jobs/{attack}"), USER_KEY),
            (
                "GET",
                format!("/api/v1/jobs/{attack}/items/{item_id}/model"),
                USER_KEY,
            ),
            (
                "GET",
                format!("/api/v1/jobs/{job_id}/items/{attack}/model"),
                USER_KEY,
            ),
            (
                "GET",
                format!("/api/v1/jobs/{attack}/items/{item_id}/preview"),
                USER_KEY,
            ),
            (
                "GET",
                format!("/api/v1/jobs/{job_id}/items/{attack}/preview"),
                USER_KEY,
            ),
            ("DELETE", format!("/api/v1/admin/jobs/{attack}"), ADMIN_KEY),
            ("DELETE", format!("/api/v1/admin/keys/{attack}"), ADMIN_KEY),
            ("GET", format!("/static/{attack}"), USER_KEY),
        ];
        for (method, path, key) in routes {
            let resp = send(&app, method, &path, key).await;

            assert_not_found(&format!("{method} {}", &path[..path.len().min(120)]), &resp);
        }
    }

    assert_eq!(
        std::fs::read_to_string(app.dir.path().join("outside.txt")).unwrap(),
        SENTINEL,
        "no DELETE touched a file outside the data dir"
    );
    assert_eq!(
        app.get_job(&job_id, USER_KEY).await.status(),
        200,
        "the job is intact"
    );
}

#[tokio::test]
async fn unnormalised_dot_segments_match_no_route() {
    let (app, job_id, item_id) = app_with_a_job().await;

    for path in [
        "/api/v1/jobs/../../../etc/passwd".to_owned(),
        format!("/api/v1/jobs/{job_id}/items/../../../../outside.txt"),
        format!("/api/v1/jobs/{job_id}/items/{item_id}/model/../../../../../outside.txt"),
        "/static/../../outside.txt".to_owned(),
        "/static/..\\..\\outside.txt".to_owned(),
        "/api/v1/jobs/.%2e/.%2e/outside.txt".to_owned(),
    ] {
        let resp = send(&app, "GET", &path, USER_KEY).await;

        assert!(
            resp.status == 404 || resp.status == 400,
            "{path}: {} {}",
            resp.status,
            resp.body
        );
        assert!(!resp.body.contains(SENTINEL), "{path}");
        assert!(!resp.body.contains("root:"), "{path}");
    }
}

#[tokio::test]
async fn a_traversal_file_name_is_display_only_and_safe_in_content_disposition() {
    let app = spawn_app().await;
    let job = app
        .upload_ok(vec![("../../etc/pa\"ss;wd\\evil.png", png(8, 8))])
        .await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;

    let resp = app
        .download(
            done["items"][0]["model_url"].as_str().unwrap(),
            None,
            USER_KEY,
        )
        .await;

    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    let ascii = disposition
        .split("filename=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(
        !ascii.contains('/') && !ascii.contains('\\'),
        "{disposition}"
    );
    assert!(!ascii.contains(".."), "{disposition}");
    assert!(!disposition.contains('\r') && !disposition.contains('\n'));
    let stored: Vec<String> = app.blob_keys().await;
    assert!(
        stored
            .iter()
            .all(|k| !k.contains("etc") && !k.contains("evil")),
        "blob keys come from the server: {stored:?}"
    );
}

#[tokio::test]
async fn an_sql_injection_in_a_file_name_is_stored_as_plain_text() {
    let app = spawn_app().await;
    let name = "x'); DROP TABLE jobs; --.png";

    let job = app.upload_ok(vec![(name, png(8, 8))]).await;
    let listed = app.list_jobs("", USER_KEY).await;

    assert_eq!(listed.status(), 200, "the jobs table is still there");
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(body["jobs"][0]["job_id"], job["job_id"]);
    assert!(
        body["jobs"][0]["items"][0]["filename"]
            .as_str()
            .unwrap()
            .contains("DROP TABLE"),
        "the name is data, kept (sanitised) for display"
    );
}
