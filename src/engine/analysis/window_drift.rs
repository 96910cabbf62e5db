//! What a sliding window costs: one greedy generation runs with the full (contiguous) cache
//! while a sliding cache of `window` slots is fed the very same tokens, and every step
//! compares the two next-token distributions. While the sequence fits the window the logits
//! agree (up to float noise); once the ring wraps, evicted positions are no longer seen and
//! the logits drift. The KV Cache page draws this live.

use std::ops::ControlFlow;

use crate::engine::decode::sampling::argmax;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::{KvCache, KvMode};
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// One generated token seen through both caches.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DriftStep {
    /// Position of the token that was fed in this step (its K/V went into `slot`).
    pub position: usize,
    /// Ring slot written by this step, as the sliding cache reports it.
    pub slot: usize,
    /// The position whose K/V that write overwrote, once the ring is full (the cache's record).
    pub evicted: Option<usize>,
    /// The greedy token the full cache chose next.
    pub token: u32,
    /// Largest |logit(full) − logit(sliding)| over the vocabulary.
    pub max_abs_diff: f32,
    /// Whether the sliding cache would have chosen the same token.
    pub same_top1: bool,
}

/// Generates `new_tokens` greedy tokens after `prompt` with the full cache, feeding the same
/// tokens to a `window`-slot sliding cache, and reports each step to `on_step`
/// (`Break` stops early). The prompt goes through both caches as one prefill.
pub async fn window_drift(
    model: &Gpt2,
    prompt: &[u32],
    new_tokens: usize,
    window: usize,
    mut on_step: impl FnMut(&DriftStep) -> ControlFlow<()>,
) -> Result<Vec<DriftStep>> {
    let n_positions = model.config.n_positions;
    if prompt.is_empty() || new_tokens == 0 {
        return Err(EngineError::Request("window drift needs a prompt and at least one new token".into()));
    }
    if prompt.len() + new_tokens > n_positions {
        return Err(EngineError::Request(format!(
            "a {}-token prompt plus {new_tokens} new tokens exceeds the context of {n_positions}",
            prompt.len()
        )));
    }
    let capacity = prompt.len() + new_tokens;
    let mut full = model.cache(KvMode::Contiguous, 1, capacity)?;
    let mut sliding = model.cache(KvMode::Sliding { window }, 1, capacity)?;
    let mut steps = Vec::with_capacity(new_tokens);
    let mut step = Step::single(prompt, 0);
    let mut position = prompt.len() - 1;
    for _ in 0..new_tokens {
        let a = readback::floats(model.forward(&step, &mut full, Logits::Last)?).await?;
        let b = readback::floats(model.forward(&step, &mut sliding, Logits::Last)?).await?;
        let KvCache::Sliding(ring) = &sliding else { unreachable!("a sliding cache was made") };
        let write = ring.last_write().expect("the step stored its tokens");
        let max_abs_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let token = argmax(&a);
        let report = DriftStep {
            position,
            slot: write.slot,
            evicted: write.evicted,
            token,
            max_abs_diff,
            same_top1: argmax(&b) == token,
        };
        let stop = on_step(&report).is_break();
        steps.push(report);
        if stop {
            break;
        }
        position += 1;
        step = Step::single(&[token], position);
    }
    Ok(steps)
}
