//! Generation: prefill the prompt, then decode one token per step until EOS, a stop string,
//! `max_new_tokens` or the caller's stop. Every token is streamed to a callback with its
//! latency. A batched, left-padded greedy variant serves the batch parity checks.

use std::ops::ControlFlow;

use burn::tensor::Int;
use burn::tensor::Tensor;
use web_time::Instant;

use crate::engine::decode::sampling::{Sampler, SamplingParams};
use crate::engine::decode::text_stream::TextStream;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::model::tokenizer::Tokenizer;
use crate::engine::readback;
use crate::engine::step::Step;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub kv: KvMode,
    /// Generation stops after emitting any of these (the token is kept, as in transformers).
    pub eos_token_ids: Vec<u32>,
    /// Generation stops once the text contains one of these; the text is cut before it.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            sampling: SamplingParams::default(),
            kv: KvMode::Contiguous,
            eos_token_ids: vec![],
            stop_strings: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    StopString,
    MaxNewTokens,
    /// The callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// In words, for people: "stop string", "max new tokens".
    pub fn words(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::StopString => "stop string",
            Self::MaxNewTokens => "max new tokens",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One streamed token.
#[derive(Debug, Clone)]
pub struct TokenEvent {
    pub index: usize,
    pub id: u32,
    /// Time of the step that produced it (the first one includes the prefill).
    pub step_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub new_ids: Vec<u32>,
    pub stop_reason: StopReason,
    /// Decoded new text (cut before a stop string), when a tokenizer was given.
    pub text: Option<String>,
    pub ttft_ms: f64,
    pub step_ms: Vec<f64>,
    pub total_ms: f64,
}

impl Generation {
    /// Decode speed: tokens after the first over the time they took.
    pub fn tokens_per_s(&self) -> f64 {
        decode_tokens_per_s(&self.step_ms)
    }
}

/// Decode speed from per-token step times: tokens after the first (whose step includes the
/// prefill) over the time they took; 0 until there are two.
pub fn decode_tokens_per_s(step_ms: &[f64]) -> f64 {
    let decode_ms: f64 = step_ms.iter().skip(1).sum();
    if step_ms.len() < 2 || decode_ms <= 0.0 { 0.0 } else { (step_ms.len() - 1) as f64 * 1000.0 / decode_ms }
}

/// Fits a request into the model's context of `n_positions` tokens (prompt + new tokens).
/// Returns the prompt to use, the number of new tokens and a warning when that was clamped.
/// A prompt that leaves no room is an error unless `truncate_left` drops its oldest tokens.
pub fn fit_context(
    prompt: &[u32],
    max_new_tokens: usize,
    n_positions: usize,
    truncate_left: bool,
) -> Result<(Vec<u32>, usize, Option<String>)> {
    if prompt.is_empty() {
        return Err(EngineError::Request("the prompt is empty; give at least one token".into()));
    }
    let mut warning = None;
    let mut max_new = max_new_tokens;
    if max_new >= n_positions {
        max_new = n_positions - 1;
    }
    let mut prompt = prompt.to_vec();
    if prompt.len() + max_new > n_positions {
        if truncate_left {
            let keep = n_positions - max_new;
            prompt.drain(..prompt.len() - keep);
        } else if prompt.len() >= n_positions {
            return Err(EngineError::Request(format!(
                "the prompt has {} tokens but the model's context is {n_positions} (n_positions), leaving no room to generate; shorten it or truncate it from the left",
                prompt.len()
            )));
        } else {
            max_new = n_positions - prompt.len();
        }
    }
    if max_new != max_new_tokens {
        warning = Some(format!(
            "max_new_tokens {max_new_tokens} does not fit the context of {n_positions} tokens with a {}-token prompt; clamped to {max_new}",
            prompt.len()
        ));
    }
    Ok((prompt, max_new, warning))
}

/// Generates from `prompt` (which must already fit the context: see [`fit_context`]).
/// `on_token` sees every new token; returning `Break` stops after it.
pub async fn generate(
    model: &Gpt2,
    prompt: &[u32],
    options: &GenerateOptions,
    tokenizer: Option<&Tokenizer>,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<Generation> {
    let config = &model.config;
    let (prompt, max_new, _) = fit_context(prompt, options.max_new_tokens, config.n_positions, false)?;
    if !options.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(EngineError::Request("stop strings need a tokenizer".into()));
    }
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let mut cache = model.cache(options.kv, 1, prompt.len() + max_new)?;

    // Stop strings are looked for in the text, so only when there are some is it decoded.
    let mut stream = (!options.stop_strings.is_empty()).then(|| TextStream::new(options.stop_strings.clone()));
    let start = Instant::now();
    let mut sequence = prompt.clone();
    let mut cached = 0;
    let mut out = Generation {
        new_ids: vec![],
        stop_reason: StopReason::MaxNewTokens,
        text: None,
        ttft_ms: 0.0,
        step_ms: vec![],
        total_ms: 0.0,
    };
    while out.new_ids.len() < max_new {
        let step_start = Instant::now();
        // Without a cache every step resends the whole sequence.
        let from = if cache.is_stateless() { 0 } else { cached };
        let logits = model.forward(&Step::single(&sequence[from..], from), &mut cache, Logits::Last)?;
        cached = sequence.len();
        let id = next_token(&mut sampler, logits, &sequence).await?;
        let step_ms = step_start.elapsed().as_secs_f64() * 1000.0;
        if out.new_ids.is_empty() {
            out.ttft_ms = start.elapsed().as_secs_f64() * 1000.0;
        }
        sequence.push(id);
        out.new_ids.push(id);
        out.step_ms.push(step_ms);
        let event = TokenEvent { index: out.new_ids.len() - 1, id, step_ms };
        let cancelled = on_token(&event).is_break();
        if options.eos_token_ids.contains(&id) {
            out.stop_reason = StopReason::Eos;
            break;
        }
        if let (Some(tok), Some(stream)) = (tokenizer, stream.as_mut())
            && stream.push(id, tok)?.stopped
        {
            out.text = Some(stream.text().to_owned());
            out.stop_reason = StopReason::StopString;
            break;
        }
        if cancelled {
            out.stop_reason = StopReason::Cancelled;
            break;
        }
    }
    out.total_ms = start.elapsed().as_secs_f64() * 1000.0;
    if let (Some(tok), None) = (tokenizer, &out.text) {
        out.text = Some(tok.decode(&out.new_ids)?);
    }
    Ok(out)
}

/// Samples from `[1, 1, vocab]` logits, reading back one integer when greedy allows it.
async fn next_token(sampler: &mut Sampler, logits: Tensor<3>, history: &[u32]) -> Result<u32> {
    if sampler.params().needs_logits() {
        let mut row = readback::floats(logits).await?;
        Ok(sampler.pick(&mut row, history))
    } else {
        Ok(argmax_rows(logits).await?[0])
    }
}

/// Device-side argmax of `[batch, 1, vocab]` logits, one id per row.
pub async fn argmax_rows(logits: Tensor<3>) -> Result<Vec<u32>> {
    let ids: Tensor<3, Int> = logits.argmax(2);
    Ok(readback::ints(ids).await?.into_iter().map(|i| i as u32).collect())
}

/// What batched greedy decoding produced.
#[derive(Debug, Clone)]
pub struct BatchGreedy {
    /// Each row's new ids.
    pub new_ids: Vec<Vec<u32>>,
    /// Each step's time, its readback included (the first step is the prefill).
    pub step_ms: Vec<f64>,
}

/// Greedy decoding of several prompts at once, left-padded with `pad_id` like transformers'
/// `padding_side="left"`. A row that emits an EOS is right-filled with `pad_id` until every
/// row has finished or `max_new_tokens` is reached.
pub async fn generate_batch_greedy(
    model: &Gpt2,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    pad_id: u32,
    eos_token_ids: &[u32],
) -> Result<BatchGreedy> {
    let n_positions = model.config.n_positions;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(EngineError::Request("every prompt of a batch needs at least one token".into()));
    }
    let padded_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if padded_len + max_new_tokens > n_positions {
        return Err(EngineError::Request(format!(
            "a {padded_len}-token prompt plus {max_new_tokens} new tokens exceeds the context of {n_positions}"
        )));
    }
    let mut cache = model.cache(KvMode::Contiguous, prompts.len(), padded_len + max_new_tokens)?;
    let mut step = Step::left_padded(prompts, pad_id);
    let mut next_pos: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut done = vec![false; prompts.len()];
    let mut out = vec![Vec::with_capacity(max_new_tokens); prompts.len()];
    let mut step_ms = Vec::with_capacity(max_new_tokens);
    for _ in 0..max_new_tokens {
        let start = Instant::now();
        let logits = model.forward(&step, &mut cache, Logits::Last)?;
        let ids = argmax_rows(logits).await?;
        step_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        for (row, &id) in ids.iter().enumerate() {
            let id = if done[row] { pad_id } else { id };
            out[row].push(id);
            done[row] |= eos_token_ids.contains(&id);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let fed: Vec<u32> = out.iter().map(|row| *row.last().expect("a token was just pushed")).collect();
        step = Step::decode(&fed, &next_pos);
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(BatchGreedy { new_ids: out, step_ms })
}
