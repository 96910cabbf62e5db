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
                seed: 0,
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
