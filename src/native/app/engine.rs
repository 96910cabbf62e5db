//! The native transport's engine thread: owns the device and the shared [`Session`], runs the
//! page's jobs one at a time as the Web Worker does, and fetches model files natively (a local
//! folder, or a hub repo through the native cache).
//!
//! One page drives the engine at a time; a page that connects takes it over (a reload, or a
//! second tab), and the previous page's socket is closed. Models stay loaded across pages.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};
use burn::tensor::Device;
use tokio::sync::mpsc::UnboundedSender;
use web_time::Instant;

use crate::engine::model::precision::Precision;
use crate::native::hub;
use crate::native::model_dir;
use crate::session::error::SessionError;
use crate::session::protocol::{FromEngine, ModelInfo, ModelSource, ToEngine};
use crate::session::{ModelFiles, Session, demo_file, demo_name};

use super::say;
use super::web_app::WebApp;

/// The page currently connected: its number and where its messages go (as JSON).
struct Page {
    id: u64,
    out: UnboundedSender<String>,
}

pub struct AppEngine {
    /// The device in words, as the page's engine switch shows it.
    pub description: String,
    jobs: Mutex<VecDeque<(u64, ToEngine)>>,
    wake: Condvar,
    stop: AtomicBool,
    page: Mutex<Option<Page>>,
    pages: AtomicU64,
    /// The loaded model, told to a page that connects after it was loaded.
    model: Mutex<Option<ModelInfo>>,
    /// The web app's files: they hold the demo model's tokenizer.
    web_app: Arc<WebApp>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic is caught per job, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AppEngine {
    /// Starts the engine thread on `device`.
    pub fn spawn(device: Device, description: String, web_app: Arc<WebApp>) -> Result<Arc<Self>> {
        let engine = Arc::new(Self {
            description,
            jobs: Mutex::default(),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            page: Mutex::default(),
            pages: AtomicU64::new(0),
            model: Mutex::default(),
            web_app,
        });
        let running = engine.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || running.run(Session::new(device)))
            .context("cannot start the engine thread")?;
        Ok(engine)
    }

    /// A page connected: it becomes the one the engine answers (the previous page's jobs are
    /// dropped and its socket closes); it is told the device and the model already loaded.
    pub fn attach(&self, out: UnboundedSender<String>) -> u64 {
        let id = self.pages.fetch_add(1, Ordering::SeqCst) + 1;
        self.stop();
        let hello = [
            Some(FromEngine::Ready { webgpu: Ok(self.description.clone()) }),
            lock(&self.model).clone().map(|info| FromEngine::Loaded { info, load_ms: 0.0, wasm_memory_bytes: None }),
        ];
        for message in hello.iter().flatten() {
            let _ = out.send(json(message));
        }
        *lock(&self.page) = Some(Page { id, out });
        say(&format!("inferlab app: page {id} connected"));
        id
    }

    /// Queues a job from page `id`; Stop ends the running job after its step and drops the
    /// waiting ones, as in the worker.
    pub fn submit(&self, id: u64, message: ToEngine) {
        if let ToEngine::Stop = message {
            return self.stop();
        }
        lock(&self.jobs).push_back((id, message));
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.jobs).clear();
    }

    /// Tells the error to page `id` alone (a message it sent that is not part of the protocol).
    pub fn reply_error(&self, id: u64, message: String) {
        self.send_to(id, &FromEngine::Error { message });
    }

    fn send_to(&self, id: u64, message: &FromEngine) {
        let page = lock(&self.page);
        if let Some(page) = page.as_ref().filter(|p| p.id == id) {
            // A closed page is gone; its socket task ends on its own.
            let _ = page.out.send(json(message));
        }
    }

    fn run(&self, mut session: Session) {
        loop {
            let (id, job) = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if let Some(job) = jobs.pop_front() {
                        break job;
                    }
                    jobs = self.wake.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.stop.store(false, Ordering::SeqCst);
            let post = |message: &FromEngine| {
                match message {
                    // Known before the page hears of it, so a page that connects next is told too.
                    FromEngine::Loaded { info, load_ms, .. } => {
                        *lock(&self.model) = Some(info.clone());
                        say(&format!("inferlab app: loaded {} in {load_ms:.0} ms", info.name));
                    }
                    FromEngine::Done { run, ids, total_ms, stop_reason, .. } => say(&format!(
                        "inferlab app: {run:?} generated {} tokens in {total_ms:.0} ms (stop: {stop_reason:?})",
                        ids.len()
                    )),
                    _ => {}
                }
                self.send_to(id, message)
            };
            let stop = || self.stop.load(Ordering::SeqCst);
            let outcome = catch_unwind(AssertUnwindSafe(|| match job {
                ToEngine::Load(source) => self.load(&mut session, source, false, &post),
                ToEngine::LoadDraft(source) => self.load(&mut session, source, true, &post),
                job => pollster::block_on(session.job(job, &post, &stop)),
            }));
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(panic) => Some(format!("the engine failed: {}", crate::native::panic_message(panic.as_ref()))),
            };
            if let Some(message) = error {
                post(&FromEngine::Error { message });
            }
        }
    }

    fn load(
        &self,
        session: &mut Session,
        source: ModelSource,
        draft: bool,
        post: &dyn Fn(&FromEngine),
    ) -> Result<(), SessionError> {
        let started = Instant::now();
        let files = self.fetch(source, draft, post).map_err(|e| SessionError::Transport(format!("{e:#}")))?;
        session.install(files, draft, started, post)
    }

    /// One of the demo pair, from the web app's files.
    fn demo(&self, draft: bool) -> Result<ModelFiles> {
        let read = |file| self.web_app.read(&demo_file(draft, file)).context("cannot read the demo pair");
        Ok(ModelFiles {
            name: demo_name(draft),
            config: read("config.json")?,
            tokenizer: read("tokenizer.json")?,
            weights: read("model.safetensors")?,
            from_cache: false,
            precision: Precision::default(),
            demo: true,
        })
    }

    /// The model's files: a local folder if `repo` names one, else the hub's (through the cache), or
    /// one of the demo pair.
    fn fetch(&self, source: ModelSource, draft: bool, post: &dyn Fn(&FromEngine)) -> Result<ModelFiles> {
        match source {
            ModelSource::Hub { hub: hub_url, repo, weights, kv_f16 } => {
                let folder = Path::new(&repo).is_dir();
                let from_cache = !folder
                    && hub::MODEL_FILES.iter().all(|f| hub::repo_dir(&hub::cache_root(), &repo).join(f).is_file());
                if !folder && !from_cache && hub::is_repo_id(&repo) {
                    post(&FromEngine::Loading {
                        stage: format!(
                            "downloading {repo} from {hub_url} into the native cache (progress in the terminal)"
                        ),
                    });
                }
                let dir = model_dir::resolve(&repo, &hub_url)?;
                post(&FromEngine::Loading { stage: format!("reading {}", dir.display()) });
                let read = |file| model_dir::read(&dir, file);
                Ok(ModelFiles {
                    name: repo.clone(),
                    config: read("config.json")?,
                    tokenizer: read("tokenizer.json")?,
                    weights: read("model.safetensors")?,
                    from_cache,
                    precision: Precision::from_page(weights, kv_f16),
                    demo: false,
                })
            }
            ModelSource::Files { .. } => anyhow::bail!(
                "the native engine cannot take files picked in the page: type the folder that holds them in the Model box and load it"
            ),
            ModelSource::Demo => self.demo(draft),
        }
    }
}

fn json(message: &FromEngine) -> String {
    serde_json::to_string(message).expect("engine messages serialize")
}
