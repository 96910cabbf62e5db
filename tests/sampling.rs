//! Sampling against transformers: for seven settings (temperature, top-k, top-p, repetition
//! penalty and their combinations) the distribution our sampler draws from equals the one
//! `generate(do_sample=True)` draws its first token from, after transformers' processors in
//! their order. Both start from transformers' own logits, so only the sampling is compared.

mod common;

use common::{golden, golden_extra, model_dirs, read_f32};
use inferlab::engine::decode::sampling::{Sampler, SamplingParams};

#[test]
fn the_distribution_drawn_from_is_transformers() {
    for dir in model_dirs() {
        let golden = golden(&dir);
        let extra = golden_extra(&dir);
        assert!(extra.sampling.len() >= 7, "{}: seven settings or more", golden.model);
        for case in &extra.sampling {
            let label = format!("{} / {} / {}", golden.model, case.prompt, case.name);
            let prompt = golden.prompts.iter().find(|p| p.name == case.prompt).expect("the prompt's goldens");
            assert_eq!(prompt.input_ids, case.prompt_ids, "{label}: same prompt");
            let hf_logits = read_f32(&dir.join(&golden.side_file), &prompt.last_logits.tensor);
            let reference = read_f32(&dir.join("golden_extra_logits.safetensors"), &case.probs_key);
            let p = &case.params;
            let params = SamplingParams {
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
                repetition_penalty: p.repetition_penalty,
                ..SamplingParams::default()
            };
            let ours = params.distribution(&mut hf_logits.clone(), &case.prompt_ids);

            let support = |probs: &mut dyn Iterator<Item = bool>| -> Vec<usize> {
                probs.enumerate().filter(|(_, nonzero)| *nonzero).map(|(id, _)| id).collect()
            };
            let ours_support = support(&mut ours.iter().map(|&q| q > 0.0));
            let reference_support = support(&mut reference.iter().map(|&q| q > 0.0));
            assert_eq!(reference_support.len(), case.support_size, "{label}: the golden's own support size");
            assert_eq!(ours_support, reference_support, "{label}: the tokens left after the filters");
            let diff = ours.iter().zip(&reference).map(|(&a, &b)| (a - f64::from(b)).abs()).fold(0.0, f64::max);
            assert!(diff <= 1e-6, "{label}: probabilities differ by {diff:e}");
            let total: f64 = ours.iter().sum();
            assert!((total - 1.0).abs() <= 1e-9, "{label}: the distribution sums to {total}");

            // And the sampler draws from it: every draw lands in the support, and the likeliest
            // token comes up about as often as its probability says.
            let mut sampler = Sampler::new(SamplingParams { seed: 42, ..params }).unwrap();
            let best = (0..reference.len()).max_by(|&a, &b| reference[a].total_cmp(&reference[b])).unwrap();
            let draws = 300;
            let mut hits = 0;
            for _ in 0..draws {
                let id = sampler.pick(&mut hf_logits.clone(), &case.prompt_ids) as usize;
                assert!(reference[id] > 0.0, "{label}: drew {id}, outside the support");
                hits += usize::from(id == best);
            }
            let expected = f64::from(reference[best]) * draws as f64;
            let sd = (expected * (1.0 - f64::from(reference[best]))).sqrt();
            assert!(
                (hits as f64 - expected).abs() <= 5.0 * sd + 1.0,
                "{label}: token {best} drawn {hits} times in {draws}, expected {expected:.0} ± {sd:.0}"
            );
        }
    }
}

/// OpenAI's presence and frequency penalties and `logit_bias`, by their definitions, applied
/// here by hand to transformers' raw logits: `logit[j] + bias[j] − count[j] · frequency −
/// (count[j] > 0) · presence`, where `count` counts the tokens the sampler generated (the
/// prompt's do not count), then a softmax. The sampler's distribution must equal it.
#[test]
fn openai_penalties_and_logit_bias_follow_their_definitions() {
    let dir = &model_dirs()[0];
    let golden = golden(dir);
    let prompt = &golden.prompts[2];
    let raw = read_f32(&dir.join(&golden.side_file), &prompt.last_logits.tensor);
    let (boosted, banned) = (1234u32, prompt.last_logits.top5_ids[0]);
    let params = SamplingParams {
        temperature: 1.0,
        presence_penalty: 0.7,
        frequency_penalty: 0.4,
        logit_bias: vec![(boosted, 5.0), (banned, -100.0)],
        seed: 3,
        ..SamplingParams::default()
    };
    let mut sampler = Sampler::new(params).unwrap();
    // Generate 7, 7, 9: rows where one token dominates by far more than any penalty.
    let forced = |id: usize| {
        let mut row = vec![0.0f32; raw.len()];
        row[id] = 200.0;
        row
    };
    let mut history = prompt.input_ids.clone();
    for id in [7, 7, 9] {
        assert_eq!(sampler.pick(&mut forced(id), &history), id as u32);
        history.push(id as u32);
    }
    let ours = sampler.distribution(&mut raw.clone(), &history);

    let mut logits: Vec<f64> = raw.iter().map(|&l| f64::from(l)).collect();
    logits[boosted as usize] += 5.0;
    logits[banned as usize] -= 100.0;
    logits[7] -= 2.0 * 0.4 + 0.7;
    logits[9] -= 0.4 + 0.7;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    for (id, (&p, l)) in ours.iter().zip(&logits).enumerate() {
        let expected = (l - max).exp() / total;
        assert!((p - expected).abs() <= 1e-6, "token {id}: {p} vs {expected}");
    }
    assert!(ours[banned as usize] < 1e-30, "a bias of -100 bans the model's favourite");
    // The prompt's own tokens are not counted: without picks, nothing is penalised.
    let fresh = Sampler::new(SamplingParams { logit_bias: vec![], ..sampler.params().clone() }).unwrap();
    let plain = SamplingParams { temperature: 1.0, ..SamplingParams::default() };
    let unpenalised = plain.distribution(&mut raw.clone(), &history);
    let fresh_distribution = fresh.distribution(&mut raw.clone(), &history);
    for (a, b) in fresh_distribution.iter().zip(&unpenalised) {
        assert!((a - b).abs() <= 1e-12);
    }
    // Greedy with a bias of 100 on a token picks it.
    let greedy = SamplingParams { logit_bias: vec![(boosted, 100.0)], ..SamplingParams::default() };
    assert_eq!(Sampler::new(greedy).unwrap().pick(&mut raw.clone(), &history), boosted);
    // Out of range is refused.
    for bad in [
        SamplingParams { presence_penalty: 2.5, ..SamplingParams::default() },
        SamplingParams { frequency_penalty: -2.1, ..SamplingParams::default() },
        SamplingParams { logit_bias: vec![(1, 100.5)], ..SamplingParams::default() },
    ] {
        assert!(Sampler::new(bad).is_err());
    }
    assert!(SamplingParams { logit_bias: vec![(50257, 1.0)], ..SamplingParams::default() }.check_vocab(50257).is_err());
}
