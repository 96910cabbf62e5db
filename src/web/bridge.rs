//! The page's side of the engine: starts it, sends it typed messages and turns what it
//! streams back into leptos signals that the pages read. Two transports carry the same
//! messages: the Web Worker in this tab (WebGPU), and, when `inferlab app` served the page, a
//! WebSocket to the native engine. Pages never know which one answers.

use std::cell::RefCell;
use std::collections::HashMap;

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{File, MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::engine::analysis::window_drift::DriftStep;
use crate::engine::batching::simulate::{CostModel, Timing};
use crate::engine::decode::beam::BeamStep;
use crate::engine::decode::generate::StopReason;
use crate::engine::decode::speculative::report::SpeculativeReport;
use crate::session::protocol::{
    BeamView, FromEngine, InspectionView, ModelInfo, ModelSource, PassView, PolicyRun, RateCurve, Run, ToEngine,
};

/// What the model panel shows.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    /// Waiting for the worker to open WebGPU.
    Starting,
    NoWebGpu(String),
    /// WebGPU is open (adapter description); no model yet.
    Idle(String),
    Loading {
        stage: String,
    },
    Ready(ModelInfo),
    Failed(String),
}

/// Download progress of the current file.
#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub file: String,
    pub loaded: u64,
    pub total: Option<u64>,
    pub mb_per_s: f64,
    pub from_cache: bool,
}

/// The keys a cache stored for a sequence: `norms[layer][head][token]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKeys {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub norms: Vec<Vec<Vec<f32>>>,
}

/// One generation as the page sees it, filled token by token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    /// The new tokens asked for (the contiguous cache allocates room for them up front).
    pub requested: usize,
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub step_ms: Vec<f64>,
    pub done: Option<RunSummary>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub stop_reason: StopReason,
}

/// The step-cost model measured on the loaded model in this browser.
#[derive(Debug, Clone, PartialEq)]
pub struct CostInfo {
    pub cost: CostModel,
    pub timings: Vec<Timing>,
    pub error_pct: f64,
    /// The model it was measured on.
    pub model: String,
}

/// The Batching page's simulated runs and rate curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub runs: Vec<PolicyRun>,
    pub curves: Vec<RateCurve>,
    pub wall_ms: f64,
}

/// A real batched run beside the same workload simulated.
#[derive(Debug, Clone, PartialEq)]
pub struct RealBatch {
    pub real: PolicyRun,
    pub simulated: PolicyRun,
    pub matches_solo: Vec<bool>,
}

/// The Speculative page's run: its passes as they stream, the report, the γ sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecState {
    pub passes: Vec<PassView>,
    pub done: Option<(Vec<u32>, String, SpeculativeReport)>,
    pub sweep: Vec<SpeculativeReport>,
    pub sweep_done: bool,
}

/// The Beam page's run: every step's candidates (with their tokens' text), then the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BeamState {
    pub steps: Vec<(BeamStep, Vec<String>)>,
    pub done: Option<BeamDone>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BeamDone {
    pub beams: Vec<BeamView>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub beam_ms: f64,
    pub kv_peak_tokens: usize,
}

/// The page's handle on its engine (the tab's Web Worker or the native one): what it reported,
/// as signals, and the way to send it work. `Copy`: pass it around freely.
#[derive(Clone, Copy)]
pub struct EngineHandle {
    pub kind: RwSignal<EngineKind>,
    /// The native engine's device in words, once it said so.
    pub native: RwSignal<Option<String>>,
    /// The engine's device in words.
    pub adapter: RwSignal<Option<String>>,
    pub status: RwSignal<ModelStatus>,
    /// The model the worker holds; a failed load keeps it.
    pub loaded: RwSignal<Option<ModelInfo>>,
    /// The tab's worker's wasm memory after the last load (its high-water mark).
    pub wasm_memory_bytes: RwSignal<Option<u64>>,
    pub download: RwSignal<Option<Download>>,
    pub runs: RwSignal<HashMap<Run, RunState>>,
    pub drift: RwSignal<Vec<DriftStep>>,
    pub drift_done: RwSignal<bool>,
    /// The KV page's picture of a cache: the keys stored for its last run.
    pub cache_keys: RwSignal<Option<CacheKeys>>,
    pub cost: RwSignal<Option<CostInfo>>,
    pub simulation: RwSignal<Option<Simulation>>,
    pub real_batch: RwSignal<Option<RealBatch>>,
    /// The draft model loaded for speculative decoding.
    pub draft: RwSignal<Option<ModelInfo>>,
    pub spec: RwSignal<SpecState>,
    pub beam: RwSignal<BeamState>,
    /// The Inside-a-step page's last inspection.
    pub inspection: RwSignal<Option<InspectionView>>,
    /// The last error of a job (generation, drift); loading errors go to `status`.
    pub error: RwSignal<Option<String>>,
    /// Jobs sent and not yet finished.
    pub pending: RwSignal<usize>,
}

/// Which engine computes the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The Web Worker in this tab, on WebGPU.
    Tab,
    /// The native engine of `inferlab app`, over a WebSocket.
    Native,
}

/// The browser's WebSocket, bound here rather than through web-sys: a new web-sys feature
/// would recompile wgpu and burn for wasm (web-sys's features unify across the build).
#[wasm_bindgen]
extern "C" {
    type WebSocket;
    #[wasm_bindgen(constructor, catch)]
    fn new(url: &str) -> Result<WebSocket, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn send(this: &WebSocket, data: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method)]
    fn close(this: &WebSocket);
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &WebSocket, handler: Option<&js_sys::Function>);
    #[wasm_bindgen(method, setter)]
    fn set_onclose(this: &WebSocket, handler: Option<&js_sys::Function>);

    type CloseEvent;
    #[wasm_bindgen(method, getter)]
    fn code(this: &CloseEvent) -> u16;
    #[wasm_bindgen(method, getter)]
    fn reason(this: &CloseEvent) -> String;
}

/// The open connection to the engine, with the handlers that must live as long as it.
struct Transport {
    link: Link,
    _handlers: Vec<Box<dyn std::any::Any>>,
}

enum Link {
    Worker(Worker),
    Socket(WebSocket),
}

impl Transport {
    fn post(&self, json: &str, files: &[File]) -> Result<(), JsValue> {
        match &self.link {
            Link::Worker(worker) => {
                let json = JsValue::from_str(json);
                if files.is_empty() {
                    return worker.post_message(&json);
                }
                let parts = js_sys::Array::of1(&json);
                files.iter().for_each(|f| {
                    parts.push(f);
                });
                worker.post_message(&parts)
            }
            // Picked files cannot travel to the native engine, which says so.
            Link::Socket(socket) => socket.send(json),
        }
    }

    fn close(self) {
        match self.link {
            Link::Worker(worker) => {
                worker.set_onmessage(None);
                worker.terminate();
            }
            Link::Socket(socket) => {
                socket.set_onmessage(None);
                socket.set_onclose(None);
                socket.close();
            }
        }
    }
}

thread_local! {
    static TRANSPORT: RefCell<Option<Transport>> = const { RefCell::new(None) };
    static ON_READY: RefCell<Option<Box<dyn FnOnce(EngineHandle)>>> = const { RefCell::new(None) };
}

/// The per-launch token of `inferlab app`, in the URL it opened: only then is there a
/// native engine to talk to.
pub fn native_token() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search).ok()?.get("token").filter(|t| !t.is_empty())
}

impl EngineHandle {
    /// Starts the engine: the native one when `inferlab app` served the page, else the Web
    /// Worker. `on_ready` runs once, when that first engine's device is open, e.g. to preload
    /// a model named in the URL (a switch later does not: the URL meant the first engine).
    pub fn start(on_ready: impl FnOnce(EngineHandle) + 'static) -> EngineHandle {
        let engine = EngineHandle {
            kind: RwSignal::new(if native_token().is_some() { EngineKind::Native } else { EngineKind::Tab }),
            native: RwSignal::new(None),
            adapter: RwSignal::new(None),
            status: RwSignal::new(ModelStatus::Starting),
            loaded: RwSignal::new(None),
            wasm_memory_bytes: RwSignal::new(None),
            download: RwSignal::new(None),
            runs: RwSignal::new(HashMap::new()),
            drift: RwSignal::new(vec![]),
            drift_done: RwSignal::new(false),
            cache_keys: RwSignal::new(None),
            cost: RwSignal::new(None),
            simulation: RwSignal::new(None),
            real_batch: RwSignal::new(None),
            draft: RwSignal::new(None),
            spec: RwSignal::new(SpecState::default()),
            beam: RwSignal::new(BeamState::default()),
            inspection: RwSignal::new(None),
            error: RwSignal::new(None),
            pending: RwSignal::new(0),
        };
        ON_READY.with(|r| *r.borrow_mut() = Some(Box::new(on_ready)));
        engine.connect();
        engine
    }

    /// Switches to the other engine: everything shown so far belonged to the old one.
    pub fn switch(&self, kind: EngineKind) {
        if kind == self.kind.get_untracked() {
            return;
        }
        self.kind.set(kind);
        self.adapter.set(None);
        self.status.set(ModelStatus::Starting);
        self.loaded.set(None);
        self.wasm_memory_bytes.set(None);
        self.download.set(None);
        self.runs.set(HashMap::new());
        self.drift.set(vec![]);
        self.drift_done.set(false);
        self.cost.set(None);
        self.simulation.set(None);
        self.real_batch.set(None);
        self.draft.set(None);
        self.spec.set(SpecState::default());
        self.beam.set(BeamState::default());
        self.inspection.set(None);
        self.error.set(None);
        self.pending.set(0);
        self.connect();
    }

    fn connect(&self) {
        if let Some(old) = TRANSPORT.with(|t| t.borrow_mut().take()) {
            old.close();
        }
        let opened = match self.kind.get_untracked() {
            EngineKind::Tab => self.start_worker(),
            EngineKind::Native => self.start_socket(),
        };
        match opened {
            Ok(transport) => TRANSPORT.with(|t| *t.borrow_mut() = Some(transport)),
            Err(e) => self.status.set(ModelStatus::Failed(e)),
        }
    }

    /// A message from the engine, whichever transport brought it.
    fn receive(&self, data: Option<String>) {
        match data.as_deref().map(serde_json::from_str::<FromEngine>) {
            Some(Ok(FromEngine::Ready { webgpu: Ok(adapter) })) => {
                if self.kind.get_untracked() == EngineKind::Native {
                    self.native.set(Some(adapter.clone()));
                }
                self.adapter.set(Some(adapter.clone()));
                self.status.set(ModelStatus::Idle(adapter));
                if let Some(on_ready) = ON_READY.with(|r| r.borrow_mut().take()) {
                    on_ready(*self);
                }
            }
            Some(Ok(message)) => self.apply(message),
            _ => self.error.set(Some("the engine sent a message the page does not understand".into())),
        }
    }

    /// The Web Worker (`worker.js` next to the page, which loads this same wasm module).
    fn start_worker(&self) -> Result<Transport, String> {
        let engine = *self;
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options)
            .map_err(|e| format!("could not start the engine worker: {e:?}"))?;
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            engine.receive(event.data().as_string())
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        let onerror = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            engine
                .status
                .set(ModelStatus::Failed("the engine worker failed to start (see the browser console)".into()));
        });
        worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        Ok(Transport { link: Link::Worker(worker), _handlers: vec![Box::new(onmessage), Box::new(onerror)] })
    }

    /// The WebSocket to `inferlab app`'s native engine, on the server that served this page.
    fn start_socket(&self) -> Result<Transport, String> {
        let engine = *self;
        let token = native_token().ok_or("this page was not opened by `inferlab app`: no native engine to talk to")?;
        let host = web_sys::window().and_then(|w| w.location().host().ok()).unwrap_or_default();
        let socket = WebSocket::new(&format!("ws://{host}/ws?token={token}"))
            .map_err(|e| format!("could not reach the native engine: {e:?}"))?;
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            engine.receive(event.data().as_string())
        });
        socket.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let why = match (event.code(), event.reason()) {
                (_, reason) if !reason.is_empty() => reason,
                (1006, _) => "the connection failed or dropped: is `inferlab app` still running, and was this page opened with its URL (token)?".into(),
                (code, _) => format!("closed with code {code}"),
            };
            engine.pending.set(0);
            engine.status.set(ModelStatus::Failed(format!("native engine: {why}")));
        });
        socket.set_onclose(Some(onclose.as_ref().unchecked_ref()));
        Ok(Transport { link: Link::Socket(socket), _handlers: vec![Box::new(onmessage), Box::new(onclose)] })
    }

    /// Loads the demo pair: its target, then its draft (the speculative page's default drafter).
    pub fn load_demo(&self) {
        self.send(&ToEngine::Load(ModelSource::Demo), &[]);
        self.send(&ToEngine::LoadDraft(ModelSource::Demo), &[]);
    }

    /// Sends one message; `files` travel with it (local model files).
    pub fn send(&self, message: &ToEngine, files: &[File]) {
        let json = serde_json::to_string(message).expect("messages serialize");
        match message {
            // The running job still reports its end; the waiting ones are dropped.
            ToEngine::Stop => self.pending.update(|n| *n = (*n).min(1)),
            // A setting: no job, no reply.
            ToEngine::SetKernels(_) => {}
            ToEngine::Load(_) => {
                self.status.set(ModelStatus::Loading { stage: "starting".into() });
                self.download.set(None);
                self.pending.update(|n| *n += 1);
            }
            ToEngine::Generate { run, max_new_tokens, .. } => {
                self.runs.update(|runs| {
                    runs.insert(*run, RunState { requested: *max_new_tokens, ..RunState::default() });
                });
                self.pending.update(|n| *n += 1);
            }
            ToEngine::WindowDrift { .. } => {
                self.drift.set(vec![]);
                self.drift_done.set(false);
                self.pending.update(|n| *n += 1);
            }
            ToEngine::MeasureCost | ToEngine::Simulate { .. } => self.pending.update(|n| *n += 1),
            ToEngine::CacheKeys { .. } => {
                self.cache_keys.set(None);
                self.pending.update(|n| *n += 1);
            }
            ToEngine::BatchReal { .. } => {
                self.real_batch.set(None);
                self.pending.update(|n| *n += 1);
            }
            ToEngine::LoadDraft(_) => self.pending.update(|n| *n += 1),
            ToEngine::Speculate { .. } => {
                self.spec.set(SpecState::default());
                self.pending.update(|n| *n += 1);
            }
            ToEngine::Beam { .. } => {
                self.beam.set(BeamState::default());
                self.pending.update(|n| *n += 1);
            }
            ToEngine::Inspect { .. } => {
                self.inspection.set(None);
                self.pending.update(|n| *n += 1);
            }
        }
        self.error.set(None);
        let sent = TRANSPORT.with(|t| match t.borrow().as_ref() {
            Some(transport) => transport.post(&json, files).map_err(|e| format!("{e:?}")),
            None => Err("no engine is connected".to_string()),
        });
        if let Err(e) = sent {
            self.error.set(Some(format!("could not reach the engine: {e}")));
        }
    }

    pub fn busy(&self) -> bool {
        self.pending.get() > 0
    }

    fn finish_job(&self) {
        self.pending.update(|n| *n = n.saturating_sub(1));
    }

    fn apply(&self, message: FromEngine) {
        match message {
            FromEngine::Ready { webgpu: Err(e) } => self.status.set(ModelStatus::NoWebGpu(e)),
            FromEngine::Ready { webgpu: Ok(_) } => {}
            FromEngine::Loading { stage } => self.status.set(ModelStatus::Loading { stage }),
            FromEngine::Progress { file, loaded, total, mb_per_s, from_cache } => {
                self.status.set(ModelStatus::Loading {
                    stage: format!("{} {file}", if from_cache { "reading cached" } else { "downloading" }),
                });
                self.download.set(Some(Download { file, loaded, total, mb_per_s, from_cache }));
            }
            FromEngine::Loaded { info, wasm_memory_bytes, .. } => {
                self.loaded.set(Some(info.clone()));
                self.wasm_memory_bytes.set(wasm_memory_bytes);
                self.status.set(ModelStatus::Ready(info));
                self.finish_job();
            }
            FromEngine::Prompt { run, ids } => self.runs.update(|runs| runs.entry(run).or_default().prompt_ids = ids),
            FromEngine::Token { run, id, text, step_ms, .. } => self.runs.update(|runs| {
                let state = runs.entry(run).or_default();
                state.ids.push(id);
                state.text = text;
                state.step_ms.push(step_ms);
            }),
            FromEngine::Done { run, ids, text, ttft_ms, total_ms, stop_reason } => {
                self.runs.update(|runs| {
                    let state = runs.entry(run).or_default();
                    state.ids = ids;
                    state.text = text;
                    state.done = Some(RunSummary { ttft_ms, total_ms, stop_reason });
                });
                self.finish_job();
            }
            FromEngine::Drift(step) => self.drift.update(|d| d.push(step)),
            FromEngine::CacheKeys { ids, tokens, norms } => {
                self.cache_keys.set(Some(CacheKeys { ids, tokens, norms }));
                self.finish_job();
            }
            FromEngine::DriftDone => {
                self.drift_done.set(true);
                self.finish_job();
            }
            FromEngine::Cost { cost, timings, error_pct, model } => {
                self.cost.set(Some(CostInfo { cost, timings, error_pct, model }));
                self.finish_job();
            }
            FromEngine::Simulated { runs, curves, wall_ms } => {
                self.simulation.set(Some(Simulation { runs, curves, wall_ms }));
                self.finish_job();
            }
            FromEngine::RealRun { real, simulated, matches_solo } => {
                self.real_batch.set(Some(RealBatch { real, simulated, matches_solo }));
                self.finish_job();
            }
            FromEngine::DraftLoaded { info } => {
                self.draft.set(Some(info));
                // Its download reported progress in the model panel: the target is still there.
                self.status.set(self.loaded.get_untracked().map_or_else(
                    || ModelStatus::Idle(self.adapter.get_untracked().unwrap_or_default()),
                    ModelStatus::Ready,
                ));
                self.finish_job();
            }
            FromEngine::SpecPass(pass) => self.spec.update(|s| s.passes.push(pass)),
            FromEngine::SpecDone { ids, text, report } => self.spec.update(|s| s.done = Some((ids, text, report))),
            FromEngine::SpecSweep(report) => self.spec.update(|s| s.sweep.push(report)),
            FromEngine::SpecSweepDone => {
                self.spec.update(|s| s.sweep_done = true);
                self.finish_job();
            }
            FromEngine::BeamStep { step, texts } => self.beam.update(|b| b.steps.push((step, texts))),
            FromEngine::BeamDone { beams, greedy_ids, greedy_text, beam_ms, kv_peak_tokens } => {
                self.beam
                    .update(|b| b.done = Some(BeamDone { beams, greedy_ids, greedy_text, beam_ms, kv_peak_tokens }));
                self.finish_job();
            }
            FromEngine::Inspected(view) => {
                self.inspection.set(Some(view));
                self.finish_job();
            }
            FromEngine::Error { message } => {
                match (self.status.get_untracked(), self.loaded.get_untracked()) {
                    // A failed load keeps the model that was there: say why, carry on with it.
                    (ModelStatus::Loading { .. }, Some(info)) => {
                        self.status.set(ModelStatus::Ready(info));
                        self.error.set(Some(format!("loading failed: {message}")));
                    }
                    (ModelStatus::Loading { .. }, None) => self.status.set(ModelStatus::Failed(message)),
                    _ => self.error.set(Some(message)),
                }
                self.finish_job();
            }
        }
    }
}
