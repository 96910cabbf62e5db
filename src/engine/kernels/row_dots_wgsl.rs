//! Decode's few rows through the linear layers and the tied head on the wgpu device: one
//! invocation per output (per 4 outputs for a layer), each weight read once for all rows, sums
//! in registers, no workgroup memory (`shaders/row_dots_*.wgsl`). burn's matmul tiles the row
//! dimension, so a one-row step pays for a whole tile and its barriers; on the CPU-backed
//! WebGPU of headless Chromium (SwiftShader) that made the head of even a tiny model cost
//! hundreds of milliseconds per token. The WGSL twin of the CPU's `row_dots`.
//!
//! Weights are f32, or f16 (`half`): two halves per u32 word, widened in the shader by
//! `unpack2x16float`, which is core WGSL, so it runs where `shader-f16` is missing (SwiftShader).
//! burn holds such a weight as an f32 tensor whose words are bit patterns, never computed on
//! by burn: only these kernels read it ([`pack_f16`]); a longer step (prefill) multiplies by
//! the weight widened to f32 for that call ([`widen_f16`]).

use burn::tensor::{Device, Tensor, TensorData};
use half::f16;

use super::{WgslKernel, f32_tensor, grid, to_cube};

/// Most rows per launch; longer steps (prefill) take the matmul.
pub const MAX_ROWS: usize = 8;
const WORKGROUP: usize = 64;

/// Rounds a row-major `[rows, cols]` f32 matrix (cols even) to f16 and packs each pair of
/// neighbours into one word: the `[rows, cols / 2]` carrier tensor the kernels read.
pub fn pack_f16(values: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    assert!(values.len() == rows * cols && cols % 2 == 0, "a [{rows}, {cols}] matrix with an even width");
    let words: Vec<f32> = values
        .chunks_exact(2)
        .map(|pair| f32::from_bits(u32::from(f16::from_f32(pair[0]).to_bits()) | u32::from(f16::from_f32(pair[1]).to_bits()) << 16))
        .collect();
    Tensor::from_data(TensorData::new(words, [rows, cols / 2]), device)
}

/// Values per word of a weight tensor.
fn per_word(half: bool) -> usize {
    if half { 2 } else { 1 }
}

/// An f16 weight's words ([`pack_f16`]) widened to f32, `[rows, cols / 2]` → `[rows, cols]`: a
/// prefill's rows multiply by it with the matmul, once per call.
pub fn widen_f16(words: &Tensor<2>) -> Tensor<2> {
    let [rows, half_cols] = words.dims();
    let words = to_cube(words.clone());
    let client = words.client.clone();
    let out = client.empty(rows * half_cols * 2 * std::mem::size_of::<f32>());
    WgslKernel { name: "widen_f16", source: include_str!("../../../shaders/widen_f16.wgsl"), values: vec![("workgroup", WORKGROUP), ("words", rows * half_cols)] }
        .launch(&client, grid((rows * half_cols).div_ceil(WORKGROUP)), vec![words.handle.clone().binding(), out.clone().binding()]);
    f32_tensor(&words, [rows, half_cols * 2], out)
}

/// `x @ tableᵀ` over a table kept in row chunks (the token table, `[vocab, width]` in pieces):
/// `[rows, width]` → `[rows, Σ chunk rows]`. `None` when the step has too many rows or the
/// width is not a multiple of 4 (the kernel reads vec4).
pub fn rows_times_table(x: &Tensor<2>, chunks: &[Tensor<2>], half: bool) -> Option<Tensor<2>> {
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
        let table = to_cube(chunk.clone());
        WgslKernel {
            name: "row_dots_table",
            source: include_str!("../../../shaders/row_dots_table.wgsl"),
            values: vec![
                ("workgroup", WORKGROUP),
                ("half", usize::from(half)),
                ("rows", rows),
                ("outputs", outputs),
                ("width_vec4s", width / 4),
                ("out_stride", total),
                ("out_offset", offset),
            ],
        }
        .launch(&client, grid(outputs.div_ceil(WORKGROUP)), vec![table.handle.clone().binding(), x.handle.clone().binding(), out.clone().binding()]);
        offset += outputs;
    }
    Some(f32_tensor(&x, [rows, total], out))
}

/// `x @ w + bias` for a layer's `w` `[inputs, outputs]` (f16: `[inputs, outputs / 2]` words):
/// `[rows, inputs]` → `[rows, outputs]`. `None` when the step has too many rows or `outputs`
/// is not a multiple of 4.
pub fn rows_times_weight(x: &Tensor<2>, w: &Tensor<2>, bias: &Tensor<1>, half: bool) -> Option<Tensor<2>> {
    let [rows, inputs] = x.dims();
    let outputs = w.dims()[1] * per_word(half);
    if rows > MAX_ROWS || outputs % 4 != 0 {
        return None;
    }
    let (x, w, bias) = (to_cube(x.clone()), to_cube(w.clone()), to_cube(bias.clone()));
    let client = x.client.clone();
    let out = client.empty(rows * outputs * std::mem::size_of::<f32>());
    WgslKernel {
        name: "row_dots_weight",
        source: include_str!("../../../shaders/row_dots_weight.wgsl"),
        values: vec![("workgroup", WORKGROUP), ("half", usize::from(half)), ("rows", rows), ("inputs", inputs), ("output_vec4s", outputs / 4)],
    }
    .launch(
        &client,
        grid((outputs / 4).div_ceil(WORKGROUP)),
        vec![w.handle.clone().binding(), x.handle.clone().binding(), bias.handle.clone().binding(), out.clone().binding()],
    );
    Some(f32_tensor(&x, [rows, outputs], out))
}

/// The rows of `ids` from an f16 token table kept in chunks of `rows_per_chunk` rows (words
/// as [`pack_f16`] makes them): `[ids.len(), width]` f32. Each chunk's launch writes the rows
/// it holds.
pub fn half_table_rows(chunks: &[Tensor<2>], rows_per_chunk: usize, ids: &[u32], device: &Device) -> Tensor<2> {
    let width = chunks[0].dims()[1] * 2;
    let tokens = ids.len();
    // Ids ride as f32: exact below 2^24, and vocabularies are far smaller.
    let ids = to_cube(Tensor::<1>::from_data(TensorData::new(ids.iter().map(|&id| id as f32).collect::<Vec<f32>>(), [tokens]), device));
    let client = ids.client.clone();
    let out = client.empty(tokens * width * std::mem::size_of::<f32>());
    for (c, chunk) in chunks.iter().enumerate() {
        let table = to_cube(chunk.clone());
        WgslKernel {
            name: "table_rows",
            source: include_str!("../../../shaders/table_rows.wgsl"),
            values: vec![
                ("workgroup", WORKGROUP),
                ("half", 1),
                ("tokens", tokens),
                ("width_vec4s", width / 4),
                ("first", c * rows_per_chunk),
                ("rows", chunk.dims()[0]),
            ],
        }
        .launch(&client, grid((tokens * width / 4).div_ceil(WORKGROUP)), vec![table.handle.clone().binding(), ids.handle.clone().binding(), out.clone().binding()]);
    }
    f32_tensor(&ids, [tokens, width], out)
}
