//! `inferlab inspect`: one prompt's forward pass made visible — every head's attention, the
//! logit lens after every block, the residual stream's norm, and each op's time in the prefill
//! and in one decode step after it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::args::{ModelArgs, PromptArgs};
use super::device::DeviceArg;
use crate::engine::inspect::op_timer::{Clock, StepTiming};
use crate::engine::inspect::{Inspection, TopTokens, inspect};
use crate::engine::model::precision::Precision;
use crate::engine::model::tokenizer::Tokenizer;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    precision: Precision,
    /// Also write the two steps' ops as a Chrome trace (Perfetto, chrome://tracing).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    args.device.check(args.precision)?;
    let device = args.device.init()?;
    let loaded = args.model.load(&device, args.precision)?;
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let prompt = args.prompt.ids(tokenizer)?;
    model.warm_up()?;
    let inspection = pollster::block_on(inspect(model, &prompt, Clock::Profile))?;
    if let Some(path) = &args.trace {
        super::trace::write(path, &inspection.timeline, args.device.name())?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&to_json(&inspection, tokenizer, args.device.name())?)?);
    } else {
        print_summary(&inspection, tokenizer)?;
    }
    Ok(())
}

fn text(tokenizer: &Tokenizer, id: u32) -> Result<String> {
    Ok(tokenizer.decode(&[id])?)
}

fn top_json(top: &TopTokens, tokenizer: &Tokenizer) -> Result<Value> {
    let tokens: Vec<String> = top.ids.iter().map(|&id| text(tokenizer, id)).collect::<Result<_>>()?;
    Ok(json!({ "top_ids": top.ids, "top_probs": top.probs, "top_tokens": tokens }))
}

fn timing_json(step: &StepTiming) -> Value {
    let ops: Vec<Value> = step
        .ops
        .iter()
        .map(|o| json!({ "op": o.op.name(), "layer": o.layer, "ms": o.ms, "start_ms": o.start_ms }))
        .collect();
    Value::Array(ops)
}

/// The inspection as `inspect --json` prints it: the prefill's figures at the top level (the
/// logit lens at the last prompt position, every position under `positions`), the decode
/// step's under `decode`.
fn to_json(inspection: &Inspection, tokenizer: &Tokenizer, device: &str) -> Result<Value> {
    let lens = inspection
        .logit_lens
        .iter()
        .map(|layer| {
            let mut entry = top_json(layer.positions.last().expect("a prompt has a position"), tokenizer)?;
            entry["layer"] = json!(layer.layer);
            entry["positions"] = layer.positions.iter().map(|p| top_json(p, tokenizer)).collect::<Result<Value>>()?;
            Ok(entry)
        })
        .collect::<Result<Vec<Value>>>()?;
    let tokens: Vec<String> = inspection.tokens.iter().map(|&id| text(tokenizer, id)).collect::<Result<_>>()?;
    let [prefill, decode] = &inspection.timeline.steps[..] else { bail!("an inspection times two steps") };
    Ok(json!({
        "device": device,
        "timing_method": inspection.timeline.timing,
        "tokens": tokens,
        "token_ids": inspection.tokens,
        "attentions": inspection.attentions,
        "residual_norms": inspection.residual_norms,
        "logit_lens": lens,
        "timing": timing_json(prefill),
        "step_ms": prefill.ms,
        "decode": {
            "token_id": inspection.next_token,
            "token": text(tokenizer, inspection.next_token)?,
            "attentions": inspection.decode_attentions,
            "timing": timing_json(decode),
            "step_ms": decode.ms,
        },
    }))
}

/// For people: the lens's top token after each block, then where each step's time went.
fn print_summary(inspection: &Inspection, tokenizer: &Tokenizer) -> Result<()> {
    println!("logit lens at the last prompt position (top token after each block):");
    for layer in &inspection.logit_lens {
        let top = layer.positions.last().expect("a prompt has a position");
        println!("  block {:>2}: {:?} {:.1}%", layer.layer, text(tokenizer, top.ids[0])?, top.probs[0] * 100.0);
    }
    println!("where the time went ({:?}):", inspection.timeline.timing);
    for step in &inspection.timeline.steps {
        let ops: Vec<String> = step.by_op().iter().map(|(op, ms)| format!("{} {ms:.2}", op.name())).collect();
        println!("  {} · {:.2} ms: {}", step.label, step.ms, ops.join(", "));
    }
    Ok(())
}
