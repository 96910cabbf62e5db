//! The memory model of GPT-2 inference, for any config, batch and length:
//!
//! - KV cache: `2 (K and V) · n_layer · n_head · head_dim · bytes · tokens · batch`
//! - parameters: embeddings, per-block attention / MLP / LayerNorms, final LayerNorm
//!   (the tied `lm_head` costs nothing extra)
//! - activations of one forward over `tokens` new tokens (peak, not summed over layers,
//!   since a layer's buffers are freed before the next): residual stream, q/k/v, one layer's
//!   attention scores `[batch, heads, tokens, tokens]`, the MLP hidden layer, and the logits.

use serde::Serialize;

use crate::engine::model::config::Gpt2Config;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemoryRow {
    pub seq_len: usize,
    pub batch: usize,
    pub bytes_per_value: usize,
    pub kv_bytes: u64,
    pub param_bytes: u64,
    pub activation_bytes: u64,
}

/// Number of parameters of the model described by `config`.
pub fn param_count(c: &Gpt2Config) -> u64 {
    let (e, inner) = (c.n_embd as u64, c.n_inner as u64);
    let per_block = 2 * e                  // ln_1
        + e * 3 * e + 3 * e                // c_attn
        + e * e + e                        // attn.c_proj
        + 2 * e                            // ln_2
        + e * inner + inner                // mlp.c_fc
        + inner * e + e; //                   mlp.c_proj
    let untied_head = if c.tie_word_embeddings { 0 } else { c.vocab_size as u64 * e };
    c.vocab_size as u64 * e + c.n_positions as u64 * e + c.n_layer as u64 * per_block + 2 * e + untied_head
}

/// Bytes of K and V for `tokens` positions of `batch` sequences.
pub fn kv_bytes(c: &Gpt2Config, tokens: usize, batch: usize, bytes_per_value: usize) -> u64 {
    2 * c.n_layer as u64 * c.n_embd as u64 * tokens as u64 * batch as u64 * bytes_per_value as u64
}

/// Peak activation bytes of one forward over `tokens` new tokens per sequence.
pub fn activation_bytes(c: &Gpt2Config, tokens: usize, batch: usize, bytes_per_value: usize) -> u64 {
    let (t, b) = (tokens as u64, batch as u64);
    let (e, inner, heads) = (c.n_embd as u64, c.n_inner as u64, c.n_head as u64);
    let per_token = e /* residual */ + 3 * e /* qkv */ + e /* attention out */ + inner /* mlp */ + c.vocab_size as u64 /* logits */;
    let scores = heads * t * t;
    b * (t * per_token + scores) * bytes_per_value as u64
}

/// One row per (sequence length, batch) pair, everything in `bytes_per_value` (4 = f32, 2 = f16).
pub fn table(c: &Gpt2Config, seq_lens: &[usize], batches: &[usize], bytes_per_value: usize) -> Vec<MemoryRow> {
    let mut rows = vec![];
    for &batch in batches {
        for &seq_len in seq_lens {
            rows.push(MemoryRow {
                seq_len,
                batch,
                bytes_per_value,
                kv_bytes: kv_bytes(c, seq_len, batch, bytes_per_value),
                param_bytes: param_count(c) * bytes_per_value as u64,
                activation_bytes: activation_bytes(c, seq_len, batch, bytes_per_value),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_sizes_match_the_published_ones() {
        // transformers reports 124,439,808 parameters for gpt2 and 354,823,168 for gpt2-medium.
        assert_eq!(param_count(&Gpt2Config::named("gpt2").unwrap()), 124_439_808);
        assert_eq!(param_count(&Gpt2Config::named("gpt2-medium").unwrap()), 354_823_168);
        // 1024 tokens of gpt2 in f16: 2 · 12 layers · 768 · 1024 · 2 bytes = 36 MiB.
        assert_eq!(kv_bytes(&Gpt2Config::named("gpt2").unwrap(), 1024, 1, 2), 36 * (1 << 20));
    }
}
