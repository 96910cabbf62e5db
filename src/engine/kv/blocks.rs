//! The block manager of the paged KV cache (vLLM's, nano-vllm's `block_manager.py`): which
//! fixed-size blocks of the pool each sequence owns. It knows block ids, reference counts and
//! token ids — never tensors — so the schedulers and the simulator use it as it is.
//!
//! - A sequence's **block table** lists its blocks in order: token `p` lives in slot
//!   `table[p / block_size] * block_size + p % block_size` of the pool.
//! - **Reference counts** let tables share blocks (a common prompt prefix, beam forks); a
//!   shared block that is about to be written is first copied (**copy-on-write**).
//! - **Prefix caching**: every full block is registered under a hash of its tokens chained
//!   with its prefix's hash. A freed block keeps its content and registration until the pool
//!   hands it out again (least recently freed first), so a later prompt that starts with the
//!   same full blocks takes them instead of recomputing them. The hash only finds a candidate:
//!   a block is reused only if its tokens are the prompt's and it was computed after the very
//!   registration of the block before it, so a hash collision costs a recompute, never a
//!   wrong answer.
//! - Running out of blocks is an ordinary answer ([`Exhausted`]): the scheduler preempts.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use crate::engine::error::{EngineError, Result};

pub type BlockId = u32;

/// Not enough free blocks: `needed` more than the pool has free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub needed: usize,
}

/// A block to copy before the step runs (copy-on-write): all slots of `from` into `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    pub from: BlockId,
    pub to: BlockId,
}

/// What a full, computed block holds, for prefix caching.
#[derive(Debug, Clone, PartialEq)]
struct Registration {
    hash: u64,
    tokens: Vec<u32>,
    /// The registration of the block before it (`None` for a first block): its K/V were
    /// computed after exactly that content.
    parent: Option<(BlockId, u64)>,
    /// Unique per registration: a block registered anew (other content) gets a new one.
    generation: u64,
}

/// The prefix hash of a block: its tokens chained with the hash of the block before it.
pub type PrefixHasher = fn(prev: u64, tokens: &[u32]) -> u64;

#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    ref_counts: Vec<u32>,
    /// Blocks with no owner, least recently freed first.
    free: VecDeque<BlockId>,
    /// Each registered (full, computed) block's content.
    registered: Vec<Option<Registration>>,
    by_hash: HashMap<u64, BlockId>,
    hasher: PrefixHasher,
    generations: u64,
    /// Full prompt blocks looked up in the prefix cache, and how many were found.
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    /// Hash hits refused because the block held other tokens, or the same after another prefix.
    pub prefix_collisions: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(EngineError::Request("block size must be at least 1 token".into()));
        }
        if num_blocks == 0 || num_blocks > u32::MAX as usize {
            return Err(EngineError::Request(format!("the KV pool needs 1 to {} blocks, got {num_blocks}", u32::MAX)));
        }
        Ok(Self {
            block_size,
            ref_counts: vec![0; num_blocks],
            free: (0..num_blocks as BlockId).collect(),
            registered: vec![None; num_blocks],
            by_hash: HashMap::new(),
            hasher: block_hash,
            generations: 0,
            prefix_queries: 0,
            prefix_hits: 0,
            prefix_collisions: 0,
        })
    }

    /// The same pool with another prefix hash (tests force collisions with it).
    pub fn with_hasher(self, hasher: PrefixHasher) -> Self {
        Self { hasher, ..self }
    }

    pub fn num_blocks(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    pub fn used_blocks(&self) -> usize {
        self.num_blocks() - self.free.len()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Takes the least recently freed block, forgetting what it held.
    fn take_free(&mut self) -> BlockId {
        let block = self.free.pop_front().expect("callers check free_blocks first");
        self.unregister(block);
        self.ref_counts[block as usize] = 1;
        block
    }

    /// Forgets what `block` held for prefix caching.
    fn unregister(&mut self, block: BlockId) {
        if let Some(old) = self.registered[block as usize].take()
            && self.by_hash.get(&old.hash) == Some(&block)
        {
            self.by_hash.remove(&old.hash);
        }
    }

    /// Prefix caching for a sequence about to be admitted with an empty `table`: appends the
    /// registered blocks that hold its first full blocks and returns how many tokens they
    /// cover. At least one token is always left to compute (its logits pick the next token).
    pub fn match_prefix(&mut self, tokens: &[u32], table: &mut Vec<BlockId>) -> usize {
        debug_assert!(table.is_empty());
        let bs = self.block_size;
        let full = tokens.len().saturating_sub(1) / bs;
        self.prefix_queries += full as u64;
        let (mut prev, mut parent) = (0, None);
        for chunk in tokens[..full * bs].chunks_exact(bs) {
            let hash = (self.hasher)(prev, chunk);
            let Some(&block) = self.by_hash.get(&hash) else { break };
            let Some(found) = &self.registered[block as usize] else { break };
            if found.tokens != chunk || found.parent != parent {
                self.prefix_collisions += 1;
                break;
            }
            parent = Some((block, found.generation));
            if self.ref_counts[block as usize] == 0 {
                self.free.retain(|&b| b != block);
            }
            self.ref_counts[block as usize] += 1;
            self.prefix_hits += 1;
            table.push(block);
            prev = hash;
        }
        table.len() * bs
    }

    /// Makes `table` ready for tokens `from..to` to be written: blocks appended up to `to`,
    /// and any shared block in the written range replaced by a private copy (returned, for
    /// the cache to copy before the step). Changes nothing when the pool is short.
    pub fn prepare_write(
        &mut self,
        table: &mut Vec<BlockId>,
        from: usize,
        to: usize,
    ) -> std::result::Result<Vec<BlockCopy>, Exhausted> {
        let bs = self.block_size;
        let first = from / bs;
        let shared: Vec<usize> =
            (first..table.len().min(to.div_ceil(bs))).filter(|&i| self.ref_counts[table[i] as usize] > 1).collect();
        let appended = self.blocks_for(to).saturating_sub(table.len());
        let needed = shared.len() + appended;
        if needed > self.free.len() {
            return Err(Exhausted { needed: needed - self.free.len() });
        }
        let mut copies = Vec::with_capacity(shared.len());
        for i in shared {
            let from_block = table[i];
            self.ref_counts[from_block as usize] -= 1;
            let to_block = self.take_free();
            copies.push(BlockCopy { from: from_block, to: to_block });
            table[i] = to_block;
        }
        for _ in 0..appended {
            let block = self.take_free();
            table.push(block);
        }
        Ok(copies)
    }

    /// Registers the full blocks among the first `computed` tokens of a sequence for prefix
    /// caching (those already registered are skipped).
    pub fn register_full(&mut self, table: &[BlockId], tokens: &[u32], computed: usize) {
        let bs = self.block_size;
        let (mut prev, mut parent) = (0, None);
        for (i, chunk) in tokens[..computed.min(tokens.len())].chunks_exact(bs).enumerate() {
            let block = table[i];
            if self.registered[block as usize].is_none() {
                let hash = (self.hasher)(prev, chunk);
                self.generations += 1;
                let generation = self.generations;
                self.registered[block as usize] =
                    Some(Registration { hash, tokens: chunk.to_vec(), parent, generation });
                self.by_hash.insert(hash, block);
            }
            let registered = self.registered[block as usize].as_ref().expect("registered above");
            (prev, parent) = (registered.hash, Some((block, registered.generation)));
        }
    }

    /// Gives a table's blocks back. Blocks nobody else owns become free, the table's tail
    /// first, so a prompt's head stays cached the longest.
    pub fn free(&mut self, table: &mut Vec<BlockId>) {
        for &block in table.iter().rev() {
            let count = &mut self.ref_counts[block as usize];
            *count -= 1;
            if *count == 0 {
                self.free.push_back(block);
            }
        }
        table.clear();
    }

    /// A second table sharing every block of `table` (a beam fork): nothing is copied until
    /// one of them writes into a shared block.
    pub fn fork(&mut self, table: &[BlockId]) -> Vec<BlockId> {
        for &block in table {
            self.ref_counts[block as usize] += 1;
        }
        table.to_vec()
    }

    /// Shrinks a table to hold `tokens` tokens (rolling back rejected speculative tokens).
    /// A kept private block that is no longer full loses its prefix-cache registration, since
    /// its tail will be overwritten.
    pub fn truncate(&mut self, table: &mut Vec<BlockId>, tokens: usize) {
        let keep = self.blocks_for(tokens);
        if keep < table.len() {
            let mut tail = table.split_off(keep);
            self.free(&mut tail);
        }
        if !tokens.is_multiple_of(self.block_size)
            && let Some(&last) = table.last()
            && self.ref_counts[last as usize] == 1
        {
            self.unregister(last);
        }
    }

    /// Share of looked-up full prompt blocks found in the prefix cache (0 when none looked up).
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prefix_queries == 0 { 0.0 } else { self.prefix_hits as f64 / self.prefix_queries as f64 }
    }
}

/// The default prefix hash (std's SipHash): collisions are astronomically rare, and harmless.
fn block_hash(prev: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_grow_block_by_block_and_free_everything() {
        let mut m = BlockManager::new(4, 2).unwrap();
        let mut t = vec![];
        assert_eq!(m.prepare_write(&mut t, 0, 3).unwrap(), vec![]);
        assert_eq!(t.len(), 2);
        m.prepare_write(&mut t, 3, 4).unwrap();
        assert_eq!(t.len(), 2, "token 3 fits the second block");
        assert_eq!(m.prepare_write(&mut t, 4, 9), Err(Exhausted { needed: 1 }));
        assert_eq!(t.len(), 2, "a refused write changes nothing");
        m.free(&mut t);
        assert_eq!(m.free_blocks(), 4);
    }

    #[test]
    fn forks_copy_a_shared_block_on_write() {
        let mut m = BlockManager::new(8, 4).unwrap();
        let mut a = vec![];
        m.prepare_write(&mut a, 0, 6).unwrap();
        let mut b = m.fork(&a);
        assert_eq!(m.used_blocks(), 2);
        let copies = m.prepare_write(&mut b, 6, 7).unwrap();
        assert_eq!(copies, vec![BlockCopy { from: a[1], to: b[1] }]);
        assert_eq!(a[0], b[0], "the full first block stays shared");
        assert_ne!(a[1], b[1]);
        m.free(&mut a);
        m.free(&mut b);
        assert_eq!(m.free_blocks(), 8);
    }

    #[test]
    fn full_prompt_blocks_are_reused_after_their_owner_left() {
        let mut m = BlockManager::new(8, 2).unwrap();
        let prompt = [1, 2, 3, 4, 5];
        let mut a = vec![];
        assert_eq!(m.match_prefix(&prompt, &mut a), 0);
        m.prepare_write(&mut a, 0, 5).unwrap();
        m.register_full(&a, &prompt, 5);
        let kept = a.clone();
        m.free(&mut a);
        let mut b = vec![];
        assert_eq!(m.match_prefix(&[1, 2, 3, 4, 9, 9], &mut b), 4);
        assert_eq!(b, kept[..2]);
        assert_eq!((m.prefix_hits, m.prefix_queries), (2, 4));
        // The whole prompt cached still leaves its last token to compute.
        let mut c = vec![];
        assert_eq!(m.match_prefix(&[1, 2, 3, 4], &mut c), 2);
        m.free(&mut b);
        m.free(&mut c);
        assert_eq!(m.free_blocks(), 8);
    }

    /// Blocks holding `tokens`, registered, then freed: cached, owned by nobody.
    fn cached(m: &mut BlockManager, tokens: &[u32]) -> Vec<BlockId> {
        let mut t = vec![];
        m.prepare_write(&mut t, 0, tokens.len()).unwrap();
        m.register_full(&t, tokens, tokens.len());
        let blocks = t.clone();
        m.free(&mut t);
        blocks
    }

    #[test]
    fn different_prompts_share_exactly_their_common_full_blocks() {
        let mut m = BlockManager::new(16, 4).unwrap();
        let a = cached(&mut m, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let mut b = vec![];
        assert_eq!(m.match_prefix(&[1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23, 24], &mut b), 8);
        assert_eq!(b, a[..2], "the two shared blocks, not the third");
        // The same tokens after another prefix hold other keys and values: not reused.
        let mut c = vec![];
        assert_eq!(m.match_prefix(&[9, 9, 9, 9, 5, 6, 7, 8, 30], &mut c), 0);
        assert!(c.is_empty());
        m.free(&mut b);
        assert_eq!(m.free_blocks(), 16);
    }

    #[test]
    fn a_hash_collision_never_reuses_a_wrong_block() {
        // Every block hashes alike: the hash finds a candidate, the content check decides.
        let mut m = BlockManager::new(16, 4).unwrap().with_hasher(|_, _| 7);
        let a = cached(&mut m, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let probes = [&[5, 6, 7, 8, 1][..], &[9, 9, 9, 9, 5, 6, 7, 8, 1], &[1, 2, 3, 4, 5, 6, 7, 8, 1]];
        for probe in probes {
            let mut t = vec![];
            let reused = m.match_prefix(probe, &mut t);
            // Whatever is reused holds exactly the probe's tokens after exactly its prefix.
            for (i, &block) in t.iter().enumerate() {
                assert_eq!(block, a[i], "{probe:?}: block {i}");
            }
            assert_eq!(reused, t.len() * 4);
            m.free(&mut t);
        }
        assert_eq!(m.prefix_collisions, 3, "each probe met the one registered block under the same hash");
        // A hash that forgets the prefix: the same tokens after another block collide.
        let forgetful: PrefixHasher = |_, tokens| tokens.iter().map(|&t| u64::from(t)).sum();
        let mut m = BlockManager::new(16, 4).unwrap().with_hasher(forgetful);
        cached(&mut m, &[9, 9, 9, 9, 5, 6, 7, 8]);
        let first = cached(&mut m, &[1, 2, 3, 4]);
        let mut t = vec![];
        assert_eq!(m.match_prefix(&[1, 2, 3, 4, 5, 6, 7, 8, 1], &mut t), 4);
        assert_eq!(t, first, "the first block only: [5, 6, 7, 8] was computed after [9, 9, 9, 9]");
        assert_eq!(m.prefix_collisions, 1);
        m.free(&mut t);
    }

    #[test]
    fn a_block_registered_anew_invalidates_its_old_children() {
        let forgetful: PrefixHasher = |_, tokens| tokens.iter().map(|&t| u64::from(t)).sum();
        let mut m = BlockManager::new(2, 2).unwrap().with_hasher(forgetful);
        let mut a = vec![];
        m.prepare_write(&mut a, 0, 4).unwrap();
        m.register_full(&a, &[1, 2, 3, 4], 4);
        // The first block alone is freed and handed out again for other tokens, while the
        // second, computed after [1, 2], stays registered (still owned).
        m.free(&mut vec![a[0]]);
        let mut b = vec![];
        m.prepare_write(&mut b, 0, 2).unwrap();
        assert_eq!(b, a[..1], "the freed block is the one handed out");
        m.register_full(&b, &[7, 8], 2);
        let mut probe = vec![];
        assert_eq!(m.match_prefix(&[7, 8, 3, 4, 9], &mut probe), 2, "[3, 4] was computed after [1, 2]");
        assert_eq!(probe, b);
        assert_eq!(m.prefix_collisions, 1);
    }

    #[test]
    fn truncation_frees_the_tail_and_unregisters_a_cut_block() {
        let mut m = BlockManager::new(4, 2).unwrap();
        let tokens = [7, 8, 9, 10];
        let mut t = vec![];
        m.prepare_write(&mut t, 0, 4).unwrap();
        m.register_full(&t, &tokens, 4);
        m.truncate(&mut t, 3);
        assert_eq!(t.len(), 2);
        let mut probe = vec![];
        assert_eq!(m.match_prefix(&[7, 8, 9, 10, 11], &mut probe), 2, "the cut block is no longer a cached prefix");
        m.free(&mut probe);
        m.truncate(&mut t, 1);
        assert_eq!(t.len(), 1);
        m.free(&mut t);
        assert_eq!(m.free_blocks(), 4);
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(BlockManager::new(4, 0).is_err());
        assert!(BlockManager::new(0, 16).is_err());
    }
}
