//! `inferlab generate` and `inferlab bench …`: argument parsing, validation with clear
//! errors, and streaming output. The work itself is the engine's.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use super::bench;
use super::decoding::{self, BeamArgs, DraftArgs};
use super::device::{DeviceArg, Precision};
use super::hub::DEFAULT_HUB;
use super::model_dir;
use crate::engine::generate::{GenerateOptions, fit_context, generate};
use crate::engine::kv::KvMode;
use crate::engine::sampling::SamplingParams;
use crate::engine::speculative::SpeculativeOptions;
use crate::engine::speculative::drafters::DraftSpec;

#[derive(Parser)]
#[command(
    name = "inferlab",
    version,
    about = "GPT-2 inference lab: generate text and benchmark inference optimizations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// Run a requests file (JSONL) through the engine under a batching policy.
    Batch(super::batch::BatchArgs),
    /// Simulate serving a made-up workload under batching policies with a step-cost model.
    Simulate(super::simulate::SimulateArgs),
    /// Benchmarks (JSON with --json).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// An OpenAI-compatible completions server with continuous batching (/v1/completions,
    /// /v1/models, /health, /metrics).
    Serve(super::serve::ServeArgs),
    /// The browser app's pages on the native engine: serves them on 127.0.0.1 and opens the
    /// default browser (a per-launch token in the URL guards the engine).
    App(super::app::AppArgs),
}

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

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. 464,2068,7586.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// 1 = off.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the text contains this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Do not stop at the model's end-of-text token.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    precision: Precision,
    /// KV cache: contiguous, sliding:W, paged or none [default: contiguous; paged for beam
    /// search, whose beams then share blocks copy-on-write].
    #[arg(long)]
    kv: Option<String>,
    /// Tokens per block of the paged cache (--kv paged).
    #[arg(long)]
    block_size: Option<usize>,
    /// What to do with a prompt longer than the context: refuse it, or drop its oldest tokens.
    #[arg(long, value_enum, default_value = "error")]
    truncate: Truncate,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    draft: DraftArgs,
    #[command(flatten)]
    beam: BeamArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Truncate {
    Error,
    Left,
}

/// Runs the command line; errors are printed as one clear message and exit code 1.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INFERLAB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wgpu_hal=off")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => run_generate(args),
        Command::Batch(args) => super::batch::run(args),
        Command::Simulate(args) => super::simulate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Serve(args) => super::serve::run(args),
        Command::App(args) => super::app::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let default_kv = if args.beam.num_beams.is_some() { "paged" } else { "contiguous" };
    let kv = match (args.kv.as_deref().unwrap_or(default_kv).parse::<KvMode>()?, args.block_size) {
        (KvMode::Paged { .. }, Some(0)) => bail!("--block-size must be at least 1 token"),
        (KvMode::Paged { .. }, Some(block_size)) => KvMode::Paged { block_size },
        (_, Some(_)) => bail!("--block-size applies to --kv paged only"),
        (kv, None) => kv,
    };
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    sampling.validate()?;
    let draft = args.draft.draft.as_deref().map(str::parse::<DraftSpec>).transpose()?;
    if (draft.is_some() || args.beam.num_beams.is_some()) && !args.stop.is_empty() {
        bail!("--stop applies to plain decoding; it cannot be combined with --draft or --num-beams");
    }
    args.precision.check(args.device)?;
    let device = args.device.init()?;
    let dir = model_dir::resolve(&args.model.model, &args.model.hub_url)?;
    let mut loaded = model_dir::load(&dir, &device)?;
    loaded.model = args.precision.apply(loaded.model)?;
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let config = &model.config;

    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => tokenizer.encode(text)?,
        (None, Some(ids)) => ids.clone(),
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    if let Some(id) = prompt.iter().find(|&&id| id as usize >= config.vocab_size) {
        bail!("prompt token id {id} is outside the vocabulary ({})", config.vocab_size);
    }
    let (prompt, max_new_tokens, warning) =
        fit_context(&prompt, args.max_new_tokens, config.n_positions, args.truncate == Truncate::Left)?;
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let eos_token_ids: Vec<u32> = if args.ignore_eos { vec![] } else { config.eos_token_id.into_iter().collect() };
    if let Some(spec) = &draft {
        let options = SpeculativeOptions {
            max_new_tokens,
            sampling,
            gamma: args.draft.gamma,
            adaptive_gamma: args.draft.adaptive_gamma,
            eos_token_ids,
        };
        options.validate()?;
        let draft_model = decoding::load_draft(spec, &args.model.hub_url, &device, 0)?;
        let plain = decoding::plain(model, &prompt, &options, kv)?;
        let (run, report) = decoding::speculative(model, draft_model.as_ref(), spec, &prompt, &options, kv, &plain)?;
        let text = tokenizer.decode(&run.new_ids)?;
        if args.json {
            let extra = json!({ "stop_reason": run.stop_reason, "speculative": report });
            print_generation_json(&prompt, &run.new_ids, &text, args.device, args.precision, kv, extra)?;
        } else {
            println!("{text}");
            eprintln!(
                "{} tokens in {} target passes · α {:.2} · {:.2} tokens/pass · c {:.3} · speedup {:.2}× measured, {:.2}× theoretical · {}",
                run.new_ids.len(),
                report.passes,
                report.alpha,
                report.tokens_per_target_pass,
                report.c,
                report.measured_speedup,
                report.theoretical_speedup,
                args.device.name()
            );
        }
        return Ok(());
    }
    if let Some(options) = args.beam.options(max_new_tokens, eos_token_ids.clone())? {
        let (best, beams) = decoding::beams(model, tokenizer, &prompt, &options, kv)?;
        if args.json {
            let text = tokenizer.decode(&best)?;
            print_generation_json(&prompt, &best, &text, args.device, args.precision, kv, json!({ "beams": beams }))?;
        } else {
            for (rank, beam) in beams.as_array().into_iter().flatten().enumerate() {
                println!(
                    "#{} score {:.4}: {}",
                    rank + 1,
                    beam["score"].as_f64().unwrap_or(f64::NAN),
                    beam["text"].as_str().unwrap_or("")
                );
            }
        }
        return Ok(());
    }
    let options = GenerateOptions { max_new_tokens, sampling, kv, eos_token_ids, stop_strings: args.stop.clone() };

    // Streams the text as it grows, holding back what may still turn out to be a stop
    // string, or the first bytes of a character that the next token completes.
    let mut printed = 0;
    let mut ids = vec![];
    let mut stdout = std::io::stdout();
    let generation = pollster::block_on(generate(model, &prompt, &options, Some(tokenizer), |event| {
        if !args.json {
            ids.push(event.id);
            if let Ok(text) = tokenizer.decode(&ids)
                && !text.ends_with('\u{FFFD}')
            {
                let end = streamable_len(&text, &options.stop_strings);
                if end > printed {
                    let _ = write!(stdout, "{}", &text[printed..end]);
                    let _ = stdout.flush();
                    printed = end;
                }
            }
        }
        ControlFlow::Continue(())
    }))?;
    let text = generation.text.clone().unwrap_or_default();

    if args.json {
        let extra = json!({
            "ttft_ms": generation.ttft_ms,
            "tokens_per_s": generation.tokens_per_s(),
            "stop_reason": generation.stop_reason,
        });
        print_generation_json(&prompt, &generation.new_ids, &text, args.device, args.precision, kv, extra)?;
    } else {
        if text.len() > printed {
            print!("{}", &text[printed..]);
        }
        println!();
        eprintln!(
            "{} tokens · TTFT {:.1} ms · {:.1} tok/s · stop: {:?} · {} · kv {}",
            generation.new_ids.len(),
            generation.ttft_ms,
            generation.tokens_per_s(),
            generation.stop_reason,
            args.device.name(),
            kv
        );
    }
    Ok(())
}

/// Prints `generate --json`'s object: the fields every mode shares, then the mode's own.
fn print_generation_json(
    prompt: &[u32],
    generated: &[u32],
    text: &str,
    device: DeviceArg,
    precision: Precision,
    kv: KvMode,
    extra: Value,
) -> Result<()> {
    let mut out = json!({
        "prompt_ids": prompt,
        "generated_ids": generated,
        "text": text,
        "device": device.name(),
        "dtype": precision.dtype.name(),
        "kv": kv.to_string(),
        "kv_dtype": precision.kv_dtype.name(),
    });
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    println!("{}", serde_json::to_string(&out).context("serialising the result")?);
    Ok(())
}

/// How much of `text` can be shown for sure: up to the first stop string, and short of a
/// tail that is the start of one.
fn streamable_len(text: &str, stops: &[String]) -> usize {
    if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        return cut;
    }
    let held = stops
        .iter()
        .flat_map(|s| s.char_indices().map(|(i, _)| i).skip(1).filter(|&i| text.ends_with(&s[..i])))
        .max()
        .unwrap_or(0);
    text.len() - held
}

#[cfg(test)]
mod tests {
    use super::streamable_len;

    #[test]
    fn stop_strings_are_never_streamed() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(streamable_len("hello", &stops), 5);
        assert_eq!(streamable_len("hello\n", &stops), 5);
        assert_eq!(streamable_len("hello EN", &stops), 6);
        assert_eq!(streamable_len("hello END more", &stops), 6);
    }
}
