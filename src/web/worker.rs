//! The Web Worker transport of the engine: opens the WebGPU device, fetches model files (hub
//! with Cache Storage, picked files, the demo) and hands every message to the shared
//! [`Session`], which streams its results back by `postMessage`. It runs the same wasm module
//! as the page (`worker.js` imports it); `web::start` sends it here when there is no window.
//!
//! One job runs at a time. Stop sets a flag that the running job reads between steps: each
//! step awaits a GPU readback, which lets the worker's event loop deliver the Stop message.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use burn::tensor::Device;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent};
use web_time::Instant;

use super::loader::{self, MODEL_FILES};
use crate::session::protocol::{FromWorker, ModelSource, ToWorker};
use crate::session::{DEMO_TOKENIZER, ModelFiles, Session, Weights};

struct Worker {
    session: RefCell<Session>,
    /// Jobs wait here while one runs (the KV page sends two runs back to back).
    queue: RefCell<VecDeque<(ToWorker, Vec<File>)>>,
    busy: Cell<bool>,
    stop: Cell<bool>,
}

fn post(message: &FromWorker) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let json = serde_json::to_string(message).expect("worker messages serialize");
    // Posting only fails if the page is gone; nothing is left to tell then.
    let _ = scope.post_message(&JsValue::from_str(&json));
}

/// Entry point in the worker: open WebGPU, then listen.
pub fn run() {
    std::panic::set_hook(Box::new(|info| post(&FromWorker::Error { message: format!("the engine crashed: {info}") })));
    spawn_local(async {
        let opened = Device::wgpu_options().init_with_setup_async().await;
        let (webgpu, device) = match opened {
            Ok((device, setup)) => {
                let info = setup.adapter.get_info();
                let limit = setup.device.limits().max_storage_buffer_binding_size;
                // Browsers may hide the adapter's name.
                let name = if info.name.is_empty() { "unnamed adapter".to_string() } else { info.name };
                (Ok(format!("{name} ({:?}), storage bindings up to {} MiB", info.backend, limit >> 20)), Some(device))
            }
            Err(e) => (Err(format!("{e:?}")), None),
        };
        if let Some(device) = device {
            listen(Rc::new(Worker { session: RefCell::new(Session::new(device)), queue: RefCell::default(), busy: Cell::new(false), stop: Cell::new(false) }));
        }
        post(&FromWorker::Ready { webgpu });
    });
}

fn listen(worker: Rc<Worker>) {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        // A message is its JSON, or [JSON, File…] when local files come with it.
        let data = event.data();
        let (json, files) = match data.dyn_ref::<js_sys::Array>() {
            Some(parts) => (parts.get(0).as_string(), parts.iter().skip(1).filter_map(|f| f.dyn_into::<File>().ok()).collect()),
            None => (data.as_string(), vec![]),
        };
        match json.as_deref().map(serde_json::from_str::<ToWorker>) {
            Some(Ok(message)) => worker.handle(message, files),
            _ => post(&FromWorker::Error { message: "the worker got a message it does not understand".into() }),
        }
    });
    scope.set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    handler.forget();
}

impl Worker {
    fn handle(self: &Rc<Self>, message: ToWorker, files: Vec<File>) {
        if let ToWorker::Stop = message {
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
                if let Err(message) = worker.job(message, files).await {
                    post(&FromWorker::Error { message });
                }
            }
            worker.busy.set(false);
        });
    }

    async fn job(&self, message: ToWorker, picked: Vec<File>) -> Result<(), String> {
        match message {
            ToWorker::Load(source) => self.load(source, picked, false).await,
            ToWorker::LoadDraft(source) => self.load(source, picked, true).await,
            // No borrow_mut happens while a job runs: loads run between jobs, in this same loop.
            job => self.session.borrow().job(job, &post, &|| self.stop.get()).await,
        }
    }

    /// Loads the target model, or (`draft`) the draft model of speculative decoding.
    async fn load(&self, source: ModelSource, picked: Vec<File>, draft: bool) -> Result<(), String> {
        let start = Instant::now();
        let files = match source {
            ModelSource::Hub { hub, repo } => {
                let mut bytes = vec![];
                let mut all_cached = true;
                for file in MODEL_FILES {
                    let url = loader::hub_url(&hub, &repo, file);
                    let (data, cached) = loader::fetch_hub_file(&url, file, |p| {
                        post(&FromWorker::Progress { file: p.file.into(), loaded: p.loaded, total: p.total, mb_per_s: p.mb_per_s, from_cache: p.from_cache })
                    })
                    .await?;
                    all_cached &= cached;
                    bytes.push(data);
                }
                let weights = bytes.pop().expect("three files");
                let tokenizer = bytes.pop().expect("three files");
                ModelFiles { name: repo, config: bytes.pop(), tokenizer, weights: Weights::Safetensors(weights), from_cache: all_cached }
            }
            ModelSource::Files => {
                let mut found: [Option<Vec<u8>>; 3] = [None, None, None];
                for file in &picked {
                    let name = file.name();
                    let slot = match name.as_str() {
                        "config.json" => 0,
                        "tokenizer.json" => 1,
                        n if n.ends_with(".safetensors") => 2,
                        other => return Err(format!("{other}: expected config.json, tokenizer.json and a .safetensors file")),
                    };
                    found[slot] = Some(loader::read_file(file).await?);
                }
                let missing = |slot: usize| format!("{} is missing: pick or drop config.json, tokenizer.json and model.safetensors together", MODEL_FILES[slot]);
                let [config, tokenizer, weights] = found;
                ModelFiles {
                    name: "local files".to_string(),
                    config: Some(config.ok_or_else(|| missing(0))?),
                    tokenizer: tokenizer.ok_or_else(|| missing(1))?,
                    weights: Weights::Safetensors(weights.ok_or_else(|| missing(2))?),
                    from_cache: false,
                }
            }
            ModelSource::Demo { seed } => {
                let (tokenizer, _) = loader::fetch_hub_file(DEMO_TOKENIZER, DEMO_TOKENIZER, |_| {}).await?;
                ModelFiles { name: "demo (gpt2-tiny shape, random weights)".to_string(), config: None, tokenizer, weights: Weights::Random(seed), from_cache: false }
            }
        };
        self.session.borrow_mut().install(files, draft, start, &post)
    }
}
