//! The composition root: [`App`] puts the parts together and runs them.
//!
//! - [`AppBuilder`] (`app/builder.rs`): configuration (and any parts given
//!   in its place) → stores, generators, pipeline, key registry, rate
//!   limits and the shared [`AppState`].
//! - [`App::endpoint`]: the routes ([`crate::routes`]: the API service of
//!   [`crate::api`], the probes, the page, the webhooks) behind the request
//!   gate ([`crate::security::gate`]).
//! - [`App::run`]: the accept loop ([`crate::server`]) and, by role, the
//!   worker and the background tasks (`app/tasks.rs`, the retention task
//!   of [`crate::cleanup`] and the webhook deliverer of
//!   [`crate::deliveries`]), until shutdown.
//!
//! Everything else in the crate sits below this module; nothing imports it
//! but the crate root's re-exports.

mod builder;
mod tasks;

use std::io;
use std::net::SocketAddr;

use poem::endpoint::{BoxEndpoint, make_sync};
use poem::http::Method;
use poem::{EndpointExt, IntoEndpoint, Route, RouteMethod};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::builder::Assembled;
pub use self::builder::{AppBuilder, ServeRole};
use crate::cleanup;
use crate::config::Config;
use crate::routes::{API_PREFIX, AllowTable, FAL_WEBHOOK_PATH, OPENAPI_PATH, Routes};
use crate::security::audit_observer::AuditObserver;
use crate::security::auth::Authenticator;
use crate::security::gate::{GateMode, Steps};
use crate::security::hosts::HostCheck;
use crate::server;
use crate::state::AppState;
use crate::wiring::BuildError;
use crate::{api, security, web, webhooks};

/// Mounts `ep` at `path` for `method` only, and records that in `allow`.
fn mount<E>(route: Route, allow: &mut AllowTable, path: &str, method: Method, ep: E) -> Route
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    allow.add(path, method.clone());
    route.at(path, RouteMethod::new().method(method, ep))
}

/// The server: HTTP API, worker, or both.
#[derive(Debug)]
pub struct App {
    parts: Assembled,
}

impl AppBuilder {
    /// Opens the stores and builds the pipeline.
    ///
    /// # Errors
    /// [`BuildError`] when the configuration has fatal problems, a store cannot
    /// be opened or no generator is available.
    pub async fn build(self) -> Result<App, BuildError> {
        Ok(App {
            parts: self.assemble().await?,
        })
    }
}

/// A server started by [`App::spawn`].
#[derive(Debug)]
pub struct SpawnedApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// Ends when the server has drained and the worker stopped.
    pub handle: JoinHandle<io::Result<()>>,
    /// Its state (pipeline, config).
    pub state: AppState,
}

impl App {
    /// A builder over `config`.
    #[must_use]
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder::new(config)
    }

    /// Builds the app from `config` alone, running API and worker.
    ///
    /// # Errors
    /// See [`AppBuilder::build`].
    pub async fn build(config: Config) -> Result<App, BuildError> {
        Self::builder(config).build().await
    }

    /// The shared state.
    #[must_use]
    pub fn state(&self) -> &AppState {
        &self.parts.state
    }

    /// The whole HTTP endpoint: the routes behind the request gate (see
    /// [`security::gate`]), put together as `REQUEST_GATE` says.
    #[must_use]
    pub fn endpoint(&self) -> BoxEndpoint<'static> {
        match self.parts.state.config.request_gate {
            GateMode::Merged => self.steps().merged().boxed(),
            GateMode::Layered => self.steps().layered(),
        }
    }

    /// The routes of this role: the API (paths under [`API_PREFIX`]) and
    /// every other path, with the methods of each for a 405's `Allow`.
    fn routes(&self) -> Routes<BoxEndpoint<'static>> {
        let mut allow = AllowTable::default();
        let mut other = Route::new();
        other = mount(
            other,
            &mut allow,
            "/health",
            Method::GET,
            api::health::health,
        );
        other = mount(other, &mut allow, "/ready", Method::GET, api::health::ready);
        if self.parts.state.fal.is_some() {
            other = mount(
                other,
                &mut allow,
                FAL_WEBHOOK_PATH,
                Method::POST,
                webhooks::fal,
            );
        }
        let mut api = Route::new().boxed();
        if self.parts.role.serves_api() {
            let service = api::service(&self.parts.state);
            allow.add_api(API_PREFIX, &<api::Apis as poem_openapi::OpenApi>::meta());
            // The refined document (`api::document`), in Swagger UI too.
            let spec = api::spec_json(&self.parts.state);
            let docs = service
                .swagger_ui_html()
                .replacen(&service.spec(), &spec, 1);
            let spec = make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            });
            let docs = Route::new().at("/", make_sync(move |_| poem::web::Html(docs.clone())));
            other = mount(other, &mut allow, "/", Method::GET, web::index);
            other = mount(other, &mut allow, "/static/:file", Method::GET, web::asset);
            // Any method: these two never answer 405.
            other = other
                .at(format!("{API_PREFIX}{OPENAPI_PATH}"), spec)
                .nest("/docs", docs);
            api = service.into_endpoint();
        }
        Routes {
            api,
            other,
            exact: &[OPENAPI_PATH],
            allow,
        }
    }

    /// The steps of the request gate, around the routes.
    fn steps(&self) -> Steps<Routes<BoxEndpoint<'static>>, AppState> {
        let state = &self.parts.state;
        let config = &state.config;
        Steps {
            routes: self.routes(),
            limits: self.parts.rate_limits.clone(),
            body_limit: self.parts.body_limit,
            data: state.clone(),
            authenticator: Authenticator(self.parts.auth.clone()),
            cors: security::cors::cors(&config.cors_origins),
            hsts: config.is_production(),
            hosts: HostCheck::new(config.allowed_hosts.clone()),
            audit: AuditObserver::new(
                state.audit_log.clone(),
                state.clients.clone(),
                self.parts.auth.clone(),
            ),
            clients: state.clients.clone(),
            spans: config.request_span,
        }
    }

    /// Serves on `listener` (and runs the worker, by role) until `shutdown`
    /// fires; then stops accepting, ends event streams, lets requests drain
    /// (up to [`ServerLimits::drain_timeout`](crate::server::ServerLimits::drain_timeout)) and stops the worker, which
    /// releases unfinished items. Connections are bounded as [`server`] says.
    ///
    /// # Errors
    /// I/O errors of the listener.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
        let link = tasks::forward_shutdown(shutdown.clone(), self.parts.state.shutdown.clone());
        let worker = self.parts.role.runs_worker().then(|| {
            let worker = self.parts.state.pipeline.worker(self.parts.worker.clone());
            tokio::spawn(worker.run(shutdown.clone()))
        });
        // Retention runs where the worker runs (one place per deployment role).
        let cleaner = self.parts.role.runs_worker().then(|| {
            tokio::spawn(cleanup::run_schedule(
                self.parts.state.clone(),
                self.parts.cleanup,
                shutdown.clone(),
            ))
        });
        // Webhooks go out where the worker runs (jobs end there), from any
        // number of processes: the outbox's leases keep them apart.
        let deliverer = self
            .parts
            .role
            .runs_worker()
            .then(|| crate::deliveries::Deliverer::new(&self.parts.state))
            .flatten()
            .map(|d| tokio::spawn(d.run(shutdown.clone())));
        let sweeper = tasks::sweep_rate_limits(self.parts.rate_limits.clone(), shutdown.clone());
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, role = ?self.parts.role, "listening");
        let limits = self.parts.server_limits;
        let served = match self.parts.state.config.request_gate {
            // The merged gate runs in place, so that a request's future is
            // not copied into a box of its own.
            GateMode::Merged => {
                server::serve(listener, self.steps().merged(), limits, shutdown.clone()).await
            }
            GateMode::Layered => {
                server::serve(listener, self.steps().layered(), limits, shutdown.clone()).await
            }
        };
        shutdown.cancel();
        if let Some(worker) = worker
            && let Err(e) = worker.await
        {
            tracing::error!(error = %e, "worker task failed");
        }
        let _ = sweeper.await;
        if let Some(deliverer) = deliverer {
            let _ = deliverer.await;
        }
        if let Some(cleaner) = cleaner {
            let _ = cleaner.await;
        }
        let _ = link.await;
        tracing::info!("stopped");
        served
    }

    /// Binds `addr` (use port 0 for any) and runs in a background task.
    ///
    /// # Errors
    /// The bind error.
    pub async fn spawn(self, addr: SocketAddr) -> io::Result<SpawnedApp> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = self.parts.state.clone();
        let handle = tokio::spawn(self.run(listener, shutdown.clone()));
        Ok(SpawnedApp {
            addr,
            shutdown,
            handle,
            state,
        })
    }
}
