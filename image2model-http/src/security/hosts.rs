//! The `Host` check: with `ALLOWED_HOSTS` set (required in production), a
//! request for any other host is **400** `invalid_host`. This stops DNS
//! rebinding and poisoned absolute links built from `Host`.

use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::api::error::ApiError;

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
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl<E: Endpoint> Middleware<E> for HostCheck {
    type Output = HostCheckEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HostCheckEndpoint {
            inner: ep,
            check: self.clone(),
        }
    }
}

/// The endpoint made by [`HostCheck`].
#[derive(Debug)]
pub struct HostCheckEndpoint<E> {
    inner: E,
    check: HostCheck,
}

impl<E: Endpoint> Endpoint for HostCheckEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let host = req
            .headers()
            .get(poem::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().host());
        if !self.check.allows(host) {
            return Err(
                ApiError::bad_request("invalid_host", "this host is not served here").into(),
            );
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
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
