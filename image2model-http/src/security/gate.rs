//! The request gate: every step between the accept loop and the routes, in
//! two endpoints instead of one poem middleware per step.
//!
//! The steps, outermost first:
//!
//! 1. [`Gate`]: the request id and its span ([`request_id`]), the security
//!    headers ([`headers`]), the host check ([`hosts`]), the audit observer
//!    ([`audit_observer`]) and the error envelope ([`enveloped`]) over
//!    everything below.
//! 2. CORS, when `BACKEND_CORS_ORIGINS` names origins (poem's
//!    [`poem::middleware::Cors`]).
//! 3. [`Admission`]: the rate limit ([`rate_limit`]), the body limit
//!    ([`body_limit`]), the handlers' shared data (the app state) and the
//!    authenticator in the request's extensions, the routes (where the
//!    security schemes of [`super::auth`] run per operation), and the error
//!    envelope again, so that the rate limit headers go on the final
//!    response.
//!
//! # Why two endpoints, and how to change them safely
//!
//! This is a performance measure only. With one poem middleware per step,
//! each wraps the future of the next, so a request's future was eleven
//! nested state machines, copied as each was built and then boxed; merged
//! into two endpoints that the server runs in place, a job-status read costs
//! measurably less CPU (the figures are in `docs/BENCHMARKS.md`, "What
//! profiling found", item 8). Each step itself lives in its own module; the
//! gate only calls them in order.
//!
//! [`Steps`] holds the steps, and puts them together in one of two ways:
//! [`Steps::merged`] (the [`Gate`] above, the default) or
//! [`Steps::layered`], the same steps as one poem middleware each, in the
//! same order: the plain composition, slower but obvious. The
//! `REQUEST_GATE=layered` setting ([`GateMode`]) serves with the latter, so
//! a bug report can rule the gate out. To change a step, change its module;
//! to add, remove or reorder steps, change both compositions alike. The
//! tests run the whole API through each (`tests/api/switches.rs` and, with
//! `REQUEST_GATE` set in the environment, every test).
//!
//! [`request_id`]: crate::request_id
//! [`audit_observer`]: super::audit_observer
//! [`headers`]: super::headers
//! [`hosts`]: super::hosts
//! [`rate_limit`]: super::rate_limit
//! [`body_limit`]: super::body_limit

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use poem::endpoint::BoxEndpoint;
use poem::middleware::Cors;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};

use super::audit_observer::AuditObserver;
use super::auth::Authenticator;
use super::body_limit::BodyLimit;
use super::client_ip::{ClientIp, ClientIpResolver};
use super::headers::SecurityHeaders;
use super::hosts::HostCheck;
use super::rate_limit::RateLimits;
use crate::error::enveloped;
use crate::request_id::{self, RequestContext, RequestId, SpanMode};

/// How the steps are put together (`REQUEST_GATE`; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GateMode {
    /// Two endpoints run in place ([`Steps::merged`]): the default.
    #[default]
    Merged,
    /// One poem middleware per step ([`Steps::layered`]): slower, to rule
    /// the gate out.
    Layered,
}

impl GateMode {
    /// The text form (`merged` or `layered`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GateMode::Merged => "merged",
            GateMode::Layered => "layered",
        }
    }
}

impl FromStr for GateMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "merged" => Ok(GateMode::Merged),
            "layered" => Ok(GateMode::Layered),
            _ => Err(format!("{s:?} is neither merged nor layered")),
        }
    }
}

/// The gate's steps and what they need, before they are put together.
///
/// `E` is the routes; `D` is the handlers' shared data (the app's
/// `AppState`), inserted into each admitted request's extensions: the gate
/// does not look into it.
pub struct Steps<E, D> {
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
    /// CORS, when `BACKEND_CORS_ORIGINS` names origins.
    pub cors: Option<Cors>,
    /// Whether responses carry HSTS (production).
    pub hsts: bool,
    /// The served host names.
    pub hosts: HostCheck,
    /// Records refused API requests.
    pub audit: AuditObserver,
    /// Resolves each request's client IP once (see [`ClientIp`]).
    pub clients: ClientIpResolver,
    /// How each request's span is made (`REQUEST_SPAN`).
    pub spans: SpanMode,
}

impl<E, D> fmt::Debug for Steps<E, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steps")
            .field("cors", &self.cors.is_some())
            .field("hsts", &self.hsts)
            .field("hosts", &self.hosts)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

/// The start of step 1: the request's id and client IP, resolved once and
/// put into its extensions, and the context its span is made from.
fn begin(req: &mut Request, clients: &ClientIpResolver) -> (String, RequestContext) {
    let id = request_id::resolve(req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let client_ip = clients.resolve(req);
    if let Some(ip) = client_ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let context = RequestContext::new(id.clone(), req, client_ip);
    (id, context)
}

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
    /// How each request's span is made.
    pub spans: SpanMode,
}

impl<E: Endpoint, D: Clone + Send + Sync + 'static> Endpoint for Gate<E, D> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let (id, context) = begin(&mut req, &self.clients);
        let method = req.method().clone();
        let route = crate::metrics::route_of(req.uri().path());
        let headers = SecurityHeaders::for_path(req.uri().path(), self.hsts);
        let started = Instant::now();
        let mut resp = request_id::scope(context, self.spans, async {
            let resp = self.guarded(req).await;
            let elapsed = started.elapsed();
            let status = resp.status().as_u16();
            request_id::log_response(&method, status, elapsed);
            crate::metrics::record_request(route, &method, status, elapsed);
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
            .field("spans", &self.spans)
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
/// `D` is the handlers' shared data (see [`Steps`]).
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

impl<E, D> Steps<E, D>
where
    E: Endpoint + 'static,
    D: Clone + Send + Sync + 'static,
{
    /// The steps as [`Gate`] and [`Admission`] (see the module docs).
    ///
    /// Without CORS the admission is called directly, so that its future is
    /// part of the gate's; the CORS endpoint, when there is one, is boxed,
    /// so that it does not double the size of every request's future.
    #[must_use]
    pub fn merged(self) -> Gate<E, D> {
        let admission = Arc::new(Admission {
            routes: self.routes,
            limits: self.limits,
            body_limit: self.body_limit,
            data: self.data,
            authenticator: self.authenticator,
        });
        let cors = self.cors.map(|cors| admission.clone().with(cors).boxed());
        Gate {
            admission,
            cors,
            hsts: self.hsts,
            hosts: self.hosts,
            audit: self.audit,
            clients: self.clients,
            spans: self.spans,
        }
    }

    /// The same steps as [`Steps::merged`], in the same order, as one poem
    /// middleware each (`REQUEST_GATE=layered`; see the module docs).
    ///
    /// Built from the innermost step out. A step that needs the response of
    /// the steps below it takes it through [`enveloped`], which leaves an
    /// enveloped response as it is and renders an error as the envelope, as
    /// the merged gate does.
    #[must_use]
    pub fn layered(self) -> BoxEndpoint<'static> {
        let Steps {
            routes,
            limits,
            body_limit,
            data,
            authenticator,
            cors,
            hsts,
            hosts,
            audit,
            clients,
            spans,
        } = self;
        // The routes, under the envelope.
        let ep = routes
            .around(|ep: Arc<E>, req: Request| async move {
                Ok(enveloped(
                    ep.call(req).await.map(IntoResponse::into_response),
                ))
            })
            // The handlers' shared data and the authenticator.
            .data(data)
            .data(authenticator)
            .boxed();
        // The body limit.
        let ep = ep
            .around(move |ep: Layer, mut req: Request| async move {
                match body_limit.admit(&mut req).await {
                    Ok(()) => Ok(enveloped(ep.call(req).await)),
                    Err(refused) => Ok(refused),
                }
            })
            .boxed();
        // The rate limit, its headers on the final response.
        let ep = ep
            .around(move |ep: Layer, req: Request| {
                let limits = limits.clone();
                async move {
                    let decision = match limits.admit(&req).await {
                        Ok(decision) => decision,
                        Err(refused) => return Ok(refused),
                    };
                    let mut resp = enveloped(ep.call(req).await);
                    RateLimits::report(decision.as_ref(), &mut resp);
                    Ok(resp)
                }
            })
            .boxed();
        // CORS.
        let ep = match cors {
            Some(cors) => ep.with(cors).boxed(),
            None => ep,
        };
        // The envelope.
        let ep = ep
            .around(|ep: Layer, req: Request| async move { Ok(enveloped(ep.call(req).await)) })
            .boxed();
        // The audit observer.
        let ep = ep
            .around(move |ep: Layer, req: Request| {
                let audit = audit.clone();
                async move {
                    let observed = audit.observe(&req);
                    let resp = enveloped(ep.call(req).await);
                    if let Some(observed) = observed {
                        audit.record(observed, resp.status()).await;
                    }
                    Ok(resp)
                }
            })
            .boxed();
        // The host check.
        let ep = ep
            .around(move |ep: Layer, req: Request| {
                let admitted = hosts.admit(&req);
                async move {
                    match admitted {
                        Ok(()) => Ok(enveloped(ep.call(req).await)),
                        Err(refused) => Ok(refused.to_response()),
                    }
                }
            })
            .boxed();
        // The security headers.
        let ep = ep
            .around(move |ep: Layer, req: Request| async move {
                let headers = SecurityHeaders::for_path(req.uri().path(), hsts);
                let mut resp = enveloped(ep.call(req).await);
                headers.apply(&mut resp);
                Ok(resp)
            })
            .boxed();
        // The request id, its span and the access log.
        ep.around(move |ep: Layer, mut req: Request| {
            let (id, context) = begin(&mut req, &clients);
            async move {
                let method = req.method().clone();
                let route = crate::metrics::route_of(req.uri().path());
                let started = Instant::now();
                let mut resp = request_id::scope(context, spans, async {
                    let resp = enveloped(ep.call(req).await);
                    let elapsed = started.elapsed();
                    let status = resp.status().as_u16();
                    request_id::log_response(&method, status, elapsed);
                    crate::metrics::record_request(route, &method, status, elapsed);
                    resp
                })
                .await;
                request_id::set_header(&mut resp, &id);
                Ok(resp)
            }
        })
        .boxed()
    }
}

/// One step of [`Steps::layered`], as the step above it holds it.
type Layer = Arc<BoxEndpoint<'static>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_modes_parse_from_their_names_only() {
        assert_eq!("merged".parse(), Ok(GateMode::Merged));
        assert_eq!("Layered".parse(), Ok(GateMode::Layered));
        assert!("nested".parse::<GateMode>().is_err());
        assert_eq!(GateMode::default(), GateMode::Merged);
        assert_eq!(GateMode::Layered.as_str(), "layered");
    }
}
