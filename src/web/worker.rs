//! The Web Worker transport of the engine: opens the WebGPU device, fetches model files (hub
//! with Cache Storage, picked files, the demo; weights streamed to the GPU) and hands every message to the shared
//! [`Session`], which streams its results back by `postMessage`. It runs the same wasm module
//! as the page (`worker.js` imports it); `web::start` sends it here when there is no window.
//!
//! One job runs at a time. Stop sets a flag that the running job reads between steps: each
//! step awaits a GPU readback, which lets the worker's event loop deliver the Stop message.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use burn::tensor::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent};
use web_time::Instant;

use super::loader::{self, MODEL_FILES};
use crate::engine::inspect::op_timer::Clock;
use crate::engine::model::gpt2::{Gpt2, Gpt2Loader};
use crate::engine::model::precision::Precision;
use crate::engine::model::safetensors_stream::{Rows, SafetensorsStream};
use crate::session::error::SessionError;
use crate::session::protocol::{FromEngine, ModelSource, ToEngine};
use crate::session::{PendingLoad, Session, demo_file, demo_name};

struct Worker {
    session: RefCell<Session>,
    /// Jobs wait here while one runs (the KV page sends two runs back to back).
    queue: RefCell<VecDeque<(ToEngine, Vec<File>)>>,
    busy: Cell<bool>,
    stop: Cell<bool>,
}

fn post(message: &FromEngine) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let json = serde_json::to_string(message).expect("worker messages serialize");
    // Posting only fails if the page is gone; nothing is left to tell then.
    let _ = scope.post_message(&JsValue::from_str(&json));
}

/// Entry point in the worker: open WebGPU, then listen.
pub fn run() {
    std::panic::set_hook(Box::new(|info| post(&FromEngine::Error { message: format!("the engine crashed: {info}") })));
    spawn_local(async {
        let opened = Device::wgpu_options().init_with_setup_async().await;
        let (webgpu, device) = match opened {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                // Timestamps time ops without waiting; without them each op's output is awaited.
                let timestamps = setup.adapter.features().contains(cubecl::wgpu::wgpu::Features::TIMESTAMP_QUERY);
                let clock = if timestamps { Clock::Profile } else { Clock::Awaited };
                let limit = setup.device.limits().max_storage_buffer_binding_size;
                // Browsers may hide the adapter's name.
                let name = if info.name.is_empty() { "unnamed adapter".to_string() } else { info.name };
                (
                    Ok(format!("{name} ({:?}), storage bindings up to {} MiB", info.backend, limit >> 20)),
                    Some((device, clock)),
                )
            }
            Err(e) => (Err(format!("{e:?}")), None),
        };
        if let Some((device, clock)) = device {
            listen(Rc::new(Worker {
                session: RefCell::new(Session::new(device).with_clock(clock)),
                queue: RefCell::default(),
                busy: Cell::new(false),
                stop: Cell::new(false),
            }));
        }
        post(&FromEngine::Ready { webgpu });
    });
}

fn listen(worker: Rc<Worker>) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        // A message is its JSON, or [JSON, File…] when local files come with it.
        let data = event.data();
        let (json, files) = match data.dyn_ref::<js_sys::Array>() {
            Some(parts) => {
                (parts.get(0).as_string(), parts.iter().skip(1).filter_map(|f| f.dyn_into::<File>().ok()).collect())
            }
            None => (data.as_string(), vec![]),
        };
        match json.as_deref().map(serde_json::from_str::<ToEngine>) {
            Some(Ok(message)) => worker.handle(message, files),
            _ => post(&FromEngine::Error { message: "the worker got a message it does not understand".into() }),
        }
    });
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    handler.forget();
}

impl Worker {
    fn handle(self: &Rc<Self>, message: ToEngine, files: Vec<File>) {
        if let ToEngine::Stop = message {
            // Stop ends the running job after its current step and drops the waiting ones.
            self.stop.set(true);
            self.queue.borrow_mut().clear();
            return;
        }
        self.queue.borrow_mut().push_back((message, files));
        if self.busy.replace(true) {
            return;
        }
        let worker = Rc::clone(self);
        spawn_local(async move {
            loop {
                let Some((message, files)) = worker.queue.borrow_mut().pop_front() else { break };
                worker.stop.set(false);
                if let Err(error) = worker.job(message, files).await {
                    post(&FromEngine::Error { message: error.to_string() });
                }
            }
            worker.busy.set(false);
        });
    }

    async fn job(&self, message: ToEngine, picked: Vec<File>) -> Result<(), SessionError> {
        match message {
            ToEngine::Load(source) => self.load(source, picked, false).await,
            ToEngine::LoadDraft(source) => self.load(source, picked, true).await,
            // No borrow_mut happens while a job runs: loads run between jobs, in this same loop.
            job => self.session.borrow().job(job, &post, &|| self.stop.get()).await,
        }
    }

    /// Loads a model whose three files are at `url(file)`: config and tokenizer fetched,
    /// `model.safetensors` streamed to the device. Each is kept in Cache Storage.
    async fn load_urls(
        &self,
        name: String,
        url: &dyn Fn(&str) -> String,
        precision: Precision,
        demo: bool,
        draft: bool,
        started: Instant,
    ) -> Result<(), SessionError> {
        let (config, config_cached) = loader::fetch_hub_file(&url(MODEL_FILES[0]), MODEL_FILES[0], progress).await?;
        let (tokenizer, tokenizer_cached) =
            loader::fetch_hub_file(&url(MODEL_FILES[1]), MODEL_FILES[1], progress).await?;
        let load = PendingLoad::begin(name, &config, &tokenizer, demo, precision, draft, &post)?;
        let mut weights = Streamed::new(&self.session, &load)?;
        let weights_cached = loader::stream_hub_file(&url(MODEL_FILES[2]), MODEL_FILES[2], progress, |chunk| {
            weights.feed(&self.session, &load, chunk)
        })
        .await?;
        let model = weights.finish()?;
        self.session.borrow_mut().end_load(
            load,
            model,
            config_cached && tokenizer_cached && weights_cached,
            started,
            &post,
        )
    }

    /// Loads the target model, or (`draft`) the draft model of speculative decoding. A hub's or
    /// a picked `model.safetensors` is streamed: each tensor goes to the GPU as its bytes
    /// arrive, so the tab never holds the file (wasm32 has 4 GB; gpt2-xl's f32 file is 6.2).
    async fn load(&self, source: ModelSource, picked: Vec<File>, draft: bool) -> Result<(), SessionError> {
        let started = Instant::now();
        match source {
            ModelSource::Hub { hub, repo, weights, kv_f16 } => {
                let url = |file: &str| loader::hub_url(&hub, &repo, file);
                self.load_urls(repo.clone(), &url, Precision::from_page(weights, kv_f16), false, draft, started).await
            }
            ModelSource::Files { weights, kv_f16 } => {
                let mut found: [Option<&File>; 3] = [None, None, None];
                for file in &picked {
                    let slot = match file.name().as_str() {
                        "config.json" => 0,
                        "tokenizer.json" => 1,
                        n if n.ends_with(".safetensors") => 2,
                        other => {
                            return Err(format!(
                                "{other}: expected config.json, tokenizer.json and a .safetensors file"
                            )
                            .into());
                        }
                    };
                    found[slot] = Some(file);
                }
                let missing = |slot: usize| {
                    format!(
                        "{} is missing: pick or drop config.json, tokenizer.json and model.safetensors together",
                        MODEL_FILES[slot]
                    )
                };
                let [config, tokenizer, safetensors] = found;
                let config = loader::read_file(config.ok_or_else(|| missing(0))?).await?;
                let tokenizer = loader::read_file(tokenizer.ok_or_else(|| missing(1))?).await?;
                let safetensors = safetensors.ok_or_else(|| missing(2))?;
                let load = PendingLoad::begin(
                    "local files".to_string(),
                    &config,
                    &tokenizer,
                    false,
                    Precision::from_page(weights, kv_f16),
                    draft,
                    &post,
                )?;
                let mut weights = Streamed::new(&self.session, &load)?;
                loader::stream_file(safetensors, progress, |chunk| weights.feed(&self.session, &load, chunk)).await?;
                let model = weights.finish()?;
                self.session.borrow_mut().end_load(load, model, false, started, &post)
            }
            ModelSource::Demo => {
                let url = |file: &str| demo_file(draft, file);
                self.load_urls(demo_name(draft), &url, Precision::default(), true, draft, started).await
            }
        }
    }
}

/// Reports a file's download to the page.
fn progress(p: loader::Progress) {
    post(&FromEngine::Progress {
        file: p.file.into(),
        loaded: p.loaded,
        total: p.total,
        mb_per_s: p.mb_per_s,
        from_cache: p.from_cache,
    })
}

/// A `model.safetensors` on its way to the device: checked header first, then each tensor
/// uploaded as it completes (the token table chunk by chunk). The old model stays until the
/// header has passed its checks.
struct Streamed {
    stream: SafetensorsStream,
    loader: Gpt2Loader,
    unloaded: bool,
}

impl Streamed {
    fn new(session: &RefCell<Session>, load: &PendingLoad) -> Result<Self, SessionError> {
        Ok(Self {
            stream: SafetensorsStream::new(&load.config),
            loader: session.borrow().loader(load)?,
            unloaded: false,
        })
    }

    fn feed(&mut self, session: &RefCell<Session>, load: &PendingLoad, chunk: &[u8]) -> Result<(), String> {
        let Self { stream, loader, unloaded } = self;
        let mut put = |rows: Rows| {
            if !std::mem::replace(unloaded, true) {
                session.borrow_mut().unload(load.draft);
            }
            loader.put_rows(rows)
        };
        stream.feed(chunk, &mut put).map_err(|e| e.to_string())
    }

    fn finish(self) -> Result<Gpt2, SessionError> {
        self.stream.finish()?;
        Ok(self.loader.finish()?)
    }
}
