//! The attention and cache operations the model calls. Today they are burn tensor ops, which
//! run on every device (CPU, wgpu, CUDA); hand-written WGSL kernels for the wgpu device will
//! slot in here, with these tensor-op versions kept as their twins and test oracles.

use burn::tensor::{Tensor, activation::softmax};

/// `softmax(q·kᵀ·scale + bias)·v`.
///
/// q `[batch, heads, queries, head_dim]`, k and v `[batch, heads, keys, head_dim]`, bias
/// `[batch, 1, queries, keys]` (0 = visible, a large negative = masked) or `None` when every
/// key is visible. Returns `[batch, heads, queries, head_dim]`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, scale: f32) -> Tensor<4> {
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let scores = match bias {
        Some(bias) => scores + bias,
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}
