//! The page's side of the Web Worker: starts it, sends it typed messages and turns what it
//! streams back into leptos signals that the pages read.

use std::cell::RefCell;
use std::collections::HashMap;

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{File, MessageEvent, Worker, WorkerOptions, WorkerType};

use super::protocol::{BeamView, FromWorker, ModelInfo, PassView, PolicyRun, RateCurve, Run, ToWorker};
use crate::engine::beam::BeamStep;
use crate::engine::speculative::report::SpeculativeReport;
use crate::engine::simulate::{CostModel, Timing};
use crate::engine::window_drift::DriftStep;

/// What the model panel shows.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    /// Waiting for the worker to open WebGPU.
    Starting,
    NoWebGpu(String),
    /// WebGPU is open (adapter description); no model yet.
    Idle(String),
    Loading { stage: String },
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

/// One generation as the page sees it, filled token by token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
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
    pub stop_reason: String,
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

/// Everything the worker reported, as signals. `Copy`: pass it around freely.
#[derive(Clone, Copy)]
pub struct Engine {
    pub adapter: RwSignal<Option<String>>,
    pub status: RwSignal<ModelStatus>,
    /// The model the worker holds; a failed load keeps it.
    pub loaded: RwSignal<Option<ModelInfo>>,
    pub download: RwSignal<Option<Download>>,
    pub runs: RwSignal<HashMap<Run, RunState>>,
    pub drift: RwSignal<Vec<DriftStep>>,
    pub drift_done: RwSignal<bool>,
    pub cost: RwSignal<Option<CostInfo>>,
    pub simulation: RwSignal<Option<Simulation>>,
    pub real_batch: RwSignal<Option<RealBatch>>,
    /// The draft model loaded for speculative decoding.
    pub draft: RwSignal<Option<ModelInfo>>,
    pub spec: RwSignal<SpecState>,
    pub beam: RwSignal<BeamState>,
    /// The last error of a job (generation, drift); loading errors go to `status`.
    pub error: RwSignal<Option<String>>,
    /// Jobs sent and not yet finished.
    pub pending: RwSignal<usize>,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

impl Engine {
    /// Starts the worker (`worker.js` next to the page, which loads this same wasm module).
    /// `on_ready` runs once WebGPU is open, e.g. to preload a model named in the URL.
    pub fn start(on_ready: impl Fn(Engine) + 'static) -> Result<Engine, String> {
        let engine = Engine {
            adapter: RwSignal::new(None),
            status: RwSignal::new(ModelStatus::Starting),
            loaded: RwSignal::new(None),
            download: RwSignal::new(None),
            runs: RwSignal::new(HashMap::new()),
            drift: RwSignal::new(vec![]),
            drift_done: RwSignal::new(false),
            cost: RwSignal::new(None),
            simulation: RwSignal::new(None),
            real_batch: RwSignal::new(None),
            draft: RwSignal::new(None),
            spec: RwSignal::new(SpecState::default()),
            beam: RwSignal::new(BeamState::default()),
            error: RwSignal::new(None),
            pending: RwSignal::new(0),
        };
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options).map_err(|e| format!("could not start the engine worker: {e:?}"))?;
        let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            match event.data().as_string().as_deref().map(serde_json::from_str::<FromWorker>) {
                Some(Ok(FromWorker::Ready { webgpu: Ok(adapter) })) => {
                    engine.adapter.set(Some(adapter.clone()));
                    engine.status.set(ModelStatus::Idle(adapter));
                    on_ready(engine);
                }
                Some(Ok(message)) => engine.apply(message),
                _ => engine.error.set(Some("the engine worker sent a message the page does not understand".into())),
            }
        });
        worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        handler.forget();
        let onerror = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            engine.status.set(ModelStatus::Failed("the engine worker failed to start (see the browser console)".into()));
        });
        worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        onerror.forget();
        WORKER.with(|w| *w.borrow_mut() = Some(worker));
        Ok(engine)
    }

    /// Sends one message; `files` travel with it (local model files).
    pub fn send(&self, message: &ToWorker, files: &[File]) {
        let json = JsValue::from_str(&serde_json::to_string(message).expect("messages serialize"));
        let data = if files.is_empty() {
            json
        } else {
            let parts = js_sys::Array::of1(&json);
            files.iter().for_each(|f| {
                parts.push(f);
            });
            parts.into()
        };
        match message {
            // The running job still reports its end; the waiting ones are dropped.
            ToWorker::Stop => self.pending.update(|n| *n = (*n).min(1)),
            ToWorker::Load(_) => {
                self.status.set(ModelStatus::Loading { stage: "starting".into() });
                self.download.set(None);
                self.pending.update(|n| *n += 1);
            }
            ToWorker::Generate { run, .. } => {
                self.runs.update(|runs| {
                    runs.insert(*run, RunState::default());
                });
                self.pending.update(|n| *n += 1);
            }
            ToWorker::WindowDrift { .. } => {
                self.drift.set(vec![]);
                self.drift_done.set(false);
                self.pending.update(|n| *n += 1);
            }
            ToWorker::MeasureCost | ToWorker::Simulate { .. } => self.pending.update(|n| *n += 1),
            ToWorker::BatchReal { .. } => {
                self.real_batch.set(None);
                self.pending.update(|n| *n += 1);
            }
            ToWorker::LoadDraft(_) => self.pending.update(|n| *n += 1),
            ToWorker::Speculate { .. } => {
                self.spec.set(SpecState::default());
                self.pending.update(|n| *n += 1);
            }
            ToWorker::Beam { .. } => {
                self.beam.set(BeamState::default());
                self.pending.update(|n| *n += 1);
            }
        }
        self.error.set(None);
        WORKER.with(|w| {
            if let Some(worker) = w.borrow().as_ref()
                && let Err(e) = worker.post_message(&data)
            {
                self.error.set(Some(format!("could not reach the engine worker: {e:?}")));
            }
        });
    }

    pub fn busy(&self) -> bool {
        self.pending.get() > 0
    }

    fn finish_job(&self) {
        self.pending.update(|n| *n = n.saturating_sub(1));
    }

    fn apply(&self, message: FromWorker) {
        match message {
            FromWorker::Ready { webgpu: Err(e) } => self.status.set(ModelStatus::NoWebGpu(e)),
            FromWorker::Ready { webgpu: Ok(_) } => {}
            FromWorker::Loading { stage } => self.status.set(ModelStatus::Loading { stage }),
            FromWorker::Progress { file, loaded, total, mb_per_s, from_cache } => {
                self.status.set(ModelStatus::Loading { stage: format!("{} {file}", if from_cache { "reading cached" } else { "downloading" }) });
                self.download.set(Some(Download { file, loaded, total, mb_per_s, from_cache }));
            }
            FromWorker::Loaded { info, .. } => {
                self.loaded.set(Some(info.clone()));
                self.status.set(ModelStatus::Ready(info));
                self.finish_job();
            }
            FromWorker::Prompt { run, ids } => self.runs.update(|runs| runs.entry(run).or_default().prompt_ids = ids),
            FromWorker::Token { run, id, text, step_ms, .. } => self.runs.update(|runs| {
                let state = runs.entry(run).or_default();
                state.ids.push(id);
                state.text = text;
                state.step_ms.push(step_ms);
            }),
            FromWorker::Done { run, ids, text, ttft_ms, total_ms, stop_reason } => {
                self.runs.update(|runs| {
                    let state = runs.entry(run).or_default();
                    state.ids = ids;
                    state.text = text;
                    state.done = Some(RunSummary { ttft_ms, total_ms, stop_reason });
                });
                self.finish_job();
            }
            FromWorker::Drift(step) => self.drift.update(|d| d.push(step)),
            FromWorker::DriftDone => {
                self.drift_done.set(true);
                self.finish_job();
            }
            FromWorker::Cost { cost, timings, error_pct, model } => {
                self.cost.set(Some(CostInfo { cost, timings, error_pct, model }));
                self.finish_job();
            }
            FromWorker::Simulated { runs, curves, wall_ms } => {
                self.simulation.set(Some(Simulation { runs, curves, wall_ms }));
                self.finish_job();
            }
            FromWorker::RealRun { real, simulated, matches_solo } => {
                self.real_batch.set(Some(RealBatch { real, simulated, matches_solo }));
                self.finish_job();
            }
            FromWorker::DraftLoaded { info } => {
                self.draft.set(Some(info));
                // Its download reported progress in the model panel: the target is still there.
                self.status.set(self.loaded.get_untracked().map_or_else(|| ModelStatus::Idle(self.adapter.get_untracked().unwrap_or_default()), ModelStatus::Ready));
                self.finish_job();
            }
            FromWorker::SpecPass(pass) => self.spec.update(|s| s.passes.push(pass)),
            FromWorker::SpecDone { ids, text, report } => self.spec.update(|s| s.done = Some((ids, text, report))),
            FromWorker::SpecSweep(report) => self.spec.update(|s| s.sweep.push(report)),
            FromWorker::SpecSweepDone => {
                self.spec.update(|s| s.sweep_done = true);
                self.finish_job();
            }
            FromWorker::BeamStep { step, texts } => self.beam.update(|b| b.steps.push((step, texts))),
            FromWorker::BeamDone { beams, greedy_ids, greedy_text, beam_ms, kv_peak_tokens } => {
                self.beam.update(|b| b.done = Some(BeamDone { beams, greedy_ids, greedy_text, beam_ms, kv_peak_tokens }));
                self.finish_job();
            }
            FromWorker::Error { message } => {
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
