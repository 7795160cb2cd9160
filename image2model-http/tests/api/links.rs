//! Signed, expiring download links: made with the owner's key, served
//! without one, refused once expired, tampered with, or when the job or the
//! owner's key is gone; still rate limited per client IP.

use std::time::Duration;

use image2model_core::domain::{ApiKeyId, ItemId, JobId};
use image2model_core::gltf::ModelFormat;
use image2model_http::links::Link;
use reqwest::multipart::Form;
use serde_json::Value;

use crate::helpers::{
    ADMIN_KEY, OTHER_KEY, TestApp, USER_KEY, error_code, file_part, has_curl, png, spawn_app,
    spawn_app_with,
};

/// Uploads `files` as `key`, waits until the job ends, and returns
/// (job id, item ids) of the succeeded job.
async fn succeeded_job(app: &TestApp, files: usize, key: &str) -> (String, Vec<String>) {
    let mut form = Form::new();
    for i in 0..files {
        form = form.part("files", file_part(&format!("chair {i}.png"), png(12, 8)));
    }
    let resp = app.upload_form(form, Some(key), None).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let job: Value = resp.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let last = app
        .events(&job_id, key)
        .await
        .pop()
        .expect("at least one event");
    assert_eq!(last["status"], "succeeded", "{last}");
    let items = last["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect();
    (job_id, items)
}

/// POST …/link with `query` as `key`.
async fn make_link(
    app: &TestApp,
    job_id: &str,
    item_id: &str,
    query: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(&format!(
        "/api/v1/jobs/{job_id}/items/{item_id}/link{query}"
    )));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("request")
}

/// Makes a link as `key` and returns its 200 body.
async fn link_ok(app: &TestApp, job_id: &str, item_id: &str, query: &str, key: &str) -> Value {
    let resp = make_link(app, job_id, item_id, query, Some(key)).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// GET a link with no `Authorization` header at all.
async fn fetch(app: &TestApp, url: &str) -> reqwest::Response {
    let full = if url.starts_with("http") {
        url.to_owned()
    } else {
        app.url(url)
    };
    app.client.get(full).send().await.expect("request")
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn a_link_downloads_the_glb_without_a_key_exactly_as_the_authenticated_download() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;
    let item_id = &items[0];

    let link = link_ok(&app, &job_id, item_id, "", USER_KEY).await;

    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("/api/v1/links/{job_id}/{item_id}/glb?")),
        "{url}"
    );
    assert!(!url.contains(USER_KEY), "a link never carries the API key");
    assert_eq!(link["format"], "glb");
    let expires_at = chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (expires_at - (unix_now() + 3600)).abs() <= 5,
        "default lifetime is one hour: {expires_at}"
    );
    let authed = app
        .download(
            &format!("/api/v1/jobs/{job_id}/items/{item_id}/model"),
            None,
            USER_KEY,
        )
        .await;
    assert_eq!(authed.status(), 200);
    let resp = fetch(&app, url).await;
    assert_eq!(resp.status(), 200);
    for header in ["content-type", "content-disposition", "content-length"] {
        assert_eq!(resp.headers()[header], authed.headers()[header], "{header}");
    }
    assert_eq!(resp.headers()["content-type"], "model/gltf-binary");
    assert!(resp.headers().get("www-authenticate").is_none());
    let via_link = resp.bytes().await.unwrap();
    let direct = authed.bytes().await.unwrap();
    assert_eq!(via_link, direct);
    assert!(gltf::Gltf::from_slice(&via_link).is_ok());

    // The done-when: a plain `curl` with no key.
    if has_curl() {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-f"])
            .arg(app.url(url))
            .output()
            .await
            .expect("curl runs");
        assert!(out.status.success(), "curl failed: {out:?}");
        assert_eq!(out.stdout, direct.to_vec());
    }
}

#[tokio::test]
async fn obj_and_stl_links_serve_those_formats() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;
    let item_id = &items[0];

    for (format, mime) in [("obj", "model/obj"), ("stl", "model/stl")] {
        let link = link_ok(
            &app,
            &job_id,
            item_id,
            &format!("?format={format}"),
            USER_KEY,
        )
        .await;

        let url = link["url"].as_str().unwrap();
        assert!(url.contains(&format!("/{format}?")), "{url}");
        assert_eq!(link["format"], format);
        let resp = fetch(&app, url).await;
        assert_eq!(resp.status(), 200, "{format}");
        assert_eq!(resp.headers()["content-type"], mime);
        assert!(
            resp.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .contains(&format!("chair 0.{format}")),
            "{format}"
        );
        let via_link = resp.bytes().await.unwrap();
        let direct = app
            .download(
                &format!("/api/v1/jobs/{job_id}/items/{item_id}/model"),
                Some(format),
                USER_KEY,
            )
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(via_link, direct, "{format}");
    }
}

#[tokio::test]
async fn a_link_works_until_its_expiry_and_fails_one_second_after() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;
    // Signed directly: the API's shortest lifetime is 60 s.
    let expires = unix_now() + 1;
    let link = Link {
        job_id: JobId::parse(&job_id).unwrap(),
        item_id: ItemId::parse(&items[0]).unwrap(),
        format: ModelFormat::Glb,
        expires,
        owner: ApiKeyId::bootstrap_user(),
    };
    let path = app.app.state.links.signed_path(&link);

    let before = fetch(&app, &path).await;
    assert_eq!(before.status(), 200, "valid up to its expiry second");

    while unix_now() <= expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = fetch(&app, &path).await;
    assert_eq!(after.status(), 410);
    assert_eq!(error_code(after).await, "link_expired");
}

#[tokio::test]
async fn a_short_lived_link_from_the_api_expires_when_it_says() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;

    let link = link_ok(&app, &job_id, &items[0], "?expires_in_seconds=60", USER_KEY).await;

    let expires_at = chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((expires_at - (unix_now() + 60)).abs() <= 2, "{link}");
    let url = link["url"].as_str().unwrap();
    assert!(
        url.contains(&format!("expires={expires_at}")),
        "the URL carries the same expiry: {url}"
    );
    assert_eq!(fetch(&app, url).await.status(), 200);
}

/// Replaces `from` by `to` once in `url`, asserting it was there.
fn altered(url: &str, from: &str, to: &str) -> String {
    assert!(url.contains(from), "{from} not in {url}");
    url.replacen(from, to, 1)
}

#[tokio::test]
async fn tampered_links_fail_with_link_invalid() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 2, USER_KEY).await;
    let link = link_ok(&app, &job_id, &items[0], "", USER_KEY).await;
    let url = link["url"].as_str().unwrap().to_owned();
    assert_eq!(fetch(&app, &url).await.status(), 200);
    let sig = url.rsplit_once("sig=").unwrap().1.to_owned();
    let mut flipped = sig.clone().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let expires = url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    let later: i64 = expires.parse::<i64>().unwrap() + 3600;

    let tampered = [
        ("signature", altered(&url, &sig, &flipped)),
        // Another genuine, succeeded item of the same job.
        ("item id", altered(&url, &items[0], &items[1])),
        ("format", altered(&url, "/glb?", "/stl?")),
        (
            "expiry",
            altered(
                &url,
                &format!("expires={expires}"),
                &format!("expires={later}"),
            ),
        ),
        (
            "owner",
            altered(&url, "owner=bootstrap-user", "owner=other-user"),
        ),
        ("no signature", altered(&url, &format!("&sig={sig}"), "")),
        ("short signature", altered(&url, &sig, &sig[..32])),
        ("malformed format", altered(&url, "/glb?", "/fbx?")),
        ("malformed item id", altered(&url, &items[0], "not-an-id")),
        (
            "malformed expiry",
            altered(&url, &format!("expires={expires}"), "expires=soon"),
        ),
    ];

    for (what, url) in tampered {
        let resp = fetch(&app, &url).await;
        assert_eq!(resp.status(), 403, "{what}: {url}");
        assert_eq!(error_code(resp).await, "link_invalid", "{what}");
    }
}

#[tokio::test]
async fn links_are_made_only_by_the_owner_of_a_succeeded_item() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;

    let other = make_link(&app, &job_id, &items[0], "", Some(OTHER_KEY)).await;
    assert_eq!(other.status(), 404, "another user's job is not found");
    assert_eq!(error_code(other).await, "not_found");
    // An admin key on the user route sees its own jobs only, as elsewhere.
    let admin = make_link(&app, &job_id, &items[0], "", Some(ADMIN_KEY)).await;
    assert_eq!(admin.status(), 404);
    let anonymous = make_link(&app, &job_id, &items[0], "", None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(error_code(anonymous).await, "unauthorized");
    let missing_item = make_link(
        &app,
        &job_id,
        &ItemId::new().to_string(),
        "",
        Some(USER_KEY),
    )
    .await;
    assert_eq!(missing_item.status(), 404);

    let form = Form::new()
        .part("files", file_part("a.png", png(8, 8)))
        .text("model", "test-hold");
    let held: Value = app
        .upload_form(form, Some(USER_KEY), None)
        .await
        .json()
        .await
        .unwrap();
    let not_ready = make_link(
        &app,
        held["job_id"].as_str().unwrap(),
        held["items"][0]["item_id"].as_str().unwrap(),
        "",
        Some(USER_KEY),
    )
    .await;
    assert_eq!(not_ready.status(), 409);
    assert_eq!(error_code(not_ready).await, "model_not_ready");
}

#[tokio::test]
async fn link_options_are_validated() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;

    for query in [
        "?expires_in_seconds=59",
        "?expires_in_seconds=604801",
        "?expires_in_seconds=-1",
        "?format=fbx",
    ] {
        let resp = make_link(&app, &job_id, &items[0], query, Some(USER_KEY)).await;
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(error_code(resp).await, "invalid_request", "{query}");
    }
    for query in ["?expires_in_seconds=60", "?expires_in_seconds=604800"] {
        let resp = make_link(&app, &job_id, &items[0], query, Some(USER_KEY)).await;
        assert_eq!(resp.status(), 200, "{query}");
    }
}

#[tokio::test]
async fn a_link_stops_working_when_its_job_is_deleted() {
    let app = spawn_app().await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;
    let link = link_ok(&app, &job_id, &items[0], "", USER_KEY).await;
    let url = link["url"].as_str().unwrap();
    assert_eq!(fetch(&app, url).await.status(), 200);

    assert_eq!(app.delete_job(&job_id, USER_KEY).await.status(), 204);

    let resp = fetch(&app, url).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_code(resp).await, "not_found");
}

#[tokio::test]
async fn a_link_stops_working_when_its_owners_key_is_revoked() {
    let app = spawn_app().await;
    let created = app.create_key_ok("link maker", "user").await;
    let secret = created["secret"].as_str().unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    let (job_id, items) = succeeded_job(&app, 1, secret).await;
    let link = link_ok(&app, &job_id, &items[0], "", secret).await;
    let url = link["url"].as_str().unwrap();
    assert!(url.contains(&format!("owner={key_id}")), "{url}");
    assert!(!url.contains(secret), "a link never carries the API key");
    assert_eq!(fetch(&app, url).await.status(), 200);

    assert_eq!(app.revoke_key(key_id, ADMIN_KEY).await.status(), 204);

    let resp = fetch(&app, url).await;
    assert_eq!(resp.status(), 410);
    assert_eq!(error_code(resp).await, "link_revoked");
}

#[tokio::test]
async fn links_are_absolute_under_the_public_base_url() {
    let app = spawn_app_with(|vars| {
        vars.insert(
            "PUBLIC_BASE_URL".into(),
            "https://models.example.test/".into(),
        );
    })
    .await;
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;

    let link = link_ok(&app, &job_id, &items[0], "", USER_KEY).await;

    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!(
            "https://models.example.test/api/v1/links/{job_id}/{}/glb?",
            items[0]
        )),
        "{url}"
    );
    let path = url.strip_prefix("https://models.example.test").unwrap();
    assert_eq!(fetch(&app, path).await.status(), 200);
}

#[tokio::test]
async fn the_link_route_needs_no_key_but_counts_in_the_per_ip_limit() {
    let app = spawn_app_with(|vars| {
        vars.insert("RATE_LIMIT_PER_HOUR".into(), "6".into());
    })
    .await;
    // One general request for the events, one for the link.
    let (job_id, items) = succeeded_job(&app, 1, USER_KEY).await;
    let link = link_ok(&app, &job_id, &items[0], "", USER_KEY).await;
    let url = app.url(link["url"].as_str().unwrap());

    let mut statuses = vec![];
    for i in 0..6 {
        let mut req = app.client.get(&url);
        if i % 2 == 1 {
            // A wrong key changes nothing: the link is the credential.
            req = req.bearer_auth("not-a-key");
        }
        let resp = req.send().await.unwrap();
        if resp.status() == 200 {
            assert!(resp.headers().get("ratelimit-remaining").is_some());
        }
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().get("retry-after").is_some());
            assert_eq!(error_code(resp).await, "rate_limited");
            break;
        }
    }

    assert_eq!(statuses, [200, 200, 200, 200, 429]);
}
