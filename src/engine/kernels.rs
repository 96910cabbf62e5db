//! The attention and KV-cache operations the model calls, in two implementations:
//!
//! - **WGSL** (`shaders/*.wgsl`), used when the tensors live on the wgpu device: the cache
//!   append writes in place, decode attention is one fused kernel per (sequence, head, query),
//!   prefill attention is tiled in workgroup memory with an online softmax. None of them
//!   materialises a `[queries, keys]` score matrix.
//!   Decode's few rows go through the linear layers and the head by row dots
//!   (`kernels/row_dots_wgsl.rs`) instead of a tiled matmul.
//! - **CPU kernels** on burn's flex device: few-query attention (`kernels/cpu_attention.rs`),
//!   the paged cache's attention through its block tables (`kernels/cpu_paged_attention.rs`),
//!   row dots for the model's linear layers and head (`kernels/row_dots.rs`), and the MLP's
//!   GELU in one pass (`kernels/cpu_gelu.rs`).
//! - **Tensor-op twins**, used on every other device (CUDA), with the kernels off, and as the
//!   kernels' oracles.
//!
//! The WGSL path needs burn *without* its `fusion` feature: fusion wraps tensors in lazy
//! graphs, and only a raw `CubeTensor` gives the buffer handles a hand-written kernel binds.
//! The project's burn feature set has no fusion for that reason (Cargo.toml).

use burn::backend::wgpu::CubeBackend;
use burn::backend::{CubeDevice, DispatchDevice};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Tensor};

pub mod cpu_attention;
pub mod cpu_gelu;
pub mod cpu_paged_attention;
#[cfg(not(target_arch = "wasm32"))]
mod cpu_team;
pub mod held_bytes;
pub mod paged;
pub mod row_dots;
pub mod row_dots_wgsl;
mod wgsl;

use crate::engine::kv::mask::StepMask;
use crate::engine::step_uploads::{StepUploads, words};
use wgsl::{WgslKernel, f32_tensor, grid, prev_power_of_two, to_cube};

/// Which implementation a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    Wgsl,
    Cpu,
    Twin,
}

/// Whether `device` is wgpu's, where the WGSL kernels run. A CUDA tensor is a `CubeTensor`
/// too, but WGSL does not run there.
pub fn is_wgpu(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(CubeDevice::Wgpu(_)))
}

impl KernelPath {
    /// The WGSL kernels on the wgpu device, the CPU kernels on the CPU (unless disabled, e.g.
    /// to measure them); tensor ops everywhere else.
    pub fn choose(device: &Device, kernels_enabled: bool) -> Self {
        match kernels_enabled {
            true if is_wgpu(device) => Self::Wgsl,
            true if row_dots::runs_on(device) => Self::Cpu,
            _ => Self::Twin,
        }
    }
}

/// Where [`append`] puts a step's rows: token `t` goes to slot `base + t`, modulo the buffer
/// length for a ring; tokens before `first` are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub base: usize,
    pub ring: bool,
    pub first: usize,
}

/// Writes new K/V rows `[batch, heads, len, head_dim]` into the cache buffers
/// `[batch, heads, slots, head_dim]` (f32 or f16; packed f16 words `[.., head_dim / 2]` on
/// wgpu, see [`KvDtype`](crate::engine::kv::dtype::KvDtype)) and returns the updated buffers. `uploads`
/// is the step's (its mask's), so the layers of a step share one parameter buffer.
pub fn append(
    cache: (Tensor<4>, Tensor<4>),
    new: (Tensor<4>, Tensor<4>),
    slots: Slots,
    uploads: &StepUploads,
    path: KernelPath,
) -> (Tensor<4>, Tensor<4>) {
    // Packed words are written by their kernel whatever the path: tensor ops cannot pack.
    match path {
        KernelPath::Twin | KernelPath::Cpu if !packed(&cache.0, new.0.dims()[3]) => {
            let dtype = cache.0.dtype();
            (append_twin(cache.0, new.0.cast(dtype), slots), append_twin(cache.1, new.1.cast(dtype), slots))
        }
        _ => append_wgsl(cache, new, slots, uploads),
    }
}

/// Whether a cache buffer whose rows hold `width` values holds them as packed f16 words (wgpu's
/// f16 cache, half as wide).
pub(crate) fn packed<const D: usize>(buffer: &Tensor<D>, width: usize) -> bool {
    buffer.dims()[D - 1] != width
}

/// A cache buffer as f32 values whose rows are `width` wide: f16 tensors cast, packed f16 words
/// (wgpu) widened by their kernel. For the tensor ops; the attention kernels read either kind.
pub fn kv_values<const D: usize>(t: Tensor<D>, width: usize) -> Tensor<D> {
    if !packed(&t, width) {
        return t.cast(DType::F32);
    }
    let mut dims = t.dims();
    let rows = dims[..D - 1].iter().product();
    dims[D - 1] = width;
    row_dots_wgsl::widen_f16(&t.reshape([rows, width / 2])).reshape(dims)
}

/// `softmax(q·kᵀ·scale + mask)·v` over the first `mask.keys` slots of `k` and `v`.
///
/// q `[batch, heads, queries, head_dim]`, k and v `[batch, heads, slots, head_dim]` (f32 or
/// f16; packed f16 words `[.., head_dim / 2]` on wgpu) with slots ≥ keys. Returns `[batch,
/// heads, queries, head_dim]`. The WGSL kernels read rows as vec4: a head width that is not a
/// multiple of 4 takes the tensor ops.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &StepMask, scale: f32, path: KernelPath) -> Tensor<4> {
    match path {
        KernelPath::Wgsl if q.dims()[3].is_multiple_of(4) => attention_wgsl(q, k, v, mask, scale),
        KernelPath::Cpu => {
            cpu_attention::attention(&q, &k, &v, mask, scale).unwrap_or_else(|| attention_twin(q, k, v, mask, scale))
        }
        _ => attention_twin(q, k, v, mask, scale),
    }
}

fn append_twin(mut cache: Tensor<4>, new: Tensor<4>, slots: Slots) -> Tensor<4> {
    let [b, h, t, d] = new.dims();
    let capacity = cache.dims()[2];
    let mut i = slots.first;
    while i < t {
        let slot = if slots.ring { (slots.base + i) % capacity } else { slots.base + i };
        let run = if slots.ring { (capacity - slot).min(t - i) } else { t - i };
        cache =
            cache.slice_assign([0..b, 0..h, slot..slot + run, 0..d], new.clone().slice([0..b, 0..h, i..i + run, 0..d]));
        i += run;
    }
    cache
}

fn attention_twin(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &StepMask, scale: f32) -> Tensor<4> {
    let device = q.device();
    let d = q.dims()[3];
    // Widened whole, then narrowed: the widening kernel's size stays the buffer's.
    let (k, v) = (kv_values(k, d).narrow(2, 0, mask.keys), kv_values(v, d).narrow(2, 0, mask.keys));
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let scores = match mask.bias(&device) {
        Some(bias) => scores + bias,
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}

/// Invocations per workgroup of the append kernel.
pub(super) const APPEND_WORKGROUP: usize = 256;
/// Most invocations (keys in flight) per workgroup of the decode kernel.
const DECODE_WORKGROUP: usize = 64;
/// Queries per workgroup of the prefill kernel (one invocation each).
const PREFILL_WORKGROUP: usize = 64;
/// Chunks of at most this many queries take the decode kernel (parallel over keys); longer
/// ones the prefill kernel (parallel over queries, keys shared through workgroup memory).
const DECODE_MAX_QUERIES: usize = 8;

fn append_wgsl(
    cache: (Tensor<4>, Tensor<4>),
    new: (Tensor<4>, Tensor<4>),
    slots: Slots,
    uploads: &StepUploads,
) -> (Tensor<4>, Tensor<4>) {
    let [b, h, t, d] = new.0.dims();
    let [_, _, capacity, row_words] = cache.0.dims();
    let kv_half = usize::from(packed(&cache.0, d));
    let (cache_k, cache_v) = (to_cube(cache.0), to_cube(cache.1));
    let (new_k, new_v) = (to_cube(new.0), to_cube(new.1));
    let client = cache_k.client.clone();
    let params = [b * h, t, d, capacity, slots.base, usize::from(slots.ring), slots.first].map(|v| v as u32);
    let params = uploads.params(&client, &params);
    let groups = (b * h * t * row_words).div_ceil(APPEND_WORKGROUP);
    // The cache buffers are written in place: the cache owns them, and every kernel that read
    // them earlier was queued before this one on the same stream.
    let kernel = WgslKernel {
        name: "kv_append",
        source: include_str!("../../shaders/kv_append.wgsl"),
        values: vec![("workgroup", APPEND_WORKGROUP), ("kv_half", kv_half)],
    };
    kernel.launch(
        &client,
        grid(groups),
        vec![
            cache_k.handle.clone().binding(),
            cache_v.handle.clone().binding(),
            new_k.handle.clone().binding(),
            new_v.handle.clone().binding(),
            params.binding(),
        ],
    );
    (Tensor::from_primitive::<CubeBackend>(cache_k), Tensor::from_primitive::<CubeBackend>(cache_v))
}

fn attention_wgsl(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: &StepMask, scale: f32) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let capacity = k.dims()[2];
    let kv_half = usize::from(packed(&k, d));
    let (q, k, v) = (to_cube(q), to_cube(k), to_cube(v));
    let client = q.client.clone();
    let key_pos = mask.uploads.buffer(&client, "key_pos", || words(&mask.key_pos));
    let query_pos = mask.uploads.buffer(&client, "query_pos", || words(&mask.query_pos));
    let params = [h, t, capacity, mask.keys, mask.window.unwrap_or(0)].map(|v| v as u32);
    let params = mask.uploads.params(&client, &[params.as_slice(), &[scale.to_bits()]].concat());
    let out = client.empty(b * h * t * d * std::mem::size_of::<f32>());
    let bindings = vec![
        q.handle.clone().binding(),
        k.handle.clone().binding(),
        v.handle.clone().binding(),
        key_pos.clone().binding(),
        query_pos.clone().binding(),
        out.clone().binding(),
        params.binding(),
    ];
    let hardware = &client.properties().hardware;
    let max_invocations = hardware.max_units_per_cube as usize;
    match (t > DECODE_MAX_QUERIES).then(|| prefill_shape(d, hardware.max_shared_memory_size, max_invocations)).flatten()
    {
        Some((workgroup, tile)) => WgslKernel {
            name: "attention_prefill",
            source: include_str!("../../shaders/attention_prefill.wgsl"),
            values: vec![
                ("workgroup", workgroup),
                ("kv_half", kv_half),
                ("head_dim", d),
                ("tile", tile),
                ("tile_vec4s", tile * d / 4),
                ("block_vec4s", workgroup * d / 4),
            ],
        }
        .launch(&client, (t.div_ceil(workgroup), b * h), bindings),
        None => {
            let workgroup = decode_workgroup(d, hardware.max_shared_memory_size, max_invocations);
            WgslKernel {
                name: "attention_decode",
                source: concat!(
                    include_str!("../../shaders/attention_decode.wgsl"),
                    include_str!("../../shaders/flash_decoding.wgsl")
                ),
                values: vec![
                    ("workgroup", workgroup),
                    ("kv_half", kv_half),
                    ("head_dim", d),
                    ("partial_vec4s", workgroup * d / 4),
                ],
            }
            .launch(&client, (b * h * t, 1), bindings)
        }
    }
    f32_tensor(&q, [b, h, t, d], out)
}

/// Queries per workgroup and key rows per tile of the prefill kernel, as large as the
/// device's workgroup memory allows (the query block and the K and V tiles live there):
/// `None` if not even one query fits.
fn prefill_shape(head_dim: usize, shared_bytes: usize, max_invocations: usize) -> Option<(usize, usize)> {
    let row = head_dim * std::mem::size_of::<f32>();
    let fits = |workgroup: usize, tile: usize| (workgroup + 2 * tile) * row + tile * 4 + 16 <= shared_bytes;
    let mut tile = 16;
    let mut workgroup = prev_power_of_two(PREFILL_WORKGROUP.min(max_invocations));
    while !fits(workgroup, tile) {
        if workgroup > 16 || tile == 1 {
            workgroup /= 2;
        } else {
            tile /= 2;
        }
        if workgroup == 0 {
            return None;
        }
    }
    Some((workgroup, tile))
}

/// Invocations of the decode kernel: up to 64 keys in flight per (sequence, head, query), as
/// many as the device's workgroup memory holds partial results for (a head-wide row each, plus
/// the query and each invocation's max and sum).
fn decode_workgroup(head_dim: usize, shared_bytes: usize, max_invocations: usize) -> usize {
    let row = head_dim * std::mem::size_of::<f32>();
    let fits = |workgroup: usize| workgroup * (row + 8) + row + 16 <= shared_bytes;
    let mut workgroup = prev_power_of_two(DECODE_WORKGROUP.min(max_invocations));
    while workgroup > 1 && !fits(workgroup) {
        workgroup /= 2;
    }
    workgroup
}
