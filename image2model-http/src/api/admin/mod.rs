//! The admin operations (admin key only), all under `/api/v1/admin`, one
//! module per area:
//!
//! - [`system`]: `GET system-health` (and the disk reading it shares);
//! - [`jobs`]: `GET jobs`, `DELETE jobs/{job_id}` (any owner's jobs);
//! - [`keys`]: `GET`/`POST keys`, `DELETE keys/{key_id}`;
//! - [`maintenance`]: `GET disk-usage`, `POST cleanup`;
//! - [`audit`]: `GET audit`;
//! - [`usage`]: `GET usage` (every key's use against its limits).
//!
//! Every operation takes an [`AdminKey`](crate::security::auth::AdminKey),
//! is tagged `ApiTags::Admin`, and records what it changes in the audit
//! trail ([`crate::state::AppState::audit`]). [`AdminApis`] is what the API
//! service mounts. To add an operation, see "How to add an admin endpoint"
//! in `docs/ARCHITECTURE.md`.

pub mod audit;
pub mod jobs;
pub mod keys;
pub mod maintenance;
pub mod system;
pub mod usage;

use crate::state::AppState;

/// Every admin operation, as mounted by [`crate::api::service`].
pub type AdminApis = (
    system::SystemApi,
    jobs::AdminJobsApi,
    keys::KeysApi,
    maintenance::MaintenanceApi,
    audit::AuditApi,
    usage::AdminUsageApi,
);

/// The admin operations over `state`.
#[must_use]
pub fn apis(state: &AppState) -> AdminApis {
    (
        system::SystemApi {
            state: state.clone(),
        },
        jobs::AdminJobsApi {
            state: state.clone(),
        },
        keys::KeysApi {
            state: state.clone(),
        },
        maintenance::MaintenanceApi {
            state: state.clone(),
        },
        audit::AuditApi {
            state: state.clone(),
        },
        usage::AdminUsageApi {
            state: state.clone(),
        },
    )
}
