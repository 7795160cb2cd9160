//! The few image2model API calls the scenarios make, on a [`Conn`].

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, StatusCode};

use crate::Result;
use crate::client::{Conn, Multipart, empty, upload_request};

/// Job statuses after which nothing changes.
const TERMINAL: &[&str] = &["succeeded", "partial", "failed", "cancelled"];

/// `POST /api/v1/upload` of a prepared body; the new job's id.
///
/// # Errors
/// On a connection failure or any answer but 202.
pub async fn upload(conn: &mut Conn, key: &str, form: &Multipart, body: Bytes) -> Result<String> {
    let req = upload_request(conn, key, form, body)?;
    let (status, body) = conn.fetch(req).await?;
    if status != StatusCode::ACCEPTED {
        return Err(format!(
            "upload answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
        .into());
    }
    job_id_of(&body)
}

/// The `job_id` of a job's JSON.
///
/// # Errors
/// When the body is not a job.
pub fn job_id_of(body: &[u8]) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    v.get("job_id")
        .and_then(|id| id.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "the job has no job_id".into())
}

/// A job's status and its items' statuses, as `GET /api/v1/jobs/{id}`
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    /// The job's status.
    pub status: String,
    /// Each item's status, in upload order.
    pub items: Vec<String>,
}

impl JobState {
    /// Whether the job has ended.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.status)
    }
}

/// Whether a job status is one after which nothing changes.
#[must_use]
pub fn is_terminal(status: &str) -> bool {
    TERMINAL.contains(&status)
}

/// `GET /api/v1/jobs/{id}`: the job's state.
///
/// # Errors
/// On a connection failure, any answer but 200, or a body that is not a job.
pub async fn job_state(conn: &mut Conn, key: &str, job_id: &str) -> Result<JobState> {
    let req = conn
        .request(Method::GET, &format!("/api/v1/jobs/{job_id}"), Some(key))
        .body(empty())?;
    let (status, body) = conn.fetch(req).await?;
    if status != StatusCode::OK {
        return Err(format!("job {job_id} answered {status}").into());
    }
    job_state_of(&body)
}

/// The [`JobState`] of a job's JSON.
fn job_state_of(body: &[u8]) -> Result<JobState> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let text = |v: &serde_json::Value| v.get("status")?.as_str().map(str::to_owned);
    let status = text(&v).ok_or("the job has no status")?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .map(|items| items.iter().map(|i| text(i).unwrap_or_default()).collect())
        .unwrap_or_default();
    Ok(JobState { status, items })
}

/// `GET /api/v1/jobs/{id}/events`, answered 200; the stream to read.
///
/// # Errors
/// On a connection failure or any other answer.
pub async fn subscribe(conn: &mut Conn, key: &str, job_id: &str) -> Result<Incoming> {
    let req = conn
        .request(
            Method::GET,
            &format!("/api/v1/jobs/{job_id}/events"),
            Some(key),
        )
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(empty())?;
    let resp = conn.send(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("events answered {}", resp.status()).into());
    }
    Ok(resp.into_body())
}

/// Reads an event stream until an event shows the job ended; its status.
/// The rest of the stream is then drained, so the connection can be reused.
///
/// # Errors
/// When the stream fails or ends before the job does.
pub async fn wait_terminal(mut events: Incoming) -> Result<String> {
    let mut buf = BytesMut::new();
    let mut ended: Option<String> = None;
    while let Some(frame) = events.frame().await {
        let frame = frame?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if ended.is_some() {
            continue;
        }
        buf.extend_from_slice(&data);
        while let Some(end) = find(&buf, b"\n\n") {
            let event = buf.split_to(end + 2);
            if let Some(status) = job_status(&event)
                && TERMINAL.contains(&status.as_str())
            {
                ended = Some(status);
                break;
            }
        }
    }
    ended.ok_or_else(|| "the event stream ended before the job did".into())
}

/// Reads an event stream until its first event arrives.
///
/// # Errors
/// When the stream fails or ends first.
pub async fn first_event(events: &mut Incoming) -> Result<()> {
    while let Some(frame) = events.frame().await {
        if frame?.data_ref().is_some_and(|d| !d.is_empty()) {
            return Ok(());
        }
    }
    Err("the event stream ended before its first event".into())
}

/// The job status in one SSE event's `data:` lines.
fn job_status(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let data: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    let v: serde_json::Value = serde_json::from_str(&data).ok()?;
    v.get("status")?.as_str().map(str::to_owned)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_state_is_read_from_a_job() {
        let job = br#"{"job_id":"j","status":"partial","items":[{"status":"succeeded"},{"status":"failed"}]}"#;
        let state = job_state_of(job).unwrap();
        assert_eq!(state.status, "partial");
        assert_eq!(state.items, ["succeeded", "failed"]);
        assert!(state.is_terminal());
        assert!(!is_terminal("running"));
        assert!(job_state_of(b"{}").is_err());
    }

    #[test]
    fn the_job_status_is_read_from_an_event() {
        let event = b"event: job\nid: 1-100\ndata: {\"job_id\":\"j\",\"status\":\"succeeded\",\"items\":[{\"status\":\"succeeded\"}]}\n\n";
        assert_eq!(job_status(event).as_deref(), Some("succeeded"));
        assert_eq!(job_status(b": keep-alive\n\n"), None);
    }
}
