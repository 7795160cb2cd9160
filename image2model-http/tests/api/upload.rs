use image2model_core::testing::images;
use reqwest::multipart::Form;
use serde_json::Value;

use crate::helpers::{USER_KEY, error_code, file_part, png, spawn_app};

#[tokio::test]
async fn an_upload_is_accepted_with_the_job_and_its_items() {
    let app = spawn_app().await;

    let resp = app
        .upload(vec![
            ("chair.png", png(40, 20)),
            ("../../etc/pa\"ss.jpg", images::jpeg(16, 16)),
        ])
        .await;

    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = resp.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["job_id"].as_str().unwrap())
    );
    assert_eq!(job["status"], "queued");
    assert_eq!(job["model"], "relief");
    let items = job["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["filename"], "chair.png");
    assert_eq!(items[0]["content_type"], "image/png");
    assert_eq!(items[1]["filename"], "pass.jpg");
    assert_eq!(items[1]["content_type"], "image/jpeg");
    assert!(items[0]["error"].is_null() && items[0]["model_url"].is_null());
}

#[tokio::test]
async fn the_upload_policy_lists_bounds_types_and_models() {
    let app = spawn_app().await;

    let resp = app.upload_policy(Some(USER_KEY)).await;

    assert_eq!(resp.status(), 200);
    let policy: Value = resp.json().await.unwrap();
    assert_eq!(policy["max_files"], 3);
    assert_eq!(policy["max_file_bytes"], 200_000);
    assert_eq!(
        policy["accepted_types"],
        serde_json::json!(["image/png", "image/jpeg", "image/webp"])
    );
    assert_eq!(policy["models"][0]["name"], "relief");
    assert_eq!(policy["models"][1]["name"], "test-hold");
    assert_eq!(policy["default_model"], "relief");
}

/// Uploads `form` and asserts the status, the code, and that nothing stayed.
async fn assert_rejected(form: Form, status: u16, code: &str) {
    let app = spawn_app().await;

    let resp = app.upload_form(form, Some(USER_KEY), None).await;

    assert_eq!(resp.status(), status);
    assert_eq!(error_code(resp).await, code);
    assert!(
        app.blob_keys().await.is_empty(),
        "a rejected upload left blobs"
    );
    app.assert_no_uploads().await;
    assert_eq!(app.job_count().await, 0, "a rejected upload made a job");
}

#[tokio::test]
async fn a_file_that_is_not_an_image_by_its_bytes_is_415() {
    let form = Form::new()
        .part("files", file_part("ok.png", png(8, 8)))
        .part(
            "files",
            file_part(
                "fake.png",
                b"<html><script>alert(1)</script></html>".to_vec(),
            )
            .mime_str("image/png")
            .unwrap(),
        );
    assert_rejected(form, 415, "unsupported_type").await;
}

#[tokio::test]
async fn a_file_over_the_byte_bound_is_413() {
    let mut big = png(8, 8);
    big.resize(300_000, 0);
    let form = Form::new()
        .part("files", file_part("ok.png", png(8, 8)))
        .part("files", file_part("big.png", big));
    assert_rejected(form, 413, "file_too_large").await;
}

#[tokio::test]
async fn more_files_than_allowed_is_413() {
    let mut form = Form::new();
    for i in 0..4 {
        form = form.part("files", file_part(&format!("{i}.png"), png(8, 8)));
    }
    assert_rejected(form, 413, "too_many_files").await;
}

#[tokio::test]
async fn a_header_over_the_pixel_bound_is_rejected_before_decoding() {
    let form = Form::new().part(
        "files",
        file_part("bomb.png", images::png_header_only(5000, 5000)),
    );
    assert_rejected(form, 400, "image_too_large").await;
}

#[tokio::test]
async fn an_empty_file_is_400() {
    let form = Form::new().part("files", file_part("empty.png", Vec::new()));
    assert_rejected(form, 400, "empty_file").await;
}

#[tokio::test]
async fn a_form_without_files_is_400() {
    let form = Form::new().text("model", "relief");
    assert_rejected(form, 400, "no_files").await;
}

#[tokio::test]
async fn an_unknown_model_is_400_and_stores_nothing() {
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("model", "no-such-model");
    assert_rejected(form, 400, "unknown_model").await;
}

#[tokio::test]
async fn invalid_options_are_400_with_their_codes() {
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("face_limit", "12");
    assert_rejected(form, 400, "invalid_face_limit").await;
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("texture", "glitter");
    assert_rejected(form, 400, "invalid_texture").await;
}

#[tokio::test]
async fn an_unexpected_field_is_400() {
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("notify_me", "http://example.com");
    assert_rejected(form, 400, "unexpected_field").await;
}

#[tokio::test]
async fn a_body_that_is_not_multipart_is_415() {
    let app = spawn_app().await;

    let resp = app
        .client
        .post(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .json(&serde_json::json!({"files": []}))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 415);
    assert_eq!(error_code(resp).await, "unsupported_media_type");
}

#[tokio::test]
async fn a_request_announcing_more_than_the_whole_request_bound_is_413_unread() {
    let app = spawn_app().await;

    // 3 files × 200 kB + 1 MiB of framing is the bound; announce far more.
    let resp = app
        .client
        .post(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .header("content-type", "multipart/form-data; boundary=x")
        .header("content-length", "50000000")
        .body(vec![0u8; 16])
        .send()
        .await;

    // The server answers before reading the body; the client may see the
    // answer or a reset connection, but never a stored file.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
        assert_eq!(error_code(resp).await, "request_too_large");
    }
    app.assert_no_uploads().await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_job() {
    let app = spawn_app().await;
    let form = || Form::new().part("files", file_part("a.png", png(8, 8)));

    let first = app
        .upload_form(form(), Some(USER_KEY), Some("retry-1"))
        .await;
    let second = app
        .upload_form(form(), Some(USER_KEY), Some("retry-1"))
        .await;

    assert_eq!(first.status(), 202);
    assert_eq!(second.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(app.job_count().await, 1);
    let uploads = app
        .blob_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("uploads/"))
        .count();
    assert_eq!(uploads, 1, "the replay stored nothing");
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_400() {
    let app = spawn_app().await;
    let form = Form::new().part("files", file_part("a.png", png(8, 8)));

    let resp = app
        .upload_form(form, Some(USER_KEY), Some(&"k".repeat(300)))
        .await;

    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_idempotency_key");
}

#[tokio::test]
async fn a_streamed_body_over_the_whole_request_bound_is_413_while_reading() {
    let app = spawn_app().await;
    // No Content-Length (chunked): 2 MiB of preamble before the first part,
    // more than 3 files × 200 kB + 1 MiB of framing.
    let mut chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![b'x'; 64 * 1024])).collect();
    chunks.push(Ok(
        b"\r\n--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
            .to_vec(),
    ));
    chunks.push(Ok(png(8, 8)));
    chunks.push(Ok(b"\r\n--x--\r\n".to_vec()));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));

    let resp = app
        .client
        .post(app.url("/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .header("content-type", "multipart/form-data; boundary=x")
        .body(body)
        .send()
        .await;

    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
        assert_eq!(error_code(resp).await, "request_too_large");
    }
    app.assert_no_uploads().await;
    assert_eq!(app.job_count().await, 0);
}

/// The `convert` command takes images from the operator's disk, not from a
/// client, but goes through the same validation: a script named `.png` is
/// refused and nothing is written.
#[test]
fn the_convert_command_applies_the_same_upload_validation() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("evil.png");
    std::fs::write(&fake, b"<script>alert(1)</script>").unwrap();
    let real = dir.path().join("real.png");
    std::fs::write(&real, png(8, 8)).unwrap();
    let out = dir.path().join("out");

    let result = std::process::Command::new(env!("CARGO_BIN_EXE_image2model"))
        .arg("convert")
        .arg(&fake)
        .arg(&real)
        .arg("-o")
        .arg(&out)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("evil.png"), "{stderr}");
    let written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, ["real.glb"], "only the real image became a model");
}

#[tokio::test]
async fn an_option_given_twice_is_400() {
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("texture", "hd")
        .text("texture", "no");
    assert_rejected(form, 400, "invalid_request").await;
}
