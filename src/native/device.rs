//! `--device cpu|wgpu|cuda` → a burn device, and which precisions (`--dtype`, `--kv-dtype`:
//! the engine's `Precision`) each can run.
//!
//! `cpu` is burn's `flex` device (pure Rust gemm with SIMD and rayon): faster than `ndarray`
//! and than wgpu on lavapipe, for both 768² matmuls and decode-sized mat-vecs (the book's
//! toolchain notes).

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::ValueEnum;

use crate::engine::model::precision::Precision;
use crate::engine::model::weight_dtype::WeightDtype;

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
        DeviceSpec { kind: self, index: 0 }.init()
    }

    /// Refuses a precision this device cannot run, before anything loads.
    pub fn check(self, precision: Precision) -> Result<()> {
        if precision.dtype != WeightDtype::F32 && self == DeviceArg::Cuda {
            bail!(
                "--dtype {} runs on --device cpu and --device wgpu for now (their kernels widen {0} weights); CUDA keeps f32",
                precision.dtype
            );
        }
        Ok(())
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
        let kind = DeviceArg::from_str(kind, true)
            .map_err(|_| anyhow::anyhow!("unknown device {s:?}; use cpu, wgpu[:N] or cuda[:N]"))?;
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
        self.init_described().map(|(device, _)| device)
    }

    /// The device, and what it is in words (the adapter's name and API for wgpu).
    pub fn init_described(self) -> Result<(Device, String)> {
        let wgpu = |options: burn::tensor::wgpu::WgpuOptions, what: String| {
            let (device, setup) = options.init_with_setup().map_err(|e| anyhow::anyhow!("{e:?}")).context(what)?;
            let info = setup.adapter.get_info();
            Ok((device, format!("{} ({:?})", info.name, info.backend)))
        };
        match self.kind {
            DeviceArg::Cpu => Ok((Device::flex(), match rayon_threads() {
                1 => "CPU, 1 thread".to_string(),
                n => format!("CPU, {n} threads"),
            })),
            DeviceArg::Wgpu if self.index > 0 => wgpu(
                Device::wgpu_options().device_kind(burn::tensor::DeviceKind::DiscreteGpu(self.index)),
                format!("no wgpu adapter for discrete GPU {}", self.index),
            ),
            DeviceArg::Wgpu => wgpu(
                Device::wgpu_options(),
                "no wgpu adapter could be opened (on a machine without a GPU, install a Vulkan driver such as mesa-vulkan-drivers)".into(),
            ),
            DeviceArg::Cuda => Ok((cuda(self.index)?, format!("CUDA device {}", self.index))),
        }
    }
}

/// The CPU device's worker threads ($RAYON_NUM_THREADS, else one per core).
pub fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    anyhow::bail!("this inferlab was built without CUDA; rebuild with `cargo build --release --features cuda`")
}
