//! How the FAL generator learns that a request completed: fal's status
//! stream, polling when the stream breaks, and signed webhooks with the
//! stream as their safety net. Against the fake FAL over real sockets, with a
//! webhook receiver on 127.0.0.1 that hands each callback to
//! `FalGenerator::handle_webhook`, as the server does.

mod fal_helpers;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fal_helpers::*;
use image2model_core::generators::fal::{FalConfig, FalGenerator};
use image2model_core::testing::fake_fal::{
    FakeFal, FakeFalConfig, Scenario, WebhookDelivery, textured_glb,
};
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------ stream

/// Runs one request to completion with `tweak` applied to the generator's
/// configuration and checks that one status stream followed it, with
/// progress and without a poll; returns the generator's count of streams
/// read on the stream pump.
async fn one_streamed_request(tweak: impl FnOnce(&mut FalConfig)) -> u64 {
    let t = spawn_with(Scenario::Success, tweak).await;
    t.fake
        .set_latency(Duration::from_millis(50), Duration::from_millis(150));
    let observer = Recorder::default();

    let (glb, _) = generate_glb(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(
        t.fake.status_streams(),
        1,
        "one stream followed it to the end"
    );
    assert_eq!(t.fake.status_polls(), 0, "nothing was polled");
    let progress = observer.progress();
    assert!(
        progress.iter().any(|&p| (20..90).contains(&p)),
        "the stream's events carried progress: {progress:?}"
    );
    t.generator.pumped_streams()
}

#[tokio::test]
async fn completion_is_seen_on_the_status_stream_without_polling() {
    // Every stream on the stream pump, as with hundreds open.
    let pumped = one_streamed_request(|c| c.stream_pump_from = 0).await;
    assert_eq!(pumped, 1, "the stream was read on the pump");
}

#[tokio::test]
async fn without_the_stream_pump_each_stream_is_read_on_its_items_task() {
    // `FAL_STREAM_TICK_MS=0`: the switch that turns the pump off (it would
    // take every stream here).
    let pumped = one_streamed_request(|c| {
        c.stream_tick = Duration::ZERO;
        c.stream_pump_from = 0;
    })
    .await;
    assert_eq!(pumped, 0, "no pump, no stream on it");
}

#[tokio::test]
async fn the_stream_pump_starts_only_where_enough_streams_can_be_open() {
    let pumped = |tweak: fn(&mut FalConfig)| {
        let mut config = FalConfig::new("key".to_owned().into());
        tweak(&mut config);
        FalGenerator::new(config).unwrap().has_stream_pump()
    };
    assert!(
        !pumped(|_| {}),
        "the default in-flight limit never reaches the default threshold"
    );
    assert!(!pumped(|c| {
        c.max_in_flight = 300;
        c.stream_pump_from = 300;
    }));
    assert!(pumped(|c| {
        c.max_in_flight = 301;
        c.stream_pump_from = 300;
    }));
    assert!(
        !pumped(|c| {
            c.max_in_flight = 2048;
            c.stream_tick = Duration::ZERO;
        }),
        "FAL_STREAM_TICK_MS=0 turns it off"
    );
    assert!(
        !pumped(|c| {
            c.max_in_flight = 2048;
            c.status_stream = false;
        }),
        "no streams, no pump"
    );
    // Below the threshold a stream is read on its task, pump or not.
    let pumped = one_streamed_request(|c| c.max_in_flight = 2048).await;
    assert_eq!(pumped, 0, "one stream open is below the threshold");
}

/// Four requests whose streams open one after another with the pump taking
/// streams from two open: A alone, B beside A, then C and D together (which
/// make four). Returns each one's reported percentages, the streams read on
/// the pump, and the streams the fake saw opened.
async fn a_crowd_after_two(tweak: impl FnOnce(&mut FalConfig)) -> (Vec<Vec<u8>>, u64, u64) {
    let t = spawn_with(Scenario::Success, |c| {
        c.max_in_flight = 16;
        c.stream_pump_from = 2;
        tweak(c);
    })
    .await;
    t.fake
        .set_latency(Duration::from_millis(20), Duration::from_millis(1500));
    t.fake
        .set_stream_progress_interval(Duration::from_millis(50));
    let observers: [Recorder; 4] = Default::default();
    let one = |after: u64, observer: &'static Recorder| {
        let t = &t;
        async move {
            while t.fake.status_streams() < after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (glb, _) = generate_glb(t, request("tripo3d-v2.5"), observer)
                .await
                .unwrap();
            assert_eq!(glb, textured_glb());
        }
    };
    let observers: &'static [Recorder; 4] = Box::leak(Box::new(observers));
    tokio::join!(
        one(0, &observers[0]),
        one(1, &observers[1]),
        one(2, &observers[2]),
        one(2, &observers[3]),
    );
    assert_eq!(t.fake.status_polls(), 0, "nothing was polled");
    (
        observers.iter().map(Recorder::progress).collect(),
        t.generator.pumped_streams(),
        t.fake.status_streams(),
    )
}

#[tokio::test]
async fn streams_opened_before_a_crowd_move_to_the_pump_at_their_next_event() {
    let (progress, pumped, streams) = a_crowd_after_two(|_| {}).await;
    // C and D open with two others: on the pump. A and B opened below the
    // threshold; once four are open, each is dropped at its next event and
    // reopened there.
    assert_eq!(streams, 6, "A and B were each reopened once");
    assert_eq!(pumped, 4, "C, D, and A and B reopened");
    for (name, p) in ["A", "B", "C", "D"].iter().zip(&progress) {
        assert!(
            p.iter().any(|&p| (20..90).contains(&p)),
            "{name} reported progress: {p:?}"
        );
        assert!(
            p.windows(2).all(|w| w[0] <= w[1]),
            "{name}'s progress never went back across the move: {p:?}"
        );
    }

    // Without the pump (`FAL_STREAM_TICK_MS=0`) nothing moves.
    let (_, pumped, streams) = a_crowd_after_two(|c| c.stream_tick = Duration::ZERO).await;
    assert_eq!((pumped, streams), (0, 4));
}

/// Runs one request whose status stream sends an event every 10 ms for
/// about 600 ms, reported to an observer that asks for nothing during the
/// first 300 ms; returns the percentages reported, those reported within
/// that time, and the streams read on the pump.
async fn quiet_observer_run(tweak: impl FnOnce(&mut FalConfig)) -> (Vec<u8>, Vec<u8>, u64) {
    let t = spawn_with(Scenario::Success, tweak).await;
    t.fake
        .set_latency(Duration::from_millis(20), Duration::from_millis(600));
    t.fake
        .set_stream_progress_interval(Duration::from_millis(10));
    let quiet_until = std::time::Instant::now() + Duration::from_millis(300);
    let observer = Recorder {
        quiet_until: Some(quiet_until),
        ..Recorder::default()
    };

    generate_glb(&t, request("tripo3d-v2.5"), &observer)
        .await
        .unwrap();

    let progress = observer.progress();
    let at = observer.progress_at.lock().unwrap().clone();
    let early = progress
        .iter()
        .zip(&at)
        .filter(|&(_, &at)| at < quiet_until)
        .map(|(&p, _)| p)
        .collect();
    (progress, early, t.generator.pumped_streams())
}

#[tokio::test]
async fn a_pumped_stream_waits_out_its_observers_quiet_time_and_reports_the_latest() {
    let (progress, early, pumped) = quiet_observer_run(|c| c.stream_pump_from = 0).await;

    assert_eq!(pumped, 1);
    // The submission's report (queued, 5 %) comes before the stream opens;
    // none of the running percentages (20 % and up) comes in the quiet time.
    assert!(
        early.iter().all(|&p| p < 20),
        "the stream's percentages came in the quiet time: {progress:?}"
    );
    // The first one after it is the percentage reached by then (the stream
    // crept past 30 % within its first events), not the first one read.
    let first = progress
        .iter()
        .find(|&&p| p >= 20)
        .expect("progress after the quiet time");
    assert!(*first > 30, "the first report was stale: {progress:?}");
}

#[tokio::test]
async fn a_stream_read_on_its_items_task_reports_every_change() {
    // Without the pump (`FAL_STREAM_TICK_MS=0`, the switch) the events wake
    // the item's task anyway, so nothing is held back.
    let (progress, early, pumped) = quiet_observer_run(|c| {
        c.stream_tick = Duration::ZERO;
        c.stream_pump_from = 0;
    })
    .await;

    assert_eq!(pumped, 0);
    assert!(
        early.iter().any(|&p| p >= 20),
        "reports came as the events did: {progress:?}"
    );
}

#[tokio::test]
async fn a_broken_stream_falls_back_to_a_poll_then_streams_again() {
    let t = spawn(Scenario::Success).await;
    t.fake
        .set_latency(Duration::from_millis(100), Duration::from_millis(200));
    t.fake.set_stream_breaks(1);

    let (glb, _) = generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(t.fake.streams_broken(), 1);
    assert!(t.fake.status_polls() >= 1, "a poll followed the break");
    assert!(t.fake.status_streams() >= 2, "the stream was opened again");
    assert_eq!(t.fake.submits(), 1);
}

#[tokio::test]
async fn streams_that_keep_failing_leave_the_request_to_polling() {
    let t = spawn(Scenario::Success).await;
    t.fake
        .set_latency(Duration::from_millis(50), Duration::from_millis(150));
    t.fake.set_stream_refusals(100);

    let (glb, _) = generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(
        t.fake.status_streams(),
        3,
        "three refusals, then no more tries"
    );
    assert!(t.fake.status_polls() >= 2);
}

#[tokio::test]
async fn with_the_stream_switched_off_the_status_is_polled() {
    let t = spawn_with(Scenario::Success, |c| c.status_stream = false).await;

    let (glb, _) = generate_glb(&t, request("tripo3d-v2.5"), &Recorder::default())
        .await
        .unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(t.fake.status_streams(), 0);
    assert!(t.fake.status_polls() >= 1);
}

// ----------------------------------------------------------------- webhooks

/// A fake FAL, a webhook receiver on 127.0.0.1 and a generator that asks fal
/// to call the receiver.
struct Hooked {
    fake: FakeFal,
    generator: Arc<FalGenerator>,
    /// The receiver's answers, in order.
    answers: Arc<std::sync::Mutex<Vec<u16>>>,
}

async fn hooked(
    scenario: Scenario,
    safety: Duration,
    tweak: impl FnOnce(&mut FalConfig),
) -> Hooked {
    let fake = FakeFal::start(FakeFalConfig {
        scenario,
        queue_time: Duration::from_millis(50),
        progress_time: Duration::from_millis(150),
        ..FakeFalConfig::default()
    })
    .await;
    let slot: Arc<OnceLock<Arc<FalGenerator>>> = Arc::new(OnceLock::new());
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    type ReceiverState = (
        Arc<OnceLock<Arc<FalGenerator>>>,
        Arc<std::sync::Mutex<Vec<u16>>>,
    );
    async fn receive(
        State((slot, answers)): State<ReceiverState>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let generator = slot.get().expect("the generator is set before any submit");
        let status = match generator.handle_webhook(&headers, &body).await {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::UNAUTHORIZED,
        };
        answers.lock().unwrap().push(status.as_u16());
        status
    }
    let app = axum::Router::new()
        .route("/hooks/fal", post(receive))
        .with_state((slot.clone(), answers.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = fast_config(&fake, fake.key());
    config.webhook_url = Some(format!("http://{addr}/hooks/fal").parse().unwrap());
    config.jwks_url = fake.jwks_url().parse().unwrap();
    config.webhook_safety = safety;
    tweak(&mut config);
    let generator = Arc::new(FalGenerator::new(config).unwrap());
    slot.set(generator.clone()).unwrap();
    Hooked {
        fake,
        generator,
        answers,
    }
}

async fn run(
    h: &Hooked,
    request: image2model_core::ports::GenerateRequest,
) -> Result<Vec<u8>, image2model_core::ports::GenerateError> {
    let mut model = generate(
        &h.generator,
        request,
        &Recorder::default(),
        Duration::from_secs(10),
        CancellationToken::new(),
    )
    .await?;
    let glb = std::mem::replace(&mut model.glb, Box::pin(futures::stream::empty()));
    collect(glb).await
}

#[tokio::test]
async fn a_request_finishes_by_webhook_without_following_its_status() {
    // The safety net would follow the status after 60 s: only the webhook
    // can end this generation within the 10 s deadline.
    let h = hooked(Scenario::Success, Duration::from_secs(60), |_| {}).await;

    let glb = run(&h, request("tripo3d-v2.5")).await.unwrap();

    assert_eq!(glb, textured_glb());
    let submit = h.fake.last_submit().unwrap();
    assert!(submit.webhook.is_some(), "the submit named the webhook");
    assert_eq!(h.fake.webhooks_sent(), 1);
    assert_eq!(*h.answers.lock().unwrap(), vec![200]);
    assert_eq!(h.fake.status_streams(), 0, "no stream was opened");
    assert_eq!(h.fake.status_polls(), 0, "nothing was polled");
    assert_eq!(h.fake.results(), 1);
    assert_eq!(h.generator.awaiting_webhooks(), 0);
}

#[tokio::test]
async fn a_lost_webhook_is_covered_by_the_status_stream() {
    let h = hooked(Scenario::Success, Duration::from_millis(400), |_| {}).await;
    h.fake.set_webhook_delivery(WebhookDelivery::Drop);

    let glb = run(&h, request("tripo3d-v2.5")).await.unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(h.fake.webhooks_dropped(), 1);
    assert!(h.answers.lock().unwrap().is_empty(), "no webhook arrived");
    assert_eq!(
        h.fake.status_streams(),
        1,
        "the safety net followed the stream"
    );
    assert_eq!(h.fake.submits(), 1);
}

#[tokio::test]
async fn a_webhook_with_a_bad_signature_is_refused_and_the_stream_finishes() {
    let h = hooked(Scenario::Success, Duration::from_millis(400), |_| {}).await;
    h.fake.set_webhook_delivery(WebhookDelivery::BadSignature);

    let glb = run(&h, request("tripo3d-v2.5")).await.unwrap();

    assert_eq!(glb, textured_glb());
    let answers = h.answers.lock().unwrap().clone();
    assert!(
        !answers.is_empty() && answers.iter().all(|&a| a == 401),
        "{answers:?}"
    );
    assert_eq!(h.fake.status_streams(), 1);
}

#[tokio::test]
async fn a_failed_request_reported_by_webhook_fails_with_the_results_code() {
    let h = hooked(
        Scenario::ResultInvalidInput,
        Duration::from_secs(60),
        |_| {},
    )
    .await;

    let err = run(&h, request("tripo3d-v2.5")).await.unwrap_err();

    assert_eq!(err.code(), "generation_rejected");
    assert_eq!(h.fake.webhooks_sent(), 1);
    assert_eq!(h.fake.status_streams() + h.fake.status_polls(), 0);
}

#[tokio::test]
async fn a_resumed_request_is_followed_at_once_not_left_to_its_webhook() {
    // After a restart the webhook may have gone to the process that died.
    let h = hooked(Scenario::Success, Duration::from_secs(60), |_| {}).await;
    let id = h.fake.seed_request("tripo3d/tripo/v2.5/image-to-3d");
    let mut req = request("tripo3d-v2.5");
    req.resume_remote_request = Some(id);

    let glb = run(&h, req).await.unwrap();

    assert_eq!(glb, textured_glb());
    assert_eq!(h.fake.submits(), 0);
    assert_eq!(h.fake.status_streams(), 1);
}
