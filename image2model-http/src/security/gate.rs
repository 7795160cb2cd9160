//! The request gate: every step between the accept loop and the routes, in
//! two endpoints instead of one poem middleware per step.
//!
//! The steps, outermost first:
//!
//! 1. [`Gate`]: the request id and its span ([`request_id`]), the security
//!    headers ([`headers`]), the host check ([`hosts`]), the audit observer
//!    ([`audit_observer`]) and the error envelope
//!    ([`enveloped`]) over everything below.
//! 2. CORS, when `CORS_ORIGINS` names origins (poem's
//!    [`poem::middleware::Cors`]).
//! 3. [`Admission`]: the rate limit ([`rate_limit`]), the body limit
//!    ([`body_limit`]), the handlers' shared data (the app state) and the
//!    authenticator in the request's extensions, the routes (where the security schemes of
//!    [`super::auth`] run per operation), and the error envelope again, so
//!    that the rate limit headers go on the final response.
//!
//! Why not one middleware per step: each poem middleware wraps the future of
//! the next, so a request's future was eleven nested state machines (17 KB
//! with CORS and the Redis rate limit inlined), copied as each was built and
//! boxed. See `docs/BENCHMARKS.md`.
//!
//! [`request_id`]: crate::request_id
//! [`audit_observer`]: super::audit_observer
//! [`headers`]: super::headers
//! [`hosts`]: super::hosts
//! [`rate_limit`]: super::rate_limit
//! [`body_limit`]: super::body_limit

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use poem::endpoint::BoxEndpoint;
use poem::{Endpoint, IntoResponse, Request, Response};

use super::audit_observer::AuditObserver;
use super::auth::Authenticator;
use super::body_limit::BodyLimit;
use super::client_ip::{ClientIp, ClientIpResolver};
use super::headers::SecurityHeaders;
use super::hosts::HostCheck;
use super::rate_limit::RateLimits;
use crate::error::enveloped;
use crate::request_id::{self, RequestContext, RequestId};

/// The outer endpoint (step 1 of the module docs) around [`Admission`].
///
/// Without CORS the admission is called directly, so that its future is part
/// of this one; the CORS endpoint, when there is one, is boxed, so that it
/// does not double the size of every request's future.
pub struct Gate<E, D> {
    /// The admission.
    pub admission: Arc<Admission<E, D>>,
    /// The admission behind CORS, when `CORS_ORIGINS` names origins.
    pub cors: Option<BoxEndpoint<'static>>,
    /// Whether responses carry HSTS (production).
    pub hsts: bool,
    /// The served host names.
    pub hosts: HostCheck,
    /// Records refused API requests.
    pub audit: AuditObserver,
    /// Resolves each request's client IP once (see [`ClientIp`]).
    pub clients: ClientIpResolver,
}

impl<E: Endpoint, D: Clone + Send + Sync + 'static> Endpoint for Gate<E, D> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let id = request_id::resolve(&req);
        req.extensions_mut().insert(RequestId(id.clone()));
        let client_ip = self.clients.resolve(&req);
        if let Some(ip) = client_ip {
            req.extensions_mut().insert(ClientIp(ip));
        }
        let context = RequestContext::new(id.clone(), &req, client_ip);
        let method = req.method().clone();
        let headers = SecurityHeaders::for_path(req.uri().path(), self.hsts);
        let started = Instant::now();
        let mut resp = request_id::scope(context, async {
            let resp = self.guarded(req).await;
            let elapsed = started.elapsed();
            request_id::log_response(&method, resp.status().as_u16(), elapsed);
            resp
        })
        .await;
        headers.apply(&mut resp);
        request_id::set_header(&mut resp, &id);
        Ok(resp)
    }
}

impl<E, D> fmt::Debug for Gate<E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("cors", &self.cors.is_some())
            .field("hsts", &self.hsts)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl<E: Endpoint, D: Clone + Send + Sync + 'static> Gate<E, D> {
    /// The host check, then `inner` under the envelope and the audit observer.
    async fn guarded(&self, req: Request) -> Response {
        if let Err(refused) = self.hosts.admit(&req) {
            return refused.to_response();
        }
        let observed = self.audit.observe(&req);
        let resp = match &self.cors {
            Some(cors) => enveloped(cors.call(req).await),
            None => enveloped(self.admission.call(req).await),
        };
        if let Some(observed) = observed {
            self.audit.record(observed, resp.status()).await;
        }
        resp
    }
}

/// The inner endpoint (step 3 of the module docs) around the routes.
///
/// `D` is the handlers' shared data (the app's `AppState`), inserted into
/// each admitted request's extensions; the gate does not look into it.
#[derive(Debug)]
pub struct Admission<E, D> {
    /// The routes.
    pub routes: E,
    /// The rate limits.
    pub limits: RateLimits,
    /// The bound on non-upload bodies.
    pub body_limit: BodyLimit,
    /// What handlers read as `Data<&D>`.
    pub data: D,
    /// What the security schemes read as `Data<&Authenticator>`.
    pub authenticator: Authenticator,
}

impl<E: Endpoint, D: Clone + Send + Sync + 'static> Endpoint for Admission<E, D> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let decision = match self.limits.admit(&req).await {
            Ok(decision) => decision,
            Err(refused) => return Ok(refused),
        };
        let mut resp = match self.body_limit.admit(&mut req).await {
            Ok(()) => {
                req.extensions_mut().insert(self.data.clone());
                req.extensions_mut().insert(self.authenticator.clone());
                enveloped(self.routes.call(req).await.map(IntoResponse::into_response))
            }
            Err(refused) => refused,
        };
        RateLimits::report(decision.as_ref(), &mut resp);
        Ok(resp)
    }
}
