//! The paged KV cache's tensors (vLLM's PagedAttention): per layer one K and one V **pool** of
//! `num_blocks · block_size` slots, a slot being one token's row `[n_embd]` (all heads side by
//! side, as the projections produce them). Which slots a sequence owns is the block manager's
//! business (`blocks.rs`); this side only writes and reads rows through block tables.
//!
//! A step is **ragged**: any number of sequences, each with its own count of new tokens and its
//! own start position, flattened into one `[tokens, n_embd]` batch, so that prefill chunks and
//! decode tokens share every matmul without padding. The batch runner hands the segments over
//! with [`PagedKv::schedule`]; a plain rectangular [`Step`] (`generate --kv paged`) makes each
//! row its own sequence in a private block manager.

use std::sync::OnceLock;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::Allocated;
use super::blocks::{BlockCopy, BlockId, BlockManager};
use super::dtype::KvDtype;
use super::mask::StepMask;
use crate::engine::error::{EngineError, Result};
use crate::engine::kernels::{KernelPath, paged as kernels};
use crate::engine::step::Step;
use crate::engine::step_uploads::StepUploads;

/// One sequence's part of a step: `len` new tokens at positions `start..start + len`, its
/// K/V (old and new) in the slots its `table` names.
#[derive(Debug, Clone)]
pub struct Segment {
    pub table: Vec<BlockId>,
    pub start: usize,
    pub len: usize,
}

impl Segment {
    /// Keys its last token attends to (its own included).
    pub fn context(&self) -> usize {
        self.start + self.len
    }
}

pub struct PagedKv {
    /// `(k, v)` pools per layer; `Option` so a pool can be moved out, written in place and put
    /// back without a second reference.
    layers: Vec<Option<(Tensor<2>, Tensor<2>)>>,
    block_size: usize,
    /// Segments of the next step, set by the batch runner.
    scheduled: Option<Vec<Segment>>,
    /// Block tables of a rectangular step's rows, when nobody schedules segments.
    rows: Option<RowTables>,
    device: Device,
}

/// Each row of rectangular steps as its own sequence, in a block manager of its own.
struct RowTables {
    /// Tokens each row can hold.
    capacity: usize,
    blocks: BlockManager,
    tables: Vec<Vec<BlockId>>,
    lens: Vec<usize>,
}

impl PagedKv {
    /// Element type and bytes of its buffers, read off them.
    pub fn allocated(&self) -> Allocated {
        Allocated::of(self.layers.iter().flatten().flat_map(|(k, v)| [k, v]))
    }

    /// Pools of `num_blocks` blocks of `block_size` slots for a model of `n_layer` × `n_embd`.
    pub fn new(
        n_layer: usize,
        n_embd: usize,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        if block_size == 0 || num_blocks == 0 {
            return Err(EngineError::Request(format!(
                "a paged KV cache needs blocks of at least 1 token and at least 1 block (got {num_blocks} × {block_size})"
            )));
        }
        let zeros = || dtype.zeros([num_blocks * block_size, n_embd], device);
        Ok(Self {
            layers: (0..n_layer).map(|_| Ok(Some((zeros()?, zeros()?)))).collect::<Result<_>>()?,
            block_size,
            scheduled: None,
            rows: None,
            device: device.clone(),
        })
    }

    /// A cache for rectangular steps of `batch` rows of at most `capacity` tokens each.
    pub fn for_rows(
        n_layer: usize,
        n_embd: usize,
        batch: usize,
        capacity: usize,
        block_size: usize,
        dtype: KvDtype,
        device: &Device,
    ) -> Result<Self> {
        let per_row = capacity.max(1).div_ceil(block_size.max(1));
        let mut cache = Self::new(n_layer, n_embd, batch * per_row, block_size, dtype, device)?;
        cache.rows = Some(RowTables {
            capacity: per_row * block_size,
            blocks: BlockManager::new(batch * per_row, block_size)?,
            tables: vec![vec![]; batch],
            lens: vec![0; batch],
        });
        Ok(cache)
    }

    /// The segments of the next step, in the order of its flattened tokens.
    pub fn schedule(&mut self, segments: Vec<Segment>) {
        self.scheduled = Some(segments);
    }

    /// Copies whole blocks (copy-on-write of a shared block), in every layer.
    pub fn copy_blocks(&mut self, copies: &[BlockCopy]) {
        if copies.is_empty() {
            return;
        }
        let bs = self.block_size;
        let slots = |pick: fn(&BlockCopy) -> BlockId| -> Vec<i64> {
            copies.iter().flat_map(|c| (0..bs).map(move |i| (pick(c) as usize * bs + i) as i64)).collect()
        };
        let (from, to) = (index_tensor(slots(|c| c.from), &self.device), index_tensor(slots(|c| c.to), &self.device));
        for layer in &mut self.layers {
            let (k, v) = layer.take().expect("pools are in place between steps");
            let copy = |pool: Tensor<2>| {
                let rows = pool.clone().select(0, from.clone());
                pool.select_assign(0, to.clone(), rows, burn::tensor::IndexingUpdateOp::Assign)
            };
            *layer = Some((copy(k), copy(v)));
        }
    }

    /// Books the step's slots (rectangular steps) or takes the scheduled segments, and builds
    /// the step's plan, shared by every layer.
    pub fn prepare(&mut self, step: &Step) -> Result<PagedPlan> {
        let segments = match (self.scheduled.take(), &mut self.rows) {
            (Some(segments), _) => {
                let tokens: usize = segments.iter().map(|s| s.len).sum();
                if step.batch != 1 || tokens != step.len {
                    return Err(EngineError::Request(format!(
                        "a scheduled paged step is one flat row of {tokens} tokens, got {} × {}",
                        step.batch, step.len
                    )));
                }
                segments
            }
            (None, Some(rows)) => {
                let (segments, copies) = rows.book(step)?;
                self.copy_blocks(&copies);
                segments
            }
            (None, None) => {
                return Err(EngineError::Request("nothing scheduled for this paged step".into()));
            }
        };
        let positions = segments.iter().flat_map(|s| s.start..s.context());
        let short = |s: &Segment| s.len == 0 || s.table.len() * self.block_size < s.context();
        if segments.iter().any(short) || !positions.eq(step.positions.iter().copied()) {
            return Err(EngineError::Request(
                "a paged step's positions do not match its segments' block tables".into(),
            ));
        }
        Ok(PagedPlan::new(segments, self.block_size, &self.device))
    }

    /// Stores one layer's new K/V rows `[tokens, n_embd]` in their slots and returns the
    /// attention output `[tokens, n_embd]` of the queries `q`.
    // One layer's q, k, v, the step's plan and the attention's shape: a struct for this one call
    // would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        layer: usize,
        q: Tensor<2>,
        k: Tensor<2>,
        v: Tensor<2>,
        plan: &PagedPlan,
        heads: usize,
        scale: f32,
        path: KernelPath,
    ) -> Tensor<2> {
        let pools = self.layers[layer].take().expect("each layer is attended once per step");
        let (pool_k, pool_v) = kernels::write(pools, (k, v), plan, path);
        self.layers[layer] = Some((pool_k.clone(), pool_v.clone()));
        kernels::attention(q, pool_k, pool_v, plan, heads, scale, path)
    }

    /// Rows of rectangular steps keep their first `tokens` tokens (speculative rollback); the
    /// blocks past them go back to the pool.
    pub fn truncate_rows(&mut self, tokens: usize) -> Result<()> {
        let rows = self.rows_mut()?;
        for (table, len) in rows.tables.iter_mut().zip(&mut rows.lens) {
            if tokens > *len {
                return Err(EngineError::Request(format!(
                    "cannot roll the KV cache back to {tokens} tokens: a row holds {len}"
                )));
            }
            rows.blocks.truncate(table, tokens);
            *len = tokens;
        }
        Ok(())
    }

    /// Row `parents[i]` becomes row `i` (beam reordering) by forking block tables: nothing is
    /// copied now; a shared block is copied only when a row writes into it (its last,
    /// partly filled block, at most one per row and step).
    pub fn reorder_rows(&mut self, parents: &[usize]) -> Result<()> {
        let rows = self.rows_mut()?;
        let forked: Vec<Vec<BlockId>> = parents.iter().map(|&p| rows.blocks.fork(&rows.tables[p])).collect();
        for mut old in std::mem::replace(&mut rows.tables, forked) {
            rows.blocks.free(&mut old);
        }
        rows.lens = parents.iter().map(|&p| rows.lens[p]).collect();
        Ok(())
    }

    /// Token slots in the blocks the rows hold (shared blocks once): the memory a beam
    /// search really uses.
    pub fn row_slots_held(&self) -> Option<usize> {
        self.rows.as_ref().map(|rows| rows.blocks.used_blocks() * self.block_size)
    }

    fn rows_mut(&mut self) -> Result<&mut RowTables> {
        self.rows.as_mut().ok_or_else(|| {
            EngineError::Request("this paged cache is scheduled by the batch runner, not by rows".into())
        })
    }
}

impl RowTables {
    /// Books the step's slots in every row's table; a block shared with another row (after a
    /// beam fork) is copied first, and the copies are returned.
    fn book(&mut self, step: &Step) -> Result<(Vec<Segment>, Vec<BlockCopy>)> {
        if step.batch != self.tables.len() {
            return Err(EngineError::Request(format!(
                "this paged cache holds {} rows, the step has {}",
                self.tables.len(),
                step.batch
            )));
        }
        if step.real.iter().any(|&r| !r) {
            return Err(EngineError::Request(
                "the paged cache takes ragged batches instead of padding; schedule segments".into(),
            ));
        }
        let mut segments = Vec::with_capacity(step.batch);
        let mut copies = vec![];
        let capacity = self.capacity;
        for (table, len) in self.tables.iter_mut().zip(&mut self.lens) {
            copies.extend(self.blocks.prepare_write(table, *len, *len + step.len).map_err(|_| {
                EngineError::Request(format!(
                    "the paged KV cache holds {capacity} tokens a row; {} more do not fit after {}",
                    step.len, *len
                ))
            })?);
            segments.push(Segment { table: table.clone(), start: *len, len: step.len });
            *len += step.len;
        }
        Ok((segments, copies))
    }
}

fn index_tensor(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// Everything the layers of one paged step share: where each new token's row goes, and how
/// its queries find their keys — as flat tables for the kernels, as index tensors for the
/// tensor-op path. Built on the host once per step; the tensor ops' gather and every device
/// copy are made on first use (the kernels never build the gather).
pub struct PagedPlan {
    pub segments: Vec<Segment>,
    pub block_size: usize,
    /// Pool slot of each new token.
    pub slot_mapping: Vec<i64>,
    /// For the kernel: each token's segment and position, each segment's offset into the
    /// concatenated block tables.
    pub token_segment: Vec<u32>,
    pub token_position: Vec<i32>,
    pub table_offsets: Vec<u32>,
    pub tables: Vec<u32>,
    device: Device,
    slot_tensor: OnceLock<Tensor<1, Int>>,
    gather: OnceLock<Gather>,
    /// Device buffers of the kernel path.
    pub uploads: StepUploads,
}

/// The tensor-op path's view of a step: decode rows and prefill rows, each gathered into a
/// padded batch, and the row of each token in the groups' concatenated outputs.
pub struct Gather {
    pub groups: Vec<GatherGroup>,
    back: Tensor<1, Int>,
}

/// Segments attended as one padded batch `[rows, queries, keys]` by the tensor-op path.
pub struct GatherGroup {
    /// Flat token index of each (row, query) (padding repeats a real one).
    pub queries: Vec<i64>,
    /// Pool slot of each (row, key position) (padding reads slot 0, masked).
    pub keys: Vec<i64>,
    pub mask: StepMask,
    query_tensor: OnceLock<Tensor<1, Int>>,
    key_tensor: OnceLock<Tensor<1, Int>>,
}

impl PagedPlan {
    fn new(segments: Vec<Segment>, block_size: usize, device: &Device) -> Self {
        Self {
            slot_mapping: segments
                .iter()
                .flat_map(|s| (s.start..s.context()).map(|p| pool_slot(&s.table, p, block_size)))
                .collect(),
            token_segment: segments
                .iter()
                .enumerate()
                .flat_map(|(i, s)| std::iter::repeat_n(i as u32, s.len))
                .collect(),
            token_position: segments.iter().flat_map(|s| (s.start..s.context()).map(|p| p as i32)).collect(),
            table_offsets: segments
                .iter()
                .scan(0, |off, s| Some(std::mem::replace(off, *off + s.table.len()) as u32))
                .collect(),
            tables: segments.iter().flat_map(|s| s.table.iter().copied()).collect(),
            segments,
            block_size,
            device: device.clone(),
            slot_tensor: OnceLock::new(),
            gather: OnceLock::new(),
            uploads: StepUploads::default(),
        }
    }

    pub fn slot_tensor(&self) -> Tensor<1, Int> {
        self.slot_tensor.get_or_init(|| index_tensor(self.slot_mapping.clone(), &self.device)).clone()
    }

    /// The tensor-op path's gather, built the first time a layer asks.
    pub fn gather(&self) -> &Gather {
        self.gather.get_or_init(|| self.build_gather())
    }

    fn build_gather(&self) -> Gather {
        let segments = &self.segments;
        let offsets: Vec<usize> =
            segments.iter().scan(0, |off, s| Some(std::mem::replace(off, *off + s.len))).collect();
        let mut back = vec![0; segments.iter().map(|s| s.len).sum()];
        let mut groups = vec![];
        let mut base = 0;
        for decode in [true, false] {
            let members: Vec<usize> = (0..segments.len()).filter(|&i| (segments[i].len == 1) == decode).collect();
            if members.is_empty() {
                continue;
            }
            let t = members.iter().map(|&i| segments[i].len).max().unwrap_or(1);
            let l = members.iter().map(|&i| segments[i].context()).max().unwrap_or(1);
            let (mut queries, mut keys, mut key_pos, mut query_pos) = (vec![], vec![], vec![], vec![]);
            for (row, &i) in members.iter().enumerate() {
                let s = &segments[i];
                for q in 0..t {
                    queries.push((offsets[i] + q.min(s.len - 1)) as i64);
                    query_pos.push(if q < s.len { (s.start + q) as i32 } else { -1 });
                    if q < s.len {
                        back[offsets[i] + q] = (base + row * t + q) as i64;
                    }
                }
                for p in 0..l {
                    keys.push(if p < s.context() { pool_slot(&s.table, p, self.block_size) } else { 0 });
                    key_pos.push(if p < s.context() { p as i32 } else { -1 });
                }
            }
            base += members.len() * t;
            let mask = StepMask::from_positions(members.len(), t, l, key_pos, query_pos, None);
            groups.push(GatherGroup {
                queries,
                keys,
                mask,
                query_tensor: OnceLock::new(),
                key_tensor: OnceLock::new(),
            });
        }
        Gather { groups, back: index_tensor(back, &self.device) }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl Gather {
    /// Row of each token in the groups' concatenated outputs.
    pub fn back_tensor(&self) -> Tensor<1, Int> {
        self.back.clone()
    }
}

/// The pool slot holding position `p` of a sequence whose blocks are `table`.
fn pool_slot(table: &[BlockId], p: usize, block_size: usize) -> i64 {
    (table[p / block_size] as usize * block_size + p % block_size) as i64
}

impl GatherGroup {
    pub fn query_tensor(&self, device: &Device) -> Tensor<1, Int> {
        self.query_tensor.get_or_init(|| index_tensor(self.queries.clone(), device)).clone()
    }

    pub fn key_tensor(&self, device: &Device) -> Tensor<1, Int> {
        self.key_tensor.get_or_init(|| index_tensor(self.keys.clone(), device)).clone()
    }
}
