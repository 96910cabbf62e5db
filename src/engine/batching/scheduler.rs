//! The schedulers: each step, which tokens of which sequences run, and which KV blocks they
//! write. Sequences, token counts and block tables only — no tensors (nano-vllm's
//! `scheduler.py` / `block_manager.py` split), so the real engine and the simulator drive the
//! very same code.
//!
//! - **static**: waits for `max_batch` requests, reserves each one's whole length in blocks,
//!   and runs the batch until its last member finishes; finished members keep their seat
//!   (a padded row) and newcomers wait for the next batch.
//! - **dynamic**: the same batches, started as soon as `max_batch` requests wait or the oldest
//!   has waited `max_wait_ms` (adaptive: the same with `max_batch` chosen from the measured
//!   step-cost curve, see `simulate.rs`).
//! - **continuous** (Orca's iteration-level scheduling, vLLM's paged blocks): every step first
//!   serves the running sequences, then admits waiting ones while the token budget, the seat
//!   count and free blocks allow; a finished sequence leaves at once; when blocks run out the
//!   newest running sequence is preempted (its blocks freed, recomputed later). Long prompts
//!   can be chunked, so prefill and decode share steps.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::sequence::{Finish, Phase, Request, Sequence};
use crate::engine::error::{EngineError, Result};
use crate::engine::kv::blocks::{BlockCopy, BlockManager};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Static,
    Dynamic,
    Adaptive,
    Continuous,
}

impl Policy {
    pub const ALL: [Policy; 4] = [Policy::Static, Policy::Dynamic, Policy::Adaptive, Policy::Continuous];

    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dynamic => "dynamic",
            Self::Adaptive => "adaptive",
            Self::Continuous => "continuous",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            EngineError::Request(format!("unknown policy {s:?}; use static, dynamic, adaptive or continuous"))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    pub policy: Policy,
    /// Most sequences in a batch (static, dynamic) or running at once (continuous).
    pub max_batch: usize,
    /// Dynamic batching: the longest the oldest waiting request waits for a fuller batch.
    pub max_wait_ms: f64,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Continuous batching: most tokens one step computes.
    pub token_budget: usize,
    /// Continuous batching: most prompt tokens of one sequence per step (chunked prefill);
    /// `None` computes a prompt in one step.
    pub chunk_tokens: Option<usize>,
    /// Reuse computed full blocks of identical prompt prefixes.
    pub prefix_caching: bool,
    /// The model's context (n_positions): no sequence may grow past it.
    pub max_context: usize,
}

impl SchedulerConfig {
    pub fn new(policy: Policy, max_context: usize) -> Self {
        Self {
            policy,
            max_batch: 8,
            max_wait_ms: 50.0,
            block_size: crate::engine::kv::DEFAULT_BLOCK_SIZE,
            num_blocks: 256,
            token_budget: 512,
            chunk_tokens: None,
            prefix_caching: true,
            max_context,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(EngineError::Request(msg));
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1".into());
        }
        if !(self.max_wait_ms.is_finite() && self.max_wait_ms >= 0.0) {
            return bad(format!("max_wait_ms must be a finite number >= 0, got {}", self.max_wait_ms));
        }
        if self.block_size == 0 {
            return bad("block size must be at least 1 token".into());
        }
        if self.num_blocks == 0 {
            return bad("the KV pool needs at least 1 block".into());
        }
        if self.token_budget == 0 || self.chunk_tokens == Some(0) {
            return bad("the token budget and the chunk size must be at least 1 token".into());
        }
        Ok(())
    }
}

/// One sequence's share of a step: tokens `start..start + len` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepItem {
    pub seq: usize,
    pub start: usize,
    pub len: usize,
    /// The chunk ends at the sequence's last token: its logits choose the next token.
    pub sample: bool,
    /// A finished member of a static or dynamic batch, recomputing its last token to no end.
    pub padding: bool,
}

/// What one step runs.
#[derive(Debug, Clone, Default)]
pub struct ScheduledStep {
    pub items: Vec<StepItem>,
    /// Blocks to copy before it runs (copy-on-write).
    pub copies: Vec<BlockCopy>,
}

impl ScheduledStep {
    pub fn tokens(&self) -> usize {
        self.items.iter().map(|i| i.len).sum()
    }
}

pub struct Scheduler {
    pub config: SchedulerConfig,
    pub blocks: BlockManager,
    /// Every sequence ever added, by id.
    pub seqs: Vec<Sequence>,
    waiting: VecDeque<usize>,
    running: Vec<usize>,
    /// No more requests will arrive (lets a static batch start short).
    closed: bool,
    pub preemptions: usize,
    /// Ids of forgotten sequences, reused by `add` so a long-running server's table stays as
    /// large as its peak load, not its history.
    free_ids: Vec<usize>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            blocks: BlockManager::new(config.num_blocks, config.block_size)?,
            config,
            seqs: vec![],
            waiting: VecDeque::new(),
            running: vec![],
            closed: false,
            preemptions: 0,
            free_ids: vec![],
        })
    }

    /// Queues a request; refuses one that could never run (empty, past the context, larger
    /// than the whole pool) with a message saying why. Returns its sequence id.
    pub fn add(&mut self, request: Request) -> Result<usize> {
        let total = request.prompt.len() + request.max_new_tokens;
        let refuse = |msg: String| Err(EngineError::Request(msg));
        if request.prompt.is_empty() {
            return refuse("the prompt is empty".into());
        }
        if request.max_new_tokens == 0 {
            return refuse("max_new_tokens must be at least 1".into());
        }
        if total > self.config.max_context {
            return refuse(format!(
                "a {}-token prompt plus {} new tokens exceeds the model's context of {} tokens",
                request.prompt.len(),
                request.max_new_tokens,
                self.config.max_context
            ));
        }
        let needed = self.blocks.blocks_for(total);
        if needed > self.config.num_blocks {
            return refuse(format!(
                "{total} tokens need {needed} blocks of {}, but the whole KV pool has {}",
                self.config.block_size, self.config.num_blocks
            ));
        }
        request.sampling.validate()?;
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.seqs[id] = Sequence::new(id, request);
                id
            }
            None => {
                self.seqs.push(Sequence::new(self.seqs.len(), request));
                self.seqs.len() - 1
            }
        };
        self.waiting.push_back(id);
        Ok(id)
    }

    /// Stops a sequence wherever it is (waiting or running) and frees its blocks at once.
    pub fn abort(&mut self, id: usize, now_ms: f64) {
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        let seq = &mut self.seqs[id];
        self.blocks.free(&mut seq.block_table);
        if seq.finish.is_none() {
            seq.finish = Some(Finish::Aborted);
            seq.finished_ms = Some(now_ms);
        }
    }

    /// Drops a finished sequence that no batch holds any more (its tokens, its timeline) and
    /// lets `add` reuse its id. Returns false, keeping it, while it still sits in a batch.
    pub fn forget(&mut self, id: usize) -> bool {
        if !self.seqs[id].is_finished() || self.running.contains(&id) {
            return false;
        }
        let seq = &mut self.seqs[id];
        seq.tokens = vec![];
        seq.request.prompt = vec![];
        seq.spans = vec![];
        self.free_ids.push(id);
        true
    }

    /// Sequences waiting for their first (or, after a preemption, next) step.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// No more requests will come.
    pub fn close(&mut self) {
        self.closed = true;
    }

    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn running(&self) -> &[usize] {
        &self.running
    }

    /// When the scheduler wants to look again although nothing arrives: dynamic batching's
    /// deadline for the oldest waiting request.
    pub fn next_wake(&self) -> Option<f64> {
        match self.config.policy {
            Policy::Dynamic | Policy::Adaptive if self.running.is_empty() => {
                self.waiting.front().map(|&id| self.seqs[id].request.arrival_ms + self.config.max_wait_ms)
            }
            _ => None,
        }
    }

    /// The next step at time `now_ms`, or `None` when nothing can run yet.
    pub fn schedule(&mut self, now_ms: f64) -> Option<ScheduledStep> {
        let step = match self.config.policy {
            Policy::Continuous => self.schedule_continuous(now_ms),
            Policy::Static | Policy::Dynamic | Policy::Adaptive => self.schedule_batch(now_ms),
        };
        (!step.items.is_empty()).then_some(step)
    }

    /// How many of `want` tokens a sequence gets with `budget` left this step.
    fn chunk(&self, want: usize, budget: usize, step_empty: bool) -> usize {
        if want <= 1 {
            return want.min(budget);
        }
        let want = want.min(self.config.chunk_tokens.unwrap_or(usize::MAX));
        match self.config.chunk_tokens {
            Some(_) => want.min(budget),
            // Unchunked prompts run whole; one that exceeds the budget runs alone.
            None if want <= budget || step_empty => want,
            None => 0,
        }
    }

    fn schedule_continuous(&mut self, now_ms: f64) -> ScheduledStep {
        let mut step = ScheduledStep::default();
        let mut budget = self.config.token_budget;
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            // A running sequence has at least its last token pending, and budget is left: n ≥ 1.
            let n = self.chunk(self.seqs[id].pending(), budget, step.items.is_empty());
            let seq = &mut self.seqs[id];
            let from = seq.num_computed;
            match self.blocks.prepare_write(&mut seq.block_table, from, from + n) {
                Ok(copies) => {
                    step.copies.extend(copies);
                    step.items.push(StepItem {
                        seq: id,
                        start: from,
                        len: n,
                        sample: from + n == seq.tokens.len(),
                        padding: false,
                    });
                    budget = budget.saturating_sub(n);
                    i += 1;
                }
                Err(_) => {
                    // Out of blocks: the newest running sequence makes room (maybe this one).
                    let victim = *self.running.last().expect("this sequence is running");
                    self.preempt(victim, now_ms);
                    preempted = true;
                }
            }
        }
        // vLLM's rule: a step that had to preempt admits nobody.
        while !preempted && budget > 0 && self.running.len() < self.config.max_batch {
            let Some(&id) = self.waiting.front() else { break };
            let prefix_caching = self.config.prefix_caching;
            let seq = &mut self.seqs[id];
            if prefix_caching && seq.num_computed == 0 {
                let cached = self.blocks.match_prefix(&seq.tokens, &mut seq.block_table);
                seq.num_computed = cached;
                seq.cached_tokens += cached;
            }
            let n = self.chunk(self.seqs[id].pending(), budget, step.items.is_empty());
            let seq = &mut self.seqs[id];
            let from = seq.num_computed;
            let copies =
                if n == 0 { None } else { self.blocks.prepare_write(&mut seq.block_table, from, from + n).ok() };
            let Some(copies) = copies else {
                // Not this step: give back what the prefix match took.
                seq.cached_tokens -= seq.num_computed;
                seq.num_computed = 0;
                self.blocks.free(&mut seq.block_table);
                break;
            };
            step.copies.extend(copies);
            step.items.push(StepItem {
                seq: id,
                start: from,
                len: n,
                sample: from + n == seq.tokens.len(),
                padding: false,
            });
            budget = budget.saturating_sub(n);
            self.waiting.pop_front();
            self.running.push(id);
        }
        step
    }

    fn preempt(&mut self, id: usize, now_ms: f64) {
        self.running.retain(|&r| r != id);
        let seq = &mut self.seqs[id];
        self.blocks.free(&mut seq.block_table);
        seq.num_computed = 0;
        seq.preemptions += 1;
        seq.mark(Phase::Preempted, now_ms, now_ms);
        self.waiting.push_front(id);
        self.preemptions += 1;
    }

    fn schedule_batch(&mut self, now_ms: f64) -> ScheduledStep {
        if self.running.is_empty() {
            let full = self.waiting.len() >= self.config.max_batch;
            let last_call = self.closed && !self.waiting.is_empty();
            let timed_out =
                self.config.policy != Policy::Static && self.next_wake().is_some_and(|deadline| now_ms >= deadline);
            if !(full || last_call || timed_out) {
                return ScheduledStep::default();
            }
            // Each member reserves its whole length: a static batch never preempts.
            while self.running.len() < self.config.max_batch {
                let Some(&id) = self.waiting.front() else { break };
                let seq = &mut self.seqs[id];
                let total = seq.max_len();
                if self.blocks.prepare_write(&mut seq.block_table, 0, total).is_err() {
                    break;
                }
                self.waiting.pop_front();
                self.running.push(id);
            }
        }
        let items = self
            .running
            .iter()
            .map(|&id| {
                let seq = &self.seqs[id];
                if seq.is_finished() {
                    StepItem { seq: id, start: seq.tokens.len() - 1, len: 1, sample: false, padding: true }
                } else {
                    StepItem { seq: id, start: seq.num_computed, len: seq.pending(), sample: true, padding: false }
                }
            })
            .collect();
        ScheduledStep { items, copies: vec![] }
    }

    /// Books a step that ran from `start_ms` to `end_ms`; `sampled` holds one token per item
    /// with `sample`, in order. Returns the ids of the sequences that finished.
    pub fn complete(&mut self, step: &ScheduledStep, sampled: &[u32], start_ms: f64, end_ms: f64) -> Vec<usize> {
        let mut tokens = sampled.iter();
        let mut finished = vec![];
        for item in &step.items {
            let seq = &mut self.seqs[item.seq];
            let last = seq.spans.last().map_or(start_ms, |s| s.end_ms);
            if start_ms > last {
                let gap = if seq.spans.last().is_some_and(|s| s.phase == Phase::Preempted) {
                    Phase::Preempted
                } else {
                    Phase::Queued
                };
                seq.mark(gap, last, start_ms);
            }
            seq.scheduled_ms.get_or_insert(start_ms);
            let phase = if item.padding {
                Phase::Padding
            } else if item.len == 1 && seq.first_token_ms.is_some() {
                Phase::Decode
            } else {
                Phase::Prefill
            };
            seq.mark(phase, start_ms, end_ms);
            if item.padding {
                continue;
            }
            seq.num_computed = item.start + item.len;
            if self.config.prefix_caching {
                self.blocks.register_full(&seq.block_table, &seq.tokens, seq.num_computed);
            }
            if item.sample {
                let id = *tokens.next().expect("a token for every sampling item");
                if seq.push_token(id, end_ms) {
                    finished.push(item.seq);
                }
            }
        }
        match self.config.policy {
            Policy::Continuous => {
                for &id in &finished {
                    self.running.retain(|&r| r != id);
                    self.blocks.free(&mut self.seqs[id].block_table);
                }
            }
            _ if self.running.iter().all(|&id| self.seqs[id].is_finished()) => {
                for id in std::mem::take(&mut self.running) {
                    self.blocks.free(&mut self.seqs[id].block_table);
                }
            }
            _ => {}
        }
        finished
    }

    /// Slots allocated to running sequences but holding no token, and slots allocated.
    pub fn slot_use(&self) -> (usize, usize) {
        let bs = self.config.block_size;
        let allocated = self.blocks.used_blocks() * bs;
        let empty: usize = self
            .running
            .iter()
            .map(|&id| {
                let seq = &self.seqs[id];
                (seq.block_table.len() * bs).saturating_sub(seq.num_computed)
            })
            .sum();
        (empty.min(allocated), allocated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::decode::sampling::SamplingParams;

    fn request(prompt_len: u32, max_new_tokens: usize) -> Request {
        Request {
            prompt: (1..=prompt_len).collect(),
            max_new_tokens,
            sampling: SamplingParams::default(),
            eos_token_ids: vec![],
            arrival_ms: 0.0,
            logprobs: None,
        }
    }

    /// One step from `t` to `t + 1` ms, as an engine would run it, sampling token 7.
    fn step(s: &mut Scheduler, t: f64) {
        let step = s.schedule(t).expect("work to do");
        let sampled = vec![7; step.items.iter().filter(|i| i.sample).count()];
        s.complete(&step, &sampled, t, t + 1.0);
    }

    fn phases(s: &Scheduler, id: usize) -> Vec<Phase> {
        s.seqs[id].spans.iter().map(|span| span.phase).collect()
    }

    /// `--policy` takes these names, and `simulate`'s JSON is keyed by them.
    #[test]
    fn policies_have_the_names_the_cli_and_json_use() {
        let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["static", "dynamic", "adaptive", "continuous"]);
        for policy in Policy::ALL {
            assert_eq!(policy.name().parse::<Policy>().unwrap(), policy);
        }
    }

    /// A one-token prompt's first step computes its prompt (prefill), not a decode step.
    #[test]
    fn a_one_token_prompt_starts_with_prefill() {
        let mut s = Scheduler::new(SchedulerConfig::new(Policy::Continuous, 64)).unwrap();
        let id = s.add(request(1, 3)).unwrap();
        assert_eq!(s.waiting(), 1);
        step(&mut s, 0.0);
        assert_eq!(s.waiting(), 0);
        step(&mut s, 1.0);
        assert_eq!(phases(&s, id), [Phase::Queued, Phase::Prefill, Phase::Decode]);
    }

    /// Two sequences that outgrow a 4-block pool: the newer is preempted when the older needs
    /// a third block, and its recompute (prompt and generated tokens at once) is prefill again.
    #[test]
    fn a_preempted_sequence_waits_and_recomputes_as_prefill() {
        let config = SchedulerConfig {
            block_size: 2,
            num_blocks: 4,
            prefix_caching: false,
            ..SchedulerConfig::new(Policy::Continuous, 64)
        };
        let mut s = Scheduler::new(config).unwrap();
        let (a, b) = (s.add(request(2, 4)).unwrap(), s.add(request(2, 4)).unwrap());
        for t in 0..5 {
            step(&mut s, f64::from(t));
        }
        assert_eq!(s.preemptions, 1);
        assert_eq!(phases(&s, a), [Phase::Queued, Phase::Prefill, Phase::Decode]);
        assert_eq!(phases(&s, b), [Phase::Queued, Phase::Prefill, Phase::Decode, Phase::Preempted, Phase::Prefill]);
        assert!(s.seqs.iter().all(|seq| seq.generated().len() == 4), "both finish");
        assert!(!s.has_unfinished());
    }
}
