//! Every generator passes the model generator conformance suite: relief,
//! FAL against the fake FAL (real sockets on 127.0.0.1), and the scripted
//! test generator.

mod fal_helpers;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use image2model_core::domain::{
    FaceLimit, GenerateOptions, ImageKind, ItemId, JobId, ModelName, Texture,
};
use image2model_core::generators::fal::FalGenerator;
use image2model_core::generators::relief::ReliefGenerator;
use image2model_core::ports::{GenerateError, GenerateRequest, ModelGenerator};
use image2model_core::testing::conformance::model_generator::{
    GeneratorFixture, Setup, Subject, fixture,
};
use image2model_core::testing::fake_fal::{FakeFal, FakeFalConfig, Scenario};
use image2model_core::testing::generators::{Script, ScriptedGenerator, minimal_glb};
use image2model_core::testing::images;

fn request(model: &str, image: Vec<u8>, face_limit: Option<u32>) -> GenerateRequest {
    GenerateRequest {
        job_id: JobId::new(),
        item_id: ItemId::new(),
        options: GenerateOptions {
            model: ModelName::parse(model).unwrap(),
            face_limit: face_limit.map(|n| FaceLimit::new(n).unwrap()),
            texture: Texture::Standard,
        },
        image: Bytes::from(image),
        image_kind: ImageKind::Png,
        resume_remote_request: None,
    }
}

/// Relief: a small picture succeeds; a 4096 × 4096 one at the largest face
/// limit keeps it busy for about a second or more (made once per test
/// binary); bytes that are no image are rejected.
fn relief() -> Arc<dyn GeneratorFixture> {
    static LARGE: OnceLock<Vec<u8>> = OnceLock::new();
    fixture(|setup| async move {
        let generator: Arc<dyn ModelGenerator> = Arc::new(ReliefGenerator::default());
        match setup {
            Setup::Succeeds => {
                Subject::new(generator, request("relief", images::png(64, 48), None))
            }
            Setup::Slow => {
                let large = tokio::task::spawn_blocking(|| {
                    LARGE.get_or_init(|| images::png(4096, 4096)).clone()
                })
                .await
                .unwrap();
                Subject::new(generator, request("relief", large, Some(FaceLimit::MAX)))
            }
            Setup::Fails => Subject::new(
                generator,
                request("relief", b"\x89PNG\r\n\x1a\nnot really".to_vec(), None),
            )
            .expecting("generation_rejected"),
        }
    })
}

/// FAL against its own fake: a fake that succeeds, one whose requests never
/// complete (their work has stopped once the fake saw every request
/// cancelled), one that refuses the content.
fn fal() -> Arc<dyn GeneratorFixture> {
    fixture(|setup| async move {
        let scenario = match setup {
            Setup::Succeeds => Scenario::Success,
            Setup::Slow => Scenario::NeverCompletes,
            Setup::Fails => Scenario::ContentPolicy,
        };
        let fake = FakeFal::start(FakeFalConfig {
            scenario,
            ..FakeFalConfig::default()
        })
        .await;
        let generator: Arc<dyn ModelGenerator> =
            Arc::new(FalGenerator::new(fal_helpers::fast_config(&fake, fake.key())).unwrap());
        let probe = fake.probe();
        let subject = Subject::new(
            generator,
            request("tripo3d-v2.5", images::png(32, 32), None),
        )
        .with_work_stopped(move || {
            let ids = probe.request_ids();
            !ids.is_empty() && ids.iter().all(|id| probe.is_cancelled(id))
        })
        .keeping(fake);
        match setup {
            Setup::Fails => subject.expecting("content_policy_violation"),
            Setup::Succeeds | Setup::Slow => subject,
        }
    })
}

/// The scripted generator: succeeds with the smallest GLB, hangs on a
/// remote request, fails upstream.
fn scripted() -> Arc<dyn GeneratorFixture> {
    fixture(|setup| async move {
        let script = match setup {
            Setup::Succeeds => Script::Succeed(minimal_glb()),
            Setup::Slow => Script::Hang {
                remote_request: Some("scripted-request".into()),
            },
            Setup::Fails => Script::Fail(GenerateError::Upstream("scripted failure".into())),
        };
        let generator = Arc::new(ScriptedGenerator::new("scripted-model", script));
        let subject = Subject::new(
            generator,
            request("scripted-model", images::png(8, 8), None),
        );
        match setup {
            Setup::Fails => subject.expecting("upstream_error"),
            Setup::Succeeds | Setup::Slow => subject,
        }
    })
}

mod relief {
    image2model_core::model_generator_conformance_tests!(|| async { Some(super::relief()) });
}

mod fal {
    image2model_core::model_generator_conformance_tests!(|| async { Some(super::fal()) });
}

mod scripted {
    image2model_core::model_generator_conformance_tests!(|| async { Some(super::scripted()) });
}

/// The one-test runner visits every check too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_suite_runs_in_one_test() {
    image2model_core::testing::conformance::run_model_generator_suite(|| async { scripted() })
        .await;
}
