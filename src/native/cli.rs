//! The `inferlab` command line: its commands, each in its own module, and the one place where
//! an error becomes a message and an exit code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::bench;

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
    Generate(super::generate::GenerateArgs),
    /// One prompt's forward pass made visible: attention per head, the logit lens, and where
    /// the prefill's and a decode step's time goes, op by op.
    Inspect(super::inspect::InspectArgs),
    /// transformers' strided perplexity of a text file (what f16, int8 or a window cost).
    Perplexity(super::perplexity::PerplexityArgs),
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

/// Output piped into a reader that stopped (`inferlab bench serve --json | head`) makes
/// `println!` panic with a broken pipe: every command ends there quietly instead, as a
/// command-line tool killed by SIGPIPE would, and other panics keep the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload_as_str().unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
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
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => super::generate::run(args),
        Command::Inspect(args) => super::inspect::run(args),
        Command::Perplexity(args) => super::perplexity::run(args),
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
