//! `inferlab generate`: one prompt, decoded plainly (streamed to stdout), speculatively
//! (`--draft`) or by beam search (`--num-beams`). The flags are checked in one place, in the
//! order users meet them; each mode then has its own function and its own output.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use serde_json::{Value, json};

use super::args::{ModelArgs, PromptArgs};
use super::device::DeviceArg;
use super::model_dir;
use crate::engine::decode::beam::{BeamOptions, EarlyStopping, beam_search};
use crate::engine::decode::generate::{GenerateOptions, Generation, fit_context, generate};
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::decode::speculative::drafters::{AnyDrafter, DraftSpec};
use crate::engine::decode::speculative::report::SpeculativeReport;
use crate::engine::decode::speculative::{SpeculativeOptions, SpeculativeRun, speculative_generate};
use crate::engine::decode::text_stream::TextStream;
use crate::engine::kv::KvMode;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::precision::Precision;
use crate::engine::model::tokenizer::Tokenizer;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
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
    /// OpenAI's, -2 to 2: lowers the logit of every token generated so far, once.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    presence_penalty: f32,
    /// OpenAI's, -2 to 2: lowers a token's logit once per time it was generated.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// OpenAI's logit_bias: ID=BIAS (-100 to 100) added to a token's logit; repeatable or
    /// comma-separated, e.g. --logit-bias 50256=-100.
    #[arg(long, value_delimiter = ',', value_parser = parse_logit_bias, allow_hyphen_values = true)]
    logit_bias: Vec<(u32, f32)>,
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
    /// Time every step's ops (synced where the device has no timestamps: slower) and write
    /// them as a Chrome trace (Perfetto, chrome://tracing).
    #[arg(long)]
    trace: Option<PathBuf>,
    #[command(flatten)]
    draft: DraftArgs,
    #[command(flatten)]
    beam: BeamArgs,
}

/// `ID=BIAS`, as `--logit-bias` takes it.
fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s.split_once('=').ok_or_else(|| format!("{s:?}: write ID=BIAS, e.g. 50256=-100"))?;
    let id = id.trim().parse().map_err(|_| format!("{id:?} is not a token id"))?;
    let bias = bias.trim().parse().map_err(|_| format!("{bias:?} is not a number"))?;
    Ok((id, bias))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Truncate {
    Error,
    Left,
}

/// What every mode starts from: the loaded model, the prompt fitted to its context, and the
/// settings the flags gave.
struct Prepared<'a> {
    args: &'a GenerateArgs,
    model: &'a Gpt2,
    tokenizer: &'a Tokenizer,
    prompt: Vec<u32>,
    max_new_tokens: usize,
    sampling: SamplingParams,
    eos_token_ids: Vec<u32>,
    kv: KvMode,
}

pub fn run(args: GenerateArgs) -> Result<()> {
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
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        logit_bias: args.logit_bias.clone(),
    };
    sampling.validate()?;
    let draft = args.draft.draft.as_deref().map(str::parse::<DraftSpec>).transpose()?;
    if args.beam.num_beams.is_some() && (sampling.penalizes_generated() || !sampling.logit_bias.is_empty()) {
        bail!(
            "--presence-penalty, --frequency-penalty and --logit-bias shape sampling; beam search ranks by log-probabilities: leave them out with --num-beams"
        );
    }
    if (draft.is_some() || args.beam.num_beams.is_some()) && !args.stop.is_empty() {
        bail!("--stop applies to plain decoding; it cannot be combined with --draft or --num-beams");
    }
    args.device.check(args.precision)?;
    let device = args.device.init()?;
    let loaded = args.model.load(&device, args.precision)?;
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let config = &model.config;

    let prompt = args.prompt.ids(tokenizer)?;
    sampling.check_vocab(config.vocab_size)?;
    if let Some(id) = prompt.iter().find(|&&id| id as usize >= config.vocab_size) {
        bail!("prompt token id {id} is outside the vocabulary ({})", config.vocab_size);
    }
    let (prompt, max_new_tokens, warning) =
        fit_context(&prompt, args.max_new_tokens, config.n_positions, args.truncate == Truncate::Left)?;
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let eos_token_ids: Vec<u32> = if args.ignore_eos { vec![] } else { config.eos_token_id.into_iter().collect() };
    let prepared = Prepared { args: &args, model, tokenizer, prompt, max_new_tokens, sampling, eos_token_ids, kv };
    super::trace::traced(model, args.trace.as_deref(), args.device.name(), || {
        if let Some(spec) = &draft {
            return run_speculative(prepared, spec, &device);
        }
        if let Some(options) = args.beam.options(max_new_tokens, prepared.eos_token_ids.clone())? {
            return run_beam(prepared, &options);
        }
        run_plain(prepared)
    })
}

/// Plain decoding first (the baseline, same process), then speculative decoding; prints the
/// text and what the drafts bought.
fn run_speculative(p: Prepared, spec: &DraftSpec, device: &Device) -> Result<()> {
    let args = p.args;
    let options = SpeculativeOptions {
        max_new_tokens: p.max_new_tokens,
        sampling: p.sampling.clone(),
        gamma: args.draft.gamma,
        adaptive_gamma: args.draft.adaptive_gamma,
        eos_token_ids: p.eos_token_ids.clone(),
    };
    options.validate()?;
    let draft_model = load_draft(spec, &args.model.hub_url, device, 0)?;
    let baseline = plain(p.model, &p.prompt, &options, p.kv)?;
    let (run, report) = speculative(p.model, draft_model.as_ref(), spec, &p.prompt, &options, p.kv, &baseline)?;
    let text = p.tokenizer.decode(&run.new_ids)?;
    if args.json {
        let extra = json!({ "stop_reason": run.stop_reason, "speculative": report });
        return print_json(&p, &run.new_ids, &text, extra);
    }
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
    Ok(())
}

/// Beam search; prints the beams, best first.
fn run_beam(p: Prepared, options: &BeamOptions) -> Result<()> {
    let (best, beams) = beams(p.model, p.tokenizer, &p.prompt, options, p.kv)?;
    if p.args.json {
        let text = p.tokenizer.decode(&best)?;
        return print_json(&p, &best, &text, json!({ "beams": beams }));
    }
    for (rank, beam) in beams.as_array().into_iter().flatten().enumerate() {
        println!(
            "#{} score {:.4}: {}",
            rank + 1,
            beam["score"].as_f64().unwrap_or(f64::NAN),
            beam["text"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Plain decoding, its text streamed to stdout as it becomes final (or one JSON object).
fn run_plain(p: Prepared) -> Result<()> {
    let args = p.args;
    let options = GenerateOptions {
        max_new_tokens: p.max_new_tokens,
        sampling: p.sampling.clone(),
        kv: p.kv,
        eos_token_ids: p.eos_token_ids.clone(),
        stop_strings: args.stop.clone(),
    };
    let mut stream = TextStream::new(args.stop.clone());
    let mut stdout = std::io::stdout();
    let generation = pollster::block_on(generate(p.model, &p.prompt, &options, Some(p.tokenizer), |event| {
        if !args.json
            && let Ok(delta) = stream.push(event.id, p.tokenizer)
            && !delta.text.is_empty()
        {
            let _ = write!(stdout, "{}", delta.text);
            let _ = stdout.flush();
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
        return print_json(&p, &generation.new_ids, &text, extra);
    }
    println!("{}", stream.finish());
    eprintln!(
        "{} tokens · TTFT {:.1} ms · {:.1} tok/s · stop: {:?} · {} · kv {}",
        generation.new_ids.len(),
        generation.ttft_ms,
        generation.tokens_per_s(),
        generation.stop_reason,
        args.device.name(),
        p.kv
    );
    Ok(())
}

/// Prints `generate --json`'s object: the fields every mode shares, then the mode's own.
fn print_json(p: &Prepared, generated: &[u32], text: &str, extra: Value) -> Result<()> {
    let mut out = json!({
        "prompt_ids": p.prompt,
        "generated_ids": generated,
        "text": text,
        "device": p.args.device.name(),
        "dtype": p.args.precision.dtype.name(),
        "kv": p.kv.to_string(),
        "kv_dtype": p.args.precision.kv_dtype.name(),
    });
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, extra) {
        out.extend(extra);
    }
    println!("{}", serde_json::to_string(&out).context("serialising the result")?);
    Ok(())
}

#[derive(Args, Clone)]
pub struct DraftArgs {
    /// Speculative decoding with this drafter: a model (folder, hub repo id or random:NAME),
    /// layers:K (the target's first K blocks) or ngram:N (prompt lookup).
    #[arg(long, conflicts_with = "num_beams")]
    pub draft: Option<String>,
    /// Draft tokens per target pass (1 to 32).
    #[arg(long, default_value_t = 4)]
    pub gamma: usize,
    /// Grow γ after a fully accepted draft, shrink it after a mostly rejected one.
    #[arg(long)]
    pub adaptive_gamma: bool,
}

#[derive(Args, Clone)]
pub struct BeamArgs {
    /// Beam search with this many beams (transformers' semantics).
    #[arg(long)]
    pub num_beams: Option<usize>,
    /// Sequences returned, best first (≤ num_beams).
    #[arg(long, requires = "num_beams")]
    pub num_return_sequences: Option<usize>,
    /// Scores are sum_logprobs / length^L; > 0 favours longer sequences.
    #[arg(long, requires = "num_beams", allow_negative_numbers = true, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// true, false or never.
    #[arg(long, requires = "num_beams", default_value = "false")]
    pub early_stopping: String,
    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, requires = "num_beams", default_value_t = 0)]
    pub no_repeat_ngram_size: usize,
}

/// The draft model a [`DraftSpec::Model`] names (none for layers:K and ngram:N).
pub fn load_draft(spec: &DraftSpec, hub_url: &str, device: &Device, seed: u64) -> Result<Option<Gpt2>> {
    match spec {
        DraftSpec::Model(name) => Ok(Some(model_dir::load_named(name, hub_url, device, seed.wrapping_add(1))?)),
        _ => Ok(None),
    }
}

/// Plain decoding with the settings of a speculative run: its baseline.
pub fn plain(target: &Gpt2, prompt: &[u32], options: &SpeculativeOptions, kv: KvMode) -> Result<Generation> {
    Ok(pollster::block_on(generate(target, prompt, &options.plain(kv), None, |_| ControlFlow::Continue(())))?)
}

/// Speculative decoding of `prompt`, reported against `plain` (same prompt, same process).
pub fn speculative(
    target: &Gpt2,
    draft_model: Option<&Gpt2>,
    spec: &DraftSpec,
    prompt: &[u32],
    options: &SpeculativeOptions,
    kv: KvMode,
    plain: &Generation,
) -> Result<(SpeculativeRun, SpeculativeReport)> {
    let mut drafter = AnyDrafter::new(spec, target, draft_model, prompt.len() + options.max_new_tokens)?;
    let run = pollster::block_on(speculative_generate(target, &mut drafter, prompt, options, kv, |_| {
        ControlFlow::Continue(())
    }))?;
    let report = SpeculativeReport::new(&spec.to_string(), options, &run, plain);
    Ok((run, report))
}

impl BeamArgs {
    pub fn options(&self, max_new_tokens: usize, eos_token_ids: Vec<u32>) -> Result<Option<BeamOptions>> {
        let Some(num_beams) = self.num_beams else {
            return Ok(None);
        };
        let options = BeamOptions {
            num_beams,
            num_return_sequences: self.num_return_sequences.unwrap_or(1),
            max_new_tokens,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping.parse::<EarlyStopping>()?,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            eos_token_ids,
        };
        options.validate()?;
        Ok(Some(options))
    }
}

/// Beam search; returns the best beam's new ids and the `beams` JSON (best first).
pub fn beams(
    model: &Gpt2,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    options: &BeamOptions,
    kv: KvMode,
) -> Result<(Vec<u32>, Value)> {
    let out = pollster::block_on(beam_search(model, prompt, options, kv, |_| ControlFlow::Continue(())))?;
    let Some(best) = out.hypotheses.first() else { bail!("beam search finished without a hypothesis") };
    let beams: Vec<Value> = out
        .hypotheses
        .iter()
        .map(|h| Ok(json!({ "ids": h.ids, "text": tokenizer.decode(&h.ids)?, "score": h.score })))
        .collect::<Result<_>>()?;
    Ok((best.ids.clone(), Value::Array(beams)))
}
