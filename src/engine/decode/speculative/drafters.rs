//! Who proposes the tokens the target verifies: a smaller model, the target's own first layers
//! (early exit), or a lookup of the last n-gram earlier in the text. One small trait; the
//! runtime choice is the [`AnyDrafter`] enum.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use crate::engine::decode::generate::argmax_rows;
use crate::engine::decode::sampling::Sampler;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::{KvCache, KvMode};
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// The draft as the user names it: `MODEL` (a folder / repo / loaded model), `layers:K` or
/// `ngram:N`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DraftSpec {
    Model(String),
    /// The target's first K blocks, then its final LayerNorm and head.
    EarlyExit(usize),
    /// Prompt lookup: continue the latest earlier match of the last N (down to 1) tokens.
    Ngram(usize),
}

impl FromStr for DraftSpec {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        let number = |rest: &str, what: &str| {
            rest.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                EngineError::Request(format!("unknown drafter {s:?}: {what} takes a whole number ≥ 1 (e.g. {what}:2)"))
            })
        };
        match s.split_once(':') {
            Some(("layers", k)) => Ok(Self::EarlyExit(number(k, "layers")?)),
            Some(("ngram", n)) => Ok(Self::Ngram(number(n, "ngram")?)),
            _ if s.trim().is_empty() => {
                Err(EngineError::Request("the drafter is empty; give a model, layers:K or ngram:N".into()))
            }
            _ => Ok(Self::Model(s.to_string())),
        }
    }
}

impl fmt::Display for DraftSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(m) => write!(f, "{m}"),
            Self::EarlyExit(k) => write!(f, "layers:{k}"),
            Self::Ngram(n) => write!(f, "ngram:{n}"),
        }
    }
}

/// Up to γ proposed tokens, with the distribution each was drawn from (`None`: chosen
/// deterministically, i.e. one-hot on the token).
pub struct Draft {
    pub tokens: Vec<u32>,
    pub q: Option<Vec<Vec<f64>>>,
}

#[allow(async_fn_in_trait)] // used through generics and `AnyDrafter`, never as `dyn`
pub trait Drafter {
    /// Caches the prompt (all but its last token) before the timed passes begin.
    async fn prefill(&mut self, tokens: &[u32]) -> Result<()>;
    /// Proposes up to `gamma` tokens continuing `sequence`.
    async fn propose(&mut self, sequence: &[u32], gamma: usize, sampler: &mut Sampler) -> Result<Draft>;
    /// Only the first `tokens` tokens of the sequence are final: forget the rest.
    fn rollback(&mut self, tokens: usize) -> Result<()>;
}

/// A GPT-2 drafting with its first `layers` blocks: a separate draft model (all its layers) or
/// the target itself (early exit). Its own KV cache rolls back like the target's.
pub struct ModelDrafter<'m> {
    model: &'m Gpt2,
    layers: usize,
    cache: KvCache,
    cached: usize,
}

impl<'m> ModelDrafter<'m> {
    /// Checks that `model` can draft for `target` over `capacity` tokens.
    pub fn new(model: &'m Gpt2, layers: usize, target: &Gpt2Config, capacity: usize) -> Result<Self> {
        let c = &model.config;
        if c.vocab_size != target.vocab_size {
            return Err(EngineError::Request(format!(
                "the draft model's vocabulary has {} tokens, the target's {}: they must share the tokenizer",
                c.vocab_size, target.vocab_size
            )));
        }
        if c.n_positions < capacity {
            return Err(EngineError::Request(format!(
                "the draft model's context is {} tokens, this generation needs {capacity}",
                c.n_positions
            )));
        }
        if layers == 0 || layers > c.n_layer {
            return Err(EngineError::Request(format!(
                "an early-exit draft needs 1 to {} layers, got {layers}",
                c.n_layer
            )));
        }
        let cache = KvCache::new(
            KvMode::Contiguous,
            &Gpt2Config { n_layer: layers, ..c.clone() },
            1,
            capacity,
            model.kv_dtype(),
            model.device(),
        )?;
        Ok(Self { model, layers, cache, cached: 0 })
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Tensor<3>> {
        let logits = self.model.forward_layers(
            &Step::single(&tokens[self.cached..], self.cached),
            &mut self.cache,
            Logits::Last,
            self.layers,
        )?;
        self.cached = tokens.len();
        Ok(logits)
    }
}

impl Drafter for ModelDrafter<'_> {
    async fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.len() > self.cached {
            let logits = self.forward(tokens)?;
            readback::wait(logits).await?;
        }
        Ok(())
    }

    async fn propose(&mut self, sequence: &[u32], gamma: usize, sampler: &mut Sampler) -> Result<Draft> {
        let mut extended = sequence.to_vec();
        let sampled = !sampler.params().is_greedy();
        let mut q = vec![];
        for _ in 0..gamma {
            let logits = self.forward(&extended)?;
            let token = if sampled {
                let probs = sampler.params().probabilities(&mut readback::floats(logits).await?);
                let token = sampler.draw(&probs);
                q.push(probs);
                token
            } else {
                argmax_rows(logits).await?[0]
            };
            extended.push(token);
        }
        Ok(Draft { tokens: extended.split_off(sequence.len()), q: sampled.then_some(q) })
    }

    fn rollback(&mut self, tokens: usize) -> Result<()> {
        if tokens < self.cached {
            self.cache.truncate(tokens)?;
            self.cached = tokens;
        }
        Ok(())
    }
}

/// Prompt-lookup decoding: no model at all. Finds the latest earlier occurrence of the last
/// `max_n` tokens (then shorter suffixes) and proposes what followed it.
pub struct NgramDrafter {
    max_n: usize,
}

impl NgramDrafter {
    pub fn new(max_n: usize) -> Self {
        Self { max_n }
    }
}

impl Drafter for NgramDrafter {
    async fn prefill(&mut self, _tokens: &[u32]) -> Result<()> {
        Ok(())
    }

    async fn propose(&mut self, sequence: &[u32], gamma: usize, _sampler: &mut Sampler) -> Result<Draft> {
        let len = sequence.len();
        for n in (1..=self.max_n.min(len.saturating_sub(1))).rev() {
            let suffix = &sequence[len - n..];
            if let Some(start) = (0..len - n).rev().find(|&i| &sequence[i..i + n] == suffix) {
                let from = start + n;
                return Ok(Draft { tokens: sequence[from..(from + gamma).min(len)].to_vec(), q: None });
            }
        }
        Ok(Draft { tokens: vec![], q: None })
    }

    fn rollback(&mut self, _tokens: usize) -> Result<()> {
        Ok(())
    }
}

/// The drafter chosen at run time.
#[allow(clippy::large_enum_variant)] // one per run: not worth a box
pub enum AnyDrafter<'m> {
    Model(ModelDrafter<'m>),
    Ngram(NgramDrafter),
}

impl<'m> AnyDrafter<'m> {
    /// Builds the drafter `spec` names; `draft_model` is the loaded model of a
    /// [`DraftSpec::Model`] (the caller loads it: files, hub or browser cache).
    pub fn new(spec: &DraftSpec, target: &'m Gpt2, draft_model: Option<&'m Gpt2>, capacity: usize) -> Result<Self> {
        Ok(match spec {
            DraftSpec::Ngram(n) => Self::Ngram(NgramDrafter::new(*n)),
            DraftSpec::EarlyExit(k) => {
                if *k >= target.config.n_layer {
                    return Err(EngineError::Request(format!(
                        "layers:{k} is the whole {}-layer target, not a cheaper draft; use 1 to {}",
                        target.config.n_layer,
                        target.config.n_layer - 1
                    )));
                }
                Self::Model(ModelDrafter::new(target, *k, &target.config, capacity)?)
            }
            DraftSpec::Model(name) => {
                let model =
                    draft_model.ok_or_else(|| EngineError::Request(format!("the draft model {name} is not loaded")))?;
                Self::Model(ModelDrafter::new(model, model.config.n_layer, &target.config, capacity)?)
            }
        })
    }
}

impl Drafter for AnyDrafter<'_> {
    async fn prefill(&mut self, tokens: &[u32]) -> Result<()> {
        match self {
            Self::Model(m) => m.prefill(tokens).await,
            Self::Ngram(n) => n.prefill(tokens).await,
        }
    }

    async fn propose(&mut self, sequence: &[u32], gamma: usize, sampler: &mut Sampler) -> Result<Draft> {
        match self {
            Self::Model(m) => m.propose(sequence, gamma, sampler).await,
            Self::Ngram(n) => n.propose(sequence, gamma, sampler).await,
        }
    }

    fn rollback(&mut self, tokens: usize) -> Result<()> {
        match self {
            Self::Model(m) => m.rollback(tokens),
            Self::Ngram(n) => n.rollback(tokens),
        }
    }
}
