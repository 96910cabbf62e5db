//! Scoring a given text against transformers (`golden_scoring.json`, `golden.json`): every
//! prompt token's log-probability and top 5 after the tokens before it, the fixtures'
//! teacher-forced continuation, and transformers' strided perplexity for four window settings,
//! on cpu and wgpu; then `inferlab perplexity` as a user runs it.

mod common;

use std::process::Command;

use common::{cases, golden_scoring};
use inferlab::engine::decode::scoring::{perplexity, prompt_logprobs};
use inferlab::engine::kv::KvMode;

#[test]
fn prompt_logprobs_match_transformers() {
    for case in cases() {
        let scoring = golden_scoring(&case.dir);
        assert_eq!(scoring.top, 5);
        for prompt in &scoring.prompt_logprobs {
            let ours = pollster::block_on(prompt_logprobs(&case.loaded.model, &prompt.input_ids, 5)).unwrap();
            assert_eq!(ours.len(), prompt.input_ids.len(), "{}", prompt.prompt);
            assert!(ours[0].is_none(), "nothing predicts the first token");
            for (i, (ours, theirs)) in ours.iter().zip(&prompt.logprobs).enumerate().skip(1) {
                let (ours, theirs) = (ours.as_ref().unwrap(), theirs.as_ref().unwrap());
                let at = format!("{} · {} position {i}", case.label, prompt.prompt);
                assert!(
                    (f64::from(ours.logprob) - theirs.logprob).abs() <= 1e-4,
                    "{at}: {} vs {}",
                    ours.logprob,
                    theirs.logprob
                );
                for (k, &(id, lp)) in ours.top.iter().enumerate() {
                    assert!((f64::from(lp) - theirs.top_logprobs[k]).abs() <= 1e-4, "{at}: top {k}");
                    let tied = theirs
                        .top_ids
                        .iter()
                        .zip(&theirs.top_logprobs)
                        .any(|(&g, &l)| g == id && (l - theirs.top_logprobs[k]).abs() <= 1e-4);
                    assert!(tied, "{at}: top {k} is {id}, transformers' {}", theirs.top_ids[k]);
                }
            }
        }
        // The fixtures' own teacher-forced continuation.
        let tf = &case.golden.teacher_forced;
        let ids = [tf.prompt_ids.clone(), tf.continuation_ids.clone()].concat();
        let ours = pollster::block_on(prompt_logprobs(&case.loaded.model, &ids, 0)).unwrap();
        for (j, expected) in tf.token_logprobs.iter().enumerate() {
            let lp = ours[tf.prompt_ids.len() + j].as_ref().unwrap().logprob;
            assert!((f64::from(lp) - expected).abs() <= 1e-4, "{}: continuation {j}: {lp} vs {expected}", case.label);
        }
    }
}

#[test]
fn perplexity_matches_transformers_recipe() {
    for case in cases() {
        let scoring = golden_scoring(&case.dir);
        assert!(scoring.perplexity.len() >= 3, "{}: the window settings", case.label);
        for (i, golden) in scoring.perplexity.iter().enumerate() {
            let at = format!("{} · context {} stride {}", case.label, golden.context, golden.stride);
            let mut seen = vec![];
            let ours = pollster::block_on(perplexity(
                &case.loaded.model,
                &scoring.text_ids,
                golden.context,
                golden.stride,
                KvMode::Contiguous,
                |done, total| seen.push((done, total)),
            ))
            .unwrap();
            assert_eq!((ours.tokens, ours.windows), (golden.tokens, golden.windows), "{at}");
            assert!((ours.nll - golden.nll).abs() <= 1e-5, "{at}: nll {} vs {}", ours.nll, golden.nll);
            assert!(
                (ours.perplexity / golden.perplexity - 1.0).abs() <= 1e-4,
                "{at}: {} vs {}",
                ours.perplexity,
                golden.perplexity
            );
            assert_eq!(seen.last(), Some(&(golden.windows, golden.windows)), "{at}: progress reaches the end");
            if i > 0 {
                continue;
            }
            // A sliding window no narrower than the context changes nothing.
            let wide = KvMode::Sliding { window: golden.context };
            let windowed = pollster::block_on(perplexity(
                &case.loaded.model,
                &scoring.text_ids,
                golden.context,
                golden.stride,
                wide,
                |_, _| {},
            ))
            .unwrap();
            assert!((windowed.nll - golden.nll).abs() <= 1e-5, "{at}: through a ring of {}", golden.context);
        }
    }
}

#[test]
fn perplexity_command_prints_transformers_figure() {
    let dir = common::model_dirs().into_iter().next().unwrap();
    let scoring = golden_scoring(&dir);
    let golden = &scoring.perplexity[1];
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &scoring.text).unwrap();
    let perplexity = |context: &str, stride: &str| {
        let file = file.path().to_str().unwrap();
        let args = [
            "perplexity",
            "--model",
            dir.to_str().unwrap(),
            "--file",
            file,
            "--context",
            context,
            "--stride",
            stride,
            "--json",
        ];
        Command::new(env!("CARGO_BIN_EXE_inferlab")).args(args).output().unwrap()
    };
    let out = perplexity(&golden.context.to_string(), &golden.stride.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((json["perplexity"].as_f64().unwrap() / golden.perplexity - 1.0).abs() <= 1e-4, "{json}");
    assert_eq!(json["tokens"], golden.tokens);
    assert_eq!(json["windows"], golden.windows);
    assert!(json["nll"].is_number());
    // Bad windows are a clear error.
    let bad = perplexity("64", "65");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("1 <= stride <= context"));
}
