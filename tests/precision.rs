//! Reduced precision proven, not only bounded: f16 and int8 weights and an f16 KV cache, on
//! every fixture model, on cpu and wgpu.
//!
//! - **What is held** is read off the buffers (element type and bytes), and must be exactly
//!   what the conversion promises, counted from the config: 2 bytes a weight for f16, 1 and a
//!   scale per output for int8, nothing left in f32; an f16 cache half the f32 one's bytes.
//! - **What is computed** is compared with an independent reference: the f32 engine (held to
//!   transformers in `parity.rs`) run on weights this test rounds itself (`half`'s f16, a
//!   symmetric int8 per output). The reduced model must equal it within the README's logit
//!   tolerance, and differ from transformers' f32 logits by more than that: the conversion
//!   happened and is the rounding, with no other bound to tune.

mod common;

use std::ops::ControlFlow;

use burn::tensor::{DType, Device};
use common::{Case, cases, max_abs_diff};
use half::f16;
use inferlab::engine::analysis::precision_drift::precision_drift;
use inferlab::engine::decode::generate::{GenerateOptions, generate};
use inferlab::engine::kernels::held_bytes::HeldBytes;
use inferlab::engine::kv::dtype::KvDtype;
use inferlab::engine::kv::memory::kv_bytes;
use inferlab::engine::kv::{KvCache, KvMode};
use inferlab::engine::model::gpt2::{Gpt2, Gpt2Loader, Logits};
use inferlab::engine::model::safetensors_stream::SafetensorsStream;
use inferlab::engine::model::weight_dtype::WeightDtype;
use inferlab::engine::model::weights::Gpt2Weights;
use inferlab::engine::readback;
use inferlab::engine::step::Step;
use inferlab::native::model_dir::load;

/// The logit tolerance of the fixtures' README: two float32 computations of the same numbers.
const SAME: f32 = 1e-4;

fn last_logits(model: &Gpt2, ids: &[u32]) -> Vec<f32> {
    let logits = model.forward(&Step::single(ids, 0), &mut KvCache::Stateless { window: None }, Logits::Last);
    pollster::block_on(readback::floats(logits.unwrap())).unwrap()
}

/// Weights and outputs of the layers `--dtype` converts (the four linear layers of each block,
/// `[in, out]`, and the tied token table), counted from the config.
fn converted(case: &Case) -> (u64, u64) {
    let c = &case.loaded.model.config;
    let (d, inner) = (c.n_embd as u64, c.n_inner as u64);
    let weights = c.n_layer as u64 * (d * 3 * d + d * d + d * inner + inner * d) + c.vocab_size as u64 * d;
    let outputs = c.n_layer as u64 * (3 * d + d + inner + d) + c.vocab_size as u64;
    (weights, outputs)
}

/// `case`'s model with the converted layers' weights rounded by the test itself and loaded in
/// f32: f16 rounds each value; int8 takes per output (a column of `W`, a row of the token
/// table) `scale = max |x| / 127` and `round(x / scale) · scale`.
fn rounded_reference(case: &Case, device: &Device, dtype: WeightDtype) -> Gpt2 {
    let bytes = std::fs::read(case.dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![];
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        let mut values: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let layer = ["attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
            .iter()
            .any(|s| name.ends_with(s));
        let table = name.ends_with("wte.weight");
        if layer || table {
            let [rows, cols] = [shape[0], shape[1]];
            match dtype {
                WeightDtype::F16 => values.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
                WeightDtype::Int8 => {
                    // A layer's outputs are its columns; the table's are its rows (tokens).
                    let (outputs, inputs) = if table { (rows, cols) } else { (cols, rows) };
                    let at = |o: usize, i: usize| if table { o * cols + i } else { i * cols + o };
                    for o in 0..outputs {
                        let max = (0..inputs).map(|i| values[at(o, i)].abs()).fold(0f32, f32::max);
                        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                        for i in 0..inputs {
                            let x = &mut values[at(o, i)];
                            *x = (*x / scale).round_ties_even().clamp(-127.0, 127.0) * scale;
                        }
                    }
                }
                WeightDtype::F32 => unreachable!("only reduced precisions are rounded"),
            }
        }
        tensors.push((name, shape, values));
    }
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views = raw.iter().map(|(n, s, b)| {
        (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
    });
    let rounded = safetensors::serialize(views, None).unwrap();
    let config = case.loaded.model.config.clone();
    Gpt2::new(config.clone(), Gpt2Weights::from_safetensors(&rounded, &config).unwrap(), device).unwrap()
}

/// `case`'s model with its weights converted to `dtype` as they load, the browser's way (a tab
/// cannot read a GPU buffer back synchronously): the file streamed in 64 KiB chunks, each
/// tensor handed over in blocks of rows (4 KiB here, so the token table comes in hundreds).
fn load_as(case: &Case, device: &Device, dtype: WeightDtype) -> Gpt2 {
    let config = case.loaded.model.config.clone();
    let mut stream = SafetensorsStream::new(&config).with_block_bytes(4096);
    let mut loader = Gpt2Loader::new(config, device, dtype).unwrap();
    for chunk in std::fs::read(case.dir.join("model.safetensors")).unwrap().chunks(64 << 10) {
        stream.feed(chunk, &mut |rows| loader.put_rows(rows)).unwrap();
    }
    stream.finish().unwrap();
    loader.finish().unwrap()
}

#[test]
fn reduced_weights_hold_what_they_promise() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let (weights, outputs) = converted(&case);
        let f32_held = case.loaded.model.held_weight_bytes();
        assert!(f32_held.f32 >= 4 * weights && f32_held.f16 + f32_held.int8 == 0, "{}: {f32_held:?}", case.label);
        let device = case.loaded.model.device().clone();
        let f16 = HeldBytes { f16: 2 * weights, ..HeldBytes::default() };
        let int8 = HeldBytes { int8: weights, int8_scales: 4 * outputs, ..HeldBytes::default() };
        for (dtype, expected) in [(WeightDtype::F16, f16), (WeightDtype::Int8, int8)] {
            let label = format!("{} in {dtype}", case.label);
            let converted = load(&case.dir, &device).unwrap().model.into_weight_dtype(dtype).unwrap();
            assert_eq!(converted.held_weight_bytes(), expected, "{label}: converted after loading");
            assert_eq!(load_as(&case, &device, dtype).held_weight_bytes(), expected, "{label}: converted on load");
        }
    }
}

/// f16 and int8 weights against the f32 engine on weights the test rounded itself, and against
/// transformers' f32 logits, on every prompt; converted after loading (native) and as the
/// weights stream in (the browser), which must agree to the last bits.
#[test]
fn reduced_weights_compute_exactly_the_rounded_model() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let device = case.loaded.model.device().clone();
        for dtype in [WeightDtype::F16, WeightDtype::Int8] {
            let reduced = load(&case.dir, &device).unwrap().model.into_weight_dtype(dtype).unwrap();
            let on_load = load_as(&case, &device, dtype);
            let reference = rounded_reference(&case, &device, dtype);
            for prompt in &case.golden.prompts {
                let label = format!("{} / {} in {dtype}", case.label, prompt.name);
                let ours = last_logits(&reduced, &prompt.input_ids);
                let vs_reference = max_abs_diff(&ours, &last_logits(&reference, &prompt.input_ids));
                assert!(vs_reference <= SAME, "{label}: {vs_reference} from the f32 run of the rounded weights");
                let vs_after = max_abs_diff(&last_logits(&on_load, &prompt.input_ids), &ours);
                assert!(vs_after <= 1e-5, "{label}: converted on load vs after differ by {vs_after}");
                let vs_hf = max_abs_diff(&ours, &case.golden_tensor(&prompt.last_logits.tensor));
                assert!(vs_hf > SAME, "{label}: only {vs_hf} from transformers' f32 logits: nothing was rounded?");
                if dtype == WeightDtype::F16 {
                    // The f32 (= transformers') greedy text is f16's own choice at every step.
                    let text = [prompt.input_ids.clone(), prompt.greedy.new_ids.clone()].concat();
                    let drift = pollster::block_on(precision_drift(&case.loaded.model, &reduced, &text)).unwrap();
                    assert_eq!(drift.top1_agreement, 1.0, "{label}: {drift:?}");
                    assert!(drift.max_abs_logit_diff > 0.0, "{label}: {drift:?}");
                }
            }
        }
    }
}

/// What an f16 KV cache holds is f16: every value it returns is a half (it survives a round
/// trip through `half`'s f16 unchanged), in every layer; and the first layer's keys and values,
/// computed before any attention read the cache, are exactly `half`'s nearest-even rounding
/// of the f32 cache's after the same prefill (deeper layers see the rounded attention, so
/// their inputs differ). With the half bytes below, this is the conversion itself.
#[test]
fn an_f16_kv_cache_holds_the_rounding_of_the_f32_one() {
    let round = |x: f32| f16::from_f32(x).to_f32();
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let mut model = load(&case.dir, case.loaded.model.device()).unwrap().model;
        model.set_kv_dtype(KvDtype::F16).unwrap();
        let ids = &case.prompt("long_60").input_ids;
        // [layer][K, V] values after the prefill.
        let held = |m: &Gpt2| -> Vec<[Vec<f32>; 2]> {
            let mut cache = m.cache(KvMode::Contiguous, 1, ids.len()).unwrap();
            m.forward(&Step::single(ids, 0), &mut cache, Logits::Last).unwrap();
            let KvCache::Contiguous(contiguous) = &cache else { unreachable!("a contiguous cache was made") };
            (0..m.config.n_layer)
                .map(|layer| {
                    let (k, v) = contiguous.layer(layer, m.config.head_dim());
                    [k, v].map(|t| pollster::block_on(readback::floats(t)).unwrap())
                })
                .collect()
        };
        let (half, full) = (held(&model), held(&case.loaded.model));
        for (layer, kv) in half.iter().enumerate() {
            for (name, values) in ["K", "V"].iter().zip(kv) {
                let label = format!("{}: layer {layer} {name}", case.label);
                assert_eq!(values.len(), ids.len() * model.config.n_embd, "{label}");
                assert!(values.iter().all(|&h| round(h) == h), "{label}: a value that is not a half");
            }
        }
        for (name, (half, full)) in ["K", "V"].iter().zip(half[0].iter().zip(&full[0])) {
            let wrong = half.iter().zip(full).filter(|&(&h, &x)| h != round(x)).count();
            assert_eq!(wrong, 0, "{}: layer 0 {name}: {wrong} values are not the rounding", case.label);
            assert!(half.iter().zip(full).any(|(h, x)| h != x), "{}: layer 0 {name}: nothing rounded", case.label);
        }
    }
}

/// An f16 KV cache: every cache kind allocates exactly half the f32 bytes (the figure `bench
/// decode` reports from the formula is the buffers' own), in f16 elements on the CPU and in
/// f32 words of two halves on wgpu; the rounding moves the logits, and greedy text through the
/// contiguous, sliding and paged caches stays transformers'.
#[test]
fn an_f16_kv_cache_holds_halves_and_keeps_the_text() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let wgpu = case.label.ends_with("on wgpu");
        let mut model = load(&case.dir, case.loaded.model.device()).unwrap().model;
        let f32_model = &case.loaded.model;
        model.set_kv_dtype(KvDtype::F16).unwrap();
        let tokens = 40;
        for kv in [KvMode::Contiguous, KvMode::Sliding { window: tokens }, KvMode::Paged { block_size: 8 }] {
            let label = format!("{} / kv {kv}", case.label);
            let full = f32_model.cache(kv, 1, tokens).unwrap().allocated().unwrap();
            let half = model.cache(kv, 1, tokens).unwrap().allocated().unwrap();
            assert_eq!(full.dtype, DType::F32, "{label}");
            assert_eq!(half.dtype, if wgpu { DType::F32 } else { DType::F16 }, "{label}: element type");
            assert_eq!(2 * half.bytes, full.bytes, "{label}: {half:?} vs {full:?}");
            assert_eq!(full.bytes, kv_bytes(&model.config, tokens, 1, 4), "{label}: K and V × layers × width × tokens");
        }
        for prompt in &case.golden.prompts {
            let label = format!("{} / {} with an f16 KV cache", case.label, prompt.name);
            let golden = &prompt.greedy.new_ids;
            let total = prompt.input_ids.len() + golden.len();
            for kv in [KvMode::Contiguous, KvMode::Sliding { window: total }, KvMode::Paged { block_size: 16 }] {
                let options = GenerateOptions { max_new_tokens: golden.len(), kv, ..GenerateOptions::default() };
                let out = pollster::block_on(generate(&model, &prompt.input_ids, &options, None, |_| {
                    ControlFlow::Continue(())
                }))
                .unwrap();
                assert_eq!(&out.new_ids, golden, "{label}: greedy with kv {kv}");
            }
            // Prefill, then one decode step that reads the stored (rounded) keys and values.
            let ids = &prompt.input_ids;
            let step = |m: &Gpt2| {
                let mut cache = m.cache(KvMode::Contiguous, 1, ids.len() + 1).unwrap();
                m.forward(&Step::single(ids, 0), &mut cache, Logits::Last).unwrap();
                let logits = m.forward(&Step::single(&golden[..1], ids.len()), &mut cache, Logits::Last).unwrap();
                pollster::block_on(readback::floats(logits)).unwrap()
            };
            let moved = max_abs_diff(&step(&model), &step(f32_model));
            assert!(moved > 0.0 && moved <= 1e-2, "{label}: an f16 cache moved the decode logits by {moved}");
        }
    }
}
