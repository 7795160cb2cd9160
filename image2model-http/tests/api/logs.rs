//! No key material in the logs: the real binary, in production mode (JSON
//! logs) at `RUST_LOG=trace`, through a full session — start-up, uploads,
//! downloads, auth failures with wrong keys, admin calls, shutdown — with
//! every line it writes captured and searched for every secret.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::png;

const SECRET_KEY: &str = "SrvLeakProbe_5e0f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d";
const API_KEY: &str = "UsrLeakProbe_c0ffee00112233445566778899aabbccddeeff00";
const ADMIN_API_KEY: &str = "AdmLeakProbe_facade00112233445566778899aabbccddeeff00";
const FAL_ID: &str = "FalIdLeakProbe_0a1b2c3d";
const FAL_SECRET: &str = "FalSecretLeakProbe_4e5f6a7b8c9d";
const WRONG_KEY: &str = "WrongLeakProbe_99887766554433221100ffeeddccbbaa";
const WRONG_ADMIN_GUESS: &str = "GuessLeakProbe_0011223344556677889900aabbccddee";

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The real binary in production mode (JSON logs) with `RUST_LOG` set to
/// `rust_log` (unset: the server's default), every line it writes kept in
/// the returned log; waits until it says where it listens.
async fn spawn_logged(
    dir: &std::path::Path,
    rust_log: Option<&str>,
    extra: &[(&str, &str)],
) -> (
    tokio::process::Child,
    Arc<Mutex<String>>,
    tokio::task::JoinHandle<()>,
    String,
) {
    let fal_key = format!("{FAL_ID}:{FAL_SECRET}");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_image2model"));
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ENVIRONMENT", "production")
        .env("SECRET_KEY", SECRET_KEY)
        .env("API_KEY", API_KEY)
        .env("ADMIN_API_KEY", ADMIN_API_KEY)
        .env("FAL_API_KEY", &fal_key)
        .env("GENERATOR", "relief")
        .env("ALLOWED_HOSTS", "127.0.0.1")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/db.sqlite", dir.display()),
        )
        .env("STORAGE_URL", format!("file://{}/blobs", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(level) = rust_log {
        command.env("RUST_LOG", level);
    }
    command.envs(extra.iter().copied());
    let mut child = command.spawn().expect("the binary starts");
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut err_lines = BufReader::new(stderr).lines();
            let mut out_lines = BufReader::new(stdout).lines();
            let (mut err_open, mut out_open) = (true, true);
            while err_open || out_open {
                let line = tokio::select! {
                    l = err_lines.next_line(), if err_open => l.unwrap_or(None).or_else(|| { err_open = false; None }),
                    l = out_lines.next_line(), if out_open => l.unwrap_or(None).or_else(|| { out_open = false; None }),
                };
                let Some(line) = line else { continue };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
        .await
        .expect("the server says where it listens")
        .expect("a listening line");
    (child, log, reader, addr)
}

/// Stops the server with SIGTERM and returns everything it logged.
async fn stop_logged(
    mut child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
) -> (std::process::ExitStatus, String) {
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await;
    assert!(killed.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    reader.await.unwrap();
    let log = log.lock().unwrap().clone();
    (status, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, reader, addr) = spawn_logged(dir.path(), Some("trace"), &[]).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let get = |path: &str, auth: Option<String>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let bearer = |k: &str| Some(format!("Bearer {k}"));

    // The session.
    assert_eq!(get("/health", None).await.unwrap().status(), 200);
    assert_eq!(
        get("/api/v1/upload", bearer(API_KEY))
            .await
            .unwrap()
            .status(),
        200
    );
    let form = Form::new().part("files", Part::bytes(png(8, 8)).file_name("chair.png"));
    let job: Value = client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().expect("a job").to_owned();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let job: Value = get(&format!("/api/v1/jobs/{job_id}"), bearer(API_KEY))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if job["status"] == "succeeded" || job["status"] == "failed" {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the job ends");
    let model_url = done["items"][0]["model_url"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&model_url, bearer(API_KEY)).await.unwrap().status(),
        200
    );
    // Auth failures with wrong keys, and keys in unusual places.
    for auth in [
        bearer(WRONG_KEY),
        bearer(&API_KEY[..20]),
        Some(format!(
            "Basic {}",
            base64(&format!("admin:{ADMIN_API_KEY}"))
        )),
        Some(format!("Bearer {WRONG_KEY} {API_KEY}")),
        Some(format!("Token {API_KEY}")),
    ] {
        assert_eq!(get("/api/v1/jobs", auth).await.unwrap().status(), 401);
    }
    assert_eq!(
        get(&format!("/api/v1/jobs?api_key={API_KEY}"), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get("/api/v1/admin/system-health", bearer(API_KEY))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get("/api/v1/admin/system-health", bearer(WRONG_ADMIN_GUESS))
            .await
            .unwrap()
            .status(),
        401
    );
    // Admin calls.
    assert_eq!(
        get("/api/v1/admin/system-health", bearer(ADMIN_API_KEY))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("/api/v1/admin/jobs", bearer(ADMIN_API_KEY))
            .await
            .unwrap()
            .status(),
        200
    );
    // Shutdown.
    let (status, log) = stop_logged(child, log, reader).await;
    assert!(status.success(), "exit {status}: {log}");
    for expected in [
        "\"listening\"",
        "\"configuration\"",
        "\"response\"",
        "\"stopped\"",
    ] {
        assert!(
            log.contains(expected),
            "the log lacks {expected}; was it captured?"
        );
    }
    assert!(log.lines().count() > 50, "trace-level logging was on");
    // What monitoring needs instead of keys: who (key id) and from where.
    for expected in [
        "\"key_id\":\"bootstrap-user\"",
        "\"key_id\":\"bootstrap-admin\"",
        "\"client_ip\":\"127.0.0.1\"",
        "unknown API key",
        "malformed API key",
        "user key on an admin route",
    ] {
        assert!(log.contains(expected), "the log lacks {expected}");
    }
    let basic = base64(&format!("admin:{ADMIN_API_KEY}"));
    for (what, secret) in [
        ("SECRET_KEY", SECRET_KEY),
        ("API_KEY", API_KEY),
        ("ADMIN_API_KEY", ADMIN_API_KEY),
        ("the FAL key id", FAL_ID),
        ("the FAL key secret", FAL_SECRET),
        ("a wrong key", WRONG_KEY),
        ("a wrong admin guess", WRONG_ADMIN_GUESS),
        ("a prefix of API_KEY", &API_KEY[..20]),
        ("Basic credentials", basic.as_str()),
        ("any probe", "LeakProbe"),
    ] {
        if let Some(at) = log.find(secret) {
            let line = log[..at].rsplit('\n').next().unwrap_or_default();
            panic!("{what} appears in the log, in the line starting: {line}");
        }
    }
}

/// The access log at the default level: one `info` line per change, failure
/// or refusal, with status, method, path, client and key id; routine reads
/// (successful `GET`s, such as status polls) are not logged at `info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_keeps_changes_and_failures_but_not_routine_reads() {
    access_log_session(&[]).await;
}

/// The same lines with the performance-only paths switched off: each
/// request's span made up front (the formatter without `RequestSpans`) and
/// the request gate as one middleware per step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_spans_and_the_layered_gate_log_the_same_lines() {
    access_log_session(&[("REQUEST_SPAN", "eager"), ("REQUEST_GATE", "layered")]).await;
}

/// A session against the real binary started with `extra` variables, and
/// its access lines and a mid-request warning checked.
async fn access_log_session(extra: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let (child, log, reader, addr) = spawn_logged(dir.path(), None, extra).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let form = Form::new().part("files", Part::bytes(png(8, 8)).file_name("chair.png"));
    let upload = client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(API_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 202);
    let job: Value = upload.json().await.unwrap();
    let job_path = format!("/api/v1/jobs/{}", job["job_id"].as_str().unwrap());
    for _ in 0..5 {
        let poll = client
            .get(format!("{base}{job_path}"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(poll.status(), 200);
    }
    let missing = "/api/v1/jobs/01J00000000000000000000000";
    let not_found = client
        .get(format!("{base}{missing}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    let refused = client
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth(WRONG_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, log) = stop_logged(child, log, reader).await;
    assert!(status.success(), "exit {status}: {log}");
    let access: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    let seen: Vec<(String, String, u64)> = access
        .iter()
        .map(|v| {
            assert_eq!(v["level"], "INFO", "{v}");
            assert_eq!(v["message"], "response", "{v}");
            assert_eq!(v["span"]["client_ip"], "127.0.0.1", "{v}");
            (
                v["span"]["method"].as_str().unwrap_or_default().to_owned(),
                v["span"]["path"].as_str().unwrap_or_default().to_owned(),
                v["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("POST".to_owned(), "/api/v1/upload".to_owned(), 202),
            ("GET".to_owned(), missing.to_owned(), 404),
            ("GET".to_owned(), "/api/v1/jobs".to_owned(), 401),
        ],
        "the access lines, in order: {log}"
    );
    assert_eq!(
        access[0]["span"]["key_id"], "bootstrap-user",
        "an accepted request names its key id"
    );
    // An event logged while a request runs carries the request's span too,
    // and the request's access line the same span.
    let warnings: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "unknown API key")
        .collect();
    assert_eq!(warnings.len(), 1, "one refused key: {log}");
    assert_eq!(warnings[0]["level"], "WARN", "{}", warnings[0]);
    assert_eq!(
        warnings[0]["span"]["path"], "/api/v1/jobs",
        "{}",
        warnings[0]
    );
    assert_eq!(
        warnings[0]["span"]["client_ip"], "127.0.0.1",
        "{}",
        warnings[0]
    );
    assert_eq!(
        warnings[0]["span"]["request_id"], access[2]["span"]["request_id"],
        "the warning and the access line of the refused request: {log}"
    );
    assert!(
        access[2]["span"]["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 26),
        "a generated request id: {}",
        access[2]
    );
}
