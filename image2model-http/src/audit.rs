//! The audit trail: security-relevant events as structured `tracing` events
//! (target `audit`) and as rows of the job store's
//! [`AuditLog`], readable through
//! `GET /api/v1/admin/audit`.
//!
//! Recorded kinds ([`kind`]): `auth_failed`, `forbidden`, `rate_limited`
//! (by the request gate's observer,
//! [`crate::security::audit_observer::AuditObserver`], from the final
//! response status), and `key_created`, `key_revoked`,
//! `key_limits_changed`, `job_deleted`,
//! `cleanup` (by the admin handlers and the cleanup task), `quota_exceeded`
//! and `quota_nearly_used` (by the upload handler) (all through
//! [`crate::state::AppState::audit`]). Every one goes through [`record`].
//!
//! No secret ever goes into an event: a presented key is represented at most
//! by [`fingerprint`], the first 12 hex digits of its SHA-256, which is enough
//! to tell repeated attempts with the same key apart and useless for
//! recovering it (keys created here carry 192 random bits).

use std::net::IpAddr;

use chrono::Utc;
use image2model_core::domain::ApiKeyId;
use image2model_core::ports::{AuditEvent, AuditLog};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::request_id;

/// The audit event kinds.
pub mod kind {
    /// A request to a protected route without a valid key (401).
    pub const AUTH_FAILED: &str = "auth_failed";
    /// A valid key without the needed role (403).
    pub const FORBIDDEN: &str = "forbidden";
    /// A request refused by a rate limit (429).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// An API key was created.
    pub const KEY_CREATED: &str = "key_created";
    /// An API key was revoked.
    pub const KEY_REVOKED: &str = "key_revoked";
    /// An API key's limits were changed.
    pub const KEY_LIMITS_CHANGED: &str = "key_limits_changed";
    /// An admin removed a job.
    pub const JOB_DELETED: &str = "job_deleted";
    /// Old jobs and files were removed (or would be, in a dry run).
    pub const CLEANUP: &str = "cleanup";
    /// An upload was refused because it would pass its key's limit.
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    /// An upload took its key past 80 % of one of its limits.
    pub const QUOTA_NEARLY_USED: &str = "quota_nearly_used";
}

/// The first 12 hex digits of the SHA-256 of a presented key: a way to
/// recognise repeated attempts with one key, never the key itself.
#[must_use]
pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..6])
}

/// An audit event being built; [`record`] stamps it with the time and the
/// current request id, logs it and stores it.
#[derive(Debug, Clone)]
pub struct Entry {
    kind: &'static str,
    actor: Option<ApiKeyId>,
    client_ip: Option<IpAddr>,
    detail: Value,
}

impl Entry {
    /// An event of `kind` (one of [`kind`]) with no details yet.
    #[must_use]
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            actor: None,
            client_ip: None,
            detail: json!({}),
        }
    }

    /// The key that acted.
    #[must_use]
    pub fn actor(mut self, actor: &ApiKeyId) -> Self {
        self.actor = Some(actor.clone());
        self
    }

    /// The client's address.
    #[must_use]
    pub fn client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    /// Details: ids, counts, reasons. Never a secret.
    #[must_use]
    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    /// The stored form, at `now`, for the current request.
    fn into_event(self) -> AuditEvent {
        let request_id = Some(request_id::current()).filter(|id| id != "-");
        AuditEvent {
            at: Utc::now(),
            kind: self.kind.to_owned(),
            actor: self.actor,
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            request_id,
            detail: self.detail,
        }
    }
}

/// Records `entry`: a structured `tracing` event (target `audit`) and a row
/// of `log`, stamped with the time and the current request id. A storage
/// failure is logged, never returned: auditing must not turn a request into
/// an error.
pub async fn record(log: &dyn AuditLog, entry: Entry) {
    let event = entry.into_event();
    tracing::info!(
        target: "audit",
        kind = %event.kind,
        actor = event.actor.as_ref().map(|a| a.as_str()),
        client_ip = event.client_ip.as_deref(),
        request_id = event.request_id.as_deref(),
        detail = %event.detail,
        "audit event"
    );
    if let Err(e) = log.record(event).await {
        tracing::error!(error = %e, "could not store an audit event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_short_stable_and_not_the_key() {
        let key = "i2m_0123456789abcdef0123456789abcdef0123456789abcdef";
        let f = fingerprint(key);
        assert_eq!(f.len(), 12);
        assert_eq!(f, fingerprint(key));
        assert_ne!(f, fingerprint("i2m_other"));
        assert!(!key.contains(&f));
    }
}
