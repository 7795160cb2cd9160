//! The HTTP API, end to end: the real server on a free port, driven with
//! reqwest. One binary; one module per feature.

mod helpers;

mod admin;
mod audit;
mod auth;
mod backpressure;
mod backup;
mod cleanup;
mod cors;
mod crash;
mod doctor;
mod drills;
mod errors;
mod events;
mod fal;
mod guide;
mod headers;
mod jobs;
mod keys;
mod kill_upload;
mod limits;
mod links;
mod logs;
mod metrics;
mod obj_zip;
mod openapi;
mod ownership;
mod pg_outage;
mod pg_workers;
mod process;
mod production;
mod proxies;
mod quotas;
mod rate_limit;
mod s3_faults;
mod session;
mod shutdown;
mod switches;
mod traversal;
mod upload;
mod web;
mod webhooks;
