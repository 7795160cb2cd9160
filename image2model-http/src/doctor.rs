//! `image2model doctor`: is this deployment fit to run? Everything
//! `config check` checks, then what only a running system can tell: each
//! store, Redis and FAL answer (FAL with an authenticated no-op), the disk
//! has room and inodes, the data directories and the env file are not open
//! to other users, the trusted proxies make sense, and this machine's clock
//! agrees with the database's. Each finding says what to do.
//!
//! It changes nothing that holds data: no migration runs and no database
//! file is made; a local blob directory is made when missing (as `serve`
//! would) and gets a probe file, removed at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use image2model_core::ports::GenerateError;
use secrecy::ExposeSecret;

use crate::config::Config;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Works, but should be changed.
    Warning,
    /// Will fail, or is unsafe: `doctor` exits 1.
    Problem,
}

impl Severity {
    /// The word printed before the finding.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Problem => "problem",
        }
    }
}

/// One thing `doctor` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked: `config`, `generators`, `database`, `blob_store`,
    /// `redis`, `fal`, `disk`, `permissions`, `proxies`, `clock`.
    pub check: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// What to do about it (for warnings and problems).
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warning(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn problem(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Problem,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What `doctor` looks at besides the configuration.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The env file the configuration came from (its permissions are
    /// checked); `None` looks for `.env.production` and `.env` here.
    pub env_file: Option<PathBuf>,
    /// How long each remote check may take.
    pub timeout: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            env_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Runs every check (see the module docs).
pub async fn diagnose(config: &Config, options: &DoctorOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    check_config(config, &mut out);
    check_database(config, options.timeout, &mut out).await;
    check_blob_store(config, options.timeout, &mut out).await;
    check_redis(config, options.timeout, &mut out).await;
    check_fal(config, options.timeout, &mut out).await;
    out.push(disk_finding(&crate::wiring::disk_path(config)));
    check_permissions(config, options.env_file.as_deref(), &mut out);
    check_proxies(config, &mut out);
    out
}

fn check_config(config: &Config, out: &mut Vec<Finding>) {
    let problems = config.problems();
    if problems.is_empty() {
        out.push(Finding::ok(
            "config",
            format!(
                "the configuration is valid for {}",
                config.environment.as_str()
            ),
        ));
    }
    for p in problems {
        out.push(Finding::problem(
            "config",
            p,
            "change the variable in the env file; `image2model config check` shows the effective values",
        ));
    }
    match crate::wiring::generators(config) {
        Ok(_) => out.push(Finding::ok("generators", "the generators build")),
        Err(e) => out.push(Finding::problem(
            "generators",
            e.to_string(),
            "check GENERATOR and the FAL_* variables",
        )),
    }
}

async fn check_database(config: &Config, timeout: Duration, out: &mut Vec<Finding>) {
    use image2model_store::DatabaseProbe;
    match image2model_store::probe_database(config.database_url.expose_secret(), timeout).await {
        Ok(DatabaseProbe::Answers { server_time }) => {
            out.push(Finding::ok("database", "the job store answers"));
            if let Some(theirs) = server_time {
                out.push(clock_finding(chrono::Utc::now(), theirs));
            }
        }
        Ok(DatabaseProbe::NotCreatedYet(path)) => out.push(Finding::ok(
            "database",
            format!("{} does not exist yet: `serve` creates it", path.display()),
        )),
        Ok(DatabaseProbe::InMemory) => out.push(Finding::warning(
            "database",
            "the job store is in memory: every job is lost when the process ends",
            "set DATABASE_URL to sqlite://PATH or postgres://…",
        )),
        Err(e) => out.push(Finding::problem(
            "database",
            format!("the job store does not answer: {e}"),
            "check DATABASE_URL, that the database server runs and is reachable from here, and \
             that its user may log in",
        )),
    }
}

/// The clock finding: this machine's time `ours` against the database's
/// `theirs`; more than 5 s apart is a warning (download links and webhook
/// signatures carry times).
#[must_use]
pub fn clock_finding(
    ours: chrono::DateTime<chrono::Utc>,
    theirs: chrono::DateTime<chrono::Utc>,
) -> Finding {
    let skew = (ours - theirs).num_milliseconds().unsigned_abs();
    if skew > 5_000 {
        Finding::warning(
            "clock",
            format!(
                "this machine's clock is {:.1} s from the database's",
                skew as f64 / 1000.0
            ),
            "run NTP (systemd-timesyncd or chrony) on both machines: link expiries, webhook \
             signatures and retention use the clock",
        )
    } else {
        Finding::ok(
            "clock",
            format!("the clock agrees with the database's ({skew} ms)"),
        )
    }
}

async fn check_blob_store(config: &Config, timeout: Duration, out: &mut Vec<Finding>) {
    let fix = "check STORAGE_URL: the directory must exist (or be creatable) and be writable \
               by this user; for s3:// the bucket, endpoint and AWS_* credentials";
    let store = match image2model_store::open_blob_store(&config.storage_url).await {
        Ok(store) => store,
        Err(e) => {
            out.push(Finding::problem(
                "blob_store",
                format!("the blob store cannot be opened: {e}"),
                fix,
            ));
            return;
        }
    };
    match tokio::time::timeout(timeout, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            out.push(Finding::problem(
                "blob_store",
                format!("the blob store does not answer: {e}"),
                fix,
            ));
            return;
        }
        Err(_) => {
            out.push(Finding::problem(
                "blob_store",
                "the blob store did not answer in time",
                fix,
            ));
            return;
        }
    }
    if let Some(dir) = image2model_store::local_blob_dir(&config.storage_url) {
        let probe = dir.join(format!(".doctor-{}", ulid::Ulid::new()));
        match std::fs::write(&probe, b"doctor") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => {
                out.push(Finding::problem(
                    "blob_store",
                    format!("{} is not writable: {e}", dir.display()),
                    fix,
                ));
                return;
            }
        }
    }
    out.push(Finding::ok(
        "blob_store",
        format!("{} answers", store.describe()),
    ));
}

async fn check_redis(config: &Config, timeout: Duration, out: &mut Vec<Finding>) {
    let Some(url) = &config.redis_url else {
        return;
    };
    let shown = image2model_store::redact_url(url.expose_secret());
    let ping = async {
        let client = redis::Client::open(url.expose_secret())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) => out.push(Finding::ok("redis", format!("{shown} answers"))),
        Ok(Err(e)) => out.push(Finding::problem(
            "redis",
            format!("{shown} does not answer: {e}"),
            "check REDIS_URL (password included) and that Redis runs; without it each \
             instance keeps its own rate limits",
        )),
        Err(_) => out.push(Finding::problem(
            "redis",
            format!("{shown} did not answer in time"),
            "check REDIS_URL and the network between here and Redis",
        )),
    }
}

async fn check_fal(config: &Config, timeout: Duration, out: &mut Vec<Finding>) {
    let Ok((_, Some(fal))) = crate::wiring::generators_and_fal(config) else {
        return;
    };
    match tokio::time::timeout(timeout, fal.check_account()).await {
        Ok(Ok(())) => out.push(Finding::ok("fal", "fal answers and accepts the key")),
        Ok(Err(GenerateError::Account(m))) => out.push(Finding::problem(
            "fal",
            format!("fal refuses the key: {m}"),
            "check FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET) in fal's dashboard, and the \
             account's balance",
        )),
        Ok(Err(e)) => out.push(Finding::problem(
            "fal",
            format!("fal does not answer as expected: {e}"),
            "check the network to queue.fal.run (and FAL_QUEUE_BASE_URL if set)",
        )),
        Err(_) => out.push(Finding::problem(
            "fal",
            "fal did not answer in time",
            "check the network to queue.fal.run (and FAL_QUEUE_BASE_URL if set)",
        )),
    }
}

/// The disk finding for the disk holding `path`.
#[must_use]
pub fn disk_finding(path: &Path) -> Finding {
    let Ok(st) = rustix::fs::statvfs(path) else {
        return Finding::warning(
            "disk",
            format!("the disk of {} cannot be read", path.display()),
            "check that the data directory exists",
        );
    };
    disk_verdict(
        st.f_blocks * st.f_frsize,
        st.f_bavail * st.f_frsize,
        st.f_files,
        st.f_favail,
    )
}

/// The disk finding for these figures: a problem past 90 % used, under
/// 1 GiB free or under 5 % of inodes free; a warning past 80 % or under
/// 10 % of inodes.
#[must_use]
pub fn disk_verdict(total: u64, free: u64, inodes: u64, free_inodes: u64) -> Finding {
    let used = if total == 0 {
        0.0
    } else {
        1.0 - free as f64 / total as f64
    };
    let inodes_free = if inodes == 0 {
        1.0
    } else {
        free_inodes as f64 / inodes as f64
    };
    let what = format!(
        "{:.0} % used, {:.1} GiB free, {:.0} % of inodes free",
        used * 100.0,
        free as f64 / f64::from(1u32 << 30),
        inodes_free * 100.0
    );
    let fix = "free space (POST /api/v1/admin/cleanup, a shorter RETENTION_HOURS) or grow the \
               disk; uploads fail when it is full";
    if used > 0.9 || free < 1 << 30 || inodes_free < 0.05 {
        Finding::problem("disk", what, fix)
    } else if used > 0.8 || inodes_free < 0.10 {
        Finding::warning("disk", what, fix)
    } else {
        Finding::ok("disk", what)
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode())
}

#[cfg(not(unix))]
fn mode(_: &Path) -> Option<u32> {
    None
}

fn check_permissions(config: &Config, env_file: Option<&Path>, out: &mut Vec<Finding>) {
    let before = out.len();
    let env_files: Vec<PathBuf> = match env_file {
        Some(f) => vec![f.to_path_buf()],
        None => [".env.production", ".env"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
    };
    for file in env_files {
        if let Some(m) = mode(&file)
            && m & 0o077 != 0
        {
            out.push(Finding::problem(
                "permissions",
                format!(
                    "{} holds secrets and is readable by others (mode {:o})",
                    file.display(),
                    m & 0o777
                ),
                format!("chmod 600 {}", file.display()),
            ));
        }
    }
    let sqlite_dir =
        image2model_store::SqliteDatabase::path_from_url(config.database_url.expose_secret())
            .filter(|_| config.database_url.expose_secret().starts_with("sqlite:"))
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| !d.as_os_str().is_empty());
    let dirs = [
        image2model_store::local_blob_dir(&config.storage_url),
        sqlite_dir,
    ];
    for dir in dirs.into_iter().flatten() {
        if let Some(m) = mode(&dir)
            && m & 0o002 != 0
        {
            out.push(Finding::problem(
                "permissions",
                format!(
                    "{} is writable by every user (mode {:o})",
                    dir.display(),
                    m & 0o777
                ),
                format!(
                    "chmod o-w {} (and keep it owned by the service's user)",
                    dir.display()
                ),
            ));
        }
    }
    if out.len() == before {
        out.push(Finding::ok(
            "permissions",
            "the env file and the data directories are not open to other users",
        ));
    }
}

fn check_proxies(config: &Config, out: &mut Vec<Finding>) {
    if let Some(all) = config.trusted_proxies.iter().find(|n| n.prefix_len() == 0) {
        out.push(Finding::problem(
            "proxies",
            format!(
                "TRUSTED_PROXIES trusts every address ({all}): any client can forge X-Forwarded-For"
            ),
            "list only your proxy's addresses (cloudflared: 127.0.0.1, or its container network)",
        ));
        return;
    }
    let behind_proxy = config.public_base_url.is_some() || !config.allowed_hosts.is_empty();
    if behind_proxy && config.trusted_proxies.is_empty() {
        out.push(Finding::warning(
            "proxies",
            "requests come through a proxy or tunnel (PUBLIC_BASE_URL or ALLOWED_HOSTS is set) \
             but TRUSTED_PROXIES is empty: every client looks like the proxy, so they share one \
             rate limit and the audit trail shows the proxy's address",
            "set TRUSTED_PROXIES to the proxy's address (cloudflared on this machine: 127.0.0.1)",
        ));
        return;
    }
    out.push(Finding::ok("proxies", "the trusted proxies make sense"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_thresholds() {
        const G: u64 = 1 << 30;
        // (total, free, inodes, free inodes) and the verdict.
        let cases = [
            ((100 * G, 50 * G, 1000, 900), Severity::Ok),
            ((100 * G, 15 * G, 1000, 900), Severity::Warning),
            ((100 * G, 5 * G, 1000, 900), Severity::Problem),
            ((2 * G, G / 2, 1000, 900), Severity::Problem),
            ((100 * G, 50 * G, 1000, 80), Severity::Warning),
            ((100 * G, 50 * G, 1000, 10), Severity::Problem),
        ];
        for ((total, free, inodes, free_inodes), want) in cases {
            let got = disk_verdict(total, free, inodes, free_inodes).severity;
            assert_eq!(got, want, "{total} {free} {inodes} {free_inodes}");
        }
    }

    #[test]
    fn a_skewed_clock_is_a_warning() {
        let now = chrono::Utc::now();
        assert_eq!(clock_finding(now, now).severity, Severity::Ok);
        let off = now - chrono::Duration::seconds(30);
        let f = clock_finding(now, off);
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.message.contains("30.0 s"), "{}", f.message);
    }
}
