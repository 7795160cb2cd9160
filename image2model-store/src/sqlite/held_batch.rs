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
//! that begins and reads their jobs (one statement, a row per job), one that writes
//! every changed job and commits. Changes that arrive while a batch runs
//! form the next one.
//!
//! New jobs wait in the same queue: their inserts go into the batch's last
//! command, so a turn carries the uploads that arrived meanwhile as well
//! (a batch of only new jobs is one command). Claims wait there too: the
//! batch's read finds the oldest claimable items for all of its claims (one
//! candidate query per set of models asked for, `LIMIT` the claims asking)
//! in the same statement that reads the jobs of its changes, and the claims
//! are written with the rest. A claim whose candidate was taken by another
//! set of models in the batch, or failed as `worker_lost`, waits for the
//! next batch when more items may be claimable. With hundreds of uploads a
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
//! for any failed create, claims too: nothing was claimed). Claims are
//! made on the jobs as read, before the changes under a lease, as if each
//! claim had committed first: an old holder's change to an item claimed
//! again (its lease expired) is then refused by its token, as it would be
//! after a lone claim. A claim whose caller stopped waiting before its
//! batch ran is dropped; one whose caller stops waiting while its batch
//! runs stays claimed until its lease expires, like a worker that crashed. The flusher is a task of its own, so a caller that gives up
//! waiting never cuts a batch short. The conformance suite runs this path
//! and the plain one (`SQLITE_FAST_WRITES=false`, which turns this off).

use std::collections::HashMap;
use std::sync::Mutex;

use image2model_core::domain::{ApiKeyId, Charge, Delivery, ItemId, Job, ModelName};
use image2model_core::ports::{Claim, ClaimOptions, HeldChange, LeaseToken, StoreError};
use sqlx::AssertSqlSafe;
use tokio::sync::oneshot;

use super::{
    PackedRow, SqliteDatabase, WholeWrite, bind_insert, bind_save, claim_sql_at, insert_binds,
    push_insert_sql, rollback, save_sql, worker_lost,
};
use crate::rows::{self, LoadedJob, db_error, to_ms};

/// The most changes one transaction makes (each binds at most 17 values
/// per changed job, well under SQLite's limit of 32,766).
pub(super) const MAX_BATCH: usize = 128;

/// The most arguments the new jobs of one batch bind (SQLite takes at most
/// 32,766 per statement list; the held changes of a full batch bind at most
/// 2,176). A job of 25 images binds 532.
const MAX_CREATE_BINDS: usize = 24_000;

/// The largest batch (changes and claims read; jobs written) whose
/// statements are kept in the writer connection's statement cache. Every
/// batch has its own text (how many changes, how many claims of which
/// models, which items changed), and sqlx keeps up to 100 prepared
/// statements per connection: with large batches the cache held tens of
/// megabytes of one-off programs (`heaptrack` with 2,000 items in flight:
/// 20 MiB of SQLite's 28 MiB peak) and evicted the statements that do
/// repeat. Small batches repeat: preparing them every time cost 0.35 ms of
/// CPU per job at L = 0 (`docs/BENCHMARKS.md`, "Session 14").
const CACHED: usize = 4;

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

/// One claim waiting for the writer.
struct ClaimRequest {
    options: ClaimOptions,
    done: oneshot::Sender<Result<Option<Claim>, StoreError>>,
}

/// One write waiting for the writer.
enum Pending {
    Held(Held),
    Create(Box<Create>),
    Claim(ClaimRequest),
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

    /// Puts claims that must wait for the next batch back at the head of
    /// the queue (the flusher calling this is still running).
    fn requeue(&self, claims: Vec<ClaimRequest>) {
        if claims.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().expect("held batch lock");
        let rest = std::mem::take(&mut queue.pending);
        queue.pending = claims.into_iter().map(Pending::Claim).chain(rest).collect();
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

/// The claims of a batch that ask for the same models and attempts: one
/// candidate query serves them all.
struct ClaimGroup {
    models: Option<std::sync::Arc<[ModelName]>>,
    max_attempts: u32,
    requests: Vec<ClaimRequest>,
}

/// Sorts `claims` into groups, first come first.
fn claim_groups(claims: Vec<ClaimRequest>) -> Vec<ClaimGroup> {
    let mut groups: Vec<ClaimGroup> = Vec::new();
    for request in claims {
        let at = groups.iter().position(|g| {
            g.max_attempts == request.options.max_attempts && g.models == request.options.models
        });
        match at {
            Some(at) => groups[at].requests.push(request),
            None => groups.push(ClaimGroup {
                models: request.options.models.clone(),
                max_attempts: request.options.max_attempts,
                requests: vec![request],
            }),
        }
    }
    groups
}

/// The batch's read, beginning its transaction: every job holding one of
/// the held items (their ids as one JSON array, so that a batch of changes
/// alone always has the same text and stays prepared in the connection's
/// cache), and every job holding a claim candidate of one of `groups`, each
/// packed with all its items ([`packed_columns!`]), ordered by job. The last
/// column is a JSON array, by position, naming the groups (`"0"`, `"0,2"`…)
/// each item is a candidate of, or `NULL`; it is `NULL` as a whole without
/// groups. Parameters: `?1` the time (when there are groups), then each
/// group's models in order, then the held items' JSON array.
fn batch_read_sql(held: bool, groups: &[ClaimGroup]) -> String {
    let mut sql = String::from("BEGIN IMMEDIATE; ");
    // `?1` is the time only when there are claims.
    let mut next = if groups.is_empty() { 1 } else { 2 };
    let mut sources = Vec::new();
    if !groups.is_empty() {
        let parts: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let models = group.models.as_deref().map_or(0, <[_]>::len);
                let part = format!(
                    "SELECT {g}, item_id, job_id FROM ({})",
                    claim_sql_at(models, next, group.requests.len())
                );
                next += models;
                part
            })
            .collect();
        sql.push_str("WITH c(g, item_id, job_id) AS MATERIALIZED (");
        sql.push_str(&parts.join(" UNION ALL "));
        sql.push_str(") ");
        sources.push("SELECT job_id FROM c".to_string());
    }
    sql.push_str("SELECT ");
    sql.push_str(packed_columns!());
    sql.push_str(if groups.is_empty() {
        ", NULL"
    } else {
        ", json_group_array((SELECT group_concat(g) FROM c WHERE c.item_id = i.item_id) \
         ORDER BY i.position) FILTER (WHERE i.item_id IS NOT NULL)"
    });
    sql.push_str(" FROM jobs j LEFT JOIN items i ON i.job_id = j.job_id ");
    if held {
        sources.push(format!(
            "SELECT job_id FROM items WHERE item_id IN (SELECT value FROM json_each(?{next}))"
        ));
    }
    sql.push_str("WHERE j.job_id IN (");
    sql.push_str(&sources.join(" UNION "));
    sql.push_str(") GROUP BY j.job_id ORDER BY j.job_id");
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

    /// `claim_next` through the group commit.
    pub(super) async fn claim_batched(
        &self,
        options: ClaimOptions,
    ) -> Result<Option<Claim>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.queue_write(Pending::Claim(ClaimRequest { options, done }));
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the claim was abandoned".into()))?
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
                Ok(mut write) => {
                    let again = run(&mut write, batch).await;
                    self.held.requeue(again);
                }
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
            Pending::Claim(c) => {
                let _ = c.done.send(Err(copy(e)));
            }
        }
    }
}

/// Claim candidates as (job, item index) in claim order, with the groups
/// each is a candidate of.
type Candidates = Vec<((usize, usize), Vec<usize>)>;

/// A claim made in a batch, answered once the batch commits.
struct Made {
    done: oneshot::Sender<Result<Option<Claim>, StoreError>>,
    job: usize,
    idx: usize,
    lease: rows::Lease,
}

/// Makes `batch`'s claims, changes and inserts in one transaction and
/// answers each caller; returns the claims that wait for the next batch.
async fn run(write: &mut WholeWrite, batch: Vec<Pending>) -> Vec<ClaimRequest> {
    let mut held = Vec::new();
    let mut creates = Vec::new();
    let mut claims = Vec::new();
    for p in batch {
        match p {
            Pending::Held(h) => held.push(h),
            Pending::Create(c) => creates.push(c),
            // A caller that stopped waiting claims nothing.
            Pending::Claim(c) if !c.done.is_closed() => claims.push(c),
            Pending::Claim(_) => {}
        }
    }
    let groups = claim_groups(claims);
    let mut jobs = Vec::new();
    let mut outcomes: Vec<(Answer, Result<bool, StoreError>)> = Vec::with_capacity(held.len());
    let mut made: Vec<Made> = Vec::new();
    let mut unclaimed: Vec<oneshot::Sender<Result<Option<Claim>, StoreError>>> = Vec::new();
    let mut again: Vec<ClaimRequest> = Vec::new();
    let mut changed = Vec::new();
    // A batch of new jobs only has nothing to read: its one command begins.
    let began = !held.is_empty() || !groups.is_empty();
    if began {
        let now = rows::now();
        let sql = batch_read_sql(!held.is_empty(), &groups);
        // Only the few common small shapes of claims are worth a place in
        // the connection's statement cache (see `CACHED`); the held items
        // do not change the text.
        let claims = groups.iter().map(|g| g.requests.len()).sum::<usize>();
        let mut read = sqlx::query(AssertSqlSafe(sql)).persistent(claims <= CACHED);
        if !groups.is_empty() {
            read = read.bind(to_ms(now));
        }
        for group in &groups {
            for model in group.models.iter().flat_map(|m| m.iter()) {
                read = read.bind(model.as_str());
            }
        }
        if !held.is_empty() {
            let ids: Vec<String> = held.iter().map(|h| h.item.to_string()).collect();
            read = read.bind(serde_json::to_string(&ids).expect("strings serialize"));
        }
        let read = match read.fetch_all(&mut *write.conn).await {
            Ok(rows) => group(rows),
            Err(e) => Err(db_error("checking leases")(e)),
        };
        let candidates;
        (jobs, candidates) = match read {
            Ok(read) => read,
            Err(e) => {
                // Were the rollback to fail, the connection closes on drop,
                // which rolls back too.
                let _ = rollback(write).await;
                let batch = held
                    .into_iter()
                    .map(Pending::Held)
                    .chain(creates.into_iter().map(Pending::Create))
                    .chain(
                        groups
                            .into_iter()
                            .flat_map(|g| g.requests)
                            .map(Pending::Claim),
                    );
                fail_all(batch.collect(), &e);
                return Vec::new();
            }
        };
        let where_is: HashMap<ItemId, usize> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, loaded)| loaded.job.items.iter().map(move |i| (i.item_id, j)))
            .collect();
        changed = vec![false; jobs.len()];

        // Claims first, on the jobs as read (see the module's doc).
        let mut taken = std::collections::HashSet::new();
        for (g, group) in groups.into_iter().enumerate() {
            let limit = group.requests.len();
            let mine: Vec<(usize, usize)> = candidates
                .iter()
                .filter(|(_, groups)| groups.contains(&g))
                .map(|(at, _)| *at)
                .collect();
            let found = mine.len();
            let mut requests = group.requests.into_iter();
            for (j, idx) in mine {
                if !taken.insert((j, idx)) {
                    continue;
                }
                if worker_lost(&jobs[j], idx, group.max_attempts) {
                    // A change that fails has changed nothing (`rows`).
                    if jobs[j].fail_worker_lost(idx, now).is_ok() {
                        changed[j] = true;
                    }
                    continue;
                }
                let Some(request) = requests.next() else {
                    break;
                };
                match jobs[j].claim(idx, request.options.lease, now) {
                    Ok(lease) => {
                        changed[j] = true;
                        made.push(Made {
                            done: request.done,
                            job: j,
                            idx,
                            lease,
                        });
                    }
                    Err(e) => {
                        let _ = request.done.send(Err(e));
                    }
                }
            }
            // The query found as many as were asked for: more may be
            // claimable than this batch could give (some were taken by
            // another group or failed); otherwise there are none left.
            if found == limit {
                again.extend(requests);
            } else {
                unclaimed.extend(requests.map(|r| r.done));
            }
        }

        for h in held {
            let result = match where_is.get(&h.item) {
                None => Ok(false),
                Some(&j) => {
                    let applied = jobs[j].apply_held(h.item, &h.token, h.change);
                    changed[j] |= matches!(applied, Ok(true));
                    applied
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
        if began { rollback(write).await } else { Ok(()) }
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
        // Only small batches' writes repeat often enough to be worth a
        // place in the statement cache (see `CACHED`).
        let writes = to_save.len() + creates.len();
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(writes <= CACHED);
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
    for m in made {
        let answer = match &write_result {
            Ok(()) => {
                let loaded = &jobs[m.job];
                Ok(Some(Claim {
                    job: loaded.job.clone(),
                    item: loaded.job.items[m.idx].clone(),
                    token: m.lease.token,
                    lease_expires_at: m.lease.expires_at,
                }))
            }
            Err(e) => Err(copy(e)),
        };
        let _ = m.done.send(answer);
    }
    for done in unclaimed {
        // Nothing was claimable; after a failed write, the worker should
        // try again rather than wait for news.
        let _ = done.send(write_result.as_ref().map_err(copy).map(|()| None));
    }
    again
}

/// The rows of the batch read: one loaded job per row (ordered by job id),
/// and the claim candidates in claim order, each as (job, item index) with
/// the groups it is a candidate of.
fn group(rows: Vec<sqlx::sqlite::SqliteRow>) -> Result<(Vec<LoadedJob>, Candidates), StoreError> {
    use sqlx::{FromRow, Row};
    let mut jobs = Vec::with_capacity(rows.len());
    let mut candidates = Vec::new();
    for row in &rows {
        let markers: Option<&str> = row
            .try_get(12)
            .map_err(db_error("reading claim candidates"))?;
        let markers: Vec<Option<String>> = match markers {
            None => Vec::new(),
            Some(json) => serde_json::from_str(json)
                .map_err(|e| StoreError::Corrupt(format!("bad claim candidates: {e}")))?,
        };
        let row = PackedRow::from_row(row).map_err(db_error("reading a job"))?;
        let job = rows::load_job(row.job, row.items)?;
        for (idx, marker) in markers.into_iter().enumerate() {
            let Some(marker) = marker else { continue };
            if idx >= job.job.items.len() {
                return Err(StoreError::Corrupt(
                    "a claim candidate not in its job".into(),
                ));
            }
            let groups = marker
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| StoreError::Corrupt(format!("a bad candidate mark {marker}")))?;
            // The job's items are in position order (see `load_job`).
            candidates.push(((jobs.len(), idx), groups));
        }
        jobs.push(job);
    }
    Ok((jobs, candidates))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::join_all;
    use image2model_core::domain::{ApiKeyId, BlobKey, ItemStatus, JobId, JobStatus, ModelName};
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

    /// Spawns `writes` while this test holds the writer's turn, so that they
    /// all wait in the queue, then lets them go in; their results and the
    /// number of batches they took.
    async fn queued_together<T: Send + 'static>(
        store: &SqliteDatabase,
        writes: impl FnOnce() -> Vec<tokio::task::JoinHandle<T>>,
    ) -> (Vec<T>, usize) {
        let turn = store.whole_write().await.unwrap();
        let before = store.held_batches();
        let writes = writes();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(turn);
        let mut out = Vec::new();
        for w in writes {
            out.push(w.await.unwrap());
        }
        (out, store.held_batches() - before)
    }

    #[tokio::test]
    async fn queued_claims_take_distinct_items_oldest_first_in_one_batch() {
        let (_dir, store) = store().await;
        let owner = ApiKeyId::bootstrap_user();
        let mut items = Vec::new();
        for n in [3, 1, 4] {
            let id = JobId::new();
            store.create_job(new_job(id, &owner, n)).await.unwrap();
            let job = store.get_job(id).await.unwrap().unwrap();
            items.extend(
                job.items
                    .iter()
                    .enumerate()
                    .map(|(p, i)| (id, p, i.item_id)),
            );
        }
        items.sort_by_key(|&(job, position, _)| (job.to_string(), position));
        // Five claims for eight items, then five more for the three left.
        let spawn_claims = || {
            (0..5)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.claim_next(CLAIM).await.unwrap() })
                })
                .collect()
        };
        let (first, batches) = queued_together(&store, spawn_claims).await;
        assert_eq!(batches, 1, "five queued claims took {batches} batches");
        let first: Vec<Claim> = first.into_iter().map(|c| c.expect("an item")).collect();
        let got: Vec<ItemId> = first.iter().map(|c| c.item.item_id).collect();
        let oldest: Vec<ItemId> = items.iter().take(5).map(|i| i.2).collect();
        assert_eq!(got, oldest, "not the five oldest, in order");
        let (second, _) = queued_together(&store, spawn_claims).await;
        let second: Vec<Claim> = second.into_iter().flatten().collect();
        assert_eq!(second.len(), 3, "three items were left");
        let mut all: Vec<ItemId> = first
            .iter()
            .chain(&second)
            .map(|c| c.item.item_id)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 8, "an item was claimed twice");
        // Each claim holds its item: its token works, and the stored item
        // is running with one attempt.
        for c in first.iter().chain(&second) {
            assert_eq!(c.item.status, ItemStatus::Running);
            assert_eq!(c.item.attempts, 1);
            assert!(
                store
                    .change_held(
                        c.item.item_id,
                        &c.token,
                        HeldChange::Progress(50.try_into().unwrap())
                    )
                    .await
                    .unwrap()
            );
        }
        assert!(store.claim_next(CLAIM).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn claims_for_other_models_in_one_batch_never_share_an_item() {
        let (_dir, store) = store().await;
        let owner = ApiKeyId::bootstrap_user();
        let other = ModelName::parse("trellis").unwrap();
        let mut total = 0;
        for n in 0..6 {
            let mut job = new_job(JobId::new(), &owner, 2);
            if n % 2 == 0 {
                job.options.model = other.clone();
            }
            total += 2;
            store.create_job(job).await.unwrap();
        }
        let only_other = ClaimOptions {
            models: Some(std::sync::Arc::from(vec![other.clone()])),
            ..CLAIM
        };
        // Any model (overlapping the others) and one model, queued together.
        let claims = || {
            (0..16)
                .map(|n| {
                    let store = store.clone();
                    let options = if n % 2 == 0 {
                        CLAIM
                    } else {
                        only_other.clone()
                    };
                    tokio::spawn(async move { (n, store.claim_next(options).await.unwrap()) })
                })
                .collect()
        };
        let (got, _) = queued_together(&store, claims).await;
        let mut ids = Vec::new();
        let mut other_claimed = 0;
        for (n, claim) in got.into_iter() {
            match claim {
                Some(c) => {
                    if n % 2 == 1 {
                        assert_eq!(c.job.options.model, other, "a claim got another model");
                    }
                    if c.job.options.model == other {
                        other_claimed += 1;
                    }
                    ids.push(c.item.item_id);
                }
                // Only a one-model claim may come back empty-handed: the
                // eight any-model claims had twelve items to take.
                None => assert_eq!(n % 2, 1, "an any-model claim got nothing"),
            }
        }
        let claimed = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), claimed, "an item was claimed twice");
        assert_eq!(
            other_claimed, 6,
            "eight one-model claims left some of six items"
        );
        // What is left goes to later claims, once each.
        while let Some(c) = store.claim_next(CLAIM).await.unwrap() {
            assert!(!ids.contains(&c.item.item_id), "claimed twice");
            ids.push(c.item.item_id);
        }
        assert_eq!(ids.len(), total);
    }

    #[tokio::test]
    async fn a_claim_and_the_old_holders_end_in_one_batch_leave_the_item_to_the_claim() {
        let (_dir, store) = store().await;
        let owner = ApiKeyId::bootstrap_user();
        let id = JobId::new();
        store.create_job(new_job(id, &owner, 2)).await.unwrap();
        // A lease that has already expired: the item is claimable again.
        let short = ClaimOptions {
            lease: Duration::ZERO,
            ..CLAIM
        };
        let old = store.claim_next(short).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let writes = || {
            vec![
                {
                    let store = store.clone();
                    tokio::spawn(async move { Err(store.claim_next(CLAIM).await.unwrap()) })
                },
                {
                    let store = store.clone();
                    let (item, token, end) = (old.item.item_id, old.token.clone(), success(&old));
                    tokio::spawn(
                        async move { Ok(store.change_held(item, &token, end).await.unwrap()) },
                    )
                },
            ]
        };
        let (out, batches) = queued_together(&store, writes).await;
        assert_eq!(batches, 1);
        let again = match &out[0] {
            Err(Some(claim)) => claim.clone(),
            other => panic!("the claim got {other:?}"),
        };
        assert_eq!(again.item.item_id, old.item.item_id, "not the oldest item");
        assert_eq!(again.item.attempts, 2);
        assert!(
            matches!(out[1], Ok(false)),
            "the old holder's end was taken"
        );
        let job = store.get_job(id).await.unwrap().unwrap();
        let item = job.item(old.item.item_id).unwrap();
        assert_eq!(item.status, ItemStatus::Running);
        assert!(item.model_key.is_none());
    }

    #[tokio::test]
    async fn a_claim_whose_write_fails_claims_nothing() {
        let (_dir, store) = store().await;
        let owner = ApiKeyId::bootstrap_user();
        let id = JobId::new();
        store.create_job(new_job(id, &owner, 3)).await.unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON items \
             WHEN NEW.status = 'running' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(store.writer())
        .await
        .unwrap();
        let claims = || {
            (0..2)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.claim_next(CLAIM).await })
                })
                .collect()
        };
        let (got, _) = queued_together(&store, claims).await;
        assert!(got.iter().all(Result::is_err), "{got:?}");
        let job = store.get_job(id).await.unwrap().unwrap();
        assert!(
            job.items
                .iter()
                .all(|i| i.status == ItemStatus::Queued && i.attempts == 0)
        );
        sqlx::query("DROP TRIGGER refuse")
            .execute(store.writer())
            .await
            .unwrap();
        assert!(store.claim_next(CLAIM).await.unwrap().is_some());
    }
}
