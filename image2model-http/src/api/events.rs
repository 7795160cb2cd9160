//! One event stream for all of the caller's jobs: `GET /api/v1/events`.
//!
//! A page that follows many jobs opens this one stream instead of one per
//! job (browsers allow six HTTP/1.1 connections per host, and every stream
//! is a request against the rate limit). The events come from
//! [`Pipeline::subscribe_owner`](image2model_core::Pipeline::subscribe_owner):
//! in-process notifications plus a poll of the job store, so a worker in
//! another process is seen too. The stream reads the store only when the
//! client can take the next event, so a slow reader gets the latest states
//! rather than a growing buffer.
//!
//! Long-lived streams are bounded per key by [`StreamSlots`]
//! (`MAX_EVENT_STREAMS_PER_KEY`): a slot is taken when the stream opens and
//! given back when the response body is dropped (the client went away, the
//! stream timed out, or the server is shutting down).

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use image2model_core::ErrorCode;
use image2model_core::pipeline::OwnerEvent;
use poem::http::header;
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi, Union, param::Query};

use super::dto::JobDto;
use super::tags::ApiTags;
use crate::error::{ApiError, ErrorBody};
use crate::security::auth::UserKey;
use crate::state::AppState;
pub use crate::streams::{StreamSlot, StreamSlots};

/// How often an idle stream sends a keep-alive comment (as the per-job
/// stream does).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `Retry-After` of a 429 `too_many_streams`: a closed stream's slot
/// comes back as soon as the server notices the client went away (at the
/// latest at the next keep-alive).
pub const STREAMS_RETRY_AFTER_SECS: u64 = 15;

/// `event: deleted`: a followed job was deleted; its last event.
#[derive(Debug, Clone, Object)]
#[oai(rename = "JobDeletedEvent")]
pub struct JobDeletedDto {
    /// The deleted job's id.
    pub job_id: String,
}

/// `event: synced`: the current state of every active job has been sent.
#[derive(Debug, Clone, Object)]
#[oai(rename = "SyncedEvent")]
pub struct SyncedDto {
    /// How many of the caller's jobs (not ended) the stream follows.
    pub active: u32,
}

/// The payload of one event of `GET /api/v1/events`: a job (`event: job`,
/// the same JSON as the per-job stream's), a deletion (`event: deleted`) or
/// the end of the initial states (`event: synced`).
#[derive(Debug, Clone, Union)]
#[oai(one_of)]
pub enum OwnerEventDto {
    /// `event: job`.
    Job(JobDto),
    /// `event: deleted`.
    Deleted(JobDeletedDto),
    /// `event: synced`.
    Synced(SyncedDto),
}

impl From<OwnerEvent> for OwnerEventDto {
    fn from(event: OwnerEvent) -> Self {
        match event {
            OwnerEvent::Job(job) => OwnerEventDto::Job(JobDto::from_job(&job)),
            OwnerEvent::Deleted(id) => OwnerEventDto::Deleted(JobDeletedDto {
                job_id: id.to_string(),
            }),
            OwnerEvent::Synced { active } => OwnerEventDto::Synced(SyncedDto {
                active: u32::try_from(active).unwrap_or(u32::MAX),
            }),
        }
    }
}

/// Responses of `GET /api/v1/events`.
#[derive(ApiResponse)]
pub enum OwnerEventsResponse {
    /// Server-Sent Events, open until the client leaves (or
    /// `timeout_seconds` pass, or the server shuts down): first one `job`
    /// event per job of the caller's that has not ended (its current state)
    /// and one `synced` event; then a `job` event (the full job, as
    /// `GET /jobs/{job_id}/events` sends it) at each change of any of the
    /// caller's jobs, including jobs created later. A job's event with a
    /// terminal status (`succeeded`, `partial`, `failed`, `cancelled`) is
    /// its last; a followed job that is deleted ends with a `deleted` event
    /// (`{"job_id"}`). Keep-alive comments every 15 s.
    #[oai(status = 200)]
    Ok(EventStream<BoxStream<'static, OwnerEventDto>>),
    /// `invalid_request`: `timeout_seconds` is not a whole number in
    /// 1..=86400.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
}

impl std::fmt::Debug for OwnerEventsResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerEventsResponse")
    }
}

/// The caller's event stream.
#[derive(Debug, Clone)]
pub struct EventsApi {
    pub(crate) state: AppState,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl EventsApi {
    /// Follow all of the caller's jobs
    ///
    /// One Server-Sent Events stream for every job of the caller's: the
    /// current state of those that have not ended, then every change,
    /// including jobs created after the stream opened. Counted once against
    /// the rate limit when it opens; at most `MAX_EVENT_STREAMS_PER_KEY`
    /// (default 4) open at once per key (then **429** `too_many_streams`).
    /// Read it with `fetch` (`EventSource` cannot send `Authorization`).
    #[oai(path = "/events", method = "get", operation_id = "owner_events")]
    async fn events(
        &self,
        auth: UserKey,
        /// Close the stream after this many seconds (1 to 86400); by default
        /// it stays open. Clients behind proxies that cut long requests, and
        /// tests, set it and reconnect.
        #[oai(validator(minimum(value = "1"), maximum(value = "86400")))]
        timeout_seconds: Query<Option<u32>>,
    ) -> Result<OwnerEventsResponse, ApiError> {
        let owner = auth.0.key_id;
        let Some(slot) = self.state.event_streams.take(&owner) else {
            return Err(ApiError::of(
                ErrorCode::TooManyStreams,
                format!(
                    "this key already has {} event streams open; close one (or wait for a closed \
                     one to be noticed) and retry",
                    self.state.config.max_event_streams_per_key
                ),
            )
            .with_header(header::RETRY_AFTER, STREAMS_RETRY_AFTER_SECS));
        };
        let shutdown = self.state.shutdown.clone().cancelled_owned();
        let until = async move {
            match timeout_seconds.0 {
                Some(secs) => tokio::time::sleep(Duration::from_secs(u64::from(secs))).await,
                None => std::future::pending().await,
            }
        };
        let stream = self
            .state
            .pipeline
            .subscribe_owner(owner)
            .map(move |event| {
                // The slot lives as long as the stream.
                let _ = &slot;
                OwnerEventDto::from(event)
            })
            .take_until(shutdown)
            .take_until(until)
            .boxed();
        Ok(OwnerEventsResponse::Ok(
            EventStream::new(stream)
                .keep_alive(KEEP_ALIVE)
                .to_event(|dto| {
                    let data = dto.to_json_string();
                    let event = poem::web::sse::Event::message(data);
                    match &dto {
                        OwnerEventDto::Job(job) => event.event_type("job").id(format!(
                            "{}-{}",
                            job.updated_at.timestamp_millis(),
                            job.progress
                        )),
                        OwnerEventDto::Deleted(_) => event.event_type("deleted"),
                        OwnerEventDto::Synced(_) => event.event_type("synced"),
                    }
                }),
        ))
    }
}
