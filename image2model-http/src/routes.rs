//! The paths: [`API_PREFIX`], the one place the API's prefix is written
//! (every URL under it is built from it or matched with [`api_path`]), the
//! API paths other layers single out, and the paths outside the API.
//!
//! And the top of the routes: the API prefix straight to the API,
//! everything else through a poem [`Route`].
//!
//! A poem `Route` with the API nested in it (`.nest("/api/v1", api)`) costs
//! every API request a tree match, a path pattern built and stored in the
//! request and the response, and two boxed endpoint calls, each moving the
//! request, before the API's own route tree does the same again. [`Routes`]
//! does what the nest did with a prefix test: `/api/v1` and
//! `/api/v1/...` go to the API with the prefix stripped from the URI (the
//! query kept), except the paths of `other` under the prefix (the OpenAPI
//! document), which, as in a `Route`, an exact path wins over the nest.

use poem::http::Uri;
use poem::http::uri::PathAndQuery;
use poem::{Endpoint, IntoResponse, Request, Response, Route};

/// Where the API is served.
pub const API_PREFIX: &str = "/api/v1";

/// The OpenAPI document's path in the API (under [`API_PREFIX`]); the other
/// routes serve it (see [`Routes::exact`]).
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The upload operation's path in the API (under [`API_PREFIX`]): it draws
/// from the upload rate-limit bucket and bounds its own body.
pub const UPLOAD_PATH: &str = "/upload";

/// Where fal's webhooks arrive (outside the API: fal cannot send a bearer
/// key; the signature authenticates them, see [`crate::webhooks`]).
pub const FAL_WEBHOOK_PATH: &str = "/webhooks/fal";

/// `/api/v1` to `api`, the rest to `other` (see the module docs).
pub struct Routes<A> {
    /// The API (paths relative to [`API_PREFIX`]).
    pub api: A,
    /// Every other path, and the paths of `exact` under the prefix.
    pub other: Route,
    /// Paths in the API (as [`api_path`] gives them) that `other` serves,
    /// under the prefix, instead of the API.
    pub exact: &'static [&'static str],
}

impl<A> std::fmt::Debug for Routes<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("exact", &self.exact)
            .finish_non_exhaustive()
    }
}

/// The path `path` has in the API, if it is under [`API_PREFIX`]: `/` for
/// the prefix itself.
#[must_use]
pub fn api_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(API_PREFIX)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

impl<A: Endpoint> Endpoint for Routes<A> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        match api_path(req.uri().path()) {
            Some(path) if !self.exact.contains(&path) => {}
            _ => return self.other.call(req).await,
        }
        strip_prefix(req.uri_mut());
        self.api.call(req).await.map(IntoResponse::into_response)
    }
}

/// Removes [`API_PREFIX`] from `uri`'s path (which has it), keeping the query.
fn strip_prefix(uri: &mut Uri) {
    let mut parts = std::mem::take(uri).into_parts();
    if let Some(old) = parts.path_and_query.take() {
        let rest = api_path(old.path()).unwrap_or("/");
        let new = match old.query() {
            Some(query) => PathAndQuery::try_from(format!("{rest}?{query}")),
            None => PathAndQuery::try_from(rest),
        };
        // A part of a valid path and query is valid: the fallback is never
        // taken.
        parts.path_and_query = Some(new.unwrap_or(old));
    }
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_found_under_the_prefix_only() {
        assert_eq!(api_path("/api/v1"), Some("/"));
        assert_eq!(api_path("/api/v1/"), Some("/"));
        assert_eq!(api_path("/api/v1/jobs/x"), Some("/jobs/x"));
        assert_eq!(api_path("/api/v10/jobs"), None);
        assert_eq!(api_path("/api/v1x"), None);
        assert_eq!(api_path("/api"), None);
        assert_eq!(api_path("/"), None);
    }

    #[test]
    fn stripping_keeps_the_query_and_the_authority() {
        let mut uri: Uri = "/api/v1/jobs/a?limit=5&x=%20".parse().unwrap();
        strip_prefix(&mut uri);
        assert_eq!(uri.to_string(), "/jobs/a?limit=5&x=%20");
        let mut uri: Uri = "/api/v1?q".parse().unwrap();
        strip_prefix(&mut uri);
        assert_eq!(uri.to_string(), "/?q");
        let mut uri: Uri = "http://h:8/api/v1/x".parse().unwrap();
        strip_prefix(&mut uri);
        assert_eq!(uri.to_string(), "http://h:8/x");
    }
}
