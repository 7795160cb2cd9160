//! The FAL generator against the fake FAL server, over real sockets on
//! 127.0.0.1. Each test arranges a fake with one scenario, runs one
//! generation, and asserts the outcome and what the fake saw.

mod fal_helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fal_helpers::*;
use futures::StreamExt;
use image2model_core::domain::{ImageKind, Texture};
use image2model_core::generators::fal::{FalGenerator, MODELS};
use image2model_core::ports::{GeneratorHealth, ModelGenerator};
use image2model_core::testing::fake_fal::{
    ENDPOINTS, FakeEventKind, FakeFal, FakeFalConfig, ImageSource, Scenario, textured_glb,
};
use image2model_core::testing::images;
use tokio_util::sync::CancellationToken;

const TRIPO: &str = "tripo3d/tripo/v2.5/image-to-3d";

// ---------------------------------------------------------------- success

#[tokio::test]
async fn tripo_returns_the_fakes_glb_and_png_preview() {
    let t = spawn(Scenario::Success).await;
    let observer = Recorder::default();

    let (glb, model) = generate_glb(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(model.size_hint, Some(textured_glb().len() as u64));
    let preview = model.preview.expect("tripo returns a rendered image");
    assert_eq!(preview.kind, ImageKind::Png);
    let png = collect(preview.body).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.results(), 1);
    assert_eq!(t.fake.not_found(), 0);
    assert_eq!(
        as_generator(&t.generator).health(),
        GeneratorHealth::Healthy
    );
}

#[tokio::test]
async fn submit_uses_the_whole_endpoint_id_and_requests_use_owner_app_only() {
    let t = spawn(Scenario::Success).await;

    generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    let events = t.fake.events();
    let id = t.fake.last_submit().unwrap().request_id;
    let submits: Vec<_> = events
        .iter()
        .filter(|e| e.kind == FakeEventKind::Submit)
        .collect();
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0].target, format!("POST /{TRIPO}"));
    assert_eq!(t.fake.submits_to(TRIPO), 1);
    let looks: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, FakeEventKind::Status | FakeEventKind::StatusStream))
        .collect();
    assert!(!looks.is_empty());
    for look in looks {
        let base = format!("GET /tripo3d/tripo/requests/{id}/status");
        assert!(
            look.target == base || look.target == format!("{base}/stream"),
            "{}",
            look.target
        );
    }
    let result = events
        .iter()
        .find(|e| e.kind == FakeEventKind::Result)
        .unwrap();
    assert_eq!(result.target, format!("GET /tripo3d/tripo/requests/{id}"));
    assert_eq!(t.fake.not_found(), 0);
}

#[tokio::test]
async fn the_request_id_reaches_the_observer_before_the_first_status_look() {
    let t = spawn(Scenario::Success).await;
    let observer = Recorder::watching(&t.fake);

    generate_glb(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap();

    assert_eq!(*observer.polls_when_persisted.lock().unwrap(), vec![0]);
    assert_eq!(
        observer.request_ids(),
        vec![t.fake.last_submit().unwrap().request_id]
    );
    assert!(t.fake.status_polls() + t.fake.status_streams() >= 1);
}

#[tokio::test]
async fn a_failure_to_persist_the_request_id_gives_up_without_polling() {
    let t = spawn(Scenario::Success).await;
    let observer = Recorder {
        fail_persist: true,
        ..Recorder::watching(&t.fake)
    };

    let err = generate_simple(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap_err();

    assert_eq!(err.code(), "internal_error");
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.status_polls(), 0);
    assert_eq!(t.fake.status_streams(), 0);
    assert_eq!(t.fake.results(), 0);
    // Nobody can collect it any more: it is cancelled rather than paid for.
    assert_eq!(t.fake.cancels(), 1);
}

#[tokio::test]
async fn progress_rises_through_queue_and_run() {
    let t = spawn(Scenario::Success).await;
    t.fake
        .set_latency(Duration::from_millis(150), Duration::from_millis(250));
    let observer = Recorder::default();

    generate_glb(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap();

    let progress = observer.progress();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        progress.iter().any(|p| (5..=15).contains(p)),
        "queued: {progress:?}"
    );
    assert!(
        progress.iter().any(|p| (20..90).contains(p)),
        "running: {progress:?}"
    );
    assert!(*progress.last().unwrap() >= 90, "{progress:?}");
}

#[tokio::test]
async fn models_are_listed_under_the_fal_generator() {
    let t = spawn(Scenario::Success).await;

    let models = t.generator.models();

    assert_eq!(t.generator.name(), "fal");
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    for expected in [
        "tripo3d-v2.5",
        "trellis",
        "hunyuan3d-v2",
        "hunyuan3d-v2-mini",
        "hunyuan3d-v2-turbo",
        "hunyuan3d-v3",
        "triposr",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(models.iter().all(|m| m.generator == "fal"));
    assert_eq!(t.generator.default_model().as_str(), "tripo3d-v2.5");
}

#[tokio::test]
async fn an_unknown_model_is_refused_without_calling_fal() {
    let t = spawn(Scenario::Success).await;

    let err = generate_simple(&t, request("relief"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "unknown_model");
    assert!(t.fake.events().is_empty());
}

// ------------------------------------------------------------ model inputs

#[tokio::test]
async fn tripo_gets_the_originals_fields_and_never_quad() {
    let t = spawn(Scenario::Success).await;
    let mut options = options("tripo3d-v2.5");
    options.texture = Texture::Hd;
    options.face_limit = face_limit(20_000);

    generate_glb(
        &t,
        request_with(options, images::png(16, 16)),
        &Recorder::default(),
    )
    .await
    .unwrap();

    let body = t.fake.last_submit().unwrap().body;
    assert!(
        body["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(body["texture"], "HD");
    assert_eq!(body["texture_alignment"], "original_image");
    assert_eq!(body["orientation"], "default");
    assert_eq!(body["face_limit"], 20_000);
    assert!(body.get("quad").is_none());
}

#[tokio::test]
async fn tripo_texture_no_and_standard_are_sent_as_fal_spells_them() {
    let t = spawn(Scenario::Success).await;
    for (texture, wire) in [(Texture::No, "no"), (Texture::Standard, "standard")] {
        let mut options = options("tripo3d-v2.5");
        options.texture = texture;

        generate_glb(
            &t,
            request_with(options, images::png(16, 16)),
            &Recorder::default(),
        )
        .await
        .unwrap();

        let body = t.fake.last_submit().unwrap().body;
        assert_eq!(body["texture"], wire);
        assert!(body.get("face_limit").is_none());
    }
}

#[tokio::test]
async fn hunyuan3d_v3_sends_input_image_url_and_face_count_and_reads_model_glb() {
    let t = spawn(Scenario::Success).await;
    let mut options = options("hunyuan3d-v3");
    options.face_limit = face_limit(40_000);

    let (glb, model) = generate_glb(
        &t,
        request_with(options, images::png(16, 16)),
        &Recorder::default(),
    )
    .await
    .unwrap();

    let submit = t.fake.last_submit().unwrap();
    assert_eq!(submit.endpoint_id, "fal-ai/hunyuan3d-v3/image-to-3d");
    assert!(
        submit.body["input_image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:")
    );
    assert!(submit.body.get("image_url").is_none());
    assert_eq!(submit.body["face_count"], 40_000);
    assert_eq!(glb, textured_glb());
    assert_eq!(model.preview.expect("the thumbnail").kind, ImageKind::Png);
    assert!(
        t.fake
            .events()
            .iter()
            .filter(|e| e.kind == FakeEventKind::Status)
            .all(|e| e.target.starts_with("GET /fal-ai/hunyuan3d-v3/requests/"))
    );
}

#[tokio::test]
async fn triposr_asks_for_glb() {
    let t = spawn(Scenario::Success).await;

    generate_glb(&t, request("triposr"), &Recorder::default())
        .await
        .unwrap();

    let submit = t.fake.last_submit().unwrap();
    assert_eq!(submit.endpoint_id, "fal-ai/triposr");
    assert_eq!(submit.body["output_format"], "glb");
    assert!(submit.body["image_url"].is_string());
}

#[tokio::test]
async fn every_model_in_the_table_round_trips_through_the_fake() {
    let t = spawn(Scenario::Success).await;
    for model in MODELS {
        let fake_endpoint = ENDPOINTS
            .iter()
            .find(|e| e.endpoint_id == model.endpoint_id)
            .unwrap_or_else(|| panic!("the fake lacks {}", model.endpoint_id));

        let (glb, _) = generate_glb(&t, request(model.name), &Recorder::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", model.name));

        assert_eq!(glb, textured_glb(), "{}", model.name);
        assert_eq!(t.fake.submits_to(model.endpoint_id), 1, "{}", model.name);
        let body = t.fake.last_submit().unwrap().body;
        assert!(
            body[fake_endpoint.image_field].is_string(),
            "{}",
            model.name
        );
        assert_eq!(
            model.output_field, fake_endpoint.output_field,
            "{}",
            model.name
        );
    }
    assert_eq!(t.fake.not_found(), 0);
}

#[tokio::test]
async fn the_hunyuan_sub_models_follow_under_owner_and_app() {
    let t = spawn(Scenario::Success).await;

    generate_glb(&t, request("hunyuan3d-v2-mini"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(t.fake.submits_to("fal-ai/hunyuan3d/v2/mini"), 1);
    let id = t.fake.last_submit().unwrap().request_id;
    assert!(t.fake.events().iter().any(|e| {
        e.target
            .starts_with(&format!("GET /fal-ai/hunyuan3d/requests/{id}/status"))
    }));
    assert_eq!(t.fake.not_found(), 0);
}

#[tokio::test]
async fn the_queue_timeout_header_never_exceeds_the_deadline() {
    let t = spawn(Scenario::Success).await;

    generate(
        &t.generator,
        request("trellis"),
        &Recorder::default(),
        Duration::from_secs(7),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(
        t.fake.last_submit().unwrap().request_timeout.as_deref(),
        Some("7")
    );
}

// ------------------------------------------------------------ image transport

#[tokio::test]
async fn a_small_image_goes_inline_as_a_data_uri() {
    let t = spawn(Scenario::Success).await;
    let png = images::png(16, 16);
    let len = png.len();

    generate_glb(
        &t,
        request_with(options("tripo3d-v2.5"), png),
        &Recorder::default(),
    )
    .await
    .unwrap();

    assert_eq!(
        t.fake.last_submit().unwrap().image,
        ImageSource::DataUri {
            mime: "image/png".into(),
            bytes: len
        }
    );
    assert_eq!(t.fake.upload_initiates(), 0);
    assert_eq!(t.fake.uploads(), 0);
}

#[tokio::test]
async fn a_big_image_goes_through_fal_storage_without_the_key() {
    let t = spawn_with(Scenario::Success, |c| c.data_uri_max_bytes = 1024).await;
    let png = images::png(200, 200);
    let len = png.len();
    assert!(len > 1024);

    generate_glb(
        &t,
        request_with(options("tripo3d-v2.5"), png),
        &Recorder::default(),
    )
    .await
    .unwrap();

    assert_eq!(t.fake.upload_initiates(), 1);
    assert_eq!(t.fake.uploads(), 1);
    assert_eq!(
        t.fake.last_submit().unwrap().image,
        ImageSource::Uploaded { bytes: len }
    );
    assert!(
        t.fake.last_submit().unwrap().body["image_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/files/uploads/", t.fake.storage_base_url()))
    );
    // Neither the presigned upload URL nor the file URLs get the key.
    assert_eq!(t.fake.credential_leaks(), 0);
}

// ------------------------------------------------------------------ retries

#[tokio::test]
async fn transient_503s_on_status_are_retried_and_submitted_exactly_once() {
    let t = spawn(Scenario::StatusFails {
        status: 503,
        times: 3,
    })
    .await;

    let (glb, _) = generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(t.fake.submits(), 1);
    // Three failed looks (streams fall back to polls), then one that works.
    assert!(t.fake.status_polls() + t.fake.status_streams() >= 4);
}

#[tokio::test]
async fn a_500_on_status_is_retried() {
    let t = spawn(Scenario::StatusFails {
        status: 500,
        times: 2,
    })
    .await;

    generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(t.fake.submits(), 1);
    assert!(t.fake.status_polls() + t.fake.status_streams() >= 3);
}

#[tokio::test]
async fn persistent_503_on_submit_is_retried_three_times_then_unavailable() {
    let t = spawn(Scenario::SubmitFails {
        status: 503,
        times: u32::MAX,
        retry_after: None,
    })
    .await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "generator_unavailable");
    assert_eq!(t.fake.submits(), 4);
    assert_eq!(t.fake.status_polls(), 0);
    assert!(matches!(
        as_generator(&t.generator).health(),
        GeneratorHealth::Degraded { .. }
    ));
}

#[tokio::test]
async fn transient_502_and_504_on_submit_are_retried() {
    for status in [502, 504, 408, 409] {
        let t = spawn(Scenario::SubmitFails {
            status,
            times: 2,
            retry_after: None,
        })
        .await;

        let result = generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default()).await;

        assert!(result.is_ok(), "{status}: {:?}", result.err());
        assert_eq!(t.fake.submits(), 3, "{status}");
        assert_eq!(t.fake.request_ids().len(), 1, "{status}");
    }
}

#[tokio::test]
async fn a_500_on_submit_is_not_retried() {
    let t = spawn(Scenario::SubmitFails {
        status: 500,
        times: 1,
        retry_after: None,
    })
    .await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "upstream_error");
    assert_eq!(t.fake.submits(), 1);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_capped() {
    let t = spawn_with(
        Scenario::SubmitFails {
            status: 429,
            times: 2,
            retry_after: Some(60),
        },
        |c| c.retry.retry_after_cap = Duration::from_millis(200),
    )
    .await;
    let started = Instant::now();

    generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    let elapsed = started.elapsed();
    assert_eq!(t.fake.submits(), 3);
    // Two waits of Retry-After (60 s) capped to 200 ms, not the 5 ms backoff.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

// ---------------------------------------------------------- model failures

#[tokio::test]
async fn a_422_from_the_result_is_rejected_input_without_retry() {
    let t = spawn(Scenario::ResultInvalidInput).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "generation_rejected");
    assert!(
        err.to_string().contains("Could not detect an object"),
        "{err}"
    );
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.results(), 1);
}

#[tokio::test]
async fn a_content_policy_violation_is_its_own_error() {
    let t = spawn(Scenario::ContentPolicy).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "content_policy_violation");
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.results(), 1);
}

#[tokio::test]
async fn completed_with_an_error_is_a_failure_not_a_success() {
    let t = spawn(Scenario::CompletedWithError).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "upstream_error");
    assert!(
        err.to_string().contains("Internal error during inference"),
        "{err}"
    );
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.results(), 1);
    assert_eq!(t.fake.downloads(), 0);
}

#[tokio::test]
async fn a_malformed_result_is_invalid_output() {
    let t = spawn(Scenario::MalformedResult).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "invalid_model_output");
    assert_eq!(t.fake.submits(), 1);
}

#[tokio::test]
async fn a_result_without_the_model_field_is_invalid_output() {
    let t = spawn(Scenario::ResultWithoutModel).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "invalid_model_output");
    assert!(err.to_string().contains("model_mesh"), "{err}");
}

#[tokio::test]
async fn a_malformed_status_is_an_upstream_error() {
    let t = spawn(Scenario::MalformedStatus).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "upstream_error");
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.results(), 0);
}

#[tokio::test]
async fn a_user_queue_timeout_504_is_a_timeout_and_not_retried() {
    let t = spawn(Scenario::UserTimeout).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "generation_timeout");
    assert_eq!(t.fake.results(), 1);
    assert_eq!(t.fake.submits(), 1);
}

// ------------------------------------------------------------ model files

#[tokio::test]
async fn a_truncated_model_file_fails_its_stream() {
    let t = spawn(Scenario::TruncatedModel).await;

    let model = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();
    let err = collect(model.glb).await.unwrap_err();

    assert_eq!(err.code(), "invalid_model_output");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[tokio::test]
async fn an_oversized_model_with_content_length_is_refused_before_streaming() {
    let t = spawn_with(
        Scenario::OversizedModel {
            bytes: 200_000,
            content_length: true,
        },
        |c| c.max_model_bytes = 64 * 1024,
    )
    .await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "model_too_large");
    assert_eq!(
        err,
        image2model_core::ports::GenerateError::OutputTooLarge(64 * 1024)
    );
}

#[tokio::test]
async fn an_oversized_chunked_model_is_refused_from_its_glb_header() {
    let t = spawn_with(
        Scenario::OversizedModel {
            bytes: 200_000,
            content_length: false,
        },
        |c| c.max_model_bytes = 64 * 1024,
    )
    .await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "model_too_large");
    assert_eq!(t.fake.downloads(), 2); // the preview, then the model
}

#[tokio::test]
async fn a_model_file_that_is_not_glb_is_invalid_output() {
    let t = spawn(Scenario::NotGlb).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "invalid_model_output");
}

// --------------------------------------------------------------- accounts

#[tokio::test]
async fn a_wrong_key_is_an_account_error_not_retried_and_marks_the_generator_unhealthy() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let generator = FalGenerator::new(fast_config(&fake, "wrong:key")).unwrap();

    let err = generate(
        &generator,
        request("tripo3d-v2.5"),
        &Recorder::default(),
        Duration::from_secs(10),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();

    assert_eq!(err.code(), "generator_account_error");
    assert!(err.to_string().contains("No user found"), "{err}");
    assert_eq!(fake.unauthorized(), 1);
    match as_generator(&generator).health() {
        GeneratorHealth::Unhealthy { code, .. } => assert_eq!(code, "generator_account_error"),
        other => panic!("expected unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn a_locked_account_is_an_account_error_and_health_recovers_after_a_success() {
    let t = spawn(Scenario::AccountLocked).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "generator_account_error");
    assert!(err.to_string().contains("Exhausted balance"), "{err}");
    assert_eq!(t.fake.submits(), 1);
    assert!(matches!(
        as_generator(&t.generator).health(),
        GeneratorHealth::Unhealthy { .. }
    ));

    t.fake.set_scenario(Scenario::Success);
    generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(
        as_generator(&t.generator).health(),
        GeneratorHealth::Healthy
    );
}

#[tokio::test]
async fn a_401_mid_flight_is_not_retried() {
    let t = spawn(Scenario::Unauthorized).await;

    let err = generate_simple(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap_err();

    assert_eq!(err.code(), "generator_account_error");
    assert_eq!(t.fake.unauthorized(), 1);
}

// -------------------------------------------------- deadlines and cancel

#[tokio::test]
async fn a_request_that_never_completes_times_out_by_the_deadline_and_is_cancelled() {
    let t = spawn(Scenario::NeverCompletes).await;
    let deadline = Duration::from_millis(400);
    let started = Instant::now();

    let err = generate(
        &t.generator,
        request("tripo3d-v2.5"),
        &Recorder::default(),
        deadline,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();

    assert_eq!(err.code(), "generation_timeout");
    assert!(
        started.elapsed() < deadline + Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.fake.cancels(), 1);
    let id = t.fake.last_submit().unwrap().request_id;
    assert!(t.fake.is_cancelled(&id));
    assert!(
        t.fake
            .events()
            .iter()
            .any(|e| e.kind == FakeEventKind::Cancel
                && e.target == format!("PUT /tripo3d/tripo/requests/{id}/cancel"))
    );
}

#[tokio::test]
async fn cancelling_the_context_cancels_the_fal_request() {
    let t = spawn(Scenario::NeverCompletes).await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });

    let err = generate(
        &t.generator,
        request("tripo3d-v2.5"),
        &Recorder::default(),
        Duration::from_secs(10),
        cancel,
    )
    .await
    .unwrap_err();

    assert_eq!(err.code(), "cancelled");
    assert_eq!(t.fake.cancels(), 1);
    assert!(
        t.fake
            .is_cancelled(&t.fake.last_submit().unwrap().request_id)
    );
}

#[tokio::test]
async fn the_deadline_bounds_retries_too() {
    let t = spawn_with(
        Scenario::SubmitFails {
            status: 503,
            times: u32::MAX,
            retry_after: None,
        },
        |c| {
            c.retry.base = Duration::from_secs(5);
            c.retry.cap = Duration::from_secs(5);
        },
    )
    .await;
    let started = Instant::now();

    let err = generate(
        &t.generator,
        request("tripo3d-v2.5"),
        &Recorder::default(),
        Duration::from_millis(300),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();

    assert_eq!(err.code(), "generation_timeout");
    assert!(started.elapsed() < Duration::from_secs(1));
    // No request was accepted, so there is nothing to cancel.
    assert_eq!(t.fake.cancels(), 0);
}

// ------------------------------------------------------------------ resume

#[tokio::test]
async fn a_resumed_request_is_followed_not_resubmitted() {
    let t = spawn(Scenario::Success).await;
    let id = t.fake.seed_request(TRIPO);
    let mut req = request("tripo3d-v2.5");
    req.resume_remote_request = Some(id.clone());

    let (glb, _) = generate_glb(&t, req, &Recorder::default()).await.unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(t.fake.submits(), 0);
    assert!(
        t.fake
            .events()
            .iter()
            .any(|e| e.target.contains(&format!("/requests/{id}/status")))
    );
    assert_eq!(t.fake.results(), 1);
}

#[tokio::test]
async fn a_resume_id_fal_does_not_know_is_submitted_anew() {
    let t = spawn(Scenario::Success).await;
    let mut req = request("tripo3d-v2.5");
    req.resume_remote_request = Some("00000000-0000-0000-0000-000000000000".into());
    let observer = Recorder::default();

    generate_glb(&t, req, &observer).await.unwrap();

    assert_eq!(t.fake.submits(), 1);
    let new_id = t.fake.last_submit().unwrap().request_id;
    assert_eq!(observer.request_ids(), vec![new_id]);
}

#[tokio::test]
async fn a_client_restart_resumes_the_same_request_and_pays_once() {
    let t = spawn(Scenario::Success).await;
    t.fake
        .set_latency(Duration::from_millis(300), Duration::from_millis(100));
    let observer = Arc::new(Recorder::default());

    // The first worker dies (its future is dropped) once it persisted the id.
    let first = FalGenerator::new(fast_config(&t.fake, t.fake.key())).unwrap();
    {
        let running = generate(
            &first,
            request("tripo3d-v2.5"),
            &observer,
            Duration::from_secs(10),
            CancellationToken::new(),
        );
        tokio::pin!(running);
        bounded(Duration::from_secs(5), async {
            while observer.request_ids().is_empty() {
                tokio::select! {
                    _ = &mut running => panic!("the first attempt finished too early"),
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        })
        .await;
    }
    drop(first);
    let persisted = observer.request_ids();
    assert_eq!(persisted.len(), 1);

    // A new worker resumes it.
    let second = FalGenerator::new(fast_config(&t.fake, t.fake.key())).unwrap();
    let mut req = request("tripo3d-v2.5");
    req.resume_remote_request = Some(persisted[0].clone());
    let model = generate(
        &second,
        req,
        &Recorder::default(),
        Duration::from_secs(10),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    assert_eq!(collect(model.glb).await.unwrap(), textured_glb());
    assert_eq!(t.fake.submits(), 1);
    assert_eq!(t.fake.cancels(), 0);
}

// ------------------------------------------------- the fake, spoken to directly

#[tokio::test]
async fn the_fake_answers_404_to_status_urls_built_with_the_sub_path() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let id = fake.seed_request(TRIPO);
    let http = reqwest::Client::new();

    let wrong = http
        .get(format!(
            "{}/{TRIPO}/requests/{id}/status",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .send()
        .await
        .unwrap();
    let right = http
        .get(format!(
            "{}/tripo3d/tripo/requests/{id}/status",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .send()
        .await
        .unwrap();

    assert_eq!(wrong.status(), 404);
    assert!(right.status() == 202 || right.status() == 200);
    assert_eq!(fake.not_found(), 1);
}

#[tokio::test]
async fn the_fake_streams_status_as_sse_until_completed() {
    let fake = FakeFal::start(FakeFalConfig {
        queue_time: Duration::from_millis(300),
        progress_time: Duration::from_millis(300),
        ..FakeFalConfig::default()
    })
    .await;
    let id = fake.seed_request(TRIPO);
    let http = reqwest::Client::new();

    let response = bounded(
        Duration::from_secs(5),
        http.get(format!(
            "{}/tripo3d/tripo/requests/{id}/status/stream?logs=1",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .send(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = String::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = bounded(Duration::from_secs(5), stream.next()).await {
        body.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }

    let statuses: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(statuses.first().unwrap()["status"], "IN_QUEUE");
    assert!(statuses.iter().any(|s| s["status"] == "IN_PROGRESS"));
    assert_eq!(statuses.last().unwrap()["status"], "COMPLETED");
    assert_eq!(fake.status_streams(), 1);
}

#[tokio::test]
async fn the_fake_cancel_answers_like_fal() {
    let fake = FakeFal::start(FakeFalConfig {
        scenario: Scenario::NeverCompletes,
        ..FakeFalConfig::default()
    })
    .await;
    let running = fake.seed_request(TRIPO);
    fake.set_scenario(Scenario::Success);
    fake.set_latency(Duration::ZERO, Duration::ZERO);
    let done = fake.seed_request(TRIPO);
    let http = reqwest::Client::new();
    let cancel = |id: &str| {
        http.put(format!(
            "{}/tripo3d/tripo/requests/{id}/cancel",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .send()
    };

    let a = cancel(&running).await.unwrap();
    let b = cancel(&done).await.unwrap();
    let c = cancel("nope").await.unwrap();

    assert_eq!(a.status(), 202);
    assert_eq!(
        a.json::<serde_json::Value>().await.unwrap()["status"],
        "CANCELLATION_REQUESTED"
    );
    assert_eq!(
        b.json::<serde_json::Value>().await.unwrap()["status"],
        "ALREADY_COMPLETED"
    );
    assert_eq!(c.status(), 404);
    assert_eq!(
        c.json::<serde_json::Value>().await.unwrap()["status"],
        "NOT_FOUND"
    );
    assert!(fake.is_cancelled(&running));
    assert_eq!(fake.cancels(), 3);
}

#[tokio::test]
async fn the_fake_rejects_a_submit_without_the_models_image_field() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let http = reqwest::Client::new();

    let response = http
        .post(format!(
            "{}/fal-ai/hunyuan3d-v3/image-to-3d",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .json(&serde_json::json!({"image_url": "data:image/png;base64,iVBORw0KGgo="}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["detail"][0]["loc"][1], "input_image_url");
    assert!(fake.request_ids().is_empty());
}

#[tokio::test]
async fn the_fake_serves_quad_requests_as_fbx() {
    // Why `quad` must never be sent: Tripo then answers with FBX (which the
    // generator refuses, see `a_model_file_that_is_not_glb_is_invalid_output`).
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let http = reqwest::Client::new();
    let submitted: serde_json::Value = http
        .post(format!("{}/{TRIPO}", fake.queue_base_url()))
        .header("Authorization", format!("Key {}", fake.key()))
        .json(&serde_json::json!({"image_url": "data:image/png;base64,iVBORw0KGgo=", "quad": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["request_id"].as_str().unwrap().to_owned();
    assert_eq!(
        submitted["status_url"],
        format!(
            "{}/tripo3d/tripo/requests/{id}/status",
            fake.queue_base_url()
        )
    );
    tokio::time::sleep(Duration::from_millis(150)).await;

    let result: serde_json::Value = http
        .get(format!(
            "{}/tripo3d/tripo/requests/{id}",
            fake.queue_base_url()
        ))
        .header("Authorization", format!("Key {}", fake.key()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(result["model_mesh"]["file_name"], "model.fbx");
}
