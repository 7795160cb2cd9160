//! The `image2model` binary: `serve`, `convert`, `config check`.

mod convert;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use image2model_http::config::{Config, Environment};
use image2model_http::{App, ServeRole};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

/// jemalloc instead of glibc's allocator; see `docs/BENCHMARKS.md`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns photos into 3D models (binary glTF).
#[derive(Debug, Parser)]
#[command(name = "image2model", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP server and/or the worker.
    Serve {
        /// Listen address (overrides BIND_ADDR).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// What this process runs.
        #[arg(long, value_enum, default_value_t = RoleArg::All)]
        role: RoleArg,
    },
    /// Converts images to GLB files in-process, without a server.
    Convert {
        /// The images (PNG, JPEG or WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The output directory (created if missing).
        #[arg(short, long)]
        out: PathBuf,
        /// The model (default: the generator's default).
        #[arg(long)]
        model: Option<String>,
        /// At most this many faces.
        #[arg(long)]
        face_limit: Option<u32>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints the effective configuration (secrets redacted) and every
    /// problem found; exits 1 when there is one.
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// The HTTP API only.
    Api,
    /// The worker only (with /health and /ready).
    Worker,
    /// Both.
    All,
}

impl From<RoleArg> for ServeRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Api => ServeRole::Api,
            RoleArg::Worker => ServeRole::Worker,
            RoleArg::All => ServeRole::All,
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
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { bind, role } => serve(bind, role.into()).await,
            Command::Convert {
                images,
                out,
                model,
                face_limit,
            } => {
                let Some(config) = load_config() else {
                    return ExitCode::from(2);
                };
                let _logs = init_tracing(&config, true);
                convert::run(config, images, out, model, face_limit).await
            }
            Command::Config {
                command: ConfigCommand::Check,
            } => config_check(),
        }
    })
}

/// Reads the configuration, printing every error.
fn load_config() -> Option<Config> {
    match Config::from_env() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: invalid configuration:");
            for problem in e.0 {
                eprintln!("  - {problem}");
            }
            None
        }
    }
}

/// Logs: JSON in production, human-readable otherwise (coloured only on a
/// terminal); `RUST_LOG` filters (default `info`, or `warn` for the quiet
/// `convert`).
///
/// Lines are formatted where they happen and written to stderr by one
/// background thread, which writes whatever has queued up in one go and
/// flushes as soon as the queue is empty: the access log costs a request no
/// write system call and no contention on stderr's lock. The queue holds
/// [`LOG_QUEUE_LINES`] lines; when it is full, logging waits (no line is
/// dropped). Lines still queued are written when the returned guard drops.
fn init_tracing(config: &Config, quiet: bool) -> tracing_appender::non_blocking::WorkerGuard {
    use image2model_http::security::request_id::RequestSpans;
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // The formatter sits inside `RequestSpans`, which gives events logged
    // during a request the request's span, made only when one is written.
    let format = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if config.environment == Environment::Production {
        registry
            .with(RequestSpans::new(format.json().flatten_event(true)))
            .try_init()
    } else {
        registry.with(RequestSpans::new(format)).try_init()
    };
    guard
}

/// How many log lines may wait for the writer thread.
const LOG_QUEUE_LINES: usize = 16 * 1024;

async fn serve(bind: Option<SocketAddr>, role: ServeRole) -> ExitCode {
    let Some(mut config) = load_config() else {
        return ExitCode::from(2);
    };
    let _logs = init_tracing(&config, false);
    if let Some(bind) = bind {
        config.bind_addr = bind;
    }
    let problems = if config.is_production() {
        config.problems()
    } else {
        config.fatal_problems()
    };
    if !problems.is_empty() {
        eprintln!("error: refusing to start:");
        for p in &problems {
            eprintln!("  - {p}");
        }
        return ExitCode::from(2);
    }
    if config.api_key.is_none() && !config.is_production() && role != ServeRole::Worker {
        // Development without a key: make one so the server is usable, and
        // show it once (stderr, not the log, so it never lands in log files).
        let key = random_key();
        eprintln!(
            "No API_KEY set: generated a development key for this run:\n\n    API_KEY={}\n\nSend it as `Authorization: Bearer <key>` (or paste it into the web page). Set API_KEY to keep one across restarts.\n",
            key.expose_secret()
        );
        config.api_key = Some(key);
    }
    tracing::info!(config = %config.to_redacted_json(), "configuration");
    let listener = match tokio::net::TcpListener::bind(config.bind_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.bind_addr);
            return ExitCode::FAILURE;
        }
    };
    let metrics_addr = config.metrics_addr;
    let app = match App::builder(config).role(role).build().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    if let Some(addr) = metrics_addr
        && let Err(e) =
            image2model_http::metrics::serve(addr, app.state().pipeline.clone(), shutdown.clone())
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        }
    });
    match app.run(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = sigterm => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn random_key() -> SecretString {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    SecretString::from(hex::encode(bytes))
}

fn config_check() -> ExitCode {
    let Some(config) = load_config() else {
        return ExitCode::FAILURE;
    };
    print!("{config}");
    let mut problems = config.problems();
    if let Err(e) = image2model_http::wiring::generators(&config) {
        problems.push(e.to_string());
    }
    if config.api_key.is_none() {
        println!(
            "\nnote: API_KEY is unset: `serve` generates a development key at start-up (refused in production)"
        );
    }
    if problems.is_empty() {
        println!("\nno problems found ({})", config.environment.as_str());
        ExitCode::SUCCESS
    } else {
        println!("\nproblems:");
        for p in &problems {
            println!("  - {p}");
        }
        ExitCode::FAILURE
    }
}
