//! KV Cache page, on the loaded model: (a) the same greedy generation with and without the
//! cache, token by token; (b) the cache itself as that run filled it (contiguous, as a sliding
//! window's ring, as paged blocks); (c) the memory model for the loaded and the published
//! configs; (d) a sliding window's ring buffer being overwritten, and what it does to the logits.

use leptos::prelude::*;

use crate::engine::decode::generate::decode_tokens_per_s;
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::kv::KvMode;
use crate::engine::kv::memory::{activation_bytes, kv_bytes, param_count};
use crate::engine::model::config::Gpt2Config;
use crate::session::protocol::{Run, ToEngine};
use crate::web::bridge::{EngineHandle, ModelStatus, RunState};
use crate::web::cache_map::CacheMap;
use crate::web::charts::{LineChart, PALETTE, Series};
use crate::web::form::{Field, example_prompt, field};

const NAMED: [&str; 5] = ["distilgpt2", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"];

/// The prompt for the demo pair (trained on Rust sources).
const KV_CODE: &str = "#[derive(Debug, Clone, Copy)]";

#[component]
pub fn KvCachePage() -> impl IntoView {
    let prompt = example_prompt("Hello", KV_CODE);
    view! {
        <section class="page">
            <h2>"KV Cache"</h2>
            <p class="hint">"Without a cache, every new token re-runs the whole sequence; with one, a step "
                "runs one token and reads the stored keys and values of the others."</p>
            <label class="wide">"Prompt " <input prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev)) data-testid="kv-prompt" size="50"/></label>
            <CacheVsRecompute prompt/>
            <StoredKeys/>
            <MemoryModel/>
            <SlidingWindow prompt/>
        </section>
    }
}

/// The cache the with-cache run filled: its keys are asked for once that run is done.
#[component]
fn StoredKeys() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let with = move || engine.runs.with(|r| r.get(&Run::WithCache).cloned().unwrap_or_default());
    let asked = RwSignal::new(None::<Vec<u32>>);
    Effect::new(move || {
        let run = with();
        if run.done.is_none() || run.ids.is_empty() {
            return;
        }
        // The last generated token is never fed back: the cache holds the rest.
        let stored: Vec<u32> = run.prompt_ids.iter().chain(&run.ids[..run.ids.len() - 1]).copied().collect();
        let shown = engine.cache_keys.with_untracked(|k| k.as_ref().is_some_and(|k| k.ids == stored));
        if !shown && asked.get_untracked().as_ref() != Some(&stored) {
            asked.set(Some(stored.clone()));
            engine.send(&ToEngine::CacheKeys { ids: stored }, &[]);
        }
    });
    let prompt = Signal::derive(move || with().prompt_ids.len());
    let capacity = Signal::derive(move || {
        let run = with();
        run.prompt_ids.len() + run.requested
    });
    view! { <CacheMap prompt capacity/> }
}

fn series_of(state: &RunState) -> Vec<(f64, f64)> {
    state.step_ms.iter().enumerate().map(|(i, ms)| ((i + 1) as f64, *ms)).collect()
}

#[component]
fn CacheVsRecompute(prompt: RwSignal<String>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let tokens = RwSignal::new("64".to_string());
    let start = move |_| {
        let max_new_tokens = match field::<usize>("tokens", &tokens.get()) {
            Ok(n) => n,
            Err(e) => return engine.error.set(Some(e)),
        };
        for (run, kv) in [(Run::WithCache, KvMode::Contiguous), (Run::WithoutCache, KvMode::None)] {
            let sampling = SamplingParams::default();
            engine.send(&ToEngine::Generate { run, prompt: prompt.get(), max_new_tokens, sampling, kv }, &[]);
        }
    };
    let state = move |run: Run| engine.runs.with(|r| r.get(&run).cloned().unwrap_or_default());
    let chart = Signal::derive(move || {
        vec![
            Series::new("with KV cache", PALETTE[0], series_of(&state(Run::WithCache))),
            Series::new("without cache (recompute)", PALETTE[1], series_of(&state(Run::WithoutCache))),
        ]
    });
    // Token 1 is the same prefill in both runs; the cache pays off from token 2 on.
    let totals = move || {
        let (with, without) = (state(Run::WithCache), state(Run::WithoutCache));
        let (a, b) = (with.done.as_ref()?, without.done.as_ref()?);
        let speedup = decode_tokens_per_s(&with.step_ms) / decode_tokens_per_s(&without.step_ms).max(1e-9);
        let ms_per_token = |steps: &[f64]| 1000.0 / decode_tokens_per_s(steps).max(1e-9);
        // What the cache held at the end, in the loaded model's KV dtype.
        let ModelStatus::Ready(info) = engine.status.get() else { return None };
        let bytes = if info.kv_f16 { 2 } else { 4 };
        let kv = (
            kv_bytes(&info.config, with.prompt_ids.len() + with.ids.len(), 1, bytes),
            if info.kv_f16 { "f16" } else { "f32" },
        );
        Some((
            a.total_ms,
            b.total_ms,
            speedup,
            with.ids == without.ids,
            with.prompt_ids.len(),
            ms_per_token(&with.step_ms),
            ms_per_token(&without.step_ms),
            kv,
        ))
    };
    let ready = move || matches!(engine.status.get(), ModelStatus::Ready(_));
    view! {
        <h3>"(a) With vs without the cache"</h3>
        <div class="row">
            <Field label="tokens" value=tokens testid="kv-tokens"/>
            <button on:click=start disabled=move || !ready() || engine.busy() data-testid="kv-run">"Run both"</button>
            <button on:click=move |_| engine.send(&ToEngine::Stop, &[]) disabled=move || !engine.busy()>"Stop"</button>
        </div>
        <LineChart title="Latency of each generated token" x_label="token" y_label="ms" series=chart testid="kv-chart"/>
        <p class="hint">"Token 1 includes the prompt. A lone spike is usually a GPU kernel being compiled the first time a shape "
            "needs it (the first run pays most of them, so the speedup is, if anything, understated); on the native CPU engine, "
            "other work on the machine."</p>
        <div class="stats">
            {move || match totals() {
                Some((with, without, speedup, same, prompt_tokens, with_step, without_step, (kv, kv_dtype))) => view! {
                    <span>"prompt " <b data-testid="kv-prompt-tokens">{prompt_tokens}</b>" tokens"</span>
                    <span>"with cache " <b>{format!("{with:.0} ms")}</b>" (" <b data-testid="kv-with-ms">{format!("{with_step:.3}")}</b>" ms/token)"</span>
                    <span>"without " <b>{format!("{without:.0} ms")}</b>" (" <b data-testid="kv-without-ms">{format!("{without_step:.3}")}</b>" ms/token)"</span>
                    <span>"decode speedup (tokens 2…N) " <b data-testid="kv-speedup">{format!("{speedup:.2}")}</b>"×"</span>
                    <span data-testid="kv-same">{if same { "same tokens in both runs" } else { "the runs chose different tokens" }}</span>
                    <span title="2 (K and V) × layers × embedding width × tokens × bytes per value: the KV dtype is chosen beside the weights'">
                        "cache held " <b data-testid="kv-cache-bytes" data-bytes=kv.to_string()>{if kv < 1_000_000 { format!("{:.1} kB", kv as f64 / 1e3) } else { format!("{:.2} MB", kv as f64 / 1e6) }}</b>" of " <b data-testid="kv-cache-dtype">{kv_dtype}</b></span>
                }.into_any(),
                None => view! { <span>"Totals appear when both runs are done."</span> }.into_any(),
            }}
        </div>
    }
}

/// The loaded model's config (if any) and the published ones.
fn configs(engine: EngineHandle) -> Vec<(String, Gpt2Config)> {
    let mut out = vec![];
    if let ModelStatus::Ready(info) = engine.status.get() {
        out.push((format!("loaded: {}", info.name), info.config));
    }
    out.extend(NAMED.iter().filter_map(|n| Gpt2Config::named(n).ok().map(|c| (n.to_string(), c))));
    out
}

#[component]
fn MemoryModel() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let choice = RwSignal::new(0usize);
    // The loaded model comes and goes: a choice past the end falls back to the first config.
    let config = move || {
        let all = configs(engine);
        let i = if choice.get() < all.len() { choice.get() } else { 0 };
        all.into_iter().nth(i).map(|c| c.1)
    };
    let chart = move |bytes: usize| {
        Signal::derive(move || {
            let Some(c) = config() else { return vec![] };
            let lens: Vec<usize> = (0..=16).map(|i| i * c.n_positions / 16).collect();
            let mb = |v: u64| v as f64 / 1e6;
            let mut series = vec![];
            for (i, batch) in [1usize, 4, 8].into_iter().enumerate() {
                series.push(Series::new(
                    format!("KV cache, batch {batch}"),
                    PALETTE[i],
                    lens.iter().map(|&t| (t as f64, mb(kv_bytes(&c, t, batch, bytes)))).collect(),
                ));
            }
            for (i, batch) in [1usize, 4, 8].into_iter().enumerate() {
                let mut s = Series::new(
                    format!("activations, batch {batch}"),
                    PALETTE[i],
                    lens.iter().map(|&t| (t as f64, mb(activation_bytes(&c, t, batch, bytes)))).collect(),
                );
                s.dashed = true;
                series.push(s);
            }
            let params = mb(param_count(&c) * bytes as u64);
            series.push(Series::new("parameters", PALETTE[4], vec![(0.0, params), (c.n_positions as f64, params)]));
            series
        })
    };
    view! {
        <h3>"(c) Memory model"</h3>
        <label>"Config "
            <select on:change=move |ev| choice.set(event_target_value(&ev).parse().unwrap_or(0)) data-testid="memory-config">
                {move || configs(engine).into_iter().enumerate().map(|(i, (name, _))| view! { <option value=i.to_string() selected=move || choice.get() == i>{name}</option> }).collect_view()}
            </select>
        </label>
        <p class="formula">"KV = 2 (K and V) · n_layer · n_embd · bytes · tokens · batch;  "
            "activations (one forward over t tokens) = batch · bytes · (t · (5·n_embd + n_inner + vocab) + n_head · t²);  "
            "parameters = wte + wpe + n_layer · (12·n_embd² + 13·n_embd) + 2·n_embd (tied head)"</p>
        <div class="charts">
            <LineChart title="f32 (4 bytes per value)" x_label="sequence length (tokens)" y_label="MB" series=chart(4) testid="memory-f32"/>
            <LineChart title="f16 (2 bytes per value)" x_label="sequence length (tokens)" y_label="MB" series=chart(2) testid="memory-f16"/>
        </div>
        <p class="hint" data-testid="memory-kv-dtype">{move || match engine.status.get() {
            ModelStatus::Ready(info) if info.kv_f16 => "The loaded model keeps its KV cache in f16: the right-hand chart, half the left-hand one.",
            ModelStatus::Ready(_) => "The loaded model keeps its KV cache in f32: the left-hand chart. Choose the f16 KV dtype beside the weights' type (it applies at the next load) to halve it.",
            _ => "",
        }}</p>
    }
}

#[component]
fn SlidingWindow(prompt: RwSignal<String>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let window = RwSignal::new("8".to_string());
    let tokens = RwSignal::new("24".to_string());
    let ran_window = RwSignal::new(8usize);
    let start = move |_| {
        let request =
            (|| Ok::<_, String>((field::<usize>("W", &window.get())?, field::<usize>("tokens", &tokens.get())?)))();
        match request {
            Ok((w, new_tokens)) => {
                ran_window.set(w.max(1));
                engine.send(&ToEngine::WindowDrift { prompt: prompt.get(), new_tokens, window: w }, &[]);
            }
            Err(e) => engine.error.set(Some(e)),
        }
    };
    let chart = Signal::derive(move || {
        let points = engine.drift.with(|d| d.iter().map(|s| (s.position as f64, s.max_abs_diff as f64)).collect());
        vec![Series::new("max |logit(full) − logit(sliding)|", PALETTE[3], points)]
    });
    // Which position each ring slot holds after the last step: token p lives in slot p % W.
    let ring = move || {
        let w = ran_window.get();
        let last = engine.drift.with(|d| d.last().cloned());
        (0..w)
            .map(|slot| {
                let held =
                    last.as_ref().and_then(|s| (s.position >= slot).then(|| s.position - (s.position - slot) % w));
                let fresh = last.as_ref().is_some_and(|s| s.slot == slot);
                view! {
                    <div class="slot" class:fresh=fresh>
                        <small>{format!("slot {slot}")}</small>
                        <b>{held.map(|p| format!("pos {p}")).unwrap_or_else(|| "empty".into())}</b>
                    </div>
                }
            })
            .collect_view()
    };
    let summary = move || {
        engine.drift.with(|d| {
            d.last().map(|last| {
                let agree = d.iter().filter(|s| s.same_top1).count();
                let eviction = last
                    .evicted
                    .map(|e| format!("position {} overwrote position {e} in slot {}", last.position, last.slot))
                    .unwrap_or_else(|| format!("position {} went into the empty slot {}", last.position, last.slot));
                format!("{eviction} · same next token as the full cache in {agree} of {} steps", d.len())
            })
        })
    };
    let ready = move || matches!(engine.status.get(), ModelStatus::Ready(_));
    view! {
        <h3>"(d) Sliding window: what it forgets"</h3>
        <p class="hint">"A ring of W slots keeps only the last W positions: each new token overwrites the oldest. "
            "The full cache runs beside it on the same tokens; the chart shows how far the sliding cache's logits move once positions fall out."</p>
        <div class="row">
            <Field label="W" value=window testid="drift-window"/>
            <Field label="tokens" value=tokens testid="drift-tokens"/>
            <button on:click=start disabled=move || !ready() || engine.busy() data-testid="drift-run">"Run"</button>
        </div>
        <div class="ring" data-testid="ring">{ring}</div>
        <p>{summary}</p>
        <LineChart title="Logit drift of the sliding window" x_label="position" y_label="max |Δ logit|" series=chart testid="drift-chart" x_from_data=true/>
    }
}
