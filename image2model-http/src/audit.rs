//! The audit trail: security-relevant events as structured `tracing` events
//! (target `audit`) and as rows of the job store's
//! [`AuditLog`](image2model_core::ports::AuditLog), readable through
//! `GET /api/v1/admin/audit`.
//!
//! Recorded kinds ([`kind`]): `auth_failed`, `forbidden`, `rate_limited`
//! (by [`AuditObserver`], from the final response status), and `key_created`,
//! `key_revoked`, `job_deleted`, `cleanup` (by the admin handlers and the
//! cleanup task, through [`crate::AppState::audit`]).
//!
//! No secret ever goes into an event: a presented key is represented at most
//! by [`fingerprint`], the first 12 hex digits of its SHA-256, which is enough
//! to tell repeated attempts with the same key apart and useless for
//! recovering it (keys created here carry 192 random bits).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Utc;
use image2model_core::domain::ApiKeyId;
use image2model_core::ports::{AuditEvent, AuthPolicy};
use poem::Request;
use poem::http::{HeaderValue, Method, StatusCode, Uri, header};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::security::client_ip::ClientIpResolver;
use crate::security::request_id;

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
    /// An admin removed a job.
    pub const JOB_DELETED: &str = "job_deleted";
    /// Old jobs and files were removed (or would be, in a dry run).
    pub const CLEANUP: &str = "cleanup";
}

/// The first 12 hex digits of the SHA-256 of a presented key: a way to
/// recognise repeated attempts with one key, never the key itself.
#[must_use]
pub fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..6])
}

/// An audit event being built; [`crate::AppState::audit`] stamps it with the
/// time and the current request id, logs it and stores it.
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
    pub(crate) fn into_event(self) -> AuditEvent {
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

/// Why a request without a valid key was refused, from its `Authorization`
/// header alone (the key itself is never kept).
fn auth_failure(authorization: Option<&HeaderValue>) -> (&'static str, Option<&str>) {
    let Some(value) = authorization else {
        return ("missing_credentials", None);
    };
    let Ok(text) = value.to_str() else {
        return ("malformed_credentials", None);
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return ("malformed_credentials", None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return ("malformed_credentials", None);
    }
    ("unknown_or_revoked_key", Some(token))
}

/// Records `auth_failed` (401), `forbidden` (403) and `rate_limited` (429)
/// responses of `/api/v1` in the audit trail.
///
/// The request gate ([`crate::security::gate`]) consults it outside the error
/// envelope and the rate limiter, so it sees the final status of every
/// request whichever step refused it (the security schemes, poem's bare 401
/// when no credentials are sent, or the rate limiter), without those steps
/// knowing about auditing.
#[derive(Debug, Clone)]
pub struct AuditObserver {
    state: AppState,
    clients: ClientIpResolver,
    /// To name the key of a 403 by its id (the key is valid, only its role
    /// falls short).
    auth: Arc<dyn AuthPolicy>,
}

impl AuditObserver {
    /// An observer recording into `state`'s audit trail, resolving client
    /// addresses with `clients` and naming the keys of 403s through `auth`.
    #[must_use]
    pub fn new(state: AppState, clients: ClientIpResolver, auth: Arc<dyn AuthPolicy>) -> Self {
        Self {
            state,
            clients,
            auth,
        }
    }
}

/// What [`AuditObserver::observe`] keeps of a request until its status is
/// known: cheap copies (shared buffers), formatted only if the request is
/// audited.
#[derive(Debug)]
pub struct Observed {
    uri: Uri,
    method: Method,
    authorization: Option<HeaderValue>,
    client_ip: Option<IpAddr>,
}

impl AuditObserver {
    /// Starts observing `req`: `None` outside `/api/v1`, which is never
    /// audited.
    #[must_use]
    pub fn observe(&self, req: &Request) -> Option<Observed> {
        if !crate::security::headers::is_api(req.uri().path()) {
            return None;
        }
        Some(Observed {
            uri: req.uri().clone(),
            method: req.method().clone(),
            authorization: req.headers().get(header::AUTHORIZATION).cloned(),
            client_ip: self.clients.client_ip(req),
        })
    }

    /// Records the observed request if its final status is 401, 403 (to a
    /// presented key) or 429.
    pub async fn record(&self, observed: Observed, status: StatusCode) {
        if !matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        ) {
            return;
        }
        let (reason, token) = auth_failure(observed.authorization.as_ref());
        let token = token.map(ToOwned::to_owned);
        let base = json!({ "method": observed.method.as_str(), "path": observed.uri.path() });
        let entry = match status {
            StatusCode::UNAUTHORIZED => {
                let mut detail = base;
                detail["reason"] = json!(reason);
                if let Some(t) = &token {
                    detail["key_fingerprint"] = json!(fingerprint(t));
                }
                Some(Entry::new(kind::AUTH_FAILED).detail(detail))
            }
            // Only a 403 to a presented key is a role refusal (a refused
            // CORS preflight carries no key).
            StatusCode::FORBIDDEN if token.is_some() => {
                let mut entry = Entry::new(kind::FORBIDDEN);
                // The key is valid, only its role falls short: name it by its id.
                if let Some(t) = &token
                    && let Ok(Some(p)) =
                        self.auth.authenticate(&SecretString::from(t.clone())).await
                {
                    entry = entry.actor(&p.key_id);
                }
                Some(entry.detail(base))
            }
            StatusCode::TOO_MANY_REQUESTS => Some(Entry::new(kind::RATE_LIMITED).detail(base)),
            _ => None,
        };
        if let Some(entry) = entry {
            self.state.audit(entry.client_ip(observed.client_ip)).await;
        }
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

    #[test]
    fn failures_are_classified_from_the_header() {
        let req = |h: Option<&str>| h.map(|h| HeaderValue::from_str(h).unwrap());
        assert_eq!(auth_failure(req(None).as_ref()).0, "missing_credentials");
        assert_eq!(
            auth_failure(req(Some("Basic abc")).as_ref()).0,
            "malformed_credentials"
        );
        assert_eq!(
            auth_failure(req(Some("Bearer ")).as_ref()).0,
            "malformed_credentials"
        );
        assert_eq!(
            auth_failure(req(Some("Bearer wrong")).as_ref()),
            ("unknown_or_revoked_key", Some("wrong"))
        );
    }
}
