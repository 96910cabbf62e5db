//! The weights' element type (`--dtype`, the page's **Weights** select): f32, f16 (half the
//! bytes each decode step streams) or int8 with a scale per output (a quarter). Only the linear
//! layers and the token table change; LayerNorms, biases, positions and activations stay f32.
//!
//! The CPU holds f16 and int8 as plain slices its row dots widen (`kernels/row_dots.rs`); wgpu
//! holds them as u32 words of two halves or four int8 values, widened in the WGSL kernels by
//! `unpack2x16float` / `unpack4x8snorm`, which are core WGSL, so no `shader-f16` is needed
//! (`kernels/row_dots_wgsl.rs`). CUDA would need kernels of its own and keeps f32.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::{is_wgpu, row_dots};
use crate::engine::model::config::Gpt2Config;

/// `--dtype f32|f16|int8` parses to it (`FromStr`); the page sends it as `"f32"`, `"f16"` or `"int8"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    #[default]
    F32,
    F16,
    Int8,
}

impl WeightDtype {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    /// Whether `device` runs these weights for `config`: f32 anywhere; f16 and int8 on the CPU
    /// (its row dots widen them), or on wgpu when every width is a multiple of 4 (the WGSL row
    /// dots read four values at a time); not CUDA yet.
    pub fn check(self, config: &Gpt2Config, device: &Device) -> Result<()> {
        if self == Self::F32 || row_dots::runs_on(device) {
            return Ok(());
        }
        if !is_wgpu(device) {
            return Err(EngineError::Request(format!(
                "{self} weights run on the CPU and wgpu devices; CUDA keeps f32 for now"
            )));
        }
        if !config.n_embd.is_multiple_of(4) || !config.n_inner.is_multiple_of(4) {
            return Err(EngineError::Request(format!(
                "{self} weights on wgpu need n_embd and n_inner to be multiples of 4 (the kernels read four values at a time); this model has {} and {}",
                config.n_embd, config.n_inner
            )));
        }
        Ok(())
    }
}

impl FromStr for WeightDtype {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" => Ok(Self::Int8),
            _ => Err(EngineError::Request(format!("unknown weight dtype {s:?}; use f32, f16 or int8"))),
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
