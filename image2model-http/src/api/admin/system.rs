//! `GET /api/v1/admin/system-health`: the overall status from the disk, the
//! stores and the generators (admin key only), and the disk reading that
//! `disk-usage` ([`super::maintenance`]) shares.

use std::path::Path as FsPath;

use image2model_core::ports::GeneratorHealth;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use crate::api::tags::ApiTags;
use crate::error::{AdminError, ApiError};
use crate::security::auth::AdminKey;
use crate::state::AppState;

/// Disk use above which the status is `warning`.
pub const WARNING_PERCENT: f64 = 80.0;
/// Disk use above which the status is `critical`.
pub const CRITICAL_PERCENT: f64 = 90.0;

/// Overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum HealthStatus {
    /// All good.
    Healthy,
    /// Disk over 80 %, or a generator degraded or unhealthy.
    Warning,
    /// Disk over 90 %, or a store not answering.
    Critical,
}

/// The disk holding the blobs (or the working directory for remote stores).
#[derive(Debug, Clone, Object)]
#[oai(rename = "Disk")]
pub struct DiskDto {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes available to the server.
    pub free_bytes: u64,
    /// Percent used, as `df` shows it.
    pub used_percent: f64,
}

/// A dependency's health.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Dependency")]
pub struct DependencyDto {
    /// Whether it answered.
    pub ok: bool,
    /// Round-trip time in milliseconds.
    pub latency_ms: f64,
    /// The error code when it did not answer.
    #[oai(nullable)]
    pub error: Option<String>,
}

/// Queue figures.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Queue")]
pub struct QueueDto {
    /// Items waiting.
    pub queued: u64,
    /// Items being generated.
    pub running: u64,
    /// Jobs stored.
    pub jobs: u64,
}

/// A generator's state.
#[derive(Debug, Clone, Object)]
#[oai(rename = "GeneratorState")]
pub struct GeneratorDto {
    /// Its name.
    pub name: String,
    /// `healthy`, `degraded` or `unhealthy`.
    pub state: String,
    /// What is wrong, when something is.
    #[oai(nullable)]
    pub message: Option<String>,
}

/// `GET /api/v1/admin/system-health`.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SystemHealth")]
pub struct SystemHealthDto {
    /// Overall status.
    pub status: HealthStatus,
    /// The disk, when it could be read.
    #[oai(nullable)]
    pub disk: Option<DiskDto>,
    /// Queue depth.
    pub queue: QueueDto,
    /// The job store.
    pub job_store: DependencyDto,
    /// The blob store.
    pub blob_store: DependencyDto,
    /// The generators.
    pub generators: Vec<GeneratorDto>,
}

/// Responses of `GET /api/v1/admin/system-health`.
#[derive(Debug, ApiResponse)]
pub enum SystemHealthResponse {
    /// The system's health.
    #[oai(status = 200)]
    Ok(Json<SystemHealthDto>),
}

/// Reads the disk holding `path` (`statvfs`).
#[must_use]
pub fn disk(path: &FsPath) -> Option<DiskDto> {
    let st = rustix::fs::statvfs(path).ok()?;
    let frag = st.f_frsize;
    let total = st.f_blocks * frag;
    let free = st.f_bavail * frag;
    let used = total.saturating_sub(st.f_bfree * frag);
    let denominator = used + free;
    let used_percent = if denominator == 0 {
        0.0
    } else {
        (used as f64 * 100.0 / denominator as f64 * 10.0).round() / 10.0
    };
    Some(DiskDto {
        total_bytes: total,
        free_bytes: free,
        used_percent,
    })
}

/// The overall status from its parts.
#[must_use]
pub fn overall(disk: Option<&DiskDto>, stores_ok: bool, generators_ok: bool) -> HealthStatus {
    let used = disk.map_or(0.0, |d| d.used_percent);
    if !stores_ok || used > CRITICAL_PERCENT {
        HealthStatus::Critical
    } else if used > WARNING_PERCENT || !generators_ok {
        HealthStatus::Warning
    } else {
        HealthStatus::Healthy
    }
}

/// The system health endpoint.
#[derive(Debug, Clone)]
pub struct SystemApi {
    pub(crate) state: AppState,
}

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl SystemApi {
    /// System health
    ///
    /// `healthy`, `warning` (disk over 80 % or a generator in trouble) or
    /// `critical` (disk over 90 % or a store down), with the figures.
    #[oai(
        path = "/system-health",
        method = "get",
        operation_id = "admin_system_health"
    )]
    async fn system_health(&self, _auth: AdminKey) -> Result<SystemHealthResponse, AdminError> {
        let report = self.state.pipeline.health().await;
        let path = self.state.disk_path.clone();
        let disk = tokio::task::spawn_blocking(move || disk(&path))
            .await
            .map_err(ApiError::internal)?;
        let generators: Vec<GeneratorDto> = report
            .generators
            .iter()
            .map(|g| match &g.health {
                GeneratorHealth::Healthy => GeneratorDto {
                    name: g.name.clone(),
                    state: "healthy".into(),
                    message: None,
                },
                GeneratorHealth::Degraded { message } => GeneratorDto {
                    name: g.name.clone(),
                    state: "degraded".into(),
                    message: Some(message.clone()),
                },
                GeneratorHealth::Unhealthy { code, message } => GeneratorDto {
                    name: g.name.clone(),
                    state: "unhealthy".into(),
                    message: Some(format!("{code}: {message}")),
                },
            })
            .collect();
        let generators_ok = generators.iter().all(|g| g.state == "healthy");
        let dep = |d: &image2model_core::pipeline::DependencyHealth| DependencyDto {
            ok: d.ok,
            latency_ms: (d.latency_ms * 100.0).round() / 100.0,
            error: d.error.clone(),
        };
        Ok(SystemHealthResponse::Ok(Json(SystemHealthDto {
            status: overall(disk.as_ref(), report.ready(), generators_ok),
            disk,
            queue: QueueDto {
                queued: report.queue.queued,
                running: report.queue.running,
                jobs: report.queue.jobs,
            },
            job_store: dep(&report.job_store),
            blob_store: dep(&report.blob_store),
            generators,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_at(used_percent: f64) -> DiskDto {
        DiskDto {
            total_bytes: 100,
            free_bytes: 100 - used_percent as u64,
            used_percent,
        }
    }

    #[test]
    fn status_follows_disk_thresholds_and_stores() {
        assert_eq!(
            overall(Some(&disk_at(50.0)), true, true),
            HealthStatus::Healthy
        );
        assert_eq!(
            overall(Some(&disk_at(80.5)), true, true),
            HealthStatus::Warning
        );
        assert_eq!(
            overall(Some(&disk_at(90.5)), true, true),
            HealthStatus::Critical
        );
        assert_eq!(
            overall(Some(&disk_at(10.0)), false, true),
            HealthStatus::Critical
        );
        assert_eq!(overall(None, true, false), HealthStatus::Warning);
    }

    #[test]
    fn the_working_directory_disk_can_be_read() {
        let d = disk(FsPath::new(".")).unwrap();
        assert!(d.total_bytes > 0);
        assert!((0.0..=100.0).contains(&d.used_percent));
    }
}
