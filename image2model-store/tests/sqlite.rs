//! The SQLite job store passes the job store, key store and audit log
//! conformance suites; plus what only SQLite has:
//! files, several connections and processes, strict parsing of stored rows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use image2model_core::domain::{ApiKeyId, JobId};
use image2model_core::ports::{
    AuditLog, ClaimOptions, CreateOutcome, JobStore, KeyStore, StoreError,
};
use image2model_core::testing::conformance::job_store::new_job;
use image2model_store::{SqliteDatabase, SqliteOptions};

mod conformance_file {
    use super::*;

    // Each test gets its own database file in its own temporary directory
    // (kept, so that it outlives the store; the OS cleans its temp dir).
    image2model_core::job_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = SqliteDatabase::open(dir.join("jobs.db"))
            .await
            .expect("open");
        Some(Arc::new(store) as Arc<dyn JobStore>)
    });
}

/// `SQLITE_FAST_WRITES=false`: writes share the read pool and run as
/// ordinary transactions; the file behaves the same.
mod conformance_file_without_fast_writes {
    use super::*;

    image2model_core::job_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let options = SqliteOptions { fast_writes: false };
        let store = SqliteDatabase::open_with(dir.join("jobs.db"), options)
            .await
            .expect("open");
        Some(Arc::new(store) as Arc<dyn JobStore>)
    });
}

mod conformance_memory {
    use super::*;

    image2model_core::job_store_conformance_tests!(|| async {
        let store = SqliteDatabase::in_memory().await.expect("open");
        Some(Arc::new(store) as Arc<dyn JobStore>)
    });
}

mod key_store_conformance {
    use super::*;

    image2model_core::key_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = SqliteDatabase::open(dir.join("keys.db"))
            .await
            .expect("open");
        Some(Arc::new(store) as Arc<dyn KeyStore>)
    });
}

mod audit_log_conformance {
    use super::*;

    image2model_core::audit_log_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = SqliteDatabase::open(dir.join("audit.db"))
            .await
            .expect("open");
        Some(Arc::new(store) as Arc<dyn AuditLog>)
    });
}

const LONG: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(60),
    max_attempts: 3,
    models: None,
};

fn alice() -> ApiKeyId {
    ApiKeyId::parse("alice").unwrap()
}

#[tokio::test]
async fn open_creates_the_file_and_its_parent_directories_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/jobs.db");

    let store = SqliteDatabase::open(&path).await.expect("open");

    assert!(path.is_file(), "the database file is created");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fks: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fks, 1, "foreign keys are on");
    let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(timeout >= 1000, "a busy timeout is set, got {timeout} ms");
}

#[tokio::test]
async fn jobs_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let job_id = JobId::new();
    {
        let store = SqliteDatabase::open(&path).await.unwrap();
        store
            .create_job(new_job(job_id, &alice(), 2))
            .await
            .unwrap();
        store.close().await;
    }

    let reopened = SqliteDatabase::open(&path)
        .await
        .expect("reopen runs migrations again");

    let job = reopened
        .get_job(job_id)
        .await
        .unwrap()
        .expect("the job persisted");
    assert_eq!(job.items.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_never_claim_an_item_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let a = Arc::new(SqliteDatabase::open(&path).await.unwrap());
    let b = Arc::new(SqliteDatabase::open(&path).await.unwrap());
    for _ in 0..5 {
        a.create_job(new_job(JobId::new(), &alice(), 4))
            .await
            .unwrap();
    }

    let mut tasks = Vec::new();
    for n in 0..8 {
        let store: Arc<dyn JobStore> = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
                mine.push(c.item.item_id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }

    let unique: HashSet<_> = claimed.iter().collect();
    assert_eq!(claimed.len(), 20, "every item is claimed");
    assert_eq!(unique.len(), 20, "no item is claimed twice across stores");
}

#[tokio::test]
async fn rows_that_fail_domain_parsing_are_corrupt() {
    let store = SqliteDatabase::in_memory().await.unwrap();
    let cases = [
        "UPDATE items SET upload_key = '../../etc/passwd'",
        "UPDATE items SET status = 'exploded'",
        "UPDATE jobs SET owner = 'Not A Key'",
        "UPDATE items SET filename = 'a/b.png'",
        "UPDATE items SET content_type = 'image/gif'",
        "UPDATE jobs SET texture = 'true'",
    ];
    for sql in cases {
        let job_id = JobId::new();
        store
            .create_job(new_job(job_id, &alice(), 1))
            .await
            .unwrap();
        sqlx::query(sql).execute(store.pool()).await.unwrap();

        let got = store.get_job(job_id).await;

        match got {
            Err(e @ StoreError::Corrupt(_)) => {
                assert_eq!(e.code(), "internal_error");
                assert!(!e.to_string().contains("UPDATE"), "no SQL in messages");
            }
            other => panic!("after {sql:?}: expected Corrupt, got {other:?}"),
        }
        store.delete_job(job_id).await.ok();
        sqlx::query("DELETE FROM jobs")
            .execute(store.pool())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_job_without_items_is_refused() {
    let store = SqliteDatabase::in_memory().await.unwrap();
    let mut new = new_job(JobId::new(), &alice(), 1);
    new.items.clear();

    let got = store.create_job(new).await;

    assert!(matches!(got, Err(StoreError::Backend(_))), "got {got:?}");
    assert_eq!(store.stats().await.unwrap().jobs, 0);
}

#[tokio::test]
async fn an_unwritable_location_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();

    // The parent "directory" is a regular file.
    let got = SqliteDatabase::open(file.join("jobs.db")).await;

    match got {
        Err(e) => assert_eq!(e.code(), "store_unavailable", "{e}"),
        Ok(_) => panic!("opening under a file must fail"),
    }
}

#[tokio::test]
async fn idempotent_create_is_atomic_across_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let a = SqliteDatabase::open(&path).await.unwrap();
    let b = SqliteDatabase::open(&path).await.unwrap();
    let mut first = new_job(JobId::new(), &alice(), 1);
    first.idempotency_key = Some("k".into());
    let mut second = new_job(JobId::new(), &alice(), 1);
    second.idempotency_key = Some("k".into());

    let (x, y) = tokio::join!(a.create_job(first), b.create_job(second));

    let created = [x.unwrap(), y.unwrap()]
        .iter()
        .filter(|o| matches!(o, CreateOutcome::Created(_)))
        .count();
    assert_eq!(created, 1);
    assert_eq!(a.stats().await.unwrap().jobs, 1);
}

/// A new job goes in with one command that begins and commits its own
/// transaction; these show that an insert failing half-way stores nothing
/// and leaves no transaction open on a connection that later writes reuse.
#[tokio::test]
async fn a_create_failing_half_way_stores_nothing_and_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteDatabase::open(dir.path().join("jobs.db"))
        .await
        .unwrap();
    let first = new_job(JobId::new(), &alice(), 2);
    let taken = first.items[1].item_id;
    store.create_job(first).await.unwrap();
    // The job row goes in, then its second item collides with a stored one.
    let clash_id = JobId::new();
    let mut clash = new_job(clash_id, &alice(), 2);
    clash.items[1].item_id = taken;

    let got = store.create_job(clash).await;

    assert!(got.is_err(), "got {got:?}");
    assert!(
        store.get_job(clash_id).await.unwrap().is_none(),
        "the job row of the failed create was rolled back"
    );
    // More writes than there are write connections, with and without an
    // idempotency key: each would fail on a connection left in a
    // transaction ("cannot start a transaction within a transaction").
    for n in 0..4 {
        let mut next = new_job(JobId::new(), &alice(), 1);
        if n % 2 == 1 {
            next.idempotency_key = Some(format!("k{n}"));
        }
        store.create_job(next).await.unwrap();
    }
    assert_eq!(store.stats().await.unwrap().jobs, 5);
}

#[tokio::test]
async fn creates_dropped_at_any_moment_store_whole_jobs_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteDatabase::open(dir.path().join("jobs.db"))
            .await
            .unwrap(),
    );
    let mut dropped = Vec::new();
    // Cut short after 0, 50, 100… µs: before the command is sent, while the
    // connection's thread runs it, after it ran.
    for n in 0..60u64 {
        let new = new_job(JobId::new(), &alice(), 3);
        dropped.push(new.job_id);
        let _ = tokio::time::timeout(Duration::from_micros(n * 50), store.create_job(new)).await;
    }
    // A connection left in a transaction would fail these, and a write lock
    // never released would make them wait out the busy timeout and fail.
    for _ in 0..4 {
        tokio::time::timeout(
            Duration::from_secs(30),
            store.create_job(new_job(JobId::new(), &alice(), 1)),
        )
        .await
        .expect("a write after the dropped ones finished")
        .expect("a write after the dropped ones succeeded");
    }
    for id in dropped {
        if let Some(job) = store.get_job(id).await.unwrap() {
            assert_eq!(job.items.len(), 3, "job {id} was stored whole");
        }
    }
}
