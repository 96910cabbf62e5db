//! `inferlab simulate`: a made-up workload through the schedulers with a step-cost model
//! instead of the model — measured now on a device, or read from `bench step --json` output.

use std::ops::ControlFlow;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Map, Value, json};
use web_time::Instant;

use super::args::{BenchModel, SchedulerArgs, WorkloadArgs};
use super::batch::{measure_cost, print_stats};
use super::device::DeviceArg;
use crate::engine::batching::scheduler::Policy;
use crate::engine::batching::simulate::{self, CostModel};
use crate::engine::batching::{stats, workload};
use crate::engine::error::EngineError;

#[derive(Args)]
pub struct SimulateArgs {
    /// Policies, comma-separated (static, dynamic, adaptive, continuous).
    #[arg(long, default_value = "static,dynamic,continuous", value_delimiter = ',')]
    policy: Vec<String>,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// A trace instead of a made-up workload: a requests file (JSONL) whose lines give
    /// `prompt_ids` or `prompt_tokens`, `max_new_tokens` and `arrival_ms`.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    /// A step-cost model: the JSON of `inferlab bench step --json` (its "cost"), or a bare
    /// {"base_ms", "per_token_ms", "per_sample_ms", "per_kilo_pair_ms"}.
    #[arg(long, conflicts_with = "device")]
    cost: Option<std::path::PathBuf>,
    /// Measure the step cost on this device instead (with --random NAME or --model M).
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    #[command(flatten)]
    model: BenchModel,
    /// The model's context, for a --cost file (tokens).
    #[arg(long, default_value_t = 1024)]
    context: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let policies: Vec<Policy> = args.policy.iter().map(|p| p.parse()).collect::<Result<_, _>>()?;
    let (cost, context) = match (&args.cost, args.device) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let value: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            let cost: CostModel =
                serde_json::from_value(value.get("cost").cloned().unwrap_or(value)).with_context(|| {
                    format!("{} holds no step-cost model (run `inferlab bench step --json`)", path.display())
                })?;
            (cost, args.context)
        }
        (None, Some(device)) => {
            let (model, _) = args.model.load(&device.init()?)?;
            (measure_cost(&model, args.scheduler.block_size, true)?, model.config.n_positions)
        }
        (None, None) => bail!("give --cost FILE, or --device D with --random NAME or --model M"),
    };
    let (requests, workload) = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let requests = workload::parse_jsonl(&text, &[], context, |_| {
                Err(EngineError::Request(
                    "a trace gives prompt_ids or prompt_tokens: the simulator has no tokenizer".into(),
                ))
            })
            .with_context(|| format!("in {}", path.display()))?;
            (requests, json!({ "trace": path }))
        }
        None => {
            let spec = args.workload.spec(context)?;
            (spec.generate(50257), serde_json::to_value(spec)?)
        }
    };
    let mut out = Map::new();
    let started = Instant::now();
    for &policy in &policies {
        let config = args.scheduler.config(policy, &requests, context, Some(&cost))?;
        let run = simulate::simulate(config, requests.clone(), cost, |_, _| ControlFlow::Continue(()))?;
        let stats = stats::stats(&run);
        if !args.json {
            println!("{policy} (max batch {})", run.scheduler.config.max_batch);
            print_stats(&stats);
        }
        out.insert(policy.name().into(), serde_json::to_value(stats)?);
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&json!({ "policies": out, "cost": cost, "workload": workload, "wall_ms": wall_ms }))?
        );
    } else {
        println!("simulated {} requests × {} policies in {wall_ms:.0} ms", requests.len(), policies.len());
    }
    Ok(())
}
