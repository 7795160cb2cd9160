//! [`PostgresDatabase`]: the job store in PostgreSQL, shared by any number of
//! API and worker processes.
//!
//! Workers claim with `SELECT … FOR UPDATE OF items SKIP LOCKED`: an item row
//! locked by one claimer is skipped by the others, so two workers never take
//! the same item and never wait on each other. Every write locks rows in one
//! order, items before their job (a job's items in position order), so that
//! concurrent writers cannot deadlock; the job row lock serialises the
//! recomputation of a job's status and progress, and the last writer always
//! recomputes from every item's committed state.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use image2model_core::domain::{
    ApiKeyId, ItemId, ItemStatus, Job, JobId, OwnerUsage, Periods, Usage,
};
use image2model_core::ports::{
    Claim, ClaimOptions, CreateOutcome, HeldChange, JobPage, JobStore, LeaseToken, ListQuery,
    NewJob, QueueStats, StoreError,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, Postgres};

use crate::rows::{
    self, DeliveryRow, ENDED_STATUSES, ITEM_COLUMNS, ItemRow, JOB_COLUMNS, JobRow, LoadedJob,
    MAX_PAGE, RENEW_CHUNK, db_error, to_ms,
};

/// The migrations, embedded at build time from `migrations/postgres`.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long to wait for a connection before reporting the store unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database holding jobs, API keys and the audit trail: it is
/// the [`JobStore`], the [`KeyStore`](image2model_core::ports::KeyStore) and
/// the [`AuditLog`](image2model_core::ports::AuditLog) of one connection pool
/// (the last two in module `keys`).
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    pub(crate) pool: PgPool,
}

impl PostgresDatabase {
    /// Connects to `url` (`postgres://user:password@host:port/db`, with the
    /// usual query parameters) and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached,
    /// [`StoreError::Backend`] for a malformed URL or a failed migration.
    /// Messages never contain the password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Backend("invalid Postgres URL".into()))?;
        Self::connect_with(options, 10).await
    }

    /// Connects with explicit options (e.g. a `search_path` for a schema of
    /// its own) and at most `max_connections` connections, then migrates.
    ///
    /// # Errors
    /// As for [`PostgresDatabase::connect`].
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(_) => db_error("connecting to Postgres")(e),
                other => StoreError::Unavailable(format!("connecting to Postgres: {other}")),
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("migrating the Postgres database: {e}")))?;
        Ok(Self { pool })
    }

    /// The connection pool, for tests and maintenance.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn write(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        self.pool
            .begin()
            .await
            .map_err(db_error("starting a transaction"))
    }

    /// A read-only transaction with one snapshot for all its statements.
    async fn read(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_error("starting a read"))
    }
}

/// Loads a job; with `lock`, locks its items (in position order) and then
/// its row for the rest of the transaction.
async fn load(
    conn: &mut PgConnection,
    job_id: &str,
    lock: bool,
) -> Result<Option<LoadedJob>, StoreError> {
    if lock {
        sqlx::query("SELECT item_id FROM items WHERE job_id = $1 ORDER BY position FOR UPDATE")
            .bind(job_id)
            .execute(&mut *conn)
            .await
            .map_err(db_error("locking a job's items"))?;
    }
    let row: Option<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    )))
    .bind(job_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error("reading a job"))?;
    let Some(row) = row else { return Ok(None) };
    let items: Vec<ItemRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE job_id = $1 ORDER BY position"
    )))
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("reading a job's items"))?;
    rows::load_job(row, items).map(Some)
}

/// Locks the job row only (its item was locked already), then loads the job.
async fn load_after_item_lock(
    conn: &mut PgConnection,
    job_id: &str,
) -> Result<Option<LoadedJob>, StoreError> {
    sqlx::query("SELECT job_id FROM jobs WHERE job_id = $1 FOR UPDATE")
        .bind(job_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error("locking a job"))?;
    load(conn, job_id, false).await
}

async fn with_items(conn: &mut PgConnection, jobs: Vec<JobRow>) -> Result<Vec<Job>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let items: Vec<ItemRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE job_id = ANY($1) ORDER BY job_id, position"
    )))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error("reading items"))?;
    rows::load_jobs(jobs, items)
}

async fn save(conn: &mut PgConnection, loaded: &LoadedJob) -> Result<(), StoreError> {
    for row in loaded.dirty_rows() {
        row.bind_update_to(sqlx::query(
            "UPDATE items SET status = $1, progress = $2, error_code = $3, error_message = $4, \
             model_key = $5, preview_key = $6, remote_request_id = $7, attempts = $8, \
             lease_token = $9, lease_expires_at_ms = $10, updated_at_ms = $11 WHERE item_id = $12",
        ))
        .execute(&mut *conn)
        .await
        .map_err(db_error("updating an item"))?;
    }
    JobRow::from_job(&loaded.job)
        .bind_update_to(sqlx::query(
            "UPDATE jobs SET status = $1, progress = $2, cancel_requested = $3, updated_at_ms = $4 \
             WHERE job_id = $5",
        ))
        .execute(&mut *conn)
        .await
        .map_err(db_error("updating a job"))?;
    Ok(())
}

/// Inserts a job and its items; `false` when the owner's idempotency key is
/// taken (then nothing was inserted).
async fn insert(conn: &mut PgConnection, job: &Job) -> Result<bool, StoreError> {
    let inserted = JobRow::from_job(job)
        .bind_to(sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING job_id"
        ))))
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("inserting a job"))?;
    if inserted.is_none() {
        return Ok(false);
    }
    for (position, item) in job.items.iter().enumerate() {
        ItemRow::from_item(job.job_id, position, item, None)
            .bind_to(sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO items ({ITEM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            ))))
            .execute(&mut *conn)
            .await
            .map_err(db_error("inserting an item"))?;
    }
    Ok(true)
}

async fn find_key(
    conn: &mut PgConnection,
    owner: &ApiKeyId,
    key: &str,
) -> Result<Option<LoadedJob>, StoreError> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT job_id FROM jobs WHERE owner = $1 AND idempotency_key = $2")
            .bind(owner.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("finding an idempotency key"))?;
    match id {
        Some(id) => load(conn, &id, false).await,
        None => Ok(None),
    }
}

/// The claim's candidate: the oldest claimable item of any model, locked
/// (an item another claimer has locked is skipped).
const CLAIM_ANY_SQL: &str = "SELECT i.item_id, i.job_id FROM items i \
     JOIN jobs j ON j.job_id = i.job_id \
     WHERE NOT j.cancel_requested AND (i.status = 'queued' OR (i.status = 'running' \
     AND (i.lease_expires_at_ms IS NULL OR i.lease_expires_at_ms <= $1))) \
     ORDER BY i.job_id, i.position LIMIT 1 FOR UPDATE OF i SKIP LOCKED";

/// [`CLAIM_ANY_SQL`] for jobs of the models in `$2` (a text array) only.
const CLAIM_MODELS_SQL: &str = "SELECT i.item_id, i.job_id FROM items i \
     JOIN jobs j ON j.job_id = i.job_id \
     WHERE NOT j.cancel_requested AND (i.status = 'queued' OR (i.status = 'running' \
     AND (i.lease_expires_at_ms IS NULL OR i.lease_expires_at_ms <= $1))) \
     AND j.model = ANY($2::text[]) \
     ORDER BY i.job_id, i.position LIMIT 1 FOR UPDATE OF i SKIP LOCKED";

/// Renews the leases in `$1` (item ids) and `$2` (their tokens) still held
/// by those tokens to `$3`, returning the renewed items and tokens.
///
/// The `held` step locks the rows first, in `(job_id, position)` order,
/// the order every other writer locks a job's items in, so that a batch
/// spanning many jobs cannot deadlock with a cancel or delete locking one
/// job's items (an `UPDATE … FROM unnest(…)` alone would lock them in
/// whatever order its join produced). A row changed by a writer that
/// commits first is checked again on its new version (a cancelled or
/// reclaimed item no longer matches). Only `lease_expires_at_ms` is written:
/// see [`LoadedJob::renew`].
const RENEW_SQL: &str = "WITH held AS (\
     SELECT i.item_id FROM items i \
     JOIN unnest($1::text[], $2::text[]) AS l(item_id, lease_token) \
     ON i.item_id = l.item_id AND i.lease_token = l.lease_token \
     WHERE i.status = 'running' ORDER BY i.job_id, i.position FOR UPDATE OF i) \
     UPDATE items SET lease_expires_at_ms = $3 FROM held WHERE items.item_id = held.item_id \
     RETURNING items.item_id, items.lease_token";

impl PostgresDatabase {}

#[async_trait]
impl JobStore for PostgresDatabase {
    async fn create_job(&self, mut new: NewJob) -> Result<CreateOutcome, StoreError> {
        let charge = new.charge.take();
        let owner = new.owner.clone();
        let key = new.idempotency_key.clone();
        let callback = new.callback.take();
        let job = rows::new_job(new, rows::now())?;
        let delivery = rows::new_delivery(callback, &job);
        let mut tx = self.write().await?;
        if !insert(&mut tx, &job).await? {
            // The owner's key is taken (perhaps by a racing create whose
            // commit the insert waited for): nothing was written here, so
            // end this transaction and return the job that holds the key.
            tx.rollback().await.map_err(db_error("rolling back"))?;
            let key = key.expect("only a keyed insert can conflict");
            let mut conn = self.pool.acquire().await.map_err(db_error("connecting"))?;
            let existing = find_key(&mut conn, &owner, &key).await?.ok_or_else(|| {
                StoreError::Backend("an idempotency key conflicted with no job".into())
            })?;
            return Ok(CreateOutcome::Existing(existing.job));
        }
        if let Some(charge) = &charge
            && let Some(over) = Self::charge_usage(&mut tx, &owner, charge).await?
        {
            tx.rollback().await.map_err(db_error("rolling back"))?;
            return Ok(CreateOutcome::OverQuota(over));
        }
        if let Some(delivery) = &delivery {
            DeliveryRow::from_delivery(delivery)
                .bind_to(sqlx::query(AssertSqlSafe(rows::delivery_insert_sql(true))))
                .execute(&mut *tx)
                .await
                .map_err(db_error("inserting a webhook delivery"))?;
        }
        let stored = rows::as_stored(&job)?;
        tx.commit()
            .await
            .map_err(db_error("committing a new job"))?;
        Ok(CreateOutcome::Created(stored))
    }

    async fn usage(&self, owner: &ApiKeyId, periods: Periods) -> Result<Usage, StoreError> {
        self.read_usage(owner, periods).await
    }

    async fn usage_by_owner(&self, periods: Periods) -> Result<Vec<OwnerUsage>, StoreError> {
        self.read_usage_by_owner(periods).await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut tx = self.read().await?;
        let job = load(&mut tx, &id.to_string(), false).await?.map(|l| l.job);
        tx.commit().await.map_err(db_error("ending a read"))?;
        Ok(job)
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &ApiKeyId,
        key: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.read().await?;
        let job = find_key(&mut tx, owner, key).await?.map(|l| l.job);
        tx.commit().await.map_err(db_error("ending a read"))?;
        Ok(job)
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<JobPage, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut tx = self.read().await?;
        let job_rows: Vec<JobRow> = rows::list_statement::<Postgres>(query, limit)
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error("listing jobs"))?;
        let (job_rows, more) = rows::page_rows(job_rows, limit);
        let jobs = with_items(&mut tx, job_rows).await?;
        tx.commit().await.map_err(db_error("ending a read"))?;
        Ok(rows::page(jobs, more))
    }

    fn worker_lost_count(&self) -> Option<u64> {
        Some(rows::worker_lost_count())
    }

    async fn claim_next(&self, options: ClaimOptions) -> Result<Option<Claim>, StoreError> {
        let models: Option<Vec<String>> = options
            .models
            .as_deref()
            .map(|m| m.iter().map(|m| m.as_str().to_owned()).collect());
        if models.as_ref().is_some_and(Vec::is_empty) {
            // No model is claimable: nothing to look at, nothing to fail.
            return Ok(None);
        }
        let mut tx = self.write().await?;
        let now = rows::now();
        loop {
            let candidate: Option<(String, String)> = match &models {
                None => sqlx::query_as(AssertSqlSafe(CLAIM_ANY_SQL)).bind(to_ms(now)),
                Some(models) => sqlx::query_as(AssertSqlSafe(CLAIM_MODELS_SQL))
                    .bind(to_ms(now))
                    .bind(models),
            }
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error("finding a claimable item"))?;
            let Some((item_id, job_id)) = candidate else {
                // Commit any worker_lost failures made on the way.
                tx.commit().await.map_err(db_error("committing"))?;
                return Ok(None);
            };
            let mut loaded = load_after_item_lock(&mut tx, &job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("an item without its job".into()))?;
            let idx = loaded
                .job
                .items
                .iter()
                .position(|i| i.item_id.to_string() == item_id)
                .ok_or_else(|| StoreError::Corrupt("a claimable item not in its job".into()))?;
            // The job may have been cancelled while we waited for its lock.
            if loaded.job.cancel_requested || loaded.job.items[idx].status.is_terminal() {
                continue;
            }
            let item = &loaded.job.items[idx];
            if item.status == ItemStatus::Running && item.attempts >= options.max_attempts {
                loaded.fail_worker_lost(idx, now)?;
                save(&mut tx, &loaded).await?;
                continue;
            }
            let lease = loaded.claim(idx, options.lease, now)?;
            save(&mut tx, &loaded).await?;
            tx.commit().await.map_err(db_error("committing a claim"))?;
            return Ok(Some(loaded.into_claim(idx, lease)));
        }
    }

    /// Makes `change` to the item's job when `token` holds the item, with the
    /// item and then its job locked; `Ok(false)` (nothing written) otherwise.
    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write().await?;
        let job_id: Option<String> = sqlx::query_scalar(
            "SELECT job_id FROM items WHERE item_id = $1 AND status = 'running' \
             AND lease_token = $2 FOR UPDATE",
        )
        .bind(item.to_string())
        .bind(token.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("checking a lease"))?;
        let Some(job_id) = job_id else {
            return Ok(false);
        };
        let Some(mut loaded) = load_after_item_lock(&mut tx, &job_id).await? else {
            return Ok(false);
        };
        if !loaded.apply_held(item, token, change)? {
            return Ok(false);
        }
        save(&mut tx, &loaded).await?;
        tx.commit().await.map_err(db_error("committing"))?;
        Ok(true)
    }

    /// One statement (`RENEW_SQL`) per `RENEW_CHUNK` leases, each its
    /// own transaction: its row locks last one statement, and a chunk never
    /// holds locks while it waits for another chunk's rows.
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        let mut lost = Vec::new();
        for chunk in leases.chunks(RENEW_CHUNK) {
            let (items, tokens): (Vec<String>, Vec<String>) = chunk
                .iter()
                .map(|(item, token)| (item.to_string(), token.as_str().to_owned()))
                .unzip();
            let renewed: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(RENEW_SQL))
                .bind(items)
                .bind(tokens)
                .bind(to_ms(rows::lease_until(rows::now(), lease)))
                .fetch_all(&self.pool)
                .await
                .map_err(db_error("renewing leases"))?;
            lost.extend(rows::not_renewed(chunk, renewed));
        }
        Ok(lost)
    }

    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write().await?;
        let Some(mut loaded) = load(&mut tx, &id.to_string(), true).await? else {
            return Ok(None);
        };
        loaded.cancel(rows::now())?;
        save(&mut tx, &loaded).await?;
        tx.commit().await.map_err(db_error("committing a cancel"))?;
        Ok(Some(loaded.job))
    }

    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write().await?;
        let Some(loaded) = load(&mut tx, &id.to_string(), true).await? else {
            return Ok(None);
        };
        // Items go with their job (ON DELETE CASCADE).
        sqlx::query("DELETE FROM jobs WHERE job_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error("deleting a job"))?;
        tx.commit().await.map_err(db_error("committing a delete"))?;
        Ok(Some(loaded.job))
    }

    async fn ended_jobs_before(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let mut tx = self.read().await?;
        let statuses: Vec<String> = ENDED_STATUSES.iter().map(|s| (*s).to_owned()).collect();
        let job_rows: Vec<JobRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ANY($1) AND updated_at_ms < $2 \
             ORDER BY updated_at_ms, job_id LIMIT $3"
        )))
        .bind(statuses)
        .bind(to_ms(before))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error("listing ended jobs"))?;
        let jobs = with_items(&mut tx, job_rows).await?;
        tx.commit().await.map_err(db_error("ending a read"))?;
        Ok(jobs)
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        rows::queue_stats(&self.pool).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        rows::ping(&self.pool).await
    }

    fn callbacks(&self) -> Option<std::sync::Arc<dyn image2model_core::ports::CallbackStore>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}
