//! The job store's half of a backup: a snapshot of the live database
//! (SQLite `VACUUM INTO`; Postgres `pg_dump` in a snapshot exported by a
//! transaction that reads the same rows), and putting it back.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use super::BackupError;
use super::manifest::{POSTGRES_FILE, SQLITE_FILE};
use crate::sqlite::SqliteDatabase;

/// The tables whose rows make a database "not empty" for `restore`.
const DATA_TABLES: [&str; 5] = [
    "jobs",
    "api_keys",
    "audit_events",
    "key_usage",
    "webhook_settings",
];

/// Which kind of job store a `DATABASE_URL` names.
#[derive(Debug, Clone)]
pub enum DbTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Postgres database.
    Postgres(String),
}

impl DbTarget {
    /// The target of `url`.
    ///
    /// # Errors
    /// [`BackupError::Refused`] for in-memory stores (nothing to back up or
    /// restore into) and unknown schemes.
    pub fn of(url: &str) -> Result<Self, BackupError> {
        let url = url.trim();
        if url.starts_with("sqlite:") {
            return SqliteDatabase::path_from_url(url)
                .map(DbTarget::Sqlite)
                .ok_or_else(|| {
                    BackupError::Refused(
                        "DATABASE_URL is an in-memory SQLite database: there is nothing to back up or restore into".into(),
                    )
                });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbTarget::Postgres(url.to_owned()));
        }
        if url == "memory://" || url == "memory:" {
            return Err(BackupError::Refused(
                "DATABASE_URL is memory://: in-memory stores are lost on exit, there is nothing to back up or restore into".into(),
            ));
        }
        Err(BackupError::Refused(format!(
            "DATABASE_URL {}: expected sqlite://PATH or postgres://…",
            crate::redact_url(url)
        )))
    }

    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            DbTarget::Sqlite(_) => "sqlite",
            DbTarget::Postgres(_) => "postgres",
        }
    }

    /// The snapshot's file name in a backup.
    #[must_use]
    pub fn file_name(&self) -> &'static str {
        match self {
            DbTarget::Sqlite(_) => SQLITE_FILE,
            DbTarget::Postgres(_) => POSTGRES_FILE,
        }
    }

    /// The newest migration this binary knows for this kind.
    #[must_use]
    pub fn known_schema_version(&self) -> i64 {
        let migrator = match self {
            DbTarget::Sqlite(_) => &crate::sqlite::MIGRATOR,
            DbTarget::Postgres(_) => &crate::postgres::MIGRATOR,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }
}

/// What a snapshot holds, read from the snapshot itself.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The newest migration applied.
    pub schema_version: i64,
    /// Every job id.
    pub jobs: HashSet<String>,
    /// Every blob key an item names.
    pub referenced: BTreeSet<String>,
    /// `pg_dump --version` (Postgres).
    pub pg_dump_version: Option<String>,
    /// `server_version` (Postgres).
    pub server_version: Option<String>,
}

fn failed(what: &str) -> impl Fn(sqlx::Error) -> BackupError + '_ {
    move |e| BackupError::Failed(format!("{what}: {e}"))
}

const JOBS_SQL: &str = "SELECT job_id FROM jobs";
const KEYS_SQL: &str = "SELECT upload_key, model_key, preview_key FROM items";
const SCHEMA_SQL: &str =
    "SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success";

/// Reads the job ids, referenced keys and schema version on a connection.
macro_rules! read_snapshot {
    ($conn:expr) => {{
        let conn = $conn;
        let mut snapshot = Snapshot::default();
        snapshot.schema_version = sqlx::query_scalar::<_, i64>(SCHEMA_SQL)
            .fetch_one(&mut *conn)
            .await
            .map_err(failed("reading the snapshot's schema version"))?;
        let jobs: Vec<String> = sqlx::query_scalar(JOBS_SQL)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed("reading the snapshot's jobs"))?;
        snapshot.jobs = jobs.into_iter().collect();
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(KEYS_SQL)
            .fetch_all(&mut *conn)
            .await
            .map_err(failed("reading the snapshot's blob keys"))?;
        for (upload, model, preview) in rows {
            snapshot.referenced.insert(upload);
            snapshot.referenced.extend(model);
            snapshot.referenced.extend(preview);
        }
        Ok::<Snapshot, BackupError>(snapshot)
    }};
}

// ---------------------------------------------------------------- SQLite

fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(30))
}

/// `VACUUM INTO out` on the live database at `path` (a consistent copy
/// while other connections and processes write), then reads the copy.
pub async fn snapshot_sqlite(path: &Path, out: &Path) -> Result<Snapshot, BackupError> {
    if !path.is_file() {
        return Err(BackupError::Refused(format!(
            "no SQLite database at {}: is DATABASE_URL the server's?",
            path.display()
        )));
    }
    let mut conn = sqlite_options(path)
        .connect()
        .await
        .map_err(failed("opening the SQLite database"))?;
    let out_text = out
        .to_str()
        .ok_or_else(|| BackupError::Refused(format!("{}: not UTF-8", out.display())))?;
    sqlx::query("VACUUM INTO ?")
        .bind(out_text)
        .execute(&mut conn)
        .await
        .map_err(failed("VACUUM INTO (the SQLite snapshot)"))?;
    conn.close().await.ok();
    let file = std::fs::File::open(out)
        .map_err(|e| BackupError::Failed(format!("{}: {e}", out.display())))?;
    file.sync_all()
        .map_err(|e| BackupError::Failed(format!("{}: {e}", out.display())))?;
    let mut snap = SqliteOptions::immutable(out)
        .connect()
        .await
        .map_err(failed("opening the SQLite snapshot"))?;
    let snapshot = async { read_snapshot!(&mut snap) }.await;
    snap.close().await.ok();
    snapshot
}

struct SqliteOptions;

impl SqliteOptions {
    /// A file that nobody changes: no locks, no `-wal`/`-shm` files made.
    fn immutable(path: &Path) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .immutable(true)
    }
}

/// Whether the SQLite file at `path` holds any row of [`DATA_TABLES`] (a
/// file that is not a database counts as holding data).
pub async fn sqlite_has_data(path: &Path) -> Result<bool, BackupError> {
    if !path.exists() {
        return Ok(false);
    }
    let Ok(mut conn) = sqlite_options(path).read_only(true).connect().await else {
        return Ok(true);
    };
    let result = has_data_sqlite(&mut conn).await;
    conn.close().await.ok();
    Ok(result.unwrap_or(true))
}

async fn has_data_sqlite(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    for table in DATA_TABLES {
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        if exists == 0 {
            continue;
        }
        let any: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut *conn)
        .await?;
        if any != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Puts the snapshot `from` in place of the database at `path`: copied
/// beside it, synced, the old `-wal`/`-shm`/`-journal` removed (they belong
/// to the old file), then renamed over it, so the file is either the old one
/// or the whole snapshot.
pub fn restore_sqlite(from: &Path, path: &Path) -> Result<(), BackupError> {
    let io = |what: &str, p: &Path| {
        let what = what.to_owned();
        let p = p.display().to_string();
        move |e: std::io::Error| BackupError::Failed(format!("{what} {p}: {e}"))
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut staged = path.as_os_str().to_owned();
    staged.push(".restoring");
    let staged = PathBuf::from(staged);
    std::fs::copy(from, &staged).map_err(io("copying the snapshot to", &staged))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &staged))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(PathBuf::from(&side)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", Path::new(&side))(e)),
        }
    }
    std::fs::rename(&staged, path).map_err(io("renaming the snapshot to", path))?;
    super::sync_dir(dir).map_err(io("syncing", dir))?;
    Ok(())
}

// -------------------------------------------------------------- Postgres

/// The URL without its password, and the password (for `PGPASSWORD`), so
/// that no password shows in the process list.
fn libpq_url(url: &str) -> (String, Option<String>) {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let password = parsed.password().map(percent_decode);
            if password.is_some() {
                let _ = parsed.set_password(None);
            }
            (parsed.into(), password)
        }
        Err(_) => (url.to_owned(), None),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The major version of a PostgreSQL client tool (`pg_dump`,
/// `pg_restore`) on `PATH`, and its `--version` line.
async fn tool_version(tool: &str, server_major: Option<u32>) -> Result<(u32, String), BackupError> {
    let package = server_major.map_or_else(
        || "postgresql-client".to_owned(),
        |m| format!("postgresql-client-{m}"),
    );
    let output = tokio::process::Command::new(tool)
        .arg("--version")
        .output()
        .await
        .map_err(|e| {
            BackupError::Refused(format!(
                "{tool} could not be run ({e}): install the PostgreSQL client tools of the server's major version and put them on PATH (Debian/Ubuntu: apt-get install {package}; Alpine: apk add postgresql-client)"
            ))
        })?;
    let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let major = line
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| BackupError::Failed(format!("{tool} --version said {line:?}")))?;
    Ok((major, line))
}

fn major_of(version: &str) -> Option<u32> {
    version.split(['.', ' ']).next()?.parse().ok()
}

async fn pg_connect(url: &str) -> Result<PgConnection, BackupError> {
    let options: PgConnectOptions = url.parse().map_err(|_| {
        BackupError::Refused(format!(
            "{}: not a valid Postgres connection URL",
            crate::redact_url(url)
        ))
    })?;
    options
        .connect()
        .await
        .map_err(|e| BackupError::Failed(format!("{}: {e}", crate::redact_url(url))))
}

/// `pg_dump --format=custom` of the database at `url` into `out`, inside a
/// snapshot this function's transaction exports and reads the same rows in.
pub async fn snapshot_postgres(url: &str, out: &Path) -> Result<Snapshot, BackupError> {
    let mut conn = pg_connect(url).await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(failed("reading the server's version"))?;
    let server_major = major_of(&server_version);
    let (dump_major, dump_line) = tool_version("pg_dump", server_major).await?;
    if let Some(server_major) = server_major
        && dump_major < server_major
    {
        return Err(BackupError::Refused(format!(
            "pg_dump is version {dump_major} but the server is {server_major}: pg_dump cannot dump a newer server; install postgresql-client-{server_major} (or newer) and put its pg_dump first on PATH"
        )));
    }
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(failed("starting the snapshot transaction"))?;
    let snapshot_id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .map_err(failed("exporting the snapshot"))?;
    let mut snapshot = async { read_snapshot!(&mut conn) }.await?;
    let (dburl, password) = libpq_url(url);
    let mut cmd = tokio::process::Command::new("pg_dump");
    cmd.arg("--format=custom")
        .arg(format!("--snapshot={snapshot_id}"))
        .arg("--file")
        .arg(out)
        .arg("--dbname")
        .arg(&dburl)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let output = cmd
        .output()
        .await
        .map_err(|e| BackupError::Failed(format!("running pg_dump: {e}")))?;
    sqlx::query("COMMIT").execute(&mut conn).await.ok();
    conn.close().await.ok();
    if !output.status.success() {
        return Err(BackupError::Failed(format!(
            "pg_dump failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    std::fs::File::open(out)
        .and_then(|f| f.sync_all())
        .map_err(|e| BackupError::Failed(format!("{}: {e}", out.display())))?;
    snapshot.pg_dump_version = Some(dump_line);
    snapshot.server_version = Some(server_version);
    Ok(snapshot)
}

/// Whether the Postgres database at `url` holds any row of [`DATA_TABLES`]
/// (in its search path).
pub async fn postgres_has_data(url: &str) -> Result<bool, BackupError> {
    let mut conn = pg_connect(url).await?;
    let mut any = false;
    for table in DATA_TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .map_err(failed("looking at the database"))?;
        if !exists {
            continue;
        }
        let rows: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut conn)
        .await
        .map_err(failed("looking at the database"))?;
        if rows {
            any = true;
            break;
        }
    }
    conn.close().await.ok();
    Ok(any)
}

/// `pg_restore` of the archive `from` into the database at `url`, in one
/// transaction (all or nothing), replacing the archive's tables if they
/// exist, without owners or privileges (the configured user owns them).
pub async fn restore_postgres(
    from: &Path,
    url: &str,
    dumped_with: Option<&str>,
) -> Result<(), BackupError> {
    let mut conn = pg_connect(url).await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await
        .map_err(failed("reading the server's version"))?;
    conn.close().await.ok();
    let (restore_major, _) = tool_version("pg_restore", major_of(&server_version)).await?;
    if let Some(dump_major) = dumped_with.and_then(|line| {
        line.split_whitespace()
            .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
    }) && restore_major < dump_major
    {
        return Err(BackupError::Refused(format!(
            "the backup was written by pg_dump {dump_major} but pg_restore is version {restore_major}: install postgresql-client-{dump_major} (or newer)"
        )));
    }
    let (dburl, password) = libpq_url(url);
    let mut cmd = tokio::process::Command::new("pg_restore");
    cmd.args([
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
    ])
    .arg("--dbname")
    .arg(&dburl)
    .arg(from)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let output = cmd
        .output()
        .await
        .map_err(|e| BackupError::Failed(format!("running pg_restore: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackupError::Failed(format!(
            "pg_restore failed ({}), its transaction was rolled back: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_for_pgpassword_decoded() {
        let (url, password) = libpq_url("postgres://app:p%40ss%2Fw@db:5432/i2m?sslmode=require");
        assert_eq!(url, "postgres://app@db:5432/i2m?sslmode=require");
        assert_eq!(password.as_deref(), Some("p@ss/w"));
        let (url, password) = libpq_url("postgres://app@db/i2m");
        assert_eq!(url, "postgres://app@db/i2m");
        assert_eq!(password, None);
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("é%C3%A9"), "éé");
    }

    #[test]
    fn server_versions_give_their_major() {
        assert_eq!(major_of("15.20 (Debian 15.20-0+deb12u1)"), Some(15));
        assert_eq!(major_of("16.4"), Some(16));
        assert_eq!(major_of("17devel"), None);
    }

    #[test]
    fn in_memory_and_unknown_databases_are_refused() {
        for url in ["memory://", "sqlite::memory:", "mysql://h/db"] {
            assert!(
                matches!(DbTarget::of(url), Err(BackupError::Refused(_))),
                "{url}"
            );
        }
        assert!(matches!(
            DbTarget::of("sqlite://./data/x.db"),
            Ok(DbTarget::Sqlite(p)) if p == Path::new("./data/x.db")
        ));
    }
}
