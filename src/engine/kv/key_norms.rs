//! What a cache holds, made visible: the length of every key it stores, per layer, head and
//! token. The KV page draws one cell per stored token from these.
//!
//! A key depends only on its own token and the tokens before it (the causal mask), so the keys
//! a cache stores for a sequence, token by token as it was generated, are the keys of one
//! forward pass over the whole sequence: that pass fills a contiguous cache, which is read back.

use burn::tensor::Tensor;

use super::{KvCache, KvMode};
use crate::engine::error::{EngineError, Result};
use crate::engine::model::gpt2::{Gpt2, Logits};
use crate::engine::readback;
use crate::engine::step::Step;

/// `[layer][head][token]`: the L2 norm of the key the cache stores for each token of `ids`.
pub async fn key_norms(model: &Gpt2, ids: &[u32]) -> Result<Vec<Vec<Vec<f32>>>> {
    let config = &model.config;
    if ids.is_empty() || ids.len() > config.n_positions {
        return Err(EngineError::Request(format!(
            "the cache holds 1 to {} tokens; got {}",
            config.n_positions,
            ids.len()
        )));
    }
    let mut cache = model.cache(KvMode::Contiguous, 1, ids.len())?;
    model.forward(&Step::single(ids, 0), &mut cache, Logits::Last)?;
    let KvCache::Contiguous(stored) = &cache else {
        return Err(EngineError::Request("a contiguous cache was asked for".into()));
    };
    let (heads, tokens) = (config.n_head, ids.len());
    let mut out = Vec::with_capacity(config.n_layer);
    for layer in 0..config.n_layer {
        let (keys, _) = stored.layer(layer, config.head_dim());
        let norms: Tensor<4> = keys.powf_scalar(2.0).sum_dim(3).sqrt();
        let flat = readback::floats(norms).await?;
        out.push(flat.chunks(tokens).take(heads).map(<[f32]>::to_vec).collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::config::Gpt2Config;
    use crate::engine::model::weights::Gpt2Weights;

    /// The norms equal those of the keys computed by hand from the first layer's weights:
    /// `LayerNorm(wte[id] + wpe[pos]) · W_k + b_k`, split into heads.
    #[test]
    fn first_layer_norms_match_the_keys_by_hand() {
        let config = Gpt2Config::named("gpt2-tiny").unwrap();
        let device = Default::default();
        let weights = Gpt2Weights::random(&config, 3);
        let get = |name: &str| weights.tensors.iter().find(|(n, _)| n == name).unwrap().1.try_to_vec::<f32>().unwrap();
        let (wte, wpe) = (get("wte.weight"), get("wpe.weight"));
        let (ln_w, ln_b) = (get("h.0.ln_1.weight"), get("h.0.ln_1.bias"));
        let (attn_w, attn_b) = (get("h.0.attn.c_attn.weight"), get("h.0.attn.c_attn.bias"));
        let model = Gpt2::new(config.clone(), weights, &device).unwrap();
        let ids = [5u32, 17, 900, 3];
        let norms = pollster::block_on(key_norms(&model, &ids)).unwrap();
        assert_eq!((norms.len(), norms[0].len(), norms[0][0].len()), (config.n_layer, config.n_head, ids.len()));
        let e = config.n_embd;
        let d = e / config.n_head;
        for (pos, &id) in ids.iter().enumerate() {
            let x: Vec<f32> = (0..e).map(|i| wte[id as usize * e + i] + wpe[pos * e + i]).collect();
            let mean = x.iter().sum::<f32>() / e as f32;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / e as f32;
            let h: Vec<f32> = (0..e).map(|i| (x[i] - mean) / (var + 1e-5).sqrt() * ln_w[i] + ln_b[i]).collect();
            // c_attn is Conv1D: [n_embd, 3 n_embd]; keys are the middle third.
            let key: Vec<f32> =
                (0..e).map(|j| attn_b[e + j] + (0..e).map(|i| h[i] * attn_w[i * 3 * e + e + j]).sum::<f32>()).collect();
            for head in 0..config.n_head {
                let want = key[head * d..(head + 1) * d].iter().map(|v| v * v).sum::<f32>().sqrt();
                let got = norms[0][head][pos];
                assert!((got - want).abs() <= 1e-3 * want.max(1.0), "head {head} position {pos}: {got} vs {want}");
            }
        }
    }
}
