//! Speculative decoding page: a drafter proposes γ tokens, the target checks them in one pass.
//! A strip per target pass shows what was drafted, what the target kept, and the token it
//! added itself; then measured vs theoretical speedup, and a sweep over γ.

use leptos::prelude::*;

use crate::engine::decode::sampling::SamplingParams;
use crate::engine::decode::speculative::drafters::DraftSpec;
use crate::engine::decode::speculative::report::theoretical_speedup;
use crate::engine::decode::speculative::{SpeculativeOptions, running_alpha};
use crate::engine::model::weight_dtype::WeightDtype;
use crate::session::protocol::{ModelSource, PassView, ToEngine};
use crate::web::bridge::EngineHandle;
use crate::web::charts::{LineChart, PALETTE, Series};
use crate::web::form::{Field, example_prompt, field, picked_files};

/// The prompt for the demo pair (trained on Rust sources).
const SPECULATIVE_CODE: &str = "use std::";

#[component]
pub fn SpeculativePage(hub: RwSignal<String>) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let prompt = example_prompt("The quick brown fox jumps over the lazy dog. The quick brown fox", SPECULATIVE_CODE);
    // The draft model once one is loaded (the demo pair brings its own), else early exit.
    let drafter = RwSignal::new("layers:1".to_string());
    Effect::new(move || {
        if engine.draft.get().is_some() {
            drafter.set("model".into());
        }
    });
    let gamma = RwSignal::new("4".to_string());
    let temperature = RwSignal::new("0".to_string());
    let tokens = RwSignal::new("32".to_string());
    let adaptive = RwSignal::new(false);
    let sweep = RwSignal::new("1,2,4,8".to_string());
    let draft_repo = RwSignal::new("distilbert/distilgpt2".to_string());

    // Drafters the loaded models allow: the target's first K layers, prompt lookup, a draft model.
    let choices = move || {
        let mut out = vec![];
        if let Some(info) = engine.loaded.get() {
            let n = info.config.n_layer;
            out.extend(
                (1..n).map(|k| (format!("layers:{k}"), format!("early exit: the target's first {k} of {n} layers"))),
            );
        }
        out.extend([2, 3].map(|n| (format!("ngram:{n}"), format!("prompt lookup: last {n} tokens"))));
        if let Some(draft) = engine.draft.get() {
            out.push((
                "model".into(),
                format!("draft model: {} ({} layers × {})", draft.name, draft.config.n_layer, draft.config.n_embd),
            ));
        }
        out
    };
    let run = move |_| {
        let parsed = (|| -> Result<ToEngine, String> {
            let draft = match drafter.get().as_str() {
                "model" => DraftSpec::Model(engine.draft.get().map(|d| d.name).ok_or("load a draft model first")?),
                other => other.parse().map_err(|e| format!("{e}"))?,
            };
            let sampling =
                SamplingParams { temperature: field("temperature", &temperature.get())?, ..SamplingParams::default() };
            let options = SpeculativeOptions {
                max_new_tokens: field("new tokens", &tokens.get())?,
                sampling,
                gamma: field("γ", &gamma.get())?,
                adaptive_gamma: adaptive.get(),
                eos_token_ids: vec![],
            };
            options.validate().map_err(|e| e.to_string())?;
            let sweep = sweep
                .get()
                .split(',')
                .filter(|g| !g.trim().is_empty())
                .map(|g| field::<usize>("sweep γ", g))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ToEngine::Speculate { prompt: prompt.get(), draft, options, sweep })
        })();
        match parsed {
            Ok(message) => engine.send(&message, &[]),
            Err(e) => engine.error.set(Some(e)),
        }
    };
    let load_draft = move |_| {
        engine.send(
            &ToEngine::LoadDraft(ModelSource::Hub {
                hub: hub.get(),
                repo: draft_repo.get(),
                weights: WeightDtype::F32,
                kv_f16: false,
            }),
            &[],
        )
    };
    let load_demo_draft = move |_| engine.send(&ToEngine::LoadDraft(ModelSource::Demo), &[]);
    let load_draft_files = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        let files = picked_files(input.files());
        if !files.is_empty() {
            engine.send(&ToEngine::LoadDraft(ModelSource::Files { weights: WeightDtype::F32, kv_f16: false }), &files);
        }
    };
    let no_model = move || engine.loaded.get().is_none() || engine.busy();

    view! {
        <section class="page">
            <h2>"Speculative decoding"</h2>
            <p class="hint">"A cheap drafter guesses γ tokens; the target scores all of them in "<b>"one"</b>" forward pass. "
                "Each guess is kept with probability min(1, p/q); at the first rejection the target draws its own token from what q left out "
                "(max(0, p − q)), and if all are kept it adds a bonus token. The output is distributed exactly as the target's own — "
                "greedy, it is the same text — but a pass can yield up to γ + 1 tokens."</p>
            <textarea rows="2" aria-label="prompt" prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev)) data-testid="spec-prompt"></textarea>
            <div class="row">
                <label>"Drafter "
                    <select data-testid="spec-draft" prop:value=move || drafter.get() on:change=move |ev| drafter.set(event_target_value(&ev))>
                        {move || choices().into_iter().map(|(value, label)| view! { <option value=value.clone() selected=drafter.get() == value>{label}</option> }).collect_view()}
                    </select>
                </label>
                <Field label="γ" value=gamma testid="spec-gamma"/>
                <Field label="temperature" value=temperature testid="spec-temperature"/>
                <Field label="new tokens" value=tokens testid="spec-tokens"/>
                <label><input type="checkbox" prop:checked=move || adaptive.get() on:change=move |ev| adaptive.set(event_target_checked(&ev))/>" adaptive γ"</label>
                <label title="after the run, the same generation at each of these γ (empty: none)">"sweep γ "
                    <input prop:value=move || sweep.get() on:input=move |ev| sweep.set(event_target_value(&ev)) data-testid="spec-sweep" size="8"/></label>
                <button on:click=run disabled=no_model data-testid="spec-run">"Run"</button>
            </div>
            <div class="row detail">
                <label>"Draft model from the hub: "
                    <input prop:value=move || draft_repo.get() on:input=move |ev| draft_repo.set(event_target_value(&ev)) data-testid="spec-draft-repo" size="28"/></label>
                <button on:click=load_draft disabled=move || engine.busy() data-testid="spec-load-draft">"Load draft"</button>
                <label>"or files "<input type="file" multiple accept=".json,.safetensors" on:change=load_draft_files disabled=move || engine.busy() data-testid="spec-draft-files"/></label>
                <button on:click=load_demo_draft disabled=move || engine.busy()>"Demo draft"</button>
                <span>{move || engine.draft.get().map(|d| format!("loaded: {}", d.name)).unwrap_or_else(|| "no draft model loaded".into())}</span>
            </div>
            <Passes/>
            <Outcome/>
            <Sweep/>
        </section>
    }
}

/// The running figures and a strip per target pass.
#[component]
fn Passes() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let alpha = move || engine.spec.with(|s| running_alpha(s.passes.iter().map(|p| &p.pass)));
    let per_pass = move || {
        engine.spec.with(|s| {
            let tokens: usize = s.passes.iter().map(|p| p.pass.accepted + 1).sum();
            (!s.passes.is_empty()).then(|| tokens as f64 / s.passes.len() as f64)
        })
    };
    view! {
        <div class="stats">
            <span>"α "<b data-testid="spec-alpha">{move || alpha().map(|a| format!("{a:.3}")).unwrap_or_default()}</b>
                <span class="detail">" (accepted ÷ tested draft tokens)"</span></span>
            <span>"tokens per target pass "<b data-testid="spec-tokens-per-pass">{move || per_pass().map(|t| format!("{t:.2}")).unwrap_or_default()}</b></span>
            <span>"target passes "<b>{move || engine.spec.with(|s| s.passes.len())}</b></span>
        </div>
        <div class="keys">
            <span class="key"><i class="tok-accepted"></i>"drafted, accepted"</span>
            <span class="key"><i class="tok-rejected"></i>"drafted, rejected"</span>
            <span class="key"><i class="tok-untested"></i>"drafted after a rejection (never tested)"</span>
            <span class="key"><i class="tok-target"></i>"the target's own token (resampled or bonus)"</span>
        </div>
        <div class="passes" data-testid="spec-passes" tabindex="0" role="region" aria-label="the target passes (scrolls)">
            {move || engine.spec.with(|s| s.passes.iter().enumerate().map(|(i, p)| view! { <PassRow index=i pass=p.clone()/> }).collect_view())}
        </div>
    }
}

#[component]
fn PassRow(index: usize, pass: PassView) -> impl IntoView {
    let p = &pass.pass;
    let drafted = pass
        .drafted_text
        .iter()
        .zip(&p.drafted)
        .enumerate()
        .map(|(j, (text, id))| {
            let (class, what) = match j.cmp(&p.accepted) {
                std::cmp::Ordering::Less => ("tok tok-accepted", "accepted"),
                std::cmp::Ordering::Equal if !p.bonus => ("tok tok-rejected", "rejected: the target drew its own token instead"),
                _ => ("tok tok-untested", "never tested: an earlier draft token was rejected"),
            };
            view! { <span class=class title=format!("draft token {} of {}: {text:?} (id {id}) · {what}", j + 1, p.drafted.len())>{shown(text)}</span> }
        })
        .collect_view();
    let kind = if p.bonus {
        "bonus: every draft token was accepted"
    } else {
        "resampled from max(0, p − q) at the rejection"
    };
    let title = format!("pass {} · draft {:.1} ms · target {:.1} ms", index + 1, p.draft_ms, p.target_ms);
    view! {
        <div class="pass" title=title>
            <span class="pass-n">{format!("#{}", index + 1)}</span>
            {drafted}
            <span class="tok tok-target" title=format!("{:?} (id {}) · {kind}", pass.next_text, p.next)>{shown(&pass.next_text)}<sup>{if p.bonus { "+" } else { "↺" }}</sup></span>
        </div>
    }
}

/// Whitespace made visible in a token chip.
fn shown(text: &str) -> String {
    text.replace(' ', "·").replace('\n', "⏎")
}

/// Measured against plain decoding, and what the theory predicts for the measured α and c.
#[component]
fn Outcome() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    move || {
        engine.spec.with(|s| s.done.clone()).map(|(ids, text, r)| {
            let bar = |label: &str, ms: f64, max: f64, color: &'static str| {
                view! {
                    <div class="bar-row"><span class="bar-label">{label.to_string()}</span>
                        <span class="bar" style=format!("width:{:.0}%;background:{color}", 100.0 * ms / max.max(1e-9))></span>
                        <span>{format!("{ms:.2} ms/token")}</span></div>
                }
            };
            let max = r.plain_ms_per_token.max(r.speculative_ms_per_token);
            view! {
                <div class="output">{text}</div>
                <div class="stats">
                    <span>"measured speedup "<b data-testid="spec-speedup">{format!("{:.2}", r.measured_speedup)}</b>"×"</span>
                    <span>"theoretical "<b>{format!("{:.2}", r.theoretical_speedup)}</b>"× for α "{format!("{:.3}", r.alpha)}", γ "{format!("{:.2}", r.mean_gamma)}", c "{format!("{:.3}", r.c)}</span>
                    <span title="the theory assumes a target pass over γ + 1 positions costs one decode step">"target pass = "{format!("{:.2}", r.target_pass_in_steps)}" decode steps"</span>
                    <span>"accepted per pass: "{format!("{:?}", r.accepted_hist)}</span>
                </div>
                <p class="formula">"speedup = (1 − α^(γ+1)) / ((1 − α)(γc + 1)),  c = draft cost per token ÷ target cost per step = "{format!("{:.3} / {:.3} ms", r.draft_ms_per_token, r.plain_ms_per_token)}</p>
                <div class="bars">
                    {bar("plain decoding", r.plain_ms_per_token, max, PALETTE[1])}
                    {bar("speculative", r.speculative_ms_per_token, max, PALETTE[0])}
                </div>
                <p class="ids">"generated ids: "<code data-testid="spec-output-ids">{serde_json::to_string(&ids).unwrap_or_default()}</code></p>
            }
        })
    }
}

/// α and speedup over γ: the sweep's measurements with the theoretical curve over them.
#[component]
fn Sweep() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let speedups = Signal::derive(move || {
        engine.spec.with(|s| {
            if s.sweep.is_empty() {
                return vec![];
            }
            let measured = s.sweep.iter().map(|r| (r.gamma as f64, r.measured_speedup)).collect();
            let predicted = s.sweep.iter().map(|r| (r.gamma as f64, r.theoretical_speedup)).collect();
            // The curve for the mean α and c of the sweep, at every γ up to the largest.
            let n = s.sweep.len() as f64;
            let (alpha, c) =
                (s.sweep.iter().map(|r| r.alpha).sum::<f64>() / n, s.sweep.iter().map(|r| r.c).sum::<f64>() / n);
            let top = s.sweep.iter().map(|r| r.gamma).max().unwrap_or(1) as f64;
            let curve = (16..=(16.0 * top) as usize)
                .map(|i| i as f64 / 16.0)
                .map(|g| (g, theoretical_speedup(alpha, g, c)))
                .collect();
            let mut theory = Series::new(format!("theory at mean α {alpha:.2}, c {c:.2}"), PALETTE[3], curve);
            theory.dashed = true;
            vec![
                Series::new("measured", PALETTE[0], measured),
                Series::new("theory at each γ's α, c", PALETTE[2], predicted),
                theory,
                Series::new("plain decoding", PALETTE[1], vec![(1.0, 1.0), (top, 1.0)]),
            ]
        })
    });
    let alphas = Signal::derive(move || {
        engine.spec.with(|s| {
            if s.sweep.is_empty() {
                vec![]
            } else {
                vec![Series::new("α measured", PALETTE[0], s.sweep.iter().map(|r| (r.gamma as f64, r.alpha)).collect())]
            }
        })
    });
    view! {
        <div class="charts">
            <LineChart title="Speedup over plain decoding vs γ" x_label="γ (draft tokens per pass)" y_label="speedup ×" series=speedups testid="spec-chart" x_from_data=true/>
            <LineChart title="Acceptance rate α vs γ" x_label="γ" y_label="α" series=alphas testid="spec-alpha-chart" x_from_data=true/>
        </div>
        <p class="hint">{move || if engine.spec.with(|s| s.done.is_some() && !s.sweep_done) { "measuring the γ sweep…" } else { "" }}</p>
    }
}
