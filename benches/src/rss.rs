//! Resident memory of another process, from `/proc/PID/status`.
//!
//! Peaks are taken two ways and the larger kept: a sampling thread (every
//! 5 ms) and the kernel's own high-water mark `VmHWM`, reset first through
//! `/proc/PID/clear_refs` where permitted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes in a MiB, for reports.
pub const MIB: f64 = 1024.0 * 1024.0;

/// One field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`…).
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The process's resident set size in bytes, `None` once it has exited.
#[must_use]
pub fn rss(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

/// Resets the kernel's peak-RSS mark of `pid` (`echo 5 > clear_refs`); false
/// when not permitted.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Watches a process's RSS until stopped and reports the peak.
#[derive(Debug)]
pub struct PeakRss {
    pid: u32,
    hwm_reset: bool,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PeakRss {
    /// Starts watching `pid`.
    #[must_use]
    pub fn start(pid: u32) -> Self {
        let hwm_reset = reset_peak(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss(pid).unwrap_or(0)));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(now) = rss(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Self {
            pid,
            hwm_reset,
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops watching; the peak RSS in bytes since [`PeakRss::start`].
    #[must_use]
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let sampled = self.peak.load(Ordering::Relaxed);
        let hwm = if self.hwm_reset {
            status_field(self.pid, "VmHWM").unwrap_or(0)
        } else {
            0
        };
        sampled.max(hwm)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_read() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        let peak = PeakRss::start(me);
        assert!(peak.finish() >= 1);
    }
}
