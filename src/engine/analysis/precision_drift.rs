//! What reduced precision (f16 or int8 weights, an f16 KV cache) costs in accuracy: a text is scored teacher-forced by the f32 model and
//! by its reduced copy (weights: [`Gpt2::into_weight_dtype`]; KV cache:
//! [`Gpt2::set_kv_dtype`]), and at every position the two next-token distributions are
//! compared: the log-probability each gives the token that actually comes next, the logits
//! themselves, and whether the top choice is the same. Each model scores through a cache of
//! its own KV dtype, so an f16 cache's rounding counts: its prefill stores the keys and values
//! first and attends over what was stored, as every decode step does.

use burn::tensor::Tensor;
use serde::Serialize;

use crate::engine::decode::sampling::argmax;
use crate::engine::decode::sampling::log_softmax;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// The reduced model (f16 or int8 weights, or an f16 cache) against the f32 one over one text.
#[derive(Debug, Clone, Serialize)]
pub struct PrecisionDrift {
    /// Positions with a next token to score (`ids.len() - 1`).
    pub positions: usize,
    /// Mean over positions of |log p₁₆(next) − log p₃₂(next)|.
    pub mean_abs_logprob_change: f64,
    pub max_abs_logprob_change: f64,
    /// Largest |logit₁₆ − logit₃₂| over every position and vocabulary entry.
    pub max_abs_logit_diff: f64,
    /// Share of positions where both models' top token is the same.
    pub top1_agreement: f64,
}

/// Scores `ids` (at least two, within the context) with both models, each in one cached prefill.
pub async fn precision_drift(reference: &Gpt2, reduced: &Gpt2, ids: &[u32]) -> Result<PrecisionDrift> {
    if ids.len() < 2 {
        return Err(EngineError::Request("scoring needs at least two tokens".into()));
    }
    let vocab = reference.config.vocab_size;
    let logits = |model: &Gpt2| -> Result<Tensor<3>> {
        let step = Step::single(ids, 0);
        model.forward(&step, &mut model.cache(KvMode::Contiguous, 1, ids.len())?, Logits::All)
    };
    let (a, b) = (readback::floats(logits(reference)?).await?, readback::floats(logits(reduced)?).await?);
    let (mut total, mut max_change, mut max_logit, mut agree) = (0.0, 0.0f64, 0.0f64, 0usize);
    for (pos, &next) in ids.iter().enumerate().skip(1) {
        let (ra, rb) = (&a[(pos - 1) * vocab..][..vocab], &b[(pos - 1) * vocab..][..vocab]);
        let change = f64::from((log_softmax(rb)[next as usize] - log_softmax(ra)[next as usize]).abs());
        total += change;
        max_change = max_change.max(change);
        max_logit = ra.iter().zip(rb).fold(max_logit, |m, (x, y)| m.max(f64::from((x - y).abs())));
        agree += usize::from(argmax(ra) == argmax(rb));
    }
    let positions = ids.len() - 1;
    Ok(PrecisionDrift {
        positions,
        mean_abs_logprob_change: total / positions as f64,
        max_abs_logprob_change: max_change,
        max_abs_logit_diff: max_logit,
        top1_agreement: agree as f64 / positions as f64,
    })
}
