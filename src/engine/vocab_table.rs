//! The `[vocab, n_embd]` token table, used twice: embedding lookup and the tied output
//! projection (`logits = h @ wteᵀ`).
//!
//! WebGPU and lavapipe cap one storage binding at 128 MiB by default, and GPT-2's f32 `wte`
//! is 154 MB; so the table is kept in row chunks that each fit a binding. Small models get one
//! chunk and pay nothing for this.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Largest chunk, in bytes: WebGPU's default `maxStorageBufferBindingSize`.
const MAX_CHUNK_BYTES: usize = 128 << 20;

pub struct VocabTable {
    /// Row blocks of the table, in order; all but the last have `rows_per_chunk` rows.
    chunks: Vec<Tensor<2>>,
    rows_per_chunk: usize,
}

impl VocabTable {
    /// Uploads a `[vocab, width]` f32 table.
    pub fn new(data: TensorData, device: &Device) -> Self {
        let [vocab, width] = [data.shape()[0], data.shape()[1]];
        let rows_per_chunk = (MAX_CHUNK_BYTES / (width * 4)).clamp(1, vocab);
        let values = data.as_slice::<f32>().expect("weights are converted to f32 on load");
        let chunks = (0..vocab)
            .step_by(rows_per_chunk)
            .map(|lo| {
                let hi = (lo + rows_per_chunk).min(vocab);
                let part = TensorData::new(values[lo * width..hi * width].to_vec(), [hi - lo, width]);
                Tensor::from_data(part, device)
            })
            .collect();
        Self { chunks, rows_per_chunk }
    }

    /// Rows for `ids` (all `< vocab`), `[ids.len(), width]`.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Tensor<2> {
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

    /// `h @ tableᵀ`: `[n, width]` → `[n, vocab]` logits.
    pub fn project(&self, h: Tensor<2>) -> Tensor<2> {
        let parts: Vec<Tensor<2>> = self.chunks.iter().map(|c| h.clone().matmul(c.clone().transpose())).collect();
        if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { Tensor::cat(parts, 1) }
    }
}
