//! Parity with Hugging Face transformers on every fixture model, on the CPU device and on
//! wgpu: logits, greedy decoding through every KV mode, left-padded batches, EOS stops,
//! teacher-forced log-probs, the KV cache contents, and the path without the hand-written
//! kernels. The sliding window, sampling and reduced precision have files of their own.

mod common;

use std::ops::ControlFlow;

use burn::tensor::activation::log_softmax;
use common::{Case, cases, check_row, max_abs_diff, unpad};
use inferlab::engine::decode::generate::{GenerateOptions, StopReason, generate, generate_batch_greedy};
use inferlab::engine::kv::{KvCache, KvMode};
use inferlab::engine::model::gpt2::Logits;
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

/// The tensor-op path (`set_kernels(false)`: burn's matmuls, softmax and GELU instead of the
/// hand-written kernels, which `bench kernels` measures against) held to transformers on both
/// devices: every position's logits, and greedy text through the contiguous, paged and
/// sliding caches.
#[test]
fn the_path_without_kernels_matches_transformers() {
    for case in cases() {
        let mut model = load(&case.dir, case.loaded.model.device()).unwrap().model;
        model.set_kernels(false);
        for prompt in &case.golden.prompts {
            let label = format!("{} / {} without kernels", case.label, prompt.name);
            let ids = &prompt.input_ids;
            let logits = model.forward(&Step::single(ids, 0), &mut KvCache::Stateless { window: None }, Logits::All);
            let values = pollster::block_on(readback::floats(logits.unwrap())).unwrap();
            let rows: Vec<&[f32]> = values.chunks(model.config.vocab_size).collect();
            for (t, (row, golden)) in rows.iter().zip(&prompt.positions).enumerate() {
                check_row(&format!("{label} position {t}"), row, golden);
            }
            let diff = max_abs_diff(rows[rows.len() - 1], &case.golden_tensor(&prompt.last_logits.tensor));
            assert!(diff <= 1e-4, "{label}: last-position logits differ by {diff}");
            let golden = &prompt.greedy.new_ids;
            let total = ids.len() + golden.len();
            for kv in [KvMode::Contiguous, KvMode::Paged { block_size: 16 }, KvMode::Sliding { window: total }] {
                let options = GenerateOptions { max_new_tokens: golden.len(), kv, ..GenerateOptions::default() };
                let out = pollster::block_on(generate(&model, ids, &options, None, |_| ControlFlow::Continue(())));
                assert_eq!(&out.unwrap().new_ids, golden, "{label}: greedy with kv {kv}");
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
