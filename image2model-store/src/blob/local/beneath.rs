//! Opening what lies below the blob root one name at a time, relative to
//! a directory handle, never through a symbolic link.
//!
//! Every directory on the way to a blob is opened with `openat` from its
//! parent's handle, with `O_NOFOLLOW | O_DIRECTORY`, starting from the
//! root's handle that the store holds open. A name resolves exactly one
//! component, so the kernel checks it as it opens it: there is no gap
//! between a check and a use for a link to be swapped into, and no path is
//! looked up again from `/` for every step (a walk by path cost one `statx`
//! of a whole path per segment, then the same lookups again to open,
//! create or rename). Files are created, opened, renamed and unlinked
//! relative to their directory's handle the same way.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How every directory below the root is opened: readable (a handle that
/// `fsync` and `getdents` take), never through a link.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The mode new directories are made with (the process's umask applies).
const DIR_MODE: u32 = 0o777;

/// The mode new files are made with (the process's umask applies), as
/// `std::fs::File::create` does.
const FILE_MODE: u32 = 0o666;

/// What a name in a directory turned out to be when opened as one.
#[derive(Debug)]
pub(super) enum Entry {
    /// A directory, now open.
    Dir(OwnedFd),
    /// Nothing by that name.
    Missing,
    /// A symbolic link (never followed).
    Link,
    /// Something else: a file, a socket…
    Other,
}

/// Opens the directory `name` in `parent` without following a link.
pub(super) fn open_dir(parent: BorrowedFd<'_>, name: &str) -> io::Result<Entry> {
    match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Entry::Dir(fd)),
        Err(Errno::NOENT) => Ok(Entry::Missing),
        // `O_NOFOLLOW | O_DIRECTORY` refuses a link with ENOTDIR, as it
        // does a file: only a look at the name tells them apart.
        Err(Errno::NOTDIR | Errno::LOOP) => Ok(match kind_at(parent, name)? {
            None => Entry::Missing,
            Some(FileType::Symlink) => Entry::Link,
            Some(_) => Entry::Other,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Makes the directory `name` in `parent`; one that already exists is fine.
pub(super) fn make_dir(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A second handle on `dir` (for a key directly under the root).
pub(super) fn duplicate(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(dir, 0)?)
}

/// Creates the file `name` in `dir` for writing; it must not exist yet
/// (so a link by that name is never followed either).
pub(super) fn create_new(dir: BorrowedFd<'_>, name: &str) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(FILE_MODE))?;
    Ok(fd.into())
}

/// What opening an existing file for reading found.
#[derive(Debug)]
pub(super) enum Opened {
    /// A regular file, open for reading, with its metadata.
    File(std::fs::File, Meta),
    /// Nothing by that name, or something that is not a file.
    Missing,
    /// A symbolic link (never followed).
    Link,
}

/// Opens the regular file `name` in `dir` for reading, refusing a link.
pub(super) fn open_file(dir: BorrowedFd<'_>, name: &str) -> io::Result<Opened> {
    // O_NONBLOCK: opening a FIFO planted by that name must not wait for a
    // writer (it has no effect on the reads of a regular file).
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => {
            let stat = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                return Ok(Opened::Missing);
            }
            Ok(Opened::File(fd.into(), Meta::of(&stat)))
        }
        Err(Errno::LOOP) => Ok(Opened::Link),
        Err(Errno::NOENT) => Ok(Opened::Missing),
        Err(e) => Err(e.into()),
    }
}

/// The size and time of a file, as `stat` gives them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub(super) size: u64,
    pub(super) modified: DateTime<Utc>,
}

impl Meta {
    fn of(stat: &rustix::fs::Stat) -> Self {
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        let nanos = u32::try_from(stat.st_mtime_nsec as u64).unwrap_or(0);
        #[allow(clippy::useless_conversion)]
        let modified =
            DateTime::from_timestamp(i64::from(stat.st_mtime), nanos).unwrap_or_else(Utc::now);
        Self {
            size: u64::try_from(stat.st_size).unwrap_or(0),
            modified,
        }
    }
}

/// What is at `name` in `dir`, without following a link: its kind and,
/// for a regular file, its metadata.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<(FileType, Meta)>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some((
            FileType::from_raw_mode(stat.st_mode),
            Meta::of(&stat),
        ))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The kind of what is at `name` in `dir`, without following a link.
fn kind_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<FileType>> {
    Ok(stat_at(dir, name)?.map(|(kind, _)| kind))
}

/// Renames `from` over `to`, both in `dir`. Atomic; a link at `to` is
/// replaced, never written through.
pub(super) fn rename(dir: BorrowedFd<'_>, from: &str, to: &str) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Removes the file (or link) `name` from `dir`: `Ok(false)` when there was
/// none, or a directory is there (left alone).
pub(super) fn remove_file(dir: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT | Errno::ISDIR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes the directory `name` from `parent` if it is empty (and a
/// directory): whether it was removed.
pub(super) fn remove_empty_dir(parent: BorrowedFd<'_>, name: &str) -> bool {
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok()
}

/// Flushes `dir`'s entries (a rename or a new file in it) to the disk.
pub(super) fn sync(dir: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

/// The entries of a directory (but `.` and `..`): each one's name, when it
/// is UTF-8, and kind, looked up when the file system's listing does not
/// give it.
pub(super) fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(String, FileType)>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        let Ok(name) = name.to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => match kind_at(dir, name)? {
                Some(kind) => kind,
                None => continue,
            },
            kind => kind,
        };
        out.push((name.to_owned(), kind));
    }
    Ok(out)
}

/// Opens the (canonical) root directory by its path.
pub(super) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(
        rustix::fs::CWD,
        path,
        flags,
        Mode::empty(),
    )?)
}

/// Whether `path` still names the directory `dir` is open on (not moved,
/// deleted or replaced since), following links in `path` as its opener did.
pub(super) fn same_dir(dir: BorrowedFd<'_>, path: &Path) -> io::Result<bool> {
    let held = rustix::fs::fstat(dir)?;
    let named = rustix::fs::stat(path)?;
    Ok(
        FileType::from_raw_mode(named.st_mode) == FileType::Directory
            && held.st_dev == named.st_dev
            && held.st_ino == named.st_ino
            && held.st_nlink > 0,
    )
}
