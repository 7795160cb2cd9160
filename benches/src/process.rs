//! Child processes under test: the real `image2model` server and the
//! reference hello server, each on its own loopback port, stopped with
//! SIGTERM when done (SIGKILL if they linger, and on drop).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};

use crate::Result;
use crate::client::wait_for_ok;

/// A free port on 127.0.0.1 (bound then released; the child binds it next).
///
/// # Errors
/// When no port can be bound.
pub fn free_loopback_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running child process that serves HTTP on `addr`.
#[derive(Debug)]
pub struct Served {
    /// What it is, for messages.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    log: Option<PathBuf>,
}

impl Served {
    /// Starts `cmd` (already told to listen on `addr`), with its output going
    /// to `log` (or nowhere), and waits until `GET ready_path` answers 200.
    ///
    /// # Errors
    /// When it cannot start or never gets ready (the log's end is included).
    pub async fn start(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        ready_path: &str,
        log: Option<&Path>,
    ) -> Result<Self> {
        let out = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        let mut served = Self {
            name: name.to_owned(),
            addr,
            child,
            log: log.map(Path::to_path_buf),
        };
        if let Err(e) = wait_for_ok(addr, ready_path, Duration::from_secs(30)).await {
            let tail = served.log_tail();
            let _ = served.child.kill().await;
            return Err(format!("{name} did not get ready: {e}\n{tail}").into());
        }
        Ok(served)
    }

    /// The process id (for RSS readings).
    ///
    /// # Panics
    /// When the child has already been reaped.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child is running")
    }

    /// The last lines of its log, for error messages.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!(
            "--- {} (last lines) ---\n{}",
            path.display(),
            lines[from..].join("\n")
        )
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it with SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| Pid::from_raw(p as i32)) {
            let _ = kill_process(pid, Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
