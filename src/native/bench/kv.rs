//! `inferlab bench kv`: the KV-cache benchmark. The same greedy generation runs with the
//! contiguous cache, with the paged cache (block tables, 16-token blocks) and without any
//! cache (recomputing the prefix every token), in one process on one device, so the speedups
//! are ratios of measurements taken side by side.
//! The memory model's table for the same config comes with it.

use std::ops::ControlFlow;

use anyhow::{Result, bail};
use clap::Args;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::engine::decode::generate::{GenerateOptions, Generation, generate};
use crate::engine::kv::{DEFAULT_BLOCK_SIZE, KvMode, memory};
use crate::engine::model::precision::Precision;
use crate::native::args::BenchModel;
use crate::native::device::DeviceArg;

#[derive(Args)]
pub struct KvArgs {
    #[command(flatten)]
    model: BenchModel,
    /// Tokens to generate in each run.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Length of the (seeded random) prompt.
    #[arg(long, default_value_t = 8)]
    prompt_tokens: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    precision: Precision,
    #[arg(long)]
    json: bool,
}

pub fn run(args: KvArgs) -> Result<()> {
    args.device.check(args.precision)?;
    let device = args.device.init()?;
    let (model, name) = args.model.load(&device)?;
    let model = args.precision.apply(model)?;
    let config = model.config.clone();
    if args.new_tokens == 0 || args.prompt_tokens == 0 {
        bail!("--new-tokens and --prompt-tokens must be at least 1");
    }
    if args.prompt_tokens + args.new_tokens > config.n_positions {
        bail!(
            "--prompt-tokens {} + --new-tokens {} exceed the model's context of {} tokens",
            args.prompt_tokens,
            args.new_tokens,
            config.n_positions
        );
    }
    let mut rng = StdRng::seed_from_u64(args.model.seed);
    let prompt: Vec<u32> = (0..args.prompt_tokens).map(|_| rng.random_range(0..config.vocab_size as u32)).collect();

    let run = |kv: KvMode, new_tokens: usize| -> Result<Generation> {
        let options = GenerateOptions { max_new_tokens: new_tokens, kv, ..GenerateOptions::default() };
        Ok(pollster::block_on(generate(&model, &prompt, &options, None, |_| ControlFlow::Continue(())))?)
    };
    // Warm-up: the first launches compile kernels (and autotune, where enabled).
    let paged_mode = KvMode::Paged { block_size: DEFAULT_BLOCK_SIZE };
    for kv in [KvMode::Contiguous, paged_mode, KvMode::None] {
        run(kv, 2)?;
    }
    let with = run(KvMode::Contiguous, args.new_tokens)?;
    let paged = run(paged_mode, args.new_tokens)?;
    let without = run(KvMode::None, args.new_tokens)?;
    // Decode speed (tokens 2…N): the paged cache's price for its block tables.
    let paged_vs_contiguous = paged.tokens_per_s() / with.tokens_per_s().max(1e-9);

    let seq_lens: Vec<usize> = [128, 256, 512, 1024, 2048].into_iter().filter(|&l| l <= config.n_positions).collect();
    let mut table = memory::table(&config, &seq_lens, &[1, 4, 8], 4);
    table.extend(memory::table(&config, &seq_lens, &[1, 4, 8], 2));
    let speedup = without.total_ms / with.total_ms;

    if args.json {
        let out = json!({
            "device": args.device.name(),
            "model": name,
            "dtype": args.precision.dtype.name(),
            "kv_dtype": args.precision.kv_dtype.name(),
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "with_cache_ms": with.total_ms,
            "without_cache_ms": without.total_ms,
            "speedup": speedup,
            "paged_ms": paged.total_ms,
            "paged_decode_vs_contiguous": paged_vs_contiguous,
            "outputs_match": with.new_ids == without.new_ids && with.new_ids == paged.new_ids,
            "per_token_ms": { "with_cache": with.step_ms, "without_cache": without.step_ms, "paged": paged.step_ms },
            "memory": table,
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "bench kv · {name} · {} · {} weights · {} KV cache · prompt {} + {} new tokens",
        args.device.name(),
        args.precision.dtype.name(),
        args.precision.kv_dtype.name(),
        args.prompt_tokens,
        args.new_tokens
    );
    println!("  with cache    {:>10.1} ms total", with.total_ms);
    println!("  without cache {:>10.1} ms total", without.total_ms);
    println!(
        "  paged cache   {:>10.1} ms total   (decode speed {:.2}× the contiguous cache's)",
        paged.total_ms, paged_vs_contiguous
    );
    println!(
        "  speedup       {speedup:>10.2}×   (same tokens: {})",
        with.new_ids == without.new_ids && with.new_ids == paged.new_ids
    );
    println!("  per-token ms      token   with   without");
    let n = args.new_tokens;
    let mut marks = vec![0, n / 4, n / 2, 3 * n / 4, n - 1];
    marks.dedup();
    for i in marks {
        println!("                 {:>6} {:>8.2} {:>8.2}", i + 1, with.step_ms[i], without.step_ms[i]);
    }
    println!("  memory model (MiB)  seq  batch  bytes      KV     params  activations");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for r in &table {
        println!(
            "                  {:>6} {:>5} {:>6} {:>9.1} {:>9.1} {:>11.1}",
            r.seq_len,
            r.batch,
            r.bytes_per_value,
            mib(r.kv_bytes),
            mib(r.param_bytes),
            mib(r.activation_bytes)
        );
    }
    Ok(())
}
