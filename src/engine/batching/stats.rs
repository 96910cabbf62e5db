//! What a run is judged by, the same for every policy and for real and simulated runs:
//! per-request queue time, time to first token and latency; throughput; batch size, KV
//! blocks and the share of allocated KV slots left empty.

use serde::{Deserialize, Serialize};

use super::driver::{Run, StepRecord};
use super::scheduler::Scheduler;
use super::sequence::{Finish, Span};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestReport {
    pub index: usize,
    pub generated_ids: Vec<u32>,
    pub queue_ms: f64,
    pub ttft_ms: f64,
    pub latency_ms: f64,
    pub preemptions: usize,
    pub cached_tokens: usize,
    pub finish: Option<Finish>,
    pub spans: Vec<Span>,
    /// Why the request was refused (it never ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Generated tokens per second, from the first arrival to the last finish.
    pub throughput_tok_s: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub p50_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub mean_queue_ms: f64,
    /// Rows per step (padding rows of static batches included: the hardware computes them).
    pub mean_batch: f64,
    pub peak_blocks: usize,
    /// Allocated KV slots holding no token, over all steps (paged: only last-block tails).
    pub kv_waste_pct: f64,
    /// The same for a contiguous cache reserving the model's whole context per sequence.
    pub contiguous_waste_pct: f64,
    /// Share of looked-up full prompt blocks found in the prefix cache.
    pub prefix_hit_rate: f64,
    pub preemptions: usize,
    pub completed: usize,
    pub refused: usize,
    pub generated_tokens: usize,
    pub makespan_ms: f64,
    pub steps: usize,
}

/// Nearest-rank percentile of unsorted values (0 for none).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    if n == 0 { 0.0 } else { values.sum::<f64>() / n as f64 }
}

/// Per-request reports, in request order.
pub fn requests(run: &Run) -> Vec<RequestReport> {
    run.admitted
        .iter()
        .enumerate()
        .map(|(index, admitted)| match admitted {
            Ok(id) => {
                let seq = &run.scheduler.seqs[*id];
                let arrival = seq.request.arrival_ms;
                let since = |t: Option<f64>| t.map_or(0.0, |t| t - arrival);
                RequestReport {
                    index,
                    generated_ids: seq.generated().to_vec(),
                    queue_ms: since(seq.scheduled_ms),
                    ttft_ms: since(seq.first_token_ms),
                    latency_ms: since(seq.finished_ms),
                    preemptions: seq.preemptions,
                    cached_tokens: seq.cached_tokens,
                    finish: seq.finish,
                    spans: seq.spans.clone(),
                    error: None,
                }
            }
            Err(reason) => RequestReport { index, error: Some(reason.clone()), ..RequestReport::default() },
        })
        .collect()
}

pub fn stats(run: &Run) -> Stats {
    let done: Vec<_> = run.scheduler.seqs.iter().filter(|s| s.finished_ms.is_some()).collect();
    let latency: Vec<f64> = done.iter().map(|s| s.finished_ms.unwrap_or(0.0) - s.request.arrival_ms).collect();
    let ttft: Vec<f64> = done.iter().filter_map(|s| s.first_token_ms.map(|t| t - s.request.arrival_ms)).collect();
    let generated: usize = run.scheduler.seqs.iter().map(|s| s.generated().len()).sum();
    let first_arrival = run.scheduler.seqs.iter().map(|s| s.request.arrival_ms).fold(f64::INFINITY, f64::min);
    let last_finish = done.iter().filter_map(|s| s.finished_ms).fold(f64::NEG_INFINITY, f64::max);
    let makespan = if done.is_empty() { 0.0 } else { last_finish - first_arrival };
    let steps: &[StepRecord] = &run.steps;
    let sum = |f: fn(&StepRecord) -> usize| steps.iter().map(f).sum::<usize>() as f64;
    let ratio = |a: f64, b: f64| if b > 0.0 { 100.0 * a / b } else { 0.0 };
    let context = run.scheduler.config.max_context as f64;
    Stats {
        throughput_tok_s: if makespan > 0.0 { generated as f64 * 1000.0 / makespan } else { 0.0 },
        p50_latency_ms: percentile(&latency, 50.0),
        p99_latency_ms: percentile(&latency, 99.0),
        p50_ttft_ms: percentile(&ttft, 50.0),
        p99_ttft_ms: percentile(&ttft, 99.0),
        mean_queue_ms: mean(done.iter().map(|s| s.scheduled_ms.unwrap_or(0.0) - s.request.arrival_ms)),
        mean_batch: mean(steps.iter().map(|s| s.seqs as f64)),
        peak_blocks: steps.iter().map(|s| s.blocks_used).max().unwrap_or(0),
        kv_waste_pct: ratio(sum(|s| s.empty_slots), sum(|s| s.allocated_slots)),
        contiguous_waste_pct: ratio(
            sum(|s| s.running) * context - sum(|s| s.held_tokens),
            sum(|s| s.running) * context,
        ),
        prefix_hit_rate: run.scheduler.blocks.prefix_hit_rate(),
        preemptions: run.scheduler.preemptions,
        completed: done.len(),
        refused: run.admitted.iter().filter(|a| a.is_err()).count(),
        generated_tokens: generated,
        makespan_ms: makespan,
        steps: steps.len(),
    }
}

/// Which request owns each KV block at one moment (-1: free), for the block map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSnapshot {
    pub at_ms: f64,
    pub owners: Vec<i32>,
}

impl BlockSnapshot {
    /// The running sequences' blocks (a shared block shows its first owner).
    pub fn of(scheduler: &Scheduler, at_ms: f64) -> Self {
        let mut owners = vec![-1; scheduler.blocks.num_blocks()];
        for &id in scheduler.running() {
            for &block in &scheduler.seqs[id].block_table {
                if owners[block as usize] < 0 {
                    owners[block as usize] = id as i32;
                }
            }
        }
        Self { at_ms, owners }
    }
}

/// At most `keep` of `items`, evenly spaced, the last one always kept.
pub fn thin<T: Clone>(items: &[T], keep: usize) -> Vec<T> {
    if items.len() <= keep || keep == 0 {
        return items.to_vec();
    }
    (0..keep).map(|i| items[(i * (items.len() - 1)) / (keep - 1).max(1)].clone()).collect()
}
