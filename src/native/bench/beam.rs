//! `inferlab bench beam`: the same beam search with beams sharing paged blocks, with a
//! contiguous cache gathered each step, and recomputing every beam's whole sequence each step,
//! side by side in one process.

use std::ops::ControlFlow;

use anyhow::Result;
use clap::Args;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::engine::decode::beam::{BeamOptions, BeamResult, EarlyStopping, beam_search};
use crate::engine::kv::{DEFAULT_BLOCK_SIZE, KvMode};
use crate::native::args::BenchModel;
use crate::native::device::DeviceArg;

#[derive(Args)]
pub struct BeamBenchArgs {
    #[command(flatten)]
    model: BenchModel,
    #[arg(long, default_value_t = 4)]
    num_beams: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Length of the seeded random prompt.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    json: bool,
}

pub fn run(args: BeamBenchArgs) -> Result<()> {
    let device = args.device.init()?;
    let (model, name) = args.model.load(&device)?;
    let mut rng = StdRng::seed_from_u64(args.model.seed);
    let prompt: Vec<u32> =
        (0..args.prompt_tokens.max(1)).map(|_| rng.random_range(0..model.config.vocab_size as u32)).collect();
    // No EOS and no early stop: every run takes exactly `new_tokens` steps.
    let options = |max_new_tokens| BeamOptions {
        num_beams: args.num_beams,
        num_return_sequences: args.num_beams,
        max_new_tokens,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::False,
        no_repeat_ngram_size: 0,
        eos_token_ids: vec![],
    };
    let search = |kv: KvMode, new_tokens: usize| -> Result<BeamResult> {
        Ok(pollster::block_on(beam_search(&model, &prompt, &options(new_tokens), kv, |_| ControlFlow::Continue(())))?)
    };
    let modes = [
        ("paged", KvMode::Paged { block_size: DEFAULT_BLOCK_SIZE }),
        ("contiguous", KvMode::Contiguous),
        ("recompute", KvMode::None),
    ];
    for (_, kv) in modes {
        search(kv, 2)?;
    }
    let runs: Vec<(&str, BeamResult)> =
        modes.iter().map(|&(label, kv)| Ok((label, search(kv, args.new_tokens)?))).collect::<Result<_>>()?;
    let recompute_ms = runs[2].1.total_ms;
    // Same sequences; scores differ only by float rounding (another summation order).
    let ids = |r: &BeamResult| r.hypotheses.iter().map(|h| h.ids.clone()).collect::<Vec<_>>();
    let same = runs.iter().all(|(_, r)| ids(r) == ids(&runs[0].1));
    let score_diff = runs
        .iter()
        .flat_map(|(_, r)| r.hypotheses.iter().zip(&runs[0].1.hypotheses).map(|(a, b)| (a.score - b.score).abs()))
        .fold(0.0f32, f32::max);
    let kv_bytes_per_token = 2 * model.config.n_layer * model.config.n_embd * 4;
    let mib = |tokens: usize| (tokens * kv_bytes_per_token) as f64 / (1 << 20) as f64;
    if args.json {
        let per_mode: serde_json::Map<String, serde_json::Value> = runs
            .iter()
            .map(|(label, r)| {
                let entry = json!({ "ms": r.total_ms, "speedup_vs_recompute": recompute_ms / r.total_ms, "kv_peak_tokens": r.kv_peak_tokens, "kv_peak_mib": mib(r.kv_peak_tokens) });
                (label.to_string(), entry)
            })
            .collect();
        let out = json!({
            "model": name,
            "device": args.device.name(),
            "num_beams": args.num_beams,
            "prompt_tokens": prompt.len(),
            "new_tokens": args.new_tokens,
            "runs": per_mode,
            "same_output": same,
            "max_score_diff": score_diff,
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "bench beam · {name} · {} · {} beams · prompt {} + {} new tokens",
        args.device.name(),
        args.num_beams,
        prompt.len(),
        args.new_tokens
    );
    for (label, r) in &runs {
        println!(
            "  {label:<11} {:>10.1} ms   {:>6.2}× recompute   KV peak {:>6} tokens ({:.1} MiB)",
            r.total_ms,
            recompute_ms / r.total_ms,
            r.kv_peak_tokens,
            mib(r.kv_peak_tokens)
        );
    }
    println!("  same beams in every mode: {same} (scores within {score_diff:.1e})");
    Ok(())
}
