//! The small background tasks [`super::App::run`] starts beside the server
//! (the worker and the retention task, [`crate::cleanup::run_schedule`],
//! live with their own code).

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::security::rate_limit::RateLimits;

/// How often the in-process rate-limit buckets forget idle clients.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Cancels `state` (what event streams watch) when `shutdown` fires.
pub(super) fn forward_shutdown(
    shutdown: CancellationToken,
    state: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        state.cancel();
    })
}

/// Every [`SWEEP_EVERY`], forgets the clients whose in-process buckets are
/// full again ([`RateLimits::retain_recent`]), so that every address ever
/// seen does not stay in memory; ends when `shutdown` fires.
pub(super) fn sweep_rate_limits(limits: RateLimits, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => limits.retain_recent(),
                () = shutdown.cancelled() => return,
            }
        }
    })
}
