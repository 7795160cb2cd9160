use reqwest::multipart::Form;
use serde_json::Value;

use crate::helpers::{OTHER_KEY, USER_KEY, error_code, file_part, png, spawn_app};

/// The extent of a GLB's positions along x and z (the relief's footprint).
fn glb_extent(bytes: &[u8]) -> (f32, f32) {
    let gltf = gltf::Gltf::from_slice(bytes).expect("a valid GLB");
    let blob = gltf.blob.clone().expect("a BIN chunk");
    let (mut min, mut max) = ([f32::MAX; 3], [f32::MIN; 3]);
    for mesh in gltf.meshes() {
        for prim in mesh.primitives() {
            let reader = prim.reader(|_| Some(&blob));
            for p in reader.read_positions().expect("positions") {
                for i in 0..3 {
                    min[i] = min[i].min(p[i]);
                    max[i] = max[i].max(p[i]);
                }
            }
        }
    }
    (max[0] - min[0], max[2] - min[2])
}

#[tokio::test]
async fn upload_then_events_then_download_gives_a_glb_of_the_image_aspect() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("wide photo.png", png(60, 30))]).await;
    let job_id = job["job_id"].as_str().unwrap();

    let events = app.events(job_id, USER_KEY).await;

    assert!(!events.is_empty());
    let progress: Vec<u64> = events
        .iter()
        .map(|e| e["progress"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went down: {progress:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["progress"], 100);
    let item = &last["items"][0];
    let model_url = item["model_url"].as_str().unwrap();
    assert_eq!(
        model_url,
        format!(
            "/api/v1/jobs/{job_id}/items/{}/model",
            item["item_id"].as_str().unwrap()
        )
    );

    let resp = app.download(model_url, None, USER_KEY).await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "model/gltf-binary");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"wide photo.glb\"; filename*=UTF-8''wide%20photo.glb"
    );
    let bytes = resp.bytes().await.unwrap();
    let (w, d) = glb_extent(&bytes);
    assert!(
        (w / d - 2.0).abs() < 0.05,
        "footprint {w} × {d} is not 2:1 like the image"
    );
}

#[tokio::test]
async fn get_job_shows_the_succeeded_job() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap();
    app.wait_for_end(job_id).await;

    let resp = app.get_job(job_id, USER_KEY).await;

    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["job_id"], job_id);
    assert_eq!(got["status"], "succeeded");
    assert!(got["items"][0]["model_url"].is_string());
    assert!(got.get("owner").is_none(), "owners are for admins only");
}

#[tokio::test]
async fn jobs_are_listed_newest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
        ids.push(job["job_id"].as_str().unwrap().to_owned());
    }

    let first: Value = app
        .list_jobs("?limit=2", USER_KEY)
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .list_jobs(&format!("?limit=2&cursor={cursor}"), USER_KEY)
        .await
        .json()
        .await
        .unwrap();

    let listed: Vec<&str> = first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["jobs"].as_array().unwrap())
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn a_limit_outside_1_to_100_is_an_enveloped_400() {
    let app = spawn_app().await;
    for query in ["?limit=0", "?limit=101", "?limit=abc", "?cursor=../../x"] {
        let resp = app.list_jobs(query, USER_KEY).await;
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(error_code(resp).await, "invalid_request", "{query}");
    }
}

#[tokio::test]
async fn another_keys_job_is_404_on_every_job_route() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let job_id = job["job_id"].as_str().unwrap();
    let done = app.wait_for_end(job_id).await;
    let model_url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let responses = vec![
        app.get_job(job_id, OTHER_KEY).await,
        app.get(&format!("/api/v1/jobs/{job_id}/events"), Some(OTHER_KEY))
            .await,
        app.download(&model_url, None, OTHER_KEY).await,
        app.delete_job(job_id, OTHER_KEY).await,
    ];

    for resp in responses {
        assert_eq!(resp.status(), 404);
        assert_eq!(error_code(resp).await, "not_found");
    }
    let listed: Value = app.list_jobs("", OTHER_KEY).await.json().await.unwrap();
    assert!(listed["jobs"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get_job(job_id, USER_KEY).await.status(),
        200,
        "still there"
    );
}

#[tokio::test]
async fn malformed_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/jobs/..%2F..%2Fetc",
        "/api/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "/api/v1/jobs/not-an-id/items/x/model",
    ] {
        let resp = app.get(path, Some(USER_KEY)).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_code(resp).await, "not_found", "{path}");
    }
}

#[tokio::test]
async fn deleting_a_running_job_cancels_it_and_a_second_delete_removes_it() {
    let app = spawn_app().await;
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("model", "test-hold");
    let job: Value = app
        .upload_form(form, Some(USER_KEY), None)
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap();

    let cancel = app.delete_job(job_id, USER_KEY).await;

    assert_eq!(cancel.status(), 200);
    let cancelled: Value = cancel.json().await.unwrap();
    assert_eq!(cancelled["job_id"], job_id);
    let ended = app.wait_for_end(job_id).await;
    assert_eq!(ended["status"], "cancelled");

    let delete = app.delete_job(job_id, USER_KEY).await;

    assert_eq!(delete.status(), 204);
    assert_eq!(app.get_job(job_id, USER_KEY).await.status(), 404);
    assert!(app.blob_keys().await.is_empty(), "its files are gone");
}

#[tokio::test]
async fn a_model_that_is_not_ready_is_409() {
    let app = spawn_app().await;
    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("model", "test-hold");
    let job: Value = app
        .upload_form(form, Some(USER_KEY), None)
        .await
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap();
    let item_id = job["items"][0]["item_id"].as_str().unwrap();

    let resp = app
        .download(
            &format!("/api/v1/jobs/{job_id}/items/{item_id}/model"),
            None,
            USER_KEY,
        )
        .await;

    assert_eq!(resp.status(), 409);
    assert_eq!(error_code(resp).await, "model_not_ready");
    app.delete_job(job_id, USER_KEY).await;
}

#[tokio::test]
async fn obj_and_stl_downloads_are_converted_with_their_types() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(16, 8))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let model_url = done["items"][0]["model_url"].as_str().unwrap();

    let obj = app.download(model_url, Some("obj"), USER_KEY).await;
    let stl = app.download(model_url, Some("stl"), USER_KEY).await;

    assert_eq!(obj.status(), 200);
    assert_eq!(obj.headers()["content-type"], "model/obj");
    assert!(
        obj.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("filename=\"a.obj\"")
    );
    let text = obj.text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("v ")) && text.lines().any(|l| l.starts_with("f ")));
    assert_eq!(stl.status(), 200);
    assert_eq!(stl.headers()["content-type"], "model/stl");
    let bytes = stl.bytes().await.unwrap();
    let triangles = u32::from_le_bytes(bytes[80..84].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 84 + 50 * triangles, "binary STL layout");
}

#[tokio::test]
async fn an_unknown_format_is_an_enveloped_400() {
    let app = spawn_app().await;
    let job = app.upload_ok(vec![("a.png", png(8, 8))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let model_url = done["items"][0]["model_url"].as_str().unwrap();

    let resp = app.download(model_url, Some("fbx"), USER_KEY).await;

    assert_eq!(resp.status(), 400);
    assert_eq!(error_code(resp).await, "invalid_request");
}
