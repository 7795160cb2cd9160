//! Job progress events: in-process notifications plus a polling fallback, so
//! subscribers see changes made by workers in other processes too.

use std::time::Duration;

use futures::Stream;
use futures::stream;
use tokio::sync::broadcast;

use crate::domain::{Job, JobId};

/// Tells subscribers in this process that a job changed.
#[derive(Debug, Clone)]
pub(crate) struct EventHub {
    tx: broadcast::Sender<JobId>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    pub(crate) fn notify(&self, job: JobId) {
        // No receiver is fine: nobody is watching.
        let _ = self.tx.send(job);
    }

    pub(crate) fn receiver(&self) -> broadcast::Receiver<JobId> {
        self.tx.subscribe()
    }
}

struct State {
    pipeline: super::Pipeline,
    job_id: JobId,
    rx: broadcast::Receiver<JobId>,
    last: Option<Job>,
    poll: Duration,
    done: bool,
}

/// A stream of job snapshots: the current state first, then each change, ending
/// after the first terminal state (or when the job is deleted).
pub(crate) fn job_events(
    pipeline: super::Pipeline,
    first: Job,
    poll: Duration,
) -> impl Stream<Item = Job> + Send {
    let state = State {
        rx: pipeline.inner.events.receiver(),
        job_id: first.job_id,
        pipeline,
        last: None,
        poll,
        done: false,
    };
    stream::unfold((state, Some(first)), |(mut st, pending)| async move {
        if let Some(job) = pending {
            st.done = job.status.is_terminal();
            st.last = Some(job.clone());
            return Some((job, (st, None)));
        }
        if st.done {
            return None;
        }
        loop {
            // Wait for a change in this process, or poll for other processes.
            let _ = tokio::time::timeout(st.poll, async {
                loop {
                    match st.rx.recv().await {
                        Ok(id) if id == st.job_id => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            })
            .await;
            let job = match st.pipeline.inner.jobs.get_job(st.job_id).await {
                Ok(Some(job)) => job,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(job_id = %st.job_id, error = %e, "job events: store read failed");
                    continue;
                }
            };
            if st.last.as_ref() != Some(&job) {
                st.done = job.status.is_terminal();
                st.last = Some(job.clone());
                return Some((job, (st, None)));
            }
        }
    })
}
