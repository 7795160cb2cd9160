//! `image2model doctor`, the real binary: a deliberately bad deployment
//! gets one finding, with what to do, for each planted fault; a sound one
//! passes.

use std::path::Path;
use std::process::Command;

use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig};

use crate::helpers::{ADMIN_KEY, USER_KEY};

/// Runs `image2model doctor --env-file ENV` in `dir` with nothing else in
/// its environment; its exit code and what it printed.
fn doctor(dir: &Path, env: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_image2model"))
        .arg("doctor")
        .arg("--env-file")
        .arg(env)
        .current_dir(dir)
        .env_clear()
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn write_env(path: &Path, lines: &[String], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The finding line of `check` at `severity`.
fn finding<'a>(text: &'a str, severity: &str, check: &str) -> &'a str {
    let prefix = format!("[{severity}] {check}:");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} finding in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_every_planted_fault_with_a_fix() {
    let fake = FakeFal::start(FakeFalConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // A file where the blob directory's parent should be.
    std::fs::write(dir.path().join("not-a-dir"), b"x").unwrap();
    let env = dir.path().join("prod.env");
    write_env(
        &env,
        &[
            "ENVIRONMENT=production".into(),
            // A value copied from an example file.
            "SECRET_KEY=change-me-change-me-change-me-change-me".into(),
            format!("API_KEY={USER_KEY}"),
            format!("ADMIN_API_KEY={ADMIN_KEY}"),
            "ALLOWED_HOSTS=api.example.com".into(),
            // Nothing listens on port 1.
            "DATABASE_URL=postgres://postgres@127.0.0.1:1/image2model".into(),
            format!(
                "STORAGE_URL=file://{}/not-a-dir/blobs",
                dir.path().display()
            ),
            "REDIS_URL=redis://127.0.0.1:1".into(),
            // A key fal does not know.
            "FAL_KEY=wrong-id:wrong-secret".into(),
            format!("FAL_QUEUE_BASE_URL={}", fake.queue_base_url()),
            format!("FAL_STORAGE_BASE_URL={}", fake.storage_base_url()),
            "TRUSTED_PROXIES=0.0.0.0/0".into(),
        ],
        // Readable by everyone, though it holds secrets.
        0o644,
    );

    let (code, text) = tokio::task::spawn_blocking({
        let (dir, env) = (dir.path().to_owned(), env.clone());
        move || doctor(&dir, &env)
    })
    .await
    .unwrap();

    assert_eq!(code, Some(1), "a problem exits 1:\n{text}");
    assert!(
        finding(&text, "problem", "config").contains("SECRET_KEY"),
        "{text}"
    );
    finding(&text, "problem", "database");
    finding(&text, "problem", "blob_store");
    finding(&text, "problem", "redis");
    assert!(
        finding(&text, "problem", "fal").contains("refuses the key"),
        "{text}"
    );
    assert!(
        finding(&text, "problem", "permissions").contains("prod.env"),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix: chmod 600 {}", env.display())),
        "{text}"
    );
    assert!(
        finding(&text, "problem", "proxies").contains("0.0.0.0/0"),
        "{text}"
    );
    assert!(fake.unauthorized() >= 1, "fal was asked with the key");
    assert_eq!(fake.submits(), 0, "the check costs nothing at fal");
    // Every problem says what to do.
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("[problem]") {
            assert!(
                lines
                    .get(i + 1)
                    .is_some_and(|next| next.trim_start().starts_with("fix:")),
                "no fix after {line:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_sound_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("dev.env");
    write_env(
        &env,
        &[
            format!("API_KEY={USER_KEY}"),
            format!(
                "DATABASE_URL=sqlite://{}/data/jobs.db",
                dir.path().display()
            ),
            format!("STORAGE_URL=file://{}/blobs", dir.path().display()),
        ],
        0o600,
    );
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::create_dir(dir.path().join("blobs")).unwrap();

    let (code, text) = tokio::task::spawn_blocking({
        let (dir, env) = (dir.path().to_owned(), env.clone());
        move || doctor(&dir, &env)
    })
    .await
    .unwrap();

    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 problem(s)"), "{text}");
    assert!(
        finding(&text, "ok", "database").contains("does not exist yet"),
        "{text}"
    );
    finding(&text, "ok", "blob_store");
    finding(&text, "ok", "permissions");
    assert!(
        !dir.path().join("data/jobs.db").exists(),
        "doctor made no database file"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "the probe file was removed");
}
