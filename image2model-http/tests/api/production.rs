//! Production start-up refusals, through `App::build` and through the real
//! binary; `image2model config check`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use image2model_http::App;
use image2model_http::config::Config;

const SECRET: &str = "5e0f8a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9d0e1f2a3b";
const USER: &str = "c0ffee00112233445566778899aabbccddeeff0011223344";
const ADMIN: &str = "facade00112233445566778899aabbccddeeff0011223344";

fn good_production() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("ENVIRONMENT", "production"),
        ("SECRET_KEY", SECRET),
        ("API_KEY", USER),
        ("ADMIN_API_KEY", ADMIN),
        ("ALLOWED_HOSTS", "api.example.test"),
        ("BACKEND_CORS_ORIGINS", "https://example.test"),
        ("DATABASE_URL", "memory://"),
        ("STORAGE_URL", "memory://"),
    ])
}

/// `App::build`'s configuration error for the good production settings
/// changed by `change`, or `None` when it builds.
async fn build_error(change: &[(&'static str, &'static str)]) -> Option<String> {
    let mut vars = good_production();
    vars.extend(change.iter().copied());
    let config = Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
    match App::build(config).await {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

#[tokio::test]
async fn a_good_production_configuration_builds() {
    assert_eq!(build_error(&[]).await, None);
}

#[tokio::test]
async fn production_refuses_to_build_on_each_bad_secret() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SECRET_KEY", "")], "SECRET_KEY is required"),
        (&[("API_KEY", "")], "API_KEY is required"),
        (&[("ADMIN_API_KEY", "")], "ADMIN_API_KEY is required"),
        (
            &[("SECRET_KEY", "0123456789abcdef")],
            "SECRET_KEY is shorter than 32",
        ),
        (
            &[("API_KEY", "0123456789abcdef")],
            "API_KEY is shorter than 32",
        ),
        (
            &[("ADMIN_API_KEY", "0123456789abcdef")],
            "ADMIN_API_KEY is shorter than 32",
        ),
        (
            &[("SECRET_KEY", "change-me-change-me-change-me-change-me")],
            "SECRET_KEY looks like a placeholder",
        ),
        (
            &[("API_KEY", "your-api-key-here-0123456789abcdef012")],
            "API_KEY looks like a placeholder",
        ),
        (
            &[("ADMIN_API_KEY", "CHANGE_ME_openssl_rand_hex_24_admin")],
            "ADMIN_API_KEY looks like a placeholder",
        ),
        (
            &[("API_KEY", ADMIN)],
            "API_KEY and ADMIN_API_KEY must differ",
        ),
        (&[("BACKEND_CORS_ORIGINS", "*")], "not *"),
        (&[("ALLOWED_HOSTS", "")], "ALLOWED_HOSTS is required"),
    ];
    for (change, expected) in cases {
        let error = build_error(change).await;

        let error = error.unwrap_or_else(|| panic!("{change:?} was accepted"));
        assert!(error.contains(expected), "{change:?}: {error}");
        for (_, value) in *change {
            if value.len() > 8 && *value != "*" && *value != ADMIN {
                assert!(
                    !error.contains(value),
                    "the error echoes the secret: {error}"
                );
            }
        }
    }
}

/// The real binary with only `vars` in its environment, run in `dir` (so no
/// stray `.env` is read).
fn image2model(dir: &Path, args: &[&str], vars: &HashMap<&str, &str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_image2model"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

#[test]
fn the_binary_refuses_to_serve_in_production_with_a_placeholder_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = good_production();
    vars.insert("API_KEY", "CHANGE_ME_openssl_rand_hex_24_user");

    let out = image2model(dir.path(), &["serve", "--bind", "127.0.0.1:0"], &vars);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains("API_KEY looks like a placeholder value"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CHANGE_ME_openssl_rand_hex_24_user"),
        "{stderr}"
    );
}

#[test]
fn the_binary_refuses_to_serve_the_example_file_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.production.example"),
        dir.path().join(".env"),
    )
    .unwrap();

    let out = image2model(dir.path(), &["serve"], &HashMap::new());

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    for name in ["SECRET_KEY", "API_KEY", "ADMIN_API_KEY", "FAL_API_KEY"] {
        assert!(
            stderr.contains(&format!("{name} looks like a placeholder")),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn config_check_prints_the_configuration_redacted_and_exits_0_when_sound() {
    let dir = tempfile::tempdir().unwrap();
    let mut vars = good_production();
    vars.insert("FAL_API_KEY", "fal-id-1234:fal-secret-5678");
    vars.insert("REDIS_URL", "redis://:redis-pass-9abc@cache:6379");
    vars.insert("DATABASE_URL", "postgres://app:db-pass-def0@db:5432/app");

    let out = image2model(dir.path(), &["config", "check"], &vars);

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ENVIRONMENT=production",
        "API_KEY=[redacted]",
        "ADMIN_API_KEY=[redacted]",
        "SECRET_KEY=[redacted]",
        "FAL_API_KEY=[redacted]",
        "REDIS_URL=redis://:REDACTED@cache:6379",
        "DATABASE_URL=postgres://app:REDACTED@db:5432/app",
        "no problems found",
    ] {
        assert!(stdout.contains(line), "{line} not in:\n{stdout}");
    }
    for secret in [
        SECRET,
        USER,
        ADMIN,
        "fal-secret-5678",
        "redis-pass-9abc",
        "db-pass-def0",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed");
    }
}

#[test]
fn config_check_lists_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let vars = HashMap::from([
        ("ENVIRONMENT", "production"),
        ("API_KEY", "same-key-for-both-0123456789abcdef0123"),
        ("ADMIN_API_KEY", "same-key-for-both-0123456789abcdef0123"),
        ("SECRET_KEY", "short"),
        ("BACKEND_CORS_ORIGINS", "*"),
    ]);

    let out = image2model(dir.path(), &["config", "check"], &vars);

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for problem in [
        "problems:",
        "API_KEY and ADMIN_API_KEY must differ",
        "SECRET_KEY is shorter than 32",
        "not *",
        "ALLOWED_HOSTS is required",
    ] {
        assert!(stdout.contains(problem), "{problem} not in:\n{stdout}");
    }
    assert!(!stdout.contains("same-key-for-both"), "a key printed");
}
