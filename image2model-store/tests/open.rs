//! `open_database`, `open_job_store` and `open_blob_store`: every URL form, clear errors for
//! the rest, and never a password in an error.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use image2model_core::domain::{ApiKeyId, BlobKey, JobId};
use image2model_core::ports::{AuditEvent, Role};
use image2model_core::testing::conformance::job_store::new_job;
use image2model_core::testing::conformance::key_store::stored_key;
use image2model_store::{
    OpenError, SqliteDatabase, open_blob_store, open_database, open_job_store,
};

/// `target` as a path relative to the current directory (`./../../tmp/…`),
/// to exercise the relative URL forms without changing the process's cwd.
fn relative_to_cwd(target: &Path) -> String {
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut rel = PathBuf::from(".");
    for _ in 0..ups {
        rel.push("..");
    }
    rel.push(target.strip_prefix("/").unwrap());
    rel.display().to_string()
}

fn expect_err<T>(got: Result<T, OpenError>) -> OpenError {
    match got {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn sqlite_urls_name_their_paths() {
    let cases = [
        ("sqlite://./data/x.db", Some("./data/x.db")),
        ("sqlite:///srv/i2m/x.db", Some("/srv/i2m/x.db")),
        ("sqlite:x.db", Some("x.db")),
        ("sqlite://./data/x.db?mode=rwc", Some("./data/x.db")),
        ("sqlite::memory:", None),
        ("sqlite://:memory:", None),
    ];
    for (url, path) in cases {
        assert_eq!(
            SqliteDatabase::path_from_url(url),
            path.map(PathBuf::from),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_relative_sqlite_url_creates_the_database_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("data/image2model.db");
    let url = format!("sqlite://{}", relative_to_cwd(&target));

    let store = open_job_store(&url).await.expect("open");
    store
        .create_job(new_job(JobId::new(), &ApiKeyId::parse("a").unwrap(), 1))
        .await
        .unwrap();

    assert!(target.is_file(), "{url} created {}", target.display());
    assert_eq!(store.stats().await.unwrap().jobs, 1);
}

#[tokio::test]
async fn sqlite_memory_url_opens_a_working_store() {
    let store = open_job_store("sqlite::memory:").await.expect("open");

    store.ping().await.unwrap();
    assert_eq!(store.stats().await.unwrap().jobs, 0);
}

#[tokio::test]
async fn a_memory_database_url_opens_throwaway_stores() {
    for url in ["memory://", " memory: "] {
        let db = open_database(url).await.expect("open");

        db.jobs.ping().await.unwrap();
        assert!(db.keys.list_keys().await.unwrap().is_empty(), "{url}");
        assert!(db.audit.recent(10, None).await.unwrap().is_empty(), "{url}");
    }
}

#[tokio::test]
async fn open_database_gives_jobs_keys_and_audit_of_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("all.db").display());
    let db = open_database(&url).await.expect("open");
    db.jobs
        .create_job(new_job(JobId::new(), &ApiKeyId::parse("alice").unwrap(), 1))
        .await
        .unwrap();
    db.keys
        .create_key(stored_key("ci", Role::User, chrono::Duration::zero()))
        .await
        .unwrap();
    db.audit
        .record(AuditEvent {
            at: chrono::Utc::now(),
            kind: "key_created".into(),
            actor: None,
            client_ip: None,
            request_id: None,
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();

    let reopened = open_database(&url).await.expect("reopen");

    assert_eq!(reopened.jobs.stats().await.unwrap().jobs, 1);
    assert_eq!(reopened.keys.list_keys().await.unwrap().len(), 1);
    assert_eq!(reopened.audit.recent(10, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_relative_file_url_opens_a_blob_store_there() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().canonicalize().unwrap().join("data/blobs");
    let url = format!("file://{}", relative_to_cwd(&target));

    let store = open_blob_store(&url).await.expect("open");
    store
        .put_bytes(
            &BlobKey::parse("models/j/x.glb").unwrap(),
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap();

    assert!(target.join("models/j/x.glb").is_file());
    assert_eq!(store.describe(), format!("file://{}", target.display()));
}

#[tokio::test]
async fn memory_and_s3_urls_open_without_contacting_anything() {
    let memory = open_blob_store("memory://").await.expect("memory");
    let s3 = open_blob_store("s3://my-bucket/env/prod")
        .await
        .expect("s3");

    memory.ping().await.unwrap();
    assert_eq!(memory.describe(), "memory://");
    assert_eq!(s3.describe(), "s3://my-bucket/env/prod");
}

#[tokio::test]
async fn unknown_schemes_are_named_with_the_password_redacted() {
    let job = expect_err(open_job_store("mysql://root:hunter2@db/i2m").await);
    let blob = expect_err(open_blob_store("ftp://u:hunter2@host/blobs").await);

    for e in [&job, &blob] {
        let text = e.to_string();
        assert!(matches!(e, OpenError::UnknownScheme { .. }), "{e:?}");
        assert_eq!(e.code(), "invalid_config");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
        assert!(text.contains("REDACTED"), "{text}");
    }
    assert!(job.to_string().contains("DATABASE_URL"));
    assert!(blob.to_string().contains("STORAGE_URL"));
}

#[tokio::test]
async fn malformed_storage_urls_are_explained() {
    for url in [
        "file://",
        "s3://",
        "s3://bucket/../etc",
        "s3://id:hunter2@bucket/p",
        "s3://bucket/p?x=1",
    ] {
        let e = expect_err(open_blob_store(url).await);
        assert!(matches!(e, OpenError::InvalidUrl { .. }), "{url}: {e:?}");
        assert!(!e.to_string().contains("hunter2"), "password leaked: {e}");
    }
}

#[tokio::test]
async fn an_unreachable_postgres_fails_without_its_password() {
    let e = expect_err(open_job_store("postgres://app:hunter2@127.0.0.1:1/i2m").await);

    assert_eq!(e.code(), "store_unavailable", "{e}");
    assert!(!e.to_string().contains("hunter2"), "password leaked: {e}");
}

#[tokio::test]
async fn a_malformed_postgres_url_is_invalid_and_redacted() {
    let e = expect_err(open_job_store("postgresql://app:hunter2@host:notaport/db").await);

    assert!(matches!(e, OpenError::InvalidUrl { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"));
}

#[test]
fn the_stores_switches_default_on_and_refuse_what_is_not_a_boolean() {
    use image2model_store::open::{SWITCHES, check_switches, parse_switch};
    assert_eq!(SWITCHES, ["BLOB_DIRECT_IO", "SQLITE_FAST_WRITES"]);
    for on in ["true", "1", "YES", " on "] {
        assert_eq!(parse_switch("BLOB_DIRECT_IO", on, false), Ok(true), "{on}");
    }
    for off in ["false", "0", "No", "OFF"] {
        assert_eq!(
            parse_switch("BLOB_DIRECT_IO", off, true),
            Ok(false),
            "{off}"
        );
    }
    assert_eq!(parse_switch("SQLITE_FAST_WRITES", "", true), Ok(true));
    let refused = parse_switch("SQLITE_FAST_WRITES", "maybe", true).unwrap_err();
    assert!(refused.contains("SQLITE_FAST_WRITES") && refused.contains("maybe"));

    assert!(check_switches(|_| None).is_empty(), "unset is fine");
    let errors =
        check_switches(|name| Some(if name == "BLOB_DIRECT_IO" { "off" } else { "2" }.into()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("SQLITE_FAST_WRITES"), "{errors:?}");
}
