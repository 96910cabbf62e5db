//! What an approximation costs, each measured against the exact model on the same tokens:
//! reduced precision (f16 / int8 weights, an f16 cache) and the sliding window.

pub mod precision_drift;
pub mod window_drift;
