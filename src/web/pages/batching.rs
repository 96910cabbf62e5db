//! Batching page: static, dynamic, adaptive and continuous batching on the same workload.
//! The simulation runs in the worker with a step-cost model measured on the loaded model in
//! this browser (so what it shows is true of this machine): per-policy throughput and
//! latency, a scrubbable timeline with the KV block map, batch size and blocks over time,
//! the latency CDF and throughput as the arrival rate grows. "Run for real" sends a small
//! workload through the real engine and shows its measured timeline beside the simulated one.

use leptos::prelude::*;

use crate::engine::batching::scheduler::{Policy, SchedulerConfig};
use crate::engine::batching::simulate::CostModel;
use crate::engine::batching::workload::{Arrivals, Lengths, WorkloadSpec};
use crate::session::protocol::{PolicyRun, ToEngine};
use crate::web::bridge::{EngineHandle, ModelStatus};
use crate::web::charts::{LineChart, PALETTE, Series};
use crate::web::form::{Field, field};
use crate::web::timeline::{BlockMap, Timeline, run_end};

/// A policy's colour in every chart of the page.
fn policy_color(policy: Policy) -> &'static str {
    match policy {
        Policy::Static => PALETTE[1],
        Policy::Dynamic => PALETTE[3],
        Policy::Adaptive => PALETTE[5],
        Policy::Continuous => PALETTE[2],
    }
}

/// Arrival rates of the throughput curve, as multiples of the workload's capacity: from
/// underload, where every policy keeps up and they tie, to overload, where they part.
const RATE_SWEEP: [f64; 8] = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];

/// The default arrival rate, as a share of the capacity: loaded enough that batches form,
/// light enough that waiting for a full one (static) costs latency a dynamic batch does not.
const DEFAULT_LOAD: f64 = 0.5;

/// About how many requests per second `max_batch` sequences can serve on `cost`: decode
/// throughput at the workload's mean context, over its mean output (prefill not counted).
fn capacity(cost: &CostModel, spec: &WorkloadSpec, max_batch: usize, vocab: usize) -> f64 {
    let requests = spec.generate(vocab);
    let n = requests.len().max(1) as f64;
    let output = requests.iter().map(|r| r.max_new_tokens as f64).sum::<f64>() / n;
    let context = requests.iter().map(|r| r.prompt.len() as f64 + r.max_new_tokens as f64 / 2.0).sum::<f64>() / n;
    cost.decode_throughput(max_batch, context as usize) / output.max(1.0)
}

/// A rate to two significant digits.
fn round_rate(rate: f64) -> String {
    let digits = (1 - rate.abs().max(1e-6).log10().floor() as i32).max(0) as usize;
    format!("{rate:.digits$}")
}

/// The form's values.
#[derive(Clone, Copy)]
struct Form {
    rate: RwSignal<String>,
    requests: RwSignal<String>,
    burst: RwSignal<String>,
    prompt_len: RwSignal<String>,
    output_len: RwSignal<String>,
    long_tail: RwSignal<bool>,
    max_batch: RwSignal<String>,
    max_wait: RwSignal<String>,
    blocks: RwSignal<String>,
    block_size: RwSignal<String>,
}

impl Form {
    fn new() -> Self {
        let s = |v: &str| RwSignal::new(v.to_string());
        Self {
            rate: s("20"),
            requests: s("40"),
            burst: s("4"),
            prompt_len: s("8..48"),
            output_len: s("4..96"),
            long_tail: RwSignal::new(true),
            max_batch: s("8"),
            max_wait: s("50"),
            blocks: s("64"),
            block_size: s("16"),
        }
    }

    fn lengths(&self, name: &str, text: &str) -> Result<Lengths, String> {
        let (a, b) = text.split_once("..").ok_or_else(|| format!("{name}: write MIN..MAX, e.g. 8..48"))?;
        let (min, max) = (field(name, a)?, field(name, b)?);
        Ok(if self.long_tail.get() { Lengths::LongTail { min, max } } else { Lengths::Uniform { min, max } })
    }

    fn workload(&self, context: usize) -> Result<WorkloadSpec, String> {
        let (rate, burst): (f64, usize) = (field("rate", &self.rate.get())?, field("burst", &self.burst.get())?);
        let spec = WorkloadSpec {
            requests: field("requests", &self.requests.get())?,
            arrivals: if burst > 1 { Arrivals::Bursty { rate, burst } } else { Arrivals::Poisson { rate } },
            prompt: self.lengths("prompt lengths", &self.prompt_len.get())?,
            output: self.lengths("output lengths", &self.output_len.get())?,
            seed: 0,
        };
        spec.validate(context).map_err(|e| e.to_string())?;
        Ok(spec)
    }

    fn config(&self, policy: Policy, context: usize) -> Result<SchedulerConfig, String> {
        let mut c = SchedulerConfig::new(policy, context);
        c.max_batch = field("max batch", &self.max_batch.get())?;
        c.max_wait_ms = field("max wait", &self.max_wait.get())?;
        c.num_blocks = field("KV blocks", &self.blocks.get())?;
        c.block_size = field("block size", &self.block_size.get())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

#[component]
pub fn BatchingPage() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let form = Form::new();
    let chosen = RwSignal::new(vec![Policy::Static, Policy::Dynamic, Policy::Continuous]);
    let viewed = RwSignal::new(Policy::Continuous);
    let scrub = RwSignal::new(0.0f64);
    // The step cost is measured once per loaded model, when this page first sees it.
    let measured_for = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let ModelStatus::Ready(info) = engine.status.get()
            && measured_for.get_untracked().as_deref() != Some(info.name.as_str())
            && engine.cost.with_untracked(|c| c.as_ref().is_none_or(|c| c.model != info.name))
        {
            measured_for.set(Some(info.name));
            engine.send(&ToEngine::MeasureCost, &[]);
        }
    });
    let context = move || match engine.status.get() {
        ModelStatus::Ready(info) => Some(info.config.n_positions),
        _ => None,
    };
    let vocab = move || engine.loaded.with_untracked(|m| m.as_ref().map_or(50257, |m| m.config.vocab_size));
    // Once the cost is measured, the rate starts at DEFAULT_LOAD of the capacity (unless typed).
    let auto_rate = RwSignal::new(form.rate.get_untracked());
    Effect::new(move || {
        let (Some(cost), Some(context)) = (engine.cost.get(), context()) else { return };
        let (Ok(spec), Ok(max_batch)) =
            untrack(|| (form.workload(context), field::<usize>("max batch", &form.max_batch.get())))
        else {
            return;
        };
        if form.rate.get_untracked() == auto_rate.get_untracked() {
            let rate = round_rate(DEFAULT_LOAD * capacity(&cost.cost, &spec, max_batch, vocab()));
            auto_rate.set(rate.clone());
            form.rate.set(rate);
        }
    });
    // Sends what `build` makes of the model's context and the measured cost, or says why not.
    let send = move |build: &dyn Fn(usize, CostModel) -> Result<ToEngine, String>| {
        let message = (|| {
            let context = context().ok_or("load a model first")?;
            build(context, engine.cost.get().ok_or("the step cost is still being measured")?.cost)
        })();
        match message {
            Ok(m) => engine.send(&m, &[]),
            Err(e) => engine.error.set(Some(e)),
        }
    };
    let simulate = move |_| {
        send(&|context, cost| {
            let workload = form.workload(context)?;
            let configs = chosen.get().into_iter().map(|p| form.config(p, context)).collect::<Result<Vec<_>, _>>()?;
            let full = capacity(&cost, &workload, field("max batch", &form.max_batch.get())?, vocab());
            Ok(ToEngine::Simulate { workload, configs, cost, rates: RATE_SWEEP.iter().map(|m| m * full).collect() })
        })
    };
    let real_run = move |_| {
        send(&|context, cost| {
            // Four short requests: the real engine in a browser tab is slow, the point is the comparison.
            let workload = WorkloadSpec {
                requests: 4,
                prompt: Lengths::Uniform { min: 4, max: 12 },
                output: Lengths::Uniform { min: 4, max: 8 },
                ..form.workload(context)?
            };
            Ok(ToEngine::BatchReal { workload, config: form.config(viewed.get(), context)?, cost })
        })
    };
    let runs = move || engine.simulation.with(|s| s.as_ref().map(|s| s.runs.clone()).unwrap_or_default());
    let viewed_run = Signal::derive(move || {
        engine.simulation.with(|s| {
            s.as_ref().and_then(|s| s.runs.iter().find(|r| r.policy == viewed.get()).or(s.runs.last()).cloned())
        })
    });
    let ready = move || context().is_some() && engine.cost.with(Option::is_some);
    let toggle = move |p: Policy| {
        chosen.update(|c| {
            if let Some(i) = c.iter().position(|&q| q == p) {
                c.remove(i);
            } else {
                c.push(p);
                c.sort_by_key(|q| Policy::ALL.iter().position(|a| a == q));
            }
        })
    };
    let cost_line = move || {
        engine.cost.get().map(|c| {
            let tip = c.timings.iter().map(|t| format!("{} tokens, {} sampled: {:.1} ms", t.shape.tokens, t.shape.samples, t.ms)).collect::<Vec<_>>().join("\n");
            view! {
                <p class="formula" title=tip data-testid="batching-cost">{format!(
                    "measured here on {}: step ≈ {:.2} ms + {:.3} ms × tokens + {:.3} ms × sampled rows + {:.4} ms × 1000 query-key pairs ({} timed steps, mean error {:.0}%; hover for them)",
                    c.model, c.cost.base_ms, c.cost.per_token_ms, c.cost.per_sample_ms, c.cost.per_kilo_pair_ms, c.timings.len(), c.error_pct
                )}</p>
            }
        })
    };
    view! {
        <section class="page">
            <h2>"Batching"</h2>
            <p class="hint">"Requests arrive over time. " <b>"Static"</b> " batching waits for a full batch and runs it until its longest member ends; "
                <b>"dynamic"</b> " starts a batch when it is full or its oldest request has waited long enough; "
                <b>"adaptive"</b> " is dynamic with the batch size read off the measured cost curve; "
                <b>"continuous"</b> " admits and retires requests at every step, with KV memory in blocks (vLLM's paged cache)."</p>
            {cost_line}
            <div class="row" data-testid="batching-policy">
                {Policy::ALL.into_iter().map(|p| view! {
                    <label class="policy" style=format!("border-color:{}", policy_color(p))>
                        <input type="checkbox" value=p.name() prop:checked=move || chosen.with(|c| c.contains(&p)) on:change=move |_| toggle(p)/>
                        {p.name()}
                    </label>
                }).collect_view()}
            </div>
            <div class="row">
                <Field label="rate (req/s)" value=form.rate testid="batching-rate"/>
                <Field label="requests" value=form.requests testid="batching-requests"/>
                <Field label="burst" value=form.burst testid="batching-burst"/>
                <Field label="prompt tokens" value=form.prompt_len testid="batching-prompt-len"/>
                <Field label="output tokens" value=form.output_len testid="batching-output-len"/>
                <label><input type="checkbox" prop:checked=move || form.long_tail.get() on:change=move |_| form.long_tail.update(|v| *v = !*v)/>"long tail"</label>
            </div>
            <div class="row">
                <Field label="max batch" value=form.max_batch testid="batching-max-batch"/>
                <Field label="max wait (ms)" value=form.max_wait testid="batching-max-wait"/>
                <Field label="KV blocks" value=form.blocks testid="batching-blocks-count"/>
                <Field label="block size" value=form.block_size testid="batching-block-size"/>
                <button on:click=simulate disabled=move || !ready() || engine.busy() data-testid="batching-run">"Simulate"</button>
                {move || engine.simulation.get().map(|s| view! { <span class="hint">{format!("{} runs simulated in {:.0} ms", s.runs.len() * (1 + RATE_SWEEP.len()), s.wall_ms)}</span> })}
            </div>
            <PolicyCards runs=Signal::derive(runs) viewed/>
            <Timeline title="Timeline of the selected policy (click a card to switch; hover for details)" run=viewed_run scrub testid="batching-timeline"/>
            <label class="scrubber">"scrub "
                <input type="range" min="0" max=move || viewed_run.with(|r| r.as_ref().map_or(1.0, run_end)) step="any"
                    prop:value=move || scrub.get() on:input=move |ev| scrub.set(event_target_value(&ev).parse().unwrap_or(0.0)) data-testid="batching-scrub"/>
            </label>
            <BlockMap run=viewed_run scrub/>
            <OverTime runs=Signal::derive(runs)/>
            <h3>"Run for real"</h3>
            <p class="hint">"Four short requests through the real engine in this tab, under the selected policy, beside the same workload simulated with the measured cost."</p>
            <button on:click=real_run disabled=move || !ready() || engine.busy() data-testid="batching-real-run">"Run for real"</button>
            <RealVsSimulated/>
        </section>
    }
}

#[component]
fn PolicyCards(runs: Signal<Vec<PolicyRun>>, viewed: RwSignal<Policy>) -> impl IntoView {
    let cards = move || {
        runs.get()
            .into_iter()
            .map(|r| {
                let s = r.stats;
                let p = r.policy;
                view! {
                    <button class="card" class:active=move || viewed.get() == p style=format!("border-top-color:{}", policy_color(p)) on:click=move |_| viewed.set(p)
                        aria-pressed=move || (viewed.get() == p).to_string()
                        title=format!("max batch {} · {} blocks × {} · {} preemptions · {} steps", r.config.max_batch, r.config.num_blocks, r.config.block_size, s.preemptions, s.steps)>
                        <b>{p.name()}</b>
                        <span><b data-testid="batching-throughput" data-policy=p.name()>{format!("{:.1}", s.throughput_tok_s)}</b>" tok/s"</span>
                        <span>{format!("latency p50 {:.0} · p99 {:.0} ms", s.p50_latency_ms, s.p99_latency_ms)}</span>
                        <span>{format!("TTFT p50 {:.0} ms · batch {:.1}", s.p50_ttft_ms, s.mean_batch)}</span>
                        <span>{format!("KV waste {:.1}% (max-length contiguous: {:.0}%)", s.kv_waste_pct, s.contiguous_waste_pct)}</span>
                    </button>
                }
            })
            .collect_view()
    };
    view! { <div class="cards">{cards}</div> }
}

/// Batch size and KV blocks over time, the latency CDF, and throughput vs arrival rate.
#[component]
fn OverTime(runs: Signal<Vec<PolicyRun>>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let per_policy = move |f: fn(&PolicyRun) -> Vec<(f64, f64)>| {
        Signal::derive(move || {
            runs.get().iter().map(|r| Series::new(r.policy.name(), policy_color(r.policy), f(r))).collect::<Vec<_>>()
        })
    };
    let batch = per_policy(|r| r.steps.iter().map(|s| (s.end_ms, s.seqs as f64)).collect());
    let blocks = per_policy(|r| r.steps.iter().map(|s| (s.end_ms, s.blocks_used as f64)).collect());
    let cdf = per_policy(|r| {
        let mut latencies: Vec<f64> = r.requests.iter().filter(|q| q.error.is_none()).map(|q| q.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let n = latencies.len().max(1) as f64;
        latencies.iter().enumerate().map(|(i, &l)| (l, (i + 1) as f64 / n)).collect()
    });
    let curves = Signal::derive(move || {
        engine.simulation.with(|s| {
            s.as_ref()
                .map(|s| {
                    s.curves
                        .iter()
                        .map(|c| Series::new(c.policy.name(), policy_color(c.policy), c.points.clone()))
                        .collect()
                })
                .unwrap_or_default()
        })
    });
    view! {
        <div class="charts">
            <LineChart title="Batch size (rows per step)" x_label="time (ms)" y_label="sequences" series=batch testid="batching-batch-chart"/>
            <LineChart title="KV blocks in use" x_label="time (ms)" y_label="blocks" series=blocks testid="batching-kv-chart"/>
            <LineChart title="Latency CDF (arrival to last token)" x_label="latency (ms)" y_label="share of requests" series=cdf testid="batching-cdf"/>
            <LineChart title="Throughput as the arrival rate grows" x_label="arrivals (requests/s)" y_label="tokens/s" series=curves testid="batching-rate-chart"/>
        </div>
    }
}

#[component]
fn RealVsSimulated() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let real = Signal::derive(move || engine.real_batch.with(|b| b.as_ref().map(|b| b.real.clone())));
    let simulated = Signal::derive(move || engine.real_batch.with(|b| b.as_ref().map(|b| b.simulated.clone())));
    let (scrub_real, scrub_sim) = (RwSignal::new(0.0), RwSignal::new(0.0));
    let summary = move || {
        engine.real_batch.get().map(|b| {
            let same = b.matches_solo.iter().filter(|&&m| m).count();
            let (r, s) = (&b.real.stats, &b.simulated.stats);
            view! {
                <div class="stats">
                    <span data-testid="batching-real-match">{format!("outputs equal to each request's greedy run alone: {same} of {}", b.matches_solo.len())}</span>
                    <span>{format!("throughput: measured {:.1}, simulated {:.1} tok/s", r.throughput_tok_s, s.throughput_tok_s)}</span>
                    <span>{format!("p50 latency: measured {:.0}, simulated {:.0} ms", r.p50_latency_ms, s.p50_latency_ms)}</span>
                </div>
            }
        })
    };
    view! {
        {summary}
        <div class="charts">
            <Timeline title="Measured (real engine)" run=real scrub=scrub_real testid="batching-real-timeline"/>
            <Timeline title="Simulated (cost model)" run=simulated scrub=scrub_sim/>
        </div>
    }
}
