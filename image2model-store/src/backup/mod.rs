//! `image2model backup DIR` and `image2model restore DIR`: a consistent
//! copy of the job store and the blob store, with a manifest of checksums,
//! taken while the server runs; and putting one back.
//!
//! ## What a backup holds, and why it is consistent
//!
//! 1. The job store first, as one snapshot: SQLite's `VACUUM INTO` on the
//!    live file (a transaction: every committed write before it, none
//!    after); Postgres's `pg_dump --format=custom` inside a snapshot
//!    exported by a `REPEATABLE READ` transaction, which also reads the
//!    snapshot's job ids and the blob keys its items name.
//! 2. Then the blobs, listing-driven through the [`BlobStore`] API (local
//!    files and S3 alike), streamed: every object whose key belongs to a job
//!    in the snapshot, and every object outside the job areas. Objects of
//!    jobs newer than the snapshot are left out (counted in the manifest):
//!    restored, they would belong to no job. Blobs are written once under
//!    keys made of job and item ids and never changed, so a copy made after
//!    the snapshot holds what the snapshot's rows name. A key the snapshot
//!    names that is gone by the time it is copied (its job was deleted in
//!    between) is listed in the manifest's `blobs.missing`; the backup is
//!    still usable (those items' downloads answer 404 after a restore).
//! 3. `manifest.json` last (written to a temporary name, synced, renamed,
//!    the directory synced): format version, time, product version, store
//!    kinds, schema version, and each file's size and SHA-256. A backup
//!    that stopped part-way has no manifest and `restore` refuses it.
//!
//! ## Restoring
//!
//! [`restore`] checks the manifest and every file first (nothing extra,
//! nothing missing, every checksum), refuses a schema newer than this
//! binary's, and refuses a job store or blob store that already holds data
//! unless `force`. Then the blobs (through the API), then the job store
//! (SQLite: the file renamed into place; Postgres: `pg_restore` in one
//! transaction), then the migrations of this binary run on it.

mod database;
pub mod manifest;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobStore, ByteStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use database::DbTarget;
pub use manifest::{
    BLOBS_DIR, BlobsPart, DatabasePart, FORMAT, FORMAT_VERSION, FileEntry, MANIFEST, Manifest,
};

/// How many blobs are copied at once.
const PARALLEL: usize = 8;
/// The read size when streaming a file.
const CHUNK: usize = 256 * 1024;

/// Why a backup or a restore did not happen, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Refused before anything was written (a non-empty target, an
    /// in-memory store, a missing tool, a mismatch).
    #[error("{0}")]
    Refused(String),
    /// The backup is incomplete, damaged, changed or of an unknown format.
    #[error("{0}")]
    Damaged(String),
    /// Something failed while copying.
    #[error("{0}")]
    Failed(String),
}

/// Syncs a directory, so the names made in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io_failed(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> BackupError {
    move |e| BackupError::Failed(format!("{what}: {e}"))
}

fn blob_failed(what: impl std::fmt::Display) -> impl Fn(BlobError) -> BackupError {
    move |e| BackupError::Failed(format!("{what}: {e}"))
}

/// Refuses a blob store that cannot hold a backup (`memory://`).
fn check_storage_url(storage_url: &str) -> Result<(), BackupError> {
    let url = storage_url.trim();
    if url == "memory://" || url == "memory:" {
        return Err(BackupError::Refused(
            "STORAGE_URL is memory://: in-memory blobs are lost on exit, there is nothing to back up or restore into".into(),
        ));
    }
    Ok(())
}

/// Takes a backup of the stores `database_url` and `storage_url` name into
/// `dir` (created if missing; refused unless empty), while they are in use.
///
/// # Errors
/// [`BackupError::Refused`] for a non-empty `dir`, in-memory stores, a
/// missing or too old `pg_dump`; [`BackupError::Failed`] when reading or
/// writing fails (the directory then has no manifest).
pub async fn backup(
    dir: &Path,
    database_url: &str,
    storage_url: &str,
    product_version: &str,
) -> Result<Manifest, BackupError> {
    let target = DbTarget::of(database_url)?;
    check_storage_url(storage_url)?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} is not empty: back up into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_failed(dir.display()))?;
            // Key digests and everyone's uploads: for the owner only.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_failed(dir.display()))?;
            }
        }
        Err(e) => return Err(io_failed(dir.display())(e)),
    }
    let blobs = crate::open_blob_store(storage_url)
        .await
        .map_err(|e| BackupError::Failed(e.to_string()))?;

    let created_at = chrono::Utc::now();
    let db_file = dir.join(target.file_name());
    let snapshot = match &target {
        DbTarget::Sqlite(path) => database::snapshot_sqlite(path, &db_file).await?,
        DbTarget::Postgres(url) => database::snapshot_postgres(url, &db_file).await?,
    };
    tracing::info!(
        jobs = snapshot.jobs.len(),
        schema_version = snapshot.schema_version,
        "job store snapshot taken"
    );

    let listed = blobs
        .list(&BlobPrefix::root())
        .await
        .map_err(blob_failed("listing the blob store"))?;
    let mut skipped_newer = 0u64;
    let wanted: Vec<BlobKey> = listed
        .into_iter()
        .filter_map(|meta| match meta.key.job() {
            Some(job) if !snapshot.jobs.contains(&job.to_string()) => {
                skipped_newer += 1;
                None
            }
            _ => Some(meta.key),
        })
        .collect();
    let blob_root = dir.join(BLOBS_DIR);
    let copied: Vec<Option<FileEntry>> = futures::stream::iter(wanted)
        .map(|key| copy_out(blobs.clone(), key, blob_root.clone()))
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await?;
    let mut files: Vec<FileEntry> = copied.into_iter().flatten().collect();
    let copied_keys: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.blob_key().map(|k| k.to_string()))
        .collect();
    let missing: Vec<String> = snapshot
        .referenced
        .difference(&copied_keys)
        .cloned()
        .collect();
    let objects = files.len() as u64;
    let bytes = files.iter().map(|f| f.size).sum();

    let (size, sha256) = manifest::hash_file(&db_file).map_err(io_failed(db_file.display()))?;
    files.push(FileEntry {
        path: target.file_name().to_owned(),
        size,
        sha256,
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    sync_tree(dir).map_err(io_failed(dir.display()))?;

    let manifest = Manifest {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        created_at,
        product_version: product_version.to_owned(),
        database: DatabasePart {
            kind: target.kind().to_owned(),
            file: target.file_name().to_owned(),
            schema_version: snapshot.schema_version,
            jobs: snapshot.jobs.len() as u64,
            pg_dump_version: snapshot.pg_dump_version,
            server_version: snapshot.server_version,
        },
        blobs: BlobsPart {
            source: blobs.describe(),
            objects,
            bytes,
            missing,
            skipped_newer,
        },
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Failed(format!("writing the manifest: {e}")))?;
    let staged = dir.join(".manifest.json.partial");
    {
        let mut f = std::fs::File::create(&staged).map_err(io_failed(staged.display()))?;
        std::io::Write::write_all(&mut f, &text).map_err(io_failed(staged.display()))?;
        f.sync_all().map_err(io_failed(staged.display()))?;
    }
    std::fs::rename(&staged, dir.join(MANIFEST)).map_err(io_failed(dir.display()))?;
    sync_dir(dir).map_err(io_failed(dir.display()))?;
    Ok(manifest)
}

/// Streams the blob `key` to `root/key`, hashing it; `None` when it was
/// deleted after the listing.
async fn copy_out(
    blobs: Arc<dyn BlobStore>,
    key: BlobKey,
    root: PathBuf,
) -> Result<Option<FileEntry>, BackupError> {
    let object = match blobs.get(&key).await {
        Ok(o) => o,
        Err(BlobError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(blob_failed(format!("reading {key}"))(e)),
    };
    let path = root.join(key.as_str());
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_failed(parent.display()))?;
    }
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(io_failed(path.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = object.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(io_failed(format!("reading {key}")))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(io_failed(path.display()))?;
    }
    file.sync_all().await.map_err(io_failed(path.display()))?;
    Ok(Some(FileEntry {
        path: format!("{BLOBS_DIR}/{key}"),
        size,
        sha256: hex::encode(hasher.finalize()),
    }))
}

/// Syncs every directory under `dir` (the files are synced as written).
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// Reads and checks a backup without restoring it: the manifest's format
/// and every file's presence, size and checksum.
///
/// # Errors
/// [`BackupError::Damaged`] naming what is wrong.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = manifest::read_manifest(dir)?;
    manifest::check_files(dir, &manifest)?;
    Ok(manifest)
}

/// What [`restore`] did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Whether migrations of this binary ran after (an older backup).
    pub migrated_from: Option<i64>,
}

/// Restores the backup in `dir` into the stores `database_url` and
/// `storage_url` name. Every process using them must be stopped.
///
/// # Errors
/// [`BackupError::Damaged`] for a backup that fails [`verify`];
/// [`BackupError::Refused`] for a newer schema, a different kind of
/// database, or stores holding data without `force` (nothing changed in
/// these cases); [`BackupError::Failed`] when a step fails, saying what was
/// restored and what to do.
pub async fn restore(
    dir: &Path,
    database_url: &str,
    storage_url: &str,
    force: bool,
) -> Result<Restored, BackupError> {
    let target = DbTarget::of(database_url)?;
    check_storage_url(storage_url)?;
    let manifest = verify(dir)?;
    if manifest.database.kind != target.kind() || manifest.database.file != target.file_name() {
        return Err(BackupError::Refused(format!(
            "the backup holds a {} database but DATABASE_URL names a {} one",
            manifest.database.kind,
            target.kind()
        )));
    }
    let known = target.known_schema_version();
    if manifest.database.schema_version > known {
        return Err(BackupError::Refused(format!(
            "the backup's schema is version {} but this binary knows up to {known}: restore it with the version that took it ({}) or newer",
            manifest.database.schema_version, manifest.product_version
        )));
    }
    let blobs = crate::open_blob_store(storage_url)
        .await
        .map_err(|e| BackupError::Failed(e.to_string()))?;
    let db_has_data = match &target {
        DbTarget::Sqlite(path) => database::sqlite_has_data(path).await?,
        DbTarget::Postgres(url) => database::postgres_has_data(url).await?,
    };
    let existing = blobs
        .list(&BlobPrefix::root())
        .await
        .map_err(blob_failed("listing the blob store"))?;
    if !force && (db_has_data || !existing.is_empty()) {
        let mut held = Vec::new();
        if db_has_data {
            held.push("the job store holds data".to_owned());
        }
        if !existing.is_empty() {
            held.push(format!("the blob store holds {} object(s)", existing.len()));
        }
        return Err(BackupError::Refused(format!(
            "{}: restore into empty stores, or pass --force to replace the job store and write the backup's blobs over these",
            held.join(" and ")
        )));
    }

    let entries: Vec<(BlobKey, PathBuf)> = manifest
        .files
        .iter()
        .filter_map(|f| Some((f.blob_key()?, dir.join(&f.path))))
        .collect();
    let total = entries.len();
    futures::stream::iter(entries)
        .map(|(key, path)| copy_in(blobs.clone(), key, path))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await
        .map_err(|e| {
            BackupError::Failed(format!(
                "{e}\nThe restore stopped while writing blobs: the job store is unchanged and the blob store holds part of the backup's {total} blob(s). Fix the cause and run the restore again with --force."
            ))
        })?;

    let db_file = dir.join(&manifest.database.file);
    let restored = match &target {
        DbTarget::Sqlite(path) => database::restore_sqlite(&db_file, path),
        DbTarget::Postgres(url) => {
            database::restore_postgres(&db_file, url, manifest.database.pg_dump_version.as_deref())
                .await
        }
    };
    restored.map_err(|e| {
        BackupError::Failed(format!(
            "{e}\nThe blobs are restored but the job store is not (SQLite: the old file is untouched; Postgres: pg_restore's transaction was rolled back). Fix the cause and run the restore again with --force."
        ))
    })?;

    // Opening the store runs this binary's migrations on the restored schema.
    let migrated_from =
        (manifest.database.schema_version < known).then_some(manifest.database.schema_version);
    let opened = crate::open_database(database_url).await.map_err(|e| {
        BackupError::Failed(format!(
            "the backup is restored, but opening it failed: {e}\nThe server runs the same migrations when it starts; fix the cause (see the error) before starting it."
        ))
    })?;
    drop(opened);
    Ok(Restored {
        manifest,
        migrated_from,
    })
}

/// Streams the file at `path` into the blob store under `key`.
async fn copy_in(
    blobs: Arc<dyn BlobStore>,
    key: BlobKey,
    path: PathBuf,
) -> Result<(), BackupError> {
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(io_failed(path.display()))?;
    blobs
        .put(&key, file_stream(file))
        .await
        .map_err(blob_failed(format!("writing {key}")))?;
    Ok(())
}

/// A file's bytes as a [`ByteStream`], in [`CHUNK`]s.
fn file_stream(file: tokio::fs::File) -> ByteStream {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    })
    .boxed()
}
