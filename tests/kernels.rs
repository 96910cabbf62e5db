//! Each WGSL kernel against its tensor-op twin, on the wgpu device, over a grid of shapes:
//! heads 1..12, head_dim 32 and 64, key counts from 1 to 1024 (non-multiples of every tile),
//! ragged (left-padded) batches, windows shorter and longer than the sequence, decode and
//! prefill query counts; the paged kernels over ragged batches of sequences whose block tables
//! interleave, block sizes 1 / 16 / 32, contexts that are not multiples of them; the row dots
//! for 1..8 rows against a layer's `W` and a chunked token table. Relative error ≤ 1e-5.

mod common;

use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use inferlab::engine::kernels::row_dots::quantize_int8;
use inferlab::engine::kernels::row_dots_wgsl::{self, Packed, PackedRows};
use inferlab::engine::kernels::{self, KernelPath, Slots};
use inferlab::engine::kv::blocks::BlockManager;
use inferlab::engine::kv::dtype::KvDtype;
use inferlab::engine::kv::mask::{KeyMeta, StepMask};
use inferlab::engine::kv::paged::{PagedKv, Segment};
use inferlab::engine::model::vocab_table::{TableRows, VocabTable};
use inferlab::engine::model::weight_dtype::WeightDtype;
use inferlab::engine::readback;
use inferlab::engine::step::Step;
use inferlab::engine::step_uploads::StepUploads;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn random<const D: usize>(shape: [usize; D], rng: &mut StdRng, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::random::<f32, _, _>(shape, Distribution::Normal(0.0, 1.0), rng), device)
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    pollster::block_on(readback::floats(t)).unwrap()
}

/// `max |a - b| / max |b|`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    common::max_abs_diff(a, b) / scale
}

/// One attention case. Row `r` of the batch has `r * 3` padding keys first; the queries are
/// the row's last `queries` tokens; with `ring`, the keys sit in rotated slot order, as in a
/// sliding cache that has wrapped.
struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    keys: usize,
    queries: usize,
    window: Option<usize>,
    ring: bool,
}

impl Case {
    fn mask(&self) -> StepMask {
        let (mut meta, mut step) = (
            KeyMeta { keys: self.keys, positions: vec![], real: vec![] },
            Step {
                batch: self.batch,
                len: self.queries,
                ids: vec![0; self.batch * self.queries],
                positions: vec![],
                real: vec![],
            },
        );
        for row in 0..self.batch {
            let pads = (row * 3).min(self.keys - self.queries);
            let mut slots: Vec<(usize, bool)> =
                (0..self.keys).map(|s| if s < pads { (0, false) } else { (s - pads, true) }).collect();
            if self.ring {
                slots.rotate_left(self.keys / 3);
            }
            meta.positions.extend(slots.iter().map(|s| s.0));
            meta.real.extend(slots.iter().map(|s| s.1));
            let last = self.keys - pads;
            step.positions.extend(last - self.queries..last);
            step.real.extend(std::iter::repeat_n(true, self.queries));
        }
        StepMask::new(&meta, &step, self.window)
    }

    fn check(&self, device: &Device, rng: &mut StdRng) {
        let (b, h, d) = (self.batch, self.heads, self.head_dim);
        let slots = self.keys + 3; // buffers longer than the filled part, as a cache's are
        let q = random([b, h, self.queries, d], rng, device);
        let k = random([b, h, slots, d], rng, device);
        let v = random([b, h, slots, d], rng, device);
        let scale = 1.0 / (d as f32).sqrt();
        let mask = self.mask();
        let ours = read(kernels::attention(q.clone(), k.clone(), v.clone(), &mask, scale, KernelPath::Wgsl));
        let twin = read(kernels::attention(q, k, v, &mask, scale, KernelPath::Twin));
        let error = relative_error(&ours, &twin);
        assert!(
            error <= 1e-5,
            "batch {b} heads {h} head_dim {d} keys {} queries {} window {:?} ring {}: relative error {error}",
            self.keys,
            self.queries,
            self.window,
            self.ring
        );
    }
}

#[test]
fn attention_kernels_match_their_twin() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    for &(heads, head_dim) in &[(1, 32), (4, 64), (12, 64), (3, 32)] {
        for &keys in &[1, 7, 64, 100, 1024] {
            for &queries in &[1, 2, 9, 33] {
                if queries > keys {
                    continue;
                }
                for &(window, ring) in &[(None, false), (Some(5), true), (Some(2000), true)] {
                    let batch = if keys >= 64 { 3 } else { 1 };
                    let case = Case { batch, heads, head_dim, keys, queries, window, ring };
                    case.check(&device, &mut rng);
                }
            }
        }
    }
}

#[test]
fn append_kernel_matches_its_twin() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(4);
    for &(heads, head_dim, capacity, len) in &[(1, 32, 8, 1), (12, 64, 1024, 9), (3, 32, 7, 20), (4, 64, 16, 5)] {
        for ring in [false, true] {
            if !ring && len > capacity {
                continue;
            }
            let base = if ring { rng.random_range(0..100) } else { capacity - len };
            let first = if ring { len - len.min(capacity) } else { 0 };
            let slots = Slots { base, ring, first };
            let cache = || {
                (
                    random([2, heads, capacity, head_dim], &mut StdRng::seed_from_u64(9), &device),
                    random([2, heads, capacity, head_dim], &mut StdRng::seed_from_u64(10), &device),
                )
            };
            let new = (
                random([2, heads, len, head_dim], &mut rng, &device),
                random([2, heads, len, head_dim], &mut rng, &device),
            );
            let (ok, ov) = kernels::append(cache(), new.clone(), slots, &StepUploads::default(), KernelPath::Wgsl);
            let (tk, tv) = kernels::append(cache(), new, slots, &StepUploads::default(), KernelPath::Twin);
            assert_eq!(read(ok), read(tk), "keys: capacity {capacity} len {len} {slots:?}");
            assert_eq!(read(ov), read(tv), "values: capacity {capacity} len {len} {slots:?}");
        }
    }
}

/// `t`'s values rounded to f16, as f32, and packed as an f16 cache holds them on wgpu (rows of
/// words of two halves, half as wide).
fn f16_pair<const D: usize>(t: &Tensor<D>) -> (Tensor<D>, Tensor<D>) {
    let (dims, device) = (t.dims(), t.device());
    let values: Vec<f32> = read(t.clone()).iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let width = dims[D - 1];
    let mut packed_dims = dims;
    packed_dims[D - 1] /= 2;
    let packed = Packed::f16(&values, values.len() / width, width, &device).words.reshape(packed_dims);
    (Tensor::from_data(TensorData::new(values, dims), &device), packed)
}

/// A ragged paged step: segments `(start, len)` whose blocks are handed out round-robin, so
/// every table jumps around the pool. With an f16 cache the kernels write and read packed
/// pools, the twins' writes take f32 pools of the rounded values, and the twins' attention
/// widens the packed pools.
fn paged_case(
    device: &Device,
    rng: &mut StdRng,
    heads: usize,
    head_dim: usize,
    block_size: usize,
    shape: &[(usize, usize)],
    kv: KvDtype,
) {
    let e = heads * head_dim;
    let contexts: Vec<usize> = shape.iter().map(|&(start, len)| start + len).collect();
    let num_blocks = contexts.iter().map(|c| c.div_ceil(block_size)).sum::<usize>() + 2;
    let mut blocks = BlockManager::new(num_blocks, block_size).unwrap();
    let mut tables = vec![vec![]; shape.len()];
    for round in 0.. {
        let mut grew = false;
        for (table, &context) in tables.iter_mut().zip(&contexts) {
            if round * block_size < context {
                blocks.prepare_write(table, round * block_size, ((round + 1) * block_size).min(context)).unwrap();
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let segments: Vec<Segment> =
        shape.iter().zip(&tables).map(|(&(start, len), table)| Segment { table: table.clone(), start, len }).collect();
    let n: usize = shape.iter().map(|s| s.1).sum();
    let positions: Vec<usize> = shape.iter().flat_map(|&(start, len)| start..start + len).collect();
    let step = Step { batch: 1, len: n, ids: vec![0; n], positions, real: vec![true; n] };
    let mut cache = PagedKv::new(1, e, num_blocks, block_size, kv, device).unwrap();
    cache.schedule(segments);
    let plan = cache.prepare(&step).unwrap();
    let slots = num_blocks * block_size;
    let seed = rng.random_range(0..1000);
    let pool = |seed| random([slots, e], &mut StdRng::seed_from_u64(seed), device);
    let (q, k, v) = (random([n, e], rng, device), random([n, e], rng, device), random([n, e], rng, device));
    let label = format!("heads {heads} head_dim {head_dim} block {block_size} segments {shape:?} {kv} cache");
    let ((wk, wv), (tk, tv)) = match kv {
        KvDtype::F32 => {
            let pools = || (pool(seed), pool(seed + 1));
            (
                kernels::paged::write(pools(), (k.clone(), v.clone()), &plan, KernelPath::Wgsl),
                kernels::paged::write(pools(), (k, v), &plan, KernelPath::Twin),
            )
        }
        KvDtype::F16 => {
            let ((k32, k16), (v32, v16)) = (f16_pair(&pool(seed)), f16_pair(&pool(seed + 1)));
            let (wk, wv) = kernels::paged::write((k16, v16), (k.clone(), v.clone()), &plan, KernelPath::Wgsl);
            let (tk, tv) = kernels::paged::write((k32, v32), (f16_pair(&k).0, f16_pair(&v).0), &plan, KernelPath::Twin);
            assert_eq!(read(kernels::kv_values(wk.clone(), e)), read(tk), "{label}: key pool");
            assert_eq!(read(kernels::kv_values(wv.clone(), e)), read(tv), "{label}: value pool");
            ((wk.clone(), wv.clone()), (wk, wv))
        }
    };
    if kv == KvDtype::F32 {
        assert_eq!(read(wk.clone()), read(tk.clone()), "{label}: key pool");
        assert_eq!(read(wv.clone()), read(tv.clone()), "{label}: value pool");
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let ours = read(kernels::paged::attention(q.clone(), wk, wv, &plan, heads, scale, KernelPath::Wgsl));
    let twin = read(kernels::paged::attention(q, tk, tv, &plan, heads, scale, KernelPath::Twin));
    let error = relative_error(&ours, &twin);
    assert!(error <= 1e-5, "{label}: relative error {error}");
}

#[test]
fn paged_kernels_match_their_twins() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    let shapes: [&[(usize, usize)]; 4] = [
        &[(0, 1)],
        &[(0, 9), (37, 1), (15, 1), (3, 20), (64, 1)],
        &[(100, 1), (31, 1), (0, 33), (129, 1)],
        &[(16, 16), (47, 2)],
    ];
    for &(heads, head_dim) in &[(2, 16), (12, 64), (3, 32)] {
        for block_size in [1, 16, 32] {
            for shape in shapes {
                paged_case(&device, &mut rng, heads, head_dim, block_size, shape, KvDtype::F32);
            }
        }
    }
}

#[test]
fn row_dots_kernels_match_the_matmul() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(9);
    for rows in [1, 3, 8] {
        // A layer: x @ W + b, W [inputs, outputs].
        for (inputs, outputs) in [(8, 4), (64, 68), (768, 260), (3072, 20)] {
            let (x, w, b) = (
                random([rows, inputs], &mut rng, &device),
                random([inputs, outputs], &mut rng, &device),
                random([outputs], &mut rng, &device),
            );
            let ours = read(
                row_dots_wgsl::rows_times_weight(&x, &Packed::plain(w.clone()), &b)
                    .expect("up to 8 rows, outputs a multiple of 4"),
            );
            let twin = read(x.matmul(w) + b.unsqueeze::<2>());
            let error = relative_error(&ours, &twin);
            assert!(error <= 1e-5, "weight {inputs}x{outputs}, {rows} rows: relative error {error}");
        }
        // The head: x @ tableᵀ over uneven row chunks, widths that are not multiples of 64.
        for (width, chunks) in [(4, vec![1]), (64, vec![400, 400, 201]), (36, vec![1000]), (768, vec![500, 17])] {
            let x = random([rows, width], &mut rng, &device);
            let parts: Vec<Tensor<2>> = chunks.iter().map(|&n| random([n, width], &mut rng, &device)).collect();
            let packed: Vec<Packed> = parts.iter().cloned().map(Packed::plain).collect();
            let ours = read(row_dots_wgsl::rows_times_table(&x, &packed).expect("up to 8 rows, width a multiple of 4"));
            let twin = read(x.matmul(Tensor::cat(parts, 0).transpose()));
            let error = relative_error(&ours, &twin);
            assert!(error <= 1e-5, "table width {width}, chunks {chunks:?}, {rows} rows: relative error {error}");
        }
    }
    // Shapes the kernels leave to the matmul.
    let x = random([9, 8], &mut rng, &device);
    let plain = |shape: [usize; 2], rng: &mut StdRng| Packed::plain(random(shape, rng, &device));
    assert!(row_dots_wgsl::rows_times_weight(&x, &plain([8, 4], &mut rng), &random([4], &mut rng, &device)).is_none());
    assert!(row_dots_wgsl::rows_times_table(&x, &[plain([5, 8], &mut rng)]).is_none());
    let odd = random([2, 6], &mut rng, &device);
    assert!(
        row_dots_wgsl::rows_times_weight(&odd, &plain([6, 6], &mut rng), &random([6], &mut rng, &device)).is_none()
    );
    assert!(row_dots_wgsl::rows_times_table(&odd, &[plain([5, 6], &mut rng)]).is_none());
}

/// f16 and int8 weights on wgpu: words of two halves, or of four int8 values with a scale per
/// output, widened by the shader. Against the matmul on the values the words stand for,
/// computed on the host (f16: rounded; int8: `q · scale` from the same quantizer as the CPU's);
/// the widening for a prefill's matmul; and the embedding lookup from a chunked table.
#[test]
fn packed_row_dots_match_the_matmul_on_their_values() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(10);
    // What a row-major [rows, cols] matrix's words hold, as f32 on the host: f16-rounded, or
    // int8 times a scale per row (`per_row`) or per column.
    let held = |half: bool, values: &[f32], rows: usize, cols: usize, per_row: bool| -> Vec<f32> {
        if half {
            return values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        }
        // Each output's line (a row, or a column) quantized as the packers do.
        let transpose = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
        };
        let (lines, len) = if per_row { (values.to_vec(), cols) } else { (transpose(values, rows, cols), rows) };
        let (q, scales) = quantize_int8(&lines, lines.len() / len, len);
        let held: Vec<f32> = q.iter().enumerate().map(|(i, &q)| f32::from(q) * scales[i / len]).collect();
        if per_row { held } else { transpose(&held, cols, rows) }
    };
    for half in [true, false] {
        let dtype = if half { "f16" } else { "int8" };
        // Widened int8 is `q / 127 · max`, the host's `q · (max / 127)`: equal to rounding.
        let widened_close = |got: Vec<f32>, want: &[f32], what: &str| {
            let error = relative_error(&got, want);
            assert!(if half { error == 0.0 } else { error <= 1e-6 }, "{dtype} {what}: widened, relative error {error}");
        };
        for rows in [1, 3, 8] {
            for (inputs, outputs) in [(8, 4), (64, 68), (768, 260)] {
                let (x, b) = (random([rows, inputs], &mut rng, &device), random([outputs], &mut rng, &device));
                let values = read(random([inputs, outputs], &mut rng, &device));
                let packed = match half {
                    true => Packed::f16(&values, inputs, outputs, &device),
                    false => Packed::int8_per_column(&values, inputs, outputs, &device),
                };
                let held = held(half, &values, inputs, outputs, false);
                widened_close(read(packed.widen()), &held, &format!("weight {inputs}x{outputs}"));
                let ours = read(
                    row_dots_wgsl::rows_times_weight(&x, &packed, &b).expect("up to 8 rows, outputs a multiple of 4"),
                );
                let twin = read(
                    x.matmul(Tensor::from_data(TensorData::new(held, [inputs, outputs]), &device)) + b.unsqueeze::<2>(),
                );
                let error = relative_error(&ours, &twin);
                assert!(error <= 1e-5, "{dtype} weight {inputs}x{outputs}, {rows} rows: relative error {error}");
            }
            for (width, chunks) in [(4, vec![1]), (64, vec![400, 400, 201]), (768, vec![500, 17])] {
                let x = random([rows, width], &mut rng, &device);
                let parts: Vec<Vec<f32>> =
                    chunks.iter().map(|&n| read(random([n, width], &mut rng, &device))).collect();
                let packed: Vec<Packed> = parts
                    .iter()
                    .zip(&chunks)
                    .map(|(v, &n)| {
                        let mut packed = PackedRows::new(!half, width, n);
                        packed.push(v);
                        packed.upload(&device)
                    })
                    .collect();
                let held: Vec<f32> =
                    parts.iter().zip(&chunks).flat_map(|(v, &n)| held(half, v, n, width, true)).collect();
                let total = chunks.iter().sum::<usize>();
                widened_close(
                    packed.iter().flat_map(|p| read(p.widen())).collect(),
                    &held,
                    &format!("table width {width}"),
                );
                let table = Tensor::<2>::from_data(TensorData::new(held, [total, width]), &device);
                let ours =
                    read(row_dots_wgsl::rows_times_table(&x, &packed).expect("up to 8 rows, width a multiple of 4"));
                let twin = read(x.matmul(table.clone().transpose()));
                let error = relative_error(&ours, &twin);
                assert!(
                    error <= 1e-5,
                    "{dtype} table width {width}, chunks {chunks:?}, {rows} rows: relative error {error}"
                );
                // The lookup: rows from every chunk, repeats, first and last.
                let last = total as u32 - 1;
                let ids = [0, last, 3.min(last), (chunks[0] as u32).min(last), 3.min(last)];
                let got = read(row_dots_wgsl::packed_table_rows(&packed, chunks[0], &ids, &device));
                let picked = Tensor::<1, Int>::from_data(
                    TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]),
                    &device,
                );
                widened_close(
                    got,
                    &read(table.select(0, picked)),
                    &format!("table rows, width {width}, chunks {chunks:?}"),
                );
            }
        }
    }
}

/// A token table streamed in blocks of rows (the browser's load) into many small chunks holds
/// what the table uploaded whole holds: the same lookups and logits in f32, f16 and int8; a
/// table whose last rows never came is refused.
#[test]
fn a_table_streamed_in_blocks_equals_it_uploaded_whole() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let (vocab, width) = (37, 64);
    let values = read(random([vocab, width], &mut rng, &device));
    let h = random([2, width], &mut rng, &device);
    let ids = [0, 36, 5, 14, 15, 5];
    for dtype in [WeightDtype::F32, WeightDtype::F16, WeightDtype::Int8] {
        let whole = VocabTable::upload(TensorData::new(values.clone(), [vocab, width]), dtype, &device);
        // 5 rows per chunk (8 chunks, the last one short), pushed in blocks of 3 rows.
        let mut rows = TableRows::with_chunk_bytes(vocab, width, 5 * width * 4, dtype, &device);
        values.chunks(3 * width).for_each(|block| rows.push(block));
        let streamed = rows.finish().unwrap();
        let error = relative_error(&read(streamed.lookup(&ids, &device)), &read(whole.lookup(&ids, &device)));
        assert!(error <= 1e-6, "{dtype} lookup: relative error {error}");
        let error = relative_error(
            &read(streamed.project(h.clone(), KernelPath::Wgsl)),
            &read(whole.project(h.clone(), KernelPath::Wgsl)),
        );
        assert!(error <= 1e-6, "{dtype} logits: relative error {error}");
        let mut short = TableRows::new(vocab, width, dtype, &device);
        short.push(&values[..(vocab - 1) * width]);
        let err = short.finish().err().expect("a table missing a row");
        assert!(err.contains("36 of its 37 rows"), "{err}");
    }
}

/// The f16 KV cache on wgpu (packed halves, only the kernels write and read them): appends
/// store exactly the rows rounded to f16; decode, prefill and paged attention over packed keys
/// and values equal the twins, which widen them first.
#[test]
fn f16_kv_kernels_match_their_twins() {
    let Some(device) = common::wgpu() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    for &(heads, head_dim, capacity, len, ring) in
        &[(1, 32, 8, 1, false), (12, 64, 100, 9, false), (3, 32, 7, 20, true)]
    {
        let slots = Slots {
            base: if ring { 5 } else { capacity - len },
            ring,
            first: if ring { len - len.min(capacity) } else { 0 },
        };
        let (old, old_packed) = f16_pair(&random([2, heads, capacity, head_dim], &mut rng, &device));
        let new = random([2, heads, len, head_dim], &mut rng, &device);
        let rounded = f16_pair(&new).0;
        let (pk, pv) = kernels::append(
            (old_packed.clone(), old_packed),
            (new.clone(), new),
            slots,
            &StepUploads::default(),
            KernelPath::Wgsl,
        );
        let want = read(
            kernels::append(
                (old.clone(), old),
                (rounded.clone(), rounded),
                slots,
                &StepUploads::default(),
                KernelPath::Twin,
            )
            .0,
        );
        assert_eq!(read(kernels::kv_values(pk, head_dim)), want, "keys: capacity {capacity} len {len} {slots:?}");
        assert_eq!(read(kernels::kv_values(pv, head_dim)), want, "values: capacity {capacity} len {len} {slots:?}");
    }
    let cases = [
        Case { batch: 3, heads: 4, head_dim: 64, keys: 100, queries: 1, window: None, ring: false },
        Case { batch: 3, heads: 4, head_dim: 64, keys: 100, queries: 33, window: None, ring: false },
        Case { batch: 1, heads: 3, head_dim: 32, keys: 64, queries: 9, window: Some(5), ring: true },
    ];
    for case in cases {
        let (b, h, d, slots) = (case.batch, case.heads, case.head_dim, case.keys + 3);
        let q = random([b, h, case.queries, d], &mut rng, &device);
        let (k, v) = (
            f16_pair(&random([b, h, slots, d], &mut rng, &device)).1,
            f16_pair(&random([b, h, slots, d], &mut rng, &device)).1,
        );
        let mask = case.mask();
        let ours = read(kernels::attention(q.clone(), k.clone(), v.clone(), &mask, 0.125, KernelPath::Wgsl));
        let twin = read(kernels::attention(q, k, v, &mask, 0.125, KernelPath::Twin));
        let error = relative_error(&ours, &twin);
        assert!(error <= 1e-5, "f16 cache, {} queries over {} keys: relative error {error}", case.queries, case.keys);
    }
    for shape in [&[(0, 9), (37, 1), (15, 1), (3, 20)][..], &[(100, 1), (0, 33)]] {
        paged_case(&device, &mut rng, 12, 64, 16, shape, KvDtype::F16);
    }
}

/// The f16 KV cache on the CPU (burn's f16 tensors): appends round the rows to f16, and the
/// CPU attention kernel, widening rows as it reads them, equals the twin, which casts.
#[test]
fn f16_kv_on_the_cpu_matches_its_twin() {
    let device = Device::flex();
    let mut rng = StdRng::seed_from_u64(12);
    let case = Case { batch: 2, heads: 3, head_dim: 16, keys: 9, queries: 3, window: None, ring: false };
    let (b, h, d) = (case.batch, case.heads, case.head_dim);
    let cache = KvDtype::F16.zeros([b, h, 12, d], &device).unwrap();
    let new = random([b, h, case.keys, d], &mut rng, &device);
    let slots = Slots { base: 0, ring: false, first: 0 };
    let (k, v) = kernels::append(
        (cache.clone(), cache),
        (new.clone(), new.clone()),
        slots,
        &StepUploads::default(),
        KernelPath::Cpu,
    );
    assert_eq!(k.dtype(), DType::F16, "the cache stays f16");
    assert_eq!(
        read(k.clone().narrow(2, 0, case.keys)),
        read(f16_pair(&new).0),
        "rows rounded to f16 as they are stored"
    );
    let q = random([b, h, case.queries, d], &mut rng, &device);
    let mask = case.mask();
    let ours = read(kernels::attention(q.clone(), k.clone(), v.clone(), &mask, 0.25, KernelPath::Cpu));
    let twin = read(kernels::attention(q, k, v, &mask, 0.25, KernelPath::Twin));
    let error = relative_error(&ours, &twin);
    assert!(error <= 1e-5, "f16 cache on the CPU: relative error {error}");
}

/// Beam search reorders cache rows (`select`) and the paged cache copies blocks (`select` and
/// `select_assign`): an f16 cache's packed words must come through them bit for bit, also
/// where a word reads as an f32 denormal (its high half zero or a tiny f16) or as zero.
#[test]
fn packed_f16_words_survive_gathers() {
    let Some(device) = common::wgpu() else { return };
    let halves = |high: f32, low: f32| {
        u32::from(half::f16::from_f32(high).to_bits()) << 16 | u32::from(half::f16::from_f32(low).to_bits())
    };
    let words = [
        halves(0.0, 1.5),
        halves(1e-7, -2.0),
        halves(-0.0, 0.25),
        halves(3.0, 0.0),
        halves(1e-5, 1e-6),
        halves(-1.0, 7.0),
        halves(0.0, 6e-8),
        halves(2.5, -1.5),
    ];
    let t = Tensor::<2>::from_data(TensorData::new(words.map(f32::from_bits).to_vec(), [4, 2]), &device);
    let bits = |t: Tensor<2>| read(t).iter().map(|w| w.to_bits()).collect::<Vec<u32>>();
    let order = [3usize, 0, 2, 1];
    let index = Tensor::<1, Int>::from_data(TensorData::new(order.map(|i| i as i64).to_vec(), [4]), &device);
    let want: Vec<u32> = order.iter().flat_map(|&r| words[r * 2..r * 2 + 2].to_vec()).collect();
    assert_eq!(bits(t.clone().select(0, index.clone())), want, "select");
    let assigned = Tensor::<2>::zeros([4, 2], &device).select_assign(
        0,
        index,
        t.clone().select(0, Tensor::<1, Int>::from_data(TensorData::new(vec![3i64, 0, 2, 1], [4]), &device)),
        burn::tensor::IndexingUpdateOp::Assign,
    );
    assert_eq!(bits(assigned), words.to_vec(), "select_assign");
}
