//! How a hand-written WGSL kernel runs on burn's wgpu tensors: a source file and its template
//! values become a `KernelSource`, launched over the tensors' buffer handles; tensors go in as
//! raw `CubeTensor`s and come out as f32 tensors over the buffers a kernel filled.

use burn::backend::wgpu::{
    CubeBackend, CubeDim, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::tensor::{DType, Shape, Tensor};
use cubecl::CubeCount;
pub(super) use cubecl::client::Client;
use cubecl::prelude::KernelId;
use cubecl::server::{BufferBinding, Handle, KernelArguments};

/// A WGSL file and its template values. The values are part of the kernel id, so every
/// variant (head width, workgroup size, tile, f16 or int8 weights) compiles to a pipeline of
/// its own.
pub(super) struct WgslKernel {
    pub(super) name: &'static str,
    pub(super) source: &'static str,
    pub(super) values: Vec<(&'static str, usize)>,
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        // Four weights as an f32 vec4, as two u32 words of two f16 each (`per_word` = 2), or as
        // one u32 word of four int8 (`per_word` = 4) whose scales are bound at `scales_at`;
        // four K/V values likewise, f32 or two f16 words (`kv_half` = 1), and a K/V word as
        // the append kernel stores it.
        const F32S: (&str, &str) = ("vec4<f32>", "v");
        const HALVES: (&str, &str) = ("vec2<u32>", "vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y))");
        let value = |name: &str| self.values.iter().find(|(n, _)| *n == name).map(|&(_, v)| v);
        let (word, widen) = match value("per_word") {
            Some(2) => HALVES,
            Some(4) => ("u32", "unpack4x8snorm(v)"),
            _ => F32S,
        };
        let (scales, scale) = match value("scales_at") {
            Some(at) => (format!("@group(0) @binding({at}) var<storage, read_write> scales: array<f32>;"), "scales[i]"),
            None => (String::new(), "1.0"),
        };
        let kv_half = value("kv_half") == Some(1);
        let (kv_word, kv_widen) = if kv_half { HALVES } else { F32S };
        let (kv_elem, kv_pack) = if kv_half { ("u32", "pack2x16float(a)") } else { ("f32", "a.x") };
        let template = SourceTemplate::new(self.source)
            .register("elem", "f32")
            .register("weight_word", word)
            .register("widen", widen)
            .register("scales", scales)
            .register("scale", scale)
            .register("kv_word", kv_word)
            .register("kv_widen", kv_widen)
            .register("kv_elem", kv_elem)
            .register("kv_pack", kv_pack)
            .register("kv_per_word", if kv_half { "2" } else { "1" });
        self.values.iter().fold(template, |t, (name, value)| t.register(*name, value.to_string()))
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.values.clone()))
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

impl WgslKernel {
    /// Queues the kernel; `values` must hold its `workgroup` size.
    pub(super) fn launch(self, client: &Client, groups: (usize, usize), buffers: Vec<BufferBinding>) {
        let workgroup =
            self.values.iter().find(|(name, _)| *name == "workgroup").expect("every kernel has a workgroup size").1;
        client.launch(
            Box::new(SourceKernel::new(self, CubeDim::new_1d(workgroup as u32))),
            CubeCount::Static(groups.0 as u32, groups.1 as u32, 1),
            KernelArguments::new().with_buffers(buffers),
        );
    }
}

/// The f32 tensor of `dims` over `buffer`, the output a kernel filled, on `like`'s device.
pub(super) fn f32_tensor<const D: usize>(like: &CubeTensor, dims: [usize; D], buffer: Handle) -> Tensor<D> {
    let out =
        CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), Shape::new(dims), buffer, DType::F32);
    Tensor::from_primitive::<CubeBackend>(out)
}

pub(super) fn to_cube<const D: usize>(t: Tensor<D>) -> CubeTensor {
    into_contiguous(t.try_into_primitive::<CubeBackend>().expect("KernelPath::Wgsl is only chosen for wgpu tensors"))
}

/// `groups` workgroups as a 2-D grid: WebGPU allows at most 65535 along one dimension.
pub(super) fn grid(groups: usize) -> (usize, usize) {
    (groups.min(32768), groups.div_ceil(32768))
}

pub(super) fn prev_power_of_two(n: usize) -> usize {
    if n == 0 { 0 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) }
}
