//! The FAL generator wired from configuration, against the fake FAL server.

use image2model_core::testing::fake_fal::{
    FakeFal, FakeFalConfig, WebhookDelivery, texture_png, textured_glb,
};
use serde_json::Value;

use crate::helpers::{
    USER_KEY, fake_fal_vars, file_part, png, spawn_app_configured, spawn_app_with_fal,
};

#[tokio::test]
async fn a_fal_key_makes_fal_the_default_and_its_model_is_downloadable() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = spawn_app_with_fal(&fake).await;

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

/// The Python original's clients send `texture` as `false`/`none` and
/// `true`/`yes` (Python's `str(True)` is `True`); the document lists them
/// and the server maps them to `no` and `standard` before FAL sees them.
#[tokio::test]
async fn the_originals_texture_spellings_reach_fal_as_no_and_standard() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = spawn_app_with_fal(&fake).await;

    for (sent, expected) in [
        ("false", "no"),
        ("none", "no"),
        ("True", "standard"),
        ("yes", "standard"),
        ("hd", "HD"),
    ] {
        let form = reqwest::multipart::Form::new()
            .part("files", file_part("cube.png", png(16, 16)))
            .text("texture", sent);
        let resp = app.upload_form(form, Some(USER_KEY), None).await;
        assert_eq!(resp.status(), 202, "texture {sent:?}");
        let job: Value = resp.json().await.unwrap();
        let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let submit = fake.last_submit().expect("submitted");
        assert_eq!(submit.body["texture"], expected, "texture {sent:?}");
    }
}

#[tokio::test]
async fn the_fake_fals_textured_model_is_kept_whole_and_converts_to_obj_and_stl() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = spawn_app_with_fal(&fake).await;
    let job = app.upload_ok(vec![("cube.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    let url = done["items"][0]["model_url"].as_str().unwrap().to_owned();

    let glb = app
        .download(&url, None, USER_KEY)
        .await
        .bytes()
        .await
        .unwrap();
    let obj = app.download(&url, Some("obj"), USER_KEY).await;
    let stl = app.download(&url, Some("stl"), USER_KEY).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    // Stored and served byte for byte, texture and all.
    assert_eq!(glb.as_ref(), textured_glb().as_slice());
    let document = gltf::Gltf::from_slice(&glb).unwrap();
    let texture = document
        .materials()
        .next()
        .unwrap()
        .pbr_metallic_roughness();
    assert!(texture.base_color_texture().is_some(), "textured");
    assert!(
        glb.windows(texture_png().len()).any(|w| w == texture_png()),
        "the PNG is embedded"
    );
    assert_eq!(obj.status(), 200);
    let obj = obj.text().await.unwrap();
    assert_eq!(obj.lines().filter(|l| l.starts_with("v ")).count(), 24);
    assert_eq!(obj.lines().filter(|l| l.starts_with("f ")).count(), 12);
    assert_eq!(stl.status(), 200);
    // Binary STL: 80-byte header, triangle count, 50 bytes per triangle.
    assert_eq!(stl.bytes().await.unwrap().len(), 84 + 12 * 50);
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

/// A server configured for FAL with webhooks: PUBLIC_BASE_URL is its own
/// loopback address, so the fake FAL calls it back at /webhooks/fal.
async fn webhook_app(fake: &FakeFal, safety_secs: u32) -> crate::helpers::TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (fal, jwks) = (fake_fal_vars(fake), fake.jwks_url());
    spawn_app_configured(move |vars| {
        vars.insert("BIND_ADDR".into(), format!("127.0.0.1:{port}"));
        vars.insert("PUBLIC_BASE_URL".into(), format!("http://127.0.0.1:{port}"));
        vars.extend(fal);
        vars.insert("FAL_JWKS_URL".into(), jwks);
        vars.insert("FAL_WEBHOOK_SAFETY_SECS".into(), safety_secs.to_string());
    })
    .await
}

#[tokio::test]
async fn with_a_public_url_an_item_finishes_by_fals_signed_webhook() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    // The safety net would look after 60 s: only the webhook ends it sooner.
    let app = webhook_app(&fake, 60).await;

    let job = app.upload_ok(vec![("cube.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    let submit = fake.last_submit().unwrap();
    let hook = submit.webhook.expect("submitted with a webhook");
    assert!(hook.ends_with("/webhooks/fal"), "{hook}");
    let deliveries = fake.webhook_deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0].response, Some(200));
    assert_eq!(
        fake.status_streams() + fake.status_polls(),
        0,
        "not followed"
    );
}

#[tokio::test]
async fn a_lost_webhook_still_ends_the_item_through_the_status_stream() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    fake.set_webhook_delivery(WebhookDelivery::Drop);
    let app = webhook_app(&fake, 1).await;

    let job = app.upload_ok(vec![("cube.png", png(16, 16))]).await;
    let done = app.wait_for_end(job["job_id"].as_str().unwrap()).await;

    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(fake.webhooks_dropped(), 1);
    assert_eq!(
        fake.status_streams(),
        1,
        "the safety net followed the stream"
    );
    assert_eq!(fake.submits(), 1);
}

#[tokio::test]
async fn a_forged_webhook_is_refused_with_401() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let app = webhook_app(&fake, 60).await;

    let resp = app
        .client
        .post(app.url("/webhooks/fal"))
        .header(
            "x-fal-webhook-request-id",
            "764cabcf-b745-4b3e-ae38-1200304cf45b",
        )
        .header("x-fal-webhook-user-id", "someone")
        .header(
            "x-fal-webhook-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("x-fal-webhook-signature", "00".repeat(64))
        .body(r#"{"request_id":"764cabcf-b745-4b3e-ae38-1200304cf45b","status":"OK","payload":{}}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 401);
    assert_eq!(crate::helpers::error_code(resp).await, "bad_signature");
}
