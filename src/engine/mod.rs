//! The inference engine: runs everywhere (wasm32 + WebGPU, native CPU / Vulkan / CUDA), knows
//! tensors, caches and sampling, and nothing of UIs or HTTP.

pub mod batching;
pub mod beam;
pub mod config;
pub mod error;
pub mod f16_drift;
pub mod generate;
pub mod gpt2;
pub mod kernels;
pub mod kv;
pub mod readback;
pub mod safetensors_stream;
pub mod sampling;
pub mod simulate;
pub mod speculative;
pub mod step;
pub mod step_uploads;
pub mod tokenizer;
pub mod vocab_table;
pub mod weight_dtype;
pub mod weights;
pub mod window_drift;
