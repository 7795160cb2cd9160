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
//!
//! A **405** from either side gets the `Allow` header RFC 9110 requires,
//! listing the methods its path has ([`AllowTable`]): poem's method router
//! answers 405 without it.

use poem::http::uri::PathAndQuery;
use poem::http::{HeaderValue, Method, StatusCode, Uri, header};
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
    /// The methods of every path, for the `Allow` header of a 405 (full
    /// paths, the API's under [`API_PREFIX`]).
    pub allow: AllowTable,
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
        // Kept for a 405's `Allow` only: a cheap copy (shared bytes).
        let uri = req.uri().clone();
        let result = match api_path(req.uri().path()) {
            Some(path) if !self.exact.contains(&path) => {
                strip_prefix(req.uri_mut());
                self.api.call(req).await.map(IntoResponse::into_response)
            }
            _ => self.other.call(req).await,
        };
        self.allow.complete(uri.path(), result)
    }
}

/// One segment of a route's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matched as written.
    Static(String),
    /// A path parameter (`:name` or `{name}`): any one segment.
    Param,
}

/// The methods each route's path has, to tell a client in `Allow` what a
/// 405 refused it in favour of (RFC 9110, section 15.5.6).
///
/// Built from the routes themselves: the API's from its OpenAPI meta
/// ([`AllowTable::add_api`]), the others as they are mounted. A path with
/// `GET` also has `HEAD`, which poem answers from the `GET` route.
#[derive(Debug, Clone, Default)]
pub struct AllowTable {
    routes: Vec<(Vec<Segment>, Vec<Method>)>,
}

impl AllowTable {
    /// Records that `path` (a route pattern: `/jobs/:job_id` or
    /// `/jobs/{job_id}`) has `method`.
    pub fn add(&mut self, path: &str, method: Method) {
        let segments = segments(path)
            .map(|s| {
                if s.starts_with(':') || (s.starts_with('{') && s.ends_with('}')) {
                    Segment::Param
                } else {
                    Segment::Static(s.to_owned())
                }
            })
            .collect::<Vec<_>>();
        let methods = match self.routes.iter_mut().find(|(p, _)| *p == segments) {
            Some((_, methods)) => methods,
            None => {
                self.routes.push((segments, Vec::new()));
                &mut self.routes.last_mut().expect("just pushed").1
            }
        };
        if !methods.contains(&method) {
            methods.push(method);
        }
    }

    /// Records every operation of an OpenAPI service's `meta`, under `prefix`.
    pub fn add_api(&mut self, prefix: &str, meta: &[poem_openapi::registry::MetaApi]) {
        for path in meta.iter().flat_map(|api| &api.paths) {
            for op in &path.operations {
                self.add(&format!("{prefix}{}", path.path), op.method.clone());
            }
        }
    }

    /// The `Allow` value of `path`: its route's methods (the most specific
    /// route, a static segment winning over a parameter, as poem routes),
    /// `HEAD` after `GET`; `None` when no route has this path.
    #[must_use]
    pub fn allow(&self, path: &str) -> Option<String> {
        let wanted: Vec<&str> = segments(path).collect();
        let (_, methods) = self
            .routes
            .iter()
            .filter(|(route, _)| {
                route.len() == wanted.len()
                    && route
                        .iter()
                        .zip(&wanted)
                        .all(|(segment, text)| match segment {
                            Segment::Static(s) => s == text,
                            Segment::Param => true,
                        })
            })
            .max_by_key(|(route, _)| {
                route
                    .iter()
                    .map(|s| matches!(s, Segment::Static(_)))
                    .collect::<Vec<_>>()
            })?;
        let mut names = Vec::with_capacity(methods.len() + 1);
        for method in methods {
            names.push(method.as_str());
            if *method == Method::GET && !methods.contains(&Method::HEAD) {
                names.push(Method::HEAD.as_str());
            }
        }
        Some(names.join(", "))
    }

    /// `result` with, on a 405, the `Allow` header of `path` (the error
    /// rendered as the envelope, as the gate would have); anything else as
    /// it is.
    ///
    /// # Errors
    /// The errors of `result` other than a 405.
    pub fn complete(&self, path: &str, result: poem::Result<Response>) -> poem::Result<Response> {
        let mut resp = match result {
            Err(err) if err.status() == StatusCode::METHOD_NOT_ALLOWED => {
                crate::error::envelope(err)
            }
            Ok(resp) if resp.status() == StatusCode::METHOD_NOT_ALLOWED => resp,
            other => return other,
        };
        if !resp.headers().contains_key(header::ALLOW)
            && let Some(value) = self
                .allow(path)
                .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            resp.headers_mut().insert(header::ALLOW, value);
        }
        Ok(resp)
    }
}

/// The segments of a path, without its leading slash.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.strip_prefix('/').unwrap_or(path).split('/')
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
    fn allow_lists_the_methods_of_the_most_specific_route() {
        let mut table = AllowTable::default();
        table.add("/jobs/:job_id", Method::GET);
        table.add("/jobs/{job_id}", Method::DELETE);
        table.add("/jobs/latest", Method::POST);
        table.add("/upload", Method::POST);
        table.add("/upload", Method::GET);
        table.add("/upload", Method::POST);
        assert_eq!(table.allow("/jobs/x").as_deref(), Some("GET, HEAD, DELETE"));
        assert_eq!(table.allow("/jobs/latest").as_deref(), Some("POST"));
        assert_eq!(table.allow("/upload").as_deref(), Some("POST, GET, HEAD"));
        assert_eq!(table.allow("/jobs"), None);
        assert_eq!(table.allow("/jobs/x/y"), None);
    }

    #[test]
    fn only_a_405_gets_allow() {
        let mut table = AllowTable::default();
        table.add("/health", Method::GET);
        let resp = table
            .complete("/health", Err(poem::error::MethodNotAllowedError.into()))
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
        let resp = table
            .complete("/health", Ok(Response::builder().finish()))
            .unwrap();
        assert!(!resp.headers().contains_key(header::ALLOW));
        let err = table
            .complete("/health", Err(poem::error::NotFoundError.into()))
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
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
