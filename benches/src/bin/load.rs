//! The load harness: starts the real `image2model` server (a child process,
//! so its memory is its own) with a fake FAL at zero latency, measures it on
//! loopback, and prints every figure beside its reference measured in the
//! same run. See `docs/BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release -p image2model-benches --bin load -- --full
//! cargo run -p image2model-benches --bin load -- --quick   # CI: does it still work?
//! ```
//!
//! `load fal-bound` measures the FAL-bound path instead (a fake FAL with
//! latency L; see `scenarios::fal_bound`):
//!
//! ```text
//! load fal-bound --latency-ms 1000 --clients 200 --jobs 2000     # jobs/s against C ÷ L
//! load fal-bound --latency-ms 0 --clients 16 --jobs 2000         # server CPU per job
//! load fal-bound --in-flight 2000 --latency-ms 30000 --server-env FAL_MAX_IN_FLIGHT=2048
//! load fal-bound --quick                                         # CI: both, a few seconds
//! ```
//!
//! `load soak --minutes N` runs mixed traffic against a fake FAL that fails
//! on purpose and fails if RSS, descriptors or tasks grow or an item is lost
//! (see `scenarios::soak`; CI runs 2 minutes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use image2model_benches::client::Multipart;
use image2model_benches::process::{Served, free_loopback_addr};
use image2model_benches::report::{Figure, Target, markdown, num};
use image2model_benches::rss::MIB;
use image2model_benches::scenarios::fal_bound::{
    ClosedLoop, ClosedLoopPlan, FakeFalHost, InFlight, InFlightPlan, ms_per, poll_floor,
};
use image2model_benches::scenarios::soak::{self, SoakPlan, SoakTarget, Tolerance};
use image2model_benches::scenarios::{e2e, fal_bound as fb, ingest, memory, relief, storm};
use image2model_benches::server::{self, Generator, Role, ServerSetup, USER_KEY};
use image2model_benches::stats::ms;
use image2model_benches::{Result, api, client, images, reference};
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, FakeModel};

/// Measures the image2model server against references from the same run.
#[derive(Debug, Parser)]
#[command(name = "load", about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The full run whose figures go into docs/BENCHMARKS.md (the default).
    #[arg(long, conflicts_with = "quick")]
    full: bool,
    /// A few seconds of each measurement: checks that the harness and the
    /// server still work, not how fast they are (CI).
    #[arg(long, global = true)]
    quick: bool,
    /// The `image2model` binary. By default it is built with cargo (same
    /// profile as this harness) when run through `cargo run`, else looked
    /// for beside this binary.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// The generator the server uses.
    #[arg(long, value_enum, default_value_t = GeneratorArg::Fal)]
    generator: GeneratorArg,
    /// `DATABASE_URL` for the server (default: a SQLite file in the data
    /// directory).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// `STORAGE_URL` for the server (default: a directory in the data
    /// directory).
    #[arg(long, global = true)]
    storage_url: Option<String>,
    /// Where the servers keep their data and where `dd` writes (a temporary
    /// directory is made inside; default: the system's temp directory).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// `RUST_LOG` for the server (default: the server's own default).
    #[arg(long, global = true)]
    server_log: Option<String>,
    /// An extra `NAME=VALUE` for the server's environment (repeatable), for
    /// experiments such as `--server-env MALLOC_ARENA_MAX=2`.
    #[arg(long, global = true, value_parser = parse_env_pair)]
    server_env: Vec<(String, String)>,
    /// Also write the figures as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Keep the data directory (server logs, database) after the run.
    #[arg(long, global = true)]
    keep: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the reference hello server on ADDR (used by the harness itself).
    #[command(hide = true)]
    HelloServer {
        /// Listen address.
        #[arg(long)]
        bind: SocketAddr,
    },
    /// Sends GET PATH from many connections for a while and prints req/s
    /// and latencies: drive a server you are profiling (`perf record -p`).
    Storm {
        /// The server.
        #[arg(long)]
        addr: SocketAddr,
        /// The path, e.g. `/api/v1/jobs/ID`.
        #[arg(long, default_value = "/")]
        path: String,
        /// A bearer key to send.
        #[arg(long)]
        key: Option<String>,
        /// Connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds to measure (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Uploads a PNG of SIZE bytes COUNT times from many connections and
    /// prints MB/s: drive a server you are profiling.
    Ingest {
        /// The server.
        #[arg(long)]
        addr: SocketAddr,
        /// The bearer key.
        #[arg(long)]
        key: String,
        /// Bytes per image.
        #[arg(long, default_value_t = 1_000_000)]
        size: usize,
        /// Uploads.
        #[arg(long, default_value_t = 300)]
        count: u64,
        /// Connections.
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// The product's main path with FAL's latency: the real server, a fake
    /// FAL in this process answering after L, and either C clients in a
    /// closed loop (jobs/s against the bound C ÷ L, overhead over L, CPU
    /// per job) or `--in-flight N` items at once (all finish? RSS, CPU per
    /// item). The shared options (`--server-env`, `--database-url`,
    /// `--quick`, `--json`…) apply.
    FalBound(FalBoundArgs),
    /// Mixed traffic for N minutes (uploads, status reads, event streams,
    /// downloads in each format, listings, bad requests) from a few clients
    /// at a moderate pace, against the real server and a fake FAL that fails
    /// on purpose (submits 503/429, status 503, broken and refused streams,
    /// failed results). Prints RSS, open descriptors, alive tasks and
    /// answers by outcome per minute; fails if any item is lost, any answer
    /// is unexpected, or RSS, descriptors or tasks grow (the last third's
    /// median against the first third's, after a 20 % warm-up).
    Soak(SoakArgs),
}

/// `load soak`'s options.
#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// How long the traffic lasts, in minutes (fractions allowed).
    #[arg(long)]
    minutes: f64,
    /// Seconds between readings of RSS, descriptors and tasks [default:
    /// a twenty-fourth of the run, between 5 and 60].
    #[arg(long)]
    sample_secs: Option<f64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Each client's pause after every action, in ms.
    #[arg(long, default_value_t = 300)]
    pause_ms: u64,
    /// How long a job may take to end after its acceptance before its
    /// items count as lost, in seconds.
    #[arg(long, default_value_t = 120)]
    item_bound_secs: u64,
    /// How long each step of the fake FAL's failure cycle lasts, in seconds.
    #[arg(long, default_value_t = 5)]
    chaos_secs: u64,
    /// Time queued at the fake FAL, in ms.
    #[arg(long, default_value_t = 300)]
    queue_ms: u64,
    /// Time running at the fake FAL, in ms.
    #[arg(long, default_value_t = 1200)]
    run_ms: u64,
}

/// `load fal-bound`'s options; the defaults are for the issue's targets
/// (`--quick` makes them small).
#[derive(Debug, clap::Args)]
struct FalBoundArgs {
    /// FAL's latency L in ms, 20 % of it queued and 80 % running
    /// [default: 1000; --quick: 200].
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Time queued at the fake FAL, in place of 20 % of L.
    #[arg(long)]
    queue_ms: Option<u64>,
    /// Time running at the fake FAL, in place of the rest of L.
    #[arg(long)]
    run_ms: Option<u64>,
    /// Closed loop: concurrent clients C [default: 200; --quick: 8].
    #[arg(long)]
    clients: Option<usize>,
    /// Closed loop: jobs measured, after the warm-up [default: 2000;
    /// --quick: 40].
    #[arg(long)]
    jobs: Option<u64>,
    /// Closed loop: the most seconds measured (jobs still followed then are
    /// abandoned) [default: 120; --quick: 10]. In flight: the time limit
    /// [default: 4 L + 60 s; --quick: 30].
    #[arg(long)]
    seconds: Option<u64>,
    /// Closed loop: jobs that end before the measurement starts
    /// [default: one per client]; the warm-up lasts 2 L + 5 s at most.
    #[arg(long)]
    warmup_jobs: Option<u64>,
    /// Instead of the closed loop, put N items in flight at once and follow
    /// them to the end. (`--quick` without it runs both, 25 items here.)
    #[arg(long)]
    in_flight: Option<u64>,
    /// In flight: images per job (the server's `MAX_FILES` is 25 by
    /// default).
    #[arg(long, default_value_t = 25)]
    files_per_job: usize,
    /// In flight: connections that upload, then poll.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// In flight: how often each job is polled, in ms.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Give the server its own address as `PUBLIC_BASE_URL`, so that FAL
    /// calls back its webhook route instead of being followed by a status
    /// stream per request.
    #[arg(long)]
    webhooks: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GeneratorArg {
    /// The FAL generator against a fake FAL in this process, at zero latency.
    Fal,
    /// The offline relief generator (no fake FAL).
    Relief,
}

/// Counts and durations of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    connections: usize,
    warmup: Duration,
    window: Duration,
    storm_rounds: u32,
    ingest_uploads: u64,
    ingest_rounds: u32,
    ingest_concurrency: usize,
    creation_probe: u32,
    dd_mib: u64,
    e2e_serial: u64,
    e2e_concurrent: u64,
    e2e_clients: usize,
    e2e_max: Duration,
    sse_subscribers: usize,
    refused_bytes: u64,
    large_uploads: usize,
    relief_side: u32,
    relief_runs: u32,
}

impl Plan {
    fn full() -> Self {
        Self {
            connections: 64,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(12),
            storm_rounds: 6,
            ingest_uploads: 768,
            ingest_rounds: 3,
            ingest_concurrency: 8,
            creation_probe: 256,
            dd_mib: 256,
            e2e_serial: 300,
            e2e_concurrent: 1000,
            e2e_clients: 16,
            e2e_max: Duration::from_secs(90),
            sse_subscribers: 1000,
            refused_bytes: 500 * 1000 * 1000,
            large_uploads: 25,
            relief_side: 4096,
            relief_runs: 3,
        }
    }

    fn quick() -> Self {
        Self {
            connections: 64,
            warmup: Duration::from_millis(300),
            window: Duration::from_secs(1),
            storm_rounds: 2,
            ingest_uploads: 20,
            ingest_rounds: 2,
            ingest_concurrency: 4,
            creation_probe: 32,
            dd_mib: 32,
            e2e_serial: 10,
            e2e_concurrent: 20,
            e2e_clients: 4,
            e2e_max: Duration::from_secs(60),
            sse_subscribers: 100,
            refused_bytes: 40 * 1000 * 1000,
            large_uploads: 5,
            relief_side: 1024,
            relief_runs: 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::HelloServer { bind }) => {
                let listener = tokio::net::TcpListener::bind(bind).await?;
                reference::hello_server(listener).await
            }
            Some(Command::Storm {
                addr,
                ref path,
                ref key,
                connections,
                seconds,
            }) => {
                let mut s = storm::storm(
                    addr,
                    path,
                    key.as_deref(),
                    connections,
                    Duration::from_secs(1),
                    Duration::from_secs(seconds),
                )
                .await?;
                println!(
                    "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
                    s.per_second(),
                    pct(&mut s.latencies, 50.0),
                    pct(&mut s.latencies, 99.0),
                    s.errors
                );
                Ok(())
            }
            Some(Command::Ingest {
                addr,
                ref key,
                size,
                count,
                connections,
            }) => {
                let file = images::png_of_size(size);
                let form = Multipart::one_file("photo.png", "image/png");
                let i = ingest::ingest(
                    addr,
                    key,
                    &form,
                    &file,
                    connections,
                    count,
                    Duration::from_secs(600),
                )
                .await?;
                println!(
                    "{:.0} MB/s, {} accepted, {} errors in {:.2} s",
                    i.mb_per_s(),
                    i.accepted,
                    i.errors,
                    i.elapsed.as_secs_f64()
                );
                Ok(())
            }
            Some(Command::FalBound(ref args)) => fal_bound(&cli, args).await,
            Some(Command::Soak(ref args)) => soak_run(&cli, args).await,
            None => run(&cli).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints progress to stderr (the table goes to stdout).
macro_rules! step {
    ($($arg:tt)*) => { eprintln!("load: {}", format!($($arg)*)) };
}

async fn run(cli: &Cli) -> Result<()> {
    let quick = cli.quick;
    let plan = if quick { Plan::quick() } else { Plan::full() };
    raise_open_files_limit(plan.sse_subscribers as u64 * 2 + 512)?;
    let bin = server_binary(cli)?;
    let base = cli.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let data = tempfile::Builder::new()
        .prefix("i2m-load-")
        .tempdir_in(&base)?;
    let dir = data.path().to_path_buf();
    step!(
        "{} run; server {}; data in {}",
        if quick { "quick" } else { "full" },
        bin.display(),
        dir.display()
    );

    let mut figures = Vec::new();
    let mut problems = Vec::new();

    // --- References: the hello server -------------------------------------
    step!("reference: hello server");
    let hello = start_hello().await?;
    let hello_idle = memory::idle(hello.pid(), Duration::from_secs(1)).await?;
    let mut hello_one =
        storm::storm(hello.addr, "/", None, 1, plan.warmup / 2, plan.window / 2).await?;
    let hello_rtt = pct(&mut hello_one.latencies, 50.0);
    // The hello server stays up: its storm alternates with the job-status
    // storm below.

    // --- The fake FAL, at zero latency ------------------------------------
    let fake = match cli.generator {
        GeneratorArg::Fal => Some(
            FakeFal::start(FakeFalConfig {
                queue_time: Duration::ZERO,
                progress_time: Duration::ZERO,
                // The bare cube, as when the figures in BENCHMARKS.md were taken.
                model: FakeModel::Cube,
                ..FakeFalConfig::default()
            })
            .await,
        ),
        GeneratorArg::Relief => None,
    };
    let generator = match &fake {
        Some(f) => Generator::Fal {
            queue_base_url: f.queue_base_url(),
            storage_base_url: f.storage_base_url(),
            key: f.key().to_owned(),
        },
        None => Generator::Relief,
    };
    let setup = |role: Role, name: &str| ServerSetup {
        bin: bin.clone(),
        dir: dir.join(name),
        role,
        generator: generator.clone(),
        database_url: cli.database_url.clone(),
        storage_url: cli.storage_url.clone(),
        log_filter: cli.server_log.clone(),
        max_file_bytes: None,
        extra_env: cli.server_env.clone(),
        public_base_url: false,
    };

    // --- Server A: the default deployment (API and worker) ----------------
    step!("server A (--role all): idle, job status, end to end");
    let a = server::start(&setup(Role::All, "all")).await?;
    let idle_all = memory::idle(a.pid(), Duration::from_secs(1)).await?;
    let form = Multipart::one_file("photo.jpg", "image/jpeg");
    let small = images::photo_jpeg(256);
    let job = {
        let mut conn = client::Conn::open(a.addr).await?;
        let job = api::upload(&mut conn, USER_KEY, &form, form.body(&small)).await?;
        let events = api::subscribe(&mut conn, USER_KEY, &job).await?;
        let status = api::wait_terminal(events).await?;
        if status != "succeeded" {
            return Err(format!("the first job ended {status}\n{}", a.log_tail()).into());
        }
        job
    };
    let status_path = format!("/api/v1/jobs/{job}");
    step!(
        "  job status and the hello server, {} alternating rounds",
        plan.storm_rounds
    );
    let (mut status, mut hello_storm) = storm::alternating(
        (a.addr, &status_path, Some(USER_KEY)),
        (hello.addr, "/", None),
        plan.connections,
        plan.warmup,
        plan.window,
        plan.storm_rounds,
    )
    .await?;
    hello.stop().await;
    check(&mut problems, "job status errors", status.errors == 0);
    check(&mut problems, "hello storm errors", hello_storm.errors == 0);
    let hello_rps = hello_storm.per_second();
    let hello_p99 = pct(&mut hello_storm.latencies, 99.0);
    let mut serial = e2e::e2e(
        a.addr,
        USER_KEY,
        &form,
        &small,
        1,
        plan.e2e_serial,
        plan.e2e_max,
    )
    .await?;
    check(
        &mut problems,
        "end-to-end (1 client) failures",
        serial.failures == 0,
    );
    let mut loaded = e2e::e2e(
        a.addr,
        USER_KEY,
        &form,
        &small,
        plan.e2e_clients,
        plan.e2e_concurrent,
        plan.e2e_max,
    )
    .await?;
    check(
        &mut problems,
        "end-to-end (loaded) failures",
        loaded.failures == 0,
    );
    let after_load_all = memory::idle(a.pid(), Duration::from_secs(1)).await?;
    let a_log = a.log_tail();
    a.stop().await;

    // --- Server B: API only, so nothing competes with ingest --------------
    step!("server B (--role api): memory under SSE and large uploads, ingest");
    let b = server::start(&setup(Role::Api, "api")).await?;
    let idle_api = memory::idle(b.pid(), Duration::from_secs(1)).await?;
    let mut queued = Vec::new();
    {
        let mut conn = client::Conn::open(b.addr).await?;
        for _ in 0..10 {
            queued.push(api::upload(&mut conn, USER_KEY, &form, form.body(&small)).await?);
        }
    }
    step!("  {} SSE subscribers", plan.sse_subscribers);
    let sse = memory::sse_subscribers(
        b.addr,
        b.pid(),
        USER_KEY,
        &queued,
        plan.sse_subscribers,
        Duration::from_secs(2),
    )
    .await?;
    check(
        &mut problems,
        "every SSE subscriber stayed open",
        sse.open == plan.sse_subscribers as u64,
    );
    step!("  {} MB upload, refused", plan.refused_bytes / 1_000_000);
    let refused = memory::refused_upload(
        b.addr,
        b.pid(),
        USER_KEY,
        Bytes::from(images::png_head_of_size(plan.refused_bytes)),
        plan.refused_bytes,
    )
    .await?;
    check(
        &mut problems,
        "the oversized upload is refused with 413",
        refused.outcomes.iter().all(|o| o.starts_with("413")),
    );
    step!("  {} × 10 MB uploads at once", plan.large_uploads);
    let large = images::png_of_size(10_000_000);
    let streaming =
        memory::concurrent_uploads(b.addr, b.pid(), USER_KEY, &large, plan.large_uploads).await?;
    check(
        &mut problems,
        "every 10 MB upload is accepted",
        streaming.outcomes.iter().all(|o| o.starts_with("202")),
    );
    step!("  ingest of 1 MB uploads, dd, and the same files written alone");
    let one_mb = images::png_of_size(1_000_000);
    let png_form = Multipart::one_file("photo.png", "image/png");
    // Warm-up, not counted: the blocking pool's threads and the allocator's
    // buffers are made by the first uploads.
    let warmup = ingest::ingest(
        b.addr,
        USER_KEY,
        &png_form,
        &one_mb,
        plan.ingest_concurrency,
        plan.ingest_concurrency as u64 * 4,
        Duration::from_secs(60),
    )
    .await?;
    check(&mut problems, "ingest warm-up errors", warmup.errors == 0);
    // `dd` and the uploads take turns, like the storms above: the disk's
    // and the guest memory's speed drift from one second to the next.
    let rounds = plan.ingest_rounds.max(1);
    let creation = reference::file_creation(&dir, plan.creation_probe)?;
    let mut dd = reference::DdResult::default();
    let mut ingest = ingest::Ingest::default();
    for _ in 0..rounds {
        dd.merge(reference::dd_write_once(&dir, plan.dd_mib)?);
        ingest.merge(
            ingest::ingest(
                b.addr,
                USER_KEY,
                &png_form,
                &one_mb,
                plan.ingest_concurrency,
                plan.ingest_uploads / u64::from(rounds),
                Duration::from_secs(120),
            )
            .await?,
        );
    }
    check(&mut problems, "ingest errors", ingest.errors == 0);
    let durable = reference::durable_files_write(
        &dir,
        one_mb.len(),
        plan.ingest_uploads,
        plan.ingest_concurrency,
    )?;
    b.stop().await;
    if let Some(f) = fake {
        f.shutdown().await;
    }

    // --- Relief, one core ---------------------------------------------------
    step!("relief at {} × {}", plan.relief_side, plan.relief_side);
    let (side, runs) = (plan.relief_side, plan.relief_runs);
    let relief = tokio::task::spawn_blocking(move || relief::relief(side, runs)).await??;

    // --- The table ----------------------------------------------------------
    let hello_ref = "bare hyper hello server";
    let mib = |b: u64| b as f64 / MIB;
    figures.push(Figure {
        name: format!("GET /api/v1/jobs/{{id}}, {} connections", plan.connections),
        value: status.per_second(),
        unit: "req/s",
        reference: hello_ref.into(),
        reference_value: Some(hello_rps),
        reference_unit: "req/s",
        target: Target::RatioAtLeast(0.5),
    });
    figures.push(Figure {
        name: format!(
            "GET /api/v1/jobs/{{id}} p99, {} connections",
            plan.connections
        ),
        value: pct(&mut status.latencies, 99.0),
        unit: "ms",
        reference: format!("{hello_ref} p99"),
        reference_value: Some(hello_p99),
        reference_unit: "ms",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!(
            "upload ingest, 1 MB images, {} connections",
            plan.ingest_concurrency
        ),
        value: ingest.mb_per_s(),
        unit: "MB/s",
        reference: "`dd bs=1M conv=fsync` to the same disk".into(),
        reference_value: Some(dd.mb_per_s()),
        reference_unit: "MB/s",
        target: Target::RatioAtLeast(0.5),
    });
    figures.push(Figure {
        name: format!(
            "upload ingest, 1 MB images, {} connections",
            plan.ingest_concurrency
        ),
        value: ingest.mb_per_s(),
        unit: "MB/s",
        reference: format!(
            "the same files written alone (directory, file, `fsync`, rename, directory `fsync`; {} threads)",
            plan.ingest_concurrency
        ),
        reference_value: Some(durable.mb_per_s()),
        reference_unit: "MB/s",
        target: Target::None,
    });
    figures.push(Figure {
        name: "a new directory and a file in it, before the ingest".into(),
        value: creation.as_secs_f64() * 1e6,
        unit: "µs",
        reference: format!(
            "mean of {}: the file system's state (see docs/BENCHMARKS.md)",
            plan.creation_probe
        ),
        reference_value: None,
        reference_unit: "",
        target: Target::None,
    });
    figures.push(Figure {
        name: "upload → succeeded p50, 1 client".into(),
        value: pct(&mut serial.latencies, 50.0),
        unit: "ms",
        reference: "hello round trip p50, 1 connection".into(),
        reference_value: Some(hello_rtt),
        reference_unit: "ms",
        target: Target::Below(20.0),
    });
    figures.push(Figure {
        name: "upload → succeeded p99, 1 client".into(),
        value: pct(&mut serial.latencies, 99.0),
        unit: "ms",
        reference: "hello round trip p50, 1 connection".into(),
        reference_value: Some(hello_rtt),
        reference_unit: "ms",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!("end to end, {} clients", plan.e2e_clients),
        value: loaded.per_second(),
        unit: "items/s",
        reference: format!(
            "p50 {} ms, p99 {} ms under this load",
            fmt_ms(pct(&mut loaded.latencies, 50.0)),
            fmt_ms(pct(&mut loaded.latencies, 99.0))
        ),
        reference_value: None,
        reference_unit: "",
        target: Target::None,
    });
    figures.push(Figure {
        name: "RSS idle (API and worker)".into(),
        value: mib(idle_all),
        unit: "MiB",
        reference: "hello server idle".into(),
        reference_value: Some(mib(hello_idle)),
        reference_unit: "MiB",
        target: Target::Below(40.0),
    });
    figures.push(Figure {
        name: "RSS idle after the load above".into(),
        value: mib(after_load_all),
        unit: "MiB",
        reference: "hello server idle".into(),
        reference_value: Some(mib(hello_idle)),
        reference_unit: "MiB",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!("RSS growth with {} SSE subscribers", plan.sse_subscribers),
        value: mib(sse.with.saturating_sub(sse.before)),
        unit: "MiB",
        reference: "RSS before them (API-only server)".into(),
        reference_value: Some(mib(sse.before)),
        reference_unit: "MiB",
        target: Target::Below(60.0),
    });
    figures.push(Figure {
        name: format!(
            "RSS growth while a {} MB upload is refused",
            plan.refused_bytes / 1_000_000
        ),
        value: mib(refused.growth()),
        unit: "MiB",
        reference: format!(
            "RSS before (idle API-only server: {} MiB at start)",
            fmt_mib(mib(idle_api))
        ),
        reference_value: Some(mib(refused.before)),
        reference_unit: "MiB",
        target: Target::Below(10.0),
    });
    figures.push(Figure {
        name: format!(
            "RSS growth while {} × 10 MB uploads stream in",
            plan.large_uploads
        ),
        value: mib(streaming.growth()),
        unit: "MiB",
        reference: "RSS before".into(),
        reference_value: Some(mib(streaming.before)),
        reference_unit: "MiB",
        // Flat: a tenth of what streams in at once, i.e. nothing held whole.
        target: Target::Below(plan.large_uploads as f64 * 10e6 / MIB / 10.0),
    });
    figures.push(Figure {
        name: format!("relief {:.1} MP JPEG, one core", relief.megapixels),
        value: relief.render.as_secs_f64(),
        unit: "s",
        reference: "decoding the same JPEG (`image` crate)".into(),
        reference_value: Some(relief.decode.as_secs_f64()),
        reference_unit: "s",
        target: if plan.relief_side >= 4096 {
            Target::Below(1.0)
        } else {
            Target::None
        },
    });

    for f in &figures {
        let sane = f.value.is_finite()
            && f.value >= 0.0
            && f.reference_value.is_none_or(|r| r.is_finite() && r > 0.0);
        check(&mut problems, &format!("{} is a sane number", f.name), sane);
    }

    println!("{}", markdown(&figures));
    println!(
        "Outcomes: oversized upload {}; 10 MB uploads {}; end to end {} + {} items ({} + {} failed).",
        refused.outcomes.join(", "),
        summarize(&streaming.outcomes),
        serial.succeeded,
        loaded.succeeded,
        serial.failures,
        loaded.failures
    );
    let machine = machine(&bin, &dir);
    println!("{machine}");
    if let Some(path) = &cli.json {
        let json = serde_json::json!({
            "mode": if quick { "quick" } else { "full" },
            "machine": machine,
            "figures": figures,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    if cli.keep {
        let kept = data.keep();
        step!("data kept in {}", kept.display());
    }
    if problems.is_empty() {
        step!("every measurement produced a sane number");
        Ok(())
    } else {
        eprintln!("{a_log}");
        Err(format!("problems:\n  - {}", problems.join("\n  - ")).into())
    }
}

/// The server's `MAX_FILE_BYTES` in a soak (its oversized upload is twice
/// that).
const SOAK_MAX_FILE_BYTES: u64 = 1_000_000;

/// `load soak`: see [`SoakArgs`] and `scenarios::soak`.
async fn soak_run(cli: &Cli, args: &SoakArgs) -> Result<()> {
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        return Err("--minutes must be a positive number".into());
    }
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let sample_every = Duration::from_secs_f64(
        args.sample_secs
            .unwrap_or_else(|| (duration.as_secs_f64() / 24.0).clamp(5.0, 60.0))
            .max(1.0),
    );
    raise_open_files_limit(4096)?;
    let bin = server_binary(cli)?;
    let base = cli.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let data = tempfile::Builder::new()
        .prefix("i2m-soak-")
        .tempdir_in(&base)?;
    let dir = data.path().to_path_buf();
    let (queue, running) = (
        Duration::from_millis(args.queue_ms),
        Duration::from_millis(args.run_ms),
    );
    step!(
        "soak: {} min, {} clients pausing {} ms, readings every {} s; fake FAL {} + {} ms with failures every {} s; server {}; data in {}",
        num(args.minutes),
        args.clients,
        args.pause_ms,
        num(sample_every.as_secs_f64()),
        queue.as_millis(),
        running.as_millis(),
        args.chaos_secs,
        bin.display(),
        dir.display()
    );
    let host = FakeFalHost::start(queue, running).await?;
    let metrics = free_loopback_addr()?;
    let mut extra_env = cli.server_env.clone();
    extra_env.push(("METRICS_ADDR".into(), metrics.to_string()));
    let server = server::start(&ServerSetup {
        bin: bin.clone(),
        dir: dir.join("server"),
        role: Role::All,
        generator: host.generator(),
        database_url: cli.database_url.clone(),
        storage_url: cli.storage_url.clone(),
        log_filter: cli.server_log.clone(),
        max_file_bytes: Some(SOAK_MAX_FILE_BYTES),
        extra_env,
        public_base_url: false,
    })
    .await?;
    let plan = SoakPlan {
        duration,
        sample_every,
        clients: args.clients.max(1),
        pause: Duration::from_millis(args.pause_ms),
        item_bound: Duration::from_secs(args.item_bound_secs),
        chaos_every: Duration::from_secs(args.chaos_secs.max(1)),
        oversized_bytes: 2 * SOAK_MAX_FILE_BYTES,
        images_per_job: 3,
        tolerance: Tolerance::default(),
    };
    let target = SoakTarget {
        addr: server.addr,
        pid: server.pid(),
        metrics,
        key: USER_KEY.to_owned(),
    };
    let report = soak::soak(target, host.fake(), plan).await;
    let log_tail = server.log_tail();
    server.stop().await;
    host.stop().await;
    let report = report?;

    println!("{}", report.table());
    let t = &report.total;
    println!(
        "Totals: {} requests ({} 2xx, {} expected 4xx, {} unexpected 4xx, {} 5xx, {} without an answer); {} jobs, {} items accepted: {} succeeded, {} failed, {} lost; {} models downloaded and checked; {} event streams read.",
        t.requests(),
        t.ok,
        t.expected_4xx,
        t.unexpected_4xx,
        t.server_errors,
        t.no_answer,
        t.jobs,
        t.items,
        t.succeeded,
        t.failed,
        report.lost.len(),
        t.downloads,
        t.streams
    );
    for g in &report.growth {
        let unit = |v: f64| {
            if g.what == "rss" {
                format!("{} MiB", num(v / MIB))
            } else {
                num(v)
            }
        };
        println!(
            "Growth of {}: median {} in the first third after the warm-up, {} in the last third (limit {}): {}.",
            g.what,
            unit(g.first),
            unit(g.last),
            unit(g.limit),
            if g.flat() { "flat" } else { "GREW" }
        );
    }
    if let Some(d) = report.after_drain {
        println!(
            "After the traffic stopped and every job ended: RSS {} MiB, {} fds, {} tasks.",
            num(d.rss as f64 / MIB),
            d.fds,
            d.tasks.map_or("—".into(), |t| t.to_string())
        );
    }
    println!(
        "Fake FAL failures, {} s each, in turn: {}.",
        plan.chaos_every.as_secs(),
        report
            .chaos
            .iter()
            .map(|(n, k)| format!("{n} ×{k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let machine = machine(&bin, &dir);
    println!("{machine}");
    if let Some(path) = &cli.json {
        let json = serde_json::json!({
            "scenario": "soak",
            "minutes": args.minutes,
            "clients": plan.clients,
            "pause_ms": args.pause_ms,
            "sample_every_s": sample_every.as_secs_f64(),
            "machine": machine,
            "tolerance": plan.tolerance,
            "report": report,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    if cli.keep {
        let kept = data.keep();
        step!("data kept in {}", kept.display());
    }
    if report.passed() {
        step!("soak passed: nothing grew, no item lost, no unexpected answer");
        Ok(())
    } else {
        for u in &report.unexpected {
            eprintln!("  unexpected: {u}");
        }
        for l in report.lost.iter().take(30) {
            eprintln!("  lost: {l}");
        }
        eprintln!("{log_tail}");
        Err(format!("the soak failed:\n  - {}", report.problems.join("\n  - ")).into())
    }
}

/// One measurement of `fal-bound`.
#[derive(Debug, Clone, Copy)]
enum FalMode {
    Closed(ClosedLoopPlan),
    InFlight(InFlightPlan),
}

/// `load fal-bound`: see [`FalBoundArgs`] and `scenarios::fal_bound`. Each
/// measurement gets a server of its own (so the peak RSS is its own); the
/// fake FAL is shared.
async fn fal_bound(cli: &Cli, args: &FalBoundArgs) -> Result<()> {
    let quick = cli.quick;
    let latency = Duration::from_millis(args.latency_ms.unwrap_or(if quick { 200 } else { 1000 }));
    let queue = args.queue_ms.map_or(latency / 5, Duration::from_millis);
    let running = args
        .run_ms
        .map_or(latency.saturating_sub(queue), Duration::from_millis);
    let l = queue + running;
    let clients = args.clients.unwrap_or(if quick { 8 } else { 200 }).max(1);
    let mut modes = Vec::new();
    if args.in_flight.is_none() {
        modes.push(FalMode::Closed(ClosedLoopPlan {
            clients,
            warmup_jobs: args.warmup_jobs.unwrap_or(clients as u64),
            warmup_max: 2 * l + Duration::from_secs(5),
            jobs: args.jobs.unwrap_or(if quick { 40 } else { 2000 }),
            window_max: Duration::from_secs(args.seconds.unwrap_or(if quick { 10 } else { 120 })),
        }));
    }
    if let Some(items) = args.in_flight.or(quick.then_some(25)) {
        modes.push(FalMode::InFlight(InFlightPlan {
            items: items.max(1),
            files_per_job: args.files_per_job.max(1),
            connections: args.connections.max(1),
            poll: Duration::from_millis(args.poll_ms.max(1)),
            max_time: args.seconds.map_or(
                if quick {
                    Duration::from_secs(30)
                } else {
                    4 * l + Duration::from_secs(60)
                },
                Duration::from_secs,
            ),
        }));
    }
    // One connection per client and per SSE stream here; the fake FAL's
    // side of the server's connections; the server inherits the limit.
    let items = args.in_flight.unwrap_or(25);
    raise_open_files_limit(2 * clients as u64 + 4 * items + 1024)?;
    let bin = server_binary(cli)?;
    let base = cli.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let data = tempfile::Builder::new()
        .prefix("i2m-fal-bound-")
        .tempdir_in(&base)?;
    let dir = data.path().to_path_buf();
    step!(
        "fal-bound{}: L = {} ms ({} queued, {} running); server {}; data in {}",
        if quick { " (quick)" } else { "" },
        l.as_millis(),
        queue.as_millis(),
        running.as_millis(),
        bin.display(),
        dir.display()
    );
    let host = FakeFalHost::start(queue, running).await?;
    let setup = |name: &str| ServerSetup {
        bin: bin.clone(),
        dir: dir.join(name),
        role: Role::All,
        generator: host.generator(),
        database_url: cli.database_url.clone(),
        storage_url: cli.storage_url.clone(),
        log_filter: cli.server_log.clone(),
        max_file_bytes: None,
        extra_env: {
            let mut env = cli.server_env.clone();
            if args.webhooks {
                env.push(("FAL_JWKS_URL".into(), host.fake().jwks_url()));
            }
            env
        },
        public_base_url: args.webhooks,
    };

    // The server's CPU when idle: its fixed cost, beside the loaded figures.
    let idle_wait = Duration::from_millis(if quick { 500 } else { 3000 });
    let mut figures = Vec::new();
    let mut problems = Vec::new();
    let mut outcomes = Vec::new();
    let mut runs = Vec::new();
    for mode in modes {
        match mode {
            FalMode::Closed(plan) => {
                let server = server::start(&setup("closed-loop")).await?;
                let idle = fb::idle_cpu(server.pid(), idle_wait).await;
                step!(
                    "closed loop: {} clients, {} + {} jobs, at most {} s measured",
                    plan.clients,
                    plan.warmup_jobs,
                    plan.jobs,
                    plan.window_max.as_secs()
                );
                let probe = host.fake().probe();
                let mut r =
                    fb::closed_loop(server.addr, server.pid(), USER_KEY, &probe, plan).await?;
                let label = format!(
                    "closed loop, C = {}, L = {} ms",
                    plan.clients,
                    l.as_millis()
                );
                closed_loop_figures(&mut figures, &label, &mut r, plan.clients, l, idle);
                let before = problems.len();
                check(
                    &mut problems,
                    &format!("{label}: no job failed ({} did)", r.failed_in_all),
                    r.failed_in_all == 0,
                );
                check(
                    &mut problems,
                    &format!("{label}: some job succeeded in the window"),
                    r.succeeded > 0,
                );
                if problems.len() > before {
                    eprintln!("{}", server.log_tail());
                }
                outcomes.push(format!(
                    "{label}: {} jobs succeeded and {} failed in {} s measured ({} failed in all); warm-up {} jobs{}; {}; latency p50 {} ms, p99 {} ms; fake FAL: {} submits, {} status polls per submit.",
                    r.succeeded,
                    r.failed,
                    num(r.cpu.wall.as_secs_f64()),
                    r.failed_in_all,
                    r.warmup_finished,
                    if r.warmup_cut { " (cut by time)" } else { "" },
                    if r.window_cut {
                        format!("the window ended by time, {} jobs abandoned", r.abandoned)
                    } else {
                        "every job ended".to_owned()
                    },
                    fmt_ms(pct(&mut r.latencies, 50.0)),
                    fmt_ms(pct(&mut r.latencies, 99.0)),
                    r.fal.submits,
                    num(r.fal.status_polls as f64 / r.fal.submits.max(1) as f64),
                ));
                runs.push(serde_json::json!({
                    "kind": "closed_loop",
                    "clients": plan.clients,
                    "warmup_jobs": r.warmup_finished,
                    "warmup_cut": r.warmup_cut,
                    "window_s": r.cpu.wall.as_secs_f64(),
                    "window_cut": r.window_cut,
                    "succeeded": r.succeeded,
                    "failed": r.failed,
                    "failed_in_all": r.failed_in_all,
                    "abandoned": r.abandoned,
                    "jobs_per_s": r.per_second(),
                    "latency_p50_ms": pct(&mut r.latencies, 50.0),
                    "latency_p99_ms": pct(&mut r.latencies, 99.0),
                    "server_cpu_s": r.cpu.server.as_secs_f64(),
                    "server_idle_cpu_percent": idle,
                    "harness_cpu_s": r.cpu.harness.as_secs_f64(),
                    "fake_fal_cpu_s": r.cpu.fake_fal.as_secs_f64(),
                    "other_processes_cpu_s": r.cpu.others.as_secs_f64(),
                    "server_peak_rss_bytes": r.peak_rss,
                    "fal_peak_in_flight": r.fal.peak_in_flight,
                    "fal_submits": r.fal.submits,
                    "fal_status_polls": r.fal.status_polls,
                }));
                server.stop().await;
            }
            FalMode::InFlight(plan) => {
                let server = server::start(&setup("in-flight")).await?;
                let idle = fb::idle_cpu(server.pid(), idle_wait).await;
                step!(
                    "in flight: {} items in jobs of {}, from {} connections, at most {} s",
                    plan.items,
                    plan.files_per_job,
                    plan.connections,
                    plan.max_time.as_secs()
                );
                let probe = host.fake().probe();
                let r = fb::in_flight(server.addr, server.pid(), USER_KEY, &probe, plan).await?;
                let label = format!("in flight, N = {}, L = {} ms", plan.items, l.as_millis());
                in_flight_figures(&mut figures, &label, &r, l, plan.poll, idle);
                let before = problems.len();
                check(
                    &mut problems,
                    &format!(
                        "{label}: every item succeeded ({} of {}: {} failed, {} unfinished, {} not uploaded)",
                        r.succeeded, r.items, r.failed, r.unfinished, r.not_uploaded
                    ),
                    r.all_succeeded(),
                );
                if problems.len() > before {
                    eprintln!("{}", server.log_tail());
                }
                outcomes.push(format!(
                    "{label}: {} items in {} jobs: {} succeeded, {} failed, {} unfinished, {} not uploaded; uploads took {} s; {} polls ({} failed); fake FAL: {} submits, {} status polls per submit.",
                    r.items,
                    r.jobs,
                    r.succeeded,
                    r.failed,
                    r.unfinished,
                    r.not_uploaded,
                    num(r.uploads_took.as_secs_f64()),
                    r.polls,
                    r.poll_errors,
                    r.fal.submits,
                    num(r.fal.status_polls as f64 / r.fal.submits.max(1) as f64),
                ));
                runs.push(serde_json::json!({
                    "kind": "in_flight",
                    "items": r.items,
                    "jobs": r.jobs,
                    "files_per_job": plan.files_per_job,
                    "succeeded": r.succeeded,
                    "failed": r.failed,
                    "unfinished": r.unfinished,
                    "not_uploaded": r.not_uploaded,
                    "uploads_s": r.uploads_took.as_secs_f64(),
                    "wall_s": r.cpu.wall.as_secs_f64(),
                    "polls": r.polls,
                    "poll_errors": r.poll_errors,
                    "server_cpu_s": r.cpu.server.as_secs_f64(),
                    "server_idle_cpu_percent": idle,
                    "harness_cpu_s": r.cpu.harness.as_secs_f64(),
                    "fake_fal_cpu_s": r.cpu.fake_fal.as_secs_f64(),
                    "other_processes_cpu_s": r.cpu.others.as_secs_f64(),
                    "server_peak_rss_bytes": r.peak_rss,
                    "fal_peak_in_flight": r.fal.peak_in_flight,
                    "fal_submits": r.fal.submits,
                    "fal_status_polls": r.fal.status_polls,
                }));
                server.stop().await;
            }
        }
    }
    host.stop().await;

    println!("{}", markdown(&figures));
    for o in &outcomes {
        println!("{o}");
    }
    let env: Vec<String> = cli
        .server_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "Fake FAL: {} ms queued + {} ms running; server environment extras: {}.",
        queue.as_millis(),
        running.as_millis(),
        if env.is_empty() {
            "none".to_owned()
        } else {
            env.join(" ")
        }
    );
    let machine = machine(&bin, &dir);
    println!("{machine}");
    if let Some(path) = &cli.json {
        let json = serde_json::json!({
            "scenario": "fal-bound",
            "mode": if quick { "quick" } else { "full" },
            "machine": machine,
            "queue_ms": queue.as_secs_f64() * 1000.0,
            "run_ms": running.as_secs_f64() * 1000.0,
            "server_env": env,
            "figures": figures,
            "runs": runs,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    if cli.keep {
        let kept = data.keep();
        step!("data kept in {}", kept.display());
    }
    if problems.is_empty() {
        step!("every item ended and succeeded");
        Ok(())
    } else {
        Err(format!("problems:\n  - {}", problems.join("\n  - ")).into())
    }
}

/// The closed loop's rows.
fn closed_loop_figures(
    figures: &mut Vec<Figure>,
    label: &str,
    r: &mut ClosedLoop,
    clients: usize,
    l: Duration,
    idle: f64,
) {
    let l_ms = ms(l);
    let bound = (!l.is_zero()).then(|| clients as f64 / l.as_secs_f64());
    figures.push(Figure {
        name: format!("{label}: jobs/s"),
        value: r.per_second(),
        unit: "jobs/s",
        reference: if bound.is_some() {
            "the bound C ÷ L".into()
        } else {
            "no bound at L = 0".into()
        },
        reference_value: bound,
        reference_unit: "jobs/s",
        target: if bound.is_some() {
            Target::RatioAtLeast(0.9)
        } else {
            Target::None
        },
    });
    // Every latency is at least L (the fake answers no sooner), so the
    // overhead's percentiles are the latency's less L.
    let floor = fmt_ms(ms(poll_floor(l)));
    for (p, below) in [(50.0, 50.0), (99.0, 250.0)] {
        let latency = pct(&mut r.latencies, p);
        figures.push(Figure {
            name: format!("{label}: overhead over L p{p}"),
            value: latency - l_ms,
            unit: "ms",
            reference: format!(
                "latency p{p} {} ms; FAL's status poll schedule alone adds {floor} ms",
                fmt_ms(latency)
            ),
            reference_value: None,
            reference_unit: "",
            target: Target::Below(below),
        });
    }
    let finished = r.finished();
    figures.push(Figure {
        name: format!("{label}: server CPU per job"),
        value: ms_per(r.cpu.server, finished),
        unit: "ms",
        reference: "the harness's CPU per job (clients, fake FAL)".into(),
        reference_value: Some(ms_per(r.cpu.harness, finished)),
        reference_unit: "ms",
        target: Target::Below(2.0),
    });
    shared_figures(
        figures,
        label,
        &SharedRows {
            peak_rss: r.peak_rss,
            fal_peak: r.fal.peak_in_flight,
            offered: clients as u64,
            offered_name: "clients C",
            cpu: r.cpu,
            idle,
        },
    );
}

/// The in-flight run's rows.
fn in_flight_figures(
    figures: &mut Vec<Figure>,
    label: &str,
    r: &InFlight,
    l: Duration,
    poll: Duration,
    idle: f64,
) {
    figures.push(Figure {
        name: format!("{label}: items succeeded"),
        value: r.succeeded as f64,
        unit: "items",
        reference: "items put in flight".into(),
        reference_value: Some(r.items as f64),
        reference_unit: "items",
        target: Target::RatioAtLeast(1.0),
    });
    figures.push(Figure {
        name: format!("{label}: first upload → last job seen ended"),
        value: r.cpu.wall.as_secs_f64(),
        unit: "s",
        reference: format!(
            "L (FAL's status poll schedule adds {} s; this poll every {} s; the uploads took {} s)",
            num(poll_floor(l).as_secs_f64()),
            num(poll.as_secs_f64()),
            num(r.uploads_took.as_secs_f64())
        ),
        reference_value: (!l.is_zero()).then_some(l.as_secs_f64()),
        reference_unit: "s",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!("{label}: server CPU per item"),
        value: ms_per(r.cpu.server, r.items),
        unit: "ms",
        reference: "the harness's CPU per item (clients, fake FAL)".into(),
        reference_value: Some(ms_per(r.cpu.harness, r.items)),
        reference_unit: "ms",
        target: Target::Below(2.0),
    });
    shared_figures(
        figures,
        label,
        &SharedRows {
            peak_rss: r.peak_rss,
            fal_peak: r.fal.peak_in_flight,
            offered: r.items,
            offered_name: "items N",
            cpu: r.cpu,
            idle,
        },
    );
}

/// What both measurements report beside their own rows.
#[derive(Debug, Clone, Copy)]
struct SharedRows {
    /// The server's peak RSS, bytes.
    peak_rss: u64,
    /// The most requests the fake FAL held at once.
    fal_peak: u64,
    /// Clients or items: how many requests could be at FAL at once.
    offered: u64,
    offered_name: &'static str,
    /// CPU over the measurement.
    cpu: fb::CpuUse,
    /// The server's CPU when idle, % of a core.
    idle: f64,
}

/// The rows both measurements have: RSS, requests in flight, CPU load.
fn shared_figures(figures: &mut Vec<Figure>, label: &str, rows: &SharedRows) {
    let SharedRows {
        peak_rss,
        fal_peak,
        offered,
        offered_name,
        cpu,
        idle,
    } = *rows;
    figures.push(Figure {
        name: format!("{label}: server peak RSS"),
        value: peak_rss as f64 / MIB,
        unit: "MiB",
        reference: String::new(),
        reference_value: None,
        reference_unit: "",
        target: Target::Below(150.0),
    });
    figures.push(Figure {
        name: format!("{label}: requests at the fake FAL at once, peak"),
        value: fal_peak as f64,
        unit: "requests",
        reference: offered_name.into(),
        reference_value: Some(offered as f64),
        reference_unit: "",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!("{label}: server CPU"),
        value: cpu.percent_of_a_core(cpu.server),
        unit: "% of a core",
        reference: "the same server idle, just before".into(),
        reference_value: Some(idle),
        reference_unit: "% of a core",
        target: Target::None,
    });
    figures.push(Figure {
        name: format!("{label}: harness CPU (clients, fake FAL, samplers)"),
        value: cpu.percent_of_a_core(cpu.harness),
        unit: "% of a core",
        reference: "of which the fake FAL".into(),
        reference_value: Some(cpu.percent_of_a_core(cpu.fake_fal)),
        reference_unit: "% of a core",
        target: Target::None,
    });
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    figures.push(Figure {
        name: format!("{label}: other processes' CPU (neither server nor harness)"),
        value: cpu.percent_of_a_core(cpu.others),
        unit: "% of a core",
        reference: "all the machine's cores".into(),
        reference_value: Some(100.0 * cores as f64),
        reference_unit: "% of a core",
        target: Target::None,
    });
}

fn check(problems: &mut Vec<String>, what: &str, ok: bool) {
    if !ok {
        problems.push(what.to_owned());
    }
}

fn pct(l: &mut image2model_benches::stats::Latencies, p: f64) -> f64 {
    l.percentile(p).map_or(f64::NAN, ms)
}

fn fmt_ms(x: f64) -> String {
    image2model_benches::report::num(x)
}

fn fmt_mib(x: f64) -> String {
    image2model_benches::report::num(x)
}

/// `NAME=VALUE` → the pair.
fn parse_env_pair(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// `202 ×25` for a list of equal outcomes.
fn summarize(outcomes: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for o in outcomes {
        match counts.iter_mut().find(|(k, _)| k == o) {
            Some((_, n)) => *n += 1,
            None => counts.push((o.clone(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts this binary as the hello server.
async fn start_hello() -> Result<Served> {
    let addr = free_loopback_addr()?;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(["hello-server", "--bind", &addr.to_string()]);
    Served::start("hello server", cmd, addr, "/", None).await
}

/// Raises the soft open-files limit to at least `want` (up to the hard limit).
fn raise_open_files_limit(want: u64) -> Result<()> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return Ok(());
    }
    let max = limit.maximum.unwrap_or(u64::MAX);
    if max < want {
        return Err(format!(
            "the open-files limit is {max}; {want} are needed (raise it with `ulimit -n`)"
        )
        .into());
    }
    limit.current = Some(want);
    setrlimit(Resource::Nofile, limit)?;
    Ok(())
}

/// The `image2model` binary: `--server-bin`, or built by cargo in this
/// harness's profile when run through cargo, or beside this binary.
fn server_binary(cli: &Cli) -> Result<PathBuf> {
    if let Some(bin) = &cli.server_bin {
        return Ok(bin.clone());
    }
    let beside = std::env::current_exe()?
        .parent()
        .map(|d| d.join("image2model"))
        .ok_or("this binary has no directory")?;
    if let Some(cargo) = std::env::var_os("CARGO") {
        step!("building the server (cargo build -p image2model-http)");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "image2model-http", "--bin", "image2model"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err("building the server failed".into());
        }
    }
    if beside.exists() {
        Ok(beside)
    } else {
        Err(format!(
            "no server binary at {}: build it (cargo build --release -p image2model-http) or pass --server-bin",
            beside.display()
        )
        .into())
    }
}

/// The machine and build, and the file system of the data directory
/// `data`, for the record.
fn machine(bin: &Path, data: &Path) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_owned()))
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        );
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let yardstick = image2model_benches::cpu::yardstick();
    format!(
        "Machine: {cpu}, {cores} cores, {mem} memory, Linux {}; CPU yardstick {:.1} ms (`cpu::yardstick`, {profile}); commit {commit}; harness {profile}; server {}; data on {}; load generator in the same machine (loopback).",
        kernel.trim(),
        yardstick.as_secs_f64() * 1e3,
        bin.display(),
        image2model_benches::fs::describe(data)
    )
}
