//! What every browser test stands on: the fake FAL on real sockets, the
//! real `image2model` binary on the guide's default rate limits, and one
//! Chromium (through chromedriver) on the page, plus the checks that every
//! test ends with.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};
use serde_json::{Value, json};

use crate::webdriver::{Driver, Request, Session, find_browser};

/// The user's API key on every test server.
pub const KEY: &str = "browser-user-key-0123456789abcdefghij";

/// Photos per upload at most, on the test servers (the default is 25; five
/// makes the "too many" check cheap).
pub const MAX_FILES: usize = 5;
/// Bytes per photo at most, on the test servers.
pub const MAX_FILE_BYTES: usize = 300_000;

/// One browser test at a time: each drives a SwiftShader Chromium and a
/// server on a 2-core machine, and their timings must not fight.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium and chromedriver, or `None` after saying why the test is
/// skipped; with `CI=true` a missing browser fails instead.
pub fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    if let Some(found) = find_browser() {
        return Some(found);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !ci,
        "{test}: Chromium or chromedriver is missing, and CI must run the browser suite \
         (apt-get install -y chromium chromium-driver)"
    );
    // Written past the test harness's capture, so that it shows.
    let _ = writeln!(
        std::io::stderr(),
        "{test} skipped: Chromium or chromedriver not found (apt-get install chromium chromium-driver)"
    );
    None
}

/// The real server as a child process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
    port: u16,
    role: &'static str,
    env: Vec<(String, String)>,
    data: Arc<tempfile::TempDir>,
}

impl Drop for Server {
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

impl Server {
    /// `image2model serve` (API and worker in one process) with SQLite and
    /// files in a temp dir, FAL pointed at `fake`, and the default rate
    /// limits: nothing from the caller's environment reaches it but
    /// `PATH`, and `env` on top.
    pub async fn start(fake: &FakeFal, env: &[(&str, &str)]) -> Server {
        let data = Arc::new(tempfile::tempdir().unwrap());
        Self::spawn("all", free_port(), data, Self::vars(fake, env)).await
    }

    /// The API and the worker as two processes on one job store, as a
    /// deployment may run them: the API can restart while the worker goes
    /// on. Returns `(api, worker)`.
    pub async fn start_split(fake: &FakeFal, env: &[(&str, &str)]) -> (Server, Server) {
        let data = Arc::new(tempfile::tempdir().unwrap());
        let vars = Self::vars(fake, env);
        let api = Self::spawn("api", free_port(), data.clone(), vars.clone()).await;
        let worker = Self::spawn("worker", free_port(), data, vars).await;
        (api, worker)
    }

    fn vars(fake: &FakeFal, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("API_KEY", KEY.to_owned()),
            ("FAL_KEY", fake.key().to_owned()),
            ("FAL_QUEUE_BASE_URL", fake.queue_base_url()),
            ("FAL_STORAGE_BASE_URL", fake.storage_base_url()),
            ("MAX_FILES", MAX_FILES.to_string()),
            ("MAX_FILE_BYTES", MAX_FILE_BYTES.to_string()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        vars
    }

    async fn spawn(
        role: &'static str,
        port: u16,
        data: Arc<tempfile::TempDir>,
        env: Vec<(String, String)>,
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_image2model"));
        cmd.args([
            "serve",
            "--role",
            role,
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(data.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", data.path().join("jobs.db").display()),
        )
        .env(
            "STORAGE_URL",
            format!("file://{}", data.path().join("blobs").display()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let server = Server {
            child: cmd.spawn().expect("the image2model binary starts"),
            base: format!("http://127.0.0.1:{port}"),
            port,
            role,
            env,
            data,
        };
        // /health is outside /api/v1: it costs nothing of the rate limits.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", server.base)).send().await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server ({role}) did not become healthy");
    }

    /// Stops the process as a restart does (SIGTERM: it closes its event
    /// streams and drains) and waits until it has exited.
    pub async fn stop(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the server did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the process again, on the same port and store.
    pub async fn start_again(&mut self) {
        let again = Self::spawn(self.role, self.port, self.data.clone(), self.env.clone()).await;
        *self = again;
    }
}

/// The fake FAL, the server, and a browser on the page.
#[derive(Debug)]
pub struct Stack {
    pub fake: FakeFal,
    /// The server the page talks to (the API alone when split).
    pub server: Server,
    /// The worker, when it runs as a process of its own (kept running).
    _worker: Option<Server>,
    pub browser: Session,
    /// Test photos on disk (for the file picker).
    pub photos: tempfile::TempDir,
    // Dropped last: it quits the browser.
    _driver: Driver,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    /// Starts everything and opens the page in a `width × height` window;
    /// `None` when the browser is missing (and the test is skipped).
    pub async fn start(
        test: &str,
        fake: FakeFalConfig,
        env: &[(&str, &str)],
        size: (u32, u32),
    ) -> Option<Stack> {
        Self::start_with(test, fake, env, size, false).await
    }

    /// As [`Stack::start`]; with `split`, the API and the worker run as
    /// two processes ([`Server::start_split`]).
    pub async fn start_with(
        test: &str,
        fake: FakeFalConfig,
        env: &[(&str, &str)],
        (width, height): (u32, u32),
        split: bool,
    ) -> Option<Stack> {
        let (chromium, chromedriver) = browser_or_skip(test)?;
        let turn = ONE_AT_A_TIME.lock().await;
        let fake = FakeFal::start(fake).await;
        let (server, worker) = if split {
            let (api, worker) = Server::start_split(&fake, env).await;
            (api, Some(worker))
        } else {
            (Server::start(&fake, env).await, None)
        };
        let driver = Driver::start(&chromium, &chromedriver).await;
        let browser = driver.session(width, height).await;
        // Before the page's own scripts: record every CSP violation (the
        // page has no report endpoint; this is what a report would carry),
        // and take crypto.randomUUID away, as plain HTTP to a LAN address
        // does (it exists only in secure contexts, and loopback is one).
        browser
            .cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({"source": "window.__cspViolations = [];\
                    document.addEventListener('securitypolicyviolation', (e) => \
                    window.__cspViolations.push(e.violatedDirective + ' blocked ' + e.blockedURI));\
                    delete Crypto.prototype.randomUUID;"}),
            )
            .await;
        browser.goto(&format!("{}/", server.base)).await;
        Some(Stack {
            fake,
            server,
            _worker: worker,
            browser,
            photos: tempfile::tempdir().unwrap(),
            _driver: driver,
            _turn: turn,
        })
    }

    /// Writes `bytes` as a photo called `name` and returns its path.
    pub fn photo(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.photos.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `n` distinct small PNG photos `{prefix}-{i}.png`.
    pub fn photos(&self, prefix: &str, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let side = 48 + 2 * i as u32;
                self.photo(
                    &format!("{prefix}-{i}.png"),
                    &image2model_core::testing::images::png(side, side),
                )
            })
            .collect()
    }

    /// Types the key and waits until the page has accepted it.
    pub async fn enter_key(&self, key: &str) {
        let input = self.browser.find("#api-key").await;
        self.browser.send_keys(&input, key).await;
        self.browser.click_css("#use-key").await;
        self.browser
            .wait_for(
                "the key to be accepted",
                Duration::from_secs(10),
                "const s = document.getElementById('key-status'); \
                 return s.classList.contains('ok') || s.classList.contains('error') ? s.className + ': ' + s.textContent : null",
                json!([]),
            )
            .await;
        let status = self.text("#key-status").await;
        assert!(
            status.contains("Key in use"),
            "the page did not accept the key: {status}"
        );
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.browser
            .exec(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null",
                json!([css]),
            )
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Chooses `files` with the file picker (instead of any chosen before:
    /// chromedriver adds to a `multiple` input's files).
    pub async fn pick(&self, files: &[PathBuf]) {
        let input = self.browser.find("#files").await;
        self.browser.clear(&input).await;
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.browser.send_keys(&input, &paths.join("\n")).await;
    }

    /// Waits until the page has checked the chosen photos, and returns the
    /// upload status line and whether Convert is enabled.
    pub async fn checked(&self, count: usize) -> (String, bool) {
        let v = self
            .browser
            .wait_for(
                "the chosen photos to be checked",
                Duration::from_secs(10),
                "const n = document.querySelectorAll('#selection li').length; \
                 if (n !== arguments[0]) return null; \
                 return [document.getElementById('upload-status').textContent, !document.getElementById('upload-button').disabled]",
                json!([count]),
            )
            .await;
        (
            v[0].as_str().unwrap_or_default().to_owned(),
            v[1].as_bool().unwrap_or(false),
        )
    }

    /// Chooses `files`, clicks Convert and returns the new job's id (from
    /// the status line).
    pub async fn upload(&self, files: &[PathBuf]) -> String {
        self.pick(files).await;
        self.wait_ready(files.len()).await;
        self.convert().await
    }

    /// Waits until `count` photos are chosen and Convert is enabled.
    pub async fn wait_ready(&self, count: usize) {
        self.browser
            .wait_for(
                "Convert to be enabled",
                Duration::from_secs(10),
                "return document.querySelectorAll('#selection li.good').length === arguments[0] \
                 && !document.getElementById('upload-button').disabled",
                json!([count]),
            )
            .await;
    }

    /// Clicks Convert and returns the new job's id.
    pub async fn convert(&self) -> String {
        let before = self
            .browser
            .exec(
                "return document.getElementById('upload-status').textContent",
                json!([]),
            )
            .await;
        self.browser.click_css("#upload-button").await;
        let v = self
            .browser
            .wait_for(
                "the upload to be answered",
                Duration::from_secs(20),
                "const s = document.getElementById('upload-status'); \
                 if (s.textContent === arguments[0]) return null; \
                 const m = /job ([0-9A-Z]{26})/.exec(s.textContent); \
                 return m ? m[1] : (s.classList.contains('error') ? 'error: ' + s.textContent : null)",
                json!([before]),
            )
            .await;
        let id = v.as_str().unwrap_or_default().to_owned();
        assert!(!id.starts_with("error"), "the upload failed: {id}");
        id
    }

    /// Waits until job `id`'s card says it has ended and returns its status;
    /// on a timeout, says what the server has for the job too.
    pub async fn wait_job_end(&self, id: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .browser
                .exec(
                    "const c = document.querySelector('[data-job=\"' + arguments[0] + '\"]'); \
                     const s = c && c.dataset.status; \
                     return s && s !== 'queued' && s !== 'running' ? s : null",
                    json!([id]),
                )
                .await;
            if let Some(status) = v.as_str() {
                return status.to_owned();
            }
            if Instant::now() > deadline {
                panic!(
                    "job {id} did not end on the page within {timeout:?}; the page says: {}; \
                     the server has: {}",
                    self.browser.page_text().await,
                    self.server_job(id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The job as the server has it, asked from another loopback address
    /// (its own rate-limit buckets), for failure messages.
    pub async fn server_job(&self, id: &str) -> Value {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 99]))
            .no_proxy()
            .build()
            .unwrap();
        match client
            .get(format!("{}/api/v1/jobs/{id}", self.server.base))
            .bearer_auth(KEY)
            .send()
            .await
        {
            Ok(resp) => resp.json().await.unwrap_or(Value::Null),
            Err(e) => json!(e.to_string()),
        }
    }

    /// The item ids of job `id`'s card, in order.
    pub async fn item_ids(&self, id: &str) -> Vec<String> {
        let v = self
            .browser
            .exec(
                "return Array.from(document.querySelectorAll('[data-job=\"' + arguments[0] + '\"] .item'))\
                 .map(li => li.dataset.item)",
                json!([id]),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    /// Clicks an item's button (`.view` or `[data-format=glb]`, …).
    pub async fn click_item(&self, item: &str, css: &str) {
        self.browser
            .click_css(&format!("[data-item=\"{item}\"] {css}"))
            .await;
    }

    /// Clicks View on `item` and waits until the viewer has drawn it.
    pub async fn view(&self, item: &str) {
        self.click_item(item, "button.view").await;
        let state = self
            .browser
            .wait_for(
                "the viewer to draw the model",
                Duration::from_secs(20),
                "const c = document.getElementById('viewer'); \
                 const row = document.querySelector('.item.viewing'); \
                 if (!row || row.dataset.item !== arguments[0]) return null; \
                 const s = c.dataset.viewerState; \
                 const loading = !document.getElementById('viewer-message').hidden \
                   && document.getElementById('viewer-message').textContent.startsWith('Loading'); \
                 return !loading && (s === 'ready' || s === 'error') ? s : null",
                json!([item]),
            )
            .await;
        assert_eq!(
            state,
            "ready",
            "the viewer could not draw the model: {}",
            self.text("#viewer-message").await
        );
    }

    /// Counts the preview canvas's pixels close to the texture's four
    /// colours (red, green, blue, yellow), whatever the lighting does to
    /// their brightness. Returns `[red, green, blue, yellow, all]`.
    pub async fn texture_pixels(&self) -> [u64; 5] {
        let v = self
            .browser
            .exec(
                "const c = document.getElementById('viewer'); \
                 const t = document.createElement('canvas'); t.width = c.width; t.height = c.height; \
                 const x = t.getContext('2d'); x.drawImage(c, 0, 0); \
                 const d = x.getImageData(0, 0, t.width, t.height).data; \
                 const n = [0, 0, 0, 0, t.width * t.height]; \
                 for (let i = 0; i < d.length; i += 4) { \
                   const r = d[i], g = d[i + 1], b = d[i + 2]; \
                   if (r > 90 && g < 0.35 * r && b < 0.35 * r) n[0]++; \
                   else if (g > 90 && r < 0.35 * g && b < 0.35 * g) n[1]++; \
                   else if (b > 90 && r < 0.35 * b && g < 0.35 * b) n[2]++; \
                   else if (r > 90 && g > 90 && Math.abs(r - g) < 0.25 * r && b < 0.35 * Math.min(r, g)) n[3]++; \
                 } \
                 return n",
                json!([]),
            )
            .await;
        let n: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        [n[0], n[1], n[2], n[3], n[4]]
    }

    /// Asserts that the preview shows the fake model's texture: each of its
    /// four colours covers at least 1 % of the canvas.
    pub async fn assert_textured_preview(&self) {
        let [red, green, blue, yellow, all] = self.texture_pixels().await;
        let min = all / 100;
        assert!(
            red >= min && green >= min && blue >= min && yellow >= min,
            "the preview does not show the model's texture: of {all} pixels, \
             {red} red, {green} green, {blue} blue, {yellow} yellow (each needs {min})"
        );
    }

    /// The requests the page made to the API (`/api/v1/…`).
    pub async fn api_requests(&self) -> Vec<Request> {
        self.browser
            .requests()
            .await
            .into_iter()
            .filter(|r| r.path().starts_with("/api/v1/") && r.url.starts_with(&self.server.base))
            .collect()
    }

    /// Asserts what every test ends with: no console error, no CSP
    /// violation, and the key in neither storage, cookies, nor any URL the
    /// page loaded or requested (while it did go, as a header, on the API
    /// requests).
    pub async fn assert_clean(&self, key: &str) {
        self.assert_clean_but(key, &[]).await;
    }

    /// [`Stack::assert_clean`], but console errors containing one of
    /// `expected` are allowed (a test that cuts the network expects some).
    pub async fn assert_clean_but(&self, key: &str, expected: &[&str]) {
        let errors: Vec<(String, String)> = self
            .browser
            .console()
            .await
            .into_iter()
            .filter(|(level, message)| {
                level == "SEVERE" && !expected.iter().any(|e| message.contains(e))
            })
            .collect();
        assert!(errors.is_empty(), "console errors: {errors:?}");

        let violations = self
            .browser
            .exec("return window.__cspViolations", json!([]))
            .await;
        assert_eq!(violations, json!([]), "CSP violations");

        let stored = self
            .browser
            .exec_async(
                "const done = arguments[arguments.length - 1]; (async () => { \
                 const dbs = indexedDB.databases ? await indexedDB.databases() : []; \
                 const caches_ = self.caches ? await caches.keys() : []; \
                 done({ local: JSON.stringify(Object.entries(localStorage)), \
                        session: JSON.stringify(Object.entries(sessionStorage)), \
                        cookie: document.cookie, href: location.href, \
                        history: history.length, \
                        resources: performance.getEntries().map((e) => e.name).join('\\n'), \
                        field: document.getElementById('api-key').value, \
                        html: document.documentElement.outerHTML, \
                        dbs: dbs.length, caches: caches_.length }); })()",
                json!([]),
            )
            .await;
        for field in [
            "local",
            "session",
            "cookie",
            "href",
            "resources",
            "field",
            "html",
        ] {
            let text = stored[field].as_str().unwrap_or_default();
            assert!(!text.contains(key), "the key is in the page's {field}");
        }
        assert_eq!(stored["local"], "[]", "localStorage is used");
        assert_eq!(stored["session"], "[]", "sessionStorage is used");
        assert_eq!(stored["cookie"], "", "the page has cookies");
        assert_eq!(stored["dbs"], 0, "IndexedDB is used");
        assert_eq!(stored["caches"], 0, "Cache Storage is used");

        let cookies = self.browser.cookies().await;
        assert!(cookies.is_empty(), "the browser holds cookies: {cookies:?}");

        let urls = self.browser.logged_urls().await;
        assert!(!urls.is_empty(), "the network log is empty");
        for url in &urls {
            assert!(!url.contains(key), "the key is in a URL: {url}");
        }
        // The key did travel, as the Authorization header of API requests:
        // so the log above did see the page's requests.
        let api = self.api_requests().await;
        assert!(!api.is_empty(), "no API request logged");
        for r in &api {
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {key}").as_str()),
                "{} {} without the key",
                r.method,
                r.url
            );
        }
    }

    /// Screenshot of the window to `path` when `BROWSER_SCREENSHOT_DIR` is
    /// set (how docs/page.png is made).
    pub async fn screenshot_if_asked(&self, name: &str) {
        if let Some(dir) = std::env::var_os("BROWSER_SCREENSHOT_DIR") {
            let png = self.browser.screenshot().await;
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
    }
}

/// The statuses of the API answers, for failure messages.
pub fn describe(requests: &[Request]) -> String {
    requests
        .iter()
        .map(|r| format!("{} {} → {}", r.method, r.path(), r.status))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a JSON array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
