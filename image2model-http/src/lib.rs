//! # image2model-http
//!
//! The HTTP adapter of image2model: it wires the core's
//! [`Pipeline`](image2model_core::Pipeline) to poem-openapi, and nothing
//! more. Requests become pipeline calls; pipeline errors become the one error
//! envelope.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use image2model_http::{App, config::Config};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config::from_env()?;
//! let listener = tokio::net::TcpListener::bind(config.bind_addr).await?;
//! let app = App::build(config).await?;
//! app.run(listener, CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
//!
//! [`App::run`] takes a bound listener, so the binary and the tests share one
//! entry point (tests bind `127.0.0.1:0`; see [`App::spawn`]).
//!
//! ## Layout
//!
//! The modules form a stack: each imports only from modules listed below
//! it, never from one above (so none imports a module that imports it).
//!
//! - [`app`]: the composition root: [`AppBuilder`] (config → stores,
//!   generators, pipeline, shared state), [`App::endpoint`] (the routes
//!   behind the request gate) and [`App::run`] (the accept loop, the worker,
//!   the background tasks).
//! - [`api`]: the operations under [`routes::API_PREFIX`] (`upload`, `jobs`
//!   and the admin ones), the probes (`health`), the JSON shapes (`dto`) and
//!   downloads (`model`, `convert`). [`webhooks`]: fal's callbacks.
//! - [`cleanup`]: removal of old jobs, their files and orphan files, for
//!   `POST …/admin/cleanup` and the `RETENTION_HOURS` task.
//! - [`state`]: [`AppState`], what every handler shares.
//! - [`wiring`]: config → stores, generators, the key registry.
//! - [`config`]: environment (+ `.env`) → typed [`config::Config`], secrets
//!   as `SecretString`, redacted printing, production checks.
//! - [`security`]: the request gate that runs every step before the routes,
//!   and its steps: bearer auth schemes, security headers, rate limits,
//!   client IPs, CORS, the host check, the body limit, the audit observer.
//! - [`audit`]: the audit trail: event kinds, entries and how one is
//!   recorded (a structured log event and a stored row).
//! - [`links`]: signed, expiring download links (the signature; the
//!   operations are in [`api`]).
//! - [`error`]: the error envelope ([`error::ApiError`]) every failure
//!   leaves through.
//! - [`request_id`]: request ids, the request's span (made when an event
//!   needs it) and the access log.
//! - [`routes`]: the API prefix and the paths outside the API, and the top
//!   of the routes (the prefix straight to the API).
//! - [`server`] (the accept loop, hyper, with the header-size limit and the
//!   header-read timeout), [`web`] (the embedded page) and [`metrics`] (the
//!   Prometheus exporter) stand alone.
//!
//! `main.rs` is the `image2model` binary (`serve`, `convert`, `config
//! check`), with what only it uses in `src/cli/`.

pub mod api;
pub mod app;
pub mod audit;
pub mod callbacks;
pub mod cleanup;
pub mod config;
pub mod deliveries;
pub mod doctor;
pub mod error;
pub mod links;
pub mod metrics;
pub mod quota;
pub mod request_id;
pub mod routes;
pub mod security;
pub mod server;
pub mod state;
pub mod streams;
pub mod web;
pub mod webhooks;
pub mod wiring;

pub use crate::app::{App, AppBuilder, ServeRole, SpawnedApp};
pub use crate::routes::FAL_WEBHOOK_PATH;
pub use crate::server::ServerLimits;
pub use crate::state::{AppState, SharedState};
pub use crate::wiring::BuildError;
