//! Soak: mixed traffic for a long while against the real server and a fake
//! FAL that fails on purpose, watching for what grows and for what is lost.
//!
//! A few clients, each at a moderate pace (a pause after every action),
//! pick actions at random: uploads of one image and of several, job status
//! reads, event streams (followed to the end, or dropped after the first
//! event), model downloads in each format (GLB, OBJ, STL), job listings, and
//! bad requests (a wrong key, no key, a file that is not an image, an
//! oversized file, an unknown job, a malformed id, an unknown item, an
//! unknown format, a method the route does not allow, an upload without a
//! file). Each action knows which statuses it expects; any other answer,
//! and every 5xx (the soak provokes none), is an unexpected error.
//!
//! Meanwhile the fake FAL cycles through failures ([`CHAOS`]): submits
//! answered 503 or 429, status calls answered 503, status streams broken or
//! refused, results that fail. A transient failure must be retried by the
//! server; a final one must end its item `failed`. Either way every item
//! must end.
//!
//! Every accepted job is followed (one status read a second) until it ends;
//! its succeeded items are each downloaded once, formats in turn. An item
//! is **lost** when its job does not end within the bound after it was
//! accepted, or when it succeeded and its model cannot be downloaded.
//!
//! A sampler reads the server's RSS (`/proc/PID/status`), its open file
//! descriptors (`/proc/PID/fd`) and its tokio runtime's alive tasks (the
//! `image2model_runtime_alive_tasks` gauge on `METRICS_ADDR`). [`verdict`]
//! says whether any of them grew: after a warm-up, the median of the last
//! third of the samples against the median of the first third.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use image2model_core::testing::fake_fal::{FakeFal, Scenario};
use serde::Serialize;

use crate::Result;
use crate::client::{Body, Conn, Multipart, empty, full};
use crate::images;
use crate::rss::{MIB, rss};
use crate::scenarios::memory::raw_chunked_upload;

/// The Prometheus gauge of the server's alive tokio tasks.
pub const TASKS_GAUGE: &str = "image2model_runtime_alive_tasks";

/// How long one request (or one event stream) may take before it counts as
/// failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How a soak runs.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    /// How long the traffic lasts.
    pub duration: Duration,
    /// How often RSS, descriptors and tasks are read.
    pub sample_every: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Each client's pause after every action.
    pub pause: Duration,
    /// How long after its acceptance a job may take to end.
    pub item_bound: Duration,
    /// How long each failure of the fake FAL's cycle lasts.
    pub chaos_every: Duration,
    /// The size of the oversized upload (above the server's
    /// `MAX_FILE_BYTES`).
    pub oversized_bytes: u64,
    /// Images in a multi-image upload.
    pub images_per_job: usize,
    /// The growth rule.
    pub tolerance: Tolerance,
}

/// The server under soak.
#[derive(Debug, Clone)]
pub struct SoakTarget {
    /// Its API address.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// Its `METRICS_ADDR`.
    pub metrics: SocketAddr,
    /// A user key.
    pub key: String,
}

/// One reading of the server.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub at_s: f64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Alive tokio tasks (`None` when the metrics could not be read).
    pub tasks: Option<u64>,
}

/// Counts of one minute.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    /// Answers 2xx that were expected.
    pub ok: u64,
    /// Answers 4xx that were expected (the bad requests).
    pub expected_4xx: u64,
    /// Answers 4xx (or 1xx, 3xx) that were not expected.
    pub unexpected_4xx: u64,
    /// Answers 5xx (never expected).
    pub server_errors: u64,
    /// Requests with no answer: connection failures, timeouts, streams cut.
    pub no_answer: u64,
    /// Jobs accepted.
    pub jobs: u64,
    /// Items accepted.
    pub items: u64,
    /// Items that ended `succeeded`.
    pub succeeded: u64,
    /// Items that ended `failed` (or `cancelled`).
    pub failed: u64,
    /// Models downloaded and checked.
    pub downloads: u64,
    /// Event streams read.
    pub streams: u64,
}

impl Counts {
    /// Every request answered or not.
    #[must_use]
    pub fn requests(&self) -> u64 {
        self.ok + self.expected_4xx + self.unexpected_4xx + self.server_errors + self.no_answer
    }

    /// The errors that fail the soak.
    #[must_use]
    pub fn unexpected(&self) -> u64 {
        self.unexpected_4xx + self.server_errors + self.no_answer
    }

    fn add(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.expected_4xx += o.expected_4xx;
        self.unexpected_4xx += o.unexpected_4xx;
        self.server_errors += o.server_errors;
        self.no_answer += o.no_answer;
        self.jobs += o.jobs;
        self.items += o.items;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.downloads += o.downloads;
        self.streams += o.streams;
    }
}

/// How much a reading may grow between the first and the last third of the
/// samples after the warm-up before the soak fails.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tolerance {
    /// The warm-up, as a fraction of the run (its samples are not judged).
    pub warmup_fraction: f64,
    /// RSS may grow by this fraction…
    pub rss_fraction: f64,
    /// …or by this many bytes, whichever is larger.
    pub rss_bytes: u64,
    /// Open descriptors may grow by this many.
    pub fds: u64,
    /// Alive tasks may grow by this many.
    pub tasks: u64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            warmup_fraction: 0.2,
            rss_fraction: 0.25,
            rss_bytes: 20 * 1024 * 1024,
            fds: 16,
            tasks: 64,
        }
    }
}

/// One judged reading: the medians compared.
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// `rss`, `fds` or `tasks`.
    pub what: &'static str,
    /// The median of the first third after the warm-up.
    pub first: f64,
    /// The median of the last third.
    pub last: f64,
    /// The most `last` may be.
    pub limit: f64,
}

impl Growth {
    /// Whether it stayed within its limit.
    #[must_use]
    pub fn flat(&self) -> bool {
        self.last <= self.limit
    }
}

/// The growth rule: the samples taken after `warmup_fraction` of `duration`
/// are cut in thirds; each reading's median over the last third may exceed
/// its median over the first third by at most the tolerance (RSS: the
/// larger of `rss_fraction` and `rss_bytes`). The judged readings, and the
/// problems (too few samples, tasks never read, a reading that grew).
#[must_use]
pub fn verdict(
    samples: &[Sample],
    duration: Duration,
    tolerance: &Tolerance,
) -> (Vec<Growth>, Vec<String>) {
    let warmup = duration.as_secs_f64() * tolerance.warmup_fraction;
    let judged: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup).collect();
    let mut problems = Vec::new();
    if judged.len() < 3 {
        problems.push(format!(
            "only {} samples after the warm-up ({warmup:.0} s): at least 3 are needed to judge growth",
            judged.len()
        ));
        return (Vec::new(), problems);
    }
    let third = judged.len() / 3;
    let (head, tail) = (&judged[..third], &judged[judged.len() - third..]);
    let mut growths = Vec::new();
    let mut judge =
        |what: &'static str, f: &dyn Fn(&Sample) -> Option<f64>, limit: &dyn Fn(f64) -> f64| {
            let first: Vec<f64> = head.iter().filter_map(|s| f(s)).collect();
            let last: Vec<f64> = tail.iter().filter_map(|s| f(s)).collect();
            if first.is_empty() || last.is_empty() {
                problems.push(format!("{what} was not read in some third of the run"));
                return;
            }
            let (first, last) = (median(first), median(last));
            growths.push(Growth {
                what,
                first,
                last,
                limit: limit(first),
            });
        };
    judge("rss", &|s| Some(s.rss as f64), &|first| {
        first + (first * tolerance.rss_fraction).max(tolerance.rss_bytes as f64)
    });
    judge("fds", &|s| Some(s.fds as f64), &|first| {
        first + tolerance.fds as f64
    });
    judge("tasks", &|s| s.tasks.map(|t| t as f64), &|first| {
        first + tolerance.tasks as f64
    });
    for g in &growths {
        if !g.flat() {
            problems.push(format!(
                "{} grew: median {} over the first third after the warm-up, {} over the last third (at most {} allowed)",
                g.what,
                show(g.what, g.first),
                show(g.what, g.last),
                show(g.what, g.limit)
            ));
        }
    }
    (growths, problems)
}

/// A reading for a message: MiB for RSS, a count otherwise.
fn show(what: &str, v: f64) -> String {
    if what == "rss" {
        format!("{:.1} MiB", v / MIB)
    } else {
        format!("{v:.0}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Every reading, in order (the last one after the drain).
    pub samples: Vec<Sample>,
    /// Counts per minute of traffic (the drain's follow-up counted in the
    /// last minute).
    pub minutes: Vec<Counts>,
    /// The whole run's counts.
    pub total: Counts,
    /// Items lost, each with why.
    pub lost: Vec<String>,
    /// The first unexpected answers, each with what was asked.
    pub unexpected: Vec<String>,
    /// How many unexpected answers there were in all.
    pub unexpected_count: u64,
    /// The judged readings.
    pub growth: Vec<Growth>,
    /// Why the soak fails; empty when it passes.
    pub problems: Vec<String>,
    /// Failures the fake FAL was set to, in order, with how often.
    pub chaos: Vec<(String, u64)>,
    /// The reading after the drain (traffic stopped, every job ended).
    pub after_drain: Option<Sample>,
}

impl SoakReport {
    /// Whether the soak passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The per-minute table, in Markdown.
    #[must_use]
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| minute | RSS MiB | fds | tasks | requests | 2xx | 4xx expected | 4xx unexpected | 5xx | no answer | jobs | items | succeeded | failed | downloads | streams |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for (m, c) in self.minutes.iter().enumerate() {
            // The minute's last reading (taken before its end).
            let end = (m + 1) as f64 * 60.0;
            let s = self
                .samples
                .iter()
                .rfind(|s| s.at_s < end + 1.0 && s.at_s >= end - 60.0);
            let (rss_mib, fds, tasks) = s.map_or(("—".into(), "—".into(), "—".into()), |s| {
                (
                    format!("{:.1}", s.rss as f64 / MIB),
                    s.fds.to_string(),
                    s.tasks.map_or("—".into(), |t| t.to_string()),
                )
            });
            out.push_str(&format!(
                "| {} | {rss_mib} | {fds} | {tasks} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m + 1,
                c.requests(),
                c.ok,
                c.expected_4xx,
                c.unexpected_4xx,
                c.server_errors,
                c.no_answer,
                c.jobs,
                c.items,
                c.succeeded,
                c.failed,
                c.downloads,
                c.streams
            ));
        }
        out
    }
}

/// The fake FAL's failure cycle: each entry lasts [`SoakPlan::chaos_every`],
/// and requests keep the scenario in force when they were submitted.
pub const CHAOS: &[Chaos] = &[
    Chaos::Scenario("success"),
    Chaos::Scenario("submit-503"),
    Chaos::Scenario("success"),
    Chaos::Scenario("submit-429"),
    Chaos::StreamBreaks(3),
    Chaos::Scenario("status-503"),
    Chaos::Scenario("success"),
    Chaos::Scenario("completed-with-error"),
    Chaos::StreamRefusals(3),
    Chaos::Scenario("truncated"),
    Chaos::Scenario("success"),
    Chaos::Scenario("invalid-input"),
];

/// One step of the failure cycle.
#[derive(Debug, Clone, Copy)]
pub enum Chaos {
    /// A [`Scenario`] by name (see [`Scenario::NAMES`]); the transient ones
    /// fail twice then work.
    Scenario(&'static str),
    /// Back to success, and the next N status streams close after their
    /// first event.
    StreamBreaks(u32),
    /// Back to success, and the next N status stream opens answer 503.
    StreamRefusals(u32),
}

impl Chaos {
    fn name(self) -> String {
        match self {
            Chaos::Scenario(s) => s.to_owned(),
            Chaos::StreamBreaks(n) => format!("{n} status streams broken"),
            Chaos::StreamRefusals(n) => format!("{n} status streams refused"),
        }
    }

    fn apply(self, fake: &FakeFal) -> Result<()> {
        match self {
            Chaos::Scenario(name) => fake.set_scenario(name.parse::<Scenario>()?),
            Chaos::StreamBreaks(n) => {
                fake.set_scenario(Scenario::Success);
                fake.set_stream_breaks(n);
            }
            Chaos::StreamRefusals(n) => {
                fake.set_scenario(Scenario::Success);
                fake.set_stream_refusals(n);
            }
        }
        Ok(())
    }
}

/// A job being followed.
#[derive(Debug, Clone)]
struct Pending {
    accepted: Instant,
    items: usize,
}

/// What the clients, the follower and the sampler share.
struct Shared {
    target: SoakTarget,
    plan: SoakPlan,
    start: Instant,
    stop: AtomicBool,
    minutes: Mutex<Vec<Counts>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Succeeded items (job, item), the latest few hundred.
    done: Mutex<Vec<(String, String)>>,
    lost: Mutex<Vec<String>>,
    unexpected: Mutex<Vec<String>>,
    unexpected_count: AtomicU64,
    small: Bytes,
    several: Bytes,
    form: Multipart,
    text_body: Bytes,
    text_form: Multipart,
    oversized_head: Bytes,
}

/// How many succeeded items are kept for random downloads.
const DONE_KEPT: usize = 500;
/// How many unexpected answers are kept for the report.
const UNEXPECTED_KEPT: usize = 30;

impl Shared {
    fn count(&self, f: impl FnOnce(&mut Counts)) {
        // What the follower counts after the traffic stopped (the drain)
        // goes to the last minute of traffic.
        let last = (self.plan.duration.as_secs_f64() / 60.0).ceil().max(1.0) as usize - 1;
        let minute = ((self.start.elapsed().as_secs() / 60) as usize).min(last);
        let mut minutes = self.minutes.lock().expect("not poisoned");
        if minutes.len() <= minute {
            minutes.resize(minute + 1, Counts::default());
        }
        f(&mut minutes[minute]);
    }

    /// Counts an answer (or its absence) to `what`, which expected one of
    /// `expected`.
    fn answer(&self, what: &str, expected: &[u16], got: &std::result::Result<u16, String>) {
        match got {
            Ok(status) if expected.contains(status) => self.count(|c| {
                if (200..300).contains(status) {
                    c.ok += 1;
                } else {
                    c.expected_4xx += 1;
                }
            }),
            Ok(status) => {
                self.count(|c| {
                    if *status >= 500 {
                        c.server_errors += 1;
                    } else {
                        c.unexpected_4xx += 1;
                    }
                });
                self.note(format!("{what}: {status}, expected {expected:?}"));
            }
            Err(e) => {
                self.count(|c| c.no_answer += 1);
                self.note(format!("{what}: no answer: {e}"));
            }
        }
    }

    fn note(&self, text: String) {
        let n = self.unexpected_count.fetch_add(1, Ordering::Relaxed);
        if n < UNEXPECTED_KEPT as u64 {
            let at = self.start.elapsed().as_secs_f64();
            self.unexpected
                .lock()
                .expect("not poisoned")
                .push(format!("at {at:.1} s: {text}"));
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A small xorshift generator: the clients' choices, reproducible per
/// client.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// How long a keep-alive connection may have been idle and still be reused:
/// well below the server's 10 s header-read timeout, which closes idle
/// connections (reusing one as the server closes it loses the request, the
/// keep-alive race every HTTP client avoids this way).
const IDLE_REUSE: Duration = Duration::from_secs(4);

/// One client's connection, opened again whenever the server closed it or
/// it was idle longer than [`IDLE_REUSE`].
struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    last_used: Instant,
}

/// A response's status, headers that matter, and body.
struct Answer {
    status: u16,
    body: Bytes,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            last_used: Instant::now(),
        }
    }

    async fn conn(&mut self) -> std::result::Result<&mut Conn, String> {
        if self.last_used.elapsed() > IDLE_REUSE {
            self.conn = None;
        }
        if self.conn.is_none() {
            let c = Conn::open(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Sends a request built on the connection and reads the whole answer.
    async fn call(
        &mut self,
        build: impl FnOnce(&Conn) -> hyper::http::Result<Request<Body>>,
    ) -> std::result::Result<Answer, String> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let conn = self.conn().await?;
            let req = build(conn).map_err(|e| e.to_string())?;
            let resp = conn.send(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let close = resp
                .headers()
                .get(CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok::<_, String>((Answer { status, body }, close))
        })
        .await;
        self.last_used = Instant::now();
        match result {
            Ok(Ok((answer, close))) => {
                if close {
                    self.conn = None;
                }
                Ok(answer)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(format!("no answer within {REQUEST_TIMEOUT:?}"))
            }
        }
    }
}

/// Runs the soak: clients, follower, sampler and the failure cycle for
/// `plan.duration`, then waits (at most `plan.item_bound`) for the jobs
/// still running, then judges.
///
/// # Errors
/// When the server's process cannot be read at the start.
pub async fn soak(target: SoakTarget, fake: &FakeFal, plan: SoakPlan) -> Result<SoakReport> {
    if rss(target.pid).is_none() {
        return Err(format!("cannot read /proc/{}/status", target.pid).into());
    }
    let small = images::photo_jpeg(64);
    let form = Multipart::one_file("photo.jpg", "image/jpeg");
    let text_form = Multipart::one_file("notes.png", "image/png");
    let shared = Arc::new(Shared {
        plan,
        start: Instant::now(),
        stop: AtomicBool::new(false),
        minutes: Mutex::new(Vec::new()),
        pending: Mutex::new(HashMap::new()),
        done: Mutex::new(Vec::new()),
        lost: Mutex::new(Vec::new()),
        unexpected: Mutex::new(Vec::new()),
        unexpected_count: AtomicU64::new(0),
        several: form.body_of_copies(&small, plan.images_per_job),
        small: form.body(&small),
        form,
        text_body: text_form.body(b"these are notes, not an image at all\n"),
        text_form,
        oversized_head: Bytes::from(images::png_head_of_size(plan.oversized_bytes)),
        target,
    });

    let mut tasks = Vec::new();
    for i in 0..plan.clients.max(1) {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(&shared, i as u64 + 1).await;
        }));
    }
    let follower = tokio::spawn(follow(shared.clone()));
    let sampler = tokio::spawn(sample_loop(shared.clone()));

    // The failure cycle runs here (it borrows the fake) until the end.
    let mut chaos: Vec<(String, u64)> = Vec::new();
    let mut step = 0usize;
    let end = shared.start + plan.duration;
    while Instant::now() < end {
        let c = CHAOS[step % CHAOS.len()];
        step += 1;
        c.apply(fake)?;
        let name = c.name();
        match chaos.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => chaos.push((name, 1)),
        }
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(plan.chaos_every.min(left)).await;
    }
    fake.set_scenario(Scenario::Success);
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut samples = sampler.await.unwrap_or_default();
    // The follower ends once every job ended or was given up as lost.
    let _ = follower.await;
    let after_drain = read_sample(&shared).await;
    samples.push(after_drain);

    let minutes = shared.minutes.lock().expect("not poisoned").clone();
    let mut total = Counts::default();
    for m in &minutes {
        total.add(m);
    }
    let lost = shared.lost.lock().expect("not poisoned").clone();
    let unexpected = shared.unexpected.lock().expect("not poisoned").clone();
    let unexpected_count = shared.unexpected_count.load(Ordering::Relaxed);
    let traffic: Vec<Sample> = samples[..samples.len() - 1].to_vec();
    let (growth, mut problems) = verdict(&traffic, plan.duration, &plan.tolerance);
    if !lost.is_empty() {
        problems.push(format!("{} items lost", lost.len()));
    }
    if unexpected_count > 0 {
        problems.push(format!(
            "{unexpected_count} unexpected answers ({} 4xx, {} 5xx, {} without an answer)",
            total.unexpected_4xx, total.server_errors, total.no_answer
        ));
    }
    if total.jobs == 0 || total.succeeded == 0 || total.downloads == 0 {
        problems.push(format!(
            "too little happened: {} jobs accepted, {} items succeeded, {} models downloaded",
            total.jobs, total.succeeded, total.downloads
        ));
    }
    Ok(SoakReport {
        samples: traffic,
        minutes,
        total,
        lost,
        unexpected,
        unexpected_count,
        growth,
        problems,
        chaos,
        after_drain: Some(after_drain),
    })
}

/// Reads RSS, descriptors and tasks every `sample_every` until the traffic
/// stops (a reading at the start and one at the very end).
async fn sample_loop(shared: Arc<Shared>) -> Vec<Sample> {
    let mut samples = Vec::new();
    let every = shared.plan.sample_every;
    let mut next = shared.start;
    loop {
        samples.push(read_sample(&shared).await);
        next += every;
        let end = shared.start + shared.plan.duration;
        let wake = next.min(end);
        while Instant::now() < wake && !shared.stopped() {
            tokio::time::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            )
            .await;
        }
        if shared.stopped() || Instant::now() >= end {
            samples.push(read_sample(&shared).await);
            return samples;
        }
    }
}

async fn read_sample(shared: &Shared) -> Sample {
    let pid = shared.target.pid;
    Sample {
        at_s: shared.start.elapsed().as_secs_f64(),
        rss: rss(pid).unwrap_or(0),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        tasks: alive_tasks(shared.target.metrics).await,
    }
}

/// The tasks gauge, read from the metrics endpoint.
async fn alive_tasks(metrics: SocketAddr) -> Option<u64> {
    let mut client = Client::new(metrics);
    let answer = client
        .call(|c| c.request(Method::GET, "/metrics", None).body(empty()))
        .await
        .ok()?;
    if answer.status != 200 {
        return None;
    }
    tasks_of(&String::from_utf8_lossy(&answer.body))
}

/// The value of [`TASKS_GAUGE`] in a Prometheus text exposition.
#[must_use]
pub fn tasks_of(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(TASKS_GAUGE)?;
        let v: f64 = rest.trim().parse().ok()?;
        Some(v as u64)
    })
}

/// Follows every accepted job (one status read a second) until it ends,
/// then downloads each of its succeeded items once (formats in turn); gives
/// a job up as lost after the bound. Ends when the traffic has stopped and
/// no job is left.
async fn follow(shared: Arc<Shared>) {
    let mut client = Client::new(shared.target.addr);
    let key = shared.target.key.clone();
    let mut turn = 0usize;
    loop {
        let jobs: Vec<(String, Pending)> = shared
            .pending
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if jobs.is_empty() && shared.stopped() {
            return;
        }
        for (job, pending) in jobs {
            let path = format!("/api/v1/jobs/{job}");
            let got = client
                .call(|c| c.request(Method::GET, &path, Some(&key)).body(empty()))
                .await;
            shared.answer(
                "GET job (follower)",
                &[200],
                &got.as_ref().map(|a| a.status).map_err(Clone::clone),
            );
            let view = got
                .ok()
                .filter(|a| a.status == 200)
                .and_then(|a| JobView::parse(&a.body));
            match view {
                Some(view) if view.terminal() => {
                    shared.pending.lock().expect("not poisoned").remove(&job);
                    if view.items.len() != pending.items {
                        shared.lost.lock().expect("not poisoned").push(format!(
                            "job {job}: {} items accepted, {} shown",
                            pending.items,
                            view.items.len()
                        ));
                    }
                    for (item, status) in &view.items {
                        match status.as_str() {
                            "succeeded" => {
                                shared.count(|c| c.succeeded += 1);
                                let format = FORMATS[turn % FORMATS.len()];
                                turn += 1;
                                let ok = download(&shared, &mut client, &job, item, format).await;
                                if ok {
                                    let mut done = shared.done.lock().expect("not poisoned");
                                    if done.len() >= DONE_KEPT {
                                        done.remove(0);
                                    }
                                    done.push((job.clone(), item.clone()));
                                } else {
                                    shared.lost.lock().expect("not poisoned").push(format!(
                                        "item {item} of job {job} succeeded but its {format} model could not be downloaded"
                                    ));
                                }
                            }
                            "failed" | "cancelled" => shared.count(|c| c.failed += 1),
                            other => shared
                                .lost
                                .lock()
                                .expect("not poisoned")
                                .push(format!("item {item} of ended job {job} is {other}")),
                        }
                    }
                }
                _ => {
                    if pending.accepted.elapsed() > shared.plan.item_bound {
                        shared.pending.lock().expect("not poisoned").remove(&job);
                        shared.lost.lock().expect("not poisoned").push(format!(
                            "job {job} ({} items) did not end within {:?} of its acceptance",
                            pending.items, shared.plan.item_bound
                        ));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The model formats, in turn.
const FORMATS: &[&str] = &["glb", "obj", "stl"];

/// Downloads one model and checks its bytes are of its format.
async fn download(
    shared: &Shared,
    client: &mut Client,
    job: &str,
    item: &str,
    format: &str,
) -> bool {
    let key = &shared.target.key;
    let path = format!("/api/v1/jobs/{job}/items/{item}/model?format={format}");
    let got = client
        .call(|c| c.request(Method::GET, &path, Some(key)).body(empty()))
        .await;
    let what = format!("GET model ({format})");
    shared.answer(
        &what,
        &[200],
        &got.as_ref().map(|a| a.status).map_err(Clone::clone),
    );
    match got {
        Ok(a) if a.status == 200 => {
            if model_is(format, &a.body) {
                shared.count(|c| c.downloads += 1);
                true
            } else {
                shared.note(format!(
                    "{what}: 200 but {} bytes that are not {format}",
                    a.body.len()
                ));
                false
            }
        }
        _ => false,
    }
}

/// Whether `body` is a model file of `format`.
#[must_use]
pub fn model_is(format: &str, body: &[u8]) -> bool {
    match format {
        "glb" => body.starts_with(b"glTF"),
        "obj" => {
            let text = String::from_utf8_lossy(body);
            text.lines().any(|l| l.starts_with("v ")) && text.lines().any(|l| l.starts_with("f "))
        }
        "stl" => {
            if body.starts_with(b"solid") && body.windows(8).any(|w| w == b"endsolid") {
                return true;
            }
            body.len() >= 84 && {
                let n = u32::from_le_bytes([body[80], body[81], body[82], body[83]]) as usize;
                n > 0 && body.len() == 84 + 50 * n
            }
        }
        _ => false,
    }
}

/// A job as the status route shows it: status and items (id, status).
struct JobView {
    status: String,
    items: Vec<(String, String)>,
}

impl JobView {
    fn parse(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let status = v.get("status")?.as_str()?.to_owned();
        let items = v
            .get("items")?
            .as_array()?
            .iter()
            .filter_map(|i| {
                Some((
                    i.get("item_id")?.as_str()?.to_owned(),
                    i.get("status")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        Some(Self { status, items })
    }

    fn terminal(&self) -> bool {
        crate::api::is_terminal(&self.status)
    }
}

/// One client: a random action, a pause, again, until the traffic stops.
async fn client_loop(shared: &Shared, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut client = Client::new(shared.target.addr);
    let mut bad = seed as usize;
    while !shared.stopped() {
        // Weights out of 100.
        let roll = rng.below(100);
        match roll {
            0..18 => upload(shared, &mut client, false).await,
            18..26 => upload(shared, &mut client, true).await,
            26..44 => status_read(shared, &mut client, &mut rng).await,
            44..54 => stream(shared, &mut rng).await,
            54..68 => random_download(shared, &mut client, &mut rng).await,
            68..76 => list(shared, &mut client).await,
            _ => {
                bad_request(shared, &mut client, bad).await;
                bad += 1;
            }
        }
        tokio::time::sleep(shared.plan.pause).await;
    }
}

fn upload_req(
    conn: &Conn,
    key: &str,
    form: &Multipart,
    body: Bytes,
) -> hyper::http::Result<Request<Body>> {
    conn.request(Method::POST, "/api/v1/upload", Some(key))
        .header(CONTENT_TYPE, form.content_type())
        .header(CONTENT_LENGTH, body.len())
        .body(full(body))
}

async fn upload(shared: &Shared, client: &mut Client, several: bool) {
    let key = &shared.target.key;
    let (body, n) = if several {
        (shared.several.clone(), shared.plan.images_per_job.max(1))
    } else {
        (shared.small.clone(), 1)
    };
    let got = client
        .call(|c| upload_req(c, key, &shared.form, body))
        .await;
    let what = format!("upload of {n} images");
    shared.answer(
        &what,
        &[202],
        &got.as_ref().map(|a| a.status).map_err(Clone::clone),
    );
    let Ok(answer) = got else { return };
    if answer.status != 202 {
        return;
    }
    match crate::api::job_id_of(&answer.body) {
        Ok(job) => {
            shared.count(|c| {
                c.jobs += 1;
                c.items += n as u64;
            });
            shared.pending.lock().expect("not poisoned").insert(
                job,
                Pending {
                    accepted: Instant::now(),
                    items: n,
                },
            );
        }
        Err(e) => shared.note(format!("{what}: 202 without a job id: {e}")),
    }
}

/// A job to look at: one still running when there is one (half the time),
/// else one that ended.
fn some_job(shared: &Shared, rng: &mut Rng) -> Option<String> {
    let running: Vec<String> = shared
        .pending
        .lock()
        .expect("not poisoned")
        .keys()
        .cloned()
        .collect();
    if !running.is_empty() && rng.below(2) == 0 {
        return Some(running[rng.below(running.len())].clone());
    }
    let done = shared.done.lock().expect("not poisoned");
    if done.is_empty() {
        return running.first().cloned();
    }
    Some(done[rng.below(done.len())].0.clone())
}

async fn status_read(shared: &Shared, client: &mut Client, rng: &mut Rng) {
    let Some(job) = some_job(shared, rng) else {
        return;
    };
    let key = &shared.target.key;
    let path = format!("/api/v1/jobs/{job}");
    let got = client
        .call(|c| c.request(Method::GET, &path, Some(key)).body(empty()))
        .await;
    shared.answer(
        "GET job",
        &[200],
        &got.as_ref().map(|a| a.status).map_err(Clone::clone),
    );
}

/// Opens a job's event stream on a connection of its own and reads it to the
/// job's end, or (one time in three) drops it after the first event.
async fn stream(shared: &Shared, rng: &mut Rng) {
    let Some(job) = some_job(shared, rng) else {
        return;
    };
    let drop_early = rng.below(3) == 0;
    let key = shared.target.key.clone();
    let addr = shared.target.addr;
    let result = tokio::time::timeout(REQUEST_TIMEOUT, async move {
        let mut conn = Conn::open(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = conn
            .request(
                Method::GET,
                &format!("/api/v1/jobs/{job}/events"),
                Some(&key),
            )
            .header(ACCEPT, "text/event-stream")
            .body(empty())
            .map_err(|e| e.to_string())?;
        let resp = conn.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Ok(status.as_u16());
        }
        let mut events = resp.into_body();
        if drop_early {
            crate::api::first_event(&mut events)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            crate::api::wait_terminal(events)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(200)
    })
    .await
    .unwrap_or_else(|_| Err(format!("the stream did not end within {REQUEST_TIMEOUT:?}")));
    shared.answer("GET job events", &[200], &result);
    if result == Ok(200) {
        shared.count(|c| c.streams += 1);
    }
}

async fn random_download(shared: &Shared, client: &mut Client, rng: &mut Rng) {
    let picked = {
        let done = shared.done.lock().expect("not poisoned");
        (!done.is_empty()).then(|| done[rng.below(done.len())].clone())
    };
    let Some((job, item)) = picked else {
        return;
    };
    let format = FORMATS[rng.below(FORMATS.len())];
    if !download(shared, client, &job, &item, format).await {
        shared.lost.lock().expect("not poisoned").push(format!(
            "item {item} of job {job} could be downloaded once, then its {format} model could not"
        ));
    }
}

async fn list(shared: &Shared, client: &mut Client) {
    let key = &shared.target.key;
    let got = client
        .call(|c| {
            c.request(Method::GET, "/api/v1/jobs?limit=20", Some(key))
                .body(empty())
        })
        .await;
    shared.answer(
        "GET jobs",
        &[200],
        &got.as_ref().map(|a| a.status).map_err(Clone::clone),
    );
}

/// A ULID that no job has (the soak's jobs are made now, not in 1970).
const UNKNOWN_ID: &str = "00000000000000000000000000";

/// The bad requests, in turn.
async fn bad_request(shared: &Shared, client: &mut Client, which: usize) {
    let key = shared.target.key.as_str();
    let known = shared.done.lock().expect("not poisoned").last().cloned();
    let get = |path: String, key: Option<&'static str>| {
        move |c: &Conn| c.request(Method::GET, &path, key).body(empty())
    };
    let user = |path: String| {
        let key = key.to_owned();
        move |c: &Conn| c.request(Method::GET, &path, Some(&key)).body(empty())
    };
    let (what, expected, got): (&str, &[u16], std::result::Result<u16, String>) = match which % 10 {
        0 => (
            "GET jobs with a wrong key",
            &[401],
            status_of(
                client
                    .call(get(
                        "/api/v1/jobs".into(),
                        Some("not-the-key-0000000000000000000000"),
                    ))
                    .await,
            ),
        ),
        1 => (
            "GET jobs without a key",
            &[401],
            status_of(client.call(get("/api/v1/jobs".into(), None)).await),
        ),
        2 => (
            "upload of a text file",
            &[415],
            status_of(
                client
                    .call(|c| upload_req(c, key, &shared.text_form, shared.text_body.clone()))
                    .await,
            ),
        ),
        3 => ("oversized upload", &[413], oversized(shared).await),
        4 => (
            "GET an unknown job",
            &[404],
            status_of(
                client
                    .call(user(format!("/api/v1/jobs/{UNKNOWN_ID}")))
                    .await,
            ),
        ),
        5 => (
            "GET a malformed job id",
            &[400, 404],
            status_of(client.call(user("/api/v1/jobs/not-a-job-id".into())).await),
        ),
        6 => match &known {
            Some((job, _)) => (
                "GET the model of an unknown item",
                &[404],
                status_of(
                    client
                        .call(user(format!("/api/v1/jobs/{job}/items/{UNKNOWN_ID}/model")))
                        .await,
                ),
            ),
            None => return,
        },
        7 => match &known {
            Some((job, item)) => (
                "GET a model in an unknown format",
                &[400],
                status_of(
                    client
                        .call(user(format!(
                            "/api/v1/jobs/{job}/items/{item}/model?format=fbx"
                        )))
                        .await,
                ),
            ),
            None => return,
        },
        8 => (
            "DELETE /api/v1/upload",
            &[405],
            status_of(
                client
                    .call(|c| {
                        c.request(Method::DELETE, "/api/v1/upload", Some(key))
                            .body(empty())
                    })
                    .await,
            ),
        ),
        _ => (
            "upload without a file",
            &[400],
            status_of(
                client
                    .call(|c| {
                        let body = Bytes::from(format!("--{}--\r\n", shared.form.boundary));
                        upload_req(c, key, &shared.form, body)
                    })
                    .await,
            ),
        ),
    };
    shared.answer(what, expected, &got);
}

fn status_of(got: std::result::Result<Answer, String>) -> std::result::Result<u16, String> {
    got.map(|a| a.status)
}

/// An upload of one file larger than `MAX_FILE_BYTES`, on a socket of its
/// own (the server answers before the body is all sent, then closes).
async fn oversized(shared: &Shared) -> std::result::Result<u16, String> {
    let outcome = tokio::time::timeout(
        REQUEST_TIMEOUT,
        raw_chunked_upload(
            shared.target.addr,
            &shared.target.key,
            shared.oversized_head.clone(),
            shared.plan.oversized_bytes,
        ),
    )
    .await
    .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?;
    outcome
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(f: impl Fn(usize) -> (u64, u64, u64), n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| {
                let (rss, fds, tasks) = f(i);
                Sample {
                    at_s: i as f64 * 10.0,
                    rss,
                    fds,
                    tasks: Some(tasks),
                }
            })
            .collect()
    }

    const MB: u64 = 1024 * 1024;

    #[test]
    fn flat_readings_pass_and_the_warm_up_is_not_judged() {
        // A big start (the warm-up), then flat with noise.
        let s = samples(
            |i| {
                if i < 3 {
                    (10 * MB, 10, 10)
                } else {
                    (
                        40 * MB + (i as u64 % 3) * MB,
                        30 + i as u64 % 2,
                        50 + i as u64 % 5,
                    )
                }
            },
            13,
        );
        let (growth, problems) = verdict(&s, Duration::from_secs(120), &Tolerance::default());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(growth.len(), 3);
        assert!(growth.iter().all(Growth::flat));
    }

    #[test]
    fn steady_growth_fails_each_reading_on_its_own() {
        let t = Tolerance::default();
        // RSS: 2 MiB more per sample: +~36 MiB from the first third to the last.
        let s = samples(|i| (40 * MB + 2 * i as u64 * MB, 30, 50), 31);
        let (_, problems) = verdict(&s, Duration::from_secs(300), &t);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("rss grew"), "{problems:?}");

        let s = samples(|i| (40 * MB, 30 + i as u64, 50), 31);
        let (_, problems) = verdict(&s, Duration::from_secs(300), &t);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("fds grew"), "{problems:?}");

        let s = samples(|i| (40 * MB, 30, 50 + 5 * i as u64), 31);
        let (_, problems) = verdict(&s, Duration::from_secs(300), &t);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("tasks grew"), "{problems:?}");
    }

    #[test]
    fn rss_may_grow_by_the_larger_of_its_fraction_and_its_bytes() {
        let t = Tolerance::default();
        // 400 MiB: 25 % is 100 MiB; 60 MiB more is within it.
        let s = samples(|i| (if i < 16 { 400 * MB } else { 460 * MB }, 30, 50), 31);
        assert!(verdict(&s, Duration::from_secs(300), &t).1.is_empty());
        // 40 MiB: 20 MiB is the larger; 25 MiB more is not within it.
        let s = samples(|i| (if i < 16 { 40 * MB } else { 65 * MB }, 30, 50), 31);
        assert_eq!(verdict(&s, Duration::from_secs(300), &t).1.len(), 1);
    }

    #[test]
    fn too_few_samples_or_no_tasks_fail() {
        let t = Tolerance::default();
        let s = samples(|_| (40 * MB, 30, 50), 2);
        assert_eq!(verdict(&s, Duration::from_secs(20), &t).1.len(), 1);
        let mut s = samples(|_| (40 * MB, 30, 50), 13);
        for x in &mut s {
            x.tasks = None;
        }
        let (_, problems) = verdict(&s, Duration::from_secs(120), &t);
        assert!(problems[0].contains("tasks was not read"), "{problems:?}");
    }

    #[test]
    fn the_tasks_gauge_is_read_from_the_exposition() {
        let text = "# TYPE image2model_runtime_alive_tasks gauge\nimage2model_runtime_alive_tasks 37\nimage2model_jobs 3\n";
        assert_eq!(tasks_of(text), Some(37));
        assert_eq!(tasks_of("image2model_jobs 3\n"), None);
    }

    #[test]
    fn model_bytes_are_checked_by_format() {
        assert!(model_is("glb", b"glTF\x02\0\0\0"));
        assert!(!model_is("glb", b"{\"error\":1}"));
        assert!(model_is(
            "obj",
            b"# cube\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
        ));
        assert!(!model_is("obj", b"v 0 0 0\n"));
        let mut stl = vec![0u8; 84 + 50];
        stl[80] = 1;
        assert!(model_is("stl", &stl));
        stl.push(0);
        assert!(!model_is("stl", &stl));
        assert!(model_is("stl", b"solid x\nfacet\nendsolid x\n"));
    }
}
