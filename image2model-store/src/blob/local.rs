//! [`LocalBlobStore`]: blobs as files under one root directory.
//!
//! Threats it stops, and how:
//! - **Path traversal.** A path is only ever built from the segments of a
//!   [`BlobKey`], re-parsed here before use (defence in depth: a key that
//!   somehow broke its invariants is refused, never joined).
//! - **Escape through a symbolic link.** The root is canonicalised and
//!   opened at open, and the store keeps that handle: below it every
//!   directory is opened from its parent's handle one name at a time with
//!   `O_NOFOLLOW`, and every file created, opened, renamed or removed
//!   relative to its directory's handle (module `beneath`). Any symbolic
//!   link on the way is refused, for reads, writes, deletes and lists
//!   alike; one swapped in while a put or a get is under way is refused
//!   the same, since nothing is looked up by path after it was checked.
//!   Directories are created one level at a time, so a planted link is
//!   never followed to create anything outside.
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
//! The store follows the root directory it opened: one renamed or
//! replaced under a running server is not picked up (`ping` then reports
//! the blob store unavailable until a restart).

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobMeta, BlobObject, BlobStore, ByteStream, Usage};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

mod beneath;
mod staged;
use beneath::{Entry, Meta};
use rustix::fs::FileType;
use staged::{Batch, StagedFile};

/// How deep `list` and `sweep_abandoned` go below the root: past any key
/// (a [`BlobKey`] has at most 8 segments), so a directory deeper than that
/// holds no object and is not walked.
const MAX_DEPTH: usize = 16;

/// How many bytes a read of a stored file yields at a time.
const READ_CHUNK: usize = 64 * 1024;

/// A [`BlobStore`] of files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    /// Canonical (absolute, link-free) root, as opened.
    root: PathBuf,
    /// The root directory, held open: every directory and file below it is
    /// reached from this handle (module `beneath`).
    root_dir: Arc<OwnedFd>,
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
    /// The staged file's name: a fresh hidden name in the key's directory.
    name: String,
    /// Whether the put was abandoned, and the directory the staged file was
    /// made in, once it was: one lock, so that the put's future and a
    /// blocking step never both miss the file (see [`Staging::adopt`]).
    state: Mutex<StagingState>,
}

#[derive(Debug, Default)]
struct StagingState {
    /// Set when the put's future ended without publishing (an error, or the
    /// future was dropped). A blocking step still running then removes the
    /// file it made instead of leaving or publishing it.
    abandoned: bool,
    /// The key's directory, once the staged file exists in it.
    dir: Option<Arc<OwnedFd>>,
}

impl Staging {
    fn state(&self) -> std::sync::MutexGuard<'_, StagingState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the directory of the staged file just made; when the put was
    /// abandoned meanwhile, removes the file and fails the step instead.
    ///
    /// Under the lock, either the guard already marked the put abandoned
    /// (and this removes the file) or the guard will find the directory
    /// here (and remove it then): no order leaves a staged file behind.
    fn adopt(&self, dir: Arc<OwnedFd>) -> Result<(), BlobError> {
        let mut state = self.state();
        self.refuse_if_abandoned(&state, &dir)?;
        state.dir = Some(dir);
        Ok(())
    }

    /// With the lock held: when the put was abandoned, removes the staged
    /// file from `dir` and fails the step.
    fn refuse_if_abandoned(&self, state: &StagingState, dir: &OwnedFd) -> Result<(), BlobError> {
        if state.abandoned {
            let _ = beneath::remove_file(dir.as_fd(), &self.name);
            return Err(abandoned());
        }
        Ok(())
    }

    /// Renames the staged file over `target` unless the put was abandoned
    /// (then removes it), under the lock, so that a put dropped at any
    /// moment either published its whole object or left nothing.
    fn publish(&self, dir: &OwnedFd, target: &str, key: &BlobKey) -> Result<(), BlobError> {
        let state = self.state();
        self.refuse_if_abandoned(&state, dir)?;
        // rename() replaces the target atomically and never follows a link
        // at the target: a planted link would be replaced, not written through.
        match beneath::rename(dir.as_fd(), &self.name, target) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(EISDIR) => Err(BlobError::Backend(format!(
                "a directory is in the way of {key}"
            ))),
            Err(e) => Err(backend("publishing a blob", e)),
        }
    }
}

fn abandoned() -> BlobError {
    BlobError::Backend("the put was abandoned".into())
}

/// `EISDIR`: what renaming a file over a directory fails with.
const EISDIR: i32 = rustix::io::Errno::ISDIR.raw_os_error();

/// Held by the put's future: removes the staged file unless it was published.
struct StagedGuard {
    staging: Arc<Staging>,
    published: bool,
}

impl Drop for StagedGuard {
    fn drop(&mut self) {
        if !self.published {
            let mut state = self.staging.state();
            state.abandoned = true;
            // Best effort: a failed or abandoned write must leave nothing.
            if let Some(dir) = state.dir.take() {
                let _ = beneath::remove_file(dir.as_fd(), &self.staging.name);
            }
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
            let root_dir = beneath::open_root(&root).map_err(|e| {
                BlobError::Unavailable(format!(
                    "opening the blob root {} (it must be a directory): {e}",
                    root.display()
                ))
            })?;
            Ok(Self {
                root,
                root_dir: Arc::new(root_dir),
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

    /// The root directory's handle, which every walk starts from.
    fn root_dir(&self) -> BorrowedFd<'_> {
        self.root_dir.as_fd()
    }

    /// Opens `dirs` down from the root, one name at a time, never through a
    /// link: the handle of each directory on the way, the key's directory
    /// last. With `create`, missing directories are made one at a time;
    /// without, a missing (or non-directory) step gives `None`. Blocking.
    fn walk(
        &self,
        dirs: &[String],
        create: bool,
        key: &str,
    ) -> Result<Option<Vec<OwnedFd>>, BlobError> {
        let mut chain: Vec<OwnedFd> = Vec::with_capacity(dirs.len());
        for segment in dirs {
            let parent = chain.last().map_or(self.root_dir(), AsFd::as_fd);
            let mut created = false;
            let next = loop {
                match beneath::open_dir(parent, segment)
                    .map_err(|e| backend("opening a blob directory", e))?
                {
                    Entry::Dir(fd) => break fd,
                    Entry::Link => return Err(symlink_refused(key)),
                    Entry::Other if create => {
                        return Err(BlobError::Backend(format!("a blob is in the way of {key}")));
                    }
                    Entry::Missing if create && !created => {
                        beneath::make_dir(parent, segment)
                            .map_err(|e| backend("creating a blob directory", e))?;
                        // Open what is there now (ours, or a racer's).
                        created = true;
                    }
                    // Pruned again at once by a concurrent delete, or in the way.
                    Entry::Missing if create => {
                        return Err(BlobError::Backend("blob directory vanished".into()));
                    }
                    Entry::Missing | Entry::Other => return Ok(None),
                }
            };
            chain.push(next);
        }
        Ok(Some(chain))
    }

    /// The handle of the key's directory at the end of `chain` (the root's,
    /// duplicated, for a key directly under it).
    fn last_dir(&self, mut chain: Vec<OwnedFd>) -> Result<OwnedFd, BlobError> {
        match chain.pop() {
            Some(fd) => Ok(fd),
            None => {
                beneath::duplicate(self.root_dir()).map_err(|e| backend("opening the blob root", e))
            }
        }
    }

    /// The key's directory and the name of its object. Blocking.
    fn parent_of(&self, key: &BlobKey) -> Result<Option<(OwnedFd, String)>, BlobError> {
        let mut segs = segments(key)?;
        let name = segs.pop().expect("a key has at least one segment");
        let Some(chain) = self.walk(&segs, false, key.as_str())? else {
            return Ok(None);
        };
        Ok(Some((self.last_dir(chain)?, name)))
    }

    /// An existing object opened for reading, refusing links; `NotFound`
    /// otherwise. Blocking.
    fn open_existing(&self, key: &BlobKey) -> Result<(fs::File, Meta), BlobError> {
        let Some((dir, name)) = self.parent_of(key)? else {
            return Err(BlobError::NotFound(key.clone()));
        };
        match beneath::open_file(dir.as_fd(), &name).map_err(|e| backend("opening a blob", e))? {
            beneath::Opened::File(file, meta) => Ok((file, meta)),
            beneath::Opened::Link => Err(symlink_refused(key.as_str())),
            beneath::Opened::Missing => Err(BlobError::NotFound(key.clone())),
        }
    }

    /// An existing object's size and time, refusing links; `NotFound`
    /// otherwise. Blocking.
    fn meta_of(&self, key: &BlobKey) -> Result<Meta, BlobError> {
        let Some((dir, name)) = self.parent_of(key)? else {
            return Err(BlobError::NotFound(key.clone()));
        };
        match beneath::stat_at(dir.as_fd(), &name).map_err(|e| backend("inspecting a blob", e))? {
            Some((FileType::Symlink, _)) => Err(symlink_refused(key.as_str())),
            Some((FileType::RegularFile, meta)) => Ok(meta),
            _ => Err(BlobError::NotFound(key.clone())),
        }
    }

    /// Makes the key's directories and creates the staged file in the last
    /// of them. Retries when a concurrent delete pruned a directory between
    /// the two steps. Blocking.
    fn create_staged(
        &self,
        key: &BlobKey,
        staging: &Staging,
    ) -> Result<(Arc<OwnedFd>, fs::File), BlobError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chain = self
                .walk(&staging.dirs, true, key.as_str())?
                .ok_or_else(|| BlobError::Backend("blob directory vanished".into()))?;
            let dir = self.last_dir(chain)?;
            match beneath::create_new(dir.as_fd(), &staging.name) {
                Ok(file) => return Ok((Arc::new(dir), file)),
                // The directory was removed since it was opened.
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
                let (dir, file) = self.create_staged(key, staging)?;
                staging.adopt(dir)?;
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

    /// Syncs the staged file and renames it over the key's name. Blocking.
    fn publish(key: &BlobKey, staging: &Staging, file: fs::File) -> Result<(), BlobError> {
        file.sync_all().map_err(|e| backend("syncing a blob", e))?;
        drop(file);
        let dir = staging.state().dir.clone().ok_or_else(abandoned)?;
        let name = key
            .segments()
            .last()
            .expect("a key has at least one segment");
        staging.publish(&dir, name, key)?;
        // Make the rename itself durable; failure here loses nothing visible.
        let _ = beneath::sync(dir.as_fd());
        Ok(())
    }

    /// The staging of a put of `key`: its directories (the key re-checked
    /// once) and a fresh hidden name for the file in the last of them.
    fn staging(key: &BlobKey) -> Result<Staging, BlobError> {
        let mut dirs = segments(key)?;
        let name = dirs.pop().expect("a key has at least one segment");
        Ok(Staging {
            dirs,
            name: staged_name(&name),
            state: Mutex::new(StagingState::default()),
        })
    }

    /// Removes an object and prunes the directories it leaves empty. Blocking.
    fn remove(&self, key: &BlobKey) -> Result<(), BlobError> {
        let segs = segments(key)?;
        let (name, dirs) = segs.split_last().expect("a key has at least one segment");
        let Some(mut chain) = self.walk(dirs, false, key.as_str())? else {
            return Ok(());
        };
        // Removing a link removes the link itself, never its target; a
        // directory by that name is not an object and stays.
        let dir = chain.last().map_or(self.root_dir(), AsFd::as_fd);
        if !beneath::remove_file(dir, name).map_err(|e| backend("deleting a blob", e))? {
            return Ok(());
        }
        // Prune directories left empty (only an empty one can be removed),
        // so that deleted jobs leave no folders behind; the root stays.
        for segment in dirs.iter().rev() {
            chain.pop();
            let parent = chain.last().map_or(self.root_dir(), AsFd::as_fd);
            if !beneath::remove_empty_dir(parent, segment) {
                break;
            }
        }
        Ok(())
    }

    /// Every object under `prefix`, by key. Blocking.
    fn objects(&self, prefix: &BlobPrefix) -> Result<Vec<BlobMeta>, BlobError> {
        let segs = prefix_segments(prefix)?;
        let label = prefix.as_str().unwrap_or("");
        let Some(chain) = self.walk(&segs, false, label)? else {
            return Ok(Vec::new());
        };
        let start = self.last_dir(chain)?;
        let mut found = Vec::new();
        Self::list_dir(&start, prefix.as_str(), 0, &mut found)?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// The objects in `dir` (whose keys start with `key_prefix`) and below
    /// it, depth first: only the directories on the way down are open at
    /// once. Blocking.
    fn list_dir(
        dir: &OwnedFd,
        key_prefix: Option<&str>,
        depth: usize,
        found: &mut Vec<BlobMeta>,
    ) -> Result<(), BlobError> {
        let listed = match beneath::entries(dir.as_fd()) {
            Ok(listed) => listed,
            // Pruned by a concurrent delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(backend("listing blobs", e)),
        };
        for (name, kind) in listed {
            // Staged files and anything else hidden is not an object.
            if name.starts_with('.') {
                continue;
            }
            let key_text = match key_prefix {
                Some(p) => format!("{p}/{name}"),
                None => name.clone(),
            };
            // Links are skipped, never followed.
            match kind {
                FileType::Directory if depth < MAX_DEPTH => {
                    // Pruned by a concurrent delete, or swapped: skipped.
                    if let Ok(Entry::Dir(sub)) = beneath::open_dir(dir.as_fd(), &name) {
                        Self::list_dir(&sub, Some(&key_text), depth + 1, found)?;
                    }
                }
                FileType::RegularFile => {
                    let Ok(key) = BlobKey::parse(&key_text) else {
                        continue;
                    };
                    let Ok(Some((FileType::RegularFile, meta))) =
                        beneath::stat_at(dir.as_fd(), &name)
                    else {
                        continue;
                    };
                    found.push(BlobMeta {
                        key,
                        size: meta.size,
                        last_modified: meta.modified,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes (or with `dry_run` only counts) the staged files last
    /// written before `before`: the leftovers of puts whose process died
    /// between creating and publishing them. Directories left empty are
    /// pruned; links are never followed. Blocking.
    fn sweep_staged(&self, before: DateTime<Utc>, dry_run: bool) -> Result<Usage, BlobError> {
        let mut swept = Usage::default();
        let root =
            beneath::duplicate(self.root_dir()).map_err(|e| backend("opening the blob root", e))?;
        Self::sweep_dir(&root, 0, before, dry_run, &mut swept)?;
        Ok(swept)
    }

    /// [`LocalBlobStore::sweep_staged`] in `dir` and below it: whether a
    /// staged file was removed there (so that `dir` may now be empty).
    fn sweep_dir(
        dir: &OwnedFd,
        depth: usize,
        before: DateTime<Utc>,
        dry_run: bool,
        swept: &mut Usage,
    ) -> Result<bool, BlobError> {
        let mut removed = false;
        let listed = match beneath::entries(dir.as_fd()) {
            Ok(listed) => listed,
            // Pruned by a concurrent delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(backend("listing blobs", e)),
        };
        for (name, kind) in listed {
            if kind == FileType::Directory && depth < MAX_DEPTH {
                let Ok(Entry::Dir(sub)) = beneath::open_dir(dir.as_fd(), &name) else {
                    continue;
                };
                if Self::sweep_dir(&sub, depth + 1, before, dry_run, swept)? {
                    drop(sub);
                    // Fails (and stays) unless it is empty now.
                    beneath::remove_empty_dir(dir.as_fd(), &name);
                    removed = true;
                }
                continue;
            }
            if kind != FileType::RegularFile || !is_staged_name(&name) {
                continue;
            }
            let Ok(Some((FileType::RegularFile, meta))) = beneath::stat_at(dir.as_fd(), &name)
            else {
                continue;
            };
            if meta.modified >= before {
                continue;
            }
            if !dry_run {
                // `false`: published or removed by its own put meanwhile.
                if !beneath::remove_file(dir.as_fd(), &name)
                    .map_err(|e| backend("removing a staged blob file", e))?
                {
                    continue;
                }
                removed = true;
            }
            swept.objects += 1;
            swept.bytes += meta.size;
        }
        Ok(removed)
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

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<u64, BlobError> {
        // The guard removes the staged file on every early return, and at
        // once if this future is dropped mid-body (a step still running then
        // removes what it made, see `Staging::check`).
        let staging = Arc::new(Self::staging(key)?);
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
                // The size of the file opened, from its own handle.
                let (mut file, meta) = store.open_existing(&key)?;
                let size = meta.size;
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
            let meta = store.meta_of(&key)?;
            Ok(BlobMeta {
                key,
                size: meta.size,
                last_modified: meta.modified,
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
        self.run(|store| {
            match beneath::same_dir(store.root_dir(), &store.root) {
                Ok(true) => Ok(()),
                // Writes would go to the directory opened at start, which
                // is no longer the configured one.
                Ok(false) => Err(BlobError::Unavailable(format!(
                    "the blob root {} was replaced or moved since the store opened it: restart \
                     the server to use the new one",
                    store.root.display()
                ))),
                Err(e) => Err(BlobError::Unavailable(format!(
                    "the blob root is not reachable: {e}"
                ))),
            }
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
