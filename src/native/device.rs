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
            Self::Cuda => cuda(0),
        }
    }
}

/// One device of a kind, by index: `cpu`, `wgpu`, `wgpu:1`, `cuda`, `cuda:1` (`inferlab serve
/// --devices` runs one engine replica on each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceArg,
    pub index: usize,
}

impl std::str::FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (kind, index) = s.split_once(':').unwrap_or((s, "0"));
        let kind = DeviceArg::from_str(kind, true).map_err(|_| anyhow::anyhow!("unknown device {s:?}; use cpu, wgpu[:N] or cuda[:N]"))?;
        let index = index.parse().map_err(|_| anyhow::anyhow!("device {s:?}: {index:?} is not a device index"))?;
        if kind == DeviceArg::Cpu && index != 0 {
            anyhow::bail!("device {s:?}: there is one cpu device; list `cpu` several times for several replicas");
        }
        Ok(Self { kind, index })
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceArg::Cpu => f.write_str("cpu"),
            kind => write!(f, "{}:{}", kind.name(), self.index),
        }
    }
}

impl DeviceSpec {
    pub fn init(self) -> Result<Device> {
        match self.kind {
            DeviceArg::Wgpu if self.index > 0 => Device::wgpu_options()
                .device_kind(burn::tensor::DeviceKind::DiscreteGpu(self.index))
                .init()
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .with_context(|| format!("no wgpu adapter for discrete GPU {}", self.index)),
            DeviceArg::Cuda => cuda(self.index),
            kind => kind.init(),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    anyhow::bail!("this inferlab was built without CUDA; rebuild with `cargo build --release --features cuda`")
}
