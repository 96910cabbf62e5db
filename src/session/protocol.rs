//! The messages between the page and its engine: the Web Worker in the tab, or the native
//! engine of `inferlab app` over a WebSocket. Both sides share these types; on the wire each
//! message is its JSON (to the worker, local files travel next to it as `File` objects).

use serde::{Deserialize, Serialize};

use crate::engine::analysis::window_drift::DriftStep;
use crate::engine::batching::driver::StepRecord;
use crate::engine::batching::scheduler::{Policy, SchedulerConfig};
use crate::engine::batching::simulate::{CostModel, Timing};
use crate::engine::batching::stats::{BlockSnapshot, RequestReport, Stats};
use crate::engine::batching::workload::WorkloadSpec;
use crate::engine::decode::beam::{BeamOptions, BeamStep, Hypothesis};
use crate::engine::decode::generate::StopReason;
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::decode::speculative::drafters::DraftSpec;
use crate::engine::decode::speculative::report::SpeculativeReport;
use crate::engine::decode::speculative::{Pass, SpeculativeOptions};
use crate::engine::inspect::Inspection;
use crate::engine::kv::KvMode;
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::weight_dtype::WeightDtype;

/// Where a model comes from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ModelSource {
    /// `{hub}/{repo}/resolve/main/{file}`, kept in Cache Storage (natively: a local folder if
    /// `repo` names one, else the hub's files, kept in the native cache).
    /// `weights`: what the weights are converted to as they arrive (f16 halves the GPU memory,
    /// int8 quarters it); `kv_f16`: KV caches in f16 (half their memory).
    Hub {
        hub: String,
        repo: String,
        #[serde(default)]
        weights: WeightDtype,
        #[serde(default)]
        kv_f16: bool,
    },
    /// config.json, model.safetensors and tokenizer.json picked or dropped by the user.
    Files {
        #[serde(default)]
        weights: WeightDtype,
        #[serde(default)]
        kv_f16: bool,
    },
    /// The demo pair, shipped with the web app (`demo/`): `Load` takes its target, `LoadDraft`
    /// its draft. Trained models, so the pages' text means something.
    Demo,
}

/// A generation run of the pages: which chart series it feeds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Run {
    Playground,
    WithCache,
    WithoutCache,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToEngine {
    Load(ModelSource),
    Generate {
        run: Run,
        prompt: String,
        max_new_tokens: usize,
        sampling: SamplingParams,
        kv: KvMode,
    },
    /// Full cache vs a sliding window of `window` slots, fed the same greedy tokens.
    WindowDrift {
        prompt: String,
        new_tokens: usize,
        window: usize,
    },
    /// The keys a cache stores for `ids` (a prompt and what was generated after it): their
    /// norms, per layer, head and token, for the KV page to draw.
    CacheKeys {
        ids: Vec<u32>,
    },
    /// Time a few real steps of the loaded model and fit the simulator's step cost.
    MeasureCost,
    /// Simulate `workload` under each config with `cost`, and throughput at each of `rates`.
    Simulate {
        workload: WorkloadSpec,
        configs: Vec<SchedulerConfig>,
        cost: CostModel,
        rates: Vec<f64>,
    },
    /// Run `workload` through the real model under `config` (and each request alone, greedy,
    /// to compare); `cost` simulates the same workload beside it.
    BatchReal {
        workload: WorkloadSpec,
        config: SchedulerConfig,
        cost: CostModel,
    },
    /// Load a draft model for speculative decoding (kept beside the target).
    LoadDraft(ModelSource),
    /// Plain decoding, then speculative decoding streamed pass by pass, then the same at
    /// each γ of `sweep`.
    Speculate {
        prompt: String,
        draft: DraftSpec,
        options: SpeculativeOptions,
        sweep: Vec<usize>,
    },
    /// Beam search streamed step by step, then greedy decoding beside it.
    Beam {
        prompt: String,
        options: BeamOptions,
    },
    /// One forward pass over the prompt and a decode step, everything recorded.
    Inspect {
        prompt: String,
    },
    /// The hand-written kernels on (the default) or off (the tensor-op twins) for the models
    /// loaded after it: what the kernels buy, measured on the device the page runs on
    /// (`?kernels=off`).
    SetKernels(bool),
    /// Stop the running generation after its current step.
    Stop,
}

/// An inspection with its tokens as text: the prompt's, the logit lens's top tokens
/// (`[layer][position][k]`) and the decode step's token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InspectionView {
    pub inspection: Inspection,
    pub tokens: Vec<String>,
    pub lens_tokens: Vec<Vec<Vec<String>>>,
    pub next_text: String,
}

/// A speculative pass with its tokens as text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PassView {
    pub pass: Pass,
    pub drafted_text: Vec<String>,
    pub next_text: String,
}

/// A returned beam with its text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BeamView {
    pub hypothesis: Hypothesis,
    pub text: String,
}

/// One policy's run, real or simulated, as the Batching page draws it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyRun {
    pub policy: Policy,
    pub config: SchedulerConfig,
    pub stats: Stats,
    pub requests: Vec<RequestReport>,
    pub steps: Vec<StepRecord>,
    /// Block owners after some steps (at most a few hundred, evenly spaced).
    pub blocks: Vec<BlockSnapshot>,
}

/// Simulated throughput of one policy as the arrival rate grows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateCurve {
    pub policy: Policy,
    /// (requests per second, generated tokens per second)
    pub points: Vec<(f64, f64)>,
}

/// What the page shows about a loaded model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub config: Gpt2Config,
    pub params: u64,
    /// What the linear layers and the token table are held in.
    #[serde(default)]
    pub weights: WeightDtype,
    /// KV caches hold f16.
    #[serde(default)]
    pub kv_f16: bool,
    /// Every file came from Cache Storage.
    pub from_cache: bool,
    /// Meaningless text: random weights.
    pub demo: bool,
    /// The hand-written kernels run (off: the tensor-op twins, [`ToEngine::SetKernels`]).
    #[serde(default = "kernels_on")]
    pub kernels: bool,
}

fn kernels_on() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a message is serialised at once: boxing would buy nothing
pub enum FromEngine {
    /// The engine is listening: its device described, or why no device could be opened
    /// (the worker's WebGPU; natively, the `--device`).
    Ready {
        webgpu: Result<String, String>,
    },
    /// A stage of loading, in words.
    Loading {
        stage: String,
    },
    Progress {
        file: String,
        loaded: u64,
        total: Option<u64>,
        mb_per_s: f64,
        from_cache: bool,
    },
    /// `wasm_memory_bytes`: the tab's engine worker's wasm memory after the load, which never
    /// shrinks, so the load's high-water mark (none natively).
    Loaded {
        info: ModelInfo,
        load_ms: f64,
        #[serde(default)]
        wasm_memory_bytes: Option<u64>,
    },
    Prompt {
        run: Run,
        ids: Vec<u32>,
    },
    Token {
        run: Run,
        index: usize,
        id: u32,
        text: String,
        step_ms: f64,
    },
    Done {
        run: Run,
        ids: Vec<u32>,
        text: String,
        ttft_ms: f64,
        total_ms: f64,
        stop_reason: StopReason,
    },
    Drift(DriftStep),
    DriftDone,
    /// `norms[layer][head][token]`, each key's L2 norm; `tokens`, each token's text.
    CacheKeys {
        ids: Vec<u32>,
        tokens: Vec<String>,
        norms: Vec<Vec<Vec<f32>>>,
    },
    Cost {
        cost: CostModel,
        timings: Vec<Timing>,
        error_pct: f64,
        model: String,
    },
    Simulated {
        runs: Vec<PolicyRun>,
        curves: Vec<RateCurve>,
        wall_ms: f64,
    },
    /// A real run, the same workload simulated, and whether each output equals its solo greedy run.
    RealRun {
        real: PolicyRun,
        simulated: PolicyRun,
        matches_solo: Vec<bool>,
    },
    DraftLoaded {
        info: ModelInfo,
    },
    SpecPass(PassView),
    /// The speculative run against the plain one.
    SpecDone {
        ids: Vec<u32>,
        text: String,
        report: SpeculativeReport,
    },
    /// One γ of the sweep.
    SpecSweep(SpeculativeReport),
    SpecSweepDone,
    /// One step of beam search; `texts` are its candidates' tokens.
    BeamStep {
        step: BeamStep,
        texts: Vec<String>,
    },
    BeamDone {
        beams: Vec<BeamView>,
        greedy_ids: Vec<u32>,
        greedy_text: String,
        beam_ms: f64,
        kv_peak_tokens: usize,
    },
    Inspected(InspectionView),
    Error {
        message: String,
    },
}
