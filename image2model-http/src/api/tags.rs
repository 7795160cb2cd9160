//! The operation groups of the OpenAPI document (each operation names its
//! group in `#[OpenApi(tag = …)]`).

use poem_openapi::Tags;

/// Operation groups in the OpenAPI document.
#[derive(Debug, Tags)]
pub enum ApiTags {
    /// Sending images.
    Upload,
    /// Following and downloading jobs.
    Jobs,
    /// Being told when a job ends: settings, secret, deliveries.
    Webhooks,
    /// Administration (admin key).
    Admin,
}
