//! inferlab: GPT-2 inference, HF-exact, on WebGPU in the browser and natively on
//! CUDA / Vulkan / CPU. `engine` runs everywhere; `session` is the pages' protocol on top of it;
//! `native` is the command line, server and desktop app around it, `web` the browser app.

pub mod engine;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod session;
#[cfg(target_arch = "wasm32")]
pub mod web;
