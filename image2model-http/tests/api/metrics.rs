//! `METRICS_ADDR`: Prometheus metrics of uploads and items, on their own port.

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::helpers::{USER_KEY, png};
use crate::process::{free_port, start};

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_uploads_and_finished_items() {
    let data = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let server = start(
        port,
        data.path(),
        &[("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))],
    )
    .await;
    let client = reqwest::Client::new();

    let upload = |bytes: Vec<u8>| {
        let form = Form::new().part("files", Part::bytes(bytes).file_name("x.png"));
        client
            .post(format!("{}/api/v1/upload", server.base))
            .bearer_auth(USER_KEY)
            .multipart(form)
            .send()
    };
    // A request without a key: an authentication failure.
    let anonymous = client
        .get(format!("{}/api/v1/jobs", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let job: Value = upload(png(20, 10)).await.unwrap().json().await.unwrap();
    assert_eq!(
        upload(b"not an image at all".to_vec())
            .await
            .unwrap()
            .status(),
        415
    );
    let job_url = format!(
        "{}/api/v1/jobs/{}",
        server.base,
        job["job_id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = client
            .get(&job_url)
            .bearer_auth(USER_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the job did not succeed: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        value_of(&text, r#"image2model_uploads_total{outcome="accepted"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            r#"image2model_uploads_total{outcome="unsupported_type"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            r#"image2model_items_finished_total{outcome="succeeded",code=""}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value_of(&text, "image2model_items_claimed_total"),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("image2model_item_seconds_bucket"), "{text}");
    // Requests by route template, method and status, with their latency.
    let requests = |route: &str, method: &str, status: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("image2model_http_requests_total{")
                    && l.contains(&format!(r#"route="{route}""#))
                    && l.contains(&format!(r#"method="{method}""#))
                    && l.contains(&format!(r#"status="{status}""#))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(requests("/api/v1/upload", "POST", "202"), 1.0, "{text}");
    assert_eq!(requests("/api/v1/upload", "POST", "415"), 1.0, "{text}");
    assert_eq!(requests("/api/v1/jobs", "GET", "401"), 1.0, "{text}");
    assert!(
        requests("/api/v1/jobs/{job_id}", "GET", "200") >= 1.0,
        "{text}"
    );
    assert!(
        text.contains(r#"image2model_http_request_seconds_bucket{route="/api/v1/upload""#),
        "{text}"
    );
    assert_eq!(
        value_of(
            &text,
            r#"image2model_auth_failures_total{reason="missing_credentials"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // The runtime's alive tasks (the soak watches them for leaks): at least
    // the gauge task itself and the server's accept loop.
    let tasks = value_of(&text, "image2model_runtime_alive_tasks").expect("alive tasks");
    assert!((2.0..10_000.0).contains(&tasks), "{text}");
    // Disk use, for the disk alert.
    let total = value_of(&text, r#"image2model_disk_bytes{state="total"}"#).expect("disk total");
    let free = value_of(&text, r#"image2model_disk_bytes{state="free"}"#).expect("disk free");
    assert!(total > 0.0 && free <= total, "{text}");
    // The API port does not serve metrics.
    let api = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
}
