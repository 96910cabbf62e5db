//! inferlab: GPT-2 inference, HF-exact, on WebGPU in the browser and natively on
//! CUDA / Vulkan / CPU. `engine` runs everywhere; `native` is the command line around it, `web` the browser app.

pub mod engine;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod web;
