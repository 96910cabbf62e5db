//! The inference engine: runs everywhere (wasm32 + WebGPU, native CPU / Vulkan / CUDA), knows
//! tensors, caches and sampling, and nothing of pages or HTTP.
//!
//! - `model/`: GPT-2 itself and how it is loaded: config, weights (streamed, converted to a
//!   precision), the token table, the forward pass, the tokenizer.
//! - `decode/`: turning logits into text: sampling, generation, beam search, speculative
//!   decoding, and streaming text with stop strings.
//! - `kv/`: the KV caches (contiguous, sliding, paged) and the attention masks.
//! - `kernels/`: hand-written WGSL and CPU kernels, each beside its tensor-op twin.
//! - `batching/`: many requests through one model: sequences, schedulers, the model runner,
//!   the serving loop, and the simulator that drives the same schedulers.
//! - `analysis/`: what an approximation costs, measured against the exact model.
//! - `step`, `step_uploads`, `readback`, `error`: one forward's input, the buffers its kernel
//!   launches share, device reads, the one error type.

pub mod analysis;
pub mod batching;
pub mod decode;
pub mod error;
pub mod inspect;
pub mod kernels;
pub mod kv;
pub mod model;
pub mod readback;
pub mod step;
pub mod step_uploads;
