//! Attention of a few queries on the CPU: `softmax(q·kᵀ·scale + mask)·v`, one task per
//! (sequence, head) for the CPU team's threads, each walking its keys once per query. The tensor
//! ops run a decode step's attention as two small matmuls per sequence and head, whose set-up
//! costs more than their arithmetic: at batch 8 the gemm's per-matrix work took a large share
//! of gpt2's decode step for a tiny share of its multiply-adds. Masked keys get the same additive
//! bias as the twin (`attention_twin` in `kernels.rs`, the oracle), so even a query that sees
//! nothing (padding) gets the twin's answer.

use burn::tensor::Tensor;

#[cfg(not(target_arch = "wasm32"))]
use super::row_dots::{self, Weight};
use crate::engine::kv::mask::StepMask;

/// Most queries per sequence the kernel takes (decode, speculative verification); a prompt's
/// prefill is the twin's, whose matmuls then have work enough.
pub const MAX_QUERIES: usize = 16;

/// q `[batch, heads, queries, head_dim]`, k and v `[batch, heads, slots, head_dim]` (f32, or
/// an f16 cache's, widened as they are read) on the CPU device, any strides with contiguous
/// head rows; None where the twin must run.
#[cfg(not(target_arch = "wasm32"))]
pub fn attention(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, mask: &StepMask, scale: f32) -> Option<Tensor<4>> {
    use burn::backend::flex::Flex;
    use burn::tensor::{DType, TensorData};

    let [b, h, t, d] = q.dims();
    let slots = k.dims()[2];
    if t > MAX_QUERIES
        || k.dims() != [b, h, slots, d]
        || v.dims() != k.dims()
        || mask.keys > slots
        || (mask.batch, mask.queries) != (b, t)
    {
        return None;
    }
    let (kf, vf) = (k.clone().try_into_primitive::<Flex>().ok()?, v.clone().try_into_primitive::<Flex>().ok()?);
    // A few query rows: read out in order, whatever their layout.
    let q: Vec<f32> = q.clone().into_data().iter::<f32>().collect();
    // The mask as the twin's bias, `[batch, queries, keys]` (the mask itself stays on this thread).
    let keys_seen = mask.keys;
    let bias: Vec<f32> = (0..b)
        .flat_map(|row| (0..t).flat_map(move |query| (0..keys_seen).map(move |key| mask.bias_at(row, query, key))))
        .collect();
    let job = Job { q: &q, bias: &bias, heads: h, queries: t, width: d, keys: keys_seen, scale };
    let out = match (kf.dtype(), vf.dtype()) {
        (DType::F32, DType::F32) => {
            job.run(Rows::of(&kf, kf.storage::<f32>(), d)?, Rows::of(&vf, vf.storage::<f32>(), d)?)
        }
        (DType::F16, DType::F16) => {
            job.run(Rows::of(&kf, kf.storage::<half::f16>(), d)?, Rows::of(&vf, vf.storage::<half::f16>(), d)?)
        }
        _ => return None,
    };
    let device = k.device();
    Some(Tensor::from_data(TensorData::new(out, [b, h, t, d]), &device))
}

/// One attention call's queries, bias and sizes.
#[cfg(not(target_arch = "wasm32"))]
struct Job<'a> {
    q: &'a [f32],
    bias: &'a [f32],
    heads: usize,
    queries: usize,
    width: usize,
    keys: usize,
    scale: f32,
}

#[cfg(not(target_arch = "wasm32"))]
impl Job<'_> {
    /// `[batch, heads, queries, width]` outputs, one task per (sequence, head).
    fn run<E: Weight>(&self, keys: Rows<'_, E>, values: Rows<'_, E>) -> Vec<f32> {
        let (h, t, d, keys_seen) = (self.heads, self.queries, self.width, self.keys);
        let mut out = vec![0f32; self.q.len()];
        super::cpu_team::for_each_chunk(&mut out, t * d, |bh, out| {
            let (row, head) = (bh / h, bh % h);
            let mut weights = vec![0f32; keys_seen];
            for (query, out) in out.chunks_exact_mut(d).enumerate() {
                let qv = &self.q[(bh * t + query) * d..][..d];
                let bias = &self.bias[(row * t + query) * keys_seen..][..keys_seen];
                let key = |key| keys.row(row, head, key);
                let value = |key| values.row(row, head, key);
                attend_query(qv, key, value, |key| bias[key], self.scale, &mut weights, out);
            }
        });
        out
    }
}

/// One query's attention over `weights.len()` keys, written to `out` (zeroed):
/// `softmax(q·kᵢ·scale + biasᵢ)·v`, with `key(i)` / `value(i)` the rows of key `i`. Shared by
/// the contiguous cache's kernel and the paged one, which differ only in where rows live.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn attend_query<'a, E: Weight + 'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [E],
    value: impl Fn(usize) -> &'a [E],
    bias: impl Fn(usize) -> f32,
    scale: f32,
    weights: &mut [f32],
    out: &mut [f32],
) {
    for (i, w) in weights.iter_mut().enumerate() {
        *w = row_dots::dot(key(i), q) * scale + bias(i);
    }
    let max = weights.iter().fold(f32::NEG_INFINITY, |m, &w| m.max(w));
    weights.iter_mut().for_each(|w| *w = (*w - max).exp());
    let total: f32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        row_dots::add_scaled(out, w / total, value(i));
    }
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn attention(_q: &Tensor<4>, _k: &Tensor<4>, _v: &Tensor<4>, _mask: &StepMask, _scale: f32) -> Option<Tensor<4>> {
    None
}

/// Head rows of a `[batch, heads, slots, head_dim]` tensor read in place through its strides:
/// the contiguous cache's buffers, or the paged cache's gathered `[rows, len, heads, d]` with
/// heads and positions swapped.
#[cfg(not(target_arch = "wasm32"))]
struct Rows<'a, E> {
    data: &'a [E],
    strides: [usize; 3],
    width: usize,
}

#[cfg(not(target_arch = "wasm32"))]
impl<'a, E> Rows<'a, E> {
    /// `t`'s rows, its elements being `storage`.
    fn of(t: &burn::backend::flex::FlexTensor, storage: &'a [E], width: usize) -> Option<Self> {
        let layout = t.layout();
        let &[sb, sh, sk, sd] = layout.strides() else { return None };
        if sd != 1 || [sb, sh, sk].iter().any(|&s| s < 0) {
            return None;
        }
        Some(Self { data: &storage[layout.start_offset()..], strides: [sb as usize, sh as usize, sk as usize], width })
    }

    fn row(&self, batch: usize, head: usize, slot: usize) -> &'a [E] {
        let [sb, sh, sk] = self.strides;
        &self.data[batch * sb + head * sh + slot * sk..][..self.width]
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::engine::kernels::{KernelPath, attention as any_path};

    #[test]
    fn equals_the_twin_under_every_mask() {
        let device = Device::flex();
        let (b, h, d, slots, keys) = (3, 2, 8, 9, 7);
        let read = |t: Tensor<4>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        for t in [1, 3] {
            let q = Tensor::<4>::random([b, h, t, d], Distribution::Normal(0.0, 1.0), &device);
            let k = Tensor::<4>::random([b, h, slots, d], Distribution::Normal(0.0, 1.0), &device);
            let v = Tensor::<4>::random([b, h, slots, d], Distribution::Normal(0.0, 1.0), &device);
            // Row 0 sees all its keys; row 1 has a padding key; row 2's first query sees
            // nothing (a padding query), the others are causal.
            let key_pos: Vec<i32> =
                [(0..7).collect::<Vec<i32>>(), vec![0, 1, -1, 2, 3, 4, 5], (0..7).collect()].concat();
            let query_pos: Vec<i32> = (0..b)
                .flat_map(|row| (0..t).map(move |i| if row == 2 && i == 0 { -1 } else { 7 - t as i32 + i as i32 }))
                .collect();
            for window in [None, Some(3)] {
                let mask = StepMask::from_positions(b, t, keys, key_pos.clone(), query_pos.clone(), window);
                let want = read(any_path(q.clone(), k.clone(), v.clone(), &mask, 0.3, KernelPath::Twin));
                let got = read(attention(&q, &k, &v, &mask, 0.3).expect("a CPU attention"));
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{t} queries, window {window:?}");
                // Heads and positions swapped, as the paged cache gathers them: read in place.
                let swapped = |x: &Tensor<4>| {
                    Tensor::<4>::from_data(x.clone().swap_dims(1, 2).into_data(), &device).swap_dims(1, 2)
                };
                let got = read(attention(&q, &swapped(&k), &swapped(&v), &mask, 0.3).expect("strided rows"));
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5), "{t} queries, swapped");
            }
        }
        // Too many queries: the twin's job.
        let q = Tensor::<4>::zeros([1, 1, MAX_QUERIES + 1, 4], &device);
        let k = Tensor::<4>::zeros([1, 1, 20, 4], &device);
        let mask = StepMask::from_positions(1, MAX_QUERIES + 1, 20, (0..20).collect(), (3..20).collect(), None);
        assert!(attention(&q, &k, &k, &mask, 1.0).is_none());
    }
}
