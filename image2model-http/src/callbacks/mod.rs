//! Webhooks to integrators, the parts below the handlers: each key's
//! signing secret ([`secrets`]) and which addresses a callback may reach
//! ([`address`]). The outbox's deliverer is [`crate::deliveries`]; the
//! signature format is [`image2model_core::callbacks`]; the operator's and
//! integrator's view is `docs/WEBHOOKS.md`.

pub mod address;
pub mod secrets;

pub use address::{AddressPolicy, Blocked};
pub use secrets::WebhookSecrets;
