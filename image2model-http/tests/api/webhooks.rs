//! Signed webhooks to integrators, on real sockets: a loopback receiver
//! gets each job's end as signed, retried until it takes it (same delivery
//! id every time), even across a kill -9 of the server; callbacks to
//! loopback, private, metadata addresses, or names resolving to them, are
//! refused unless the operator allows them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image2model_core::callbacks::{DEFAULT_TOLERANCE, verify};
use poem::http::{HeaderMap, StatusCode};
use poem::listener::TcpListener as PoemListener;
use poem::{EndpointExt, Response, Route, handler, post};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_KEY, OTHER_KEY, TestApp, USER_KEY, error_code, file_part, png, spawn_app_with,
};
use crate::process::{free_port, start};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Checks the signature under `secret` now.
    fn verify(&self, secret: &str) -> Result<(), image2model_core::callbacks::SignatureError> {
        verify(
            secret,
            self.header("image2model-signature"),
            &self.body,
            chrono::Utc::now().timestamp(),
            DEFAULT_TOLERANCE,
        )
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// 500 to the first `n` requests, then 204.
    FailFirst(usize),
    /// 500 always.
    FailAlways,
    /// The first request never gets an answer; 204 to the others.
    HangFirst,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    behaviour: Behaviour,
    url: String,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Self {
        Self::start_on(free_port(), behaviour).await
    }

    async fn start_on(port: u16, behaviour: Behaviour) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let receiver = Receiver {
            got: got.clone(),
            behaviour,
            url: format!("http://127.0.0.1:{port}/hooks/i2m?token=abc"),
        };
        let app = Route::new()
            .at("/hooks/i2m", post(receive))
            .data(receiver.clone());
        tokio::spawn(poem::Server::new(PoemListener::bind(format!("127.0.0.1:{port}"))).run(app));
        // Answers once listening.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the receiver did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        receiver
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests have come (at most 30 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries came",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[handler]
async fn receive(
    headers: &HeaderMap,
    body: Vec<u8>,
    receiver: poem::web::Data<&Receiver>,
) -> Response {
    let n = {
        let mut got = receiver.got.lock().unwrap();
        got.push(Received {
            headers: headers.clone(),
            body,
        });
        got.len()
    };
    let fail = match receiver.behaviour {
        Behaviour::FailFirst(k) => n <= k,
        Behaviour::FailAlways => true,
        Behaviour::HangFirst => {
            if n == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            false
        }
    };
    if fail {
        Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body("receiver down for maintenance")
    } else {
        Response::builder().status(StatusCode::NO_CONTENT).finish()
    }
}

const SECRET_KEY: &str = "webhook-tests-server-secret-0123456789abcdef";

/// A server that may call plain http on 127.0.0.1, retrying fast.
async fn app_for_loopback(extra: &[(&str, &str)]) -> TestApp {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    spawn_app_with(move |v| {
        v.insert("SECRET_KEY".into(), SECRET_KEY.into());
        v.insert("WEBHOOK_ALLOW_HTTP".into(), "true".into());
        v.insert("WEBHOOK_ALLOWED_NETS".into(), "127.0.0.1/32".into());
        v.insert("WEBHOOK_POLL_MS".into(), "50".into());
        v.insert("WEBHOOK_RETRY_INITIAL_MS".into(), "100".into());
        for (k, val) in extra {
            v.insert(k, val);
        }
    })
    .await
}

async fn new_secret(app: &TestApp, key: &str) -> String {
    let resp = app
        .client
        .post(app.url("/api/v1/webhook/secret"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

async fn upload_with(app: &TestApp, key: &str, callback: Option<&str>) -> reqwest::Response {
    let mut form = Form::new().part("files", file_part("chair.png", png(16, 12)));
    if let Some(url) = callback {
        form = form.text("callback_url", url.to_owned());
    }
    app.upload_form(form, Some(key), None).await
}

async fn upload_ok(app: &TestApp, callback: Option<&str>) -> String {
    let resp = upload_with(app, USER_KEY, callback).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let job: Value = resp.json().await.unwrap();
    job["job_id"].as_str().unwrap().to_owned()
}

async fn delivery_of(app: &TestApp, job_id: &str) -> Value {
    let resp = app
        .get(&format!("/api/v1/jobs/{job_id}/webhook"), Some(USER_KEY))
        .await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Waits until the job's delivery is no longer pending.
async fn settled(app: &TestApp, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = delivery_of(app, job_id).await;
        if d["status"] != "pending" {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery stayed pending: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_receiver_gets_the_jobs_end_signed_with_its_keys_secret() {
    let app = app_for_loopback(&[]).await;
    let receiver = Receiver::start(Behaviour::FailFirst(0)).await;

    // No secret yet: refused before anything is stored.
    let resp = upload_with(&app, USER_KEY, Some(&receiver.url)).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(error_code(resp).await, "webhook_secret_missing");
    app.assert_no_uploads().await;

    let secret = new_secret(&app, USER_KEY).await;
    assert!(secret.starts_with("whsec_"));
    let settings: Value = app
        .get("/api/v1/webhook", Some(USER_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(settings["has_secret"], true);
    assert!(
        !settings.to_string().contains(&secret),
        "the secret is shown only once"
    );

    let job_id = upload_ok(&app, Some(&receiver.url)).await;
    let got = receiver.wait_for(1).await;
    let hook = &got[0];
    hook.verify(&secret)
        .expect("the delivery verifies with the key's secret");
    assert!(hook.verify("whsec_not-the-secret").is_err());
    assert_eq!(hook.header("content-type"), "application/json");
    assert_eq!(hook.header("image2model-event"), "job.ended");
    assert_eq!(hook.header("image2model-attempt"), "1");
    let body = hook.json();
    assert_eq!(body["job_id"], job_id.as_str());
    assert_eq!(body["status"], "succeeded");
    // The same document GET /jobs/{id} answers.
    let job: Value = app.get_job(&job_id, USER_KEY).await.json().await.unwrap();
    assert_eq!(body, job);

    let d = settled(&app, &job_id).await;
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["last_status_code"], 204);
    assert_eq!(hook.header("image2model-delivery"), d["delivery_id"]);
    assert_eq!(d["url"], receiver.url.as_str());
    // Another key cannot see it.
    let resp = app
        .get(&format!("/api/v1/jobs/{job_id}/webhook"), Some(OTHER_KEY))
        .await;
    assert_eq!(resp.status(), 404);

    // A rotated secret signs the next delivery; the old one no longer
    // verifies it. The key's default URL serves uploads that name none.
    let rotated = new_secret(&app, USER_KEY).await;
    assert_ne!(rotated, secret);
    let resp = app
        .client
        .put(app.url("/api/v1/webhook"))
        .bearer_auth(USER_KEY)
        .json(&json!({ "default_url": receiver.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let second = upload_ok(&app, None).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["job_id"], second.as_str());
    got[1].verify(&rotated).expect("signed with the new secret");
    assert!(
        got[1].verify(&secret).is_err(),
        "the old secret stopped signing"
    );
    assert_eq!(receiver.received().len(), 2, "each end is delivered once");
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_same_delivery_on_the_fourth_try() {
    let app = app_for_loopback(&[]).await;
    let receiver = Receiver::start(Behaviour::FailFirst(3)).await;
    let secret = new_secret(&app, USER_KEY).await;
    let job_id = upload_ok(&app, Some(&receiver.url)).await;

    let d = settled(&app, &job_id).await;
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["attempts"], 4);
    let got = receiver.received();
    assert_eq!(got.len(), 4, "three failures, then the delivery");
    for (n, hook) in got.iter().enumerate() {
        hook.verify(&secret).expect("every attempt is signed");
        assert_eq!(
            hook.header("image2model-delivery"),
            d["delivery_id"],
            "duplicates carry one delivery id"
        );
        assert_eq!(hook.header("image2model-attempt"), (n + 1).to_string());
        assert_eq!(
            hook.body, got[0].body,
            "every attempt posts the same document"
        );
    }
    let listed: Value = app
        .get(
            "/api/v1/webhook/deliveries?status=delivered",
            Some(USER_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["deliveries"][0]["delivery_id"], d["delivery_id"]);
}

#[tokio::test]
async fn a_delivery_given_up_on_is_failed_audited_and_visible_to_owner_and_admin() {
    let app = app_for_loopback(&[("WEBHOOK_RETRY_FOR_SECS", "1")]).await;
    let receiver = Receiver::start(Behaviour::FailAlways).await;
    new_secret(&app, USER_KEY).await;
    let job_id = upload_ok(&app, Some(&receiver.url)).await;

    let d = settled(&app, &job_id).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["last_status_code"], 500);
    let error = d["last_error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("gave up"),
        "{error}"
    );
    let attempts = d["attempts"].as_u64().unwrap();
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    assert_eq!(receiver.received().len() as u64, attempts);

    let mine: Value = app
        .get("/api/v1/webhook/deliveries?status=failed", Some(USER_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["deliveries"][0]["job_id"], job_id.as_str());
    let all: Value = app
        .get(
            "/api/v1/admin/webhook-deliveries?status=failed",
            Some(ADMIN_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["deliveries"][0]["job_id"], job_id.as_str());
    assert_eq!(all["deliveries"][0]["owner"], "bootstrap-user");
    let resp = app
        .get("/api/v1/admin/webhook-deliveries", Some(USER_KEY))
        .await;
    assert_eq!(resp.status(), 403);
    let audit = app.audit_ok("?limit=100").await;
    let failed = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "webhook_failed")
        .expect("a webhook_failed audit event");
    assert_eq!(failed["detail"]["job_id"], job_id.as_str());
}

#[tokio::test]
async fn callbacks_to_loopback_private_or_metadata_addresses_are_refused_unless_allowed() {
    let port = free_port();
    let refused = [
        format!("http://127.0.0.1:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/hook".to_owned(),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        "http://[::ffff:169.254.169.254]/".to_owned(),
    ];
    // Plain http allowed, but no network.
    let app = spawn_app_with(|v| {
        v.insert("WEBHOOK_ALLOW_HTTP".into(), "true".into());
    })
    .await;
    new_secret(&app, USER_KEY).await;
    for url in &refused {
        let resp = upload_with(&app, USER_KEY, Some(url)).await;
        assert_eq!(resp.status(), 400, "{url} was accepted");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_callback_url", "{url}");
        let resp = app
            .client
            .put(app.url("/api/v1/webhook"))
            .bearer_auth(USER_KEY)
            .json(&json!({ "default_url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{url} was accepted as a default");
    }
    app.assert_no_uploads().await;
    assert_eq!(app.job_count().await, 0, "no refused upload made a job");

    // https only by default; credentials never.
    let strict = spawn_app_with(|_| {}).await;
    new_secret(&strict, USER_KEY).await;
    for url in [
        "http://hooks.example.com/x",
        "https://user:pw@hooks.example.com/x",
        "ftp://hooks.example.com/x",
    ] {
        let resp = upload_with(&strict, USER_KEY, Some(url)).await;
        assert_eq!(resp.status(), 400, "{url} was accepted");
        assert_eq!(error_code(resp).await, "invalid_callback_url");
    }

    // An operator's allow list opens loopback (and only what it lists).
    let open = spawn_app_with(|v| {
        v.insert("WEBHOOK_ALLOW_HTTP".into(), "true".into());
        v.insert("WEBHOOK_ALLOWED_NETS".into(), "127.0.0.0/8,::1".into());
    })
    .await;
    new_secret(&open, USER_KEY).await;
    for url in &refused[..1] {
        assert_eq!(upload_with(&open, USER_KEY, Some(url)).await.status(), 202);
    }
    let resp = upload_with(&open, USER_KEY, Some(&format!("http://localhost:{port}/h"))).await;
    assert_eq!(resp.status(), 202, "a name resolving to an allowed address");
    for url in &refused[1..3] {
        assert_eq!(
            upload_with(&open, USER_KEY, Some(url)).await.status(),
            400,
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_between_a_jobs_end_and_its_delivery_delivers_after_restart() {
    let receiver = Receiver::start(Behaviour::HangFirst).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [
        ("SECRET_KEY", SECRET_KEY.to_owned()),
        ("WEBHOOK_ALLOW_HTTP", "true".to_owned()),
        ("WEBHOOK_ALLOWED_NETS", "127.0.0.1/32".to_owned()),
        ("WEBHOOK_POLL_MS", "50".to_owned()),
        ("WEBHOOK_TIMEOUT_SECS", "1".to_owned()),
    ];
    let client = reqwest::Client::new();
    let mut server = start(port, data.path(), &env).await;
    let secret: Value = client
        .post(format!("{base}/api/v1/webhook/secret"))
        .bearer_auth(USER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = secret["secret"].as_str().unwrap().to_owned();
    let form = Form::new()
        .part("files", Part::bytes(png(16, 12)).file_name("chair.png"))
        .text("callback_url", receiver.url.clone());
    let job: Value = client
        .post(format!("{base}/api/v1/upload"))
        .bearer_auth(USER_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();

    // The job has ended and its delivery is in flight (the receiver holds
    // it): kill -9 before the server hears back.
    receiver.wait_for(1).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let _server = start(port, data.path(), &env).await;
    let got = receiver.wait_for(2).await;
    let hook = &got[1];
    hook.verify(&secret)
        .expect("signed with the same secret after the restart");
    assert_eq!(hook.json()["job_id"], job_id.as_str());
    assert_eq!(
        hook.header("image2model-delivery"),
        got[0].header("image2model-delivery")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d: Value = client
            .get(format!("{base}/api/v1/jobs/{job_id}/webhook"))
            .bearer_auth(USER_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not recorded as delivered: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
