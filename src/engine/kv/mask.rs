//! Who may attend to whom in one step, decided by position.
//!
//! A query at position `p` sees a key when the key is a real token (not padding, not an
//! empty ring slot), not in its future (`key_pos <= p`) and, under a sliding window, less than
//! `window` positions back. The rule is kept as positions, which the WGSL kernels read
//! directly; the tensor-op path turns it into an additive bias where masked scores get a large
//! finite negative (as transformers' `finfo.min`), so a fully masked row (a padding query)
//! stays finite instead of NaN.

use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};

use crate::engine::step::Step;
use crate::engine::step_uploads::StepUploads;

const MASKED: f32 = -1.0e9;

/// Position and realness of every key a step attends to, `[batch, keys]` row-major.
#[derive(Debug, Clone, Default)]
pub struct KeyMeta {
    pub keys: usize,
    pub positions: Vec<usize>,
    pub real: Vec<bool>,
}

impl KeyMeta {
    /// The keys of the step's own tokens.
    pub fn of_step(step: &Step) -> Self {
        Self { keys: step.len, positions: step.positions.clone(), real: step.real.clone() }
    }

    /// These keys, then the step's own tokens, row by row.
    pub fn followed_by(&self, step: &Step) -> Self {
        let (old, t) = (self.keys, step.len);
        let keys = old + t;
        let mut out = Self {
            keys,
            positions: Vec::with_capacity(step.batch * keys),
            real: Vec::with_capacity(step.batch * keys),
        };
        for row in 0..step.batch {
            out.positions.extend_from_slice(&self.positions[row * old..(row + 1) * old]);
            out.positions.extend_from_slice(&step.positions[row * t..(row + 1) * t]);
            out.real.extend_from_slice(&self.real[row * old..(row + 1) * old]);
            out.real.extend_from_slice(&step.real[row * t..(row + 1) * t]);
        }
        out
    }

    /// The first `keys` keys of every row (speculative rollback).
    pub fn truncated(&self, keys: usize) -> Self {
        let rows = self.positions.len().checked_div(self.keys).unwrap_or(0);
        let keep = |v: &[usize]| -> Vec<usize> {
            (0..rows).flat_map(|r| v[r * self.keys..r * self.keys + keys].iter().copied()).collect()
        };
        let real = (0..rows).flat_map(|r| self.real[r * self.keys..r * self.keys + keys].iter().copied()).collect();
        Self { keys, positions: keep(&self.positions), real }
    }

    /// Row `parents[i]` becomes row `i` (beam reordering).
    pub fn gathered(&self, parents: &[usize]) -> Self {
        let k = self.keys;
        Self {
            keys: k,
            positions: parents.iter().flat_map(|&p| self.positions[p * k..(p + 1) * k].iter().copied()).collect(),
            real: parents.iter().flat_map(|&p| self.real[p * k..(p + 1) * k].iter().copied()).collect(),
        }
    }
}

/// The mask of one step, shared by all layers; each path builds (once) the form it needs.
pub struct StepMask {
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
    /// `[batch, keys]`; -1 marks a key nobody may see.
    pub key_pos: Vec<i32>,
    /// `[batch, queries]`.
    pub query_pos: Vec<i32>,
    pub window: Option<usize>,
    bias: OnceLock<Option<Tensor<4>>>,
    /// Device buffers the WGSL launches of this step share (positions, parameters).
    pub uploads: StepUploads,
}

impl StepMask {
    pub fn new(keys: &KeyMeta, step: &Step, window: Option<usize>) -> Self {
        let key_pos =
            keys.positions.iter().zip(&keys.real).map(|(&p, &real)| if real { p as i32 } else { -1 }).collect();
        let query_pos = step.positions.iter().map(|&p| p as i32).collect();
        Self::from_positions(step.batch, step.len, keys.keys, key_pos, query_pos, window)
    }

    /// A mask given by positions directly: `key_pos` `[batch, keys]`, `query_pos`
    /// `[batch, queries]`, -1 for a key nobody sees or a query that sees nothing.
    pub fn from_positions(
        batch: usize,
        queries: usize,
        keys: usize,
        key_pos: Vec<i32>,
        query_pos: Vec<i32>,
        window: Option<usize>,
    ) -> Self {
        Self {
            batch,
            queries,
            keys,
            key_pos,
            query_pos,
            window,
            bias: OnceLock::new(),
            uploads: StepUploads::default(),
        }
    }

    pub fn visible(&self, row: usize, query: usize, key: usize) -> bool {
        let kpos = self.key_pos[row * self.keys + key];
        let qpos = self.query_pos[row * self.queries + query];
        kpos >= 0 && kpos <= qpos && self.window.is_none_or(|w| ((qpos - kpos) as usize) < w)
    }

    /// What the twin adds to a score: 0 where the key is visible, a large negative where not.
    pub fn bias_at(&self, row: usize, query: usize, key: usize) -> f32 {
        if self.visible(row, query, key) { 0.0 } else { MASKED }
    }

    /// `[batch, 1, queries, keys]` additive bias, or `None` when nothing is masked (a lone
    /// decode token over its full history), which saves an upload and an add per layer.
    pub fn bias(&self, device: &Device) -> Option<Tensor<4>> {
        self.bias
            .get_or_init(|| {
                let (b, t, l) = (self.batch, self.queries, self.keys);
                let mut bias = vec![0.0f32; b * t * l];
                let mut any = false;
                for row in 0..b {
                    for q in 0..t {
                        for k in 0..l {
                            let b = self.bias_at(row, q, k);
                            bias[(row * t + q) * l + k] = b;
                            any |= b != 0.0;
                        }
                    }
                }
                any.then(|| Tensor::from_data(TensorData::new(bias, [b, 1, t, l]), device))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two rows of three keys, each with its own positions and realness.
    fn two_rows() -> KeyMeta {
        KeyMeta { keys: 3, positions: vec![0, 1, 2, 10, 11, 12], real: vec![true, true, false, false, true, true] }
    }

    #[test]
    fn truncation_keeps_each_rows_first_keys() {
        let cut = two_rows().truncated(2);
        assert_eq!(cut.keys, 2);
        assert_eq!(cut.positions, [0, 1, 10, 11]);
        assert_eq!(cut.real, [true, true, false, true]);
    }

    #[test]
    fn gathering_copies_whole_rows_from_their_parents() {
        let gathered = two_rows().gathered(&[1, 1, 0]);
        assert_eq!(gathered.keys, 3);
        assert_eq!(gathered.positions, [10, 11, 12, 10, 11, 12, 0, 1, 2]);
        assert_eq!(gathered.real, [false, true, true, false, true, true, true, true, false]);
    }
}
