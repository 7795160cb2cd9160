//! The HTTP API, end to end: the real server on a free port, driven with
//! reqwest. One binary; one module per feature.

mod helpers;

mod admin;
mod audit;
mod auth;
mod cleanup;
mod crash;
mod errors;
mod fal;
mod headers;
mod jobs;
mod keys;
mod metrics;
mod openapi;
mod process;
mod rate_limit;
mod shutdown;
mod upload;
mod web;
