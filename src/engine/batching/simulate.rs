//! The serving simulator: a discrete-event run of the *same* schedulers (`batching/`) in
//! which a cost model stands in for the model. A step costs
//!
//! `base + per_token · tokens + per_sample · sampled rows + per_kilo_pair · query-key pairs / 1000`
//!
//! — weights read once per step, every token through every matmul, the 768×50257 head only
//! for rows that sample, attention over each token's context — with the coefficients fitted
//! (least squares, none negative) to timings of the real engine on the current device. So the
//! simulator answers "what if" (another policy, rate, pool) for thousands of requests in
//! milliseconds, and what it answers is true of this machine.

use std::ops::ControlFlow;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};
use web_time::Instant;

use super::driver::{self, Executor, Run, StepRecord};
use super::runner::{Chunk, ModelRunner};
use super::scheduler::{ScheduledStep, Scheduler, SchedulerConfig};
use super::sequence::Request;
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::blocks::BlockManager;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::readback;

/// The work of one step, as the cost model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepShape {
    pub tokens: usize,
    pub samples: usize,
    /// Query-key pairs attended: Σ over the step's tokens of their context length.
    pub pairs: usize,
}

impl StepShape {
    pub fn of(step: &ScheduledStep) -> Self {
        Self {
            tokens: step.tokens(),
            samples: step.items.iter().filter(|i| i.sample).count(),
            pairs: step.items.iter().map(|i| pairs(i.start, i.len)).sum(),
        }
    }

    fn features(&self) -> [f64; 4] {
        [1.0, self.tokens as f64, self.samples as f64, self.pairs as f64 / 1000.0]
    }
}

/// Query-key pairs of `len` queries at positions `start..start + len` attending causally.
fn pairs(start: usize, len: usize) -> usize {
    len * start + len * (len + 1) / 2
}

/// A measured step: its shape and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub shape: StepShape,
    pub ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    pub base_ms: f64,
    pub per_token_ms: f64,
    pub per_sample_ms: f64,
    pub per_kilo_pair_ms: f64,
}

impl CostModel {
    pub fn step_ms(&self, shape: &StepShape) -> f64 {
        let [one, tokens, samples, kilo_pairs] = shape.features();
        self.base_ms * one
            + self.per_token_ms * tokens
            + self.per_sample_ms * samples
            + self.per_kilo_pair_ms * kilo_pairs
    }

    /// Least squares over `timings`, refitted without any coefficient that comes out
    /// negative (noise can make a small term negative; a cost never is).
    pub fn fit(timings: &[Timing]) -> Result<Self> {
        if timings.len() < 4 {
            return Err(EngineError::Request(format!(
                "fitting the step cost needs at least 4 timings, got {}",
                timings.len()
            )));
        }
        let mut active = [true; 4];
        loop {
            let coef = least_squares(timings, &active)?;
            match (0..4).find(|&i| active[i] && coef[i] < 0.0) {
                Some(i) => active[i] = false,
                None => {
                    return Ok(Self {
                        base_ms: coef[0],
                        per_token_ms: coef[1],
                        per_sample_ms: coef[2],
                        per_kilo_pair_ms: coef[3],
                    });
                }
            }
        }
    }

    /// Mean absolute error of the model over `timings`, as a share of the measured times.
    pub fn mean_error_pct(&self, timings: &[Timing]) -> f64 {
        let n = timings.len().max(1) as f64;
        100.0 * timings.iter().map(|t| ((self.step_ms(&t.shape) - t.ms) / t.ms.max(1e-9)).abs()).sum::<f64>() / n
    }

    /// Decode tokens per second of a batch of `batch` sequences at `context` tokens.
    pub fn decode_throughput(&self, batch: usize, context: usize) -> f64 {
        let shape = StepShape { tokens: batch, samples: batch, pairs: batch * (context + 1) };
        batch as f64 * 1000.0 / self.step_ms(&shape).max(1e-9)
    }

    /// Adaptive batching's batch size for `requests`: [`Self::adaptive_batch`] at their mean
    /// context halfway through their outputs.
    pub fn adaptive_batch_for(&self, max_batch: usize, requests: &[Request]) -> usize {
        let total: usize = requests.iter().map(|r| r.prompt.len() + r.max_new_tokens / 2).sum();
        self.adaptive_batch(max_batch, total / requests.len().max(1))
    }

    /// Adaptive batching's choice: the smallest batch up to `max_batch` whose decode
    /// throughput at `context` reaches 90% of the best on the curve — past it a bigger batch
    /// buys little throughput and costs every member latency.
    pub fn adaptive_batch(&self, max_batch: usize, context: usize) -> usize {
        let best = (1..=max_batch).map(|b| self.decode_throughput(b, context)).fold(0.0, f64::max);
        (1..=max_batch).find(|&b| self.decode_throughput(b, context) >= 0.9 * best).unwrap_or(max_batch)
    }
}

/// Solves the normal equations for the `active` features (the others get 0).
fn least_squares(timings: &[Timing], active: &[bool; 4]) -> Result<[f64; 4]> {
    let idx: Vec<usize> = (0..4).filter(|&i| active[i]).collect();
    let k = idx.len();
    let mut a = vec![vec![0.0; k + 1]; k];
    for t in timings {
        let f = t.shape.features();
        for (r, &i) in idx.iter().enumerate() {
            for (c, &j) in idx.iter().enumerate() {
                a[r][c] += f[i] * f[j];
            }
            a[r][k] += f[i] * t.ms;
        }
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..k {
        let pivot = (col..k).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap_or(col);
        a.swap(col, pivot);
        if a[col][col].abs() < 1e-12 {
            return Err(EngineError::Request("the step timings do not vary enough to fit a cost model".into()));
        }
        for row in 0..k {
            if row != col {
                let factor = a[row][col] / a[col][col];
                let pivot_row = a[col].clone();
                for (x, p) in a[row][col..=k].iter_mut().zip(&pivot_row[col..=k]) {
                    *x -= factor * p;
                }
            }
        }
    }
    let mut coef = [0.0; 4];
    for (r, &i) in idx.iter().enumerate() {
        coef[i] = a[r][k] / a[r][r];
    }
    Ok(coef)
}

/// Steps that take as long as the cost model says, and sample token 0.
pub struct CostExecutor {
    pub cost: CostModel,
}

impl Executor for CostExecutor {
    async fn execute(&mut self, step: &ScheduledStep, _: &Scheduler) -> Result<(Vec<u32>, f64)> {
        let shape = StepShape::of(step);
        Ok((vec![0; shape.samples], self.cost.step_ms(&shape)))
    }
}

/// Simulates serving `requests` under `config` with step costs from `cost`; `on_step` sees
/// every step as the driver's does.
pub fn simulate(
    config: SchedulerConfig,
    requests: Vec<Request>,
    cost: CostModel,
    on_step: impl FnMut(&StepRecord, &Scheduler) -> ControlFlow<()>,
) -> Result<Run> {
    let scheduler = Scheduler::new(config)?;
    let mut executor = CostExecutor { cost };
    let run = pin!(driver::run(scheduler, requests, &mut executor, on_step));
    // Nothing in a simulated run waits on a device: the future is ready at its first poll.
    match run.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => unreachable!("a simulated run never waits"),
    }
}

/// Which steps to time: decode batches at each context, and single prompt chunks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeasureGrid {
    pub batches: Vec<usize>,
    pub contexts: Vec<usize>,
    pub prefills: Vec<usize>,
    /// Timed runs of each shape (after one untimed warm-up run).
    pub repeats: usize,
}

impl MeasureGrid {
    /// A grid that fits the model's context.
    pub fn for_context(max_context: usize, quick: bool) -> Self {
        let fits = |v: &[usize]| v.iter().copied().filter(|&x| x < max_context).collect::<Vec<_>>();
        if quick {
            Self { batches: vec![1, 4, 8], contexts: fits(&[16, 96]), prefills: fits(&[16, 64]), repeats: 1 }
        } else {
            Self {
                batches: vec![1, 2, 4, 8, 16, 32],
                contexts: fits(&[32, 128, 384]),
                prefills: fits(&[16, 64, 256]),
                repeats: 3,
            }
        }
    }
}

/// Times the step grid (the quick one, or the full one) on `model` and fits the cost model to
/// the timings; `on_timing` sees each as it is measured.
pub async fn fit_cost(
    model: &Gpt2,
    block_size: usize,
    quick: bool,
    on_timing: impl FnMut(&Timing),
) -> Result<(CostModel, Vec<Timing>)> {
    let grid = MeasureGrid::for_context(model.config.n_positions, quick);
    let timings = measure(model, &grid, block_size, on_timing).await?;
    Ok((CostModel::fit(&timings)?, timings))
}

/// Times real steps of `model` over the grid; `on_timing` sees each as it is measured.
pub async fn measure(
    model: &Gpt2,
    grid: &MeasureGrid,
    block_size: usize,
    mut on_timing: impl FnMut(&Timing),
) -> Result<Vec<Timing>> {
    let most = grid.batches.iter().copied().max().unwrap_or(1);
    let longest = grid.contexts.iter().chain(&grid.prefills).copied().max().unwrap_or(1) + 1;
    let per_seq = longest.div_ceil(block_size);
    let mut blocks = BlockManager::new(most * per_seq, block_size)?;
    let mut runner = ModelRunner::new(model, most * per_seq, block_size)?;
    let tables: Vec<Vec<u32>> = (0..most)
        .map(|_| {
            let mut table = vec![];
            blocks.prepare_write(&mut table, 0, longest).expect("the pool was sized for the grid");
            table
        })
        .collect();
    let tokens: Vec<u32> = (0..longest as u32).map(|i| (i * 7919) % model.config.vocab_size as u32).collect();
    let mut shapes: Vec<Vec<Chunk<'_>>> = vec![];
    for &context in &grid.contexts {
        for &batch in &grid.batches {
            shapes.push(
                (0..batch)
                    .map(|b| Chunk {
                        tokens: &tokens[context..context + 1],
                        start: context,
                        table: &tables[b],
                        sample: true,
                    })
                    .collect(),
            );
        }
    }
    for &len in &grid.prefills {
        shapes.push(vec![Chunk { tokens: &tokens[..len], start: 0, table: &tables[0], sample: true }]);
    }
    let mut timings = vec![];
    for chunks in &shapes {
        let shape = StepShape {
            tokens: chunks.iter().map(|c| c.tokens.len()).sum(),
            samples: chunks.len(),
            pairs: chunks.iter().map(|c| pairs(c.start, c.tokens.len())).sum(),
        };
        for run in 0..=grid.repeats {
            let start = Instant::now();
            let logits = runner.forward_chunks(chunks, &[])?;
            readback::wait(logits).await?;
            if run > 0 {
                let timing = Timing { shape, ms: start.elapsed().as_secs_f64() * 1000.0 };
                on_timing(&timing);
                timings.push(timing);
            }
        }
    }
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_cost() {
        let truth = CostModel { base_ms: 3.0, per_token_ms: 0.5, per_sample_ms: 0.25, per_kilo_pair_ms: 0.1 };
        let timings: Vec<Timing> = [(1, 1, 10), (8, 8, 800), (64, 1, 2080), (4, 4, 40), (16, 1, 136), (32, 32, 4000)]
            .into_iter()
            .map(|(tokens, samples, pairs)| {
                let shape = StepShape { tokens, samples, pairs };
                Timing { shape, ms: truth.step_ms(&shape) }
            })
            .collect();
        let fit = CostModel::fit(&timings).unwrap();
        for (a, b) in
            [(fit.base_ms, 3.0), (fit.per_token_ms, 0.5), (fit.per_sample_ms, 0.25), (fit.per_kilo_pair_ms, 0.1)]
        {
            assert!((a - b).abs() < 1e-6, "{fit:?}");
        }
        assert!(fit.mean_error_pct(&timings) < 1e-6);
    }

    #[test]
    fn adaptive_batching_stops_where_throughput_flattens() {
        // Step time flat up to ~8 rows, then linear: throughput saturates.
        let cost = CostModel { base_ms: 10.0, per_token_ms: 1.25, per_sample_ms: 0.0, per_kilo_pair_ms: 0.0 };
        let b = cost.adaptive_batch(64, 100);
        assert!((30..=64).contains(&b), "{b}");
        let flat = CostModel { base_ms: 10.0, per_token_ms: 0.0, per_sample_ms: 0.0, per_kilo_pair_ms: 0.0 };
        assert_eq!(flat.adaptive_batch(16, 100), 15, "throughput grows with the batch: take nearly all");
    }
}
