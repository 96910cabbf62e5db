//! GPT-2 forward pass, HF-exact: token + position embeddings, pre-LayerNorm blocks
//! (attention, MLP, residuals), final LayerNorm, tied output projection.
//!
//! One call runs one [`Step`]: any number of new tokens per row, at given positions, against
//! whatever the [`KvCache`] holds. The hidden state stays `[tokens, n_embd]` (2-D) between
//! blocks so every linear layer is a plain matmul; only attention reshapes to heads.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use burn::tensor::activation::{gelu, gelu_approximate, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::engine::error::{EngineError, Result};
use crate::engine::inspect::op_timer::{Clock, OpTimer, Timeline};
use crate::engine::inspect::probe::{NoProbe, Op, Probe};
use crate::engine::kernels::held_bytes::{HeldBytes, tensor_bytes};
use crate::engine::kernels::row_dots::{self, CompactTable};
use crate::engine::kernels::row_dots_wgsl::{self, Packed};
use crate::engine::kernels::{self, KernelPath, cpu_gelu};
use crate::engine::kv::dtype::KvDtype;
use crate::engine::kv::{KvCache, KvMode};
use crate::engine::model::config::{Activation, Gpt2Config};
use crate::engine::model::safetensors_stream::{Rows, WholeTensors};
use crate::engine::model::vocab_table::{TableRows, VocabTable};
use crate::engine::model::weight_dtype::WeightDtype;
use crate::engine::model::weights::Gpt2Weights;
use crate::engine::step::Step;

/// Which positions get logits: the last of each row (generation), all (scoring, tests), or
/// the given token rows of the flattened step (a ragged batch: each sequence's last token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
    Rows(Vec<usize>),
}

struct Dense {
    weight: DenseWeight,
    bias: Tensor<1>,
}

/// How a linear layer's weight is held.
enum DenseWeight {
    /// `W` (`[in, out]`) for the matmul and, on the CPU, `Wᵀ` (`[out, in]`, rows contiguous)
    /// for the row-dots kernel, which streams it once per step on every thread
    /// (`kernels/row_dots.rs`); `W` is then the twin's (kernels off). That doubles the blocks' weights in memory on the CPU;
    /// GPUs keep `W` only.
    F32 { w: Tensor<2>, wt: Option<Tensor<2>> },
    /// `Wᵀ` in f16 or int8 only (CPU, [`Gpt2::into_weight_dtype`]): the kernel reads it, the
    /// matmul (kernels off) gets it widened per call.
    Compact(CompactTable),
    /// `W` in f16 or int8 on the wgpu device, in packed words ([`Packed`]): the WGSL row dots
    /// read it for few rows, kernels on or off (nothing else reads it); longer steps get it
    /// widened per call.
    Packed(Packed),
}

impl DenseWeight {
    /// Uploads an f32 `[in, out]` weight (and, on the CPU, its transpose).
    fn new(weight: TensorData, device: &Device) -> Self {
        let wt = row_dots::runs_on(device).then(|| {
            let [inputs, outputs] = [weight.shape()[0], weight.shape()[1]];
            Tensor::from_data(TensorData::new(transposed(&weight), [outputs, inputs]), device)
        });
        Self::F32 { w: Tensor::from_data(weight, device), wt }
    }

    /// Uploads an f32 `[in, out]` weight held in `dtype`: f32 as [`DenseWeight::new`]; f16
    /// or int8 (a scale per output) as `Wᵀ` on the CPU, packed `W` on wgpu (the devices
    /// [`WeightDtype::check`] lets through).
    fn upload(weight: TensorData, dtype: WeightDtype, device: &Device) -> Self {
        let [inputs, outputs] = [weight.shape()[0], weight.shape()[1]];
        let values = weight.as_slice::<f32>().expect("weights are converted to f32 on load");
        match dtype {
            WeightDtype::F32 => Self::new(weight, device),
            WeightDtype::F16 if kernels::is_wgpu(device) => Self::Packed(Packed::f16(values, inputs, outputs, device)),
            WeightDtype::Int8 if kernels::is_wgpu(device) => {
                Self::Packed(Packed::int8_per_column(values, inputs, outputs, device))
            }
            WeightDtype::F16 => Self::Compact(CompactTable::f16(&transposed(&weight), outputs, inputs)),
            WeightDtype::Int8 => Self::Compact(CompactTable::int8(&transposed(&weight), outputs, inputs)),
        }
    }
}

/// `Wᵀ` of an f32 `[in, out]` weight, rows contiguous: what the CPU's row dots stream.
fn transposed(weight: &TensorData) -> Vec<f32> {
    let [inputs, outputs] = [weight.shape()[0], weight.shape()[1]];
    let values = weight.as_slice::<f32>().expect("weights are converted to f32 on load");
    (0..outputs).flat_map(|o| (0..inputs).map(move |i| values[i * outputs + o])).collect()
}

impl DenseWeight {
    /// The bytes the weight occupies (both copies on the CPU's f32), by the type it is held in.
    fn held_bytes(&self) -> HeldBytes {
        match self {
            Self::F32 { w, wt } => {
                HeldBytes { f32: tensor_bytes(w) + wt.as_ref().map_or(0, tensor_bytes), ..HeldBytes::default() }
            }
            Self::Compact(table) => table.held_bytes(),
            Self::Packed(packed) => packed.held_bytes(),
        }
    }
}

impl Dense {
    /// `x @ W + b`; the CPU's row-dots kernel, or few-row steps the WGSL one.
    fn forward(&self, x: Tensor<2>, path: KernelPath) -> Tensor<2> {
        let cpu = path == KernelPath::Cpu;
        let y = match &self.weight {
            DenseWeight::Packed(w) => match row_dots_wgsl::rows_times_weight(&x, w, &self.bias) {
                Some(y) => return y,
                None => x.matmul(w.widen()),
            },
            DenseWeight::F32 { w, .. } if path == KernelPath::Wgsl => {
                match row_dots_wgsl::rows_times_weight(&x, &Packed::plain(w.clone()), &self.bias) {
                    Some(y) => return y,
                    None => x.matmul(w.clone()),
                }
            }
            DenseWeight::F32 { w, wt } => {
                let few_rows = wt.as_ref().filter(|_| cpu).and_then(|wt| row_dots::rows_times_table(&x, wt));
                few_rows.unwrap_or_else(|| x.matmul(w.clone()))
            }
            DenseWeight::Compact(wt) => {
                let few_rows = if cpu { row_dots::rows_times_compact(&x, wt) } else { None };
                few_rows.unwrap_or_else(|| x.clone().matmul(wt.to_tensor(&x.device()).transpose()))
            }
        };
        y + self.bias.clone().unsqueeze::<2>()
    }

    /// The weight held in `dtype` (f16 or int8) from now on, if it is f32: a read-back, native
    /// only (the browser converts on load).
    fn into_reduced(self, dtype: WeightDtype) -> Self {
        let DenseWeight::F32 { w, .. } = self.weight else { return self };
        let device = w.device();
        Self { weight: DenseWeight::upload(w.into_data(), dtype, &device), bias: self.bias }
    }
}

struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    /// Normalises each row with the biased variance, as `torch.nn.LayerNorm`.
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze::<2>() + self.bias.clone().unsqueeze::<2>()
    }
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Dense,
    attn_proj: Dense,
    ln_2: LayerNorm,
    c_fc: Dense,
    mlp_proj: Dense,
}

pub struct Gpt2 {
    pub config: Gpt2Config,
    device: Device,
    wte: VocabTable,
    /// The output projection when it is not tied to `wte`.
    lm_head: Option<VocabTable>,
    wpe: Tensor<2>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// Whether the WGSL kernels run where they can (the wgpu device); off = tensor ops only.
    kernels: bool,
    /// What the KV caches made for this model hold.
    kv_dtype: KvDtype,
    /// Times every step's ops while set ([`Gpt2::start_trace`]).
    trace: Mutex<Option<OpTimer>>,
}

impl Gpt2 {
    /// Uploads checked weights to `device`.
    pub fn new(config: Gpt2Config, weights: Gpt2Weights, device: &Device) -> Result<Self> {
        let mut loader = Gpt2Loader::new(config, device, WeightDtype::F32)?;
        for (name, data) in weights.tensors {
            loader.put(&name, data)?;
        }
        loader.finish()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Holds the linear layers' and the token table's weights (f32 ones) in `dtype`, converted
    /// once: f16 halves their memory and the bytes each decode step streams, int8 (symmetric,
    /// one scale per output, per token for the table) quarters them. The CPU's and the WGSL row
    /// dots widen them in registers, sum in f32 and scale each finished int8 dot (WGSL by
    /// `unpack2x16float` / `unpack4x8snorm`, so no `shader-f16` is needed); CUDA would need
    /// kernels of its own and is refused. LayerNorms, biases, positions, activations and the KV
    /// cache stay f32.
    pub fn into_weight_dtype(self, dtype: WeightDtype) -> Result<Self> {
        dtype.check(&self.config, &self.device)?;
        if dtype == WeightDtype::F32 {
            return Ok(self);
        }
        let blocks = self
            .blocks
            .into_iter()
            .map(|b| Block {
                c_attn: b.c_attn.into_reduced(dtype),
                attn_proj: b.attn_proj.into_reduced(dtype),
                c_fc: b.c_fc.into_reduced(dtype),
                mlp_proj: b.mlp_proj.into_reduced(dtype),
                ..b
            })
            .collect();
        Ok(Self {
            blocks,
            wte: self.wte.into_reduced(dtype),
            lm_head: self.lm_head.map(|t| t.into_reduced(dtype)),
            ..self
        })
    }

    /// The bytes the linear layers' weights and the token table(s) occupy, by the type they
    /// are held in, read off the buffers (biases, LayerNorms and positions, always f32, aside).
    pub fn held_weight_bytes(&self) -> HeldBytes {
        let blocks = self.blocks.iter().flat_map(|b| [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj]);
        blocks.map(|dense| dense.weight.held_bytes()).sum::<HeldBytes>()
            + self.wte.held_bytes()
            + self.lm_head.as_ref().map(VocabTable::held_bytes).unwrap_or_default()
    }

    /// Makes the KV caches of later generations hold f16 (half their memory, and half the bytes
    /// each attention reads) or f32. Keys and values are rounded once, as they are stored.
    pub fn set_kv_dtype(&mut self, dtype: KvDtype) -> Result<()> {
        if dtype == KvDtype::F16 && !self.config.head_dim().is_multiple_of(2) {
            return Err(EngineError::Request(format!(
                "an f16 KV cache packs head rows in pairs; this model's heads are {} wide",
                self.config.head_dim()
            )));
        }
        self.kv_dtype = dtype;
        Ok(())
    }

    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// A cache of `mode` for `batch` rows of `capacity` tokens, holding this model's KV dtype.
    pub fn cache(&self, mode: KvMode, batch: usize, capacity: usize) -> Result<KvCache> {
        KvCache::new(mode, &self.config, batch, capacity, self.kv_dtype, &self.device)
    }

    /// Turns the hand-written kernels on or off (to measure them): WGSL attention and KV
    /// writes on wgpu; few-query attention, row dots for the linear layers and the head, and
    /// the one-pass GELU on the CPU. f16 and int8 weights on wgpu keep their row dots either way.
    pub fn set_kernels(&mut self, enabled: bool) {
        self.kernels = enabled;
    }

    /// Runs one step and returns logits `[batch, len or 1, vocab]`. The step's keys and values
    /// are stored in `cache`, which must have been created for the same batch size.
    pub fn forward(&self, step: &Step, cache: &mut KvCache, which: Logits) -> Result<Tensor<3>> {
        self.forward_layers(step, cache, which, self.blocks.len())
    }

    /// A one-token prefill and one decode step, results dropped: a GPU device compiles the
    /// decode path's kernels now, while the model loads, instead of in the first generation.
    /// The CPU device compiles nothing, so it skips this.
    pub fn warm_up(&self) -> Result<()> {
        if row_dots::runs_on(&self.device) {
            return Ok(());
        }
        let mut cache = self.cache(KvMode::Contiguous, 1, 2)?;
        for position in 0..2 {
            let logits = self.forward(&Step::single(&[0], position), &mut cache, Logits::Last)?;
            drop(logits.argmax(2));
        }
        Ok(())
    }

    /// [`Gpt2::forward`] through the first `layers` blocks only, then the final LayerNorm and
    /// the head: the early-exit draft of self-speculative decoding (its cache has `layers`
    /// layers).
    pub fn forward_layers(&self, step: &Step, cache: &mut KvCache, which: Logits, layers: usize) -> Result<Tensor<3>> {
        let mut trace = self.trace.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(timer) = trace.as_mut() else {
            drop(trace);
            return ready(self.forward_probed(step, cache, which, layers, &mut NoProbe));
        };
        timer.begin_step(step_label(step));
        let logits = ready(self.forward_probed(step, cache, which, layers, timer));
        timer.end_step();
        logits
    }

    /// Times every op of every step from now on (device timestamps where the device has them,
    /// syncs where not) until [`Gpt2::finish_trace`]. Native only: the sync of a device
    /// without timestamps blocks.
    pub fn start_trace(&self) {
        *self.trace.lock().unwrap_or_else(PoisonError::into_inner) = Some(OpTimer::new(&self.device, Clock::Profile));
    }

    /// The steps timed since [`Gpt2::start_trace`], which stops; `None` if it was not started.
    pub async fn finish_trace(&self) -> Result<Option<Timeline>> {
        let timer = self.trace.lock().unwrap_or_else(PoisonError::into_inner).take();
        match timer {
            Some(timer) => Ok(Some(timer.finish().await?)),
            None => Ok(None),
        }
    }

    /// The forward pass, telling `probe` each op as it runs and the tensors an inspection
    /// reads. With [`NoProbe`] every call compiles away and nothing awaits.
    pub(crate) async fn forward_probed(
        &self,
        step: &Step,
        cache: &mut KvCache,
        which: Logits,
        layers: usize,
        probe: &mut impl Probe,
    ) -> Result<Tensor<3>> {
        let c = &self.config;
        if layers == 0 || layers > self.blocks.len() {
            return Err(EngineError::Request(format!(
                "an early exit needs 1 to {} layers, got {layers}",
                self.blocks.len()
            )));
        }
        step.check(c.vocab_size, c.n_positions)?;
        let (b, t, e) = (step.batch, step.len, c.n_embd);
        let (heads, head_dim) = (c.n_head, c.head_dim());

        let positions: Vec<i64> = step.positions.iter().map(|&p| p as i64).collect();
        let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [b * t]), &self.device);
        let mut x = probe
            .op(Op::Embed, None, || self.wte.lookup(&step.ids, &self.device) + self.wpe.clone().select(0, positions))
            .await?;

        let plan = cache.prepare(step)?;
        let path = KernelPath::choose(&self.device, self.kernels);
        let n = b * t;
        for (layer, block) in self.blocks.iter().take(layers).enumerate() {
            let l = Some(layer);
            let normed = probe.op(Op::Ln1, l, || block.ln_1.forward(x.clone())).await?;
            let qkv = probe.op(Op::Qkv, l, || block.c_attn.forward(normed, path)).await?;
            let q = qkv.clone().slice([0..n, 0..e]);
            let k = qkv.clone().slice([0..n, e..2 * e]);
            let v = qkv.slice([0..n, 2 * e..3 * e]);
            let mut scale = 1.0 / (head_dim as f32).sqrt();
            if c.scale_attn_by_inverse_layer_idx {
                scale /= (layer + 1) as f32;
            }
            probe.attention_inputs(layer, &q, &k, scale);
            let attn = probe.op(Op::Attention, l, || cache.attend(layer, q, k, v, &plan, heads, scale, path)).await?;
            x = probe.op(Op::AttnProj, l, || x + block.attn_proj.forward(attn, path)).await?;

            let normed = probe.op(Op::Ln2, l, || block.ln_2.forward(x.clone())).await?;
            let hidden = probe.op(Op::MlpUp, l, || block.c_fc.forward(normed, path)).await?;
            let hidden = probe
                .op(Op::Gelu, l, || match c.activation {
                    Activation::GeluTanh => {
                        let fused = if path == KernelPath::Cpu { cpu_gelu::gelu_tanh(&hidden) } else { None };
                        fused.unwrap_or_else(|| gelu_approximate(hidden))
                    }
                    Activation::Gelu => gelu(hidden),
                    Activation::Relu => relu(hidden),
                })
                .await?;
            x = probe.op(Op::MlpDown, l, || x + block.mlp_proj.forward(hidden, path)).await?;
            probe.block_output(layer, &x);
        }

        let (out_batch, rows) = match &which {
            Logits::All => (b, t),
            Logits::Last => (b, 1),
            Logits::Rows(rows) => {
                if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
                    return Err(EngineError::Request(format!("logits asked for token row {bad} of a {n}-token step")));
                }
                (1, rows.len())
            }
        };
        let normed = probe
            .op(Op::LnF, None, || {
                let x = match which {
                    Logits::All => x,
                    Logits::Last => x.reshape([b, t, e]).slice([0..b, t - 1..t, 0..e]).reshape([b, e]),
                    Logits::Rows(rows) => {
                        let rows = TensorData::new(rows.iter().map(|&r| r as i64).collect(), [rows.len()]);
                        x.select(0, Tensor::<1, Int>::from_data(rows, &self.device))
                    }
                };
                self.ln_f.forward(x)
            })
            .await?;
        let logits = probe.op(Op::Head, None, || self.head().project(normed, path)).await?;
        Ok(logits.reshape([out_batch, rows, c.vocab_size]))
    }

    /// The output projection: the token table, unless the model has a head of its own.
    fn head(&self) -> &VocabTable {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// The logit lens: residual-stream rows `[tokens, n_embd]` read out through the final
    /// LayerNorm and the head, as if the model ended there.
    pub(crate) fn logits_of_residual(&self, x: Tensor<2>) -> Tensor<2> {
        self.head().project(self.ln_f.forward(x), KernelPath::choose(&self.device, self.kernels))
    }
}

/// A step in words, for traces: "8 tokens from position 0", "4 rows × 1 token".
fn step_label(step: &Step) -> String {
    let tokens = if step.len == 1 { "1 token".to_owned() } else { format!("{} tokens", step.len) };
    match step.batch {
        1 => format!("{tokens} from position {}", step.positions[0]),
        rows => format!("{rows} rows × {tokens}"),
    }
}

/// The output of a future that is ready at once: a forward pass whose probe never waits.
fn ready<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => Err(EngineError::Device("a forward pass waited on the device where it may not".into())),
    }
}

/// A model whose parameters arrive by [`parameters`](crate::engine::model::weights::parameters) name, in any
/// order, whole or in blocks of rows (a streamed file's), each uploaded as it completes; the
/// token table chunk by chunk, so the host never holds it whole.
pub struct Gpt2Loader {
    config: Gpt2Config,
    device: Device,
    /// What the linear layers and the token table are converted to as they arrive.
    dtype: WeightDtype,
    tables: HashMap<String, TableRows>,
    /// Blocks of the other tensors, until each is whole.
    partial: WholeTensors,
    dense: HashMap<String, DenseWeight>,
    vectors: HashMap<String, Tensor<1>>,
    matrices: HashMap<String, Tensor<2>>,
}

/// Removes `name` from `parts`, or says it never came.
fn take<T>(parts: &mut HashMap<String, T>, name: &str) -> Result<T> {
    parts
        .remove(name)
        .ok_or_else(|| EngineError::Weights(format!("model.safetensors ended before tensor {name} arrived")))
}

impl Gpt2Loader {
    /// A loader of weights held in `dtype`, converted on arrival: the browser's way to
    /// `--dtype f16|int8`, since a tab cannot read a GPU buffer back synchronously.
    pub fn new(config: Gpt2Config, device: &Device, dtype: WeightDtype) -> Result<Self> {
        dtype.check(&config, device)?;
        Ok(Self {
            config,
            device: device.clone(),
            dtype,
            tables: HashMap::new(),
            partial: WholeTensors::default(),
            dense: HashMap::new(),
            vectors: HashMap::new(),
            matrices: HashMap::new(),
        })
    }

    /// Uploads one whole parameter, already checked against the config.
    pub fn put(&mut self, name: &str, data: TensorData) -> Result<()> {
        let shape = data.shape().to_vec();
        self.put_rows(Rows {
            name,
            shape: &shape,
            first: 0,
            values: data.try_into_vec().expect("weights are converted to f32 on load"),
        })
    }

    /// Takes the next block of rows of a parameter (blocks of one parameter come in order): a
    /// token table's go on towards the device, the others' wait until their tensor is whole.
    /// What it uploaded is flushed to the device at once: burn's wgpu backend queues an upload,
    /// host bytes and all, until something flushes, and a load flushes nothing else, so a tab
    /// held the whole model's uploads in its wasm memory, which never shrinks.
    pub fn put_rows(&mut self, rows: Rows) -> Result<()> {
        self.take_rows(rows);
        self.device.flush().map_err(|e| EngineError::Device(format!("uploading the weights: {e}")))
    }

    fn take_rows(&mut self, rows: Rows) {
        let device = &self.device;
        if let ("wte.weight" | "lm_head.weight", &[vocab, width]) = (rows.name, rows.shape) {
            let dtype = self.dtype;
            let table =
                self.tables.entry(rows.name.into()).or_insert_with(|| TableRows::new(vocab, width, dtype, device));
            return table.push(&rows.values);
        }
        let name = rows.name.to_string();
        let Some(data) = self.partial.add(rows) else { return };
        match (name.as_str(), data.shape().len()) {
            (_, 1) => drop(self.vectors.insert(name, Tensor::from_data(data, device))),
            ("wpe.weight", _) => drop(self.matrices.insert(name, Tensor::from_data(data, device))),
            _ => {
                let weight = DenseWeight::upload(data, self.dtype, device);
                drop(self.dense.insert(name, weight))
            }
        }
    }

    /// The model, once every parameter has arrived.
    pub fn finish(mut self) -> Result<Gpt2> {
        let eps = self.config.layer_norm_epsilon;
        let norm = |name: &str, vectors: &mut HashMap<String, Tensor<1>>| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: take(vectors, &format!("{name}.weight"))?,
                bias: take(vectors, &format!("{name}.bias"))?,
                eps,
            })
        };
        let mut blocks = Vec::with_capacity(self.config.n_layer);
        for i in 0..self.config.n_layer {
            let mut dense = |part: &str| -> Result<Dense> {
                let name = format!("h.{i}.{part}");
                Ok(Dense {
                    weight: take(&mut self.dense, &format!("{name}.weight"))?,
                    bias: take(&mut self.vectors, &format!("{name}.bias"))?,
                })
            };
            let (c_attn, attn_proj, c_fc, mlp_proj) =
                (dense("attn.c_attn")?, dense("attn.c_proj")?, dense("mlp.c_fc")?, dense("mlp.c_proj")?);
            let (ln_1, ln_2) =
                (norm(&format!("h.{i}.ln_1"), &mut self.vectors)?, norm(&format!("h.{i}.ln_2"), &mut self.vectors)?);
            blocks.push(Block { ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj });
        }
        let wte = take(&mut self.tables, "wte.weight")?.finish().map_err(EngineError::Weights)?;
        let lm_head =
            self.tables.remove("lm_head.weight").map(|rows| rows.finish().map_err(EngineError::Weights)).transpose()?;
        Ok(Gpt2 {
            wte,
            lm_head,
            wpe: take(&mut self.matrices, "wpe.weight")?,
            ln_f: norm("ln_f", &mut self.vectors)?,
            blocks,
            kernels: true,
            kv_dtype: KvDtype::F32,
            trace: Mutex::default(),
            device: self.device,
            config: self.config,
        })
    }
}
