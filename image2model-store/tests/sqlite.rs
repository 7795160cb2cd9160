//! The SQLite job store passes the conformance suite; plus what only SQLite has.

use std::sync::Arc;

use image2model_core::ports::JobStore;
use image2model_store::SqliteJobStore;

mod conformance_file {
    use super::*;

    // Each test gets its own database file in its own temporary directory
    // (leaked so that it outlives the store; the OS cleans /tmp).
    image2model_core::job_store_conformance_tests!(|| async {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = SqliteJobStore::open(dir.join("jobs.db"))
            .await
            .expect("open");
        Some(Arc::new(store) as Arc<dyn JobStore>)
    });
}

mod conformance_memory {
    use super::*;

    image2model_core::job_store_conformance_tests!(|| async {
        let store = SqliteJobStore::in_memory().await.expect("open");
        Some(Arc::new(store) as Arc<dyn JobStore>)
    });
}
