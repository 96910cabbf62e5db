//! The `[vocab, n_embd]` token table, used twice: embedding lookup and the tied output
//! projection (`logits = h @ wteᵀ`).
//!
//! WebGPU and lavapipe cap one storage binding at 128 MiB by default, and GPT-2's f32 `wte`
//! is 154 MB; so the table is kept in row chunks that each fit a binding. Small models get one
//! chunk and pay nothing for this.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::kernels::row_dots::{self, CompactTable};
use super::kernels::{Path, row_dots_wgsl};

/// Largest chunk, in bytes: WebGPU's default `maxStorageBufferBindingSize`.
const MAX_CHUNK_BYTES: usize = 128 << 20;

pub struct VocabTable {
    /// Row blocks of the table, in order; all but the last have `rows_per_chunk` rows. f32,
    /// or f16 pairs packed in words on wgpu (`packed`). Empty when the CPU holds it `compact`.
    chunks: Vec<Tensor<2>>,
    rows_per_chunk: usize,
    packed: bool,
    /// The whole table in f16 or int8 instead (the CPU, one piece: no binding limit there).
    compact: Option<CompactTable>,
}

impl VocabTable {
    /// Uploads a `[vocab, width]` f32 table.
    pub fn new(data: TensorData, device: &Device) -> Self {
        Self::with_chunk_bytes(data, MAX_CHUNK_BYTES, false, device)
    }

    /// Uploads a `[vocab, width]` f32 table rounded to f16: one [`CompactTable`] on the CPU,
    /// packed chunks on wgpu (`Gpt2::into_f16_weights` admits no other device).
    pub fn half(data: TensorData, device: &Device) -> Self {
        if row_dots::runs_on(device) {
            return Self::compact(&data, CompactTable::f16);
        }
        Self::with_chunk_bytes(data, MAX_CHUNK_BYTES, true, device)
    }

    /// The table as one compact table on the CPU, made by `make` from its f32 values.
    fn compact(data: &TensorData, make: fn(&[f32], usize, usize) -> CompactTable) -> Self {
        let [vocab, width] = [data.shape()[0], data.shape()[1]];
        let values = data.as_slice::<f32>().expect("weights are converted to f32 on load");
        Self { chunks: vec![], rows_per_chunk: vocab, packed: false, compact: Some(make(values, vocab, width)) }
    }

    fn with_chunk_bytes(data: TensorData, chunk_bytes: usize, packed: bool, device: &Device) -> Self {
        let [vocab, width] = [data.shape()[0], data.shape()[1]];
        // Sized as f32 even when packed: scoring many rows widens a chunk to f32 for the matmul.
        let rows_per_chunk = (chunk_bytes / (width * 4)).clamp(1, vocab);
        let values = data.as_slice::<f32>().expect("weights are converted to f32 on load");
        let chunks = (0..vocab)
            .step_by(rows_per_chunk)
            .map(|lo| {
                let hi = (lo + rows_per_chunk).min(vocab);
                let part = &values[lo * width..hi * width];
                match packed {
                    true => row_dots_wgsl::pack_f16(part, hi - lo, width, device),
                    false => Tensor::from_data(TensorData::new(part.to_vec(), [hi - lo, width]), device),
                }
            })
            .collect();
        Self { chunks, rows_per_chunk, packed, compact: None }
    }

    /// The table rounded to f16, or (`int8`, the CPU only) quantized to int8 per row: a
    /// read-back, native only (the browser rounds on load).
    pub fn into_compact(self, int8: bool) -> Self {
        if self.compact.is_some() || self.packed {
            return self;
        }
        let device = self.chunks[0].device();
        let [vocab, width] = [self.chunks.iter().map(|c| c.dims()[0]).sum(), self.chunks[0].dims()[1]];
        let values: Vec<f32> = self.chunks.into_iter().flat_map(|c| c.into_data().iter::<f32>().collect::<Vec<f32>>()).collect();
        let data = TensorData::new(values, [vocab, width]);
        if int8 { Self::compact(&data, CompactTable::int8) } else { Self::half(data, &device) }
    }

    /// Rows for `ids` (all `< vocab`), `[ids.len(), width]`.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        if let Some(compact) = &self.compact {
            return compact.select(ids, device);
        }
        if self.packed {
            return row_dots_wgsl::half_table_rows(&self.chunks, self.rows_per_chunk, ids, device);
        }
        let chunk_ids = |lo: usize, rows: usize| -> Vec<i64> {
            ids.iter().map(|&id| (id as usize).saturating_sub(lo).min(rows - 1) as i64).collect()
        };
        if let [only] = self.chunks.as_slice() {
            let local = Tensor::<1, Int>::from_data(TensorData::new(chunk_ids(0, only.dims()[0]), [ids.len()]), device);
            return only.clone().select(0, local);
        }
        // Each chunk serves the ids in its range; the others' rows are zeroed and the parts summed.
        self.chunks
            .iter()
            .enumerate()
            .map(|(c, chunk)| {
                let lo = c * self.rows_per_chunk;
                let rows = chunk.dims()[0];
                let local = Tensor::<1, Int>::from_data(TensorData::new(chunk_ids(lo, rows), [ids.len()]), device);
                let inside: Vec<f32> =
                    ids.iter().map(|&id| f32::from((lo..lo + rows).contains(&(id as usize)))).collect();
                let inside = Tensor::<2>::from_data(TensorData::new(inside, [ids.len(), 1]), device);
                chunk.clone().select(0, local) * inside
            })
            .reduce(|a, b| a + b)
            .expect("a vocabulary has at least one row")
    }

    /// `h @ tableᵀ`: `[n, width]` → `[n, vocab]` logits. On the CPU, decode's few rows take
    /// the row-dots kernel, which streams the table once; `h @ tableᵀ` makes the gemm repack
    /// all of it per call (2 rows cost 1.8× one row that way on burn's flex device). On wgpu
    /// they take the WGSL row dots, all chunks into one output.
    pub fn project(&self, h: Tensor<2>, path: Path) -> Tensor<2> {
        if let Some(compact) = &self.compact {
            let kernel = if path == Path::Cpu { row_dots::rows_times_compact(&h, compact) } else { None };
            return kernel.unwrap_or_else(|| h.clone().matmul(compact.to_tensor(&h.device()).transpose()));
        }
        if (path == Path::Wgsl || self.packed)
            && let Some(logits) = row_dots_wgsl::rows_times_table(&h, &self.chunks, self.packed)
        {
            return logits;
        }
        let parts: Vec<Tensor<2>> = self
            .chunks
            .iter()
            .map(|c| {
                let kernel = if path == Path::Cpu { row_dots::rows_times_table(&h, c) } else { None };
                kernel.unwrap_or_else(|| {
                    let c = if self.packed { row_dots_wgsl::widen_f16(c) } else { c.clone() };
                    h.clone().matmul(c.transpose())
                })
            })
            .collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(parts, 1) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_table_equals_one_piece() {
        let device = Device::flex();
        let (vocab, width) = (11, 4);
        let values: Vec<f32> = (0..vocab * width).map(|i| (i as f32 * 0.37).sin()).collect();
        let data = || TensorData::new(values.clone(), [vocab, width]);
        let whole = VocabTable::new(data(), &device);
        // 3 rows (48 bytes) per chunk: 4 chunks, the last one short.
        let chunked = VocabTable::with_chunk_bytes(data(), 3 * width * 4, false, &device);
        assert_eq!(chunked.chunks.len(), 4);
        let ids = [0, 10, 3, 2, 9, 5, 5];
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        assert_eq!(read(chunked.lookup(&ids, &device)), read(whole.lookup(&ids, &device)));
        let h = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25, 1.0, 1.0, -0.5, 0.0], [2, width]), &device);
        let (a, b) = (read(chunked.project(h.clone(), Path::Cpu)), read(whole.project(h, Path::Cpu)));
        assert_eq!(a.len(), 2 * vocab);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    }
}
