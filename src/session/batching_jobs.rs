//! The Batching page's jobs: simulating workloads under each policy and real
//! batched runs, each turned into the [`PolicyRun`] the page draws (stats, per-request
//! timelines, steps, block maps).

use std::ops::ControlFlow;

use super::error::Result;
use crate::engine::batching::driver::{self, Run};
use crate::engine::batching::runner::ModelRunner;
use crate::engine::batching::scheduler::{Policy, Scheduler, SchedulerConfig};
use crate::engine::batching::sequence::Request;
use crate::engine::batching::simulate::{self, CostModel};
use crate::engine::batching::stats::{self, BlockSnapshot, thin};
use crate::engine::batching::workload::{Arrivals, WorkloadSpec};
use crate::engine::decode::generate::{GenerateOptions, generate};
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::Gpt2;
use crate::session::protocol::{PolicyRun, RateCurve};

/// Steps and block maps kept per run: enough to scrub through, small enough to post.
const KEEP_STEPS: usize = 800;
const KEEP_SNAPSHOTS: usize = 300;

/// Adaptive batching's batch size comes from the cost curve; other policies are as given.
fn resolve(mut config: SchedulerConfig, cost: &CostModel, requests: &[Request]) -> SchedulerConfig {
    if config.policy == Policy::Adaptive {
        config.max_batch = cost.adaptive_batch_for(config.max_batch, requests);
    }
    config
}

fn policy_run(config: SchedulerConfig, run: &Run, snapshots: &[BlockSnapshot]) -> PolicyRun {
    PolicyRun {
        policy: config.policy,
        stats: stats::stats(run),
        requests: stats::requests(run),
        steps: thin(&run.steps, KEEP_STEPS),
        blocks: thin(snapshots, KEEP_SNAPSHOTS),
        config,
    }
}

fn simulated(config: SchedulerConfig, requests: Vec<Request>, cost: CostModel) -> Result<PolicyRun> {
    let config = resolve(config, &cost, &requests);
    let mut snapshots = vec![];
    let run = simulate::simulate(config.clone(), requests, cost, |record, scheduler| {
        snapshots.push(BlockSnapshot::of(scheduler, record.end_ms));
        ControlFlow::Continue(())
    })?;
    Ok(policy_run(config, &run, &snapshots))
}

/// Every config over the same requests, and each policy's throughput as the rate grows.
pub fn simulate_all(
    workload: &WorkloadSpec,
    configs: &[SchedulerConfig],
    cost: CostModel,
    rates: &[f64],
    vocab: usize,
) -> Result<(Vec<PolicyRun>, Vec<RateCurve>)> {
    let requests = workload.generate(vocab);
    let runs = configs.iter().map(|c| simulated(c.clone(), requests.clone(), cost)).collect::<Result<Vec<_>, _>>()?;
    let mut curves = vec![];
    for config in configs {
        let mut points = vec![];
        for &rate in rates {
            let arrivals = match workload.arrivals {
                Arrivals::Poisson { .. } => Arrivals::Poisson { rate },
                Arrivals::Bursty { burst, .. } => Arrivals::Bursty { rate, burst },
            };
            let requests = WorkloadSpec { arrivals, ..*workload }.generate(vocab);
            let config = resolve(config.clone(), &cost, &requests);
            let run = simulate::simulate(config, requests, cost, |_, _| ControlFlow::Continue(()))?;
            points.push((rate, stats::stats(&run).throughput_tok_s));
        }
        curves.push(RateCurve { policy: config.policy, points });
    }
    Ok((runs, curves))
}

/// `workload` through the real model (stopped early when `stop` says so), the same workload
/// simulated, and whether each request's output equals its greedy output alone.
pub async fn real_run(
    model: &Gpt2,
    workload: &WorkloadSpec,
    config: SchedulerConfig,
    cost: CostModel,
    stop: impl Fn() -> bool,
) -> Result<(PolicyRun, PolicyRun, Vec<bool>)> {
    let requests = workload.generate(model.config.vocab_size);
    let config = resolve(config, &cost, &requests);
    let mut runner = ModelRunner::new(model, config.num_blocks, config.block_size)?;
    let scheduler = Scheduler::new(config.clone())?;
    let mut snapshots = vec![];
    let run = driver::run(scheduler, requests.clone(), &mut runner, |record, scheduler| {
        snapshots.push(BlockSnapshot::of(scheduler, record.end_ms));
        if stop() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .await?;
    let real = policy_run(config.clone(), &run, &snapshots);
    let mut matches = vec![];
    for (request, report) in requests.iter().zip(&real.requests) {
        let options = GenerateOptions {
            max_new_tokens: request.max_new_tokens,
            kv: KvMode::Contiguous,
            ..GenerateOptions::default()
        };
        let alone = generate(model, &request.prompt, &options, None, |_| ControlFlow::Continue(())).await?;
        matches.push(alone.new_ids == report.generated_ids);
    }
    Ok((real, simulated(config, requests, cost)?, matches))
}
