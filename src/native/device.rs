//! `--device cpu|wgpu|cuda` → a burn device.
//!
//! `cpu` is burn's `flex` device (pure Rust gemm with SIMD and rayon): measured here it beat
//! `ndarray` and wgpu-on-lavapipe for both 768² matmuls and decode-sized mat-vecs.

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// burn's flex CPU device.
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 — whatever adapter the machine has (lavapipe on a CPU box).
    Wgpu,
    /// NVIDIA CUDA (build with `--features cuda`).
    Cuda,
}

impl DeviceArg {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    pub fn init(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::flex()),
            Self::Wgpu => Device::wgpu_options()
                .init()
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .context("no wgpu adapter could be opened (on a machine without a GPU, install a Vulkan driver such as mesa-vulkan-drivers)"),
            Self::Cuda => cuda(),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Ok(Device::cuda(0usize))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    anyhow::bail!("this inferlab was built without CUDA; rebuild with `cargo build --release --features cuda`")
}
