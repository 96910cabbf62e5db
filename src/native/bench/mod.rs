//! `inferlab bench …`: measurements taken side by side in one process, so that what is
//! reported are ratios, which survive a noisy shared machine better than lone times.

pub mod batching;
pub mod beam;
pub mod decode;
pub mod kernels;
pub mod kv;
pub mod serve;
pub mod speculative;
pub mod step;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Decode with the KV cache vs without it, plus the memory table.
    Kv(kv::KvArgs),
    /// Greedy decode speed with the KV cache at a batch size: TTFT, per-token ms, tokens/s.
    Decode(decode::DecodeArgs),
    /// Each WGSL kernel vs its tensor-op twin, and whole-model decode with kernels on vs off.
    Kernels(kernels::KernelArgs),
    /// One workload under each batching policy, side by side, with the simulator's error.
    Batching(batching::BatchingArgs),
    /// Times real steps and fits the simulator's step-cost model.
    Step(step::StepArgs),
    /// Speculative decoding per drafter and γ: measured vs theoretical speedup over plain decoding.
    Speculative(speculative::SpeculativeArgs),
    /// Beam search with shared paged blocks, a gathered contiguous cache, and recomputation.
    Beam(beam::BeamBenchArgs),
    /// Load on an OpenAI-compatible server: throughput, TTFT / ITL / latency, outcomes.
    Serve(serve::ServeBenchArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kv(args) => kv::run(args),
        BenchCommand::Decode(args) => decode::run(args),
        BenchCommand::Kernels(args) => kernels::run(args),
        BenchCommand::Batching(args) => batching::run(args),
        BenchCommand::Step(args) => step::run(args),
        BenchCommand::Speculative(args) => speculative::run(args),
        BenchCommand::Beam(args) => beam::run(args),
        BenchCommand::Serve(args) => serve::run(args),
    }
}
