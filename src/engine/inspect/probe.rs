//! What the forward pass tells an observer: each op of a step as it runs, and the tensors an
//! inspection looks at (queries and keys, each block's output). The plain forward passes
//! [`NoProbe`], whose calls compile away, so a step that nobody watches pays nothing.

use burn::tensor::Tensor;

use crate::engine::error::Result;

/// The ops of one step, in the order they run. Residual additions belong to the projection
/// before them; picking the rows that get logits belongs to `LnF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Token and position embeddings.
    Embed,
    Ln1,
    /// The fused query, key and value projection.
    Qkv,
    /// Storing the new keys and values, and attending over the cache.
    Attention,
    /// The attention's output projection, and the residual.
    AttnProj,
    Ln2,
    MlpUp,
    Gelu,
    /// The MLP's down projection, and the residual.
    MlpDown,
    LnF,
    /// The tied output projection to the vocabulary.
    Head,
    /// Logits to the next token.
    Sampling,
}

impl Op {
    /// The ops each block runs, in order.
    pub const BLOCK: [Op; 8] =
        [Op::Ln1, Op::Qkv, Op::Attention, Op::AttnProj, Op::Ln2, Op::MlpUp, Op::Gelu, Op::MlpDown];

    /// Its name on the wire and in traces: `ln_1`, `attn_proj`, `mlp_up`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Embed => "embed",
            Op::Ln1 => "ln_1",
            Op::Qkv => "qkv",
            Op::Attention => "attention",
            Op::AttnProj => "attn_proj",
            Op::Ln2 => "ln_2",
            Op::MlpUp => "mlp_up",
            Op::Gelu => "gelu",
            Op::MlpDown => "mlp_down",
            Op::LnF => "ln_f",
            Op::Head => "head",
            Op::Sampling => "sampling",
        }
    }
}

/// An observer of one forward pass. `layer` is the block's index from 0.
#[allow(async_fn_in_trait)] // used generically, never as a trait object
pub trait Probe {
    /// Runs `f`, one op of the step, and returns its output (timing it, if this probe times).
    async fn op(&mut self, op: Op, layer: Option<usize>, f: impl FnOnce() -> Tensor<2> + Send) -> Result<Tensor<2>>;

    /// A layer's queries and the step's new keys, `[tokens, n_embd]`, and the score scale.
    fn attention_inputs(&mut self, _layer: usize, _q: &Tensor<2>, _k: &Tensor<2>, _scale: f32) {}

    /// A block's output: the residual stream after it, `[tokens, n_embd]`.
    fn block_output(&mut self, _layer: usize, _x: &Tensor<2>) {}
}

/// The probe of every step nobody inspects.
pub struct NoProbe;

impl Probe for NoProbe {
    #[inline(always)]
    async fn op(&mut self, _: Op, _: Option<usize>, f: impl FnOnce() -> Tensor<2> + Send) -> Result<Tensor<2>> {
        Ok(f())
    }
}
