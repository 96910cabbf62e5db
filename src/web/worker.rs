//! The engine's side of the Web Worker: opens the WebGPU device, loads models and runs
//! generations, streaming every token back to the page. It runs the same wasm module as the
//! page (`worker.js` imports it); `web::start` sends it here when there is no window.
//!
//! One job runs at a time. Stop sets a flag that the running job reads between steps: each
//! step awaits a GPU readback, which lets the worker's event loop deliver the Stop message.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::rc::Rc;

use burn::tensor::Device;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DedicatedWorkerGlobalScope, File, MessageEvent};
use web_time::Instant;

use super::{batching_jobs, decoding_jobs};
use super::loader::{self, MODEL_FILES};
use super::protocol::{FromWorker, ModelInfo, ModelSource, ToWorker};
use crate::engine::config::Gpt2Config;
use crate::engine::generate::{GenerateOptions, fit_context, generate};
use crate::engine::gpt2::Gpt2;
use crate::engine::kv::memory::param_count;
use crate::engine::kv::{DEFAULT_BLOCK_SIZE, KvMode};
use crate::engine::simulate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::weights::Gpt2Weights;
use crate::engine::window_drift::window_drift;

/// The real GPT-2 tokenizer, shipped next to the app for the offline demo model.
const DEMO_TOKENIZER: &str = "gpt2-tokenizer.json";

struct Loaded {
    name: String,
    model: Gpt2,
    tokenizer: Tokenizer,
}

/// The raw pieces of a model before parsing; no config means the demo's (gpt2-tiny's shape).
struct Files {
    config: Option<Vec<u8>>,
    tokenizer: Vec<u8>,
    weights: Weights,
}

enum Weights {
    Safetensors(Vec<u8>),
    /// The demo model's: made from this seed.
    Random(u64),
}

struct Worker {
    device: Device,
    model: RefCell<Option<Rc<Loaded>>>,
    /// The draft model of speculative decoding, if one was loaded.
    draft: RefCell<Option<Rc<Loaded>>>,
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
            listen(Rc::new(Worker { device, model: RefCell::new(None), draft: RefCell::new(None), queue: RefCell::default(), busy: Cell::new(false), stop: Cell::new(false) }));
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
            ToWorker::Speculate { prompt, draft, options, sweep } => {
                let loaded = self.loaded()?;
                let draft_model = self.draft.borrow().clone();
                let draft_model = draft_model.as_ref().map(|d| &d.model);
                decoding_jobs::speculate(&loaded.model, &loaded.tokenizer, draft_model, &prompt, &draft, options, &sweep, post, || self.stop.get()).await
            }
            ToWorker::Beam { prompt, options } => {
                let loaded = self.loaded()?;
                decoding_jobs::beam(&loaded.model, &loaded.tokenizer, &prompt, options, post, || self.stop.get()).await
            }
            ToWorker::Generate { run, prompt, max_new_tokens, sampling, kv } => {
                let loaded = self.loaded()?;
                let kv: KvMode = kv.parse().map_err(|e| format!("{e}"))?;
                let ids = loaded.tokenizer.encode(&prompt).map_err(|e| e.to_string())?;
                let (ids, max_new_tokens, _) = fit_context(&ids, max_new_tokens, loaded.model.config.n_positions, false).map_err(|e| e.to_string())?;
                post(&FromWorker::Prompt { run, ids: ids.clone() });
                let eos_token_ids = loaded.model.config.eos_token_id.into_iter().collect();
                let options = GenerateOptions { max_new_tokens, sampling, kv, eos_token_ids, stop_strings: vec![] };
                let mut new_ids = vec![];
                let out = generate(&loaded.model, &ids, &options, Some(&loaded.tokenizer), |event| {
                    new_ids.push(event.id);
                    let text = loaded.tokenizer.decode(&new_ids).unwrap_or_default();
                    post(&FromWorker::Token { run, index: event.index, id: event.id, text, step_ms: event.step_ms });
                    if self.stop.get() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                })
                .await
                .map_err(|e| e.to_string())?;
                let stop_reason = serde_json::to_value(out.stop_reason).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                post(&FromWorker::Done {
                    run,
                    ids: out.new_ids,
                    text: out.text.unwrap_or_default(),
                    ttft_ms: out.ttft_ms,
                    total_ms: out.total_ms,
                    stop_reason,
                });
                Ok(())
            }
            ToWorker::WindowDrift { prompt, new_tokens, window } => {
                let loaded = self.loaded()?;
                let ids = loaded.tokenizer.encode(&prompt).map_err(|e| e.to_string())?;
                window_drift(&loaded.model, &ids, new_tokens, window, |step| {
                    post(&FromWorker::Drift(step.clone()));
                    if self.stop.get() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
                })
                .await
                .map_err(|e| e.to_string())?;
                post(&FromWorker::DriftDone);
                Ok(())
            }
            ToWorker::MeasureCost => {
                let loaded = self.loaded()?;
                let (cost, timings) = simulate::fit_cost(&loaded.model, DEFAULT_BLOCK_SIZE, true, |_| {}).await.map_err(|e| e.to_string())?;
                let error_pct = cost.mean_error_pct(&timings);
                post(&FromWorker::Cost { cost, timings, error_pct, model: loaded.name.clone() });
                Ok(())
            }
            ToWorker::Simulate { workload, configs, cost, rates } => {
                let start = Instant::now();
                let vocab = self.model.borrow().as_ref().map_or(50257, |l| l.model.config.vocab_size);
                let (runs, curves) = batching_jobs::simulate_all(&workload, &configs, cost, &rates, vocab)?;
                post(&FromWorker::Simulated { runs, curves, wall_ms: start.elapsed().as_secs_f64() * 1000.0 });
                Ok(())
            }
            ToWorker::BatchReal { workload, config, cost } => {
                let loaded = self.loaded()?;
                let (real, simulated, matches_solo) = batching_jobs::real_run(&loaded.model, &workload, config, cost, || self.stop.get()).await?;
                post(&FromWorker::RealRun { real, simulated, matches_solo });
                Ok(())
            }
            ToWorker::Stop => Ok(()),
        }
    }

    fn loaded(&self) -> Result<Rc<Loaded>, String> {
        self.model.borrow().clone().ok_or_else(|| "no model is loaded yet".to_string())
    }

    /// Loads the target model, or (`draft`) the draft model of speculative decoding.
    async fn load(&self, source: ModelSource, picked: Vec<File>, draft: bool) -> Result<(), String> {
        let start = Instant::now();
        let (name, files, from_cache, demo) = match source {
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
                (repo, Files { config: bytes.pop(), tokenizer, weights: Weights::Safetensors(weights) }, all_cached, false)
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
                let files = Files {
                    config: Some(config.ok_or_else(|| missing(0))?),
                    tokenizer: tokenizer.ok_or_else(|| missing(1))?,
                    weights: Weights::Safetensors(weights.ok_or_else(|| missing(2))?),
                };
                ("local files".to_string(), files, false, false)
            }
            ModelSource::Demo { seed } => {
                let (tokenizer, _) = loader::fetch_hub_file(DEMO_TOKENIZER, DEMO_TOKENIZER, |_| {}).await?;
                ("demo (gpt2-tiny shape, random weights)".to_string(), Files { config: None, tokenizer, weights: Weights::Random(seed) }, false, true)
            }
        };
        post(&FromWorker::Loading { stage: "parsing config and tokenizer".into() });
        let config = match &files.config {
            Some(bytes) => Gpt2Config::from_json(std::str::from_utf8(bytes).map_err(|_| "config.json is not UTF-8 text".to_string())?),
            None => Gpt2Config::named("gpt2-tiny"),
        }
        .map_err(|e| e.to_string())?;
        let tokenizer = Tokenizer::from_bytes(&files.tokenizer).map_err(|e| e.to_string())?;
        post(&FromWorker::Loading { stage: "checking weights and uploading them to the GPU".into() });
        let weights = match &files.weights {
            Weights::Safetensors(bytes) => Gpt2Weights::from_safetensors(bytes, &config).map_err(|e| e.to_string())?,
            Weights::Random(seed) => Gpt2Weights::random(&config, *seed),
        };
        drop(files);
        // Everything checked: the old model's buffers go before the new one's arrive (a failed
        // load above leaves the old model in place).
        let slot = if draft { &self.draft } else { &self.model };
        slot.replace(None);
        let model = Gpt2::new(config.clone(), weights, &self.device);
        let info = ModelInfo {
            name,
            params: param_count(&config),
            config: config.clone(),
            from_cache,
            demo,
        };
        slot.replace(Some(Rc::new(Loaded { name: info.name.clone(), model, tokenizer })));
        if draft {
            post(&FromWorker::DraftLoaded { info });
        } else {
            post(&FromWorker::Loaded { info, load_ms: start.elapsed().as_secs_f64() * 1000.0 });
        }
        Ok(())
    }
}
