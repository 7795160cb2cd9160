//! Group commit of changes under a lease (`change_held`) and of new jobs
//! (`create_job` without an idempotency key or limits), on the fast-writes
//! path only.
//!
//! What it buys: every change under a lease (a remote request id, progress,
//! an item's end) was a write turn of its own, two round trips to the
//! writer connection's thread, and with hundreds of items in flight the turn
//! queue was the latency of the FAL-bound load (`docs/BENCHMARKS.md`,
//! "FAL-bound throughput"). Here a change waits in a queue; one task at a
//! time (the flusher) takes the writer's turn, then makes every change
//! queued by then (up to [`MAX_BATCH`]) in one transaction: one command
//! that begins and reads their jobs (one joined statement), one that writes
//! every changed job and commits. Changes that arrive while a batch runs
//! form the next one.
//!
//! New jobs wait in the same queue: their inserts go into the batch's last
//! command, so a turn carries the uploads that arrived meanwhile as well
//! (a batch of only new jobs is one command). With hundreds of uploads a
//! second the writer's turn was taken about four times per job, and each
//! turn lasts as long as its holder takes to be polled again between
//! commands, not just the writer's own work (`docs/BENCHMARKS.md`,
//! "Session 13"); folding the creates in takes one of those turns away.
//!
//! How to change it safely: each change is applied to its job exactly as a
//! lone `change_held` applies it ([`LoadedJob::apply_held`], in arrival
//! order, a change that fails leaving its job as it was), and the batch
//! commits or fails as a whole (a failed command closes the connection,
//! which rolls it back, and every change that would have written gets the
//! error, new jobs included: their uploads are then refused and removed as
//! for any failed create). The flusher is a task of its own, so a caller that gives up
//! waiting never cuts a batch short. The conformance suite runs this path
//! and the plain one (`SQLITE_FAST_WRITES=false`, which turns this off).

use std::collections::HashMap;
use std::sync::Mutex;

use image2model_core::domain::{ApiKeyId, Charge, Delivery, ItemId, Job};
use image2model_core::ports::{HeldChange, LeaseToken, StoreError};
use sqlx::AssertSqlSafe;
use tokio::sync::oneshot;

use super::{
    JoinedRow, SqliteDatabase, WholeWrite, bind_insert, bind_save, insert_binds, joined,
    push_insert_sql, rollback, save_sql,
};
use crate::rows::{LoadedJob, db_error};

/// The most changes one transaction makes (each binds at most 17 values
/// per changed job, well under SQLite's limit of 32,766).
pub(super) const MAX_BATCH: usize = 128;

/// The most arguments the new jobs of one batch bind (SQLite takes at most
/// 32,766 per statement list; the held changes of a full batch bind at most
/// 2,176). A job of 25 images binds 532.
const MAX_CREATE_BINDS: usize = 24_000;

/// Where a change's result goes.
type Answer = oneshot::Sender<Result<bool, StoreError>>;

/// One change under a lease waiting for the writer.
struct Held {
    item: ItemId,
    token: LeaseToken,
    change: HeldChange,
    done: Answer,
}

/// One new job waiting for the writer, with what its insert writes too.
struct Create {
    job: Job,
    charge: Option<(ApiKeyId, Charge)>,
    delivery: Option<Delivery>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Create {
    fn binds(&self) -> usize {
        insert_binds(&self.job, self.charge.is_some(), self.delivery.is_some())
    }
}

/// One write waiting for the writer.
enum Pending {
    Held(Held),
    Create(Box<Create>),
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// Whether a flusher task is running; it clears this when it finds the
    /// queue empty, under the same lock as `push`, so no change is left
    /// without one.
    flushing: bool,
}

/// The changes waiting for the writer, shared by a store's clones.
#[derive(Default)]
pub(super) struct HeldBatcher {
    queue: Mutex<Queue>,
    /// Transactions run, for tests.
    #[cfg(test)]
    batches: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for HeldBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.queue.lock().map_or(0, |q| q.pending.len());
        f.debug_struct("HeldBatcher")
            .field("waiting", &waiting)
            .finish()
    }
}

impl HeldBatcher {
    /// Queues a change; `true` when the caller must start a flusher.
    fn push(&self, pending: Pending) -> bool {
        let mut queue = self.queue.lock().expect("held batch lock");
        queue.pending.push(pending);
        !std::mem::replace(&mut queue.flushing, true)
    }

    /// The next batch, oldest first (at most [`MAX_BATCH`] writes, and new
    /// jobs binding at most [`MAX_CREATE_BINDS`] arguments unless one alone
    /// binds more); `None` (and the flusher's end) when nothing waits.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut queue = self.queue.lock().expect("held batch lock");
        if queue.pending.is_empty() {
            queue.flushing = false;
            return None;
        }
        let mut n = 0;
        let mut binds = 0;
        for pending in queue.pending.iter().take(MAX_BATCH) {
            if let Pending::Create(create) = pending {
                binds += create.binds();
                if binds > MAX_CREATE_BINDS && n > 0 {
                    break;
                }
            }
            n += 1;
        }
        Some(queue.pending.drain(..n).collect())
    }
}

/// A store error for each of several callers (the variant kept, the text
/// copied).
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// The jobs holding any of `count` items, each with all its items, in one
/// statement whose item ids are bound in order.
fn batch_read_sql(count: usize) -> String {
    let mut sql = String::from(concat!("BEGIN IMMEDIATE; ", joined_select!()));
    sql.push_str("WHERE j.job_id IN (SELECT job_id FROM items WHERE item_id IN (");
    for i in 0..count {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
    }
    sql.push_str(")) ORDER BY j.job_id, i.position");
    sql
}

impl SqliteDatabase {
    /// `change_held` through the group commit.
    pub(super) async fn change_held_batched(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue_write(Pending::Held(Held {
            item,
            token: token.clone(),
            change,
            done,
        }));
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the write was abandoned".into()))?
    }

    /// Inserts a new job (with its owner's `charge`, which must have no
    /// limits, and its webhook `delivery`) through the group commit.
    pub(super) async fn create_batched(
        &self,
        job: Job,
        charge: Option<(ApiKeyId, Charge)>,
        delivery: Option<Delivery>,
    ) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue_write(Pending::Create(Box::new(Create {
            job,
            charge,
            delivery,
            done,
        })));
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the write was abandoned".into()))?
    }

    /// Queues a write, starting a flusher when none runs.
    fn queue_write(&self, pending: Pending) {
        if self.held.push(pending) {
            let store = self.clone();
            tokio::spawn(async move { store.flush_held().await });
        }
    }

    /// Runs batches in the writer's turn until nothing waits.
    async fn flush_held(&self) {
        loop {
            let write = self.whole_write().await;
            let Some(batch) = self.held.take() else {
                if let Ok(mut write) = write {
                    write.kept = true;
                }
                return;
            };
            #[cfg(test)]
            self.held
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match write {
                Ok(mut write) => run(&mut write, batch).await,
                Err(e) => fail_all(batch, &e),
            }
        }
    }

    /// How many batches ran (tests).
    #[cfg(test)]
    pub(super) fn held_batches(&self) -> usize {
        self.held.batches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Answers every write of `batch` with `e`.
fn fail_all(batch: Vec<Pending>, e: &StoreError) {
    for p in batch {
        match p {
            Pending::Held(h) => {
                let _ = h.done.send(Err(copy(e)));
            }
            Pending::Create(c) => {
                let _ = c.done.send(Err(copy(e)));
            }
        }
    }
}

/// Makes `batch`'s changes and inserts in one transaction and answers each
/// caller.
async fn run(write: &mut WholeWrite, batch: Vec<Pending>) {
    let mut held = Vec::new();
    let mut creates = Vec::new();
    for p in batch {
        match p {
            Pending::Held(h) => held.push(h),
            Pending::Create(c) => creates.push(c),
        }
    }
    let mut jobs = Vec::new();
    let mut outcomes: Vec<(Answer, Result<bool, StoreError>)> = Vec::with_capacity(held.len());
    let mut changed = Vec::new();
    // A batch of new jobs only has nothing to read: its one command begins.
    let began = !held.is_empty();
    if began {
        let mut read = sqlx::query_as::<_, JoinedRow>(AssertSqlSafe(batch_read_sql(held.len())));
        for h in &held {
            read = read.bind(h.item.to_string());
        }
        let read = match read.fetch_all(&mut *write.conn).await {
            Ok(rows) => group(rows),
            Err(e) => Err(db_error("checking leases")(e)),
        };
        jobs = match read {
            Ok(jobs) => jobs,
            Err(e) => {
                // Were the rollback to fail, the connection closes on drop,
                // which rolls back too.
                let _ = rollback(write).await;
                let batch = held
                    .into_iter()
                    .map(Pending::Held)
                    .chain(creates.into_iter().map(Pending::Create));
                fail_all(batch.collect(), &e);
                return;
            }
        };
        let where_is: HashMap<ItemId, usize> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, loaded)| loaded.job.items.iter().map(move |i| (i.item_id, j)))
            .collect();
        changed = vec![false; jobs.len()];
        for h in held {
            let result = match where_is.get(&h.item) {
                None => Ok(false),
                Some(&j) => {
                    let before = jobs[j].clone();
                    match jobs[j].apply_held(h.item, &h.token, h.change) {
                        Ok(applied) => {
                            changed[j] |= applied;
                            Ok(applied)
                        }
                        Err(e) => {
                            jobs[j] = before;
                            Err(e)
                        }
                    }
                }
            };
            outcomes.push((h.done, result));
        }
    }

    let to_save: Vec<&LoadedJob> = jobs
        .iter()
        .zip(&changed)
        .filter_map(|(loaded, &c)| c.then_some(loaded))
        .collect();
    let write_result = if to_save.is_empty() && creates.is_empty() {
        rollback(write).await
    } else {
        let mut sql = String::from(if began { "" } else { "BEGIN IMMEDIATE; " });
        for loaded in &to_save {
            sql.push_str(&save_sql(loaded));
            sql.push_str("; ");
        }
        for c in &creates {
            push_insert_sql(&mut sql, &c.job, c.charge.is_some(), c.delivery.is_some());
            sql.push_str("; ");
        }
        sql.push_str("COMMIT");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for loaded in to_save {
            query = bind_save(query, loaded);
        }
        for c in &creates {
            let charge = c.charge.as_ref().map(|(owner, charge)| (owner, charge));
            query = bind_insert(query, &c.job, charge, c.delivery.as_ref());
        }
        query
            .execute(&mut *write.conn)
            .await
            .map(|_| write.kept = true)
            .map_err(db_error("committing"))
    };

    for (done, result) in outcomes {
        let result = match (&write_result, result) {
            (Err(e), Ok(true)) => Err(copy(e)),
            (_, result) => result,
        };
        let _ = done.send(result);
    }
    for c in creates {
        let _ = c.done.send(write_result.as_ref().map_err(copy).copied());
    }
}

/// The rows of the batch read, one loaded job per run of rows with the same
/// job id (the read orders them by job).
fn group(rows: Vec<JoinedRow>) -> Result<Vec<LoadedJob>, StoreError> {
    let mut jobs = Vec::new();
    let mut run: Vec<JoinedRow> = Vec::new();
    for row in rows {
        if run.first().is_some_and(|r| r.job.job_id != row.job.job_id) {
            jobs.extend(joined(std::mem::take(&mut run))?);
        }
        run.push(row);
    }
    jobs.extend(joined(run)?);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::join_all;
    use image2model_core::domain::{ApiKeyId, BlobKey, ItemStatus, JobId, JobStatus};
    use image2model_core::ports::{Claim, ClaimOptions, ItemOutcome, JobStore};
    use image2model_core::testing::conformance::job_store::new_job;

    use super::*;

    const CLAIM: ClaimOptions = ClaimOptions {
        lease: Duration::from_secs(60),
        max_attempts: 3,
        models: None,
    };

    async fn store() -> (tempfile::TempDir, SqliteDatabase) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteDatabase::open(dir.path().join("jobs.db"))
            .await
            .unwrap();
        (dir, store)
    }

    /// Creates jobs of these sizes and claims every item.
    async fn claimed(store: &SqliteDatabase, sizes: &[usize]) -> (Vec<JobId>, Vec<Claim>) {
        let owner = ApiKeyId::bootstrap_user();
        let mut jobs = Vec::new();
        for &n in sizes {
            let id = JobId::new();
            store.create_job(new_job(id, &owner, n)).await.unwrap();
            jobs.push(id);
        }
        let mut claims = Vec::new();
        while let Some(claim) = store.claim_next(CLAIM).await.unwrap() {
            claims.push(claim);
        }
        assert_eq!(claims.len(), sizes.iter().sum::<usize>());
        (jobs, claims)
    }

    fn success(claim: &Claim) -> HeldChange {
        HeldChange::Finish(ItemOutcome::Succeeded {
            model_key: BlobKey::model(claim.job.job_id, claim.item.item_id),
            preview_key: None,
        })
    }

    #[tokio::test]
    async fn concurrent_changes_go_in_together_and_each_lands_on_its_job() {
        let (_dir, store) = store().await;
        let (jobs, claims) = claimed(&store, &[25, 1, 3]).await;
        // Every item gets a remote request id, then ends, all at once.
        let ids = join_all(claims.iter().map(|c| {
            store.change_held(
                c.item.item_id,
                &c.token,
                HeldChange::RemoteRequest(format!("req-{}", c.item.item_id)),
            )
        }))
        .await;
        assert!(ids.into_iter().all(|r| r.unwrap()));
        let ends = join_all(
            claims
                .iter()
                .map(|c| store.change_held(c.item.item_id, &c.token, success(c))),
        )
        .await;
        assert!(ends.into_iter().all(|r| r.unwrap()));
        assert!(
            store.held_batches() < 2 * claims.len(),
            "{} batches for {} changes: none were made together",
            store.held_batches(),
            2 * claims.len()
        );
        for id in jobs {
            let job = store.get_job(id).await.unwrap().unwrap();
            assert_eq!(job.status, JobStatus::Succeeded);
            for item in &job.items {
                assert_eq!(item.status, ItemStatus::Succeeded);
                assert_eq!(
                    item.remote_request_id.as_deref(),
                    Some(format!("req-{}", item.item_id).as_str())
                );
                assert_eq!(item.model_key, Some(BlobKey::model(id, item.item_id)));
            }
        }
    }

    #[tokio::test]
    async fn a_lost_lease_in_a_batch_changes_nothing_of_its_own_and_spoils_nothing_else() {
        let (_dir, store) = store().await;
        let (jobs, claims) = claimed(&store, &[3]).await;
        let stale = LeaseToken::generate();
        let results = join_all(claims.iter().enumerate().map(|(n, c)| {
            let token = if n == 1 { &stale } else { &c.token };
            store.change_held(c.item.item_id, token, success(c))
        }))
        .await;
        let results: Vec<bool> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, vec![true, false, true]);
        let job = store.get_job(jobs[0]).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(
            job.item(claims[1].item.item_id).unwrap().status,
            ItemStatus::Running
        );
        // The item ended twice: the second end is refused, the first stays.
        let again = store
            .change_held(
                claims[0].item.item_id,
                &claims[0].token,
                success(&claims[0]),
            )
            .await
            .unwrap();
        assert!(!again);
    }

    #[tokio::test]
    async fn a_change_whose_write_fails_gets_the_error_and_leaves_the_job_as_it_was() {
        let (_dir, store) = store().await;
        let (jobs, claims) = claimed(&store, &[2]).await;
        // A trigger makes the batch's write fail: its changes must report
        // the error and nothing of the batch may stay.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE UPDATE OF remote_request_id ON items \
             WHEN NEW.remote_request_id = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(store.writer())
        .await
        .unwrap();
        let results = join_all([
            store.change_held(
                claims[0].item.item_id,
                &claims[0].token,
                HeldChange::RemoteRequest("fine".into()),
            ),
            store.change_held(
                claims[1].item.item_id,
                &claims[1].token,
                HeldChange::RemoteRequest("boom".into()),
            ),
        ])
        .await;
        assert!(results[1].is_err(), "{:?}", results[1]);
        let job = store.get_job(jobs[0]).await.unwrap().unwrap();
        assert!(
            job.items
                .iter()
                .all(|i| i.remote_request_id.as_deref() != Some("boom"))
        );
        if results[0].is_err() {
            // Made in the same transaction: rolled back with it.
            assert!(job.items.iter().all(|i| i.remote_request_id.is_none()));
        }
        // The writer still works afterwards.
        assert!(
            store
                .change_held(
                    claims[1].item.item_id,
                    &claims[1].token,
                    HeldChange::RemoteRequest("later".into()),
                )
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn new_jobs_go_in_with_the_changes_queued_beside_them() {
        let (_dir, store) = store().await;
        let (_, claims) = claimed(&store, &[4]).await;
        let before = store.held_batches();
        let owner = ApiKeyId::bootstrap_user();
        let new_ids: Vec<JobId> = (0..40).map(|_| JobId::new()).collect();
        let creates = join_all(
            new_ids
                .iter()
                .enumerate()
                .map(|(n, id)| store.create_job(new_job(*id, &owner, 1 + n % 25))),
        );
        let changes = join_all(claims.iter().map(|c| {
            store.change_held(
                c.item.item_id,
                &c.token,
                HeldChange::RemoteRequest("r".into()),
            )
        }));
        let (created, changed) = tokio::join!(creates, changes);
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        assert!(changed.into_iter().all(|r| r.unwrap()));
        let batches = store.held_batches() - before;
        assert!(
            batches < new_ids.len() + claims.len(),
            "{batches} batches for {} writes: none were made together",
            new_ids.len() + claims.len()
        );
        for (n, id) in new_ids.iter().enumerate() {
            let job = store.get_job(*id).await.unwrap().expect("created");
            assert_eq!(job.items.len(), 1 + n % 25);
            assert!(job.items.iter().all(|i| i.status == ItemStatus::Queued));
        }
        let job = store.get_job(claims[0].job.job_id).await.unwrap().unwrap();
        assert!(
            job.items
                .iter()
                .all(|i| i.remote_request_id.as_deref() == Some("r"))
        );
    }

    #[tokio::test]
    async fn a_batch_whose_insert_fails_makes_no_job_and_answers_each_with_the_error() {
        let (_dir, store) = store().await;
        let owner = ApiKeyId::bootstrap_user();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON items \
             WHEN NEW.position = 6 BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(store.writer())
        .await
        .unwrap();
        // Jobs of 1 to 3 items and one of 7 (refused) queued together.
        let ids: Vec<JobId> = (0..8).map(|_| JobId::new()).collect();
        let results = join_all(ids.iter().enumerate().map(|(n, id)| {
            let items = if n == 5 { 7 } else { 1 + n % 3 };
            store.create_job(new_job(*id, &owner, items))
        }))
        .await;
        assert!(results[5].is_err(), "{:?}", results[5]);
        for (id, result) in ids.iter().zip(&results) {
            let stored = store.get_job(*id).await.unwrap();
            // Whoever was answered with an error has no job; whoever was
            // answered Ok has all of it.
            match result {
                Ok(_) => assert!(stored.is_some_and(|j| !j.items.is_empty())),
                Err(_) => assert!(stored.is_none(), "a refused create left a job"),
            }
        }
        // The writer still works afterwards.
        let later = JobId::new();
        store.create_job(new_job(later, &owner, 2)).await.unwrap();
        assert!(store.get_job(later).await.unwrap().is_some());
    }
}
