//! The web page in a real browser: Debian's Chromium, driven through
//! chromedriver, against the real `image2model` binary on its default rate
//! limits, with the fake FAL on real sockets. Skipped (saying so) when
//! Chromium is missing, except in CI (`CI=true`), where that fails.
//!
//! See docs/WEB.md ("The browser suite").

mod harness;
mod webdriver;

use std::time::{Duration, Instant};

use image2model_core::testing::fake_fal::{
    FakeFalConfig, FakeModel, Scenario, texture_png, textured_glb,
};
use serde_json::json;

use harness::{KEY, MAX_FILE_BYTES, MAX_FILES, Stack, describe};

/// A fake FAL whose requests stay queued, then run, for these many
/// milliseconds. It reports progress once a second: the server's progress
/// creeps up with each report and the worker writes it at most every 2 s
/// (and 10 points), so a run of 7 s or more shows several values.
fn slow_fal(queue: u64, progress: u64) -> FakeFalConfig {
    FakeFalConfig {
        queue_time: Duration::from_millis(queue),
        progress_time: Duration::from_millis(progress),
        stream_progress_interval: Duration::from_secs(1),
        ..FakeFalConfig::default()
    }
}

/// Drops `files` (name, bytes) on the drop zone, as a drag from the desktop
/// does: a `drop` event whose DataTransfer carries the files.
async fn drop_files(stack: &Stack, files: &[(&str, Vec<u8>, &str)]) {
    use base64::Engine as _;
    let files: Vec<_> = files
        .iter()
        .map(|(name, bytes, mime)| {
            json!([
                name,
                base64::engine::general_purpose::STANDARD.encode(bytes),
                mime
            ])
        })
        .collect();
    stack
        .browser
        .exec(
            "const dt = new DataTransfer(); \
             for (const [name, b64, type] of arguments[0]) { \
               const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)); \
               dt.items.add(new File([bytes], name, { type })); \
             } \
             const zone = document.getElementById('drop-zone'); \
             zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true })); \
             zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));",
            json!([files]),
        )
        .await;
}

/// The entries of a zip file: (name, bytes), stored or deflated.
fn unzip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |at: usize| u16::from_le_bytes([zip[at], zip[at + 1]]) as usize;
    let u32_at =
        |at: usize| u32::from_le_bytes([zip[at], zip[at + 1], zip[at + 2], zip[at + 3]]) as usize;
    // The end of central directory record, then each central entry (the
    // local headers' sizes may be deferred to a data descriptor).
    let eocd = (0..=zip.len() - 22)
        .rev()
        .find(|&i| zip[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("a zip end record");
    let (count, mut at) = (u16_at(eocd + 10), u32_at(eocd + 16));
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(zip[at..at + 4], [0x50, 0x4b, 0x01, 0x02], "central entry");
        let method = u16_at(at + 10);
        let compressed = u32_at(at + 20);
        let name_len = u16_at(at + 28);
        let extra_len = u16_at(at + 30);
        let comment_len = u16_at(at + 32);
        let local = u32_at(at + 42);
        let name = String::from_utf8(zip[at + 46..at + 46 + name_len].to_vec()).unwrap();
        let data_at = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        let raw = &zip[data_at..data_at + compressed];
        let bytes = match method {
            0 => raw.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec(raw).expect("deflate data"),
            m => panic!("zip method {m}"),
        };
        out.push((name, bytes));
        at += 46 + name_len + extra_len + comment_len;
    }
    out
}

/// The whole flow as a person does it: key, checks before upload, options,
/// drag and drop, live progress, the textured preview, the three downloads
/// (each model fetched once), cancel and delete; and nothing left behind:
/// no key in storage, cookies or URLs, no console error, no CSP violation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_converts_photos_previews_the_textured_model_and_downloads_it() {
    let Some(stack) = Stack::start(
        "browser: the whole flow",
        slow_fal(300, 7000),
        &[],
        (1280, 1100),
    )
    .await
    else {
        return;
    };
    let b = &stack.browser;

    // Before a key: nothing to send, nothing sent.
    assert_eq!(
        b.exec(
            "return document.getElementById('upload-button').disabled",
            json!([])
        )
        .await,
        json!(true)
    );
    assert!(stack.api_requests().await.is_empty());

    // As on plain HTTP to a LAN address: no crypto.randomUUID.
    assert_eq!(
        b.exec("return typeof crypto.randomUUID", json!([])).await,
        "undefined"
    );
    stack.enter_key(KEY).await;

    // Checked in the browser against the policy, before anything is sent.
    let mut too_big = image2model_core::testing::images::png(16, 16);
    too_big.resize(MAX_FILE_BYTES + 1, 0);
    let picked = vec![
        stack.photo("notes.png", b"these are notes, not a picture"),
        stack.photo("huge.png", &too_big),
        stack.photo("fine.png", &image2model_core::testing::images::png(40, 40)),
    ];
    stack.pick(&picked).await;
    let (status, enabled) = stack.checked(3).await;
    assert!(!enabled, "Convert is enabled for a bad selection");
    assert!(
        status.contains("notes.png is not a PNG, JPEG or WebP image"),
        "{status}"
    );
    let verdicts = stack.text("#selection").await;
    assert!(
        verdicts.contains("the limit is 0.29 MiB per photo"),
        "huge.png's verdict: {verdicts}"
    );
    let six = stack.photos("many", MAX_FILES + 1);
    stack.pick(&six).await;
    let (status, enabled) = stack.checked(MAX_FILES + 1).await;
    assert!(!enabled);
    assert!(
        status.contains(&format!(
            "{} photos chosen; at most {MAX_FILES}",
            MAX_FILES + 1
        )),
        "{status}"
    );
    let uploads = |reqs: &[webdriver::Request]| {
        reqs.iter()
            .filter(|r| r.method == "POST" && r.path() == "/api/v1/upload")
            .count()
    };
    assert_eq!(
        uploads(&stack.api_requests().await),
        0,
        "a bad selection was sent"
    );

    // Options: HD texture and a face limit; photos dropped on the page.
    b.exec(
        "const t = document.getElementById('texture'); t.value = 'hd'; t.dispatchEvent(new Event('change'));",
        json!([]),
    )
    .await;
    let face = b.find("#face-limit").await;
    b.send_keys(&face, "1000").await;
    drop_files(
        &stack,
        &[
            (
                "chair.png",
                image2model_core::testing::images::png(64, 64),
                "image/png",
            ),
            (
                "lamp.jpg",
                image2model_core::testing::images::jpeg(64, 48),
                "image/jpeg",
            ),
        ],
    )
    .await;
    stack.wait_ready(2).await;
    let job = stack.convert().await;

    // Live progress: the card moves through intermediate values while the
    // fake FAL works, never backwards, then ends.
    let mut seen: Vec<i64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = loop {
        let v = b
            .exec(
                "const c = document.querySelector('[data-job=\"' + arguments[0] + '\"]'); \
                 return c ? [c.dataset.status, c.querySelector('.job-progress').value] : null",
                json!([job]),
            )
            .await;
        if let Some(a) = v.as_array() {
            let status = a[0].as_str().unwrap().to_owned();
            if status == "running" {
                let p = a[1].as_i64().unwrap();
                if seen.last() != Some(&p) {
                    seen.push(p);
                }
            } else if status != "queued" {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the job did not end; {}",
            b.page_text().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(end, "succeeded", "{}", b.page_text().await);
    let intermediate: Vec<i64> = seen
        .iter()
        .copied()
        .filter(|p| (1..100).contains(p))
        .collect();
    assert!(
        intermediate.len() >= 2,
        "no live progress on the card: saw {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {seen:?}"
    );
    let submit = stack.fake.last_submit().expect("a FAL submit");
    assert_eq!(submit.body["texture"], "HD", "{}", submit.body);
    assert_eq!(submit.body["face_limit"], 1000, "{}", submit.body);

    // The textured preview.
    let items = stack.item_ids(&job).await;
    assert_eq!(items.len(), 2);
    stack.view(&items[0]).await;
    stack.assert_textured_preview().await;
    stack.screenshot_if_asked("page.png").await;

    // The downloads: the bytes that arrive.
    stack.click_item(&items[0], "[data-format=glb]").await;
    let glb = b.downloaded("chair.glb", Duration::from_secs(10)).await;
    assert_eq!(glb, textured_glb(), "the GLB download is not the model");
    stack.click_item(&items[0], "[data-format=stl]").await;
    let stl = b.downloaded("chair.stl", Duration::from_secs(10)).await;
    let triangles = u32::from_le_bytes(stl[80..84].try_into().unwrap()) as usize;
    assert_eq!(triangles, 12, "the cube's triangles in the STL");
    assert_eq!(stl.len(), 84 + 50 * triangles, "a binary STL");
    stack
        .click_item(&items[0], "[data-format=\"obj.zip\"]")
        .await;
    let zip = b.downloaded("chair.zip", Duration::from_secs(10)).await;
    let entries = unzip(&zip);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let find = |ext: &str| {
        entries
            .iter()
            .find(|(n, _)| n.ends_with(ext))
            .unwrap_or_else(|| panic!("no {ext} in the OBJ zip: {names:?}"))
    };
    let obj = String::from_utf8(find(".obj").1.clone()).unwrap();
    let mtl = String::from_utf8(find(".mtl").1.clone()).unwrap();
    let (png_name, png) = find(".png");
    assert!(obj.contains("mtllib ") && obj.contains("usemtl "), "{obj}");
    assert!(obj.lines().filter(|l| l.starts_with("f ")).count() >= 12);
    assert!(
        mtl.lines()
            .any(|l| l.trim() == format!("map_Kd {png_name}")),
        "the material does not use the texture: {mtl}"
    );
    assert_eq!(png, &texture_png(), "the texture in the OBJ zip");

    // Each file fetched once: the GLB served both the preview and its
    // download; nothing polled.
    let reqs = stack.api_requests().await;
    let model_url = format!("/api/v1/jobs/{job}/items/{}/model", items[0]);
    for (path, what) in [
        (model_url.clone(), "the GLB"),
        (format!("{model_url}?format=obj.zip"), "the OBJ zip"),
        (format!("{model_url}?format=stl"), "the STL"),
        ("/api/v1/upload".to_owned(), "policy + upload"),
    ] {
        let n = reqs.iter().filter(|r| r.path() == path).count();
        let want = if what == "policy + upload" { 2 } else { 1 };
        assert_eq!(n, want, "{what} requested {n} times:\n{}", describe(&reqs));
    }
    assert!(
        !reqs
            .iter()
            .any(|r| r.method == "GET" && r.path() == format!("/api/v1/jobs/{job}")),
        "the page polled the job:\n{}",
        describe(&reqs)
    );

    // Cancel a running job, then delete it (the delete asks once more).
    stack
        .fake
        .set_latency(Duration::from_millis(200), Duration::from_secs(60));
    let slow = stack.photos("slow", 1);
    let long_job = stack.upload(&slow).await;
    let card = format!("[data-job=\"{long_job}\"]");
    b.wait_for(
        "the long job to run",
        Duration::from_secs(20),
        "const c = document.querySelector(arguments[0]); return c && c.dataset.status === 'running'",
        json!([card]),
    )
    .await;
    b.click_css(&format!("{card} .job-head button")).await;
    b.wait_for(
        "the job to be cancelled",
        Duration::from_secs(20),
        "const c = document.querySelector(arguments[0]); return c && c.dataset.status === 'cancelled'",
        json!([card]),
    )
    .await;
    b.click_css(&format!("{card} .job-head button")).await;
    assert_eq!(
        stack.text(&format!("{card} .job-head button")).await,
        "Delete for good?"
    );
    b.click_css(&format!("{card} .job-head button")).await;
    b.wait_for(
        "the card to go",
        Duration::from_secs(10),
        "return document.querySelector(arguments[0]) === null",
        json!([card]),
    )
    .await;
    let reqs = stack.api_requests().await;
    let deletes: Vec<u16> = reqs
        .iter()
        .filter(|r| r.method == "DELETE" && r.path() == format!("/api/v1/jobs/{long_job}"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        deletes,
        [200, 204],
        "cancel then delete:\n{}",
        describe(&reqs)
    );

    // A failed item says why, in words.
    stack
        .fake
        .set_latency(Duration::from_millis(50), Duration::from_millis(100));
    stack.fake.set_scenario(Scenario::ContentPolicy);
    let refused = stack.photos("refused", 1);
    let failed_job = stack.upload(&refused).await;
    let end = stack
        .wait_job_end(&failed_job, Duration::from_secs(20))
        .await;
    assert_eq!(end, "failed");
    let why = stack
        .text(&format!("[data-job=\"{failed_job}\"] .item .error-text"))
        .await;
    assert!(
        why.split_whitespace().count() >= 3 && !why.contains("content_policy_violation"),
        "the failure is not told in words: {why:?}"
    );

    stack.assert_clean(KEY).await;
}

/// A model the preview cannot draw (one that needs Draco mesh compression,
/// as some FAL models' files do) gets a clear message in words, and the
/// canvas does not go on showing the model viewed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_preview_cannot_draw_gets_a_message_not_a_stale_canvas() {
    let Some(stack) = Stack::start(
        "browser: a model the preview cannot draw",
        slow_fal(20, 50),
        &[],
        (1280, 1000),
    )
    .await
    else {
        return;
    };
    stack.enter_key(KEY).await;
    // First a model it draws, textured.
    let good = stack.upload(&stack.photos("good", 1)).await;
    assert_eq!(
        stack.wait_job_end(&good, Duration::from_secs(30)).await,
        "succeeded"
    );
    let good_item = stack.item_ids(&good).await.remove(0);
    stack.view(&good_item).await;
    stack.assert_textured_preview().await;

    // Then one it cannot: the server keeps it (a valid GLB container), the
    // viewer refuses it.
    stack.fake.set_model(FakeModel::DracoRequired);
    let bad = stack.upload(&stack.photos("bad", 1)).await;
    assert_eq!(
        stack.wait_job_end(&bad, Duration::from_secs(30)).await,
        "succeeded"
    );
    let bad_item = stack.item_ids(&bad).await.remove(0);
    stack.click_item(&bad_item, "button.view").await;
    let state = stack
        .browser
        .wait_for(
            "the viewer to give up on the model",
            Duration::from_secs(20),
            "const c = document.getElementById('viewer'); \
             const row = document.querySelector('.item.viewing'); \
             if (!row || row.dataset.item !== arguments[0]) return null; \
             const s = c.dataset.viewerState; \
             const m = document.getElementById('viewer-message'); \
             const loading = !m.hidden && m.textContent.startsWith('Loading'); \
             return !loading && (s === 'ready' || s === 'error') ? s : null",
            json!([bad_item]),
        )
        .await;
    let message = stack.text("#viewer-message").await;
    assert_eq!(
        state, "error",
        "the viewer drew a Draco-only model: {message}"
    );
    assert!(
        message.contains("Draco") && message.split_whitespace().count() >= 5,
        "the message does not say why in words: {message:?}"
    );
    let [red, green, blue, yellow, all] = stack.texture_pixels().await;
    assert_eq!(
        red + green + blue + yellow,
        0,
        "the canvas still shows the previous model: of {all} pixels, {red} red, \
         {green} green, {blue} blue, {yellow} yellow"
    );
    // Its files still download: only the preview is refused.
    stack.click_item(&bad_item, "[data-format=glb]").await;
    let glb = stack
        .browser
        .downloaded("bad-0.glb", Duration::from_secs(10))
        .await;
    assert_eq!(glb, FakeModel::DracoRequired.glb());
    stack.assert_clean(KEY).await;
}

/// On the guide's default limits (100 requests an hour, 10 uploads a
/// minute), one person runs ten five-image jobs in a row (upload, follow,
/// view each model, download each GLB) without a single 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_five_image_jobs_in_a_row_meet_no_rate_limit() {
    let Some(stack) = Stack::start(
        "browser: ten five-image jobs",
        slow_fal(100, 300),
        &[],
        (1280, 1000),
    )
    .await
    else {
        return;
    };
    let b = &stack.browser;
    stack.enter_key(KEY).await;
    for j in 0..10 {
        let photos = stack.photos(&format!("job{j}"), 5);
        let job = stack.upload(&photos).await;
        let end = stack.wait_job_end(&job, Duration::from_secs(60)).await;
        assert_eq!(end, "succeeded", "job {j}: {}", b.page_text().await);
        let items = stack.item_ids(&job).await;
        assert_eq!(items.len(), 5);
        for (i, item) in items.iter().enumerate() {
            stack.view(item).await;
            if i == 0 {
                stack.assert_textured_preview().await;
            }
            stack.click_item(item, "[data-format=glb]").await;
        }
        for i in 0..5 {
            let glb = b
                .downloaded(&format!("job{j}-{i}.glb"), Duration::from_secs(10))
                .await;
            assert_eq!(glb, textured_glb(), "job {j} item {i}");
        }
    }
    let reqs = stack.api_requests().await;
    let limited: Vec<_> = reqs.iter().filter(|r| r.status == 429).collect();
    assert!(limited.is_empty(), "429s:\n{}", describe(&reqs));
    let unanswered: Vec<_> = reqs.iter().filter(|r| r.status == 0).collect();
    assert!(
        unanswered.is_empty(),
        "requests without an answer:\n{}",
        describe(&reqs)
    );
    // Each model was fetched once for its preview and its download, and
    // one event stream followed all ten jobs.
    let models = reqs.iter().filter(|r| r.path().ends_with("/model")).count();
    assert_eq!(models, 50, "{}", describe(&reqs));
    let streams = reqs.iter().filter(|r| r.path() == "/api/v1/events").count();
    assert_eq!(streams, 1, "{}", describe(&reqs));
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "ten five-image jobs: {} API requests by the page\n",
            reqs.len()
        ),
    );
    stack.assert_clean(KEY).await;
}

/// More than six jobs run at once on one page over HTTP/1.1 (a browser
/// opens at most six connections to a host): every card shows live
/// progress, because the page follows them all on one event stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_six_running_jobs_all_show_live_progress_over_http1() {
    const JOBS: usize = 8;
    let Some(stack) = Stack::start(
        "browser: more than six running jobs",
        slow_fal(300, 10_000),
        &[("WORKER_CONCURRENCY", "8")],
        (1280, 1000),
    )
    .await
    else {
        return;
    };
    let b = &stack.browser;
    stack.enter_key(KEY).await;
    let mut jobs = Vec::new();
    for j in 0..JOBS {
        let photos = stack.photos(&format!("run{j}"), 1);
        jobs.push(stack.upload(&photos).await);
    }

    // Watch every card: the progress values (between 0 and 100 %) each
    // shows while running, and the most cards seen running at one moment.
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); JOBS];
    let mut most_at_once = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = b
            .exec(
                "return arguments[0].map((id) => { \
                   const c = document.querySelector('[data-job=\"' + id + '\"]'); \
                   return c ? [c.dataset.status, c.querySelector('.job-progress').value] : ['missing', 0]; })",
                json!([jobs]),
            )
            .await;
        let states = v.as_array().unwrap();
        let mut running = 0;
        for (j, s) in states.iter().enumerate() {
            let p = s[1].as_i64().unwrap();
            if s[0] == "running" {
                running += 1;
                if (1..100).contains(&p) && seen[j].last() != Some(&p) {
                    seen[j].push(p);
                }
            }
        }
        most_at_once = most_at_once.max(running);
        if states.iter().all(|s| s[0] == "succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every job ended: {states:?}; {}",
            b.page_text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (j, values) in seen.iter().enumerate() {
        assert!(
            values.len() >= 2,
            "job {j} showed no live progress: {values:?} (all: {seen:?})"
        );
    }
    assert!(
        most_at_once > 6,
        "at most {most_at_once} jobs were seen running at once"
    );

    // One event stream, over HTTP/1.1, and no polling.
    let reqs = stack.api_requests().await;
    let streams = reqs.iter().filter(|r| r.path() == "/api/v1/events").count();
    assert_eq!(streams, 1, "{}", describe(&reqs));
    assert!(
        reqs.iter().all(|r| r.protocol == "http/1.1"),
        "{:?}",
        reqs.iter().map(|r| &r.protocol).collect::<Vec<_>>()
    );
    let polls = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path().starts_with("/api/v1/jobs/"))
        .count();
    assert_eq!(polls, 0, "{}", describe(&reqs));
    stack.assert_clean(KEY).await;
}

/// The job history goes back past the newest page, and the page fits a
/// phone's width (360 px) with a full page of cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_history_pages_back_and_the_page_fits_a_phone() {
    let Some(stack) = Stack::start(
        "browser: history and phone width",
        slow_fal(20, 50),
        &[],
        (360, 740),
    )
    .await
    else {
        return;
    };
    let b = &stack.browser;
    // A phone: 360 CSS pixels wide, touch.
    b.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    b.cdp(
        "Emulation.setTouchEmulationEnabled",
        json!({"enabled": true}),
    )
    .await;

    // 22 earlier jobs of this key, made through the API from other
    // loopback addresses (each has its own rate-limit buckets).
    let mut made = Vec::new();
    for n in 0..22u8 {
        let from: std::net::IpAddr = [127, 0, 0, 2 + n / 8].into();
        let client = reqwest::Client::builder()
            .local_address(from)
            .no_proxy()
            .build()
            .unwrap();
        let form = reqwest::multipart::Form::new().part(
            "files",
            reqwest::multipart::Part::bytes(image2model_core::testing::images::png(32, 32))
                .file_name(format!("old-{n}.png")),
        );
        let resp = client
            .post(format!("{}/api/v1/upload", stack.server.base))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        let body: serde_json::Value = resp.json().await.unwrap();
        made.push(body["job_id"].as_str().unwrap().to_owned());
    }

    stack.enter_key(KEY).await;
    let shown = b
        .wait_for(
            "the first page of jobs",
            Duration::from_secs(10),
            "const n = document.querySelectorAll('.job').length; return n ? n : null",
            json!([]),
        )
        .await;
    assert_eq!(shown, 20, "the first page");
    assert!(
        stack.text("#older").await.contains("older"),
        "no way to older jobs"
    );
    b.click_css("#older").await;
    b.wait_for(
        "the older jobs",
        Duration::from_secs(10),
        "return document.querySelectorAll('.job').length === 22 && document.getElementById('older').hidden",
        json!([]),
    )
    .await;
    let order = harness::strings(
        &b.exec(
            "return Array.from(document.querySelectorAll('.job')).map((c) => c.dataset.job)",
            json!([]),
        )
        .await,
    );
    let mut newest_first = made.clone();
    newest_first.reverse();
    assert_eq!(order, newest_first, "every job, newest first");

    // The preview works at this width too (once the newest job has ended).
    let newest = &made[made.len() - 1];
    stack.wait_job_end(newest, Duration::from_secs(30)).await;
    let first = stack.item_ids(newest).await;
    stack.view(&first[0]).await;
    stack.assert_textured_preview().await;

    // Nothing wider than the phone's screen.
    let widths = b
        .exec(
            "return [innerWidth, document.documentElement.scrollWidth, \
             Math.max(...Array.from(document.querySelectorAll('main *')).map((e) => e.getBoundingClientRect().right))]",
            json!([]),
        )
        .await;
    assert_eq!(widths[0], 360, "the window is not a phone's width");
    assert!(
        widths[1].as_f64().unwrap() <= 360.0 && widths[2].as_f64().unwrap() <= 360.5,
        "the page is wider than the phone: {widths}"
    );
    stack.assert_clean(KEY).await;
}

/// The API restarts (SIGTERM, then a new process) while a job runs (its worker, a process of its own,
/// goes on and ends the job meanwhile): the page's stream is cut, the page
/// says it is reconnecting, reopens the stream with backoff once the API is
/// back, and learns the job's end from one page of the job list, since the
/// reopened stream no longer follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_its_stream_and_settles_jobs_that_ended_meanwhile() {
    let Some(mut stack) = Stack::start_with(
        "browser: the stream reconnects",
        slow_fal(200, 3000),
        &[],
        (1280, 1000),
        true,
    )
    .await
    else {
        return;
    };
    stack.enter_key(KEY).await;
    let photos = stack.photos("cut", 1);
    let job = stack.upload(&photos).await;
    let card = format!("[data-job=\"{job}\"]");
    stack
        .browser
        .wait_for(
            "the job to run",
            Duration::from_secs(20),
            "const c = document.querySelector(arguments[0]); return c && c.dataset.status === 'running'",
            json!([card]),
        )
        .await;

    // The API goes down; the worker ends the job meanwhile (the fake FAL
    // has served its result, and the worker then stores it).
    stack.server.stop().await;
    stack
        .browser
        .wait_for(
            "the page to say it reconnects",
            Duration::from_secs(10),
            "return document.getElementById('live').textContent.startsWith('reconnecting')",
            json!([]),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.fake.results() == 0 {
        assert!(
            Instant::now() < deadline,
            "the worker did not finish: {} submits, {} status streams, {} polls, {} results",
            stack.fake.submits(),
            stack.fake.status_streams(),
            stack.fake.status_polls(),
            stack.fake.results()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack
            .browser
            .exec(
                "return document.querySelector(arguments[0]).dataset.status",
                json!([card])
            )
            .await,
        "running",
        "the page heard of the end with the API down"
    );

    stack.server.start_again().await;
    let end = stack.wait_job_end(&job, Duration::from_secs(60)).await;
    assert_eq!(end, "succeeded", "{}", stack.browser.page_text().await);
    stack
        .browser
        .wait_for(
            "the stream to be back",
            Duration::from_secs(10),
            "return document.getElementById('live').textContent.includes('live')",
            json!([]),
        )
        .await;

    let reqs = stack.api_requests().await;
    let streams: Vec<u16> = reqs
        .iter()
        .filter(|r| r.path() == "/api/v1/events")
        .map(|r| r.status)
        .collect();
    assert!(
        streams.len() >= 2 && streams.last() == Some(&200),
        "the stream was not reopened: {streams:?}"
    );
    let settles = reqs
        .iter()
        .filter(|r| r.path() == "/api/v1/jobs?limit=100")
        .count();
    assert_eq!(settles, 1, "{}", describe(&reqs));
    // Reopening while the API is down fails, and the browser says so.
    stack
        .assert_clean_but(
            KEY,
            &["/api/v1/events - Failed to load resource: net::ERR_"],
        )
        .await;
}
