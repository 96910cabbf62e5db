//! The contiguous KV cache: per layer, K and V buffers `[batch, heads, capacity, head_dim]`
//! allocated once, each step's new rows written in place at the next free slots. Attention
//! reads the filled prefix. No per-token concatenation, so a decode step costs O(1) copies.

use burn::tensor::{Device, Tensor};

use super::mask::KeyMeta;
use crate::engine::error::{EngineError, Result};
use crate::engine::step::Step;

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
    pub fn new(n_layer: usize, batch: usize, heads: usize, head_dim: usize, capacity: usize, device: &Device) -> Self {
        let zeros = || Tensor::<4>::zeros([batch, heads, capacity, head_dim], device);
        Self {
            layers: (0..n_layer).map(|_| Some((zeros(), zeros()))).collect(),
            capacity,
            len: 0,
            step_start: 0,
            meta: KeyMeta { keys: 0, positions: vec![], real: vec![] },
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reserves the step's slots and returns its mask over every filled slot.
    pub fn prepare(&mut self, step: &Step, device: &Device) -> Result<Option<Tensor<4>>> {
        if self.len + step.len > self.capacity {
            return Err(EngineError::Request(format!(
                "the KV cache holds {} tokens; {} more do not fit",
                self.capacity, step.len
            )));
        }
        let (old, new) = (self.len, self.len + step.len);
        let mut meta = KeyMeta { keys: new, positions: Vec::with_capacity(step.batch * new), real: Vec::with_capacity(step.batch * new) };
        for row in 0..step.batch {
            meta.positions.extend_from_slice(&self.meta.positions[row * old..(row + 1) * old]);
            meta.positions.extend_from_slice(&step.positions[row * step.len..(row + 1) * step.len]);
            meta.real.extend_from_slice(&self.meta.real[row * old..(row + 1) * old]);
            meta.real.extend_from_slice(&step.real[row * step.len..(row + 1) * step.len]);
        }
        self.meta = meta;
        self.step_start = old;
        self.len = new;
        Ok(self.meta.bias(step, None, device))
    }

    /// Writes the step's K/V `[batch, heads, len, head_dim]` into its slots and returns the
    /// keys and values of every filled slot.
    pub fn update(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (kc, vc) = self.layers[layer].take().expect("each layer is updated once per step");
        let [b, h, t, d] = k.dims();
        let slots = [0..b, 0..h, self.step_start..self.step_start + t, 0..d];
        let kc = kc.slice_assign(slots.clone(), k);
        let vc = vc.slice_assign(slots, v);
        let filled = [0..b, 0..h, 0..self.len, 0..d];
        let out = (kc.clone().slice(filled.clone()), vc.clone().slice(filled));
        self.layers[layer] = Some((kc, vc));
        out
    }

    /// Keys and values of one layer's filled slots (as transformers' `past_key_values`).
    pub fn layer(&self, layer: usize) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = self.layers[layer].as_ref().expect("cache buffers are in place between steps");
        let [b, h, _, d] = k.dims();
        let filled = [0..b, 0..h, 0..self.len, 0..d];
        (k.clone().slice(filled.clone()), v.clone().slice(filled))
    }
}
