//! The contiguous KV cache: per layer, K and V buffers `[batch, heads, capacity, head_dim]`
//! allocated once, each step's new rows written in place at the next free slots; attention
//! reads the filled prefix. No per-token concatenation, so a decode step copies O(1) rows.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::Allocated;
use super::dtype::KvDtype;
use super::mask::{KeyMeta, StepMask};
use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::{self, KernelPath, Slots};
use crate::engine::step::Step;
use crate::engine::step_uploads::StepUploads;

pub struct ContiguousKv {
    /// `(k, v)` per layer; `Option` so a buffer can be moved out, written and put back
    /// without a second reference that would force burn to copy instead of writing in place.
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    capacity: usize,
    /// Slots filled so far (the same for every row: padding takes slots too).
    len: usize,
    /// Where the current step writes.
    step_start: usize,
    meta: KeyMeta,
}

impl ContiguousKv {
    /// Element type and bytes of its buffers, read off them.
    pub fn allocated(&self) -> Allocated {
        Allocated::of(self.layers.iter().flatten().flat_map(|(k, v)| [k, v]))
    }

    pub fn new(
        n_layer: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        let zeros = || dtype.zeros([batch, heads, capacity, head_dim], device);
        Ok(Self {
            layers: (0..n_layer).map(|_| Ok(Some((zeros()?, zeros()?)))).collect::<Result<_>>()?,
            capacity,
            len: 0,
            step_start: 0,
            meta: KeyMeta::default(),
        })
    }

    /// Reserves the step's slots; its queries see every filled slot, their own included.
    pub fn prepare(&mut self, step: &Step) -> Result<StepMask> {
        if self.len + step.len > self.capacity {
            return Err(EngineError::Request(format!(
                "the KV cache holds {} tokens; {} more do not fit",
                self.capacity, step.len
            )));
        }
        self.meta = self.meta.followed_by(step);
        self.step_start = self.len;
        self.len += step.len;
        Ok(StepMask::new(&self.meta, step, None))
    }

    /// Writes the step's K/V `[batch, heads, len, head_dim]` into its slots and returns the
    /// whole buffers (the mask says how many slots are filled).
    pub fn update(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
        uploads: &StepUploads,
        path: KernelPath,
    ) -> (Tensor<4>, Tensor<4>) {
        let cache = self.layers[layer].take().expect("each layer is updated once per step");
        let cache =
            kernels::append(cache, (k, v), Slots { base: self.step_start, ring: false, first: 0 }, uploads, path);
        self.layers[layer] = Some(cache.clone());
        cache
    }

    /// Forgets every slot past the first `tokens` (speculative rollback): they are simply
    /// overwritten by the next step.
    pub fn truncate(&mut self, tokens: usize) -> Result<()> {
        if tokens > self.len {
            return Err(EngineError::Request(format!(
                "cannot roll the KV cache back to {tokens} tokens: it holds {}",
                self.len
            )));
        }
        self.len = tokens;
        self.meta = self.meta.truncated(tokens);
        Ok(())
    }

    /// Row `parents[i]` becomes row `i` in every layer (beam reordering): a gather of whole
    /// rows, so every step copies the beams' full caches.
    pub fn reorder(&mut self, parents: &[usize], device: &Device) {
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(parents.iter().map(|&p| p as i64).collect(), [parents.len()]),
            device,
        );
        for layer in &mut self.layers {
            let (k, v) = layer.take().expect("cache buffers are in place between steps");
            *layer = Some((k.select(0, index.clone()), v.select(0, index.clone())));
        }
        self.meta = self.meta.gathered(parents);
    }

    /// Keys and values of one layer's filled slots (as transformers' `past_key_values`), f32
    /// rows `head_dim` wide.
    pub fn layer(&self, layer: usize, head_dim: usize) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = self.layers[layer].as_ref().expect("cache buffers are in place between steps");
        let filled = |t: &Tensor<4>| kernels::kv_values(t.clone(), head_dim).narrow(2, 0, self.len);
        (filled(k), filled(v))
    }
}
