//! The parameters a GPT-2 config calls for, and named host tensors for them: read from HF
//! safetensors (checked against the config) or drawn at random.
//!
//! HF stores GPT-2's linear layers as `Conv1D` with weights already `[in, out]`, which is the
//! layout `x @ W` wants: no transpose. `lm_head.weight` is usually absent because it is tied to
//! `wte`. Checkpoints in the wild may drop the `transformer.` prefix and may carry the causal
//! mask buffers `attn.bias` / `attn.masked_bias`; both are accepted.

use burn::tensor::{Distribution, TensorData};
use rand::{SeedableRng, rngs::StdRng};

use crate::engine::error::Result;
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::safetensors_stream::{SafetensorsStream, WholeTensors};

/// One parameter: HF's name without the `transformer.` prefix, and its shape.
pub struct Parameter {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Every parameter of `config`, in the order random initialisation draws them; `lm_head.weight`
/// only when the config unties it from `wte`.
pub fn parameters(config: &Gpt2Config) -> Vec<Parameter> {
    let (e, inner) = (config.n_embd, config.n_inner);
    let p = |name: String, shape: &[usize]| Parameter { name, shape: shape.to_vec() };
    let mut all =
        vec![p("wte.weight".into(), &[config.vocab_size, e]), p("wpe.weight".into(), &[config.n_positions, e])];
    for i in 0..config.n_layer {
        let h = |rest: &str| format!("h.{i}.{rest}");
        all.extend([
            p(h("ln_1.weight"), &[e]),
            p(h("ln_1.bias"), &[e]),
            p(h("attn.c_attn.weight"), &[e, 3 * e]),
            p(h("attn.c_attn.bias"), &[3 * e]),
            p(h("attn.c_proj.weight"), &[e, e]),
            p(h("attn.c_proj.bias"), &[e]),
            p(h("ln_2.weight"), &[e]),
            p(h("ln_2.bias"), &[e]),
            p(h("mlp.c_fc.weight"), &[e, inner]),
            p(h("mlp.c_fc.bias"), &[inner]),
            p(h("mlp.c_proj.weight"), &[inner, e]),
            p(h("mlp.c_proj.bias"), &[e]),
        ]);
    }
    all.push(p("ln_f.weight".into(), &[e]));
    all.push(p("ln_f.bias".into(), &[e]));
    if !config.tie_word_embeddings {
        all.push(p("lm_head.weight".into(), &[config.vocab_size, e]));
    }
    all
}

/// Every parameter of a GPT-2 LM as f32 host data in HF's layout, by [`Parameter`] name.
pub struct Gpt2Weights {
    pub tensors: Vec<(String, TensorData)>,
}

impl Gpt2Weights {
    /// Reads a whole `model.safetensors` (from disk or the network), through the same checks
    /// as a streamed one.
    pub fn from_safetensors(bytes: &[u8], config: &Gpt2Config) -> Result<Self> {
        let (mut tensors, mut whole) = (vec![], WholeTensors::default());
        let mut stream = SafetensorsStream::new(config);
        stream.feed(bytes, &mut |rows| {
            let name = rows.name.to_string();
            tensors.extend(whole.add(rows).map(|data| (name, data)));
            Ok(())
        })?;
        stream.finish()?;
        Ok(Self { tensors })
    }

    /// Seeded random weights with HF's GPT-2 initialisation (N(0, 0.02), zero biases, unit
    /// LayerNorms): meaningless text, real speed. Used by `--random`.
    pub fn random(config: &Gpt2Config, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let tensors = parameters(config)
            .into_iter()
            .map(|Parameter { name, shape }| {
                let data = match shape.len() {
                    1 if name.ends_with(".bias") => TensorData::zeros::<f32, _>(shape),
                    1 => TensorData::ones::<f32, _>(shape),
                    _ => TensorData::random::<f32, _, _>(shape, Distribution::Normal(0.0, 0.02), &mut rng),
                };
                (name, data)
            })
            .collect();
        Self { tensors }
    }
}
