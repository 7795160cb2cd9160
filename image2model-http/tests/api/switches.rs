//! The performance-only paths switched off: `REQUEST_GATE=layered` (the
//! gate's steps as one poem middleware each) and `REQUEST_SPAN=eager` (each
//! request's span made up front). One session, every step of the gate
//! exercised, answers the same as with the defaults.
//!
//! The log lines under `REQUEST_SPAN=eager` are checked by `logs.rs`, and
//! the whole suite runs with both switched off when they are set in the
//! environment (`REQUEST_GATE=layered REQUEST_SPAN=eager cargo test`).

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{ADMIN_KEY, TestApp, USER_KEY, png, spawn_app_with};

const ORIGIN: &str = "https://app.example";

/// Headers whose values are the same from run to run (the rest, such as
/// `date`, `x-request-id` or `ratelimit-reset`, are compared by name).
const STABLE: &[&str] = &[
    "access-control-allow-origin",
    "access-control-expose-headers",
    "cache-control",
    "content-disposition",
    "content-security-policy",
    "content-type",
    "ratelimit-limit",
    "ratelimit-remaining",
    "referrer-policy",
    "www-authenticate",
    "x-content-type-options",
    "x-frame-options",
];

async fn spawn(gate: &str, span: &str) -> TestApp {
    let (gate, span) = (gate.to_owned(), span.to_owned());
    spawn_app_with(move |vars| {
        vars.insert("REQUEST_GATE".into(), gate);
        vars.insert("REQUEST_SPAN".into(), span);
        vars.insert("BACKEND_CORS_ORIGINS".into(), ORIGIN.into());
        vars.insert("ALLOWED_HOSTS".into(), "127.0.0.1".into());
        vars.insert("RATE_LIMIT_PER_HOUR".into(), "20".into());
    })
    .await
}

/// What a client sees of one response, less what differs from run to run.
#[derive(Debug, PartialEq)]
struct Seen {
    what: &'static str,
    status: u16,
    headers: Vec<(String, Option<String>)>,
    /// The envelope's code, for an error.
    code: Option<String>,
}

/// A header value with its comma-separated items sorted (poem's CORS lists
/// the exposed headers in no fixed order).
fn list_in_order(value: &str) -> String {
    let mut items: Vec<&str> = value.split(',').map(str::trim).collect();
    items.sort_unstable();
    items.join(", ")
}

async fn seen(what: &'static str, resp: reqwest::Response) -> Seen {
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, Option<String>)> = resp
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| {
            let name = name.as_str().to_owned();
            let value = STABLE
                .contains(&name.as_str())
                .then(|| list_in_order(value.to_str().unwrap_or_default()));
            (name, value)
        })
        .collect();
    headers.sort();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(request_id.is_some(), "{what}: no x-request-id");
    let code = if status >= 400 {
        let body: Value = resp.json().await.expect("an error body is JSON");
        assert_eq!(
            body["error"]["request_id"].as_str(),
            request_id.as_deref(),
            "{what}: {body}"
        );
        body["error"]["code"].as_str().map(ToOwned::to_owned)
    } else {
        None
    };
    Seen {
        what,
        status,
        headers,
        code,
    }
}

/// Every step of the gate, in one session: request ids, security headers,
/// the host check, auth (401, 403), the envelope (404, 405), the body
/// limit (413), CORS, an upload followed to its end and downloaded, the
/// OpenAPI document, and the rate limit until it refuses (429).
async fn session(app: &TestApp) -> Vec<Seen> {
    let c = &app.client;
    let first = [
        ("health", app.get("/health", None).await),
        ("no key", app.get("/api/v1/jobs", None).await),
        (
            "wrong key",
            app.get("/api/v1/jobs", Some("wrong-key")).await,
        ),
        ("user key on admin", app.admin_jobs(USER_KEY).await),
        ("no route", app.get("/api/v1/nope", Some(USER_KEY)).await),
        (
            "wrong method",
            c.put(app.url("/api/v1/jobs"))
                .bearer_auth(USER_KEY)
                .send()
                .await
                .unwrap(),
        ),
        (
            "body over the bound",
            c.post(app.url("/api/v1/admin/cleanup"))
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/json")
                .body(vec![b' '; 70 * 1024])
                .send()
                .await
                .unwrap(),
        ),
        (
            "unknown host",
            c.get(app.url("/health"))
                .header("host", "evil.example")
                .send()
                .await
                .unwrap(),
        ),
    ];
    let mut out = Vec::new();
    for (what, resp) in first {
        out.push(seen(what, resp).await);
    }
    for (what, origin) in [
        ("preflight, listed origin", ORIGIN),
        ("preflight, other origin", "https://evil.example"),
    ] {
        let resp = c
            .request(Method::OPTIONS, app.url("/api/v1/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        out.push(seen(what, resp).await);
    }
    out.push(
        seen(
            "listed origin, echoed request id",
            c.get(app.url("/api/v1/jobs"))
                .bearer_auth(USER_KEY)
                .header("origin", ORIGIN)
                .header("x-request-id", "trace-0001")
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let job = app.upload_ok(vec![("chair.png", png(16, 16))]).await;
    let ended = app.wait_for_end(job["job_id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let model_url = ended["items"][0]["model_url"].as_str().unwrap();
    out.push(seen("download", app.download(model_url, None, USER_KEY).await).await);
    out.push(seen("openapi", app.get("/api/v1/openapi.json", None).await).await);
    out.push(seen("page", app.get("/", None).await).await);
    for _ in 0..20 {
        let resp = app.list_jobs("", USER_KEY).await;
        if resp.status() == 429 {
            out.push(seen("rate limited", resp).await);
            break;
        }
    }
    out
}

#[tokio::test]
async fn the_layered_gate_and_eager_spans_answer_as_the_defaults_do() {
    let defaults = spawn("merged", "lazy").await;
    let switched_off = spawn("layered", "eager").await;

    let expected = session(&defaults).await;
    let got = session(&switched_off).await;

    let statuses: Vec<(&str, u16)> = got.iter().map(|s| (s.what, s.status)).collect();
    assert_eq!(
        statuses,
        [
            ("health", 200),
            ("no key", 401),
            ("wrong key", 401),
            ("user key on admin", 403),
            ("no route", 404),
            ("wrong method", 405),
            ("body over the bound", 413),
            ("unknown host", 400),
            ("preflight, listed origin", 200),
            ("preflight, other origin", 403),
            ("listed origin, echoed request id", 200),
            ("download", 200),
            ("openapi", 200),
            ("page", 200),
            ("rate limited", 429),
        ]
    );
    for (want, got) in expected.iter().zip(&got) {
        assert_eq!(want, got);
    }
    assert_eq!(expected.len(), got.len());
}

#[tokio::test]
async fn the_layered_gate_audits_refusals_and_echoes_request_ids() {
    let app = spawn("layered", "eager").await;

    let echoed = app
        .client
        .get(app.url("/api/v1/jobs"))
        .bearer_auth(USER_KEY)
        .header("x-request-id", "trace-0002")
        .send()
        .await
        .unwrap();
    let session = session(&app).await;

    assert_eq!(echoed.headers()["x-request-id"], "trace-0002");
    assert_eq!(session.last().map(|s| s.status), Some(429));
    let events = app.app.state.audit_log.recent(100, None).await.unwrap();
    let mut kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds, ["auth_failed", "forbidden", "rate_limited"]);
}
