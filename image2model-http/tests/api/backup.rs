//! `image2model backup` and `image2model restore`, with the real binary: the
//! drill (jobs made, a backup taken while uploads keep arriving, the stores
//! wiped, the backup restored, every job listed and every model
//! byte-identical) on SQLite + local files and on Postgres + S3; the
//! refusals of a damaged, changed or mismatched backup, which change
//! nothing; and a binary meeting a schema newer than it knows.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image2model_core::domain::BlobPrefix;
use image2model_core::ports::BlobStore;
use image2model_store::{ObjectBlobStore, S3Config};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{USER_KEY, png};
use crate::process::{ServerProcess, free_port, start, wait_job_end};

/// Jobs made (and finished) before the backup.
const JOBS: usize = 4;

/// The environment of one deployment: what `serve`, `backup` and `restore`
/// all read.
struct Stack {
    data: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Stack {
    /// SQLite and local files under a temporary directory.
    fn sqlite() -> Self {
        let data = tempfile::tempdir().unwrap();
        let env = vec![
            (
                "DATABASE_URL",
                format!("sqlite://{}", data.path().join("jobs.db").display()),
            ),
            (
                "STORAGE_URL",
                format!("file://{}", data.path().join("blobs").display()),
            ),
        ];
        Self::with(data, env)
    }

    fn with(data: tempfile::TempDir, mut env: Vec<(&'static str, String)>) -> Self {
        env.push(("RATE_LIMIT_UPLOAD_PER_MINUTE", "100000".into()));
        env.push(("RATE_LIMIT_PER_HOUR", "1000000".into()));
        // Items the snapshot caught running are taken again once their
        // lease lapses: short leases keep the drill short.
        env.push(("WORKER_LEASE_SECONDS", "2".into()));
        Self { data, env }
    }

    async fn serve(&self) -> ServerProcess {
        start(free_port(), self.data.path(), &self.env).await
    }

    /// Runs `image2model ARGS` with this stack's environment.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_image2model"));
        cmd.args(args)
            .current_dir(self.data.path())
            .env("API_KEY", USER_KEY)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
            .await
            .unwrap()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn upload(client: &reqwest::Client, base: &str, image: Vec<u8>) -> reqwest::Response {
    let form = Form::new().part("files", Part::bytes(image).file_name("photo.png"));
    client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .multipart(form)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("upload request")
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let resp = client.get(url).bearer_auth(USER_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json().await.unwrap()
}

/// Every item's model bytes, by model URL.
async fn models(client: &reqwest::Client, base: &str, job: &Value) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for item in job["items"].as_array().unwrap() {
        let url = item["model_url"].as_str().expect("model_url");
        let resp = client
            .get(format!("{base}{url}"))
            .bearer_auth(USER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "download {url}");
        out.insert(url.to_owned(), resp.bytes().await.unwrap().to_vec());
    }
    out
}

/// Every job id the API lists.
async fn listed_jobs(client: &reqwest::Client, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=100&cursor={c}"),
            None => "?limit=100".to_owned(),
        };
        let page = get_json(client, &format!("{base}/api/v1/jobs{query}")).await;
        for job in page["jobs"].as_array().unwrap() {
            ids.push(job["job_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// The drill on `stack`: jobs made and finished, a backup taken while a
/// background task keeps uploading, the server stopped, `wipe` run, the
/// backup restored, the server started again: every job of the backup is
/// listed, ends, and every model from before downloads byte-identical.
async fn drill<F, Fut>(stack: &Stack, wipe: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let server = stack.serve().await;
    let base = server.base.clone();

    let mut before: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    for i in 0..JOBS {
        let resp = upload(&client, &base, png(16 + i as u32 * 4, 12)).await;
        assert_eq!(resp.status(), 202);
        let job: Value = resp.json().await.unwrap();
        let id = job["job_id"].as_str().unwrap().to_owned();
        let done = wait_job_end(&client, &base, &id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        before.insert(id, models(&client, &base, &done).await);
    }

    // Uploads keep arriving while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let uploader = tokio::spawn({
        let (stop, accepted, client, base) =
            (stop.clone(), accepted.clone(), client.clone(), base.clone());
        async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if upload(&client, &base, png(8 + n % 16, 8)).await.status() == 202 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    while accepted.load(Ordering::Relaxed) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let backup_dir = tempfile::tempdir().unwrap();
    let dir = backup_dir.path().join("b1");
    let at_start = accepted.load(Ordering::Relaxed);
    let jobs_made = t0.elapsed();
    let out = stack.cli(&["backup", dir.to_str().unwrap()]).await;
    let backup_took = t0.elapsed() - jobs_made;
    let during = accepted.load(Ordering::Relaxed) - at_start;
    stop.store(true, Ordering::Relaxed);
    uploader.await.unwrap();
    assert!(out.status.success(), "backup: {}", text(&out));
    assert!(
        during >= 1,
        "no upload was accepted while the backup ran ({})",
        text(&out)
    );
    drop(server);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let backed_up = usize::try_from(manifest["database"]["jobs"].as_u64().unwrap()).unwrap();
    assert!(backed_up >= JOBS + 2, "{manifest}");
    assert_eq!(
        manifest["blobs"]["missing"].as_array().unwrap().len(),
        0,
        "{manifest}"
    );

    wipe().await;

    let t1 = Instant::now();
    let out = stack.cli(&["restore", dir.to_str().unwrap()]).await;
    let restore_took = t1.elapsed();
    assert!(out.status.success(), "restore: {}", text(&out));
    eprintln!(
        "drill: jobs made in {jobs_made:?}; backup {backup_took:?} ({during} uploads accepted meanwhile; {} jobs, {} blobs, {} left out); restore {restore_took:?}",
        manifest["database"]["jobs"],
        manifest["blobs"]["objects"],
        manifest["blobs"]["skipped_newer"]
    );

    let server = stack.serve().await;
    let base = server.base.clone();
    let listed = listed_jobs(&client, &base).await;
    assert_eq!(
        listed.len(),
        backed_up,
        "every job the backup holds is listed, and no other"
    );
    for id in before.keys() {
        assert!(listed.contains(id), "{id} is listed after the restore");
    }
    for (id, models_before) in &before {
        let job = get_json(&client, &format!("{base}/api/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "succeeded");
        let after = models(&client, &base, &job).await;
        assert_eq!(
            &after, models_before,
            "{id}'s models are byte-identical after the restore"
        );
    }
    // The jobs that arrived under load: their uploads were backed up, so
    // whatever state the snapshot caught them in, they end well.
    for id in listed.iter().filter(|id| !before.contains_key(*id)) {
        let job = wait_job_end(&client, &base, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        models(&client, &base, &job).await;
    }
    eprintln!("drill: done in {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_local_files_are_backed_up_under_load_and_restored_byte_identical() {
    let stack = Stack::sqlite();
    let data = stack.data.path().to_owned();
    drill(&stack, || async move {
        for f in ["jobs.db", "jobs.db-wal", "jobs.db-shm"] {
            let _ = std::fs::remove_file(data.join(f));
        }
        std::fs::remove_dir_all(data.join("blobs")).unwrap();
        assert!(!data.join("jobs.db").exists());
    })
    .await;
}

/// A Postgres URL of a new database of this test's own, with an admin
/// connection URL to drop and create it; `None` without `TEST_DATABASE_URL`.
fn postgres_urls() -> Option<(String, String, String)> {
    let admin = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())?;
    let name = format!(
        "i2m_backup_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL parses");
    url.set_path(&format!("/{name}"));
    Some((admin, url.into(), name))
}

async fn pg_admin(admin: &str, sql: String) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("TEST_DATABASE_URL answers");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin statement");
    conn.close().await.ok();
}

fn s3_env() -> Option<(S3Config, Vec<(&'static str, String)>)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint = var("TEST_S3_ENDPOINT")?;
    let bucket = var("TEST_S3_BUCKET").unwrap_or_else(|| "image2model-test".into());
    let prefix = format!("backup-{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = S3Config {
        bucket: bucket.clone(),
        prefix: Some(prefix.clone()),
        region: var("TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        endpoint: Some(endpoint.clone()),
        access_key_id: Some(var("TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|| "test".into())),
        secret_access_key: Some(var("TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into())),
        session_token: None,
        max_retries: image2model_store::S3_DEFAULT_MAX_RETRIES,
        retry_timeout: image2model_store::S3_DEFAULT_RETRY_TIMEOUT,
    };
    let env = vec![
        ("STORAGE_URL", format!("s3://{bucket}/{prefix}")),
        ("AWS_ENDPOINT_URL_S3", endpoint),
        ("AWS_REGION", config.region.clone()),
        ("AWS_ACCESS_KEY_ID", config.access_key_id.clone().unwrap()),
        (
            "AWS_SECRET_ACCESS_KEY",
            config.secret_access_key.clone().unwrap(),
        ),
    ];
    Some((config, env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_s3_are_backed_up_under_load_and_restored_byte_identical() {
    let (Some((admin, url, name)), Some((s3, s3_env))) = (postgres_urls(), s3_env()) else {
        let _ = writeln!(
            std::io::stderr(),
            "postgres+S3 backup drill skipped: set TEST_DATABASE_URL and TEST_S3_ENDPOINT (eval \"$(.ci/s3-server)\") to run it"
        );
        return;
    };
    pg_admin(&admin, format!("CREATE DATABASE {name}")).await;
    let mut env = s3_env;
    env.push(("DATABASE_URL", url));
    let stack = Stack::with(tempfile::tempdir().unwrap(), env);
    let wipe = {
        let (admin, name) = (admin.clone(), name.clone());
        || async move {
            pg_admin(&admin, format!("DROP DATABASE {name} WITH (FORCE)")).await;
            pg_admin(&admin, format!("CREATE DATABASE {name}")).await;
            let store = ObjectBlobStore::s3(&s3).unwrap();
            for meta in store.list(&BlobPrefix::root()).await.unwrap() {
                store.delete(&meta.key).await.unwrap();
            }
            assert!(store.list(&BlobPrefix::root()).await.unwrap().is_empty());
        }
    };
    drill(&stack, wipe).await;
    pg_admin(&admin, format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

/// Every file under `dir`, relative, with its bytes.
fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_damaged_changed_or_newer_backup_and_changes_nothing() {
    // A backup of one finished job.
    let source = Stack::sqlite();
    let client = reqwest::Client::new();
    let server = source.serve().await;
    let job: Value = upload(&client, &server.base, png(20, 20))
        .await
        .json()
        .await
        .unwrap();
    let done = wait_job_end(&client, &server.base, job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded");
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b");
    let out = source.cli(&["backup", dir.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    let d = dir.to_str().unwrap();

    // A second backup into the same (non-empty) directory is refused.
    let out = source.cli(&["backup", d]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));

    // Restoring into the live, non-empty stores is refused without --force.
    let out = source.cli(&["restore", d]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("holds data"), "{}", text(&out));
    drop(server);

    // The target: empty stores, which must stay as they are.
    let target = Stack::sqlite();
    let blob = ["blobs", "models"]
        .iter()
        .collect::<PathBuf>()
        .join(done["job_id"].as_str().unwrap());
    let blob = std::fs::read_dir(dir.join(&blob))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let manifest_path = dir.join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let refuse = |what: &'static str, expect: &'static str| {
        let target = &target;
        async move {
            let before = snapshot_tree(target.data.path());
            let out = target.cli(&["restore", d]).await;
            assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
            assert!(
                text(&out).contains(expect),
                "{what}: expected {expect:?} in {}",
                text(&out)
            );
            assert_eq!(
                snapshot_tree(target.data.path()),
                before,
                "{what}: the target changed"
            );
        }
    };

    // A flipped byte in a blob.
    let original = std::fs::read(&blob).unwrap();
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x01;
    std::fs::write(&blob, &flipped).unwrap();
    refuse("flipped byte", "checksum differs").await;
    std::fs::write(&blob, &original).unwrap();

    // A deleted file.
    std::fs::remove_file(&blob).unwrap();
    refuse("deleted file", "listed in the manifest but missing").await;
    std::fs::write(&blob, &original).unwrap();

    // A file the manifest does not list.
    let extra = dir.join("blobs").join("models").join("extra.glb");
    std::fs::write(&extra, b"not from the backup").unwrap();
    refuse("extra file", "a file the manifest does not list").await;
    std::fs::remove_file(&extra).unwrap();

    // A manifest of an unknown format version.
    std::fs::write(
        &manifest_path,
        manifest.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    refuse("format version", "backup format version 99").await;

    // A backup of a newer schema than this binary knows.
    let mut newer: Value = serde_json::from_str(&manifest).unwrap();
    newer["database"]["schema_version"] = 9999.into();
    std::fs::write(&manifest_path, newer.to_string()).unwrap();
    refuse("newer schema", "schema is version 9999").await;

    // No manifest: a backup that stopped part-way.
    std::fs::remove_file(&manifest_path).unwrap();
    refuse("no manifest", "not a complete backup").await;
    std::fs::write(&manifest_path, &manifest).unwrap();

    // A SQLite backup into a Postgres configuration (refused before any
    // connection: nothing listens on port 1).
    let mismatched = Stack::with(
        tempfile::tempdir().unwrap(),
        vec![
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none".into()),
            (
                "STORAGE_URL",
                format!("file://{}", target.data.path().join("blobs").display()),
            ),
        ],
    );
    let before = snapshot_tree(target.data.path());
    let out = mismatched.cli(&["restore", d]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("holds a sqlite database but DATABASE_URL names a postgres one"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot_tree(target.data.path()), before);

    // Put back as it was, the same backup restores.
    let out = target.cli(&["restore", d]).await;
    assert!(out.status.success(), "{}", text(&out));
    let server = target.serve().await;
    let after = get_json(
        &client,
        &format!(
            "{}/api/v1/jobs/{}",
            server.base,
            done["job_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(
        models(&client, &server.base, &after)
            .await
            .into_values()
            .next()
            .unwrap(),
        original,
        "the model is the backup's"
    );
    drop(server);

    // --force restores over stores that hold data.
    let out = target.cli(&["restore", d]).await;
    assert!(text(&out).contains("holds data"), "{}", text(&out));
    let out = target.cli(&["restore", "--force", d]).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_refuses_to_start_on_a_schema_newer_than_it_knows() {
    let stack = Stack::sqlite();
    drop(stack.serve().await);
    {
        use sqlx::Connection;
        let db = stack.data.path().join("jobs.db");
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from a newer version', 1, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let port = free_port().to_string();
    let out = stack
        .cli(&["serve", "--bind", &format!("127.0.0.1:{port}")])
        .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("migration 9999 was previously applied but is missing"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_gone_before_it_is_copied_is_recorded_and_the_backup_still_restores() {
    let source = Stack::sqlite();
    let client = reqwest::Client::new();
    let server = source.serve().await;
    let mut done = Vec::new();
    for size in [20, 28] {
        let job: Value = upload(&client, &server.base, png(size, size))
            .await
            .json()
            .await
            .unwrap();
        let end = wait_job_end(&client, &server.base, job["job_id"].as_str().unwrap()).await;
        assert_eq!(end["status"], "succeeded");
        let bytes = models(&client, &server.base, &end).await;
        done.push((end, bytes));
    }
    drop(server);
    // The first job's model vanishes, as when the job is deleted between
    // the snapshot and the copy of its blobs.
    let gone_dir = source
        .data
        .path()
        .join("blobs/models")
        .join(done[0].0["job_id"].as_str().unwrap());
    let gone = std::fs::read_dir(&gone_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&gone).unwrap();

    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b");
    let out = source.cli(&["backup", dir.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("were deleted before"), "{}", text(&out));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let key = format!(
        "models/{}/{}",
        done[0].0["job_id"].as_str().unwrap(),
        gone.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(manifest["blobs"]["missing"], serde_json::json!([key]));

    let target = Stack::sqlite();
    let out = target.cli(&["restore", dir.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already gone"), "{}", text(&out));
    let server = target.serve().await;
    assert_eq!(listed_jobs(&client, &server.base).await.len(), 2);
    let url = done[0].0["items"][0]["model_url"].as_str().unwrap();
    let resp = client
        .get(format!("{}{url}", server.base))
        .bearer_auth(USER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the vanished model");
    let kept = get_json(
        &client,
        &format!(
            "{}/api/v1/jobs/{}",
            server.base,
            done[1].0["job_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(models(&client, &server.base, &kept).await, done[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_names_the_missing_pg_dump_and_restore_needs_force_over_data() {
    let Some((admin, url, name)) = postgres_urls() else {
        let _ = writeln!(
            std::io::stderr(),
            "postgres backup test skipped: set TEST_DATABASE_URL to run it"
        );
        return;
    };
    pg_admin(&admin, format!("CREATE DATABASE {name}")).await;
    let data = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", data.path().join("blobs").display());
    let stack = Stack::with(
        data,
        vec![("DATABASE_URL", url.clone()), ("STORAGE_URL", storage)],
    );
    let client = reqwest::Client::new();
    let server = stack.serve().await;
    let job: Value = upload(&client, &server.base, png(20, 16))
        .await
        .json()
        .await
        .unwrap();
    let done = wait_job_end(&client, &server.base, job["job_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded");
    let model = models(&client, &server.base, &done).await;
    drop(server);

    // No pg_dump on PATH: refused, naming the package, leaving the
    // directory empty so that the same command works once it is installed.
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("pg");
    let d = dir.to_str().unwrap();
    let without = Stack {
        data: tempfile::tempdir().unwrap(),
        env: [stack.env.clone(), vec![("PATH", "/nonexistent".into())]].concat(),
    };
    let out = without.cli(&["backup", d]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("pg_dump could not be run")
            && text(&out).contains("postgresql-client-"),
        "{}",
        text(&out)
    );
    let out = stack.cli(&["backup", d]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("database.pgdump").is_file());

    // The database still holds the job: refused without --force.
    let out = stack.cli(&["restore", d]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the job store holds data"),
        "{}",
        text(&out)
    );
    let out = stack.cli(&["restore", "--force", d]).await;
    assert!(out.status.success(), "{}", text(&out));

    let server = stack.serve().await;
    assert_eq!(listed_jobs(&client, &server.base).await.len(), 1);
    let job = get_json(
        &client,
        &format!(
            "{}/api/v1/jobs/{}",
            server.base,
            done["job_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(models(&client, &server.base, &job).await, model);
    drop(server);
    pg_admin(&admin, format!("DROP DATABASE {name} WITH (FORCE)")).await;
}
