//! FAL-bound: the product's main path (image → FAL → model) with FAL's
//! latency, where the server's own work per item is small and the remote
//! wait long. A fake FAL in this process answers after a latency
//! L = `queue_time` + `progress_time`, and either
//!
//! - [`closed_loop`]: C clients each upload a one-image job, follow its
//!   event stream until the job ends, and start over. A warm-up (by default
//!   one job per client) is left out; the measured window is bounded by a
//!   count of jobs and by time. The bound is C ÷ L jobs/s: what the server
//!   reaches when remote waits cost it nothing;
//! - [`in_flight`]: N items uploaded at once (jobs of up to 25 images, from
//!   a few connections), then every job polled once a second until it ends.
//!
//! Both read the server's CPU time (`/proc/PID/stat`) at the ends of the
//! measurement, its peak RSS, the most requests the fake FAL held at once,
//! and this process's own CPU, with the fake FAL's share apart (it runs on a
//! runtime of its own, [`FakeFalHost`]), so a reader can tell whether the
//! harness saturated the machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use image2model_core::generators::fal::PollPolicy;
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, FakeFalProbe, FakeModel};
use image2model_core::testing::images;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::Result;
use crate::api::{job_state, upload};
use crate::client::{Conn, Multipart};
use crate::cpu::{machine_busy, own_cpu, own_threads_cpu, process_cpu};
use crate::rss::PeakRss;
use crate::scenarios::e2e;
use crate::server::Generator;
use crate::stats::Latencies;

/// The name of the fake FAL's runtime threads (at most 15 bytes).
pub const FAKE_FAL_THREADS: &str = "fake-fal";

/// The fake FAL on a runtime of its own (two threads named
/// [`FAKE_FAL_THREADS`]), so that its CPU time can be read apart from the
/// clients'.
#[derive(Debug)]
pub struct FakeFalHost {
    fake: Option<FakeFal>,
    runtime: Option<Runtime>,
}

impl FakeFalHost {
    /// Starts the fake: each request stays `IN_QUEUE` for `queue_time`,
    /// then `IN_PROGRESS` for `progress_time`, then is `COMPLETED`.
    ///
    /// # Errors
    /// When the runtime cannot start or the fake cannot bind.
    pub async fn start(queue_time: Duration, progress_time: Duration) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(FAKE_FAL_THREADS)
            .enable_all()
            .build()?;
        let config = FakeFalConfig {
            queue_time,
            progress_time,
            // The bare cube, as when the figures in BENCHMARKS.md were taken.
            model: FakeModel::Cube,
            ..FakeFalConfig::default()
        };
        // Spawned there, so that the fake's servers run on that runtime.
        let fake = runtime.spawn(FakeFal::try_start(config)).await??;
        Ok(Self {
            fake: Some(fake),
            runtime: Some(runtime),
        })
    }

    /// The fake.
    ///
    /// # Panics
    /// After [`FakeFalHost::stop`] (which takes `self`, so never).
    #[must_use]
    pub fn fake(&self) -> &FakeFal {
        self.fake.as_ref().expect("the fake runs until stopped")
    }

    /// The server's generator pointed at the fake.
    #[must_use]
    pub fn generator(&self) -> Generator {
        let fake = self.fake();
        Generator::Fal {
            queue_base_url: fake.queue_base_url(),
            storage_base_url: fake.storage_base_url(),
            key: fake.key().to_owned(),
        }
    }

    /// The CPU time the fake's runtime threads have used so far.
    #[must_use]
    pub fn cpu() -> Duration {
        own_threads_cpu(FAKE_FAL_THREADS)
    }

    /// Stops the fake and its runtime.
    pub async fn stop(mut self) {
        if let (Some(fake), Some(runtime)) = (self.fake.take(), self.runtime.as_ref()) {
            let _ = runtime.spawn(fake.shutdown()).await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for FakeFalHost {
    fn drop(&mut self) {
        self.fake.take();
        // A runtime may not be dropped (blocking) inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The overhead over L that the FAL generator's status polls alone give a
/// request that takes `latency`: they come at 0, 100, 250, 475 ms… (its
/// default [`PollPolicy`]), so the first that sees the request done comes
/// this long after L, before any work of the server's own.
#[must_use]
pub fn poll_floor(latency: Duration) -> Duration {
    let policy = PollPolicy::default();
    let (mut at, mut interval) = (Duration::ZERO, policy.initial);
    while at < latency {
        at += interval;
        interval = policy.next(interval);
    }
    at - latency
}

/// CPU times at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    at: Instant,
    server: Duration,
    harness: Duration,
    fake: Duration,
    machine: Duration,
}

impl CpuReading {
    fn now(server_pid: u32) -> Self {
        Self {
            at: Instant::now(),
            server: process_cpu(server_pid).unwrap_or_default(),
            harness: own_cpu(),
            fake: FakeFalHost::cpu(),
            machine: machine_busy().unwrap_or_default(),
        }
    }
}

/// Wall time and the CPU time used between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// Wall time between the readings.
    pub wall: Duration,
    /// The server process (every thread).
    pub server: Duration,
    /// This process: clients, fake FAL, samplers.
    pub harness: Duration,
    /// Of which the fake FAL's runtime threads.
    pub fake_fal: Duration,
    /// Every other process on the machine (busy time of all cores less the
    /// two above): other work that competed for the cores.
    pub others: Duration,
}

impl CpuUse {
    fn between(a: CpuReading, b: CpuReading) -> Self {
        Self {
            wall: b.at.saturating_duration_since(a.at),
            server: b.server.saturating_sub(a.server),
            harness: b.harness.saturating_sub(a.harness),
            fake_fal: b.fake.saturating_sub(a.fake),
            others: b
                .machine
                .saturating_sub(a.machine)
                .saturating_sub(b.server.saturating_sub(a.server))
                .saturating_sub(b.harness.saturating_sub(a.harness)),
        }
    }

    /// `cpu` in percent of one core over the wall time.
    #[must_use]
    pub fn percent_of_a_core(&self, cpu: Duration) -> f64 {
        100.0 * cpu.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// The server's CPU over `wait` while nothing is asked of it, in percent
/// of one core: its fixed cost (timers, the worker's idle polling), to set
/// the per-job figures against.
pub async fn idle_cpu(server_pid: u32, wait: Duration) -> f64 {
    let before = CpuReading::now(server_pid);
    tokio::time::sleep(wait).await;
    let cpu = CpuUse::between(before, CpuReading::now(server_pid));
    cpu.percent_of_a_core(cpu.server)
}

/// `cpu` ÷ `n` in milliseconds (NaN without any).
#[must_use]
pub fn ms_per(cpu: Duration, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        cpu.as_secs_f64() * 1000.0 / n as f64
    }
}

/// The most requests the fake FAL holds at once (submitted, result not yet
/// fetched), sampled every 10 ms.
struct FalWatch {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FalWatch {
    fn start(probe: FakeFalProbe) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    // Results first: a request cannot be counted out
                    // without having been counted in.
                    let results = probe.results();
                    let now = probe.submits().saturating_sub(results);
                    peak.fetch_max(now, Ordering::Relaxed);
                }
            }
        });
        Self { peak, task }
    }

    fn finish(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// What the fake FAL counted in a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct FalCounts {
    /// The most requests it held at once.
    pub peak_in_flight: u64,
    /// Submits.
    pub submits: u64,
    /// Status polls.
    pub status_polls: u64,
}

/// How a closed-loop run goes.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoopPlan {
    /// Concurrent clients, each on one keep-alive connection.
    pub clients: usize,
    /// Jobs finished before the window opens (not measured).
    pub warmup_jobs: u64,
    /// The warm-up ends after this even if fewer jobs finished.
    pub warmup_max: Duration,
    /// Jobs measured: the clients start `warmup_jobs + jobs` in all.
    pub jobs: u64,
    /// The window closes after this even if jobs remain; the jobs then
    /// followed are abandoned (neither counted nor failed).
    pub window_max: Duration,
}

/// What a closed-loop run measured.
#[derive(Debug)]
pub struct ClosedLoop {
    /// Jobs that succeeded within the window.
    pub succeeded: u64,
    /// Jobs that failed within the window (or whose requests did).
    pub failed: u64,
    /// Failures over the whole run, warm-up included.
    pub failed_in_all: u64,
    /// Jobs followed when the window closed by time.
    pub abandoned: u64,
    /// Jobs finished in the warm-up.
    pub warmup_finished: u64,
    /// Whether the warm-up ended by time, before its count.
    pub warmup_cut: bool,
    /// Whether the window ended by time, before its count.
    pub window_cut: bool,
    /// Upload → the event showing success, of the window's jobs.
    pub latencies: Latencies,
    /// CPU over the window.
    pub cpu: CpuUse,
    /// The server's peak RSS over the whole run, in bytes.
    pub peak_rss: u64,
    /// The fake's counts over the whole run.
    pub fal: FalCounts,
}

impl ClosedLoop {
    /// Jobs that succeeded per second of the window.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.succeeded as f64 / self.cpu.wall.as_secs_f64()
    }

    /// Jobs that ended within the window.
    #[must_use]
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientLog {
    /// When each succeeded job ended, and its latency.
    done: Vec<(Instant, Duration)>,
    /// When each failure happened.
    failed: Vec<Instant>,
    abandoned: u64,
}

/// A small real PNG (256 × 192, a few kilobytes): what each item uploads.
fn small_png() -> Vec<u8> {
    images::png(256, 192)
}

/// Runs the closed loop against the server at `addr` (process `server_pid`)
/// whose generator is the fake behind `fal`.
///
/// # Errors
/// When the clients' connections cannot be opened.
pub async fn closed_loop(
    addr: SocketAddr,
    server_pid: u32,
    key: &str,
    fal: &FakeFalProbe,
    plan: ClosedLoopPlan,
) -> Result<ClosedLoop> {
    let form = Multipart::one_file("photo.png", "image/png");
    let body = form.body(&small_png());
    let total = plan.warmup_jobs + plan.jobs;
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        conns.push(Conn::open(addr).await?);
    }
    let (submits0, polls0) = (fal.submits(), fal.status_polls());
    let rss = PeakRss::start(server_pid);
    let watch_fal = FalWatch::start(fal.clone());
    let run_start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (started, finished, body, form, key) = (
                started.clone(),
                finished.clone(),
                body.clone(),
                form.clone(),
                key.to_owned(),
            );
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut log = ClientLog::default();
                while started.fetch_add(1, Ordering::Relaxed) < total && !*stop.borrow() {
                    let outcome = tokio::select! {
                        r = e2e::one(&mut conn, &key, &form, &body) => r,
                        _ = stop.wait_for(|s| *s) => {
                            log.abandoned += 1;
                            break;
                        }
                    };
                    let now = Instant::now();
                    finished.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(took) => log.done.push((now, took)),
                        Err(e) => {
                            if log.failed.is_empty() {
                                eprintln!("fal-bound: {e}");
                            }
                            log.failed.push(now);
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                log
            })
        })
        .collect();

    // The warm-up: until its count of jobs ended, or its time ran out.
    let warmup_end = run_start + plan.warmup_max;
    while finished.load(Ordering::Relaxed) < plan.warmup_jobs && Instant::now() < warmup_end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let begin = CpuReading::now(server_pid);
    let warmup_finished = finished.load(Ordering::Relaxed);
    let deadline = begin.at + plan.window_max;

    // The window: until every client is done, or its time ran out.
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    let (joined, end, window_cut) = tokio::select! {
        joined = &mut all => (joined, CpuReading::now(server_pid), false),
        () = tokio::time::sleep_until(deadline.into()) => {
            let end = CpuReading::now(server_pid);
            let _ = stop_tx.send(true);
            (all.await, end, true)
        }
    };
    let peak_rss = rss.finish();
    let peak_in_flight = watch_fal.finish();

    let window = |at: &Instant| *at >= begin.at && *at <= end.at;
    let mut out = ClosedLoop {
        succeeded: 0,
        failed: 0,
        failed_in_all: 0,
        abandoned: 0,
        warmup_finished,
        warmup_cut: warmup_finished < plan.warmup_jobs,
        window_cut,
        latencies: Latencies::with_capacity(usize::try_from(plan.jobs).unwrap_or(0)),
        cpu: CpuUse::between(begin, end),
        peak_rss,
        fal: FalCounts {
            peak_in_flight,
            submits: fal.submits() - submits0,
            status_polls: fal.status_polls() - polls0,
        },
    };
    for log in joined {
        let log = log?;
        for (at, took) in &log.done {
            if window(at) {
                out.succeeded += 1;
                out.latencies.record(*took);
            }
        }
        out.failed += log.failed.iter().filter(|at| window(at)).count() as u64;
        out.failed_in_all += log.failed.len() as u64;
        out.abandoned += log.abandoned;
    }
    Ok(out)
}

/// How an in-flight run goes.
#[derive(Debug, Clone, Copy)]
pub struct InFlightPlan {
    /// Items put in flight.
    pub items: u64,
    /// Images per job (the last job takes the rest).
    pub files_per_job: usize,
    /// Connections that upload, then poll.
    pub connections: usize,
    /// How often each job is polled.
    pub poll: Duration,
    /// Jobs not ended after this (from the first upload) are unfinished.
    pub max_time: Duration,
}

/// What an in-flight run measured.
#[derive(Debug)]
pub struct InFlight {
    /// Jobs uploaded.
    pub jobs: u64,
    /// Items meant to be in flight.
    pub items: u64,
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that ended otherwise.
    pub failed: u64,
    /// Items of jobs that had not ended at the time limit.
    pub unfinished: u64,
    /// Items whose upload failed.
    pub not_uploaded: u64,
    /// From the first upload to the last one answered.
    pub uploads_took: Duration,
    /// Polls sent.
    pub polls: u64,
    /// Polls that failed (the job was polled again).
    pub poll_errors: u64,
    /// CPU from the first upload to the poll that saw the last job end
    /// (whose wall time is late by up to one poll interval).
    pub cpu: CpuUse,
    /// The server's peak RSS over the run, in bytes.
    pub peak_rss: u64,
    /// The fake's counts over the run.
    pub fal: FalCounts,
}

impl InFlight {
    /// Whether every item was uploaded, ended, and succeeded.
    #[must_use]
    pub fn all_succeeded(&self) -> bool {
        self.succeeded == self.items
    }
}

/// Uploads `plan.items` items at once and follows their jobs to the end.
///
/// # Errors
/// When a connection cannot be opened.
pub async fn in_flight(
    addr: SocketAddr,
    server_pid: u32,
    key: &str,
    fal: &FakeFalProbe,
    plan: InFlightPlan,
) -> Result<InFlight> {
    let per_job = plan.files_per_job.max(1);
    let items = usize::try_from(plan.items)?;
    let sizes: Arc<Vec<usize>> = Arc::new(
        (0..items)
            .step_by(per_job)
            .map(|first| per_job.min(items - first))
            .collect(),
    );
    let form = Multipart::one_file("photo.png", "image/png");
    let file = small_png();
    let full = form.body_of_copies(&file, per_job);
    let rest = form.body_of_copies(&file, items % per_job);
    let connections = plan.connections.clamp(1, sizes.len().max(1));

    let (submits0, polls0) = (fal.submits(), fal.status_polls());
    let rss = PeakRss::start(server_pid);
    let watch_fal = FalWatch::start(fal.clone());
    let begin = CpuReading::now(server_pid);
    let deadline = begin.at + plan.max_time;

    // Every upload at once, from a few connections.
    let next = Arc::new(AtomicUsize::new(0));
    let uploads: Vec<_> = (0..connections)
        .map(|_| {
            let (next, sizes, form, key) =
                (next.clone(), sizes.clone(), form.clone(), key.to_owned());
            let (full, rest): (Bytes, Bytes) = (full.clone(), rest.clone());
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await?;
                let mut jobs = Vec::new();
                let mut lost = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&n) = sizes.get(i) else { break };
                    let body = if n == per_job {
                        full.clone()
                    } else {
                        rest.clone()
                    };
                    match upload(&mut conn, &key, &form, body).await {
                        Ok(id) => jobs.push((id, n as u64)),
                        Err(e) => {
                            if lost == 0 {
                                eprintln!("fal-bound: {e}");
                            }
                            lost += n as u64;
                            conn = Conn::open(addr).await?;
                        }
                    }
                }
                Ok::<_, crate::Error>((jobs, lost))
            })
        })
        .collect();
    let mut pending: Vec<(String, u64)> = Vec::with_capacity(sizes.len());
    let mut not_uploaded = 0;
    for u in futures::future::join_all(uploads).await {
        let (jobs, lost) = u??;
        pending.extend(jobs);
        not_uploaded += lost;
    }
    let uploads_took = begin.at.elapsed();
    let jobs = pending.len() as u64;

    // Every job polled once per interval, the pending ones spread over the
    // connections, until none is pending or the time is up.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    let (mut succeeded, mut failed, mut polls, mut poll_errors) = (0u64, 0u64, 0u64, 0u64);
    let mut round = tokio::time::Instant::now();
    while !pending.is_empty() && Instant::now() < deadline {
        tokio::time::sleep_until(round).await;
        round += plan.poll;
        let share = pending.len().div_ceil(conns.len());
        let answers = futures::future::join_all(conns.iter_mut().zip(pending.chunks(share)).map(
            |(conn, jobs)| async move {
                let mut answers = Vec::with_capacity(jobs.len());
                for (id, _) in jobs {
                    answers.push(job_state(conn, key, id).await);
                }
                answers
            },
        ))
        .await;
        let answers: Vec<_> = answers.into_iter().flatten().collect();
        polls += answers.len() as u64;
        let mut broken = false;
        let mut still = Vec::with_capacity(pending.len());
        for ((id, n), answer) in pending.drain(..).zip(answers) {
            match answer {
                Ok(state) if state.is_terminal() => {
                    let ok = state.items.iter().filter(|s| *s == "succeeded").count() as u64;
                    succeeded += ok;
                    failed += n - ok.min(n);
                }
                Ok(_) => still.push((id, n)),
                Err(e) => {
                    if poll_errors == 0 {
                        eprintln!("fal-bound: {e}");
                    }
                    poll_errors += 1;
                    broken = true;
                    still.push((id, n));
                }
            }
        }
        pending = still;
        if broken {
            // A failed request may leave its connection unusable.
            for conn in &mut conns {
                *conn = Conn::open(addr).await?;
            }
        }
    }
    let end = CpuReading::now(server_pid);
    let peak_rss = rss.finish();
    let peak_in_flight = watch_fal.finish();
    Ok(InFlight {
        jobs,
        items: plan.items,
        succeeded,
        failed,
        unfinished: pending.iter().map(|(_, n)| n).sum(),
        not_uploaded,
        uploads_took,
        polls,
        poll_errors,
        cpu: CpuUse::between(begin, end),
        peak_rss,
        fal: FalCounts {
            peak_in_flight,
            submits: fal.submits() - submits0,
            status_polls: fal.status_polls() - polls0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_floor_follows_the_default_schedule() {
        // Polls at 0, 100, 250, 475, 812.5, 1318.75 ms.
        assert_eq!(poll_floor(Duration::ZERO), Duration::ZERO);
        assert_eq!(poll_floor(Duration::from_millis(100)), Duration::ZERO);
        assert_eq!(
            poll_floor(Duration::from_secs(1)),
            Duration::from_micros(318_750)
        );
    }

    #[test]
    fn cpu_use_is_per_core_and_per_item() {
        let cpu = CpuUse {
            wall: Duration::from_secs(2),
            server: Duration::from_secs(1),
            ..CpuUse::default()
        };
        assert!((cpu.percent_of_a_core(cpu.server) - 50.0).abs() < 1e-9);
        assert!((ms_per(cpu.server, 500) - 2.0).abs() < 1e-9);
        assert!(ms_per(cpu.server, 0).is_nan());
    }
}
