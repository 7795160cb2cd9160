//! Helpers for the FAL generator tests: a fake FAL on port 0 and a generator
//! pointed at it with millisecond policies, an observer that records what it
//! was told, and bounded calls.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use image2model_core::domain::{
    FaceLimit, GenerateOptions, ImageKind, ItemId, JobId, ModelName, Progress, Texture,
};
use image2model_core::generators::fal::{
    FalConfig, FalGenerator, PollPolicy, RetryPolicy, parse_base_url,
};
use image2model_core::ports::{
    ByteStream, GenerateContext, GenerateError, GenerateRequest, GeneratedModel,
    GenerationObserver, ModelGenerator,
};
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, FakeFalProbe, Scenario};
use image2model_core::testing::images;
use tokio_util::sync::CancellationToken;

/// A fake FAL and a generator that talks to it.
pub struct TestFal {
    pub fake: FakeFal,
    pub generator: FalGenerator,
}

/// Fast policies: polls every few ms, retries after a few ms.
pub fn fast_config(fake: &FakeFal, key: &str) -> FalConfig {
    let mut config = FalConfig::new(key.to_owned().into());
    config.queue_base_url = parse_base_url("queue", &fake.queue_base_url()).unwrap();
    config.storage_base_url = parse_base_url("storage", &fake.storage_base_url()).unwrap();
    config.poll = PollPolicy {
        initial: Duration::from_millis(5),
        factor: 1.5,
        max: Duration::from_millis(20),
    };
    config.retry = RetryPolicy {
        base: Duration::from_millis(5),
        factor: 2.0,
        cap: Duration::from_millis(20),
        jitter: 0.25,
        max_retries: 3,
        status_max_retries: 5,
        retry_after_cap: Duration::from_millis(20),
    };
    config.cancel_timeout = Duration::from_millis(500);
    config.read_timeout = Duration::from_secs(5);
    config
}

/// Starts a fake with `scenario` and a generator for it.
pub async fn spawn(scenario: Scenario) -> TestFal {
    spawn_with(scenario, |_| {}).await
}

/// Like [`spawn`], adjusting the generator's configuration.
pub async fn spawn_with(scenario: Scenario, tweak: impl FnOnce(&mut FalConfig)) -> TestFal {
    let fake = FakeFal::start(FakeFalConfig {
        scenario,
        ..FakeFalConfig::default()
    })
    .await;
    let mut config = fast_config(&fake, fake.key());
    tweak(&mut config);
    let generator = FalGenerator::new(config).unwrap();
    TestFal { fake, generator }
}

/// Options for `model`, standard texture, no face limit.
pub fn options(model: &str) -> GenerateOptions {
    GenerateOptions {
        model: ModelName::parse(model).unwrap(),
        face_limit: None,
        texture: Texture::Standard,
    }
}

/// A request for a small PNG.
pub fn request(model: &str) -> GenerateRequest {
    request_with(options(model), images::png(32, 32))
}

pub fn request_with(options: GenerateOptions, png: Vec<u8>) -> GenerateRequest {
    GenerateRequest {
        job_id: JobId::new(),
        item_id: ItemId::new(),
        options,
        image: Bytes::from(png),
        image_kind: ImageKind::Png,
        resume_remote_request: None,
    }
}

pub fn face_limit(n: u32) -> Option<FaceLimit> {
    Some(FaceLimit::new(n).unwrap())
}

/// Records progress (and when each came) and request ids; optionally fails
/// to persist the id, notes how many status looks (polls and streams) the
/// fake had seen when the id arrived, and asks for no progress until a
/// given time.
#[derive(Default)]
pub struct Recorder {
    pub progress: Mutex<Vec<u8>>,
    pub progress_at: Mutex<Vec<Instant>>,
    pub quiet_until: Option<Instant>,
    pub request_ids: Mutex<Vec<String>>,
    pub polls_when_persisted: Mutex<Vec<u64>>,
    pub probe: Option<FakeFalProbe>,
    pub fail_persist: bool,
}

impl Recorder {
    pub fn watching(fake: &FakeFal) -> Self {
        Self {
            probe: Some(fake.probe()),
            ..Self::default()
        }
    }

    pub fn progress(&self) -> Vec<u8> {
        self.progress.lock().unwrap().clone()
    }

    pub fn request_ids(&self) -> Vec<String> {
        self.request_ids.lock().unwrap().clone()
    }
}

#[async_trait]
impl GenerationObserver for Recorder {
    async fn progress(&self, progress: Progress) {
        self.progress.lock().unwrap().push(progress.get());
        self.progress_at.lock().unwrap().push(Instant::now());
    }

    fn quiet_until(&self) -> Option<Instant> {
        self.quiet_until.filter(|&t| t > Instant::now())
    }

    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError> {
        if let Some(probe) = &self.probe {
            self.polls_when_persisted
                .lock()
                .unwrap()
                .push(probe.status_polls() + probe.status_streams());
        }
        if self.fail_persist {
            return Err(GenerateError::Internal("the job store is down".into()));
        }
        self.request_ids.lock().unwrap().push(request_id.to_owned());
        Ok(())
    }
}

/// Fails the test if `fut` runs past `limit`.
pub async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("the call ran past {limit:?}"))
}

/// Runs `generate` with a deadline, failing the test if it outlives the
/// deadline by more than a second.
pub async fn generate(
    generator: &FalGenerator,
    request: GenerateRequest,
    observer: &Recorder,
    deadline: Duration,
    cancel: CancellationToken,
) -> Result<GeneratedModel, GenerateError> {
    let ctx = GenerateContext {
        observer,
        cancel,
        deadline,
    };
    bounded(
        deadline + Duration::from_secs(1),
        generator.generate(request, ctx),
    )
    .await
}

/// `generate` with a 10 s deadline and no cancellation.
pub async fn generate_simple(
    t: &TestFal,
    request: GenerateRequest,
    observer: &Recorder,
) -> Result<GeneratedModel, GenerateError> {
    generate(
        &t.generator,
        request,
        observer,
        Duration::from_secs(10),
        CancellationToken::new(),
    )
    .await
}

/// Reads a stream whole; an error is turned back into the [`GenerateError`]
/// it carries.
pub async fn collect(mut stream: ByteStream) -> Result<Vec<u8>, GenerateError> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => {
                let carried = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<GenerateError>())
                    .cloned();
                return Err(carried.unwrap_or_else(|| GenerateError::Internal(e.to_string())));
            }
        }
    }
    Ok(out)
}

/// Generates and reads the whole model.
pub async fn generate_glb(
    t: &TestFal,
    request: GenerateRequest,
    observer: &Recorder,
) -> Result<(Vec<u8>, GeneratedModel), GenerateError> {
    let mut model = generate_simple(t, request, observer).await?;
    let glb = std::mem::replace(&mut model.glb, futures::stream::empty().boxed());
    Ok((collect(glb).await?, model))
}

/// The generator's `ModelGenerator` view (for `health()` etc.).
pub fn as_generator(g: &FalGenerator) -> &dyn ModelGenerator {
    g
}
