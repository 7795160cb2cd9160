//! The [`ModelGenerator`] conformance checks: one `pub async fn` per clause
//! of the contract, each taking a [`GeneratorFixture`] that arranges the
//! generator under test for the [`Setup`] the check needs.
//!
//! The clauses, from [`ModelGenerator::generate`] and [`GenerateContext`]:
//!
//! - it offers at least one model, each under its own name;
//! - given a valid image it produces a valid GLB (checked with
//!   [`GlbInspector`], as the pipeline stores it, and parsed as glTF), of
//!   the size it announced;
//! - it reports progress at least once, and never less than before;
//! - a cancelled context stops it: it returns `cancelled` promptly, whether
//!   cancelled before it starts (without starting remote work) or while it
//!   works, reports nothing afterwards, and its work stops;
//! - the deadline is honoured: past it, it returns `generation_timeout`
//!   promptly, reports nothing afterwards, and its work stops;
//! - errors carry a stable code: a model it does not offer is
//!   `unknown_model`, and a failure gives the same documented code each time.
//!
//! A generator that needs an outside service runs them against a fake (FAL:
//! [`crate::testing::fake_fal`]); the fixture keeps it alive with the
//! [`Subject`].

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::Check;
use crate::domain::{ModelName, Progress};
use crate::gltf::GlbInspector;
use crate::ports::{
    ByteStream, GenerateContext, GenerateError, GenerateRequest, GeneratedModel,
    GenerationObserver, ModelGenerator,
};

/// The list of checks, shared by the test macro and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __model_generator_checks {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {$mode model_generator ($($args)*) [
            offers_models_under_its_own_name,
            a_valid_image_gives_a_valid_glb,
            progress_is_reported_and_never_goes_down,
            cancelled_before_it_starts_it_reports_cancelled,
            cancellation_stops_a_running_generation,
            the_deadline_stops_a_running_generation,
            a_model_it_does_not_offer_is_unknown_model,
            a_failure_carries_its_stable_code,
        ]}
    };
}

/// Every check, by name.
pub const CHECKS: &[Check<dyn GeneratorFixture>] = crate::__model_generator_checks!(array());

/// What a check needs the generator to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// Succeed: a valid image, within seconds.
    Succeeds,
    /// Keep working far longer than the checks wait (at least a second;
    /// the checks cancel it or give it a deadline of [`SLOW_DEADLINE`]).
    Slow,
    /// Fail with [`Subject::expected_code`].
    Fails,
}

/// The deadline the deadline check gives a [`Setup::Slow`] generation.
pub const SLOW_DEADLINE: Duration = Duration::from_millis(300);

/// How long after cancellation or its deadline a generator may take to
/// return (FAL sends its cancel first, bounded by its `cancel_timeout`).
pub const PROMPTLY: Duration = Duration::from_secs(3);

/// The longest a [`Setup::Succeeds`] generation may take.
const SUCCEEDS_WITHIN: Duration = Duration::from_secs(60);

/// The deadline given when a check is not about the deadline.
const NO_DEADLINE: Duration = Duration::from_secs(600);

/// The generator under test, arranged for one check.
pub struct Subject {
    /// The generator.
    pub generator: Arc<dyn ModelGenerator>,
    /// What to ask of it (for [`Setup::Slow`], something that keeps it busy).
    pub request: GenerateRequest,
    /// With [`Setup::Fails`]: the code its error must carry.
    pub expected_code: Option<&'static str>,
    /// Whether the work it started has stopped (e.g. the fake FAL saw the
    /// cancel), for generators whose work can be seen from outside.
    pub work_stopped: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Kept alive for the check (e.g. the fake FAL server).
    pub keep_alive: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("generator", &self.generator)
            .field("request", &self.request)
            .field("expected_code", &self.expected_code)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// `generator`, asked for `request`.
    #[must_use]
    pub fn new(generator: Arc<dyn ModelGenerator>, request: GenerateRequest) -> Self {
        Self {
            generator,
            request,
            expected_code: None,
            work_stopped: None,
            keep_alive: None,
        }
    }

    /// Its failure must carry `code` (for [`Setup::Fails`]).
    #[must_use]
    pub fn expecting(mut self, code: &'static str) -> Self {
        self.expected_code = Some(code);
        self
    }

    /// `stopped` says whether the work it started has stopped.
    #[must_use]
    pub fn with_work_stopped(mut self, stopped: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.work_stopped = Some(Box::new(stopped));
        self
    }

    /// Keeps `value` alive as long as the subject.
    #[must_use]
    pub fn keeping(mut self, value: impl Any + Send + Sync) -> Self {
        self.keep_alive = Some(Box::new(value));
        self
    }
}

/// Arranges a generator for each check.
pub trait GeneratorFixture: Send + Sync {
    /// A fresh subject for `setup`.
    fn arrange(&self, setup: Setup) -> BoxFuture<'static, Subject>;
}

struct FnFixture<F>(F);

impl<F, Fut> GeneratorFixture for FnFixture<F>
where
    F: Fn(Setup) -> Fut + Send + Sync,
    Fut: Future<Output = Subject> + Send + 'static,
{
    fn arrange(&self, setup: Setup) -> BoxFuture<'static, Subject> {
        Box::pin((self.0)(setup))
    }
}

/// A fixture from a function of the setup.
pub fn fixture<F, Fut>(arrange: F) -> Arc<dyn GeneratorFixture>
where
    F: Fn(Setup) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Subject> + Send + 'static,
{
    Arc::new(FnFixture(arrange))
}

// ---------------------------------------------------------------- helpers

/// What the generator told its observer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Progress(u8),
    RemoteRequest(String),
}

#[derive(Default)]
struct Recorder {
    reports: Mutex<Vec<Report>>,
    first: tokio::sync::Notify,
}

impl Recorder {
    fn push(&self, report: Report) {
        let mut reports = self.reports.lock().expect("reports lock");
        reports.push(report);
        if reports.len() == 1 {
            self.first.notify_one();
        }
    }

    fn reports(&self) -> Vec<Report> {
        self.reports.lock().expect("reports lock").clone()
    }

    fn progress(&self) -> Vec<u8> {
        self.reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::Progress(p) => Some(p),
                Report::RemoteRequest(_) => None,
            })
            .collect()
    }

    fn remote_requests(&self) -> Vec<String> {
        self.reports()
            .into_iter()
            .filter_map(|r| match r {
                Report::RemoteRequest(id) => Some(id),
                Report::Progress(_) => None,
            })
            .collect()
    }

    /// Returns once something was reported, or after `at_most`.
    async fn first_report(&self, at_most: Duration) {
        let notified = self.first.notified();
        if !self.reports().is_empty() {
            return;
        }
        let _ = tokio::time::timeout(at_most, notified).await;
    }
}

#[async_trait]
impl GenerationObserver for Recorder {
    async fn progress(&self, progress: Progress) {
        self.push(Report::Progress(progress.get()));
    }

    async fn remote_request(&self, request_id: &str) -> Result<(), GenerateError> {
        self.push(Report::RemoteRequest(request_id.to_owned()));
        Ok(())
    }
}

fn describe(outcome: &Result<GeneratedModel, GenerateError>) -> String {
    match outcome {
        Ok(model) => format!("a model ({model:?})"),
        Err(e) => format!("{e} (code {})", e.code()),
    }
}

async fn read_all(mut stream: ByteStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("reading the {what}: {e}")));
    }
    out
}

/// Runs `request` to the end with a fresh observer.
/// One run of the subject's own request, never cancelled, no deadline.
async fn run_plain(
    subject: &Subject,
    observer: &Recorder,
) -> Result<GeneratedModel, GenerateError> {
    let request = subject.request.clone();
    run(
        subject,
        request,
        CancellationToken::new(),
        NO_DEADLINE,
        observer,
    )
    .await
}

async fn run(
    subject: &Subject,
    request: GenerateRequest,
    cancel: CancellationToken,
    deadline: Duration,
    observer: &Recorder,
) -> Result<GeneratedModel, GenerateError> {
    let ctx = GenerateContext {
        observer,
        cancel,
        deadline,
    };
    tokio::time::timeout(
        deadline.min(SUCCEEDS_WITHIN) + PROMPTLY,
        subject.generator.generate(request, ctx),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} did not return within {:?} of its deadline",
            subject.generator.name(),
            PROMPTLY
        )
    })
}

/// After a stopped generation returned: nothing more is reported, and the
/// work the subject can see has stopped.
async fn assert_quiet_and_stopped(subject: &Subject, observer: &Recorder, why: &str) {
    let name = subject.generator.name();
    let reported = observer.reports().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = observer.reports();
    assert_eq!(
        later.len(),
        reported,
        "{name} reported {:?} after it returned ({why})",
        &later[reported..]
    );
    if let Some(stopped) = &subject.work_stopped {
        let until = Instant::now() + PROMPTLY;
        while !stopped() {
            assert!(
                Instant::now() < until,
                "{name}'s work did not stop within {PROMPTLY:?} ({why})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------- checks

/// It offers at least one model, each listed under the generator's name.
pub async fn offers_models_under_its_own_name(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Succeeds).await;
    let name = subject.generator.name().to_owned();

    let models = subject.generator.models();

    assert!(!models.is_empty(), "{name} offers no model");
    for m in &models {
        assert_eq!(
            m.generator, name,
            "{name} lists model {} under another generator",
            m.name
        );
    }
    assert!(
        models
            .iter()
            .any(|m| m.name == subject.request.options.model),
        "{name} does not offer the model its fixture asks for ({})",
        subject.request.options.model
    );
}

/// A valid image gives a GLB that passes the pipeline's streaming check and
/// parses as glTF, of the size announced (when announced); a preview, when
/// made, is not empty.
pub async fn a_valid_image_gives_a_valid_glb(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Succeeds).await;
    let name = subject.generator.name();
    let observer = Recorder::default();

    let outcome = run_plain(&subject, &observer).await;

    let model = outcome.unwrap_or_else(|e| panic!("{name} failed: {e} (code {})", e.code()));
    let bytes = read_all(model.glb, "model").await;
    let mut inspector = GlbInspector::new(u64::MAX);
    inspector
        .feed(&bytes)
        .and_then(|()| inspector.finish())
        .unwrap_or_else(|e| panic!("{name}'s model fails the GLB check: {e}"));
    ::gltf::Gltf::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}'s model is not glTF: {e}"));
    if let Some(hint) = model.size_hint {
        assert_eq!(
            hint,
            bytes.len() as u64,
            "{name} announced {hint} bytes and sent {}",
            bytes.len()
        );
    }
    if let Some(preview) = model.preview {
        let preview = read_all(preview.body, "preview").await;
        assert!(!preview.is_empty(), "{name} made an empty preview");
    }
}

/// A successful generation reports progress at least once, and each report
/// is at least the one before (the observer ignores lower values; a
/// generator must not send them).
pub async fn progress_is_reported_and_never_goes_down(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Succeeds).await;
    let name = subject.generator.name();
    let observer = Recorder::default();

    let outcome = run_plain(&subject, &observer).await;

    assert!(outcome.is_ok(), "{name} failed: {}", describe(&outcome));
    let progress = observer.progress();
    assert!(!progress.is_empty(), "{name} reported no progress");
    for pair in progress.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "{name}'s progress went down: {progress:?}"
        );
    }
}

/// A context cancelled before the call: `cancelled` at once, no remote work
/// started.
pub async fn cancelled_before_it_starts_it_reports_cancelled(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Succeeds).await;
    let name = subject.generator.name();
    let observer = Recorder::default();
    let cancel = CancellationToken::new();
    cancel.cancel();

    let started = Instant::now();
    let outcome = run(
        &subject,
        subject.request.clone(),
        cancel,
        NO_DEADLINE,
        &observer,
    )
    .await;

    assert!(
        matches!(&outcome, Err(e) if e.code() == "cancelled"),
        "{name} gave {} for a cancelled context",
        describe(&outcome)
    );
    assert!(
        started.elapsed() < PROMPTLY,
        "{name} took {:?} to notice",
        started.elapsed()
    );
    assert_eq!(
        observer.remote_requests(),
        Vec::<String>::new(),
        "{name} started remote work though cancelled"
    );
}

/// Cancelled while it works (after its first report, or after a second
/// without one): `cancelled` promptly, nothing reported afterwards, its work
/// stopped.
pub async fn cancellation_stops_a_running_generation(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Slow).await;
    let name = subject.generator.name();
    let observer = Recorder::default();
    let cancel = CancellationToken::new();
    let ctx = GenerateContext {
        observer: &observer,
        cancel: cancel.clone(),
        deadline: NO_DEADLINE,
    };
    let generation = subject.generator.generate(subject.request.clone(), ctx);
    tokio::pin!(generation);

    tokio::select! {
        outcome = &mut generation => panic!(
            "{name}'s slow generation ended before it was cancelled: {}",
            describe(&outcome)
        ),
        () = observer.first_report(Duration::from_secs(1)) => {}
    }
    cancel.cancel();
    let cancelled_at = Instant::now();
    let outcome = tokio::time::timeout(PROMPTLY, generation)
        .await
        .unwrap_or_else(|_| panic!("{name} ran on for {PROMPTLY:?} after it was cancelled"));

    assert!(
        matches!(&outcome, Err(e) if e.code() == "cancelled"),
        "{name} gave {} when cancelled",
        describe(&outcome)
    );
    assert!(cancelled_at.elapsed() < PROMPTLY);
    assert_quiet_and_stopped(&subject, &observer, "cancelled").await;
}

/// Its deadline passes while it works: `generation_timeout`, not before the
/// deadline and promptly after it, nothing reported afterwards, its work
/// stopped.
pub async fn the_deadline_stops_a_running_generation(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Slow).await;
    let name = subject.generator.name();
    let observer = Recorder::default();

    let started = Instant::now();
    let outcome = run(
        &subject,
        subject.request.clone(),
        CancellationToken::new(),
        SLOW_DEADLINE,
        &observer,
    )
    .await;
    let took = started.elapsed();

    assert!(
        matches!(&outcome, Err(e) if e.code() == "generation_timeout"),
        "{name} gave {} past its deadline",
        describe(&outcome)
    );
    assert!(
        took >= SLOW_DEADLINE,
        "{name} gave up after {took:?}, before its deadline of {SLOW_DEADLINE:?}"
    );
    assert_quiet_and_stopped(&subject, &observer, "past its deadline").await;
}

/// A model it does not offer: `unknown_model`, whatever the image.
pub async fn a_model_it_does_not_offer_is_unknown_model(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Succeeds).await;
    let name = subject.generator.name();
    let observer = Recorder::default();
    let mut request = subject.request.clone();
    request.options.model =
        ModelName::parse("conformance-no-such-model").expect("a valid model name");

    let outcome = run(
        &subject,
        request,
        CancellationToken::new(),
        NO_DEADLINE,
        &observer,
    )
    .await;

    assert!(
        matches!(&outcome, Err(GenerateError::UnknownModel(m)) if m.as_str() == "conformance-no-such-model"),
        "{name} gave {} for a model it does not offer",
        describe(&outcome)
    );
    assert_eq!(outcome.err().map(|e| e.code()), Some("unknown_model"));
}

/// A failure carries the code its fixture expects, the same each time.
pub async fn a_failure_carries_its_stable_code(fixture: Arc<dyn GeneratorFixture>) {
    let subject = fixture.arrange(Setup::Fails).await;
    let name = subject.generator.name();
    let expected = subject
        .expected_code
        .unwrap_or_else(|| panic!("{name}'s fixture gave no expected code for Setup::Fails"));

    let mut codes = Vec::new();
    for _ in 0..2 {
        let observer = Recorder::default();
        let outcome = run_plain(&subject, &observer).await;
        match outcome {
            Err(e) => codes.push(e.code()),
            Ok(_) => panic!("{name} succeeded where it should fail with {expected}"),
        }
    }

    assert_eq!(codes, [expected, expected], "{name}'s failure codes");
}
