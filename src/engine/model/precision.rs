//! What a model is held in: its weights' type and its KV cache's. One type for the command
//! line's `--dtype` / `--kv-dtype`, the server, and the pages' **Weights** and **KV dtype**
//! selects (whose messages carry it as `weights` and `kv_f16`). The native build derives its
//! command-line flags here, so that every command spells them the same way.

use crate::engine::error::Result;
use crate::engine::kv::dtype::KvDtype;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::weight_dtype::WeightDtype;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
pub struct Precision {
    /// The weights' type, f32, f16 or int8: f16 for the linear layers and the token table (CPU
    /// and wgpu) halves their memory and the bytes each decode step reads, int8 (a scale per
    /// output) quarters them; all else stays f32.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value = "f32"))]
    pub dtype: WeightDtype,
    /// The KV cache's type, f32 or f16: f16 halves its memory and the bytes each attention
    /// reads (every device); keys and values are rounded as they are stored.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value = "f32"))]
    pub kv_dtype: KvDtype,
}

impl Precision {
    /// As the pages' messages carry it.
    pub fn from_page(weights: WeightDtype, kv_f16: bool) -> Self {
        Self { dtype: weights, kv_dtype: if kv_f16 { KvDtype::F16 } else { KvDtype::F32 } }
    }

    /// `model` with its weights and its KV caches in these types.
    pub fn apply(self, model: Gpt2) -> Result<Gpt2> {
        let mut model = model.into_weight_dtype(self.dtype)?;
        model.set_kv_dtype(self.kv_dtype)?;
        Ok(model)
    }

    /// Anything held below f32.
    pub fn reduced(self) -> bool {
        self.dtype != WeightDtype::F32 || self.kv_dtype != KvDtype::F32
    }
}
