//! Speculative decoding: greedy output equals the target's greedy output for every drafter
//! and γ (and transformers' assisted generation), a drafter equal to the target accepts
//! everything, and sampled output is distributed as the target's own sampling.

mod common;

use std::ops::ControlFlow;
use std::time::Instant;

use common::{Case, cases, fixtures_root};
use inferlab::engine::decode::generate::generate;
use inferlab::engine::decode::sampling::{Sampler, SamplingParams};
use inferlab::engine::decode::speculative::drafters::{AnyDrafter, Draft, DraftSpec, Drafter, ModelDrafter};
use inferlab::engine::decode::speculative::{SpeculativeOptions, SpeculativeRun, speculative_generate};
use inferlab::engine::kv::{KvCache, KvMode};
use inferlab::engine::model::gpt2::{Gpt2, Logits};
use inferlab::engine::readback;
use inferlab::engine::step::Step;
use inferlab::native::model_dir::load;

/// The target cases (gpt2-tiny on each device: the fixtures with assisted goldens).
fn targets() -> Vec<Case> {
    cases().into_iter().filter(|c| c.golden.assisted_greedy_with_draft.is_some()).collect()
}

fn options(gamma: usize, max_new_tokens: usize, sampling: SamplingParams) -> SpeculativeOptions {
    SpeculativeOptions { max_new_tokens, sampling, gamma, adaptive_gamma: false, eos_token_ids: vec![] }
}

fn run<D: Drafter>(
    target: &Gpt2,
    drafter: &mut D,
    prompt: &[u32],
    options: &SpeculativeOptions,
    kv: KvMode,
) -> SpeculativeRun {
    pollster::block_on(speculative_generate(target, drafter, prompt, options, kv, |_| ControlFlow::Continue(())))
        .expect("speculative decoding")
}

#[test]
fn greedy_speculative_equals_target_greedy_for_every_drafter_and_gamma() {
    for case in targets() {
        let assisted = case.golden.assisted_greedy_with_draft.clone().expect("assisted goldens");
        let draft =
            load(&fixtures_root().join(&assisted.draft_model), case.loaded.model.device()).expect("draft model");
        let target = &case.loaded.model;
        for result in &assisted.results {
            let prompt = &case.prompt(&result.prompt).input_ids;
            let gammas: Vec<usize> = if result.prompt == "few_tokens" { (1..=8).collect() } else { vec![3] };
            for gamma in gammas {
                for spec in
                    [DraftSpec::Model(assisted.draft_model.clone()), DraftSpec::EarlyExit(1), DraftSpec::Ngram(2)]
                {
                    let opts = options(gamma, result.new_ids.len(), SamplingParams::default());
                    let mut drafter =
                        AnyDrafter::new(&spec, target, Some(&draft.model), prompt.len() + opts.max_new_tokens)
                            .expect("drafter");
                    let out = run(target, &mut drafter, prompt, &opts, KvMode::Contiguous);
                    assert_eq!(out.new_ids, result.new_ids, "{} / {} / {spec} / γ {gamma}", case.label, result.prompt);
                    assert!(out.passes.len() <= out.new_ids.len());
                }
            }
        }
    }
}

#[test]
fn greedy_speculative_on_the_paged_cache_and_with_adaptive_gamma() {
    for case in targets() {
        let result = &case.golden.assisted_greedy_with_draft.as_ref().expect("assisted goldens").results[1];
        let prompt = &case.prompt(&result.prompt).input_ids;
        let opts = options(4, result.new_ids.len(), SamplingParams::default());
        let mut drafter =
            AnyDrafter::new(&DraftSpec::EarlyExit(1), &case.loaded.model, None, prompt.len() + 24).expect("drafter");
        let out = run(&case.loaded.model, &mut drafter, prompt, &opts, KvMode::Paged { block_size: 4 });
        assert_eq!(out.new_ids, result.new_ids, "{}", case.label);
        // Adaptive γ changes the draft lengths, never the text.
        let adaptive = SpeculativeOptions { adaptive_gamma: true, ..opts };
        let mut drafter =
            AnyDrafter::new(&DraftSpec::Ngram(1), &case.loaded.model, None, prompt.len() + 24).expect("drafter");
        let out = run(&case.loaded.model, &mut drafter, prompt, &adaptive, KvMode::Contiguous);
        assert_eq!(out.new_ids, result.new_ids, "{} adaptive", case.label);
    }
}

#[test]
fn a_drafter_equal_to_the_target_accepts_everything() {
    for case in targets() {
        let target = &case.loaded.model;
        let prompt = &case.prompt("few_tokens").input_ids;
        for sampling in
            [SamplingParams::default(), SamplingParams { temperature: 1.0, seed: 3, ..SamplingParams::default() }]
        {
            let opts = options(4, 20, sampling);
            let mut drafter =
                ModelDrafter::new(target, target.config.n_layer, &target.config, prompt.len() + 20).expect("drafter");
            let out = run(target, &mut drafter, prompt, &opts, KvMode::Contiguous);
            assert_eq!(out.alpha(), 1.0, "{}: α", case.label);
            assert!(out.passes.iter().all(|p| p.bonus && p.accepted == p.drafted.len()), "{}", case.label);
            // A fixed γ: 20 tokens in 4 passes of 4 drafts and the bonus.
            assert!(out.passes.iter().all(|p| p.drafted.len() == 4), "{}: γ stays 4", case.label);
            assert_eq!(out.accepted_hist(), [0, 0, 0, 0, 4], "{}", case.label);
            assert_eq!(out.tokens_per_pass(), 5.0, "{}: 20 tokens in passes of γ + 1 = 5", case.label);
        }
        // Greedy self-drafting reproduces exactly its baseline: plain decoding with the run's
        // budget, sampling and stops.
        let opts = options(4, 21, SamplingParams::default());
        let plain = pollster::block_on(generate(target, prompt, &opts.plain(KvMode::Contiguous), None, |_| {
            ControlFlow::Continue(())
        }))
        .expect("greedy");
        let mut drafter =
            ModelDrafter::new(target, target.config.n_layer, &target.config, prompt.len() + 21).expect("drafter");
        assert_eq!(run(target, &mut drafter, prompt, &opts, KvMode::Contiguous).new_ids, plain.new_ids);
    }
}

/// Adaptive γ, as the book states it: after a pass that drafted what it asked for, one more
/// draft if all were accepted, one fewer (not under 1) if less than half were; never past the
/// budget. Replayed on a drafter that is always right (the target itself), one almost always
/// wrong (the random draft model) and one in between (the target's first layer).
#[test]
fn adaptive_gamma_grows_on_full_acceptance_and_shrinks_below_half() {
    let max_new = 24;
    let opts = SpeculativeOptions { adaptive_gamma: true, ..options(3, max_new, SamplingParams::default()) };
    // Returns the γ values the run drafted with, to show each rule was exercised.
    let replay = |label: &str, out: &SpeculativeRun| -> Vec<usize> {
        let (mut gamma, mut produced, mut gammas) = (opts.gamma, 0, vec![]);
        for (i, pass) in out.passes.iter().enumerate() {
            let g = gamma.min(max_new - produced - 1);
            gammas.push(gamma);
            assert_eq!(pass.drafted.len(), g, "{label}: pass {i} drafts min(γ {gamma}, budget)");
            if g > 0 {
                gamma = if pass.accepted == g {
                    gamma + 1
                } else if pass.accepted * 2 < g {
                    (gamma - 1).max(1)
                } else {
                    gamma
                };
            }
            produced += pass.accepted + 1;
        }
        assert_eq!(produced, max_new, "{label}");
        assert_eq!(out.accepted_hist().iter().sum::<usize>(), out.passes.len(), "{label}: a bar per pass");
        gammas
    };
    for case in targets() {
        let assisted = case.golden.assisted_greedy_with_draft.clone().expect("assisted goldens");
        let draft =
            load(&fixtures_root().join(&assisted.draft_model), case.loaded.model.device()).expect("draft model");
        let target = &case.loaded.model;
        let prompt = &case.prompt("few_tokens").input_ids;
        let capacity = prompt.len() + max_new;
        let mut itself = ModelDrafter::new(target, target.config.n_layer, &target.config, capacity).expect("drafter");
        let grown =
            replay(&format!("{} / itself", case.label), &run(target, &mut itself, prompt, &opts, KvMode::Contiguous));
        assert!(grown.windows(2).any(|w| w[1] > w[0]), "{}: γ grew ({grown:?})", case.label);
        for spec in [DraftSpec::Model(assisted.draft_model.clone()), DraftSpec::EarlyExit(1)] {
            let mut drafter = AnyDrafter::new(&spec, target, Some(&draft.model), capacity).expect("drafter");
            let out = run(target, &mut drafter, prompt, &opts, KvMode::Contiguous);
            let gammas = replay(&format!("{} / {spec}", case.label), &out);
            assert!(gammas.windows(2).any(|w| w[1] < w[0]), "{} / {spec}: γ shrank ({gammas:?})", case.label);
        }
    }
}

/// The run's times are its own: prefill and decode fit in the wall time around the call, and
/// the decode time holds every pass's draft and target time.
#[test]
fn the_reported_times_are_parts_of_the_wall_time() {
    let case = targets().into_iter().next().expect("gpt2-tiny");
    let target = &case.loaded.model;
    let prompt = &case.prompt("code").input_ids;
    let mut drafter = AnyDrafter::new(&DraftSpec::EarlyExit(1), target, None, prompt.len() + 16).expect("drafter");
    let start = Instant::now();
    let out = run(target, &mut drafter, prompt, &options(3, 16, SamplingParams::default()), KvMode::Contiguous);
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    let passes_ms: f64 = out.passes.iter().map(|p| p.draft_ms + p.target_ms).sum();
    assert!(out.prefill_ms > 0.0 && passes_ms > 0.0, "prefill {} ms, passes {passes_ms} ms", out.prefill_ms);
    assert!(passes_ms <= out.decode_ms, "the passes' {passes_ms} ms within decode's {} ms", out.decode_ms);
    assert!(out.prefill_ms + out.decode_ms <= wall_ms, "{} + {} ms within {wall_ms} ms", out.prefill_ms, out.decode_ms);
}

/// Probabilities of the target's first token and, for each, of the second, under `sampling`.
fn target_joint(target: &Gpt2, prompt: &[u32], sampling: &SamplingParams) -> Vec<((u32, u32), f64)> {
    let probs = |ids: &[u32]| {
        let mut cache = KvCache::Stateless { window: None };
        let logits = target.forward(&Step::single(ids, 0), &mut cache, Logits::Last).expect("forward");
        sampling.probabilities(&mut pollster::block_on(readback::floats(logits)).expect("read"))
    };
    let mut joint = vec![];
    for (first, &p1) in probs(prompt).iter().enumerate().filter(|(_, p)| **p > 0.0) {
        let next = probs(&[prompt, &[first as u32]].concat());
        joint.extend(
            next.iter()
                .enumerate()
                .filter(|(_, p)| **p > 0.0)
                .map(|(second, &p2)| ((first as u32, second as u32), p1 * p2)),
        );
    }
    joint
}

/// A drafter whose q overlaps the target's p without equalling it: the target's own logits at
/// another temperature and top-k (the fixture draft models are random and share no top
/// tokens with the target, so every draft would simply be rejected).
struct Sharpened<'m> {
    target: &'m Gpt2,
    params: SamplingParams,
}

impl Drafter for Sharpened<'_> {
    async fn prefill(&mut self, _tokens: &[u32]) -> inferlab::engine::error::Result<()> {
        Ok(())
    }

    async fn propose(
        &mut self,
        sequence: &[u32],
        gamma: usize,
        sampler: &mut Sampler,
    ) -> inferlab::engine::error::Result<Draft> {
        let (mut extended, mut q) = (sequence.to_vec(), vec![]);
        for _ in 0..gamma {
            let logits = self.target.forward(
                &Step::single(&extended, 0),
                &mut KvCache::Stateless { window: None },
                Logits::Last,
            )?;
            let probs = self.params.probabilities(&mut readback::floats(logits).await?);
            extended.push(sampler.draw(&probs));
            q.push(probs);
        }
        Ok(Draft { tokens: extended.split_off(sequence.len()), q: Some(q) })
    }

    fn rollback(&mut self, _tokens: usize) -> inferlab::engine::error::Result<()> {
        Ok(())
    }
}

#[test]
fn sampled_speculative_is_distributed_as_the_target() {
    let case = targets().into_iter().next().expect("gpt2-tiny");
    let target = &case.loaded.model;
    let prompt = case.prompt("few_tokens").input_ids.clone();
    let sampling = SamplingParams { temperature: 1.5, top_k: 3, ..SamplingParams::default() };
    let joint = target_joint(target, &prompt, &sampling);
    assert_eq!(joint.len(), 9, "top-3 then top-3");

    let runs = 1500;
    let mut counts = std::collections::HashMap::<(u32, u32), usize>::new();
    let (mut rejections, mut bonuses) = (0, 0);
    for seed in 0..runs {
        let opts = options(2, 2, SamplingParams { seed, ..sampling.clone() });
        let mut drafter =
            Sharpened { target, params: SamplingParams { temperature: 0.7, top_k: 4, ..SamplingParams::default() } };
        let out = run(target, &mut drafter, &prompt, &opts, KvMode::Contiguous);
        rejections += out.passes.iter().filter(|p| !p.bonus).count();
        bonuses += out.passes.iter().filter(|p| p.bonus && !p.drafted.is_empty()).count();
        *counts.entry((out.new_ids[0], out.new_ids[1])).or_default() += 1;
    }
    assert!(
        rejections > 100 && bonuses > 100,
        "both branches exercised: {rejections} rejections, {bonuses} bonus tokens"
    );
    assert!(
        counts.keys().all(|pair| joint.iter().any(|(p, _)| p == pair)),
        "a pair outside the target's support: {counts:?}"
    );
    let chi2: f64 = joint
        .iter()
        .map(|(pair, p)| {
            let expected = p * runs as f64;
            let observed = *counts.get(pair).unwrap_or(&0) as f64;
            (observed - expected).powi(2) / expected
        })
        .sum();
    // χ² with 8 degrees of freedom: P(χ² > 26.12) = 0.001.
    assert!(chi2 < 26.12, "χ² = {chi2:.2} over {runs} runs: {counts:?} vs {joint:?}");
}

#[test]
fn bad_drafters_and_gammas_are_refused() {
    let case = targets().into_iter().next().expect("gpt2-tiny");
    let target = &case.loaded.model;
    let prompt = case.prompt("few_tokens").input_ids.clone();
    for gamma in [0, 33] {
        let mut drafter = AnyDrafter::new(&DraftSpec::Ngram(2), target, None, 32).expect("drafter");
        let err = pollster::block_on(speculative_generate(
            target,
            &mut drafter,
            &prompt,
            &options(gamma, 8, SamplingParams::default()),
            KvMode::Contiguous,
            |_| ControlFlow::Continue(()),
        ));
        assert!(err.is_err_and(|e| e.to_string().contains("gamma")), "γ {gamma}");
    }
    assert!(
        AnyDrafter::new(&DraftSpec::EarlyExit(2), target, None, 32).is_err(),
        "layers:K must be fewer than the target's"
    );
    assert!(AnyDrafter::new(&DraftSpec::Model("x".into()), target, None, 32).is_err(), "an unloaded draft model");
    assert!(
        ModelDrafter::new(target, 1, &target.config, target.config.n_positions + 1).is_err(),
        "a draft context shorter than needed"
    );
    for bad in ["", "layers:0", "ngram:x", "layers:"] {
        assert!(bad.parse::<DraftSpec>().is_err(), "{bad:?}");
    }
    assert_eq!("ngram:3".parse::<DraftSpec>().unwrap(), DraftSpec::Ngram(3));
}
