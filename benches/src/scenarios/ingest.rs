//! Upload ingest: `concurrency` connections upload one prepared image again
//! and again until `count` uploads are done or `max_time` passes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::Result;
use crate::api::upload;
use crate::client::{Conn, Multipart};

/// What an ingest run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ingest {
    /// Uploads answered 202.
    pub accepted: u64,
    /// Uploads that failed.
    pub errors: u64,
    /// Bytes of image accepted.
    pub bytes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Ingest {
    /// Adds another run's counts, bytes and time to this one's.
    pub fn merge(&mut self, other: Ingest) {
        self.accepted += other.accepted;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }

    /// Image MB/s (10^6 bytes per second) accepted.
    #[must_use]
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Runs the uploads of `file` (framed by `form`).
///
/// # Errors
/// When a connection cannot be opened.
pub async fn ingest(
    addr: SocketAddr,
    key: &str,
    form: &Multipart,
    file: &[u8],
    concurrency: usize,
    count: u64,
    max_time: Duration,
) -> Result<Ingest> {
    let body = form.body(file);
    let file_len = file.len() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
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
                let (mut ok, mut errors) = (0u64, 0u64);
                while next.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                    match upload(&mut conn, &key, &form, Bytes::clone(&body)).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("ingest: {e}");
                            }
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut out = Ingest::default();
    for t in tasks {
        let (ok, errors) = t.await?;
        out.accepted += ok;
        out.errors += errors;
    }
    out.elapsed = start.elapsed();
    out.bytes = out.accepted * file_len;
    Ok(out)
}
