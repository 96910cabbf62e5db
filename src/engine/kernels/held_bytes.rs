//! Counting what weights really occupy: bytes by element type, read off the buffers and slices
//! the kernels hold (their shapes and dtypes), so a test or a report can show what `--dtype`
//! bought without trusting a formula.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The bytes a model's linear layers and token table occupy, by the element type they are held
/// in, counted from the buffers themselves (not from the config): what `--dtype` really bought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBytes {
    pub f32: u64,
    pub f16: u64,
    pub int8: u64,
    /// int8's scales (one f32 per output, or per token of a table).
    pub int8_scales: u64,
}

impl std::ops::Add for HeldBytes {
    type Output = Self;

    fn add(self, o: Self) -> Self {
        Self {
            f32: self.f32 + o.f32,
            f16: self.f16 + o.f16,
            int8: self.int8 + o.int8,
            int8_scales: self.int8_scales + o.int8_scales,
        }
    }
}

impl std::iter::Sum for HeldBytes {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// The bytes a device buffer occupies: its elements times its element type's size.
pub fn tensor_bytes<const D: usize>(t: &Tensor<D>) -> u64 {
    (t.shape().num_elements() * t.dtype().size()) as u64
}

/// The bytes a host slice occupies.
pub fn bytes_of<T>(values: &[T]) -> u64 {
    size_of_val(values) as u64
}
