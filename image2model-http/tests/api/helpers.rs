//! `spawn_app()` starts the real server on 127.0.0.1:0 with its own temp dir
//! and stores; [`TestApp`] has one helper per endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use image2model_core::WorkerConfig;
use image2model_core::auth::StaticKeys;
use image2model_core::domain::{ApiKeyId, BlobPrefix, ModelName};
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::ports::{
    GenerateContext, GenerateError, GenerateRequest, GeneratedModel, ModelGenerator, ModelInfo,
    Principal, Role,
};
use image2model_http::config::Config;
use image2model_http::{App, AppBuilder, SpawnedApp};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

pub const USER_KEY: &str = "test-user-key-0123456789abcdef0123";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef012";
pub const OTHER_KEY: &str = "test-other-key-0123456789abcdef012";

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub app: SpawnedApp,
    pub dir: tempfile::TempDir,
}

/// A generator for tests whose one model, `test-hold`, runs until cancelled
/// (for cancellation and not-ready tests). The default model is `relief`.
#[derive(Debug, Default)]
pub struct HoldGenerator;

#[async_trait]
impl ModelGenerator for HoldGenerator {
    fn name(&self) -> &str {
        "test"
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: ModelName::parse("test-hold").unwrap(),
            generator: "test".into(),
            description: "runs until cancelled (tests)".into(),
        }]
    }

    async fn generate(
        &self,
        _request: GenerateRequest,
        ctx: GenerateContext<'_>,
    ) -> Result<GeneratedModel, GenerateError> {
        ctx.cancel.cancelled().await;
        Err(GenerateError::Cancelled)
    }
}

/// The base variables of every test server.
fn base_vars(dir: &std::path::Path) -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = [
        ("API_KEY", USER_KEY),
        ("ADMIN_API_KEY", ADMIN_KEY),
        ("RATE_LIMIT_UPLOAD_PER_MINUTE", "1000"),
        ("RATE_LIMIT_PER_HOUR", "100000"),
        ("MAX_FILES", "3"),
        ("MAX_FILE_BYTES", "200000"),
        ("MAX_IMAGE_PIXELS", "4000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // SQLite and local files in the test's own directory, as in production.
    vars.insert(
        "DATABASE_URL".into(),
        format!("sqlite://{}/image2model.db", dir.display()),
    );
    vars.insert(
        "STORAGE_URL".into(),
        format!("file://{}/blobs", dir.display()),
    );
    // The performance switches, when set in the environment, so that the
    // whole suite can run with those paths off:
    // `REQUEST_GATE=layered REQUEST_SPAN=eager cargo test -p image2model-http`.
    for name in ["REQUEST_GATE", "REQUEST_SPAN"] {
        if let Ok(value) = std::env::var(name) {
            vars.insert(name.into(), value);
        }
    }
    vars
}

/// A server with generous rate limits and small upload bounds (3 files of
/// 200 kB, 4 Mpx).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose variables `tweak` may change.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    spawn(tweak, true, |b| b).await
}

/// A server whose generators come from its configuration (`GENERATOR`,
/// `FAL_*`), as in production.
pub async fn spawn_app_configured(tweak: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    spawn(tweak, false, |b| b).await
}

/// The variables that point a server at `fake` (its key and base URLs).
pub fn fake_fal_vars(fake: &image2model_core::testing::fake_fal::FakeFal) -> [(String, String); 3] {
    [
        ("FAL_API_KEY".into(), fake.key().to_owned()),
        ("FAL_QUEUE_BASE_URL".into(), fake.queue_base_url()),
        ("FAL_STORAGE_BASE_URL".into(), fake.storage_base_url()),
    ]
}

/// A server whose FAL is `fake` (so FAL is its default generator).
pub async fn spawn_app_with_fal(fake: &image2model_core::testing::fake_fal::FakeFal) -> TestApp {
    let fal = fake_fal_vars(fake);
    spawn_app_configured(move |vars| vars.extend(fal)).await
}

/// A server whose variables `tweak` may change and whose builder `build`
/// may change (limits, rate-limit windows, the cleanup schedule, …).
pub async fn spawn_app_built(
    tweak: impl FnOnce(&mut HashMap<String, String>),
    build: impl FnOnce(AppBuilder) -> AppBuilder,
) -> TestApp {
    spawn(tweak, true, build).await
}

async fn spawn(
    tweak: impl FnOnce(&mut HashMap<String, String>),
    test_generators: bool,
    build: impl FnOnce(AppBuilder) -> AppBuilder,
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut vars = base_vars(dir.path());
    tweak(&mut vars);
    let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test config");
    let mut keys = StaticKeys::bootstrap(config.api_key.clone(), config.admin_api_key.clone());
    keys.add(
        &OTHER_KEY.into(),
        Principal {
            key_id: ApiKeyId::parse("other-user").unwrap(),
            role: Role::User,
            limits: image2model_core::domain::KeyLimits::default(),
        },
    );
    let mut builder = App::builder(config);
    if test_generators {
        builder = builder.generators(vec![
            Arc::new(ReliefGenerator::default()),
            Arc::new(HoldGenerator),
        ]);
    }
    let app = build(builder)
        .bootstrap_keys(keys)
        .event_poll_interval(Duration::from_millis(100))
        .worker(WorkerConfig {
            shutdown_grace: Duration::from_millis(300),
            ..WorkerConfig::default()
        })
        .build()
        .await
        .expect("app builds");
    // A test that must know its address before the server starts (e.g. for
    // PUBLIC_BASE_URL) sets BIND_ADDR.
    let addr = vars
        .get("BIND_ADDR")
        .map_or_else(|| "127.0.0.1:0".parse().unwrap(), |a| a.parse().unwrap());
    let app = app.spawn(addr).await.expect("server starts");
    TestApp {
        base: format!("http://{}", app.addr),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        app,
        dir,
    }
}

/// One file part.
pub fn file_part(name: &str, bytes: Vec<u8>) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

/// A PNG of `w × h`.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    image2model_core::testing::images::png(w, h)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET `path` with `key` (none when `None`).
    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.expect("request")
    }

    /// DELETE `path` with `key`.
    pub async fn delete(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut req = self.client.delete(self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.expect("request")
    }

    /// GET /api/v1/upload.
    pub async fn upload_policy(&self, key: Option<&str>) -> reqwest::Response {
        self.get("/api/v1/upload", key).await
    }

    /// POST /api/v1/upload with a form, as `key`, maybe with an idempotency key.
    pub async fn upload_form(
        &self,
        form: Form,
        key: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url("/api/v1/upload")).multipart(form);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(i) = idempotency_key {
            req = req.header("Idempotency-Key", i);
        }
        req.send().await.expect("request")
    }

    /// Uploads files as the user (default model).
    pub async fn upload(&self, files: Vec<(&str, Vec<u8>)>) -> reqwest::Response {
        let mut form = Form::new();
        for (name, bytes) in files {
            form = form.part("files", file_part(name, bytes));
        }
        self.upload_form(form, Some(USER_KEY), None).await
    }

    /// Uploads and returns the 202 job JSON.
    pub async fn upload_ok(&self, files: Vec<(&str, Vec<u8>)>) -> Value {
        let resp = self.upload(files).await;
        assert_eq!(
            resp.status(),
            202,
            "upload failed: {}",
            resp.text().await.unwrap()
        );
        resp.json().await.unwrap()
    }

    /// GET /api/v1/jobs/{id}.
    pub async fn get_job(&self, job_id: &str, key: &str) -> reqwest::Response {
        self.get(&format!("/api/v1/jobs/{job_id}"), Some(key)).await
    }

    /// GET /api/v1/jobs?query.
    pub async fn list_jobs(&self, query: &str, key: &str) -> reqwest::Response {
        self.get(&format!("/api/v1/jobs{query}"), Some(key)).await
    }

    /// GET /api/v1/jobs/{id}/events, read to the end (at most 30 s): the
    /// `job` events' data.
    pub async fn events(&self, job_id: &str, key: &str) -> Vec<Value> {
        let resp = self
            .get(&format!("/api/v1/jobs/{job_id}/events"), Some(key))
            .await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut stream = resp.bytes_stream();
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the event stream ends after the job ends");
        parse_sse(&text)
    }

    /// Waits (via SSE) until the job ends and returns its last state.
    pub async fn wait_for_end(&self, job_id: &str) -> Value {
        self.events(job_id, USER_KEY)
            .await
            .pop()
            .expect("at least one event")
    }

    /// DELETE /api/v1/jobs/{id}.
    pub async fn delete_job(&self, job_id: &str, key: &str) -> reqwest::Response {
        self.delete(&format!("/api/v1/jobs/{job_id}"), Some(key))
            .await
    }

    /// GET a model URL (as given in `model_url`), with `?format=` when set.
    pub async fn download(
        &self,
        model_url: &str,
        format: Option<&str>,
        key: &str,
    ) -> reqwest::Response {
        let path = match format {
            Some(f) => format!("{model_url}?format={f}"),
            None => model_url.to_owned(),
        };
        self.get(&path, Some(key)).await
    }

    /// GET /api/v1/admin/system-health.
    pub async fn system_health(&self, key: Option<&str>) -> reqwest::Response {
        self.get("/api/v1/admin/system-health", key).await
    }

    /// GET /api/v1/admin/jobs.
    pub async fn admin_jobs(&self, key: &str) -> reqwest::Response {
        self.get("/api/v1/admin/jobs", Some(key)).await
    }

    /// DELETE /api/v1/admin/jobs/{id}.
    pub async fn admin_delete_job(&self, job_id: &str, key: &str) -> reqwest::Response {
        self.delete(&format!("/api/v1/admin/jobs/{job_id}"), Some(key))
            .await
    }

    /// POST `path` with a JSON body, as `key`.
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send().await.expect("request")
    }

    /// POST /api/v1/admin/keys as `key`.
    pub async fn create_key(&self, name: &str, role: &str, key: &str) -> reqwest::Response {
        self.post_json(
            "/api/v1/admin/keys",
            &serde_json::json!({ "name": name, "role": role }),
            Some(key),
        )
        .await
    }

    /// Creates a key as the admin and returns the 201 body.
    pub async fn create_key_ok(&self, name: &str, role: &str) -> Value {
        let resp = self.create_key(name, role, ADMIN_KEY).await;
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    /// GET /api/v1/admin/keys as `key`.
    pub async fn list_keys(&self, key: &str) -> reqwest::Response {
        self.get("/api/v1/admin/keys", Some(key)).await
    }

    /// DELETE /api/v1/admin/keys/{key_id} as `key`.
    pub async fn revoke_key(&self, key_id: &str, key: &str) -> reqwest::Response {
        self.delete(&format!("/api/v1/admin/keys/{key_id}"), Some(key))
            .await
    }

    /// GET /api/v1/admin/disk-usage as `key`.
    pub async fn disk_usage(&self, key: &str) -> reqwest::Response {
        self.get("/api/v1/admin/disk-usage", Some(key)).await
    }

    /// POST /api/v1/admin/cleanup as `key`.
    pub async fn cleanup(
        &self,
        older_than_hours: i64,
        dry_run: bool,
        key: &str,
    ) -> reqwest::Response {
        self.post_json(
            "/api/v1/admin/cleanup",
            &serde_json::json!({ "older_than_hours": older_than_hours, "dry_run": dry_run }),
            Some(key),
        )
        .await
    }

    /// GET /api/v1/admin/audit?query as the admin; the 200 body.
    pub async fn audit_ok(&self, query: &str) -> Value {
        let resp = self
            .get(&format!("/api/v1/admin/audit{query}"), Some(ADMIN_KEY))
            .await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.json().await.unwrap()
    }

    /// Every stored blob key.
    pub async fn blob_keys(&self) -> Vec<String> {
        self.app
            .state
            .pipeline
            .blob_store()
            .list(&BlobPrefix::root())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.as_str().to_owned())
            .collect()
    }

    /// Every file under the app's temp dir except the job database: leftover
    /// blobs and staging files of a file blob store.
    pub fn stored_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if !path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("image2model.db"))
                {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }

    /// Asserts that no upload is stored, in the blob store or on disk.
    pub async fn assert_no_uploads(&self) {
        let uploads: Vec<String> = self
            .blob_keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with("uploads/"))
            .collect();
        assert!(uploads.is_empty(), "uploads left in the store: {uploads:?}");
        let files = self.stored_files();
        assert!(files.is_empty(), "files left on disk: {files:?}");
    }

    /// How many jobs exist (any owner).
    pub async fn job_count(&self) -> usize {
        let resp = self.admin_jobs(ADMIN_KEY).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        body["jobs"].as_array().unwrap().len()
    }
}

/// The data of each `job` event.
pub fn parse_sse(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if event.as_deref() == Some("job") && !data.is_empty() {
            out.push(serde_json::from_str(&data).expect("event data is JSON"));
        }
    }
    out
}

/// Asserts the envelope shape and returns its code.
pub async fn error_code(resp: reqwest::Response) -> String {
    let request_id = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        error["request_id"].as_str(),
        Some(request_id.as_str()),
        "{body}"
    );
    error["code"].as_str().expect("code").to_owned()
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The envelope's `code`.
    pub fn code(&self) -> String {
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body));
        body["error"]["code"].as_str().expect("code").to_owned()
    }
}

/// Sends `request` as-is (no normalisation of the path, no header checks)
/// and reads the response until the server closes (send
/// `Connection: close`). Gives up after 30 s.
pub async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf))
        .await
        .expect("the server answers and closes")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A `GET` of `path` (sent verbatim) with extra header lines.
pub async fn raw_get(addr: std::net::SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// Whether the `curl` command is installed.
pub fn has_curl() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A PNG header with `extra` bytes of noise after it (the size counts, the
/// pixels are not read).
pub fn big_png(extra: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = png(8, 8);
    let mut noise = vec![0u8; extra];
    rand::rng().fill_bytes(&mut noise);
    bytes.extend_from_slice(&noise);
    bytes
}
