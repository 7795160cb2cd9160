//! [`SqliteDatabase`]: the job store in one SQLite file.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's
//! single write lock up front: two connections (or two processes) can never
//! claim the same item, and no transaction has to be retried half-way because
//! another upgraded its lock first. Reads see a consistent snapshot (WAL mode).
//!
//! Writes in this process take turns: a writer waits (in order, on an async
//! mutex) for its turn before it begins, so it never meets SQLite's lock
//! held by another connection of ours. A connection that finds the lock
//! taken does not queue: it sleeps in SQLite's busy handler (1, 2, 5, 10…
//! ms) before it tries again, and with uploads committing concurrently
//! those sleeps were most of an upload's time (see `docs/BENCHMARKS.md`).
//! Writes use their own pool of one connection. Its page cache stays valid
//! from one write to the next: with two connections taking turns, each
//! write began by finding the other's changes and reading their pages
//! again, and SQLite's thread spent 0.15–0.17 ms per upload instead of
//! 0.115–0.125 (see `docs/BENCHMARKS.md`). Other processes sharing the file
//! still meet the lock, and the busy timeout still covers them. Reads use a pool of several connections and
//! never wait for a writer (WAL).
//!
//! Every command is a round trip to the connection's thread (sqlx runs each
//! SQLite connection on a thread of its own), so a new job without an
//! idempotency key or limits goes in with one: `BEGIN IMMEDIATE`, one
//! `INSERT` per row, `COMMIT`, in one query string, shared with the other
//! new jobs and lease changes queued meanwhile (group commit, module
//! `held_batch`). A connection whose command was cut
//! short (an error half-way, or the caller gone) may be left inside that
//! transaction, so it is closed, which rolls it back, instead of going back
//! to the pool. In memory, where closing the one connection would lose the
//! database, the job goes in through an ordinary transaction.
//!
//! The other writes follow the same rule (one job's changes): a claim is
//! two commands, `BEGIN IMMEDIATE` with the read of the job (one packed
//! statement), then every `UPDATE` with the `COMMIT`; changes under a lease
//! are the same two commands for all of them that wait for the writer's
//! turn (group commit, module `held_batch`). A job is read whole by one
//! statement. Thousands of items in flight made every statement count: the
//! writer's turn queue was the latency of the FAL-bound load
//! (`docs/BENCHMARKS.md`, "FAL-bound throughput").
//!
//! The dedicated writer connection, the two-command writes and the group
//! commit exist only for speed. `SQLITE_FAST_WRITES=false`
//! ([`SqliteOptions`]) turns them all off: writes then use the read pool's connections and ordinary
//! transactions (a statement per command), as the in-memory database always
//! does, so a bug report can rule them out. The conformance suite runs on
//! both paths; a change to either must keep it passing on both.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use image2model_core::domain::{
    ApiKeyId, Charge, Delivery, ItemId, ItemStatus, Job, JobId, OwnerUsage, Periods, Usage,
};
use image2model_core::ports::{
    Claim, ClaimOptions, CreateOutcome, HeldChange, JobPage, JobStore, LeaseToken, ListQuery,
    NewJob, QueueStats, StoreError,
};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

use crate::rows::{
    self, DeliveryRow, ENDED_STATUSES, ITEM_COLUMNS, ItemRow, JOB_COLUMNS, JobRow, LoadedJob,
    MAX_PAGE, RENEW_CHUNK, db_error, to_ms,
};

/// How long a connection waits for SQLite's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The migrations, embedded at build time from `migrations/sqlite`.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How a [`SqliteDatabase`] writes. The default is the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Writes go through a connection of their own and, where a write is
    /// one job's changes, as two commands (`BEGIN IMMEDIATE` with the read;
    /// the updates with `COMMIT`). Off, writes share the read pool and run
    /// as ordinary transactions.
    pub fast_writes: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { fast_writes: true }
    }
}

/// A SQLite database (WAL mode, foreign keys on) holding jobs, API keys and
/// the audit trail: it is the [`JobStore`], the
/// [`KeyStore`](image2model_core::ports::KeyStore) and the
/// [`AuditLog`](image2model_core::ports::AuditLog) of one connection pool
/// (the last two in module `keys`).
#[derive(Debug, Clone)]
pub struct SqliteDatabase {
    /// Reads (several connections).
    pub(crate) pool: SqlitePool,
    /// Writes: a pool of one connection of their own (`pool` itself in
    /// memory and without [`SqliteOptions::fast_writes`]), used one writer
    /// at a time.
    writer: SqlitePool,
    /// A writer's turn: held from before `BEGIN` to after `COMMIT`.
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether a write may be one command that begins and commits its own
    /// transaction ([`WholeWrite`]): not in memory, where closing the one
    /// connection would lose the database, nor without
    /// [`SqliteOptions::fast_writes`].
    whole_writes: bool,
    /// Changes under a lease waiting for the writer, made together
    /// (module `held_batch`; with `whole_writes` only).
    held: Arc<HeldBatcher>,
    /// What [`SqliteDatabase::describe`] shows: the file, or `:memory:`.
    location: String,
}

impl SqliteDatabase {
    /// Opens (creating it and its parent directory on first run) the database
    /// file at `path` and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the directory or file cannot be made
    /// or opened, [`StoreError::Backend`] when a migration fails.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens the database file at `path` as [`SqliteDatabase::open`] does,
    /// writing as `options` say.
    ///
    /// # Errors
    /// As for [`SqliteDatabase::open`].
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let fast_writes = options.fast_writes;
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Unavailable(format!("creating the database directory: {e}"))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // The writers connect first: they create the file and set WAL mode.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file does not go stale like a network connection: the
            // ping before each acquire was one more round trip to the
            // connection's thread on every query (see docs/BENCHMARKS.md).
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await
            .map_err(db_error("opening the SQLite database"))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(db_error("opening the SQLite database"))?;
        if !fast_writes {
            writer.close().await;
            let location = path.display().to_string();
            return Self::migrated(pool.clone(), pool, location, false).await;
        }
        Self::migrated(pool, writer, path.display().to_string(), true).await
    }

    /// A private in-memory database, lost when the store is dropped.
    ///
    /// It lives in one connection that the pool never closes, because every
    /// new connection to `:memory:` would be a new, empty database.
    ///
    /// # Errors
    /// As for [`SqliteDatabase::open`].
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_error("in-memory SQLite options"))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_error("opening the in-memory SQLite database"))?;
        Self::migrated(pool.clone(), pool, ":memory:".to_owned(), false).await
    }

    async fn migrated(
        pool: SqlitePool,
        writer: SqlitePool,
        location: String,
        whole_writes: bool,
    ) -> Result<Self, StoreError> {
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend(format!("migrating the SQLite database: {e}")))?;
        Ok(Self {
            pool,
            writer,
            write_turn: Arc::new(tokio::sync::Mutex::new(())),
            whole_writes,
            held: Arc::default(),
            location,
        })
    }

    /// The file (or `:memory:`) this store uses.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The read connection pool, for tests and maintenance.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The write connection: every statement that changes the database goes
    /// through it, one writer at a time (see [`Self::write_turn`]).
    #[must_use]
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Waits for this process's next turn to write, in order of arrival.
    /// Hold it while a statement on [`Self::writer`] changes the database.
    pub async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_turn.clone().lock_owned().await
    }

    /// Closes every connection (after the statements in flight finish).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// The path a `sqlite://…` URL names (`sqlite://./data/x.db`,
    /// `sqlite:///abs/x.db`, `sqlite:x.db`), or `None` for `sqlite::memory:`.
    #[must_use]
    pub fn path_from_url(url: &str) -> Option<PathBuf> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
        if rest.is_empty() || rest == ":memory:" {
            None
        } else {
            Some(PathBuf::from(rest))
        }
    }

    /// A write connection for one whole-transaction command, in this
    /// process's turn.
    async fn whole_write(&self) -> Result<WholeWrite, StoreError> {
        let turn = self.write_turn().await;
        let conn = self
            .writer
            .acquire()
            .await
            .map_err(db_error("starting a write transaction"))?;
        Ok(WholeWrite {
            conn,
            kept: false,
            _turn: turn,
        })
    }

    /// A write transaction holding SQLite's write lock from its start, begun
    /// in this process's turn.
    pub(crate) async fn write(&self) -> Result<WriteTx, StoreError> {
        let turn = self.write_turn().await;
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("starting a write transaction"))?;
        Ok(WriteTx { tx, _turn: turn })
    }
}

/// A write connection for one command that begins and commits its own
/// transaction (`BEGIN IMMEDIATE; …; COMMIT`), and the turn it holds: one
/// round trip to the connection's thread instead of three. Unless `kept`,
/// the connection is closed when this is dropped instead of going back to
/// the pool: a command cut short (an error mid-way, or the future dropped
/// while the connection's thread runs it) can leave its transaction open,
/// and closing the connection rolls it back.
struct WholeWrite {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    kept: bool,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for WholeWrite {
    fn drop(&mut self) {
        if !self.kept {
            self.conn.close_on_drop();
        }
    }
}

/// A write transaction and the turn it holds until it commits or is
/// dropped. Dropped uncommitted, sqlx queues its rollback on the
/// connection's thread at once, and the writer taking the next turn gets
/// the connection back after it.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A job with its items, for a change: one statement (the packed read), as
/// every statement is a hand-off to and from the connection's thread.
async fn load(conn: &mut SqliteConnection, job_id: &str) -> Result<Option<LoadedJob>, StoreError> {
    let row: Option<PackedRow> = sqlx::query_as(AssertSqlSafe(JOINED_SQL))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("reading a job"))?;
    unpacked(row)
}

/// The job of `item` when `token` holds it (running), loaded whole by one
/// statement; `None` when the token does not hold it.
async fn load_held(
    conn: &mut SqliteConnection,
    item: ItemId,
    token: &LeaseToken,
) -> Result<Option<LoadedJob>, StoreError> {
    let row: Option<PackedRow> = sqlx::query_as(AssertSqlSafe(HELD_SQL))
        .bind(item.to_string())
        .bind(token.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error("checking a lease"))?;
    unpacked(row)
}

/// Assembles the row of a packed read into the job.
fn unpacked(row: Option<PackedRow>) -> Result<Option<LoadedJob>, StoreError> {
    row.map(|row| rows::load_job(row.job, row.items))
        .transpose()
}

/// The columns of a packed read: the job's, in [`JobRow`] order, then its
/// items as one JSON array of arrays in [`ItemRow`] order (by position), for
/// the jobs named by the `WHERE` that follows, which must end in
/// `GROUP BY j.job_id`.
///
/// One row per job rather than one per item: sqlx hands every row from the
/// connection's thread to the task that reads it, and every text value is
/// copied there and freed on the other side; a 25-item job was 25 hand-offs
/// and about 350 copies (docs/BENCHMARKS.md, "Session 15").
macro_rules! packed_columns {
    () => {
        concat!(
            "j.job_id, j.owner, j.status, j.progress, j.model, j.face_limit, \
             j.texture, j.idempotency_key, j.cancel_requested, j.created_at_ms, \
             j.updated_at_ms, ",
            packed_items!("i."),
            " FILTER (WHERE i.item_id IS NOT NULL)"
        )
    };
}
/// The items of a job as one JSON array of arrays in [`ItemRow`] order, by
/// position (an aggregate; `$p` is the items table's prefix).
macro_rules! packed_items {
    ($p:literal) => {
        concat!(
            "json_group_array(json_array(",
            $p,
            "item_id, ",
            $p,
            "job_id, ",
            $p,
            "position, ",
            $p,
            "filename, ",
            $p,
            "content_type, ",
            $p,
            "size_bytes, ",
            $p,
            "width, ",
            $p,
            "height, ",
            $p,
            "upload_key, ",
            $p,
            "status, ",
            $p,
            "progress, ",
            $p,
            "error_code, ",
            $p,
            "error_message, ",
            $p,
            "model_key, ",
            $p,
            "preview_key, ",
            $p,
            "remote_request_id, ",
            $p,
            "attempts, ",
            $p,
            "lease_token, ",
            $p,
            "lease_expires_at_ms, ",
            $p,
            "updated_at_ms",
            ") ORDER BY ",
            $p,
            "position)"
        )
    };
}
macro_rules! packed_select {
    () => {
        concat!(
            "SELECT ",
            packed_columns!(),
            " FROM jobs j LEFT JOIN items i ON i.job_id = j.job_id "
        )
    };
}

/// One job and its items ([`read_job`], [`load`]).
const JOINED_SQL: &str = concat!(packed_select!(), "WHERE j.job_id = ? GROUP BY j.job_id");

/// The job of an item its token holds ([`load_held`]).
const HELD_SQL: &str = concat!(
    packed_select!(),
    "WHERE j.job_id = (SELECT job_id FROM items WHERE item_id = ? AND status = 'running' \
     AND lease_token = ?) GROUP BY j.job_id"
);

// After the SQL macros, which it uses.
mod held_batch;
use held_batch::HeldBatcher;

/// A row of a packed read ([`packed_columns!`]): the job and its items (none
/// for a job without items, which [`rows::load_job`] then reports).
struct PackedRow {
    job: JobRow,
    items: Vec<ItemRow>,
}

impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for PackedRow {
    fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> sqlx::Result<Self> {
        use sqlx::Row;
        let job = JobRow {
            job_id: row.try_get(0)?,
            owner: row.try_get(1)?,
            status: row.try_get(2)?,
            progress: row.try_get(3)?,
            model: row.try_get(4)?,
            face_limit: row.try_get(5)?,
            texture: row.try_get(6)?,
            idempotency_key: row.try_get(7)?,
            cancel_requested: row.try_get(8)?,
            created_at_ms: row.try_get(9)?,
            updated_at_ms: row.try_get(10)?,
        };
        let packed: &str = row.try_get(11)?;
        let items = serde_json::from_str(packed).map_err(|e| sqlx::Error::ColumnDecode {
            index: "11".into(),
            source: Box::new(e),
        })?;
        Ok(Self { job, items })
    }
}

/// One job with its items, read by one statement.
///
/// This is the status read every client polls. sqlx runs each SQLite
/// connection on a thread of its own and every statement (and every row) is
/// a hand-off to and from it; `BEGIN`, two `SELECT`s and `COMMIT` were four
/// (docs/BENCHMARKS.md). One statement is one, and needs no transaction: a
/// single statement reads one snapshot.
async fn read_job(pool: &SqlitePool, job_id: &str) -> Result<Option<Job>, StoreError> {
    let row: Option<PackedRow> = sqlx::query_as(AssertSqlSafe(JOINED_SQL))
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .map_err(db_error("reading a job"))?;
    unpacked(row).map(|l| l.map(|l| l.job))
}

/// Loads the jobs of these rows with their items.
async fn with_items(
    conn: &mut SqliteConnection,
    jobs: Vec<JobRow>,
) -> Result<Vec<Job>, StoreError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    // One row per job, its items packed as in `packed_columns!` (a row is a
    // hand-off from the connection's thread).
    let mut q = QueryBuilder::<Sqlite>::new(concat!(
        "SELECT ",
        packed_items!(""),
        " FROM items WHERE job_id IN ("
    ));
    let mut ids = q.separated(", ");
    for j in &jobs {
        ids.push_bind(j.job_id.clone());
    }
    q.push(") GROUP BY job_id");
    let packed: Vec<(String,)> = q
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("reading items"))?;
    let mut items: Vec<ItemRow> = Vec::new();
    for (json,) in packed {
        let job_items: Vec<ItemRow> = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("packed items: {e}")))?;
        items.extend(job_items);
    }
    rows::load_jobs(jobs, items)
}

/// Writes back a loaded job's changed items and its status, progress and times.
async fn save(conn: &mut SqliteConnection, loaded: &LoadedJob) -> Result<(), StoreError> {
    save_query(loaded, false)
        .execute(&mut *conn)
        .await
        .map_err(db_error("updating a job"))?;
    Ok(())
}

/// The updates of a changed job (its changed items, then the job) as one
/// command to the connection's thread; with `commit`, ending in `COMMIT`.
fn save_query(
    loaded: &LoadedJob,
    commit: bool,
) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    let mut sql = save_sql(loaded);
    if commit {
        sql.push_str("; COMMIT");
    }
    bind_save(sqlx::query(AssertSqlSafe(sql)), loaded)
}

/// The statements that write a changed job back (its changed items, then
/// the job), without a final `;`; their values are bound by [`bind_save`].
fn save_sql(loaded: &LoadedJob) -> String {
    const ITEM_UPDATE: &str = "UPDATE items SET status = ?, progress = ?, error_code = ?, \
         error_message = ?, model_key = ?, preview_key = ?, remote_request_id = ?, attempts = ?, \
         lease_token = ?, lease_expires_at_ms = ?, updated_at_ms = ? WHERE item_id = ?; ";
    let mut sql = ITEM_UPDATE.repeat(loaded.dirty.len());
    sql.push_str(
        "UPDATE jobs SET status = ?, progress = ?, cancel_requested = ?, updated_at_ms = ? \
         WHERE job_id = ?",
    );
    sql
}

/// Binds the values of [`save_sql`]'s statements, in order.
fn bind_save<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    loaded: &LoadedJob,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    for row in loaded.dirty_rows() {
        query = row.bind_update_to(query);
    }
    JobRow::from_job(&loaded.job).bind_update_to(query)
}

/// Where the claim's candidate is in its loaded job.
fn candidate_index(loaded: &LoadedJob, item_id: &str) -> Result<usize, StoreError> {
    loaded
        .job
        .items
        .iter()
        .position(|i| i.item_id.to_string() == item_id)
        .ok_or_else(|| StoreError::Corrupt("a claimable item not in its job".into()))
}

/// Whether the candidate is a crashed worker's item claimed too often: it is
/// failed as `worker_lost` instead of claimed.
fn worker_lost(loaded: &LoadedJob, idx: usize, max_attempts: u32) -> bool {
    let item = &loaded.job.items[idx];
    item.status == ItemStatus::Running && item.attempts >= max_attempts
}

/// Ends a [`WholeWrite`]'s transaction without change and keeps the
/// connection (were the rollback to fail, dropping the write closes the
/// connection, which rolls back too).
async fn rollback(write: &mut WholeWrite) -> Result<(), StoreError> {
    sqlx::query("ROLLBACK")
        .execute(&mut *write.conn)
        .await
        .map_err(db_error("rolling back"))?;
    write.kept = true;
    Ok(())
}

/// Inserts `job` and its items: in the transaction `conn` is in, or with
/// `whole`, in a transaction of their own begun and committed by the same
/// command (see [`WholeWrite`]).
async fn insert(
    conn: &mut SqliteConnection,
    job: &Job,
    whole: bool,
    charge: Option<(&ApiKeyId, &Charge)>,
    delivery: Option<&Delivery>,
) -> Result<(), StoreError> {
    insert_query(job, whole, charge, delivery)
        .execute(&mut *conn)
        .await
        .map_err(db_error("inserting a job"))?;
    Ok(())
}

/// The inserts of `job` and its items as one command to the connection's
/// thread (one statement per row in one query string: sqlx binds the
/// arguments to the statements in turn), not one per row: each command is a
/// round trip between threads. `whole` wraps them in `BEGIN IMMEDIATE` and
/// `COMMIT`. A `charge` (only one without limits: nothing to check) adds
/// to its owner's usage rows in the same command, and so does the job's
/// webhook `delivery`.
fn insert_query(
    job: &Job,
    whole: bool,
    charge: Option<(&ApiKeyId, &Charge)>,
    delivery: Option<&Delivery>,
) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    let mut sql = String::from(if whole { "BEGIN IMMEDIATE; " } else { "" });
    push_insert_sql(&mut sql, job, charge.is_some(), delivery.is_some());
    if whole {
        sql.push_str("; COMMIT");
    }
    bind_insert(sqlx::query(AssertSqlSafe(sql)), job, charge, delivery)
}

/// Appends the statements that insert `job` (see [`insert_query`]), with
/// no separator after the last; [`bind_insert`] binds their arguments.
fn push_insert_sql(sql: &mut String, job: &Job, charge: bool, delivery: bool) {
    const ITEM_INSERT: &str = "; INSERT INTO items (";
    sql.push_str("INSERT INTO jobs (");
    sql.push_str(JOB_COLUMNS);
    sql.push_str(") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    for _ in &job.items {
        sql.push_str(ITEM_INSERT);
        sql.push_str(ITEM_COLUMNS);
        sql.push_str(") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    if charge {
        for _ in 0..2 {
            sql.push_str("; ");
            sql.push_str(crate::rows::add_usage_sql!("?", "?", "?", "?"));
        }
    }
    if delivery {
        sql.push_str("; ");
        sql.push_str(&rows::delivery_insert_sql(false));
    }
}

/// How many arguments [`push_insert_sql`]'s statements take.
fn insert_binds(job: &Job, charge: bool, delivery: bool) -> usize {
    11 + 20 * job.items.len() + if charge { 8 } else { 0 } + if delivery { 13 } else { 0 }
}

/// Binds the arguments of [`push_insert_sql`]'s statements, in order.
fn bind_insert<'q>(
    query: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    job: &Job,
    charge: Option<(&ApiKeyId, &Charge)>,
    delivery: Option<&Delivery>,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments> {
    let mut query = JobRow::from_job(job).bind_to(query);
    for (position, item) in job.items.iter().enumerate() {
        query = ItemRow::from_item(job.job_id, position, item, None).bind_to(query);
    }
    if let Some((owner, charge)) = charge {
        for period in [charge.periods.day_key(), charge.periods.month_key()] {
            query = query
                .bind(owner.as_str().to_owned())
                .bind(period)
                .bind(i64::try_from(charge.items).unwrap_or(i64::MAX))
                .bind(i64::try_from(charge.spend.0).unwrap_or(i64::MAX));
        }
    }
    if let Some(delivery) = delivery {
        query = DeliveryRow::from_delivery(delivery).bind_to(query);
    }
    query
}

async fn find_key(
    conn: &mut SqliteConnection,
    owner: &ApiKeyId,
    key: &str,
) -> Result<Option<LoadedJob>, StoreError> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT job_id FROM jobs WHERE owner = ? AND idempotency_key = ?")
            .bind(owner.as_str())
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("finding an idempotency key"))?;
    match id {
        Some(id) => load(conn, &id).await,
        None => Ok(None),
    }
}

/// The claim's candidate query: the oldest claimable item, of a job with one
/// of `models` models (bound as `?2`, `?3`, … after the time `?1`) when
/// `models` is not zero, of any model when it is.
fn claim_sql(models: usize) -> String {
    claim_sql_at(models, 2, 1)
}

/// [`claim_sql`] for the `limit` oldest claimable items, with the models
/// bound from `?{first_model}` on (the time is always `?1`), in claim order.
///
/// Two halves, each answered from an index without reading the items it
/// passes over: the oldest queued items (`items_status_job_position`, in
/// order), and the oldest running items whose lease expired
/// (`items_status_lease`, only the expired ones). One query with an `OR` of
/// the two read every running item per claim, which grew with the items in
/// flight (thousands waiting on FAL).
pub(super) fn claim_sql_at(models: usize, first_model: usize, limit: usize) -> String {
    let filter = if models > 0 {
        let params: Vec<String> = (first_model..first_model + models)
            .map(|n| format!("?{n}"))
            .collect();
        format!(" AND j.model IN ({})", params.join(", "))
    } else {
        String::new()
    };
    format!(
        "SELECT item_id, job_id FROM (\
         SELECT * FROM (SELECT i.item_id, i.job_id, i.position FROM items i \
         JOIN jobs j ON j.job_id = i.job_id \
         WHERE i.status = 'queued' AND j.cancel_requested = 0{filter} \
         ORDER BY i.job_id, i.position LIMIT {limit}) \
         UNION ALL \
         SELECT * FROM (SELECT i.item_id, i.job_id, i.position FROM items i \
         JOIN jobs j ON j.job_id = i.job_id \
         WHERE i.status = 'running' AND i.lease_expires_at_ms <= ?1 \
         AND j.cancel_requested = 0{filter} \
         ORDER BY i.job_id, i.position LIMIT {limit})) \
         ORDER BY job_id, position LIMIT {limit}"
    )
}

#[async_trait]
impl JobStore for SqliteDatabase {
    async fn create_job(&self, mut new: NewJob) -> Result<CreateOutcome, StoreError> {
        let charge = new.charge.take();
        let limited = charge.as_ref().is_some_and(|c| c.limits.any());
        if new.idempotency_key.is_none() && self.whole_writes && !limited {
            // Nothing to look up or check first: the job (and a charge
            // without limits) goes in with the group commit (module
            // `held_batch`), in the same command as the other writes queued
            // meanwhile.
            let owner = new.owner.clone();
            let callback = new.callback.take();
            let job = rows::new_job(new, rows::now())?;
            let delivery = rows::new_delivery(callback, &job);
            // Checked before it is written, as in the transaction below.
            let stored = rows::as_stored(&job)?;
            self.create_batched(job, charge.map(|c| (owner, c)), delivery)
                .await?;
            return Ok(CreateOutcome::Created(stored));
        }
        let mut tx = self.write().await?;
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = find_key(&mut tx, &new.owner, key).await?
        {
            return Ok(CreateOutcome::Existing(existing.job));
        }
        let owner = new.owner.clone();
        let callback = new.callback.take();
        let job = rows::new_job(new, rows::now())?;
        let delivery = rows::new_delivery(callback, &job);
        insert(&mut tx, &job, false, None, delivery.as_ref()).await?;
        if let Some(charge) = &charge
            && let Some(over) = Self::charge_usage(&mut tx, &owner, charge).await?
        {
            // Dropping the transaction rolls the job and the charge back.
            return Ok(CreateOutcome::OverQuota(over));
        }
        let stored = rows::as_stored(&job)?;
        tx.commit()
            .await
            .map_err(db_error("committing a new job"))?;
        Ok(CreateOutcome::Created(stored))
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        read_job(&self.pool, &id.to_string()).await
    }

    async fn usage(&self, owner: &ApiKeyId, periods: Periods) -> Result<Usage, StoreError> {
        self.read_usage(owner, periods).await
    }

    async fn usage_by_owner(&self, periods: Periods) -> Result<Vec<OwnerUsage>, StoreError> {
        self.read_usage_by_owner(periods).await
    }

    async fn find_by_idempotency_key(
        &self,
        owner: &ApiKeyId,
        key: &str,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("starting a read"))?;
        let job = find_key(&mut tx, owner, key).await?.map(|l| l.job);
        tx.commit().await.map_err(db_error("ending a read"))?;
        Ok(job)
    }

    async fn list_jobs(&self, query: &ListQuery) -> Result<JobPage, StoreError> {
        let limit = query.limit.clamp(1, MAX_PAGE);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("starting a read"))?;
        let job_rows: Vec<JobRow> = rows::list_statement::<Sqlite>(query, limit)
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
        if options.models.as_deref().is_some_and(<[_]>::is_empty) {
            // No model is claimable: nothing to look at, nothing to fail.
            return Ok(None);
        }
        if self.whole_writes {
            // With the changes under a lease and the new jobs: claims made
            // while the writer was busy go in together (module `held_batch`).
            return self.claim_batched(options).await;
        }
        let sql = claim_sql(options.models.as_deref().map_or(0, <[_]>::len));
        let mut tx = self.write().await?;
        let now = rows::now();
        loop {
            let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(to_ms(now));
            for model in options.models.iter().flat_map(|m| m.iter()) {
                query = query.bind(model.as_str());
            }
            let candidate: Option<(String, String)> = query
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error("finding a claimable item"))?;
            let Some((item_id, job_id)) = candidate else {
                // Commit any worker_lost failures made on the way.
                tx.commit().await.map_err(db_error("committing"))?;
                return Ok(None);
            };
            let mut loaded = load(&mut tx, &job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("an item without its job".into()))?;
            let idx = candidate_index(&loaded, &item_id)?;
            if worker_lost(&loaded, idx, options.max_attempts) {
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

    /// Makes `change` to the item's job when `token` holds the item, in one
    /// write transaction; `Ok(false)` (and nothing written) when it does not.
    async fn change_held(
        &self,
        item: ItemId,
        token: &LeaseToken,
        change: HeldChange,
    ) -> Result<bool, StoreError> {
        if self.whole_writes {
            // Two commands for every change queued by the writer's turn:
            // begin and read, then the updates and the commit.
            return self.change_held_batched(item, token, change).await;
        }
        let mut tx = self.write().await?;
        let Some(mut loaded) = load_held(&mut tx, item, token).await? else {
            return Ok(false);
        };
        if !loaded.apply_held(item, token, change)? {
            return Ok(false);
        }
        save(&mut tx, &loaded).await?;
        tx.commit().await.map_err(db_error("committing"))?;
        Ok(true)
    }

    /// One `UPDATE … FROM (VALUES …) … RETURNING` per `RENEW_CHUNK`
    /// leases, each chunk in a write transaction (and turn) of its own, so
    /// other writers wait for one chunk at most; a lease is independent of
    /// the others, so nothing needs the chunks to commit together. The
    /// statement finds each pair by the `items` primary key (a row-value
    /// `IN (VALUES …)` was planned as a scan of every running item).
    ///
    /// It writes `lease_expires_at_ms` alone: that is all `renew_lease`
    /// changes (`LoadedJob::renew` leaves the item's and the job's
    /// `updated_at`, status and progress as they were; it rewrites the job
    /// row with its own values).
    async fn renew_leases(
        &self,
        leases: &[(ItemId, LeaseToken)],
        lease: Duration,
    ) -> Result<Vec<ItemId>, StoreError> {
        let mut lost = Vec::new();
        for chunk in leases.chunks(RENEW_CHUNK) {
            let mut tx = self.write().await?;
            // Timed once the turn is ours, as `renew_lease` times it.
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE items SET lease_expires_at_ms = ");
            q.push_bind(to_ms(rows::lease_until(rows::now(), lease)))
                .push(" FROM (");
            q.push_values(chunk, |mut row, (item, token)| {
                row.push_bind(item.to_string())
                    .push_bind(token.as_str().to_owned());
            });
            q.push(
                ") AS l WHERE items.item_id = l.column1 AND items.lease_token = l.column2 \
                 AND items.status = 'running' RETURNING item_id, lease_token",
            );
            let renewed: Vec<(String, String)> = q
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error("renewing leases"))?;
            tx.commit()
                .await
                .map_err(db_error("committing lease renewals"))?;
            lost.extend(rows::not_renewed(chunk, renewed));
        }
        Ok(lost)
    }

    async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write().await?;
        let Some(mut loaded) = load(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        loaded.cancel(rows::now())?;
        save(&mut tx, &loaded).await?;
        tx.commit().await.map_err(db_error("committing a cancel"))?;
        Ok(Some(loaded.job))
    }

    async fn delete_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let mut tx = self.write().await?;
        let Some(loaded) = load(&mut tx, &id.to_string()).await? else {
            return Ok(None);
        };
        // Items go with their job (ON DELETE CASCADE; foreign keys are on).
        sqlx::query("DELETE FROM jobs WHERE job_id = ?")
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("starting a read"))?;
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ("
        ));
        let mut statuses = q.separated(", ");
        for s in ENDED_STATUSES {
            statuses.push_bind(s);
        }
        q.push(") AND updated_at_ms < ")
            .push_bind(to_ms(before))
            .push(" ORDER BY updated_at_ms, job_id LIMIT ")
            .push_bind(i64::from(limit));
        let job_rows: Vec<JobRow> = q
            .build_query_as()
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

    fn callbacks(&self) -> Option<Arc<dyn image2model_core::ports::CallbackStore>> {
        Some(Arc::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed reads decode each item's array into [`ItemRow`] by
    /// position: their columns must be `ITEM_COLUMNS`, in its order.
    #[test]
    fn packed_items_are_the_item_columns_in_order() {
        let packed = packed_items!("");
        let inner = packed
            .strip_prefix("json_group_array(json_array(")
            .and_then(|s| s.strip_suffix(") ORDER BY position)"))
            .expect("the packed aggregate's shape");
        let words =
            |s: &str| -> Vec<String> { s.split(',').map(|c| c.trim().to_owned()).collect() };
        assert_eq!(words(inner), words(ITEM_COLUMNS));
        assert!(packed_columns!().contains(&packed_items!("i.").to_string()));
    }
}
