//! `inferlab bench serve`: a load generator for any OpenAI-compatible completions server
//! (ours, or `scripts/hf_server.py` running HF transformers behind the same API). Clients are
//! threads; requests arrive as a Poisson process at `--rate` (or back to back), each streams
//! and is timed per chunk; some clients may hang up early on purpose. The report counts every
//! request's outcome — none may be lost — and gives throughput and TTFT / ITL / latency
//! percentiles.

use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::batching::stats::percentile;
use crate::engine::batching::workload::WorkloadSpec;
use crate::native::args::WorkloadArgs;

/// GPT-2's vocabulary: the prompts' random ids are drawn from it.
const VOCAB: usize = 50257;

#[derive(Args, Clone)]
pub struct ServeBenchArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    pub url: String,
    /// The model name to ask for [default: the first of /v1/models].
    #[arg(long)]
    pub model: Option<String>,
    /// Requests, their arrivals (--rate 0: each client sends as soon as it is free) and lengths.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Clients sending at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Share of requests whose client hangs up after a random number of chunks (0: while queued).
    #[arg(long, default_value_t = 0.0)]
    pub disconnect: f64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Mean and percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let mean = if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 };
        Self { mean, p50: percentile(values, 50.0), p90: percentile(values, 90.0), p99: percentile(values, 99.0) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub url: String,
    pub model: String,
    pub workload: WorkloadSpec,
    pub requests: usize,
    pub concurrency: usize,
    pub completed: usize,
    /// Refused with 429 (queue full).
    pub rejected_429: usize,
    /// Hung up by their client on purpose.
    pub cancelled: usize,
    /// Anything else: other statuses, errors in the stream, streams cut without `[DONE]`.
    pub failed: usize,
    pub failures: Vec<String>,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub output_tokens_per_s: f64,
    pub ttft_ms: Spread,
    pub itl_ms: Spread,
    pub latency_ms: Spread,
}

enum Outcome {
    Completed { ttft_ms: f64, itl_ms: Vec<f64>, latency_ms: f64, tokens: usize },
    Rejected,
    Cancelled,
    Failed(String),
}

/// One planned request.
struct Plan {
    at: Duration,
    body: String,
    hang_up_after: Option<usize>,
}

pub fn run(args: ServeBenchArgs) -> Result<()> {
    let report = bench(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report;
        println!(
            "{} requests at {} clients ({}): {} completed, {} refused (429), {} cancelled, {} failed in {:.1} s",
            r.requests,
            r.concurrency,
            if args.workload.rate > 0.0 {
                format!("{} req/s offered", args.workload.rate)
            } else {
                "closed loop".into()
            },
            r.completed,
            r.rejected_429,
            r.cancelled,
            r.failed,
            r.duration_s
        );
        println!("throughput {:.2} req/s, {:.1} tokens/s", r.throughput_rps, r.output_tokens_per_s);
        for (name, s) in [("TTFT", &r.ttft_ms), ("ITL", &r.itl_ms), ("latency", &r.latency_ms)] {
            println!("{name:>8} ms: mean {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}", s.mean, s.p50, s.p90, s.p99);
        }
        for f in &r.failures {
            println!("failure: {f}");
        }
    }
    Ok(())
}

/// Runs the load and reports it.
pub fn bench(args: &ServeBenchArgs) -> Result<ServeReport> {
    if args.concurrency == 0
        || !(0.0..=1.0).contains(&args.disconnect)
        || args.temperature.is_nan()
        || args.temperature < 0.0
    {
        bail!("--concurrency must be at least 1, --disconnect a share in 0..=1 and --temperature >= 0");
    }
    let base = args.url.trim_end_matches('/').to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into();
    let text = agent
        .get(format!("{base}/v1/models"))
        .call()
        .with_context(|| format!("cannot reach {base}/v1/models"))?
        .into_body()
        .read_to_string()?;
    let models: Value =
        serde_json::from_str(&text).with_context(|| format!("/v1/models did not answer JSON: {text}"))?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => models["data"][0]["id"].as_str().context("/v1/models lists no model")?.to_string(),
    };
    let context = models["data"][0]["max_model_len"].as_u64().unwrap_or(1024) as usize;
    let mut workload = args.workload.clone();
    if workload.rate == 0.0 {
        workload.rate = 1e12; // all at once: the clients' count is the only limit
    }
    let spec = workload.spec(context)?;
    let plans = plan(args, &spec, &model);
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::with_capacity(plans.len()));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency.min(plans.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(plan) = plans.get(i) else { break };
                    if let Some(wait) = plan.at.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let outcome = send(&agent, &base, plan);
                    outcomes.lock().expect("no client panics holding it").push(outcome);
                }
            });
        }
    });
    let duration_s = start.elapsed().as_secs_f64();
    let outcomes = outcomes.into_inner().expect("clients are done");
    let (mut ttft, mut itl, mut latency, mut tokens) = (vec![], vec![], vec![], 0);
    let (mut rejected, mut cancelled, mut failures) = (0, 0, vec![]);
    for outcome in outcomes {
        match outcome {
            Outcome::Completed { ttft_ms, itl_ms, latency_ms, tokens: n } => {
                ttft.push(ttft_ms);
                itl.extend(itl_ms);
                latency.push(latency_ms);
                tokens += n;
            }
            Outcome::Rejected => rejected += 1,
            Outcome::Cancelled => cancelled += 1,
            Outcome::Failed(why) => failures.push(why),
        }
    }
    let failed = failures.len();
    failures.truncate(5);
    Ok(ServeReport {
        url: base,
        model,
        workload: spec,
        requests: plans.len(),
        concurrency: args.concurrency,
        completed: latency.len(),
        rejected_429: rejected,
        cancelled,
        failed,
        failures,
        duration_s,
        throughput_rps: latency.len() as f64 / duration_s,
        output_tokens_per_s: tokens as f64 / duration_s,
        ttft_ms: Spread::of(&ttft),
        itl_ms: Spread::of(&itl),
        latency_ms: Spread::of(&latency),
    })
}

/// The workload's requests as request bodies, and who hangs up, all from the workload's seed.
fn plan(args: &ServeBenchArgs, spec: &WorkloadSpec, model: &str) -> Vec<Plan> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    spec.generate(VOCAB)
        .into_iter()
        .map(|r| {
            let body = json!({
                "model": model, "prompt": r.prompt, "max_tokens": r.max_new_tokens, "temperature": args.temperature,
                "seed": rng.random::<u32>(), "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true,
            });
            let hang_up_after = (rng.random::<f64>() < args.disconnect).then(|| rng.random_range(0..r.max_new_tokens));
            Plan { at: Duration::from_secs_f64(r.arrival_ms / 1000.0), body: body.to_string(), hang_up_after }
        })
        .collect()
}

/// Sends one streaming request and reads it to its end (or hangs up as planned).
fn send(agent: &ureq::Agent, base: &str, plan: &Plan) -> Outcome {
    let start = Instant::now();
    let response = match agent
        .post(format!("{base}/v1/completions"))
        .header("content-type", "application/json")
        .send(plan.body.as_str())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("request failed: {e}")),
    };
    match response.status().as_u16() {
        200 => {}
        429 => return Outcome::Rejected,
        status => {
            let body = response.into_body().read_to_string().unwrap_or_default();
            return Outcome::Failed(format!("HTTP {status}: {body}"));
        }
    }
    let mut reader = BufReader::new(response.into_body().into_reader());
    let (mut chunks, mut usage_tokens, mut last, mut ttft, mut itl) = (0usize, None, start, None, vec![]);
    let mut line = String::new();
    loop {
        if plan.hang_up_after == Some(chunks) {
            return Outcome::Cancelled; // dropping the reader closes the connection
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Failed("the stream ended without [DONE]".into()),
            Ok(_) => {}
            Err(e) => return Outcome::Failed(format!("reading the stream: {e}")),
        }
        let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            break;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Outcome::Failed(format!("a chunk is not JSON: {data}"));
        };
        if chunk.get("error").is_some() {
            return Outcome::Failed(format!("error in the stream: {data}"));
        }
        if let Some(n) = chunk["usage"]["completion_tokens"].as_u64() {
            usage_tokens = Some(n as usize);
            continue;
        }
        let now = Instant::now();
        match ttft {
            None => ttft = Some(now.duration_since(start)),
            Some(_) => itl.push(now.duration_since(last).as_secs_f64() * 1000.0),
        }
        last = now;
        chunks += 1;
    }
    Outcome::Completed {
        ttft_ms: ttft.map_or(0.0, |t| t.as_secs_f64() * 1000.0),
        itl_ms: itl,
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        // Servers that do not report usage: a chunk per token.
        tokens: usage_tokens.unwrap_or(chunks),
    }
}
