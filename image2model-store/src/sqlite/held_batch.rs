//! Group commit of changes under a lease (`change_held`), on the fast-writes
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
//! How to change it safely: each change is applied to its job exactly as a
//! lone `change_held` applies it ([`LoadedJob::apply_held`], in arrival
//! order, a change that fails leaving its job as it was), and the batch
//! commits or fails as a whole (a failed command closes the connection,
//! which rolls it back, and every change that would have written gets the
//! error). The flusher is a task of its own, so a caller that gives up
//! waiting never cuts a batch short. The conformance suite runs this path
//! and the plain one (`SQLITE_FAST_WRITES=false`, which turns this off).

use std::collections::HashMap;
use std::sync::Mutex;

use image2model_core::domain::ItemId;
use image2model_core::ports::{HeldChange, LeaseToken, StoreError};
use sqlx::AssertSqlSafe;
use tokio::sync::oneshot;

use super::{JoinedRow, SqliteDatabase, WholeWrite, bind_save, joined, rollback, save_sql};
use crate::rows::{LoadedJob, db_error};

/// The most changes one transaction makes (each binds at most 17 values
/// per changed job, well under SQLite's limit of 32,766).
pub(super) const MAX_BATCH: usize = 128;

/// Where a change's result goes.
type Answer = oneshot::Sender<Result<bool, StoreError>>;

/// One change waiting for the writer.
struct Pending {
    item: ItemId,
    token: LeaseToken,
    change: HeldChange,
    done: Answer,
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

    /// The next batch, oldest first; `None` (and the flusher's end) when
    /// nothing waits.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut queue = self.queue.lock().expect("held batch lock");
        if queue.pending.is_empty() {
            queue.flushing = false;
            return None;
        }
        let n = queue.pending.len().min(MAX_BATCH);
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
        let pending = Pending {
            item,
            token: token.clone(),
            change,
            done,
        };
        if self.held.push(pending) {
            let store = self.clone();
            tokio::spawn(async move { store.flush_held().await });
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the write was abandoned".into()))?
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
                Err(e) => {
                    for p in batch {
                        let _ = p.done.send(Err(copy(&e)));
                    }
                }
            }
        }
    }

    /// How many batches ran (tests).
    #[cfg(test)]
    pub(super) fn held_batches(&self) -> usize {
        self.held.batches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Makes `batch`'s changes in one transaction and answers each caller.
async fn run(write: &mut WholeWrite, batch: Vec<Pending>) {
    let mut read = sqlx::query_as::<_, JoinedRow>(AssertSqlSafe(batch_read_sql(batch.len())));
    for p in &batch {
        read = read.bind(p.item.to_string());
    }
    let rows = match read.fetch_all(&mut *write.conn).await {
        Ok(rows) => rows,
        Err(e) => {
            let e = db_error("checking leases")(e);
            for p in batch {
                let _ = p.done.send(Err(copy(&e)));
            }
            return;
        }
    };
    let mut jobs = match group(rows) {
        Ok(jobs) => jobs,
        Err(e) => {
            // Were the rollback to fail, the connection closes on drop,
            // which rolls back too.
            let _ = rollback(write).await;
            for p in batch {
                let _ = p.done.send(Err(copy(&e)));
            }
            return;
        }
    };
    let where_is: HashMap<ItemId, usize> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, loaded)| loaded.job.items.iter().map(move |i| (i.item_id, j)))
        .collect();

    let mut outcomes: Vec<(Answer, Result<bool, StoreError>)> = Vec::with_capacity(batch.len());
    let mut changed = vec![false; jobs.len()];
    for p in batch {
        let result = match where_is.get(&p.item) {
            None => Ok(false),
            Some(&j) => {
                let before = jobs[j].clone();
                match jobs[j].apply_held(p.item, &p.token, p.change) {
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
        outcomes.push((p.done, result));
    }

    let write_result = if changed.contains(&true) {
        let to_save: Vec<&LoadedJob> = jobs
            .iter()
            .zip(&changed)
            .filter_map(|(loaded, &c)| c.then_some(loaded))
            .collect();
        let mut sql = String::new();
        for loaded in &to_save {
            sql.push_str(&save_sql(loaded));
            sql.push_str("; ");
        }
        sql.push_str("COMMIT");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for loaded in to_save {
            query = bind_save(query, loaded);
        }
        query
            .execute(&mut *write.conn)
            .await
            .map(|_| write.kept = true)
            .map_err(db_error("committing"))
    } else {
        rollback(write).await
    };

    for (done, result) in outcomes {
        let result = match (&write_result, result) {
            (Err(e), Ok(true)) => Err(copy(e)),
            (_, result) => result,
        };
        let _ = done.send(result);
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
}
