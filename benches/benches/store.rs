//! The stores on their real engines: blob put/get on the local file system
//! (each put is flushed with fsync and renamed, as in production), and the job
//! queue's hot calls (create, get, claim + finish) on SQLite and PostgreSQL.
//!
//! PostgreSQL is measured when a server answers at `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), in a schema of
//! its own (`i2m_bench_<ulid>`) that is dropped afterwards; otherwise its
//! benches are skipped with a notice.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use image2model_core::domain::{
    ApiKeyId, BlobKey, DisplayName, GenerateOptions, ImageKind, ItemId, JobId, ModelName, Texture,
};
use image2model_core::ports::{
    BlobStore, ByteStream, ClaimOptions, ItemOutcome, JobStore, NewItem, NewJob,
};
use image2model_store::{LocalBlobStore, PostgresDatabase, SqliteDatabase};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::runtime::Runtime;

/// The body of a blob put, in the 64 KiB chunks an upload arrives in.
fn chunked(bytes: &Bytes) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|at| Ok(bytes.slice(at..(at + 64 * 1024).min(bytes.len()))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

fn bench_local_blobs(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(LocalBlobStore::open(dir.path())).unwrap();
    let job = JobId::new();
    let mut g = c.benchmark_group("blob_local");
    g.sample_size(20);
    for size in [64usize << 10, 1 << 20, 10 << 20] {
        let body = Bytes::from(vec![7u8; size]);
        let key = BlobKey::upload(job, ItemId::new(), ImageKind::Png);
        let label = if size < 1 << 20 {
            format!("{}KiB", size >> 10)
        } else {
            format!("{}MiB", size >> 20)
        };
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("put", &label), &body, |b, body| {
            b.to_async(&rt)
                .iter(|| async { store.put(&key, chunked(body)).await.unwrap() });
        });
        g.bench_with_input(BenchmarkId::new("get", &label), &key, |b, key| {
            b.to_async(&rt).iter(|| async {
                let mut object = store.get(key).await.unwrap();
                let mut n = 0;
                while let Some(chunk) = object.stream.next().await {
                    n += chunk.unwrap().len();
                }
                assert_eq!(n, size);
            });
        });
    }
    g.finish();
}

/// A job of one item, as an upload of one image makes.
fn new_job(owner: &ApiKeyId) -> NewJob {
    let job_id = JobId::new();
    let item_id = ItemId::new();
    NewJob {
        job_id,
        owner: owner.clone(),
        options: GenerateOptions {
            model: ModelName::parse("tripo3d-v2.5").unwrap(),
            face_limit: None,
            texture: Texture::Standard,
        },
        idempotency_key: None,
        items: vec![NewItem {
            item_id,
            filename: DisplayName::sanitize("photo.jpg"),
            content_type: ImageKind::Jpeg,
            size_bytes: 1_000_000,
            width: 1024,
            height: 768,
            upload_key: BlobKey::upload(job_id, item_id, ImageKind::Jpeg),
        }],
        charge: None,
        callback: None,
    }
}

const CLAIM: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(60),
    max_attempts: 3,
    models: None,
};

/// create_job, get_job, and claim_next + finish_item on one store.
fn bench_job_store(c: &mut Criterion, rt: &Runtime, name: &str, store: &Arc<dyn JobStore>) {
    let owner = ApiKeyId::bootstrap_user();
    let mut g = c.benchmark_group(format!("job_{name}"));
    g.sample_size(20);
    g.bench_function("create_job", |b| {
        b.to_async(rt)
            .iter(|| async { store.create_job(new_job(&owner)).await.unwrap() });
    });
    let probe = JobId::new();
    let mut probe_job = new_job(&owner);
    probe_job.job_id = probe;
    rt.block_on(store.create_job(probe_job)).unwrap();
    g.bench_function("get_job", |b| {
        b.to_async(rt)
            .iter(|| async { store.get_job(probe).await.unwrap().unwrap() });
    });
    // Claims take the oldest queued item: drain what create_job left first.
    rt.block_on(async {
        while let Some(claim) = store.claim_next(CLAIM).await.unwrap() {
            finish(store, claim).await;
        }
    });
    g.bench_function("claim_and_finish", |b| {
        let owner = &owner;
        b.to_async(rt).iter_custom(|iters| async move {
            for _ in 0..iters {
                store.create_job(new_job(owner)).await.unwrap();
            }
            let start = Instant::now();
            for _ in 0..iters {
                let claim = store
                    .claim_next(CLAIM)
                    .await
                    .unwrap()
                    .expect("a queued item");
                finish(store, claim).await;
            }
            start.elapsed()
        });
    });
    g.finish();
}

async fn finish(store: &Arc<dyn JobStore>, claim: image2model_core::ports::Claim) {
    let outcome = ItemOutcome::Succeeded {
        model_key: BlobKey::model(claim.job.job_id, claim.item.item_id),
        preview_key: None,
    };
    assert!(
        store
            .finish_item(claim.item.item_id, &claim.token, outcome)
            .await
            .unwrap()
    );
}

fn bench_sqlite(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = Arc::new(
        rt.block_on(SqliteDatabase::open(dir.path().join("bench.db")))
            .unwrap(),
    );
    bench_job_store(c, &rt, "sqlite", &store);
}

fn bench_postgres(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let url = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let schema = format!("i2m_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    let admin = rt.block_on(async {
        let mut admin = PgConnection::connect(&url).await.ok()?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .ok()?;
        Some(admin)
    });
    let Some(mut admin) = admin else {
        eprintln!(
            "job_postgres: skipped, no PostgreSQL answers at TEST_DATABASE_URL or the default"
        );
        return;
    };
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store: Arc<dyn JobStore> = Arc::new(
        rt.block_on(PostgresDatabase::connect_with(options, 4))
            .unwrap(),
    );
    bench_job_store(c, &rt, "postgres", &store);
    drop(store);
    rt.block_on(async {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut admin)
        .await;
    });
}

criterion_group!(benches, bench_local_blobs, bench_sqlite, bench_postgres);
criterion_main!(benches);
