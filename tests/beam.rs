//! Beam search against transformers' `generate(num_beams=…)` goldens on every fixture model,
//! on cpu and wgpu, through each way of keeping the beams' caches.

mod common;

use std::ops::ControlFlow;

use common::{BeamGolden, BeamVariant, Case, cases};
use inferlab::engine::decode::beam::{BeamOptions, EarlyStopping, beam_search};
use inferlab::engine::decode::generate::{GenerateOptions, generate};
use inferlab::engine::kv::KvMode;
use inferlab::engine::kv::dtype::KvDtype;
use inferlab::engine::kv::memory::kv_bytes;
use inferlab::engine::model::gpt2::Gpt2;
use inferlab::native::model_dir::load;

/// transformers' `early_stopping`: `true`, `false` or `"never"`.
fn early_stopping(value: &serde_json::Value) -> EarlyStopping {
    match value {
        serde_json::Value::Bool(true) => EarlyStopping::True,
        serde_json::Value::Bool(false) => EarlyStopping::False,
        other => other.as_str().expect("early_stopping is a bool or a string").parse().expect("known early_stopping"),
    }
}

fn options(golden: &BeamGolden) -> BeamOptions {
    let p = &golden.params;
    let early_stopping = early_stopping(&p.early_stopping);
    BeamOptions {
        num_beams: p.num_beams,
        num_return_sequences: p.num_return_sequences,
        max_new_tokens: p.max_new_tokens,
        length_penalty: p.length_penalty,
        early_stopping,
        no_repeat_ngram_size: p.no_repeat_ngram_size,
        eos_token_ids: vec![p.eos_token_id],
    }
}

fn check(case: &Case, label: &str, prompt: &[u32], golden: &BeamGolden, kv: KvMode) {
    check_model(case, &case.loaded.model, label, prompt, golden, kv, 1e-4);
}

/// [`check`] with `model` (the case's, or a copy held differently) and a score tolerance.
fn check_model(
    case: &Case,
    model: &Gpt2,
    label: &str,
    prompt: &[u32],
    golden: &BeamGolden,
    kv: KvMode,
    tolerance: f64,
) {
    let label = format!("{} / {label} / kv {kv}", case.label);
    let out = pollster::block_on(beam_search(model, prompt, &options(golden), kv, |_| ControlFlow::Continue(())))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let ids: Vec<Vec<u32>> = out.hypotheses.iter().map(|h| h.ids.clone()).collect();
    assert_eq!(ids, golden.unpadded(), "{label}: sequences");
    for (h, &reference) in out.hypotheses.iter().zip(&golden.sequences_scores) {
        assert!((f64::from(h.score) - reference).abs() <= tolerance, "{label}: score {} vs {reference}", h.score);
    }
}

#[test]
fn beams_match_transformers_with_shared_and_gathered_caches() {
    for case in cases() {
        for prompt in &case.golden.prompts {
            for kv in [KvMode::Paged { block_size: 4 }, KvMode::Contiguous] {
                check(&case, &prompt.name, &prompt.input_ids, &prompt.beam, kv);
            }
        }
    }
}

/// Each option of `generate(num_beams=…)` against transformers, through both ways of keeping
/// the beams' caches: length_penalty 0.5, length_penalty 2 without early stopping,
/// early_stopping "never", early_stopping true, no_repeat_ngram_size 2, and 3 of 5 beams
/// returned. Sequences identical, scores within 1e-4.
#[test]
fn every_beam_option_matches_transformers() {
    let variant_options = |v: &BeamVariant| BeamOptions {
        num_beams: v.params.num_beams,
        num_return_sequences: v.params.num_return_sequences,
        max_new_tokens: v.max_new_tokens,
        length_penalty: v.params.length_penalty,
        early_stopping: early_stopping(&v.params.early_stopping),
        no_repeat_ngram_size: v.params.no_repeat_ngram_size,
        eos_token_ids: vec![50256],
    };
    for case in cases() {
        let variants = case.extra().beam_variants;
        let names: std::collections::BTreeSet<&str> = variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names.len(), 6, "{}: six option sets", case.label);
        for v in &variants {
            for kv in [KvMode::Paged { block_size: 4 }, KvMode::Contiguous] {
                let label = format!("{} / {} / {} / kv {kv}", case.label, v.prompt, v.name);
                let out =
                    pollster::block_on(beam_search(&case.loaded.model, &v.prompt_ids, &variant_options(v), kv, |_| {
                        ControlFlow::Continue(())
                    }))
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                let ids: Vec<Vec<u32>> = out.hypotheses.iter().map(|h| h.ids.clone()).collect();
                assert_eq!(ids, v.new_ids, "{label}: sequences");
                for (h, &reference) in out.hypotheses.iter().zip(&v.sequences_scores) {
                    assert!(
                        (f64::from(h.score) - reference).abs() <= 1e-4,
                        "{label}: score {} vs {reference}",
                        h.score
                    );
                }
            }
        }
    }
}

#[test]
fn beams_match_transformers_when_hypotheses_end_early() {
    for case in cases() {
        let eos = &case.golden.eos_stop;
        let prompt = case.prompt(&eos.prompt).input_ids.clone();
        for (name, golden) in [("eos_a", &eos.eos_a.beam), ("eos_b", &eos.eos_b.beam)] {
            check(&case, name, &prompt, golden, KvMode::Paged { block_size: 16 });
        }
    }
}

/// Hypotheses that end at any step and any rank: EOS is a token the beams do emit (the two
/// most frequent of an unconstrained search), under every combination of 2 or 4 beams (all or
/// 2 returned), length_penalty 0.5 / 1 / 2, early_stopping true / false / "never" and
/// no_repeat_ngram_size 0 / 2 (`golden_beam_eos.json`). Which finished hypotheses are kept and
/// when the search stops decide the sequences; scores within 1e-4. Those decisions are host
/// code: the CPU runs every case, other devices every third (a lavapipe run of all takes minutes).
#[test]
fn every_beam_option_matches_transformers_when_hypotheses_end_at_any_step() {
    for case in cases() {
        let every = if case.label.ends_with("on cpu") { 1 } else { 3 };
        let goldens = case.beam_eos();
        let ended = goldens.iter().filter(|g| g.golden.unpadded().iter().any(|ids| ids.len() < 10)).count();
        assert!(ended * 3 >= goldens.len(), "{}: only {ended} of {} cases end early", case.label, goldens.len());
        for (i, g) in goldens.iter().enumerate().step_by(every) {
            let p = &g.golden.params;
            let label = format!(
                "{} beams {} of {} lp {} early_stopping {} ngram {} eos {}",
                g.prompt,
                p.num_return_sequences,
                p.num_beams,
                p.length_penalty,
                p.early_stopping,
                p.no_repeat_ngram_size,
                p.eos_token_id
            );
            let kv = if (i / 2) % 2 == 0 { KvMode::Paged { block_size: 4 } } else { KvMode::Contiguous };
            check(&case, &label, &g.prompt_ids, &g.golden, kv);
        }
    }
}

#[test]
fn recomputing_the_prefix_gives_the_same_beams() {
    let case = cases().into_iter().next().expect("a fixture model");
    let prompt = case.prompt("few_tokens");
    check(&case, "no cache", &prompt.input_ids, &prompt.beam, KvMode::None);
}

#[test]
fn one_beam_is_greedy() {
    for case in cases() {
        for prompt in &case.golden.prompts {
            let options =
                BeamOptions { num_beams: 1, num_return_sequences: 1, max_new_tokens: 24, ..options(&prompt.beam) };
            let out = pollster::block_on(beam_search(
                &case.loaded.model,
                &prompt.input_ids,
                &options,
                KvMode::Contiguous,
                |_| ControlFlow::Continue(()),
            ))
            .expect("beam search");
            let greedy =
                GenerateOptions { max_new_tokens: 24, eos_token_ids: vec![50256], ..GenerateOptions::default() };
            let plain = pollster::block_on(generate(&case.loaded.model, &prompt.input_ids, &greedy, None, |_| {
                ControlFlow::Continue(())
            }))
            .expect("greedy");
            assert_eq!(out.hypotheses[0].ids, plain.new_ids, "{} / {}", case.label, prompt.name);
            assert_eq!(plain.new_ids, prompt.greedy.new_ids, "{} / {}", case.label, prompt.name);
        }
    }
}

#[test]
fn the_tree_keeps_num_beams_per_step_and_paged_beams_share_blocks() {
    let case = cases().into_iter().next().expect("a fixture model");
    let prompt = case.prompt("long_60");
    let opts = options(&prompt.beam);
    let paged = pollster::block_on(beam_search(
        &case.loaded.model,
        &prompt.input_ids,
        &opts,
        KvMode::Paged { block_size: 16 },
        |_| ControlFlow::Continue(()),
    ))
    .expect("beam search");
    for (i, step) in paged.steps.iter().enumerate() {
        assert_eq!(step.candidates.len(), 2 * opts.num_beams, "step {i}");
        let kept = step
            .candidates
            .iter()
            .filter(|c| matches!(c.fate, inferlab::engine::decode::beam::Fate::Kept { .. }))
            .count();
        assert!(kept == opts.num_beams || i + 1 == paged.steps.len(), "step {i}: {kept} kept");
    }
    // The 56-token prompt's blocks are held once, not once per beam.
    let unshared = opts.num_beams * (prompt.input_ids.len() + opts.max_new_tokens);
    assert!(paged.kv_peak_tokens < unshared / 2, "{} slots held vs {unshared} without sharing", paged.kv_peak_tokens);
    // Contiguous beams hold every row's slots from the start: the bytes a cache of num_beams
    // rows of prompt + max_new_tokens allocates.
    let model = &case.loaded.model;
    let contiguous = pollster::block_on(beam_search(model, &prompt.input_ids, &opts, KvMode::Contiguous, |_| {
        ControlFlow::Continue(())
    }))
    .expect("beam search");
    let cache = model.cache(KvMode::Contiguous, opts.num_beams, unshared / opts.num_beams).unwrap();
    let slot_bytes = kv_bytes(&model.config, 1, 1, 4);
    assert_eq!(contiguous.kv_peak_tokens as u64 * slot_bytes, cache.allocated().expect("a contiguous cache").bytes);
}

/// An f16 KV cache: the same beams as transformers' f32 run through both ways of keeping the
/// beams' caches (paged blocks forked copy-on-write, contiguous rows gathered), scores within
/// the rounding.
#[test]
fn beams_match_transformers_with_an_f16_cache() {
    for case in cases().into_iter().filter(|c| !c.label.ends_with("on cuda")) {
        let mut model = load(&case.dir, case.loaded.model.device()).unwrap().model;
        model.set_kv_dtype(KvDtype::F16).unwrap();
        for prompt in &case.golden.prompts {
            for kv in [KvMode::Paged { block_size: 4 }, KvMode::Contiguous] {
                check_model(
                    &case,
                    &model,
                    &format!("{} with an f16 KV cache", prompt.name),
                    &prompt.input_ids,
                    &prompt.beam,
                    kv,
                    5e-3,
                );
            }
        }
    }
}
