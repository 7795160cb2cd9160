//! Everything between the socket and the handlers: authentication, security
//! headers, rate limits, client IPs, CORS, the host check, the body limit and
//! the audit observer, run in order by the request [`gate`].
//!
//! The steps, outermost first (see [`crate::App::endpoint`]): request id
//! ([`crate::request_id`]) → security headers → host check → audit observer
//! → error envelope → CORS → rate limit → body limit → routes (where the
//! security schemes of [`auth`] run per operation) → error envelope. Below
//! all of them, [`crate::server`] bounds the request head (size, field
//! count, read time) before a request exists.
//!
//! These modules use the envelope ([`crate::error`]), the request context
//! ([`crate::request_id`]), the audit trail ([`crate::audit`]) and the
//! route constants ([`crate::routes`]), and nothing above them: no handler,
//! no app state (the gate hands the handlers' shared data on without
//! looking into it).

pub mod audit_observer;
pub mod auth;
pub mod body_limit;
pub mod client_ip;
pub mod cors;
pub mod gate;
pub mod headers;
pub mod hosts;
pub mod rate_limit;
