//! Any body through the real upload route, in process: the server's
//! endpoint (request gate, auth, rate limits, the streamed multipart reader,
//! the core's upload pipeline) over memory stores. The answer is always one
//! of the documented ones (202, 400, 413, 415: never a 5xx), a refused
//! upload leaves no file behind, and an accepted one stores exactly one
//! file per item of its job.
#![no_main]

use std::sync::{Arc, OnceLock};

use image2model_core::auth::StaticKeys;
use image2model_core::domain::BlobPrefix;
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::memory::{MemoryAuditLog, MemoryBlobStore, MemoryJobStore, MemoryKeyStore};
use image2model_core::ports::BlobStore;
use image2model_http::App;
use image2model_http::config::Config;
use libfuzzer_sys::fuzz_target;
use poem::endpoint::BoxEndpoint;
use poem::http::{Method, StatusCode};
use poem::{Body, Endpoint, Request};

const USER_KEY: &str = "fuzz-user-key-0123456789abcdef0123";
const ADMIN_KEY: &str = "fuzz-admin-key-0123456789abcdef012";
/// The boundary the seeds use.
const BOUNDARY: &str = "XfuzzX";

struct Harness {
    rt: tokio::runtime::Runtime,
    endpoint: BoxEndpoint<'static>,
    blobs: Arc<MemoryBlobStore>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let vars = [
            ("API_KEY", USER_KEY),
            ("ADMIN_API_KEY", ADMIN_KEY),
            ("DATABASE_URL", "memory://"),
            ("STORAGE_URL", "memory://"),
            ("RATE_LIMIT_UPLOAD_PER_MINUTE", "4000000000"),
            ("RATE_LIMIT_PER_HOUR", "4000000000"),
            ("MAX_FILES", "3"),
            ("MAX_FILE_BYTES", "65536"),
            ("MAX_IMAGE_PIXELS", "1000000"),
        ];
        let config = Config::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("the harness's configuration");
        let keys = StaticKeys::bootstrap(config.api_key.clone(), config.admin_api_key.clone());
        let blobs = Arc::new(MemoryBlobStore::default());
        let app = rt
            .block_on(
                App::builder(config)
                    .job_store(Arc::new(MemoryJobStore::default()))
                    .blob_store(blobs.clone())
                    .key_store(Arc::new(MemoryKeyStore::default()))
                    .audit_log(Arc::new(MemoryAuditLog::default()))
                    .generators(vec![Arc::new(ReliefGenerator::default())])
                    .bootstrap_keys(keys)
                    .build(),
            )
            .expect("the app builds");
        Harness {
            rt,
            endpoint: app.endpoint(),
            blobs,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        let count = || async {
            h.blobs
                .list(&BlobPrefix::root())
                .await
                .expect("memory list")
                .len()
        };
        let before = count().await;
        let request = Request::builder()
            .method(Method::POST)
            .uri_str("/api/v1/upload")
            .header("authorization", format!("Bearer {USER_KEY}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(data.to_vec()));
        let response = h.endpoint.get_response(request).await;
        let status = response.status();
        let body = response.into_body().into_vec().await.expect("the answer");
        let after = count().await;
        assert!(
            matches!(
                status,
                StatusCode::ACCEPTED
                    | StatusCode::BAD_REQUEST
                    | StatusCode::PAYLOAD_TOO_LARGE
                    | StatusCode::UNSUPPORTED_MEDIA_TYPE
            ),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status == StatusCode::ACCEPTED {
            let job: serde_json::Value = serde_json::from_slice(&body).expect("a job");
            let items = job["items"].as_array().map_or(0, Vec::len);
            assert!(items >= 1, "{job}");
            assert_eq!(after, before + items, "one stored file per item");
        } else {
            assert_eq!(after, before, "a refused upload leaves nothing: {status}");
        }
    });
});
