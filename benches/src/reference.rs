//! The references every figure is divided by, measured in the same run on
//! the same machine: a bare hyper "hello" server (for request rates,
//! latencies and memory) and `dd` (for write speed), and the state of the
//! file system the blobs go to.

use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Result;

/// Serves `hello` to every request on `listener`, forever: the least work an
/// HTTP/1.1 server on tokio and hyper can do per request. Run in a process of
/// its own (`load hello-server`) so that, like the real server, it has its
/// own runtime and its memory is its own.
///
/// # Errors
/// When accepting fails.
pub async fn hello_server(listener: TcpListener) -> Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What `dd` measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct DdResult {
    /// Bytes written.
    pub bytes: u64,
    /// Wall time, `fsync` included.
    pub elapsed: Duration,
}

impl DdResult {
    /// Adds another run's bytes and time to this one's.
    pub fn merge(&mut self, other: DdResult) {
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }

    /// MB/s (10^6 bytes per second).
    #[must_use]
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// `dd if=/dev/zero of=DIR/dd.bin bs=1M count=MIB conv=fsync`: sequential
/// write speed of the file system the server stores blobs on, flushed to
/// disk as the local blob store flushes each blob. The file is removed.
///
/// # Errors
/// When `dd` is missing or fails.
pub fn dd_write_once(dir: &Path, mib: u64) -> Result<DdResult> {
    let file = dir.join("dd.bin");
    let start = Instant::now();
    let out = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("count={mib}"),
            "conv=fsync",
            "status=none",
        ])
        .output()
        .map_err(|e| format!("running dd: {e}"))?;
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        return Err(format!("dd failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(DdResult {
        bytes: mib * 1024 * 1024,
        elapsed,
    })
}

/// The mean time to make a new directory and an empty file in it, `count`
/// times in a folder of `dir` (left for the caller to remove with `dir`):
/// the inode allocations each upload makes. It shows the file system's
/// state, which moves the ingest figures: ext4 without a journal (this
/// machine's) does not reuse an inode freed in the last five minutes and
/// scans past each one, so just after many files were deleted (a previous
/// run's data, say) every new file costs several times more.
///
/// # Errors
/// File system errors.
pub fn file_creation(dir: &Path, count: u32) -> Result<Duration> {
    let root = dir.join("creation-probe");
    std::fs::create_dir_all(&root)?;
    let start = Instant::now();
    for n in 0..count {
        let folder = root.join(format!("d{n}"));
        std::fs::create_dir(&folder)?;
        std::fs::File::create_new(folder.join("f"))?;
    }
    Ok(start.elapsed() / count.max(1))
}

/// The file system work of storing `count` uploads of `size` bytes the way
/// the local blob store does, from `threads` threads and without HTTP,
/// multipart or a database: per upload, a new directory, a staged file
/// written in 64 KiB pieces, `fsync`, `rename`, and an `fsync` of the
/// directory. It separates what the durable one-file-per-upload layout
/// costs from what the server adds on top. The files are removed after.
///
/// # Errors
/// File system errors.
pub fn durable_files_write(
    dir: &Path,
    size: usize,
    count: u64,
    threads: usize,
) -> Result<DdResult> {
    use std::io::Write;
    let root = dir.join("durable-files");
    std::fs::create_dir_all(&root)?;
    let body = vec![0x5au8; size];
    let next = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> std::io::Result<()> {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= count {
                            return Ok(());
                        }
                        let folder = root.join(format!("job{n}"));
                        std::fs::create_dir(&folder)?;
                        let staged = folder.join(".item.png.tmp");
                        let mut file = std::fs::File::create_new(&staged)?;
                        for piece in body.chunks(64 * 1024) {
                            file.write_all(piece)?;
                        }
                        file.sync_all()?;
                        drop(file);
                        std::fs::rename(&staged, folder.join("item.png"))?;
                        std::fs::File::open(&folder)?.sync_all()?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "a writer thread panicked")??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&root);
    Ok(DdResult {
        bytes: size as u64 * count,
        elapsed,
    })
}
