//! The stream pump: one thread that reads every fal status stream of the
//! process in ticks. It exists only for speed.
//!
//! Why: with thousands of requests waiting, each stream's events (fal sends
//! one per status change and log line, about one a second while a model
//! runs) woke the server's runtime one at a time: a parked thread woken by
//! `epoll` for each event, then hyper's connection task and the item's task
//! in turn, about 40 µs of CPU per event, half of the CPU per item with
//! 2,000 items waiting (docs/BENCHMARKS.md, "Session 15").
//!
//! How: the streams run on a single-threaded runtime of their own. Its
//! thread sleeps for a tick (`FAL_STREAM_TICK_MS`, default 20 ms), then
//! polls every socket that became readable meanwhile at once and runs what
//! they woke, then sleeps again: events wait in the sockets between ticks,
//! and one wake-up serves all that arrived. What a stream reads goes to the
//! item's task through a channel, so the runtime that runs the items is also
//! woken about once a tick for all streams. The cost: an event is seen up
//! to one tick late (a completion is still noticed well within 100 ms), so
//! only streams opened while many others are open come here
//! (`FalConfig::stream_pump_from`, by default the default in-flight limit;
//! the thread is started only when the in-flight limit is above it), and
//! with nothing to read the thread sleeps until a stream comes. A stream
//! opened below that threshold is moved here at its next event once the
//! threshold's worth of others are open (it is dropped and reopened): the
//! first items of a big batch would otherwise wake the runtime once per
//! event for their whole run (docs/BENCHMARKS.md, "Session 21": 7 % less
//! CPU per item with 2,000 in flight).
//!
//! The item's task listens to its stream's percentages only while its
//! observer would record one (`GenerationObserver::quiet_until`): the
//! pipeline writes an item's progress at most every 2 s, and every 20 s
//! with 2,000 items running, so in between the pump's percentages wait in
//! the item's `watch` and the task is not woken for each. It then wakes on
//! a whole second of one clock for the process, so that items claimed
//! together write together and the store commits their writes as one
//! (docs/BENCHMARKS.md, "Session 19": 7 % less CPU per item at 2,000 in
//! flight; waking each at its own time cost more than it saved).
//!
//! Switch: `FAL_STREAM_TICK_MS=0` reads each stream on its item's own task,
//! as before the pump.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle};

/// Rounds of "run what is ready, then poll the sockets and timers without
/// waiting" per tick: enough for an event's chain (hyper's connection task,
/// the stream's task, the connection task again) and a stream's opening
/// steps to move on within one tick.
const ROUNDS: usize = 8;

/// With nothing on the pump its thread sleeps this long at most between
/// looks (a `spawn` wakes it at once).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The thread and runtime that read the status streams.
#[derive(Debug)]
pub(crate) struct Pump {
    handle: Handle,
    thread: std::thread::Thread,
    stop: Arc<AtomicBool>,
}

impl Pump {
    /// Starts the pump's thread, driving its runtime every `tick`.
    pub(crate) fn start(tick: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (started, handle) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fal-streams".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started.send(Err(e));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                while !stopped.load(Ordering::Acquire) {
                    if runtime.metrics().num_alive_tasks() == 0 {
                        // Nothing to read: sleep until `spawn` wakes us.
                        std::thread::park_timeout(IDLE_CHECK);
                        continue;
                    }
                    std::thread::sleep(tick);
                    runtime.block_on(async {
                        for _ in 0..ROUNDS {
                            tokio::task::yield_now().await;
                        }
                    });
                }
                // Dropping the runtime ends the streams still open.
            })?
            .thread()
            .clone();
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the fal stream thread did not start"))??;
        Ok(Self {
            handle,
            thread,
            stop,
        })
    }

    /// Runs `future` on the pump; dropping the answer stops it.
    pub(crate) fn spawn<F>(&self, future: F) -> Spawned<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let spawned = Spawned(self.handle.spawn(future));
        self.thread.unpark();
        spawned
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// A future running on the pump, aborted when this is dropped (an item
/// cancelled or given back at shutdown stops reading its stream).
pub(crate) struct Spawned<T>(JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_future_runs_on_the_pump_thread_and_stops_when_dropped() {
        let pump = Pump::start(Duration::from_millis(5)).unwrap();
        let name = pump
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("fal-streams"));

        // Timers and sockets work there, a tick late at most.
        let slept = pump
            .spawn(async {
                let begin = tokio::time::Instant::now();
                tokio::time::sleep(Duration::from_millis(30)).await;
                begin.elapsed()
            })
            .await
            .unwrap();
        assert!(slept >= Duration::from_millis(30), "{slept:?}");

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = pump.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(waiting);
        // The aborted task drops its sender.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx)
                .await
                .unwrap()
                .is_err(),
            "the dropped task was stopped"
        );
    }
}
