//! From configuration URLs (`DATABASE_URL`, `STORAGE_URL`) to stores.
//!
//! | URL | store |
//! |---|---|
//! | `sqlite://./data/image2model.db`, `sqlite:///srv/i2m.db` | [`SqliteDatabase`] (file and parent directory created on first run) |
//! | `sqlite::memory:` | [`SqliteDatabase::in_memory`] |
//! | `postgres://…`, `postgresql://…` | [`PostgresDatabase`] |
//! | `memory://` (`DATABASE_URL`) | the in-memory stores of `image2model_core::memory` |
//! | `file://./data/blobs`, `file:///srv/blobs` | [`LocalBlobStore`] |
//! | `memory://` | [`ObjectBlobStore::memory`] |
//! | `s3://bucket/prefix` | [`ObjectBlobStore::s3`] with [`S3Config::from_env`] |
//!
//! [`open_database`] gives the job store, key store and audit log of one
//! `DATABASE_URL` (one connection pool); [`open_job_store`] only the first.
//! [`local_blob_dir`] tells where a `file://` `STORAGE_URL` keeps its files,
//! for callers that look at that disk (free space, data directories).
//!
//! This module is the one place that reads these URLs and the one rule for
//! showing them: [`redact_url`] hides a URL's password and query string, in
//! every error here and wherever a URL is printed.
//!
//! Two switches turn the stores' performance-only paths off, so that a bug
//! report can rule them out ([`SWITCHES`]; both default to `true`):
//! `BLOB_DIRECT_IO` (a `file://` store's direct I/O, [`LocalOptions`]) and
//! `SQLITE_FAST_WRITES` (SQLite's own writer connection and two-command
//! writes, [`SqliteOptions`]).

use std::path::PathBuf;
use std::sync::Arc;

use image2model_core::ErrorCode;
use image2model_core::domain::BlobPrefix;
use image2model_core::memory::{MemoryAuditLog, MemoryJobStore, MemoryKeyStore};
use image2model_core::ports::{AuditLog, BlobError, BlobStore, JobStore, KeyStore, StoreError};

use crate::blob::{LocalBlobStore, LocalOptions, ObjectBlobStore, S3Config};
use crate::postgres::PostgresDatabase;
use crate::sqlite::{SqliteDatabase, SqliteOptions};

/// The environment variables the stores read beside `DATABASE_URL` and
/// `STORAGE_URL`: switches of performance-only paths, `true` by default.
pub const SWITCHES: &[&str] = &["BLOB_DIRECT_IO", "SQLITE_FAST_WRITES"];

/// Parses a switch's value by core's rule
/// ([`image2model_core::settings::parse_bool`]); empty means `default`.
///
/// # Errors
/// A message naming the variable and the value.
pub fn parse_switch(name: &str, value: &str, default: bool) -> Result<bool, String> {
    if value.trim().is_empty() {
        return Ok(default);
    }
    image2model_core::settings::parse_bool(value)
        .ok_or_else(|| format!("{name}: {value:?} is not true or false"))
}

/// Every error in the [`SWITCHES`] that `lookup` gives (for `config check`).
pub fn check_switches(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    SWITCHES
        .iter()
        .filter_map(|name| parse_switch(name, &lookup(name)?, true).err())
        .collect()
}

/// A switch from the environment.
fn switch(name: &'static str) -> Result<bool, OpenError> {
    match std::env::var(name) {
        Ok(value) => parse_switch(name, &value, true)
            .map_err(|reason| OpenError::InvalidSetting { name, reason }),
        Err(_) => Ok(true),
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL's scheme names no backend.
    #[error("unsupported {what} URL scheme in {url}; expected {expected}")]
    UnknownScheme {
        /// `DATABASE_URL` or `STORAGE_URL`.
        what: &'static str,
        /// The URL, password redacted.
        url: String,
        /// The schemes that work.
        expected: &'static str,
    },
    /// The URL has a known scheme but is malformed.
    #[error("invalid {what} URL {url}: {reason}")]
    InvalidUrl {
        /// `DATABASE_URL` or `STORAGE_URL`.
        what: &'static str,
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting beside the URL ([`SWITCHES`]) has a value it cannot take.
    #[error("invalid {name}: {reason}")]
    InvalidSetting {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The job store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store failed to open.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

impl OpenError {
    /// The stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            OpenError::UnknownScheme { .. }
            | OpenError::InvalidUrl { .. }
            | OpenError::InvalidSetting { .. } => ErrorCode::InvalidConfig.as_str(),
            OpenError::Store(e) => e.code(),
            OpenError::Blob(e) => e.code(),
        }
    }
}

/// The URL with its password and its query string replaced by `REDACTED`,
/// for messages, logs and printed configurations. The query goes whole:
/// libpq and Redis URLs may carry credentials there (`?password=…`, tokens).
///
/// ```
/// use image2model_store::open::redact_url;
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/i2m"),
///     "postgres://app:REDACTED@db:5432/i2m"
/// );
/// assert_eq!(
///     redact_url("postgres://db/i2m?password=s3cret"),
///     "postgres://db/i2m?REDACTED"
/// );
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{}?REDACTED", redact_password(base)),
        None => redact_password(url),
    }
}

/// `url` with the password of its user info replaced by `REDACTED`.
fn redact_password(url: &str) -> String {
    let text = redact_password_text(url);
    // The URL parser finds user info where the text scan does not (special
    // schemes accept `http:/u:pw@h` and backslashes for slashes): when it
    // still sees a password, it replaces it itself.
    match url::Url::parse(&text) {
        Ok(mut parsed) if parsed.password().is_some_and(|p| p != "REDACTED") => {
            match parsed.set_password(Some("REDACTED")) {
                Ok(()) => parsed.into(),
                Err(()) => "[unparsable URL with credentials]".to_owned(),
            }
        }
        _ => text,
    }
}

/// [`redact_password`] on the text: the user info of `scheme://user:pw@host`.
fn redact_password_text(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    // The last '@' ends the user info (a password may itself contain '@').
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:REDACTED{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

/// The directory a `file://` `STORAGE_URL` keeps its blobs in, as written
/// (relative to the working directory unless absolute); `None` for any other
/// scheme and for a `file://` without a path, which [`open_blob_store`]
/// refuses.
///
/// ```
/// use std::path::Path;
/// use image2model_store::open::local_blob_dir;
/// assert_eq!(local_blob_dir("file://./data/blobs").as_deref(), Some(Path::new("./data/blobs")));
/// assert_eq!(local_blob_dir(" file:///srv/blobs "), Some("/srv/blobs".into()));
/// assert_eq!(local_blob_dir("s3://bucket/p"), None);
/// assert_eq!(local_blob_dir("file://"), None);
/// ```
#[must_use]
pub fn local_blob_dir(storage_url: &str) -> Option<PathBuf> {
    storage_url
        .trim()
        .strip_prefix("file://")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// The stores of one database: jobs, API keys and the audit trail, sharing
/// one connection pool.
#[derive(Debug, Clone)]
pub struct Database {
    /// Jobs and items.
    pub jobs: Arc<dyn JobStore>,
    /// Keys created through the admin API.
    pub keys: Arc<dyn KeyStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditLog>,
}

impl Database {
    /// The three views of one store that implements all three ports.
    fn of<S: JobStore + KeyStore + AuditLog + 'static>(store: S) -> Self {
        let store = Arc::new(store);
        Self {
            jobs: store.clone(),
            keys: store.clone(),
            audit: store,
        }
    }
}

/// Opens the job store a `DATABASE_URL` names, running its migrations.
///
/// # Errors
/// As for [`open_database`].
pub async fn open_job_store(url: &str) -> Result<Arc<dyn JobStore>, OpenError> {
    Ok(open_database(url).await?.jobs)
}

/// Opens the database a `DATABASE_URL` names, running its migrations, and
/// returns its job store, key store and audit log.
///
/// `memory://` (or `memory:`) gives throwaway in-memory stores, lost on
/// exit (trials and tests).
///
/// # Errors
/// [`OpenError::UnknownScheme`] for anything but `sqlite:`,
/// `postgres(ql)://` and `memory://`, [`OpenError::Store`] when the database
/// fails to open.
pub async fn open_database(url: &str) -> Result<Database, OpenError> {
    const WHAT: &str = "DATABASE_URL";
    let url = url.trim();
    if url == "memory://" || url == "memory:" {
        return Ok(Database {
            jobs: Arc::new(MemoryJobStore::default()),
            keys: Arc::new(MemoryKeyStore::default()),
            audit: Arc::new(MemoryAuditLog::default()),
        });
    }
    if url.starts_with("sqlite:") {
        return Ok(match SqliteDatabase::path_from_url(url) {
            None => Database::of(SqliteDatabase::in_memory().await?),
            Some(path) => {
                let options = SqliteOptions {
                    fast_writes: switch("SQLITE_FAST_WRITES")?,
                };
                Database::of(SqliteDatabase::open_with(path, options).await?)
            }
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::of(PostgresDatabase::connect(url).await.map_err(
            |e| match e {
                StoreError::Backend(m) if m.contains("invalid Postgres URL") => {
                    OpenError::InvalidUrl {
                        what: WHAT,
                        url: redact_url(url),
                        reason: "not a valid Postgres connection URL".into(),
                    }
                }
                other => OpenError::Store(other),
            },
        )?));
    }
    Err(OpenError::UnknownScheme {
        what: WHAT,
        url: redact_url(url),
        expected: "sqlite://PATH, sqlite::memory:, postgres://… or memory://",
    })
}

/// Opens the blob store a `STORAGE_URL` names. An `s3://` store reads its
/// credentials, region and endpoint from the `AWS_*` variables
/// ([`S3Config::from_env`]) and is not contacted until first used (call
/// `ping` to check it).
///
/// # Errors
/// [`OpenError::UnknownScheme`] for anything but `file://`, `memory://` and
/// `s3://`, [`OpenError::InvalidUrl`] for a malformed one, and
/// [`OpenError::Blob`] when the store fails to open.
pub async fn open_blob_store(url: &str) -> Result<Arc<dyn BlobStore>, OpenError> {
    const WHAT: &str = "STORAGE_URL";
    let url = url.trim();
    let invalid = |reason: &str| OpenError::InvalidUrl {
        what: WHAT,
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    if url.starts_with("file://") {
        let Some(dir) = local_blob_dir(url) else {
            return Err(invalid(
                "file:// needs a directory, e.g. file://./data/blobs",
            ));
        };
        let options = LocalOptions {
            direct_io: switch("BLOB_DIRECT_IO")?,
        };
        return Ok(Arc::new(LocalBlobStore::open_with(dir, options).await?));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(ObjectBlobStore::memory()));
    }
    if let Some(raw) = url.strip_prefix("s3://") {
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials belong in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid("s3:// takes no query or fragment"));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid("s3:// needs a bucket: s3://bucket/prefix"))?;
        // Check the prefix as written: URL parsing would quietly resolve `..`.
        let prefix = raw
            .split_once('/')
            .map_or("", |(_, p)| p)
            .trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            None
        } else {
            BlobPrefix::parse(prefix).map_err(|e| invalid(&format!("prefix: {e}")))?;
            Some(prefix)
        };
        let config = S3Config::from_env(bucket, prefix);
        return Ok(Arc::new(ObjectBlobStore::s3(&config)?));
    }
    Err(OpenError::UnknownScheme {
        what: WHAT,
        url: redact_url(url),
        expected: "file://DIR, memory:// or s3://bucket/prefix",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_and_queries() {
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db?sslmode=require"),
            "postgresql://u:REDACTED@h/db?REDACTED"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=hunter2"),
            "postgres://h/db?REDACTED"
        );
        assert_eq!(
            redact_url("redis://:hunter2@cache:6379"),
            "redis://:REDACTED@cache:6379"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("ftp://a:b@h"), "ftp://a:REDACTED@h");
    }
}

/// What [`probe_database`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseProbe {
    /// The database answers; for Postgres, with its clock.
    Answers {
        /// The server's time (Postgres), to compare clocks with.
        server_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// A SQLite file that does not exist yet (`serve` creates it), in a
    /// directory that exists.
    NotCreatedYet(PathBuf),
    /// Throwaway in-memory stores (`memory://`, `sqlite::memory:`).
    InMemory,
}

/// Reaches the database a `DATABASE_URL` names without changing it (no
/// migration, no file created: an existing SQLite file is opened read-only)
/// within `timeout`, for `image2model doctor`.
///
/// # Errors
/// A message saying what failed (redacted of any password).
pub async fn probe_database(
    url: &str,
    timeout: std::time::Duration,
) -> Result<DatabaseProbe, String> {
    use sqlx::ConnectOptions;
    let url = url.trim();
    if url == "memory://" || url == "memory:" {
        return Ok(DatabaseProbe::InMemory);
    }
    let shown = redact_url(url);
    if url.starts_with("sqlite:") {
        let Some(path) = SqliteDatabase::path_from_url(url) else {
            return Ok(DatabaseProbe::InMemory);
        };
        if !path.exists() {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            return match dir {
                Some(d) if !d.is_dir() => Err(format!(
                    "the directory of the SQLite file {} does not exist",
                    path.display()
                )),
                _ => Ok(DatabaseProbe::NotCreatedYet(path)),
            };
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true);
        let probe = async {
            let mut conn = options.connect().await?;
            sqlx::query("SELECT count(*) FROM sqlite_master")
                .execute(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>(())
        };
        return match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(())) => Ok(DatabaseProbe::Answers { server_time: None }),
            Ok(Err(e)) => Err(format!("{shown}: {e}")),
            Err(_) => Err(format!("{shown}: no answer within {timeout:?}")),
        };
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options: sqlx::postgres::PgConnectOptions = url
            .parse()
            .map_err(|_| format!("{shown}: not a valid Postgres connection URL"))?;
        let probe = async {
            let mut conn = options.connect().await?;
            let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(&mut conn)
                .await?;
            Ok::<_, sqlx::Error>(now)
        };
        return match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(now)) => Ok(DatabaseProbe::Answers {
                server_time: Some(now),
            }),
            Ok(Err(e)) => Err(format!("{shown}: {e}")),
            Err(_) => Err(format!("{shown}: no answer within {timeout:?}")),
        };
    }
    Err(format!(
        "{shown}: expected sqlite://PATH, sqlite::memory:, postgres://… or memory://"
    ))
}
