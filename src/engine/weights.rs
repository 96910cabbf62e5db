//! HF GPT-2 safetensors → host tensors, checked against the config.
//!
//! HF stores GPT-2's linear layers as `Conv1D` with weights already `[in, out]`, which is the
//! layout `x @ W` wants: no transpose. `lm_head.weight` is usually absent because it is tied to
//! `wte`. Checkpoints in the wild may drop the `transformer.` prefix and may carry the causal
//! mask buffers `attn.bias` / `attn.masked_bias`; both are accepted.

use std::collections::BTreeSet;

use burn::tensor::{Distribution, TensorData};
use rand::{SeedableRng, rngs::StdRng};
use safetensors::{Dtype, SafeTensors};

use super::config::Gpt2Config;
use super::error::{EngineError, Result};

/// A `Conv1D` layer: `y = x @ weight + bias`, weight `[in, out]`.
pub struct DenseWeights {
    pub weight: TensorData,
    pub bias: TensorData,
}

/// LayerNorm's affine parameters.
pub struct NormWeights {
    pub weight: TensorData,
    pub bias: TensorData,
}

pub struct BlockWeights {
    pub ln_1: NormWeights,
    pub c_attn: DenseWeights,
    pub attn_proj: DenseWeights,
    pub ln_2: NormWeights,
    pub c_fc: DenseWeights,
    pub mlp_proj: DenseWeights,
}

/// Every parameter of a GPT-2 LM, as f32 host data in HF's layout.
pub struct Gpt2Weights {
    pub wte: TensorData,
    pub wpe: TensorData,
    pub blocks: Vec<BlockWeights>,
    pub ln_f: NormWeights,
    /// Present only for untied checkpoints; `None` means the output projection is `wte`.
    pub lm_head: Option<TensorData>,
}

/// Fetches tensors by HF name, checks shape and dtype, and remembers what was used so that
/// leftovers (a config with fewer layers than the file) are reported, not silently dropped.
struct Reader<'a> {
    file: SafeTensors<'a>,
    prefix: &'static str,
    used: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| EngineError::Weights(format!("model.safetensors is not a valid safetensors file: {e}")))?;
        let prefix = if file.names().iter().any(|n| n.starts_with("transformer.")) { "transformer." } else { "" };
        Ok(Self { file, prefix, used: BTreeSet::new() })
    }

    fn take(&mut self, name: &str, shape: &[usize], config_hint: &str) -> Result<TensorData> {
        let full = format!("{}{name}", self.prefix);
        let view = self.file.tensor(&full).map_err(|_| {
            EngineError::Weights(format!("tensor {full} is missing from model.safetensors ({config_hint})"))
        })?;
        if view.shape() != shape {
            return Err(EngineError::Weights(format!(
                "tensor {full} has shape {:?} but the config ({config_hint}) expects {:?}",
                view.shape(),
                shape
            )));
        }
        let values = to_f32(view.dtype(), view.data())
            .ok_or_else(|| EngineError::Weights(format!("tensor {full} has dtype {:?}; expected F32, F16 or BF16", view.dtype())))?;
        self.used.insert(full);
        Ok(TensorData::new(values, shape.to_vec()))
    }

    fn take_dense(&mut self, name: &str, inp: usize, out: usize, hint: &str) -> Result<DenseWeights> {
        Ok(DenseWeights {
            weight: self.take(&format!("{name}.weight"), &[inp, out], hint)?,
            bias: self.take(&format!("{name}.bias"), &[out], hint)?,
        })
    }

    fn take_norm(&mut self, name: &str, width: usize, hint: &str) -> Result<NormWeights> {
        Ok(NormWeights {
            weight: self.take(&format!("{name}.weight"), &[width], hint)?,
            bias: self.take(&format!("{name}.bias"), &[width], hint)?,
        })
    }

    /// Names in the file that no parameter took, mask buffers excepted.
    fn leftovers(&self) -> Vec<String> {
        self.file
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(*n) && !n.ends_with(".attn.bias") && !n.ends_with(".attn.masked_bias"))
            .map(|n| n.to_string())
            .collect()
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let pairs = || bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match dtype {
        Dtype::F32 => Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        Dtype::F16 => Some(pairs().map(|h| half::f16::from_bits(h).to_f32()).collect()),
        Dtype::BF16 => Some(pairs().map(|h| half::bf16::from_bits(h).to_f32()).collect()),
        _ => None,
    }
}

impl Gpt2Weights {
    /// Reads a whole `model.safetensors` (from disk, the network or a browser file picker).
    pub fn from_safetensors(bytes: &[u8], config: &Gpt2Config) -> Result<Self> {
        let mut r = Reader::new(bytes)?;
        let (e, inner) = (config.n_embd, config.n_inner);
        let hint = format!(
            "n_layer {}, n_embd {}, n_inner {}, vocab_size {}, n_positions {}",
            config.n_layer, e, inner, config.vocab_size, config.n_positions
        );
        let wte = r.take("wte.weight", &[config.vocab_size, e], &hint)?;
        let wpe = r.take("wpe.weight", &[config.n_positions, e], &hint)?;
        let blocks = (0..config.n_layer)
            .map(|i| {
                Ok(BlockWeights {
                    ln_1: r.take_norm(&format!("h.{i}.ln_1"), e, &hint)?,
                    c_attn: r.take_dense(&format!("h.{i}.attn.c_attn"), e, 3 * e, &hint)?,
                    attn_proj: r.take_dense(&format!("h.{i}.attn.c_proj"), e, e, &hint)?,
                    ln_2: r.take_norm(&format!("h.{i}.ln_2"), e, &hint)?,
                    c_fc: r.take_dense(&format!("h.{i}.mlp.c_fc"), e, inner, &hint)?,
                    mlp_proj: r.take_dense(&format!("h.{i}.mlp.c_proj"), inner, e, &hint)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = r.take_norm("ln_f", e, &hint)?;
        // lm_head lives outside `transformer.`; a tied model may still store a copy of wte.
        let lm_head = if r.file.names().contains(&"lm_head.weight") {
            let saved = std::mem::replace(&mut r.prefix, "");
            let head = r.take("lm_head.weight", &[config.vocab_size, e], &hint)?;
            r.prefix = saved;
            (!config.tie_word_embeddings).then_some(head)
        } else if config.tie_word_embeddings {
            None
        } else {
            return Err(EngineError::Weights(format!(
                "tie_word_embeddings is false but lm_head.weight is missing ({hint})"
            )));
        };
        let leftovers = r.leftovers();
        if !leftovers.is_empty() {
            return Err(EngineError::Weights(format!(
                "model.safetensors has tensors the config does not describe ({hint}): {}",
                leftovers.join(", ")
            )));
        }
        Ok(Self { wte, wpe, blocks, ln_f, lm_head })
    }

    /// Seeded random weights with HF's GPT-2 initialisation (N(0, 0.02), zero biases, unit
    /// LayerNorms): meaningless text, real speed. Used by `--random` and the offline demo.
    pub fn random(config: &Gpt2Config, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut normal = |shape: &[usize]| TensorData::random::<f32, _, _>(shape.to_vec(), Distribution::Normal(0.0, 0.02), &mut rng);
        let zeros = |n: usize| TensorData::zeros::<f32, _>([n]);
        let norm = |n: usize| NormWeights { weight: TensorData::ones::<f32, _>([n]), bias: zeros(n) };
        let (e, inner) = (config.n_embd, config.n_inner);
        let wte = normal(&[config.vocab_size, e]);
        let wpe = normal(&[config.n_positions, e]);
        let blocks = (0..config.n_layer)
            .map(|_| BlockWeights {
                ln_1: norm(e),
                c_attn: DenseWeights { weight: normal(&[e, 3 * e]), bias: zeros(3 * e) },
                attn_proj: DenseWeights { weight: normal(&[e, e]), bias: zeros(e) },
                ln_2: norm(e),
                c_fc: DenseWeights { weight: normal(&[e, inner]), bias: zeros(inner) },
                mlp_proj: DenseWeights { weight: normal(&[inner, e]), bias: zeros(e) },
            })
            .collect();
        Self { wte, wpe, blocks, ln_f: norm(e), lm_head: None }
    }
}
