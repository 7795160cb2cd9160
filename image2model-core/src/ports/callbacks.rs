//! Webhook deliveries and settings, kept in the job store.
//!
//! A job that names a callback URL is created with its [`Delivery`] in the
//! same transaction ([`NewJob::callback`](super::NewJob::callback)). The
//! delivery is claimable only once its job has ended, and a job ends in the
//! transaction that writes its last item: so the outbox entry is armed in
//! the same transaction as the job's end, and a crash at any point can
//! neither lose a delivery nor make one for a job that has not ended.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::job_store::StoreError;
pub use crate::domain::AttemptOutcome;
use crate::domain::{
    ApiKeyId, CallbackUrl, Delivery, DeliveryId, DeliveryStatus, JobId, WebhookSettings,
};

/// A delivery claimed for one attempt, until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryClaim {
    /// The delivery as it was when claimed.
    pub delivery: Delivery,
    /// When the claim lapses (milliseconds since the epoch); it is also
    /// the claim's token, so a lapsed claim records nothing.
    pub lease_until_ms: i64,
}

/// Which deliveries [`CallbackStore::list_deliveries`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Only this owner's; `None` for everyone's (admin).
    pub owner: Option<ApiKeyId>,
    /// Only those in this state.
    pub status: Option<DeliveryStatus>,
    /// At most this many (stores cap it at 100).
    pub limit: u32,
    /// Only those created before this delivery (the previous page's last).
    pub before: Option<DeliveryId>,
}

/// The longest page [`CallbackStore::list_deliveries`] returns.
pub const MAX_DELIVERY_PAGE: u32 = 100;

/// Webhook settings per key and deliveries per job.
///
/// Contract (checked by `testing::conformance::callback_store`):
/// - a job created with a callback has a pending delivery at once, which
///   [`claim_deliveries`](CallbackStore::claim_deliveries) returns only after
///   the job has ended (its last item finished, or cancelled), only when due,
///   and never to two claimers while its lease runs;
/// - [`record_attempt`](CallbackStore::record_attempt) counts the attempt and
///   applies the outcome only while the claim's lease holds;
/// - deleting the job deletes its delivery;
/// - settings are per owner; setting the URL keeps the secret and the
///   reverse.
#[async_trait]
pub trait CallbackStore: Send + Sync + fmt::Debug {
    /// The owner's settings (all empty when never set).
    async fn webhook_settings(&self, owner: &ApiKeyId) -> Result<WebhookSettings, StoreError>;

    /// Sets or clears the owner's default callback URL; returns the settings
    /// after.
    async fn set_default_callback(
        &self,
        owner: &ApiKeyId,
        url: Option<&CallbackUrl>,
    ) -> Result<WebhookSettings, StoreError>;

    /// Replaces the seed of the owner's signing secret; returns the settings
    /// after.
    async fn set_webhook_secret_seed(
        &self,
        owner: &ApiKeyId,
        seed: &str,
        at: DateTime<Utc>,
    ) -> Result<WebhookSettings, StoreError>;

    /// A job's delivery, if the job named a callback.
    async fn delivery(&self, job: JobId) -> Result<Option<Delivery>, StoreError>;

    /// Claims up to `limit` pending deliveries of ended jobs whose next
    /// attempt is due at `now` and that no live lease holds, oldest due
    /// first, each leased until `now + lease`.
    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DeliveryClaim>, StoreError>;

    /// Records one attempt of a claimed delivery at `at` (attempts + 1, the
    /// outcome, the lease released); `Ok(false)` and nothing changed when
    /// the claim's lease no longer holds it.
    async fn record_attempt(
        &self,
        claim: &DeliveryClaim,
        outcome: &AttemptOutcome,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Deliveries newest first.
    async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError>;
}
