//! Speculative decoding (Leviathan et al. 2023, Chen et al. 2023): a cheap drafter proposes γ
//! tokens, the target scores all of them in **one** forward pass over γ+1 positions, and a
//! rejection step keeps a prefix of them so that the output is distributed exactly as the
//! target's own sampling (token for token equal to it when greedy).
//!
//! Per pass: draft x₁..x_γ from q; target distributions p₁..p_{γ+1}; accept xᵢ with probability
//! min(1, pᵢ(xᵢ)/qᵢ(xᵢ)); at the first rejection draw from norm(max(0, pᵢ − qᵢ)); if all are
//! accepted draw a bonus token from p_{γ+1}. Both caches then roll back to the accepted length:
//! nothing of the prefix is ever recomputed.

pub mod drafters;
pub mod report;

use std::ops::ControlFlow;

use burn::tensor::Tensor;
use web_time::Instant;

use self::drafters::{Draft, Drafter};
use crate::engine::decode::generate::{GenerateOptions, StopReason, argmax_rows, fit_context};
use crate::engine::decode::sampling::{Sampler, SamplingParams};
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// The largest γ accepted (a longer draft is almost surely rejected early and wastes work).
pub const MAX_GAMMA: usize = 32;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SpeculativeOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Draft tokens per target pass (the start value when adaptive).
    pub gamma: usize,
    /// Grow γ by one after a fully accepted draft, shrink it by one when less than half was.
    pub adaptive_gamma: bool,
    pub eos_token_ids: Vec<u32>,
}

impl SpeculativeOptions {
    /// Plain decoding with the same budget, sampling and stops: the baseline of a run.
    pub fn plain(&self, kv: KvMode) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: self.sampling.clone(),
            kv,
            eos_token_ids: self.eos_token_ids.clone(),
            stop_strings: vec![],
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_GAMMA).contains(&self.gamma) {
            return Err(EngineError::Request(format!(
                "gamma (draft tokens per pass) must be 1 to {MAX_GAMMA}, got {}",
                self.gamma
            )));
        }
        if self.sampling.repetition_penalty != 1.0 || self.sampling.penalizes_generated() {
            return Err(EngineError::Request(
                "a repetition penalty (or a presence or frequency penalty) changes p and q per drafted position; speculative decoding here supports temperature, top-k, top-p and logit_bias only".into(),
            ));
        }
        self.sampling.validate()
    }
}

/// One target pass, as the page draws it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pass {
    /// The drafter's proposal (its first `accepted` tokens were kept).
    pub drafted: Vec<u32>,
    pub accepted: usize,
    /// The target's own token after the accepted ones: resampled at a rejection, or a bonus.
    pub next: u32,
    pub bonus: bool,
    pub draft_ms: f64,
    pub target_ms: f64,
}

impl Pass {
    /// Draft tokens the verifier tested: up to and including the first rejection.
    pub fn verified(&self) -> usize {
        if self.bonus { self.drafted.len() } else { self.accepted + 1 }
    }
}

/// α over `passes` (see [`SpeculativeRun::alpha`]); `None` before any draft token was tested.
pub fn running_alpha<'a>(passes: impl IntoIterator<Item = &'a Pass>) -> Option<f64> {
    let (accepted, tested) = passes.into_iter().fold((0, 0), |(a, t), p| (a + p.accepted, t + p.verified()));
    (tested > 0).then(|| accepted as f64 / tested as f64)
}

#[derive(Debug, Clone)]
pub struct SpeculativeRun {
    pub new_ids: Vec<u32>,
    pub stop_reason: StopReason,
    pub passes: Vec<Pass>,
    /// The target's and drafter's prompt prefill (excluded from the per-token figures).
    pub prefill_ms: f64,
    /// Every pass after the prefill.
    pub decode_ms: f64,
}

impl SpeculativeRun {
    /// Acceptance rate α: accepted draft tokens over draft tokens the target tested (each
    /// pass tests up to and including its first rejection) — the per-token acceptance
    /// probability of Leviathan et al.'s analysis.
    pub fn alpha(&self) -> f64 {
        running_alpha(&self.passes).unwrap_or(0.0)
    }

    /// New tokens per target pass (accepted drafts plus the target's own token).
    pub fn tokens_per_pass(&self) -> f64 {
        self.new_ids.len() as f64 / self.passes.len().max(1) as f64
    }

    /// How many passes accepted 0, 1, … draft tokens.
    pub fn accepted_hist(&self) -> Vec<usize> {
        let longest = self.passes.iter().map(|p| p.drafted.len()).max().unwrap_or(0);
        let mut hist = vec![0; longest + 1];
        self.passes.iter().for_each(|p| hist[p.accepted] += 1);
        hist
    }

    /// γ as run (the mean draft length: adaptive γ, the end of the budget and an n-gram
    /// drafter without a match all shorten drafts).
    pub fn mean_gamma(&self) -> f64 {
        self.passes.iter().map(|p| p.drafted.len()).sum::<usize>() as f64 / self.passes.len().max(1) as f64
    }

    pub fn draft_ms_per_token(&self) -> f64 {
        let drafted: usize = self.passes.iter().map(|p| p.drafted.len()).sum();
        self.passes.iter().map(|p| p.draft_ms).sum::<f64>() / drafted.max(1) as f64
    }
}

/// Generates from `prompt` with the target `target` verifying what `drafter` proposes.
/// `on_pass` sees every pass; returning `Break` stops after it.
pub async fn speculative_generate<D: Drafter>(
    target: &Gpt2,
    drafter: &mut D,
    prompt: &[u32],
    options: &SpeculativeOptions,
    kv: KvMode,
    mut on_pass: impl FnMut(&Pass) -> ControlFlow<()>,
) -> Result<SpeculativeRun> {
    options.validate()?;
    if !matches!(kv, KvMode::Contiguous | KvMode::Paged { .. }) {
        return Err(EngineError::Request(format!(
            "speculative decoding rolls its cache back: use --kv contiguous or paged, not {kv}"
        )));
    }
    let config = &target.config;
    let (prompt, max_new, _) = fit_context(prompt, options.max_new_tokens, config.n_positions, false)?;
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let mut cache = target.cache(kv, 1, prompt.len() + max_new)?;

    // The target's cache always holds the sequence but its last token, which the next pass
    // feeds together with the draft.
    let start = Instant::now();
    let head = &prompt[..prompt.len() - 1];
    if !head.is_empty() {
        let logits = target.forward(&Step::single(head, 0), &mut cache, Logits::Last)?;
        readback::wait(logits).await?;
    }
    drafter.prefill(head).await?;
    let prefill_ms = start.elapsed().as_secs_f64() * 1000.0;

    let decode_start = Instant::now();
    let mut run = SpeculativeRun {
        new_ids: vec![],
        stop_reason: StopReason::MaxNewTokens,
        passes: vec![],
        prefill_ms,
        decode_ms: 0.0,
    };
    let mut sequence = prompt.clone();
    let mut gamma = options.gamma;
    while run.new_ids.len() < max_new {
        // A pass yields up to γ+1 tokens: never draft past the budget.
        let room = max_new - run.new_ids.len() - 1;
        let draft_start = Instant::now();
        let draft = if room == 0 {
            Draft { tokens: vec![], q: None }
        } else {
            drafter.propose(&sequence, gamma.min(room), &mut sampler).await?
        };
        let draft_ms = draft_start.elapsed().as_secs_f64() * 1000.0;

        let target_start = Instant::now();
        let cached = sequence.len() - 1;
        let mut fed = sequence[cached..].to_vec();
        fed.extend_from_slice(&draft.tokens);
        let g = draft.tokens.len();
        let logits = target.forward(&Step::single(&fed, cached), &mut cache, Logits::All)?;
        let (accepted, next, bonus) = verify(logits, &draft, &mut sampler).await?;
        let target_ms = target_start.elapsed().as_secs_f64() * 1000.0;

        let mut tokens = draft.tokens[..accepted].to_vec();
        tokens.push(next);
        if let Some(eos) = tokens.iter().position(|t| options.eos_token_ids.contains(t)) {
            tokens.truncate(eos + 1);
            run.stop_reason = StopReason::Eos;
        }
        sequence.extend_from_slice(&tokens);
        run.new_ids.extend_from_slice(&tokens);
        cache.truncate(sequence.len() - 1)?;
        drafter.rollback(sequence.len() - 1)?;

        let pass = Pass { drafted: draft.tokens, accepted, next, bonus, draft_ms, target_ms };
        let cancelled = on_pass(&pass).is_break();
        run.passes.push(pass);
        if run.stop_reason == StopReason::Eos {
            break;
        }
        if cancelled {
            run.stop_reason = StopReason::Cancelled;
            break;
        }
        if options.adaptive_gamma && g == gamma.min(room) && g > 0 {
            gamma = if accepted == g {
                (gamma + 1).min(MAX_GAMMA)
            } else if 2 * accepted < g {
                (gamma - 1).max(1)
            } else {
                gamma
            };
        }
    }
    run.decode_ms = decode_start.elapsed().as_secs_f64() * 1000.0;
    Ok(run)
}

/// The rejection step over `[1, γ+1, vocab]` target logits: how many draft tokens are kept,
/// the target's token after them, and whether that one is a bonus (all accepted).
async fn verify(logits: Tensor<3>, draft: &Draft, sampler: &mut Sampler) -> Result<(usize, u32, bool)> {
    let g = draft.tokens.len();
    let params = sampler.params().clone();
    if params.is_greedy() {
        // p is one-hot on the argmax: keep the draft while it agrees, then take the argmax.
        let [_, rows, vocab] = logits.dims();
        let best = argmax_rows(logits.reshape([rows, 1, vocab])).await?;
        let accepted = draft.tokens.iter().zip(&best).take_while(|(d, b)| d == b).count();
        return Ok((accepted, best[accepted], accepted == g));
    }
    let vocab = logits.dims()[2];
    let mut rows = readback::floats(logits).await?;
    let mut row = |i: usize| params.probabilities(&mut rows[i * vocab..(i + 1) * vocab]);
    for (i, &x) in draft.tokens.iter().enumerate() {
        let p = row(i);
        let q = draft.q.as_ref().map(|q| &q[i]);
        let qx = q.map_or(1.0, |q| q[x as usize]);
        if qx <= 0.0 || sampler.uniform() < (p[x as usize] / qx).min(1.0) {
            continue;
        }
        // Rejected: the residual max(0, p − q) (q one-hot on x for a deterministic drafter).
        let residual: Vec<f64> = match q {
            Some(q) => p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect(),
            None => p.iter().enumerate().map(|(id, &a)| if id == x as usize { 0.0 } else { a }).collect(),
        };
        let next = if residual.iter().sum::<f64>() > 0.0 { sampler.draw(&residual) } else { sampler.draw(&p) };
        return Ok((i, next, false));
    }
    Ok((g, sampler.draw(&row(g)), true))
}
