//! One row against a row-major matrix on the CPU: `out[r] = table[r] · h`, one dot product
//! per matrix row, rows shared out to the worker threads. A batch-1 decode step is made of
//! these: the output head (`wte`, 154 MB in f32: `logits[v] = wte[v] · h`) and every linear
//! layer (`x @ W` = `Wᵀ · x`, with `Wᵀ` laid out once at load), each reading its whole weight
//! for one row.
//!
//! burn's flex device runs them through its gemm: single-threaded below 192³ multiply-adds
//! (every block layer), and at 7–9 GB/s even threaded (the head: 15–19 ms for a 134 MB chunk,
//! where this kernel takes 8.9 ms), measured on this 2-core machine. Dot products over
//! contiguous rows stream the weights in order on every thread. Its tensor-op twins are the
//! matmuls in `vocab_table.rs` and `gpt2.rs`, used on every other device and row count, and
//! as its test oracle.

use burn::tensor::{Tensor, TensorData};

/// Rows of the table per task: enough work per task, enough tasks to balance the threads.
#[cfg(not(target_arch = "wasm32"))]
const ROWS_PER_TASK: usize = 512;

/// `[1, rows]` logits of a one-row `h` against a `[rows, k]` table on the CPU device; None
/// where the twin must run (another device, more rows, a strided view).
#[cfg(not(target_arch = "wasm32"))]
pub fn table_times_row(table: &Tensor<2>, h: &Tensor<2>) -> Option<Tensor<2>> {
    use burn::backend::flex::Flex;
    use rayon::prelude::*;

    let ([rows, k], [1, k2]) = (table.dims(), h.dims()) else { return None };
    if k != k2 {
        return None;
    }
    let (tf, hf) = (table.clone().try_into_primitive::<Flex>().ok()?, h.clone().try_into_primitive::<Flex>().ok()?);
    if !tf.is_contiguous() || !hf.is_contiguous() {
        return None;
    }
    let t = &tf.storage::<f32>()[tf.layout().start_offset()..][..rows * k];
    let x = &hf.storage::<f32>()[hf.layout().start_offset()..][..k];
    let mut out = vec![0f32; rows];
    out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(task, logits)| {
        let first = task * ROWS_PER_TASK;
        for (j, logit) in logits.iter_mut().enumerate() {
            *logit = dot(&t[(first + j) * k..][..k], x);
        }
    });
    Some(Tensor::from_data(TensorData::new(out, [1, rows]), &h.device()))
}

/// Eight running sums: the compiler keeps them in vector registers.
#[cfg(not(target_arch = "wasm32"))]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    let mut sums = [0f32; 8];
    for (x, y) in a8.zip(b8) {
        for lane in 0..8 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn table_times_row(_table: &Tensor<2>, _h: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn one_row_equals_the_twin() {
        let device = Device::flex();
        // Not a multiple of the task size nor of 8: every remainder path runs.
        let (rows, k) = (1037, 53);
        let table = Tensor::<2>::from_data(TensorData::new((0..rows * k).map(|i| (i as f32 * 0.61).cos()).collect::<Vec<f32>>(), [rows, k]), &device);
        let h = Tensor::<2>::from_data(TensorData::new((0..k).map(|i| i as f32 * 0.05 - 1.4).collect::<Vec<f32>>(), [1, k]), &device);
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        let got = read(table_times_row(&table, &h).expect("a flex row"));
        let want = read(table.clone().matmul(h.clone().transpose()).transpose());
        assert_eq!(got.len(), rows);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
        // Two rows, or a transposed view: the twin's job.
        assert!(table_times_row(&table, &Tensor::cat(vec![h.clone(), h], 0)).is_none());
        assert!(table_times_row(&table.clone().transpose(), &Tensor::<2>::ones([1, rows], &device)).is_none());
    }
}
