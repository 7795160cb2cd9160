//! The load generator's HTTP/1.1 client: one keep-alive connection per task,
//! straight on hyper, so the client costs as little CPU as it can on a
//! machine it shares with the server under test.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Result;

/// A request or response body of the harness.
pub type Body = BoxBody<Bytes, io::Error>;

/// An empty body.
#[must_use]
pub fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A body already in memory (sent with its `Content-Length`).
#[must_use]
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// One HTTP/1.1 keep-alive connection to `addr`.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Body>,
}

impl Conn {
    /// Connects (with `TCP_NODELAY`, as browsers and proxies do).
    ///
    /// # Errors
    /// When the connection or the HTTP handshake fails.
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends with the connection; its error surfaces on the next send.
            let _ = conn.await;
        });
        Ok(Self { addr, sender })
    }

    /// A request to this connection's server, with `Host` and, when `key` is
    /// given, `Authorization: Bearer`.
    #[must_use]
    pub fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> hyper::http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.to_string());
        if let Some(key) = key {
            b = b.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        b
    }

    /// Sends `req` and returns the response with its body still to read.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>> {
        self.sender.ready().await?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends `req` and reads the whole response body.
    ///
    /// # Errors
    /// When the connection fails.
    pub async fn fetch(&mut self, req: Request<Body>) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A `multipart/form-data` upload of one file in the `files` field.
#[derive(Debug, Clone)]
pub struct Multipart {
    /// The boundary.
    pub boundary: &'static str,
    /// Everything before the file's bytes.
    pub head: Bytes,
    /// Everything after them.
    pub tail: Bytes,
}

impl Multipart {
    /// The framing around one file called `filename`.
    #[must_use]
    pub fn one_file(filename: &str, content_type: &str) -> Self {
        let boundary = "image2model-load-boundary-7d1c2a";
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        Self {
            boundary,
            head: Bytes::from(head),
            tail: Bytes::from(tail),
        }
    }

    /// The whole body around `file`, in one buffer (built once, then cloned
    /// for free per request).
    #[must_use]
    pub fn body(&self, file: &[u8]) -> Bytes {
        let mut all = Vec::with_capacity(self.head.len() + file.len() + self.tail.len());
        all.extend_from_slice(&self.head);
        all.extend_from_slice(file);
        all.extend_from_slice(&self.tail);
        Bytes::from(all)
    }

    /// The body of an upload of `copies` files, each `file` under this
    /// framing's name (at least one).
    #[must_use]
    pub fn body_of_copies(&self, file: &[u8], copies: usize) -> Bytes {
        let copies = copies.max(1);
        let part = self.head.len() + file.len();
        let mut all = Vec::with_capacity(copies * (part + 2) + self.tail.len());
        for i in 0..copies {
            if i > 0 {
                // The CRLF that ends the previous part; `head` starts with
                // the next boundary.
                all.extend_from_slice(b"\r\n");
            }
            all.extend_from_slice(&self.head);
            all.extend_from_slice(file);
        }
        all.extend_from_slice(&self.tail);
        Bytes::from(all)
    }

    /// The `Content-Type` header value.
    #[must_use]
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }
}

/// `POST /api/v1/upload` with a body already in memory.
///
/// # Errors
/// When the request cannot be built.
pub fn upload_request(
    conn: &Conn,
    key: &str,
    form: &Multipart,
    body: Bytes,
) -> Result<Request<Body>> {
    Ok(conn
        .request(Method::POST, "/api/v1/upload", Some(key))
        .header(CONTENT_TYPE, form.content_type())
        .header(CONTENT_LENGTH, body.len())
        .body(full(body))?)
}

/// Waits until `GET path` answers 200, for at most `timeout`.
///
/// # Errors
/// When it never does.
pub async fn wait_for_ok(addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(mut conn) = Conn::open(addr).await {
            let req = conn.request(Method::GET, path, None).body(empty())?;
            if let Ok((StatusCode::OK, _)) = conn.fetch(req).await {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{addr}{path} did not answer 200 within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_one_boundary_and_one_tail() {
        let form = Multipart::one_file("a.png", "image/png");
        assert_eq!(form.body_of_copies(b"IMG", 1), form.body(b"IMG"));
        let two = form.body_of_copies(b"IMG", 2);
        let text = String::from_utf8(two.to_vec()).unwrap();
        let boundary = format!("--{}", form.boundary);
        assert_eq!(text.matches(&boundary).count(), 3);
        assert!(text.contains(&format!("IMG\r\n{boundary}\r\nContent-Disposition")));
        assert!(text.ends_with(&format!("IMG\r\n{boundary}--\r\n")));
    }
}
