//! A scriptable [`ModelGenerator`] for pipeline and server tests.
//!
//! Whatever its script, it keeps the generator contract (the
//! [model generator conformance suite](super::conformance::model_generator)
//! checks it): a model it does not offer is `unknown_model`, a cancelled
//! context gives `cancelled` before anything else happens, and the waiting
//! scripts stop at cancellation or at the deadline (`generation_timeout`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{ModelName, Progress};
use crate::ports::{
    Capacity, GenerateContext, GenerateError, GenerateRequest, GeneratedModel, ModelGenerator,
    ModelInfo, bytes_stream,
};

/// The smallest valid GLB: a JSON chunk with an empty asset, no buffers.
#[must_use]
pub fn minimal_glb() -> Bytes {
    let mut json = br#"{"asset":{"version":"2.0","generator":"image2model-tests"}}"#.to_vec();
    while !json.len().is_multiple_of(4) {
        json.push(b' ');
    }
    let total = 12 + 8 + json.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"glTF");
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&json);
    Bytes::from(out)
}

/// What a [`ScriptedGenerator`] does on each call.
#[derive(Debug, Clone)]
pub enum Script {
    /// Reports progress 10, 50, 90 then returns these bytes as the model.
    Succeed(Bytes),
    /// Fails with this error.
    Fail(GenerateError),
    /// Reports a remote request id, then waits until cancelled (returns
    /// `Cancelled`) or until the deadline (returns `Timeout`).
    Hang {
        /// Reported through `GenerationObserver::remote_request` first.
        remote_request: Option<String>,
    },
    /// Sleeps this long, then succeeds with [`minimal_glb`] (unless cancelled
    /// or past the deadline first).
    Delay(Duration),
    /// Reports progress 1, 2, … up to `steps`, one every `every`, then
    /// succeeds with [`minimal_glb`] (unless cancelled first): a remote
    /// request whose status stream creeps.
    Creep {
        /// Between two reports.
        every: Duration,
        /// Reports, at most 89.
        steps: u8,
    },
    /// Panics.
    Panic,
}

/// A [`ModelGenerator`] that follows a [`Script`], and records what it saw.
#[derive(Debug)]
pub struct ScriptedGenerator {
    model: ModelName,
    script: Mutex<Script>,
    calls: AtomicUsize,
    seen: Mutex<Vec<GenerateRequest>>,
    capacity: Capacity,
    /// Generations running now, and the most ever at once.
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a generation as running while it lives.
struct Running<'a>(&'a ScriptedGenerator);

impl<'a> Running<'a> {
    fn start(g: &'a ScriptedGenerator) -> Self {
        let now = g.running.fetch_add(1, Ordering::SeqCst) + 1;
        g.peak.fetch_max(now, Ordering::SeqCst);
        Self(g)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ScriptedGenerator {
    /// A generator offering `model` that follows `script`.
    #[must_use]
    pub fn new(model: &str, script: Script) -> Self {
        Self {
            model: ModelName::parse(model).expect("valid model name"),
            script: Mutex::new(script),
            calls: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            capacity: Capacity::Local,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The same generator declaring another [`Capacity`] (e.g. remote, to
    /// stand in for FAL in worker tests).
    #[must_use]
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Generations running now.
    #[must_use]
    pub fn running_now(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The most generations that ever ran at once.
    #[must_use]
    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Changes what later calls do.
    pub fn set_script(&self, script: Script) {
        *self.script.lock().expect("script lock") = script;
    }

    /// How many times `generate` was called.
    #[must_use]
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The requests received, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<GenerateRequest> {
        self.seen.lock().expect("seen lock").clone()
    }
}

#[async_trait]
impl ModelGenerator for ScriptedGenerator {
    fn name(&self) -> &str {
        "scripted"
    }

    fn models(&self) -> Vec<ModelInfo> {
        vec![ModelInfo {
            name: self.model.clone(),
            generator: "scripted".into(),
            description: "test generator".into(),
        }]
    }

    async fn generate(
        &self,
        request: GenerateRequest,
        ctx: GenerateContext<'_>,
    ) -> Result<GeneratedModel, GenerateError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _running = Running::start(self);
        if request.options.model != self.model {
            return Err(GenerateError::UnknownModel(request.options.model));
        }
        self.seen.lock().expect("seen lock").push(request);
        if ctx.cancel.is_cancelled() {
            return Err(GenerateError::Cancelled);
        }
        let script = self.script.lock().expect("script lock").clone();
        let past_deadline = || {
            GenerateError::Timeout(format!(
                "the scripted generation took longer than {:?}",
                ctx.deadline
            ))
        };
        match script {
            Script::Succeed(glb) => {
                for p in [10, 50, 90] {
                    ctx.observer.progress(Progress::clamped(p)).await;
                }
                Ok(GeneratedModel {
                    size_hint: Some(glb.len() as u64),
                    glb: bytes_stream(glb),
                    preview: None,
                })
            }
            Script::Fail(e) => Err(e),
            Script::Hang { remote_request } => {
                if let Some(id) = remote_request {
                    ctx.observer.remote_request(&id).await?;
                }
                tokio::select! {
                    () = ctx.cancel.cancelled() => Err(GenerateError::Cancelled),
                    () = tokio::time::sleep(ctx.deadline) => Err(past_deadline()),
                }
            }
            Script::Delay(d) => {
                tokio::select! {
                    biased;
                    () = ctx.cancel.cancelled() => return Err(GenerateError::Cancelled),
                    () = tokio::time::sleep(ctx.deadline), if ctx.deadline < d => {
                        return Err(past_deadline());
                    }
                    () = tokio::time::sleep(d) => {}
                }
                let glb = minimal_glb();
                Ok(GeneratedModel {
                    size_hint: Some(glb.len() as u64),
                    glb: bytes_stream(glb),
                    preview: None,
                })
            }
            Script::Creep { every, steps } => {
                for p in 1..=steps.min(89) {
                    tokio::select! {
                        biased;
                        () = ctx.cancel.cancelled() => return Err(GenerateError::Cancelled),
                        () = tokio::time::sleep(every) => {}
                    }
                    ctx.observer.progress(Progress::clamped(i64::from(p))).await;
                }
                let glb = minimal_glb();
                Ok(GeneratedModel {
                    size_hint: Some(glb.len() as u64),
                    glb: bytes_stream(glb),
                    preview: None,
                })
            }
            Script::Panic => panic!("scripted generator panic"),
        }
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }
}
