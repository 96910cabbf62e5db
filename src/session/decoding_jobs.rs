//! The speculative and beam-search jobs: the engine's runs, streamed to the page as they go,
//! with the plain baselines run beside them by the same engine.

use super::error::Result;
use super::flow;
use super::protocol::{BeamView, FromEngine, PassView};
use crate::engine::decode::beam::{BeamOptions, beam_search};
use crate::engine::decode::generate::{GenerateOptions, fit_context, generate};
use crate::engine::decode::speculative::drafters::{AnyDrafter, DraftSpec};
use crate::engine::decode::speculative::report::SpeculativeReport;
use crate::engine::decode::speculative::{SpeculativeOptions, speculative_generate};
use crate::engine::kv::{DEFAULT_BLOCK_SIZE, KvMode};
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::tokenizer::Tokenizer;

fn text(tokenizer: &Tokenizer, ids: &[u32]) -> String {
    tokenizer.decode(ids).unwrap_or_default()
}

/// Plain decoding, speculative decoding streamed pass by pass, then a γ sweep.
#[allow(clippy::too_many_arguments)]
pub async fn speculate(
    target: &Gpt2,
    tokenizer: &Tokenizer,
    draft_model: Option<&Gpt2>,
    prompt: &str,
    spec: &DraftSpec,
    mut options: SpeculativeOptions,
    sweep: &[usize],
    post: &dyn Fn(&FromEngine),
    stop: impl Fn() -> bool,
) -> Result<()> {
    let ids = tokenizer.encode(prompt)?;
    let (ids, max_new_tokens, _) = fit_context(&ids, options.max_new_tokens, target.config.n_positions, false)?;
    options.max_new_tokens = max_new_tokens;
    options.eos_token_ids = target.config.eos_token_id.into_iter().collect();
    options.validate()?;
    let capacity = ids.len() + max_new_tokens;
    // Checked before the baseline runs, so a bad drafter fails at once.
    AnyDrafter::new(spec, target, draft_model, capacity)?;

    let plain = generate(target, &ids, &options.plain(KvMode::Contiguous), None, |_| flow(&stop)).await?;
    let run_once = async |options: &SpeculativeOptions, stream: bool| {
        let mut drafter = AnyDrafter::new(spec, target, draft_model, capacity)?;
        speculative_generate(target, &mut drafter, &ids, options, KvMode::Contiguous, |pass| {
            if stream {
                let drafted_text = pass.drafted.iter().map(|&t| text(tokenizer, &[t])).collect();
                post(&FromEngine::SpecPass(PassView {
                    pass: pass.clone(),
                    drafted_text,
                    next_text: text(tokenizer, &[pass.next]),
                }));
            }
            flow(&stop)
        })
        .await
    };
    let run = run_once(&options, true).await?;
    let report = SpeculativeReport::new(&spec.to_string(), &options, &run, &plain);
    post(&FromEngine::SpecDone { text: text(tokenizer, &run.new_ids), ids: run.new_ids, report });
    for &gamma in sweep {
        if stop() {
            break;
        }
        let at = SpeculativeOptions { gamma, adaptive_gamma: false, ..options.clone() };
        let run = run_once(&at, false).await?;
        post(&FromEngine::SpecSweep(SpeculativeReport::new(&spec.to_string(), &at, &run, &plain)));
    }
    post(&FromEngine::SpecSweepDone);
    Ok(())
}

/// Beam search streamed step by step (on the paged cache: beams share blocks), then greedy.
pub async fn beam(
    target: &Gpt2,
    tokenizer: &Tokenizer,
    prompt: &str,
    mut options: BeamOptions,
    post: &dyn Fn(&FromEngine),
    stop: impl Fn() -> bool,
) -> Result<()> {
    let ids = tokenizer.encode(prompt)?;
    let (ids, max_new_tokens, _) = fit_context(&ids, options.max_new_tokens, target.config.n_positions, false)?;
    options.max_new_tokens = max_new_tokens;
    options.eos_token_ids = target.config.eos_token_id.into_iter().collect();
    let out = beam_search(target, &ids, &options, KvMode::Paged { block_size: DEFAULT_BLOCK_SIZE }, |step| {
        let texts = step.candidates.iter().map(|c| text(tokenizer, &[c.token])).collect();
        post(&FromEngine::BeamStep { step: step.clone(), texts });
        flow(&stop)
    })
    .await?;
    let greedy_options =
        GenerateOptions { max_new_tokens, eos_token_ids: options.eos_token_ids.clone(), ..GenerateOptions::default() };
    let greedy = generate(target, &ids, &greedy_options, None, |_| flow(&stop)).await?;
    let beams =
        out.hypotheses.iter().map(|h| BeamView { hypothesis: h.clone(), text: text(tokenizer, &h.ids) }).collect();
    post(&FromEngine::BeamDone {
        beams,
        greedy_text: text(tokenizer, &greedy.new_ids),
        greedy_ids: greedy.new_ids,
        beam_ms: out.total_ms,
        kv_peak_tokens: out.kv_peak_tokens,
    });
    Ok(())
}
