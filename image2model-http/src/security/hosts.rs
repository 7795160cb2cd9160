//! The `Host` check: with `ALLOWED_HOSTS` set (required in production), a
//! request for any other host is **400** `invalid_host`. This stops DNS
//! rebinding and poisoned absolute links built from `Host`.

use image2model_core::ErrorCode;
use poem::Request;

use crate::error::ApiError;

/// Middleware refusing unknown hosts. An empty list allows every host.
#[derive(Debug, Clone, Default)]
pub struct HostCheck {
    allowed: Vec<String>,
}

impl HostCheck {
    /// Allows these host names (compared without port, case-insensitively).
    #[must_use]
    pub fn new(allowed: Vec<String>) -> Self {
        Self {
            allowed: allowed
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a `Host` header value is allowed.
    #[must_use]
    pub fn allows(&self, host: Option<&str>) -> bool {
        if self.allowed.is_empty() {
            return true;
        }
        let Some(host) = host else { return false };
        let name = strip_port(host.trim()).to_ascii_lowercase();
        self.allowed.contains(&name)
    }
}

/// `example.com:8000` → `example.com`; `[::1]:8000` → `[::1]`.
impl HostCheck {
    /// Whether `req` names a served host (its `Host` header, or the host of
    /// an absolute URI); the refusal otherwise (`400 invalid_host`).
    ///
    /// # Errors
    /// The refusal.
    pub fn admit(&self, req: &Request) -> Result<(), ApiError> {
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().host());
        if self.allows(host) {
            Ok(())
        } else {
            Err(ApiError::of(
                ErrorCode::InvalidHost,
                "this host is not served here",
            ))
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_without_port_and_case() {
        let check = HostCheck::new(vec!["example.com".into()]);
        assert!(check.allows(Some("Example.COM:8443")));
        assert!(!check.allows(Some("evil.example")));
        assert!(!check.allows(None));
        assert!(HostCheck::default().allows(Some("anything")));
    }
}
