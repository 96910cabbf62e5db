//! Inside a step: one real forward pass over a prompt, and one decode step after it, with
//! everything a learner asks to see recorded on the way — each head's attention, the residual
//! stream's size after each block, the logit lens, and where each step's time went.
//!
//! The pass is [`Gpt2::forward_probed`] itself with a [`Recorder`] for its probe, so what is
//! shown is what the engine computes; the attention probabilities are recomputed from the
//! queries and keys the pass produced (the kernels never materialise them), after the timed
//! steps, so recording does not change the timings.
//!
//! - `probe`: the forward pass's observer hooks ([`probe::Probe`], [`probe::NoProbe`]).
//! - `op_timer`: per-op timing on the device ([`op_timer::OpTimer`]), for inspections and for
//!   `--trace`.
//! - `trace`: a timeline as a Chrome trace-event file.

pub mod op_timer;
pub mod probe;
pub mod trace;

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

use self::op_timer::{Clock, OpTimer, Timeline};
use self::probe::{Op, Probe};
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// Tokens the logit lens keeps at each position.
pub const LENS_TOP: usize = 5;

/// The logit lens's best tokens at one position, most probable first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopTokens {
    pub ids: Vec<u32>,
    pub probs: Vec<f32>,
}

/// The logit lens after one block: `layer` counts blocks from 1; after the last, these are
/// the model's own next-token probabilities.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LensLayer {
    pub layer: usize,
    /// One per prompt position.
    pub positions: Vec<TopTokens>,
}

/// What one inspection recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Inspection {
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
    /// The prompt's attention probabilities, `[layer][head][query][key]` (causal: zero past
    /// the query).
    pub attentions: Vec<Vec<Vec<Vec<f32>>>>,
    /// The L2 norm of the residual stream after each block, `[layer][position]`.
    pub residual_norms: Vec<Vec<f32>>,
    pub logit_lens: Vec<LensLayer>,
    /// The token the prefill chose (greedy), which the decode step then feeds.
    pub next_token: u32,
    /// The decode step's attention, `[layer][head][key]` over the prompt and the new token.
    pub decode_attentions: Vec<Vec<Vec<f32>>>,
    /// The prefill step, then the decode step.
    pub timeline: Timeline,
}

/// A probe that times through an [`OpTimer`] and keeps what the inspection reads afterwards.
struct Recorder<'a> {
    timer: &'a mut OpTimer,
    /// Per layer: queries, new keys and the score scale.
    attention: Vec<(Tensor<2>, Tensor<2>, f32)>,
    /// Per layer: the residual stream after the block.
    outputs: Vec<Tensor<2>>,
}

impl<'a> Recorder<'a> {
    fn new(timer: &'a mut OpTimer) -> Self {
        Self { timer, attention: vec![], outputs: vec![] }
    }
}

impl Probe for Recorder<'_> {
    async fn op(&mut self, op: Op, layer: Option<usize>, f: impl FnOnce() -> Tensor<2> + Send) -> Result<Tensor<2>> {
        self.timer.op(op, layer, f).await
    }

    fn attention_inputs(&mut self, _layer: usize, q: &Tensor<2>, k: &Tensor<2>, scale: f32) {
        self.attention.push((q.clone(), k.clone(), scale));
    }

    fn block_output(&mut self, _layer: usize, x: &Tensor<2>) {
        self.outputs.push(x.clone());
    }
}

/// Inspects `model` on `prompt`: a prefill, a greedy pick, one decode step, each op timed with
/// `clock`. The prompt must leave room for the decode step in the context.
pub async fn inspect(model: &Gpt2, prompt: &[u32], clock: Clock) -> Result<Inspection> {
    let c = &model.config;
    if prompt.is_empty() || prompt.len() >= c.n_positions {
        return Err(EngineError::Request(format!(
            "an inspection needs a prompt of 1 to {} tokens (one position is left for the decode step), got {}",
            c.n_positions - 1,
            prompt.len()
        )));
    }
    let layers = c.n_layer;
    let mut timer = OpTimer::new(model.device(), clock);
    let mut cache = model.cache(KvMode::Contiguous, 1, prompt.len() + 1)?;

    timer.begin_step(format!("prefill · {} tokens", prompt.len()));
    let mut prefill = Recorder::new(&mut timer);
    let logits = model.forward_probed(&Step::single(prompt, 0), &mut cache, Logits::Last, layers, &mut prefill).await?;
    let next_token = greedy(prefill.timer, logits).await?;
    prefill.timer.end_step();
    let (prefill_attention, outputs) = (prefill.attention, prefill.outputs);

    timer.begin_step(format!("decode · position {}", prompt.len()));
    let mut decode = Recorder::new(&mut timer);
    let step = Step::single(&[next_token], prompt.len());
    let logits = model.forward_probed(&step, &mut cache, Logits::Last, layers, &mut decode).await?;
    greedy(decode.timer, logits).await?;
    decode.timer.end_step();
    let decode_attention = decode.attention;
    let timeline = timer.finish().await?;

    let (heads, t) = (c.n_head, prompt.len());
    let mut attentions = vec![];
    let mut decode_attentions = vec![];
    for ((q, k, scale), (q_new, k_new, _)) in prefill_attention.into_iter().zip(decode_attention) {
        let prompt_maps = readback::floats(attention_probs(q, k.clone(), 0, heads, scale)).await?;
        attentions.push(nest(&prompt_maps, heads, t, t));
        let keys = Tensor::cat(vec![k, k_new], 0);
        let decode_rows = readback::floats(attention_probs(q_new, keys, t, heads, scale)).await?;
        decode_attentions.push(decode_rows.chunks(t + 1).map(<[f32]>::to_vec).collect());
    }
    let mut residual_norms = vec![];
    let mut logit_lens = vec![];
    for (layer, x) in outputs.into_iter().enumerate() {
        residual_norms.push(readback::floats(x.clone().powf_scalar(2.0).sum_dim(1).sqrt()).await?);
        let probs = softmax(model.logits_of_residual(x), 1);
        let (top_probs, top_ids) = probs.topk_with_indices(LENS_TOP, 1);
        let (top_probs, top_ids) = (readback::floats(top_probs).await?, readback::ints(top_ids).await?);
        let positions = top_probs
            .chunks(LENS_TOP)
            .zip(top_ids.chunks(LENS_TOP))
            .map(|(probs, ids)| TopTokens { ids: ids.iter().map(|&i| i as u32).collect(), probs: probs.to_vec() })
            .collect();
        logit_lens.push(LensLayer { layer: layer + 1, positions });
    }
    Ok(Inspection {
        tokens: prompt.to_vec(),
        attentions,
        residual_norms,
        logit_lens,
        next_token,
        decode_attentions,
        timeline,
    })
}

/// The greedy next token of `[1, 1, vocab]` logits, timed as the step's sampling.
async fn greedy(timer: &mut OpTimer, logits: Tensor<3>) -> Result<u32> {
    let vocab = logits.dims()[2];
    let id = timer.op(Op::Sampling, None, || logits.reshape([1, vocab]).argmax(1).float()).await?;
    Ok(readback::floats(id).await?[0] as u32)
}

/// Softmax attention of `q` (`[queries, n_embd]`, the first at position `first`) over `keys`
/// (`[keys, n_embd]`, positions from 0), each query seeing the keys up to its own position:
/// `[heads, queries, keys]`, as the eager attention of transformers computes it.
fn attention_probs(q: Tensor<2>, keys: Tensor<2>, first: usize, heads: usize, scale: f32) -> Tensor<3> {
    let ([queries, e], [n_keys, _]) = (q.dims(), keys.dims());
    let to_heads = |m: Tensor<2>, rows: usize| m.reshape([rows, heads, e / heads]).swap_dims(0, 1);
    let scores = to_heads(q, queries).matmul(to_heads(keys, n_keys).swap_dims(1, 2)) * scale;
    let hidden: Vec<bool> = (0..queries).flat_map(|i| (0..n_keys).map(move |j| j > first + i)).collect();
    let hidden = Tensor::<2, Int>::from_data(
        TensorData::new(hidden.iter().map(|&h| h as i64).collect(), [queries, n_keys]),
        &scores.device(),
    )
    .equal_elem(1)
    .unsqueeze::<3>();
    softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 2)
}

/// Flat `[heads, rows, cols]` values as nested vectors.
fn nest(flat: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<Vec<Vec<f32>>> {
    (0..heads).map(|h| (0..rows).map(|r| flat[(h * rows + r) * cols..][..cols].to_vec()).collect()).collect()
}
