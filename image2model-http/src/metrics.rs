//! Prometheus metrics, served on `METRICS_ADDR` when it is set.
//!
//! The core records counters and histograms through the `metrics` facade
//! (uploads by outcome, upload bytes, items claimed, items finished by outcome
//! and code, item durations); this module installs the Prometheus exporter
//! and keeps the queue gauges fresh. The metrics listener is separate from the
//! API's, so it can stay on a private address.

use std::net::SocketAddr;
use std::time::Duration;

use image2model_core::Pipeline;
use image2model_core::ports::GeneratorHealth;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_util::sync::CancellationToken;

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
    shutdown: CancellationToken,
) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[0.005, 0.02, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0])
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "metrics served");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
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
        }
    });
    Ok(())
}
