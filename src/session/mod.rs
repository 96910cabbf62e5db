//! The engine's side of the pages' protocol, one handler for both transports: the Web Worker
//! in the browser tab (`web::worker`, `postMessage`) and the native engine of `inferlab app`
//! (`native::app`, a WebSocket). A transport reads messages and fetches model files its own
//! way (browser fetch and Cache Storage, or the native cache and local folders); parsing the
//! files, holding the models and running every job happens here, so pages cannot tell which
//! engine answers them.

pub mod batching_jobs;
pub mod decoding_jobs;
pub mod error;
pub mod inspect_job;
pub mod protocol;

use std::cell::Cell;
use std::ops::ControlFlow;

use burn::tensor::Device;
use web_time::Instant;

use crate::engine::analysis::window_drift::window_drift;
use crate::engine::batching::simulate;
use crate::engine::decode::generate::{GenerateOptions, fit_context, generate};
use crate::engine::inspect::op_timer::Clock;
use crate::engine::kv::DEFAULT_BLOCK_SIZE;
use crate::engine::kv::dtype::KvDtype;
use crate::engine::kv::key_norms::key_norms;
use crate::engine::kv::memory::param_count;
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::gpt2::{Gpt2, Gpt2Loader};
use crate::engine::model::precision::Precision;
use crate::engine::model::tokenizer::Tokenizer;
use crate::engine::model::weights::Gpt2Weights;
use error::{Result, SessionError};
use protocol::{FromEngine, ModelInfo, ToEngine};

/// Where the web app ships one of the demo pair's files (`web/demo`, made by
/// `scripts/train_demo_pair.py`): the target's, or the draft's (`draft`).
pub fn demo_file(draft: bool, file: &str) -> String {
    format!("demo/{}/{file}", if draft { "draft" } else { "target" })
}

/// The demo pair's names, as the status line shows them.
pub fn demo_name(draft: bool) -> String {
    format!("demo {} (trained on Rust sources)", if draft { "draft" } else { "target" })
}

/// The raw pieces of a model, as a transport fetched them, before any parsing.
pub struct ModelFiles {
    pub name: String,
    pub config: Vec<u8>,
    pub tokenizer: Vec<u8>,
    /// model.safetensors.
    pub weights: Vec<u8>,
    /// Every file came from a cache.
    pub from_cache: bool,
    pub precision: Precision,
    /// One of the demo pair.
    pub demo: bool,
}

/// A load under way: its config and tokenizer parsed, its weights still to come.
pub struct PendingLoad {
    pub config: Gpt2Config,
    name: String,
    tokenizer: Tokenizer,
    demo: bool,
    precision: Precision,
    pub draft: bool,
}

impl PendingLoad {
    /// Parses the config and the tokenizer.
    pub fn begin(
        name: String,
        config: &[u8],
        tokenizer: &[u8],
        demo: bool,
        precision: Precision,
        draft: bool,
        post: &dyn Fn(&FromEngine),
    ) -> Result<Self> {
        post(&FromEngine::Loading { stage: "parsing config and tokenizer".into() });
        let config = Gpt2Config::from_json(std::str::from_utf8(config).map_err(|_| SessionError::ConfigNotUtf8)?)?;
        let tokenizer = Tokenizer::from_bytes(tokenizer)?;
        Ok(Self { config, name, tokenizer, demo, precision, draft })
    }
}

struct Loaded {
    info: ModelInfo,
    model: Gpt2,
    tokenizer: Tokenizer,
}

/// A device and the models loaded on it: the target, and the draft of speculative decoding.
pub struct Session {
    device: Device,
    /// How inspections time their ops on this device.
    clock: Clock,
    model: Option<Loaded>,
    draft: Option<Loaded>,
    /// Whether models loaded from now on run the hand-written kernels ([`ToEngine::SetKernels`]).
    kernels: Cell<bool>,
}

/// Break when the page asked to stop: read between two steps of every job.
fn flow(stop: &dyn Fn() -> bool) -> ControlFlow<()> {
    if stop() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
}

impl Session {
    pub fn new(device: Device) -> Self {
        Self { device, clock: Clock::Profile, model: None, draft: None, kernels: Cell::new(true) }
    }

    /// Inspections time with `clock` (the browser's WebGPU without timestamps cannot sync:
    /// it awaits each op's output).
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    fn loaded(&self) -> Result<&Loaded> {
        self.model.as_ref().ok_or(SessionError::NoModel)
    }

    /// Checks `files` and makes them the target model, or (`draft`) the draft model; reports
    /// `Loaded` / `DraftLoaded`. Files that fail their checks leave the old model in place; a
    /// device error in the warm-up step, after the old model's buffers went, leaves none.
    pub fn install(
        &mut self,
        files: ModelFiles,
        draft: bool,
        started: Instant,
        post: &dyn Fn(&FromEngine),
    ) -> Result<()> {
        let ModelFiles { name, config, tokenizer, weights: raw, from_cache, precision, demo } = files;
        let load = PendingLoad::begin(name, &config, &tokenizer, demo, precision, draft, post)?;
        post(&FromEngine::Loading { stage: "checking weights and uploading them to the device".into() });
        let weights = Gpt2Weights::from_safetensors(&raw, &load.config)?;
        drop(raw);
        let mut loader = self.loader(&load)?;
        self.unload(load.draft);
        for (name, data) in weights.tensors {
            loader.put(&name, data)?;
        }
        let model = loader.finish()?;
        self.end_load(load, model, from_cache, started, post)
    }

    /// A loader that uploads `load`'s tensors to this session's device, or why the device
    /// cannot hold the asked dtype.
    pub fn loader(&self, load: &PendingLoad) -> Result<Gpt2Loader> {
        Ok(Gpt2Loader::new(load.config.clone(), &self.device, load.precision.dtype)?)
    }

    /// Frees the target's (or the draft's) model: called once the new one's weights have
    /// passed their checks, before they take device memory.
    pub fn unload(&mut self, draft: bool) {
        *self.slot(draft) = None;
    }

    /// The last step of a load: warms `model` up, installs it and reports `Loaded` /
    /// `DraftLoaded`.
    pub fn end_load(
        &mut self,
        load: PendingLoad,
        mut model: Gpt2,
        from_cache: bool,
        started: Instant,
        post: &dyn Fn(&FromEngine),
    ) -> Result<()> {
        let PendingLoad { config, name, tokenizer, demo, precision, draft } = load;
        model.set_kv_dtype(precision.kv_dtype)?;
        model.set_kernels(self.kernels.get());
        post(&FromEngine::Loading { stage: "a first step (the device compiles its kernels)".into() });
        model.warm_up()?;
        let info = ModelInfo {
            name,
            params: param_count(&config),
            config,
            weights: precision.dtype,
            kv_f16: precision.kv_dtype == KvDtype::F16,
            from_cache,
            demo,
            kernels: self.kernels.get(),
        };
        *self.slot(draft) = Some(Loaded { info: info.clone(), model, tokenizer });
        if draft {
            post(&FromEngine::DraftLoaded { info });
        } else {
            post(&FromEngine::Loaded {
                info,
                load_ms: started.elapsed().as_secs_f64() * 1000.0,
                wasm_memory_bytes: wasm_memory_bytes(),
            });
        }
        Ok(())
    }

    fn slot(&mut self, draft: bool) -> &mut Option<Loaded> {
        if draft { &mut self.draft } else { &mut self.model }
    }

    /// Runs one job to its end (or until `stop` says so between two steps), streaming what
    /// it computes through `post`. Loads are the transport's: their files come its own way.
    pub async fn job(&self, message: ToEngine, post: &dyn Fn(&FromEngine), stop: &dyn Fn() -> bool) -> Result<()> {
        match message {
            ToEngine::Load(_) | ToEngine::LoadDraft(_) => Err(SessionError::LoadIsTransports),
            ToEngine::Stop => Ok(()),
            ToEngine::SetKernels(enabled) => {
                self.kernels.set(enabled);
                Ok(())
            }
            ToEngine::Speculate { prompt, draft, options, sweep } => {
                let loaded = self.loaded()?;
                let draft_model = self.draft.as_ref().map(|d| &d.model);
                decoding_jobs::speculate(
                    &loaded.model,
                    &loaded.tokenizer,
                    draft_model,
                    &prompt,
                    &draft,
                    options,
                    &sweep,
                    post,
                    stop,
                )
                .await
            }
            ToEngine::Inspect { prompt } => {
                let loaded = self.loaded()?;
                post(&FromEngine::Inspected(
                    inspect_job::inspect(&loaded.model, &loaded.tokenizer, &prompt, self.clock).await?,
                ));
                Ok(())
            }
            ToEngine::Beam { prompt, options } => {
                let loaded = self.loaded()?;
                decoding_jobs::beam(&loaded.model, &loaded.tokenizer, &prompt, options, post, stop).await
            }
            ToEngine::Generate { run, prompt, max_new_tokens, sampling, kv } => {
                let loaded = self.loaded()?;
                let ids = loaded.tokenizer.encode(&prompt)?;
                let (ids, max_new_tokens, _) =
                    fit_context(&ids, max_new_tokens, loaded.model.config.n_positions, false)?;
                post(&FromEngine::Prompt { run, ids: ids.clone() });
                let eos_token_ids = loaded.model.config.eos_token_id.into_iter().collect();
                let options = GenerateOptions { max_new_tokens, sampling, kv, eos_token_ids, stop_strings: vec![] };
                let mut new_ids = vec![];
                let out = generate(&loaded.model, &ids, &options, Some(&loaded.tokenizer), |event| {
                    new_ids.push(event.id);
                    let text = loaded.tokenizer.decode(&new_ids).unwrap_or_default();
                    post(&FromEngine::Token { run, index: event.index, id: event.id, text, step_ms: event.step_ms });
                    flow(stop)
                })
                .await?;
                post(&FromEngine::Done {
                    run,
                    ids: out.new_ids,
                    text: out.text.unwrap_or_default(),
                    ttft_ms: out.ttft_ms,
                    total_ms: out.total_ms,
                    stop_reason: out.stop_reason,
                });
                Ok(())
            }
            ToEngine::WindowDrift { prompt, new_tokens, window } => {
                let loaded = self.loaded()?;
                let ids = loaded.tokenizer.encode(&prompt)?;
                window_drift(&loaded.model, &ids, new_tokens, window, |step| {
                    post(&FromEngine::Drift(step.clone()));
                    flow(stop)
                })
                .await?;
                post(&FromEngine::DriftDone);
                Ok(())
            }
            ToEngine::CacheKeys { ids } => {
                let loaded = self.loaded()?;
                let norms = key_norms(&loaded.model, &ids).await?;
                let tokens = ids.iter().map(|&id| loaded.tokenizer.decode(&[id])).collect::<Result<_, _>>()?;
                post(&FromEngine::CacheKeys { ids, tokens, norms });
                Ok(())
            }
            ToEngine::MeasureCost => {
                let loaded = self.loaded()?;
                let (cost, timings) = simulate::fit_cost(&loaded.model, DEFAULT_BLOCK_SIZE, true, |_| {}).await?;
                let error_pct = cost.mean_error_pct(&timings);
                post(&FromEngine::Cost { cost, timings, error_pct, model: loaded.info.name.clone() });
                Ok(())
            }
            ToEngine::Simulate { workload, configs, cost, rates } => {
                let start = Instant::now();
                let vocab = self.model.as_ref().map_or(50257, |l| l.model.config.vocab_size);
                let (runs, curves) = batching_jobs::simulate_all(&workload, &configs, cost, &rates, vocab)?;
                post(&FromEngine::Simulated { runs, curves, wall_ms: start.elapsed().as_secs_f64() * 1000.0 });
                Ok(())
            }
            ToEngine::BatchReal { workload, config, cost } => {
                let loaded = self.loaded()?;
                let (real, simulated, matches_solo) =
                    batching_jobs::real_run(&loaded.model, &workload, config, cost, stop).await?;
                post(&FromEngine::RealRun { real, simulated, matches_solo });
                Ok(())
            }
        }
    }
}

/// The wasm linear memory's size, in the tab's worker: it grows and never shrinks, so after a
/// load it is that load's high-water mark. None natively.
fn wasm_memory_bytes() -> Option<u64> {
    #[cfg(target_arch = "wasm32")]
    return Some(core::arch::wasm32::memory_size(0) as u64 * 65536);
    #[cfg(not(target_arch = "wasm32"))]
    None
}
