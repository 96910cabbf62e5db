//! `inferlab bench speculative`: plain decoding, then speculative decoding with each drafter
//! at each γ, in one process on one device; measured speedup beside the theoretical one for
//! the measured α and cost ratio c.

use anyhow::{Result, bail};
use clap::Args;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::engine::decode::sampling::SamplingParams;
use crate::engine::decode::speculative::SpeculativeOptions;
use crate::engine::decode::speculative::drafters::DraftSpec;
use crate::engine::decode::speculative::report::{ALPHA_DEFINITION, plain_ms_per_token};
use crate::engine::kv::KvMode;
use crate::engine::model::tokenizer::Tokenizer;
use crate::native::device::DeviceArg;
use crate::native::generate;
use crate::native::hub::DEFAULT_HUB;
use crate::native::model_dir;

#[derive(Args)]
pub struct SpeculativeArgs {
    /// The target: a model folder, a hub repo id or random:NAME (e.g. random:gpt2).
    #[arg(long)]
    target: String,
    /// A drafter (repeatable): a model (folder, repo id, random:NAME), layers:K or ngram:N.
    #[arg(long = "draft", required = true)]
    drafts: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    gammas: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Length of the seeded random prompt.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// The prompt as token ids instead of a random one.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    prompt_ids: Option<Vec<u32>>,
    /// The prompt as text, read by the target's tokenizer (a folder or hub repo target).
    #[arg(long)]
    prompt: Option<String>,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Seed of random models, the prompt and sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, env = "INFERLAB_HUB_URL", default_value = DEFAULT_HUB)]
    hub_url: String,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    json: bool,
}

pub fn run(args: SpeculativeArgs) -> Result<()> {
    if args.new_tokens < 2 {
        bail!("--new-tokens must be at least 2");
    }
    let device = args.device.init()?;
    let target = model_dir::load_named(&args.target, &args.hub_url, &device, args.seed)?;
    let vocab = target.config.vocab_size as u32;
    let prompt = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => {
            if args.target.starts_with("random:") {
                bail!("--prompt needs a target with a tokenizer (a folder or hub repo); give --prompt-ids instead");
            }
            let dir = model_dir::resolve(&args.target, &args.hub_url)?;
            let tokenizer = Tokenizer::from_bytes(&model_dir::read(&dir, "tokenizer.json")?)?;
            let ids = tokenizer.encode(text)?;
            if ids.is_empty() {
                bail!("--prompt is empty");
            }
            ids
        }
        (None, None) => {
            let mut rng = StdRng::seed_from_u64(args.seed);
            (0..args.prompt_tokens.max(1)).map(|_| rng.random_range(0..vocab)).collect()
        }
    };
    let sampling = SamplingParams { temperature: args.temperature, seed: args.seed, ..SamplingParams::default() };
    let options = |gamma: usize, max_new_tokens: usize| SpeculativeOptions {
        max_new_tokens,
        sampling: sampling.clone(),
        gamma,
        adaptive_gamma: false,
        eos_token_ids: vec![],
    };
    let kv = KvMode::Contiguous;

    // Warm-up (kernel compilation), then the baseline.
    generate::plain(&target, &prompt, &options(1, 2), kv)?;
    let plain = generate::plain(&target, &prompt, &options(1, args.new_tokens), kv)?;
    let mut rows = vec![];
    for draft in &args.drafts {
        let spec: DraftSpec = draft.parse()?;
        let draft_model = generate::load_draft(&spec, &args.hub_url, &device, args.seed)?;
        generate::speculative(&target, draft_model.as_ref(), &spec, &prompt, &options(2, 4), kv, &plain)?;
        for &gamma in &args.gammas {
            let opts = options(gamma, args.new_tokens);
            opts.validate()?;
            let (run, report) =
                generate::speculative(&target, draft_model.as_ref(), &spec, &prompt, &opts, kv, &plain)?;
            let same = run.new_ids == plain.new_ids;
            if !args.json {
                println!(
                    "{:<28} γ {gamma:>2}  α {:.3}  tokens/pass {:>5.2}  c {:.3}  target pass {:.2} steps  speedup {:>5.2}× measured  {:>5.2}× theoretical  ({:.2}){}",
                    report.drafter,
                    report.alpha,
                    report.tokens_per_target_pass,
                    report.c,
                    report.target_pass_in_steps,
                    report.measured_speedup,
                    report.theoretical_speedup,
                    report.measured_speedup / report.theoretical_speedup,
                    if same || args.temperature > 0.0 { "" } else { "  OUTPUT DIFFERS" }
                );
            }
            rows.push(json!({
                "drafter": report.drafter,
                "gamma": gamma,
                "alpha": report.alpha,
                "tokens_per_target_pass": report.tokens_per_target_pass,
                "accepted_hist": report.accepted_hist,
                "c": report.c,
                "measured_speedup": report.measured_speedup,
                "theoretical_speedup": report.theoretical_speedup,
                "measured_over_theoretical": report.measured_speedup / report.theoretical_speedup,
                "speculative_ms_per_token": report.speculative_ms_per_token,
                "target_pass_in_steps": report.target_pass_in_steps,
                "same_output_as_plain": same,
            }));
        }
    }
    if args.json {
        let out = json!({
            "target": args.target,
            "device": args.device.name(),
            "prompt_tokens": prompt.len(),
            "prompt": args.prompt,
            "new_tokens": args.new_tokens,
            "temperature": args.temperature,
            "plain_ms_per_token": plain_ms_per_token(&plain),
            "alpha_definition": ALPHA_DEFINITION,
            "rows": rows,
        });
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}
