//! The HTTP API under `/api/v1`, as poem-openapi services, and the liveness
//! and readiness probes.
//!
//! One `ApiResponse` per operation documents its success and the errors of
//! its own (400, 404, 409, …); the refusals every operation may answer
//! before its handler runs (401, 429, and 403 for admin operations) are
//! documented once, by the handlers' error types
//! ([`ApiError`](crate::error::ApiError),
//! [`AdminError`](crate::error::AdminError)). Every error body is the
//! envelope of [`crate::error`].

pub mod admin;
pub mod convert;
pub mod document;
pub mod dto;
pub mod events;
pub mod health;
pub mod jobs;
pub mod links;
pub mod model;
pub mod tags;
pub mod upload;
pub mod usage;
pub mod webhooks;

pub use self::tags::ApiTags;

use poem_openapi::OpenApiService;

use crate::state::AppState;

/// Every `/api/v1` operation.
pub type Apis = (
    upload::UploadApi,
    jobs::JobsApi,
    events::EventsApi,
    links::LinksApi,
    usage::UsageApi,
    webhooks::WebhooksApi,
    webhooks::AdminWebhooksApi,
    admin::AdminApis,
);

/// The OpenAPI service of `/api/v1` (paths relative to the `/api/v1` server).
#[must_use]
pub fn service(state: &AppState) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            upload::UploadApi {
                state: state.clone(),
            },
            jobs::JobsApi {
                state: state.clone(),
            },
            events::EventsApi {
                state: state.clone(),
            },
            links::LinksApi {
                state: state.clone(),
            },
            usage::UsageApi {
                state: state.clone(),
            },
            webhooks::WebhooksApi {
                state: state.clone(),
            },
            webhooks::AdminWebhooksApi {
                state: state.clone(),
            },
            admin::apis(state),
        ),
        "image2model",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Turns photos into 3D models (binary glTF). Authenticate with \
         `Authorization: Bearer <key>` (signed download links need none). Every error is \
         `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
    )
    .server(crate::routes::API_PREFIX)
}

/// The OpenAPI document as JSON, exactly as served at `/api/v1/openapi.json`:
/// the service's, refined by [`document`].
#[must_use]
pub fn spec_json(state: &AppState) -> String {
    document::spec_json(state)
}
