//! KV caches: what a step attends to besides its own tokens, and where its keys/values go.

pub mod blocks;
pub mod contiguous;
pub mod dtype;
pub mod key_norms;
pub mod mask;
pub mod memory;
pub mod paged;
pub mod sliding;

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device, Tensor};

use self::contiguous::ContiguousKv;
use self::dtype::KvDtype;
use self::mask::{KeyMeta, StepMask};
use self::paged::{PagedKv, PagedPlan};
use self::sliding::SlidingKv;
use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::held_bytes::tensor_bytes;
use crate::engine::kernels::{self, KernelPath};
use crate::engine::model::config::Gpt2Config;
use crate::engine::step::Step;

/// Tokens per block of the paged cache unless told otherwise. vLLM's is 16, for its GPU
/// kernels; here blocks of 4, 8 and 16 decoded at the same speed within the noise on the CPU
/// and on lavapipe, and a sequence's part-full last block wastes a quarter as much as at 16
/// (the book's benchmarks chapter has both figures).
pub const DEFAULT_BLOCK_SIZE: usize = 4;

/// The cache a generation uses: `contiguous`, `sliding:W`, `paged[:B]` or `none`, which is
/// also how it travels in the pages' messages (a string, checked as it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum KvMode {
    Contiguous,
    Sliding {
        window: usize,
    },
    /// Blocks of `block_size` slots through a block table (the batching engine's cache).
    Paged {
        block_size: usize,
    },
    /// No cache: every step recomputes the whole sequence (the baseline of `bench kv`).
    None,
}

impl FromStr for KvMode {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "contiguous" => Ok(Self::Contiguous),
            "none" => Ok(Self::None),
            "paged" => Ok(Self::Paged { block_size: DEFAULT_BLOCK_SIZE }),
            _ => match (
                s.strip_prefix("sliding:").map(str::parse::<usize>),
                s.strip_prefix("paged:").map(str::parse::<usize>),
            ) {
                (Some(Ok(window)), _) if window > 0 => Ok(Self::Sliding { window }),
                (_, Some(Ok(block_size))) if block_size > 0 => Ok(Self::Paged { block_size }),
                _ => Err(EngineError::Request(format!(
                    "unknown KV mode {s:?}; use contiguous, sliding:W (W > 0), paged or paged:B (B > 0 tokens a block) or none"
                ))),
            },
        }
    }
}

impl From<KvMode> for String {
    fn from(mode: KvMode) -> Self {
        mode.to_string()
    }
}

impl TryFrom<String> for KvMode {
    type Error = EngineError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl fmt::Display for KvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Contiguous => write!(f, "contiguous"),
            Self::Sliding { window } => write!(f, "sliding:{window}"),
            Self::Paged { block_size } => write!(f, "paged:{block_size}"),
            Self::None => write!(f, "none"),
        }
    }
}

/// What a cache's buffers hold, read off the buffers: element type and bytes. An f16 cache on
/// wgpu shows as f32 words holding two halves each, in half the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    pub dtype: DType,
    pub bytes: u64,
}

impl Allocated {
    fn of<'a, const D: usize>(buffers: impl Iterator<Item = &'a Tensor<D>>) -> Self {
        let mut out = Self { dtype: DType::F32, bytes: 0 };
        for t in buffers {
            out.dtype = t.dtype();
            out.bytes += tensor_bytes(t);
        }
        out
    }
}

/// A cache instance for one batch of sequences.
#[allow(clippy::large_enum_variant)] // one per generation: not worth a box
pub enum KvCache {
    Contiguous(ContiguousKv),
    Sliding(SlidingKv),
    Paged(PagedKv),
    /// Keeps nothing: a step sees only its own tokens (within `window` positions, if set:
    /// recomputing under a window is the sliding cache's reference).
    Stateless {
        window: Option<usize>,
    },
}

/// What every layer of one step shares: who attends to whom, and where new rows go.
#[allow(clippy::large_enum_variant)] // one per step: not worth a box
pub enum StepPlan {
    /// Rectangular steps over position-masked buffers (contiguous, sliding, none).
    Masked(StepMask),
    /// Ragged steps through block tables.
    Paged(PagedPlan),
}

impl KvCache {
    /// A cache for `batch` rows of at most `capacity` tokens each (the contiguous buffer size),
    /// holding `dtype` values.
    pub fn new(
        mode: KvMode,
        config: &Gpt2Config,
        batch: usize,
        capacity: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        let (l, h, d) = (config.n_layer, config.n_head, config.head_dim());
        Ok(match mode {
            KvMode::Contiguous => Self::Contiguous(ContiguousKv::new(l, batch, h, d, capacity, dtype, device)?),
            KvMode::Sliding { window } => Self::Sliding(SlidingKv::new(l, batch, h, d, window, dtype, device)?),
            KvMode::Paged { block_size } => {
                Self::Paged(PagedKv::for_rows(l, config.n_embd, batch, capacity, block_size, dtype, device)?)
            }
            KvMode::None => Self::Stateless { window: None },
        })
    }

    /// Called once per step before the layers run: books the step's slots and returns who
    /// may attend to whom, shared by every layer.
    pub fn prepare(&mut self, step: &Step) -> Result<StepPlan> {
        Ok(match self {
            Self::Contiguous(c) => StepPlan::Masked(c.prepare(step)?),
            Self::Sliding(s) => StepPlan::Masked(s.prepare(step)?),
            Self::Paged(p) => StepPlan::Paged(p.prepare(step)?),
            Self::Stateless { window } => StepPlan::Masked(StepMask::new(&KeyMeta::of_step(step), step, *window)),
        })
    }

    /// One layer's attention: stores its new K/V and attends the queries over what the cache
    /// holds. `q`, `k`, `v` and the result are `[tokens, n_embd]`, tokens in the step's order.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        layer: usize,
        q: Tensor<2>,
        k: Tensor<2>,
        v: Tensor<2>,
        plan: &StepPlan,
        heads: usize,
        scale: f32,
        path: KernelPath,
    ) -> Tensor<2> {
        let mask = match plan {
            StepPlan::Masked(mask) => mask,
            StepPlan::Paged(plan) => {
                let Self::Paged(paged) = self else { unreachable!("a paged plan comes from a paged cache") };
                return paged.attend(layer, q, k, v, plan, heads, scale, path);
            }
        };
        let [n, e] = q.dims();
        let (b, t) = (mask.batch, mask.queries);
        debug_assert_eq!(b * t, n);
        let to_heads = |m: Tensor<2>| m.reshape([b, t, heads, e / heads]).swap_dims(1, 2);
        let (k, v) = (to_heads(k), to_heads(v));
        let (k, v) = match self {
            Self::Contiguous(c) => c.update(layer, k, v, &mask.uploads, path),
            Self::Sliding(s) => s.update(layer, k, v, &mask.uploads, path),
            Self::Paged(_) | Self::Stateless { .. } => (k, v),
        };
        kernels::attention(to_heads(q), k, v, mask, scale, path).swap_dims(1, 2).reshape([n, e])
    }

    /// Keeps the first `tokens` tokens of every row and forgets the rest (speculative
    /// decoding's rollback of rejected draft tokens; nothing is recomputed).
    pub fn truncate(&mut self, tokens: usize) -> Result<()> {
        match self {
            Self::Contiguous(c) => c.truncate(tokens),
            Self::Paged(p) => p.truncate_rows(tokens),
            Self::Stateless { .. } => Ok(()),
            Self::Sliding(_) => Err(EngineError::Request(
                "the sliding-window cache cannot roll back; use a contiguous or paged cache".into(),
            )),
        }
    }

    /// Row `parents[i]` becomes row `i` (beam search keeps the best continuations): a gather
    /// of cache rows (contiguous) or a fork of block tables with copy-on-write (paged).
    pub fn reorder(&mut self, parents: &[usize], device: &Device) -> Result<()> {
        match self {
            Self::Contiguous(c) => {
                c.reorder(parents, device);
                Ok(())
            }
            Self::Paged(p) => p.reorder_rows(parents),
            Self::Stateless { .. } => Ok(()),
            Self::Sliding(_) => {
                Err(EngineError::Request("beam search runs on a contiguous or paged cache (or none)".into()))
            }
        }
    }

    /// Its buffers' element type and bytes (none for a stateless cache).
    pub fn allocated(&self) -> Option<Allocated> {
        match self {
            Self::Contiguous(c) => Some(c.allocated()),
            Self::Sliding(s) => Some(s.allocated()),
            Self::Paged(p) => Some(p.allocated()),
            Self::Stateless { .. } => None,
        }
    }

    /// Whether the next step must resend the whole sequence.
    pub fn is_stateless(&self) -> bool {
        matches!(self, Self::Stateless { .. })
    }

    /// The paged cache inside, for the batch runner to schedule segments on.
    pub fn paged_mut(&mut self) -> Option<&mut PagedKv> {
        match self {
            Self::Paged(p) => Some(p),
            _ => None,
        }
    }
}
