//! What every handler shares: [`AppState`], one reference-counted
//! [`SharedState`].
//!
//! Built once by [`crate::app::AppBuilder::build`] and put into each API
//! request's data by the request gate (handlers read it as
//! `Data<&AppState>` or hold a clone). It sits below the handlers and above
//! what it is made of (the configuration, the client-address resolver, the
//! audit trail), so nothing it holds imports it back.

use std::path::PathBuf;
use std::sync::Arc;

use image2model_core::Pipeline;
use image2model_core::auth::KeyRegistry;
use image2model_core::generators::fal::FalGenerator;
use image2model_core::ports::AuditLog;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Entry};
use crate::callbacks::{AddressPolicy, WebhookSecrets};
use crate::config::Config;
use crate::links::LinkSigner;
use crate::security::client_ip::ClientIpResolver;

/// What every handler shares: one allocation, so a clone (one per request,
/// for the request's data) is a reference count. Its parts are read through
/// `Deref` ([`SharedState`]).
#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    /// Shares `state`.
    #[must_use]
    pub fn new(state: SharedState) -> Self {
        Self(Arc::new(state))
    }

    /// Records an audit event through [`audit::record`]: a structured
    /// `tracing` event and a row of [`SharedState::audit_log`]. A storage
    /// failure is logged, never returned: auditing must not turn a request
    /// into an error.
    pub async fn audit(&self, entry: Entry) {
        audit::record(self.audit_log.as_ref(), entry).await;
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct SharedState {
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The configuration.
    pub config: Arc<Config>,
    /// Fires on shutdown: open event streams end so the server can drain.
    pub shutdown: CancellationToken,
    /// Where `system-health` measures the disk.
    pub disk_path: PathBuf,
    /// Whether blobs are local files (then `disk-usage` reports their disk).
    pub file_storage: bool,
    /// Bootstrap keys and the stored keys of the admin keys API.
    pub keys: KeyRegistry,
    /// Where audit events are stored (see [`AppState::audit`]).
    pub audit_log: Arc<dyn AuditLog>,
    /// Resolves client addresses (the TCP peer, or a trusted proxy's header).
    pub clients: ClientIpResolver,
    /// The FAL generator, when configured: fal's webhooks go to it.
    pub fal: Option<Arc<FalGenerator>>,
    /// Signs and checks download links (under a key derived from
    /// `SECRET_KEY`).
    pub links: LinkSigner,
    /// Derives keys' webhook secrets (from `SECRET_KEY`).
    pub webhook_secrets: WebhookSecrets,
    /// Which addresses webhooks may reach (`WEBHOOK_ALLOWED_NETS`).
    pub webhook_addresses: Arc<AddressPolicy>,
    /// One permit per upload in progress (`MAX_CONCURRENT_UPLOADS`).
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Open `GET /api/v1/events` streams per key
    /// (`MAX_EVENT_STREAMS_PER_KEY`).
    pub event_streams: Arc<crate::streams::StreamSlots>,
}
