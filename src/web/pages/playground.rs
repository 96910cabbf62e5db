//! Playground: prompt in, streamed text out, with the sampling and KV settings, live speed
//! (TTFT, tok/s) and a per-token latency chart.

use leptos::prelude::*;

use crate::engine::decode::generate::decode_tokens_per_s;
use crate::engine::decode::sampling::SamplingParams;
use crate::engine::kv::KvMode;
use crate::session::protocol::{Run, ToEngine};
use crate::web::bridge::{EngineHandle, ModelStatus};
use crate::web::charts::{LineChart, PALETTE, Series};
use crate::web::form::{Field, example_prompt, field};

/// The prompt for the demo pair (trained on Rust sources).
const PLAYGROUND_CODE: &str = "pub fn";

#[component]
pub fn PlaygroundPage() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let prompt = example_prompt("Hello", PLAYGROUND_CODE);
    let max_new = RwSignal::new("24".to_string());
    let temperature = RwSignal::new("0".to_string());
    let top_k = RwSignal::new("0".to_string());
    let top_p = RwSignal::new("1".to_string());
    let seed = RwSignal::new("0".to_string());
    let kv = RwSignal::new("contiguous".to_string());
    let window = RwSignal::new("64".to_string());

    let request = move || -> Result<ToEngine, String> {
        let sampling = SamplingParams {
            temperature: field("temperature", &temperature.get())?,
            top_k: field("top-k", &top_k.get())?,
            top_p: field("top-p", &top_p.get())?,
            seed: field("seed", &seed.get())?,
            ..SamplingParams::default()
        };
        let kv = match kv.get().as_str() {
            "sliding" => format!("sliding:{}", field::<usize>("window", &window.get())?),
            other => other.to_string(),
        };
        let kv: KvMode = kv.parse().map_err(|e| format!("{e}"))?;
        Ok(ToEngine::Generate {
            run: Run::Playground,
            prompt: prompt.get(),
            max_new_tokens: field("max new tokens", &max_new.get())?,
            sampling,
            kv,
        })
    };
    let generate = move || match request() {
        Ok(message) => engine.send(&message, &[]),
        Err(e) => engine.error.set(Some(e)),
    };
    let run = move || engine.runs.with(|runs| runs.get(&Run::Playground).cloned().unwrap_or_default());
    let ready = move || matches!(engine.status.get(), ModelStatus::Ready(_));
    // Ctrl+Enter (⌘+Enter) in the prompt generates, as the button does when it is enabled.
    let on_prompt_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) && ready() && !engine.busy() {
            ev.prevent_default();
            generate();
        }
    };
    let live_tok_s = move || decode_tokens_per_s(&run().step_ms);
    let chart = Signal::derive(move || {
        let points = run().step_ms.iter().enumerate().map(|(i, ms)| ((i + 1) as f64, *ms)).collect();
        vec![Series::new("latency of each token (the first includes the prompt)", PALETTE[0], points)]
    });
    view! {
        <section class="page">
            <h2>"Playground"</h2>
            <textarea rows="3" autofocus aria-label="prompt" prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev))
                on:keydown=on_prompt_key data-testid="prompt"></textarea>
            <div class="row">
                <Field label="max new tokens" value=max_new testid="max-new-tokens"/>
                <Field label="temperature" value=temperature testid="temperature"/>
                <Field label="top-k" value=top_k testid="top-k"/>
                <Field label="top-p" value=top_p testid="top-p"/>
                <Field label="seed" value=seed testid="seed"/>
                <label>"KV cache "
                    <select on:change=move |ev| kv.set(event_target_value(&ev)) data-testid="kv-mode">
                        <option value="contiguous" selected>"contiguous"</option>
                        <option value="sliding">"sliding window"</option>
                        <option value="none">"none (recompute)"</option>
                    </select>
                </label>
                <Show when=move || kv.get() == "sliding"><Field label="W" value=window testid="window"/></Show>
            </div>
            <div class="row">
                <button on:click=move |_| generate() disabled=move || !ready() || engine.busy() data-testid="generate">"Generate"</button>
                <button on:click=move |_| engine.send(&ToEngine::Stop, &[]) disabled=move || !engine.busy() data-testid="stop">"Stop"</button>
                <span class="hint">"Ctrl+Enter in the prompt generates · temperature 0 = greedy (identical to transformers' greedy search)"</span>
            </div>
            <div class="output">
                <span class="prompt-echo">{move || prompt.get()}</span>
                <span data-testid="output-text">{move || run().text}</span>
            </div>
            <div class="stats">
                <span>"TTFT " <b data-testid="ttft">{move || run().done.map(|d| format!("{:.0} ms", d.ttft_ms)).unwrap_or_else(|| "…".into())}</b></span>
                <span>"tok/s " <b data-testid="tok-s">{move || match live_tok_s() {
                    // Big models in a tab run under one token a second: keep three digits.
                    v if v < 1.0 => format!("{v:.3}"),
                    v => format!("{v:.1}"),
                }}</b></span>
                <span>"tokens " <b data-testid="token-count">{move || run().ids.len()}</b></span>
                <span data-testid="stop-reason">{move || run().done.map(|d| format!("stopped: {}", d.stop_reason.words()))}</span>
            </div>
            <p class="ids">"ids: " <code data-testid="output-ids">{move || {
                let run = run();
                run.done.map(|_| serde_json::to_string(&run.ids).unwrap_or_default()).unwrap_or_default()
            }}</code></p>
            <LineChart title="Per-token latency" x_label="token" y_label="ms" series=chart testid="latency-chart"/>
        </section>
    }
}
