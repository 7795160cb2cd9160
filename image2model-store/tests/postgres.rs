//! The Postgres job store passes the job store, key store and audit log
//! conformance suites; plus what only Postgres
//! has: several stores (processes) on one database, connection failures.
//!
//! These tests need a server: set `TEST_DATABASE_URL`, e.g.
//! `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres`. Each test
//! works in a schema of its own (`i2m_test_<ulid>`); schemas older than an
//! hour are dropped by later runs. Without the variable every test prints a
//! "skipped" line and returns.

use std::collections::HashSet;
use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use image2model_core::domain::{ApiKeyId, JobId};
use image2model_core::ports::{AuditLog, ClaimOptions, JobStore, KeyStore, StoreError};
use image2model_core::testing::conformance::job_store::new_job;
use image2model_store::PostgresDatabase;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const VAR: &str = "TEST_DATABASE_URL";

fn test_url() -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Written to the real stderr, past the test harness's capture.
                let _ = writeln!(
                    std::io::stderr(),
                    "postgres tests skipped: set {VAR} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run them"
                );
            });
            None
        }
    }
}

/// Connection options for a new, empty schema of this test's own.
async fn fresh_schema() -> Option<PgConnectOptions> {
    let url = test_url()?;
    let mut admin = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{VAR} is set but the server does not answer: {e}"));
    drop_stale_schemas(&mut admin).await;
    let schema = format!("i2m_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    admin.close().await.ok();
    Some(
        PgConnectOptions::from_str(&url)
            .expect("TEST_DATABASE_URL parses")
            .options([("search_path", schema)]),
    )
}

/// Drops test schemas left by runs more than an hour ago.
async fn drop_stale_schemas(admin: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'i2m_test_%'",
    )
    .fetch_all(&mut *admin)
    .await
    .unwrap_or_default();
    let now = std::time::SystemTime::now();
    for name in names {
        let Ok(id) = ulid::Ulid::from_string(&name["i2m_test_".len()..].to_uppercase()) else {
            continue;
        };
        let stale = now
            .duration_since(id.datetime())
            .is_ok_and(|age| age > Duration::from_secs(3600));
        if stale {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *admin)
            .await;
        }
    }
}

async fn fresh_store() -> Option<PostgresDatabase> {
    let options = fresh_schema().await?;
    Some(
        PostgresDatabase::connect_with(options, 10)
            .await
            .expect("connect and migrate"),
    )
}

mod conformance {
    use super::*;

    image2model_core::job_store_conformance_tests!(|| async {
        fresh_store()
            .await
            .map(|s| Arc::new(s) as Arc<dyn JobStore>)
    });
}

mod key_store_conformance {
    use super::*;

    image2model_core::key_store_conformance_tests!(|| async {
        fresh_store()
            .await
            .map(|s| Arc::new(s) as Arc<dyn KeyStore>)
    });
}

mod audit_log_conformance {
    use super::*;

    image2model_core::audit_log_conformance_tests!(|| async {
        fresh_store()
            .await
            .map(|s| Arc::new(s) as Arc<dyn AuditLog>)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_never_claim_an_item_twice() {
    let Some(options) = fresh_schema().await else {
        return;
    };
    let a = Arc::new(
        PostgresDatabase::connect_with(options.clone(), 5)
            .await
            .unwrap(),
    );
    let b = Arc::new(PostgresDatabase::connect_with(options, 5).await.unwrap());
    for _ in 0..6 {
        a.create_job(new_job(JobId::new(), &alice(), 5))
            .await
            .unwrap();
    }

    let mut tasks = Vec::new();
    for n in 0..10 {
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
    assert_eq!(claimed.len(), 30, "every item is claimed");
    assert_eq!(unique.len(), 30, "no item is claimed twice across stores");
    let stats = b.stats().await.unwrap();
    assert_eq!((stats.queued, stats.running), (0, 30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_workers_leaves_no_item_running() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let job = JobId::new();
    store.create_job(new_job(job, &alice(), 8)).await.unwrap();

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
                    store
                        .record_progress(c.item.item_id, &c.token, 50u8.try_into().unwrap())
                        .await
                        .expect("record_progress");
                }
            })
        })
        .collect();
    let cancelled = store.cancel_job(job).await.expect("cancel_job").unwrap();
    for w in workers {
        w.await.expect("no worker deadlocks or errors");
    }

    assert!(cancelled.cancel_requested);
    let after = store.get_job(job).await.unwrap().unwrap();
    assert!(
        after.items.iter().all(|i| i.status.is_terminal()),
        "every item ended: {:?}",
        after.items.iter().map(|i| i.status).collect::<Vec<_>>()
    );
}

/// A batch renewal locks its rows in the order cancels and deletes lock a
/// job's items (by job, then position), whatever order the leases come in:
/// renewals of every lease, last item first, racing cancels of every job
/// never deadlock (Postgres would abort one of them with an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_renewals_racing_cancels_never_deadlock() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let store = Arc::new(store);
    let mut jobs = Vec::new();
    for _ in 0..12 {
        let id = JobId::new();
        store.create_job(new_job(id, &alice(), 25)).await.unwrap();
        jobs.push(id);
    }
    let mut leases = Vec::new();
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        leases.push((c.item.item_id, c.token));
    }
    assert_eq!(leases.len(), 300);
    leases.reverse();
    let leases = Arc::new(leases);

    let renewers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let leases = leases.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    store
                        .renew_leases(&leases, LONG.lease)
                        .await
                        .expect("renew_leases never deadlocks");
                }
            })
        })
        .collect();
    for id in &jobs {
        store
            .cancel_job(*id)
            .await
            .expect("cancel_job never deadlocks");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in renewers {
        r.await.expect("renewer");
    }

    let lost = store.renew_leases(&leases, LONG.lease).await.unwrap();
    assert_eq!(
        lost.len(),
        300,
        "every item was cancelled: no lease is held"
    );
}

#[tokio::test]
async fn rows_that_fail_domain_parsing_are_corrupt() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let job_id = JobId::new();
    store
        .create_job(new_job(job_id, &alice(), 1))
        .await
        .unwrap();
    sqlx::query("UPDATE items SET model_key = 'models/../../x'")
        .execute(store.pool())
        .await
        .unwrap();

    let got = store.get_job(job_id).await;

    assert!(matches!(got, Err(StoreError::Corrupt(_))), "got {got:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: nothing listens there. Runs without TEST_DATABASE_URL.
    let options = PgConnectOptions::from_str("postgres://app:hunter2@127.0.0.1:1/none").unwrap();

    let got = PostgresDatabase::connect_with(options, 1).await;

    match got {
        Err(e) => {
            assert!(matches!(e, StoreError::Unavailable(_)), "got {e:?}");
            assert_eq!(e.code(), "store_unavailable");
            assert!(!e.to_string().contains("hunter2"), "no password in {e}");
        }
        Ok(_) => panic!("nothing listens on port 1"),
    }
}
