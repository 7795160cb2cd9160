//! Starting the real `image2model` binary for a measurement: its own data
//! directory (SQLite job store and local blob store unless told otherwise),
//! rate limits raised out of the way, and the generator either the fake FAL
//! running in the harness at zero latency or the offline relief generator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::Result;
use crate::process::{Served, free_loopback_addr};

/// The bearer key the harness gives the server (development mode).
pub const USER_KEY: &str = "load-harness-user-key-5f0c9d2e8b7a4c1d";
/// The admin key (must differ from the user key).
pub const ADMIN_KEY: &str = "load-harness-admin-key-a41b7e90c3d2f658";

/// Which generator the server uses.
#[derive(Debug, Clone)]
pub enum Generator {
    /// The FAL generator pointed at a fake FAL on loopback.
    Fal {
        /// The fake's queue API base URL.
        queue_base_url: String,
        /// The fake's storage API base URL.
        storage_base_url: String,
        /// The key the fake accepts.
        key: String,
    },
    /// The offline relief generator (no network at all).
    Relief,
}

/// What the server process runs (`serve --role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and the worker: the default deployment.
    All,
    /// The HTTP API only: uploads stay queued, nothing competes with ingest.
    Api,
}

impl Role {
    fn as_arg(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
        }
    }
}

/// How to start one server.
#[derive(Debug, Clone)]
pub struct ServerSetup {
    /// The `image2model` binary.
    pub bin: PathBuf,
    /// A directory of its own (database, blobs, log).
    pub dir: PathBuf,
    /// What it runs.
    pub role: Role,
    /// Its generator.
    pub generator: Generator,
    /// `DATABASE_URL`; `None` for a SQLite file in `dir`.
    pub database_url: Option<String>,
    /// `STORAGE_URL`; `None` for a local directory in `dir`.
    pub storage_url: Option<String>,
    /// `RUST_LOG` for the server; `None` leaves its default.
    pub log_filter: Option<String>,
    /// `MAX_FILE_BYTES` (the server's default when `None`).
    pub max_file_bytes: Option<u64>,
    /// More variables, set last (they override the ones above).
    pub extra_env: Vec<(String, String)>,
    /// Sets `PUBLIC_BASE_URL` to the server's own loopback address, so that
    /// the fake FAL calls its webhook route.
    pub public_base_url: bool,
}

/// Starts the server and waits for `/ready`.
///
/// # Errors
/// When it does not start or get ready.
pub async fn start(setup: &ServerSetup) -> Result<Served> {
    std::fs::create_dir_all(&setup.dir)?;
    let addr: SocketAddr = free_loopback_addr()?;
    let mut cmd = Command::new(&setup.bin);
    cmd.arg("serve")
        .args(["--bind", &addr.to_string(), "--role", setup.role.as_arg()])
        // Its own directory, so that no `.env` of the caller's is read.
        .current_dir(&setup.dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env_for(setup, &setup.dir));
    if setup.public_base_url {
        cmd.env("PUBLIC_BASE_URL", format!("http://{addr}"));
    }
    let log = setup.dir.join("server.log");
    Served::start("image2model", cmd, addr, "/ready", Some(&log)).await
}

/// The server's environment.
fn env_for(setup: &ServerSetup, dir: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("ENVIRONMENT".into(), "development".into()),
        ("API_KEY".into(), USER_KEY.into()),
        ("ADMIN_API_KEY".into(), ADMIN_KEY.into()),
        (
            "DATABASE_URL".into(),
            setup
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", dir.join("image2model.db").display())),
        ),
        (
            "STORAGE_URL".into(),
            setup
                .storage_url
                .clone()
                .unwrap_or_else(|| format!("file://{}", dir.join("blobs").display())),
        ),
        // Out of the way: the harness sends thousands of requests from one IP.
        ("RATE_LIMIT_UPLOAD_PER_MINUTE".into(), "1000000000".into()),
        ("RATE_LIMIT_PER_HOUR".into(), "1000000000".into()),
    ];
    match &setup.generator {
        Generator::Fal {
            queue_base_url,
            storage_base_url,
            key,
        } => {
            env.push(("GENERATOR".into(), "fal".into()));
            env.push(("FAL_API_KEY".into(), key.clone()));
            env.push(("FAL_QUEUE_BASE_URL".into(), queue_base_url.clone()));
            env.push(("FAL_STORAGE_BASE_URL".into(), storage_base_url.clone()));
        }
        Generator::Relief => env.push(("GENERATOR".into(), "relief".into())),
    }
    if let Some(filter) = &setup.log_filter {
        env.push(("RUST_LOG".into(), filter.clone()));
    }
    if let Some(max) = setup.max_file_bytes {
        env.push(("MAX_FILE_BYTES".into(), max.to_string()));
    }
    env.extend(setup.extra_env.iter().cloned());
    env
}
