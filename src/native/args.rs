//! The flags several commands share: where the model comes from (`ModelArgs`, `BenchModel`),
//! the batching scheduler's knobs and a made-up workload. Commands import these; nothing here
//! imports a command.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;

use super::hub::DEFAULT_HUB;
use super::model_dir;
use super::model_dir::LoadedModel;
use crate::engine::batching::scheduler::{Policy, SchedulerConfig};
use crate::engine::batching::sequence::Request;
use crate::engine::batching::simulate::CostModel;
use crate::engine::batching::workload::{Arrivals, Lengths, WorkloadSpec};
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::precision::Precision;
use crate::engine::model::tokenizer::Tokenizer;

/// Where the model comes from.
#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A folder with config.json, model.safetensors and tokenizer.json, or a hub repo id
    /// (e.g. openai-community/gpt2), downloaded once into the cache ($INFERLAB_CACHE).
    #[arg(long)]
    pub model: String,
    /// Base URL of the model hub.
    #[arg(long, env = "INFERLAB_HUB_URL", default_value = DEFAULT_HUB)]
    pub hub_url: String,
}

impl ModelArgs {
    /// The model and its tokenizer on `device`, its weights held in `precision`.
    pub fn load(&self, device: &Device, precision: Precision) -> Result<LoadedModel> {
        let dir = model_dir::resolve(&self.model, &self.hub_url)?;
        let mut loaded = model_dir::load(&dir, device)?;
        loaded.model = precision.apply(loaded.model)?;
        Ok(loaded)
    }
}

/// A command's prompt, as text or as token ids.
#[derive(Args, Clone)]
pub struct PromptArgs {
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. 464,2068,7586.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
}

impl PromptArgs {
    /// The prompt's token ids (text through `tokenizer`).
    pub fn ids(&self, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
        match (&self.prompt, &self.prompt_ids) {
            (Some(text), _) => Ok(tokenizer.encode(text)?),
            (None, Some(ids)) => Ok(ids.clone()),
            (None, None) => bail!("give --prompt or --prompt-ids"),
        }
    }
}

/// The model a benchmark runs: a real one, or a seeded random one of a published shape.
#[derive(Args)]
pub struct BenchModel {
    /// A model folder or hub repo id.
    #[arg(long, conflicts_with = "random")]
    model: Option<String>,
    #[arg(long, env = "INFERLAB_HUB_URL", default_value = DEFAULT_HUB)]
    hub_url: String,
    /// A seeded random model with a named HF config (distilgpt2, gpt2, gpt2-medium,
    /// gpt2-large, gpt2-xl): real speed without a download.
    #[arg(long)]
    random: Option<String>,
    /// Seed of the random model and of the prompt.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl BenchModel {
    /// The model on `device`, and the name the report gives it.
    pub fn load(&self, device: &Device) -> Result<(Gpt2, String)> {
        let name = match (&self.model, &self.random) {
            (_, Some(name)) => format!("random:{name}"),
            (Some(model), None) => model.clone(),
            (None, None) => bail!("give --model or --random"),
        };
        Ok((model_dir::load_named(&name, &self.hub_url, device, self.seed)?, name))
    }
}

/// The scheduler's knobs (the policy is chosen by each command).
#[derive(Args, Clone)]
pub struct SchedulerArgs {
    /// Most sequences in a batch (static, dynamic) or running at once (continuous).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Dynamic batching: how long the oldest request waits for a fuller batch.
    #[arg(long, default_value_t = 50.0)]
    pub max_wait_ms: f64,
    /// Tokens per KV block.
    #[arg(long, default_value_t = crate::engine::kv::DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// Blocks in the KV pool [default: room for max-batch of the longest request].
    #[arg(long)]
    pub num_blocks: Option<usize>,
    /// Continuous batching: most tokens a step computes.
    #[arg(long, default_value_t = 512)]
    pub token_budget: usize,
    /// Continuous batching: chunked prefill, at most this many prompt tokens a step.
    #[arg(long)]
    pub chunk_tokens: Option<usize>,
    /// Turn prefix caching off.
    #[arg(long)]
    pub no_prefix_caching: bool,
}

impl SchedulerArgs {
    /// The scheduler configuration for `policy` over `requests`; adaptive batching takes its
    /// batch size from `cost`.
    pub fn config(
        &self,
        policy: Policy,
        requests: &[Request],
        max_context: usize,
        cost: Option<&CostModel>,
    ) -> Result<SchedulerConfig> {
        if self.block_size == 0 {
            bail!("--block-size must be at least 1 token");
        }
        let longest = requests.iter().map(|r| r.prompt.len() + r.max_new_tokens).max().unwrap_or(1);
        let mut config = SchedulerConfig::new(policy, max_context);
        config.max_batch = self.max_batch;
        config.max_wait_ms = self.max_wait_ms;
        config.block_size = self.block_size;
        config.num_blocks = self.num_blocks.unwrap_or(self.max_batch * longest.div_ceil(self.block_size));
        config.token_budget = self.token_budget;
        config.chunk_tokens = self.chunk_tokens;
        config.prefix_caching = !self.no_prefix_caching;
        if policy == Policy::Adaptive {
            let cost = cost.context("adaptive batching needs a measured step-cost curve")?;
            config.max_batch = cost.adaptive_batch_for(self.max_batch, requests);
        }
        config.validate()?;
        Ok(config)
    }
}

/// A made-up workload's flags.
#[derive(Args, Clone)]
pub struct WorkloadArgs {
    /// Requests in the workload.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Mean arrivals per second.
    #[arg(long, default_value_t = 8.0)]
    pub rate: f64,
    /// Arrive in bursts of this many requests (1 = Poisson).
    #[arg(long, default_value_t = 1)]
    pub burst: usize,
    /// Prompt lengths, MIN..MAX tokens.
    #[arg(long, default_value = "16..64")]
    pub prompt_len: String,
    /// Output lengths, MIN..MAX tokens.
    #[arg(long, default_value = "8..128")]
    pub output_len: String,
    /// Length distribution: uniform or long-tail.
    #[arg(long, default_value = "long-tail")]
    pub lengths: String,
    /// Seed of the workload.
    #[arg(long, default_value_t = 0)]
    pub workload_seed: u64,
}

impl WorkloadArgs {
    pub fn spec(&self, max_context: usize) -> Result<WorkloadSpec> {
        let range = |flag: &str, text: &str| -> Result<(usize, usize)> {
            let (a, b) = text.split_once("..").with_context(|| format!("--{flag} takes MIN..MAX, got {text:?}"))?;
            Ok((
                a.trim().parse().with_context(|| format!("--{flag}: {a:?}"))?,
                b.trim().parse().with_context(|| format!("--{flag}: {b:?}"))?,
            ))
        };
        let lengths = |(min, max): (usize, usize)| match self.lengths.as_str() {
            "uniform" => Ok(Lengths::Uniform { min, max }),
            "long-tail" => Ok(Lengths::LongTail { min, max }),
            other => bail!("--lengths is uniform or long-tail, got {other:?}"),
        };
        let spec = WorkloadSpec {
            requests: self.requests,
            arrivals: if self.burst > 1 {
                Arrivals::Bursty { rate: self.rate, burst: self.burst }
            } else {
                Arrivals::Poisson { rate: self.rate }
            },
            prompt: lengths(range("prompt-len", &self.prompt_len)?)?,
            output: lengths(range("output-len", &self.output_len)?)?,
            seed: self.workload_seed,
        };
        spec.validate(max_context)?;
        Ok(spec)
    }
}
