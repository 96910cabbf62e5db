//! Decode's few rows through the linear layers and the tied head on the wgpu device: one
//! invocation per output (per 4 outputs for a layer), each weight read once for all rows, sums
//! in registers, no workgroup memory (`shaders/row_dots_*.wgsl`). burn's matmul tiles the row
//! dimension, so a one-row step pays for a whole tile and its barriers; on the CPU-backed
//! WebGPU of headless Chromium (SwiftShader) that made the head of even a tiny model cost
//! hundreds of milliseconds per token. The WGSL twin of the CPU's `row_dots`.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::tensor::{DType, Shape, Tensor};

use super::{WgslKernel, grid, to_cube};

/// Most rows per call; longer steps (prefill) take the matmul.
pub const MAX_ROWS: usize = 8;
const WORKGROUP: usize = 64;

/// `x @ tableᵀ` over a table kept in row chunks (the token table, `[vocab, width]` in pieces):
/// `[rows, width]` → `[rows, Σ chunk rows]`. `None` when the step has too many rows or the
/// width is not a multiple of 4 (the kernel reads vec4).
pub fn rows_times_table(x: &Tensor<2>, chunks: &[Tensor<2>]) -> Option<Tensor<2>> {
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
    let out = CubeTensor::new_contiguous(client, x.device.clone(), Shape::new([rows, total]), out, DType::F32);
    Some(Tensor::from_primitive::<CubeBackend>(out))
}

/// `x @ w + bias` for a layer's `w` `[inputs, outputs]`: `[rows, inputs]` → `[rows, outputs]`.
/// `None` when the step has too many rows or `outputs` is not a multiple of 4.
pub fn rows_times_weight(x: &Tensor<2>, w: &Tensor<2>, bias: &Tensor<1>) -> Option<Tensor<2>> {
    let [rows, inputs] = x.dims();
    let outputs = w.dims()[1];
    if rows > MAX_ROWS || outputs % 4 != 0 {
        return None;
    }
    let (x, w, bias) = (to_cube(x.clone()), to_cube(w.clone()), to_cube(bias.clone()));
    let client = x.client.clone();
    let out = client.empty(rows * outputs * std::mem::size_of::<f32>());
    WgslKernel {
        name: "row_dots_weight",
        source: include_str!("../../../shaders/row_dots_weight.wgsl"),
        values: vec![("workgroup", WORKGROUP), ("rows", rows), ("inputs", inputs), ("output_vec4s", outputs / 4)],
    }
    .launch(
        &client,
        grid((outputs / 4).div_ceil(WORKGROUP)),
        vec![w.handle.clone().binding(), x.handle.clone().binding(), bias.handle.clone().binding(), out.clone().binding()],
    );
    let out = CubeTensor::new_contiguous(client, x.device.clone(), Shape::new([rows, outputs]), out, DType::F32);
    Some(Tensor::from_primitive::<CubeBackend>(out))
}
