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

use poem::Response;
use poem::http::{HeaderValue, header};

/// The API's policy.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// The web page's policy: its own files only, no inline script.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Swagger UI's policy: it is a single page with inline script and styles.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Which headers a path gets (decided before the request runs, so that no
/// copy of the path is kept while it does).
#[derive(Debug, Clone, Copy)]
pub struct SecurityHeaders {
    csp: &'static str,
    no_store: bool,
    hsts: bool,
}

/// Whether `path` is under the API (`/api/v1`).
#[must_use]
pub fn is_api(path: &str) -> bool {
    crate::routes::api_path(path).is_some()
}

/// The policy for a path.
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

impl SecurityHeaders {
    /// The headers of a response to `path`; `hsts` in production.
    #[must_use]
    pub fn for_path(path: &str, hsts: bool) -> Self {
        Self {
            csp: csp_for(path),
            no_store: is_api(path),
            hsts,
        }
    }

    /// Sets them on `resp`.
    pub fn apply(self, resp: &mut Response) {
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
            HeaderValue::from_static(self.csp),
        );
        if self.no_store {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if self.hsts {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            );
        }
    }
}
