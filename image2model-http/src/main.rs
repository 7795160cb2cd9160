//! The `image2model` binary: `serve`, `convert`, `config check`, `doctor`,
//! `backup`, `restore`. The
//! command line is parsed here; each command lives in [`cli`].

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use image2model_http::ServeRole;

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
    /// Checks that this deployment can run: the configuration, then each
    /// store, Redis and FAL answer, disk room, file permissions, proxies and
    /// the clock; each finding with what to do. Exits 1 on a problem.
    Doctor {
        /// The env file to read (variables already set win) and check the
        /// permissions of; by default `.env` here is read and
        /// `.env.production` and `.env` are checked.
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Backs up the job store and the blob store of this configuration
    /// (as `serve` reads it) into DIR, while the server runs: a snapshot of
    /// the database, the blobs its jobs use, and a manifest of checksums.
    Backup {
        /// A new or empty directory.
        dir: PathBuf,
    },
    /// Restores a backup made by `backup` into the stores of this
    /// configuration, after checking every file against its manifest.
    /// Stop every server and worker first.
    Restore {
        /// The backup's directory.
        dir: PathBuf,
        /// Restore even when the job store or the blob store holds data:
        /// the job store is replaced; the backup's blobs are written over
        /// the store's (others stay).
        #[arg(long)]
        force: bool,
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
            Command::Serve { bind, role } => cli::serve::run(bind, role.into()).await,
            Command::Convert {
                images,
                out,
                model,
                face_limit,
            } => {
                let Some(config) = cli::load_config() else {
                    return ExitCode::from(2);
                };
                let _logs = cli::logs::init_tracing(&config, true);
                cli::convert::run(config, images, out, model, face_limit).await
            }
            Command::Config {
                command: ConfigCommand::Check,
            } => cli::config_check::run(),
            Command::Doctor { env_file } => cli::doctor::run(env_file).await,
            Command::Backup { dir } => cli::backup::run_backup(&dir).await,
            Command::Restore { dir, force } => cli::backup::run_restore(&dir, force).await,
        }
    })
}
