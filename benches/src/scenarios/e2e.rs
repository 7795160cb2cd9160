//! End to end: `clients` clients each upload an image, follow the job's
//! event stream until the job ends, and start over, until `count` items are
//! done or `max_time` passes. Latency is from sending the upload to reading
//! the event that shows the job ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Result;
use crate::api::{subscribe, upload, wait_terminal};
use crate::client::{Conn, Multipart};
use crate::stats::Latencies;

/// What an end-to-end run measured.
#[derive(Debug)]
pub struct EndToEnd {
    /// Items that succeeded.
    pub succeeded: u64,
    /// Items that failed, or requests that did.
    pub failures: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Upload → succeeded, per succeeded item.
    pub latencies: Latencies,
}

impl EndToEnd {
    /// Succeeded items per second.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.succeeded as f64 / self.elapsed.as_secs_f64()
    }
}

/// One upload followed to its end: the time from sending the upload to
/// reading the event that shows the job succeeded.
///
/// # Errors
/// When a request fails or the job ends other than `succeeded`.
pub async fn one(
    conn: &mut Conn,
    key: &str,
    form: &Multipart,
    body: &bytes::Bytes,
) -> Result<Duration> {
    let t0 = Instant::now();
    let job = upload(conn, key, form, body.clone()).await?;
    let events = subscribe(conn, key, &job).await?;
    let status = wait_terminal(events).await?;
    let took = t0.elapsed();
    if status == "succeeded" {
        Ok(took)
    } else {
        Err(format!("job {job} ended {status}").into())
    }
}

/// Runs it.
///
/// # Errors
/// When a connection cannot be opened.
pub async fn e2e(
    addr: SocketAddr,
    key: &str,
    form: &Multipart,
    file: &[u8],
    clients: usize,
    count: u64,
    max_time: Duration,
) -> Result<EndToEnd> {
    let body = form.body(file);
    let next = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + max_time;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (next, body, form, key) =
                (next.clone(), body.clone(), form.clone(), key.to_owned());
            tokio::spawn(async move {
                let mut lat = Latencies::with_capacity(1024);
                let mut failures = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                    match one(&mut conn, &key, &form, &body).await {
                        Ok(d) => lat.record(d),
                        Err(e) => {
                            failures += 1;
                            if failures == 1 {
                                eprintln!("e2e: {e}");
                            }
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (lat, failures)
            })
        })
        .collect();
    let mut out = EndToEnd {
        succeeded: 0,
        failures: 0,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
    };
    for t in tasks {
        let (lat, failures) = t.await?;
        out.succeeded += lat.len() as u64;
        out.failures += failures;
        out.latencies.merge(lat);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}
