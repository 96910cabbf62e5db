//! The sliding window against transformers: its forward under a banded causal mask (a key is
//! visible to a query iff `k <= q` and `q - k < W`, positions unchanged) for W = 4, 8, 16 and
//! every prompt, on every fixture model, on cpu and wgpu. Everything in the engine that takes a
//! window is held to it: the ring cache fed the prompt whole or a token at a time, the windowed
//! recompute without a cache, greedy generation through the ring, and the KV page's drift view.

mod common;

use std::ops::ControlFlow;

use common::{Case, WindowGolden, cases, max_abs_diff};
use inferlab::engine::analysis::window_drift::window_drift;
use inferlab::engine::decode::generate::{GenerateOptions, generate};
use inferlab::engine::decode::sampling::argmax;
use inferlab::engine::kv::{KvCache, KvMode};
use inferlab::engine::model::gpt2::Logits;
use inferlab::engine::readback;
use inferlab::engine::step::Step;

/// The last row of logits after feeding `ids` into `cache` in chunks of `chunk` tokens.
fn last_logits(case: &Case, ids: &[u32], cache: &mut KvCache, chunk: usize) -> Vec<f32> {
    let model = &case.loaded.model;
    let mut last = vec![];
    for start in (0..ids.len()).step_by(chunk) {
        let end = (start + chunk).min(ids.len());
        let logits = model.forward(&Step::single(&ids[start..end], start), cache, Logits::Last).unwrap();
        last = pollster::block_on(readback::floats(logits)).unwrap();
    }
    last
}

#[test]
fn the_window_matches_transformers_banded_mask() {
    for case in cases() {
        let model = &case.loaded.model;
        let extra = case.extra();
        let windows: std::collections::BTreeSet<usize> = extra.sliding_window.iter().map(|w| w.window).collect();
        assert_eq!(windows.into_iter().collect::<Vec<_>>(), [4, 8, 16], "{}: the goldens' windows", case.label);
        assert!(extra.sliding_window.iter().any(|w| w.differs_from_full_attention), "{}", case.label);
        for golden in &extra.sliding_window {
            let (ids, w) = (&golden.prompt_ids, golden.window);
            let label = format!("{} / {} / window {w}", case.label, golden.prompt);
            let reference = case.extra_tensor(&golden.last_logits_key);
            let ways = [
                ("ring, prompt whole", model.cache(KvMode::Sliding { window: w }, 1, ids.len()).unwrap(), ids.len()),
                ("ring, a token at a time", model.cache(KvMode::Sliding { window: w }, 1, ids.len()).unwrap(), 1),
                ("ring, chunks of 3", model.cache(KvMode::Sliding { window: w }, 1, ids.len()).unwrap(), 3),
                ("recomputed, no cache", KvCache::Stateless { window: Some(w) }, ids.len()),
            ];
            for (way, mut cache, chunk) in ways {
                let diff = max_abs_diff(&last_logits(&case, ids, &mut cache, chunk), &reference);
                assert!(diff <= 1e-4, "{label} ({way}): last-position logits differ by {diff}");
            }
            let options = GenerateOptions {
                max_new_tokens: golden.greedy_new_ids.len(),
                kv: KvMode::Sliding { window: w },
                ..GenerateOptions::default()
            };
            let out = pollster::block_on(generate(model, ids, &options, None, |_| ControlFlow::Continue(()))).unwrap();
            assert_eq!(out.new_ids, golden.greedy_new_ids, "{label}: greedy through the ring");
        }
    }
}

/// The fixtures' left-padded batch (prompts of 4, 1 and 27 tokens) through one ring: padding
/// takes ring slots but is never seen, so each row continues exactly as transformers' windowed
/// forward of its prompt alone.
#[test]
fn a_left_padded_batch_through_the_ring_matches_each_prompt_alone() {
    for case in cases() {
        let model = &case.loaded.model;
        let vocab = model.config.vocab_size;
        let (extra, batched) = (case.extra(), &case.golden.batched_greedy);
        for window in [4, 8] {
            let goldens: Vec<&WindowGolden> = batched
                .prompts
                .iter()
                .map(|name| extra.sliding_window.iter().find(|w| &w.prompt == name && w.window == window).unwrap())
                .collect();
            let prompts: Vec<Vec<u32>> = goldens.iter().map(|g| g.prompt_ids.clone()).collect();
            let mut cache = model.cache(KvMode::Sliding { window }, prompts.len(), window).unwrap();
            let mut step = Step::left_padded(&prompts, batched.pad_token_id);
            let mut next: Vec<usize> = prompts.iter().map(Vec::len).collect();
            let mut out = vec![vec![]; prompts.len()];
            for _ in 0..goldens[0].greedy_new_ids.len() {
                let logits = model.forward(&step, &mut cache, Logits::Last).unwrap();
                let rows = pollster::block_on(readback::floats(logits)).unwrap();
                let fed: Vec<u32> = rows.chunks(vocab).map(argmax).collect();
                out.iter_mut().zip(&fed).for_each(|(ids, &id)| ids.push(id));
                step = Step::decode(&fed, &next);
                next.iter_mut().for_each(|p| *p += 1);
            }
            for (golden, ids) in goldens.iter().zip(&out) {
                assert_eq!(
                    ids, &golden.greedy_new_ids,
                    "{} / {} / window {window} in a batch",
                    case.label, golden.prompt
                );
            }
        }
    }
}

/// Prefill chunks of every size, wrapping the ring several times, against the windowed
/// recompute (itself held to transformers above): a chunk longer than the window must not
/// clobber keys its own queries still need.
#[test]
fn any_chunking_equals_the_windowed_recompute() {
    for case in cases() {
        let model = &case.loaded.model;
        let vocab = model.config.vocab_size;
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
                let reference = pollster::block_on(readback::floats(reference)).unwrap();
                let diff = max_abs_diff(&ours, &reference[fed * vocab..]);
                assert!(diff <= 1e-4, "{}: window {window}, tokens {fed}..{end} differ by {diff}", case.label);
                fed = end;
            }
        }
    }
}

/// The KV page's view: the full cache's greedy text (transformers' own) fed to a ring as well.
/// While the text fits the window the two agree; the ring reports where each token went and
/// whom it evicted, which must be the oldest position, in slot `position % W`; once it evicts,
/// the logits drift.
#[test]
fn window_drift_reports_the_rings_own_evictions() {
    for case in cases() {
        let model = &case.loaded.model;
        let prompt = case.prompt("one_token");
        let n = prompt.greedy.new_ids.len();
        let wide = pollster::block_on(window_drift(model, &prompt.input_ids, n, 1 + n, |_| ControlFlow::Continue(())))
            .unwrap();
        assert_eq!(wide.iter().map(|s| s.token).collect::<Vec<_>>(), prompt.greedy.new_ids, "{}", case.label);
        assert!(wide.iter().all(|s| s.max_abs_diff <= 1e-4 && s.same_top1 && s.evicted.is_none()), "{}", case.label);

        let window = 4;
        let narrow =
            pollster::block_on(window_drift(model, &prompt.input_ids, n, window, |_| ControlFlow::Continue(())))
                .unwrap();
        assert_eq!(narrow.iter().map(|s| s.token).collect::<Vec<_>>(), prompt.greedy.new_ids, "{}", case.label);
        assert_eq!(narrow.iter().map(|s| s.position).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>());
        for s in &narrow {
            let expected = (s.position % window, s.position.checked_sub(window));
            assert_eq!((s.slot, s.evicted), expected, "{}: the write at {}", case.label, s.position);
            if s.position < window {
                assert!(
                    s.max_abs_diff <= 1e-4,
                    "{}: nothing evicted at {}: {}",
                    case.label,
                    s.position,
                    s.max_abs_diff
                );
            }
        }
        assert!(narrow.iter().any(|s| s.max_abs_diff > 1e-2), "{}: a 4-slot window must change the logits", case.label);
    }
}
