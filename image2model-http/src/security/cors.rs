//! CORS: only the exact origins of `BACKEND_CORS_ORIGINS`.
//!
//! With no origin configured no CORS layer is installed at all, so browsers
//! keep the same-origin policy (poem's `Cors` with an empty list would allow
//! every origin). A preflight from an unlisted origin gets no
//! `Access-Control-Allow-Origin` (poem answers it with 403).

use poem::http::Method;
use poem::middleware::Cors;

/// The CORS middleware for these origins, or `None` when there are none.
#[must_use]
pub fn cors(origins: &[String]) -> Option<Cors> {
    let exact: Vec<&str> = origins
        .iter()
        .map(String::as_str)
        .filter(|o| *o != "*")
        .collect();
    if exact.is_empty() {
        return None;
    }
    Some(
        Cors::new()
            .allow_origins(exact)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                "authorization",
                "content-type",
                "idempotency-key",
                "x-request-id",
            ])
            .expose_headers([
                "x-request-id",
                "retry-after",
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "content-disposition",
            ])
            .allow_credentials(false)
            .max_age(600),
    )
}
