use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, spawn_app};

#[tokio::test]
async fn no_key_is_401_with_www_authenticate() {
    let app = spawn_app().await;

    let resp = app.upload_policy(None).await;

    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_code(resp).await, "unauthorized");
}

#[tokio::test]
async fn malformed_and_unknown_keys_are_401_with_www_authenticate() {
    let app = spawn_app().await;
    let attempts = [
        ("Authorization", "Basic dXNlcjpwYXNz".to_owned()),
        ("Authorization", "Bearer".to_owned()),
        ("Authorization", "Bearer not-a-key".to_owned()),
        (
            "Authorization",
            format!("Bearer {}", &USER_KEY[..USER_KEY.len() - 1]),
        ),
    ];
    for (name, value) in attempts {
        let resp = app
            .client
            .get(app.url("/api/v1/jobs"))
            .header(name, &value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{value}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{value}");
        assert_eq!(error_code(resp).await, "unauthorized", "{value}");
    }
}

#[tokio::test]
async fn the_user_key_is_200_on_user_routes() {
    let app = spawn_app().await;

    let resp = app.upload_policy(Some(USER_KEY)).await;

    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_admin_key_may_call_user_routes() {
    let app = spawn_app().await;

    let resp = app.upload_policy(Some(ADMIN_KEY)).await;

    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn a_user_key_on_admin_routes_is_403() {
    let app = spawn_app().await;
    for resp in [
        app.system_health(Some(USER_KEY)).await,
        app.admin_jobs(USER_KEY).await,
        app.admin_delete_job("01ARZ3NDEKTSV4RRFFQ69G5FAV", USER_KEY)
            .await,
    ] {
        assert_eq!(resp.status(), 403);
        assert_eq!(error_code(resp).await, "forbidden");
    }
}

#[tokio::test]
async fn no_key_on_admin_routes_is_401() {
    let app = spawn_app().await;

    let resp = app.system_health(None).await;

    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
}
