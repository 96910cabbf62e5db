//! `inferlab serve`: an OpenAI-compatible completions server on the continuous-batching engine.
//!
//! One engine thread per device owns a model, its paged KV cache and a scheduler
//! (`engine.rs`); the router admits requests through a bounded queue and sends each to the
//! least-loaded replica (`router.rs`); axum handlers check requests and stream tokens back
//! (`http.rs`, `api.rs`, `response.rs`; the text through the engine's `TextStream`). SIGTERM
//! or ctrl-c drains: no new requests, running ones finish within `--drain-timeout`, then the
//! process exits 0.

pub mod api;
pub mod chat;
pub mod engine;
pub mod http;
pub mod response;
pub mod router;
pub mod tokenize;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::args::{ModelArgs, SchedulerArgs};
use super::device::{DeviceArg, DeviceSpec};
use super::model_dir;
use crate::engine::batching::scheduler::{Policy, SchedulerConfig};
use crate::engine::model::config::Gpt2Config;
use crate::engine::model::gpt2::Gpt2;
use crate::engine::model::precision::Precision;
use crate::engine::model::tokenizer::Tokenizer;
use crate::engine::model::weights::Gpt2Weights;
use api::ModelInfo;
use chat::ChatTemplate;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The tokenizer for a `random:NAME` model: a folder with tokenizer.json, or the file.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The model's name in the API [default: the folder's name, or the repo id].
    #[arg(long)]
    served_model_name: Option<String>,
    /// A Jinja chat template for /v1/chat/completions (over `messages`, as vLLM's)
    /// [default: tokenizer_config.json's `chat_template`, if the model has one].
    #[arg(long)]
    chat_template: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    precision: Precision,
    /// One engine replica per listed device, e.g. cuda:0,cuda:1 (or cpu,cpu); overrides --device.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<DeviceSpec>>,
    /// Sequences that may wait for a first step; past it requests get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// continuous, dynamic or static (a batch runs until its last member ends).
    #[arg(long, default_value = "continuous", value_parser = parse_policy)]
    policy: Policy,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    /// Seconds a request may take in all before it fails with 504.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Seconds running requests get to finish after SIGTERM / ctrl-c.
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Largest request body accepted.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Seed of a `random:NAME` model's weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_policy(s: &str) -> std::result::Result<Policy, String> {
    match s.parse::<Policy>() {
        Ok(Policy::Adaptive) => {
            Err("adaptive batching needs a measured workload; serve with continuous, dynamic or static".into())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

/// The model as the server sees it before any device does.
struct Source {
    name: String,
    config: Gpt2Config,
    tokenizer: Arc<Tokenizer>,
    /// `None`: a random model of `config`'s shape.
    dir: Option<PathBuf>,
}

impl Source {
    fn open(args: &ServeArgs) -> Result<Self> {
        let spec = &args.model.model;
        if let Some(shape) = spec.strip_prefix("random:") {
            let path = args
                .tokenizer
                .as_deref()
                .context("a random:NAME model needs --tokenizer (a folder with tokenizer.json, or the file)")?;
            return Ok(Self {
                name: spec.clone(),
                config: Gpt2Config::named(shape)?,
                tokenizer: Arc::new(read_tokenizer(path)?),
                dir: None,
            });
        }
        let dir = model_dir::resolve(spec, &args.model.hub_url)?;
        let config = model_dir::read_config(&dir)?;
        let tokenizer = read_tokenizer(args.tokenizer.as_deref().unwrap_or(&dir))?;
        let name = if Path::new(spec).is_dir() {
            dir.file_name().map_or_else(|| spec.clone(), |n| n.to_string_lossy().into_owned())
        } else {
            spec.clone()
        };
        Ok(Self { name, config, tokenizer: Arc::new(tokenizer), dir: Some(dir) })
    }

    fn load(&self, device: &Device, seed: u64) -> Result<Gpt2> {
        match &self.dir {
            // The config and tokenizer were read once, at start-up; each replica reads the weights.
            Some(dir) => model_dir::load_weights(dir, self.config.clone(), device),
            None => Ok(Gpt2::new(self.config.clone(), Gpt2Weights::random(&self.config, seed), device)?),
        }
    }
}

fn read_tokenizer(path: &Path) -> Result<Tokenizer> {
    let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    Tokenizer::from_bytes(&bytes).with_context(|| format!("in {}", file.display()))
}

pub fn run(args: ServeArgs) -> Result<()> {
    for (name, v) in [("--request-timeout", args.request_timeout), ("--drain-timeout", args.drain_timeout)] {
        if !(v.is_finite() && v > 0.0 && v < 1e7) {
            bail!("{name} must be a positive number of seconds, got {v}");
        }
    }
    if args.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    let source = Arc::new(Source::open(&args)?);
    // A template that does not compile stops the server before any model loads.
    let chat_dir = source.dir.as_deref().or(args.tokenizer.as_deref().filter(|p| p.is_dir()));
    let chat_template = ChatTemplate::find(args.chat_template.as_deref(), chat_dir)?;
    let mut scheduler = args.scheduler.clone();
    let context = source.config.n_positions;
    let block_size = scheduler.block_size.max(1);
    scheduler.num_blocks = Some(scheduler.num_blocks.unwrap_or(scheduler.max_batch * context.div_ceil(block_size)));
    let config = scheduler.config(args.policy, &[], context, None)?;
    let specs = args.devices.clone().unwrap_or_else(|| vec![DeviceSpec { kind: args.device, index: 0 }]);
    if specs.is_empty() {
        bail!("--devices lists no device");
    }
    for spec in &specs {
        spec.kind.check(args.precision)?;
    }
    let devices: Vec<Device> =
        specs.iter().map(|s| s.init().with_context(|| format!("device {s}"))).collect::<Result<_>>()?;
    let model = ModelInfo {
        name: args.served_model_name.clone().unwrap_or_else(|| source.name.clone()),
        context,
        vocab: source.config.vocab_size,
        eos_token_ids: source.config.eos_token_id.into_iter().collect(),
        block_size: config.block_size,
        num_blocks: config.num_blocks,
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(serve(args, source, model, config, specs, devices, chat_template))
}

async fn serve(
    args: ServeArgs,
    source: Arc<Source>,
    model: ModelInfo,
    config: SchedulerConfig,
    specs: Vec<DeviceSpec>,
    devices: Vec<Device>,
    chat_template: Option<ChatTemplate>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{} (is another server using the port?)", args.host, args.port))?;
    let address = listener.local_addr()?;
    let queued = Arc::new(AtomicUsize::new(0));
    let (loaded, loading) = std::sync::mpsc::channel();
    let mut replicas = vec![];
    for (i, (spec, device)) in specs.iter().zip(devices).enumerate() {
        let source = source.clone();
        let (seed, precision) = (args.seed, args.precision);
        let load = move || Ok(precision.apply(source.load(&device, seed)?)?);
        let replica =
            engine::spawn(format!("engine-{i}-{spec}"), load, config.clone(), queued.clone(), loaded.clone())?;
        replicas.push((replica.inbox, replica.gauges));
    }
    drop(loaded);
    let count = replicas.len();
    let router = Arc::new(router::Router::new(replicas, queued, args.max_queue));
    let state = Arc::new(http::AppState {
        router: router.clone(),
        tokenizer: source.tokenizer.clone(),
        chat_template,
        model,
        metrics: prometheus()?,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        max_body_bytes: args.max_body_bytes,
    });
    let kv_mib =
        config.num_blocks * config.block_size * 2 * source.config.n_layer * source.config.n_embd * 4 / (1 << 20);
    let devices = specs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    println!(
        "inferlab serve: listening on http://{address} — model {:?} on {devices}, {} policy, {} KV blocks of {} tokens per replica ({kv_mib} MiB); loading…",
        state.model.name, config.policy, config.num_blocks, config.block_size
    );
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let drain_started = Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let (router, drain_started) = (router.clone(), drain_started.clone());
        async move {
            stop_signal().await;
            println!("inferlab serve: draining — no new requests, running ones get {} s", drain_timeout.as_secs_f64());
            router.drain();
            drain_started.notify_one();
        }
    };
    let server = axum::serve(listener, http::routes(state)).with_graceful_shutdown(shutdown);
    let mut server = std::pin::pin!(server.into_future());
    let ready = tokio::task::spawn_blocking(move || {
        (0..count).try_for_each(|_| loading.recv().context("an engine thread died while loading")?)
    });
    tokio::select! {
        done = &mut server => return done.context("the HTTP server failed"),
        loaded = ready => loaded.context("an engine thread panicked")?.context("the model could not be served")?,
    }
    println!("inferlab serve: ready");
    let grace = async {
        drain_started.notified().await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        done = &mut server => done.context("the HTTP server failed")?,
        () = grace => println!("inferlab serve: the drain timeout passed with requests still running; exiting"),
    }
    println!("inferlab serve: stopped");
    Ok(())
}

/// SIGTERM (how Kubernetes stops a pod) or ctrl-c.
pub(crate) async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(e) => {
                tracing::warn!("no SIGTERM handler ({e}); only ctrl-c drains");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The process's metrics recorder (installed once) and the handle that renders it.
fn prometheus() -> Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let latency_buckets =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    register_families();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The counters and histograms a dashboard reads, at zero from the first scrape: a family that
/// appeared only with its first sample would leave a fresh replica's `rate()` nothing to read.
fn register_families() {
    let counters = [
        "inferlab_generated_tokens_total",
        "inferlab_prompt_tokens_total",
        "inferlab_cancelled_sequences_total",
        "inferlab_preemptions_total",
        "inferlab_prefix_cache_hits_total",
        "inferlab_prefix_cache_hit_tokens_total",
    ];
    for name in counters {
        metrics::counter!(name).absolute(0);
    }
    let histograms = [
        "inferlab_ttft_seconds",
        "inferlab_itl_seconds",
        "inferlab_e2e_latency_seconds",
        "inferlab_step_seconds",
        "inferlab_admission_latency_seconds",
    ];
    for name in histograms {
        drop(metrics::histogram!(name));
    }
}
