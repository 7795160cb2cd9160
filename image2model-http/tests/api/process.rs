//! The real `image2model` binary as a child process, for what only a process
//! can show: a kill -9, a global metrics recorder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::USER_KEY;

/// A running server; killed when dropped, so a failing test leaves nothing.
pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `image2model serve` on `port` with SQLite and local files under
/// `data`, the test user key, generous rate limits, and `env` on top; waits
/// until `/health` answers.
pub async fn start(port: u16, data: &Path, env: &[(&str, String)]) -> ServerProcess {
    start_role(port, data, env, "all").await
}

/// As [`start`], running `role` (`all`, `api` or `worker`).
pub async fn start_role(
    port: u16,
    data: &Path,
    env: &[(&str, String)],
    role: &str,
) -> ServerProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image2model"));
    cmd.args([
        "serve",
        "--role",
        role,
        "--bind",
        &format!("127.0.0.1:{port}"),
    ])
    .current_dir(data)
    .env("API_KEY", USER_KEY)
    .env(
        "DATABASE_URL",
        format!("sqlite://{}", data.join("jobs.db").display()),
    )
    .env(
        "STORAGE_URL",
        format!("file://{}", data.join("blobs").display()),
    )
    .env("RUST_LOG", "warn")
    // Tests poll job states often: generous limits, as `spawn_app` has.
    .env("RATE_LIMIT_PER_HOUR", "100000")
    .env("RATE_LIMIT_UPLOAD_PER_MINUTE", "1000")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = ServerProcess {
        child: cmd.spawn().expect("the image2model binary starts"),
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{}/health", server.base)).send().await
            && r.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become healthy");
}

/// A Postgres URL of a new, empty schema of the calling test's own, or
/// `None` (with a line saying `what` was skipped) without
/// `TEST_DATABASE_URL`.
pub async fn fresh_postgres_schema(what: &str) -> Option<String> {
    use std::io::Write;
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "{what} skipped: set TEST_DATABASE_URL to run it"
        );
        return None;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("TEST_DATABASE_URL is set but the server does not answer");
    let schema = format!("i2m_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

/// How many rows `table` has in the job database at `url` (SQLite or
/// Postgres).
pub async fn count_rows(url: &str, table: &str) -> i64 {
    use sqlx::Connection;
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

/// Every file (hidden ones included) under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `GET url` with the user key, its JSON body (panics on any failure).
pub async fn get_user_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth(crate::helpers::USER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls a job with the user key until it ends (for at most 60 s, a failed
/// read counting as not yet); its last state.
pub async fn wait_job_end(client: &reqwest::Client, base: &str, job_id: &str) -> serde_json::Value {
    wait_for(60, &format!("job {job_id} ends"), || {
        let url = format!("{base}/api/v1/jobs/{job_id}");
        async move {
            let job: serde_json::Value = client
                .get(url)
                .bearer_auth(crate::helpers::USER_KEY)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "partial" | "cancelled")
            )
            .then_some(job)
        }
    })
    .await
}

/// Polls `check` every 50 ms until it gives `Some`, for at most `secs`;
/// panics with `what` after that.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
