//! `inferlab bench kernels`: every WGSL kernel against its tensor-op twin on the same device,
//! at GPT-2-small attention shapes (12 heads × 64) and contexts 128 / 512 / 1024, then the
//! whole model's decode speed with the kernels on and off.

use std::ops::ControlFlow;

use anyhow::{Result, bail};
use burn::tensor::{Device, Distribution, Tensor};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use web_time::Instant;

use super::BenchModel;
use crate::engine::generate::{GenerateOptions, generate};
use crate::engine::kernels::{self, Path, Slots};
use crate::engine::step_uploads::StepUploads;
use crate::engine::kv::mask::{KeyMeta, StepMask};
use crate::engine::step::Step;
use crate::native::device::DeviceArg;

#[derive(Args)]
pub struct KernelArgs {
    #[command(flatten)]
    model: BenchModel,
    #[arg(long, value_enum, default_value = "wgpu")]
    device: DeviceArg,
    /// Timed repetitions of each kernel.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Tokens decoded in each whole-model run.
    #[arg(long, default_value_t = 16)]
    new_tokens: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct KernelRow {
    name: &'static str,
    context: usize,
    wgsl_ms: f64,
    twin_ms: f64,
    speedup: f64,
}

const HEADS: usize = 12;
const HEAD_DIM: usize = 64;

pub fn run(args: KernelArgs) -> Result<()> {
    if args.device != DeviceArg::Wgpu {
        bail!("the WGSL kernels run on the wgpu device only; use --device wgpu");
    }
    if args.reps == 0 || args.new_tokens < 2 {
        bail!("--reps must be at least 1 and --new-tokens at least 2");
    }
    let device = args.device.init()?;
    let mut rows = vec![];
    for context in [128, 512, 1024] {
        for (name, wgsl_ms, twin_ms) in [
            ("kv_append", time_append(&device, context, Path::Wgsl, args.reps)?, time_append(&device, context, Path::Twin, args.reps)?),
            ("attention_decode", time_attention(&device, context, 1, Path::Wgsl, args.reps)?, time_attention(&device, context, 1, Path::Twin, args.reps)?),
            (
                "attention_prefill",
                time_attention(&device, context, context, Path::Wgsl, args.reps)?,
                time_attention(&device, context, context, Path::Twin, args.reps)?,
            ),
        ] {
            rows.push(KernelRow { name, context, wgsl_ms, twin_ms, speedup: twin_ms / wgsl_ms });
        }
    }

    let (mut model, name) = args.model.load(&device)?;
    let prompt: Vec<u32> = (0..8).map(|i| (i * 997 + 13) % model.config.vocab_size as u32).collect();
    let options = GenerateOptions { max_new_tokens: args.new_tokens, ..GenerateOptions::default() };
    let mut decode = |kernels: bool| -> Result<(f64, Vec<u32>)> {
        model.set_kernels(kernels);
        let out = pollster::block_on(generate(&model, &prompt, &options, None, |_| ControlFlow::Continue(())))?;
        Ok((out.tokens_per_s(), out.new_ids))
    };
    decode(true)?; // warm-up: compile every pipeline of both paths before timing
    decode(false)?;
    let (on, on_ids) = decode(true)?;
    let (off, off_ids) = decode(false)?;

    if args.json {
        let out = json!({
            "device": args.device.name(),
            "model": name,
            "kernels": rows,
            "decode": { "kernels_on_tok_s": on, "kernels_off_tok_s": off, "speedup": on / off, "same_tokens": on_ids == off_ids },
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("bench kernels · {} · {HEADS} heads × {HEAD_DIM} · {} reps", args.device.name(), args.reps);
    println!("  {:<18} {:>7} {:>10} {:>10} {:>8}", "kernel", "context", "wgsl ms", "twin ms", "speedup");
    for r in &rows {
        println!("  {:<18} {:>7} {:>10.3} {:>10.3} {:>7.2}×", r.name, r.context, r.wgsl_ms, r.twin_ms, r.speedup);
    }
    println!("  decode {name}: kernels on {on:.2} tok/s, off {off:.2} tok/s, speedup {:.2}× (same tokens: {})", on / off, on_ids == off_ids);
    Ok(())
}

fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Mean milliseconds of `op` over `reps` runs, after one untimed run that compiles it.
fn time(device: &Device, reps: usize, mut op: impl FnMut()) -> Result<f64> {
    let sync = |d: &Device| d.sync().map_err(|e| anyhow::anyhow!("{e:?}"));
    op();
    sync(device)?;
    let start = Instant::now();
    for _ in 0..reps {
        op();
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() * 1000.0 / reps as f64)
}

/// Appending one decode token's K and V into a cache of `context` slots.
fn time_append(device: &Device, context: usize, path: Path, reps: usize) -> Result<f64> {
    let mut cache = Some((random([1, HEADS, context, HEAD_DIM], device), random([1, HEADS, context, HEAD_DIM], device)));
    let new = (random([1, HEADS, 1, HEAD_DIM], device), random([1, HEADS, 1, HEAD_DIM], device));
    let slots = Slots { base: context - 1, ring: false, first: 0 };
    time(device, reps, || {
        let buffers = cache.take().expect("the cache is put back after each append");
        cache = Some(kernels::append(buffers, new.clone(), slots, &StepUploads::default(), path));
    })
}

/// `queries` causal queries (the last ones of the context) against `context` keys.
fn time_attention(device: &Device, context: usize, queries: usize, path: Path, reps: usize) -> Result<f64> {
    let q = random([1, HEADS, queries, HEAD_DIM], device);
    let k = random([1, HEADS, context, HEAD_DIM], device);
    let v = random([1, HEADS, context, HEAD_DIM], device);
    let keys = KeyMeta { keys: context, positions: (0..context).collect(), real: vec![true; context] };
    let step = Step::single(&vec![0; queries], context - queries);
    let mask = StepMask::new(&keys, &step, None);
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    time(device, reps, || {
        kernels::attention(q.clone(), k.clone(), v.clone(), &mask, scale, path);
    })
}
