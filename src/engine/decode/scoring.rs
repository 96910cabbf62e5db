//! Scoring a text instead of continuing it: each token's log-probability given the tokens
//! before it (teacher forcing), and transformers' strided perplexity over a long text.
//!
//! One forward pass computes every position's logits (`Logits::All`); they are read back in
//! chunks of positions so a long text never holds `tokens × vocab` floats on the host at once.

use crate::engine::decode::sampling::TokenLogprobs;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// Positions whose logits are read back at once.
const CHUNK: usize = 64;

/// Every token's log-probability after the ones before it, with the `top` most likely tokens
/// at each position; the first token has none (nothing predicts it), as OpenAI and vLLM report.
pub async fn prompt_logprobs(model: &Gpt2, ids: &[u32], top: usize) -> Result<Vec<Option<TokenLogprobs>>> {
    let mut out = vec![None];
    let keep = |row: &[f32], next| out.push(Some(TokenLogprobs::new(row, next, top)));
    each_prediction(model, ids, KvMode::Contiguous, keep).await?;
    Ok(out)
}

/// Calls `f(logits at position i, token i + 1)` for every position of `ids` but the last,
/// the tokens fed in chunks through a cache of `kv` (a sliding window limits what each sees).
async fn each_prediction(model: &Gpt2, ids: &[u32], kv: KvMode, mut f: impl FnMut(&[f32], u32)) -> Result<()> {
    let n = model.config.n_positions;
    if ids.is_empty() || ids.len() > n {
        return Err(EngineError::Request(format!("a scored text needs 1 to {n} tokens, got {}", ids.len())));
    }
    if kv == KvMode::None {
        return Err(EngineError::Request(
            "scoring feeds a text in chunks through a cache; use contiguous, sliding:W or paged".into(),
        ));
    }
    let vocab = model.config.vocab_size;
    let mut cache = model.cache(kv, 1, ids.len())?;
    for start in (0..ids.len() - 1).step_by(CHUNK) {
        let end = (start + CHUNK).min(ids.len() - 1);
        let logits = model.forward(&Step::single(&ids[start..end], start), &mut cache, Logits::All)?;
        let rows = readback::floats(logits).await?;
        for (i, row) in rows.chunks(vocab).enumerate() {
            f(row, ids[start + i + 1]);
        }
    }
    Ok(())
}

/// transformers' strided perplexity (its "Perplexity of fixed-length models" recipe).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Perplexity {
    pub perplexity: f64,
    /// The mean negative log-likelihood per token that `perplexity` exponentiates.
    pub nll: f64,
    /// Tokens the mean is over, counted as the recipe counts them.
    pub tokens: usize,
    pub windows: usize,
}

/// Windows of `context` tokens advancing by `stride`; each scores only the tokens the window
/// before did not reach, with the tokens before them as context. As in transformers' recipe,
/// a window's mean NLL is weighted by its scored tokens minus one (its `num_loss_tokens`), so
/// the figure equals the recipe's to the last digit. `on_window(done, total)` reports progress.
pub async fn perplexity(
    model: &Gpt2,
    ids: &[u32],
    context: usize,
    stride: usize,
    kv: KvMode,
    mut on_window: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let n = model.config.n_positions;
    if !(1..=n).contains(&context) || !(1..=context).contains(&stride) {
        return Err(EngineError::Request(format!(
            "perplexity needs 1 <= stride <= context <= {n} (the model's context), got context {context}, stride {stride}"
        )));
    }
    if ids.len() < 2 {
        return Err(EngineError::Request(format!("perplexity needs a text of 2 tokens or more, got {}", ids.len())));
    }
    let starts: Vec<usize> = (0..ids.len()).step_by(stride).collect();
    let total = starts.iter().position(|&s| s + context >= ids.len()).map_or(starts.len(), |i| i + 1);
    let (mut nll_sum, mut tokens, mut previous_end) = (0.0f64, 0usize, 0usize);
    for (window, &begin) in starts.iter().take(total).enumerate() {
        let end = (begin + context).min(ids.len());
        // Targets are the window's last `end - previous_end` tokens; the first token of a
        // window is never a target (nothing in the window predicts it).
        let first_target = previous_end.max(begin + 1);
        let mut window_nll = 0.0f64;
        let mut scored = 0usize;
        let mut position = begin;
        each_prediction(model, &ids[begin..end], kv, |row, next| {
            position += 1;
            if position >= first_target {
                let lp = TokenLogprobs::new(row, next, 0).logprob;
                window_nll -= f64::from(lp);
                scored += 1;
            }
        })
        .await?;
        let valid = end - previous_end;
        let loss_tokens = valid.saturating_sub(1);
        if scored > 0 {
            nll_sum += window_nll / scored as f64 * loss_tokens as f64;
        }
        tokens += loss_tokens;
        previous_end = end;
        on_window(window + 1, total);
    }
    let nll = nll_sum / tokens.max(1) as f64;
    Ok(Perplexity { perplexity: nll.exp(), nll, tokens, windows: total })
}
