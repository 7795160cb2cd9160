//! Waiting for a request to complete: fal's status stream, polling when the
//! stream breaks, and webhooks when the server has a public URL.
//!
//! - **Stream** (`FalConfig::status_stream`, on by default): one
//!   `…/status/stream` per request, which fal ends with the `COMPLETED`
//!   event, so completion is seen as soon as fal sends it; the events also
//!   carry progress. A stream that fails or ends early is followed by one
//!   status poll and then reopened; after [`MAX_STREAM_FAILURES`] failures in
//!   a row without an event the request is polled with the growing interval of
//!   `FalConfig::poll` until it completes.
//! - **Webhook** (`FalConfig::webhook_url` set): a fresh request waits for
//!   fal's callback (routed here through [`Waiters::completed`]) and opens no
//!   stream meanwhile; if none arrives within `FalConfig::webhook_safety` it
//!   is followed as above. A resumed request (after a restart) is followed at
//!   once: its webhook may have gone to the process that died.
//!
//! Turning the stream off (`FAL_STATUS_STREAM=false`) leaves plain polling,
//! the behaviour before streams, to rule the stream out in a bug report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;

use super::client::{FalClient, StatusAnswer, describe};
use super::models::{EndpointId, FalModel};
use super::protocol::{QueueStatus, StatusResponse, parse_status};
use super::sse::SseReader;
use super::{FalGenerator, ProgressTracker, report};
use crate::ports::{GenerateError, GenerationObserver};

/// Stream failures in a row (without an event in between) before a request
/// is only polled.
pub(crate) const MAX_STREAM_FAILURES: u32 = 3;

/// How long a webhook for a request nobody waits for yet is remembered (it
/// can arrive before the submit's answer has been handled).
const EARLY_TTL: Duration = Duration::from_secs(600);
/// At most this many such early webhooks are remembered.
const EARLY_MAX: usize = 10_000;

/// How a status stream ended.
enum StreamEnd {
    Completed(StatusResponse),
    /// fal does not know the request (404).
    Unknown,
    /// The stream failed or ended early; `events` were read before.
    Broken {
        reason: String,
        events: u32,
    },
    /// Read on the item's task while many other streams came to be open:
    /// dropped after an event, to be reopened on the stream pump.
    Moved,
}

/// The requests waiting for their webhook, by request id.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    inner: Mutex<WaitersInner>,
}

#[derive(Debug, Default)]
struct WaitersInner {
    waiting: HashMap<String, Arc<Slot>>,
    /// Webhooks that arrived before their waiter registered, with their
    /// error message.
    early: HashMap<String, (Instant, Option<String>)>,
}

/// Where a webhook leaves its news for one waiter.
#[derive(Debug, Default)]
struct Slot {
    notify: Notify,
    /// `Some` once the webhook came: fal's error message, if any.
    ended: Mutex<Option<Option<String>>>,
}

impl Slot {
    fn end(&self, error: Option<String>) {
        *self
            .ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
        self.notify.notify_one();
    }
}

/// A registered waiter; unregisters when dropped.
pub(crate) struct Waiter<'a> {
    waiters: &'a Waiters,
    request_id: String,
    slot: Arc<Slot>,
}

impl Waiter<'_> {
    /// Waits for the webhook; returns its error message, if any.
    pub(crate) async fn ended(&self) -> Option<String> {
        loop {
            if let Some(error) = self
                .slot
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
            {
                return error;
            }
            self.slot.notify.notified().await;
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.waiters.lock().waiting.remove(&self.request_id);
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn register(&self, request_id: &str) -> Waiter<'_> {
        let slot = Arc::new(Slot::default());
        let mut inner = self.lock();
        if let Some((_, error)) = inner.early.remove(request_id) {
            slot.end(error);
        }
        inner.waiting.insert(request_id.to_owned(), slot.clone());
        Waiter {
            waiters: self,
            request_id: request_id.to_owned(),
            slot,
        }
    }

    /// fal says the request ended (with `error`, if it says one): wakes its
    /// waiter, or remembers it for a while. Returns whether a waiter was
    /// woken.
    pub(crate) fn completed(&self, request_id: &str, error: Option<String>) -> bool {
        let mut inner = self.lock();
        if let Some(slot) = inner.waiting.get(request_id) {
            slot.end(error);
            return true;
        }
        let now = Instant::now();
        inner
            .early
            .retain(|_, (at, _)| now.duration_since(*at) < EARLY_TTL);
        if inner.early.len() < EARLY_MAX {
            inner.early.insert(request_id.to_owned(), (now, error));
        }
        false
    }

    /// Requests waiting for their webhook now.
    pub(crate) fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

fn no_longer_known(request_id: &str) -> GenerateError {
    GenerateError::Upstream(format!("fal no longer knows request {request_id}"))
}

impl FalGenerator {
    /// Waits until the request is `COMPLETED` (see the module docs).
    /// `Ok(None)` when fal does not know the id at the first look (an expired
    /// or foreign resume id). `fresh` is false for a resumed request.
    pub(super) async fn wait(
        &self,
        model: &FalModel,
        request_id: &str,
        observer: &dyn GenerationObserver,
        fresh: bool,
    ) -> Result<Option<StatusResponse>, GenerateError> {
        let config = self.client.config();
        if fresh && config.webhook_url.is_some() {
            let waiter = self.waiters.register(request_id);
            tokio::select! {
                error = waiter.ended() => {
                    // Signed by fal: the request has ended; the result
                    // endpoint tells how.
                    tracing::debug!(request_id, "fal webhook received");
                    return Ok(Some(StatusResponse {
                        status: QueueStatus::Completed,
                        queue_position: None,
                        logs: None,
                        metrics: None,
                        error,
                        error_type: None,
                        response_url: None,
                    }));
                }
                () = tokio::time::sleep(config.webhook_safety) => {
                    metrics::counter!("image2model_fal_webhook_safety_net_total").increment(1);
                    tracing::info!(request_id, "no fal webhook yet; following the request's status");
                }
            }
        }
        let endpoint = model.endpoint();
        let poll = &config.poll;
        let mut tracker = ProgressTracker::default();
        let mut first = true;
        let mut stream_failures = 0u32;
        let mut interval = poll.initial;
        loop {
            if config.status_stream && stream_failures < MAX_STREAM_FAILURES {
                match self
                    .follow_stream(&endpoint, request_id, &mut tracker, observer)
                    .await?
                {
                    StreamEnd::Completed(status) => return Ok(Some(status)),
                    StreamEnd::Moved => {
                        // It had an event: fal knows the request.
                        first = false;
                        stream_failures = 0;
                        continue;
                    }
                    StreamEnd::Unknown if first => return Ok(None),
                    StreamEnd::Unknown => return Err(no_longer_known(request_id)),
                    StreamEnd::Broken { reason, events } => {
                        if events > 0 {
                            first = false;
                            stream_failures = 0;
                        }
                        stream_failures += 1;
                        metrics::counter!("image2model_fal_stream_breaks_total").increment(1);
                        tracing::debug!(request_id, reason, "fal status stream broke; polling");
                    }
                }
            }
            match self.client.status(&endpoint, request_id).await? {
                StatusAnswer::Unknown if first => return Ok(None),
                StatusAnswer::Unknown => return Err(no_longer_known(request_id)),
                StatusAnswer::Status(status) => {
                    if status.status == QueueStatus::Completed {
                        return Ok(Some(status));
                    }
                    report(observer, tracker.update(&status)).await;
                }
            }
            first = false;
            tokio::time::sleep(interval).await;
            interval = poll.next(interval);
        }
    }

    /// Reads one status stream until `COMPLETED`, reporting progress: on the
    /// stream pump when there is one and many streams are open (module
    /// `pump`, `FalConfig::stream_pump_from`), else on this task.
    /// The reader hands over only its latest tracker (a `watch`: no queue
    /// per stream), waking this task when it moves.
    ///
    /// A stream read here while the others open reach the threshold (a big
    /// batch arriving after a few items) ends with [`StreamEnd::Moved`] at
    /// its next event, and the caller reopens it, on the pump: otherwise the
    /// streams opened first would each wake the runtime once per event for
    /// their whole run.
    async fn follow_stream(
        &self,
        endpoint: &EndpointId,
        request_id: &str,
        tracker: &mut ProgressTracker,
        observer: &dyn GenerationObserver,
    ) -> Result<StreamEnd, GenerateError> {
        let mut reported = tracker.percent();
        let (progress, mut seen) = tokio::sync::watch::channel(*tracker);
        let read = read_stream(
            self.client.clone(),
            endpoint.clone(),
            request_id.to_owned(),
            *tracker,
            progress,
        );
        // The pump pays for itself only with many streams open: below
        // `FalConfig::stream_pump_from` a stream is read here, without the
        // tick's delay.
        let open = OpenStream::count(&self.open_streams);
        let from = self.client.config().stream_pump_from;
        let pump = self.pump.as_ref().filter(|_| open.others >= from);
        let pumped = pump.is_some();
        let movable = !pumped && self.pump.is_some();
        let reading: futures::future::BoxFuture<'static, _> = match pump {
            Some(pump) => {
                self.pumped_streams
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let fallback = *tracker;
                Box::pin(pump.spawn(read).map(move |done| {
                    done.unwrap_or_else(|e| {
                        let e = GenerateError::Internal(format!(
                            "the status stream's task failed: {e}"
                        ));
                        (Err(e), fallback)
                    })
                }))
            }
            None => Box::pin(read),
        };
        let mut reading = std::pin::pin!(reading);
        let (end, after) = loop {
            // A pumped stream is read on the pump's thread: while the
            // observer would ignore a report, this task does not listen, so
            // the pump's percentages wait in the watch instead of waking it
            // for each event, and the latest is taken when one counts. The
            // wake is put on a whole `QUIET_GRID` step of one clock for
            // the process, so that items wake and write together: the
            // store commits writes that arrive together as one.
            if pumped && let Some(until) = observer.quiet_until() {
                tokio::select! {
                    biased;
                    done = &mut reading => break done,
                    () = tokio::time::sleep_until(on_grid(until).into()) => {}
                }
            }
            tokio::select! {
                biased;
                done = &mut reading => break done,
                Ok(()) = seen.changed() => {
                    let percent = seen.borrow_and_update().percent();
                    if percent != reported {
                        reported = percent;
                        report(observer, reported).await;
                    }
                    if movable && open.now() > from {
                        *tracker = *seen.borrow();
                        return Ok(StreamEnd::Moved);
                    }
                }
            }
        };
        // A last percentage read before the end and not reported yet.
        let last = seen.borrow().percent();
        if last != reported {
            report(observer, last).await;
        }
        *tracker = after;
        end
    }
}

/// The steps a pumped stream's task wakes on after a quiet time.
const QUIET_GRID: Duration = Duration::from_secs(1);

/// `at`, or the first `QUIET_GRID` step after it (steps counted from the
/// first call in this process).
fn on_grid(at: Instant) -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let since = at.saturating_duration_since(origin).as_nanos();
    let grid = QUIET_GRID.as_nanos();
    let steps = since.div_ceil(grid);
    let nanos = u64::try_from(steps * grid).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(nanos)
}

/// Counts a status stream as open while it lives.
struct OpenStream<'a> {
    open: &'a std::sync::atomic::AtomicUsize,
    /// Streams open when this one opened.
    others: usize,
}

impl<'a> OpenStream<'a> {
    fn count(open: &'a std::sync::atomic::AtomicUsize) -> Self {
        let others = open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { open, others }
    }

    /// Streams open now, this one included.
    fn now(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads one status stream until `COMPLETED`, turning every other status
/// into a percentage with `tracker` and publishing it to `progress`; returns
/// how the stream ended and the tracker.
async fn read_stream(
    client: FalClient,
    endpoint: EndpointId,
    request_id: String,
    mut tracker: ProgressTracker,
    progress: tokio::sync::watch::Sender<ProgressTracker>,
) -> (Result<StreamEnd, GenerateError>, ProgressTracker) {
    let response = match client.status_stream(&endpoint, &request_id).await {
        Ok(Some(response)) => response,
        Ok(None) => return (Ok(StreamEnd::Unknown), tracker),
        Err(GenerateError::Unavailable(reason)) => {
            return (Ok(StreamEnd::Broken { reason, events: 0 }), tracker);
        }
        Err(e) => return (Err(e), tracker),
    };
    let mut reader = SseReader::default();
    let mut body = response.bytes_stream();
    let mut events = 0u32;
    let end = 'read: loop {
        let Some(chunk) = body.next().await else {
            break StreamEnd::Broken {
                reason: "the stream ended before COMPLETED".into(),
                events,
            };
        };
        let broken = |reason: String, events: u32| StreamEnd::Broken { reason, events };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => break broken(describe(&e), events),
        };
        let datas = match reader.push(&chunk) {
            Ok(datas) => datas,
            Err(e) => break broken(e.to_string(), events),
        };
        for data in datas {
            let status = match parse_status(&data) {
                Ok(status) => status,
                Err(e) => {
                    break 'read broken(format!("an event is not a status: {e}"), events);
                }
            };
            events += 1;
            if status.status == QueueStatus::Completed {
                break 'read StreamEnd::Completed(status);
            }
            tracker.update(&status);
            // A wake whenever the tracker moved (its step count too, so an
            // unpumped stream can be moved even once its percentage stops
            // rising); the reader reports only new percentages.
            progress.send_if_modified(|p| {
                let changed = *p != tracker;
                *p = tracker;
                changed
            });
        }
    };
    (Ok(end), tracker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_times_end_on_shared_steps() {
        let now = Instant::now();
        let a = on_grid(now + Duration::from_millis(10));
        let b = on_grid(now + Duration::from_millis(10) + QUIET_GRID / 3);
        let c = on_grid(now + Duration::from_millis(10) + QUIET_GRID * 2);
        for (at, step) in [
            (now + Duration::from_millis(10), a),
            (now + Duration::from_millis(10) + QUIET_GRID * 2, c),
        ] {
            assert!(step >= at, "a step before the time asked");
            assert!(step - at <= QUIET_GRID, "more than a step later");
        }
        // Within one step: the same instant, so such items wake together.
        assert!(b == a || b - a == QUIET_GRID, "{:?}", b - a);
        assert_eq!((c - a).as_nanos() % QUIET_GRID.as_nanos(), 0);
    }

    #[tokio::test]
    async fn a_webhook_wakes_its_waiter_even_when_it_came_first() {
        let w = Waiters::default();
        assert!(
            !w.completed("early", Some("boom".into())),
            "nobody waits yet"
        );
        let waiter = w.register("early");
        let error = tokio::time::timeout(Duration::from_secs(1), waiter.ended())
            .await
            .expect("the early webhook is remembered");
        assert_eq!(error.as_deref(), Some("boom"));
        drop(waiter);
        assert_eq!(w.len(), 0, "a dropped waiter unregisters");

        let waiter = w.register("later");
        let other = w.register("other");
        assert!(w.completed("later", None));
        let error = tokio::time::timeout(Duration::from_secs(1), waiter.ended())
            .await
            .expect("woken");
        assert_eq!(error, None);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.ended())
                .await
                .is_err(),
            "another request's webhook wakes nobody else"
        );
    }
}
