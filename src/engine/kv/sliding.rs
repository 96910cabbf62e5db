//! The sliding-window KV cache: a ring of `window` slots per layer. Token number `s` of the
//! stream (padding included) lives in slot `s % window`; each slot keeps the absolute position
//! of its token, so the learned position embedding and the mask stay exact after the ring
//! wraps. Attention sees the last `window` positions.
//!
//! A decode step writes its token first and attends over the ring (the slot it overwrites
//! held a position that just left the window). A longer chunk attends over the ring *and*
//! its own rows, then stores its last `min(len, window)` rows: written first, they would
//! overwrite keys its own earlier queries still need.

use burn::tensor::{Device, Tensor};

use super::Allocated;
use super::dtype::KvDtype;
use super::mask::{KeyMeta, StepMask};
use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::{self, KernelPath, Slots};
use crate::engine::step::Step;
use crate::engine::step_uploads::StepUploads;

pub struct SlidingKv {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    window: usize,
    /// Tokens streamed through so far; the next one goes to slot `seen % window`.
    seen: usize,
    /// Per row and slot: position and realness. Empty slots are not real.
    slots: KeyMeta,
    /// Where the current step writes, and whether it attends over ring + chunk.
    writes: Slots,
    concat: bool,
    /// Where the last step's last token went in row 0, and whom it evicted.
    last_write: Option<RingWrite>,
}

/// A token stored in the ring: its slot, and the position whose keys and values it overwrote
/// (`None` while the ring still had room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingWrite {
    pub slot: usize,
    pub evicted: Option<usize>,
}

impl SlidingKv {
    pub fn new(
        n_layer: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
        window: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if window == 0 {
            return Err(EngineError::Request("the sliding window must hold at least one token".into()));
        }
        let zeros = || dtype.zeros([batch, heads, window, head_dim], device);
        Ok(Self {
            layers: (0..n_layer).map(|_| Ok(Some((zeros()?, zeros()?)))).collect::<Result<_>>()?,
            window,
            seen: 0,
            slots: KeyMeta { keys: window, positions: vec![0; batch * window], real: vec![false; batch * window] },
            writes: Slots { base: 0, ring: true, first: 0 },
            concat: false,
            last_write: None,
        })
    }

    pub fn prepare(&mut self, step: &Step) -> Result<StepMask> {
        let (w, t) = (self.window, step.len);
        self.writes = Slots { base: self.seen, ring: true, first: t - t.min(w) };
        self.concat = t > 1;
        let before = self.concat.then(|| StepMask::new(&self.slots.followed_by(step), step, Some(w)));
        for i in self.writes.first..t {
            let slot = (self.seen + i) % w;
            if i + 1 == t {
                let evicted = self.slots.real[slot].then_some(self.slots.positions[slot]);
                self.last_write = Some(RingWrite { slot, evicted });
            }
            for row in 0..step.batch {
                self.slots.positions[row * w + slot] = step.positions[row * t + i];
                self.slots.real[row * w + slot] = step.real[row * t + i];
            }
        }
        self.seen += t;
        Ok(before.unwrap_or_else(|| StepMask::new(&self.slots, step, Some(w))))
    }

    /// Element type and bytes of its buffers, read off them.
    pub fn allocated(&self) -> Allocated {
        Allocated::of(self.layers.iter().flatten().flat_map(|(k, v)| [k, v]))
    }

    /// Where the last step stored its last token (row 0), as the ring itself recorded it.
    pub fn last_write(&self) -> Option<RingWrite> {
        self.last_write
    }

    pub fn update(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
        uploads: &StepUploads,
        path: KernelPath,
    ) -> (Tensor<4>, Tensor<4>) {
        let ring = self.layers[layer].take().expect("each layer is updated once per step");
        // The chunk attends over ring and chunk as f32 (an f16 ring widened first).
        let d = k.dims()[3];
        let joined =
            |ring: &Tensor<4>, new: &Tensor<4>| Tensor::cat(vec![kernels::kv_values(ring.clone(), d), new.clone()], 2);
        let keys = self.concat.then(|| (joined(&ring.0, &k), joined(&ring.1, &v)));
        let ring = kernels::append(ring, (k, v), self.writes, uploads, path);
        self.layers[layer] = Some(ring.clone());
        keys.unwrap_or(ring)
    }
}
