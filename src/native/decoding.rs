//! `inferlab generate --draft …` (speculative decoding) and `--num-beams …` (beam search):
//! their flags, model loading for a draft, and what the JSON output adds.

use std::ops::ControlFlow;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use serde_json::{Value, json};

use super::model_dir;
use crate::engine::beam::{BeamOptions, EarlyStopping, beam_search};
use crate::engine::generate::{Generation, generate};
use crate::engine::gpt2::Gpt2;
use crate::engine::kv::KvMode;
use crate::engine::speculative::drafters::{AnyDrafter, DraftSpec};
use crate::engine::speculative::report::SpeculativeReport;
use crate::engine::speculative::{SpeculativeOptions, SpeculativeRun, speculative_generate};
use crate::engine::tokenizer::Tokenizer;

#[derive(Args, Clone)]
pub struct DraftArgs {
    /// Speculative decoding with this drafter: a model (folder, hub repo id or random:NAME),
    /// layers:K (the target's first K blocks) or ngram:N (prompt lookup).
    #[arg(long, conflicts_with = "num_beams")]
    pub draft: Option<String>,
    /// Draft tokens per target pass (1 to 32).
    #[arg(long, default_value_t = 4)]
    pub gamma: usize,
    /// Grow γ after a fully accepted draft, shrink it after a mostly rejected one.
    #[arg(long)]
    pub adaptive_gamma: bool,
}

#[derive(Args, Clone)]
pub struct BeamArgs {
    /// Beam search with this many beams (transformers' semantics).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Sequences returned, best first (≤ num_beams).
    #[arg(long, requires = "num_beams")]
    pub num_return_sequences: Option<usize>,
    /// Scores are sum_logprobs / length^L; > 0 favours longer sequences.
    #[arg(long, requires = "num_beams", allow_negative_numbers = true, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// true, false or never.
    #[arg(long, requires = "num_beams", default_value = "false")]
    pub early_stopping: String,
    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, requires = "num_beams", default_value_t = 0)]
    pub no_repeat_ngram_size: usize,
}

/// The draft model a [`DraftSpec::Model`] names (none for layers:K and ngram:N).
pub fn load_draft(spec: &DraftSpec, hub_url: &str, device: &Device, seed: u64) -> Result<Option<Gpt2>> {
    match spec {
        DraftSpec::Model(name) => Ok(Some(model_dir::load_named(name, hub_url, device, seed.wrapping_add(1))?)),
        _ => Ok(None),
    }
}

/// Plain decoding with the settings of a speculative run: its baseline.
pub fn plain(target: &Gpt2, prompt: &[u32], options: &SpeculativeOptions, kv: KvMode) -> Result<Generation> {
    Ok(pollster::block_on(generate(target, prompt, &options.plain(kv), None, |_| ControlFlow::Continue(())))?)
}

/// Speculative decoding of `prompt`, reported against `plain` (same prompt, same process).
pub fn speculative(
    target: &Gpt2,
    draft_model: Option<&Gpt2>,
    spec: &DraftSpec,
    prompt: &[u32],
    options: &SpeculativeOptions,
    kv: KvMode,
    plain: &Generation,
) -> Result<(SpeculativeRun, SpeculativeReport)> {
    let mut drafter = AnyDrafter::new(spec, target, draft_model, prompt.len() + options.max_new_tokens)?;
    let run = pollster::block_on(speculative_generate(target, &mut drafter, prompt, options, kv, |_| {
        ControlFlow::Continue(())
    }))?;
    let report = SpeculativeReport::new(&spec.to_string(), options, &run, plain);
    Ok((run, report))
}

impl BeamArgs {
    pub fn options(&self, max_new_tokens: usize, eos_token_ids: Vec<u32>) -> Result<Option<BeamOptions>> {
        let Some(num_beams) = self.num_beams else {
            return Ok(None);
        };
        let options = BeamOptions {
            num_beams,
            num_return_sequences: self.num_return_sequences.unwrap_or(1),
            max_new_tokens,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping.parse::<EarlyStopping>()?,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            eos_token_ids,
        };
        options.validate()?;
        Ok(Some(options))
    }
}

/// Beam search; returns the best beam's new ids and the `beams` JSON (best first).
pub fn beams(
    model: &Gpt2,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &BeamOptions,
    kv: KvMode,
) -> Result<(Vec<u32>, Value)> {
    let out = pollster::block_on(beam_search(model, prompt, options, kv, |_| ControlFlow::Continue(())))?;
    let Some(best) = out.hypotheses.first() else { bail!("beam search finished without a hypothesis") };
    let beams: Vec<Value> = out
        .hypotheses
        .iter()
        .map(|h| Ok(json!({ "ids": h.ids, "text": tokenizer.decode(&h.ids)?, "score": h.score })))
        .collect::<Result<_>>()?;
    Ok((best.ids.clone(), Value::Array(beams)))
}
