//! Test support, behind the `testing` feature: sample images, conformance
//! suites for the ports and the fake FAL server.

pub mod conformance;
pub mod fake_fal;
pub mod generators;
pub mod images;
