//! `inferlab bench decode`: greedy decoding with the KV cache, `--batch` prompts at once — the
//! figure every speed comparison (HF transformers, llama.cpp, transformers.js) is made against.
//! A warm-up run comes first (kernel compilation, autotuning); then the prefill step (TTFT)
//! and the decode steps are timed, readbacks included, and decode speed counts every row.

use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::engine::analysis::precision_drift::precision_drift;
use crate::engine::decode::generate::{GenerateOptions, decode_tokens_per_s, generate, generate_batch_greedy};
use crate::engine::kv::memory;
use crate::engine::model::precision::Precision;
use crate::engine::model::weight_dtype::WeightDtype;
use crate::native::args::BenchModel;
use crate::native::device::DeviceArg;
use crate::native::trace;

/// Most rows a benchmark batch may have: past it the request is absurd on any device here.
const MAX_BATCH: usize = 1024;

#[derive(Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    model: BenchModel,
    /// Prompts decoded at once.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Length of each (seeded random) prompt.
    #[arg(long, default_value_t = 8)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// f16 weights and/or KV cache: their accuracy against f32 is measured on the same run's
    /// text (`f16_drift`).
    #[command(flatten)]
    precision: Precision,
    #[arg(long)]
    json: bool,
    /// Time the measured run's ops (synced where the device has no timestamps, which slows the
    /// run: compare with and without) and write them as a Chrome trace.
    #[arg(long)]
    trace: Option<PathBuf>,
}

pub fn run(args: DecodeArgs) -> Result<()> {
    args.device.check(args.precision)?;
    if !(1..=MAX_BATCH).contains(&args.batch) || args.prompt_tokens == 0 || args.new_tokens < 2 {
        bail!(
            "--batch must be in 1..={MAX_BATCH}, --prompt-tokens at least 1 and --new-tokens at least 2 (one prefill, one decode step)"
        );
    }
    let device = args.device.init()?;
    let (model, name) = args.model.load(&device)?;
    let model = args.precision.apply(model)?;
    let c = model.config.clone();
    if args.prompt_tokens + args.new_tokens > c.n_positions {
        bail!(
            "--prompt-tokens {} + --new-tokens {} exceed the model's context of {} tokens",
            args.prompt_tokens,
            args.new_tokens,
            c.n_positions
        );
    }
    let tokens = args.prompt_tokens + args.new_tokens;
    let kv_bytes = memory::kv_bytes(&c, tokens, args.batch, args.precision.kv_dtype.bytes_per_value());
    let needed =
        memory::param_count(&c) * 4 + kv_bytes + memory::activation_bytes(&c, args.prompt_tokens, args.batch, 4);
    if args.device == DeviceArg::Cpu
        && let Some(available) = available_memory()
        && needed > available
    {
        bail!(
            "batch {} needs about {} MiB (weights, KV cache, activations) but {} MiB are available; lower --batch",
            args.batch,
            needed >> 20,
            available >> 20
        );
    }
    let mut rng = StdRng::seed_from_u64(args.model.seed);
    let prompts: Vec<Vec<u32>> = (0..args.batch)
        .map(|_| (0..args.prompt_tokens).map(|_| rng.random_range(0..c.vocab_size as u32)).collect())
        .collect();
    // Batch 1 runs the generation loop users run; larger batches the batched greedy loop.
    let step_ms = |new_tokens: usize| -> Result<Vec<f64>> {
        Ok(if args.batch == 1 {
            let options = GenerateOptions { max_new_tokens: new_tokens, ..GenerateOptions::default() };
            pollster::block_on(generate(&model, &prompts[0], &options, None, |_| ControlFlow::Continue(())))?.step_ms
        } else {
            pollster::block_on(generate_batch_greedy(&model, &prompts, new_tokens, 0, &[]))?.step_ms
        })
    };
    step_ms(2)?;
    let steps = trace::traced(&model, args.trace.as_deref(), args.device.name(), || step_ms(args.new_tokens))?;
    let decode_tokens_per_s = decode_tokens_per_s(&steps) * args.batch as f64;
    let per_token_ms = steps[1..].iter().sum::<f64>() / (steps.len() - 1) as f64;
    let threads = crate::native::device::rayon_threads();
    // f16's accuracy: the f32 model's own greedy text, scored teacher-forced by both.
    let drift = match args.precision.reduced() {
        false => None,
        true => {
            let (reference, _) = args.model.load(&device)?;
            let options = GenerateOptions { max_new_tokens: args.new_tokens, ..GenerateOptions::default() };
            let out =
                pollster::block_on(generate(&reference, &prompts[0], &options, None, |_| ControlFlow::Continue(())))?;
            let text = [prompts[0].as_slice(), &out.new_ids].concat();
            Some(pollster::block_on(precision_drift(&reference, &model, &text))?)
        }
    };
    if args.json {
        let mut out = json!({
            "model": name, "device": args.device.name(), "dtype": args.precision.dtype.name(), "kv_dtype": args.precision.kv_dtype.name(), "kv_cache_bytes": kv_bytes, "threads": threads,
            "batch": args.batch, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
            "decode_tokens_per_s": decode_tokens_per_s, "ttft_ms": steps[0], "traced": args.trace.is_some(), "per_token_ms": per_token_ms, "step_ms": steps,
        });
        if let Some(drift) = &drift {
            let key = if args.precision.dtype == WeightDtype::Int8 { "int8_drift" } else { "f16_drift" };
            out[key] = serde_json::to_value(drift)?;
        }
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let (dtype, kv_dtype) = (args.precision.dtype.name(), args.precision.kv_dtype.name());
        println!(
            "bench decode · {name} · {} · {dtype} weights · {kv_dtype} KV cache ({:.1} MiB) · batch {} · prompt {} + {} new tokens",
            args.device.name(),
            kv_bytes as f64 / f64::from(1 << 20),
            args.batch,
            args.prompt_tokens,
            args.new_tokens
        );
        println!("  time to first token {:>9.1} ms (the prefill step)", steps[0]);
        println!(
            "  decode step         {per_token_ms:>9.2} ms ({:.1} tokens/s over {} rows)",
            decode_tokens_per_s, args.batch
        );
        if let Some(d) = &drift {
            println!(
                "  vs all-f32 over {} positions: log-prob of the next token moves {:.2e} on average ({:.2e} at most), logits {:.2e} at most, same top token {:.1}%",
                d.positions,
                d.mean_abs_logprob_change,
                d.max_abs_logprob_change,
                d.max_abs_logit_diff,
                d.top1_agreement * 100.0
            );
        }
    }
    Ok(())
}

/// The system's available memory (Linux: MemAvailable), if it can be read.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info.lines().find(|l| l.starts_with("MemAvailable:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
