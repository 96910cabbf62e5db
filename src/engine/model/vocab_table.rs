//! The `[vocab, n_embd]` token table, used twice: embedding lookup and the tied output
//! projection (`logits = h @ wteᵀ`).
//!
//! WebGPU and lavapipe cap one storage binding at 128 MiB by default, and GPT-2's f32 `wte`
//! is 154 MB; so the table is kept in row chunks that each fit a binding. Small models get one
//! chunk and pay nothing for this.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::engine::kernels::held_bytes::HeldBytes;
use crate::engine::kernels::row_dots::{self, CompactTable};
use crate::engine::kernels::row_dots_wgsl::{Packed, PackedRows};
use crate::engine::kernels::{KernelPath, row_dots_wgsl};
use crate::engine::model::weight_dtype::WeightDtype;

/// Largest chunk, in bytes: WebGPU's default `maxStorageBufferBindingSize`.
const MAX_CHUNK_BYTES: usize = 128 << 20;

/// Largest packed (f16 / int8) chunk, in bytes of words: a chunk is packed on the host before
/// its upload, so this is what a tab's wasm memory holds of the table while it loads.
const MAX_PACKED_CHUNK_BYTES: usize = 16 << 20;

pub struct VocabTable {
    /// Row blocks of the table, in order; all but the last have `rows_per_chunk` rows. f32,
    /// or on wgpu f16 or int8 in packed words. Empty when the CPU holds it `compact`.
    chunks: Vec<Packed>,
    rows_per_chunk: usize,
    /// The whole table in f16 or int8 instead (the CPU, one piece: no binding limit there).
    compact: Option<CompactTable>,
}

impl VocabTable {
    /// Uploads a `[vocab, width]` f32 table held in `dtype`: f32 chunks; f16 or int8 (a scale
    /// per token) as one [`CompactTable`] on the CPU, packed chunks on wgpu
    /// (`WeightDtype::check` admits no other device).
    pub fn upload(data: TensorData, dtype: WeightDtype, device: &Device) -> Self {
        let [vocab, width] = [data.shape()[0], data.shape()[1]];
        let mut rows = TableRows::new(vocab, width, dtype, device);
        rows.push(data.as_slice::<f32>().expect("weights are converted to f32 on load"));
        rows.finish().expect("every row was pushed")
    }

    /// The bytes the table occupies, by the type it is held in.
    pub fn held_bytes(&self) -> HeldBytes {
        self.chunks.iter().map(Packed::held_bytes).sum::<HeldBytes>()
            + self.compact.as_ref().map(CompactTable::held_bytes).unwrap_or_default()
    }

    /// Whether the chunks hold packed words, which only the WGSL kernels read.
    fn packed(&self) -> bool {
        self.chunks.first().is_some_and(|c| !c.is_plain())
    }

    /// The table held in `dtype` from now on (f32 ones only): a read-back, native only (the
    /// browser converts on load).
    pub fn into_reduced(self, dtype: WeightDtype) -> Self {
        if self.compact.is_some() || self.packed() || dtype == WeightDtype::F32 {
            return self;
        }
        let device = self.chunks[0].words.device();
        let [vocab, width] = [self.chunks.iter().map(|c| c.dims()[0]).sum(), self.chunks[0].dims()[1]];
        let values: Vec<f32> =
            self.chunks.into_iter().flat_map(|c| c.words.into_data().iter::<f32>().collect::<Vec<f32>>()).collect();
        Self::upload(TensorData::new(values, [vocab, width]), dtype, &device)
    }

    /// Rows for `ids` (all `< vocab`), `[ids.len(), width]`.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        if let Some(compact) = &self.compact {
            return compact.select(ids, device);
        }
        if self.packed() {
            return row_dots_wgsl::packed_table_rows(&self.chunks, self.rows_per_chunk, ids, device);
        }
        let chunk_ids = |lo: usize, rows: usize| -> Vec<i64> {
            ids.iter().map(|&id| (id as usize).saturating_sub(lo).min(rows - 1) as i64).collect()
        };
        if let [only] = self.chunks.as_slice() {
            let local = Tensor::<1, Int>::from_data(TensorData::new(chunk_ids(0, only.dims()[0]), [ids.len()]), device);
            return only.words.clone().select(0, local);
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
                chunk.words.clone().select(0, local) * inside
            })
            .reduce(|a, b| a + b)
            .expect("a vocabulary has at least one row")
    }

    /// `h @ tableᵀ`: `[n, width]` → `[n, vocab]` logits. On the CPU, rows take the row-dots
    /// kernel, which streams the table once; `h @ tableᵀ` makes the gemm repack
    /// all of it per call (on burn's flex device a second row costs almost as much as the first). On wgpu
    /// they take the WGSL row dots, all chunks into one output.
    pub fn project(&self, h: Tensor<2>, path: KernelPath) -> Tensor<2> {
        if let Some(compact) = &self.compact {
            let kernel = if path == KernelPath::Cpu { row_dots::rows_times_compact(&h, compact) } else { None };
            return kernel.unwrap_or_else(|| h.clone().matmul(compact.to_tensor(&h.device()).transpose()));
        }
        if (path == KernelPath::Wgsl || self.packed())
            && let Some(logits) = row_dots_wgsl::rows_times_table(&h, &self.chunks)
        {
            return logits;
        }
        let parts: Vec<Tensor<2>> = self
            .chunks
            .iter()
            .map(|c| {
                let kernel = if path == KernelPath::Cpu { row_dots::rows_times_table(&h, &c.words) } else { None };
                kernel.unwrap_or_else(|| h.clone().matmul(c.widen().transpose()))
            })
            .collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(parts, 1) }
    }
}

/// A token table arriving in row blocks (a streamed file's): each chunk goes to the device
/// once its rows are in, so the host holds one block of f32 rows and at most one chunk's packed
/// words, never the whole table (gpt2-xl's f32 table is 322 MB, in a tab whose wasm memory
/// never shrinks).
pub struct TableRows {
    vocab: usize,
    width: usize,
    device: Device,
    rows_per_chunk: usize,
    chunks: Vec<Packed>,
    /// Rows pushed so far.
    filled: usize,
    filling: Filling,
}

/// The chunk being filled.
enum Filling {
    /// f32 blocks already on the device, joined there when the chunk is full.
    F32(Vec<Tensor<2>>),
    /// f16 or int8 words packed on the host (wgpu).
    Packed(PackedRows),
    /// The whole table's f32 values, for a [`CompactTable`] (the CPU: no binding limit).
    Compact { int8: bool, values: Vec<f32> },
}

impl TableRows {
    pub fn new(vocab: usize, width: usize, dtype: WeightDtype, device: &Device) -> Self {
        Self::with_chunk_bytes(vocab, width, MAX_CHUNK_BYTES, dtype, device)
    }

    /// Chunks of at most `chunk_bytes` of f32 rows instead of a binding's worth: tests use
    /// small ones to see a small table in many chunks.
    pub fn with_chunk_bytes(
        vocab: usize,
        width: usize,
        chunk_bytes: usize,
        dtype: WeightDtype,
        device: &Device,
    ) -> Self {
        let int8 = dtype == WeightDtype::Int8;
        // Sized as f32 even when packed: scoring many rows widens a chunk to f32 for the matmul.
        let rows_per_chunk = (chunk_bytes / (width * 4)).clamp(1, vocab.max(1));
        let (filling, rows_per_chunk) = match dtype {
            WeightDtype::F32 => (Filling::F32(vec![]), rows_per_chunk),
            _ if row_dots::runs_on(device) => {
                (Filling::Compact { int8, values: Vec::with_capacity(vocab * width) }, vocab.max(1))
            }
            _ => {
                let row_bytes = PackedRows::row_words(int8, width) * 4;
                let rows_per_chunk = rows_per_chunk.min((MAX_PACKED_CHUNK_BYTES / row_bytes).max(1));
                (Filling::Packed(PackedRows::new(int8, width, rows_per_chunk)), rows_per_chunk)
            }
        };
        Self { vocab, width, device: device.clone(), rows_per_chunk, chunks: vec![], filled: 0, filling }
    }

    /// Takes the next whole rows, `values.len()` a multiple of `width`.
    pub fn push(&mut self, mut values: &[f32]) {
        while !values.is_empty() {
            let chunk_end = ((self.chunks.len() + 1) * self.rows_per_chunk).min(self.vocab);
            let rows = (values.len() / self.width).min(chunk_end - self.filled);
            assert!(rows > 0, "rows past the table's {} rows", self.vocab);
            let (part, rest) = values.split_at(rows * self.width);
            match &mut self.filling {
                Filling::F32(blocks) => {
                    blocks.push(Tensor::from_data(TensorData::new(part.to_vec(), [rows, self.width]), &self.device))
                }
                Filling::Packed(packed) => packed.push(part),
                Filling::Compact { values, .. } => values.extend_from_slice(part),
            }
            self.filled += rows;
            values = rest;
            if self.filled == chunk_end {
                self.close_chunk();
            }
        }
    }

    /// Sends the full chunk to the device (a compact table waits for [`finish`](Self::finish)).
    fn close_chunk(&mut self) {
        let chunk = match &mut self.filling {
            Filling::F32(blocks) if blocks.len() == 1 => Packed::plain(blocks.pop().expect("one block")),
            Filling::F32(blocks) => Packed::plain(Tensor::cat(std::mem::take(blocks), 0)),
            Filling::Packed(packed) => {
                let next = self.rows_per_chunk.min(self.vocab - self.filled);
                packed.take(next).upload(&self.device)
            }
            Filling::Compact { .. } => return,
        };
        self.chunks.push(chunk);
    }

    /// The table, once all its rows are in.
    pub fn finish(self) -> Result<VocabTable, String> {
        if self.filled != self.vocab {
            return Err(format!("the token table ended after {} of its {} rows", self.filled, self.vocab));
        }
        let compact = match self.filling {
            Filling::Compact { int8, values } => {
                let make = if int8 { CompactTable::int8 } else { CompactTable::f16 };
                Some(make(&values, self.vocab, self.width))
            }
            _ => None,
        };
        Ok(VocabTable { chunks: self.chunks, rows_per_chunk: self.rows_per_chunk, compact })
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
        let whole = VocabTable::upload(data(), WeightDtype::F32, &device);
        // 3 rows (48 bytes) per chunk: 4 chunks, the last one short; rows pushed in blocks of
        // 2 that straddle them.
        let mut rows = TableRows::with_chunk_bytes(vocab, width, 3 * width * 4, WeightDtype::F32, &device);
        values.chunks(2 * width).for_each(|block| rows.push(block));
        let chunked = rows.finish().unwrap();
        assert_eq!(chunked.chunks.len(), 4);
        let ids = [0, 10, 3, 2, 9, 5, 5];
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        assert_eq!(read(chunked.lookup(&ids, &device)), read(whole.lookup(&ids, &device)));
        let h = Tensor::<2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 2.0, 0.25, 1.0, 1.0, -0.5, 0.0], [2, width]),
            &device,
        );
        let (a, b) = (read(chunked.project(h.clone(), KernelPath::Cpu)), read(whole.project(h, KernelPath::Cpu)));
        assert_eq!(a.len(), 2 * vocab);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
    }
}
