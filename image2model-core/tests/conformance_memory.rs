//! The in-memory stores pass the job store, blob store, key store and audit
//! log conformance suites.

use std::sync::Arc;

use image2model_core::memory::{MemoryAuditLog, MemoryBlobStore, MemoryJobStore, MemoryKeyStore};
use image2model_core::ports::{AuditLog, BlobStore, JobStore, KeyStore};

mod job_store {
    use super::*;

    image2model_core::job_store_conformance_tests!(|| async {
        Some(Arc::new(MemoryJobStore::default()) as Arc<dyn JobStore>)
    });
}

mod blob_store {
    use super::*;

    image2model_core::blob_store_conformance_tests!(|| async {
        Some(Arc::new(MemoryBlobStore::default()) as Arc<dyn BlobStore>)
    });
}

mod key_store {
    use super::*;

    image2model_core::key_store_conformance_tests!(|| async {
        Some(Arc::new(MemoryKeyStore::default()) as Arc<dyn KeyStore>)
    });
}

mod audit_log {
    use super::*;

    image2model_core::audit_log_conformance_tests!(|| async {
        Some(Arc::new(MemoryAuditLog::default()) as Arc<dyn AuditLog>)
    });
}

/// The one-test runners visit every check too.
#[tokio::test]
async fn whole_suites_run_in_one_test() {
    image2model_core::testing::conformance::run_job_store_suite(|| async {
        Arc::new(MemoryJobStore::default()) as Arc<dyn JobStore>
    })
    .await;
    image2model_core::testing::conformance::run_blob_store_suite(|| async {
        Arc::new(MemoryBlobStore::default()) as Arc<dyn BlobStore>
    })
    .await;
    image2model_core::testing::conformance::run_key_store_suite(|| async {
        Arc::new(MemoryKeyStore::default()) as Arc<dyn KeyStore>
    })
    .await;
    image2model_core::testing::conformance::run_audit_log_suite(|| async {
        Arc::new(MemoryAuditLog::default()) as Arc<dyn AuditLog>
    })
    .await;
}
