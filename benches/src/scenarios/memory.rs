//! The server's resident memory (read from `/proc/PID/status` of the server
//! process, so it is the server's alone): idle, with many open SSE
//! subscribers, while an oversized upload is refused, and while large
//! uploads stream in.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::body::Incoming;

use crate::Result;
use crate::api::{first_event, subscribe, upload};
use crate::client::{Conn, Multipart, streamed_upload_request};
use crate::rss::{PeakRss, rss};

/// The RSS of `pid` after it has been left alone for `settle`.
///
/// # Errors
/// When the process is gone.
pub async fn idle(pid: u32, settle: Duration) -> Result<u64> {
    tokio::time::sleep(settle).await;
    rss(pid).ok_or_else(|| "the server exited".into())
}

/// RSS before and with the subscribers.
#[derive(Debug, Clone, Copy)]
pub struct Subscribers {
    /// Subscribers that got their first event and stayed open.
    pub open: u64,
    /// RSS before any was opened.
    pub before: u64,
    /// RSS with all of them open (the highest of a few readings).
    pub with: u64,
}

/// Opens `n` event streams spread over `jobs` (jobs that do not end while
/// this runs), holds them for `hold`, reads the RSS, then closes them.
///
/// # Errors
/// When a stream cannot be opened.
pub async fn sse_subscribers(
    addr: SocketAddr,
    pid: u32,
    key: &str,
    jobs: &[String],
    n: usize,
    hold: Duration,
) -> Result<Subscribers> {
    let before = idle(pid, Duration::from_millis(500)).await?;
    let mut open: Vec<(Conn, Incoming)> = Vec::with_capacity(n);
    // Opened in batches, as a crowd of browsers would arrive.
    for batch in (0..n).collect::<Vec<_>>().chunks(50) {
        let opened = futures::future::join_all(batch.iter().map(|&i| {
            let job = jobs[i % jobs.len()].clone();
            let key = key.to_owned();
            async move {
                let mut conn = Conn::open(addr).await?;
                let mut events = subscribe(&mut conn, &key, &job).await?;
                first_event(&mut events).await?;
                Ok::<_, crate::Error>((conn, events))
            }
        }))
        .await;
        for o in opened {
            open.push(o?);
        }
    }
    tokio::time::sleep(hold).await;
    let mut with = 0;
    for _ in 0..5 {
        with = with.max(rss(pid).ok_or("the server exited")?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = Subscribers {
        open: open.len() as u64,
        before,
        with,
    };
    drop(open);
    Ok(out)
}

/// RSS before and at the peak of some uploads.
#[derive(Debug, Clone)]
pub struct UploadMemory {
    /// RSS before.
    pub before: u64,
    /// The peak while the uploads ran.
    pub peak: u64,
    /// How each upload ended (status code, or the client's error).
    pub outcomes: Vec<String>,
}

impl UploadMemory {
    /// Growth of the peak over the RSS before, in bytes.
    #[must_use]
    pub fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.before)
    }
}

/// Streams one upload of `total` bytes (chunked, so the server cannot know
/// its size in advance) and watches the server's RSS while it is refused.
///
/// # Errors
/// When the server is gone.
pub async fn refused_upload(
    addr: SocketAddr,
    pid: u32,
    key: &str,
    head: Bytes,
    total: u64,
) -> Result<UploadMemory> {
    let before = idle(pid, Duration::from_millis(500)).await?;
    let peak = PeakRss::start(pid);
    let form = Multipart::one_file("huge.png", "image/png");
    let filler = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut conn = Conn::open(addr).await?;
    let req = streamed_upload_request(&conn, key, &form, head, filler, total)?;
    let outcome = match tokio::time::timeout(Duration::from_secs(120), conn.fetch(req)).await {
        Ok(Ok((status, body))) => format!("{status} {}", error_code(&body)),
        Ok(Err(e)) => format!("client error: {e}"),
        Err(_) => "no answer within 120 s".to_owned(),
    };
    // Let the server drop whatever it still holds, then read the peak.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(UploadMemory {
        before,
        peak: peak.finish(),
        outcomes: vec![outcome],
    })
}

/// `n` concurrent uploads of `file` (each on its own connection), with the
/// server's RSS watched.
///
/// # Errors
/// When the server is gone or a connection cannot be opened.
pub async fn concurrent_uploads(
    addr: SocketAddr,
    pid: u32,
    key: &str,
    file: &[u8],
    n: usize,
) -> Result<UploadMemory> {
    let before = idle(pid, Duration::from_millis(500)).await?;
    let form = Multipart::one_file("large.png", "image/png");
    let body = form.body(file);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Conn::open(addr).await?);
    }
    let peak = PeakRss::start(pid);
    let outcomes = futures::future::join_all(conns.into_iter().map(|mut conn| {
        let (form, body, key) = (form.clone(), body.clone(), key.to_owned());
        tokio::spawn(async move {
            match upload(&mut conn, &key, &form, body).await {
                Ok(_) => StatusCode::ACCEPTED.to_string(),
                Err(e) => e.to_string(),
            }
        })
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap_or_else(|e| e.to_string()))
    .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(UploadMemory {
        before,
        peak: peak.finish(),
        outcomes,
    })
}

/// The `error.code` of an error envelope, or `-`.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}
