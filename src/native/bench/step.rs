//! `inferlab bench step`: times real steps of the engine on a device (decode batches at a few
//! contexts, prompt chunks) and fits the simulator's step-cost model to them. Its JSON is what
//! `inferlab simulate --cost FILE` reads.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::engine::batching::simulate::{self, MeasureGrid};
use crate::native::args::BenchModel;
use crate::native::device::DeviceArg;

#[derive(Args)]
pub struct StepArgs {
    #[command(flatten)]
    model: BenchModel,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Tokens per KV block.
    #[arg(long, default_value_t = crate::engine::kv::DEFAULT_BLOCK_SIZE)]
    block_size: usize,
    /// A smaller grid with one timed run per shape.
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(args: StepArgs) -> Result<()> {
    let device = args.device.init()?;
    let (model, name) = args.model.load(&device)?;
    let (cost, timings) = pollster::block_on(simulate::fit_cost(&model, args.block_size, args.quick, |t| {
        if !args.json {
            eprintln!(
                "  {:>5} tokens {:>3} sampled {:>8} pairs  {:>8.2} ms",
                t.shape.tokens, t.shape.samples, t.shape.pairs, t.ms
            );
        }
    }))?;
    let error = cost.mean_error_pct(&timings);
    if args.json {
        let grid = MeasureGrid::for_context(model.config.n_positions, args.quick);
        let out = json!({ "device": args.device.name(), "model": name, "grid": grid, "timings": timings, "cost": cost, "fit_error_pct": error });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("bench step · {name} · {}", args.device.name());
    println!(
        "  step ms = {:.3} + {:.4} × tokens + {:.4} × sampled rows + {:.5} × query-key pairs / 1000   (mean error {error:.1}%)",
        cost.base_ms, cost.per_token_ms, cost.per_sample_ms, cost.per_kilo_pair_ms
    );
    Ok(())
}
