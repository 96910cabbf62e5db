//! KV caches: what a step attends to besides its own tokens, and where its keys/values go.

pub mod contiguous;
pub mod mask;
pub mod memory;
pub mod sliding;

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Tensor};

use self::contiguous::ContiguousKv;
use self::mask::{KeyMeta, StepMask};
use self::sliding::SlidingKv;
use super::config::Gpt2Config;
use super::error::{EngineError, Result};
use super::kernels::Path;
use super::step::Step;

/// The cache a generation uses: `contiguous`, `sliding:W` or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvMode {
    Contiguous,
    Sliding { window: usize },
    /// No cache: every step recomputes the whole sequence (the baseline of `bench kv`).
    None,
}

impl FromStr for KvMode {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "contiguous" => Ok(Self::Contiguous),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("sliding:").map(str::parse::<usize>) {
                Some(Ok(window)) if window > 0 => Ok(Self::Sliding { window }),
                _ => Err(EngineError::Request(format!(
                    "unknown KV mode {s:?}; use contiguous, sliding:W (W > 0) or none"
                ))),
            },
        }
    }
}

impl fmt::Display for KvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contiguous => write!(f, "contiguous"),
            Self::Sliding { window } => write!(f, "sliding:{window}"),
            Self::None => write!(f, "none"),
        }
    }
}

/// A cache instance for one batch of sequences.
pub enum KvCache {
    Contiguous(ContiguousKv),
    Sliding(SlidingKv),
    /// Keeps nothing: a step sees only its own tokens (within `window` positions, if set:
    /// recomputing under a window is the sliding cache's reference).
    Stateless { window: Option<usize> },
}

impl KvCache {
    /// A cache for `batch` rows of at most `capacity` tokens each (the contiguous buffer size).
    pub fn new(mode: KvMode, config: &Gpt2Config, batch: usize, capacity: usize, device: &Device) -> Result<Self> {
        let (l, h, d) = (config.n_layer, config.n_head, config.head_dim());
        Ok(match mode {
            KvMode::Contiguous => Self::Contiguous(ContiguousKv::new(l, batch, h, d, capacity, device)),
            KvMode::Sliding { window } => Self::Sliding(SlidingKv::new(l, batch, h, d, window, device)?),
            KvMode::None => Self::Stateless { window: None },
        })
    }

    /// Called once per step before the layers run: books the step's slots and returns who
    /// may attend to whom, shared by every layer.
    pub fn prepare(&mut self, step: &Step) -> Result<StepMask> {
        match self {
            Self::Contiguous(c) => c.prepare(step),
            Self::Sliding(s) => s.prepare(step),
            Self::Stateless { window } => Ok(StepMask::new(&KeyMeta::of_step(step), step, *window)),
        }
    }

    /// Stores one layer's new K/V `[batch, heads, len, head_dim]` and returns the buffers its
    /// queries attend to (their first `mask.keys` slots).
    pub fn update(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>, mask: &StepMask, path: Path) -> (Tensor<4>, Tensor<4>) {
        match self {
            Self::Contiguous(c) => c.update(layer, k, v, &mask.uploads, path),
            Self::Sliding(s) => s.update(layer, k, v, &mask.uploads, path),
            Self::Stateless { .. } => (k, v),
        }
    }

    /// Whether the next step must resend the whole sequence.
    pub fn is_stateless(&self) -> bool {
        matches!(self, Self::Stateless { .. })
    }
}
