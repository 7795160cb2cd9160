//! Fault drill: the real binary killed with SIGKILL while a client is half
//! way through a multi-file upload, on SQLite and on Postgres. After the
//! restart no job half exists, the orphan cleanup removes what the dead
//! upload stored (its first file and the staged part of the second), and
//! the client's retry with the same `Idempotency-Key` makes one job, which
//! succeeds.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::{ADMIN_KEY, USER_KEY, big_png, png};
use crate::process::{
    ServerProcess, count_rows, files_under, free_port, fresh_postgres_schema, get_user_json, start,
    wait_for, wait_job_end,
};

const BOUNDARY: &str = "drill-boundary-7d1c";

/// A multipart body of `files`.
fn multipart(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn server_env(database_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("ADMIN_API_KEY", ADMIN_KEY.to_owned()),
        ("MAX_FILES", "3".to_owned()),
        ("MAX_FILE_BYTES", "3000000".to_owned()),
    ]
}

fn is_staged(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"))
}

/// Sets every file under `dir` back `hours`, as if that much time passed.
fn age_all(dir: &Path, hours: u64) {
    let then = std::time::SystemTime::now() - Duration::from_secs(hours * 3600);
    for p in files_under(dir) {
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(then).unwrap();
    }
}

async fn cleanup(client: &reqwest::Client, base: &str) -> Value {
    let resp = client
        .post(format!("{base}/api/v1/admin/cleanup"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({ "older_than_hours": 1, "dry_run": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn drill(database_url: String) {
    let data = tempfile::tempdir().unwrap();
    let blobs = data.path().join("blobs");
    let port = free_port();
    let env = server_env(&database_url);
    let client = reqwest::Client::new();

    let mut server: ServerProcess = start(port, data.path(), &env).await;
    let base = server.base.clone();

    // The whole upload is three files; the client sends the first, then
    // 1.2 MB of the second (more than one write batch, so it is staged on
    // disk), then stalls.
    let first = png(24, 16);
    let second = big_png(2_000_000);
    let third = png(16, 24);
    let files: [(&str, &[u8]); 3] = [("a.png", &first), ("b.png", &second), ("c.png", &third)];
    let body = multipart(&files);
    let head = format!(
        "POST /api/v1/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {USER_KEY}\r\nIdempotency-Key: drill-retry-1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let sent = body
        .windows(b"b.png".len())
        .position(|w| w == b"b.png")
        .unwrap()
        + 1_200_000;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..sent]).await.unwrap();
    socket.flush().await.unwrap();

    // Wait until the first file is stored and the second is being staged.
    let left = wait_for(20, "the first file stored and the second staged", || {
        let files = files_under(&blobs);
        let stored = files.iter().filter(|p| !is_staged(p)).count();
        let staged = files.iter().filter(|p| is_staged(p)).count();
        async move { (stored == 1 && staged == 1).then_some(files) }
    })
    .await;

    // kill -9 with the body half sent.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    drop(socket);
    assert_eq!(files_under(&blobs), left, "a SIGKILL cleans nothing up");

    let _server = start(port, data.path(), &env).await;
    // No job half exists: none listed, no row at all.
    let list = get_user_json(&client, &format!("{base}/api/v1/jobs")).await;
    assert_eq!(list["jobs"], json!([]), "{list}");
    assert_eq!(count_rows(&database_url, "jobs").await, 0);
    assert_eq!(count_rows(&database_url, "items").await, 0);

    // The orphan cleanup leaves files younger than an hour alone (an upload
    // in flight looks the same)...
    let report = cleanup(&client, &base).await;
    assert_eq!(report["orphan_files"]["objects"], 0, "{report}");
    assert_eq!(files_under(&blobs), left);
    // ...and removes both once they are older: the stored first file and
    // the staged second one.
    age_all(&blobs, 2);
    let report = cleanup(&client, &base).await;
    assert_eq!(report["orphan_files"]["objects"], 2, "{report}");
    let after = files_under(&blobs);
    assert!(after.is_empty(), "left after the cleanup: {after:?}");

    // The client retries the same upload with the same key: one job.
    let retry = || async {
        client
            .post(format!("{base}/api/v1/upload"))
            .bearer_auth(USER_KEY)
            .header("Idempotency-Key", "drill-retry-1")
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap()
    };
    let resp = retry().await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let job: Value = resp.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let again: Value = retry().await.json().await.unwrap();
    assert_eq!(
        again["job_id"],
        job_id.as_str(),
        "the same key, the same job"
    );

    let done = wait_job_end(&client, &base, &job_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["items"].as_array().unwrap().len(), 3);
    assert_eq!(count_rows(&database_url, "jobs").await, 1);
    assert_eq!(count_rows(&database_url, "items").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_on_sqlite_leaves_no_job_and_a_retry_makes_one() {
    let data = tempfile::tempdir().unwrap();
    // The database lives outside the server's data dir, so the test can
    // read it after the kill.
    let url = format!("sqlite://{}", data.path().join("jobs.db").display());
    drill(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_on_postgres_leaves_no_job_and_a_retry_makes_one() {
    let Some(url) = fresh_postgres_schema("the Postgres mid-upload kill drill").await else {
        return;
    };
    drill(url).await;
}
