//! `inferlab bench batching`: the same made-up workload through the real engine under each
//! batching policy, side by side in one process, with the ratios continuous/static and
//! continuous/dynamic. Each policy's run is also simulated with a step-cost model measured
//! first on the same device, and the simulator's error is reported beside it.

use std::ops::ControlFlow;

use anyhow::Result;
use clap::Args;
use serde_json::{Map, Value, json};

use crate::engine::batching::scheduler::Policy;
use crate::engine::batching::simulate;
use crate::engine::batching::stats::{self, Stats};
use crate::engine::batching::workload::{Arrivals, Lengths, WorkloadSpec};
use crate::native::args::BenchModel;
use crate::native::args::{SchedulerArgs, WorkloadArgs};
use crate::native::batch::{measure_cost, print_stats, run_real};
use crate::native::device::DeviceArg;

#[derive(Args)]
pub struct BatchingArgs {
    #[command(flatten)]
    model: BenchModel,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Policies to compare, comma-separated.
    #[arg(long, default_value = "static,dynamic,adaptive,continuous", value_delimiter = ',')]
    policies: Vec<String>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    #[arg(long)]
    json: bool,
}

fn error_pct(simulated: f64, measured: f64) -> f64 {
    if measured == 0.0 { 0.0 } else { 100.0 * (simulated - measured) / measured }
}

pub fn run(args: BatchingArgs) -> Result<()> {
    let policies: Vec<Policy> = args.policies.iter().map(|p| p.parse()).collect::<Result<_, _>>()?;
    let device = args.device.init()?;
    let (model, name) = args.model.load(&device)?;
    let context = model.config.n_positions;
    let spec = args.workload.spec(context)?;
    let requests = spec.generate(model.config.vocab_size);
    if !args.json {
        eprintln!("measuring the step cost on {} …", args.device.name());
    }
    let cost = measure_cost(&model, args.scheduler.block_size, false)?;
    // Warm-up: kernels compile (and autotune) on their first launches.
    let warm = WorkloadSpec {
        requests: 2,
        arrivals: Arrivals::Poisson { rate: 1000.0 },
        prompt: Lengths::Uniform { min: 8, max: 8 },
        output: Lengths::Uniform { min: 2, max: 2 },
        seed: 1,
    };
    let warm = warm.generate(model.config.vocab_size);
    run_real(&model, args.scheduler.config(Policy::Continuous, &warm, context, None)?, warm)?;

    let mut out = Map::new();
    let mut measured: Vec<(Policy, Stats)> = vec![];
    for &policy in &policies {
        let config = args.scheduler.config(policy, &requests, context, Some(&cost))?;
        if !args.json {
            eprintln!("{policy}: {} requests, max batch {} …", requests.len(), config.max_batch);
        }
        let real = stats::stats(&run_real(&model, config.clone(), requests.clone())?);
        let sim =
            stats::stats(&simulate::simulate(
                config.clone(),
                requests.clone(),
                cost,
                |_, _| ControlFlow::Continue(()),
            )?);
        if !args.json {
            println!("{policy} (max batch {})", config.max_batch);
            print_stats(&real);
            println!(
                "  simulated: {:.1} tok/s ({:+.0}%), p50 latency {:.0} ms ({:+.0}%)",
                sim.throughput_tok_s,
                error_pct(sim.throughput_tok_s, real.throughput_tok_s),
                sim.p50_latency_ms,
                error_pct(sim.p50_latency_ms, real.p50_latency_ms)
            );
        }
        let mut entry = serde_json::to_value(&real)?;
        entry["max_batch"] = json!(config.max_batch);
        entry["simulated"] = json!({
            "throughput_tok_s": sim.throughput_tok_s,
            "p50_latency_ms": sim.p50_latency_ms,
            "p99_latency_ms": sim.p99_latency_ms,
            "throughput_error_pct": error_pct(sim.throughput_tok_s, real.throughput_tok_s),
            "p50_latency_error_pct": error_pct(sim.p50_latency_ms, real.p50_latency_ms),
        });
        out.insert(policy.name().into(), entry);
        measured.push((policy, real));
    }
    let find = |p: Policy| measured.iter().find(|(q, _)| *q == p).map(|(_, s)| s);
    let mut ratios = Map::new();
    if let Some(c) = find(Policy::Continuous) {
        for base in [Policy::Static, Policy::Dynamic] {
            if let Some(b) = find(base) {
                let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
                ratios.insert(
                    format!("continuous/{base}"),
                    json!({ "throughput": ratio(c.throughput_tok_s, b.throughput_tok_s), "p99_latency": ratio(c.p99_latency_ms, b.p99_latency_ms) }),
                );
            }
        }
    }
    if args.json {
        let report = json!({ "device": args.device.name(), "model": name, "workload": spec, "cost": cost, "policies": out, "ratios": Value::Object(ratios) });
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (k, v) in &ratios {
            println!(
                "{k}: throughput ×{:.2}, p99 latency ×{:.2}",
                v["throughput"].as_f64().unwrap_or(0.0),
                v["p99_latency"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
