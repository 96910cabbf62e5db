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

/// What a user without a usable NVIDIA driver is told to do instead.
const NO_DRIVER_HELP: &str = "install the NVIDIA driver (it provides libcuda), or use --device wgpu or --device cpu";

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    // burn's CUDA runtime loads the driver on a thread of its own and panics there if it
    // cannot: ask the driver first.
    if let Some(problem) = cuda_driver_problem(index) {
        bail!("{problem}; {NO_DRIVER_HELP}");
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(index: usize) -> Result<Device> {
    match cuda_driver_problem(index) {
        Some(problem) => bail!("this inferlab was built without CUDA, and {problem}; {NO_DRIVER_HELP}"),
        None => bail!("this inferlab was built without CUDA; rebuild with `cargo build --release --features cuda`"),
    }
}

/// Why the NVIDIA driver cannot run CUDA device `index` (None if it can), asked of the
/// driver's own library: found, started (`cuInit`), and holding that many devices.
fn cuda_driver_problem(index: usize) -> Option<String> {
    const LIBRARIES: &[&str] = if cfg!(windows) { &["nvcuda.dll"] } else { &["libcuda.so.1", "libcuda.so"] };
    type Init = unsafe extern "C" fn(u32) -> i32;
    type Count = unsafe extern "C" fn(*mut i32) -> i32;
    // SAFETY: loading the driver runs its initialisers, which is what using CUDA does anyway.
    let Some(driver) = LIBRARIES.iter().find_map(|name| unsafe { libloading::Library::new(name) }.ok()) else {
        return Some(format!("this machine has no NVIDIA driver ({} not found)", LIBRARIES.join(" or ")));
    };
    // SAFETY: `cuInit` and `cuDeviceGetCount` have these signatures in every CUDA driver API
    // version (an unsigned flags word; an out-pointer to an int), and both return a CUresult.
    unsafe {
        let (Ok(init), Ok(count)) = (driver.get::<Init>(b"cuInit\0"), driver.get::<Count>(b"cuDeviceGetCount\0"))
        else {
            return Some("the NVIDIA driver library lacks cuInit / cuDeviceGetCount".into());
        };
        match init(0) {
            0 => {}
            // CUDA_ERROR_NO_DEVICE
            100 => return Some("the NVIDIA driver sees no GPU".into()),
            code => return Some(format!("the NVIDIA driver did not start (cuInit error {code})")),
        }
        let mut devices = 0;
        if count(&mut devices) != 0 || index >= devices.max(0) as usize {
            return Some(format!("the NVIDIA driver sees {devices} GPU(s), so there is no cuda:{index}"));
        }
    }
    None
}
