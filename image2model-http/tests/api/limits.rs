//! Connection limits: the header-read timeout against slow clients.

use std::time::Duration;

use image2model_http::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{USER_KEY, spawn_app_built};

/// A server that gives clients 500 ms to send a request head.
async fn impatient_app() -> crate::helpers::TestApp {
    spawn_app_built(
        |_| {},
        |b| {
            b.server_limits(ServerLimits {
                header_read_timeout: Duration::from_millis(500),
                ..ServerLimits::default()
            })
        },
    )
    .await
}

/// Trickles header bytes, one every 100 ms for up to 10 s; returns whether
/// the server closed the connection before the client was done.
async fn trickle(stream: &mut tokio::net::TcpStream, head: &[u8]) -> bool {
    let mut buf = [0u8; 1024];
    for byte in head.iter().chain(std::iter::repeat_n(&b'a', 100)) {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            // EOF, a reset, or a response (hyper may answer 408) all end it.
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {
                let rest =
                    tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
                return matches!(rest, Ok(Ok(0) | Err(_)));
            }
            Err(_) => {}
        }
    }
    false
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let app = impatient_app().await;
    let mut slow = tokio::net::TcpStream::connect(app.app.addr).await.unwrap();

    let closed = trickle(&mut slow, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;

    assert!(
        closed,
        "the server kept a slowloris connection open for 10 s"
    );
    let healthy = app.get("/health", None).await;
    assert_eq!(healthy.status(), 200, "other clients are served");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed() {
    let app = impatient_app().await;
    let mut idle = tokio::net::TcpStream::connect(app.app.addr).await.unwrap();
    let mut buf = [0u8; 64];

    let read = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;

    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed without a request: {read:?}"
    );
}

#[tokio::test]
async fn a_slow_body_is_not_cut_by_the_header_timeout() {
    let app = impatient_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.app.addr).await.unwrap();
    let body = br#"{"older_than_hours": 1, "dry_run": true}"#;
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );

    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();

    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 405"),
        "the request was answered (405: POST on the job list), not dropped: {text}"
    );
}
