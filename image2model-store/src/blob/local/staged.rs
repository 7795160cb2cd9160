//! Writing a put's staged file: with direct I/O where the file system takes
//! it, through the page cache otherwise.
//!
//! A blob is written once, read back at most a few times, and flushed with
//! `fsync` before it is published, so caching its pages buys little and
//! costs a copy into freshly allocated page-cache memory for every byte.
//! On virtual machines that copy is much of what ingest spends (each new
//! page of the guest is first faulted in by the host): in alternating runs
//! on the harness's VM, the server spent 8–50 % less CPU per 1 MB upload
//! with `O_DIRECT` (see `docs/BENCHMARKS.md`).
//!
//! Direct I/O needs the memory, the file offset and the length of every
//! write aligned to the disk's block. A put gathers its body into a
//! [`Batch`]: an aligned buffer of [`PUT_BATCH_BYTES`] that every batch but
//! the last fills completely, so every write but the last is whole blocks.
//! The last batch's whole blocks are written direct and its tail (under
//! [`DIRECT_ALIGN`] bytes) through the page cache, after turning `O_DIRECT`
//! off for the file. Any refusal of direct I/O (a file system without it,
//! an alignment it does not accept) turns the file to buffered writes at
//! the same offset, so nothing is lost or written twice.
//!
//! Buffered files get their writeback started after each batch instead
//! ([`start_writeback`]), so the final `fsync` has little left to wait for.
//!
//! Direct I/O is a performance-only path: `BLOB_DIRECT_IO=false`
//! ([`super::LocalOptions`]) writes every file buffered, to rule it out.
//! Changing it safely: keep every write but the last whole blocks from an
//! aligned buffer at an aligned offset, and keep the fallback to buffered
//! writes at the same offset; the tests below cover both.

use std::fs;
use std::io::{self, Write};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use image2model_core::ports::ByteStream;

/// The alignment of direct writes: memory, offset and length. 4 KiB covers
/// the logical block size of the disks and file systems in use (512 or
/// 4096 bytes).
pub(super) const DIRECT_ALIGN: usize = 4096;

/// Body bytes a put gathers before it hands them to one blocking write (the
/// one batch a put holds). A multiple of [`DIRECT_ALIGN`].
///
/// Each hand-off to the blocking pool costs a few thread wake-ups (the
/// blocking thread's, its sleep in the direct write, the task's), which at
/// 64 KiB per write were most of the CPU an upload used. At 512 KiB a 1 MB
/// photo is two hand-offs instead of four: one 512 KiB batch per put costs
/// the memory that two 256 KiB batches (one filling while the other was
/// written) did, with fewer context switches per upload
/// (`docs/BENCHMARKS.md`, item 4).
pub(super) const PUT_BATCH_BYTES: usize = 512 * 1024;

/// A body smaller than this (it fits in its first batch) is written
/// buffered: for a few kilobytes, switching the file's mode costs more
/// than it saves.
pub(super) const DIRECT_MIN_BYTES: usize = 64 * 1024;

/// `EINVAL`: what a write refused for its alignment fails with.
const EINVAL: i32 = rustix::io::Errno::INVAL.raw_os_error();

/// A put's buffer: up to [`PUT_BATCH_BYTES`] of the body, starting at an
/// address aligned to [`DIRECT_ALIGN`]. Allocated on its first chunk, then
/// handed back and forth between its put's future (filling) and its
/// blocking steps (writing).
pub(super) struct Batch {
    buf: Vec<u8>,
    /// Where the aligned area starts in `buf`.
    start: usize,
    /// Bytes filled.
    len: usize,
    /// The part of the body's last chunk that did not fit.
    pending: Option<Bytes>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// An empty batch (the memory is allocated on the first fill).
    pub(super) fn new() -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            len: 0,
            pending: None,
        }
    }

    /// Reads `body` into the batch until the batch is full or the body
    /// ends, and says whether it ended (then the batch is the last one).
    ///
    /// # Errors
    /// The body's error.
    pub(super) async fn fill(&mut self, body: &mut ByteStream) -> io::Result<bool> {
        while !self.is_full() {
            let mut chunk = match self.pending.take() {
                Some(chunk) => chunk,
                None => match body.next().await {
                    Some(chunk) => chunk?,
                    None => return Ok(true),
                },
            };
            self.copy_from(&mut chunk);
            if !chunk.is_empty() {
                self.pending = Some(chunk);
            }
        }
        Ok(false)
    }

    /// Copies as much of `chunk` as fits, and advances `chunk` past it.
    fn copy_from(&mut self, chunk: &mut Bytes) {
        if self.buf.capacity() == 0 {
            // Room for the batch after any alignment padding. Only what is
            // filled is ever written to, so a small body touches a page or
            // two of it, not the whole buffer.
            self.buf = Vec::with_capacity(PUT_BATCH_BYTES + DIRECT_ALIGN);
            // `usize::MAX` where no offset aligns it (then never direct).
            self.start = self.buf.as_ptr().align_offset(DIRECT_ALIGN);
            if self.start >= DIRECT_ALIGN {
                self.start = 0;
            }
            self.buf.resize(self.start, 0);
        }
        let n = chunk.len().min(PUT_BATCH_BYTES - self.len);
        // Within the capacity: the buffer never moves.
        self.buf.extend_from_slice(&chunk[..n]);
        self.len += n;
        chunk.advance(n);
    }

    /// Holds [`PUT_BATCH_BYTES`].
    fn is_full(&self) -> bool {
        self.len == PUT_BATCH_BYTES
    }

    /// Bytes filled.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bytes filled.
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// Empties the batch (keeping its memory).
    fn clear(&mut self) {
        self.buf.truncate(self.start);
        self.len = 0;
    }

    /// Whether the bytes start on an aligned address.
    fn aligned(&self) -> bool {
        self.buf.capacity() > 0
            && (self.buf.as_ptr().wrapping_add(self.start) as usize).is_multiple_of(DIRECT_ALIGN)
    }
}

/// A staged file being written, batch after batch, in order.
#[derive(Debug)]
pub(super) struct StagedFile {
    file: fs::File,
    /// Bytes written so far.
    written: u64,
    /// `O_DIRECT` is on for the file.
    direct: bool,
}

impl StagedFile {
    /// Wraps a file just created (at offset 0), whose first batch is
    /// `first` (`whole`: that batch is the whole body). Direct I/O is tried
    /// when `direct` allows it, unless the body is smaller than
    /// [`DIRECT_MIN_BYTES`].
    pub(super) fn new(file: fs::File, first: &Batch, whole: bool, direct: bool) -> Self {
        let mut staged = Self {
            file,
            written: 0,
            direct: false,
        };
        if direct && first.aligned() && (first.len() >= DIRECT_MIN_BYTES || !whole) {
            staged.direct = set_direct(&staged.file, true).is_ok();
        }
        staged
    }

    /// Whether writes go around the page cache.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes the batch and empties it; with `last`, the file then holds
    /// the whole body (not yet synced).
    pub(super) fn write_batch(&mut self, batch: &mut Batch, last: bool) -> io::Result<()> {
        let bytes = batch.bytes();
        if bytes.is_empty() {
            // A body that ended on a batch boundary: nothing more to write.
            return Ok(());
        }
        if self.direct && batch.aligned() {
            let whole = bytes.len() - bytes.len() % DIRECT_ALIGN;
            self.write_aligned(&bytes[..whole])?;
            if whole < bytes.len() {
                // A tail that is not a whole block ends direct writing (it
                // only comes last: every earlier batch is full).
                self.buffered()?;
                self.file.write_all(&bytes[whole..])?;
            }
        } else {
            self.buffered()?;
            self.file.write_all(bytes)?;
            if !last {
                start_writeback(&self.file, self.written, bytes.len() as u64);
            }
        }
        self.written += bytes.len() as u64;
        batch.clear();
        Ok(())
    }

    /// The file, whole, for syncing and publishing.
    pub(super) fn into_file(self) -> fs::File {
        self.file
    }

    /// Writes whole aligned blocks. When direct I/O is refused (a refused
    /// write writes nothing), the file turns buffered and the rest of the
    /// blocks follow at the same offset.
    fn write_aligned(&mut self, blocks: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < blocks.len() {
            match self.file.write(&blocks[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // A short direct write leaves the offset unaligned: the next
                // write is refused and continues buffered.
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.direct && e.raw_os_error() == Some(EINVAL) => self.buffered()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Turns `O_DIRECT` off for the rest of the file.
    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
        }
        Ok(())
    }
}

/// Sets or clears `O_DIRECT` on an open file; fails where the file system
/// does not support it (and off Linux, always, for `on`).
fn set_direct(file: &fs::File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::OFlags;
        let flags = rustix::fs::fcntl_getfl(file)?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(file, flags)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        if on {
            Err(io::ErrorKind::Unsupported.into())
        } else {
            Ok(())
        }
    }
}

/// Starts writing `len` bytes at `offset` of `file` out to the disk without
/// waiting for them (write-behind), so that the put's final `fsync` has
/// little left to wait for: with a body arriving batch by batch, the disk
/// works while the rest comes in. On Linux, `POSIX_FADV_DONTNEED` on dirty
/// pages starts their writeback (and they stay cached while it runs);
/// elsewhere this does nothing. Advice only: a failure changes nothing.
fn start_writeback(file: &fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset of a 4 KiB block and across blocks.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 4093) as u8)
            .collect()
    }

    /// Whether the file system under `dir` takes `O_DIRECT`.
    fn direct_supported(dir: &std::path::Path) -> bool {
        let file = fs::File::create(dir.join("probe")).expect("probe file");
        set_direct(&file, true).is_ok()
    }

    /// Writes `body`, split into `chunk`-byte pieces, as a put does: batch
    /// by batch into `file`, one batch filled and written in turn.
    async fn write_as_a_put(file: fs::File, body: &[u8], chunk: usize) -> StagedFile {
        let chunks: Vec<io::Result<Bytes>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut stream: ByteStream = futures::stream::iter(chunks).boxed();
        let mut batch = Batch::new();
        let mut file = Some(file);
        let mut staged = None;
        loop {
            let last = batch.fill(&mut stream).await.expect("body");
            let s = staged.get_or_insert_with(|| {
                StagedFile::new(file.take().expect("the first batch"), &batch, last, true)
            });
            s.write_batch(&mut batch, last).expect("write");
            if last {
                return staged.expect("written");
            }
        }
    }

    #[tokio::test]
    async fn every_byte_lands_in_order_whatever_the_sizes_and_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let direct = direct_supported(dir.path());
        if !direct {
            eprintln!("note: no O_DIRECT on this file system; checking buffered writes only");
        }
        let sizes = [
            DIRECT_MIN_BYTES,
            DIRECT_MIN_BYTES + 1,
            PUT_BATCH_BYTES - 1,
            PUT_BATCH_BYTES,
            PUT_BATCH_BYTES + DIRECT_ALIGN - 1,
            1_000_000,
            3 * PUT_BATCH_BYTES + 17,
        ];
        for (n, size) in sizes.into_iter().enumerate() {
            for chunk in [size, 8191, 100_003, 300_000] {
                let body = pattern(size);
                let path = dir.path().join(format!("f{n}-{chunk}"));
                let file = fs::File::create_new(&path).expect("create");
                let staged = write_as_a_put(file, &body, chunk).await;
                // Direct I/O stays on for bodies ending on a block boundary.
                if direct && size % DIRECT_ALIGN == 0 {
                    assert!(staged.is_direct(), "{size} bytes in {chunk}-byte chunks");
                }
                staged.into_file().sync_all().expect("sync");
                assert_eq!(
                    fs::read(&path).expect("read"),
                    body,
                    "{size} bytes in {chunk}-byte chunks"
                );
            }
        }
    }

    #[tokio::test]
    async fn small_bodies_are_written_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = pattern(DIRECT_MIN_BYTES - 1);
        let path = dir.path().join("small");
        let file = fs::File::create_new(&path).expect("create");
        let staged = write_as_a_put(file, &body, 1000).await;
        assert!(!staged.is_direct());
        drop(staged.into_file());
        assert_eq!(fs::read(&path).expect("read"), body);
    }

    #[tokio::test]
    async fn a_refused_direct_write_continues_buffered_at_the_same_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        if !direct_supported(dir.path()) {
            eprintln!("skipped: no O_DIRECT on this file system, so nothing refuses it");
            return;
        }
        // One byte already in the file: every direct write from offset 1 is
        // unaligned and refused by the kernel.
        let path = dir.path().join("unaligned");
        let mut file = fs::File::create_new(&path).expect("create");
        file.write_all(b"X").expect("first byte");
        let body = pattern(2 * PUT_BATCH_BYTES + 5);
        let staged = write_as_a_put(file, &body, 65_536).await;
        assert!(!staged.is_direct(), "the refusal turned the file buffered");
        drop(staged.into_file());
        let mut want = b"X".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(fs::read(&path).expect("read"), want);
    }
}
