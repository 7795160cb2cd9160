//! The connection layer: accepts TCP connections and serves each with hyper,
//! with the limits that protect the server before a request reaches poem.
//!
//! poem's own `Server` does not expose hyper's HTTP/1 settings, so this module
//! runs the accept loop itself (about what poem does) and sets:
//!
//! - a **header-read timeout** ([`ServerLimits::header_read_timeout`]): a
//!   client that has not sent a complete request head in time is
//!   disconnected. The clock starts as soon as the connection is open (and
//!   again after each response), so this stops "slowloris" clients that hold
//!   connections open by trickling header bytes or by sending nothing (an
//!   idle timeout does not, since every byte counts as activity), and it
//!   bounds how long an idle keep-alive connection may wait for its next
//!   request.
//! - a **header-size limit** ([`ServerLimits::max_header_bytes`], and
//!   [`ServerLimits::max_headers`] header fields): hyper answers a larger
//!   request head with **431** before any of our code runs.
//!
//! The server speaks HTTP/1.1 only: behind the Cloudflare tunnel (and any
//! reverse proxy) the origin hop is HTTP/1.1, and hyper's HTTP/1 server is the
//! one whose head is bounded in time from the first byte; a version-sniffing
//! server would wait for a first byte with no clock running.
//!
//! Bodies are bounded by the application (`security::body_limit` and the
//! upload's streaming bounds), where the limit depends on the route.
//!
//! Shutdown: stop accepting, ask every connection to finish its in-flight
//! request and close (hyper's graceful shutdown), and give up after the drain
//! timeout.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use poem::http::uri::Scheme;
use poem::{Addr, Endpoint, Request};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Limits applied to every connection before a request reaches the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// How long a client may take to send a complete request head (request
    /// line and headers), counted from the first poll for it.
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// The most header fields in one request.
    pub max_headers: usize,
    /// The largest read buffer of one connection (at least 8 KiB and at
    /// least `max_header_bytes`). Bodies are read through it: it bounds how
    /// much of an upload one socket read brings into memory.
    pub read_buffer_bytes: usize,
    /// How long in-flight requests may take to finish after shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    /// 10 s to send the head, 32 KiB of head (Cloudflare's own limit), 100
    /// header fields, a 64 KiB read buffer (hyper's default grows to about
    /// 400 KiB per connection), 10 s of drain.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            read_buffer_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` fires, then drains.
///
/// # Errors
/// Only the listener's `local_addr` error; accept errors (such as running out
/// of file descriptors) are logged and retried after a short pause.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = poem::web::LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let endpoint = Arc::new(endpoint);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        // hyper refuses (panics on) a maximum below 8 KiB.
        .max_buf_size(
            limits
                .read_buffer_bytes
                .max(limits.max_header_bytes)
                .max(8 * 1024),
        );
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        let local = local.clone();
        let remote = poem::web::RemoteAddr(Addr::SocketAddr(peer));
        let service = hyper::service::service_fn(move |req| {
            let endpoint = endpoint.clone();
            let request = Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
            async move {
                let response = endpoint.get_response(request).await;
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, oversized heads and resets: the client's doing.
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!("drain timeout: closing the remaining connections");
        }
    }
    Ok(())
}
