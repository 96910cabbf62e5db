//! The attention mask of a step, built on the host from positions, as an additive bias.
//!
//! A query may see a key when the key is real (not padding), not in its future
//! (`key_pos <= query_pos`) and, for a sliding window, less than `window` positions back.
//! Masked scores get a large finite negative instead of -inf, as transformers does with
//! `finfo.min`: a fully masked row (a padding query) then stays finite instead of NaN.

use burn::tensor::{Device, Tensor, TensorData};

use crate::engine::step::Step;

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

    /// `[batch, 1, len, keys]` bias, or `None` when nothing is masked (a lone decode token
    /// over its full history), which saves an upload and an add per layer.
    pub fn bias(&self, step: &Step, window: Option<usize>, device: &Device) -> Option<Tensor<4>> {
        let (b, t, l) = (step.batch, step.len, self.keys);
        let mut bias = vec![0.0f32; b * t * l];
        let mut any = false;
        for row in 0..b {
            for q in 0..t {
                let qpos = step.positions[row * t + q];
                for k in 0..l {
                    let kpos = self.positions[row * l + k];
                    let visible = self.real[row * l + k]
                        && kpos <= qpos
                        && window.is_none_or(|w| qpos - kpos < w);
                    if !visible {
                        bias[(row * t + q) * l + k] = MASKED;
                        any = true;
                    }
                }
            }
        }
        any.then(|| Tensor::from_data(TensorData::new(bias, [b, 1, t, l]), device))
    }
}
