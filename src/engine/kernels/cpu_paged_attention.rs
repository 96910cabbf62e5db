//! Attention of a paged step on the CPU, read through the block tables (what
//! `shaders/attention_paged.wgsl` does on wgpu): each (token, head) walks its own sequence's
//! positions `0..=pos`, finding each key's row at `table[p / block_size] · block_size + p %
//! block_size` in the pool. No gather into a padded batch, no mask: decode tokens and ragged
//! prefill chunks of any length go through one call, f32 or f16 pools read in place.
//!
//! The tensor-op twin (`paged.rs`) gathers every sequence's keys and values out of the pools
//! each layer, which grew with the context while a decode step's weight reads did not.

use burn::tensor::Tensor;

use crate::engine::kv::paged::PagedPlan;

/// `[tokens, n_embd]` attention outputs of the queries `q` `[tokens, n_embd]` over the pools
/// `[slots, n_embd]` (f32, or f16 widened as they are read) on the CPU device; None where the
/// twin must run (another device, a strided pool).
#[cfg(not(target_arch = "wasm32"))]
pub fn attention(
    q: &Tensor<2>,
    pool_k: &Tensor<2>,
    pool_v: &Tensor<2>,
    plan: &PagedPlan,
    heads: usize,
    scale: f32,
) -> Option<Tensor<2>> {
    use burn::backend::flex::{Flex, FlexTensor};
    use burn::tensor::{DType, TensorData};

    let [n, e] = q.dims();
    if heads == 0 || !e.is_multiple_of(heads) || pool_k.dims()[1] != e || pool_v.dims() != pool_k.dims() {
        return None;
    }
    let (kf, vf) =
        (pool_k.clone().try_into_primitive::<Flex>().ok()?, pool_v.clone().try_into_primitive::<Flex>().ok()?);
    if !kf.is_contiguous() || !vf.is_contiguous() {
        return None;
    }
    let q: Vec<f32> = q.clone().into_data().iter::<f32>().collect();
    let job = Job { q: &q, plan, heads, width: e / heads, scale };
    let from = |t: &FlexTensor| t.layout().start_offset();
    let out = match (kf.dtype(), vf.dtype()) {
        (DType::F32, DType::F32) => job.run(&kf.storage::<f32>()[from(&kf)..], &vf.storage::<f32>()[from(&vf)..]),
        (DType::F16, DType::F16) => {
            job.run(&kf.storage::<half::f16>()[from(&kf)..], &vf.storage::<half::f16>()[from(&vf)..])
        }
        _ => return None,
    };
    Some(Tensor::from_data(TensorData::new(out, [n, e]), &pool_k.device()))
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn attention(
    _q: &Tensor<2>,
    _pool_k: &Tensor<2>,
    _pool_v: &Tensor<2>,
    _plan: &PagedPlan,
    _heads: usize,
    _scale: f32,
) -> Option<Tensor<2>> {
    None
}

/// One call's queries, plan and sizes.
#[cfg(not(target_arch = "wasm32"))]
struct Job<'a> {
    q: &'a [f32],
    plan: &'a PagedPlan,
    heads: usize,
    width: usize,
    scale: f32,
}

#[cfg(not(target_arch = "wasm32"))]
impl Job<'_> {
    /// `[tokens, heads, width]` outputs, one task per (token, head).
    fn run<E: super::row_dots::Weight>(&self, keys: &[E], values: &[E]) -> Vec<f32> {
        let (h, d, bs) = (self.heads, self.width, self.plan.block_size);
        let e = h * d;
        let mut out = vec![0f32; self.q.len()];
        super::cpu_team::for_each_chunk(&mut out, d, |task, out| {
            let (token, head) = (task / h, task % h);
            let segment = self.plan.token_segment[token] as usize;
            let table = &self.plan.tables[self.plan.table_offsets[segment] as usize..];
            let seen = self.plan.token_position[token] as usize + 1;
            let at = |p: usize| (table[p / bs] as usize * bs + p % bs) * e + head * d;
            let mut weights = vec![0f32; seen];
            super::cpu_attention::attend_query(
                &self.q[token * e + head * d..][..d],
                |p| &keys[at(p)..][..d],
                |p| &values[at(p)..][..d],
                |_| 0.0,
                self.scale,
                &mut weights,
                out,
            );
        });
        out
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use burn::tensor::{DType, Device, Distribution};

    use super::*;
    use crate::engine::kernels::{KernelPath, paged};
    use crate::engine::kv::dtype::KvDtype;
    use crate::engine::kv::paged::{PagedKv, Segment};
    use crate::engine::step::Step;

    /// Against the gather-and-mask twin: decode tokens and prefill chunks of several lengths,
    /// scattered blocks, a sequence whose last block is part full; f32 and f16 pools.
    #[test]
    fn equals_the_gathering_twin() {
        let device = Device::flex();
        let (heads, d, bs) = (3, 8, 4);
        let e = heads * d;
        let segments = vec![
            Segment { table: vec![5, 0, 7], start: 9, len: 1 },
            Segment { table: vec![2, 6], start: 0, len: 6 },
            Segment { table: vec![1, 3, 4], start: 4, len: 5 },
            Segment { table: vec![8], start: 0, len: 1 },
        ];
        let n: usize = segments.iter().map(|s| s.len).sum();
        let positions: Vec<usize> = segments.iter().flat_map(|s| s.start..s.context()).collect();
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let mut cache = PagedKv::new(1, e, 9, bs, dtype, &device).expect("a small cache");
            cache.schedule(segments.clone());
            let step = Step { batch: 1, len: n, ids: vec![0; n], positions: positions.clone(), real: vec![true; n] };
            let plan = cache.prepare(&step).expect("a plan");
            let pool = || Tensor::<2>::random([9 * bs, e], Distribution::Normal(0.0, 1.0), &device);
            let (pool_k, pool_v) = (pool(), pool());
            let (pool_k, pool_v) = match dtype {
                KvDtype::F16 => (pool_k.cast(DType::F16), pool_v.cast(DType::F16)),
                _ => (pool_k, pool_v),
            };
            let q = Tensor::<2>::random([n, e], Distribution::Normal(0.0, 1.0), &device);
            let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
            let path = KernelPath::Twin;
            let want = read(paged::attention(q.clone(), pool_k.clone(), pool_v.clone(), &plan, heads, 0.4, path));
            let got = read(attention(&q, &pool_k, &pool_v, &plan, heads, 0.4).expect("a CPU kernel"));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{dtype:?}: off by {worst}");
        }
    }
}
