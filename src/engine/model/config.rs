//! GPT-2 hyper-parameters, read from a Hugging Face `config.json` and checked before any tensor
//! is allocated, so a bad config fails with a sentence instead of a shape panic deep in a matmul.

use serde::Deserialize;

use crate::engine::error::{EngineError, Result};

/// The activations `GPT2LMHeadModel` accepts that the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum Activation {
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation GPT-2 was trained with.
    GeluTanh,
    /// `gelu`: the exact erf form.
    Gelu,
    Relu,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Width of the MLP's hidden layer (HF: `n_inner`, default 4·n_embd).
    pub n_inner: usize,
    pub layer_norm_epsilon: f64,
    pub activation: Activation,
    /// HF `scale_attn_by_inverse_layer_idx`: scores of layer i are further divided by i + 1.
    pub scale_attn_by_inverse_layer_idx: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// The fields of HF's `GPT2Config` the engine reads; the rest of the file is ignored.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    activation_function: Option<String>,
    scale_attn_weights: Option<bool>,
    scale_attn_by_inverse_layer_idx: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
    add_cross_attention: Option<bool>,
}

impl Gpt2Config {
    /// Parses `config.json`; missing fields take HF's `GPT2Config` defaults (those of gpt2).
    pub fn from_json(text: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::Config(format!("config.json is not valid JSON for GPT-2: {e}")))?;
        if let Some(kind) = hf.model_type.as_deref()
            && kind != "gpt2"
        {
            return Err(EngineError::Config(format!("model_type is {kind:?}, only \"gpt2\" is supported")));
        }
        if hf.scale_attn_weights == Some(false) {
            return Err(EngineError::Config("scale_attn_weights = false is not supported".into()));
        }
        if hf.add_cross_attention == Some(true) {
            return Err(EngineError::Config("add_cross_attention (encoder-decoder GPT-2) is not supported".into()));
        }
        let n_embd = hf.n_embd.unwrap_or(768);
        let activation = match hf.activation_function.as_deref().unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => return Err(EngineError::Config(format!("activation_function {other:?} is not supported"))),
        };
        let config = Self {
            vocab_size: hf.vocab_size.unwrap_or(50257),
            n_positions: hf.n_positions.unwrap_or(1024),
            n_embd,
            n_layer: hf.n_layer.unwrap_or(12),
            n_head: hf.n_head.unwrap_or(12),
            n_inner: hf.n_inner.unwrap_or(4 * n_embd),
            layer_norm_epsilon: hf.layer_norm_epsilon.unwrap_or(1e-5),
            activation,
            scale_attn_by_inverse_layer_idx: hf.scale_attn_by_inverse_layer_idx.unwrap_or(false),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(true),
            bos_token_id: hf.bos_token_id,
            eos_token_id: hf.eos_token_id,
        };
        config.validate()?;
        Ok(config)
    }

    /// The published shapes of the GPT-2 family, for `--random` models and the memory tables.
    pub fn named(name: &str) -> Result<Self> {
        let (n_layer, n_embd, n_head, n_positions) = match name.trim_start_matches("openai-community/") {
            // The test fixtures' shape, used by the browser's offline demo model.
            "gpt2-tiny" => (2, 64, 4, 256),
            "distilgpt2" | "distilbert/distilgpt2" => (6, 768, 12, 1024),
            "gpt2" => (12, 768, 12, 1024),
            "gpt2-medium" => (24, 1024, 16, 1024),
            "gpt2-large" => (36, 1280, 20, 1024),
            "gpt2-xl" => (48, 1600, 25, 1024),
            other => {
                return Err(EngineError::Config(format!(
                    "unknown model name {other:?}; known: gpt2-tiny, distilgpt2, gpt2, gpt2-medium, gpt2-large, gpt2-xl"
                )));
            }
        };
        Ok(Self {
            vocab_size: 50257,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: 4 * n_embd,
            layer_norm_epsilon: 1e-5,
            activation: Activation::GeluTanh,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(EngineError::Config(format!("{name} must be positive")));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(EngineError::Config(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon.is_finite()) {
            return Err(EngineError::Config("layer_norm_epsilon must be a positive number".into()));
        }
        for (name, id) in [("bos_token_id", self.bos_token_id), ("eos_token_id", self.eos_token_id)] {
            if let Some(id) = id
                && id as usize >= self.vocab_size
            {
                return Err(EngineError::Config(format!(
                    "{name} {id} is outside the vocabulary ({})",
                    self.vocab_size
                )));
            }
        }
        Ok(())
    }
}
