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

    /// Adds another storm's counts, window and latencies to this one's.
    pub fn merge(&mut self, other: Storm) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.window += other.window;
        self.latencies.merge(other.latencies);
    }
}

/// Storms two servers in turns (`rounds` rounds of `window / rounds` each,
/// each preceded by `warmup`), A first in odd rounds and B first in even
/// ones, and adds up each server's rounds. On a shared machine whose speed
/// drifts by the second, a figure and its reference measured in alternation
/// see the same machine; measured one after the other, their ratio swung
/// by a factor of two between runs.
///
/// # Errors
/// When a connection cannot be opened.
pub async fn alternating(
    a: (SocketAddr, &str, Option<&str>),
    b: (SocketAddr, &str, Option<&str>),
    connections: usize,
    warmup: Duration,
    window: Duration,
    rounds: u32,
) -> Result<(Storm, Storm)> {
    let rounds = rounds.max(1);
    let slice = window / rounds;
    let mut total: [Option<Storm>; 2] = [None, None];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (addr, path, key) = if which == 0 { a } else { b };
            let s = storm(addr, path, key, connections, warmup, slice).await?;
            match &mut total[which] {
                Some(t) => t.merge(s),
                none => *none = Some(s),
            }
        }
    }
    let [a, b] = total;
    Ok((
        a.expect("at least one round"),
        b.expect("at least one round"),
    ))
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
