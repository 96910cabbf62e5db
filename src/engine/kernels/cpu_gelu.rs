//! GPT-2's tanh GELU on the CPU in one pass, shared out to the CPU team's threads. burn's
//! `gelu_approximate` (the twin, and the oracle) composes it from eight tensor ops, each a
//! full pass that allocates its result, one of them a `powf`: a visible share of a batch-8
//! gpt2 decode step, for the MLP's 8 × 3072 activations per layer. With AVX2 the tanh is
//! computed eight lanes at a time from an exp polynomial: libm's `tanhf`, one value at a time,
//! was still a visible share (the book's benchmarks chapter has both figures).

use burn::tensor::Tensor;

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` of a contiguous CPU tensor; None where the
/// twin must run.
#[cfg(not(target_arch = "wasm32"))]
pub fn gelu_tanh(x: &Tensor<2>) -> Option<Tensor<2>> {
    use burn::tensor::TensorData;
    /// Values per piece of work.
    const CHUNK: usize = 4096;

    let xf = x.clone().try_into_primitive::<burn::backend::flex::Flex>().ok()?;
    if !xf.is_contiguous() {
        return None;
    }
    let n = x.dims().iter().product();
    let input = &xf.storage::<f32>()[xf.layout().start_offset()..][..n];
    let mut out = vec![0f32; n];
    super::cpu_team::for_each_chunk(&mut out, CHUNK, |i, out| {
        let input = &input[i * CHUNK..][..out.len()];
        #[cfg(target_arch = "x86_64")]
        if super::row_dots::simd() {
            // SAFETY: the CPU has the features (just checked); the chunks are as long.
            return unsafe { avx2::gelu(input, out) };
        }
        out.iter_mut().zip(input).for_each(|(o, &v)| *o = gelu(v));
    });
    Some(Tensor::from_data(TensorData::new(out, x.dims()), &x.device()))
}

/// √(2/π), as the twin computes it.
#[cfg(not(target_arch = "wasm32"))]
const SQRT_2_OVER_PI: f32 = (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32;

/// One value, with libm's tanh.
#[cfg(not(target_arch = "wasm32"))]
fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)).tanh())
}

/// Eight lanes at a time: `tanh(u) = 1 − 2 / (1 + e^{2u})`, with `e^y = 2^n · e^r` (`r` within
/// ln2/2 of 0) and Cephes' degree-6 polynomial for `e^r` (error ~1e-7). Near `u = 0` the
/// subtraction leaves an absolute error of ~1e-7 in tanh, which the `1 + tanh` of the GELU
/// makes a relative one of the output.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Safety: the CPU has AVX2, FMA and F16C, and `out` is as long as `input`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn gelu(input: &[f32], out: &mut [f32]) {
        let full = input.len() / 8 * 8;
        let (c, cube, half, one) =
            (_mm256_set1_ps(super::SQRT_2_OVER_PI), _mm256_set1_ps(0.044715), _mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 <= full`, within both slices.
            unsafe {
                let v = _mm256_loadu_ps(input.as_ptr().add(i));
                let u = _mm256_mul_ps(c, _mm256_fmadd_ps(_mm256_mul_ps(cube, v), _mm256_mul_ps(v, v), v));
                let e = exp(_mm256_add_ps(u, u));
                let tanh = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(one, e)));
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(i),
                    _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, tanh)),
                );
            }
        }
        out[full..].iter_mut().zip(&input[full..]).for_each(|(o, &v)| *o = super::gelu(v));
    }

    /// `e^y` per lane, `y` clamped to where f32 neither overflows nor goes subnormal (the
    /// tanh is ±1 there to f32 precision).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn exp(y: __m256) -> __m256 {
        let y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            y,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        // r = y − n·ln2, with ln2 in two parts (Cody–Waite) so r keeps its low bits.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), y);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for coefficient in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5e-1] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coefficient));
        }
        let er = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0));
        // 2^n built in the exponent field.
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(er, two_n)
    }
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
        // Across the range where tanh saturates, both signs, tiny and huge values (the exp's
        // clamps), and not a multiple of the chunk nor of the eight lanes.
        let mut values: Vec<f32> = (0..10_007).map(|i| (i as f32 - 5_000.0) * 0.003).collect();
        values.extend([-1e20, -1e4, -100.0, -20.0, -1e-6, 0.0, 1e-6, 20.0, 100.0, 1e4, 1e20, -1e-30, 1e-30]);
        let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [1, values.len()]), &device);
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        let (got, want) = (read(gelu_tanh(&x).expect("a CPU tensor")), read(gelu_approximate(x)));
        assert!(
            got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs())),
            "GELU differs from the twin"
        );
    }
}
