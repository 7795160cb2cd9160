//! Everything between the socket and the handlers: authentication, request
//! ids, security headers, rate limits, client IPs, CORS and the host check.
//!
//! The layers, outermost first (see [`crate::App::endpoint`]): request id →
//! security headers → host check → CORS → rate limit → body limit → error
//! envelope → routes (where the security schemes of [`auth`] run per
//! operation). Below all of them, [`crate::server`] bounds the request head
//! (size, field count, read time) before a request exists.
//! Key management, the audit log and admin cleanup slot in here later as
//! `keys.rs` and `audit.rs`, behind the same [`auth::Authenticator`].

pub mod auth;
pub mod body_limit;
pub mod client_ip;
pub mod cors;
pub mod headers;
pub mod hosts;
pub mod rate_limit;
pub mod request_id;
