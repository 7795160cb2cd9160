//! Job progress events: in-process notifications plus a polling fallback, so
//! subscribers see changes made by workers in other processes too. Two
//! streams: one job's ([`job_events`]) and all of one owner's jobs'
//! ([`owner_events`], [`OwnerEvent`]).
//!
//! A change wakes only the streams that can use it: each followed job has
//! a `watch` of its own, shared by its streams and dropped with the last of
//! them, and owner streams share one broadcast of every changed job's id
//! (each keeps its owner's). With a broadcast for all, every job stream
//! woke for every change of every job, only to find it was another's: with
//! C clients each following its own job, C wake-ups per change where one
//! is needed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use futures::stream;
use tokio::sync::{broadcast, watch};

use crate::domain::{ApiKeyId, Job, JobId};
use crate::ports::ListQuery;

/// The followed jobs, each with its change signal (whose receivers are its
/// followers).
type Followed = Arc<Mutex<HashMap<JobId, watch::Sender<()>>>>;

fn lock(followed: &Followed) -> MutexGuard<'_, HashMap<JobId, watch::Sender<()>>> {
    followed.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells subscribers in this process that a job changed.
#[derive(Debug, Clone)]
pub(crate) struct EventHub {
    /// Every changed job's id, for owner streams.
    owners: broadcast::Sender<JobId>,
    /// The jobs some job stream follows.
    jobs: Followed,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let (owners, _) = broadcast::channel(1024);
        Self {
            owners,
            jobs: Arc::default(),
        }
    }

    pub(crate) fn notify(&self, job: JobId) {
        if let Some(changed) = lock(&self.jobs).get(&job) {
            changed.send_replace(());
        }
        // No receiver is fine: nobody is watching.
        let _ = self.owners.send(job);
    }

    /// A signal of `job`'s changes from now on.
    pub(crate) fn follow(&self, job: JobId) -> JobFollow {
        let changed = lock(&self.jobs)
            .entry(job)
            .or_insert_with(|| watch::Sender::new(()))
            .subscribe();
        JobFollow {
            changed: Some(changed),
            jobs: self.jobs.clone(),
            job,
        }
    }

    /// Every changed job's id from now on.
    pub(crate) fn owner_receiver(&self) -> broadcast::Receiver<JobId> {
        self.owners.subscribe()
    }

    /// Jobs followed now.
    #[cfg(test)]
    fn followed(&self) -> usize {
        lock(&self.jobs).len()
    }
}

/// One follower of a job's changes ([`EventHub::follow`]); the job is
/// forgotten when its last follower is dropped.
#[derive(Debug)]
pub(crate) struct JobFollow {
    /// `None` only while dropping: the receiver leaves under the hub's lock,
    /// so that its sender's receiver count is the job's followers.
    changed: Option<watch::Receiver<()>>,
    jobs: Followed,
    job: JobId,
}

impl JobFollow {
    /// Waits for a change since the last one seen (or since following).
    async fn changed(&mut self) {
        let changed = self.changed.as_mut().expect("taken only when dropped");
        if changed.changed().await.is_err() {
            // The hub keeps the sender while this follower lives.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for JobFollow {
    fn drop(&mut self) {
        let mut jobs = lock(&self.jobs);
        drop(self.changed.take());
        if let Entry::Occupied(changed) = jobs.entry(self.job)
            && changed.get().receiver_count() == 0
        {
            changed.remove();
        }
    }
}

struct State {
    pipeline: super::Pipeline,
    job_id: JobId,
    follow: JobFollow,
    last: Option<Job>,
    poll: Duration,
    done: bool,
}

/// A stream of job snapshots: the current state first, then each change, ending
/// after the first terminal state (or when the job is deleted). `follow`
/// was taken before `first` was read, so no change after the read is
/// missed.
pub(crate) fn job_events(
    pipeline: super::Pipeline,
    follow: JobFollow,
    first: Job,
    poll: Duration,
) -> impl Stream<Item = Job> + Send {
    let state = State {
        follow,
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
            let _ = tokio::time::timeout(st.poll, st.follow.changed()).await;
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

/// One event of an owner's stream ([`super::Pipeline::subscribe_owner`]).
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerEvent {
    /// A job's state. When the stream opens (and after a resync), the
    /// current state of each of the owner's jobs that have not ended; then
    /// each change of any of them and of jobs created later. A job's event
    /// with a terminal status is its last.
    Job(Job),
    /// A followed job was deleted: its last event.
    Deleted(JobId),
    /// The states above are complete: `active` jobs are followed. Sent once
    /// the stream has opened and after each resync.
    Synced {
        /// How many jobs are followed.
        active: usize,
    },
}

/// The most jobs one owner's stream follows; beyond, the oldest active
/// jobs are left out (and counted in the log).
pub const MAX_FOLLOWED: usize = 1000;

/// How many of the owner's newest jobs each poll reads to find jobs made
/// (and perhaps ended) by another process since the last poll.
const RECENT_PAGE: u32 = 20;

/// Slack for other processes' clocks when deciding whether a job ended
/// after the stream opened.
const CLOCK_SLACK_MS: i64 = 2000;

/// Other owners' job ids remembered (so that their changes are not read
/// again); cleared when it grows past this.
const MAX_FOREIGN: usize = 4096;

struct OwnerState {
    pipeline: super::Pipeline,
    owner: ApiKeyId,
    rx: broadcast::Receiver<JobId>,
    rx_closed: bool,
    poll: Duration,
    /// Jobs that ended (or were deleted) after this are reported.
    since: DateTime<Utc>,
    /// The last state sent of each followed job (those not ended).
    followed: HashMap<JobId, Job>,
    /// Jobs whose last event was sent, so it is not sent twice; pruned to
    /// the ids a poll can still meet.
    ended: HashSet<JobId>,
    /// Other owners' jobs changed in this process.
    foreign: HashSet<JobId>,
    /// Jobs changed in this process, to read.
    dirty: HashSet<JobId>,
    /// Read every active job (at open, and when notifications were lost).
    resync: bool,
    /// No read has been made yet.
    first_read: bool,
    next_poll: tokio::time::Instant,
    /// Events ready to send: at most one per followed job and per job
    /// ended or deleted since the last read, so bounded by [`MAX_FOLLOWED`]
    /// plus [`RECENT_PAGE`] plus the deletions seen in one read.
    out: VecDeque<OwnerEvent>,
}

/// An owner's stream (see [`OwnerEvent`]). Nothing is spawned and nothing
/// is queued ahead of the reader: the stream reads the store when it is
/// polled, so a slow reader is sent the latest states (intermediate ones
/// coalesce) and an abandoned stream is simply dropped. Changes made in
/// this process are seen at once; other processes' within `poll`.
pub(crate) fn owner_events(
    pipeline: super::Pipeline,
    owner: ApiKeyId,
    poll: Duration,
) -> impl Stream<Item = OwnerEvent> + Send {
    let state = OwnerState {
        rx: pipeline.inner.events.owner_receiver(),
        rx_closed: false,
        pipeline,
        owner,
        poll,
        since: Utc::now() - chrono::Duration::milliseconds(CLOCK_SLACK_MS),
        followed: HashMap::new(),
        ended: HashSet::new(),
        foreign: HashSet::new(),
        dirty: HashSet::new(),
        resync: true,
        first_read: true,
        next_poll: tokio::time::Instant::now() + poll,
        out: VecDeque::new(),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.out.pop_front() {
                return Some((event, st));
            }
            if st.resync {
                match st.read_all(true).await {
                    Ok(()) => st.resync = false,
                    Err(e) => {
                        tracing::warn!(owner = %st.owner, error = %e, "owner events: store read failed");
                        tokio::time::sleep(st.poll).await;
                    }
                }
                continue;
            }
            if !st.dirty.is_empty() {
                st.read_dirty().await;
                continue;
            }
            st.wait().await;
        }
    })
}

impl OwnerState {
    /// Waits for a change in this process or the next poll.
    async fn wait(&mut self) {
        let closed = self.rx_closed;
        let sleep = tokio::time::sleep_until(self.next_poll);
        let received = tokio::select! {
            r = self.rx.recv(), if !closed => Some(r),
            () = sleep => None,
        };
        match received {
            Some(Ok(id)) => {
                self.note(id);
                // Take what else is waiting, so one read covers it.
                loop {
                    match self.rx.try_recv() {
                        Ok(id) => self.note(id),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync = true,
                        Err(_) => break,
                    }
                }
            }
            Some(Err(broadcast::error::RecvError::Lagged(_))) => self.resync = true,
            Some(Err(broadcast::error::RecvError::Closed)) => self.rx_closed = true,
            None => {
                if let Err(e) = self.read_all(false).await {
                    tracing::warn!(owner = %self.owner, error = %e, "owner events: store read failed");
                }
            }
        }
    }

    fn note(&mut self, id: JobId) {
        if !self.foreign.contains(&id) {
            self.dirty.insert(id);
        }
    }

    /// Sends `job` if it differs from what was sent, and stops following
    /// it once it has ended.
    fn update(&mut self, job: Job) {
        let id = job.job_id;
        if job.status.is_terminal() {
            let known = self.followed.remove(&id);
            let fresh = job.updated_at >= self.since && !self.ended.contains(&id);
            if known.is_some() || fresh {
                if known.as_ref() != Some(&job) {
                    self.out.push_back(OwnerEvent::Job(job));
                }
                self.ended.insert(id);
            }
            return;
        }
        if self.ended.contains(&id) {
            return;
        }
        match self.followed.get(&id) {
            Some(last) if *last == job => {}
            Some(_) => {
                self.followed.insert(id, job.clone());
                self.out.push_back(OwnerEvent::Job(job));
            }
            None if self.followed.len() < MAX_FOLLOWED => {
                self.followed.insert(id, job.clone());
                self.out.push_back(OwnerEvent::Job(job));
            }
            None => {
                tracing::warn!(owner = %self.owner, job_id = %id, "owner events: too many active jobs to follow");
            }
        }
    }

    fn deleted(&mut self, id: JobId) {
        if self.followed.remove(&id).is_some() {
            self.out.push_back(OwnerEvent::Deleted(id));
            self.ended.insert(id);
        }
    }

    /// Reads the jobs changed in this process.
    async fn read_dirty(&mut self) {
        let ids: Vec<JobId> = self.dirty.drain().collect();
        for id in ids {
            match self.pipeline.inner.jobs.get_job(id).await {
                Ok(Some(job)) if job.owner == self.owner => self.update(job),
                Ok(Some(_)) => {
                    if self.foreign.len() >= MAX_FOREIGN {
                        self.foreign.clear();
                    }
                    self.foreign.insert(id);
                }
                Ok(None) => self.deleted(id),
                Err(e) => {
                    tracing::warn!(owner = %self.owner, job_id = %id, error = %e, "owner events: store read failed");
                    // The next poll reads it.
                }
            }
        }
    }

    /// Reads every active job of the owner and its newest jobs: what other
    /// processes changed. `synced` adds [`OwnerEvent::Synced`] at the end.
    async fn read_all(&mut self, synced: bool) -> Result<(), crate::ports::StoreError> {
        self.next_poll = tokio::time::Instant::now() + self.poll;
        let mut active = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .pipeline
                .inner
                .jobs
                .list_jobs(&ListQuery {
                    owner: Some(self.owner.clone()),
                    limit: 100,
                    cursor,
                    active_only: true,
                })
                .await?;
            active.extend(page.jobs);
            cursor = page.next_cursor;
            if cursor.is_none() || active.len() >= MAX_FOLLOWED {
                break;
            }
        }
        let recent = self
            .pipeline
            .inner
            .jobs
            .list_jobs(&ListQuery {
                owner: Some(self.owner.clone()),
                limit: RECENT_PAGE,
                cursor: None,
                active_only: false,
            })
            .await?;
        // Followed jobs no longer active have ended or gone.
        let still: HashSet<JobId> = active.iter().map(|j| j.job_id).collect();
        let gone: Vec<JobId> = self
            .followed
            .keys()
            .filter(|id| !still.contains(id))
            .copied()
            .collect();
        for id in gone {
            match self.pipeline.inner.jobs.get_job(id).await? {
                Some(job) => self.update(job),
                None => self.deleted(id),
            }
        }
        // Oldest first, so that a page shows jobs in the order they came.
        active.truncate(MAX_FOLLOWED);
        for job in active.into_iter().rev() {
            self.update(job);
        }
        // Jobs made and ended elsewhere between two polls. At the first
        // read, the jobs that had already ended are only noted: the stream
        // reports ends that come after it opened.
        for job in recent.jobs.iter().rev() {
            if !job.status.is_terminal() {
                continue;
            }
            if self.first_read {
                self.ended.insert(job.job_id);
            } else {
                self.update(job.clone());
            }
        }
        self.first_read = false;
        // A job older than the newest page's oldest cannot come back.
        if recent.next_cursor.is_some()
            && let Some(oldest) = recent.jobs.last().map(|j| j.job_id)
        {
            self.ended.retain(|id| *id >= oldest);
        }
        if synced {
            self.out.push_back(OwnerEvent::Synced {
                active: self.followed.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_followers_of_that_job_only() {
        let hub = EventHub::new();
        let (a, b) = (JobId::new(), JobId::new());
        let mut first = hub.follow(a);
        let mut second = hub.follow(a);
        let mut other = hub.follow(b);
        let mut owners = hub.owner_receiver();

        hub.notify(a);
        let woke = |f: &mut JobFollow| futures::FutureExt::now_or_never(f.changed()).is_some();
        assert!(woke(&mut first), "a follower of the changed job wakes");
        assert!(woke(&mut second), "every follower of it does");
        assert!(!woke(&mut other), "another job's follower does not");
        assert!(!woke(&mut first), "a change is seen once");
        assert_eq!(
            owners.try_recv().ok(),
            Some(a),
            "owner streams hear of every job"
        );

        // Changes coalesce: two before a look are one wake-up.
        hub.notify(b);
        hub.notify(b);
        assert!(woke(&mut other));
        assert!(!woke(&mut other));
    }

    #[tokio::test]
    async fn a_job_is_forgotten_when_its_last_follower_leaves() {
        let hub = EventHub::new();
        let (a, b) = (JobId::new(), JobId::new());
        let first = hub.follow(a);
        let second = hub.follow(a);
        hub.notify(b);
        assert_eq!(
            hub.followed(),
            1,
            "a change of an unfollowed job adds nothing"
        );
        drop(first);
        assert_eq!(hub.followed(), 1, "still followed by one");
        drop(second);
        assert_eq!(hub.followed(), 0);

        // Following it again starts afresh: an earlier change is not seen.
        hub.notify(a);
        let mut again = hub.follow(a);
        assert!(futures::FutureExt::now_or_never(again.changed()).is_none());
        hub.notify(a);
        assert!(futures::FutureExt::now_or_never(again.changed()).is_some());
    }
}
