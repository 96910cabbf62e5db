//! `inferlab batch`: a requests file through the real engine under one batching policy, and
//! the flags every batching command shares (scheduler, made-up workload).

use std::ops::ControlFlow;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::args::{ModelArgs, SchedulerArgs};
use super::device::DeviceArg;
use super::model_dir;
use crate::engine::batching::driver::{self, Run};
use crate::engine::batching::runner::ModelRunner;
use crate::engine::batching::scheduler::{Policy, Scheduler, SchedulerConfig};
use crate::engine::batching::sequence::Request;
use crate::engine::batching::simulate::{self, CostModel};
use crate::engine::batching::stats::{self, Stats};
use crate::engine::batching::workload;
use crate::engine::model::gpt2::Gpt2;

#[derive(Args)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A JSONL file, one request a line: prompt or prompt_ids, max_new_tokens, optional
    /// arrival_ms, temperature, top_k, top_p, repetition_penalty, presence_penalty,
    /// frequency_penalty, logit_bias ({"token id": bias}), seed, ignore_eos.
    #[arg(long)]
    requests: std::path::PathBuf,
    /// static, dynamic, adaptive or continuous.
    #[arg(long, default_value = "continuous")]
    policy: String,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    json: bool,
}

/// Runs `requests` through `model` under `config`.
pub fn run_real(model: &Gpt2, config: SchedulerConfig, requests: Vec<Request>) -> Result<Run> {
    let mut runner = ModelRunner::new(model, config.num_blocks, config.block_size)?;
    let scheduler = Scheduler::new(config)?;
    Ok(pollster::block_on(driver::run(scheduler, requests, &mut runner, |_, _| ControlFlow::Continue(())))?)
}

/// A step-cost curve of `model` on its device: `quick` (a few seconds, enough to choose an
/// adaptive batch size) or the full grid (batches up to 32: what a simulation should rest on).
pub fn measure_cost(model: &Gpt2, block_size: usize, quick: bool) -> Result<CostModel> {
    Ok(pollster::block_on(simulate::fit_cost(model, block_size, quick, |_| {}))?.0)
}

pub fn run(args: BatchArgs) -> Result<()> {
    let policy: Policy = args.policy.parse()?;
    let device = args.device.init()?;
    let dir = model_dir::resolve(&args.model.model, &args.model.hub_url)?;
    let loaded = model_dir::load(&dir, &device)?;
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let text =
        std::fs::read_to_string(&args.requests).with_context(|| format!("cannot read {}", args.requests.display()))?;
    let eos: Vec<u32> = model.config.eos_token_id.into_iter().collect();
    let requests = workload::parse_jsonl(&text, &eos, model.config.n_positions, |t| tokenizer.encode(t))
        .with_context(|| format!("in {}", args.requests.display()))?;
    for request in &requests {
        request.sampling.check_vocab(model.config.vocab_size)?;
    }
    let cost =
        if policy == Policy::Adaptive { Some(measure_cost(model, args.scheduler.block_size, true)?) } else { None };
    let config = args.scheduler.config(policy, &requests, model.config.n_positions, cost.as_ref())?;
    let run = run_real(model, config.clone(), requests)?;
    let reports = stats::requests(&run);
    let stats = stats::stats(&run);
    if stats.completed == 0 {
        let reasons: Vec<String> =
            reports.iter().filter_map(|r| r.error.as_ref().map(|e| format!("request {}: {e}", r.index))).collect();
        bail!("no request could run:\n  {}", reasons.join("\n  "));
    }
    if args.json {
        let requests: Vec<Value> = reports
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r)?;
                v["text"] = json!(tokenizer.decode(&r.generated_ids)?);
                Ok(v)
            })
            .collect::<Result<_>>()?;
        let out = json!({ "policy": policy, "config": config, "device": args.device.name(), "requests": requests, "stats": stats });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "batch · {} · {policy} · {} · max batch {} · {} blocks × {}",
        args.model.model,
        args.device.name(),
        config.max_batch,
        config.num_blocks,
        config.block_size
    );
    println!("  req  queue ms   TTFT ms  latency ms  preempt  tokens  text");
    for r in &reports {
        match &r.error {
            Some(e) => println!("  {:>3}  refused: {e}", r.index),
            None => {
                let text: String = tokenizer.decode(&r.generated_ids)?.chars().take(40).collect();
                println!(
                    "  {:>3} {:>9.1} {:>9.1} {:>11.1} {:>8} {:>7}  {:?}",
                    r.index,
                    r.queue_ms,
                    r.ttft_ms,
                    r.latency_ms,
                    r.preemptions,
                    r.generated_ids.len(),
                    text
                );
            }
        }
    }
    print_stats(&stats);
    Ok(())
}

/// The `stats` block as a human table.
pub fn print_stats(s: &Stats) {
    println!(
        "  throughput {:.1} tok/s · latency p50 {:.0} / p99 {:.0} ms · TTFT p50 {:.0} ms · mean batch {:.1}",
        s.throughput_tok_s, s.p50_latency_ms, s.p99_latency_ms, s.p50_ttft_ms, s.mean_batch
    );
    println!(
        "  KV: peak {} blocks · waste {:.1}% (a max-length contiguous cache: {:.1}%) · prefix hits {:.0}% · {} preemptions · {} refused",
        s.peak_blocks,
        s.kv_waste_pct,
        s.contiguous_waste_pct,
        100.0 * s.prefix_hit_rate,
        s.preemptions,
        s.refused
    );
}
