//! Decode's few rows through the linear layers and the tied head on the wgpu device: one
//! invocation per output (per 4 outputs for a layer), each weight read once for all rows, sums
//! in registers, no workgroup memory (`shaders/row_dots_*.wgsl`). burn's matmul tiles the row
//! dimension, so a one-row step pays for a whole tile and its barriers; on the CPU-backed
//! WebGPU of headless Chromium (SwiftShader) that made the head dominate each token's time,
//! even for a tiny model. The WGSL twin of the CPU's `row_dots`.
//!
//! Weights are f32, f16 or int8 ([`Packing`]): f16 as two halves per u32 word, widened in the
//! shader by `unpack2x16float`; int8 as four values per word, widened by `unpack4x8snorm` and
//! multiplied by a scale per output. Both are core WGSL, so they run where `shader-f16` is
//! missing (SwiftShader). burn holds such a weight as an f32 tensor whose words are bit
//! patterns, never computed on by burn: only these kernels read it; a longer step (prefill)
//! multiplies by the weight widened to f32 for that call ([`Packed::widen`]).

use burn::tensor::{Device, Tensor, TensorData};
use cubecl::server::BufferBinding;
use half::f16;

use super::held_bytes::{HeldBytes, tensor_bytes};
use super::row_dots::{int8_scale, quantize_int8, to_int8};
use super::wgsl::{Client, WgslKernel, f32_tensor, grid, to_cube};

/// Most rows per launch; longer steps (prefill) take the matmul.
pub const MAX_ROWS: usize = 8;
const WORKGROUP: usize = 64;

/// How a weight's words hold its values.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per weight, made at load: not worth a box
pub enum Packing {
    /// One f32 value per word.
    F32,
    /// Two f16 halves per u32 word.
    F16,
    /// Four int8 values per u32 word (symmetric, [`quantize_int8`]) and a scale per output:
    /// per column of a layer's `W`, per row (token) of a table. A scale here is the largest
    /// |value| of its output, since `unpack4x8snorm` gives `q / 127`.
    Int8 { scales: Tensor<1>, per_row: bool },
}

/// A `[rows, cols]` weight as the kernels read it: `words` is `[rows, cols / values per word]`.
#[derive(Clone)]
pub struct Packed {
    pub words: Tensor<2>,
    pub packing: Packing,
}

impl Packed {
    /// f32 values as they are.
    pub fn plain(values: Tensor<2>) -> Self {
        Self { words: values, packing: Packing::F32 }
    }

    /// A row-major `[rows, cols]` f32 matrix (cols even) rounded to f16, each pair of
    /// neighbours in one word.
    pub fn f16(values: &[f32], rows: usize, cols: usize, device: &Device) -> Self {
        assert!(values.len() == rows * cols && cols.is_multiple_of(2), "a [{rows}, {cols}] matrix with an even width");
        let mut packed = PackedRows::new(false, cols, rows);
        packed.push(values);
        packed.upload(device)
    }

    /// A layer's row-major `W` `[inputs, outputs]` (outputs a multiple of 4) quantized to int8
    /// with a scale per output, the values the CPU's [`quantize_int8`] gives its `Wᵀ`; four
    /// neighbouring outputs per word. Read row by row, never transposed: the browser quantizes
    /// as the weights stream in, on one thread.
    pub fn int8_per_column(values: &[f32], inputs: usize, outputs: usize, device: &Device) -> Self {
        assert!(
            values.len() == inputs * outputs && outputs.is_multiple_of(4),
            "a [{inputs}, {outputs}] matrix, outputs a multiple of 4"
        );
        let mut max = vec![0f32; outputs];
        for row in values.chunks_exact(outputs) {
            max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
        }
        let scales: Vec<f32> = max.into_iter().map(int8_scale).collect();
        let words = values
            .chunks_exact(4)
            .zip(scales.chunks_exact(4).cycle())
            .map(|(four, s)| word(four.iter().zip(s).map(|(&v, &s)| to_int8(v, s))));
        Self::int8(words.collect(), [inputs, outputs / 4], &scales, false, device)
    }

    fn int8(words: Vec<f32>, dims: [usize; 2], scales: &[f32], per_row: bool, device: &Device) -> Self {
        let scales =
            Tensor::from_data(TensorData::new(scales.iter().map(|s| s * 127.0).collect(), [scales.len()]), device);
        Self {
            words: Tensor::from_data(TensorData::new(words, dims), device),
            packing: Packing::Int8 { scales, per_row },
        }
    }

    /// Values per word.
    fn per_word(&self) -> usize {
        match self.packing {
            Packing::F32 => 1,
            Packing::F16 => 2,
            Packing::Int8 { .. } => 4,
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self.packing, Packing::F32)
    }

    /// The bytes its words (and int8 scales) occupy, by the type the words hold.
    pub fn held_bytes(&self) -> HeldBytes {
        let words = tensor_bytes(&self.words);
        match &self.packing {
            Packing::F32 => HeldBytes { f32: words, ..HeldBytes::default() },
            Packing::F16 => HeldBytes { f16: words, ..HeldBytes::default() },
            Packing::Int8 { scales, .. } => {
                HeldBytes { int8: words, int8_scales: tensor_bytes(scales), ..HeldBytes::default() }
            }
        }
    }

    /// `[rows, cols]` of the values.
    pub fn dims(&self) -> [usize; 2] {
        let [rows, words] = self.words.dims();
        [rows, words * self.per_word()]
    }

    /// Queues `kernel`, a kernel that reads these words, on `buffers`: tells it how many values
    /// a word holds and, for int8, binds the scales after the other buffers.
    fn launch(&self, mut kernel: WgslKernel, client: &Client, groups: (usize, usize), mut buffers: Vec<BufferBinding>) {
        kernel.values.push(("per_word", self.per_word()));
        if let Packing::Int8 { scales, .. } = &self.packing {
            kernel.values.push(("scales_at", buffers.len()));
            buffers.push(to_cube(scales.clone()).handle.clone().binding());
        }
        kernel.launch(client, groups, buffers);
    }

    /// The values widened to f32, `[rows, cols]`: a prefill's rows multiply by it with the
    /// matmul, once per call.
    pub fn widen(&self) -> Tensor<2> {
        let per_row = match &self.packing {
            Packing::F32 => return self.words.clone(),
            Packing::F16 => return widen_f16(&self.words),
            Packing::Int8 { per_row, .. } => *per_row,
        };
        let [rows, row_words] = self.words.dims();
        let words = to_cube(self.words.clone());
        let client = words.client.clone();
        let out = client.empty(rows * row_words * 4 * std::mem::size_of::<f32>());
        let values = vec![
            ("workgroup", WORKGROUP),
            ("words", rows * row_words),
            ("row_words", row_words),
            ("per_row", usize::from(per_row)),
        ];
        self.launch(
            WgslKernel { name: "widen_int8", source: include_str!("../../../shaders/widen_int8.wgsl"), values },
            &client,
            grid((rows * row_words).div_ceil(WORKGROUP)),
            vec![words.handle.clone().binding(), out.clone().binding()],
        );
        f32_tensor(&words, [rows, row_words * 4], out)
    }
}

/// Rows of a table, or of a layer's `W`, packed on the host as they come, block by block (a
/// streamed table never has to be whole on the host), then uploaded as one [`Packed`]: f16
/// pairs, or int8 quads with a scale per row.
pub struct PackedRows {
    int8: bool,
    cols: usize,
    words: Vec<f32>,
    scales: Vec<f32>,
}

impl PackedRows {
    /// Room for `rows` rows, reserved at once: grown by doubling, a chunk briefly took up to
    /// three times its size in a tab's wasm memory.
    pub fn new(int8: bool, cols: usize, rows: usize) -> Self {
        let words = Vec::with_capacity(rows * Self::row_words(int8, cols));
        Self { int8, cols, words, scales: Vec::with_capacity(if int8 { rows } else { 0 }) }
    }

    /// u32 words per row of `cols` values: two f16 or four int8 per word.
    pub fn row_words(int8: bool, cols: usize) -> usize {
        cols / if int8 { 4 } else { 2 }
    }

    /// Packs whole rows (`values.len()` a multiple of `cols`).
    pub fn push(&mut self, values: &[f32]) {
        if self.int8 {
            let (q, scales) = quantize_int8(values, values.len() / self.cols, self.cols);
            self.words.extend(q.chunks_exact(4).map(|four| word(four.iter().copied())));
            self.scales.extend(scales);
        } else {
            let half = |v: f32| u32::from(f16::from_f32(v).to_bits());
            self.words.extend(values.chunks_exact(2).map(|pair| f32::from_bits(half(pair[0]) | half(pair[1]) << 16)));
        }
    }

    /// The rows packed so far, leaving none and room for `rows` more.
    pub fn take(&mut self, rows: usize) -> Self {
        std::mem::replace(self, Self::new(self.int8, self.cols, rows))
    }

    pub fn upload(self, device: &Device) -> Packed {
        let row_words = Self::row_words(self.int8, self.cols);
        let dims = [self.words.len() / row_words, row_words];
        if self.int8 {
            Packed::int8(self.words, dims, &self.scales, true, device)
        } else {
            Packed { words: Tensor::from_data(TensorData::new(self.words, dims), device), packing: Packing::F16 }
        }
    }
}

/// Four int8 values in one word, the first in the lowest byte (`unpack4x8snorm`'s `.x`).
fn word(four: impl Iterator<Item = i8>) -> f32 {
    f32::from_bits(four.enumerate().fold(0u32, |w, (j, q)| w | u32::from(q as u8) << (8 * j)))
}

/// f16 words (two halves each) widened to f32, `[rows, words]` → `[rows, 2 · words]`; also
/// what the f16 KV cache's rows are.
pub fn widen_f16(words: &Tensor<2>) -> Tensor<2> {
    let [rows, half_cols] = words.dims();
    let words = to_cube(words.clone());
    let client = words.client.clone();
    let out = client.empty(rows * half_cols * 2 * std::mem::size_of::<f32>());
    WgslKernel {
        name: "widen_f16",
        source: include_str!("../../../shaders/widen_f16.wgsl"),
        values: vec![("workgroup", WORKGROUP), ("words", rows * half_cols)],
    }
    .launch(
        &client,
        grid((rows * half_cols).div_ceil(WORKGROUP)),
        vec![words.handle.clone().binding(), out.clone().binding()],
    );
    f32_tensor(&words, [rows, half_cols * 2], out)
}

/// `x @ tableᵀ` over a table kept in row chunks (the token table, `[vocab, width]` in pieces,
/// int8 ones scaled per row): `[rows, width]` → `[rows, Σ chunk rows]`. `None` when the step
/// has too many rows or the width is not a multiple of 4 (the kernel reads four at a time).
pub fn rows_times_table(x: &Tensor<2>, chunks: &[Packed]) -> Option<Tensor<2>> {
    let [rows, width] = x.dims();
    if rows > MAX_ROWS || width % 4 != 0 {
        return None;
    }
    let total: usize = chunks.iter().map(|c| c.dims()[0]).sum();
    let x = to_cube(x.clone());
    let client = x.client.clone();
    let out = client.empty(rows * total * std::mem::size_of::<f32>());
    let mut offset = 0;
    for chunk in chunks {
        let outputs = chunk.dims()[0];
        let table = to_cube(chunk.words.clone());
        let values = vec![
            ("workgroup", WORKGROUP),
            ("rows", rows),
            ("outputs", outputs),
            ("width_vec4s", width / 4),
            ("out_stride", total),
            ("out_offset", offset),
        ];
        chunk.launch(
            WgslKernel { name: "row_dots_table", source: include_str!("../../../shaders/row_dots_table.wgsl"), values },
            &client,
            grid(outputs.div_ceil(WORKGROUP)),
            vec![table.handle.clone().binding(), x.handle.clone().binding(), out.clone().binding()],
        );
        offset += outputs;
    }
    Some(f32_tensor(&x, [rows, total], out))
}

/// `x @ w + bias` for a layer's `w` `[inputs, outputs]`: `[rows, inputs]` → `[rows, outputs]`.
/// `None` when the step has too many rows or `outputs` is not a multiple of 4.
pub fn rows_times_weight(x: &Tensor<2>, w: &Packed, bias: &Tensor<1>) -> Option<Tensor<2>> {
    let [rows, inputs] = x.dims();
    let outputs = w.dims()[1];
    if rows > MAX_ROWS || !outputs.is_multiple_of(4) {
        return None;
    }
    let (x, words, bias) = (to_cube(x.clone()), to_cube(w.words.clone()), to_cube(bias.clone()));
    let client = x.client.clone();
    let out = client.empty(rows * outputs * std::mem::size_of::<f32>());
    let values = vec![("workgroup", WORKGROUP), ("rows", rows), ("inputs", inputs), ("output_vec4s", outputs / 4)];
    w.launch(
        WgslKernel { name: "row_dots_weight", source: include_str!("../../../shaders/row_dots_weight.wgsl"), values },
        &client,
        grid((outputs / 4).div_ceil(WORKGROUP)),
        vec![
            words.handle.clone().binding(),
            x.handle.clone().binding(),
            bias.handle.clone().binding(),
            out.clone().binding(),
        ],
    );
    Some(f32_tensor(&x, [rows, outputs], out))
}

/// The rows of `ids` from a packed (f16 or int8) token table kept in chunks of
/// `rows_per_chunk` rows: `[ids.len(), width]` f32. Each chunk's launch writes the rows it holds.
pub fn packed_table_rows(chunks: &[Packed], rows_per_chunk: usize, ids: &[u32], device: &Device) -> Tensor<2> {
    let width = chunks[0].dims()[1];
    let tokens = ids.len();
    // Ids ride as f32: exact below 2^24, and vocabularies are far smaller.
    let ids = to_cube(Tensor::<1>::from_data(
        TensorData::new(ids.iter().map(|&id| id as f32).collect::<Vec<f32>>(), [tokens]),
        device,
    ));
    let client = ids.client.clone();
    let out = client.empty(tokens * width * std::mem::size_of::<f32>());
    for (c, chunk) in chunks.iter().enumerate() {
        let table = to_cube(chunk.words.clone());
        let values = vec![
            ("workgroup", WORKGROUP),
            ("tokens", tokens),
            ("width_vec4s", width / 4),
            ("first", c * rows_per_chunk),
            ("rows", chunk.dims()[0]),
        ];
        chunk.launch(
            WgslKernel { name: "table_rows", source: include_str!("../../../shaders/table_rows.wgsl"), values },
            &client,
            grid((tokens * width / 4).div_ceil(WORKGROUP)),
            vec![table.handle.clone().binding(), ids.handle.clone().binding(), out.clone().binding()],
        );
    }
    f32_tensor(&ids, [tokens, width], out)
}
