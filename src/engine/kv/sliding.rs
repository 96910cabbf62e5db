//! The sliding-window KV cache: a ring of `window` slots per layer. Token number `s` of the
//! stream (padding included) lives in slot `s % window`; each slot keeps the absolute position
//! of its token, so the learned position embedding and the mask stay exact after the ring
//! wraps. Attention sees the last `window` positions.
//!
//! A step attends over the ring *and* its own new rows (concatenated), then stores the last
//! `min(len, window)` new rows: a prefill chunk longer than the window would otherwise
//! overwrite keys its own earlier queries still need.

use burn::tensor::{Device, Tensor};

use super::mask::KeyMeta;
use crate::engine::error::{EngineError, Result};
use crate::engine::step::Step;

pub struct SlidingKv {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    window: usize,
    /// Tokens streamed through so far; the next one goes to slot `seen % window`.
    seen: usize,
    /// Per row and slot: position and realness. Empty slots are not real.
    slots: KeyMeta,
    /// Slot ranges `(ring_start, step_offset, count)` the current step writes.
    writes: Vec<(usize, usize, usize)>,
}

impl SlidingKv {
    pub fn new(n_layer: usize, batch: usize, heads: usize, head_dim: usize, window: usize, device: &Device) -> Result<Self> {
        if window == 0 {
            return Err(EngineError::Request("the sliding window must hold at least one token".into()));
        }
        let zeros = || Tensor::<4>::zeros([batch, heads, window, head_dim], device);
        Ok(Self {
            layers: (0..n_layer).map(|_| Some((zeros(), zeros()))).collect(),
            window,
            seen: 0,
            slots: KeyMeta { keys: window, positions: vec![0; batch * window], real: vec![false; batch * window] },
            writes: vec![],
        })
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Absolute position held by each slot of row 0 (`None` = empty): what the KV page draws.
    pub fn slot_positions(&self) -> Vec<Option<usize>> {
        (0..self.window).map(|s| self.slots.real[s].then_some(self.slots.positions[s])).collect()
    }

    pub fn prepare(&mut self, step: &Step, device: &Device) -> Result<Option<Tensor<4>>> {
        let (w, t) = (self.window, step.len);
        let keys = w + t;
        let mut meta = KeyMeta { keys, positions: Vec::with_capacity(step.batch * keys), real: Vec::with_capacity(step.batch * keys) };
        for row in 0..step.batch {
            meta.positions.extend_from_slice(&self.slots.positions[row * w..(row + 1) * w]);
            meta.positions.extend_from_slice(&step.positions[row * t..(row + 1) * t]);
            meta.real.extend_from_slice(&self.slots.real[row * w..(row + 1) * w]);
            meta.real.extend_from_slice(&step.real[row * t..(row + 1) * t]);
        }
        let bias = meta.bias(step, Some(w), device);

        // The last min(t, w) new tokens go to their ring slots, in at most two runs.
        let kept = t.min(w);
        let first = self.seen + t - kept;
        self.writes.clear();
        let mut done = 0;
        while done < kept {
            let slot = (first + done) % w;
            let count = (w - slot).min(kept - done);
            self.writes.push((slot, t - kept + done, count));
            done += count;
        }
        for &(slot, offset, count) in &self.writes {
            for row in 0..step.batch {
                for i in 0..count {
                    self.slots.positions[row * w + slot + i] = step.positions[row * t + offset + i];
                    self.slots.real[row * w + slot + i] = step.real[row * t + offset + i];
                }
            }
        }
        self.seen += t;
        Ok(bias)
    }

    pub fn update(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (mut kc, mut vc) = self.layers[layer].take().expect("each layer is updated once per step");
        let [b, h, _, d] = k.dims();
        let keys = Tensor::cat(vec![kc.clone(), k.clone()], 2);
        let values = Tensor::cat(vec![vc.clone(), v.clone()], 2);
        for &(slot, offset, count) in &self.writes {
            let ring = [0..b, 0..h, slot..slot + count, 0..d];
            let new = [0..b, 0..h, offset..offset + count, 0..d];
            kc = kc.slice_assign(ring.clone(), k.clone().slice(new.clone()));
            vc = vc.slice_assign(ring, v.clone().slice(new));
        }
        self.layers[layer] = Some((kc, vc));
        (keys, values)
    }
}
