//! A small W3C WebDriver client for chromedriver, over reqwest (already a
//! dependency), with the two chromedriver extensions the suite needs: the
//! browser and performance logs (`/se/log`: console messages, and every
//! network request the page made) and DevTools commands
//! (`/goog/cdp/execute`: where downloads go, a script run before the page's
//! own).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium's flags that work headless on this kind of machine (WebGL2
/// through SwiftShader; see docs/WEB.md).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Where Chromium and chromedriver are: `CHROMIUM`/`CHROMEDRIVER` when set,
/// else Debian's paths, else the first on `PATH`. `None` when either is
/// missing.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(var) {
            return Some(PathBuf::from(p)).filter(|p| p.is_file());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for name in names {
            let debian = Path::new("/usr/bin").join(name);
            if debian.is_file() {
                return Some(debian);
            }
            for dir in std::env::split_paths(&path) {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
        None
    };
    Some((
        find("CHROMIUM", &["chromium", "chromium-browser"])?,
        find("CHROMEDRIVER", &["chromedriver"])?,
    ))
}

/// A chromedriver process; shut down (with its browsers) when dropped.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    http: reqwest::Client,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until it is
    /// ready.
    pub async fn start(chromium: &Path, chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            port,
            chromium: chromium.to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base()))
                .send()
                .await;
            if let Ok(resp) = ready
                && let Ok(body) = resp.json::<Value>().await
                && body["value"]["ready"] == true
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new browser with an empty profile, a window of `width × height`,
    /// the console and network logs on, and downloads allowed into a fresh
    /// directory.
    pub async fn session(&self, width: u32, height: u32) -> Session {
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": args,
            },
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            // Generous: reading the canvas waits for SwiftShader, which a
            // loaded machine can starve for many seconds; the tests' own
            // deadlines bound each step.
            "timeouts": {"script": 120_000, "pageLoad": 60_000},
        }}});
        let resp: Value = self
            .http
            .post(format!("{}/session", self.base()))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_owned();
        let session = Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base()),
            downloads: downloads.path().to_owned(),
            console: Mutex::new(Vec::new()),
            network: Mutex::new(Vec::new()),
            _profile: profile,
            _downloads: downloads,
        };
        session
            .cdp(
                "Browser.setDownloadBehavior",
                json!({"behavior": "allow", "downloadPath": session.downloads}),
            )
            .await;
        session
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver's /shutdown quits its browsers too; killing it alone
        // would leave them running.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(
                s,
                "GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the page made, from the performance log.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub id: String,
    pub method: String,
    pub url: String,
    /// Request headers as sent (lower-cased names).
    pub headers: Vec<(String, String)>,
    /// 0 until (or unless) a response was seen.
    pub status: u16,
    /// `http/1.1`, `h2`, … (empty until a response was seen).
    pub protocol: String,
}

impl Request {
    /// A request header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path and query of the URL.
    pub fn path(&self) -> &str {
        self.url
            .find("://")
            .and_then(|i| self.url[i + 3..].find('/').map(|j| &self.url[i + 3 + j..]))
            .unwrap_or(&self.url)
    }
}

/// One browser window.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    url: String,
    /// Where the browser saves downloads.
    pub downloads: PathBuf,
    console: Mutex<Vec<Value>>,
    network: Mutex<Vec<Value>>,
    _profile: tempfile::TempDir,
    _downloads: tempfile::TempDir,
}

impl Session {
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("chromedriver answers");
        let status = resp.status();
        let body: Value = resp.json().await.expect("chromedriver answers JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {body}");
        body["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs an async script: its last argument is the callback to call.
    pub async fn exec_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args}))
            .await
    }

    /// Runs `script` (with `args`) every 100 ms until it returns something other than
    /// `null`/`false`, and returns that; panics with `what` after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Value,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.exec(script, args.clone()).await;
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the page says: {}",
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page's visible status lines, for failure messages.
    pub async fn page_text(&self) -> String {
        let v = self
            .exec(
                "return Array.from(document.querySelectorAll('.status, .live, .viewer-message, .job-status, .error-text'))\
                 .map(e => (e.id || e.className) + ': ' + e.textContent.trim()).filter(t => !t.endsWith(': ')).join(' | ')",
                json!([]),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    /// Types `text` into an element (for a file input: paths, one a line).
    pub async fn send_keys(&self, element: &str, text: &str) {
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Empties an input (for a file input: its chosen files).
    pub async fn clear(&self, element: &str) {
        self.post(&format!("/element/{element}/clear"), json!({}))
            .await;
    }

    /// Clicks an element.
    pub async fn click(&self, element: &str) {
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// Clicks the first element matching `css`.
    pub async fn click_css(&self, css: &str) {
        let e = self.find(css).await;
        self.click(&e).await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    /// Every cookie the browser holds for the page (HttpOnly ones too).
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self.command(reqwest::Method::GET, "/cookie", None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// A DevTools command on the page's target.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    async fn drain_logs(&self) {
        let console = self.post("/se/log", json!({"type": "browser"})).await;
        let network = self.post("/se/log", json!({"type": "performance"})).await;
        if let Some(entries) = console.as_array() {
            self.console.lock().unwrap().extend(entries.iter().cloned());
        }
        if let Some(entries) = network.as_array() {
            let mut events = self.network.lock().unwrap();
            for e in entries {
                if let Some(text) = e["message"].as_str()
                    && let Ok(v) = serde_json::from_str::<Value>(text)
                {
                    let method = v["message"]["method"].as_str().unwrap_or_default();
                    if method.starts_with("Network.") {
                        events.push(v["message"].clone());
                    }
                }
            }
        }
    }

    /// Every console message so far: `(level, message)`.
    pub async fn console(&self) -> Vec<(String, String)> {
        self.drain_logs().await;
        self.console
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Every request the page made so far, in order, with its response's
    /// status and protocol.
    pub async fn requests(&self) -> Vec<Request> {
        self.drain_logs().await;
        let events = self.network.lock().unwrap();
        let mut out: Vec<Request> = Vec::new();
        for e in events.iter() {
            let p = &e["params"];
            let id = p["requestId"].as_str().unwrap_or_default().to_owned();
            match e["method"].as_str().unwrap_or_default() {
                "Network.requestWillBeSent" => {
                    let headers = p["request"]["headers"]
                        .as_object()
                        .map(|h| {
                            h.iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_ascii_lowercase(),
                                        v.as_str().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Request {
                        id,
                        method: p["request"]["method"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        url: p["request"]["url"].as_str().unwrap_or_default().to_owned(),
                        headers,
                        ..Request::default()
                    });
                }
                "Network.responseReceived" => {
                    if let Some(r) = out.iter_mut().rev().find(|r| r.id == id) {
                        r.status = p["response"]["status"].as_u64().unwrap_or(0) as u16;
                        r.protocol = p["response"]["protocol"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Every URL in the network log (requests, redirects, documents).
    pub async fn logged_urls(&self) -> Vec<String> {
        self.drain_logs().await;
        let events = self.network.lock().unwrap();
        let mut urls = Vec::new();
        for e in events.iter() {
            let p = &e["params"];
            for v in [
                &p["request"]["url"],
                &p["documentURL"],
                &p["response"]["url"],
                &p["redirectResponse"]["url"],
            ] {
                if let Some(u) = v.as_str() {
                    urls.push(u.to_owned());
                }
            }
        }
        urls
    }

    /// Waits until the downloads directory holds a finished file called
    /// `name` and returns its bytes.
    pub async fn downloaded(&self, name: &str, timeout: Duration) -> Vec<u8> {
        let path = self.downloads.join(name);
        let deadline = Instant::now() + timeout;
        loop {
            let partial = std::fs::read_dir(&self.downloads)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
                })
                .unwrap_or(false);
            if !partial && let Ok(bytes) = std::fs::read(&path) {
                return bytes;
            }
            if Instant::now() > deadline {
                let present: Vec<String> = std::fs::read_dir(&self.downloads)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                panic!("{name} was not downloaded within {timeout:?}; the folder has {present:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
