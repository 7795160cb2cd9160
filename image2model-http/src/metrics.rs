//! Prometheus metrics, served on `METRICS_ADDR` when it is set.
//!
//! The core records counters and histograms through the `metrics` facade
//! (uploads by outcome, upload bytes, items claimed, items finished by outcome
//! and code, item durations, FAL calls by outcome); this module installs the
//! Prometheus exporter, keeps the queue, store, generator, disk and runtime
//! (alive tasks) gauges fresh, and records each HTTP request by its route template
//! ([`record_request`]). The metrics listener is separate from the API's, so
//! it can stay on a private address. Alert rules over these series are in
//! `deploy/prometheus/alerts.yml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use poem::http::Method;

use image2model_core::Pipeline;
use image2model_core::ports::GeneratorHealth;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;

/// Whether this process exports metrics ([`serve`] ran): without an
/// exporter the per-request series are not even computed.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports metrics.
#[must_use]
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// How often the queue and generator gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(10);

/// Installs the exporter on `addr` and refreshes the gauges until `shutdown`.
///
/// # Errors
/// When the exporter cannot be installed (address in use, or a recorder is
/// already installed in this process).
pub fn serve(
    addr: SocketAddr,
    pipeline: Pipeline,
    disk_path: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[0.005, 0.02, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0])
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "metrics served");
    EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            // Tasks alive in this runtime: flat under steady load, so a
            // leak of spawned tasks shows as a slope (the soak reads it).
            metrics::gauge!("image2model_runtime_alive_tasks").set(
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks() as f64,
            );
            let health = pipeline.health().await;
            metrics::gauge!("image2model_queue_items", "state" => "queued")
                .set(health.queue.queued as f64);
            metrics::gauge!("image2model_queue_items", "state" => "running")
                .set(health.queue.running as f64);
            metrics::gauge!("image2model_jobs").set(health.queue.jobs as f64);
            metrics::gauge!("image2model_store_up", "store" => "jobs")
                .set(f64::from(u8::from(health.job_store.ok)));
            metrics::gauge!("image2model_store_up", "store" => "blobs")
                .set(f64::from(u8::from(health.blob_store.ok)));
            for g in health.generators {
                let healthy = matches!(g.health, GeneratorHealth::Healthy);
                metrics::gauge!("image2model_generator_healthy", "generator" => g.name)
                    .set(f64::from(u8::from(healthy)));
            }
            if let Ok(st) = rustix::fs::statvfs(&disk_path) {
                let frag = st.f_frsize as f64;
                metrics::gauge!("image2model_disk_bytes", "state" => "total")
                    .set(st.f_blocks as f64 * frag);
                metrics::gauge!("image2model_disk_bytes", "state" => "free")
                    .set(st.f_bavail as f64 * frag);
                metrics::gauge!("image2model_disk_inodes", "state" => "total")
                    .set(st.f_files as f64);
                metrics::gauge!("image2model_disk_inodes", "state" => "free")
                    .set(st.f_favail as f64);
            }
        }
    });
    Ok(())
}

/// The API's route templates, as the OpenAPI document names its paths
/// (under [`crate::routes::API_PREFIX`]); a test checks that every path of
/// the document is here.
const API_ROUTES: &[&str] = &[
    "/api/v1/upload",
    "/api/v1/usage",
    "/api/v1/events",
    "/api/v1/jobs",
    "/api/v1/jobs/{job_id}",
    "/api/v1/jobs/{job_id}/events",
    "/api/v1/jobs/{job_id}/webhook",
    "/api/v1/jobs/{job_id}/items/{item_id}/model",
    "/api/v1/jobs/{job_id}/items/{item_id}/preview",
    "/api/v1/jobs/{job_id}/items/{item_id}/link",
    "/api/v1/links/{job_id}/{item_id}/{format}",
    "/api/v1/webhook",
    "/api/v1/webhook/secret",
    "/api/v1/webhook/deliveries",
    "/api/v1/openapi.json",
    "/api/v1/admin/system-health",
    "/api/v1/admin/disk-usage",
    "/api/v1/admin/cleanup",
    "/api/v1/admin/audit",
    "/api/v1/admin/usage",
    "/api/v1/admin/jobs",
    "/api/v1/admin/jobs/{job_id}",
    "/api/v1/admin/keys",
    "/api/v1/admin/keys/{key_id}",
    "/api/v1/admin/keys/{key_id}/limits",
    "/api/v1/admin/webhook-deliveries",
];

/// The routes outside the API.
const OTHER_ROUTES: &[&str] = &["/", "/health", "/ready", "/static/{file}", "/webhooks/fal"];

/// The route template a request path matches (`/api/v1/jobs/{job_id}`),
/// `/docs` for the interactive documentation, or `other` (unknown paths are
/// one series, so a scanner cannot grow the metrics without bound).
#[must_use]
pub fn route_template(path: &str) -> &'static str {
    if path == "/docs" || path.starts_with("/docs/") {
        return "/docs";
    }
    let matches = |template: &str| {
        let mut got = path.split('/');
        let mut want = template.split('/');
        loop {
            match (got.next(), want.next()) {
                (None, None) => return true,
                (Some(g), Some(w)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return false;
                    }
                }
                (Some(g), Some(w)) if g == w => {}
                _ => return false,
            }
        }
    };
    API_ROUTES
        .iter()
        .chain(OTHER_ROUTES)
        .copied()
        .find(|t| matches(t))
        .unwrap_or("other")
}

/// The route template of a request about to be served, when metrics are
/// exported ([`route_template`]).
#[must_use]
pub fn route_of(path: &str) -> Option<&'static str> {
    exporting().then(|| route_template(path))
}

/// Records one HTTP request: `image2model_http_requests_total{route, method,
/// status}` and `image2model_http_request_seconds{route}` (nothing for a
/// request whose [`route_of`] was `None`).
pub fn record_request(
    route: Option<&'static str>,
    method: &Method,
    status: u16,
    elapsed: Duration,
) {
    let Some(route) = route else {
        return;
    };
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    metrics::counter!(
        "image2model_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!("image2model_http_request_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_templates_and_unknown_ones_to_other() {
        let id = "01M8Z02C2RZPB69CF5F66D60MR";
        assert_eq!(
            route_template(&format!("/api/v1/jobs/{id}")),
            "/api/v1/jobs/{job_id}"
        );
        assert_eq!(
            route_template(&format!("/api/v1/jobs/{id}/items/{id}/model")),
            "/api/v1/jobs/{job_id}/items/{item_id}/model"
        );
        assert_eq!(
            route_template("/api/v1/webhook/secret"),
            "/api/v1/webhook/secret"
        );
        assert_eq!(route_template("/docs/index.css"), "/docs");
        assert_eq!(route_template("/static/app.js"), "/static/{file}");
        for unknown in [
            "/wp-login.php",
            "/api/v1/jobs//events",
            "/api/v1/nope",
            "/api/v1/jobs/x/y",
        ] {
            assert_eq!(route_template(unknown), "other", "{unknown}");
        }
    }

    #[test]
    fn every_path_of_the_openapi_document_has_its_template() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../tests/api/openapi.snapshot.json")).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        assert!(paths.len() > 20, "the document's paths were read");
        for path in paths.keys() {
            let concrete: Vec<String> = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "01M8Z02C2RZPB69CF5F66D60MR".to_owned()
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            let want = format!("{}{path}", crate::routes::API_PREFIX);
            assert_eq!(
                route_template(&format!(
                    "{}{}",
                    crate::routes::API_PREFIX,
                    concrete.join("/")
                )),
                want
            );
        }
    }
}
