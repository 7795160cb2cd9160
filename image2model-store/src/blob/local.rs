//! [`LocalBlobStore`]: blobs as files under one root directory.
//!
//! Threats it stops, and how:
//! - **Path traversal.** A path is only ever built from the segments of a
//!   [`BlobKey`], re-parsed here before use (defence in depth: a key that
//!   somehow broke its invariants is refused, never joined).
//! - **Escape through a symbolic link.** The root is canonicalised at open;
//!   below it every directory and file is checked with `symlink_metadata`
//!   (which does not follow links) and any symbolic link is refused, for
//!   reads, writes, and lists alike. Directories are created one level at a
//!   time, so a planted link is never followed to create anything outside.
//! - **Torn or partial objects.** A body is written to a staged file in the
//!   target directory (named `.{name}.{random}.tmp`: keys never start with a
//!   `.`, so it cannot collide with one), flushed with `fsync`, then renamed
//!   over the target, which is atomic on POSIX file systems. On any error,
//!   and when the `put` future is dropped, the staged file is removed.
//!   `list` never shows staged files.
//!
//! What it cannot stop: someone with write access to the root swapping a
//! directory for a link between the check and the use.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobMeta, BlobObject, BlobStore, ByteStream};
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many bytes a read of a stored file yields at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A [`BlobStore`] of files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    /// Canonical (absolute, link-free) root; every path starts here.
    root: PathBuf,
}

fn backend(context: &str, e: io::Error) -> BlobError {
    BlobError::Backend(format!("{context}: {e}"))
}

fn symlink_refused(key: &str) -> BlobError {
    BlobError::Backend(format!(
        "refusing a symbolic link on the way to {key} in the blob store"
    ))
}

/// The key's segments, after re-checking the key's invariants.
fn segments(key: &BlobKey) -> Result<Vec<String>, BlobError> {
    let key = BlobKey::parse(key.as_str())
        .map_err(|e| BlobError::Backend(format!("refusing an invalid blob key: {e}")))?;
    Ok(key.segments().map(str::to_owned).collect())
}

fn prefix_segments(prefix: &BlobPrefix) -> Result<Vec<String>, BlobError> {
    match prefix.as_str() {
        None => Ok(Vec::new()),
        Some(text) => {
            BlobPrefix::parse(text)
                .map_err(|e| BlobError::Backend(format!("refusing an invalid prefix: {e}")))?;
            Ok(text.split('/').map(str::to_owned).collect())
        }
    }
}

/// Removes the staged file unless the write was published.
struct Staged {
    path: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a failed or abandoned write must leave nothing.
            let _ = std::fs::remove_file(path);
        }
    }
}

fn staged_name(name: &str) -> String {
    use rand::Rng;
    let tag: u64 = rand::rng().random();
    format!(".{name}.{tag:016x}.tmp")
}

impl LocalBlobStore {
    /// Opens a store rooted at `root`, creating the directory if needed.
    ///
    /// # Errors
    /// [`BlobError::Unavailable`] when the root cannot be created or resolved,
    /// or is not a directory.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self, BlobError> {
        let root = root.as_ref();
        fs::create_dir_all(root).await.map_err(|e| {
            BlobError::Unavailable(format!("creating the blob root {}: {e}", root.display()))
        })?;
        let root = fs::canonicalize(root).await.map_err(|e| {
            BlobError::Unavailable(format!("resolving the blob root {}: {e}", root.display()))
        })?;
        if !fs::metadata(&root)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            return Err(BlobError::Unavailable(format!(
                "the blob root {} is not a directory",
                root.display()
            )));
        }
        Ok(Self { root })
    }

    /// The canonical root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks `dirs` down from the root without following links. With
    /// `create`, missing directories are made one at a time; without, a
    /// missing (or non-directory) step gives `None`.
    async fn walk(
        &self,
        dirs: &[String],
        create: bool,
        key: &str,
    ) -> Result<Option<PathBuf>, BlobError> {
        let mut current = self.root.clone();
        for segment in dirs {
            let next = current.join(segment);
            let mut created = false;
            loop {
                match fs::symlink_metadata(&next).await {
                    Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(key)),
                    Ok(m) if m.is_dir() => break,
                    Ok(_) if create => {
                        return Err(BlobError::Backend(format!("a blob is in the way of {key}")));
                    }
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create && !created => {
                        match fs::create_dir(&next).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(e) => return Err(backend("creating a blob directory", e)),
                        }
                        // Check again what is there now (ours, or a racer's).
                        created = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(backend("inspecting a blob directory", e)),
                }
            }
            current = next;
        }
        Ok(Some(current))
    }

    /// The path of an existing object, refusing links; `NotFound` otherwise.
    async fn existing(&self, key: &BlobKey) -> Result<(PathBuf, std::fs::Metadata), BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let Some(dir) = self.walk(dirs, false, key.as_str()).await? else {
            return Err(BlobError::NotFound(key.clone()));
        };
        let path = dir.join(name);
        match fs::symlink_metadata(&path).await {
            Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(key.as_str())),
            Ok(m) if m.is_file() => Ok((path, m)),
            Ok(_) => Err(BlobError::NotFound(key.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound(key.clone())),
            Err(e) => Err(backend("inspecting a blob", e)),
        }
    }

    /// Creates the staged file for `name` in the key's directory, making the
    /// directories first. Retries when a concurrent delete pruned a directory
    /// between the two steps.
    async fn stage(
        &self,
        dirs: &[String],
        name: &str,
        key: &str,
    ) -> Result<(PathBuf, Staged, fs::File), BlobError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = self
                .walk(dirs, true, key)
                .await?
                .ok_or_else(|| BlobError::Backend("blob directory vanished".into()))?;
            let staged_path = dir.join(staged_name(name));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staged_path)
                .await
            {
                Ok(file) => {
                    let guard = Staged {
                        path: Some(staged_path),
                    };
                    return Ok((dir, guard, file));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => {}
                Err(e) => return Err(backend("creating a staged blob file", e)),
            }
        }
    }
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let (dir, mut staged, mut file) = self.stage(dirs, name, key.as_str()).await?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            // On `?` the guard removes the staged file.
            let chunk = chunk.map_err(BlobError::Body)?;
            file.write_all(&chunk)
                .await
                .map_err(|e| backend("writing a blob", e))?;
            written += chunk.len() as u64;
        }
        file.flush()
            .await
            .map_err(|e| backend("flushing a blob", e))?;
        file.sync_all()
            .await
            .map_err(|e| backend("syncing a blob", e))?;
        drop(file);
        let target = dir.join(name);
        if let Ok(m) = fs::symlink_metadata(&target).await
            && m.is_dir()
        {
            return Err(BlobError::Backend(format!(
                "a directory is in the way of {key}"
            )));
        }
        let staged_path = staged.path.clone().expect("staged until published");
        // rename() replaces the target atomically and never follows a link
        // at the target: a planted link would be replaced, not written through.
        fs::rename(&staged_path, &target)
            .await
            .map_err(|e| backend("publishing a blob", e))?;
        staged.path = None;
        // Make the rename itself durable; failure here loses nothing visible.
        if let Ok(d) = fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(written)
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject, BlobError> {
        let (path, _) = self.existing(key).await?;
        let file = match fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(key.clone()));
            }
            Err(e) => return Err(backend("opening a blob", e)),
        };
        // The size of the file we opened, not of whatever the path names now.
        let size = file
            .metadata()
            .await
            .map_err(|e| backend("inspecting a blob", e))?
            .len();
        let stream = futures::stream::try_unfold(file, |mut f| async move {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            let n = f.read_buf(&mut buf).await?;
            Ok((n > 0).then(|| (buf.freeze(), f)))
        })
        .boxed();
        Ok(BlobObject { size, stream })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta, BlobError> {
        let (_, meta) = self.existing(key).await?;
        Ok(BlobMeta {
            key: key.clone(),
            size: meta.len(),
            last_modified: modified(&meta),
        })
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let Some(dir) = self.walk(dirs, false, key.as_str()).await? else {
            return Ok(());
        };
        let path = dir.join(name);
        match fs::symlink_metadata(&path).await {
            // Removing a link removes the link itself, never its target.
            Ok(m) if m.is_file() || m.file_type().is_symlink() => {
                match fs::remove_file(&path).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(backend("deleting a blob", e)),
                }
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(backend("inspecting a blob", e)),
        }
        // Prune directories left empty (remove_dir fails on non-empty ones),
        // so that deleted jobs leave no folders behind.
        let mut current = dir;
        while current != self.root && current.starts_with(&self.root) {
            if fs::remove_dir(&current).await.is_err() {
                break;
            }
            match current.parent() {
                Some(parent) => current = parent.to_path_buf(),
                None => break,
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let segs = prefix_segments(prefix)?;
        let label = prefix.as_str().unwrap_or("");
        let Some(start) = self.walk(&segs, false, label).await? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut pending = vec![(start, prefix.as_str().map(str::to_owned))];
        while let Some((dir, key_prefix)) = pending.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                // Pruned by a concurrent delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend("listing blobs", e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| backend("listing blobs", e))?
            {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Staged files and anything else hidden is not an object.
                if name.starts_with('.') {
                    continue;
                }
                let key_text = match &key_prefix {
                    Some(p) => format!("{p}/{name}"),
                    None => name,
                };
                // `file_type` does not follow links: links are skipped.
                let Ok(kind) = entry.file_type().await else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push((entry.path(), Some(key_text)));
                } else if kind.is_file() {
                    let Ok(key) = BlobKey::parse(&key_text) else {
                        continue;
                    };
                    let Ok(meta) = entry.metadata().await else {
                        continue;
                    };
                    found.push(BlobMeta {
                        key,
                        size: meta.len(),
                        last_modified: modified(&meta),
                    });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn ping(&self) -> Result<(), BlobError> {
        match fs::symlink_metadata(&self.root).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BlobError::Unavailable(
                "the blob root is not a directory".into(),
            )),
            Err(e) => Err(BlobError::Unavailable(format!(
                "the blob root is not reachable: {e}"
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
