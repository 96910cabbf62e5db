//! Parity with Hugging Face transformers on every fixture model, on the CPU device and on
//! wgpu: logits, greedy decoding through every KV mode, left-padded batches, EOS stops,
//! teacher-forced log-probs and the KV cache contents.

mod common;

use std::ops::ControlFlow;

use burn::tensor::Device;
use burn::tensor::activation::log_softmax;
use common::{Case, cases, check_row, max_abs_diff, unpad};
use inferlab::engine::analysis::precision_drift::precision_drift;
use inferlab::engine::analysis::window_drift::window_drift;
use inferlab::engine::decode::generate::{GenerateOptions, StopReason, generate, generate_batch_greedy};
use inferlab::engine::kv::dtype::KvDtype;
use inferlab::engine::kv::{KvCache, KvMode};
use inferlab::engine::model::gpt2::{Gpt2, Gpt2Loader, Logits};
use inferlab::engine::model::safetensors_stream::SafetensorsStream;
use inferlab::engine::model::weight_dtype::WeightDtype;
use inferlab::engine::readback;
use inferlab::engine::step::Step;
use inferlab::native::model_dir::load;

/// Logits `[len, vocab]` of one uncached forward over `ids`, on the host.
fn all_logits(case: &Case, ids: &[u32]) -> Vec<Vec<f32>> {
    let model = &case.loaded.model;
    let mut cache = KvCache::Stateless { window: None };
    let logits = model.forward(&Step::single(ids, 0), &mut cache, Logits::All).expect("forward");
    let values = pollster::block_on(readback::floats(logits)).expect("read logits");
    values.chunks(model.config.vocab_size).map(<[f32]>::to_vec).collect()
}

fn greedy(case: &Case, prompt: &[u32], max_new_tokens: usize, kv: KvMode, eos: &[u32]) -> (Vec<u32>, StopReason) {
    let options = GenerateOptions { max_new_tokens, kv, eos_token_ids: eos.to_vec(), ..GenerateOptions::default() };
    let out = pollster::block_on(generate(&case.loaded.model, prompt, &options, None, |_| ControlFlow::Continue(())))
        .unwrap_or_else(|e| panic!("{}: {e}", case.label));
    (out.new_ids, out.stop_reason)
}

#[test]
fn logits_match_transformers() {
    for case in cases() {
        for prompt in &case.golden.prompts {
            let label = format!("{} / {}", case.label, prompt.name);
            let rows = all_logits(&case, &prompt.input_ids);
            assert_eq!(rows.len(), prompt.positions.len());
            for (t, (row, golden)) in rows.iter().zip(&prompt.positions).enumerate() {
                check_row(&format!("{label} position {t}"), row, golden);
            }
            let last = rows.last().expect("a prompt has tokens");
            let diff = max_abs_diff(last, &case.golden_tensor(&prompt.last_logits.tensor));
            assert!(diff <= 1e-4, "{label}: last-position logits differ by {diff}");
            let ours: Vec<u32> = common::top5(last).into_iter().map(|(id, _)| id).collect();
            assert_eq!(ours[0], prompt.last_logits.top5_ids[0], "{label}: argmax");
            if let Some(all) = &prompt.all_logits {
                let reference = case.golden_tensor(&all.tensor);
                let diff = max_abs_diff(&rows.concat(), &reference);
                assert!(diff <= 1e-4, "{label}: all logits differ by {diff}");
            }
        }
    }
}

#[test]
fn cached_prefill_then_decode_gives_the_same_logits() {
    for case in cases() {
        let prompt = &case.golden.prompts.iter().max_by_key(|p| p.input_ids.len()).expect("prompts").input_ids;
        let reference = all_logits(&case, prompt);
        let model = &case.loaded.model;
        let mut cache = model.cache(KvMode::Contiguous, 1, prompt.len()).unwrap();
        // Prefill half, then one token at a time: each step's logits equal the uncached ones.
        let half = prompt.len() / 2;
        model.forward(&Step::single(&prompt[..half], 0), &mut cache, Logits::Last).unwrap();
        for t in half..prompt.len() {
            let logits = model.forward(&Step::single(&prompt[t..t + 1], t), &mut cache, Logits::Last).unwrap();
            let row = pollster::block_on(readback::floats(logits)).unwrap();
            let diff = max_abs_diff(&row, &reference[t]);
            assert!(diff <= 1e-4, "{}: decode step {t} differs from the uncached forward by {diff}", case.label);
        }
    }
}

/// The paged cache (block sizes 1, 16, 32: contexts that are and are not multiples of them)
/// against transformers' logits: a prefill of half the prompt, then one token at a time.
#[test]
fn paged_cache_matches_transformers_logits() {
    for case in cases() {
        let model = &case.loaded.model;
        let vocab = model.config.vocab_size;
        for prompt in &case.golden.prompts {
            let ids = &prompt.input_ids;
            for block_size in [1, 16, 32] {
                let label = format!("{} / {} / paged:{block_size}", case.label, prompt.name);
                let mut cache = model.cache(KvMode::Paged { block_size }, 1, ids.len()).unwrap();
                let half = ids.len().div_ceil(2);
                let logits = model.forward(&Step::single(&ids[..half], 0), &mut cache, Logits::All).unwrap();
                let mut rows: Vec<Vec<f32>> =
                    pollster::block_on(readback::floats(logits)).unwrap().chunks(vocab).map(<[f32]>::to_vec).collect();
                for t in half..ids.len() {
                    let logits = model.forward(&Step::single(&ids[t..t + 1], t), &mut cache, Logits::Last).unwrap();
                    rows.push(pollster::block_on(readback::floats(logits)).unwrap());
                }
                for (t, (row, golden)) in rows.iter().zip(&prompt.positions).enumerate() {
                    check_row(&format!("{label} position {t}"), row, golden);
                }
                let diff = max_abs_diff(rows.last().unwrap(), &case.golden_tensor(&prompt.last_logits.tensor));
                assert!(diff <= 1e-4, "{label}: last-position logits differ by {diff}");
            }
        }
    }
}

#[test]
fn greedy_matches_in_every_kv_mode() {
    for case in cases() {
        for prompt in &case.golden.prompts {
            let label = format!("{} / {}", case.label, prompt.name);
            let golden = &prompt.greedy.new_ids;
            assert_eq!(&prompt.greedy_no_cache.new_ids, golden, "{label}: the goldens disagree");
            let total = prompt.input_ids.len() + golden.len();
            let modes = [
                KvMode::Contiguous,
                KvMode::None,
                KvMode::Sliding { window: total },
                KvMode::Sliding { window: total + 7 },
                KvMode::Paged { block_size: 1 },
                KvMode::Paged { block_size: 16 },
            ];
            for kv in modes {
                let (ids, reason) = greedy(&case, &prompt.input_ids, golden.len(), kv, &[]);
                assert_eq!(&ids, golden, "{label}: greedy with kv {kv}");
                assert_eq!(reason, StopReason::MaxNewTokens);
            }
        }
    }
}

#[test]
fn left_padded_batch_matches() {
    for case in cases() {
        let batched = &case.golden.batched_greedy;
        let prompts: Vec<Vec<u32>> = batched.prompts.iter().map(|name| case.prompt(name).input_ids.clone()).collect();
        // Our padding reproduces the reference inputs exactly.
        let step = Step::left_padded(&prompts, batched.pad_token_id);
        assert_eq!(step.ids, batched.input_ids.concat(), "{}: padded ids", case.label);
        let mask: Vec<bool> = batched.attention_mask.concat().into_iter().map(|m| m == 1).collect();
        assert_eq!(step.real, mask, "{}: attention mask", case.label);
        assert_eq!(step.positions, batched.prefill_position_ids.concat(), "{}: positions", case.label);

        let out = pollster::block_on(generate_batch_greedy(
            &case.loaded.model,
            &prompts,
            batched.max_new_tokens,
            batched.pad_token_id,
            &[batched.pad_token_id],
        ))
        .unwrap();
        assert_eq!(out.new_ids, batched.new_ids, "{}: batched greedy", case.label);
        assert_eq!(out.step_ms.len(), batched.max_new_tokens);
    }
}

#[test]
fn eos_stops_generation() {
    for case in cases() {
        let eos = &case.golden.eos_stop;
        let prompt = &case.prompt(&eos.prompt).input_ids;
        for stop in [&eos.eos_a, &eos.eos_b] {
            let (ids, reason) =
                greedy(&case, prompt, stop.greedy.max_new_tokens, KvMode::Contiguous, &[stop.eos_token_id]);
            assert_eq!(ids, stop.greedy.new_ids, "{}: eos {}", case.label, stop.eos_token_id);
            let expected =
                if ids.last() == Some(&stop.eos_token_id) { StopReason::Eos } else { StopReason::MaxNewTokens };
            assert_eq!(reason, expected);
        }
        let batched = &eos.batched_eos_a;
        let prompts = unpad(&batched.input_ids, &batched.attention_mask);
        let max_new = batched.new_ids[0].len();
        let out = pollster::block_on(generate_batch_greedy(
            &case.loaded.model,
            &prompts,
            max_new,
            50256,
            &[batched.eos_token_id],
        ))
        .unwrap();
        assert_eq!(out.new_ids, batched.new_ids, "{}: batched eos", case.label);
    }
}

#[test]
fn teacher_forced_log_probs_match() {
    for case in cases() {
        let tf = &case.golden.teacher_forced;
        let ids = [tf.prompt_ids.clone(), tf.continuation_ids.clone()].concat();
        let model = &case.loaded.model;
        let logits =
            model.forward(&Step::single(&ids, 0), &mut KvCache::Stateless { window: None }, Logits::All).unwrap();
        let logprobs = pollster::block_on(readback::floats(log_softmax(logits, 2))).unwrap();
        let vocab = model.config.vocab_size;
        for (j, (&token, &reference)) in tf.continuation_ids.iter().zip(&tf.token_logprobs).enumerate() {
            let t = tf.prompt_ids.len() + j - 1;
            let ours = f64::from(logprobs[t * vocab + token as usize]);
            assert!((ours - reference).abs() <= 1e-4, "{}: log-prob {j}: {ours} vs {reference}", case.label);
        }
    }
}

#[test]
fn kv_cache_holds_what_transformers_caches() {
    for case in cases() {
        let pkv = &case.golden.past_key_values;
        let model = &case.loaded.model;
        let mut cache = model.cache(KvMode::Contiguous, 1, 64).unwrap();
        model.forward(&Step::single(&pkv.input_ids, 0), &mut cache, Logits::Last).unwrap();
        let KvCache::Contiguous(contiguous) = &cache else { unreachable!("a contiguous cache was made") };
        for (layer, golden) in pkv.layers.iter().enumerate() {
            let (k, v) = contiguous.layer(layer, model.config.head_dim());
            assert_eq!(k.dims().to_vec(), golden.key_shape, "{}: layer {layer} key shape", case.label);
            for (name, t, sum, l2) in
                [("key", k, golden.key_sum, golden.key_l2), ("value", v, golden.value_sum, golden.value_l2)]
            {
                let values = pollster::block_on(readback::floats(t)).unwrap();
                let ours_sum: f64 = values.iter().map(|&x| f64::from(x)).sum();
                let ours_l2 = values.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
                assert!((ours_sum - sum).abs() <= 1e-3, "{}: layer {layer} {name} sum {ours_sum} vs {sum}", case.label);
                assert!(
                    ((ours_l2 - l2) / l2).abs() <= 1e-5,
                    "{}: layer {layer} {name} l2 {ours_l2} vs {l2}",
                    case.label
                );
            }
        }
    }
}

#[test]
fn sliding_window_equals_windowed_recompute() {
    // No golden exists for windows shorter than the text; the reference is the whole sequence
    // recomputed under the same window mask. The ring must wrap several times, and prefill
    // chunks longer than the window must not clobber keys their own queries need.
    for case in cases() {
        let model = &case.loaded.model;
        let prompt = &case.golden.prompts.iter().max_by_key(|p| p.input_ids.len()).expect("prompts").input_ids;
        for window in [1, 3, 8, 17] {
            let mut cache = model.cache(KvMode::Sliding { window }, 1, prompt.len()).unwrap();
            let mut fed = 0;
            for chunk in [20, 1, 1, 9, 1, 1, 1].into_iter().chain(std::iter::repeat(1)) {
                if fed >= prompt.len() {
                    break;
                }
                let end = (fed + chunk).min(prompt.len());
                let logits = model.forward(&Step::single(&prompt[fed..end], fed), &mut cache, Logits::All).unwrap();
                let ours = pollster::block_on(readback::floats(logits)).unwrap();
                let mut reference_cache = KvCache::Stateless { window: Some(window) };
                let reference =
                    model.forward(&Step::single(&prompt[..end], 0), &mut reference_cache, Logits::All).unwrap();
                let vocab = model.config.vocab_size;
                let reference = pollster::block_on(readback::floats(reference)).unwrap();
                let diff = max_abs_diff(&ours, &reference[fed * vocab..]);
                assert!(diff <= 1e-4, "{}: window {window}, tokens {fed}..{end} differ by {diff}", case.label);
                fed = end;
            }
        }
    }
}

#[test]
fn window_drift_is_zero_until_the_ring_wraps() {
    // The KV page's sliding-window view: a window that holds the whole text changes nothing
    // (and the full cache's tokens are transformers' greedy ones); a short window drifts.
    for case in cases() {
        let prompt = case.golden.prompts.iter().max_by_key(|p| p.input_ids.len()).expect("prompts");
        let greedy = &prompt.greedy;
        let n = greedy.new_ids.len();
        let model = &case.loaded.model;
        let wide = pollster::block_on(window_drift(model, &prompt.input_ids, n, prompt.input_ids.len() + n, |_| {
            ControlFlow::Continue(())
        }))
        .unwrap();
        assert_eq!(wide.iter().map(|s| s.token).collect::<Vec<_>>(), greedy.new_ids, "{}", case.label);
        assert!(wide.iter().all(|s| s.max_abs_diff <= 1e-4 && s.same_top1 && s.evicted.is_none()), "{}", case.label);

        let window = 4;
        let narrow =
            pollster::block_on(window_drift(model, &prompt.input_ids, n, window, |_| ControlFlow::Continue(())))
                .unwrap();
        assert_eq!(
            narrow.iter().map(|s| s.token).collect::<Vec<_>>(),
            greedy.new_ids,
            "the full cache leads: {}",
            case.label
        );
        for s in &narrow {
            assert_eq!((s.slot, s.evicted), (s.position % window, s.position.checked_sub(window)));
            if s.position < window {
                assert!(
                    s.max_abs_diff <= 1e-4,
                    "{}: no eviction yet at {}, diff {}",
                    case.label,
                    s.position,
                    s.max_abs_diff
                );
            }
        }
        assert!(narrow.iter().any(|s| s.max_abs_diff > 1e-2), "{}: a 4-slot window must change the logits", case.label);
    }
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

/// f16 weights (`--dtype f16`: the CPU's row dots, and wgpu's WGSL row dots on words of two
/// halves) against transformers' f32 logits, and the f32 model's greedy text scored
/// teacher-forced by both: the figures `bench decode --dtype f16` prints, here on every
/// fixture model and prompt. On wgpu the browser's way too: weights rounded as they load
/// (`Gpt2Loader`) must give the very same logits as a loaded model rounded afterwards.
#[test]
fn f16_weights_stay_close_to_transformers() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let device = case.loaded.model.device().clone();
        let f16 = load(&case.dir, &device).unwrap().model.into_weight_dtype(WeightDtype::F16).unwrap();
        let on_load = load_as(&case, &device, WeightDtype::F16);
        for prompt in &case.golden.prompts {
            let label = format!("{} / {} in f16", case.label, prompt.name);
            let mut cache = KvCache::Stateless { window: None };
            let logits = f16.forward(&Step::single(&prompt.input_ids, 0), &mut cache, Logits::Last).unwrap();
            let last = pollster::block_on(readback::floats(logits)).unwrap();
            let logits = on_load
                .forward(&Step::single(&prompt.input_ids, 0), &mut KvCache::Stateless { window: None }, Logits::Last)
                .unwrap();
            let vs_after = max_abs_diff(&pollster::block_on(readback::floats(logits)).unwrap(), &last);
            assert!(vs_after <= 1e-5, "{label}: rounded on load vs after differ by {vs_after}");
            let diff = max_abs_diff(&last, &case.golden_tensor(&prompt.last_logits.tensor));
            let text = [prompt.input_ids.clone(), prompt.greedy.new_ids.clone()].concat();
            let drift = pollster::block_on(precision_drift(&case.loaded.model, &f16, &text)).unwrap();
            // Bounds with room above what f16 weights give on the fixtures (the book's precision
            // chapter has the figures); top choices all the same.
            assert!(diff <= 2e-2, "{label}: last-position logits differ by {diff}");
            assert!(
                drift.mean_abs_logprob_change <= 5e-3 && drift.max_abs_logprob_change <= 2e-2,
                "{label}: {drift:?}"
            );
            // The f32 (= transformers') greedy text is f16's own greedy choice at every step.
            assert_eq!(drift.top1_agreement, 1.0, "{label}: {drift:?}");
        }
    }
}

/// An f16 KV cache (half its memory; keys and values rounded as they are stored) against
/// transformers' f32 run, on every fixture model and prompt, on the CPU (burn's f16 tensors)
/// and on wgpu (packed halves read by the WGSL kernels): greedy text through the contiguous,
/// sliding and paged caches, last-position logits, and the teacher-forced drift that `bench
/// decode --kv-dtype f16` prints.
#[test]
fn f16_kv_cache_stays_close_to_transformers() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let mut model = load(&case.dir, case.loaded.model.device()).unwrap().model;
        model.set_kv_dtype(KvDtype::F16).unwrap();
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
            let ids = &prompt.input_ids;
            let logits = model
                .forward(
                    &Step::single(ids, 0),
                    &mut model.cache(KvMode::Contiguous, 1, ids.len()).unwrap(),
                    Logits::Last,
                )
                .unwrap();
            let diff = max_abs_diff(
                &pollster::block_on(readback::floats(logits)).unwrap(),
                &case.golden_tensor(&prompt.last_logits.tensor),
            );
            let text = [prompt.input_ids.clone(), golden.clone()].concat();
            let drift = pollster::block_on(precision_drift(&case.loaded.model, &model, &text)).unwrap();
            eprintln!("{label}: last logits within {diff:.2e}; {drift:?}");
            assert!(diff <= 1e-2, "{label}: last-position logits differ by {diff}");
            assert!(
                drift.mean_abs_logprob_change <= 2e-3 && drift.max_abs_logprob_change <= 1e-2,
                "{label}: {drift:?}"
            );
            assert_eq!(drift.top1_agreement, 1.0, "{label}: {drift:?}");
        }
    }
}

/// int8 weights (a scale per output, symmetric), on the CPU (its row dots) and on wgpu (the WGSL
/// row dots on words of four), against transformers' f32 run on every fixture model and prompt:
/// last-position logits, and the f32 model's greedy text scored teacher-forced by both (what
/// `bench decode --dtype int8` prints as `int8_drift`). Both devices quantize alike, so wgpu's
/// logits must also meet the CPU's int8 ones; and on wgpu, weights quantized as they load (the
/// browser's way) must give the very logits of a model quantized afterwards.
#[test]
fn int8_weights_stay_close_to_transformers() {
    let on_cpu =
        |case: &Case| load(&case.dir, &Device::flex()).unwrap().model.into_weight_dtype(WeightDtype::Int8).unwrap();
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let device = case.loaded.model.device().clone();
        let int8 = load(&case.dir, &device).unwrap().model.into_weight_dtype(WeightDtype::Int8).unwrap();
        let wgpu = case.label.ends_with("on wgpu");
        let (cpu, on_load) = match wgpu {
            true => (Some(on_cpu(&case)), Some(load_as(&case, &device, WeightDtype::Int8))),
            false => (None, None),
        };
        for prompt in &case.golden.prompts {
            let label = format!("{} / {} in int8", case.label, prompt.name);
            let last_logits = |model: &Gpt2| {
                let logits = model
                    .forward(
                        &Step::single(&prompt.input_ids, 0),
                        &mut KvCache::Stateless { window: None },
                        Logits::Last,
                    )
                    .unwrap();
                pollster::block_on(readback::floats(logits)).unwrap()
            };
            let last = last_logits(&int8);
            let diff = max_abs_diff(&last, &case.golden_tensor(&prompt.last_logits.tensor));
            let text = [prompt.input_ids.clone(), prompt.greedy.new_ids.clone()].concat();
            let drift = pollster::block_on(precision_drift(&case.loaded.model, &int8, &text)).unwrap();
            eprintln!("{label}: last logits within {diff:.2e}; {drift:?}");
            // Bounds with room above what int8 gives on the random-weight fixtures (the book's
            // precision chapter); random weights are a hard case for per-output scales.
            assert!(diff <= 0.3, "{label}: last-position logits differ by {diff}");
            assert!(drift.mean_abs_logprob_change <= 5e-2 && drift.max_abs_logprob_change <= 0.2, "{label}: {drift:?}");
            assert!(drift.top1_agreement >= 0.85, "{label}: {drift:?}");
            if let (Some(cpu), Some(on_load)) = (&cpu, &on_load) {
                let vs_cpu = max_abs_diff(&last, &last_logits(cpu));
                assert!(vs_cpu <= 1e-4, "{label}: wgpu's int8 logits differ from the CPU's by {vs_cpu}");
                let vs_after = max_abs_diff(&last_logits(on_load), &last);
                assert!(vs_after <= 1e-5, "{label}: quantized on load vs after differ by {vs_after}");
            }
        }
    }
}
