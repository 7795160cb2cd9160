//! `/api/v1/admin/keys`: create, list, revoke; created keys authenticate,
//! carry their role and own their jobs; a secret is shown once only.

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, file_part, png, spawn_app};

/// The listed key with this id.
fn listed<'a>(list: &'a Value, key_id: &str) -> &'a Value {
    list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .unwrap_or_else(|| panic!("{key_id} is not listed in {list}"))
}

#[tokio::test]
async fn a_created_key_shows_its_secret_once_and_is_listed_without_it() {
    let app = spawn_app().await;

    let resp = app.create_key("ci runner", "user", ADMIN_KEY).await;

    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap();
    let prefix = created["prefix"].as_str().unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    assert_eq!(created["name"], "ci runner");
    assert_eq!(created["role"], "user");
    assert!(secret.starts_with(prefix) && secret.len() > prefix.len() + 16);
    assert!(created["created_at"].as_str().is_some());
    let list_text = app.list_keys(ADMIN_KEY).await.text().await.unwrap();
    assert!(!list_text.contains(secret), "the secret is never listed");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    let entry = listed(&list, key_id);
    assert_eq!(entry["prefix"], prefix);
    assert_eq!(entry["bootstrap"], false);
    assert!(entry.get("secret").is_none());
    assert!(entry["revoked_at"].is_null() && entry["last_used_at"].is_null());
}

#[tokio::test]
async fn bootstrap_keys_are_listed_as_such_without_any_of_their_characters() {
    let app = spawn_app().await;

    let text = app.list_keys(ADMIN_KEY).await.text().await.unwrap();

    assert!(!text.contains(USER_KEY) && !text.contains(ADMIN_KEY));
    assert!(!text.contains(&USER_KEY[..8]) && !text.contains(&ADMIN_KEY[..8]));
    let list: Value = serde_json::from_str(&text).unwrap();
    for (id, role) in [("bootstrap-user", "user"), ("bootstrap-admin", "admin")] {
        let entry = listed(&list, id);
        assert_eq!(entry["bootstrap"], true);
        assert_eq!(entry["role"], role);
        assert!(entry["prefix"].is_null());
    }
}

#[tokio::test]
async fn a_created_key_authenticates_and_its_last_use_is_recorded() {
    let app = spawn_app().await;
    let created = app.create_key_ok("laptop", "user").await;
    let secret = created["secret"].as_str().unwrap();

    let resp = app.upload_policy(Some(secret)).await;

    assert_eq!(resp.status(), 200);
    let list: Value = app.list_keys(ADMIN_KEY).await.json().await.unwrap();
    let entry = listed(&list, created["key_id"].as_str().unwrap());
    assert!(
        entry["last_used_at"].as_str().is_some(),
        "last use recorded: {entry}"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_its_very_next_request() {
    let app = spawn_app().await;
    let created = app.create_key_ok("to revoke", "user").await;
    let secret = created["secret"].as_str().unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    assert_eq!(app.upload_policy(Some(secret)).await.status(), 200);

    let revoked = app.revoke_key(key_id, ADMIN_KEY).await;

    assert_eq!(revoked.status(), 204);
    let next = app.upload_policy(Some(secret)).await;
    assert_eq!(next.status(), 401);
    assert_eq!(next.headers()["www-authenticate"], "Bearer");
    let list: Value = app.list_keys(ADMIN_KEY).await.json().await.unwrap();
    assert!(listed(&list, key_id)["revoked_at"].as_str().is_some());
    assert_eq!(
        app.revoke_key(key_id, ADMIN_KEY).await.status(),
        204,
        "revoking again is not an error"
    );
}

#[tokio::test]
async fn revoking_an_unknown_or_malformed_id_is_not_found() {
    let app = spawn_app().await;

    for id in ["key_01jxxxxxxxxxxxxxxxxxxxxxxx", "..%2F..%2Fetc", "KEY"] {
        let resp = app.revoke_key(id, ADMIN_KEY).await;
        assert_eq!(resp.status(), 404, "{id}");
        assert_eq!(error_code(resp).await, "not_found");
    }
}

#[tokio::test]
async fn bootstrap_keys_cannot_be_revoked_through_the_api() {
    let app = spawn_app().await;

    for id in ["bootstrap-user", "bootstrap-admin"] {
        let resp = app.revoke_key(id, ADMIN_KEY).await;
        assert_eq!(resp.status(), 409, "{id}");
        assert_eq!(error_code(resp).await, "bootstrap_key");
    }
    assert_eq!(app.upload_policy(Some(USER_KEY)).await.status(), 200);
}

#[tokio::test]
async fn a_created_user_key_is_forbidden_on_admin_routes_and_an_admin_key_is_not() {
    let app = spawn_app().await;
    let user = app.create_key_ok("user", "user").await;
    let admin = app.create_key_ok("second admin", "admin").await;
    let user = user["secret"].as_str().unwrap();
    let admin = admin["secret"].as_str().unwrap();

    let as_user = app.list_keys(user).await;
    let as_admin = app.list_keys(admin).await;
    let admin_creates = app.create_key("made by admin", "user", admin).await;

    assert_eq!(as_user.status(), 403);
    assert_eq!(error_code(as_user).await, "forbidden");
    assert_eq!(as_admin.status(), 200);
    assert_eq!(admin_creates.status(), 201);
    assert_eq!(
        app.upload_policy(Some(admin)).await.status(),
        200,
        "admin keys are users too"
    );
    assert_eq!(app.create_key("x", "user", USER_KEY).await.status(), 403);
    assert_eq!(app.get("/api/v1/admin/keys", None).await.status(), 401);
}

#[tokio::test]
async fn bad_names_and_roles_are_refused() {
    let app = spawn_app().await;

    let blank = app.create_key("   ", "user", ADMIN_KEY).await;
    let long = app.create_key(&"n".repeat(65), "user", ADMIN_KEY).await;
    let role = app.create_key("x", "root", ADMIN_KEY).await;

    assert_eq!(blank.status(), 400);
    assert_eq!(error_code(blank).await, "invalid_key_name");
    assert_eq!(long.status(), 400);
    assert_eq!(error_code(long).await, "invalid_key_name");
    assert_eq!(role.status(), 400);
}

/// The document says `name` is a string: `false` or `42` is not one
/// (poem-openapi's own `String` would take them as `"false"`, `"42"`).
#[tokio::test]
async fn a_name_that_is_not_a_json_string_is_refused() {
    let app = spawn_app().await;
    for name in [json!(false), json!(42), json!(null), json!(["x"])] {
        let resp = app
            .post_json(
                "/api/v1/admin/keys",
                &json!({ "name": name, "role": "user" }),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(resp.status(), 400, "{name}");
        assert_eq!(error_code(resp).await, "invalid_request", "{name}");
    }
}

#[tokio::test]
async fn jobs_belong_to_the_created_key_that_made_them() {
    let app = spawn_app().await;
    let alice = app.create_key_ok("alice", "user").await;
    let bob = app.create_key_ok("bob", "user").await;
    let (alice_secret, bob_secret) = (
        alice["secret"].as_str().unwrap(),
        bob["secret"].as_str().unwrap(),
    );
    let form = Form::new().part("files", file_part("a.png", png(32, 32)));
    let resp = app.upload_form(form, Some(alice_secret), None).await;
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap();

    let as_alice = app.get_job(job_id, alice_secret).await;
    let as_bob = app.get_job(job_id, bob_secret).await;
    let bob_list: Value = app.list_jobs("", bob_secret).await.json().await.unwrap();
    let bob_delete = app.delete_job(job_id, bob_secret).await;

    assert_eq!(as_alice.status(), 200);
    assert_eq!(
        as_bob.status(),
        404,
        "another key's job does not exist for it"
    );
    assert!(bob_list["jobs"].as_array().unwrap().is_empty());
    assert_eq!(bob_delete.status(), 404);
    let all: Value = app.admin_jobs(ADMIN_KEY).await.json().await.unwrap();
    let listed_job = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == job_id)
        .expect("the admin sees every job");
    assert_eq!(listed_job["owner"], alice["key_id"]);
}
