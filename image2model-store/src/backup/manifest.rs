//! `manifest.json`: what a backup holds, written last; and the check of a
//! backup directory against it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use image2model_core::domain::BlobKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackupError;

/// The value of [`Manifest::format`].
pub const FORMAT: &str = "image2model-backup";
/// The [`Manifest::format_version`] this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The directory of the blobs in a backup directory.
pub const BLOBS_DIR: &str = "blobs";
/// The SQLite snapshot's file name.
pub const SQLITE_FILE: &str = "database.sqlite";
/// The `pg_dump --format=custom` archive's file name.
pub const POSTGRES_FILE: &str = "database.pgdump";

/// What a backup holds: written last, so a directory without one is not a
/// (complete) backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this binary.
    pub format_version: u32,
    /// When the job store snapshot was taken.
    pub created_at: DateTime<Utc>,
    /// The version of the `image2model` that took it.
    pub product_version: String,
    /// The job store's snapshot.
    pub database: DatabasePart,
    /// The blobs.
    pub blobs: BlobsPart,
    /// Every file of the backup but the manifest, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The job store's part of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePart {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// [`SQLITE_FILE`] or [`POSTGRES_FILE`].
    pub file: String,
    /// The newest migration applied in the snapshot.
    pub schema_version: i64,
    /// Jobs in the snapshot.
    pub jobs: u64,
    /// `pg_dump --version` (Postgres only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_dump_version: Option<String>,
    /// The server's `server_version` (Postgres only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
}

/// The blob store's part of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobsPart {
    /// The store copied, as it describes itself (no secrets).
    pub source: String,
    /// Objects copied.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Keys that the snapshot's items name but that were gone from the
    /// store when copied (their job was deleted meanwhile).
    pub missing: Vec<String>,
    /// Objects of jobs newer than the snapshot, left out.
    pub skipped_newer: u64,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// `/`-separated, relative to the backup directory.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

impl FileEntry {
    /// The blob key of a `blobs/…` entry, `None` for another file.
    #[must_use]
    pub fn blob_key(&self) -> Option<BlobKey> {
        self.path
            .strip_prefix(BLOBS_DIR)?
            .strip_prefix('/')
            .and_then(|k| BlobKey::parse(k).ok())
    }
}

/// Reads `DIR/manifest.json`, refusing an unknown format or version before
/// anything else is looked at.
///
/// # Errors
/// [`BackupError::Damaged`] when it is missing, unreadable or of another
/// format or version.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Damaged(format!(
                "{} has no {MANIFEST}: not a complete backup (a backup that stopped part-way has none)",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(BackupError::Damaged(format!("{}: {e}", path.display())));
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| BackupError::Damaged(format!("{}: not JSON: {e}", path.display())))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(BackupError::Damaged(format!(
            "{}: not an image2model backup manifest (format is not {FORMAT:?})",
            path.display()
        )));
    }
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(BackupError::Damaged(format!(
                "{}: backup format version {v}, but this binary reads version {FORMAT_VERSION} only",
                path.display()
            )));
        }
        None => {
            return Err(BackupError::Damaged(format!(
                "{}: no format_version",
                path.display()
            )));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| BackupError::Damaged(format!("{}: {e}", path.display())))
}

/// Checks that `dir` holds exactly the files `manifest` lists (no more, no
/// fewer, no symbolic links), each of its size and SHA-256.
///
/// # Errors
/// [`BackupError::Damaged`] naming every difference.
pub fn check_files(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let mut problems = Vec::new();
    let mut expected: BTreeMap<&str, &FileEntry> = BTreeMap::new();
    for entry in &manifest.files {
        let valid = entry.path == manifest.database.file || entry.blob_key().is_some();
        if !valid {
            problems.push(format!(
                "the manifest lists an unexpected path {:?}",
                entry.path
            ));
        } else if expected.insert(&entry.path, entry).is_some() {
            problems.push(format!("the manifest lists {:?} twice", entry.path));
        }
    }
    if !expected.contains_key(manifest.database.file.as_str()) {
        problems.push(format!(
            "the manifest does not list the database file {:?}",
            manifest.database.file
        ));
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found, &mut problems);
    for rel in &found {
        if rel == MANIFEST {
            continue;
        }
        let Some(entry) = expected.remove(rel.as_str()) else {
            problems.push(format!("{rel}: a file the manifest does not list"));
            continue;
        };
        match hash_file(&dir.join(rel)) {
            Ok((size, _)) if size != entry.size => problems.push(format!(
                "{rel}: {size} bytes, the manifest says {}",
                entry.size
            )),
            Ok((_, sha)) if sha != entry.sha256 => {
                problems.push(format!("{rel}: checksum differs from the manifest's"));
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{rel}: {e}")),
        }
    }
    for missing in expected.keys() {
        problems.push(format!("{missing}: listed in the manifest but missing"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Damaged(format!(
            "{} is damaged or was changed:\n  - {}",
            dir.display(),
            problems.join("\n  - ")
        )))
    }
}

/// Every regular file under `at`, relative to `root` with `/`; anything
/// else (links, devices, unreadable directories) is a problem.
fn walk(root: &Path, at: &Path, found: &mut Vec<String>, problems: &mut Vec<String>) {
    let entries = match std::fs::read_dir(at) {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{}: {e}", at.display()));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("{}: {e}", at.display()));
                continue;
            }
        };
        let path = entry.path();
        let rel = relative(root, &path);
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, found, problems),
            Ok(t) if t.is_file() => found.push(rel),
            Ok(_) => problems.push(format!("{rel}: not a regular file")),
            Err(e) => problems.push(format!("{rel}: {e}")),
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let rel: PathBuf = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// The size and SHA-256 (hex) of a file, read in chunks.
///
/// # Errors
/// Any read error.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}
