//! A request as the scheduler sees it: token ids, how many of them have their K/V in the
//! cache, the blocks that hold them, and the times that become its latency statistics.
//! One rule drives everything (vLLM v1): `num_computed` catches up with `tokens.len()`;
//! a prefill, a chunk of one, a decode step and a recompute after preemption are all that.

use serde::{Deserialize, Serialize};

use crate::engine::decode::sampling::SamplingParams;
use crate::engine::kv::blocks::BlockId;

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Generation stops after any of these (kept, as in transformers).
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    /// When it arrives, from the start of the run.
    #[serde(default)]
    pub arrival_ms: f64,
    /// Also return the log-probability of each chosen token and of this many top alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    Eos,
    MaxNewTokens,
    /// Stopped from outside: its client left, a stop string matched, or its deadline passed.
    Aborted,
}

/// What a sequence did during one step, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a batch or for blocks.
    Queued,
    /// Computing prompt tokens (or recomputing after a preemption).
    Prefill,
    /// One new token a step.
    Decode,
    /// Finished, but its batch runs on (static and dynamic batching): wasted compute.
    Padding,
    /// Evicted for blocks; waits to be recomputed.
    Preempted,
}

/// A span of one phase on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub phase: Phase,
    pub start_ms: f64,
    pub end_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: usize,
    pub request: Request,
    /// Prompt, then generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens whose K/V are in the cache.
    pub num_computed: usize,
    pub block_table: Vec<BlockId>,
    pub finish: Option<Finish>,
    pub preemptions: usize,
    /// First time it was scheduled, its first token, its end.
    pub scheduled_ms: Option<f64>,
    pub first_token_ms: Option<f64>,
    pub finished_ms: Option<f64>,
    /// Prompt tokens found in the prefix cache (not computed).
    pub cached_tokens: usize,
    pub spans: Vec<Span>,
}

impl Sequence {
    pub fn new(id: usize, request: Request) -> Self {
        let arrival = request.arrival_ms;
        Self {
            id,
            tokens: request.prompt.clone(),
            request,
            num_computed: 0,
            block_table: vec![],
            finish: None,
            preemptions: 0,
            scheduled_ms: None,
            first_token_ms: None,
            finished_ms: None,
            cached_tokens: 0,
            spans: vec![Span { phase: Phase::Queued, start_ms: arrival, end_ms: arrival }],
        }
    }

    pub fn prompt_len(&self) -> usize {
        self.request.prompt.len()
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len()..]
    }

    /// Tokens it will hold at most: its reservation under static batching.
    pub fn max_len(&self) -> usize {
        self.prompt_len() + self.request.max_new_tokens
    }

    /// Tokens still to compute before the next one can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Records a phase from `start` to `end`, extending the last span when it continues it.
    pub fn mark(&mut self, phase: Phase, start_ms: f64, end_ms: f64) {
        match self.spans.last_mut() {
            Some(last) if last.phase == phase && (start_ms - last.end_ms).abs() < 1e-9 => last.end_ms = end_ms,
            _ => self.spans.push(Span { phase, start_ms, end_ms }),
        }
    }

    /// Appends a sampled token; returns whether the sequence is now finished.
    pub fn push_token(&mut self, id: u32, now_ms: f64) -> bool {
        self.tokens.push(id);
        self.first_token_ms.get_or_insert(now_ms);
        self.finish = if self.request.eos_token_ids.contains(&id) {
            Some(Finish::Eos)
        } else if self.generated().len() >= self.request.max_new_tokens {
            Some(Finish::MaxNewTokens)
        } else {
            None
        };
        if self.finish.is_some() {
            self.finished_ms = Some(now_ms);
        }
        self.finish.is_some()
    }
}
