use crate::helpers::{ADMIN_KEY, USER_KEY, error_code, raw_get, raw_request, spawn_app};

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

/// GET /api/v1/jobs with a raw `Authorization` value, as bytes on the wire.
async fn with_authorization(
    app: &crate::helpers::TestApp,
    value: &str,
) -> crate::helpers::RawResponse {
    raw_get(
        app.app.addr,
        "/api/v1/jobs",
        &[&format!("Authorization: {value}")],
    )
    .await
}

#[tokio::test]
async fn every_malformed_authorization_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    let basic_with_the_key = format!(
        "Basic {}",
        base64_encode(format!("user:{USER_KEY}").as_bytes())
    );
    let attempts = [
        ("empty bearer", "Bearer ".to_owned()),
        ("scheme only", "Bearer".to_owned()),
        ("basic with the key as password", basic_with_the_key),
        ("basic with the key alone", format!("Basic {USER_KEY}")),
        ("no scheme", USER_KEY.to_owned()),
        ("other scheme", format!("Token {USER_KEY}")),
        ("prefix of the key", format!("Bearer {}", &USER_KEY[..20])),
        ("key plus a character", format!("Bearer {USER_KEY}0")),
        ("key then a word", format!("Bearer {USER_KEY} extra")),
        ("escaped newline", format!("Bearer {USER_KEY}%0A")),
        ("literal backslash-n", format!("Bearer {USER_KEY}\\n")),
        ("quoted key", format!("Bearer \"{USER_KEY}\"")),
        (
            "comma list",
            format!("Bearer {USER_KEY}, Bearer {ADMIN_KEY}"),
        ),
        ("long token", format!("Bearer {}", "a".repeat(4096))),
        (
            "long token starting with the key",
            format!("Bearer {USER_KEY}{}", "a".repeat(300)),
        ),
        ("non-ASCII", format!("Bearer {USER_KEY}é")),
    ];
    for (what, value) in attempts {
        let resp = with_authorization(&app, &value).await;

        assert_eq!(resp.status, 401, "{what}: {}", resp.body);
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{what}");
        assert_eq!(resp.code(), "unauthorized", "{what}");
    }
}

#[tokio::test]
async fn the_scheme_is_case_insensitive_and_extra_spaces_are_allowed_as_rfc_7235_says() {
    let app = spawn_app().await;
    for value in [
        format!("Bearer {USER_KEY}"),
        format!("bearer {USER_KEY}"),
        format!("BEARER {USER_KEY}"),
        format!("Bearer    {USER_KEY}"),
        // Trailing whitespace is not part of a header value (RFC 9110 §5.5).
        format!("Bearer {USER_KEY}   "),
    ] {
        let resp = with_authorization(&app, &value).await;

        assert_eq!(resp.status, 200, "{value:?}: {}", resp.body);
    }
}

#[tokio::test]
async fn a_trailing_newline_only_ends_the_header_line() {
    let app = spawn_app().await;
    // A bare LF ends the header line like CRLF does: what follows is a new
    // header, never part of the key.
    let request = format!(
        "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER_KEY}\nX-Other: {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    );
    let ok = raw_request(app.app.addr, request.as_bytes()).await;
    // A newline inside the key (a folded header line) is refused by the parser.
    let folded = format!(
        "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n {}\r\nConnection: close\r\n\r\n",
        &USER_KEY[..10],
        &USER_KEY[10..]
    );
    let refused = raw_request(app.app.addr, folded.as_bytes()).await;

    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        refused.status == 400 || refused.status == 401,
        "a folded key is not accepted: {}",
        refused.status
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused_even_if_one_is_valid() {
    let app = spawn_app().await;

    let resp = raw_get(
        app.app.addr,
        "/api/v1/jobs",
        &[
            &format!("Authorization: Bearer {USER_KEY}"),
            "Authorization: Bearer guess",
        ],
    )
    .await;

    assert_eq!(resp.status, 401);
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn a_header_larger_than_the_head_limit_is_431_before_the_app_runs() {
    let app = spawn_app().await;

    let resp = with_authorization(&app, &format!("Bearer {}", "a".repeat(40 * 1024))).await;

    assert_eq!(resp.status, 431);
}

#[tokio::test]
async fn every_user_route_refuses_a_missing_key() {
    let app = spawn_app().await;
    let job = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let item = "01ARZ3NDEKTSV4RRFFQ69G5FAW";
    let routes = [
        ("GET", "/api/v1/upload".to_owned()),
        ("POST", "/api/v1/upload".to_owned()),
        ("GET", "/api/v1/jobs".to_owned()),
        ("GET", format!("/api/v1/jobs/{job}")),
        ("GET", format!("/api/v1/jobs/{job}/events")),
        ("DELETE", format!("/api/v1/jobs/{job}")),
        ("GET", format!("/api/v1/jobs/{job}/items/{item}/model")),
        ("GET", format!("/api/v1/jobs/{job}/items/{item}/preview")),
        ("GET", "/api/v1/admin/system-health".to_owned()),
        ("GET", "/api/v1/admin/jobs".to_owned()),
        ("DELETE", format!("/api/v1/admin/jobs/{job}")),
    ];
    for (method, path) in routes {
        let resp = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .send()
            .await
            .unwrap();

        assert_eq!(resp.status(), 401, "{method} {path}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer",
            "{method} {path}"
        );
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
