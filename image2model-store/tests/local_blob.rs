//! The local file blob store passes the conformance suite; plus the threats it
//! exists to stop: traversal, symbolic links out of the root, partial files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use image2model_core::domain::{BlobKey, BlobPrefix};
use image2model_core::ports::{BlobError, BlobStore};
use image2model_core::testing::conformance::blob_store::{chunked, failing, pattern};
use image2model_store::{LocalBlobStore, LocalOptions};

mod conformance {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = LocalBlobStore::open(dir.join("blobs")).await.expect("open");
        Some(Arc::new(store) as Arc<dyn BlobStore>)
    });
}

/// `BLOB_DIRECT_IO=false`: every staged file is written through the page
/// cache; the store behaves the same.
mod conformance_without_direct_io {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let options = LocalOptions { direct_io: false };
        let store = LocalBlobStore::open_with(dir.join("blobs"), options)
            .await
            .expect("open");
        assert_eq!(store.options(), options);
        Some(Arc::new(store) as Arc<dyn BlobStore>)
    });
}

fn key(text: &str) -> BlobKey {
    BlobKey::parse(text).unwrap()
}

/// Every file (not directory) under `dir`, recursively, hidden ones included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

async fn store_in(dir: &Path) -> LocalBlobStore {
    LocalBlobStore::open(dir.join("blobs")).await.unwrap()
}

#[tokio::test]
async fn open_creates_and_canonicalises_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let winding = dir.path().join("a/../b/./blobs");

    let store = LocalBlobStore::open(&winding).await.expect("open");

    assert_eq!(
        store.root(),
        dir.path().canonicalize().unwrap().join("b/blobs")
    );
    assert!(store.root().is_dir());
    assert!(store.describe().starts_with("file:///"));
}

#[tokio::test]
async fn objects_are_plain_files_at_their_key_under_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;

    store
        .put_bytes(&key("models/j1/i1.glb"), Bytes::from_static(b"glTF"))
        .await
        .unwrap();

    let file = store.root().join("models/j1/i1.glb");
    assert_eq!(std::fs::read(file).unwrap(), b"glTF");
    assert_eq!(files_under(store.root()).len(), 1, "no stray files");
}

#[tokio::test]
async fn traversal_keys_cannot_be_made() {
    // The only way to name a file is a BlobKey, and these never parse.
    for bad in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "a/./b",
        "a\\..\\b",
        ".staged",
    ] {
        assert!(BlobKey::parse(bad).is_err(), "{bad:?} must not be a key");
        assert!(
            BlobPrefix::parse(bad).is_err(),
            "{bad:?} must not be a prefix"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_directory_link_out_of_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("j1")).unwrap();
    std::fs::write(outside.join("j1/secret.png"), b"secret").unwrap();
    let store = store_in(dir.path()).await;
    std::os::unix::fs::symlink(&outside, store.root().join("uploads")).unwrap();

    let put = store
        .put_bytes(&key("uploads/j2/new.png"), Bytes::from_static(b"x"))
        .await;
    let get = store.get(&key("uploads/j1/secret.png")).await;
    let head = store.head(&key("uploads/j1/secret.png")).await;
    let listed = store.list(&BlobPrefix::parse("uploads").unwrap()).await;
    let all = store.list(&BlobPrefix::root()).await.unwrap();

    assert!(
        matches!(put, Err(BlobError::Backend(_))),
        "put through the link: {put:?}"
    );
    assert!(
        !outside.join("j2").exists(),
        "nothing was created outside the root"
    );
    assert!(
        matches!(get, Err(BlobError::Backend(_))),
        "get through the link must be refused"
    );
    assert!(
        matches!(head, Err(BlobError::Backend(_))),
        "head through the link: {head:?}"
    );
    assert!(listed.is_err(), "listing through the link must be refused");
    assert!(all.is_empty(), "listing the root skips the link: {all:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_file_link_out_of_the_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"secret").unwrap();
    let store = store_in(dir.path()).await;
    std::fs::create_dir_all(store.root().join("models/j1")).unwrap();
    let link = store.root().join("models/j1/i1.glb");
    std::os::unix::fs::symlink(&secret, &link).unwrap();

    let get = store.get(&key("models/j1/i1.glb")).await;
    let head = store.head(&key("models/j1/i1.glb")).await;
    let put = store
        .put_bytes(&key("models/j1/i1.glb"), Bytes::from_static(b"new"))
        .await;

    assert!(
        matches!(get, Err(BlobError::Backend(_))),
        "get through a file link must be refused"
    );
    assert!(matches!(head, Err(BlobError::Backend(_))), "head: {head:?}");
    put.expect("a put replaces the link itself");
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"secret",
        "the target was not written"
    );
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A directory swapped for a link to the outside while puts are under way
/// (the race a check by path, then a use by path, leaves open): every put
/// either lands in a real directory below the root or is refused, and not
/// one byte is written outside.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_link_mid_put_writes_nothing_outside_and_leaves_no_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let store = store_in(dir.path()).await;
    store
        .put_bytes(&key("uploads/j1/first.png"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let job_dir = store.root().join("uploads/j1");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let swapper = {
        let (job_dir, outside, stop, swaps) = (
            job_dir.clone(),
            outside.clone(),
            stop.clone(),
            swaps.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // The real directory moves aside and a link takes its name
                // for a moment; the next put makes a fresh directory.
                let aside = job_dir.with_file_name(format!("aside{n}"));
                if std::fs::rename(&job_dir, &aside).is_ok()
                    && std::os::unix::fs::symlink(&outside, &job_dir).is_ok()
                {
                    swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::yield_now();
                    let _ = std::fs::remove_file(&job_dir);
                }
                std::thread::yield_now();
            }
        })
    };
    let (mut stored, mut refused) = (0, 0);
    for i in 0..400 {
        let body = Bytes::from(vec![b'p'; 100 + i]);
        match store
            .put_bytes(&key(&format!("uploads/j1/p{i}.png")), body)
            .await
        {
            Ok(_) => stored += 1,
            Err(BlobError::Backend(_)) => refused += 1,
            Err(e) => panic!("put {i}: {e:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();

    assert!(
        files_under(&outside).is_empty(),
        "written through the link: {:?}",
        files_under(&outside)
    );
    assert!(
        swaps.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the link was planted"
    );
    assert!(
        stored > 0,
        "puts between the swaps landed ({refused} refused)"
    );
    // Each stored object is whole, in one of the real directories.
    let inside = files_under(&store.root().join("uploads"));
    assert_eq!(
        inside
            .iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .count(),
        stored + 1,
        "every stored put is a file below the root"
    );
    assert!(
        inside
            .iter()
            .all(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.')),
        "no staged file left: {inside:?}"
    );
}

/// A FIFO planted where an object should be is not an object: a get or a
/// head answers not found at once (it never waits for a writer).
#[cfg(unix)]
#[tokio::test]
async fn a_fifo_at_a_key_is_not_found_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    std::fs::create_dir_all(store.root().join("models/j1")).unwrap();
    let fifo = store.root().join("models/j1/i1.glb");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");

    let get = tokio::time::timeout(Duration::from_secs(10), store.get(&key("models/j1/i1.glb")))
        .await
        .expect("a get of a FIFO returns");
    let head = store.head(&key("models/j1/i1.glb")).await;

    assert_not_found(get);
    assert_not_found(head);
    let listed = store
        .list(&BlobPrefix::parse("models").unwrap())
        .await
        .unwrap();
    assert!(listed.is_empty(), "a FIFO is not listed: {listed:?}");
}

/// The store keeps the root directory it opened: when that directory is
/// moved and another made at its path, `ping` says so (the server's
/// readiness fails) and writes still go to the directory opened, never to
/// a half-seen mix of the two.
#[tokio::test]
async fn a_replaced_root_is_reported_by_ping() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store.ping().await.expect("the root it opened answers");
    let moved = dir.path().join("moved");
    std::fs::rename(store.root(), &moved).unwrap();
    std::fs::create_dir(store.root()).unwrap();

    let ping = store.ping().await;
    store
        .put_bytes(&key("uploads/j1/a.png"), Bytes::from_static(b"a"))
        .await
        .unwrap();

    match ping {
        Err(BlobError::Unavailable(m)) => assert!(m.contains("replaced or moved"), "{m}"),
        other => panic!("ping after the root was replaced: {other:?}"),
    }
    assert!(
        moved.join("uploads/j1/a.png").is_file(),
        "written to the root opened"
    );
    assert!(
        !store.root().join("uploads").exists(),
        "nothing in the new directory"
    );
    std::fs::remove_dir(store.root()).unwrap();
    assert!(
        matches!(store.ping().await, Err(BlobError::Unavailable(_))),
        "a root that is gone is unavailable"
    );
}

/// The store writes in 512 KiB batches, with direct I/O in 4 KiB blocks
/// where the file system allows and the tail through the page cache: bodies
/// on and around each of those sizes, in chunks that straddle them, come
/// back byte for byte.
#[tokio::test]
async fn bodies_around_the_batch_and_block_sizes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let sizes = [
        4095,
        4096,
        65_535,
        65_536,
        524_287,
        524_288,
        524_289,
        1_048_576 + 4097,
        1_000_000,
        3_000_000,
    ];
    for (n, size) in sizes.into_iter().enumerate() {
        for chunk in [7777, 131_072, 300_001] {
            let k = key(&format!("uploads/j{n}/c{chunk}.png"));
            let body = pattern(size, n as u8);
            let pieces = body.chunks(chunk).map(<[u8]>::to_vec).collect();
            let stored = store.put(&k, chunked(pieces)).await.expect("put");
            assert_eq!(stored, size as u64);
            let back = store.get_bytes(&k).await.expect("get");
            assert!(
                back == body,
                "{size} bytes in {chunk}-byte chunks came back different"
            );
        }
    }
    assert!(
        files_under(store.root()).iter().all(|p| !p
            .file_name()
            .is_some_and(|f| f.to_string_lossy().ends_with(".tmp"))),
        "no staged file remains"
    );
}

#[tokio::test]
async fn a_failed_body_leaves_no_file_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;

    let got = store
        .put(
            &key("uploads/j1/i1.png"),
            failing(vec![pattern(100_000, 1); 3]),
        )
        .await;

    assert!(matches!(got, Err(BlobError::Body(_))), "got {got:?}");
    assert!(
        files_under(store.root()).is_empty(),
        "no staged or partial file remains"
    );
}

#[tokio::test]
async fn an_abandoned_put_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    // More than one write batch, then a body that never ends (a stalled
    // client): the first batch is on disk in the staged file by then.
    let body = chunked(vec![pattern(1_200_000, 1)])
        .chain(futures::stream::pending())
        .boxed();
    let k = key("uploads/j1/i1.png");
    // Boxed, so that dropping it drops the future itself.
    let mut put = Box::pin(store.put(&k, body));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while files_under(store.root()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first batch was never staged"
        );
        tokio::select! {
            got = &mut put => panic!("the put ended without its body: {got:?}"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let staged = files_under(store.root());
    assert_eq!(staged.len(), 1, "one staged file: {staged:?}");
    assert!(
        staged[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".i1.png."),
        "the staged file is hidden: {staged:?}"
    );
    drop(put);

    assert!(
        files_under(store.root()).is_empty(),
        "dropping the put removes its staged file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_dropped_at_any_moment_leaves_no_staged_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_in(dir.path()).await);
    let body = || {
        let chunks = pattern(700_000, 3)
            .chunks(64 * 1024)
            .map(<[u8]>::to_vec)
            .collect();
        chunked(chunks)
    };
    // A body that is ready at once: the put's first poll starts its first
    // blocking step and the zero timeout drops the put right after, before
    // that step has made the staged file.
    let ready = || futures::stream::iter([Ok(Bytes::from(pattern(300_000, 4)))]).boxed();
    for n in 0..50 {
        let k = key(&format!("uploads/r{n}/i.png"));
        let _ = tokio::time::timeout(Duration::ZERO, store.put(&k, ready())).await;
    }
    // Then moments spread over a whole put: before the first step, during
    // the writes, around publishing.
    let start = std::time::Instant::now();
    store
        .put(&key("uploads/timing/i.png"), body())
        .await
        .unwrap();
    let whole = start.elapsed().as_micros().max(200) as u64;
    let trials = 100u64;
    for n in 0..trials {
        let at = Duration::from_micros(whole * n / (trials / 2));
        let k = key(&format!("uploads/j{n}/i.png"));
        let _ = tokio::time::timeout(at, store.put(&k, body())).await;
    }

    // Steps still running finish on the blocking pool: wait for them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let staged: Vec<_> = files_under(store.root())
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        if staged.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staged files left behind: {staged:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every object that was published is whole.
    for meta in store.list(&BlobPrefix::root()).await.unwrap() {
        let expected = if meta.key.as_str().starts_with("uploads/r") {
            300_000
        } else {
            700_000
        };
        assert_eq!(meta.size, expected, "{} is whole", meta.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_puts_leave_one_whole_object_and_no_staged_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_in(dir.path()).await);
    let k = key("models/j1/race.glb");
    let bodies: Vec<Vec<u8>> = (0u8..6).map(|n| pattern(200_000, n)).collect();

    let tasks: Vec<_> = bodies
        .iter()
        .cloned()
        .map(|b| {
            let (store, k) = (store.clone(), k.clone());
            tokio::spawn(async move {
                let chunks = b.chunks(8192).map(<[u8]>::to_vec).collect();
                store.put(&k, chunked(chunks)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    let back = std::fs::read(store.root().join("models/j1/race.glb")).unwrap();
    assert!(
        bodies.contains(&back),
        "the file is exactly one of the bodies"
    );
    assert_eq!(files_under(store.root()).len(), 1, "no staged file remains");
}

#[tokio::test]
async fn list_skips_hidden_staging_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store
        .put_bytes(&key("uploads/j1/a.png"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    let folder = store.root().join("uploads/j1");
    std::fs::write(folder.join(".a.png.0123.tmp"), b"staged").unwrap();
    std::fs::write(folder.join("has space.png"), b"odd").unwrap();
    std::fs::write(store.root().join(".DS_Store"), b"junk").unwrap();

    let listed = store.list(&BlobPrefix::root()).await.unwrap();

    let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["uploads/j1/a.png"],
        "only valid keys are objects"
    );
}

#[tokio::test]
async fn delete_prunes_empty_directories_but_keeps_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store
        .put_bytes(&key("uploads/j1/a.png"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    store
        .put_bytes(&key("uploads/j2/b.png"), Bytes::from_static(b"b"))
        .await
        .unwrap();

    store.delete(&key("uploads/j1/a.png")).await.unwrap();

    assert!(
        !store.root().join("uploads/j1").exists(),
        "the empty job folder is gone"
    );
    assert!(
        store.root().join("uploads/j2/b.png").exists(),
        "others stay"
    );
    store.delete(&key("uploads/j2/b.png")).await.unwrap();
    assert!(store.root().is_dir(), "the root stays");
    assert!(!store.root().join("uploads").exists());
}

#[tokio::test]
async fn a_key_whose_folder_is_a_file_is_refused_without_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store
        .put_bytes(&key("models/j1"), Bytes::from_static(b"a file"))
        .await
        .unwrap();

    let got = store
        .put_bytes(&key("models/j1/i1.glb"), Bytes::from_static(b"x"))
        .await;

    assert!(matches!(got, Err(BlobError::Backend(_))), "got {got:?}");
    assert_eq!(
        store.get_bytes(&key("models/j1")).await.unwrap(),
        Bytes::from_static(b"a file")
    );
    assert_not_found(store.get(&key("models/j1/i1.glb")).await);
}

/// A put of a key whose name is a directory (it holds other objects) is
/// refused, and the objects below it and the directory stay as they were.
#[tokio::test]
async fn a_key_that_is_a_folder_is_refused_without_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    store
        .put_bytes(&key("models/j1/i1.glb"), Bytes::from_static(b"model"))
        .await
        .unwrap();

    let got = store
        .put_bytes(&key("models/j1"), Bytes::from_static(b"x"))
        .await;

    match got {
        Err(BlobError::Backend(m)) => assert!(m.contains("a directory is in the way"), "{m}"),
        other => panic!("a put over a folder: {other:?}"),
    }
    assert_eq!(
        store.get_bytes(&key("models/j1/i1.glb")).await.unwrap(),
        Bytes::from_static(b"model")
    );
    assert_eq!(
        files_under(store.root()),
        vec![store.root().join("models/j1/i1.glb")],
        "no staged file left"
    );
}

fn assert_not_found<T>(got: Result<T, BlobError>) {
    assert!(matches!(got, Err(BlobError::NotFound(_))));
}

/// Sets a file's modification time `ago` back, as if written then.
fn age_file(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}

#[tokio::test]
async fn stale_staged_files_are_swept_and_a_live_puts_staging_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path()).await;
    let hour = Duration::from_secs(3600);

    // A live put whose client stalls after more than one batch: its staged
    // file is on disk, written just now.
    let (tx, rx) = futures::channel::mpsc::unbounded::<std::io::Result<Bytes>>();
    tx.unbounded_send(Ok(Bytes::from(pattern(1_200_000, 7))))
        .unwrap();
    let live_key = key("uploads/j1/i1.png");
    let put = {
        let store = store.clone();
        let live_key = live_key.clone();
        tokio::spawn(async move { store.put(&live_key, rx.boxed()).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while files_under(store.root()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never staged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let live = files_under(store.root());

    // What a killed process left two hours ago: a staged file; next to it
    // an old stored object and an old hidden file that is not ours.
    let dead_dir = store.root().join("uploads/j2");
    std::fs::create_dir_all(&dead_dir).unwrap();
    let dead = dead_dir.join(".i2.png.0123456789abcdef.tmp");
    std::fs::write(&dead, vec![1u8; 3000]).unwrap();
    age_file(&dead, 2 * hour);
    let other_dir = store.root().join("uploads/j3");
    store
        .put_bytes(&key("uploads/j3/i3.png"), Bytes::from_static(b"kept"))
        .await
        .unwrap();
    age_file(&other_dir.join("i3.png"), 2 * hour);
    let foreign = other_dir.join(".DS_Store.tmp");
    std::fs::write(&foreign, b"junk").unwrap();
    age_file(&foreign, 2 * hour);

    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);
    let counted = store.sweep_abandoned(cutoff, true).await.unwrap();
    assert_eq!((counted.objects, counted.bytes), (1, 3000));
    assert!(dead.exists(), "a dry run removes nothing");

    let swept = store.sweep_abandoned(cutoff, false).await.unwrap();
    assert_eq!((swept.objects, swept.bytes), (1, 3000));
    assert!(!dead.exists() && !dead_dir.exists(), "swept and pruned");
    assert!(live.iter().all(|p| p.exists()), "the live staging stays");
    assert!(other_dir.join("i3.png").exists() && foreign.exists());
    assert_eq!(
        store.sweep_abandoned(cutoff, false).await.unwrap().objects,
        0
    );

    // The live put still publishes its whole body.
    tx.unbounded_send(Ok(Bytes::from_static(b"end"))).unwrap();
    drop(tx);
    assert_eq!(put.await.unwrap().unwrap(), 1_200_003);
    assert_eq!(store.get_bytes(&live_key).await.unwrap().len(), 1_200_003);
}
