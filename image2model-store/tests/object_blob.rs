//! The object_store blob store passes the conformance suite in memory and,
//! when a server is configured, against S3.
//!
//! S3 tests need an S3-compatible server: `eval "$(.ci/s3-server)"` starts one
//! (moto) and exports `TEST_S3_ENDPOINT` (required), `TEST_S3_BUCKET`
//! (default `image2model-test`, must exist), `TEST_S3_ACCESS_KEY_ID`,
//! `TEST_S3_SECRET_ACCESS_KEY` (default `test`) and `TEST_S3_REGION`
//! (default `us-east-1`). Each test uses a prefix of its own in the bucket.
//! Without `TEST_S3_ENDPOINT` the S3 tests print a "skipped" line and return.

use std::io::Write;
use std::sync::{Arc, Once};

use bytes::Bytes;
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobStore};
use image2model_core::testing::conformance::blob_store::{failing, pattern};
use image2model_store::{ObjectBlobStore, S3Config};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

fn s3_config() -> Option<S3Config> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let Some(endpoint) = var("TEST_S3_ENDPOINT") else {
        static NOTICE: Once = Once::new();
        NOTICE.call_once(|| {
            // Written to the real stderr, past the test harness's capture.
            let _ = writeln!(
                std::io::stderr(),
                "S3 tests skipped: set TEST_S3_ENDPOINT (and TEST_S3_BUCKET, TEST_S3_ACCESS_KEY_ID, TEST_S3_SECRET_ACCESS_KEY), e.g. with eval \"$(.ci/s3-server)\""
            );
        });
        return None;
    };
    Some(S3Config {
        bucket: var("TEST_S3_BUCKET").unwrap_or_else(|| "image2model-test".into()),
        prefix: Some(format!(
            "t-{}",
            ulid::Ulid::new().to_string().to_lowercase()
        )),
        region: var("TEST_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
        endpoint: Some(endpoint),
        access_key_id: Some(var("TEST_S3_ACCESS_KEY_ID").unwrap_or_else(|| "test".into())),
        secret_access_key: Some(var("TEST_S3_SECRET_ACCESS_KEY").unwrap_or_else(|| "test".into())),
        session_token: None,
        max_retries: image2model_store::S3_DEFAULT_MAX_RETRIES,
        retry_timeout: image2model_store::S3_DEFAULT_RETRY_TIMEOUT,
    })
}

mod conformance_memory {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        Some(Arc::new(ObjectBlobStore::memory()) as Arc<dyn BlobStore>)
    });
}

mod conformance_memory_with_prefix {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        let inner = Arc::new(InMemory::new());
        let store = ObjectBlobStore::new(inner, Some("tenant/a"), "memory://tenant/a").unwrap();
        Some(Arc::new(store) as Arc<dyn BlobStore>)
    });
}

mod conformance_s3 {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        let config = s3_config()?;
        Some(Arc::new(ObjectBlobStore::s3(&config).expect("S3 store")) as Arc<dyn BlobStore>)
    });
}

fn key(text: &str) -> BlobKey {
    BlobKey::parse(text).unwrap()
}

#[tokio::test]
async fn objects_outside_the_prefix_are_invisible() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    inner
        .put(
            &"other/uploads/j/x.png".into(),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    inner
        .put(
            &"tenant/uploads/j/bad name.png".into(),
            PutPayload::from_static(b"x"),
        )
        .await
        .unwrap();
    let store = ObjectBlobStore::new(inner.clone(), Some("tenant"), "memory://tenant").unwrap();

    store
        .put_bytes(&key("uploads/j/y.png"), Bytes::from_static(b"y"))
        .await
        .unwrap();
    let listed = store.list(&BlobPrefix::root()).await.unwrap();

    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["uploads/j/y.png"],
        "only our valid keys are listed"
    );
    assert!(
        inner.head(&"tenant/uploads/j/y.png".into()).await.is_ok(),
        "keys are stored under the prefix"
    );
}

#[tokio::test]
async fn a_failed_multipart_body_leaves_no_object_in_memory() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = ObjectBlobStore::new(inner.clone(), None, "memory://").unwrap();
    let chunks = vec![pattern(3 * 1024 * 1024, 1); 3];

    let got = store.put(&key("models/j/big.glb"), failing(chunks)).await;

    assert!(matches!(got, Err(BlobError::Body(_))), "got {got:?}");
    let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(inner.list(None))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "nothing is visible in the backend: {left:?}"
    );
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_is_unavailable() {
    // Port 1 on loopback: nothing listens there.
    let config = S3Config {
        bucket: "b".into(),
        prefix: None,
        region: "us-east-1".into(),
        endpoint: Some("http://127.0.0.1:1".into()),
        access_key_id: Some("id".into()),
        secret_access_key: Some("hunter2".into()),
        session_token: None,
        max_retries: 0,
        retry_timeout: std::time::Duration::from_secs(1),
    };
    let store = ObjectBlobStore::s3(&config).unwrap();

    let got = store.head(&key("models/j/x.glb")).await;

    match got {
        Err(e @ BlobError::Unavailable(_)) => {
            assert_eq!(e.code(), "storage_unavailable");
            assert!(!e.to_string().contains("hunter2"));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn s3_config_debug_hides_the_secrets() {
    let config = S3Config::from_lookup("bucket", Some("p"), |name| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("hunter2".into()),
        "AWS_SESSION_TOKEN" => Some("tok3n".into()),
        "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".into()),
        _ => None,
    });

    let shown = format!("{config:?}");

    assert!(
        !shown.contains("hunter2") && !shown.contains("tok3n"),
        "{shown}"
    );
    assert_eq!(config.region, "us-east-1", "the default region");
    assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
}

#[test]
fn s3_describe_names_bucket_and_prefix_only() {
    let config = S3Config::from_lookup("bucket", Some("env/prod"), |name| match name {
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("hunter2".into()),
        _ => None,
    });

    let store = ObjectBlobStore::s3(&config).unwrap();

    assert_eq!(store.describe(), "s3://bucket/env/prod");
}

#[test]
fn s3_retries_come_from_the_environment_with_object_stores_defaults() {
    let config = S3Config::from_lookup("bucket", None, |name| match name {
        "S3_MAX_RETRIES" => Some("2".into()),
        "S3_RETRY_TIMEOUT_SECS" => Some(" 7 ".into()),
        _ => None,
    });
    assert_eq!(config.max_retries, 2);
    assert_eq!(config.retry_timeout, std::time::Duration::from_secs(7));

    let config = S3Config::from_lookup("bucket", None, |name| match name {
        "S3_MAX_RETRIES" => Some("many".into()),
        _ => None,
    });
    assert_eq!(
        config.max_retries,
        image2model_store::S3_DEFAULT_MAX_RETRIES
    );
    assert_eq!(
        config.retry_timeout,
        image2model_store::S3_DEFAULT_RETRY_TIMEOUT
    );
}
