//! The webhook deliverer: posts each ended job that named a callback URL to
//! it, signed, until the receiver takes it or the retry period ends.
//!
//! It reads the outbox of the job store
//! ([`CallbackStore`]) every
//! `WEBHOOK_POLL_MS`, claims due deliveries under a lease (so any number of
//! processes can run it, each delivery going to one of them at a time),
//! and for each one:
//!
//! 1. loads the job and its owner's secret ([`WebhookSecrets`]); a job or
//!    secret that is gone fails the delivery for good;
//! 2. posts the job document (as `GET /jobs/{id}` shows it), signed as
//!    [`image2model_core::callbacks`] says, with its delivery id, to the
//!    callback URL through a client that connects only to addresses the
//!    [`AddressPolicy`] permits, follows no redirect, gives up after
//!    `WEBHOOK_TIMEOUT_SECS` and reads at most [`MAX_ANSWER_BYTES`] of the
//!    answer;
//! 3. records the attempt: delivered on a 2xx; failed for good on a refused
//!    address; otherwise retried after an exponential backoff with jitter
//!    (`WEBHOOK_RETRY_INITIAL_MS` doubling up to `WEBHOOK_RETRY_MAX_SECS`)
//!    until `WEBHOOK_RETRY_FOR_SECS` after the job's end, then failed. A
//!    failed delivery is audited (`webhook_failed`) and counted.
//!
//! A crash at any point loses nothing: the claim's lease lapses and the
//! delivery is attempted again, with the same delivery id.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use image2model_core::callbacks::{
    ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, JOB_ENDED_EVENT, SIGNATURE_HEADER,
    signature_header,
};
use image2model_core::domain::Delivery;
use image2model_core::ports::{AttemptOutcome, CallbackStore, DeliveryClaim, JobStore};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::dto::JobView;
use crate::audit::Entry;
use crate::callbacks::address::{PolicyResolver, blocked_in};
use crate::callbacks::{AddressPolicy, WebhookSecrets};
use crate::config::WebhookConfig;
use crate::state::AppState;

/// The most of a receiver's answer read (for the error message).
pub const MAX_ANSWER_BYTES: usize = 4096;
/// Deliveries attempted at once by one process.
const CONCURRENT: usize = 16;

/// What one attempt came to, before it is recorded.
enum Sent {
    Delivered(u16),
    /// Failed for good (no retry can help).
    Refused(String),
    /// Failed; worth another try.
    Failed(String, Option<u16>),
}

/// Posts due deliveries (see the module docs).
#[derive(Debug, Clone)]
pub struct Deliverer {
    jobs: Arc<dyn JobStore>,
    outbox: Arc<dyn CallbackStore>,
    client: reqwest::Client,
    secrets: WebhookSecrets,
    addresses: Arc<AddressPolicy>,
    config: WebhookConfig,
    state: AppState,
}

impl Deliverer {
    /// The deliverer of `state`'s job store; `None` when the store keeps no
    /// callbacks.
    ///
    /// # Panics
    /// When the HTTP client cannot be built (no TLS backend).
    #[must_use]
    pub fn new(state: &AppState) -> Option<Self> {
        let jobs = state.pipeline.job_store().clone();
        let outbox = jobs.callbacks()?;
        let config = state.config.webhooks.clone();
        let addresses = state.webhook_addresses.clone();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver(addresses.clone())))
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout)
            .user_agent(concat!("image2model-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the webhook HTTP client builds");
        Some(Self {
            jobs,
            outbox,
            client,
            secrets: state.webhook_secrets.clone(),
            addresses,
            config,
            state: state.clone(),
        })
    }

    /// Runs until `shutdown`: reads the outbox every `WEBHOOK_POLL_MS` and
    /// attempts what is due (at once again while full batches come).
    pub async fn run(self, shutdown: CancellationToken) {
        // A claim outlives its attempt (the timeout) by a margin; a process
        // killed mid-attempt leaves it to another after that.
        let lease = self.config.timeout + Duration::from_secs(5);
        loop {
            let claims = match self
                .outbox
                .claim_deliveries(Utc::now(), lease, CONCURRENT as u32)
                .await
            {
                Ok(claims) => claims,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the webhook outbox failed");
                    Vec::new()
                }
            };
            let full = claims.len() == CONCURRENT;
            futures::stream::iter(claims)
                .for_each_concurrent(CONCURRENT, |claim| self.attempt(claim))
                .await;
            if full && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Attempts one claimed delivery and records the outcome.
    pub async fn attempt(&self, claim: DeliveryClaim) {
        let d = &claim.delivery;
        let (sent, ended_at) = self.send(d).await;
        let now = Utc::now();
        let outcome = match sent {
            Sent::Delivered(status_code) => AttemptOutcome::Delivered { status_code },
            Sent::Refused(error) => AttemptOutcome::Failed {
                error,
                status_code: None,
            },
            Sent::Failed(error, status_code) => {
                let next = now
                    + chrono::Duration::from_std(self.backoff(d.attempts + 1))
                        .unwrap_or(chrono::Duration::MAX);
                let give_up = ended_at.unwrap_or(d.created_at)
                    + chrono::Duration::from_std(self.config.retry_for)
                        .unwrap_or(chrono::Duration::MAX);
                if next > give_up {
                    AttemptOutcome::Failed {
                        error: format!("{error} (gave up after {} attempts)", d.attempts + 1),
                        status_code,
                    }
                } else {
                    AttemptOutcome::Retry {
                        error,
                        status_code,
                        next_attempt_at: next,
                    }
                }
            }
        };
        let label = match &outcome {
            AttemptOutcome::Delivered { .. } => "delivered",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("image2model_webhook_attempts_total", "outcome" => label).increment(1);
        match self.outbox.record_attempt(&claim, &outcome, now).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery_id = %d.delivery_id, "a webhook attempt outlived its lease");
                return;
            }
            Err(e) => {
                tracing::warn!(delivery_id = %d.delivery_id, error = %e, "recording a webhook attempt failed");
                return;
            }
        }
        tracing::info!(
            delivery_id = %d.delivery_id, job_id = %d.job_id, attempt = d.attempts + 1,
            outcome = label, "webhook attempt"
        );
        if let AttemptOutcome::Failed { error, status_code } = &outcome {
            self.state
                .audit(Entry::new("webhook_failed").actor(&d.owner).detail(json!({
                    "job_id": d.job_id.to_string(),
                    "delivery_id": d.delivery_id.to_string(),
                    "attempts": d.attempts + 1,
                    "status_code": status_code,
                    "error": error,
                })))
                .await;
        }
    }

    /// The wait after attempt `n` (from 1) failed: the initial wait doubled
    /// `n - 1` times, at most the maximum, of which a random half.
    fn backoff(&self, n: u32) -> Duration {
        let doubled = self
            .config
            .retry_initial
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(20));
        let full = doubled.min(self.config.retry_max);
        use rand::Rng;
        full / 2 + full.mul_f64(rand::rng().random::<f64>() / 2.0)
    }

    /// One post of `d`, and when its job ended.
    async fn send(&self, d: &Delivery) -> (Sent, Option<DateTime<Utc>>) {
        let job = match self.jobs.get_job(d.job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return (Sent::Refused("the job was deleted".into()), None),
            Err(e) => return (Sent::Failed(format!("reading the job: {e}"), None), None),
        };
        let ended_at = Some(job.updated_at);
        let seed = match self.outbox.webhook_settings(&d.owner).await {
            Ok(settings) => settings.secret_seed,
            Err(e) => {
                return (
                    Sent::Failed(format!("reading the key's secret: {e}"), None),
                    ended_at,
                );
            }
        };
        let Some(seed) = seed else {
            return (
                Sent::Refused("the key has no webhook secret".into()),
                ended_at,
            );
        };
        if let Err(blocked) = self.addresses.check_literal(d.url.url()) {
            return (Sent::Refused(blocked.to_string()), ended_at);
        }
        let secret = self.secrets.secret(&d.owner, &seed);
        let body = match serde_json::to_vec(&JobView {
            job: &job,
            admin: false,
        }) {
            Ok(body) => body,
            Err(e) => {
                return (
                    Sent::Failed(format!("writing the job document: {e}"), None),
                    ended_at,
                );
            }
        };
        let signature = signature_header(&secret, Utc::now().timestamp(), &body);
        let sent = self
            .client
            .post(d.url.url().clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, d.delivery_id.to_string())
            .header(EVENT_HEADER, JOB_ENDED_EVENT)
            .header(ATTEMPT_HEADER, (d.attempts + 1).to_string())
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                if let Some(blocked) = blocked_in(&e) {
                    return (Sent::Refused(blocked.to_string()), ended_at);
                }
                return (Sent::Failed(describe(&e), None), ended_at);
            }
        };
        let status = response.status();
        if status.is_success() {
            return (Sent::Delivered(status.as_u16()), ended_at);
        }
        let answer = read_bounded(response).await;
        let error = if status.is_redirection() {
            format!("HTTP {}: redirects are not followed", status.as_u16())
        } else if answer.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("HTTP {}: {answer}", status.as_u16())
        };
        (Sent::Failed(error, Some(status.as_u16())), ended_at)
    }
}

/// At most [`MAX_ANSWER_BYTES`] of an answer, as text on one line, at most
/// 200 characters.
async fn read_bounded(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_ANSWER_BYTES);
    String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// A transport error in words, with its causes (no URL: its query may hold
/// a receiver's token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    match causes.last() {
        Some(root) => format!("{what}: {root}"),
        None => what.to_owned(),
    }
}
