//! The model runner: turns a scheduled step into one batched forward over the paged cache.
//! Every sequence's chunk is flattened into one ragged row of tokens (its own positions, its
//! own block table), so a prefill chunk and many decode tokens share each matmul; logits are
//! computed only for the tokens that sample. Each sequence samples with its own seeded
//! sampler, so its text does not depend on what it was batched with.

use std::collections::HashMap;

use burn::tensor::{Int, Tensor};
use web_time::Instant;

use super::driver::Executor;
use super::scheduler::{ScheduledStep, Scheduler};
use crate::engine::decode::sampling::{Sampler, TokenLogprobs};
use crate::engine::error::Result;
use crate::engine::kv::KvCache;
use crate::engine::kv::blocks::{BlockCopy, BlockId};
use crate::engine::kv::paged::{PagedKv, Segment};
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

pub struct ModelRunner<'a> {
    model: &'a Gpt2,
    cache: KvCache,
    samplers: HashMap<usize, Sampler>,
}

impl<'a> ModelRunner<'a> {
    /// A runner with a pool of `num_blocks` blocks of `block_size` tokens on the model's device.
    pub fn new(model: &'a Gpt2, num_blocks: usize, block_size: usize) -> Result<Self> {
        let c = &model.config;
        let cache = KvCache::Paged(PagedKv::new(
            c.n_layer,
            c.n_embd,
            num_blocks,
            block_size,
            model.kv_dtype(),
            model.device(),
        )?);
        Ok(Self { model, cache, samplers: HashMap::new() })
    }

    /// One forward over ragged chunks (after copying `copies`): returns logits `[1, k, vocab]`
    /// for the chunks that sample (or for the last token, when none does).
    pub fn forward_chunks(&mut self, chunks: &[Chunk<'_>], copies: &[BlockCopy]) -> Result<Tensor<3>> {
        let (mut ids, mut positions, mut segments, mut rows) = (vec![], vec![], vec![], vec![]);
        for chunk in chunks {
            ids.extend_from_slice(chunk.tokens);
            positions.extend(chunk.start..chunk.start + chunk.tokens.len());
            segments.push(Segment { table: chunk.table.to_vec(), start: chunk.start, len: chunk.tokens.len() });
            if chunk.sample {
                rows.push(ids.len() - 1);
            }
        }
        let paged = self.cache.paged_mut().expect("the runner's cache is paged");
        paged.copy_blocks(copies);
        paged.schedule(segments);
        // A step of prompt chunks only still runs (to fill the cache); one row of logits suffices.
        if rows.is_empty() {
            rows.push(ids.len().saturating_sub(1));
        }
        let flat = Step { batch: 1, len: ids.len(), real: vec![true; ids.len()], ids, positions };
        self.model.forward(&flat, &mut self.cache, Logits::Rows(rows))
    }

    /// Runs one scheduled step: a token (and the log-probabilities its request asked for) per
    /// sampling item, in order.
    pub async fn run(&mut self, step: &ScheduledStep, scheduler: &Scheduler) -> Result<Vec<Sampled>> {
        let seqs = &scheduler.seqs;
        let chunks: Vec<Chunk<'_>> = step
            .items
            .iter()
            .map(|item| {
                let seq = &seqs[item.seq];
                Chunk {
                    tokens: &seq.tokens[item.start..item.start + item.len],
                    start: item.start,
                    table: &seq.block_table,
                    sample: item.sample,
                }
            })
            .collect();
        let logits = self.forward_chunks(&chunks, &step.copies)?;
        let sampling: Vec<usize> = step.items.iter().filter(|i| i.sample).map(|i| i.seq).collect();
        if sampling.is_empty() {
            // Nothing to sample, but the step's time must include its work: wait for it.
            readback::wait(logits).await?;
            return Ok(vec![]);
        }
        for &id in &sampling {
            if let std::collections::hash_map::Entry::Vacant(e) = self.samplers.entry(id) {
                e.insert(Sampler::new(seqs[id].request.sampling.clone())?);
            }
        }
        if sampling.iter().all(|&id| !self.samplers[&id].params().needs_logits() && seqs[id].request.logprobs.is_none())
        {
            let picked: Tensor<3, Int> = logits.argmax(2);
            return Ok(readback::ints(picked)
                .await?
                .into_iter()
                .map(|i| Sampled { token: i as u32, logprobs: None })
                .collect());
        }
        let vocab = self.model.config.vocab_size;
        let all = readback::floats(logits).await?;
        Ok(sampling
            .iter()
            .zip(all.chunks_exact(vocab))
            .map(|(&id, row)| {
                let sampler = self.samplers.get_mut(&id).expect("made above");
                let token = sampler.pick(&mut row.to_vec(), &seqs[id].tokens);
                Sampled { token, logprobs: seqs[id].request.logprobs.map(|k| TokenLogprobs::new(row, token, k)) }
            })
            .collect())
    }
}

/// A token a step chose for a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// Tokens `start..start + tokens.len()` of one sequence whose blocks `table` lists.
pub struct Chunk<'s> {
    pub tokens: &'s [u32],
    pub start: usize,
    pub table: &'s [BlockId],
    /// Whether its last token's logits are wanted.
    pub sample: bool,
}

impl Executor for ModelRunner<'_> {
    async fn execute(&mut self, step: &ScheduledStep, scheduler: &Scheduler) -> Result<(Vec<u32>, f64)> {
        let start = Instant::now();
        let tokens = self.run(step, scheduler).await?.into_iter().map(|s| s.token).collect();
        Ok((tokens, start.elapsed().as_secs_f64() * 1000.0))
    }

    fn release(&mut self, seq: usize) {
        self.samplers.remove(&seq);
    }
}
