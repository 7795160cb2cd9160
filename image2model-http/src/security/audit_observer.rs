//! The audit observer: the request gate's step that records refused API
//! requests (401, 403 to a presented key, 429) in the audit trail
//! ([`crate::audit`]).
//!
//! The gate consults it outside the error envelope and the rate limiter, so
//! it sees the final status of every request whichever step refused it (the
//! security schemes, poem's bare 401 when no credentials are sent, or the
//! rate limiter), without those steps knowing about auditing.

use std::net::IpAddr;
use std::sync::Arc;

use image2model_core::ports::{AuditLog, AuthPolicy};
use poem::Request;
use poem::http::{HeaderValue, Method, StatusCode, Uri, header};
use secrecy::SecretString;
use serde_json::json;

use super::client_ip::ClientIpResolver;
use crate::audit::{self, Entry, fingerprint, kind};

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
/// responses of the API in the audit trail (see the module docs).
#[derive(Debug, Clone)]
pub struct AuditObserver {
    log: Arc<dyn AuditLog>,
    clients: ClientIpResolver,
    /// To name the key of a 403 by its id (the key is valid, only its role
    /// falls short).
    auth: Arc<dyn AuthPolicy>,
}

impl AuditObserver {
    /// An observer recording into `log`, resolving client addresses with
    /// `clients` and naming the keys of 403s through `auth`.
    #[must_use]
    pub fn new(
        log: Arc<dyn AuditLog>,
        clients: ClientIpResolver,
        auth: Arc<dyn AuthPolicy>,
    ) -> Self {
        Self { log, clients, auth }
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
    /// Starts observing `req`: `None` outside the API, which is never
    /// audited.
    #[must_use]
    pub fn observe(&self, req: &Request) -> Option<Observed> {
        if !super::headers::is_api(req.uri().path()) {
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
        match status {
            StatusCode::UNAUTHORIZED => {
                metrics::counter!("image2model_auth_failures_total", "reason" => reason)
                    .increment(1);
            }
            StatusCode::TOO_MANY_REQUESTS => {
                metrics::counter!("image2model_rate_limited_total").increment(1);
            }
            _ => {}
        }
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
            audit::record(self.log.as_ref(), entry.client_ip(observed.client_ip)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
