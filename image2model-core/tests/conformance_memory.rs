//! The in-memory stores pass the job store and blob store conformance suites.

use std::sync::Arc;

use image2model_core::memory::{MemoryBlobStore, MemoryJobStore};
use image2model_core::ports::{BlobStore, JobStore};

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
}
