//! The paged cache's two operations, as the rest of `kernels`: WGSL on the wgpu device
//! (`shaders/kv_append_paged.wgsl`, `shaders/attention_paged.wgsl`: read and write through the
//! block tables), the CPU's attention through the block tables (`cpu_paged_attention.rs`), and
//! tensor-op twins everywhere else and as the kernels' oracles (a row scatter into the pool; a
//! gather of each sequence's keys into a padded batch, attended with the position-masked
//! attention of the contiguous cache).

use burn::backend::wgpu::CubeBackend;
use burn::tensor::{IndexingUpdateOp, Tensor};

use super::wgsl::{WgslKernel, f32_tensor, grid, to_cube};
use super::{
    APPEND_WORKGROUP, KernelPath, attention as padded_attention, cpu_paged_attention, decode_workgroup, kv_values,
    packed,
};
use crate::engine::kv::paged::PagedPlan;
use crate::engine::step_uploads::words;

/// Writes the step's new rows `[tokens, n_embd]` into their pool slots (f32, f16, or packed f16
/// words `[slots, n_embd / 2]` on wgpu, which only their kernel writes); returns the pools.
pub fn write(
    pools: (Tensor<2>, Tensor<2>),
    new: (Tensor<2>, Tensor<2>),
    plan: &PagedPlan,
    path: KernelPath,
) -> (Tensor<2>, Tensor<2>) {
    match path {
        KernelPath::Twin | KernelPath::Cpu if !packed(&pools.0, new.0.dims()[1]) => {
            let slots = plan.slot_tensor();
            let dtype = pools.0.dtype();
            let put = |pool: Tensor<2>, rows: Tensor<2>| {
                pool.select_assign(0, slots.clone(), rows.cast(dtype), IndexingUpdateOp::Assign)
            };
            (put(pools.0, new.0), put(pools.1, new.1))
        }
        _ => write_wgsl(pools, new, plan),
    }
}

/// Attention of the step's queries `[tokens, n_embd]` over their own sequences' keys in the
/// pools (positions up to their own). Returns `[tokens, n_embd]`.
pub fn attention(
    q: Tensor<2>,
    pool_k: Tensor<2>,
    pool_v: Tensor<2>,
    plan: &PagedPlan,
    heads: usize,
    scale: f32,
    path: KernelPath,
) -> Tensor<2> {
    let head_dim = q.dims()[1] / heads;
    match path {
        KernelPath::Wgsl if head_dim.is_multiple_of(4) => attention_wgsl(q, pool_k, pool_v, plan, heads, scale),
        KernelPath::Cpu => cpu_paged_attention::attention(&q, &pool_k, &pool_v, plan, heads, scale)
            .unwrap_or_else(|| attention_gathered(q, pool_k, pool_v, plan, heads, scale, path)),
        _ => attention_gathered(q, pool_k, pool_v, plan, heads, scale, path),
    }
}

/// The twin: each group of segments (decode rows, prefill rows) gathered into a padded
/// `[rows, heads, len, head_dim]` batch, attended under a position mask, and scattered back.
fn attention_gathered(
    q: Tensor<2>,
    pool_k: Tensor<2>,
    pool_v: Tensor<2>,
    plan: &PagedPlan,
    heads: usize,
    scale: f32,
    path: KernelPath,
) -> Tensor<2> {
    let e = q.dims()[1];
    let d = e / heads;
    let device = plan.device();
    // Packed f16 words are widened first (the whole pool: a fixed size for the widening kernel).
    let (pool_k, pool_v) = match packed(&pool_k, e) {
        true => (kv_values(pool_k, e), kv_values(pool_v, e)),
        false => (pool_k, pool_v),
    };
    let gather = plan.gather();
    let outputs: Vec<Tensor<2>> = gather
        .groups
        .iter()
        .map(|g| {
            let (rows, t, l) = (g.mask.batch, g.mask.queries, g.mask.keys);
            let q = q.clone().select(0, g.query_tensor(device)).reshape([rows, t, heads, d]).swap_dims(1, 2);
            let keys = g.key_tensor(device);
            let k = pool_k.clone().select(0, keys.clone()).reshape([rows, l, heads, d]).swap_dims(1, 2);
            let v = pool_v.clone().select(0, keys).reshape([rows, l, heads, d]).swap_dims(1, 2);
            padded_attention(q, k, v, &g.mask, scale, path).swap_dims(1, 2).reshape([rows * t, e])
        })
        .collect();
    Tensor::cat(outputs, 0).select(0, gather.back_tensor())
}

fn write_wgsl(pools: (Tensor<2>, Tensor<2>), new: (Tensor<2>, Tensor<2>), plan: &PagedPlan) -> (Tensor<2>, Tensor<2>) {
    let [n, e] = new.0.dims();
    let kv_half = usize::from(packed(&pools.0, e));
    let (pool_k, pool_v) = (to_cube(pools.0), to_cube(pools.1));
    let (new_k, new_v) = (to_cube(new.0), to_cube(new.1));
    let client = pool_k.client.clone();
    let slots = plan
        .uploads
        .buffer(&client, "slot_mapping", || words(&plan.slot_mapping.iter().map(|&s| s as u32).collect::<Vec<u32>>()));
    let params = plan.uploads.params(&client, &[n as u32, e as u32]);
    let groups = (n * e / (1 + kv_half)).div_ceil(APPEND_WORKGROUP);
    // The pools are written in place: the cache owns them, and every kernel that read them
    // earlier was queued before this one on the same stream.
    WgslKernel {
        name: "kv_append_paged",
        source: include_str!("../../../shaders/kv_append_paged.wgsl"),
        values: vec![("workgroup", APPEND_WORKGROUP), ("kv_half", kv_half)],
    }
    .launch(
        &client,
        grid(groups),
        vec![
            pool_k.handle.clone().binding(),
            pool_v.handle.clone().binding(),
            new_k.handle.clone().binding(),
            new_v.handle.clone().binding(),
            slots.binding(),
            params.binding(),
        ],
    );
    (Tensor::from_primitive::<CubeBackend>(pool_k), Tensor::from_primitive::<CubeBackend>(pool_v))
}

fn attention_wgsl(
    q: Tensor<2>,
    pool_k: Tensor<2>,
    pool_v: Tensor<2>,
    plan: &PagedPlan,
    heads: usize,
    scale: f32,
) -> Tensor<2> {
    let [n, e] = q.dims();
    let d = e / heads;
    let kv_half = usize::from(packed(&pool_k, e));
    let (q, pool_k, pool_v) = (to_cube(q), to_cube(pool_k), to_cube(pool_v));
    let client = q.client.clone();
    let segment = plan.uploads.buffer(&client, "token_segment", || words(&plan.token_segment));
    let position = plan.uploads.buffer(&client, "token_position", || words(&plan.token_position));
    let offsets = plan.uploads.buffer(&client, "table_offsets", || words(&plan.table_offsets));
    let tables = plan.uploads.buffer(&client, "tables", || words(&plan.tables));
    let params = plan.uploads.params(&client, &[n as u32, heads as u32, scale.to_bits()]);
    let out = client.empty(n * e * std::mem::size_of::<f32>());
    let hardware = &client.properties().hardware;
    let workgroup = decode_workgroup(d, hardware.max_shared_memory_size, hardware.max_units_per_cube as usize);
    let groups = n * heads;
    WgslKernel {
        name: "attention_paged",
        source: concat!(
            include_str!("../../../shaders/attention_paged.wgsl"),
            include_str!("../../../shaders/flash_decoding.wgsl")
        ),
        values: vec![
            ("workgroup", workgroup),
            ("kv_half", kv_half),
            ("head_dim", d),
            ("block_size", plan.block_size),
            ("partial_vec4s", workgroup * d / 4),
        ],
    }
    .launch(
        &client,
        grid(groups),
        vec![
            q.handle.clone().binding(),
            pool_k.handle.clone().binding(),
            pool_v.handle.clone().binding(),
            segment.binding(),
            position.binding(),
            offsets.binding(),
            tables.binding(),
            out.clone().binding(),
            params.binding(),
        ],
    );
    f32_tensor(&q, [n, e], out)
}
