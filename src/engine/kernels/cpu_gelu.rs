//! GPT-2's tanh GELU on the CPU in one pass, shared out to the worker threads. burn's
//! `gelu_approximate` (the twin, and the oracle) composes it from eight tensor ops, each a
//! full pass that allocates its result, one of them a `powf`: at batch 8 that took ~6% of a
//! gpt2 decode step on this machine, for the MLP's 8 × 3072 activations per layer.

use burn::tensor::Tensor;

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` of a contiguous CPU tensor; None where the
/// twin must run.
#[cfg(not(target_arch = "wasm32"))]
pub fn gelu_tanh(x: &Tensor<2>) -> Option<Tensor<2>> {
    use burn::tensor::TensorData;
    use rayon::prelude::*;

    /// √(2/π), as the twin computes it.
    const SQRT_2_OVER_PI: f32 = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;

    let xf = x.clone().try_into_primitive::<burn::backend::flex::Flex>().ok()?;
    if !xf.is_contiguous() {
        return None;
    }
    let n = x.dims().iter().product();
    let input = &xf.storage::<f32>()[xf.layout().start_offset()..][..n];
    let mut out = vec![0f32; n];
    out.par_chunks_mut(4096).zip(input.par_chunks(4096)).for_each(|(out, input)| {
        for (o, &v) in out.iter_mut().zip(input) {
            *o = 0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)).tanh());
        }
    });
    Some(Tensor::from_data(TensorData::new(out, x.dims()), &x.device()))
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn gelu_tanh(_x: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use burn::tensor::activation::gelu_approximate;
    use burn::tensor::{Device, TensorData};

    use super::*;

    #[test]
    fn equals_the_twin() {
        let device = Device::flex();
        // Across the range where tanh saturates, both signs, and not a multiple of the chunk.
        let values: Vec<f32> = (0..10_007).map(|i| (i as f32 - 5_000.0) * 0.003).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [1, 10_007]), &device);
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        let (got, want) = (read(gelu_tanh(&x).expect("a CPU tensor")), read(gelu_approximate(x)));
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs())), "GELU differs from the twin");
    }
}
