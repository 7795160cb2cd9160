//! `connections` keep-alive connections, each sending `GET path` again as
//! soon as the previous answer is read, for a fixed time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};

use crate::Result;
use crate::client::{Conn, empty};
use crate::stats::Latencies;

/// What a storm measured (after its warm-up).
#[derive(Debug)]
pub struct Storm {
    /// Answers 200 completed in the measured window.
    pub ok: u64,
    /// Other answers or failed requests in the window.
    pub errors: u64,
    /// The measured window.
    pub window: Duration,
    /// Latency of each request of the window.
    pub latencies: Latencies,
}

impl Storm {
    /// Answers 200 per second.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

/// Runs the storm: `warmup`, then `window` measured. A request counts when
/// it starts and ends inside the window.
///
/// # Errors
/// When a connection cannot be opened.
pub async fn storm(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Storm> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Conn::open(addr).await?);
    }
    let start = Instant::now() + warmup;
    let end = start + window;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let path = path.to_owned();
            let key = key.map(str::to_owned);
            tokio::spawn(async move {
                let mut lat = Latencies::with_capacity(4096);
                let (mut ok, mut errors) = (0u64, 0u64);
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let req = conn
                        .request(Method::GET, &path, key.as_deref())
                        .body(empty())
                        .expect("a GET request builds");
                    let result = conn.fetch(req).await;
                    let t1 = Instant::now();
                    let counted = t0 >= start && t1 <= end;
                    match result {
                        Ok((StatusCode::OK, _)) => {
                            if counted {
                                ok += 1;
                                lat.record(t1 - t0);
                            }
                        }
                        Ok(_) => errors += u64::from(counted),
                        Err(_) => {
                            errors += u64::from(counted);
                            match Conn::open(addr).await {
                                Ok(c) => conn = c,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (ok, errors, lat)
            })
        })
        .collect();
    let mut total = Storm {
        ok: 0,
        errors: 0,
        window,
        latencies: Latencies::default(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await?;
        total.ok += ok;
        total.errors += errors;
        total.latencies.merge(lat);
    }
    Ok(total)
}
