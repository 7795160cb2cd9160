//! The [`BlobStore`] conformance checks: one `pub async fn` per clause of the
//! contract, each taking a fresh, empty store.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream;

use super::Check;
use crate::domain::{BlobKey, BlobPrefix};
use crate::ports::{BlobError, BlobStore, ByteStream};

/// The list of checks, shared by the test macro and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __blob_store_checks {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {$mode blob_store ($($args)*) [
            put_then_get_round_trips,
            multi_chunk_body_is_stored_in_order,
            large_body_round_trips,
            empty_body_round_trips,
            put_replaces_the_existing_object,
            failing_body_stores_nothing,
            failing_body_keeps_the_previous_object,
            missing_key_is_not_found,
            delete_is_idempotent,
            list_matches_whole_segments_and_is_sorted,
            list_of_an_unused_prefix_is_empty,
            usage_sums_sizes_under_a_prefix,
            head_reports_size_and_time,
            concurrent_puts_to_one_key_leave_one_whole_object,
            ping_and_describe_answer,
        ]}
    };
}

/// Every check, by name.
pub const CHECKS: &[Check<dyn BlobStore>] = crate::__blob_store_checks!(array());

// ---------------------------------------------------------------- helpers

fn key(text: &str) -> BlobKey {
    BlobKey::parse(text).expect("test keys are valid")
}

fn prefix(text: &str) -> BlobPrefix {
    BlobPrefix::parse(text).expect("test prefixes are valid")
}

/// `len` bytes of a pattern that differs with `seed`, so that misplaced or
/// mixed chunks are detected.
#[must_use]
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8))
        .collect()
}

/// A body of these chunks, yielding to the runtime between chunks like a
/// network body would.
#[must_use]
pub fn chunked(chunks: Vec<Vec<u8>>) -> ByteStream {
    stream::iter(chunks)
        .then(|c| async move {
            tokio::task::yield_now().await;
            Ok(Bytes::from(c))
        })
        .boxed()
}

/// A body that yields these chunks, then fails like a dropped client.
#[must_use]
pub fn failing(chunks: Vec<Vec<u8>>) -> ByteStream {
    chunked(chunks)
        .chain(stream::once(async {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the client went away",
            ))
        }))
        .boxed()
}

async fn read(store: &Arc<dyn BlobStore>, k: &BlobKey) -> Vec<u8> {
    let obj = store
        .get(k)
        .await
        .unwrap_or_else(|e| panic!("get {k}: {e}"));
    let size = obj.size;
    let mut out = Vec::new();
    let mut s = obj.stream;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("reading {k}: {e}")));
    }
    assert_eq!(
        size,
        out.len() as u64,
        "get's size must match its bytes for {k}"
    );
    out
}

async fn keys(store: &Arc<dyn BlobStore>, p: &BlobPrefix) -> Vec<String> {
    store
        .list(p)
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.as_str().to_owned())
        .collect()
}

fn assert_not_found<T>(result: Result<T, BlobError>, k: &BlobKey, what: &str) {
    match result {
        Err(BlobError::NotFound(got)) => {
            assert_eq!(&got, k, "{what}: NotFound names the key");
        }
        Err(e) => panic!("{what} of {k}: expected NotFound, got {e:?}"),
        Ok(_) => panic!("{what} of {k}: expected NotFound, got an object"),
    }
}

// ---------------------------------------------------------------- checks

/// `put` returns the byte count and `get` streams the same bytes back.
pub async fn put_then_get_round_trips(store: Arc<dyn BlobStore>) {
    let k = key("uploads/job1/item1.png");
    let body = pattern(1000, 1);

    let stored = store
        .put(&k, chunked(vec![body.clone()]))
        .await
        .expect("put");

    assert_eq!(stored, 1000, "put returns the number of bytes stored");
    assert_eq!(read(&store, &k).await, body);
    assert_eq!(
        store.get_bytes(&k).await.expect("get_bytes"),
        Bytes::from(body)
    );
}

/// A body of many uneven chunks is stored whole and in order.
pub async fn multi_chunk_body_is_stored_in_order(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/item1.glb");
    let chunks: Vec<Vec<u8>> = (0u8..40)
        .map(|n| pattern(1 + usize::from(n) * 97, n))
        .collect();
    let whole: Vec<u8> = chunks.concat();

    let stored = store.put(&k, chunked(chunks)).await.expect("put");

    assert_eq!(stored, whole.len() as u64);
    assert_eq!(read(&store, &k).await, whole, "chunks are stored in order");
}

/// A body of about 5 MiB (larger than one S3 part) round-trips.
pub async fn large_body_round_trips(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/big.glb");
    let whole = pattern(5 * 1024 * 1024 + 12_345, 7);
    let chunks: Vec<Vec<u8>> = whole.chunks(64 * 1024).map(<[u8]>::to_vec).collect();

    let stored = store.put(&k, chunked(chunks)).await.expect("put");

    assert_eq!(stored, whole.len() as u64);
    let back = read(&store, &k).await;
    assert!(back == whole, "the large object came back different");
    assert_eq!(store.head(&k).await.expect("head").size, whole.len() as u64);
}

/// An empty body stores an empty object.
pub async fn empty_body_round_trips(store: Arc<dyn BlobStore>) {
    let k = key("previews/job1/empty.png");

    let stored = store.put(&k, chunked(Vec::new())).await.expect("put");

    assert_eq!(stored, 0);
    assert!(read(&store, &k).await.is_empty());
    assert_eq!(store.head(&k).await.expect("head").size, 0);
}

/// A second `put` to a key replaces the object whole.
pub async fn put_replaces_the_existing_object(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/item1.glb");
    store
        .put_bytes(&k, Bytes::from(pattern(5000, 1)))
        .await
        .expect("first put");

    store
        .put_bytes(&k, Bytes::from(pattern(300, 2)))
        .await
        .expect("second put");

    assert_eq!(
        read(&store, &k).await,
        pattern(300, 2),
        "the new body replaces the old"
    );
    assert_eq!(keys(&store, &BlobPrefix::root()).await, vec![k.to_string()]);
}

/// A body that fails midway stores nothing: `put` fails with `Body`, and the
/// key is neither readable nor listed.
pub async fn failing_body_stores_nothing(store: Arc<dyn BlobStore>) {
    let k = key("uploads/job1/item1.png");
    // Over 6 MiB before the failure, so multipart backends have sent parts.
    let chunks: Vec<Vec<u8>> = (0..3).map(|n| pattern(2 * 1024 * 1024 + 100, n)).collect();

    let result = store.put(&k, failing(chunks)).await;

    match result {
        Err(e @ BlobError::Body(_)) => assert_eq!(e.code(), "upload_interrupted"),
        Err(e) => panic!("a failing body must give BlobError::Body, got {e:?}"),
        Ok(n) => panic!("a failing body must not be stored, but put stored {n} bytes"),
    }
    assert_not_found(store.get(&k).await, &k, "get after a failed put");
    assert_not_found(store.head(&k).await, &k, "head after a failed put");
    assert!(
        keys(&store, &BlobPrefix::root()).await.is_empty(),
        "a failed put must leave nothing listed (no partial or staging objects)"
    );
    assert_eq!(
        store
            .usage(&BlobPrefix::root())
            .await
            .expect("usage")
            .objects,
        0
    );
}

/// A failing body over an existing object leaves the old object intact.
pub async fn failing_body_keeps_the_previous_object(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/item1.glb");
    let old = pattern(4096, 9);
    store
        .put_bytes(&k, Bytes::from(old.clone()))
        .await
        .expect("put");

    let result = store.put(&k, failing(vec![pattern(100_000, 1)])).await;

    assert!(matches!(result, Err(BlobError::Body(_))), "got {result:?}");
    assert_eq!(
        read(&store, &k).await,
        old,
        "the previous object is untouched"
    );
    assert_eq!(keys(&store, &BlobPrefix::root()).await, vec![k.to_string()]);
}

/// `get` and `head` of a missing key are `NotFound` (code `not_found`).
pub async fn missing_key_is_not_found(store: Arc<dyn BlobStore>) {
    let k = key("models/nothing/here.glb");

    let got = store.get(&k).await;
    let headed = store.head(&k).await;

    match &got {
        Err(e) => assert_eq!(e.code(), "not_found"),
        Ok(_) => panic!("get of a missing key returned an object"),
    }
    assert_not_found(got, &k, "get");
    assert_not_found(headed, &k, "head");
}

/// `delete` removes the object; deleting a missing key succeeds.
pub async fn delete_is_idempotent(store: Arc<dyn BlobStore>) {
    let k = key("uploads/job1/item1.png");
    let other = key("uploads/job1/item2.png");
    store
        .put_bytes(&k, Bytes::from_static(b"abc"))
        .await
        .expect("put");
    store
        .put_bytes(&other, Bytes::from_static(b"def"))
        .await
        .expect("put");

    store.delete(&k).await.expect("delete");
    store
        .delete(&k)
        .await
        .expect("second delete of the same key");
    store
        .delete(&key("uploads/never/was.png"))
        .await
        .expect("delete of a key never stored");

    assert_not_found(store.get(&k).await, &k, "get after delete");
    assert_eq!(
        keys(&store, &BlobPrefix::root()).await,
        vec![other.to_string()],
        "only the deleted key is gone"
    );
}

/// `list` returns the keys under a prefix, segment-wise (`uploads/ab` does not
/// match `uploads/abc/…`), sorted by key, with sizes.
pub async fn list_matches_whole_segments_and_is_sorted(store: Arc<dyn BlobStore>) {
    let names = [
        "uploads/ab/x.png",
        "uploads/abc/y.png",
        "uploads/ab/a.png",
        "uploads/ab-c/z.png",
        "models/ab/m.glb",
        "uploads/ab/deeper/d.png",
    ];
    for (n, name) in names.iter().enumerate() {
        store
            .put_bytes(&key(name), Bytes::from(pattern(10 + n, 0)))
            .await
            .expect("put");
    }

    let under_ab = store.list(&prefix("uploads/ab")).await.expect("list");
    let uploads = keys(&store, &prefix("uploads")).await;
    let all = keys(&store, &BlobPrefix::root()).await;

    let ab_keys: Vec<&str> = under_ab.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        ab_keys,
        vec![
            "uploads/ab/a.png",
            "uploads/ab/deeper/d.png",
            "uploads/ab/x.png"
        ],
        "list matches whole segments, recursively, sorted"
    );
    let sizes: Vec<u64> = under_ab.iter().map(|m| m.size).collect();
    assert_eq!(sizes, vec![12, 15, 10], "list reports sizes");
    assert_eq!(
        uploads,
        vec![
            "uploads/ab-c/z.png",
            "uploads/ab/a.png",
            "uploads/ab/deeper/d.png",
            "uploads/ab/x.png",
            "uploads/abc/y.png",
        ],
        "sorted by key bytes"
    );
    let mut sorted = names.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(all, sorted, "the root lists everything, sorted");
}

/// Listing a prefix with nothing under it (or naming an object itself) is
/// empty, not an error.
pub async fn list_of_an_unused_prefix_is_empty(store: Arc<dyn BlobStore>) {
    store
        .put_bytes(&key("uploads/job1/item1.png"), Bytes::from_static(b"x"))
        .await
        .expect("put");

    let unused = keys(&store, &prefix("models")).await;
    let partial_segment = keys(&store, &prefix("uploads/job")).await;
    let the_object_itself = keys(&store, &prefix("uploads/job1/item1.png")).await;

    assert!(unused.is_empty(), "nothing under models");
    assert!(
        partial_segment.is_empty(),
        "uploads/job does not match uploads/job1"
    );
    assert!(
        the_object_itself.is_empty(),
        "a key is not a prefix of itself"
    );
}

/// `usage` sums sizes and counts objects under a prefix.
pub async fn usage_sums_sizes_under_a_prefix(store: Arc<dyn BlobStore>) {
    for (name, len) in [
        ("uploads/j1/a.png", 100),
        ("uploads/j2/b.png", 250),
        ("models/j1/a.glb", 4000),
    ] {
        store
            .put_bytes(&key(name), Bytes::from(pattern(len, 3)))
            .await
            .expect("put");
    }

    let uploads = store.usage(&prefix("uploads")).await.expect("usage");
    let models = store.usage(&prefix("models")).await.expect("usage");
    let all = store.usage(&BlobPrefix::root()).await.expect("usage");
    let none = store.usage(&prefix("previews")).await.expect("usage");

    assert_eq!((uploads.bytes, uploads.objects), (350, 2));
    assert_eq!((models.bytes, models.objects), (4000, 1));
    assert_eq!((all.bytes, all.objects), (4350, 3));
    assert_eq!((none.bytes, none.objects), (0, 0));
}

/// `head` reports the key, size and a plausible modification time.
pub async fn head_reports_size_and_time(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/item1.glb");
    let before = Utc::now();
    store
        .put_bytes(&k, Bytes::from(pattern(777, 5)))
        .await
        .expect("put");

    let meta = store.head(&k).await.expect("head");

    assert_eq!(meta.key, k);
    assert_eq!(meta.size, 777);
    let skew = chrono::Duration::minutes(5);
    assert!(
        meta.last_modified >= before - skew && meta.last_modified <= Utc::now() + skew,
        "last_modified {} should be about now",
        meta.last_modified
    );
    let listed = store.list(&prefix("models")).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 777);
}

/// Puts racing on one key end with one of the bodies stored whole, never a mix.
pub async fn concurrent_puts_to_one_key_leave_one_whole_object(store: Arc<dyn BlobStore>) {
    let k = key("models/job1/race.glb");
    let bodies: Vec<Vec<u8>> = (0u8..4)
        .map(|n| pattern(300_000 + usize::from(n), n))
        .collect();

    let tasks: Vec<_> = bodies
        .iter()
        .map(|body| {
            let (store, k) = (store.clone(), k.clone());
            let chunks: Vec<Vec<u8>> = body.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
            tokio::spawn(async move { store.put(&k, chunked(chunks)).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("put task").expect("racing put");
    }

    let back = read(&store, &k).await;
    assert!(
        bodies.contains(&back),
        "the object must be exactly one of the racing bodies (got {} bytes)",
        back.len()
    );
    assert_eq!(keys(&store, &BlobPrefix::root()).await, vec![k.to_string()]);
}

/// `ping` answers and `describe` says something.
pub async fn ping_and_describe_answer(store: Arc<dyn BlobStore>) {
    tokio::time::timeout(Duration::from_secs(10), store.ping())
        .await
        .expect("ping answers within 10 s")
        .expect("ping of a working store");
    assert!(!store.describe().is_empty(), "describe is not empty");
}
