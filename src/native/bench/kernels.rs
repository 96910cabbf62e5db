//! `inferlab bench kernels`: every hand-written kernel against its tensor-op twin on the same
//! device, then the whole model's decode speed with the kernels on and off. On wgpu: the WGSL
//! kernels at GPT-2-small attention shapes (12 heads × 64), contexts 128 / 512 / 1024, and the
//! WGSL row dots at GPT-2-small's linear layers and head for 1, 4 and 8 rows. On the
//! CPU: the row-dots kernel at GPT-2-small's linear layers and head, for 1, 8 and 16 rows
//! (batch-1 decode, batch 8, speculative verification); the decode runs also switch the CPU's
//! few-query attention and one-pass GELU.
//!
//! Each kernel row repeats one table, which then stays in the CPU's cache as it does not in a
//! decode step (124M weights): the decode row is the figure that counts.

use std::ops::ControlFlow;

use anyhow::{Result, bail};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use clap::Args;
use rand::{SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::json;
use web_time::Instant;

use crate::engine::decode::generate::{GenerateOptions, generate};
use crate::engine::kernels::row_dots_wgsl::{self, Packed};
use crate::engine::kernels::{self, KernelPath, Slots, row_dots};
use crate::engine::kv::mask::{KeyMeta, StepMask};
use crate::engine::model::vocab_table::VocabTable;
use crate::engine::model::weight_dtype::WeightDtype;
use crate::engine::step::Step;
use crate::engine::step_uploads::StepUploads;
use crate::native::args::BenchModel;
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

/// A WGSL kernel vs its twin.
#[derive(Serialize)]
struct KernelRow {
    name: &'static str,
    context: usize,
    wgsl_ms: f64,
    twin_ms: f64,
    speedup: f64,
}

/// The row-dots kernel vs the matmul, `rows` rows against a `[out, in]` table.
#[derive(Serialize)]
struct RowDotsRow {
    layer: &'static str,
    table: [usize; 2],
    rows: usize,
    kernel_ms: f64,
    twin_ms: f64,
    speedup: f64,
}

const HEADS: usize = 12;
const HEAD_DIM: usize = 64;

pub fn run(args: KernelArgs) -> Result<()> {
    if args.reps == 0 || args.new_tokens < 2 {
        bail!("--reps must be at least 1 and --new-tokens at least 2");
    }
    let device = args.device.init()?;
    let (rows, dots) = match args.device {
        DeviceArg::Wgpu => (wgsl_rows(&device, args.reps)?, row_dots_rows(&device, KernelPath::Wgsl, args.reps)?),
        DeviceArg::Cpu => (vec![], row_dots_rows(&device, KernelPath::Cpu, args.reps)?),
        DeviceArg::Cuda => bail!(
            "the hand-written kernels are WGSL (--device wgpu) and row dots (--device cpu); CUDA runs the tensor ops"
        ),
    };

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
            "row_dots": dots,
            "decode": { "kernels_on_tok_s": on, "kernels_off_tok_s": off, "speedup": on / off, "same_tokens": on_ids == off_ids },
        });
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!("bench kernels · {} · {} reps", args.device.name(), args.reps);
    if !rows.is_empty() {
        println!(
            "  {:<18} {:>7} {:>10} {:>10} {:>8}   ({HEADS} heads × {HEAD_DIM})",
            "kernel", "context", "wgsl ms", "twin ms", "speedup"
        );
    }
    for r in &rows {
        println!("  {:<18} {:>7} {:>10.3} {:>10.3} {:>7.2}×", r.name, r.context, r.wgsl_ms, r.twin_ms, r.speedup);
    }
    if !dots.is_empty() {
        println!(
            "  {:<18} {:>11} {:>5} {:>10} {:>10} {:>8}",
            "row dots", "table", "rows", "kernel ms", "matmul ms", "speedup"
        );
    }
    for r in &dots {
        let table = format!("{}×{}", r.table[0], r.table[1]);
        println!(
            "  {:<18} {:>11} {:>5} {:>10.3} {:>10.3} {:>7.2}×",
            r.layer, table, r.rows, r.kernel_ms, r.twin_ms, r.speedup
        );
    }
    println!(
        "  decode {name}: kernels on {on:.2} tok/s, off {off:.2} tok/s, speedup {:.2}× (same tokens: {})",
        on / off,
        on_ids == off_ids
    );
    Ok(())
}

/// Each WGSL kernel and its twin at three contexts.
fn wgsl_rows(device: &Device, reps: usize) -> Result<Vec<KernelRow>> {
    let mut rows = vec![];
    for context in [128, 512, 1024] {
        for (name, wgsl_ms, twin_ms) in [
            (
                "kv_append",
                time_append(device, context, KernelPath::Wgsl, reps)?,
                time_append(device, context, KernelPath::Twin, reps)?,
            ),
            (
                "attention_decode",
                time_attention(device, context, 1, KernelPath::Wgsl, reps)?,
                time_attention(device, context, 1, KernelPath::Twin, reps)?,
            ),
            (
                "attention_prefill",
                time_attention(device, context, context, KernelPath::Wgsl, reps)?,
                time_attention(device, context, context, KernelPath::Twin, reps)?,
            ),
        ] {
            rows.push(KernelRow { name, context, wgsl_ms, twin_ms, speedup: twin_ms / wgsl_ms });
        }
    }
    Ok(rows)
}

/// The row-dots kernel (the CPU's, or WGSL's with `path`) and the model's own twin at
/// GPT-2-small's tables: `x @ W` for a layer (the WGSL kernel adds the bias, zero here), and
/// for the head the token table as the model holds it (in binding-sized chunks) projected both
/// ways.
fn row_dots_rows(device: &Device, path: KernelPath, reps: usize) -> Result<Vec<RowDotsRow>> {
    /// What one row of the table times: the head, or a layer's `Wᵀ` (the CPU kernel's),
    /// `W` and a zero bias (the WGSL kernel's and the twin's).
    #[allow(clippy::large_enum_variant)] // a handful per benchmark
    enum Table {
        Head(VocabTable),
        Layer { wt: Tensor<2>, w: Packed, bias: Tensor<1> },
    }
    let mut out = vec![];
    let row_counts: &[usize] = if path == KernelPath::Wgsl { &[1, 4, 8] } else { &[1, 8, 16] };
    let mut rng = StdRng::seed_from_u64(0);
    for (layer, [outputs, inputs]) in
        [("c_attn", [2304, 768]), ("c_fc", [3072, 768]), ("mlp_proj", [768, 3072]), ("head", [50257, 768])]
    {
        let data = TensorData::random::<f32, _, _>([outputs, inputs], Distribution::Normal(0.0, 0.02), &mut rng);
        let table = if layer == "head" {
            Table::Head(VocabTable::upload(data, WeightDtype::F32, device))
        } else {
            let wt = Tensor::<2>::from_data(data, device);
            let w = Packed::plain(Tensor::<2>::from_data(wt.clone().transpose().into_data(), device));
            Table::Layer { wt, w, bias: Tensor::<1>::zeros([outputs], device) }
        };
        for &rows in row_counts {
            let x = Tensor::<2>::random([rows, inputs], Distribution::Normal(0.0, 1.0), device);
            let kernel_ms = time(device, reps, || match &table {
                Table::Head(head) => drop(head.project(x.clone(), path)),
                Table::Layer { w, bias, .. } if path == KernelPath::Wgsl => {
                    drop(row_dots_wgsl::rows_times_weight(&x, w, bias).expect("up to 8 rows"))
                }
                Table::Layer { wt, .. } => {
                    drop(row_dots::rows_times_table(&x, wt).expect("row dots run on the CPU device"))
                }
            })?;
            let twin_ms = time(device, reps, || {
                let y = match &table {
                    Table::Head(head) => head.project(x.clone(), KernelPath::Twin),
                    Table::Layer { w, .. } => x.clone().matmul(w.words.clone()),
                };
                // The CPU kernel returns finished values; so does the twin once read. GPU work is
                // awaited by `time`'s device sync, for both.
                if path == KernelPath::Cpu {
                    let _ = y.into_data();
                }
            })?;
            out.push(RowDotsRow {
                layer,
                table: [outputs, inputs],
                rows,
                kernel_ms,
                twin_ms,
                speedup: twin_ms / kernel_ms,
            });
        }
    }
    Ok(out)
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
fn time_append(device: &Device, context: usize, path: KernelPath, reps: usize) -> Result<f64> {
    let mut cache =
        Some((random([1, HEADS, context, HEAD_DIM], device), random([1, HEADS, context, HEAD_DIM], device)));
    let new = (random([1, HEADS, 1, HEAD_DIM], device), random([1, HEADS, 1, HEAD_DIM], device));
    let slots = Slots { base: context - 1, ring: false, first: 0 };
    time(device, reps, || {
        let buffers = cache.take().expect("the cache is put back after each append");
        cache = Some(kernels::append(buffers, new.clone(), slots, &StepUploads::default(), path));
    })
}

/// `queries` causal queries (the last ones of the context) against `context` keys.
fn time_attention(device: &Device, context: usize, queries: usize, path: KernelPath, reps: usize) -> Result<f64> {
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
