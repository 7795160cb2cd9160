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
//!   `list` never shows staged files. A process killed mid-`put` leaves
//!   its staged file: `sweep_abandoned` removes those not written for a
//!   while (the retention task's orphan cleanup calls it).
//!
//! File system work runs on tokio's blocking pool, one task per step rather
//! than one per system call. A `put` gathers the body into a batch of
//! `PUT_BATCH_BYTES` (512 KiB) and hands it to one blocking task, then fills
//! the same batch again: the first task also makes the directories and the
//! staged file, the last also syncs and renames it, so a body that fits in
//! one batch costs one hand-off. No thread waits for a slow client, no more
//! than one batch of the body is held in memory, and a body refused within
//! its first batch never touches the disk. Where the file system allows,
//! the staged file is written with direct I/O, around the page cache
//! (module `staged`).
//!
//! What it cannot stop: someone with write access to the root swapping a
//! directory for a link between the check and the use.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobMeta, BlobObject, BlobStore, ByteStream, Usage};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

mod staged;
use staged::{Batch, StagedFile};

/// How many bytes a read of a stored file yields at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A [`BlobStore`] of files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    /// Canonical (absolute, link-free) root; every path starts here.
    root: PathBuf,
    /// Staged files may be written with direct I/O ([`LocalOptions`]).
    direct_io: bool,
}

/// How a [`LocalBlobStore`] writes. The default is the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    /// Write staged files with direct I/O where the file system takes it
    /// (module `staged`): a performance-only path. Off (`BLOB_DIRECT_IO=false`),
    /// every byte goes through the page cache, which rules it out of a bug
    /// report without changing what is stored.
    pub direct_io: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self { direct_io: true }
    }
}

fn backend(context: &str, e: io::Error) -> BlobError {
    // No space, no inodes, or a disk quota: the disk is full, not broken.
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return BlobError::Full(format!("{context}: {e}"));
    }
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

/// The staged file of a put in progress, shared by the put's future and the
/// blocking steps it started.
#[derive(Debug)]
struct Staging {
    /// The key's directories below the root, checked once.
    dirs: Vec<String>,
    /// The staged file: a fresh hidden name in the key's directory.
    path: PathBuf,
    /// Set when the put's future ended without publishing (an error, or the
    /// future was dropped). A blocking step still running then removes the
    /// file it made instead of leaving or publishing it.
    abandoned: AtomicBool,
}

impl Staging {
    /// After a step touched the file: when the put was abandoned meanwhile,
    /// removes the file and fails the step.
    ///
    /// The guard sets `abandoned` and then removes the path; a step makes or
    /// writes the file and then reads `abandoned`. Either the step sees the
    /// flag, or the guard's removal comes after the file exists: no order
    /// leaves a staged file behind.
    fn check(&self) -> Result<(), BlobError> {
        if self.abandoned.load(AtomicOrdering::SeqCst) {
            let _ = fs::remove_file(&self.path);
            return Err(BlobError::Backend("the put was abandoned".into()));
        }
        Ok(())
    }
}

/// Held by the put's future: removes the staged file unless it was published.
struct StagedGuard {
    staging: Arc<Staging>,
    published: bool,
}

impl Drop for StagedGuard {
    fn drop(&mut self) {
        if !self.published {
            self.staging.abandoned.store(true, AtomicOrdering::SeqCst);
            // Best effort: a failed or abandoned write must leave nothing.
            let _ = fs::remove_file(&self.staging.path);
        }
    }
}

/// Whether a file name is one [`staged_name`] makes.
fn is_staged_name(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    inner.rsplit_once('.').is_some_and(|(key_name, tag)| {
        !key_name.is_empty() && tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())
    })
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
        Self::open_with(root, LocalOptions::default()).await
    }

    /// Opens a store rooted at `root` that writes as `options` say.
    ///
    /// # Errors
    /// As [`LocalBlobStore::open`].
    pub async fn open_with(
        root: impl AsRef<Path>,
        options: LocalOptions,
    ) -> Result<Self, BlobError> {
        let root = root.as_ref().to_path_buf();
        blocking(move || {
            fs::create_dir_all(&root).map_err(|e| {
                BlobError::Unavailable(format!("creating the blob root {}: {e}", root.display()))
            })?;
            let root = fs::canonicalize(&root).map_err(|e| {
                BlobError::Unavailable(format!("resolving the blob root {}: {e}", root.display()))
            })?;
            if !fs::metadata(&root).map(|m| m.is_dir()).unwrap_or(false) {
                return Err(BlobError::Unavailable(format!(
                    "the blob root {} is not a directory",
                    root.display()
                )));
            }
            Ok(Self {
                root,
                direct_io: options.direct_io,
            })
        })
        .await
    }

    /// How this store writes.
    #[must_use]
    pub fn options(&self) -> LocalOptions {
        LocalOptions {
            direct_io: self.direct_io,
        }
    }

    /// The canonical root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks `dirs` down from the root without following links. With
    /// `create`, missing directories are made one at a time; without, a
    /// missing (or non-directory) step gives `None`. Blocking.
    fn walk(&self, dirs: &[String], create: bool, key: &str) -> Result<Option<PathBuf>, BlobError> {
        let mut current = self.root.clone();
        for segment in dirs {
            let next = current.join(segment);
            let mut created = false;
            loop {
                match fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => return Err(symlink_refused(key)),
                    Ok(m) if m.is_dir() => break,
                    Ok(_) if create => {
                        return Err(BlobError::Backend(format!("a blob is in the way of {key}")));
                    }
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create && !created => {
                        match fs::create_dir(&next) {
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
    /// Blocking.
    fn existing(&self, key: &BlobKey) -> Result<(PathBuf, fs::Metadata), BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let Some(dir) = self.walk(dirs, false, key.as_str())? else {
            return Err(BlobError::NotFound(key.clone()));
        };
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => Err(symlink_refused(key.as_str())),
            Ok(m) if m.is_file() => Ok((path, m)),
            Ok(_) => Err(BlobError::NotFound(key.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound(key.clone())),
            Err(e) => Err(backend("inspecting a blob", e)),
        }
    }

    /// Makes the key's directories and creates the staged file. Retries when a concurrent delete pruned a
    /// directory between the two steps. Blocking.
    fn create_staged(&self, key: &BlobKey, staging: &Staging) -> Result<fs::File, BlobError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.walk(&staging.dirs, true, key.as_str())?
                .ok_or_else(|| BlobError::Backend("blob directory vanished".into()))?;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging.path)
            {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 3 => {}
                Err(e) => return Err(backend("creating a staged blob file", e)),
            }
        }
    }

    /// One blocking step of a put: creates the staged file when there is
    /// none yet, writes the batch (handing it back empty), and with
    /// `finish` publishes the file (returning `None`). Blocking.
    fn put_step(
        &self,
        key: &BlobKey,
        staging: &Staging,
        file: Option<StagedFile>,
        mut batch: Batch,
        finish: bool,
    ) -> PutStep {
        let mut file = match file {
            Some(file) => file,
            None => {
                let file = self.create_staged(key, staging)?;
                staging.check()?;
                StagedFile::new(file, &batch, finish, self.direct_io)
            }
        };
        file.write_batch(&mut batch, finish)
            .map_err(|e| backend("writing a blob", e))?;
        if !finish {
            return Ok((Some(file), batch));
        }
        Self::publish(key, staging, file.into_file())?;
        Ok((None, batch))
    }

    /// Syncs the staged file and renames it over the key's path. Blocking.
    fn publish(key: &BlobKey, staging: &Staging, file: fs::File) -> Result<(), BlobError> {
        file.sync_all().map_err(|e| backend("syncing a blob", e))?;
        drop(file);
        let dir = staging
            .path
            .parent()
            .expect("a staged file is in the key's directory");
        let name = key
            .segments()
            .last()
            .expect("a key has at least one segment");
        let target = dir.join(name);
        if let Ok(m) = fs::symlink_metadata(&target)
            && m.is_dir()
        {
            return Err(BlobError::Backend(format!(
                "a directory is in the way of {key}"
            )));
        }
        // An abandoned put publishes nothing.
        staging.check()?;
        // rename() replaces the target atomically and never follows a link
        // at the target: a planted link would be replaced, not written through.
        fs::rename(&staging.path, &target).map_err(|e| backend("publishing a blob", e))?;
        // Make the rename itself durable; failure here loses nothing visible.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The staging of a put of `key`: its directories (the key re-checked
    /// once) and a fresh hidden name in the last of them.
    fn staging(&self, key: &BlobKey) -> Result<Staging, BlobError> {
        let mut dirs = segments(key)?;
        let name = dirs.pop().expect("a key has at least one segment");
        let mut path = self.root.clone();
        for dir in &dirs {
            path.push(dir);
        }
        path.push(staged_name(&name));
        Ok(Staging {
            dirs,
            path,
            abandoned: AtomicBool::new(false),
        })
    }

    /// Removes an object and prunes the directories it leaves empty. Blocking.
    fn remove(&self, key: &BlobKey) -> Result<(), BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let Some(dir) = self.walk(dirs, false, key.as_str())? else {
            return Ok(());
        };
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            // Removing a link removes the link itself, never its target.
            Ok(m) if m.is_file() || m.file_type().is_symlink() => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(backend("deleting a blob", e)),
            },
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(backend("inspecting a blob", e)),
        }
        // Prune directories left empty (remove_dir fails on non-empty ones),
        // so that deleted jobs leave no folders behind.
        let mut current = dir;
        while current != self.root && current.starts_with(&self.root) {
            if fs::remove_dir(&current).is_err() {
                break;
            }
            match current.parent() {
                Some(parent) => current = parent.to_path_buf(),
                None => break,
            }
        }
        Ok(())
    }

    /// Every object under `prefix`, by key. Blocking.
    fn objects(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let segs = prefix_segments(prefix)?;
        let label = prefix.as_str().unwrap_or("");
        let Some(start) = self.walk(&segs, false, label)? else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let mut pending = vec![(start, prefix.as_str().map(str::to_owned))];
        while let Some((dir, key_prefix)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Pruned by a concurrent delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend("listing blobs", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| backend("listing blobs", e))?;
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
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push((entry.path(), Some(key_text)));
                } else if kind.is_file() {
                    let Ok(key) = BlobKey::parse(&key_text) else {
                        continue;
                    };
                    let Ok(meta) = entry.metadata() else {
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

    /// Removes (or with `dry_run` only counts) the staged files last
    /// written before `before`: the leftovers of puts whose process died
    /// between creating and publishing them. Directories left empty are
    /// pruned; links are never followed. Blocking.
    fn sweep_staged(&self, before: DateTime<Utc>, dry_run: bool) -> Result<Usage, BlobError> {
        let mut swept = Usage::default();
        let mut emptied = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend("listing blobs", e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| backend("listing blobs", e))?;
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(entry.path());
                    continue;
                }
                let staged = entry.file_name().to_str().is_some_and(is_staged_name);
                if !kind.is_file() || !staged {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                if modified(&meta) >= before {
                    continue;
                }
                if !dry_run {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => emptied.push(dir.clone()),
                        // Published or removed by its own put meanwhile.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(backend("removing a staged blob file", e)),
                    }
                }
                swept.objects += 1;
                swept.bytes += meta.len();
            }
        }
        for dir in emptied {
            let mut current = dir;
            while current != self.root && current.starts_with(&self.root) {
                if fs::remove_dir(&current).is_err() {
                    break;
                }
                match current.parent() {
                    Some(parent) => current = parent.to_path_buf(),
                    None => break,
                }
            }
        }
        Ok(swept)
    }

    /// Runs `f` with a clone of this store on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, BlobError>
    where
        T: Send + 'static,
        F: FnOnce(&LocalBlobStore) -> Result<T, BlobError> + Send + 'static,
    {
        let store = self.clone();
        blocking(move || f(&store)).await
    }
}

/// Runs blocking file system work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, BlobError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
{
    joined(tokio::task::spawn_blocking(f)).await
}

/// The result of blocking work already started.
async fn joined<T>(task: JoinHandle<Result<T, BlobError>>) -> Result<T, BlobError> {
    task.await
        .map_err(|e| BlobError::Backend(format!("a blob store task failed: {e}")))?
}

/// A blob opened for a get: small ones are read at once.
enum Opened {
    Whole(Vec<u8>),
    File(fs::File),
}

/// What a put's blocking step hands back: the staged file (until the last
/// step publishes it) and the batch it wrote, emptied for reuse.
type PutStep = Result<(Option<StagedFile>, Batch), BlobError>;

fn modified(meta: &fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        // The guard removes the staged file on every early return, and at
        // once if this future is dropped mid-body (a step still running then
        // removes what it made, see `Staging::check`).
        let staging = Arc::new(self.staging(key)?);
        let mut guard = StagedGuard {
            staging: staging.clone(),
            published: false,
        };
        // One batch, filled from the body and then written by one blocking
        // step, again and again: a put holds at most one batch of its body,
        // and a body error never meets a step in flight, so the guard's
        // removal comes after every write.
        let mut batch = Batch::new();
        let mut file = None;
        let mut written = 0u64;
        loop {
            let ended = batch.fill(&mut body).await.map_err(BlobError::Body)?;
            written += batch.len() as u64;
            let (store, key, staging) = (self.clone(), key.clone(), staging.clone());
            let step = tokio::task::spawn_blocking(move || {
                store.put_step(&key, &staging, file, batch, ended)
            });
            let (staged, emptied) = joined(step).await?;
            if ended {
                break;
            }
            (file, batch) = (staged, emptied);
        }
        guard.published = true;
        Ok(written)
    }

    async fn get(&self, key: &BlobKey) -> Result<BlobObject, BlobError> {
        let (opened, size) = {
            let key = key.clone();
            self.run(move |store| {
                let (path, _) = store.existing(&key)?;
                let mut file = match fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(BlobError::NotFound(key.clone()));
                    }
                    Err(e) => return Err(backend("opening a blob", e)),
                };
                // The size of the file we opened, not of whatever the path names now.
                let size = file
                    .metadata()
                    .map_err(|e| backend("inspecting a blob", e))?
                    .len();
                // A small blob (an upload, a preview) is read in this same
                // step: streaming it would cost two more hand-offs to the
                // blocking pool (its bytes, then the end of the file).
                if size <= READ_CHUNK as u64 {
                    let mut bytes = Vec::with_capacity(size as usize);
                    io::Read::read_to_end(&mut io::Read::take(&mut file, size), &mut bytes)
                        .map_err(|e| backend("reading a blob", e))?;
                    let size = bytes.len() as u64;
                    return Ok((Opened::Whole(bytes), size));
                }
                Ok((Opened::File(file), size))
            })
            .await?
        };
        let file = match opened {
            Opened::File(file) => file,
            Opened::Whole(bytes) => {
                let chunk = (!bytes.is_empty()).then(|| Ok(bytes.into()));
                return Ok(BlobObject {
                    size,
                    stream: futures::stream::iter(chunk).boxed(),
                });
            }
        };
        let stream =
            futures::stream::try_unfold(tokio::fs::File::from_std(file), |mut f| async move {
                let mut buf = BytesMut::with_capacity(READ_CHUNK);
                let n = f.read_buf(&mut buf).await?;
                Ok((n > 0).then(|| (buf.freeze(), f)))
            })
            .boxed();
        Ok(BlobObject { size, stream })
    }

    async fn head(&self, key: &BlobKey) -> Result<BlobMeta, BlobError> {
        let key = key.clone();
        self.run(move |store| {
            let (_, meta) = store.existing(&key)?;
            Ok(BlobMeta {
                key,
                size: meta.len(),
                last_modified: modified(&meta),
            })
        })
        .await
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        let key = key.clone();
        self.run(move |store| store.remove(&key)).await
    }

    async fn list(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let prefix = prefix.clone();
        self.run(move |store| store.objects(&prefix)).await
    }

    async fn sweep_abandoned(
        &self,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<Usage, BlobError> {
        self.run(move |store| store.sweep_staged(before, dry_run))
            .await
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.run(|store| match fs::symlink_metadata(&store.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(BlobError::Unavailable(
                "the blob root is not a directory".into(),
            )),
            Err(e) => Err(BlobError::Unavailable(format!(
                "the blob root is not reachable: {e}"
            ))),
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
