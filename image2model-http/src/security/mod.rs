//! Everything between the socket and the handlers: authentication, request
//! ids, security headers, rate limits, client IPs, CORS and the host check.
//!
//! The steps, outermost first, all run by the request [`gate`] (see
//! [`crate::App::endpoint`]): request id → security headers → host check →
//! audit observer → error envelope → CORS → rate limit → body limit → routes
//! (where the security schemes of [`auth`] run per operation) → error
//! envelope. Below all of them, [`crate::server`] bounds the request head
//! (size, field count, read time) before a request exists.

pub mod auth;
pub mod body_limit;
pub mod client_ip;
pub mod cors;
pub mod gate;
pub mod headers;
pub mod hosts;
pub mod rate_limit;
pub mod request_id;
