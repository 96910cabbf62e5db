//! `inferlab perplexity`: transformers' strided perplexity of a text file, to measure what an
//! optimization (f16 / int8 weights, an f16 cache, a sliding window) costs in quality.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::args::ModelArgs;
use super::device::DeviceArg;
use crate::engine::decode::scoring::perplexity;
use crate::engine::kv::KvMode;
use crate::engine::model::precision::Precision;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (UTF-8).
    #[arg(long)]
    file: PathBuf,
    /// Tokens per window [default: the model's context].
    #[arg(long)]
    context: Option<usize>,
    /// Tokens each window advances; each scores only the tokens the one before did not reach
    /// [default: the context, windows side by side].
    #[arg(long)]
    stride: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    precision: Precision,
    /// KV cache the windows are fed through: contiguous, sliding:W (attention limited to W
    /// tokens) or paged.
    #[arg(long, default_value = "contiguous")]
    kv: String,
    /// Print one JSON object: perplexity, nll, tokens, windows.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let kv: KvMode = args.kv.parse()?;
    args.device.check(args.precision)?;
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let device = args.device.init()?;
    let loaded = args.model.load(&device, args.precision)?;
    let ids = loaded.tokenizer.encode(&text)?;
    let context = args.context.unwrap_or(loaded.model.config.n_positions);
    let stride = args.stride.unwrap_or(context);
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} windows {elapsed}").expect("a valid template"));
    let result = pollster::block_on(perplexity(&loaded.model, &ids, context, stride, kv, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }));
    bar.finish_and_clear();
    let result = result?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.6} over {} tokens, {} windows of {context} advancing by {stride})",
            result.perplexity, result.nll, result.tokens, result.windows
        );
    }
    Ok(())
}
