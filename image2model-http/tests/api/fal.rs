//! The FAL generator wired from configuration, against the fake FAL server.

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use serde_json::Value;

use crate::helpers::{USER_KEY, png, spawn_app_configured};

#[tokio::test]
async fn a_fal_key_makes_fal_the_default_and_its_model_is_downloadable() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let (key, queue, storage) = (
        fake.key().to_owned(),
        fake.queue_base_url(),
        fake.storage_base_url(),
    );
    let app = spawn_app_configured(move |vars| {
        vars.insert("FAL_API_KEY".into(), key);
        vars.insert("FAL_QUEUE_BASE_URL".into(), queue);
        vars.insert("FAL_STORAGE_BASE_URL".into(), storage);
    })
    .await;

    let policy: Value = app
        .upload_policy(Some(USER_KEY))
        .await
        .json()
        .await
        .unwrap();
    let job = app.upload_ok(vec![("cube.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;

    assert_eq!(policy["default_model"], "tripo3d-v2.5");
    assert!(
        policy["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "relief")
    );
    assert_eq!(job["model"], "tripo3d-v2.5");
    assert_eq!(done["status"], "succeeded", "{done}");
    let resp = app
        .download(
            done["items"][0]["model_url"].as_str().unwrap(),
            None,
            USER_KEY,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    assert!(gltf::Gltf::from_slice(&bytes).is_ok(), "a valid GLB");
}

#[tokio::test]
async fn without_a_fal_key_relief_is_the_only_generator() {
    let app = spawn_app_configured(|_| {}).await;

    let policy: Value = app
        .upload_policy(Some(USER_KEY))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(policy["default_model"], "relief");
    assert_eq!(policy["models"].as_array().unwrap().len(), 1);
}
