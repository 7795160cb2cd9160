//! The model generators: [`relief`] (offline, built in) and [`fal`] (FAL.AI),
//! and the [`registry`] that builds them from configuration.
//!
//! Each generator is a folder here holding its [`ModelGenerator`](crate::ports::ModelGenerator)
//! and, in its `kind.rs`, its [`GeneratorKind`]:
//! the configuration section it reads and how it is built. [`KINDS`] registers
//! them; nothing else names a generator (`docs/ARCHITECTURE.md`, "How to add
//! a generator").

pub mod fal;
pub mod registry;
pub mod relief;

use self::registry::GeneratorKind;

/// Every kind of generator, in order of preference: without `GENERATOR`, the
/// first one configured is the default. Relief, always configured, comes last
/// as the offline fallback.
pub const KINDS: &[&dyn GeneratorKind] = &[&fal::FalKind, &relief::ReliefKind];
