//! `--device cpu|wgpu|cuda` → a burn device; `--dtype f32|f16|int8` → how it holds the
//! weights, and `--kv-dtype f32|f16` → how the KV cache holds keys and values.
//!
//! `cpu` is burn's `flex` device (pure Rust gemm with SIMD and rayon): faster than `ndarray`
//! and than wgpu on lavapipe, for both 768² matmuls and decode-sized mat-vecs (the book's
//! toolchain notes).

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};

use crate::engine::gpt2::Gpt2;
use crate::engine::kv::dtype::KvDtype;
use crate::engine::weight_dtype::WeightDtype;

/// `--dtype` and `--kv-dtype`: what the weights and what the KV cache are held in.
#[derive(Debug, Clone, Copy, Args)]
pub struct Precision {
    /// The weights' type, f32, f16 or int8: f16 for the linear layers and the token table (CPU
    /// and wgpu) halves their memory and the bytes each decode step reads, int8 (a scale per
    /// output) quarters them; all else stays f32.
    #[arg(long, default_value = "f32")]
    pub dtype: WeightDtype,
    /// The KV cache's type, f32 or f16: f16 halves its memory and the bytes each attention
    /// reads (every device); keys and values are rounded as they are stored.
    #[arg(long, default_value = "f32")]
    pub kv_dtype: KvDtype,
}

impl Precision {
    /// Refuses a pairing the engine cannot run, before anything loads.
    pub fn check(self, device: DeviceArg) -> Result<()> {
        if self.dtype != WeightDtype::F32 && device == DeviceArg::Cuda {
            bail!(
                "--dtype {} runs on --device cpu and --device wgpu for now (their kernels widen {0} weights); CUDA keeps f32",
                self.dtype
            );
        }
        Ok(())
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
