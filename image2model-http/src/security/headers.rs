//! Security headers on every response.
//!
//! - `X-Content-Type-Options: nosniff`: browsers must not guess a type (a
//!   downloaded model is never run as script or HTML).
//! - `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`: no framing
//!   (clickjacking).
//! - `Referrer-Policy: no-referrer`: job URLs never leak to other sites.
//! - `Content-Security-Policy`: the API forbids everything
//!   (`default-src 'none'`); the page allows only its own files (no inline
//!   script); `/docs` (Swagger UI, which is one HTML page with inline script
//!   and styles) gets its own, still same-origin-only, policy.
//! - `Cache-Control: no-store` under `/api/v1`: job data and models are
//!   private and must not sit in shared caches.
//! - `Strict-Transport-Security` in production.

use poem::http::{HeaderValue, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// The API's policy.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The web page's policy: its own files only, no inline script.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Swagger UI's policy: it is a single page with inline script and styles.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Middleware adding the headers.
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    /// Whether to send HSTS.
    pub hsts: bool,
}

impl<E: Endpoint> Middleware<E> for SecurityHeaders {
    type Output = SecurityHeadersEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        SecurityHeadersEndpoint {
            inner: ep,
            hsts: self.hsts,
        }
    }
}

/// The endpoint made by [`SecurityHeaders`].
#[derive(Debug)]
pub struct SecurityHeadersEndpoint<E> {
    inner: E,
    hsts: bool,
}

/// Which policy a path gets.
#[must_use]
pub fn csp_for(path: &str) -> &'static str {
    if path == "/docs" || path.starts_with("/docs/") {
        DOCS_CSP
    } else if path == "/" || path.starts_with("/static/") {
        PAGE_CSP
    } else {
        API_CSP
    }
}

impl<E: Endpoint> Endpoint for SecurityHeadersEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path().to_owned();
        let mut resp = match self.inner.call(req).await {
            Ok(r) => r.into_response(),
            Err(e) => crate::api::error::envelope(e),
        };
        let h = resp.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp_for(&path)),
        );
        if path == "/api/v1" || path.starts_with("/api/v1/") {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if self.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            );
        }
        Ok(resp)
    }
}
