//! Inside a step: the loaded model's real forward pass over a prompt, made visible — every
//! head's attention, the logit lens after every block, and where the prefill's and one decode
//! step's time goes, op by op, with the same timeline as a Chrome trace to download.

use leptos::prelude::*;

use crate::engine::inspect::op_timer::{StepTiming, Timing};
use crate::engine::inspect::probe::Op;
use crate::engine::inspect::trace::chrome_trace;
use crate::session::protocol::{InspectionView, ToEngine};
use crate::web::bridge::EngineHandle;
use crate::web::charts::{CHART_W, PALETTE, label, ticks};
use crate::web::form::on_activate;

/// One colour per op, shared by the bars, the totals and the legend.
fn op_color(op: Op) -> &'static str {
    match op {
        Op::Ln1 | Op::Ln2 | Op::LnF => "var(--faint)",
        Op::Qkv => PALETTE[0],
        Op::Attention => PALETTE[1],
        Op::AttnProj => PALETTE[5],
        Op::MlpUp => PALETTE[2],
        Op::Gelu => PALETTE[4],
        Op::MlpDown => PALETTE[3],
        Op::Embed | Op::Head | Op::Sampling => "var(--ink)",
    }
}

#[component]
pub fn InternalsPage() -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let prompt = RwSignal::new("The capital of France is Paris. The capital of Germany is".to_string());
    let run = move |_| engine.send(&ToEngine::Inspect { prompt: prompt.get() }, &[]);
    view! {
        <section class="page">
            <h2>"Inside a step"</h2>
            <p class="hint">"One real forward pass of the loaded model over your prompt (the prefill), a greedy pick, and one decode step after it. "
                "Every picture below is read out of that pass: what each attention head looked at, what the model would say if it stopped after each block "
                "(the logit lens: the residual stream through the final LayerNorm and the output head), and where each step's milliseconds went on this device."</p>
            <textarea rows="2" aria-label="prompt" prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev)) data-testid="internals-prompt"></textarea>
            <div class="row">
                <button on:click=run disabled=move || engine.loaded.get().is_none() || engine.busy() data-testid="internals-run">"Run the step"</button>
                <span class="detail">"up to 48 tokens"</span>
            </div>
            {move || engine.inspection.get().map(|view| view! { <Inspected view/> })}
        </section>
    }
}

#[component]
fn Inspected(view: InspectionView) -> impl IntoView {
    let engine = expect_context::<EngineHandle>();
    let device = engine.adapter.get_untracked().unwrap_or_else(|| "this device".into());
    let trace = serde_json::to_string(&chrome_trace(&view.inspection.timeline, &device)).unwrap_or_default();
    let href = format!("data:application/json;charset=utf-8,{}", String::from(js_sys::encode_uri_component(&trace)));
    let tokens = view.tokens.clone();
    let chips = tokens
        .iter()
        .enumerate()
        .map(|(p, t)| view! { <span class="tok tok-prompt" title=format!("position {p} · id {}", view.inspection.tokens[p])>{visible(t)}</span> })
        .collect_view();
    let selected = RwSignal::new((view.inspection.attentions.len() - 1, 0usize));
    let timing = view.inspection.timeline.timing;
    let steps = view.inspection.timeline.steps.clone();
    view! {
        <h3>"The prompt's tokens"</h3>
        <div class="pass" data-testid="internals-tokens">{chips}
            <span class="tok tok-target" title=format!("id {} · chosen greedily after the prefill, fed by the decode step", view.inspection.next_token)>"→ "{visible(&view.next_text)}</span>
        </div>
        <h3>"Attention: every layer × head"</h3>
        <p class="hint">"Row = query token, column = key token it attends to; darker = more weight. Each query sees only itself and earlier tokens (the causal mask). Click a map to enlarge it."</p>
        <AttentionGrid view=view.clone() selected/>
        <AttentionDetail view=view.clone() selected/>
        <h3>"The logit lens"</h3>
        <p class="hint">"The top next-token guess at every position after each block, shaded by its probability; the last row is the model's own output. Hover a cell for its top 5 and the residual stream's size."</p>
        <Lens view=view.clone()/>
        <h3>"Where the step's time goes"</h3>
        <p class="hint">{match timing {
            Timing::DeviceTimestamps => "Timed with the device's own timestamps around each op: what the device spent on it, launch overhead aside.",
            Timing::Synced => "Timed by waiting for the device after each op (this device has no timestamps to read). Waiting changes what it measures: each op pays its launch and the wait, and none overlaps the next, so the step takes longer here than unwatched.",
        }}</p>
        <div data-testid="internals-timing">
            {steps.into_iter().map(|step| view! { <StepBars step/> }).collect_view()}
            <div class="keys">{Op::BLOCK.iter().chain(&[Op::Embed]).filter(|op| **op != Op::Ln2).map(|&op| view! {
                <span class="key"><i style=format!("background:{}", op_color(op))></i>{match op { Op::Ln1 => "LayerNorms", Op::Embed => "embed, head, sampling", _ => op.name() }}</span>
            }).collect_view()}</div>
        </div>
        <p><a class="button" href=href download="inferlab-trace.json" data-testid="internals-trace">"Download trace"</a>
            <span class="detail">" Chrome trace-event JSON: open it in ui.perfetto.dev or chrome://tracing"</span></p>
    }
}

/// Spaces and newlines made visible in a token chip.
fn visible(token: &str) -> String {
    token.replace(' ', "␣").replace('\n', "⏎")
}

/// One small map per head, a row per layer; cells under 2% are left blank to keep it light.
#[component]
fn AttentionGrid(view: InspectionView, selected: RwSignal<(usize, usize)>) -> impl IntoView {
    let t = view.inspection.tokens.len();
    let rows = view
        .inspection
        .attentions
        .iter()
        .enumerate()
        .map(|(layer, heads)| {
            let maps = heads
                .iter()
                .enumerate()
                .map(|(head, map)| {
                    let cells = map
                        .iter()
                        .enumerate()
                        .flat_map(|(q, row)| row.iter().enumerate().take(q + 1).map(move |(k, &w)| (q, k, w)))
                        .filter(|&(_, _, w)| w >= 0.02)
                        .map(|(q, k, w)| view! { <rect x=k y=q width="1" height="1" fill-opacity=w/> })
                        .collect_view();
                    view! {
                        <svg class="head-map" class:active=move || selected.get() == (layer, head) viewBox=format!("0 0 {t} {t}")
                            data-testid="internals-attention" data-layer=layer data-head=head on:click=move |_| selected.set((layer, head))
                            tabindex="0" role="button" aria-label=format!("enlarge layer {} head {}", layer + 1, head + 1)
                            on:keydown=on_activate(move || selected.set((layer, head)))>
                            <title>{format!("layer {} · head {} (click to enlarge)", layer + 1, head + 1)}</title>
                            <rect width=t height=t class="map-bg"/>{cells}
                        </svg>
                    }
                })
                .collect_view();
            view! { <div class="head-row"><span class="head-label">{format!("L{}", layer + 1)}</span>{maps}</div> }
        })
        .collect_view();
    view! { <div class="head-grid" role="region" aria-label="attention maps">{rows}</div> }
}

/// The selected head enlarged: every weight, the tokens on both axes, and the decode step's
/// query as a last row (it also sees itself).
#[component]
fn AttentionDetail(view: InspectionView, selected: RwSignal<(usize, usize)>) -> impl IntoView {
    move || {
        let (layer, head) = selected.get();
        let map = &view.inspection.attentions[layer][head];
        let decode = &view.inspection.decode_attentions[layer][head];
        let t = map.len();
        let cell = (360.0 / (t + 1) as f64).clamp(7.0, 28.0);
        let margin = 96.0;
        let size = margin + cell * (t + 1) as f64;
        let tokens: Vec<String> =
            view.tokens.iter().map(|s| visible(s)).chain([format!("→{}", visible(&view.next_text))]).collect();
        let rows: Vec<&[f32]> = map.iter().map(Vec::as_slice).chain([decode.as_slice()]).collect();
        let cells = rows
            .iter()
            .enumerate()
            .flat_map(|(q, row)| row.iter().enumerate().map(move |(k, &w)| (q, k, w)))
            .map(|(q, k, w)| {
                let title = format!("query {:?} → key {:?}: {w:.4}", tokens[q], tokens[k]);
                view! { <rect x=margin + k as f64 * cell y=margin + q as f64 * cell width=cell height=cell fill-opacity=w data-weight=w><title>{title}</title></rect> }
            })
            .collect_view();
        let labels = tokens
            .iter()
            .enumerate()
            .map(|(i, tok)| {
                let at = margin + (i as f64 + 0.5) * cell;
                let short: String = tok.chars().take(10).collect();
                view! {
                    <text x=margin - 4.0 y=at + 4.0 text-anchor="end" class="tick">{short.clone()}</text>
                    <text x=at y=margin - 4.0 class="tick" transform=format!("rotate(-60 {at} {})", margin - 4.0)>{short}</text>
                }
            })
            .collect_view();
        view! {
            <figure class="chart attention-detail">
                <figcaption>{format!("Layer {} · head {}: rows are queries, columns keys; the last row is the decode step's query", layer + 1, head + 1)}</figcaption>
                <svg width=size height=size viewBox=format!("0 0 {size} {size}") role="img"
                    aria-label=format!("attention weights of layer {} head {}: hover a cell for its weight", layer + 1, head + 1)>{labels}{cells}</svg>
            </figure>
        }
    }
}

/// Layers down, positions across: each cell the top token after that block at that position.
#[component]
fn Lens(view: InspectionView) -> impl IntoView {
    let header = view.tokens.iter().map(|t| view! { <th>{visible(t)}</th> }).collect_view();
    let rows = view
        .inspection
        .logit_lens
        .iter()
        .zip(&view.lens_tokens)
        .zip(&view.inspection.residual_norms)
        .map(|((layer, texts), norms)| {
            let cells = layer
                .positions
                .iter()
                .zip(texts)
                .zip(norms)
                .map(|((top, texts), norm)| {
                    let detail: Vec<String> =
                        texts.iter().zip(&top.probs).map(|(t, p)| format!("{:?} {:.1}%", t, p * 100.0)).collect();
                    let title = format!("{}\nresidual stream norm {norm:.1}", detail.join("\n"));
                    // At most 60% of the accent under the text: dark text stays readable on it.
                    let shade = format!(
                        "background: color-mix(in srgb, var(--accent) {:.0}%, var(--surface))",
                        top.probs[0] * 60.0
                    );
                    let ink = if top.probs[0] > 0.5 { "color: white" } else { "" };
                    view! { <td style=format!("{shade}; {ink}") title=title>{visible(&texts[0])}</td> }
                })
                .collect_view();
            let name = if layer.layer == view.inspection.logit_lens.len() {
                format!("block {} (output)", layer.layer)
            } else {
                format!("block {}", layer.layer)
            };
            view! { <tr><th>{name}</th>{cells}</tr> }
        })
        .collect_view();
    view! {
        <div class="lens-wrap" tabindex="0" role="region" aria-label="the logit lens (scrolls sideways)"><table class="lens" data-testid="internals-lens"><thead><tr><th>"after"</th>{header}</tr></thead><tbody>{rows}</tbody></table></div>
    }
}

/// About the width a column of two has on a laptop, so 11 px text stays 11 px.
const BAR_W: f64 = CHART_W;
const BAR_LEFT: f64 = 92.0;
const BAR_H: f64 = 16.0;

/// One step: a bar per block split by op (and one for the ops outside the blocks) on a shared
/// time axis, then each op's total over the blocks, most first.
#[component]
fn StepBars(step: StepTiming) -> impl IntoView {
    let layers = step.ops.iter().filter_map(|o| o.layer).max().unwrap_or(0);
    let row_ms = |row: Option<usize>| -> f64 { step.ops.iter().filter(|o| o.layer == row).map(|o| o.ms).sum() };
    let rows: Vec<Option<usize>> = (1..=layers).map(Some).chain([None]).collect();
    let longest = rows.iter().map(|&r| row_ms(r)).fold(0.0, f64::max);
    let axis = ticks(0.0, longest);
    let top = *axis.last().unwrap_or(&1.0);
    let sx = move |ms: f64| BAR_LEFT + ms / top.max(f64::MIN_POSITIVE) * (BAR_W - BAR_LEFT - 16.0);
    let height = BAR_H * 1.5 * rows.len() as f64 + 28.0;
    let bars = rows
        .iter()
        .enumerate()
        .map(|(i, &row)| {
            let y = 8.0 + i as f64 * BAR_H * 1.5;
            let mut at = 0.0;
            let segments = step
                .ops
                .iter()
                .filter(|o| o.layer == row)
                .map(|o| {
                    let (x0, x1) = (sx(at), sx(at + o.ms));
                    at += o.ms;
                    let title = format!("{} · {:.3} ms", o.op.name(), o.ms);
                    view! { <rect x=x0 y=y width=(x1 - x0).max(0.5) height=BAR_H style=format!("fill:{}", op_color(o.op))><title>{title}</title></rect> }
                })
                .collect_view();
            let name = row.map_or("outside".to_string(), |l| format!("block {l}"));
            view! {
                <text x=BAR_LEFT - 6.0 y=y + BAR_H - 4.0 text-anchor="end" class="tick">{name}</text>
                {segments}
            }
        })
        .collect_view();
    let last = axis.len() - 1;
    let grid = axis
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let text = if i == last { format!("{} ms", label(v)) } else { label(v) };
            view! { <text x=sx(v) y=height - 10.0 text-anchor=if i == last { "end" } else { "middle" } class="tick">{text}</text> }
        })
        .collect_view();
    let totals = step.by_op();
    let most = totals.first().map_or(1.0, |t| t.1);
    let total_rows = totals
        .iter()
        .map(|&(op, ms)| {
            let pct = ms / step.ms.max(f64::MIN_POSITIVE) * 100.0;
            view! {
                <div class="op-total" title=format!("{ms:.3} ms over the step's blocks, {pct:.0}% of the step")>
                    <span class="op-name">{op.name()}</span>
                    <span class="op-bar" style=format!("width:{:.1}%; background:{}", ms / most * 60.0, op_color(op))></span>
                    <span>{format!("{ms:.2} ms")}</span>
                </div>
            }
        })
        .collect_view();
    view! {
        <div class="charts">
            <figure class="chart">
                <figcaption>{format!("{}: {:.1} ms", step.label, step.ms)}</figcaption>
                <svg width=BAR_W height=height viewBox=format!("0 0 {BAR_W} {height}") role="img"
                    aria-label="time of each op, a row per block; hover a segment for its op and time">{bars}{grid}</svg>
            </figure>
            <figure class="chart">
                <figcaption>"Per op, over all blocks"</figcaption>
                <div class="op-totals">{total_rows}</div>
            </figure>
        </div>
    }
}
