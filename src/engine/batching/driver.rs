//! The serving loop: requests arrive on a clock, the scheduler picks each step, an executor
//! runs it. The real model ([`super::runner::ModelRunner`]) and the simulator's cost model
//! (`simulate.rs`) are both executors, so a simulated run and a real one go through the same
//! scheduler code.
//!
//! The clock is the sum of the steps' durations as the executor reports them (measured, or
//! modelled); while nothing can run it jumps to the next arrival or deadline, so a real run
//! never sleeps through idle gaps (the browser cannot block) and its latencies stay true.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use super::scheduler::{ScheduledStep, Scheduler};
use super::sequence::Request;
use crate::engine::error::{EngineError, Result};

/// Runs scheduled steps.
pub trait Executor {
    /// Runs `step` over the scheduler's sequences; returns one token per sampling item, in
    /// order, and the step's duration in milliseconds.
    fn execute(&mut self, step: &ScheduledStep, scheduler: &Scheduler)
    -> impl Future<Output = Result<(Vec<u32>, f64)>>;

    /// A sequence has finished: drop whatever the executor kept for it.
    fn release(&mut self, _seq: usize) {}
}

/// One step, as the charts show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub start_ms: f64,
    pub end_ms: f64,
    /// Sequences in the step (padding rows included) and the tokens it computed.
    pub seqs: usize,
    pub tokens: usize,
    pub padding_rows: usize,
    pub blocks_used: usize,
    /// Slots allocated to running sequences that hold no token yet, and slots allocated.
    pub empty_slots: usize,
    pub allocated_slots: usize,
    /// Tokens held by running sequences (for the contiguous cache's waste on the same load).
    pub running: usize,
    pub held_tokens: usize,
}

/// Outcome of a run: the scheduler (with every sequence's tokens and timeline), each
/// request's sequence id or the reason it was refused, and the steps.
pub struct Run {
    pub scheduler: Scheduler,
    /// Per request, in the order given: its sequence id, or why it was refused.
    pub admitted: Vec<std::result::Result<usize, String>>,
    pub steps: Vec<StepRecord>,
}

/// Serves `requests` (arrival times in `arrival_ms`) to the end. `on_step` sees each step
/// once it ran; `Break` stops the run early (what ran is kept).
pub async fn run<E: Executor>(
    mut scheduler: Scheduler,
    requests: Vec<Request>,
    executor: &mut E,
    mut on_step: impl FnMut(&StepRecord, &Scheduler) -> ControlFlow<()>,
) -> Result<Run> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| requests[a].arrival_ms.total_cmp(&requests[b].arrival_ms));
    let mut admitted: Vec<std::result::Result<usize, String>> = vec![Err(String::new()); requests.len()];
    let mut pending = requests.into_iter().map(Some).collect::<Vec<_>>();
    let mut next = 0;
    let mut clock = 0.0f64;
    let mut steps = vec![];
    loop {
        while let Some(&i) = order.get(next) {
            let arrival = pending[i].as_ref().map_or(0.0, |r| r.arrival_ms);
            if arrival > clock {
                break;
            }
            let request = pending[i].take().expect("each request is added once");
            admitted[i] = scheduler.add(request).map_err(|e| e.to_string());
            next += 1;
        }
        if next == order.len() {
            scheduler.close();
            if !scheduler.has_unfinished() {
                break;
            }
        }
        let Some(step) = scheduler.schedule(clock) else {
            let next_arrival = order.get(next).and_then(|&i| pending[i].as_ref()).map(|r| r.arrival_ms);
            let wake = [next_arrival, scheduler.next_wake()].into_iter().flatten().fold(f64::INFINITY, f64::min);
            if !(wake.is_finite() && wake > clock) {
                return Err(EngineError::Request(
                    "the scheduler cannot run any waiting request (is the KV pool too small?)".into(),
                ));
            }
            clock = wake;
            continue;
        };
        let (tokens, ms) = executor.execute(&step, &scheduler).await?;
        let start = clock;
        clock += ms;
        for id in scheduler.complete(&step, &tokens, start, clock) {
            executor.release(id);
        }
        let (empty_slots, allocated_slots) = scheduler.slot_use();
        let running = scheduler.running();
        let record = StepRecord {
            start_ms: start,
            end_ms: clock,
            seqs: step.items.len(),
            tokens: step.tokens(),
            padding_rows: step.items.iter().filter(|i| i.padding).count(),
            blocks_used: scheduler.blocks.used_blocks(),
            empty_slots,
            allocated_slots,
            running: running.len(),
            held_tokens: running.iter().map(|&id| scheduler.seqs[id].num_computed).sum(),
        };
        let stop = on_step(&record, &scheduler).is_break();
        steps.push(record);
        if stop {
            break;
        }
    }
    Ok(Run { scheduler, admitted, steps })
}
