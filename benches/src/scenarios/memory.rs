//! The server's resident memory (read from `/proc/PID/status` of the server
//! process, so it is the server's alone): idle, with many open SSE
//! subscribers, while an oversized upload is refused, and while large
//! uploads stream in.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Result;
use crate::api::{first_event, subscribe, upload};
use crate::client::{Conn, Multipart};
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
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        raw_chunked_upload(addr, key, head, total),
    )
    .await
    .unwrap_or_else(|_| "no answer within 120 s".to_owned());
    // Let the server drop whatever it still holds, then read the peak.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(UploadMemory {
        before,
        peak: peak.finish(),
        outcomes: vec![outcome],
    })
}

/// Sends a chunked upload of one file of `total` bytes (`head`, then
/// padding) straight on a socket, reading the answer while it writes: a
/// server that refuses early answers before the body is sent, and closes
/// the connection, which an HTTP client library reports as a write error
/// rather than the answer. Returns `STATUS CODE` or what went wrong.
pub(crate) async fn raw_chunked_upload(
    addr: SocketAddr,
    key: &str,
    head: Bytes,
    total: u64,
) -> String {
    let form = Multipart::one_file("huge.png", "image/png");
    let Ok(stream) = TcpStream::connect(addr).await else {
        return "cannot connect".to_owned();
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let request_head = format!(
        "POST /api/v1/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        form.content_type()
    );
    let writer = tokio::spawn(async move {
        let filler = vec![b'x'; 64 * 1024];
        wr.write_all(request_head.as_bytes()).await?;
        let mut left = total.saturating_sub(head.len() as u64);
        for part in [&form.head[..], &head[..]] {
            wr.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                .await?;
            wr.write_all(part).await?;
            wr.write_all(b"\r\n").await?;
        }
        while left > 0 {
            let n = usize::try_from(left.min(filler.len() as u64)).unwrap_or(filler.len());
            wr.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            wr.write_all(&filler[..n]).await?;
            wr.write_all(b"\r\n").await?;
            left -= n as u64;
        }
        wr.write_all(format!("{:x}\r\n", form.tail.len()).as_bytes())
            .await?;
        wr.write_all(&form.tail).await?;
        wr.write_all(b"\r\n0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(())
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let read = async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    // Headers and the (small) error body are in.
                    if let Some(end) = find(&answer, b"\r\n\r\n")
                        && answer.len() > end + 4
                        && answer.ends_with(b"}")
                    {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    };
    let read = read.await;
    writer.abort();
    if answer.is_empty() {
        return match read {
            Err(e) => format!("client error: {e}"),
            Ok(()) => "closed without an answer".to_owned(),
        };
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).unwrap_or("?").to_owned();
    let body = find(&answer, b"\r\n\r\n").map_or(&answer[..0], |i| &answer[i + 4..]);
    let body = body
        .iter()
        .position(|&b| b == b'{')
        .map_or(body, |i| &body[i..]);
    format!("{status} {}", error_code(body))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    serde_json::Deserializer::from_slice(body)
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(std::result::Result::ok)
        .and_then(|v| v.pointer("/error/code")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}
