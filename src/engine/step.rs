//! One forward step's input: `batch` rows of `len` new tokens each, with the absolute position
//! of every token and whether it is real or left padding. Prefill, decode, recompute-everything
//! and left-padded batches are all just different `Step`s.

use crate::engine::error::{EngineError, Result};

#[derive(Debug, Clone)]
pub struct Step {
    pub batch: usize,
    pub len: usize,
    /// Token ids, row-major `[batch, len]`.
    pub ids: Vec<u32>,
    /// Absolute positions (rows of `wpe`), `[batch, len]`.
    pub positions: Vec<usize>,
    /// `false` marks padding: it is computed but no query ever attends to it.
    pub real: Vec<bool>,
}

impl Step {
    /// Consecutive tokens of one sequence, the first at position `start`.
    pub fn single(ids: &[u32], start: usize) -> Self {
        Self {
            batch: 1,
            len: ids.len(),
            ids: ids.to_vec(),
            positions: (start..start + ids.len()).collect(),
            real: vec![true; ids.len()],
        }
    }

    /// Rows of different lengths, left-padded with `pad` to the longest. As in transformers,
    /// each row's first real token has position 0 and padding sits at position 0.
    pub fn left_padded(rows: &[Vec<u32>], pad: u32) -> Self {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut step = Self { batch: rows.len(), len, ids: vec![], positions: vec![], real: vec![] };
        for row in rows {
            let pads = len - row.len();
            step.ids.extend(std::iter::repeat_n(pad, pads).chain(row.iter().copied()));
            step.positions.extend(std::iter::repeat_n(0, pads).chain(0..row.len()));
            step.real.extend(std::iter::repeat_n(false, pads).chain(std::iter::repeat_n(true, row.len())));
        }
        step
    }

    /// One new token per row, at the given positions: a batched decode step.
    pub fn decode(ids: &[u32], positions: &[usize]) -> Self {
        Self { batch: ids.len(), len: 1, ids: ids.to_vec(), positions: positions.to_vec(), real: vec![true; ids.len()] }
    }

    /// Rejects what would index out of the embedding tables.
    pub fn check(&self, vocab_size: usize, n_positions: usize) -> Result<()> {
        if self.len == 0 || self.batch == 0 {
            return Err(EngineError::Request("a step needs at least one token".into()));
        }
        if let Some(id) = self.ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(EngineError::Request(format!("token id {id} is outside the vocabulary ({vocab_size})")));
        }
        if let Some(p) = self.positions.iter().find(|&&p| p >= n_positions) {
            return Err(EngineError::Request(format!(
                "position {p} is past the model's context (n_positions = {n_positions})"
            )));
        }
        Ok(())
    }
}
