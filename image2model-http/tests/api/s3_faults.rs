//! Fault drill: the S3 blob store fails writes part-way. The real binary
//! stores its blobs in the moto server of `.ci/s3-server` (`TEST_S3_*`)
//! through a small proxy written here that forwards every request and,
//! when told, answers `500 InternalError` to every `PUT` (single-request
//! puts and multipart parts alike) after the first N. The server's S3
//! client retries a failing request `S3_MAX_RETRIES` times (2 here, so the
//! drill is quick and the count of failed PUTs is exact); then the upload
//! answers `503 storage_unavailable` with `Retry-After`, the bucket holds
//! nothing of it (no object, no unfinished multipart upload) and no job
//! exists; once the proxy stops failing, uploads work again without a
//! restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use image2model_core::domain::BlobPrefix;
use image2model_core::ports::BlobStore;
use image2model_store::{ObjectBlobStore, S3Config};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{USER_KEY, big_png, png};
use crate::process::{free_port, get_user_json, start_role};

/// The proxy's state: how many more PUTs go through, and what it saw.
#[derive(Debug)]
struct Faults {
    upstream: String,
    client: reqwest::Client,
    /// PUTs still forwarded before the proxy answers 500 to every PUT.
    puts_allowed: AtomicU64,
    failed_puts: AtomicU64,
}

async fn forward(State(faults): State<Arc<Faults>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    if parts.method == axum::http::Method::PUT {
        let allowed = faults
            .puts_allowed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !allowed {
            faults.failed_puts.fetch_add(1, Ordering::SeqCst);
            return Response::builder()
                .status(500)
                .header("content-type", "application/xml")
                .body(Body::from(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected by the drill</Message></Error>",
                ))
                .unwrap();
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = faults
        .client
        .request(parts.method.clone(), format!("{}{path}", faults.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return Response::builder().status(502).body(Body::empty()).unwrap();
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != axum::http::header::TRANSFER_ENCODING
            && name != axum::http::header::CONTENT_LENGTH
            && name != axum::http::header::CONNECTION
        {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

/// Starts the proxy to `upstream` on a free port: its base URL.
async fn start_proxy(faults: Arc<Faults>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(faults);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

async fn upload(client: &reqwest::Client, base: &str, files: Vec<Vec<u8>>) -> reqwest::Response {
    let mut form = Form::new();
    for (i, bytes) in files.into_iter().enumerate() {
        form = form.part("files", Part::bytes(bytes).file_name(format!("f{i}.png")));
    }
    client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// The body of a refused upload, after checking it is a 503
/// `storage_unavailable` with `Retry-After`.
async fn assert_storage_unavailable(resp: reqwest::Response) {
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_failing_writes_part_way_fail_the_upload_cleanly_and_store_nothing() {
    let Some(endpoint) = var("TEST_S3_ENDPOINT") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "the S3 write-fault drill skipped: set TEST_S3_ENDPOINT, e.g. with eval \"$(.ci/s3-server)\""
        );
        return;
    };
    let bucket = var("TEST_S3_BUCKET").unwrap_or_else(|| "image2model-test".into());
    let access = var("TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|| "test".into());
    let secret = var("TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into());
    let region = var("TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into());
    let prefix = format!("drill-{}", ulid::Ulid::new().to_string().to_lowercase());

    let faults = Arc::new(Faults {
        upstream: endpoint.trim_end_matches('/').to_owned(),
        client: reqwest::Client::new(),
        puts_allowed: AtomicU64::new(u64::MAX),
        failed_puts: AtomicU64::new(0),
    });
    let proxy = start_proxy(faults.clone()).await;

    // What the bucket holds under this test's prefix, read from moto
    // directly (not through the proxy).
    let direct = ObjectBlobStore::s3(&S3Config {
        bucket: bucket.clone(),
        prefix: Some(prefix.clone()),
        region: region.clone(),
        endpoint: Some(endpoint.clone()),
        access_key_id: Some(access.clone()),
        secret_access_key: Some(secret.clone()),
        session_token: None,
        max_retries: 0,
        retry_timeout: std::time::Duration::from_secs(5),
    })
    .unwrap();
    let stored = || async {
        direct
            .list(&BlobPrefix::root())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let client = reqwest::Client::new();
    // Multipart uploads begun under the prefix and neither completed nor
    // aborted.
    let unfinished = || async {
        client
            .get(format!(
                "{}/{bucket}?uploads&prefix={prefix}/",
                endpoint.trim_end_matches('/')
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .matches("<UploadId>")
            .count()
    };

    let data = tempfile::tempdir().unwrap();
    let env = vec![
        ("STORAGE_URL", format!("s3://{bucket}/{prefix}")),
        ("AWS_ENDPOINT_URL", proxy.clone()),
        ("AWS_ACCESS_KEY_ID", access),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", region),
        ("S3_MAX_RETRIES", "2".to_owned()),
        ("S3_RETRY_TIMEOUT_SECS", "30".to_owned()),
        ("MAX_FILES", "3".to_owned()),
    ];
    // No worker: only uploads write.
    let server = start_role(free_port(), data.path(), &env, "api").await;
    let base = server.base.clone();

    // Three files; the first PUT goes through, every later one fails.
    faults.puts_allowed.store(1, Ordering::SeqCst);
    let resp = upload(&client, &base, vec![png(24, 16), png(16, 24), png(20, 20)]).await;
    assert_storage_unavailable(resp).await;
    assert_eq!(
        faults.failed_puts.load(Ordering::SeqCst),
        3,
        "the second file's PUT, tried once and retried twice"
    );
    assert_eq!(
        stored().await,
        Vec::<String>::new(),
        "the first file removed"
    );

    // A file large enough for a multipart upload (5 MiB parts): the parts
    // fail, the upload is aborted.
    faults.puts_allowed.store(0, Ordering::SeqCst);
    let resp = upload(&client, &base, vec![big_png(6 * 1024 * 1024)]).await;
    assert_storage_unavailable(resp).await;
    assert!(faults.failed_puts.load(Ordering::SeqCst) > 3);
    assert_eq!(stored().await, Vec::<String>::new());
    assert_eq!(unfinished().await, 0, "the multipart upload was aborted");

    let jobs = get_user_json(&client, &format!("{base}/api/v1/jobs")).await;
    assert_eq!(jobs["jobs"], json!([]), "no job of a failed upload");

    // S3 is well again: uploads work, without a restart.
    faults.puts_allowed.store(u64::MAX, Ordering::SeqCst);
    let resp = upload(&client, &base, vec![png(24, 16), png(16, 24)]).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let job: Value = resp.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap();
    let keys = stored().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.contains(job_id)), "{keys:?}");
}
