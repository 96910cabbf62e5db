//! Rows against a row-major matrix on the CPU: `out[r][j] = h[r] · table[j]`, one pass over
//! the matrix's rows, shared out to the CPU team's threads (`cpu_team.rs`). Steps are made of
//! these: the output head (`wte`, 154 MB in f32: `logits[v] = wte[v] · h`) and
//! every linear layer (`x @ W` = rows of `Wᵀ · x`, with `Wᵀ` laid out once at load), each
//! reading its whole weight once per step however many rows (sequences, or speculative
//! positions) it carries.
//!
//! burn's flex device runs them through its gemm: single-threaded below 192³ multiply-adds
//! (every block layer at batch 1), and well short of the memory's bandwidth even threaded (the
//! book's benchmarks chapter has the figures). Here each weight row is read once from memory
//! and met by every input row while it sits in L1 (four input rows at a time, against two
//! weight rows from batch 4 up, three from batch 8), so a batch of 8 costs the memory traffic
//! of one row plus the arithmetic. A prompt's many rows take the same path, a piece of the
//! table at a time held in L2 while the rows sweep past it sixteen at a time: that beat the
//! gemm on prefill too, and a compact table is widened in registers rather than whole per
//! call. On x86-64 with AVX2, FMA and F16C (checked at run time) the loops are fused 8-lane
//! multiply-adds.
//!
//! Tables are f32 tensors, or compact ([`CompactTable`]): f16 (`--dtype f16`), half the bytes to
//! stream per step, or int8 with a scale per row (`--dtype int8`), a quarter; either widened to
//! f32 in registers and summed in f32. Its tensor-op twins are the matmuls in `vocab_table.rs`
//! and `gpt2.rs`, used on every other device, with the kernels off, and as its test oracle.

use burn::backend::DispatchDevice;
use burn::tensor::{Device, Tensor, TensorData};
use half::f16;
use half::slice::HalfFloatSliceExt;

use super::held_bytes::{HeldBytes, bytes_of};

/// Input rows that meet a piece of the table in one sweep: a decode batch in one, a prompt's
/// rows sixteen at a time, so that they sit in L1 while the piece sits in L2.
#[cfg(not(target_arch = "wasm32"))]
const SWEEP_ROWS: usize = 16;

/// Whether `device` is the CPU, where the kernel runs (GPUs run the twins).
pub fn runs_on(device: &Device) -> bool {
    cfg!(not(target_arch = "wasm32")) && !matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// A `[rows, k]` table held below f32 for the kernel, which reads it as a plain slice (the
/// twin gets it widened per call): f16, half the bytes of f32 per step; or int8 with one scale
/// per row, a quarter. A row is one output (a column of `W`, a token of the head), so its
/// scale multiplies the finished dot product once.
pub struct CompactTable {
    values: Compact,
    rows: usize,
    k: usize,
}

enum Compact {
    F16(Vec<f16>),
    /// Symmetric per row ([`quantize_int8`]).
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

impl CompactTable {
    /// Rounds a row-major `[rows, k]` f32 table to the nearest f16.
    pub fn f16(values: &[f32], rows: usize, k: usize) -> Self {
        assert_eq!(values.len(), rows * k, "a [{rows}, {k}] table");
        let mut half = vec![f16::ZERO; values.len()];
        half.convert_from_f32_slice(values);
        Self { values: Compact::F16(half), rows, k }
    }

    /// Quantizes a row-major `[rows, k]` f32 table to int8, one scale per row.
    pub fn int8(values: &[f32], rows: usize, k: usize) -> Self {
        let (quantized, scales) = quantize_int8(values, rows, k);
        Self { values: Compact::Int8 { values: quantized, scales }, rows, k }
    }

    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.k]
    }

    /// The bytes its values (and scales) occupy.
    pub fn held_bytes(&self) -> HeldBytes {
        match &self.values {
            Compact::F16(values) => HeldBytes { f16: bytes_of(values), ..HeldBytes::default() },
            Compact::Int8 { values, scales } => {
                HeldBytes { int8: bytes_of(values), int8_scales: bytes_of(scales), ..HeldBytes::default() }
            }
        }
    }

    /// Rows `first..` widened to f32 into `out` (a whole number of rows).
    fn widen_rows(&self, first: usize, out: &mut [f32]) {
        let at = first * self.k;
        match &self.values {
            Compact::F16(values) => values[at..][..out.len()].convert_to_f32_slice(out),
            Compact::Int8 { values, scales } => {
                for (r, (out, row)) in out.chunks_exact_mut(self.k).zip(values[at..].chunks_exact(self.k)).enumerate() {
                    let scale = scales[first + r];
                    out.iter_mut().zip(row).for_each(|(o, &q)| *o = f32::from(q) * scale);
                }
            }
        }
    }

    /// The table widened to f32: the twin's operand (a prompt's many rows), made per call.
    pub fn to_tensor(&self, device: &Device) -> Tensor<2> {
        let mut values = vec![0f32; self.rows * self.k];
        self.widen_rows(0, &mut values);
        Tensor::from_data(TensorData::new(values, [self.rows, self.k]), device)
    }

    /// Rows `ids` (all `< rows`) widened to f32, `[ids.len(), k]`: an embedding lookup.
    pub fn select(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        let mut values = vec![0f32; ids.len() * self.k];
        for (out, &id) in values.chunks_exact_mut(self.k).zip(ids) {
            self.widen_rows(id as usize, out);
        }
        Tensor::from_data(TensorData::new(values, [ids.len(), self.k]), device)
    }
}

/// A row-major `[rows, k]` f32 table quantized to int8, symmetric per row: `scale = max |row| /
/// 127`, `value = round(x / scale)` (an all-zero row gets scale 1). The CPU's and the WGSL
/// kernels' int8 weights both come from here, so they hold the very same values.
pub fn quantize_int8(values: &[f32], rows: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(values.len(), rows * k, "a [{rows}, {k}] table");
    let mut quantized = vec![0i8; values.len()];
    let scales = values
        .chunks_exact(k)
        .zip(quantized.chunks_exact_mut(k))
        .map(|(row, out)| {
            let scale = int8_scale(row.iter().fold(0f32, |m, v| m.max(v.abs())));
            out.iter_mut().zip(row).for_each(|(q, &v)| *q = to_int8(v, scale));
            scale
        })
        .collect();
    (quantized, scales)
}

/// The symmetric int8 scale of values whose largest |value| is `max` (127 steps each side; an
/// all-zero line gets 1).
pub fn int8_scale(max: f32) -> f32 {
    if max > 0.0 { max / 127.0 } else { 1.0 }
}

/// `v` in steps of `scale`, rounded (ties to even: one instruction in wasm, where `round`'s
/// ties away from zero is a library call per value, 1.5 billion of them for gpt2-xl), within
/// ±127.
pub fn to_int8(v: f32, scale: f32) -> i8 {
    (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// `h · tableᵀ`, `[m, rows]`, for `h` of any rows against a `[rows, k]` table
/// on the CPU device; None where the twin must run (another device, more rows, a strided view).
#[cfg(not(target_arch = "wasm32"))]
pub fn rows_times_table(h: &Tensor<2>, table: &Tensor<2>) -> Option<Tensor<2>> {
    let [rows, k] = table.dims();
    let tf = table.clone().try_into_primitive::<burn::backend::flex::Flex>().ok()?;
    if !tf.is_contiguous() {
        return None;
    }
    rows_times(h, &tf.storage::<f32>()[tf.layout().start_offset()..][..rows * k], None, rows, k)
}

/// [`rows_times_table`] for a compact table.
#[cfg(not(target_arch = "wasm32"))]
pub fn rows_times_compact(h: &Tensor<2>, table: &CompactTable) -> Option<Tensor<2>> {
    match &table.values {
        Compact::F16(values) => rows_times(h, values, None, table.rows, table.k),
        Compact::Int8 { values, scales } => rows_times(h, values, Some(scales), table.rows, table.k),
    }
}

/// `h · tᵀ`, each table row's dots times its scale, if any.
#[cfg(not(target_arch = "wasm32"))]
fn rows_times<E: Weight>(h: &Tensor<2>, t: &[E], scales: Option<&[f32]>, rows: usize, k: usize) -> Option<Tensor<2>> {
    use super::cpu_team;

    /// Table rows per piece of work, about.
    const ROWS_PER_PIECE: usize = 64;

    let [m, k2] = h.dims();
    if k != k2 || k == 0 || m == 0 {
        return None;
    }
    let hf = h.clone().try_into_primitive::<burn::backend::flex::Flex>().ok()?;
    if !hf.is_contiguous() {
        return None;
    }
    let x = &hf.storage::<f32>()[hf.layout().start_offset()..][..m * k];
    let pieces = (rows / ROWS_PER_PIECE).max(1);
    let per_piece = rows.div_ceil(pieces);
    // Computed table-row-major (`[rows, m]`, each piece's block contiguous), then turned.
    let mut by_row = vec![0f32; rows * m];
    cpu_team::for_each_chunk(&mut by_row, per_piece * m, |piece, block| {
        let first = piece * per_piece;
        let table = &t[first * k..][..block.len() / m * k];
        if m <= SWEEP_ROWS {
            dots(table, x, k, block);
        } else {
            // The piece's table rows stay in L2 while the input rows pass by SWEEP_ROWS at a
            // time (in L1); all of a prompt's rows at once would stream them from L3 per pair.
            let mut sums = vec![0f32; block.len() / m * SWEEP_ROWS];
            for (sweep, xs) in x.chunks(SWEEP_ROWS * k).enumerate() {
                let n = xs.len() / k;
                let sums = &mut sums[..block.len() / m * n];
                dots(table, xs, k, sums);
                for (line, sums) in block.chunks_exact_mut(m).zip(sums.chunks_exact(n)) {
                    line[sweep * SWEEP_ROWS..][..n].copy_from_slice(sums);
                }
            }
        }
        if let Some(scales) = scales {
            block
                .chunks_exact_mut(m)
                .zip(&scales[first..])
                .for_each(|(dots, scale)| dots.iter_mut().for_each(|d| *d *= scale));
        }
    });
    let out = if m == 1 {
        by_row
    } else {
        let mut out = vec![0f32; m * rows];
        cpu_team::for_each_chunk(&mut out, rows, |r, line| {
            line.iter_mut().zip(by_row.chunks_exact(m)).for_each(|(o, row)| *o = row[r]);
        });
        out
    };
    Some(Tensor::from_data(TensorData::new(out, [m, rows]), &h.device()))
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn rows_times_table(_h: &Tensor<2>, _table: &Tensor<2>) -> Option<Tensor<2>> {
    None
}

/// The browser's engine runs on WebGPU: always the twin.
#[cfg(target_arch = "wasm32")]
pub fn rows_times_compact(_h: &Tensor<2>, _table: &CompactTable) -> Option<Tensor<2>> {
    None
}

/// A table's (or an f16 KV cache's) element: f32, or f16 widened on load.
#[cfg(not(target_arch = "wasm32"))]
pub(super) trait Weight: Copy + Sync {
    fn widen(self) -> f32;

    /// Eight elements from `p` as f32 lanes. Safety: eight elements are readable at `p`,
    /// and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

#[cfg(not(target_arch = "wasm32"))]
impl Weight for f32 {
    fn widen(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's promise.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Weight for i8 {
    fn widen(self) -> f32 {
        f32::from(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const i8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise: 8 bytes readable, AVX2 present.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Weight for f16 {
    fn widen(self) -> f32 {
        self.to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise: 16 bytes readable, F16C present.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// `out[j * m + r] = table[j] · x[r]` for the `table` rows given (`m = x.len() / k`).
#[cfg(not(target_arch = "wasm32"))]
fn dots<E: Weight>(table: &[E], x: &[f32], k: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return dots_by::<E, avx2::Avx2>(table, x, k, out);
    }
    dots_by::<E, portable::Portable>(table, x, k, out)
}

/// One dot product `w · x` (attention's scores), the same way.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn dot<E: Weight>(w: &[E], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        return avx2::Avx2::dots::<E, 1, 1>([w], [x])[0][0];
    }
    portable::Portable::dots::<E, 1, 1>([w], [x])[0][0]
}

/// `out += p · v` (attention's weighted sum of value rows), `v` widened as it is read.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn add_scaled<E: Weight>(out: &mut [f32], p: f32, v: &[E]) {
    assert_eq!(out.len(), v.len(), "a value row as wide as the output");
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has the features (just checked); the lengths are equal.
        return unsafe { avx2::add_scaled(out, p, v) };
    }
    out.iter_mut().zip(v).for_each(|(o, v)| *o += p * v.widen());
}

/// Whether the CPU has AVX2, FMA and F16C (the standard library caches the answers).
#[cfg(target_arch = "x86_64")]
pub(super) fn simd() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("fma") && has!("f16c")
}

/// Dot products of `T` table rows with `N` rows of `x` at once, `[t][n]`.
#[cfg(not(target_arch = "wasm32"))]
trait Group {
    fn dots<E: Weight, const T: usize, const N: usize>(ws: [&[E]; T], xs: [&[f32]; N]) -> [[f32; N]; T];
}

/// Table rows two at a time meet the rows of `x` four at a time (then one by one): a 2×4
/// block of sums in registers, fed by two table loads and four input loads per eight lanes.
/// One table row against eight inputs took nine loads for eight multiply-adds, so at batch 8
/// the load ports, not the multipliers, set the pace.
#[cfg(not(target_arch = "wasm32"))]
fn dots_by<E: Weight, G: Group>(table: &[E], x: &[f32], k: usize, out: &mut [f32]) {
    let m = x.len() / k;
    // Below four rows the table is read from memory faster one row at a time: two rows at
    // once made the head slower at batch 1. From eight rows up the arithmetic sets the pace:
    // three table rows against four inputs (twelve sums, seven loads) keep more multiply-adds
    // per load than two.
    let blocked = match m {
        8.. => in_blocks::<E, G, 3>(table, x, k, out),
        4.. => in_blocks::<E, G, 2>(table, x, k, out),
        _ => 0,
    };
    in_blocks::<E, G, 1>(&table[blocked * k..], x, k, &mut out[blocked * m..]);
}

/// As many whole blocks of `T` table rows as there are, each against every row of `x`
/// (`out` is `[rows, m]`); returns the table rows done.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn in_blocks<E: Weight, G: Group, const T: usize>(table: &[E], x: &[f32], k: usize, out: &mut [f32]) -> usize {
    let m = x.len() / k;
    let blocks = table.len() / (T * k);
    for (ws, o) in table.chunks_exact(T * k).zip(out.chunks_exact_mut(T * m)) {
        let ws: [&[E]; T] = std::array::from_fn(|t| &ws[t * k..][..k]);
        let r = in_groups::<E, G, T, 4>(ws, x, 0, o);
        in_groups::<E, G, T, 1>(ws, x, r, o);
    }
    blocks * T
}

/// Rows `first..` of `x` in as many whole groups of `N` as there are, against the table rows
/// `ws`, into `out` (`[T, m]`); returns the rows of `x` done.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn in_groups<E: Weight, G: Group, const T: usize, const N: usize>(
    ws: [&[E]; T],
    x: &[f32],
    first: usize,
    out: &mut [f32],
) -> usize {
    let k = ws[0].len();
    let m = x.len() / k;
    let groups = (m - first) / N;
    for r in (first..first + groups * N).step_by(N) {
        let sums = G::dots::<E, T, N>(ws, std::array::from_fn(|n| &x[(r + n) * k..][..k]));
        for (t, sums) in sums.iter().enumerate() {
            out[t * m + r..][..N].copy_from_slice(sums);
        }
    }
    first + groups * N
}

/// Plain loops for CPUs without AVX2 and other architectures: eight running sums per row.
#[cfg(not(target_arch = "wasm32"))]
mod portable {
    use super::Weight;

    pub struct Portable;

    impl super::Group for Portable {
        fn dots<E: Weight, const T: usize, const N: usize>(ws: [&[E]; T], xs: [&[f32]; N]) -> [[f32; N]; T] {
            ws.map(|w| xs.map(|x| dot(w, x)))
        }
    }

    fn dot<E: Weight>(a: &[E], b: &[f32]) -> f32 {
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x.widen() * y).sum();
        let mut sums = [0f32; 8];
        for (x, y) in a8.zip(b8) {
            for lane in 0..8 {
                sums[lane] += x[lane].widen() * y[lane];
            }
        }
        sums.iter().sum::<f32>() + tail
    }
}

/// AVX2 + FMA: each (table row, input row) pair's sums in 8-lane registers, fused
/// multiply-adds; a 2×4 block keeps eight multiply-adds in flight, which hides their latency.
/// One row alone (batch 1) keeps four running sums: with one, each multiply-add waited on the
/// last (4 cycles per 8 weights), which held int8 and f16 weights well below the memory's
/// bandwidth; four made batch-1 decode faster with both (see the book's benchmarks; f32 waits on
/// memory either way). Written with the intrinsics because the dev profile (opt-level 1, for
/// quick rebuilds) leaves the portable loops unvectorized.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Weight;

    /// Used only where `dots` saw that the CPU has AVX2, FMA and F16C.
    pub struct Avx2;

    impl super::Group for Avx2 {
        fn dots<E: Weight, const T: usize, const N: usize>(ws: [&[E]; T], xs: [&[f32]; N]) -> [[f32; N]; T] {
            let k = ws[0].len();
            assert!(ws.iter().all(|w| w.len() == k) && xs.iter().all(|x| x.len() == k), "rows as long as the table's");
            // SAFETY: `Avx2` is used only once the CPU is known to have the features; all
            // rows are `k` long, which is all `dots` reads of them.
            unsafe {
                // Four running sums where one pair alone would chain every multiply-add.
                if T * N == 1 { dots::<E, T, N, 4>(ws, xs) } else { dots::<E, T, N, 1>(ws, xs) }
            }
        }
    }

    /// `out += p · v` eight lanes at a time. Safety: the CPU has AVX2, FMA and F16C, and
    /// `v` is as long as `out`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn add_scaled<E: Weight>(out: &mut [f32], p: f32, v: &[E]) {
        let full = out.len() / 8 * 8;
        let scale = _mm256_set1_ps(p);
        for i in (0..full).step_by(8) {
            // SAFETY: `i + 8 <= full`, within both slices.
            unsafe {
                let o = out.as_mut_ptr().add(i);
                _mm256_storeu_ps(o, _mm256_fmadd_ps(scale, E::load8(v.as_ptr().add(i)), _mm256_loadu_ps(o)));
            }
        }
        out[full..].iter_mut().zip(&v[full..]).for_each(|(o, v)| *o += p * v.widen());
    }

    /// Bytes ahead of the sums that are fetched into L1 (a few table rows): with the hardware
    /// prefetchers alone, 8 rows against the head took about twice as long.
    const PREFETCH_BYTES: usize = 8192;

    /// `U` running sums per pair, over alternate eights. Safety: every row of `ws` and `xs` is
    /// as long as the first of `ws`.
    #[target_feature(enable = "avx2,fma,f16c")]
    // Index loops, not iterators: each would be a closure, which does not share this
    // function's target features, so every load in it would become a call.
    #[allow(clippy::needless_range_loop)]
    unsafe fn dots<E: Weight, const T: usize, const N: usize, const U: usize>(
        ws: [&[E]; T],
        xs: [&[f32]; N],
    ) -> [[f32; N]; T] {
        let len = ws[0].len();
        let (full, eights) = (len / (8 * U) * (8 * U), len / 8 * 8);
        let (tables, rows) = (ws.map(|w| w.as_ptr()), xs.map(|x| x.as_ptr()));
        // Elements of a table row per 64-byte line: one prefetch per line, as a prefetch
        // takes a load slot.
        let per_line = 64 / std::mem::size_of::<E>();
        let mut sums = [[[_mm256_setzero_ps(); U]; N]; T];
        let mut i = 0;
        while i < eights {
            // `U` eights at a time while they last, then one.
            let ahead = if i < full { U } else { 1 };
            for u in 0..ahead {
                let at = i + 8 * u;
                // SAFETY: `at + 8 <= eights`, within every row.
                unsafe {
                    if at % per_line == 0 {
                        for t in 0..T {
                            _mm_prefetch::<_MM_HINT_T0>(tables[t].add(at).cast::<i8>().wrapping_add(PREFETCH_BYTES));
                        }
                    }
                    // A loop, not `map`: a closure would not share this function's target
                    // features, so the loads would become calls.
                    let mut wv = [_mm256_setzero_ps(); T];
                    for t in 0..T {
                        wv[t] = E::load8(tables[t].add(at));
                    }
                    for n in 0..N {
                        let xv = _mm256_loadu_ps(rows[n].add(at));
                        for t in 0..T {
                            sums[t][n][u] = _mm256_fmadd_ps(wv[t], xv, sums[t][n][u]);
                        }
                    }
                }
            }
            i += 8 * ahead;
        }
        // Summed with loops, not closures: a closure reading `sums` kept them in memory,
        // stored back on every step of the loop (opt-level 1, dev), and a call per dot
        // product (50,257 at the head) was a visible share of a batch-1 step.
        let mut dots = [[0f32; N]; T];
        for t in 0..T {
            for n in 0..N {
                let mut sum = sums[t][n][0];
                for u in 1..U {
                    sum = _mm256_add_ps(sum, sums[t][n][u]);
                }
                let mut l = [0f32; 8];
                // SAFETY: `l` has room for the eight floats stored.
                unsafe { _mm256_storeu_ps(l.as_mut_ptr(), sum) };
                dots[t][n] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
                for i in eights..len {
                    dots[t][n] += ws[t][i].widen() * xs[n][i];
                }
            }
        }
        dots
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn rows_equal_the_twin() {
        let device = Device::flex();
        // Not a multiple of the task size nor of 8: every remainder path runs.
        let (rows, k) = (1037, 53);
        let table = Tensor::<2>::from_data(
            TensorData::new((0..rows * k).map(|i| (i as f32 * 0.61).cos()).collect::<Vec<f32>>(), [rows, k]),
            &device,
        );
        let read = |t: Tensor<2>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4);
        // One row, a group of four, four and three ones, three fours and one, one sweep's
        // worth, a prompt's in sweeps with a part-full last one (table rows in pairs from four
        // rows up, in threes from eight; 1037 rows leave some for the single-row blocks).
        for m in [1, 4, 7, 13, SWEEP_ROWS, 2 * SWEEP_ROWS + 5] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.05).sin() - 0.3).collect();
            let h = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
            let want = read(h.clone().matmul(table.clone().transpose()));
            assert!(close(&read(rows_times_table(&h, &table).expect("flex rows")), &want), "{m} rows");
            // The plain loops, which this machine's AVX2 would otherwise skip (`[rows, m]` order).
            let mut by_row = vec![0f32; rows * m];
            dots_by::<f32, portable::Portable>(&read(table.clone()), &x, k, &mut by_row);
            let turned: Vec<f32> = (0..m).flat_map(|r| by_row.chunks_exact(m).map(move |row| row[r])).collect();
            assert!(close(&turned, &want), "{m} rows, portable");
            // Compact tables: the same as the matmul with the table widened back, both ways.
            for compact in
                [CompactTable::f16(&read(table.clone()), rows, k), CompactTable::int8(&read(table.clone()), rows, k)]
            {
                let want = read(h.clone().matmul(compact.to_tensor(&device).transpose()));
                assert!(close(&read(rows_times_compact(&h, &compact).expect("flex rows")), &want), "{m} rows, compact");
                match &compact.values {
                    Compact::F16(values) => dots_by::<f16, portable::Portable>(values, &x, k, &mut by_row),
                    Compact::Int8 { values, scales } => {
                        dots_by::<i8, portable::Portable>(values, &x, k, &mut by_row);
                        by_row
                            .chunks_exact_mut(m)
                            .zip(scales)
                            .for_each(|(dots, s)| dots.iter_mut().for_each(|d| *d *= s));
                    }
                }
                let turned: Vec<f32> = (0..m).flat_map(|r| by_row.chunks_exact(m).map(move |row| row[r])).collect();
                assert!(close(&turned, &want), "{m} rows, compact, portable");
            }
        }
        let values = read(table.clone());
        // int8 keeps every value within half a step of its row's scale.
        let int8 = CompactTable::int8(&values, rows, k);
        let widened = read(int8.to_tensor(&device));
        for (row, (got, want)) in widened.chunks_exact(k).zip(values.chunks_exact(k)).enumerate() {
            let step = want.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() <= step * 0.5 + 1e-7),
                "row {row} off by more than half a step"
            );
        }
        for compact in [CompactTable::f16(&values, rows, k), int8] {
            let picked = read(compact.select(&[5, 0, 5], &device));
            assert_eq!(&picked[..k], &read(compact.to_tensor(&device).slice([5..6, 0..k]))[..]);
            assert_eq!(picked[..k], picked[2 * k..]);
        }
        // A transposed view: the twin's job.
        assert!(rows_times_table(&Tensor::<2>::ones([1, rows], &device), &table.clone().transpose()).is_none());
    }
}
