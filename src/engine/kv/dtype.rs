//! The KV cache's element type: f32, or f16 — half the cache's memory, and half the bytes each
//! attention step reads from it. Keys and values are rounded once, as they are stored; the
//! attention widens them back and sums in f32.
//!
//! How an f16 cache is held depends on the device:
//! - **CPU and CUDA**: burn's own f16 tensors. The CPU attention kernel widens rows as it reads
//!   them; the tensor-op twin casts the keys it attends over.
//! - **wgpu**: WebGPU without `shader-f16` (SwiftShader, lavapipe, many browsers) has no f16
//!   tensors, so rows are u32 words of two halves each, carried in an f32 tensor half as wide
//!   (`[.., width / 2]`), as f16 weights are. Only the WGSL kernels write them (`kv_append*.wgsl`,
//!   `pack2x16float`) and read them (`unpack2x16float`); anything else widens them first
//!   ([`kernels::kv_values`](crate::engine::kernels::kv_values)).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device, Tensor};

use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::is_wgpu;

/// `--kv-dtype f32|f16` parses to it (`FromStr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    pub fn bytes_per_value(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
        }
    }

    /// A zeroed cache buffer whose rows hold `dims`' last extent of values, on `device`.
    pub fn zeros<const D: usize>(self, mut dims: [usize; D], device: &Device) -> Result<Tensor<D>> {
        match self {
            Self::F32 => Ok(Tensor::zeros(dims, device)),
            Self::F16 if !dims[D - 1].is_multiple_of(2) => Err(EngineError::Request(format!(
                "an f16 KV cache packs values in pairs: rows of {} values do not pair up",
                dims[D - 1]
            ))),
            Self::F16 if is_wgpu(device) => {
                dims[D - 1] /= 2;
                Ok(Tensor::zeros(dims, device))
            }
            Self::F16 => Ok(Tensor::zeros(dims, (device, DType::F16))),
        }
    }
}

impl FromStr for KvDtype {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(EngineError::Request(format!("unknown KV cache dtype {s:?}; use f32 or f16"))),
        }
    }
}

impl fmt::Display for KvDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
